"""Calling the compiled kernels with arrays: shared by the CuPy backend (rbm_cuda._cuda, device
memory) and the emulation backend (rbm_cuda._emu, the same kernel source run on the CPU over numpy
arrays).

Each method has the name and arguments of the Numba kernel in rbm_cuda/cpu/kernels.py and passes
the arrays on with the stream and the device.  The compiled functions take typed arrays: nanobind
checks each one's dtype, C order and device (a TypeError otherwise), and csrc/bindings.cpp checks
their shapes against each other (a ValueError naming the array).  With ``check_bounds`` the methods
also check that every index points inside its array (rows, indptr, items, levels): O(nnz) work and a
device synchronisation per call, for tests and debugging (``RBM_CUDA_CHECK_BOUNDS=1`` turns it on for
the CuPy backend).
"""

from __future__ import annotations

import numpy as np

_U32 = 0xFFFFFFFF
_U64 = 0xFFFFFFFFFFFFFFFF


def _require(a, name, dtype):
    """TypeError unless `a` is an array of `dtype` (for the methods that run array operations, not a
    kernel, on their inputs)."""
    if not hasattr(a, "dtype") or a.dtype != dtype:
        raise TypeError(f"{name} must be a {np.dtype(dtype).name} array, got {getattr(a, 'dtype', type(a).__name__)}")


def _shape(a, name, ndim):
    """a's shape, after checking that it is an array of ndim dimensions: for the methods that read a
    shape before the compiled function checks its arguments."""
    if not hasattr(a, "shape") or not hasattr(a, "dtype"):
        raise TypeError(f"{name} must be an array, got {type(a).__name__}")
    if len(a.shape) != ndim:
        raise ValueError(f"{name} must have {ndim} dimension{'s' if ndim > 1 else ''}, got shape {tuple(a.shape)}")
    return a.shape


