"""The copy of MovieLens ml-latest-small shipped inside the package (see rbm_cuda/data/NOTICE.md)."""

from __future__ import annotations

from pathlib import Path

from .core import RatingData
from .errors import DataError

BUNDLED_NAME = "ml-latest-small"
#: The files shipped: GroupLens' ratings.csv and movies.csv, gzip-compressed, unchanged otherwise.
BUNDLED_FILES = ("ratings.csv.gz", "movies.csv.gz")


def bundled_path() -> Path:
    """Folder of the embedded ml-latest-small (ratings.csv.gz and movies.csv.gz)."""
    return Path(__file__).resolve().parent.parent / "data" / BUNDLED_NAME


def load_bundled(duplicates: str = "error") -> RatingData:
    """The embedded MovieLens ml-latest-small: 100,836 ratings (0.5..5.0 stars) of 610 users on
    9,742 movies (generated 2018-09-26 by GroupLens; terms in rbm_cuda/data/NOTICE.md)."""
    from .movielens import load_movielens_csv

    folder = bundled_path()
    missing = [f for f in BUNDLED_FILES if not (folder / f).is_file()]
    if missing:
        raise DataError(
            f"the embedded {BUNDLED_NAME} is incomplete: {', '.join(str(folder / f) for f in missing)} "
            f"missing; reinstall rbm_cuda or pass the path of an ml-latest-small folder"
        )
    return load_movielens_csv(folder, duplicates=duplicates, name=BUNDLED_NAME)
