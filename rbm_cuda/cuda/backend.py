"""The CuPy backend: parameters and ratings live in GPU memory (uploaded once by RBM._device), the
kernels of csrc/kernels.cu run through rbm_cuda._cuda, dense products go to cuBLAS through CuPy.

Same interface as rbm_cuda.cpu.backend.NumbaBackend: ``name``, ``xp``, ``asarray``, ``to_numpy``
and the kernels with the Numba kernels' arguments (rbm_cuda/cpu/kernels.py).  Kernels are queued on
CuPy's current stream, on CuPy's current device.  scatter_gradients adds with float atomics, so the
last bits of a gradient can differ from run to run (the Numba twin is deterministic).
"""

from __future__ import annotations

import os

from .. import gpu
from .kernels import CompiledKernels


class CupyBackend(CompiledKernels):
    name = "cuda"

    def __init__(self, check_bounds=None):
        module = gpu.cuda_module()  # RuntimeError saying why, when the GPU cannot be used
        import cupy

        if check_bounds is None:
            check_bounds = os.environ.get("RBM_CUDA_CHECK_BOUNDS", "0") not in ("", "0")
        super().__init__(module, cupy, check_bounds)
        self._cupy = cupy

    def asarray(self, a, dtype=None):
        return self._cupy.ascontiguousarray(self._cupy.asarray(a, dtype=dtype))

    def _to_numpy(self, a):
        return self._cupy.asnumpy(a)

    def _stream(self):
        return self._cupy.cuda.get_current_stream().ptr

    def _device(self):
        return self._cupy.cuda.runtime.getDevice()
