"""The CUDA kernel source (csrc/kernels.cu) run on the CPU through rbm_cuda._emu, against the Numba
kernels (rbm_cuda/cpu/kernels.py), on inputs shaped like MovieLens 100K and on edge cases.

What "agree" means here (the same criteria are used by tests/test_gpu.py on a real GPU):
  * Philox words and uniforms: bit for bit.
  * samples (hidden/visible Bernoulli, categorical states): equal wherever the uniform is farther
    than SAMPLE_MARGIN from the probability (or from a cumulative boundary of the categorical draw);
    within the margin an ulp of expf may flip a draw, and there must be very few such places.
  * probabilities, predictions, scores: |a - b| <= PROB_ATOL + PROB_RTOL |b|.
  * gradients (sums of up to ~1000 terms; scatter_gradients adds with atomics on the GPU): GRAD_ATOL /
    GRAD_RTOL.
  * free energies (sums of ~100 softplus terms, magnitude ~10-1000): FE_ATOL / FE_RTOL.
The emulation is built with -ffp-contract=off and the host's expf, so in practice it matches the
Numba twin bit for bit (measured: 0 difference everywhere, including a whole epoch, except
predict_pairs at ~1e-6, where Numba's dot product is vectorised with reassociation, and the hidden
inputs of rows longer than ROW_CHUNK entries, which sample_hidden sums in parts); the tolerances
are those the GPU, with fused multiply-adds and its own expf, must meet too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scipy.sparse as sp

import rbm_cuda
from rbm_cuda.cpu import kernels as nk
from rbm_cuda.cpu.philox import PHASE_HIDDEN, PHASE_VISIBLE, philox_uniforms, philox_words
from rbm_cuda.training import decay_powers

PROB_RTOL, PROB_ATOL = 1e-5, 1e-6
SAMPLE_MARGIN = 1e-6
GRAD_RTOL, GRAD_ATOL = 1e-5, 1e-5
FE_RTOL, FE_ATOL = 1e-5, 1e-4
# At most this fraction of draws may sit within SAMPLE_MARGIN of their probability.
MAX_AMBIGUOUS = 1e-3

N_USERS, N_ITEMS, N_RATINGS = 943, 1682, 80_000


def _emulation_backend():
    from rbm_cuda import emulation

    if not emulation.AVAILABLE:
        from rbm_cuda.gpu import CUDA_BUILD

        if "not built" in CUDA_BUILD:  # running on an unbuilt source tree: nothing to test
            pytest.skip("rbm_cuda is not built (pip install .): rbm_cuda._emu is missing")
        raise AssertionError(f"the package was built but rbm_cuda._emu is missing: {emulation.IMPORT_ERROR}")
    return emulation.EmulatedBackend()


# ---- data shaped like MovieLens 100K ----------------------------------------------------------------
def synthetic_ml100k(seed=0):
    """943 users x 1682 items, 80,000 ratings 1-5 from a low-rank model, skewed popularity and
    activity like MovieLens; user 0 has no ratings, user 1 exactly one, item 1681 nobody rated."""
    rng = np.random.default_rng(seed)
    n_full = N_USERS - 2
    activity = rng.lognormal(0, 1, n_full)
    counts = 20 + rng.multinomial(N_RATINGS - 1 - 20 * n_full, activity / activity.sum())
    counts = np.minimum(counts, N_ITEMS - 1)
    counts[0] += N_RATINGS - 1 - counts.sum()  # exact total after clipping
    pop = 1.0 / np.arange(1, N_ITEMS) ** 0.8
    pop /= pop.sum()
    rows, cols = [np.array([1])], [np.array([rng.integers(N_ITEMS - 1)])]
    for u, c in enumerate(counts, start=2):
        rows.append(np.full(c, u))
        cols.append(rng.choice(N_ITEMS - 1, size=c, replace=False, p=pop))
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    U, V = rng.normal(size=(N_USERS, 4)), rng.normal(size=(N_ITEMS, 4))
    score = 3.5 + 0.6 * np.einsum("nk,nk->n", U[rows], V[cols]) + rng.normal(0, 0.5, len(rows))
    ratings = np.clip(np.rint(score), 1, 5).astype(np.float32)
    X = sp.csr_matrix((ratings, (rows, cols)), shape=(N_USERS, N_ITEMS))
    X.sort_indices()
    return X


def real_u1_base():
    root = os.environ.get("RBM_CUDA_DATA", "")
    path = os.path.join(root, "ml-100k", "u1.base")
    if not root or not os.path.exists(path):
        return None
    import pandas as pd

    df = pd.read_csv(path, sep="\t", names=["user", "item", "rating", "ts"])
    X = sp.csr_matrix((df.rating.to_numpy(np.float32), (df.user.to_numpy() - 1, df.item.to_numpy() - 1)),
                      shape=(N_USERS, N_ITEMS))
    X.sort_indices()
    return X


@pytest.fixture(scope="module", params=["synthetic", "u1.base"])
def ratings(request):
    if request.param == "synthetic":
        return synthetic_ml100k()
    X = real_u1_base()
    if X is None:
        pytest.skip("MovieLens 100K u1.base not found under $RBM_CUDA_DATA/ml-100k (the synthetic case still runs)")
    return X


def encode(X, visible):
    """(states, values, K) as RBM._encode does for ratings 1-5."""
    r = X.data
    if visible == "softmax":
        return (r - 1).astype(np.int32), np.empty(0, np.float32), 5
    if visible == "like":
        return (r >= 4).astype(np.int32), np.empty(0, np.float32), 2
    return np.zeros(len(r), np.int32), (r / 5).astype(np.float32), 1


def params(n_items, K, F, seed=0, scale=0.3):
    rng = np.random.default_rng(seed)
    W = (scale * rng.standard_normal((n_items, K, F))).astype(np.float32)
    bv = rng.normal(0, 0.5, (n_items, K)).astype(np.float32)
    bh = rng.normal(0, 0.5, F).astype(np.float32)
    return W, bv, bh


def batch_rows(X, B, seed=0):
    """B rows, always including the empty row 0 and the one-rating row 1 when B >= 2."""
    rng = np.random.default_rng(seed)
    rows = rng.permutation(X.shape[0])[:B].astype(np.int64)
    if B >= 2:
        rows = np.concatenate([[0, 1], rows[~np.isin(rows, [0, 1])][:B - 2]]).astype(np.int64)
    return rows


# ---- comparison helpers ------------------------------------------------------------------------------
def assert_close(got, want, rtol, atol, what):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, what
    assert np.all(np.isfinite(got) == np.isfinite(want)), f"{what}: non-finite values differ"
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    bad = err > atol + rtol * np.abs(want.astype(np.float64))
    assert not bad.any(), (f"{what}: {bad.sum()} of {bad.size} differ beyond rtol={rtol}, atol={atol}; "
                           f"max |diff| {err.max():.3g}")


def assert_samples(got, want, u, p, what):
    """Bernoulli samples equal wherever |u - p| > SAMPLE_MARGIN."""
    clear = np.abs(u.astype(np.float64) - p.astype(np.float64)) > SAMPLE_MARGIN
    assert (~clear).mean() <= MAX_AMBIGUOUS, f"{what}: too many draws within {SAMPLE_MARGIN} of p"
    diff = (got != want) & clear
    assert not diff.any(), f"{what}: {diff.sum()} samples differ where |u - p| > {SAMPLE_MARGIN}"


def hidden_uniforms(seed, step, gibbs, rows, F):
    elems = rows[:, None] * F + np.arange(F)[None, :]
    top = int(elems.max()) + 1 if elems.size else 0
    return philox_uniforms(seed, step, gibbs, PHASE_HIDDEN, 0, top)[elems] if top else np.zeros(elems.shape, np.float32)


# Which compiled kernels the comparisons run: the emulation here; tests/test_gpu.py loads this file
# as a separate module and points this at the CuPy backend (numpy in, numpy out).
KERNEL_BACKEND = _emulation_backend


def both(fn_name, make_args, out_names, emu=None):
    """Run a kernel through Numba and through the compiled kernels on identical fresh inputs."""
    emu = emu or KERNEL_BACKEND()
    a, b = make_args(), make_args()
    getattr(nk, fn_name)(*a.values())
    getattr(emu, fn_name)(*b.values())
    return {k: a[k] for k in out_names}, {k: b[k] for k in out_names}


@pytest.fixture(scope="module")
def emu():
    return KERNEL_BACKEND()


pytestmark = pytest.mark.emulation


# ---- Philox through a kernel --------------------------------------------------------------------------
@pytest.mark.parametrize("seed,step,gibbs,phase,start,count", [
    (0, 0, 0, 0, 0, 4096),
    (123456789, 17, 2, PHASE_VISIBLE, 1, 1001),              # start and count not multiples of 4
    (2**63 + 12345, 2**32 - 1, 7, PHASE_HIDDEN, 2**34 - 3, 37),  # high seed word, block high word
])
def test_philox_kernel_bit_for_bit(emu, seed, step, gibbs, phase, start, count):
    w = emu.philox_words(seed, step, gibbs, phase, start, count)
    assert w.dtype == np.uint32
    nseed = np.uint64(seed)  # Numba types a Python int >= 2**63 as int64 and overflows
    np.testing.assert_array_equal(w, philox_words(nseed, step, gibbs, phase, start, count))
    u = emu.philox_uniforms(seed, step, gibbs, phase, start, count)
    np.testing.assert_array_equal(u.view(np.uint32), philox_uniforms(nseed, step, gibbs, phase, start, count).view(np.uint32))


def test_a_failed_runtime_call_does_not_fail_the_next_launch():
    """The emulated runtime records a failing call's error as the thread's last error, as CUDA does;
    the next launch must report only its own errors."""
    from rbm_cuda import _emu

    out = np.zeros(8, np.uint32)
    with pytest.raises(RuntimeError, match=r"CUDA error cudaErrorInvalidDevice .* at .*kernels\.cu:\d+"):
        _emu.philox_words(0, 0, 0, 0, 0, out, 0, 1)  # there is no device 1
    _emu.philox_words(5, 1, 0, 0, 0, out, 0, 0)
    np.testing.assert_array_equal(out, philox_words(5, 1, 0, 0, 0, 8))


def test_the_sanitized_build_stops_a_kernel_reading_out_of_bounds(tmp_path):
    """Built with RBM_CUDA_SANITIZE (.ci/sanitize_check.sh), the kernel source runs under
    AddressSanitizer: a kernel that reads past an array aborts the process with a report."""
    from rbm_cuda import _emu

    if not _emu.SANITIZED:
        pytest.skip("rbm_cuda._emu was built without RBM_CUDA_SANITIZE (see .ci/sanitize_check.sh)")
    code = textwrap.dedent("""
        import numpy as np
        from rbm_cuda.emulation import EmulatedBackend
        n_items, K, F = 50, 5, 16
        W = np.zeros((n_items, K, F), np.float32)
        out = np.empty((1, F), np.float32)
        # item n_items: one row past W's end, which the unchecked backend passes to the kernel
        EmulatedBackend(check_bounds=False).sample_hidden(
            np.array([0, 1], np.int64), np.array([n_items], np.int32), np.zeros(1, np.int32),
            np.zeros(0, np.float32), np.zeros(1, np.int64), W, np.zeros(F, np.float32), 0, 0, 0, out, out, True)
        print("no report")
    """)
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0")  # the report on stderr, not in a log file
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
                       cwd=tmp_path)  # the installed package, not the source tree
    assert r.returncode != 0 and "no report" not in r.stdout
    assert "AddressSanitizer: heap-buffer-overflow" in r.stderr and "READ of size 4" in r.stderr


# ---- sample_hidden -------------------------------------------------------------------------------------
@pytest.mark.parametrize("visible", ["softmax", "like", "bernoulli"])
@pytest.mark.parametrize("F,B", [(100, 100), (37, 1), (129, 17), (1, 5)])
def test_sample_hidden(ratings, visible, F, B):
    X = ratings
    states, values, K = encode(X, visible)
    W, bv, bh = params(X.shape[1], K, F, seed=F)
    rows = batch_rows(X, B, seed=B)
    seed, step, gibbs = 99, 12, 1

    def args():
        return dict(indptr=X.indptr.astype(np.int64), indices=X.indices.astype(np.int32), states=states.copy(),
                    values=values.copy(), rows=rows.copy(), W=W.copy(), bh=bh.copy(), seed=seed, step=step,
                    gibbs=gibbs, prob_out=np.full((B, F), -1, np.float32), sample_out=np.full((B, F), -1, np.float32),
                    sample=True)

    want, got = both("sample_hidden", args, ["prob_out", "sample_out"])
    assert_close(got["prob_out"], want["prob_out"], PROB_RTOL, PROB_ATOL, "p(h|v)")
    u = hidden_uniforms(seed, step, gibbs, rows, F)
    assert_samples(got["sample_out"], want["sample_out"], u, want["prob_out"], "h")
    assert set(np.unique(got["sample_out"])) <= {0.0, 1.0}
    if B >= 2 and X.indptr[1] == 0:  # an empty row (row 0 of the synthetic data) is the bias alone
        assert_close(got["prob_out"][0], 1 / (1 + np.exp(-bh.astype(np.float64))), 1e-6, 1e-7, "empty row")


def test_sample_hidden_without_draw_writes_probabilities_only(emu):
    X = synthetic_ml100k()
    states, values, K = encode(X, "softmax")
    W, _, bh = params(X.shape[1], K, 50)
    rows = np.arange(X.shape[0], dtype=np.int64)
    out = np.full((len(rows), 50), -1, np.float32)
    emu.sample_hidden(X.indptr.astype(np.int64), X.indices, states, values, rows, W, bh, 0, 0, 0, out, out, False)
    ref = np.empty_like(out)
    nk.sample_hidden(X.indptr.astype(np.int64), X.indices, states, values, rows, W, bh, 0, 0, 0, ref, ref, False)
    assert_close(out, ref, PROB_RTOL, PROB_ATOL, "p(h|v), all users, prob_out is sample_out")


def _row_with_cancellation(n_entries, F, visible):
    """One CSR row of n_entries distinct items whose weights make the order of the sum visible: its
    first entry adds +2**20 to every hidden input, its last -2**20, and each entry between adds 0.01,
    which a running sum at 2**20 loses (half an ulp there is 0.0625) and a part summed from zero keeps."""
    W = np.full((n_entries, 1 if visible == "bernoulli" else 5, F), 0.01, np.float32)
    W[0], W[-1] = 2.0**20, -(2.0**20)
    indptr = np.array([0, n_entries], np.int64)
    indices = np.arange(n_entries, dtype=np.int32)
    states = np.zeros(n_entries, np.int32)
    values = np.ones(n_entries, np.float32) if visible == "bernoulli" else np.empty(0, np.float32)
    return indptr, indices, states, values, W


def _parts_reference(W, bh, n_entries, chunk, n_parts):
    """The hidden input summed as csrc/kernel_math.cuh's row_parts / hidden_part say, in float32: chunk c
    of the row goes to part c % n_parts, each part a running sum (part 0 from bh), then the parts added
    in order."""
    col = W[:, 0, :]
    parts = [bh.copy() if k == 0 else np.zeros_like(bh) for k in range(n_parts)]
    for c in range(-(-n_entries // chunk)):
        for j in range(c * chunk, min(n_entries, (c + 1) * chunk)):
            parts[c % n_parts] = (parts[c % n_parts] + col[j]).astype(np.float32)
    total = parts[0]
    for p in parts[1:]:
        total = (total + p).astype(np.float32)
    return total


@pytest.mark.parametrize("visible", ["softmax", "bernoulli"])
@pytest.mark.parametrize("n", [256, 257, 512, 768, 3072])
def test_sample_hidden_sums_a_long_row_in_parts(emu, visible, n):
    """A row longer than ROW_CHUNK (256) entries is summed in up to ROW_PARTS parts by different blocks,
    added in part order by the last thread to arrive; a row of one chunk is the plain running sum.
    Called twice on one backend: arrival counts left behind by the first call would spoil the second."""
    from rbm_cuda.emulation import module

    m = module()
    F, chunk = 40, m.ROW_CHUNK
    indptr, indices, states, values, W = _row_with_cancellation(n, F, visible)
    bh = np.linspace(-1, 1, F).astype(np.float32)
    want_x = _parts_reference(W, bh, n, chunk, min(-(-n // chunk), m.ROW_PARTS))
    if n >= 512:  # parts after the first keep 0.01s that the Numba twin's running sum loses
        assert np.all(want_x - _parts_reference(W, bh, n, chunk, 1) > 1.0)
    rows = np.zeros(3, np.int64)  # the row three times: three units of work per hidden unit
    want_p = 1 / (1 + np.exp(-want_x.astype(np.float64)))
    for _ in range(2):
        ph, h = np.full((3, F), -1, np.float32), np.full((3, F), -1, np.float32)
        emu.sample_hidden(indptr, indices, states, values, rows, W, bh, 5, 6, 0, ph, h, True)
        for b in range(3):
            assert_close(ph[b], want_p, 1e-6, 1e-7, "p(h|v) of a row summed in parts")


@pytest.mark.parametrize("chunks", [2, 12])
def test_sample_hidden_parts_do_not_depend_on_launch_order(chunks):
    """Whichever block of a long row runs last finishes it: the same bits in every launch order, and
    the arrival counts left at zero for the next launch."""
    from rbm_cuda.emulation import module, schedule

    m = module()
    F = 40
    indptr, indices, states, values, W = _row_with_cancellation(chunks * m.ROW_CHUNK, F, "softmax")
    bh = np.linspace(-1, 1, F).astype(np.float32)
    rows = np.zeros(3, np.int64)
    results = []
    for order, seed in (("forward", 0), ("reverse", 0), ("shuffled", 1), ("shuffled", 2)):
        ph, h = np.full((3, F), -1, np.float32), np.full((3, F), -1, np.float32)
        partial = np.full((3, m.ROW_PARTS, F), np.nan, np.float32)  # never read before written
        arrived = np.zeros((3, F), np.int32)
        with schedule(order, seed):
            m.sample_hidden(indptr, indices, states, values, rows, W, bh, 5, 6, 0, ph, h, True, partial, arrived, 0, 0)
        np.testing.assert_array_equal(arrived, 0)
        results.append((ph, h))
    for ph, h in results[1:]:
        np.testing.assert_array_equal(ph, results[0][0])
        np.testing.assert_array_equal(h, results[0][1])


def test_sample_hidden_launches_a_long_batch_in_slices(monkeypatch):
    """Calls of more rows than HIDDEN_ROWS_PER_LAUNCH run as several launches over slices of the rows,
    with the same results as one launch."""
    from rbm_cuda.emulation import EmulatedBackend

    X = synthetic_ml100k()
    states, values, K = encode(X, "softmax")
    F = 24
    W, _, bh = params(X.shape[1], K, F)
    rows = batch_rows(X, 50, seed=4)
    assert np.diff(X.indptr)[rows].max() > EmulatedBackend()._m.ROW_CHUNK  # some rows are summed in parts

    def run(per_launch):
        be = EmulatedBackend()
        be.HIDDEN_ROWS_PER_LAUNCH = per_launch
        ph, h = np.empty((50, F), np.float32), np.empty((50, F), np.float32)
        before = be.launch_count()
        be.sample_hidden(X.indptr.astype(np.int64), X.indices, states, values, rows, W, bh, 3, 4, 0, ph, h, True)
        return ph, h, be.launch_count() - before

    ph1, h1, n1 = run(4096)
    ph7, h7, n7 = run(7)
    assert (n1, n7) == (1, 8)
    np.testing.assert_array_equal(ph7, ph1)
    np.testing.assert_array_equal(h7, h1)


# ---- group_by_item ---------------------------------------------------------------------------------------
def test_group_by_item_refuses_a_batch_beyond_int32_slots():
    """Two rows that claim 2**30 + 1 ratings each, more than int32 slots can number: only the row
    pointers exist, so the kernel must refuse before reading any entry."""
    ip = np.array([0, 2**30 + 1, 2**31 + 2], np.int64)
    ind, rows = np.zeros(4, np.int32), np.array([0, 1], np.int64)
    with pytest.raises(ValueError, match="batch_size"):
        nk.group_by_item(ip, ind, rows, 3)
    nk.group_by_item(ip, ind, rows[:0], 3)  # an empty batch of the same matrix is fine


@pytest.mark.parametrize("B", [0, 1, 100, 943])
def test_group_by_item(ratings, emu, B):
    """The backend's array version is the Numba counting sort bit for bit, and both list, item by
    item, exactly the batch's entries of that item in batch order."""
    X = ratings
    ip, ind = X.indptr.astype(np.int64), X.indices.astype(np.int32)
    rows = batch_rows(X, B, seed=7) if B else np.zeros(0, np.int64)
    want = nk.group_by_item(ip, ind, rows, X.shape[1])
    got = emu.group_by_item(ip, ind, rows.copy(), X.shape[1])
    for name, a, b in zip(["start", "slot_b", "slot_p", "delta"], want, got):
        assert a.dtype == b.dtype, name
        np.testing.assert_array_equal(b, a, err_msg=name)
    start, slot_b, slot_p, delta = want
    entries = [(int(X.indices[j]), b, j) for b, r in enumerate(rows) for j in range(X.indptr[r], X.indptr[r + 1])]
    assert start[-1] == len(entries) and start[0] == 0
    listed = [(i, int(slot_b[q]), int(slot_p[q] + delta[slot_b[q]]))
              for i in range(X.shape[1]) for q in range(start[i], start[i + 1])]
    assert listed == sorted(entries, key=lambda e: e[0])  # stable: batch order within an item
    assert sorted(slot_p.tolist()) == list(range(len(entries)))


