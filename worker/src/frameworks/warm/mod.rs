//! Warm runners: one long-lived framework process (pytest, vitest, jest) per slot and session,
//! fed test files on demand over a private Unix socket (never the tests' stdout), reporting
//! per-case results.
//!
//! Starting Python or Node and loading the framework and the project under test costs far more
//! than most test files take to run; a warm runner pays it once per slot. The runners are
//! shipped inside this binary (`worker/src/runners/`: `testgrid_pytest.py`, `testgrid_vitest.mjs`,
//! `testgrid_jest.cjs`); they speak one line protocol ([`protocol`], docs/runners.md).
//!
//! A runner that dies mid-file fails the test it was running ("runner crashed") and is replaced
//! for the next file; after [`MAX_CRASHES`] crashes in a session every file gets a runner of its
//! own (no runner is reused). A timeout or cancel kills the runner's process group. A vitest
//! runner is handed its slot's next file while one runs ([`Kind::pipelines`]), and on vitest 4
//! and later one runner serves every slot of its session on the worker (its pool runs a file
//! per busy slot, as `vitest run` does: one vite server transforms each module once). A file
//! that had not begun in a runner that is killed or dies, or that ran beside the file it was
//! killed for, runs again, charged to nobody; a crash with several files running charges none
//! of them: each runs again, the second time on a runner of its own, so only the culprit fails.
//!
//! This file decides which runner serves a job and turns its messages into the unit's report;
//! [`runner`] owns the process, [`kind`] what differs per framework. It must not know other
//! frameworks.

pub mod coverage;
pub mod kind;
pub mod protocol;
pub mod runner;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use testgrid_proto as pb;
use testgrid_proto::frameworks::{Isolation, Options};
use testgrid_proto::js::split_project;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Recycle;
use crate::exec::report::{self, Unit, unit_report};
use crate::exec::{Settings, lock};
use crate::job::{Executor, Job};
use kind::Kind;
use protocol::FromRunner;
use runner::{Ended, Event, Handle};

/// Crashes of a session's runners on this worker before each of its files gets a fresh runner.
pub const MAX_CRASHES: u32 = 5;

/// A runner idle this long is stopped: its session has most likely ended, and it holds an
/// interpreter's memory.
const IDLE_LIMIT: Duration = Duration::from_secs(60);

/// How many of a session's files a pipelining runner is handed at once (see [`Kind::pipelines`]).
const PIPELINE_DEPTH: usize = 2;

/// A lane's runner, behind a lock held while one is started (so that two jobs of a lane never
/// start two).
type LaneRunner = Arc<tokio::sync::Mutex<Option<Handle>>>;

/// Which runner a job goes to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Lane {
    /// The slot's own runner.
    Slot(u32),
    /// The runner of every slot of the session on this worker (a runner that shares).
    Shared(String),
}

/// Warm runners, one per slot, or one per session for a framework whose runner shares.
pub struct WarmExecutor {
    pub settings: Settings,
    /// The Python to run when the session names none.
    pub python: String,
    /// The Node to run.
    pub node: String,
    pub recycle: Recycle,
    /// See [`crate::Config::coverage_dir`].
    pub coverage_dir: Option<PathBuf>,
    runners: Mutex<HashMap<Lane, LaneRunner>>,
    /// Every runner not yet gone (closed ones finishing too), for [`Executor::shutdown`].
    live: Mutex<Vec<Handle>>,
    crashes: Mutex<HashMap<String, u32>>,
    /// Sessions whose shared runner said it does not share (vitest 3): a runner per slot.
    solo: Mutex<HashSet<String>>,
}

/// How a unit's run on one runner ended.
enum Attempt {
    Report(pb::TestReport),
    /// The runner went away before the unit began (killed for another unit, or closed): run it
    /// again on a fresh runner, charging nobody.
    Again,
}

