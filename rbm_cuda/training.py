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


def cd_epoch(be, d, params, order, epoch, step):
    """Run one epoch of CD over the rows `order` (host int64 array), batch by batch.

    be: the backend; d: its arrays ("W", "bv", "bh", "vel", "grad", "indptr", "indices", "states",
    "values", "neg_states" for softmax units); params: RBMParams.  `step` is the number of batches
    trained before this epoch (it keys the random streams); returns the count after it."""
    p = params
    xp = be.xp
    steps = p.cd_at(epoch)
    momentum = p.momentum_at(epoch)
    n_items, K, F = d["W"].shape
    bernoulli = p.visible == "bernoulli"
    for start in range(0, len(order), p.batch_size):
        rows = be.asarray(order[start:start + p.batch_size], np.int64)
        step += 1
        B = rows.shape[0]
        scale = 1.0 / B
        ph0 = xp.empty((B, F), dtype=np.float32)
        h = xp.empty((B, F), dtype=np.float32)
        phT = xp.empty((B, F), dtype=np.float32)
        be.sample_hidden(d["indptr"], d["indices"], d["states"], d["values"], rows, d["W"], d["bh"],
                         p.seed, step, 0, ph0, h, True)
        gW, gbv, gbh = d["grad"]
        if bernoulli:
            W0 = d["W"][:, 0, :]
            pv = xp.empty((B, n_items), dtype=np.float32)
            v = xp.empty((B, n_items), dtype=np.float32)
            for t in range(1, steps + 1):
                be.sigmoid_bernoulli(h @ W0.T + d["bv"][:, 0], rows, p.seed, step, t, PHASE_VISIBLE, pv, v)
                be.sigmoid_bernoulli(v @ W0 + d["bh"], rows, p.seed, step, t, PHASE_HIDDEN, phT, h)
            be.scatter_gradients(d["indptr"], d["indices"], d["states"], d["values"], rows, ph0,
                                 np.float32(1.0), gW, gbv)
            gW[:, 0, :] -= v.T @ phT
            gbv[:, 0] -= v.sum(axis=0)
        else:
            neg_states = d["neg_states"]
            group = be.group_by_item(d["indptr"], d["indices"], rows, n_items)
            for t in range(1, steps + 1):
                be.sample_visible_softmax(d["indptr"], d["indices"], rows, *group, h, d["W"], d["bv"],
                                          p.seed, step, t, neg_states)
                be.sample_hidden(d["indptr"], d["indices"], neg_states, d["values"], rows, d["W"], d["bh"],
                                 p.seed, step, t, phT, h, t < steps)
            be.update_softmax(*group, d["states"], neg_states, ph0, phT, d["W"], d["bv"], d["vel"][0],
                              d["vel"][1], p.learning_rate, momentum, p.weight_decay, scale)
        gbh += ph0.sum(axis=0) - phT.sum(axis=0)
        updates = [(d["bh"], gbh, d["vel"][2], 0.0)]
        if bernoulli:
            updates[:0] = [(d["W"], gW, d["vel"][0], p.weight_decay), (d["bv"], gbv, d["vel"][1], 0.0)]
        for param, grad, vel, decay in updates:
            be.apply_update(param.reshape(-1), grad.reshape(-1), vel.reshape(-1), p.learning_rate,
                            momentum, decay, scale)
    return step
