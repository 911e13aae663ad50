"""The Numba backend: NumPy arrays in host memory, kernels from rbm_cuda/cpu/kernels.py."""

import numpy as np

from . import kernels


class NumbaBackend:
    """Runs every kernel on the CPU with Numba; the reference the CUDA backend is tested against."""

    name = "numba"
    xp = np

    group_by_item = staticmethod(kernels.group_by_item)
    sample_hidden = staticmethod(kernels.sample_hidden)
    sample_visible_softmax = staticmethod(kernels.sample_visible_softmax)
    sigmoid_bernoulli = staticmethod(kernels.sigmoid_bernoulli)
    scatter_gradients = staticmethod(kernels.scatter_gradients)
    apply_update = staticmethod(kernels.apply_update)
    update_softmax = staticmethod(kernels.update_softmax)
    predict_pairs = staticmethod(kernels.predict_pairs)
    score_items = staticmethod(kernels.score_items)
    free_energy = staticmethod(kernels.free_energy)

    @staticmethod
    def asarray(a, dtype=None):
        return np.ascontiguousarray(a, dtype=dtype)

    @staticmethod
    def to_numpy(a):
        return np.asarray(a)
