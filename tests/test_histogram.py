"""The latency histogram: its buckets (in _ext_histogram.h and mirrored in _stats.py), the
error bound of percentiles, their range, and what happens when a bucket fills."""

from __future__ import annotations

import math

import pytest

import fastpatch
from fastpatch import _ext
from fastpatch._stats import HISTOGRAM_RANGE_NS, RELATIVE_ERROR, bucket_bounds, bucket_value


def test_python_bucket_bounds_match_the_c_bucketing():
    for index in range(_ext.HIST_BUCKETS - 1):
        low, high = bucket_bounds(index)
        assert _ext._testing_bucket_index(low) == index
        assert _ext._testing_bucket_index(high - 1) == index
        assert _ext._testing_bucket_index(high) == index + 1
    assert _ext._testing_bucket_index(10**15) == _ext.HIST_BUCKETS - 1
    assert HISTOGRAM_RANGE_NS == bucket_bounds(_ext.HIST_BUCKETS - 1)[0]


def test_every_bucket_reports_a_value_within_the_documented_relative_error():
    assert RELATIVE_ERROR == 1 / 16
    assert HISTOGRAM_RANGE_NS == 2**41  # about 36.6 minutes
    worst = 0.0
    for index in range(_ext.HIST_BUCKETS - 1):
        low, high = bucket_bounds(index)
        value = bucket_value(index)
        assert low <= value < high
        if low < 32:
            assert max(value - low, high - 1 - value) <= 2  # the linear buckets below 32 ns
            continue
        # every duration in [low, high - 1] is within the bound of the reported value
        worst = max(worst, (value - low) / low, (high - 1 - value) / (high - 1))
    assert worst <= RELATIVE_ERROR
    assert bucket_bounds(_ext.HIST_BUCKETS - 2)[1] == HISTOGRAM_RANGE_NS


def test_the_histogram_fits_its_range_and_a_probe_in_two_kib():
    # 8 sub-buckets per power of two up to 2**41 ns would need 296 buckets.
    assert _ext.HIST_BUCKETS * 8 + 128 <= 2048


def _stats_with(observations):
    hist = [0] * _ext.HIST_BUCKETS
    for ns in observations:
        hist[_ext._testing_bucket_index(ns)] += 1
    return fastpatch.Stats(
        name="synthetic", calls=len(observations), errors=0, total_ns=sum(observations),
        min_ns=min(observations), max_ns=max(observations), completed=len(observations), histogram=tuple(hist),
    )


def _true_percentile(sorted_observations, q):
    rank = max(1, math.ceil(q / 100 * len(sorted_observations)))
    return sorted_observations[rank - 1]


@pytest.mark.parametrize(
    "low,high",
    [(1_000, 1_000_000), (32, 100_000), (10**9, 30 * 60 * 10**9)],
    ids=["1us-1ms", "32ns-100us", "1s-30min"],
)
def test_percentiles_of_a_known_distribution_are_within_the_error_bound(low, high):
    step = (high - low) // 999
    observations = [low + step * i for i in range(1000)]
    s = _stats_with(observations)
    assert s.percentile(0) == observations[0]
    assert s.percentile(100) == observations[-1]
    for q in (1, 10, 25, 50, 75, 90, 99, 99.9):
        true = _true_percentile(observations, q)
        assert abs(s.percentile(q) - true) <= RELATIVE_ERROR * true, q


def test_percentiles_are_clamped_to_min_and_max():
    s = _stats_with([1_000_003] * 5)
    assert [s.percentile(q) for q in (0, 1, 50, 99, 100)] == [1_000_003] * 5
    top = _stats_with([HISTOGRAM_RANGE_NS * 3, HISTOGRAM_RANGE_NS * 4])
    assert top.percentile(50) == top.max_ns


@pytest.mark.parametrize("q", [-1, 100.5, float("nan")])
def test_percentile_outside_0_100_is_a_value_error(q):
    with pytest.raises(ValueError, match="from 0 to 100"):
        _stats_with([5]).percentile(q)


def test_percentile_needs_a_number():
    with pytest.raises(TypeError, match="needs a number"):
        _stats_with([5]).percentile("50")


@pytest.mark.parametrize("ending", ["return", "raise"])
def test_histogram_buckets_count_past_2_to_the_32_without_halving(ending):
    def f(x):
        if ending == "raise":
            raise KeyError(x)
        return [x]

    def call(x):
        try:
            return f(x)
        except KeyError:
            return None

    fastpatch.instrument(f)
    (probe,) = [c for c in f.__code__.co_consts if type(c) is _ext.Probe]
    full = 2**32 - 1
    probe._testing_fill_histogram(full)
    assert [call(x) for x in (1, 2, 3)] == ([None] * 3 if ending == "raise" else [[1], [2], [3]])
    # Reading folds in the pending end, however it ended (the exit's
    # subscript, or the token's deallocator: an exception, or every return
    # on 3.9); the buckets that got a call went past 2**32, the rest kept theirs.
    s = fastpatch.stats(f)
    assert (s.calls, s.completed, s.timed, sum(s.histogram)) == (3, 3, 3, full * _ext.HIST_BUCKETS + 3)
    assert min(s.histogram) == full and max(s.histogram) in (2**32, 2**32 + 1, 2**32 + 2)
    probe._testing_fill_histogram(2**40)
    assert sum(fastpatch.stats(f).histogram) == 2**40 * _ext.HIST_BUCKETS
    with pytest.raises(OverflowError):
        probe._testing_fill_histogram(2**64)
