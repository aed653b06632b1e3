#!/usr/bin/env python3
"""Drive a testgrid warm runner by hand, the way the worker does (docs/runners.md).

    python3 drive_runner.py --runner node /path/to/testgrid_vitest.mjs --cwd PROJECT \\
        src/a.test.js 'src/b.test.js::outer > inner > works'

Creates a private Unix socket, starts the runner in PROJECT (its own process group) with
TESTGRID_RUNNER_SOCKET set, waits for `ready`, sends one `run` per FILE (the next only after
`done`), prints every message received as one JSON line on stdout, then sends `stop` and checks
that the runner exits 0 within 30 s. The runner's own stdout and stderr go to this stderr, and
timings are written there as `# ...` lines.

Exit status: 0 all well; 1 the protocol was violated; 2 the runner did not start, died, or hung
(per-file --timeout); 3 it did not exit 0 after stop. Stdlib only (Python 3.11).
"""

import argparse
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

OUTCOMES = {"passed", "failed", "skipped", "error"}
CASE_FIELDS = {
    "test": str,
    "outcome": str,
    "phase": str,
    "duration_ms": int,
    "message": str,
    "output": str,
    "xfail": bool,
}
# A case's message and output: the worker keeps 64 KiB; a runner sends at most a bit more.
FIELD_LIMIT = 80 * 1024


class Violation(Exception):
    pass


class Lines:
    """Reads JSON lines from the socket, with a deadline per line."""

    def __init__(self, conn):
        self.conn = conn
        self.buffer = b""

    def next(self, deadline):
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic() if deadline is not None else None
            if left is not None and left <= 0:
                raise TimeoutError
            self.conn.settimeout(left)
            try:
                chunk = self.conn.recv(65536)
            except socket.timeout:
                raise TimeoutError from None
            if not chunk:
                if self.buffer.strip():
                    line, self.buffer = self.buffer, b""
                    return line.decode("utf-8", "replace")
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode("utf-8", "replace")


def forward(stream, prefix):
    for raw in iter(stream.readline, b""):
        sys.stderr.write(prefix + raw.decode("utf-8", "replace"))
        sys.stderr.flush()


def note(text):
    sys.stderr.write("# " + text + "\n")
    sys.stderr.flush()


def check_case(message, unit, prefix):
    for field, kind in CASE_FIELDS.items():
        if field not in message:
            raise Violation(f"case without {field!r}: {message}")
        value = message[field]
        if kind is int and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise Violation(f"case with a bad duration_ms {value!r} (a non-negative integer)")
        if kind is not int and not isinstance(value, kind):
            raise Violation(f"case field {field!r} is {type(value).__name__}, not {kind.__name__}")
    if message["outcome"] not in OUTCOMES:
        raise Violation(f"unknown outcome {message['outcome']!r}")
    if not message["test"].startswith(prefix):
        raise Violation(f"test id {message['test']!r} does not start with {prefix!r}")
    for field in ("message", "output"):
        if len(message[field]) > FIELD_LIMIT:
            raise Violation(f"case {field} of {len(message[field])} characters (cap it at 64 KiB)")


