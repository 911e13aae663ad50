"""Named models of the harness (`--models`): the RBM variants and the baselines.

"rbm" is the project's RBM recommender as evaluated: rating predictions (and P(like)) are the
BLEND_WEIGHTS average of the item-based and the user-based softmax RBMs, and its top-k lists come
from the implicit ("rated or not") bernoulli RBM.  Each part also has its own row; a part shared
by "rbm" and its own row is trained once per split.
"""

from __future__ import annotations

from .baselines import Biases, ConstantLike, GlobalMean, ItemPopularity, MeanImputedSVD
from .models import BLEND_WEIGHTS, Blend, ImplicitRBM, SoftmaxRBM

RBM_PARTS = ("rbm-item", "rbm-user", "rbm-implicit")


def _ep(epochs):
    return {} if epochs is None else {"epochs": epochs}


FACTORIES = {
    "rbm-item": lambda device, seed, epochs: SoftmaxRBM("item", device=device, seed=seed, **_ep(epochs)),
    "rbm-user": lambda device, seed, epochs: SoftmaxRBM("user", device=device, seed=seed, **_ep(epochs)),
    "rbm-implicit": lambda device, seed, epochs: ImplicitRBM(device=device, seed=seed, **_ep(epochs)),
    "global-mean": lambda device, seed, epochs: GlobalMean(),
    "biases": lambda device, seed, epochs: Biases(),
    "popularity": lambda device, seed, epochs: ItemPopularity(),
    "always-like": lambda device, seed, epochs: ConstantLike(),
    "svd": lambda device, seed, epochs: MeanImputedSVD(),
}
MODEL_NAMES = ("rbm",) + tuple(FACTORIES)
DEFAULT_MODELS = MODEL_NAMES


def make_models(names=DEFAULT_MODELS, device="cpu", seed=0, epochs=None):
    """Fresh, unfitted models by name (see MODEL_NAMES), in that order; epochs overrides the RBMs'
    numbers of epochs."""
    bad = [n for n in names if n not in MODEL_NAMES]
    if bad:
        raise ValueError(f"unknown model {bad[0]!r}; known: {', '.join(MODEL_NAMES)}")
    made = {}

    def get(name):
        if name not in made:
            made[name] = FACTORIES[name](device, seed, epochs)
            made[name].name = name
        return made[name]

    out = []
    for name in names:
        if name == "rbm":
            out.append(Blend([get("rbm-item"), get("rbm-user")], BLEND_WEIGHTS, name="rbm", ranker=get("rbm-implicit")))
        else:
            out.append(get(name))
    return out


def default_models(device="cpu", seed=0):
    return make_models(DEFAULT_MODELS, device=device, seed=seed)
