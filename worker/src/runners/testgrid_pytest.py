"""testgrid's warm pytest runner: a pytest plugin that runs test files on demand.

The worker starts one `python -m pytest -p testgrid_pytest` per slot and talks to it over a Unix
socket (TESTGRID_RUNNER_SOCKET), never over stdout, which the tests own. One JSON object per
line each way.

worker -> runner:  {"op": "run", "unit": N, "path": "tests/test_x.py"}   collect and run a file
                   {"op": "stop"}                                         tear down and exit
runner -> worker:  {"op": "ready", "pid": P}
                   {"op": "collected", "unit": N, "tests": ["tests/test_x.py::test_a", ...],
                    "deselected": D}
                   {"op": "started", "unit": N, "test": ID}
                   {"op": "case", "unit": N, "test": ID, "outcome": O, "phase": PH,
                    "duration_ms": D, "message": M, "output": OUT, "xfail": B}
                   {"op": "done", "unit": N, "error": null | "collection error text"}

A file is collected only when it is assigned (collecting a whole suite up front is slow), with
the session's own arguments on pytest's command line: `-k` and `-m` deselect as under pytest, and
the deselected cases are counted, not reported.
Outcomes: a failed call is "failed"; a failed setup or teardown is "error"; skips are "skipped";
xfail is "passed" with "xfail": true; xpass is "passed" (pytest itself fails a strict xpass).
"""

import json
import os
import socket
import sys
import time

import pytest

# Characters of output sent per case at most (head and tail kept).
_OUTPUT_LIMIT = 256 * 1024


class _Channel:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.reader = self.sock.makefile("r", encoding="utf-8")
        self.writer = self.sock.makefile("w", encoding="utf-8")

    def send(self, **message):
        self.writer.write(json.dumps(message) + "\n")
        self.writer.flush()

    def receive(self):
        line = self.reader.readline()
        return json.loads(line) if line else None


def pytest_configure(config):
    path = os.environ.get("TESTGRID_RUNNER_SOCKET")
    if path:
        config._testgrid = _Channel(path)
        config._testgrid_cases = {}
        config._testgrid_unit = None
        config._testgrid_deselected = 0


def pytest_deselected(items):
    if items and hasattr(items[0].config, "_testgrid"):
        items[0].config._testgrid_deselected += len(items)


@pytest.hookimpl(tryfirst=True)
def pytest_collection(session):
    if not hasattr(session.config, "_testgrid"):
        return None
    # Nothing up front: files are collected when they are assigned.
    session.items = []
    return True


class _CollectErrors:
    """Records collection failures and skips (a module-level `pytest.skip` or `importorskip`),
    which pytest reports through pytest_collectreport."""

    def __init__(self):
        self.failures = []
        self.skips = []

    def pytest_collectreport(self, report):
        if report.failed:
            self.failures.append(report.longreprtext or str(report.longrepr))
        elif report.skipped:
            self.skips.append((report.nodeid, _skip_reason(report)))


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session):
    config = session.config
    channel = getattr(config, "_testgrid", None)
    if channel is None:
        return None
    collect_errors = _CollectErrors()
    config.pluginmanager.register(collect_errors, "testgrid-collect-errors")
    _save_cov_options(config)
    channel.send(op="ready", pid=os.getpid())
    while True:
        command = channel.receive()
        if command is None or command.get("op") == "stop":
            break
        if command.get("op") != "run":
            continue
        unit = command["unit"]
        collect_errors.failures.clear()
        collect_errors.skips.clear()
        config._testgrid_deselected = 0
        # Each file is a fresh start: `-x` or `--maxfail` from a previous file must not stop it.
        session.testsfailed = 0
        # pytest's setters refuse to clear these once set; the private fields hold them.
        for name in ("shouldfail", "shouldstop"):
            if hasattr(session, "_" + name):
                setattr(session, "_" + name, False)
            else:
                setattr(session, name, False)
        try:
            items = session.perform_collect([command["path"]])
        except Exception as e:
            items = []
            collect_errors.failures.append("%s: %s" % (type(e).__name__, e))
        if collect_errors.failures:
            channel.send(op="done", unit=unit, error="\n".join(collect_errors.failures))
            continue
        channel.send(op="collected", unit=unit, tests=[item.nodeid for item in items],
                     deselected=config._testgrid_deselected)
        # A skipped module counts as one skipped case, as in pytest's own totals.
        for nodeid, reason in collect_errors.skips:
            channel.send(op="case", unit=unit, test=nodeid, outcome="skipped", phase="collect",
                         duration_ms=0, message=reason, output="", xfail=False)
        config._testgrid_unit = unit
        for index, item in enumerate(items):
            nextitem = items[index + 1] if index + 1 < len(items) else None
            channel.send(op="started", unit=unit, test=item.nodeid)
            config._testgrid_cases[item.nodeid] = {"reports": [], "start": time.monotonic()}
            item.config.hook.pytest_runtest_protocol(item=item, nextitem=nextitem)
            _report_case(channel, unit, item.nodeid, config._testgrid_cases.pop(item.nodeid))
            if session.shouldstop or session.shouldfail:
                break
        channel.send(op="done", unit=unit, error=None)
    return True


