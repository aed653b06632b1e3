//! A session's setup on this worker ([`Setup`]): run once per session tree, before the first of
//! the session's tests runs there, and what it produced kept for the next session with the same
//! key ([`Setup::reuse_key`]).
//!
//! - In a materialised tree, the folders the setup produced (`outputs`) are kept in the worker's
//!   cache (`CACHE/setup/KEY/`, hard links, the files made read-only as cached blobs are) and,
//!   for a later session with the same key, linked into its tree instead of running the setup.
//! - In the worker's own tree (`--root`, local mode) the outputs stay where the setup left them:
//!   a stamp (`STAMPS/ROOT-HASH`) remembers the key of the last setup that passed there, and a
//!   session with that key whose outputs are all present does not run it again.
//!
//! A setup that fails is remembered for its session tree: every test of the session on this
//! worker fails with its output ([`failed`]). One that was cancelled (its test was) is not: the
//! next test runs it again.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use testgrid_proto as pb;
use testgrid_proto::setup::Setup;
use testgrid_proto::tree::shorten;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::exec::{self, Process, lock};
use crate::job::Job;
use crate::workspace::Workspaces;

/// A setup with no timeout of its own is killed after this.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// How temporary folders in the setup cache start (removed at the next start).
pub const TEMP_PREFIX: &str = ".tmp-";

/// How a session tree's setup ended: `Err` holds the failed setup's report.
pub type Done = Result<(), pb::TestReport>;

/// Whether a session tree's setup has run (`None`: not yet, or it was cancelled). Locked while it
/// runs, so that the session's other tests wait for it.
pub type State = Arc<tokio::sync::Mutex<Option<Done>>>;

/// Where the tree the setup runs in comes from.
#[derive(Clone)]
pub enum Place {
    /// Materialised from the session's workspace: outputs are kept in this cache.
    Materialised(Arc<Workspaces>),
    /// The worker's own root: stamps are kept in this folder (`None`: none are kept).
    Own(Option<PathBuf>),
}

/// The setup states of sessions running in the worker's own tree (a materialised tree keeps
/// its own, see [`crate::workspace::InUse::setup`]).
#[derive(Default)]
pub struct OwnTree {
    states: Mutex<HashMap<String, State>>,
}

/// The most sessions whose own-tree setup state is remembered (a coordinator that never says a
/// session ended cannot grow it without bound).
const MAX_OWN_STATES: usize = 1024;

impl OwnTree {
    pub fn state(&self, session: &str) -> State {
        let mut states = lock(&self.states);
        if states.len() >= MAX_OWN_STATES && !states.contains_key(session) {
            states.clear();
        }
        Arc::clone(states.entry(session.to_string()).or_default())
    }

    pub fn ended(&self, session: &str) {
        lock(&self.states).remove(session);
    }
}

/// Make sure `job`'s session setup has passed in `job.root` on this worker: run it, reuse what an
/// earlier one produced, or find it done. `Err`: the report `job` ends with instead of running.
/// `tell` hears how it ended (its report, and whether it was reused) when this call did it.
pub async fn ensure(
    state: &State,
    job: &Job,
    place: Place,
    settings: &exec::Settings,
    cancel: &CancellationToken,
    tell: impl FnOnce(pb::TestReport, bool),
) -> Result<(), pb::TestReport> {
    let Some(setup) = &job.setup else { return Ok(()) };
    let started = Instant::now();
    let mut done = tokio::select! {
        done = state.lock() => done,
        () = cancel.cancelled() => return Err(exec::report::simple(pb::Outcome::Cancelled, "cancelled", started)),
    };
    if let Some(done) = done.as_ref() {
        return done.clone().map_err(|report| failed(setup, report));
    }
    match set_up(job, setup, place, settings, cancel).await {
        Some((result, report, reused)) => {
            tell(report, reused);
            *done = Some(result.clone());
            result.map_err(|report| failed(setup, report))
        }
        None => Err(exec::report::simple(pb::Outcome::Cancelled, "cancelled during the session's setup", started)),
    }
}

