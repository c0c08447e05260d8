"""``python -m fastpatch top`` against telemetry directories written by real
instrumented processes: the rates of an interval, batch tables, JSON lines,
sort keys and filter, the directory errors, damaged files, and the
interactive table in a real terminal (tmux)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest

from fastpatch import _top
from fastpatch.export import _files
from live_telemetry import wait_until

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the telemetry writer needs Linux")

# A service: fast() 300 calls, failing() 200 calls of which 50 raise, slow()
# 5 calls of 5 ms, blocked() running in a thread until stdin closes; then it
# waits for commands on stdin ("more": 100 fast() and 10 failing() calls
# of which 10 raise). It prints "ready" once its writer has published what it
# did (the file read back says so).
SERVICE = """
import os, sys, threading, time
import fastpatch, fastpatch.export
from fastpatch.export import _files

def fast(x):
    return x + 1

def failing(x):
    if x % 4 == 0:
        raise ValueError(x)
    return x

def slow():
    time.sleep(0.005)

def blocked(event):
    event.wait()

for f in (fast, failing, slow, blocked):
    fastpatch.instrument(f)
directory = sys.argv[1]
fastpatch.export.start(directory, interval=0.02)

def published(calls):
    # every call and every return: a return can reach the file a snapshot after its call
    views = [p for p in _files.read_directory(directory).processes if p.pid == os.getpid()]
    ended = {name: 0 if name == "blocked" else n for name, n in calls.items()}
    return bool(views) and {s.qualname: (s.calls, s.completed) for s in views[0].stats()} == \
        {name: (n, ended[name]) for name, n in calls.items()}

def wait_published(calls):
    deadline = time.monotonic() + 60
    while not published(calls):
        assert time.monotonic() < deadline, "the writer never published"
        time.sleep(0.01)  # the writer's thread publishes on its own: nothing to wait on

def failing_calls(n, every):
    for i in range(n):
        try:
            failing(i * 4 if i % every == 0 else 1)
        except ValueError:
            pass

release = threading.Event()
worker = threading.Thread(target=blocked, args=(release,))
worker.start()
for i in range(300):
    fast(i)
failing_calls(200, 4)
for _ in range(5):
    slow()
calls = {"fast": 300, "failing": 200, "slow": 5, "blocked": 1}
wait_published(calls)
print("ready", flush=True)
for line in sys.stdin:
    if line.strip() == "more":
        for i in range(100):
            fast(i)
        failing_calls(10, 1)
        calls["fast"] += 100
        calls["failing"] += 10
        wait_published(calls)
        print("ready", flush=True)
release.set()
worker.join()
"""


class Service:
    """A real instrumented process publishing to ``directory``; stopped at the end."""

    def __init__(self, directory: str, script: str) -> None:
        self.proc = subprocess.Popen([sys.executable, script, directory], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.pid = self.proc.pid
        self.ready()

    def ready(self) -> None:
        line = self.proc.stdout.readline()
        assert line == "ready\n", line + self.proc.stderr.read()

    def more(self) -> None:
        self.proc.stdin.write("more\n")
        self.proc.stdin.flush()
        self.ready()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(60)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(60)


@pytest.fixture
def services(tmp_path):
    script = tmp_path / "service.py"
    script.write_text(SERVICE)
    started = []

    def start(directory) -> Service:
        started.append(Service(str(directory), str(script)))
        return started[-1]

    yield start
    for s in started:
        s.kill()


def _top_cli(*args: str, env=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fastpatch", "top", *args], capture_output=True, text=True,
                          timeout=120, env=env)


def _table(text: str) -> list[list[str]]:
    """The rows of a batch table: cells split on blanks (FUNCTION last)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("%WALL"))
    rows = []
    for line in lines[start + 1:]:
        if not line.strip():
            break
        rows.append(line.split())
    return rows


# --------------------------------------------------------------------------
# The numbers of an interval (the Sampler that every mode shows)
# --------------------------------------------------------------------------


