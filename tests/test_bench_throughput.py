"""bench/throughput.py's pairing of peers with numba (the ratios the README quotes)."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import throughput  # noqa: E402


class QuickTurns:
    """The arguments run_group reads: no minimum time per turn, no pause between turns."""

    timeout = 300
    min_seconds = 0.0
    turn_pause = 0.0


def _needs_ml100k():
    if not os.path.exists(os.path.join(os.environ.get("RBM_CUDA_DATA", ""), "ml-100k", "u.data")):
        pytest.skip("needs $RBM_CUDA_DATA/ml-100k/u.data")


def test_ratio_is_the_median_of_the_rounds_ratios_of_medians():
    numba = [[0.10, 0.30, 0.11], [0.20, 0.21, 0.19], [0.10]]
    peer = [[0.50], [0.60, 0.62], [0.35, 0.45]]
    ratio, per_round = throughput.paired_ratio(peer, numba)
    assert per_round == pytest.approx([0.50 / 0.11, 0.61 / 0.20, 0.40 / 0.10])
    assert ratio == pytest.approx(0.40 / 0.10)


def test_rounds_missing_on_either_side_are_left_out():
    ratio, per_round = throughput.paired_ratio([[1.0], [], [3.0]], [[0.5], [0.5]])
    assert per_round == pytest.approx([2.0])
    assert ratio == pytest.approx(2.0)
    assert throughput.paired_ratio([[]], [[0.5]]) == (None, [])


def test_a_case_that_fails_is_skipped_with_its_reason_and_the_others_are_timed():
    """A case whose process dies is reported with the last line of its stderr; the case beside it
    still gets its rounds, one turn each, each turn after an epoch outside the timing."""
    _needs_ml100k()
    base = {"impl": "numpy-dense", "cd": 1, "batch_size": 1000, "warmup": 0, "epochs": 3, "skip": ""}
    group = [{**base, "dataset": "no-such-set"}, {**base, "dataset": "ml-100k"},
             {**base, "impl": "cuda", "dataset": "ml-100k", "skip": "no GPU: test"}]

    failed, timed, skipped = throughput.run_group(group, QuickTurns)
    assert failed["skip"].startswith("failed: ") and "no-such-set" in failed["skip"]
    assert skipped == {"skip": "no GPU: test"}
    assert [len(turn) for turn in timed["round_seconds"]] == [1, 1, 1]
    assert len(timed["round_untimed_seconds"]) == 3 and all(t > 0 for t in timed["round_untimed_seconds"])
    assert timed["nnz"] == 100_000 and timed["peak_rss_mb"] > 0


def test_a_negative_turn_pause_is_refused_with_the_value(capsys):
    with pytest.raises(SystemExit):
        throughput.main(["--turn-pause", "-0.5", "--datasets", "ml-100k"])
    assert "--turn-pause must be >= 0 seconds, got -0.5" in capsys.readouterr().err


def test_threads_set_every_library_s_pool_in_the_case_s_process_and_nothing_else_when_unset():
    env = throughput.child_env({"threads": 1}, {"PATH": "/bin", "OMP_NUM_THREADS": "8"})
    assert all(env[name] == "1" for name in throughput.THREAD_VARIABLES)
    assert env["PATH"] == "/bin" and env["PYTHONPATH"].split(os.pathsep)[0] == throughput.ROOT
    env = throughput.child_env({"threads": None}, {"OMP_NUM_THREADS": "8"})
    assert env["OMP_NUM_THREADS"] == "8" and "NUMBA_NUM_THREADS" not in env


def test_a_numba_case_runs_on_the_threads_asked_for():
    _needs_ml100k()
    case = {"impl": "numba", "dataset": "ml-100k", "cd": 1, "batch_size": 1000, "warmup": 0, "epochs": 1,
            "skip": "", "threads": 1}

    (result,) = throughput.run_group([case], QuickTurns)
    assert result["numba_threads"] == 1


@pytest.mark.parametrize("value", ["0", "-2"])
def test_a_thread_count_below_one_is_refused_with_the_value(capsys, value):
    with pytest.raises(SystemExit):
        throughput.main(["--threads", value, "--datasets", "ml-100k"])
    assert f"--threads must be at least 1, got {value}" in capsys.readouterr().err


@pytest.mark.emulation
def test_gpu_launches_prints_each_visible_type_counted(capsys):
    import json

    import gpu_launches

    assert gpu_launches.main(["--json", "--hidden", "8"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"softmax", "like", "bernoulli"}
    for c in out.values():
        assert c["launches_per_batch"] == c["kernels_per_batch"] + c["array_ops_per_batch"] >= 1
        assert c["host_syncs_per_batch"] == 0 and c["batches"] == 10
    assert out["bernoulli"]["array_ops_per_batch"] > out["softmax"]["array_ops_per_batch"]

