"""Philox4x32-10 in Numba: the twin of csrc/philox.cuh, bit for bit.

Counter layout (docs/design.md): key = (seed low, seed high); counter = (element // 4 low,
element // 4 high, update step, gibbs * 4 + phase).  One call feeds four elements, so the number
an element draws depends only on (seed, step, gibbs, phase, element), never on threads or batches.
"""

import numpy as np
from numba import njit

M0 = np.uint64(0xD2511F53)
M1 = np.uint64(0xCD9E8D57)
W0 = np.uint32(0x9E3779B9)
W1 = np.uint32(0xBB67AE85)
MASK32 = np.uint64(0xFFFFFFFF)
SHIFT32 = np.uint64(32)

# Phase numbers in the high counter word: which kind of draw this is.
PHASE_HIDDEN = 0
PHASE_VISIBLE = 1


@njit(cache=True, inline="always")
def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Ten Philox rounds on a counter of four uint32 words; returns four uint32 words."""
    c0 = np.uint32(c0)
    c1 = np.uint32(c1)
    c2 = np.uint32(c2)
    c3 = np.uint32(c3)
    k0 = np.uint32(k0)
    k1 = np.uint32(k1)
    for rnd in range(10):
        if rnd > 0:
            k0 = np.uint32(k0 + W0)
            k1 = np.uint32(k1 + W1)
        p0 = M0 * np.uint64(c0)
        p1 = M1 * np.uint64(c2)
        hi0 = np.uint32(p0 >> SHIFT32)
        lo0 = np.uint32(p0 & MASK32)
        hi1 = np.uint32(p1 >> SHIFT32)
        lo1 = np.uint32(p1 & MASK32)
        n0 = np.uint32(hi1 ^ c1 ^ k0)
        n2 = np.uint32(hi0 ^ c3 ^ k1)
        c0 = n0
        c1 = lo1
        c2 = n2
        c3 = lo0
    return c0, c1, c2, c3


@njit(cache=True, inline="always")
def uniform_from_word(x):
    """(x >> 8) * 2**-24 as float32: exact on every device."""
    return np.float32(np.uint32(x) >> np.uint32(8)) * np.float32(1.0 / 16777216.0)


@njit(cache=True, inline="always")
def philox_block(seed, step, gibbs, phase, block):
    """The four words of Philox block `block` (elements 4 * block .. 4 * block + 3) of the stream
    (seed, step, gibbs, phase).  Kernels that walk consecutive elements call this once per four
    elements instead of philox_word per element (same numbers, a quarter of the work)."""
    seed = np.uint64(seed)
    block = np.uint64(block)
    return philox4x32_10(
        np.uint32(block & MASK32),
        np.uint32(block >> SHIFT32),
        np.uint32(step),
        np.uint32(np.uint32(gibbs) * np.uint32(4) + np.uint32(phase)),
        np.uint32(seed & MASK32),
        np.uint32(seed >> SHIFT32),
    )


@njit(cache=True, inline="always")
def pick_word(r, lane):
    """Word `lane` (0..3) of a Philox block."""
    if lane == 0:
        return r[0]
    if lane == 1:
        return r[1]
    if lane == 2:
        return r[2]
    return r[3]


@njit(cache=True, inline="always")
def uniforms_into(seed, step, gibbs, phase, first, out):
    """out[e] = the uniform of element first + e, for e < len(out): one Philox call per four elements,
    and the whole blocks in a loop without branches, which LLVM vectorises (about 8x faster than a
    call per block with a lane switch).  Same numbers as philox_uniform."""
    count = out.shape[0]
    first = np.uint64(first)
    e = 0
    while e < count and (first + np.uint64(e)) & np.uint64(3) != np.uint64(0):  # up to the first whole block
        out[e] = philox_uniform(seed, step, gibbs, phase, first + np.uint64(e))
        e += 1
    s = np.uint64(seed)
    k0 = np.uint32(s & MASK32)
    k1 = np.uint32(s >> SHIFT32)
    c2 = np.uint32(step)
    c3 = np.uint32(np.uint32(gibbs) * np.uint32(4) + np.uint32(phase))
    block0 = (first + np.uint64(e)) >> np.uint64(2)
    n_blocks = (count - e) >> 2
    for t in range(n_blocks):
        block = block0 + np.uint64(t)
        w0, w1, w2, w3 = philox4x32_10(np.uint32(block & MASK32), np.uint32(block >> SHIFT32), c2, c3, k0, k1)
        o = e + 4 * t
        out[o] = uniform_from_word(w0)
        out[o + 1] = uniform_from_word(w1)
        out[o + 2] = uniform_from_word(w2)
        out[o + 3] = uniform_from_word(w3)
    for e in range(e + 4 * n_blocks, count):
        out[e] = philox_uniform(seed, step, gibbs, phase, first + np.uint64(e))


@njit(cache=True, inline="always")
def philox_word(seed, step, gibbs, phase, element):
    """The uint32 word that `element` draws in the stream (seed, step, gibbs, phase)."""
    r = philox_block(seed, step, gibbs, phase, np.uint64(element) >> np.uint64(2))
    return pick_word(r, np.uint64(element) & np.uint64(3))


@njit(cache=True, inline="always")
def philox_uniform(seed, step, gibbs, phase, element):
    return uniform_from_word(philox_word(seed, step, gibbs, phase, element))


@njit(cache=True)
def philox_words(seed, step, gibbs, phase, start, count):
    """`count` consecutive words from element `start`: for tests and host-side use."""
    out = np.empty(count, dtype=np.uint32)
    for e in range(count):
        out[e] = philox_word(seed, step, gibbs, phase, np.uint64(start + e))
    return out


@njit(cache=True)
def philox_uniforms(seed, step, gibbs, phase, start, count):
    out = np.empty(count, dtype=np.float32)
    for e in range(count):
        out[e] = philox_uniform(seed, step, gibbs, phase, np.uint64(start + e))
    return out
