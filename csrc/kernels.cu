// The RBM kernels and their launchers.  Each kernel mirrors the Numba function of the same name in
// rbm_cuda/cpu/kernels.py: same maths in float32, same order of additions, same Philox element
// indices (hidden unit f of CSR row r: r * F + f; rated entry at CSR position j: j; dense unit
// (b, n): rows[b] * width + n), same `u < p` test.  Per-element maths is in kernel_math.cuh.
//
// This file is compiled twice: by nvcc into rbm_cuda._cuda, and by the host compiler (through
// kernels_emu.cpp and cuda_emulation.h) into rbm_cuda._emu, where each launch runs on the CPU.  So:
// launch only through RBM_LAUNCH, and no __shared__ / __syncthreads / warp intrinsics unless the
// emulation learns to run a block's threads concurrently (csrc/EMULATION.md).
#include <algorithm>
#include <stdexcept>
#include <string>

#include "cuda_check.h"
#include "kernel_math.cuh"
#include "kernels.h"
#include "launch.cuh"
#include "philox.cuh"

namespace rbm {

namespace {

constexpr int64_t kHiddenBlockMax = 128;  // threads over the hidden units of one row
constexpr int64_t kFlatBlock = 256;       // elementwise kernels
constexpr int64_t kFlatGridMax = 1 << 20; // elementwise kernels loop (grid stride) beyond this

[[noreturn]] void invalid(const std::string &what) { throw std::invalid_argument(what); }

void check_count(int64_t n, const char *name) {
    if (n < 0) invalid(std::string(name) + " must not be negative, got " + std::to_string(n));
}

void check_levels(int64_t n_levels) {
    if (n_levels < 1 || n_levels > kMaxLevels)
        invalid("the CUDA kernels support 1 to " + std::to_string(kMaxLevels) + " levels per visible unit, got " +
                std::to_string(n_levels) + " (use device='cpu' for more)");
}

// Threads per block over the hidden units: a multiple of the warp size, at most kHiddenBlockMax.
int64_t hidden_block(int64_t n_hidden) { return std::min<int64_t>(kHiddenBlockMax, (n_hidden + 31) / 32 * 32); }

// One block per batch row (grid x), hidden units across threads and grid y.
dim3 row_hidden_grid(int64_t n_batch, int64_t n_hidden, int64_t block) {
    const int64_t chunks = (n_hidden + block - 1) / block;
    if (n_batch > 2147483647LL) invalid("batch too large for one launch: " + std::to_string(n_batch) + " rows");
    if (chunks > 65535) invalid("n_hidden too large for one launch: " + std::to_string(n_hidden));
    return dim3(static_cast<unsigned>(n_batch), static_cast<unsigned>(chunks), 1);
}

dim3 flat_grid(int64_t n) {
    return dim3(static_cast<unsigned>(std::min<int64_t>((n + kFlatBlock - 1) / kFlatBlock, kFlatGridMax)), 1, 1);
}

}  // namespace

// Launches the instantiation of a kernel template <int MaxLevels> that fits n_levels (register
// arrays for the usual level counts: 1-2 like/bernoulli, 5 stars, 10 half stars).
#define RBM_LAUNCH_BY_LEVELS(n_levels, kernel, grid, block, stream, ...)                 \
    do {                                                                                 \
        if ((n_levels) <= 2)                                                             \
            RBM_LAUNCH(kernel<2>, grid, block, 0, stream, __VA_ARGS__);                  \
        else if ((n_levels) <= 5)                                                        \
            RBM_LAUNCH(kernel<5>, grid, block, 0, stream, __VA_ARGS__);                  \
        else if ((n_levels) <= 10)                                                       \
            RBM_LAUNCH(kernel<10>, grid, block, 0, stream, __VA_ARGS__);                 \
        else                                                                             \
            RBM_LAUNCH(kernel<kMaxLevels>, grid, block, 0, stream, __VA_ARGS__);         \
    } while (0)

// ---- kernels --------------------------------------------------------------------------------------

// kernels.sample_hidden: thread (b, f, part) sums its part of W[item_j, state_j, f] over row rows[b]
// (coalesced across f; hidden_part), then p = sigmoid, and h = (u < p) with u from element
// rows[b] * F + f.  A row of several parts: each thread stores its part in partial[b, part, f] and
// counts itself in arrived[b, f]; the last to arrive adds the parts in order, finishes the unit and
// sets the count back to zero for the next launch.
__global__ void sample_hidden_kernel(const int64_t *__restrict__ indptr, const int32_t *__restrict__ indices,
                                     const int32_t *__restrict__ states, const float *__restrict__ values,
                                     bool use_values, const int64_t *__restrict__ rows, const float *__restrict__ W,
                                     int64_t n_levels, int64_t n_hidden, const float *__restrict__ bh, uint64_t seed,
                                     uint32_t step, uint32_t gibbs, float *prob_out, float *sample_out,
                                     bool sample, float *partial, int32_t *arrived) {
    const int64_t b = blockIdx.x;
    const int64_t f = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x;
    const int64_t part = blockIdx.z;
    if (f >= n_hidden) return;
    const int64_t r = rows[b];
    const int64_t n_parts = row_parts(indptr[r + 1] - indptr[r]);
    if (part >= n_parts) return;
    float x = hidden_part(indptr, indices, states, values, use_values, r, W, n_levels, n_hidden, bh, f, part, n_parts);
    if (n_parts > 1) {
        const int64_t unit = b * n_hidden + f;
        volatile float *parts = partial + b * kRowParts * n_hidden + f;  // parts[k * n_hidden]: part k
        parts[part * n_hidden] = x;
        __threadfence();  // the part is visible to every block before the count says it is there
        if (atomicAdd(arrived + unit, 1) != n_parts - 1) return;
        __threadfence();  // the reader's side: the other parts are read after their counts were seen
        x = parts[0];
        for (int64_t k = 1; k < n_parts; ++k) x += parts[k * n_hidden];
        arrived[unit] = 0;
    }
    const float p = sigmoid(x);
    const int64_t out = b * n_hidden + f;
    prob_out[out] = p;
    if (sample) {
        const float u = philox_uniform(seed, step, gibbs, kPhaseHidden,
                                       static_cast<uint64_t>(r) * static_cast<uint64_t>(n_hidden) +
                                           static_cast<uint64_t>(f));
        sample_out[out] = bernoulli(u, p);
    }
}

// The binary hidden states h[n_batch, n_hidden] as bits, words[n_batch, n_words]: a thread per word.
__global__ void pack_bits_kernel(const float *__restrict__ h, int64_t n_batch, int64_t n_hidden, int64_t n_words,
                                 uint32_t *__restrict__ bits) {
    const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
    for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n_batch * n_words; e += stride) {
        const int64_t b = e / n_words, f0 = (e - b * n_words) * 32;
        uint32_t word = 0;
        for (int64_t f = f0; f < f0 + 32 && f < n_hidden; ++f)
            if (h[b * n_hidden + f] != 0.0f) word |= 1u << (f - f0);
        bits[e] = word;
    }
}

