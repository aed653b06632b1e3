//! Rust test suites, run the way nextest runs them: the test binaries are built once per session
//! (`cargo test --no-run`), each binary lists its tests (`--list --format terse`), and each test
//! runs in a process of its own (`BIN --exact NAME --nocapture`, in its package's folder).
//!
//! A test unit is `SRC::NAME`: the source file of the test target, relative to the workspace
//! root (`src/lib.rs`, `tests/api.rs`, `crates/x/src/lib.rs`), and the test's path in it. The
//! CLI builds and lists to find the units; each worker builds the same tree (a no-op for cargo
//! when it is already built) to find the binaries, once per session, shared by its slots.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use testgrid_proto as pb;
use testgrid_proto::cargo::{Binary, binary_from_message, list_args, parse_list, split_unit};
use testgrid_proto::frameworks::Options;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use crate::executor::{Executor, GroupGuard, Job, ProcessExecutor, lock};

/// How long a worker lets a session's build take.
pub const BUILD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30 * 60);
/// What a worker keeps of a failed build's messages (its tail).
const BUILD_LOG_LIMIT: usize = 256 * 1024;

/// The test binaries of one `cargo test --no-run`.
#[derive(Clone, Debug, Default)]
pub struct Build {
    pub binaries: Vec<Binary>,
}

/// The variables `cargo test` sets for a test process of `binary`.
fn binary_env(binary: &Binary) -> Vec<(String, String)> {
    binary.env(std::env::var("LD_LIBRARY_PATH").ok().as_deref())
}

/// Build the test binaries in `dir` and name them; the tail of cargo's messages is in the error.
pub async fn build(root: &Path, dir: &Path, args: &[String], env: &BTreeMap<String, String>) -> Result<Build, String> {
    let mut cmd = tokio::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(testgrid_proto::cargo::BUILD_ARGS)
        .args(args)
        .current_dir(dir)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // cargo and the compilers it starts are one process group, killed together if the build
        // is abandoned (cancel, timeout, worker exit).
        .process_group(0);
    let shown = format!("cargo test --no-run {}", args.join(" "));
    let mut child =
        cmd.spawn().map_err(|e| format!("cannot start `{shown}` in {}: {e} (is cargo on the PATH?)", dir.display()))?;
    let _group = child.id().map(|pid| GroupGuard::new(pid as i32));
    let stdout = child.stdout.take().ok_or("cargo's output vanished")?;
    let stderr = child.stderr.take();
    let errors = tokio::spawn(async move {
        let mut tail = crate::output::Capture::new(BUILD_LOG_LIMIT);
        if let Some(mut stderr) = stderr {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                tail.push(&buf[..n]);
            }
        }
        tail.finish().0
    });
    let mut build = Build::default();
    let work = async {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(binary) = binary_from_message(root, &line) {
                build.binaries.push(binary);
            }
        }
        child.wait().await
    };
    let status = tokio::time::timeout(BUILD_TIMEOUT, work).await.map_err(|_| {
        format!(
            "`{shown}` in {} took more than {}; it was stopped",
            dir.display(),
            humantime::format_duration(BUILD_TIMEOUT)
        )
    })?;
    let status = status.map_err(|e| format!("cannot wait for cargo: {e}"))?;
    let errors = errors.await.unwrap_or_default();
    if !status.success() {
        let text = String::from_utf8_lossy(&errors);
        let tail: Vec<&str> = text.lines().rev().take(60).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!(
            "`{shown}` failed in {} ({status}); fix the build first\n{}",
            dir.display(),
            tail.join("\n")
        ));
    }
    build.binaries.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(build)
}

