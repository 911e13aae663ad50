"""The public recommender (rbm_cuda.RBMRecommender) seen through the harness's model interface.

No RBM code lives here: every output comes from RBMRecommender's public methods, so the "rbm" row
of a table is exactly what `fit` gives users.  The part rows (rbm-item, rbm-user, rbm-implicit)
read one part of the same fitted recommender; a recommender shared by several rows is fitted once
per split.
"""

from __future__ import annotations

import time

import numpy as np

from ..recommender import RBMRecommender
from .baselines import Model

# Harness row name -> the recommender part it reads (None: the whole recommender).
PART_OF_ROW = {"rbm": None, "rbm-item": "item", "rbm-user": "user", "rbm-implicit": "ranker"}


class Shared:
    """One recommender read by several harness rows, and the training set it was last fitted on."""

    def __init__(self, recommender):
        self.recommender, self.fitted_on, self.fit_seconds = recommender, None, None

    def fit(self, train):
        if self.fitted_on is not train:
            t0 = time.perf_counter()
            self.recommender.fit(train)
            self.fitted_on, self.fit_seconds = train, time.perf_counter() - t0
        return self.recommender


def shared_recommender(rows, device="cpu", seed=0, epochs=None, params=None):
    """One unfitted RBMRecommender with the parts the harness rows `rows` need; params: more of its
    parameters (a dict), epochs: every part's epochs."""
    if "rbm" in rows:
        parts = ("item", "user", "ranker")
    else:
        parts = tuple(p for p in ("item", "user", "ranker") if any(PART_OF_ROW[r] == p for r in rows))
    kw = dict(params or {})
    if epochs is not None:
        for p in ("item", "user", "ranker"):
            kw[f"{p}_params"] = {**(kw.get(f"{p}_params") or {}), "epochs": epochs}
    return Shared(RBMRecommender(parts, seed=seed, device=device, **kw))


class RecommenderView(Model):
    """A harness row over a (shared) RBMRecommender: the whole of it, or one part."""

    def __init__(self, recommender, name="rbm", part=None):
        self.shared = recommender if isinstance(recommender, Shared) else Shared(recommender)
        self.recommender, self.name, self.part = self.shared.recommender, name, part

    def fit(self, train):
        self._remember(train)
        self._users, self._items = np.asarray(train.user_ids), np.asarray(train.item_ids)
        rec = self.shared.fit(train)
        if self.part is None:
            self.fit_seconds_ = self.shared.fit_seconds
        else:
            self.fit_seconds_ = float(sum(r["seconds"] for r in rec.parts_[self.part].history_))
        return self

    def _ids(self, users, items):
        return self._users[np.asarray(users, np.int64)], self._items[np.asarray(items, np.int64)]

    def predict(self, users, items):
        if self.part == "ranker":
            return None
        return self.recommender.predict(*self._ids(users, items), part=self.part)

    def p_like(self, users, items):
        if self.part == "ranker":
            return None
        return self.recommender.predict_like(*self._ids(users, items), threshold=self.like_threshold, part=self.part)

    def scores(self, users):
        rec = self.recommender
        if self.part is None or self.part == "ranker":
            return rec.score_items(self._users[np.asarray(users, np.int64)])
        # a rating part alone ranks by its expected rating
        ids = self._users[np.asarray(users, np.int64)]
        return np.vstack([rec.predict(np.repeat(u, self.n_items_), self._items, part=self.part) for u in ids])

    # -- new people (fold-in) -------------------------------------------------------------------------
    def predict_new(self, history, users, items):
        if self.part == "ranker":
            return None
        users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
        uniq, row = np.unique(users, return_inverse=True)
        ratings = self.recommender.predict_ratings(histories=history[uniq], part=self.part)
        return ratings[row, items]

    def scores_new(self, history, users):
        people = history[np.asarray(users, np.int64)]
        if self.part is None or self.part == "ranker":
            return self.recommender.score_items(histories=people)
        return self.recommender.predict_ratings(histories=people, part=self.part)
