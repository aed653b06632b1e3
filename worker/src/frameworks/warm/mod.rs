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
//! own (no runner is reused). A timeout or cancel kills the runner's process group.
//!
//! This file decides which runner serves a job and turns its messages into the unit's report;
//! [`runner`] owns the process, [`kind`] what differs per framework. It must not know other
//! frameworks.

pub mod kind;
pub mod protocol;
pub mod runner;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use testgrid_proto as pb;
use testgrid_proto::frameworks::{Isolation, Options};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Recycle;
use crate::exec::report::{self, Unit, unit_report};
use crate::exec::{Settings, lock};
use crate::job::{Executor, Job};
use kind::Kind;
use protocol::FromRunner;
use runner::{Runner, retire};

/// Crashes of a session's runners on this worker before each of its files gets a fresh runner.
pub const MAX_CRASHES: u32 = 5;

/// A runner idle this long is stopped: its session has most likely ended, and it holds an
/// interpreter's memory.
const IDLE_LIMIT: Duration = Duration::from_secs(60);

/// Warm runners, one per slot.
pub struct WarmExecutor {
    pub settings: Settings,
    /// The Python to run when the session names none.
    pub python: String,
    /// The Node to run.
    pub node: String,
    pub recycle: Recycle,
    runners: Arc<Mutex<HashMap<u32, Runner>>>,
    crashes: Mutex<HashMap<String, u32>>,
    reaper: std::sync::Once,
}

impl WarmExecutor {
    pub fn new(settings: Settings, python: String, node: String, recycle: Recycle) -> Self {
        WarmExecutor {
            settings,
            python,
            node,
            recycle,
            runners: Arc::new(Mutex::new(HashMap::new())),
            crashes: Mutex::new(HashMap::new()),
            reaper: std::sync::Once::new(),
        }
    }