def _save_cov_options(config):
    """With pytest-cov on (`--cov`) and the session's coverage merged (TESTGRID_COVERAGE_DIR), say
    which reports pytest-cov was asked for, so that the merge writes them (each runner's own
    reports see only its files and are written over)."""
    folder = os.environ.get("TESTGRID_COVERAGE_DIR")
    plugin = config.pluginmanager.getplugin("_cov")
    options = getattr(plugin, "options", None)
    if not folder or options is None or getattr(plugin, "cov_controller", None) is None:
        return
    report = options.cov_report
    saved = {
        "report": dict(report) if isinstance(report, dict) else list(report or []),
        "fail_under": getattr(options, "cov_fail_under", None),
        "precision": getattr(options, "cov_precision", None) or 0,
    }
    path = os.path.join(folder, "pytest-cov.json")
    try:
        os.makedirs(folder, exist_ok=True)
        with open(f"{path}.{os.getpid()}", "w", encoding="utf-8") as f:
            json.dump(saved, f)
        os.replace(f"{path}.{os.getpid()}", path)
    except (OSError, TypeError, ValueError) as e:
        print(f"[testgrid-pytest] cannot save pytest-cov's options: {e}", file=sys.stderr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    cases = getattr(item.config, "_testgrid_cases", None)
    if cases is not None and item.nodeid in cases:
        cases[item.nodeid]["reports"].append(report)


def _report_case(channel, unit, nodeid, case):
    outcome, phase, message, xfail = "passed", "call", "", False
    output = []
    reports = case["reports"]
    # Each phase's report repeats the captured sections of the phases before it: the last one
    # has them all, once.
    if reports:
        for name, content in reports[-1].sections:
            if content.strip():
                output.append("----- %s -----\n%s" % (name, content))
    for report in reports:
        if report.failed:
            if report.when == "call":
                if outcome == "passed":
                    outcome, phase = "failed", "call"
                message = message or _first_line(report)
            elif outcome == "failed":
                # The call failed and then its teardown did too: still a failure, both named.
                message = "%s; then %s failed: %s" % (message, report.when, _first_line(report))
            else:
                outcome, phase = "error", report.when
                message = message or _first_line(report)
            output.append(report.longreprtext or "")
        elif report.skipped:
            if hasattr(report, "wasxfail"):
                xfail = True
                message = message or ("xfail: %s" % report.wasxfail if report.wasxfail else "xfail")
            elif outcome == "passed":
                outcome, phase = "skipped", report.when
                message = message or _skip_reason(report)
        elif report.passed and hasattr(report, "wasxfail") and report.when == "call":
            message = message or "xpass"
    text = "\n".join(o for o in output if o)
    if len(text) > _OUTPUT_LIMIT:
        # The worker keeps less than this anyway; never ship megabytes over the socket.
        text = text[: _OUTPUT_LIMIT // 4] + "\n[... cut by the testgrid runner ...]\n" + text[-(_OUTPUT_LIMIT * 3 // 4):]
    channel.send(
        op="case",
        unit=unit,
        test=nodeid,
        outcome=outcome,
        phase=phase,
        duration_ms=int((time.monotonic() - case["start"]) * 1000),
        message=message,
        output=text,
        xfail=xfail,
    )


def _first_line(report):
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None and getattr(crash, "message", None):
        return crash.message.splitlines()[0][:500]
    text = report.longreprtext or ""
    return text.strip().splitlines()[-1][:500] if text.strip() else "failed"


def _skip_reason(report):
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return "skipped"
