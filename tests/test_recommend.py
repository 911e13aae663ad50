"""Recommendations people use: python -m rbm_cuda.recommend (known users, to-read candidates, fold-in of
new users' histories, --find, --similar, CSV export, one-line errors), and plot_history.

The data tests train tiny models (a few seconds) on MovieLens 100K and on a slice of goodbooks-10k
(v1 ratings + to_read.sorted.csv + books.csv) under $RBM_CUDA_DATA; they skip without it."""

import json
import os
import subprocess
import sys
import types

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from rbm_cuda import RBM
from rbm_cuda import foldin
from rbm_cuda.recommend import main

DATA = os.environ.get("RBM_CUDA_DATA", "")
ML = os.path.join(DATA, "ml-100k")
GB = os.path.join(DATA, "goodbooks-10k")
HAS_ML = bool(DATA) and os.path.isfile(os.path.join(ML, "u.data"))
HAS_GB = bool(DATA) and all(os.path.isfile(os.path.join(GB, f))
                            for f in ("v1/ratings.csv", "to_read.sorted.csv", "books.csv"))
need_ml = pytest.mark.skipif(not HAS_ML, reason="needs $RBM_CUDA_DATA/ml-100k")
need_gb = pytest.mark.skipif(not HAS_GB, reason="needs $RBM_CUDA_DATA/goodbooks-10k (v1/ratings.csv, "
                                                "to_read.sorted.csv, books.csv)")


def run_cli(capsys, *argv):
    """(exit status, stdout, stderr) of main(argv), in this process."""
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc, err, *phrases):
    assert rc == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for p in phrases:
        assert p in err, (p, err)


# -- without data: a tiny synthetic model ---------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(1)
    dense = rng.integers(1, 6, size=(40, 25)) * (rng.random((40, 25)) < 0.4)
    X = sp.csr_matrix(dense.astype(np.float32))
    return RBM(n_hidden=6, epochs=2, device="cpu", seed=3, batch_size=10).fit(X), X


def test_recommend_for_equals_recommend_on_a_training_row(tiny):
    model, X = tiny
    for u in (0, 7):
        want = model.recommend(u, n=8)
        got_row = model.recommend_for(X[u], n=8)
        got_map = model.recommend_for({int(i): float(v) for i, v in zip(X[u].indices, X[u].data)}, n=8)
        for got in (got_row, got_map):
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_allclose(got[1], want[1], rtol=1e-6)
        assert not set(want[0]) & set(X[u].indices.tolist())


def test_similar_items_is_cosine_of_weight_vectors(tiny):
    model, _ = tiny
    W = model.W_.reshape(model.n_items_, -1).astype(np.float64)
    cos = W @ W[4] / (np.linalg.norm(W, axis=1) * np.linalg.norm(W[4]))
    cos[4] = -np.inf
    ids, sims = model.similar_items(4, n=5)
    np.testing.assert_array_equal(ids, np.argsort(-cos, kind="stable")[:5])
    np.testing.assert_allclose(sims, np.sort(cos)[::-1][:5], rtol=1e-5)
    assert 4 not in ids


def test_cli_on_a_model_without_titles(tiny, capsys, tmp_path):
    model, X = tiny
    path = model.save(tmp_path / "raw.npz")
    rc, out, err = run_cli(capsys, "--model", path, "--history", "1=5,2=3,99=4,1=4", "--n", 3)
    assert rc == 0, err
    assert "99=4  (entry 3: no item with this id (the model has no titles))" in out
    assert "note: item 1 is rated twice; the last rating, 4, is used" in out
    ids, _ = model.recommend_for({1: 4.0, 2: 3.0}, n=3)
    assert [int(line.split()[2]) for line in out.split("Top 3 items")[1].splitlines()[2:5]] == ids.tolist()
    rc, _, err = run_cli(capsys, "--model", path, "--find", "x")
    assert_one_line_error(rc, err, "has no item titles")
    rc, _, err = run_cli(capsys, "--model", path, "--user", 40)
    assert_one_line_error(rc, err, "unknown user id 40")


