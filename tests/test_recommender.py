"""RBMRecommender: the blend fitted at fit time, fold-in for every part, batched recommend, save/load,
and the estimator conventions shared with RBM."""

import json
import os

import numpy as np
import pytest
import scipy.sparse as sp

from rbm_cuda import RBM, NotFittedError, RBMRecommender, load_model
from rbm_cuda.datasets import RatingData
from rbm_cuda.recommender import fold_in_visible_units, simplex_least_squares
from rbm_cuda.serialization import ModelFileError

TINY = dict(n_hidden=8, epochs=4, batch_size=16)


def synthetic(n_users=80, n_items=50, seed=0):
    """Ratings with user and item biases and a rank-2 taste term; popular items are rated more."""
    rng = np.random.default_rng(seed)
    bu, bi = rng.normal(0, 0.6, n_users), np.linspace(1.0, -1.0, n_items)
    P, Q = rng.normal(0, 0.7, (n_users, 2)), rng.normal(0, 0.7, (n_items, 2))
    r = np.clip(np.rint(3.4 + bu[:, None] + bi[None, :] + P @ Q.T), 1, 5)
    mask = rng.random((n_users, n_items)) < 0.5 * np.linspace(1.0, 0.1, n_items)[None, :]
    mask[np.arange(n_users), rng.integers(0, n_items, n_users)] = True
    csr = sp.csr_matrix(np.where(mask, r, 0.0).astype(np.float32))
    return RatingData(csr, np.arange(n_users) + 1000, np.arange(n_items) + 7, [1, 2, 3, 4, 5], name="synthetic")


def tiny(**kw):
    parts = {f"{p}_params": kw.pop(f"{p}_params", TINY) for p in ("item", "user", "ranker")}
    return RBMRecommender(**parts, device="cpu", **kw)


@pytest.fixture(scope="module")
def data():
    return synthetic()


@pytest.fixture(scope="module")
def fitted(data):
    return tiny().fit(data)


@pytest.fixture(scope="module")
def fitted3(data):
    """A recommender whose ranker is three RBMs."""
    return tiny(n_rankers=3).fit(data)


# -- the blend ----------------------------------------------------------------------------------------
def test_simplex_least_squares_finds_the_best_mixture():
    rng = np.random.default_rng(0)
    P = rng.normal(size=(500, 3))
    y = P @ np.array([0.6, 0.4, 0.0]) + 0.01 * rng.normal(size=500)
    w = simplex_least_squares(P, y)
    assert w.sum() == pytest.approx(1) and np.all(w >= 0)
    np.testing.assert_allclose(w, [0.6, 0.4, 0.0], atol=0.02)


def test_blend_weights_are_fitted_on_validation(data, fitted):
    w = fitted.weights_
    assert set(w) == {"item", "user"} and sum(w.values()) == pytest.approx(1)
    rmse = fitted.validation_["rmse"]
    # the simplex includes each part alone, so the fitted mixture is no worse on validation than either
    assert rmse["blend"] <= min(rmse["item"], rmse["user"]) + 1e-9


def _one_sided(by, seed=0):
    """Ratings that depend on the user only (by="user") or on the item only (by="item"), plus noise."""
    rng = np.random.default_rng(seed)
    n_users, n_items = 120, 60
    effect = rng.normal(0, 1.2, n_users if by == "user" else n_items)
    base = effect[:, None] if by == "user" else effect[None, :]
    r = np.clip(np.rint(3 + base + rng.normal(0, 0.3, (n_users, n_items))), 1, 5)
    mask = rng.random((n_users, n_items)) < 0.3
    mask[np.arange(n_users), rng.integers(0, n_items, n_users)] = True
    return RatingData(sp.csr_matrix(np.where(mask, r, 0).astype(np.float32)), np.arange(n_users),
                      np.arange(n_items), [1, 2, 3, 4, 5])


def test_blend_weights_follow_the_data():
    """The item-based part holds one visible unit per user (it learns each user's scale); the
    user-based part one per item.  Ratings set by the user favour the first, ratings set by the
    item the second: fitted weights move that way, constant ones could not."""
    w_user_effect = tiny().fit(_one_sided("user")).weights_["item"]
    w_item_effect = tiny().fit(_one_sided("item")).weights_["item"]
    assert w_user_effect > w_item_effect + 0.2, (w_user_effect, w_item_effect)


