"""RBMRecommender: the recommender rbm_cuda gives people, built from three RBMs.

- Rating predictions: a blend of an item-based and a user-based softmax RBM.  The blend weights are
  fitted at fit() time on a validation part of the training data (least squares on the simplex);
  the parts are then trained again on all of it.
- Ranking (recommend): an implicit RBM, Bernoulli units over "rated or not", which models which
  items a person rates.  A softmax RBM models the values of rated items and ranks obscure items
  first; whether a person rates an item is what a top-N list needs.

Everyone is served through the same code: a user of the training data by their training rows, a new
person by fold-in from their history, without retraining (docs/design.md, "Fold-in").
"""

from __future__ import annotations

import math
import numbers
import os
import sys

import numpy as np
import scipy.sparse as sp

from .datasets.core import RatingData, lookup_ids
from .ensemble import RBMEnsemble, member_seed
from .exceptions import NotFittedError
from .model import RBM, sparse_ratings
from .params import check_n
from .topn import best_items

PARTS = ("item", "user", "ranker")
RATING_PARTS = ("item", "user")

# Each part's RBM parameters, chosen on a validation part of MovieLens 100K u1.base
# (docs/evaluation.md, "How the defaults were chosen").
DEFAULT_PART_PARAMS = {
    "item": dict(n_hidden=100, batch_size=100, cd_steps=1, learning_rate=0.1, momentum=0.8, weight_decay=0.003,
                 epochs=50),
    "user": dict(n_hidden=100, batch_size=100, cd_steps=1, learning_rate=0.1, momentum=0.8, weight_decay=0.003,
                 epochs=40),
    "ranker": dict(n_hidden=100, batch_size=100, cd_steps=1, learning_rate=0.05, momentum=0.9, weight_decay=0.001,
                   epochs=30, average_epochs=5, visible="bernoulli"),
}
# The validation stage's budget of ratings (RBMRecommender.valid_max_ratings).
DEFAULT_VALID_MAX_RATINGS = 2_000_000
# Pairs (or users x items cells) computed at once: bounds the temporary arrays.
BLOCK_ELEMENTS = 2**22


def _rating_data(X):
    """X as a RatingData (a scipy sparse users x items matrix gets index ids and its own levels)."""
    if isinstance(X, RatingData):
        return X
    if sp.issparse(X):
        csr = sparse_ratings(X)
        levels = np.unique(csr.data).astype(np.float64)
        return RatingData(csr, np.arange(csr.shape[0]), np.arange(csr.shape[1]), levels, name="")
    raise TypeError(f"ratings must be a rbm_cuda.datasets.RatingData or a scipy.sparse matrix (users x items), "
                    f"got {type(X).__name__}")


def _transposed(data):
    """Items as rows and users as columns, the item-based RBM's view of the same ratings."""
    return RatingData(sp.csr_matrix(data.ratings.T), data.item_ids, data.user_ids, data.levels,
                      name=data.name)


def _implicit(data):
    """1 for every rated (user, item), whatever the rating: the ranker's data (sharing the ratings'
    indices and indptr, which nothing writes to)."""
    r = data.ratings
    ones = sp.csr_matrix((np.ones(r.nnz, dtype=np.float32), r.indices, r.indptr), shape=r.shape)
    return RatingData(ones, data.user_ids, data.item_ids, [1.0], name=data.name)


def simplex_least_squares(P, y):
    """Weights w >= 0 with sum 1 minimising ||P w - y||^2 (P: n x m predictions, y: n targets)."""
    from scipy.optimize import minimize

    m = P.shape[1]
    if m == 1:
        return np.ones(1)
    G, c = P.T @ P, P.T @ y
    res = minimize(lambda w: (w @ G @ w - 2 * c @ w, 2 * (G @ w - c)), np.full(m, 1.0 / m), jac=True,
                   method="SLSQP", bounds=[(0.0, 1.0)] * m,
                   constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones(m)}])
    w = np.clip(res.x, 0.0, None)
    return w / w.sum()


