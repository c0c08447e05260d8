"""``python -m fastpatch top``: a live table of a telemetry directory.

::

    python -m fastpatch top [DIR] [-d SECONDS] [-s SORT] [-n ITERATIONS] [--json]

Rates come from the difference between two reads of each process's file,
timed by that file's heartbeat (the wall time of the writer's snapshot),
never by the reader's clock: a read that lands between two snapshots
measures exactly the calls those snapshots hold. A process whose heartbeat
has not moved since the last read keeps its last interval (when it is
alive) or shows no rate (when it is gone). A process seen for the first
time, like every process on the first frame, is measured from its file's
creation: lifetime values until a second read exists.

Merged rows add up the processes' rates; their percentiles come from the
sum of the interval histograms. ``MAX≈`` is the upper edge of the highest
non-empty interval bucket (an interval's maximum is not recorded), capped
by the lifetime maximum. ``ACTIVE`` counts the activations started and not
ended in live processes only. The archive (processes folded away by a
sweep) counts in the lifetime columns and never in a rate.

The interactive mode uses curses; it is only imported there. This module
is loaded by the command line alone.
"""

from __future__ import annotations

import os
import sys

from . import _stats

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, TextIO, Tuple

    from ._stats import Stats
    from .export._files import Directory, ProcessView

    Key = Tuple[str, str, int]

#: ``-s`` keys, the same words as ``report -s`` where they mean the same thing.
SORTS = ("total", "calls", "mean", "p99", "errors", "name")
#: The interactive keys that choose a sort; py-spy's digits are kept.
SORT_KEYS = {"t": "total", "1": "total", "c": "calls", "2": "calls", "m": "mean", "3": "mean", "9": "p99",
             "4": "p99", "e": "errors", "5": "errors", "n": "name"}
#: The column each sort is shown under.
SORT_COLUMNS = {"total": "%WALL", "calls": "CALLS/S", "mean": "MEAN", "p99": "P99", "errors": "ERR/S",
                "name": "FUNCTION"}

MIN_DELAY = 0.05
COLUMNS_TEXT = """\
columns (rates over the last interval of each process, timed by its writer's snapshots):
  %WALL    time spent in the function per second of wall time, x100; above 100 with
           several processes, threads or overlapping coroutines (like top's %CPU)
  CALLS/S  calls started per second        ERR/S  calls ended by an exception per second
  MEAN     mean duration of the calls that ended in the interval
  P50 P99  percentiles of those durations, from the histogram (within 6.25%)
  MAX≈     an upper bound of the interval's longest call: the top of its histogram bucket
  ACTIVE   calls started and not ended, in live processes
  CALLS    calls over the whole life of every process (archived ones included)
  ~        an estimate: the function times one call in N (sampled timing)
Generator and coroutine durations run from the first resume to the end and include
suspensions, so the %WALL of an async handler counts the time it waits.
The first frame shows lifetime values: rates need a second read."""
KEYS_TEXT = """\
keys: t/1 sort by %WALL   c/2 by CALLS/S   m/3 by MEAN   9/4 by P99   e/5 by ERR/S   n by name
      p per-process rows (PID column)   / filter by name (Enter applies, Esc cancels)
      a interval <-> since the baseline   r reset the baseline to now (and show since then)
      ? this help   q or Ctrl-C quit"""


class TopError(Exception):
    """A one-line error of ``top``: exit status 2."""


# --------------------------------------------------------------------------
# The model: reads, baselines, rows
# --------------------------------------------------------------------------


def _key(s: Stats) -> Key:
    module = "__main__" if s.module == "__mp_main__" else s.module
    return (module, s.qualname, s.firstlineno)


def _by_key(stats: Iterable[Stats]) -> Dict[Key, Stats]:
    """One Stats per definition (those sharing a key added up), called ones only."""
    from ._reports.definitions import reported

    return {_key(s): s for s in reported(stats)}


def _identity(p: ProcessView) -> Tuple[str, int, int]:
    return (p.name, p.pid, p.start_ticks)


