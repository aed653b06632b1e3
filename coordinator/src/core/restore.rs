//! A coordinator that restarts: rebuilding sessions from what a store kept (their specs and
//! event logs), and the window in which workers may claim the attempts they still hold.
//!
//! A restored test that had no outcome is [`Orphaned`](TestState::Orphaned): its live attempt
//! may be queued or running on a worker that is about to reconnect, so it is neither queued
//! again (a second run of the same attempt) nor given a new attempt (a second run of the test)
//! until the adoption window, one liveness timeout, has passed. Then what nobody claimed is
//! requeued with a new attempt; that is no worker's loss.

use std::collections::VecDeque;
use std::sync::Arc;

use super::session::{Session, TestState, requeue};
use super::{Action, AssignmentKey, Event, Millis, Outcome, Report, Requeue, Restored, RestoredSession, Scheduler};

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
            let mut session = Session::new(id, Arc::new(restored.spec), restored.created_at);
            session.unwatched_since = Some(now);
            match restored.state {
                Restored::Finished { finished_at, totals, cancel_reason } => {
                    // Nothing about its tests is needed any more: a late result finds no test.
                    session.tests.clear();
                    session.queue.clear();
                    session.totals = totals;
                    session.finished_at = Some(finished_at);
                    session.cancel_reason = cancel_reason;
                }
                Restored::Unfinished { events } => {
                    replay(&mut session, &events);
                    session.queue.clear();
                    for test in &mut session.tests {
                        if !matches!(test.state, TestState::Done(_)) {
                            test.state = TestState::Orphaned;
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

    /// The adoption window closed: every orphan still unclaimed gets a new attempt (or, in a
    /// cancelled session, its outcome).
    pub(super) fn requeue_unclaimed(&mut self, now: Millis, out: &mut Vec<Action>) {
        let window = humantime::format_duration(std::time::Duration::from_millis(self.config.liveness_timeout_ms));
        let ids = self.active.clone();
        for id in ids {
            let Some(session) = self.sessions.get_mut(&id) else { continue };
            let mut front = VecDeque::new();
            for index in 0..session.tests.len() {
                let test = &mut session.tests[index];
                if test.state != TestState::Orphaned {
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
            // `front` is in reverse (each was pushed to its front): put them back in index
            // order, ahead of anything queued since.
            while let Some(index) = front.pop_front() {
                session.queue.push_front(index);
            }
            self.finish_session_if_done(now, id, out);
        }
    }
}

/// Rebuild a session's tests from its event log: attempts, retries used, losses, hand-backs,
/// outcomes, cancellation and the output its log holds.
fn replay(session: &mut Session, events: &[Event]) {
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
                    entry.failures += 1;
                    entry.attempt = entry.attempt.max(attempt.saturating_add(1));
                }
            }
            Event::TestRequeued { test, attempt, cause, .. } => {
                let Some(entry) = session.tests.get_mut(*test as usize) else { continue };
                entry.attempt = entry.attempt.max(*attempt);
                match cause {
                    Requeue::WorkerLost { charged: true } => entry.losses += 1,
                    Requeue::HandedBack => entry.handbacks += 1,
                    Requeue::WorkerLost { charged: false } | Requeue::Unclaimed => {}
                }
            }
            Event::SetupFinished { report, .. } => session.output.count(report),
            Event::Cancelled { reason } => session.cancel_reason = Some(reason.clone()),
            Event::Created { .. }
            | Event::TestStarted { .. }
            | Event::ResultDiscarded { .. }
            | Event::Finished { .. } => {}
        }
    }
}
