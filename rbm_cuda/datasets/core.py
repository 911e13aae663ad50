"""RatingData: a users x items matrix of explicit ratings with its id maps and item metadata."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .errors import DataError

# How many unknown ids a KeyError message lists before "and N more".
_SHOW_IDS = 5


def sorted_unique(a: np.ndarray) -> np.ndarray:
    """Sorted distinct values (a plain sort; faster than np.unique's hashing on large arrays)."""
    if len(a) == 0:
        return a.copy()
    s = np.sort(a, kind="stable")
    keep = np.empty(len(s), dtype=bool)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    return s[keep]


def format_value(v) -> str:
    """A rating or level as a short number: 4, 3.5, 0.1."""
    return np.format_float_positional(float(v), trim="-")


def format_levels(levels) -> str:
    return "[" + ", ".join(format_value(v) for v in levels) + "]"


def as_id_array(ids, what: str) -> np.ndarray:
    """Raw ids as int64 when they are all integers, else a numpy unicode array (never object)."""
    a = np.asarray(ids)
    if a.ndim != 1:
        raise ValueError(f"{what} must be one-dimensional, got shape {a.shape}")
    if a.dtype.kind in "iu":
        return a.astype(np.int64, copy=False)
    if a.dtype.kind == "b":
        raise ValueError(f"{what} must be integers or strings, got booleans")
    if a.dtype.kind == "f":
        if a.size and not (np.all(np.isfinite(a)) and np.all(a == np.round(a))):
            raise ValueError(f"{what} must be integers or strings, got non-integral floats")
        return a.astype(np.int64)
    if a.dtype.kind == "U":
        return a
    # object / bytes: all ints -> int64, else strings
    values = a.tolist()
    if values and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        return np.asarray(values, dtype=np.int64)
    return np.asarray([v.decode() if isinstance(v, bytes) else str(v) for v in values], dtype=str)


class RatingData:
    """Explicit ratings of ``n_users`` users on ``n_items`` items, with the maps to raw ids.

    Attributes
    ----------
    ratings : scipy.sparse.csr_matrix (n_users, n_items), float32 raw rating values, users are rows.
        Only rated entries are stored (a stored value is a rating, never "missing"); indices are
        sorted; ``indptr`` and ``indices`` share one integer dtype (scipy needs that).
    user_ids, item_ids : index -> raw id; int64 when all raw ids are integers, else a numpy unicode
        array.
    levels : float64, the sorted distinct allowed rating values (the rating scale).
    items : pandas.DataFrame or None, one row per item index (RangeIndex 0..n_items-1), with a
        'title' column; 'genres' ('|'-joined) for movies, 'authors' for books.
    to_read : scipy.sparse.csr_matrix (n_users, n_items) of bool or None: users' to-read lists.
    name : short name of the data set ("ml-100k", a file name, ...).
    source : where it was read from, for messages.

    The constructor checks that all of these agree and converts the matrices to the layout above
    (dtypes, sorted indices); it raises ``DataError`` when they do not agree.
    """

    def __init__(
        self,
        ratings,
        user_ids,
        item_ids,
        levels,
        items: pd.DataFrame | None = None,
        to_read=None,
        name: str = "ratings",
        source: str = "",
    ):
        self.name = str(name)
        self.source = str(source)
        self.user_ids = as_id_array(user_ids, "user_ids")
        self.item_ids = as_id_array(item_ids, "item_ids")
        shape = (len(self.user_ids), len(self.item_ids))
        self.levels = self._check_levels(levels)
        self.ratings = self._check_ratings(ratings, shape)
        self.items = self._check_items(items, shape[1])
        self.to_read = None if to_read is None else self._check_to_read(to_read, shape)
        for what, ids in (("user", self.user_ids), ("item", self.item_ids)):
            uniq = sorted_unique(ids)
            if len(uniq) != len(ids):
                raise DataError(f"{self.name}: {what}_ids has {len(ids) - len(uniq)} repeated ids")
        self._sorters: dict[str, np.ndarray] = {}
        self._item_counts: np.ndarray | None = None

    # ---------------------------------------------------------------- validation
    def _check_levels(self, levels) -> np.ndarray:
        lv = np.asarray(levels, dtype=np.float64).ravel()
        if lv.size == 0:
            raise DataError(f"{self.name}: levels is empty; expected the allowed rating values")
        if not np.all(np.isfinite(lv)):
            raise DataError(f"{self.name}: levels {format_levels(lv)} contain NaN or infinity")
        if np.any(np.diff(lv) <= 0):
            raise DataError(
                f"{self.name}: levels {format_levels(lv)} must be sorted ascending without repeats"
            )
        if len(np.unique(lv.astype(np.float32))) != len(lv):
            raise DataError(f"{self.name}: levels {format_levels(lv)} are not distinct in float32")
        return lv

    def _check_ratings(self, ratings, shape) -> sp.csr_matrix:
        if not sp.issparse(ratings):
            raise DataError(f"{self.name}: ratings must be a scipy.sparse matrix, got {type(ratings).__name__}")
        if ratings.shape != shape:
            raise DataError(
                f"{self.name}: ratings has shape {ratings.shape} but there are {shape[0]} user ids "
                f"and {shape[1]} item ids"
            )
        m = _canonical_csr(ratings, np.float32, self.name, "ratings")
        data = m.data
        if data.size and not np.all(np.isfinite(data)):
            bad = int(np.flatnonzero(~np.isfinite(data))[0])
            u = int(np.searchsorted(m.indptr, bad, side="right") - 1)
            raise DataError(
                f"{self.name}: rating of user {self.user_ids[u]!s} on item "
                f"{self.item_ids[m.indices[bad]]!s} is {data[bad]} (NaN or infinite)"
            )
        ok = np.isin(data, self.levels.astype(np.float32))
        if not np.all(ok):
            bad = int(np.flatnonzero(~ok)[0])
            u = int(np.searchsorted(m.indptr, bad, side="right") - 1)
            raise DataError(
                f"{self.name}: rating {format_value(data[bad])} of user {self.user_ids[u]!s} on item "
                f"{self.item_ids[m.indices[bad]]!s} is not one of the levels {format_levels(self.levels)} "
                f"({int((~ok).sum())} ratings are outside the levels)"
            )
        return m

    def _check_items(self, items, n_items):
        if items is None:
            return None
        if not isinstance(items, pd.DataFrame):
            raise DataError(f"{self.name}: items must be a pandas DataFrame, got {type(items).__name__}")
        if len(items) != n_items:
            raise DataError(f"{self.name}: items has {len(items)} rows but there are {n_items} item ids")
        if "title" not in items.columns:
            raise DataError(
                f"{self.name}: items needs a 'title' column; found columns {list(items.columns)}"
            )
        if not items.index.equals(pd.RangeIndex(n_items)):
            items = items.reset_index(drop=True)
        return items

    def _check_to_read(self, to_read, shape):
        if not sp.issparse(to_read):
            raise DataError(f"{self.name}: to_read must be a scipy.sparse matrix, got {type(to_read).__name__}")
        if to_read.shape != shape:
            raise DataError(
                f"{self.name}: to_read has shape {to_read.shape} but ratings has shape {shape}"
            )
        return _canonical_csr(to_read, np.bool_, self.name, "to_read")

    # ---------------------------------------------------------------- sizes
    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def nnz(self) -> int:
        return int(self.ratings.nnz)

    def __len__(self) -> int:
        return self.nnz

    def __repr__(self) -> str:
        extra = " with to_read" if self.to_read is not None else ""
        return (
            f"RatingData({self.name!r}: {self.nnz} ratings, {self.n_users} users x {self.n_items} items, "
            f"levels {format_levels(self.levels)}{extra})"
        )

    # ---------------------------------------------------------------- id maps
    def _lookup(self, what: str, ids: np.ndarray, raw_ids):
        sorter = self._sorters.get(what)
        if sorter is None:
            sorter = self._sorters[what] = np.argsort(ids, kind="stable")
        return lookup_ids(ids, raw_ids, what, self.name, sorter)

    def user_index(self, raw_ids):
        """Row index of raw user id(s): an int for a scalar, an int64 array otherwise.
        Raises KeyError naming the unknown id(s) and the data set."""
        return self._lookup("user", self.user_ids, raw_ids)

    def item_index(self, raw_ids):
        """Column index of raw item id(s): an int for a scalar, an int64 array otherwise.
        Raises KeyError naming the unknown id(s) and the data set."""
        return self._lookup("item", self.item_ids, raw_ids)

    # ---------------------------------------------------------------- derived data
    def with_ratings(self, csr) -> "RatingData":
        """The same users, items, levels and metadata with another rating matrix of the same shape
        (e.g. the train or test part of a split)."""
        return RatingData(
            csr,
            self.user_ids,
            self.item_ids,
            self.levels,
            items=self.items,
            to_read=self.to_read,
            name=self.name,
            source=self.source,
        )

    def item_counts(self) -> np.ndarray:
        """Number of ratings of each item (int64[n_items])."""
        if self._item_counts is None:
            self._item_counts = np.bincount(self.ratings.indices, minlength=self.n_items).astype(np.int64)
        return self._item_counts

    def _titles(self) -> pd.Series:
        if self.items is not None:
            return self.items["title"].astype(str)
        return pd.Series(self.item_ids.astype(str))

    def title(self, item_index) -> str:
        """Title of the item at this index ("Title by Authors" for books), or its raw id as text
        when there is no metadata."""
        i = int(item_index)
        if not -self.n_items <= i < self.n_items:
            raise IndexError(f"item index {i} is out of range for {self.name} ({self.n_items} items)")
        if self.items is None:
            return str(self.item_ids[i])
        t = str(self.items["title"].iat[i])
        if "authors" in self.items.columns:
            a = self.items["authors"].iat[i]
            if isinstance(a, str) and a:
                t = f"{t} by {a}"
        return t

    def find_items(self, text: str) -> pd.DataFrame:
        """Items whose title contains ``text`` (case-insensitive, plain substring).

        Returns a DataFrame indexed by item index ('item_index') with columns item_id (raw id),
        title, authors (books only) and n_ratings, most rated first.
        """
        titles = self._titles()
        mask = titles.str.contains(str(text), case=False, regex=False, na=False).to_numpy()
        idx = np.flatnonzero(mask)
        out = pd.DataFrame(
            {"item_id": self.item_ids[idx], "title": titles.to_numpy()[idx]},
            index=pd.Index(idx, name="item_index"),
        )
        if self.items is not None and "authors" in self.items.columns:
            out["authors"] = self.items["authors"].to_numpy()[idx]
        out["n_ratings"] = self.item_counts()[idx]
        order = np.lexsort((idx, -out["n_ratings"].to_numpy()))
        return out.iloc[order]


def lookup_ids(ids: np.ndarray, raw_ids, what: str, where: str, sorter=None):
    """Index of raw id(s) in the id map `ids`: an int for a scalar, an int64 array otherwise.

    Integer ids also match integer-valued floats (1.0 but not 1.5); text ids compare as text.
    Raises KeyError naming the unknown id(s), `what` they are (user, item) and `where` they were
    looked up."""
    scalar = np.ndim(raw_ids) == 0
    q = np.atleast_1d(np.asarray(raw_ids))
    if q.ndim != 1:
        q = q.ravel()
    found = np.zeros(len(q), dtype=bool)
    pos = np.zeros(len(q), dtype=np.int64)
    qc = _coerce_query(q, ids.dtype)
    if qc is not None and len(ids):
        if sorter is None:
            sorter = np.argsort(ids, kind="stable")
        p = np.searchsorted(ids, qc, sorter=sorter)
        p = np.minimum(p, len(ids) - 1)
        pos = sorter[p]
        found = ids[pos] == qc
    if not np.all(found):
        missing = q[~found]
        shown = ", ".join(repr(v.item() if hasattr(v, "item") else v) for v in missing[:_SHOW_IDS])
        more = f" and {len(missing) - _SHOW_IDS} more" if len(missing) > _SHOW_IDS else ""
        raise KeyError(
            f"unknown {what} id{'s' if len(missing) > 1 else ''} {shown}{more} in {where} "
            f"({len(ids)} {what}s)"
        )
    pos = pos.astype(np.int64)
    return int(pos[0]) if scalar else pos


def _coerce_query(q: np.ndarray, kind_dtype: np.dtype):
    """Query ids in the dtype of the id array, or None if none of them can match."""
    if kind_dtype.kind == "i":
        lo, hi = np.iinfo(np.int64).min, np.iinfo(np.int64).max
        if q.dtype.kind == "u":
            # ids at or above 2**63 cannot be int64 ids: they must not wrap onto negative ones
            return np.where(q > hi, lo, q.astype(np.uint64).clip(0, hi)).astype(np.int64)
        if q.dtype.kind == "i":
            return q.astype(np.int64)
        if q.dtype.kind == "f":
            out = np.full(len(q), np.iinfo(np.int64).min, dtype=np.int64)
            ok = np.isfinite(q) & (q == np.round(q))
            out[ok] = q[ok].astype(np.int64)
            return out
        if q.dtype.kind == "O":
            vals = q.tolist()
            if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in vals):
                # Python ints beyond int64 match no id (and must not raise OverflowError)
                return np.asarray([int(v) if lo < int(v) <= hi else lo for v in vals], dtype=np.int64)
        return None
    # unicode ids: compare as text
    if q.dtype.kind == "U":
        return q
    return np.asarray([str(v) for v in q.tolist()], dtype=str)


