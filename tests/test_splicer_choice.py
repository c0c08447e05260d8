"""Which splicer runs: FASTPATCH_SPLICER=python makes fastpatch splice
everything, the import hook's walk included, with the Python splicer (the C
one's reference, which CI runs the whole suite on once); an unknown value is
refused. And where no sequences were assembled at build time (an editable
install), instrumenting without ``bytecode`` says what to install.

Each case runs in a fresh interpreter: the choice is made once, at first use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest


def _run(code: str, cwd: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("FASTPATCH_")}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=cwd, env={**base, **env}
    )


def test_fastpatch_splicer_python_splices_functions_and_hooked_modules_in_python(tmp_path):
    (tmp_path / "hooked_by_python_splicer.py").write_text("def double(x):\n    return 2 * x\n")
    proc = _run(
        """
        import json, sys
        import fastpatch
        from fastpatch import _splice

        def f(x):
            return x + 1

        fastpatch.instrument(f)
        f(1)
        hook = fastpatch.install_import_hook(["hooked_by_python_splicer"])
        import hooked_by_python_splicer as m
        m.double(1), m.double(2)
        print(json.dumps({
            "f": fastpatch.stats(f).calls,
            "hooked": fastpatch.stats(m.double).calls,
            "instrumented": sorted(hook.selection.instrumented),
            "pysplice": "fastpatch._pysplice" in sys.modules,
            "csplice loaded": "fastpatch._csplice" in sys.modules,
        }))
        # The C splicer stays there for the tests that compare the two.
        assert _splice.c_splicer().__name__ == "fastpatch._csplice"
        """,
        str(tmp_path),
        FASTPATCH_SPLICER="python",
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        "f": 1,
        "hooked": 2,
        "instrumented": ["hooked_by_python_splicer.double"],
        "pysplice": True,
        "csplice loaded": False,
    }


@pytest.mark.parametrize(("splicer", "loaded"), [("c", "fastpatch._csplice"), ("python", "fastpatch._pysplice")])
def test_a_hook_that_may_select_the_standard_library_loads_only_the_splicer_that_runs(tmp_path, splicer, loaded):
    proc = _run(
        """
        import sys
        import fastpatch

        with fastpatch.install_import_hook(["*"]):
            print(sorted(m for m in ("fastpatch._csplice", "fastpatch._pysplice") if m in sys.modules))
        """,
        str(tmp_path),
        FASTPATCH_SPLICER=splicer,
    )
    assert (proc.returncode, proc.stdout) == (0, f"['{loaded}']\n"), proc.stderr


def test_an_unknown_fastpatch_splicer_is_refused_naming_it_and_nothing_is_instrumented(tmp_path):
    proc = _run(
        """
        import fastpatch

        def f(x):
            return x + 1

        original = f.__code__
        try:
            fastpatch.instrument(f)
        except ValueError as exc:
            print(exc)
        assert f.__code__ is original and not fastpatch.is_instrumented(f)
        """,
        str(tmp_path),
        FASTPATCH_SPLICER="rust",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "FASTPATCH_SPLICER='rust' is not a splicer fastpatch knows: 'c' or 'python'\n"


def test_without_bytecode_or_build_time_sequences_instrument_says_what_to_install(tmp_path):
    # As an editable install without the dev extra: no _assembled.py, no bytecode.
    proc = _run(
        """
        import sys
        sys.modules["bytecode"] = None
        sys.modules["fastpatch._assembled"] = None
        import fastpatch

        def f(x):
            return x + 1

        original = f.__code__
        try:
            fastpatch.instrument(f)
        except ImportError as exc:
            print(exc)
        assert f.__code__ is original and not fastpatch.is_instrumented(f)
        """,
        str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (
        "fastpatch has no injected sequences assembled for this interpreter (an editable install, or a wheel "
        "built for another build of this CPython) and cannot assemble them: the bytecode package is not "
        "installed. Install it (pip install -e '.[dev]' in a checkout), or reinstall fastpatch from a "
        "wheel built for this interpreter.\n"
    )