def _delta(now: Stats, then: Optional[Stats]) -> Optional[Stats]:
    """What ``now`` counted since ``then`` (None: since zero); None if
    nothing ended or started. ``min_ns``/``max_ns`` are the bounds of the
    lowest and highest non-empty buckets, within the lifetime ones."""
    if then is None:
        return now if now.calls or now.completed else None
    calls, completed = now.calls - then.calls, now.completed - then.completed
    if calls < 0 or completed < 0:  # another file under the same name: count from zero
        return now if now.calls or now.completed else None
    if not calls and not completed:
        return None
    hist = tuple(max(a - b, 0) for a, b in zip(now.histogram, then.histogram))
    nonzero = [i for i, n in enumerate(hist) if n]
    if nonzero:
        low = max(_stats.bucket_bounds(nonzero[0])[0], now.min_ns)
        high = min(_stats.bucket_bounds(nonzero[-1])[1] - 1, now.max_ns)
    else:
        low = high = 0
    return _stats.Stats(
        name=now.name, calls=calls, errors=max(now.errors - then.errors, 0), completed=completed,
        total_ns=max(now.total_ns - then.total_ns, 0), min_ns=low, max_ns=high, histogram=hist, clock=now.clock,
        module=now.module, qualname=now.qualname, filename=now.filename, firstlineno=now.firstlineno,
        sample=now.sample, timed=max(now.timed - then.timed, 0),
    )


class _Baseline:
    """A process's file as an earlier read saw it: heartbeat and definitions."""

    __slots__ = ("heartbeat_ns", "stats")

    def __init__(self, heartbeat_ns: int, stats: Dict[Key, Stats]) -> None:
        self.heartbeat_ns = heartbeat_ns
        self.stats = stats


class _Interval:
    """What one process counted between two of its snapshots."""

    __slots__ = ("seconds", "deltas", "lifetime")

    def __init__(self, seconds: float, deltas: Dict[Key, Stats], lifetime: bool) -> None:
        self.seconds = seconds
        self.deltas = deltas
        self.lifetime = lifetime  # measured from the file's creation (no earlier read)


def _interval(p: ProcessView, now: Dict[Key, Stats], base: Optional[_Baseline]) -> Optional[_Interval]:
    """``p``'s counts since ``base`` (its creation when None), or None when
    its heartbeat has not moved since."""
    start = base.heartbeat_ns if base is not None else p.created_unix_ns
    if p.heartbeat_unix_ns <= start:
        return None
    deltas = {}
    for key, s in now.items():
        d = _delta(s, base.stats.get(key) if base is not None else None)
        if d is not None:
            deltas[key] = d
    return _Interval((p.heartbeat_unix_ns - start) / 1e9, deltas, base is None)


class Row:
    """One line of the table: a definition, merged or of one process (``pid``)."""

    __slots__ = ("name", "pid", "lifetime", "interval", "wall", "calls_per_s", "errors_per_s", "active")

    def __init__(self, name: str, pid: Optional[str], lifetime: Stats, interval: Optional[Stats], wall: float,
                 calls_per_s: float, errors_per_s: float, active: int) -> None:
        self.name = name
        self.pid = pid
        self.lifetime = lifetime
        self.interval = interval  # the interval's counts added up over the processes; None: nothing happened
        self.wall = wall  # percent
        self.calls_per_s = calls_per_s
        self.errors_per_s = errors_per_s
        self.active = active

    @property
    def mean_ns(self) -> float:
        return self.interval.mean_ns if self.interval is not None else 0.0

    def percentiles(self) -> Tuple[int, int]:
        if self.interval is None:
            return (0, 0)
        p50, p99 = self.interval._percentiles((50, 99))
        return p50, p99

    @property
    def max_at_most_ns(self) -> int:
        return self.interval.max_ns if self.interval is not None and self.interval.timed else 0

    @property
    def estimated(self) -> bool:
        return self.interval is not None and self.interval.sampled


def _sort_key(sort: str) -> Callable[[Row], Any]:
    if sort == "name":
        return lambda r: (r.name, r.pid or "")
    value: Callable[[Row], float] = {
        "total": lambda r: r.wall,
        "calls": lambda r: r.calls_per_s,
        "mean": lambda r: r.mean_ns,
        "p99": lambda r: r.percentiles()[1],
        "errors": lambda r: r.errors_per_s,
    }[sort]
    return lambda r: (-value(r), -r.lifetime.calls, r.name, r.pid or "")


