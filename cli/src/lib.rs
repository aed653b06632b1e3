//! The `testgrid` command line: discover tests, submit them to a grid (or an embedded local
//! one), show results live, write reports, and exit with a status CI can trust.
//!
//! - [`discover`]: frameworks, patterns, test files.
//! - [`grid`]: the gRPC client (submit, watch with resume, cancel, list).
//! - [`live`]: the live view; [`report`]: summary and JUnit.
//! - [`local`]: the embedded grid of local mode.
//! - [`error`]: errors and the one place they become exit codes.

/// `println!` that ignores a closed stdout (`testgrid … | head`): the exit code still matters.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($t)*);
    }};
}

/// `eprintln!` that ignores a closed stderr.
macro_rules! err {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($t)*);
    }};
}

pub mod cargo;
pub mod discover;
pub mod error;
pub mod grid;
pub mod live;
pub mod local;
pub mod report;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use testgrid_proto as pb;
use testgrid_proto::frameworks;

use crate::discover::Framework;
use crate::error::{Error, exit};
use crate::grid::Grid;
use crate::live::{Live, Mode};

/// testgrid: run test suites across a grid of workers.
#[derive(Parser, Debug)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Discover tests and run them on the grid (or on a local one), showing results live.
    Run(RunArgs),
    /// Re-attach to a session and follow it to the end.
    Watch(WatchArgs),
    /// Cancel a session: queued tests end `cancelled`, running ones are killed.
    Cancel(SessionArgs),
    /// List the grid's sessions.
    Sessions(GridArgs),
    /// List the grid's workers and what they run.
    Workers(GridArgs),
}

#[derive(Args, Debug)]
pub struct GridArgs {
    /// The coordinator's gRPC address (`http://host:7700`).
    #[arg(long, env = "TESTGRID_GRID")]
    pub grid: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct SessionArgs {
    /// The session's id (as `testgrid run --detach` or `testgrid sessions` prints it).
    pub session: String,
    #[command(flatten)]
    pub grid: GridArgs,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// The session's id.
    pub session: String,
    /// The coordinator's gRPC address.
    #[arg(long, env = "TESTGRID_GRID")]
    pub grid: Option<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Args, Debug)]
