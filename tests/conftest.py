import os
import pathlib
import sys

import pytest

import fastpatch

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(autouse=True)
def _fresh_counters_and_no_tracer_left_behind():
    # Stats belong to definitions, which tests share through kinds.py.
    fastpatch.reset()
    yield
    assert sys.gettrace() is None
    assert sys.getprofile() is None


@pytest.fixture
def ram_path():
    """A fresh directory on /dev/shm, where telemetry directories belong: one
    that is not on tmpfs costs a warning line on stderr (which tests expect
    through telemetry_files.not_ram_backed_warning, since not every root
    filesystem has a tmpfs at /dev/shm). Removed afterwards."""
    import shutil
    import tempfile

    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm here")
    path = tempfile.mkdtemp(prefix="fastpatch-test-", dir="/dev/shm")
    try:
        yield pathlib.Path(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)
