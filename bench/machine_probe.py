"""Why the ratios to the peers swing from run to run: which of this machine's resources slow down
in its slow stretches, and how much each implementation loses with them.

    PYTHONPATH=. python bench/machine_probe.py --seconds 180      # ml-1m shape, CD-1, batch 1000

One process runs, over and over, one rbm_cuda (numba) training epoch, one scikit-learn
BernoulliRBM epoch on CSR input (when scikit-learn imports), a numba epoch right after it (while
OpenBLAS's idle threads still spin: see BLAS_SPIN_SECONDS in bench/throughput.py), a pause, and
five short probes, each on every Numba thread at once (two here):
  scalar          a chain of dependent 64-bit multiply, add, xor-shift steps (latency-bound: the
                  core's clock)
  vector          the visible kernel's logits (simd.tile_logits, K = 5, F = 100) on one 16-lane
                  tile per thread in L1, as bench/kernel_micro.py tile (vector throughput)
  vector, one thread   the same on one thread while the others idle
  chase 512 KiB   a random pointer chase per thread through 512 KiB (mostly L2 hits)
  chase 8 MiB     the same through 8 MiB (L3 and the TLB)
  DRAM            a sum over 256 MiB (memory bandwidth)
The cycles are cut into windows of --window cycles, and each one's median taken.  The table gives,
for each, its median over the third of the windows where the numba epoch ran fastest, over the
third where it ran slowest, and the ratio (> 1: slower when numba is slow).  A cycle sees the same
machine within a second or so, so the ratios are comparable with each other.  The last row,
"vector: all threads / one", is each window's ratio of the two vector probes: near 1 when every
thread has a core's vector units to itself, near the number of threads when they share one core's
(the vCPUs of a virtual machine can be hardware threads of one core, whatever lscpu reports).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from numba import get_num_threads, njit, prange

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from rbm_cuda.cpu.kernels import _level_logits  # noqa: E402
from throughput import BLAS_SPIN_SECONDS, case_rbm_cuda, case_sklearn, load_data  # noqa: E402


@njit(cache=True)
def _mix(x, n):
    # multiply, add and xor-shift: no closed form for LLVM to skip the chain with
    for _ in range(n):
        x = (x * np.uint64(6364136223846793005) + np.uint64(1442695040888963407)) ^ (x >> np.uint64(29))
    return x


@njit(parallel=True, cache=True)
def scalar_chain(seed, n, out):
    for t in prange(out.shape[0]):
        out[t] = _mix(seed[t], n)


@njit(parallel=True, cache=True)
def vector_l1(Wi, hw, z, reps):
    for t in prange(hw.shape[0]):
        for _ in range(reps):
            _level_logits(Wi, hw[t], 5, 16, z[t])


@njit(cache=True)
def _walk(row, n):
    # Its own function, like _mix: written inside the prange body, the loop's result did not depend
    # on n (the parfor pass did not keep the loop-carried chain).
    j = 0
    for _ in range(n):
        j = row[j]
    return j


@njit(parallel=True, cache=True)
def chase(nxt, n, out):
    for t in prange(nxt.shape[0]):
        out[t] = _walk(nxt[t], n)


@njit(parallel=True, cache=True)
def stream_sum(a):
    s = 0.0
    for i in prange(a.shape[0]):
        s += a[i]
    return s


def chains(rng, nbytes, threads):
    """One random cyclic permutation per thread, nbytes each."""
    n = nbytes // 8
    out = np.empty((threads, n), np.int64)
    for t in range(threads):
        perm = rng.permutation(n)
        out[t, perm] = np.roll(perm, -1)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=180.0)
    ap.add_argument("--window", type=int, default=8, help="cycles per window (default 8)")
    ap.add_argument("--dataset", default="ml-1m", choices=["ml-100k", "ml-1m"])
    a = ap.parse_args()
    if a.window < 1:
        ap.error(f"--window must be at least 1 cycle, got {a.window}")
    if a.seconds <= 0:
        ap.error(f"--seconds must be positive, got {a.seconds}")

    X = load_data(a.dataset)
    numba_epoch = case_rbm_cuda(X, "cpu", 1, 1000)[0]
    work = {"numba epoch": numba_epoch}
    try:
        work["sklearn-csr epoch"] = case_sklearn(X, False, 1000)[0]
        work["numba epoch right after it"] = numba_epoch
    except ImportError:
        print("scikit-learn is not installed: its epoch is left out")
    rng = np.random.default_rng(0)
    threads = get_num_threads()  # one probe per Numba thread, all at once
    seeds = np.arange(1, threads + 1, dtype=np.uint64)
    out_u = np.zeros(threads, np.uint64)
    out_i = np.zeros(threads, np.int64)
    Wi = rng.standard_normal((5, 100)).astype(np.float32)
    hw = rng.integers(0, 2**32, (threads, 4, 16), dtype=np.uint64).astype(np.uint32)
    z = np.zeros((threads, 5, 16), np.float32)
    l2, l3 = chains(rng, 512 << 10, threads), chains(rng, 8 << 20, threads)
    big = np.ones(64 << 20, np.float32)
    work.update({
        "scalar": lambda: scalar_chain(seeds, 2_000_000, out_u),
        "vector": lambda: vector_l1(Wi, hw, z, 10_000),
        "vector, one thread": lambda: vector_l1(Wi, hw[:1], z, 10_000),
        "chase 512 KiB": lambda: chase(l2, 200_000, out_i),
        "chase 8 MiB": lambda: chase(l3, 20_000, out_i),
        "DRAM": lambda: stream_sum(big),
    })
    for fn in work.values():  # warm-up: compilation, first-touch of the arrays
        fn()
        fn()
    times = {name: [] for name in work}
    end = time.time() + a.seconds
    while time.time() < end:
        for name, fn in work.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
            if name == "numba epoch right after it":  # OpenBLAS's threads may still spin: let them sleep
                time.sleep(BLAS_SPIN_SECONDS)
    n_win = len(times["vector"]) // a.window
    if n_win < 3:
        raise SystemExit(f"only {len(times['vector'])} cycles in {a.seconds} s: give more --seconds")
    med = {name: np.array([np.median(v[w * a.window:(w + 1) * a.window]) for w in range(n_win)])
           for name, v in times.items()}
    order = np.argsort(med["numba epoch"])
    third = max(1, n_win // 3)
    fast, slow = order[:third], order[-third:]
    print(f"# {a.dataset}, {len(times['vector'])} cycles in {n_win} windows of {a.window}; "
          f"load average {os.getloadavg()[0]:.2f}")
    print("| work | fast third, ms | slow third, ms | slow / fast |")
    print("|---|---|---|---|")
    for name, m in med.items():
        f, s = np.median(m[fast]), np.median(m[slow])
        print(f"| {name} | {f * 1e3:.2f} | {s * 1e3:.2f} | {s / f:.2f}x |")
    shared = med["vector"] / med["vector, one thread"]
    f, s = np.median(shared[fast]), np.median(shared[slow])
    print(f"| vector: all threads / one | {f:.2f}x | {s:.2f}x | |")


if __name__ == "__main__":
    main()
