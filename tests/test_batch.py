"""Top-n lists for every user (rbm_cuda.batch): the Parquet output equals the model's own recommend,
item for item, in a loop, on a 2-worker Dask cluster, and after a worker is killed mid-job."""

import json
import os
import signal
import sys

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from rbm_cuda import RBM, RBMRecommender, batch, datasets
from rbm_cuda.recommend import main as recommend_main

pytest.importorskip("pyarrow")


def _fit(X, epochs=2):
    small = dict(n_hidden=8, epochs=epochs)
    return RBMRecommender(item_params=small, user_params=small, ranker_params=small).fit(X)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    rng = np.random.default_rng(0)
    dense = (rng.integers(1, 6, (157, 40)) * (rng.random((157, 40)) < 0.3)).astype(np.float32)
    dense[3, :] = 5.0  # a user who rated every item: no candidates left, an empty list
    dense[5, :37] = 4.0  # three candidates left: a list shorter than n
    dense[5, 37:] = 0.0
    X = sp.csr_matrix(dense)
    model = _fit(X)
    path = tmp_path_factory.mktemp("model") / "synthetic.npz"
    model.save(path)
    return model, str(path)


@pytest.fixture(scope="module")
def ml100k(tmp_path_factory, data_dir):
    model = _fit(datasets.load(os.path.join(data_dir, "ml-100k")), epochs=1)
    path = tmp_path_factory.mktemp("model") / "ml100k.npz"
    model.save(path)
    return model, str(path)


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as c, \
            distributed.Client(c) as client:
        yield client


def expected_rows(model, n, users=None):
    """The rows recommend_all must write, straight from the model's recommend."""
    users = model.user_ids_ if users is None else np.asarray(users)
    ids, scores = model.recommend(users=users, n=n)
    rows = [(u, r + 1, ids[i, r], np.float32(scores[i, r]))
            for i, u in enumerate(users) for r in range(ids.shape[1]) if np.isfinite(scores[i, r])]
    return pd.DataFrame(rows, columns=["user", "rank", "item", "score"])


def assert_same_rows(frame, want):
    frame = frame.reset_index(drop=True)
    assert list(frame.columns) == ["user", "rank", "item", "score"]
    np.testing.assert_array_equal(frame["user"].to_numpy(), want["user"].to_numpy())
    np.testing.assert_array_equal(frame["rank"].to_numpy(), want["rank"].to_numpy())
    np.testing.assert_array_equal(frame["item"].to_numpy(), want["item"].to_numpy())
    np.testing.assert_allclose(frame["score"].to_numpy(), want["score"].to_numpy().astype(np.float32), rtol=1e-6)


def test_loop_writes_every_users_list_with_a_checked_schema(tmp_path, synthetic):
    model, path = synthetic
    files = batch.recommend_all(path, n=7, out=tmp_path / "out", partition_size=50)
    assert [os.path.basename(f) for f in files] == [f"part-{p:05d}.parquet" for p in range(4)]  # 157 users / 50
    frame = pd.read_parquet(tmp_path / "out")
    assert frame.dtypes.to_dict() == {"user": np.dtype(np.int64), "rank": np.dtype(np.int32),
                                      "item": np.dtype(np.int64), "score": np.dtype(np.float32)}
    assert_same_rows(frame, expected_rows(model, 7))
    per_user = frame.groupby("user")["rank"].agg(list)
    assert 3 not in per_user.index  # rated everything: no rows at all
    assert per_user[5] == [1, 2, 3]  # three candidates: ranks 1..3, no padding rows
    assert all(r == list(range(1, 8)) for u, r in per_user.items() if u != 5)
    seen = {(u, i) for u, i in zip(*model.train_.nonzero())}
    assert not any((model.user_index(u), model.item_index(i)) in seen for u, i in zip(frame.user, frame.item))
    assert json.loads((tmp_path / "out" / batch.MANIFEST).read_text())["n_users"] == 157


