"""rbm_cuda.evaluation: metric definitions on hand-computed cases, split protocols, baselines, the
JSON report, and the guard that test ratings never reach a model."""

import json
import math
import os

import numpy as np
import pytest
import scipy.sparse as sp

from rbm_cuda.datasets import RatingData
from rbm_cuda import RBMRecommender
from rbm_cuda.evaluation import (Biases, ConstantLike, GlobalMean, ItemPopularity, MeanImputedSVD, Model,
                                 RecommenderView, Split, check_split, evaluate, evaluate_split, format_table,
                                 like_dislike, mae, make_models, new_users_split, random_split, ranking_at_k,
                                 relevant_sets, rmse, roc_auc, stratified_split, to_json, top_k)
from rbm_cuda.evaluation.splits import half_up

TINY_RBM = dict(n_hidden=8, epochs=3, batch_size=16)


def tiny_recommender(parts=("item", "user", "ranker"), **over):
    p = {**TINY_RBM, **over}
    return RBMRecommender(parts, item_params=p, user_params=p, ranker_params=p, device="cpu")


def tiny_views(parts=("item", "user", "ranker"), **over):
    """Harness rows over one tiny recommender: the whole of it and each part."""
    rec = tiny_recommender(parts, **over)
    rows = {"item": "rbm-item", "user": "rbm-user", "ranker": "rbm-implicit"}
    return [RecommenderView(rec, "rbm")] + [RecommenderView(rec, rows[p], p) for p in parts]


# ------------------------------------------------------------------------------------------ data
def synthetic(n_users=60, n_items=40, density=0.3, seed=0, levels=(1, 2, 3, 4, 5)):
    """Ratings with structure: user bias + item bias + a rank-2 taste term, rounded to the levels;
    popular items (low index) are rated more often."""
    rng = np.random.default_rng(seed)
    bu = rng.normal(0, 0.6, n_users)
    bi = np.linspace(1.0, -1.0, n_items)
    P, Q = rng.normal(0, 0.7, (n_users, 2)), rng.normal(0, 0.7, (n_items, 2))
    r = np.clip(np.rint(3.4 + bu[:, None] + bi[None, :] + P @ Q.T), 1, 5)
    p_rated = density * 2 * np.linspace(1.0, 0.1, n_items)[None, :] / 1.1
    mask = rng.random((n_users, n_items)) < p_rated
    mask[np.arange(n_users), rng.integers(0, n_items, n_users)] = True  # nobody is empty
    mask[:, :3] |= rng.random((n_users, 3)) < 0.5
    csr = sp.csr_matrix(np.where(mask, r, 0.0).astype(np.float32))
    return RatingData(csr, np.arange(n_users) + 100, np.arange(n_items) + 500, levels, name="synthetic")


@pytest.fixture(scope="module")
def data():
    return synthetic()


# ------------------------------------------------------------------------------------------ metrics
def test_rmse_mae():
    assert rmse([1, 2, 3], [1, 2, 5]) == pytest.approx(math.sqrt(4 / 3))
    assert mae([1, 2, 3], [2, 2, 5]) == pytest.approx(1.0)


