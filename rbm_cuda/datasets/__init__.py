"""Rating data sets for rbm_cuda: loaders, the RatingData object and the embedded ml-latest-small.

>>> from rbm_cuda.datasets import load
>>> data = load()                 # the embedded MovieLens ml-latest-small
>>> data = load("ml-100k")        # $RBM_CUDA_DATA/ml-100k, the cache, or a download
>>> data = load("/path/to/goodbooks-10k", duplicates="last")

Every loader raises ``DataError`` (a ValueError) for bad input, naming the file, the line (as
numbered in the file, header included), the value and what was expected.
"""

from .bundled import bundled_path, load_bundled
from .core import RatingData
from .errors import DataError
from .goodbooks import load_goodbooks
from .movielens import (
    LEVELS_HALF,
    LEVELS_WHOLE,
    SPLITS_100K,
    load_movielens_1m,
    load_movielens_100k,
    load_movielens_100k_split,
    load_movielens_csv,
)
from .resolve import cache_dir, data_dirs, fetch, load
from .tables import from_dataframe, load_csv
from .triples import add_duplicates_argument

__all__ = [
    "RatingData",
    "DataError",
    "load",
    "load_bundled",
    "bundled_path",
    "load_movielens_100k",
    "load_movielens_100k_split",
    "load_movielens_1m",
    "load_movielens_csv",
    "load_goodbooks",
    "from_dataframe",
    "load_csv",
    "fetch",
    "cache_dir",
    "data_dirs",
    "LEVELS_WHOLE",
    "LEVELS_HALF",
    "SPLITS_100K",
]
