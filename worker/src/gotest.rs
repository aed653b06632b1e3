//! The Go executor: a unit is a package folder (`pkg/a`, `.` for the root), or one test of it
//! (`pkg/a::TestName`, `pkg/a::TestName/subtest`), reported per case.
//!
//! Once per session and package a worker compiles the package's test binary (`go test -c`, in
//! the package's folder, with the session's environment) into a directory it keeps for the
//! session; slots that need the same package at the same time share that one compile. The
//! binary then runs in the package's folder, as `go test` runs it, in its own process group,
//! with its output piped through `test2json` (the documented converter, in its own process
//! group so that it can still flush after the tests are killed). Its events become cases named
//! `PKG::TestName` (`PKG::TestName/sub` for subtests) with the package folder as class name.
//!
//! The per-test timeout starts when the binary starts (compiling has its own limit,
//! [`BUILD_TIMEOUT`]). A timeout kills the binary's group: the tests running then are
//! `timed_out`, those never reached `error`. A binary that dies mid-test (a panic, `os.Exit`)
//! fails the tests it was running and reports those it never reached as `error` ("not run: …"),
//! which it learns from `-test.list`. A package that fails without a failing test (`TestMain`
//! exiting non-zero, an `init` panic) fails with the binary's output. A compile error makes the
//! unit `error` with the compiler's output; a package without test files passes with no cases.
//!
//! Isolation (`--isolation`) does not change Go: a package's tests always share one process,
//! as under `go test`.