def test_an_intervals_rates_are_its_calls_over_the_writers_heartbeats_and_lifetime_counts_are_exact(
        tmp_path, services):
    d = tmp_path / "svc"
    service = services(d)
    sampler = _top.Sampler(str(d))
    sampler.read()
    (before,) = sampler.directory.processes
    first = {r.name: r for r in sampler.frame().rows}
    assert sampler.frame().mode == "lifetime"
    assert first["__main__.fast"].interval.calls == 300  # the first frame: lifetime values
    sampler.reset()  # the key r: the view "since the baseline" counts from this read
    service.more()
    wait_until(lambda: _moved(sampler, d, before.heartbeat_unix_ns), "a snapshot after 'more'")
    (after,) = sampler.directory.processes
    seconds = (after.heartbeat_unix_ns - before.heartbeat_unix_ns) / 1e9
    frame = sampler.frame()
    assert frame.mode == "interval"
    rows = {r.name: r for r in frame.rows}
    fast, failing, slow, blocked = (rows[f"__main__.{n}"] for n in ("fast", "failing", "slow", "blocked"))
    assert (fast.interval.calls, fast.interval.completed, fast.lifetime.calls) == (100, 100, 400)
    assert (failing.interval.calls, failing.interval.errors, failing.lifetime.calls, failing.lifetime.errors) == \
        (10, 10, 210, 60)
    assert slow.interval is None and blocked.interval is None
    assert (slow.calls_per_s, slow.wall, slow.lifetime.calls) == (0.0, 0.0, 5)
    assert fast.calls_per_s == pytest.approx(100 / seconds, rel=1e-12)
    assert failing.errors_per_s == pytest.approx(10 / seconds, rel=1e-12)
    assert fast.wall == pytest.approx(100 * fast.interval.total_ns / 1e9 / seconds, rel=1e-12)
    assert frame.calls_per_s == pytest.approx(110 / seconds, rel=1e-12)
    p50, p99 = fast.percentiles()
    assert 0 < p50 <= p99 <= fast.max_at_most_ns <= fast.lifetime.max_ns
    assert sum(fast.interval.histogram) == 100
    assert (blocked.active, fast.active) == (1, 0)  # blocked() runs in a live process
    since = sampler.frame(since=True)
    assert since.mode == "since"
    rows = {r.name: r for r in since.rows}
    assert (rows["__main__.fast"].interval.calls, rows["__main__.failing"].interval.errors) == (100, 10)
    assert rows["__main__.fast"].calls_per_s == pytest.approx(100 / seconds, rel=1e-12)


def _moved(sampler: _top.Sampler, d, heartbeat: int) -> bool:
    found = _files.read_directory(str(d))
    calls = {s.qualname: s.calls for p in found.processes for s in p.stats()}
    if calls.get("fast") != 400 or found.processes[0].heartbeat_unix_ns == heartbeat:
        return False
    sampler.read()
    return sampler.directory.processes[0].heartbeat_unix_ns != heartbeat and \
        {r.name: r.lifetime.calls for r in sampler.frame().rows}["__main__.fast"] == 400


@pytest.mark.parametrize(("sort", "expected"), [
    ("total", ["slow"]),
    ("mean", ["slow"]),
    ("p99", ["slow"]),
    ("calls", ["fast", "failing", "slow", "blocked"]),
    ("errors", ["failing", "fast", "slow", "blocked"]),
    ("name", ["blocked", "failing", "fast", "slow"]),
])
def test_rows_sort_by_each_key_of_the_first_frame(tmp_path, services, sort, expected):
    d = tmp_path / "svc"
    services(d)
    sampler = _top.Sampler(str(d))
    sampler.read()
    names = [r.name.split(".")[-1] for r in sampler.frame().sorted_rows(sort)]
    assert names[:len(expected)] == expected


def test_the_filter_keeps_the_rows_whose_name_holds_the_text_in_any_case(tmp_path, services):
    d = tmp_path / "svc"
    services(d)
    sampler = _top.Sampler(str(d))
    sampler.read()
    assert [r.name for r in sampler.frame().sorted_rows("name", "FA")] == ["__main__.failing", "__main__.fast"]


def test_per_process_rows_name_each_process_and_active_counts_live_processes_only(tmp_path, services):
    d = tmp_path / "svc"
    one, two = services(d), services(d)
    sampler = _top.Sampler(str(d))
    sampler.read()
    rows = {(r.pid, r.name): (r.lifetime.calls, r.active) for r in sampler.frame(per_process=True).rows}
    assert rows[(str(one.pid), "__main__.fast")] == (300, 0)
    assert rows[(str(two.pid), "__main__.blocked")] == (1, 1)
    merged = {r.name: (r.lifetime.calls, r.active) for r in sampler.frame().rows}
    assert merged["__main__.fast"] == (600, 0)
    assert merged["__main__.blocked"] == (2, 2)
    two.kill()  # SIGKILL: its file stays, blocked() never ended, and nothing runs there any more
    sampler.read()
    merged = {r.name: (r.lifetime.calls, r.active) for r in sampler.frame().rows}
    assert merged["__main__.blocked"] == (2, 1)
    frame = sampler.frame()
    assert (frame.live, frame.exited) == (1, 1)


