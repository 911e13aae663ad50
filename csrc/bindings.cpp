// nanobind glue: the only file that knows about Python.  Built twice:
//   rbm_cuda._cuda  with the kernels compiled by nvcc (pointers are device pointers);
//   rbm_cuda._emu   with RBM_CUDA_EMULATION, the same kernel source compiled by the host compiler
//                   (csrc/kernels_emu.cpp; pointers are host pointers, launches run on the CPU).
// Both expose the same kernel functions with the same arguments: integer pointers, sizes, a stream
// (an integer, cudaStream_t) and the device to run on.  They release the GIL; CUDA errors arrive as
// RuntimeError carrying the error string, file and line, bad sizes as ValueError.  Shapes and dtypes
// are checked by the Python side (rbm_cuda/cuda/kernels.py), which is shared by both modules.
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <tuple>

#include "kernel_math.cuh"
#include "kernels.h"
#include "philox.cuh"
#if !defined(RBM_CUDA_EMULATION)
#include "device_info.h"
#else
#include "cuda_emulation.h"
#endif

namespace nb = nanobind;
using namespace nb::literals;

namespace {

template <class T>
T *ptr(uintptr_t p) {
    return reinterpret_cast<T *>(p);
}

cudaStream_t as_stream(uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

using release_gil = nb::call_guard<nb::gil_scoped_release>;

void define_kernels(nb::module_ &m) {
    m.def(
        "sample_hidden",
        [](uintptr_t indptr, uintptr_t indices, uintptr_t states, uintptr_t values, int64_t n_values, uintptr_t rows,
           int64_t n_batch, uintptr_t W, int64_t n_levels, int64_t n_hidden, uintptr_t bh, uint64_t seed,
           uint32_t step, uint32_t gibbs, uintptr_t prob_out, uintptr_t sample_out, bool sample, uintptr_t stream,
           int device) {
            rbm::use_device(device);
            rbm::sample_hidden(ptr<const int64_t>(indptr), ptr<const int32_t>(indices), ptr<const int32_t>(states),
                               ptr<const float>(values), n_values, ptr<const int64_t>(rows), n_batch,
                               ptr<const float>(W), n_levels, n_hidden, ptr<const float>(bh), seed, step, gibbs,
                               ptr<float>(prob_out), ptr<float>(sample_out), sample, as_stream(stream));
        },
        "indptr"_a, "indices"_a, "states"_a, "values"_a, "n_values"_a, "rows"_a, "n_batch"_a, "W"_a, "n_levels"_a,
        "n_hidden"_a, "bh"_a, "seed"_a, "step"_a, "gibbs"_a, "prob_out"_a, "sample_out"_a, "sample"_a, "stream"_a,
        "device"_a, release_gil(), "p(h | v) and a Bernoulli draw for the batch rows (kernels.sample_hidden)");

    m.def(
        "sample_visible_softmax",
        [](uintptr_t indices, uintptr_t slot_b, uintptr_t slot_p, uintptr_t delta, int64_t n_slots, uintptr_t h,
           int64_t n_batch, uintptr_t hbits, uintptr_t W, uintptr_t bv, int64_t n_levels, int64_t n_hidden,
           uint64_t seed, uint32_t step, uint32_t gibbs, uintptr_t out_states, uintptr_t stream, int device) {
            rbm::use_device(device);
            rbm::sample_visible_softmax(ptr<const int32_t>(indices), ptr<const int32_t>(slot_b),
                                        ptr<const int32_t>(slot_p), ptr<const int64_t>(delta), n_slots,
                                        ptr<const float>(h), n_batch, ptr<uint32_t>(hbits), ptr<const float>(W),
                                        ptr<const float>(bv), n_levels, n_hidden, seed, step, gibbs,
                                        ptr<int32_t>(out_states), as_stream(stream));
        },
        "indices"_a, "slot_b"_a, "slot_p"_a, "delta"_a, "n_slots"_a, "h"_a, "n_batch"_a, "hbits"_a, "W"_a, "bv"_a,
        "n_levels"_a, "n_hidden"_a, "seed"_a, "step"_a, "gibbs"_a, "out_states"_a, "stream"_a, "device"_a,
        release_gil(),
        "softmax reconstruction and categorical draw of the rated entries (kernels.sample_visible_softmax)");

    m.def(
        "sigmoid_bernoulli",
        [](uintptr_t logits, int64_t n_batch, int64_t width, uintptr_t rows, uint64_t seed, uint32_t step,
           uint32_t gibbs, uint32_t phase, uintptr_t prob_out, uintptr_t sample_out, uintptr_t stream, int device) {
            rbm::use_device(device);
            rbm::sigmoid_bernoulli(ptr<const float>(logits), n_batch, width, ptr<const int64_t>(rows), seed, step,
                                   gibbs, phase, ptr<float>(prob_out), ptr<float>(sample_out), as_stream(stream));
        },
        "logits"_a, "n_batch"_a, "width"_a, "rows"_a, "seed"_a, "step"_a, "gibbs"_a, "phase"_a, "prob_out"_a,
        "sample_out"_a, "stream"_a, "device"_a, release_gil(),
        "dense sigmoid and Bernoulli draw (kernels.sigmoid_bernoulli)");

    m.def(
        "compact_rows",
        [](uintptr_t dense, int64_t n_batch, int64_t width, uintptr_t chunk_counts, uintptr_t indptr_out,
           uintptr_t indices_out, uintptr_t stream, int device) {
            rbm::use_device(device);
            rbm::compact_rows(ptr<const float>(dense), n_batch, width, ptr<int64_t>(chunk_counts),
                              ptr<int64_t>(indptr_out), ptr<int32_t>(indices_out), as_stream(stream));
        },
        "dense"_a, "n_batch"_a, "width"_a, "chunk_counts"_a, "indptr_out"_a, "indices_out"_a, "stream"_a,
        "device"_a, release_gil(), "the nonzero columns of each row as CSR (kernels.compact_rows)");
    m.attr("COMPACT_CHUNK") = rbm::kCompactChunk;

    m.def(
        "scatter_gradients",
        [](uintptr_t indptr, uintptr_t indices, uintptr_t states, uintptr_t values, int64_t n_values, uintptr_t rows,
           int64_t n_batch, uintptr_t ph, float sign, uintptr_t dW, uintptr_t dbv, int64_t n_levels,
           int64_t n_hidden, uintptr_t stream, int device) {
            rbm::use_device(device);
            rbm::scatter_gradients(ptr<const int64_t>(indptr), ptr<const int32_t>(indices),
                                   ptr<const int32_t>(states), ptr<const float>(values), n_values,
                                   ptr<const int64_t>(rows), n_batch, ptr<const float>(ph), sign, ptr<float>(dW),
                                   ptr<float>(dbv), n_levels, n_hidden, as_stream(stream));
        },
        "indptr"_a, "indices"_a, "states"_a, "values"_a, "n_values"_a, "rows"_a, "n_batch"_a, "ph"_a, "sign"_a,
        "dW"_a, "dbv"_a, "n_levels"_a, "n_hidden"_a, "stream"_a, "device"_a, release_gil(),
        "scatter-add of sign * value * ph into the rated items' weights (kernels.scatter_gradients, atomics)");

    m.def(
        "apply_update",
        [](uintptr_t param, uintptr_t grad, uintptr_t velocity, int64_t n, float learning_rate, float momentum,
           float weight_decay, float scale, uintptr_t stream, int device) {
            rbm::use_device(device);
            rbm::apply_update(ptr<float>(param), ptr<float>(grad), ptr<float>(velocity), n, learning_rate, momentum,
                              weight_decay, scale, as_stream(stream));
        },
        "param"_a, "grad"_a, "velocity"_a, "n"_a, "learning_rate"_a, "momentum"_a, "weight_decay"_a, "scale"_a,
        "stream"_a, "device"_a, release_gil(), "momentum and weight-decay update (kernels.apply_update)");

    m.def(
        "update_hidden_bias",
        [](uintptr_t ph0, uintptr_t phT, int64_t n_batch, int64_t n_hidden, uintptr_t bh, uintptr_t grad,
           uintptr_t velocity, float learning_rate, float momentum, float scale, uintptr_t stream, int device) {
            rbm::use_device(device);
            rbm::update_hidden_bias(ptr<const float>(ph0), ptr<const float>(phT), n_batch, n_hidden, ptr<float>(bh),
                                    ptr<float>(grad), ptr<float>(velocity), learning_rate, momentum, scale,
                                    as_stream(stream));
        },
        "ph0"_a, "phT"_a, "n_batch"_a, "n_hidden"_a, "bh"_a, "grad"_a, "velocity"_a, "learning_rate"_a, "momentum"_a,
        "scale"_a, "stream"_a, "device"_a, release_gil(),
        "the hidden-bias gradient and its momentum update (kernels.update_hidden_bias)");

    m.def(
        "update_softmax",
        [](uintptr_t start, uintptr_t slot_b, uintptr_t slot_p, uintptr_t delta, uintptr_t states,
           uintptr_t neg_states, uintptr_t ph0, uintptr_t phT, uintptr_t W, uintptr_t bv, uintptr_t vel_W,
           uintptr_t vel_bv, int64_t n_items, int64_t n_levels, int64_t n_hidden, float learning_rate,
           float momentum, float weight_decay, float scale, uintptr_t last, int64_t step, uintptr_t stream,
           int device) {
            rbm::use_device(device);
            rbm::update_softmax(ptr<const int64_t>(start), ptr<const int32_t>(slot_b), ptr<const int32_t>(slot_p),
                                ptr<const int64_t>(delta), ptr<const int32_t>(states), ptr<const int32_t>(neg_states),
                                ptr<const float>(ph0), ptr<const float>(phT), ptr<float>(W), ptr<float>(bv),
                                ptr<float>(vel_W), ptr<float>(vel_bv), n_items, n_levels, n_hidden, learning_rate,
                                momentum, weight_decay, scale, ptr<int64_t>(last), step, as_stream(stream));
        },
        "start"_a, "slot_b"_a, "slot_p"_a, "delta"_a, "states"_a, "neg_states"_a, "ph0"_a, "phT"_a, "W"_a, "bv"_a,
        "vel_W"_a, "vel_bv"_a, "n_items"_a, "n_levels"_a, "n_hidden"_a, "learning_rate"_a, "momentum"_a,
        "weight_decay"_a, "scale"_a, "last"_a, "step"_a, "stream"_a, "device"_a, release_gil(),
        "gradient of one CD step and momentum update of W and bv, rated items only (kernels.update_softmax)");

    m.def(
        "catch_up",
        [](uintptr_t start, uintptr_t last, int64_t step, uintptr_t W, uintptr_t bv, uintptr_t vel_W, uintptr_t vel_bv,
           int64_t n_items, int64_t n_levels, int64_t n_hidden, uintptr_t powers_W, uintptr_t powers_bv, bool mark,
           uintptr_t stream, int device) {
            rbm::use_device(device);
            rbm::catch_up(ptr<const int64_t>(start), ptr<int64_t>(last), step, ptr<float>(W), ptr<float>(bv),
                          ptr<float>(vel_W), ptr<float>(vel_bv), n_items, n_levels, n_hidden,
                          ptr<const float>(powers_W), ptr<const float>(powers_bv), mark, as_stream(stream));
        },
        "start"_a, "last"_a, "step"_a, "W"_a, "bv"_a, "vel_W"_a, "vel_bv"_a, "n_items"_a, "n_levels"_a, "n_hidden"_a,
        "powers_W"_a, "powers_bv"_a, "mark"_a, "stream"_a, "device"_a, release_gil(),
        "the zero-gradient steps the marked items missed (kernels.catch_up)");

    m.def(
        "predict_pairs",
        [](uintptr_t ph, uintptr_t pair_rows, uintptr_t items, int64_t n_pairs, uintptr_t W, uintptr_t bv,
           uintptr_t levels, int64_t n_levels, int64_t n_hidden, uintptr_t out, uintptr_t stream, int device) {
            rbm::use_device(device);
            rbm::predict_pairs(ptr<const float>(ph), ptr<const int64_t>(pair_rows), ptr<const int32_t>(items),
                               n_pairs, ptr<const float>(W), ptr<const float>(bv), ptr<const float>(levels),
                               n_levels, n_hidden, ptr<float>(out), as_stream(stream));
        },
        "ph"_a, "pair_rows"_a, "items"_a, "n_pairs"_a, "W"_a, "bv"_a, "levels"_a, "n_levels"_a, "n_hidden"_a,
        "out"_a, "stream"_a, "device"_a, release_gil(), "mean-field prediction of (user, item) pairs (kernels.predict_pairs)");

    m.def(
        "score_items",
        [](uintptr_t logits, int64_t n_users, uintptr_t bv, int64_t n_items, int64_t n_levels, uintptr_t levels,
           uintptr_t out, uintptr_t stream, int device) {
            rbm::use_device(device);
            rbm::score_items(ptr<const float>(logits), n_users, ptr<const float>(bv), n_items, n_levels,
                             ptr<const float>(levels), ptr<float>(out), as_stream(stream));
        },
        "logits"_a, "n_users"_a, "bv"_a, "n_items"_a, "n_levels"_a, "levels"_a, "out"_a, "stream"_a, "device"_a,
        release_gil(), "expected rating of every item from dense logits (kernels.score_items)");

    m.def(
        "free_energy",
        [](uintptr_t indptr, uintptr_t indices, uintptr_t states, uintptr_t values, int64_t n_values, uintptr_t rows,
           int64_t n_batch, uintptr_t W, uintptr_t bv, uintptr_t bh, int64_t n_levels, int64_t n_hidden,
           uintptr_t out, uintptr_t scratch, uintptr_t stream, int device) {
            rbm::use_device(device);
            rbm::free_energy(ptr<const int64_t>(indptr), ptr<const int32_t>(indices), ptr<const int32_t>(states),
                             ptr<const float>(values), n_values, ptr<const int64_t>(rows), n_batch,
                             ptr<const float>(W), ptr<const float>(bv), ptr<const float>(bh), n_levels, n_hidden,
                             ptr<float>(out), ptr<float>(scratch), as_stream(stream));
        },
        "indptr"_a, "indices"_a, "states"_a, "values"_a, "n_values"_a, "rows"_a, "n_batch"_a, "W"_a, "bv"_a, "bh"_a,
        "n_levels"_a, "n_hidden"_a, "out"_a, "scratch"_a, "stream"_a, "device"_a, release_gil(),
        "free energy of the batch rows, scratch: float32[n_batch, n_hidden] (kernels.free_energy)");

    m.def(
        "philox_words",
        [](uint64_t seed, uint32_t step, uint32_t gibbs, uint32_t phase, uint64_t start, int64_t count, uintptr_t out,
           uintptr_t stream, int device) {
            rbm::use_device(device);
            rbm::philox_words(seed, step, gibbs, phase, start, count, ptr<uint32_t>(out), as_stream(stream));
        },
        "seed"_a, "step"_a, "gibbs"_a, "phase"_a, "start"_a, "count"_a, "out"_a, "stream"_a, "device"_a,
        release_gil(), "uint32 words of elements start .. start + count - 1, by a kernel (philox.philox_words)");

    m.def(
        "philox_uniforms",
        [](uint64_t seed, uint32_t step, uint32_t gibbs, uint32_t phase, uint64_t start, int64_t count, uintptr_t out,
           uintptr_t stream, int device) {
            rbm::use_device(device);
            rbm::philox_uniforms(seed, step, gibbs, phase, start, count, ptr<float>(out), as_stream(stream));
        },
        "seed"_a, "step"_a, "gibbs"_a, "phase"_a, "start"_a, "count"_a, "out"_a, "stream"_a, "device"_a,
        release_gil(), "float32 uniforms of elements start .. start + count - 1, by a kernel (philox.philox_uniforms)");

    m.def(
        "synchronize",
        [](uintptr_t stream, int device) {
            rbm::use_device(device);
            rbm::synchronize(as_stream(stream));
        },
        "stream"_a, "device"_a, release_gil(), "wait until the stream has finished its work");

    // The header function itself, called on the host: for the known-answer tests.
    m.def(
        "philox4x32_10",
        [](uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
            const rbm::Philox4 r = rbm::philox4x32_10(rbm::Philox4{{c0, c1, c2, c3}}, k0, k1);
            return std::make_tuple(r.v[0], r.v[1], r.v[2], r.v[3]);
        },
        "c0"_a, "c1"_a, "c2"_a, "c3"_a, "k0"_a, "k1"_a, "Philox4x32-10 of a counter and key (csrc/philox.cuh, on the host)");

    m.def("launch_count", &rbm::launch_count,
          "kernel launches made by this module so far (all threads)");
    m.attr("MAX_LEVELS") = rbm::kMaxLevels;
}

}  // namespace

#if defined(RBM_CUDA_EMULATION)

NB_MODULE(_emu, m) {
    m.doc() =
        "rbm_cuda kernels (csrc/kernels.cu) compiled by the host compiler: every launch runs its grid on the CPU. "
        "Pointers are host addresses (numpy arrays); stream and device are ignored.";
    define_kernels(m);
#if defined(RBM_CUDA_SANITIZED)
    m.attr("SANITIZED") = true;  // built with AddressSanitizer and UBSan (RBM_CUDA_SANITIZE)
#else
    m.attr("SANITIZED") = false;
#endif
    m.def(
        "set_schedule",
        [](const std::string &order, uint64_t seed) {
            if (order == "forward")
                rbm_emu::set_schedule(rbm_emu::Schedule::forward, seed);
            else if (order == "reverse")
                rbm_emu::set_schedule(rbm_emu::Schedule::reverse, seed);
            else if (order == "shuffled")
                rbm_emu::set_schedule(rbm_emu::Schedule::shuffled, seed);
            else
                throw std::invalid_argument("schedule must be 'forward', 'reverse' or 'shuffled', got '" + order + "'");
        },
        "order"_a, "seed"_a = 0,
        "order in which launches visit blocks and threads: 'forward', 'reverse', or 'shuffled' (a permutation "
        "per launch and per block, drawn from seed and the number of launches since this call)");
    m.def("get_schedule", []() {
        static const char *names[] = {"forward", "reverse", "shuffled"};
        return std::make_tuple(std::string(names[static_cast<int>(rbm_emu::schedule)]), rbm_emu::schedule_seed);
    });
    m.def(
        "visit_order",
        [](uint64_t n) {
            rbm_emu::SplitMix64 rng = rbm_emu::launch_rng();
            return rbm_emu::visit_order(n, rbm_emu::schedule, rng);
        },
        "n"_a, "the order in which the next launch of n blocks would visit them (counts as a launch)");
}

#else

NB_MODULE(_cuda, m) {
    m.doc() = "rbm_cuda CUDA kernels (device pointers are passed as integers)";
    m.def("runtime_version", &rbm::runtime_version, "CUDA runtime version linked into the module");
    m.def("driver_version", &rbm::driver_version, "CUDA driver version, 0 when no driver is present");
    m.def("device_count", &rbm::device_count, "number of CUDA devices; raises RuntimeError without a driver");
    define_kernels(m);
}

#endif
