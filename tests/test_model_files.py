"""Hostile model files: every array is checked before a kernel sees it, zip bombs are refused before
anything is decompressed, and every failure is a ModelFileError that says what is wrong."""

import json
import os

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rbm_cuda import RBM
from rbm_cuda.recommend import main as recommend_main
from rbm_cuda.serialization import ModelFileError, write_npz


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    rng = np.random.default_rng(0)
    X = sp.csr_matrix((rng.integers(1, 6, (30, 12)) * (rng.random((30, 12)) < 0.4)).astype(np.float32))
    path = tmp_path_factory.mktemp("m") / "m.npz"
    RBM(n_hidden=4, epochs=1, device="cpu").fit(X).save(path)
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return path, arrays


def write(path, arrays, header=None, compressed=False):
    arrays = dict(arrays)
    if header is not None:
        arrays["header"] = np.array(header if isinstance(header, str) else json.dumps(header))
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


def header_of(arrays):
    return json.loads(str(arrays["header"][()]))


@pytest.mark.parametrize("name, value, phrase", [
    ("train_indices", "big", "train_indices must lie in"),
    ("train_indices", "n_items", "train_indices must lie in"),
    ("bv", "short", "array 'bv' has shape"),
    ("W", "nan", "array 'W' holds NaN"),
    ("bh", "int", "array 'bh' has dtype"),
    ("train_indptr", "falling", "train_indptr must rise"),
    ("user_ids", "short", "array 'user_ids' has shape"),
    ("train_data", "inf", "array 'train_data' holds NaN"),
    ("W", "float64-huge", "array 'W' holds NaN or infinite values \\(as float32\\)"),  # finite in float64 only
])
def test_damaged_arrays_are_refused(tmp_path, saved, name, value, phrase):
    path, arrays = saved
    a = arrays[name].copy()
    if value == "big":
        a[0] = 10**6
    elif value == "n_items":
        a[-1] = arrays["W"].shape[0]
    elif value == "short":
        a = a[:3]
    elif value in ("nan", "inf"):
        a = a.astype(np.float32)
        a.flat[0] = np.nan if value == "nan" else np.inf
    elif value == "int":
        a = a.astype(np.int64)
    elif value == "float64-huge":
        a = a.astype(np.float64)
        a.flat[0] = 1e300
    elif value == "falling":
        a[1], a[2] = a[2], a[1] - 1
    bad = write(tmp_path / "bad.npz", {**arrays, name: a})
    with pytest.raises(ModelFileError, match=phrase):
        RBM.load(bad)


