//! The scheduling core: a pure state machine.
//!
//! `Scheduler::handle(now, input)` turns one [`Input`] into state changes and a list of
//! [`Action`]s for the caller to perform. No tokio, no clocks, no sockets: time is an input, ids
//! are chosen by the caller, so any sequence of inputs can be replayed and property-tested.
//!
//! Rules it owns:
//! - every test of a session ends with exactly one outcome (one final `TestFinished` event);
//! - a worker never holds more assignments than `slots * (1 + prefetch)`;
//! - a result counts only for the test's live attempt on the worker that holds it;
//! - a lost worker's tests are requeued at the front with a new attempt, or end `lost` after
//!   `max_worker_losses` losses;
//! - how much of a test's output the event log keeps (the session's output budget);
//! - when a finished session is forgotten (`Action::Forget`);
//! - the order a session's queue is served in (from its tests' estimates), sessions' weighted
//!   fair share of slots, `--max-fail`;
//! - after a restart, which claims of reconnecting workers are adopted.
//!
//! The rules are split by concern: [`dispatch`](self::dispatch) (who runs what next),
//! [`loss`](self::loss) (a lost worker's tests), [`session`](self::session) (one session's
//! tests, outcomes and output budget), [`plan`](self::plan) (estimates and order),
//! [`restore`](self::restore) (restart and adoption), [`views`](self::views) (what the service
//! reads).

pub mod demand;
mod dispatch;
mod loss;
mod model;
mod overdue;
pub mod plan;
mod restore;
mod session;
mod speculate;
mod views;

#[cfg(test)]
mod proptests;
#[cfg(test)]
pub(crate) mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

pub use model::*;
pub use session::OutputLimits;
use session::{Session, TestState, requeue};

/// How often workers may hand a test back (shutting down) before it ends `error`: a guard
/// against a broken worker build that refuses everything.
const MAX_HANDBACKS: u32 = 10;

/// Tunables of the scheduler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Extra assignments per slot a worker may hold beyond its running ones, so that a slot that
    /// frees never waits on a round-trip.
    pub prefetch_per_slot: u32,
    /// A worker silent for this long is lost.
    pub liveness_timeout_ms: u64,
    /// How often a test's worker may be lost before the test ends `lost`.
    pub max_worker_losses: u32,
    /// Finished sessions kept for `Get`, `List` and `Watch`; older ones are forgotten.
    pub keep_finished_sessions: usize,
    /// A finished session is forgotten this long after it finished, however few there are.
    pub keep_finished_for_ms: u64,
    /// How much test output the event logs keep.
    pub output: OutputLimits,
    /// A test running past its timeout plus this, unreported, ends `timed_out` on its worker.
    pub overrun_grace_ms: u64,
    /// A test a worker with an idle slot leaves unstarted this long goes back to the queue.
    pub start_within_ms: u64,
}

/// The most `result_discarded` events one session's log records.
const MAX_DISCARDED_EVENTS: u32 = 100;

impl Default for Config {
    fn default() -> Self {
        Config {
            prefetch_per_slot: 1,
            liveness_timeout_ms: 5_000,
            max_worker_losses: 2,
            keep_finished_sessions: 1_000,
            keep_finished_for_ms: 7 * 24 * 3600 * 1000,
            output: OutputLimits::default(),
            overrun_grace_ms: overdue::RUN_GRACE_MS,
            start_within_ms: overdue::START_WITHIN_MS,
        }
    }
}

struct Worker {
    spec: WorkerSpec,
    /// Assignments it holds, with the order they were handed out (its queue is first in, first
    /// out), so that a loss can tell which ones may have been running.
    held: BTreeMap<AssignmentKey, u64>,
    last_seen: Millis,
    connected_at: Millis,
    draining: bool,
    /// Claims it made on joining that were refused: it was told to cancel them, and the report
    /// of that cancel says nothing anyone needs.
    void: BTreeSet<AssignmentKey>,
}

