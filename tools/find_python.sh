# Sourced by .ci/run and tools/*.sh: find_python 3.12 prints the path of that
# CPython (from pyenv, else pythonX.Y on the PATH), or nothing.
find_python() {
    local prefix
    if command -v pyenv >/dev/null 2>&1 && prefix="$(pyenv prefix "$1" 2>/dev/null)" \
        && [ -x "$prefix/bin/python$1" ]; then
        echo "$prefix/bin/python$1"
    elif command -v "python$1" >/dev/null 2>&1; then
        command -v "python$1"
    fi
}
