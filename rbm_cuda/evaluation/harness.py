"""Run models on splits and collect metrics; the table and the JSON report.

The guard against leaking test ratings is structural: a model's fit() receives the split's train
RatingData only, and predict / scores / p_like receive integer index arrays only.  The test
RatingData stays inside this module, which reads the true ratings from it to score the outputs.
Before fitting, check_split() refuses a split whose train and test share an entry.
"""

from __future__ import annotations

import json
import math
import time

import numpy as np
import scipy.sparse as sp

from . import metrics as M
from .splits import check_split

# Users scored at once when ranking (bounds the users x items score block).
RANK_BLOCK_ELEMENTS = 2**23


def _index_arrays(csr):
    """(users int64, items int64, ratings float64) of the stored entries of a CSR matrix."""
    coo = sp.coo_matrix(csr)
    return coo.row.astype(np.int64), coo.col.astype(np.int64), coo.data.astype(np.float64)


def evaluate_split(models, split, k=M.DEFAULT_K, relevance_threshold=None, like_threshold=M.LIKE_THRESHOLD,
                   log=None):
    """{model name: {metric: value}} for one split.  `models` is a list of fresh (unfitted) models.

    With split.history (protocol new-users) the test users are not in the training data: models
    fold in their history (predict_new / scores_new / p_like_new) and rank items not in it."""
    check_split(split.train, split.test)
    history = getattr(split, "history", None)
    if history is not None:
        check_split(split.train, history)
        check_split(history, split.test)
        history = history.ratings
    seen_csr = split.train.ratings if history is None else history
    users, items, truth = _index_arrays(split.test.ratings)
    rank_users, rel_sets, n_rel = M.relevant_sets(split.test.ratings, relevance_threshold)
    labels = (truth >= like_threshold).astype(np.float64)
    out = {}
    for model in models:
        t0 = time.perf_counter()
        res = {"fit_seconds": fit_once(model, split.train)}
        if history is None:
            pred = model.predict(users.copy(), items.copy())
            pl_fn = model.p_like
            score_fn = model.scores
        else:
            pred = model.predict_new(history, users.copy(), items.copy())
            pl_fn = (lambda u, i: model.p_like_new(history, u, i))
            score_fn = (lambda u: model.scores_new(history, u))
        if pred is not None:
            res["rmse"] = M.rmse(pred, truth)
            res["mae"] = M.mae(pred, truth)
        top = _rank(score_fn, rank_users, seen_csr, k)
        if top is not None:
            res.update(M.ranking_at_k(top, rel_sets, n_rel, k))
        pl = pl_fn(users.copy(), items.copy())
        if pl is not None:
            res.update(M.like_dislike(users, labels, pl))
        res["seconds"] = time.perf_counter() - t0
        out[model.name] = res
        if log is not None:
            shown = {m: round(v, 4) for m, v in res.items() if m in ("rmse", f"precision@{k}", "like_loss")}
            log(f"  {split.name} {model.name}: {shown} ({res['seconds']:.1f} s)")
    return out


def fit_once(model, train) -> float:
    """Fit `model` on `train`; its fit time in seconds (models report their own when they share a
    fit with other rows, as the recommender's parts do)."""
    t0 = time.perf_counter()
    model.fit(train)
    return float(getattr(model, "fit_seconds_", time.perf_counter() - t0))


def _rank(score_fn, rank_users, seen_csr, k):
    """Top-k lists of the ranking users (items they are known to have rated excluded), or None."""
    n_items = seen_csr.shape[1]
    block = max(1, RANK_BLOCK_ELEMENTS // max(n_items, 1))
    tops = []
    for s in range(0, len(rank_users), block):
        us = rank_users[s:s + block]
        sc = score_fn(us.copy())
        if sc is None:
            return None
        seen = seen_csr[us].toarray() != 0
        tops.append(M.top_k(np.asarray(sc), seen, k))
    return np.concatenate(tops) if tops else np.zeros((0, k), dtype=np.int64)


def evaluate(model_factory, splits, k=M.DEFAULT_K, relevance_threshold=None, log=None):
    """Evaluate fresh models (model_factory() -> list of models) on every split.

    Returns {"splits": [names], "per_split": {model: {split: {metric: v}}}, "models": {model:
    {metric: mean}}, "spread": {model: {metric: std over splits (ddof=0)}}}."""
    per_split = {}
    for split in splits:
        if log is not None:
            log(f"split {split.name}: {split.train.ratings.nnz} train / {split.test.ratings.nnz} test ratings")
        res = evaluate_split(model_factory(), split, k=k, relevance_threshold=relevance_threshold, log=log)
        for name, r in res.items():
            per_split.setdefault(name, {})[split.name] = r
    models, spread = {}, {}
    for name, by_split in per_split.items():
        keys = sorted({m for r in by_split.values() for m in r}, key=_metric_order)
        models[name] = {m: float(np.mean([r[m] for r in by_split.values() if m in r])) for m in keys}
        spread[name] = {m: float(np.std([r[m] for r in by_split.values() if m in r])) for m in keys}
    return {"splits": [s.name for s in splits], "models": models, "spread": spread, "per_split": per_split}


_ORDER = ["rmse", "mae", "precision", "recall", "ndcg", "map", "like_loss", "like_accuracy", "like_auc",
          "fit_seconds", "seconds"]


def _metric_order(m):
    base = m.split("@")[0]
    return (_ORDER.index(base) if base in _ORDER else len(_ORDER), m)


def metric_columns(report):
    cols = {m for r in report["models"].values() for m in r if m not in ("seconds",)}
    return sorted(cols, key=_metric_order)


def format_table(report, digits=4, markdown=False) -> str:
    """Models as rows, metrics as columns, 'mean ± std' over splits when there are several.
    markdown: a Markdown table of the metrics and each model's fit seconds (rows that share one
    recommender fit: the whole fit for `rbm`, the final training of its part for the others)."""
    cols = metric_columns(report)
    several = len(report["splits"]) > 1
    header = ["model"] + cols
    rows = []
    for name, res in report["models"].items():
        row = [name]
        for c in cols:
            if c not in res or res[c] is None or (isinstance(res[c], float) and math.isnan(res[c])):
                row.append("-")
                continue
            d = (1 if markdown else 2) if c.endswith("seconds") else digits
            cell = f"{res[c]:.{d}f}"
            if several:
                cell += f" {'± ' if markdown else '±'}{report['spread'][name][c]:.{d}f}"
            row.append(cell)
        rows.append(row)
    if markdown:
        return "\n".join("| " + " | ".join(r) + " |" for r in [header, ["---"] * len(header)] + rows)
    widths = [max(len(r[j]) for r in [header] + rows) for j in range(len(header))]
    lines = ["  ".join(h.ljust(w) if j == 0 else h.rjust(w) for j, (h, w) in enumerate(zip(header, widths)))]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))))
    return "\n".join(lines)


def to_json(report, protocol, dataset, k, path=None, extra=None) -> dict:
    """The JSON document: {"protocol", "dataset", "k", "splits", "models": {name: {metric: mean}},
    "spread": {name: {metric: std}}, "per_split": ...}; written to `path` when given."""
    doc = {"protocol": protocol, "dataset": dataset, "k": k, "splits": report["splits"],
           "models": report["models"], "spread": report["spread"], "per_split": report["per_split"]}
    if extra:
        doc.update(extra)
    if path is not None:
        with open(path, "w") as f:
            json.dump(doc, f, indent=1, sort_keys=False, default=_jsonable)
    return doc


def _jsonable(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    raise TypeError(f"{type(x).__name__} is not JSON serialisable")