def test_parse_history_titles_with_commas_and_equals():
    e = foldin.parse_history("Usual Suspects, The (1995)=5, 50=4\nid:7=3,The Hunger Games (The Hunger Games, #1)=4.0")
    assert [(x.key, x.rating) for x in e] == [("Usual Suspects, The (1995)", "5"), ("50", "4"), ("id:7", "3"),
                                            ("The Hunger Games (The Hunger Games, #1)", "4.0")]
    with pytest.raises(ValueError, match="has no rating"):
        foldin.parse_history("50=4,Toy Story (1995)")
    with pytest.raises(ValueError, match="empty"):
        foldin.parse_history(" , ")


def test_history_file_formats(tmp_path):
    p = tmp_path / "h.csv"
    p.write_text("user_id,book_id,rating\n9,12,5\n9,3,4\n")
    assert [(e.key, e.rating) for e in foldin.read_history_file(p)] == [("12", "5"), ("3", "4")]
    p.write_text('title,rating\n"Usual Suspects, The (1995)",5\n')
    assert [(e.key, e.rating) for e in foldin.read_history_file(p)] == [("title:Usual Suspects, The (1995)", "5")]
    p.write_text("12;5\n3;4\n")
    assert [(e.key, e.where) for e in foldin.read_history_file(p)] == [("12", "h.csv, line 1"), ("3", "h.csv, line 2")]
    p.write_text("user_id,item_id,rating\n1,2,5\n2,2,4\n")
    with pytest.raises(ValueError, match="ratings of 2 users"):
        foldin.read_history_file(p)
    p.write_text("12,5\n3\n")
    with pytest.raises(ValueError, match=r"h.csv, line 2: expected ITEM,RATING"):
        foldin.read_history_file(p)


def test_plot_history(tmp_path):
    pytest.importorskip("matplotlib")
    from rbm_cuda.plotting import plot_history

    hist = [{"epoch": e, "train_rmse": 1.0 - 0.02 * e, "valid_rmse": 1.02 - 0.01 * e, "free_energy_train": -5.0 + e,
             "free_energy_valid": -4.5 + 1.1 * e, "seconds": 0.5, "cd_steps": 1 if e < 4 else 3} for e in range(1, 7)]
    for h in (hist, [dict(r, valid_rmse=None, free_energy_valid=None) for r in hist]):
        path = plot_history(h, tmp_path / "c.png")
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        assert os.path.getsize(path) > 10_000
    with pytest.raises(ValueError, match="empty"):
        plot_history([], tmp_path / "e.png")


# -- MovieLens 100K ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ml(tmp_path_factory):
    from rbm_cuda.datasets import load_movielens_100k

    data = load_movielens_100k(ML)
    model = RBM(n_hidden=16, epochs=2, learning_rate=0.05, device="cpu", seed=0).fit(data)
    path = str(tmp_path_factory.mktemp("ml") / "ml.npz")
    model.save(path)
    return types.SimpleNamespace(path=path, model=RBM.load(path, device="cpu"), data=data)