impl WarmExecutor {
    pub fn new(
        settings: Settings,
        python: String,
        node: String,
        recycle: Recycle,
        coverage_dir: Option<PathBuf>,
    ) -> Self {
        WarmExecutor {
            settings,
            python,
            node,
            recycle,
            coverage_dir,
            runners: Mutex::new(HashMap::new()),
            live: Mutex::new(Vec::new()),
            crashes: Mutex::new(HashMap::new()),
            solo: Mutex::new(HashSet::new()),
        }
    }

    fn crashes(&self, session: &str) -> u32 {
        lock(&self.crashes).get(session).copied().unwrap_or(0)
    }

    /// Whether `job` gets a runner of its own, retired right after it: `--isolation file|test`,
    /// or a session whose runners crashed too often on this worker (restarts are capped).
    fn fresh(&self, job: &Job) -> bool {
        job.runner.isolation != Isolation::Warm || self.crashes(&job.assignment.session_id) >= MAX_CRASHES
    }

    /// The program a runner of `kind` starts with.
    fn program(&self, kind: Kind, job: &Job) -> String {
        match (kind, &job.runner.options) {
            (Kind::Pytest, Options::Pytest { python: Some(python), .. }) => python.clone(),
            (Kind::Pytest, _) => self.python.clone(),
            (Kind::Vitest | Kind::Jest, _) => self.node.clone(),
        }
    }

    /// The lane `job` goes to in `slot`.
    fn lane(&self, kind: Kind, slot: u32, job: &Job, fresh: bool) -> Lane {
        let session = &job.assignment.session_id;
        if kind.shares() && !fresh && !lock(&self.solo).contains(session) {
            Lane::Shared(session.clone())
        } else {
            Lane::Slot(slot)
        }
    }

    /// A runner of `kind` for `job` in `slot`: its lane's own if it serves the session, else a
    /// new one (the lane's old runner retires once it is done). `Err` is the report of a runner
    /// that could not start, or of a cancel while waiting for it.
    async fn runner_for(
        &self,
        kind: Kind,
        slot: u32,
        job: &Job,
        fresh: bool,
        cancel: &CancellationToken,
    ) -> Result<Handle, pb::TestReport> {
        let started = Instant::now();
        let lane = self.lane(kind, slot, job, fresh);
        let cell = {
            let mut runners = lock(&self.runners);
            if let Lane::Shared(session) = &lane
                && !runners.contains_key(&lane)
            {
                // Other sessions' shared lanes whose runner is gone are of no more use: a
                // long-lived worker keeps no lane per past session.
                runners.retain(|other, cell| match other {
                    Lane::Shared(s) if s != session => {
                        cell.try_lock().map_or(true, |current| current.as_ref().is_some_and(Handle::is_running))
                    }
                    _ => true,
                });
            }
            Arc::clone(runners.entry(lane.clone()).or_default())
        };
        let mut current = tokio::select! {
            current = cell.lock() => current,
            () = cancel.cancelled() => return Err(report::simple(pb::Outcome::Cancelled, "cancelled", started)),
        };
        if !fresh
            && let Some(handle) = current.as_ref()
            && handle.is_alive()
            && handle.session == job.assignment.session_id
            && handle.kind == kind
        {
            return Ok(handle.clone());
        }
        // Another session's runner, or one that must not be reused: it finishes what it was
        // asked (its session hooks too) and retires.
        if let Some(old) = current.take() {
            old.close();
        }
        if matches!(lane, Lane::Shared(_)) {
            // The slot's own runner (another session's) is done with, as when a slot's runner
            // makes way for another session's.
            self.close_slot_runner(slot);
        }
        let program = self.program(kind, job);
        // A runner that is slow to start (a conftest that sleeps) must not hold up a cancel. Its
        // start has its own limit; the test's timeout starts after it.
        let runner = tokio::select! {
            result = runner::start(kind, &program, job, slot, self.settings.die_with_worker, self.coverage_dir.as_deref()) => result,
            () = cancel.cancelled() => return Err(report::simple(pb::Outcome::Cancelled, "cancelled", started)),
        };
        match runner {
            Ok(runner) => {
                info!(slot, session = %job.assignment.session_id, "{} runner started", kind.name());
                let handle = Handle::serve(runner, self.settings.kill_grace, IDLE_LIMIT);
                {
                    let mut live = lock(&self.live);
                    live.retain(Handle::is_running);
                    live.push(handle.clone());
                }
                if matches!(lane, Lane::Shared(_)) && !handle.shares {
                    // It cannot serve several slots (vitest 3): it becomes this slot's runner, and
                    // the session's other slots start their own. (Lanes are locked one at a time
                    // everywhere else, so holding the shared lane here cannot deadlock.)
                    {
                        let mut solo = lock(&self.solo);
                        // Old sessions' marks are of no use: keep the set small on a long-lived worker.
                        if solo.len() >= 256 {
                            solo.clear();
                        }
                        solo.insert(job.assignment.session_id.clone());
                    }
                    let own = Arc::clone(lock(&self.runners).entry(Lane::Slot(slot)).or_default());
                    if let Some(old) = own.lock().await.replace(handle.clone()) {
                        old.close();
                    }
                } else if !fresh {
                    *current = Some(handle.clone());
                }
                Ok(handle)
            }
            Err(text) => {
                // The first line says what happened; the runner's last words go in the output.
                let (message, output) = text.split_once('\n').unwrap_or((&text, ""));
                let mut report = report::simple(pb::Outcome::Error, message.trim_end_matches(':'), started);
                report.output = output.as_bytes().to_vec();
                Err(report)
            }
        }
    }

