// The per-element maths of the kernels, as __host__ __device__ functions: the float32 operations
// of the Numba twin (rbm_cuda/cpu/kernels.py), in the same order.  expf / log1pf, never the
// fast-math intrinsics.  How far the device build may differ (its expf, fused multiply-adds):
// "The twin contract" in docs/design.md.
#pragma once
#include <math.h>

#include <cstdint>

#include "cuda_compat.h"

namespace rbm {

// Softmax visible units with more levels than this are not supported by the CUDA kernels (the
// logits of one entry live in a per-thread array).
constexpr int kMaxLevels = 32;

// kernels._sigmoid
RBM_HD inline float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// kernels._softplus
RBM_HD inline float softplus(float x) {
    if (x > 0.0f) return x + log1pf(expf(-x));
    return log1pf(expf(x));
}

// Bernoulli draw from a uniform u in [0, 1): 1 when u < p.
RBM_HD inline float bernoulli(float u, float p) { return u < p ? 1.0f : 0.0f; }

// k zero-gradient momentum-and-decay steps at once: (w, v) <- (p0 w + p1 v, p2 w + p3 v), p the
// four entries of the one-step map to the power k (training.decay_powers).
RBM_HD inline void catch_up_pair(float &w, float &v, const float *p) {
    const float w0 = w, v0 = v;
    w = p[0] * w0 + p[1] * v0;
    v = p[2] * w0 + p[3] * v0;
}

// The per-entry level arrays below are float[MaxLevels] with n_levels <= MaxLevels used: loops run
// to the compile-time MaxLevels (unrolled, so the array stays in registers) and skip k >= n_levels.

// sample_hidden splits a long row into parts summed by different blocks, so that a batch does not
// wait on its longest row.  Chunk c of kRowChunk entries goes to part c % n_parts, with n_parts =
// min(kRowParts, number of chunks); each part sums its entries in CSR order (part 0 from bh[f], the
// others from zero), and the hidden input is the parts added in part order.  A row of at most
// kRowChunk entries is one part: hidden_input's additions.  Longer rows differ from the Numba twin's
// single running sum by rounding only ("The twin contract", docs/design.md).
constexpr int64_t kRowChunk = 256;
constexpr int64_t kRowParts = 8;

RBM_HD inline int64_t row_parts(int64_t n_entries) {
    const int64_t chunks = (n_entries + kRowChunk - 1) / kRowChunk;
    return chunks <= 1 ? 1 : (chunks < kRowParts ? chunks : kRowParts);
}

RBM_HD inline float hidden_part(const int64_t *indptr, const int32_t *indices, const int32_t *states,
                                const float *values, bool use_values, int64_t r, const float *W, int64_t n_levels,
                                int64_t n_hidden, const float *bh, int64_t f, int64_t part, int64_t n_parts) {
    float acc = part == 0 ? bh[f] : 0.0f;
    const int64_t end = indptr[r + 1];
    for (int64_t c = indptr[r] + part * kRowChunk; c < end; c += n_parts * kRowChunk) {
        const int64_t stop = c + kRowChunk < end ? c + kRowChunk : end;
        for (int64_t j = c; j < stop; ++j) {
            const float w = W[(static_cast<int64_t>(indices[j]) * n_levels + states[j]) * n_hidden + f];
            acc += use_values ? values[j] * w : w;
        }
    }
    return acc;
}

// Input of hidden unit f for CSR row r: bh[f] + sum over the row's entries j of value_j *
// W[item_j, state_j, f] (value 1 when use_values is false), one running sum in CSR order as the
// Numba twin's.
RBM_HD inline float hidden_input(const int64_t *indptr, const int32_t *indices, const int32_t *states,
                                 const float *values, bool use_values, int64_t r, const float *W, int64_t n_levels,
                                 int64_t n_hidden, const float *bh, int64_t f) {
    return hidden_part(indptr, indices, states, values, use_values, r, W, n_levels, n_hidden, bh, f, 0, 1);
}

// The dot product of hidden states with one weight row w[n_hidden], summed from zero in unit order as
// the Numba twin does: from floats (probabilities or 0/1 samples), or from binary states packed as bits
// (bit f % 32 of word f / 32).  For binary states the two give the same sum, since each term h[f] * w[f]
// is w[f] or zero and a zero term leaves the sum as it is (it starts at +0); the bits read only the
// weights of the active units.
RBM_HD inline float hidden_dot(const float *hb, const float *w, int64_t n_hidden) {
    float dot = 0.0f;
    for (int64_t f = 0; f < n_hidden; ++f) dot += hb[f] * w[f];
    return dot;
}
RBM_HD inline float hidden_dot(const uint32_t *hbits, const float *w, int64_t n_hidden) {
    float dot = 0.0f;
    for (int64_t f = 0; f < n_hidden; ++f)
        if ((hbits[f >> 5] >> (f & 31)) & 1u) dot += w[f];
    return dot;
}

// Logits of one rated entry (item i) given hidden states h (floats or bits, hidden_dot):
// z[k] = bv[i, k] + (h . W[i, k, :]); returns max_k z[k].
template <int MaxLevels, class Hidden>
RBM_HD inline float level_logits(const Hidden *h, const float *W, const float *bv, int64_t i, int n_levels,
                                 int64_t n_hidden, float (&z)[MaxLevels]) {
    float top = -INFINITY;
    RBM_UNROLL
    for (int k = 0; k < MaxLevels; ++k) {
        if (k < n_levels) {
            z[k] = bv[i * n_levels + k] + hidden_dot(h, W + (i * n_levels + k) * n_hidden, n_hidden);
            if (z[k] > top) top = z[k];
        }
    }
    return top;
}

// kernels._expectation: sum_k levels[k] softmax_k(z), or levels[0] sigmoid(z[0]) when K == 1.
// top = max_k z[k].
template <int MaxLevels>
RBM_HD inline float expectation(const float (&z)[MaxLevels], int n_levels, float top, const float *levels) {
    if (n_levels == 1) return levels[0] * sigmoid(z[0]);
    float total = 0.0f;
    float mean = 0.0f;
    RBM_UNROLL
    for (int k = 0; k < MaxLevels; ++k) {
        if (k < n_levels) {
            const float e = expf(z[k] - top);
            total += e;
            mean += e * levels[k];
        }
    }
    return mean / total;
}

// Softmax numerators in place: z[k] <- exp(z[k] - top); returns their sum.
template <int MaxLevels>
RBM_HD inline float softmax_numerators(float (&z)[MaxLevels], int n_levels, float top) {
    float total = 0.0f;
    RBM_UNROLL
    for (int k = 0; k < MaxLevels; ++k) {
        if (k < n_levels) {
            const float e = expf(z[k] - top);
            z[k] = e;
            total += e;
        }
    }
    return total;
}

// Categorical draw (kernels.sample_visible_softmax): the first level k < K - 1 whose cumulative
// probability e[0]/total + ... + e[k]/total exceeds u, else the last level K - 1.
template <int MaxLevels>
RBM_HD inline int categorical(const float (&e)[MaxLevels], int n_levels, float total, float u) {
    float cum = 0.0f;
    int chosen = n_levels - 1;
    bool found = false;
    RBM_UNROLL
    for (int k = 0; k < MaxLevels - 1; ++k) {
        if (!found && k < n_levels - 1) {
            cum += e[k] / total;
            if (u < cum) {
                chosen = k;
                found = true;
            }
        }
    }
    return chosen;
}

}  // namespace rbm