@pytest.mark.data
@need_ml
class TestMovieLens:
    def test_user(self, ml, capsys, tmp_path):
        csv = tmp_path / "u.csv"
        rc, out, err = run_cli(capsys, "--model", ml.path, "--user", 1, "--n", 5, "--csv", csv)
        assert rc == 0, err
        ids, scores = ml.model.recommend(1, n=5)
        assert "User 1 rated 272 items; the 5 rated highest:" in out
        assert "Top 5 unseen items for user 1 (score = expected rating, 1 to 5)" in out
        for i, s in zip(ids, scores):
            assert f"{s:.2f}" in out and ml.data.items["title"].iat[ml.data.item_index(i)] in out
        table = pd.read_csv(csv)
        assert list(table.columns[:6]) == ["kind", "rank", "item_id", "title", "genres", "rating"]
        rated = table[table.kind == "rated"]
        assert len(rated) == 272 and rated.rating.is_monotonic_decreasing
        rec = table[table.kind == "recommended"]
        assert rec.item_id.tolist() == ids.tolist()
        np.testing.assert_allclose(rec.score, scores, atol=1e-4)
        assert not set(rec.item_id) & set(rated.item_id)

    def test_history_fold_in(self, ml, capsys, tmp_path):
        hist = "Star Wars (1977)=5,Usual Suspects, The (1995)=4,No Such Film (2031)=3,1=2,toy story (1995)=1"
        rc, out, err = run_cli(capsys, "--model", ml.path, "--history", hist, "--n", 5, "--csv", tmp_path / "h.csv")
        assert rc == 0, err
        assert "History: 5 entries, 3 items known to the model" in out
        assert "Not known to the model, not used (1):" in out
        assert "No Such Film (2031)=3  (entry 3: no item with this id or title)" in out
        assert "item 1 (Toy Story (1995)) is rated twice; the last rating, 1, is used" in out
        ids, scores = ml.model.recommend_for({50: 5.0, 12: 4.0, 1: 1.0}, n=5)
        table = pd.read_csv(tmp_path / "h.csv")
        assert table[table.kind == "recommended"].item_id.tolist() == ids.tolist()
        assert table[table.kind == "rated"].item_id.tolist() == [50, 12, 1]
        assert table[table.kind == "unknown"].title.tolist() == ["No Such Film (2031)"]
        assert not {50, 12, 1} & set(ids.tolist())

    def test_fold_in_of_a_training_user_matches_recommend(self, ml):
        m = ml.model
        u = m.user_index(7)
        row = m.train_[u]
        entries = [foldin.HistoryEntry(str(m.item_ids_[j]), str(v), "") for j, v in zip(row.indices, row.data)]
        res, ids, scores = foldin.fold_in(m, entries, n=10)
        want = m.recommend(7, n=10)
        np.testing.assert_array_equal(ids, want[0])
        np.testing.assert_allclose(scores, want[1], rtol=1e-6)

    def test_history_file_gives_the_same(self, ml, capsys, tmp_path):
        p = tmp_path / "me.csv"
        p.write_text('movie_id,title,rating\n50,"Star Wars (1977)",5\n12,"Usual Suspects, The (1995)",4\n')
        rc, out_file, err = run_cli(capsys, "--model", ml.path, "--history-file", p)
        assert rc == 0, err
        rc, out_text, err = run_cli(capsys, "--model", ml.path, "--history", "50=5,Usual Suspects, The (1995)=4")
        assert rc == 0, err
        assert out_file.split("Top 10 items")[1] == out_text.split("Top 10 items")[1]

    def test_find_and_similar(self, ml, capsys):
        rc, out, err = run_cli(capsys, "--model", ml.path, "--find", "star wars")
        assert rc == 0 and "1 item matches 'star wars'" in out and "50      583  Star Wars (1977)" in out
        rc, out, err = run_cli(capsys, "--model", ml.path, "--find", "zzzz")
        assert rc == 0 and "No item title contains 'zzzz'." in out
        rc, out, err = run_cli(capsys, "--model", ml.path, "--similar", "Star Wars (1977)", "--n", 3)
        assert rc == 0, err
        ids, sims = ml.model.similar_items(50, n=3)
        assert out.startswith("Items most similar to 50: Star Wars (1977)")
        for i, s in zip(ids, sims):
            assert f"{s:.3f}" in out and f" {i}  " in out
        rc, out2, err = run_cli(capsys, "--model", ml.path, "--similar", 50, "--n", 3)
        assert out2 == out

    def test_suggestions_and_min_ratings(self, ml, capsys, tmp_path):
        rc, _, err = run_cli(capsys, "--model", ml.path, "--similar", "Toy Story")
        assert_one_line_error(rc, err, "unknown item 'Toy Story'", "did you mean 'Toy Story (1995)' (id 1)?")
        rc, out, err = run_cli(capsys, "--model", ml.path, "--user", 1, "--n", 5, "--min-ratings", 100,
                               "--csv", tmp_path / "m.csv")
        assert rc == 0, err
        counts = ml.data.item_counts()
        popular = ml.data.item_ids[counts >= 100]
        assert f"Top 5 of the {len(popular)} items with at least 100 ratings" in out
        rec = pd.read_csv(tmp_path / "m.csv").query("kind == 'recommended'")
        assert rec.item_id.tolist() == ml.model.recommend(1, n=5, items=popular)[0].tolist()
        assert (counts[ml.data.item_index(rec.item_id.to_numpy())] >= 100).all()

    def test_errors(self, ml, capsys, tmp_path):
        m = ml.path
        rc, _, err = run_cli(capsys, "--model", m, "--user", 99999)
        assert_one_line_error(rc, err, "unknown user id 99999", "943 users")
        rc, _, err = run_cli(capsys, "--model", m, "--user", "abc")
        assert_one_line_error(rc, err, "unknown user id 'abc'")
        rc, _, err = run_cli(capsys, "--model", m, "--similar", "No Such Film")
        assert_one_line_error(rc, err, "unknown item 'No Such Film' (the model knows 1682 items): no item with this "
                                       "id or title; find ids with --find TEXT")
        rc, _, err = run_cli(capsys, "--model", m, "--similar", "Chasing Amy (1997)")  # ml-100k has 18 repeated titles
        assert_one_line_error(rc, err, "the title names 2 items (ids 246, 268): give an id instead")
        rc, _, err = run_cli(capsys, "--model", m, "--history", "50=6")
        assert_one_line_error(rc, err, "rating 6 is not one of the model's levels [1, 2, 3, 4, 5]")
        rc, _, err = run_cli(capsys, "--model", m, "--history", "50=great")
        assert_one_line_error(rc, err, "'great' is not a number")
        rc, _, err = run_cli(capsys, "--model", m, "--history", "nope=4,99999=5")
        assert_one_line_error(rc, err, "none of the 2 history items is known to the model ('nope', '99999')")
        rc, _, err = run_cli(capsys, "--model", m, "--history-file", tmp_path / "missing.csv")
        assert_one_line_error(rc, err, "missing.csv does not exist")
        rc, _, err = run_cli(capsys, "--model", m, "--user", 1, "--candidates", "to-read", "--data", ML)
        assert_one_line_error(rc, err, "data set 'ml-100k' has no to-read lists")
        rc, _, err = run_cli(capsys, "--model", m, "--history", "50=5", "--candidates", "to-read")
        assert_one_line_error(rc, err, "needs --user")

    def test_an_id_beyond_int64_is_unknown_not_an_overflow(self, ml, capsys):
        rc, _, err = run_cli(capsys, "--model", ml.path, "--user", "99999999999999999999999")
        assert_one_line_error(rc, err, "unknown user id 99999999999999999999999")

    def test_bad_model_files(self, ml, capsys, tmp_path):
        raw = open(ml.path, "rb").read()
        (tmp_path / "trunc.npz").write_bytes(raw[: len(raw) // 2])
        corrupt = bytearray(raw)
        mid = len(raw) // 2
        corrupt[mid:mid + 64] = bytes(64)
        (tmp_path / "corrupt.npz").write_bytes(bytes(corrupt))
        (tmp_path / "notes.npz").write_text("hello")
        with np.load(ml.path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        header = json.loads(str(arrays["header"][()]))
        header["format_version"] = 99
        arrays["header"] = np.array(json.dumps(header))
        np.savez(tmp_path / "newer.npz", **arrays)
        cases = [("trunc.npz", "not a readable rbm_cuda model file"), ("corrupt.npz", "corrupt"),
                 ("notes.npz", "not a readable rbm_cuda model file"), ("missing.npz", "does not exist"),
                 ("newer.npz", "format version 99, newer than this rbm_cuda reads (1); upgrade rbm_cuda")]
        for name, phrase in cases:
            rc, _, err = run_cli(capsys, "--model", tmp_path / name, "--user", 1)
            assert_one_line_error(rc, err, phrase)

    def test_module_entry_point(self, ml, tmp_path):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.path.dirname(os.path.dirname(
            os.path.abspath(__import__("rbm_cuda").__file__))), os.environ.get("PYTHONPATH")])))
        ok = subprocess.run([sys.executable, "-m", "rbm_cuda.recommend", "--model", ml.path, "--find", "Toy Story"],
                            capture_output=True, text=True, env=env, timeout=120)
        assert ok.returncode == 0 and "Toy Story (1995)" in ok.stdout, ok.stderr
        bad = subprocess.run([sys.executable, "-m", "rbm_cuda.recommend", "--model", ml.path, "--user", "0"],
                             capture_output=True, text=True, env=env, timeout=120)
        assert bad.returncode == 2 and bad.stderr.startswith("error: unknown user id 0")
        assert "Traceback" not in bad.stderr and bad.stdout == ""


