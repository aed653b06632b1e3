#!/usr/bin/env bash
# Whole-process overhead: `testgrid run --local 2` against `xargs -P2` on the same N no-op test
# files, alternating runs, median of each, ratio in one run.
#
#   bench/overhead/run.sh [N=2000] [RUNS=5]
set -euo pipefail
N=${1:-2000}
RUNS=${2:-5}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=../lib.sh
source "$here/../lib.sh"

cargo build --release --quiet --manifest-path "$repo/Cargo.toml" --bin testgrid
testgrid="$repo/target/release/testgrid"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/suite/.git" "$work/suite/tests"
for i in $(seq -w 1 "$N"); do
    printf 'exit 0\n' > "$work/suite/tests/t_$i.sh"
done
cd "$work/suite"

now() { echo "$EPOCHREALTIME"; }

run_xargs() {
    find tests -name '*.sh' -print0 | xargs -0 -P2 -n1 sh
}

run_testgrid() {
    "$testgrid" run --local 2 --framework shell tests >/dev/null 2>"$work/stderr" || {
        cat "$work/stderr" >&2
        exit 1
    }
}

# One warm-up each (page cache, first exec of the binary).
run_xargs
run_testgrid

xs=()
ts=()
for _ in $(seq 1 "$RUNS"); do
    a=$(now); run_xargs; b=$(now)
    xs+=("$(echo "$b - $a" | bc -l)")
    a=$(now); run_testgrid; b=$(now)
    ts+=("$(echo "$b - $a" | bc -l)")
done

mx=$(median "${xs[@]}")
mt=$(median "${ts[@]}")
echo "tests: $N no-op shell files, 2 workers, $RUNS runs each (alternating)"
echo "xargs -P2 runs:       ${xs[*]}"
echo "testgrid --local 2:   ${ts[*]}"
printf 'median xargs -P2:     %.3f s\n' "$mx"
printf 'median testgrid:      %.3f s\n' "$mt"
printf 'ratio testgrid/xargs: %.2f (target <= 1.25)\n' "$(echo "$mt / $mx" | bc -l)"
