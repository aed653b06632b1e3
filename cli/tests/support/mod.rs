//! Test support: start the real `testgrid-coordinator` and `testgrid-worker` binaries on
//! OS-chosen loopback ports, wait for readiness on events (health endpoint, worker list), run the
//! real `testgrid` CLI, and clean up every process on drop.

#![allow(dead_code, reason = "each test binary uses a different part of the support module")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Generous: these machines are shared and slow.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// The directory holding the workspace's binaries, building them once if they are missing
/// (`cargo test -p testgrid-cli` alone does not build the other packages' binaries).
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let testgrid = PathBuf::from(env!("CARGO_BIN_EXE_testgrid"));
        let dir = testgrid.parent().expect("binaries live in a directory").to_path_buf();
        if !dir.join("testgrid-coordinator").exists() || !dir.join("testgrid-worker").exists() {
            let status = Command::new(env!("CARGO"))
                .args(["build", "--bins", "-p", "testgrid-coordinator", "-p", "testgrid-worker"])
                .status()
                .expect("cargo runs");
            assert!(status.success(), "building the coordinator and worker binaries failed");
        }
        dir
    })
}

pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// Wait until `check` returns Some, or panic with `what` after the deadline.
pub fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A child process killed (whole group) when dropped.
pub struct Proc {
    pub child: Child,
}

impl Proc {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill").args([&format!("-{signal}"), &self.pid().to_string()]).status();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A coordinator with its workers.
pub struct Grid {
    pub url: String,
    pub http: String,
    pub coordinator: Proc,
    pub workers: Vec<Proc>,
    pub root: PathBuf,
    /// The coordinator's `--data-dir`.
    pub data: PathBuf,
    /// The flags it was started with.
    pub coordinator_args: Vec<String>,
}

/// Start a coordinator on a new data directory; wait until it is healthy; return it with its
/// gRPC and HTTP addresses.
pub fn spawn_coordinator(grpc: &str, http: &str, args: &[&str]) -> (Proc, String, String) {
    let data = tempfile::tempdir().expect("tempdir").keep();
    spawn_coordinator_in(&data, grpc, http, args)
}

/// Start a coordinator on the data directory `data`.
pub fn spawn_coordinator_in(data: &Path, grpc: &str, http: &str, args: &[&str]) -> (Proc, String, String) {
    let child = Command::new(bin("testgrid-coordinator"))
        .args(["--listen", grpc, "--http", http, "--data-dir"])
        .arg(data)
        .args(args)
        .env("TESTGRID_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("coordinator starts");
    let mut coordinator = Proc { child };
    let field = first_line(&mut coordinator);
    let (grpc, http) = (field("grpc"), field("http"));
    wait_for("coordinator health", || http_get(&http, "/healthz"));
    (coordinator, grpc, http)
}

/// The `name=VALUE` fields of the first line `proc` prints on its (piped) stdout: the addresses
/// a coordinator or a worker bound.
pub fn first_line(proc: &mut Proc) -> impl Fn(&str) -> String + use<> {
    let mut line = String::new();
    let out = proc.child.stdout.take().expect("piped stdout");
    BufReader::new(out).read_line(&mut line).expect("the process prints its addresses");
    move |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
            .to_string()
    }
}

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").to_path_buf()
}

/// Start a worker with `--slots 1` unless `extra` says otherwise.
pub fn spawn_worker(grid_url: &str, name: &str, root: &Path, extra: &[&str]) -> Proc {
    let slots: &[&str] = if extra.contains(&"--slots") { &[] } else { &["--slots", "1"] };
    let child = Command::new(bin("testgrid-worker"))
        .args(["--grid", grid_url, "--name", name, "--kill-grace", "1s"])
        .args(slots)
        .arg("--root")
        .arg(root)
        .args(extra)
        .env("TESTGRID_LOG", "warn")
        .spawn()
        .expect("worker starts");
    Proc { child }
}

/// A one-slot worker with extra environment variables (a PATH with a venv, a target folder).
pub fn spawn_worker_env(grid_url: &str, name: &str, root: &Path, env: &[(&str, &str)]) -> Proc {
    let child = Command::new(bin("testgrid-worker"))
        .args(["--grid", grid_url, "--name", name, "--slots", "1", "--root"])
        .arg(root)
        .envs(env.iter().copied())
        .env("TESTGRID_LOG", "warn")
        .spawn()
        .expect("worker starts");
    Proc { child }
}

