"""Evaluation of rbm_cuda recommenders: split protocols, metrics, baselines, the harness.

>>> from rbm_cuda.evaluation import make_splits, evaluate, default_models
>>> report = evaluate(lambda: default_models(), make_splits("folds", folder="/data/ml-100k"))

The command line is ``python -m rbm_cuda.evaluate``; definitions and results: docs/evaluation.md.
"""

from .baselines import EASE, BiasedMF, Biases, ConstantLike, GlobalMean, ItemPopularity, MeanImputedSVD, Model
from .harness import evaluate, evaluate_split, format_table, to_json
from .metrics import like_dislike, mae, ranking_at_k, relevant_sets, rmse, roc_auc, top_k
from .models import RecommenderView
from .registry import MODEL_NAMES, default_models, make_models
from .splits import (PROTOCOLS, Split, check_split, make_splits, new_users_split, random_split, stratified_split,
                     validation_split)

__all__ = [
    "Model", "GlobalMean", "Biases", "ItemPopularity", "ConstantLike", "MeanImputedSVD", "BiasedMF", "EASE",
    "RecommenderView",
    "evaluate", "evaluate_split", "format_table", "to_json",
    "rmse", "mae", "ranking_at_k", "relevant_sets", "top_k", "like_dislike", "roc_auc",
    "MODEL_NAMES", "default_models", "make_models",
    "PROTOCOLS", "Split", "check_split", "make_splits", "random_split", "stratified_split", "new_users_split", "validation_split",
]
