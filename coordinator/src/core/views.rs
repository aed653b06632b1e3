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

    /// How many tests wait in queues, over all sessions.
    pub fn queued(&self) -> usize {
        self.active.iter().filter_map(|id| self.sessions.get(id)).map(|s| s.queue.len()).sum()
    }
}
