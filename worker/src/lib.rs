//! The testgrid worker: connects to a coordinator, runs the tests it is assigned and reports.
//!
//! - [`config`]: what a worker is told at start (the public [`Config`], [`Stop`], [`Recycle`]).
//! - [`connection`]: the `Attach` stream, heartbeats, reconnects, over the pure
//!   [`connection::slots`] state (held assignments, queue, drain).
//! - [`job`]: one assignment as it runs, the [`job::Executor`] seam, a test's environment.
//! - [`exec`]: the one process lifecycle, exit texts, output capture, unit reports, build cache.
//! - [`workspace`]: sessions' trees materialised from the coordinator's blobs, the blob cache.
//! - [`setup`]: a session's setup command, run once per tree, and what it produced reused.
//! - [`builds`]: build folders kept per project between sessions (cargo's target folder).
//! - [`artifacts`]: the files a test wrote that its session wants back, sent to the blob service.
//! - [`frameworks`]: what differs per framework (shell, warm runners, cargo, go) and the one
//!   place that picks an executor.
//!
//! Layers only look down: `connection` → `job`; `frameworks` → `exec`, `job`; `exec` → nothing
//! of this crate but itself.

mod artifacts;
mod builds;
mod config;
mod connection;
mod exec;
mod frameworks;
mod job;
mod setup;
mod workspace;

pub use config::{
    Config, DEFAULT_CACHE_SIZE, DEFAULT_NODE, DEFAULT_OUTPUT_LIMIT, DEFAULT_PYTHON, Error, FileList, ListedFile,
    Listing, MAX_SLOTS, Prestart, Recycle, Stop, default_name, default_slots,
};
pub use exec::kill_all_running;
pub use frameworks::warm::coverage::{Merged, merge as merge_coverage};

use std::sync::Arc;

/// Run a worker until told to stop.
pub async fn run(config: Config, stop: Stop) -> Result<(), Error> {
    let root = config.root.canonicalize().map_err(|source| Error::Root { path: config.root.clone(), source })?;
    if !root.is_dir() {
        return Err(Error::Root {
            path: root,
            source: std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
        });
    }
    let settings = exec::Settings {
        output_limit: config.output_limit,
        kill_grace: config.kill_grace,
        die_with_worker: config.die_with_worker,
    };
    let executor = Arc::new(frameworks::Executors {
        warm: frameworks::warm::WarmExecutor::new(
            settings.clone(),
            config.python.clone(),
            config.node.clone(),
            config.recycle,
            config.coverage_dir.clone(),
        ),
        cargo: frameworks::cargo::CargoExecutor::new(settings.clone()),
        go: frameworks::go::GoExecutor::new(settings.clone()),
        shell: frameworks::shell::ShellExecutor { settings },
    });
    let prestart = config.prestart.clone().map(|mut wanted| {
        let executor = Arc::clone(&executor);
        let (root, name, stop) = (root.clone(), config.name.clone(), stop.now.clone());
        tokio::spawn(async move {
            let prestart = tokio::select! {
                known = wanted.wait_for(Option::is_some) => known.ok().and_then(|p| p.clone()),
                () = stop.cancelled() => None,
            };
            if let Some(prestart) = prestart {
                job::Executor::prestart(executor.as_ref(), &job::Job::ahead_of(prestart, &root, &name), &stop).await;
            }
        })
    });
    let result = connection::run(config, &root, Arc::clone(&executor), stop).await;
    if let Some(task) = prestart {
        // A runner still starting is stopped as a cancelled test's would be.
        task.abort();
    }
    job::Executor::shutdown(executor.as_ref()).await;
    result
}