class Frame:
    """One refresh: the directory's state and its rows."""

    def __init__(self, path: str, service: str, unix_ns: int, processes: List[ProcessView],
                 bad_files: List[Tuple[str, str]], rows: List[Row], mode: str, since_unix_ns: int) -> None:
        self.path = path
        self.service = service
        self.unix_ns = unix_ns
        self.processes = processes
        self.bad_files = bad_files
        self.rows = rows
        self.mode = mode  # "interval", "lifetime" (first read) or "since" (the baseline)
        self.since_unix_ns = since_unix_ns

    @property
    def live(self) -> int:
        return sum(1 for p in self.processes if p.alive and p.state != "archive")

    @property
    def exited(self) -> int:
        return sum(1 for p in self.processes if not p.alive and p.state != "archive")

    @property
    def archived(self) -> bool:
        return any(p.state == "archive" for p in self.processes)

    @property
    def calls_per_s(self) -> float:
        return sum(r.calls_per_s for r in self.rows)

    @property
    def errors_per_s(self) -> float:
        return sum(r.errors_per_s for r in self.rows)

    def sorted_rows(self, sort: str, filter_text: str = "") -> List[Row]:
        rows = self.rows
        if filter_text:
            wanted = filter_text.lower()
            rows = [r for r in rows if wanted in r.name.lower()]
        return sorted(rows, key=_sort_key(sort))


class Sampler:
    """Reads a telemetry directory again and again and makes each read's Frame."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.previous: Dict[Tuple[str, int, int], _Baseline] = {}
        self.last: Dict[Tuple[str, int, int], _Interval] = {}
        self.since: Optional[Dict[Tuple[str, int, int], _Baseline]] = None  # None: since each file's creation
        self.since_unix_ns = 0
        self.directory: Optional[Directory] = None
        self.current: Dict[Tuple[str, int, int], Dict[Key, Stats]] = {}

    def read(self) -> Directory:
        """Read the directory; TopError when it cannot be (missing, unreadable)."""
        from .export import _files

        try:
            found = _files.read_directory(self.path)
        except FileNotFoundError:
            raise TopError(f"no telemetry directory {self.path}") from None
        except NotADirectoryError:
            raise TopError(f"{self.path} is not a directory") from None
        except OSError as exc:
            raise TopError(f"cannot read the telemetry directory {self.path}: {exc.strerror or exc}") from None
        self.update(found)
        return found

    def reset(self) -> None:
        """Count the ``since`` view from the last read on."""
        found = self.directory
        if found is None:
            return
        import time

        self.since = {_identity(p): _Baseline(p.heartbeat_unix_ns, _by_key(p.stats()))
                      for p in found.processes if p.state != "archive"}
        self.since_unix_ns = time.time_ns()

    def update(self, found: Directory) -> None:
        """Take in a new read: each process whose heartbeat moved gets a new
        interval, measured from its previous read (its creation if none)."""
        self.directory = found
        current: Dict[Tuple[str, int, int], Dict[Key, Stats]] = {}
        for p in found.processes:
            if p.state == "archive":
                continue
            ident = _identity(p)
            stats = current[ident] = _by_key(p.stats())
            got = _interval(p, stats, self.previous.get(ident))
            if got is not None:
                self.previous[ident] = _Baseline(p.heartbeat_unix_ns, stats)
                self.last[ident] = got
            elif not p.alive:
                self.last.pop(ident, None)  # gone since its last interval: no rate any more
        for gone in [k for k in self.previous if k not in current]:
            del self.previous[gone]
            self.last.pop(gone, None)
        self.current = current

    def frame(self, *, per_process: bool = False, since: bool = False) -> Frame:
        """The Frame of the last read taken in by :meth:`update`: rates over
        each process's last interval, or since the baseline with ``since``."""
        import time

        found = self.directory
        assert found is not None
        intervals: Dict[Tuple[str, int, int], _Interval] = {}
        for p in found.processes:
            if p.state == "archive":
                continue
            ident = _identity(p)
            if since:
                got = _interval(p, self.current[ident], self.since.get(ident) if self.since is not None else None)
            else:
                got = self.last.get(ident)
            if got is not None:
                intervals[ident] = got
        if since:
            mode = "since" if self.since is not None else "lifetime"
        else:
            mode = "lifetime" if intervals and all(i.lifetime for i in intervals.values()) else "interval"
        rows = self._rows(found, self.current, intervals, per_process)
        service = next((p.service for p in found.processes if p.service), os.path.basename(self.path))
        return Frame(self.path, service, time.time_ns(), found.processes, found.bad_files, rows, mode,
                     self.since_unix_ns)

    def _rows(self, found: Directory, current: Dict[Tuple[str, int, int], Dict[Key, Stats]],
              intervals: Dict[Tuple[str, int, int], _Interval], per_process: bool) -> List[Row]:
        from ._reports.definitions import Definitions

        alive = {_identity(p) for p in found.processes if p.alive and p.state != "archive"}
        groups: Dict[Tuple[Optional[str], Key], List[Tuple[Tuple[str, int, int], Stats]]] = {}
        archive: List[Tuple[Optional[str], Stats]] = []
        for p in found.processes:
            if p.state == "archive":
                archive.extend(("archive" if per_process else None, s) for s in p.stats() if s.calls)
                continue
            ident = _identity(p)
            for key, s in current[ident].items():
                groups.setdefault((str(p.pid) if per_process else None, key), []).append((ident, s))
        for pid, s in archive:
            groups.setdefault((pid, _key(s)), []).append((("", 0, 0), s))
        rows = []
        for (pid, _k), members in groups.items():
            lifetime = Definitions()
            interval = Definitions()
            wall = calls_per_s = errors_per_s = 0.0
            active = 0
            for ident, s in members:
                lifetime.add(s)
                if ident in alive:
                    active += s.in_flight
                got = intervals.get(ident)
                d = got.deltas.get(_k) if got is not None else None
                if got is None or d is None:
                    continue
                interval.add(d)
                wall += 100 * d.total_ns / 1e9 / got.seconds
                calls_per_s += d.calls / got.seconds
                errors_per_s += d.errors / got.seconds
            (merged,) = lifetime.stats()
            added = interval.stats()
            rows.append(Row(merged.name, pid, merged, added[0] if added else None, wall, calls_per_s, errors_per_s,
                            active))
        return rows