pub struct OutputArgs {
    /// Write a JUnit XML report here.
    #[arg(long, env = "TESTGRID_JUNIT")]
    pub junit: Option<PathBuf>,
    /// One JSON event per line on stdout, nothing else there.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Files or folders to search for tests (default: the current folder).
    pub paths: Vec<PathBuf>,
    /// The coordinator's gRPC address; without it (and without TESTGRID_GRID) an embedded grid
    /// runs here.
    #[arg(long, env = "TESTGRID_GRID")]
    pub grid: Option<String>,
    /// Local mode: how many local workers (one slot each; default: the number of CPUs).
    #[arg(long, env = "TESTGRID_LOCAL")]
    pub local: Option<u32>,
    /// The tests' framework; `auto` detects it from the project's files.
    #[arg(long, value_enum, default_value = "auto", env = "TESTGRID_FRAMEWORK")]
    pub framework: Framework,
    /// The command that runs one test; `{}` becomes its path, shell-quoted. Runs with `sh -c` in
    /// the workspace root.
    #[arg(long, env = "TESTGRID_COMMAND")]
    pub command: Option<String>,
    /// Which files are tests: globs relative to the workspace root (`**` crosses folders).
    /// Repeat for more. Default: the framework's patterns.
    #[arg(long = "pattern")]
    pub patterns: Vec<String>,
    /// Run a failed or timed-out test again up to N times; passing on a retry makes it `flaky`.
    #[arg(long, default_value_t = 0, env = "TESTGRID_RETRIES")]
    pub retries: u32,
    /// Kill a test that runs longer than this (`30s`, `10m`; `0` for none).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration, env = "TESTGRID_TIMEOUT")]
    pub timeout: Duration,
    /// Cancel the whole session when it runs longer than this (off by default).
    #[arg(long, value_parser = humantime::parse_duration, env = "TESTGRID_SESSION_TIMEOUT")]
    pub session_timeout: Option<Duration>,
    /// Only workers with this label run the tests, `key=value`; repeat for more.
    #[arg(long = "label", value_parser = parse_key_value, env = "TESTGRID_LABELS", value_delimiter = ',')]
    pub labels: Vec<(String, String)>,
    /// An environment variable for every test, `NAME=value`; repeat for more.
    #[arg(long = "env", value_parser = parse_key_value)]
    pub env: Vec<(String, String)>,
    /// The workspace root: test paths are relative to it and commands run in it (default: the
    /// enclosing git checkout, else the current folder).
    #[arg(long, env = "TESTGRID_ROOT")]
    pub root: Option<PathBuf>,
    /// Submit and print the session id without waiting (needs a grid).
    #[arg(long)]
    pub detach: bool,
    /// The Python that runs pytest on every worker (default: the worker's own: its
    /// TESTGRID_PYTHON, or `python3` on its PATH).
    #[arg(long)]
    pub python: Option<String>,
    /// How tests are kept apart: `warm` runs a framework's tests in one long-lived process per
    /// slot where testgrid has a warm runner for it (pytest); `file` starts a fresh one per test
    /// file; `test` one per test case (pytest cases are collected first). Rust tests always run
    /// a process per test.
    #[arg(long, value_enum, default_value = "warm", env = "TESTGRID_ISOLATION")]
    pub isolation: Isolation,
    /// Cancel the session if this CLI goes away (no client watches it for the grid's liveness
    /// timeout). Default: the session runs on and `testgrid watch` can re-attach.
    #[arg(long, env = "TESTGRID_CANCEL_ON_DISCONNECT")]
    pub cancel_on_disconnect: bool,
    /// A test whose worker is lost more than this many times ends `lost` (default: the grid's, 2).
    #[arg(long, env = "TESTGRID_MAX_WORKER_LOSSES")]
    pub max_worker_losses: Option<u32>,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// How tests are kept apart from each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Isolation {
    Warm,
    File,
    Test,
}

impl Isolation {
    pub fn name(self) -> &'static str {
        match self {
            Isolation::Warm => "warm",
            Isolation::File => "file",
            Isolation::Test => "test",
        }
    }
}

use testgrid_proto::parse_key_value;

/// Run the CLI; every error becomes its documented exit code here.
pub fn run(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            err!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::INFRA);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run_session(args).await,
            Command::Watch(args) => watch(args).await,
            Command::Cancel(args) => cancel(args).await,
            Command::Sessions(args) => sessions(args).await,
            Command::Workers(args) => workers(args).await,
        }
    });
    // Anything still running in the background (a local grid's tasks) must not delay the exit.
    runtime.shutdown_timeout(Duration::from_millis(500));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            err!("error: {e}");
            e.exit_code()
        }
    }
}

/// The grid address, treating an empty one (`TESTGRID_GRID=`) as unset.
fn grid_of(grid: &Option<String>) -> Option<String> {
    grid.as_ref().map(|g| g.trim().to_string()).filter(|g| !g.is_empty())
}

fn need_grid(grid: Option<String>, what: &str) -> Result<String, Error> {
    grid_of(&grid).ok_or_else(|| Error::Usage(format!("`testgrid {what}` needs a grid: set --grid or TESTGRID_GRID")))
}

/// The enclosing git checkout of `dir`, else `dir`.
fn default_root(dir: &Path) -> PathBuf {
    dir.ancestors().find(|d| d.join(".git").exists()).unwrap_or(dir).to_path_buf()
}

/// A duration in whole milliseconds for the protocol, where anything non-zero stays non-zero
/// (0 means "none").
fn millis(d: Duration) -> u64 {
    if d.is_zero() { 0 } else { (d.as_millis() as u64).max(1) }
}