def test_single_rating_part_needs_no_validation(data):
    rec = tiny(parts=("user",)).fit(data)
    assert rec.weights_ == {"user": 1.0} and rec.validation_ == {}
    # without a ranker the top-N lists come from the expected rating
    u = data.user_ids[3]
    ids, scores = rec.recommend(u, n=5)
    exp = rec.predict(np.repeat(u, len(ids)), ids)
    np.testing.assert_allclose(scores, exp, rtol=1e-5)


def test_refit_false_trains_the_rating_parts_once_and_reads_all_ratings(data):
    rec = tiny(refit=False).fit(data)
    assert rec.parts_["user"].train_.nnz == data.nnz
    assert rec.parts_["item"].train_.nnz == data.nnz
    assert rec.parts_["user"].epochs_done_ == TINY["epochs"]


def _validation_stage_rows(rec, data):
    """fit rec on data; the rows its user part trained on in the validation stage."""
    seen = {}

    def keep(label, rbm, record):
        if label == "user (validation)":
            seen["rows"] = rbm.train_.copy()

    rec.fit(data, callback=keep)
    return seen["rows"]


@pytest.mark.parametrize("cap", [400, 900])
def test_valid_max_ratings_trains_the_validation_stage_on_whole_users(data, cap):
    counts = np.diff(data.ratings.indptr)
    rec = tiny(valid_max_ratings=cap)
    rows = _validation_stage_rows(rec, data)
    kept = np.diff(rows.indptr) > 0
    assert 0 < kept.sum() < data.n_users and counts[kept].sum() <= cap
    # users are drawn until the next one would pass the budget: some user left out would
    assert counts[kept].sum() + counts[~kept].max() > cap
    # each user drawn keeps all their ratings but the held-out tenth, as without a cap
    held = np.minimum(np.floor(0.1 * counts + 0.5), counts - 1)
    np.testing.assert_array_equal(np.diff(rows.indptr)[kept], (counts - held)[kept])
    assert rows[kept].multiply(data.ratings[kept] != 0).nnz == rows.nnz  # the users' own ratings
    assert rec.validation_["train_ratings"] == rows.nnz
    assert rec.parts_["user"].train_.nnz == rec.parts_["item"].train_.nnz == data.nnz  # final parts: all


def test_valid_max_ratings_does_not_cap_parts_that_are_not_trained_again(data):
    """With refit=False the validation stage's parts are the final ones: they read every user."""
    rows = _validation_stage_rows(tiny(valid_max_ratings=400, refit=False), data)
    assert np.array_equal(np.diff(rows.indptr) > 0, np.diff(data.ratings.indptr) > 0)


def test_valid_max_ratings_leaves_smaller_data_as_it_is(data, fitted):
    assert data.nnz < fitted.valid_max_ratings
    for cap in (None, data.nnz):
        rec = tiny(valid_max_ratings=cap).fit(data)
        assert rec.weights_ == fitted.weights_ and rec.validation_ == fitted.validation_


def test_valid_max_ratings_keeps_one_user_when_the_first_is_over_it(data):
    rows = _validation_stage_rows(tiny(valid_max_ratings=1), data)
    assert (np.diff(rows.indptr) > 0).sum() == 1


@pytest.mark.parametrize("cap", [0, -5, 2.5, True, "1000"])
def test_valid_max_ratings_is_checked_at_fit(data, cap):
    with pytest.raises(ValueError, match="valid_max_ratings="):
        tiny(valid_max_ratings=cap).fit(data)


def test_predict_is_the_weighted_parts(data, fitted):
    coo = data.ratings.tocoo()
    u, i = data.user_ids[coo.row[:50]], data.item_ids[coo.col[:50]]
    parts = {p: fitted.predict(u, i, part=p) for p in ("item", "user")}
    blend = sum(fitted.weights_[p] * parts[p] for p in parts)
    np.testing.assert_allclose(fitted.predict(u, i), np.clip(blend, 1, 5), rtol=1e-6)
    # the user part alone is the plain RBM's own prediction
    np.testing.assert_allclose(parts["user"], fitted.parts_["user"].predict(u, i), rtol=1e-5)
    like = fitted.predict_like(u, i, threshold=4)
    assert np.all((like >= 0) & (like <= 1))
    with pytest.raises(ValueError, match="part='ranker'"):
        fitted.predict(u, i, part="ranker")


