#!/usr/bin/env bash
# Setup reuse on a real project: a JS project whose node_modules never travels, run through a
# real coordinator and one worker with no --root and a fresh --cache-dir, twice per grid:
# the first session runs the setup (`npm ci`) on the worker, the second gets its kept
# node_modules instead. Reports the setup's time, the time to keep its outputs and to put them
# in place again, and each session's wall time.
#
#   bench/bundle/setup.sh PROJECT_DIR [RUNS=2] [FRAMEWORK=vitest]
#
# PROJECT_DIR: a git checkout with a package-lock.json and its node_modules installed (the CLI
# lists the test files there, as on a laptop). Release builds of this repository.
set -euo pipefail
project=$(cd "$1" && pwd)
RUNS=${2:-2}
framework=${3:-vitest}
repo=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=../lib.sh
source "$repo/bench/lib.sh"
cargo build --release --quiet --manifest-path "$repo/Cargo.toml" --bins
bin="$repo/target/release"
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

for i in $(seq 1 "$RUNS"); do
    "$bin/testgrid-coordinator" --listen 127.0.0.1:0 --http 127.0.0.1:0 --data-dir "$work/data-$i" > "$work/coord-$i.out" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 200); do grep -q listening "$work/coord-$i.out" 2>/dev/null && break; sleep 0.05; done
    url="http://$(sed -n 's/.*grpc=\([^ ]*\).*/\1/p' "$work/coord-$i.out")"
    mkdir -p "$work/worker-$i"
    (cd "$work/worker-$i" && exec "$bin/testgrid-worker" --grid "$url" --slots 2 --cache-dir "$work/cache-$i" > /dev/null 2> "$work/worker-$i.err") &
    pids+=($!)
    echo "== grid $i (fresh cache)"
    for session in first second; do
        a=$(now_ms)
        (cd "$project" && "$bin/testgrid" run --grid "$url" --framework "$framework" -q \
            --setup 'npm ci --no-audit --no-fund' --setup-key package-lock.json --setup-output node_modules \
            > "$work/run.out" 2>&1) || { cat "$work/run.out" >&2; exit 1; }
        b=$(now_ms)
        echo "  $session session: wall $((b - a)) ms; $(grep -m1 -o '[0-9]* tests in [0-9.]*s: .*' "$work/run.out")"
    done
    echo "  worker: setup $(grep -o 'setup passed.*millis=[0-9]*' "$work/worker-$i.err" | grep -o 'millis=[0-9]*' | tr '\n' ' ')," \
        "kept $(grep -o 'setup outputs kept.*' "$work/worker-$i.err" | grep -o 'bytes=[0-9]* millis=[0-9]*' | tr '\n' ' ')," \
        "reused $(grep -o 'setup reused.*' "$work/worker-$i.err" | grep -o 'millis=[0-9]*' | tr '\n' ' ')"
done