/// The tests a binary has (`ignored`: only its `#[ignore]` ones).
pub async fn list(binary: &Binary, env: &BTreeMap<String, String>, ignored: bool) -> Result<Vec<String>, String> {
    let mut cmd = tokio::process::Command::new(&binary.exe);
    cmd.args(list_args(ignored));
    let output = cmd
        .current_dir(&binary.manifest_dir)
        .envs(env)
        .envs(binary_env(binary))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot list the tests of {}: {e}", binary.exe.display()))?;
    if !output.status.success() {
        return Err(format!(
            "`{} --list` failed ({}): {}",
            binary.exe.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(parse_list(&String::from_utf8_lossy(&output.stdout)))
}

/// A worker's view of one session's build.
struct SessionBuild {
    build: Build,
    /// Per binary (by index): all its tests and the ignored ones, listed on first use.
    lists: Vec<OnceCell<Result<Listing, String>>>,
}

/// A binary's tests, and which of them are `#[ignore]`d.
struct Listing {
    all: HashSet<String>,
    ignored: HashSet<String>,
}

type SharedBuild = Arc<OnceCell<Result<Arc<SessionBuild>, String>>>;

/// Runs `cargo` sessions: one process per test, from binaries built once per session.
pub struct CargoExecutor {
    pub process: Arc<ProcessExecutor>,
    builds: Mutex<Vec<(String, SharedBuild)>>,
}

/// Sessions whose builds a worker remembers (the newest ones).
const KEEP_BUILDS: usize = 8;

impl CargoExecutor {
    pub fn new(process: Arc<ProcessExecutor>) -> Self {
        CargoExecutor { process, builds: Mutex::new(Vec::new()) }
    }

    fn shared(&self, session: &str) -> SharedBuild {
        let mut builds = lock(&self.builds);
        if let Some(at) = builds.iter().position(|(s, _)| s == session) {
            // Most recently used last: the oldest go first.
            let entry = builds.remove(at);
            let shared = Arc::clone(&entry.1);
            builds.push(entry);
            return shared;
        }
        let shared: SharedBuild = Arc::new(OnceCell::new());
        builds.push((session.to_string(), Arc::clone(&shared)));
        if builds.len() > KEEP_BUILDS {
            builds.remove(0);
        }
        shared
    }

    async fn session_build(&self, job: &Job) -> Result<Arc<SessionBuild>, String> {
        let shared = self.shared(&job.assignment.session_id);
        let root = self.process.root.clone();
        shared
            .get_or_init(|| async move {
                let dir = root.join(job.runner.project_dir());
                let args = match &job.runner.options {
                    Options::Cargo { cargo_args, .. } => cargo_args.clone(),
                    _ => Vec::new(),
                };
                let build = build(&root, &dir, &args, &job.env).await?;
                let lists = build.binaries.iter().map(|_| OnceCell::new()).collect();
                Ok(Arc::new(SessionBuild { build, lists }))
            })
            .await
            .clone()
    }

    async fn run_test(&self, slot: u32, job: &Job, cancel: CancellationToken) -> Result<pb::TestReport, String> {
        let (src, name) = split_unit(&job.path)
            .ok_or_else(|| format!("`{}` is not a Rust test (SOURCE::NAME, as `testgrid run` lists them)", job.path))?;
        let session = tokio::select! {
            build = self.session_build(job) => build?,
            () = cancel.cancelled() => return Ok(cancelled()),
        };
        let index = session.build.binaries.iter().position(|b| b.src == src).ok_or_else(|| {
            format!(
                "no test binary built from {src} on this worker (is its tree the same as the one the session was \
                 submitted from?)"
            )
        })?;
        let binary = &session.build.binaries[index];
        let Listing { all, ignored } = session.lists[index]
            .get_or_init(|| async {
                let all = list(binary, &job.env, false).await?;
                let ignored = list(binary, &job.env, true).await?;
                Ok(Listing { all: all.into_iter().collect(), ignored: ignored.into_iter().collect() })
            })
            .await
            .as_ref()
            .map_err(Clone::clone)?;
        if !all.contains(name) {
            return Err(format!(
                "{} has no test named `{name}` (was it renamed since the session was submitted?)",
                binary.id
            ));
        }
        let started = Instant::now();
        if ignored.contains(name) {
            let mut report = pb::TestReport {
                outcome: pb::Outcome::Skipped as i32,
                message: "ignored".into(),
                ..Default::default()
            };
            report.cases.push(case_of(binary, name, &report, started));
            return Ok(report);
        }
        let argv = [binary.exe.display().to_string(), "--exact".into(), name.to_string(), "--nocapture".into()];
        let mut env = job.env.clone();
        env.extend(binary_env(binary));
        let test = Job {
            command: shlex::try_join(argv.iter().map(String::as_str))
                .map_err(|e| format!("cannot quote the command of {name}: {e}"))?,
            env,
            dir: Some(binary.manifest_dir.clone()),
            ..job.clone()
        };
        let mut report = self.process.run(slot, &test, cancel).await;
        report.cases.push(case_of(binary, name, &report, started));
        Ok(report)
    }
}

fn cancelled() -> pb::TestReport {
    pb::TestReport { outcome: pb::Outcome::Cancelled as i32, message: "cancelled".into(), ..Default::default() }
}

/// The one case a test unit is, named as nextest's JUnit names it (binary id as the class).
fn case_of(binary: &Binary, name: &str, report: &pb::TestReport, started: Instant) -> pb::CaseResult {
    let passed = matches!(pb::Outcome::try_from(report.outcome), Ok(pb::Outcome::Passed | pb::Outcome::Skipped));
    pb::CaseResult {
        name: name.to_string(),
        classname: binary.id.clone(),
        outcome: report.outcome,
        duration_ms: report.duration_ms.max(started.elapsed().as_millis() as u64),
        message: report.message.clone(),
        // The unit's report already carries the output; the case keeps it only for failures.
        output: if passed { Vec::new() } else { report.output.clone() },
    }
}

impl Executor for CargoExecutor {
    async fn run(&self, slot: u32, job: &Job, cancel: CancellationToken) -> pb::TestReport {
        let started = Instant::now();
        match self.run_test(slot, job, cancel).await {
            Ok(report) => report,
            Err(message) => pb::TestReport {
                outcome: pb::Outcome::Error as i32,
                duration_ms: started.elapsed().as_millis() as u64,
                message,
                ..Default::default()
            },
        }
    }
}
