"""Acceptance check for the import hook: real packages' own test suites
give the same outcome, test by test, under ``python -m fastpatch run``.

For each package, its test suite (shipped inside the installed wheel) runs
twice with pytest from an empty directory:

* plain: ``python -m pytest --pyargs PKG.tests ...``;
* instrumented: ``python -m fastpatch run -i PKG -o out.json -m pytest ...``,
  so every function of the package (its tests included) is spliced by the
  import hook before its module runs;

and the per-test outcomes (pytest's ``--junitxml``) are compared. The table
gives the number of tests, how many had the same outcome, which differed,
and both wall times. Exit status 1 if any test differs.

    python tools/real_suites.py                      # this interpreter, every package
    python tools/real_suites.py --python .venv/bin/python --packages toolz,simplejson

The interpreter needs fastpatch, pytest and the packages installed
(``--install`` installs the packages with its pip first).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from typing import Dict, List, Tuple

# package -> (the import name to instrument, what pytest runs: a package of
# tests, or paths inside the installed package). networkx runs two of its
# test packages to keep the check to a few minutes.
SUITES: Dict[str, Tuple[str, List[str]]] = {
    "toolz": ("toolz", ["toolz.tests"]),
    "simplejson": ("simplejson", ["simplejson.tests"]),
    "pyflakes": ("pyflakes", ["pyflakes.test"]),
    "tornado": ("tornado", ["tornado.test"]),
    "networkx": ("networkx", ["networkx.classes", "networkx.algorithms.shortest_paths"]),
}


def _outcomes(junit: str) -> Dict[str, str]:
    """test id -> passed / failed / error / skipped, from a JUnit XML file."""
    outcomes: Dict[str, str] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        test_id = f"{case.get('classname')}::{case.get('name')}"
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed"}.get(child.tag, child.tag)
                break
        outcomes[test_id] = outcome
    return outcomes


def _pytest(python: str, prefix: List[str], targets: List[str], junit: str, cwd: str) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTPATCH_")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    cmd = [python, *prefix, "-m", "pytest", "-p", "no:cacheprovider", "-q",
           "--pyargs", *targets, f"--junitxml={junit}", "-o", "addopts=", "-W", "ignore::DeprecationWarning"]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=3600)
    return time.perf_counter() - start


def run_package(python: str, package: str, work: str) -> Dict[str, object]:
    name, targets = SUITES[package]
    plain_xml = os.path.join(work, f"{package}-plain.xml")
    inst_xml = os.path.join(work, f"{package}-fastpatch.xml")
    report = os.path.join(work, f"{package}-fastpatch.json")
    plain_s = _pytest(python, [], targets, plain_xml, work)
    inst_s = _pytest(python, ["-m", "fastpatch", "run", "-i", name, "-o", report], targets, inst_xml, work)
    plain, inst = _outcomes(plain_xml), _outcomes(inst_xml)
    differing = sorted(t for t in set(plain) | set(inst) if plain.get(t) != inst.get(t))
    with open(report) as fh:
        functions = json.load(fh)["functions"]
    return {
        "package": package, "tests": len(plain), "same": len(plain) - len([t for t in differing if t in plain]),
        "differing": differing, "plain_s": plain_s, "fastpatch_s": inst_s,
        "functions_called": len(functions), "calls": sum(f["calls"] for f in functions),
        "outcomes": {o: list(plain.values()).count(o) for o in ("passed", "failed", "error", "skipped")},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=sys.executable, help="the interpreter (default: this one)")
    parser.add_argument("--packages", default=",".join(SUITES), help="comma-separated, of: " + ", ".join(SUITES))
    parser.add_argument("--install", action="store_true", help="pip install the packages and pytest first")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args()
    packages = [p for p in args.packages.split(",") if p]
    unknown = [p for p in packages if p not in SUITES]
    if unknown:
        parser.error(f"unknown package(s): {', '.join(unknown)}")
    if args.install:
        subprocess.run([args.python, "-m", "pip", "install", "-q", "pytest", *packages], check=True)
    version = subprocess.run([args.python, "-c", "import sys; print(sys.version.split()[0])"], capture_output=True,
                             text=True, check=True).stdout.strip()
    results = []
    with tempfile.TemporaryDirectory(prefix="fastpatch-suites-") as work:
        for package in packages:
            print(f"running {package} ...", file=sys.stderr, flush=True)
            results.append(run_package(args.python, package, work))
    print(f"CPython {version}: each suite plain and under `python -m fastpatch run -i PKG -o out.json -m pytest`")
    header = ("package", "tests", "same outcome", "differing", "plain s", "instrumented s", "ratio",
              "functions called", "calls timed")
    rows = [header]
    for r in results:
        rows.append((
            str(r["package"]), str(r["tests"]), str(r["same"]), str(len(r["differing"])),  # type: ignore[arg-type]
            f"{r['plain_s']:.1f}", f"{r['fastpatch_s']:.1f}",
            f"{r['fastpatch_s'] / r['plain_s']:.2f}",  # type: ignore[operator]
            str(r["functions_called"]), str(r["calls"]),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for i, row in enumerate(rows):
        print("| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in results:
        print(f"{r['package']}: plain outcomes {r['outcomes']}")
        for test in r["differing"]:  # type: ignore[attr-defined]
            print(f"  differs: {test}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return 1 if any(r["differing"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
