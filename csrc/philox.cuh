// Philox4x32-10 counter-based generator, shared by the CUDA kernels and their CPU build.
// Its Numba twin is rbm_cuda/cpu/philox.py; both must give the same words bit for bit.
//
// Counter layout (see docs/design.md): key = (seed low 32 bits, seed high 32 bits);
// counter = (element/4 low, element/4 high, update step, gibbs * 4 + phase). One call feeds
// four consecutive elements, so the number an element draws depends only on its index.
#pragma once
#include <cstdint>

#include "cuda_compat.h"

namespace rbm {

// Phase numbers in the high counter word (rbm_cuda/cpu/philox.py PHASE_HIDDEN, PHASE_VISIBLE).
constexpr uint32_t kPhaseHidden = 0;
constexpr uint32_t kPhaseVisible = 1;

struct Philox4 {
    uint32_t v[4];
};

RBM_HD inline void philox_mulhilo(uint32_t a, uint32_t b, uint32_t &hi, uint32_t &lo) {
    const uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
    hi = static_cast<uint32_t>(p >> 32);
    lo = static_cast<uint32_t>(p);
}

RBM_HD inline Philox4 philox4x32_10(Philox4 c, uint32_t k0, uint32_t k1) {
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        uint32_t hi0, lo0, hi1, lo1;
        philox_mulhilo(0xD2511F53u, c.v[0], hi0, lo0);
        philox_mulhilo(0xCD9E8D57u, c.v[2], hi1, lo1);
        Philox4 n;
        n.v[0] = hi1 ^ c.v[1] ^ k0;
        n.v[1] = lo1;
        n.v[2] = hi0 ^ c.v[3] ^ k1;
        n.v[3] = lo0;
        c = n;
    }
    return c;
}

// Exact in float32 on every device: 24 bits, scaled by a power of two.
RBM_HD inline float uniform_from_word(uint32_t x) {
    return static_cast<float>(x >> 8) * (1.0f / 16777216.0f);
}

// The word drawn by one element of the stream (seed, step, gibbs, phase).
RBM_HD inline uint32_t philox_word(uint64_t seed, uint32_t step, uint32_t gibbs, uint32_t phase,
                                   uint64_t element) {
    const uint64_t block = element >> 2;
    Philox4 c;
    c.v[0] = static_cast<uint32_t>(block);
    c.v[1] = static_cast<uint32_t>(block >> 32);
    c.v[2] = step;
    c.v[3] = gibbs * 4u + phase;
    const Philox4 r = philox4x32_10(c, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
    // Selects, not r.v[lane]: a dynamic index would put r in local memory on the device.
    const uint32_t lane = static_cast<uint32_t>(element & 3u);
    return lane == 0 ? r.v[0] : lane == 1 ? r.v[1] : lane == 2 ? r.v[2] : r.v[3];
}

RBM_HD inline float philox_uniform(uint64_t seed, uint32_t step, uint32_t gibbs, uint32_t phase,
                                   uint64_t element) {
    return uniform_from_word(philox_word(seed, step, gibbs, phase, element));
}

}  // namespace rbm
