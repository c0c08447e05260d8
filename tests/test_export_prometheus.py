"""The Prometheus collector and the ``export prometheus`` sidecar: real
scrapes over HTTP on 127.0.0.1 of directories written by real instrumented
processes, parsed with prometheus_client's own parser; exact bucket bounds
and counts; beside prometheus_client's MultiProcessCollector; damaged files."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import urllib.request

import pytest

pytest.importorskip("prometheus_client",
                    reason="the Prometheus exporter needs prometheus_client (fastpatch[prometheus])")

from prometheus_client import CollectorRegistry, start_http_server  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

import telemetry_files as tf  # noqa: E402
from fastpatch import _stats  # noqa: E402
from fastpatch.export import _files  # noqa: E402
from fastpatch.export.prometheus import FastpatchCollector, bucket_edges  # noqa: E402
from live_telemetry import CHILD_PROLOGUE, wait_until  # noqa: E402

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the writer's tests read /proc")

DURATION = "fastpatch_function_duration_seconds"
_HELP_BAD = (b"Files of the telemetry directory skipped as damaged or foreign (each named once in a warning).")

PROGRAM = CHILD_PROLOGUE + """
def h():
    yield 1

for func in (f, g, h):
    fastpatch.instrument(func)

def sample(func, n):
    fastpatch.instrument(func, sample=n)
"""


def _run(directory: str, body: str, *children: str) -> None:
    """Run ``body`` in a process publishing to ``directory``, and each of
    ``children`` in a process of its own while the first one lives: one run
    of the service (a process started after the others ended would start a
    new run, from zero)."""
    codes = [PROGRAM + f"fastpatch.export.start({directory!r}, interval=0.02)\n" + textwrap.dedent(b)
             for b in (body, *children)]
    warning = tf.not_ram_backed_warning(directory)
    parent = codes[0] + textwrap.dedent(f"""
        import subprocess
        for code in {codes[1:]!r}:
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
            assert (done.returncode, done.stderr) == (0, {warning!r}), done.stderr
    """)
    done = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True, timeout=300)
    assert (done.returncode, done.stderr) == (0, warning)


def _scrape(url: str) -> dict:
    """{family name: {(sample name, labels as a sorted tuple): value}} of one real GET."""
    with urllib.request.urlopen(url, timeout=60) as response:
        text = response.read().decode()
    return {
        f.name: {(s.name, tuple(sorted(s.labels.items()))): s.value for s in f.samples}
        for f in text_string_to_metric_families(text)
    }


def _scrape_collector(collector: FastpatchCollector) -> dict:
    registry = CollectorRegistry()
    registry.register(collector)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        return _scrape(f"http://127.0.0.1:{server.server_port}/metrics")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(60)


def _expected_histogram(name: str, hist, total_ns: int, edges) -> dict:
    """The samples of one function's histogram, computed from fastpatch's bucket bounds."""
    samples = {}
    for edge in edges:
        below = sum(c for i, c in enumerate(hist) if _stats.bucket_bounds(i)[1] <= edge)
        samples[(f"{DURATION}_bucket", (("code_function_name", name), ("le", repr((edge - 1) / 1e9))))] = below
    samples[(f"{DURATION}_bucket", (("code_function_name", name), ("le", "+Inf")))] = sum(hist)
    samples[(f"{DURATION}_count", (("code_function_name", name),))] = sum(hist)
    samples[(f"{DURATION}_sum", (("code_function_name", name),))] = total_ns / 1e9
    return samples


def _only(samples: dict, name: str) -> dict:
    return {k: v for k, v in samples.items() if ("code_function_name", name) in k[1]}


def _merged_by_name(directory: str) -> dict:
    """name -> (calls, errors, histogram, total_ns) summed over the reader's records."""
    out: dict = {}
    for p in _files.read_directory(directory).processes:
        for s in p.stats():
            calls, errors, hist, total = out.get(s.name, (0, 0, [0] * _stats.HIST_BUCKETS, 0))
            out[s.name] = (calls + s.calls, errors + s.errors, [a + b for a, b in zip(hist, s.histogram)],
                           total + s.total_ns)
    return out