// kernels.sample_visible_softmax: a thread per slot of the item-grouped batch (grid stride), so
// neighbouring threads read the same item's weights: K logits, softmax, one categorical draw from
// element j, the entry's CSR position.  The hidden states come as bits (pack_bits_kernel): a thread
// reads its row's few words instead of n_hidden floats per level.
template <int MaxLevels>
__global__ void sample_visible_softmax_kernel(const int32_t *__restrict__ indices, const int32_t *__restrict__ slot_b,
                                              const int32_t *__restrict__ slot_p, const int64_t *__restrict__ delta,
                                              int64_t n_slots, const uint32_t *__restrict__ hbits, int64_t n_words,
                                              const float *__restrict__ W, const float *__restrict__ bv,
                                              int64_t n_levels, int64_t n_hidden, uint64_t seed, uint32_t step,
                                              uint32_t gibbs, int32_t *__restrict__ out_states) {
    const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
    const int levels = static_cast<int>(n_levels);
    for (int64_t q = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; q < n_slots; q += stride) {
        const int64_t b = slot_b[q];
        const int64_t j = slot_p[q] + delta[b];
        float z[MaxLevels];
        const float top = level_logits(hbits + b * n_words, W, bv, indices[j], levels, n_hidden, z);
        const float total = softmax_numerators(z, levels, top);
        const float u = philox_uniform(seed, step, gibbs, kPhaseVisible, static_cast<uint64_t>(j));
        out_states[j] = categorical(z, levels, total, u);
    }
}

// kernels.sigmoid_bernoulli: element (b, n) draws element rows[b] * width + n.
__global__ void sigmoid_bernoulli_kernel(const float *__restrict__ logits, int64_t n_batch, int64_t width,
                                         const int64_t *__restrict__ rows, uint64_t seed, uint32_t step,
                                         uint32_t gibbs, uint32_t phase, float *__restrict__ prob_out,
                                         float *__restrict__ sample_out) {
    const int64_t total = n_batch * width;
    const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
    for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += stride) {
        const int64_t b = e / width;
        const int64_t n = e - b * width;
        const float p = sigmoid(logits[e]);
        prob_out[e] = p;
        const float u = philox_uniform(seed, step, gibbs, phase,
                                       static_cast<uint64_t>(rows[b]) * static_cast<uint64_t>(width) +
                                           static_cast<uint64_t>(n));
        sample_out[e] = bernoulli(u, p);
    }
}