def test_chosen_users_and_a_fitted_model_object(tmp_path, synthetic):
    model, _ = synthetic
    users = model.user_ids_[[10, 2, 99]]
    batch.recommend_all(model, users, n=4, out=tmp_path / "o")
    assert_same_rows(pd.read_parquet(tmp_path / "o"), expected_rows(model, 4, users))
    again = []
    batch.recommend_all(model, users, n=4, out=tmp_path / "o", on_partition=lambda p, f: again.append(p))
    assert again == []  # the same model object is the same job: nothing to redo
    with pytest.raises(KeyError, match="12345"):
        batch.recommend_all(model, [12345], n=4, out=tmp_path / "p")


def test_a_plain_rbm_gives_its_own_recommend_lists(tmp_path, synthetic):
    model, _ = synthetic
    rbm = RBM(n_hidden=6, epochs=1).fit(model.train_)
    batch.recommend_all(rbm, n=5, out=tmp_path / "o", partition_size=60)
    frame = pd.read_parquet(tmp_path / "o")
    for u in (0, 5, 100):
        ids, scores = rbm.recommend(u, n=5)
        got = frame[frame.user == u]
        np.testing.assert_array_equal(got["item"].to_numpy(), ids)
        np.testing.assert_allclose(got["score"].to_numpy(), scores, rtol=1e-6)


def test_a_rerun_recomputes_only_missing_partitions_and_refuses_another_job(tmp_path, synthetic):
    model, path = synthetic
    out = tmp_path / "out"
    files = batch.recommend_all(path, n=5, out=out, partition_size=40)
    before = pd.read_parquet(out)
    os.remove(files[2])
    (out / ".part-00001.parquet.dead.tmp").write_bytes(b"half a file from a killed attempt")
    redone = []
    batch.recommend_all(path, n=5, out=out, partition_size=40, on_partition=lambda p, f: redone.append(p))
    assert redone == [2]
    assert not list(out.glob(".*.tmp"))
    assert_same_rows(pd.read_parquet(out), before)
    with pytest.raises(ValueError, match="another job [(]n 5 there, 6 here; "):
        batch.recommend_all(path, n=6, out=out, partition_size=40)


def test_partition_files_without_a_manifest_are_not_mixed_in(tmp_path, synthetic):
    _, path = synthetic
    (tmp_path / "part-00000.parquet").write_bytes(b"someone else's")
    with pytest.raises(ValueError, match="no _rbm_cuda_batch.json"):
        batch.recommend_all(path, n=5, out=tmp_path)


@pytest.mark.parametrize("bad, phrase", [(0, "partition_size must be"), (2.5, "partition_size must be")])
def test_bad_partition_sizes(tmp_path, synthetic, bad, phrase):
    with pytest.raises(ValueError, match=phrase):
        batch.recommend_all(synthetic[1], n=5, out=tmp_path, partition_size=bad)


def test_dask_dataframe_equals_the_loop(synthetic):
    pytest.importorskip("dask.dataframe")
    model, path = synthetic
    frame = batch.recommend_all(path, n=6, partition_size=45)
    assert frame.npartitions == 4
    assert_same_rows(frame.compute(), expected_rows(model, 6))


def test_the_threads_of_one_process_load_the_model_once(synthetic, monkeypatch):
    pytest.importorskip("dask.dataframe")
    import rbm_cuda.recommender as recommender

    model, path = synthetic
    loads = []
    real = recommender.load_model
    monkeypatch.setattr(recommender, "load_model", lambda *a, **k: loads.append(1) or real(*a, **k))
    monkeypatch.setattr(batch, "_WORKER_MODEL", {})
    frame = batch.recommend_all(path, n=3, partition_size=10)  # 16 partitions
    loads.clear()  # recommend_all itself loads the file once, to list its users
    assert_same_rows(frame.compute(scheduler="threads", num_workers=4), expected_rows(model, 3))
    assert len(loads) == 1