/// A two-slot worker with no `--root`, working in `dir` (an empty folder) with its cache in
/// `cache`: it shares nothing with the CLI, and runs a session's tests in the tree it was sent.
pub fn rootless_worker(url: &str, name: &str, dir: &Path, cache: &Path) -> Proc {
    let child = Command::new(bin("testgrid-worker"))
        .args(["--grid", url, "--name", name, "--slots", "2", "--cache-dir"])
        .arg(cache)
        .current_dir(dir)
        .env_remove("TESTGRID_ROOT")
        .env("TESTGRID_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("worker starts");
    Proc { child }
}

/// Wait until the grid at `url` lists a connected worker by each of `names`.
pub fn wait_for_workers(url: &str, names: &[String]) {
    wait_for_workers_with(url, names, "");
}

/// The same, asking with `token` (empty: none).
pub fn wait_for_workers_with(url: &str, names: &[String], token: &str) {
    wait_for(&format!("workers {names:?}"), || {
        let out = Command::new(env!("CARGO_BIN_EXE_testgrid"))
            .args(["workers", "--json", "--grid", url])
            .env("NO_COLOR", "1")
            .env("TESTGRID_TOKEN", token)
            .output()
            .ok()?;
        let listed: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|w| w["name"].as_str().map(str::to_string))
            .collect();
        names.iter().all(|n| listed.contains(n)).then_some(())
    });
}

/// `GET path` on the HTTP port; the body when the status is 200.
pub fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

impl Grid {
    /// Start a coordinator and `workers` one-slot workers rooted at `root`.
    pub fn start(root: &Path, workers: usize) -> Grid {
        Self::start_with(root, workers, &[])
    }

    pub fn start_with(root: &Path, workers: usize, coordinator_args: &[&str]) -> Grid {
        let data = tempfile::tempdir().expect("tempdir").keep();
        let (coordinator, grpc, http) = spawn_coordinator_in(&data, "127.0.0.1:0", "127.0.0.1:0", coordinator_args);
        let mut grid = Grid {
            url: format!("http://{grpc}"),
            http,
            coordinator,
            workers: Vec::new(),
            root: root.to_path_buf(),
            data,
            coordinator_args: coordinator_args.iter().map(|a| a.to_string()).collect(),
        };
        for i in 0..workers {
            grid.add_worker(&format!("w{}", i + 1), 1);
        }
        grid.wait_workers(workers);
        grid
    }

    pub fn add_worker(&mut self, name: &str, slots: u32) {
        let worker = spawn_worker(&self.url, name, &self.root, &["--slots", &slots.to_string()]);
        self.workers.push(worker);
    }

    /// Wait until exactly `n` workers are connected.
    pub fn wait_workers(&self, n: usize) {
        wait_for(&format!("{n} workers"), || {
            let out = self.cli(&["workers", "--json"]);
            let count = String::from_utf8_lossy(&out.stdout).lines().count();
            (out.status.success() && count == n).then_some(())
        });
    }

    /// `testgrid ARGS --grid URL`, run in the grid's root.
    pub fn cli(&self, args: &[&str]) -> Output {
        testgrid(&self.root).args(args).env("TESTGRID_GRID", &self.url).output().expect("testgrid runs")
    }
}

/// A `testgrid` command in `dir`, with no grid from the environment, and a cache folder of the
/// test's own (no duration history from other tests or earlier runs orders its sessions).
pub fn testgrid(dir: &Path) -> Command {
    static CACHE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(|| tempfile::tempdir().expect("tempdir").keep());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_testgrid"));
    cmd.current_dir(dir)
        .env_remove("TESTGRID_GRID")
        .env("NO_COLOR", "1")
        .env("XDG_CACHE_HOME", cache)
        .stdin(Stdio::null());
    cmd
}

/// A workspace of test files in a temp dir. Each test appends its name to `runs.log`, so tests
/// can check that every test ran exactly once.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Workspace {
        let dir = tempfile::tempdir().expect("tempdir");
        // A .git marker makes this folder the workspace root, whatever encloses it.
        std::fs::create_dir(dir.path().join(".git")).expect("mkdir .git");
        Workspace { dir }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().canonicalize().expect("root exists")
    }

    /// Write a shell test whose body runs after it logs its run.
    pub fn test(&self, rel: &str, body: &str) -> &Self {
        let path = self.dir.path().join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        let script = format!("echo \"$TESTGRID_TEST\" >> \"{}/runs.log\"\n{body}\n", self.root().display());
        std::fs::write(path, script).expect("write test");
        self
    }

    /// How often each test ran.
    pub fn runs(&self) -> std::collections::BTreeMap<String, usize> {
        let log = std::fs::read_to_string(self.root().join("runs.log")).unwrap_or_default();
        let mut counts = std::collections::BTreeMap::new();
        for line in log.lines() {
            *counts.entry(line.to_string()).or_insert(0) += 1;
        }
        counts
    }
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The JSON events of a `--json` run.
pub fn events(out: &Output) -> Vec<serde_json::Value> {
    stdout(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}")))
        .collect()
}

