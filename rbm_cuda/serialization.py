"""Model files: one .npz (loaded with allow_pickle=False) holding a JSON header and plain arrays.

Two formats share this layout:
- "rbm_cuda.RBM": one RBM.  Header keys: format, format_version, rbm_cuda_version, params, levels,
  dataset, n_users, n_items, epochs_done, step, history.  Arrays: W, bv, bh, their velocities (so
  training can resume exactly), user_ids, item_ids, the training ratings in CSR (train_indptr,
  train_indices, train_data), and item titles/authors/genres if known.
- "rbm_cuda.RBMRecommender": the recommender (rbm_cuda.recommender).  Header keys: format,
  format_version, rbm_cuda_version, params, levels, dataset, n_users, n_items, weights,
  validation, parts ({name: the part's params, levels, epochs_done, step, history}).  Arrays: the
  shared ids, training ratings and item metadata, and "<part>.W", "<part>.bv", "<part>.bh".

Every array is checked against the header before a model is built from it (shapes, dtypes, finite
values, CSR structure, ids), so a damaged or hostile file fails here, never inside a kernel.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import zipfile
import zlib

import numpy as np
import scipy.sparse as sp

from .params import validate_params

FORMAT = "rbm_cuda.RBM"
RECOMMENDER_FORMAT = "rbm_cuda.RBMRecommender"
FORMAT_VERSION = 1
ITEM_COLUMNS = ("title", "authors", "genres")

# A model file's JSON header is small (the history of a few hundred epochs is tens of kB).
MAX_HEADER_BYTES = 16 << 20
_NPY_HEADER_BYTES = 1 << 16  # the .npy format's header is at most 64 KiB (format 1.0)
# rbm_cuda writes members uncompressed; a compressed member expanding more than this is refused.
MAX_EXPANSION = 50

# What a damaged file can raise anywhere between opening it and building the model from it; zipfile
# answers damaged version, flag and method fields with NotImplementedError or RuntimeError.
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, NotImplementedError, RuntimeError)
# What reading a damaged model file can raise besides ModelFileError: readers turn it into one.
READ_ERRORS = _ZIP_ERRORS + (KeyError, TypeError, AttributeError, IndexError)


class ModelFileError(ValueError):
    """A model file that cannot be read: missing, truncated, corrupt, or from a newer version."""


# -- writing ------------------------------------------------------------------------------------------
def rbm_state(model, velocities=True, prefix=""):
    """(header fields, arrays) of one fitted RBM: its parameters and training state."""
    head = {"params": model.params_.to_dict(), "levels": model.levels_.tolist(),
            "epochs_done": int(model.epochs_done_), "step": int(model.step_), "history": model.history_}
    arrays = {f"{prefix}W": model.W_, f"{prefix}bv": model.bv_, f"{prefix}bh": model.bh_}
    if velocities:
        for name, v in zip(("W", "bv", "bh"), model._velocity):
            arrays[f"{prefix}velocity_{name}"] = v
    return head, arrays


def data_arrays(train, user_ids, item_ids, items):
    """The arrays a model file keeps of its training data: ids, CSR ratings and item metadata."""
    arrays = {
        "user_ids": np.asarray(user_ids), "item_ids": np.asarray(item_ids),
        "train_indptr": train.indptr.astype(np.int64),
        "train_indices": train.indices.astype(np.int32),
        "train_data": train.data.astype(np.float32),
    }
    if items is not None:
        for col in ITEM_COLUMNS:
            if col in items.columns:
                arrays[f"item_{col}"] = items[col].fillna("").astype(str).to_numpy().astype(str)
    return arrays


def write_npz(path, header, arrays) -> str:
    """Write header + arrays to `path` (".npz" appended when missing) through a temporary file in
    the same folder, renamed into place: a crash mid-write never leaves a half-written model.
    Returns the path written."""
    from . import __version__

    path = os.fspath(path)
    if not path.endswith(".npz"):
        path += ".npz"
    if os.path.isdir(path):
        raise ModelFileError(f"cannot write the model to {path}: it is a folder")
    header = {**header, "rbm_cuda_version": __version__}
    folder = os.path.dirname(os.path.abspath(path))
    prefix = f".{os.path.basename(path)}."
    # mkstemp opens with O_EXCL under a random name: nothing planted at a predictable name is followed.
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            # Uncompressed: float weights hardly compress, and compression slows every checkpoint.
            np.savez(fh, header=np.array(json.dumps(header, default=_plain)), **arrays)
        os.chmod(tmp, _new_file_mode(path))  # not mkstemp's 0600
        os.replace(tmp, path)
        # temporary files of earlier saves to this path that were killed mid-write (SIGKILL runs no cleanup)
        for name in os.listdir(folder):
            if name.startswith(prefix) and name.endswith(".tmp"):
                try:
                    os.unlink(os.path.join(folder, name))
                except OSError:
                    pass
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def _new_file_mode(path) -> int:
    """The mode a model file gets: an existing file's own (a checkpoint keeps a mode its owner set),
    else what the umask gives a new file, as open() would."""
    try:
        return os.stat(path).st_mode & 0o777
    except OSError:
        pass
    try:
        with open("/proc/self/status") as f:  # Linux: the umask, read without changing it
            mask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0o022)  # elsewhere reading it means setting it: put it straight back
        os.umask(mask)
    return 0o666 & ~mask


def _plain(x):
    """JSON for the numpy scalars and arrays a caller may put in parameters (np.int64(20), ...)."""
    if isinstance(x, (np.generic, np.ndarray)):
        return x.tolist()
    raise TypeError(f"{type(x).__name__} cannot be written to a model file's header")


def save_model(model, path) -> str:
    head, arrays = rbm_state(model)
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, **head, "dataset": model.dataset_name_,
              "n_users": int(model.n_users_), "n_items": int(model.n_items_)}
    arrays.update(data_arrays(model.train_, model.user_ids_, model.item_ids_, model.items_))
    return write_npz(path, header, arrays)


# -- reading ------------------------------------------------------------------------------------------
def read_header(path, formats=(FORMAT,)) -> tuple[dict, "np.lib.npyio.NpzFile"]:
    """(header, open npz) of a model file whose format is one of `formats`."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelFileError(f"model file {path} does not exist")
    if not zipfile.is_zipfile(path):
        raise ModelFileError(f"{path} is not a readable rbm_cuda model file: it is not a .npz archive "
                             "(truncated, or another kind of file)")
    _check_sizes(path)
    try:
        npz = np.load(path, allow_pickle=False)
        header = json.loads(str(_member(npz, "header", path)[()]))
    except READ_ERRORS as err:
        raise ModelFileError(f"{path} is not a readable rbm_cuda model file (truncated or corrupt?): {err}") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: the header is a JSON {type(header).__name__}, expected an object")
    if header.get("format") not in formats:
        raise ModelFileError(f"{path} is not an rbm_cuda model file of format {' or '.join(formats)} "
                             f"(format {header.get('format')!r})")
    version = header.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelFileError(f"{path}: format_version {version!r} is not a version number (expected an int >= 1)")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path} has model format version {version}, newer than this rbm_cuda reads ({FORMAT_VERSION}); "
            "upgrade rbm_cuda to load it")
    return header, npz


