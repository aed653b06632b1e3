//! Warm runners: one long-lived framework process (pytest, vitest, jest) per slot and session,
//! fed test files on demand over a private Unix socket (never the tests' stdout), reporting
//! per-case results.
//!
//! Starting Python or Node and loading the framework and the project under test costs far more
//! than most test files take to run; a warm runner pays it once per slot. The runners are
//! shipped inside this binary (`runners/testgrid_pytest.py`, `testgrid_vitest.mjs`,
//! `testgrid_jest.cjs`); they speak one line protocol (docs/runners.md).
//!
//! A runner that dies mid-file fails the test it was running ("runner crashed") and is replaced
//! for the next file; after [`MAX_CRASHES`] crashes in a session every file gets a runner of its own
//! (no runner is reused). A timeout or cancel kills the runner's process group.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use testgrid_proto as pb;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::UnixListener;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::executor::{Executor, GroupGuard, Job, ProcessExecutor, kill_group, lock};
use crate::output::Capture;
use testgrid_proto::frameworks::{Framework, Isolation, Options};

/// Which framework a warm runner drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Pytest,
    Vitest,
    Jest,
}

impl Kind {
    /// The warm runner for a session's framework, if there is one.
    pub fn of(framework: Framework) -> Option<Kind> {
        match framework {
            Framework::Pytest => Some(Kind::Pytest),
            Framework::Vitest => Some(Kind::Vitest),
            Framework::Jest => Some(Kind::Jest),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Pytest => "pytest",
            Kind::Vitest => "vitest",
            Kind::Jest => "jest",
        }
    }

    /// The runner's file name and text, written next to its socket at start.
    fn runner(self) -> (&'static str, &'static str) {
        match self {
            Kind::Pytest => ("testgrid_pytest.py", include_str!("runners/testgrid_pytest.py")),
            Kind::Vitest => ("testgrid_vitest.mjs", include_str!("runners/testgrid_vitest.mjs")),
            Kind::Jest => ("testgrid_jest.cjs", include_str!("runners/testgrid_jest.cjs")),
        }
    }

    /// Files the runner loads from its own folder.
    fn support_files(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Kind::Pytest => &[],
            Kind::Vitest | Kind::Jest => {
                &[("testgrid_runner_common.cjs", include_str!("runners/testgrid_runner_common.cjs"))]
            }
        }
    }

    /// What a case is filed under in JUnit: the dotted module for Python (as pytest's own
    /// JUnit), the file for JavaScript (as vitest's and jest-junit's).
    fn classname(self, file: &str) -> String {
        match self {
            Kind::Pytest => file.trim_end_matches(".py").replace('/', "."),
            Kind::Vitest | Kind::Jest => file.to_string(),
        }
    }

    /// Why collected cases got no result when the file ended normally.
    fn stopped_early(self) -> &'static str {
        match self {
            Kind::Pytest => "not run: pytest stopped early (-x, --maxfail or pytest.exit)",
            Kind::Vitest | Kind::Jest => "not run: the file ended before it",
        }
    }
}

/// Crashes of a session's runners on this worker before each of its files gets a fresh runner.
pub const MAX_CRASHES: u32 = 5;

/// How long a runner may take to start, load its framework and the project's config, and connect.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// What the runner's own stdout and stderr keep (for "runner crashed" diagnostics).
const RUNNER_LOG_LIMIT: usize = 64 * 1024;

#[derive(Deserialize, Debug)]
#[serde(tag = "op", rename_all = "snake_case")]
enum FromRunner {
    Ready,
    Collected { tests: Vec<String> },
    Started { test: String },
    Case { test: String, outcome: String, duration_ms: u64, message: String, output: String, xfail: bool },
    Done { error: Option<String> },
}

struct Runner {
    session: String,
    kind: Kind,
    child: tokio::process::Child,
    /// Its process group, killed with whatever the tests started when the runner is dropped.
    group: GroupGuard,
    lines: Lines<BufReader<OwnedReadHalf>>,
    writer: OwnedWriteHalf,
    log: Arc<Mutex<Capture>>,
    next_unit: u64,
    /// When it finished its last file (for reaping idle runners).
    idle_since: Instant,
    _dir: tempfile::TempDir,
}

