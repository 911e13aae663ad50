"""python -m rbm_cuda.train end to end: the embedded data set, the JSON report, the saved model."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from rbm_cuda import RBM, RBMRecommender
from rbm_cuda.train import main


def test_default_job_trains_the_recommender(tmp_path, capsys):
    out, js = tmp_path / "m.npz", tmp_path / "h.json"
    assert main(["--epochs", "2", "--hidden", "8", "--out", str(out), "--json", str(js), "--seed", "4"]) == 0
    report = json.loads(js.read_text())
    assert report["kind"] == "RBMRecommender" and report["dataset"] == "ml-latest-small"
    desc = report["recommender"]
    assert set(desc["parts"]) == {"item", "user", "ranker"}
    assert all(p["epochs"] == 2 and p["params"]["n_hidden"] == 8 for p in desc["parts"].values())
    assert sum(desc["weights"].values()) == pytest.approx(1)
    assert 0 < report["final"]["valid_rmse"] < 2
    model = RBMRecommender.load(out)
    assert model.weights_ == desc["weights"]
    # what was printed is the ranker's top-10 for the first user, with the expected ratings
    printed = capsys.readouterr().out
    ids, _ = model.recommend(model.user_ids_[0], n=10)
    titles = model.items_["title"].to_numpy()[model.item_index(ids)]
    assert "p(rated)" in printed
    for title in titles[:3]:
        assert title[:40] in printed


def test_plain_rbm_on_embedded_data(tmp_path, capsys):
    out, js = tmp_path / "m.npz", tmp_path / "h.json"
    assert main(["--plain", "--epochs", "3", "--hidden", "16", "--out", str(out), "--json", str(js),
                 "--seed", "4"]) == 0
    report = json.loads(js.read_text())
    assert report["dataset"] == "ml-latest-small"
    assert report["n_ratings"] == 100836 == report["n_train"] + report["n_valid"]
    from rbm_cuda import datasets

    counts = np.diff(datasets.load().ratings.indptr)  # validation: half_up(10 %) of each user's ratings
    assert report["n_valid"] == int(np.minimum(np.floor(0.1 * counts + 0.5), counts - 1).sum())
    assert report["backend"] == "numba"
    assert [r["epoch"] for r in report["history"]] == [1, 2, 3]
    for rec in report["history"]:
        assert set(rec) >= {"epoch", "train_rmse", "valid_rmse", "free_energy_train", "free_energy_valid", "seconds"}
        assert 0 < rec["valid_rmse"] < 2
    assert report["final"]["valid_rmse"] == report["history"][-1]["valid_rmse"]
    # the saved model is the trained one, and what was printed is its top-10 for the first user
    model = RBM.load(out)
    assert model.epochs_done_ == 3
    printed = capsys.readouterr().out
    ids, _ = model.recommend(model.user_ids_[0], n=10)
    titles = model.items_["title"].to_numpy()[model.item_index(ids)]
    assert "top-10 recommendations" in printed
    for title in titles[:3]:
        assert title[:40] in printed


def test_bad_flag_value_is_one_line_error(tmp_path, capsys):
    assert main(["--plain", "--epochs", "1", "--cd", "0", "--out", str(tmp_path / "m.npz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cd_steps") and "Traceback" not in err


@pytest.mark.data
def test_ml100k_by_name_with_json(data_dir, tmp_path):
    js = tmp_path / "out.json"
    env = dict(os.environ, RBM_CUDA_DATA=data_dir)
    proc = subprocess.run([sys.executable, "-m", "rbm_cuda.train", "--plain", "--data", "ml-100k", "--epochs", "2",
                           "--hidden", "20", "--json", str(js), "--out", str(tmp_path / "m.npz"), "--quiet"],
                          env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(js.read_text())
    assert report["dataset"] == "ml-100k" and report["n_ratings"] == 100000
    assert len(report["history"]) == 2


def test_unknown_user_is_refused_before_training(tmp_path, capsys):
    assert main(["--user", "99999", "--out", str(tmp_path / "m.npz")]) == 2
    assert "unknown user id 99999" in capsys.readouterr().err
    assert not (tmp_path / "m.npz").exists()
