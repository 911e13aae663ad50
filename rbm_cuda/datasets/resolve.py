"""load(): a data set by path or by name; where named data sets are looked for; downloads.

Order for a name: ``$RBM_CUDA_DATA/<name>``, then the cache ``$RBM_CUDA_CACHE/<name>`` (default
``~/.cache/rbm_cuda/<name>``), then (ml-latest-small only) the copy inside the package, then (MovieLens
names only) a download of the GroupLens zip into the cache.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zipfile
import zlib
from pathlib import Path
from urllib.error import URLError
from urllib.request import urlopen

from .bundled import BUNDLED_NAME, load_bundled
from .core import RatingData
from .errors import DataError
from .goodbooks import RATINGS_FILES, load_goodbooks
from .movielens import find_file, load_movielens_1m, load_movielens_100k, load_movielens_csv
from .tables import load_csv

GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/{name}.zip"

#: Known GroupLens zips: (size in bytes, sha256). The checksums are those of the zips as published
#: by GroupLens (the same values are recorded by TensorFlow Datasets). ml-latest is regenerated
#: from time to time, so no checksum or row count can be known for it: it is only checked to
#: hold ratings.csv and movies.csv after extraction.
KNOWN_ZIPS = {
    "ml-100k": (4924029, "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229"),
    "ml-1m": (5917549, "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20"),
    "ml-latest-small": (978202, "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436"),
    "ml-20m": (198702078, "96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3"),
    "ml-25m": (261978986, "8b21cfb7eb1706b4ec0aac894368d90acf26ebdfb6aced3ebd4ad5bd1eb9c6aa"),
    "ml-latest": (None, None),
}

#: Known names -> the files a folder of that data set must hold to be used.
KNOWN_NAMES = {
    "ml-100k": ("u.data",),
    "ml-1m": ("ratings.dat",),
    "ml-latest-small": ("ratings.csv", "movies.csv"),
    "ml-latest": ("ratings.csv", "movies.csv"),
    "ml-20m": ("ratings.csv", "movies.csv"),
    "ml-25m": ("ratings.csv", "movies.csv"),
    "goodbooks-10k": ("books.csv",),
}

_DOWNLOAD_CHUNK = 1 << 20


def cache_dir() -> Path:
    """Root of the download cache: ``$RBM_CUDA_CACHE``, else ``$XDG_CACHE_HOME/rbm_cuda``, else
    ``~/.cache/rbm_cuda``."""
    env = os.environ.get("RBM_CUDA_CACHE")
    if env:
        return Path(os.path.expanduser(env))
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(os.path.expanduser(xdg)) if xdg else Path.home() / ".cache"
    return base / "rbm_cuda"


def data_dirs() -> list[Path]:
    """Folders listed in ``$RBM_CUDA_DATA`` (several may be given, separated by os.pathsep)."""
    env = os.environ.get("RBM_CUDA_DATA", "")
    return [Path(os.path.expanduser(p)) for p in env.split(os.pathsep) if p]


# ------------------------------------------------------------------------------------------ formats
def detect_format(folder: Path) -> str:
    """Which loader reads this folder: 'ml-100k', 'ml-1m', 'movielens-csv' or 'goodbooks'."""
    if (folder / "u.data").is_file():
        return "ml-100k"
    if (folder / "ratings.dat").is_file():
        return "ml-1m"
    if find_file(folder, "ratings.csv") and find_file(folder, "movies.csv"):
        return "movielens-csv"
    if (folder / "books.csv").is_file():
        return "goodbooks"
    found = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    shown = ", ".join(found[:20]) + (f" and {len(found) - 20} more" if len(found) > 20 else "")
    raise DataError(
        f"{folder}: cannot tell which data set this folder holds; expected u.data (MovieLens 100K), "
        f"ratings.dat (MovieLens 1M), ratings.csv with movies.csv (MovieLens CSV releases) or "
        f"books.csv (goodbooks-10k); found {shown or 'nothing'}"
    )


def _is_complete(folder: Path, name: str) -> bool:
    if not folder.is_dir():
        return False
    if not all(find_file(folder, f) for f in KNOWN_NAMES[name]):
        return False
    if name == "goodbooks-10k":
        return any((folder / f).is_file() for f in RATINGS_FILES)
    return True


def _load_folder(folder: Path, **kw) -> RatingData:
    fmt = detect_format(folder)
    if fmt == "ml-100k":
        return load_movielens_100k(folder, **kw)
    if fmt == "ml-1m":
        return load_movielens_1m(folder, **kw)
    if fmt == "movielens-csv":
        return load_movielens_csv(folder, **kw)
    return load_goodbooks(folder, **kw)


#: Column triples (user, item, rating) recognised in a single CSV file, in order.
CSV_COLUMNS = (
    ("user", "item", "rating"),
    ("userId", "movieId", "rating"),
    ("user_id", "item_id", "rating"),
    ("user_id", "book_id", "rating"),
)


def _load_file(path: Path, **kw) -> RatingData:
    if not (path.name.endswith(".csv") or path.name.endswith(".csv.gz")):
        raise DataError(
            f"{path}: don't know how to read this file; pass a folder of a known data set or a .csv file "
            f"with a header (columns user,item,rating or userId,movieId,rating), or use load_csv() "
            f"with the column names and separator"
        )
    if "user_col" in kw or "item_col" in kw or "rating_col" in kw:
        return load_csv(path, **kw)
    header = _header(path, kw.get("sep", ","), kw.get("encoding", "utf-8"))
    for cols in CSV_COLUMNS:
        if set(cols) <= set(header):
            return load_csv(path, *cols, **kw)
    raise DataError(
        f"{path}, line 1: expected a header with columns user,item,rating or userId,movieId,rating; "
        f"found columns {header}; use load_csv(path, user_col=..., item_col=..., rating_col=...) "
        f"for other names"
    )


def _header(path: Path, sep: str, encoding: str) -> list[str]:
    import pandas as pd

    try:
        cols = pd.read_csv(path, sep=sep, nrows=0, encoding=encoding).columns
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty; expected a table of ratings with a header line") from None
    except (UnicodeDecodeError, pd.errors.ParserError) as e:
        raise DataError(f"{path}, line 1: cannot read the header: {e}") from None
    except (EOFError, OSError, zlib.error) as e:
        raise DataError(f"{path}: the compressed file is truncated or corrupt ({e}); expected a complete "
                        f".gz file") from None
    return [str(c).strip() for c in cols]


# ------------------------------------------------------------------------------------------ download
def _download(url: str, dest: Path, size: int | None, sha256: str | None, desc: str) -> None:
    """Fetch ``url`` into ``dest`` with a progress bar, checking size and sha256 when known."""
    from tqdm.auto import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    h = hashlib.sha256()
    n = 0
    with urlopen(url, timeout=60) as resp, open(part, "wb") as out:
        total = resp.headers.get("Content-Length") if getattr(resp, "headers", None) else None
        with tqdm(total=int(total) if total else size, unit="B", unit_scale=True, desc=desc) as bar:
            while True:
                chunk = resp.read(_DOWNLOAD_CHUNK)
                if not chunk:
                    break
                out.write(chunk)
                h.update(chunk)
                n += len(chunk)
                bar.update(len(chunk))
    if (size is not None and n != size) or (sha256 is not None and h.hexdigest() != sha256):
        part.unlink(missing_ok=True)
        raise DataError(
            f"the download of {url} is corrupt: got {n} bytes with sha256 {h.hexdigest()}, expected "
            f"{size} bytes with sha256 {sha256}; try again later or download it yourself and set RBM_CUDA_DATA"
        )
    part.replace(dest)


def _extract(zip_path: Path, root: Path, name: str) -> Path:
    """Unpack the GroupLens zip (one top folder named ``name``) into ``root/name``."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    try:
        with zipfile.ZipFile(zip_path) as z:
            for member in z.namelist():
                target = (tmp / member).resolve()
                if not str(target).startswith(str(tmp.resolve()) + os.sep):
                    raise DataError(f"{zip_path}: refusing to extract {member!r} outside {tmp}")
            z.extractall(tmp)
        top = tmp / name
        if not top.is_dir():
            subdirs = [p for p in tmp.iterdir() if p.is_dir()]
            top = subdirs[0] if len(subdirs) == 1 else tmp
        if not _is_complete(top, name):
            raise DataError(
                f"{zip_path} does not hold the expected files {', '.join(KNOWN_NAMES[name])} of {name}"
            )
        final = root / name
        if final.exists():
            shutil.rmtree(final)
        top.replace(final)
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fetch(name: str) -> Path:
    """Download and unpack the GroupLens zip of a MovieLens data set into the cache; its folder.

    Raises DataError when offline (saying how to use local files instead) or when the download
    does not match the known size and sha256.
    """
    if name not in KNOWN_ZIPS:
        raise DataError(f"no download is known for {name!r}; known: {', '.join(KNOWN_ZIPS)}")
    size, sha256 = KNOWN_ZIPS[name]
    url = GROUPLENS_URL.format(name=name)
    root = cache_dir()
    zip_path = root / f"{name}.zip"
    try:
        root.mkdir(parents=True, exist_ok=True)
        _download(url, zip_path, size, sha256, desc=f"{name}.zip")
    except (URLError, OSError) as e:
        reason = getattr(e, "reason", None) or e
        raise DataError(
            f"could not download {name} from {url} ({reason}). To use a local copy, unpack it to a "
            f"folder named {name} inside a folder listed in RBM_CUDA_DATA (e.g. export "
            f"RBM_CUDA_DATA=/path/to/data with /path/to/data/{name}/), or pass the folder path to "
            f"rbm_cuda.datasets.load()"
        ) from e
    try:
        return _extract(zip_path, root, name)
    finally:
        zip_path.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------ load
