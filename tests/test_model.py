"""The Numba-backed RBM against a plain dense NumPy implementation of the same CD-T epoch that draws
from the same Philox streams; plus determinism, validation, persistence and learning."""

import json
import os

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from rbm_cuda import RBM, RBMRecommender
from rbm_cuda.datasets import from_dataframe
from rbm_cuda.cpu.philox import PHASE_HIDDEN, PHASE_VISIBLE, philox_uniforms
from rbm_cuda.serialization import ModelFileError


def random_ratings(n_users=60, n_items=25, density=0.2, levels=(1, 2, 3, 4, 5), seed=1, empty_rows=(3,)):
    rng = np.random.default_rng(seed)
    mask = rng.random((n_users, n_items)) < density
    mask[list(empty_rows)] = False
    values = rng.choice(np.asarray(levels, dtype=np.float32), size=(n_users, n_items))
    return sp.csr_matrix(values * mask)


def uniforms(seed, step, gibbs, phase, elements):
    """Philox uniforms for arbitrary element indices (drawn one contiguous range, then picked)."""
    elements = np.asarray(elements, dtype=np.int64)
    if elements.size == 0:
        return np.zeros(0, dtype=np.float32)
    top = int(elements.max()) + 1
    return philox_uniforms(seed, step, gibbs, phase, 0, top)[elements]


def sigmoid(x):
    return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(np.float32)


def reference_epoch(model, X, W, bv, bh, epoch=0, carry=None):
    """One CD-T epoch, dense over users x items x levels, written from the paper's equations: every
    weight takes momentum and decay at every step, rated in the batch or not.  carry: the
    velocities and the step count, carried from epoch to epoch (default: a fresh start)."""
    p = model._params
    seed, F = p.seed, p.n_hidden
    X = X.tocsr()
    dense = X.toarray()
    mask = dense != 0
    n_users, n_items = dense.shape
    K = W.shape[1]
    if p.visible == "softmax":
        state = np.searchsorted(model.levels_, dense).clip(0, K - 1)
        value = mask.astype(np.float32)
    elif p.visible == "like":
        state = (dense >= p.like_threshold).astype(int)
        value = mask.astype(np.float32)
    else:
        state = np.zeros_like(dense, dtype=int)
        value = dense / model.levels_.max()
    onehot = np.zeros((n_users, n_items, K), dtype=np.float32)
    onehot[np.arange(n_users)[:, None], np.arange(n_items)[None, :], state] = 1
    V0 = onehot * value[:, :, None]
    # CSR position of each (user, item) entry: the element index of visible draws
    pos = np.full(dense.shape, -1)
    rows_of = np.repeat(np.arange(n_users), np.diff(X.indptr))
    pos[rows_of, X.indices] = np.arange(X.nnz)

    carry = {} if carry is None else carry
    vel = carry.setdefault("vel", [np.zeros_like(W), np.zeros_like(bv), np.zeros_like(bh)])
    order = np.random.Generator(np.random.Philox(key=seed, counter=[0, 0, 0, epoch])).permutation(
        np.flatnonzero(np.diff(X.indptr)))
    steps, mom = p.cd_at(epoch), p.momentum_at(epoch)
    step = carry.get("step", 0)
    for start in range(0, len(order), p.batch_size):
        rows = order[start:start + p.batch_size]
        step += 1
        B = len(rows)
        hid_elems = rows[:, None] * F + np.arange(F)[None, :]
        ph0 = sigmoid(bh + np.einsum("bik,ikf->bf", V0[rows], W))
        h = (uniforms(seed, step, 0, PHASE_HIDDEN, hid_elems) < ph0).astype(np.float32)
        for t in range(1, steps + 1):
            if p.visible == "bernoulli":
                logits = h @ W[:, 0, :].T + bv[:, 0]
                pv = sigmoid(logits)
                vis_elems = rows[:, None] * n_items + np.arange(n_items)[None, :]
                v = (uniforms(seed, step, t, PHASE_VISIBLE, vis_elems) < pv).astype(np.float32)
                VT = v[:, :, None]
                phT = sigmoid(v @ W[:, 0, :] + bh)
            else:
                logits = bv[None] + np.einsum("bf,ikf->bik", h, W)
                prob = np.exp(logits - logits.max(-1, keepdims=True))
                prob /= prob.sum(-1, keepdims=True)
                m = mask[rows]
                u = np.zeros(m.shape, dtype=np.float32)
                u[m] = uniforms(seed, step, t, PHASE_VISIBLE, pos[rows][m])
                cum = np.cumsum(prob, axis=-1)[:, :, :K - 1]
                below = u[:, :, None] < cum
                new_state = np.where(below.any(-1), below.argmax(-1), K - 1)
                VT = np.zeros_like(V0[rows])
                VT[np.arange(B)[:, None], np.arange(n_items)[None, :], new_state] = 1
                VT *= m[:, :, None]
                phT = sigmoid(bh + np.einsum("bik,ikf->bf", VT, W))
            if t < steps:
                # bernoulli: the negative phase's hidden units are those of CSR rows 0 .. B - 1, the
                # sampled items of each batch position
                elems = np.arange(B)[:, None] * F + np.arange(F)[None, :] if p.visible == "bernoulli" else hid_elems
                h = (uniforms(seed, step, t, PHASE_HIDDEN, elems) < phT).astype(np.float32)
        gW = np.einsum("bik,bf->ikf", V0[rows], ph0) - np.einsum("bik,bf->ikf", VT, phT)
        gbv = V0[rows].sum(0) - VT.sum(0)
        gbh = ph0.sum(0) - phT.sum(0)
        for n, (param, grad, decay) in enumerate(((W, gW, p.weight_decay), (bv, gbv, 0.0), (bh, gbh, 0.0))):
            vel[n] = mom * vel[n] + p.learning_rate * (grad / B - decay * param)
            param += vel[n]
    carry["step"] = step
    return W, bv, bh


