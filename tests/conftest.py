"""Shared test set-up.  The tests run against the installed package (with its compiled modules),
never a bare source tree: `pip install '.[test]'` first (see README)."""

import os

import pytest

import rbm_cuda


def pytest_addoption(parser):
    parser.addoption("--emu-schedule", default="forward", metavar="ORDER[:SEED]",
                     help="order in which the emulated kernels visit blocks and threads in every test: forward "
                          "(default), reverse or shuffled:SEED (rbm_cuda.emulation.schedule)")


def pytest_configure(config):
    # A relative $RBM_CUDA_DATA means "relative to where pytest was started": make it absolute once, so
    # the tests that run commands in other folders find the same data.
    data = os.environ.get("RBM_CUDA_DATA")
    if data and not os.path.isabs(data):
        os.environ["RBM_CUDA_DATA"] = os.pathsep.join(os.path.abspath(p) for p in data.split(os.pathsep) if p)
    try:
        from rbm_cuda import _build_info  # noqa: F401  written only by a real build
    except ImportError:
        raise pytest.UsageError(
            f"rbm_cuda was imported from {os.path.dirname(rbm_cuda.__file__)}, which is not a built package; "
            "run `pip install '.[test]'` and then `pytest` (not `python -m pytest`) from the repository"
        ) from None


def pytest_report_header(config):
    from rbm_cuda import gpu

    return [f"rbm_cuda {rbm_cuda.__version__} from {os.path.dirname(rbm_cuda.__file__)}",
            f"GPU backend: {'yes' if gpu.HAS_CUDA else 'no'} ({gpu.REASON})"]


@pytest.fixture(scope="session", autouse=True)
def emulation_schedule(request):
    """Every emulated launch of the session in the order --emu-schedule names."""
    order, _, seed = request.config.getoption("--emu-schedule").partition(":")
    from rbm_cuda import emulation

    if not emulation.AVAILABLE or (order == "forward" and not seed):
        yield
        return
    with emulation.schedule(order, int(seed or 0)):
        yield


@pytest.fixture(scope="session")
def data_dir():
    """$RBM_CUDA_DATA, or skip: tests on the real data sets need it (../shared/data in CI)."""
    path = os.environ.get("RBM_CUDA_DATA")
    if not path or not os.path.isdir(path):
        pytest.skip("RBM_CUDA_DATA is not set to the folder of data sets")
    return path