// kernels.compact_rows in three passes, each row cut into chunks of kCompactChunk columns: a thread
// per (row, chunk) counts the chunk's nonzeros; one thread turns the counts into offsets (row-major,
// so each row's chunks follow one another) and indptr; a thread per (row, chunk) writes its columns
// in order.  The columns come out in increasing order, as in the Numba kernel.
__global__ void count_chunks_kernel(const float *__restrict__ dense, int64_t n_batch, int64_t width, int64_t n_chunks,
                                    int64_t *__restrict__ counts) {
    const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
    for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n_batch * n_chunks; e += stride) {
        const int64_t b = e / n_chunks, n0 = (e - b * n_chunks) * kCompactChunk;
        const int64_t n1 = n0 + kCompactChunk < width ? n0 + kCompactChunk : width;
        const float *row = dense + b * width;
        int64_t c = 0;
        for (int64_t n = n0; n < n1; ++n) c += row[n] != 0.0f;
        counts[e] = c;
    }
}

__global__ void scan_chunks_kernel(int64_t *__restrict__ counts, int64_t n_batch, int64_t n_chunks,
                                   int64_t *__restrict__ indptr_out) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    int64_t total = 0;
    for (int64_t b = 0; b < n_batch; ++b) {
        indptr_out[b] = total;
        for (int64_t c = b * n_chunks; c < (b + 1) * n_chunks; ++c) {
            const int64_t here = counts[c];
            counts[c] = total;
            total += here;
        }
    }
    indptr_out[n_batch] = total;
}

__global__ void fill_chunks_kernel(const float *__restrict__ dense, int64_t n_batch, int64_t width, int64_t n_chunks,
                                   const int64_t *__restrict__ offsets, int32_t *__restrict__ indices_out) {
    const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
    for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n_batch * n_chunks; e += stride) {
        const int64_t b = e / n_chunks, n0 = (e - b * n_chunks) * kCompactChunk;
        const int64_t n1 = n0 + kCompactChunk < width ? n0 + kCompactChunk : width;
        const float *row = dense + b * width;
        int64_t k = offsets[e];
        for (int64_t n = n0; n < n1; ++n)
            if (row[n] != 0.0f) indices_out[k++] = static_cast<int32_t>(n);
    }
}

// kernels.scatter_gradients with atomics: thread (b, f) adds s * ph[b, f] for each entry of the row.
__global__ void scatter_gradients_kernel(const int64_t *__restrict__ indptr, const int32_t *__restrict__ indices,
                                         const int32_t *__restrict__ states, const float *__restrict__ values,
                                         bool use_values, const int64_t *__restrict__ rows,
                                         const float *__restrict__ ph, float sign, float *dW, float *dbv,
                                         int64_t n_levels, int64_t n_hidden) {
    const int64_t b = blockIdx.x;
    const int64_t f = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x;
    if (f >= n_hidden) return;
    const int64_t r = rows[b];
    const float phf = ph[b * n_hidden + f];
    const int64_t end = indptr[r + 1];
    for (int64_t j = indptr[r]; j < end; ++j) {
        const float s = use_values ? sign * values[j] : sign;
        const int64_t unit = static_cast<int64_t>(indices[j]) * n_levels + states[j];
        atomicAdd(dW + unit * n_hidden + f, s * phf);
        if (f == 0) atomicAdd(dbv + unit, s);
    }
}