/// The report of a test that cannot run because its session's setup failed: the setup's output
/// and how it ended.
fn failed(setup: &Setup, report: pb::TestReport) -> pb::TestReport {
    let why = if report.message.is_empty() { "it failed".to_string() } else { report.message.clone() };
    pb::TestReport {
        outcome: pb::Outcome::Error as i32,
        message: format!("the session's setup `{}` failed: {why}", shorten(&setup.command)),
        output: report.output,
        output_dropped_bytes: report.output_dropped_bytes,
        ..Default::default()
    }
}

/// Run the setup, or reuse what an earlier run produced: how it ended, its report, and whether
/// it was reused. `None`: cancelled.
async fn set_up(
    job: &Job,
    setup: &Setup,
    place: Place,
    settings: &exec::Settings,
    cancel: &CancellationToken,
) -> Option<(Done, pb::TestReport, bool)> {
    let started = Instant::now();
    let dir = job.root.join(&setup.dir);
    if !dir.is_dir() {
        let message = format!("its folder `{}` is not a folder of the workspace", shorten(&setup.dir));
        let report = exec::report::simple(pb::Outcome::Error, message, started);
        return Some((Err(report.clone()), report, false));
    }
    // Reading key files and linking kept outputs (a `node_modules` of 200 MB: half a second)
    // is file work, done off the async threads.
    let (j, s, p) = (job.clone(), setup.clone(), place.clone());
    let looked = tokio::task::spawn_blocking(move || {
        let key = s.reusable().then(|| {
            let digests: Vec<Option<pb::Digest>> =
                s.key_files.iter().map(|f| digest_of_file(&j.root.join(f))).collect();
            s.reuse_key(&j.env, &digests)
        });
        let reused = key.as_ref().is_some_and(|key| reuse(&j, &s, key, &p));
        (key, reused)
    })
    .await;
    // The closure does not panic; if it did, the setup runs.
    let (key, reused) = looked.unwrap_or((None, false));
    if let Some(key) = &key
        && reused
    {
        info!(session = %job.assignment.session_id, key = &key[..12], millis = started.elapsed().as_millis() as u64,
              "setup reused");
        return Some((Ok(()), exec::report::simple(pb::Outcome::Passed, "reused", started), true));
    }
    info!(session = %job.assignment.session_id, command = %shorten(&setup.command), "setup starts");
    let process = Process::new("sh", &dir, settings.die_with_worker)
        .arg("-c")
        .arg(&setup.command)
        .envs(job.env.iter())
        .env("TESTGRID_SESSION", &job.assignment.session_id)
        .env("TESTGRID_WORKER", &job.worker)
        .env("TESTGRID_SETUP", "1");
    let timeout = match setup.timeout_ms {
        0 => DEFAULT_TIMEOUT,
        ms => Duration::from_millis(ms),
    };
    let shown = format!("sh -c {}", shorten(&setup.command));
    let report = exec::run::test_process(process, &shown, &dir, Some(timeout), cancel.clone(), settings).await;
    let millis = started.elapsed().as_millis() as u64;
    match pb::Outcome::try_from(report.outcome) {
        Ok(pb::Outcome::Passed) => {
            info!(session = %job.assignment.session_id, millis, "setup passed");
            if let Some(key) = key {
                let (job, setup) = (job.clone(), setup.clone());
                let _ = tokio::task::spawn_blocking(move || keep(&job, &setup, &key, &place)).await;
            }
            Some((Ok(()), report, false))
        }
        Ok(pb::Outcome::Cancelled) => None,
        _ => {
            warn!(session = %job.assignment.session_id, millis, "setup failed: {}", report.message);
            Some((Err(report.clone()), report, false))
        }
    }
}

