#!/usr/bin/env bash
# Workspace bundles on a generated workspace of 10,000 files (~200 MB): the CLI's bundle step
# and upload over loopback to a real coordinator, a rootless worker's materialisation (cold and
# warm cache), and `git status` on the same tree as the peer for "how long does looking at
# 10,000 files take". Plus the hash choice: BLAKE3 against SHA-256 over the same bytes.
#
#   bench/bundle/run.sh [RUNS=3]
#
# Release builds of this repository; the tree lives under target/bench-bundle (kept between
# runs: generating it is not what is measured). Needs PyPI the first time (the `blake3` package
# for the hash comparison, in target/bench-bundle/venv).
set -euo pipefail
RUNS=${1:-3}
repo=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=../lib.sh
source "$repo/bench/lib.sh"
cargo build --release --quiet --manifest-path "$repo/Cargo.toml" --bins
bin="$repo/target/release"
base="$repo/target/bench-bundle"
tree="$base/tree"

if [[ ! -f $tree/.generated ]]; then
    rm -rf "$tree"
    mkdir -p "$tree"
    python3 - "$tree" <<'PY'
import os, random, sys
root = sys.argv[1]
random.seed(7)
# 9,900 small files (2-30 KB) in 300 folders three levels deep, 100 files of ~1.4 MB.
for i in range(9900):
    d = os.path.join(root, f"pkg{i % 10}", f"mod{i % 30}", f"sub{i % 300}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"file{i}.txt"), "wb") as f:
        f.write(os.urandom(random.randint(2_000, 30_000)))
os.makedirs(os.path.join(root, "assets"), exist_ok=True)
for i in range(100):
    with open(os.path.join(root, "assets", f"blob{i}.bin"), "wb") as f:
        f.write(os.urandom(1_400_000))
os.makedirs(os.path.join(root, "tests"), exist_ok=True)
with open(os.path.join(root, "tests", "one.sh"), "w") as f:
    f.write("test -s assets/blob0.bin\n")
PY
    git -C "$tree" init -q && git -C "$tree" add -A && git -C "$tree" -c user.email=b@x -c user.name=b commit -qm tree
    touch "$tree/.generated"
fi
files=$(git -C "$tree" ls-files | wc -l)
bytes=$(du -sb --exclude=.git "$tree" | cut -f1)
echo "tree: $files files, $((bytes / 1000000)) MB"

work=$(mktemp -d)
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
pids=()
trap cleanup EXIT

echo "== hashing the tree's bytes once (one core): SHA-256 (OpenSSL) against BLAKE3"
if [[ ! -x $base/venv/bin/python ]]; then
    python3 -m venv "$base/venv" && "$base/venv/bin/pip" install --quiet --disable-pip-version-check blake3
fi
"$base/venv/bin/python" - "$tree" <<'PY'
import hashlib, os, sys, time, blake3
root = sys.argv[1]
data = []
for d, _, names in os.walk(root):
    if ".git" in d.split(os.sep):
        continue
    for n in names:
        with open(os.path.join(d, n), "rb") as f:
            data.append(f.read())
total = sum(map(len, data))
for name, make in [("sha256", hashlib.sha256), ("blake3", lambda b: blake3.blake3(b, max_threads=1))]:
    best = None
    for _ in range(3):
        t = time.perf_counter()
        for b in data:
            make(b).digest()
        dt = time.perf_counter() - t
        best = dt if best is None else min(best, dt)
    print(f"{name}: {total / best / 1e6:.0f} MB/s ({best * 1000:.0f} ms for {total // 1_000_000} MB in {len(data)} files)")
PY

echo "== git status (the peer for looking at the tree)"
gs=()
for _ in $(seq 1 "$RUNS"); do
    a=$(now_ms); git -C "$tree" status --porcelain > /dev/null; b=$(now_ms); gs+=("$((b - a))")
done
echo "git status (ms): ${gs[*]}"

start_grid() {
    "$bin/testgrid-coordinator" --listen 127.0.0.1:0 --http 127.0.0.1:0 --data-dir "$work/data-$1" > "$work/coord-$1.out" 2> "$work/coord-$1.err" &
    pids+=($!)
    for _ in $(seq 1 200); do grep -q listening "$work/coord-$1.out" 2>/dev/null && break; sleep 0.05; done
    grpc=$(sed -n 's/.*grpc=\([^ ]*\).*/\1/p' "$work/coord-$1.out")
    url="http://$grpc"
    mkdir -p "$work/worker-$1"
    (cd "$work/worker-$1" && exec "$bin/testgrid-worker" --grid "$url" --name "bench-$1" --slots 1 --cache-dir "$work/cache-$1" > /dev/null 2> "$work/worker-$1.err") &
    pids+=($!)
}

run_once() {
    local a b
    a=$(now_ms)
    (cd "$tree" && "$bin/testgrid" run --grid "$url" --framework shell --json tests/one.sh > "$work/run.json" 2> "$work/run.err") || { cat "$work/run.err" >&2; exit 1; }
    b=$(now_ms)
    python3 - "$work/run.json" "$((b - a))" <<'PY'
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1])]
w = next(e for e in ev if e["event"] == "created")["workspace"]
print(f"  wall {sys.argv[2]} ms; bundle {w['build_ms']} ms (hashed {w['hashed_files']} files), "
      f"{w['missing_blobs']} of {w['blobs']} blobs missing, {w['uploaded_bytes'] / 1e6:.1f} MB sent in {w['upload_ms']} ms "
      f"({w['uploaded_bytes'] / 1e6 / max(w['upload_ms'], 1) * 1000:.0f} MB/s)")
PY
}

for i in $(seq 1 "$RUNS"); do
    echo "== run $i: a fresh grid, a fresh index"
    rm -rf "${XDG_CACHE_HOME:-$HOME/.cache}/testgrid/index"
    start_grid "$i"
    echo " first upload (cold index, empty grid):"; run_once
    echo " unchanged:"; run_once
    echo "bench edit $i $(now_ms)" >> "$tree/pkg0/mod0/sub0/file0.txt"
    echo " one file edited:"; run_once
    git -C "$tree" checkout -q -- pkg0/mod0/sub0/file0.txt
    echo " materialised (worker log): $(grep -o 'files=[0-9]* downloaded=[0-9]* millis=[0-9]*' "$work/worker-$i.err" | tr '\n' ' ')"
done