// kernels.update_softmax: block x = item i, threads over f.  Each thread walks the item's slots once
// for the data states and once for the negative states, adding +ph0 / -phT to the gradient of the
// level each slot is in (K accumulators in registers), so every level's sum runs in slot order as in
// the Numba kernel (no atomics: deterministic), and applies the momentum update to W[i, :, f];
// thread f = 0 also updates bv[i, :] and marks the item current (last[i] = step).
template <int MaxLevels>
__global__ void update_softmax_kernel(const int64_t *__restrict__ start, const int32_t *__restrict__ slot_b,
                                      const int32_t *__restrict__ slot_p, const int64_t *__restrict__ delta,
                                      const int32_t *__restrict__ states, const int32_t *__restrict__ neg_states,
                                      const float *__restrict__ ph0, const float *__restrict__ phT,
                                      float *__restrict__ W, float *__restrict__ bv, float *__restrict__ vel_W,
                                      float *__restrict__ vel_bv, int64_t n_levels, int64_t n_hidden,
                                      float learning_rate, float momentum, float weight_decay, float scale,
                                      int64_t *__restrict__ last, int64_t step) {
    const int64_t i = blockIdx.x;
    const int64_t f = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x;
    if (f >= n_hidden) return;
    if (start[i] == start[i + 1]) return;  // not rated in this batch: its step is taken later (catch_up)
    float g[MaxLevels], gb[MaxLevels];
    RBM_UNROLL
    for (int k = 0; k < MaxLevels; ++k) g[k] = gb[k] = 0.0f;
    for (int64_t q = start[i]; q < start[i + 1]; ++q) {
        const int64_t b = slot_b[q];
        const int32_t s = states[slot_p[q] + delta[b]];
        const float x = ph0[b * n_hidden + f];
        RBM_UNROLL
        for (int k = 0; k < MaxLevels; ++k)
            if (k == s) {
                g[k] += x;
                gb[k] += 1.0f;
            }
    }
    for (int64_t q = start[i]; q < start[i + 1]; ++q) {
        const int64_t b = slot_b[q];
        const int32_t s = neg_states[slot_p[q] + delta[b]];
        const float x = phT[b * n_hidden + f];
        RBM_UNROLL
        for (int k = 0; k < MaxLevels; ++k)
            if (k == s) {
                g[k] -= x;
                gb[k] -= 1.0f;
            }
    }
    RBM_UNROLL
    for (int k = 0; k < MaxLevels; ++k) {
        if (k >= n_levels) continue;
        const int64_t unit = i * n_levels + k;
        const int64_t e = unit * n_hidden + f;
        const float v = momentum * vel_W[e] + learning_rate * (scale * g[k] - weight_decay * W[e]);
        vel_W[e] = v;
        W[e] += v;
        if (f == 0) {
            const float vb = momentum * vel_bv[unit] + learning_rate * (scale * gb[k] - 0.0f * bv[unit]);
            vel_bv[unit] = vb;
            bv[unit] += vb;
        }
    }
    if (f == 0) last[i] = step;  // no thread of this kernel reads last: no race
}

// After catch_up_kernel (when asked to mark): the items `start` marks are current at `step`.
__global__ void mark_rated_kernel(const int64_t *__restrict__ start, int64_t n_items, int64_t step,
                                  int64_t *__restrict__ last) {
    const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n_items; i += stride)
        if (start[i + 1] > start[i]) last[i] = step;
}

// kernels.catch_up: each weight and visible bias of a marked item takes the step - last[i]
// zero-gradient steps its item missed, a thread per value (mark_rated_kernel then updates last).
__global__ void catch_up_kernel(const int64_t *__restrict__ start, const int64_t *__restrict__ last, int64_t step,
                                float *__restrict__ W, float *__restrict__ bv, float *__restrict__ vel_W,
                                float *__restrict__ vel_bv, int64_t n_items, int64_t n_levels, int64_t n_hidden,
                                const float *__restrict__ powers_W, const float *__restrict__ powers_bv) {
    const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
    const int64_t per_item = n_levels * n_hidden;
    for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n_items * per_item;
         e += stride) {
        const int64_t i = e / per_item;
        const int64_t missed = step - last[i];
        if (start[i + 1] > start[i] && missed > 0) catch_up_pair(W[e], vel_W[e], powers_W + 4 * missed);
    }
    for (int64_t u = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; u < n_items * n_levels;
         u += stride) {
        const int64_t i = u / n_levels;
        const int64_t missed = step - last[i];
        if (start[i + 1] > start[i] && missed > 0) catch_up_pair(bv[u], vel_bv[u], powers_bv + 4 * missed);
    }
}

// kernels.apply_update
__global__ void apply_update_kernel(float *__restrict__ param, float *__restrict__ grad,
                                    float *__restrict__ velocity, int64_t n, float learning_rate, float momentum,
                                    float weight_decay, float scale) {
    const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
    for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += stride) {
        const float v = momentum * velocity[e] + learning_rate * (scale * grad[e] - weight_decay * param[e]);
        velocity[e] = v;
        param[e] += v;
        grad[e] = 0.0f;
    }
}

// kernels.update_hidden_bias: thread f sums column f of ph0 and of phT over the batch rows in order
// (as NumPy's sum over axis 0 does), adds the difference to grad[f] and applies the momentum update.
__global__ void update_hidden_bias_kernel(const float *__restrict__ ph0, const float *__restrict__ phT,
                                          int64_t n_batch, int64_t n_hidden, float *__restrict__ bh,
                                          float *__restrict__ grad, float *__restrict__ velocity, float learning_rate,
                                          float momentum, float scale) {
    const int64_t f = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (f >= n_hidden) return;
    float s0 = ph0[f], s1 = phT[f];
    for (int64_t b = 1; b < n_batch; ++b) {
        s0 += ph0[b * n_hidden + f];
        s1 += phT[b * n_hidden + f];
    }
    const float g = grad[f] + (s0 - s1);
    const float v = momentum * velocity[f] + learning_rate * (scale * g - 0.0f * bh[f]);
    velocity[f] = v;
    bh[f] += v;
    grad[f] = 0.0f;
}