    /// Close the runner of `slot`'s own lane, if any: it finishes what it was asked and retires.
    fn close_slot_runner(&self, slot: u32) {
        let cell = lock(&self.runners).get(&Lane::Slot(slot)).cloned();
        // A lane locked now is starting a runner for a job of this slot: it is left alone.
        if let Some(cell) = cell
            && let Ok(mut current) = cell.try_lock()
            && let Some(old) = current.take()
        {
            old.close();
        }
    }

    async fn run_warm(&self, kind: Kind, slot: u32, job: &Job, cancel: CancellationToken) -> pb::TestReport {
        let started = Instant::now();
        // A unit whose runner went away before it began runs again on the slot's next runner; if
        // that one goes away too, on a runner of its own.
        let mut fresh = self.fresh(job);
        for attempt in 0..3 {
            let runner = match self.runner_for(kind, slot, job, fresh, &cancel).await {
                Ok(runner) => runner,
                Err(report) => return report,
            };
            match self.run_on(&runner, kind, slot, job, fresh, &cancel, started).await {
                Attempt::Report(report) => return report,
                Attempt::Again => fresh = fresh || attempt >= 1,
            }
        }
        report::simple(
            pb::Outcome::Error,
            format!("the {} runner kept going away before this file began", kind.name()),
            started,
        )
    }

