"""Live telemetry from real processes: exact counts read from another
process while the writer runs, lazy start, fork, exit, SIGKILL, reset, and
the directory and file rules."""

from __future__ import annotations

import os
import pathlib
import pwd
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

from fastpatch.export import _files
from live_telemetry import CHILD_PROLOGUE, wait_until
from telemetry_files import not_ram_backed_warning

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the writer's tests read /proc")

PROLOGUE = CHILD_PROLOGUE + """
fastpatch.instrument(f)
fastpatch.instrument(g)

def threads():
    return len(os.listdir("/proc/self/task"))

def wait_for_line():
    line = sys.stdin.readline()
    return line.strip()
"""


def _program(body: str) -> str:
    return PROLOGUE + textwrap.dedent(body)


def _start(body: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, *args, "-c", _program(body)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _run(body: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args, "-c", _program(body)], capture_output=True, text=True, timeout=120)


def _finish(child: subprocess.Popen[str]) -> None:
    child.kill()
    child.wait()
    for stream in (child.stdin, child.stdout, child.stderr):
        stream.close()


def _calls(directory: str) -> dict[tuple[int, str], int]:
    found = _files.read_directory(directory)
    assert found.bad_files == []
    return {(p.pid, s.qualname): s.calls for p in found.processes for s in p.stats()}


_wait_until = wait_until


def test_exact_counts_are_read_live_from_another_process_and_its_file_is_marked_exited_at_exit(tmp_path):
    d = str(tmp_path / "svc")
    child = _start(f"""
        fastpatch.export.start({d!r}, interval=0.02)
        for i in range(1000):
            f(i)
        print("ready", flush=True)
        wait_for_line()
        for i in range(500):
            f(i)
        call_range(g, 3)
        print("ready", flush=True)
        wait_for_line()
    """)
    try:
        assert child.stdout.readline() == "ready\n"
        _wait_until(lambda: _calls(d).get((child.pid, "f")) == 1000, "1000 calls")
        (view,) = _files.read_directory(d).processes
        assert (view.state, view.alive, view.service) == ("live", True, "svc")
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline() == "ready\n"
        _wait_until(lambda: _calls(d) == {(child.pid, "f"): 1500, (child.pid, "g"): 3}, "1500 and 3 calls")
        child.stdin.close()
        assert child.wait(60) == 0
    finally:
        _finish(child)
    found = _files.read_directory(d)
    (view,) = found.processes
    assert (view.state, view.alive) == ("exited", False)
    stats = {s.qualname: (s.calls, s.completed, s.errors, sum(s.histogram)) for s in view.stats()}
    assert stats == {"f": (1500, 1500, 0, 1500), "g": (3, 3, 2, 3)}
    assert oct(os.stat(os.path.join(d, f"fastpatch-{view.pid}-{view.start_ticks}.fpt")).st_mode & 0o777) == "0o600"
    assert oct(os.stat(d).st_mode & 0o777) == "0o700"


def test_a_process_killed_by_sigkill_leaves_its_last_snapshot(tmp_path):
    d = str(tmp_path / "svc")
    child = _start(f"""
        fastpatch.export.start({d!r}, interval=0.02)
        for i in range(777):
            f(i)
        print("ready", flush=True)
        wait_for_line()
    """)
    try:
        assert child.stdout.readline() == "ready\n"
        _wait_until(lambda: _calls(d).get((child.pid, "f")) == 777, "777 calls")
    finally:
        _finish(child)
    assert child.returncode == -signal.SIGKILL
    (view,) = _files.read_directory(d).processes
    assert (view.state, view.alive, [(s.qualname, s.calls) for s in view.stats()]) == ("live", False, [("f", 777)])