async fn run_session(mut args: RunArgs) -> Result<u8, Error> {
    args.grid = grid_of(&args.grid);
    let cwd = std::env::current_dir().map_err(|e| Error::Usage(format!("cannot read the current directory: {e}")))?;
    let root = match &args.root {
        Some(root) => root.canonicalize().map_err(|e| Error::Usage(format!("--root {}: {e}", root.display())))?,
        None => default_root(&cwd.canonicalize().unwrap_or(cwd)),
    };
    if args.local == Some(0) {
        return Err(Error::Usage("--local needs at least 1 worker".into()));
    }
    if args.grid.is_some() && args.local.is_some() {
        return Err(Error::Usage(
            "--local runs an embedded grid; it cannot be combined with --grid/TESTGRID_GRID".into(),
        ));
    }
    if args.max_worker_losses == Some(0) {
        return Err(Error::Usage("--max-worker-losses must be at least 1".into()));
    }
    if args.detach && args.cancel_on_disconnect {
        return Err(Error::Usage("--detach leaves the session without a watcher; drop --cancel-on-disconnect".into()));
    }
    if args.grid.is_none() && !args.labels.is_empty() {
        return Err(Error::Usage(
            "--label picks workers of a shared grid; the local grid's workers have no labels (drop --label or set --grid)".into(),
        ));
    }
    if args.detach && args.grid.is_none() {
        return Err(Error::Usage("--detach needs a grid to leave the session on: set --grid or TESTGRID_GRID".into()));
    }
    if let Some(command) = &args.command
        && !command.contains("{}")
    {
        return Err(Error::Usage(format!("--command `{command}` has no `{{}}` where the test path goes")));
    }
    if let Some(path) = &args.output.junit {
        report::check_writable(path)?;
    }
    let mut found = discover::discover(&discover::Request {
        root: root.clone(),
        paths: args.paths.clone(),
        framework: args.framework,
        patterns: args.patterns.clone(),
    })?;
    let env: BTreeMap<String, String> = args.env.iter().cloned().collect();
    let isolation = match args.isolation {
        Isolation::Warm => frameworks::Isolation::Warm,
        Isolation::File => frameworks::Isolation::File,
        Isolation::Test => frameworks::Isolation::Test,
    };
    let options = match (&args.command, found.framework) {
        (Some(template), _) => frameworks::Options::Command { template: template.clone() },
        (None, Framework::Cargo) => {
            let cwd = std::env::current_dir()
                .and_then(|d| d.canonicalize())
                .map_err(|e| Error::Usage(format!("cannot read the current directory: {e}")))?;
            let rust = cargo::discover(&root, &cwd, &args.paths, &args.patterns, &env).await?;
            found.tests = rust.tests;
            frameworks::Options::Cargo { package_dir: rust.package_dir, cargo_args: rust.cargo_args }
        }
        // Warm runners start in the project's folder, so that its configuration applies.
        (None, Framework::Pytest) => frameworks::Options::Pytest {
            python: args.python.clone(),
            project_dir: discover::runner_project(&root, &args.paths, found.framework)?,
        },
        (None, Framework::Jest | Framework::Vitest) => {
            frameworks::Options::Js { project_dir: discover::runner_project(&root, &args.paths, found.framework)? }
        }
        (None, Framework::Go) => frameworks::Options::Go,
        (None, Framework::Auto | Framework::Shell) => frameworks::Options::Command { template: "sh {}".to_string() },
    };
    if found.framework == Framework::Pytest && args.isolation == Isolation::Test && args.command.is_none() {
        found.tests = discover::pytest_cases(&root, &found.tests, args.python.as_deref(), &env)?;
    }
    if found.tests.is_empty() {
        let searched: Vec<String> = if args.paths.is_empty() {
            vec![".".into()]
        } else {
            args.paths.iter().map(|p| p.display().to_string()).collect()
        };
        return Err(Error::NoTests(format!(
            "no tests found in {} matching {} (framework {}; patterns are relative to the workspace root {}); \
             pass other paths, --pattern GLOB or --framework",
            searched.join(", "),
            found.patterns.join(", "),
            found.framework.name(),
            root.display()
        )));
    }
    let runner = frameworks::Runner {
        framework: if args.command.is_some() { frameworks::Framework::Custom } else { found.framework.typed() },
        isolation,
        options,
    };
    let spec = pb::SessionSpec {
        name: session_name(&args.paths),
        tests: found.tests.iter().map(|p| pb::TestSpec { path: p.clone() }).collect(),
        env: env.into_iter().collect(),
        test_timeout_ms: millis(args.timeout),
        retries: args.retries,
        required_labels: args.labels.iter().cloned().collect::<BTreeMap<_, _>>().into_iter().collect(),
        session_timeout_ms: args.session_timeout.map(millis).unwrap_or(0),
        max_worker_losses: args.max_worker_losses.unwrap_or(0),
        cancel_on_disconnect: args.cancel_on_disconnect,
        runner: Some(pb::Runner::from(&runner)),
    };

    let (grid, local) = match &args.grid {
        Some(url) => (Grid::connect(url).await?, None),
        None => {
            let n = args.local.unwrap_or_else(testgrid_worker::default_slots);
            let local = local::start(n, root.clone()).await?;
            (Grid::connect(&local.url).await?, Some((local, n)))
        }
    };
    // Take over SIGINT before the session exists, so no Ctrl-C can fall between submitting and
    // being ready to cancel.
    let signals = take_signals()?;
    let session = grid.submit(spec).await?;
    if args.detach {
        if args.output.json {
            out!("{}", serde_json::json!({ "session": session, "tests": found.tests.len() }));
            return Ok(exit::PASSED);
        }
        out!("{session}");
        err!("session {session} submitted: {} tests; follow it with `testgrid watch {session}`", found.tests.len());
        return Ok(exit::PASSED);
    }
    let mode = Mode::pick(args.output.json);
    if !args.labels.is_empty() && mode != Mode::Json {
        warn_if_no_worker_matches(&grid, &args.labels).await;
    }
    if mode != Mode::Json {
        let place = match &local {
            Some((_, n)) => format!("a local grid of {n} worker{}", if *n == 1 { "" } else { "s" }),
            None => grid.url.clone(),
        };
        err!("testgrid: {} {} tests on {place} (session {session})", found.tests.len(), found.framework.name(),);
    }
    // Ctrl-C stays handled until the very end: stopping a local grid can wait on tests that
    // ignore SIGTERM, and a second Ctrl-C must still quit at once then.
    let interrupted = Arc::new(AtomicBool::new(false));
    let ctrl_c = tokio::spawn(handle_ctrl_c(signals, grid.clone(), session.clone(), Arc::clone(&interrupted), mode));
    let result = follow(&grid, &session, &found.tests, mode, &args.output, &interrupted).await;
    if let Some((local, _)) = local {
        local.stop().await;
    }
    ctrl_c.abort();
    result
}

