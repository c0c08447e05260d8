#!/usr/bin/env bash
# Lint fastpatch: `bash tools/lint.sh` from anywhere.
#
# Installs ruff and mypy (and bytecode, which mypy needs to check the
# recipes) into a temporary venv, then runs
#   ruff check src tests benchmarks examples tools   (the dirs that exist)
#   mypy --strict src/fastpatch
# with the settings in pyproject.toml ([tool.ruff], [tool.mypy]).
# Exits non-zero if either reports a problem.
set -euo pipefail

started=$SECONDS
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/fastpatch-lint.XXXXXX")"
trap 'rm -rf "$work"' EXIT
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_INPUT=1
# Caches go to the temporary directory, not the checkout.
export RUFF_CACHE_DIR="$work/ruff-cache" MYPY_CACHE_DIR="$work/mypy-cache"

# Pinned so that a new release of either tool cannot break CI overnight.
RUFF="ruff==0.17.6"
MYPY="mypy==2.4.1"

source "$repo/tools/pythons.sh"

py="$(newest_host_python 3.10)"  # mypy 2.x runs on 3.10+
[ -n "$py" ] || { echo "lint: no CPython 3.10+ found" >&2; exit 1; }

"$py" -m venv "$work/venv"
if ! "$work/venv/bin/python" -m pip install "$RUFF" "$MYPY" "bytecode>=0.19" >"$work/pip.log" 2>&1; then
    grep -v "is ignored: it is neither a file nor a directory" "$work/pip.log" | tail -n 40 >&2
    echo "lint: pip install failed" >&2
    exit 1
fi
bin="$work/venv/bin"
echo "$("$bin/ruff" --version), $("$bin/mypy" --version) on $("$bin/python" -V)"

cd "$repo"
dirs=()
for d in src tests benchmarks examples tools; do
    [ -d "$d" ] && dirs+=("$d")
done

status=0
echo "== ruff check ${dirs[*]}"
"$bin/ruff" check --output-format concise "${dirs[@]}" || status=1
echo "== mypy --strict src/fastpatch"
"$bin/mypy" --strict src/fastpatch || status=1

echo "lint took $((SECONDS - started))s"
if [ "$status" -ne 0 ]; then
    echo "lint: FAILED" >&2
fi
exit "$status"