use std::collections::{HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Component, Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde::Deserialize;
use testgrid_proto as pb;
use tokio::io::AsyncReadExt;
use tokio::sync::{OnceCell, mpsc};
use tokio_util::sync::CancellationToken;

use crate::executor::{Executor, GroupGuard, Job, ProcessExecutor, kill_group, lock, read_output};
use crate::output::Capture;
use crate::warm::{CASE_OUTPUT_LIMIT, Kind, Unit, unit_report};

/// Sessions whose test binaries a worker keeps; the least recently used goes first.
pub const KEEP_SESSIONS: usize = 8;

/// How long `go test -c` may take for one package.
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// How long `BIN -test.list` may take (it runs `TestMain` and `init`).
const LIST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long test2json may take to flush after the binary's group is gone; longer only when a
/// process that escaped the group holds the pipe open.
const DRAIN: Duration = Duration::from_secs(2);

/// A line of test2json output longer than this is dropped (test2json splits long test output).
const MAX_LINE: usize = 1024 * 1024;

/// What test2json's own stderr keeps.
const CONVERTER_LOG_LIMIT: usize = 8 * 1024;

/// How this worker's Go runs tests.
#[derive(Clone, Debug)]
struct Toolchain {
    /// test2json: the binary in `GOTOOLDIR`, else `go tool test2json`.
    test2json: Vec<String>,
    /// `-test.v=test2json` (Go 1.20+: exact framing of test output) or `-test.v`.
    verbose_flag: &'static str,
}

/// One package's compile, shared by the session's slots.
#[derive(Clone, Debug)]
enum Build {
    Binary(PathBuf),
    NoTestFiles,
    Failed { message: String, output: Vec<u8> },
}

/// Where a package's binary goes, and its compile (run once, by the first slot to need it).
type Compile = (PathBuf, Arc<OnceCell<Build>>);

/// A session's test binaries: a directory removed when the session is dropped from the cache
/// and no job uses it any more.
struct SessionBuilds {
    session: String,
    dir: tempfile::TempDir,
    packages: Mutex<HashMap<String, Compile>>,
}

impl SessionBuilds {
    /// The package's compile cell and where its binary goes.
    fn cell(&self, pkg: &str) -> Compile {
        let mut packages = lock(&self.packages);
        let next = packages.len();
        packages
            .entry(pkg.to_string())
            .or_insert_with(|| (self.dir.path().join(format!("{next}.test")), Arc::new(OnceCell::new())))
            .clone()
    }
}

/// Runs Go packages' tests from their compiled test binaries.
pub struct GoExecutor {
    pub process: Arc<ProcessExecutor>,
    toolchain: OnceCell<Toolchain>,
    sessions: Mutex<VecDeque<Arc<SessionBuilds>>>,
    /// Compiles started, for tests (slots needing one package share one compile).
    compiles: AtomicU64,
}

/// What a unit names: a package folder and maybe one test (or subtest) of it.
#[derive(Debug, PartialEq)]
struct Target {
    pkg: String,
    case: Option<String>,
}

impl GoExecutor {
    pub fn new(process: Arc<ProcessExecutor>) -> Self {
        GoExecutor {
            process,
            toolchain: OnceCell::new(),
            sessions: Mutex::new(VecDeque::new()),
            compiles: AtomicU64::new(0),
        }
    }

    /// The session's binaries, most recently used last; the oldest beyond [`KEEP_SESSIONS`] go.
    fn session_builds(&self, session: &str) -> Result<Arc<SessionBuilds>, String> {
        let mut sessions = lock(&self.sessions);
        if let Some(at) = sessions.iter().position(|s| s.session == session)
            && let Some(found) = sessions.remove(at)
        {
            sessions.push_back(Arc::clone(&found));
            return Ok(found);
        }
        let dir = tempfile::Builder::new()
            .prefix("testgrid-go-")
            .tempdir()
            .map_err(|e| format!("cannot create a directory for Go test binaries: {e}; check TMPDIR"))?;
        let builds =
            Arc::new(SessionBuilds { session: session.to_string(), dir, packages: Mutex::new(HashMap::new()) });
        sessions.push_back(Arc::clone(&builds));
        while sessions.len() > KEEP_SESSIONS {
            sessions.pop_front();
        }
        Ok(builds)
    }

    async fn toolchain(&self, job: &Job) -> Result<Toolchain, String> {
        // Failures are not kept: Go may be installed while the worker runs.
        self.toolchain.get_or_try_init(|| detect_toolchain(&self.process, job)).await.cloned()
    }

    async fn run_unit(&self, job: &Job, cancel: CancellationToken) -> pb::TestReport {
        let started = Instant::now();
        let target = match parse_target(&job.path, &self.process.root) {
            Ok(target) => target,
            Err(message) => return simple_report(pb::Outcome::Error, message, Vec::new(), started),
        };
        let tools = tokio::select! {
            tools = self.toolchain(job) => tools,
            () = cancel.cancelled() => return simple_report(pb::Outcome::Cancelled, "cancelled".into(), Vec::new(), started),
        };
        let tools = match tools {
            Ok(tools) => tools,
            Err(message) => return simple_report(pb::Outcome::Error, message, Vec::new(), started),
        };
        let builds = match self.session_builds(&job.assignment.session_id) {
            Ok(builds) => builds,
            Err(message) => return simple_report(pb::Outcome::Error, message, Vec::new(), started),
        };
        let (binary, cell) = builds.cell(&target.pkg);
        // A cancelled waiter drops its compile (killing it); another waiter then compiles anew.
        let build = tokio::select! {
            build = cell.get_or_init(|| self.compile(job, &target.pkg, &binary)) => build.clone(),
            () = cancel.cancelled() => return simple_report(pb::Outcome::Cancelled, "cancelled".into(), Vec::new(), started),
        };
        match build {
            Build::NoTestFiles => simple_report(pb::Outcome::Passed, "no test files".into(), Vec::new(), started),
            Build::Failed { message, output } => simple_report(pb::Outcome::Error, message, output, started),
            Build::Binary(binary) => {
                let report = self.run_binary(job, &target, &tools, &binary, started, cancel).await;
                // The session's directory stays until the last job using it is done.
                drop(builds);
                report
            }
        }
    }

    /// `go test -c -o OUT .` in the package's folder.
    async fn compile(&self, job: &Job, pkg: &str, out: &Path) -> Build {
        self.compiles.fetch_add(1, Ordering::Relaxed);
        let failed = |message: String| Build::Failed { message, output: Vec::new() };
        let dir = self.process.root.join(pkg);
        let (reader, writer) = match std::io::pipe() {
            Ok(pair) => pair,
            Err(e) => return failed(format!("cannot create an output pipe: {e}")),
        };
        let writer2 = match writer.try_clone() {
            Ok(w) => w,
            Err(e) => return failed(format!("cannot create an output pipe: {e}")),
        };
        let mut cmd = self.process.base_command("go");
        cmd.current_dir(&dir)
            .args(["test", "-c", "-o"])
            .arg(out)
            .arg(".")
            .envs(&job.env)
            .stdout(writer2)
            .stderr(writer);
        let spawned = cmd.spawn();
        // The command holds the pipe's write ends; drop them so the reader sees EOF.
        drop(cmd);
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                return failed(format!(
                    "cannot start `go test -c` in {}: {e}; install Go on the worker (e.g. `apt-get install \
                     golang-go`) or put `go` on the worker's PATH",
                    dir.display()
                ));
            }
        };
        let Some(group) = child.id().map(|pid| GroupGuard::new(pid as i32)) else {
            return failed("`go test -c` vanished at start".into());
        };
        let capture = Arc::new(Mutex::new(Capture::new(self.process.output_limit)));
        let mut reading = tokio::spawn(read_output(OwnedFd::from(reader), Arc::clone(&capture)));
        let status = tokio::time::timeout(BUILD_TIMEOUT, child.wait()).await;
        // The compiler's helpers go with it (all of it, after a timeout).
        drop(group);
        if tokio::time::timeout(DRAIN, &mut reading).await.is_err() {
            reading.abort();
        }
        let (output, _) = std::mem::replace(&mut *lock(&capture), Capture::new(0)).finish();
        match status {
            Ok(Ok(status)) if status.success() => {
                if out.is_file() {
                    Build::Binary(out.to_path_buf())
                } else {
                    Build::NoTestFiles
                }
            }
            Ok(Ok(status)) => {
                Build::Failed { message: format!("build failed: `go test -c` {}", describe(status)), output }
            }
            Ok(Err(e)) => Build::Failed { message: format!("cannot wait for `go test -c`: {e}"), output },
            Err(_) => Build::Failed {
                message: format!(
                    "build failed: `go test -c` did not finish within {}",
                    humantime::format_duration(BUILD_TIMEOUT)
                ),
                output,
            },
        }
    }

    /// Run the test binary through test2json and turn its events into cases.
    async fn run_binary(
        &self,
        job: &Job,
        target: &Target,
        tools: &Toolchain,
        binary: &Path,
        started: Instant,
        cancel: CancellationToken,
    ) -> pb::TestReport {
        let error = |message: String| simple_report(pb::Outcome::Error, message, Vec::new(), started);
        let Some(binary_path) = binary.to_str() else {
            return error(format!(
                "the test binary's path {} is not UTF-8; set TMPDIR to a plain path",
                binary.display()
            ));
        };
        let dir = self.process.root.join(&target.pkg);
        let pipes = (|| Ok::<_, std::io::Error>((std::io::pipe()?, std::io::pipe()?, std::io::pipe()?)))();
        let ((tests_out, tests_in), (events_out, events_in), (log_out, log_in)) = match pipes {
            Ok(pipes) => pipes,
            Err(e) => return error(format!("cannot create a pipe: {e}")),
        };
        let tests_in2 = match tests_in.try_clone() {
            Ok(w) => w,
            Err(e) => return error(format!("cannot create a pipe: {e}")),
        };

        // test2json first: its own group, reading the binary's output until EOF.
        let mut cmd = self.process.base_command(&tools.test2json[0]);
        cmd.args(&tools.test2json[1..])
            .args(["-t", "-p", &target.pkg])
            .envs(&job.env)
            .stdin(tests_out)
            .stdout(events_in)
            .stderr(log_in);
        let spawned = cmd.spawn();
        drop(cmd);
        let mut converter = match spawned {
            Ok(child) => child,
            Err(e) => return error(format!("cannot start `{}`: {e}", tools.test2json.join(" "))),
        };
        let Some(converter_pid) = converter.id() else {
            return error("test2json vanished at start".into());
        };
        let mut converter_group = Some(GroupGuard::new(converter_pid as i32));

        let mut cmd = self.process.base_command(binary_path);
        cmd.current_dir(&dir).arg(tools.verbose_flag).arg("-test.paniconexit0");
        if let Some(case) = &target.case {
            cmd.arg("-test.run").arg(run_pattern(case));
        }
        cmd.envs(&job.env)
            .env("TESTGRID_TEST", &job.path)
            .env("TESTGRID_SESSION", &job.assignment.session_id)
            .env("TESTGRID_ATTEMPT", job.assignment.attempt.to_string())
            .stdout(tests_in2)
            .stderr(tests_in);
        let spawned = cmd.spawn();
        drop(cmd);
        let mut tests = match spawned {
            Ok(child) => child,
            Err(e) => return error(format!("cannot start the test binary in {}: {e}", dir.display())),
        };
        let Some(pid) = tests.id().map(|pid| pid as i32) else {
            return error("the test binary vanished at start".into());
        };
        let mut tests_group = Some(GroupGuard::new(pid));

        let (tx, mut rx) = mpsc::channel(1024);
        let events = tokio::spawn(read_events(OwnedFd::from(events_out), tx));
        let log = Arc::new(Mutex::new(Capture::new(CONVERTER_LOG_LIMIT)));
        let log_reader = tokio::spawn(read_output(OwnedFd::from(log_out), Arc::clone(&log)));

        let mut run = GoRun::new(&target.pkg, self.process.output_limit);
        let timeout = async {
            match job.timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(timeout);
        let mut ending: Option<Ending> = None;
        let mut events_done = false;
        let mut drain_until: Option<tokio::time::Instant> = None;
        let mut cut = false;
        while !(events_done && ending.is_some()) {
            tokio::select! {
                line = rx.recv(), if !events_done => match line {
                    Some(line) => run.line(line),
                    None => events_done = true,
                },
                status = tests.wait(), if ending.is_none() => {
                    ending = Some(match status {
                        Ok(status) => Ending::Exited(status),
                        Err(e) => Ending::Lost(format!("cannot wait for the test binary: {e}")),
                    });
                    // Whatever the tests left running goes, and with it the pipe's last writers.
                    tests_group.take();
                    drain_until = Some(tokio::time::Instant::now() + DRAIN);
                }
                () = &mut timeout, if ending.is_none() => {
                    kill_group(pid, self.process.kill_grace, async { let _ = tests.wait().await; }).await;
                    tests_group.take();
                    ending = Some(Ending::TimedOut(job.timeout.unwrap_or_default()));
                    drain_until = Some(tokio::time::Instant::now() + DRAIN);
                }
                () = cancel.cancelled(), if ending.is_none() => {
                    kill_group(pid, self.process.kill_grace, async { let _ = tests.wait().await; }).await;
                    tests_group.take();
                    ending = Some(Ending::Cancelled);
                    drain_until = Some(tokio::time::Instant::now() + DRAIN);
                }
                () = tokio::time::sleep_until(drain_until.unwrap_or_else(tokio::time::Instant::now)),
                    if drain_until.is_some() && !events_done =>
                {
                    // A process outside the group holds the pipe: stop test2json, keep what it said.
                    converter_group.take();
                    drain_until = None;
                    cut = true;
                }
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), converter.wait()).await;
        drop(converter_group);
        events.abort();
        let _ = tokio::time::timeout(Duration::from_secs(1), log_reader).await;
        let log =
            String::from_utf8_lossy(&std::mem::replace(&mut *lock(&log), Capture::new(0)).finish().0).into_owned();
        if !log.trim().is_empty() {
            run.package_output.push(format!("[test2json] {log}").as_bytes());
        }
        if cut {
            run.package_output.push(
                b"\n[testgrid: output cut short: a process outside the test's group kept its output pipe open]\n",
            );
        }
        // `ending` is set: the loop runs until it is.
        let ending = ending.unwrap_or_else(|| Ending::Lost("the test binary's end was not seen".into()));

        // Name the tests a crash or timeout kept from running, from the binary's own list.
        let stopped_early = match &ending {
            Ending::TimedOut(_) => true,
            Ending::Exited(status) => !run.running.is_empty() || !matches!(status.code(), Some(0 | 1)),
            Ending::Cancelled | Ending::Lost(_) => false,
        };
        let listed = if stopped_early && run.any_started {
            let pattern = target.case.as_deref().map(|c| run_pattern(c.split('/').next().unwrap_or(c)));
            tokio::select! {
                listed = self.list_tests(job, binary_path, &dir, pattern.as_deref().unwrap_or(".*")) => listed,
                () = cancel.cancelled() => None,
            }
        } else {
            None
        };
        run.finish(ending, listed, target.case.as_deref(), started)
    }

    /// The top-level tests, examples and fuzz targets the binary would run (`-test.list`).
    async fn list_tests(&self, job: &Job, binary: &str, dir: &Path, pattern: &str) -> Option<Vec<String>> {
        let mut cmd = self.process.base_command(binary);
        cmd.current_dir(dir).arg("-test.list").arg(pattern).envs(&job.env).stdout(Stdio::piped()).stderr(Stdio::null());
        let child = cmd.spawn().ok()?;
        let _group = GroupGuard::new(child.id()? as i32);
        let out = tokio::time::timeout(LIST_TIMEOUT, child.wait_with_output()).await.ok()?.ok()?;
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        Some(text.lines().map(str::trim).filter(|l| is_runnable_name(l)).map(str::to_string).collect())
    }
}