/// Case outcomes from `--json` events: case name -> outcome word, each case reported once.
pub fn case_outcomes(events: &[serde_json::Value]) -> std::collections::BTreeMap<String, String> {
    let mut cases = std::collections::BTreeMap::new();
    for e in events.iter().filter(|e| e["event"] == "test_finished" && e["final"] == true) {
        for c in e["cases"].as_array().expect("cases") {
            let name = c["name"].as_str().expect("name").to_string();
            let outcome = c["outcome"].as_str().expect("outcome").to_string();
            assert!(cases.insert(name.clone(), outcome).is_none(), "{name} reported twice");
        }
    }
    cases
}

/// Final outcome per test path from `--json` events, asserting there is exactly one each.
pub fn final_outcomes(events: &[serde_json::Value]) -> std::collections::BTreeMap<String, String> {
    let mut outcomes = std::collections::BTreeMap::new();
    for e in events.iter().filter(|e| e["event"] == "test_finished" && e["final"] == true) {
        let test = e["test"].as_str().expect("test path").to_string();
        let prev = outcomes.insert(test.clone(), e["outcome"].as_str().expect("outcome").to_string());
        assert!(prev.is_none(), "{test} has two outcomes");
    }
    outcomes
}

impl Grid {
    /// Start a worker with extra flags.
    pub fn add_worker_with(&mut self, name: &str, grid_url: &str, extra: &[&str]) {
        let worker = spawn_worker(grid_url, name, &self.root, extra);
        self.workers.push(worker);
    }

    /// Kill the coordinator and start a new one on the same ports and a new data directory (all
    /// state is lost).
    pub fn restart_coordinator(&mut self) {
        self.data = tempfile::tempdir().expect("tempdir").keep();
        self.restart_coordinator_keeping_data();
    }

    /// Kill the coordinator (SIGKILL: nothing is flushed) and start a new one on the same ports,
    /// data directory and flags.
    pub fn restart_coordinator_keeping_data(&mut self) {
        self.kill_coordinator();
        self.start_coordinator_keeping_data();
    }

    /// Kill the coordinator with SIGKILL: nothing is flushed.
    pub fn kill_coordinator(&mut self) {
        self.coordinator.signal("KILL");
        let _ = self.coordinator.child.wait();
    }

    /// Start a coordinator on the killed one's ports, data directory and flags.
    pub fn start_coordinator_keeping_data(&mut self) {
        let grpc = self.url.trim_start_matches("http://").to_string();
        let args: Vec<&str> = self.coordinator_args.iter().map(String::as_str).collect();
        let (coordinator, grpc_bound, http) = spawn_coordinator_in(&self.data, &grpc, &self.http, &args);
        assert_eq!(grpc_bound, grpc);
        self.coordinator = coordinator;
        self.http = http;
    }

    /// The worker process named `wN` (as `start` names them).
    pub fn worker(&mut self, name: &str) -> &mut Proc {
        let index: usize = name.trim_start_matches('w').parse::<usize>().expect("worker names are wN") - 1;
        &mut self.workers[index]
    }

    /// The name of the worker that reports `test` running, waiting for one to.
    pub fn holder_of(&self, test: &str) -> String {
        wait_for(&format!("a worker to report {test} running"), || {
            let out = self.cli(&["workers", "--json"]);
            stdout(&out).lines().find_map(|line| {
                let w: serde_json::Value = serde_json::from_str(line).ok()?;
                let running = w["running"].as_array()?.iter().any(|t| t == test);
                if running { w["name"].as_str().map(str::to_string) } else { None }
            })
        })
    }

    /// Start `testgrid run ARGS --json` against this grid in the background.
    pub fn spawn_run(&self, args: &[&str]) -> Run {
        let mut cmd = testgrid(&self.root);
        cmd.arg("run").args(args).arg("--json").env("TESTGRID_GRID", &self.url);
        Run::spawn(cmd)
    }
}

/// A CLI running in the background. Its output goes to files, not pipes: nobody reads a pipe
/// while it runs, and a full pipe would block it.
pub struct Run {
    pub child: Child,
    dir: tempfile::TempDir,
}

impl Run {
    pub fn spawn(mut cmd: Command) -> Run {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = std::fs::File::create(dir.path().join("stdout")).expect("create");
        let err = std::fs::File::create(dir.path().join("stderr")).expect("create");
        let child = cmd.stdout(out).stderr(err).spawn().expect("testgrid starts");
        Run { child, dir }
    }

    /// Wait until a `--json` run has printed its first event: the grid answered its submit, so
    /// the session is durable.
    pub fn wait_submitted(&self) {
        let stdout = self.dir.path().join("stdout");
        wait_for("the session to be submitted", || {
            std::fs::read_to_string(&stdout).ok().filter(|out| out.contains('\n')).map(drop)
        });
    }