def test_named_bucket_choices_export_fastpatchs_edges_minus_one_ns():
    assert FastpatchCollector("/nonexistent").bounds[:3] == (2.55e-07, 1.023e-06, 4.095e-06)
    assert FastpatchCollector("/nonexistent").bounds[-1] == 1099.511627775
    assert len(FastpatchCollector("/nonexistent").bounds) == 17
    assert bucket_edges("octave") == [1 << k for k in range(5, 42)]
    assert bucket_edges("all") == [_stats.bucket_bounds(i)[1] for i in range(_stats.HIST_BUCKETS - 1)]
    assert len(bucket_edges("all")) == 230


def test_bounds_in_seconds_snap_to_the_nearest_edge_and_count_once():
    # prometheus_client's default buckets, in fastpatch's edges
    collector = FastpatchCollector("/nonexistent", buckets=[0.005, 0.01, 0.025, 0.05, 0.0099])
    assert collector.bounds == (0.004718591, 0.009437183, 0.023855103, 0.047710207)
    assert bucket_edges([1e-9]) == [4]


@pytest.mark.parametrize(("buckets", "message"), [
    ("fine", "buckets='fine': choose 'quarter', 'octave', 'all' or a list of seconds"),
    ([], "buckets=[]: give at least one bound in seconds"),
    ([0.1, -1], "buckets: -1 is not a positive number of seconds"),
    ([True], "buckets: True is not a positive number of seconds"),
    ([float("nan")], "buckets: nan is not a positive number of seconds"),
    ([3600], "buckets: 3600 s is beyond fastpatch's histogram, whose last edge is 2199.02 s"),
    (7, "buckets=7: choose 'quarter', 'octave', 'all' or a list of seconds"),
])
def test_a_bad_bucket_choice_is_a_value_error_naming_it(buckets, message):
    with pytest.raises(ValueError) as raised:
        FastpatchCollector("/nonexistent", buckets=buckets)
    assert str(raised.value) == message


def _file_with_histogram(hist, *, calls: int, total_ns: int, firstlineno: int = 10, qualname: bytes = b"f",
                         pid: int = 4242) -> bytes:
    fields = _files.RECORD.pack(2, _files.KIND_RECORD, 0, firstlineno, 0, 0, 1, 0, calls, sum(hist), 1, sum(hist),
                                total_ns, 250, 300, )
    record = (fields + _files.HISTOGRAM.pack(*hist)).ljust(tf.SLOT, b"\0")
    return tf.header(n_slots=2, pid=pid, state=2) + tf.strings_slot(b"app\0" + qualname + b"\0app.py\0") + record


def test_each_le_holds_exactly_the_calls_of_the_buckets_below_its_edge(tmp_path):
    hist = [0] * _stats.HIST_BUCKETS
    below_256 = next(i for i in range(_stats.HIST_BUCKETS) if _stats.bucket_bounds(i)[1] == 256)
    hist[below_256] = 3  # [252, 256) ns: inside le = 255 ns
    hist[below_256 + 1] = 5  # [256, 272) ns: outside it, inside le = 1023 ns
    hist[_stats.HIST_BUCKETS - 1] = 2  # beyond 2**41 ns: only in +Inf
    (tmp_path / "fastpatch-4242-777.fpt").write_bytes(_file_with_histogram(hist, calls=11, total_ns=123_456_789))
    samples = _scrape_collector(FastpatchCollector(str(tmp_path)))[DURATION]
    assert samples[(f"{DURATION}_bucket", (("code_function_name", "app.f"), ("le", "2.55e-07")))] == 3
    assert samples[(f"{DURATION}_bucket", (("code_function_name", "app.f"), ("le", "1.023e-06")))] == 8
    assert samples[(f"{DURATION}_bucket", (("code_function_name", "app.f"), ("le", "1099.511627775")))] == 8
    assert samples[(f"{DURATION}_bucket", (("code_function_name", "app.f"), ("le", "+Inf")))] == 10
    assert samples[(f"{DURATION}_count", (("code_function_name", "app.f"),))] == 10
    assert samples[(f"{DURATION}_sum", (("code_function_name", "app.f"),))] == 0.123456789
    assert samples == _expected_histogram("app.f", hist, 123_456_789, bucket_edges("quarter"))


