//! Rust test suites, run the way nextest runs them: the test binaries are built once per session
//! (`cargo test --no-run`), each binary lists its tests (`--list --format terse`), and each test
//! runs in a process of its own (`BIN --exact NAME --nocapture`, in its package's folder).
//!
//! A test unit is `SRC::NAME`: the source file of the test target, relative to the workspace
//! root (`src/lib.rs`, `tests/api.rs`, `crates/x/src/lib.rs`), and the test's path in it. The
//! CLI builds and lists to find the units; each worker builds the same tree (a no-op for cargo
//! when it is already built) to find the binaries, once per session, shared by its slots.
//!
//! Cargo's messages and the test naming are parsed in `testgrid_proto::cargo` (the contract
//! with the CLI); this module must not know other frameworks.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use testgrid_proto as pb;
use testgrid_proto::cargo::{Binary, binary_from_message, list_args, parse_list, split_unit};
use testgrid_proto::frameworks::Options;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use crate::exec::cache::BuildCache;
use crate::exec::process::Failure;
use crate::exec::run::test_process;
use crate::exec::{Process, Settings, report};
use crate::job::{Executor, Job};

/// How long a worker lets a session's build take.
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// What a worker keeps of a failed build's messages (its tail).
const BUILD_LOG_LIMIT: usize = 256 * 1024;
/// How long a test binary may take to list its tests.
const LIST_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// How long cargo's last messages may take once it has exited.
const BUILD_LOG_DRAIN: Duration = Duration::from_secs(5);

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
pub async fn build(
    root: &Path,
    dir: &Path,
    args: &[String],
    env: &BTreeMap<String, String>,
    die_with_worker: bool,
) -> Result<Build, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // cargo and the compilers it starts are one process group, killed together if the build is
    // abandoned (cancel, timeout, worker exit).
    let process = Process::new(cargo, dir, die_with_worker)
        .args(testgrid_proto::cargo::BUILD_ARGS)
        .args(args)
        .envs(env)
        .stdout(Stdio::piped())
        .capture_stderr(BUILD_LOG_LIMIT);
    let shown = format!("cargo test --no-run {}", args.join(" "));
    let mut running = process
        .spawn()
        .map_err(|e| format!("cannot start `{shown}` in {}: {e} (is cargo on the PATH?)", dir.display()))?;
    let stdout = running.child().stdout.take().ok_or("cargo's output vanished")?;
    let mut build = Build::default();
    let work = async {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(binary) = binary_from_message(root, &line) {
                build.binaries.push(binary);
            }
        }
        running.wait().await
    };
    let status = tokio::time::timeout(BUILD_TIMEOUT, work).await.map_err(|_| {
        format!(
            "`{shown}` in {} took more than {}; it was stopped",
            dir.display(),
            humantime::format_duration(BUILD_TIMEOUT)
        )
    })?;
    let status = status.map_err(|e| format!("cannot wait for cargo: {e}"))?;
    let errors = running.finish(BUILD_LOG_DRAIN).await.bytes;
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
pub async fn list(
    binary: &Binary,
    env: &BTreeMap<String, String>,
    ignored: bool,
    die_with_worker: bool,
) -> Result<Vec<String>, String> {
    let output = Process::new(&binary.exe, &binary.manifest_dir, die_with_worker)
        .args(list_args(ignored))
        .envs(env)
        .envs(binary_env(binary))
        .output(LIST_TIMEOUT)
        .await
        .map_err(|e| match e {
            Failure::Start(e) | Failure::Wait(e) => format!("cannot list the tests of {}: {e}", binary.exe.display()),
            Failure::TimedOut => format!(
                "`{} --list` did not answer within {}",
                binary.exe.display(),
                humantime::format_duration(LIST_TIMEOUT)
            ),
        })?;
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

type SharedBuild = OnceCell<Result<Arc<SessionBuild>, String>>;

/// Runs `cargo` sessions: one process per test, from binaries built once per session.
pub struct CargoExecutor {
    pub settings: Settings,
    /// Each session's build, for the newest sessions.
    builds: BuildCache<String, SharedBuild>,
}

/// Sessions whose builds a worker remembers (the newest ones).
const KEEP_BUILDS: usize = 8;

impl CargoExecutor {
    pub fn new(settings: Settings) -> Self {
        CargoExecutor { settings, builds: BuildCache::new(KEEP_BUILDS) }
    }

    async fn session_build(&self, job: &Job) -> Result<Arc<SessionBuild>, String> {
        let shared = self.builds.get_or_insert_with(&job.assignment.session_id, || Ok::<_, String>(OnceCell::new()))?;
        let guard = self.settings.die_with_worker;
        shared
            .get_or_init(|| async move {
                let args = match &job.runner.options {
                    Options::Cargo { cargo_args, .. } => cargo_args.clone(),
                    _ => Vec::new(),
                };
                // A tree materialised from a workspace builds in its project's build folder, kept
                // between sessions, unless the session chose a target folder itself.
                let mut env = job.env.clone();
                if let Some(dir) = &job.build_dir
                    && !env.contains_key("CARGO_TARGET_DIR")
                {
                    env.insert("CARGO_TARGET_DIR".into(), dir.join("cargo-target").display().to_string());
                }
                let build = build(&job.root, &job.project_dir(), &args, &env, guard).await?;
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
            () = cancel.cancelled() => return Ok(report::simple(pb::Outcome::Cancelled, "cancelled", Instant::now())),
        };
        let index = session.build.binaries.iter().position(|b| b.src == src).ok_or_else(|| {
            format!(
                "no test binary built from {src} on this worker (is its tree the same as the one the session was \
                 submitted from?)"
            )
        })?;
        let binary = &session.build.binaries[index];
        let guard = self.settings.die_with_worker;
        let Listing { all, ignored } = session.lists[index]
            .get_or_init(|| async {
                let all = list(binary, &job.env, false, guard).await?;
                let ignored = list(binary, &job.env, true, guard).await?;
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
        let run_ignored = matches!(job.runner.options, Options::Cargo { run_ignored: true, .. });
        if ignored.contains(name) && !run_ignored {
            let mut report = report::simple(pb::Outcome::Skipped, "ignored", started);
            report.duration_ms = 0;
            report.cases.push(case_of(binary, name, &report, started));
            return Ok(report);
        }
        let mut argv = vec![binary.exe.display().to_string(), "--exact".into(), name.to_string(), "--nocapture".into()];
        if ignored.contains(name) {
            // libtest runs an `#[ignore]` test only when asked.
            argv.push("--include-ignored".into());
        }
        // The session's libtest arguments (its selection was applied when the CLI listed).
        argv.extend(job.runner.args.iter().cloned());
        let shown = shlex::try_join(argv.iter().map(String::as_str))
            .map_err(|e| format!("cannot quote the command of {name}: {e}"))?;
        let process = Process::new(&binary.exe, &binary.manifest_dir, guard)
            .args(&argv[1..])
            .envs(job.test_env(slot))
            .envs(binary_env(binary));
        let mut report = test_process(process, &shown, &binary.manifest_dir, job.timeout, cancel, &self.settings).await;
        report.cases.push(case_of(binary, name, &report, started));
        Ok(report)
    }
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
            Err(message) => report::simple(pb::Outcome::Error, message, started),
        }
    }
}