impl Worker {
    fn capacity(&self, prefetch_per_slot: u32) -> usize {
        (self.spec.slots as usize).saturating_mul(1 + prefetch_per_slot as usize)
    }
}

/// The scheduler's whole state.
pub struct Scheduler {
    config: Config,
    sessions: HashMap<SessionId, Session>,
    /// Unfinished sessions in submission order (fair share breaks ties by it).
    active: Vec<SessionId>,
    /// All sessions in submission order (for listing).
    order: Vec<SessionId>,
    workers: BTreeMap<WorkerId, Worker>,
    /// Counts assignments handed out, to order each worker's held ones.
    next_seq: u64,
    /// The workers with room for more (not draining, under capacity): the only ones dispatch
    /// looks at.
    hungry: BTreeSet<WorkerId>,
    /// When the last `Tick` came: a long gap means the coordinator itself stalled.
    last_tick: Option<Millis>,
    /// After a restart, until when workers may claim the attempts they hold ([`restore`]).
    adopt_until: Option<Millis>,
    /// Sessions were restored unfinished: on the first tick, finish those whose every test had
    /// an outcome already (the coordinator stopped before their `Finished` was kept).
    restored_unfinished: bool,
    /// Workers lost (died, or went silent) since start: a counter for the metrics.
    worker_losses: u64,
}

impl Scheduler {
    pub fn new(config: Config) -> Self {
        Scheduler {
            config,
            sessions: HashMap::new(),
            active: Vec::new(),
            order: Vec::new(),
            workers: BTreeMap::new(),
            next_seq: 0,
            hungry: BTreeSet::new(),
            last_tick: None,
            adopt_until: None,
            restored_unfinished: false,
            worker_losses: 0,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Apply one input; return what must be done because of it.
    pub fn handle(&mut self, now: Millis, input: Input) -> Vec<Action> {
        let mut out = Vec::new();
        match input {
            Input::Submit { id, spec, estimates } => {
                self.submit(now, id, spec, &estimates, &mut out);
                self.dispatch_all(now, &mut out);
            }
            Input::WorkerJoined { id, spec, claims } => {
                let worker = Worker {
                    spec,
                    held: BTreeMap::new(),
                    last_seen: now,
                    connected_at: now,
                    draining: false,
                    void: BTreeSet::new(),
                };
                self.workers.insert(id, worker);
                self.adopt(now, id, claims, &mut out);
                self.note_room(id);
                self.dispatch_all(now, &mut out);
            }
            Input::WorkerLost { id, reason } => {
                self.worker_died(now, id, &reason, &mut out);
                self.dispatch_all(now, &mut out);
            }
            Input::Heartbeat { worker } => {
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.last_seen = now;
                }
            }
            Input::Started { worker, key } => self.started(now, worker, key, &mut out),
            Input::SetupFinished { worker, session, report, reused } => {
                self.setup_finished(now, worker, session, report, reused, &mut out);
            }
            Input::Finished { worker, key, report } => {
                self.finished(now, worker, key, report, &mut out);
                self.note_room(worker);
                self.dispatch_all(now, &mut out);
            }
            Input::Resent { worker, key, report } => {
                self.resent(now, worker, key, report, &mut out);
                self.note_room(worker);
                self.dispatch_all(now, &mut out);
            }
            Input::Cancel { session, reason } => {
                self.cancel(now, session, reason, &mut out);
                self.dispatch_all(now, &mut out);
            }
            Input::Draining { worker } => {
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.draining = true;
                    w.last_seen = now;
                }
                self.note_room(worker);
            }
            Input::WatchStarted { session } => {
                if let Some(s) = self.sessions.get_mut(&session) {
                    s.watchers += 1;
                    s.unwatched_since = None;
                }
            }
            Input::WatchEnded { session } => {
                if let Some(s) = self.sessions.get_mut(&session) {
                    s.watchers = s.watchers.saturating_sub(1);
                    if s.watchers == 0 {
                        s.unwatched_since = Some(now);
                    }
                }
            }
            Input::Tick => {
                self.tick(now, &mut out);
                self.take_back_hoarded(now, &mut out);
                self.dispatch_all(now, &mut out);
                self.speculate(now, &mut out);
                out.extend(self.forget_old_sessions(now).into_iter().map(|session| Action::Forget { session }));
                out.extend(self.keep_total_output().into_iter().map(|session| Action::DropOutput { session }));
            }
        }
        out
    }

