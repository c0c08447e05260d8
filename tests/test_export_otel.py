"""The OpenTelemetry exporter with the SDK's real PeriodicExportingMetricReader
and MeterProvider, wrapping an exporter that records what it receives: this
process's own probes and a telemetry directory, exact data points,
CUMULATIVE and DELTA temporalities, and an app's metrics that always go out."""

from __future__ import annotations

import logging
import math
import sys

import pytest

if sys.version_info < (3, 10):
    pytest.skip("opentelemetry-sdk 1.42 and later need Python 3.10 or newer (fastpatch[otel] installs nothing on "
                "3.9)", allow_module_level=True)
pytest.importorskip("opentelemetry.sdk.metrics", reason="the OpenTelemetry exporter needs opentelemetry-sdk "
                    "(fastpatch[otel])")

from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import (  # noqa: E402
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    PeriodicExportingMetricReader,
)

import fastpatch  # noqa: E402
import telemetry_files as tf  # noqa: E402
from fastpatch import _stats  # noqa: E402
from fastpatch.export.otel import FastpatchMetricExporter  # noqa: E402
from live_telemetry import call_range  # noqa: E402

CUMULATIVE = AggregationTemporality.CUMULATIVE
DELTA = AggregationTemporality.DELTA
QUARTER = (2.55e-07, 1.023e-06, 4.095e-06, 1.6383e-05, 6.5535e-05, 0.000262143, 0.001048575, 0.004194303,
           0.016777215, 0.067108863, 0.268435455, 1.073741823, 4.294967295, 17.179869183, 68.719476735,
           274.877906943, 1099.511627775)


class Recorder(MetricExporter):
    """An exporter that keeps every MetricsData it is given."""

    def __init__(self, temporality=None) -> None:
        super().__init__(preferred_temporality=temporality)
        self.exported = []
        self.shut = False

    def export(self, metrics_data, timeout_millis=10_000, **kwargs):
        self.exported.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis=10_000):
        return True

    def shutdown(self, timeout_millis=30_000, **kwargs):
        self.shut = True


class App:
    """A MeterProvider with one counter of the app's own, exporting through
    FastpatchMetricExporter(recorder) on the SDK's periodic reader."""

    def __init__(self, recorder: Recorder, **options) -> None:
        self.reader = PeriodicExportingMetricReader(FastpatchMetricExporter(recorder, **options),
                                                    export_interval_millis=3_600_000)
        self.provider = MeterProvider(metric_readers=[self.reader])
        self.requests = self.provider.get_meter("app").create_counter("app.requests")

    def export(self) -> None:
        self.requests.add(1)
        assert self.reader.force_flush(60_000)

    def close(self) -> None:
        self.provider.shutdown()


def _by_scope(metrics_data) -> dict:
    """{scope name: {metric name: metric}} of one export."""
    return {sm.scope.name: {m.name: m for m in sm.metrics}
            for rm in metrics_data.resource_metrics for sm in rm.scope_metrics}


def _points(metric) -> dict:
    """{code.function.name: data point}, of this module's functions or a directory's (other tests' probes may
    still be alive in this process)."""
    return {p.attributes["code.function.name"]: p for p in metric.data.data_points
            if p.attributes["code.function.name"].startswith((__name__, "app."))}


def _f(x):
    return x + 1


def _g(x):
    if x:
        raise ValueError(x)


@pytest.fixture
def instrumented():
    f = fastpatch.instrument(_f)
    g = fastpatch.instrument(_g)
    fastpatch.reset()
    yield f, g
    fastpatch.uninstrument(f)
    fastpatch.uninstrument(g)


def test_source_none_adds_this_processs_own_probes_to_the_apps_export(instrumented):
    f, g = instrumented
    for i in range(5):
        f(i)
    call_range(g, 3)
    recorder = Recorder()
    app = App(recorder)
    try:
        app.export()
    finally:
        app.close()
    exports = recorder.exported
    assert len(exports) >= 1 and recorder.shut
    scopes = _by_scope(exports[0])
    assert list(scopes["app"]) == ["app.requests"]
    ours = scopes["fastpatch"]
    assert [(m.name, m.unit) for m in ours.values()] == [
        ("fastpatch.function.calls", "{call}"), ("fastpatch.function.errors", "{error}"),
        ("fastpatch.function.duration", "s"), ("fastpatch.function.active_calls", "{call}"),
    ]
    assert [(m.data.aggregation_temporality, getattr(m.data, "is_monotonic", None)) for m in ours.values()] == [
        (CUMULATIVE, True), (CUMULATIVE, True), (CUMULATIVE, None), (CUMULATIVE, False)]
    f_name, g_name = f"{__name__}._f", f"{__name__}._g"
    assert {n: p.value for n, p in _points(ours["fastpatch.function.calls"]).items()} == {f_name: 5, g_name: 3}
    assert {n: p.value for n, p in _points(ours["fastpatch.function.errors"]).items()} == {f_name: 0, g_name: 2}
    assert {n: p.value for n, p in _points(ours["fastpatch.function.active_calls"]).items()} == {f_name: 0, g_name: 0}
    stats = {f_name: fastpatch.stats(f), g_name: fastpatch.stats(g)}
    for name, point in _points(ours["fastpatch.function.duration"]).items():
        s = stats[name]
        assert point.explicit_bounds == QUARTER
        assert point.count == s.completed == sum(point.bucket_counts)
        assert point.sum == s.total_ns / 1e9
        assert (point.min, point.max) == (s.min_ns / 1e9, s.max_ns / 1e9)
        assert list(point.bucket_counts) == _expected_counts(s.histogram, QUARTER)


