//! The testgrid worker: connects to a coordinator, runs the tests it is assigned and reports.
//!
//! - [`connection`]: the `Attach` stream, heartbeats, reconnects.
//! - [`executor`]: how one assignment runs: a child process per test, or through
//!   [`warm`] runners (pytest, vitest, jest) and [`cargo`] (Rust test binaries).
//! - [`output`]: bounded head-and-tail output capture.

pub mod cargo;
pub mod command;
pub mod connection;
pub mod executor;
pub mod gotest;
pub mod output;
pub mod warm;

pub use executor::kill_all_running;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How a worker runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The coordinator's gRPC address (`http://host:7700`).
    pub grid: String,
    /// Tests run at once.
    pub slots: u32,
    /// The worker's name as the grid shows it.
    pub name: String,
    /// Labels sessions can require.
    pub labels: BTreeMap<String, String>,
    /// The workspace root: tests run with this as their working directory.
    pub root: PathBuf,
    /// Output kept per test, in bytes (head and tail).
    pub output_limit: usize,
    /// Time between SIGTERM and SIGKILL when a test is stopped.
    pub kill_grace: Duration,
    /// How long a draining worker lets running tests finish before it kills and hands them back.
    pub drain_timeout: Duration,
    /// Have the kernel kill running tests if the worker process dies outright.
    pub die_with_worker: bool,
    /// When a warm runner is replaced by a fresh one.
    pub recycle: Recycle,
}

/// A warm runner is replaced by a fresh one after this many files, or once its process holds
/// more than this much memory: a long-lived interpreter accumulates whatever the tests leak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recycle {
    pub after_files: u64,
    pub rss_bytes: u64,
}

impl Default for Recycle {
    fn default() -> Self {
        Recycle { after_files: 500, rss_bytes: 2048 * 1024 * 1024 }
    }
}

impl Recycle {
    /// The defaults, changed by `TESTGRID_RECYCLE_AFTER_FILES` and `TESTGRID_RECYCLE_RSS_MIB`
    /// (the worker binary's flags read the same variables; local mode reads them here).
    pub fn from_env() -> Self {
        let number =
            |name: &str| std::env::var(name).ok().and_then(|v| v.trim().parse::<u64>().ok()).filter(|n| *n > 0);
        let default = Recycle::default();
        Recycle {
            after_files: number("TESTGRID_RECYCLE_AFTER_FILES").unwrap_or(default.after_files),
            rss_bytes: number("TESTGRID_RECYCLE_RSS_MIB")
                .map_or(default.rss_bytes, |mib| mib.saturating_mul(1024 * 1024)),
        }
    }
}

/// How a worker is told to stop.
#[derive(Clone, Debug, Default)]
pub struct Stop {
    /// Drain: take no new work, hand back what has not started, let running tests finish within
    /// the drain timeout (then kill and hand them back), and return.
    pub drain: CancellationToken,
    /// Stop now: kill running tests, hand everything back, and return.
    pub now: CancellationToken,
}

impl Stop {
    pub fn requested(&self) -> bool {
        self.drain.is_cancelled() || self.now.is_cancelled()
    }
}

/// The default output limit per test: 1 MiB.
pub const DEFAULT_OUTPUT_LIMIT: usize = 1024 * 1024;

/// Why a worker could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bad grid address `{grid}`: {problem}; expected something like http://host:7700")]
    BadGrid { grid: String, problem: String },
    #[error("the coordinator at {grid} refused this worker: {why}")]
    Refused { grid: String, why: String },
    #[error("workspace root {path}: {source}; set --root to the checkout the tests live in")]
    Root { path: PathBuf, source: std::io::Error },
}

/// The number of CPUs, the default slot count.
pub fn default_slots() -> u32 {
    std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1)
}

/// The host name, the default worker name.
pub fn default_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_string())
}

/// The most slots a worker may offer (the coordinator enforces the same bound).
pub const MAX_SLOTS: u32 = 4096;

/// Run a worker until told to stop.
pub async fn run(config: Config, stop: Stop) -> Result<(), Error> {
    let root = config.root.canonicalize().map_err(|source| Error::Root { path: config.root.clone(), source })?;
    if !root.is_dir() {
        return Err(Error::Root {
            path: root,
            source: std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
        });
    }
    let process = Arc::new(executor::ProcessExecutor {
        root: root.clone(),
        output_limit: config.output_limit,
        kill_grace: config.kill_grace,
        die_with_worker: config.die_with_worker,
    });
    let python = std::env::var("TESTGRID_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let node = std::env::var("TESTGRID_NODE").unwrap_or_else(|_| "node".to_string());
    let executor = Arc::new(executor::Executors {
        warm: warm::WarmExecutor::new(Arc::clone(&process), python, node, config.recycle),
        cargo: cargo::CargoExecutor::new(Arc::clone(&process)),
        go: gotest::GoExecutor::new(Arc::clone(&process)),
        process,
    });
    connection::run(Config { root, ..config }, executor, stop).await
}
