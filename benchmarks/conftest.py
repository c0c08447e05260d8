"""Configuration of the fastpatch benchmark suite (``pytest benchmarks/``).

FASTPATCH_BENCH_QUICK=1 makes every round shorter (fewer calls per round,
fewer pedantic rounds) and, unless --benchmark-max-time is given, caps each
benchmark at 0.1 s instead of pytest-benchmark's 1 s. Use it in CI, where
the numbers only need to exist, not to be precise.
"""

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:  # also under --import-mode=importlib
    sys.path.insert(0, HERE)

import _harness  # noqa: E402

QUICK_MAX_TIME = "0.1"


def pytest_configure(config):
    if not config.pluginmanager.hasplugin("benchmark"):
        raise pytest.UsageError(
            "the fastpatch benchmarks need pytest-benchmark: pip install 'fastpatch[bench]' "
            "(pytest-benchmark, wrapt, matplotlib)"
        )
    if _harness.QUICK:
        current = getattr(config.option, "benchmark_max_time", None)
        try:
            is_default = current is not None and float(current) == 1.0
        except (TypeError, ValueError):
            is_default = False
        if is_default:
            config.option.benchmark_max_time = QUICK_MAX_TIME


def pytest_report_header(config):
    return "fastpatch benchmarks: " + _harness.describe()
