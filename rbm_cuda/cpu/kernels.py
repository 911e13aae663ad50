"""Numba kernels: the CPU twins of the CUDA kernels in csrc/kernels.cu, one function per kernel,
same name, same arguments (numpy arrays where the CUDA launcher takes device pointers).  Two are
fused here and run as a sequence of those kernels by the compiled backends (rbm_cuda/cuda/kernels.py):
sample_bernoulli_rows (sigmoid_bernoulli, compact_rows) and update_bernoulli (scatter_gradients,
apply_update).

Shapes and dtypes (docs/design.md):
  indptr int64[n_rows + 1], indices int32[nnz]      the rating matrix in CSR, rows are users
  states int32[nnz]                                 the level index k of each rating (0 for bernoulli)
  values float32[nnz] or float32[0]                 bernoulli inputs; empty means "all ones"
  rows int64[B]                                     which CSR rows form the batch
  W float32[n_items, K, F], bv float32[n_items, K], bh float32[F]     (bernoulli: K = 1)
Random numbers: element e of stream (seed, step, gibbs, phase) draws philox_uniform(..., e).
Hidden unit f of row r is element r * F + f; a rated entry at CSR position j is element j.
"""

import numpy as np
from numba import njit, prange

from .philox import PHASE_HIDDEN, PHASE_VISIBLE, uniforms_into
from .simd import (EXPF_FLOOR, EXPF_LN2_HI, EXPF_LN2_LO, EXPF_LOG2E, EXPF_POLY, LANES, PREFETCH_AHEAD,
                   float_from_bits,
                   gather_rows_sum, level_update, prefetch, tile_gather, tile_logits, tile_scatter,
                   tile_softmax_draws)

# The kernels every backend provides, with these names and arguments (NumbaBackend takes them from
# here; the compiled backends implement each in rbm_cuda/cuda/kernels.py).
KERNELS = ("group_by_item", "sample_hidden", "sample_visible_softmax", "sigmoid_bernoulli", "compact_rows",
           "sample_bernoulli_rows", "scatter_gradients", "apply_update", "update_bernoulli", "update_softmax",
           "catch_up", "update_hidden_bias", "predict_pairs", "score_items", "free_energy")

# sample_bernoulli_rows: the uniforms of this many items of a row are drawn at a time.
_DRAW_CHUNK = 1024
# apply_update: arrays up to this length are updated by one thread (waking the pool costs more).
_SERIAL_UPDATE = 1 << 15
# sample_visible_softmax, update_softmax, scatter_gradients: parallel tasks per call, each a range of items
# holding about the same number of the batch's ratings (update_bernoulli: the same number of items).
ITEM_CHUNKS = 16
# sample_visible_softmax: ratings of one item whose logits, softmax and draws run together, a rating
# per SIMD lane.
_TAIL_BLOCK = LANES
# update_softmax: the weights and velocity of the item _UPDATE_AHEAD on are prefetched.
_UPDATE_AHEAD = 2
# update_softmax: slots ahead whose data and negative states are prefetched.
_STATES_AHEAD = 32
# _expf's polynomial as scalar globals: Numba freezes them as constants, where indexing the tuple
# inside _expf kept the loop from vectorising as well.
_EXP_P0, _EXP_P1, _EXP_P2, _EXP_P3, _EXP_P4, _EXP_P5 = EXPF_POLY
# group_by_item: parallel tasks (row ranges), and the most entries a batch may hold (slots are int32).
_GROUP_TASKS = 2
_MAX_SLOTS = 2**31 - 1
# sample_hidden: the items and states of the batch row this many rows on are requested ahead: a
# batch's rows are random users whose entries start anywhere in the CSR arrays, and the W rows to
# gather wait on those loads.
_ROWS_AHEAD = 2


@njit(cache=True, inline="always")
def _sigmoid(x):
    """1 / (1 + exp(-x)) in float32, written as t / (1 + t) or 1 / (1 + t) with t = exp(-|x|) <= 1, so
    that it needs _expf only and a loop of it vectorises; within a few ulp of the direct formula
    (exactly 0.5 at 0)."""
    t = _expf(-abs(x))
    return (np.float32(1.0) if x >= np.float32(0.0) else t) / (np.float32(1.0) + t)


@njit(cache=True, inline="always")
def _softplus(x):
    if x > np.float32(0.0):
        return x + np.log1p(np.exp(-x))
    return np.log1p(np.exp(x))


@njit(cache=True, fastmath={"reassoc", "contract"})
def _dot(a, b, n):
    """sum_f a[f] * b[f] for f < n.  The only code built with (limited) fast-math: reassociation lets
    LLVM vectorise the reduction (8 float32 lanes with AVX2) and contraction fuses multiply-adds; no
    approximate functions.  The summation order is the vectorised one, fixed for a given CPU: the
    result differs from a left-to-right sum by float rounding only (like the CUDA kernel's).  Not
    inlined at the Numba level on purpose: LLVM inlines it and keeps its instruction flags."""
    s = np.float32(0.0)
    for f in range(n):
        s += a[f] * b[f]
    return s