// kernels.predict_pairs: a thread per pair.
template <int MaxLevels>
__global__ void predict_pairs_kernel(const float *__restrict__ ph, const int64_t *__restrict__ pair_rows,
                                     const int32_t *__restrict__ items, int64_t n_pairs, const float *__restrict__ W,
                                     const float *__restrict__ bv, const float *__restrict__ levels,
                                     int64_t n_levels, int64_t n_hidden, float *__restrict__ out) {
    const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
    const int n_lev = static_cast<int>(n_levels);
    for (int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; p < n_pairs; p += stride) {
        const int64_t i = items[p];
        const float *hb = ph + pair_rows[p] * n_hidden;
        float z[MaxLevels];
        const float top = level_logits(hb, W, bv, i, n_lev, n_hidden, z);
        out[p] = expectation(z, n_lev, top, levels);
    }
}

// kernels.score_items: a thread per (user, item), on logits from a dense product (cuBLAS).
template <int MaxLevels>
__global__ void score_items_kernel(const float *__restrict__ logits, int64_t n_users, const float *__restrict__ bv,
                                   int64_t n_items, int64_t n_levels, const float *__restrict__ levels,
                                   float *__restrict__ out) {
    const int64_t total = n_users * n_items;
    const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
    const int n_lev = static_cast<int>(n_levels);
    for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += stride) {
        const int64_t u = e / n_items;
        const int64_t i = e - u * n_items;
        const float *row = logits + u * n_items * n_levels + i * n_levels;
        float z[MaxLevels];
        float top = -INFINITY;
        RBM_UNROLL
        for (int k = 0; k < MaxLevels; ++k) {
            if (k < n_lev) {
                z[k] = row[k] + bv[i * n_levels + k];
                if (z[k] > top) top = z[k];
            }
        }
        out[e] = expectation(z, n_lev, top, levels);
    }
}

// kernels.free_energy, part 1: thread (b, f) writes softplus(bh_f + sum_j value_j W[item_j, state_j, f]).
__global__ void free_energy_hidden_kernel(const int64_t *__restrict__ indptr, const int32_t *__restrict__ indices,
                                          const int32_t *__restrict__ states, const float *__restrict__ values,
                                          bool use_values, const int64_t *__restrict__ rows,
                                          const float *__restrict__ W, const float *__restrict__ bh,
                                          int64_t n_levels, int64_t n_hidden, float *__restrict__ scratch) {
    const int64_t b = blockIdx.x;
    const int64_t f = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x;
    if (f >= n_hidden) return;
    scratch[b * n_hidden + f] = softplus(
        hidden_input(indptr, indices, states, values, use_values, rows[b], W, n_levels, n_hidden, bh, f));
}

// kernels.free_energy, part 2: a thread per row sums the visible term (CSR order) and the hidden
// terms (f order), as the Numba loop does.
__global__ void free_energy_sum_kernel(const int64_t *__restrict__ indptr, const int32_t *__restrict__ indices,
                                       const int32_t *__restrict__ states, const float *__restrict__ values,
                                       bool use_values, const int64_t *__restrict__ rows, int64_t n_batch,
                                       const float *__restrict__ bv, int64_t n_levels, int64_t n_hidden,
                                       const float *__restrict__ scratch, float *__restrict__ out) {
    const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
    for (int64_t b = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; b < n_batch; b += stride) {
        const int64_t r = rows[b];
        float visible = 0.0f;
        const int64_t end = indptr[r + 1];
        for (int64_t j = indptr[r]; j < end; ++j) {
            const float v = use_values ? values[j] : 1.0f;
            visible += v * bv[static_cast<int64_t>(indices[j]) * n_levels + states[j]];
        }
        float hidden = 0.0f;
        const float *s = scratch + b * n_hidden;
        for (int64_t f = 0; f < n_hidden; ++f) hidden += s[f];
        out[b] = -visible - hidden;
    }
}

// philox.philox_words / philox_uniforms: element start + n of the stream.
__global__ void philox_words_kernel(uint64_t seed, uint32_t step, uint32_t gibbs, uint32_t phase, uint64_t start,
                                    int64_t count, uint32_t *__restrict__ out) {
    const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
    for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < count; e += stride)
        out[e] = philox_word(seed, step, gibbs, phase, start + static_cast<uint64_t>(e));
}