/// A session whose labels no connected worker has waits until one connects: say so.
async fn warn_if_no_worker_matches(grid: &Grid, labels: &[(String, String)]) {
    let Ok(workers) = grid.workers().await else { return };
    let matches = workers.iter().filter(|w| labels.iter().all(|(k, v)| w.labels.get(k) == Some(v))).count();
    if matches == 0 {
        let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        err!(
            "testgrid: none of the {} connected workers has {}; the session waits until one connects",
            workers.len(),
            wanted.join(", ")
        );
    }
}

fn session_name(paths: &[PathBuf]) -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "someone".into());
    let host = testgrid_worker::default_name();
    let what = if paths.is_empty() {
        ".".to_string()
    } else {
        paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" ")
    };
    format!("{user}@{host}: {what}")
}

/// Watch a session to its end, print the summary, write the JUnit report, and return the exit
/// code. `submitted`: the tests of a session this client just submitted (empty for `watch`), so
/// that even a session lost before its first event gets a report.
async fn follow(
    grid: &Grid,
    session: &str,
    submitted: &[String],
    mode: Mode,
    output: &OutputArgs,
    interrupted: &AtomicBool,
) -> Result<u8, Error> {
    let mut live = Live::new(mode, session);
    live.tracker.expect(submitted);
    let watched = grid.watch(session, 1, !submitted.is_empty(), |event| live.on_event(event)).await;
    live.clear();
    let tracker = &live.tracker;
    if let Err(e) = watched {
        // What did finish is still worth a summary and a report; the rest are named as unknown.
        if !tracker.tests.is_empty() {
            if mode != Mode::Json {
                out!("{}", report::summary(tracker, 15).trim_end());
            }
            if let Some(path) = &output.junit {
                report::write_junit(tracker, path)?;
            }
        }
        return Err(e);
    }
    if mode == Mode::Json {
        err!("{}", report::summary(tracker, 0).trim_end().lines().find(|l| l.starts_with("Summary")).unwrap_or(""));
    } else {
        out!("{}", report::summary(tracker, 15).trim_end());
    }
    // After the summary, so that a report that cannot be written never hides the results.
    if let Some(path) = &output.junit {
        report::write_junit(tracker, path)?;
        if mode != Mode::Json {
            out!("  JUnit report: {}", path.display());
        }
    }
    if interrupted.load(Ordering::SeqCst) {
        return Ok(exit::INTERRUPTED);
    }
    Ok(if tracker.all_passed() { exit::PASSED } else { exit::FAILED })
}