def _canonical_csr(m, dtype, name: str, what: str) -> sp.csr_matrix:
    """CSR with the given data dtype and sorted indices; explicit entries kept as they are (explicit
    zeros are not dropped). indptr and indices share one dtype (int32 while it fits, else int64):
    scipy's routines (tocoo, slicing) require that. Raises DataError on repeated entries."""
    if not sp.isspmatrix_csr(m):
        m = sp.csr_matrix(m)
    index_dtype = np.int32 if max(m.nnz, m.shape[1]) < 2**31 - 1 else np.int64
    indptr = np.asarray(m.indptr, dtype=index_dtype)
    indices = np.asarray(m.indices, dtype=index_dtype)
    data = np.asarray(m.data, dtype=dtype)
    n_rows, n_cols = m.shape
    if len(indptr) != n_rows + 1 or indptr[0] != 0 or indptr[-1] != len(indices) or len(data) != len(indices):
        raise DataError(f"{name}: {what} has an inconsistent CSR structure")
    if np.any(np.diff(indptr) < 0):
        raise DataError(f"{name}: {what} has a decreasing indptr")
    if indices.size and (indices.min() < 0 or indices.max() >= n_cols):
        raise DataError(f"{name}: {what} has column indices outside 0..{n_cols - 1}")
    # sorted and unique within each row: a non-increasing step is allowed only at a row start
    step_ok = np.diff(indices.astype(np.int64)) > 0
    row_start = np.zeros(len(indices), dtype=bool)
    starts = indptr[:-1][indptr[:-1] < len(indices)]
    row_start[starts] = True
    bad = ~step_ok & ~row_start[1:]
    if np.any(bad):
        # unsorted or repeated: sort each row, then look for repeats
        coo = sp.coo_matrix((data, (np.repeat(np.arange(n_rows), np.diff(indptr)), indices)), shape=m.shape)
        order = np.lexsort((coo.col, coo.row))
        r, c, data = coo.row[order], coo.col[order], coo.data[order]
        rep = (r[1:] == r[:-1]) & (c[1:] == c[:-1])
        if np.any(rep):
            j = int(np.flatnonzero(rep)[0])
            raise DataError(
                f"{name}: {what} holds {int(rep.sum())} repeated entries, e.g. row {int(r[j])}, "
                f"column {int(c[j])}; each (user, item) must be stored once"
            )
        indices = c.astype(index_dtype)
    out = sp.csr_matrix(m.shape, dtype=dtype)
    out.data, out.indices, out.indptr = data, indices, indptr
    out.has_sorted_indices = True
    return out