class CompiledKernels:
    """The kernel methods of a backend whose kernels are a compiled module (rbm_cuda._cuda or _emu).

    Subclasses set ``name`` and ``xp`` and implement ``_to_numpy``; ``_stream()`` and ``_device()``
    default to 0 (the host emulation ignores both).
    """

    name = "compiled"
    # update_bernoulli runs scatter_gradients into W-sized gradient arrays, which training allocates
    gradient_scratch = True

    def __init__(self, module, xp, check_bounds=False):
        self._m = module
        self.xp = xp
        self.check_bounds = bool(check_bounds)
        self.host_reads = 0  # device values read on the host (each one a synchronisation on a GPU)
        self._draw_scratch = None  # sample_bernoulli_rows: the dense probabilities and draws
        # sample_hidden: the parts of long rows and their counts.  One per backend, so a backend must not
        # run sample_hidden from two threads (or streams) at once; training and the web app do not.
        self._hidden_scratch = None

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
    def _to_numpy(self, a):
        raise NotImplementedError

    def _stream(self) -> int:
        return 0

    def _device(self) -> int:
        return 0

    # -- bounds checks (check_bounds) ------------------------------------------------------------------
    def _in_range(self, a, name, hi, lo=0):
        if not self.check_bounds or _shape(a, name, 1)[0] == 0:
            return
        amin, amax = self._read(a.min()), self._read(a.max())
        if amin < lo or amax >= hi:
            raise IndexError(f"{name} must lie in [{lo}, {hi}), found values in [{amin}, {amax}]")

    def _check_rows(self, indptr, rows, nnz):
        n_rows = _shape(indptr, "indptr", 1)[0] - 1
        self._in_range(rows, "rows", n_rows)
        ip = indptr
        if self._read(ip[0]) < 0 or self._read(ip[-1]) > nnz or (n_rows > 0 and self._read((ip[1:] < ip[:-1]).any())):
            raise IndexError(f"indptr must be non-decreasing within [0, nnz = {nnz}]")

    def _check_csr(self, indptr, indices, states, rows, W):
        """With check_bounds: rows, indptr, indices and states of a batch's ratings within their arrays."""
        if self.check_bounds and _shape(indptr, "indptr", 1)[0] >= 1:
            n_items, K, _ = _shape(W, "W", 3)
            self._check_rows(indptr, rows, _shape(indices, "indices", 1)[0])
            self._in_range(indices, "indices", n_items)
            self._in_range(states, "states", K)

    def _check_group(self, start, slot_b, slot_p, B):
        if self.check_bounds and _shape(start, "start", 1)[0] >= 1:
            m = _shape(slot_b, "slot_b", 1)[0]
            if self._read(start[0]) != 0 or self._read(start[-1]) != m or \
                    (start.shape[0] > 1 and self._read((start[1:] < start[:-1]).any())):
                raise IndexError(f"start must rise from 0 to the number of slots ({m})")
            self._in_range(slot_b, "slot_b", B)
            self._in_range(slot_p, "slot_p", m)

    # -- kernels (rbm_cuda/cpu/kernels.py) -------------------------------------------------------------
    # sample_hidden launches at most this many rows at once, which bounds its scratch (rows x ROW_PARTS x F)
    HIDDEN_ROWS_PER_LAUNCH = 4096

    def reserve_hidden(self, n_rows, n_hidden):
        """Allocate sample_hidden's scratch for calls of up to n_rows rows before an epoch's batches,
        so that no batch allocates (or zeroes) device memory."""
        self._hidden_parts(min(n_rows, self.HIDDEN_ROWS_PER_LAUNCH), n_hidden)

    def _hidden_parts(self, n_rows, n_hidden):
        """sample_hidden's scratch for n_rows rows, kept between calls: partial float32[n, ROW_PARTS, F]
        (written before it is read) and arrived int32[n, F], zero (the kernel leaves it zero)."""
        if n_rows == 0:  # an empty batch sums nothing: the kept scratch stays as it is
            return (self.xp.empty((0, self._m.ROW_PARTS, n_hidden), dtype=np.float32),
                    self.xp.empty((0, n_hidden), dtype=np.int32))
        s = self._hidden_scratch
        if s is None or s[0].shape[0] < n_rows or s[0].shape[2] != n_hidden:
            s = (self.xp.zeros((n_rows, self._m.ROW_PARTS, n_hidden), dtype=np.float32),
                 self.xp.zeros((n_rows, n_hidden), dtype=np.int32))
            self._hidden_scratch = s
        return s[0][:n_rows], s[1][:n_rows]

    def sample_hidden(self, indptr, indices, states, values, rows, W, bh, seed, step, gibbs, prob_out, sample_out,
                      sample):
        """kernels.sample_hidden; a row longer than ROW_CHUNK entries is summed in parts (csrc/kernel_math.cuh,
        row_parts), equal to the Numba twin's running sum up to rounding."""
        self._check_csr(indptr, indices, states, rows, W)
        B, F = _shape(rows, "rows", 1)[0], _shape(bh, "bh", 1)[0]
        step_rows = self.HIDDEN_ROWS_PER_LAUNCH
        try:
            for s in range(0, max(B, 1), step_rows):  # an empty batch too: the binding checks its arrays
                e = min(B, s + step_rows)
                partial, arrived = self._hidden_parts(e - s, F)
                self._m.sample_hidden(indptr, indices, states, values, rows[s:e], W, bh, int(seed) & _U64,
                                      int(step) & _U32, int(gibbs) & _U32, prob_out[s:e], sample_out[s:e],
                                      bool(sample), partial, arrived, self._stream(), self._device())
        except BaseException:
            self._hidden_scratch = None  # counts of a launch that did not finish: start from zeros again
            raise

    def group_by_item(self, indptr, indices, rows, n_items):
        """rbm_cuda/cpu/kernels.py group_by_item, with array operations of ``xp`` (a stable sort by
        item of the batch's entries in batch order): the same four arrays, bit for bit."""
        xp = self.xp
        for a, name, dtype in ((indptr, "indptr", np.int64), (indices, "indices", np.int32), (rows, "rows", np.int64)):
            _require(a, name, dtype)  # no kernel runs here to check them
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
        for a, name, dtype in ((indptr, "indptr", np.int64), (indices, "indices", np.int32)):
            _require(a, name, dtype)
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

    def sample_visible_softmax(self, indptr, indices, rows, start, slot_b, slot_p, delta, h, W, bv, seed, step,
                               gibbs, out_states):
        B, F = _shape(h, "h", 2)
        if _shape(delta, "delta", 1)[0] != _shape(rows, "rows", 1)[0]:  # the kernel sees delta, not rows
            raise ValueError(f"delta has shape {tuple(delta.shape)}, expected ({rows.shape[0]},): one per row")
        if self.check_bounds:
            self._check_rows(indptr, rows, _shape(indices, "indices", 1)[0])
            self._in_range(indices, "indices", _shape(W, "W", 3)[0])
            self._check_group(start, slot_b, slot_p, rows.shape[0])
            if self._read(((h != 0) & (h != 1)).any()):
                raise ValueError("sample_visible_softmax: h must hold binary hidden states (0.0 or 1.0)")
        hbits = self.xp.empty((B, (F + 31) // 32), dtype=np.uint32)  # scratch: the kernel reads h as bits
        self._m.sample_visible_softmax(indices, slot_b, slot_p, delta, h, hbits, W, bv, int(seed) & _U64,
                                       int(step) & _U32, int(gibbs) & _U32, out_states, self._stream(), self._device())

    def sigmoid_bernoulli(self, logits, rows, seed, step, gibbs, phase, prob_out, sample_out):
        self._m.sigmoid_bernoulli(logits, rows, int(seed) & _U64, int(step) & _U32, int(gibbs) & _U32,
                                  int(phase) & _U32, prob_out, sample_out, self._stream(), self._device())

    def compact_rows(self, dense, indptr_out, indices_out):
        B, N = _shape(dense, "dense", 2)
        counts = self.xp.empty(B * (-(-N // self._m.COMPACT_CHUNK)), dtype=np.int64)  # scratch
        self._m.compact_rows(dense, counts, indptr_out, indices_out, self._stream(), self._device())

    def sample_bernoulli_rows(self, logits, bv, rows, seed, step, gibbs, phase, indptr_out, indices_out):
        """kernels.sample_bernoulli_rows in steps: the bias added to the logits in place, then
        sigmoid_bernoulli and compact_rows through dense probabilities and draws kept for the next
        batch of the same shape."""
        B, N = _shape(logits, "logits", 2)
        if _shape(bv, "bv", 1)[0] != N:
            raise ValueError(f"bv has shape {tuple(bv.shape)}, expected ({N},): one bias per column of logits")
        if _shape(indices_out, "indices_out", 1)[0] < B * N:
            raise ValueError("sample_bernoulli_rows: indices_out must hold B * N entries")
        if self._draw_scratch is None or self._draw_scratch[0].shape != (B, N):
            self._draw_scratch = tuple(self.xp.empty((B, N), dtype=np.float32) for _ in range(2))
        prob, draws = self._draw_scratch
        logits += bv[None, :]
        self.sigmoid_bernoulli(logits, rows, seed, step, gibbs, phase, prob, draws)
        self.compact_rows(draws, indptr_out, indices_out)

    def update_bernoulli(self, indptr, indices, states, values, rows, ph0, s_indptr, s_indices, s_states, s_values,
                         s_rows, phT, W, bv, vel_W, vel_bv, dW, dbv, learning_rate, momentum, weight_decay, scale):
        """kernels.update_bernoulli in steps: the two scatter_gradients into dW, dbv (zero on entry),
        then apply_update of W and bv, which zeroes them again."""
        self.scatter_gradients(indptr, indices, states, values, rows, ph0, np.float32(1.0), dW, dbv)
        self.scatter_gradients(s_indptr, s_indices, s_states, s_values, s_rows, phT, np.float32(-1.0), dW, dbv)
        for param, grad, vel, decay in ((W, dW, vel_W, weight_decay), (bv, dbv, vel_bv, 0.0)):
            self.apply_update(param.reshape(-1), grad.reshape(-1), vel.reshape(-1), learning_rate, momentum, decay,
                              scale)

    def scatter_gradients(self, indptr, indices, states, values, rows, ph, sign, dW, dbv):
        self._check_csr(indptr, indices, states, rows, dW)
        self._m.scatter_gradients(indptr, indices, states, values, rows, ph, float(sign), dW, dbv, self._stream(),
                                  self._device())

    def apply_update(self, param, grad, velocity, learning_rate, momentum, weight_decay, scale):
        self._m.apply_update(param, grad, velocity, float(learning_rate), float(momentum), float(weight_decay),
                             float(scale), self._stream(), self._device())

    def update_hidden_bias(self, ph0, phT, bh, grad, velocity, learning_rate, momentum, scale):
        self._m.update_hidden_bias(ph0, phT, bh, grad, velocity, float(learning_rate), float(momentum), float(scale),
                                   self._stream(), self._device())

    def update_softmax(self, start, slot_b, slot_p, delta, states, neg_states, ph0, phT, W, bv, vel_W, vel_bv,
                       learning_rate, momentum, weight_decay, scale, last, step):
        if self.check_bounds:
            K = _shape(W, "W", 3)[1]
            self._check_group(start, slot_b, slot_p, _shape(delta, "delta", 1)[0])
            self._in_range(states, "states", K)
            self._in_range(neg_states, "neg_states", K)
        self._m.update_softmax(start, slot_b, slot_p, delta, states, neg_states, ph0, phT, W, bv, vel_W, vel_bv,
                               float(learning_rate), float(momentum), float(weight_decay), float(scale), last,
                               int(step), self._stream(), self._device())

    def catch_up(self, start, last, step, W, bv, vel_W, vel_bv, powers_W, powers_bv, mark):
        step = int(step)
        if self.check_bounds and _shape(W, "W", 3)[0]:  # every gap step - last[i] >= 0 needs its table row
            rows = _shape(powers_W, "powers_W", 2)[0]
            _shape(last, "last", 1)
            lo, hi = self._read(last.min()), self._read(last.max())
            if hi > step or step - lo >= rows:
                raise ValueError(f"last holds steps {lo} .. {hi}: the gaps to step {step} need powers rows up to "
                                 f"{step - lo}, there are {rows} (and no item may be ahead of the step)")
        self._m.catch_up(start, last, step, W, bv, vel_W, vel_bv, powers_W, powers_bv, bool(mark), self._stream(),
                         self._device())

    def predict_pairs(self, ph, pair_rows, items, W, bv, levels, out):
        if self.check_bounds:
            self._in_range(pair_rows, "pair_rows", _shape(ph, "ph", 2)[0])
            self._in_range(items, "items", _shape(W, "W", 3)[0])
        self._m.predict_pairs(ph, pair_rows, items, W, bv, levels, out, self._stream(), self._device())

    def score_items(self, logits, bv, levels, out):
        self._m.score_items(logits, bv, levels, out, self._stream(), self._device())

    def free_energy(self, indptr, indices, states, values, rows, W, bv, bh, out):
        self._check_csr(indptr, indices, states, rows, W)
        scratch = self.xp.empty((_shape(rows, "rows", 1)[0], _shape(W, "W", 3)[2]), dtype=np.float32)
        self._m.free_energy(indptr, indices, states, values, rows, W, bv, bh, out, scratch, self._stream(),
                            self._device())

    # -- Philox (rbm_cuda/cpu/philox.py), computed by a kernel ------------------------------------------
    def philox_words(self, seed, step, gibbs, phase, start, count):
        out = self.xp.empty(int(count), dtype=np.uint32)
        self._m.philox_words(int(seed) & _U64, int(step) & _U32, int(gibbs) & _U32, int(phase) & _U32,
                             int(start) & _U64, out, self._stream(), self._device())
        return out

    def philox_uniforms(self, seed, step, gibbs, phase, start, count):
        out = self.xp.empty(int(count), dtype=np.float32)
        self._m.philox_uniforms(int(seed) & _U64, int(step) & _U32, int(gibbs) & _U32, int(phase) & _U32,
                                int(start) & _U64, out, self._stream(), self._device())
        return out

    def synchronize(self):
        """Wait for the kernels queued so far (no-op on the host emulation)."""
        self._m.synchronize(self._stream(), self._device())
