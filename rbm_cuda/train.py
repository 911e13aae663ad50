"""python -m rbm_cuda.train: train the recommender, save it, show what it learned.

With no arguments it trains rbm_cuda.RBMRecommender (blended item- and user-based softmax RBMs for
ratings, an implicit RBM for top-N lists) on the MovieLens latest-small data embedded in the
package, holding out a validation part of each user's ratings.  --plain trains one RBM instead and
shows each epoch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from .datasets import add_duplicates_argument
from .params import RBMParams
from .recommender import DEFAULT_VALID_MAX_RATINGS, RBMRecommender

_D = RBMParams()


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m rbm_cuda.train",
        description="Train an RBM recommender on a rating data set and show what it learned.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("--data", default="ml-latest-small",
                    help="data set name (ml-latest-small is embedded; ml-100k, ml-1m, goodbooks-10k, ... are looked "
                         "up under $RBM_CUDA_DATA) or a path to a folder or CSV file")
    add_duplicates_argument(ap)
    ap.add_argument("--plain", action="store_true",
                    help="train one RBM (the flags below) instead of the recommender, and show every epoch")
    ap.add_argument("--visible", default=_D.visible, choices=["softmax", "like", "bernoulli"],
                    help="with --plain: visible units: softmax over rating levels, like/dislike (2-level softmax), "
                         "or bernoulli (rating / max level)")
    ap.add_argument("--like-threshold", type=float, default=_D.like_threshold,
                    help="with --plain --visible like: ratings >= this are likes")
    rbm = "(--plain: default %(default)s; the recommender: every part, default each part's own)"
    ap.add_argument("--hidden", type=int, default=None, help=f"number of hidden units {rbm}")
    ap.add_argument("--epochs", type=int, default=None, help=f"training epochs {rbm}")
    ap.add_argument("--cd", default=None,
                    help=f"Gibbs steps per update: an int, or a schedule 'T,T@epoch,...' such as '1,3@15,5@25' {rbm}")
    ap.add_argument("--lr", type=float, default=None, help=f"learning rate {rbm}")
    ap.add_argument("--momentum", type=float, default=None,
                    help=f"momentum after the first {_D.momentum_warmup} epochs (which use {_D.initial_momentum}) "
                         f"{rbm}")
    ap.add_argument("--weight-decay", type=float, default=None, help=f"L2 weight decay on W {rbm}")
    ap.add_argument("--batch-size", type=int, default=None, help=f"users per mini-batch {rbm}")
    ap.add_argument("--rankers", type=int, default=1,
                    help="the recommender's ranker RBMs, from different seeds, their scores averaged: more rank a "
                         "little better and cost their training and scoring as many times over")
    ap.add_argument("--seed", type=int, default=_D.seed, help="random seed (same seed, same model)")
    ap.add_argument("--device", default=_D.device, choices=["auto", "cpu", "cuda"],
                    help="where to train: auto picks the GPU when one can be used")
    ap.add_argument("--valid-fraction", type=float, default=0.1,
                    help="fraction of each user's ratings held out for validation.  The recommender fits its blend "
                         "weights on it, reports the validation RMSE, then trains on all the ratings; --plain "
                         "trains without it (0 to hold out nothing)")
    ap.add_argument("--out", default=None,
                    help="where to save the model (.npz); default rbm-<data>.npz (--plain: rewritten after every "
                         "epoch)")
    ap.add_argument("--resume", action="store_true",
                    help="with --plain: continue from the checkpoint at --out, written by an earlier run of the same "
                         "command (the result is the same as an uninterrupted run)")
    ap.add_argument("--json", default=None, help="write the per-epoch history and final figures to this JSON file")
    ap.add_argument("--plot", default=None, help="draw the training curves into this PNG (needs matplotlib)")
    ap.add_argument("--user", default=None, help="raw id of the user whose recommendations are shown at the end")
    ap.add_argument("--quiet", action="store_true", help="print only errors and the final summary line")
    return ap


def _fmt(x, spec):
    return "-" if x is None else format(x, spec)


def show_recommendations(model, data, user, n=10, out=None):
    """Print the user's highest-rated training items beside the model's top-n unseen items."""
    out = out or sys.stdout
    u = int(model.user_index(user))
    row = slice(model.train_.indptr[u], model.train_.indptr[u + 1])
    rated_items = model.train_.indices[row]
    ratings = model.train_.data[row]
    best = np.argsort(-ratings, kind="stable")[:n]
    rec_ids, scores = model.recommend(user, n=n)
    rec_idx = model.item_index(rec_ids)
    left = [f"{ratings[b]:g}  {data.title(rated_items[b])}" for b in best]
    if isinstance(model, RBMRecommender):
        expected = model.predict(np.repeat(user, len(rec_ids)), rec_ids) if len(rec_ids) else []
        right = [f"{s:.2f}  {r:.1f}  {data.title(i)}" for s, r, i in zip(scores, expected, rec_idx)]
        legend = ("score = p(rated) from the ranker: how likely this user is to rate the item; then the "
                  "expected rating")
        head = "score  exp  title"
    else:
        right = [f"{s:.2f}  {data.title(i)}" for s, i in zip(scores, rec_idx)]
        legend = "score = " + ("P(like)" if model.params_.visible == "like" else "expected rating")
        head = "score  title"
    width = min(60, max((len(s) for s in left), default=10))
    print(f"\nUser {user}: rated {len(ratings)} items. Highest rated (left) and top-{n} recommendations "
          f"among unseen items (right; {legend}):", file=out)
    print(f"  {'rating  title':<{width}}  |  {head}", file=out)
    for i in range(max(len(left), len(right))):
        a = left[i][:width] if i < len(left) else ""
        b = right[i] if i < len(right) else ""
        print(f"  {a:<{width}}  |  {b}", file=out)


def _rbm_overrides(args) -> dict:
    """The RBM parameters given on the command line (flags left at None are not given)."""
    given = {"n_hidden": args.hidden, "epochs": args.epochs, "cd_steps": args.cd, "learning_rate": args.lr,
             "momentum": args.momentum, "weight_decay": args.weight_decay, "batch_size": args.batch_size}
    return {k: v for k, v in given.items() if v is not None}


def _check_user(args, data):
    """The user whose recommendations are shown, checked before any training."""
    user = args.user if args.user is not None else data.user_ids[0]
    if isinstance(user, str) and np.asarray(data.user_ids).dtype.kind in "iu":
        try:
            user = int(user)
        except ValueError:
            raise ValueError(f"--user {args.user!r}: the user ids of {data.name} are integers") from None
    data.user_index(user)  # KeyError naming the id when unknown
    return user


def run(args) -> dict:
    from . import datasets
    from .evaluation.splits import stratified_split

    if not 0 <= args.valid_fraction < 1:
        raise ValueError(f"--valid-fraction {args.valid_fraction}: expected a number in [0, 1)")
    if not args.plain and args.valid_fraction == 0:
        raise ValueError("--valid-fraction 0: the recommender fits its blend weights on a held-out share of each "
                         "user's ratings; give a fraction in (0, 1)")
    data = datasets.load(args.data, duplicates=args.duplicates)
    user = _check_user(args, data)
    if not args.plain:
        # The recommender holds out its own share (valid_fraction), reports the blend's RMSE on it,
        # then trains on all the ratings: the saved model has seen every rating.
        train, valid = data, None
    elif args.valid_fraction > 0:
        # per user, half_up(fraction * n) random ratings held out; every user keeps one to train on
        split = stratified_split(data, args.valid_fraction, args.seed)
        train, valid = split.train, split.test
    else:
        train, valid = data, None
    out = args.out or f"rbm-{data.name or 'model'}.npz"
    say = (lambda *a, **k: None) if args.quiet else print
    if args.plain:
        share = f"({train.nnz} train, {0 if valid is None else valid.nnz} validation)"
    else:
        cap = DEFAULT_VALID_MAX_RATINGS
        among = "" if data.nnz <= cap else f", among users drawn at random up to {cap:,} ratings"
        share = (f"(validation: {args.valid_fraction:g} of each user's ratings held out to fit the blend{among}, "
                 "then all of them trained on)")
    say(f"{data.name}: {data.n_users} users, {data.n_items} items, {data.nnz} ratings {share}; "
        f"levels {data.levels.tolist()}")
    t0 = time.perf_counter()
    if args.plain:
        model, result = _train_plain(args, train, valid, out)
    else:
        model, result = _train_recommender(args, train, valid, out)
    seconds = time.perf_counter() - t0
    result["final"]["total_seconds"] = seconds
    written = result["model"]
    n_valid = 0 if valid is None else int(valid.nnz)
    if not args.plain:
        n_valid = int(model.validation_.get("n_ratings", 0))
    result.update({"n_ratings": int(data.nnz), "n_train": int(train.nnz), "n_valid": n_valid, "dataset": data.name,
                   "model": os.path.abspath(result["model"])})
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    print(f"trained {result['what']} in {seconds:.1f} s on {result['backend']}; "
          f"valid RMSE {_fmt(result['final'].get('valid_rmse'), '.4f')}; model saved to {written}")
    if not args.quiet:
        show_recommendations(model, train if args.plain else data, user)
    return result


def _train_plain(args, train, valid, out):
    from . import RBM

    if args.rankers != 1:
        raise ValueError(f"--rankers {args.rankers}: rankers are the recommender's; --plain trains one RBM")
    model = RBM(**{**_rbm_overrides(args), "visible": args.visible, "like_threshold": args.like_threshold,
                   "seed": args.seed, "device": args.device})
    epochs = model.epochs
    resumed = None
    if args.resume:
        resumed = _resume_from(out, model, train, args)
    progress = None
    if not args.quiet:
        from tqdm.auto import tqdm

        progress = tqdm(total=epochs, desc="training", unit="epoch", leave=False, file=sys.stderr)
        progress.write(f"{'epoch':>5} {'CD':>3} {'train RMSE':>10} {'valid RMSE':>10} {'F(train)':>10} "
                       f"{'F(valid)':>10} {'seconds':>8}")
    written = [out]

    def on_epoch(m, rec):
        written[0] = m.save(out)  # every finished epoch is on disk, whatever happens next
        if progress is not None:
            progress.write(f"{rec['epoch']:>5} {rec['cd_steps']:>3} {_fmt(rec['train_rmse'], '10.4f')} "
                           f"{_fmt(rec['valid_rmse'], '10.4f')} {_fmt(rec['free_energy_train'], '10.2f')} "
                           f"{_fmt(rec['free_energy_valid'], '10.2f')} {rec['seconds']:8.2f}")
            progress.update(1)

    if resumed is None:
        model.fit(train, valid=valid, callback=on_epoch)
    else:
        model = resumed
        if progress is not None:
            progress.update(model.epochs_done_)
        while model.epochs_done_ < epochs:
            model.partial_fit(valid=valid, callback=on_epoch)
    if progress is not None:
        progress.close()
    if epochs == 0:
        written[0] = model.save(out)
    if args.plot:
        from .plotting import plot_history

        plot_history(model.history_, args.plot, title=f"RBM on {train.name}")
    final = dict(model.history_[-1]) if model.history_ else {}
    return model, {"what": f"one RBM, {len(model.history_)} epochs", "kind": "RBM", "history": model.history_,
                   "final": final, "backend": model.backend_, "model": written[0],
                   "params": model.params_.to_dict()}


def _resume_from(out, fresh, train, args):
    """The checkpoint at `out` (written by an earlier run of the same command), checked against the
    parameters and data of this run; None when there is no checkpoint yet."""
    from . import RBM

    path = out if out.endswith(".npz") else out + ".npz"
    if not os.path.exists(path):
        print(f"--resume: no checkpoint at {path} yet, starting from epoch 0", file=sys.stderr)
        return None
    model = RBM.load(path, device=args.device)
    want = {k: v for k, v in fresh.get_params().items() if k not in ("epochs", "device")}
    have = {k: v for k, v in model.get_params().items() if k not in ("epochs", "device")}
    differ = [f"{k} {have[k]!r} (this run: {want[k]!r})" for k in want if str(want[k]) != str(have[k])]
    if differ:
        raise ValueError(f"--resume: the checkpoint {path} was trained with other parameters: {', '.join(differ)}")
    if model.train_.shape != train.ratings.shape or model.train_.nnz != train.nnz:
        raise ValueError(f"--resume: the checkpoint {path} was trained on other ratings "
                         f"({model.train_.nnz} in {model.train_.shape}, this run {train.nnz} in {train.ratings.shape})")
    model.epochs = fresh.epochs
    return model


def _train_recommender(args, train, valid, out):
    if args.resume:
        raise ValueError("--resume continues one RBM's training: use it with --plain (the recommender is saved "
                         "when all its parts are trained)")
    if args.plot:
        raise ValueError("--plot draws one RBM's training curves: use it with --plain")
    over = _rbm_overrides(args) or None
    model = RBMRecommender(item_params=over, user_params=over, ranker_params=over, n_rankers=args.rankers,
                           seed=args.seed, device=args.device, valid_fraction=args.valid_fraction,
                           progress=not args.quiet)
    model.fit(train)
    written = model.save(out)
    rmse = model.validation_.get("rmse", {})
    final = {"valid_rmse": rmse.get("blend")}
    final.update({f"valid_rmse_{part}": rmse[part] for part in model.rating_parts_ if part in rmse})
    desc = model.describe()
    if not args.quiet:
        for part, info in desc["parts"].items():
            w = desc["weights"].get(part)
            many = f"{info['models']} RBMs x " if info.get("models", 1) > 1 else ""
            avg = info["params"]["average_epochs"]
            print(f"  part {part}: {many}{info['epochs']} epochs"
                  + (f" (weights averaged over the last {min(avg, info['epochs'])})" if avg > 1 else "")
                  + f", {info['params']['n_hidden']} hidden, {info['params']['visible']} units"
                  + ("" if w is None else f", blend weight {w:.3f}")
                  + ("" if f"valid_rmse_{part}" not in final else f", valid RMSE {final[f'valid_rmse_{part}']:.4f}"))
    backend = next(iter(model.parts_.values())).backend_
    return model, {"what": "RBMRecommender (" + ", ".join(desc["parts"]) + ")", "kind": "RBMRecommender",
                   "recommender": desc, "final": final, "backend": backend, "model": written,
                   "history": {p: m.history_ for p, m in model.parts_.items()}}


def _is_interrupt(err) -> bool:
    """Ctrl-C, also when it lands inside a Numba kernel, which reports it as a SystemError caused by
    the KeyboardInterrupt."""
    while err is not None:
        if isinstance(err, KeyboardInterrupt):
            return True
        err = err.__cause__ or err.__context__
    return False


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (ValueError, KeyError, RuntimeError, OSError, MemoryError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, SystemError) as err:
        if not _is_interrupt(err):
            raise
        out = args.out or "rbm-<data>.npz"
        out = out if out.endswith(".npz") else out + ".npz"
        if args.plain:
            print(f"interrupted: the last finished epoch is in {out}; run the same command with --resume to "
                  "continue from it", file=sys.stderr)
        else:
            print("interrupted: the recommender is saved only when all its parts are trained; nothing was "
                  "written", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