def test_two_definitions_of_one_name_in_two_processes_are_one_series(tmp_path):
    hist = [0] * _stats.HIST_BUCKETS
    hist[50] = 4
    (tmp_path / "fastpatch-1-1.fpt").write_bytes(_file_with_histogram(hist, calls=4, total_ns=4000, pid=1))
    (tmp_path / "fastpatch-2-2.fpt").write_bytes(_file_with_histogram(hist, calls=5, total_ns=4000, pid=2,
                                                                      firstlineno=30))
    families = _scrape_collector(FastpatchCollector(str(tmp_path), buckets="all"))
    assert families["fastpatch_function_calls"] == {("fastpatch_function_calls_total",
                                                     (("code_function_name", "app.f"),)): 9}
    assert families["fastpatch_function_errors"] == {("fastpatch_function_errors_total",
                                                      (("code_function_name", "app.f"),)): 2}
    doubled = [2 * c for c in hist]
    assert families[DURATION] == _expected_histogram("app.f", doubled, 8000, bucket_edges("all"))
    assert families["fastpatch_telemetry_processes"] == {
        ("fastpatch_telemetry_processes", (("state", s),)): n
        for s, n in (("live", 0), ("exited", 0), ("stale", 0), ("archive", 1))
    }


@pytest.mark.parametrize("sweep", [True, False])
def test_a_scrape_folds_dead_processes_into_the_archive_unless_told_not_to_and_counts_the_same(tmp_path, sweep):
    (tmp_path / "fastpatch-1-1.fpt").write_bytes(tf.valid_file(calls=7, pid=1, state=2))
    (tmp_path / "fastpatch-2-2.fpt").write_bytes(tf.valid_file(calls=5, pid=2, state=1))  # died without a stop
    collector = FastpatchCollector(str(tmp_path), sweep=sweep)
    first, second = _scrape_collector(collector), _scrape_collector(collector)
    key = ("fastpatch_function_calls_total", (("code_function_name", "app.f"),))
    assert (first["fastpatch_function_calls"], second["fastpatch_function_calls"]) == ({key: 12}, {key: 12})
    states = {k[1][0][1]: v for k, v in second["fastpatch_telemetry_processes"].items()}
    if sweep:
        assert states == {"live": 0, "exited": 0, "stale": 0, "archive": 1}
        assert sorted(n for n in os.listdir(tmp_path) if n.endswith(".fpt")) == ["archive.fpt"]
    else:
        assert states == {"live": 0, "exited": 1, "stale": 1, "archive": 0}
        assert sorted(os.listdir(tmp_path)) == ["fastpatch-1-1.fpt", "fastpatch-2-2.fpt"]


