"""A dense NumPy CD-k RBM in the style of the project's NumPy seeds: one Bernoulli visible unit per
item with value rating / 5 (0 = unrated), the whole users x items matrix in float32, W of
items x F, matrix products for every phase, plain SGD with momentum.  Same hyper-parameters as the
benchmark gives rbm_cuda (F, batch size, CD steps); it models less (no softmax over levels) and
does far more arithmetic (every item of every user, rated or not).
"""

import numpy as np


def _sigmoid(x, out=None):
    out = np.negative(x, out=out)
    np.exp(out, out=out)
    out += 1.0
    return np.reciprocal(out, out=out)


class DenseRBM:
    def __init__(self, n_visible, n_hidden=100, cd_steps=1, learning_rate=0.01, momentum=0.9, batch_size=1000,
                 seed=0):
        self.rng = np.random.default_rng(seed)
        self.W = (0.01 * self.rng.standard_normal((n_visible, n_hidden))).astype(np.float32)
        self.bv = np.zeros(n_visible, dtype=np.float32)
        self.bh = np.zeros(n_hidden, dtype=np.float32)
        self.vel = [np.zeros_like(self.W), np.zeros_like(self.bv), np.zeros_like(self.bh)]
        self.cd_steps, self.lr, self.mom, self.batch_size = cd_steps, learning_rate, momentum, batch_size

    def _bernoulli(self, p):
        return (self.rng.random(p.shape, dtype=np.float32) < p).astype(np.float32)

    def epoch(self, V):
        """One CD-k epoch over the rows of the dense float32 matrix V (users x items)."""
        order = self.rng.permutation(V.shape[0])
        W, bv, bh = self.W, self.bv, self.bh
        for s in range(0, len(order), self.batch_size):
            v0 = V[order[s:s + self.batch_size]]
            ph0 = _sigmoid(v0 @ W + bh)
            h = self._bernoulli(ph0)
            for _ in range(self.cd_steps):
                v = self._bernoulli(_sigmoid(h @ W.T + bv))
                ph = _sigmoid(v @ W + bh)
                h = self._bernoulli(ph)
            scale = np.float32(self.lr / len(v0))
            grads = (v0.T @ ph0 - v.T @ ph, v0.sum(0) - v.sum(0), ph0.sum(0) - ph.sum(0))
            for param, vel, g in zip((W, bv, bh), self.vel, grads):
                vel *= np.float32(self.mom)
                vel += scale * g
                param += vel


def dense_values(csr, max_rating=5.0):
    """users x items float32, rating / max_rating, 0 where unrated."""
    V = np.zeros(csr.shape, dtype=np.float32)
    rows = np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr))
    V[rows, csr.indices] = csr.data / np.float32(max_rating)
    return V
