"""What one training batch costs the CUDA backend, counted without a GPU, and an estimate of an epoch.

  python bench/gpu_launches.py                  # launches and host syncs per batch, per visible type
  python bench/gpu_launches.py --json           # the same as JSON
  python bench/gpu_launches.py --estimate ml-20m --bandwidth-gbs 3350 --launch-us 4

The counts come from rbm_cuda.emulation.CountingBackend: the CUDA backend's code path with the
kernel source run on the CPU, counting our kernel launches, the array operations CuPy would launch,
and the device values read on the host.  They do not depend on the data's size, so a small
synthetic set is used.  --estimate adds an estimate of a softmax epoch on a GPU at a data shape of
bench/synthetic.py: the bytes each batch moves (from the batches' real groups, computed with the
Numba kernels) over the given memory bandwidth, and the launches at the given cost each.  It is an
estimate from counts and assumed rates, not a measurement (docs/gpu.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import scipy.sparse as sp

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from rbm_cuda import RBM  # noqa: E402
from rbm_cuda import model as model_module  # noqa: E402

VISIBLE = ("softmax", "like", "bernoulli")


def count(visible, n_hidden=100, batch_size=100, seed=0):
    """Per-batch counts of one epoch on the counting backend (the median batch, and the largest)."""
    from rbm_cuda.emulation import CountingBackend

    rng = np.random.default_rng(seed)
    X = sp.csr_matrix((rng.integers(1, 6, (1000, 300)) * (rng.random((1000, 300)) < 0.05)).astype(np.float32))
    be = CountingBackend()
    real = model_module.get_backend
    model_module.get_backend = lambda device: be
    try:
        RBM(n_hidden=n_hidden, epochs=1, batch_size=batch_size, visible=visible, device="cuda", seed=seed).fit(X)
    finally:
        model_module.get_backend = real
    per = be.per_batch
    launches = [c["launches"] + c["array_ops"] for c in per]
    return {"launches_per_batch": int(np.median(launches)), "max_launches_per_batch": int(max(launches)),
            "kernels_per_batch": int(np.median([c["launches"] for c in per])),
            "array_ops_per_batch": int(np.median([c["array_ops"] for c in per])),
            "host_syncs_per_batch": int(max(c["host_reads"] for c in per)), "batches": len(per)}


def estimate(shape, launches, batch_size, n_hidden, bandwidth_gbs, launch_us, seed=0):
    """A softmax epoch at `shape` on a GPU: per batch, the larger of its memory traffic over the
    bandwidth and its launches at launch_us each (they overlap), summed over the epoch."""
    from throughput import load_data

    from rbm_cuda.cpu.kernels import group_by_item
    from rbm_cuda.training import epoch_order

    X = load_data(shape)
    K = int(len(np.unique(X.data)))
    n_items = X.shape[1]
    indptr, indices = X.indptr.astype(np.int64), X.indices.astype(np.int32)
    order = epoch_order(seed, 0, indptr)
    weight_row = K * n_hidden * 4  # one item's W, in bytes
    rated, slots, seconds = [], [], 0.0
    for a in range(0, len(order), batch_size):
        start = group_by_item(indptr, indices, order[a:a + batch_size], n_items)[0]
        items = int((np.diff(start) > 0).sum())
        m = int(start[-1])
        # catch_up and update_softmax read and write W and its velocity for each rated item (4 x);
        # sample_visible_softmax reads each rated item's W once; the two sample_hidden passes read one
        # W row (F floats) per rating.
        traffic = items * weight_row * (4 + 4 + 1) + m * n_hidden * 4 * 2
        seconds += max(traffic / (bandwidth_gbs * 1e9), launches * launch_us * 1e-6)
        rated.append(items)
        slots.append(m)
    return {"shape": shape, "users": X.shape[0], "items": n_items, "ratings": int(X.nnz), "levels": K,
            "batches": len(rated), "batch_size": batch_size, "mean_rated_items_per_batch": float(np.mean(rated)),
            "mean_ratings_per_batch": float(np.mean(slots)),
            "mean_bytes_per_batch": float(np.mean([r * weight_row * 9 + m * n_hidden * 8 for r, m in zip(rated, slots)])),
            "bandwidth_gbs": bandwidth_gbs, "launch_us": launch_us, "launches_per_batch": launches,
            "estimated_epoch_seconds": seconds}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print JSON")
    ap.add_argument("--batch-size", type=int, default=100, help="users per batch (the default of RBM)")
    ap.add_argument("--hidden", type=int, default=100)
    ap.add_argument("--estimate", metavar="SHAPE", help="estimate a softmax epoch at this shape (ml-1m, ml-20m)")
    ap.add_argument("--bandwidth-gbs", type=float, default=3350.0,
                    help="GPU memory bandwidth for --estimate, GB/s (default: an H100 SXM's 3,350)")
    ap.add_argument("--launch-us", type=float, default=4.0,
                    help="cost of one launch for --estimate, microseconds (default 4)")
    a = ap.parse_args(argv)
    out = {v: count(v, a.hidden, a.batch_size) for v in VISIBLE}
    if a.estimate:
        out["estimate"] = estimate(a.estimate, out["softmax"]["launches_per_batch"], a.batch_size, a.hidden,
                                   a.bandwidth_gbs, a.launch_us)
    if a.json:
        print(json.dumps(out, indent=2))
        return 0
    print("| visible units | launches per batch (our kernels + CuPy operations) | host syncs per batch |")
    print("|---|---|---|")
    for v in VISIBLE:
        c = out[v]
        print(f"| {v} | {c['launches_per_batch']} ({c['kernels_per_batch']} + {c['array_ops_per_batch']}) "
              f"| {c['host_syncs_per_batch']} |")
    if a.estimate:
        e = out["estimate"]
        print(f"\nestimate, softmax epoch at the {e['shape']} shape ({e['users']:,} users, {e['items']:,} items, "
              f"{e['ratings']:,} ratings, K={e['levels']}, F={a.hidden}), batches of {e['batch_size']}:")
        print(f"  {e['batches']:,} batches; per batch {e['mean_rated_items_per_batch']:,.0f} rated items, "
              f"{e['mean_ratings_per_batch']:,.0f} ratings, {e['mean_bytes_per_batch'] / 1e6:,.1f} MB moved "
              f"({e['mean_bytes_per_batch'] / (e['bandwidth_gbs'] * 1e9) * 1e6:,.1f} us at {e['bandwidth_gbs']:,.0f} GB/s), "
              f"{e['launches_per_batch']} launches ({e['launches_per_batch'] * e['launch_us']:.0f} us at "
              f"{e['launch_us']:g} us each)")
        print(f"  epoch: {e['estimated_epoch_seconds']:.3f} s (an estimate, not a measurement; the epoch's grouping "
              "and the monitoring are not included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