# ---- sample_visible_softmax ----------------------------------------------------------------------------
def softmax_cumulative(X, rows, h, W, bv):
    """Per rated entry of the batch: CSR position, and the K-1 cumulative probabilities (float64)."""
    pos, cums = [], []
    for b, r in enumerate(rows):
        js = np.arange(X.indptr[r], X.indptr[r + 1])
        items = X.indices[js]
        logits = bv[items].astype(np.float64) + np.einsum("ikf,f->ik", W[items].astype(np.float64), h[b])
        e = np.exp(logits - logits.max(1, keepdims=True))
        cums.append(np.cumsum(e / e.sum(1, keepdims=True), axis=1)[:, :-1])
        pos.append(js)
    return np.concatenate(pos), np.concatenate(cums)


@pytest.mark.parametrize("K", [5, 2, 3, 7, 11, 32])  # 2, 5, 10 and 32-level instantiations of the kernel
@pytest.mark.parametrize("F,B", [(100, 100), (37, 1), (129, 30)])
def test_sample_visible_softmax(ratings, K, F, B):
    X = ratings
    W, bv, _ = params(X.shape[1], K, F, seed=K + F, scale=0.1)
    rows = batch_rows(X, B, seed=B + 1)
    h = (np.random.default_rng(K).random((B, F)) < 0.5).astype(np.float32)
    seed, step, gibbs = 5, 3, 1

    group = nk.group_by_item(X.indptr.astype(np.int64), X.indices.astype(np.int32), rows, X.shape[1])

    def args():
        return dict(indptr=X.indptr.astype(np.int64), indices=X.indices.astype(np.int32), rows=rows.copy(),
                    start=group[0].copy(), slot_b=group[1].copy(), slot_p=group[2].copy(), delta=group[3].copy(),
                    h=h.copy(), W=W.copy(), bv=bv.copy(), seed=seed, step=step, gibbs=gibbs,
                    out_states=np.full(X.nnz, -1, np.int32))

    want, got = both("sample_visible_softmax", args, ["out_states"])
    want, got = want["out_states"], got["out_states"]
    pos, cum = softmax_cumulative(X, rows, h, W, bv)
    untouched = np.ones(X.nnz, bool)
    untouched[pos] = False
    assert (got[untouched] == -1).all(), "wrote outside the batch's rated entries"
    u = philox_uniforms(seed, step, gibbs, PHASE_VISIBLE, 0, X.nnz)[pos].astype(np.float64)
    clear = (np.abs(cum - u[:, None]) > SAMPLE_MARGIN).all(1) if K > 1 else np.ones(len(pos), bool)
    assert (~clear).mean() <= MAX_AMBIGUOUS
    assert ((got[pos] >= 0) & (got[pos] < K)).all()
    diff = (got[pos] != want[pos]) & clear
    assert not diff.any(), f"{diff.sum()} of {len(pos)} categorical draws differ away from a boundary"
    # and both are the draw the float64 probabilities give
    expect = np.where((u[:, None] < cum).any(1), (u[:, None] < cum).argmax(1), K - 1)
    assert not ((got[pos] != expect) & clear).any()


