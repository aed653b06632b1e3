#!/usr/bin/env bash
# A real JavaScript suite (a project's own jest or vitest tests, prepared as in
# bench/real-suites/README.md) through `testgrid run --local 2` against the framework alone
# with 2 workers (`vitest run --maxWorkers=2`, `jest --maxWorkers=2`), alternating runs, medians,
# ratio; the last runs' case sets and outcomes compared (js_compare.py); testgrid's time to its
# first result.
#
#   bench/real-suites/js.sh vitest|jest PROJECT_DIR [RUNS=3] [-- OWN_ARGS...]
#
# PROJECT_DIR is the folder of the project's package.json (its dependencies installed with its
# lockfile). OWN_ARGS go to the framework's own command only (e.g. `-- --typecheck`). The
# environment is passed to both runs: set what the project's test script sets (luxon:
# TZ=America/New_York LANG=en_US.utf8). TESTGRID=path picks the binary; by default this
# repository's release build. Coverage stays as the project's config has it, in both runs.
set -euo pipefail
FRAMEWORK=${1:?usage: js.sh vitest|jest PROJECT_DIR [RUNS=3] [-- OWN_ARGS...]}
PROJECT=$(cd "${2:?usage: js.sh vitest|jest PROJECT_DIR [RUNS=3] [-- OWN_ARGS...]}" && pwd)
shift 2
RUNS=3
if [[ $# -gt 0 && $1 != -- ]]; then RUNS=$1; shift; fi
if [[ $# -gt 0 && $1 == -- ]]; then shift; fi
OWN_ARGS=("$@")
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=../lib.sh
source "$repo/bench/lib.sh"

if [[ -z ${TESTGRID:-} ]]; then
    cargo build --release --quiet --manifest-path "$repo/Cargo.toml" --bin testgrid
    TESTGRID="$repo/target/release/testgrid"
fi
# The runs happen in the project's folder: a relative path given here must still name the binary.
if [[ $TESTGRID == */* ]]; then TESTGRID=$(realpath "$TESTGRID"); fi
[[ -x $TESTGRID ]] || command -v "$TESTGRID" > /dev/null || { echo "TESTGRID=$TESTGRID is not a program" >&2; exit 2; }

# The project's own binary, from the nearest node_modules/.bin at or above the project (npm and
# pnpm workspaces hoist it to the root).
bin=$PROJECT
while [[ ! -x $bin/node_modules/.bin/$FRAMEWORK ]]; do
    [[ $bin == / ]] && { echo "no node_modules/.bin/$FRAMEWORK at or above $PROJECT (install first)" >&2; exit 2; }
    bin=$(dirname "$bin")
done
bin="$bin/node_modules/.bin/$FRAMEWORK"
cd "$PROJECT"
version=$(node -p "require(require.resolve('$FRAMEWORK/package.json', {paths: ['$PROJECT']})).version")

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
case $FRAMEWORK in
    vitest)
        own=("$bin" run --maxWorkers=2 --reporter=json "--outputFile=$work/own.json")
        # vitest 3 refuses maxWorkers below its default minWorkers (CPUs - 1); 4 has no minWorkers.
        if [[ ${version%%.*} -lt 4 ]]; then own+=(--minWorkers=1); fi ;;
    jest) own=("$bin" --maxWorkers=2 --json "--outputFile=$work/own.json") ;;
    *) echo "framework must be vitest or jest, not $FRAMEWORK" >&2; exit 2 ;;
esac
own+=("${OWN_ARGS[@]}")

name=$(node -p "const p = require('./package.json'); [p.name || require('path').basename(process.cwd()), p.version].filter(Boolean).join(' ')")
commit=$(git -C "$PROJECT" rev-parse --short=12 HEAD 2>/dev/null || echo '?')
echo "$name (commit $commit), $FRAMEWORK $version, $(node --version); own: ${own[*]//$work/\$TMP}" >&2

# One untimed own run first: transform caches (jest's, ts-jest's) are shared by both runs.
"${own[@]}" > "$work/own.out" 2>&1 || true
os=(); ts=(); firsts=()
for _ in $(seq 1 "$RUNS"); do
    a=$(now_ms)
    "${own[@]}" > "$work/own.out" 2>&1 || true
    b=$(now_ms)
    os+=("$(( b - a ))")
    a=$(now_ms)
    "$TESTGRID" run --local 2 --framework "$FRAMEWORK" --json > "$work/tg.jsonl" 2> "$work/tg.err" || true
    b=$(now_ms)
    ts+=("$(( b - a ))")
    first=$(python3 "$here/first_result.py" "$work/tg.jsonl" "$b")
    firsts+=("$(( first - a ))")
done
[[ -s $work/own.json ]] || { echo "the own run wrote no report; its output:" >&2; tail -20 "$work/own.out" >&2; exit 1; }
python3 "$here/js_compare.py" "$PROJECT" "$work/own.json" "$work/tg.jsonl"
echo "testgrid: $(grep -h 'Summary' "$work/tg.err" | tr '\n' ' ')"
echo "$FRAMEWORK --maxWorkers=2 (ms): ${os[*]}"
echo "testgrid --local 2 (ms):   ${ts[*]}"
echo "first result (ms):         ${firsts[*]}"
echo "$(medians_and_ratio "$FRAMEWORK" os ts) (target <= 1.0, aim <= 0.8); first result median $(median "${firsts[@]}") ms"
