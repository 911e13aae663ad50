"""python -m rbm_cuda.serve: the recommender as a web page and a JSON API (docs/serve.md).

  python -m rbm_cuda.serve                         # trains on the embedded ml-latest-small (cached)
  python -m rbm_cuda.serve --model rbm-ml-100k.npz --port 8000
  python -m rbm_cuda.serve --model goodbooks.npz --data goodbooks-10k   # with to-read lists

Binds to 127.0.0.1 unless --host says otherwise.  Needs the serve extra: pip install 'rbm_cuda[serve]'.
"""

from __future__ import annotations

import argparse
import os
import sys


def build_parser() -> argparse.ArgumentParser:
    from .datasets import add_duplicates_argument

    ap = argparse.ArgumentParser(prog="python -m rbm_cuda.serve", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--model", default=None,
                    help="a model file from rbm_cuda.train (default: a recommender trained at start-up on the "
                         "embedded ml-latest-small, cached for the next start)")
    ap.add_argument("--data", default=None, help="the model's data set, for to-read lists (goodbooks-10k)")
    add_duplicates_argument(ap, default="last", ids_only=True)
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    ap.add_argument("--port", type=int, default=8000, help="port to listen on")
    ap.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"), help="where to score")
    return ap


def default_model(device="cpu"):
    """The recommender on the embedded ml-latest-small: loaded from the cache, or trained (with a
    progress bar) and cached."""
    from . import RBMRecommender, datasets
    from .datasets.resolve import cache_dir
    from .serialization import ModelFileError

    path = cache_dir() / "serve-ml-latest-small.npz"
    if path.exists():
        try:
            print(f"loading the cached model {path}", file=sys.stderr)
            return RBMRecommender.load(path, device=device)
        except ModelFileError as err:
            print(f"the cached model cannot be used ({err}); training a new one", file=sys.stderr)
    print("training the recommender on the embedded ml-latest-small (once; cached for later starts)",
          file=sys.stderr)
    model = RBMRecommender(device=device, progress=True).fit(datasets.load())
    os.makedirs(path.parent, exist_ok=True)
    model.save(path)
    return model


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        import uvicorn

        from .web.app import create_app
    except ImportError as err:
        print(f"error: the web app needs the serve extra ({err}): pip install 'rbm_cuda[serve]'", file=sys.stderr)
        return 2
    if not 0 < args.port < 65536:
        print(f"error: --port {args.port}: expected a port number 1-65535", file=sys.stderr)
        return 2
    try:
        from .recommender import load_model

        model = load_model(args.model, device=args.device) if args.model else default_model(args.device)
        data = None
        if args.data:
            from . import datasets

            data = datasets.load(args.data, duplicates=args.duplicates)
    except (ValueError, KeyError, OSError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    app = create_app(model, data)
    print(f"serving {type(model).__name__} of {model.dataset_name_ or 'unnamed data'}: open http://{args.host}:{args.port}/",
          file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
