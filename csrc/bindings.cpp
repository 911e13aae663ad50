// nanobind glue: the only file that knows about Python.  Built twice:
//   rbm_cuda._cuda  with the kernels compiled by nvcc: the arrays are CuPy arrays (device memory);
//   rbm_cuda._emu   with RBM_CUDA_EMULATION, the same kernel source compiled by the host compiler
//                   (csrc/kernels_emu.cpp): the arrays are NumPy arrays, launches run on the CPU.
// Both expose the same kernel functions with the same arguments: typed arrays (dtype, C order and
// device checked by nanobind, never converted: a wrong array is a TypeError naming the expected
// type, not a copy whose writes would be lost), scalars, a stream (an integer, cudaStream_t) and
// the device to run on.  Sizes come from the arrays' shapes, checked against each other here (a
// ValueError naming the array and the shape expected).  They release the GIL; CUDA errors arrive as
// RuntimeError carrying the error string, file and line.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <initializer_list>
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

#if defined(RBM_CUDA_EMULATION)
using Device = nb::device::cpu;
#else
using Device = nb::device::cuda;
#endif

// A C-contiguous array of T on the module's device; const T: the kernel only reads it.
template <class T>
using Array = nb::ndarray<T, nb::c_contig, Device>;

cudaStream_t as_stream(uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

constexpr int64_t any = -1;

// `name` must have `shape` (any: that dimension is free); ValueError otherwise.
template <class T>
void expect(const Array<T> &a, const char *name, std::initializer_list<int64_t> shape) {
    bool ok = a.ndim() == shape.size();
    size_t d = 0;
    for (int64_t s : shape) {
        if (ok && s != any && static_cast<int64_t>(a.shape(d)) != s) ok = false;
        ++d;
    }
    if (ok) return;
    std::string got = "(", want = "(";
    for (size_t i = 0; i < a.ndim(); ++i) got += (i ? ", " : "") + std::to_string(a.shape(i));
    d = 0;
    for (int64_t s : shape) want += (d++ ? ", " : "") + (s == any ? std::string("*") : std::to_string(s));
    throw nb::value_error((std::string(name) + " has shape " + got + (a.ndim() == 1 ? ",)" : ")") +
                           ", expected " + want + (shape.size() == 1 ? ",)" : ")")).c_str());
}

template <class T>
int64_t dim(const Array<T> &a, size_t d) {
    return static_cast<int64_t>(a.shape(d));
}

// The rating rows of a batch: indptr [n_rows + 1], indices and states [nnz], values [0 or nnz],
// rows [B] (indices into indptr's rows).
struct Ratings {
    const Array<const int64_t> &indptr;
    const Array<const int32_t> &indices;
    const Array<const int32_t> &states;
    const Array<const float> &values;
    const Array<const int64_t> &rows;

    int64_t nnz() const { return dim(indices, 0); }
    int64_t batch() const { return dim(rows, 0); }
    void check() const {
        expect(indptr, "indptr", {any});
        if (dim(indptr, 0) < 1) throw nb::value_error("indptr must have n_rows + 1 >= 1 entries");
        expect(indices, "indices", {any});
        expect(states, "states", {nnz()});
        expect(values, "values", {any});
        if (dim(values, 0) != 0 && dim(values, 0) != nnz())
            throw nb::value_error(("values must have 0 or nnz = " + std::to_string(nnz()) + " entries, got " +
                                   std::to_string(dim(values, 0))).c_str());
        expect(rows, "rows", {any});
    }
};

// W [n_items, K, F]: its sizes.
struct Sizes {
    int64_t items, levels, hidden;
};

template <class T>
Sizes weights(const Array<T> &W, const char *name = "W") {
    if (W.ndim() != 3) expect(W, name, {any, any, any});
    return {dim(W, 0), dim(W, 1), dim(W, 2)};
}

// group_by_item's arrays: start [n_items + 1], slot_b and slot_p [m], delta [B].
void check_group(const Array<const int64_t> &start, const Array<const int32_t> &slot_b,
                 const Array<const int32_t> &slot_p, const Array<const int64_t> &delta, int64_t n_items, int64_t B) {
    expect(start, "start", {n_items + 1});
    expect(slot_b, "slot_b", {any});
    expect(slot_p, "slot_p", {dim(slot_b, 0)});
    expect(delta, "delta", {B});
}

void define_kernels(nb::module_ &m) {
    m.def(
        "sample_hidden",
        [](Array<const int64_t> indptr, Array<const int32_t> indices, Array<const int32_t> states,
           Array<const float> values, Array<const int64_t> rows, Array<const float> W, Array<const float> bh,
           uint64_t seed, uint32_t step, uint32_t gibbs, Array<float> prob_out, Array<float> sample_out, bool sample,
           Array<float> partial, Array<int32_t> arrived, uintptr_t stream, int device) {
            const Ratings r{indptr, indices, states, values, rows};
            r.check();
            const Sizes s = weights(W);
            const int64_t B = r.batch();
            expect(bh, "bh", {s.hidden});
            expect(prob_out, "prob_out", {B, s.hidden});
            expect(sample_out, "sample_out", {B, s.hidden});
            expect(partial, "partial", {B, rbm::kRowParts, s.hidden});
            expect(arrived, "arrived", {B, s.hidden});
            nb::gil_scoped_release release;
            rbm::use_device(device);
            rbm::sample_hidden(indptr.data(), indices.data(), states.data(), values.data(), dim(values, 0),
                               rows.data(), B, W.data(), s.levels, s.hidden, bh.data(), seed, step, gibbs,
                               prob_out.data(), sample_out.data(), sample, partial.data(), arrived.data(),
                               as_stream(stream));
        },
        "indptr"_a.noconvert(), "indices"_a.noconvert(), "states"_a.noconvert(), "values"_a.noconvert(),
        "rows"_a.noconvert(), "W"_a.noconvert(), "bh"_a.noconvert(), "seed"_a, "step"_a, "gibbs"_a,
        "prob_out"_a.noconvert(), "sample_out"_a.noconvert(), "sample"_a, "partial"_a.noconvert(),
        "arrived"_a.noconvert(), "stream"_a, "device"_a,
        "p(h | v) and a Bernoulli draw for the batch rows (kernels.sample_hidden); partial and arrived: "
        "scratch for the rows summed in parts (arrived zero before the launch, and left zero)");
    m.attr("ROW_CHUNK") = rbm::kRowChunk;
    m.attr("ROW_PARTS") = rbm::kRowParts;

    m.def(
        "sample_visible_softmax",
        [](Array<const int32_t> indices, Array<const int32_t> slot_b, Array<const int32_t> slot_p,
           Array<const int64_t> delta, Array<const float> h, Array<uint32_t> hbits, Array<const float> W,
           Array<const float> bv, uint64_t seed, uint32_t step, uint32_t gibbs, Array<int32_t> out_states,
           uintptr_t stream, int device) {
            const Sizes s = weights(W);
            expect(indices, "indices", {any});
            expect(slot_b, "slot_b", {any});
            expect(slot_p, "slot_p", {dim(slot_b, 0)});
            const int64_t B = dim(delta, 0);
            expect(delta, "delta", {B});
            expect(h, "h", {B, s.hidden});
            expect(hbits, "hbits", {B, (s.hidden + 31) / 32});
            expect(bv, "bv", {s.items, s.levels});
            expect(out_states, "out_states", {dim(indices, 0)});
            nb::gil_scoped_release release;
            rbm::use_device(device);
            rbm::sample_visible_softmax(indices.data(), slot_b.data(), slot_p.data(), delta.data(), dim(slot_b, 0),
                                        h.data(), B, hbits.data(), W.data(), bv.data(), s.levels, s.hidden, seed,
                                        step, gibbs, out_states.data(), as_stream(stream));
        },
        "indices"_a.noconvert(), "slot_b"_a.noconvert(), "slot_p"_a.noconvert(), "delta"_a.noconvert(),
        "h"_a.noconvert(), "hbits"_a.noconvert(), "W"_a.noconvert(), "bv"_a.noconvert(), "seed"_a, "step"_a,
        "gibbs"_a, "out_states"_a.noconvert(), "stream"_a, "device"_a,
        "softmax reconstruction and categorical draw of the rated entries (kernels.sample_visible_softmax)");

    m.def(
        "sigmoid_bernoulli",
        [](Array<const float> logits, Array<const int64_t> rows, uint64_t seed, uint32_t step, uint32_t gibbs,
           uint32_t phase, Array<float> prob_out, Array<float> sample_out, uintptr_t stream, int device) {
            expect(logits, "logits", {any, any});
            const int64_t B = dim(logits, 0), N = dim(logits, 1);
            expect(rows, "rows", {B});
            expect(prob_out, "prob_out", {B, N});
            expect(sample_out, "sample_out", {B, N});
            nb::gil_scoped_release release;
            rbm::use_device(device);
            rbm::sigmoid_bernoulli(logits.data(), B, N, rows.data(), seed, step, gibbs, phase, prob_out.data(),
                                   sample_out.data(), as_stream(stream));
        },
        "logits"_a.noconvert(), "rows"_a.noconvert(), "seed"_a, "step"_a, "gibbs"_a, "phase"_a,
        "prob_out"_a.noconvert(), "sample_out"_a.noconvert(), "stream"_a, "device"_a,
        "dense sigmoid and Bernoulli draw (kernels.sigmoid_bernoulli)");

    m.def(
        "compact_rows",
        [](Array<const float> dense, Array<int64_t> chunk_counts, Array<int64_t> indptr_out,
           Array<int32_t> indices_out, uintptr_t stream, int device) {
            expect(dense, "dense", {any, any});
            const int64_t B = dim(dense, 0), N = dim(dense, 1);
            expect(chunk_counts, "chunk_counts", {B * ((N + rbm::kCompactChunk - 1) / rbm::kCompactChunk)});
            expect(indptr_out, "indptr_out", {B + 1});
            expect(indices_out, "indices_out", {any});
            // the kernel cannot stop at a full buffer: room for every column
            if (dim(indices_out, 0) < B * N)
                throw nb::value_error(("indices_out has " + std::to_string(dim(indices_out, 0)) +
                                       " entries, compact_rows needs B * N = " + std::to_string(B * N)).c_str());
            nb::gil_scoped_release release;
            rbm::use_device(device);
            rbm::compact_rows(dense.data(), B, N, chunk_counts.data(), indptr_out.data(), indices_out.data(),
                              as_stream(stream));
        },
        "dense"_a.noconvert(), "chunk_counts"_a.noconvert(), "indptr_out"_a.noconvert(), "indices_out"_a.noconvert(),
        "stream"_a, "device"_a, "the nonzero columns of each row as CSR (kernels.compact_rows)");
    m.attr("COMPACT_CHUNK") = rbm::kCompactChunk;

    m.def(
        "scatter_gradients",
        [](Array<const int64_t> indptr, Array<const int32_t> indices, Array<const int32_t> states,
           Array<const float> values, Array<const int64_t> rows, Array<const float> ph, float sign, Array<float> dW,
           Array<float> dbv, uintptr_t stream, int device) {
            const Ratings r{indptr, indices, states, values, rows};
            r.check();
            const Sizes s = weights(dW, "dW");
            expect(ph, "ph", {r.batch(), s.hidden});
            expect(dbv, "dbv", {s.items, s.levels});
            nb::gil_scoped_release release;
            rbm::use_device(device);
            rbm::scatter_gradients(indptr.data(), indices.data(), states.data(), values.data(), dim(values, 0),
                                   rows.data(), r.batch(), ph.data(), sign, dW.data(), dbv.data(), s.levels,
                                   s.hidden, as_stream(stream));
        },
        "indptr"_a.noconvert(), "indices"_a.noconvert(), "states"_a.noconvert(), "values"_a.noconvert(),
        "rows"_a.noconvert(), "ph"_a.noconvert(), "sign"_a, "dW"_a.noconvert(), "dbv"_a.noconvert(), "stream"_a,
        "device"_a, "scatter-add of sign * value * ph into the rated items' weights (kernels.scatter_gradients, atomics)");

    m.def(
        "apply_update",
        [](Array<float> param, Array<float> grad, Array<float> velocity, float learning_rate, float momentum,
           float weight_decay, float scale, uintptr_t stream, int device) {
            expect(param, "param", {any});
            const int64_t n = dim(param, 0);
            expect(grad, "grad", {n});
            expect(velocity, "velocity", {n});
            nb::gil_scoped_release release;
            rbm::use_device(device);
            rbm::apply_update(param.data(), grad.data(), velocity.data(), n, learning_rate, momentum, weight_decay,
                              scale, as_stream(stream));
        },
        "param"_a.noconvert(), "grad"_a.noconvert(), "velocity"_a.noconvert(), "learning_rate"_a, "momentum"_a,
        "weight_decay"_a, "scale"_a, "stream"_a, "device"_a, "momentum and weight-decay update (kernels.apply_update)");

    m.def(
        "update_hidden_bias",
        [](Array<const float> ph0, Array<const float> phT, Array<float> bh, Array<float> grad, Array<float> velocity,
           float learning_rate, float momentum, float scale, uintptr_t stream, int device) {
            expect(ph0, "ph0", {any, any});
            const int64_t B = dim(ph0, 0), F = dim(ph0, 1);
            expect(phT, "phT", {B, F});
            expect(bh, "bh", {F});
            expect(grad, "grad", {F});
            expect(velocity, "velocity", {F});
            nb::gil_scoped_release release;
            rbm::use_device(device);
            rbm::update_hidden_bias(ph0.data(), phT.data(), B, F, bh.data(), grad.data(), velocity.data(),
                                    learning_rate, momentum, scale, as_stream(stream));
        },
        "ph0"_a.noconvert(), "phT"_a.noconvert(), "bh"_a.noconvert(), "grad"_a.noconvert(), "velocity"_a.noconvert(),
        "learning_rate"_a, "momentum"_a, "scale"_a, "stream"_a, "device"_a,
        "the hidden-bias gradient and its momentum update (kernels.update_hidden_bias)");

    m.def(
        "update_softmax",
        [](Array<const int64_t> start, Array<const int32_t> slot_b, Array<const int32_t> slot_p,
           Array<const int64_t> delta, Array<const int32_t> states, Array<const int32_t> neg_states,
           Array<const float> ph0, Array<const float> phT, Array<float> W, Array<float> bv, Array<float> vel_W,
           Array<float> vel_bv, float learning_rate, float momentum, float weight_decay, float scale,
           Array<int64_t> last, int64_t step, uintptr_t stream, int device) {
            const Sizes s = weights(W);
            const int64_t B = dim(delta, 0);
            check_group(start, slot_b, slot_p, delta, s.items, B);
            expect(states, "states", {any});
            expect(neg_states, "neg_states", {dim(states, 0)});
            expect(ph0, "ph0", {B, s.hidden});
            expect(phT, "phT", {B, s.hidden});
            expect(bv, "bv", {s.items, s.levels});
            expect(vel_W, "vel_W", {s.items, s.levels, s.hidden});
            expect(vel_bv, "vel_bv", {s.items, s.levels});
            expect(last, "last", {s.items});
            nb::gil_scoped_release release;
            rbm::use_device(device);
            rbm::update_softmax(start.data(), slot_b.data(), slot_p.data(), delta.data(), states.data(),
                                neg_states.data(), ph0.data(), phT.data(), W.data(), bv.data(), vel_W.data(),
                                vel_bv.data(), s.items, s.levels, s.hidden, learning_rate, momentum, weight_decay,
                                scale, last.data(), step, as_stream(stream));
        },
        "start"_a.noconvert(), "slot_b"_a.noconvert(), "slot_p"_a.noconvert(), "delta"_a.noconvert(),
        "states"_a.noconvert(), "neg_states"_a.noconvert(), "ph0"_a.noconvert(), "phT"_a.noconvert(),
        "W"_a.noconvert(), "bv"_a.noconvert(), "vel_W"_a.noconvert(), "vel_bv"_a.noconvert(), "learning_rate"_a,
        "momentum"_a, "weight_decay"_a, "scale"_a, "last"_a.noconvert(), "step"_a, "stream"_a, "device"_a,
        "gradient of one CD step and momentum update of W and bv, rated items only (kernels.update_softmax)");

    m.def(
        "catch_up",
        [](Array<const int64_t> start, Array<int64_t> last, int64_t step, Array<float> W, Array<float> bv,
           Array<float> vel_W, Array<float> vel_bv, Array<const float> powers_W, Array<const float> powers_bv,
           bool mark, uintptr_t stream, int device) {
            const Sizes s = weights(W);
            expect(start, "start", {s.items + 1});
            expect(last, "last", {s.items});
            expect(bv, "bv", {s.items, s.levels});
            expect(vel_W, "vel_W", {s.items, s.levels, s.hidden});
            expect(vel_bv, "vel_bv", {s.items, s.levels});
            expect(powers_W, "powers_W", {any, 4});
            expect(powers_bv, "powers_bv", {dim(powers_W, 0), 4});
            nb::gil_scoped_release release;
            rbm::use_device(device);
            rbm::catch_up(start.data(), last.data(), step, W.data(), bv.data(), vel_W.data(), vel_bv.data(), s.items,
                          s.levels, s.hidden, powers_W.data(), powers_bv.data(), mark, as_stream(stream));
        },
        "start"_a.noconvert(), "last"_a.noconvert(), "step"_a, "W"_a.noconvert(), "bv"_a.noconvert(),
        "vel_W"_a.noconvert(), "vel_bv"_a.noconvert(), "powers_W"_a.noconvert(), "powers_bv"_a.noconvert(),
        "mark"_a, "stream"_a, "device"_a, "the zero-gradient steps the marked items missed (kernels.catch_up)");

    m.def(
        "predict_pairs",
        [](Array<const float> ph, Array<const int64_t> pair_rows, Array<const int32_t> items, Array<const float> W,
           Array<const float> bv, Array<const float> levels, Array<float> out, uintptr_t stream, int device) {
            const Sizes s = weights(W);
            expect(ph, "ph", {any, s.hidden});
            expect(items, "items", {any});
            const int64_t P = dim(items, 0);
            expect(pair_rows, "pair_rows", {P});
            expect(bv, "bv", {s.items, s.levels});
            expect(levels, "levels", {s.levels});
            expect(out, "out", {P});
            nb::gil_scoped_release release;
            rbm::use_device(device);
            rbm::predict_pairs(ph.data(), pair_rows.data(), items.data(), P, W.data(), bv.data(), levels.data(),
                               s.levels, s.hidden, out.data(), as_stream(stream));
        },
        "ph"_a.noconvert(), "pair_rows"_a.noconvert(), "items"_a.noconvert(), "W"_a.noconvert(), "bv"_a.noconvert(),
        "levels"_a.noconvert(), "out"_a.noconvert(), "stream"_a, "device"_a,
        "mean-field prediction of (user, item) pairs (kernels.predict_pairs)");

    m.def(
        "score_items",
        [](Array<const float> logits, Array<const float> bv, Array<const float> levels, Array<float> out,
           uintptr_t stream, int device) {
            expect(bv, "bv", {any, any});
            const int64_t n_items = dim(bv, 0), K = dim(bv, 1);
            expect(logits, "logits", {any, n_items * K});
            const int64_t U = dim(logits, 0);
            expect(levels, "levels", {K});
            expect(out, "out", {U, n_items});
            nb::gil_scoped_release release;
            rbm::use_device(device);
            rbm::score_items(logits.data(), U, bv.data(), n_items, K, levels.data(), out.data(), as_stream(stream));
        },
        "logits"_a.noconvert(), "bv"_a.noconvert(), "levels"_a.noconvert(), "out"_a.noconvert(), "stream"_a,
        "device"_a, "expected rating of every item from dense logits (kernels.score_items)");

    m.def(
        "free_energy",
        [](Array<const int64_t> indptr, Array<const int32_t> indices, Array<const int32_t> states,
           Array<const float> values, Array<const int64_t> rows, Array<const float> W, Array<const float> bv,
           Array<const float> bh, Array<float> out, Array<float> scratch, uintptr_t stream, int device) {
            const Ratings r{indptr, indices, states, values, rows};
            r.check();
            const Sizes s = weights(W);
            const int64_t B = r.batch();
            expect(bv, "bv", {s.items, s.levels});
            expect(bh, "bh", {s.hidden});
            expect(out, "out", {B});
            expect(scratch, "scratch", {B, s.hidden});
            nb::gil_scoped_release release;
            rbm::use_device(device);
            rbm::free_energy(indptr.data(), indices.data(), states.data(), values.data(), dim(values, 0), rows.data(),
                             B, W.data(), bv.data(), bh.data(), s.levels, s.hidden, out.data(), scratch.data(),
                             as_stream(stream));
        },
        "indptr"_a.noconvert(), "indices"_a.noconvert(), "states"_a.noconvert(), "values"_a.noconvert(),
        "rows"_a.noconvert(), "W"_a.noconvert(), "bv"_a.noconvert(), "bh"_a.noconvert(), "out"_a.noconvert(),
        "scratch"_a.noconvert(), "stream"_a, "device"_a,
        "free energy of the batch rows, scratch: float32[n_batch, n_hidden] (kernels.free_energy)");

    m.def(
        "philox_words",
        [](uint64_t seed, uint32_t step, uint32_t gibbs, uint32_t phase, uint64_t start, Array<uint32_t> out,
           uintptr_t stream, int device) {
            expect(out, "out", {any});
            nb::gil_scoped_release release;
            rbm::use_device(device);
            rbm::philox_words(seed, step, gibbs, phase, start, dim(out, 0), out.data(), as_stream(stream));
        },
        "seed"_a, "step"_a, "gibbs"_a, "phase"_a, "start"_a, "out"_a.noconvert(), "stream"_a, "device"_a, "uint32 words of elements start .. start + count - 1, by a kernel (philox.philox_words)");

    m.def(
        "philox_uniforms",
        [](uint64_t seed, uint32_t step, uint32_t gibbs, uint32_t phase, uint64_t start, Array<float> out,
           uintptr_t stream, int device) {
            expect(out, "out", {any});
            nb::gil_scoped_release release;
            rbm::use_device(device);
            rbm::philox_uniforms(seed, step, gibbs, phase, start, dim(out, 0), out.data(), as_stream(stream));
        },
        "seed"_a, "step"_a, "gibbs"_a, "phase"_a, "start"_a, "out"_a.noconvert(), "stream"_a, "device"_a, "float32 uniforms of elements start .. start + count - 1, by a kernel (philox.philox_uniforms)");

    m.def(
        "synchronize",
        [](uintptr_t stream, int device) {
            rbm::use_device(device);
            rbm::synchronize(as_stream(stream));
        },
        "stream"_a, "device"_a, nb::call_guard<nb::gil_scoped_release>(), "wait until the stream has finished its work");

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
        "The arrays are numpy arrays; stream and device are ignored.";
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
    m.doc() = "rbm_cuda CUDA kernels over CuPy arrays (device memory)";
    m.def("runtime_version", &rbm::runtime_version, "CUDA runtime version linked into the module");
    m.def("driver_version", &rbm::driver_version, "CUDA driver version, 0 when no driver is present");
    m.def("device_count", &rbm::device_count, "number of CUDA devices; raises RuntimeError without a driver");
    define_kernels(m);
}

#endif
