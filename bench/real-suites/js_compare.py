#!/usr/bin/env python3
"""Compares a JavaScript framework's own JSON report (jest `--json`, vitest `--reporter=json`)
with the JSON events of `testgrid run --json` on the same project: the set of cases and their
outcomes, keyed by `FILE::ancestor > ... > title` with FILE relative to the project's folder.

    js_compare.py PROJECT_DIR OWN_REPORT.json TESTGRID_EVENTS.jsonl

vitest's type-test cases are keyed `FILE::[typecheck] ...`. Outcomes are folded to passed /
failed / skipped (pending, todo, skipped, disabled); testgrid's error and timed_out count as
failed. Prints counts, the first 10 of each kind of
difference and `same cases and outcomes: yes|no`; exits 0 either way (the caller reports it).
"""
import collections
import json
import re
import os
import sys

OWN = {"passed": "passed", "failed": "failed", "pending": "skipped", "todo": "skipped",
       "skipped": "skipped", "disabled": "skipped", "focused": "passed"}
TESTGRID = {"passed": "passed", "failed": "failed", "error": "failed", "timed_out": "failed",
            "skipped": "skipped"}


def workspace_root(project):
    """The folder testgrid names tests from: the enclosing git checkout, else the folder."""
    d = project
    while True:
        if os.path.exists(os.path.join(d, ".git")):
            return d
        parent = os.path.dirname(d)
        if parent == d:
            return project
        d = parent


TYPE_TEST = re.compile(r"\.(test|spec)-d\.[cm]?[jt]sx?$")


def own_cases(project, report):
    cases, files, file_errors = collections.Counter(), set(), []
    for result in report["testResults"]:
        path = os.path.relpath(result["name"], project)
        files.add(path)
        if result.get("status") == "failed" and not result["assertionResults"]:
            file_errors.append(path)
        for a in result["assertionResults"]:
            titles = a.get("ancestorTitles", [])
            # vitest's type tests (typecheck) name their file as the outermost suite; they are
            # marked, as a file can run both ways (typecheck.include matching *.test.ts).
            mark = ""
            if titles and "." in titles[0] and result["name"].endswith(titles[0]):
                titles, mark = titles[1:], "[typecheck] "
            key = path + "::" + mark + " > ".join([*titles, a["title"]])
            cases[(key, OWN.get(a["status"], a["status"]))] += 1
    return cases, files, file_errors


def testgrid_cases(project, events_path):
    root = workspace_root(project)
    rel = lambda p: os.path.relpath(os.path.join(root, p), project)
    cases, files, file_errors = collections.Counter(), set(), []
    for line in open(events_path):
        e = json.loads(line)
        if e.get("event") != "test_finished" or not e.get("final", True):
            continue
        path = rel(e["test"])
        files.add(path)
        if e["outcome"] != "passed" and not e["cases"]:
            file_errors.append(f"{path} ({e['outcome']}: {e.get('message', '')[:80]})")
        for c in e["cases"]:
            name = c["name"]
            file, sep, title = name.partition("::")
            # Type tests by vitest's default typecheck.include (*.test-d.ts, *.spec-d.ts) are
            # marked as in the own report; testgrid marks those of a file that also runs (zod).
            if sep and TYPE_TEST.search(file) and not title.startswith("[typecheck] "):
                title = "[typecheck] " + title
            key = rel(file) + "::" + title if sep else path + "::" + name
            cases[(key, TESTGRID.get(c["outcome"], c["outcome"]))] += 1
    return cases, files, file_errors


def show(label, items):
    items = sorted(items)
    print(f"{label}: {len(items)}")
    for item in items[:10]:
        print(f"    {item}")


def main():
    project, own_path, tg_path = os.path.abspath(sys.argv[1]), sys.argv[2], sys.argv[3]
    own, own_files, own_errors = own_cases(project, json.load(open(own_path)))
    tg, tg_files, tg_errors = testgrid_cases(project, tg_path)
    for label, cases, files in (("own     ", own, own_files), ("testgrid", tg, tg_files)):
        outcomes = collections.Counter()
        for (_, status), n in cases.items():
            outcomes[status] += n
        typecheck = sum(n for (key, _), n in cases.items() if "::[typecheck] " in key)
        print(f"{label}: {len(files)} files, {sum(cases.values())} cases "
              f"({', '.join(f'{n} {s}' for s, n in sorted(outcomes.items()))})"
              + (f", {typecheck} of them type tests" if typecheck else ""))
    show("files only in the own run", own_files - tg_files)
    show("files only in testgrid's run", tg_files - own_files)
    if own_errors or tg_errors:
        show("files failing without cases (own)", own_errors)
        show("files failing without cases (testgrid)", tg_errors)
    def by_key(cases):
        keys = collections.defaultdict(list)
        for (key, status), n in cases.items():
            keys[key] += [status] * n
        return {key: sorted(statuses) for key, statuses in keys.items()}

    own_keys, tg_keys = by_key(own), by_key(tg)
    show("cases only in the own run", [f"{k} [{'/'.join(v)}]" for k, v in own_keys.items() if k not in tg_keys])
    show("cases only in testgrid's run", [f"{k} [{'/'.join(v)}]" for k, v in tg_keys.items() if k not in own_keys])
    show("cases with other outcomes (own -> testgrid)",
         [f"{k}: {'/'.join(v)} -> {'/'.join(tg_keys[k])}" for k, v in own_keys.items()
          if k in tg_keys and tg_keys[k] != v])
    same = own == tg and own_files == tg_files
    print(f"same cases and outcomes: {'yes' if same else 'no'}")


if __name__ == "__main__":
    main()
