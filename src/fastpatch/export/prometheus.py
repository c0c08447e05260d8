"""Prometheus: a collector over a whole telemetry directory, so that one
``/metrics`` (the app's own, or the ``python -m fastpatch export
prometheus`` sidecar) serves every worker of a service.

Needs prometheus_client (the extra ``fastpatch[prometheus]``), imported
when this module is. ``import fastpatch`` and the activation never import
it.

Every ``le`` bound is a bucket edge minus 1 ns, which holds exactly the
calls of fastpatch's buckets below the edge (see ``_functions``).
"""

from __future__ import annotations

import os
import sys
from itertools import accumulate

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from .._native import ext as _ext
from ._functions import BUCKET_CHOICES, bounds_seconds, bucket_edges, cuts, merge_folded, spans

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple, Union

    from prometheus_client.metrics_core import Metric

    from ._files import ProcessView

__all__ = ["FastpatchCollector", "BUCKET_CHOICES", "bucket_edges", "main"]

LABEL = "code_function_name"
#: The states of ``fastpatch_telemetry_processes``, each always exported.
PROCESS_STATES = ("live", "exited", "stale", "archive")

_HELP = {
    "calls": "Calls of the function started, summed over every process of the telemetry directory "
             "(live, exited and archived).",
    "errors": "Calls of the function that ended by an exception, over every process of the telemetry directory.",
    "duration": "Duration of the function's completed calls in seconds (a generator or coroutine: from its first "
                "entry to its end, suspensions included). Each le bound is a fastpatch bucket edge minus 1 ns, "
                "exact for durations in whole nanoseconds. _count (the +Inf bucket) is the number of completed "
                "calls and _sum their total; for a sampled function (one call timed in N) each timed call counts "
                "N times, so both are unbiased estimates.",
    "active": "Calls of the function started and not yet ended, in live processes.",
    "processes": "Files of the telemetry directory by state: live (its process runs), exited (ended normally), "
                 "stale (died without marking its file, e.g. by SIGKILL: its last snapshot counts), archive (the file "
                 "dead processes are folded into by a sweep).",
    "bad": "Files of the telemetry directory skipped as damaged or foreign (each named once in a warning).",
}