def _check_sizes(path):
    """Refuse a zip bomb before anything is decompressed: the sizes are in the zip's directory."""
    try:
        with zipfile.ZipFile(path) as z:
            members = z.infolist()
    except _ZIP_ERRORS as err:
        raise ModelFileError(f"{path} is not a readable rbm_cuda model file (truncated or corrupt?): {err}") from None
    for m in members:
        if m.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ModelFileError(f"{path}: member {m.filename} uses zip compression method {m.compress_type}, "
                                 "expected stored (0) or deflated (8): the file is corrupt or not from rbm_cuda")
        if m.filename == "header.npy" and m.file_size > MAX_HEADER_BYTES:
            raise ModelFileError(f"{path}: the header is {m.file_size} bytes uncompressed, more than the "
                                 f"{MAX_HEADER_BYTES} a model header can need")
        if m.compress_type != zipfile.ZIP_STORED and m.file_size > MAX_EXPANSION * max(m.compress_size, 1) \
                and m.file_size > (1 << 20):
            raise ModelFileError(f"{path}: member {m.filename} expands from {m.compress_size} to {m.file_size} "
                                 f"bytes, out of proportion for a model file (rbm_cuda writes it uncompressed)")


def file_format(path) -> str:
    """The format named in a model file's header ("rbm_cuda.RBM" or "rbm_cuda.RBMRecommender")."""
    header, npz = read_header(path, formats=(FORMAT, RECOMMENDER_FORMAT))
    npz.close()
    return header["format"]


