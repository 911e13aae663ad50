"""Where a CD epoch spends its time, kernel by kernel (the Numba backend).

Runs the package's own training epoch (rbm_cuda.training.cd_epoch) on a backend whose kernel calls
are timed, so what is profiled is exactly what RBM.fit runs.  Softmax units by default (the rating
parts); --visible bernoulli profiles the ranker's epoch (rated or not, at the ranker's defaults
unless --batch-size or --hidden say otherwise).

    python bench/profile_phases.py --dataset ml-1m --batch-size 1000 --epochs 5
    python bench/profile_phases.py --dataset ml-20m --visible bernoulli --epochs 3
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rbm_cuda import RBM  # noqa: E402
from rbm_cuda.recommender import DEFAULT_PART_PARAMS  # noqa: E402
from rbm_cuda.cpu.backend import NumbaBackend  # noqa: E402
from rbm_cuda.training import cd_epoch, epoch_order  # noqa: E402

KERNELS = {
    "softmax": ("sample_hidden", "group_by_item", "catch_up", "sample_visible_softmax", "update_softmax",
                "update_hidden_bias"),
    "bernoulli": ("sample_hidden", "sample_bernoulli_rows", "update_bernoulli", "update_hidden_bias"),
}


class TimedBackend:
    """The Numba backend with a timer around every kernel call (seconds per kernel name)."""

    def __init__(self, inner, kernels):
        self._inner = inner
        self.kernels = kernels
        self.times = dict.fromkeys(kernels, 0.0)
        self.rated_shares = []  # per batch: the share of the items it rates (what catch_up and update touch)

    def __getattr__(self, name):
        attr = getattr(self._inner, name)
        if name not in self.times:
            return attr

        def timed(*args):
            t = time.perf_counter()
            out = attr(*args)
            self.times[name] += time.perf_counter() - t
            return out

        return timed

    def epoch_batches(self, *args, **kwargs):
        """The Numba backend groups each batch as it is reached: that time is group_by_item's."""
        batches = iter(self._inner.epoch_batches(*args, **kwargs))
        while True:
            t = time.perf_counter()
            try:
                rows, group = next(batches)
            except StopIteration:
                return
            if group is not None:
                self.times["group_by_item"] += time.perf_counter() - t
                self.rated_shares.append(float(np.mean(np.diff(group[0]) > 0)))
            yield rows, group


def load(name):
    from throughput import load_data

    return load_data(name)


def training_arrays(model):
    """The arrays cd_epoch trains, built from a fitted RBM's public attributes (softmax units, or
    bernoulli units on all-ones values)."""
    csr = model.train_
    F = model.W_.shape[2]
    bernoulli = model.visible == "bernoulli"
    return {
        "W": model.W_.copy(), "bv": model.bv_.copy(), "bh": model.bh_.copy(),
        "vel": [np.zeros_like(model.W_), np.zeros_like(model.bv_), np.zeros_like(model.bh_)],
        # the Numba backend sums the bernoulli gradient without W-sized arrays: empty ones, as RBM.fit passes
        "grad": [np.zeros((0,) + a.shape[1:], dtype=np.float32) if bernoulli else None for a in (model.W_, model.bv_)]
        + [np.zeros(F, dtype=np.float32)],
        "indptr": csr.indptr.astype(np.int64), "indices": csr.indices.astype(np.int32),
        "indptr_host": csr.indptr.astype(np.int64),
        "states": np.searchsorted(model.levels_, csr.data).astype(np.int32),
        "values": np.empty(0, dtype=np.float32), "neg_states": np.zeros(csr.nnz, dtype=np.int32),
        "last": np.zeros(model.W_.shape[0], dtype=np.int64),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ml-1m", help="a shape of bench/throughput.py (ml-1m, ml-20m, ...)")
    ap.add_argument("--visible", choices=("softmax", "bernoulli"), default="softmax",
                    help="softmax: a rating part's epoch; bernoulli: the ranker's (ratings taken as rated-or-not)")
    ap.add_argument("--batch-size", type=int, default=None, help="users per batch (default: RBM's, or the ranker's)")
    ap.add_argument("--cd", type=int, default=1)
    ap.add_argument("--hidden", type=int, default=None, help="hidden units (default: RBM's, or the ranker's)")
    ap.add_argument("--epochs", type=int, default=5)
    a = ap.parse_args(argv)
    X = load(a.dataset)
    defaults = DEFAULT_PART_PARAMS["ranker"] if a.visible == "bernoulli" else RBM().get_params()
    if a.visible == "bernoulli":
        X = X.copy()
        X.data[:] = 1.0
    model = RBM(n_hidden=a.hidden or defaults["n_hidden"], cd_steps=a.cd,
                batch_size=a.batch_size or defaults["batch_size"], visible=a.visible,
                learning_rate=defaults["learning_rate"], momentum=defaults["momentum"],
                weight_decay=defaults["weight_decay"], epochs=0, device="cpu").fit(X)
    p, d = model.params_, training_arrays(model)
    kernels = KERNELS[a.visible]
    be = TimedBackend(NumbaBackend(), kernels)
    step = cd_epoch(be, d, p, epoch_order(p.seed, 0, d["indptr"]), 0, 0)  # warm-up: compilation, caches
    rows = []
    for e in range(1, a.epochs + 1):
        be.times = dict.fromkeys(kernels, 0.0)
        t = time.perf_counter()
        step = cd_epoch(be, d, p, epoch_order(p.seed, e, d["indptr"]), e, step)
        total = time.perf_counter() - t
        rows.append([be.times[k] for k in kernels] + [total - sum(be.times.values()), total])
    med = np.median(np.array(rows), axis=0) * 1e3
    print(f"# {a.dataset}, {a.visible}, F={p.n_hidden}, CD-{a.cd}, batch {p.batch_size}, {a.epochs} epochs, "
          "median ms per epoch")
    print("| phase | ms | share |")
    print("|---|---|---|")
    for name, ms in zip(kernels + ("NumPy and loop", "epoch"), med):
        print(f"| {name} | {ms:.1f} | {ms / med[-1]:.0%} |")
    if be.rated_shares:
        print(f"a batch rates {np.mean(be.rated_shares):.0%} of the {d['W'].shape[0]} items on average")


if __name__ == "__main__":
    main()