def test_too_many_levels_is_a_clear_error(emu):
    X = synthetic_ml100k()
    W, bv, _ = params(X.shape[1], 33, 4)
    rows = np.arange(3, dtype=np.int64)
    group = emu.group_by_item(X.indptr.astype(np.int64), X.indices, rows, X.shape[1])
    with pytest.raises(ValueError, match="levels"):
        emu.sample_visible_softmax(X.indptr.astype(np.int64), X.indices, rows, *group, np.zeros((3, 4), np.float32), W,
                                   bv, 0, 0, 1, np.zeros(X.nnz, np.int32))


# ---- sigmoid_bernoulli ----------------------------------------------------------------------------------
@pytest.mark.parametrize("B,N,phase", [(100, N_ITEMS, PHASE_VISIBLE), (1, 100, PHASE_HIDDEN), (7, 129, PHASE_VISIBLE)])
def test_sigmoid_bernoulli(B, N, phase):
    rng = np.random.default_rng(N)
    logits = rng.normal(0, 3, (B, N)).astype(np.float32)
    logits[0, :3] = [0.0, 80.0, -80.0]
    rows = rng.permutation(N_USERS)[:B].astype(np.int64)
    seed, step, gibbs = 2**40 + 1, 1000, 1

    def args():
        return dict(logits=logits.copy(), rows=rows.copy(), seed=seed, step=step, gibbs=gibbs, phase=phase,
                    prob_out=np.empty((B, N), np.float32), sample_out=np.empty((B, N), np.float32))

    want, got = both("sigmoid_bernoulli", args, ["prob_out", "sample_out"])
    assert_close(got["prob_out"], want["prob_out"], PROB_RTOL, PROB_ATOL, "sigmoid")
    elems = rows[:, None] * N + np.arange(N)[None, :]
    u = philox_uniforms(seed, step, gibbs, phase, 0, int(elems.max()) + 1)[elems]
    assert_samples(got["sample_out"], want["sample_out"], u, want["prob_out"], "v")


