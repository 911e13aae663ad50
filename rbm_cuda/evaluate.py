"""python -m rbm_cuda.evaluate: the RBM and the baselines on the same splits, one table.

  python -m rbm_cuda.evaluate --data ml-100k --protocol folds          # u1..u5, mean ± std
  python -m rbm_cuda.evaluate --data ml-100k --protocol stratified     # per-user 75/25
  python -m rbm_cuda.evaluate --data ml-100k --protocol random --seeds 0,1,2,3,4
  python -m rbm_cuda.evaluate --data ml-100k --protocol ua --json ua.json

Definitions of protocols and metrics, and measured results: docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time


def build_parser() -> argparse.ArgumentParser:
    from .datasets import add_duplicates_argument
    from .evaluation.metrics import DEFAULT_K
    from .evaluation.registry import MODEL_NAMES
    from .evaluation.splits import PROTOCOLS

    ap = argparse.ArgumentParser(
        prog="python -m rbm_cuda.evaluate",
        description="Evaluate the RBM recommenders against baselines on the same train/test splits.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("--data", default="ml-100k",
                    help="data set name (ml-100k, ml-latest-small, ml-1m, goodbooks-10k: looked up under "
                         "$RBM_CUDA_DATA) or a path to a folder or CSV file")
    ap.add_argument("--protocol", default="folds", choices=PROTOCOLS,
                    help="folds: ml-100k u1..u5; ua / ub: ml-100k 10 test ratings per user; stratified: per-user "
                         "75/25; random: 90/10 over all ratings, one split per seed; new-users: 10 %% of the users held "
                         "out, 75 %% of their ratings folded in, the rest scored")
    ap.add_argument("--seeds", default=None,
                    help="comma-separated split seeds (default: 0 for stratified, 0,1,2,3,4 for random)")
    ap.add_argument("--test-fraction", type=float, default=None,
                    help="test share for stratified (default 0.25) and random (default 0.1); for new-users, the share "
                         "of users held out (default 0.1)")
    add_duplicates_argument(ap)
    ap.add_argument("--models", default=",".join(MODEL_NAMES),
                    help=f"comma-separated models among {', '.join(MODEL_NAMES)}")
    ap.add_argument("--k", type=int, default=DEFAULT_K, help="cut-off of the ranking metrics")
    ap.add_argument("--relevance-threshold", type=float, default=None,
                    help="ranking relevance: a test rating >= this (default: any test rating)")
    ap.add_argument("--epochs", type=int, default=None, help="override the RBMs' number of epochs")
    ap.add_argument("--recommender", default=None, metavar="JSON",
                    help='RBMRecommender parameters for the rbm rows, e.g. \'{"n_rankers": 1, "ranker_params": '
                         '{"average_epochs": 1}}\'')
    ap.add_argument("--validation", action="store_true",
                    help="score on a validation part of each training part, never the test part (stratified: a "
                         "per-user 25 %%; folds, ua, ub, random: a random 10 %%): for choosing hyper-parameters")
    ap.add_argument("--seed", type=int, default=0, help="seed of the RBMs' training")
    ap.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"], help="where the RBMs train")
    ap.add_argument("--json", default=None, help="write the results to this JSON file")
    ap.add_argument("--quiet", action="store_true", help="print only the table")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown (metrics and fit seconds), as in the docs")
    return ap


def _recommender_params(text):
    """--recommender: a JSON object of RBMRecommender parameters (checked when the model is made)."""
    if text is None:
        return None
    try:
        over = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--recommender {text!r} is not JSON: {e}") from None
    if not isinstance(over, dict):
        raise ValueError(f"--recommender {text!r}: expected a JSON object of RBMRecommender parameters")
    from .recommender import RBMRecommender

    bad = set(over) - set(RBMRecommender._PARAM_NAMES) | set(over) & {"parts", "seed", "device"}
    if bad:
        raise ValueError(f"--recommender: {sorted(bad)} cannot be set here; allowed: "
                         f"{', '.join(n for n in RBMRecommender._PARAM_NAMES if n not in ('parts', 'seed', 'device'))}")
    try:
        RBMRecommender(**over)._check_params()
    except TypeError as e:  # an unknown RBM parameter in one of the *_params
        raise ValueError(f"--recommender: {e}") from None
    return over


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .datasets import DataError, load
    from .evaluation.harness import evaluate, format_table, to_json
    from .evaluation.registry import make_models
    from .evaluation.splits import make_splits, validation_splits

    def log(msg):
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    names = [m.strip() for m in args.models.split(",") if m.strip()]
    try:
        make_models(names)  # fail fast on a bad name
        seeds = None if args.seeds is None else [int(s) for s in args.seeds.split(",") if s.strip()]
        if args.k < 1:
            raise ValueError(f"--k {args.k}: the ranking cut-off must be at least 1")
        if args.test_fraction is not None and not 0 < args.test_fraction < 1:
            raise ValueError(f"--test-fraction {args.test_fraction}: expected a number in (0, 1)")
        if args.test_fraction is not None and args.protocol not in ("stratified", "random", "new-users"):
            raise ValueError(f"--test-fraction {args.test_fraction}: the {args.protocol} protocol uses the data set's "
                             "own splits; the fraction applies to stratified, random and new-users")
        if args.relevance_threshold is not None and not math.isfinite(args.relevance_threshold):
            raise ValueError(f"--relevance-threshold {args.relevance_threshold}: expected a finite rating")
        if args.epochs is not None and args.epochs < 0:
            raise ValueError(f"--epochs {args.epochs}: expected an int >= 0")
        over = _recommender_params(args.recommender)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        data = load(args.data, duplicates=args.duplicates)
        splits = make_splits(args.protocol, data=data, seeds=seeds, test_fraction=args.test_fraction)
        if args.validation:
            splits = validation_splits(splits, args.protocol)
    except (DataError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    log(f"{data!r}: protocol {args.protocol}, {len(splits)} split(s), k = {args.k}")
    report = evaluate(lambda: make_models(names, device=args.device, seed=args.seed, epochs=args.epochs,
                                          recommender=over),
                      splits, k=args.k, relevance_threshold=args.relevance_threshold, log=log)
    elapsed = time.perf_counter() - t0
    print(f"{data.name}, protocol {args.protocol}{' (validation parts)' if args.validation else ''} "
          f"({', '.join(report['splits'])}), k = {args.k}"
          + (f", relevance: test rating >= {args.relevance_threshold:g}" if args.relevance_threshold is not None else "")
          + (" — mean ± std over splits" if len(splits) > 1 else ""))
    print(format_table(report, markdown=args.markdown))
    log(f"total {elapsed:.1f} s")
    if args.json:
        to_json(report, args.protocol, data.name, args.k, path=args.json,
                extra={"command": "python -m rbm_cuda.evaluate " + " ".join(sys.argv[1:] if argv is None else argv),
                       "seconds": elapsed, "relevance_threshold": args.relevance_threshold})
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
