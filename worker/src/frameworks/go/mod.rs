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
//! [`compile::BUILD_TIMEOUT`]). A timeout kills the binary's group: the tests running then are
//! `timed_out`, those never reached `error`. A binary that dies mid-test (a panic, `os.Exit`)
//! fails the tests it was running and reports those it never reached as `error` ("not run: …"),
//! which it learns from `-test.list`. A package that fails without a failing test (`TestMain`
//! exiting non-zero, an `init` panic) fails with the binary's output. A compile error makes the
//! unit `error` with the compiler's output; a package without test files passes with no cases.
//!
//! Isolation (`--isolation`) does not change Go: a package's tests always share one process,
//!
//! The pieces: [`target`] (what a unit names), [`toolchain`] (which Go), [`compile`] (`go test
//! -c`), [`run`] (the binary and test2json), [`parse`] (events to cases, pure). This file keeps
//! each session's binaries and wires the pieces; it must not know other frameworks.

pub mod compile;
pub mod parse;
pub mod run;
pub mod target;
pub mod toolchain;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use testgrid_proto as pb;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use crate::exec::cache::BuildCache;
use crate::exec::{Settings, lock, report};
use crate::job::{Executor, Job};
use compile::Build;
use target::parse_target;
use testgrid_proto::go::GoArgs;
use toolchain::Toolchain;

/// Sessions whose test binaries a worker keeps; the least recently used goes first.
pub const KEEP_SESSIONS: usize = 8;

/// Where a package's binary goes, and its compile (run once, by the first slot to need it).
type Compile = (PathBuf, Arc<OnceCell<Build>>);

/// A session's test binaries: a directory removed when the session is dropped from the cache
/// and no job uses it any more.
pub struct SessionBuilds {
    dir: tempfile::TempDir,
    packages: Mutex<HashMap<String, Compile>>,
}

impl SessionBuilds {
    fn new() -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("testgrid-go-")
            .tempdir()
            .map_err(|e| format!("cannot create a directory for Go test binaries: {e}; check TMPDIR"))?;
        Ok(SessionBuilds { dir, packages: Mutex::new(HashMap::new()) })
    }

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
    pub settings: Settings,
    toolchain: OnceCell<Toolchain>,
    /// Each session's binaries, by session id.
    sessions: BuildCache<String, SessionBuilds>,
    /// Compiles started, for tests (slots needing one package share one compile).
    compiles: AtomicU64,
}

impl GoExecutor {
    pub fn new(settings: Settings) -> Self {
        GoExecutor {
            settings,
            toolchain: OnceCell::new(),
            sessions: BuildCache::new(KEEP_SESSIONS),
            compiles: AtomicU64::new(0),
        }
    }

    /// The session's binaries, most recently used last; the oldest beyond [`KEEP_SESSIONS`] go.
    fn session_builds(&self, session: &str) -> Result<Arc<SessionBuilds>, String> {
        self.sessions.get_or_insert_with(&session.to_string(), SessionBuilds::new)
    }

    async fn toolchain(&self, job: &Job) -> Result<Toolchain, String> {
        // Failures are not kept: Go may be installed while the worker runs.
        self.toolchain.get_or_try_init(|| toolchain::detect(job, self.settings.die_with_worker)).await.cloned()
    }

    async fn run_unit(&self, slot: u32, job: &Job, cancel: CancellationToken) -> pb::TestReport {
        let started = Instant::now();
        let error = |message: String| report::simple(pb::Outcome::Error, message, started);
        let cancelled = || report::simple(pb::Outcome::Cancelled, "cancelled", started);
        let target = match parse_target(&job.path, &job.root) {
            Ok(target) => target,
            Err(message) => return error(message),
        };
        let args = match GoArgs::split(&job.runner.args) {
            Ok(args) => args,
            Err(problem) => return error(format!("the session's Go arguments: {problem}")),
        };
        let tools = tokio::select! {
            tools = self.toolchain(job) => tools,
            () = cancel.cancelled() => return cancelled(),
        };
        let tools = match tools {
            Ok(tools) => tools,
            Err(message) => return error(message),
        };
        let builds = match self.session_builds(&job.assignment.session_id) {
            Ok(builds) => builds,
            Err(message) => return error(message),
        };
        let (binary, cell) = builds.cell(&target.pkg);
        // A cancelled waiter drops its compile (killing it); another waiter then compiles anew.
        let compile = || {
            self.compiles.fetch_add(1, Ordering::Relaxed);
            compile::compile(&self.settings, job, &target.pkg, &binary, &args.build)
        };
        let build = tokio::select! {
            build = cell.get_or_init(compile) => build.clone(),
            () = cancel.cancelled() => return cancelled(),
        };
        match build {
            Build::NoTestFiles => report::simple(pb::Outcome::Passed, "no test files", started),
            Build::Failed { message, output } => {
                let mut report = error(message);
                report.output = output;
                report
            }
            Build::Binary(binary) => {
                let mut report =
                    run::run_binary(&self.settings, slot, job, &target, &tools, &binary, &args.test, started, cancel)
                        .await;
                if args.selects && report.cases.is_empty() && report.outcome == pb::Outcome::Passed as i32 {
                    report.outcome = pb::Outcome::Skipped as i32;
                    report.message = "no test here matches the session's -run/-skip".into();
                }
                // The session's directory stays until the last job using it is done.
                drop(builds);
                report
            }
        }
    }
}

impl Executor for GoExecutor {
    async fn run(&self, slot: u32, job: &Job, cancel: CancellationToken) -> pb::TestReport {
        self.run_unit(slot, job, cancel).await
    }
}
