"""Whole modules instrumented, then CPython's own test suites for them run:
generators, coroutines, context managers, recursion, exceptions and
introspection in code we do not own, checked by tests we did not write."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

RUNNER = os.path.join(os.path.dirname(__file__), "stdlib_runner.py")

SUITES = {
    "text": ("json,json.decoder,json.encoder,textwrap,difflib,shlex,string",
             "test.test_json,test.test_textwrap,test.test_difflib,test.test_shlex,test.test_string"),
    "generators_and_context_managers": ("contextlib,tokenize,fnmatch,glob,heapq",
                                        "test.test_contextlib,test.test_tokenize,test.test_fnmatch,test.test_glob,test.test_heapq"),
    "classes_and_introspection": ("argparse,enum,dataclasses,pprint,copy,fractions",
                                  "test.test_argparse,test.test_enum,test.test_dataclasses,test.test_pprint,test.test_copy,test.test_fractions"),
    "asyncio": (
        "asyncio.tasks,asyncio.locks,asyncio.queues,asyncio.futures,asyncio.base_events,asyncio.events,asyncio.streams",
        "test.test_asyncio.test_locks,test.test_asyncio.test_queues,test.test_asyncio.test_tasks,"
        "test.test_asyncio.test_streams",
    ),
}


NO_TEST_PACKAGE = importlib.util.find_spec("test.test_json") is None


@pytest.mark.skipif(NO_TEST_PACKAGE, reason="CPython's test package is not installed")
@pytest.mark.parametrize("suite", sorted(SUITES))
def test_stdlib_modules_pass_their_own_tests_while_instrumented(suite):
    modules, tests = SUITES[suite]
    proc = subprocess.run(
        [sys.executable, RUNNER, modules, tests], capture_output=True, text=True, timeout=900,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["problems"] == []
    assert result["modules"] == modules.split(",")
    assert result["tests"] > 100
    assert result["instrumented"] > 50
    # functions made from one definition share its entry (enum's makes several)
    assert result["instrumented"] * 0.9 <= result["instrumented_now"] <= result["instrumented"]
    assert result["calls"] > 10_000