def test_real_processes_exact_and_sampled_are_scraped_over_http_with_exact_values(ram_path):
    d = str(ram_path / "svc")
    _run(d, """
        for i in range(1000):
            f(i)
        call_range(g, 3)
    """, """
        for i in range(500):
            f(i)
    """, """
        _ext._testing_seed_sampler(20261207)
        sample(f, 4)
        for i in range(4000):
            f(i)
    """)
    processes = _files.read_directory(d).processes
    assert sorted((s.calls, s.sample, s.timed == s.completed) for p in processes for s in p.stats()
                  if s.qualname == "f") == [(500, 1, True), (1000, 1, True), (4000, 4, False)]
    sampled = next(s for p in processes for s in p.stats() if s.sample == 4)
    assert sum(sampled.histogram) == 4 * sampled.timed  # each timed call counts 4 times
    families = _scrape_collector(FastpatchCollector(d))
    expected = _merged_by_name(d)
    calls, errors, hist, total = expected["__main__.f"]
    assert (calls, errors) == (5500, 0)
    assert families["fastpatch_function_calls"] == {
        ("fastpatch_function_calls_total", (("code_function_name", "__main__.f"),)): 5500,
        ("fastpatch_function_calls_total", (("code_function_name", "__main__.g"),)): 3,
    }
    assert families["fastpatch_function_errors"] == {
        ("fastpatch_function_errors_total", (("code_function_name", "__main__.f"),)): 0,
        ("fastpatch_function_errors_total", (("code_function_name", "__main__.g"),)): 2,
    }
    f_samples = _only(families[DURATION], "__main__.f")
    assert f_samples == _expected_histogram("__main__.f", hist, total, bucket_edges("quarter"))
    assert f_samples[(f"{DURATION}_count", (("code_function_name", "__main__.f"),))] == 1500 + 4 * sampled.timed
    g_hist = expected["__main__.g"][2]
    assert sum(g_hist) == 3
    assert _only(families[DURATION], "__main__.g") == _expected_histogram("__main__.g", g_hist,
                                                                          expected["__main__.g"][3],
                                                                          bucket_edges("quarter"))
    assert families["fastpatch_telemetry_bad_files"] == {("fastpatch_telemetry_bad_files", ()): 0}