def _member(npz, name, where):
    """npz[name], with any failure of the zip or .npy parsers (whose damaged-field errors range from
    ValueError to tokenize.TokenError) reported as a ModelFileError naming the member."""
    try:
        return npz[name]
    except MemoryError:
        raise
    except Exception as err:
        raise ModelFileError(f"{where}: array {name!r} cannot be read, the file is corrupt "
                             f"({type(err).__name__}: {err})") from None


def _array(npz, name, where, dtype_kinds, shape=None, finite=True):
    """npz[name], checked: dtype kind in dtype_kinds, shape (None entries match anything), finite;
    floating arrays are returned as float32."""
    if name not in npz.files:
        raise ModelFileError(f"{where}: array {name!r} is missing")
    if shape is not None and None not in shape and not set(dtype_kinds) - set("iuf"):
        # numbers of at most 8 bytes: a member larger than its declared shape needs is refused unread
        member = f"{name}.npy" if f"{name}.npy" in npz.zip.namelist() else name
        size, most = npz.zip.getinfo(member).file_size, 8 * math.prod(shape) + _NPY_HEADER_BYTES
        if size > most:
            raise ModelFileError(f"{where}: array {name!r} is {size} bytes uncompressed, while the shape the header "
                                 f"implies, {tuple(shape)}, needs at most {most}")
    a = _member(npz, name, where)
    if a.dtype.kind not in dtype_kinds:
        raise ModelFileError(f"{where}: array {name!r} has dtype {a.dtype}, expected kind {dtype_kinds!r}")
    if shape is not None and (a.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, a.shape))):
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ModelFileError(f"{where}: array {name!r} has shape {a.shape}, the header implies {want}")
    if a.dtype.kind == "f":  # the models compute in float32: a wider value that overflows it is not finite
        with np.errstate(over="ignore"):
            a = a.astype(np.float32, copy=False)
        if finite and not np.all(np.isfinite(a)):
            raise ModelFileError(f"{where}: array {name!r} holds NaN or infinite values (as float32)")
    return a


def _int_field(header, key, where, low=0):
    v = header.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or v < low:
        raise ModelFileError(f"{where}: header field {key!r} is {v!r}, expected an int >= {low}")
    return v