# --------------------------------------------------------------------------
# Batch tables and JSON lines (stdout not a terminal)
# --------------------------------------------------------------------------


def test_batch_mode_prints_n_plain_tables_with_exact_lifetime_calls_and_no_ansi(tmp_path, services):
    d = tmp_path / "svc"
    services(d)
    # -d 0.5: 25 snapshots of the writer (interval 0.02) in each interval, none of them with a call
    done = _top_cli(str(d), "-n", "2", "-d", "0.5", "-s", "calls")
    assert (done.returncode, done.stderr) == (0, "")
    assert "\x1b" not in done.stdout
    tables = done.stdout.split("fastpatch top - svc  (")[1:]
    assert len(tables) == 2
    for table in tables:
        assert table.startswith(f"{d})   every 0.5s   rates over the last interval   ")
        assert "\nprocesses 1 live, 0 exited   " in table
        rows = _table(table)
        # nothing ran in the interval: every rate is 0.0, and the lifetime counts are exact
        assert [(r[1], r[2], r[7], r[8], r[9]) for r in rows] == [
            ("0.0", "0.0", "0", "300", "__main__.fast"),
            ("0.0", "0.0", "0", "200", "__main__.failing"),
            ("0.0", "0.0", "0", "5", "__main__.slow"),
            ("0.0", "0.0", "1", "1", "__main__.blocked"),
        ]


def test_json_mode_prints_one_object_per_refresh_with_json_v1_fields_and_the_rates(tmp_path, services):
    d = tmp_path / "svc"
    service = services(d)
    done = _top_cli(str(d), "--json", "-n", "2", "-d", "0.5")
    assert (done.returncode, done.stderr) == (0, "")
    lines = done.stdout.splitlines()
    assert len(lines) == 2
    for line in lines:
        doc = json.loads(line)
        assert (doc["format"], doc["version"], doc["service"], doc["directory"], doc["rates"]) == \
            ("fastpatch-top", 1, "svc", str(d), "interval")
        assert [(p["pid"], p["state"], p["alive"]) for p in doc["processes"]] == [(service.pid, "live", True)]
        functions = {f["qualname"]: f for f in doc["functions"]}
        assert sorted(functions) == ["blocked", "failing", "fast", "slow"]
        failing = functions["failing"]
        assert (failing["name"], failing["module"], failing["calls"], failing["errors"], failing["completed"]) == \
            ("__main__.failing", "__main__", 200, 50, 200)
        assert sum(failing["histogram"]["counts"].values()) == 200
        assert (failing["calls_per_s"], failing["errors_per_s"], failing["interval_calls"], failing["active"]) == \
            (0.0, 0.0, 0, 0)
        assert functions["blocked"]["active"] == 1
        assert doc["bad_files"] == []


def test_a_damaged_file_is_skipped_with_one_warning_and_counted_in_the_header(tmp_path, services):
    d = tmp_path / "svc"
    services(d)
    (d / "fastpatch-1-1.fpt").write_bytes(b"junk")
    done = _top_cli(str(d), "-n", "1", "-d", "0.05")
    assert done.returncode == 0
    assert done.stderr == ("fastpatch: skipped telemetry file fastpatch-1-1.fpt: truncated: 4 bytes, less than the "
                           "4096-byte header\n")
    assert "   1 bad file\n" in done.stdout
    assert sorted(r[-1] for r in _table(done.stdout)) == ["__main__.blocked", "__main__.failing", "__main__.fast",
                                                          "__main__.slow"]


