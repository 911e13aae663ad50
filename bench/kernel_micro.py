"""Micro-benchmark of one kernel on 1000-user batches of a data set: the current kernels
(rbm_cuda/cpu/kernels.py) and other copies of the module, calls alternating (each copy first in
turn), min and median of N.
Checks first that every copy gives the same result (max abs diff / mismatching states).

    PYTHONPATH=. python bench/kernel_micro.py visible /tmp/exp/old_kernels.py   # or hidden, scatter, update,
                                                                                 # update-stream, apply_update, free_energy
    DS=ml-20m N=10 PYTHONPATH=. python bench/kernel_micro.py hidden /tmp/exp/old_kernels.py
    F=50 PYTHONPATH=. python bench/kernel_micro.py update   # hidden units (default 100)
    PYTHONPATH=. python bench/kernel_micro.py tile /tmp/exp/old_kernels.py   # the logits of one tile, in cache

`update` times update_softmax, the softmax step's fused gradient and update (the grouping not
timed), on random probabilities and negative states; `update-stream` the same call with one slot per
item, so that little but the momentum and decay stream over W and its velocity is left; `apply_update` the
unfused update of W (bernoulli visible units).

`tile` times the visible kernel's logits alone (_level_logits, K = 5, F = 100) on one tile per
thread that stays in L1, 16-lane and 8-lane tiles (ns per tile, both threads at once).

A copy must import philox absolutely (from rbm_cuda.cpu.philox import ...) and live in a directory
of its own (it is imported by file name; Numba caches next to it).
"""
import sys, os, time, importlib
import numpy as np
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE)); sys.path.insert(0, HERE)
from throughput import load_data
from rbm_cuda.cpu import kernels as cur

def mod(path):
    sys.path.insert(0, os.path.dirname(path)); return importlib.import_module(os.path.basename(path)[:-3])

ds = os.environ.get('DS', 'ml-1m')
X = load_data(ds)
# F=50 halves every row's bytes with the same instructions per row (the kernels' seven 16-lane
# vectors, the last ones masked off): what storing rows in 16-bit floats could at most buy.
K, F, B = 5, int(os.environ.get('F', 100)), 1000
rng = np.random.default_rng(0)
n_items = X.shape[1]
W = (rng.standard_normal((n_items, K, F)) * 0.05).astype(np.float32)
bv = (rng.standard_normal((n_items, K)) * 0.1).astype(np.float32)
bh = np.zeros(F, np.float32)
ip = X.indptr.astype(np.int64); ind = X.indices.astype(np.int32)
states = (X.data.astype(np.int32) - 1)
values = np.empty(0, np.float32)
batches = [np.ascontiguousarray(rng.permutation(X.shape[0])[:B]) for _ in range(4)]
h = (rng.random((B, F)) < 0.5).astype(np.float32)
ph = rng.random((B, F)).astype(np.float32)
DW = np.zeros_like(W); DBV = np.zeros_like(bv)
ph_neg = rng.random((B, F)).astype(np.float32)
neg_states = rng.integers(0, K, X.nnz).astype(np.int32)
# update, update-stream: each copy's W, bv and their velocities, kept across calls (copying them inside
# the timed call would time the copies); the result check runs every copy once from the same start.
PARAMS = {}
GROUPS = {}
# The negative states live across batches in the model: one array, its pages mapped once (a fresh
# np.zeros per call would time the page faults of the batch's CSR positions too).
OUT_STATES = np.ones(X.nnz, np.int32)

def tile_loop(kn):
    """An njit loop of kn's _level_logits over one tile per thread (Numba compiles one per copy)."""
    from numba import njit, prange
    logits = kn._level_logits

    @njit(parallel=True)
    def loop(Wi, hw, z, reps, n):
        for c in prange(2):
            for _ in range(reps):
                logits(Wi, hw[c], 5, n, z[c])
    return loop