# --------------------------------------------------------------------------
# Text: the header, the rows, the batch table
# --------------------------------------------------------------------------


def _ns(ns: float) -> str:
    if ns < 1_000:
        return f"{ns:.0f}ns"
    for unit, scale in (("us", 1e3), ("ms", 1e6)):
        if ns < scale * 1000:
            value = ns / scale
            return f"{value:.1f}{unit}" if value < 100 else f"{value:.0f}{unit}"
    return f"{ns / 1e9:.2f}s"


def _count(n: float) -> str:
    if n < 100_000:
        return f"{n:,.0f}"
    for unit, scale in (("K", 1e3), ("M", 1e6), ("G", 1e9)):
        if n < scale * 1000:
            return f"{n / scale:.1f}{unit}"
    return f"{n / 1e12:.1f}T"


def _rate(r: float) -> str:
    return f"{r:,.1f}" if r < 100 else _count(r)


def header_lines(frame: Frame, delay: float) -> List[str]:
    """The two header lines: what is read, and its totals."""
    import time

    clock = time.strftime("%H:%M:%S", time.localtime(frame.unix_ns / 1e9))
    what = {"interval": "rates over the last interval", "lifetime": "lifetime rates (first read)",
            "since": "rates since " + time.strftime("%H:%M:%S", time.localtime(frame.since_unix_ns / 1e9))}
    heartbeats = [p.heartbeat_unix_ns for p in frame.processes if p.alive and p.state != "archive"]
    age = f"   snapshot age {max(frame.unix_ns - max(heartbeats), 0) / 1e9:.1f}s" if heartbeats else ""
    archive = " + archive" if frame.archived else ""
    bad = f"   {len(frame.bad_files)} bad file{'s' if len(frame.bad_files) != 1 else ''}" if frame.bad_files else ""
    return [
        f"fastpatch top - {frame.service}  ({frame.path})   every {delay:g}s   {what[frame.mode]}   {clock}",
        f"processes {frame.live} live, {frame.exited} exited{archive}   {_rate(frame.calls_per_s)} calls/s   "
        f"{_rate(frame.errors_per_s)} errors/s{age}{bad}",
    ]


