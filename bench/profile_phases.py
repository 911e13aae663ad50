"""Where a softmax CD epoch spends its time, kernel by kernel (the Numba backend).

Runs the same loop as rbm_cuda.model.RBM._epoch (softmax visible units) with a timer around every
kernel call, for the current kernels (rbm_cuda/cpu/kernels.py) and, with --baseline [REV], the kernels
as they were at git revision REV (default bbe8eac, before the speed work; read with `git show`),
alternating epochs so both see the same load.

    PYTHONPATH=. python bench/profile_phases.py --dataset ml-1m --batch-size 1000 --epochs 5 --baseline
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rbm_cuda import RBM  # noqa: E402
from rbm_cuda.cpu import kernels as current_kernels  # noqa: E402

# Kernels from before group_by_item (revisions up to 31bfc38) group inside each kernel (no
# group_by_item phase), and their "gradient, W and bv update" is scatter_gradients +ph0 and -phT then
# apply_update on W and bv; since then it is update_softmax.
PHASES = ["sample_hidden v0", "group_by_item", "sample_visible_softmax", "sample_hidden vT",
          "gradient, W and bv update", "dbh (numpy)", "apply_update bh", "loop overhead"]


# The kernels before the issue-6 speed work.
BASELINE_REV = "bbe8eac"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def kernels_at(rev):
    """rbm_cuda/cpu/kernels.py at git revision `rev`, with the philox.py and simd.py of that revision
    (where it had them), imported as a package of their own next to today's."""
    pkg = f"kernels_at_{rev}".replace("-", "_").replace("~", "_").replace("^", "_")
    root = tempfile.mkdtemp(prefix="rbm_kernels_")
    os.makedirs(os.path.join(root, pkg))
    open(os.path.join(root, pkg, "__init__.py"), "w").close()
    for name in ("kernels", "philox", "simd"):
        shown = subprocess.run(["git", "-C", ROOT, "show", f"{rev}:rbm_cuda/cpu/{name}.py"], capture_output=True,
                               text=True)
        if shown.returncode != 0:
            if name == "kernels":
                raise SystemExit(f"no rbm_cuda/cpu/kernels.py at revision {rev}: {shown.stderr.strip()}")
            continue
        with open(os.path.join(root, pkg, f"{name}.py"), "w") as fh:
            fh.write(shown.stdout)
    sys.path.insert(0, root)
    return importlib.import_module(f"{pkg}.kernels")


def load(name):
    from throughput import load_data

    return load_data(name)


def make_model(X, batch_size, cd, hidden=100, seed=0):
    model = RBM(n_hidden=hidden, visible="softmax", cd_steps=cd, batch_size=batch_size, epochs=0, seed=seed,
                device="cpu").fit(X)
    d = model._device()
    d["neg_states"] = np.zeros(model.train_.nnz, dtype=np.int32)
    return model


