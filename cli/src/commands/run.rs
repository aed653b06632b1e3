//! `testgrid run`: resolve the settings, discover the tests, submit them (to the grid, or to a
//! local one started here), follow the session to its end and report.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use testgrid_proto as pb;
use testgrid_proto::frameworks::Options;

use crate::args::RunArgs;
use crate::config::Layers;
use crate::discover::{self, Discovered};
use crate::error::{Error, exit};
use crate::follow::follow;
use crate::grid::Grid;
use crate::live::{Mode, View};
use crate::local;
use crate::settings::{self, Place, Settings};
use crate::signals;

pub async fn run(args: RunArgs, layers: Layers) -> Result<u8, Error> {
    let settings = settings::resolve(args, layers)?;
    let (found, grid, local, chosen, taken) = match &settings.place {
        Place::Grid(url) => {
            let found = discover::discover(&settings)?;
            (found, Grid::connect(url).await?, None, None, None)
        }
        Place::Local(local_grid) => {
            // The embedded grid starts first and the session's id is chosen here, so that the
            // session's warm runner starts while the framework lists the tests (a start that
            // otherwise waits for that listing: 0.4 s of importing vitest on a real suite).
            let (tell, told) = tokio::sync::watch::channel(None);
            let local = local::start(local_grid, settings.root.clone(), told).await?;
            let id = uuid::Uuid::new_v4().to_string();
            // A runner may start now, in a process group of its own that no Ctrl-C reaches:
            // an interrupt while discovery runs kills it before this CLI goes.
            let mut early = signals::take()?;
            let discovery = {
                let (settings, id) = (settings.clone(), id.clone());
                tokio::task::spawn_blocking(move || {
                    discover::discover_with(&settings, &|runner, list| {
                        // The runner lists the files as it starts, when discovery wants them.
                        let (list, listing) = match list {
                            true => {
                                let (list, listing) = testgrid_worker::FileList::new();
                                (Some(list), Some(listing))
                            }
                            false => (None, None),
                        };
                        let prestart = testgrid_worker::Prestart {
                            session_id: id.clone(),
                            env: settings.env.clone(),
                            runner: runner.clone(),
                            list,
                        };
                        // A runner must start after the setup, which may replace what it loads.
                        if settings.setup.is_some() {
                            return None;
                        }
                        // Nobody listening: the worker is gone, and the session will say so (and
                        // the list, never answered, is asked of the framework).
                        let _ = tell.send(Some(prestart));
                        listing
                    })
                })
            };
            let found = tokio::select! {
                found = discovery => found,
                _ = early.int.recv() => signals::quit_now(exit::INTERRUPTED),
                _ = early.term.recv() => signals::quit_now(exit::INTERRUPTED),
            };
            let found = match found {
                Ok(Ok(found)) => found,
                Ok(Err(e)) => {
                    local.stop().await;
                    return Err(e);
                }
                // Discovery does not panic; if it did, this CLI goes down the same way.
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            };
            (found, Grid::connect(&local.url).await?, Some((local, local_grid)), Some(id), Some(early))
        }
    };
    let mut found = found;
    if settings.last_failed {
        found.tests = last_failed(&settings, &grid, std::mem::take(&mut found.tests)).await?;
    }
    let mut spec = session_spec(&settings, &found);
    if local.is_none() && settings.upload {
        spec.workspace = Some(send_workspace(&settings, &grid).await?);
    }
    // Take over SIGINT before the session exists, so no Ctrl-C can fall between submitting and
    // being ready to cancel.
    let signals = match taken {
        Some(signals) => signals,
        None => signals::take()?,
    };
    // Kept for the ETA's estimates (the sizes are not looked up twice).
    let tests = if view_wants_eta(&settings) { spec.tests.clone() } else { Vec::new() };
    let session = submit(&settings, &grid, spec, chosen.as_deref()).await?;
    if settings.detach {
        return Ok(detached(&session, found.tests.len(), settings.output.json));
    }

    let view = View::pick(&settings.output);
    let mode = view.mode;
    if !settings.labels.is_empty() && mode != Mode::Json {
        warn_if_no_worker_matches(&grid, &settings.labels).await;
    }
    if mode != Mode::Json && !view.quiet {
        let place = match &local {
            Some((_, grid)) => {
                let n = grid.slots;
                format!("a local grid of {n} slot{}", if n == 1 { "" } else { "s" })
            }
            None => grid.url.clone(),
        };
        let plural = if found.tests.len() == 1 { "" } else { "s" };
        err!("testgrid: {} {} test{plural} on {place} (session {session})", found.tests.len(), found.framework.name());
    }
    // Ctrl-C stays handled until the very end: stopping a local grid can wait on tests that
    // ignore SIGTERM, and a second Ctrl-C must still quit at once then.
    let interrupted = Arc::new(AtomicBool::new(false));
    let ctrl_c = tokio::spawn(signals::cancel_on_interrupt(
        signals,
        grid.clone(),
        session.clone(),
        Arc::clone(&interrupted),
        mode,
    ));
    // The live view's ETA: only a terminal shows it.
    let estimates = match mode {
        Mode::Terminal if !view.quiet && !tests.is_empty() => estimates(&settings, &grid, tests).await,
        _ => Vec::new(),
    };
    let mut result = follow(&grid, &session, &found.tests, estimates, view, &settings.output, &interrupted).await;
    if let Some((local, local_grid)) = local {
        let coverage = local.stop().await;
        if !interrupted.load(std::sync::atomic::Ordering::SeqCst) {
            let project = settings.root.join(found.runner.project_dir());
            // The program that runs the framework's own coverage code: the workers' Node, or
            // the session's Python.
            let program = match &found.runner.options {
                Options::Pytest { python: Some(python), .. } => python.as_str(),
                Options::Pytest { .. } => local_grid.python.as_str(),
                _ => local_grid.node.as_str(),
            };
            match coverage.merge(&session, found.framework, program, &project).await {
                Ok(None) => {}
                Ok(Some(merged)) => {
                    // The framework's own coverage summary, as it prints it alone (never on
                    // stdout, which belongs to --json).
                    eprint!("{}", merged.output);
                    if !merged.ok {
                        err!("testgrid: the {} coverage check failed (see above)", found.framework.name());
                        if matches!(result, Ok(code) if code == exit::PASSED) {
                            result = Ok(exit::FAILED);
                        }
                    }
                }
                Err(e) => err!("testgrid: the coverage was not merged: {e}"),
            }
        }
    }
    ctrl_c.abort();
    result
}

