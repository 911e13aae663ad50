"""Two floors of a softmax CD-1 epoch on this machine, measured, to set beside bench/profile_phases.py.

    PYTHONPATH=. python bench/roofline.py --dataset ml-20m     # or ml-1m; F = 100, K = 5, batch 1000

stream  W and its velocity, n_items x K x F float32 each, read and written once per batch: what
        momentum and weight decay cost when a batch rates every item.  Timed: a parallel loop doing
        exactly that work for every element (a zero-gradient update), W and velocity as large as
        the data set's.  Per epoch: that time times the number of batches.  update_softmax and
        catch_up touch only the rows of the items a batch rates (profile_phases prints their share),
        so their floor is that share of this one, when W does not fit in cache.
logits  The visible logits are, per tile of up to 16 ratings of one item, K x F masked vector adds
        (simd.tile_logits; 8 lanes for tiles of at most 8 ratings).  Timed: tile_logits on one
        item held in L1, over and over, on every Numba thread at once, for 16- and 8-lane tiles.
        Per epoch: those times the epoch's tiles of each kind (an item's ratings in a batch, in
        tiles of 16, over items and batches of one random order), divided by the threads.  A floor
        for the logits part of the visible phase, with W already in cache.

Both are lower bounds of what the kernels do, not of what any RBM code could do.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from numba import get_num_threads, njit, prange

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rbm_cuda.cpu.kernels import ITEM_CHUNKS, group_by_item  # noqa: E402
from rbm_cuda.cpu.simd import LANES, tile_logits  # noqa: E402

K, F, BATCH = 5, 100, 1000


@njit(parallel=True, cache=True)
def decay_stream(W, vel, lr, mom, wd):
    """The momentum update of every element with a zero gradient (update_softmax's work for an item
    the batch does not rate), in ITEM_CHUNKS tasks like update_softmax's."""
    n = W.shape[0]
    for c in prange(ITEM_CHUNKS):
        for e in range(c * n // ITEM_CHUNKS, (c + 1) * n // ITEM_CHUNKS):
            v = mom * vel[e] + lr * (np.float32(0.0) - wd * W[e])
            vel[e] = v
            W[e] += v


@njit(parallel=True, cache=True)
def tiles_in_cache(Wi, hw, z, n_tiles, n):
    """n_tiles tiles of n ratings per thread (hw.shape[0] threads) on one item's weights (K = 5: one
    tile_logits pass)."""
    for c in prange(hw.shape[0]):
        for _ in range(n_tiles):
            tile_logits(Wi, hw[c], 0, 5, n, z[c])


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), float(np.median(times))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ml-20m", choices=["ml-1m", "ml-20m"])
    ap.add_argument("--repeats", type=int, default=15)
    a = ap.parse_args()
    from throughput import load_data

    X = load_data(a.dataset)
    n_users, n_items = X.shape
    batches = -(-n_users // BATCH)
    rng = np.random.default_rng(0)

    # stream
    W = (rng.standard_normal(n_items * K * F) * 0.01).astype(np.float32)
    vel = np.zeros_like(W)
    lr, mom, wd = np.float32(0.01), np.float32(0.9), np.float32(0.001)
    decay_stream(W, vel, lr, mom, wd)
    s_min, s_med = best_of(lambda: decay_stream(W, vel, lr, mom, wd), a.repeats)
    moved = 4 * W.nbytes  # W and velocity, each read and written

    # logits: the epoch's tiles, from one random order of the users
    order = rng.permutation(n_users)
    indptr = X.indptr.astype(np.int64)
    indices = X.indices.astype(np.int32)
    wide = narrow = 0  # tiles of more than / at most LANES // 2 ratings (tile_logits computes 8 lanes then)
    for start in range(0, n_users, BATCH):
        rows = np.ascontiguousarray(order[start:start + BATCH]).astype(np.int64)
        counts = np.diff(group_by_item(indptr, indices, rows, n_items)[0])
        left = counts % LANES
        wide += int((counts // LANES).sum() + (left > LANES // 2).sum())
        narrow += int(((left > 0) & (left <= LANES // 2)).sum())
    Wi = (rng.standard_normal((K, F)) * 0.01).astype(np.float32)
    threads = get_num_threads()
    hw = rng.integers(0, 2**32, size=(threads, (F + 31) // 32, LANES), dtype=np.uint64).astype(np.uint32)
    z = np.empty((threads, K, LANES), np.float32)
    per_core = 20_000
    tile = {}
    for n in (LANES, LANES // 2):
        tiles_in_cache(Wi, hw, z, 10, n)
        tile[n] = [t / per_core for t in best_of(lambda: tiles_in_cache(Wi, hw, z, per_core, n), a.repeats)]
    logits = [(wide * tile[LANES][m] + narrow * tile[LANES // 2][m]) / threads for m in (0, 1)]

    print(f"# {a.dataset}: {n_users:,} users x {n_items:,} items, {X.nnz:,} ratings, F = {F}, K = {K}, "
          f"batch {BATCH} ({batches} batches); {threads} threads; load average {os.getloadavg()[0]:.2f}")
    print(f"stream: W and velocity {W.nbytes / 1e6:.0f} MB each; one pass {s_min * 1e3:.2f} ms (median "
          f"{s_med * 1e3:.2f}), {moved / s_min / 1e9:.1f} GB/s; per epoch {s_min * batches:.3f} s "
          f"(median {s_med * batches:.3f} s)")
    print(f"logits: {wide:,} tiles of 9-16 ratings and {narrow:,} of 1-8 per epoch; {tile[LANES][0] * 1e9:.0f} "
          f"and {tile[LANES // 2][0] * 1e9:.0f} ns per tile and thread in L1; per epoch {logits[0]:.3f} s "
          f"(median {logits[1]:.3f} s)")


if __name__ == "__main__":
    main()
