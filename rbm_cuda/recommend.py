"""Recommend items from a trained model: ``python -m rbm_cuda.recommend --model PATH ...``.

One of:
  --user ID                 top-N unseen items for a user of the training data, beside the items
                            they rated highest (--candidates to-read: only their to-read list)
  --history "ITEM=R,..."    a new person's ratings (ids or exact titles): fold-in, no retraining
  --history-file PATH       the same from a CSV of one person's ratings
  --find TEXT               items whose title contains TEXT, with their ids
  --similar ITEM            items whose weight vectors are closest (cosine) to ITEM's
  --all-users --out DIR     top-N for every user of the training data, as Parquet files in DIR, on a
                            local Dask cluster (--workers), an existing one (--scheduler), or a loop
--csv PATH writes what is shown (for --user / --history: all rated items and the recommendations).
Errors are one line on stderr ("error: ...") with exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import pandas as pd

from . import foldin
from .datasets import add_duplicates_argument

TITLE_WIDTH = 80
FIND_LIMIT = 50


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m rbm_cuda.recommend",
        description="Recommendations from a trained rbm_cuda model: for a known user, for a new "
                    "person's ratings (fold-in), items by title, and similar items.")
    p.add_argument("--model", required=True, metavar="PATH",
                   help="model file written by rbm_cuda.train, RBMRecommender.save or RBM.save")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--user", metavar="ID", help="raw user id of a user in the training data")
    what.add_argument("--history", metavar="ITEM=RATING,...",
                      help="a new person's ratings; ITEM is an item id or exact title (id:X / title:X force one)")
    what.add_argument("--history-file", metavar="PATH",
                      help="CSV of one person's ratings: columns item_id (or title) and rating, or ITEM,RATING lines")
    what.add_argument("--find", metavar="TEXT", help="list items whose title contains TEXT, with their ids")
    what.add_argument("--similar", metavar="ITEM", help="items most similar to ITEM (id or exact title)")
    what.add_argument("--all-users", action="store_true",
                      help="top-N for every user of the training data, written as Parquet to --out")
    p.add_argument("--n", type=_positive_int, default=None,
                   help=f"how many items to show (default 10; --find: up to {FIND_LIMIT})")
    p.add_argument("--candidates", choices=("all", "to-read"), default="all",
                   help="all unseen items (default) or only the user's to-read list (goodbooks; needs the data)")
    p.add_argument("--min-ratings", type=int, default=0, metavar="N",
                   help="recommend only items with at least N ratings in the training data (default 0: all)")
    p.add_argument("--data", metavar="NAME|PATH",
                   help="data set for --candidates to-read (default: the model's data set name)")
    add_duplicates_argument(p, default="last", ids_only=True)
    p.add_argument("--csv", metavar="PATH", help="also write the rated and recommended items to this CSV file")
    batch = p.add_argument_group("--all-users")
    batch.add_argument("--out", metavar="DIR", help="folder for the Parquet files (a re-run skips finished ones)")
    batch.add_argument("--scheduler", metavar="ADDRESS",
                       help="run on this dask.distributed scheduler (e.g. tcp://host:8786)")
    batch.add_argument("--workers", type=int, default=None, metavar="N",
                       help="without --scheduler: a local Dask cluster of N worker processes (default: one per "
                            "core when dask is installed); 0 runs a plain loop in this process")
    batch.add_argument("--partition-size", type=_positive_int, default=None, metavar="USERS",
                       help="users per output file (default: about 1,000,000 rows per file)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="where to compute (default: auto)")
    return p


def _positive_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return v


# -- loading ----------------------------------------------------------------------------------------
def load_model(path, device="auto"):
    """The RBMRecommender or RBM the file holds: any failure to read the file is a ModelFileError
    (RuntimeError if the device cannot be used)."""
    from .recommender import load_model as load

    return load(path, device=device)


def _is_recommender(model) -> bool:
    from .recommender import RBMRecommender

    return isinstance(model, RBMRecommender)


def _scores(model, user=None, row=None):
    """Ranking scores float64[n_items] of a training user (raw id) or of a history row."""
    if _is_recommender(model):
        out = model.score_items(user) if row is None else model.score_items(histories=row)
    else:
        out = model.score_users([model.user_index(user)]) if row is None else model.score_users([0], X=row)
    return out[0].astype(np.float64)


def _expected(model, ids, user=None, row=None):
    """The recommender's expected ratings of items `ids` for a user or a history row (None for an RBM,
    whose score already is one)."""
    if not _is_recommender(model) or not model.rating_parts_ or not len(ids):
        return None
    if row is None:
        return model.predict(np.repeat(user, len(ids)), ids)
    return model.predict_ratings(histories=row, items=ids)[0]


def load_data(name_or_path, duplicates="last"):
    """rbm_cuda.datasets.load; repeated (user, item) rows keep the last one by default (goodbooks v1
    has some: only the item ids and to-read lists are used here, which any choice leaves the same)."""
    try:
        from . import datasets

        load = datasets.load
    except (ImportError, AttributeError) as err:
        raise RuntimeError(f"cannot load data sets: rbm_cuda.datasets.load is not available ({err})") from None
    return load(name_or_path, duplicates=duplicates)


# -- text output -------------------------------------------------------------------------------------
def _cut(text, width=TITLE_WIDTH):
    text = str(text)
    return text if len(text) <= width else text[:width - 3] + "..."


def _num(v, digits=2):
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    return np.format_float_positional(float(v), trim="-") if digits is None else f"{float(v):.{digits}f}"


def format_table(columns, rows) -> str:
    """Rows as aligned text; the last column (titles) is left-aligned, the others right-aligned."""
    cells = [list(columns)] + [[str(c) for c in r] for r in rows]
    if rows and not any(r[-1] for r in cells[1:]):  # no titles (a model trained without item metadata)
        cells = [r[:-1] for r in cells]
        columns = columns[:-1]
    widths = [max(len(r[j]) for r in cells) for j in range(len(columns))]
    lines = []
    for r in cells:
        parts = [r[j].rjust(widths[j]) for j in range(len(r) - 1)] + [r[-1]]
        lines.append("  " + "  ".join(parts).rstrip())
    return "\n".join(lines)


def _plural(k, one, many=None) -> str:
    return f"{k} {one if k == 1 else (many or one + 's')}"


def _score_label(model) -> str:
    if _is_recommender(model):
        if "ranker" in model.parts_:
            return ("score = p(rated): how likely the person is to rate the item, from the ranker; "
                    "expected = the expected rating")
        return "score = expected rating"
    v = model.params_.visible
    if v == "like":
        return f"score = P(like), rating >= {_num(model.params_.like_threshold, None)}"
    if v == "bernoulli":
        return f"score = {_num(model.levels_.max(), None)} x p(v = 1) of the item's bernoulli unit"
    lo, hi = model.levels_.min(), model.levels_.max()
    return f"score = expected rating, {_num(lo, None)} to {_num(hi, None)}"


def _model_line(model, path) -> str:
    name = model.dataset_name_ or "unnamed data"
    if _is_recommender(model):
        parts = ", ".join(f"{p} ({len(m)} RBMs x {m.epochs_done_} epochs)" if p == "ranker" and len(m) > 1 else
                          f"{p} ({m.epochs_done_} epochs)" for p, m in model.parts_.items())
        return f"Model {path}: {name}, {model.n_users_} users x {model.n_items_} items, RBMRecommender: {parts}"
    return (f"Model {path}: {name}, {model.n_users_} users x {model.n_items_} items, "
            f"{model.params_.visible} visible units, {model.params_.n_hidden} hidden, "
            f"{model.epochs_done_} epochs")


def _rec_rows(model, top_ids, scores, expected, look):
    """(columns, rows) of a recommendation table."""
    idx = np.atleast_1d(model.item_index(top_ids)) if len(top_ids) else np.zeros(0, np.int64)
    if expected is None:
        return ("rank", "score", "item_id", "title"), [
            (k + 1, _num(s), look.ids[i], _cut(look.label(i))) for k, (i, s) in enumerate(zip(idx, scores))]
    return ("rank", "score", "expected", "item_id", "title"), [
        (k + 1, _num(s), _num(e), look.ids[i], _cut(look.label(i)))
        for k, (i, s, e) in enumerate(zip(idx, scores, expected))]


# -- the commands ------------------------------------------------------------------------------------
def cmd_user(args, model, look, out):
    n = args.n or 10
    uid = foldin.coerce_id(args.user, model.user_ids_)
    u = int(model.user_index(uid))
    items = None
    if args.candidates == "to-read":
        data = load_data(args.data or _model_dataset(model), args.duplicates)
        note = foldin.check_data_matches(model, data, f"model {args.model}")
        if note:
            print(note, file=sys.stderr)
        items = foldin.to_read_items(model, data, uid)
    items = _min_ratings(args, look, items)
    scores = _scores(model, uid)
    lo, hi = model.train_.indptr[u], model.train_.indptr[u + 1]
    rated, ratings = model.train_.indices[lo:hi].astype(np.int64), model.train_.data[lo:hi].astype(np.float64)
    order = np.lexsort((rated, -ratings))
    rated, ratings = rated[order], ratings[order]

    print(_model_line(model, args.model), file=out)
    if len(rated):
        print(f"\nUser {args.user} rated {_plural(len(rated), 'item')}; the {min(n, len(rated))} rated highest:",
              file=out)
        print(format_table(("rating", "item_id", "title"), [(_num(r, None), look.ids[i], _cut(look.label(i)))
                                                            for i, r in zip(rated[:n], ratings[:n])]), file=out)
    else:
        print(f"\nUser {args.user} has no ratings in the model's training data.", file=out)
    if items is not None:
        unseen = np.setdiff1d(model.item_index(items) if len(items) else np.zeros(0, np.int64), rated)
        what = (f"the {len(items)} items on user {args.user}'s to-read list" if args.candidates == "to-read"
                else f"the {len(items)} items with at least {args.min_ratings} ratings")
        header = (f"\nTop {min(n, len(unseen))} of {what} ({len(items) - len(unseen)} of them already rated; "
                  f"{_score_label(model)}):")
        top_ids = model.recommend(uid, n=n, items=model.item_ids_[unseen])[0] if len(unseen) else []
    else:
        header = f"\nTop {n} unseen items for user {args.user} ({_score_label(model)}):"
        top_ids = model.recommend(uid, n=n)[0]
    top = np.atleast_1d(model.item_index(top_ids)) if len(top_ids) else np.zeros(0, np.int64)
    expected = _expected(model, top_ids, user=uid)
    print(header, file=out)
    if len(top):
        print(format_table(*_rec_rows(model, top_ids, scores[top], expected, look)), file=out)
    else:
        print("  (no candidates: every candidate item is rated by this user already)", file=out)
    if args.csv:
        frame = pd.concat([
            look.frame(rated, kind="rated", rank=np.arange(1, len(rated) + 1), rating=ratings, score=scores[rated]),
            look.frame(top, kind="recommended", rank=np.arange(1, len(top) + 1), rating=np.nan, score=scores[top],
                       **({} if expected is None else {"expected": expected})),
        ], ignore_index=True)
        _write(frame, args.csv, out)


def _min_ratings(args, look, items):
    """Candidate raw ids (None: all) restricted to items with at least --min-ratings training ratings."""
    if args.min_ratings <= 0:
        return items
    keep = look.ids[look.n_ratings >= args.min_ratings]
    return keep if items is None else np.intersect1d(items, keep)


def _model_dataset(model):
    if not model.dataset_name_:
        raise ValueError("the model file does not name its data set; give --data NAME|PATH")
    return model.dataset_name_


def cmd_history(args, model, look, out):
    n = args.n or 10
    if args.candidates == "to-read":
        raise ValueError("--candidates to-read needs --user: a new person's history has no to-read list")
    entries = (foldin.parse_history(args.history) if args.history is not None
               else foldin.read_history_file(args.history_file))
    res, ids, scores = foldin.fold_in(model, entries, n=n, items=_min_ratings(args, look, None))
    print(_model_line(model, args.model), file=out)
    print(f"\nHistory: {_plural(len(entries), 'entry', 'entries')}, {_plural(len(res.index), 'item')} known to "
          f"the model (fold-in, no retraining):", file=out)
    order = np.lexsort((np.arange(len(res.index)), -res.ratings))
    print(format_table(("rating", "item_id", "title"),
                       [(_num(res.ratings[k], None), look.ids[res.index[k]], _cut(look.label(res.index[k])))
                        for k in order]), file=out)
    if res.unknown:
        print(f"\nNot known to the model, not used ({len(res.unknown)}):", file=out)
        for e, why in res.unknown:
            print(f"  {e.key}={e.rating}  ({e.where}: {why})", file=out)
    for note in res.notes:
        print(f"note: {note}", file=out)
    idx = np.atleast_1d(model.item_index(ids)) if len(ids) else np.zeros(0, np.int64)
    row = res.row(model.n_items_)
    expected = _expected(model, ids, row=row)
    print(f"\nTop {len(ids)} items for this history ({_score_label(model)}):", file=out)
    print(format_table(*_rec_rows(model, ids, scores, expected, look)), file=out)
    if args.csv:
        all_scores = _scores(model, row=row)
        known = look.frame(res.index[order], kind="rated", rank=np.arange(1, len(order) + 1),
                           rating=res.ratings[order], score=all_scores[res.index[order]])
        recs = look.frame(idx, kind="recommended", rank=np.arange(1, len(idx) + 1), rating=np.nan, score=scores,
                          **({} if expected is None else {"expected": expected}))
        parts = [known, recs]
        if res.unknown:
            unk = pd.DataFrame({"kind": "unknown", "rank": np.arange(1, len(res.unknown) + 1),
                                "item_id": "", "title": [e.key for e, _ in res.unknown],
                                "rating": [e.rating for e, _ in res.unknown], "score": np.nan})
            parts.append(unk)
        _write(pd.concat(parts, ignore_index=True), args.csv, out)


def cmd_find(args, model, look, out):
    if not look.has_titles:
        raise ValueError(f"model {args.model} has no item titles (it was trained without item metadata)")
    found = look.find(args.find)
    limit = args.n or FIND_LIMIT
    if not len(found):
        print(f"No item title contains {args.find!r}.", file=out)
        return
    shown = found.iloc[:limit]
    more = f", showing {len(shown)}" if len(found) > len(shown) else ""
    what = "1 item matches" if len(found) == 1 else f"{len(found)} items match"
    print(f"{what} {args.find!r} (most rated first{more}):", file=out)
    print(format_table(("item_id", "ratings", "title"),
                       [(look.ids[j], c, _cut(look.label(j))) for j, c in zip(shown.index, shown["n_ratings"])]),
          file=out)
    if args.csv:
        _write(found, args.csv, out)


def cmd_similar(args, model, look, out):
    n = args.n or 10
    i = look.index_of(args.similar)
    ids, sims = model.similar_items(model.item_ids_[i], n=n)
    idx = np.atleast_1d(model.item_index(ids)) if len(ids) else np.zeros(0, np.int64)
    label = f"{look.ids[i]}: {_cut(look.label(i))}" if look.has_titles else f"item {look.ids[i]}"
    what = "the ranker's item weight vectors" if _is_recommender(model) and "ranker" in model.parts_ \
        else "the items' weight vectors"
    print(f"Items most similar to {label} (cosine of {what}, model {args.model}):", file=out)
    print(format_table(("rank", "cosine", "item_id", "title"),
                       [(k + 1, _num(s, 3), look.ids[j], _cut(look.label(j)))
                        for k, (j, s) in enumerate(zip(idx, sims))]),
          file=out)
    if args.csv:
        _write(look.frame(idx, rank=np.arange(1, len(idx) + 1), cosine=sims), args.csv, out)


def _write(frame, path, out):
    first = [c for c in ("kind", "rank", "item_id", "title", "authors", "genres") if c in frame.columns]
    frame = frame[first + [c for c in frame.columns if c not in first]]
    frame = frame.round({c: 4 for c in ("score", "cosine") if c in frame.columns})
    foldin.write_csv(frame, path)
    print(f"\nwrote {len(frame)} rows to {path}", file=out)


def cmd_all_users(args, out):
    from . import batch

    if args.out is None:
        raise ValueError("--all-users needs --out DIR, the folder for the Parquet files")
    if args.workers is not None and args.workers < 0:
        raise ValueError(f"--workers must be 0 (a loop in this process) or more, got {args.workers}")
    if args.candidates != "all" or args.min_ratings or args.csv or args.data:
        raise ValueError("--all-users ranks all unseen items into Parquet files: --candidates, --min-ratings, "
                         "--csv and --data do not apply")
    batch.check_pyarrow()
    n = 10 if args.n is None else args.n
    with _dask_client(args) as (client, where):
        print(f"top-{n} for every user of {args.model}, {where}", file=out)
        files = batch.recommend_all(args.model, n=n, out=args.out, client=client, device=args.device,
                                    partition_size=args.partition_size, progress=True)
    import pyarrow.parquet as pq

    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    print(f"wrote {rows} rows (user, rank, item, score) in {_plural(len(files), 'file')} to {args.out}", file=out)


class _dask_client:
    """(client or None, description): the --scheduler cluster, a local one, or None for a loop."""

    def __init__(self, args):
        self.args, self.client, self.cluster = args, None, None

    def __enter__(self):
        a = self.args
        if a.scheduler is None and a.workers == 0:
            return None, "in this process"
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            if a.scheduler is not None or a.workers:
                raise RuntimeError("--scheduler and --workers need dask: pip install 'rbm_cuda[dask]'") from None
            return None, "in this process (dask is not installed)"
        if a.scheduler is not None:
            self.client = Client(a.scheduler)
            return self.client, f"on the Dask cluster at {a.scheduler}"
        n = a.workers or os.cpu_count() or 1
        self.cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                                    env={"NUMBA_NUM_THREADS": "1"})
        self.client = Client(self.cluster)
        return self.client, f"on a local Dask cluster of {_plural(n, 'worker')}"

    def __exit__(self, *exc):
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def run(args, out=None):
    out = sys.stdout if out is None else out
    if args.all_users:
        return cmd_all_users(args, out)
    if args.out or args.scheduler or args.workers is not None or args.partition_size:
        raise ValueError("--out, --scheduler, --workers and --partition-size go with --all-users")
    model = load_model(args.model, device=args.device)
    look = foldin.ItemLookup(model)
    if args.user is not None:
        cmd_user(args, model, look, out)
    elif args.history is not None or args.history_file is not None:
        cmd_history(args, model, look, out)
    elif args.find is not None:
        cmd_find(args, model, look, out)
    else:
        cmd_similar(args, model, look, out)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except KeyError as err:
        msg = err.args[0] if err.args else "unknown id"
    except (ValueError, RuntimeError, OSError, ImportError) as err:  # ModelFileError, DataError: ValueErrors
        msg = str(err)
    else:
        return 0
    print("error: " + " ".join(str(msg).split()), file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
