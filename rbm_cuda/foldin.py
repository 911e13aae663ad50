"""Recommendations for people: histories of new users (fold-in), items by title, similar items, CSV.

A *history* is one person's ratings, written as ``"ITEM=RATING,ITEM=RATING"`` or kept in a small CSV
file.  ITEM is a raw item id or an exact title (``id:ITEM`` / ``title:ITEM`` force one reading).  It
is mapped onto the model's item space; entries the model does not know are kept and reported, never
dropped silently.  The known entries form a 1-row rating matrix whose mean-field hidden
probabilities score every item (``RBM.recommend_for``): no retraining.

Everything here works from a saved model alone (ids, titles, authors and genres are in the model file),
except to-read lists, which live in the data (``rbm_cuda.datasets``).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

# Header names recognised in history files (lower case).
ITEM_COLUMNS = ("item_id", "item", "book_id", "movie_id", "movieid", "itemid", "id", "isbn")
TITLE_COLUMNS = ("title", "book", "movie", "name")
RATING_COLUMNS = ("rating", "ratings", "score", "stars")
USER_COLUMNS = ("user_id", "user", "userid")


@dataclass
class HistoryEntry:
    """One rated item as given by the person: key (id or title text), rating text, and where."""

    key: str
    rating: str
    where: str


@dataclass
class Resolved:
    """A history mapped onto the model's items.

    index / ratings: model item indices and ratings of the known entries (parallel arrays, no
    repeats); known: their entries; unknown: [(entry, reason)] for entries the model does not know;
    notes: remarks on how entries were read (ambiguities, repeated items)."""

    index: np.ndarray
    ratings: np.ndarray
    known: list = field(default_factory=list)
    unknown: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    def row(self, n_items: int) -> sp.csr_matrix:
        return sp.csr_matrix((self.ratings.astype(np.float32), (np.zeros(len(self.index), dtype=np.int64),
                                                               self.index)), shape=(1, n_items))


# -- reading histories ----------------------------------------------------------------------------
def parse_history(text: str) -> list[HistoryEntry]:
    """Entries of ``"ITEM=RATING,ITEM=RATING"`` (commas or new lines between entries).

    Titles may contain commas ("Usual Suspects, The (1995)=5"): a piece without "=" is the start of
    the next entry's title.  The rating is what follows the last "=" of an entry."""
    pieces = [p for line in str(text).splitlines() for p in line.split(",")]
    entries, pending = [], []
    for piece in pieces:
        if "=" not in piece:
            if piece.strip() or pending:  # blank pieces between entries (",," or a trailing ",") are skipped
                pending.append(piece)
            continue
        whole = ",".join(pending + [piece])
        pending = []
        key, _, rating = whole.rpartition("=")
        entries.append(HistoryEntry(key.strip(), rating.strip(), f"entry {len(entries) + 1}"))
    left = ",".join(pending).strip()
    if left:
        raise ValueError(f"history {left!r} has no rating: write ITEM=RATING, e.g. \"50=5,Toy Story (1995)=4\"")
    if not entries:
        raise ValueError("the history is empty: write ITEM=RATING pairs, e.g. \"50=5,Toy Story (1995)=4\"")
    return entries


