"""Training throughput of rbm_cuda beside its peers: seconds per epoch, ratings per second, peak RSS.

    PYTHONPATH=. python bench/throughput.py                 # everything installed, a few minutes
    PYTHONPATH=. python bench/throughput.py --quick         # smoke run: ml-100k + ml-1m, CD-1, 2 epochs
    PYTHONPATH=. python bench/throughput.py --datasets ml-1m --impls numba,numpy-dense --cd 1 --json out.json
    PYTHONPATH=. python bench/throughput.py --datasets ml-1m --cd 1 --threads 1   # every case on one thread
    PYTHONPATH=. python bench/throughput.py --datasets ml-1m --impls numba --cd 1 --fit ml-1m,ml-20m

After the epochs, the whole RBMRecommender fit at its default settings (--fit; ml-1m by default) is
timed once per data set in its own process: seconds, peak RSS and the seconds of each part.

Every case (implementation x data set x CD steps) runs in its own subprocess, so its peak resident
memory is its own and a peer that runs out of memory cannot take the benchmark down.  Each case
loads its data, builds its model and runs warm-up epochs (Numba compilation, caches).  The cases of
one data set and CD steps (numba and its peers) are then timed in turns: --epochs rounds, in each of
which every case times epochs for --min-seconds / --epochs seconds (at least one epoch), so that
the machine's drifting speed reaches all of them alike; each turn starts --turn-pause seconds after
the previous one ended, with one epoch that is not timed.  The table shows each case's median epoch;
`ratio_to_numba` (> 1: the peer is slower) is the median over the rounds of the peer's median
epoch in the round divided by numba's.  Only the epoch loop is timed: data generation, dense
conversions and rbm_cuda's per-epoch monitoring (train RMSE + free energy, timed separately and
shown below the table) are not.

Implementations (each only when its package imports; `pip install '.[bench]'`, torch by hand):
  numba          rbm_cuda, Numba backend (softmax visible units, K = 5 levels)
  cuda           rbm_cuda, CUDA backend (only when rbm_cuda.gpu.HAS_CUDA)
  numpy-dense    bench/peers/numpy_dense.py: dense binary (rating / 5) CD-k, NumPy float32 matmuls
  sklearn-dense  scikit-learn BernoulliRBM on the dense rating / 5 matrix (float32)
  sklearn-csr    scikit-learn BernoulliRBM on the same as CSR (float32); it has one Gibbs step (PCD)
  torch          bench/peers/torch_rbm.py, the PyTorch seed's RBM with the benchmark's CD and batch
  torch-seed     the same with the seed's own recipe: CD-10, batches of 100 (paired with numba CD-10)
Data: ml-100k (real, from $RBM_CUDA_DATA/ml-100k/u.data) and synthetic sets shaped like
MovieLens 1M and 20M (bench/synthetic.py; generated once and cached, ~2 min for 20M).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import select
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
N_HIDDEN = 100
N_LEVELS = 5
ALL_IMPLS = ["numba", "cuda", "numpy-dense", "sklearn-dense", "sklearn-csr", "torch", "torch-seed"]
DENSE_IMPLS = {"numpy-dense", "sklearn-dense", "torch", "torch-seed"}
DENSE_LIMIT_BYTES = 4 << 30  # dense users x items float32 beyond this is reported as skipped


# ---------------------------------------------------------------------------------------------------
# data
def load_data(name):
    """float32 CSR of ratings 1..5, users as rows."""
    import scipy.sparse as sp

    if name == "ml-100k":
        folder = os.environ.get("RBM_CUDA_DATA", "")
        path = os.path.join(folder, "ml-100k", "u.data")
        if not os.path.exists(path):
            raise FileNotFoundError(f"needs $RBM_CUDA_DATA/ml-100k/u.data (RBM_CUDA_DATA={folder!r})")
        a = np.loadtxt(path, dtype=np.int64, usecols=(0, 1, 2))
        u = np.unique(a[:, 0], return_inverse=True)[1]
        i = np.unique(a[:, 1], return_inverse=True)[1]
        X = sp.csr_matrix((a[:, 2].astype(np.float32), (u, i)))
        X.sort_indices()
        return X
    sys.path.insert(0, HERE)
    import synthetic

    return synthetic.load(name)


def shape_of(name):
    sys.path.insert(0, HERE)
    import synthetic

    return synthetic.SHAPES.get(name, (943, 1682, 100_000))


# ---------------------------------------------------------------------------------------------------
# one case, in the child process
SLOW_EPOCH = 30.0  # seconds: when a warm-up epoch takes longer, its group is timed in one round
MAX_TURN_EPOCHS = 50  # epochs per turn at most, whatever the turn's seconds ask
# OpenBLAS's idle threads spin for up to about 0.1 s after a call (2^28 cycles, OPENBLAS_THREAD_TIMEOUT),
# and a case timed meanwhile would share the cores with them: each turn starts this long after the
# last one ended (--turn-pause).
BLAS_SPIN_SECONDS = 0.25


def case_rbm_cuda(X, device, cd, batch):
    from rbm_cuda import RBM

    model = RBM(n_hidden=N_HIDDEN, visible="softmax", cd_steps=cd, batch_size=batch, epochs=0, seed=0,
                device=device).fit(X)

    def monitor_seconds():
        """The per-epoch monitoring, timed on its own (the first call compiles its kernels)."""
        for _ in range(2):
            model.partial_fit()
        return {"monitor_seconds": model.history_[-1]["monitor_seconds"]}

    return lambda: model.partial_fit(monitor=False), monitor_seconds


def case_numpy_dense(X, cd, batch):
    sys.path.insert(0, HERE)
    from peers.numpy_dense import DenseRBM, dense_values

    V = dense_values(X)
    rbm = DenseRBM(V.shape[1], N_HIDDEN, cd_steps=cd, batch_size=batch)
    return lambda: rbm.epoch(V), dict


def case_sklearn(X, dense, batch):
    from sklearn.neural_network import BernoulliRBM

    Xv = X.copy()
    Xv.data = Xv.data / np.float32(5.0)
    if dense:
        Xv = Xv.toarray()
    # fit() with n_iter=1 is one epoch (plus a negligible random initialisation of 100 x items)
    rbm = BernoulliRBM(n_components=N_HIDDEN, batch_size=batch, n_iter=1, learning_rate=0.01, random_state=0)
    return lambda: rbm.fit(Xv), dict


def case_torch(X, cd, batch, threads):
    import torch

    sys.path.insert(0, HERE)
    from peers import torch_rbm

    torch.set_num_threads(threads or os.cpu_count() or 1)
    V = torch_rbm.like_tensor(X)
    rbm = torch_rbm.SeedRBM(V.shape[1], N_HIDDEN)

    def epoch():
        with torch.no_grad():
            torch_rbm.epoch(rbm, V, batch, cd)

    return epoch, dict


def peak_rss_mb():
    """This process's peak resident set (VmHWM: reset by exec, unlike ru_maxrss, which keeps the
    parent's peak across fork + exec)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def fit_child(spec):
    """Fit rbm_cuda.RBMRecommender at its default settings on one data set, once; print the result."""
    from rbm_cuda import RBMRecommender

    X = load_data(spec["fit"])
    parts = {}
    t = time.perf_counter()
    rec = RBMRecommender(device="cpu", refit=spec.get("refit", True))
    rec.fit(X, callback=lambda label, rbm, record: parts.__setitem__(label, parts.get(label, 0.0) + record["seconds"]))
    seconds = time.perf_counter() - t
    print("RESULT " + json.dumps({"fit_seconds": seconds, "part_seconds": parts, "nnz": int(X.nnz),
                                  "peak_rss_mb": peak_rss_mb()}), flush=True)


