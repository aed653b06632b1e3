//! A coordinator that restarts: rebuilding sessions from what a store kept (their specs and
//! event logs), and the window in which workers may claim the attempts they still hold.
//!
//! A restored test that had no outcome is [`Orphaned`](TestState::Orphaned): its live attempt
//! may be queued or running on a worker that is about to reconnect, so it is neither queued
//! again (a second run of the same attempt) nor given a new attempt (a second run of the test)
//! until the adoption window, one liveness timeout, has passed. Then what nobody claimed is
//! requeued with a new attempt; that is no worker's loss.
//!
//! A worker that reconnects claims what it still holds ([`Claim`]s in `WorkerJoined`): a claim
//! of an orphan's live attempt is adopted (the worker goes on with it, as if it had been handed
//! out now); any other claim is cancelled on the worker. Reports it sends again
//! ([`Input::Resent`](super::Input::Resent)) count when they are an orphan's live attempt, or
//! one it holds now; any other is dropped without a word (it was counted before, or is void).

use std::collections::VecDeque;
use std::sync::Arc;

use super::session::{Session, TestState, requeue};
use super::{
    Action, AssignmentKey, Claim, Event, Millis, Outcome, Report, Requeue, Restored, RestoredSession, Scheduler,
    WorkerId,
};

impl Scheduler {
    /// Take over the sessions a store kept, before any other input. Emits nothing: their events
    /// are in their logs already.
    pub fn restore(&mut self, now: Millis, sessions: Vec<RestoredSession>) {
        let mut orphans = false;
        for restored in sessions {
            let id = restored.id;
            if self.sessions.contains_key(&id) {
                continue;
            }
            let (order, estimates) = match &restored.state {
                Restored::Unfinished { events } => events
                    .iter()
                    .find_map(|e| match e {
                        Event::Created { order, estimates, .. } => Some((order.clone(), estimates.clone())),
                        _ => None,
                    })
                    .unwrap_or_default(),
                Restored::Finished { .. } => Default::default(),
            };
            let mut session = Session::new(id, Arc::new(restored.spec), restored.created_at, order, self.config.output);
            if estimates.len() == session.tests.len() {
                session.estimates = estimates;
            }
            session.unwatched_since = Some(now);
            match restored.state {
                Restored::Finished { finished_at, totals, cancel_reason, output_bytes } => {
                    session.output.stored = output_bytes;
                    // Nothing about its tests is needed any more: a late result finds no test.
                    session.tests.clear();
                    session.queue.clear();
                    session.totals = totals;
                    session.finished_at = Some(finished_at);
                    session.cancel_reason = cancel_reason;
                }
                Restored::Unfinished { events } => {
                    let started = replay(&mut session, &events);
                    session.queue.clear();
                    for (test, started) in session.tests.iter_mut().zip(started) {
                        if !matches!(test.state, TestState::Done(_)) {
                            test.state = TestState::Orphaned { started: started == Some(test.attempt) };
                            orphans = true;
                        }
                    }
                }
            }
            if session.finished_at.is_none() {
                self.active.push(id);
                self.restored_unfinished = true;
            }
            self.order.push(id);
            self.sessions.insert(id, session);
        }
        if orphans {
            self.adopt_until = Some(now.saturating_add(self.config.liveness_timeout_ms));
        }
    }

    /// A worker that joined claims what it still holds: adopt each claim of an orphan's live
    /// attempt (up to the worker's capacity), and cancel every other one on the worker.
    pub(super) fn adopt(&mut self, now: Millis, worker: WorkerId, claims: Vec<Claim>, out: &mut Vec<Action>) {
        let Some(capacity) = self.workers.get(&worker).map(|w| w.capacity(self.config.prefetch_per_slot)) else {
            return;
        };
        for claim in claims {
            let held = self.workers.get(&worker).map_or(0, |w| w.held.len());
            if held < capacity && self.adopt_orphan(now, worker, claim.key, claim.started, out) {
                continue;
            }
            let Some(w) = self.workers.get_mut(&worker) else { return };
            if w.held.contains_key(&claim.key) || !w.void.insert(claim.key) {
                // Claimed twice: the first claim stands.
                continue;
            }
            let reason = "the coordinator no longer counts this attempt".to_string();
            out.push(Action::CancelAssignment { worker, key: claim.key, reason });
        }
    }

    /// A report sent again on a new stream: it counts if `worker` holds the attempt now, or if
    /// it is an orphan's live attempt; otherwise it was counted before (the acknowledgement was
    /// lost) or is void, and is dropped.
    pub(super) fn resent(
        &mut self,
        now: Millis,
        worker: WorkerId,
        key: AssignmentKey,
        report: Report,
        out: &mut Vec<Action>,
    ) {
        let Some(w) = self.workers.get(&worker) else { return };
        if w.held.contains_key(&key) || self.adopt_orphan(now, worker, key, true, out) {
            self.finished(now, worker, key, report, out);
        }
    }

