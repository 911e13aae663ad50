"""Baselines, fitted and evaluated beside the RBM on the same split.

Every model of the harness (these and rbm_cuda.evaluation.models) has the same small interface:
  fit(train)            train: a RatingData; the only place ratings reach a model
  predict(users, items) -> float64[n] predicted ratings (None if the model does not predict ratings)
  scores(users)         -> float[U, n_items] ranking scores, higher = better (None: no ranking)
  p_like(users, items)  -> float64[n] in [0, 1], P(rating >= like threshold) (None: no such output)
users and items are index arrays: the harness never hands a model test ratings.  For people who
were not in the training data (protocol new-users), the same outputs from their history, a csr
matrix over all users whose rows `users` hold the ratings to fold in (None: the model cannot):
  predict_new(history, users, items), scores_new(history, users), p_like_new(history, users, items)
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numba import njit
from scipy.sparse.linalg import svds

from .metrics import LIKE_THRESHOLD


def like_from_rating(pred, threshold=LIKE_THRESHOLD):
    """P(like) for a model that predicts ratings only: a logistic of the predicted rating centred
    half a level below the like threshold (2.5 on a 1-5 scale), slope 4 per rating point.  Only
    its ordering (AUC) and its side of 0.5 (the hard decision) enter the metrics."""
    centre = threshold - 0.5
    return 1.0 / (1.0 + np.exp(-4.0 * (np.asarray(pred, np.float64) - centre)))


class Model:
    """Base class: outputs a model does not have return None."""

    name = "model"

    def fit(self, train):
        raise NotImplementedError

    def predict(self, users, items):
        return None

    def scores(self, users):
        return None

    def p_like(self, users, items):
        pred = self.predict(users, items)
        return None if pred is None else like_from_rating(pred, self.like_threshold)

    like_threshold = LIKE_THRESHOLD

    def predict_new(self, history, users, items):
        return None

    def scores_new(self, history, users):
        return None

    def p_like_new(self, history, users, items):
        pred = self.predict_new(history, users, items)
        return None if pred is None else like_from_rating(pred, self.like_threshold)

    def _remember(self, train):
        self.levels_ = np.asarray(train.levels, np.float64)
        self.n_users_, self.n_items_ = train.ratings.shape
        self.lo_, self.hi_ = float(self.levels_.min()), float(self.levels_.max())

    def _clip(self, pred):
        return np.clip(np.asarray(pred, np.float64), self.lo_, self.hi_)


class GlobalMean(Model):
    """Every rating predicted as the mean training rating."""

    name = "global-mean"

    def fit(self, train):
        self._remember(train)
        self.mu_ = float(train.ratings.data.mean())
        return self

    def predict(self, users, items):
        return self._clip(np.full(len(users), self.mu_))

    def predict_new(self, history, users, items):
        return self.predict(users, items)


class Biases(Model):
    """r_ui = mu + b_u + b_i, regularised least squares fitted by alternating updates (the
    scikit-surprise BaselineOnly ALS: reg_i = 10, reg_u = 15, 10 sweeps).  Ranks items by b_i."""

    name = "biases"

    def __init__(self, reg_u=15.0, reg_i=10.0, n_iter=10):
        self.reg_u, self.reg_i, self.n_iter = reg_u, reg_i, n_iter

    def fit(self, train):
        self._remember(train)
        coo = train.ratings.tocoo()
        u, i, r = coo.row, coo.col, coo.data.astype(np.float64)
        self.mu_ = float(r.mean())
        nu, ni = train.ratings.shape
        bu, bi = np.zeros(nu), np.zeros(ni)
        cu = np.bincount(u, minlength=nu)
        ci = np.bincount(i, minlength=ni)
        for _ in range(self.n_iter):
            bi = np.bincount(i, weights=r - self.mu_ - bu[u], minlength=ni) / (self.reg_i + ci)
            bu = np.bincount(u, weights=r - self.mu_ - bi[i], minlength=nu) / (self.reg_u + cu)
        self.bu_, self.bi_ = bu, bi
        return self

    def predict(self, users, items):
        return self._clip(self.mu_ + self.bu_[users] + self.bi_[items])

    def scores(self, users):
        return np.broadcast_to(self.mu_ + self.bu_[np.asarray(users)][:, None] + self.bi_[None, :],
                               (len(users), self.n_items_))

    def _user_bias(self, history, users):
        """b_u of new people from their history, the item biases held fixed (one ALS step)."""
        h = history[np.asarray(users, np.int64)].tocsr()
        rows = np.repeat(np.arange(h.shape[0]), np.diff(h.indptr))
        resid = h.data.astype(np.float64) - self.mu_ - self.bi_[h.indices]
        return np.bincount(rows, weights=resid, minlength=h.shape[0]) / (self.reg_u + np.diff(h.indptr))

    def predict_new(self, history, users, items):
        uniq, row = np.unique(np.asarray(users, np.int64), return_inverse=True)
        return self._clip(self.mu_ + self._user_bias(history, uniq)[row] + self.bi_[np.asarray(items)])

    def scores_new(self, history, users):
        return self.mu_ + self._user_bias(history, users)[:, None] + self.bi_[None, :]


class ItemPopularity(Model):
    """Ranks items by their number of training ratings (ranking only)."""

    name = "popularity"

    def fit(self, train):
        self._remember(train)
        self.counts_ = np.bincount(train.ratings.indices, minlength=self.n_items_).astype(np.float64)
        return self

    def scores(self, users):
        return np.broadcast_to(self.counts_, (len(users), self.n_items_))

    def scores_new(self, history, users):
        return self.scores(users)

    def p_like(self, users, items):
        return None


class ConstantLike(Model):
    """Always answers "like" (like/dislike only)."""

    name = "always-like"

    def fit(self, train):
        self._remember(train)
        return self

    def p_like(self, users, items):
        return np.ones(len(users))

    def p_like_new(self, history, users, items):
        return np.ones(len(users))


class MeanImputedSVD(Model):
    """Truncated SVD of the rating matrix with every missing entry filled by its item's mean
    training rating: with the item means subtracted the filled entries are 0, so the SVD runs on the
    sparse matrix of centred ratings (never densified).  r_ui = mean_i + (U_k S_k V_k^T)[u, i]."""

    name = "svd"

    def __init__(self, rank=10):
        self.rank = rank

    def fit(self, train):
        self._remember(train)
        csr = sp.csr_matrix(train.ratings, dtype=np.float64)
        counts = np.bincount(csr.indices, minlength=self.n_items_)
        sums = np.bincount(csr.indices, weights=csr.data, minlength=self.n_items_)
        mu = float(csr.data.mean())
        self.item_mean_ = np.where(counts > 0, sums / np.maximum(counts, 1), mu)
        centred = csr.copy()
        centred.data = csr.data - self.item_mean_[csr.indices]
        k = max(1, min(self.rank, min(csr.shape) - 1))
        U, s, Vt = svds(centred, k=k, random_state=0)
        self.P_ = U * s
        self.Q_ = Vt.T
        return self

    def predict(self, users, items):
        users, items = np.asarray(users), np.asarray(items)
        return self._clip(self.item_mean_[items] + np.einsum("nk,nk->n", self.P_[users], self.Q_[items]))

    def scores(self, users):
        return self.item_mean_[None, :] + self.P_[np.asarray(users)] @ self.Q_.T


class BiasedMF(Model):
    """Biased matrix factorisation trained by SGD, as scikit-surprise's SVD (Funk; Koren 2008):
    r_ui = mu + b_u + b_i + q_i . p_u, minimising the squared error plus reg * (b_u^2 + b_i^2 +
    |p_u|^2 + |q_i|^2) per rating by SGD over the ratings in a seeded shuffled order each epoch.
    surprise's defaults: 100 factors, 20 epochs, learning rate 0.005, reg 0.02, factors drawn from
    N(0, 0.1^2). New people: b_u and p_u by the same objective's ridge least squares over their
    history, the items held fixed. Ranks items by the predicted rating."""

    name = "mf-sgd"

    def __init__(self, n_factors=100, n_epochs=20, lr=0.005, reg=0.02, init_std=0.1, seed=0):
        self.n_factors, self.n_epochs, self.lr, self.reg, self.init_std, self.seed = \
            n_factors, n_epochs, lr, reg, init_std, seed

    def fit(self, train):
        self._remember(train)
        coo = train.ratings.tocoo()
        u, i, r = coo.row.astype(np.int64), coo.col.astype(np.int64), coo.data.astype(np.float64)
        rng = np.random.default_rng(self.seed)
        self.mu_ = float(r.mean())
        self.P_ = rng.normal(0.0, self.init_std, (self.n_users_, self.n_factors))
        self.Q_ = rng.normal(0.0, self.init_std, (self.n_items_, self.n_factors))
        self.bu_, self.bi_ = np.zeros(self.n_users_), np.zeros(self.n_items_)
        for _ in range(self.n_epochs):
            order = rng.permutation(len(r))
            _mf_sgd_epoch(u[order], i[order], r[order], self.mu_, self.bu_, self.bi_, self.P_, self.Q_,
                          self.lr, self.reg)
        return self

    def predict(self, users, items):
        users, items = np.asarray(users), np.asarray(items)
        return self._clip(self.mu_ + self.bu_[users] + self.bi_[items]
                          + np.einsum("nk,nk->n", self.P_[users], self.Q_[items]))

    def scores(self, users):
        users = np.asarray(users)
        return self.mu_ + self.bu_[users][:, None] + self.bi_[None, :] + self.P_[users] @ self.Q_.T

    def _fold_in(self, history, users):
        """(b_u, p_u) of new people: ridge least squares of their residuals r - mu - b_i on
        [1, q_i], with the penalty reg * (number of their ratings), as the SGD objective has."""
        h = history[np.asarray(users, np.int64)].tocsr()
        bu = np.zeros(h.shape[0])
        P = np.zeros((h.shape[0], self.n_factors))
        for k in range(h.shape[0]):
            items = h.indices[h.indptr[k]:h.indptr[k + 1]]
            if not len(items):
                continue
            y = h.data[h.indptr[k]:h.indptr[k + 1]].astype(np.float64) - self.mu_ - self.bi_[items]
            A = np.hstack([np.ones((len(items), 1)), self.Q_[items]])
            x = np.linalg.solve(A.T @ A + self.reg * len(items) * np.eye(A.shape[1]), A.T @ y)
            bu[k], P[k] = x[0], x[1:]
        return bu, P

    def predict_new(self, history, users, items):
        uniq, row = np.unique(np.asarray(users, np.int64), return_inverse=True)
        bu, P = self._fold_in(history, uniq)
        items = np.asarray(items)
        return self._clip(self.mu_ + bu[row] + self.bi_[items] + np.einsum("nk,nk->n", P[row], self.Q_[items]))

    def scores_new(self, history, users):
        bu, P = self._fold_in(history, users)
        return self.mu_ + bu[:, None] + self.bi_[None, :] + P @ self.Q_.T


@njit(cache=True)
def _mf_sgd_epoch(u, i, r, mu, bu, bi, P, Q, lr, reg):
    """One SGD pass over the ratings (u[n], i[n], r[n]) in that order, updating bu, bi, P, Q in place."""
    for n in range(len(r)):
        a, b = u[n], i[n]
        err = r[n] - (mu + bu[a] + bi[b] + np.dot(P[a], Q[b]))
        bu[a] += lr * (err - reg * bu[a])
        bi[b] += lr * (err - reg * bi[b])
        for f in range(P.shape[1]):
            pf, qf = P[a, f], Q[b, f]
            P[a, f] += lr * (err * qf - reg * pf)
            Q[b, f] += lr * (err * pf - reg * qf)


class EASE(Model):
    """EASE (Steck 2019), a closed-form item-item model for ranking: with X the 0/1 "rated" matrix,
    B = I - P diag(1 / diag(P)), P = (X^T X + lambda I)^-1, zero diagonal; scores = X B.  lambda is
    chosen among `lambdas` by precision@10 on a per-user 25 % of the training data (seed 0), then B
    is fitted on all of it.  Dense items x items: refused beyond max_items."""

    name = "ease"

    def __init__(self, lambdas=(100.0, 200.0, 400.0, 800.0, 1600.0, 3200.0), max_items=20_000):
        self.lambdas, self.max_items = tuple(lambdas), max_items

    def fit(self, train):
        from . import metrics as M
        from .splits import stratified_split

        self._remember(train)
        if self.n_items_ > self.max_items:
            raise ValueError(f"ease builds a dense {self.n_items_} x {self.n_items_} matrix; at most "
                             f"{self.max_items} items are accepted")
        split = stratified_split(train, 0.25, seed=0)
        X = _binary(split.train.ratings)
        users, rel, n_rel = M.relevant_sets(split.test.ratings)
        best = None
        for lam in self.lambdas:
            B = self._weights(X, lam)
            top = M.top_k((X[users] @ B), X[users].toarray() != 0, M.DEFAULT_K)
            p = M.ranking_at_k(top, rel, n_rel, M.DEFAULT_K)[f"precision@{M.DEFAULT_K}"]
            if best is None or p > best[1]:
                best = (lam, p)
        self.lambda_ = best[0]
        self.X_ = _binary(train.ratings)
        self.B_ = self._weights(self.X_, self.lambda_)
        return self

    @staticmethod
    def _weights(X, lam):
        G = (X.T @ X).toarray().astype(np.float64)
        G[np.diag_indices_from(G)] += lam
        P = np.linalg.inv(G)
        B = -P / np.diag(P)[None, :]
        B[np.diag_indices_from(B)] = 0.0
        return B

    def scores(self, users):
        return np.asarray(self.X_[np.asarray(users)] @ self.B_)

    def scores_new(self, history, users):
        return np.asarray(_binary(history[np.asarray(users, np.int64)]) @ self.B_)

    def p_like(self, users, items):
        return None

    def p_like_new(self, history, users, items):
        return None


def _binary(csr):
    """The 0/1 "rated" matrix of a rating matrix, float64 CSR."""
    out = sp.csr_matrix(csr, dtype=np.float64, copy=True)
    out.data[:] = 1.0
    return out
