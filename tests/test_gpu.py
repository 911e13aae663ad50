"""On a real GPU: the CUDA kernels and the CuPy backend against the Numba backend.

Skipped, with rbm_cuda.gpu.REASON, wherever the GPU backend cannot run (no nvcc at build time, no
driver, no device, no CuPy).  A GPU owner runs them with:  pytest -m gpu

  * every kernel comparison of tests/test_emulation.py again, on the device (same inputs, same
    tolerances): this file loads that one as a separate module and points it at the CuPy backend;
  * Philox on the device bit for bit; a CUDA error surfaces as RuntimeError with file and line;
  * a MovieLens 100K run whose test RMSE matches Numba within 0.005.  The behaviour suite of
    tests/test_backends.py (training, inference, model files, recommend, fold-in, the recommender,
    one epoch against Numba) runs on the GPU too.
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

# A whole training run: the GPU draws with its own expf and fused multiply-adds, so a draw within
# ~1e-7 of its probability can flip and the chains part a little.
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
    test_sample_hidden_sums_a_long_row_in_parts = _emu_tests.test_sample_hidden_sums_a_long_row_in_parts
    test_sample_visible_softmax = _emu_tests.test_sample_visible_softmax
    test_update_softmax = _emu_tests.test_update_softmax
    test_catch_up = _emu_tests.test_catch_up
    test_group_by_item = _emu_tests.test_group_by_item
    test_too_many_levels_is_a_clear_error = _emu_tests.test_too_many_levels_is_a_clear_error
    test_sigmoid_bernoulli = _emu_tests.test_sigmoid_bernoulli
    test_compact_rows = _emu_tests.test_compact_rows
    test_compact_rows_refuses_a_short_buffer = _emu_tests.test_compact_rows_refuses_a_short_buffer
    test_sample_bernoulli_rows = _emu_tests.test_sample_bernoulli_rows
    test_sample_bernoulli_rows_refuses_a_short_buffer_or_bias = (
        _emu_tests.test_sample_bernoulli_rows_refuses_a_short_buffer_or_bias)
    test_scatter_gradients = _emu_tests.test_scatter_gradients
    test_apply_update = _emu_tests.test_apply_update
    test_update_bernoulli = _emu_tests.test_update_bernoulli
    test_update_hidden_bias = _emu_tests.test_update_hidden_bias
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
        _cuda.philox_words(0, 0, 0, 0, 0, out, 0, 9999)
    # the failed cudaSetDevice left its error as the thread's last error: the next launch must not report it
    _cuda.philox_words(5, 1, 0, 0, 0, out, 0, cupy.cuda.runtime.getDevice())
    from rbm_cuda.cpu.philox import philox_words

    np.testing.assert_array_equal(out.get(), philox_words(5, 1, 0, 0, 0, 4))


@pytest.mark.parametrize("B", [1, 100, 943])
def test_epoch_batches_on_the_device(B):
    """The CuPy grouping of a whole epoch (CuPy's own sort and searches) is each batch's
    group_by_item, bit for bit, and reads nothing back from the device."""
    import cupy

    from rbm_cuda.cpu.kernels import group_by_item
    from rbm_cuda.cuda.backend import CupyBackend

    X = synthetic_ml100k()
    ip, idx = X.indptr.astype(np.int64), X.indices.astype(np.int32)
    order = np.random.default_rng(B).permutation(np.flatnonzero(np.diff(ip)))
    be = CupyBackend()
    batches = list(be.epoch_batches(cupy.asarray(ip), cupy.asarray(idx), order, B, X.shape[1], ip))
    assert be.host_reads == 0 and len(batches) == -(-len(order) // B)
    for k, (rows, group) in enumerate(batches):
        want = group_by_item(ip, idx, order[k * B:(k + 1) * B], X.shape[1])
        for name, got, w in zip(("start", "slot_b", "slot_p", "delta"), group, want):
            assert got.dtype == w.dtype, name
            np.testing.assert_array_equal(cupy.asnumpy(got), w, err_msg=f"batch {k}: {name}")


def test_backend_rejects_host_arrays():
    from rbm_cuda.cuda.backend import CupyBackend

    be = CupyBackend()
    with pytest.raises(TypeError, match="cupy"):
        be.apply_update(np.zeros(4, np.float32), np.zeros(4, np.float32), np.zeros(4, np.float32), 0.1, 0.9, 0, 1)


# ---- end to end ----------------------------------------------------------------------------------------------
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
        pred = m.predict(m.user_ids_[t.row], m.item_ids_[t.col])
        rmse[device] = float(np.sqrt(np.mean((pred - t.data) ** 2)))
    assert abs(rmse["cuda"] - rmse["cpu"]) <= RMSE_TOLERANCE, f"{name}: test RMSE {rmse}"
