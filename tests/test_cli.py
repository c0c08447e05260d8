"""``python -m fastpatch run`` and ``report``: the program runs as Python
would run it, the report is written at exit, and bad input gets a clear
message and the right exit status."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest

from sample_pkgs import write_tree
from test_children import needs_pth

PROGRAM = '''
import sys
from helper import slow


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def main():
    def twice(x):
        return 2 * x
    print("argv", sys.argv)
    print("path0", sys.path[0])
    print("file", __file__, __name__, __spec__, __loader__.__class__.__name__)
    print("result", fib(10), slow(5), [twice(i) for i in range(4)])


if __name__ == "__main__":
    main()
    if len(sys.argv) > 1 and sys.argv[1] == "fail":
        raise ValueError("the program failed")
    if len(sys.argv) > 1:
        sys.exit(int(sys.argv[1]))
'''


# Before 3.12 (PEP 709) a list comprehension is a function of its own, timed too.
LISTCOMP = {"__main__.main.<locals>.<listcomp>": 1} if sys.version_info < (3, 12) else {}


@pytest.fixture
def project(tmp_path):
    write_tree(str(tmp_path), {
        "prog.py": PROGRAM,
        "helper.py": "def slow(n):\n    return sum(range(n))\n",
        "app/__init__.py": "def work(n):\n    return n * 2\n",
        "app/__main__.py": """
            import sys
            from app import work
            print('main', __name__, __spec__.name, sys.argv, work(21))
        """,
        "app/cli.py": """
            import sys
            def go():
                return 3
            if __name__ == '__main__':
                print('cli', go(), sys.argv[1:])
        """,
    })
    return tmp_path


def fastpatch_cmd(*args, cwd, env=None, check_status=None):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FASTPATCH_")}
    environment.update(env or {})
    result = subprocess.run([sys.executable, "-m", "fastpatch", *args], cwd=str(cwd), capture_output=True,
                            text=True, timeout=120, env=environment)
    if check_status is not None:
        assert result.returncode == check_status, result.stderr
    return result


def _table(stderr):
    """name -> calls, from the text table."""
    rows = {}
    for line in stderr.splitlines():
        parts = line.split()
        if len(parts) == 9 and parts[0].isdigit():
            rows[parts[-1]] = int(parts[0])
    return rows


def test_run_a_script_as_python_would_with_its_report_on_stderr(project):
    result = fastpatch_cmd("run", "prog.py", cwd=project, check_status=0)
    out = result.stdout.splitlines()
    assert out[0] == "argv ['prog.py']"
    assert out[1] == f"path0 {os.path.realpath(project)}"
    assert out[2] == f"file {os.path.join(str(project), 'prog.py')} __main__ None SourceFileLoader"
    assert out[3] == "result 55 10 [0, 2, 4, 6]"
    assert _table(result.stderr) == {
        "__main__.fib": 177, "__main__.main": 1, "helper.slow": 1, "__main__.main.<locals>.twice": 4, **LISTCOMP,
    }


def test_the_exit_status_is_the_programs(project):
    assert fastpatch_cmd("run", "prog.py", "3", cwd=project).returncode == 3
    result = fastpatch_cmd("run", "prog.py", "fail", cwd=project)
    assert result.returncode == 1
    assert "ValueError: the program failed" in result.stderr
    assert 'File "' + os.path.join(str(project), "prog.py") + '", line' in result.stderr
    assert "fastpatch" not in result.stderr.split("ValueError")[0].replace("__main__.", "")  # no frame of ours
    assert _table(result.stderr)["__main__.fib"] == 177  # the report is written all the same
    result = fastpatch_cmd("run", "-c", "raise SystemExit('bye')", cwd=project)
    assert (result.returncode, result.stderr.splitlines()[0]) == (1, "bye")


def test_run_dash_m_a_package_and_a_module(project):
    result = fastpatch_cmd("run", "-m", "app", "x", cwd=project, check_status=0)
    argv = [os.path.join(str(project), "app", "__main__.py"), "x"]
    assert result.stdout == f"main __main__ app.__main__ {argv} 42\n"
    assert _table(result.stderr) == {"app.work": 1}
    result = fastpatch_cmd("run", "-m", "app.cli", "a", "-q", cwd=project, check_status=0)
    assert result.stdout == "cli 3 ['a', '-q']\n"
    assert _table(result.stderr) == {"app.cli.go": 1}


def test_run_a_directory_or_zip_with_a_main_module(project):
    import zipfile

    write_tree(str(project), {"bundle/__main__.py": "import sys\ndef go():\n    return sys.argv\nprint(go())\n"})
    with zipfile.ZipFile(str(project / "bundle.pyz"), "w") as zf:
        zf.write(str(project / "bundle" / "__main__.py"), "__main__.py")
    for target in ("bundle", "bundle.pyz"):
        result = fastpatch_cmd("run", target, "x", cwd=project, check_status=0)
        assert result.stdout == f"{[target, 'x']}\n"
        assert _table(result.stderr) == {"__main__.go": 1}


def test_run_dash_c(project):
    result = fastpatch_cmd("run", "-c", "import sys, helper; print(sys.argv, repr(sys.path[0]), helper.slow(3))",
                           "arg", cwd=project, check_status=0)
    assert result.stdout == "['-c', 'arg'] '' 3\n"
    assert _table(result.stderr) == {"helper.slow": 1}


def test_include_and_exclude_patterns(project):
    result = fastpatch_cmd("run", "-i", "helper", "-i", "__main__", "-x", "__main__:fib", "prog.py",
                           cwd=project, check_status=0)
    assert _table(result.stderr) == {
        "__main__.main": 1, "helper.slow": 1, "__main__.main.<locals>.twice": 4, **LISTCOMP,
    }


def test_json_output_and_report_merging(project):
    fastpatch_cmd("run", "-o", "one.json", "prog.py", cwd=project, check_status=0)
    fastpatch_cmd("run", "-o", "two-{pid}.json", "-f", "json", "prog.py", cwd=project, check_status=0)
    [two] = [f for f in os.listdir(str(project)) if f.startswith("two-")]
    with open(os.path.join(str(project), "one.json")) as fh:
        report = json.load(fh)
    assert report["format"] == "fastpatch" and report["version"] == 1
    assert {f["name"]: f["calls"] for f in report["functions"]}["__main__.fib"] == 177
    merged = fastpatch_cmd("report", "one.json", two, cwd=project, check_status=0)
    assert _table(merged.stdout)["__main__.fib"] == 354
    fastpatch_cmd("report", "-o", "both.pstats", "one.json", two, cwd=project, check_status=0)
    import pstats

    stats = pstats.Stats(os.path.join(str(project), "both.pstats"))
    assert any(func[2] == "fib" and value[1] == 354 for func, value in stats.stats.items())


def test_fastpatch_enabled_0_runs_the_program_without_instrumentation(project):
    result = fastpatch_cmd("run", "-o", "none.json", "prog.py", cwd=project, env={"FASTPATCH_ENABLED": "0"},
                           check_status=0)
    assert "result 55" in result.stdout
    assert "without instrumentation" in result.stderr
    assert not os.path.exists(os.path.join(str(project), "none.json"))


def test_run_never_times_the_standard_library_or_site_packages_by_default(project):
    result = fastpatch_cmd("run", "-m", "json.tool", "--help", cwd=project, check_status=0)
    assert "json is part of the standard library or installed in site-packages" in result.stderr
    assert "choose what to time with -i PATTERN" in result.stderr
    assert "(no instrumented function was called)" in result.stderr


# --------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------


def _one_error_line(result, status=2):
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "python -m fastpatch: error: choose a command: run, report or top"),
        (["frobnicate"], "python -m fastpatch: error: unknown command 'frobnicate': choose run, report, top or export"),
        (["run", "--bogus", "prog.py"], "python -m fastpatch run: error: unrecognized arguments: --bogus"),
        (["run"], "python -m fastpatch run: error: nothing to run: give -m MODULE, -c CODE or SCRIPT"),
        (["run", "-f", "xml", "prog.py"],
         "python -m fastpatch run: error: argument -f/--format: invalid choice: 'xml'"),
        (["run", "missing.py"],
         "python -m fastpatch run: error: can't open file 'missing.py': [Errno 2] No such file or directory"),
        (["run", "-i", "a..b", "prog.py"], "python -m fastpatch run: error: bad pattern 'a..b'"),
        (["report"], "fastpatch: error: name a telemetry directory or set FASTPATCH_SERVICE"),
    ],
)
def test_bad_input_gets_one_clear_line_and_status_2(project, args, message):
    line = _one_error_line(fastpatch_cmd(*args, cwd=project))
    assert line.startswith(message), line


def test_an_unwritable_output_is_refused_before_the_program_runs(project):
    result = fastpatch_cmd("run", "-o", "no/such/dir/out.json", "-c", "open('ran', 'w').close()", cwd=project)
    line = _one_error_line(result)
    assert line == ("python -m fastpatch run: error: cannot write the report to no/such/dir/out.json: "
                    "directory no/such/dir does not exist")
    assert not os.path.exists(os.path.join(str(project), "ran"))


def test_a_module_that_does_not_exist(project):
    result = fastpatch_cmd("run", "-m", "no_such_module_xyz", cwd=project)
    assert _one_error_line(result, 1) == "python -m fastpatch run: error: No module named no_such_module_xyz"
    assert "calls" not in result.stderr  # the program never started: no report


def test_a_pattern_that_matched_nothing_is_named_at_exit(project):
    result = fastpatch_cmd("run", "-i", "helper", "-i", "nothing_like_this", "-i", "helper:nope", "prog.py",
                           cwd=project, check_status=0)
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert warnings == [
        "fastpatch: warning: pattern 'nothing_like_this' matched nothing",
        "fastpatch: warning: pattern 'helper:nope' matched nothing",
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("garbage", "not a fastpatch report"),
        ('{"format": "other"}', "not a fastpatch report"),
        ('{"format": "fastpatch", "version": 99, "functions": []}', "version 99"),
    ],
)
def test_a_corrupt_or_foreign_report_is_refused(project, content, message):
    (project / "bad.json").write_text(content)
    line = _one_error_line(fastpatch_cmd("report", "bad.json", cwd=project))
    assert "bad.json" in line and message in line, line


def test_help_describes_both_commands(project):
    top = fastpatch_cmd("--help", cwd=project, check_status=0).stdout
    assert "run       run a program" in top and "report    merge report files" in top
    run = fastpatch_cmd("run", "--help", cwd=project, check_status=0).stdout
    for option in ("-o FILE", "-f", "-s", "-i PATTERN", "-x PATTERN", "-m MODULE", "-c CODE", "SCRIPT"):
        assert option in run


def test_the_console_script(project):
    script = shutil.which("fastpatch", path=sysconfig.get_path("scripts"))
    if script is None:
        pytest.skip("the fastpatch console script is not installed in this environment")
    result = subprocess.run([script, "run", "prog.py"], cwd=str(project), capture_output=True, text=True, timeout=60,
                            env={k: v for k, v in os.environ.items() if not k.startswith("FASTPATCH_")})
    assert result.returncode == 0, result.stderr
    assert f"path0 {os.path.realpath(project)}" in result.stdout
    assert _table(result.stderr)["__main__.fib"] == 177


@pytest.mark.parametrize("spelling", ["separate", "attached"])
def test_run_takes_unambiguous_prefixes_of_its_long_options_as_argparse_does(project, spelling):
    options = [("--inc", "helper"), ("--inc", "__main__"), ("--ex", "__main__:fib"), ("--out", "r.txt"),
               ("--form", "json"), ("--so", "calls")]
    if spelling == "separate":
        args = [part for option in options for part in option]
    else:
        args = [f"{name}={value}" for name, value in options]
    result = fastpatch_cmd("run", *args, "prog.py", "7", cwd=project)
    assert result.returncode == 7, result.stderr
    assert result.stdout.splitlines()[0] == "argv ['prog.py', '7']"
    with open(os.path.join(str(project), "r.txt")) as fh:
        report = json.load(fh)
    assert {f["name"]: f["calls"] for f in report["functions"]} == {
        "__main__.main": 1, "helper.slow": 1, "__main__.main.<locals>.twice": 4, **LISTCOMP,
    }


def test_an_ambiguous_long_option_is_refused_as_argparse_refuses_it(capsys):
    from fastpatch._cli import _run_parser, _split_run_args

    parser = _run_parser("python -m fastpatch")  # --sort and --sample share a prefix
    options, kind, target, program_args = _split_run_args(["--s", "3", "prog.py", "x"], parser)
    assert (kind, target, program_args) == ("script", "3", ["prog.py", "x"])
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(options)
    assert exc.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith(
        "python -m fastpatch run: error: ambiguous option: --s could match --sort, --sample"
    )


SORTED_CHILD = "import helper\nhelper.a_few()\nfor i in range(200): helper.b_many()\n"


@needs_pth
def test_run_dash_s_sorts_the_tables_of_child_processes_too(project):
    write_tree(str(project), {
        "helper.py": "def a_few():\n    return 1\ndef b_many():\n    return 2\n",
        "spawner.py": f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', {SORTED_CHILD!r}], check=True)\n",
    })
    result = fastpatch_cmd("run", "-s", "name", "-i", "helper", "spawner.py", cwd=project, check_status=0)
    lines = result.stderr.splitlines()
    [start] = [i for i, line in enumerate(lines) if line.startswith("fastpatch: process ")]
    rows = [line.split()[::8] for line in lines[start + 2:start + 4]]
    assert rows == [["1", "helper.a_few"], ["200", "helper.b_many"]]


@needs_pth
def test_an_unknown_fastpatch_sort_gets_one_warning_and_the_default(project):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FASTPATCH_")}
    environment.update(FASTPATCH_INCLUDE="helper", FASTPATCH_SORT="speed")
    result = subprocess.run([sys.executable, "-c", "import helper\nhelper.slow(3)"], cwd=str(project),
                            capture_output=True, text=True, timeout=60, env=environment)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == ("fastpatch: FASTPATCH_SORT='speed' is not one of calls, errors, max, mean, name, total; "
                        "using total")
    assert lines[1].startswith("fastpatch: process ") and lines[3].split()[::8] == ["1", "helper.slow"]