# ---- compact_rows ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("B,N,density", [(100, N_ITEMS, 0.01), (3, 2500, 0.5), (1, 1024, 1.0), (5, 7, 0.0)])
def test_compact_rows(B, N, density):
    """The nonzero columns of each row as CSR, in column order, the same on both twins; rows across
    the 1,024-column chunks of the CUDA kernel, a row with nothing and a row with everything."""
    rng = np.random.default_rng(B * N)
    dense = (rng.random((B, N)) < density).astype(np.float32)
    if B > 2:
        dense[1] = 0.0
        dense[2] = rng.uniform(0.5, 2.0, N)  # any nonzero value counts, not only 1

    def args():
        return dict(dense=dense.copy(), indptr_out=np.full(B + 1, -1, np.int64),
                    indices_out=np.full(B * N, -1, np.int32))

    want, got = both("compact_rows", args, ["indptr_out", "indices_out"])
    rows, cols = np.nonzero(dense)
    assert np.array_equal(want["indptr_out"], np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=B))]))
    assert np.array_equal(want["indices_out"][:len(cols)], cols)
    assert np.array_equal(got["indptr_out"], want["indptr_out"])
    assert np.array_equal(got["indices_out"][:len(cols)], cols)


def test_compact_rows_refuses_a_short_buffer(emu):
    dense = np.ones((2, 3), np.float32)
    for run in (nk.compact_rows, emu.compact_rows):
        with pytest.raises(ValueError, match="indices_out"):
            run(dense, np.zeros(3, np.int64), np.zeros(5, np.int32))


# ---- sample_bernoulli_rows ------------------------------------------------------------------------------
@pytest.mark.parametrize("B,N", [(100, N_ITEMS), (3, 2500), (1, 5)])
def test_sample_bernoulli_rows(B, N):
    """The drawn items of each row as CSR: on Numba exactly the nonzero columns of sigmoid_bernoulli's
    draws on logits + bv; on the compiled kernels the same draws, away from the sigmoid's last bits.
    With B > 1, a row draws nothing and a row draws every item."""
    rng = np.random.default_rng(B + N)
    logits = rng.normal(-2, 3, (B, N)).astype(np.float32)
    if B > 1:
        logits[0], logits[-1] = -200.0, 200.0
    bv = rng.normal(0, 1, N).astype(np.float32)
    rows = rng.permutation(N_USERS)[:B].astype(np.int64)
    seed, step, gibbs = 2**40 + 3, 77, 1

    def args():
        return dict(logits=logits.copy(), bv=bv.copy(), rows=rows.copy(), seed=seed, step=step, gibbs=gibbs,
                    phase=PHASE_VISIBLE, indptr_out=np.full(B + 1, -1, np.int64),
                    indices_out=np.full(B * N, -1, np.int32))

    want, got = both("sample_bernoulli_rows", args, ["indptr_out", "indices_out"])
    pv, v = np.empty((B, N), np.float32), np.empty((B, N), np.float32)
    nk.sigmoid_bernoulli(logits + bv, rows, seed, step, gibbs, PHASE_VISIBLE, pv, v)
    r, c = np.nonzero(v)
    assert 0 < len(c) < B * N
    if B > 1:
        assert not v[0].any() and v[-1].all()
    assert np.array_equal(want["indptr_out"], np.concatenate([[0], np.cumsum(np.bincount(r, minlength=B))]))
    assert np.array_equal(want["indices_out"][:len(c)], c)

    def dense(out):
        d = np.zeros((B, N), np.float32)
        ip = out["indptr_out"]
        for b in range(B):
            d[b, out["indices_out"][ip[b]:ip[b + 1]]] = 1.0
        return d

    elems = rows[:, None] * N + np.arange(N)[None, :]
    u = philox_uniforms(seed, step, gibbs, PHASE_VISIBLE, 0, int(elems.max()) + 1)[elems]
    assert_samples(dense(got), dense(want), u, pv, "v")


def test_sample_bernoulli_rows_refuses_a_short_buffer_or_bias(emu):
    rows = np.arange(2, dtype=np.int64)
    for run in (nk.sample_bernoulli_rows, emu.sample_bernoulli_rows):
        with pytest.raises(ValueError, match="indices_out"):
            run(np.zeros((2, 3), np.float32), np.zeros(3, np.float32), rows, 0, 0, 1, PHASE_VISIBLE,
                np.zeros(3, np.int64), np.zeros(5, np.int32))
        with pytest.raises(ValueError, match="bv"):
            run(np.zeros((2, 3), np.float32), np.zeros(2, np.float32), rows, 0, 0, 1, PHASE_VISIBLE,
                np.zeros(3, np.int64), np.zeros(6, np.int32))