/// The session to submit: the tests found, how to run them, and the session's own limits.
fn session_spec(settings: &Settings, found: &Discovered) -> pb::SessionSpec {
    pb::SessionSpec {
        name: session_name(&settings.paths),
        tests: test_specs(&settings.root, &found.tests),
        env: settings.env.clone().into_iter().collect(),
        test_timeout_ms: millis(settings.timeout),
        retries: settings.retries,
        required_labels: settings.labels.iter().cloned().collect::<BTreeMap<_, _>>().into_iter().collect(),
        session_timeout_ms: settings.session_timeout.map(millis).unwrap_or(0),
        max_worker_losses: settings.max_worker_losses.unwrap_or(0),
        cancel_on_disconnect: settings.cancel_on_disconnect,
        runner: Some(pb::Runner::from(&found.runner)),
        workspace: None,
        // The setup runs where the framework's configuration is (the root for commands).
        setup: settings
            .setup
            .clone()
            .map(|setup| testgrid_proto::setup::Setup { dir: found.runner.project_dir().to_string(), ..setup })
            .as_ref()
            .map(pb::Setup::from),
        project: settings.project.clone(),
        artifacts: (!settings.artifacts.is_empty())
            .then(|| pb::ArtifactSpec { globs: settings.artifacts.clone(), max_bytes: settings.artifacts_max_size }),
        keep_order: settings.keep_order,
        max_failures: settings.max_fail,
        priority: settings.priority,
        max_slots: settings.max_slots,
        speculate: settings.speculate,
        secret_env: settings.secrets.clone(),
    }
}

/// `--last-failed`: of `tests`, those that did not pass in the project's last run (all of them,
/// saying so, when none failed).
async fn last_failed(settings: &Settings, grid: &Grid, tests: Vec<String>) -> Result<Vec<String>, Error> {
    let specs = test_specs(&settings.root, &tests);
    let planned = grid.plan(&settings.project, specs, true).await?;
    let failed: Vec<String> = planned
        .iter()
        .filter(|p| {
            matches!(
                pb::Outcome::try_from(p.last_outcome),
                Ok(pb::Outcome::Failed | pb::Outcome::TimedOut | pb::Outcome::Error | pb::Outcome::Lost)
            )
        })
        .filter_map(|p| tests.get(p.index as usize).cloned())
        .collect();
    if failed.is_empty() {
        err!(
            "testgrid: --last-failed: no test failed in the last run of {}; running all {}",
            settings.project,
            tests.len()
        );
        return Ok(tests);
    }
    let plural = if failed.len() == 1 { "" } else { "s" };
    err!("testgrid: --last-failed: {} test{plural} that did not pass last time (of {})", failed.len(), tests.len());
    Ok(failed)
}