    fn submit(
        &mut self,
        now: Millis,
        id: SessionId,
        spec: SessionSpec,
        estimates: &[plan::Estimate],
        out: &mut Vec<Action>,
    ) {
        if self.sessions.contains_key(&id) {
            return;
        }
        // Without an estimate for every test, none is known: largest file first.
        let unknown;
        let estimates = if estimates.len() == spec.tests.len() {
            estimates
        } else {
            unknown =
                vec![plan::Estimate { ms: 0, source: plan::Source::Unknown, failed_last: false }; spec.tests.len()];
            &unknown
        };
        let order = plan::order(estimates, &spec.sizes, spec.keep_order);
        let speculate = spec.speculate;
        let mut session = Session::new(id, Arc::new(spec), now, order, self.config.output);
        if speculate {
            session.estimates = speculate::known_estimates(estimates);
        }
        session.predicted = estimates.iter().map(|e| e.ms).collect();
        out.push(Action::Emit {
            session: id,
            event: Event::Created {
                name: session.spec.name.clone(),
                paths: session.spec.tests.clone(),
                order: session.order.clone(),
                estimates: session.estimates.clone(),
            },
        });
        let empty = session.tests.is_empty();
        self.sessions.insert(id, session);
        self.order.push(id);
        self.active.push(id);
        if empty {
            self.finish_session_if_done(now, id, out);
        }
    }

    fn started(&mut self, now: Millis, worker: WorkerId, key: AssignmentKey, out: &mut Vec<Action>) {
        let Some(w) = self.workers.get_mut(&worker) else { return };
        w.last_seen = now;
        if !w.held.contains_key(&key) {
            return;
        }
        let name = w.spec.name.clone();
        let Some(session) = self.sessions.get_mut(&key.session) else { return };
        let Some(test) = session.tests.get_mut(key.test as usize) else { return };
        if let TestState::Assigned { worker: holder, started } = &mut test.state
            && *holder == worker
            && test.attempt == key.attempt
            && !*started
        {
            *started = true;
            test.since = now;
            session.running += 1;
            out.push(Action::Emit {
                session: key.session,
                event: Event::TestStarted { test: key.test, attempt: key.attempt, worker: name },
            });
        }
    }

    /// A worker's setup of a session is done: told once per worker, by a worker that holds one
    /// of the session's tests, while the session runs (anything else is ignored).
    fn setup_finished(
        &mut self,
        now: Millis,
        worker: WorkerId,
        session: SessionId,
        mut report: Report,
        reused: bool,
        out: &mut Vec<Action>,
    ) {
        let Some(w) = self.workers.get_mut(&worker) else { return };
        w.last_seen = now;
        if !w.held.keys().any(|k| k.session == session) {
            return;
        }
        let name = w.spec.name.clone();
        let Some(s) = self.sessions.get_mut(&session) else { return };
        if s.finished_at.is_some() || !s.set_up.insert(worker) {
            return;
        }
        // Only what the log shows: no cases or artifacts, the output against the session's budget.
        report.cases.clear();
        report.artifacts.clear();
        s.output.keep(false, report.outcome, &mut report);
        out.push(Action::Emit { session, event: Event::SetupFinished { worker: name, report, reused } });
    }

