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

from .cuda.kernels import CompiledKernels

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


class EmulatedBackend(CompiledKernels):
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
    def _to_numpy(a):
        return np.asarray(a)


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


def _plain(x):
    """x with every counted array in it (also inside lists and tuples) as a plain numpy view."""
    if isinstance(x, _CountedArray):
        return x.view(np.ndarray)
    if isinstance(x, (list, tuple)):
        return type(x)(_plain(v) for v in x)
    return x


class _CountedArray(np.ndarray):
    """A numpy array whose operations that would be a CuPy launch on a GPU are counted by
    CountingBackend: ufunc calls (arithmetic, matmul, reductions such as .sum), NumPy functions
    called on it (np.searchsorted, ...), assignments into it and gathers by an index array.  Plain
    slicing makes views and is not counted."""

    counter = None  # the CountingBackend counting

    @staticmethod
    def _count():
        if _CountedArray.counter is not None:
            _CountedArray.counter.array_ops += 1

    @staticmethod
    def _wrap(out):
        return out.view(_CountedArray) if isinstance(out, np.ndarray) else out

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        self._count()
        if "out" in kwargs:
            kwargs["out"] = tuple(_plain(x) for x in kwargs["out"])
        return self._wrap(getattr(ufunc, method)(*map(_plain, inputs), **kwargs))

    def __array_function__(self, func, types, args, kwargs):
        self._count()  # one operation, whatever it runs inside: the arguments go in as plain arrays
        args = tuple(_plain(a) for a in args)
        kwargs = {k: _plain(v) for k, v in kwargs.items()}
        return self._wrap(func(*args, **kwargs))

    def __getitem__(self, key):
        keys = key if isinstance(key, tuple) else (key,)
        if any(isinstance(k, (np.ndarray, list)) for k in keys):
            self._count()
        return super().__getitem__(key)

    def __setitem__(self, key, value):
        self._count()
        super().__setitem__(key, value)


class _CountedNumpy:
    """numpy, as CountingBackend's ``xp``: arrays it creates are counted arrays, and creating one with
    values (zeros, arange, ...) is an operation, as it is a launch on a GPU (empty is not)."""

    def __getattr__(self, name):
        attr = getattr(np, name)
        if name in ("empty", "empty_like"):
            return lambda *a, **k: attr(*a, **k).view(_CountedArray)
        if name in ("zeros", "zeros_like", "ones", "ones_like", "full", "full_like", "arange"):
            def create(*a, **k):
                _CountedArray._count()
                return attr(*a, **k).view(_CountedArray)
            return create
        if name == "argsort":  # NumPy's default sort is not stable; CuPy's (and the caller's need) is
            return lambda a, axis=-1, kind="stable": np.argsort(a, axis=axis, kind=kind)
        return attr


class CountingBackend(EmulatedBackend):
    """The emulation backend, counting per training batch what the CUDA backend would do on a GPU:
    kernel launches (ours, counted in the compiled module, plus one per array operation, which CuPy
    would launch) and device values read on the host (each a synchronisation).

    After an epoch, ``per_batch`` holds one dict per batch: {"launches", "array_ops", "host_reads"}
    (launches counts our kernels; array_ops the CuPy operations).  For tests and bench/gpu_launches.py."""

    name = "emulation (counting)"

    def __init__(self):
        super().__init__(check_bounds=False)  # the bounds checks read device values: a debugging aid only
        self.xp = _CountedNumpy()
        self.array_ops = 0
        self.per_batch = []
        _CountedArray.counter = self

    def asarray(self, a, dtype=None):
        return np.ascontiguousarray(a, dtype=dtype).view(_CountedArray)

    def _counts(self):
        return {"launches": self.launch_count(), "array_ops": self.array_ops, "host_reads": self.host_reads}

    def epoch_batches(self, *args, **kwargs):
        self.per_batch = []
        batches = super().epoch_batches(*args, **kwargs)
        before = None
        for rows, group in batches:
            now = self._counts()
            if before is not None:
                self.per_batch.append({k: now[k] - before[k] for k in now})
            before = now
            yield rows, group
        if before is not None:
            now = self._counts()
            self.per_batch.append({k: now[k] - before[k] for k in now})