def child(spec):
    """Set up one case and run its warm-up epochs, say READY, then serve the parent's commands on
    stdin: `RUN s u` runs one epoch outside the timing when u is 1, then times epochs until s seconds
    of them (at least one); `DONE` ends with the result."""
    impl, dataset, cd, batch = spec["impl"], spec["dataset"], spec["cd"], spec["batch_size"]
    X = load_data(dataset)
    if impl in ("numba", "cuda"):
        run_epoch, finish = case_rbm_cuda(X, "cpu" if impl == "numba" else "cuda", cd, batch)
    elif impl == "numpy-dense":
        run_epoch, finish = case_numpy_dense(X, cd, batch)
    elif impl in ("sklearn-dense", "sklearn-csr"):
        run_epoch, finish = case_sklearn(X, impl == "sklearn-dense", batch)
    elif impl in ("torch", "torch-seed"):
        run_epoch, finish = case_torch(X, cd, batch, spec.get("threads"))
    else:
        raise ValueError(impl)
    slow = False
    for _ in range(spec["warmup"]):
        t = time.perf_counter()
        run_epoch()
        slow = slow or time.perf_counter() - t > SLOW_EPOCH
    print("READY " + json.dumps({"slow": slow}), flush=True)
    for line in sys.stdin:
        command = line.split()
        if command[0] == "RUN":
            seconds, out, untimed = float(command[1]), [], None
            if command[2] == "1":
                t = time.perf_counter()
                run_epoch()
                untimed = time.perf_counter() - t
            while not out or (sum(out) < seconds and len(out) < MAX_TURN_EPOCHS):
                t = time.perf_counter()
                run_epoch()
                out.append(time.perf_counter() - t)
            print("TIMES " + json.dumps({"untimed": untimed, "epochs": out}), flush=True)
        elif command[0] == "DONE":
            result = {"nnz": int(X.nnz), **finish()}
            if impl in ("numba", "cuda"):
                import numba

                result["numba_threads"] = numba.get_num_threads()
            result["peak_rss_mb"] = peak_rss_mb()
            print("RESULT " + json.dumps(result), flush=True)
            return


