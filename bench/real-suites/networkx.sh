#!/usr/bin/env bash
# A real pytest suite: networkx's own tests (265 files, ~6,200 items) through
# `testgrid run --local 2` against `pytest -n 2` (pytest-xdist), same files, same venv,
# alternating runs, medians, ratio; plus testgrid's time to its first result.
#
#   bench/real-suites/networkx.sh [RUNS=3]
#
# Needs network access to PyPI the first time (it builds a venv under target/bench-venv).
set -euo pipefail
RUNS=${1:-3}
repo=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=../lib.sh
source "$repo/bench/lib.sh"
venv="$repo/target/bench-venv"

if ! "$venv/bin/python" -c 'import networkx, xdist' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "networkx==3.6.1" "pytest>=8,<10" pytest-xdist
fi
cargo build --release --quiet --manifest-path "$repo/Cargo.toml" --bin testgrid
testgrid="$repo/target/release/testgrid"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/.git"
cp -r "$("$venv/bin/python" -c 'import networkx, os; print(os.path.dirname(networkx.__file__))')" "$work/networkx"
cd "$work"
export PATH="$venv/bin:$PATH"


xs=(); ts=(); firsts=()
for _ in $(seq 1 "$RUNS"); do
    a=$(now_ms)
    python -m pytest -n 2 -q -p no:cacheprovider networkx > "$work/xdist.out" 2>&1 || true
    b=$(now_ms)
    xs+=("$(( b - a ))")
    a=$(now_ms)
    "$testgrid" run --local 2 --framework pytest --json networkx > "$work/tg.jsonl" 2> "$work/tg.err" || true
    b=$(now_ms)
    ts+=("$(( b - a ))")
    first=$(python3 "$repo/bench/real-suites/first_result.py" "$work/tg.jsonl")
    firsts+=("$(( first - a ))")
done
echo "networkx 3.6.1: $(tail -1 "$work/xdist.out")"
echo "testgrid:       $(grep -h 'Summary\|test cases' "$work/tg.err" | tr '\n' ' ')"
echo "pytest -n 2 (ms):        ${xs[*]}"
echo "testgrid --local 2 (ms): ${ts[*]}"
echo "first result (ms):       ${firsts[*]}"
echo "$(medians_and_ratio "pytest -n 2" xs ts) (target <= 0.85); first result median $(median "${firsts[@]}") ms (target < 1000)"