def read_history_file(path) -> list[HistoryEntry]:
    """Entries of a CSV (comma, semicolon or tab separated) holding one person's ratings.

    With a header: an item id column (item_id, item, book_id, movie_id, id, ...) and/or a title
    column (title, book, movie), and a rating column (rating, score, stars); a user_id column is
    allowed if it holds one user only.  Without a header: two columns, ITEM,RATING."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"history file {path} does not exist")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            text = f.read()
    except UnicodeDecodeError:
        with open(path, newline="", encoding="latin-1") as f:
            text = f.read()
    lines = text.splitlines()
    first = next((ln for ln in lines if ln.strip()), "")
    if not first:
        raise ValueError(f"history file {path} is empty: expected ITEM,RATING lines")
    sep = "\t" if "\t" in first else ";" if (";" in first and "," not in first) else ","
    reader = csv.reader(lines, delimiter=sep)
    rows = [(reader.line_num, r) for r in reader if any(c.strip() for c in r)]
    head = [c.strip().lower() for c in rows[0][1]]
    label = os.path.basename(path)

    def pick(names):
        return next((head.index(n) for n in names if n in head), None)

    item_col, title_col, rating_col = pick(ITEM_COLUMNS), pick(TITLE_COLUMNS), pick(RATING_COLUMNS)
    if rating_col is not None and (item_col is not None or title_col is not None):
        body = rows[1:]
        user_col = pick(USER_COLUMNS)
        if user_col is not None:
            users = {r[user_col].strip() for _, r in body if len(r) > user_col}
            if len(users) > 1:
                raise ValueError(f"history file {path} holds ratings of {len(users)} users (column "
                                 f"{rows[0][1][user_col]!r}); a history file is one person's ratings")
        key_col = item_col if item_col is not None else title_col
        prefix = "" if item_col is not None else "title:"
    elif len(head) == 2 and not _is_number(head[1]) and len(rows) > 1:
        raise ValueError(f"history file {path}: cannot tell the columns of header {rows[0][1]!r}; "
                         f"name them item_id (or title) and rating, or leave the header out")
    else:
        body, key_col, rating_col, prefix = rows, 0, 1, ""
    entries = []
    for line, r in body:
        if len(r) <= max(key_col, rating_col):
            raise ValueError(f"history file {label}, line {line}: expected ITEM{sep}RATING, got {sep.join(r)!r}")
        key = r[key_col].strip()
        if not key:
            raise ValueError(f"history file {label}, line {line}: the item is empty")
        entries.append(HistoryEntry(prefix + key, r[rating_col].strip(), f"{label}, line {line}"))
    if not entries:
        raise ValueError(f"history file {path} has a header but no ratings")
    return entries


def _is_number(text) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


# -- items of a model -------------------------------------------------------------------------------
class ItemLookup:
    """Raw item ids and titles of a fitted/loaded RBM, for finding items and showing them."""

    def __init__(self, model):
        self.model = model
        self.ids = np.asarray(model.item_ids_)
        items = getattr(model, "items_", None)
        self.has_titles = items is not None and "title" in items.columns
        n = len(self.ids)
        self.titles = (items["title"].fillna("").astype(str).to_numpy() if self.has_titles
                       else self.ids.astype(str))
        self.authors = (items["authors"].fillna("").astype(str).to_numpy()
                        if items is not None and "authors" in items.columns else None)
        self.genres = (items["genres"].fillna("").astype(str).to_numpy()
                       if items is not None and "genres" in items.columns else None)
        self._exact = None
        self._folded = None
        self._by_id = {}  # the first index of each id: a server looks up every rating
        for i, v in enumerate(self.ids.tolist()):
            self._by_id.setdefault(v, i)
        self.n_ratings = np.bincount(model.train_.indices, minlength=n).astype(np.int64)

    def _title_maps(self):
        if self._exact is None:
            self._exact, self._folded = {}, {}
            if self.has_titles:
                for i, t in enumerate(self.titles):
                    self._exact.setdefault(t, []).append(i)
                    self._folded.setdefault(_fold(t), []).append(i)
        return self._exact, self._folded

    def id_index(self, key):
        """Index of the raw id written as text `key`, or None."""
        if self.ids.dtype.kind in "iu":
            try:
                value = int(str(key).strip())
            except ValueError:
                return None
        else:
            value = str(key).strip()
        return self._by_id.get(value)

    def title_indices(self, text) -> list[int]:
        """Items whose title is exactly `text`; failing that, equal ignoring case and spacing."""
        exact, folded = self._title_maps()
        text = str(text).strip()
        return exact.get(text) or folded.get(_fold(text), [])

    def resolve(self, key) -> tuple[int | None, str]:
        """(index, note) for an item key: a raw id, an exact title, or id:KEY / title:KEY.

        index None: the note says why (unknown, or a title naming several items).  A plain key is
        an id first; when it is also another item's title the note says so."""
        key = str(key).strip()
        kind = None
        low = key.lower()
        for p in ("id:", "title:"):
            if low.startswith(p):
                kind, key = p[:-1], key[len(p):].strip()
        by_id = None if kind == "title" else self.id_index(key)
        by_title = [] if kind == "id" else self.title_indices(key)
        if by_id is not None:
            others = [i for i in by_title if i != by_id]
            note = ""
            if others:
                note = (f"{key!r} was read as item id {self.ids[by_id]} ({self.label(by_id)}); "
                        f"write title:{key} for the item titled {key!r} (id {self.ids[others[0]]})")
            return by_id, note
        if len(by_title) == 1:
            return by_title[0], ""
        if len(by_title) > 1:
            shown = ", ".join(str(self.ids[i]) for i in by_title[:5])
            return None, f"the title names {len(by_title)} items (ids {shown}): give an id instead"
        what = {"id": "no item with this id", "title": "no item with this title"}.get(
            kind, "no item with this id or title" if self.has_titles
            else "no item with this id (the model has no titles)")
        if kind != "id" and "," in key:
            what += " (a missing =RATING?)"
        near = self.suggest(key) if kind != "id" else []
        if near:
            what += "; did you mean " + " or ".join(f"{self.titles[i]!r} (id {self.ids[i]})" for i in near) + "?"
        return None, what

    def suggest(self, text, n=3) -> list[int]:
        """Up to n items whose title contains `text`: titles starting with it first, then most rated;
        else close spellings."""
        if not self.has_titles or not str(text).strip():
            return []
        low = _fold(text)
        folded_titles = [_fold(t) for t in self.titles]
        hit = np.flatnonzero([low in t for t in folded_titles])
        if len(hit):
            starts = np.array([not folded_titles[i].startswith(low) for i in hit])
            return hit[np.lexsort((hit, -self.n_ratings[hit], starts))][:n].tolist()
        import difflib

        exact, folded = self._title_maps()
        close = difflib.get_close_matches(low, list(folded), n=n, cutoff=0.75)
        return [folded[c][0] for c in close]

    def index_of(self, key) -> int:
        """Index of an item key (id or exact title); KeyError / ValueError with a readable message."""
        i, note = self.resolve(key)
        if i is None:
            if note.startswith("the title names"):
                raise ValueError(f"{key!r}: {note}")
            hint = "" if "did you mean" in note or not self.has_titles else "; find ids with --find TEXT"
            raise KeyError(f"unknown item {key!r} (the model knows {len(self.ids)} items): {note}{hint}")
        return i

    def label(self, i) -> str:
        """Title, with authors for books ("" when the model has no titles)."""
        if not self.has_titles:
            return ""
        t = self.titles[i]
        if self.authors is not None and self.authors[i]:
            t = f"{t} by {self.authors[i]}"
        return t

    def describe(self, i) -> str:
        """'ID (Title by Authors)', or 'ID' without titles."""
        label = self.label(i)
        return f"{self.ids[i]} ({label})" if label else str(self.ids[i])

    def frame(self, index, **columns) -> pd.DataFrame:
        """A table of items: item_id, title, authors/genres when known, then `columns`."""
        index = np.asarray(index, dtype=np.int64)
        out = {"item_id": self.ids[index], "title": self.titles[index]}
        if self.authors is not None:
            out["authors"] = self.authors[index]
        if self.genres is not None:
            out["genres"] = self.genres[index]
        out.update(columns)
        return pd.DataFrame(out)

    def find(self, text) -> pd.DataFrame:
        """Items whose title contains `text` (case-insensitive, plain substring; an item id matches
        too), most rated in training first: item_id, title, authors, n_ratings."""
        text = str(text).strip()
        if not text:
            raise ValueError("--find needs some text to look for")
        hit = np.array([text.lower() in t.lower() for t in self.titles], dtype=bool)
        i = self.id_index(text)
        if i is not None:
            hit[i] = True
        idx = np.flatnonzero(hit)
        idx = idx[np.lexsort((idx, -self.n_ratings[idx]))]
        return self.frame(idx, n_ratings=self.n_ratings[idx]).set_index(pd.Index(idx, name="item_index"))