# -- goodbooks-10k ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gb(tmp_path_factory):
    from rbm_cuda.datasets import RatingData, load_goodbooks

    full = load_goodbooks(GB, duplicates="last")
    rows = np.arange(2000)  # a slice of the users keeps training to a second
    data = RatingData(full.ratings[rows], full.user_ids[rows], full.item_ids, full.levels, items=full.items,
                      to_read=full.to_read[rows], name=full.name)
    model = RBM(n_hidden=8, epochs=2, learning_rate=0.05, device="cpu", seed=0).fit(data)
    path = str(tmp_path_factory.mktemp("gb") / "gb.npz")
    model.save(path)
    return types.SimpleNamespace(path=path, model=RBM.load(path, device="cpu"), data=data)


def _to_read_user(gb):
    """A user of the slice with at least 5 unrated books on their to-read list."""
    tr, r = gb.data.to_read, gb.data.ratings
    for u in range(gb.data.n_users):
        want = set(tr.indices[tr.indptr[u]:tr.indptr[u + 1]]) - set(r.indices[r.indptr[u]:r.indptr[u + 1]])
        if len(want) >= 5 and r.indptr[u + 1] > r.indptr[u]:
            return int(gb.data.user_ids[u]), gb.data.item_ids[sorted(want)]
    pytest.skip("no user with a to-read list in the slice")


