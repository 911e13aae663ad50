"""rbm_cuda: Restricted Boltzmann Machine recommenders on sparse ratings, CUDA kernels with a Numba twin."""

__version__ = "0.1.0"

from .gpu import HAS_CUDA, REASON  # noqa: E402
from .exceptions import NotFittedError  # noqa: E402
from .model import RBM  # noqa: E402
from .recommender import RBMRecommender, load_model  # noqa: E402

__all__ = ["RBM", "RBMRecommender", "load_model", "NotFittedError", "HAS_CUDA", "REASON", "__version__"]