/// Whether the live view will show an ETA: a terminal that is not `--quiet`.
fn view_wants_eta(settings: &Settings) -> bool {
    let view = View::pick(&settings.output);
    view.mode == Mode::Terminal && !view.quiet
}

/// Each test's estimated duration (ms, by index) from the grid's duration history; none if the
/// grid cannot say (the view then shows no ETA).
async fn estimates(settings: &Settings, grid: &Grid, tests: Vec<pb::TestSpec>) -> Vec<u64> {
    let count = tests.len();
    match grid.plan(&settings.project, tests, true).await {
        Ok(planned) => by_index(&planned, count),
        Err(_) => Vec::new(),
    }
}

/// The estimates of a `Plan` answer (which is in serving order) by test index, for `count` tests.
pub fn by_index(planned: &[pb::PlannedTest], count: usize) -> Vec<u64> {
    let mut estimates = vec![0; count];
    for p in planned {
        if let Some(e) = estimates.get_mut(p.index as usize) {
            *e = p.estimate_ms;
        }
    }
    estimates
}

/// `tests` as a session carries them: each with its file's size.
pub fn test_specs(root: &std::path::Path, tests: &[String]) -> Vec<pb::TestSpec> {
    tests.iter().map(|p| pb::TestSpec { path: p.clone(), size_bytes: test_file_size(root, p) }).collect()
}

/// The size of the file a test unit is in (`file::case`, a vitest project's `name|file`), 0 when
/// it is no file (a Rust test's name): estimates a test the duration history has not seen.
pub fn test_file_size(root: &std::path::Path, unit: &str) -> u64 {
    let (_, file) = testgrid_proto::js::split_project(unit);
    let file = file.split("::").next().unwrap_or(file);
    crate::discover::files::file_size(&root.join(file))
}

/// Submit `spec`, sending the workspace again when the grid lost it between the upload and the
/// session (a coordinator restarted without its data, a collection that came first).
async fn submit(
    settings: &Settings,
    grid: &Grid,
    mut spec: pb::SessionSpec,
    id: Option<&str>,
) -> Result<String, Error> {
    let mut resent = 0;
    loop {
        match grid.submit(spec.clone(), id).await {
            Err(Error::WorkspaceGone { message, .. }) if spec.workspace.is_some() && resent < 2 => {
                resent += 1;
                tracing::warn!("the grid lost the uploaded workspace ({message}); sending it again");
                spec.workspace = Some(send_workspace(settings, grid).await?);
            }
            submitted => return submitted,
        }
    }
}

/// Build the workspace's tree and send the grid the blobs it lacks: the session's workspace.
async fn send_workspace(settings: &Settings, grid: &Grid) -> Result<pb::Digest, Error> {
    let (root, limits) = (settings.root.clone(), settings.bundle_limits);
    let index = crate::bundle::index::path_for(&root);
    // The artifacts tests send back land in the workspace by default: they never travel.
    let cwd = &settings.cwd;
    let artifacts =
        settings.output.artifacts_dir.as_ref().map_or_else(|| cwd.join("testgrid-artifacts"), |d| cwd.join(d));
    let leave_out = vec![artifacts.canonicalize().unwrap_or(artifacts)];
    let progress = Arc::new(crate::bundle::Progress::default());
    let shown = show_progress(settings, Arc::clone(&progress));
    let building = Arc::clone(&progress);
    let keys = settings.setup.as_ref().map(|s| s.key_files.clone()).unwrap_or_default();
    let bundle = tokio::task::spawn_blocking(move || {
        crate::bundle::build(&root, &limits, index.as_deref(), leave_out, &keys, &building)
    })
    .await
    // Building does not panic; if it did, this CLI goes down the same way.
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    let sent = match bundle {
        Ok(bundle) => grid.upload(&bundle, &progress).await.map(|sent| (bundle, sent)),
        Err(e) => Err(e),
    };
    if let Some(shown) = shown {
        shown.abort();
        // The progress line goes; the summary of what was sent follows.
        eprint!("\r\x1b[2K");
    }
    let (bundle, sent) = sent?;
    for key in &bundle.left_out {
        err!(
            "testgrid: warning: --setup-key {key} is not sent with the workspace (git or .testgridignore ignores it): \
             workers cannot see it change, so a changed one does not run the setup again"
        );
    }
    let stats = &bundle.stats;
    if settings.output.json {
        crate::json::set_workspace(serde_json::json!({
                "root": bundle.root.hash,
                "files": stats.files,
                "bytes": stats.bytes,
                "directories": stats.directories,
                "hashed_files": stats.hashed,
                "hashed_bytes": stats.hashed_bytes,
                "build_ms": stats.millis,
                "blobs": sent.blobs,
                "missing_blobs": sent.missing,
                "uploaded_bytes": sent.bytes,
                "upload_ms": sent.millis,
        }));
    } else if !settings.output.quiet {
        err!(
            "testgrid: workspace of {} files ({}) sent: {} of {} blobs were new ({}) in {:.1} s",
            stats.files,
            testgrid_proto::human_bytes(stats.bytes),
            sent.missing,
            sent.blobs,
            testgrid_proto::human_bytes(sent.bytes),
            (stats.millis + sent.millis) as f64 / 1000.0
        );
    }
    Ok(bundle.root)
}

