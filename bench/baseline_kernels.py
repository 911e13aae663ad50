"""FROZEN COPY of rbm_cuda/cpu/kernels.py before the issue-6 optimisations (commit bbe8eac), kept so that
bench/profile_phases.py can measure before/after ratios in one run.  Do not edit.

Numba kernels: the CPU twins of the CUDA kernels in csrc/kernels.cu, one function per kernel,
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

from rbm_cuda.cpu.philox import PHASE_HIDDEN, PHASE_VISIBLE, philox_uniform


@njit(cache=True, inline="always")
def _sigmoid(x):
    return np.float32(1.0) / (np.float32(1.0) + np.exp(-x))


@njit(cache=True, inline="always")
def _softplus(x):
    if x > np.float32(0.0):
        return x + np.log1p(np.exp(-x))
    return np.log1p(np.exp(x))


@njit(parallel=True, cache=True)
def sample_hidden(indptr, indices, states, values, rows, W, bh, seed, step, gibbs, prob_out, sample_out, sample):
    """p(h | v) for the batch rows, and a Bernoulli draw of h when `sample`.

    prob_out, sample_out: float32[B, F].  acc_f = bh_f + sum_j value_j * W[item_j, state_j, f].
    """
    n_hidden = bh.shape[0]
    use_values = values.shape[0] > 0
    for b in prange(rows.shape[0]):
        r = rows[b]
        acc = bh.copy()
        for j in range(indptr[r], indptr[r + 1]):
            w = W[indices[j], states[j]]
            if use_values:
                v = values[j]
                for f in range(n_hidden):
                    acc[f] += v * w[f]
            else:
                for f in range(n_hidden):
                    acc[f] += w[f]
        base = np.uint64(r) * np.uint64(n_hidden)
        for f in range(n_hidden):
            p = _sigmoid(acc[f])
            prob_out[b, f] = p
            if sample:
                u = philox_uniform(seed, step, gibbs, PHASE_HIDDEN, base + np.uint64(f))
                sample_out[b, f] = np.float32(1.0) if u < p else np.float32(0.0)


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
        for j in range(indptr[r], indptr[r + 1]):
            i = indices[j]
            top = np.float32(-np.inf)
            for k in range(n_levels):
                acc = bv[i, k]
                w = W[i, k]
                for f in range(n_hidden):
                    acc += hb[f] * w[f]
                logits[k] = acc
                if acc > top:
                    top = acc
            total = np.float32(0.0)
            for k in range(n_levels):
                e = np.exp(logits[k] - top)
                logits[k] = e
                total += e
            u = philox_uniform(seed, step, gibbs, PHASE_VISIBLE, np.uint64(j))
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
        base = np.uint64(rows[b]) * np.uint64(width)
        for n in range(width):
            p = _sigmoid(logits[b, n])
            prob_out[b, n] = p
            u = philox_uniform(seed, step, gibbs, phase, base + np.uint64(n))
            sample_out[b, n] = np.float32(1.0) if u < p else np.float32(0.0)


@njit(parallel=True, cache=True)
def scatter_gradients(indptr, indices, states, values, rows, ph, sign, dW, dbv):
    """dW[item_j, state_j, :] += sign * value_j * ph[b, :] and dbv[item_j, state_j] += sign * value_j
    over the batch's rated entries.

    Deterministic: each thread owns a slice of the hidden units, so no two threads write the same
    float and every sum runs in CSR order (the CUDA kernel uses atomics instead).
    """
    n_hidden = dW.shape[2]
    use_values = values.shape[0] > 0
    n_chunks = min(n_hidden, 16)
    chunk = (n_hidden + n_chunks - 1) // n_chunks
    for c in prange(n_chunks):
        f0 = c * chunk
        f1 = min(n_hidden, f0 + chunk)
        for b in range(rows.shape[0]):
            r = rows[b]
            phb = ph[b]
            for j in range(indptr[r], indptr[r + 1]):
                s = sign * values[j] if use_values else sign
                w = dW[indices[j], states[j]]
                for f in range(f0, f1):
                    w[f] += s * phb[f]
                if c == 0:
                    dbv[indices[j], states[j]] += s


@njit(parallel=True, cache=True)
def apply_update(param, grad, velocity, learning_rate, momentum, weight_decay, scale):
    """velocity = momentum * velocity + lr * (scale * grad - weight_decay * param); param += velocity;
    grad is zeroed for the next batch.  All arrays flat float32 of the same length.
    """
    lr = np.float32(learning_rate)
    mom = np.float32(momentum)
    wd = np.float32(weight_decay)
    sc = np.float32(scale)
    for n in prange(param.shape[0]):
        v = mom * velocity[n] + lr * (sc * grad[n] - wd * param[n])
        velocity[n] = v
        param[n] += v
        grad[n] = np.float32(0.0)


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
            acc = bv[i, k]
            w = W[i, k]
            for f in range(n_hidden):
                acc += hb[f] * w[f]
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
