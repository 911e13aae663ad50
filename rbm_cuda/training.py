"""One epoch of contrastive divergence (CD-T) over sparse rating rows, on any backend.

The RBM estimator (rbm_cuda.model) owns the parameters and the bookkeeping; this module owns the
order of the kernel calls in a training epoch.  Arguments are the backend's own arrays, so the same
loop drives the Numba kernels, the CUDA kernels and the emulated kernel source.
"""

from __future__ import annotations

import numpy as np

from .cpu.philox import PHASE_HIDDEN, PHASE_VISIBLE


def epoch_order(seed, epoch, indptr):
    """The users of a training epoch, in the order they are batched: every row with a rating,
    permuted by a Philox stream keyed by (seed, epoch)."""
    rng = np.random.Generator(np.random.Philox(key=seed, counter=[0, 0, 0, epoch]))
    return rng.permutation(np.flatnonzero(np.diff(indptr)))


def decay_powers(learning_rate, momentum, weight_decay, n):
    """float32[n + 1, 4]: row k holds the 2 x 2 map of k momentum-and-decay steps with a zero
    gradient, (w, v) -> (p0 w + p1 v, p2 w + p3 v), computed in float64.  One step is
    v' = momentum v - learning_rate weight_decay w, w' = w + v' (apply_update with grad 0)."""
    a = learning_rate * weight_decay
    step = np.array([[1.0 - a, momentum], [-a, momentum]])
    out = np.empty((n + 1, 4))
    power = np.eye(2)
    # a diverging learning rate overflows here, silently: fit's divergence check reports it in one line
    with np.errstate(over="ignore", invalid="ignore"):
        for k in range(n + 1):
            out[k] = power.ravel()
            power = step @ power
        return out.astype(np.float32)


