"""The summary of a CI run (``.ci/run`` prints it last).

    python tools/ci_summary.py WORK

WORK is the run's work directory (``.ci-work``): nox's ``--report`` file
there gives each session's result and time, and ``results/*.json`` (written
by the sessions that run a test suite) each suite's counts. The last line
gives the totals of every suite, ``ci: N passed, N failed, N skipped``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict, List


def summary(work: Path) -> List[str]:
    report = work / "nox-report.json"
    sessions: List[Dict[str, Any]] = json.loads(report.read_text())["sessions"] if report.is_file() else []
    suites = {}
    for path in sorted((work / "results").glob("*.json")):
        suite = json.loads(path.read_text())
        suites[suite["session"]] = suite
    totals = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    lines = []
    for s in sessions:
        line = f"{s['name']:<14} {s['result']:<8} {(s.get('duration') or 0) / 60:5.1f} min"
        suite = suites.get(s["name"])
        if suite is not None and "no result" in suite:
            line += f"  {suite['what']}: no pytest result"
        elif suite is not None:
            line += (f"  {suite['what']}: {suite['passed']} passed, {suite['failed']} failed, "
                     f"{suite['errors']} errors, {suite['skipped']} skipped")
            for key in totals:
                totals[key] += suite[key]
        lines.append(line)
    busy = sum(s.get("duration") or 0 for s in sessions) / 60
    failed = totals["failed"] + totals["errors"]
    return [
        f"== summary: {len(sessions)} sessions, {busy:.1f} session-minutes",
        *lines,
        f"ci: {totals['passed']} passed, {failed} failed, {totals['skipped']} skipped",
    ]


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print("\n".join(summary(Path(sys.argv[1]))))
