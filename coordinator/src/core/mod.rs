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
//!   `max_worker_losses` losses.

mod model;
mod session;

/// How a worker was lost, which decides which of its tests may have caused it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Loss {
    /// Its stream broke: the process died.
    Abrupt,
    /// It went silent past the liveness timeout: frozen, or cut off from us.
    Silent,
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

pub use model::*;
use session::{Session, TestState, conclude};

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
}

impl Default for Config {
    fn default() -> Self {
        Config { prefetch_per_slot: 1, liveness_timeout_ms: 5_000, max_worker_losses: 2, keep_finished_sessions: 1_000 }
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
    /// Unfinished sessions in submission order: the order in which they are served.
    active: Vec<SessionId>,
    /// All sessions in submission order (for listing).
    order: Vec<SessionId>,
    workers: BTreeMap<WorkerId, Worker>,
    /// Counts assignments handed out, to order each worker's held ones.
    next_seq: u64,
    /// When the last `Tick` came: a long gap means the coordinator itself stalled.
    last_tick: Option<Millis>,
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
            last_tick: None,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Apply one input; return what must be done because of it.
    pub fn handle(&mut self, now: Millis, input: Input) -> Vec<Action> {
        let mut out = Vec::new();
        match input {
            Input::Submit { id, spec } => {
                self.submit(now, id, spec, &mut out);
                self.dispatch_all(&mut out);
            }
            Input::WorkerJoined { id, spec } => {
                self.workers.insert(
                    id,
                    Worker { spec, held: BTreeMap::new(), last_seen: now, connected_at: now, draining: false },
                );
                self.dispatch_all(&mut out);
            }
            Input::WorkerLost { id, reason } => {
                self.lose_worker(now, id, &reason, Loss::Abrupt, &mut out);
                self.dispatch_all(&mut out);
            }
            Input::Heartbeat { worker } => {
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.last_seen = now;
                }
            }
            Input::Started { worker, key } => self.started(now, worker, key, &mut out),
            Input::Finished { worker, key, report } => {
                self.finished(now, worker, key, report, &mut out);
                self.dispatch_all(&mut out);
            }
            Input::Cancel { session, reason } => {
                self.cancel(now, session, reason, &mut out);
                self.dispatch_all(&mut out);
            }
            Input::Draining { worker } => {
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.draining = true;
                    w.last_seen = now;
                }
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
                self.dispatch_all(&mut out);
            }
        }
        out
    }

    fn submit(&mut self, now: Millis, id: SessionId, spec: SessionSpec, out: &mut Vec<Action>) {
        if self.sessions.contains_key(&id) {
            return;
        }
        let session = Session::new(id, Arc::new(spec), now);
        out.push(Action::Emit {
            session: id,
            event: Event::Created { name: session.spec.name.clone(), paths: session.spec.tests.clone() },
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
            session.running += 1;
            out.push(Action::Emit {
                session: key.session,
                event: Event::TestStarted { test: key.test, attempt: key.attempt, worker: name },
            });
        }
    }

    fn finished(&mut self, now: Millis, worker: WorkerId, key: AssignmentKey, report: Report, out: &mut Vec<Action>) {
        let Some(w) = self.workers.get_mut(&worker) else {
            // A worker declared lost (frozen, cut off) reporting late, on its old stream.
            self.discard(key, "from a worker that had been declared lost".to_string(), out);
            return;
        };
        w.last_seen = now;
        let held = w.held.remove(&key).is_some();
        let worker_name = w.spec.name.clone();
        let Some(session) = self.sessions.get_mut(&key.session) else { return };
        let retries = session.spec.retries;
        let Some(test) = session.tests.get_mut(key.test as usize) else { return };
        let live = held
            && test.attempt == key.attempt
            && match test.state {
                TestState::Assigned { worker: holder, .. } | TestState::Cancelling { worker: holder } => {
                    holder == worker
                }
                TestState::Queued | TestState::Done(_) => false,
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
        if let TestState::Cancelling { .. } = test.state {
            // The kill we asked for, with the output up to it.
            let reason = session.cancel_reason.clone().unwrap_or_else(|| "session cancelled".into());
            let report = Report { outcome: Outcome::Cancelled, message: reason, ..report };
            out.push(conclude(test, &mut session.totals, key, worker_name, Outcome::Cancelled, report));
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
                test.attempt += 1;
                test.state = TestState::Queued;
                session.queue.push_front(key.test);
                out.push(Action::Emit {
                    session: key.session,
                    event: Event::TestRequeued {
                        test: key.test,
                        attempt: test.attempt,
                        reason: format!("worker {worker_name} handed it back"),
                    },
                });
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.draining = true;
                }
                return;
            }
            Outcome::Cancelled => Some(Outcome::Error),
        };
        match final_outcome {
            Some(outcome) => {
                out.push(conclude(test, &mut session.totals, key, worker_name, outcome, report));
                self.finish_session_if_done(now, key.session, out);
            }
            None => {
                test.failures += 1;
                test.avoid = Some(worker);
                test.attempt += 1;
                test.state = TestState::Queued;
                session.queue.push_back(key.test);
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
    fn discard(&mut self, key: AssignmentKey, reason: String, out: &mut Vec<Action>) {
        let Some(session) = self.sessions.get(&key.session) else { return };
        let Some(test) = session.tests.get(key.test as usize) else { return };
        // `Finished` is always a session's last event; after it nothing can change anyway.
        if session.finished_at.is_some() || matches!(test.state, TestState::Done(Outcome::Cancelled)) {
            return;
        }
        out.push(Action::Emit {
            session: key.session,
            event: Event::ResultDiscarded { test: key.test, attempt: key.attempt, reason },
        });
    }

    fn lose_worker(&mut self, now: Millis, id: WorkerId, reason: &str, loss: Loss, out: &mut Vec<Action>) {
        let Some(w) = self.workers.remove(&id) else { return };
        let default_max = self.config.max_worker_losses;
        let mut touched = BTreeSet::new();
        let maybe_running = self.maybe_running(&w, loss);
        // Latest first: each goes to the front of its queue, so they keep their order there.
        let mut held: Vec<(u64, AssignmentKey)> = w.held.iter().map(|(k, seq)| (*seq, *k)).collect();
        held.sort_by(|a, b| b.cmp(a));
        for (_, key) in held {
            let Some(session) = self.sessions.get_mut(&key.session) else { continue };
            let max_losses = match session.spec.max_worker_losses {
                0 => default_max,
                n => n,
            };
            let Some(test) = session.tests.get_mut(key.test as usize) else { continue };
            if test.attempt != key.attempt {
                continue;
            }
            if test.state == (TestState::Cancelling { worker: id }) {
                let cancelled = session.cancel_reason.clone().unwrap_or_else(|| "session cancelled".into());
                let report = Report::synthetic(
                    Outcome::Cancelled,
                    format!("{cancelled}; its worker was lost while stopping it ({reason})"),
                );
                out.push(conclude(test, &mut session.totals, key, w.spec.name.clone(), Outcome::Cancelled, report));
                touched.insert(key.session);
                continue;
            }
            let TestState::Assigned { worker, started } = test.state else { continue };
            if worker != id {
                continue;
            }
            if started {
                session.running = session.running.saturating_sub(1);
            }
            // Only a test that was (or may have been) running can have taken its worker down.
            if maybe_running.contains(&key) {
                test.losses += 1;
            }
            if test.losses > max_losses {
                let report = Report::synthetic(
                    Outcome::Lost,
                    format!(
                        "its worker was lost {} times (limit {max_losses}); last: {} ({reason})",
                        test.losses, w.spec.name
                    ),
                );
                out.push(conclude(test, &mut session.totals, key, w.spec.name.clone(), Outcome::Lost, report));
                touched.insert(key.session);
            } else {
                test.attempt += 1;
                test.state = TestState::Queued;
                session.queue.push_front(key.test);
                out.push(Action::Emit {
                    session: key.session,
                    event: Event::TestRequeued {
                        test: key.test,
                        attempt: test.attempt,
                        reason: format!("worker {} lost: {reason}", w.spec.name),
                    },
                });
            }
        }
        for session in touched {
            self.finish_session_if_done(now, session, out);
        }
    }

    /// Which of a worker's assignments may have been running when it was lost.
    ///
    /// - A draining worker starts nothing new: only those it said it started.
    /// - A worker whose stream broke (it died: killed, crashed, OOM) may have been taken down by
    ///   any test it held. Ordering cannot narrow this down: a test that kills its worker at once
    ///   takes its own `TestStarted` with it, and often the reports of the quick tests its slot
    ///   ran just before, so "queued there" and "ran, finished, then the next one started" look
    ///   the same from here. An innocent test charged this way is safe: on its last chance it
    ///   runs alone on an emptied worker, so only a loss there ends it `lost`.
    /// - A worker that went silent (frozen, cut off) was not killed by a test that crashed it;
    ///   only what it said it started and, for each slot with nothing started that we know of,
    ///   the next one in the order they were handed out.
    fn maybe_running(&self, w: &Worker, loss: Loss) -> BTreeSet<AssignmentKey> {
        if !w.draining && loss == Loss::Abrupt {
            return w.held.keys().copied().collect();
        }
        let started = |key: &AssignmentKey| {
            self.sessions.get(&key.session).and_then(|s| s.tests.get(key.test as usize)).is_some_and(|t| {
                t.attempt == key.attempt && matches!(t.state, TestState::Assigned { started: true, .. })
            })
        };
        let mut running: BTreeSet<AssignmentKey> = w.held.keys().filter(|k| started(k)).copied().collect();
        if !w.draining {
            let free = (w.spec.slots as usize).saturating_sub(running.len());
            let mut unstarted: Vec<(u64, AssignmentKey)> =
                w.held.iter().filter(|(k, _)| !running.contains(k)).map(|(k, seq)| (*seq, *k)).collect();
            unstarted.sort();
            running.extend(unstarted.into_iter().take(free).map(|(_, k)| k));
        }
        running
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
        for (index, test) in session.tests.iter_mut().enumerate() {
            let key = AssignmentKey { session: id, test: index as u32, attempt: test.attempt };
            match test.state {
                TestState::Done(_) | TestState::Cancelling { .. } => continue,
                TestState::Queued => {}
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
            out.push(conclude(test, &mut session.totals, key, String::new(), Outcome::Cancelled, report));
        }
        self.finish_session_if_done(now, id, out);
    }

    fn tick(&mut self, now: Millis, out: &mut Vec<Action>) {
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
            self.lose_worker(now, id, &reason, Loss::Silent, out);
        }
    }

    fn finish_session_if_done(&mut self, now: Millis, id: SessionId, out: &mut Vec<Action>) {
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

    /// Hand queued tests to workers with free capacity: first up to one per slot across all
    /// workers (so work spreads), then the prefetch.
    fn dispatch_all(&mut self, out: &mut Vec<Action>) {
        if self.active.is_empty() {
            return;
        }
        let worker_ids: Vec<WorkerId> = self.workers.keys().copied().collect();
        for prefetch in [0, self.config.prefetch_per_slot] {
            loop {
                let mut progressed = false;
                for id in &worker_ids {
                    if self.dispatch_one(*id, prefetch, out) {
                        progressed = true;
                    }
                }
                if !progressed {
                    break;
                }
            }
        }
    }

    /// Give one queued test to `worker` if it has room under `prefetch`; true if it did.
    fn dispatch_one(&mut self, worker: WorkerId, prefetch: u32, out: &mut Vec<Action>) -> bool {
        let Some(w) = self.workers.get(&worker) else { return false };
        if w.draining || w.held.len() >= w.capacity(prefetch) || w.held.keys().any(|k| self.is_suspect(k)) {
            return false;
        }
        let Some((sid, position)) = self.pick(worker, w) else { return false };
        let Some(session) = self.sessions.get_mut(&sid) else { return false };
        let Some(index) = session.queue.remove(position) else { return false };
        let test = &mut session.tests[index as usize];
        test.state = TestState::Assigned { worker, started: false };
        let key = AssignmentKey { session: sid, test: index, attempt: test.attempt };
        out.push(Action::Assign {
            worker,
            assignment: Assignment {
                key,
                path: session.spec.tests[index as usize].clone(),
                spec: Arc::clone(&session.spec),
            },
        });
        self.next_seq += 1;
        let seq = self.next_seq;
        if let Some(w) = self.workers.get_mut(&worker) {
            w.held.insert(key, seq);
        }
        true
    }

    /// How often a session's tests may lose their worker.
    fn max_losses(&self, session: &Session) -> u32 {
        match session.spec.max_worker_losses {
            0 => self.config.max_worker_losses,
            n => n,
        }
    }

    /// Whether a test is on its last chance: one more worker loss ends it `lost`. Such a test
    /// runs alone on a worker (nothing beside it), so that if it crashes its worker again it is
    /// surely the culprit, and an innocent test that shared a worker with a crasher is never
    /// lost with it.
    fn last_chance(&self, session: &Session, test: &session::TestEntry) -> bool {
        test.losses > 0 && test.losses >= self.max_losses(session)
    }

    /// Whether the live attempt `key` is a last-chance test running alone (see `last_chance`).
    fn is_suspect(&self, key: &AssignmentKey) -> bool {
        self.sessions.get(&key.session).is_some_and(|s| {
            s.tests.get(key.test as usize).is_some_and(|t| {
                self.last_chance(s, t) && t.attempt == key.attempt && matches!(t.state, TestState::Assigned { .. })
            })
        })
    }

    /// The worker that stops taking work so that it empties for a last-chance test: the eligible
    /// one holding the least (ties by id).
    fn reserved_for(&self, session: &Session) -> Option<WorkerId> {
        self.workers
            .iter()
            .filter(|(_, w)| !w.draining && labels_match(&session.spec.required_labels, &w.spec.labels))
            .min_by_key(|(id, w)| (w.held.len(), **id))
            .map(|(id, _)| *id)
    }

    /// Which queued test `worker` should run next: the first session (in submission order) whose
    /// labels it matches, and in it the first queued test, except that a retry skips the worker
    /// its last attempt failed on while another connected worker could run it, and a test on its
    /// last chance only goes to a worker that holds nothing.
    fn pick(&self, worker: WorkerId, w: &Worker) -> Option<(SessionId, usize)> {
        /// How far into a queue to look for a test this worker may take.
        const LOOKAHEAD: usize = 64;
        for sid in &self.active {
            let Some(session) = self.sessions.get(sid) else { continue };
            if session.queue.is_empty() || !labels_match(&session.spec.required_labels, &w.spec.labels) {
                continue;
            }
            let mut others: Option<bool> = None;
            for (position, index) in session.queue.iter().take(LOOKAHEAD).enumerate() {
                let test = &session.tests[*index as usize];
                if self.last_chance(session, test) {
                    if w.held.is_empty() {
                        return Some((*sid, position));
                    }
                    // One worker takes nothing more until it is empty and can run it alone;
                    // the others go on with the rest of the queue.
                    if self.reserved_for(session) == Some(worker) {
                        return None;
                    }
                    continue;
                }
                if test.avoid != Some(worker) {
                    return Some((*sid, position));
                }
                let others = *others.get_or_insert_with(|| {
                    self.workers.iter().any(|(id, other)| {
                        *id != worker
                            && !other.draining
                            && labels_match(&session.spec.required_labels, &other.spec.labels)
                    })
                });
                if !others {
                    return Some((*sid, position));
                }
            }
        }
        None
    }

    /// Forget the oldest finished sessions beyond `keep_finished_sessions`; returns their ids so
    /// the caller can drop their logs. A worker may still hold a cancelled test of a forgotten
    /// session: its report then finds no session and only frees the slot.
    pub fn forget_old_sessions(&mut self) -> Vec<SessionId> {
        let finished = self.order.len() - self.active.len();
        let excess = finished.saturating_sub(self.config.keep_finished_sessions);
        if excess == 0 {
            return Vec::new();
        }
        let mut forgotten = Vec::with_capacity(excess);
        for id in &self.order {
            if forgotten.len() == excess {
                break;
            }
            if self.sessions.get(id).is_some_and(|s| s.finished_at.is_some()) {
                forgotten.push(*id);
            }
        }
        for id in &forgotten {
            self.sessions.remove(id);
        }
        self.order.retain(|id| self.sessions.contains_key(id));
        forgotten
    }

    /// One session's state and totals.
    pub fn session(&self, id: SessionId) -> Option<SessionView> {
        self.sessions.get(&id).map(Session::view)
    }

    /// Every session, newest first.
    pub fn sessions(&self) -> Vec<SessionView> {
        self.order.iter().rev().filter_map(|id| self.session(*id)).collect()
    }

    /// Every connected worker.
    pub fn workers(&self) -> Vec<WorkerView> {
        self.workers
            .iter()
            .map(|(id, w)| WorkerView {
                id: *id,
                spec: w.spec.clone(),
                held: w.held.keys().copied().collect(),
                running_tests: w
                    .held
                    .keys()
                    .filter_map(|key| {
                        let session = self.sessions.get(&key.session)?;
                        let test = session.tests.get(key.test as usize)?;
                        let running = match test.state {
                            TestState::Assigned { started: true, worker } | TestState::Cancelling { worker } => {
                                worker == *id && test.attempt == key.attempt
                            }
                            _ => false,
                        };
                        running.then(|| session.spec.tests[key.test as usize].clone())
                    })
                    .collect(),
                last_seen: w.last_seen,
                connected_at: w.connected_at,
                draining: w.draining,
            })
            .collect()
    }

    /// How many tests wait in queues, over all sessions.
    pub fn queued(&self) -> usize {
        self.active.iter().filter_map(|id| self.sessions.get(id)).map(|s| s.queue.len()).sum()
    }
}

fn labels_match(required: &BTreeMap<String, String>, have: &BTreeMap<String, String>) -> bool {
    required.iter().all(|(k, v)| have.get(k) == Some(v))
}
