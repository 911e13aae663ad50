"""Turning (user, item, rating) triples into a RatingData: id maps, duplicate handling, CSR.

All steps are vectorised numpy (a sort of the combined (user, item) key), so a million triples
take a fraction of a second.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .core import RatingData, format_value, sorted_unique
from .errors import DataError
from .parsing import Origin, check_levels

DUPLICATES = ("error", "last", "mean")


# Integer ids spanning at most this many values (or 8 x the number of ids) are mapped through a
# dense lookup table instead of a binary search.
_DENSE_SPAN = 1 << 24


def positions_in(universe: np.ndarray, raw: np.ndarray):
    """(index of each raw id in the sorted, distinct ``universe``, mask of ids found). Integer and
    text ids are compared as text when the two kinds differ."""
    if len(universe) == 0:
        return np.zeros(len(raw), dtype=np.int64), np.zeros(len(raw), dtype=bool)
    if universe.dtype.kind == "i" and raw.dtype.kind == "i" and len(raw):
        lo, hi = int(universe[0]), int(universe[-1])
        span = hi - lo + 1
        if span <= max(_DENSE_SPAN, 8 * len(universe)):
            table = np.full(span, -1, dtype=np.int64)
            table[universe - lo] = np.arange(len(universe), dtype=np.int64)
            inside = (raw >= lo) & (raw <= hi)
            pos = np.full(len(raw), -1, dtype=np.int64)
            if inside.all():
                pos = table[raw - lo]
            else:
                pos[inside] = table[raw[inside] - lo]
            found = pos >= 0
            return np.maximum(pos, 0), found
    sorter = None
    if universe.dtype.kind != raw.dtype.kind:
        universe = universe.astype(str)
        raw = raw.astype(str)
        sorter = np.argsort(universe, kind="stable")
    pos = np.minimum(np.searchsorted(universe, raw, sorter=sorter), len(universe) - 1)
    if sorter is not None:
        pos = sorter[pos]
    found = universe[pos] == raw
    return pos.astype(np.int64), found


def map_ids(raw: np.ndarray, universe: np.ndarray | None, origin: Origin, what: str, universe_label: str):
    """(sorted id map, index of each raw id). Ids must all be in ``universe`` when it is given."""
    ids = sorted_unique(raw) if universe is None else sorted_unique(np.asarray(universe))
    idx, found = positions_in(ids, raw)
    if not found.all():
        k = int(np.flatnonzero(~found)[0])
        n_bad = int((~found).sum())
        more = f" ({n_bad} rows have unknown {what} ids)" if n_bad > 1 else ""
        raise DataError(
            f"{origin.where(k)}: {what} id {raw[k].item()!r} is not in {universe_label}{more}"
        )
    return ids, idx


def check_duplicates_mode(duplicates: str) -> None:
    if duplicates not in DUPLICATES:
        raise ValueError(f"duplicates must be one of {', '.join(map(repr, DUPLICATES))}; got {duplicates!r}")


def add_duplicates_argument(parser, default: str = "error", ids_only: bool = False) -> None:
    """The --duplicates flag of every command that loads a data set (train, evaluate, recommend,
    serve); ``ids_only``: the command reads only the item ids and to-read lists of the data."""
    note = "; only its item ids and to-read lists are used here, which any choice leaves the same" if ids_only else ""
    parser.add_argument(
        "--duplicates", default=default, choices=list(DUPLICATES),
        help="repeated (user, item) ratings in the data: stop with an error that shows one, keep the last, or keep "
             f"the mean rounded to the nearest level (goodbooks-10k v1 has 2,278 repeated rows){note} "
             "(default: %(default)s)")


def build_rating_data(
    users: np.ndarray,
    items: np.ndarray,
    ratings: np.ndarray,
    *,
    origin: Origin,
    name: str,
    source: str,
    levels=None,
    duplicates: str = "error",
    user_universe: np.ndarray | None = None,
    item_universe: np.ndarray | None = None,
    user_label: str = "the user list",
    item_label: str = "the item list",
    item_table: pd.DataFrame | None = None,
    to_read: sp.csr_matrix | None = None,
) -> RatingData:
    """RatingData from parallel arrays of raw user ids, raw item ids and float64 ratings.

    ``user_universe`` / ``item_universe``: all known raw ids (e.g. from u.user / u.item); every id
    in the triples must be among them, and the id maps cover all of them. Without them the maps
    hold the ids seen. Id maps are sorted by raw id.
    ``item_table``: metadata indexed by raw item id (covering the item map); reordered to it.
    ``levels``: allowed ratings (None: the distinct values seen). ``duplicates``: see ``resolve_pairs``.
    """
    check_duplicates_mode(duplicates)
    if len(ratings) == 0:
        raise DataError(f"{origin.label}: no ratings; the data set is empty")
    lv = check_levels(ratings, levels, origin)
    user_ids, uidx = map_ids(users, user_universe, origin, "user", user_label)
    item_ids, iidx = map_ids(items, item_universe, origin, "item", item_label)
    n_users, n_items = len(user_ids), len(item_ids)
    csr, lv = pairs_to_csr(uidx, iidx, ratings, (n_users, n_items), origin, duplicates, lv, users, items)
    meta = None
    if item_table is not None:
        meta = item_table.reindex(item_ids).reset_index(drop=True)
    return RatingData(
        csr, user_ids, item_ids, lv, items=meta, to_read=to_read, name=name, source=source
    )


def pairs_to_csr(uidx, iidx, ratings, shape, origin, duplicates, levels, raw_users=None, raw_items=None):
    """(CSR float32 matrix, levels) from index pairs; repeated pairs handled by ``duplicates``:

    'error': DataError with the number of repeated (user, item) pairs, the surplus rows, how many
        pairs have conflicting ratings, and one example with its ratings and lines.
    'last': the last row of each pair (in input order) is kept.
    'mean': the mean of each pair's ratings, rounded to the nearest level (halves up: 4 and 5 on a
        1..5 scale give 5), so the rating scale stays the data's own.
    """
    n_users, n_items = shape
    key = uidx.astype(np.int64) * n_items + iidx.astype(np.int64)
    if len(key) < 2 or bool(np.all(key[1:] > key[:-1])):
        order = None  # already sorted by (user, item) with no repeats
        skey, srat = key, ratings
    else:
        order = np.argsort(key, kind="stable")
        skey, srat = key[order], ratings[order]
    rep = skey[1:] == skey[:-1] if order is not None else np.zeros(0, dtype=bool)
    if rep.any():
        starts = np.flatnonzero(np.concatenate(([True], ~rep)))
        sizes = np.diff(np.append(starts, len(skey)))
        if duplicates == "error":
            raise DataError(_duplicates_message(starts, sizes, order, srat, ratings, origin, raw_users, raw_items))
        if duplicates == "last":
            pick = starts + sizes - 1
            skey, srat = skey[pick], srat[pick]
        else:  # mean, rounded to the nearest level
            mean = np.add.reduceat(srat, starts) / sizes
            lv = np.asarray(levels, dtype=np.float64)
            above = np.clip(np.searchsorted(lv, mean), 0, len(lv) - 1)
            below = np.clip(above - 1, 0, len(lv) - 1)
            srat = np.where(mean - lv[below] < lv[above] - mean, lv[below], lv[above])
            skey = skey[starts]
    rows = skey // n_items
    cols = (skey - rows * n_items).astype(np.int32)
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_users), out=indptr[1:])
    m = sp.csr_matrix(shape, dtype=np.float32)
    m.data, m.indices, m.indptr = srat.astype(np.float32), cols, indptr
    m.has_sorted_indices = True
    return m, levels


def _duplicates_message(starts, sizes, order, srat, ratings, origin: Origin, raw_users, raw_items) -> str:
    grp = np.flatnonzero(sizes > 1)
    surplus = int((sizes[grp] - 1).sum())
    lo = np.minimum.reduceat(srat, starts)[grp]
    hi = np.maximum.reduceat(srat, starts)[grp]
    conflict = lo != hi
    n_conflict = int(conflict.sum())
    # the example: the first conflicting pair (in sorted order), else the first repeated one
    g = grp[np.flatnonzero(conflict)[0]] if n_conflict else grp[0]
    rows = np.sort(order[starts[g]: starts[g] + sizes[g]])  # its input rows, in input order
    r0 = int(rows[0])
    u = raw_users[r0].item() if raw_users is not None else "?"
    i = raw_items[r0].item() if raw_items is not None else "?"
    seen = ", ".join(f"{format_value(ratings[r])} ({_short_where(origin, int(r))})" for r in rows)
    return (
        f"{origin.label}: {len(grp)} (user, item) pairs occur more than once ({surplus} surplus rows); "
        f"{n_conflict} of these pairs have conflicting ratings. Example: user {u!r}, item {i!r} rated "
        f"{seen}. Keep the last row of each pair with duplicates='last' (--duplicates last on the "
        f"command line), or average them with duplicates='mean' (--duplicates mean)."
    )


def _short_where(origin: Origin, k: int) -> str:
    n = origin.line(k)
    return f"line {n}" if n is not None else f"row {k}"


def bool_matrix(
    users: np.ndarray,
    items: np.ndarray,
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    origin: Origin,
    user_label: str,
    item_label: str,
) -> sp.csr_matrix:
    """Boolean CSR (len(user_ids), len(item_ids)) with True at each (user, item); repeats are one."""
    _, uidx = map_ids(users, user_ids, origin, "user", user_label)
    _, iidx = map_ids(items, item_ids, origin, "item", item_label)
    n_items = len(item_ids)
    key = sorted_unique(uidx * n_items + iidx)
    rows = key // n_items
    indptr = np.zeros(len(user_ids) + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=len(user_ids)), out=indptr[1:])
    m = sp.csr_matrix((len(user_ids), n_items), dtype=np.bool_)
    m.data = np.ones(len(key), dtype=np.bool_)
    m.indices = (key - rows * n_items).astype(np.int32)
    m.indptr = indptr
    m.has_sorted_indices = True
    return m
