"""On a real GPU: the CUDA kernels and the CuPy backend against the Numba backend.

Skipped, with rbm_cuda.gpu.REASON, wherever the GPU backend cannot run (no nvcc at build time, no
driver, no device, no CuPy).  A GPU owner runs them with:  pytest -m gpu

  * every kernel comparison of tests/test_emulation.py again, on the device (same inputs, same
    tolerances): this file loads that one as a separate module and points it at the CuPy backend;
  * Philox on the device bit for bit; a CUDA error surfaces as RuntimeError with file and line;
  * end to end: one epoch on the GPU against the Numba epoch, inference on the same parameters,
    model files across backends, and a MovieLens 100K run whose test RMSE matches Numba within 0.005.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib

import numpy as np
import pytest
import scipy.sparse as sp

import rbm_cuda
from rbm_cuda import RBM
from rbm_cuda.cpu.philox import philox_uniforms, philox_words

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not rbm_cuda.gpu.HAS_CUDA, reason=f"no usable GPU: {rbm_cuda.gpu.REASON}"),
]

# Whole-model comparisons.  The GPU draws with its own expf and fused multiply-adds and sums the
# gradients with atomics, so a draw within ~1e-7 of its probability can flip and the chains part a
# little; one flipped hidden unit moves a weight by about lr / batch_size.
EPOCH_MAX_ABS = 5e-3          # largest |W_gpu - W_cpu| after one epoch
EPOCH_FRACTION_CLOSE = 0.999  # fraction of weights within EPOCH_CLOSE_ATOL
EPOCH_CLOSE_ATOL = 1e-5
INFERENCE_RTOL, INFERENCE_ATOL = 1e-5, 1e-5  # same parameters, no sampling
RMSE_TOLERANCE = 0.005


# ---- the kernel comparisons of test_emulation.py, on the device --------------------------------------
def _load_emulation_tests():
    path = pathlib.Path(__file__).with_name("test_emulation.py")
    spec = importlib.util.spec_from_file_location("rbm_cuda_tests_emulation_on_gpu", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class NumpyOnGpu:
    """The CuPy backend behind numpy arrays: uploads the array arguments, runs the kernel on the GPU
    and copies every argument back into its numpy array (so outputs land where the tests look)."""

    def __init__(self):
        import cupy

        from rbm_cuda.cuda.backend import CupyBackend

        self.cupy = cupy
        self.be = CupyBackend(check_bounds=True)

    def __getattr__(self, name):
        fn = getattr(self.be, name)
        cupy = self.cupy

        def call(*args):
            dev = {}
            for a in args:
                if isinstance(a, np.ndarray) and id(a) not in dev:
                    dev[id(a)] = cupy.asarray(a)
            result = fn(*[dev.get(id(a), a) for a in args])
            for a in args:
                if isinstance(a, np.ndarray) and a.flags.writeable:
                    a[...] = cupy.asnumpy(dev[id(a)])
            if isinstance(result, tuple):  # group_by_item
                return tuple(cupy.asnumpy(r) if isinstance(r, cupy.ndarray) else r for r in result)
            return cupy.asnumpy(result) if isinstance(result, cupy.ndarray) else result

        return call


if rbm_cuda.gpu.HAS_CUDA:
    _emu_tests = _load_emulation_tests()
    _emu_tests.KERNEL_BACKEND = NumpyOnGpu
    ratings = _emu_tests.ratings
    emu = _emu_tests.emu
    test_philox_kernel_bit_for_bit = _emu_tests.test_philox_kernel_bit_for_bit
    test_sample_hidden = _emu_tests.test_sample_hidden
    test_sample_hidden_without_draw_writes_probabilities_only = \
        _emu_tests.test_sample_hidden_without_draw_writes_probabilities_only
    test_sample_visible_softmax = _emu_tests.test_sample_visible_softmax
    test_update_softmax = _emu_tests.test_update_softmax
    test_group_by_item = _emu_tests.test_group_by_item
    test_too_many_levels_is_a_clear_error = _emu_tests.test_too_many_levels_is_a_clear_error
    test_sigmoid_bernoulli = _emu_tests.test_sigmoid_bernoulli
    test_sigmoid_bernoulli_draws_what_sample_hidden_draws = _emu_tests.test_sigmoid_bernoulli_draws_what_sample_hidden_draws
    test_scatter_gradients = _emu_tests.test_scatter_gradients
    test_apply_update = _emu_tests.test_apply_update
    test_predict_pairs = _emu_tests.test_predict_pairs
    test_score_items = _emu_tests.test_score_items
    test_free_energy = _emu_tests.test_free_energy
    test_empty_inputs_are_no_ops = _emu_tests.test_empty_inputs_are_no_ops
    synthetic_ml100k = _emu_tests.synthetic_ml100k
    real_u1_base = _emu_tests.real_u1_base


# ---- the device itself ----------------------------------------------------------------------------------
def test_device_and_runtime():
    from rbm_cuda import _cuda

    assert _cuda.device_count() >= 1
    assert _cuda.runtime_version() >= 13000
    assert rbm_cuda.gpu.REASON.startswith(f"{_cuda.device_count()} CUDA device")


def test_auto_picks_the_gpu():
    X = synthetic_ml100k()
    m = RBM(n_hidden=8, epochs=1, device="auto").fit(X)
    assert m.backend_ == "cuda"


def test_philox_on_device_long_stream():
    from rbm_cuda.cuda.backend import CupyBackend

    be = CupyBackend()
    got = be.to_numpy(be.philox_words(2**40 + 3, 9, 2, 1, 12345, 1 << 20))
    np.testing.assert_array_equal(got, philox_words(np.uint64(2**40 + 3), 9, 2, 1, 12345, 1 << 20))
    u = be.to_numpy(be.philox_uniforms(5, 1, 0, 0, 0, 1 << 16))
    np.testing.assert_array_equal(u.view(np.uint32), philox_uniforms(5, 1, 0, 0, 0, 1 << 16).view(np.uint32))


def test_cuda_errors_become_runtime_errors_with_file_and_line():
    import cupy

    from rbm_cuda import _cuda

    out = cupy.empty(4, dtype=np.uint32)
    with pytest.raises(RuntimeError, match=r"CUDA error cudaErrorInvalidDevice .* at .*kernels\.cu:\d+"):
        _cuda.philox_words(0, 0, 0, 0, 0, 4, out.data.ptr, 0, 9999)


def test_backend_rejects_host_arrays():
    from rbm_cuda.cuda.backend import CupyBackend

    be = CupyBackend()
    with pytest.raises(TypeError, match="cupy"):
        be.apply_update(np.zeros(4, np.float32), np.zeros(4, np.float32), np.zeros(4, np.float32), 0.1, 0.9, 0, 1)


# ---- end to end ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("visible", ["softmax", "like", "bernoulli"])
def test_epoch_on_gpu_matches_numba(visible):
    X = synthetic_ml100k()
    kw = dict(n_hidden=100, visible=visible, batch_size=100, epochs=1, seed=11, learning_rate=0.05)
    cpu = RBM(device="cpu", **kw).fit(X)
    gpu = RBM(device="cuda", **kw).fit(X)
    assert gpu.backend_ == "cuda"
    for name in ("W_", "bv_", "bh_"):
        a, b = getattr(gpu, name), getattr(cpu, name)
        diff = np.abs(a.astype(np.float64) - b)
        assert diff.max() <= EPOCH_MAX_ABS, f"{name}: max |diff| {diff.max():.3g}"
        assert (diff <= EPOCH_CLOSE_ATOL + 1e-4 * np.abs(b)).mean() >= EPOCH_FRACTION_CLOSE, name


@pytest.mark.parametrize("visible", ["softmax", "bernoulli"])
def test_inference_and_model_files_across_backends(visible, tmp_path):
    X = synthetic_ml100k()
    cpu = RBM(n_hidden=64, visible=visible, epochs=2, seed=3, device="cpu").fit(X)
    path = cpu.save(tmp_path / "cpu_model.npz")
    gpu = RBM.load(path, device="cuda")
    users, items = np.arange(2, 300), np.arange(2, 300) % 1600
    np.testing.assert_allclose(gpu.predict(users, items), cpu.predict(users, items), INFERENCE_RTOL, INFERENCE_ATOL)
    np.testing.assert_allclose(gpu.score_users([2, 3, 4]), cpu.score_users([2, 3, 4]), INFERENCE_RTOL, INFERENCE_ATOL)
    np.testing.assert_allclose(gpu.free_energy(), cpu.free_energy(), 1e-5, 1e-3)
    np.testing.assert_allclose(gpu.transform(), cpu.transform(), INFERENCE_RTOL, INFERENCE_ATOL)
    assert gpu.backend_ == "cuda"
    # and back: trained on the GPU, saved, loaded on the CPU
    gpu.partial_fit()
    back = RBM.load(gpu.save(tmp_path / "gpu_model.npz"), device="cpu")
    np.testing.assert_array_equal(back.W_, gpu.W_)
    np.testing.assert_allclose(back.predict(users, items), gpu.predict(users, items), INFERENCE_RTOL, INFERENCE_ATOL)


def _movielens_split():
    """(train, test) of MovieLens 100K u1, or a synthetic split of the same shape without the data."""
    root = os.environ.get("RBM_CUDA_DATA", "")
    test_path = os.path.join(root, "ml-100k", "u1.test")
    train = real_u1_base()
    if train is not None and os.path.exists(test_path):
        import pandas as pd

        df = pd.read_csv(test_path, sep="\t", names=["user", "item", "rating", "ts"])
        test = sp.csr_matrix((df.rating.to_numpy(np.float32), (df.user.to_numpy() - 1, df.item.to_numpy() - 1)),
                             shape=train.shape)
        return train, test, "u1"
    X = synthetic_ml100k().tocoo()
    held = np.random.default_rng(0).random(X.nnz) < 0.2
    make = lambda m: sp.csr_matrix((X.data[m], (X.row[m], X.col[m])), shape=X.shape)  # noqa: E731
    return make(~held), make(held), "synthetic"


def test_movielens_rmse_matches_numba():
    train, test, name = _movielens_split()
    kw = dict(n_hidden=100, epochs=20, batch_size=100, learning_rate=0.05, seed=0)
    t = test.tocoo()
    rmse = {}
    for device in ("cpu", "cuda"):
        m = RBM(device=device, **kw).fit(train)
        pred = m._predict_idx(t.row, t.col)
        rmse[device] = float(np.sqrt(np.mean((pred - t.data) ** 2)))
    assert abs(rmse["cuda"] - rmse["cpu"]) <= RMSE_TOLERANCE, f"{name}: test RMSE {rmse}"