/// SIGINT and SIGTERM, taken over from their default (die at once) actions.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

fn take_signals() -> Result<Signals, Error> {
    use tokio::signal::unix::{SignalKind, signal};
    let problem = |e: std::io::Error| Error::Infra(format!("cannot handle Ctrl-C: {e}"));
    Ok(Signals {
        int: signal(SignalKind::interrupt()).map_err(problem)?,
        term: signal(SignalKind::terminate()).map_err(problem)?,
    })
}

/// Leave at once: kill the tests this process runs itself (local mode) and exit.
fn quit_now(code: u8) -> ! {
    testgrid_worker::kill_all_running();
    std::process::exit(i32::from(code));
}

/// For `run`. First Ctrl-C: cancel the session and let the watch show how it ends. Second
/// Ctrl-C: leave at once. SIGTERM (a CI job's timeout): cancel, give it two seconds, leave.
async fn handle_ctrl_c(mut signals: Signals, grid: Grid, session: String, interrupted: Arc<AtomicBool>, mode: Mode) {
    tokio::select! {
        _ = signals.int.recv() => {}
        _ = signals.term.recv() => {
            let _ = tokio::time::timeout(Duration::from_secs(2), grid.cancel(&session, "testgrid was terminated (SIGTERM)")).await;
            quit_now(exit::INTERRUPTED);
        }
    }
    interrupted.store(true, Ordering::SeqCst);
    if mode != Mode::Json {
        err!("\ninterrupted: cancelling session {session} (Ctrl-C again to quit at once)");
    }
    let cancel = {
        let grid = grid.clone();
        let session = session.clone();
        tokio::spawn(async move { grid.cancel(&session, "interrupted by the user (Ctrl-C)").await })
    };
    tokio::select! {
        _ = signals.int.recv() => quit_now(exit::INTERRUPTED),
        _ = signals.term.recv() => quit_now(exit::INTERRUPTED),
        _ = cancel => {}
    }
    // The cancel went through; a second Ctrl-C still means "stop waiting".
    tokio::select! {
        _ = signals.int.recv() => quit_now(exit::INTERRUPTED),
        _ = signals.term.recv() => quit_now(exit::INTERRUPTED),
    }
}

/// `watch` only follows: Ctrl-C stops following and leaves the session running.
async fn watch(args: WatchArgs) -> Result<u8, Error> {
    let grid = Grid::connect(&need_grid(args.grid, "watch")?).await?;
    let session = args.session.trim().to_string();
    let mode = Mode::pick(args.output.json);
    let mut signals = take_signals()?;
    let never = AtomicBool::new(false);
    tokio::select! {
        result = follow(&grid, &session, &[], mode, &args.output, &never) => result,
        _ = signals.int.recv() => {
            err!("\nstopped watching; session {session} goes on (`testgrid watch {session}` to follow it again, `testgrid cancel {session}` to stop it)");
            Ok(exit::INTERRUPTED)
        }
        _ = signals.term.recv() => Ok(exit::INTERRUPTED),
    }
}