    fn finished(&mut self, now: Millis, worker: WorkerId, key: AssignmentKey, report: Report, out: &mut Vec<Action>) {
        let Some(w) = self.workers.get_mut(&worker) else {
            // A worker declared lost (frozen, cut off) reporting late, on its old stream.
            self.discard(key, "from a worker that had been declared lost".to_string(), out);
            return;
        };
        w.last_seen = now;
        let void = w.void.remove(&key);
        let handed_out = || {
            self.sessions.get(&key.session).and_then(|s| s.tests.get(key.test as usize)).is_some_and(|t| {
                t.attempt == key.attempt
                    && matches!(t.state, TestState::Assigned { worker: h, .. } | TestState::Cancelling { worker: h } if h == worker)
                    || t.is_elder(key.attempt, worker)
            })
        };
        if void && handed_out() {
            // A claim refused after a restart whose attempt was then handed to the same worker
            // (only a forged claim can be both): this reports the refusal, the next one the run.
            return;
        }
        let held = w.held.remove(&key).is_some();
        let worker_name = w.spec.name.clone();
        let Some(session) = self.sessions.get_mut(&key.session) else { return };
        if held {
            session.held = session.held.saturating_sub(1);
        }
        if void {
            // A claim refused after a restart, or the loser of a speculated pair: its report
            // (of the cancel) says nothing anyone needs.
            return;
        }
        let retries = session.spec.retries;
        let Some(test) = session.tests.get_mut(key.test as usize) else { return };
        let elder = held && test.is_elder(key.attempt, worker);
        let live = elder
            || held
                && test.attempt == key.attempt
                && match test.state {
                    TestState::Assigned { worker: holder, .. } | TestState::Cancelling { worker: holder } => {
                        holder == worker
                    }
                    TestState::Queued | TestState::Orphaned { .. } | TestState::Done(_) => false,
                };
        if !live {
            let reason = if !held {
                format!("worker {worker_name} does not hold attempt {}", key.attempt)
            } else {
                format!("attempt {} is no longer live (current attempt {})", key.attempt, test.attempt)
            };
            self.discard(key, reason, out);
            return;
        }
        match speculate::settle(test, elder, report.outcome) {
            // `--speculate`: one of two live attempts reports, and the other goes.
            Some(speculate::Settled::Goes(loser)) => {
                if loser.started {
                    session.running = session.running.saturating_sub(1);
                }
                let loser_key = AssignmentKey { attempt: loser.attempt, ..key };
                if let Some(w) = self.workers.get_mut(&loser.worker) {
                    w.void.insert(loser_key);
                }
                let reason = format!("attempt {} of it reported first", key.attempt);
                out.push(Action::CancelAssignment { worker: loser.worker, key: loser_key, reason });
            }
            // One of the two handed back by a worker shutting down: the other goes on alone.
            Some(speculate::Settled::HandedBack { started }) => {
                if started {
                    session.running = session.running.saturating_sub(1);
                }
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.draining = true;
                }
                return;
            }
            None => {}
        }
        if let TestState::Cancelling { .. } = test.state {
            // The kill we asked for, with the output up to it.
            let reason = session.cancel_reason.clone().unwrap_or_else(|| "session cancelled".into());
            let report = Report { outcome: Outcome::Cancelled, message: reason, ..report };
            out.push(session.conclude(key, worker_name, Outcome::Cancelled, report));
            self.finish_session_if_done(now, key.session, out);
            return;
        }
        if let TestState::Assigned { started: true, .. } = test.state {
            session.running = session.running.saturating_sub(1);
        }
        let final_outcome = match report.outcome {
            // A test that skipped itself (an ignored Rust test) says so, unless it failed before.
            Outcome::Skipped if test.failures == 0 => Some(Outcome::Skipped),
            Outcome::Passed | Outcome::Skipped | Outcome::Flaky => {
                Some(if test.failures > 0 { Outcome::Flaky } else { Outcome::Passed })
            }
            Outcome::Failed | Outcome::TimedOut => {
                if test.failures < retries {
                    None
                } else {
                    Some(report.outcome)
                }
            }
            Outcome::Error | Outcome::Lost => Some(Outcome::Error),
            Outcome::Cancelled if test.handbacks < MAX_HANDBACKS => {
                // The worker gave the test back without being asked: it is shutting down. Run
                // the test elsewhere; this is neither the test's fault nor a worker loss, and the
                // worker gets no more work.
                test.handbacks += 1;
                let reason = format!("worker {worker_name} handed it back");
                out.push(requeue(test, &mut session.queue, key, reason, Requeue::HandedBack));
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.draining = true;
                }
                return;
            }
            Outcome::Cancelled => Some(Outcome::Error),
        };
        match final_outcome {
            Some(outcome) => {
                out.push(session.conclude(key, worker_name, outcome, report));
                self.finish_session_if_done(now, key.session, out);
            }
            None => {
                test.failures += 1;
                test.avoid = Some(worker);
                test.next_attempt();
                test.state = TestState::Queued;
                session.queue.push_back(key.test);
                let mut report = report;
                session.output.keep(false, report.outcome, &mut report);
                out.push(Action::Emit {
                    session: key.session,
                    event: Event::TestFinished {
                        test: key.test,
                        attempt: key.attempt,
                        worker: worker_name,
                        is_final: false,
                        outcome: report.outcome,
                        report,
                    },
                });
            }
        }
    }

    /// Record that a result was not counted (unless the test was cancelled: then a late report
    /// is expected and says nothing new).
    /// At most [`MAX_DISCARDED_EVENTS`] per session: a worker flooding forged results must not
    /// grow the log without bound.
    fn discard(&mut self, key: AssignmentKey, reason: String, out: &mut Vec<Action>) {
        let Some(session) = self.sessions.get_mut(&key.session) else { return };
        let Some(test) = session.tests.get(key.test as usize) else { return };
        // `Finished` is always a session's last event; after it nothing can change anyway.
        if session.finished_at.is_some()
            || matches!(test.state, TestState::Done(Outcome::Cancelled))
            || session.discarded >= MAX_DISCARDED_EVENTS
        {
            return;
        }
        session.discarded += 1;
        let reason = if session.discarded == MAX_DISCARDED_EVENTS {
            format!("{reason} (the {MAX_DISCARDED_EVENTS}th result not counted: later ones are not recorded)")
        } else {
            reason
        };
        out.push(Action::Emit {
            session: key.session,
            event: Event::ResultDiscarded { test: key.test, attempt: key.attempt, reason },
        });
    }

    fn cancel(&mut self, now: Millis, id: SessionId, reason: String, out: &mut Vec<Action>) {
        let Some(session) = self.sessions.get_mut(&id) else { return };
        if session.finished_at.is_some() || session.cancel_reason.is_some() {
            return;
        }
        session.cancel_reason = Some(reason.clone());
        session.queue.clear();
        session.running = 0;
        out.push(Action::Emit { session: id, event: Event::Cancelled { reason: reason.clone() } });
        for index in 0..session.tests.len() {
            let test = &mut session.tests[index];
            if let Some(other) = speculate::keep_one(test) {
                // Of a speculated pair, the one that has run longest is stopped with its output
                // kept; the other's report is void.
                let other_key = AssignmentKey { session: id, test: index as u32, attempt: other.attempt };
                if let Some(w) = self.workers.get_mut(&other.worker) {
                    w.void.insert(other_key);
                }
                out.push(Action::CancelAssignment { worker: other.worker, key: other_key, reason: reason.clone() });
            }
            let key = AssignmentKey { session: id, test: index as u32, attempt: test.attempt };
            match test.state {
                TestState::Done(_) | TestState::Cancelling { .. } => continue,
                // An orphan's worker, if it comes back, is told its claim is void.
                TestState::Queued | TestState::Orphaned { .. } => {}
                TestState::Assigned { worker, started } => {
                    // The worker keeps the slot until it reports the kill.
                    out.push(Action::CancelAssignment { worker, key, reason: reason.clone() });
                    if started {
                        // Its outcome waits for the worker's report, which carries the output
                        // up to the kill: often the very thing a user cancels to look at.
                        test.state = TestState::Cancelling { worker };
                        continue;
                    }
                }
            }
            let report = Report::synthetic(Outcome::Cancelled, reason.clone());
            out.push(session.conclude(key, String::new(), Outcome::Cancelled, report));
        }
        self.finish_session_if_done(now, id, out);
    }

    fn tick(&mut self, now: Millis, out: &mut Vec<Action>) {
        if std::mem::take(&mut self.restored_unfinished) {
            for id in self.active.clone() {
                self.finish_session_if_done(now, id, out);
            }
        }
        if self.adopt_until.is_some_and(|until| now >= until) {
            self.adopt_until = None;
            self.requeue_unclaimed(now, out);
        }
        let expired: Vec<(SessionId, u64)> = self
            .active
            .iter()
            .filter_map(|id| {
                let s = self.sessions.get(id)?;
                let timeout = s.spec.session_timeout_ms;
                (timeout > 0 && now >= s.created_at.saturating_add(timeout)).then_some((*id, timeout))
            })
            .collect();
        for (id, timeout) in expired {
            let reason = format!(
                "session timeout of {} passed",
                humantime::format_duration(std::time::Duration::from_millis(timeout))
            );
            self.cancel(now, id, reason, out);
        }
        let grace = self.config.liveness_timeout_ms;
        let abandoned: Vec<SessionId> = self
            .active
            .iter()
            .filter(|id| {
                self.sessions.get(id).is_some_and(|s| {
                    s.spec.cancel_on_disconnect && s.unwatched_since.is_some_and(|t| now.saturating_sub(t) >= grace)
                })
            })
            .copied()
            .collect();
        for id in abandoned {
            let reason = format!(
                "no client watched the session for {} (--cancel-on-disconnect)",
                humantime::format_duration(std::time::Duration::from_millis(grace))
            );
            self.cancel(now, id, reason, out);
        }
        let timeout = self.config.liveness_timeout_ms;
        // A long gap between ticks means this process stalled (paused, swapped, starved), not
        // the workers: their messages are waiting unread, so give everyone a fresh window.
        if self.last_tick.is_some_and(|prev| now.saturating_sub(prev) > timeout / 2) {
            for w in self.workers.values_mut() {
                w.last_seen = w.last_seen.max(now);
            }
        }
        self.last_tick = Some(now);
        let silent: Vec<WorkerId> =
            self.workers.iter().filter(|(_, w)| now.saturating_sub(w.last_seen) > timeout).map(|(id, _)| *id).collect();
        for id in silent {
            let reason = format!("silent for more than {timeout} ms");
            out.push(Action::DisconnectWorker { worker: id, reason: reason.clone() });
            self.worker_went_silent(now, id, &reason, out);
        }
    }

    fn finish_session_if_done(&mut self, now: Millis, id: SessionId, out: &mut Vec<Action>) {
        let Some(session) = self.sessions.get_mut(&id) else { return };
        let max = session.spec.max_failures;
        if max > 0 && session.finished_at.is_none() && session.cancel_reason.is_none() {
            let t = &session.totals;
            let failed = t.failures();
            if failed >= max && t.ended() < t.total {
                let plural = if failed == 1 { "" } else { "s" };
                let reason = format!("{failed} test{plural} failed (--max-fail {max}): the rest were not run");
                // Cancelling finishes the session once what runs has stopped.
                self.cancel(now, id, reason, out);
                return;
            }
        }
        let Some(session) = self.sessions.get_mut(&id) else { return };
        if session.finished_at.is_some() || session.totals.ended() < session.totals.total {
            return;
        }
        session.finished_at = Some(now);
        self.active.retain(|s| *s != id);
        out.push(Action::Emit {
            session: id,
            event: Event::Finished { totals: session.totals, cancel_reason: session.cancel_reason.clone() },
        });
    }
}