def column_names(per_process: bool) -> List[str]:
    names = ["%WALL", "CALLS/S", "ERR/S", "MEAN", "P50", "P99", "MAX≈", "ACTIVE", "CALLS"]
    return names + (["PID"] if per_process else []) + ["FUNCTION"]


def row_cells(row: Row, per_process: bool) -> List[str]:
    """The cells of ``row`` under :func:`column_names`: ``~`` marks an
    estimate, ``-`` a duration not measured in the interval."""
    mark = "~" if row.estimated else ""
    timed = row.interval is not None and row.interval.timed > 0
    if timed:
        p50, p99 = row.percentiles()
        durations = [mark + _ns(row.mean_ns), mark + _ns(p50), mark + _ns(p99), _ns(row.max_at_most_ns)]
    else:
        durations = ["-"] * 4
    cells = [mark + f"{row.wall:.1f}" if timed else "-", _rate(row.calls_per_s), _rate(row.errors_per_s),
             *durations, str(row.active), _count(row.lifetime.calls)]
    return cells + ([row.pid or ""] if per_process else []) + [row.name]


def table_lines(rows: Sequence[Row], per_process: bool) -> List[str]:
    """The column header and one line per row, right-aligned numbers."""
    names = column_names(per_process)
    table = [names] + [row_cells(r, per_process) for r in rows]
    widths = [max(7, *(len(t[i]) for t in table)) for i in range(len(names) - 1)]
    widths[-1 if not per_process else -2] = max(widths[-1 if not per_process else -2], 8)
    lines = []
    for t in table:
        cells = [c.rjust(w) for c, w in zip(t[:-1], widths)]
        lines.append(" ".join(cells) + "  " + t[-1])
    return lines


def frame_document(frame: Frame, delay: float) -> Dict[str, Any]:
    """One ``--json`` line: the directory's state, and per function the JSON
    v1 fields of its lifetime counters plus the interval's rates (ns units)."""
    from ._reports.schema import function_document

    functions = []
    for row in frame.sorted_rows("name"):
        doc = function_document(row.lifetime)
        interval = row.interval
        timed = interval is not None and interval.timed > 0
        p50, p99 = row.percentiles() if timed else (0, 0)
        doc.update({
            "wall_percent": round(row.wall, 3), "calls_per_s": round(row.calls_per_s, 3),
            "errors_per_s": round(row.errors_per_s, 3),
            "interval_calls": interval.calls if interval is not None else 0,
            "interval_errors": interval.errors if interval is not None else 0,
            "interval_completed": interval.completed if interval is not None else 0,
            "interval_total_ns": interval.total_ns if interval is not None else 0,
            "interval_mean_ns": round(row.mean_ns, 2) if timed else 0, "interval_p50_ns": p50,
            "interval_p99_ns": p99, "interval_max_ns_at_most": row.max_at_most_ns,
            "interval_estimated": row.estimated, "active": row.active,
        })
        functions.append(doc)
    return {
        "format": "fastpatch-top", "version": 1, "service": frame.service, "directory": frame.path,
        "time": frame.unix_ns / 1e9, "delay": delay, "rates": frame.mode,
        "processes": [
            {"pid": p.pid, "start_ticks": p.start_ticks, "state": p.state, "alive": p.alive,
             "heartbeat": p.heartbeat_unix_ns / 1e9, "python": p.python}
            for p in frame.processes
        ],
        "bad_files": [{"file": name, "why": why} for name, why in frame.bad_files],
        "calls_per_s": round(frame.calls_per_s, 3), "errors_per_s": round(frame.errors_per_s, 3),
        "functions": functions,
    }


# --------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------


