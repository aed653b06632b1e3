#!/usr/bin/env python3
"""Failover latency: how long from a fault on a worker until its running test is requeued and
restarted on another worker, for three faults: the worker killed (SIGKILL), frozen (SIGSTOP),
and cut off from the network (a proxy that black-holes its traffic).

    bench/failover/run.py [--runs 5] [--liveness 5s] [--heartbeat 1s]

Real binaries (release build), loopback, default liveness settings unless overridden. The fault
time and the coordinator's event times come from the same clock (this machine). Targets
(PRODUCT.md): kill -> requeued <= 1 s; freeze or cut -> requeued <= liveness timeout + 1 s.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.path.join(REPO, "target", "release")


def now_ms():
    return int(time.time() * 1000)


def wait_for(what, check, timeout=60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.01)
    raise SystemExit(f"timed out waiting for {what}")


class Proxy:
    """TCP proxy on a loopback port; `cut` makes bytes vanish in both directions."""

    def __init__(self, upstream):
        self.upstream = upstream
        self.cut = False
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.addr = "127.0.0.1:%d" % self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            host, port = self.upstream.split(":")
            try:
                server = socket.create_connection((host, int(port)))
            except OSError:
                client.close()
                continue
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src, dst):
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                break
            if not data:
                break
            if self.cut:
                continue
            try:
                dst.sendall(data)
            except OSError:
                break
        try:
            dst.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def start_coordinator(args):
    data = tempfile.mkdtemp(prefix="tg-bench-data-")
    proc = subprocess.Popen(
        [os.path.join(BIN, "testgrid-coordinator"), "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
         "--data-dir", data, "--liveness-timeout", args.liveness, "--heartbeat-interval", args.heartbeat],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, "TESTGRID_LOG": "error"})
    line = proc.stdout.readline()
    fields = dict(w.split("=", 1) for w in line.split() if "=" in w)
    return proc, fields["grpc"]


def start_worker(grid, name, root):
    return subprocess.Popen(
        [os.path.join(BIN, "testgrid-worker"), "--grid", "http://" + grid, "--name", name, "--slots", "1", "--root", root],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "TESTGRID_LOG": "error"})


def workers(grid, root):
    out = subprocess.run([os.path.join(BIN, "testgrid"), "workers", "--json", "--grid", grid],
                         cwd=root, capture_output=True, text=True)
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def events(path):
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError):
        return []


def one_run(fault, args):
    root = tempfile.mkdtemp(prefix="tg-bench-ws-")
    os.mkdir(os.path.join(root, ".git"))
    marker = os.path.join(root, "started")
    with open(os.path.join(root, "slow.sh"), "w") as f:
        f.write(f"touch '{marker}'; sleep 120\n")
    coordinator, grid = start_coordinator(args)
    procs = [coordinator]
    try:
        target = grid
        proxy = None
        if fault == "cut":
            proxy = Proxy(grid)
            target = proxy.addr
        victim = start_worker(target, "victim", root)
        procs.append(victim)
        wait_for("the victim to connect", lambda: len(workers(grid, root)) == 1)
        out_path = os.path.join(root, "events.jsonl")
        run = subprocess.Popen([os.path.join(BIN, "testgrid"), "run", "slow.sh", "--json", "--grid", grid, "--timeout", "0"],
                               cwd=root, stdout=open(out_path, "w"), stderr=subprocess.DEVNULL)
        procs.append(run)
        wait_for("slow.sh to start", lambda: os.path.exists(marker))
        procs.append(start_worker(grid, "spare", root))
        wait_for("the spare to connect", lambda: len(workers(grid, root)) == 2)
        t0 = now_ms()
        if fault == "kill":
            victim.send_signal(signal.SIGKILL)
        elif fault == "freeze":
            victim.send_signal(signal.SIGSTOP)
        else:
            proxy.cut = True

        def requeued_and_restarted():
            evs = events(out_path)
            requeued = next((e for e in evs if e.get("event") == "test_requeued"), None)
            restarted = next((e for e in evs if e.get("event") == "test_started" and e.get("attempt") == 2), None)
            return (requeued, restarted) if requeued and restarted else None

        requeued, restarted = wait_for("the requeue", requeued_and_restarted, timeout=120)
        return requeued["time_ms"] - t0, restarted["time_ms"] - t0
    finally:
        for p in reversed(procs):
            try:
                p.send_signal(signal.SIGCONT)
                p.kill()
                p.wait(timeout=10)
            except Exception:
                pass
        shutil.rmtree(root, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--liveness", default="5s")
    parser.add_argument("--heartbeat", default="1s")
    args = parser.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet", "--manifest-path", os.path.join(REPO, "Cargo.toml"), "--bins"],
                   check=True)
    print(f"{args.runs} runs per fault; liveness timeout {args.liveness}, heartbeat {args.heartbeat}")
    print(f"{'fault':<8} {'requeued median':>16} {'worst':>8} {'restarted median':>17} {'worst':>8}   runs (requeued ms)")
    for fault in ("kill", "freeze", "cut"):
        results = [one_run(fault, args) for _ in range(args.runs)]
        req = [r[0] for r in results]
        res = [r[1] for r in results]
        print(f"{fault:<8} {statistics.median(req):>14.0f}ms {max(req):>6}ms {statistics.median(res):>15.0f}ms "
              f"{max(res):>6}ms   {req}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
