"""The CUDA kernels run on the CPU: rbm_cuda._emu is csrc/kernels.cu compiled by the host compiler
(csrc/cuda_emulation.h turns every launch into a loop over its blocks and threads).  It is built
always, with or without nvcc, so the kernel source is tested in every CI run (tests/test_emulation.py).

:class:`EmulatedBackend` has the backend interface of rbm_cuda.cpu.backend.NumbaBackend (numpy
arrays) and calls the emulated kernels through the same argument checks as the CuPy backend, so an
``RBM`` can be trained through the kernel source without a GPU.  It is slow (one host thread runs
every CUDA thread in turn): meant for tests on small data, not for use.
"""

from __future__ import annotations

import contextlib

import numpy as np

from .cuda.kernels import PointerKernels

try:
    from . import _emu
except ImportError as err:  # a source tree that was never built
    _emu = None
    IMPORT_ERROR = str(err)
else:
    IMPORT_ERROR = ""

AVAILABLE = _emu is not None


def module():
    """rbm_cuda._emu, or ImportError saying the package was not built."""
    if _emu is None:
        raise ImportError(f"rbm_cuda._emu is not available ({IMPORT_ERROR}): build the package (pip install .)")
    return _emu


class EmulatedBackend(PointerKernels):
    """Backend whose kernels are the CUDA kernels executed on the host (numpy arrays in, numpy out).

    check_bounds (default on) checks every index before a launch: the emulated kernels, like the
    real ones, read whatever memory an out-of-range index points at.
    """

    name = "emulation"
    xp = np

    def __init__(self, check_bounds=True):
        super().__init__(module(), np, check_bounds)

    @staticmethod
    def asarray(a, dtype=None):
        return np.ascontiguousarray(a, dtype=dtype)

    @staticmethod
    def to_numpy(a):
        return np.asarray(a)

    def _pointer(self, a):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"the emulation backend needs numpy arrays, got {type(a).__module__}.{type(a).__name__}")
        return a.ctypes.data


@contextlib.contextmanager
def schedule(order, seed=0):
    """Run emulated launches visiting blocks and threads in `order`: 'forward', 'reverse', or
    'shuffled' (a seeded permutation per launch and per block, reproducible from `seed`)."""
    m = module()
    old = m.get_schedule()
    m.set_schedule(order, seed)
    try:
        yield
    finally:
        m.set_schedule(*old)


def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """csrc/philox.cuh's philox4x32_10 called on the host: four uint32 words."""
    return module().philox4x32_10(c0, c1, c2, c3, k0, k1)
