"""Reports that leave the process (fastpatch._reports): the JSON format, exact
merges across processes (fork included), pstats, atomic writes, output paths
with and without {pid}, and the messages for bad input."""

from __future__ import annotations

import errno
import io
import json
import marshal
import os
import platform
import pstats
import random
import re
import signal
import stat
import subprocess
import sys
import threading
import traceback

import pytest

import fastpatch
from fastpatch import _ext, _stats
from fastpatch._cli import report_main
from fastpatch._reports import formats, output, schema, table
from fastpatch._reports.build import build, python_version
from fastpatch._reports.definitions import reported
from fastpatch._reports.exporter import ReportWriter
from fastpatch._reports.formats import format_for, serialize, to_pstats
from fastpatch._reports.merge import merge
from fastpatch._reports.schema import MAX_INTEGER, Report, ReportError, load, to_stats, validate

B = _ext.HIST_BUCKETS


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def synthetic(durations, *, module="app", qualname="work", firstlineno=10, filename="/src/app.py", errors=0,
              calls=None, name=None, clock="monotonic"):
    """Stats of a definition that recorded exactly ``durations`` (ns)."""
    hist = [0] * B
    for ns in durations:
        hist[_ext._testing_bucket_index(ns)] += 1
    return fastpatch.Stats(
        name=name or f"{module}.{qualname}", calls=len(durations) if calls is None else calls, errors=errors,
        total_ns=sum(durations), min_ns=min(durations, default=0), max_ns=max(durations, default=0),
        completed=len(durations), histogram=tuple(hist), clock=clock, module=module, qualname=qualname,
        filename=filename, firstlineno=firstlineno,
    )


def functions_named(report, qualname_suffix):
    return [fn for fn in report["functions"] if fn["qualname"].endswith(qualname_suffix)]