    /// Give `worker` the orphaned live attempt `key` it claims (`started`: running there); false
    /// if `key` is no orphan's live attempt. In a cancelled session, a running claim is adopted
    /// to be stopped (its report carries the output up to the kill), and a queued one just ends
    /// the test `cancelled`.
    fn adopt_orphan(
        &mut self,
        now: Millis,
        worker: WorkerId,
        key: AssignmentKey,
        started: bool,
        out: &mut Vec<Action>,
    ) -> bool {
        let Some(w) = self.workers.get_mut(&worker) else { return false };
        let Some(session) = self.sessions.get_mut(&key.session) else { return false };
        let Some(test) = session.tests.get_mut(key.test as usize) else { return false };
        let TestState::Orphaned { started: logged } = test.state else { return false };
        // A worker without the session's labels was never handed its tests.
        if test.attempt != key.attempt || !super::dispatch::labels_match(&session.spec.required_labels, &w.spec.labels)
        {
            return false;
        }
        if let Some(reason) = session.cancel_reason.clone() {
            if !started {
                let report = Report::synthetic(Outcome::Cancelled, reason);
                out.push(session.conclude(key, String::new(), Outcome::Cancelled, report));
                self.finish_session_if_done(now, key.session, out);
                return false;
            }
            test.state = TestState::Cancelling { worker };
            out.push(Action::CancelAssignment { worker, key, reason });
        } else {
            let started = started || logged;
            test.state = TestState::Assigned { worker, started };
            // It has run (or waited) for a while already; counting from now errs on its side.
            test.since = now;
            if started {
                session.running += 1;
            }
            if started && !logged {
                out.push(Action::Emit {
                    session: key.session,
                    event: Event::TestStarted { test: key.test, attempt: key.attempt, worker: w.spec.name.clone() },
                });
            }
        }
        self.next_seq += 1;
        w.held.insert(key, self.next_seq);
        session.held += 1;
        true
    }

    /// The adoption window closed: every orphan still unclaimed gets a new attempt (or, in a
    /// cancelled session, its outcome).
    pub(super) fn requeue_unclaimed(&mut self, now: Millis, out: &mut Vec<Action>) {
        let window = humantime::format_duration(std::time::Duration::from_millis(self.config.liveness_timeout_ms));
        let ids = self.active.clone();
        for id in ids {
            let Some(session) = self.sessions.get_mut(&id) else { continue };
            let mut front = VecDeque::new();
            for index in session.order.clone() {
                let index = index as usize;
                let test = &mut session.tests[index];
                if !matches!(test.state, TestState::Orphaned { .. }) {
                    continue;
                }
                let key = AssignmentKey { session: id, test: index as u32, attempt: test.attempt };
                match session.cancel_reason.clone() {
                    Some(reason) => {
                        let report = Report::synthetic(Outcome::Cancelled, reason);
                        out.push(session.conclude(key, String::new(), Outcome::Cancelled, report));
                    }
                    None => {
                        let reason = format!("the coordinator restarted and no worker claimed it within {window}");
                        out.push(requeue(test, &mut front, key, reason, Requeue::Unclaimed));
                    }
                }
            }
            // `front` is in reverse (each was pushed to its front): put them back in the
            // session's order, ahead of anything queued since.
            while let Some(index) = front.pop_front() {
                session.queue.push_front(index);
            }
            self.finish_session_if_done(now, id, out);
        }
    }
}

/// Rebuild a session's tests from its event log: attempts, retries used, losses, hand-backs,
/// outcomes, cancellation and the output its log holds. Returns, per test, the last attempt the
/// log shows starting.
fn replay(session: &mut Session, events: &[Event]) -> Vec<Option<u32>> {
    let mut started = vec![None; session.tests.len()];
    for event in events {
        match event {
            Event::TestFinished { test, attempt, is_final, outcome, report, .. } => {
                session.output.count(report);
                let Some(entry) = session.tests.get_mut(*test as usize) else { continue };
                if *is_final {
                    if !matches!(entry.state, TestState::Done(_)) {
                        entry.state = TestState::Done(*outcome);
                        session.totals.count(*outcome);
                    }
                } else {
                    // The retry is numbered above every attempt handed out, which with
                    // `--speculate` can be above this one.
                    entry.failures += 1;
                    entry.issued = entry.issued.max(*attempt);
                    entry.next_attempt();
                }
            }
            Event::TestRequeued { test, attempt, cause, .. } => {
                let Some(entry) = session.tests.get_mut(*test as usize) else { continue };
                entry.attempt = entry.attempt.max(*attempt);
                entry.issued = entry.issued.max(*attempt);
                match cause {
                    Requeue::WorkerLost { charged: true } => entry.losses += 1,
                    Requeue::HandedBack => entry.handbacks += 1,
                    Requeue::WorkerLost { charged: false } | Requeue::Unclaimed => {}
                }
            }
            Event::TestStarted { test, attempt, .. } => {
                if let Some(entry) = started.get_mut(*test as usize) {
                    *entry = Some(*attempt);
                }
            }
            Event::TestSpeculated { test, attempt, .. } => {
                // The pair is not rebuilt: only the newer attempt can be adopted.
                let Some(entry) = session.tests.get_mut(*test as usize) else { continue };
                entry.attempt = entry.attempt.max(*attempt);
                entry.issued = entry.issued.max(*attempt);
                entry.speculated = true;
            }
            Event::SetupFinished { report, .. } => session.output.count(report),
            Event::Cancelled { reason } => session.cancel_reason = Some(reason.clone()),
            Event::ResultDiscarded { .. } => session.discarded += 1,
            Event::Created { .. } | Event::Finished { .. } => {}
        }
    }
    started
}