def test_a_segfault_case_is_one_line_from_the_cli(tmp_path, saved, capsys):
    path, arrays = saved
    idx = arrays["train_indices"].copy()
    idx[0] = 10**6
    bad = write(tmp_path / "bad.npz", {**arrays, "train_indices": idx})
    assert recommend_main(["--model", str(bad), "--user", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "train_indices" in err and err.count("\n") == 1


def test_zip_bomb_header_is_refused_before_it_is_read(tmp_path, saved):
    path, arrays = saved
    h = header_of(arrays)
    h["history"] = [" " * 1024] * (20 * 1024)  # 20 MiB of spaces, deflated to a few kB
    bomb = write(tmp_path / "bomb.npz", arrays, h, compressed=True)
    assert os.path.getsize(bomb) < 2 << 20
    with pytest.raises(ModelFileError, match="the header is .* bytes uncompressed"):
        RBM.load(bomb)


@pytest.mark.parametrize("header, phrase", [
    ([1, 2], "the header is a JSON list"),
    ("format_version_str", "format_version '1' is not a version number"),
    ("not json {", "not a readable rbm_cuda model file"),
])
def test_bad_headers_get_their_own_message(tmp_path, saved, header, phrase):
    path, arrays = saved
    if header == "format_version_str":
        header = {**header_of(arrays), "format_version": "1"}
    bad = write(tmp_path / "bad.npz", arrays, header)
    with pytest.raises(ModelFileError, match=phrase):
        RBM.load(bad)


def test_a_text_file_is_not_called_pickled_data(tmp_path):
    p = tmp_path / "notes.npz"
    p.write_text("hello, this is not a model")
    with pytest.raises(ModelFileError, match="not a .npz archive") as e:
        RBM.load(p)
    assert "pickle" not in str(e.value)


def test_save_does_not_follow_a_planted_symlink(tmp_path, saved):
    path, _ = saved
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    out = tmp_path / "out.npz"
    os.symlink(victim, tmp_path / "out.npz.tmp.npz")  # the name the writer once used
    RBM.load(path).save(out)
    assert victim.read_text() == "keep me"
    assert RBM.load(out).W_.shape == RBM.load(path).W_.shape


def test_a_failed_save_leaves_no_temporary_file_and_the_next_save_clears_killed_ones(tmp_path, saved):
    path, _ = saved
    model = RBM.load(path)
    out = tmp_path / "out.npz"
    stale = tmp_path / ".out.npz.k1ll3d.tmp"  # what a save killed mid-write (SIGKILL) leaves
    stale.write_bytes(b"half a model")
    with pytest.raises(TypeError, match="cannot be written to a model file's header"):
        write_npz(out, {"x": object()}, {})  # fails inside the write
    assert sorted(p.name for p in tmp_path.iterdir()) == [stale.name]
    model.save(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.npz"]
    mask = os.umask(0o022)
    os.umask(mask)
    assert os.stat(out).st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's 0600
    os.chmod(out, 0o600)  # a mode the owner chose is kept by the next save
    model.save(out)
    assert os.stat(out).st_mode & 0o777 == 0o600


def test_a_zip_bomb_in_any_member_is_refused_before_it_is_read(tmp_path, saved):
    path, arrays = saved
    bomb = write(tmp_path / "bomb.npz", {**arrays, "junk": np.zeros(50 << 20, np.uint8)}, compressed=True)
    assert os.path.getsize(bomb) < 1 << 20
    with pytest.raises(ModelFileError, match="junk"):
        RBM.load(bomb)
    # stored, not compressed: the member is still out of proportion to the shape the header gives it
    big = write(tmp_path / "big.npz", {**arrays, "bh": np.zeros(1 << 17, np.float64)})
    with pytest.raises(ModelFileError, match=r"array 'bh' is 1048704 bytes uncompressed, while the shape the "
                                             r"header implies, \(4,\), needs at most"):
        RBM.load(big)


# -- fuzz: any byte-level damage is a ModelFileError, never a crash or another exception ------------------
@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_model_files_fail_cleanly(tmp_path, saved, data):
    path, _ = saved
    raw = bytearray(open(path, "rb").read())
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.one_of(st.none(), st.integers(0, len(raw))))
    bad = tmp_path / "fuzz.npz"
    bad.write_bytes(bytes(raw[:cut] if cut is not None else raw))
    try:
        m = RBM.load(bad)
    except ModelFileError:
        return
    # a file that still loads must be usable: its arrays passed every check
    m.recommend(m.user_ids_[0], n=3)


def _patched(path, out, signature, offset, value):
    """A copy of path with the 16-bit field at `offset` of the first zip record `signature` set to value."""
    raw = bytearray(open(path, "rb").read())
    at = raw.index(signature) + offset
    raw[at:at + 2] = value.to_bytes(2, "little")
    out.write_bytes(bytes(raw))
    return out


@pytest.mark.parametrize("signature, offset, value, phrase", [
    (b"PK\x01\x02", 10, 99, "compression method 99"),           # central directory: unknown method
    (b"PK\x01\x02", 8, 1, "cannot be read, the file is corrupt"),  # "encrypted" flag
    (b"PK\x01\x02", 8, 1 << 5, "cannot be read, the file is corrupt"),  # "compressed patched data" flag
    (b"PK\x01\x02", 6, 99, "not a readable rbm_cuda model file"),  # needs zip version 9.9 to extract
])
def test_damaged_zip_fields_are_model_file_errors(tmp_path, saved, signature, offset, value, phrase):
    path, _ = saved
    bad = _patched(path, tmp_path / "bad.npz", signature, offset, value)
    with pytest.raises(ModelFileError, match=phrase):
        RBM.load(bad)


def test_a_damaged_npy_header_is_a_model_file_error(tmp_path, saved):
    path, _ = saved
    raw = bytearray(open(path, "rb").read())
    at = raw.index(b"'shape': (") + len(b"'shape': (")
    raw[at] = ord("{")  # an unclosed brace: numpy's header parser raises tokenize.TokenError
    bad = tmp_path / "bad.npz"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ModelFileError, match="cannot be read"):
        RBM.load(bad)
