"""python -m rbm_cuda.train: train an RBM, show each epoch, save the model, show what it learned.

With no arguments it trains on the MovieLens latest-small data embedded in the package, holding out
a validation part of each user's ratings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from .params import RBMParams

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
    ap.add_argument("--duplicates", default="error", choices=["error", "last", "mean"],
                    help="repeated (user, item) ratings in the data: stop with an error that shows one, keep the "
                         "last, or keep the mean (goodbooks-10k v1 has 2,278 repeated rows)")
    ap.add_argument("--visible", default=_D.visible, choices=["softmax", "like", "bernoulli"],
                    help="visible units: softmax over rating levels, like/dislike (2-level softmax), "
                         "or bernoulli (rating / max level)")
    ap.add_argument("--like-threshold", type=float, default=_D.like_threshold,
                    help="with --visible like: ratings >= this are likes")
    ap.add_argument("--hidden", type=int, default=_D.n_hidden, help="number of hidden units")
    ap.add_argument("--epochs", type=int, default=_D.epochs, help="training epochs")
    ap.add_argument("--cd", default=str(_D.cd_steps),
                    help="Gibbs steps per update: an int, or a schedule 'T,T@epoch,...' such as '1,3@15,5@25'")
    ap.add_argument("--lr", type=float, default=_D.learning_rate, help="learning rate")
    ap.add_argument("--momentum", type=float, default=_D.momentum,
                    help=f"momentum after the first {_D.momentum_warmup} epochs (which use {_D.initial_momentum})")
    ap.add_argument("--weight-decay", type=float, default=_D.weight_decay, help="L2 weight decay on W")
    ap.add_argument("--batch-size", type=int, default=_D.batch_size, help="users per mini-batch")
    ap.add_argument("--seed", type=int, default=_D.seed, help="random seed (same seed, same model)")
    ap.add_argument("--device", default=_D.device, choices=["auto", "cpu", "cuda"],
                    help="where to train: auto picks the GPU when one can be used")
    ap.add_argument("--valid-fraction", type=float, default=0.1,
                    help="fraction of each user's ratings held out for validation (0 to hold out nothing)")
    ap.add_argument("--out", default=None,
                    help="where to save the model (.npz); default rbm-<data>.npz; rewritten after every epoch")
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
    right = [f"{s:.2f}  {data.title(i)}" for s, i in zip(scores, rec_idx)]
    width = min(60, max((len(s) for s in left), default=10))
    score_name = "P(like)" if model.visible == "like" else "expected rating"
    print(f"\nUser {user}: rated {len(ratings)} items. Highest rated (left) and top-{n} recommendations "
          f"by {score_name} among unseen items (right):", file=out)
    print(f"  {'rating  title':<{width}}  |  score  title", file=out)
    for i in range(max(len(left), len(right))):
        a = left[i][:width] if i < len(left) else ""
        b = right[i] if i < len(right) else ""
        print(f"  {a:<{width}}  |  {b}", file=out)


def run(args) -> dict:
    from . import RBM, datasets
    from .evaluation.splits import stratified_split

    data = datasets.load(args.data, duplicates=args.duplicates)
    if args.valid_fraction > 0:
        # per user, half_up(fraction * n) random ratings held out; every user keeps one to train on
        split = stratified_split(data, args.valid_fraction, args.seed)
        train, valid = split.train, split.test
    else:
        train, valid = data, None
    model = RBM(n_hidden=args.hidden, visible=args.visible, like_threshold=args.like_threshold, cd_steps=args.cd,
                learning_rate=args.lr, momentum=args.momentum, weight_decay=args.weight_decay,
                batch_size=args.batch_size, epochs=args.epochs, seed=args.seed, device=args.device)
    out = args.out or f"rbm-{data.name or 'model'}.npz"
    say = (lambda *a, **k: None) if args.quiet else print
    say(f"{data.name}: {data.n_users} users, {data.n_items} items, {data.nnz} ratings "
        f"({train.nnz} train, {0 if valid is None else valid.nnz} validation); levels {data.levels.tolist()}")
    progress = None
    if not args.quiet:
        from tqdm.auto import tqdm

        progress = tqdm(total=args.epochs, desc="training", unit="epoch", leave=False, file=sys.stderr)
        progress.write(f"{'epoch':>5} {'CD':>3} {'train RMSE':>10} {'valid RMSE':>10} {'F(train)':>10} "
                       f"{'F(valid)':>10} {'seconds':>8}")

    def on_epoch(m, rec):
        m.save(out)  # every finished epoch is on disk, whatever happens next
        if progress is not None:
            progress.write(f"{rec['epoch']:>5} {rec['cd_steps']:>3} {_fmt(rec['train_rmse'], '10.4f')} "
                           f"{_fmt(rec['valid_rmse'], '10.4f')} {_fmt(rec['free_energy_train'], '10.2f')} "
                           f"{_fmt(rec['free_energy_valid'], '10.2f')} {rec['seconds']:8.2f}")
            progress.update(1)

    t0 = time.perf_counter()
    model.fit(train, valid=valid, callback=on_epoch)
    if progress is not None:
        progress.close()
    if args.epochs == 0:
        model.save(out)
    seconds = time.perf_counter() - t0
    final = dict(model.history_[-1]) if model.history_ else {}
    final["total_seconds"] = seconds
    result = {"history": model.history_, "final": final, "backend": model.backend_, "n_ratings": int(data.nnz),
              "n_train": int(train.nnz), "n_valid": 0 if valid is None else int(valid.nnz),
              "dataset": data.name, "model": os.path.abspath(out), "params": model._params.to_dict()}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    if args.plot:
        from .plotting import plot_history

        plot_history(model.history_, args.plot, title=f"RBM on {data.name}")
    print(f"trained {len(model.history_)} epochs in {seconds:.1f} s on {model.backend_}; "
          f"valid RMSE {_fmt(final.get('valid_rmse'), '.4f')}; model saved to {out}")
    if not args.quiet:
        user = args.user if args.user is not None else data.user_ids[0]
        if isinstance(user, str) and np.asarray(data.user_ids).dtype.kind in "iu":
            user = int(user)
        show_recommendations(model, train, user)
    return result


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (ValueError, KeyError, RuntimeError, OSError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {msg}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