def run_forked(child):
    """Run ``child()`` in a forked child; (its pid, its exit status). A failure
    in the child prints its traceback and exits 1; it never returns into pytest."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            signal.alarm(10)
            child()
            code = 0
        except BaseException:  # noqa: BLE001 - reported through the exit status
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return pid, status


needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def _fastpatch(*args, cwd, env=None, stdin=None, **popen):
    """``python -m fastpatch ARGS`` (or ``python ARGS[1:]`` when ARGS[0] is
    "python") with no FASTPATCH_* variable but those in ``env``."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FASTPATCH_")}
    environment.update(env or {})
    command = [sys.executable, *args[1:]] if args[0] == "python" else [sys.executable, "-m", "fastpatch", *args]
    return subprocess.Popen(command, cwd=str(cwd), env=environment, stdin=stdin, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


def _finished(process, status=0):
    out, err = process.communicate(timeout=120)
    assert process.returncode == status, err
    return out, err


def write_json(path, obj):
    path.write_text(json.dumps(obj))
    return str(path)


def text_table(report, sort="total"):
    """The text format of ``report`` (a document), as text."""
    return formats.get("text").text(Report.of(report), sort)


# --------------------------------------------------------------------------
# the module itself
# --------------------------------------------------------------------------


def test_import_fastpatch_does_not_import_the_report_or_stats_modules_and_the_report_costs_only_those():
    stages = ("build", "definitions", "exporter", "formats", "merge", "output", "schema", "table")
    code = (
        "import sys, fastpatch\n"
        "assert 'fastpatch._reports' not in sys.modules and 'fastpatch._stats' not in sys.modules\n"
        "before = set(sys.modules)\n"
        f"import {', '.join(f'fastpatch._reports.{stage}' for stage in stages)}\n"
        "print(sorted(set(sys.modules) - before))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = set(json.loads(out.replace("'", '"')))
    ours = {m for m in loaded if m.startswith("fastpatch")}
    # and math (with math.integer on 3.15), itertools: C modules of the standard library
    assert ours == {"fastpatch._reports", "fastpatch._stats", *(f"fastpatch._reports.{stage}" for stage in stages)}
    assert {m.split(".")[0].lstrip("_") for m in loaded - ours} <= {"math", "math_integer", "itertools"}


def test_python_version_is_written_as_platform_spells_it():
    assert python_version() == platform.python_version()


def test_the_histogram_layout_is_computed_from_the_bucket_bounds(monkeypatch):
    layout = _stats.histogram_layout()
    kind, unit, buckets, crc = layout.split("-")
    assert kind == f"log{len(_stats._SIXTH_CELLS) - 1}"
    assert unit == f"{1 << _stats.HIST_SHIFT}ns"
    assert int(buckets) == B
    assert len(crc) == 8
    # Any change of a bound gives another name.
    real = _stats.bucket_bounds
    monkeypatch.setattr(_stats, "bucket_bounds", lambda i: real(i) if i != 100 else (real(i)[0], real(i)[1] + 1))
    monkeypatch.setattr(_stats, "_layout", None)
    assert _stats.histogram_layout() != layout
    monkeypatch.undo()
    assert _stats.histogram_layout() == layout


# --------------------------------------------------------------------------
# build: the JSON schema
# --------------------------------------------------------------------------


def test_build_has_every_field_of_the_schema_with_the_values_of_the_stats():
    def ok(x):
        return x + 1

    def fails():
        raise ValueError("no")

    fastpatch.instrument(ok)
    fastpatch.instrument(fails)
    for i in range(50):
        ok(i)
    for _ in range(2):
        with pytest.raises(ValueError):
            fails()
    report = build()

    assert report["format"] == "fastpatch"
    assert report["version"] == 1
    assert report["pid"] == os.getpid()
    assert report["argv"] == sys.argv
    assert report["python"] == platform.python_version()
    assert report["clock"] == fastpatch.clock()
    assert isinstance(report["created"], float)
    assert abs(report["created"] - __import__("time").time()) < 60
    assert report["fastpatch_version"] == fastpatch.__version__
    assert isinstance(report["report_id"], str) and len(report["report_id"]) == 16
    assert "processes" not in report

    for func in (ok, fails):
        (fn,) = functions_named(report, func.__name__)
        s = fastpatch.stats(func)
        assert fn["name"] == s.name == f"{func.__module__}.{func.__qualname__}"
        assert fn["module"] == func.__module__
        assert fn["qualname"] == func.__qualname__
        assert fn["filename"] == func.__code__.co_filename
        assert fn["firstlineno"] == func.__code__.co_firstlineno
        for key in ("calls", "errors", "completed", "total_ns", "min_ns", "max_ns"):
            assert fn[key] == getattr(s, key), key
            assert type(fn[key]) is int
        assert fn["histogram"]["layout"] == _stats.histogram_layout()
        counts = fn["histogram"]["counts"]
        assert counts == {str(i): n for i, n in enumerate(s.histogram) if n}
        assert all(type(k) is str and type(v) is int and v > 0 for k, v in counts.items())
        assert fn["clock"] == s.clock
        assert fn["mean_ns"] == round(s.mean_ns, 2)
        assert (fn["p50_ns"], fn["p90_ns"], fn["p99_ns"]) == (s.percentile(50), s.percentile(90), s.percentile(99))
    assert functions_named(report, "ok")[0]["calls"] == 50
    assert functions_named(report, "fails")[0]["errors"] == 2
    keys = [(fn["module"], fn["qualname"], fn["firstlineno"]) for fn in report["functions"]]
    assert keys == sorted(keys)


def test_json_round_trip_is_exact(tmp_path):
    def f():
        return 1

    fastpatch.instrument(f)
    f()
    report = build()
    assert json.loads(serialize(report, "json")) == report
    path = output.write(str(tmp_path / "r.json"), report=report)
    assert load(path) == report
    # One function per line.
    lines = (tmp_path / "r.json").read_text().splitlines()
    assert sum(1 for line in lines if line.lstrip().startswith('{"name"')) == len(report["functions"])


def test_build_leaves_out_definitions_never_called_and_keeps_activations_in_flight():
    def never():
        return 0

    def gen():
        yield 1
        yield 2

    fastpatch.instrument(never)
    fastpatch.instrument(gen)
    g = gen()
    next(g)  # started, suspended: calls 1, completed 0
    report = build()
    assert functions_named(report, "never") == []
    (fn,) = functions_named(report, "gen")
    assert (fn["calls"], fn["completed"], fn["min_ns"], fn["max_ns"], fn["histogram"]["counts"]) == (1, 0, 0, 0, {})
    g.close()
    (fn,) = functions_named(build(), "gen")
    assert (fn["calls"], fn["completed"]) == (1, 1)


def test_definitions_with_the_same_module_qualname_and_line_are_one_entry():
    one, two = (lambda: 1), (lambda: 2)  # noqa: E731 - two definitions on one line, as cProfile keys them
    assert one.__code__ is not two.__code__
    fastpatch.instrument(one)
    fastpatch.instrument(two)
    one(), two(), two()
    (fn,) = functions_named(build(), "<lambda>")
    assert fn["calls"] == 3
    s1, s2 = fastpatch.stats(one), fastpatch.stats(two)
    assert fn["total_ns"] == s1.total_ns + s2.total_ns
    assert fn["min_ns"] == min(s1.min_ns, s2.min_ns)
    assert fn["max_ns"] == max(s1.max_ns, s2.max_ns)


def test_argv_entries_that_are_not_strings_are_written_as_strings(tmp_path, monkeypatch):
    import pathlib

    class Unprintable:
        def __str__(self):
            raise RuntimeError("no")

    odd = Unprintable()
    monkeypatch.setattr(sys, "argv", ["app.py", pathlib.Path("data", "in.csv"), b"raw-\xff", 7, odd])
    expected = ["app.py", os.path.join("data", "in.csv"), os.fsdecode(b"raw-\xff"), "7", object.__repr__(odd)]
    report = build([synthetic([10])])
    assert report["argv"] == expected
    assert load(output.write(str(tmp_path / "r.json"), report=report))["argv"] == expected
    monkeypatch.setattr(sys, "argv", None)
    assert build([])["argv"] == []


@needs_fork
def test_a_forked_childs_table_on_stderr_names_its_argv_when_it_holds_a_path(tmp_path):
    (tmp_path / "main.py").write_text(
        "import os, pathlib, sys\n"
        "def work():\n"
        "    return 1\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    sys.argv.append(pathlib.Path('data.csv'))\n"
        "    work()\n"
        "    sys.exit(0)\n"
        "os.waitpid(pid, 0)\n"
        "print(pid)\n"
    )
    out, err = _finished(_fastpatch("run", "main.py", cwd=tmp_path))
    lines = err.splitlines()
    assert lines[0] == f"fastpatch: process {int(out)} (main.py data.csv)"
    assert lines[1].split() == ["calls", "errors", "total", "mean", "min", "p50", "p99", "max", "name"]
    assert lines[2].split()[0::8] == ["1", "__main__.work"]


def test_multiprocessing_main_module_counts_as_main():
    child = synthetic([100, 200], module="__mp_main__", qualname="work")
    parent = synthetic([300], module="__main__", qualname="work")
    report = build([child])
    (fn,) = report["functions"]
    assert (fn["module"], fn["name"]) == ("__main__", "__main__.work")
    (fn,) = merge([build([parent]), report])["functions"]
    assert fn["calls"] == 3


# --------------------------------------------------------------------------
# merge
# --------------------------------------------------------------------------


def test_merging_two_reports_equals_the_report_of_all_the_calls_in_one_process():
    rng = random.Random(9)
    durations = [int(rng.lognormvariate(8, 2.5)) for _ in range(4000)] + [0, 3, 31, 2**41, 2**43]
    rng.shuffle(durations)
    first, second = durations[:1500], durations[1500:]
    other = synthetic([5, 50, 500], qualname="other", firstlineno=30)
    idle = synthetic([], qualname="pending", firstlineno=40, calls=2)  # in flight: min 0 must not win
    pending_done = synthetic([70_000], qualname="pending", firstlineno=40)

    whole = build([
        synthetic(durations, errors=7, calls=len(durations) + 1), other,
        synthetic([70_000], qualname="pending", firstlineno=40, calls=3),
    ])
    merged = merge([
        build([synthetic(first, errors=3, calls=len(first) + 1), idle]),
        build([synthetic(second, errors=4), other, pending_done]),
    ])
    assert merged["functions"] == whole["functions"]
    (work,) = functions_named(merged, "work")
    assert work["calls"] == len(durations) + 1
    assert work["errors"] == 7
    assert work["min_ns"] == 0 and work["max_ns"] == 2**43
    assert sum(work["histogram"]["counts"].values()) == len(durations)
    (pending,) = functions_named(merged, "pending")
    assert (pending["calls"], pending["completed"], pending["min_ns"]) == (3, 1, 70_000)

    merged_stats = {s.qualname: s for s in to_stats(merged)}
    whole_stats = {s.qualname: s for s in to_stats(whole)}
    for qualname in ("work", "other", "pending"):
        m, w = merged_stats[qualname], whole_stats[qualname]
        assert m == w and m.histogram == w.histogram
        for q in [i / 4 for i in range(401)]:
            assert m.percentile(q) == w.percentile(q), (qualname, q)
    # And both agree with Stats built directly from all the observations.
    direct = synthetic(durations, errors=7, calls=len(durations) + 1)
    assert merged_stats["work"].histogram == direct.histogram
    assert [merged_stats["work"].percentile(q) for q in (1, 50, 99.9)] == [direct.percentile(q) for q in (1, 50, 99.9)]


def test_a_merged_report_is_a_valid_version_1_report_listing_its_processes(tmp_path):
    a = build([synthetic([10], qualname="a")])
    b = build([synthetic([20], qualname="b")])
    b["pid"], b["argv"], b["created"] = 99999, ["worker"], 1.5
    merged = merge([a, b])
    assert validate(merged) is merged
    assert (merged["pid"], merged["argv"], merged["created"], merged["python"]) == (
        a["pid"], a["argv"], a["created"], a["python"])
    assert [p["pid"] for p in merged["processes"]] == [a["pid"], 99999]
    assert [p["report_id"] for p in merged["processes"]] == [a["report_id"], b["report_id"]]
    assert merged["report_id"] not in (a["report_id"], b["report_id"])
    assert load(output.write(str(tmp_path / "m.json"), report=merged)) == merged
    # Merging a merged report flattens its processes.
    c = build([synthetic([30], qualname="a")])
    again = merge([merged, c])
    assert [p["pid"] for p in again["processes"]] == [a["pid"], 99999, c["pid"]]
    (fa,) = functions_named(again, "a")
    assert fa["calls"] == 2


def test_merge_refuses_the_same_process_twice():
    a = build([synthetic([10])])
    b = build([synthetic([20])])
    with pytest.raises(ReportError, match=r"report #2 repeats the report of process \d+ already in report #1"):
        merge([a, a])
    with pytest.raises(ReportError, match="report #3 repeats .* report #1; .*its calls twice"):
        merge([a, b, merge([a])])
    with pytest.raises(ReportError, match="no reports to merge"):
        merge([])


def test_merge_keeps_a_common_clock_and_says_mixed_otherwise():
    tsc = build([synthetic([10], clock="tsc")])
    mono = build([synthetic([20], clock="monotonic")])
    tsc["clock"], mono["clock"] = "tsc", "monotonic"
    assert merge([tsc, build([synthetic([5], clock="tsc")]) | {"clock": "tsc"}])["clock"] == "tsc"
    merged = merge([tsc, mono])
    assert merged["clock"] == "mixed"
    assert merged["functions"][0]["clock"] == "mixed"


def test_readers_ignore_keys_they_do_not_know(tmp_path):
    report = build([synthetic([10, 20])])
    report["from_the_future"] = {"anything": [1, 2]}
    report["functions"][0]["flame"] = "later"
    report["functions"][0]["histogram"]["sum_of_squares"] = 500
    path = write_json(tmp_path / "r.json", report)
    loaded = load(path)
    merged = merge([loaded])
    assert "from_the_future" not in merged and "flame" not in merged["functions"][0]
    assert to_stats(merged)[0] == synthetic([10, 20])


# --------------------------------------------------------------------------
# Processes: fork, {pid}, and who owns a name without {pid}
# --------------------------------------------------------------------------


@needs_fork
def test_parent_and_forked_child_write_their_own_files_and_the_merge_counts_each_call_once(tmp_path):
    def f():
        return 1

    fastpatch.instrument(f)
    template = str(tmp_path / "out.json")
    output.check_writable(template)  # at start, as `run` does: this process owns the plain name
    for _ in range(3):
        f()

    def child():
        for _ in range(5):
            f()
        assert output.write(template) == str(tmp_path / f"out.{os.getpid()}.json")

    child_pid, status = run_forked(child)
    assert status == 0
    f()
    assert output.write(template) == template
    assert sorted(os.listdir(tmp_path)) == sorted(["out.json", f"out.{child_pid}.json"])

    parent_report = load(template)
    child_report = load(str(tmp_path / f"out.{child_pid}.json"))
    assert (parent_report["pid"], child_report["pid"]) == (os.getpid(), child_pid)
    assert functions_named(parent_report, ".f")[0]["calls"] == 4
    assert functions_named(child_report, ".f")[0]["calls"] == 5  # the child started from zero
    (fn,) = functions_named(merge([parent_report, child_report]), ".f")
    assert (fn["calls"], fn["completed"], sum(fn["histogram"]["counts"].values())) == (9, 9, 9)
    per_bucket = {}
    for rep in (parent_report, child_report):
        for k, n in functions_named(rep, ".f")[0]["histogram"]["counts"].items():
            per_bucket[k] = per_bucket.get(k, 0) + n
    assert fn["histogram"]["counts"] == per_bucket


@needs_fork
def test_a_child_forked_after_the_parent_wrote_does_not_overwrite_the_parents_file(tmp_path):
    def g():
        return 2

    fastpatch.instrument(g)
    g()
    template = str(tmp_path / "report.txt")
    assert output.write(template) == template  # writing claims the name
    before = (tmp_path / "report.txt").read_bytes()

    def child():
        g()
        output.write(template)

    child_pid, status = run_forked(child)
    assert status == 0
    assert (tmp_path / "report.txt").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == sorted(["report.txt", f"report.{child_pid}.txt"])
    assert (tmp_path / f"report.{child_pid}.txt").read_text().splitlines()[0].split()[0] == "calls"


@needs_fork
def test_with_pid_in_the_template_every_process_writes_its_own_file(tmp_path):
    def h():
        return 3

    fastpatch.instrument(h)
    template = str(tmp_path / "out-{pid}.json")
    output.check_writable(template)
    h()
    child_pid, status = run_forked(lambda: (h(), h(), output.write(template)))
    assert status == 0
    mine = output.write(template)
    assert mine == str(tmp_path / f"out-{os.getpid()}.json")
    child = load(str(tmp_path / f"out-{child_pid}.json"))
    (fn,) = functions_named(merge([load(mine), child]), ".h")
    assert fn["calls"] == 3


def test_pid_substitution_and_the_paths_of_other_processes(tmp_path, monkeypatch):
    pid = os.getpid()
    assert output.resolve_path("/x/{pid}/a-{pid}.json") == f"/x/{pid}/a-{pid}.json"
    assert output.resolve_path("/x/{other}.json") == "/x/{other}.json"  # not a placeholder
    # Nobody claimed it: this process writes the plain name.
    assert output.resolve_path(str(tmp_path / "free.json")) == str(tmp_path / "free.json")
    # Claimed by another process (this one's parent, after a fork).
    monkeypatch.setitem(output._claims, "/x/out.json", pid + 1)
    monkeypatch.setitem(output._claims, "/x/out", pid + 1)
    monkeypatch.setitem(output._claims, "/x.d/.hidden", pid + 1)
    monkeypatch.setitem(output._claims, "out.tar.prof", pid + 1)
    assert output.resolve_path("/x/out.json") == f"/x/out.{pid}.json"
    assert output.resolve_path("/x/out") == f"/x/out.{pid}"
    assert output.resolve_path("/x.d/.hidden") == f"/x.d/.hidden.{pid}"
    assert output.resolve_path("out.tar.prof") == f"out.tar.{pid}.prof"
    assert format_for(output.resolve_path("out.tar.prof")) == "pstats"
    # A claim is kept by the first claimant.
    output.claim("/x/out.json")
    assert output._claims["/x/out.json"] == pid + 1
    assert output.child_template("/x/out.json") == "/x/out.{pid}.json"
    assert output.child_template("/x/{pid}.json") == "/x/{pid}.json"
    assert output.child_template("report") == "report.{pid}"


def test_write_substitutes_pid_and_picks_the_format_from_the_extension(tmp_path):
    report = build([synthetic([100, 200])])
    cases = {"a.json": "json", "a.JSON": "json", "a.pstats": "pstats", "a.prof": "pstats", "a.txt": "text",
             "a": "text", "a.json.bak": "text"}
    for name, fmt in cases.items():
        path = output.write(str(tmp_path / name), report=report)
        data = (tmp_path / name).read_bytes()
        assert data == serialize(report, fmt), name
        assert path == str(tmp_path / name)
    # -f wins over the extension.
    output.write(str(tmp_path / "forced.json"), "text", report=report)
    assert (tmp_path / "forced.json").read_text().startswith("calls")
    path = output.write(str(tmp_path / "p{pid}.out"), "json", report=report)
    assert path == str(tmp_path / f"p{os.getpid()}.out")
    assert load(path) == report


# --------------------------------------------------------------------------
# Rendering: text and pstats
# --------------------------------------------------------------------------


def test_the_text_format_is_the_table_of_fastpatch_report():
    def t1():
        return 1

    def t2():
        return [t1() for _ in range(3)]

    fastpatch.instrument(t1)
    fastpatch.instrument(t2)
    t2(), t2()
    report = build()
    for sort in table.SORT_KEYS:
        expected = io.StringIO()
        called = sorted((s for s in fastpatch.all_stats() if s.calls), key=lambda s: (s.module, s.qualname))
        table.render(called, expected, sort, None)
        assert serialize(report, "text", sort).decode() == expected.getvalue()
    assert sorted(table.SORT_KEYS) == sorted(("total", "calls", "mean", "max", "errors", "name"))


def test_the_table_at_exit_is_the_text_table_of_the_report(capsys):
    # The report at exit writes its table from the stats, without building
    # the report: the same rows, merged the same way (two lambdas on one line).
    def table_at_exit(stats, sort):
        ReportWriter(None, None, sort, os.getpid()).export(stats, True)  # run's own process: no line above it
        return capsys.readouterr().err

    pair = [lambda: 1, lambda: 2]  # noqa: E731 - one line, one definition key
    for f in pair:
        fastpatch.instrument(f)
    pair[0](), pair[1](), pair[1]()
    stats = [s for s in fastpatch.all_stats() if s.calls] + [synthetic([40, 90], calls=2, name="m.g")]
    distinct = [synthetic([40, 90], calls=3, module="b"), synthetic([7], module="a"), synthetic([], calls=1)]
    mp_main = [synthetic([5, 6], module="__mp_main__", name="__mp_main__.work")]
    for group in (stats, distinct, mp_main):
        for sort in table.SORT_KEYS:
            assert table_at_exit(group, sort) == text_table(build(group), sort)
    merged = [line for line in table_at_exit(stats, "total").splitlines() if "<lambda>" in line]
    assert len(merged) == 1 and merged[0].split()[0] == "3"
    assert [s.module for s in reported(distinct)] == ["a", "app", "b"]  # in report order
    assert reported(mp_main)[0].name == "__main__.work"
    assert table_at_exit([synthetic([], calls=0)], "total") == text_table(build([synthetic([], calls=0)]))


def test_the_text_table_of_a_report_without_calls_says_so():
    text = text_table(build([synthetic([], calls=0)]))
    assert text.splitlines() == [text.splitlines()[0], "(no instrumented function was called)"]
    assert text.split()[0] == "calls"


def test_pstats_is_read_by_pstats_with_cprofiles_keys_and_fastpatchs_counts_and_times(tmp_path):
    import cProfile

    def leaf(n):
        return sum(range(n))

    class Handler:
        def handle(self, n):
            return leaf(n) + leaf(n)

    fastpatch.instrument(leaf)
    fastpatch.instrument(Handler.handle)
    for n in range(20):
        Handler().handle(n)
    path = output.write(str(tmp_path / "out.pstats"))
    leaf_stats, handle_stats = fastpatch.stats(leaf), fastpatch.stats(Handler.handle)

    loaded = pstats.Stats(path)
    for func, s, name in ((leaf, leaf_stats, "leaf"), (Handler.handle, handle_stats, "handle")):
        key = (func.__code__.co_filename, func.__code__.co_firstlineno, name)
        cc, nc, tt, ct, callers = loaded.stats[key]
        assert (cc, nc) == (s.completed, s.completed)
        assert tt == ct == s.total_ns / 1e9
        assert callers == {}
    assert leaf_stats.completed == 40 and handle_stats.completed == 20
    assert loaded.total_calls == sum(nc for _, nc, _, _, _ in loaded.stats.values())

    # cProfile keys the same functions the same way.
    profiler = cProfile.Profile()
    profiler.runcall(Handler().handle, 3)
    profiler.create_stats()
    assert {k for k in loaded.stats} <= set(profiler.stats)

    for sort in ("cumulative", "tottime", "calls", "name", "filename"):
        out = io.StringIO()
        pstats.Stats(path, stream=out).sort_stats(sort).print_stats()
        text = out.getvalue()
        assert "(leaf)" in text and "(handle)" in text, sort
        assert f"{leaf_stats.completed}" in text


def test_pstats_adds_up_definitions_with_one_key_and_has_a_placeholder_when_nothing_ran(tmp_path):
    report = build([
        synthetic([1000, 3000], module="a", qualname="C.f", filename="/s.py", firstlineno=5),
        synthetic([2000], module="b", qualname="f", filename="/s.py", firstlineno=5),  # same file, line, co_name
        synthetic([], calls=4, qualname="stuck", firstlineno=9),  # nothing completed: left out
    ])
    assert to_pstats(to_stats(report)) == {("/s.py", 5, "f"): (3, 3, 6e-06, 6e-06, {})}
    empty = build([])
    path = output.write(str(tmp_path / "empty.prof"), report=empty)
    loaded = pstats.Stats(path)
    assert list(loaded.stats.values()) == [(0, 0, 0.0, 0.0, {})]
    pstats.Stats(path, stream=io.StringIO()).sort_stats("cumulative").print_stats()
    assert marshal.loads((tmp_path / "empty.prof").read_bytes()) == loaded.stats


def test_snakeviz_table_reads_the_pstats_file(tmp_path):
    snakeviz_stats = pytest.importorskip("snakeviz.stats")
    report = build([synthetic([1000, 3000], qualname="Cls.method"), synthetic([500], qualname="f")])
    path = output.write(str(tmp_path / "out.prof"), report=report)
    rows = snakeviz_stats.table_rows(pstats.Stats(path))
    assert sorted(row[-1] for row in rows) == ["/src/app.py:10(f)", "/src/app.py:10(method)"]
    assert sorted(row[0][1] for row in rows) == [1, 2]
    snakeviz_stats.json_stats(pstats.Stats(path))  # the call tree: empty without callers, but it loads


# --------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------


@pytest.mark.parametrize("failure", ["replace", "write", "fsync-interrupt"])
def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path, monkeypatch, failure):
    target = tmp_path / "out.json"
    old = build([synthetic([1])])
    output.write(str(target), report=old)
    before = target.read_bytes()
    new = build([synthetic([2] * 5000)])

    if failure == "replace":
        def broken(src, dst):
            raise OSError(errno.EIO, os.strerror(errno.EIO))

        monkeypatch.setattr(os, "replace", broken)
        expected = ReportError
    elif failure == "write":
        real_write = os.write

        def broken(fd, data):  # half the bytes reach the temporary file, then the disk is full
            real_write(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(os, "write", broken)
        expected = ReportError
    else:
        def broken(fd):
            raise KeyboardInterrupt

        monkeypatch.setattr(os, "fsync", broken)
        expected = KeyboardInterrupt

    with pytest.raises(expected) as info:
        output.write(str(target), report=new)
    monkeypatch.undo()
    if failure == "write":
        assert str(info.value) == f"cannot write the report to {target}: {os.strerror(errno.ENOSPC)}"
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["out.json"]


def test_a_reader_never_sees_a_partial_file(tmp_path):
    target = tmp_path / "big.json"
    reports = [
        build([synthetic([i, i * 7 + 1], qualname=f"f{i}", firstlineno=i) for i in range(1, 2500)]),
        build([synthetic([i + 5], qualname=f"g{i}", firstlineno=i) for i in range(1, 2000)]),
    ]
    blobs = [serialize(r, "json") for r in reports]
    assert min(len(b) for b in blobs) > 500_000
    output.write(str(target), report=reports[0])
    stop = threading.Event()
    seen = {"reads": 0, "bad": []}

    def reader():
        while not stop.is_set():
            data = target.read_bytes()
            seen["reads"] += 1
            if data not in blobs:
                seen["bad"].append(len(data))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(24):
            output.write(str(target), report=reports[i % 2])
    finally:
        stop.set()
        thread.join()
    assert seen["bad"] == []
    assert seen["reads"] > 24
    assert os.listdir(tmp_path) == ["big.json"]


def test_written_files_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        output.write(str(tmp_path / "plain.txt"), report=build([]))
    finally:
        os.umask(old)
    assert (tmp_path / "plain.txt").stat().st_mode & 0o777 == 0o644


def test_a_symlink_at_the_output_path_is_replaced_and_the_file_it_points_to_is_left_as_it_was(tmp_path):
    real = tmp_path / "elsewhere" / "precious.json"
    real.parent.mkdir()
    real.write_text("precious")
    real.chmod(0o600)
    link = tmp_path / "out.json"
    link.symlink_to(real)
    output.check_writable(str(link))
    report = build([synthetic([9])])
    assert output.write(str(link), report=report) == str(link)
    assert not link.is_symlink()
    assert load(str(link)) == report
    assert (real.read_text(), stat.S_IMODE(real.stat().st_mode)) == ("precious", 0o600)
    assert os.listdir(real.parent) == ["precious.json"]
    assert sorted(os.listdir(tmp_path)) == ["elsewhere", "out.json"]


def test_a_symlink_that_cannot_be_followed_is_refused_and_nothing_is_created_through_it(tmp_path):
    link = tmp_path / "out.json"
    link.symlink_to(tmp_path / "planted" / "here.json")  # dangling: writing through it would create that file
    (tmp_path / "planted").mkdir()
    message = (
        f"cannot write the report to {link}: it is a symbolic link that cannot be followed "
        f"({os.strerror(errno.ENOENT)}); a report is never written through a link, nor replaces one it cannot follow"
    )
    for attempt in (lambda: output.check_writable(str(link)),
                    lambda: output.write(str(link), report=build([synthetic([9])]))):
        with pytest.raises(ReportError) as info:
            attempt()
        assert str(info.value) == message
    assert os.readlink(link) == str(tmp_path / "planted" / "here.json")
    assert os.listdir(tmp_path / "planted") == []
    assert sorted(os.listdir(tmp_path)) == ["out.json", "planted"]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_dev_stderr_of_a_process_whose_stderr_is_closed_is_left_alone(tmp_path):
    # A stand-in for /dev/stderr, which is shared: replacing it, as a dangling link, would put a
    # regular file where every process on the machine finds its stderr.
    link = tmp_path / "stderr"
    link.symlink_to("/proc/self/fd/2")
    code = (
        "import os, sys\nfrom fastpatch._reports import build, output, schema\nos.close(2)\n"
        "for check in (output.check_writable, lambda p: output.write(p, report=build.build([]))):\n"
        "    try:\n        check(sys.argv[1])\n    except schema.ReportError as exc:\n        print(exc)\n"
    )
    out, _ = _finished(_fastpatch("python", "-c", code, str(link), cwd=tmp_path))
    refused = (
        f"cannot write the report to {link}: it is a symbolic link that cannot be followed "
        f"({os.strerror(errno.ENOENT)}); a report is never written through a link, nor replaces one it cannot follow"
    )
    assert out.splitlines() == [refused, refused]
    assert os.readlink(link) == "/proc/self/fd/2"
    assert os.listdir(tmp_path) == ["stderr"]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root, to act as two users")
def test_another_users_link_in_a_sticky_directory_is_refused_and_nothing_is_written_through_it():
    import pwd
    import shutil
    import tempfile

    nobody = pwd.getpwnam("nobody")
    sticky, home = tempfile.mkdtemp(), tempfile.mkdtemp()  # in /tmp: nobody may pass through it
    try:
        os.chmod(sticky, 0o1777)  # as /tmp itself
        os.chown(home, nobody.pw_uid, nobody.pw_gid)
        precious = os.path.join(home, "precious")
        with open(precious, "w") as fh:
            fh.write("precious")
        os.chown(precious, nobody.pw_uid, nobody.pw_gid)
        link = os.path.join(sticky, "profile.json")  # root plants links at names nobody will write
        os.symlink(precious, link)
        theirs = os.path.join(sticky, "theirs.json")
        with open(theirs, "w") as fh:
            fh.write("root's")

        def as_nobody():
            os.symlink(precious, os.path.join(sticky, f"app.{os.getpid()}.json"))  # a predictable name too
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            refused = f"cannot write the report to {link}: it is a symbolic link, which this process may not replace"
            with pytest.raises(ReportError) as info:
                output.check_writable(link)
            assert str(info.value) == (
                f"{refused} (another user's, in the sticky directory {sticky}), and a report is never written "
                "through a link"
            )
            with pytest.raises(ReportError) as info:
                output.write(link, report=build([synthetic([5])]))
            assert str(info.value) == (
                f"{refused} ({os.strerror(errno.EPERM)}), and a report is never written through a link"
            )
            with pytest.raises(ReportError, match=r"/app\.\d+\.json: it is a symbolic link, which this process"):
                output.write(os.path.join(sticky, "app.{pid}.json"), report=build([synthetic([5])]))
            with pytest.raises(ReportError) as info:
                output.check_writable(theirs)
            assert str(info.value) == (
                f"cannot write the report to {theirs}: it is another user's file, in the sticky directory {sticky}, "
                "where only its owner may replace it"
            )

        child_pid, status = run_forked(as_nobody)
        assert status == 0
        with open(precious) as fh:
            assert fh.read() == "precious"
        assert os.stat(precious).st_uid == nobody.pw_uid
        assert os.readlink(link) == os.readlink(os.path.join(sticky, f"app.{child_pid}.json")) == precious
        assert sorted(os.listdir(sticky)) == sorted(["profile.json", f"app.{child_pid}.json", "theirs.json"])
        assert os.listdir(home) == ["precious"]
    finally:
        shutil.rmtree(sticky)
        shutil.rmtree(home)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
@pytest.mark.parametrize("stream, into", [("stderr", "a file"), ("stdout", "a file"), ("stderr", "a pipe")])
def test_output_to_dev_stderr_or_stdout_lands_after_what_the_program_wrote_there(tmp_path, stream, into):
    # /dev/stderr is a link to /proc/self/fd/2: to a file, a pipe or a terminal. The links here
    # are the same as /dev's; the real ones are shared by every process of the machine, and a
    # regression would replace them with a file.
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "stderr").symlink_to("/proc/self/fd/2")
    (dev / "stdout").symlink_to("/proc/self/fd/1")
    (tmp_path / "prog.py").write_text(
        f"import sys\ndef work():\n    return 1\nwork()\nprint('from the program', file=sys.{stream})\n"
    )
    command = [sys.executable, "-m", "fastpatch", "run", "-o", str(dev / stream), "prog.py"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTPATCH_")}
    log = tmp_path / "log"
    with open(log, "wb") as fh:
        result = subprocess.run(command, cwd=str(tmp_path), env=env, timeout=120,
                                stdout=fh if stream == "stdout" else subprocess.PIPE,
                                stderr=fh if stream == "stderr" and into == "a file" else subprocess.PIPE)
    text = (log.read_bytes() or (result.stderr if stream == "stderr" else result.stdout)).decode()
    lines = text.splitlines()
    assert result.returncode == 0, text
    assert lines[0] == "from the program"
    assert lines[1].split()[0] == "calls"
    assert lines[2].split()[0::8] == ["1", "__main__.work"]
    assert lines[3:] == (["fastpatch: report written to dev/stderr"] if stream == "stderr" else [])
    assert [os.readlink(dev / name) for name in ("stderr", "stdout")] == ["/proc/self/fd/2", "/proc/self/fd/1"]
    assert sorted(os.listdir(tmp_path)) == ["dev", "log", "prog.py"]
    assert sorted(os.listdir(dev)) == ["stderr", "stdout"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_named_pipe_or_device_is_written_in_place_not_replaced(tmp_path):
    # -o /dev/stderr or /dev/null: os.replace would put a regular file where the device was.
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    output.check_writable(str(fifo))  # does not open it: that would block without a reader
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    report = build([synthetic([42])])
    assert output.write(str(fifo), report=report) == str(fifo)
    reader.join(10)
    assert received == [serialize(report, "json")]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert os.listdir(tmp_path) == ["pipe.json"]
    output.check_writable(os.devnull)


# --------------------------------------------------------------------------
# check_writable
# --------------------------------------------------------------------------


def test_check_writable_accepts_a_writable_path_and_leaves_nothing_behind(tmp_path):
    output.check_writable(str(tmp_path / "out.json"))
    output.check_writable(str(tmp_path / "out-{pid}.prof"), "pstats")
    output.check_writable(str(tmp_path / "exists.txt"))
    assert os.listdir(tmp_path) == []
    (tmp_path / "exists.txt").write_text("old")
    output.check_writable(str(tmp_path / "exists.txt"))
    assert os.listdir(tmp_path) == ["exists.txt"]
    assert (tmp_path / "exists.txt").read_text() == "old"


def test_check_writable_names_the_path_and_the_problem(tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("")
    (tmp_path / "adir").mkdir()
    missing = tmp_path / "nope" / "out.json"
    cases = [
        (str(missing), None, f"cannot write the report to {missing}: directory {missing.parent} does not exist"),
        (str(tmp_path / "adir"), None, f"cannot write the report to {tmp_path / 'adir'}: it is a directory"),
        (str(tmp_path / "afile" / "x.json"), None,
         f"cannot write the report to {tmp_path / 'afile' / 'x.json'}: {tmp_path / 'afile'} is not a directory"),
        (str(tmp_path / "x.out"), "xml", "unknown report format 'xml'; use one of text, json, pstats"),
        ("", None, "the report path is empty"),
    ]
    for path, fmt, message in cases:
        with pytest.raises(ReportError) as info:
            output.check_writable(path, fmt)
        assert str(info.value) == message

    def refused(path, flags, mode=0o777):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)

    monkeypatch.setattr(os, "open", refused)
    with pytest.raises(ReportError) as info:
        output.check_writable(str(tmp_path / "out.json"))
    assert str(info.value) == (
        f"cannot write the report to {tmp_path / 'out.json'}: cannot create a file in {tmp_path}: "
        f"{os.strerror(errno.EACCES)}"
    )


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write anywhere")
def test_check_writable_refuses_a_read_only_directory(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(ReportError, match="cannot create a file in .*ro: Permission denied"):
            output.check_writable(str(ro / "out.json"))
    finally:
        ro.chmod(0o755)


# --------------------------------------------------------------------------
# load: bad input
# --------------------------------------------------------------------------


def _valid():
    return build([synthetic([10, 20])])


def _with(change):
    report = _valid()
    change(report)
    return json.dumps(report)


def _fn(change):
    def apply(report):
        change(report["functions"][0])

    return _with(apply)


BAD_FILES = [
    ("empty", "", "empty file, not a fastpatch report"),
    ("blank", "  \n", "empty file, not a fastpatch report"),
    ("not json", "calls errors total\n",
     r"not a fastpatch report: not valid JSON \(Expecting value at line 1 column 1\)"),
    ("deep nesting", "[" * 100_000 + "]" * 100_000, r"not a fastpatch report: not valid JSON \(RecursionError"),
    ("huge number", "1" * 5000, "not a fastpatch report"),  # ValueError on 3.11+, an int before
    ("truncated", json.dumps({"format": "fastpatch", "version": 1, "functions": [1, 2, 3]})[:-9],
     r"not a complete JSON document: it ends early \(truncated\?\)"),
    ("truncated in a string", '{"format": "fastp', r"it ends early \(truncated\?\)"),
    ("a list", "[1, 2]", r'not a fastpatch report \(a foreign file: a JSON list without "format": "fastpatch"\)'),
    ("foreign object", '{"traceEvents": []}', r'not a fastpatch report \(a foreign file: a JSON object without'),
    ("other format", '{"format": "speedscope", "version": 1}', "a foreign file"),
    ("newer", _with(lambda r: r.update(version=2)),
     r"written by a newer fastpatch \(report version 2\); this one \(fastpatch .*\) reads version 1"),
    ("version zero", _with(lambda r: r.update(version=0)), "unknown report version 0; this fastpatch reads version 1"),
    ("version string", _with(lambda r: r.update(version="1")), 'without a valid "version"'),
    ("no functions", _with(lambda r: r.pop("functions")), "'functions' must be a list"),
    ("no pid", _with(lambda r: r.pop("pid")), "'pid' must be a non-negative integer below 2"),
    ("argv", _with(lambda r: r.update(argv="app.py")), "'argv' must be a list of strings"),
    ("created", _with(lambda r: r.update(created="today")), "'created' must be a number"),
    ("processes", _with(lambda r: r.update(processes=[{"pid": 1}])), r"process #0: 'argv' must be a list"),
    ("function not object", _with(lambda r: r["functions"].append(3)), "function #1 is not an object but a JSON int"),
    ("calls string", _fn(lambda f: f.update(calls="3")), r"function #0 \(app.work\): 'calls' must be a non-negative"),
    ("calls negative", _fn(lambda f: f.update(calls=-1)), "'calls' must be a non-negative integer"),
    ("calls bool", _fn(lambda f: f.update(calls=True)), "'calls' must be a non-negative integer"),
    ("qualname", _fn(lambda f: f.pop("qualname")), "'qualname' must be a string"),
    ("histogram", _fn(lambda f: f.update(histogram=[1, 2])),
     "'histogram' must be an object with 'layout' and 'counts'"),
    ("layout", _fn(lambda f: f["histogram"].update(layout="log8-1ns-300-00000000")),
     "its histogram has bucket layout 'log8-1ns-300-00000000' and this fastpatch's is "
     rf"'{_stats.histogram_layout()}'; "
     "read the report with the fastpatch version that wrote it"),
    ("bucket index", _fn(lambda f: f["histogram"]["counts"].update({str(B): 1})), f"not a bucket index below {B}"),
    ("bucket word", _fn(lambda f: f["histogram"]["counts"].update({"x": 1})), "not a bucket index"),
    ("bucket count", _fn(lambda f: f["histogram"]["counts"].update({"3": -2})),
     r"histogram count '3': -2 is not a bucket index below \d+ with a non-negative integer below 2\*\*96 as its count"),
    # Numbers out of range: no later conversion (float, percentiles, pstats) may overflow.
    ("total_ns huge", _fn(lambda f: f.update(total_ns=10**400)),
     r"function #0 \(app.work\): 'total_ns' must be a non-negative integer below 2\*\*96 \(a corrupt report\)$"),
    ("calls 2**96", _fn(lambda f: f.update(calls=2**96)), "'calls' must be a non-negative integer below 2"),
    ("max_ns huge", _fn(lambda f: f.update(max_ns=10**30)), "'max_ns' must be a non-negative integer below 2"),
    ("firstlineno negative", _fn(lambda f: f.update(firstlineno=-1)), "'firstlineno' must be a non-negative"),
    ("bucket count huge", _fn(lambda f: f["histogram"]["counts"].update({"3": 10**400})),
     r"histogram count '3': an integer out of range is not a bucket index below \d+ with a non-negative"),
    ("bucket leading zero", _fn(lambda f: f["histogram"]["counts"].update({"03": 1})),
     r"histogram count '03': 1 is not a bucket index"),
    ("bucket key huge", _fn(lambda f: f["histogram"]["counts"].update({"1" * 5000: 1})),
     r"histogram count '1{36}\.\.\.: 1 is not a bucket index"),
    ("created Infinity", _with(lambda r: r.update(created=float("inf"))),
     r"'created' must be a number of seconds, from 0 and below 2\*\*96 \(a corrupt report\)$"),
    ("created NaN", _with(lambda r: r.update(created=float("nan"))), "'created' must be a number of seconds, from 0"),
    ("created 1e400", _with(lambda r: r.update(created=1)).replace('"created": 1', '"created": 1e400'),
     "'created' must be a number of seconds, from 0"),
    ("created huge int", _with(lambda r: r.update(created=10**400)), "'created' must be a number of seconds, from 0"),
    ("created negative", _with(lambda r: r.update(created=-5.0)), "'created' must be a number of seconds, from 0"),
    ("pid huge", _with(lambda r: r.update(pid=10**400)), "'pid' must be a non-negative integer below 2"),
    ("process created NaN", _with(lambda r: r.update(processes=[{"pid": 1, "argv": [], "python": "3.12.0",
                                                                 "created": float("nan")}])),
     r"process #0: 'created' must be a number of seconds"),
    ("newer huge", _with(lambda r: r.update(version=10**400)),
     r"written by a newer fastpatch \(report version an integer out of range\)"),
]


@pytest.mark.parametrize("content, message", [case[1:] for case in BAD_FILES], ids=[case[0] for case in BAD_FILES])
def test_load_refuses_bad_files_with_a_message_naming_the_file(tmp_path, content, message):
    path = tmp_path / "in.json"
    path.write_text(content)
    with pytest.raises(ReportError, match=message) as info:
        load(str(path))
    text = str(info.value)
    assert text.startswith(f"{path}: ")
    assert "\n" not in text


def test_load_refuses_missing_unreadable_and_binary_files(tmp_path):
    with pytest.raises(ReportError, match=r"nope.json: no such file$"):
        load(str(tmp_path / "nope.json"))
    with pytest.raises(ReportError, match=r": is a directory, not a report file$"):
        load(str(tmp_path))
    prof = output.write(str(tmp_path / "out.pstats"), report=build([synthetic([10])]))
    with pytest.raises(ReportError, match=r"a binary file, not JSON \(a pstats file\? `report` reads fastpatch JSON"):
        load(prof)


def test_validate_rejects_the_python_objects_a_caller_might_pass():
    report = _valid()
    report["functions"][0]["histogram"]["counts"] = {3: 1}  # int keys: not what JSON gives
    with pytest.raises(ReportError, match="not a bucket index"):
        validate(report, "mine")
    with pytest.raises(ReportError, match="^mine: not a fastpatch report"):
        validate(None, "mine")


# --------------------------------------------------------------------------
# report_main: python -m fastpatch report
# --------------------------------------------------------------------------


def _two_files(tmp_path):
    a = build([synthetic([100, 200], qualname="a"), synthetic([5], qualname="shared", firstlineno=50)])
    b = build([synthetic([300], qualname="b"), synthetic([7, 9], qualname="shared", firstlineno=50)])
    b["pid"] = a["pid"] + 1
    return [output.write(str(tmp_path / "a.json"), report=a), output.write(str(tmp_path / "b.json"), report=b)]


def test_report_main_prints_the_merged_table(tmp_path, capsys):
    files = _two_files(tmp_path)
    assert report_main(files, sort="calls") == 0
    out, err = capsys.readouterr()
    assert err == ""
    merged = merge([load(f) for f in files])
    assert out == text_table(merged, "calls")
    lines = out.splitlines()
    assert lines[1].split()[0] == "3" and lines[1].endswith("app.shared")


def test_report_main_converts_to_json_and_pstats(tmp_path, capsys):
    files = _two_files(tmp_path)
    expected = merge([load(f) for f in files])["functions"]
    assert report_main(files, output=str(tmp_path / "all.json")) == 0
    assert load(str(tmp_path / "all.json"))["functions"] == expected
    assert report_main(files, output=str(tmp_path / "all.out"), fmt="pstats") == 0
    loaded = pstats.Stats(str(tmp_path / "all.out"))
    assert loaded.stats[("/src/app.py", 50, "shared")][:2] == (3, 3)
    assert report_main(files, fmt="json") == 0
    assert json.loads(capsys.readouterr().out)["functions"] == expected


@pytest.mark.parametrize("case", ["sort", "format", "no files", "missing", "foreign", "twice", "output dir",
                                  "pstats to stdout", "newer"])
def test_report_main_bad_input_is_one_line_and_exit_status_2(tmp_path, capsys, case):
    files = _two_files(tmp_path)
    foreign = write_json(tmp_path / "trace.json", {"traceEvents": []})
    newer = load(files[0])
    newer["version"] = 7
    newer_file = write_json(tmp_path / "newer.json", newer)
    kwargs, message = {
        "sort": ({"files": files, "sort": "speed"},
                 "unknown sort key 'speed'; use one of calls, errors, max, mean, name, total"),
        "format": ({"files": files, "fmt": "html"}, "unknown report format 'html'; use one of text, json, pstats"),
        "no files": ({"files": []}, "no report files given"),
        "missing": ({"files": [files[0], str(tmp_path / "gone.json")]}, f"{tmp_path / 'gone.json'}: no such file"),
        "foreign": ({"files": [foreign]}, f"{foreign}: not a fastpatch report (a foreign file"),
        "twice": ({"files": [files[0], files[1], files[0]]},
                  f"{files[0]} repeats the report of process {os.getpid()} already read from {files[0]}"),
        "output dir": ({"files": files, "output": str(tmp_path / "no" / "x.json")},
                       f"directory {tmp_path / 'no'} does not exist"),
        "pstats to stdout": ({"files": files, "fmt": "pstats"}, "pstats is a binary format: give an output file"),
        "newer": ({"files": [newer_file]}, "written by a newer fastpatch (report version 7)"),
    }[case]
    assert report_main(**kwargs) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("fastpatch: error: ") and err.endswith("\n") and err.count("\n") == 1
    assert message in err
    assert "Traceback" not in err
    assert not (tmp_path / "no").exists()


def _extreme_report():
    """A valid report whose every integer is MAX_INTEGER (2**96 - 1): the largest a file may hold."""
    top = MAX_INTEGER
    report = build([synthetic([10, 20])])
    report["pid"] = report["created"] = top
    report["functions"][0].update(
        calls=top, errors=top, completed=top, timed=top, total_ns=top, min_ns=1, max_ns=top, firstlineno=top,
        histogram={"layout": _stats.histogram_layout(), "counts": {str(i): top for i in range(B)}},
    )
    return report


def test_a_report_at_the_bounds_is_read_printed_and_converted(tmp_path, capsys):
    path = write_json(tmp_path / "top.json", _extreme_report())
    assert report_main([path]) == 0
    row = capsys.readouterr().out.splitlines()[1].split()
    assert row[0] == row[1] == str(MAX_INTEGER)
    assert row[-1] == "app.work"
    assert report_main([path], output=str(tmp_path / "top.prof")) == 0
    ((key, value),) = pstats.Stats(str(tmp_path / "top.prof")).stats.items()
    assert key == ("/src/app.py", MAX_INTEGER, "work")
    assert value == (MAX_INTEGER, MAX_INTEGER, MAX_INTEGER / 1e9, MAX_INTEGER / 1e9, {})
    assert report_main([path], output=str(tmp_path / "top.out.json")) == 0
    (fn,) = load(str(tmp_path / "top.out.json"))["functions"]
    # Every bucket holds as many calls: the median is in the middle one (of 231), p99 in the 229th.
    assert (fn["total_ns"], fn["mean_ns"], fn["p50_ns"], fn["p99_ns"]) == (
        MAX_INTEGER, 1.0, _stats.bucket_value(B // 2), _stats.bucket_value(B - 3))


def test_merging_past_the_bounds_is_refused_with_one_line(tmp_path, capsys):
    first = _extreme_report()
    second = _extreme_report()
    second["report_id"] = "another process"
    files = [write_json(tmp_path / "a.json", first), write_json(tmp_path / "b.json", second)]
    assert report_main(files) == 2
    assert capsys.readouterr().err == (
        "fastpatch: error: merging these reports gives app.work more than 2**96 calls, more than any real "
        "processes could count (a corrupt report)\n"
    )


@pytest.mark.parametrize("case", ["total_ns huge", "bucket count huge", "created Infinity", "bucket key huge"])
@pytest.mark.parametrize("output", [None, "out.txt", "out.json", "out.prof"])
def test_report_of_a_file_with_numbers_out_of_range_is_one_line_and_exit_status_2(tmp_path, capsys, case, output):
    content, message = {name: rest for name, *rest in BAD_FILES}[case]
    path = tmp_path / "in.json"
    path.write_text(content)
    assert report_main([str(path)], output=output and str(tmp_path / output)) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"fastpatch: error: {path}: ") and err.count("\n") == 1
    assert re.search(message, err)
    assert os.listdir(tmp_path) == ["in.json"]


def test_the_report_command_refuses_a_counter_of_10_to_the_400_with_one_line_and_exit_status_2(tmp_path):
    (tmp_path / "in.json").write_text(_fn(lambda f: f.update(total_ns=10**400)))
    out, err = _finished(_fastpatch("report", "in.json", cwd=tmp_path), status=2)
    assert out == ""
    assert err == (
        "fastpatch: error: in.json: function #0 (app.work): 'total_ns' must be a non-negative integer below 2**96 "
        "(a corrupt report)\n"
    )


def test_report_prints_and_writes_names_that_utf_8_cannot_encode(tmp_path):
    report = build([synthetic([10], qualname="work\ud800")])
    path = write_json(tmp_path / "odd.json", report)
    out, err = _finished(_fastpatch("report", path, cwd=tmp_path, env={"PYTHONIOENCODING": "utf-8"}))
    assert err == ""
    assert out.splitlines()[1].split()[-1] == "app.work\\ud800"
    _finished(_fastpatch("report", "-o", "odd.txt", path, cwd=tmp_path))
    assert (tmp_path / "odd.txt").read_text().splitlines()[1].split()[-1] == "app.work\\ud800"


def test_report_main_checks_the_output_before_reading_anything(tmp_path, capsys):
    # The output problem is reported even though the input is bad too.
    assert report_main([str(tmp_path / "gone.json")], output=str(tmp_path / "x" / "y.json")) == 2
    assert "does not exist" in capsys.readouterr().err


# --------------------------------------------------------------------------
# The report at exit of a whole program
# --------------------------------------------------------------------------


FREED_WHILE_REPORTING = '''
import atexit
import gc

import fastpatch
import generated


def made(i):
    namespace = {"__name__": "made"}
    exec(f"def f{i}(x):\\n    return x + {i}\\n", namespace)
    f = namespace.pop(f"f{i}")
    fastpatch.instrument(f)
    f(1)
    return f


def hooked(i):
    g = generated.__dict__.pop(f"g{i}")  # spliced by the import hook: left in the lazy table
    g(1)
    return g


kept = [made(i) for i in range(200)] + [hooked(i) for i in range(200)]
batches = [[made(i), hooked(i)] for i in range(200, 1000)]


class Holder:
    pass


def release(phase, info):
    # Every collection frees a batch of definitions: a cycle made now, and
    # collected now, is all that holds it.
    if phase == "start" and batches:
        holder = Holder()
        holder.cycle, holder.functions = holder, batches.pop()


gc.callbacks.append(release)
gc.set_threshold(1, 1, 1)
atexit.register(lambda: print("batches left when the report is built:", len(batches)))  # runs before run's
'''


def test_the_report_at_exit_is_complete_when_the_collector_frees_definitions_while_it_is_built(tmp_path):
    (tmp_path / "main.py").write_text(FREED_WHILE_REPORTING)
    (tmp_path / "generated.py").write_text("".join(f"def g{i}(x):\n    return x - {i}\n" for i in range(1000)))
    out, err = _finished(_fastpatch("run", "-o", "out.json", "main.py", cwd=tmp_path))
    assert err == "fastpatch: report written to out.json\n"
    left = int(out.split(":")[1])
    assert left > 0  # the collector was still freeing definitions while the report was built
    report = load(str(tmp_path / "out.json"))
    calls = {(fn["module"], fn["qualname"]): fn["calls"] for fn in report["functions"]}
    for i in range(200):
        assert calls.pop(("made", f"f{i}")) == 1
        assert calls.pop(("generated", f"g{i}")) == 1
    # Of the definitions freed at exit, those freed before the report began are left out, and
    # those it read before they were freed are counted exactly.
    freed = {key: n for key, n in calls.items() if key[0] in ("made", "generated")}
    assert set(freed.values()) <= {1}
    assert len(freed) <= 2 * left


WORK = "def produce(i):\n    return i\n\n\ndef consume(i):\n    return -i\n"
PRODUCER = "import work\n\nfor i in range(5):\n    work.produce(i)\n"
CONSUMER = (
    "import sys\nimport work\n\n"
    "print('activated', flush=True)\n"
    "sys.stdin.readline()  # until the test says so\n"
    "for i in range(7):\n    work.consume(i)\n"
)
# What fastpatch.pth runs at startup (an editable install has no .pth: the
# program calls it; with the .pth installed this second call does nothing).
ACTIVATED = (
    "import _fastpatch_startup; _fastpatch_startup.start(); import runpy; runpy.run_path({!r}, run_name='__main__')"
)


@pytest.fixture
def pipeline(tmp_path):
    for name, text in (("work.py", WORK), ("prod.py", PRODUCER), ("cons.py", CONSUMER)):
        (tmp_path / name).write_text(text)
    return tmp_path


def _activated(script, cwd, **popen):
    env = {"FASTPATCH_INCLUDE": "work", "FASTPATCH_OUTPUT": "prof.json"}
    return _fastpatch("python", "-c", ACTIVATED.format(script), cwd=cwd, env=env, **popen)


def test_unrelated_processes_given_one_output_file_keep_each_others_reports(pipeline):
    consumer = _activated("cons.py", pipeline, stdin=subprocess.PIPE)
    assert consumer.stdout.readline() == "activated\n"
    # Another process, started after the consumer, writes prof.json while the consumer runs.
    producer = _activated("prod.py", pipeline)
    assert _finished(producer) == ("", "")
    _, err = _finished(consumer)  # its stdin closed: it goes on, and exits
    assert err == (
        f"fastpatch: prof.json was written by another process while this one ran; "
        f"report written to prof.{consumer.pid}.json\n"
    )
    assert sorted(f for f in os.listdir(pipeline) if f.endswith(".json")) == sorted(
        ["prof.json", f"prof.{consumer.pid}.json"])
    first, second = (load(str(pipeline / name)) for name in ("prof.json", f"prof.{consumer.pid}.json"))
    assert (first["pid"], second["pid"]) == (producer.pid, consumer.pid)
    merged = merge([first, second])
    assert {fn["name"]: fn["calls"] for fn in merged["functions"]} == {"work.produce": 5, "work.consume": 7}


def test_a_report_left_by_an_earlier_run_is_replaced(pipeline):
    earlier = build([synthetic([10], module="work", qualname="produce")])
    earlier["pid"] = 1
    output.write(str(pipeline / "prof.json"), report=earlier)
    producer = _activated("prod.py", pipeline)
    assert _finished(producer) == ("", "")
    assert sorted(f for f in os.listdir(pipeline) if f.endswith(".json")) == ["prof.json"]
    report = load(str(pipeline / "prof.json"))
    assert report["pid"] == producer.pid
    assert [(fn["name"], fn["calls"]) for fn in report["functions"]] == [("work.produce", 5)]


def test_report_output_replaces_a_file_written_there_while_it_reads(tmp_path, monkeypatch, capsys):
    files = _two_files(tmp_path)
    output = tmp_path / "all.json"
    real_load = schema.load

    def load_while_another_process_writes_the_output(path):
        output.write_text("written meanwhile")
        return real_load(path)

    monkeypatch.setattr(schema, "load", load_while_another_process_writes_the_output)
    assert report_main(files, output=str(output)) == 0
    monkeypatch.undo()
    assert capsys.readouterr() == ("", "")
    assert load(str(output))["functions"] == merge([load(f) for f in files])["functions"]
    assert sorted(os.listdir(tmp_path)) == ["a.json", "all.json", "b.json"]


def test_the_directory_lock_is_exclusive_and_a_write_never_waits_for_it_past_its_limit(tmp_path, monkeypatch,
                                                                                        capsys):
    pytest.importorskip("fcntl")
    held = output._lock_directory(str(tmp_path))
    assert held is not None
    monkeypatch.setattr(output, "_LOCK_WAIT", 0.0)
    try:
        assert output._lock_directory(str(tmp_path)) is None
        # Without the lock, the write goes on, and still keeps another process's report.
        template = str(tmp_path / "out.json")
        output.claim(template)
        (tmp_path / "out.json").write_text("another process's report")
        assert output.write(template, report=build([synthetic([3])])) == str(
            tmp_path / f"out.{os.getpid()}.json")
    finally:
        os.close(held)
    assert capsys.readouterr().err == (
        f"fastpatch: {output.shown(str(tmp_path / 'out.json'))} was written by another process while this "
        f"one ran; report written to {output.shown(str(tmp_path / f'out.{os.getpid()}.json'))}\n"
    )
    assert (tmp_path / "out.json").read_text() == "another process's report"
    relocked = output._lock_directory(str(tmp_path))
    assert relocked is not None
    os.close(relocked)


# --------------------------------------------------------------------------
# The seams: one registry entry per format, exporters at exit
# --------------------------------------------------------------------------


def _csv(report, sort):
    return "".join(f"{s.name},{s.calls},{s.total_ns}\n" for s in report.functions)


@pytest.fixture
def csv_format(monkeypatch):
    """A throwaway format, registered as a new format would be (and taken out after the test)."""
    monkeypatch.setattr(formats, "_REGISTRY", dict(formats._REGISTRY))
    return formats.register(formats.Format("csv", (".csv",), False, _csv))


def test_a_format_registered_once_is_an_f_choice_chosen_by_extension_and_printed_by_report(tmp_path, csv_format,
                                                                                            capsys):
    from fastpatch._cli import main

    with pytest.raises(SystemExit):
        main(["report", "-h"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "-f {text,json,pstats,csv}" in help_text
    assert "(default: from the extension of -o: .json, .pstats/.prof, .csv, else text)" in help_text
    with pytest.raises(SystemExit):
        main(["run", "-h"])
    assert "[-f text|json|pstats|csv]" in capsys.readouterr().out

    files = _two_files(tmp_path)
    assert main(["report", "-o", str(tmp_path / "all.csv"), *files]) == 0
    assert (tmp_path / "all.csv").read_text() == "app.a,2,300\napp.b,1,300\napp.shared,3,21\n"
    assert main(["report", "-f", "csv", *files]) == 0
    assert capsys.readouterr() == ("app.a,2,300\napp.b,1,300\napp.shared,3,21\n", "")
    assert format_for(str(tmp_path / "X.CSV")) == "csv"


def test_a_registered_binary_format_needs_an_output_file(tmp_path, csv_format, capsys):
    formats.register(formats.Format("blob", (".blob",), True, lambda report, sort: b"\0" * len(report.functions)))
    files = _two_files(tmp_path)
    assert report_main(files, fmt="blob") == 2
    assert capsys.readouterr() == ("", "fastpatch: error: blob is a binary format: give an output file with -o\n")
    assert report_main(files, output=str(tmp_path / "all.blob")) == 0
    assert (tmp_path / "all.blob").read_bytes() == b"\0\0\0"


REGISTERS_CSV_THEN_RUNS = '''
import sys

from fastpatch import _activate
from fastpatch._reports import formats


def csv(report, sort):
    return "".join(f"{s.name},{s.calls}\\n" for s in report.functions)


formats.register(formats.Format("csv", (".csv",), False, csv))
_activate.activate(["work"], output=sys.argv[1])
import work

for i in range(3):
    work.produce(i)
work.consume(1)
'''


def test_a_registered_format_is_written_at_exit_by_its_extension(tmp_path):
    (tmp_path / "work.py").write_text(WORK)
    out, err = _finished(_fastpatch("python", "-c", REGISTERS_CSV_THEN_RUNS, "out.csv", cwd=tmp_path))
    assert (out, err) == ("", "")
    assert (tmp_path / "out.csv").read_text() == "work.consume,1\nwork.produce,3\n"


EXPORTERS_AT_EXIT = '''
import sys

from fastpatch import _activate
from fastpatch._reports.exporter import Exporter


class Broken(Exporter):
    what = "the broken sink"

    def export(self, stats, final):
        raise RuntimeError("disk on fire")

    def close(self):
        print("broken closed", flush=True)


class Seen(Exporter):
    def export(self, stats, final):
        print("seen", final, sorted((s.name, s.calls) for s in stats), flush=True)

    def close(self):
        print("seen closed", flush=True)


activation = _activate.activate(["work"], output=sys.argv[1])
activation.exporters += [Broken(), Seen()]
import work

work.produce(1)
work.produce(2)
'''


def test_exporters_run_at_exit_and_one_that_raises_costs_one_line_and_not_the_others(tmp_path):
    (tmp_path / "work.py").write_text(WORK)
    out, err = _finished(_fastpatch("python", "-c", EXPORTERS_AT_EXIT, "out.json", cwd=tmp_path))
    assert err == "fastpatch: could not write the broken sink: disk on fire\n"
    assert out == "seen True [('work.produce', 2)]\nbroken closed\nseen closed\n"
    report = load(str(tmp_path / "out.json"))
    assert [(fn["name"], fn["calls"]) for fn in report["functions"]] == [("work.produce", 2)]


def test_the_table_on_stderr_at_exit_loads_no_format_no_output_code_and_no_other_stdlib_module(tmp_path):
    (tmp_path / "work.py").write_text(WORK)
    code = (
        "import atexit, sys\n"
        "from fastpatch import _activate\n"
        "atexit.register(lambda: print(sorted(set(sys.modules) - before)))  # after fastpatch's: atexit is LIFO\n"
        "_activate.activate(['work'], root=True)\n"
        "import work\n"
        "work.produce(1)\n"
        "before = set(sys.modules)\n"
    )
    out, err = _finished(_fastpatch("python", "-c", code, cwd=tmp_path))
    assert err.splitlines()[1].split()[0::8] == ["1", "work.produce"]
    loaded = set(json.loads(out.replace("'", '"')))
    ours = {m for m in loaded if m.startswith("fastpatch")}
    assert ours == {"fastpatch._reports", "fastpatch._stats", *(f"fastpatch._reports.{stage}" for stage in (
        "definitions", "exporter", "table"))}
    assert {m.split(".")[0].lstrip("_") for m in loaded - ours} <= {"math", "math_integer", "itertools"}


ONLY_SEEN_AT_EXIT = EXPORTERS_AT_EXIT.replace(
    "activation.exporters += [Broken(), Seen()]", "activation.exporters.append(Seen())"
)


def test_undoing_the_activation_closes_its_exporters_without_an_export_and_nothing_is_written_at_exit(tmp_path):
    (tmp_path / "work.py").write_text(WORK)
    code = ONLY_SEEN_AT_EXIT + "_activate.deactivate()\nprint('undone', flush=True)\n"
    out, err = _finished(_fastpatch("python", "-c", code, "out.json", cwd=tmp_path))
    assert (out, err) == ("seen closed\nundone\n", "")
    assert not (tmp_path / "out.json").exists()


def test_a_report_that_cannot_be_written_at_exit_costs_one_line_and_the_other_exporters_still_run(tmp_path):
    (tmp_path / "work.py").write_text(WORK)
    (tmp_path / "gone").mkdir()
    code = ONLY_SEEN_AT_EXIT + "import os\nos.rmdir('gone')  # the report's directory, checked when the run began\n"
    target = tmp_path / "gone" / "out.json"
    out, err = _finished(_fastpatch("python", "-c", code, str(target), cwd=tmp_path))
    assert out == "seen True [('work.produce', 2)]\nseen closed\n"
    assert err == (
        f"fastpatch: could not write the report: cannot write the report to {target}: {os.strerror(errno.ENOENT)}\n"
    )
