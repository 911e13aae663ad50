"""Top-n lists for every user: a loop in one process against a local Dask cluster, in one run.

    python bench/batch_recommend.py                      # the MovieLens 20M shape, top-100, 2 workers
    python bench/batch_recommend.py --shape ml-1m --rounds 3

The model is an RBMRecommender fitted for one epoch per part on the synthetic set of that shape
(bench/synthetic.py; scoring costs the same whatever the weights), cached beside the synthetic data.
Each round runs `rbm_cuda.batch.recommend_all` twice, in turn: in a fresh process as a loop (all cores
to its threads), and on a fresh LocalCluster of --workers single-threaded worker processes. It
reports seconds, users per second, the peak resident set of the loop's process and of each worker,
the cluster / loop time ratio, and what 100 million users would take at the measured cost.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import synthetic  # noqa: E402
from throughput import peak_rss_mb  # noqa: E402

# distributed's nanny sets OMP_NUM_THREADS=1 (and the BLAS twins) in this process's environment when a
# local cluster starts; the loop's child gets the environment from before, with all cores to its BLAS.
START_ENV = dict(os.environ)


def model_path(shape):
    """A recommender fitted for one epoch per part on the synthetic set of `shape`, built once."""
    path = synthetic._cache_dir() / f"batch-model-{shape}-v1.npz"
    if not path.exists():
        from rbm_cuda import RBMRecommender

        X = synthetic.load(shape)
        one = {"epochs": 1}
        t = time.perf_counter()
        print(f"fitting a one-epoch recommender on the synthetic {shape} set ({X.shape[0]} x {X.shape[1]}, "
              f"{X.nnz} ratings) ...", file=sys.stderr, flush=True)
        rec = RBMRecommender(item_params=one, user_params=one, ranker_params=one, refit=False, device="cpu")
        rec.fit(X)
        path.parent.mkdir(parents=True, exist_ok=True)
        rec.save(path)
        print(f"  {time.perf_counter() - t:.0f} s, {path}", file=sys.stderr, flush=True)
    return str(path)


LOOP_CHILD = """
import json, sys, time
sys.path.insert(0, {here!r})
from throughput import peak_rss_mb
from rbm_cuda import batch
t = time.perf_counter()
batch.recommend_all({model!r}, n={n}, out={out!r})
print("RESULT " + json.dumps({{"seconds": time.perf_counter() - t, "peak_rss_mb": [peak_rss_mb()]}}))
"""


def run_loop(model, n, out):
    """recommend_all as a loop in a fresh process: (seconds, [peak RSS MB])."""
    code = LOOP_CHILD.format(here=HERE, model=model, n=n, out=out)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=START_ENV)
    line = [x for x in res.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def run_cluster(model, n, out, workers):
    """recommend_all on a fresh LocalCluster of single-threaded worker processes."""
    from distributed import Client, LocalCluster

    from rbm_cuda import batch

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                      env={"NUMBA_NUM_THREADS": "1"}) as cluster, Client(cluster) as client:
        client.run(lambda: None)  # workers up before the clock starts
        t = time.perf_counter()
        batch.recommend_all(model, n=n, out=out, client=client)
        seconds = time.perf_counter() - t
        peaks = sorted(client.run(peak_rss_mb).values())
    return {"seconds": seconds, "peak_rss_mb": peaks}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="ml-20m", choices=sorted(synthetic.SHAPES))
    ap.add_argument("--n", type=int, default=100, help="list length (default 100)")
    ap.add_argument("--workers", type=int, default=2, help="local cluster workers (default 2)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of (loop, cluster) runs (default 2)")
    a = ap.parse_args(argv)

    model = model_path(a.shape)
    n_users = synthetic.SHAPES[a.shape][0]
    rows = []
    for r in range(a.rounds):
        for mode in ("loop", "cluster"):
            out = tempfile.mkdtemp(prefix=f"rbm_cuda-batch-{mode}-")
            try:
                res = run_loop(model, a.n, out) if mode == "loop" else run_cluster(model, a.n, out, a.workers)
                res["parquet_mb"] = sum(f.stat().st_size for f in Path(out).glob("*.parquet")) / 1e6
            finally:
                shutil.rmtree(out, ignore_errors=True)
            rows.append({"round": r + 1, "mode": mode, **res})
            print(f"round {r + 1} {mode}: {res['seconds']:.1f} s, peak RSS "
                  f"{', '.join(f'{m:.0f}' for m in res['peak_rss_mb'])} MB", file=sys.stderr, flush=True)

    cores = os.cpu_count() or 1
    print(f"\nAll {n_users} users of the {a.shape} shape, top-{a.n}, model {os.path.getsize(model) / 1e6:.0f} MB "
          f"on disk; {cores} cores; loop = one process, cluster = {a.workers} single-threaded workers; "
          f"Parquet output {rows[0]['parquet_mb']:.0f} MB ({rows[0]['parquet_mb'] * 1e6 / (n_users * a.n):.1f} "
          "bytes per row)\n")
    print("| round | mode | seconds | users/s | peak RSS MB per process |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['round']} | {row['mode']} | {row['seconds']:.1f} | {n_users / row['seconds']:,.0f} | "
              f"{', '.join(f'{m:.0f}' for m in row['peak_rss_mb'])} |")
    ratios = [c["seconds"] / lp["seconds"] for lp, c in zip(rows[0::2], rows[1::2])]
    print(f"\ncluster / loop time, per round: {', '.join(f'{x:.2f}' for x in ratios)}")
    best = min(row["seconds"] for row in rows)
    core_seconds_per_user = best * cores / n_users
    hours = 1e8 * core_seconds_per_user / 3600
    print(f"cost: {core_seconds_per_user * 1e3:.2f} core-ms per user (best run x {cores} cores); "
          f"100 million users at this item count: {hours:,.0f} core-hours, "
          f"{hours / 64:.1f} h on 64 cores, {rows[0]['parquet_mb'] / n_users * 1e8 / 1e3:,.0f} GB of Parquet")


if __name__ == "__main__":
    main()