def run_unit(lines, conn, unit, path, timeout):
    """Run one file; return (cases, error) or raise Violation / TimeoutError / EOFError."""
    file = path.split("::", 1)[0]
    prefix = file + "::"
    conn.sendall((json.dumps({"op": "run", "unit": unit, "path": path}) + "\n").encode())
    deadline = time.monotonic() + timeout if timeout else None
    collected = None
    cases = []
    started = None
    while True:
        line = lines.next(deadline)
        if line is None:
            raise EOFError(started)
        if not line.strip():
            continue
        print(line, flush=True)
        try:
            message = json.loads(line)
        except json.JSONDecodeError:
            raise Violation(f"not JSON: {line[:200]!r}") from None
        if not isinstance(message, dict):
            raise Violation(f"not an object: {line[:200]!r}")
        op = message.get("op")
        if op == "ready":
            continue
        if message.get("unit") != unit:
            raise Violation(f"{op} for unit {message.get('unit')!r} while unit {unit} runs")
        if op == "collected":
            tests = message.get("tests")
            if collected is not None:
                raise Violation("collected sent twice for one file")
            if not isinstance(tests, list) or not all(isinstance(t, str) for t in tests):
                raise Violation("collected.tests is not a list of strings")
            for test in tests:
                if not test.startswith(prefix):
                    raise Violation(f"collected id {test!r} does not start with {prefix!r}")
            collected = tests
        elif op == "started":
            if not isinstance(message.get("test"), str) or not message["test"].startswith(prefix):
                raise Violation(f"started with a bad test id: {message.get('test')!r}")
            started = message["test"]
        elif op == "case":
            check_case(message, unit, prefix)
            cases.append(message)
            started = None
        elif op == "done":
            error = message.get("error", "missing")
            if error is not None and not isinstance(error, str):
                raise Violation(f"done.error is {error!r}, not null or a string")
            return collected, cases, error
        else:
            raise Violation(f"unknown op {op!r}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runner", required=True, nargs="+", metavar="ARG",
                        help="the runner's command line, e.g. node /x/testgrid_vitest.mjs")
    parser.add_argument("--cwd", required=True, help="the project root the runner starts in")
    parser.add_argument("--timeout", type=float, default=300,
                        help="seconds a file may take before the runner is killed (0: none; default 300)")
    parser.add_argument("--start-timeout", type=float, default=60, help="seconds to connect and say ready")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="extra environment")
    parser.add_argument("--summary", action="store_true", help="print a per-case table on stderr")
    parser.add_argument("files", nargs="*", metavar="FILE[::CASE]")
    args = parser.parse_args()
    # `--runner node x.mjs FILE ...` leaves FILE inside --runner when nargs="+": a runner script's
    # arguments end at the first argument after a .mjs/.cjs/.js/.py script.
    runner = list(args.runner)
    for i, arg in enumerate(runner):
        if arg.endswith((".mjs", ".cjs", ".js", ".py")):
            args.files = runner[i + 1:] + args.files
            runner = runner[: i + 1]
            break
    if not args.files:
        parser.error("no FILE to run")

    tmp = tempfile.mkdtemp(prefix="testgrid-drive-")
    sock_path = os.path.join(tmp, "runner.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(sock_path)
    server.listen(1)
    env = dict(os.environ, TESTGRID_RUNNER_SOCKET=sock_path)
    for item in args.env:
        name, _, value = item.partition("=")
        env[name] = value
    note("starting " + shlex.join(runner) + " in " + args.cwd)
    t0 = time.monotonic()
    proc = subprocess.Popen(runner, cwd=args.cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    threads = [threading.Thread(target=forward, args=(proc.stdout, "[runner stdout] "), daemon=True),
               threading.Thread(target=forward, args=(proc.stderr, "[runner stderr] "), daemon=True)]
    for t in threads:
        t.start()

    def kill():
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()

    def finish(status):
        for t in threads:
            t.join(timeout=2)
        try:
            os.unlink(sock_path)
            os.rmdir(tmp)
        except OSError:
            pass
        sys.exit(status)

    server.settimeout(args.start_timeout)
    try:
        conn, _ = server.accept()
    except socket.timeout:
        note(f"the runner did not connect within {args.start_timeout:g} s (exit status {proc.poll()})")
        kill()
        finish(2)
    server.close()
    lines = Lines(conn)
    try:
        line = lines.next(t0 + args.start_timeout)
    except TimeoutError:
        line = None
    if line is None:
        note("the runner did not say ready")
        kill()
        finish(2)
    print(line, flush=True)
    try:
        ready = json.loads(line)
    except json.JSONDecodeError:
        ready = {}
    if ready.get("op") != "ready" or not isinstance(ready.get("pid"), int):
        note(f"protocol violation: the first message is not ready with a pid: {line[:200]}")
        kill()
        finish(1)
    note(f"ready after {time.monotonic() - t0:.2f} s (pid {ready['pid']})")

    status = 0
    table = []
    for unit, path in enumerate(args.files):
        t1 = time.monotonic()
        try:
            collected, cases, error = run_unit(lines, conn, unit, path, args.timeout)
        except Violation as e:
            note(f"protocol violation in unit {unit} ({path}): {e}")
            kill()
            finish(1)
        except TimeoutError:
            note(f"unit {unit} ({path}) took longer than {args.timeout:g} s: killing the runner")
            kill()
            finish(2)
        except EOFError as e:
            code = proc.wait(timeout=10)
            running = f" while running {e.args[0]!r}" if e.args and e.args[0] else ""
            note(f"the runner died during unit {unit} ({path}){running}: exit status {code}")
            kill()
            finish(2)
        counts = {}
        for case in cases:
            counts[case["outcome"]] = counts.get(case["outcome"], 0) + 1
            table.append((case["outcome"], case["test"], case["message"].splitlines()[0] if case["message"] else ""))
        if collected is not None:
            ids = {c["test"] for c in cases}
            missing = [t for t in collected if t not in ids]
            if missing and error is None:
                note(f"unit {unit}: collected but never reported: {missing}")
        summary = ", ".join(f"{n} {o}" for o, n in sorted(counts.items())) or "no cases"
        note(f"unit {unit} {path}: {time.monotonic() - t1:.3f} s, {summary}"
             + (", file error" if error is not None else ""))
        if error is not None:
            table.append(("FILE ERROR", path, error.strip().splitlines()[0] if error.strip() else ""))

    t2 = time.monotonic()
    try:
        conn.sendall(b'{"op": "stop"}\n')
    except OSError:
        pass
    try:
        code = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        note("the runner did not exit within 30 s of stop")
        kill()
        finish(3)
    conn.close()
    note(f"stopped after {time.monotonic() - t2:.2f} s, exit status {code}")
    if code != 0:
        status = 3
    if args.summary:
        for outcome, test, message in table:
            sys.stderr.write(f"{outcome:10} {test}" + (f"  -- {message}" if message else "") + "\n")
    finish(status)


if __name__ == "__main__":
    main()
