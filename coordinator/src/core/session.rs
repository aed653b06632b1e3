//! One session's state inside the scheduler.

use std::collections::VecDeque;
use std::sync::Arc;

use super::model::{
    Action, AssignmentKey, Event, Millis, Outcome, Report, SessionId, SessionSpec, SessionView, Totals, WorkerId,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TestState {
    Queued,
    Assigned {
        worker: WorkerId,
        started: bool,
    },
    /// The session was cancelled while the test ran: it ends `cancelled` when its worker
    /// reports the kill (with the output so far) or is lost.
    Cancelling {
        worker: WorkerId,
    },
    Done(Outcome),
}

pub(super) struct TestEntry {
    /// The live attempt number (starts at 1).
    pub attempt: u32,
    pub state: TestState,
    /// How often its worker was lost while holding it.
    pub losses: u32,
    /// How many attempts failed or timed out (retries used).
    pub failures: u32,
    /// The worker its last failed attempt ran on: a retry goes elsewhere when it can.
    pub avoid: Option<WorkerId>,
    /// How often a worker handed it back unstarted or unfinished (shutting down).
    pub handbacks: u32,
}

pub(super) struct Session {
    pub id: SessionId,
    pub spec: Arc<SessionSpec>,
    pub tests: Vec<TestEntry>,
    pub queue: VecDeque<u32>,
    pub totals: Totals,
    pub running: u32,
    pub created_at: Millis,
    pub finished_at: Option<Millis>,
    pub cancel_reason: Option<String>,
    /// Clients following the session now.
    pub watchers: u32,
    /// Since when no client has followed it (`None` while one does).
    pub unwatched_since: Option<Millis>,
}

impl Session {
    pub fn new(id: SessionId, spec: Arc<SessionSpec>, now: Millis) -> Self {
        let n = spec.tests.len();
        Session {
            id,
            tests: (0..n)
                .map(|_| TestEntry {
                    attempt: 1,
                    state: TestState::Queued,
                    losses: 0,
                    failures: 0,
                    avoid: None,
                    handbacks: 0,
                })
                .collect(),
            queue: (0..n as u32).collect(),
            totals: Totals { total: n as u32, ..Totals::default() },
            running: 0,
            created_at: now,
            finished_at: None,
            cancel_reason: None,
            watchers: 0,
            unwatched_since: Some(now),
            spec,
        }
    }

    pub fn view(&self) -> SessionView {
        SessionView {
            id: self.id,
            name: self.spec.name.clone(),
            finished: self.finished_at.is_some(),
            totals: self.totals,
            running: self.running,
            created_at: self.created_at,
            finished_at: self.finished_at,
            cancel_reason: self.cancel_reason.clone(),
        }
    }
}

/// End a test with its outcome: the one place a test gets its final event, so that the state,
/// the totals and the event log cannot disagree.
pub(super) fn conclude(
    test: &mut TestEntry,
    totals: &mut Totals,
    key: AssignmentKey,
    worker: String,
    outcome: Outcome,
    report: Report,
) -> Action {
    test.state = TestState::Done(outcome);
    totals.count(outcome);
    Action::Emit {
        session: key.session,
        event: Event::TestFinished { test: key.test, attempt: key.attempt, worker, is_final: true, outcome, report },
    }
}