@pytest.mark.parametrize("visible", ["softmax", "like", "bernoulli"])
@pytest.mark.parametrize("cd_steps", [1, 2])
def test_numba_epoch_matches_dense_reference(visible, cd_steps):
    X = random_ratings()
    model = RBM(n_hidden=12, visible=visible, cd_steps=cd_steps, batch_size=16, epochs=0, seed=7,
                learning_rate=0.5, weight_decay=0.01, device="cpu").fit(X)
    W, bv, bh = (a.astype(np.float32).copy() for a in (model.W_, model.bv_, model.bh_))
    # large learning rate so that a wrong sample or a wrong gradient moves the parameters visibly
    model.partial_fit()
    W, bv, bh = reference_epoch(model, X, W, bv, bh)
    assert not np.allclose(W, RBM(n_hidden=12, visible=visible, epochs=0, seed=7, device="cpu").fit(X).W_)
    np.testing.assert_allclose(model.W_, W, rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(model.bv_, bv, rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(model.bh_, bh, rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("visible", ["softmax", "like"])
def test_lazy_updates_agree_with_eager_ones_over_several_epochs(visible):
    """Items a batch does not rate take their momentum and decay steps late, in closed form: after
    several epochs (momentum changing between them) the weights are those of updating every weight
    at every step, within float rounding."""
    X = random_ratings(n_users=80, n_items=40, density=0.06, empty_rows=())
    kw = dict(n_hidden=10, visible=visible, batch_size=4, seed=3, learning_rate=0.3, weight_decay=0.02,
              initial_momentum=0.5, momentum=0.9, momentum_warmup=2, device="cpu")
    start = RBM(epochs=0, **kw).fit(X)
    W, bv, bh = (a.astype(np.float32).copy() for a in (start.W_, start.bv_, start.bh_))
    carry = {}
    for epoch in range(4):
        W, bv, bh = reference_epoch(start, X, W, bv, bh, epoch=epoch, carry=carry)
    lazy = RBM(epochs=4, **kw).fit(X)
    rated_per_batch = X[:4].getnnz(axis=0).astype(bool).mean()
    assert rated_per_batch < 0.5  # most items sit out most batches: the lazy path does the work
    np.testing.assert_allclose(lazy.W_, W, rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(lazy.bv_, bv, rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(lazy.bh_, bh, rtol=1e-4, atol=2e-5)
    assert not np.allclose(lazy.W_, start.W_)


@pytest.mark.parametrize("kernel", ["sample_visible_softmax", "update_softmax"])
def test_an_epoch_stopped_by_an_error_leaves_no_item_behind(monkeypatch, kernel):
    """Ctrl-C or an error in a batch: the items that sat out the batches before it still take the
    momentum-and-decay steps they missed, so the weights are those of the steps taken, whether the
    batch stopped before its catch-up or after it (its items then must not take the steps twice)."""
    from rbm_cuda.cpu import kernels
    from rbm_cuda.cpu.backend import NumbaBackend

    X = random_ratings(n_users=80, n_items=40, density=0.06, empty_rows=())

    def stopped_in(name):
        calls = []

        def failing(*args):
            calls.append(1)
            if len(calls) == 5:  # the fifth batch's call
                raise KeyboardInterrupt
            return getattr(kernels, name)(*args)

        with monkeypatch.context() as mp:
            mp.setattr(NumbaBackend, name, staticmethod(failing))
            model = RBM(n_hidden=10, batch_size=4, epochs=1, weight_decay=0.02, device="cpu")
            with pytest.raises(KeyboardInterrupt):
                model.fit(X)
        return model._dev

    before, after = stopped_in("catch_up"), stopped_in(kernel)
    assert (before["last"] == 4).all() and (after["last"] == 4).all()  # four batches completed
    for name in ("W", "bv"):
        np.testing.assert_array_equal(after[name], before[name])
    np.testing.assert_array_equal(after["vel"][0], before["vel"][0])


def test_softmax_exp_is_within_one_ulp():
    """The vectorisable exp of the softmax draw (x <= 0) against exp in float64: exact at 0, relative
    error <= 2^-23 (one float32 ulp) on [-87, 0], and between 2^-126 and 1e-37 below -87 (where it
    clamps)."""
    from numba import njit

    from rbm_cuda.cpu.kernels import _expf

    @njit
    def apply(x, out):
        for n in range(x.shape[0]):
            out[n] = _expf(x[n])

    x = np.concatenate([np.linspace(-87.0, 0.0, 400_001, dtype=np.float32),
                        -np.logspace(-30, 1, 1_001, dtype=np.float32), np.float32([0.0, -0.0, -100.0, -1e30])])
    got = np.empty_like(x)
    apply(x, got)
    assert got[-4] == 1.0 and got[-3] == 1.0
    normal = x >= -87.0
    want = np.exp(x[normal].astype(np.float64))
    assert (np.abs(got[normal] - want) / want).max() <= 2.0 ** -23
    assert (got[~normal] >= np.float32(2.0 ** -126)).all() and (got[~normal] < 1e-37).all()


def test_sigmoid_is_within_two_ulp():
    """The kernels' sigmoid (t / (1 + t) or 1 / (1 + t), t = exp(-|x|)) against float64: relative
    error <= 2^-22 wherever the result is a normal float32, and exactly 0.5 at 0."""
    from numba import njit

    from rbm_cuda.cpu.kernels import _sigmoid

    @njit
    def apply(x, out):
        for n in range(x.shape[0]):
            out[n] = _sigmoid(x[n])

    x = np.concatenate([np.linspace(-80.0, 80.0, 400_001, dtype=np.float32), np.float32([0.0, 200.0, -200.0])])
    got = np.empty_like(x)
    apply(x, got)
    want = 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
    assert got[-3] == 0.5 and got[-2] == 1.0 and 0.0 <= got[-1] < 1e-37
    normal = want > 2.0 ** -126
    assert (np.abs(got[normal] - want[normal]) / want[normal]).max() <= 2.0 ** -22


def test_reference_detects_a_different_random_stream():
    """The comparison above is sharp: the same epoch under another seed's draws does not match."""
    X = random_ratings()
    model = RBM(n_hidden=12, batch_size=16, epochs=0, seed=7, learning_rate=0.5, device="cpu").fit(X)
    W0, bv0, bh0 = (a.copy() for a in (model.W_, model.bv_, model.bh_))
    model.partial_fit()
    other = RBM(n_hidden=12, batch_size=16, epochs=0, seed=8, learning_rate=0.5, device="cpu").fit(X)
    W, _, _ = reference_epoch(other, X, W0.copy(), bv0.copy(), bh0.copy())
    assert np.abs(model.W_ - W).max() > 1e-3


def test_same_seed_same_model_other_seed_other_model():
    X = random_ratings(n_users=80, n_items=30)
    kw = dict(n_hidden=8, epochs=3, batch_size=10, device="cpu", cd_steps="1,2@1")
    a = RBM(seed=3, **kw).fit(X)
    b = RBM(seed=3, **kw).fit(X)
    c = RBM(seed=4, **kw).fit(X)
    assert np.array_equal(a.W_, b.W_) and np.array_equal(a.bv_, b.bv_) and np.array_equal(a.bh_, b.bh_)
    assert not np.allclose(a.W_, c.W_)
    assert a.history_[-1]["train_rmse"] == b.history_[-1]["train_rmse"]


@pytest.mark.parametrize("visible,implicit", [("softmax", False), ("bernoulli", False), ("bernoulli", True)])
def test_fit_then_partial_fit_equals_longer_fit(visible, implicit):
    """fit frees its training scratch (gradients, negative states) at the end; more epochs make it
    again and train exactly as one longer fit."""
    X = random_ratings()
    if implicit:
        X.data[:] = 1.0
    kw = dict(n_hidden=8, batch_size=16, device="cpu", seed=2, cd_steps="1,2@2", visible=visible)
    long = RBM(epochs=4, **kw).fit(X)
    short = RBM(epochs=2, **kw).fit(X)
    short.partial_fit().partial_fit()
    np.testing.assert_array_equal(long.W_, short.W_)
    assert [r["cd_steps"] for r in short.history_] == [1, 1, 2, 2]


def test_partial_fit_keeps_parameters_and_takes_new_users():
    X = random_ratings()
    model = RBM(n_hidden=8, epochs=7, device="cpu", seed=1)
    model.partial_fit(X)
    assert model.epochs == 7 and model.epochs_done_ == 1
    fresh = RBM(n_hidden=8, epochs=1, device="cpu", seed=1).fit(X)
    np.testing.assert_array_equal(model.W_, fresh.W_)
    more = random_ratings(n_users=90, seed=5)  # other users, same items
    model.partial_fit(more)
    assert model.epochs_done_ == 2 and model.n_users_ == 90
    assert model.recommend(89, n=3)[0].shape == (3,)
    with pytest.raises(ValueError, match="first call"):
        RBM(device="cpu").partial_fit()


def test_save_load_round_trip_resumes_exactly(tmp_path):
    X = random_ratings()
    kw = dict(n_hidden=8, batch_size=16, device="cpu", seed=5, visible="like")
    model = RBM(epochs=2, **kw).fit(X)
    path = model.save(tmp_path / "m.npz")
    loaded = RBM.load(path)
    for name in ("W_", "bv_", "bh_", "levels_", "item_ids_", "user_ids_"):
        np.testing.assert_array_equal(getattr(model, name), getattr(loaded, name))
    assert loaded.get_params() == model.get_params()
    np.testing.assert_array_equal(model.predict([0, 1, 2], [4, 5, 6]), loaded.predict([0, 1, 2], [4, 5, 6]))
    # no pickle: the file opens with allow_pickle=False and its header is JSON
    with np.load(path, allow_pickle=False) as npz:
        assert json.loads(str(npz["header"][()]))["format_version"] == 1
    model.partial_fit()
    loaded.partial_fit()
    np.testing.assert_array_equal(model.W_, loaded.W_)


def test_model_file_errors(tmp_path):
    X = random_ratings()
    model = RBM(n_hidden=4, epochs=1, device="cpu").fit(X)
    path = model.save(tmp_path / "m.npz")
    with pytest.raises(ModelFileError, match="does not exist"):
        RBM.load(tmp_path / "missing.npz")
    truncated = tmp_path / "t.npz"
    truncated.write_bytes(open(path, "rb").read()[:200])
    with pytest.raises(ModelFileError, match="not a readable rbm_cuda model file.*truncated"):
        RBM.load(truncated)
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    header = json.loads(str(arrays["header"][()]))
    header["format_version"] = 99
    arrays["header"] = np.array(json.dumps(header))
    newer = tmp_path / "newer.npz"
    np.savez(newer, **arrays)
    with pytest.raises(ModelFileError, match="version 99, newer"):
        RBM.load(newer)


@pytest.mark.parametrize("kw, fragment", [
    (dict(n_hidden=0), "n_hidden=0 is not allowed: n_hidden must be an int >= 1"),
    (dict(visible="gaussian"), "visible='gaussian'"),
    (dict(momentum=1.5), "momentum=1.5"),
    (dict(device="tpu"), "device='tpu'"),
    (dict(cd_steps="1,x@3"), "cannot read 'x@3'"),
    (dict(cd_steps={5: 3}), "from epoch 0"),
    (dict(batch_size=2.5), "batch_size=2.5"),
])
def test_parameter_validation_names_value_and_rule(kw, fragment):
    with pytest.raises(ValueError) as err:
        RBM(**kw)
    assert fragment in str(err.value)


def test_cd_schedule_forms_agree():
    a = RBM(cd_steps="1,3@15,5@25")._params
    b = RBM(cd_steps={0: 1, 15: 3, 25: 5})._params
    assert a.schedule == b.schedule == ((0, 1), (15, 3), (25, 5))
    assert [a.cd_at(e) for e in (0, 14, 15, 24, 25, 99)] == [1, 1, 3, 3, 5, 5]


def test_predictions_are_clipped_expectations_and_recommend_excludes_seen():
    X = random_ratings()
    model = RBM(n_hidden=8, epochs=2, device="cpu").fit(X)
    users = np.repeat(np.arange(5), 4)
    items = np.tile(np.arange(4), 5)
    pred = model.predict(users, items)
    assert pred.min() >= 1 and pred.max() <= 5
    scores = model.score_users(np.arange(5))
    np.testing.assert_allclose(pred, scores[users, items], rtol=1e-5)
    ids, s = model.recommend(0, n=30)
    seen = set(X[0].indices.tolist())
    assert not seen & set(ids.tolist()) and len(ids) == X.shape[1] - len(seen)
    assert np.all(np.diff(s) <= 0)


def test_training_never_builds_a_dense_users_by_items_array(monkeypatch):
    """Softmax training allocates nothing of size n_users * n_items (the sparse path is the point)."""
    X = random_ratings(n_users=400, n_items=300, density=0.02)
    limit = X.shape[0] * X.shape[1]
    seen = []
    real_empty, real_zeros = np.empty, np.zeros

    def watch(real):
        def f(shape, *a, **k):
            size = int(np.prod(shape))
            seen.append(size)
            return real(shape, *a, **k)
        return f

    monkeypatch.setattr(np, "empty", watch(real_empty))
    monkeypatch.setattr(np, "zeros", watch(real_zeros))
    RBM(n_hidden=8, epochs=1, batch_size=50, device="cpu").fit(X)
    assert seen and max(seen) < limit


def test_bad_inputs():
    with pytest.raises(ValueError, match="empty"):
        RBM(device="cpu").fit(sp.csr_matrix((5, 5), dtype=np.float32))
    with pytest.raises(TypeError, match="RatingData or a scipy.sparse"):
        RBM(device="cpu").fit(np.ones((3, 3)))
    model = RBM(n_hidden=4, epochs=1, device="cpu").fit(random_ratings())
    with pytest.raises(KeyError, match="unknown user id 999"):
        model.recommend(999)
    with pytest.raises(ValueError, match="same length"):
        model.predict([0, 1], [0])


ML100K = os.path.join(os.environ.get("RBM_CUDA_DATA", ""), "ml-100k")


@pytest.mark.data
@pytest.mark.skipif(not os.path.exists(os.path.join(ML100K, "u1.base")), reason="needs $RBM_CUDA_DATA/ml-100k")
def test_softmax_rbm_beats_item_mean_on_ml100k_u1():
    from rbm_cuda.datasets import load_movielens_100k_split

    train, test = load_movielens_100k_split(ML100K, "u1")
    X, T = train.ratings, test.ratings.tocoo()
    item_sum = np.bincount(X.indices, weights=X.data, minlength=X.shape[1])
    item_n = np.bincount(X.indices, minlength=X.shape[1])
    item_mean = np.where(item_n > 0, item_sum / np.maximum(item_n, 1), X.data.mean())
    baseline = np.sqrt(np.mean((item_mean[T.col] - T.data) ** 2))
    model = RBM(device="cpu", seed=0, learning_rate=0.1, epochs=20).fit(train)
    pred = model._predict_idx(T.row, T.col)
    rmse = np.sqrt(np.mean((pred - T.data) ** 2))
    assert rmse < baseline - 0.02, (rmse, baseline)


def test_visible_kernel_rejects_non_binary_hidden_states():
    """The Numba visible kernel reads h as bits: probabilities in place of samples are an error."""
    from rbm_cuda.cpu import kernels

    X = random_ratings().tocsr()
    indptr, indices = X.indptr.astype(np.int64), X.indices.astype(np.int32)
    rows = np.arange(X.shape[0], dtype=np.int64)
    group = kernels.group_by_item(indptr, indices, rows, X.shape[1])
    W = np.zeros((X.shape[1], 5, 8), dtype=np.float32)
    bv = np.zeros((X.shape[1], 5), dtype=np.float32)
    out = np.zeros(X.nnz, dtype=np.int32)
    h = np.ones((X.shape[0], 8), dtype=np.float32)
    kernels.sample_visible_softmax(indptr, indices, rows, *group, h, W, bv, 0, 1, 1, out)
    h[5, 3] = 0.5
    with pytest.raises(ValueError, match="binary hidden states"):
        kernels.sample_visible_softmax(indptr, indices, rows, *group, h, W, bv, 0, 1, 1, out)


@pytest.mark.parametrize("env, want", [({}, "PASSIVE"), ({"OMP_WAIT_POLICY": "active"}, "active"),
                                       ({"GOMP_SPINCOUNT": "20000"}, None)])
def test_threads_wait_passively_unless_the_user_chose_a_policy_or_spin_count(env, want):
    """The Numba backend sets libgomp's wait policy before Numba loads libgomp; a policy or a spin
    count the user set wins (passive waiting would override the spin count).  Importing rbm_cuda
    alone leaves the environment as it was."""
    import subprocess
    import sys

    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    code = ("import os, rbm_cuda, rbm_cuda.cpu.kernels; print(os.environ.get('OMP_WAIT_POLICY')); "
            "from rbm_cuda.backend import get_backend; get_backend('cpu'); print(os.environ.get('OMP_WAIT_POLICY'))")
    out = subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == [str(env.get("OMP_WAIT_POLICY")), str(want)]


def test_a_matrix_with_a_repeated_entry_is_refused_not_summed():
    coo = sp.coo_matrix((np.array([2.0, 3.0, 4.0], np.float32), (np.array([0, 0, 1]), np.array([1, 1, 2]))),
                        shape=(2, 3))
    with pytest.raises(ValueError, match=r"entry \(row 0, column 1\) is stored 2 times"):
        RBM(n_hidden=2, epochs=1, device="cpu").fit(coo)

    with pytest.raises(ValueError, match="stored 2 times"):
        RBMRecommender(device="cpu").fit(coo)
    # the same pair twice in one CSR row (not canonical: scipy would sum it) is refused too
    csr = sp.csr_matrix((np.array([2.0, 3.0, 4.0], np.float32), np.array([1, 1, 2]), np.array([0, 2, 3])),
                        shape=(2, 3))
    with pytest.raises(ValueError, match=r"entry \(row 0, column 1\) is stored 2 times"):
        RBM(n_hidden=2, epochs=1, device="cpu").fit(csr)
    # and so is one written into a matrix scipy had already found canonical (its flag is stale)
    ok = sp.csr_matrix((np.array([2.0, 3.0, 4.0], np.float32), np.array([0, 1, 2]), np.array([0, 2, 3])),
                       shape=(2, 3))
    assert ok.has_canonical_format
    ok.indices[1] = 0
    with pytest.raises(ValueError, match=r"entry \(row 0, column 0\) is stored 2 times"):
        RBM(n_hidden=2, epochs=1, device="cpu").fit(ok)


def test_a_canonical_csr_is_copied_as_it_is():
    """A sorted CSR without repeats skips the repeat search; the model keeps its own copy, so
    changing the caller's matrix afterwards changes nothing."""
    X = random_ratings()
    X.sort_indices()
    via_coo = RBM(n_hidden=4, epochs=1, device="cpu", seed=1).fit(X.tocoo())
    m = RBM(n_hidden=4, epochs=1, device="cpu", seed=1).fit(X)
    np.testing.assert_array_equal(m.W_, via_coo.W_)
    before = m.transform()
    X.data[:] = 5.0
    np.testing.assert_array_equal(m.transform(), before)


def test_input_that_cannot_be_the_unit_type_is_refused():
    X = random_ratings()
    neg = X.copy()
    neg.data[0] = -3.0
    with pytest.raises(ValueError, match="rating -3 is negative: bernoulli units"):
        RBM(n_hidden=2, epochs=1, visible="bernoulli", device="cpu").fit(neg)
    cont = X.copy()
    cont.data = np.random.default_rng(0).random(cont.nnz).astype(np.float32) * 5
    with pytest.raises(ValueError, match=r"distinct values .* Softmax units need a rating scale"):
        RBM(n_hidden=2, epochs=1, device="cpu").fit(cont)
    # the same ratings read from a table, whose levels are the distinct values seen
    coo = cont.tocoo()
    table = from_dataframe(pd.DataFrame({"user": coo.row, "item": coo.col, "rating": coo.data}))
    assert len(table.levels) > 50
    for model in (RBM(n_hidden=2, epochs=1, device="cpu"), RBMRecommender(device="cpu")):
        with pytest.raises(ValueError, match=r"distinct values .* more than 50"):
            model.fit(table)


@pytest.mark.parametrize("n", [0, -5, 2.5, "5", float("nan")])
def test_recommend_refuses_a_bad_n(n):
    model = RBM(n_hidden=2, epochs=1, device="cpu").fit(random_ratings())
    for call in (lambda: model.recommend(0, n=n), lambda: model.similar_items(0, n=n),
                 lambda: model.recommend_for({0: 5}, n=n)):
        with pytest.raises(ValueError, match=f"n={n!r} is not allowed"):
            call()


def test_cd_steps_must_be_whole_numbers():
    with pytest.raises(ValueError, match="2.7 is not a whole number"):
        RBM(cd_steps=[(0, 2.7)])
    with pytest.raises(ValueError, match="learning_rate=inf"):
        RBM(learning_rate=float("inf"))


def test_set_params_after_fit_does_not_break_the_saved_file(tmp_path):
    model = RBM(n_hidden=4, epochs=1, device="cpu").fit(random_ratings())
    model.set_params(n_hidden=3)
    back = RBM.load(model.save(tmp_path / "m.npz"))
    assert back.W_.shape[2] == 4 and back.params_.n_hidden == 4
    np.testing.assert_array_equal(back.recommend(0, n=3)[0], model.recommend(0, n=3)[0])


def test_a_model_too_large_for_memory_is_refused_with_the_figure(monkeypatch):
    """A bernoulli model on the CPU needs W, its velocity, and per batch the dense logits and the
    drawn items as CSR: refused one byte below that, trained one byte above it."""
    X = sp.random(50, 400, density=0.05, format="csr", random_state=0, dtype=np.float32)
    X.data[:] = 1.0
    F, B = 8, 10
    need = 400 * F * 4 * 2 + 3 * B * 400 * 4
    real = os.sysconf

    def memory(have):
        monkeypatch.setattr(os, "sysconf", lambda name: {"SC_PAGE_SIZE": 1, "SC_PHYS_PAGES": have}.get(name, real(name)))

    memory(need - 1)
    with pytest.raises(MemoryError, match=r"needs about 0\.0 GB .* use fewer hidden units"):
        RBM(visible="bernoulli", n_hidden=F, batch_size=B, epochs=1, device="cpu").fit(X)
    memory(need + 1)
    assert RBM(visible="bernoulli", n_hidden=F, batch_size=B, epochs=1, device="cpu").fit(X).epochs_done_ == 1