def read_data(npz, header, where):
    """(train csr, user_ids, item_ids, items DataFrame or None, n_users, n_items), all checked."""
    import pandas as pd

    n_users = _int_field(header, "n_users", where)
    n_items = _int_field(header, "n_items", where, low=1)
    user_ids = _array(npz, "user_ids", where, "iuU", (n_users,))
    item_ids = _array(npz, "item_ids", where, "iuU", (n_items,))
    for what, ids in (("user_ids", user_ids), ("item_ids", item_ids)):
        if len(np.unique(ids)) != len(ids):
            raise ModelFileError(f"{where}: {what} holds repeated ids")
    indptr = _array(npz, "train_indptr", where, "iu", (n_users + 1,)).astype(np.int64)
    nnz = int(indptr[-1]) if len(indptr) else 0
    indices = _array(npz, "train_indices", where, "iu", (None,))
    data = _array(npz, "train_data", where, "f", (len(indices),))
    if indptr[0] != 0 or np.any(np.diff(indptr) < 0) or nnz != len(indices):
        raise ModelFileError(f"{where}: train_indptr must rise from 0 to the {len(indices)} stored ratings")
    if len(indices) and (indices.min() < 0 or indices.max() >= n_items):
        raise ModelFileError(f"{where}: train_indices must lie in [0, {n_items}) (the header's n_items)")
    train = sp.csr_matrix((data, indices.astype(np.int32, copy=False), indptr), shape=(n_users, n_items))
    if not train.has_sorted_indices:
        train.sort_indices()
    if train.has_canonical_format is False:
        raise ModelFileError(f"{where}: a user's training row names an item twice")
    cols = {}
    for c in ITEM_COLUMNS:
        if f"item_{c}" in npz.files:
            cols[c] = _array(npz, f"item_{c}", where, "U", (n_items,))
    items = pd.DataFrame(cols) if cols else None
    return train, user_ids, item_ids, items, n_users, n_items


def _state_count(params, levels):
    return {"softmax": len(levels), "like": 2, "bernoulli": 1}[params.visible]


def build_rbm(cls, part, npz, where, train, user_ids, item_ids, items, dataset, device=None, prefix="",
              velocities=True):
    """An RBM from its header fields `part` and arrays `<prefix>W` ..., with every array checked."""
    try:
        params = dict(part["params"])
        if device is not None:
            params["device"] = device
        p = validate_params(**params)
        levels = np.asarray(part["levels"], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as err:
        raise ModelFileError(f"{where}: unreadable parameters or levels: {err}") from None
    if levels.ndim != 1 or len(levels) < 1 or not np.all(np.isfinite(levels)) or np.any(np.diff(levels) <= 0):
        raise ModelFileError(f"{where}: levels {part.get('levels')!r} must be finite, distinct and ascending")
    n_rows, n_cols = train.shape
    K, F = _state_count(p, levels), p.n_hidden
    model = cls(**params)
    model._params = p
    model.levels_ = levels
    model.n_users_, model.n_items_ = n_rows, n_cols
    model.dataset_name_ = str(dataset)
    model.epochs_done_ = _int_field(part, "epochs_done", where)
    model.step_ = _int_field(part, "step", where)
    history = part.get("history", [])
    model.history_ = history if isinstance(history, list) else []
    model.W_ = _array(npz, f"{prefix}W", where, "f", (n_cols, K, F))
    model.bv_ = _array(npz, f"{prefix}bv", where, "f", (n_cols, K))
    model.bh_ = _array(npz, f"{prefix}bh", where, "f", (F,))
    if velocities:
        model._velocity = [_array(npz, f"{prefix}velocity_{n}", where, "f", s)
                           for n, s in (("W", (n_cols, K, F)), ("bv", (n_cols, K)), ("bh", (F,)))]
    else:  # np.zeros, not zeros_like: the pages stay untouched (no memory) unless training resumes
        model._velocity = [np.zeros(a.shape, np.float32) for a in (model.W_, model.bv_, model.bh_)]
    model.user_ids_, model.item_ids_ = user_ids, item_ids
    model.items_ = items
    try:
        model._encode(train)  # ratings on the model's levels
    except ValueError as err:
        raise ModelFileError(f"{where}: training ratings do not fit the model: {err}") from None
    model._set_train(train)
    return model


def load_model(cls, path, device=None):
    where = os.fspath(path)
    header, npz = read_header(path)
    with npz:
        try:
            train, user_ids, item_ids, items, _, _ = read_data(npz, header, where)
            return build_rbm(cls, header, npz, where, train, user_ids, item_ids, items, header.get("dataset", ""),
                             device=device)
        except ModelFileError:
            raise
        except READ_ERRORS as err:
            raise ModelFileError(f"{where} is incomplete or corrupt: {err}") from None