impl Executor for GoExecutor {
    async fn run(&self, _slot: u32, job: &Job, cancel: CancellationToken) -> pb::TestReport {
        self.run_unit(job, cancel).await
    }
}

/// Ask `go env` for the version and the tool directory.
async fn detect_toolchain(process: &ProcessExecutor, job: &Job) -> Result<Toolchain, String> {
    let mut cmd = process.base_command("go");
    cmd.args(["env", "GOVERSION", "GOTOOLDIR"]).envs(&job.env);
    let out = match tokio::time::timeout(Duration::from_secs(60), cmd.output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => {
            return Err(format!(
                "cannot run `go`: {e}; install Go on the worker (e.g. `apt-get install golang-go`) or put `go` on \
                 the worker's PATH"
            ));
        }
        Err(_) => return Err("`go env GOVERSION GOTOOLDIR` did not answer within a minute".into()),
    };
    if !out.status.success() {
        return Err(format!(
            "`go env GOVERSION GOTOOLDIR` failed ({}): {}",
            describe(out.status),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines().map(str::trim);
    let version = lines.next().unwrap_or_default();
    let tooldir = lines.next().unwrap_or_default();
    let test2json = format!("{tooldir}/test2json");
    let test2json = if !tooldir.is_empty() && Path::new(&test2json).is_file() {
        vec![test2json]
    } else {
        vec!["go".into(), "tool".into(), "test2json".into()]
    };
    let verbose_flag = if frames_test2json(version) { "-test.v=test2json" } else { "-test.v" };
    Ok(Toolchain { test2json, verbose_flag })
}

/// Whether test binaries of this Go version take `-test.v=test2json` (Go 1.20 and later).
fn frames_test2json(version: &str) -> bool {
    let Some(at) = version.find("go") else { return false };
    let mut parts = version[at + 2..].split(|c: char| !c.is_ascii_digit());
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    major > 1 || (major == 1 && minor >= 20)
}

fn parse_target(path: &str, root: &Path) -> Result<Target, String> {
    let (pkg, case) = match path.split_once("::") {
        Some((pkg, case)) => (pkg, Some(case)),
        None => (path, None),
    };
    let pkg = pkg.trim_end_matches('/');
    let pkg = if pkg.is_empty() { "." } else { pkg };
    let usage = "Go units are package folders relative to the workspace root (`pkg/a`, `.`), optionally with \
                 `::TestName` or `::TestName/subtest`";
    if case.is_some_and(|c| c.is_empty() || c.starts_with('/')) {
        return Err(format!("`{path}` names no test after `::`; {usage}"));
    }
    let rel = Path::new(pkg);
    if rel.is_absolute() || rel.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!("`{path}` is not inside the workspace root; {usage}"));
    }
    if !root.join(rel).is_dir() {
        return Err(format!(
            "`{pkg}` is not a folder under the workspace root {} on this worker; {usage}",
            root.display()
        ));
    }
    Ok(Target { pkg: pkg.to_string(), case: case.map(str::to_string) })
}

/// `-test.run` for one test or subtest: each level matched exactly.
fn run_pattern(case: &str) -> String {
    case.split('/').map(|level| format!("^{}$", quote_meta(level))).collect::<Vec<_>>().join("/")
}

/// Escape RE2 metacharacters (Go's `regexp.QuoteMeta`).
fn quote_meta(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if r"\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A name `-test.list` prints that the binary runs without extra flags (benchmarks need -bench).
fn is_runnable_name(line: &str) -> bool {
    ["Test", "Example", "Fuzz"].iter().any(|p| line.starts_with(p))
        && line.chars().all(|c| c.is_alphanumeric() || c == '_')
}

/// How a process ended, in words.
fn describe(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with exit code {code}");
    }
    let signal = status.signal().unwrap_or(0);
    let name = Signal::try_from(signal).map(|s| s.as_str().to_string()).unwrap_or_else(|_| format!("signal {signal}"));
    format!("was killed by {name}")
}

fn simple_report(outcome: pb::Outcome, message: String, output: Vec<u8>, started: Instant) -> pb::TestReport {
    pb::TestReport {
        outcome: outcome as i32,
        duration_ms: started.elapsed().as_millis() as u64,
        message,
        output,
        ..Default::default()
    }
}

/// One event from test2json (fields it adds in newer Go versions are ignored).
#[derive(Deserialize, Debug)]
#[serde(rename_all = "PascalCase")]
struct Event {
    action: String,
    #[serde(default)]
    test: Option<String>,
    #[serde(default)]
    elapsed: Option<f64>,
    #[serde(default)]
    output: Option<String>,
}

/// A line test2json printed: an event, or text that is not one (kept as package output).
#[derive(Debug)]
enum Line {
    Event(Event),
    Text(String),
}

fn parse_line(line: &[u8]) -> Line {
    match serde_json::from_slice::<Event>(line) {
        Ok(event) => Line::Event(event),
        Err(_) => Line::Text(format!("{}\n", String::from_utf8_lossy(line))),
    }
}

/// Read test2json's stdout into lines until EOF.
async fn read_events(fd: OwnedFd, tx: mpsc::Sender<Line>) {
    let Ok(mut pipe) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) else {
        let _ = tx.send(Line::Text("[testgrid: cannot read test2json's output pipe]\n".into())).await;
        return;
    };
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut overlong = false;
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        let mut start = 0;
        while let Some(end) = pending[start..].iter().position(|&b| b == b'\n') {
            let line = &pending[start..start + end];
            if !overlong && !line.is_empty() && tx.send(parse_line(line)).await.is_err() {
                return;
            }
            overlong = false;
            start += end + 1;
        }
        pending.drain(..start);
        if pending.len() > MAX_LINE {
            pending.clear();
            if !overlong {
                overlong = true;
                let _ = tx.send(Line::Text("[testgrid: dropped an over-long line of test2json output]\n".into())).await;
            }
        }
    }
    if !pending.is_empty() && !overlong {
        let _ = tx.send(parse_line(&pending)).await;
    }
}