# ---------------------------------------------------------------------------------------------------
# the parent: which cases, run them, print
def available(impl):
    """(True, "") or (False, why not)."""
    import importlib.util

    # never import the peers here: the parent stays small (children inherit nothing, but keep it lean)
    if impl == "cuda":
        from rbm_cuda import gpu

        return (True, "") if gpu.HAS_CUDA else (False, f"no GPU: {gpu.REASON}")
    for prefix, module in (("sklearn", "sklearn"), ("torch", "torch")):
        if impl.startswith(prefix) and importlib.util.find_spec(module) is None:
            return False, f"{module} is not installed"
    return True, ""


def plan(a):
    cases = []
    for ds in a.datasets:
        n_users, n_items, nnz = shape_of(ds)
        big = ds == "ml-20m"
        for impl in a.impls:
            cds = [10] if impl == "torch-seed" else ([1] if impl.startswith("sklearn") else a.cd)
            for cd in cds:
                batch = 100 if impl == "torch-seed" else a.batch_size
                warmup, epochs = (1, max(1, a.epochs - 2)) if big else (a.warmup, a.epochs)
                if big and cd > 1:
                    epochs = max(1, epochs - 1)
                skip = ""
                ok, why = available(impl)
                if not ok:
                    skip = why
                elif impl in DENSE_IMPLS and n_users * n_items * 4 > DENSE_LIMIT_BYTES:
                    skip = (f"dense users x items float32 would take {n_users * n_items * 4 / 1e9:.1f} GB "
                            f"(limit {DENSE_LIMIT_BYTES / 2**30:.0f} GiB)")
                elif impl == "sklearn-csr" and big and not a.full:
                    gflop = 8 * n_users * n_items * N_HIDDEN / 1e9
                    skip = (f"dense negative phase over all {n_items:,} items, ~{gflop:,.0f} GFLOP per epoch "
                            f"(about a minute per epoch here): run with --full")
                elif cd >= 5 and impl in ("torch", "torch-seed") and n_items * n_users > 5e7 and not a.full:
                    skip = "CD-5+ dense over the ML-1M shape takes minutes here: run with --full"
                cases.append({"impl": impl, "dataset": ds, "cd": cd, "batch_size": batch, "warmup": warmup,
                              "epochs": epochs, "skip": skip, "threads": a.threads})
    # numba CD-10 only as the partner of torch-seed
    for c in [c for c in cases if c["impl"] == "torch-seed" and not c["skip"]]:
        if "numba" in a.impls and not any(x["impl"] == "numba" and x["dataset"] == c["dataset"] and x["cd"] == 10
                                          for x in cases):
            cases.append({**c, "impl": "numba", "batch_size": a.batch_size, "warmup": a.warmup, "skip": ""})
    order = {k: n for n, k in enumerate(ALL_IMPLS)}
    cases.sort(key=lambda c: (a.datasets.index(c["dataset"]), c["cd"], order[c["impl"]]))
    return cases


class CaseFailed(Exception):
    """A case's process failed, timed out or was killed; the message says which (the case's skip reason)."""