def test_ranking_metrics_hand_computed():
    # user 0: list 3 1 7 2, relevant {1, 2, 9}: hits at ranks 2 and 4
    # user 1: list 5 6 8 0, relevant {5}: a hit at rank 1
    top = np.array([[3, 1, 7, 2], [5, 6, 8, 0]])
    rel = [{1, 2, 9}, {5}]
    res = ranking_at_k(top, rel, np.array([3, 1]), k=4)
    l2 = math.log2
    p = [2 / 4, 1 / 4]
    r = [2 / 3, 1.0]
    ndcg0 = (1 / l2(3) + 1 / l2(5)) / (1 + 1 / l2(3) + 1 / l2(4))
    ndcg = [ndcg0, 1.0]
    ap = [(1 / 2 + 2 / 4) / 3, 1.0]
    assert res["precision@4"] == pytest.approx(np.mean(p))
    assert res["recall@4"] == pytest.approx(np.mean(r))
    assert res["ndcg@4"] == pytest.approx(np.mean(ndcg))
    assert res["map@4"] == pytest.approx(np.mean(ap))
    # k below the list length: only the first 2 ranks count, IDCG over min(#relevant, 2)
    res2 = ranking_at_k(top[:, :2], rel, np.array([3, 1]), k=2)
    assert res2["precision@2"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert res2["ndcg@2"] == pytest.approx(((1 / l2(3)) / (1 + 1 / l2(3)) + 1.0) / 2)
    assert res2["map@2"] == pytest.approx(((1 / 2) / 2 + 1.0) / 2)


def test_top_k_excludes_and_breaks_ties_by_index():
    scores = np.array([[0.5, 0.9, 0.9, 0.1, 0.7]])
    seen = np.array([[False, False, False, False, True]])
    assert top_k(scores, seen, 3).tolist() == [[1, 2, 0]]
    assert top_k(scores, np.array([[True, True, True, False, True]]), 2).tolist() == [[3, -1]]


def test_relevant_sets_threshold():
    test = sp.csr_matrix(np.array([[0, 5, 3], [0, 0, 0], [2, 0, 0]], dtype=np.float32))
    users, sets, n = relevant_sets(test)
    assert users.tolist() == [0, 2] and sets == [{1, 2}, {0}] and n.tolist() == [2, 1]
    users, sets, n = relevant_sets(test, threshold=4)
    assert users.tolist() == [0] and sets == [{1}]


def test_like_dislike_metric_hand_computed():
    users = np.array([0, 0, 0, 1, 1])
    labels = np.array([1, 0, 1, 1, 1])
    p = np.array([0.9, 0.8, 0.2, 0.6, 0.5])  # hard: 1 1 0 1 1 -> errors 0 1 1 0 0
    res = like_dislike(users, labels, p)
    assert res["like_loss"] == pytest.approx((2 / 3 + 0) / 2)  # mean over users of per-user mean
    assert res["like_accuracy"] == pytest.approx(3 / 5)
    # AUC: positives 0.9 0.2 0.6 0.5 vs the negative 0.8: one of four positives is above it
    assert res["like_auc"] == pytest.approx(1 / 4)


def test_roc_auc_ties_and_agrees_with_pairs():
    rng = np.random.default_rng(3)
    y = rng.random(200) < 0.4
    s = np.round(rng.random(200), 1)  # many ties
    pos, neg = s[y], s[~y]
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert roc_auc(y, s) == pytest.approx(pairs)
    assert math.isnan(roc_auc(np.ones(3, bool), [1, 2, 3]))


# ------------------------------------------------------------------------------------------ splits
def _entries(csr):
    coo = csr.tocoo()
    return set(zip(coo.row.tolist(), coo.col.tolist()))


def _assert_partition(data, split):
    check_split(split.train, split.test)
    tr, te = _entries(split.train.ratings), _entries(split.test.ratings)
    assert not tr & te
    assert tr | te == _entries(data.ratings)
    # values kept
    assert np.isclose(split.train.ratings.sum() + split.test.ratings.sum(), data.ratings.sum())


def test_stratified_split_takes_round_quarter_per_user(data):
    s = stratified_split(data, 0.25, seed=4)
    _assert_partition(data, s)
    n = np.diff(data.ratings.indptr)
    expect = np.minimum(half_up(0.25 * n), n - 1)
    assert np.array_equal(np.diff(s.test.ratings.indptr), expect)
    assert half_up(2.5) == 3 and half_up(0.5) == 1  # half up, not to even
    assert _entries(stratified_split(data, 0.25, seed=4).test.ratings) == _entries(s.test.ratings)
    assert _entries(stratified_split(data, 0.25, seed=5).test.ratings) != _entries(s.test.ratings)


def test_random_split_disjoint_covering_and_sized(data):
    s = random_split(data, 0.1, seed=1)
    _assert_partition(data, s)
    assert s.test.ratings.nnz == half_up(0.1 * data.ratings.nnz)


def test_check_split_refuses_overlap(data):
    s = random_split(data, 0.2, seed=0)
    leaked = s.test.ratings + s.train.ratings.multiply(_first_entry_mask(s.train.ratings))
    with pytest.raises(ValueError, match="share"):
        check_split(s.train, s.test.with_ratings(sp.csr_matrix(leaked)))


def _first_entry_mask(csr):
    m = sp.csr_matrix(csr.shape, dtype=np.float32).tolil()
    coo = csr.tocoo()
    m[coo.row[0], coo.col[0]] = 1
    return m.tocsr()


def test_official_folds_partition_the_data():
    folder = os.path.join(os.environ.get("RBM_CUDA_DATA", ""), "ml-100k")
    if not os.path.isfile(os.path.join(folder, "u1.base")):
        pytest.skip("ml-100k is not under $RBM_CUDA_DATA")
    from rbm_cuda.datasets import load_movielens_100k
    from rbm_cuda.evaluation import make_splits

    full = load_movielens_100k(folder)
    splits = make_splits("folds", folder=folder)
    tests = [_entries(s.test.ratings) for s in splits]
    for s in splits:
        _assert_partition(full, s)
    assert sum(len(t) for t in tests) == full.ratings.nnz
    assert set().union(*tests) == _entries(full.ratings)


# ------------------------------------------------------------------------------------------ baselines
def test_baselines_beat_trivial_ones(data):
    split = stratified_split(data, 0.25, seed=0)
    res = evaluate_split([GlobalMean(), Biases(), MeanImputedSVD(rank=2), ItemPopularity(), ConstantLike(),
                          _RandomRanker()], split)
    assert res["biases"]["rmse"] < res["global-mean"]["rmse"] - 0.05
    assert res["svd"]["rmse"] < res["global-mean"]["rmse"] - 0.05
    assert res["popularity"]["precision@10"] > res["random"]["precision@10"] + 0.05
    assert res["popularity"]["ndcg@10"] > res["random"]["ndcg@10"]
    assert res["always-like"]["like_accuracy"] == pytest.approx(
        np.mean(split.test.ratings.data >= 3))
    assert "rmse" not in res["popularity"] and "precision@10" not in res["always-like"]


def test_rbms_learn_something(data):
    split = stratified_split(data, 0.25, seed=0)
    models = [GlobalMean(), ItemPopularity(), _RandomRanker()] + tiny_views(("item", "ranker"), epochs=15)[1:]
    res = evaluate_split(models, split)
    assert res["rbm-item"]["rmse"] < res["global-mean"]["rmse"]
    assert res["rbm-implicit"]["precision@10"] > res["random"]["precision@10"]


class _RandomRanker(Model):
    name = "random"

    def fit(self, train):
        self._remember(train)
        return self

    def scores(self, users):
        return np.random.default_rng(0).random((len(users), self.n_items_))

    def p_like(self, users, items):
        return None


# ------------------------------------------------------------------------------------------ report
EXPECTED_METRICS = {"rmse", "mae", "precision@10", "recall@10", "ndcg@10", "map@10", "like_loss", "like_accuracy",
                    "like_auc"}


def test_cli_json_schema(tmp_path, data):
    from rbm_cuda.evaluate import main

    coo = data.ratings.tocoo()
    csv = tmp_path / "tiny.csv"
    with open(csv, "w") as f:
        f.write("user,item,rating\n")
        for u, i, r in zip(coo.row, coo.col, coo.data):
            f.write(f"{data.user_ids[u]},{data.item_ids[i]},{int(r)}\n")
    out = tmp_path / "r.json"
    rc = main(["--data", str(csv), "--protocol", "random", "--seeds", "0,1", "--epochs", "2", "--json", str(out),
               "--quiet"])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["protocol"] == "random" and doc["dataset"] and doc["splits"] == ["seed0", "seed1"]
    models = doc["models"]
    assert set(models) == {"rbm", "rbm-item", "rbm-user", "rbm-implicit", "global-mean", "biases", "popularity",
                           "always-like", "svd", "mf-sgd", "ease"}
    assert EXPECTED_METRICS <= set(models["rbm"])
    assert all(isinstance(models["rbm"][m], float) for m in EXPECTED_METRICS)
    assert {"rmse", "mae", "precision@10", "ndcg@10"} <= set(models["biases"])
    assert set(doc["spread"]) == set(models) and set(doc["per_split"]["rbm"]) == {"seed0", "seed1"}
    assert main(["--data", str(csv), "--protocol", "folds", "--quiet"]) == 2  # folds need ml-100k
    assert main(["--data", str(csv), "--models", "nope"]) == 2


def test_table_has_models_as_rows_and_spread(data):
    report = evaluate(lambda: [GlobalMean(), ItemPopularity()],
                      [random_split(data, 0.2, seed=s) for s in (0, 1)])
    table = format_table(report)
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["model", "rmse", "mae"]
    assert lines[2].startswith("global-mean") and "±" in lines[2]
    assert lines[3].startswith("popularity") and " - " in lines[3]
    md = format_table(report, markdown=True).splitlines()
    header = [c.strip() for c in md[0].strip("|").split("|")]
    assert header[0] == "model" and header[-1] == "fit_seconds"
    fits = [report["models"][m]["fit_seconds"] for m in ("global-mean", "popularity")]
    for line, fit in zip(md[2:], fits):
        cell = line.strip("|").split("|")[-1].strip()
        assert float(cell.split(" ± ")[0]) == pytest.approx(fit, abs=0.051)
    doc = to_json(report, "random", "synthetic", 10)
    assert doc["models"]["global-mean"]["rmse"] == pytest.approx(
        np.mean([doc["per_split"]["global-mean"][s]["rmse"] for s in ("seed0", "seed1")]))


# ------------------------------------------------------------------------------------------ guard
class Spy(Model):
    """Wraps a model and records every argument it is given and every output it returns."""

    def __init__(self, inner):
        self.inner, self.name, self.calls = inner, inner.name, []

    def fit(self, train):
        self.calls.append(("fit", train))
        self.inner.fit(train)
        self._remember(train)
        return self

    def _call(self, what, *args):
        self.calls.append((what, *[np.array(a, copy=True) for a in args]))
        out = getattr(self.inner, what)(*args)
        self.calls.append((what + ":out", None if out is None else np.array(out, copy=True)))
        return out

    def predict(self, users, items):
        return self._call("predict", users, items)

    def scores(self, users):
        return self._call("scores", users)

    def p_like(self, users, items):
        return self._call("p_like", users, items)


def _guard_models():
    return [Spy(m) for m in tiny_views() + [Biases(), MeanImputedSVD(rank=2)]]


def test_guard_models_see_train_ratings_and_test_indices_only(data):
    split = stratified_split(data, 0.25, seed=2)
    models = _guard_models()
    evaluate_split(models, split)
    test_values = split.test.ratings.data
    for spy in models:
        fits = [c for c in spy.calls if c[0] == "fit"]
        assert len(fits) == 1 and fits[0][1] is split.train, "a model was fitted on something other than train"
        for call in spy.calls:
            if call[0] in ("predict", "scores", "p_like"):
                for arg in call[1:]:
                    assert arg.dtype.kind in "iu", f"{spy.name}.{call[0]} was given non-index data"
        # the RBMs predict from the training rows they keep: the training ratings, nothing else
        inner = spy.inner
        if isinstance(inner, RecommenderView):
            parts = inner.recommender.parts_
            same = (lambda a, b: a.shape == b.shape and (abs(a - sp.csr_matrix(b)) > 0).nnz == 0)
            assert same(parts["user"].train_, split.train.ratings)
            assert same(parts["item"].train_, split.train.ratings.T)
            assert same(parts["ranker"].train_, split.train.ratings.astype(bool).astype(np.float32))
    assert len(test_values)


def test_guard_poisoned_test_ratings_change_nothing_a_model_outputs(data):
    """Replace every test rating by another level: if any test rating reached a model, its outputs
    (predictions, P(like), top-k lists) would change."""
    split = stratified_split(data, 0.25, seed=2)
    t = split.test.ratings.copy()
    t.data = np.where(t.data >= 3, 1.0, 5.0).astype(np.float32)
    poisoned = Split(split.name, split.train, split.test.with_ratings(t))
    a, b = _guard_models(), _guard_models()
    ra, rb = evaluate_split(a, split), evaluate_split(b, poisoned)
    for sa, sb in zip(a, b):
        outs_a = [c for c in sa.calls if c[0].endswith(":out")]
        outs_b = [c for c in sb.calls if c[0].endswith(":out")]
        assert len(outs_a) == len(outs_b)
        for ca, cb in zip(outs_a, outs_b):
            assert (ca[1] is None and cb[1] is None) or np.array_equal(ca[1], cb[1]), f"{sa.name} {ca[0]} changed"
        # relevance = any test rating: the ranking metrics must not move either
        if "precision@10" in ra[sa.name]:
            assert ra[sa.name]["precision@10"] == rb[sb.name]["precision@10"]
    assert ra["biases"]["rmse"] != rb["biases"]["rmse"]  # the poison is real: the truth did change


def test_registry_shares_parts_and_trains_them_once(data):
    models = make_models(["rbm", "rbm-item", "rbm-user", "rbm-implicit"], epochs=1)
    rec = models[0].recommender
    assert all(m.recommender is rec for m in models)
    split = random_split(data, 0.2, seed=0)
    res = evaluate_split(models, split)
    fitted = rec.parts_
    evaluate_split([models[1]], split)
    assert rec.parts_ is fitted  # same train object: not refitted
    assert res["rbm"]["rmse"] > 0 and res["rbm"]["precision@10"] == res["rbm-implicit"]["precision@10"]
    # the rbm row is the public recommender's own output
    u, i = split.test.ratings.tocoo().row[:20], split.test.ratings.tocoo().col[:20]
    np.testing.assert_array_equal(models[0].predict(u, i), rec.predict(data.user_ids[u], data.item_ids[i]))


def test_new_users_split_holds_out_whole_users(data):
    s = new_users_split(data, 0.1, 0.75, seed=0)
    held = np.flatnonzero(np.diff(s.history.ratings.indptr))
    assert len(held) == half_up(0.1 * np.sum(np.diff(data.ratings.indptr) >= 2))
    assert np.all(np.diff(s.train.ratings.indptr)[held] == 0)  # no rating of theirs is trained on
    assert set(np.flatnonzero(np.diff(s.test.ratings.indptr))) == set(held)
    n = np.diff(data.ratings.indptr)[held]
    assert np.array_equal(np.diff(s.history.ratings.indptr)[held], np.minimum(np.maximum(half_up(0.75 * n), 1), n - 1))
    total = s.train.ratings + s.test.ratings + s.history.ratings
    assert (abs(total - data.ratings) > 0).nnz == 0


def test_new_users_protocol_folds_in_history(data):
    """The rbm row folds in each held-out user's history: its outputs follow the history (a history
    with every rating flipped gives other predictions), and the baselines that cannot fold in
    report nothing."""
    split = new_users_split(data, 0.2, 0.75, seed=1)
    res = evaluate_split(tiny_views()[:1] + [Biases(), ItemPopularity(), MeanImputedSVD(rank=2)], split)
    assert {"rmse", "precision@10"} <= set(res["rbm"]) and {"rmse", "precision@10"} <= set(res["biases"])
    assert "rmse" not in res["svd"]
    h = split.history.ratings.copy()
    h.data = (6 - h.data).astype(np.float32)
    flipped = Split(split.name, split.train, split.test, split.history.with_ratings(h))
    res2 = evaluate_split(tiny_views()[:1], flipped)
    assert res2["rbm"]["rmse"] != res["rbm"]["rmse"]


@pytest.mark.parametrize("flags, phrase", [
    (["--k", "0"], "--k 0"),
    (["--test-fraction", "2"], "--test-fraction 2.0"),
    (["--test-fraction", "0"], "--test-fraction 0.0"),
    (["--epochs", "-1"], "--epochs -1"),
    (["--relevance-threshold", "nan"], "--relevance-threshold nan"),
    (["--protocol", "folds", "--test-fraction", "0.5"], "the folds protocol uses the data set's own splits"),
    (["--recommender", "{n_rankers: 2}"], "is not JSON"),
    (["--recommender", '{"seed": 3}'], "['seed'] cannot be set here"),
    (["--recommender", '{"n_rankers": 0}'], "n_rankers=0 is not allowed"),
    (["--recommender", '{"ranker_params": {"average_epochs": -1}}'], "average_epochs=-1"),
    (["--recommender", '{"ranker_params": {"nope": 1}}'], "unexpected keyword argument 'nope'"),
])
def test_cli_refuses_bad_numbers_in_one_line(tmp_path, capsys, flags, phrase):
    from rbm_cuda.evaluate import main

    assert main(["--data", "ml-latest-small", "--protocol", "stratified", "--quiet"] + flags) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and phrase in err and err.count("\n") == 1


def test_validation_parts_come_from_the_training_parts_only(data):
    from rbm_cuda.evaluation.splits import validation_splits

    outer = [stratified_split(data, 0.25, seed=0), random_split(data, 0.1, seed=0)]
    for protocol, split in zip(("stratified", "random"), outer):
        (inner,) = validation_splits([split], protocol)
        _assert_partition(split.train, inner)  # the training part, split again
        assert not (_entries(inner.train.ratings) | _entries(inner.test.ratings)) & _entries(split.test.ratings)
    per_user = np.diff(validation_splits(outer[:1], "stratified")[0].test.ratings.indptr)
    assert np.array_equal(per_user, np.minimum(half_up(0.25 * np.diff(outer[0].train.ratings.indptr)),
                                               np.diff(outer[0].train.ratings.indptr) - 1))
    with pytest.raises(ValueError, match="new-users"):
        validation_splits([new_users_split(data, 0.1, 0.75, 0)], "new-users")


def test_cli_recommender_parameters_reach_the_rbm_rows(tmp_path, data):
    from rbm_cuda.evaluate import main

    csv = tmp_path / "tiny.csv"
    coo = data.ratings.tocoo()
    csv.write_text("user,item,rating\n" + "".join(f"{data.user_ids[u]},{data.item_ids[i]},{int(r)}\n"
                                                    for u, i, r in zip(coo.row, coo.col, coo.data)))
    docs = []
    for extra in ([], ["--recommender", '{"n_rankers": 1, "ranker_params": {"average_epochs": 1}}']):
        out = tmp_path / f"r{len(docs)}.json"
        assert main(["--data", str(csv), "--protocol", "stratified", "--validation", "--models", "rbm-implicit",
                     "--epochs", "3", "--json", str(out), "--quiet"] + extra) == 0
        docs.append(json.loads(out.read_text()))
    assert docs[0]["splits"] == ["seed0-valid"]
    metrics = [{k: v for k, v in d["models"]["rbm-implicit"].items() if "@" in k} for d in docs]
    assert metrics[0] and metrics[0] != metrics[1]


def test_cli_takes_the_duplicates_flag(tmp_path, capsys):
    from rbm_cuda.evaluate import main

    csv = tmp_path / "dup.csv"
    rows = ["user,item,rating"] + [f"{u},{i},{(u + i) % 5 + 1}" for u in range(30) for i in range(8)] + ["0,0,1"]
    csv.write_text("\n".join(rows) + "\n")
    assert main(["--data", str(csv), "--protocol", "random", "--seeds", "0", "--models", "biases", "--quiet"]) == 2
    assert "occur more than once" in capsys.readouterr().err
    assert main(["--data", str(csv), "--protocol", "random", "--seeds", "0", "--models", "biases", "--quiet",
                 "--duplicates", "last"]) == 0


def test_ease_is_steck_s_closed_form_with_lambda_chosen_on_training_data(data):
    from rbm_cuda.evaluation import EASE

    split = stratified_split(data, 0.25, seed=0)
    m = EASE().fit(split.train)
    assert m.lambda_ in m.lambdas
    B = m.B_
    X = split.train.ratings.astype(bool).astype(np.float64)
    G = (X.T @ X).toarray() + m.lambda_ * np.eye(data.n_items)
    assert np.all(np.diag(B) == 0)
    off = G @ B - (G - m.lambda_ * np.eye(data.n_items))  # stationarity: zero off the diagonal
    np.fill_diagonal(off, 0.0)
    assert np.abs(off).max() < 1e-8
    # a history that is a training row scores as that user does
    users = np.array([0, 5])
    np.testing.assert_allclose(m.scores_new(split.train.ratings, users), m.scores(users))
    res = evaluate_split([EASE(), _RandomRanker()], split)
    assert res["ease"]["precision@10"] > res["random"]["precision@10"]


def test_biased_mf_learns_a_low_rank_matrix_and_folds_in_by_its_own_objective():
    from rbm_cuda.evaluation import BiasedMF

    rng = np.random.default_rng(3)
    U, I = 300, 120
    low_rank = rng.normal(0, 0.6, (U, 3)) @ rng.normal(0, 0.6, (3, I))
    truth = 3.0 + rng.normal(0, 0.3, (U, 1)) + rng.normal(0, 0.3, (1, I)) + low_rank
    mask = rng.random((U, I)) < 0.3
    r = np.clip(np.rint(truth + rng.normal(0, 0.2, (U, I))), 1, 5)
    rows, cols = np.nonzero(mask)
    full = RatingData(sp.csr_matrix((r[rows, cols].astype(np.float32), (rows, cols)), shape=(U, I)),
                      np.arange(U), np.arange(I), np.arange(1.0, 6.0))
    split = stratified_split(full, 0.25, seed=0)
    test = split.test.ratings.tocoo()
    mf, biases = BiasedMF(n_factors=10, n_epochs=60, lr=0.01).fit(split.train), Biases().fit(split.train)

    def rmse(m):
        return np.sqrt(np.mean((m.predict(test.row, test.col) - test.data) ** 2))

    assert rmse(mf) < 0.9 * rmse(biases)  # the factors carry the rank-3 structure the biases miss
    np.testing.assert_array_equal(BiasedMF(n_factors=10, n_epochs=2).fit(split.train).P_,
                                  BiasedMF(n_factors=10, n_epochs=2).fit(split.train).P_)  # seeded
    # fold-in: (b_u, p_u) minimise sum (r - mu - b_i - b_u - q_i.p_u)^2 + reg * n_u * (b_u^2 + |p_u|^2)
    h = split.train.ratings
    bu, P = mf._fold_in(h, np.array([7]))
    items = h[7].indices
    resid = h[7].data - (mf.mu_ + mf.bi_[items] + bu[0] + mf.Q_[items] @ P[0])
    lam = mf.reg * len(items)
    np.testing.assert_allclose(-resid.sum() + lam * bu[0], 0.0, atol=1e-9)
    np.testing.assert_allclose(-mf.Q_[items].T @ resid + lam * P[0], 0.0, atol=1e-9)
    # a training user's own history folded in predicts close to what SGD learnt for them
    folded = mf.predict_new(h, np.full(I, 7), np.arange(I))
    assert np.corrcoef(folded, mf.predict(np.full(I, 7), np.arange(I)))[0, 1] > 0.9