    /// Run `job` on `runner`, until its report, or until the runner goes away before it began.
    #[allow(clippy::too_many_arguments)]
    async fn run_on(
        &self,
        runner: &Handle,
        kind: Kind,
        slot: u32,
        job: &Job,
        fresh: bool,
        cancel: &CancellationToken,
        started: Instant,
    ) -> Attempt {
        // A runner works in its project's folder: paths there are relative to it.
        let prefix = match job.runner.project_dir() {
            "." | "" => String::new(),
            dir => format!("{}/", dir.trim_end_matches('/')),
        };
        // vitest's `|PROJECT| FILE` keeps its project in front.
        let (project, file) = split_project(&job.path);
        let path = format!("{project}{}", file.strip_prefix(&prefix).unwrap_or(file));
        let named = |id: String| {
            if prefix.is_empty() {
                return id;
            }
            let (project, rest) = split_project(&id);
            format!("{project}{prefix}{rest}")
        };
        let mut acc = Unit::new(kind.classname(&job.path));
        acc.keep_passing = job.runner.keep_passing_output;
        let Some((unit, mut events)) = runner.run(&path, slot) else { return Attempt::Again };
        // A runner that queues files says when each begins; for the others it begins now. The
        // timeout and the file's duration count from there (not from its wait in the queue).
        let mut began: Option<Instant> = (!kind.pipelines()).then(Instant::now);
        let limit = humantime::format_duration(job.timeout.unwrap_or_default()).to_string();
        loop {
            let timeout = async {
                match (job.timeout, began) {
                    (Some(t), Some(began)) => tokio::time::sleep_until((began + t).into()).await,
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                event = events.recv() => match event {
                    Some(Event::Message(message)) => match message {
                        FromRunner::Begin => began = began.or_else(|| Some(Instant::now())),
                        FromRunner::Collected { tests, deselected } => {
                            acc.collected = tests.into_iter().map(named).collect();
                            acc.deselected = deselected;
                        }
                        FromRunner::Started { test } => acc.current = Some(named(test)),
                        FromRunner::Case(case) => {
                            acc.current = None;
                            acc.add(named(case.test), case.outcome, case.duration_ms, case.message, &case.output);
                        }
                        FromRunner::Done { error } => {
                            self.after_file(runner, slot, fresh);
                            acc.not_run(pb::Outcome::Skipped, kind.stopped_early());
                            let deselected = acc.deselected;
                            let report = unit_report(acc.cases, error, began.unwrap_or(started), self.settings.output_limit);
                            return Attempt::Report(report::with_deselected(report, deselected));
                        }
                        FromRunner::Ready { .. } | FromRunner::Listed(_) => {}
                    },
                    // Killed for another file, gone before this one began (it crashed on the file
                    // before it), or crashed while other files ran beside this one: nothing is
                    // charged to it; it runs again from the start (its cases so far dropped).
                    Some(Event::Ended(ended)) if ended.killed || began.is_none() || ended.begun > 1 => {
                        return Attempt::Again;
                    }
                    Some(Event::Ended(ended)) => return Attempt::Report(self.crashed(ended, kind, job, acc, started)),
                    None => return Attempt::Again,
                },
                () = timeout => {
                    runner.kill().await;
                    let message = format!("killed after the {limit} timeout");
                    if let Some(test) = acc.current.take() {
                        acc.add(test, pb::Outcome::TimedOut, 0, message.clone(), "");
                    }
                    acc.not_run(pb::Outcome::Error, &format!("not run: the file was killed after the {limit} timeout"));
                    let mut report = unit_report(acc.cases, None, began.unwrap_or(started), self.settings.output_limit);
                    report.outcome = pb::Outcome::TimedOut as i32;
                    report.message = message;
                    return Attempt::Report(report);
                }
                () = cancel.cancelled() => {
                    if began.is_some() {
                        runner.kill().await;
                    } else {
                        // Still queued in the runner: the file it runs now goes on.
                        runner.forget(unit);
                    }
                    acc.current = None;
                    // Cases a cancel kept from running read as errors in the report, as before
                    // typed outcomes (the runner protocol never named `cancelled`).
                    acc.not_run(pb::Outcome::Error, "cancelled");
                    let mut report = unit_report(acc.cases, None, began.unwrap_or(started), self.settings.output_limit);
                    report.outcome = pb::Outcome::Cancelled as i32;
                    report.message = "cancelled".into();
                    return Attempt::Report(report);
                }
            }
        }
    }

    /// A file is done: keep the runner for the slot's next file, or recycle or retire it.
    fn after_file(&self, runner: &Handle, slot: u32, fresh: bool) {
        if fresh {
            runner.close();
        } else if runner.asked() >= self.recycle.after_files || runner.rss_bytes() > self.recycle.rss_bytes {
            info!(slot, files = runner.asked(), "recycling the {} runner", runner.kind.name());
            // The slot's next job starts a new runner; this one finishes what it was asked.
            runner.close();
        }
    }

    /// The runner died mid-file: the test it ran fails with the runner's last words.
    fn crashed(&self, ended: Ended, kind: Kind, job: &Job, mut acc: Unit, started: Instant) -> pb::TestReport {
        let exit = ended.exit;
        let how = exit.map_or_else(|| "no exit status".to_string(), |exit| exit.brief());
        let tail = ended.log;
        let message = if ended.killed {
            format!("the {} runner was stopped before this file ended", kind.name())
        } else {
            format!("the {} runner crashed ({how})", kind.name())
        };
        if !ended.killed {
            let mut crashes = lock(&self.crashes);
            // Old sessions' counts are of no use: keep the map small on a long-lived worker.
            if crashes.len() >= 256 && !crashes.contains_key(&job.assignment.session_id) {
                crashes.clear();
            }
            *crashes.entry(job.assignment.session_id.clone()).or_default() += 1;
        }
        warn!(session = %job.assignment.session_id, test = %job.path, "{message}");
        if let Some(test) = acc.current.take() {
            acc.add(test, pb::Outcome::Failed, 0, message.clone(), &tail);
        }
        acc.not_run(pb::Outcome::Error, &format!("not run: {message} before it"));
        let mut report = unit_report(acc.cases, None, started, self.settings.output_limit);
        report.outcome = pb::Outcome::Failed as i32;
        report.message = message;
        match exit {
            Some(crate::exec::exit::Exit::Code(code)) => report.exit_code = Some(code),
            Some(crate::exec::exit::Exit::Signal(signal)) => report.signal = Some(signal),
            None => {}
        }
        if report.output.is_empty() {
            report.output = tail.into_bytes();
        }
        report
    }
}

impl Executor for WarmExecutor {
    async fn prestart(&self, job: &Job, cancel: &CancellationToken) {
        let Some(kind) = Kind::of(job.runner.framework) else { return };
        if self.fresh(job) {
            return;
        }
        // Slot 0's lane: a runner that shares serves every slot from there, one that does not
        // becomes slot 0's.
        match self.runner_for(kind, 0, job, false, cancel).await {
            Ok(_) => info!(session = %job.assignment.session_id, "{} runner started ahead of the session", kind.name()),
            Err(report) => {
                warn!(session = %job.assignment.session_id, "{} runner did not start ahead: {}", kind.name(), report.message)
            }
        }
    }