def _expected_counts(hist, bounds) -> list:
    """Per exported bucket, the calls of fastpatch's buckets between its bounds (edges = bound + 1 ns)."""
    edges = [round(b * 1e9) + 1 for b in bounds]
    out, low = [], 0
    for edge in edges + [math.inf]:
        out.append(sum(c for i, c in enumerate(hist) if low < _stats.bucket_bounds(i)[1] <= edge))
        low = edge
    return out


def _directory(tmp_path, files: dict) -> str:
    tmp_path.chmod(0o700)
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return str(tmp_path)


def test_a_directory_source_exports_the_merged_numbers_of_its_processes_exactly(tmp_path):
    d = _directory(tmp_path, {"fastpatch-1-1.fpt": tf.valid_file(calls=7, pid=1, state=2),
                              "fastpatch-2-2.fpt": tf.valid_file(calls=5, pid=2, state=2)})
    recorder = Recorder()
    app = App(recorder, source=d, buckets="all")
    try:
        app.export()
    finally:
        app.close()
    ours = _by_scope(recorder.exported[0])["fastpatch"]
    assert {n: p.value for n, p in _points(ours["fastpatch.function.calls"]).items()} == {"app.f": 12}
    (point,) = ours["fastpatch.function.duration"].data.data_points
    counts = [0] * _stats.HIST_BUCKETS
    counts[40] = 12  # telemetry_files puts every call in bucket 40
    assert (point.count, point.sum, list(point.bucket_counts), point.min, point.max) == (
        12, 12 * 300 / 1e9, counts, 250 / 1e9, 350 / 1e9)
    assert point.explicit_bounds == tuple((_stats.bucket_bounds(i)[1] - 1) / 1e9 for i in range(230))
    assert point.start_time_unix_nano == 1_700_000_000_000_000_000  # when the oldest process started


def test_delta_temporality_exports_the_change_since_the_previous_export(tmp_path):
    d = _directory(tmp_path, {"fastpatch-1-1.fpt": tf.valid_file(calls=7, pid=1, state=2)})
    recorder = Recorder({Counter: DELTA, Histogram: DELTA})
    app = App(recorder, source=d)
    try:
        app.export()
        (tmp_path / "fastpatch-2-2.fpt").write_bytes(tf.valid_file(calls=5, pid=2, state=2))
        app.export()
        app.export()
    finally:
        app.close()
    first, second, third = (_by_scope(e)["fastpatch"] for e in recorder.exported[:3])
    assert [m.data.aggregation_temporality for m in first.values()] == [DELTA, DELTA, DELTA, CUMULATIVE]
    calls = [_points(e["fastpatch.function.calls"])["app.f"] for e in (first, second, third)]
    assert [p.value for p in calls] == [7, 5, 0]
    assert calls[1].start_time_unix_nano == calls[0].time_unix_nano
    assert calls[2].start_time_unix_nano == calls[1].time_unix_nano
    durations = [_points(e["fastpatch.function.duration"])["app.f"] for e in (first, second, third)]
    assert [(p.count, p.bucket_counts[1]) for p in durations] == [(7, 7), (5, 5), (0, 0)]
    assert (durations[1].sum, durations[1].min, durations[1].max) == (5 * 300 / 1e9, math.inf, -math.inf)


def test_cumulative_series_restart_when_counts_go_down(instrumented):
    f, _g = instrumented
    for i in range(4):
        f(i)
    recorder = Recorder()
    app = App(recorder)
    try:
        app.export()
        fastpatch.reset()
        f(0)
        app.export()
    finally:
        app.close()
    first, second = (_points(_by_scope(e)["fastpatch"]["fastpatch.function.calls"])[f"{__name__}._f"]
                     for e in recorder.exported[:2])
    assert (first.value, second.value) == (4, 1)
    assert second.start_time_unix_nano == first.time_unix_nano


def test_a_damaged_file_is_skipped_with_one_warning_and_the_export_goes_on(tmp_path):
    d = _directory(tmp_path, {"fastpatch-1-1.fpt": tf.valid_file(calls=7, pid=1, state=2),
                              "fastpatch-2-2.fpt": b"junk" * 2000})
    recorder = Recorder()
    app = App(recorder, source=d)
    try:
        with pytest.warns(RuntimeWarning) as warned:
            app.export()
            app.export()
    finally:
        app.close()
    assert [str(w.message) for w in warned] == [
        "fastpatch: skipped telemetry file fastpatch-2-2.fpt: not a fastpatch telemetry file (wrong magic)"]
    assert _points(_by_scope(recorder.exported[1])["fastpatch"]["fastpatch.function.calls"])["app.f"].value == 7


def test_a_source_that_cannot_be_read_costs_one_logged_error_and_the_apps_metrics_still_go_out(tmp_path, caplog):
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("x")
    recorder = Recorder()
    app = App(recorder, source=not_a_directory)
    try:
        with caplog.at_level(logging.ERROR, logger="fastpatch.export.otel"):
            app.export()
    finally:
        app.close()
    assert list(_by_scope(recorder.exported[0])) == ["app"]
    assert [r.getMessage() for r in caplog.records if r.name == "fastpatch.export.otel"][:1] == [
        "fastpatch: could not add fastpatch's metrics to this export"]


def test_a_missing_directory_adds_nothing(tmp_path):
    recorder = Recorder()
    app = App(recorder, source=tmp_path / "not-yet")
    try:
        app.export()
    finally:
        app.close()
    assert list(_by_scope(recorder.exported[0])) == ["app"]


def test_the_inner_exporter_must_be_a_metric_exporter():
    with pytest.raises(TypeError) as raised:
        FastpatchMetricExporter(object())
    assert str(raised.value) == "FastpatchMetricExporter wraps a MetricExporter, not object"

