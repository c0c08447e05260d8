"""Instrument every Python function of some stdlib modules, then run their own
unittest suites. Run as a script by test_stdlib_suites.py, in a fresh process.

    python stdlib_runner.py MOD[,MOD...] TEST[,TEST...]

Prints one JSON line: instrumented definitions, tests run, failures, calls seen.
"""

import importlib
import io
import json
import sys
import types
import unittest

import fastpatch


def instrument_module(module):
    done = 0
    seen = set()

    def visit(namespace):
        nonlocal done
        for obj in list(vars(namespace).values()):
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if isinstance(obj, (staticmethod, classmethod)):
                obj = obj.__func__
            candidates = [obj.fget, obj.fset, obj.fdel] if isinstance(obj, property) else [obj]
            for f in candidates:
                if type(f) is types.FunctionType and f.__module__ == module.__name__:
                    fastpatch.instrument(f)
                    done += 1
            if isinstance(obj, type) and obj.__module__ == module.__name__:
                visit(obj)

    visit(module)
    return done


def main():
    modules, tests = sys.argv[1].split(","), sys.argv[2].split(",")
    instrumented = sum(instrument_module(importlib.import_module(m)) for m in modules)
    suite = unittest.defaultTestLoader.loadTestsFromNames(tests)
    result = unittest.TextTestRunner(stream=io.StringIO(), verbosity=0).run(suite)
    problems = [f"{test}: {trace[-1500:]}" for test, trace in result.failures + result.errors]
    print(json.dumps({
        "instrumented": instrumented,
        "tests": result.testsRun,
        "problems": problems,
        "calls": sum(s.calls for s in fastpatch.all_stats()),
        "instrumented_now": sum(1 for s in fastpatch.all_stats()),
    }))


if __name__ == "__main__":
    main()