def _fold(text: str) -> str:
    return " ".join(str(text).split()).casefold()


def resolve_history(model, entries) -> Resolved:
    """Map history entries onto the model's items; ratings must be on the model's levels.

    Unknown items go to .unknown with the reason; an item named twice keeps its last rating (noted).
    Raises ValueError for a rating that is not a number or not one of the model's levels."""
    look = ItemLookup(model)
    levels = np.asarray(model.levels_, dtype=np.float64)
    chosen: dict[int, tuple[float, HistoryEntry]] = {}
    res = Resolved(np.zeros(0, dtype=np.int64), np.zeros(0))
    for e in entries:
        try:
            r = float(e.rating)
        except ValueError:
            raise ValueError(f"history {e.where} ({e.key}={e.rating}): the rating {e.rating!r} "
                             "is not a number") from None
        if not np.any(np.isclose(levels, r, rtol=0, atol=1e-6)):
            raise ValueError(f"history {e.where} ({e.key}={e.rating}): rating {e.rating} is not one of the model's "
                             f"levels {_levels_text(levels)}")
        r = float(levels[np.argmin(np.abs(levels - r))])
        i, note = look.resolve(e.key)
        if i is None:
            res.unknown.append((e, note))
            continue
        if note:
            res.notes.append(note)
        if i in chosen:
            res.notes.append(f"item {look.describe(i)} is rated twice; "
                             f"the last rating, {e.rating}, is used")
            del chosen[i]
        chosen[i] = (r, e)
    res.index = np.fromiter(chosen, dtype=np.int64, count=len(chosen))
    res.ratings = np.array([v[0] for v in chosen.values()], dtype=np.float64)
    res.known = [v[1] for v in chosen.values()]
    return res