@pytest.mark.data
@need_gb
class TestGoodbooks:
    def test_user_with_authors_and_csv(self, gb, capsys, tmp_path):
        user, _ = _to_read_user(gb)
        rc, out, err = run_cli(capsys, "--model", gb.path, "--user", user, "--n", 4, "--csv", tmp_path / "b.csv")
        assert rc == 0, err
        ids, scores = gb.model.recommend(user, n=4)
        table = pd.read_csv(tmp_path / "b.csv")
        assert list(table.columns) == ["kind", "rank", "item_id", "title", "authors", "rating", "score"]
        rec = table[table.kind == "recommended"]
        assert rec.item_id.tolist() == ids.tolist()
        for t, a in zip(rec.title, rec.authors):
            assert f"{t} by {a}"[:60] in out

    def test_to_read_candidates(self, gb, capsys, monkeypatch, tmp_path):
        user, to_read = _to_read_user(gb)
        monkeypatch.setenv("RBM_CUDA_DATA", DATA)  # the model's data set name, resolved by datasets.load
        rc, out, err = run_cli(capsys, "--model", gb.path, "--user", user, "--n", 3, "--candidates", "to-read",
                               "--csv", tmp_path / "t.csv")
        assert rc == 0, err
        assert f"items on user {user}'s to-read list" in out
        rec = pd.read_csv(tmp_path / "t.csv").query("kind == 'recommended'")
        assert len(rec) == 3 and set(rec.item_id) <= set(to_read.tolist())
        want = gb.model.recommend(user, n=3, items=to_read)[0]
        assert rec.item_id.tolist() == want.tolist()
        rc, out2, err = run_cli(capsys, "--model", gb.path, "--user", user, "--n", 3, "--candidates", "to-read",
                                "--data", GB)
        assert rc == 0 and out2.rstrip() == out.split("\nwrote")[0].rstrip()
        # the data flags of train and evaluate: v1's repeated rows are an error when asked for
        rc, _, err = run_cli(capsys, "--model", gb.path, "--user", user, "--n", 3, "--candidates", "to-read",
                             "--data", GB, "--duplicates", "error")
        assert rc == 2 and "occur more than once" in err and err.count("\n") == 1

    def test_history_by_title_and_the_1984_ambiguity(self, gb, capsys):
        hist = "The Hunger Games (The Hunger Games, #1)=5,1984=4,title:1984=5,Not A Real Book=2,Dune=5"
        rc, out, err = run_cli(capsys, "--model", gb.path, "--history", hist, "--n", 5)
        assert rc == 0, err
        assert "History: 5 entries, 3 items known to the model" in out
        assert "Dune=5  (entry 5: no item with this id or title; did you mean " in out
        assert "'Dune (Dune Chronicles #1)' (id 126)" in out  # titles starting with the text come first
        assert "'1984' was read as item id 1984" in out and "write title:1984" in out
        assert "1984 by George Orwell" in out
        assert "Not A Real Book=2  (entry 4: no item with this id or title)" in out
        ids, _ = gb.model.recommend_for({1: 5.0, 1984: 4.0, 13: 5.0}, n=5)
        table = out.split("Top 5 items")[1].splitlines()[2:7]
        assert [int(line.split()[2]) for line in table] == ids.tolist()

    def test_find_and_similar(self, gb, capsys):
        rc, out, err = run_cli(capsys, "--model", gb.path, "--find", "harry potter", "--n", 3)
        assert rc == 0, err
        assert "items match 'harry potter' (most rated first, showing 3)" in out and "J.K. Rowling" in out
        rc, out, err = run_cli(capsys, "--model", gb.path, "--similar", "The Hobbit", "--n", 3)
        assert rc == 0, err
        assert out.startswith("Items most similar to 7: The Hobbit by J.R.R. Tolkien")

    def test_model_and_data_from_different_data_sets(self, gb, capsys):
        user, _ = _to_read_user(gb)
        if HAS_ML:
            rc, _, err = run_cli(capsys, "--model", gb.path, "--user", user, "--candidates", "to-read", "--data", ML)
            assert_one_line_error(rc, err, "was trained on 'goodbooks-10k' (10000 items) but the data is 'ml-100k'")
        rc, _, err = run_cli(capsys, "--model", gb.path, "--user", 99999999, "--candidates", "to-read", "--data", GB)
        assert_one_line_error(rc, err, "unknown user id 99999999")


@pytest.mark.data
@need_ml
@need_gb
def test_movielens_model_with_goodbooks_data(ml, capsys):
    rc, _, err = run_cli(capsys, "--model", ml.path, "--user", 1, "--candidates", "to-read", "--data", GB)
    assert_one_line_error(rc, err, "was trained on 'ml-100k' (1682 items) but the data is 'goodbooks-10k' (10000 items")


@pytest.mark.parametrize("command, required", [("train", []), ("evaluate", []), ("serve", []),
                                               ("recommend", ["--model", "m.npz", "--user", "1"])])
def test_every_command_that_loads_data_takes_the_same_data_flags(command, required):
    import importlib

    parser = importlib.import_module(f"rbm_cuda.{command}").build_parser()
    for mode in ("error", "last", "mean"):
        args = parser.parse_args(required + ["--data", "ml-100k", "--duplicates", mode])
        assert (args.data, args.duplicates) == ("ml-100k", mode)
