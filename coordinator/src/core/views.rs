//! What the service reads from the scheduler (`Get`, `List`, `ListWorkers`, metrics), and the
//! forgetting of old finished sessions. Read-only but for `forget_old_sessions`.

use super::session::{Session, TestState};
use super::{Millis, Scheduler, SessionId, SessionView, WorkerView};

impl Scheduler {
    /// Forget the finished sessions beyond `keep_finished_sessions` (oldest first) and those
    /// that finished more than `keep_finished_for_ms` ago (on every `Tick`, announced as
    /// `Action::Forget` so that the store drops them). A worker may still hold a cancelled test
    /// of a forgotten session: its report then finds no session and only frees the slot.
    pub(super) fn forget_old_sessions(&mut self, now: Millis) -> Vec<SessionId> {
        let finished = self.order.len() - self.active.len();
        let mut excess = finished.saturating_sub(self.config.keep_finished_sessions);
        let expired =
            |s: &Session| s.finished_at.is_some_and(|at| now.saturating_sub(at) >= self.config.keep_finished_for_ms);
        let mut forgotten = Vec::new();
        for id in &self.order {
            let Some(session) = self.sessions.get(id) else { continue };
            if session.finished_at.is_none() {
                continue;
            }
            if excess > 0 {
                excess -= 1;
                forgotten.push(*id);
            } else if expired(session) {
                forgotten.push(*id);
            }
        }
        if forgotten.is_empty() {
            return forgotten;
        }
        for id in &forgotten {
            self.sessions.remove(id);
        }
        self.order.retain(|id| self.sessions.contains_key(id));
        forgotten
    }

    /// Keep the output all sessions' logs hold under the grid's total: over it, drop the output
    /// of the oldest finished sessions first (returned, for the store to drop), down to 90% of
    /// the total; if running sessions alone are over it, their later failures keep only their
    /// tail until enough of them finish and are dropped in turn.
    pub(super) fn keep_total_output(&mut self) -> Vec<SessionId> {
        let limit = self.config.output.total;
        let mut total: u64 = self.sessions.values().map(|s| s.output.stored).sum();
        let mut dropped = Vec::new();
        if total > limit {
            let floor = limit / 10 * 9;
            for id in &self.order {
                if total <= floor {
                    break;
                }
                let Some(s) = self.sessions.get_mut(id) else { continue };
                if s.finished_at.is_none() || s.output.stored == 0 {
                    continue;
                }
                total -= s.output.stored;
                s.output.stored = 0;
                s.output.dropped = true;
                dropped.push(*id);
            }
        }
        let squeezed = total > limit;
        for id in &self.active {
            if let Some(s) = self.sessions.get_mut(id) {
                s.output.squeezed = squeezed;
            }
        }
        dropped
    }

    /// A session's spec (while the scheduler knows the session).
    pub fn spec(&self, id: SessionId) -> Option<&std::sync::Arc<super::SessionSpec>> {
        self.sessions.get(&id).map(|s| &s.spec)
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
                        } || test.is_elder(key.attempt, *id);
                        running.then(|| session.spec.tests[key.test as usize].clone())
                    })
                    .collect(),
                last_seen: w.last_seen,
                connected_at: w.connected_at,
                draining: w.draining,
            })
            .collect()
    }

    /// Workers lost (died, or went silent) since start; drained ones that left holding nothing
    /// are not counted.
    pub fn worker_losses(&self) -> u64 {
        self.worker_losses
    }

    /// How many tests wait in queues, over all sessions.
    pub fn queued(&self) -> usize {
        self.active.iter().filter_map(|id| self.sessions.get(id)).map(|s| s.queue.len()).sum()
    }
}
