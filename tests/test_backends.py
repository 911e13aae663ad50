"""One suite of behaviour tests, run on every backend that is present: numba (always), emulation (the
CUDA kernel source compiled for the CPU, in every built package) and cuda (a real GPU only).

Each test builds its models with the `device` fixture, so the same assertions hold for every
backend; the epoch and inference comparisons against numba are part of the suite.  Kernel-level
comparisons stay in tests/test_emulation.py (and run on the device from tests/test_gpu.py)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import rbm_cuda
from rbm_cuda import RBM, RBMRecommender
from rbm_cuda import model as model_module

# (max |difference| of weights after one epoch against numba, rtol / atol of inference on the same
# parameters).  The emulation runs the kernel source with the host's arithmetic; the GPU draws with
# its own expf and fused multiply-adds, so a draw within ~1e-7 of its probability can flip.
EPOCH_MAX_ABS = {"emulation": 1e-4, "cuda": 5e-3}
INFERENCE_TOL = {"numba": (0, 0), "emulation": (1e-5, 1e-5), "cuda": (1e-5, 1e-5)}


def _backends():
    from rbm_cuda import emulation

    out = [pytest.param("numba")]
    out.append(pytest.param("emulation", marks=[pytest.mark.emulation, pytest.mark.skipif(
        not emulation.AVAILABLE, reason=f"rbm_cuda._emu is not built: {emulation.IMPORT_ERROR}")]))
    out.append(pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
        not rbm_cuda.gpu.HAS_CUDA, reason=f"no usable GPU: {rbm_cuda.gpu.REASON}")]))
    return out


@pytest.fixture(params=_backends())
def backend(request, monkeypatch):
    """The backend's name; models made with device=DEVICE[name] run on it (the emulated kernels
    stand behind device="cuda" where there is no GPU)."""
    if request.param == "emulation":
        from rbm_cuda.emulation import EmulatedBackend

        real = model_module.get_backend
        monkeypatch.setattr(model_module, "get_backend",
                            lambda device: EmulatedBackend() if device == "cuda" else real(device))
    return request.param


def device_of(backend):
    return "cpu" if backend == "numba" else "cuda"


def ratings(n_users=70, n_items=40, density=0.35, seed=0):
    """Ratings 1..5 with user and item effects; user 0 rates nothing, every item is rated."""
    rng = np.random.default_rng(seed)
    r = np.clip(np.rint(3 + rng.normal(0, 0.8, (n_users, 1)) + np.linspace(1, -1, n_items)[None, :]
                        + rng.normal(0, 0.5, (n_users, n_items))), 1, 5)
    mask = rng.random((n_users, n_items)) < density
    mask[0] = False
    mask[1 + np.arange(n_items) % (n_users - 1), np.arange(n_items)] = True
    return sp.csr_matrix(np.where(mask, r, 0).astype(np.float32))


SMALL = dict(n_hidden=16, batch_size=16, seed=5)


@pytest.mark.parametrize("visible", ["softmax", "like", "bernoulli"])
def test_training_fits_the_training_ratings(backend, visible):
    X = ratings()
    untrained = RBM(device=device_of(backend), visible=visible, epochs=0, **SMALL).fit(X)
    trained = RBM(device=device_of(backend), visible=visible, epochs=20, learning_rate=0.3, **SMALL).fit(X)
    assert trained.backend_ == backend
    coo = X.tocoo()
    target = (coo.data >= 3).astype(float) if visible == "like" else coo.data

    def rmse(m):
        return np.sqrt(np.mean((m.predict(coo.row, coo.col) - target) ** 2))

    assert rmse(trained) < rmse(untrained) - 0.02, (rmse(trained), rmse(untrained))


@pytest.mark.parametrize("visible, seed", [("softmax", 11), ("like", 11), ("bernoulli", 11),
                                           ("softmax", 2**64 - 11), ("bernoulli", 2**63)])
def test_one_epoch_matches_numba(backend, visible, seed):
    """Seeds of 2**63 and more reach the kernels whole (Numba's integer arguments are signed)."""
    if backend == "numba":
        pytest.skip("numba is the reference")
    X = ratings(943, 1682, density=0.05)  # the MovieLens 100K shape: many items per batch, long rows
    kw = dict(visible=visible, epochs=1, learning_rate=0.05, n_hidden=100, batch_size=100, seed=seed)
    ref = RBM(device="cpu", **kw).fit(X)
    got = RBM(device=device_of(backend), **kw).fit(X)
    max_abs = EPOCH_MAX_ABS[backend]
    start = RBM(device="cpu", **dict(kw, epochs=0)).fit(X)
    assert np.abs(ref.W_ - start.W_).max() > 1e-3, "the epoch should move the weights"
    for name in ("W_", "bv_", "bh_"):
        diff = np.abs(getattr(got, name).astype(np.float64) - getattr(ref, name))
        assert diff.max() <= max_abs, f"{name}: max |diff| {diff.max():.3g}"


def test_inference_and_model_files_across_backends(backend, tmp_path):
    X = ratings()
    ref = RBM(device="cpu", epochs=3, **SMALL).fit(X)
    got = RBM.load(ref.save(tmp_path / "m.npz"), device=device_of(backend))
    assert got.backend_ == backend
    rtol, atol = INFERENCE_TOL[backend]
    users, items = np.arange(1, 60), np.arange(1, 60) % 40
    np.testing.assert_allclose(got.predict(users, items), ref.predict(users, items), rtol, atol)
    np.testing.assert_allclose(got.predict_proba(users, items), ref.predict_proba(users, items), rtol, atol)
    np.testing.assert_allclose(got.transform(), ref.transform(), rtol, atol)
    np.testing.assert_allclose(got.free_energy(), ref.free_energy(), 1e-5, 1e-3)
    # and back: trained further on this backend, saved, loaded on the CPU
    got.partial_fit()
    back = RBM.load(got.save(tmp_path / "again.npz"), device="cpu")
    np.testing.assert_array_equal(back.W_, got.W_)


def test_recommend_ranks_unseen_items_best_first(backend):
    X = ratings()
    m = RBM(device=device_of(backend), epochs=3, **SMALL).fit(X)
    ids, scores = m.recommend(5, n=10)
    assert not set(ids) & set(X[5].indices) and np.all(np.diff(scores) <= 0)
    np.testing.assert_allclose(scores, m.score_users([5])[0][ids], rtol=1e-6)
    only = m.recommend(5, n=10, items=[0, 1, 2, 39])[0]
    assert set(only) <= {0, 1, 2, 39}
    p = m.predict_proba([5, 6], [0, 1])
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(p @ m.levels_, m.predict([5, 6], [0, 1]), rtol=1e-5)


def test_fold_in_of_a_training_row_is_that_user(backend):
    X = ratings()
    m = RBM(device=device_of(backend), epochs=3, **SMALL).fit(X)
    for u in (3, 9):
        want = m.recommend(u, n=8)
        got = m.recommend_for(X[u], n=8)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_allclose(got[1], want[1], rtol=1e-6)


def test_the_recommender_on_every_backend(backend, tmp_path):
    X = ratings()
    p = dict(n_hidden=8, epochs=3, batch_size=16)
    rec = RBMRecommender(item_params=p, user_params=p, ranker_params=p, device=device_of(backend)).fit(X)
    assert {m.backend_ for m in rec.parts_.values()} == {backend}
    ids, scores = rec.recommend([3, 9], n=5)
    assert ids.shape == (2, 5) and np.all(np.diff(scores, axis=1) <= 0)
    history = dict(zip(X[3].indices.tolist(), X[3].data.tolist()))
    np.testing.assert_array_equal(rec.recommend(histories=history, n=5)[0], ids[0])
    back = RBMRecommender.load(rec.save(tmp_path / "rec.npz"), device=device_of(backend))
    np.testing.assert_allclose(back.predict([3, 9], [0, 1]), rec.predict([3, 9], [0, 1]), rtol=1e-6)
