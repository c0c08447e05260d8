import os
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
