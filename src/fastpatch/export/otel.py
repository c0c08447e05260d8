"""OpenTelemetry: a metric exporter that wraps the app's own and adds
fastpatch's metrics to every export.

The Python SDK has no MetricProducer and no asynchronous histogram, so the
wrapper is how a histogram that fastpatch already holds reaches any
exporter: ``PeriodicExportingMetricReader(FastpatchMetricExporter(inner))``
hands each collection to ``export()``, which appends one ResourceMetrics
(the app's resource, scope ``fastpatch``) and passes everything to
``inner``.

Needs opentelemetry-sdk (the extra ``fastpatch[otel]``; Python 3.10 or
newer), imported when this module is. ``import fastpatch`` and the
activation never import it.
"""

from __future__ import annotations

import logging
import math
import os
import time

from opentelemetry.sdk.metrics import Counter, Histogram, UpDownCounter
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from ._functions import (
    ACTIVE,
    CALLS,
    COUNTS,
    ERRORS,
    MAX_NS,
    MIN_NS,
    TOTAL_NS,
    bounds_seconds,
    bucket_edges,
    merge_by_name,
    spans,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

    from .._stats import Stats

__all__ = ["FastpatchMetricExporter", "ATTRIBUTE"]

#: The attribute that names the function (``module.qualname``).
ATTRIBUTE = "code.function.name"
_CUMULATIVE = AggregationTemporality.CUMULATIVE
_DELTA = AggregationTemporality.DELTA
_logger = logging.getLogger(__name__)


class FastpatchMetricExporter(MetricExporter):
    """A MetricExporter that exports what ``inner`` is given plus
    fastpatch's metrics: ``fastpatch.function.calls`` and
    ``fastpatch.function.errors`` (monotonic sums), ``fastpatch.function.duration``
    (an explicit-bucket histogram in seconds, bounds as the Prometheus
    collector's: each a fastpatch bucket edge minus 1 ns, so every count is
    exact) and ``fastpatch.function.active_calls`` (a non-monotonic sum), each
    data point with the attribute ``code.function.name``.

    ``source=None`` exports this process's own probes (no telemetry file
    needed); a directory exports the merged numbers of every process of
    that telemetry directory (a damaged file is skipped with one warning;
    a missing directory exports nothing). ``buckets`` as
    ``fastpatch.export.prometheus.bucket_edges``.

    The temporalities are the ones ``inner`` prefers (CUMULATIVE unless it
    says otherwise): a CUMULATIVE series starts when the exporter is made
    (in directory mode: when the oldest process there started) and again
    after its counts went down (``fastpatch.reset()``); a DELTA point holds
    the change since the previous export, and its min and max are not
    known (``inf`` and ``-inf``, as the SDK marks them). Under sampled
    timing the histogram's counts and sum are estimates of all completed
    calls (each timed call counts N times).

    The SDK calls ``export`` only for a collection that holds some of the
    app's metrics: an app with no instrument of its own exports nothing.
    """

    def __init__(self, inner: MetricExporter, *, source: Optional[Union[str, os.PathLike[str]]] = None,
                 buckets: Union[str, Sequence[float]] = "quarter") -> None:
        if not isinstance(inner, MetricExporter):
            raise TypeError(f"FastpatchMetricExporter wraps a MetricExporter, not {type(inner).__name__}")
        super().__init__(preferred_temporality=inner._preferred_temporality,
                         preferred_aggregation=inner._preferred_aggregation)
        self.inner = inner
        self.source = None if source is None else os.fspath(source)
        edges = bucket_edges(buckets)
        #: The histogram's explicit bounds, in seconds.
        self.bounds = bounds_seconds(edges)
        self._spans = spans(edges)
        preferred = inner._preferred_temporality or {}
        self._temporality = {
            "sum": preferred.get(Counter, _CUMULATIVE),
            "histogram": preferred.get(Histogram, _CUMULATIVE),
            "updown": preferred.get(UpDownCounter, _CUMULATIVE),
        }
        self._made_ns = time.time_ns()
        self._last_ns: Optional[int] = None
        # name -> (start of its cumulative series, the row exported last)
        self._series: Dict[str, Tuple[int, List[Any]]] = {}
        self._scope = InstrumentationScope("fastpatch", _version())
        self._warned: set[Tuple[str, str]] = set()

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        """Export ``metrics_data`` and fastpatch's metrics through ``inner``.
        Reading fastpatch's numbers never fails the export: a failure costs
        one logged error and that export goes out without them."""
        try:
            ours = self._resource_metrics(metrics_data)
        except Exception:  # noqa: BLE001 - the app's own metrics must go out whatever happens here
            _logger.exception("fastpatch: could not add fastpatch's metrics to this export")
            ours = None
        if ours is not None:
            metrics_data = MetricsData(resource_metrics=[*metrics_data.resource_metrics, ours])
        return self.inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.inner.force_flush(timeout_millis=timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.inner.shutdown(timeout_millis=timeout_millis, **kwargs)

    def _sources(self) -> Tuple[List[Tuple[Iterable[Stats], bool]], int]:
        """(each process's Stats and whether it is alive, when the oldest started in ns)."""
        if self.source is None:
            from .._registry import called_stats

            return [(called_stats(), True)], self._made_ns
        from . import _files

        try:
            found = _files.read_directory(self.source)
        except FileNotFoundError:
            return [], self._made_ns
        for name_why in found.bad_files:
            if name_why not in self._warned:
                import warnings

                self._warned.add(name_why)
                warnings.warn(f"fastpatch: skipped telemetry file {name_why[0]}: {name_why[1]}", RuntimeWarning,
                              stacklevel=4)
        started = min((p.created_unix_ns for p in found.processes if p.created_unix_ns), default=self._made_ns)
        return [(p.stats(), p.alive) for p in found.processes], started

    def _resource_metrics(self, metrics_data: MetricsData) -> Optional[ResourceMetrics]:
        sources, started = self._sources()
        merged = merge_by_name(sources, self._spans)
        now = time.time_ns()
        last = self._last_ns
        self._last_ns = now
        if not merged:
            return None
        kinds = self._temporality
        calls: List[NumberDataPoint] = []
        errors: List[NumberDataPoint] = []
        durations: List[HistogramDataPoint] = []
        active: List[NumberDataPoint] = []
        for name in sorted(merged):
            row = merged[name]
            start, previous = self._series.get(name, (started, None))
            if previous is not None and (row[CALLS] < previous[CALLS] or row[ERRORS] < previous[ERRORS]
                                         or any(c < p for c, p in zip(row[COUNTS], previous[COUNTS]))):
                start, previous = last if last is not None else started, None  # counted again from zero
            self._series[name] = (start, row)
            attributes = {ATTRIBUTE: name}

            sums_since, sums_base = self._window("sum", start, previous, last)
            updown_since, updown_base = self._window("updown", start, previous, last)
            hist_since, hist_base = self._window("histogram", start, previous, last)
            calls.append(NumberDataPoint(attributes, sums_since, now, _change(row, sums_base, CALLS)))
            errors.append(NumberDataPoint(attributes, sums_since, now, _change(row, sums_base, ERRORS)))
            active.append(NumberDataPoint(attributes, updown_since, now, _change(row, updown_base, ACTIVE)))
            counts = row[COUNTS]
            low, high = row[MIN_NS] / 1e9, row[MAX_NS] / 1e9
            if hist_base is not None:
                counts = [c - p for c, p in zip(counts, hist_base[COUNTS])]
                low, high = math.inf, -math.inf  # not known for the interval alone
            durations.append(HistogramDataPoint(
                attributes=attributes, start_time_unix_nano=hist_since, time_unix_nano=now, count=sum(counts),
                sum=_change(row, hist_base, TOTAL_NS) / 1e9, bucket_counts=counts, explicit_bounds=self.bounds,
                min=low, max=high,
            ))
        metrics = [
            Metric("fastpatch.function.calls", "Calls of the function started.", "{call}",
                   Sum(calls, kinds["sum"], is_monotonic=True)),
            Metric("fastpatch.function.errors", "Calls of the function that ended by an exception.", "{error}",
                   Sum(errors, kinds["sum"], is_monotonic=True)),
            Metric("fastpatch.function.duration",
                   "Duration of the function's completed calls (a generator or coroutine: first entry to end, "
                   "suspensions included); each bound is a fastpatch bucket edge minus 1 ns. For a sampled "
                   "function each timed call counts N times: count and sum are unbiased estimates.", "s",
                   HistogramData(durations, kinds["histogram"])),
            Metric("fastpatch.function.active_calls", "Calls of the function started and not yet ended, in live "
                   "processes.", "{call}", Sum(active, kinds["updown"], is_monotonic=False)),
        ]
        resources = metrics_data.resource_metrics
        resource = resources[0].resource if resources else Resource.create()
        return ResourceMetrics(resource, [ScopeMetrics(self._scope, metrics, "")], resource.schema_url)


    def _window(self, kind: str, start: int, previous: Optional[List[Any]], last: Optional[int]
                ) -> Tuple[int, Optional[List[Any]]]:
        """(start time, the row values are counted from, None for zero) of a point of ``kind``: since the previous
        export under DELTA, since the series' start under CUMULATIVE (and for a series' first point)."""
        if self._temporality[kind] is _DELTA and previous is not None and last is not None:
            return last, previous
        return start, None


def _change(row: List[Any], base: Optional[List[Any]], index: int) -> int:
    return int(row[index] - (base[index] if base is not None else 0))


def _version() -> str:
    from .._version import __version__

    return __version__