/// How the test binary's run ended.
#[derive(Debug)]
enum Ending {
    Exited(ExitStatus),
    TimedOut(Duration),
    Cancelled,
    Lost(String),
}

/// A test that started and has not ended.
struct Running {
    order: u64,
    since: Instant,
    output: Capture,
}

/// One package run's events as they arrive, turned into cases.
struct GoRun {
    pkg: String,
    unit: Unit,
    running: HashMap<String, Running>,
    next: u64,
    /// Output outside any test (TestMain, init, the final PASS/FAIL).
    package_output: Capture,
    /// Tests that failed, in order (a parent's message names its failed subtest).
    failed: Vec<String>,
    any_started: bool,
    output_limit: usize,
}

impl GoRun {
    fn new(pkg: &str, output_limit: usize) -> Self {
        GoRun {
            pkg: pkg.to_string(),
            // The kind only picks a class name, which `finish` sets to the package folder.
            unit: Unit::new(Kind::Vitest, pkg),
            running: HashMap::new(),
            next: 0,
            package_output: Capture::new(output_limit),
            failed: Vec::new(),
            any_started: false,
            output_limit,
        }
    }

    fn line(&mut self, line: Line) {
        match line {
            Line::Event(event) => self.event(event),
            Line::Text(text) => self.package_output.push(text.as_bytes()),
        }
    }