@pytest.mark.parametrize("case", ["missing", "empty", "only garbage", "not a directory", "unreadable"])
def test_top_of_a_missing_empty_or_unreadable_directory_is_one_error_line_and_status_2(tmp_path, case):
    d = tmp_path / "svc"
    if case == "not a directory":
        d.write_text("")
    elif case != "missing":
        d.mkdir()
    if case == "only garbage":
        (d / "fastpatch-1-1.fpt").write_bytes(b"junk")
    if case == "unreadable":
        if os.geteuid() == 0:
            pytest.skip("root reads any directory")
        d.chmod(0)
    expected = {
        "missing": f"fastpatch: error: no telemetry directory {d}",
        "empty": f"fastpatch: error: no telemetry file in {d}",
        "only garbage": f"fastpatch: error: no telemetry file in {d} (1 damaged or foreign file skipped)",
        "not a directory": f"fastpatch: error: {d} is not a directory",
        "unreadable": f"fastpatch: error: cannot read the telemetry directory {d}: Permission denied",
    }[case]
    for args in ([], ["--json"]):
        done = _top_cli(str(d), *args)
        assert (done.returncode, done.stdout, done.stderr) == (2, "", expected + "\n")


def test_top_without_dir_and_without_fastpatch_service_lists_the_services_and_exits_2(tmp_path):
    (tmp_path / "fastpatch" / "shop").mkdir(parents=True)
    (tmp_path / "fastpatch" / "api").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "FASTPATCH_SERVICE"}
    env["XDG_RUNTIME_DIR"] = str(tmp_path)
    done = _top_cli(env=env)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (f"fastpatch: error: name a telemetry directory or set FASTPATCH_SERVICE; services in "
                           f"{tmp_path / 'fastpatch'}: api, shop\n")


def test_top_without_dir_reads_the_directory_of_fastpatch_service(tmp_path, services):
    d = tmp_path / "fastpatch" / "shop"
    d.parent.mkdir(mode=0o700)
    services(d)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path), "FASTPATCH_SERVICE": "shop"}
    done = _top_cli("-n", "1", "-d", "0.05", env=env)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.startswith(f"fastpatch top - shop  ({d})   every 0.05s   ")


@pytest.mark.parametrize(("args", "message"), [
    (["-d", "0"], "fastpatch: error: -d '0': give a number of seconds from 0.05 to 86400"),
    (["-d", "soon"], "fastpatch: error: -d 'soon': give a number of seconds from 0.05 to 86400"),
    (["-n", "0"], "fastpatch: error: -n '0': give a whole number of tables, 1 or more"),
])
def test_bad_options_are_one_error_line_and_status_2(tmp_path, args, message):
    done = _top_cli(str(tmp_path), *args)
    assert (done.returncode, done.stdout, done.stderr) == (2, "", message + "\n")


def test_top_help_says_what_the_columns_and_keys_mean():
    done = _top_cli("-h")
    assert done.returncode == 0
    for text in ("MAX≈     an upper bound", "include\nsuspensions, so the %WALL of an async handler counts the time "
                 "it waits", "t/1 sort by %WALL", "p per-process rows", "q or Ctrl-C quit"):
        assert text in done.stdout


# --------------------------------------------------------------------------
# The interactive table, in a real terminal
# --------------------------------------------------------------------------


def _pty_available() -> str:
    """Why no terminal can be had here, or ''."""
    if shutil.which("tmux") is None:
        return "tmux is not installed (apt-get install tmux)"
    if shutil.which("bash") is None:
        return "no bash to run top in the terminal"
    try:
        import curses  # noqa: F401
    except ImportError:
        return "this Python has no curses module"
    try:
        primary, secondary = os.openpty()
    except OSError as exc:
        return f"no pseudo-terminal can be opened here ({exc.strerror}: no devpts mounted)"
    os.close(primary)
    os.close(secondary)
    return ""


