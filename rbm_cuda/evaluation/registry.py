"""Named models of the harness (`--models`): the public recommender, its parts, and the baselines.

"rbm" is rbm_cuda.RBMRecommender exactly as its fit() builds it: rating predictions and P(like)
from the fitted blend of the item-based and user-based softmax RBMs, top-k lists from the implicit
("rated or not") ranker.  rbm-item, rbm-user and rbm-implicit are its parts on their own rows; they
read the same fitted recommender, which is trained once per split.
"""

from __future__ import annotations

from .baselines import EASE, BiasedMF, Biases, ConstantLike, GlobalMean, ItemPopularity, MeanImputedSVD
from .models import PART_OF_ROW, RecommenderView, shared_recommender

BASELINES = {
    "global-mean": GlobalMean,
    "biases": Biases,
    "popularity": ItemPopularity,
    "always-like": ConstantLike,
    "svd": MeanImputedSVD,
    "mf-sgd": BiasedMF,
    "ease": EASE,
}
MODEL_NAMES = tuple(PART_OF_ROW) + tuple(BASELINES)


def make_models(names=MODEL_NAMES, device="cpu", seed=0, epochs=None, recommender=None):
    """Fresh, unfitted models by name (see MODEL_NAMES), in that order; epochs overrides every RBM
    part's number of epochs; recommender: RBMRecommender parameters for the rbm rows (a dict)."""
    bad = [n for n in names if n not in MODEL_NAMES]
    if bad:
        raise ValueError(f"unknown model {bad[0]!r}; known: {', '.join(MODEL_NAMES)}")
    rows = [n for n in names if n in PART_OF_ROW]
    rec = shared_recommender(rows, device=device, seed=seed, epochs=epochs, params=recommender) if rows else None
    out = []
    for name in names:
        if name in PART_OF_ROW:
            out.append(RecommenderView(rec, name=name, part=PART_OF_ROW[name]))
        else:
            model = BASELINES[name]()
            model.name = name
            out.append(model)
    return out


def default_models(device="cpu", seed=0):
    return make_models(MODEL_NAMES, device=device, seed=seed)