__global__ void philox_uniforms_kernel(uint64_t seed, uint32_t step, uint32_t gibbs, uint32_t phase,
                                       uint64_t start, int64_t count, float *__restrict__ out) {
    const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
    for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < count; e += stride)
        out[e] = philox_uniform(seed, step, gibbs, phase, start + static_cast<uint64_t>(e));
}

// ---- launchers ------------------------------------------------------------------------------------

void use_device(int device) {
    int current = -1;
    RBM_CUDA_CHECK(cudaGetDevice(&current));
    if (current != device) RBM_CUDA_CHECK(cudaSetDevice(device));
}

void synchronize(cudaStream_t stream) { RBM_CUDA_CHECK(cudaStreamSynchronize(stream)); }

uint64_t launch_count() { return launches.load(); }

void sample_hidden(const int64_t *indptr, const int32_t *indices, const int32_t *states, const float *values,
                   int64_t n_values, const int64_t *rows, int64_t n_batch, const float *W, int64_t n_levels,
                   int64_t n_hidden, const float *bh, uint64_t seed, uint32_t step, uint32_t gibbs, float *prob_out,
                   float *sample_out, bool sample, float *partial, int32_t *arrived, cudaStream_t stream) {
    check_count(n_values, "n_values");
    check_count(n_batch, "n_batch");
    check_count(n_hidden, "n_hidden");
    if (n_batch == 0 || n_hidden == 0) return;
    const int64_t block = hidden_block(n_hidden);
    dim3 grid = row_hidden_grid(n_batch, n_hidden, block);
    grid.z = static_cast<unsigned>(kRowParts);
    RBM_LAUNCH(sample_hidden_kernel, grid, dim3(static_cast<unsigned>(block)), 0, stream, indptr, indices, states,
               values, n_values > 0, rows, W, n_levels, n_hidden, bh, seed, step, gibbs, prob_out, sample_out, sample,
               partial, arrived);
    RBM_CUDA_CHECK_LAUNCH();
}

void sample_visible_softmax(const int32_t *indices, const int32_t *slot_b, const int32_t *slot_p,
                            const int64_t *delta, int64_t n_slots, const float *h, int64_t n_batch, uint32_t *hbits,
                            const float *W, const float *bv, int64_t n_levels, int64_t n_hidden, uint64_t seed,
                            uint32_t step, uint32_t gibbs, int32_t *out_states, cudaStream_t stream) {
    check_count(n_slots, "n_slots");
    check_count(n_batch, "n_batch");
    check_count(n_hidden, "n_hidden");
    check_levels(n_levels);
    if (n_slots == 0) return;
    const int64_t n_words = (n_hidden + 31) / 32;
    RBM_LAUNCH(pack_bits_kernel, flat_grid(n_batch * n_words), dim3(static_cast<unsigned>(kFlatBlock)), 0, stream,
               h, n_batch, n_hidden, n_words, hbits);
    RBM_CUDA_CHECK_LAUNCH();
    RBM_LAUNCH_BY_LEVELS(n_levels, sample_visible_softmax_kernel, flat_grid(n_slots),
                         dim3(static_cast<unsigned>(kFlatBlock)), stream, indices, slot_b, slot_p, delta, n_slots,
                         hbits, n_words, W, bv, n_levels, n_hidden, seed, step, gibbs, out_states);
    RBM_CUDA_CHECK_LAUNCH();
}

void sigmoid_bernoulli(const float *logits, int64_t n_batch, int64_t width, const int64_t *rows, uint64_t seed,
                       uint32_t step, uint32_t gibbs, uint32_t phase, float *prob_out, float *sample_out,
                       cudaStream_t stream) {
    check_count(n_batch, "n_batch");
    check_count(width, "width");
    if (n_batch == 0 || width == 0) return;
    RBM_LAUNCH(sigmoid_bernoulli_kernel, flat_grid(n_batch * width), dim3(static_cast<unsigned>(kFlatBlock)), 0,
               stream, logits, n_batch, width, rows, seed, step, gibbs, phase, prob_out, sample_out);
    RBM_CUDA_CHECK_LAUNCH();
}