def cd_epoch(be, d, params, order, epoch, step):
    """Run one epoch of CD over the rows `order` (host int64 array), batch by batch.

    be: the backend; d: its arrays ("W", "bv", "bh", "vel", "grad", "indptr", "indices", "states",
    "values", "neg_states" and "last" for softmax units) and "indptr_host", a host copy of indptr; params: RBMParams.  `step` is the number
    of batches trained before this epoch (it keys the random streams); returns the count after it.
    Softmax units: an item no row of a batch rates is left behind, and caught up exactly before a
    later batch reads it and at the end of the epoch (catch_up), so the work of a batch follows the
    items it touches."""
    p = params
    xp = be.xp
    steps = p.cd_at(epoch)
    momentum = p.momentum_at(epoch)
    n_items, K, F = d["W"].shape
    bernoulli = p.visible == "bernoulli"
    if not bernoulli:
        n_batches = -(-len(order) // p.batch_size)
        powers_W = be.asarray(decay_powers(p.learning_rate, momentum, p.weight_decay, n_batches), np.float32)
        powers_bv = be.asarray(decay_powers(p.learning_rate, momentum, 0.0, n_batches), np.float32)
        lazy = (d["last"], d["W"], d["bv"], d["vel"][0], d["vel"][1], powers_W, powers_bv)
        d["last"][:] = step
    finished = None
    try:
        finished = _batches(be, d, p, order, step, steps, momentum, n_items, F, bernoulli,
                            None if bernoulli else lazy)
    finally:
        # every item up to the last step taken, so that the weights are exact between epochs, and
        # also when a batch raised (Ctrl-C): its items are caught up, the others must not stay behind
        if not bernoulli:
            newest = finished if finished is not None else int(be.to_numpy(d["last"]).max())
            be.catch_up(xp.arange(n_items + 1, dtype=np.int64), lazy[0], newest, *lazy[1:], True)
    return finished


class _BernoulliNegative:
    """The buffers of the bernoulli negative phase for batches of up to B rows over n_items items: the
    dense logits, and the samples as CSR (indptr, indices, all in state 0, values all ones; row b is
    batch position b, whose hidden units draw elements b * F + f)."""

    def __init__(self, xp, B, n_items):
        self.logits = xp.empty((B, n_items), dtype=np.float32)
        self.indptr = xp.zeros(B + 1, dtype=np.int64)
        self.indices = xp.zeros(B * n_items, dtype=np.int32)  # zeros: every entry a valid item
        self.states = xp.zeros(B * n_items, dtype=np.int32)
        self.values = xp.empty(0, dtype=np.float32)
        self.positions = xp.arange(B, dtype=np.int64)


def _batches(be, d, p, order, step, steps, momentum, n_items, F, bernoulli, lazy):
    """The batches of cd_epoch; returns the step count after them.  On a GPU a softmax batch is eight
    launches (seven kernels and a search) and no transfer: the epoch's ratings are sorted by batch
    and item beforehand (be.epoch_batches), and the buffers below are allocated once."""
    xp = be.xp
    # The kernels read the seed's 64 bits; Numba passes a Python int as a signed int64, so a seed of
    # 2**63 or more goes as the int64 with the same bits.
    seed = int(p.seed)
    seed = seed - 2**64 if seed >= 2**63 else seed
    B = min(p.batch_size, len(order))
    ph0_all, h_all, phT_all = (xp.empty((B, F), dtype=np.float32) for _ in range(3))
    gW, gbv, gbh = d["grad"]
    neg = _BernoulliNegative(xp, B, n_items) if bernoulli else None
    be.reserve_hidden(B, F)
    batches = be.epoch_batches(d["indptr"], d["indices"], order, p.batch_size, n_items, d["indptr_host"],
                               grouped=not bernoulli)
    pending = None  # the items of a batch caught up to the step before it, not yet marked in last
    try:
        for rows, group in batches:
            step += 1
            B = rows.shape[0]
            scale = 1.0 / B
            ph0, h, phT = ph0_all[:B], h_all[:B], phT_all[:B]  # leading rows: still C-contiguous
            if not bernoulli:  # the batch's items, before it reads them (its update_softmax marks them)
                be.catch_up(group[0], lazy[0], step - 1, *lazy[1:], False)
                pending = group[0]
            be.sample_hidden(d["indptr"], d["indices"], d["states"], d["values"], rows, d["W"], d["bh"],
                             seed, step, 0, ph0, h, True)
            if bernoulli:
                W0T, bv = d["W"][:, 0, :].T, d["bv"].reshape(-1)
                logits = neg.logits[:B]
                sampled = (neg.indptr[:B + 1], neg.indices, neg.states, neg.values, neg.positions[:B])
                for t in range(1, steps + 1):
                    xp.matmul(h, W0T, out=logits)
                    # the sampled items as CSR, read sparsely below
                    be.sample_bernoulli_rows(logits, bv, rows, seed, step, t, PHASE_VISIBLE, sampled[0], neg.indices)
                    be.sample_hidden(*sampled, d["W"], d["bh"], seed, step, t, phT, h, t < steps)
                be.update_bernoulli(d["indptr"], d["indices"], d["states"], d["values"], rows, ph0, *sampled, phT,
                                    d["W"], d["bv"], d["vel"][0], d["vel"][1], gW, gbv, p.learning_rate, momentum,
                                    p.weight_decay, scale)
            else:
                neg_states = d["neg_states"]
                for t in range(1, steps + 1):
                    be.sample_visible_softmax(d["indptr"], d["indices"], rows, *group, h, d["W"], d["bv"],
                                              seed, step, t, neg_states)
                    be.sample_hidden(d["indptr"], d["indices"], neg_states, d["values"], rows, d["W"], d["bh"],
                                     seed, step, t, phT, h, t < steps)
                be.update_softmax(*group, d["states"], neg_states, ph0, phT, d["W"], d["bv"], d["vel"][0],
                                  d["vel"][1], p.learning_rate, momentum, p.weight_decay, scale, d["last"], step)
                pending = None
            be.update_hidden_bias(ph0, phT, d["bh"], gbh, d["vel"][2], p.learning_rate, momentum, scale)
    except BaseException:
        # stopped between a batch's catch_up and its update_softmax: its items are current at the step
        # before it, which last must say, or cd_epoch's final catch_up would take those steps again
        if pending is not None:
            d["last"][xp.diff(pending) > 0] = step - 1
        raise
    return step
