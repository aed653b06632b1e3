//! Local mode: an embedded coordinator and a worker of `N` slots in this process, talking real
//! gRPC over loopback: the very code path of a remote grid. It uses only the worker crate's root API
//! (`run`, `Config`, `Stop`, `Recycle`, ...).

use std::path::PathBuf;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::settings::LocalGrid;

/// A running embedded grid. Stop it with [`Local::stop`].
pub struct Local {
    pub url: String,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
    /// Where the workers' warm runners leave each session's coverage, merged after the session.
    coverage: tempfile::TempDir,
    /// The embedded coordinator's data folder (its blob store: files tests send back come through
    /// it, as on a grid), removed when the grid stops.
    _state: tempfile::TempDir,
}

/// Start a coordinator on an OS-chosen loopback port and a worker of `grid.slots` slots rooted at
/// `root`. One worker, not one per slot: a warm runner that serves several slots (vitest's, whose
/// pool runs a file per slot) is shared by all of them, as `vitest run` shares one vite server.
///
/// `prestart` tells the worker of the session to come as soon as the CLI knows how its tests run
/// (see [`testgrid_worker::Prestart`]).
pub async fn start(
    grid: &LocalGrid,
    root: PathBuf,
    prestart: tokio::sync::watch::Receiver<Option<testgrid_worker::Prestart>>,
) -> Result<Local, Error> {
    let listener = TcpListener::bind("127.0.0.1:0").await.map_err(Error::LocalPort)?;
    let addr = listener.local_addr().map_err(Error::LocalAddr)?;
    let url = format!("http://{addr}");
    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let coverage = tempfile::Builder::new().prefix("testgrid-coverage-").tempdir().map_err(Error::LocalCoverage)?;
    let state = tempfile::Builder::new().prefix("testgrid-local-").tempdir().map_err(Error::LocalState)?;
    // The data directory holds the blobs of artifacts; sessions live as long as this process.
    let coordinator = testgrid_coordinator::service::Config {
        data_dir: Some(state.path().to_path_buf()),
        durable_sessions: false,
        // A laptop's own duration history, shared by its runs.
        history_dir: crate::settings::user_cache(),
        ..Default::default()
    };
    let stop = shutdown.clone();
    tasks.spawn(async move {
        if let Err(e) = testgrid_coordinator::service::serve(listener, None, coordinator, stop).await {
            tracing::error!("local coordinator stopped: {e}");
        }
    });
    let config = testgrid_worker::Config {
        slots: grid.slots,
        name: "local".to_string(),
        drain_timeout: Duration::ZERO,
        // This process owns the tests and kills them on every exit it can see (Ctrl-C,
        // SIGTERM, the end of the session); the per-test cost of the kernel guard is not
        // worth it for what is left (a SIGKILL of the CLI itself).
        die_with_worker: false,
        recycle: grid.recycle,
        python: grid.python.clone(),
        node: grid.node.clone(),
        coverage_dir: Some(coverage.path().to_path_buf()),
        prestart: Some(prestart),
        // A setup run in the laptop's tree is skipped next time its key files are the same.
        setup_stamps: crate::settings::user_cache().map(|c| c.join("setup")),
        connected: None,
        ..testgrid_worker::Config::new(url.clone(), root.clone())
    };
    let stop = testgrid_worker::Stop { drain: CancellationToken::new(), now: shutdown.clone() };
    tasks.spawn(async move {
        if let Err(e) = testgrid_worker::run(config, stop).await {
            tracing::error!("local worker stopped: {e}");
        }
    });
    Ok(Local { url, shutdown, tasks, coverage, _state: state })
}

impl Local {
    /// Stop the workers (killing anything they still run; warm runners finish their sessions)
    /// and the coordinator. What is left is the folder of the sessions' coverage parts.
    pub async fn stop(mut self) -> Coverage {
        self.shutdown.cancel();
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(30), all).await.is_err() {
            testgrid_worker::kill_all_running();
        }
        Coverage { dir: self.coverage }
    }
}

/// The coverage a stopped local grid's runners left, a folder per session (removed on drop).
pub struct Coverage {
    dir: tempfile::TempDir,
}

impl Coverage {
    /// Merge `session`'s parts into the project's own reports with the framework's own code;
    /// `None` when there was no coverage to merge.
    pub async fn merge(
        &self,
        session: &str,
        framework: testgrid_proto::frameworks::Framework,
        program: &str,
        project: &std::path::Path,
    ) -> Result<Option<testgrid_worker::Merged>, String> {
        testgrid_worker::merge_coverage(framework, program, project, &self.dir.path().join(session)).await
    }
}
