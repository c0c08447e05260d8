"""Instrument every Python function of some stdlib modules with the public
``fastpatch.instrument_module``, then run their own unittest suites. Run as
a script by test_stdlib_suites.py, in a fresh process.

    python stdlib_runner.py MOD[,MOD...] TEST[,TEST...]

Prints one JSON line: what the Selections instrumented and skipped (by
reason), the tests run, their failures, and the calls counted.
"""

import io
import json
import sys
import unittest

import fastpatch


def main():
    modules, tests = sys.argv[1].split(","), sys.argv[2].split(",")
    selection = fastpatch.Selection()
    for name in modules:
        selection += fastpatch.instrument_module(name)
    suite = unittest.defaultTestLoader.loadTestsFromNames(tests)
    result = unittest.TextTestRunner(stream=io.StringIO(), verbosity=0).run(suite)
    problems = [f"{test}: {trace[-1500:]}" for test, trace in result.failures + result.errors]
    print(json.dumps({
        "modules": selection.modules,
        "instrumented": len(selection.instrumented),
        "skipped": selection.counts(),
        "tests": result.testsRun,
        "problems": problems,
        "calls": sum(s.calls for s in fastpatch.all_stats()),
        "instrumented_now": sum(1 for s in fastpatch.all_stats()),
    }))


if __name__ == "__main__":
    main()
