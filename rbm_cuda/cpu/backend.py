"""The Numba backend: NumPy arrays in host memory, kernels from rbm_cuda/cpu/kernels.py."""

import os

import numpy as np

from . import kernels


def passive_openmp_wait():
    """Ask libgomp (Numba's default threading layer here) to let idle threads sleep, unless the user
    chose a wait policy or a spin count.  The kernels run several short parallel regions per batch;
    threads that spin between them take the cores the working threads need on a shared machine.
    libgomp reads the variable when Numba first loads it, at the first parallel kernel call, so it is
    set when the first Numba backend is made, not when rbm_cuda is imported (docs/design.md)."""
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


class NumbaBackend:
    """Runs every kernel on the CPU with Numba; the reference the CUDA backend is tested against."""

    def __init__(self):
        passive_openmp_wait()

    name = "numba"
    xp = np

    @staticmethod
    def asarray(a, dtype=None):
        return np.ascontiguousarray(a, dtype=dtype)

    @staticmethod
    def to_numpy(a):
        return np.asarray(a)

    host_reads = 0  # the arrays live on the host: nothing is ever transferred
    # update_bernoulli sums each item's gradient in a row per task: no W-sized gradient array
    gradient_scratch = False

    @staticmethod
    def launch_count():
        return 0  # no device: Numba's kernels are plain calls

    @staticmethod
    def reserve_hidden(n_rows, n_hidden):
        """Nothing: sample_hidden needs no scratch here (the compiled backends allocate theirs)."""

    @staticmethod
    def epoch_batches(indptr, indices, order, batch_size, n_items, host_indptr, grouped=True):
        """The epoch's batches as (rows, group) pairs, group_by_item's group computed as each batch
        is reached (None when not `grouped`): the arrays of the compiled backends' epoch_batches."""
        order = np.asarray(order, dtype=np.int64)
        for a in range(0, len(order), batch_size):
            rows = order[a:a + batch_size]
            yield rows, kernels.group_by_item(indptr, indices, rows, n_items) if grouped else None


for _name in kernels.KERNELS:  # the kernels, from their one list
    setattr(NumbaBackend, _name, staticmethod(getattr(kernels, _name)))
