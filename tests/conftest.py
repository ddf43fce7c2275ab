"""Shared fixtures.

Real sample frames live outside the repository (never committed): ``PCDET_REALDATA`` or
``<repo>/../shared/realdata``. Tests that need them skip with a reason when the folder is absent,
and fail when ``CI=true`` (CI always has them beside the clone).

Tests marked ``gpu`` need a CUDA device: they are skipped with a reason where torch sees none (every
CPU machine, the CPU CI job) and run on the GPU runners (``pytest -m gpu``).
"""

import pytest
import torch

from tests.helpers import require_realdata as _require


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA device (skipped with a reason without one)")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; torch.cuda.is_available() is False on this machine")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture
def realdata():
    """Root of the real sample data (skips / fails as described above)."""
    return _require("")


@pytest.fixture
def real_kitti():
    """``realdata/kitti``: 6 full KITTI training frames with labels and calibration."""
    return _require("kitti")


@pytest.fixture
def real_kitti_labels_all():
    """``realdata/kitti_label2_all``: the 7481 KITTI training label files."""
    return _require("kitti_label2_all")


@pytest.fixture
def single_thread():
    """Run a test with one torch and one numba thread, restoring both afterwards: for tests of
    behaviour (not speed) whose threaded regions would only wait for a core on a busy machine."""
    import numba

    torch_threads, numba_threads = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    yield
    torch.set_num_threads(torch_threads)
    numba.set_num_threads(numba_threads)


@pytest.fixture
def two_threads():
    """Run a test with two torch threads (the count at which spconv's unguarded CPU scatter-add races),
    restoring the caller's count afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)