def test_active_calls_count_live_processes_only_and_processes_are_counted_by_state(tmp_path):
    d = str(tmp_path / "svc")
    code = PROGRAM + f"fastpatch.export.start({d!r}, interval=0.02)\n" + textwrap.dedent("""
        suspended = h()
        next(suspended)  # started, not ended
        print("ready", flush=True)
        sys.stdin.readline()
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "ready\n"
        wait_until(lambda: [(s.calls, s.completed) for p in _files.read_directory(d).processes
                             for s in p.stats()] == [(1, 0)], "the suspended generator's call")
        live = _scrape_collector(FastpatchCollector(d))
    finally:
        child.kill()
        child.wait()
    dead = _scrape_collector(FastpatchCollector(d))
    key = ("fastpatch_function_active_calls", (("code_function_name", "__main__.h"),))
    assert (live["fastpatch_function_active_calls"], dead["fastpatch_function_active_calls"]) == ({key: 1}, {key: 0})
    states = {k[1][0][1]: v for k, v in live["fastpatch_telemetry_processes"].items()}
    assert states == {"live": 1, "exited": 0, "stale": 0, "archive": 0}
    states = {k[1][0][1]: v for k, v in dead["fastpatch_telemetry_processes"].items()}
    assert states == {"live": 0, "exited": 0, "stale": 0, "archive": 1}  # the killed process, swept


def test_damaged_and_foreign_files_are_counted_and_never_fail_a_scrape(tmp_path):
    (tmp_path / "fastpatch-1-1.fpt").write_bytes(tf.valid_file(calls=7, pid=1))
    (tmp_path / "fastpatch-2-2.fpt").write_bytes(b"not ours" * 1000)
    (tmp_path / "fastpatch-3-3.fpt").write_bytes(tf.valid_file(calls=7, pid=3)[:5000])
    (tmp_path / "notes.txt").write_text("not a telemetry file name: never read")
    collector = FastpatchCollector(str(tmp_path))
    with pytest.warns(RuntimeWarning) as warned:
        families = _scrape_collector(collector)
    assert sorted(str(w.message) for w in warned) == [
        "fastpatch: skipped telemetry file fastpatch-2-2.fpt: not a fastpatch telemetry file (wrong magic)",
        "fastpatch: skipped telemetry file fastpatch-3-3.fpt: 2 slots announced, the file holds 0",
    ]
    assert families["fastpatch_telemetry_bad_files"] == {("fastpatch_telemetry_bad_files", ()): 2}
    assert families["fastpatch_function_calls"] == {("fastpatch_function_calls_total",
                                                     (("code_function_name", "app.f"),)): 7}
    # the damaged files stay where they were; the good one is folded into the archive
    assert sorted(os.listdir(tmp_path)) == ["archive.fpt", "archive.lock", "fastpatch-2-2.fpt", "fastpatch-3-3.fpt",
                                            "notes.txt"]


def test_a_missing_directory_exports_every_family_with_no_function(tmp_path):
    families = _scrape_collector(FastpatchCollector(str(tmp_path / "not-yet")))
    assert {name: len(samples) for name, samples in families.items()} == {
        "fastpatch_function_calls": 0, "fastpatch_function_errors": 0, DURATION: 0,
        "fastpatch_function_active_calls": 0, "fastpatch_telemetry_processes": 4, "fastpatch_telemetry_bad_files": 1,
    }


def test_beside_multiprocess_collector_one_registry_serves_both(tmp_path, ram_path):
    from prometheus_client.multiprocess import MultiProcessCollector

    prom_dir = tmp_path / "prom"
    prom_dir.mkdir()
    worker = textwrap.dedent("""
        from prometheus_client import Counter
        Counter("app_requests", "Requests served", ["path"]).labels("/a").inc(3)
    """)
    for _ in range(2):
        subprocess.run([sys.executable, "-c", worker], env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(prom_dir)},
                       check=True, timeout=120)
    d = str(ram_path / "svc")
    _run(d, """
        for i in range(42):
            f(i)
    """)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(prom_dir))
    registry.register(FastpatchCollector(d))
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        families = _scrape(f"http://127.0.0.1:{server.server_port}/metrics")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(60)
    assert families["app_requests"] == {("app_requests_total", (("path", "/a"),)): 6}
    assert families["fastpatch_function_calls"] == {("fastpatch_function_calls_total",
                                                     (("code_function_name", "__main__.f"),)): 42}


def _sidecar(*args: str, env=None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "fastpatch", "export", "prometheus", *args, "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_export_prometheus_sidecar_serves_the_directory_on_loopback(tmp_path):
    d = str(tmp_path / "svc")
    code = PROGRAM + f"fastpatch.export.start({d!r}, interval=0.02)\n" + textwrap.dedent("""
        for i in range(10):
            f(i)
        print("ready", flush=True)
        sys.stdin.readline()
        for i in range(5):
            f(i)
        print("ready", flush=True)
        sys.stdin.readline()
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    sidecar = None
    try:
        assert child.stdout.readline() == "ready\n"
        with open(os.path.join(d, "fastpatch-9-9.fpt"), "wb") as fh:
            fh.write(b"damaged" * 1000)
        sidecar = _sidecar(d)
        line = sidecar.stderr.readline()
        prefix = "fastpatch: serving http://127.0.0.1:"
        assert line.startswith(prefix) and line.endswith(f"/metrics for {d}\n")
        url = line[len("fastpatch: serving "):-len(f" for {d}\n")]
        key = ("fastpatch_function_calls_total", (("code_function_name", "__main__.f"),))
        scrapes = []
        wait_until(lambda: scrapes.append(_scrape(url)) or scrapes[-1]["fastpatch_function_calls"] == {key: 10},
                    "10 calls")
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline() == "ready\n"
        wait_until(lambda: scrapes.append(_scrape(url)) or scrapes[-1]["fastpatch_function_calls"] == {key: 15},
                    "15 calls")
    finally:
        child.kill()
        child.wait()
        if sidecar is not None:
            sidecar.terminate()
            sidecar.wait(60)
    assert sidecar.stderr.read() == ("fastpatch: skipped telemetry file fastpatch-9-9.fpt: not a fastpatch telemetry "
                                     "file (wrong magic)\n")
    assert scrapes[0]["fastpatch_telemetry_bad_files"] == {("fastpatch_telemetry_bad_files", ()): 1}
    assert set(scrapes[0]) == {"fastpatch_function_calls", "fastpatch_function_errors", DURATION,
                               "fastpatch_function_active_calls", "fastpatch_telemetry_processes",
                               "fastpatch_telemetry_bad_files"}


def test_export_prometheus_serves_a_directory_that_does_not_exist_yet(tmp_path):
    sidecar = _sidecar(str(tmp_path / "later"))
    try:
        line = sidecar.stderr.readline()
        url = line[len("fastpatch: serving "):line.index(" for ")]
        families = _scrape(url)
    finally:
        sidecar.terminate()
        sidecar.wait(60)
    assert families["fastpatch_function_calls"] == {}


def test_export_prometheus_refuses_an_unsafe_directory_in_one_line(tmp_path):
    d = tmp_path / "svc"
    d.mkdir()
    d.chmod(0o770)
    done = subprocess.run([sys.executable, "-m", "fastpatch", "export", "prometheus", str(d), "--port", "0"],
                          capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout, done.stderr) == (
        2, "", f"fastpatch: error: telemetry directory {d} is writable by group or others (mode 0770)\n")


def test_export_of_an_unknown_exporter_is_one_error_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "fastpatch", "export", "graphite"], capture_output=True, text=True,
                          timeout=120)
    assert (done.returncode, done.stdout, done.stderr) == (
        2, "", "python -m fastpatch export: error: unknown exporter 'graphite': choose prometheus\n")


