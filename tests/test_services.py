"""Live telemetry of real services: gunicorn with sync workers (a Flask app)
and uvicorn (a tiny ASGI app), alone and as gunicorn's UvicornWorker, each
started on a free port of 127.0.0.1 under FASTPATCH_INCLUDE and
FASTPATCH_TELEMETRY, driven with a known number of requests.

The app's handler and the framework are instrumented, so the counts are
exact: requests made = calls counted, read live while the service runs,
after a worker is SIGKILLed, across workers recycled by --max-requests,
and in ``report DIR`` after SIGTERM of the master. Activation by
FASTPATCH_INCLUDE needs fastpatch.pth, which an editable install lacks:
these tests skip there and run in CI, which installs the wheel.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time

import pytest

from fastpatch.export import _files

HAS_PTH = any(
    os.path.exists(os.path.join(d, "fastpatch.pth"))
    for d in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
)

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the telemetry writer's tests read /proc"),
    pytest.mark.skipif(not HAS_PTH, reason="fastpatch.pth is not installed here (an editable install): "
                       "install the wheel (`pip install .`)"),
]

FLASK_APP = '''
from flask import Flask

app = Flask(__name__)


@app.route("/hello")
def hello():
    return "hello"
'''

ASGI_APP = '''
async def hello(send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello"})


async def lifespan(receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
    else:
        await hello(send)
'''

#: Functions that run exactly once per request, in the app and in the framework.
FLASK_PER_REQUEST = ("app.hello", "flask.app.Flask.wsgi_app", "flask.app.Flask.full_dispatch_request")
ASGI_PER_REQUEST = ("asgiapp.hello", "uvicorn.protocols.http.h11_impl.RequestResponseCycle.run_asgi")

#: Seconds any one step may take on a loaded machine before the test fails (never a wait that must elapse).
PATIENCE = 60.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    """A server started in its own process group, with telemetry in ``directory``."""

    def __init__(self, tmp_path, argv: list[str], include: str, app_name: str, app_source: str,
                 interval: str = "0.05") -> None:
        (tmp_path / f"{app_name}.py").write_text(app_source)
        self.directory = str(tmp_path / "telemetry")
        self.port = _free_port()
        self.log = tmp_path / "service.log"
        env = {
            **os.environ,
            "FASTPATCH_INCLUDE": include,
            "FASTPATCH_TELEMETRY": "1",
            "FASTPATCH_TELEMETRY_DIR": self.directory,
            "FASTPATCH_TELEMETRY_INTERVAL": interval,
            "FASTPATCH_OUTPUT": str(tmp_path / "report-{pid}.json"),
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("FASTPATCH_ENABLED", None)
        args = [a.replace("{port}", str(self.port)) for a in argv]
        with open(self.log, "w") as log:
            self.process = subprocess.Popen([sys.executable, "-m", *args], cwd=tmp_path, env=env,
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        self.requests = 0

    def describe(self) -> str:
        return f"{self.process.args}, exit status {self.process.poll()}, log:\n{self.log.read_text()}"

    def get(self, path: str = "/hello") -> None:
        """One request; the server may still be booting (the first waits for it, never longer than PATIENCE)."""
        deadline = time.monotonic() + PATIENCE
        while True:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=PATIENCE)
            try:
                conn.connect()
            except ConnectionRefusedError:
                # Not listening yet: no request was sent, so none is counted.
                conn.close()
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"the service never listened: {self.describe()}") from None
                time.sleep(0.02)
                continue
            try:
                conn.request("GET", path, headers={"Connection": "close"})
                response = conn.getresponse()
                assert (response.status, response.read()) == (200, b"hello"), self.describe()
            finally:
                conn.close()
            self.requests += 1
            return

    def read(self) -> _files.Directory:
        """The directory as a reader sees it once no file is half-made.

        A worker's file exists, empty, for an instant before its header is
        written; a reader skips it then as truncated, and reads it the next
        time. Any other bad file fails the test."""
        deadline = time.monotonic() + PATIENCE
        while True:
            found = _files.read_directory(self.directory)
            if not found.bad_files:
                return found
            assert all("truncated: 0 bytes" in why for _name, why in found.bad_files), found.bad_files
            assert time.monotonic() < deadline, found.bad_files
            time.sleep(0.01)

    def counts(self, names: tuple[str, ...]) -> dict[str, int]:
        """The calls of ``names`` merged over every process of the directory, read live."""
        if not os.path.isdir(self.directory):
            return dict.fromkeys(names, 0)
        calls = {s.name: s.calls for s in self.read().stats()}
        return {name: calls.get(name, 0) for name in names}

    def per_process(self, names: tuple[str, ...]) -> list[tuple[int, str, bool, dict[str, int]]]:
        """(pid, state, alive, calls of ``names`` and of unnamed records) of each process: for failure messages."""
        return [(p.pid, p.state, p.alive, {s.name: s.calls for s in p.stats() if s.name in names or "<" in s.name})
                for p in self.read().processes]

    def wait_for_counts(self, names: tuple[str, ...], expected: int, seen: list[int] | None = None) -> None:
        """Poll the directory until every name counts ``expected`` calls;
        each reading is appended to ``seen`` (to check they never go down)."""
        deadline = time.monotonic() + PATIENCE
        while True:
            counts = self.counts(names)
            if seen is not None:
                seen.extend(counts.values())
            if counts == dict.fromkeys(names, expected):
                return
            assert all(c <= expected for c in counts.values()), (counts, expected)
            if time.monotonic() > deadline:
                raise AssertionError(f"counts {counts}, expected {expected} each; per process "
                                     f"{self.per_process(names)}: {self.describe()}")
            # Another process writes the files every interval: there is nothing to wait on but time.
            time.sleep(0.02)

    def live_pids(self) -> list[int]:
        return sorted(p.pid for p in self.read().processes if p.alive)

    def stop(self, signum: int = signal.SIGTERM) -> int:
        """Signal the server's main process and wait for it to end; its exit status."""
        self.process.send_signal(signum)
        try:
            return self.process.wait(PATIENCE)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the service did not stop: {self.describe()}") from None

    def kill_all(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@contextlib.contextmanager
def service(tmp_path, argv: list[str], include: str, app_name: str, app_source: str, interval: str = "0.05"):
    running = Service(tmp_path, argv, include, app_name, app_source, interval)
    try:
        yield running
    finally:
        # Whatever happened, no process of the test outlives it (workers included: one process group).
        running.kill_all()


def reported_calls(directory: str, names: tuple[str, ...]) -> dict[str, int]:
    """``python -m fastpatch report -f json DIR``: the calls of each of ``names``."""
    done = subprocess.run([sys.executable, "-m", "fastpatch", "report", "-f", "json", directory],
                          capture_output=True, text=True, timeout=PATIENCE)
    assert done.returncode == 0, done.stderr
    calls = {f["name"]: f["calls"] for f in json.loads(done.stdout)["functions"]}
    return {name: calls[name] for name in names}


def gunicorn(*options: str, app: str = "app:app") -> list[str]:
    from gunicorn.config import KNOWN_SETTINGS

    # gunicorn 25+ opens a control socket in ~/.gunicorn, shared by every gunicorn of the user: not ours to touch.
    private = ["--no-control-socket"] if any(s.name == "control_socket_disable" for s in KNOWN_SETTINGS) else []
    return ["gunicorn", "-b", "127.0.0.1:{port}", "--graceful-timeout", "30", *private, *options, app]


def test_gunicorn_sync_workers_count_every_request_live_and_report_dir_has_the_exact_totals_after_sigterm(tmp_path):
    with service(tmp_path, gunicorn("-w", "3"), "app,flask", "app", FLASK_APP) as svc:
        for _ in range(60):
            svc.get()
        svc.wait_for_counts(FLASK_PER_REQUEST, 60)
        assert svc.stop() == 0, svc.describe()
        assert reported_calls(svc.directory, FLASK_PER_REQUEST) == dict.fromkeys(FLASK_PER_REQUEST, 60)
        # Each worker that served a request ended through its exit handler: its file says so.
        states = {p.pid: p.state for p in svc.read().processes}
        assert set(states.values()) == {"exited"}, states


def test_a_sigkilled_gunicorn_worker_loses_no_published_count_and_its_replacement_adds_to_them(tmp_path):
    with service(tmp_path, gunicorn("-w", "2"), "app,flask", "app", FLASK_APP) as svc:
        for _ in range(40):
            svc.get()
        svc.wait_for_counts(FLASK_PER_REQUEST, 40)
        victim = svc.live_pids()[0]
        os.kill(victim, signal.SIGKILL)
        # The killed worker's file no longer has a live writer, and what it published stays counted.
        deadline = time.monotonic() + PATIENCE
        while victim in svc.live_pids():
            assert time.monotonic() < deadline, svc.describe()
            time.sleep(0.02)
        assert svc.counts(FLASK_PER_REQUEST) == dict.fromkeys(FLASK_PER_REQUEST, 40)
        for _ in range(40):
            svc.get()
        svc.wait_for_counts(FLASK_PER_REQUEST, 80)
        assert svc.stop() == 0, svc.describe()
        assert reported_calls(svc.directory, FLASK_PER_REQUEST) == dict.fromkeys(FLASK_PER_REQUEST, 80)


def test_gunicorn_workers_recycled_by_max_requests_add_to_the_counts_and_never_subtract(tmp_path):
    with service(tmp_path, gunicorn("-w", "2", "--max-requests", "10"), "app,flask", "app", FLASK_APP) as svc:
        seen: list[int] = []
        for batch in range(1, 6):
            for _ in range(10):
                svc.get()
            svc.wait_for_counts(FLASK_PER_REQUEST[:1], 10 * batch, seen)
        assert seen == sorted(seen), "a live count went down"
        processes = svc.read().processes
        # 50 requests, at most 10 per worker: at least five workers served them, all but two of them recycled.
        assert len({p.pid for p in processes}) >= 5, [(p.pid, p.state) for p in processes]
        assert svc.stop() == 0, svc.describe()
        assert reported_calls(svc.directory, FLASK_PER_REQUEST) == dict.fromkeys(FLASK_PER_REQUEST, 50)


def test_uvicorn_counts_every_request_live_and_report_dir_has_the_exact_totals_after_sigterm(tmp_path):
    argv = ["uvicorn", "--host", "127.0.0.1", "--port", "{port}", "--http", "h11", "asgiapp:app"]
    with service(tmp_path, argv, "asgiapp,uvicorn", "asgiapp", ASGI_APP) as svc:
        for _ in range(50):
            svc.get()
        svc.wait_for_counts(ASGI_PER_REQUEST, 50)
        svc.stop()
        assert reported_calls(svc.directory, ASGI_PER_REQUEST) == dict.fromkeys(ASGI_PER_REQUEST, 50)
        (view,) = svc.read().processes
        assert view.state == "exited"


def test_gunicorn_uvicorn_workers_keep_every_published_count_though_sigterm_skips_their_exit_handler(tmp_path):
    argv = gunicorn("-w", "2", "-k", "uvicorn.workers.UvicornH11Worker", app="asgiapp:app")
    with service(tmp_path, argv, "asgiapp,uvicorn", "asgiapp", ASGI_APP) as svc:
        for _ in range(40):
            svc.get()
        svc.wait_for_counts(ASGI_PER_REQUEST, 40)
        svc.stop()
        assert reported_calls(svc.directory, ASGI_PER_REQUEST) == dict.fromkeys(ASGI_PER_REQUEST, 40)
        # The workers died of SIGTERM's default action (UvicornWorker resets it): their files are as the last
        # snapshot left them, still "live" though nobody holds them, and they wrote no report at exit.
        workers = [p for p in svc.read().processes if p.pid != svc.process.pid]
        assert [(p.state, p.alive) for p in workers] == [("live", False)] * len(workers) != []


def test_uvicorn_workers_whose_lifespan_shutdown_calls_export_stop_leave_exact_totals_without_a_wait(tmp_path):
    # The README's workaround for UvicornWorker: the app's lifespan shutdown writes the last snapshot itself.
    shutdown = '''            await send({"type": "lifespan.shutdown.complete"})'''
    stop = "            import fastpatch.export\n\n            fastpatch.export.stop()\n"
    source = ASGI_APP.replace(shutdown, stop + shutdown)
    assert "fastpatch.export.stop()" in source
    argv = gunicorn("-w", "2", "-k", "uvicorn.workers.UvicornH11Worker", app="asgiapp:app")
    # An hour between snapshots: only the one export.stop() writes can hold the counts.
    with service(tmp_path, argv, "asgiapp,uvicorn", "asgiapp", source, interval="3600") as svc:
        for _ in range(40):
            svc.get()
        svc.stop()
        assert reported_calls(svc.directory, ASGI_PER_REQUEST) == dict.fromkeys(ASGI_PER_REQUEST, 40)
        # Every worker that served a request marked its file exited. (A worker still booting when SIGTERM came
        # may die before uvicorn runs the lifespan: it served nothing, and its file stays "live".)
        served = [p.state for p in svc.read().processes
                  if any(s.name == "asgiapp.hello" and s.calls for s in p.stats())]
        assert served == ["exited"] * len(served) != []