    /// Start (once) the task that stops idle runners. Needs a runtime, hence not in `new`.
    fn start_reaper(&self) {
        self.reaper.call_once(|| {
            let runners = Arc::downgrade(&self.runners);
            let grace = self.settings.kill_grace;
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(IDLE_LIMIT / 4).await;
                    let Some(runners) = runners.upgrade() else { return };
                    let idle: Vec<Runner> = {
                        let mut map = lock(&runners);
                        let slots: Vec<u32> =
                            map.iter().filter(|(_, r)| r.idle_since.elapsed() >= IDLE_LIMIT).map(|(s, _)| *s).collect();
                        slots.into_iter().filter_map(|s| map.remove(&s)).collect()
                    };
                    for runner in idle {
                        retire(runner, grace).await;
                    }
                }
            });
        });
    }

    fn crashes(&self, session: &str) -> u32 {
        lock(&self.crashes).get(session).copied().unwrap_or(0)
    }

    /// The program a runner of `kind` starts with.
    fn program(&self, kind: Kind, job: &Job) -> String {
        match (kind, &job.runner.options) {
            (Kind::Pytest, Options::Pytest { python: Some(python), .. }) => python.clone(),
            (Kind::Pytest, _) => self.python.clone(),
            (Kind::Vitest | Kind::Jest, _) => self.node.clone(),
        }
    }

    async fn run_warm(&self, kind: Kind, slot: u32, job: &Job, cancel: CancellationToken) -> pb::TestReport {
        self.start_reaper();
        let started = Instant::now();
        let grace = self.settings.kill_grace;
        // `--isolation file|test`: a fresh runner for every unit, retired right after it. So too
        // once a session's runners have crashed too often on this worker: restarts are capped.
        let fresh = job.runner.isolation != Isolation::Warm || self.crashes(&job.assignment.session_id) >= MAX_CRASHES;
        let existing = lock(&self.runners).remove(&slot);
        let existing = match existing {
            Some(runner) if runner.session == job.assignment.session_id && runner.kind == kind && !fresh => {
                Some(runner)
            }
            Some(other) => {
                // Another session's runner: let it finish its session hooks in the background.
                tokio::spawn(retire(other, grace));
                None
            }
            None => None,
        };
        let program = self.program(kind, job);
        let mut runner = match existing {
            Some(runner) => runner,
            // A runner that is slow to start (a conftest that sleeps) must not hold up a cancel.
            // Its start has its own limit; the test's timeout starts after it.
            None => match tokio::select! {
                result = runner::start(kind, &program, job, slot, self.settings.die_with_worker) => result,
                () = cancel.cancelled() => return report::simple(pb::Outcome::Cancelled, "cancelled", started),
            } {
                Ok(runner) => {
                    info!(slot, session = %job.assignment.session_id, "{} runner started", kind.name());
                    runner
                }
                Err(text) => {
                    // The first line says what happened; the runner's last words go in the output.
                    let (message, output) = text.split_once('\n').unwrap_or((&text, ""));
                    let mut report = report::simple(pb::Outcome::Error, message.trim_end_matches(':'), started);
                    report.output = output.as_bytes().to_vec();
                    return report;
                }
            },
        };
        let ready = Instant::now();
        // Crash diagnostics should show this file's last words, not an earlier file's.
        runner.clear_log();
        let unit = runner.next_unit;
        runner.next_unit += 1;
        // A runner works in its project's folder: paths there are relative to it.
        let prefix = match job.runner.project_dir() {
            "." | "" => String::new(),
            dir => format!("{}/", dir.trim_end_matches('/')),
        };
        let path = job.path.strip_prefix(&prefix).unwrap_or(&job.path);
        let named = |id: String| if prefix.is_empty() { id } else { format!("{prefix}{id}") };
        let mut acc = Unit::new(kind.classname(&job.path));
        if runner.send(protocol::run_request(unit, path).as_bytes()).await.is_err() {
            return self.crashed(runner, job, acc, started).await;
        }
        let limit = humantime::format_duration(job.timeout.unwrap_or_default()).to_string();
        let timeout = async {
            match job.timeout {
                Some(t) => tokio::time::sleep_until((ready + t).into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(timeout);
        loop {
            tokio::select! {
                line = runner.next_line() => {
                    let Ok(Some(line)) = line else {
                        return self.crashed(runner, job, acc, started).await;
                    };
                    match protocol::parse(&line) {
                        Ok(FromRunner::Collected { tests }) => acc.collected = tests.into_iter().map(named).collect(),
                        Ok(FromRunner::Started { test }) => acc.current = Some(named(test)),
                        Ok(FromRunner::Case(case)) => {
                            acc.current = None;
                            acc.add(named(case.test), case.outcome, case.duration_ms, case.message, &case.output);
                        }
                        Ok(FromRunner::Done { error }) => {
                            self.after_file(runner, slot, fresh);
                            acc.not_run(pb::Outcome::Skipped, kind.stopped_early());
                            return unit_report(acc.cases, error, started, self.settings.output_limit);
                        }
                        Ok(FromRunner::Ready) => {}
                        Err(e) => warn!("ignoring a line the {} runner sent: {e}", kind.name()),
                    }
                }
                () = &mut timeout => {
                    runner.stop(grace).await;
                    let message = format!("killed after the {limit} timeout");
                    if let Some(test) = acc.current.take() {
                        acc.add(test, pb::Outcome::TimedOut, 0, message.clone(), "");
                    }
                    acc.not_run(pb::Outcome::Error, &format!("not run: the file was killed after the {limit} timeout"));
                    let mut report = unit_report(acc.cases, None, started, self.settings.output_limit);
                    report.outcome = pb::Outcome::TimedOut as i32;
                    report.message = message;
                    return report;
                }
                () = cancel.cancelled() => {
                    runner.stop(grace).await;
                    acc.current = None;
                    // Cases a cancel kept from running read as errors in the report, as before
                    // typed outcomes (the runner protocol never named `cancelled`).
                    acc.not_run(pb::Outcome::Error, "cancelled");
                    let mut report = unit_report(acc.cases, None, started, self.settings.output_limit);
                    report.outcome = pb::Outcome::Cancelled as i32;
                    report.message = "cancelled".into();
                    return report;
                }
            }
        }
    }

    /// A file is done: keep the runner for the slot's next file, or recycle or retire it.
    fn after_file(&self, mut runner: Runner, slot: u32, fresh: bool) {
        let grace = self.settings.kill_grace;
        if fresh {
            tokio::spawn(retire(runner, grace));
        } else if runner.next_unit >= self.recycle.after_files || runner.rss_bytes() > self.recycle.rss_bytes {
            info!(slot, files = runner.next_unit, "recycling the {} runner", runner.kind.name());
            tokio::spawn(retire(runner, grace));
        } else {
            runner.idle_since = Instant::now();
            lock(&self.runners).insert(slot, runner);
        }
    }

    /// The runner died mid-file: the test it ran fails with the runner's last words.
    async fn crashed(&self, mut runner: Runner, job: &Job, mut acc: Unit, started: Instant) -> pb::TestReport {
        let exit = runner.exit().await;
        let how = exit.map_or_else(|| "no exit status".to_string(), |exit| exit.brief());
        let tail = runner.take_log();
        let message = format!("the {} runner crashed ({how})", runner.kind.name());
        {
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
        drop(runner);
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
    async fn run(&self, slot: u32, job: &Job, cancel: CancellationToken) -> pb::TestReport {
        let Some(kind) = Kind::of(job.runner.framework) else {
            let message = format!("internal: {} has no warm runner", job.runner.framework.name());
            return report::simple(pb::Outcome::Error, message, Instant::now());
        };
        self.run_warm(kind, slot, job, cancel).await
    }
}
