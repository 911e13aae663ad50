"""The LLVM-IR vector blocks of rbm_cuda/cpu/simd.py against the plain loops their docstrings give:
the same float operations in the same order, so the same bits, for row widths that end inside a
vector, fill whole vectors, and need more than one pass of register-held sums."""

import os
import subprocess
import sys

import numpy as np
import pytest
from numba import njit

from rbm_cuda.cpu.kernels import _expf, _level_logits
from rbm_cuda.cpu.simd import (LANES, gather_rows_sum, level_update, tile_gather, tile_scatter,
                                tile_softmax_draws)

WIDTHS = [1, 15, 16, 17, 100, 112, 113, 250]


@njit
def _level_update(w, vel, ph0, pos_rows, n_pos, phT, neg_rows, n_neg, lr, mom, wd, sc):
    level_update(w, vel, ph0, pos_rows, n_pos, phT, neg_rows, n_neg, lr, mom, wd, sc)


@njit
def _gather(out, W, indices, states, j0, j1):
    gather_rows_sum(out, W, indices, states, j0, j1)


def _values(rng, shape):
    # magnitudes over several decades: a different order of additions would round differently
    return (rng.standard_normal(shape) * 10.0 ** rng.integers(-3, 4, shape)).astype(np.float32)


COEF = tuple(np.float32(x) for x in (0.1, 0.8, 0.003, 1.0 / 37))  # lr, momentum, weight decay, scale


def _reference_level_update(w, vel, ph0, pos_rows, phT, neg_rows):
    """update_softmax's gradient and kernels._update_range in float32, operation by operation."""
    lr, mom, wd, sc = COEF
    g = np.zeros_like(w)
    for r in pos_rows:
        g = g + ph0[r]
    for r in neg_rows:
        g = g - phT[r]
    v = mom * vel + lr * (sc * g - wd * w)
    return w + v, v


@pytest.mark.parametrize("F", WIDTHS)
@pytest.mark.parametrize("n_pos, n_neg", [(0, 0), (1, 0), (0, 3), (9, 40), (40, 9)])
def test_level_update_is_the_gradient_and_momentum_step_bit_for_bit(F, n_pos, n_neg):
    rng = np.random.default_rng(F * 100 + n_pos * 7 + n_neg)
    ph0, phT = _values(rng, (30, F)), _values(rng, (30, F))
    pos_rows = rng.integers(0, 30, 45).astype(np.int32)
    neg_rows = rng.integers(0, 30, 45).astype(np.int32)
    w, vel = _values(rng, F), _values(rng, F)
    want_w, want_vel = _reference_level_update(w, vel, ph0, pos_rows[:n_pos], phT, neg_rows[:n_neg])
    _level_update(w, vel, ph0, pos_rows, n_pos, phT, neg_rows, n_neg, *COEF)
    np.testing.assert_array_equal(w, want_w)
    np.testing.assert_array_equal(vel, want_vel)


@pytest.mark.parametrize("F", WIDTHS)
def test_gather_rows_sum_is_the_plain_loop_bit_for_bit(F):
    rng = np.random.default_rng(F)
    W = _values(rng, (20, 3, F))
    indices = rng.integers(0, 20, 60).astype(np.int32)
    states = rng.integers(0, 3, 60).astype(np.int32)
    for j0, j1 in [(0, 60), (5, 6), (7, 7), (10, 15), (52, 60)]:  # ranges shorter than the prefetch distance too
        out = _values(rng, F)
        want = out.copy()
        for j in range(j0, j1):
            want = want + W[indices[j], states[j]]
        _gather(out, W, indices, states, j0, j1)
        np.testing.assert_array_equal(out, want)


def test_columns_past_the_row_are_untouched():
    """The masked tail writes only the row's own columns: a neighbour in the same buffer keeps its bits."""
    buf = np.full(40, 7.0, dtype=np.float32)
    vel = np.zeros(40, dtype=np.float32)
    ph = np.ones((2, 17), dtype=np.float32)
    rows = np.array([0, 1], dtype=np.int32)
    _level_update(buf[:17], vel[:17], ph, rows, 2, ph, rows, 0, *COEF)
    want, _ = _reference_level_update(np.full(17, 7.0, np.float32), np.zeros(17, np.float32), ph, rows, ph, rows[:0])
    np.testing.assert_array_equal(buf[:17], want)
    np.testing.assert_array_equal(buf[17:], 7.0)
    np.testing.assert_array_equal(vel[17:], 0.0)


@njit
def _tile(Wi, hw, n_levels, n, z):
    _level_logits(Wi, hw, n_levels, n, z)


