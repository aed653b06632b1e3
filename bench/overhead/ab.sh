#!/usr/bin/env bash
# Overhead A/B: two testgrid binaries (before and after a change) and `xargs -P2` on the same N
# no-op shell files, alternating in one loop, medians and both ratios. Build the two binaries
# first (e.g. a `git worktree` of the old commit, `cargo build --release --bin testgrid`).
#
#   bench/overhead/ab.sh BEFORE_BIN AFTER_BIN [N=2000] [RUNS=7]
set -euo pipefail
A=$1; B=$2
N=${3:-2000}; RUNS=${4:-7}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
mkdir -p "$work/suite/.git" "$work/suite/tests"
for i in $(seq -w 1 "$N"); do printf 'exit 0\n' > "$work/suite/tests/t_$i.sh"; done
cd "$work/suite"
t() { local s=$EPOCHREALTIME; "$@" >/dev/null 2>&1 || true; python3 -c "print(round($EPOCHREALTIME - $s, 6))"; }
"$A" run --local 2 --framework shell tests >/dev/null 2>&1 || true
"$B" run --local 2 --framework shell tests >/dev/null 2>&1 || true
xs=(); as=(); bs=()
for _ in $(seq 1 "$RUNS"); do
  xs+=("$(t sh -c "find tests -name '*.sh' -print0 | xargs -0 -P2 -n1 sh")")
  as+=("$(t "$A" run --local 2 --framework shell tests)")
  bs+=("$(t "$B" run --local 2 --framework shell tests)")
done
med() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "xargs: ${xs[*]}"; echo "before: ${as[*]}"; echo "after:  ${bs[*]}"
mx=$(med "${xs[@]}"); ma=$(med "${as[@]}"); mb=$(med "${bs[@]}")
python3 -c "print(f'median xargs {$mx:.3f} s, before {$ma:.3f} s, after {$mb:.3f} s; before/xargs {$ma/$mx:.2f}, after/xargs {$mb/$mx:.2f}')"
