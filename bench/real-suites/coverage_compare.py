#!/usr/bin/env python3
"""Compare two coverage reports per file: statements in total and covered. Either istanbul's
`coverage-final.json` (jest, vitest) or coverage.py's `coverage json` (pytest-cov).

    coverage_compare.py OWN.json TESTGRID.json [ROOT]

Paths are compared relative to ROOT (default: the current folder). Prints the files that differ
(first 10) and `same statement coverage: yes|no`; exits 1 when they differ.
"""
import json
import os
import sys


def load(path, root):
    with open(path) as f:
        data = json.load(f)
    out = {}
    if "meta" in data and "files" in data:
        # coverage.py's `coverage json`
        for name, file in data["files"].items():
            summary = file["summary"]
            out[os.path.relpath(os.path.join(root, name), root)] = (summary["num_statements"], summary["covered_lines"])
        return out
    for key, file in data.items():
        name = os.path.relpath(file.get("path", key), root)
        counts = file.get("s", {})
        out[name] = (len(counts), sum(1 for n in counts.values() if n > 0))
    return out


def main():
    own_path, ours_path = sys.argv[1], sys.argv[2]
    root = sys.argv[3] if len(sys.argv) > 3 else os.getcwd()
    own, ours = load(own_path, root), load(ours_path, root)
    differ = [f for f in sorted(set(own) | set(ours)) if own.get(f) != ours.get(f)]
    total = lambda m: (sum(t for t, _ in m.values()), sum(c for _, c in m.values()))
    print(f"own:      {len(own)} files, statements {total(own)[1]}/{total(own)[0]} covered")
    print(f"testgrid: {len(ours)} files, statements {total(ours)[1]}/{total(ours)[0]} covered")
    for f in differ[:10]:
        print(f"  {f}: own {own.get(f)} testgrid {ours.get(f)} (total, covered)")
    print(f"same statement coverage: {'no' if differ else 'yes'}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