    fn event(&mut self, event: Event) {
        let output = event.output.unwrap_or_default();
        match (event.action.as_str(), event.test) {
            ("run", Some(test)) => {
                self.any_started = true;
                let order = self.next;
                self.next += 1;
                self.running.entry(test).or_insert_with(|| Running {
                    order,
                    since: Instant::now(),
                    output: Capture::new(CASE_OUTPUT_LIMIT),
                });
            }
            ("output", Some(test)) => match self.running.get_mut(&test) {
                Some(running) if !is_framing(&output) => running.output.push(output.as_bytes()),
                Some(_) => {}
                None => self.package_output.push(output.as_bytes()),
            },
            ("output", None) => self.package_output.push(output.as_bytes()),
            (action @ ("pass" | "fail" | "skip"), Some(test)) => {
                let running = self.running.remove(&test);
                let duration_ms = match (event.elapsed, &running) {
                    (Some(seconds), _) => (seconds * 1000.0).round() as u64,
                    (None, Some(r)) => r.since.elapsed().as_millis() as u64,
                    (None, None) => 0,
                };
                let output = running.map(|r| String::from_utf8_lossy(&r.output.finish().0).into_owned());
                let output = output.unwrap_or_default();
                let (outcome, message) = match action {
                    "pass" => ("passed", String::new()),
                    "skip" => ("skipped", summary(&output)),
                    _ => {
                        let mut message = summary(&output);
                        if message.is_empty()
                            && let Some(sub) = self.failed.iter().find(|f| f.starts_with(&format!("{test}/")))
                        {
                            message = format!("subtest {sub} failed");
                        }
                        self.failed.push(test.clone());
                        ("failed", message)
                    }
                };
                self.unit.add(format!("{}::{test}", self.pkg), outcome, duration_ms, message, output, false);
            }
            _ => {}
        }
    }

    /// The unit's report once the binary and test2json are done.
    fn finish(
        mut self,
        ending: Ending,
        listed: Option<Vec<String>>,
        case: Option<&str>,
        started: Instant,
    ) -> pb::TestReport {
        let mut left: Vec<(String, Running)> = self.running.drain().collect();
        left.sort_by_key(|(_, r)| r.order);
        let stopped_mid_test = !left.is_empty();
        let limit = humantime::format_duration(match &ending {
            Ending::TimedOut(t) => *t,
            _ => Duration::ZERO,
        })
        .to_string();
        let how = match &ending {
            Ending::Exited(status) => format!("the test binary {}", describe(*status)),
            Ending::Lost(why) => why.clone(),
            Ending::TimedOut(_) | Ending::Cancelled => String::new(),
        };
        for (test, running) in left {
            let duration_ms = running.since.elapsed().as_millis() as u64;
            let output = String::from_utf8_lossy(&running.output.finish().0).into_owned();
            let (outcome, message) = match &ending {
                Ending::Cancelled => ("cancelled", "cancelled".to_string()),
                Ending::TimedOut(_) => ("timed_out", format!("killed after the {limit} timeout")),
                Ending::Exited(_) | Ending::Lost(_) => {
                    let said = summary(&output);
                    let message = if said.starts_with("panic: ") {
                        format!("{said} ({how})")
                    } else {
                        format!("{how} before this test finished")
                    };
                    ("failed", message)
                }
            };
            self.unit.add(format!("{}::{test}", self.pkg), outcome, duration_ms, message, output, false);
        }
        if let Some(listed) = listed {
            self.unit.collected = listed.into_iter().map(|t| format!("{}::{t}", self.pkg)).collect();
            let why = match &ending {
                Ending::TimedOut(_) => format!("not run: the package was killed after the {limit} timeout"),
                _ => format!("not run: {how} before it"),
            };
            self.unit.not_run("error", &why);
        }
        let cases = std::mem::take(&mut self.unit.cases);
        let no_cases = cases.is_empty();
        let mut report = unit_report(cases, None, started, self.output_limit);
        for c in &mut report.cases {
            c.classname = self.pkg.clone();
        }
        match &ending {
            Ending::Cancelled => {
                report.outcome = pb::Outcome::Cancelled as i32;
                report.message = "cancelled".into();
            }
            Ending::TimedOut(_) => {
                report.outcome = pb::Outcome::TimedOut as i32;
                report.message = format!("killed after the {limit} timeout");
            }
            Ending::Lost(why) => {
                report.outcome = pb::Outcome::Error as i32;
                report.message = why.clone();
            }
            Ending::Exited(status) => {
                report.exit_code = status.code();
                report.signal = status.signal();
                let passed = report.outcome == pb::Outcome::Passed as i32;
                if !status.success() && passed {
                    report.outcome = pb::Outcome::Failed as i32;
                    report.message =
                        format!("{how} and no test failed (TestMain, an init function or os.Exit? see the output)");
                } else if !passed && (stopped_mid_test || !matches!(status.code(), Some(0 | 1))) {
                    report.message = format!("{}; {how}", report.message);
                } else if let (true, true, Some(case)) = (passed, no_cases, case) {
                    report.outcome = pb::Outcome::Error as i32;
                    report.message = format!("no test in {} matches `{case}` (go test: no tests to run)", self.pkg);
                }
            }
        }
        let package_output = String::from_utf8_lossy(&self.package_output.finish().0).into_owned();
        let trivial = matches!(package_output.trim(), "" | "PASS" | "FAIL");
        if report.outcome != pb::Outcome::Passed as i32 && !trivial {
            let mut capture = Capture::new(self.output_limit);
            capture.push(&report.output);
            capture.push(format!("_____ {} (package output) _____\n", self.pkg).as_bytes());
            capture.push(package_output.as_bytes());
            let (output, dropped) = capture.finish();
            report.output = output;
            report.output_dropped_bytes += dropped;
        }
        report
    }
}