# -- on a 2-worker cluster of processes ------------------------------------------------------------
@pytest.mark.parametrize("which", ["synthetic", "ml100k"])
def test_a_two_worker_cluster_writes_the_loops_lists(tmp_path, request, cluster, which):
    model, path = request.getfixturevalue(which)
    loop = batch.recommend_all(path, n=10, out=tmp_path / "loop", partition_size=100)
    on_cluster = batch.recommend_all(path, n=10, out=tmp_path / "cluster", partition_size=100, client=cluster)
    assert [os.path.basename(f) for f in loop] == [os.path.basename(f) for f in on_cluster]
    for a, b in zip(loop, on_cluster):
        pd.testing.assert_frame_equal(pd.read_parquet(a), pd.read_parquet(b))
    assert_same_rows(pd.read_parquet(tmp_path / "cluster"), expected_rows(model, 10))


def test_the_dask_dataframe_on_a_cluster(cluster, synthetic):
    model, path = synthetic
    assert_same_rows(batch.recommend_all(path, n=3, partition_size=30, client=cluster).compute(),
                     expected_rows(model, 3))


def test_killing_a_worker_mid_job_still_gives_complete_correct_output(tmp_path, ml100k):
    distributed = pytest.importorskip("distributed")
    model, path = ml100k
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as c, distributed.Client(c) as client:
        pids = list(client.run(os.getpid).values())
        written_at_kill = []

        def kill_one(p, f):
            if not written_at_kill:
                written_at_kill.append(len(list((tmp_path / "out").glob("part-*.parquet"))))
                os.kill(pids[0], signal.SIGKILL)

        files = batch.recommend_all(path, n=20, out=tmp_path / "out", partition_size=5, client=client,
                                    on_partition=kill_one)
        assert pids[0] not in client.run(os.getpid).values()  # that worker really died mid-job
    n_parts = len(files)
    assert n_parts == 189  # 943 users / 5
    assert written_at_kill[0] < n_parts  # the kill came while partitions were still to be written
    assert sorted(os.listdir(tmp_path / "out")) == sorted([batch.MANIFEST] + [os.path.basename(f) for f in files])
    assert_same_rows(pd.read_parquet(tmp_path / "out"), expected_rows(model, 20))


# -- the command line -------------------------------------------------------------------------------
def test_cli_all_users_in_a_loop(tmp_path, synthetic, capsys):
    model, path = synthetic
    assert recommend_main(["--model", path, "--all-users", "--n", "4", "--out", str(tmp_path / "o"),
                           "--workers", "0", "--partition-size", "80"]) == 0
    out = capsys.readouterr().out
    want = expected_rows(model, 4)
    assert f"wrote {len(want)} rows" in out and "in 2 files" in out
    assert_same_rows(pd.read_parquet(tmp_path / "o"), want)


def test_cli_all_users_on_a_local_cluster(tmp_path, synthetic, capsys):
    pytest.importorskip("distributed")
    model, path = synthetic
    assert recommend_main(["--model", path, "--all-users", "--n", "3", "--out", str(tmp_path / "o"),
                           "--workers", "2", "--partition-size", "40"]) == 0
    assert "on a local Dask cluster of 2 workers" in capsys.readouterr().out
    assert_same_rows(pd.read_parquet(tmp_path / "o"), expected_rows(model, 3))


def test_cli_without_dask_runs_a_loop(tmp_path, synthetic, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # `import distributed` now fails
    model, path = synthetic
    assert recommend_main(["--model", path, "--all-users", "--n", "3", "--out", str(tmp_path / "o")]) == 0
    assert "in this process (dask is not installed)" in capsys.readouterr().out
    assert_same_rows(pd.read_parquet(tmp_path / "o"), expected_rows(model, 3))
    assert recommend_main(["--model", path, "--all-users", "--out", str(tmp_path / "p"), "--workers", "2"]) == 2
    assert "need dask" in capsys.readouterr().err


@pytest.mark.parametrize("argv, phrase", [
    (["--all-users"], "--all-users needs --out"),
    (["--all-users", "--out", "o", "--workers", "-1"], "--workers must be 0"),
    (["--user", "1", "--out", "o"], "go with --all-users"),
    (["--all-users", "--out", "o", "--csv", "x.csv"], "--csv and --data do not apply"),
])
def test_cli_all_users_errors(tmp_path, synthetic, capsys, argv, phrase):
    assert recommend_main(["--model", synthetic[1], *argv]) == 2
    assert phrase in capsys.readouterr().err
