# Sourced by .ci/run, tools/*.sh and benchmarks/run_all.sh: which CPythons
# fastpatch supports, asked of the package itself, and how to run each here.
#
#   supported_versions        the supported minor versions, "3.9 3.10 ...", from
#                             src/fastpatch/_recipes.py (the one list there is)
#   find_python X.Y           a host path of that CPython (pyenv, else pythonX.Y
#                             on the PATH), or nothing
#   python_for X.Y[d]         sets PY_EXE (the interpreter) and PY_RUN (an array:
#                             the prefix that runs a command where PY_EXE lives);
#                             returns 1 if this machine has no such Python.
#                             X.Yd is the Py_DEBUG build. Versions the host lacks
#                             (3.14, 3.15, the debug builds) come from the
#                             newer-pythons tool, which runs commands in a root
#                             filesystem with the current directory mounted at
#                             the same path: keep every path such a command
#                             sees inside the repository.
#   debug_versions            the X.Yd builds this machine has, for supported X.Y
#   newest_host_python X.Y    the newest supported CPython on the host (no
#                             newer-pythons) that is at least X.Y, for tools
#
# newer-pythons is looked for in $FASTPATCH_NEWER_PYTHONS, then beside the
# checkout (../shared/pythons/newer-pythons), then in /work/shared/pythons.

_pythons_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

supported_versions() {
    local py
    py="$(command -v python3 || true)"
    [ -n "$py" ] || py="$(find_python 3.12)"
    "$py" "$_pythons_repo/src/fastpatch/_recipes.py"
}

find_python() {
    local prefix
    if command -v pyenv >/dev/null 2>&1 && prefix="$(pyenv prefix "$1" 2>/dev/null)" \
        && [ -x "$prefix/bin/python$1" ]; then
        echo "$prefix/bin/python$1"
    elif command -v "python$1" >/dev/null 2>&1; then
        command -v "python$1"
    fi
}

newer_pythons_tool() {
    local c
    for c in "${FASTPATCH_NEWER_PYTHONS:-}" "$_pythons_repo/../shared/pythons/newer-pythons" \
        /work/shared/pythons/newer-pythons; do
        if [ -n "$c" ] && [ -x "$c" ]; then
            echo "$c"
            return 0
        fi
    done
    return 1
}

_newer_ready=""
_newer_has() {  # _newer_has python3.14d: the tool's root has it (built once, on first use)
    local tool root
    tool="$(newer_pythons_tool)" || return 1
    if [ -z "$_newer_ready" ]; then
        "$tool" setup >&2 || return 1
        # CPython's own test package, for the tests that run its suites on
        # instrumented stdlib modules (Debian ships it separately).
        "$tool" run -- bash -c 'missing=""
            for py in /usr/bin/python3.[0-9]*[0-9]; do
                v=${py#/usr/bin/python}
                [ -d "/usr/lib/python$v/test/support" ] || missing="$missing libpython$v-testsuite"
            done
            [ -z "$missing" ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
                apt-get install -y -qq --no-install-recommends $missing >/dev/null; }' >&2 || return 1
        _newer_ready=1
    fi
    root="${FASTPATCH_NEWER_ROOT:-/opt/newer-pythons}"
    [ -x "$root/usr/bin/$1" ]
}

python_for() {
    local v="$1" host=""
    PY_RUN=()
    PY_EXE=""
    [[ "$v" == *d ]] || host="$(find_python "$v")"
    if [ -n "$host" ]; then
        PY_EXE="$host"
        return 0
    fi
    _newer_has "python$v" || return 1
    PY_RUN=("$(newer_pythons_tool)" run --)
    PY_EXE="python$v"
}

debug_versions() {
    local v out=()
    for v in $(supported_versions); do
        _newer_has "python${v}d" && out+=("${v}d")
    done
    echo "${out[*]}"
}

newest_host_python() {
    local minimum="$1" v best=""
    for v in $(supported_versions); do
        [ "$(printf '%s\n%s\n' "$minimum" "$v" | sort -V | head -n 1)" = "$minimum" ] || continue
        local p
        p="$(find_python "$v")"
        [ -n "$p" ] && best="$p"
    done
    echo "$best"
}