class Terminal:
    """``top`` in a detached tmux session of a fixed size, on a server of its own."""

    def __init__(self, tmp_path, directory, *args: str) -> None:
        self.socket = f"fastpatch-top-test-{os.getpid()}-{time.monotonic_ns()}"
        self.status = tmp_path / "status"
        command = shlex.join([sys.executable, "-m", "fastpatch", "top", str(directory), *args])
        env = {**os.environ, "LC_ALL": "C.UTF-8", "TERM": "xterm-256color"}
        env.pop("TMUX", None)
        self.tmux("new-session", "-d", "-x", "160", "-y", "24", "-s", "top", env=env)
        self.tmux("set-option", "-t", "top", "remain-on-exit", "on")
        # bash, not sh: after a Ctrl-C that top handles, bash waits for it and writes its status
        # (dash dies of the SIGINT with it)
        script = f"{command}; echo $? > {shlex.quote(str(self.status))}"
        self.tmux("respawn-pane", "-k", "-t", "top", shlex.join(["bash", "-c", script]))

    def tmux(self, *args: str, env=None) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=True,
                              timeout=60, env=env).stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "top")

    def wait_screen(self, condition, what: str) -> str:
        """The first settled screen that meets ``condition``.

        curses sends one frame in several writes and tmux may show a capture between two of them
        (the new status line over the old rows), so a screen counts only when a second capture,
        50 ms later, is the same.
        """
        deadline = time.monotonic() + 60
        last = None
        while True:
            text = self.screen()
            if text == last and condition(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"the screen never showed {what}:\n{text}")
            last = text
            time.sleep(0.05)  # tmux tells no one when a pane changes: poll it

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "top", *keys)

    def top_pid(self) -> int:
        shell = int(self.tmux("display", "-p", "-t", "top", "#{pane_pid}"))
        with open(f"/proc/{shell}/task/{shell}/children") as fh:
            return int(fh.read().split()[0])

    def exit_status(self) -> int:
        wait_until(lambda: self.status.exists() and self.status.read_text().endswith("\n"), "top to exit")
        return int(self.status.read_text())

    def alternate_screen(self) -> int:
        return int(self.tmux("display", "-p", "-t", "top", "#{alternate_on}"))

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=60)


def _functions(screen: str) -> list[str]:
    """The FUNCTION column of the table on ``screen``."""
    return [row[-1].split(".")[-1] for row in _table(screen)]


@pytest.fixture
def terminal(tmp_path):
    why = _pty_available()
    if why:
        pytest.skip(why)
    opened = []

    def open_terminal(directory, *args: str) -> Terminal:
        opened.append(Terminal(tmp_path, directory, *args))
        return opened[-1]

    yield open_terminal
    for t in opened:
        t.close()


def test_the_interactive_table_sorts_filters_shows_processes_and_help_then_q_restores_the_terminal(
        tmp_path, services, terminal):
    d = tmp_path / "svc"
    one, two = services(d), services(d)
    # -d 600: the first frame stays on screen (lifetime rates), so every order below is exact
    t = terminal(d, "-d", "600")
    screen = t.wait_screen(lambda s: "%WALL" in s and "blocked" in s, "the table")
    assert t.alternate_screen() == 1
    assert screen.startswith(f"fastpatch top - svc  ({d})   every 600s   lifetime rates (first read)")
    assert "\nprocesses 2 live, 0 exited   " in screen
    assert "\nsort %WALL   (? help, q quit)\n" in screen
    assert _functions(screen)[0] == "slow"
    for key, column, expected in [("c", "CALLS/S", ["fast", "failing", "slow", "blocked"]),
                                  ("e", "ERR/S", ["failing", "fast", "slow", "blocked"]),
                                  ("n", "FUNCTION", ["blocked", "failing", "fast", "slow"]),
                                  ("2", "CALLS/S", ["fast", "failing", "slow", "blocked"])]:
        t.keys(key)
        screen = t.wait_screen(lambda s, c=column: f"\nsort {c}   " in s, f"sort {column}")
        assert _functions(screen) == expected
    for key in ("m", "9"):
        t.keys(key)
        screen = t.wait_screen(lambda s, k=key: f"\nsort {_top.SORT_COLUMNS[_top.SORT_KEYS[k]]}   " in s, key)
        assert _functions(screen)[0] == "slow"
    t.keys("n", "/", "F", "a")
    t.wait_screen(lambda s: "\nfilter: Fa_" in s, "the filter being typed")
    t.keys("Enter")
    screen = t.wait_screen(lambda s: "\nsort FUNCTION   filter 'Fa'   " in s, "the filter")
    assert _functions(screen) == ["failing", "fast"]
    t.keys("p")
    screen = t.wait_screen(lambda s: "per process" in s, "per-process rows")
    rows = _table(screen)
    assert sorted((r[-1], r[-2], r[-3]) for r in rows) == sorted(
        [("__main__.fast", str(p.pid), "300") for p in (one, two)]
        + [("__main__.failing", str(p.pid), "200") for p in (one, two)])
    assert "     PID  FUNCTION" in screen
    t.keys("?")
    screen = t.wait_screen(lambda s: "fastpatch top: help" in s, "the help")
    assert "MAX≈     an upper bound of the interval's longest call" in screen
    assert "q or Ctrl-C quit" in screen
    t.keys("x")  # any key leaves the help
    t.wait_screen(lambda s: "%WALL" in s, "the table again")
    t.keys("r")  # the baseline moves to now: since then, nothing was called
    screen = t.wait_screen(lambda s: "every 600s   rates since " in s, "the rates since the baseline")
    assert [(r[1], r[-3], r[-1]) for r in _table(screen)] == [  # sorted by name, then PID
        ("0.0", "200", "__main__.failing"), ("0.0", "200", "__main__.failing"),
        ("0.0", "300", "__main__.fast"), ("0.0", "300", "__main__.fast")]
    t.keys("a")
    t.wait_screen(lambda s: "every 600s   lifetime rates (first read)" in s, "the last interval again")
    t.keys("q")
    assert t.exit_status() == 0
    assert t.alternate_screen() == 0
    assert "%WALL" not in t.screen()


