"""Philox4x32-10: Random123's known answers for the Numba twin (rbm_cuda/cpu/philox.py) and for the
C++ header (csrc/philox.cuh, called on the host through rbm_cuda._emu), the counter layout against an
independent implementation (randomgen's Philox4x32) over long streams, and the uniform mapping.
Kernel-computed streams (the same header on the emulated grid) are compared in test_emulation.py."""

from __future__ import annotations

import numpy as np
import pytest

from numba import njit

from rbm_cuda.cpu.philox import philox4x32_10, philox_uniforms, philox_words, uniforms_into

# Random123 kat_vectors, philox4x32_10: (counter, key) -> output
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("counter,key,expected", KAT)
def test_numba_known_answers(counter, key, expected):
    assert tuple(int(x) for x in philox4x32_10(*counter, *key)) == expected


def _emu():
    from rbm_cuda import emulation

    if not emulation.AVAILABLE:
        from rbm_cuda.gpu import CUDA_BUILD

        if "not built" in CUDA_BUILD:
            pytest.skip("rbm_cuda is not built (pip install .): rbm_cuda._emu is missing")
        raise AssertionError(f"the package was built but rbm_cuda._emu is missing: {emulation.IMPORT_ERROR}")
    return emulation


@pytest.mark.emulation
@pytest.mark.parametrize("counter,key,expected", KAT)
def test_cpp_header_known_answers(counter, key, expected):
    assert tuple(_emu().philox4x32_10(*counter, *key)) == expected


@pytest.mark.emulation
def test_cpp_header_equals_numba_on_random_counters():
    rng = np.random.default_rng(0)
    emu = _emu()
    for words in rng.integers(0, 2**32, size=(2000, 6), dtype=np.uint64):
        w = [int(x) for x in words]
        assert tuple(emu.philox4x32_10(*w)) == tuple(int(x) for x in philox4x32_10(*w))


def _randomgen_stream(seed, step, gibbs, phase, start_block, n_blocks):
    """Words of blocks start_block .. start_block + n_blocks - 1 from randomgen's Philox4x32-10 with
    our layout: key = seed, 128-bit counter = block | step << 64 | (4 gibbs + phase) << 96.
    randomgen increments its counter before each block, hence the - 1."""
    randomgen = pytest.importorskip("randomgen")
    counter = start_block | (step << 64) | ((gibbs * 4 + phase) << 96)
    bg = randomgen.Philox(number=4, width=32, counter=(counter - 1) % 2**128, key=seed)
    return bg.random_raw(4 * n_blocks).astype(np.uint32)


@pytest.mark.parametrize("seed,step,gibbs,phase,start_block", [
    (0, 0, 0, 0, 0),
    (12345, 3, 1, 1, 10),
    (2**64 - 1, 2**32 - 1, 5, 1, 2**32 - 2),  # all key bits; the block count crosses into its high word
])
def test_numba_stream_equals_randomgen(seed, step, gibbs, phase, start_block):
    n_blocks = 25_000  # 100,000 words
    want = _randomgen_stream(seed, step, gibbs, phase, start_block, n_blocks)
    got = philox_words(np.uint64(seed), step, gibbs, phase, np.uint64(4 * start_block), 4 * n_blocks)
    np.testing.assert_array_equal(got, want)


@pytest.mark.emulation
def test_emulated_kernel_stream_equals_randomgen():
    from rbm_cuda.emulation import EmulatedBackend

    _emu()
    seed, step, gibbs, phase = 987654321987, 77, 3, 0
    got = EmulatedBackend().philox_words(seed, step, gibbs, phase, 4 * 1000, 4 * 25_000)
    np.testing.assert_array_equal(got, _randomgen_stream(seed, step, gibbs, phase, 1000, 25_000))


def test_uniforms_are_the_top_24_bits():
    w = philox_words(7, 1, 0, 0, 0, 10_000)
    u = philox_uniforms(7, 1, 0, 0, 0, 10_000)
    assert u.dtype == np.float32
    np.testing.assert_array_equal(u, ((w >> 8).astype(np.float64) / 2**24).astype(np.float32))
    assert 0.0 <= u.min() and u.max() < 1.0
    # a few moments, loosely: the stream is uniform
    assert abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.005


@njit(cache=False)
def _fill_uniforms(first, out):
    uniforms_into(11, 7, 2, 1, first, out)


@pytest.mark.parametrize("first", [0, 1, 2, 3, 4, 5, 2**32 - 3, 2**34 + 1])
@pytest.mark.parametrize("count", [0, 1, 3, 4, 5, 8, 37, 63, 64, 65, 68, 100, 127, 128, 131, 257, 1000])
def test_vectorised_uniforms_equal_the_element_stream(first, count):
    """uniforms_into (whole Philox blocks sixteen at a time with a masked last step, unaligned head
    and tail element by element) draws exactly philox_uniforms' numbers, whatever the alignment of
    `first`, and writes nothing past its slice."""
    buf = np.full(count + 70, -1.0, np.float32)
    _fill_uniforms(np.uint64(first), buf[3:3 + count])
    np.testing.assert_array_equal(buf[3:3 + count], philox_uniforms(11, 7, 2, 1, first, count))
    assert (buf[:3] == -1.0).all() and (buf[3 + count:] == -1.0).all()