/// test2json's framing lines, which say nothing a case's outcome does not.
fn is_framing(line: &str) -> bool {
    ["=== RUN", "=== PAUSE", "=== CONT", "=== NAME"].iter().any(|p| line.starts_with(p))
}

/// A short message from a case's output: its panic, else its last `file.go:N:` line before the
/// `--- FAIL`/`--- SKIP` line (usually the failing check or the skip reason), else its first line.
fn summary(output: &str) -> String {
    let lines: Vec<&str> = output.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if let Some(panic) = lines.iter().find(|l| l.starts_with("panic: ")) {
        return clip(panic.trim_end_matches(" [recovered]"));
    }
    let end = lines.iter().position(|l| l.starts_with("--- ")).unwrap_or(lines.len());
    let before = &lines[..end];
    before.iter().rev().find(|l| is_located(l)).or(before.first()).map(|l| clip(l)).unwrap_or_default()
}

/// `name.go:12: text`, as `t.Error` and `t.Log` print.
fn is_located(line: &str) -> bool {
    line.split_once(": ").is_some_and(|(at, _)| at.rsplit_once(".go:").is_some_and(|(_, n)| n.parse::<u32>().is_ok()))
}

fn clip(line: &str) -> String {
    const MAX: usize = 300;
    if line.len() <= MAX {
        return line.to_string();
    }
    let mut end = MAX;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &line[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real test2json output (Go 1.19.8, `BIN -test.v -test.paniconexit0 2>&1 | go tool test2json
    /// -t -p PKG`) of the packages in `cli/tests/go.rs`; see `testdata/go/README.md`.
    const CALC: &str = include_str!("../testdata/go/calc.jsonl");
    const CRASH: &str = include_str!("../testdata/go/crash.jsonl");
    const SETUP: &str = include_str!("../testdata/go/setup.jsonl");
    const HANG: &str = include_str!("../testdata/go/hang.jsonl");

    fn feed(pkg: &str, recording: &str) -> GoRun {
        let mut run = GoRun::new(pkg, 1024 * 1024);
        for line in recording.lines() {
            run.line(parse_line(line.as_bytes()));
        }
        run
    }

    fn exited(code: i32) -> Ending {
        Ending::Exited(ExitStatus::from_raw(code << 8))
    }

    fn outcomes(report: &pb::TestReport) -> Vec<(String, pb::Outcome)> {
        report
            .cases
            .iter()
            .map(|c| (c.name.clone(), pb::Outcome::try_from(c.outcome).unwrap_or(pb::Outcome::Unspecified)))
            .collect()
    }

    fn case<'a>(report: &'a pb::TestReport, name: &str) -> &'a pb::CaseResult {
        report.cases.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no case {name}: {report:?}"))
    }

    #[test]
    fn a_package_run_becomes_cases_with_subtests_skips_and_failures() {
        let report = feed("calc", CALC).finish(exited(1), None, None, Instant::now());
        use pb::Outcome::{Failed, Passed, Skipped};
        let expected: Vec<(String, pb::Outcome)> = [
            ("TestAdd", Passed),
            ("TestAddWrong", Failed),
            ("TestSkipped", Skipped),
            ("TestTable/one", Passed),
            ("TestTable/two", Failed),
            ("TestTable/with_space", Passed),
            ("TestTable/outer/inner", Passed),
            ("TestTable/outer", Passed),
            ("TestTable", Failed),
            ("TestParallelB", Passed),
            ("TestParallelA", Passed),
            ("ExampleAdd", Passed),
        ]
        .into_iter()
        .map(|(n, o)| (format!("calc::{n}"), o))
        .collect();
        assert_eq!(outcomes(&report), expected);
        assert_eq!(report.outcome, Failed as i32);
        assert_eq!(report.message, "3 of 12 cases did not pass");
        assert_eq!(report.exit_code, Some(1));
        assert!(report.cases.iter().all(|c| c.classname == "calc"));

        let wrong = case(&report, "calc::TestAddWrong");
        assert_eq!(wrong.message, "calc_test.go:19: Add(2, 2) = 4, want 5");
        let text = String::from_utf8_lossy(&wrong.output);
        assert!(text.contains("about to compare") && text.contains("--- FAIL: TestAddWrong"), "{text}");
        assert!(!text.contains("=== RUN"), "framing lines are dropped: {text}");
        assert_eq!(case(&report, "calc::TestSkipped").message, "calc_test.go:23: not on this machine");
        assert_eq!(case(&report, "calc::TestTable").message, "subtest TestTable/two failed");
        assert!(case(&report, "calc::TestAdd").output.is_empty(), "a passing case's output is dropped");
        assert_eq!(case(&report, "calc::TestParallelA").duration_ms, 20, "from test2json's Elapsed");
        let unit_output = String::from_utf8_lossy(&report.output);
        assert!(unit_output.contains("_____ calc::TestTable/two _____"), "{unit_output}");
        assert!(!unit_output.contains("package output"), "a plain FAIL line is not worth showing: {unit_output}");
    }

    #[test]
    fn a_panic_fails_the_running_test_and_names_the_tests_never_reached() {
        let listed = Some(vec!["TestBeforePanic".into(), "TestPanics".into(), "TestNeverReached".into()]);
        let report = feed("crash", CRASH).finish(exited(2), listed, None, Instant::now());
        use pb::Outcome::{Error, Failed, Passed};
        assert_eq!(
            outcomes(&report),
            vec![
                ("crash::TestBeforePanic".to_string(), Passed),
                ("crash::TestPanics".to_string(), Failed),
                ("crash::TestNeverReached".to_string(), Error),
            ]
        );
        let panicked = case(&report, "crash::TestPanics");
        assert_eq!(panicked.message, "panic: assignment to entry in nil map (the test binary exited with exit code 2)");
        assert!(String::from_utf8_lossy(&panicked.output).contains("crash_test.go:9"), "the stack is kept");
        let never = case(&report, "crash::TestNeverReached");
        assert_eq!(never.message, "not run: the test binary exited with exit code 2 before it");
        assert_eq!(report.outcome, Failed as i32);
        assert_eq!(report.message, "2 of 3 cases did not pass; the test binary exited with exit code 2");
    }

    #[test]
    fn test_main_exiting_fails_the_package_with_its_output() {
        let report = feed("setup", SETUP).finish(exited(3), None, None, Instant::now());
        assert!(report.cases.is_empty());
        assert_eq!(report.outcome, pb::Outcome::Failed as i32);
        assert!(report.message.contains("exit code 3 and no test failed"), "{}", report.message);
        let text = String::from_utf8_lossy(&report.output);
        assert!(text.contains("setup failed: no database"), "{text}");
    }

    #[test]
    fn a_timeout_times_out_the_running_test_and_names_the_rest() {
        let listed = Some(vec!["TestQuick".into(), "TestHangs".into(), "TestAfterHang".into()]);
        let report = feed("hang", HANG).finish(Ending::TimedOut(Duration::from_secs(5)), listed, None, Instant::now());
        use pb::Outcome::{Error, Passed, TimedOut};
        assert_eq!(
            outcomes(&report),
            vec![
                ("hang::TestQuick".to_string(), Passed),
                ("hang::TestHangs".to_string(), TimedOut),
                ("hang::TestAfterHang".to_string(), Error),
            ]
        );
        assert_eq!(report.outcome, TimedOut as i32);
        assert_eq!(report.message, "killed after the 5s timeout");
        let hung = case(&report, "hang::TestHangs");
        assert!(String::from_utf8_lossy(&hung.output).contains("going to sleep"), "its output so far is kept");
        assert_eq!(
            case(&report, "hang::TestAfterHang").message,
            "not run: the package was killed after the 5s timeout"
        );
    }

    #[test]
    fn a_cancel_cancels_the_running_tests() {
        let report = feed("hang", HANG).finish(Ending::Cancelled, None, None, Instant::now());
        assert_eq!(report.outcome, pb::Outcome::Cancelled as i32);
        assert_eq!(case(&report, "hang::TestHangs").message, "cancelled");
        assert_eq!(case(&report, "hang::TestQuick").outcome, pb::Outcome::Passed as i32);
    }

    #[test]
    fn a_single_case_that_matches_nothing_is_an_error() {
        let recording = r#"{"Action":"output","Package":"calc","Output":"testing: warning: no tests to run\n"}
{"Action":"output","Package":"calc","Output":"PASS\n"}
{"Action":"pass","Package":"calc","Elapsed":0.002}"#;
        let report = feed("calc", recording).finish(exited(0), None, Some("TestNope"), Instant::now());
        assert_eq!(report.outcome, pb::Outcome::Error as i32);
        assert_eq!(report.message, "no test in calc matches `TestNope` (go test: no tests to run)");
        let whole = feed("calc", recording).finish(exited(0), None, None, Instant::now());
        assert_eq!(whole.outcome, pb::Outcome::Passed as i32, "a package without tests passes, as in go test");
    }

    #[test]
    fn output_is_bounded_and_stray_lines_are_kept_as_package_output() {
        let mut run = GoRun::new("p", 4096);
        run.line(parse_line(br#"{"Action":"run","Test":"TestBig"}"#));
        let chunk = serde_json::json!({"Action": "output", "Test": "TestBig", "Output": "x".repeat(10_000) + "\n"});
        for _ in 0..100 {
            run.line(parse_line(chunk.to_string().as_bytes()));
        }
        run.line(parse_line(b"not json at all"));
        run.line(parse_line(br#"{"Action":"fail","Test":"TestBig","Elapsed":1.5}"#));
        let report = run.finish(exited(1), None, None, Instant::now());
        let big = case(&report, "p::TestBig");
        assert!(big.output.len() <= CASE_OUTPUT_LIMIT + 100, "capped: {}", big.output.len());
        assert_eq!(big.duration_ms, 1500);
        assert!(report.output.len() <= 4096 + 100, "the unit's output is capped too");
        assert!(String::from_utf8_lossy(&report.output).contains("not json at all"));
    }

    #[test]
    fn units_name_package_folders_and_cases() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("pkg/a")).expect("mkdir");
        let root = dir.path();
        let t = |pkg: &str, case: Option<&str>| Target { pkg: pkg.into(), case: case.map(str::to_string) };
        assert_eq!(parse_target("pkg/a", root), Ok(t("pkg/a", None)));
        assert_eq!(parse_target(".", root), Ok(t(".", None)));
        assert_eq!(parse_target("pkg/a::TestX/sub", root), Ok(t("pkg/a", Some("TestX/sub"))));
        assert_eq!(parse_target(".::TestRoot", root), Ok(t(".", Some("TestRoot"))));
        for bad in ["../x", "/etc", "pkg/none", "pkg/a::", "pkg/a::/x"] {
            let err = parse_target(bad, root).expect_err(bad);
            assert!(err.contains("package folders relative to the workspace root"), "{bad}: {err}");
        }
    }

    #[test]
    fn run_patterns_match_each_level_exactly() {
        assert_eq!(run_pattern("TestX"), "^TestX$");
        assert_eq!(run_pattern("TestX/a.b(1)"), r"^TestX$/^a\.b\(1\)$");
        assert_eq!(run_pattern("TestX/with_space/inner"), "^TestX$/^with_space$/^inner$");
    }

    #[test]
    fn test2json_framing_flag_from_go_1_20() {
        assert!(!frames_test2json("go1.19.8"));
        assert!(frames_test2json("go1.20"));
        assert!(frames_test2json("go1.22rc1"));
        assert!(frames_test2json("devel go1.24-abcdef Tue"));
        assert!(!frames_test2json(""));
    }

    #[test]
    fn listed_names_keep_tests_examples_and_fuzz_targets() {
        let names: Vec<&str> = ["TestA", "BenchmarkB", "ExampleC", "FuzzD", "setup failed: x", "ok  \tpkg"]
            .into_iter()
            .filter(|l| is_runnable_name(l))
            .collect();
        assert_eq!(names, vec!["TestA", "ExampleC", "FuzzD"]);
    }

    fn executor(root: &Path) -> GoExecutor {
        GoExecutor::new(Arc::new(ProcessExecutor {
            root: root.to_path_buf(),
            output_limit: 1024 * 1024,
            kill_grace: Duration::from_secs(1),
            die_with_worker: false,
        }))
    }

    #[test]
    fn the_least_recently_used_sessions_binaries_go_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let go = executor(dir.path());
        let mut held = None;
        let dirs: Vec<PathBuf> = (0..KEEP_SESSIONS)
            .map(|i| {
                let builds = go.session_builds(&format!("s{i}")).expect("builds");
                if i == 2 {
                    held = Some(Arc::clone(&builds));
                }
                builds.dir.path().to_path_buf()
            })
            .collect();
        assert!(dirs.iter().all(|d| d.is_dir()));
        // s0 is used again, so s1 is now the least recently used.
        go.session_builds("s0").expect("builds");
        go.session_builds("new-1").expect("builds");
        assert!(!dirs[1].exists(), "s1's binaries are gone");
        assert!(dirs[0].is_dir());
        go.session_builds("new-2").expect("builds");
        go.session_builds("new-3").expect("builds");
        let kept: Vec<String> = lock(&go.sessions).iter().map(|s| s.session.clone()).collect();
        assert_eq!(kept.len(), KEEP_SESSIONS);
        assert!(!kept.contains(&"s2".to_string()), "{kept:?}");
        assert!(dirs[2].is_dir(), "a job still using s2's binaries keeps them");
        drop(held);
        assert!(!dirs[2].exists());
    }

    /// `go` on PATH, or a message saying why a test is skipped.
    fn have_go() -> bool {
        let ok = std::process::Command::new("go").arg("version").output().is_ok_and(|o| o.status.success());
        if !ok {
            assert!(std::env::var_os("CI").is_none(), "CI is set but `go` is not on PATH: .ci/run installs golang-go");
            eprintln!("skipping: `go` is not on PATH (install golang-go to run the Go executor's tests)");
        }
        ok
    }

    fn job(session: &str, path: &str, timeout: Option<Duration>) -> Job {
        Job {
            assignment: pb::AssignmentRef { session_id: session.into(), ..Default::default() },
            path: path.into(),
            command: String::new(),
            env: Default::default(),
            timeout,
            runner: testgrid_proto::frameworks::Runner {
                framework: testgrid_proto::frameworks::Framework::Go,
                isolation: Default::default(),
                options: testgrid_proto::frameworks::Options::Go,
            },
            dir: None,
        }
    }

    fn write_module(root: &Path, marker: &Path) {
        std::fs::write(root.join("go.mod"), "module example.com/m\n\ngo 1.18\n").expect("write go.mod");
        std::fs::create_dir_all(root.join("p")).expect("mkdir");
        let test = format!(
            r#"package p

import (
	"os"
	"testing"
	"time"
)

func TestA(t *testing.T) {{}}

func TestSub(t *testing.T) {{
	t.Run("one", func(t *testing.T) {{}})
	t.Run("two", func(t *testing.T) {{ t.Error("two is wrong") }})
}}

func TestWait(t *testing.T) {{
	if os.Getenv("WAIT") == "" {{
		t.Skip("only when asked")
	}}
	os.WriteFile({marker:?}, []byte("started"), 0o644)
	time.Sleep(10 * time.Minute)
}}
"#
        );
        std::fs::write(root.join("p/p_test.go"), test).expect("write test");
    }

    #[tokio::test]
    async fn slots_share_one_compile_and_cases_can_be_picked() {
        if !have_go() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().canonicalize().expect("root");
        write_module(&root, &root.join("unused"));
        let go = executor(&root);
        let jobs = [job("s", "p", None), job("s", "p::TestA", None), job("s", "p::TestSub/two", None)];
        let (whole, one, sub) = tokio::join!(
            go.run(0, &jobs[0], CancellationToken::new()),
            go.run(1, &jobs[1], CancellationToken::new()),
            go.run(2, &jobs[2], CancellationToken::new()),
        );
        assert_eq!(go.compiles.load(Ordering::Relaxed), 1, "one compile for the three slots");
        assert_eq!(whole.outcome, pb::Outcome::Failed as i32, "{whole:?}");
        assert_eq!(whole.cases.len(), 5, "{whole:?}");
        let names = |r: &pb::TestReport| r.cases.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&one), vec!["p::TestA"]);
        assert_eq!(one.outcome, pb::Outcome::Passed as i32);
        assert_eq!(names(&sub), vec!["p::TestSub/two", "p::TestSub"]);
        assert_eq!(sub.outcome, pb::Outcome::Failed as i32);
        let nope = go.run(0, &job("s", "p::TestNope", None), CancellationToken::new()).await;
        assert_eq!(nope.outcome, pb::Outcome::Error as i32, "{nope:?}");
        assert_eq!(go.compiles.load(Ordering::Relaxed), 1, "the session's binary is reused");
    }

    #[tokio::test]
    async fn a_timeout_and_a_cancel_stop_the_binary() {
        if !have_go() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().canonicalize().expect("root");
        let marker = root.join("started");
        write_module(&root, &marker);
        let go = executor(&root);
        let mut waiting = job("s", "p", Some(Duration::from_secs(3)));
        waiting.env.insert("WAIT".into(), "1".into());
        let report = go.run(0, &waiting, CancellationToken::new()).await;
        assert_eq!(report.outcome, pb::Outcome::TimedOut as i32, "{report:?}");
        let outcome = |name: &str| case(&report, name).outcome;
        assert_eq!(outcome("p::TestWait"), pb::Outcome::TimedOut as i32);
        assert_eq!(outcome("p::TestA"), pb::Outcome::Passed as i32);

        std::fs::remove_file(&marker).expect("remove marker");
        let cancel = CancellationToken::new();
        let canceller = {
            let cancel = cancel.clone();
            let marker = marker.clone();
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(60);
                while !marker.exists() {
                    assert!(Instant::now() < deadline, "TestWait never started");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                cancel.cancel();
            })
        };
        waiting.path = "p::TestWait".into();
        waiting.timeout = None;
        let report = go.run(0, &waiting, cancel).await;
        canceller.await.expect("canceller");
        assert_eq!(report.outcome, pb::Outcome::Cancelled as i32, "{report:?}");
        assert_eq!(case(&report, "p::TestWait").message, "cancelled");
    }
}