def test_export_prometheus_without_dir_serves_fastpatch_services_directory_or_lists_the_services(tmp_path):
    (tmp_path / "fastpatch" / "shop").mkdir(parents=True, mode=0o700)
    (tmp_path / "fastpatch" / "api").mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if k != "FASTPATCH_SERVICE"}
    env["XDG_RUNTIME_DIR"] = str(tmp_path)
    done = subprocess.run([sys.executable, "-m", "fastpatch", "export", "prometheus", "--port", "0"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stderr) == (
        2, f"fastpatch: error: name a telemetry directory or set FASTPATCH_SERVICE; services in "
           f"{tmp_path / 'fastpatch'}: api, shop\n")
    sidecar = _sidecar(env={**env, "FASTPATCH_SERVICE": "shop"})
    try:
        line = sidecar.stderr.readline()
    finally:
        sidecar.terminate()
        sidecar.wait(60)
    assert line.endswith(f"/metrics for {tmp_path / 'fastpatch' / 'shop'}\n")


def test_export_prometheus_without_prometheus_client_names_the_extra_in_one_line(tmp_path):
    code = ("import sys; sys.modules['prometheus_client'] = None\n"
            "from fastpatch._cli import main\n"
            f"sys.exit(main(['export', 'prometheus', {str(tmp_path)!r}]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout, done.stderr) == (
        2, "", "python -m fastpatch export prometheus: error: needs prometheus_client: "
               "pip install 'fastpatch[prometheus]'\n")


def _awkward_archive(tmp_path) -> str:
    """A directory holding an archive of three functions whose names need
    escaping and whose counts need an exponent, or overflow 64 bits when summed."""
    hist_big = [0] * _stats.HIST_BUCKETS
    hist_big[80] = hist_big[81] = 2**63  # one quarter bucket: 2**64, beyond a uint64_t
    hist_small = [0] * _stats.HIST_BUCKETS
    hist_small[3], hist_small[120], hist_small[230] = 5, 1_000_002, 7
    stats = [
        _stats.Stats(name='app"x.C.f', module='app"x', qualname="C.f", calls=10**16 + 1, errors=3, total_ns=2**64 - 1,
                     min_ns=100, max_ns=10**12, completed=2**64 - 1, histogram=tuple(hist_big), filename="a.py",
                     firstlineno=3),
        _stats.Stats(name="app\\y.g\nh", module="app\\y", qualname="g\nh", calls=1_000_020, errors=0,
                     total_ns=12_345_678_901, min_ns=7, max_ns=9, completed=sum(hist_small),
                     histogram=tuple(hist_small), filename="b.py", firstlineno=4),
        _stats.Stats(name="app.k", module="app", qualname="k", calls=2, errors=0, total_ns=0, min_ns=0, max_ns=0,
                     completed=0, histogram=(0,) * _stats.HIST_BUCKETS, filename="c.py", firstlineno=5),
    ]
    d = tmp_path / "svc"
    d.mkdir(mode=0o700)
    (d / _files.ARCHIVE_NAME).write_bytes(_files.encode_file(stats, state=3, created_unix_ns=1, service="svc"))
    return str(d)


@pytest.mark.parametrize("buckets", ["quarter", "octave", "all", [1e-6, 0.5]])
def test_exposition_is_byte_for_byte_what_generate_latest_writes_in_both_text_formats(tmp_path, buckets):
    from prometheus_client import generate_latest
    from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

    collector = FastpatchCollector(_awkward_archive(tmp_path), buckets=buckets)
    registry = CollectorRegistry()
    registry.register(collector)
    text = collector.exposition()
    assert text == generate_latest(registry)
    assert collector.exposition(openmetrics=True) == generate_openmetrics(registry)
    assert 'code_function_name="app\\\\y.g\\nh"' in text.decode()
    counts = {s.labels["code_function_name"]: s.value for f in text_string_to_metric_families(text.decode())
              for s in f.samples if s.name == f"{DURATION}_count"}
    assert counts == {'app"x.C.f': 2.0**64, "app\\y.g\nh": 1_000_014.0, "app.k": 0.0}


def test_the_reader_folds_histograms_into_cuts_exactly_beyond_64_bits(tmp_path):
    d = _awkward_archive(tmp_path)
    folded = _files.read_file(os.path.join(d, _files.ARCHIVE_NAME), cuts=(81, 100, _stats.HIST_BUCKETS)).folded
    assert [(row[0], row[-1]) for row in folded] == [
        ('app"x.C.f', (2**63, 2**63, 0)), ("app\\y.g\nh", (5, 0, 1_000_009)), ("app.k", (0, 0, 0))]
    view = _files.read_file(os.path.join(d, _files.ARCHIVE_NAME))
    assert view.folded is None and sum(view.stats()[0].histogram) == 2**64
    with pytest.raises(ValueError, match="was read with its histograms folded"):
        _files.read_file(os.path.join(d, _files.ARCHIVE_NAME), cuts=(_stats.HIST_BUCKETS,)).stats()


@pytest.mark.parametrize("cuts", [(), (5, 3, 231), (0, 231), (5, 230), (5, 232)])
def test_decode_records_refuses_cuts_that_do_not_increase_to_the_last_bucket(cuts):
    from fastpatch import _ext

    with pytest.raises(ValueError, match="^decode_records: cuts must increase from above 0 to 231$"):
        _ext.decode_records(b"", _files.SLOT_SIZE, cuts, False)


def test_export_prometheus_sidecar_serves_what_prometheus_client_would_in_each_format_and_encoding(tmp_path):
    import gzip

    d = _awkward_archive(tmp_path)
    collector = FastpatchCollector(d)
    sidecar = _sidecar(d)
    try:
        line = sidecar.stderr.readline()
        url = line[len("fastpatch: serving "):-len(f" for {d}\n")]
        openmetrics = "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3"
        got = {}
        bad_only = "?name[]=fastpatch_telemetry_bad_files"
        for accept, encoding, query in [("", "", ""), (openmetrics, "gzip", ""), ("", "", bad_only)]:
            request = urllib.request.Request(url + query, headers={"Accept": accept, "Accept-Encoding": encoding})
            with urllib.request.urlopen(request, timeout=60) as response:
                body = response.read()
                got[accept, encoding, query] = (response.headers["Content-Type"],
                                                response.headers["Content-Encoding"],
                                                gzip.decompress(body) if encoding else body)
    finally:
        sidecar.terminate()
        sidecar.communicate(timeout=60)  # and closes its pipes
    assert got[("", "", "")] == ("text/plain; version=0.0.4; charset=utf-8", None, collector.exposition())
    assert got[(openmetrics, "gzip", "")] == ("application/openmetrics-text; version=1.0.0; charset=utf-8; "
                                              "escaping=underscores", "gzip", collector.exposition(openmetrics=True))
    assert got[("", "", "?name[]=fastpatch_telemetry_bad_files")][2] == (
        b"# HELP fastpatch_telemetry_bad_files " + _HELP_BAD
        + b"\n# TYPE fastpatch_telemetry_bad_files gauge\nfastpatch_telemetry_bad_files 0.0\n")