def time_tiles(mods):
    Wi = W[0].copy()
    hw = rng.integers(0, 2**32, (2, (F + 31) // 32, 16), dtype=np.uint64).astype(np.uint32)
    loops = {name: tile_loop(kn) for name, kn in mods.items()}
    reps = 20000
    for n in (16, 8):
        ref = None
        for name, loop in loops.items():
            z = np.zeros((2, K, 16), np.float32)
            loop(Wi, hw, z, 1, n)
            if ref is None:
                ref = z.copy()
            elif not np.array_equal(ref[..., :n], z[..., :n]):
                print(name, 'logits differ')
        ts = {name: [] for name in loops}
        for _ in range(int(os.environ.get('N', 20))):
            for name, loop in loops.items():
                t = time.perf_counter()
                loop(Wi, hw, z, reps, n)
                ts[name].append((time.perf_counter() - t) / reps)
        base = np.median(ts['cur'])
        print(f'tile of {n} lanes, load {os.getloadavg()[0]:.2f}')
        for name, t in ts.items():
            print(f'  {name:10s} min {min(t)*1e9:7.1f} ns  median {np.median(t)*1e9:7.1f} ns  '
                  f'cur/this median {base/np.median(t):.2f}x')


def run(kn, which, rows):
    if which == 'visible':
        out = OUT_STATES
        if hasattr(kn, 'group_by_item'):  # the grouping is part of the timed call, as it was inside the old kernel
            kn.sample_visible_softmax(ip, ind, rows, *kn.group_by_item(ip, ind, rows, n_items), h, W, bv, 1, 2, 1, out)
        else:
            kn.sample_visible_softmax(ip, ind, rows, h, W, bv, 1, 2, 1, out)
        return out
    if which == 'hidden':
        p = np.empty((B, F), np.float32); s = np.empty((B, F), np.float32)
        kn.sample_hidden(ip, ind, states, values, rows, W, bh, 1, 2, 0, p, s, True); return p, s
    if which == 'scatter':
        dW = DW; dbv = DBV
        kn.scatter_gradients(ip, ind, states, values, rows, ph, np.float32(1.0), dW, dbv); return dW, dbv
    if which == 'free_energy':
        out = np.empty(B, np.float32)
        kn.free_energy(ip, ind, states, values, rows, W, bv, bh, out); return out
    if which in ('update', 'update-stream'):
        key = rows.ctypes.data
        if key not in GROUPS:  # the grouping is the current kernels' (not timed)
            group = cur.group_by_item(ip, ind, rows, n_items)
            delta = group[3]
            # one slot per item, all the first entry of the batch's first row with ratings: the stream
            # with almost no gradient, the items spread over the parallel tasks as evenly as in a
            # batch that rates each item once
            b0 = int(np.flatnonzero(ip[rows + 1] > ip[rows])[0])
            one_b = np.full(n_items, b0, np.int32)
            one_p = np.full(n_items, ip[rows[b0]] - delta[b0], np.int32)
            GROUPS[key] = {'update': group, 'update-stream': (np.arange(n_items + 1), one_b, one_p, delta)}
        start, slot_b, slot_p, delta = GROUPS[key][which]
        if id(kn) not in PARAMS:
            PARAMS[id(kn)] = W.copy(), bv.copy(), np.zeros_like(W), np.zeros_like(bv)
        Wc, bvc, vW, vbv = PARAMS[id(kn)]
        kn.update_softmax(start, slot_b, slot_p, delta, states, neg_states, ph, ph_neg, Wc, bvc, vW, vbv,
                          0.1, 0.8, 0.003, 1.0 / B)
        return Wc, bvc
    if which == 'apply_update':
        Wc = W.copy(); g = W.copy(); v = np.zeros_like(W)
        kn.apply_update(Wc.reshape(-1), g.reshape(-1), v.reshape(-1), 0.1, 0.8, 0.003, 0.001); return Wc

which = sys.argv[1]; paths = sys.argv[2:]
mods = {'cur': cur}
for p in paths: mods[os.path.basename(p)] = mod(p)
if which == 'tile':
    time_tiles(mods)
    sys.exit(0)
# check equality of results
ref = None
for name, kn in mods.items():
    DW[:] = 0; DBV[:] = 0
    r = run(kn, which, batches[0])
    r = tuple(x.copy() for x in r) if isinstance(r, tuple) else r.copy()
    OUT_STATES[:] = 1
    r = r if isinstance(r, tuple) else (r,)
    if ref is None: ref = r
    else:
        for a, b in zip(ref, r):
            if a.dtype.kind == 'f':
                print(name, 'max abs diff', float(np.abs(a - b).max()), 'identical' if np.array_equal(a, b) else '')
            else:
                print(name, 'mismatches', int((a != b).sum()), 'of', int((a != 0).sum() + (a == 0).sum()))
ts = {n: [] for n in mods}
N = int(os.environ.get('N', 20))
# Each round's first call meets the batch's rows cold and the calls after it find them in cache (an
# unchanged copy of the kernels timed after the current ones came out 1.10x faster): the order rotates,
# so that every copy goes first equally often when N is a multiple of the number of copies.
names = list(mods)
for it in range(N):
    rows = batches[it % 4]
    for name in names[it % len(names):] + names[:it % len(names)]:
        kn = mods[name]
        t = time.perf_counter(); run(kn, which, rows); ts[name].append(time.perf_counter() - t)
print(f'{which} {ds} load {os.getloadavg()[0]:.2f}')
base = np.median(ts['cur'])
for n, t in ts.items():
    print(f'  {n:10s} min {min(t)*1e3:7.2f} ms  median {np.median(t)*1e3:7.2f} ms  cur/this median {base/np.median(t):.2f}x  min {min(ts["cur"])/min(t):.2f}x')