class FastpatchCollector:
    """The numbers of every process of a telemetry directory (``None``: the
    default directory of FASTPATCH_SERVICE), merged by
    ``code_function_name`` (``module.qualname``) at each scrape.

    Register it in any ``CollectorRegistry``, beside prometheus_client's
    ``MultiProcessCollector`` if the app has one. A missing directory
    exports no function (nothing has run yet); a damaged or foreign file is
    skipped, counted in ``fastpatch_telemetry_bad_files`` and named once in
    a RuntimeWarning: it never fails a scrape. ``buckets`` chooses the
    histogram's bounds (see :func:`bucket_edges`); ``bounds`` holds the
    ``le`` values exported, in seconds.

    With ``sweep`` (the default), each scrape first folds the files of dead
    processes into the directory's archive (``fastpatch.export._files.sweep``),
    so the directory stays small; the counts exported are the same either
    way. A reader without write access to the directory does not sweep.
    """

    def __init__(self, directory: Optional[str] = None, *, buckets: Union[str, Sequence[float]] = "quarter",
                 sweep: bool = True) -> None:
        from . import _writer

        self.directory = os.fspath(directory) if directory is not None else _writer.default_directory()
        self.sweep = sweep
        edges = bucket_edges(buckets)
        #: The le bounds exported, in seconds: each an edge minus 1 ns.
        self.bounds = bounds_seconds(edges)
        self._le = [floatToGoString(b) for b in self.bounds] + ["+Inf"]  # type: ignore[no-untyped-call, unused-ignore]
        self._cuts = cuts(spans(edges))
        self._warned: Set[str] = set()
        #: _cached_lines' answer for each name of the last scrape.
        self._lines: Dict[str, Tuple[bytes, bytes, bytes, bytes, str]] = {}

    def describe(self) -> List[Metric]:
        """The families, without reading the directory (what a registry asks at registration)."""
        return list(self._families({}, {}, 0))

    def collect(self) -> Iterator[Metric]:
        """Every family, from one read of the directory."""
        yield from self._families(*self._read())

    def exposition(self, openmetrics: bool = False) -> bytes:
        """What ``generate_latest`` of a registry holding only this collector
        returns, byte for byte (Prometheus text format; with ``openmetrics``,
        prometheus_client's OpenMetrics 1.0.0 text), from one read of the
        directory, written without building the samples: what the ``export
        prometheus`` sidecar serves."""
        merged, states, bad = self._read()
        # Bytes throughout, as UTF-8 is what generate_latest encodes: no
        # 8 MB str to encode at the end.
        out: List[bytes] = []
        add = out.append

        def head(family: str, kind: str, text: str) -> bytes:
            # The text format names a counter's HELP and TYPE after its _total sample; OpenMetrics after the family.
            name = family if openmetrics or kind != "counter" else f"{family}_total"
            text = text.replace("\\", r"\\").replace("\n", r"\n")
            return (f"# HELP {name} {text.replace(chr(34), chr(92) + chr(34)) if openmetrics else text}\n"
                    f"# TYPE {name} {kind}\n").encode()

        names = sorted(merged)
        rows = [merged[name] for name in names]
        lines = self._cached_lines(names)
        add(head("fastpatch_function_calls", "counter", _HELP["calls"]))
        out += [b"%b%b\n" % (line[0], _value_bytes(row[0])) for line, row in zip(lines, rows)]
        add(head("fastpatch_function_errors", "counter", _HELP["errors"]))
        out += [b"%b%b\n" % (line[1], _value_bytes(row[1])) for line, row in zip(lines, rows)]
        add(head("fastpatch_function_duration_seconds", "histogram", _HELP["duration"]))
        le = self._le
        for line, row in zip(lines, rows):
            counts = list(accumulate(row[4]))
            if counts[-1] < 1_000_000:
                # Every bucket's line in one formatting: most of a scrape is these lines.
                add(line[2] % (*counts, counts[-1], _value_bytes(row[2] / 1e9)))
                continue
            label = line[4]
            add("".join([
                *(f'fastpatch_function_duration_seconds_bucket{{{LABEL}="{label}",le="{bound}"}} {_value(count)}\n'
                  for bound, count in zip(le, counts)),
                f'fastpatch_function_duration_seconds_count{{{LABEL}="{label}"}} {_value(counts[-1])}\n'
                f'fastpatch_function_duration_seconds_sum{{{LABEL}="{label}"}} {_value(row[2] / 1e9)}\n',
            ]).encode())
        add(head("fastpatch_function_active_calls", "gauge", _HELP["active"]))
        out += [b"%b%b\n" % (line[3], _value_bytes(row[3])) for line, row in zip(lines, rows)]
        add(head("fastpatch_telemetry_processes", "gauge", _HELP["processes"]))
        out += [f'fastpatch_telemetry_processes{{state="{state}"}} {_value(states.get(state, 0))}\n'.encode()
                for state in PROCESS_STATES]
        add(head("fastpatch_telemetry_bad_files", "gauge", _HELP["bad"]))
        add(f"fastpatch_telemetry_bad_files {_value(bad)}\n".encode())
        if openmetrics:
            add(b"# EOF\n")
        return b"".join(out)

    def _cached_lines(self, names: List[str]) -> List[Tuple[bytes, bytes, bytes, bytes, str]]:
        """For each name, the start of its calls, errors and active lines (up
        to the value), the %-template of its histogram's lines when every
        count is below 10**6 (``%d.0`` each, then ``%b`` for the sum), all
        UTF-8, and its escaped label. Kept across scrapes for the names of
        the last one: a service's functions rarely change between two scrapes."""
        cached = self._lines
        if cached.keys() != set(names):
            self._lines = cached = {name: cached.get(name) or self._lines_of(name) for name in names}
        return [cached[name] for name in names]

    def _lines_of(self, name: str) -> Tuple[bytes, bytes, bytes, bytes, str]:
        label = _label_value(name)
        series = f'{{{LABEL}="{label}"}} '
        bucket = f'fastpatch_function_duration_seconds_bucket{{{LABEL}="{label.replace("%", "%%")}",le="'
        histogram = "".join([f'{bucket}{bound}"}} %d.0\n' for bound in self._le]) + (
            f"fastpatch_function_duration_seconds_count{series.replace('%', '%%')}%d.0\n"
            f"fastpatch_function_duration_seconds_sum{series.replace('%', '%%')}%b\n")
        return (f"fastpatch_function_calls_total{series}".encode(), f"fastpatch_function_errors_total{series}".encode(),
                histogram.encode(), f"fastpatch_function_active_calls{series}".encode(), label)

    def _read(self) -> Tuple[Dict[str, List[Any]], Dict[str, int], int]:
        """(the functions merged by name, files by state, bad files) of one read of the directory."""
        from . import _files

        if self.sweep:
            try:
                _files.sweep(self.directory)
            except (FileNotFoundError, PermissionError):
                pass  # nothing yet, or a reader that may only read
            except Exception as exc:  # noqa: BLE001 - a sweep that fails never fails the scrape
                why = getattr(exc, "strerror", None) or exc
                self._warn(f"fastpatch: telemetry directory {self.directory} cannot be swept: {why}")
        try:
            found = _files.read_directory(self.directory, cuts=self._cuts)
        except FileNotFoundError:
            processes: List[ProcessView] = []
            bad: List[Tuple[str, str]] = []
        except OSError as exc:
            self._warn(f"fastpatch: telemetry directory {self.directory} cannot be listed: {exc.strerror or exc}")
            processes, bad = [], []
        else:
            processes, bad = found.processes, found.bad_files
        for name, why in bad:
            self._warn(f"fastpatch: skipped telemetry file {name}: {why}")
        states = dict.fromkeys(PROCESS_STATES, 0)
        for p in processes:
            states["live" if p.alive else "stale" if p.state == "live" else p.state] += 1
        sources = [(*p.packed, p.alive) for p in processes if p.packed is not None]
        merged = _ext.merge_records(sources, len(self._cuts)) if len(sources) == len(processes) else None
        if merged is None:  # a count or a sum beyond 64 bits: Python's ints are exact
            merged = merge_folded((p.folded or [], p.alive) for p in processes)
        return merged, states, len(bad)

    def _warn(self, message: str) -> None:
        """A RuntimeWarning, the first time only: a scrape comes every few seconds."""
        if message not in self._warned:
            import warnings

            self._warned.add(message)
            warnings.warn(message, RuntimeWarning, stacklevel=3)

    def _families(self, merged: Dict[str, List[Any]], states: Dict[str, int], bad: int) -> Iterator[Metric]:
        labels = [LABEL]
        calls = CounterMetricFamily("fastpatch_function_calls", _HELP["calls"], labels=labels)
        errors = CounterMetricFamily("fastpatch_function_errors", _HELP["errors"], labels=labels)
        duration = HistogramMetricFamily("fastpatch_function_duration_seconds", _HELP["duration"], labels=labels)
        active = GaugeMetricFamily("fastpatch_function_active_calls", _HELP["active"], labels=labels)
        le = self._le
        # Samples built directly, not through add_metric (a list and a dict
        # copied per sample) or add_sample (a call per sample): the same
        # samples, and a scrape holds tens of thousands of bucket samples.
        bucket = "fastpatch_function_duration_seconds_bucket"
        buckets = duration.samples
        for name in sorted(merged):
            n_calls, n_errors, total_ns, n_active, counts, _min, _max = merged[name]
            label = {LABEL: name}
            calls.samples.append(Sample("fastpatch_function_calls_total", label, n_calls))
            errors.samples.append(Sample("fastpatch_function_errors_total", label, n_errors))
            cumulative = list(accumulate(counts))
            buckets += [Sample(bucket, {LABEL: name, "le": bound}, count) for bound, count in zip(le, cumulative)]
            buckets.append(Sample("fastpatch_function_duration_seconds_count", label, cumulative[-1]))
            buckets.append(Sample("fastpatch_function_duration_seconds_sum", label, total_ns / 1e9))
            active.samples.append(Sample("fastpatch_function_active_calls", label, n_active))
        yield calls
        yield errors
        yield duration
        yield active
        processes = GaugeMetricFamily("fastpatch_telemetry_processes", _HELP["processes"], labels=["state"])
        for state in PROCESS_STATES:
            processes.add_metric([state], states.get(state, 0))
        yield processes
        yield GaugeMetricFamily("fastpatch_telemetry_bad_files", _HELP["bad"], value=bad)