    async fn run(&self, slot: u32, job: &Job, cancel: CancellationToken) -> pb::TestReport {
        let Some(kind) = Kind::of(job.runner.framework) else {
            let message = format!("internal: {} has no warm runner", job.runner.framework.name());
            return report::simple(pb::Outcome::Error, message, Instant::now());
        };
        self.run_warm(kind, slot, job, cancel).await
    }

    fn depth(&self, job: &Job) -> usize {
        match Kind::of(job.runner.framework) {
            Some(kind) if kind.pipelines() && !self.fresh(job) => PIPELINE_DEPTH,
            _ => 1,
        }
    }

    async fn end_session(&self, session: &str) {
        // The session's runners finish it (session hooks, reports, coverage) and go.
        let ending: Vec<Handle> = lock(&self.live).iter().filter(|h| h.session == session).cloned().collect();
        for handle in &ending {
            handle.close();
        }
        for handle in &ending {
            handle.gone().await;
        }
    }

    async fn shutdown(&self) {
        // Each runner finishes its session (session hooks, reports, coverage) before it goes.
        let live: Vec<Handle> = std::mem::take(&mut *lock(&self.live));
        lock(&self.runners).clear();
        for handle in &live {
            handle.close();
        }
        for handle in &live {
            handle.gone().await;
        }
    }
}