def load(name_or_path=None, download: bool = True, **kw) -> RatingData:
    """A data set by path or by name.

    * None: the ml-latest-small copy inside the package.
    * an existing path: a folder (u.data -> MovieLens 100K, ratings.dat -> 1M, ratings.csv with
      movies.csv -> MovieLens CSV release, books.csv -> goodbooks-10k) or a single .csv file with
      columns user,item,rating or userId,movieId,rating (or give user_col/item_col/rating_col).
    * a known name (ml-100k, ml-1m, ml-latest-small, ml-latest, ml-20m, ml-25m, goodbooks-10k):
      looked for in ``$RBM_CUDA_DATA/<name>``, then in the cache (``$RBM_CUDA_CACHE/<name>``, default
      ``~/.cache/rbm_cuda/<name>``), then for ml-latest-small in the package, then (MovieLens
      names, unless ``download=False``) downloaded from GroupLens into the cache.

    Other keyword arguments go to the loader (e.g. ``duplicates='last'``).
    """
    if name_or_path is None:
        return load_bundled(**kw)
    path = Path(os.path.expanduser(os.fspath(name_or_path)))
    if path.exists():
        return _load_folder(path, **kw) if path.is_dir() else _load_file(path, **kw)
    name = os.fspath(name_or_path)
    if name not in KNOWN_NAMES:
        raise DataError(
            f"{name!r} is not an existing file or folder, nor a known data set name; known names: "
            f"{', '.join(KNOWN_NAMES)}"
        )
    looked = []
    for base in [*data_dirs(), cache_dir()]:
        folder = base / name
        if _is_complete(folder, name):
            return _load_folder(folder, **kw)
        looked.append(f"{folder} ({'incomplete' if folder.is_dir() else 'absent'})")
    if name == BUNDLED_NAME:
        return load_bundled(**kw)
    if name in KNOWN_ZIPS:
        if download:
            return _load_folder(fetch(name), **kw)
        how = "download=False was given"
    else:
        how = "it cannot be downloaded automatically (get it from https://github.com/zygmuntz/goodbooks-10k)"
    raise DataError(
        f"{name} was not found: looked in {'; '.join(looked)}, and {how}. Set RBM_CUDA_DATA to a folder "
        f"holding {name}/ or pass the folder path"
    )