@njit(cache=True, inline="always")
def _prefetch_row(w, n):
    """Request w[:n] (n >= 1 float32 or int32): a line per 16 elements, and the last one."""
    for f in range(0, n, 16):
        prefetch(w, f)
    prefetch(w, n - 1)


@njit(cache=True, inline="always")
def _prefetch_entries(indptr, indices, states, r):
    """Request the items and states of CSR row r."""
    j0 = indptr[r]
    j1 = indptr[r + 1]
    if j1 > j0:
        _prefetch_row(indices[j0:j1], j1 - j0)
        _prefetch_row(states[j0:j1], j1 - j0)


@njit(cache=True, inline="always")
def _gather_scaled_rows(acc, W, indices, states, values, j0, j1):
    """acc += values[j] * W[indices[j], states[j]] for j = j0 .. j1 - 1, in j order (bernoulli inputs;
    simd.gather_rows_sum does the unscaled sum)."""
    n = acc.shape[0]
    for j in range(j0, j1):
        if j + PREFETCH_AHEAD < j1:  # W rows come in random item order: fetch ahead
            _prefetch_row(W[indices[j + PREFETCH_AHEAD], states[j + PREFETCH_AHEAD]], n)
        _axpy_row(acc, values[j], W[indices[j], states[j]], n)


@njit(cache=True, inline="always")
def _axpy_row(acc, v, w, n):
    for f in range(n):
        acc[f] += v * w[f]


@njit(cache=True, inline="always")
def _bernoulli_row(prob, out, n, seed, step, gibbs, phase, base):
    """out[n'] = (u < prob[n']) for n' < n, u the uniform of element base + n' (drawn into out first:
    no scratch array)."""
    uniforms_into(seed, step, gibbs, phase, base, out[:n])
    for f in range(n):
        out[f] = np.float32(1.0) if out[f] < prob[f] else np.float32(0.0)


