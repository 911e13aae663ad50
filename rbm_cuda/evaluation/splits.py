"""Train/test protocols.  Every split is a pair of RatingData over the same users, items and levels
(the same index maps), with disjoint rated entries whose union is the data.

  folds       MovieLens 100K official u1..u5 (80/20, the five tests partition the data)
  ua, ub      MovieLens 100K official ua / ub (exactly 10 test ratings per user)
  stratified  per user, round(25 %) of their ratings drawn at random go to test (seeded)
  random      a random 10 % of all ratings go to test, once per seed
  new-users   10 % of the users are held out entirely: models train on the others, fold in 75 % of
              each held-out user's ratings (Split.history) and are scored on the other 25 %
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

PROTOCOLS = ("folds", "ua", "ub", "stratified", "random", "new-users")
FOLDS_100K = ("u1", "u2", "u3", "u4", "u5")


@dataclass
class Split:
    """One train/test split.  `name` labels it in the results (u1, seed0, ...)."""

    name: str
    train: object  # RatingData
    test: object  # RatingData
    # new-users only: the held-out users' ratings that models fold in (never trained on)
    history: object = None


def check_split(train, test) -> None:
    if train.ratings.shape != test.ratings.shape:
        raise ValueError(f"train {train.ratings.shape} and test {test.ratings.shape} differ in shape")
    if not (np.array_equal(train.user_ids, test.user_ids) and np.array_equal(train.item_ids, test.item_ids)):
        raise ValueError("train and test use different user or item index maps")
    both = train.ratings.astype(bool).multiply(test.ratings.astype(bool))
    if both.nnz:
        raise ValueError(f"train and test share {both.nnz} (user, item) entries")


def _split_by_mask(data, in_test: np.ndarray):
    """(train, test) RatingData of `data` with the CSR entries flagged in `in_test` moved to test."""
    csr = data.ratings
    rows = np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr))

    def part(mask):
        m = sp.csr_matrix((csr.data[mask], (rows[mask], csr.indices[mask])), shape=csr.shape, dtype=np.float32)
        m.sort_indices()
        return data.with_ratings(m)

    return part(~in_test), part(in_test)


def half_up(x):
    """Round half away from zero (round(2.5) = 3), not numpy's round-half-to-even."""
    return np.floor(np.asarray(x, np.float64) + 0.5).astype(np.int64)


def stratified_split(data, test_fraction=0.25, seed=0) -> Split:
    """Per-user split: for each user with n ratings, half_up(test_fraction * n) ratings drawn at
    random (seeded) go to test, at most n - 1 so every user keeps a training rating."""
    csr = data.ratings
    counts = np.diff(csr.indptr)
    n_test = np.minimum(half_up(test_fraction * counts), np.maximum(counts - 1, 0))
    rng = np.random.Generator(np.random.Philox(key=seed))
    key = rng.random(csr.nnz)
    in_test = np.zeros(csr.nnz, dtype=bool)
    for u in np.flatnonzero(n_test):
        lo, hi = csr.indptr[u], csr.indptr[u + 1]
        pick = np.argsort(key[lo:hi], kind="stable")[: n_test[u]]
        in_test[lo + pick] = True
    train, test = _split_by_mask(data, in_test)
    return Split(f"seed{seed}", train, test)


def random_split(data, test_fraction=0.1, seed=0) -> Split:
    """half_up(test_fraction * nnz) ratings drawn uniformly at random (seeded) go to test."""
    nnz = data.ratings.nnz
    n_test = int(half_up(test_fraction * nnz))
    rng = np.random.Generator(np.random.Philox(key=seed))
    in_test = np.zeros(nnz, dtype=bool)
    in_test[rng.permutation(nnz)[:n_test]] = True
    train, test = _split_by_mask(data, in_test)
    return Split(f"seed{seed}", train, test)