# -- recommend ------------------------------------------------------------------------------------------
def test_recommend_batches_equal_single_calls_and_exclude_seen(data, fitted):
    users = data.user_ids[[0, 5, 9]]
    ids, scores = fitted.recommend(users, n=6)
    assert ids.shape == scores.shape == (3, 6)
    for r, u in enumerate(users):
        one_ids, one_scores = fitted.recommend(u, n=6)
        np.testing.assert_array_equal(ids[r], one_ids)
        np.testing.assert_allclose(scores[r], one_scores)
        seen = data.item_ids[data.ratings[data.user_index(u)].indices]
        assert not set(one_ids) & set(seen)
        assert np.all(np.diff(one_scores) <= 0)
        # the scores are the ranker's p(rated) of those items
        all_scores = fitted.score_items([u])[0]
        np.testing.assert_allclose(one_scores, all_scores[fitted.item_index(one_ids)], rtol=1e-6)
    with_seen, _ = fitted.recommend(users[0], n=data.n_items, exclude_seen=False)
    assert len(with_seen) == data.n_items


def test_recommend_candidates_and_padding(data, fitted):
    u = data.user_ids[0]
    seen = set(data.item_ids[data.ratings[0].indices])
    cands = list(data.item_ids[:6])
    ids, scores = fitted.recommend([u], n=10, items=cands)
    unseen = [c for c in cands if c not in seen]
    assert ids.shape == (1, 6)
    assert set(ids[0][: len(unseen)]) == set(unseen)
    assert np.all(ids[0][len(unseen):] == -1) and np.all(np.isnan(scores[0][len(unseen):]))


@pytest.mark.parametrize("n", [0, -5, 2.5, "5", float("nan"), True])
def test_recommend_refuses_bad_n(fitted, data, n):
    with pytest.raises(ValueError, match="n="):
        fitted.recommend(data.user_ids[0], n=n)


def test_recommend_refuses_unknown_users_items_and_levels(fitted, data):
    with pytest.raises(KeyError, match="unknown user id"):
        fitted.recommend(12345)
    with pytest.raises(KeyError, match="unknown item id"):
        fitted.recommend(histories={99999: 5})
    with pytest.raises(ValueError, match="not one of the model's levels"):
        fitted.recommend(histories={7: 4.5})
    with pytest.raises(ValueError, match="either users"):
        fitted.recommend()


# -- fold-in -------------------------------------------------------------------------------------------
def test_fold_in_of_a_training_row_ranks_like_the_training_user(data, fitted):
    """The ranker and the user part read a history exactly as they read a training row."""
    u = 4
    row = data.ratings[u]
    history = dict(zip(data.item_ids[row.indices], row.data))
    ids_h, s_h = fitted.recommend(histories=history, n=8)
    ids_u, s_u = fitted.recommend(data.user_ids[u], n=8)
    np.testing.assert_array_equal(ids_h, ids_u)
    np.testing.assert_allclose(s_h, s_u, rtol=1e-5)
    pu = fitted.predict_ratings(data.user_ids[u], items=data.item_ids)
    ph = fitted.predict_ratings(histories=history, items=data.item_ids)
    # the item part's unit is refitted from the history, so the blend is close, not equal
    assert np.corrcoef(pu[0], ph[0])[0, 1] > 0.8


def test_item_part_fold_in_follows_the_history(data, fitted):
    items = list(data.item_ids[:12])
    loved = fitted.predict_ratings(histories={i: 5 for i in items}, items=items)[0]
    hated = fitted.predict_ratings(histories={i: 1 for i in items}, items=items)[0]
    assert np.all(loved > hated)
    item_only = tiny(parts=("item",)).fit(data)
    loved = item_only.predict_ratings(histories={i: 5 for i in items}, items=items)[0]
    hated = item_only.predict_ratings(histories={i: 1 for i in items}, items=items)[0]
    assert np.mean(loved - hated) > 0.5


