"""The command line: ``python -m fastpatch`` and the ``fastpatch`` script.

::

    python -m fastpatch run [-o FILE] [-f text|json|pstats] [-s SORT] [-i PATTERN]... [-x PATTERN]...
                            (-m MODULE | -c CODE | SCRIPT) [ARGS...]
    python -m fastpatch report [-o FILE] [-f text|json|pstats] [-s SORT] (FILE | DIR)...
    python -m fastpatch top [DIR] [-d SECONDS] [-s SORT] [-n ITERATIONS] [--json]

``run`` runs a program as ``python`` would (a real ``__main__``, its
``sys.argv``, ``__file__`` and ``sys.path[0]``) with the import hook
installed, its own main code spliced before it runs, the settings handed
to its child processes through the environment, and the report written at
exit. Its exit status is the program's.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from types import CodeType, ModuleType, TracebackType
    from typing import Any, Dict, List, Optional, Sequence, TextIO, Tuple

# The module run replaces as __main__ (fastpatch.__main__, or the console
# script): kept alive while its frame runs.
_previous_main: Optional[ModuleType] = None


class _UsageError(Exception):
    """Bad input: a one-line message and exit status 2 (or ``status``)."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


def _prog() -> str:
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "fastpatch" if name in ("fastpatch", "fastpatch.exe") else "python -m fastpatch"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command line; returns the exit status. The unhandled exception
    of the program that ``run`` runs goes on up to the interpreter, which
    reports it as it reports its own program's."""
    args = list(sys.argv[1:] if argv is None else argv)
    prog = _prog()
    top = _top_parser(prog)
    if not args:
        top.print_usage(sys.stderr)
        sys.stderr.write(f"{prog}: error: choose a command: run, report or top\n")
        return 2
    command, rest = args[0], args[1:]
    if command in ("-h", "--help"):
        top.print_help()
        return 0
    if command == "--version":
        from ._version import __version__

        print(f"fastpatch {__version__}")
        return 0
    if command == "run":
        return _run(prog, rest)
    if command == "report":
        return _report(prog, rest)
    if command == "top":
        from . import _top

        return _top.main(prog, rest)
    if command == "export":
        return _export(prog, rest)
    top.print_usage(sys.stderr)
    sys.stderr.write(f"{prog}: error: unknown command {command!r}: choose run, report, top or export\n")
    return 2