# ---- scatter_gradients ----------------------------------------------------------------------------------
@pytest.mark.parametrize("visible", ["softmax", "like", "bernoulli"])
@pytest.mark.parametrize("F,B", [(100, 100), (37, 1), (129, 943)])
def test_scatter_gradients(ratings, visible, F, B):
    X = ratings
    states, values, K = encode(X, visible)
    rows = batch_rows(X, B, seed=3)
    ph = np.random.default_rng(F).random((B, F)).astype(np.float32)
    rng = np.random.default_rng(1)
    dW0 = rng.normal(0, 1, (X.shape[1], K, F)).astype(np.float32)
    dbv0 = rng.normal(0, 1, (X.shape[1], K)).astype(np.float32)

    def args():
        return dict(indptr=X.indptr.astype(np.int64), indices=X.indices.astype(np.int32), states=states.copy(),
                    values=values.copy(), rows=rows.copy(), ph=ph.copy(), sign=np.float32(-1.0), dW=dW0.copy(),
                    dbv=dbv0.copy())

    want, got = both("scatter_gradients", args, ["dW", "dbv"])
    assert_close(got["dW"], want["dW"], GRAD_RTOL, GRAD_ATOL, "dW")
    assert_close(got["dbv"], want["dbv"], GRAD_RTOL, GRAD_ATOL, "dbv")
    # items no user of the batch rated keep their gradient
    rated = np.zeros(X.shape[1], bool)
    for r in rows:
        rated[X.indices[X.indptr[r]:X.indptr[r + 1]]] = True
    assert (~rated).any()
    np.testing.assert_array_equal(got["dW"][~rated], dW0[~rated])
    np.testing.assert_array_equal(got["dbv"][~rated], dbv0[~rated])


# ---- apply_update ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 255, 257, N_ITEMS * 5 * 100])
def test_apply_update(n):
    rng = np.random.default_rng(n)
    p0, g0, v0 = (rng.normal(0, 1, n).astype(np.float32) for _ in range(3))

    def args():
        return dict(param=p0.copy(), grad=g0.copy(), velocity=v0.copy(), learning_rate=0.01, momentum=0.9,
                    weight_decay=0.001, scale=1 / 100)

    want, got = both("apply_update", args, ["param", "grad", "velocity"])
    assert_close(got["velocity"], want["velocity"], PROB_RTOL, PROB_ATOL, "velocity")
    assert_close(got["param"], want["param"], PROB_RTOL, PROB_ATOL, "param")
    assert (got["grad"] == 0).all()


# ---- update_bernoulli -------------------------------------------------------------------------------------
@pytest.mark.parametrize("with_values", [True, False])
@pytest.mark.parametrize("F,B", [(100, 100), (37, 1)])
def test_update_bernoulli(ratings, with_values, F, B):
    """The fused gradient and update of bernoulli units: on Numba the same bits as scatter_gradients of
    the data (+1) and of the sampled items (-1), then apply_update of W and bv; on the compiled
    kernels the same within float tolerance, their gradient scratch zero again after.  Every item
    moves (momentum and decay), rated, sampled or neither."""
    X = ratings
    n_items = X.shape[1]
    _, values, _ = encode(X, "bernoulli")
    if not with_values:
        values = np.empty(0, np.float32)
    rows = batch_rows(X, B, seed=5)
    rng = np.random.default_rng(F + B)
    ph0, phT = (rng.random((B, F)).astype(np.float32) for _ in range(2))
    sampled = (rng.random((B, n_items)) < 0.02).astype(np.float32)
    s_indptr, s_indices = np.zeros(B + 1, np.int64), np.zeros(B * n_items, np.int32)
    nk.compact_rows(sampled, s_indptr, s_indices)
    W0, bv0, _ = params(n_items, 1, F, seed=2)
    vW0 = (0.1 * rng.standard_normal(W0.shape)).astype(np.float32)
    vb0 = (0.1 * rng.standard_normal(bv0.shape)).astype(np.float32)
    hyper = dict(learning_rate=0.05, momentum=0.9, weight_decay=0.001, scale=1 / B)

    def args():
        return dict(indptr=X.indptr.astype(np.int64), indices=X.indices.astype(np.int32),
                    states=np.zeros(X.nnz, np.int32), values=values.copy(), rows=rows.copy(), ph0=ph0.copy(),
                    s_indptr=s_indptr.copy(), s_indices=s_indices.copy(), s_states=np.zeros(B * n_items, np.int32),
                    s_values=np.empty(0, np.float32), s_rows=np.arange(B, dtype=np.int64), phT=phT.copy(),
                    W=W0.copy(), bv=bv0.copy(), vel_W=vW0.copy(), vel_bv=vb0.copy(), dW=np.zeros_like(W0),
                    dbv=np.zeros_like(bv0), **hyper)

    want, got = both("update_bernoulli", args, ["W", "bv", "vel_W", "vel_bv", "dW", "dbv"])
    a = args()  # the unfused path on Numba
    nk.scatter_gradients(a["indptr"], a["indices"], a["states"], a["values"], a["rows"], a["ph0"], np.float32(1.0),
                         a["dW"], a["dbv"])
    nk.scatter_gradients(a["s_indptr"], a["s_indices"], a["s_states"], a["s_values"], a["s_rows"], a["phT"],
                         np.float32(-1.0), a["dW"], a["dbv"])
    for param, grad, vel, decay in (("W", "dW", "vel_W", hyper["weight_decay"]), ("bv", "dbv", "vel_bv", 0.0)):
        nk.apply_update(a[param].reshape(-1), a[grad].reshape(-1), a[vel].reshape(-1), hyper["learning_rate"],
                        hyper["momentum"], decay, hyper["scale"])
    for name in ("W", "bv", "vel_W", "vel_bv"):
        np.testing.assert_array_equal(want[name], a[name], err_msg=name)
        assert_close(got[name], want[name], PROB_RTOL, PROB_ATOL, name)
    assert not got["dW"].any() and not got["dbv"].any()
    assert not np.array_equal(want["W"], W0) and not np.array_equal(want["bv"], bv0)


# ---- update_hidden_bias ----------------------------------------------------------------------------------
@pytest.mark.parametrize("B,F", [(1, 100), (100, 37), (943, 129)])
def test_update_hidden_bias(B, F):
    rng = np.random.default_rng(B + F)
    ph0, phT = (rng.random((B, F)).astype(np.float32) for _ in range(2))
    bh0, g0, v0 = (rng.normal(0, 1, F).astype(np.float32) for _ in range(3))

    def args():
        return dict(ph0=ph0, phT=phT, bh=bh0.copy(), grad=g0.copy(), velocity=v0.copy(), learning_rate=0.05,
                    momentum=0.9, scale=1 / B)

    want, got = both("update_hidden_bias", args, ["bh", "grad", "velocity"])
    assert_close(got["velocity"], want["velocity"], PROB_RTOL, PROB_ATOL, "velocity")
    assert_close(got["bh"], want["bh"], PROB_RTOL, PROB_ATOL, "bh")
    assert (got["grad"] == 0).all() and (want["grad"] == 0).all()
    # the Numba twin is the batch's sums over axis 0, then apply_update without decay, bit for bit
    bh, g, v = bh0.copy(), g0.copy(), v0.copy()
    g += ph0.sum(axis=0) - phT.sum(axis=0)
    nk.apply_update(bh, g, v, 0.05, 0.9, 0.0, 1 / B)
    np.testing.assert_array_equal(want["bh"], bh)
    np.testing.assert_array_equal(want["velocity"], v)


