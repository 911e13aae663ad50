"""Rating data from any table: a pandas DataFrame or a delimited text file with a header."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from .core import RatingData
from .errors import DataError
from .parsing import Origin, id_column, number_column, read_table
from .triples import check_duplicates_mode, build_rating_data


def from_dataframe(
    df: pd.DataFrame,
    user_col: str = "user",
    item_col: str = "item",
    rating_col: str = "rating",
    levels=None,
    duplicates: str = "error",
    name: str = "dataframe",
    items: pd.DataFrame | None = None,
    source: str | None = None,
    _origin: Origin | None = None,
) -> RatingData:
    """RatingData from a table with one row per rating.

    Parameters
    ----------
    df : DataFrame with the user, item and rating columns (other columns are ignored).
    levels : allowed rating values; None infers the sorted distinct ratings. A rating outside
        given levels is a DataError naming its row.
    duplicates : what to do with a (user, item) pair that has several rows: 'error' (default;
        DataError giving the counts and one example), 'last' (keep the last row) or 'mean'
        (average them; a mean that is not a level, e.g. 4.5 on a 1..5 scale, is added to the
        levels with a warning).
    items : optional item metadata, one row per raw item id, indexed by raw item id or with a
        column named ``item_col``, and with a 'title' column. The item map then covers all its
        ids, and every rated item must be among them.

    Raw ids stay int64 when they are all integers, else they become text.
    """
    check_duplicates_mode(duplicates)
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df must be a pandas DataFrame, got {type(df).__name__}")
    origin = _origin or Origin(name, positions=df.index)
    missing = [c for c in (user_col, item_col, rating_col) if c not in df.columns]
    if missing:
        raise DataError(
            f"{origin.label}: missing column{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}; "
            f"found columns {list(df.columns)}; pass user_col, item_col and rating_col to name them"
        )
    if len(df) == 0:
        raise DataError(f"{origin.label}: no ratings; the data set is empty")
    users = id_column(df, user_col, origin, "user id", integer=False)
    item_ids_raw = id_column(df, item_col, origin, "item id", integer=False)
    ratings = number_column(df, rating_col, origin, "rating")
    item_universe = item_table = None
    if items is not None:
        item_universe, item_table = _item_table(items, item_col, name)
    return build_rating_data(
        users,
        item_ids_raw,
        ratings,
        origin=origin,
        name=name,
        source=source if source is not None else name,
        levels=levels,
        duplicates=duplicates,
        item_universe=item_universe,
        item_label="the items table",
        item_table=item_table,
    )


def _item_table(items: pd.DataFrame, item_col: str, name: str):
    if not isinstance(items, pd.DataFrame):
        raise TypeError(f"items must be a pandas DataFrame, got {type(items).__name__}")
    if item_col in items.columns:
        items = items.set_index(item_col)
    if "title" not in items.columns:
        raise DataError(f"{name}: the items table needs a 'title' column; found {list(items.columns)}")
    origin = Origin(f"{name} items table")
    ids = id_column(pd.DataFrame({"id": items.index.to_numpy()}), "id", origin, "item id", integer=False)
    uniq, counts = np.unique(ids, return_counts=True)
    if np.any(counts > 1):
        raise DataError(f"{name}: the items table lists item id {uniq[counts > 1][0].item()!r} more than once")
    table = items.copy()
    table.index = ids
    return ids, table


def load_csv(
    path,
    user_col: str = "user",
    item_col: str = "item",
    rating_col: str = "rating",
    sep: str = ",",
    levels=None,
    duplicates: str = "error",
    name: str | None = None,
    encoding: str = "utf-8",
    items: pd.DataFrame | None = None,
) -> RatingData:
    """RatingData from a delimited text file with a header line naming its columns.

    Errors name the file and the line as numbered in the file (header = line 1). See
    ``from_dataframe`` for ``levels``, ``duplicates`` and ``items``. ``.gz`` files are read too.
    """
    check_duplicates_mode(duplicates)
    path = Path(os.path.expanduser(os.fspath(path)))
    df, origin = read_table(
        path,
        sep=sep,
        required=[user_col, item_col, rating_col],
        encoding=encoding,
        expected=f"a table of ratings with a header line naming columns {user_col}, {item_col}, {rating_col}",
    )
    return from_dataframe(
        df,
        user_col,
        item_col,
        rating_col,
        levels=levels,
        duplicates=duplicates,
        name=name or path.name,
        items=items,
        source=str(path),
        _origin=origin,
    )
