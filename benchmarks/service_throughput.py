"""Throughput of a real service: gunicorn (sync workers) serving a small Flask
app on 127.0.0.1, in three modes, driven by wrk for a fixed time.

    python benchmarks/service_throughput.py [--rounds N] [--seconds S] [--workers W] [--connections C]

The modes are whole services, started fresh for each measurement::

    plain      gunicorn -w W app:app                    (no FASTPATCH_* variable)
    fastpatch  FASTPATCH_INCLUDE=app,flask,werkzeug     (every function of the app, Flask and
               gunicorn -w W app:app                     Werkzeug spliced; reports at exit)
    telemetry  the same with FASTPATCH_TELEMETRY=1      (and a snapshot every second)

Each round runs every mode once, in turn, so that a noisy machine hits all
modes alike; the table gives each mode's median and best requests/s over the
rounds and the ratio of medians to plain, with the load average before and
after (the machine may be shared). The instrumented modes are checked: the
app's handler counted at least every request wrk completed (requests still in
flight when wrk stops may be served and counted too), and in telemetry mode
``python -m fastpatch report DIR`` gives the same count as the reports written
at exit.

Needs gunicorn and flask (the test extra has both), fastpatch installed with
its ``fastpatch.pth`` (``pip install .``, not ``-e``: FASTPATCH_INCLUDE
activates through it), and wrk (Debian: ``apt-get install wrk``). Without wrk
it falls back to a bounded Python load generator (threads with http.client),
which is itself CPU-bound on a small machine: its numbers say less, and the
table says which generator ran.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time

MODES = ("plain", "fastpatch", "telemetry")
INCLUDE = "app,flask,werkzeug"

APP = '''
from flask import Flask, jsonify, request

app = Flask(__name__)


@app.route("/hello")
def hello():
    return jsonify(greeting="hello", name=request.args.get("name", "world"))
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def environment(mode: str, work: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTPATCH_")}
    if mode != "plain":
        env.update(FASTPATCH_INCLUDE=INCLUDE, FASTPATCH_OUTPUT=os.path.join(work, "report-{pid}.json"))
    if mode == "telemetry":
        env.update(FASTPATCH_TELEMETRY="1", FASTPATCH_TELEMETRY_DIR=os.path.join(work, "telemetry"))
    return env


def wait_until_served(port: int, server: subprocess.Popen, timeout: float = 120.0) -> None:
    """Bounded poll: one request answered (a worker is up). It is counted like any other."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
            conn.request("GET", "/hello")
            if conn.getresponse().status == 200:
                conn.close()
                return
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"gunicorn did not serve on 127.0.0.1:{port} (exit status {server.poll()})")
        time.sleep(0.05)


def drive_wrk(port: int, seconds: int, connections: int) -> int:
    """wrk for ``seconds`` (whole seconds: wrk's unit); the requests it completed."""
    if seconds == 0:
        return 0
    out = subprocess.run(["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s",
                          f"http://127.0.0.1:{port}/hello?name=bench"], capture_output=True, text=True, check=True)
    found = re.search(r"^\s*(\d+) requests in", out.stdout, re.M)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*", out.stdout)
    if found is None or errors is not None:
        raise SystemExit(f"wrk failed or saw errors:\n{out.stdout}")
    return int(found.group(1))


def drive_python(port: int, seconds: int, connections: int) -> int:
    """``connections`` threads, each one request at a time, for ``seconds``; the requests completed."""
    stop = time.monotonic() + seconds
    done = [0] * connections

    def client(i: int) -> None:
        while time.monotonic() < stop:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.request("GET", "/hello?name=bench")
            response = conn.getresponse()
            response.read()
            conn.close()
            if response.status != 200:
                raise SystemExit(f"status {response.status}")
            done[i] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done)


def hello_calls_at_exit(work: str) -> int:
    total = 0
    for name in os.listdir(work):
        if name.startswith("report-") and name.endswith(".json"):
            with open(os.path.join(work, name)) as fh:
                total += sum(f["calls"] for f in json.load(fh)["functions"] if f["name"] == "app.hello")
    return total


def hello_calls_in_telemetry(directory: str) -> int:
    out = subprocess.run([sys.executable, "-m", "fastpatch", "report", "-f", "json", directory],
                         capture_output=True, text=True, check=True)
    return sum(f["calls"] for f in json.loads(out.stdout)["functions"] if f["name"] == "app.hello")


def measure(mode: str, args: argparse.Namespace, drive) -> float:
    """One fresh service in ``mode``: warm-up, then requests/s over ``args.seconds``."""
    with tempfile.TemporaryDirectory(prefix="fp-throughput-") as work:
        with open(os.path.join(work, "app.py"), "w") as fh:
            fh.write(APP)
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-w", str(args.workers), "-b",
                                   f"127.0.0.1:{port}", "--log-level", "warning", "app:app"],
                                  cwd=work, env=environment(mode, work), stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_until_served(port, server)
            warm = drive(port, args.warmup, args.connections)
            start = time.perf_counter()
            served = drive(port, args.seconds, args.connections)
            rate = served / (time.perf_counter() - start)
            server.send_signal(signal.SIGTERM)
            server.wait(120)
        finally:
            try:
                os.killpg(server.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            server.wait()
        if mode != "plain":
            counted = hello_calls_at_exit(work)
            if counted < 1 + warm + served:
                raise SystemExit(f"{mode}: app.hello counted {counted} calls, fewer than the {1 + warm + served} "
                                 "requests served: the app was not instrumented")
        if mode == "telemetry":
            live = hello_calls_in_telemetry(os.path.join(work, "telemetry"))
            if live != counted:
                raise SystemExit(f"telemetry: report DIR counts {live} calls of app.hello, the reports {counted}")
        return rate


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10, help="measured seconds per mode and round")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of load before each measurement")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn sync workers")
    parser.add_argument("--connections", type=int, default=4, help="concurrent connections of the load generator")
    parser.add_argument("--python-load", action="store_true", help="use the Python load generator even if wrk exists")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.seconds <= 0 or args.warmup < 0 or args.workers < 1 or args.connections < 1:
        parser.error("--rounds, --workers and --connections must be at least 1, --seconds positive")
    paths = sysconfig.get_paths()
    if not any(os.path.exists(os.path.join(paths[k], "fastpatch.pth")) for k in ("purelib", "platlib")):
        parser.error("fastpatch.pth is not installed in this Python: install fastpatch with `pip install .`")
    for module in ("gunicorn", "flask"):
        if subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode:
            parser.error(f"{module} is not installed in this Python")
    use_wrk = shutil.which("wrk") is not None and not args.python_load
    drive = drive_wrk if use_wrk else drive_python
    generator = "wrk -t 1" if use_wrk else "Python threads (http.client)"

    load_before = os.getloadavg()
    rates: dict = {mode: [] for mode in MODES}
    for round_no in range(1, args.rounds + 1):
        for mode in MODES:
            rates[mode].append(measure(mode, args, drive))
            print(f"round {round_no} {mode:<10} {rates[mode][-1]:9.0f} requests/s", file=sys.stderr, flush=True)
    load_after = os.getloadavg()

    plain = statistics.median(rates["plain"])
    print(f"gunicorn {args.workers} sync workers + Flask on 127.0.0.1, {generator}, {args.connections} connections, "
          f"{args.seconds} s x {args.rounds} rounds; CPython {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    print(f"{'mode':<10} {'median req/s':>13} {'best req/s':>11} {'vs plain':>9}")
    for mode in MODES:
        median = statistics.median(rates[mode])
        print(f"{mode:<10} {median:13.0f} {max(rates[mode]):11.0f} {median / plain:9.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