# The variables through which each implementation's thread pool takes its size: Numba's, OpenMP's
# (libgomp under Numba, and PyTorch), and the BLAS libraries' behind NumPy and scikit-learn.
THREAD_VARIABLES = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def child_env(case, environ):
    """The environment of a case's process: ours, with the repository first on PYTHONPATH and, when
    case["threads"] is set, every implementation's thread count set to it (read when the libraries
    load, so it has to be set before the process starts)."""
    env = dict(environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if case.get("threads"):
        env.update({name: str(case["threads"]) for name in THREAD_VARIABLES})
    return env


class Child:
    """One case's process, driven a line at a time (child() is the other end); its stderr goes to a
    temporary file, whose last line is the reason given when it fails."""

    def __init__(self, case, timeout):
        env = child_env(case, os.environ)
        self.timeout = timeout
        self.err = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child", json.dumps(case)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err, env=env)
        self.pending = b""

    def ask(self, command, tag):
        """Send `command` (None: nothing) and return the JSON of the next output line starting with `tag`."""
        try:
            if command:
                self.proc.stdin.write(command.encode() + b"\n")
                self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # the process is gone: reading says why
        deadline = time.monotonic() + self.timeout
        while True:
            line, newline, rest = self.pending.partition(b"\n")
            if newline:
                self.pending = rest
                if line.startswith(tag.encode() + b" "):
                    return json.loads(line[len(tag) + 1:])
                continue
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                self.close()
                raise CaseFailed(f"timed out after {self.timeout:.0f} s")
            chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
            if not chunk:
                code = self.proc.wait()
                self.err.seek(0)
                tail = (self.err.read().strip().splitlines() or ["(no output)"])[-1]
                self.close()
                raise CaseFailed("killed (out of memory?)" if code in (-9, 137) else f"failed: {tail[:200]}")
            self.pending += chunk

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.err.close()


def run_group(group, a):
    """Time the cases of one data set and CD steps (numba and its peers) in turns, so that every ratio
    compares epochs run within seconds of each other.  Each case's process is started, warmed up and
    left waiting; then in each of `rounds` rounds every case times epochs for a turn of
    min_seconds / rounds seconds (at least one epoch) after one untimed epoch, in alternating order.
    Returns one result per case of `group`: {"skip": why} or the child's result with "round_seconds"
    (a list of epoch times per round) and "round_untimed_seconds" (each turn's untimed epoch, None
    in a slow group)."""
    results = [{"skip": c["skip"]} if c["skip"] else None for c in group]
    live = {}
    slow = False
    for n, case in enumerate(group):
        if results[n] is not None:
            continue
        child = Child(case, a.timeout)
        try:
            slow = child.ask(None, "READY")["slow"] or slow
            live[n] = child
        except CaseFailed as e:
            results[n] = {"skip": str(e)}
    rounds = 1 if slow else max([group[n]["epochs"] for n in live], default=0)
    turn = a.min_seconds / max(rounds, 1)
    # A turn's first epoch follows seconds of waiting through the other cases' turns and runs slower
    # than the rest of the turn: each turn starts with one epoch outside the timing (its time is kept
    # as round_untimed_seconds), except in slow groups.
    untimed = 0 if slow else 1
    times = {n: [] for n in live}
    firsts = {n: [] for n in live}
    for r in range(rounds):
        for n in (list(live) if r % 2 == 0 else list(live)[::-1]):
            time.sleep(a.turn_pause)
            try:
                reply = live[n].ask(f"RUN {turn} {untimed}", "TIMES")
                times[n].append(reply["epochs"])
                firsts[n].append(reply["untimed"])
            except CaseFailed as e:
                results[n] = {"skip": str(e)}
                del live[n]
    for n, child in live.items():
        try:
            results[n] = {**child.ask("DONE", "RESULT"), "round_seconds": times[n],
                          "round_untimed_seconds": firsts[n]}
        except CaseFailed as e:
            results[n] = {"skip": str(e)}
        child.close()
    return results


def paired_ratio(peer_rounds, numba_rounds):
    """Median over the rounds of (the peer's median epoch in the round) / (numba's), and the list."""
    ratios = [float(np.median(p) / np.median(q)) for p, q in zip(peer_rounds, numba_rounds) if p and q]
    return (float(np.median(ratios)) if ratios else None), ratios


def fmt_rate(x):
    return f"{x / 1e6:.2f} M" if x else "-"


def main(argv=None):
    from rbm_cuda.params import RBMParams

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=None, help="default ml-100k,ml-1m,ml-20m (--quick: ml-100k,ml-1m)")
    ap.add_argument("--impls", default=",".join(ALL_IMPLS))
    ap.add_argument("--cd", default=None, help="CD steps, comma-separated, default 1,5 (--quick: 1; sklearn: always 1)")
    default_batch = RBMParams().batch_size  # what users train with
    ap.add_argument("--batch-size", type=int, default=default_batch,
                    help=f"users per mini-batch, for every implementation (default: RBM's, {default_batch}; "
                         "torch-seed: always 100)")
    ap.add_argument("--epochs", type=int, default=None,
                    help="rounds of turns (timed epochs per case at least), default 5 (--quick: 2; ml-20m: 2 fewer)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--min-seconds", type=float, default=None,
                    help="seconds of timed epochs per case at least, spread over the rounds (a turn times at "
                         f"most {MAX_TURN_EPOCHS} epochs), default 3 (--quick: 0)")
    ap.add_argument("--turn-pause", type=float, default=BLAS_SPIN_SECONDS,
                    help=f"seconds between one case's turn and the next, not timed (default {BLAS_SPIN_SECONDS}: "
                         "OpenBLAS's idle threads spin for about 0.1 s after a call)")
    ap.add_argument("--timeout", type=float, default=900,
                    help="seconds a case may take to get ready, or for one turn, before it is skipped")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads for every implementation (Numba, OpenMP, BLAS), default: the libraries' own "
                         "(all the CPUs)")
    ap.add_argument("--full", action="store_true", help="also run the slow peer cases skipped by default")
    ap.add_argument("--quick", action="store_true", help="smoke run: ml-100k and ml-1m, CD-1, 2 epochs (unless given)")
    ap.add_argument("--peak-gflops", type=float, default=None,
                    help="this machine's float32 peak in GFLOP/s (cores x FMA pipes x lanes x 2 x GHz): when given, "
                         "numba's CD-1 rows report the fraction of it they reach")
    ap.add_argument("--fit", default=None,
                    help="data sets on which to time the whole RBMRecommender fit at its default settings (all its "
                         "parts, the validation stage included), comma-separated; default: ml-1m when it is among "
                         "--datasets; 'none' for no fit rows")
    ap.add_argument("--fit-timeout", type=float, default=7200, help="seconds a whole fit may take")
    ap.add_argument("--json", metavar="PATH", help="write one row per case here")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        spec = json.loads(a.child)
        fit_child(spec) if "fit" in spec else child(spec)
        return
    quick = {"datasets": "ml-100k,ml-1m", "cd": "1", "epochs": 2, "min_seconds": 0.0}
    full = {"datasets": "ml-100k,ml-1m,ml-20m", "cd": "1,5", "epochs": 5, "min_seconds": 3.0}
    for key, value in (quick if a.quick else full).items():
        if getattr(a, key) is None:
            setattr(a, key, value)
    a.datasets = [d.strip() for d in a.datasets.split(",") if d.strip()]
    if a.fit is None:
        a.fit = "ml-1m" if "ml-1m" in a.datasets else "none"
    a.fit = [] if a.fit == "none" else [d.strip() for d in a.fit.split(",") if d.strip()]
    a.impls = [i.strip() for i in a.impls.split(",") if i.strip()]
    a.cd = [int(c) for c in str(a.cd).split(",")]
    bad = [i for i in a.impls if i not in ALL_IMPLS]
    if bad:
        ap.error(f"unknown implementation {bad[0]!r}; choose from {', '.join(ALL_IMPLS)}")
    if a.turn_pause < 0:
        ap.error(f"--turn-pause must be >= 0 seconds, got {a.turn_pause}")
    if a.threads is not None and a.threads < 1:
        ap.error(f"--threads must be at least 1, got {a.threads}")

    load0 = os.getloadavg()
    machine = f"{os.cpu_count()} CPUs"
    try:  # optional (the bench extra installs it)
        import psutil

        machine += f", {psutil.virtual_memory().total / 2**30:.0f} GiB"
    except ImportError:
        pass
    machine += f", {a.threads} thread{'s' if a.threads > 1 else ''} per case" if a.threads else ""
    print(f"# rbm_cuda throughput: F = {N_HIDDEN}, K = {N_LEVELS}, batch {a.batch_size}; {machine}; "
          f"load average {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}", flush=True)
    rows = []
    cases = plan(a)
    groups = []  # (data set, CD steps) in plan order: numba and the peers it is divided into
    for case in cases:
        if (case["dataset"], case["cd"]) not in groups:
            groups.append((case["dataset"], case["cd"]))
    for key in groups:
        group = [c for c in cases if (c["dataset"], c["cd"]) == key]
        for case, res in zip(group, run_group(group, a)):
            row = {"impl": case["impl"], "dataset": case["dataset"], "cd": case["cd"],
                   "batch_size": case["batch_size"], "seconds_per_epoch": None, "ratings_per_second": None,
                   "peak_rss_mb": None, "ratio_to_numba": None}
            if res.get("skip"):
                row["skipped"] = res["skip"]
            else:
                epochs = [t for turn in res["round_seconds"] for t in turn]
                sec = float(np.median(epochs))
                row.update(seconds_per_epoch=sec, ratings_per_second=res["nnz"] / sec,
                           peak_rss_mb=res["peak_rss_mb"], epoch_seconds=epochs, round_seconds=res["round_seconds"],
                           round_untimed_seconds=res["round_untimed_seconds"], nnz=res["nnz"])
                for key in ("monitor_seconds", "numba_threads"):
                    if key in res:
                        row[key] = res[key]
                if case["impl"] == "numba" and case["cd"] == 1 and a.peak_gflops:
                    flop = 2.0 * res["nnz"] * N_HIDDEN * (1 + 3 * N_LEVELS)
                    row["peak_fraction"] = flop / sec / (a.peak_gflops * 1e9)
            rows.append(row)
            print(f"  {row['impl']:<13} {row['dataset']:<8} CD-{row['cd']:<2} "
                  + (f"{row['seconds_per_epoch']:.3f} s/epoch" if row["seconds_per_epoch"] else f"skipped: {row['skipped']}"),
                  flush=True)
    for row in rows:
        ref = [r for r in rows if r["impl"] == "numba" and r["dataset"] == row["dataset"] and r["cd"] == row["cd"]
               and r["seconds_per_epoch"]]
        if ref and row["seconds_per_epoch"]:
            row["ratio_to_numba"], row["round_ratios"] = paired_ratio(row["round_seconds"], ref[0]["round_seconds"])
    fits = []
    for ds in a.fit:
        proc = Child({"fit": ds, "threads": a.threads}, a.fit_timeout)
        try:
            res = proc.ask(None, "RESULT")
        except CaseFailed as e:
            res = {"skip": str(e)}
        proc.close()
        fits.append({"impl": "RBMRecommender.fit", "dataset": ds, **res})
        print(f"  RBMRecommender.fit {ds}: " + (f"{res['fit_seconds']:.1f} s" if "fit_seconds" in res
                                                 else f"skipped: {res['skip']}"), flush=True)
    load1 = os.getloadavg()
    print()
    print("| impl | dataset | CD | batch | s/epoch | ratings/s | peak RSS MB | / numba |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["seconds_per_epoch"] is None:
            print(f"| {r['impl']} | {r['dataset']} | {r['cd']} | {r['batch_size']} | skipped: {r['skipped']} | | | |")
            continue
        ratio = f"{r['ratio_to_numba']:.1f}x" if r["ratio_to_numba"] is not None else "-"
        print(f"| {r['impl']} | {r['dataset']} | {r['cd']} | {r['batch_size']} | {r['seconds_per_epoch']:.3f} | "
              f"{fmt_rate(r['ratings_per_second'])} | {r['peak_rss_mb']:.0f} | {ratio} |")
    print()
    for r in rows:
        if "peak_fraction" in r:
            print(f"numba {r['dataset']} CD-1: {r['peak_fraction']:.1%} of the float32 peak ({a.peak_gflops:.0f} "
                  f"GFLOP/s), counting nnz * F * (1 + 3K) multiply-adds per epoch")
        if "monitor_seconds" in r:
            print(f"{r['impl']} {r['dataset']} CD-{r['cd']}: per-epoch monitoring (not in s/epoch) "
                  f"{r['monitor_seconds']:.3f} s")
    if fits:
        print()
        print("| whole fit, default settings | dataset | seconds | peak RSS MB | seconds per part (validation stage "
              "included) |")
        print("|---|---|---|---|---|")
        for f in fits:
            if "skip" in f:
                print(f"| {f['impl']} | {f['dataset']} | skipped: {f['skip']} | | |")
                continue
            parts = ", ".join(f"{k} {v:.1f}" for k, v in f["part_seconds"].items())
            print(f"| {f['impl']} | {f['dataset']} | {f['fit_seconds']:.1f} | {f['peak_rss_mb']:.0f} | {parts} |")
        rows.extend(fits)
    print(f"load average at the end {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    if a.json:
        for r in rows:  # a list with one row per case; the run's conditions repeated in each
            r.update(n_hidden=N_HIDDEN, levels=N_LEVELS, cpus=os.cpu_count(), threads=a.threads,
                     load_average=[load0[0], load1[0]])
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