def main(prog: str, args: List[str]) -> int:
    """``export prometheus [DIR] [--port PORT] [--addr ADDR]``: serve
    /metrics until interrupted. Exit status 2 with one line for an unsafe
    directory or an address that cannot be served."""
    import argparse

    from . import _writer

    parser = argparse.ArgumentParser(
        prog=f"{prog} prometheus",
        description="Serve the merged numbers of every process of a telemetry directory on /metrics "
                    "(Prometheus text format), until interrupted.",
    )
    parser.add_argument("directory", nargs="?", metavar="DIR",
                        help="the telemetry directory (default: the directory of FASTPATCH_SERVICE)")
    parser.add_argument("--port", type=int, default=9464, help="TCP port (default: 9464; 0 picks a free one)")
    parser.add_argument("--addr", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    ns = parser.parse_args(args)
    directory = ns.directory
    if directory is None:
        found = _writer.service_directories()
        if isinstance(found, int):
            return found
        directory = found
    if not 0 <= ns.port <= 65535:
        sys.stderr.write(f"fastpatch: error: --port {ns.port} is not a TCP port (0 to 65535)\n")
        return 2
    if os.path.lexists(directory):
        try:
            os.close(_writer._check_directory(directory))
        except ValueError as exc:  # UnsafeDirectory: the message names the problem
            sys.stderr.write(f"fastpatch: error: {exc}\n")
            return 2
        except OSError as exc:
            sys.stderr.write(f"fastpatch: error: telemetry directory {directory}: {exc.strerror or exc}\n")
            return 2
    import warnings

    # A skipped file is one line on stderr (the message names it), not a warning with its source line.
    warnings.formatwarning = _one_line
    from prometheus_client import CollectorRegistry

    collector = FastpatchCollector(directory)
    registry = CollectorRegistry(auto_describe=True)
    registry.register(collector)
    try:
        server, thread = _start_server(collector, registry, ns.addr, ns.port)
    except OSError as exc:
        sys.stderr.write(f"fastpatch: error: cannot serve on {ns.addr}:{ns.port}: {exc.strerror or exc}\n")
        return 2
    host = f"[{ns.addr}]" if ":" in ns.addr else ns.addr
    sys.stderr.write(f"fastpatch: serving http://{host}:{server.server_port}/metrics for {directory}\n")
    sys.stderr.flush()
    try:
        thread.join()
    except KeyboardInterrupt:
        pass
    server.shutdown()
    return 0


def _start_server(collector: FastpatchCollector, registry: Any, addr: str, port: int) -> Tuple[Any, Any]:
    """prometheus_client's ``start_http_server`` of ``registry``, except that
    the text formats it would write with ``generate_latest`` (Prometheus text,
    OpenMetrics 1.0.0) come from ``collector.exposition``, the same bytes at a
    fraction of the cost; anything else (``name[]`` filters, other versions)
    is prometheus_client's own answer."""
    import gzip
    import socket
    import threading
    from functools import partial
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from prometheus_client import exposition, make_wsgi_app
    from prometheus_client.openmetrics import exposition as openmetrics_exposition

    fallback = make_wsgi_app(registry)

    def app(environ: Dict[str, Any], start_response: Any) -> List[bytes]:
        encoder, content_type = exposition.choose_encoder(environ.get("HTTP_ACCEPT", ""))
        plain = encoder is exposition.generate_latest or getattr(encoder, "func", None) is exposition.generate_latest
        om = (isinstance(encoder, partial) and encoder.func is openmetrics_exposition.generate_latest
              and encoder.keywords.get("version") == "1.0.0")
        # Our names are all legacy names, which every escaping leaves as they are.
        if environ.get("QUERY_STRING") or environ.get("PATH_INFO") == "/favicon.ico" or not (plain or om):
            return fallback(environ, start_response)  # type: ignore[no-any-return]
        output = collector.exposition(openmetrics=om)
        headers = [("Content-Type", content_type)]
        if exposition.gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING", "")):
            output = gzip.compress(output)
            headers.append(("Content-Encoding", "gzip"))
        start_response("200 OK", headers)
        return [output]

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        address_family = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass  # no line per scrape

    server = make_server(addr, port, app, Server, handler_class=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


def _label_value(value: str) -> str:
    """A label value as the text format escapes it."""
    if "\\" in value or "\n" in value or '"' in value:
        value = value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')
    return value


def _value(value: float) -> str:
    """A sample's value as prometheus_client's floatToGoString writes it."""
    if type(value) is int and -(10**15) < value < 10**6:
        return f"{value}.0"  # what repr(float(value)) is for these (Go writes 1e+06 and up with an exponent)
    return floatToGoString(value)  # type: ignore[no-untyped-call, no-any-return, unused-ignore]


def _value_bytes(value: float) -> bytes:
    """_value(value), UTF-8."""
    if type(value) is int and -(10**15) < value < 10**6:
        return b"%d.0" % value
    return _value(value).encode()


def _one_line(message: Union[Warning, str], category: type, filename: str, lineno: int,
              line: Optional[str] = None) -> str:
    return f"{message}\n"
