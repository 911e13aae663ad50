"""Load on the web app: concurrent clients posting histories to /api/recommendations (fold-in).

    python bench/serve_load.py                        # starts the server on 127.0.0.1 itself
    python bench/serve_load.py --clients 16 --seconds 30 --model rbm-ml-latest-small.npz
    python bench/serve_load.py --clients 16 --workers 2  # two server processes

The server runs in its own process (python -m rbm_cuda.serve, 127.0.0.1 only; with no --model, the
cached or freshly trained ml-latest-small recommender).  Each client is a thread with its own
connection that posts random histories of 3 to 10 ratings of the model's items (500 per client, made
before the clock starts and sent in turn) and checks every response: status 200, n items, none of
them in the history, scores best first.  Bounded in count (--max-requests) and time (--seconds).
Prints requests/s, p50 / p99 latency and the errors.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url, proc, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/api/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"the server did not answer within {timeout:.0f} s")


def bodies(items, levels, n, seed, count=500):
    """count request bodies (JSON bytes) of random histories of 3 to 10 ratings, and each one's
    items, made before the clock starts so that the clients spend the cores on the server."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        chosen = [i.item() if hasattr(i, "item") else i for i in rng.choice(items, size=int(rng.integers(3, 11)),
                                                                           replace=False)]
        history = [{"item_id": i, "rating": float(rng.choice(levels))} for i in chosen]
        out.append((json.dumps({"history": history, "n": n}).encode(), set(chosen)))
    return out


def client(url, requests, n, stop, out, max_requests, counter, lock):
    import http.client

    host, port = url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    k = 0
    while not stop.is_set():
        with lock:
            if counter[0] >= max_requests:
                return
            counter[0] += 1
        body, history = requests[k % len(requests)]
        k += 1
        t = time.perf_counter()
        try:
            conn.request("POST", "/api/recommendations", body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
            dt = time.perf_counter() - t
            problem = check(resp.status, data, history, n)
        except OSError as err:
            dt, problem = time.perf_counter() - t, f"connection: {err}"
            conn = http.client.HTTPConnection(host, int(port), timeout=30)
        out.append((dt, problem))


def check(status, data, history, n):
    if status != 200:
        return f"status {status}: {data[:200]!r}"
    doc = json.loads(data)
    items = doc["items"]
    if len(items) != n:
        return f"{len(items)} items, asked for {n}"
    if history & {r["item_id"] for r in items}:
        return "a history item was recommended"
    scores = [r["score"] for r in items]
    if scores != sorted(scores, reverse=True):
        return "scores are not best first"
    return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model file (default: the server's ml-latest-small recommender)")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--max-requests", type=int, default=100_000)
    ap.add_argument("--n", type=int, default=10, help="items asked for per request")
    ap.add_argument("--warmup", type=int, default=20, help="requests sent before timing")
    ap.add_argument("--workers", type=int, default=1, help="server processes (python -m rbm_cuda.serve --workers)")
    a = ap.parse_args(argv)
    if a.clients < 1 or a.seconds <= 0:
        ap.error("--clients must be >= 1 and --seconds > 0")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "rbm_cuda.serve", "--host", "127.0.0.1", "--port", str(port)]
    if a.model:
        cmd += ["--model", a.model]
    if a.workers != 1:
        cmd += ["--workers", str(a.workers)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_up(url, proc, timeout=900)
        with urllib.request.urlopen(url + "/api/model") as r:
            meta = json.loads(r.read())
        from rbm_cuda.recommender import load_model

        if a.model:
            model = load_model(a.model)
        else:
            from rbm_cuda import RBMRecommender
            from rbm_cuda.serve import default_model_path

            model = RBMRecommender.load(default_model_path())
        items = np.asarray(model.item_ids_)
        levels = [v for v in meta["levels"] if float(v).is_integer()] or meta["levels"]
        stop, lock = threading.Event(), threading.Lock()
        warm = []
        client(url, bodies(items, levels, a.n, 10_000, a.warmup), a.n, stop, warm, a.warmup, [0], lock)
        out, counter = [], [0]
        threads = [threading.Thread(target=client, args=(url, bodies(items, levels, a.n, s), a.n, stop, out,
                                                         a.max_requests, counter, lock)) for s in range(a.clients)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        time.sleep(a.seconds)
        stop.set()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(10)
    lat = np.array([d for d, _ in out]) * 1e3
    errors = [p for _, p in out if p]
    import importlib.util

    stack = "+".join(m for m in ("uvloop", "httptools") if importlib.util.find_spec(m)) or "asyncio+h11"
    print(f"# {meta['kind']} of {meta['dataset']} ({meta['n_items']} items), {a.clients} clients, "
          f"{a.workers} server processes ({stack}), {elapsed:.1f} s, {os.cpu_count()} CPUs")
    print(f"requests {len(out)}, {len(out) / elapsed:.1f} requests/s; latency p50 {np.percentile(lat, 50):.1f} ms, "
          f"p99 {np.percentile(lat, 99):.1f} ms; errors {len(errors)}")
    for e in sorted(set(errors))[:5]:
        print(f"  error: {e}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