/// On a terminal, a line that says how far hashing and uploading the workspace has gone, drawn
/// once it takes longer than a moment; the task to abort when it is done.
fn show_progress(settings: &Settings, progress: Arc<crate::bundle::Progress>) -> Option<tokio::task::JoinHandle<()>> {
    use std::io::IsTerminal;
    use std::sync::atomic::Ordering::Relaxed;
    if settings.output.json || settings.output.quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    Some(tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut sending: Option<std::time::Instant> = None;
        let mut every = tokio::time::interval(Duration::from_millis(100));
        loop {
            every.tick().await;
            let (to_send, sent) = (progress.to_send.load(Relaxed), progress.sent.load(Relaxed));
            let line = if to_send == 0 {
                format!(
                    "workspace: {} files, {} (hashed {})",
                    progress.files.load(Relaxed),
                    testgrid_proto::human_bytes(progress.bytes.load(Relaxed)),
                    testgrid_proto::human_bytes(progress.hashed_bytes.load(Relaxed)),
                )
            } else {
                let since = *sending.get_or_insert_with(std::time::Instant::now);
                let rate = sent as f64 / since.elapsed().as_secs_f64().max(0.001);
                format!(
                    "workspace: sending {} of {} ({}/s)",
                    testgrid_proto::human_bytes(sent),
                    testgrid_proto::human_bytes(to_send),
                    testgrid_proto::human_bytes(rate as u64)
                )
            };
            eprint!("\r\x1b[2K{line}");
        }
    }))
}

/// `--detach`: say how to follow the session, and leave it running.
fn detached(session: &str, tests: usize, json: bool) -> u8 {
    if json {
        out!("{}", serde_json::json!({ "session": session, "tests": tests }));
    } else {
        out!("{session}");
        err!("session {session} submitted: {tests} tests; follow it with `testgrid watch {session}`");
    }
    exit::PASSED
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

/// `user@host: paths`, as `testgrid sessions` lists it (the paths cut short: a grid takes
/// names of up to 1 KiB).
fn session_name(paths: &[PathBuf]) -> String {
    /// The most characters of paths in a name.
    const MAX_WHAT: usize = 200;
    let user = std::env::var("USER").unwrap_or_else(|_| "someone".into());
    let host = testgrid_worker::default_name();
    let mut what = String::new();
    for (i, path) in paths.iter().enumerate() {
        let path = path.display().to_string();
        if what.chars().count() + path.chars().count() > MAX_WHAT {
            what = if what.is_empty() {
                format!("{} paths", paths.len())
            } else {
                format!("{what} and {} more", paths.len() - i)
            };
            break;
        }
        if !what.is_empty() {
            what.push(' ');
        }
        what.push_str(&path);
    }
    if what.is_empty() {
        what.push('.');
    }
    let mut name = String::new();
    for c in format!("{user}@{host}: {what}").chars().filter(|c| !c.is_control()) {
        if name.len() + c.len_utf8() > 1000 {
            break;
        }
        name.push(c);
    }
    name
}

/// A duration in whole milliseconds for the protocol, where anything non-zero stays non-zero
/// (0 means "none").
fn millis(d: Duration) -> u64 {
    if d.is_zero() { 0 } else { (d.as_millis() as u64).max(1) }
}