def parser(prog: str) -> argparse.ArgumentParser:
    import argparse

    p = argparse.ArgumentParser(
        prog=f"{prog} top",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "A live table of a telemetry directory's functions (FASTPATCH_TELEMETRY=1, fastpatch.export.start):\n"
            "every process there, live, exited or archived, merged by definition. In a terminal it\n"
            "refreshes every -d seconds until q; when stdout is not a terminal, or with -n or --json,\n"
            "it prints -n tables (default 1) one interval apart, or one JSON object per line."
        ),
        epilog=COLUMNS_TEXT + "\n\n" + KEYS_TEXT,
    )
    p.add_argument("directory", nargs="?", metavar="DIR",
                   help="the telemetry directory (default: the directory of FASTPATCH_SERVICE)")
    p.add_argument("-d", "--delay", metavar="SECONDS", default="1",
                   help="seconds between refreshes (default: 1)")
    p.add_argument("-s", "--sort", choices=SORTS, default="total",
                   help="sort by %%WALL (total, the default), CALLS/S, MEAN, P99, ERR/S or name")
    p.add_argument("-n", "--iterations", metavar="ITERATIONS",
                   help="print this many tables (or JSON lines), one interval apart, then exit")
    p.add_argument("--json", action="store_true", help="one JSON object per refresh, one per line")
    return p


def main(prog: str, args: List[str]) -> int:
    """``top``'s command line; returns the exit status."""
    ns = parser(prog).parse_args(args)
    try:
        delay = float(ns.delay)
        if not MIN_DELAY <= delay <= 86400:
            raise ValueError
    except ValueError:
        sys.stderr.write(f"fastpatch: error: -d {ns.delay!r}: give a number of seconds from {MIN_DELAY} to 86400\n")
        return 2
    iterations = None
    if ns.iterations is not None:
        text = ns.iterations.strip()
        if not (text.isdigit() and text.isascii() and int(text) >= 1):
            sys.stderr.write(f"fastpatch: error: -n {ns.iterations!r}: give a whole number of tables, 1 or more\n")
            return 2
        iterations = int(text)
    path = ns.directory
    if path is None:
        from .export._writer import service_directories

        found = service_directories()
        if isinstance(found, int):
            return found
        path = found
    sampler = Sampler(os.path.abspath(path))
    try:
        first = sampler.read()
        if not first.processes:
            bad = f" ({len(first.bad_files)} damaged or foreign file{'s' if len(first.bad_files) != 1 else ''} " \
                  "skipped)" if first.bad_files else ""
            raise TopError(f"no telemetry file in {sampler.path}{bad}")
        interactive = iterations is None and not ns.json and sys.stdout.isatty() and sys.stdin.isatty()
        if interactive:
            return _interactive(sampler, delay, ns.sort)
        return _batch(sampler, first, delay, ns.sort, iterations or 1, ns.json, sys.stdout)
    except TopError as exc:
        sys.stderr.write(f"fastpatch: error: {exc}\n")
        return 2


def _warn_bad_files(found: Directory, warned: Set[str]) -> None:
    for name, why in found.bad_files:
        if name not in warned:
            warned.add(name)
            sys.stderr.write(f"fastpatch: skipped telemetry file {name}: {why}\n")


def _batch(sampler: Sampler, first: Directory, delay: float, sort: str, iterations: int, as_json: bool,
           out: TextIO) -> int:
    """``iterations`` tables (or JSON lines), each after one more interval."""
    import time

    warned: Set[str] = set()
    _warn_bad_files(first, warned)
    deadline = time.monotonic()
    try:
        for _ in range(iterations):
            deadline += delay
            time.sleep(max(deadline - time.monotonic(), 0))
            found = sampler.read()
            _warn_bad_files(found, warned)
            frame = sampler.frame()
            if as_json:
                import json

                text = json.dumps(frame_document(frame, delay), ensure_ascii=False) + "\n"
            else:
                lines = header_lines(frame, delay) + [""] + table_lines(frame.sorted_rows(sort), False)
                if any(r.estimated for r in frame.rows):
                    lines.append("~ estimated from the timed calls of a sampled function")
                text = "\n".join(lines) + "\n\n"
            out.write(text.encode(out.encoding or "utf-8", "backslashreplace").decode(out.encoding or "utf-8"))
            out.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
        os.close(devnull)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


# --------------------------------------------------------------------------
# Interactive (curses)
# --------------------------------------------------------------------------


class _Screen:
    """The interactive state: view options, the filter being typed, help."""

    def __init__(self, sort: str) -> None:
        self.sort = sort
        self.per_process = False
        self.since = False
        self.filter = ""
        self.typing: Optional[str] = None  # the filter being typed after '/'
        self.help = False


class _Terminated(Exception):
    """SIGTERM while the table is shown: leave curses, then exit 143."""