@njit(parallel=True, cache=True)
def group_by_item(indptr, indices, rows, n_items):
    """The batch's rated entries grouped by item (a stable counting sort, O(entries + items)), for
    sample_visible_softmax and update_softmax, and inside scatter_gradients and update_bernoulli: they
    walk W item by item, so each touched item's weights are read once per batch instead of once per
    rating.  Computed once per mini-batch.

    Returns (start int64[n_items + 1], slot_b int32[m], slot_p int32[m], delta int64[B]), m the
    batch's number of rated entries: the entries of item i are slots start[i] .. start[i + 1] - 1,
    in batch order (b ascending; a row rates an item at most once), each with its batch row b and
    its position p in the batch's row-major order; its CSR position is j = p + delta[b].

    The counting and the filling run in _GROUP_TASKS parallel tasks, each a contiguous range of
    batch rows with its own counters; task t's entries of an item are placed after those of tasks
    < t, so the order (and the result) is that of one serial pass."""
    n_rows = rows.shape[0]
    n_tasks = _GROUP_TASKS
    # int32 like the slots (at most _MAX_SLOTS per batch, checked below): half the cache lines of
    # int64 counters, which matters when each task counts tens of thousands of items
    count = np.zeros((n_tasks, n_items), dtype=np.int32)
    delta = np.empty(n_rows, dtype=np.int64)
    m = 0
    for b in range(n_rows):
        j0 = indptr[rows[b]]
        delta[b] = j0 - m
        m += indptr[rows[b] + 1] - j0
    if m > _MAX_SLOTS:
        raise ValueError("group_by_item: this batch holds more than 2**31 - 1 ratings (int32 slots); use a smaller batch_size")
    for t in prange(n_tasks):
        ct = count[t]
        for b in range(t * n_rows // n_tasks, (t + 1) * n_rows // n_tasks):
            for j in range(indptr[rows[b]], indptr[rows[b] + 1]):
                ct[indices[j]] += 1
    # count[t, i] becomes the first slot of task t's entries of item i.
    start = np.empty(n_items + 1, dtype=np.int64)
    q = 0
    for i in range(n_items):
        start[i] = q
        for t in range(n_tasks):
            c = count[t, i]
            count[t, i] = np.int32(q)
            q += c
    start[n_items] = q
    slot_b = np.empty(m, dtype=np.int32)
    slot_p = np.empty(m, dtype=np.int32)
    for t in prange(n_tasks):
        fill = count[t]
        for b in range(t * n_rows // n_tasks, (t + 1) * n_rows // n_tasks):
            d = delta[b]
            for j in range(indptr[rows[b]], indptr[rows[b] + 1]):
                i = indices[j]
                q = fill[i]
                fill[i] = q + 1
                slot_b[q] = b
                slot_p[q] = j - d
    return start, slot_b, slot_p, delta


@njit(cache=True)
def _item_chunks(start):
    """int64[ITEM_CHUNKS + 1]: cuts the items into ranges holding about equal numbers of the batch's
    entries (the parallel tasks of the item-by-item walks); chunk c is items bounds[c] ..
    bounds[c + 1] - 1, and the chunks cover every item."""
    n_items = start.shape[0] - 1
    m = start[n_items]
    bounds = np.empty(ITEM_CHUNKS + 1, dtype=np.int64)
    for c in range(ITEM_CHUNKS):
        # first item whose entries start at or after the target (start is non-decreasing)
        bounds[c] = np.searchsorted(start[:n_items], (m * c) // ITEM_CHUNKS)
    bounds[0] = 0
    bounds[ITEM_CHUNKS] = n_items
    return bounds


@njit(parallel=True, cache=True)
def sample_hidden(indptr, indices, states, values, rows, W, bh, seed, step, gibbs, prob_out, sample_out, sample):
    """p(h | v) for the batch rows, and a Bernoulli draw of h when `sample`.

    prob_out, sample_out: float32[B, F].  acc_f = bh_f + sum_j value_j * W[item_j, state_j, f].
    """
    n_hidden = bh.shape[0]
    use_values = values.shape[0] > 0
    n_rows = rows.shape[0]
    for b in prange(n_rows):
        r = rows[b]
        if b + _ROWS_AHEAD < n_rows:
            _prefetch_entries(indptr, indices, states, rows[b + _ROWS_AHEAD])
        acc = prob_out[b]  # accumulate in place: no allocation per row
        for f in range(n_hidden):
            acc[f] = bh[f]
        if use_values:
            _gather_scaled_rows(acc, W, indices, states, values, indptr[r], indptr[r + 1])
        else:  # the running sum stays in vector registers (the same additions in the same order)
            gather_rows_sum(acc, W, indices, states, indptr[r], indptr[r + 1])
        for f in range(n_hidden):
            acc[f] = _sigmoid(acc[f])
        if sample:
            _bernoulli_row(acc, sample_out[b], n_hidden, seed, step, gibbs, PHASE_HIDDEN,
                           np.uint64(r) * np.uint64(n_hidden))


@njit(parallel=True, cache=True)
def sample_visible_softmax(indptr, indices, rows, start, slot_b, slot_p, delta, h, W, bv, seed, step, gibbs,
                           out_states):
    """Reconstruct only the rated entries of the batch rows: softmax over K, one categorical draw.

    start, slot_b, slot_p, delta: group_by_item(indptr, indices, rows, n_items).  h: float32[B, F]
    binary hidden states driving the chain (anything but 0 and 1 is a ValueError).  out_states:
    int32[nnz], written at the batch's CSR positions only.
    """
    n_levels = W.shape[1]
    n_hidden = W.shape[2]
    n_words = (n_hidden + 31) // 32
    bounds = _item_chunks(start)
    # Row by row: h as bits (for simd.tile_logits), and the uniforms (a row's entries draw
    # consecutive elements, one Philox block per four of them); u[p] for batch position p = j - delta[b].
    bits = np.zeros((rows.shape[0], n_words), dtype=np.uint32)
    u = np.empty(slot_p.shape[0], dtype=np.float32)
    not_binary = 0
    for b in prange(rows.shape[0]):
        not_binary += _pack_bits(h[b], bits[b])
        j0 = indptr[rows[b]]
        uniforms_into(seed, step, gibbs, PHASE_VISIBLE, j0, u[j0 - delta[b]:indptr[rows[b] + 1] - delta[b]])
    if not_binary:
        raise ValueError("sample_visible_softmax: h must hold binary hidden states (0.0 or 1.0)")
    # Then item by item (W[i] stays in cache for all the batch's ratings of item i), in blocks of up
    # to _TAIL_BLOCK ratings, a rating per vector lane: logits, one vectorised softmax and draw.
    for c in prange(ITEM_CHUNKS):
        hw = np.zeros((n_words, _TAIL_BLOCK), dtype=np.uint32)
        z = np.empty((n_levels, _TAIL_BLOCK), dtype=np.float32)
        ub = np.empty(_TAIL_BLOCK, dtype=np.float32)
        chosen = np.empty(_TAIL_BLOCK, dtype=np.int32)
        for i in range(bounds[c], bounds[c + 1]):
            q1 = start[i + 1]
            if q1 == start[i]:
                continue
            Wi = W[i]
            bvi = bv[i]
            # The weights of the next item the batch rates are requested now: when W outgrows the
            # caches each item's K rows come from DRAM, interleaved, which the hardware prefetcher
            # does not follow.  Items the batch does not rate are not fetched.
            i_next = i + 1
            while i_next < bounds[c + 1] and start[i_next + 1] == start[i_next]:
                i_next += 1
            if i_next < bounds[c + 1]:
                Wn = W[i_next]
                for k in range(n_levels):
                    _prefetch_row(Wn[k], n_hidden)
            for q0 in range(start[i], q1, _TAIL_BLOCK):
                n = min(_TAIL_BLOCK, q1 - q0)
                tile_gather(bits, slot_b, slot_p, u, q0, n, hw, ub)
                _level_logits(Wi, hw, n_levels, n, z)
                # lanes r >= n hold the logits of zero bits (or, past 8 lanes, garbage): drawn too, never stored
                tile_softmax_draws(z, bvi, ub, chosen)
                tile_scatter(chosen, slot_b, slot_p, delta, q0, n, out_states)


@njit(cache=True, inline="always")
def _pack_bits(hb, out):
    """out[w] bit t = (hb[32 w + t] != 0); returns how many hb values are neither 0 nor 1."""
    n = hb.shape[0]
    bad = 0
    for w in range(out.shape[0]):
        word = np.uint32(0)
        for t in range(min(32, n - 32 * w)):
            x = hb[32 * w + t]
            word |= np.uint32(x != np.float32(0.0)) << np.uint32(t)
            bad += (x != np.float32(0.0)) & (x != np.float32(1.0))
        out[w] = word
    return bad


@njit(cache=True, inline="always")
def _level_logits(Wi, hw, n_levels, n, z):
    """z[k, r] = Wi[k] . h_r for every level k (simd.tile_logits, five levels per pass: its n_acc must
    be a literal)."""
    k = 0
    while k + 5 <= n_levels:
        tile_logits(Wi, hw, k, 5, n, z)
        k += 5
    left = n_levels - k
    if left == 4:
        tile_logits(Wi, hw, k, 4, n, z)
    elif left == 3:
        tile_logits(Wi, hw, k, 3, n, z)
    elif left == 2:
        tile_logits(Wi, hw, k, 2, n, z)
    elif left == 1:
        tile_logits(Wi, hw, k, 1, n, z)


@njit(cache=True, inline="always")
def _expf(x):
    """exp(x) for float32 x <= 0 (a logit minus the largest one), written so that a loop of it
    vectorises (the libm expf call does not): x = n ln2 + r with n = round(x / ln2), then Cephes'
    single-precision polynomial for exp(r), then scaling by 2^n through the exponent bits.  Within
    about 1 ulp of expf; x below -87 is taken as -87 (exp(-87) ~ 1.6e-38, which cannot change a sum
    that also holds exp(0) = 1)."""
    x = max(x, np.float32(EXPF_FLOOR))
    n = np.int32(x * np.float32(EXPF_LOG2E) - np.float32(0.5))  # round to nearest (x <= 0)
    fn = np.float32(n)
    r = x - fn * np.float32(EXPF_LN2_HI)
    r = r - fn * np.float32(EXPF_LN2_LO)
    p = np.float32(_EXP_P0)
    p = p * r + np.float32(_EXP_P1)
    p = p * r + np.float32(_EXP_P2)
    p = p * r + np.float32(_EXP_P3)
    p = p * r + np.float32(_EXP_P4)
    p = p * r + np.float32(_EXP_P5)
    p = p * (r * r) + r + np.float32(1.0)
    return p * float_from_bits(np.int32((n + 127) << 23))


@njit(parallel=True, cache=True)
def sigmoid_bernoulli(logits, rows, seed, step, gibbs, phase, prob_out, sample_out):
    """Dense sigmoid and Bernoulli draw: element (b, n) is element rows[b] * N + n of the stream.

    The bernoulli negative phase's visible units, on logits from a BLAS product over all items.
    """
    width = logits.shape[1]
    for b in prange(logits.shape[0]):
        pb = prob_out[b]
        lb = logits[b]
        for n in range(width):
            pb[n] = _sigmoid(lb[n])
        _bernoulli_row(pb, sample_out[b], width, seed, step, gibbs, phase, np.uint64(rows[b]) * np.uint64(width))


@njit(parallel=True, cache=True)
def sample_bernoulli_rows(logits, bv, rows, seed, step, gibbs, phase, indptr_out, indices_out):
    """The items drawn for each row, as CSR: sigmoid_bernoulli of logits + bv, then compact_rows of the
    draws, in one pass.  Same numbers: item n of row b is drawn when the uniform of element
    rows[b] * N + n is below sigmoid(logits[b, n] + bv[n]), computed in float32.

    logits float32[B, N] (h W^T; scratch: the compiled backends add bv to it in place, this kernel
    only reads it); bv float32[N]; indptr_out int64[B + 1]; indices_out int32[B * N] (each row's
    draws are first written at offset b * N).  The dense probabilities and
    samples are never stored: at the 20M shape they are 10 MB each per batch of 100 people.
    """
    n_rows, width = logits.shape
    if bv.shape[0] != width:
        raise ValueError("sample_bernoulli_rows: bv must hold one bias per column of logits")
    if indices_out.shape[0] < n_rows * width:
        raise ValueError("sample_bernoulli_rows: indices_out must hold B * N entries")
    counts = np.empty(n_rows, dtype=np.int64)
    for b in prange(n_rows):
        lb = logits[b]
        base = np.uint64(rows[b]) * np.uint64(width)
        u = np.empty(_DRAW_CHUNK, dtype=np.float32)
        p = np.empty(_DRAW_CHUNK, dtype=np.float32)
        c = b * width
        for n0 in range(0, width, _DRAW_CHUNK):
            m = min(_DRAW_CHUNK, width - n0)
            uniforms_into(seed, step, gibbs, phase, base + np.uint64(n0), u[:m])
            lc = lb[n0:n0 + m]
            bc = bv[n0:n0 + m]
            for k in range(m):
                p[k] = _sigmoid(lc[k] + bc[k])
            for k in range(m):  # few are drawn: a predictable branch
                if u[k] < p[k]:
                    indices_out[c] = n0 + k
                    c += 1
        counts[b] = c - b * width
    indptr_out[0] = 0
    for b in range(n_rows):
        c = counts[b]
        q = indptr_out[b]
        indptr_out[b + 1] = q + c
        src = b * width
        for k in range(c):  # rows move down, in order: no row's draws are overwritten before they move
            indices_out[q + k] = indices_out[src + k]


@njit(parallel=True, cache=True)
def compact_rows(dense, indptr_out, indices_out):
    """The nonzero columns of each row of dense float32[B, N], as CSR: indptr_out int64[B + 1] and
    indices_out int32[>= nonzeros] (the CUDA launcher asks for B * N), each row's columns in increasing
    order.

    The last step of the compiled backends' sample_bernoulli_rows: a person rates a small share of
    the items, and so does a reconstruction, so as CSR the hidden units and the gradient read the W
    rows of the sampled items only, instead of two dense products over all of them.
    """
    n_rows, width = dense.shape
    indptr_out[0] = 0
    for b in prange(n_rows):
        row = dense[b]
        c = 0
        for n in range(width):
            c += row[n] != np.float32(0.0)
        indptr_out[b + 1] = c
    for b in range(n_rows):
        indptr_out[b + 1] += indptr_out[b]
    if indices_out.shape[0] < indptr_out[n_rows]:
        raise ValueError("compact_rows: indices_out is shorter than the number of nonzeros")
    for b in prange(n_rows):
        row = dense[b]
        k = indptr_out[b]
        for n in range(width):
            if row[n] != np.float32(0.0):
                indices_out[k] = n
                k += 1


@njit(parallel=True, cache=True)
def scatter_gradients(indptr, indices, states, values, rows, ph, sign, dW, dbv):
    """dW[item_j, state_j, :] += sign * value_j * ph[b, :] and dbv[item_j, state_j] += sign * value_j
    over the batch's rated entries.

    Deterministic: each thread owns a range of items, so no two threads write the same float, and
    every sum runs in batch order, as a plain loop over the batch's rows would add (the CUDA kernel
    uses atomics instead).
    """
    n_hidden = dW.shape[2]
    use_values = values.shape[0] > 0
    start, slot_b, slot_p, delta = group_by_item(indptr, indices, rows, dW.shape[0])
    bounds = _item_chunks(start)
    m = slot_b.shape[0]
    for c in prange(ITEM_CHUNKS):
        for i in range(bounds[c], bounds[c + 1]):
            for q in range(start[i], start[i + 1]):
                # Prefetch what the entry PREFETCH_AHEAD slots on reads: its state (a random CSR position)
                # and its row of ph.
                qa = q + PREFETCH_AHEAD
                if qa < m:
                    ba = slot_b[qa]
                    prefetch(states, slot_p[qa] + delta[ba])
                b = slot_b[q]
                j = slot_p[q] + delta[b]
                s = sign * values[j] if use_values else sign
                _axpy_row(dW[i, states[j]], s, ph[b], n_hidden)
                dbv[i, states[j]] += s


@njit(parallel=True, cache=True)
def update_bernoulli(indptr, indices, states, values, rows, ph0, s_indptr, s_indices, s_states, s_values, s_rows, phT,
                     W, bv, vel_W, vel_bv, dW, dbv, learning_rate, momentum, weight_decay, scale):
    """One CD step's gradient and update of W and bv for bernoulli visible units (a dense negative
    phase), fused: the data entries of `rows` (indptr, indices, states, values) with ph0, and the
    sampled entries of `s_rows` (s_indptr, ...) with phT.

    The same as scatter_gradients(data, ph0, +1) and scatter_gradients(sampled, phT, -1) into the
    zero dW, dbv, then apply_update of W (with weight_decay) and of bv (without): the same float
    operations in the same order, so the same bits.  dW and dbv are the scratch of the backends that
    sum the gradient in memory (backend.gradient_scratch); this kernel never reads them, and the
    Numba backend passes empty arrays.  Each task takes a range of as many items as the others (every
    item is updated: momentum and decay reach all of them), sums each item's gradient in rows of its
    own, then updates the item's weights.
    """
    n_items, n_levels, n_hidden = W.shape
    lr = np.float32(learning_rate)
    mom = np.float32(momentum)
    wd = np.float32(weight_decay)
    sc = np.float32(scale)
    zero = np.float32(0.0)
    pos = group_by_item(indptr, indices, rows, n_items)
    neg = group_by_item(s_indptr, s_indices, s_rows, n_items)
    for c in prange(ITEM_CHUNKS):
        g = np.zeros((n_levels, n_hidden), dtype=np.float32)  # _update_range leaves them zero again
        gb = np.zeros(n_levels, dtype=np.float32)
        for i in range(c * n_items // ITEM_CHUNKS, (c + 1) * n_items // ITEM_CHUNKS):
            _sum_entries(pos, i, states, values, ph0, np.float32(1.0), g, gb)
            _sum_entries(neg, i, s_states, s_values, phT, np.float32(-1.0), g, gb)
            for k in range(n_levels):
                _update_range(W[i, k], g[k], vel_W[i, k], lr, mom, wd, sc, 0, n_hidden)
            _update_range(bv[i], gb, vel_bv[i], lr, mom, zero, sc, 0, n_levels)


@njit(cache=True, inline="always")
def _sum_entries(group, i, states, values, ph, sign, g, gb):
    """g[state] += s ph[b] and gb[state] += s over item i's entries of a grouped batch, in slot
    order, with s = sign * value (sign without values): scatter_gradients' sums for one item."""
    start, slot_b, slot_p, delta = group
    use_values = values.shape[0] > 0
    for q in range(start[i], start[i + 1]):
        b = slot_b[q]
        j = slot_p[q] + delta[b]
        s = sign * values[j] if use_values else sign
        _axpy_row(g[states[j]], s, ph[b], g.shape[1])
        gb[states[j]] += s


@njit(parallel=True, cache=True)
def update_softmax(start, slot_b, slot_p, delta, states, neg_states, ph0, phT, W, bv, vel_W, vel_bv,
                   learning_rate, momentum, weight_decay, scale, last, step):
    """One CD step's gradient and update of W and bv (softmax or like/dislike visible units), fused,
    for the items the batch rates (last[i] = step for each); the others are left as they are.

    The gradient is that of scatter_gradients(states, ph0, +1) then scatter_gradients(neg_states, phT,
    -1) on zeroed dW, dbv; the update is apply_update(W, dW, vel_W, ..., weight_decay, scale) and
    apply_update(bv, dbv, vel_bv, ..., 0, scale) on the rows of the rated items.  Same float
    operations in the same order, so the same bits as those calls, without the dW array: each task
    takes a range of items, and for each rated item and level sums the gradient in registers and
    updates W[i, k], vel_W[i, k] with it (simd.level_update).
    An item the batch does not rate has a zero gradient, and its momentum-and-decay step is taken
    later by catch_up, exactly: the caller brings the batch's items up to date with catch_up before
    the batch reads them, and every item at the end of an epoch (training.cd_epoch).
    start, slot_b, slot_p, delta: group_by_item of the batch.  ph0, phT: float32[B, F];
    W, vel_W: float32[n_items, K, F]; bv, vel_bv: float32[n_items, K]; last int64[n_items].
    """
    n_levels = W.shape[1]
    n_hidden = W.shape[2]
    lr = np.float32(learning_rate)
    mom = np.float32(momentum)
    wd = np.float32(weight_decay)
    sc = np.float32(scale)
    bounds = _item_chunks(start)
    for c in prange(ITEM_CHUNKS):
        gb = np.zeros(n_levels, dtype=np.float32)
        most = 0
        for i in range(bounds[c], bounds[c + 1]):
            most = max(most, start[i + 1] - start[i])
        by_pos = np.empty((n_levels, most), dtype=np.int32)
        by_neg = np.empty((n_levels, most), dtype=np.int32)
        count_pos = np.empty(n_levels, dtype=np.int64)
        count_neg = np.empty(n_levels, dtype=np.int64)
        # The chunk's data and negative states in slot order, in one tight loop of independent random
        # reads (many in flight at once, which interleaving them with the row sums would prevent),
        # those _STATES_AHEAD slots on requested ahead (the out-of-order window alone keeps too few
        # in flight).
        s0 = start[bounds[c]]
        s1 = start[bounds[c + 1]]
        pos = np.empty(s1 - s0, dtype=np.int32)
        neg = np.empty(s1 - s0, dtype=np.int32)
        for q in range(s0, s1):
            qa = q + _STATES_AHEAD
            if qa < s1:
                ja = slot_p[qa] + delta[slot_b[qa]]
                prefetch(states, ja)
                prefetch(neg_states, ja)
            j = slot_p[q] + delta[slot_b[q]]
            pos[q - s0] = states[j]
            neg[q - s0] = neg_states[j]
        for i in range(bounds[c], bounds[c + 1]):
            q0 = start[i]
            q1 = start[i + 1]
            # The weights and velocity of the item two on (when the batch rates it), into L2 while
            # this item's gradient is summed: the rated items' rows stream through here, and without
            # it the stream and the gradient take the sum of their times instead of overlapping.
            ahead = i + _UPDATE_AHEAD
            if ahead < bounds[c + 1] and start[ahead + 1] > start[ahead]:
                for k in range(n_levels):
                    _prefetch_row(W[ahead, k], n_hidden)
                    _prefetch_row(vel_W[ahead, k], n_hidden)
            if q1 == q0:
                continue
            last[i] = step
            # Each level's gradient, the ph0 rows of the slots in state k then minus the phT rows of
            # the slots in negative state k, each in slot order, summed in registers and applied there.
            _rows_by_level(slot_b, q0, q1, pos[q0 - s0:q1 - s0], np.float32(1.0), by_pos, count_pos, gb)
            _rows_by_level(slot_b, q0, q1, neg[q0 - s0:q1 - s0], np.float32(-1.0), by_neg, count_neg, gb)
            for k in range(n_levels):
                level_update(W[i, k], vel_W[i, k], ph0, by_pos[k], count_pos[k], phT, by_neg[k], count_neg[k],
                             lr, mom, wd, sc)
            _update_range(bv[i], gb, vel_bv[i], lr, mom, np.float32(0.0), sc, 0, n_levels)


@njit(cache=True, inline="always")
def _catch_up_row(w, v, p, n):
    """k zero-gradient steps of momentum and decay at once: (w, v) <- (p0 w + p1 v, p2 w + p3 v)
    elementwise, p the four entries of their 2 x 2 map to the power k."""
    a, b, c, d = p[0], p[1], p[2], p[3]
    for f in range(n):
        wf = w[f]
        vf = v[f]
        w[f] = a * wf + b * vf
        v[f] = c * wf + d * vf


@njit(parallel=True, cache=True)
def catch_up(start, last, step, W, bv, vel_W, vel_bv, powers_W, powers_bv, mark):
    """Bring the items that `start` marks (start[i + 1] > start[i]: group_by_item's, or one entry per
    item for all) up to `step`: item i takes the step - last[i] zero-gradient steps of momentum and
    decay it missed at once, (w, v) <- powers[step - last[i]] applied to (w, v) (_catch_up_row;
    training.decay_powers), and with `mark` last[i] = step (without it, the caller's update_softmax
    of the next step sets last: one launch fewer on the GPU).  Shapes as update_softmax; powers_W,
    powers_bv float32[>= the longest gap + 1, 4]."""
    n_levels = W.shape[1]
    n_hidden = W.shape[2]
    for i in prange(W.shape[0]):
        if start[i + 1] == start[i]:
            continue
        missed = step - last[i]
        if missed > 0:
            for k in range(n_levels):
                _catch_up_row(W[i, k], vel_W[i, k], powers_W[missed], n_hidden)
            _catch_up_row(bv[i], vel_bv[i], powers_bv[missed], n_levels)
        if mark:
            last[i] = step


@njit(cache=True, inline="always")
def _rows_by_level(slot_b, q0, q1, level, sign, by_level, count, gb):
    """by_level[k, :count[k]]: the batch rows of the slots q0 .. q1 - 1 (one item) whose state
    level[q - q0] is k, in slot order; gb[k] += sign for each."""
    count[:] = 0
    for q in range(q0, q1):
        k = level[q - q0]
        by_level[k, count[k]] = slot_b[q]
        count[k] += 1
        gb[k] += sign


@njit(cache=True, inline="always")
def _update_at(param, grad, velocity, lr, mom, wd, sc, n):
    v = mom * velocity[n] + lr * (sc * grad[n] - wd * param[n])
    velocity[n] = v
    param[n] += v
    grad[n] = np.float32(0.0)


@njit(cache=True, inline="always")
def _update_range(param, grad, velocity, lr, mom, wd, sc, n0, n1):
    for n in range(n0, n1):
        _update_at(param, grad, velocity, lr, mom, wd, sc, n)


@njit(parallel=True, cache=True)
def apply_update(param, grad, velocity, learning_rate, momentum, weight_decay, scale):
    """velocity = momentum * velocity + lr * (scale * grad - weight_decay * param); param += velocity;
    grad is zeroed for the next batch.  All arrays flat float32 of the same length.
    """
    lr = np.float32(learning_rate)
    mom = np.float32(momentum)
    wd = np.float32(weight_decay)
    sc = np.float32(scale)
    size = param.shape[0]
    if size <= _SERIAL_UPDATE:  # small (biases): waking the thread pool costs more than the work
        _update_range(param, grad, velocity, lr, mom, wd, sc, 0, size)
        return
    for n in prange(size):
        _update_at(param, grad, velocity, lr, mom, wd, sc, n)


@njit(cache=True)
def update_hidden_bias(ph0, phT, bh, grad, velocity, learning_rate, momentum, scale):
    """grad[f] += sum_b ph0[b, f] - sum_b phT[b, f], each sum over the batch rows in order (as NumPy's
    sum over axis 0), then apply_update(bh, grad, velocity, learning_rate, momentum, 0, scale):
    the hidden biases' step of a batch in one kernel.  ph0, phT float32[B, F]; bh, grad, velocity
    float32[F]."""
    lr = np.float32(learning_rate)
    mom = np.float32(momentum)
    sc = np.float32(scale)
    for f in range(ph0.shape[1]):
        if ph0.shape[0] == 0:
            break
        s0 = ph0[0, f]
        s1 = phT[0, f]
        for b in range(1, ph0.shape[0]):
            s0 += ph0[b, f]
            s1 += phT[b, f]
        grad[f] += s0 - s1
        _update_at(bh, grad, velocity, lr, mom, np.float32(0.0), sc, f)


@njit(parallel=True, cache=True)
def predict_pairs(ph, pair_rows, items, W, bv, levels, out):
    """Mean-field prediction: out[p] = sum_k levels[k] * softmax_k(bv[i] + W[i] @ ph[pair_rows[p]]).

    With K = 1 (bernoulli) out[p] = levels[0] * sigmoid(...).  ph: float32[U, F]; out: float32[P].
    """
    n_levels = W.shape[1]
    n_hidden = W.shape[2]
    for p in prange(items.shape[0]):
        i = items[p]
        hb = ph[pair_rows[p]]
        logits = np.empty(n_levels, dtype=np.float32)
        top = np.float32(-np.inf)
        for k in range(n_levels):
            acc = bv[i, k] + _dot(hb, W[i, k], n_hidden)
            logits[k] = acc
            if acc > top:
                top = acc
        out[p] = _expectation(logits, top, levels)


@njit(cache=True, inline="always")
def _expectation(logits, top, levels):
    n_levels = logits.shape[0]
    if n_levels == 1:
        return levels[0] * _sigmoid(logits[0])
    total = np.float32(0.0)
    mean = np.float32(0.0)
    for k in range(n_levels):
        e = np.exp(logits[k] - top)
        total += e
        mean += e * levels[k]
    return mean / total


@njit(parallel=True, cache=True)
def score_items(logits, bv, levels, out):
    """Expected rating of every item for a batch of users.

    logits: float32[U, I * K], the product ph @ W.reshape(I * K, F).T (BLAS); out: float32[U, I].
    """
    n_items = bv.shape[0]
    n_levels = bv.shape[1]
    for u in prange(logits.shape[0]):
        z = np.empty(n_levels, dtype=np.float32)
        for i in range(n_items):
            top = np.float32(-np.inf)
            for k in range(n_levels):
                z[k] = logits[u, i * n_levels + k] + bv[i, k]
                if z[k] > top:
                    top = z[k]
            out[u, i] = _expectation(z, top, levels)


@njit(parallel=True, cache=True)
def free_energy(indptr, indices, states, values, rows, W, bv, bh, out):
    """F(v) = -sum_j value_j * bv[item_j, state_j] - sum_f softplus(bh_f + sum_j value_j W[item_j, state_j, f]).

    out: float32[B], one per batch row.  Units: nats.
    """
    n_hidden = bh.shape[0]
    use_values = values.shape[0] > 0
    for b in prange(rows.shape[0]):
        r = rows[b]
        acc = bh.copy()
        visible = np.float32(0.0)
        j0 = indptr[r]
        j1 = indptr[r + 1]
        for j in range(j0, j1):
            visible += (values[j] if use_values else np.float32(1.0)) * bv[indices[j], states[j]]
        if use_values:
            _gather_scaled_rows(acc, W, indices, states, values, j0, j1)
        else:
            gather_rows_sum(acc, W, indices, states, j0, j1)
        hidden = np.float32(0.0)
        for f in range(n_hidden):
            hidden += _softplus(acc[f])
        out[b] = -visible - hidden