def epoch(model, kn, times, epoch_index=0):
    """One softmax CD epoch as in RBM._epoch, with per-kernel timers added to `times`."""
    p = model._params
    d = model._device()
    steps = p.cd_at(epoch_index)
    momentum = p.momentum_at(epoch_index)
    F = model.W_.shape[2]
    neg = d["neg_states"]
    gbh = d["grad"][2]
    grouped = hasattr(kn, "group_by_item")
    if not grouped:
        gW, gbv = np.zeros_like(d["W"]), np.zeros_like(d["bv"])
    clock = time.perf_counter
    t_start = clock()
    order = np.random.Generator(np.random.Philox(key=p.seed, counter=[0, 0, 0, epoch_index])).permutation(
        np.flatnonzero(np.diff(model.train_.indptr)))
    step = 0
    for start in range(0, len(order), p.batch_size):
        rows = np.ascontiguousarray(order[start:start + p.batch_size], np.int64)
        step += 1
        B = rows.shape[0]
        ph0 = np.empty((B, F), dtype=np.float32)
        h = np.empty((B, F), dtype=np.float32)
        phT = np.empty((B, F), dtype=np.float32)
        t = clock()
        kn.sample_hidden(d["indptr"], d["indices"], d["states"], d["values"], rows, d["W"], d["bh"],
                         p.seed, step, 0, ph0, h, True)
        t1 = clock(); times[0] += t1 - t
        if grouped:
            group = kn.group_by_item(d["indptr"], d["indices"], rows, model.n_items_)
            times[1] += clock() - t1
        for g in range(1, steps + 1):
            t = clock()
            if grouped:
                kn.sample_visible_softmax(d["indptr"], d["indices"], rows, *group, h, d["W"], d["bv"], p.seed, step, g,
                                          neg)
            else:
                kn.sample_visible_softmax(d["indptr"], d["indices"], rows, h, d["W"], d["bv"], p.seed, step, g, neg)
            t1 = clock(); times[2] += t1 - t
            kn.sample_hidden(d["indptr"], d["indices"], neg, d["values"], rows, d["W"], d["bh"],
                             p.seed, step, g, phT, h, g < steps)
            t2 = clock(); times[3] += t2 - t1
        scale = 1.0 / B
        t = clock()
        if grouped:
            kn.update_softmax(*group, d["states"], neg, ph0, phT, d["W"], d["bv"], d["vel"][0], d["vel"][1],
                              p.learning_rate, momentum, p.weight_decay, scale)
        else:
            kn.scatter_gradients(d["indptr"], d["indices"], d["states"], d["values"], rows, ph0, np.float32(1.0),
                                 gW, gbv)
            kn.scatter_gradients(d["indptr"], d["indices"], neg, d["values"], rows, phT, np.float32(-1.0), gW, gbv)
            for param, grad, vel, decay in ((d["W"], gW, d["vel"][0], p.weight_decay), (d["bv"], gbv, d["vel"][1], 0.0)):
                kn.apply_update(param.reshape(-1), grad.reshape(-1), vel.reshape(-1), p.learning_rate, momentum,
                                decay, scale)
        t1 = clock(); times[4] += t1 - t
        gbh += ph0.sum(axis=0) - phT.sum(axis=0)
        t2 = clock(); times[5] += t2 - t1
        kn.apply_update(d["bh"], gbh, d["vel"][2], p.learning_rate, momentum, 0.0, scale)
        times[6] += clock() - t2
    return clock() - t_start


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ml-1m")
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--cd", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--baseline", nargs="?", const=BASELINE_REV, metavar="REV",
                    help=f"also profile rbm_cuda/cpu/kernels.py as it was at git revision REV (default {BASELINE_REV})")
    ap.add_argument("--other", metavar="PATH", action="append", default=[],
                    help="also profile the kernels module in this file (an experiment; repeatable)")
    a = ap.parse_args(argv)
    X = load(a.dataset)
    impls = {"current": current_kernels}
    if a.baseline:
        impls = {"baseline": kernels_at(a.baseline), "current": current_kernels}
    for n, path in enumerate(a.other, 1):
        name = "other" if len(a.other) == 1 else f"other{n}"
        impls[name] = load_module(path, f"{name}_kernels")
    models = {k: make_model(X, a.batch_size, a.cd) for k in impls}
    for k, kn in impls.items():  # warm-up (compilation, caches)
        epoch(models[k], kn, [0.0] * len(PHASES))
    acc = {k: [] for k in impls}
    for _ in range(a.epochs):
        for k, kn in impls.items():
            times = [0.0] * len(PHASES)
            total = epoch(models[k], kn, times)
            times[-1] = total - sum(times[:-1])
            acc[k].append(times + [total])
    print(f"# {a.dataset}, F=100, K=5, CD-{a.cd}, batch {a.batch_size}, {a.epochs} epochs, median ms per epoch; "
          f"load average {os.getloadavg()[0]:.2f}")
    med = {k: np.median(np.array(v), axis=0) * 1e3 for k, v in acc.items()}
    head = "| phase | " + " | ".join(f"{k} ms" for k in impls) + (" | baseline / current |" if a.baseline else " |")
    print(head)
    print("|" + "---|" * (len(impls) + 1 + bool(a.baseline)))
    for i, name in enumerate(PHASES + ["epoch (sum)"]):
        cells = [f"{med[k][i]:.1f}" for k in impls]
        ratio = ""
        if a.baseline:  # blank where the baseline has no such phase
            ratio = f" | {med['baseline'][i] / max(med['current'][i], 1e-9):.1f}x" if med['baseline'][i] else " | "
        print(f"| {name} | " + " | ".join(cells) + ratio + " |")


if __name__ == "__main__":
    main()
