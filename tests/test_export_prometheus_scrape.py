"""The scrape's fast path: records folded and merged by name in C
(``_ext.fold_records``, ``_ext.merge_records``) and the sidecar's text from
per-function templates kept across scrapes. Each gives exactly what the
Python merge and prometheus_client's ``generate_latest`` give."""

from __future__ import annotations

import fcntl
import os
import sys

import pytest

pytest.importorskip("prometheus_client",
                    reason="the Prometheus exporter needs prometheus_client (fastpatch[prometheus])")

from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

import telemetry_files as tf  # noqa: E402
from fastpatch import _ext, _stats  # noqa: E402
from fastpatch.export import _files  # noqa: E402
from fastpatch.export._functions import merge_folded  # noqa: E402
from fastpatch.export.prometheus import FastpatchCollector  # noqa: E402

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="flock and /dev/shm semantics")

B = _stats.HIST_BUCKETS


def _stat(module: str, qualname: str, *, calls: int, completed: int, errors: int = 0, buckets=(), total_ns: int = 0,
          min_ns: int = 0, max_ns: int = 0, sample: int = 1, timed=None) -> _stats.Stats:
    hist = [0] * B
    for index, n in buckets:
        hist[index] += n
    return _stats.Stats(name=f"{module}.{qualname}", module=module, qualname=qualname, calls=calls, errors=errors,
                        total_ns=total_ns, min_ns=min_ns, max_ns=max_ns, completed=completed, histogram=tuple(hist),
                        filename=f"{module}.py", firstlineno=1, sample=sample, timed=timed)


def _write(directory, pid: int, stats, *, state: int = 2) -> str:
    path = os.path.join(str(directory), f"fastpatch-{pid}-{pid}.fpt")
    with open(path, "wb") as fh:
        fh.write(_files.encode_file(stats, state=state, pid=pid, start_ticks=pid, created_unix_ns=1))
    return path


def _value(text: str, sample: str, name: str) -> float:
    values = [s.value for f in text_string_to_metric_families(text) for s in f.samples
              if s.name == sample and s.labels.get("code_function_name") == name]
    assert len(values) == 1, (sample, name, values)
    return values[0]


def _assert_as_prometheus_client_writes(collector: FastpatchCollector, directory: str) -> str:
    """The collector's text in both formats is what generate_latest writes
    for a new collector over the same directory (no cache, prometheus_client's
    own formatting of the samples); returns the text."""
    fresh = CollectorRegistry()
    fresh.register(FastpatchCollector(directory, sweep=False))
    text = collector.exposition()
    assert text == generate_latest(fresh)
    assert collector.exposition(openmetrics=True) == generate_openmetrics(fresh)
    return text.decode()


def test_one_collector_scraped_again_follows_renamed_new_and_vanished_functions_and_a_worker_that_died(tmp_path):
    d = tmp_path / "svc"
    d.mkdir(mode=0o700)
    collector = FastpatchCollector(str(d), sweep=False)
    # A live worker: the test holds the lock its writer would hold.
    live = _write(d, 10, [_stat("app", "f", calls=5, completed=3, buckets=[(70, 3)], total_ns=3_000),
                          _stat("app", "g%d", calls=2, completed=2, buckets=[(90, 2)], total_ns=80_000)], state=1)
    lock = os.open(live, os.O_RDONLY)
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        _write(d, 11, [_stat("app", "f", calls=4, completed=4, buckets=[(70, 4)], total_ns=4_000)])
        text = _assert_as_prometheus_client_writes(collector, str(d))
        assert _value(text, "fastpatch_function_calls_total", "app.f") == 9
        assert _value(text, "fastpatch_function_active_calls", "app.f") == 2
        assert _value(text, "fastpatch_function_duration_seconds_count", "app.g%d") == 2

        # Worker 11 renames app.f to app.h (a new definition), and a new function appears.
        _write(d, 11, [_stat("app", "h", calls=6, completed=6, buckets=[(75, 6)], total_ns=6_000),
                       _stat("app", "new", calls=1, completed=1, buckets=[(200, 1)], total_ns=10**12)])
        text = _assert_as_prometheus_client_writes(collector, str(d))
        assert _value(text, "fastpatch_function_calls_total", "app.f") == 5
        assert _value(text, "fastpatch_function_calls_total", "app.h") == 6
        assert _value(text, "fastpatch_function_duration_seconds_sum", "app.new") == 1000.0
    finally:
        os.close(lock)  # the live worker dies: its file stays, stale, and its active calls are gone
    text = _assert_as_prometheus_client_writes(collector, str(d))
    assert _value(text, "fastpatch_function_active_calls", "app.f") == 0
    assert _value(text, "fastpatch_function_calls_total", "app.f") == 5

    # Its file is removed (as a sweep folds it into the archive elsewhere): its functions vanish.
    os.unlink(live)
    text = _assert_as_prometheus_client_writes(collector, str(d))
    assert sorted({s.labels["code_function_name"] for f in text_string_to_metric_families(text)
                   for s in f.samples if "code_function_name" in s.labels}) == ["app.h", "app.new"]


