//! What a worker is told at start: [`Config`], how it is stopped ([`Stop`]), when warm runners
//! are recycled ([`Recycle`]), and why it cannot run ([`Error`]). These are the crate's public
//! types (the `testgrid-worker` binary and the CLI's local mode build them).
//!
//! Plain data: it must not read the environment or flags (the binary's clap arguments do that,
//! and the CLI's local mode passes its own).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How a worker runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The coordinator's gRPC address (`http://host:7700`).
    pub grid: String,
    /// The token sent on every call (a `worker` token), if the grid needs one.
    pub token: Option<String>,
    /// TLS towards an `https://` grid: roots to trust, and a client certificate for mTLS.
    pub tls: testgrid_proto::client::TlsFiles,
    /// Tests run at once.
    pub slots: u32,
    /// The worker's name as the grid shows it.
    pub name: String,
    /// Labels sessions can require.
    pub labels: BTreeMap<String, String>,
    /// The workspace root: tests run with this as their working directory.
    pub root: PathBuf,
    /// Run every test in `root`, even a session's that sent its workspace (the code is baked
    /// into the image, or `root` is the CLI's own folder as in local mode). `false`: a session
    /// with a workspace runs in its tree, materialised under `cache_dir`.
    pub own_tree: bool,
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
    /// The Python that pytest runners start, when a session names none.
    pub python: String,
    /// The Node that vitest and jest runners start.
    pub node: String,
    /// Where warm runners leave each session's raw coverage (a folder per session) for the one
    /// who merges it: local mode, whose CLI shares this machine. `None` on a grid worker: the
    /// framework writes its own report where its config says, per runner.
    pub coverage_dir: Option<PathBuf>,
    /// A session whose warm runner to start as soon as it is known, before the session reaches
    /// this worker (see [`Prestart`]). `None`: runners start with their session's first test.
    pub prestart: Option<tokio::sync::watch::Receiver<Option<Prestart>>>,
    /// Where sessions' workspace trees are materialised and their blobs cached (one worker per
    /// folder). `None`: a temporary folder of this run's own, made when the first workspace comes.
    pub cache_dir: Option<PathBuf>,
    /// The most bytes the blob cache keeps.
    pub cache_size: u64,
    /// Where a session's setup run in the worker's own tree leaves the stamp that lets a later
    /// session with the same setup key skip it. `None`: under `cache_dir` when there is one.
    pub setup_stamps: Option<PathBuf>,
    /// Set while the worker is registered with the grid (its health endpoint's readiness).
    pub connected: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

/// The blob cache's default size.
pub const DEFAULT_CACHE_SIZE: u64 = 10 << 30;

/// A session's warm runner, started ahead: local mode, whose CLI chooses the session's id before
/// `Submit` and knows how its tests run while the framework is still listing them, so the
/// runner's start (Node or Python, the framework, the project's config) overlaps that listing.
/// The session's first test then finds its runner started, or starting. Only the runner is
/// started: what runs still comes from the coordinator.
#[derive(Clone, Debug)]
pub struct Prestart {
    pub session_id: String,
    /// The session's environment (`--env`), as its assignments will carry it.
    pub env: BTreeMap<String, String>,
    pub runner: testgrid_proto::frameworks::Runner,
    /// Where the runner's list of the session's test files goes, when the CLI wants it from
    /// there instead of asking the framework itself (see [`FileList`]).
    pub list: Option<FileList>,
}

/// One test file as a runner's framework lists it (vitest's `list --filesOnly`): its path as the
/// framework gives it (absolute), and its project's name, if it has one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedFile {
    pub file: String,
    pub project: Option<String>,
}

/// What a runner's framework listed, or why it did not.
pub type Listing = Result<Vec<ListedFile>, String>;

/// Where a started-ahead runner's list of test files goes (local mode: the runner that will run
/// the files lists them as it starts, so that the framework is not started twice, once to list
/// and once to run). Only vitest's runner lists. The worker takes the sender once
/// ([`FileList::take`]); when it is dropped unanswered (the runner cannot list, or did not
/// start), the receiver hears so at once and the CLI asks the framework itself.
#[derive(Clone)]
pub struct FileList(std::sync::Arc<std::sync::Mutex<Option<std::sync::mpsc::SyncSender<Listing>>>>);

impl FileList {
    /// A list to ask for, and where its answer comes.
    pub fn new() -> (FileList, std::sync::mpsc::Receiver<Listing>) {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        (FileList(std::sync::Arc::new(std::sync::Mutex::new(Some(tx)))), rx)
    }

    /// The sender, for the one who answers; `None` once taken.
    pub fn take(&self) -> Option<std::sync::mpsc::SyncSender<Listing>> {
        crate::exec::lock(&self.0).take()
    }
}

impl std::fmt::Debug for FileList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileList")
    }
}

/// The Python a worker runs by default.
pub const DEFAULT_PYTHON: &str = "python3";
/// The Node a worker runs by default.
pub const DEFAULT_NODE: &str = "node";
/// Time between SIGTERM and SIGKILL by default.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(1);
/// How long a draining worker waits for running tests by default.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

impl Config {
    /// A worker of the grid at `grid` running tests in `root`, every other setting at the
    /// `testgrid-worker` binary's default: one slot per CPU, the host name, no labels, 1 MiB of
    /// output per test, 1 s kill grace, 60 s drain timeout, tests die with the worker, default
    /// recycling, `python3` and `node`. Change fields with struct update syntax.
    pub fn new(grid: impl Into<String>, root: impl Into<PathBuf>) -> Self {
        Config {
            grid: grid.into(),
            token: None,
            tls: testgrid_proto::client::TlsFiles::default(),
            slots: default_slots(),
            name: default_name(),
            labels: BTreeMap::new(),
            root: root.into(),
            own_tree: true,
            output_limit: DEFAULT_OUTPUT_LIMIT,
            kill_grace: DEFAULT_KILL_GRACE,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            die_with_worker: true,
            recycle: Recycle::default(),
            python: DEFAULT_PYTHON.to_string(),
            node: DEFAULT_NODE.to_string(),
            coverage_dir: None,
            prestart: None,
            cache_dir: None,
            cache_size: DEFAULT_CACHE_SIZE,
            setup_stamps: None,
            connected: None,
        }
    }
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
    /// After `after_files` files or past `rss_mib` MiB, as the flags say it.
    pub fn new(after_files: u64, rss_mib: u64) -> Self {
        Recycle { after_files, rss_bytes: rss_mib.saturating_mul(1024 * 1024) }
    }

    /// The memory limit in MiB, as the flags say it.
    pub fn rss_mib(&self) -> u64 {
        self.rss_bytes / (1024 * 1024)
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

/// The most slots a worker may offer (the coordinator enforces the same bound).
pub const MAX_SLOTS: u32 = 4096;

/// Why a worker could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bad grid address `{grid}`: {problem}; expected something like http://host:7700")]
    BadGrid { grid: String, problem: String },
    #[error(transparent)]
    BadToken(#[from] testgrid_proto::client::BadToken),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recycle_speaks_mib_and_the_defaults_are_the_flags_defaults() {
        assert_eq!(Recycle::new(7, 3), Recycle { after_files: 7, rss_bytes: 3 * 1024 * 1024 });
        assert_eq!(Recycle::default().rss_mib(), 2048);
        let config = Config::new("http://grid:7700", "/w");
        assert_eq!((config.python.as_str(), config.node.as_str()), ("python3", "node"));
        assert!(config.die_with_worker && config.slots >= 1);
    }
}
