"""Calling the compiled kernels with arrays: shared by the CuPy backend (rbm_cuda._cuda, device
memory) and the emulation backend (rbm_cuda._emu, the same kernel source run on the CPU over numpy
arrays).

Each method has the name and arguments of the Numba kernel in rbm_cuda/cpu/kernels.py.  It checks
dtypes, shapes and C-contiguity (the compiled side only sees pointers, so a wrong array would
silently read the wrong memory), then passes pointers, sizes, the stream and the device.  With
``check_bounds`` it also checks that every index points inside its array (rows, indptr, items,
levels): O(nnz) work and a device synchronisation per call, for tests and debugging
(``RBM_CUDA_CHECK_BOUNDS=1`` turns it on for the CuPy backend).
"""

from __future__ import annotations

import numpy as np

_U32 = 0xFFFFFFFF
_U64 = 0xFFFFFFFFFFFFFFFF

F32 = np.dtype(np.float32)
I32 = np.dtype(np.int32)
I64 = np.dtype(np.int64)
U32 = np.dtype(np.uint32)


def _shape_str(shape):
    return "(" + ", ".join("*" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


class PointerKernels:
    """The kernel methods of a backend whose kernels take raw pointers.

    Subclasses set ``name``, ``xp`` and implement ``_pointer(array)``; ``_stream()`` and
    ``_device()`` default to 0 (the host emulation ignores both).
    """

    name = "pointer"

    def __init__(self, module, xp, check_bounds=False):
        self._m = module
        self.xp = xp
        self.check_bounds = bool(check_bounds)
        self.host_reads = 0  # device values read on the host (each one a synchronisation on a GPU)

    def launch_count(self) -> int:
        """Kernel launches made by the compiled module so far (all threads, all backends sharing it)."""
        return self._m.launch_count()

    def _read(self, x) -> int:
        """A device scalar's value on the host, counted in host_reads."""
        self.host_reads += 1
        return int(x)

    def to_numpy(self, a):
        """A host copy of `a`, counted in host_reads."""
        self.host_reads += 1
        return self._to_numpy(a)

    # -- to override ----------------------------------------------------------------------------
    def _pointer(self, a) -> int:
        raise NotImplementedError

    def _to_numpy(self, a):
        raise NotImplementedError

    def _stream(self) -> int:
        return 0

    def _device(self) -> int:
        return 0

    # -- checks ------------------------------------------------------------------------------------
    def _ptr(self, a, name, dtype, shape, out=False):
        """Pointer of `a` after checking it is a C-contiguous `dtype` array of `shape` (None: any)."""
        if not hasattr(a, "dtype") or not hasattr(a, "shape"):
            raise TypeError(f"{name} must be an array, got {type(a).__name__}")
        if a.dtype != dtype:
            raise TypeError(f"{name} must be {dtype.name}, got {a.dtype}")
        if len(a.shape) != len(shape) or any(s is not None and s != t for s, t in zip(shape, a.shape)):
            raise ValueError(f"{name} has shape {tuple(a.shape)}, expected {_shape_str(shape)}")
        if not a.flags.c_contiguous:
            raise ValueError(f"{name} must be C-contiguous (the kernels index it as a flat array)")
        if out and not getattr(a.flags, "writeable", True):
            raise ValueError(f"{name} is read-only, but the kernel writes to it")
        return self._pointer(a)

    def _in_range(self, a, name, hi, lo=0):
        if not self.check_bounds or a.shape[0] == 0:
            return
        amin, amax = self._read(a.min()), self._read(a.max())
        if amin < lo or amax >= hi:
            raise IndexError(f"{name} must lie in [{lo}, {hi}), found values in [{amin}, {amax}]")

    def _check_rows(self, indptr, rows, nnz):
        n_rows = indptr.shape[0] - 1
        self._in_range(rows, "rows", n_rows)
        ip = indptr
        if self._read(ip[0]) < 0 or self._read(ip[-1]) > nnz or (n_rows > 0 and self._read((ip[1:] < ip[:-1]).any())):
            raise IndexError(f"indptr must be non-decreasing within [0, nnz = {nnz}]")

    def _csr(self, indptr, indices, states, values, rows, n_items, n_levels):
        """Checks the CSR rating arrays and returns their pointers and sizes."""
        nnz = indices.shape[0] if hasattr(indices, "shape") else None
        p_indptr = self._ptr(indptr, "indptr", I64, (None,))
        if indptr.shape[0] < 1:
            raise ValueError("indptr must have n_rows + 1 >= 1 entries")
        p_indices = self._ptr(indices, "indices", I32, (None,))
        p_states = self._ptr(states, "states", I32, (nnz,))
        if not hasattr(values, "shape") or values.shape[0] not in (0, nnz):
            raise ValueError(f"values must have 0 or nnz = {nnz} entries, got shape {getattr(values, 'shape', None)}")
        p_values = self._ptr(values, "values", F32, (values.shape[0],))
        p_rows = self._ptr(rows, "rows", I64, (None,))
        if self.check_bounds:
            self._check_rows(indptr, rows, nnz)
            self._in_range(indices, "indices", n_items)
            self._in_range(states, "states", n_levels)
        return p_indptr, p_indices, p_states, p_values, values.shape[0], p_rows, rows.shape[0]

    @staticmethod
    def _weights(W):
        if not hasattr(W, "shape") or len(W.shape) != 3:
            raise ValueError(f"W must be float32[n_items, K, F], got shape {getattr(W, 'shape', None)}")
        return W.shape

    # -- kernels (rbm_cuda/cpu/kernels.py) -------------------------------------------------------------
    def sample_hidden(self, indptr, indices, states, values, rows, W, bh, seed, step, gibbs, prob_out, sample_out,
                      sample):
        n_items, K, F = self._weights(W)
        p_indptr, p_indices, p_states, p_values, n_values, p_rows, B = self._csr(
            indptr, indices, states, values, rows, n_items, K)
        self._m.sample_hidden(
            p_indptr, p_indices, p_states, p_values, n_values, p_rows, B,
            self._ptr(W, "W", F32, (n_items, K, F)), K, F, self._ptr(bh, "bh", F32, (F,)),
            int(seed) & _U64, int(step) & _U32, int(gibbs) & _U32,
            self._ptr(prob_out, "prob_out", F32, (B, F), out=True),
            self._ptr(sample_out, "sample_out", F32, (B, F), out=True), bool(sample),
            self._stream(), self._device())

    def group_by_item(self, indptr, indices, rows, n_items):
        """rbm_cuda/cpu/kernels.py group_by_item, with array operations of ``xp`` (a stable sort by
        item of the batch's entries in batch order): the same four arrays, bit for bit."""
        xp = self.xp
        for a, name, dtype in ((indptr, "indptr", I64), (indices, "indices", I32), (rows, "rows", I64)):
            self._ptr(a, name, dtype, (None,))  # the checks only: no kernel runs here
        if self.check_bounds:
            self._check_rows(indptr, rows, indices.shape[0])
            self._in_range(indices, "indices", n_items)
        first = indptr[rows]
        counts = indptr[rows + 1] - first
        ends = xp.cumsum(counts)
        delta = (first - (ends - counts)).astype(np.int64)
        m = self._read(ends[-1]) if rows.shape[0] else 0
        if m > 2**31 - 1:
            raise ValueError(f"group_by_item: this batch holds {m:,} ratings, more than 2**31 - 1 (int32 slots); "
                             "use a smaller batch_size")
        p = xp.arange(m, dtype=np.int64)
        b_of_p = xp.searchsorted(ends, p, side="right")
        items = indices[p + delta[b_of_p]]
        order = xp.argsort(items, kind="stable") if xp is np else xp.argsort(items)  # CuPy's sort is stable
        start = xp.searchsorted(items[order], xp.arange(int(n_items) + 1), side="left").astype(np.int64)
        return start, b_of_p[order].astype(np.int32), order.astype(np.int32), delta

    def epoch_batches(self, indptr, indices, order, batch_size, n_items, host_indptr, grouped=True):
        """The epoch's batches as (rows, group) pairs: rows the batch's slice of `order`, group the
        batch's group_by_item arrays (None when not `grouped`), bit for bit.  One pass over the epoch
        sorts its entries by (batch, item), with sizes taken from the host copy of indptr; each batch
        then costs one search of its sorted items for `start`, and no transfer.  Device memory: a few
        arrays of the epoch's ratings, freed as the batches are reached.

        indptr, indices: the backend's arrays; order: host int64[R]; host_indptr: host int64[n_rows + 1]."""
        xp = self.xp
        order = np.asarray(order, dtype=np.int64)
        B, R = int(batch_size), len(order)
        rows = self.asarray(order, np.int64)  # uploaded once per epoch; each batch is a view
        cuts = list(range(0, R, B)) + [R]
        if not grouped:
            for a, b in zip(cuts[:-1], cuts[1:]):
                yield rows[a:b], None
            return
        for a, name, dtype in ((indptr, "indptr", I64), (indices, "indices", I32)):
            self._ptr(a, name, dtype, (None,))
        if self.check_bounds:
            self._check_rows(indptr, rows, indices.shape[0])
            self._in_range(indices, "indices", n_items)
        counts_h = host_indptr[order + 1] - host_indptr[order]
        row_start_h = np.cumsum(counts_h) - counts_h  # each row's first entry in the epoch's order
        offsets_h = np.append(row_start_h[cuts[:-1]], counts_h.sum())  # each batch's first entry
        worst = int(np.diff(offsets_h).max()) if R else 0
        if worst > 2**31 - 1:
            raise ValueError(f"a batch holds {worst:,} ratings, more than 2**31 - 1 (int32 slots); "
                             "use a smaller batch_size")
        offsets = self.asarray(offsets_h, np.int64)
        row_start = self.asarray(row_start_h, np.int64)
        first = indptr[rows]
        delta = first - (row_start - offsets[xp.arange(R, dtype=np.int64) // B])  # CSR = batch position + delta
        p = xp.arange(int(offsets_h[-1]), dtype=np.int64)
        row_of_p = xp.searchsorted(row_start, p, side="right") - 1
        items = indices[first[row_of_p] + (p - row_start[row_of_p])].astype(np.int64)
        del first, p
        batch_of_p = row_of_p // B
        sort = xp.argsort(batch_of_p * n_items + items, kind="stable") if xp is np else \
            xp.argsort(batch_of_p * n_items + items)  # CuPy's sort is stable
        items_sorted = items[sort].astype(np.int32)
        batch_sorted = batch_of_p[sort]
        slot_b = (row_of_p[sort] - batch_sorted * B).astype(np.int32)
        slot_p = (sort - offsets[batch_sorted]).astype(np.int32)
        del items, batch_of_p, row_of_p, sort, batch_sorted
        bounds = xp.arange(n_items + 1, dtype=np.int32)
        for k, (a, b) in enumerate(zip(cuts[:-1], cuts[1:])):
            lo, hi = int(offsets_h[k]), int(offsets_h[k + 1])
            start = xp.searchsorted(items_sorted[lo:hi], bounds, side="left")
            yield rows[a:b], (start, slot_b[lo:hi], slot_p[lo:hi], delta[a:b])

    def _group(self, start, slot_b, slot_p, delta, n_items, B):
        """Checks group_by_item's arrays; returns their pointers and the number of slots."""
        m = slot_b.shape[0] if hasattr(slot_b, "shape") else None
        ptrs = (self._ptr(start, "start", I64, (n_items + 1,)), self._ptr(slot_b, "slot_b", I32, (None,)),
                self._ptr(slot_p, "slot_p", I32, (m,)), self._ptr(delta, "delta", I64, (B,)))
        if self.check_bounds:
            if self._read(start[0]) != 0 or self._read(start[-1]) != m or \
                    (n_items > 0 and self._read((start[1:] < start[:-1]).any())):
                raise IndexError(f"start must rise from 0 to the number of slots ({m})")
            self._in_range(slot_b, "slot_b", B)
            self._in_range(slot_p, "slot_p", m)
        return ptrs, m

    def sample_visible_softmax(self, indptr, indices, rows, start, slot_b, slot_p, delta, h, W, bv, seed, step,
                               gibbs, out_states):
        n_items, K, F = self._weights(W)
        nnz = indices.shape[0]
        self._ptr(indptr, "indptr", I64, (None,))
        p_indices = self._ptr(indices, "indices", I32, (None,))
        B = rows.shape[0]
        self._ptr(rows, "rows", I64, (B,))
        (_, p_slot_b, p_slot_p, p_delta), m = self._group(start, slot_b, slot_p, delta, n_items, B)
        if self.check_bounds:
            self._check_rows(indptr, rows, nnz)
            self._in_range(indices, "indices", n_items)
        if self.check_bounds and self._read(((h != 0) & (h != 1)).any()):
            raise ValueError("sample_visible_softmax: h must hold binary hidden states (0.0 or 1.0)")
        hbits = self.xp.empty((B, (F + 31) // 32), dtype=np.uint32)  # scratch: the kernel reads h as bits
        self._m.sample_visible_softmax(
            p_indices, p_slot_b, p_slot_p, p_delta, m, self._ptr(h, "h", F32, (B, F)), B,
            self._ptr(hbits, "hbits", U32, hbits.shape, out=True),
            self._ptr(W, "W", F32, (n_items, K, F)), self._ptr(bv, "bv", F32, (n_items, K)), K, F,
            int(seed) & _U64, int(step) & _U32, int(gibbs) & _U32,
            self._ptr(out_states, "out_states", I32, (nnz,), out=True), self._stream(), self._device())

    def sigmoid_bernoulli(self, logits, rows, seed, step, gibbs, phase, prob_out, sample_out):
        if not hasattr(logits, "shape") or len(logits.shape) != 2:
            raise ValueError(f"logits must be float32[B, N], got shape {getattr(logits, 'shape', None)}")
        B, N = logits.shape
        self._m.sigmoid_bernoulli(
            self._ptr(logits, "logits", F32, (B, N)), B, N, self._ptr(rows, "rows", I64, (B,)),
            int(seed) & _U64, int(step) & _U32, int(gibbs) & _U32, int(phase) & _U32,
            self._ptr(prob_out, "prob_out", F32, (B, N), out=True),
            self._ptr(sample_out, "sample_out", F32, (B, N), out=True), self._stream(), self._device())

    def compact_rows(self, dense, indptr_out, indices_out):
        if not hasattr(dense, "shape") or len(dense.shape) != 2:
            raise ValueError(f"dense must be float32[B, N], got shape {getattr(dense, 'shape', None)}")
        B, N = dense.shape
        p_dense = self._ptr(dense, "dense", F32, (B, N))
        p_indptr = self._ptr(indptr_out, "indptr_out", I64, (B + 1,), out=True)
        # the kernel cannot stop at a full buffer: room for every column, as the Numba kernel's check
        # would only find out after the count
        p_indices = self._ptr(indices_out, "indices_out", I32, (None,), out=True)
        if indices_out.shape[0] < B * N:
            raise ValueError(f"indices_out has {indices_out.shape[0]} entries, compact_rows needs B * N = {B * N}")
        counts = self.xp.empty(B * (-(-N // self._m.COMPACT_CHUNK)), dtype=np.int64)  # scratch
        self._m.compact_rows(p_dense, B, N, self._ptr(counts, "chunk_counts", I64, counts.shape, out=True), p_indptr,
                             p_indices, self._stream(), self._device())

    def scatter_gradients(self, indptr, indices, states, values, rows, ph, sign, dW, dbv):
        n_items, K, F = self._weights(dW)
        p_indptr, p_indices, p_states, p_values, n_values, p_rows, B = self._csr(
            indptr, indices, states, values, rows, n_items, K)
        self._m.scatter_gradients(
            p_indptr, p_indices, p_states, p_values, n_values, p_rows, B, self._ptr(ph, "ph", F32, (B, F)),
            float(sign), self._ptr(dW, "dW", F32, (n_items, K, F), out=True),
            self._ptr(dbv, "dbv", F32, (n_items, K), out=True), K, F, self._stream(), self._device())

    def apply_update(self, param, grad, velocity, learning_rate, momentum, weight_decay, scale):
        n = param.shape[0] if hasattr(param, "shape") and len(param.shape) == 1 else None
        if n is None:
            raise ValueError(f"param must be a flat float32 array, got shape {getattr(param, 'shape', None)}")
        self._m.apply_update(
            self._ptr(param, "param", F32, (n,), out=True), self._ptr(grad, "grad", F32, (n,), out=True),
            self._ptr(velocity, "velocity", F32, (n,), out=True), n, float(learning_rate), float(momentum),
            float(weight_decay), float(scale), self._stream(), self._device())

    def update_hidden_bias(self, ph0, phT, bh, grad, velocity, learning_rate, momentum, scale):
        if not hasattr(ph0, "shape") or len(ph0.shape) != 2:
            raise ValueError(f"ph0 must be float32[B, F], got shape {getattr(ph0, 'shape', None)}")
        B, F = ph0.shape
        self._m.update_hidden_bias(
            self._ptr(ph0, "ph0", F32, (B, F)), self._ptr(phT, "phT", F32, (B, F)), B, F,
            self._ptr(bh, "bh", F32, (F,), out=True), self._ptr(grad, "grad", F32, (F,), out=True),
            self._ptr(velocity, "velocity", F32, (F,), out=True), float(learning_rate), float(momentum), float(scale),
            self._stream(), self._device())

    def update_softmax(self, start, slot_b, slot_p, delta, states, neg_states, ph0, phT, W, bv, vel_W, vel_bv,
                       learning_rate, momentum, weight_decay, scale, last, step):
        n_items, K, F = self._weights(W)
        B = delta.shape[0] if hasattr(delta, "shape") else None
        (p_start, p_slot_b, p_slot_p, p_delta), _ = self._group(start, slot_b, slot_p, delta, n_items, B)
        nnz = states.shape[0] if hasattr(states, "shape") else None
        p_states = self._ptr(states, "states", I32, (nnz,))
        p_neg = self._ptr(neg_states, "neg_states", I32, (nnz,))
        if self.check_bounds:
            self._in_range(states, "states", K)
            self._in_range(neg_states, "neg_states", K)
        self._m.update_softmax(
            p_start, p_slot_b, p_slot_p, p_delta, p_states, p_neg, self._ptr(ph0, "ph0", F32, (B, F)),
            self._ptr(phT, "phT", F32, (B, F)), self._ptr(W, "W", F32, (n_items, K, F), out=True),
            self._ptr(bv, "bv", F32, (n_items, K), out=True),
            self._ptr(vel_W, "vel_W", F32, (n_items, K, F), out=True),
            self._ptr(vel_bv, "vel_bv", F32, (n_items, K), out=True), n_items, K, F, float(learning_rate),
            float(momentum), float(weight_decay), float(scale), self._ptr(last, "last", I64, (n_items,), out=True),
            int(step), self._stream(), self._device())

    def catch_up(self, start, last, step, W, bv, vel_W, vel_bv, powers_W, powers_bv, mark):
        n_items, K, F = self._weights(W)
        step = int(step)
        p_start = self._ptr(start, "start", I64, (n_items + 1,))
        p_last = self._ptr(last, "last", I64, (n_items,), out=True)
        rows = powers_W.shape[0] if hasattr(powers_W, "shape") else None
        p_pW = self._ptr(powers_W, "powers_W", F32, (rows, 4))
        p_pb = self._ptr(powers_bv, "powers_bv", F32, (rows, 4))
        if self.check_bounds and n_items:  # every gap step - last[i] >= 0 must have its row in the tables
            lo, hi = self._read(last.min()), self._read(last.max())
            if hi > step or step - lo >= rows:
                raise ValueError(f"last holds steps {lo} .. {hi}: the gaps to step {step} need powers rows up to "
                                 f"{step - lo}, there are {rows} (and no item may be ahead of the step)")
        self._m.catch_up(
            p_start, p_last, step, self._ptr(W, "W", F32, (n_items, K, F), out=True),
            self._ptr(bv, "bv", F32, (n_items, K), out=True),
            self._ptr(vel_W, "vel_W", F32, (n_items, K, F), out=True),
            self._ptr(vel_bv, "vel_bv", F32, (n_items, K), out=True), n_items, K, F, p_pW, p_pb, bool(mark),
            self._stream(), self._device())

    def predict_pairs(self, ph, pair_rows, items, W, bv, levels, out):
        n_items, K, F = self._weights(W)
        if not hasattr(ph, "shape") or len(ph.shape) != 2:
            raise ValueError(f"ph must be float32[U, F], got shape {getattr(ph, 'shape', None)}")
        P = items.shape[0]
        if self.check_bounds:
            self._in_range(pair_rows, "pair_rows", ph.shape[0])
            self._in_range(items, "items", n_items)
        self._m.predict_pairs(
            self._ptr(ph, "ph", F32, (ph.shape[0], F)), self._ptr(pair_rows, "pair_rows", I64, (P,)),
            self._ptr(items, "items", I32, (P,)), P, self._ptr(W, "W", F32, (n_items, K, F)),
            self._ptr(bv, "bv", F32, (n_items, K)), self._ptr(levels, "levels", F32, (K,)), K, F,
            self._ptr(out, "out", F32, (P,), out=True), self._stream(), self._device())

    def score_items(self, logits, bv, levels, out):
        if not hasattr(bv, "shape") or len(bv.shape) != 2:
            raise ValueError(f"bv must be float32[n_items, K], got shape {getattr(bv, 'shape', None)}")
        n_items, K = bv.shape
        U = logits.shape[0]
        self._m.score_items(
            self._ptr(logits, "logits", F32, (U, n_items * K)), U, self._ptr(bv, "bv", F32, (n_items, K)), n_items, K,
            self._ptr(levels, "levels", F32, (K,)), self._ptr(out, "out", F32, (U, n_items), out=True),
            self._stream(), self._device())

    def free_energy(self, indptr, indices, states, values, rows, W, bv, bh, out):
        n_items, K, F = self._weights(W)
        p_indptr, p_indices, p_states, p_values, n_values, p_rows, B = self._csr(
            indptr, indices, states, values, rows, n_items, K)
        scratch = self.xp.empty((B, F), dtype=np.float32)
        self._m.free_energy(
            p_indptr, p_indices, p_states, p_values, n_values, p_rows, B, self._ptr(W, "W", F32, (n_items, K, F)),
            self._ptr(bv, "bv", F32, (n_items, K)), self._ptr(bh, "bh", F32, (F,)), K, F,
            self._ptr(out, "out", F32, (B,), out=True), self._ptr(scratch, "scratch", F32, (B, F), out=True),
            self._stream(), self._device())

    # -- Philox (rbm_cuda/cpu/philox.py), computed by a kernel ------------------------------------------
    def philox_words(self, seed, step, gibbs, phase, start, count):
        out = self.xp.empty(int(count), dtype=np.uint32)
        self._m.philox_words(int(seed) & _U64, int(step) & _U32, int(gibbs) & _U32, int(phase) & _U32,
                             int(start) & _U64, int(count), self._ptr(out, "out", U32, (int(count),), out=True),
                             self._stream(), self._device())
        return out

    def philox_uniforms(self, seed, step, gibbs, phase, start, count):
        out = self.xp.empty(int(count), dtype=np.float32)
        self._m.philox_uniforms(int(seed) & _U64, int(step) & _U32, int(gibbs) & _U32, int(phase) & _U32,
                                int(start) & _U64, int(count), self._ptr(out, "out", F32, (int(count),), out=True),
                                self._stream(), self._device())
        return out

    def synchronize(self):
        """Wait for the kernels queued so far (no-op on the host emulation)."""
        self._m.synchronize(self._stream(), self._device())
