"""Top-n recommendations for every user, on this machine or a Dask cluster: ``recommend_all``.

Users are split into partitions of at most ``partition_size`` users. Each partition ranks its users
through the model's own ``recommend`` (in bounded blocks of users for an RBMRecommender, one user at a
time for a plain RBM) and becomes one Parquet file with one row per
(user, rank, item, score), written atomically. A killed or re-run job therefore recomputes only the
partitions whose file is missing. On a cluster the model file's bytes are broadcast to every worker
once, and each worker loads them with the checked model loader.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
import threading
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from .params import check_n

FORMAT = "rbm_cuda.batch"
FORMAT_VERSION = 1
MANIFEST = "_rbm_cuda_batch.json"  # a leading "_" keeps it out of pandas.read_parquet(out)
ROWS_PER_PARTITION = 1_000_000
COLUMNS = ("user", "rank", "item", "score")

# the models this worker process has loaded: sha256 of the file -> [model, plugins holding it]
_WORKER_MODEL: dict = {}
_WORKER_LOCK = threading.Lock()  # the threads of a worker (or of the default scheduler) load a model once


def recommend_all(model, users=None, *, n=10, out=None, client=None, exclude_seen=True, partition_size=None,
                  device="auto", progress=False, on_partition=None):
    """Top-n items for many users: Parquet files in `out`, or a Dask DataFrame when `out` is None.

    model: a model file path or a fitted RBMRecommender / RBM. users: raw user ids of the training data
    (default: all of them, in the model's order). n: list length; users with fewer candidates get
    shorter lists (no padding rows). exclude_seen: drop the items each user rated in training.
    partition_size: users per partition (default: enough for about 1,000,000 output rows).
    client: with `out`, a dask.distributed Client to run the partitions on (None: a loop in this
    process). Without `out` the frame runs wherever it is computed (a Client made in this process is
    Dask's default).
    device: where a model loaded from a file scores ("auto", "cpu" or "cuda"), here and on workers.
    on_partition: called with (partition number, path) as each partition's file is finished.

    With `out`, returns the paths of all partition files, in user order; partitions whose file
    already exists from an earlier run of the same job are skipped. Columns: user (the model's user id
    type), rank (int32, 1 = best), item (the item id type), score (float32, as ``recommend`` gives it).
    """
    check_n(n)
    n = int(n)
    loaded, path = _loaded(model, device)
    ids = _user_ids(loaded, users)
    size = _partition_size(partition_size, len(ids), n)
    parts = [ids[s:s + size] for s in range(0, len(ids), size)]
    if out is None:
        return _dask_frame(loaded, path, parts, n, exclude_seen, device)
    out = Path(out)
    check_pyarrow()
    out.mkdir(parents=True, exist_ok=True)
    files = [out / f"part-{p:05d}.parquet" for p in range(len(parts))]
    with _model_file(loaded, path) as model_file:
        token = _file_sha256(model_file)
        _claim(out, _manifest(token, ids, n, exclude_seen, size, len(parts)))
        todo = [p for p in range(len(parts)) if not files[p].exists()]
        bar = _bar(progress, len(parts), len(parts) - len(todo))
        try:
            if client is None:
                for p in todo:
                    _write(_frame(loaded, parts[p], n, exclude_seen), files[p])
                    _done(bar, on_partition, p, files[p])
            else:
                _run_on(client, model_file, token, device, parts, todo, files, n, exclude_seen, bar, on_partition)
        finally:
            if bar is not None:
                bar.close()
    _remove_stale_temporaries(out)
    return [str(f) for f in files]


# -- the work of one partition --------------------------------------------------------------------
def _frame(model, user_ids, n, exclude_seen) -> pd.DataFrame:
    """The (user, rank, item, score) rows of these users' top-n lists, from the model's recommend."""
    items, scores, counts = _lists(model, user_ids, n, exclude_seen)
    first = np.repeat(np.cumsum(counts) - counts, counts)  # each row's position of its user's rank 1
    return pd.DataFrame({
        "user": np.repeat(np.asarray(user_ids), counts),
        "rank": (np.arange(len(items)) - first + 1).astype(np.int32),
        "item": items,
        "score": scores.astype(np.float32),
    })


def _lists(model, user_ids, n, exclude_seen):
    """(item ids, scores) of all the lists one after another, and each list's length."""
    from .recommender import RBMRecommender

    if isinstance(model, RBMRecommender):
        items, scores = model.recommend(users=user_ids, n=n, exclude_seen=exclude_seen)
        keep = np.isfinite(scores)  # padding (fewer candidates than n) is NaN, at each row's end
        return items[keep], scores[keep], keep.sum(axis=1)
    lists = [model.recommend(u, n=n, exclude_seen=exclude_seen) for u in user_ids]
    counts = np.array([len(a) for a, _ in lists], dtype=np.int64)
    if not lists:
        return model.item_ids_[:0], np.zeros(0), counts
    return np.concatenate([a for a, _ in lists]), np.concatenate([s for _, s in lists]), counts


def _write(frame, path):
    """frame as Parquet at path, atomically: a temporary file in the same folder, synced, renamed."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as f:
            frame.to_parquet(f, engine="pyarrow", index=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _partition_task(token, device, user_ids, n, exclude_seen, path):
    """What a Dask worker runs for one partition, with the model its plugin installed; a partition
    finished by an earlier attempt is kept."""
    if not os.path.exists(path):
        _write(_frame(_worker_model(None, token, device), user_ids, n, exclude_seen), path)
    return path


def _partition_frame_task(payload, token, device, user_ids, n, exclude_seen):
    return _frame(_worker_model(payload, token, device), user_ids, n, exclude_seen)


def _worker_model(payload, token, device):
    """The model whose file has sha256 `token`: installed in this process by a worker plugin, or
    loaded here from the file's bytes (payload) by the first task that needs it."""
    with _WORKER_LOCK:
        if token not in _WORKER_MODEL:
            if payload is None:
                raise RuntimeError(f"model {token[:16]} is not installed on this Dask worker (its worker "
                                   "plugin did not run here)")
            _load(_spill(payload), token, device, plugins=0)
        return _WORKER_MODEL[token][0]


def _spill(payload) -> str:
    """The model file's bytes in a temporary file, so the caller can drop them before loading."""
    fd, tmp = tempfile.mkstemp(suffix=".npz", prefix="rbm_cuda-model-")
    with os.fdopen(fd, "wb") as f:
        f.write(payload)
    return tmp


def _load(tmp, token, device, plugins):
    """Load a spilled model file with the checked loader (unless this process has it already), count
    the plugins that hold it, and remove the file.  Callers hold _WORKER_LOCK."""
    from .recommender import load_model

    try:
        if token not in _WORKER_MODEL:
            _WORKER_MODEL[token] = [load_model(tmp, device=device), 0]
        _WORKER_MODEL[token][1] += plugins
    finally:
        os.unlink(tmp)


def _model_plugin(payload, token, device):
    """A worker plugin that carries the model file's bytes: the scheduler sends it to every worker
    once, also to workers that join or restart later, and each loads the model and drops the bytes.
    Unregistering it (teardown) frees the model once no other plugin of the same model holds it."""
    from distributed import WorkerPlugin

    class ModelPlugin(WorkerPlugin):
        # Its methods call module functions only: the class travels by value, and the lock cannot.
        def __init__(self, payload, token, device):  # arguments, not closure cells: the bytes travel once
            self.payload, self.token, self.device = payload, token, device
            self.name = f"rbm_cuda-model-{token[:16]}-{uuid.uuid4().hex[:8]}"

        def setup(self, worker):
            tmp = _spill(self.payload)
            self.payload = None  # the bytes are not needed in memory while the model loads
            _plugin_setup(tmp, self.token, self.device)

        def teardown(self, worker):
            _plugin_teardown(self.token)

    return ModelPlugin(payload, token, device)


def _plugin_setup(tmp, token, device):
    with _WORKER_LOCK:
        _load(tmp, token, device, plugins=1)


def _plugin_teardown(token):
    with _WORKER_LOCK:
        held = _WORKER_MODEL.get(token)
        if held is not None:
            held[1] -= 1
            if held[1] <= 0:
                del _WORKER_MODEL[token]


def _run_on(client, model_file, token, device, parts, todo, files, n, exclude_seen, bar, on_partition):
    from distributed import as_completed

    plugin = _model_plugin(Path(model_file).read_bytes(), token, device)
    client.register_plugin(plugin)
    plugin.payload = None  # the scheduler keeps its own copy, for workers that join later
    run = uuid.uuid4().hex[:8]
    futures = {}
    try:
        for p in todo:
            futures[client.submit(_partition_task, token, device, parts[p], n, exclude_seen, str(files[p]),
                                  key=f"rbm_cuda-batch-{run}-{p}", retries=2)] = p
        for f in as_completed(futures):
            f.result()
            _done(bar, on_partition, futures[f], files[futures[f]])
    finally:
        client.cancel(list(futures))
        client.unregister_worker_plugin(plugin.name)


def _dask_frame(model, path, parts, n, exclude_seen, device):
    """One delayed partition per block of users; the model file's bytes are one node of the graph,
    which each worker (or this process, on the default scheduler) fetches and loads once."""
    try:
        import dask
        import dask.dataframe as dd
    except ImportError:
        raise ImportError("recommend_all without `out` returns a Dask DataFrame and needs dask: "
                          "pip install 'rbm_cuda[dask]', or pass out=DIR to write Parquet") from None
    with _model_file(model, path) as model_file:
        payload = Path(model_file).read_bytes()
    token = _sha256(payload)
    node = dask.delayed(payload, name=f"rbm_cuda-model-{token}")
    task = dask.delayed(_partition_frame_task, pure=True)
    frames = [task(node, token, device, ids, n, exclude_seen, dask_key_name=f"rbm_cuda-batch-{token[:16]}-{p}")
              for p, ids in enumerate(parts)]
    meta = _frame(model, np.asarray(model.user_ids_[:0]), n, exclude_seen)
    return dd.from_delayed(frames, meta=meta, verify_meta=False)


# -- inputs ---------------------------------------------------------------------------------------
def _loaded(model, device):
    """(fitted model, its file path or None) from a path or a fitted RBMRecommender / RBM."""
    from .model import RBM
    from .recommender import RBMRecommender, load_model

    if isinstance(model, (str, os.PathLike)):
        return load_model(model, device=device), os.fspath(model)
    if isinstance(model, (RBMRecommender, RBM)):
        model._check_fitted()
        return model, None
    raise TypeError(f"model must be a model file path or a fitted RBMRecommender or RBM, got {type(model).__name__}")


def _user_ids(model, users):
    if users is None:
        return np.asarray(model.user_ids_)
    users = np.atleast_1d(np.asarray(users))
    if users.ndim != 1:
        raise ValueError(f"users must be a 1-D sequence of user ids, got shape {users.shape}")
    idx = np.atleast_1d(model.user_index(users))  # unknown ids raise a KeyError naming them
    return np.asarray(model.user_ids_)[idx]


def _partition_size(size, n_users, n):
    if size is None:
        return max(1, min(max(n_users, 1), ROWS_PER_PARTITION // n))
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"partition_size must be a whole number >= 1, got {size!r}")
    return int(size)


@contextlib.contextmanager
def _model_file(model, path):
    """The model's file: `path`, or the fitted model saved to a temporary file for the duration."""
    if path is not None:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="rbm_cuda-batch-") as d:
        yield model.save(os.path.join(d, "model.npz"))


def _file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _sha256(data) -> str:
    return hashlib.sha256(data).hexdigest()


def check_pyarrow():
    """ImportError saying how to install pyarrow, when it is missing (before a job starts)."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise ImportError("writing Parquet needs pyarrow: pip install 'rbm_cuda[batch]'") from None


# -- the output folder ----------------------------------------------------------------------------
def _manifest(token, ids, n, exclude_seen, size, n_parts) -> dict:
    """What identifies a job: a re-run into the same folder must ask for the same lists."""
    id_text = "\n".join(map(str, ids.tolist())).encode()
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "model_sha256": token,
            "users_sha256": _sha256(id_text), "n_users": int(len(ids)), "n": n,
            "exclude_seen": bool(exclude_seen), "partition_size": size, "n_partitions": n_parts,
            "columns": list(COLUMNS)}


def _claim(out, manifest):
    """Write the job's manifest into out, or check that the one there describes the same job."""
    where = out / MANIFEST
    if where.exists():
        try:
            old = json.loads(where.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"{where} is not a readable batch manifest ({err}); use another --out folder") from None
        old = old if isinstance(old, dict) else {}
        differ = [f"{k} {old.get(k)!r} there, {v!r} here" for k, v in manifest.items() if old.get(k) != v]
        if differ:
            raise ValueError(f"{out} holds the output of another job ({'; '.join(differ)}; see {where}): "
                             "use another --out folder or empty this one")
        return
    strays = [p.name for p in out.glob("part-*.parquet")]
    if strays:
        raise ValueError(f"{out} holds partition files ({strays[0]}, ...) but no {MANIFEST}: "
                         "use another --out folder or empty this one")
    tmp = out / f".{MANIFEST}.{uuid.uuid4().hex}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(tmp, where)


def _remove_stale_temporaries(out):
    """Temporary files of attempts that died mid-write (a killed worker); the partition was redone."""
    for p in out.glob(".part-*.parquet.*.tmp"):
        p.unlink(missing_ok=True)


def _bar(progress, total, done):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, desc="recommend_all", unit="partition", file=sys.stderr)


def _done(bar, on_partition, p, path):
    if bar is not None:
        bar.update(1)
    if on_partition is not None:
        on_partition(p, str(path))