@pytest.mark.parametrize("how", ["Ctrl-C", "SIGTERM"])
def test_ctrl_c_and_sigterm_quit_the_interactive_table_and_restore_the_terminal(tmp_path, services, terminal,
                                                                                how):
    d = tmp_path / "svc"
    services(d)
    t = terminal(d, "-d", "0.1")
    t.wait_screen(lambda s: "%WALL" in s and "blocked" in s, "the table")
    assert t.alternate_screen() == 1
    if how == "Ctrl-C":
        t.keys("C-c")
    else:
        os.kill(t.top_pid(), signal.SIGTERM)
    assert t.exit_status() == (0 if how == "Ctrl-C" else 128 + signal.SIGTERM)
    assert t.alternate_screen() == 0
    assert "%WALL" not in t.screen()


@pytest.mark.parametrize(("width", "height"), [(20, 3), (100, 2), (5, 24)])
def test_a_terminal_too_small_shows_what_fits_and_never_crashes(tmp_path, services, terminal, width, height):
    d = tmp_path / "svc"
    services(d)
    t = terminal(d, "-d", "0.1")
    t.tmux("resize-window", "-t", "top", "-x", str(width), "-y", str(height))
    t.wait_screen(lambda s: s.startswith("fastpatch"[:width - 1]), "the table cut to the window")
    t.keys("p", "?", "x", "/", "z", "Enter", "n")
    t.tmux("resize-window", "-t", "top", "-x", "160", "-y", "24")
    t.wait_screen(lambda s: "filter 'z'" in s, "the table after resizing")
    t.keys("q")
    assert t.exit_status() == 0
    assert t.alternate_screen() == 0


# A function timed one call in 2.
SAMPLED = """
import sys, time
import fastpatch, fastpatch.export
from fastpatch.export import _files

def sampled(x):
    return x

fastpatch.instrument(sampled, sample=2)
fastpatch.export.start(sys.argv[1], interval=0.02)
for i in range(1000):
    sampled(i)
deadline = time.monotonic() + 60
def published():
    return [(s.calls, s.completed) for p in _files.read_directory(sys.argv[1]).processes for s in p.stats()]

while published() != [(1000, 1000)]:
    assert time.monotonic() < deadline, "the writer never published"
    time.sleep(0.01)  # the writer's thread publishes on its own: nothing to wait on
print("ready", flush=True)
sys.stdin.read()
"""


def test_the_durations_of_a_sampled_function_are_marked_as_estimates(tmp_path):
    script = tmp_path / "sampled.py"
    script.write_text(SAMPLED)
    d = tmp_path / "svc"
    service = Service(str(d), str(script))
    try:
        sampler = _top.Sampler(str(d))
        sampler.read()
        (row,) = sampler.frame().rows
        assert (row.lifetime.calls, row.lifetime.sample, row.estimated) == (1000, 2, True)
        cells = _top.row_cells(row, False)
        assert [cells[0][0], cells[3][0], cells[4][0], cells[5][0], cells[8], cells[9]] == \
            ["~", "~", "~", "~", "1,000", "__main__.sampled"]
        doc = _top.frame_document(sampler.frame(), 1.0)
        assert [(f["sample"], f["interval_estimated"]) for f in doc["functions"]] == [(2, True)]
    finally:
        service.kill()