class RBMRecommender:
    """The rbm_cuda recommender: blended softmax RBMs for ratings, an implicit RBM for top-N lists.

    Parameters (plain attributes, read and checked by fit)
    ----------
    parts : the parts to train, a subset of ("item", "user", "ranker").  "item": a softmax RBM with
        items as rows and users as visible units; "user": a softmax RBM with users as rows (the RBM
        of Salakhutdinov, Mnih & Hinton 2007); "ranker": a Bernoulli RBM over rated-or-not.  At
        least one rating part is needed for predict(); without the ranker, recommend() ranks by the
        expected rating.
    item_params, user_params, ranker_params : dict or None, RBM parameters that override the
        part's defaults (DEFAULT_PART_PARAMS), e.g. {"epochs": 20}.
    n_rankers : int >= 1, ranker RBMs trained from different seeds (the first from `seed`); the
        ranking score is the mean of their p(rated).  More rank a little better, and each costs one
        ranker's training and scoring: 4 take a web server's throughput from about 930 to 550
        requests/s (docs/evaluation.md, "Levers").
    valid_fraction : float in (0, 1), share of each user's training ratings held out to fit the
        blend weights (only when two rating parts are blended).
    valid_max_ratings : int >= 1 or None, with refit=True, the validation stage (the rating parts
        trained without the held-out share, only to fit the blend weights) reads at most this many
        ratings: on larger data, those of users drawn at random (seeded) until their ratings reach it.
        The final parts train on all the ratings.  None: every user.  Data sets of up to 2,000,000
        ratings (the default) are read whole.  With refit=False the stage's parts are the final ones,
        so they read every user whatever this says.
    refit : bool, after the weights are fitted, train the rating parts again on all the ratings
        (True), or keep the parts trained without the held-out share (False: half the cost).
    seed : int, seeds every part and the validation split.
    device : "auto" | "cpu" | "cuda", where every part trains and scores.
    progress : bool, show a progress bar over the epochs of all parts on stderr.

    Attributes after fit
    --------------------
    parts_ : {name: fitted RBM; "ranker": an RBMEnsemble of n_rankers RBMs}; weights_ : {rating part: blend weight} (sum 1);
    validation_ : {"rmse": {part or "blend": RMSE on the held-out share}, "n_ratings": int (held out),
    "train_ratings": int (the validation stage's training ratings; absent from older files)} (empty
    when no blend was fitted); levels_, user_ids_, item_ids_, items_, n_users_, n_items_, train_
    (csr float32 n_users x n_items, the ratings trained on), dataset_name_.
    """

    def __init__(self, parts=PARTS, *, item_params=None, user_params=None, ranker_params=None, n_rankers=1,
                 valid_fraction=0.1, valid_max_ratings=DEFAULT_VALID_MAX_RATINGS, refit=True, seed=0, device="auto",
                 progress=False):
        self.parts = parts
        self.item_params = item_params
        self.user_params = user_params
        self.ranker_params = ranker_params
        self.n_rankers = n_rankers
        self.valid_fraction = valid_fraction
        self.valid_max_ratings = valid_max_ratings
        self.refit = refit
        self.seed = seed
        self.device = device
        self.progress = progress

    # -- scikit-learn conventions -------------------------------------------------------------
    _PARAM_NAMES = ("parts", "item_params", "user_params", "ranker_params", "n_rankers", "valid_fraction",
                    "valid_max_ratings", "refit", "seed", "device", "progress")

    def get_params(self, deep=True):
        return {name: getattr(self, name) for name in self._PARAM_NAMES}

    def set_params(self, **kw):
        for name, value in kw.items():
            if name not in self._PARAM_NAMES:
                raise TypeError(f"unknown RBMRecommender parameter {name!r}; known: {', '.join(self._PARAM_NAMES)}")
            setattr(self, name, value)
        return self

    def __repr__(self):
        return f"RBMRecommender(parts={tuple(self.parts)!r})"

    def _part_params(self, name):
        """The RBM parameters of one part: defaults, the caller's overrides, the seed and device."""
        extra = getattr(self, f"{name}_params")
        if extra is not None and not isinstance(extra, dict):
            raise ValueError(f"{name}_params must be a dict of RBM parameters or None, got {extra!r}")
        out = {**DEFAULT_PART_PARAMS[name], **(extra or {}), "seed": self.seed, "device": self.device}
        if name == "ranker" and out.get("visible", "bernoulli") != "bernoulli":
            raise ValueError(f"ranker_params: the ranker's visible units are bernoulli, got {out['visible']!r}")
        if name != "ranker" and out.get("visible", "softmax") != "softmax":
            raise ValueError(f"{name}_params: the rating parts' visible units are softmax, got {out['visible']!r}")
        RBM(**out)  # checks every value and names the bad one
        return out

    def _check_params(self):
        parts = tuple(self.parts) if not isinstance(self.parts, str) else (self.parts,)
        bad = [p for p in parts if p not in PARTS]
        if bad or not parts or len(set(parts)) != len(parts):
            raise ValueError(f"parts={self.parts!r} is not allowed: parts must be distinct names among {PARTS}")
        n = self.n_rankers
        if not (isinstance(n, numbers.Integral) and not isinstance(n, bool) and n >= 1):
            raise ValueError(f"n_rankers={n!r} is not allowed: n_rankers must be an int >= 1")
        v = self.valid_fraction
        if not (isinstance(v, numbers.Real) and not isinstance(v, bool) and 0 < v < 1):
            raise ValueError(f"valid_fraction={v!r} is not allowed: valid_fraction must be a number in (0, 1)")
        c = self.valid_max_ratings
        if c is not None and not (isinstance(c, numbers.Integral) and not isinstance(c, bool) and c >= 1):
            raise ValueError(f"valid_max_ratings={c!r} is not allowed: valid_max_ratings must be an int >= 1 or None")
        if not isinstance(self.refit, bool):
            raise ValueError(f"refit={self.refit!r} is not allowed: refit must be True or False")
        params = {name: self._part_params(name) for name in parts}
        return tuple(p for p in PARTS if p in parts), params

    # -- training -------------------------------------------------------------------------------
    def fit(self, X, *, callback=None):
        """Train every part on X (a RatingData, or a scipy sparse users x items matrix of ratings).

        callback(part_name, rbm, record) is called after each epoch of each part (record: the
        part's history record; the validation stage's parts are named "item (validation)", ...)."""
        from .evaluation.splits import stratified_split

        parts, params = self._check_params()
        data = _rating_data(X)
        if data.nnz == 0:
            raise ValueError("cannot fit on an empty rating matrix")
        rating = [p for p in parts if p in RATING_PARTS]
        blend = len(rating) > 1
        final_parts = list(parts) if (self.refit or not blend) else [p for p in parts if p not in RATING_PARTS]
        copies = {p: self.n_rankers if p == "ranker" else 1 for p in parts}
        total = sum(params[p]["epochs"] * copies[p] for p in final_parts) \
            + (sum(params[p]["epochs"] for p in rating) if blend else 0)
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, desc="RBMRecommender", unit="epoch", file=sys.stderr, leave=False)

        def train(name, part_data, label):
            def on_epoch(rbm, record):
                if bar is not None:
                    bar.set_postfix_str(label)
                    bar.update(1)
                if callback is not None:
                    callback(label, rbm, record)

            # no per-epoch monitoring: the blend's validation is what the recommender reports
            view = self._view(name, part_data)
            models = []
            for k in range(copies[name]):
                kw = dict(params[name], seed=member_seed(self.seed, k))
                models.append(RBM(**kw).fit(view, callback=on_epoch, monitor=False))
                models[-1]._forget_velocity()  # parts are not trained further (nor saved with it): W's size freed
                if k:  # the rows held once already while the next model trains
                    models[-1]._share_rows(models[0])
            return RBMEnsemble(models) if name == "ranker" else models[0]

        fitted = {}
        self.validation_ = {}
        try:
            if blend:
                rows = self._validation_rows(data)
                split = stratified_split(rows, self.valid_fraction, self.seed)
                if split.test.nnz == 0:
                    drawn = f" of the {rows.nnz} ratings drawn under valid_max_ratings" if rows is not data else ""
                    raise ValueError(f"valid_fraction={self.valid_fraction} holds out no rating{drawn} of this data; "
                                     "give more ratings or a larger valid_fraction"
                                     + (" or valid_max_ratings" if drawn else ""))
                for name in rating:
                    fitted[name] = train(name, split.train, f"{name} (validation)")
                self.weights_ = self._fit_weights(fitted, split, rating)
                self.validation_["train_ratings"] = int(split.train.nnz)
                del split
                if self.refit:
                    fitted.clear()  # the validation stage's parts, freed before the final fits
                self._cache = {}  # it holds the validation stage's item part
            for name in final_parts:
                fitted[name] = train(name, data, name)
        finally:
            if bar is not None:
                bar.close()
        if not blend:
            self.weights_ = {p: 1.0 for p in rating}
        if not self.refit and blend:
            # The rating parts were trained without the held-out share; they now read all of it.
            for p in rating:
                fitted[p].set_rows(self._view(p, data))
        self.parts_ = {p: fitted[p] for p in parts}
        self._remember(data)
        return self

    def _validation_rows(self, data):
        """The ratings of the validation stage: all of them, or, when there are more than
        valid_max_ratings and the parts are trained again afterwards (refit), those of users taken in a
        seeded random order while their ratings add up to at most that many (at least one user).  The
        other users' rows are empty."""
        cap, csr = self.valid_max_ratings, data.ratings
        if cap is None or not self.refit or csr.nnz <= cap:
            return data
        counts = np.diff(csr.indptr)
        order = np.random.Generator(np.random.Philox(key=self.seed, counter=[0, 0, 1, 0])).permutation(len(counts))
        n = max(1, int(np.searchsorted(np.cumsum(counts[order]), cap, side="right")))
        kept = np.zeros(len(counts), dtype=bool)
        kept[order[:n]] = True
        entries = np.repeat(kept, counts)
        indptr = np.concatenate([[0], np.cumsum(np.where(kept, counts, 0))])
        return data.with_ratings(sp.csr_matrix((csr.data[entries], csr.indices[entries], indptr), shape=csr.shape))

    @staticmethod
    def _view(name, data):
        return _transposed(data) if name == "item" else _implicit(data) if name == "ranker" else data

    def _fit_weights(self, fitted, split, rating):
        """Blend weights on the held-out share: least squares on the simplex."""
        coo = split.test.ratings.tocoo()
        u, i, y = coo.row.astype(np.int64), coo.col.astype(np.int64), coo.data.astype(np.float64)
        preds = np.column_stack([self._part_pairs(fitted, p, u, i) for p in rating])
        w = simplex_least_squares(preds, y)
        lo, hi = float(split.train.levels.min()), float(split.train.levels.max())
        rmse = {p: float(np.sqrt(np.mean((np.clip(preds[:, k], lo, hi) - y) ** 2))) for k, p in enumerate(rating)}
        rmse["blend"] = float(np.sqrt(np.mean((np.clip(preds @ w, lo, hi) - y) ** 2)))
        self.validation_ = {"rmse": rmse, "n_ratings": int(len(y))}
        return {p: float(x) for p, x in zip(rating, w)}

    def _remember(self, data):
        self.levels_ = np.asarray(data.levels, dtype=np.float64)
        self.user_ids_, self.item_ids_ = np.asarray(data.user_ids), np.asarray(data.item_ids)
        self.items_ = data.items
        self.n_users_, self.n_items_ = data.ratings.shape
        self.train_ = data.ratings
        self.dataset_name_ = data.name or ""
        self._cache = {}

    # -- checks and ids ---------------------------------------------------------------------------
    def _check_fitted(self):
        if not hasattr(self, "parts_"):
            raise NotFittedError("this RBMRecommender is not fitted yet: call fit() or RBMRecommender.load() first")

    def user_index(self, user_ids):
        """Row index of raw user id(s) (an int for a scalar, else int64[n]); KeyError if unknown."""
        return lookup_ids(self.user_ids_, user_ids, "user", "the model")

    def item_index(self, item_ids):
        """Index of raw item id(s) (an int for a scalar, else int64[n]); KeyError if unknown."""
        return lookup_ids(self.item_ids_, item_ids, "item", "the model")

    @property
    def rating_parts_(self):
        return tuple(p for p in RATING_PARTS if p in self.parts_)

    # -- the parts' outputs -----------------------------------------------------------------------
    def _cached(self, key, part, compute):
        """compute(part), kept until `part` is replaced (the parts are read-only once fitted)."""
        cache = self.__dict__.setdefault("_cache", {})
        hit = cache.get(key)
        if hit is None or hit[0] is not part:
            hit = cache[key] = (part, compute(part))
        return hit[1]

    def _item_hidden(self, fitted):
        """Mean-field hidden probabilities of every item row of the item-based part, float32[n_items, F]."""
        return self._cached("item_hidden", fitted["item"], lambda m: m.transform().astype(np.float32))

    def _part_proba(self, fitted, part, users, items):
        """Level probabilities float64[n, K] of (user index, item index) pairs of training users
        from one rating part."""
        users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
        m = fitted[part]
        if part == "user":
            return m.predict_proba(m.user_ids_[users], m.item_ids_[items])
        ph = self._item_hidden(fitted)
        out = np.empty((len(users), m.W_.shape[1]))
        step = max(1, BLOCK_ELEMENTS // m.W_[0].size)
        for s in range(0, len(users), step):
            u, i = users[s:s + step], items[s:s + step]
            out[s:s + step] = _softmax(np.einsum("pkf,pf->pk", m.W_[u], ph[i]) + m.bv_[u])
        return out

    def _part_pairs(self, fitted, part, users, items):
        """Expected rating of (user index, item index) pairs of training users from one part."""
        return self._part_proba(fitted, part, users, items) @ fitted[part].levels_

    def _item_part_people(self, theta_W, theta_b, items):
        """Expected ratings [P, len(items)] from the item-based part for people given by their
        visible-unit parameters theta_W [P, K, F] and theta_b [P, K]."""
        ph = self._item_hidden(self.parts_)[items]
        levels = self.parts_["item"].levels_
        logits = np.einsum("pkf,if->pik", theta_W, ph) + theta_b[:, None, :]
        return _softmax(logits) @ levels

    # -- people: known users and new histories ----------------------------------------------------
    def _people(self, users, histories):
        """(kind, rows): ("users", int64 indices) or ("histories", csr P x n_items of ratings)."""
        if (users is None) == (histories is None):
            raise ValueError("give either users (raw ids of training users) or histories (new people's ratings)")
        if users is not None:
            return "users", np.atleast_1d(self.user_index(np.atleast_1d(users)))
        return "histories", self.history_matrix(histories)

    def history_matrix(self, histories):
        """New people's ratings as a csr float32 [n_people, n_items] over the model's items.

        histories: a dict {raw item id: rating} (one person), a list of such dicts, or a scipy
        sparse matrix over the model's items.  Ratings must be on the model's levels; an unknown
        item is a KeyError that names it."""
        if sp.issparse(histories):
            csr = sparse_ratings(histories, "histories")
            if csr.shape[1] != self.n_items_:
                raise ValueError(f"histories has {csr.shape[1]} columns, the model has {self.n_items_} items")
        else:
            people = [histories] if isinstance(histories, dict) else list(histories)
            rows, cols, vals = [], [], []
            for p, h in enumerate(people):
                if not isinstance(h, dict):
                    raise TypeError(f"history {p} is a {type(h).__name__}; expected a dict {{item id: rating}}")
                if not h:
                    continue
                idx = np.atleast_1d(self.item_index(np.asarray(list(h.keys()))))
                if len(np.unique(idx)) != len(idx):
                    raise ValueError(f"history {p} names an item twice")
                rows.append(np.full(len(idx), p))
                cols.append(idx)
                vals.append(self._levels_of(list(h.values()), p))
            cat = (lambda a, t: np.concatenate(a).astype(t) if a else np.zeros(0, t))
            csr = sp.csr_matrix((cat(vals, np.float32), (cat(rows, np.int64), cat(cols, np.int64))),
                                shape=(len(people), self.n_items_))
        bad = ~np.isin(csr.data, self.levels_.astype(np.float32))
        if bad.any():
            raise ValueError(f"rating {csr.data[np.argmax(bad)]:g} is not one of the model's levels "
                             f"{self.levels_.tolist()}")
        csr.sort_indices()
        return csr

    def _levels_of(self, ratings, p):
        """The model's levels (float32) of history p's ratings, each within 1e-6 of one."""
        v = np.empty(len(ratings))
        for k, r in enumerate(ratings):
            try:
                v[k] = float(r)
            except (TypeError, ValueError):
                raise ValueError(f"history {p}: rating {r!r} is not a number") from None
        near = np.abs(v[:, None] - self.levels_[None, :]) <= 1e-6
        missing = ~near.any(axis=1)
        if missing.any():
            raise ValueError(f"history {p}: rating {ratings[int(np.argmax(missing))]!r} is not one of the model's "
                             f"levels {self.levels_.tolist()}")
        return self.levels_[near.argmax(axis=1)].astype(np.float32)

    def _item_theta(self, kind, rows):
        """Visible-unit parameters (W [P, K, F], b [P, K]) of people in the item-based part: the
        trained ones of training users, fitted by fold-in for new histories."""
        m = self.parts_["item"]
        if kind == "users":
            return m.W_[rows], m.bv_[rows]
        prior = self._cached("prior", m, visible_unit_prior)
        return fold_in_visible_units(m, self._item_hidden(self.parts_), rows, prior=prior)

    def _rating_block(self, kind, rows, items, only=None):
        """Blended (or one part's) expected ratings float64[P, len(items)] for a block of people."""
        out = np.zeros((len(rows) if kind == "users" else rows.shape[0], len(items)))
        for part in self.rating_parts_:
            if only is not None and part != only:
                continue
            w = self.weights_[part] if only is None else 1.0
            if part == "user":
                m = self.parts_["user"]
                if 4 * len(items) < self.n_items_:  # a few items: their expectations alone
                    ph = m.transform(m.train_[rows] if kind == "users" else rows).astype(np.float64)
                    logits = np.einsum("pf,ikf->pik", ph, m.W_[items]) + m.bv_[items]
                    out += w * (_softmax(logits) @ m.levels_)
                    continue
                if kind == "users":
                    scores = m.score_users(rows)
                else:
                    scores = m.score_users(np.arange(rows.shape[0]), X=rows)
                out += w * scores[:, items]
            else:
                tW, tb = self._item_theta(kind, rows)
                out += w * self._item_part_people(tW, tb, items)
        return np.clip(out, self.levels_.min(), self.levels_.max())

    def _blocks(self, kind, rows, width):
        n = len(rows) if kind == "users" else rows.shape[0]
        step = max(1, BLOCK_ELEMENTS // max(1, width * 10))
        for s in range(0, n, step):
            yield s, rows[s:s + step]

    # -- public outputs ---------------------------------------------------------------------------
    def _check_rating_part(self, part):
        """A fitted recommender with rating parts, and `part` None (the blend) or one of them."""
        self._check_fitted()
        if not self.rating_parts_:
            raise ValueError("this recommender has no rating part (parts has neither 'item' nor 'user')")
        if part is not None and part not in self.rating_parts_:
            raise ValueError(f"part={part!r} is not allowed: part must be None (the blend) or one of "
                             f"{self.rating_parts_}")

    def _pairs_proba(self, users, items, part):
        """Blended (or one part's) level probabilities float64[n, n_levels] of raw-id pairs."""
        self._check_rating_part(part)
        users, items = np.atleast_1d(users), np.atleast_1d(items)
        if users.shape != items.shape:
            raise ValueError(f"users and items must have the same length, got {users.shape} and {items.shape}")
        u, i = np.atleast_1d(self.user_index(users)), np.atleast_1d(self.item_index(items))
        weights = self.weights_ if part is None else {part: 1.0}
        return sum(w * self._part_proba(self.parts_, p, u, i) for p, w in weights.items() if w > 0)

    def predict(self, users, items, *, part=None):
        """Expected rating of each (user, item) pair of training users: the blend of the rating
        parts, or one part's (part="item" or "user").  users, items: raw ids of the same length.
        Returns float64[n_pairs], clipped to the rating scale."""
        proba = self._pairs_proba(users, items, part)
        return np.clip(proba @ self.levels_, self.levels_.min(), self.levels_.max())

    def predict_like(self, users, items, *, threshold=3.0, part=None):
        """P(rating >= threshold) of each (user, item) pair of training users, from the blended
        (or one part's) rating distributions.  Returns float64[n_pairs] in [0, 1]."""
        proba = self._pairs_proba(users, items, part)
        return np.clip(proba[:, self.levels_ >= threshold].sum(axis=1), 0.0, 1.0)

    def predict_ratings(self, users=None, *, histories=None, items=None, part=None):
        """Expected ratings float64[n_people, n_items or len(items)] for training users (raw ids)
        or new people (histories, see history_matrix: fold-in, no retraining); the blend, or one
        rating part's (part="item" or "user")."""
        self._check_rating_part(part)
        kind, rows = self._people(users, histories)
        cols = np.arange(self.n_items_) if items is None else np.atleast_1d(self.item_index(np.atleast_1d(items)))
        return self._ratings(kind, rows, cols, part)

    def _ratings(self, kind, rows, cols, part=None):
        """predict_ratings of people already checked, block by block."""
        out = np.empty((len(rows) if kind == "users" else rows.shape[0], len(cols)))
        for s, block in self._blocks(kind, rows, self.n_items_):
            out[s:s + (len(block) if kind == "users" else block.shape[0])] = self._rating_block(kind, block, cols, part)
        return out

    def score_items(self, users=None, *, histories=None):
        """Ranking scores float32[n_people, n_items], higher is better: the ranker's p(the person
        rates the item), or the blended expected rating without a ranker."""
        self._check_fitted()
        return self._scores(*self._people(users, histories))

    def _scores(self, kind, rows):
        """score_items of people already checked: user indices, or a checked history matrix."""
        if "ranker" not in self.parts_:
            return self._ratings(kind, rows, np.arange(self.n_items_)).astype(np.float32)
        m = self.parts_["ranker"]
        if kind == "users":
            return m.score_users(rows)
        ones = rows.copy()
        ones.data[:] = 1.0
        return m.score_users(np.arange(rows.shape[0]), X=ones)

    @property
    def score_name_(self):
        """What score_items / recommend scores mean, in words."""
        if "ranker" in getattr(self, "parts_", PARTS):
            return "p(rated): how likely the person is to rate the item, from the ranker"
        return "expected rating"

    def recommend(self, users=None, *, histories=None, n=10, exclude_seen=True, items=None):
        """Top-n items for training users (raw ids) or new people (histories), best first.

        users: one raw id or a sequence; histories: one {item id: rating} dict, a list of them, or
        a sparse matrix (fold-in, no retraining).  exclude_seen drops what each person has rated;
        items restricts the candidates to these raw item ids.  Returns (ids, scores): 1-D for one
        user id or one history dict, else 2-D [n_people, n].  When a person has fewer than n
        candidates, the rest of their row is padded with score NaN and id -1 (or "" for text ids)."""
        self._check_fitted()
        check_n(n)
        single = (users is not None and np.ndim(users) == 0) or isinstance(histories, dict)
        kind, rows = self._people(users, histories)
        allowed = np.ones(self.n_items_, dtype=bool)
        if items is not None:
            allowed[:] = False
            allowed[np.atleast_1d(self.item_index(np.atleast_1d(items)))] = True
        n_cand = int(allowed.sum())
        width = min(int(n), n_cand)
        P = len(rows) if kind == "users" else rows.shape[0]
        top = np.full((P, width), -1, dtype=np.int64)
        top_scores = np.full((P, width), np.nan)
        seen_csr = self.train_ if kind == "users" else rows
        for s, block in self._blocks(kind, rows, self.n_items_):
            # negated float32 scores, in place: the selection reads a quarter of what float64 copies cost
            neg = np.negative(np.asarray(self._scores(kind, block), dtype=np.float32))
            neg[:, ~allowed] = np.inf
            if exclude_seen:
                for r in range(neg.shape[0]):
                    who = block[r] if kind == "users" else s + r
                    neg[r, seen_csr.indices[seen_csr.indptr[who]:seen_csr.indptr[who + 1]]] = np.inf
            if width == 0:
                continue
            best = best_items(neg, width)  # best first, ties by item index
            top[s:s + len(best)] = best
            ok = best >= 0
            top_scores[s:s + len(best)][ok] = -neg[np.nonzero(ok)[0], best[ok]].astype(np.float64)
        ids = self._ids_padded(top)
        if single:
            keep = top[0] >= 0
            return ids[0][keep], top_scores[0][keep]
        return ids, top_scores

    def _ids_padded(self, top):
        ids = self.item_ids_
        fill = -1 if ids.dtype.kind in "iu" else ""
        out = np.full(top.shape, fill, dtype=ids.dtype)
        ok = top >= 0
        out[ok] = ids[top[ok]]
        return out

    def similar_items(self, item, n=10):
        """The n items most similar to `item` (raw id), most similar first: cosine of the items'
        weight vectors in the ranker (which items are rated by the same people), or in the user
        part without a ranker.  Returns (item ids, cosines)."""
        self._check_fitted()
        check_n(n)
        return self.parts_["ranker" if "ranker" in self.parts_ else "user"].similar_items(item, n=n)

    def item_similarity(self, items, to):
        """Cosine similarity float64[len(items), len(to)] between items (raw ids), as in similar_items."""
        self._check_fitted()
        def unit_rows(m):
            W = np.asarray(m.W_, dtype=np.float64).reshape(self.n_items_, -1)
            return W / np.maximum(np.linalg.norm(W, axis=1, keepdims=True), 1e-30)

        W = self._cached("unit_weights", self.parts_["ranker" if "ranker" in self.parts_ else "user"], unit_rows)
        a = np.atleast_1d(self.item_index(np.atleast_1d(items)))
        b = np.atleast_1d(self.item_index(np.atleast_1d(to)))
        return W[a] @ W[b].T

    def describe(self) -> dict:
        """What was trained: the parts with their parameters and epochs, the blend weights and the
        validation RMSEs (JSON-ready)."""
        self._check_fitted()
        parts = {p: {"params": m.params_.to_dict(), "epochs": m.epochs_done_} for p, m in self.parts_.items()}
        if "ranker" in parts:
            parts["ranker"]["models"] = len(self.parts_["ranker"])
        return {"model": "RBMRecommender", "parts": parts,
                "weights": dict(self.weights_), "validation": self.validation_, "refit": bool(self.refit),
                "valid_fraction": self.valid_fraction, "valid_max_ratings": self.valid_max_ratings}

    # -- persistence ---------------------------------------------------------------------------------
    def save(self, path) -> str:
        """Write the recommender to one .npz file (no pickle; rbm_cuda.serialization).  Returns the
        path written (".npz" is appended when missing)."""
        from .serialization import (FORMAT_VERSION, RECOMMENDER_FORMAT, data_arrays, rbm_state, write_npz)

        self._check_fitted()
        parts, arrays = {}, {}
        for name, m in self.parts_.items():
            for k, member in enumerate(m.members_ if name == "ranker" else [m]):
                key = f"{name}.{k}" if k else name  # the first model keeps the names of a one-model file
                parts[key], a = rbm_state(member, velocities=False, prefix=f"{key}.")
                arrays.update(a)
        arrays.update(data_arrays(self.train_, self.user_ids_, self.item_ids_, self.items_))
        params = self.get_params()
        params["parts"] = list(self.parts_)
        if "ranker" in self.parts_:  # what was fitted, whatever the attribute says now
            params["n_rankers"] = len(self.parts_["ranker"])
        header = {"format": RECOMMENDER_FORMAT, "format_version": FORMAT_VERSION, "params": params,
                  "levels": self.levels_.tolist(), "dataset": self.dataset_name_, "n_users": int(self.n_users_),
                  "n_items": int(self.n_items_), "weights": self.weights_, "validation": self.validation_,
                  "parts": parts}
        return write_npz(path, header, arrays)

    @classmethod
    def load(cls, path, device=None):
        """Read a recommender written by save(); device overrides where it computes."""
        from .serialization import (READ_ERRORS, RECOMMENDER_FORMAT, ModelFileError, build_rbm, read_data,
                                    read_header)

        where = os.fspath(path)
        header, npz = read_header(path, formats=(RECOMMENDER_FORMAT,))
        with npz:
            try:
                train, user_ids, item_ids, items, _, _ = read_data(npz, header, where)
                levels = np.asarray(header["levels"], dtype=np.float64)
                data = RatingData(train, user_ids, item_ids, levels, items=items, name=str(header.get("dataset", "")))
                params = dict(header["params"])
                if device is not None:
                    params["device"] = device
                params.setdefault("n_rankers", 1)  # files written before there were several
                params.setdefault("valid_max_ratings", None)  # and before the validation stage had a budget
                model = cls(**{k: params[k] for k in cls._PARAM_NAMES if k in params})
                model.parts = tuple(model.parts)
                names, _ = model._check_params()
                fitted = {}
                for name in names:
                    view = model._view(name, data).ratings
                    members = []
                    for k in range(model.n_rankers if name == "ranker" else 1):
                        key = f"{name}.{k}" if k else name
                        members.append(build_rbm(RBM, header["parts"][key], npz, where, view,
                                                 *_part_ids(name, user_ids, item_ids), None,
                                                 header.get("dataset", ""), device=model.device, prefix=f"{key}.",
                                                 velocities=False))
                    fitted[name] = RBMEnsemble(members) if name == "ranker" else members[0]
                weights = header["weights"]
                rating = [p for p in names if p in RATING_PARTS]
                if not isinstance(weights, dict) or set(weights) != set(rating) \
                        or not all(isinstance(weights[p], (int, float)) and math.isfinite(weights[p])
                                   and weights[p] >= 0 for p in rating) \
                        or (rating and abs(sum(weights.values()) - 1) > 1e-6):
                    raise ModelFileError(f"{where}: blend weights {weights!r} must be one weight >= 0 per rating "
                                         f"part {rating}, summing to 1")
            except ModelFileError:
                raise
            except READ_ERRORS as err:
                raise ModelFileError(f"{where} is incomplete or corrupt: {err}") from None
        model.parts_ = fitted
        model.weights_ = {p: float(weights[p]) for p in rating}
        model.validation_ = header.get("validation", {}) or {}
        model._remember(data)
        return model


def visible_unit_prior(item_rbm):
    """(mean, precision) float64[K * F + K] of the trained users' visible units of an item-based
    RBM, element by element: the Gaussian prior of fold_in_visible_units."""
    n, K, F = item_rbm.W_.shape
    mean = np.empty(K * F + K)
    var = np.empty(K * F + K)
    W = item_rbm.W_.reshape(n, K * F)
    for s in range(0, K * F, 4096):  # in column blocks: a float64 copy of all of W is not needed
        e = min(s + 4096, K * F)
        block = W[:, s:e].astype(np.float64)
        mean[s:e], var[s:e] = block.mean(axis=0), block.var(axis=0)
    b = item_rbm.bv_.astype(np.float64)
    mean[K * F:], var[K * F:] = b.mean(axis=0), b.var(axis=0)
    return mean, 1.0 / np.maximum(var, 1e-4)


def fold_in_visible_units(item_rbm, item_hidden, histories, prior=None, max_iter=100, reduced=None):
    """Visible-unit parameters (W float32[P, K, F], b float32[P, K]) of new people in an item-based
    softmax RBM, without retraining.

    A new person is a new visible unit of every item row.  Their K-way softmax weights and biases
    are fitted to the items they rated: p(rating of item i = level k) = softmax_k(b + W ph_i), with
    ph_i the item's mean-field hidden probabilities, a multinomial logistic regression over F
    features.  The regulariser is a Gaussian prior fitted to the trained users' units (per-element
    mean and variance of item_rbm.W_ and bv_ over users, visible_unit_prior), so the fit is a MAP
    estimate that needs no tuning, and an empty history gives the prior mean: the average user.

    At the optimum W = W_mean - (A^T H) / precision_W for some A [m, K] (m rated items, H their
    hidden states: the gradient of the data term lies in their span), so a history shorter than F
    items is fitted over A and b (m K + K numbers, not F K + K): the same minimum, found faster, and
    for many people at once (histories of similar lengths are solved together, padded to the
    longest, which is most of the speed when a server folds in a batch of short histories).  Each person's fit is their own:
    it does not depend on who else is in the call, up to rounding.

    histories: csr [P, n_items] of ratings on the model's levels; reduced: force (True) or forbid
    (False) the fit over A (default: when it has fewer numbers)."""
    K, F = item_rbm.W_.shape[1], item_rbm.W_.shape[2]
    mean, prec = prior if prior is not None else visible_unit_prior(item_rbm)
    W_mean, b_mean = mean[:K * F].reshape(K, F), mean[K * F:]
    W_prec, b_prec = prec[:K * F].reshape(K, F), prec[K * F:]
    levels = item_rbm.levels_.astype(np.float32)
    P = histories.shape[0]
    out_W = np.empty((P, K, F), dtype=np.float32)
    out_b = np.empty((P, K), dtype=np.float32)
    out_W[:] = W_mean
    out_b[:] = b_mean
    lengths = np.diff(histories.indptr)
    span = (lengths < F) if reduced is None else np.full(P, bool(reduced))

    def rated(p):
        lo, hi = histories.indptr[p], histories.indptr[p + 1]
        return histories.indices[lo:hi], np.searchsorted(levels, histories.data[lo:hi])

    for people in _similar_lengths(np.flatnonzero(span & (lengths > 0)), lengths, K, F):
        m = int(lengths[people].max())
        H = np.zeros((len(people), m, F))
        Y = np.zeros((len(people), m, K))
        valid = np.zeros((len(people), m), dtype=bool)
        for r, p in enumerate(people):
            items, y = rated(p)
            H[r, :len(y)] = item_hidden[items]
            Y[r, np.arange(len(y)), y] = 1.0
            valid[r, :len(y)] = True
        A, b = _newton_offsets(H, Y, valid, W_mean, b_mean, W_prec, b_prec, max_iter)
        out_W[people] = W_mean - (A.transpose(0, 2, 1) @ H) / W_prec
        out_b[people] = b
    for p in np.flatnonzero(~span & (lengths > 0)):
        items, y = rated(p)
        out_W[p], out_b[p] = _lbfgs_unit(item_hidden[items].astype(np.float64), y, mean, prec, K, F, max_iter)
    return out_W, out_b


def _similar_lengths(people, lengths, K, F, max_elements=2**23):
    """people in groups solved together, padded to the group's longest history: a group ends where
    a length would exceed both 1.5 times and 8 more than its shortest (a short history costs little
    more padded, and each group costs a fixed number of NumPy calls per Newton step); each group's
    largest array ([K, m, max(m, F)] per person) within max_elements."""
    people = people[np.argsort(lengths[people], kind="stable")]
    start = 0
    for end in range(1, len(people) + 1):
        shortest = int(lengths[people[start]])
        if end < len(people) and lengths[people[end]] <= max(1.5 * shortest, shortest + 8):
            continue
        group = people[start:end]
        m = int(lengths[group[-1]])
        step = max(1, max_elements // (K * m * max(m, F)))
        for s in range(0, len(group), step):
            yield group[s:s + step]
        start = end


def _lbfgs_unit(H, y, mean, prec, K, F, max_iter):
    """The MAP fit of fold_in_visible_units over all F K + K numbers, for a history of F or more items."""
    from scipy.optimize import minimize

    onehot = np.zeros((len(y), K))
    onehot[np.arange(len(y)), y] = 1.0

    def loss(t):
        z = H @ t[:K * F].reshape(K, F).T + t[K * F:]
        z = z - z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        G = np.exp(logp) - onehot
        d = t - mean
        value = -(onehot * logp).sum() + 0.5 * (prec * d * d).sum()
        return value, np.concatenate([(G.T @ H).ravel(), G.sum(axis=0)]) + prec * d

    t = minimize(loss, mean.copy(), jac=True, method="L-BFGS-B", options={"maxiter": max_iter}).x
    return t[:K * F].reshape(K, F), t[K * F:]


def _newton_offsets(H, Y, valid, W_mean, b_mean, W_prec, b_prec, max_iter, tol=1e-8):
    """The MAP fits of fold_in_visible_units over the rated items' span, by Newton's method, for P
    people at once.  H [P, m, F] the rated items' hidden states, Y [P, m, K] their one-hot levels,
    valid [P, m]: each person's items, padded to a common m with rows that valid marks False.

    With u_k = M_k a_k (M_k = H diag(1 / W_prec[k]) H^T) the logit offsets of the m rated items, the
    objective is  sum_i CE(c_i + b - u_i, y_i) + 1/2 sum_k u_k^T M_k^-1 u_k + 1/2 |b - b_mean|^2_b_prec,
    smooth and strictly convex in (u, b): a few damped Newton steps on m K + K numbers, each person
    stepping and stopping on their own.  A padded item has no data term and an identity block in
    M_k^-1, apart from the rest, so its offsets stay 0 and the others' fit is the unpadded one.
    Returns (A [P, m, K], b [P, K])."""
    P, m, K = Y.shape
    n = m * K
    live = valid.astype(np.float64)[..., None]
    C = H @ W_mean.T  # the prior mean's logits without the bias
    M = (H[:, None] / W_prec[None, :, None, :]) @ H[:, None].transpose(0, 1, 3, 2)  # [P, K, m, m]
    diag = np.arange(m)
    trace = M[..., diag, diag].sum(axis=2) / valid.sum(axis=1)[:, None]
    M[..., diag, diag] += np.where(valid[:, None, :], (1e-9 * trace + 1e-12)[..., None], 1.0)
    Minv = np.linalg.inv(M)

    def offsets(Mi, u):  # M_k^-1 u_k for every k: [p, m, K]
        return (Mi @ u.transpose(0, 2, 1)[..., None])[..., 0].transpose(0, 2, 1)

    def parts(who, u, b):
        z = C[who] + b[:, None, :] - u
        z = z - z.max(axis=2, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=2, keepdims=True))
        Pr = np.exp(logp) * live[who]
        Mu = offsets(Minv[who], u)
        d = b - b_mean
        value = -(Y[who] * logp).sum(axis=(1, 2)) + 0.5 * (u * Mu).sum(axis=(1, 2)) + 0.5 * (b_prec * d * d).sum(axis=1)
        G = Pr - Y[who]
        grad = np.concatenate([(Mu - G).reshape(len(who), n), G.sum(axis=1) + b_prec * d], axis=1)
        return value, grad, Pr

    u, b = np.zeros((P, m, K)), np.tile(b_mean, (P, 1))
    value, grad, Pr = parts(np.arange(P), u, b)
    active = np.arange(P)
    for _ in range(max_iter):
        step = _newton_step(Minv[active], Pr[active], grad[active], b_prec)
        decrement = -(grad[active] * step).sum(axis=1)
        going = decrement / 2 > tol * np.maximum(1.0, np.abs(value[active]))
        active, step, decrement = active[going], step[going], decrement[going]
        if not len(active):
            break
        t = np.ones(len(active))
        pending = np.arange(len(active))
        while len(pending):  # backtracking: each objective must fall
            who = active[pending]
            nu = u[who] + t[pending, None, None] * step[pending, :n].reshape(-1, m, K)
            nb = b[who] + t[pending, None] * step[pending, n:]
            nvalue, ngrad, nP = parts(who, nu, nb)
            ok = (nvalue <= value[who] - 0.25 * t[pending] * decrement[pending]) | (t[pending] < 1e-6)
            took = who[ok]
            u[took], b[took], value[took], grad[took], Pr[took] = nu[ok], nb[ok], nvalue[ok], ngrad[ok], nP[ok]
            t[pending[~ok]] *= 0.5
            pending = pending[~ok]
    return offsets(Minv, u), b


def _newton_step(Minv, Pr, grad, b_prec):
    """The Newton steps [p, m K + K] of _newton_offsets: the solutions of Hess step = -grad, with
    Hess = [[A, -E], [-E^T, S_b]] in (u, b), A = Q + D, Q = M_k^-1 for each level k (m x m blocks),
    D = the items' softmax Hessians S_i = diag(p_i) - p_i p_i^T (K x K blocks), E = the S_i stacked
    and S_b = sum_i S_i + diag(b_prec).

    A dense solve costs (m K + K)^3.  Here A = G - V V^T, with G = Q + diag(p) block diagonal per
    level and V one column p_i per item, so A^-1 is G^-1 (K inverses of m x m) corrected by an m x m
    system (Woodbury), and b is eliminated by its K x K Schur complement: about K m^3 in all.
    Minv [p, K, m, m], Pr [p, m, K] (the items' level probabilities), grad [p, m K + K]."""
    p, m, K = Pr.shape
    diag = np.arange(m)
    G = Minv.copy()
    G[..., diag, diag] += Pr.transpose(0, 2, 1)
    Ginv = np.linalg.inv(G)  # [p, K, m, m]
    S = Pr[..., None] * np.eye(K) - Pr[..., :, None] * Pr[..., None, :]  # [p, m, K, K]
    # right-hand sides: -grad_u, and the K columns of E; the level index k stays in place
    R = np.concatenate([-grad[:, :m * K].reshape(p, m, K, 1), S], axis=3)  # [p, m, K, 1 + K]
    Y = (Ginv @ R.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)  # G^-1 R
    GV = Ginv * Pr.transpose(0, 2, 1)[:, :, None, :]  # G^-1 V: [p, K, m (row i), m (item j)]
    cap = np.eye(m) - (Pr.transpose(0, 2, 1)[..., None] * GV).sum(axis=1)  # I - V^T G^-1 V
    w = np.linalg.solve(cap, (Pr[..., None] * Y).sum(axis=2))  # [p, m, 1 + K]
    AinvR = Y + (GV @ w[:, None]).transpose(0, 2, 1, 3)
    Ainv_r, Ainv_E = AinvR[..., 0].reshape(p, m * K, 1), AinvR[..., 1:].reshape(p, m * K, K)
    Et = S.reshape(p, m * K, K).transpose(0, 2, 1)
    schur = S.sum(axis=1) + np.diag(b_prec) - Et @ Ainv_E
    db = np.linalg.solve(schur, -grad[:, m * K:, None] + Et @ Ainv_r)
    du = Ainv_r + Ainv_E @ db
    return np.concatenate([du[..., 0], db[..., 0]], axis=1)


def _part_ids(name, user_ids, item_ids):
    return (item_ids, user_ids) if name == "item" else (user_ids, item_ids)


def _softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def load_model(path, device=None):
    """An RBM or an RBMRecommender, whichever the model file holds."""
    from .serialization import RECOMMENDER_FORMAT, file_format

    if file_format(path) == RECOMMENDER_FORMAT:
        return RBMRecommender.load(path, device=device)
    return RBM.load(path, device=device)
