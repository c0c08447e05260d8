#!/usr/bin/env bash
# Run the benchmark suite on several CPython versions, then chart and tabulate it.
#
#   benchmarks/run_all.sh [PYTHON ...]
#
# PYTHON: interpreters to use, e.g. /usr/bin/python3.12. Without arguments,
# $FASTPATCH_BENCH_PYTHONS (space-separated) is used, and without that every
# CPython version fastpatch supports (src/fastpatch/_recipes.py), found as
# tools/pythons.sh finds them: pyenv for 3.9-3.13, the newer-pythons root for
# 3.14 and 3.15 (whose venvs then live under .benchmarks/venvs/, inside the
# checkout, where that root sees them).
#
# An interpreter that can already import fastpatch, pytest_benchmark, wrapt and
# bytecode (a dev venv with `pip install -e ".[bench]"`) runs the suite as is.
# Any other gets a venv in $FASTPATCH_BENCH_VENVS (default .benchmarks/venvs/)
# with `pip install ".[bench]" pytest`, i.e. the package built from this checkout.
#
# Environment:
#   FASTPATCH_BENCH_OUT    output directory (default .benchmarks/run_all/): one
#                          JSON per version, overhead.png, overhead.md
#   FASTPATCH_BENCH_ARGS   pytest-benchmark options (default below)
#   FASTPATCH_BENCH_QUICK  1 for the short CI variant (see benchmarks/conftest.py)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
out="${FASTPATCH_BENCH_OUT:-$repo/.benchmarks/run_all}"
venvs="${FASTPATCH_BENCH_VENVS:-$repo/.benchmarks/venvs}"
bench_args="${FASTPATCH_BENCH_ARGS:---benchmark-min-rounds=5 --benchmark-warmup=on --benchmark-sort=min}"
mkdir -p "$out"

source "$repo/tools/pythons.sh"

# Each entry: "X.Y" (found by tools/pythons.sh) or an interpreter path.
pythons=("$@")
if [ "${#pythons[@]}" -eq 0 ] && [ -n "${FASTPATCH_BENCH_PYTHONS:-}" ]; then
    read -r -a pythons <<<"$FASTPATCH_BENCH_PYTHONS"
fi
if [ "${#pythons[@]}" -eq 0 ]; then
    read -r -a pythons <<<"$(supported_versions)"
fi

jsons=()
failed=()
plot_py=""
for spec in "${pythons[@]}"; do
    if [[ "$spec" == */* ]]; then
        PY_RUN=()
        PY_EXE="$spec"
    elif ! python_for "$spec"; then
        echo "== CPython $spec: no interpreter on this machine, skipped"
        continue
    fi
    run=("${PY_RUN[@]}")
    ver="$("${run[@]}" "$PY_EXE" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" || { failed+=("$spec"); continue; }
    run_py="$PY_EXE"
    if ! "${run[@]}" "$run_py" -c "import fastpatch, pytest, pytest_benchmark, wrapt, bytecode" >/dev/null 2>&1; then
        venv="$venvs/$ver"
        echo "== CPython $ver: installing fastpatch[bench] from $repo into $venv"
        [ -x "$venv/bin/python" ] || "${run[@]}" "$PY_EXE" -m venv "$venv"
        "${run[@]}" "$venv/bin/python" -m pip install -q --disable-pip-version-check ".[bench]" pytest
        run_py="$venv/bin/python"
    fi
    where="$("${run[@]}" "$run_py" -c 'import fastpatch; print(fastpatch.__file__)')"
    json="$out/cpython-$ver.json"
    echo "== CPython $ver: $run_py (fastpatch from $where)"
    # shellcheck disable=SC2086  # bench_args is a list of options
    if "${run[@]}" "$run_py" -m pytest benchmarks/ -q -p no:cacheprovider $bench_args --benchmark-json="$json"; then
        jsons+=("$json")
    else
        failed+=("$ver")
        [ -s "$json" ] && jsons+=("$json")  # failed checks still leave numbers worth a look
    fi
    [ "${#run[@]}" -eq 0 ] && "$run_py" -c "import matplotlib" >/dev/null 2>&1 && plot_py="$run_py"
done

if [ "${#jsons[@]}" -gt 0 ]; then
    if [ -z "$plot_py" ]; then
        echo "no interpreter with matplotlib; tables only" >&2
        python3 benchmarks/plot.py "${jsons[@]}" --no-png --markdown "$out/overhead.md" --all-groups
    else
        "$plot_py" benchmarks/plot.py "${jsons[@]}" --png "$out/overhead.png" --markdown "$out/overhead.md" --all-groups
    fi
    echo "== results in $out"
fi
if [ "${#failed[@]}" -gt 0 ]; then
    echo "== failed: ${failed[*]}" >&2
    exit 1
fi