/// Warm runners, one per slot.
pub struct WarmExecutor {
    pub process: Arc<ProcessExecutor>,
    /// The Python to run (`python3` on PATH unless the session sets `TESTGRID_PYTHON`).
    pub python: String,
    /// The Node to run (`node` on PATH unless the session sets `TESTGRID_NODE`).
    pub node: String,
    pub recycle: crate::Recycle,
    runners: Arc<Mutex<HashMap<u32, Runner>>>,
    crashes: Mutex<HashMap<String, u32>>,
    reaper: std::sync::Once,
}

/// A runner idle this long is stopped: its session has most likely ended, and it holds an
/// interpreter's memory.
const IDLE_LIMIT: Duration = Duration::from_secs(60);

impl WarmExecutor {
    pub fn new(process: Arc<ProcessExecutor>, python: String, node: String, recycle: crate::Recycle) -> Self {
        WarmExecutor {
            process,
            python,
            node,
            recycle,
            runners: Arc::new(Mutex::new(HashMap::new())),
            crashes: Mutex::new(HashMap::new()),
            reaper: std::sync::Once::new(),
        }
    }

    /// Start (once) the task that stops idle runners. Needs a runtime, hence not in `new`.
    fn start_reaper(&self) {
        self.reaper.call_once(|| {
            let runners = Arc::downgrade(&self.runners);
            let grace = self.process.kill_grace;
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(IDLE_LIMIT / 4).await;
                    let Some(runners) = runners.upgrade() else { return };
                    let idle: Vec<Runner> = {
                        let mut map = lock(&runners);
                        let slots: Vec<u32> =
                            map.iter().filter(|(_, r)| r.idle_since.elapsed() >= IDLE_LIMIT).map(|(s, _)| *s).collect();
                        slots.into_iter().filter_map(|s| map.remove(&s)).collect()
                    };
                    for runner in idle {
                        retire(runner, grace).await;
                    }
                }
            });
        });
    }

    fn crashes(&self, session: &str) -> u32 {
        lock(&self.crashes).get(session).copied().unwrap_or(0)
    }

    async fn start(&self, kind: Kind, job: &Job) -> Result<Runner, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("cannot create a runner directory: {e}"))?;
        let (file, text) = kind.runner();
        for (name, text) in std::iter::once(&(file, text)).chain(kind.support_files()) {
            std::fs::write(dir.path().join(name), text)
                .map_err(|e| format!("cannot write the {} runner: {e}", kind.name()))?;
        }
        let socket = dir.path().join("runner.sock");
        let listener = UnixListener::bind(&socket).map_err(|e| format!("cannot open the runner socket: {e}"))?;
        let (reader, writer) = std::io::pipe().map_err(|e| format!("cannot create a pipe: {e}"))?;
        let writer2 = writer.try_clone().map_err(|e| format!("cannot create a pipe: {e}"))?;
        let (program, shown) = match kind {
            Kind::Pytest => {
                let python = match &job.runner.options {
                    Options::Pytest { python: Some(python), .. } => python.clone(),
                    _ => self.python.clone(),
                };
                (python.clone(), format!("{python} -m pytest"))
            }
            Kind::Vitest | Kind::Jest => {
                let node = self.node.clone();
                (node.clone(), format!("{node} {file}"))
            }
        };
        let mut cmd = self.process.base_command(&program);
        match kind {
            Kind::Pytest => {
                let mut pythonpath = dir.path().display().to_string();
                if let Some(existing) = job.env.get("PYTHONPATH").cloned().or_else(|| std::env::var("PYTHONPATH").ok())
                {
                    pythonpath = format!("{pythonpath}:{existing}");
                }
                cmd.args(["-m", "pytest", "-p", "testgrid_pytest", "-q"])
                    .envs(&job.env)
                    .env("PYTHONPATH", pythonpath)
                    .current_dir(self.process.root.join(project_dir(job)));
            }
            Kind::Vitest | Kind::Jest => {
                cmd.arg(dir.path().join(file)).envs(&job.env).current_dir(self.process.root.join(project_dir(job)));
            }
        }
        cmd.env("TESTGRID_RUNNER_SOCKET", &socket)
            .env("TESTGRID_SESSION", &job.assignment.session_id)
            .stdout(writer2)
            .stderr(writer);
        let spawned = cmd.spawn();
        drop(cmd);
        let mut child = spawned.map_err(|e| {
            let fix = match kind {
                Kind::Pytest => "pass `testgrid run --python PATH` or set TESTGRID_PYTHON to a Python with pytest",
                Kind::Vitest | Kind::Jest => "install Node.js on the worker or set TESTGRID_NODE",
            };
            format!("cannot start `{shown}`: {e}; {fix}")
        })?;
        let group = GroupGuard::new(child.id().map(|id| id as i32).ok_or("the runner vanished at start")?);
        let log = Arc::new(Mutex::new(Capture::new(RUNNER_LOG_LIMIT)));
        let mut log_reader =
            tokio::spawn(crate::executor::read_output(std::os::fd::OwnedFd::from(reader), Arc::clone(&log)));
        let connected = tokio::select! {
            accepted = tokio::time::timeout(START_TIMEOUT, listener.accept()) => accepted.ok().and_then(Result::ok),
            status = child.wait() => {
                let _ = status;
                None
            }
        };
        // Why a runner did not start: its last words, and the usual fix.
        let failure = |tail: String| {
            let hint = match kind {
                Kind::Pytest if tail.contains("No module named pytest") || tail.contains("No such file") => {
                    format!(" (is pytest installed for `{program}`? set TESTGRID_PYTHON to pick another Python)")
                }
                Kind::Vitest | Kind::Jest
                    if tail.contains("Cannot find")
                        || tail.contains("MODULE_NOT_FOUND")
                        || tail.contains("cannot find") =>
                {
                    format!(
                        " (is {} installed in the project? run `npm ci` there; set TESTGRID_NODE to pick another Node)",
                        kind.name()
                    )
                }
                _ => String::new(),
            };
            format!("the {} runner did not start{hint}:\n{tail}", kind.name())
        };
        let Some((stream, _)) = connected else {
            drop(group);
            // Let the reader take in what the runner said before it died.
            let _ = tokio::time::timeout(Duration::from_secs(1), &mut log_reader).await;
            return Err(failure(take_log(&log)));
        };
        let (read, writer) = stream.into_split();
        let mut runner = Runner {
            session: job.assignment.session_id.clone(),
            kind,
            child,
            group,
            lines: BufReader::new(read).lines(),
            writer,
            log,
            next_unit: 0,
            idle_since: Instant::now(),
            _dir: dir,
        };
        match tokio::time::timeout(START_TIMEOUT, runner.lines.next_line()).await {
            Ok(Ok(Some(line))) if matches!(serde_json::from_str(&line), Ok(FromRunner::Ready)) => Ok(runner),
            _ => {
                // It connected, then gave up (it could not load its framework, say): wait for it
                // to finish saying why; dropping the runner kills what is left of it.
                let _ = tokio::time::timeout(Duration::from_secs(2), runner.child.wait()).await;
                let _ = tokio::time::timeout(Duration::from_secs(1), &mut log_reader).await;
                Err(failure(take_log(&runner.log)))
            }
        }
    }

    async fn run_warm(&self, kind: Kind, slot: u32, job: &Job, cancel: CancellationToken) -> pb::TestReport {
        self.start_reaper();
        let started = Instant::now();
        // `--isolation file|test`: a fresh runner for every unit, retired right after it. So too
        // once a session's runners have crashed too often on this worker: restarts are capped.
        let fresh = job.runner.isolation != Isolation::Warm || self.crashes(&job.assignment.session_id) >= MAX_CRASHES;
        let existing = lock(&self.runners).remove(&slot);
        let existing = match existing {
            Some(runner) if runner.session == job.assignment.session_id && runner.kind == kind && !fresh => {
                Some(runner)
            }
            Some(other) => {
                // Another session's runner: let it finish its session hooks in the background.
                tokio::spawn(retire(other, self.process.kill_grace));
                None
            }
            None => None,
        };
        let mut runner = match existing {
            Some(runner) => runner,
            // A runner that is slow to start (a conftest that sleeps) must not hold up a cancel.
            // Its start has its own limit (START_TIMEOUT); the test's timeout starts after it.
            None => match tokio::select! {
                result = self.start(kind, job) => result,
                () = cancel.cancelled() => {
                    return pb::TestReport {
                        outcome: pb::Outcome::Cancelled as i32,
                        duration_ms: started.elapsed().as_millis() as u64,
                        message: "cancelled".into(),
                        ..Default::default()
                    };
                }
            } {
                Ok(runner) => {
                    info!(slot, session = %job.assignment.session_id, "{} runner started", kind.name());
                    runner
                }
                Err(text) => {
                    // The first line says what happened; the runner's last words go in the output.
                    let (message, output) = text.split_once('\n').unwrap_or((&text, ""));
                    return pb::TestReport {
                        outcome: pb::Outcome::Error as i32,
                        duration_ms: started.elapsed().as_millis() as u64,
                        message: message.trim_end_matches(':').to_string(),
                        output: output.as_bytes().to_vec(),
                        ..Default::default()
                    };
                }
            },
        };
        let ready = Instant::now();
        // Crash diagnostics should show this file's last words, not an earlier file's.
        *lock(&runner.log) = Capture::new(RUNNER_LOG_LIMIT);
        let unit = runner.next_unit;
        runner.next_unit += 1;
        // A runner works in its project's folder: paths there are relative to it.
        let prefix = match project_dir(job) {
            "." | "" => String::new(),
            dir => format!("{}/", dir.trim_end_matches('/')),
        };
        let path = job.path.strip_prefix(&prefix).unwrap_or(&job.path);
        let command = serde_json::json!({ "op": "run", "unit": unit, "path": path }).to_string() + "\n";
        let named = |id: String| if prefix.is_empty() { id } else { format!("{prefix}{id}") };
        let mut acc = Unit::new(kind, &job.path);
        if runner.writer.write_all(command.as_bytes()).await.is_err() {
            return self.crashed(runner, job, acc, started).await;
        }
        let limit = humantime::format_duration(job.timeout.unwrap_or_default()).to_string();
        let timeout = async {
            match job.timeout {
                Some(t) => tokio::time::sleep_until((ready + t).into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(timeout);
        loop {
            tokio::select! {
                line = runner.lines.next_line() => {
                    let Ok(Some(line)) = line else {
                        return self.crashed(runner, job, acc, started).await;
                    };
                    match serde_json::from_str::<FromRunner>(&line) {
                        Ok(FromRunner::Collected { tests }) => acc.collected = tests.into_iter().map(named).collect(),
                        Ok(FromRunner::Started { test }) => acc.current = Some(named(test)),
                        Ok(FromRunner::Case { test, outcome, duration_ms, message, output, xfail }) => {
                            acc.current = None;
                            acc.add(named(test), &outcome, duration_ms, message, output, xfail);
                        }
                        Ok(FromRunner::Done { error }) => {
                            if fresh {
                                tokio::spawn(retire(runner, self.process.kill_grace));
                            } else if runner.next_unit >= self.recycle.after_files
                                || rss_bytes(runner.group.pgid()) > self.recycle.rss_bytes
                            {
                                info!(slot, files = runner.next_unit, "recycling the {} runner", kind.name());
                                tokio::spawn(retire(runner, self.process.kill_grace));
                            } else {
                                runner.idle_since = Instant::now();
                                lock(&self.runners).insert(slot, runner);
                            }
                            acc.not_run("skipped", kind.stopped_early());
                            return unit_report(acc.cases, error, started, self.process.output_limit);
                        }
                        Ok(FromRunner::Ready) => {}
                        Err(e) => warn!("ignoring a line the {} runner sent: {e}", kind.name()),
                    }
                }
                () = &mut timeout => {
                    self.stop(runner).await;
                    let message = format!("killed after the {limit} timeout");
                    if let Some(test) = acc.current.take() {
                        acc.add(test, "timed_out", 0, message.clone(), String::new(), false);
                    }
                    acc.not_run("error", &format!("not run: the file was killed after the {limit} timeout"));
                    let mut report = unit_report(acc.cases, None, started, self.process.output_limit);
                    report.outcome = pb::Outcome::TimedOut as i32;
                    report.message = message;
                    return report;
                }
                () = cancel.cancelled() => {
                    self.stop(runner).await;
                    acc.current = None;
                    acc.not_run("cancelled", "cancelled");
                    let mut report = unit_report(acc.cases, None, started, self.process.output_limit);
                    report.outcome = pb::Outcome::Cancelled as i32;
                    report.message = "cancelled".into();
                    return report;
                }
            }
        }
    }

    /// Kill a runner now (timeout, cancel): its process group goes.
    async fn stop(&self, mut runner: Runner) {
        let pgid = runner.group.pgid();
        kill_group(pgid, self.process.kill_grace, async {
            let _ = runner.child.wait().await;
        })
        .await;
    }

    /// The runner died mid-file: the test it ran fails with the runner's last words.
    async fn crashed(&self, mut runner: Runner, job: &Job, mut acc: Unit, started: Instant) -> pb::TestReport {
        let status = tokio::time::timeout(Duration::from_secs(5), runner.child.wait()).await.ok().and_then(Result::ok);
        let signal = status.and_then(|s| std::os::unix::process::ExitStatusExt::signal(&s));
        let exit_code = status.and_then(|s| s.code());
        let how = match (signal, exit_code) {
            (Some(sig), _) => format!("signal {sig}"),
            (None, Some(code)) => format!("exit code {code}"),
            _ => "no exit status".to_string(),
        };
        let tail = String::from_utf8_lossy(&std::mem::replace(&mut *lock(&runner.log), Capture::new(0)).finish().0)
            .into_owned();
        let message = format!("the {} runner crashed ({how})", runner.kind.name());
        {
            let mut crashes = lock(&self.crashes);
            // Old sessions' counts are of no use: keep the map small on a long-lived worker.
            if crashes.len() >= 256 && !crashes.contains_key(&job.assignment.session_id) {
                crashes.clear();
            }
            *crashes.entry(job.assignment.session_id.clone()).or_default() += 1;
        }
        warn!(session = %job.assignment.session_id, test = %job.path, "{message}");
        if let Some(test) = acc.current.take() {
            acc.add(test, "failed", 0, message.clone(), tail.clone(), false);
        }
        acc.not_run("error", &format!("not run: {message} before it"));
        drop(runner);
        let mut report = unit_report(acc.cases, None, started, self.process.output_limit);
        report.outcome = pb::Outcome::Failed as i32;
        report.message = message;
        report.exit_code = exit_code;
        report.signal = signal;
        if report.output.is_empty() {
            report.output = tail.into_bytes();
        }
        report
    }
}

/// What a runner's log holds, emptying it.
fn take_log(log: &Mutex<Capture>) -> String {
    String::from_utf8_lossy(&std::mem::replace(&mut *lock(log), Capture::new(0)).finish().0).into_owned()
}

/// Ask a runner to finish its session (so `pytest_sessionfinish`, `--junitxml` and coverage
/// plugins write their files), then kill whatever is left of its process group.
async fn retire(mut runner: Runner, grace: Duration) {
    let _ = runner.writer.write_all(b"{\"op\": \"stop\"}\n").await;
    let _ = runner.writer.shutdown().await;
    let finished = tokio::time::timeout(RETIRE_TIMEOUT, runner.child.wait()).await.is_ok();
    if !finished {
        let pgid = runner.group.pgid();
        kill_group(pgid, grace, async {
            let _ = runner.child.wait().await;
        })
        .await;
    }
}

/// How long a runner may take to run its session-end hooks when it is retired.
const RETIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// Per-case output kept by the worker (head and tail), and per file across its cases: a chatty
/// suite must not produce a result too large to send.
pub(crate) const CASE_OUTPUT_LIMIT: usize = 64 * 1024;
const UNIT_CASE_OUTPUT_BUDGET: usize = 4 * 1024 * 1024;

/// One file's cases as they arrive.
pub(crate) struct Unit {
    kind: Kind,
    path: String,
    pub(crate) collected: Vec<String>,
    pub(crate) cases: Vec<pb::CaseResult>,
    current: Option<String>,
    output_left: usize,
}

impl Unit {
    pub(crate) fn new(kind: Kind, path: &str) -> Self {
        Unit {
            kind,
            path: path.to_string(),
            collected: Vec::new(),
            cases: Vec::new(),
            current: None,
            output_left: UNIT_CASE_OUTPUT_BUDGET,
        }
    }

    pub(crate) fn add(
        &mut self,
        name: String,
        outcome: &str,
        duration_ms: u64,
        message: String,
        output: String,
        xfail: bool,
    ) {
        // Output is kept for what did not pass (bounded); a passing case's output is noise.
        let keep = !matches!(outcome, "passed" | "skipped") && self.output_left > 0;
        let output = if keep {
            let mut capture = Capture::new(CASE_OUTPUT_LIMIT.min(self.output_left));
            capture.push(output.as_bytes());
            let (bytes, _) = capture.finish();
            self.output_left = self.output_left.saturating_sub(bytes.len());
            bytes
        } else {
            Vec::new()
        };
        self.cases.push(case(self.kind, &self.path, name, outcome, duration_ms, message, output, xfail));
    }

    /// Record every collected case that got no result.
    pub(crate) fn not_run(&mut self, outcome: &str, message: &str) {
        let reported: std::collections::HashSet<String> = self.cases.iter().map(|c| c.name.clone()).collect();
        let missing: Vec<String> = self.collected.iter().filter(|id| !reported.contains(*id)).cloned().collect();
        for id in missing {
            self.cases.push(case(self.kind, &self.path, id, outcome, 0, message.to_string(), Vec::new(), false));
        }
    }
}

impl Executor for WarmExecutor {
    async fn run(&self, slot: u32, job: &Job, cancel: CancellationToken) -> pb::TestReport {
        let Some(kind) = Kind::of(job.runner.framework) else {
            return self.process.run(slot, job, cancel).await;
        };
        self.run_warm(kind, slot, job, cancel).await
    }
}

/// The project's folder of a session, relative to the workspace root: where a JavaScript
/// project's `package.json` is, or a Python project's pytest configuration. Runners start there,
/// so the project's own configuration applies, and test paths are relative to it.
fn project_dir(job: &Job) -> &str {
    job.runner.project_dir()
}

/// Resident memory of a process, from /proc (0 when unknown).
fn rss_bytes(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .unwrap_or(0)
}

fn outcome_of(outcome: &str) -> pb::Outcome {
    match outcome {
        "passed" => pb::Outcome::Passed,
        "failed" => pb::Outcome::Failed,
        "skipped" => pb::Outcome::Skipped,
        "timed_out" => pb::Outcome::TimedOut,
        _ => pb::Outcome::Error,
    }
}

#[allow(clippy::too_many_arguments, reason = "one case's fields, all different")]
fn case(
    kind: Kind,
    path: &str,
    name: String,
    outcome: &str,
    duration_ms: u64,
    message: String,
    output: Vec<u8>,
    xfail: bool,
) -> pb::CaseResult {
    let file = path.split_once("::").map(|(f, _)| f).unwrap_or(path);
    let classname = kind.classname(file);
    let message = if xfail && !message.starts_with("xfail") { format!("xfail: {message}") } else { message };
    pb::CaseResult { name, classname, outcome: outcome_of(outcome) as i32, duration_ms, message, output }
}

/// The file's report from its cases: failed when any case failed or errored, with their output.
pub(crate) fn unit_report(
    cases: Vec<pb::CaseResult>,
    error: Option<String>,
    started: Instant,
    limit: usize,
) -> pb::TestReport {
    let duration_ms = started.elapsed().as_millis() as u64;
    if let Some(error) = error {
        return pb::TestReport {
            outcome: pb::Outcome::Error as i32,
            duration_ms,
            message: if cases.is_empty() {
                "collection failed"
            } else {
                "error outside its tests (a hook, or an unhandled error)"
            }
            .into(),
            output: error.into_bytes(),
            cases,
            ..Default::default()
        };
    }
    let bad: Vec<&pb::CaseResult> = cases
        .iter()
        .filter(|c| {
            matches!(
                pb::Outcome::try_from(c.outcome),
                Ok(pb::Outcome::Failed | pb::Outcome::Error | pb::Outcome::TimedOut)
            )
        })
        .collect();
    let mut capture = Capture::new(limit);
    for c in &bad {
        capture.push(format!("_____ {} _____\n", c.name).as_bytes());
        capture.push(&c.output);
        capture.push(b"\n");
    }
    let (output, output_dropped_bytes) = capture.finish();
    let skipped = cases.iter().filter(|c| c.outcome == pb::Outcome::Skipped as i32).count();
    let message = if bad.is_empty() {
        format!(
            "{} passed{}",
            cases.len() - skipped,
            if skipped > 0 { format!(", {skipped} skipped") } else { String::new() }
        )
    } else {
        format!("{} of {} cases did not pass", bad.len(), cases.len())
    };
    let outcome = if !bad.is_empty() {
        pb::Outcome::Failed
    } else if skipped > 0 && skipped == cases.len() {
        pb::Outcome::Skipped
    } else {
        pb::Outcome::Passed
    };
    pb::TestReport {
        outcome: outcome as i32,
        duration_ms,
        message,
        output,
        output_dropped_bytes,
        cases,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_of_this_process_is_known_and_of_nobody_is_zero() {
        assert!(rss_bytes(std::process::id() as i32) > 0);
        assert_eq!(rss_bytes(i32::MAX), 0);
    }

    #[test]
    fn a_file_fails_when_a_case_fails_and_names_it() {
        let cases = vec![
            case(Kind::Pytest, "t/test_a.py", "t/test_a.py::ok".into(), "passed", 1, String::new(), Vec::new(), false),
            case(
                Kind::Pytest,
                "t/test_a.py",
                "t/test_a.py::bad".into(),
                "failed",
                1,
                "boom".into(),
                b"trace".to_vec(),
                false,
            ),
            case(
                Kind::Pytest,
                "t/test_a.py",
                "t/test_a.py::skip".into(),
                "skipped",
                0,
                "later".into(),
                Vec::new(),
                false,
            ),
        ];
        let report = unit_report(cases, None, Instant::now(), 1024);
        assert_eq!(report.outcome, pb::Outcome::Failed as i32);
        assert_eq!(report.message, "1 of 3 cases did not pass");
        let text = String::from_utf8_lossy(&report.output);
        assert!(text.contains("t/test_a.py::bad") && text.contains("trace"), "{text}");
        assert_eq!(report.cases[0].classname, "t.test_a");
    }

    #[test]
    fn cases_that_never_ran_are_reported_and_output_is_bounded() {
        let mut unit = Unit::new(Kind::Pytest, "t/test_a.py::TestX");
        unit.collected =
            vec!["t/test_a.py::TestX::a".into(), "t/test_a.py::TestX::b".into(), "t/test_a.py::TestX::c".into()];
        unit.add("t/test_a.py::TestX::a".into(), "failed", 1, "boom".into(), "x".repeat(1_000_000), false);
        unit.add("t/test_a.py::TestX::b".into(), "passed", 1, String::new(), "noise".into(), false);
        unit.not_run("error", "not run: the runner crashed before it");
        let names: Vec<&str> = unit.cases.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["t/test_a.py::TestX::a", "t/test_a.py::TestX::b", "t/test_a.py::TestX::c"]);
        assert!(unit.cases[0].output.len() <= CASE_OUTPUT_LIMIT + 100, "capped");
        assert!(unit.cases[1].output.is_empty(), "a passing case's output is dropped");
        assert_eq!(unit.cases[2].outcome, pb::Outcome::Error as i32);
        assert_eq!(unit.cases[0].classname, "t.test_a", "the class name comes from the file part");
    }

    #[test]
    fn a_collection_error_is_an_error_for_the_file() {
        let report = unit_report(Vec::new(), Some("ImportError".into()), Instant::now(), 1024);
        assert_eq!(report.outcome, pb::Outcome::Error as i32);
        assert_eq!(report.output, b"ImportError");
    }
}
