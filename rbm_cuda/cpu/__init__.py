"""The Numba CPU backend: kernels.py (one function per CUDA kernel), and simd.py and philox.py, the
LLVM IR blocks the kernels inline."""

import glob
import hashlib
import os

SOURCES = ("kernels.py", "simd.py", "philox.py")


def drop_stale_cache(src_dir, cache_dir) -> bool:
    """Numba's on-disk cache keys each function by its own file's modification time, but the kernels
    inline IR from simd.py and philox.py: after any of the three changes, the cached machine code of
    all three is removed, so nothing stale runs.  The key is a hash of their sources, kept in
    cache_dir.  Returns True when cache files were removed (best effort: an unwritable cache folder
    is left as it is)."""
    digest = hashlib.sha256()
    for name in SOURCES:
        try:
            with open(os.path.join(src_dir, name), "rb") as f:
                digest.update(f.read())
        except OSError:
            return False
    key = digest.hexdigest()
    stamp = os.path.join(cache_dir, "rbm_cuda_sources.sha256")
    try:
        with open(stamp) as f:
            if f.read().strip() == key:
                return False
    except OSError:
        pass
    removed = False
    for name in SOURCES:
        stem = os.path.splitext(name)[0]
        for path in glob.glob(os.path.join(cache_dir, f"{stem}.*.nbi")) + glob.glob(os.path.join(cache_dir, f"{stem}.*.nbc")):
            try:
                os.unlink(path)
                removed = True
            except OSError:
                pass
    try:
        os.makedirs(cache_dir, exist_ok=True)
        with open(stamp, "w") as f:
            f.write(key + "\n")
    except OSError:
        pass
    return removed


def numba_cache_dirs(src_dir) -> set:
    """The folders where Numba caches the functions of SOURCES, found by Numba's own locators (the
    in-tree __pycache__, $NUMBA_CACHE_DIR, the user-wide cache, ...), as it will find them."""
    from numba.core.caching import FunctionCache

    dirs = set()
    for name in SOURCES:
        namespace = {}
        # a function whose code claims to live in the source file: its cache goes where theirs does
        exec(compile("def f():\n    pass\n", os.path.join(src_dir, name), "exec"), namespace)
        try:
            dirs.add(FunctionCache(namespace["f"]).cache_path)
        except RuntimeError:  # no usable cache location: Numba will not cache either
            pass
    return dirs


_here = os.path.dirname(os.path.abspath(__file__))
for _cache in numba_cache_dirs(_here):
    drop_stale_cache(_here, _cache)
