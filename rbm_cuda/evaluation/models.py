"""RBM-based models for the harness: user- or item-oriented softmax RBMs, the implicit ("rated or
not") bernoulli RBM for ranking, and blends.  Same interface as rbm_cuda.evaluation.baselines.

The RBMs keep the training rows they were fitted on (RBM.train_), and every prediction or score
is computed from those rows: test ratings are never an input.
"""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp

from ..model import RBM
from .baselines import Model

# Defaults chosen on a validation part of u1.base (docs/evaluation.md, "Levers").
ITEM_RBM_PARAMS = dict(n_hidden=100, batch_size=100, cd_steps=1, learning_rate=0.1, momentum=0.8, weight_decay=0.003, epochs=50)
USER_RBM_PARAMS = dict(n_hidden=100, batch_size=100, cd_steps=1, learning_rate=0.1, momentum=0.8, weight_decay=0.003, epochs=40)
IMPLICIT_RBM_PARAMS = dict(n_hidden=100, batch_size=100, cd_steps=1, learning_rate=0.05, momentum=0.9, weight_decay=0.001, epochs=30)
# The "rbm" blend: weights of the item- and user-based rating predictions (least squares on
# validation, rounded).
BLEND_WEIGHTS = (0.7, 0.3)


class SoftmaxRBM(Model):
    """Softmax RBM on the ratings.  orientation="user": one RBM per user over the items they rated
    (the paper's model); "item": rows are items, visible units are the users who rated them, and
    the prediction for (u, i) comes from item i's row and visible unit u."""

    def __init__(self, orientation="user", device="cpu", **params):
        if orientation not in ("user", "item"):
            raise ValueError(f"orientation must be 'user' or 'item', got {orientation!r}")
        self.orientation = orientation
        defaults = ITEM_RBM_PARAMS if orientation == "item" else USER_RBM_PARAMS
        self.params = {**defaults, **params, "device": device}
        self.name = f"rbm-{orientation}"

    def fit(self, train):
        self._remember(train)
        csr = train.ratings if self.orientation == "user" else sp.csr_matrix(train.ratings.T)
        self.model_ = RBM(**self.params).fit(_with_levels(csr, train.levels))
        return self

    def _pairs(self, users, items):
        users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
        return (users, items) if self.orientation == "user" else (items, users)

    def _expect(self, rows, cols, levels, ph=None):
        """sum_k levels[k] p(v_col = k | mean-field h of row), from the model's training rows.
        ph: the hidden probabilities of all training rows, when already computed."""
        m = self.model_
        if len(rows) == 0:
            return np.zeros(0)
        d = m._device()
        be = d["be"]
        if ph is None:
            uniq, pair_rows = np.unique(rows, return_inverse=True)
            ph = m._hidden(uniq)
        else:
            pair_rows = rows
        out = be.xp.empty(len(cols), dtype=np.float32)
        be.predict_pairs(ph, be.asarray(pair_rows, np.int64), be.asarray(cols, np.int32), d["W"], d["bv"],
                         be.asarray(levels, np.float32), out)
        return be.to_numpy(out).astype(np.float64)

    def predict(self, users, items):
        rows, cols = self._pairs(users, items)
        return self._clip(self._expect(rows, cols, self.model_.levels_))

    def p_like(self, users, items):
        rows, cols = self._pairs(users, items)
        return np.clip(self._expect(rows, cols, (self.model_.levels_ >= self.like_threshold).astype(float)), 0, 1)

    def scores(self, users):
        """Expected rating of every item."""
        users = np.asarray(users, np.int64)
        if self.orientation == "user":
            return self.model_.score_users(users)
        ph = self.model_._hidden(np.arange(self.n_items_))  # every item row, once
        out = np.empty((len(users), self.n_items_), dtype=np.float32)
        block = max(1, 2**20 // max(self.n_items_, 1))
        items = np.arange(self.n_items_)
        for s in range(0, len(users), block):
            us = users[s:s + block]
            vals = self._expect(np.tile(items, len(us)), np.repeat(us, self.n_items_), self.model_.levels_, ph)
            out[s:s + len(us)] = vals.reshape(len(us), self.n_items_)
        return out


def _with_levels(csr, levels):
    """A tiny RatingData-like object so the RBM learns the full rating scale even when a level is
    absent from the training rows."""
    class _R:
        pass

    r = _R()
    r.ratings = sp.csr_matrix(csr, dtype=np.float32)
    r.levels = np.asarray(levels, np.float64)
    r.user_ids, r.item_ids = np.arange(csr.shape[0]), np.arange(csr.shape[1])
    r.name, r.items = "", None
    return r


class ImplicitRBM(Model):
    """Bernoulli RBM over all items with 0/1 data (1 = the user rated the item, whatever the
    rating): it models which items a user rates, and ranks unseen items by p(v_i = 1 | h)."""

    name = "rbm-implicit"

    def __init__(self, device="cpu", **params):
        self.params = {**IMPLICIT_RBM_PARAMS, **params, "visible": "bernoulli", "device": device}

    def fit(self, train):
        self._remember(train)
        ones = sp.csr_matrix(train.ratings, dtype=np.float32, copy=True)
        ones.data[:] = 1.0
        self.model_ = RBM(**self.params).fit(ones)
        return self

    def scores(self, users):
        return self.model_.score_users(np.asarray(users, np.int64))

    def p_like(self, users, items):
        return None


def fit_once(model, train) -> float:
    """Fit `model` on `train` unless it is already fitted on that very object (models shared by
    a blend and its own row in the table are trained once); its fit time in seconds."""
    if getattr(model, "_fitted_on", None) is not train:
        t0 = time.perf_counter()
        model.fit(train)
        model._fitted_on = train
        model.fit_seconds_ = getattr(model, "fit_seconds_", None) if isinstance(model, Blend) else \
            time.perf_counter() - t0
    return model.fit_seconds_


class Blend(Model):
    """A weighted average of the rating predictions of several models (weights sum to 1), and of
    their P(like).  Ranking scores come from the model named by `ranker` (or none)."""

    def __init__(self, models, weights, name="rbm-blend", ranker=None):
        if len(models) != len(weights):
            raise ValueError("one weight per model")
        self.models, self.weights, self.name, self.ranker = list(models), np.asarray(weights, float), name, ranker

    def fit(self, train):
        self._remember(train)
        parts = self.models + ([self.ranker] if self.ranker is not None else [])
        self.fit_seconds_ = sum(fit_once(m, train) for m in parts)
        return self

    def predict(self, users, items):
        return self._clip(sum(w * m.predict(users, items) for w, m in zip(self.weights, self.models)))

    def p_like(self, users, items):
        parts = [m.p_like(users, items) for m in self.models]
        return sum(w * p for w, p in zip(self.weights, parts))

    def scores(self, users):
        return None if self.ranker is None else self.ranker.scores(users)