def _levels_text(levels) -> str:
    return "[" + ", ".join(np.format_float_positional(float(v), trim="-") for v in levels) + "]"


def fold_in(model, entries, n=10, items=None):
    """Recommendations for a new person: (Resolved, item ids, scores) from their history entries
    (see parse_history / read_history_file).  Raises ValueError when no entry is known."""
    res = resolve_history(model, entries)
    if len(res.index) == 0:
        shown = ", ".join(repr(e.key) for e, _ in res.unknown[:5])
        more = f" and {len(res.unknown) - 5} more" if len(res.unknown) > 5 else ""
        raise ValueError(f"none of the {len(res.unknown)} history items is known to the model ({shown}{more}); "
                         "find ids with --find TEXT")
    from .recommender import RBMRecommender

    row = res.row(model.n_items_)
    if isinstance(model, RBMRecommender):
        ids, scores = model.recommend(histories=row, n=n, items=items)
        return res, ids[0][scores[0] == scores[0]], scores[0][scores[0] == scores[0]]
    ids, scores = model.recommend_for(row, n=n, items=items)
    return res, ids, scores


# -- data for to-read candidates ----------------------------------------------------------------------
def check_data_matches(model, data, model_label="the model") -> str:
    """Raise ValueError when `data` is not the data set the model was trained on (different item
    ids).  Returns a note (or "") when only the names differ."""
    mname = getattr(model, "dataset_name_", "") or "an unnamed data set"
    dname = getattr(data, "name", "") or "unnamed"
    a, b = np.asarray(model.item_ids_), np.asarray(data.item_ids)
    same = len(a) == len(b) and (a.dtype.kind in "iu") == (b.dtype.kind in "iu") and bool(np.all(a == b))
    if not same:
        raise ValueError(f"{model_label} was trained on {mname!r} ({len(a)} items) but the data is {dname!r} "
                         f"({len(b)} items, different item ids): give the data set the model was trained on")
    if getattr(model, "dataset_name_", "") and data.name and model.dataset_name_ != data.name:
        return (f"note: {model_label} names its data set {model.dataset_name_!r}, the data is {data.name!r}; "
                "the item ids agree")
    return ""


def to_read_items(model, data, user) -> np.ndarray:
    """Raw item ids on `user`'s to-read list in `data` (a RatingData with .to_read)."""
    if getattr(data, "to_read", None) is None:
        raise ValueError(f"data set {data.name!r} has no to-read lists (goodbooks-10k has them)")
    u = data.user_index(coerce_id(user, np.asarray(data.user_ids)))
    tr = data.to_read
    cols = tr.indices[tr.indptr[u]:tr.indptr[u + 1]]
    return np.asarray(data.item_ids)[cols]


def coerce_id(text, ids):
    """A raw id given as text, in the type of `ids` (unknown text stays text, so lookups say 'unknown')."""
    if isinstance(text, str) and np.asarray(ids).dtype.kind in "iu":
        try:
            return int(text.strip())
        except ValueError:
            return text
    return text


# -- export -----------------------------------------------------------------------------------------
def write_csv(frame: pd.DataFrame, path) -> str:
    """Write a table as UTF-8 CSV (no index); returns the path."""
    path = os.fspath(path)
    frame.to_csv(path, index=False)
    return path
