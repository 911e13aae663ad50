"""Synthetic rating matrices shaped like MovieLens (for the throughput benchmark).

Item popularity follows a power law (Zipf, exponent 1, with a head offset chosen so that the most
popular item holds 0.34% of all ratings, as in MovieLens 1M and 20M; the tail is thinner than the
real sets', which have more items with very few ratings), user activity is log-normal (a long tail of heavy raters,
every user has at least one rating), and ratings are drawn from MovieLens 1M's rating mix
(1: 5.6%, 2: 10.8%, 3: 26.1%, 4: 34.9%, 5: 22.6%).  The exact (users, items, ratings) of the real
set are kept, so the work per epoch is the real one.  Deterministic for a given seed; generated
sets are cached as .npz (``$RBM_CUDA_BENCH_CACHE``, default ~/.cache/rbm_cuda_bench).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import scipy.sparse as sp

SHAPES = {
    # name: (users, items, ratings)
    "ml-1m": (6_040, 3_706, 1_000_209),
    "ml-20m": (138_493, 26_744, 20_000_263),
}
RATING_MIX = np.array([0.056, 0.108, 0.261, 0.349, 0.226])  # MovieLens 1M, levels 1..5


def _cache_dir() -> Path:
    return Path(os.environ.get("RBM_CUDA_BENCH_CACHE", Path.home() / ".cache" / "rbm_cuda_bench"))


def generate(n_users: int, n_items: int, nnz: int, seed: int = 0, alpha: float = 1.0, top_share: float = 0.0034
             ) -> sp.csr_matrix:
    """A float32 CSR (n_users x n_items) with exactly nnz distinct ratings in 1..5, sorted indices."""
    if nnz > n_users * n_items:
        raise ValueError("more ratings than cells")
    rng = np.random.default_rng(seed)
    # power-law item popularity, items shuffled so popularity is not sorted by id
    ranks = np.arange(1, n_items + 1, dtype=np.float64)
    lo, hi = 0.0, float(n_items)  # head offset so that the most popular item has top_share
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        w = (ranks + mid) ** -alpha
        lo, hi = (mid, hi) if w[0] / w.sum() > top_share else (lo, mid)
    item_w = (ranks + hi) ** -alpha
    item_w /= item_w.sum()
    item_p = np.cumsum(rng.permutation(item_w))
    user_w = rng.lognormal(0.0, 1.0, n_users)
    user_p = np.cumsum(user_w / user_w.sum())
    # every user rates at least one item: one guaranteed key per user, then the rest by sampling
    first = np.arange(n_users, dtype=np.int64) * n_items + np.searchsorted(item_p, rng.random(n_users) * item_p[-1])
    keys = first
    while len(keys) < nnz:
        draw = int((nnz - len(keys)) * 1.15) + 1000
        u = np.searchsorted(user_p, rng.random(draw) * user_p[-1])
        i = np.minimum(np.searchsorted(item_p, rng.random(draw) * item_p[-1]), n_items - 1)
        keys = np.unique(np.concatenate([keys, u.astype(np.int64) * n_items + i]))
    if len(keys) > nnz:  # drop the surplus at random, never a user's guaranteed first rating
        extra = np.setdiff1d(keys, first, assume_unique=True)
        drop = rng.choice(len(extra), len(keys) - nnz, replace=False)
        keys = np.setdiff1d(keys, extra[drop], assume_unique=True)
    rows = keys // n_items
    cols = (keys % n_items).astype(np.int32)
    ratings = (rng.choice(5, size=nnz, p=RATING_MIX / RATING_MIX.sum()) + 1).astype(np.float32)
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_users), out=indptr[1:])
    return sp.csr_matrix((ratings, cols, indptr), shape=(n_users, n_items))


def load(name: str, seed: int = 0, cache: bool = True) -> sp.csr_matrix:
    """The synthetic set shaped like `name` (a key of SHAPES), from the cache when present."""
    n_users, n_items, nnz = SHAPES[name]
    path = _cache_dir() / f"{name}-synthetic-seed{seed}-v2.npz"
    if cache and path.exists():
        return sp.load_npz(path).tocsr()
    X = generate(n_users, n_items, nnz, seed)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
        sp.save_npz(tmp, X, compressed=False)
        os.replace(tmp, path)
    return X


def describe(X: sp.csr_matrix) -> str:
    per_item = np.bincount(X.indices, minlength=X.shape[1])
    per_user = np.diff(X.indptr)
    mix = np.bincount(X.data.astype(np.int64), minlength=6)[1:] / X.nnz
    return (f"{X.shape[0]} x {X.shape[1]}, {X.nnz} ratings; top item {per_item.max()} "
            f"({per_item.max() / X.nnz:.2%}), items with < 10 ratings {np.mean(per_item < 10):.0%}; "
            f"ratings per user min {per_user.min()} median {int(np.median(per_user))} max {per_user.max()}; "
            f"mix {np.round(mix, 3).tolist()}")


if __name__ == "__main__":
    import sys
    import time

    for name in sys.argv[1:] or list(SHAPES):
        t = time.perf_counter()
        X = load(name)
        print(f"{name}: {describe(X)}  ({time.perf_counter() - t:.1f} s)")
