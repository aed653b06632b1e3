#!/usr/bin/env python3
"""bench/makespan: how close a session's wall time comes to the best possible, and how soon its
first failure shows, with testgrid's history-driven order against what peers do.

A generated suite of sleep-based tests with a skewed duration distribution (many short, a few
long; file sizes unrelated to durations, as in real suites) runs on 8 slots:

- testgrid, cold (no duration history: largest file first), then warm (the history of the cold
  run and one more: failed first, then longest first);
- round-robin by file size, what the old bash orchestrator did: files sorted by size, dealt to
  the 8 slots in turn, each slot running its list one after the other;
- `pytest -n 8 --dist load` (pytest-xdist) on an equivalent pytest suite.

Each figure is makespan / lower bound, where lower bound = max(total / slots, longest test), and
the time to the first failure: one failing test is planted last in size order (the smallest
file). Whole-process wall times, all in the same run.

Usage: bench/makespan/run.py [--tests 160] [--slots 8] [--seed 7] [--testgrid target/release/testgrid]
Needs pytest and pytest-xdist for the pytest figure (see bench/makespan/requirements.txt); it is
skipped, with a note, without them.
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time


def durations(n, seed):
    """Many short tests and a few long ones: 85% of 0.05-0.4 s, 15% of 1.5-4 s."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        if rng.random() < 0.85:
            out.append(round(rng.uniform(0.05, 0.4), 3))
        else:
            out.append(round(rng.uniform(1.5, 4.0), 3))
    return out


def write_suite(root, plan, seed):
    """Shell tests t_XXX.sh and pytest tests test_XXX.py; each pads its file to a random size.
    The failing test is the smallest file. Each test writes when it ended to ends/NAME."""
    rng = random.Random(seed + 1)
    os.makedirs(os.path.join(root, ".git"), exist_ok=True)
    os.makedirs(os.path.join(root, "sh"), exist_ok=True)
    os.makedirs(os.path.join(root, "py"), exist_ok=True)
    os.makedirs(os.path.join(root, "ends"), exist_ok=True)
    ends = os.path.join(root, "ends")
    for i, (seconds, failing) in enumerate(plan):
        pad = 0 if failing else rng.randint(200, 4000)
        name = f"t_{i:03d}"
        status = 1 if failing else 0
        with open(os.path.join(root, "sh", name + ".sh"), "w") as f:
            f.write(f"sleep {seconds}\ndate +%s.%N > {ends}/{name}\nexit {status}\n")
            f.write("#" + "x" * pad + "\n")
        with open(os.path.join(root, "py", f"test_{i:03d}.py"), "w") as f:
            f.write("import time\n\n\ndef test_it():\n")
            f.write(f"    time.sleep({seconds})\n")
            f.write(f"    open({ends + '/' + name!r}, 'w').write(repr(time.time()))\n")
            f.write(f"    assert {not failing}\n")
            f.write("#" + "x" * pad + "\n")
    return ends


def first_failure(ends, failing_name, start):
    path = os.path.join(ends, failing_name)
    try:
        return float(open(path).read().strip()) - start
    except (OSError, ValueError):
        return None


def clear(ends):
    for name in os.listdir(ends):
        os.unlink(os.path.join(ends, name))


def timed(cmd, cwd, env=None):
    start = time.time()
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return start, time.time() - start, proc


def round_robin(root, slots):
    """Files by size, largest first, dealt to the slots in turn; each slot runs its list."""
    files = sorted(
        (os.path.join(root, "sh", f) for f in os.listdir(os.path.join(root, "sh"))),
        key=lambda p: (-os.path.getsize(p), p),
    )
    lanes = [files[i::slots] for i in range(slots)]

    def lane(paths):
        for p in paths:
            subprocess.run(["sh", p], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    start = time.time()
    threads = [threading.Thread(target=lane, args=(l,)) for l in lanes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return start, time.time() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tests", type=int, default=160)
    ap.add_argument("--slots", type=int, default=8)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--testgrid", default="target/release/testgrid")
    ap.add_argument("--python", default=sys.executable, help="a Python with pytest and pytest-xdist")
    args = ap.parse_args()
    testgrid = os.path.abspath(args.testgrid)

    secs = durations(args.tests, args.seed)
    failing = args.tests - 1
    plan = [(s, i == failing) for i, s in enumerate(secs)]
    total = sum(secs)
    bound = max(total / args.slots, max(secs))
    root = tempfile.mkdtemp(prefix="testgrid-makespan-")
    cache = tempfile.mkdtemp(prefix="testgrid-makespan-cache-")
    try:
        ends = write_suite(root, plan, args.seed)
        failing_name = f"t_{failing:03d}"
        env = dict(os.environ, XDG_CACHE_HOME=cache)
        tg = [testgrid, "run", "sh", "--local", str(args.slots), "--framework", "shell", "--quiet"]
        results = {}

        def record(name, start, wall):
            results[name] = {
                "makespan_s": round(wall, 3),
                "ratio": round(wall / bound, 3),
                "first_failure_s": round(first_failure(ends, failing_name, start) or -1, 3),
            }
            clear(ends)

        start, wall, _ = timed(tg, root, env)
        record("testgrid_cold", start, wall)
        # A second run so the history has seen every test twice (the mean settles).
        timed(tg, root, env)
        clear(ends)
        start, wall, _ = timed(tg, root, env)
        record("testgrid_warm", start, wall)
        start, wall = round_robin(root, args.slots)
        record("round_robin_by_size", start, wall)
        has_xdist = subprocess.run(
            [args.python, "-c", "import xdist, pytest"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        ).returncode == 0
        if has_xdist:
            cmd = [args.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", str(args.slots),
                   "--dist", "load", "py"]
            start, wall, _ = timed(cmd, root)
            record("pytest_xdist_load", start, wall)
        else:
            results["pytest_xdist_load"] = "skipped: no pytest-xdist for " + args.python
        print(json.dumps({
            "tests": args.tests, "slots": args.slots, "seed": args.seed,
            "total_work_s": round(total, 3), "longest_s": max(secs), "lower_bound_s": round(bound, 3),
            "results": results,
        }, indent=1))
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
