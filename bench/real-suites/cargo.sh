#!/usr/bin/env bash
# A real crate's suite: regex-syntax 0.8.12's own tests (149 unit tests, from crates.io) through
# `testgrid run --local 2 --framework cargo` against `cargo nextest run -j 2`, same build, same
# run, alternating, medians and ratio. Both start from an already built tree, so what is timed
# is cargo's freshness check, listing and running the tests.
#
#   bench/real-suites/cargo.sh [RUNS=5] [CRATE=regex-syntax] [VERSION=0.8.12]
#
# Needs cargo-nextest on PATH and crates.io access the first time (cargo fetches the crate).
set -euo pipefail
RUNS=${1:-5}
CRATE=${2:-regex-syntax}
VERSION=${3:-0.8.12}
repo=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=../lib.sh
source "$repo/bench/lib.sh"
cargo build --release --quiet --manifest-path "$repo/Cargo.toml" --bin testgrid
testgrid="$repo/target/release/testgrid"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Find the crate's published source through cargo itself.
mkdir -p "$work/fetch/src"
printf '[package]\nname = "fetch"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\n%s = "=%s"\n[workspace]\n' \
    "$CRATE" "$VERSION" > "$work/fetch/Cargo.toml"
touch "$work/fetch/src/lib.rs"
src=$(cargo metadata --quiet --format-version 1 --manifest-path "$work/fetch/Cargo.toml" | python3 -c '
import json, os, sys
meta = json.load(sys.stdin)
print(next(os.path.dirname(p["manifest_path"]) for p in meta["packages"] if p["name"] == sys.argv[1]))' "$CRATE")
cp -r "$src" "$work/suite"
mkdir -p "$work/suite/.git"
printf '\n[workspace]\n' >> "$work/suite/Cargo.toml"
cd "$work/suite"
export CARGO_TARGET_DIR="$work/target"
cargo test --no-run --quiet 2>/dev/null
cargo nextest run -j 2 > /dev/null 2>&1 || true

ns=(); ts=()
for _ in $(seq 1 "$RUNS"); do
    a=$(now_ms); cargo nextest run -j 2 > "$work/nextest.out" 2>&1 || true; b=$(now_ms)
    ns+=("$(( b - a ))")
    a=$(now_ms); "$testgrid" run --local 2 --framework cargo > "$work/tg.out" 2>&1 || true; b=$(now_ms)
    ts+=("$(( b - a ))")
done
echo "$CRATE $VERSION, nextest: $(grep -h 'Summary' "$work/nextest.out" | tr -s ' ')"
echo "testgrid: $(grep -h "Summary" "$work/tg.out")"
echo "cargo nextest run -j 2 (ms):                ${ns[*]}"
echo "testgrid run --local 2 --framework cargo (ms): ${ts[*]}"
mn=$(median "${ns[@]}"); mt=$(median "${ts[@]}")
printf 'median nextest: %.2f s, median testgrid: %.2f s, ratio %.2f (target <= 1.1)\n' \
    "$(echo "$mn / 1000" | bc -l)" "$(echo "$mt / 1000" | bc -l)" "$(echo "$mt / $mn" | bc -l)"