def test_a_process_that_never_calls_an_instrumented_function_has_no_writer_thread_and_no_file(tmp_path):
    d = str(tmp_path / "svc")
    done = _run(f"""
        before = threads()
        fastpatch.export.start({d!r}, interval=0.02)
        files = [n for n in os.listdir({d!r}) if n.endswith(".fpt")]
        print(before, threads(), files, _ext.telemetry_status()["running"])
        f(1)
        print(threads(), _ext.telemetry_status()["running"])
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["1 1 [] False", "2 True"]
    (name,) = (n for n in os.listdir(d) if n.endswith(".fpt"))
    assert _calls(d) == {(int(name.split("-")[1]), "f"): 1}


def test_a_fork_happens_with_no_writer_thread_and_the_child_writes_its_own_file(tmp_path):
    d = str(tmp_path / "svc")
    done = _run(f"""
        fastpatch.export.start({d!r}, interval=0.02)
        for i in range(10):
            f(i)
        assert _ext.telemetry_status()["running"]
        pid = os.fork()
        if pid == 0:
            print("child threads", threads(), flush=True)
            for i in range(3):
                f(i)
            fastpatch.export.stop()
            os._exit(0)
        os.waitpid(pid, 0)
        for i in range(5):
            f(i)
        print("parent", threads(), pid, flush=True)
    """, "-W", "error::DeprecationWarning")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "child threads 1"
    child_pid = int(lines[1].split()[2])
    assert lines[1].startswith("parent 2 ")
    calls = _calls(d)
    assert calls == {(done_pid, "f"): 15 for done_pid in {p for p, _ in calls} - {child_pid}} | {(child_pid, "f"): 3}
    assert len(calls) == 2


def test_reset_never_makes_a_files_counters_go_down(tmp_path):
    d = str(tmp_path / "svc")
    done = _run(f"""
        fastpatch.export.start({d!r}, interval=60)
        for i in range(100):
            f(i)
        _ext.telemetry_snapshot()
        fastpatch.reset()
        for i in range(5):
            f(i)
        _ext.telemetry_snapshot()
        print(fastpatch.stats(f).calls)
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "5\n"
    (view,) = _files.read_directory(d).processes
    (s,) = view.stats()
    assert (s.calls, s.completed, s.timed, sum(s.histogram)) == (105, 105, 105, 105)


def test_start_refuses_a_symlinked_directory_naming_the_problem(tmp_path):
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    os.symlink(str(real), str(tmp_path / "link"))
    done = _run(f"""
        try:
            fastpatch.export.start({str(tmp_path / "link")!r})
        except ValueError as exc:
            print(exc)
    """)
    assert done.stdout == f"telemetry directory {tmp_path / 'link'} is a symbolic link\n"


def test_start_refuses_a_group_writable_directory(tmp_path):
    d = tmp_path / "svc"
    d.mkdir()
    os.chmod(d, 0o770)
    done = _run(f"""
        try:
            fastpatch.export.start({str(d)!r})
        except ValueError as exc:
            print(exc)
    """)
    assert done.stdout == f"telemetry directory {d} is writable by group or others (mode 0770)\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="making a directory of another user needs root")
def test_start_refuses_a_directory_of_another_user_for_root_and_for_nobody(tmp_path):
    nobody = pwd.getpwnam("nobody")
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, nobody.pw_uid, nobody.pw_gid)
    done = _run(f"""
        try:
            fastpatch.export.start({str(theirs)!r})
        except ValueError as exc:
            print(exc)
    """)
    assert done.stdout == f"telemetry directory {theirs} belongs to uid {nobody.pw_uid}, not to this user (uid 0)\n"
    import tempfile

    roots = pathlib.Path(tempfile.mkdtemp()) / "roots"  # in /tmp: nobody may pass through it
    roots.mkdir(mode=0o755)
    os.chmod(roots.parent, 0o755)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # drop privileges, then try root's directory
        try:
            os.close(read)
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            import fastpatch.export

            try:
                fastpatch.export.start(str(roots))
                message = "accepted"
            except ValueError as exc:
                message = str(exc)
            os.write(write, message.encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as fh:
        said = fh.read()
    os.waitpid(pid, 0)
    shutil.rmtree(roots.parent)
    assert said == f"telemetry directory {roots} belongs to uid 0, not to this user (uid {nobody.pw_uid})"


def test_a_symlink_planted_at_the_files_name_costs_one_warning_line_and_the_program_runs_on(tmp_path, ram_path):
    d = ram_path / "svc"
    d.mkdir(mode=0o700)
    precious = tmp_path / "precious"
    precious.write_text("keep")
    done = _run(f"""
        from fastpatch.export import _writer
        os.symlink({str(precious)!r}, os.path.join({str(d)!r}, _writer.file_name(os.getpid(), _writer.start_ticks())))
        fastpatch.export.start({str(d)!r}, interval=0.02)
        print(sum(f(i) for i in range(10)))
        _ext.telemetry_snapshot()
        print(_ext.telemetry_status()["file_open"])
    """)
    assert done.returncode == 0
    assert done.stdout == "55\nFalse\n"
    warning = not_ram_backed_warning(d)
    assert done.stderr.startswith(warning)
    (line,) = done.stderr[len(warning):].splitlines()
    assert line.startswith(f"fastpatch: cannot create the telemetry file {d}/fastpatch-") and line.endswith(
        ": File exists; no live telemetry")
    assert precious.read_text() == "keep"


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tiny tmpfs needs root")
def test_a_full_tmpfs_fails_at_open_with_one_warning_line_never_sigbus(tmp_path):
    if shutil.which("mount") is None:
        pytest.skip("no mount command here")
    d = tmp_path / "tiny"
    d.mkdir(mode=0o700)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(d)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        done = _run(f"""
            fastpatch.export.start({str(d)!r}, interval=0.02)
            print(sum(f(i) for i in range(10)))
            _ext.telemetry_snapshot()
            print(_ext.telemetry_status()["file_open"], [n for n in os.listdir({str(d)!r}) if n.endswith(".fpt")])
        """)
    finally:
        subprocess.run(["umount", str(d)], check=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "55\nFalse []\n"
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"fastpatch: cannot set up the telemetry file {d}/fastpatch-") and line.endswith(
        ": No space left on device; no live telemetry")


def test_fastpatch_telemetry_1_publishes_a_run_and_report_dir_reads_it(tmp_path):
    d = tmp_path / "svc"
    script = tmp_path / "main.py"
    script.write_text("def work(x):\n    return x * 2\n\nfor i in range(250):\n    work(i)\n")
    env = {**os.environ, "FASTPATCH_TELEMETRY": "1", "FASTPATCH_TELEMETRY_DIR": str(d)}
    ran = subprocess.run([sys.executable, "-m", "fastpatch", "run", "-o", str(tmp_path / "r.json"), str(script)],
                         env=env, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    (view,) = _files.read_directory(str(d)).processes
    assert (view.state, [(s.name, s.calls) for s in view.stats()]) == ("exited", [("__main__.work", 250)])
    report = subprocess.run([sys.executable, "-m", "fastpatch", "report", "-f", "json", str(d)],
                            capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    import json

    document = json.loads(report.stdout)
    assert [(fn["name"], fn["calls"], fn["completed"]) for fn in document["functions"]] == [("__main__.work", 250, 250)]
    assert [p["report_id"] for p in document["processes"]] == [f"telemetry-{view.pid}-{view.start_ticks}"]


def test_an_unsafe_telemetry_directory_under_activation_costs_one_line_and_the_program_runs_on(tmp_path):
    d = tmp_path / "svc"
    d.mkdir()
    os.chmod(d, 0o777)
    script = tmp_path / "main.py"
    script.write_text("def work(x):\n    return x * 2\n\nprint(sum(work(i) for i in range(10)))\n")
    env = {**os.environ, "FASTPATCH_TELEMETRY": "1", "FASTPATCH_TELEMETRY_DIR": str(d)}
    ran = subprocess.run([sys.executable, "-m", "fastpatch", "run", "-o", str(tmp_path / "r.json"), str(script)],
                         env=env, capture_output=True, text=True, timeout=120)
    assert (ran.returncode, ran.stdout) == (0, "90\n")
    assert ran.stderr.splitlines()[0] == (f"fastpatch: live telemetry off: telemetry directory {d} is writable by "
                                          "group or others (mode 0777)")
    assert os.listdir(d) == []  # not even run.lock


@pytest.mark.parametrize("case", ["missing", "empty", "only garbage"])
def test_report_of_a_missing_or_empty_directory_is_one_error_line_and_status_2(tmp_path, case):
    d = tmp_path / "svc"
    if case != "missing":
        d.mkdir()
    if case == "only garbage":
        (d / "fastpatch-1-1.fpt").write_bytes(b"junk")
    done = subprocess.run([sys.executable, "-m", "fastpatch", "report", str(d)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert lines[-1].startswith("fastpatch: error: ")
    assert len(lines) == (2 if case == "only garbage" else 1)


def test_report_without_dir_and_without_fastpatch_service_lists_the_services_and_exits_2(tmp_path):
    (tmp_path / "fastpatch" / "shop").mkdir(parents=True)
    (tmp_path / "fastpatch" / "api").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "FASTPATCH_SERVICE"}
    env["XDG_RUNTIME_DIR"] = str(tmp_path)
    done = subprocess.run([sys.executable, "-m", "fastpatch", "report"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert done.stderr == (f"fastpatch: error: name a telemetry directory or set FASTPATCH_SERVICE; services in "
                           f"{tmp_path / 'fastpatch'}: api, shop\n")


def test_import_fastpatch_and_activation_without_telemetry_import_no_part_of_fastpatch_export(tmp_path):
    script = tmp_path / "main.py"
    script.write_text("import sys\nprint(sorted(m for m in sys.modules if m.startswith('fastpatch.export')))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTPATCH_")}
    plain = subprocess.run([sys.executable, "-c", "import fastpatch, sys; print(sorted(m for m in sys.modules if "
                            "m.startswith('fastpatch.export')))"], env=env, capture_output=True, text=True)
    assert plain.stdout == "[]\n"
    ran = subprocess.run([sys.executable, "-m", "fastpatch", "run", "-o", str(tmp_path / "r.json"), str(script)],
                         env=env, capture_output=True, text=True, timeout=120)
    assert ran.stdout == "[]\n", ran.stderr


def _filesystem_type(path) -> str:
    """``stat -f``'s name of the filesystem holding ``path`` (coreutils, independent of fastpatch)."""
    if shutil.which("stat") is None:
        pytest.skip("no stat command here")
    return subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.mark.parametrize("where", ["root filesystem", "/dev/shm"])
def test_a_directory_not_on_tmpfs_or_ramfs_costs_one_warning_line_per_process_and_is_used_all_the_same(
        tmp_path, ram_path, where):
    base = tmp_path if where == "root filesystem" else ram_path
    kind = _filesystem_type(base)
    if (kind in ("tmpfs", "ramfs")) == (where == "root filesystem"):
        pytest.skip(f"{base} is on {kind} here")
    d = base / "svc"
    done = _run(f"""
        for round in range(2):  # a second start in the same process: no second line
            fastpatch.export.start({str(d)!r}, interval=60)
            for i in range(3):
                f(i)
            fastpatch.export.stop()
    """)
    assert done.returncode == 0, done.stderr
    warning = (f"fastpatch: telemetry directory {d} is not on a RAM-backed filesystem (tmpfs or ramfs): every "
               "snapshot is written back to disk; choose one in /dev/shm or $XDG_RUNTIME_DIR\n")
    assert done.stderr == (warning if where == "root filesystem" else "")
    assert not_ram_backed_warning(d) == done.stderr
    (view,) = _files.read_directory(str(d)).processes
    assert (view.state, [(s.qualname, s.calls) for s in view.stats()]) == ("exited", [("f", 6)])
