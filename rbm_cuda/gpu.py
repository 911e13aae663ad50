"""Whether the GPU backend can run here, decided in one place.

``HAS_CUDA`` is True only when the package was built with nvcc, a CUDA driver and at least one
device are present, and CuPy imports.  ``REASON`` says in plain words why not (or what was found).
"""

from __future__ import annotations

try:
    from ._build_info import CUDA_BUILD
except ImportError:  # running from a source tree that was never built
    CUDA_BUILD = "built without CUDA: the package was not built (pip install .)"


# The oldest Linux driver branch of each CUDA major version: CUDA 13.x needs r580 or newer.
MIN_DRIVER_BRANCH = {12: 525, 13: 580}


def _cuda_version(v: int) -> str:
    return f"{v // 1000}.{v % 1000 // 10}"


def driver_problem(driver_version: int, runtime_version: int, error: str) -> str:
    """Why the driver cannot run this build, in words (versions as CUDA reports them: 13000 = 13.0)."""
    if driver_version == 0:
        return "no CUDA driver: the NVIDIA driver is not installed or not loaded"
    if driver_version // 1000 < runtime_version // 1000:  # minor versions are compatible within a major
        branch = MIN_DRIVER_BRANCH.get(runtime_version // 1000)
        need = f"an r{branch} or newer NVIDIA driver" if branch else "a newer NVIDIA driver"
        return (f"the NVIDIA driver is too old: it supports CUDA up to {_cuda_version(driver_version)}, and this "
                f"build of rbm_cuda uses the CUDA {_cuda_version(runtime_version)} runtime, which needs {need}; "
                "update the driver, or build rbm_cuda with an older CUDA toolkit")
    return f"the CUDA driver cannot be used: {error}"


def _detect() -> tuple[bool, str, object]:
    try:
        from . import _cuda
    except ImportError:
        return False, CUDA_BUILD, None
    try:
        n = _cuda.device_count()
    except RuntimeError as err:
        return False, driver_problem(_cuda.driver_version(), _cuda.runtime_version(), str(err)), _cuda
    if n == 0:
        return False, "no CUDA device: the driver found no GPU", _cuda
    try:
        import cupy  # noqa: F401
    except ImportError:
        return False, "CuPy is not installed: pip install 'rbm_cuda[cuda]'", _cuda
    return True, f"{n} CUDA device(s), runtime {_cuda_version(_cuda.runtime_version())}", _cuda


HAS_CUDA, REASON, _module = _detect()


def cuda_module():
    """The compiled CUDA extension; raises RuntimeError saying why when the GPU cannot be used."""
    if not HAS_CUDA:
        raise RuntimeError(f"device='cuda' was asked for, but the GPU backend is unavailable: {REASON}")
    return _module
