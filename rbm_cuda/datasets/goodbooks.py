"""goodbooks-10k loader: books.csv, ratings (v2 ratings.csv or v1/ratings.csv) and to-read lists."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from .core import RatingData, sorted_unique
from .errors import DataError
from .movielens import LEVELS_WHOLE, as_folder, check_unique_ids
from .parsing import id_column, number_column, read_table, require_file
from .triples import bool_matrix, build_rating_data, check_duplicates_mode

#: Ratings files tried in order when ``ratings`` is None: v2 (user_id,book_id,rating), then v1
#: (book_id,user_id,rating). The column order is taken from the header either way.
RATINGS_FILES = ("ratings.csv", "v1/ratings.csv")
#: To-read files tried in order (to_read.sorted.csv is a copy of to_read.csv sorted by user, book).
TO_READ_FILES = ("to_read.csv", "to_read.sorted.csv")

#: books.csv columns kept as item metadata (title first).
BOOK_COLUMNS = ("title", "authors", "original_title", "original_publication_year", "goodreads_book_id")


def read_books(file) -> tuple[np.ndarray, pd.DataFrame]:
    """(sorted book ids, metadata indexed by book_id) from goodbooks-10k's books.csv."""
    df, origin = read_table(
        file, sep=",", required=["book_id", "title", "authors"], all_fields=False,
        expected="the goodbooks-10k book list (books.csv with columns book_id, title, authors, ...)",
    )  # fmt: skip
    ids = check_unique_ids(id_column(df, "book_id", origin, "book id", integer=True), origin, "book")
    cols = [c for c in BOOK_COLUMNS if c in df.columns]
    table = pd.DataFrame({c: df[c].to_numpy() for c in cols}, index=ids)
    for c in ("title", "authors", "original_title"):
        if c in table.columns:
            table[c] = table[c].astype(str)
    for c in ("original_publication_year", "goodreads_book_id"):
        if c in table.columns:  # numbers; an empty field becomes NaN
            table[c] = pd.to_numeric(table[c], errors="coerce")
    return np.sort(ids), table


def _resolve(folder: Path, given, candidates) -> Path | None:
    if given is not None:
        p = Path(os.path.expanduser(os.fspath(given)))
        return p if p.is_absolute() else folder / p
    for name in candidates:
        if (folder / name).is_file():
            return folder / name
    return None


def load_goodbooks(path, ratings=None, duplicates: str = "error", to_read=True) -> RatingData:
    """goodbooks-10k from its folder.

    Items are the 10,000 books of ``books.csv`` (book_id 1..10000; title, authors, ...).
    ``ratings``: the ratings file, relative to the folder or absolute; None tries ``ratings.csv``
    (v2) then ``v1/ratings.csv`` (v1). The column order (user_id,book_id or book_id,user_id) is
    read from the header. v1 holds 2,278 surplus rows of repeated (user, book) pairs, 633 of them
    conflicting, so it needs ``duplicates='last'`` or ``'mean'`` (the default 'error' raises).
    ``to_read``: True loads ``to_read.csv`` or ``to_read.sorted.csv`` when present, False skips
    it, or a path. Users are those who rated or listed a book to read.
    """
    check_duplicates_mode(duplicates)
    folder = as_folder(path, "goodbooks-10k")
    books = require_file(folder / "books.csv", "the goodbooks-10k book list (books.csv)")
    item_universe, table = read_books(books)
    rfile = _resolve(folder, ratings, RATINGS_FILES)
    if rfile is None:
        raise DataError(
            f"{folder} has no ratings file; expected {' or '.join(str(folder / n) for n in RATINGS_FILES)} "
            f"(goodbooks-10k ratings with columns user_id, book_id, rating)"
        )
    df, origin = read_table(
        rfile, sep=",", required=["user_id", "book_id", "rating"],
        expected="goodbooks-10k ratings (columns user_id, book_id, rating in any order)",
    )  # fmt: skip
    users = id_column(df, "user_id", origin, "user id", integer=True)
    books_rated = id_column(df, "book_id", origin, "book id", integer=True)
    values = number_column(df, "rating", origin, "rating")
    del df
    tr_file = None
    if to_read is True:
        tr_file = _resolve(folder, None, TO_READ_FILES)
    elif to_read not in (False, None):
        tr_file = _resolve(folder, to_read, ())
    tr_users = tr_books = tr_origin = None
    if tr_file is not None:
        tdf, tr_origin = read_table(
            tr_file, sep=",", required=["user_id", "book_id"],
            expected="goodbooks-10k to-read lists (columns user_id, book_id)",
        )  # fmt: skip
        tr_users = id_column(tdf, "user_id", tr_origin, "user id", integer=True)
        tr_books = id_column(tdf, "book_id", tr_origin, "book id", integer=True)
    user_universe = sorted_unique(users if tr_users is None else np.concatenate([users, tr_users]))
    tr = None
    if tr_users is not None:
        tr = bool_matrix(
            tr_users, tr_books, user_universe, item_universe, tr_origin, "the users", str(books)
        )
    return build_rating_data(
        users, books_rated, values, origin=origin, name="goodbooks-10k", source=str(folder),
        levels=LEVELS_WHOLE, duplicates=duplicates,
        user_universe=user_universe, item_universe=item_universe,
        user_label="the users", item_label=str(books), item_table=table, to_read=tr,
    )  # fmt: skip
