//! Losing a worker: which of its tests may have taken it down, and what becomes of each (requeued
//! with a new attempt, or `lost` after too many losses). Owns no state of its own.

use std::collections::BTreeSet;

use super::session::{TestState, requeue};
use super::{Action, AssignmentKey, Millis, Outcome, Report, Requeue, Scheduler, Worker, WorkerId};

/// How a worker was lost, which decides which of its tests may have caused it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Loss {
    /// Its stream broke: the process died.
    Abrupt,
    /// It went silent past the liveness timeout: frozen, or cut off from us.
    Silent,
}

impl Scheduler {
    /// A worker's stream broke: the process died (killed, crashed, out of memory).
    pub(super) fn worker_died(&mut self, now: Millis, id: WorkerId, reason: &str, out: &mut Vec<Action>) {
        self.lose_worker(now, id, reason, Loss::Abrupt, out);
    }

    /// A worker was silent past the liveness timeout: frozen, or cut off from us.
    pub(super) fn worker_went_silent(&mut self, now: Millis, id: WorkerId, reason: &str, out: &mut Vec<Action>) {
        self.lose_worker(now, id, reason, Loss::Silent, out);
    }

    fn lose_worker(&mut self, now: Millis, id: WorkerId, reason: &str, loss: Loss, out: &mut Vec<Action>) {
        let Some(w) = self.workers.remove(&id) else { return };
        self.hungry.remove(&id);
        // A drained worker that leaves holding nothing was not lost: it was done.
        if !(w.draining && w.held.is_empty()) {
            self.worker_losses += 1;
        }
        let default_max = self.config.max_worker_losses;
        let mut touched = BTreeSet::new();
        let maybe_running = self.maybe_running(&w, loss);
        // Latest first: each goes to the front of its queue, so they keep their order there.
        let mut held: Vec<(u64, AssignmentKey)> = w.held.iter().map(|(k, seq)| (*seq, *k)).collect();
        held.sort_by(|a, b| b.cmp(a));
        for (_, key) in held {
            let Some(session) = self.sessions.get_mut(&key.session) else { continue };
            session.held = session.held.saturating_sub(1);
            let max_losses = match session.spec.max_worker_losses {
                0 => default_max,
                n => n,
            };
            let Some(test) = session.tests.get_mut(key.test as usize) else { continue };
            // `--speculate`: one of a pair lost, the other goes on alone; nothing is requeued,
            // and no loss is charged (if the test did take its worker down, the other attempt
            // will too, and is charged then).
            if test.is_elder(key.attempt, id) {
                test.elder = None;
                session.running = session.running.saturating_sub(1);
                continue;
            }
            if test.attempt == key.attempt
                && test.elder.is_some()
                && matches!(test.state, TestState::Assigned { worker, .. } if worker == id)
            {
                if test.promote_elder().is_some_and(|(_, _, started)| started) {
                    session.running = session.running.saturating_sub(1);
                }
                continue;
            }
            if test.attempt != key.attempt {
                continue;
            }
            if test.state == (TestState::Cancelling { worker: id }) {
                let cancelled = session.cancel_reason.clone().unwrap_or_else(|| "session cancelled".into());
                let report = Report::synthetic(
                    Outcome::Cancelled,
                    format!("{cancelled}; its worker was lost while stopping it ({reason})"),
                );
                out.push(session.conclude(key, w.spec.name.clone(), Outcome::Cancelled, report));
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
            let charged = maybe_running.contains(&key);
            if charged {
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
                out.push(session.conclude(key, w.spec.name.clone(), Outcome::Lost, report));
                touched.insert(key.session);
            } else {
                let reason = format!("worker {} lost: {reason}", w.spec.name);
                out.push(requeue(test, &mut session.queue, key, reason, Requeue::WorkerLost { charged }));
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
                    || t.elder.is_some_and(|e| e.attempt == key.attempt)
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
}