    /// Wait for the exit; return the status with everything it printed.
    pub fn wait(mut self, within: Duration) -> Output {
        let status = wait_exit(&mut self.child, within);
        let read = |name: &str| std::fs::read(self.dir.path().join(name)).unwrap_or_default();
        Output { status, stdout: read("stdout"), stderr: read("stderr") }
    }
}

/// Wait for a child to exit, within `within`.
pub fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(start.elapsed() < within, "process {} did not exit within {within:?}", child.id());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The current time on the same clock the coordinator stamps events with.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A TCP proxy on an OS-chosen loopback port that can black-hole traffic (a network cut: both
/// sides stay connected and hear nothing), black-hole the upstream's replies on new
/// connections, or reset every connection.
pub struct Proxy {
    pub addr: String,
    blackhole: std::sync::Arc<std::sync::atomic::AtomicBool>,
    mute: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    pub fn start(upstream: &str) -> Proxy {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("addr").to_string();
        let blackhole = Arc::new(AtomicBool::new(false));
        let mute = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
        let upstream = upstream.to_string();
        let (bh, mt, cs) = (Arc::clone(&blackhole), Arc::clone(&mute), Arc::clone(&conns));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(&upstream) else { continue };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                if let (Ok(c), Ok(s)) = (client.try_clone(), server.try_clone()) {
                    let mut list = cs.lock().expect("proxy list");
                    list.push(c);
                    list.push(s);
                }
                for (mut from, mut to, replies) in [
                    (client.try_clone().expect("clone"), server.try_clone().expect("clone"), false),
                    (server, client, true),
                ] {
                    let bh = Arc::clone(&bh);
                    let muted = replies && mt.load(Ordering::SeqCst);
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        loop {
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            // Cut: the bytes vanish, as on a dead network path.
                            if bh.load(Ordering::SeqCst) || muted {
                                continue;
                            }
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Proxy { addr, blackhole, mute, conns }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn cut(&self, cut: bool) {
        self.blackhole.store(cut, std::sync::atomic::Ordering::SeqCst);
    }

    /// Connections made from now on while `mute` never hear from the upstream: requests reach
    /// it, no answer comes back, until they are reset.
    pub fn mute_replies(&self, mute: bool) {
        self.mute.store(mute, std::sync::atomic::Ordering::SeqCst);
    }

    /// Close every connection made so far (both ends see a reset or EOF).
    pub fn reset(&self) {
        for conn in self.conns.lock().expect("proxy list").drain(..) {
            let _ = conn.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// The test ids `testgrid list --json` printed, and each one's cases (pytest's).
pub fn listed(out: &Output) -> std::collections::BTreeMap<String, Vec<String>> {
    assert_eq!(out.status.code(), Some(0), "testgrid list: {}", stderr(out));
    let mut listed = std::collections::BTreeMap::new();
    for line in events(out) {
        let test = line["test"].as_str().expect("a test id").to_string();
        assert!(line["command"].as_str().is_some_and(|c| !c.is_empty()), "{line}");
        let cases = line["cases"].as_array().map(|c| c.iter().filter_map(|c| c.as_str().map(str::to_string)).collect());
        assert!(listed.insert(test.clone(), cases.unwrap_or_default()).is_none(), "{test} listed twice");
    }
    listed
}

/// The run's events, after checking the summary event agrees with the per-test outcomes.
pub fn finish(run: Run, expect_code: i32) -> Vec<serde_json::Value> {
    let out = run.wait(Duration::from_secs(300));
    assert_eq!(out.status.code(), Some(expect_code), "stdout: {}\nstderr: {}", stdout(&out), stderr(&out));
    let events = events(&out);
    let outcomes = final_outcomes(&events);
    let finished = events.last().expect("events");
    assert_eq!(finished["event"], "finished", "the last event is `finished`");
    let totals = &finished["totals"];
    assert_eq!(totals["total"].as_u64(), Some(outcomes.len() as u64), "every test has exactly one outcome");
    let mut counted: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    for outcome in outcomes.values() {
        *counted.entry(outcome.as_str()).or_default() += 1;
    }
    for (outcome, n) in counted {
        assert_eq!(totals[outcome].as_u64(), Some(n), "totals[{outcome}] in {totals}");
    }
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().expect("seq")).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "no event missing or repeated");
    events
}

/// The events of `kind` for `test`.
pub fn of_kind<'a>(events: &'a [serde_json::Value], kind: &str, test: &str) -> Vec<&'a serde_json::Value> {
    events.iter().filter(|e| e["event"] == kind && e["test"] == test).collect()
}