void compact_rows(const float *dense, int64_t n_batch, int64_t width, int64_t *chunk_counts, int64_t *indptr_out,
                  int32_t *indices_out, cudaStream_t stream) {
    check_count(n_batch, "n_batch");
    check_count(width, "width");
    if (width > 2147483647LL) invalid("compact_rows: width must fit int32 column indices, got " + std::to_string(width));
    const int64_t n_chunks = compact_chunks(width);
    if (n_batch * n_chunks > 0) {
        RBM_LAUNCH(count_chunks_kernel, flat_grid(n_batch * n_chunks), dim3(static_cast<unsigned>(kFlatBlock)), 0,
                   stream, dense, n_batch, width, n_chunks, chunk_counts);
        RBM_CUDA_CHECK_LAUNCH();
    }
    RBM_LAUNCH(scan_chunks_kernel, dim3(1), dim3(1), 0, stream, chunk_counts, n_batch, n_chunks, indptr_out);
    RBM_CUDA_CHECK_LAUNCH();
    if (n_batch * n_chunks > 0) {
        RBM_LAUNCH(fill_chunks_kernel, flat_grid(n_batch * n_chunks), dim3(static_cast<unsigned>(kFlatBlock)), 0,
                   stream, dense, n_batch, width, n_chunks, chunk_counts, indices_out);
        RBM_CUDA_CHECK_LAUNCH();
    }
}

void scatter_gradients(const int64_t *indptr, const int32_t *indices, const int32_t *states, const float *values,
                       int64_t n_values, const int64_t *rows, int64_t n_batch, const float *ph, float sign,
                       float *dW, float *dbv, int64_t n_levels, int64_t n_hidden, cudaStream_t stream) {
    check_count(n_values, "n_values");
    check_count(n_batch, "n_batch");
    check_count(n_hidden, "n_hidden");
    if (n_batch == 0 || n_hidden == 0) return;  // Numba: no chunks, so no work at all
    const int64_t block = hidden_block(n_hidden);
    RBM_LAUNCH(scatter_gradients_kernel, row_hidden_grid(n_batch, n_hidden, block),
               dim3(static_cast<unsigned>(block)), 0, stream, indptr, indices, states, values, n_values > 0, rows, ph,
               sign, dW, dbv, n_levels, n_hidden);
    RBM_CUDA_CHECK_LAUNCH();
}

void apply_update(float *param, float *grad, float *velocity, int64_t n, float learning_rate, float momentum,
                  float weight_decay, float scale, cudaStream_t stream) {
    check_count(n, "n");
    if (n == 0) return;
    RBM_LAUNCH(apply_update_kernel, flat_grid(n), dim3(static_cast<unsigned>(kFlatBlock)), 0, stream, param, grad,
               velocity, n, learning_rate, momentum, weight_decay, scale);
    RBM_CUDA_CHECK_LAUNCH();
}

void update_hidden_bias(const float *ph0, const float *phT, int64_t n_batch, int64_t n_hidden, float *bh, float *grad,
                        float *velocity, float learning_rate, float momentum, float scale, cudaStream_t stream) {
    check_count(n_batch, "n_batch");
    check_count(n_hidden, "n_hidden");
    if (n_batch == 0 || n_hidden == 0) return;
    RBM_LAUNCH(update_hidden_bias_kernel, flat_grid(n_hidden), dim3(static_cast<unsigned>(kFlatBlock)), 0, stream,
               ph0, phT, n_batch, n_hidden, bh, grad, velocity, learning_rate, momentum, scale);
    RBM_CUDA_CHECK_LAUNCH();
}

void update_softmax(const int64_t *start, const int32_t *slot_b, const int32_t *slot_p, const int64_t *delta,
                    const int32_t *states, const int32_t *neg_states, const float *ph0, const float *phT, float *W,
                    float *bv, float *vel_W, float *vel_bv, int64_t n_items, int64_t n_levels, int64_t n_hidden,
                    float learning_rate, float momentum, float weight_decay, float scale, int64_t *last, int64_t step,
                    cudaStream_t stream) {
    check_count(n_items, "n_items");
    check_count(n_levels, "n_levels");
    check_count(n_hidden, "n_hidden");
    if (n_items == 0 || n_levels == 0 || n_hidden == 0) return;
    check_levels(n_levels);
    const int64_t block = hidden_block(n_hidden);
    RBM_LAUNCH_BY_LEVELS(n_levels, update_softmax_kernel, row_hidden_grid(n_items, n_hidden, block),
                         dim3(static_cast<unsigned>(block)), stream, start, slot_b, slot_p, delta, states, neg_states,
                         ph0, phT, W, bv, vel_W, vel_bv, n_levels, n_hidden, learning_rate, momentum, weight_decay,
                         scale, last, step);
    RBM_CUDA_CHECK_LAUNCH();
}