def new_users_split(data, user_fraction=0.1, history_fraction=0.75, seed=0) -> Split:
    """Hold out half_up(user_fraction * users with >= 2 ratings) users entirely (seeded): their rows
    are empty in train.  Of each held-out user's ratings, half_up(history_fraction * n) drawn at
    random (at least 1, at most n - 1) form `history`, the rest `test`."""
    csr = data.ratings
    counts = np.diff(csr.indptr)
    eligible = np.flatnonzero(counts >= 2)
    rng = np.random.Generator(np.random.Philox(key=seed))
    held = np.sort(rng.permutation(eligible)[:int(half_up(user_fraction * len(eligible)))])
    key = rng.random(csr.nnz)
    in_history = np.zeros(csr.nnz, dtype=bool)
    in_test = np.zeros(csr.nnz, dtype=bool)
    for u in held:
        lo, hi = csr.indptr[u], csr.indptr[u + 1]
        n_hist = int(min(max(half_up(history_fraction * counts[u]), 1), counts[u] - 1))
        order = np.argsort(key[lo:hi], kind="stable")
        in_history[lo + order[:n_hist]] = True
        in_test[lo + order[n_hist:]] = True
    train, test = _split_by_mask(data, in_test | in_history)
    _, history = _split_by_mask(data, in_history)
    _, test = _split_by_mask(data, in_test)
    return Split(f"seed{seed}", train, test, history)


def validation_split(train, fraction=0.1, seed=0):
    """(fit, valid) RatingData carved from a training set: a random `fraction` of its ratings, for
    choosing hyper-parameters, epochs or blend weights without touching the test set."""
    s = random_split(train, fraction, seed)
    return s.train, s.test


def validation_splits(splits, protocol):
    """Each split's training part split again, its test part set aside: for choosing hyper-parameters
    without the test sets.  stratified: a per-user 25 % of the training part (seed 0), as EASE picks
    its lambda; folds, ua, ub, random: a random 10 % of it (seed 123)."""
    if protocol == "new-users":
        raise ValueError("validation parts are carved from training parts; new-users holds its people out of "
                         "training, so it has none: use another protocol")
    out = []
    for s in splits:
        if protocol == "stratified":
            inner = stratified_split(s.train, 0.25, 0)
            fit, valid = inner.train, inner.test
        else:
            fit, valid = validation_split(s.train, 0.1, 123)
        out.append(Split(f"{s.name}-valid", fit, valid))
    return out


def movielens_100k_folder(data):
    """The ml-100k folder a RatingData was loaded from (None if it was not)."""
    from pathlib import Path

    src = Path(getattr(data, "source", "") or "")
    for cand in (src, src.parent):
        if (cand / "u1.base").is_file():
            return cand
    return None


def make_splits(protocol, data=None, folder=None, seeds=None, test_fraction=None):
    """The list of Split for a protocol.

    folds / ua / ub need the ml-100k folder (`folder`, or the folder `data` was loaded from);
    stratified / random split `data` (default seeds: (0,) for stratified, (0, 1, 2, 3, 4) for random).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}; got {protocol!r}")
    if protocol in ("folds", "ua", "ub"):
        from ..datasets import load_movielens_100k_split

        if folder is None and data is not None:
            folder = movielens_100k_folder(data)
        if folder is None:
            raise ValueError(f"protocol {protocol!r} needs the MovieLens 100K folder with its u1..u5/ua/ub files; "
                             "use --protocol stratified or random for other data sets")
        names = FOLDS_100K if protocol == "folds" else (protocol,)
        out = []
        for name in names:
            train, test = load_movielens_100k_split(folder, name)
            out.append(Split(name, train, test))
        return out
    if data is None:
        raise ValueError(f"protocol {protocol!r} needs a data set")
    if protocol == "new-users":
        frac = 0.1 if test_fraction is None else test_fraction
        return [new_users_split(data, frac, 0.75, s) for s in (seeds if seeds is not None else (0,))]
    if protocol == "stratified":
        frac = 0.25 if test_fraction is None else test_fraction
        return [stratified_split(data, frac, s) for s in (seeds if seeds is not None else (0,))]
    frac = 0.1 if test_fraction is None else test_fraction
    return [random_split(data, frac, s) for s in (seeds if seeds is not None else (0, 1, 2, 3, 4))]