def test_counts_beyond_64_bits_summed_over_workers_are_exported_exactly(tmp_path):
    d = tmp_path / "svc"
    d.mkdir(mode=0o700)
    for pid in (1, 2):  # each fits a uint64_t; their sums do not
        _write(d, pid, [_stat("app", "f", calls=2**63, completed=2**63, errors=2**63, buckets=[(80, 2**63)],
                              total_ns=2**63)])
    text = _assert_as_prometheus_client_writes(FastpatchCollector(str(d), sweep=False), str(d))
    assert _value(text, "fastpatch_function_calls_total", "app.f") == 2.0**64
    assert _value(text, "fastpatch_function_errors_total", "app.f") == 2.0**64
    assert _value(text, "fastpatch_function_duration_seconds_count", "app.f") == 2.0**64
    assert 'fastpatch_function_calls_total{code_function_name="app.f"} 1.8446744073709552e+19\n' in text


def _merge_directory(tmp_path):
    """Three processes (two alive) whose records exercise every field of the merge."""
    d = tmp_path / "svc"
    d.mkdir(mode=0o700)
    _write(d, 1, [
        _stat("app", "f", calls=10, completed=7, errors=1, buckets=[(3, 2), (70, 5)], total_ns=700, min_ns=9,
              max_ns=300),
        _stat("app.b", "c", calls=3, completed=3, buckets=[(230, 3)], total_ns=3 * 10**13, min_ns=10**13,
              max_ns=10**13),
        _stat("app", "counted", calls=8, completed=8, sample=0),  # count-only: no timed call, min/max 0
    ], state=1)
    _write(d, 2, [
        _stat("app", "f", calls=4, completed=2, errors=2, buckets=[(71, 2)], total_ns=50, min_ns=20, max_ns=30),
        _stat("app", "b.c", calls=1, completed=1, buckets=[(100, 1)], total_ns=5, min_ns=5, max_ns=5),  # app.b.c too
        _stat("app", "sampled", calls=32, completed=32, buckets=[(90, 16)], total_ns=1_600, min_ns=90,
              max_ns=110, sample=16, timed=1),
    ], state=1)
    _write(d, 3, [_stat("app", "f", calls=6, completed=5, buckets=[(72, 5)], total_ns=60, min_ns=1, max_ns=400)],
           state=2)
    # A name with invalid UTF-8, and the same name as decoded, in a fourth file.
    record = tf.record_slot(calls=2)
    path = d / "fastpatch-4-4.fpt"
    path.write_bytes(tf.header(n_slots=2, pid=4, ticks=4, state=2) + tf.strings_slot(b"app\xff\0q\0x.py\0") + record)
    _write(d, 5, [_stat("app\ufffd", "q", calls=3, completed=3, buckets=[(40, 3)], total_ns=900, min_ns=300,
                        max_ns=300)])
    return str(d)


def test_records_merged_in_c_are_what_the_python_merge_gives_field_by_field(tmp_path):
    d = _merge_directory(tmp_path)
    collector = FastpatchCollector(d, sweep=False)
    processes = _files.read_directory(d, cuts=collector._cuts).processes
    alive = {1, 2}
    sources = [(*p.packed, p.pid in alive) for p in processes]
    expected = merge_folded((p.folded, p.pid in alive) for p in processes)
    assert _ext.merge_records(sources, len(collector._cuts)) == expected
    assert expected["app.f"][:4] == [20, 3, 810, 5] and expected["app.f"][5:] == [1, 400]
    assert expected["app.b.c"][0] == 4 and expected["app\ufffd.q"][0] == 5
    assert expected["app.counted"][5:] == [0, 0]


def test_records_folded_compactly_unpack_to_what_decode_records_gives(tmp_path):
    d = _merge_directory(tmp_path)
    cuts = FastpatchCollector(d, sweep=False)._cuts
    for name in sorted(os.listdir(d)):
        view = _files.read_file(os.path.join(d, name), cuts=cuts)
        with open(os.path.join(d, name), "rb") as fh:
            raw = fh.read()
        data = raw[_files.HEADER_PAGE:]
        assert view.packed is not None
        assert view.folded == _ext.decode_records(data, _files.SLOT_SIZE, cuts, False)[0]
