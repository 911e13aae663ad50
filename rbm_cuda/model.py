"""The RBM estimator: softmax / like-dislike / bernoulli visible units over sparse rating rows.

Rows are users, columns items.  Training touches only the rated entries of each row (softmax) or
gathers the nonzero entries for the positive phase (bernoulli); no users x items matrix is built.
"""

from __future__ import annotations

import inspect
import time

import numpy as np
import scipy.sparse as sp

from .backend import get_backend
from .datasets.core import lookup_ids
from .exceptions import NotFittedError, TrainingDivergedError
from .params import PARAM_NAMES, check_n, validate_params
from .training import cd_epoch, epoch_order

# Per-epoch monitoring on the training set (train RMSE; free energy when there is no validation
# set) uses a fixed seeded sample of whole users holding at most this many ratings.
TRAIN_RMSE_SAMPLE = 200_000
# Users scored at once by score_users: bounds the dense (users x items x K) logits.
SCORE_BLOCK_ELEMENTS = 2**24


# Distinct rating values a softmax layer accepts when the levels are inferred from a matrix: more
# than this is a continuous score, not a rating scale.
MAX_SOFTMAX_LEVELS = 50


def sparse_ratings(X, what="ratings"):
    """A scipy sparse matrix as canonical float32 CSR (a copy): a (row, column) stored twice is
    refused with the pair (scipy would add the two values into one rating), and so are non-finite
    values."""
    csr = sp.csr_matrix(X, dtype=np.float32, copy=True) if X.format == "csr" else None
    if csr is None or not csr.has_canonical_format:  # (the copy's flag: X's may be stale)
        # A canonical CSR (sorted column indices, each at most once per row) holds no pair twice and
        # skips this search, whose sorting and int64 keys are most of a gigabyte at 20 M ratings.
        coo = sp.coo_matrix(X)
        if coo.nnz:
            key = coo.row.astype(np.int64) * coo.shape[1] + coo.col.astype(np.int64)
            order = np.argsort(key, kind="stable")
            rep = np.flatnonzero(key[order][1:] == key[order][:-1])
            if len(rep):
                k = order[rep[0]]
                raise ValueError(f"{what}: entry (row {coo.row[k]}, column {coo.col[k]}) is stored "
                                 f"{np.sum(key == key[k])} times ({len(rep)} repeated entries in all); give each "
                                 "(user, item) one rating")
        csr = sp.csr_matrix(coo, dtype=np.float32)
        csr.sort_indices()
    if not np.all(np.isfinite(csr.data)):
        raise ValueError(f"{what} contain NaN or infinite values")
    return csr


def _as_rating_csr(X, levels=None):
    """(csr float32 ratings, levels, data) from a RatingData or a scipy sparse matrix."""
    data = None
    if hasattr(X, "ratings") and hasattr(X, "levels"):
        data = X
        csr, levels = X.ratings, np.asarray(X.levels, dtype=np.float64)
    elif sp.issparse(X):
        csr = X
    else:
        raise TypeError(
            f"ratings must be a rbm_cuda.datasets.RatingData or a scipy.sparse matrix (users x items), "
            f"got {type(X).__name__}"
        )
    csr = sparse_ratings(csr)
    if levels is None:
        levels = np.unique(csr.data).astype(np.float64)
    return csr, np.asarray(levels, dtype=np.float64), data


def _check_memory(n_items, n_states, p):
    """Refuse, with the figure, a model whose weights alone would not fit in this machine's memory."""
    import os

    gpu = p.device != "cpu"  # "auto" is counted as the GPU: the larger of the two
    # W and its velocity (and, on a GPU, W's gradient for bernoulli units)
    arrays = 3 if p.visible == "bernoulli" and gpu else 2
    need = n_items * n_states * p.n_hidden * 4 * arrays
    if p.visible == "bernoulli":
        # a batch's dense logits, and its samples' items and states as CSR (B * N each at most); a GPU
        # also keeps the dense probabilities and draws
        need += (5 if gpu else 3) * p.batch_size * n_items * 4
    try:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if need > have:
        raise MemoryError(
            f"n_hidden={p.n_hidden} with {n_items} items x {n_states} states needs about {need / 1e9:.1f} GB for "
            f"the weights alone, more than this machine's {have / 1e9:.1f} GB; use fewer hidden units")


