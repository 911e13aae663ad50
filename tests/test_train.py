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
    assert main(["--epochs", "2", "--hidden", "8", "--out", str(out), "--json", str(js), "--seed", "4",
                 "--rankers", "2"]) == 0
    report = json.loads(js.read_text())
    assert report["kind"] == "RBMRecommender" and report["dataset"] == "ml-latest-small"
    desc = report["recommender"]
    assert set(desc["parts"]) == {"item", "user", "ranker"}
    assert all(p["epochs"] == 2 and p["params"]["n_hidden"] == 8 for p in desc["parts"].values())
    assert sum(desc["weights"].values()) == pytest.approx(1)
    assert 0 < report["final"]["valid_rmse"] < 2
    model = RBMRecommender.load(out)
    assert model.weights_ == desc["weights"]
    assert desc["parts"]["ranker"]["models"] == len(model.parts_["ranker"]) == 2
    # what was printed is the ranker's top-10 for the first user, with the expected ratings
    printed = capsys.readouterr().out
    assert "p(rated)" in printed
    assert_top10_printed(model, printed)


def assert_top10_printed(model, printed):
    """The titles of the model's top-10 for its first user are in what train printed."""
    ids, _ = model.recommend(model.user_ids_[0], n=10)
    for title in model.items_["title"].to_numpy()[model.item_index(ids)][:3]:
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
    assert "top-10 recommendations" in printed
    assert_top10_printed(model, printed)


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


def test_resume_after_sigkill_gives_the_uninterrupted_model(tmp_path):
    """SIGKILL mid-training, then --resume: the same model as a run that was never interrupted, and no
    temporary file left beside it."""
    import signal
    import time

    args = ["--plain", "--epochs", "6", "--hidden", "16", "--seed", "2", "--quiet"]
    whole, cut = tmp_path / "whole.npz", tmp_path / "cut.npz"
    assert main(args + ["--out", str(whole)]) == 0
    proc = subprocess.Popen([sys.executable, "-m", "rbm_cuda.train", *args, "--out", str(cut)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not cut.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = RBM.load(cut).epochs_done_ if cut.exists() else 0
    assert main(args + ["--out", str(cut), "--resume"]) == 0
    a, b = RBM.load(whole), RBM.load(cut)
    assert b.epochs_done_ == 6 and done <= 6
    np.testing.assert_array_equal(a.W_, b.W_)
    np.testing.assert_array_equal(a.bh_, b.bh_)
    assert [r["valid_rmse"] for r in a.history_] == [r["valid_rmse"] for r in b.history_]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.npz", "whole.npz"]


def test_resume_refuses_a_checkpoint_of_other_parameters(tmp_path, capsys):
    out = str(tmp_path / "m.npz")
    assert main(["--plain", "--epochs", "1", "--hidden", "8", "--out", out, "--quiet"]) == 0
    assert main(["--plain", "--epochs", "2", "--hidden", "16", "--out", out, "--quiet", "--resume"]) == 2
    assert "n_hidden 8 (this run: 16)" in capsys.readouterr().err


@pytest.mark.parametrize("flags, phrase", [
    (["--lr", "inf"], "learning_rate=inf"),
    (["--weight-decay", "nan"], "weight_decay=nan"),
    (["--plain", "--like-threshold", "nan", "--visible", "like"], "like_threshold=nan"),
    (["--valid-fraction", "1.5"], "--valid-fraction 1.5"),
    (["--valid-fraction", "-0.5"], "--valid-fraction -0.5"),
    (["--plain", "--cd", "1000000"], "more than the 1000 allowed"),
    (["--plain", "--hidden", "1000000000"], "more than this machine's"),
    (["--rankers", "0"], "n_rankers=0"),
    (["--plain", "--rankers", "2"], "--rankers 2: rankers are the recommender's"),
])
def test_bad_numbers_are_refused_before_training(tmp_path, capsys, flags, phrase):
    assert main(flags + ["--epochs", "1", "--out", str(tmp_path / "m.npz"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and phrase in err and err.count("\n") == 1
    assert not (tmp_path / "m.npz").exists()


def test_diverging_training_stops_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    out = tmp_path / "m.npz"
    # weight decay x 1e5 grows the weights about 300x a step: still finite after two epochs, not after three
    assert main(["--plain", "--epochs", "5", "--hidden", "8", "--lr", "1e5", "--out", str(out), "--quiet"]) == 2
    assert "training diverged in epoch 3" in capsys.readouterr().err
    m = RBM.load(out)  # the checkpoint of epoch 2
    assert m.epochs_done_ == 2 and np.isfinite(m.W_).all()
    assert main(["--plain", "--epochs", "3", "--hidden", "8", "--lr", "1e30", "--out", str(tmp_path / "n.npz"),
                 "--quiet"]) == 2
    assert "training diverged in epoch 1" in capsys.readouterr().err and not (tmp_path / "n.npz").exists()
    # the recommender too, in one line (no overflow warnings before it)
    assert main(["--epochs", "2", "--lr", "1e30", "--out", str(tmp_path / "r.npz"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: training diverged in epoch 1") and err.count("\n") == 1


def test_ctrl_c_is_one_line_that_says_how_to_resume(tmp_path):
    import signal
    import time

    out = tmp_path / "m.npz"
    # SIGINT back to its default in the child: a shell that runs the tests in the background starts
    # them with SIGINT ignored, and Python then installs no KeyboardInterrupt handler
    proc = subprocess.Popen([sys.executable, "-m", "rbm_cuda.train", "--plain", "--epochs", "500", "--hidden", "16",
                             "--out", str(out), "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=tmp_path, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not out.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().count("\n") == 0
    assert "--resume" in err and str(out) in err


def test_the_path_actually_written_is_printed_and_recorded(tmp_path, capsys):
    folder = tmp_path / "models"
    folder.mkdir()
    js = tmp_path / "h.json"
    assert main(["--plain", "--epochs", "1", "--hidden", "4", "--out", str(folder), "--json", str(js), "--quiet"]) == 0
    written = str(folder) + ".npz"
    assert f"model saved to {written}" in capsys.readouterr().out
    assert json.loads(js.read_text())["model"] == os.path.abspath(written)
    assert RBM.load(written).epochs_done_ == 1 and not any(folder.iterdir())