void catch_up(const int64_t *start, int64_t *last, int64_t step, float *W, float *bv, float *vel_W, float *vel_bv,
              int64_t n_items, int64_t n_levels, int64_t n_hidden, const float *powers_W, const float *powers_bv,
              bool mark, cudaStream_t stream) {
    check_count(n_items, "n_items");
    check_count(n_levels, "n_levels");
    check_count(n_hidden, "n_hidden");
    if (n_items == 0) return;
    if (n_levels > 0) {
        RBM_LAUNCH(catch_up_kernel, flat_grid(n_items * n_levels * (n_hidden > 0 ? n_hidden : 1)),
                   dim3(static_cast<unsigned>(kFlatBlock)), 0, stream, start, last, step, W, bv, vel_W, vel_bv,
                   n_items, n_levels, n_hidden, powers_W, powers_bv);
        RBM_CUDA_CHECK_LAUNCH();
    }
    if (!mark) return;
    RBM_LAUNCH(mark_rated_kernel, flat_grid(n_items), dim3(static_cast<unsigned>(kFlatBlock)), 0, stream, start,
               n_items, step, last);
    RBM_CUDA_CHECK_LAUNCH();
}

void predict_pairs(const float *ph, const int64_t *pair_rows, const int32_t *items, int64_t n_pairs, const float *W,
                   const float *bv, const float *levels, int64_t n_levels, int64_t n_hidden, float *out,
                   cudaStream_t stream) {
    check_count(n_pairs, "n_pairs");
    check_count(n_hidden, "n_hidden");
    check_levels(n_levels);
    if (n_pairs == 0) return;
    RBM_LAUNCH_BY_LEVELS(n_levels, predict_pairs_kernel, flat_grid(n_pairs), dim3(static_cast<unsigned>(kFlatBlock)),
                         stream, ph,
               pair_rows, items, n_pairs, W, bv, levels, n_levels, n_hidden, out);
    RBM_CUDA_CHECK_LAUNCH();
}

void score_items(const float *logits, int64_t n_users, const float *bv, int64_t n_items, int64_t n_levels,
                 const float *levels, float *out, cudaStream_t stream) {
    check_count(n_users, "n_users");
    check_count(n_items, "n_items");
    check_levels(n_levels);
    if (n_users == 0 || n_items == 0) return;
    RBM_LAUNCH_BY_LEVELS(n_levels, score_items_kernel, flat_grid(n_users * n_items),
                         dim3(static_cast<unsigned>(kFlatBlock)), stream, logits, n_users, bv, n_items, n_levels, levels, out);
    RBM_CUDA_CHECK_LAUNCH();
}

void free_energy(const int64_t *indptr, const int32_t *indices, const int32_t *states, const float *values,
                 int64_t n_values, const int64_t *rows, int64_t n_batch, const float *W, const float *bv,
                 const float *bh, int64_t n_levels, int64_t n_hidden, float *out, float *scratch,
                 cudaStream_t stream) {
    check_count(n_values, "n_values");
    check_count(n_batch, "n_batch");
    check_count(n_hidden, "n_hidden");
    if (n_batch == 0) return;
    const bool use_values = n_values > 0;
    if (n_hidden > 0) {
        const int64_t block = hidden_block(n_hidden);
        RBM_LAUNCH(free_energy_hidden_kernel, row_hidden_grid(n_batch, n_hidden, block),
                   dim3(static_cast<unsigned>(block)), 0, stream, indptr, indices, states, values, use_values, rows,
                   W, bh, n_levels, n_hidden, scratch);
        RBM_CUDA_CHECK_LAUNCH();
    }
    RBM_LAUNCH(free_energy_sum_kernel, flat_grid(n_batch), dim3(static_cast<unsigned>(kFlatBlock)), 0, stream, indptr,
               indices, states, values, use_values, rows, n_batch, bv, n_levels, n_hidden,
               static_cast<const float *>(scratch), out);
    RBM_CUDA_CHECK_LAUNCH();
}

void philox_words(uint64_t seed, uint32_t step, uint32_t gibbs, uint32_t phase, uint64_t start, int64_t count,
                  uint32_t *out, cudaStream_t stream) {
    check_count(count, "count");
    if (count == 0) return;
    RBM_LAUNCH(philox_words_kernel, flat_grid(count), dim3(static_cast<unsigned>(kFlatBlock)), 0, stream, seed, step,
               gibbs, phase, start, count, out);
    RBM_CUDA_CHECK_LAUNCH();
}

void philox_uniforms(uint64_t seed, uint32_t step, uint32_t gibbs, uint32_t phase, uint64_t start, int64_t count,
                     float *out, cudaStream_t stream) {
    check_count(count, "count");
    if (count == 0) return;
    RBM_LAUNCH(philox_uniforms_kernel, flat_grid(count), dim3(static_cast<unsigned>(kFlatBlock)), 0, stream, seed,
               step, gibbs, phase, start, count, out);
    RBM_CUDA_CHECK_LAUNCH();
}

}  // namespace rbm