# ---- update_softmax --------------------------------------------------------------------------------------
def update_softmax_args(X, visible, F, B):
    states, _, K = encode(X, visible)
    rng = np.random.default_rng(F + B)
    neg = rng.integers(0, K, X.nnz).astype(np.int32)
    rows = batch_rows(X, B, seed=4)
    ph0, phT = (rng.random((B, F)).astype(np.float32) for _ in range(2))
    W, bv, _ = params(X.shape[1], K, F, seed=F)
    vW = rng.normal(0, 0.01, W.shape).astype(np.float32)
    vb = rng.normal(0, 0.01, bv.shape).astype(np.float32)

    group = nk.group_by_item(X.indptr.astype(np.int64), X.indices.astype(np.int32), rows, X.shape[1])

    step = 20
    last = np.full(X.shape[1], step - 1, np.int64)  # every item current: the batch's items were caught up

    def args():
        return dict(start=group[0].copy(), slot_b=group[1].copy(), slot_p=group[2].copy(), delta=group[3].copy(),
                    states=states.copy(), neg_states=neg.copy(), ph0=ph0.copy(), phT=phT.copy(), W=W.copy(),
                    bv=bv.copy(), vel_W=vW.copy(), vel_bv=vb.copy(), learning_rate=0.05, momentum=0.9,
                    weight_decay=0.01, scale=1.0 / max(B, 1), last=last.copy(), step=step,
                    indptr=X.indptr.astype(np.int64),
                    indices=X.indices.astype(np.int32), rows=rows.copy())
    return args


UPDATE_ARGS = ["start", "slot_b", "slot_p", "delta", "states", "neg_states", "ph0", "phT", "W", "bv", "vel_W",
               "vel_bv", "learning_rate", "momentum", "weight_decay", "scale", "last", "step"]


@pytest.mark.parametrize("visible", ["softmax", "like"])
@pytest.mark.parametrize("F,B", [(100, 100), (37, 1), (129, 943)])
def test_update_softmax(ratings, visible, F, B):
    make = update_softmax_args(ratings, visible, F, B)
    want, got = both("update_softmax", lambda: {k: v for k, v in make().items() if k in UPDATE_ARGS},
                     ["W", "bv", "vel_W", "vel_bv", "last"])
    for name in ("vel_W", "W", "vel_bv", "bv"):
        assert_close(got[name], want[name], PROB_RTOL, PROB_ATOL, name)
    np.testing.assert_array_equal(got["last"], want["last"])
    rated = np.diff(make()["start"]) > 0
    assert (want["last"][rated] == 20).all() and (want["last"][~rated] == 19).all()
    for name in ("W", "vel_W"):  # the items the batch does not rate wait for catch_up
        np.testing.assert_array_equal(want[name][~rated], make()[name][~rated])


@pytest.mark.parametrize("mark", [True, False])
@pytest.mark.parametrize("K,F", [(5, 100), (2, 37), (10, 129)])
def test_catch_up(K, F, mark):
    rng = np.random.default_rng(K * F)
    W, bv, _ = params(N_ITEMS, K, F, seed=K)
    step = 30
    last = (step - rng.integers(0, 31, N_ITEMS)).astype(np.int64)
    marked = rng.random(N_ITEMS) < 0.6
    start = np.concatenate([[0], np.cumsum(marked)]).astype(np.int64)
    vel_W = rng.normal(0, 0.01, W.shape).astype(np.float32)

    def args():
        return dict(start=start.copy(), last=last.copy(), step=step, W=W.copy(), bv=bv.copy(), vel_W=vel_W.copy(),
                    vel_bv=bv.copy(), powers_W=decay_powers(0.1, 0.8, 0.003, step),
                    powers_bv=decay_powers(0.1, 0.8, 0.0, step), mark=mark)

    want, got = both("catch_up", args, ["W", "bv", "vel_W", "vel_bv", "last"])
    for name in ("vel_W", "W", "vel_bv", "bv"):
        assert_close(got[name], want[name], PROB_RTOL, PROB_ATOL, name)
    # without mark, last is left for the update_softmax that follows
    np.testing.assert_array_equal(got["last"], np.where(marked, step, last) if mark else last)
    np.testing.assert_array_equal(want["last"], np.where(marked, step, last) if mark else last)
    np.testing.assert_array_equal(want["W"][~marked], W[~marked])  # unmarked items are left alone
    assert not np.array_equal(want["W"][marked], W[marked])


def test_catch_up_is_the_missed_momentum_and_decay_steps():
    """k steps at once against k eager zero-gradient steps (apply_update), within float rounding."""
    rng = np.random.default_rng(7)
    n_items, K, F, lr, mom, wd = 50, 5, 16, 0.1, 0.9, 0.01
    W = rng.normal(0, 0.1, (n_items, K, F)).astype(np.float32)
    vW = rng.normal(0, 0.01, W.shape).astype(np.float32)
    bv = rng.normal(0, 0.1, (n_items, K)).astype(np.float32)
    vb = rng.normal(0, 0.01, bv.shape).astype(np.float32)
    missed = rng.integers(0, 41, n_items)
    lazy = [a.copy() for a in (W, bv, vW, vb)]
    nk.catch_up(np.arange(n_items + 1), 40 - missed, 40, *lazy, decay_powers(lr, mom, wd, 40),
                decay_powers(lr, mom, 0.0, 40), True)
    for i in range(n_items):
        w, v, b, u = W[i].reshape(-1).copy(), vW[i].reshape(-1).copy(), bv[i].copy(), vb[i].copy()
        for _ in range(missed[i]):
            nk.apply_update(w, np.zeros_like(w), v, lr, mom, wd, 1.0)
            nk.apply_update(b, np.zeros_like(b), u, lr, mom, 0.0, 1.0)
        for got, want in ((lazy[0][i], w), (lazy[2][i], v), (lazy[1][i], b), (lazy[3][i], u)):
            np.testing.assert_allclose(got.reshape(-1), want, rtol=2e-5, atol=1e-7)
    assert (missed > 0).any() and not np.array_equal(lazy[0], W)


@pytest.mark.parametrize("visible", ["softmax", "like"])
@pytest.mark.parametrize("B", [1, 300, 943])
def test_numba_update_softmax_is_the_unfused_step_bit_for_bit(ratings, visible, B):
    """The fused Numba kernel against the calls it replaces: two scatters, then the W and bv updates."""
    make = update_softmax_args(ratings, visible, 100, B)
    fused, ref = make(), make()
    nk.update_softmax(*(fused[k] for k in UPDATE_ARGS))
    dW, dbv = np.zeros_like(ref["W"]), np.zeros_like(ref["bv"])
    no_values = np.zeros(0, np.float32)
    for st, ph, sign in ((ref["states"], ref["ph0"], 1.0), (ref["neg_states"], ref["phT"], -1.0)):
        nk.scatter_gradients(ref["indptr"], ref["indices"], st, no_values, ref["rows"], ph, np.float32(sign), dW, dbv)
    for param, grad, vel, decay in ((ref["W"], dW, ref["vel_W"], ref["weight_decay"]), (ref["bv"], dbv, ref["vel_bv"], 0.0)):
        nk.apply_update(param.reshape(-1), grad.reshape(-1), vel.reshape(-1), ref["learning_rate"], ref["momentum"],
                        decay, ref["scale"])
    rated = np.diff(ref["start"]) > 0  # the items the batch rates; the others are left as they were
    for name in ("W", "bv", "vel_W", "vel_bv"):
        np.testing.assert_array_equal(fused[name][rated], ref[name][rated], err_msg=name)
        np.testing.assert_array_equal(fused[name][~rated], make()[name][~rated], err_msg=name)
    assert not np.array_equal(fused["W"], make()["W"]), "nothing was updated"