def _interactive(sampler: Sampler, delay: float, sort: str) -> int:
    import curses
    import signal

    def terminate(signum: int, frame: Any) -> None:
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        curses.wrapper(_loop, sampler, delay, _Screen(sort))
    except KeyboardInterrupt:
        return 0
    except _Terminated:
        return 128 + signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


def _loop(stdscr: Any, sampler: Sampler, delay: float, screen: _Screen) -> None:
    import curses
    import time

    try:
        curses.curs_set(0)
    except curses.error:
        pass  # a terminal that cannot hide its cursor
    due = time.monotonic() + delay
    while True:
        _draw(stdscr, sampler.frame(per_process=screen.per_process, since=screen.since), delay, screen)
        stdscr.timeout(max(int((due - time.monotonic()) * 1000), 0))
        key = stdscr.getch()
        if key == -1 or key == curses.KEY_RESIZE:
            if time.monotonic() >= due:
                try:
                    sampler.read()
                except TopError:
                    pass  # removed, to be made again by a new run: the last read stays on screen
                due = time.monotonic() + delay
            continue
        if _handle_key(key, screen, sampler):
            return


def _handle_key(key: int, screen: _Screen, sampler: Sampler) -> bool:
    """Apply ``key``; True when it quits."""
    import curses

    if screen.typing is not None:
        if key in (10, 13, curses.KEY_ENTER):
            screen.filter, screen.typing = screen.typing, None
        elif key == 27:
            screen.typing = None
        elif key in (curses.KEY_BACKSPACE, 127, 8):
            screen.typing = screen.typing[:-1]
        elif 32 <= key < 0x110000 and key not in range(256, 0x200):
            screen.typing += chr(key)
        return False
    if screen.help:
        screen.help = False
        return key in (ord("q"), ord("Q"))
    char = chr(key) if 0 <= key < 0x110000 else ""
    if char in ("q", "Q"):
        return True
    if char in SORT_KEYS:
        screen.sort = SORT_KEYS[char]
    elif char == "p":
        screen.per_process = not screen.per_process
    elif char == "a":
        screen.since = not screen.since
    elif char == "r":
        sampler.reset()
        screen.since = True
    elif char == "/":
        screen.typing = screen.filter
    elif char == "?":
        screen.help = True
    return False


def _put(stdscr: Any, y: int, text: str, attr: int = 0) -> None:
    """``text`` on line ``y``, cut to the screen's width; nothing outside it."""
    import curses

    height, width = stdscr.getmaxyx()
    if not 0 <= y < height or width < 2:
        return
    encoding = getattr(stdscr, "encoding", None) or "utf-8"
    text = text[:width - 1].encode(encoding, "replace").decode(encoding)  # MAX≈ in an ASCII locale: MAX?
    try:
        stdscr.addstr(y, 0, text, attr)
    except curses.error:
        pass  # a terminal resized under us: the next frame fits


def _draw(stdscr: Any, frame: Frame, delay: float, screen: _Screen) -> None:
    import curses

    stdscr.erase()
    height, _width = stdscr.getmaxyx()
    if screen.help:
        lines = ["fastpatch top: help (any key returns, q quits)", ""] + KEYS_TEXT.splitlines() + [""] + \
            COLUMNS_TEXT.splitlines()
        for y, line in enumerate(lines):
            _put(stdscr, y, line)
        stdscr.refresh()
        return
    lines = header_lines(frame, delay)
    view = f"sort {SORT_COLUMNS[screen.sort]}"
    if screen.filter:
        view += f"   filter {screen.filter!r}"
    if screen.per_process:
        view += "   per process"
    view += "   (? help, q quit)"
    status = f"filter: {screen.typing}_" if screen.typing is not None else view
    rows = frame.sorted_rows(screen.sort, screen.filter)
    table = table_lines(rows, screen.per_process)
    for y, line in enumerate(lines):
        _put(stdscr, y, line)
    _put(stdscr, 2, status, curses.A_BOLD if screen.typing is not None else 0)
    _put(stdscr, 3, table[0], curses.A_REVERSE)
    for y, line in enumerate(table[1:], start=4):
        if y >= height:
            break
        _put(stdscr, y, line)
    if not rows and height > 4:
        _put(stdscr, 4, "(no function matches the filter)" if screen.filter else "(no instrumented function called)")
    stdscr.refresh()
