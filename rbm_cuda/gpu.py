"""Whether the GPU backend can run here, decided in one place.

``HAS_CUDA`` is True only when the package was built with nvcc, a CUDA driver and at least one
device are present, and CuPy imports.  ``REASON`` says in plain words why not (or what was found).
"""

from __future__ import annotations

try:
    from ._build_info import CUDA_BUILD
except ImportError:  # running from a source tree that was never built
    CUDA_BUILD = "built without CUDA: the package was not built (pip install .)"


def _detect() -> tuple[bool, str, object]:
    try:
        from . import _cuda
    except ImportError:
        return False, CUDA_BUILD, None
    try:
        n = _cuda.device_count()
    except RuntimeError as err:
        if _cuda.driver_version() == 0:
            return False, "no CUDA driver: the NVIDIA driver is not installed or not loaded", _cuda
        return False, f"the CUDA driver cannot be used: {err}", _cuda
    if n == 0:
        return False, "no CUDA device: the driver found no GPU", _cuda
    try:
        import cupy  # noqa: F401
    except ImportError:
        return False, "CuPy is not installed: pip install 'rbm_cuda[cuda]'", _cuda
    version = _cuda.runtime_version()
    return True, f"{n} CUDA device(s), runtime {version // 1000}.{version % 1000 // 10}", _cuda


HAS_CUDA, REASON, _module = _detect()


def cuda_module():
    """The compiled CUDA extension; raises RuntimeError saying why when the GPU cannot be used."""
    if not HAS_CUDA:
        raise RuntimeError(f"device='cuda' was asked for, but the GPU backend is unavailable: {REASON}")
    return _module