def _top_parser(prog: str) -> argparse.ArgumentParser:
    import argparse

    return argparse.ArgumentParser(
        prog=prog,
        usage=f"{prog} {{run,report,top}} ...",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Time every function of a Python program (fastpatch's whole-program mode).",
        epilog=(
            "commands:\n"
            "  run       run a program (-m MODULE, -c CODE or SCRIPT) with its functions timed,\n"
            "            and write the report at exit\n"
            "  report    merge report files (JSON) and print or convert them\n"
            "  top       a live table of a telemetry directory's functions\n"
            "  export    export prometheus: serve a live telemetry directory on /metrics\n\n"
            f"'{prog} run -h', '{prog} report -h', '{prog} top -h' and '{prog} export prometheus -h'\n"
            "describe each.\n\n"
            "environment: FASTPATCH_INCLUDE (comma-separated patterns; activates fastpatch in any\n"
            "Python process), FASTPATCH_EXCLUDE, FASTPATCH_OUTPUT ({pid} is the process id),\n"
            "FASTPATCH_FORMAT, FASTPATCH_SORT, FASTPATCH_ENABLED=0 (everything off), FASTPATCH_CLOCK."
        ),
    )


def _add_report_options(parser: argparse.ArgumentParser) -> None:
    from ._reports import formats
    from ._reports.table import SORT_KEYS

    parser.add_argument(
        "-o", "--output", metavar="FILE",
        help="write the report to FILE ({pid} becomes the process id); default: the text table on stderr",
    )
    parser.add_argument(
        "-f", "--format", choices=formats.names(),
        help=f"report format (default: from the extension of -o: {formats.extensions_text()})",
    )
    parser.add_argument(
        "-s", "--sort", choices=sorted(SORT_KEYS), default="total", help="sort key of the table (default: total)"
    )


# --------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------


def _export(prog: str, args: List[str]) -> int:
    """``export prometheus ...``: see fastpatch.export.prometheus.main."""
    if not args or args[0] in ("-h", "--help"):
        stream = sys.stdout if args else sys.stderr
        stream.write(f"usage: {prog} export prometheus [DIR] [--port PORT] [--addr ADDR]\n\n"
                     "Serve the merged numbers of a live telemetry directory to Prometheus on /metrics.\n")
        return 0 if args else 2
    if args[0] != "prometheus":
        sys.stderr.write(f"{prog} export: error: unknown exporter {args[0]!r}: choose prometheus\n")
        return 2
    try:
        from .export import prometheus
    except ImportError as exc:
        if not (exc.name or "").startswith("prometheus_client"):
            raise
        sys.stderr.write(f"{prog} export prometheus: error: needs prometheus_client: "
                         "pip install 'fastpatch[prometheus]'\n")
        return 2
    return prometheus.main(f"{prog} export", args[1:])


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------


def _report(prog: str, args: List[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog=f"{prog} report",
        description="Merge fastpatch JSON reports (one per process) and live telemetry directories exactly, "
                    "and print or convert the result.",
    )
    _add_report_options(parser)
    parser.add_argument("files", nargs="*", metavar="FILE|DIR",
                        help="JSON reports written by run or FASTPATCH_OUTPUT, or live telemetry directories "
                             "(default: the directory of FASTPATCH_SERVICE)")
    ns = parser.parse_args(args)
    files = ns.files
    if not files:
        from .export._writer import service_directories

        found = service_directories()
        if isinstance(found, int):
            return found
        files = [found]
    return report_main(files, ns.output, ns.format, ns.sort)


def report_main(files: Sequence[str], output: Optional[str] = None, fmt: Optional[str] = None,
                sort: str = "total") -> int:
    """``python -m fastpatch report [-o FILE] [-f FORMAT] [-s SORT] FILE...``
    without the argument parsing: read and merge every JSON report in
    ``files`` (``_reports.merge.read``) and write the result to ``output``
    (format ``fmt`` or from its extension; ``{pid}`` is substituted as
    everywhere), or, with no ``output``, print it to stdout in format
    ``fmt`` (default: the text table; a binary format needs ``output``).
    ``sort`` orders the table.

    Returns the exit status: 0, or 2 after a one-line ``fastpatch: error:
    ...`` on stderr for bad options, an unwritable output (checked before
    reading anything), a file that cannot be read, is not a fastpatch
    report or is given twice. 1 if stdout was closed early (``| head``).
    """
    from ._reports import formats, merge
    from ._reports import output as out
    from ._reports.schema import ReportError

    try:
        formats.check_sort(sort)
        chosen = formats.get(fmt if fmt is not None else formats.DEFAULT)
        if not files:
            raise ReportError("no report files given")
        if output is None and chosen.binary:
            raise ReportError(f"{chosen.name} is a binary format: give an output file with -o")
        if output is not None:
            out.check_writable(output, fmt)
        merged = merge.read(files)
        if output is not None:
            out.write(output, fmt, report=merged, sort=sort, keep_others=False)
            return 0
        text = chosen.text(merged, sort)
    except ReportError as exc:
        sys.stderr.write("fastpatch: error: " + str(exc).replace("\n", "\\n") + "\n")
        return 2
    try:
        sys.stdout.write(_encodable(text, sys.stdout))
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader left (`| head`); keep the interpreter's final flush from failing too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 1
    return 0


def _encodable(text: str, stream: TextIO) -> str:
    """``text`` with every character that ``stream`` cannot encode (a lone
    surrogate, anything beyond ASCII in the C locale) as a backslash escape."""
    encoding = getattr(stream, "encoding", None) or "utf-8"
    return text.encode(encoding, "backslashreplace").decode(encoding)


# --------------------------------------------------------------------------
# run
# --------------------------------------------------------------------------


def _run_parser(prog: str) -> argparse.ArgumentParser:
    import argparse

    from ._reports import formats

    parser = argparse.ArgumentParser(
        prog=f"{prog} run",
        usage=(
            f"{prog} run [-o FILE] [-f {'|'.join(formats.names())}] [-s SORT] [-i PATTERN]... [-x PATTERN]...\n"
            f"{' ' * (len(prog) + 11)}[--sample N] (-m MODULE | -c CODE | SCRIPT) [ARGS...]"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Run a Python program with its functions timed, and write the report at exit.\n\n"
            "Without -i, the program's own code is timed: the modules of the script's directory\n"
            "(and the script itself), or the top-level package of -m MODULE; never the standard\n"
            "library or site-packages. Child processes are timed too, each writing its own report\n"
            "(with -o FILE and no {pid} in it, a child writes FILE with .PID before the extension)."
        ),
        epilog=(
            "patterns: 'myapp' selects myapp and every submodule; globs match within a dotted\n"
            "name ('myapp.*.views'); 'module:Qual.name' selects one function or method (a class:\n"
            "its methods); an absolute directory ('/srv/app/src') selects the modules and packages\n"
            "found in it. Exclusion wins."
        ),
    )
    _add_report_options(parser)
    parser.add_argument(
        "-i", "--include", action="append", default=[], metavar="PATTERN", help="time what PATTERN selects (repeatable)"
    )
    parser.add_argument(
        "-x", "--exclude", action="append", default=[], metavar="PATTERN", help="never time what PATTERN selects"
    )
    parser.add_argument(
        "--sample", type=_sample_argument, default=None, metavar="N",
        help="count every call and time one in N, at random (estimated times); 0 counts only; 1 (the default) times "
        "every call",
    )
    parser.add_argument("-m", dest="module", metavar="MODULE", help="run library module MODULE as a script")
    parser.add_argument("-c", dest="code", metavar="CODE", help="run the program passed as a string")
    parser.add_argument(
        "script", nargs="?", metavar="SCRIPT", help="the program file (or a directory or zip with __main__.py)"
    )
    parser.add_argument("args", nargs="*", metavar="ARGS", help="passed to the program as sys.argv[1:]")
    return parser


def _sample_argument(text: str) -> int:
    """``--sample``'s value, or argparse's one-line usage error."""
    import argparse

    from ._sampling import sample_from_text

    try:
        return sample_from_text(text, "--sample")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _split_run_args(
    args: List[str], parser: argparse.ArgumentParser
) -> Tuple[List[str], Optional[str], Optional[str], List[str]]:
    """``run``'s own options (those of ``parser``), then what to run (kind,
    target) and its arguments: everything after the target belongs to the
    program, as with ``python`` itself."""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            if i + 1 < len(args):
                return args[:i], "script", args[i + 1], args[i + 2:]
            return args[:i], None, None, []
        if arg in ("-m", "-c"):
            if i + 1 >= len(args):
                return args[: i + 1], None, None, []  # argparse reports the missing value
            return args[:i], "module" if arg == "-m" else "code", args[i + 1], args[i + 2:]
        if arg[:2] in ("-m", "-c") and not arg.startswith("--"):
            return args[:i], "module" if arg[1] == "m" else "code", arg[2:], args[i + 1:]
        if _takes_next_argument(arg, parser):
            i += 2
            continue
        if arg.startswith("-") and arg != "-":
            i += 1
            continue
        return args[:i], "script", arg, args[i + 1:]
    return args, None, None, []


def _takes_next_argument(arg: str, parser: argparse.ArgumentParser) -> bool:
    """Whether ``arg`` is an option of ``parser`` whose value is the next
    argument: as argparse reads it, a long option may be any unambiguous
    prefix of one (``--out FILE``). An ambiguous or unknown option is left
    to argparse, which says what is wrong with it."""
    actions = parser._option_string_actions
    action = actions.get(arg)
    if action is None and arg.startswith("--") and "=" not in arg:
        matches = {id(a): a for option, a in actions.items() if option.startswith(arg)}
        if len(matches) == 1:
            [action] = matches.values()
    return action is not None and action.nargs != 0


def _run(prog: str, args: List[str]) -> int:
    parser = _run_parser(prog)
    options, kind, target, program_args = _split_run_args(args, parser)
    ns = parser.parse_args(options)
    if kind is None or not target:
        parser.error("nothing to run: give -m MODULE, -c CODE or SCRIPT")
    assert target is not None
    try:
        return _run_program(prog, ns, kind, target, program_args)
    except _UsageError as exc:
        from ._activate import deactivate

        deactivate()  # the program never started: no report
        sys.stderr.write(f"{prog} run: error: {exc}\n")
        return exc.status


def _run_program(prog: str, ns: argparse.Namespace, kind: str, target: str, program_args: List[str]) -> int:
    from ._errors import say
    from ._select import PatternError, Patterns

    enabled = os.environ.get("FASTPATCH_ENABLED", "").strip() != "0"
    try:
        Patterns(ns.include, ns.exclude)
    except PatternError as exc:
        raise _UsageError(str(exc)) from None
    if kind == "script":
        _check_script(target)
    if enabled and ns.output is not None:
        from ._reports.output import check_writable
        from ._reports.schema import ReportError

        try:
            check_writable(ns.output, ns.format)  # before the program runs: no run is wasted
        except ReportError as exc:
            raise _UsageError(str(exc)) from None

    include = list(ns.include)
    if not include:
        include, why_none = _default_include(kind, target)
        if why_none:
            say(f"{why_none}; choose what to time with -i PATTERN")
    if enabled:
        from ._activate import activate

        activate(
            include, ns.exclude, output=ns.output, fmt=ns.format, sort=ns.sort, root=True,
            warn_unmatched=bool(ns.include), sample=ns.sample,
        )
    else:
        say("FASTPATCH_ENABLED=0: running the program without instrumentation")
    return _execute(kind, target, program_args, splice=enabled)


# -- what to run -------------------------------------------------------------


def _check_script(script: str) -> None:
    if not os.path.exists(script):
        raise _UsageError(f"can't open file {script!r}: [Errno 2] No such file or directory")
    if os.path.isdir(script) and not os.path.exists(os.path.join(script, "__main__.py")):
        raise _UsageError(f"can't find '__main__' module in {script!r}")


def _system_dirs() -> List[str]:
    """The standard library and site-packages directories."""
    import site
    import sysconfig

    paths = sysconfig.get_paths()
    dirs = [paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths]
    if hasattr(site, "getsitepackages"):
        dirs += site.getsitepackages()
    if hasattr(site, "getusersitepackages"):
        dirs.append(site.getusersitepackages())
    return [os.path.realpath(d) for d in dirs if d]


def _in_system_dir(path: str, system_dirs: List[str]) -> bool:
    real = os.path.realpath(path)
    parts = real.split(os.sep)
    if "site-packages" in parts or "dist-packages" in parts:
        return True
    return any(real == d or real.startswith(d + os.sep) for d in system_dirs)


def _default_include(kind: str, target: str) -> Tuple[List[str], str]:
    """The program's own code, and why there is none (empty if there is)."""
    system = _system_dirs()
    if kind == "module":
        top = target.split(".")[0]
        import importlib.util

        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            spec = None
        if spec is not None:
            locations = [str(p) for p in (spec.submodule_search_locations or ())]
            if not locations and spec.has_location and spec.origin:
                locations = [spec.origin]
            if not locations or all(_in_system_dir(p, system) for p in locations):
                return [], (
                    f"{top} is part of the standard library or installed in site-packages, "
                    "which run never times by default"
                )
        return [top], ""
    if kind == "code":
        directory = os.getcwd()
    elif os.path.isdir(target) or not target.endswith((".py", ".pyw", ".pyc")) and _is_zip(target):
        return ["__main__"], ""
    else:
        directory = os.path.dirname(os.path.realpath(target))
    if _in_system_dir(directory, system):
        return [], f"{directory} is in the standard library or site-packages, which run never times by default"
    if "," in directory or directory != directory.strip():
        # Not one item of FASTPATCH_INCLUDE: its names, as found now.
        from ._select import module_names_in

        return ["__main__", *module_names_in(directory)], ""
    # The directory itself, not its names: each process finds them, and
    # FASTPATCH_INCLUDE stays short whatever the directory holds (one
    # environment string may not exceed 128 KiB on Linux).
    return ["__main__", directory], ""


def _is_zip(path: str) -> bool:
    import zipfile

    try:
        return zipfile.is_zipfile(path)
    except OSError:
        return False


def _new_main_module(attrs: Dict[str, Any]) -> ModuleType:
    """A fresh ``__main__`` module in sys.modules, as Python makes one."""
    global _previous_main
    import builtins

    main_module = type(sys)("__main__")
    main_module.__dict__.update(attrs)
    main_module.__dict__["__builtins__"] = builtins
    _previous_main = sys.modules.get("__main__")
    sys.modules["__main__"] = main_module
    return main_module


def _execute(kind: str, target: str, program_args: List[str], splice: bool) -> int:
    from ._hook import splice_main

    try:
        if kind == "module":
            code, main_module = _prepare_module(target, program_args)
        elif kind == "code":
            code, main_module = _prepare_code(target, program_args)
        else:
            code, main_module = _prepare_script(target, program_args)
    except SyntaxError as exc:
        from ._activate import deactivate

        deactivate()  # the program never started: no report
        # A script's or -c's alone, as Python shows it; under -m, with the
        # loader's frames below ours.
        _ProgramError.leave_with(exc, _without_our_frames(exc.__traceback__))
        raise
    if splice and kind != "module":  # a module's code comes spliced from the import hook's loader
        # The script runs as __main__; -i SCRIPTNAME selects it too.
        stem = os.path.splitext(os.path.basename(target))[0] if kind == "script" else ""
        code = splice_main(code, stem if stem.isidentifier() else None)
    return _exec_main(code, main_module)


def _without_our_frames(tb: Optional[TracebackType]) -> Optional[TracebackType]:
    """``tb`` from its first frame that is not fastpatch's."""
    while tb is not None and str(tb.tb_frame.f_globals.get("__name__")).startswith("fastpatch."):
        tb = tb.tb_next
    return tb


def _safe_path() -> bool:
    """Whether Python puts no directory of the program's in front of
    sys.path: -P, PYTHONSAFEPATH or -I (3.11+), -I alone before."""
    return bool(getattr(sys.flags, "safe_path", sys.flags.isolated))


def _set_path0(entry: str, even_if_safe: bool = False) -> None:
    """Put ``entry`` in front of sys.path as Python does for the program.

    In place of the entry Python put there for ``python -m fastpatch`` (the
    current directory) or the console script (its directory); under
    ``_safe_path()`` Python put none there, and puts none for the program
    either, except the path of a directory or zip archive it runs
    (``even_if_safe``)."""
    if not _safe_path():
        sys.path[0:1] = [entry]
    elif even_if_safe:
        sys.path.insert(0, entry)


def _prepare_code(source: str, program_args: List[str]) -> Tuple[CodeType, ModuleType]:
    import importlib.machinery

    sys.argv = ["-c", *program_args]
    _set_path0("")
    main_module = _new_main_module({
        "__name__": "__main__", "__doc__": None, "__loader__": importlib.machinery.BuiltinImporter, "__spec__": None,
        "__package__": None,
    })
    return compile(source, "<string>", "exec", dont_inherit=True), main_module


def _prepare_script(script: str, program_args: List[str]) -> Tuple[CodeType, ModuleType]:
    import importlib.machinery

    sys.argv = [script, *program_args]
    if os.path.isdir(script) or (not script.endswith((".py", ".pyw", ".pyc")) and _is_zip(script)):
        # A directory or zip archive with __main__.py, run as Python runs it:
        # its path goes in front of sys.path even under -P.
        entry = os.path.join(os.getcwd(), script)
        _set_path0(entry, even_if_safe=True)
        spec = importlib.machinery.PathFinder.find_spec("__main__", [entry])
        if spec is None or spec.loader is None:
            raise _UsageError(f"can't find '__main__' module in {script!r}")
        code = spec.loader.get_code("__main__")  # type: ignore[attr-defined]
        main_module = _new_main_module({
            "__name__": "__main__", "__doc__": None, "__file__": spec.origin, "__loader__": spec.loader,
            "__spec__": spec, "__package__": "", "__cached__": getattr(spec, "cached", None),
        })
        return code, main_module
    path = os.path.abspath(script)
    _set_path0(os.path.dirname(os.path.realpath(script)))
    try:
        with open(path, "rb") as fh:
            source = fh.read()
    except OSError as exc:
        raise _UsageError(f"can't open file {script!r}: [Errno {exc.errno}] {exc.strerror}") from None
    if path.endswith(".pyc"):
        import marshal

        code = marshal.loads(source[16:])
        loader: Any = importlib.machinery.SourcelessFileLoader("__main__", path)
    else:
        code = compile(source, path, "exec", dont_inherit=True)
        loader = importlib.machinery.SourceFileLoader("__main__", path)
    main_module = _new_main_module({
        "__name__": "__main__", "__doc__": None, "__file__": path, "__loader__": loader, "__spec__": None,
        "__package__": None, "__cached__": None,
    })
    return code, main_module


def _prepare_module(name: str, program_args: List[str]) -> Tuple[CodeType, ModuleType]:
    """``python -m name``: the module's code (through the import hook's
    loader, so spliced when selected) and its ``__main__``."""
    import importlib.util

    _set_path0(os.getcwd())
    sys.argv = ["-m", *program_args]  # as Python has it while finding the module
    try:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations is not None:
            name = f"{name}.__main__"
            main_spec = importlib.util.find_spec(name)
            if main_spec is None:
                raise _UsageError(
                    f"No module named {name}; {name[:-9]!r} is a package and cannot be directly executed", 1
                )
            spec = main_spec
    except ImportError as exc:
        raise _UsageError(
            f"Error while finding module specification for {name!r} ({type(exc).__name__}: {exc})", 1
        ) from None
    if spec is None:
        raise _UsageError(f"No module named {name}", 1)
    loader = spec.loader
    if loader is None or not hasattr(loader, "get_code"):
        raise _UsageError(f"No code object available for {name}", 1)
    code = loader.get_code(name)
    if code is None:
        raise _UsageError(f"No code object available for {name}", 1)
    if spec.has_location and spec.origin:
        sys.argv[0] = spec.origin
    main_module = _new_main_module({
        "__name__": "__main__", "__doc__": None, "__file__": spec.origin if spec.has_location else None,
        "__loader__": spec.loader, "__spec__": spec, "__package__": spec.parent,
        "__cached__": getattr(spec, "cached", None),
    })
    if not spec.has_location:
        del main_module.__dict__["__file__"]
    return code, main_module


def _exec_main(code: CodeType, main_module: ModuleType) -> int:
    """Run the program; 0 if it returns. Its unhandled exception goes on up
    to the interpreter, which reports it as its own (see ``_ProgramError``)."""
    try:
        exec(code, main_module.__dict__)
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - re-raised: the interpreter reports it
        tb = exc.__traceback__
        _ProgramError.leave_with(exc, tb.tb_next if tb is not None else None)  # our exec() frame is not the program's
        raise
    return 0


class _ProgramError:
    """``sys.excepthook`` while the program's unhandled exception leaves
    ``run`` for the interpreter.

    The interpreter then does for it all that it does for its own program's
    exception: ``sys.last_type``, ``last_value``, ``last_traceback`` (and
    ``last_exc``) set before atexit handlers run, exit status 1, and after
    a KeyboardInterrupt death by SIGINT once atexit handlers (the report)
    and finalisation have run. It calls this hook to show the exception,
    which gives the exception back the program's own traceback (without
    run's frames, which it gained on its way out), shows it through the
    hook the program had, and puts that hook back.
    """

    def __init__(self, exc: BaseException, tb: Optional[TracebackType], hook: Any) -> None:
        self.exc = exc
        self.tb = tb
        self.hook = hook

    @classmethod
    def leave_with(cls, exc: BaseException, tb: Optional[TracebackType]) -> None:
        """Make the interpreter show ``exc`` with traceback ``tb`` when it
        reaches it."""
        exc.__traceback__ = tb
        sys.excepthook = cls(exc, tb, sys.excepthook)

    def __call__(self, exc_type: type, value: BaseException, tb: Optional[TracebackType]) -> Any:
        if value is not self.exc:  # not the program's exception: pass it on as it is
            return self.hook(exc_type, value, tb)
        if sys.excepthook is self:
            sys.excepthook = self.hook
        value.__traceback__ = self.tb
        if getattr(sys, "last_value", None) is value:
            sys.last_traceback = self.tb
        return self.hook(exc_type, value, self.tb)