def test_fold_in_visible_units_is_a_map_fit(fitted, data):
    m = fitted.parts_["item"]
    ph = m.transform().astype(np.float32)
    hist = sp.csr_matrix((np.full(10, 5, np.float32), (np.zeros(10, int), np.arange(10))), shape=(2, data.n_items))
    W, b = fold_in_visible_units(m, ph, hist)
    # an empty history is the prior mean: the average trained unit
    np.testing.assert_allclose(W[1], m.W_.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(b[1], m.bv_.mean(axis=0), atol=1e-5)
    # the fitted unit puts more probability on level 5 for the rated items than the prior does
    def p5(W, b):
        z = ph[:10] @ W.T + b
        e = np.exp(z - z.max(1, keepdims=True))
        return (e / e.sum(1, keepdims=True))[:, 4]
    assert np.all(p5(W[0], b[0]) > p5(W[1], b[1]))


# -- persistence -----------------------------------------------------------------------------------------
def test_save_load_round_trip(tmp_path, data, fitted):
    path = fitted.save(tmp_path / "rec")
    assert path.endswith(".npz") and os.listdir(tmp_path) == ["rec.npz"]
    back = load_model(path)
    assert isinstance(back, RBMRecommender) and back.weights_ == fitted.weights_
    u = data.user_ids[:4]
    for a, b in zip(back.recommend(u, n=5), fitted.recommend(u, n=5)):
        np.testing.assert_array_equal(a, b)
    h = {7: 5, 9: 1}
    np.testing.assert_allclose(back.predict_ratings(histories=h), fitted.predict_ratings(histories=h), rtol=1e-6)
    np.testing.assert_array_equal(back.similar_items(8, n=4)[0], fitted.similar_items(8, n=4)[0])
    with np.load(path, allow_pickle=False) as z:
        header = json.loads(str(z["header"][()]))
    assert header["format"] == "rbm_cuda.RBMRecommender" and header["format_version"] == 1
    assert set(header["parts"]) == {"item", "user", "ranker"}
    assert isinstance(load_model(RBM(n_hidden=3, epochs=1, device="cpu").fit(data).save(tmp_path / "r.npz")), RBM)


def _rewrite(src, dst, **change):
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    header = json.loads(str(arrays["header"][()]))
    for k, v in change.items():
        if k == "header":
            header = v(header)
        else:
            arrays[k] = v
    arrays["header"] = np.array(json.dumps(header))
    np.savez(dst, **arrays)
    return dst


@pytest.mark.parametrize("change, phrase", [
    (dict(**{"item.W": np.zeros((3, 5, 8), np.float32)}), "item.W"),
    (dict(**{"user.bv": np.full((50, 5), np.nan, np.float32)}), "NaN"),
    ("float64 beyond float32", "'item.W' holds NaN or infinite values"),
    ("out of range index", "train_indices"),
    (dict(header=lambda h: {**h, "weights": {"item": 0.9, "user": 0.9}}), "blend weights"),
    (dict(header=lambda h: [1, 2]), "JSON list"),
])
def test_damaged_recommender_files_are_refused(tmp_path, fitted, change, phrase):
    src = fitted.save(tmp_path / "ok.npz")
    if change == "out of range index":
        with np.load(src) as z:
            idx = z["train_indices"].copy()
        idx[-1] = 10**6
        change = dict(train_indices=idx)
    elif change == "float64 beyond float32":
        with np.load(src) as z:
            W = z["item.W"].astype(np.float64)
        W.flat[0] = 1e300
        change = {"item.W": W}
    bad = _rewrite(src, tmp_path / "bad.npz", **change)
    with pytest.raises(ModelFileError, match=phrase):
        RBMRecommender.load(bad)


def test_save_load_round_trip_of_several_rankers(tmp_path, data, fitted3):
    fitted3.n_rankers = 1  # the file holds what was fitted, whatever the attribute says now
    try:
        path = fitted3.save(tmp_path / "rec3")
    finally:
        fitted3.n_rankers = 3
    back = RBMRecommender.load(path)
    assert all(m._dev is None for m in back.parts_["ranker"].members_)  # loading touches no device
    with np.load(path, allow_pickle=False) as z:
        header = json.loads(str(z["header"][()]))
    # the ranker's first model keeps the names a one-model file has; the others are numbered
    assert set(header["parts"]) == {"item", "user", "ranker", "ranker.1", "ranker.2"}
    assert header["params"]["n_rankers"] == back.n_rankers == len(back.parts_["ranker"]) == 3
    for a, b in zip(back.parts_["ranker"].members_, fitted3.parts_["ranker"].members_):
        np.testing.assert_array_equal(a.W_, b.W_)
    u = data.user_ids[:4]
    np.testing.assert_array_equal(back.score_items(u), fitted3.score_items(u))
    members = back.parts_["ranker"].members_
    assert all(m._dev["states"] is members[0]._dev["states"] for m in members)  # one copy of the rows
    np.testing.assert_array_equal(back.similar_items(8, n=4)[0], fitted3.similar_items(8, n=4)[0])


def test_a_file_from_before_ranker_ensembles_loads_as_one_ranker(tmp_path, data):
    one = tiny(n_rankers=1).fit(data)
    src = one.save(tmp_path / "one.npz")
    def older(h):  # as written before there were n_rankers and average_epochs
        for part in h["parts"].values():
            part["params"].pop("average_epochs")
        return {**h, "params": {k: v for k, v in h["params"].items() if k not in ("n_rankers", "valid_max_ratings")}}

    old = _rewrite(src, tmp_path / "old.npz", header=older)
    back = RBMRecommender.load(old)
    assert back.n_rankers == 1 and len(back.parts_["ranker"]) == 1
    assert back.valid_max_ratings is None  # fitted before the validation stage had a budget
    np.testing.assert_array_equal(back.score_items(data.user_ids[:5]), one.score_items(data.user_ids[:5]))


def test_a_file_missing_a_ranker_is_refused(tmp_path, fitted3):
    src = fitted3.save(tmp_path / "ok.npz")
    bad = _rewrite(src, tmp_path / "bad.npz",
                   header=lambda h: {**h, "parts": {k: v for k, v in h["parts"].items() if k != "ranker.2"}})
    with pytest.raises(ModelFileError, match="incomplete or corrupt"):
        RBMRecommender.load(bad)


# -- the ranker: several RBMs, each averaged over its last epochs ----------------------------------------
def test_ranker_scores_are_the_mean_of_its_models(data, fitted3):
    fitted = fitted3
    ens = fitted.parts_["ranker"]
    models = ens.members_
    assert len(models) == fitted.n_rankers == 3
    assert len({m.params_.seed for m in models}) == 3 and models[0].params_.seed == fitted.seed
    users = data.user_ids[:6]
    rows = fitted.user_index(users)
    mean = np.mean([m.score_users(rows) for m in models], axis=0)
    np.testing.assert_allclose(fitted.score_items(users), mean, rtol=1e-6)
    assert not np.allclose(models[0].score_users(rows), mean, rtol=1e-3)  # the models differ
    # a new person: every model folds them in, and the scores are averaged the same way
    h = {7: 5, 9: 1, 12: 3}
    row = fitted.history_matrix(h)
    row.data[:] = 1.0
    mean_new = np.mean([m.score_users([0], X=row) for m in models], axis=0)
    np.testing.assert_allclose(fitted.score_items(histories=h), mean_new, rtol=1e-6)
    # the models are trained on one copy of the rows
    assert all(m._device()["states"] is models[0]._device()["states"] for m in models)


def test_one_ranker_is_the_ranker_alone(data):
    rec = tiny(parts=("ranker",), n_rankers=1).fit(data)
    alone = RBM(**{**TINY, "average_epochs": 5}, visible="bernoulli", learning_rate=0.05, momentum=0.9,
                weight_decay=0.001, device="cpu")
    alone.fit(RatingData(sp.csr_matrix((np.ones(data.nnz, np.float32), data.ratings.indices, data.ratings.indptr),
                                       shape=data.ratings.shape), data.user_ids, data.item_ids, [1.0]))
    np.testing.assert_array_equal(rec.parts_["ranker"].members_[0].W_, alone.W_)


@pytest.mark.parametrize("n", [0, 1.5, True, "2"])
def test_n_rankers_is_checked_at_fit(data, n):
    rec = tiny(n_rankers=n)
    with pytest.raises(ValueError, match="n_rankers"):
        rec.fit(data)


def test_average_epochs_is_the_mean_of_the_last_epochs_weights(data):
    seen = []
    m = RBM(**{**TINY, "epochs": 6, "average_epochs": 3}, device="cpu")
    m.fit(data, callback=lambda model, record: seen.append((model.W_.copy(), model.bv_.copy(), model.bh_.copy())),
          monitor=False)
    for k, got in enumerate((m.W_, m.bv_, m.bh_)):
        np.testing.assert_allclose(got, np.mean([s[k] for s in seen[-3:]], axis=0), rtol=1e-5, atol=1e-7)
        assert not np.allclose(got, seen[-1][k])  # not the last epoch's
    # more than there are epochs: all of them
    m2 = RBM(**{**TINY, "epochs": 2, "average_epochs": 5}, device="cpu").fit(data, monitor=False)
    m3 = RBM(**{**TINY, "epochs": 2, "average_epochs": 2}, device="cpu").fit(data, monitor=False)
    np.testing.assert_array_equal(m2.W_, m3.W_)
    with pytest.raises(ValueError, match="average_epochs=0"):
        RBM(average_epochs=0)


# -- estimator conventions -----------------------------------------------------------------------------
def test_parameters_are_read_at_fit(data):
    m = RBM(n_hidden=4, epochs=40, device="cpu")
    m.epochs = 2
    m.fit(data)
    assert m.epochs_done_ == 2
    m.set_params(n_hidden=3)
    assert m.W_.shape[2] == 4 and m.params_.n_hidden == 4  # the fitted model keeps its shape
    with pytest.raises(ValueError, match="n_hidden was changed"):
        m.partial_fit()
    m.set_params(n_hidden=4, learning_rate=0.05)
    m.partial_fit()
    assert m.params_.learning_rate == 0.05 and m.epochs_done_ == 3
    rec = tiny(parts=("user",))
    rec.user_params = {**TINY, "epochs": 1}
    rec.fit(data)
    assert rec.parts_["user"].epochs_done_ == 1
    rec.valid_fraction = 1.5
    with pytest.raises(ValueError, match="valid_fraction=1.5"):
        rec.fit(data)


def test_arguments_after_the_first_are_keyword_only(data):
    with pytest.raises(TypeError):
        RBM(10, "softmax")
    with pytest.raises(TypeError):
        RBMRecommender(("user",), None)


def test_not_fitted_error(data):
    for model in (RBM(), RBMRecommender()):
        with pytest.raises(NotFittedError, match="not fitted"):
            model.recommend(1)
    assert issubclass(NotFittedError, ValueError) and issubclass(NotFittedError, AttributeError)


def test_failed_partial_fit_leaves_the_model_usable(tmp_path, data):
    m = RBM(n_hidden=4, epochs=1, device="cpu").fit(data)
    before = m.recommend(data.user_ids[0], n=5)
    bad = data.ratings.copy()
    bad.data[:] = 2.5  # not a level
    with pytest.raises(ValueError, match="not one of the model's levels"):
        m.partial_fit(bad)
    assert m.n_users_ == data.n_users and m.train_.nnz == data.nnz
    back = RBM.load(m.save(tmp_path / "m.npz"))
    np.testing.assert_array_equal(back.recommend(data.user_ids[0], n=5)[0], before[0])


# -- the product on MovieLens 100K -----------------------------------------------------------------------
@pytest.mark.data
def test_star_wars_history_gets_well_known_films(data_dir):
    from rbm_cuda import datasets

    ml = datasets.load(os.path.join(data_dir, "ml-100k"))
    rec = RBMRecommender(device="cpu").fit(ml)
    star_wars, toy_story, fargo = (int(ml.find_items(t).item_id.iloc[0]) for t in
                                   ("Star Wars (1977)", "Toy Story (1995)", "Fargo (1996)"))
    ids, _ = rec.recommend(histories={star_wars: 5, toy_story: 4, fargo: 5}, n=10)
    counts = ml.item_counts()[ml.item_index(ids)]
    assert len(ids) == 10 and counts.min() >= 20, counts


def test_fold_in_of_many_people_at_once_is_each_alone(fitted, data):
    """People folded in together (same and different history lengths, an empty history) get the
    units each gets alone."""
    m = fitted.parts_["item"]
    ph = m.transform().astype(np.float32)
    rng = np.random.default_rng(3)
    rows, cols, vals = [], [], []
    for p, k in enumerate([3, 1, 3, 0, 6, 3]):
        items = rng.choice(data.n_items, k, replace=False)
        rows += [p] * k
        cols += list(items)
        vals += list(rng.choice(m.levels_, k))
    hist = sp.csr_matrix((np.array(vals, np.float32), (rows, cols)), shape=(6, data.n_items))
    W, b = fold_in_visible_units(m, ph, hist)
    for p in range(6):
        Wp, bp = fold_in_visible_units(m, ph, hist[p])
        np.testing.assert_allclose(W[p], Wp[0], rtol=0, atol=1e-6)
        np.testing.assert_allclose(b[p], bp[0], rtol=0, atol=1e-6)
    assert not np.allclose(W[0], W[2])  # different histories of one length are not mixed up


def test_fold_in_newton_step_solves_the_whole_system():
    """The structured Newton step (per-level inverses, Woodbury, Schur complement on b) equals a
    dense solve of the (m K + K)-square Hessian."""
    from rbm_cuda.recommender import _newton_step

    rng = np.random.default_rng(0)
    p, m, K = 3, 4, 5
    B = rng.normal(size=(p, K, m, m))
    Minv = B @ B.transpose(0, 1, 3, 2) + np.eye(m)
    z = rng.normal(size=(p, m, K))
    Pr = np.exp(z) / np.exp(z).sum(axis=2, keepdims=True)
    grad = rng.normal(size=(p, m * K + K))
    b_prec = rng.uniform(0.5, 2.0, size=K)
    got = _newton_step(Minv, Pr, grad, b_prec)
    n = m * K
    for q in range(p):
        S = [np.diag(Pr[q, i]) - np.outer(Pr[q, i], Pr[q, i]) for i in range(m)]
        Hess = np.zeros((n + K, n + K))
        for i in range(m):
            Hess[i * K:(i + 1) * K, i * K:(i + 1) * K] = S[i]
            Hess[i * K:(i + 1) * K, n:] = Hess[n:, i * K:(i + 1) * K] = -S[i]
            for j in range(m):
                Hess[i * K + np.arange(K), j * K + np.arange(K)] += Minv[q, :, i, j]
        Hess[n:, n:] = sum(S) + np.diag(b_prec)
        np.testing.assert_allclose(got[q], np.linalg.solve(Hess, -grad[q]), rtol=1e-8, atol=1e-10)


def test_fold_in_over_the_rated_items_span_finds_the_same_unit(fitted, data):
    """The fit over A (m K numbers) and the fit over W (F K numbers) reach the same MAP estimate."""
    m = fitted.parts_["item"]
    ph = m.transform().astype(np.float32)
    hist = sp.csr_matrix((np.array([5, 4, 1, 2, 5], np.float32), (np.zeros(5, int), np.arange(0, 10, 2))),
                         shape=(1, data.n_items))
    Wr, br = fold_in_visible_units(m, ph, hist, reduced=True, max_iter=2000)
    Wf, bf = fold_in_visible_units(m, ph, hist, reduced=False, max_iter=2000)
    np.testing.assert_allclose(Wr, Wf, atol=2e-3)
    np.testing.assert_allclose(br, bf, atol=2e-3)


def test_a_numpy_seed_of_2_63_or_more_trains_as_the_same_python_int(data):
    a = RBM(**TINY, seed=np.uint64(2**64 - 11), device="cpu").fit(data, monitor=False)
    b = RBM(**TINY, seed=2**64 - 11, device="cpu").fit(data, monitor=False)
    np.testing.assert_array_equal(a.W_, b.W_)