# ---- predict_pairs, score_items --------------------------------------------------------------------------
@pytest.mark.parametrize("K", [5, 2, 1, 10, 32])
@pytest.mark.parametrize("F", [100, 37])
def test_predict_pairs(K, F):
    rng = np.random.default_rng(K * F)
    W, bv, _ = params(N_ITEMS, K, F, seed=K, scale=0.2)
    ph = rng.random((50, F)).astype(np.float32)
    P = 20_000
    pair_rows = rng.integers(0, 50, P).astype(np.int64)
    items = rng.integers(0, N_ITEMS, P).astype(np.int32)
    levels = np.linspace(1, 5, K).astype(np.float32) if K > 1 else np.array([5.0], np.float32)

    def args():
        return dict(ph=ph.copy(), pair_rows=pair_rows.copy(), items=items.copy(), W=W.copy(), bv=bv.copy(),
                    levels=levels.copy(), out=np.empty(P, np.float32))

    want, got = both("predict_pairs", args, ["out"])
    assert_close(got["out"], want["out"], PROB_RTOL, PROB_ATOL * 5, "predictions")


@pytest.mark.parametrize("K", [5, 2, 1, 11])
@pytest.mark.parametrize("U", [1, 64])
def test_score_items(K, U):
    rng = np.random.default_rng(K + U)
    W, bv, _ = params(N_ITEMS, K, 100, seed=K, scale=0.2)
    ph = rng.random((U, 100)).astype(np.float32)
    logits = np.ascontiguousarray(ph @ W.reshape(N_ITEMS * K, 100).T)
    levels = np.linspace(1, 5, K).astype(np.float32) if K > 1 else np.array([5.0], np.float32)

    def args():
        return dict(logits=logits.copy(), bv=bv.copy(), levels=levels.copy(), out=np.empty((U, N_ITEMS), np.float32))

    want, got = both("score_items", args, ["out"])
    assert_close(got["out"], want["out"], PROB_RTOL, PROB_ATOL * 5, "scores")


# ---- free_energy ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("visible", ["softmax", "bernoulli"])
@pytest.mark.parametrize("F,B", [(100, N_USERS), (37, 1), (129, 10)])
def test_free_energy(ratings, visible, F, B):
    X = ratings
    states, values, K = encode(X, visible)
    W, bv, bh = params(X.shape[1], K, F, seed=7, scale=0.1)
    rows = batch_rows(X, B, seed=5) if B < N_USERS else np.arange(N_USERS, dtype=np.int64)

    def args():
        return dict(indptr=X.indptr.astype(np.int64), indices=X.indices.astype(np.int32), states=states.copy(),
                    values=values.copy(), rows=rows.copy(), W=W.copy(), bv=bv.copy(), bh=bh.copy(),
                    out=np.empty(B, np.float32))

    want, got = both("free_energy", args, ["out"])
    assert_close(got["out"], want["out"], FE_RTOL, FE_ATOL, "free energy")