/// Put in place what an earlier setup with `key` produced; `false` when there is nothing to reuse
/// (the setup runs).
fn reuse(job: &Job, setup: &Setup, key: &str, place: &Place) -> bool {
    match place {
        Place::Own(None) => false,
        Place::Own(Some(stamps)) => {
            let stamp = std::fs::read_to_string(stamps.join(stamp_name(&job.root))).unwrap_or_default();
            stamp.trim() == key && setup.outputs.iter().all(|o| job.root.join(o).exists())
        }
        Place::Materialised(workspaces) => {
            let Some(kept) = workspaces.setup_output(key) else { return false };
            for (i, output) in setup.outputs.iter().enumerate() {
                let to = job.root.join(output);
                crate::workspace::remove_tree(&to);
                let from = kept.join(i.to_string());
                if !from.exists() {
                    // The setup did not make this folder: neither does its reuse.
                    continue;
                }
                if let Err(e) = link_tree(&from, &to) {
                    warn!(key = &key[..12], "cannot reuse a kept setup output, the setup runs: {e}");
                    for output in &setup.outputs {
                        crate::workspace::remove_tree(&job.root.join(output));
                    }
                    return false;
                }
            }
            true
        }
    }
}

/// Remember what a setup with `key` produced.
fn keep(job: &Job, setup: &Setup, key: &str, place: &Place) {
    match place {
        Place::Own(None) => {}
        Place::Own(Some(stamps)) => {
            let written = std::fs::create_dir_all(stamps).and_then(|()| {
                let file = tempfile::NamedTempFile::new_in(stamps)?;
                std::fs::write(file.path(), key)?;
                file.persist(stamps.join(stamp_name(&job.root))).map(drop).map_err(|e| e.error)
            });
            if let Err(e) = written {
                warn!(dir = %stamps.display(), "cannot record the setup for reuse: {e}");
            }
        }
        Place::Materialised(workspaces) => {
            let outputs: Vec<PathBuf> = setup.outputs.iter().map(|o| job.root.join(o)).collect();
            if let Err(e) = workspaces.keep_setup_output(key, &outputs) {
                warn!(key = &key[..12], "cannot keep the setup's outputs for reuse: {e}");
            }
        }
    }
}

/// The stamp file of a root folder.
fn stamp_name(root: &Path) -> String {
    let hash = testgrid_proto::tree::digest_of(root.as_os_str().as_encoded_bytes()).hash;
    hash[..32].to_string()
}

/// A regular file's digest, read in pieces; `None` when it is not one.
fn digest_of_file(path: &Path) -> Option<pb::Digest> {
    let file = std::fs::File::open(path).ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    testgrid_proto::tree::digest_of_reader(file).ok()
}

/// Recreate the tree `from` at `to`: folders made, files hard-linked (copied where linking
/// fails), symlinks copied as they are.
pub fn link_tree(from: &Path, to: &Path) -> std::io::Result<u64> {
    let mut bytes = 0;
    let meta = std::fs::symlink_metadata(from)?;
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut pending = vec![(from.to_path_buf(), to.to_path_buf(), meta)];
    while let Some((from, to, meta)) = pending.pop() {
        let kind = meta.file_type();
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)?;
        } else if kind.is_dir() {
            std::fs::create_dir(&to)?;
            for entry in std::fs::read_dir(&from)? {
                let entry = entry?;
                pending.push((entry.path(), to.join(entry.file_name()), entry.metadata()?));
            }
        } else if kind.is_file() {
            if std::fs::hard_link(&from, &to).is_err() {
                std::fs::copy(&from, &to)?;
            }
            bytes += meta.len();
        }
        // Sockets, FIFOs and devices a setup left are not kept.
    }
    Ok(bytes)
}

/// Make every regular file under `dir` read-only (keeping its execute bits): a file kept for
/// reuse is shared by every tree it is linked into.
pub fn make_read_only(dir: &Path) -> std::io::Result<()> {
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
        } else if meta.is_file() {
            let mode = meta.permissions().mode() & 0o555;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
        }
    }
    Ok(())
}