@pytest.mark.parametrize("F", [1, 31, 32, 33, 100])
@pytest.mark.parametrize("K", [1, 2, 5, 7, 10])
@pytest.mark.parametrize("n", [1, 8, 9, 16])
def test_tile_logits_is_the_sequential_dot_product_bit_for_bit(F, K, n):
    """z[k, r] = sum over f in order of h_r[f] * W[k, f], as csrc/kernel_math.cuh level_logits sums it
    (h binary, so each term is the weight or nothing)."""
    rng = np.random.default_rng(F * 1000 + K * 10 + n)
    Wi = _values(rng, (K, F))
    h = (rng.random((LANES, F)) < 0.5).astype(np.float32)
    n_words = (F + 31) // 32
    hw = np.zeros((n_words, LANES), dtype=np.uint32)
    for r in range(LANES):
        for f in np.flatnonzero(h[r]):
            hw[f // 32, r] |= np.uint32(1) << np.uint32(f % 32)
    z = np.full((K, LANES), np.nan, dtype=np.float32)
    _tile(Wi, hw, K, n, z)
    want = np.zeros((K, n), dtype=np.float32)
    for k in range(K):
        for r in range(n):
            s = np.float32(0.0)
            for f in range(F):
                s = np.float32(s + h[r, f] * Wi[k, f])
            want[k, r] = s
    np.testing.assert_array_equal(z[:, :n], want)


@njit
def _draws(z, bv_i, u, chosen):
    tile_softmax_draws(z, bv_i, u, chosen)


def _reference_draws(z, bv_i, u):
    """csrc/kernel_math.cuh softmax_numerators + categorical, lane by lane, with kernels._expf."""
    K = z.shape[0]
    out = np.empty(z.shape[1], dtype=np.int32)
    for r in range(z.shape[1]):
        logits = [np.float32(bv_i[k] + z[k, r]) for k in range(K)]
        top = logits[0]
        for k in range(1, K):
            top = max(top, logits[k])
        e = [_expf(np.float32(x - top)) for x in logits]
        total = np.float32(0.0)
        for x in e:
            total = np.float32(total + x)
        cum, chosen = np.float32(0.0), 0
        for k in range(K - 1):
            cum = np.float32(cum + np.float32(e[k] / total))
            chosen += int(cum <= u[r])
        out[r] = chosen
    return out


@pytest.mark.parametrize("K", [1, 2, 5, 10, 32])
def test_tile_softmax_draws_is_the_categorical_draw_bit_for_bit(K):
    rng = np.random.default_rng(K)
    for scale in (0.1, 3.0, 60.0):  # near-uniform to one-hot (exp underflows below -87)
        z = (rng.standard_normal((K, LANES)) * scale).astype(np.float32)
        bv_i = (rng.standard_normal(K) * scale).astype(np.float32)
        u = rng.random(LANES).astype(np.float32)
        want = _reference_draws(z, bv_i, u)
        chosen = np.full(LANES, -1, dtype=np.int32)
        work = z.copy()
        _draws(work, bv_i, u, chosen)
        np.testing.assert_array_equal(chosen, want)
        # z now holds the exponentials, exactly as the reference computes them
        top = (z + bv_i[:, None]).max(axis=0)
        np.testing.assert_array_equal(work[0], [_expf(np.float32(z[0, r] + bv_i[0] - top[r])) for r in range(LANES)])
    # a draw at a cumulative boundary: u equal to the first level's probability picks level 1
    z = np.zeros((K, LANES), dtype=np.float32)
    u = np.full(LANES, np.float32(1.0) / np.float32(K), dtype=np.float32)
    chosen = np.zeros(LANES, dtype=np.int32)
    _draws(z, np.zeros(K, dtype=np.float32), u, chosen)
    np.testing.assert_array_equal(chosen, _reference_draws(np.zeros((K, LANES), np.float32), np.zeros(K, np.float32), u))


@njit
def _tile_gather(bits, slot_b, slot_p, u, q0, n, hw, ub):
    tile_gather(bits, slot_b, slot_p, u, q0, n, hw, ub)


@njit
def _tile_scatter(chosen, slot_b, slot_p, delta, q0, n, out):
    tile_scatter(chosen, slot_b, slot_p, delta, q0, n, out)


@pytest.mark.parametrize("n_words", [1, 4, 7])
@pytest.mark.parametrize("n", [1, 5, 8, 9, 16])
def test_tile_gather_is_the_plain_loop_and_zeroes_the_other_lanes(n_words, n):
    rng = np.random.default_rng(n_words * 100 + n)
    B, m = 40, 60
    bits = rng.integers(0, 2**32, (B, n_words), dtype=np.uint64).astype(np.uint32)
    slot_b = rng.integers(0, B, m).astype(np.int32)
    slot_p = rng.integers(0, 500, m).astype(np.int32)
    u = rng.random(500).astype(np.float32)
    q0 = m - n  # the tile ends at the arrays' last slot: nothing past it is read
    hw = np.full((n_words, LANES), 7, dtype=np.uint32)
    ub = np.full(LANES, np.nan, dtype=np.float32)
    _tile_gather(bits, slot_b, slot_p, u, q0, n, hw, ub)
    np.testing.assert_array_equal(hw[:, :n], bits[slot_b[q0:q0 + n]].T)
    np.testing.assert_array_equal(ub[:n], u[slot_p[q0:q0 + n]])
    assert not hw[:, n:].any() and not ub[n:].any()


@pytest.mark.parametrize("n", [1, 7, 8, 16])
def test_tile_scatter_writes_each_draw_at_its_csr_position_and_nothing_else(n):
    rng = np.random.default_rng(n)
    B, nnz = 30, 400
    delta = np.sort(rng.integers(0, 200, B)).astype(np.int64)
    rows = rng.permutation(B)[:n].astype(np.int32)  # one item: distinct batch rows
    slot_p = rng.integers(0, 200, n).astype(np.int32)
    slot_b = np.concatenate([np.zeros(3, np.int32), rows])  # the tile starts at q0 = 3
    slot_p = np.concatenate([np.zeros(3, np.int32), slot_p])
    chosen = rng.integers(0, 5, LANES).astype(np.int32)
    out = np.full(nnz, -1, dtype=np.int32)
    _tile_scatter(chosen, slot_b, slot_p, delta, 3, n, out)
    want = np.full(nnz, -1, dtype=np.int32)
    for r in range(n):
        want[slot_p[3 + r] + delta[slot_b[3 + r]]] = chosen[r]
    np.testing.assert_array_equal(out, want)


def test_stale_compiled_kernels_are_dropped_when_any_source_changes(tmp_path):
    """Numba keys a cached function by its own file's time only; the kernels inline simd.py and
    philox.py, so a change to either must drop the cached kernels too."""
    from rbm_cuda.cpu import SOURCES, drop_stale_cache

    src, cache = tmp_path / "src", tmp_path / "cache"
    src.mkdir()
    cache.mkdir()
    for name in SOURCES:
        (src / name).write_text(f"# {name}\n")
    compiled = [cache / "kernels.sample_hidden-1.py311.nbi", cache / "kernels.sample_hidden-1.py311.1.nbc",
                cache / "philox.uniforms-9.py311.nbi"]
    for p in compiled:
        p.write_bytes(b"old")
    drop_stale_cache(src, cache)  # first sight: no key yet, so nothing can be trusted
    assert not any(p.exists() for p in compiled)
    for p in compiled:
        p.write_bytes(b"new")
    assert drop_stale_cache(src, cache) is False  # same sources: the cache stays
    assert all(p.exists() for p in compiled)
    (src / "simd.py").write_text("# simd.py, edited\n")  # kernels.py itself did not change
    assert drop_stale_cache(src, cache) is True
    assert not any(p.exists() for p in compiled)
    (cache / "other.f-1.py311.nbi").write_bytes(b"x")
    (src / "philox.py").write_text("# edited\n")
    drop_stale_cache(src, cache)
    assert (cache / "other.f-1.py311.nbi").exists()  # other modules' caches are not touched


def test_the_stale_cache_is_dropped_where_numba_keeps_it(tmp_path):
    """With $NUMBA_CACHE_DIR set, Numba caches under a folder of its own naming there, not beside the
    sources: the stale kernels are dropped in that folder."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "nc"))
    where = "import rbm_cuda.cpu as c; print(*c.numba_cache_dirs(c._here))"

    def run(code):  # cwd: the installed package, not the source tree
        return subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                              check=True).stdout.strip()

    cache = run(where)
    assert cache.startswith(str(tmp_path / "nc")) and os.path.isfile(os.path.join(cache, "rbm_cuda_sources.sha256"))
    stale = os.path.join(cache, "kernels.sample_hidden-1.py311.nbi")
    open(stale, "wb").close()
    with open(os.path.join(cache, "rbm_cuda_sources.sha256"), "w") as f:
        f.write("the hash of other sources\n")
    assert run(where) == cache and not os.path.exists(stale)
