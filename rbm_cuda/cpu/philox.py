"""Philox4x32-10 in Numba: the twin of csrc/philox.cuh, bit for bit.

Counter layout (docs/design.md): key = (seed low, seed high); counter = (element // 4 low,
element // 4 high, update step, gibbs * 4 + phase).  One call feeds four elements, so the number
an element draws depends only on (seed, step, gibbs, phase, element), never on threads or batches.
"""

import numpy as np
from llvmlite import ir
from numba import njit
from numba.core import cgutils, types
from numba.extending import intrinsic

from .simd import I32, I64, F32, ir_const, counted_loop, is_array, splat

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


# Blocks per step of philox_block_uniforms: 16 lanes of uint32 words (a 512-bit register).
_BLOCK_LANES = 16


@intrinsic
def philox_block_uniforms(typingctx, out, o, block0, n_blocks, c2, c3, k0, k1):
    """for t < n_blocks and l < 4: out[o + 4 t + l] = uniform_from_word(word l of philox4x32_10(block0
    + t (low and high words), c2, c3, k0, k1)).  _BLOCK_LANES blocks per step, a block per vector lane
    (the last step masked), with philox4x32_10's integer operations, so the same numbers: Numba
    compiled that function's loop to scalar 64-bit multiplies.  out float32[:] (C-contiguous)."""
    if not (is_array(out, 1, types.float32) and all(isinstance(x, types.Integer) for x in
                                                       (o, block0, n_blocks, c2, c3, k0, k1))):
        return None
    lanes = _BLOCK_LANES
    vi32 = ir.VectorType(I32, lanes)
    vi64 = ir.VectorType(I64, lanes)
    vf = ir.VectorType(F32, lanes)
    wide = ir.VectorType(F32, 4 * lanes)
    mask_type = ir.VectorType(ir.IntType(1), 4 * lanes)
    store = ir.FunctionType(ir.VoidType(), [wide, wide.as_pointer(), I32, mask_type])

    def codegen(context, builder, sig, args):
        out_a = context.make_array(sig.args[0])(context, builder, args[0])
        o_, block_first, count, c2_, c3_, k0_, k1_ = (context.cast(builder, a, t, types.int64)
                                                 for a, t in zip(args[1:], sig.args[1:]))
        c2v, c3v = (splat(builder, vi32, builder.trunc(x, I32)) for x in (c2_, c3_))
        keys = (builder.trunc(k0_, I32), builder.trunc(k1_, I32))
        vp = ir.VectorType(I64, lanes // 2)
        m0, m1 = (ir.Constant(vp, [int(m)] * (lanes // 2)) for m in (M0, M1))
        shift = ir.Constant(vp, [32] * (lanes // 2))
        low_half = ir.Constant(vp, [0xFFFFFFFF] * (lanes // 2))
        # word lane 2 n is in 64-bit lane n of `even`, lane 2 n + 1 in lane n of `odd` (low word first:
        # the bitcasts assume a little-endian CPU, as x86-64 and aarch64 are; the tests would catch another)
        pick_lo = ir.Constant(vi32, [(e // 2) * 2 + (e % 2) * lanes for e in range(lanes)])
        pick_hi = ir.Constant(vi32, [(e // 2) * 2 + 1 + (e % 2) * lanes for e in range(lanes)])
        step_of_lane = ir.Constant(vi64, list(range(lanes)))
        word_bits = ir.Constant(vi64, [32] * lanes)
        # out position 4 t + l holds word l of lane t: an interleave of the four word vectors
        order = ir.Constant(ir.VectorType(I32, 4 * lanes), [(e % 4) * lanes + e // 4 for e in range(4 * lanes)])
        positions = ir.Constant(ir.VectorType(I32, 4 * lanes), list(range(4 * lanes)))
        halves = ir.Constant(ir.VectorType(I32, 2 * lanes), list(range(2 * lanes)))
        scale = ir.Constant(vf, [1.0 / 16777216.0] * lanes)
        eight = ir.Constant(vi32, [8] * lanes)
        store_fn = cgutils.get_or_insert_function(builder.module, store, "llvm.masked.store.v64f32.p0")

        def mul_hi_lo(x, m):
            """The high and low words of the 64-bit products x * m, lane by lane: the even and the odd
            lanes as two vectors of 64-bit lanes whose factors fit in 32 bits (one vpmuludq each on
            x86; a plain zext-and-multiply became vpmullq, three times the work), then two shuffles."""
            pairs = builder.bitcast(x, vp)
            even = builder.bitcast(builder.mul(builder.and_(pairs, low_half), m), vi32)
            odd = builder.bitcast(builder.mul(builder.lshr(pairs, shift), m), vi32)
            return builder.shuffle_vector(even, odd, pick_hi), builder.shuffle_vector(even, odd, pick_lo)

        def one_step(t, _):
            block = builder.add(splat(builder, vi64, builder.add(block_first, t)), step_of_lane)
            c = [builder.trunc(block, vi32), builder.trunc(builder.lshr(block, word_bits), vi32), c2v, c3v]
            k0, k1 = keys
            for rnd in range(10):
                if rnd > 0:
                    k0 = builder.add(k0, ir.Constant(I32, int(W0)))
                    k1 = builder.add(k1, ir.Constant(I32, int(W1)))
                hi0, lo0 = mul_hi_lo(c[0], m0)
                hi1, lo1 = mul_hi_lo(c[2], m1)
                c = [builder.xor(builder.xor(hi1, c[1]), splat(builder, vi32, k0)), lo1,
                     builder.xor(builder.xor(hi0, c[3]), splat(builder, vi32, k1)), lo0]
            u = [builder.fmul(builder.uitofp(builder.lshr(w, eight), vf), scale) for w in c]
            both = builder.shuffle_vector(builder.shuffle_vector(u[0], u[1], halves),
                                          builder.shuffle_vector(u[2], u[3], halves), positions)
            words = builder.shuffle_vector(both, ir.Constant(wide, None), order)
            left = builder.mul(builder.sub(count, t), ir_const(4))
            left = builder.select(builder.icmp_signed(">", left, ir_const(4 * lanes)), ir_const(4 * lanes), left)
            mask = builder.icmp_signed("<", positions, splat(builder, ir.VectorType(I32, 4 * lanes),
                                                              builder.trunc(left, I32)))
            ptr = builder.bitcast(builder.gep(out_a.data, [builder.add(o_, builder.mul(t, ir_const(4)))]),
                                  wide.as_pointer())
            builder.call(store_fn, [words, ptr, ir.Constant(I32, 4), mask])
            return []

        counted_loop(builder, "philox", ir_const(0), count, [], one_step, step=lanes)
        return context.get_dummy_value()

    return types.void(out, o, block0, n_blocks, c2, c3, k0, k1), codegen


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
    """out[e] = the uniform of element first + e, for e < len(out): the whole Philox blocks (four
    elements each) by philox_block_uniforms, sixteen at a time, and the unaligned head and tail
    element by element.  Same numbers as philox_uniform."""
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
    philox_block_uniforms(out, e, block0, n_blocks, c2, c3, k0, k1)
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
