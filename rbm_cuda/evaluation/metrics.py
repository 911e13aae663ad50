"""Evaluation metrics: rating accuracy, top-k ranking, like/dislike.  Definitions: docs/evaluation.md.

All functions take plain arrays; nothing here sees a model.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

DEFAULT_K = 10
# Ratings >= this are a "like" in the like/dislike task of the PyTorch seed (1-2 dislike, 3-5 like).
LIKE_THRESHOLD = 3.0


def rmse(pred, truth) -> float:
    """Root mean squared error of predicted against true ratings (the caller clips predictions)."""
    pred, truth = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
    return float(np.sqrt(np.mean((pred - truth) ** 2))) if len(truth) else float("nan")


def mae(pred, truth) -> float:
    """Mean absolute error of predicted against true ratings."""
    pred, truth = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
    return float(np.mean(np.abs(pred - truth))) if len(truth) else float("nan")


def top_k(scores, exclude, k):
    """Indices of the k best-scored allowed items of each row, best first.

    scores: float[U, I]; exclude: bool[U, I] (True = not a candidate, e.g. rated in train).
    Ties are broken by the lower item index (a stable sort), so results are deterministic.
    Rows with fewer than k candidates are padded with -1.
    """
    s = np.where(exclude, -np.inf, np.asarray(scores, np.float64))
    U, n_items = s.shape
    k = min(k, n_items)
    # stable descending order: sort by (-score, index)
    out = np.argsort(-s, axis=1, kind="stable")[:, :k]
    picked = np.take_along_axis(s, out, axis=1)
    out[np.isneginf(picked)] = -1
    return out


def ranking_at_k(top, relevant, n_relevant, k=DEFAULT_K) -> dict:
    """precision, recall, NDCG and MAP at k from per-user top-k lists.

    top: int[U, k] item indices best first (-1 = no item); relevant: a callable or a list of sets
    giving each user's relevant items; n_relevant: int[U] (> 0 for every user).
      precision@k = hits / k
      recall@k    = hits / #relevant
      NDCG@k      = DCG / IDCG, DCG = sum over ranks i <= k of rel_i / log2(i + 1), binary rel,
                    IDCG = the DCG of min(#relevant, k) hits at the top
      MAP@k       = (sum of precision@i over the ranks i <= k that hold a hit) / min(#relevant, k)
    Each is averaged over the U users.
    """
    top = np.asarray(top)
    n_relevant = np.asarray(n_relevant, np.float64)
    U = top.shape[0]
    if U == 0:
        return {f"{m}@{k}": float("nan") for m in ("precision", "recall", "ndcg", "map")}
    hits = np.zeros((U, top.shape[1]), dtype=np.float64)
    for u in range(U):
        rel = relevant[u]
        hits[u] = [1.0 if (i >= 0 and i in rel) else 0.0 for i in top[u]]
    hits = hits[:, :k]
    ranks = np.arange(1, hits.shape[1] + 1)
    discounts = 1.0 / np.log2(ranks + 1)
    n_hits = hits.sum(1)
    dcg = (hits * discounts).sum(1)
    ideal_n = np.minimum(n_relevant, k).astype(np.int64)
    idcg = np.cumsum(np.r_[0.0, 1.0 / np.log2(np.arange(1, k + 1) + 1)])[ideal_n]
    prec_at_i = np.cumsum(hits, 1) / ranks
    ap = (prec_at_i * hits).sum(1) / np.minimum(n_relevant, k)
    return {
        f"precision@{k}": float(np.mean(n_hits / k)),
        f"recall@{k}": float(np.mean(n_hits / n_relevant)),
        f"ndcg@{k}": float(np.mean(dcg / idcg)),
        f"map@{k}": float(np.mean(ap)),
    }


def relevant_sets(test: sp.csr_matrix, threshold=None):
    """(users, list of item sets, counts): the users with at least one relevant test item, where
    relevant = any test rating, or a test rating >= threshold when given."""
    test = sp.csr_matrix(test)
    users, sets, counts = [], [], []
    for u in range(test.shape[0]):
        lo, hi = test.indptr[u], test.indptr[u + 1]
        items = test.indices[lo:hi]
        if threshold is not None:
            items = items[test.data[lo:hi] >= threshold]
        if len(items):
            users.append(u)
            sets.append(set(items.tolist()))
            counts.append(len(items))
    return np.asarray(users, dtype=np.int64), sets, np.asarray(counts, dtype=np.int64)


def like_dislike(users, labels, p_like) -> dict:
    """The PyTorch seed's like/dislike metric, plus accuracy and ROC AUC.

    users: int[n] user of each test rating; labels: 0/1 (1 = like); p_like: float[n], the model's
    P(like) or any score where higher means more likely a like, already in [0, 1].
      like_loss = mean over test users of (mean over that user's test ratings of |label - hard|),
                  hard = 1 if p_like >= 0.5 else 0 (the seed compares a binary reconstruction)
      like_accuracy = fraction of test ratings with hard == label
      like_auc = ROC AUC of p_like against label (ties count one half)
    """
    users = np.asarray(users)
    labels = np.asarray(labels, np.float64)
    p = np.asarray(p_like, np.float64)
    hard = (p >= 0.5).astype(np.float64)
    err = np.abs(labels - hard)
    uniq, inv = np.unique(users, return_inverse=True)
    per_user = np.bincount(inv, weights=err) / np.bincount(inv)
    return {"like_loss": float(per_user.mean()), "like_accuracy": float(1.0 - err.mean()),
            "like_auc": roc_auc(labels, p)}


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve: P(score of a random positive > score of a random negative), ties
    counting one half (the Mann-Whitney statistic).  NaN when one class is absent."""
    labels = np.asarray(labels, bool)
    scores = np.asarray(scores, np.float64)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="stable")
    s = scores[order]
    ranks = np.empty(len(s), dtype=np.float64)
    # average ranks (1-based) over ties
    starts = np.r_[0, np.flatnonzero(np.diff(s)) + 1]
    ends = np.r_[starts[1:], len(s)]
    for a, b in zip(starts, ends):
        ranks[a:b] = (a + 1 + b) / 2.0
    r = np.empty(len(s))
    r[order] = ranks
    return float((r[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