# ---- a training batch on the GPU path: launches and host reads, counted ---------------------------------
@pytest.mark.parametrize("B", [1, 100, 943])
def test_epoch_batches_are_group_by_item_of_each_batch(ratings, emu, B):
    """One grouping of the whole epoch gives every batch's group_by_item, bit for bit."""
    X = ratings
    ip = X.indptr.astype(np.int64)
    order = np.random.default_rng(B).permutation(np.flatnonzero(np.diff(ip)))
    batches = list(emu.epoch_batches(ip, X.indices, order, B, X.shape[1], ip))
    assert len(batches) == -(-len(order) // B)
    for k, (rows, group) in enumerate(batches):
        np.testing.assert_array_equal(rows, order[k * B:(k + 1) * B])
        for name, got, want in zip(("start", "slot_b", "slot_p", "delta"), group,
                                   nk.group_by_item(ip, X.indices, rows.copy(), X.shape[1])):
            assert got.dtype == want.dtype, name
            np.testing.assert_array_equal(got, want, err_msg=f"batch {k}: {name}")
    assert all(g is None for _, g in emu.epoch_batches(ip, X.indices, order, B, X.shape[1], ip, grouped=False))


@pytest.mark.parametrize("visible", ["softmax", "like", "bernoulli"])
def test_a_training_batch_is_a_few_launches_and_no_transfer(visible, monkeypatch):
    """What a batch inside an epoch would do on a GPU, counted on the emulated backend: softmax and
    like/dislike units at most 8 launches (ours and CuPy's), bernoulli units (the logits of every item
    through cuBLAS) at most 13; no device value is read on the host."""
    from rbm_cuda import model as model_module
    from rbm_cuda.emulation import CountingBackend

    be = CountingBackend()
    monkeypatch.setattr(model_module, "get_backend", lambda device: be)
    X = synthetic_ml100k()[:300]
    model = rbm_cuda.RBM(n_hidden=16, epochs=1, batch_size=37, visible=visible, device="cuda", seed=3).fit(X)
    assert len(be.per_batch) == -(-int((np.diff(X.indptr) > 0).sum()) // 37)
    for counts in be.per_batch:
        assert counts["host_reads"] == 0
        assert counts["launches"] + counts["array_ops"] <= (13 if visible == "bernoulli" else 8), counts
    # the counts see what they count: a read and an array operation in a batch would show
    be.to_numpy(model._device()["W"])
    model._device()["W"] += 0
    assert be.host_reads >= 1 and be.array_ops >= 1


# ---- no races: the result does not depend on the order threads run in ---------------------------------
def test_shuffled_schedules_are_reproducible_permutations():
    from rbm_cuda.emulation import module, schedule

    m = module()
    session = m.get_schedule()
    with schedule("reverse"):
        assert m.visit_order(5) == [4, 3, 2, 1, 0]
    with schedule("shuffled", 3):
        first, second = m.visit_order(1000), m.visit_order(1000)
    with schedule("shuffled", 3):
        assert m.visit_order(1000) == first  # the same seed gives the same orders
    with schedule("shuffled", 4):
        other = m.visit_order(1000)
    assert sorted(first) == sorted(second) == sorted(other) == list(range(1000))
    assert len({tuple(first), tuple(second), tuple(other), tuple(range(1000))}) == 4
    assert m.get_schedule() == session  # each context restores the order it found
    with pytest.raises(ValueError, match="'forward', 'reverse' or 'shuffled'"):
        m.set_schedule("backwards")


@pytest.mark.parametrize("order", ["reverse", "shuffled:1", "shuffled:2", "shuffled:3"])
def test_kernels_do_not_depend_on_thread_order(emu, order):
    from rbm_cuda.emulation import schedule

    X = synthetic_ml100k()
    states, values, K = encode(X, "softmax")
    F, B = 100, 100
    W, bv, bh = params(X.shape[1], K, F)
    rows = batch_rows(X, B)
    ip = X.indptr.astype(np.int64)

    def run():
        ph, h = np.empty((B, F), np.float32), np.empty((B, F), np.float32)
        emu.sample_hidden(ip, X.indices, states, values, rows, W, bh, 1, 2, 0, ph, h, True)
        neg = np.zeros(X.nnz, np.int32)
        group = emu.group_by_item(ip, X.indices, rows, X.shape[1])
        emu.sample_visible_softmax(ip, X.indices, rows, *group, h, W, bv, 1, 2, 1, neg)
        W1, bv1, vW, vb = W.copy(), bv.copy(), np.zeros_like(W), np.zeros_like(bv)
        last = np.arange(X.shape[1], dtype=np.int64) % 3
        emu.catch_up(group[0], last, 3, W1, bv1, vW, vb, decay_powers(0.1, 0.5, 0.01, 3), decay_powers(0.1, 0.5, 0.0, 3),
                     True)
        emu.update_softmax(*group, states, neg, ph, ph[::-1].copy(), W1, bv1, vW, vb, 0.1, 0.5, 0.01, 0.01, last, 4)
        dW, dbv = np.zeros_like(W), np.zeros_like(bv)
        emu.scatter_gradients(ip, X.indices, neg, values, rows, ph, np.float32(1), dW, dbv)
        fe = np.empty(B, np.float32)
        emu.free_energy(ip, X.indices, states, values, rows, W, bv, bh, fe)
        pv, v = np.empty((B, 300), np.float32), np.empty((B, 300), np.float32)
        emu.sigmoid_bernoulli(np.ascontiguousarray(ph[:, :1].repeat(300, 1)), rows, 1, 2, 1, 1, pv, v)
        return ph, h, neg, W1, bv1, vW, dW, dbv, fe, pv, v

    with schedule("forward"):
        fwd = run()
    name, _, seed = order.partition(":")
    with schedule(name, int(seed or 0)):
        rev = run()
    for name, a, b in zip(["ph", "h", "neg", "W1", "bv1", "vW", "dW", "dbv", "fe", "pv", "v"], fwd, rev):
        if name in ("dW", "dbv"):  # atomics: the order of additions is free
            assert_close(b, a, GRAD_RTOL, GRAD_ATOL, name)
        else:
            np.testing.assert_array_equal(a, b, err_msg=name)


# ---- argument checks (shared with the CuPy backend) -------------------------------------------------------
def test_argument_checks(emu):
    X = synthetic_ml100k()
    states, values, K = encode(X, "softmax")
    W, bv, bh = params(X.shape[1], K, 8)
    rows = np.arange(4, dtype=np.int64)
    ip = X.indptr.astype(np.int64)
    out = np.empty((4, 8), np.float32)
    call = emu.sample_hidden
    # the compiled function checks dtype, order and device (nanobind), never converting: the message
    # shows the expected array types, and a converted copy would lose the kernel's writes
    with pytest.raises(TypeError, match=r"rows: ndarray\[dtype=int64"):
        call(ip, X.indices, states, values, rows.astype(np.int32), W, bh, 0, 0, 0, out, out, True)
    with pytest.raises(TypeError, match=r"prob_out: ndarray\[dtype=float32, order='C'"):
        call(ip, X.indices, states, values, rows, W, bh, 0, 0, 0, np.empty((8, 4), np.float32).T, out, True)
    with pytest.raises(TypeError, match=r"sample_out: ndarray"):
        call(ip, X.indices, states, values, rows, W, bh, 0, 0, 0, out, [[0.0] * 8] * 4, True)
    read_only = out.copy()
    read_only.flags.writeable = False
    with pytest.raises(TypeError, match=r"sample_out: ndarray"):
        call(ip, X.indices, states, values, rows, W, bh, 0, 0, 0, out, read_only, True)
    # shapes are checked against each other, naming the array
    with pytest.raises(ValueError, match=r"prob_out has shape \(3, 8\), expected \(4, 8\)"):
        call(ip, X.indices, states, values, rows, W, bh, 0, 0, 0, out[:3], out, True)
    with pytest.raises(ValueError, match="values must have 0 or nnz"):
        call(ip, X.indices, states, np.ones(3, np.float32), rows, W, bh, 0, 0, 0, out, out, True)
    with pytest.raises(ValueError, match=r"bh has shape \(7,\), expected \(8,\)"):
        call(ip, X.indices, states, values, rows, W, bh[:7], 0, 0, 0, out, out, True)
    # what the Python side reads before the compiled function's checks is checked there
    with pytest.raises(TypeError, match="rows must be an array"):
        call(ip, X.indices, states, values, rows.tolist(), W, bh, 0, 0, 0, out, out, True)
    with pytest.raises(ValueError, match="W must have 3 dimensions"):
        emu.free_energy(ip, X.indices, states, values, rows, W[:, 0], bv, bh, np.empty(4, np.float32))
    group = emu.group_by_item(ip, X.indices, rows, X.shape[1])
    with pytest.raises(ValueError, match=r"delta has shape \(3,\), expected \(4,\)"):
        emu.sample_visible_softmax(ip, X.indices, rows, *group[:3], group[3][:3], out[:3], W, bv, 0, 0, 1,
                                   np.zeros(X.nnz, np.int32))
    # indices: with check_bounds (the emulation's default), before any launch
    with pytest.raises(IndexError, match="rows"):
        call(ip, X.indices, states, values, rows + N_USERS, W, bh, 0, 0, 0, out, out, True)
    with pytest.raises(IndexError, match="states"):
        call(ip, X.indices, states + 5, values, rows, W, bh, 0, 0, 0, out, out, True)


def test_every_backend_has_every_kernel_with_the_numba_arguments():
    """One list of kernels (rbm_cuda.cpu.kernels.KERNELS): the Numba backend takes them from it, and
    the compiled backends' methods take the same arguments in the same order."""
    import inspect

    from rbm_cuda.cpu import kernels
    from rbm_cuda.cpu.backend import NumbaBackend
    from rbm_cuda.cuda.kernels import CompiledKernels

    for name in kernels.KERNELS:
        numba_args = list(inspect.signature(getattr(kernels, name).py_func).parameters)
        assert getattr(NumbaBackend, name) is getattr(kernels, name), name
        assert list(inspect.signature(getattr(CompiledKernels, name)).parameters)[1:] == numba_args, name


def test_empty_inputs_are_no_ops(emu):
    X = synthetic_ml100k()
    states, values, K = encode(X, "softmax")
    W, bv, bh = params(X.shape[1], K, 8)
    none = np.zeros(0, np.int64)
    out = np.empty((0, 8), np.float32)
    emu.sample_hidden(X.indptr.astype(np.int64), X.indices, states, values, none, W, bh, 0, 0, 0, out, out, True)
    group = emu.group_by_item(X.indptr.astype(np.int64), X.indices, none, X.shape[1])
    assert group[0].shape == (X.shape[1] + 1,) and not group[0].any() and group[1].shape == (0,)
    emu.sample_visible_softmax(X.indptr.astype(np.int64), X.indices, none, *group, out, W, bv, 0, 0, 1,
                               np.zeros(X.nnz, np.int32))
    emu.apply_update(np.zeros(0, np.float32), np.zeros(0, np.float32), np.zeros(0, np.float32), 0.1, 0.9, 0.0, 1.0)
    # an empty batch rates no item and changes no weight; catch_up then takes the step every item missed
    W0, vW, vb, last = W.copy(), np.full_like(W, 0.5), np.zeros_like(bv), np.zeros(X.shape[1], np.int64)
    powers = decay_powers(0.1, 0.9, 0.0, 1)
    emu.update_softmax(*group, states, states, out, out, W, bv, vW, vb, 0.1, 0.9, 0.0, 1.0, last, 1)
    np.testing.assert_array_equal(W, W0)
    emu.catch_up(np.arange(X.shape[1] + 1), last, 1, W, bv, vW, vb, powers, powers, True)
    np.testing.assert_allclose(W, W0 + 0.45, rtol=1e-6)
    assert (last == 1).all()
    emu.predict_pairs(np.zeros((1, 8), np.float32), none, np.zeros(0, np.int32), W, bv, np.arange(1, 6, dtype=np.float32),
                      np.zeros(0, np.float32))


@pytest.mark.parametrize("driver, runtime, phrase", [
    (0, 13000, "no CUDA driver"),
    (12040, 13000, "supports CUDA up to 12.4, and this build of rbm_cuda uses the CUDA 13.0 runtime, which needs an "
                   "r580 or newer NVIDIA driver"),
    (13000, 13000, "the CUDA driver cannot be used: boom"),
    (13000, 13010, "the CUDA driver cannot be used: boom"),  # a 13.0 driver runs a 13.1 runtime
])
def test_the_reason_names_an_old_driver(driver, runtime, phrase):
    assert phrase in rbm_cuda.gpu.driver_problem(driver, runtime, "boom")


def test_device_cuda_without_gpu_fails_with_the_reason():
    if rbm_cuda.gpu.HAS_CUDA:
        pytest.skip("a GPU is usable here")
    X = synthetic_ml100k()
    with pytest.raises(RuntimeError) as err:
        rbm_cuda.RBM(device="cuda", epochs=1).fit(X)
    assert rbm_cuda.gpu.REASON in str(err.value)
