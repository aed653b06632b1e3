//! Workers that hold tests and do not run them: the coordinator does not rely on a worker to
//! enforce a test's timeout, nor to start what it was given.
//!
//! - A test running on a worker past its timeout plus `Config::overrun_grace_ms` (room for fetching the
//!   workspace and a setup, which count from `TestStarted` but not in the worker's own clock)
//!   ends `timed_out` on that worker, as if the worker had said so (retries apply).
//! - A test handed to a worker that has idle slots (it runs fewer than it has) and not started
//!   within `Config::start_within_ms` goes back to the queue; an honest worker starts a test the moment
//!   a slot is free.
//!
//! Either way the worker gets no more work (as a draining one) and is told to stop the test;
//! what it reports for it later is void. The test's event says which worker, and why.

use super::session::TestState;
use super::session::requeue;
use super::{Action, AssignmentKey, Millis, Outcome, Report, Requeue, Scheduler, WorkerId};

/// How long past its timeout a running test may go unreported, by default.
pub const RUN_GRACE_MS: u64 = 10 * 60 * 1000;
/// How long a worker with an idle slot may leave a test it holds unstarted, by default.
pub const START_WITHIN_MS: u64 = 60 * 1000;

/// What a worker did wrong with one test.
enum Hoarded {
    /// Ran it past its timeout without a result.
    Overran,
    /// Left it unstarted with a slot free.
    Unstarted,
}

impl Scheduler {
    /// Take back, on a tick, the tests workers hold without running them as they should.
    pub(super) fn take_back_hoarded(&mut self, now: Millis, out: &mut Vec<Action>) {
        let mut hoarded: Vec<(WorkerId, AssignmentKey, Hoarded, Millis)> = Vec::new();
        for sid in &self.active {
            let Some(session) = self.sessions.get(sid) else { continue };
            let timeout = session.spec.test_timeout_ms;
            let (grace, start_within) = (self.config.overrun_grace_ms, self.config.start_within_ms);
            for (index, test) in session.tests.iter().enumerate() {
                let TestState::Assigned { worker, started } = test.state else { continue };
                let held = now.saturating_sub(test.since);
                let key = AssignmentKey { session: *sid, test: index as u32, attempt: test.attempt };
                if started && timeout > 0 && held > timeout.saturating_add(grace) {
                    hoarded.push((worker, key, Hoarded::Overran, held));
                } else if !started && held > start_within && self.has_idle_slot(worker) {
                    hoarded.push((worker, key, Hoarded::Unstarted, held));
                }
            }
        }
        for (worker, key, what, held) in hoarded {
            self.take_back(now, worker, key, what, held, out);
        }
    }

    /// Whether `worker` runs fewer tests than it has slots.
    fn has_idle_slot(&self, worker: WorkerId) -> bool {
        let Some(w) = self.workers.get(&worker) else { return false };
        let running = w
            .held
            .keys()
            .filter(|k| {
                self.sessions.get(&k.session).and_then(|s| s.tests.get(k.test as usize)).is_some_and(|t| {
                    t.is_elder(k.attempt, worker)
                        || t.attempt == k.attempt && t.state == (TestState::Assigned { worker, started: true })
                })
            })
            .count();
        running < w.spec.slots as usize
    }

    fn take_back(
        &mut self,
        now: Millis,
        worker: WorkerId,
        key: AssignmentKey,
        what: Hoarded,
        held: Millis,
        out: &mut Vec<Action>,
    ) {
        let Some(w) = self.workers.get_mut(&worker) else { return };
        let name = w.spec.name.clone();
        w.draining = true;
        let ago = humantime::format_duration(std::time::Duration::from_millis(held / 1000 * 1000));
        match what {
            Hoarded::Overran => {
                let timeout = self.sessions.get(&key.session).map_or(0, |s| s.spec.test_timeout_ms);
                let timeout = humantime::format_duration(std::time::Duration::from_millis(timeout));
                let message = format!(
                    "worker {name} ran it for {ago} without a result (timeout {timeout}); it gets no more work"
                );
                self.finished(now, worker, key, Report::synthetic(Outcome::TimedOut, message.clone()), out);
                self.stop_there(worker, key, message, out);
            }
            Hoarded::Unstarted => {
                let reason = format!(
                    "worker {name} held it for {ago} without starting it, with a slot free; it gets no more work"
                );
                if w.held.remove(&key).is_none() {
                    return;
                }
                let Some(session) = self.sessions.get_mut(&key.session) else { return };
                session.held = session.held.saturating_sub(1);
                let Some(test) = session.tests.get_mut(key.test as usize) else { return };
                // The spare of a speculated pair: the elder goes on alone.
                if test.promote_elder().is_none() {
                    let cause = Requeue::WorkerLost { charged: false };
                    out.push(requeue(test, &mut session.queue, key, reason.clone(), cause));
                }
                self.stop_there(worker, key, reason, out);
            }
        }
        self.note_room(worker);
    }

    /// Tell `worker` to stop `key`; what it reports for it is void.
    fn stop_there(&mut self, worker: WorkerId, key: AssignmentKey, reason: String, out: &mut Vec<Action>) {
        if let Some(w) = self.workers.get_mut(&worker) {
            w.void.insert(key);
            out.push(Action::CancelAssignment { worker, key, reason });
        }
    }
}
