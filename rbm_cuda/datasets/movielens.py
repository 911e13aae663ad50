"""MovieLens loaders: 100K (u.data, splits), 1M (ratings.dat) and the CSV releases (latest, 20M, 25M)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pandas as pd

from .core import RatingData, sorted_unique
from .errors import DataError
from .parsing import Origin, id_column, number_column, read_table, require_file
from .triples import check_duplicates_mode, build_rating_data

#: Rating scale of ml-100k and ml-1m (whole stars).
LEVELS_WHOLE = np.arange(1.0, 6.0)
#: Rating scale of the CSV releases (half stars 0.5 .. 5.0, K = 10).
LEVELS_HALF = np.arange(1, 11) / 2.0

#: The 19 genres of ml-100k in flag-column order, used when u.genre is absent.
GENRES_100K = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
    "War", "Western",
)  # fmt: skip

SPLITS_100K = ("u1", "u2", "u3", "u4", "u5", "ua", "ub")


def as_folder(path, what: str) -> Path:
    """``path`` as a Path to an existing folder, else DataError saying what should be there."""
    p = Path(os.path.expanduser(os.fspath(path)))
    if not p.is_dir():
        state = "does not exist" if not p.exists() else "is not a folder"
        raise DataError(f"{p} {state}; expected the {what} folder there")
    return p


def check_unique_ids(ids: np.ndarray, origin: Origin, what: str) -> np.ndarray:
    order = np.argsort(ids, kind="stable")
    s = ids[order]
    rep = np.flatnonzero(s[1:] == s[:-1])
    if len(rep):
        k = int(max(order[rep[0]], order[rep[0] + 1]))
        raise DataError(f"{origin.where(k)}: {what} id {ids[k].item()!r} is listed twice")
    return ids


# ------------------------------------------------------------------------------------------ 100K
def _read_100k_ratings(file: Path):
    df, origin = read_table(
        file,
        sep="\t",
        columns=["user", "item", "rating", "timestamp"],
        encoding="latin-1",
        quoting=csv.QUOTE_NONE,
        expected="MovieLens 100K ratings: lines of user id, item id, rating, timestamp separated by tabs",
    )
    users = id_column(df, "user", origin, "user id", integer=True)
    items = id_column(df, "item", origin, "item id", integer=True)
    ratings = number_column(df, "rating", origin, "rating")
    return users, items, ratings, origin


def _read_100k_users(folder: Path) -> np.ndarray | None:
    f = folder / "u.user"
    if not f.is_file():
        return None
    df, origin = read_table(
        f, sep="|", columns=["user", "age", "gender", "occupation", "zip"], encoding="latin-1",
        quoting=csv.QUOTE_NONE, expected="the MovieLens 100K user list (user id|age|gender|occupation|zip code)",
    )  # fmt: skip
    return check_unique_ids(id_column(df, "user", origin, "user id", integer=True), origin, "user")


def _genre_names(folder: Path) -> tuple[str, ...]:
    f = folder / "u.genre"
    if not f.is_file():
        return GENRES_100K
    names: dict[int, str] = {}
    with open(f, encoding="latin-1") as fh:
        for n, line in enumerate(fh, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            parts = line.split("|")
            if len(parts) != 2 or not parts[1].strip().isdigit():
                raise DataError(f"{f}, line {n}: expected 'genre name|index', found {line!r}")
            names[int(parts[1])] = parts[0]
    if sorted(names) != list(range(len(GENRES_100K))):
        raise DataError(
            f"{f}: expected genres numbered 0..{len(GENRES_100K) - 1}, found indices {sorted(names)}"
        )
    return tuple(names[i] for i in range(len(GENRES_100K)))


def _read_100k_items(folder: Path):
    """(sorted item ids, metadata indexed by item id) from u.item, or (None, None)."""
    f = folder / "u.item"
    if not f.is_file():
        return None, None
    genres = _genre_names(folder)
    flags = [f"g{i}" for i in range(len(genres))]
    df, origin = read_table(
        f, sep="|", columns=["item", "title", "release_date", "video_release_date", "imdb_url", *flags],
        encoding="latin-1", quoting=csv.QUOTE_NONE,
        expected=f"the MovieLens 100K item list (item id|title|release date|video release date|IMDb URL|{len(flags)} genre flags)",
    )  # fmt: skip
    ids = check_unique_ids(id_column(df, "item", origin, "item id", integer=True), origin, "item")
    flag_values = np.empty((len(df), len(flags)), dtype=bool)
    for j, c in enumerate(flags):
        v = pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isin(v, (0.0, 1.0))
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{origin.where(k)}: genre flag for {genres[j]!r} is {df[c].iloc[k]!r}; expected 0 or 1"
            )
        flag_values[:, j] = v == 1.0
    names = np.asarray(genres, dtype=object)
    table = pd.DataFrame(
        {
            "title": df["title"].astype(str).str.strip().to_numpy(),
            "genres": ["|".join(names[row]) for row in flag_values],
            "release_date": df["release_date"].astype(str).to_numpy(),
            "imdb_url": df["imdb_url"].astype(str).to_numpy(),
        },
        index=ids,
    )
    return np.sort(ids), table


def load_movielens_100k(path, duplicates: str = "error") -> RatingData:
    """MovieLens 100K from its folder: ratings of ``u.data`` (1..5 stars), titles and genres from
    ``u.item`` (latin-1). The maps cover all users of ``u.user`` and all items of ``u.item`` when
    those files are there, else the ids seen in ``u.data``."""
    check_duplicates_mode(duplicates)
    folder = as_folder(path, "MovieLens 100K (ml-100k)")
    data = require_file(folder / "u.data", "the MovieLens 100K ratings (u.data)")
    users, items, ratings, origin = _read_100k_ratings(data)
    user_universe = _read_100k_users(folder)
    item_universe, table = _read_100k_items(folder)
    return build_rating_data(
        users, items, ratings, origin=origin, name="ml-100k", source=str(folder),
        levels=LEVELS_WHOLE, duplicates=duplicates,
        user_universe=user_universe, item_universe=item_universe,
        user_label=str(folder / "u.user"), item_label=str(folder / "u.item"), item_table=table,
    )  # fmt: skip


def load_movielens_100k_split(path, split: str, duplicates: str = "error") -> tuple[RatingData, RatingData]:
    """(train, test) of one of the ml-100k splits u1..u5, ua, ub (``<split>.base`` and
    ``<split>.test``). Both use the full id maps (u.user / u.item, else the ids of u.data, else
    those of both files), so an index means the same user or item in train and test."""
    check_duplicates_mode(duplicates)
    if split not in SPLITS_100K:
        raise ValueError(f"split must be one of {', '.join(SPLITS_100K)}; got {split!r}")
    folder = as_folder(path, "MovieLens 100K (ml-100k)")
    base = require_file(folder / f"{split}.base", f"the training part of the ml-100k split {split}")
    test = require_file(folder / f"{split}.test", f"the test part of the ml-100k split {split}")
    parts = [_read_100k_ratings(base), _read_100k_ratings(test)]
    user_universe = _read_100k_users(folder)
    item_universe, table = _read_100k_items(folder)
    user_label, item_label = str(folder / "u.user"), str(folder / "u.item")
    if user_universe is None or item_universe is None:
        if (folder / "u.data").is_file():
            u, i, _, _ = _read_100k_ratings(folder / "u.data")
            seen_u, seen_i, label = [u], [i], str(folder / "u.data")
        else:
            seen_u, seen_i, label = [p[0] for p in parts], [p[1] for p in parts], f"{base} and {test}"
        if user_universe is None:
            user_universe, user_label = sorted_unique(np.concatenate(seen_u)), label
        if item_universe is None:
            item_universe, item_label = sorted_unique(np.concatenate(seen_i)), label
    out = []
    for file, (users, items, ratings, origin) in zip((base, test), parts):
        out.append(
            build_rating_data(
                users, items, ratings, origin=origin, name="ml-100k", source=str(file),
                levels=LEVELS_WHOLE, duplicates=duplicates,
                user_universe=user_universe, item_universe=item_universe,
                user_label=user_label, item_label=item_label, item_table=table,
            )  # fmt: skip
        )
    return out[0], out[1]


# ------------------------------------------------------------------------------------------ 1M
def _read_dat(file: Path, columns: list[str], expected: str):
    """A '::'-separated latin-1 file of ml-1m / ml-10m (read by the C parser after turning '::'
    into tabs)."""
    require_file(file, expected)
    raw = file.read_bytes()
    tab = raw.find(b"\t")
    if tab >= 0:  # a tab would pass for a separator once '::' became tabs: report its line now
        start = raw.rfind(b"\n", 0, tab) + 1
        end = raw.find(b"\n", tab)
        text = raw[start: end if end >= 0 else len(raw)].decode("latin-1").rstrip("\r")
        found = len(text.split("::"))
        line = raw.count(b"\n", 0, tab) + 1
        detail = (
            f"expected {len(columns)} fields separated by '::', found {found}: {text!r}"
            + ("; is the separator '\\t'?" if found != len(columns) else "; it holds a tab")
        )
        raise DataError(f"{file}, line {line}: {detail}")
    return read_table(
        file, sep="\t", columns=columns, encoding="latin-1", content=raw.replace(b"::", b"\t"),
        display_sep="::", quoting=csv.QUOTE_NONE, expected=expected,
    )  # fmt: skip


def read_movies_dat(file) -> tuple[np.ndarray, pd.DataFrame]:
    """(sorted movie ids, metadata with title and genres indexed by movie id) from ml-1m's
    ``movies.dat`` (MovieID::Title::Genres, latin-1)."""
    df, origin = _read_dat(Path(file), ["item", "title", "genres"], "the MovieLens 1M movie list (movies.dat)")
    ids = check_unique_ids(id_column(df, "item", origin, "movie id", integer=True), origin, "movie")
    table = pd.DataFrame(
        {"title": df["title"].astype(str).to_numpy(), "genres": df["genres"].astype(str).to_numpy()}, index=ids
    )
    return np.sort(ids), table


def load_movielens_1m(path, duplicates: str = "error") -> RatingData:
    """MovieLens 1M from its folder: ``ratings.dat`` (UserID::MovieID::Rating::Timestamp, 1..5
    stars), titles and genres from ``movies.dat`` (latin-1). The maps cover all users of
    ``users.dat`` and all movies of ``movies.dat`` when present, else the ids rated."""
    check_duplicates_mode(duplicates)
    folder = as_folder(path, "MovieLens 1M (ml-1m)")
    df, origin = _read_dat(
        folder / "ratings.dat", ["user", "item", "rating", "timestamp"],
        "the MovieLens 1M ratings (ratings.dat: UserID::MovieID::Rating::Timestamp)",
    )  # fmt: skip
    users = id_column(df, "user", origin, "user id", integer=True)
    items = id_column(df, "item", origin, "movie id", integer=True)
    ratings = number_column(df, "rating", origin, "rating")
    user_universe = None
    if (folder / "users.dat").is_file():
        udf, uorigin = _read_dat(
            folder / "users.dat", ["user", "gender", "age", "occupation", "zip"], "the MovieLens 1M user list"
        )
        user_universe = check_unique_ids(id_column(udf, "user", uorigin, "user id", integer=True), uorigin, "user")
    item_universe = table = None
    if (folder / "movies.dat").is_file():
        item_universe, table = read_movies_dat(folder / "movies.dat")
    return build_rating_data(
        users, items, ratings, origin=origin, name="ml-1m", source=str(folder),
        levels=LEVELS_WHOLE, duplicates=duplicates,
        user_universe=user_universe, item_universe=item_universe,
        user_label=str(folder / "users.dat"), item_label=str(folder / "movies.dat"), item_table=table,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------ CSV releases
def find_file(folder: Path, name: str) -> Path | None:
    """``folder/name``, else ``folder/name.gz``, else None."""
    for p in (folder / name, folder / (name + ".gz")):
        if p.is_file():
            return p
    return None


def read_movies_csv(file) -> tuple[np.ndarray, pd.DataFrame]:
    """(sorted movie ids, metadata with title and genres indexed by movie id) from a
    ``movies.csv`` (movieId,title,genres; quoted titles may hold commas)."""
    df, origin = read_table(
        file, sep=",", required=["movieId", "title", "genres"], all_fields=False,
        expected="a MovieLens movie list (movies.csv with columns movieId,title,genres)",
    )  # fmt: skip
    ids = check_unique_ids(id_column(df, "movieId", origin, "movie id", integer=True), origin, "movie")
    table = pd.DataFrame(
        {"title": df["title"].astype(str).to_numpy(), "genres": df["genres"].astype(str).to_numpy()}, index=ids
    )
    return np.sort(ids), table


def load_movielens_csv(path, duplicates: str = "error", name: str | None = None) -> RatingData:
    """A MovieLens CSV release from its folder (ml-latest-small, ml-latest, ml-20m, ml-25m):
    ``ratings.csv`` (userId,movieId,rating,timestamp; half stars, levels 0.5..5.0) and
    ``movies.csv`` (movieId,title,genres). ``.csv.gz`` files are read too. The item map covers all
    movies of movies.csv when present (also unrated ones), the user map the users who rated."""
    check_duplicates_mode(duplicates)
    folder = as_folder(path, "MovieLens CSV release (ratings.csv, movies.csv)")
    rfile = find_file(folder, "ratings.csv") or folder / "ratings.csv"
    df, origin = read_table(
        rfile, sep=",", required=["userId", "movieId", "rating"],
        expected="MovieLens ratings (ratings.csv with columns userId,movieId,rating,timestamp)",
    )  # fmt: skip
    users = id_column(df, "userId", origin, "user id", integer=True)
    items = id_column(df, "movieId", origin, "movie id", integer=True)
    ratings = number_column(df, "rating", origin, "rating")
    item_universe = table = None
    mfile = find_file(folder, "movies.csv")
    if mfile is not None:
        item_universe, table = read_movies_csv(mfile)
    return build_rating_data(
        users, items, ratings, origin=origin, name=name or folder.resolve().name, source=str(folder),
        levels=LEVELS_HALF, duplicates=duplicates, item_universe=item_universe,
        item_label=str(mfile), item_table=table,
    )  # fmt: skip