class RBM:
    """Restricted Boltzmann Machine recommender (Salakhutdinov, Mnih & Hinton 2007).

    Parameters (validated together in rbm_cuda.params.validate_params)
    ----------
    n_hidden : int, number of binary hidden units F.
    visible : "softmax" (one K-way softmax per rated item, K = number of rating levels),
        "like" (softmax with K = 2: rating >= like_threshold is a like), or "bernoulli" (one unit per
        item, value = rating / max level, unrated = 0).
    like_threshold : float, used by visible="like".
    cd_steps : int T, or a schedule over epochs ({first_epoch: T}, pairs, or "1,3@15,5@25").
    learning_rate : float, step on the gradient averaged over the users of a batch.
    momentum, initial_momentum, momentum_warmup : momentum after / during the first warm-up epochs.
    weight_decay : float, L2 penalty on W (not on biases).
    batch_size : int, users per mini-batch.  Every batch applies momentum and weight decay to all of
        W (n_items x K x n_hidden floats), so with many items small batches spend much of the epoch
        there (docs/performance.md).
    epochs : int, epochs run by fit.
    average_epochs : int, fit ends with the mean of the weights (W, biases) after each of its last
        average_epochs epochs, or all of them when there are fewer: a steadier model than the last
        epoch's alone, at no extra training cost.  1 keeps the last epoch's; partial_fit epochs are
        not averaged.
    seed : int, key of every random stream (Philox); same seed -> same model on CPU and GPU.
    device : "auto" | "cpu" | "cuda".

    Attributes after fit
    --------------------
    W_ : float32[n_items, K, n_hidden]; bv_ : float32[n_items, K]; bh_ : float32[n_hidden]
    levels_ : float64[n_levels], the rating scale; history_ : list of per-epoch dicts.
    """

    def __init__(self, n_hidden=100, *, visible="softmax", like_threshold=3.0, cd_steps=1, learning_rate=0.1,
                 momentum=0.8, initial_momentum=0.5, momentum_warmup=5, weight_decay=0.003, batch_size=100,
                 epochs=40, average_epochs=1, seed=0, device="auto"):
        kw = dict(locals())
        kw.pop("self")
        self._params = validate_params(**kw)
        for name in PARAM_NAMES:
            setattr(self, name, kw[name])
        self._dev = None

    # -- scikit-learn conventions ------------------------------------------------------------
    def get_params(self, deep=True):
        return {name: getattr(self, name) for name in PARAM_NAMES}

    def set_params(self, **kw):
        """Set parameters (checked now, read again by the next fit).  A fitted model keeps the
        parameters it was fitted with (params_) until it is fitted again."""
        merged = self.get_params()
        merged.update(kw)
        validate_params(**merged)
        for name, value in kw.items():
            setattr(self, name, value)
        return self

    @property
    def params_(self):
        """The parameters the fitted model was trained with (an RBMParams)."""
        self._check_fitted()
        return self._params

    def __repr__(self):
        changed = [f"{k}={v!r}" for k, v in self.get_params().items() if v != _DEFAULTS[k]]
        return f"RBM({', '.join(changed)})"

    # -- data encoding -------------------------------------------------------------------------
    def _encode(self, csr):
        """Visible-unit encoding of a rating CSR: (states int32[nnz], values float32[nnz] or empty)."""
        p = self._params
        ratings = csr.data
        if p.visible == "softmax":
            lv32 = self.levels_.astype(np.float32)  # the ratings are float32: compare in float32
            states = np.searchsorted(lv32, ratings).astype(np.int32)
            bad = (states >= len(lv32)) | (lv32[np.minimum(states, len(lv32) - 1)] != ratings)
            if bad.any():
                v = ratings[np.argmax(bad)]
                raise ValueError(f"rating {v} is not one of the model's levels {self.levels_.tolist()}")
            return states, np.empty(0, dtype=np.float32)
        if p.visible == "like":
            return (ratings >= p.like_threshold).astype(np.int32), np.empty(0, dtype=np.float32)
        if len(ratings) and ratings.min() < 0:
            raise ValueError(f"rating {ratings.min():g} is negative: bernoulli units take ratings >= 0 "
                             "(their value is rating / the largest level)")
        if len(ratings) and (ratings == ratings[0]).all() and ratings[0] == self.levels_.max():
            values = np.empty(0, dtype=np.float32)  # all ones (rated or not): the kernels' "no values"
        else:
            values = (ratings / self.levels_.max()).astype(np.float32)
        return np.zeros(len(ratings), dtype=np.int32), values

    def _targets(self, ratings):
        """What predict() estimates for these raw ratings: the rating, or the like label."""
        if self._params.visible == "like":
            return (ratings >= self._params.like_threshold).astype(np.float64)
        return ratings.astype(np.float64)

    def _output_levels(self):
        p = self._params
        if p.visible == "softmax":
            return self.levels_.astype(np.float32)
        if p.visible == "like":
            return np.array([0.0, 1.0], dtype=np.float32)
        return np.array([self.levels_.max()], dtype=np.float32)

    # -- initialisation ------------------------------------------------------------------------
    def _initialise(self, csr, levels, data):
        p = self._params
        self.levels_ = levels
        self.n_users_, self.n_items_ = csr.shape
        self.user_ids_ = np.asarray(data.user_ids) if data is not None else np.arange(csr.shape[0])
        self.item_ids_ = np.asarray(data.item_ids) if data is not None else np.arange(csr.shape[1])
        self.dataset_name_ = getattr(data, "name", "") or ""
        self.items_ = getattr(data, "items", None)
        n_states = {"softmax": len(levels), "like": 2, "bernoulli": 1}[p.visible]
        if p.visible == "softmax" and n_states < 2:
            raise ValueError(f"softmax visible units need at least 2 rating levels, the data has {levels.tolist()}")
        if p.visible == "softmax" and n_states > MAX_SOFTMAX_LEVELS:
            raise ValueError(
                f"the ratings hold {n_states} distinct values ({levels[0]:g} to {levels[-1]:g}): a softmax layer "
                f"would get {n_states} levels, more than {MAX_SOFTMAX_LEVELS}.  Softmax units need a rating "
                "scale of a few levels: round the ratings to one before loading them, or use visible='bernoulli'")
        _check_memory(self.n_items_, n_states, p)
        rng = np.random.Generator(np.random.Philox(key=p.seed))
        W = (0.01 * rng.standard_normal((self.n_items_, n_states, p.n_hidden))).astype(np.float32)
        states, values = self._encode(csr)
        item_of = csr.indices
        if p.visible == "bernoulli":
            # log-odds of each item's mean value over all users (unrated = 0)
            mean = np.bincount(item_of, weights=values if len(values) else None,
                               minlength=self.n_items_) / max(self.n_users_, 1)
            mean = np.clip(mean, 1e-3, 1 - 1e-3)
            bv = np.log(mean / (1 - mean))[:, None]
        else:
            # log base rate of each level per item, Laplace-smoothed so unseen levels stay finite
            counts = np.zeros((self.n_items_, n_states))
            np.add.at(counts, (item_of, states), 1.0)
            bv = np.log((counts + 1.0) / (counts.sum(1, keepdims=True) + n_states))
        self.bv_ = bv.astype(np.float32)
        self.bh_ = np.zeros(p.n_hidden, dtype=np.float32)
        self.W_ = W
        self.history_ = []
        self.epochs_done_ = 0
        self.step_ = 0
        self._velocity = [np.zeros_like(self.W_), np.zeros_like(self.bv_), np.zeros_like(self.bh_)]
        self._set_train(csr)

    def _set_train(self, csr):
        self.train_ = csr
        self._dev = None

    def _device(self):
        """Backend and device copies of parameters and training rows, uploaded once."""
        if self._dev is None:
            be = get_backend(self._params.device)
            states, values = self._encode(self.train_)
            a = be.asarray
            self._dev = {
                "be": be,
                "W": a(self.W_, np.float32), "bv": a(self.bv_, np.float32), "bh": a(self.bh_, np.float32),
                "vel": [a(v, np.float32) for v in self._velocity],
                "indptr": a(self.train_.indptr, np.int64), "indices": a(self.train_.indices, np.int32),
                "indptr_host": np.asarray(self.train_.indptr, dtype=np.int64),  # batch sizes, read on the host
                "states": a(states, np.int32), "values": a(values, np.float32),
                "levels": a(self._output_levels(), np.float32),
                # the step each item's weights are current at (softmax units: training.cd_epoch)
                "last": be.xp.zeros(self.W_.shape[0], dtype=np.int64),
            }
        return self._dev

    def _sync_host(self):
        """Copy device parameters back into W_, bv_, bh_ (no-op cost on the CPU backend)."""
        d = self._dev
        be = d["be"]
        self.W_, self.bv_, self.bh_ = (be.to_numpy(d[k]) for k in ("W", "bv", "bh"))
        self._velocity = [be.to_numpy(v) for v in d["vel"]]

    @property
    def backend_(self) -> str:
        return self._device()["be"].name

    # -- training --------------------------------------------------------------------------------
    def fit(self, X, *, valid=None, callback=None, monitor=True):
        """Train from scratch for `epochs` epochs.

        X : RatingData or scipy sparse (n_users, n_items) of raw ratings; valid : the same kind, same
        shape, held-out ratings of the same users (monitoring only, never trained on).
        callback(model, record) is called after each epoch with that epoch's history record.
        monitor : compute each epoch's train / validation RMSE and free energies (their cost is the
        record's monitor_seconds); False trains only, and the record holds None for them.
        """
        self._start(X)
        mon = self._monitor(valid) if monitor else None
        p = self._params
        n_avg = min(p.average_epochs, p.epochs)
        total = None
        for e in range(p.epochs):
            self._epoch(mon, callback)
            if n_avg > 1 and e >= p.epochs - n_avg:
                d = self._dev
                if total is None:
                    total = [d[k].copy() for k in ("W", "bv", "bh")]
                else:
                    for t, k in zip(total, ("W", "bv", "bh")):
                        t += d[k]
        if total is not None:
            d = self._dev
            for k, t in zip(("W", "bv", "bh"), total):
                d[k][...] = t / np.float32(n_avg)
            self._sync_host()
        self._drop_scratch()
        return self

    def _share_rows(self, other):
        """Read the encoded training rows of `other`, a model fitted on the same rows, instead of a
        copy of its own (models of one ensemble: the rows are held once)."""
        a, b = self.train_, other.train_
        if a is not b and not (a.shape == b.shape and a.nnz == b.nnz and np.array_equal(a.indptr, b.indptr)
                               and np.array_equal(a.indices, b.indices) and np.array_equal(a.data, b.data)):
            raise ValueError("_share_rows: the two models were trained on different rows")
        d, o = self._device(), other._device()
        for key in ("indptr", "indices", "indptr_host", "states", "values"):
            d[key] = o[key]
        self.train_ = other.train_

    def _drop_scratch(self):
        """Free the arrays only training reads (gradients, negative states: up to W's size and one int32
        per rating); the next epoch, if partial_fit asks for one, makes them again."""
        if self._dev is not None:
            self._dev.pop("grad", None)
            self._dev.pop("neg_states", None)

    def _forget_velocity(self):
        """Free the momentum of a model that will not be trained further (as W's size again): it
        becomes zero, as in a model loaded from a file saved without it."""
        self._velocity = [np.zeros(a.shape, np.float32) for a in (self.W_, self.bv_, self.bh_)]
        if self._dev is not None:
            self._dev["vel"] = [self._dev["be"].asarray(v, np.float32) for v in self._velocity]

    def partial_fit(self, X=None, *, valid=None, callback=None, monitor=True):
        """One more epoch.  The first call initialises from X; later calls train on the same item
        space (X, when given, replaces the training rows: the users may change, the items may not)."""
        if not hasattr(self, "W_"):
            if X is None:
                raise ValueError("partial_fit needs ratings X on its first call")
            self._start(X)
        else:
            self._adopt_params()
            if X is not None:
                self.set_rows(X)  # checks all of X before the model changes
        self._epoch(self._monitor(valid) if monitor else None, callback)
        return self

    def set_rows(self, X):
        """Replace the rows the fitted model reads (its training rows: what transform, predict and
        recommend condition on) without training, e.g. to add ratings that arrived after fit.  X
        covers the same items; the users may change."""
        self._check_fitted()
        csr, _, data = _as_rating_csr(X, self.levels_)
        if csr.shape[1] != self.n_items_:
            raise ValueError(f"X has {csr.shape[1]} items, the model was built for {self.n_items_}")
        self._encode(csr)
        if self._dev is not None:
            self._sync_host()
        self._set_train(csr)
        self.n_users_ = csr.shape[0]
        self.user_ids_ = np.asarray(data.user_ids) if data is not None else np.arange(csr.shape[0])
        return self

    def _adopt_params(self):
        """Read the attributes for more training of a fitted model: the step sizes, schedule and
        epochs may change, the shape of the model may not."""
        new = validate_params(**self.get_params())
        for name in ("n_hidden", "visible", "like_threshold", "seed", "device"):
            if getattr(new, name) != getattr(self._params, name):
                raise ValueError(f"{name} was changed to {getattr(new, name)!r} after fit (the model has "
                                 f"{getattr(self._params, name)!r}); call fit() to train a new model")
        self._params = new

    def _start(self, X):
        # The attributes are the parameters (scikit-learn's convention): read and check them here.
        self._params = validate_params(**self.get_params())
        csr, levels, data = _as_rating_csr(X)
        if csr.nnz == 0:
            raise ValueError("cannot fit on an empty rating matrix")
        self._initialise(csr, levels, data)

    def _epoch(self, monitor, callback):
        p = self._params
        d = self._device()
        be = d["be"]
        epoch = self.epochs_done_
        t0 = time.perf_counter()
        if "grad" not in d:  # training scratch, made by the first epoch and freed by fit (_drop_scratch)
            bernoulli = p.visible == "bernoulli"
            # Gradient arrays: bh's always; W's and bv's for bernoulli units on a backend that sums
            # them in memory (empty on the others; the softmax path sums them inside update_softmax).
            d["grad"] = [None, None, be.xp.zeros(self.bh_.shape, dtype=np.float32)]
            if bernoulli:
                d["grad"][:2] = [be.xp.zeros((len(x) if be.gradient_scratch else 0,) + x.shape[1:], dtype=np.float32)
                                 for x in (self.W_, self.bv_)]
            else:
                d["neg_states"] = be.xp.zeros(self.train_.nnz, dtype=np.int32)
        self.step_ = cd_epoch(be, d, p, epoch_order(p.seed, epoch, self.train_.indptr), epoch, self.step_)
        self._sync_host()
        if not (np.isfinite(self.W_).all() and np.isfinite(self.bv_).all() and np.isfinite(self.bh_).all()):
            raise TrainingDivergedError(
                f"training diverged in epoch {epoch + 1}: the weights became NaN or infinite "
                f"(learning_rate={p.learning_rate}, momentum={p.momentum_at(epoch)}, weight_decay={p.weight_decay}); "
                "lower the learning rate.  Checkpoints written after earlier epochs are untouched")
        self.epochs_done_ += 1
        record = {"epoch": self.epochs_done_, "cd_steps": p.cd_at(epoch), "seconds": time.perf_counter() - t0}
        t1 = time.perf_counter()
        record.update(self._evaluate_monitor(monitor))
        if monitor is not None:
            record["monitor_seconds"] = time.perf_counter() - t1
        self.history_.append(record)
        if callback is not None:
            callback(self, record)

    # -- monitoring --------------------------------------------------------------------------------
    def _monitor(self, valid):
        """Fixed (seeded) pieces for per-epoch monitoring: a train-RMSE sample, the validation pairs,
        and equal-sized train/validation vectors of the validation users for the free-energy gap."""
        rng = np.random.Generator(np.random.Philox(key=self._params.seed, counter=[0, 0, 1, 0]))
        csr = self.train_
        # Whole users, so that monitoring needs the hidden units of these users only: all of them
        # while they hold at most TRAIN_RMSE_SAMPLE ratings, else a fixed random subset that does.
        users = rng.permutation(csr.shape[0])
        keep = np.cumsum(np.diff(csr.indptr)[users]) <= TRAIN_RMSE_SAMPLE
        keep[0] = True
        sample = csr[np.sort(users[keep])]
        coo = sample.tocoo()
        rows = np.sort(users[keep])[coo.row]
        mon = {"train": (rows, coo.col, coo.data), "train_rows": sample}
        if valid is None:
            return mon
        vcsr, _, _ = _as_rating_csr(valid, self.levels_)
        if vcsr.shape != csr.shape:
            raise ValueError(f"valid has shape {vcsr.shape}, the training ratings {csr.shape}: "
                             "validation ratings must use the same users and items")
        if vcsr.multiply(csr).nnz:
            raise ValueError("valid shares (user, item) pairs with the training ratings; held-out ratings must be disjoint")
        vcoo = vcsr.tocoo()
        mon["valid"] = (vcoo.row, vcoo.col, vcoo.data)
        # Free-energy gap: for each user with validation ratings, as many of their training ratings,
        # drawn at random, so both sides are vectors of the same size from the same person.
        n_valid = np.diff(vcsr.indptr)
        n_train = np.diff(csr.indptr)
        users = np.flatnonzero((n_valid > 0) & (n_train > 0))
        take = np.minimum(n_valid[users], n_train[users])
        parts = [csr.indptr[u] + np.sort(rng.choice(n_train[u], m, replace=False)) for u, m in zip(users, take)]
        sel = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        fe_train = sp.csr_matrix((csr.data[sel], csr.indices[sel], np.r_[0, np.cumsum(take)]),
                                 shape=(len(users), csr.shape[1]))
        vparts = [np.arange(vcsr.indptr[u], vcsr.indptr[u] + m) for u, m in zip(users, take)]
        vsel = np.concatenate(vparts) if vparts else np.zeros(0, dtype=np.int64)
        fe_valid = sp.csr_matrix((vcsr.data[vsel], vcsr.indices[vsel], np.r_[0, np.cumsum(take)]),
                                 shape=(len(users), csr.shape[1]))
        mon["free_energy"] = (fe_train, fe_valid)
        return mon

    def _evaluate_monitor(self, mon):
        if mon is None:
            return {k: None for k in ("train_rmse", "valid_rmse", "free_energy_train", "free_energy_valid")}
        out = {}
        for name in ("train", "valid"):
            if name in mon:
                u, i, r = mon[name]
                pred = self._predict_idx(u, i)
                out[f"{name}_rmse"] = float(np.sqrt(np.mean((pred - self._targets(r)) ** 2)))
            else:
                out[f"{name}_rmse"] = None
        if "free_energy" in mon:
            fe_t, fe_v = mon["free_energy"]
            out["free_energy_train"] = float(np.mean(self.free_energy(fe_t), dtype=np.float64))
            out["free_energy_valid"] = float(np.mean(self.free_energy(fe_v), dtype=np.float64))
        else:
            out["free_energy_train"] = float(np.mean(self.free_energy(mon["train_rows"]), dtype=np.float64))
            out["free_energy_valid"] = None
        return out

    # -- inference --------------------------------------------------------------------------------
    def _check_fitted(self):
        if not hasattr(self, "W_"):
            raise NotFittedError("this RBM is not fitted yet: call fit() or RBM.load() first")

    def _rows_input(self, X):
        """(backend, indptr, indices, states, values) for rows of X, or the training rows."""
        d = self._device()
        be = d["be"]
        if X is None:
            return be, d["indptr"], d["indices"], d["states"], d["values"], self.train_.shape[0]
        csr, _, _ = _as_rating_csr(X, self.levels_)
        if csr.shape[1] != self.n_items_:
            raise ValueError(f"X has {csr.shape[1]} items, the model was trained on {self.n_items_}")
        states, values = self._encode(csr)
        return (be, be.asarray(csr.indptr, np.int64), be.asarray(csr.indices, np.int32),
                be.asarray(states, np.int32), be.asarray(values, np.float32), csr.shape[0])

    def _hidden(self, rows, X=None):
        """Mean-field p(h | v) for the given row indices of X (default: the training rows)."""
        be, indptr, indices, states, values, _ = self._rows_input(X)
        d = self._dev
        rows = be.asarray(rows, np.int64)
        out = be.xp.empty((rows.shape[0], self.W_.shape[2]), dtype=np.float32)
        be.sample_hidden(indptr, indices, states, values, rows, d["W"], d["bh"], 0, 0, 0, out, out, False)
        return out

    def transform(self, X=None):
        """Hidden-unit probabilities p(h = 1 | v), float32[n_rows, n_hidden], for the rows of X
        (a RatingData / sparse matrix over the model's items) or, by default, the training users."""
        self._check_fitted()
        n = self.train_.shape[0] if X is None else _as_rating_csr(X, self.levels_)[0].shape[0]
        return self._dev_to_numpy(self._hidden(np.arange(n), X))

    def _dev_to_numpy(self, a):
        return self._device()["be"].to_numpy(a)

    def free_energy(self, X=None):
        """Free energy F(v) in nats of each row of X (default: the training users), float32[n_rows]."""
        self._check_fitted()
        be, indptr, indices, states, values, n = self._rows_input(X)
        d = self._dev
        out = be.xp.empty(n, dtype=np.float32)
        be.free_energy(indptr, indices, states, values, be.asarray(np.arange(n), np.int64), d["W"], d["bv"],
                       d["bh"], out)
        return be.to_numpy(out)

    def _predict_idx(self, users, items):
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        if len(users) == 0:
            return np.zeros(0)
        uniq, pair_rows = np.unique(users, return_inverse=True)
        d = self._device()
        be = d["be"]
        ph = self._hidden(uniq)
        out = be.xp.empty(len(items), dtype=np.float32)
        be.predict_pairs(ph, be.asarray(pair_rows, np.int64), be.asarray(items, np.int32), d["W"], d["bv"],
                         d["levels"], out)
        pred = be.to_numpy(out).astype(np.float64)
        lo, hi = (0.0, 1.0) if self._params.visible == "like" else (self.levels_.min(), self.levels_.max())
        return np.clip(pred, lo, hi)

    def user_index(self, user_ids):
        """Row index of raw user id(s) (an int for a scalar, else int64[n]); KeyError if unknown."""
        return lookup_ids(self.user_ids_, user_ids, "user", "the model")

    def item_index(self, item_ids):
        """Index of raw item id(s) (an int for a scalar, else int64[n]); KeyError if unknown."""
        return lookup_ids(self.item_ids_, item_ids, "item", "the model")

    def predict(self, users, items):
        """Mean-field expected rating (P(like) for visible="like") of each (user, item) pair, from the
        user's training ratings.  users, items: raw ids, same length.  Returns float64[n_pairs]
        clipped to the rating range."""
        self._check_fitted()
        users = np.atleast_1d(users)
        items = np.atleast_1d(items)
        if users.shape != items.shape:
            raise ValueError(f"users and items must have the same length, got {users.shape} and {items.shape}")
        return self._predict_idx(self.user_index(users), self.item_index(items))

    def predict_proba(self, users, items):
        """Probability of each rating level (each visible state: the levels for softmax units,
        [dislike, like] for visible="like") of each (user, item) pair, from the user's training
        ratings.  users, items: raw ids, same length.  Returns float64[n_pairs, K], rows sum to 1."""
        self._check_fitted()
        if self._params.visible == "bernoulli":
            raise ValueError("predict_proba needs softmax or like visible units; bernoulli units have one state")
        users, items = np.atleast_1d(users), np.atleast_1d(items)
        if users.shape != items.shape:
            raise ValueError(f"users and items must have the same length, got {users.shape} and {items.shape}")
        u = np.atleast_1d(self.user_index(users)).astype(np.int64)
        i = np.atleast_1d(self.item_index(items)).astype(np.int64)
        K = self.W_.shape[1]
        if len(u) == 0:
            return np.zeros((0, K))
        uniq, pair_rows = np.unique(u, return_inverse=True)
        d = self._device()
        be = d["be"]
        ph = self._hidden(uniq)
        rows, cols = be.asarray(pair_rows, np.int64), be.asarray(i, np.int32)
        out = np.empty((len(u), K))
        buf = be.xp.empty(len(u), dtype=np.float32)
        for k in range(K):
            # the expectation of the indicator of state k is its probability
            onehot = np.zeros(K, dtype=np.float32)
            onehot[k] = 1.0
            be.predict_pairs(ph, rows, cols, d["W"], d["bv"], be.asarray(onehot, np.float32), buf)
            out[:, k] = be.to_numpy(buf)
        return out

    def score_users(self, users, *, X=None):
        """Scores of every item for the given user indices, float32[len(users), n_items]: the
        expected rating (P(like) for visible="like"; levels_.max() * p(v=1) for bernoulli).
        X: score rows of X (a sparse matrix over the model's items, e.g. a new user's ratings: fold-in)
        instead of the training users."""
        self._check_fitted()
        d = self._device()
        be, xp = d["be"], d["be"].xp
        users = np.asarray(users, dtype=np.int64)
        n_items, K, F = self.W_.shape
        Wflat = d["W"].reshape(n_items * K, F)
        out = np.empty((len(users), n_items), dtype=np.float32)
        block = max(1, SCORE_BLOCK_ELEMENTS // (n_items * K))
        for s in range(0, len(users), block):
            ph = self._hidden(users[s:s + block], X)
            logits = ph @ Wflat.T
            scores = xp.empty((ph.shape[0], n_items), dtype=np.float32)
            be.score_items(logits, d["bv"], d["levels"], scores)
            out[s:s + block] = be.to_numpy(scores)
        return out

    def recommend(self, user, *, n=10, exclude_seen=True, items=None):
        """Top-n items for one user (raw id): (item ids, scores), best first.

        exclude_seen drops items the user rated in training; items restricts the candidates to
        these raw item ids."""
        self._check_fitted()
        check_n(n)
        u = int(self.user_index(user))
        scores = self.score_users([u])[0].astype(np.float64)
        seen = self.train_.indices[self.train_.indptr[u]:self.train_.indptr[u + 1]] if exclude_seen else ()
        top = self._top_n(scores, n, items, seen)
        return self.item_ids_[top], scores[top]

    def recommend_for(self, history, *, n=10, items=None, exclude_seen=True):
        """Top-n items for someone who is not in the training data, by mean-field fold-in: p(h | their
        ratings) from the trained weights, without retraining.

        history: {raw item id: rating} or a 1-row sparse matrix over the model's items (ratings on the
        model's levels).  exclude_seen drops the history's items; items restricts the candidates to
        these raw item ids.  Returns (item ids, scores), best first."""
        self._check_fitted()
        check_n(n)
        row = self._history_row(history)
        scores = self.score_users([0], X=row)[0].astype(np.float64)
        top = self._top_n(scores, n, items, row.indices if exclude_seen else ())
        return self.item_ids_[top], scores[top]

    def similar_items(self, item, *, n=10):
        """The n items most similar to `item` (raw id): cosine similarity of the flattened weight
        vectors W[i] (K * F values), the item itself excluded.  Returns (item ids, cosines), most
        similar first."""
        self._check_fitted()
        check_n(n)
        return nearest_items(self, self.W_, item, n)

    def _history_row(self, history):
        """A 1 x n_items float32 CSR from {raw item id: rating} or a 1-row sparse matrix."""
        if sp.issparse(history):
            row = sparse_ratings(history, "history")
            if row.shape != (1, self.n_items_):
                raise ValueError(f"history must be one row over the model's {self.n_items_} items, "
                                 f"got shape {row.shape}")
        else:
            pairs = dict(history)
            idx = np.atleast_1d(self.item_index(list(pairs))) if pairs else np.zeros(0, dtype=np.int64)
            vals = np.asarray(list(pairs.values()), dtype=np.float32)
            row = sparse_ratings(sp.coo_matrix((vals, (np.zeros(len(idx), dtype=np.int64), idx)),
                                               shape=(1, self.n_items_)), "history")
        return row

    def _top_n(self, scores, n, items=None, exclude=()):
        """Indices of the n best scores among the allowed items (items: raw ids or None for all;
        exclude: item indices), best first, ties by index."""
        allowed = np.ones(self.n_items_, dtype=bool)
        if items is not None:
            allowed[:] = False
            allowed[np.atleast_1d(self.item_index(np.atleast_1d(items)))] = True
        allowed[np.asarray(exclude, dtype=np.int64)] = False
        cand = np.flatnonzero(allowed)
        return cand[np.argsort(-scores[cand], kind="stable")[:max(0, min(n, len(cand)))]]

    # -- persistence --------------------------------------------------------------------------------
    def save(self, path):
        """Write the model to `path` (.npz, no pickle): see rbm_cuda.serialization."""
        from .serialization import save_model

        self._check_fitted()
        if self._dev is not None:
            self._sync_host()
        return save_model(self, path)

    @classmethod
    def load(cls, path, device=None):
        """Read a model written by save(); device overrides the saved device setting."""
        from .serialization import load_model

        return load_model(cls, path, device=device)



def nearest_items(model, W, item, n):
    """(item ids, cosines) of the n items of `model` whose weight vectors W[i] (any trailing shape,
    flattened) are nearest to `item`'s (raw id) by cosine, the item itself excluded, nearest first."""
    i = int(model.item_index(item))
    W = np.asarray(W, dtype=np.float32).reshape(W.shape[0], -1)
    norms = np.linalg.norm(W, axis=1).astype(np.float64)
    sims = (W @ W[i]).astype(np.float64) / np.maximum(norms * norms[i], 1e-30)
    top = model._top_n(sims, n, None, [i])
    return model.item_ids_[top], sims[top]


_DEFAULTS = {k: v.default for k, v in inspect.signature(RBM.__init__).parameters.items() if k != "self"}
