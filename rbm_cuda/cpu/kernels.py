"""Numba kernels: the CPU twins of the CUDA kernels in csrc/kernels.cu, one function per kernel,
same name, same arguments (numpy arrays where the CUDA launcher takes device pointers).

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

from .philox import PHASE_HIDDEN, PHASE_VISIBLE, philox_block, pick_word, uniform_from_word

# apply_update: arrays up to this length are updated by one thread; longer ones in blocks of
# _UPDATE_BLOCK elements (64 KiB of each array) handed to the threads.
_SERIAL_UPDATE = 1 << 15
_UPDATE_BLOCK = 1 << 14
# scatter_gradients: width of the hidden-unit slice each parallel task owns (see there).
_SCATTER_SLICE = 64


@njit(cache=True, inline="always")
def _sigmoid(x):
    return np.float32(1.0) / (np.float32(1.0) + np.exp(-x))


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
def _add_row(acc, w, n):
    for f in range(n):
        acc[f] += w[f]


@njit(cache=True, inline="always")
def _axpy_row(acc, v, w, n):
    for f in range(n):
        acc[f] += v * w[f]


@njit(cache=True, inline="always")
def _bernoulli_row(prob, out, n, seed, step, gibbs, phase, base):
    """out[n'] = (u < prob[n']) for n' < n, u the uniform of element base + n': one Philox call per
    block of four consecutive elements."""
    f = 0
    while f < n:
        e = base + np.uint64(f)
        r4 = philox_block(seed, step, gibbs, phase, e >> np.uint64(2))
        lane = np.int64(e & np.uint64(3))
        while lane < 4 and f < n:
            u = uniform_from_word(pick_word(r4, lane))
            out[f] = np.float32(1.0) if u < prob[f] else np.float32(0.0)
            lane += 1
            f += 1


@njit(parallel=True, cache=True)
def sample_hidden(indptr, indices, states, values, rows, W, bh, seed, step, gibbs, prob_out, sample_out, sample):
    """p(h | v) for the batch rows, and a Bernoulli draw of h when `sample`.

    prob_out, sample_out: float32[B, F].  acc_f = bh_f + sum_j value_j * W[item_j, state_j, f].
    """
    n_hidden = bh.shape[0]
    use_values = values.shape[0] > 0
    for b in prange(rows.shape[0]):
        r = rows[b]
        acc = prob_out[b]  # accumulate in place: no allocation per row
        for f in range(n_hidden):
            acc[f] = bh[f]
        for j in range(indptr[r], indptr[r + 1]):
            w = W[indices[j], states[j]]
            if use_values:
                _axpy_row(acc, values[j], w, n_hidden)
            else:
                _add_row(acc, w, n_hidden)
        for f in range(n_hidden):
            acc[f] = _sigmoid(acc[f])
        if sample:
            _bernoulli_row(acc, sample_out[b], n_hidden, seed, step, gibbs, PHASE_HIDDEN,
                           np.uint64(r) * np.uint64(n_hidden))


@njit(parallel=True, cache=True)
def sample_visible_softmax(indptr, indices, rows, h, W, bv, seed, step, gibbs, out_states):
    """Reconstruct only the rated entries of the batch rows: softmax over K, one categorical draw.

    h: float32[B, F] hidden states driving the chain. out_states: int32[nnz], written at the
    batch's CSR positions only.
    """
    n_levels = W.shape[1]
    n_hidden = W.shape[2]
    for b in prange(rows.shape[0]):
        r = rows[b]
        hb = h[b]
        logits = np.empty(n_levels, dtype=np.float32)
        j0 = indptr[r]
        # entries j0, j0+1, ... draw consecutive elements: one Philox block per four of them
        r4 = philox_block(seed, step, gibbs, PHASE_VISIBLE, np.uint64(j0) >> np.uint64(2))
        for j in range(j0, indptr[r + 1]):
            lane = j & 3
            if lane == 0 and j > j0:
                r4 = philox_block(seed, step, gibbs, PHASE_VISIBLE, np.uint64(j) >> np.uint64(2))
            i = indices[j]
            top = np.float32(-np.inf)
            for k in range(n_levels):
                acc = bv[i, k] + _dot(hb, W[i, k], n_hidden)
                logits[k] = acc
                if acc > top:
                    top = acc
            total = np.float32(0.0)
            for k in range(n_levels):
                e = np.exp(logits[k] - top)
                logits[k] = e
                total += e
            u = uniform_from_word(pick_word(r4, lane))
            # Categorical draw: the first level whose cumulative probability exceeds u.
            cum = np.float32(0.0)
            chosen = n_levels - 1
            for k in range(n_levels - 1):
                cum += logits[k] / total
                if u < cum:
                    chosen = k
                    break
            out_states[j] = chosen


@njit(parallel=True, cache=True)
def sigmoid_bernoulli(logits, rows, seed, step, gibbs, phase, prob_out, sample_out):
    """Dense sigmoid and Bernoulli draw: element (b, n) is element rows[b] * N + n of the stream.

    Used for the bernoulli negative phase (visible, after a BLAS product) and for hidden units
    driven by a dense visible matrix, where it draws the same numbers as sample_hidden.
    """
    width = logits.shape[1]
    for b in prange(logits.shape[0]):
        pb = prob_out[b]
        lb = logits[b]
        for n in range(width):
            pb[n] = _sigmoid(lb[n])
        _bernoulli_row(pb, sample_out[b], width, seed, step, gibbs, phase, np.uint64(rows[b]) * np.uint64(width))


@njit(parallel=True, cache=True)
def scatter_gradients(indptr, indices, states, values, rows, ph, sign, dW, dbv):
    """dW[item_j, state_j, :] += sign * value_j * ph[b, :] and dbv[item_j, state_j] += sign * value_j
    over the batch's rated entries.

    Deterministic: each thread owns a slice of the hidden units, so no two threads write the same
    float and every sum runs in CSR order (the CUDA kernel uses atomics instead).
    """
    n_hidden = dW.shape[2]
    use_values = values.shape[0] > 0
    # Slices of about _SCATTER_SLICE hidden units (few: every slice walks the whole batch), each a
    # multiple of 8 floats wide so the inner loop runs in full AVX2 vectors: F = 100 -> 56 + 44.
    n_chunks = (n_hidden + _SCATTER_SLICE - 1) // _SCATTER_SLICE
    chunk = ((n_hidden + n_chunks - 1) // n_chunks + 7) // 8 * 8
    n_chunks = (n_hidden + chunk - 1) // chunk
    for c in prange(n_chunks):
        f0 = c * chunk
        f1 = min(n_hidden, f0 + chunk)
        for b in range(rows.shape[0]):
            r = rows[b]
            phb = ph[b, f0:f1]
            for j in range(indptr[r], indptr[r + 1]):
                s = sign * values[j] if use_values else sign
                w = dW[indices[j], states[j], f0:f1]
                _axpy_row(w, s, phb, f1 - f0)
                if c == 0:
                    dbv[indices[j], states[j]] += s


@njit(cache=True, inline="always")
def _update_range(param, grad, velocity, lr, mom, wd, sc, n0, n1):
    for n in range(n0, n1):
        v = mom * velocity[n] + lr * (sc * grad[n] - wd * param[n])
        velocity[n] = v
        param[n] += v
        grad[n] = np.float32(0.0)


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
    n_blocks = (size + _UPDATE_BLOCK - 1) // _UPDATE_BLOCK
    for blk in prange(n_blocks):
        _update_range(param, grad, velocity, lr, mom, wd, sc, blk * _UPDATE_BLOCK,
                      min(size, (blk + 1) * _UPDATE_BLOCK))


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
        for j in range(indptr[r], indptr[r + 1]):
            v = values[j] if use_values else np.float32(1.0)
            w = W[indices[j], states[j]]
            visible += v * bv[indices[j], states[j]]
            for f in range(n_hidden):
                acc[f] += v * w[f]
        hidden = np.float32(0.0)
        for f in range(n_hidden):
            hidden += _softplus(acc[f])
        out[b] = -visible - hidden
