"""python -m rbm_cuda.serve: the recommender as a web page and a JSON API (docs/serve.md).

  python -m rbm_cuda.serve                         # trains on the embedded ml-latest-small (cached)
  python -m rbm_cuda.serve --model rbm-ml-100k.npz --port 8000
  python -m rbm_cuda.serve --model goodbooks.npz --data goodbooks-10k   # with to-read lists
  python -m rbm_cuda.serve --workers 2             # two server processes behind one port

Binds to 127.0.0.1 unless --host says otherwise.  Needs the serve extra: pip install 'rbm_cuda[serve]'.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

# How the main process tells --workers processes what to serve (uvicorn starts them from an import
# string, so the model travels as its file's path).
CONFIG_VARIABLE = "RBM_CUDA_SERVE_CONFIG"


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
    ap.add_argument("--workers", type=int, default=1,
                    help="server processes sharing the port, each with its own copy of the model and its share of "
                         "the cores (more requests per second on a machine with cores to spare)")
    return ap


def default_model_path():
    """The cached default model, named after the recommender's default settings, so that a version
    of rbm_cuda with other defaults trains its own instead of serving an older one."""
    import hashlib
    import json

    from .datasets.resolve import cache_dir
    from .model import RBM
    from .recommender import DEFAULT_PART_PARAMS, RBMRecommender

    defaults = json.dumps([RBMRecommender().get_params(), DEFAULT_PART_PARAMS, RBM().get_params()],
                          sort_keys=True, default=str)
    return cache_dir() / f"serve-ml-latest-small-{hashlib.sha256(defaults.encode()).hexdigest()[:12]}.npz"


def default_model(device="cpu"):
    """The recommender on the embedded ml-latest-small: loaded from the cache, or trained (with a
    progress bar) and cached."""
    from . import RBMRecommender, datasets
    from .serialization import ModelFileError

    path = default_model_path()
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


def _load(config):
    """(model, data) of a --workers process, from the main process's CONFIG_VARIABLE."""
    from .recommender import load_model

    data = None
    if config["data"]:
        from . import datasets

        data = datasets.load(config["data"], duplicates=config["duplicates"])
    return load_model(config["model"], device=config["device"]), data


def worker_app():
    """The app of one --workers process (uvicorn calls this factory in each of them)."""
    from .web.app import create_app

    return create_app(*_load(json.loads(os.environ[CONFIG_VARIABLE])))


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
    if args.workers < 1:
        print(f"error: --workers {args.workers}: expected at least 1", file=sys.stderr)
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
    where = f"open http://{args.host}:{args.port}/"
    what = f"serving {type(model).__name__} of {model.dataset_name_ or 'unnamed data'}"
    if args.workers == 1:
        print(f"{what}: {where}", file=sys.stderr, flush=True)
        uvicorn.run(create_app(model, data), host=args.host, port=args.port, log_level="warning")
        return 0
    # Each process loads the model file itself (checked as any model file is) and gets its share of
    # the cores for the Numba kernels and BLAS, whose idle threads would otherwise spin on the cores
    # the other processes need.
    os.environ[CONFIG_VARIABLE] = json.dumps({"model": os.fspath(args.model or default_model_path()),
                                              "data": args.data, "duplicates": args.duplicates,
                                              "device": args.device})
    share = str(max(1, (os.cpu_count() or 1) // args.workers))
    for variable in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, share)
    del model, data  # checked here, so that a bad file is one line; each process loads its own
    print(f"{what} in {args.workers} processes: {where}", file=sys.stderr, flush=True)
    uvicorn.run("rbm_cuda.serve:worker_app", factory=True, workers=args.workers, host=args.host, port=args.port,
                log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