async fn cancel(args: SessionArgs) -> Result<u8, Error> {
    let grid = Grid::connect(&need_grid(args.grid.grid, "cancel")?).await?;
    let session = args.session.trim();
    let cancelled = grid.cancel(session, "cancelled with `testgrid cancel`").await?;
    if args.grid.json {
        out!("{}", serde_json::json!({ "session": session, "cancelled": cancelled }));
    } else if cancelled {
        out!("cancelled session {session}");
    } else {
        out!("session {session} had already finished");
    }
    Ok(exit::PASSED)
}

async fn sessions(args: GridArgs) -> Result<u8, Error> {
    let grid = Grid::connect(&need_grid(args.grid, "sessions")?).await?;
    let sessions = grid.list().await?;
    if args.json {
        for s in &sessions {
            let t = s.totals.unwrap_or_default();
            out!(
                "{}",
                serde_json::json!({
                    "session": s.session_id, "name": s.name,
                    "state": if s.state == pb::SessionState::Finished as i32 { "finished" } else { "running" },
                    "total": t.total, "passed": t.passed, "failed": t.failed, "flaky": t.flaky,
                    "timed_out": t.timed_out, "lost": t.lost, "cancelled": t.cancelled, "error": t.error,
                    "running": s.running, "created_at_ms": s.created_at_ms, "finished_at_ms": s.finished_at_ms,
                    "cancel_reason": s.cancel_reason,
                })
            );
        }
        return Ok(exit::PASSED);
    }
    if sessions.is_empty() {
        out!("no sessions on {}", grid.url);
        return Ok(exit::PASSED);
    }
    out!(
        "{:<36}  {:<9}  {:>5}  {:>6}  {:>8}  {:>7}  NAME",
        "SESSION",
        "STATE",
        "TESTS",
        "PASSED",
        "NOT PASS",
        "RUNNING"
    );
    for s in &sessions {
        let t = s.totals.unwrap_or_default();
        let state = if s.state == pb::SessionState::Finished as i32 {
            if s.cancel_reason.is_empty() { "finished" } else { "cancelled" }
        } else {
            "running"
        };
        let not_passed = t.failed + t.timed_out + t.lost + t.cancelled + t.error;
        out!(
            "{:<36}  {:<9}  {:>5}  {:>6}  {:>8}  {:>7}  {}",
            s.session_id,
            state,
            t.total,
            t.passed + t.flaky,
            not_passed,
            s.running,
            s.name
        );
    }
    Ok(exit::PASSED)
}

async fn workers(args: GridArgs) -> Result<u8, Error> {
    let grid = Grid::connect(&need_grid(args.grid, "workers")?).await?;
    let workers = grid.workers().await?;
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    if args.json {
        for w in &workers {
            out!(
                "{}",
                serde_json::json!({
                    "worker_id": w.worker_id, "name": w.name, "slots": w.slots, "labels": w.labels,
                    "running": w.running_tests, "held": w.assignments.len(),
                    "last_heartbeat_ms": w.last_heartbeat_ms, "connected_at_ms": w.connected_at_ms,
                    "version": w.version, "draining": w.draining,
                })
            );
        }
        return Ok(exit::PASSED);
    }
    if workers.is_empty() {
        out!("no workers connected to {}", grid.url);
        return Ok(exit::PASSED);
    }
    out!(
        "{:<20}  {:<8}  {:>5}  {:>7}  {:>6}  {:<20}  RUNNING TESTS",
        "NAME",
        "STATE",
        "SLOTS",
        "RUNNING",
        "SEEN",
        "LABELS"
    );
    for w in &workers {
        let mut labels: Vec<String> = w.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        let seen = report::format_duration(now.saturating_sub(w.last_heartbeat_ms));
        out!(
            "{:<20}  {:<8}  {:>5}  {:>7}  {:>6}  {:<20}  {}",
            w.name,
            if w.draining { "draining" } else { "ready" },
            w.slots,
            w.running_tests.len(),
            seen,
            if labels.is_empty() { "-".to_string() } else { labels.join(",") },
            w.running_tests.join(" ")
        );
    }
    Ok(exit::PASSED)
}
