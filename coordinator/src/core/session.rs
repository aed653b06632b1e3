//! One session's state inside the scheduler: its tests and their attempts, its queue, its totals,
//! and how much output its event log keeps.

use std::collections::VecDeque;
use std::sync::Arc;

use super::model::{
    Action, AssignmentKey, Event, Millis, Outcome, Report, Requeue, SessionId, SessionSpec, SessionView, Totals,
    WorkerId,
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
    /// The coordinator restarted while the test's live attempt was out (queued on, or running
    /// on, a worker it no longer knows): it waits for a worker to claim that attempt, or until
    /// the adoption window closes (then it is requeued). `started`: the log shows that attempt
    /// started.
    Orphaned {
        started: bool,
    },
    Done(Outcome),
}

pub(super) struct TestEntry {
    /// The live attempt number (starts at 1).
    pub attempt: u32,
    /// The highest attempt number handed out: a new attempt is always numbered above it (the
    /// live one can be lower, after an elder took over).
    pub issued: u32,
    pub state: TestState,
    /// `--speculate`: the earlier attempt still running beside the live one, which was started
    /// again because this one ran far past its estimate. Only while `state` is `Assigned`.
    pub elder: Option<Elder>,
    /// It has been speculated (a test is, at most once).
    pub speculated: bool,
    /// When its live attempt started, or, until it starts, was handed out: how long it has run
    /// (`--speculate`, a test's timeout) or waited to start on its worker.
    pub since: Millis,
    /// How often its worker was lost while holding it.
    pub losses: u32,
    /// How many attempts failed or timed out (retries used).
    pub failures: u32,
    /// The worker its last failed attempt ran on: a retry goes elsewhere when it can.
    pub avoid: Option<WorkerId>,
    /// How often a worker handed it back unstarted or unfinished (shutting down).
    pub handbacks: u32,
}

/// The first attempt of a speculated test, running on `worker` (it had started).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Elder {
    pub attempt: u32,
    pub worker: WorkerId,
}

impl TestEntry {
    /// Give it a new attempt, numbered above every one handed out so far.
    pub fn next_attempt(&mut self) -> u32 {
        self.issued = self.issued.max(self.attempt) + 1;
        self.attempt = self.issued;
        self.attempt
    }

    /// Whether `attempt` on `worker` is its elder (`--speculate`).
    pub fn is_elder(&self, attempt: u32, worker: WorkerId) -> bool {
        self.elder.is_some_and(|e| e.attempt == attempt && e.worker == worker)
    }

    /// The elder becomes the live attempt again (the newer one is gone, or lost the race).
    /// Returns the newer attempt's key fields: its worker, attempt, and whether it had started.
    pub fn promote_elder(&mut self) -> Option<(WorkerId, u32, bool)> {
        let elder = self.elder.take()?;
        let TestState::Assigned { worker, started } = self.state else { return None };
        let newer = (worker, self.attempt, started);
        self.attempt = elder.attempt;
        self.state = TestState::Assigned { worker: elder.worker, started: true };
        Some(newer)
    }
}

pub(super) struct Session {
    pub id: SessionId,
    pub spec: Arc<SessionSpec>,
    pub tests: Vec<TestEntry>,
    pub queue: VecDeque<u32>,
    pub totals: Totals,
    /// Output kept in the event log so far, against the session's budget.
    pub output: OutputBudget,
    pub running: u32,
    /// `result_discarded` events it has recorded (they are bounded).
    pub discarded: u32,
    /// Assignments workers hold for it (running or prefetched): its share of slots.
    pub held: u32,
    /// When it was last handed a test (the scheduler's assignment count then; 0: never): of
    /// two sessions as far below their share, the one served longer ago goes first.
    pub served_at: u64,
    pub created_at: Millis,
    pub finished_at: Option<Millis>,
    pub cancel_reason: Option<String>,
    /// Clients following the session now.
    pub watchers: u32,
    /// Since when no client has followed it (`None` while one does).
    pub unwatched_since: Option<Millis>,
    /// The workers whose setup of it was told (each is told once).
    pub set_up: std::collections::BTreeSet<WorkerId>,
    /// The order its tests are served in (a permutation of their indices).
    pub order: Vec<u32>,
    /// What each test's own history says it takes, in ms (0: not known); only with
    /// `--speculate` (empty otherwise).
    pub estimates: Vec<u64>,
    /// What each test is expected to take, in ms, from any source (0: not known; empty after a
    /// restart): the grid's demand ([`super::demand`]).
    pub predicted: Vec<u64>,
}

impl Session {
    /// `order`: the order its tests are served in; anything but a permutation of their indices
    /// (an empty one included) means as listed.
    pub fn new(id: SessionId, spec: Arc<SessionSpec>, now: Millis, order: Vec<u32>, limits: OutputLimits) -> Self {
        let n = spec.tests.len();
        let order = if is_permutation(&order, n) { order } else { (0..n as u32).collect() };
        Session {
            id,
            tests: (0..n)
                .map(|_| TestEntry {
                    attempt: 1,
                    issued: 1,
                    state: TestState::Queued,
                    elder: None,
                    speculated: false,
                    since: 0,
                    losses: 0,
                    failures: 0,
                    avoid: None,
                    handbacks: 0,
                })
                .collect(),
            queue: order.iter().copied().collect(),
            order,
            estimates: Vec::new(),
            predicted: Vec::new(),
            totals: Totals { total: n as u32, ..Totals::default() },
            output: OutputBudget::new(limits),
            running: 0,
            discarded: 0,
            held: 0,
            served_at: 0,
            created_at: now,
            finished_at: None,
            cancel_reason: None,
            watchers: 0,
            unwatched_since: Some(now),
            set_up: Default::default(),
            spec,
        }
    }

    /// End a test with its outcome: the one place a test gets its final event, so that the
    /// state, the totals and the event log cannot disagree.
    pub fn conclude(&mut self, key: AssignmentKey, worker: String, outcome: Outcome, mut report: Report) -> Action {
        if let Some(test) = self.tests.get_mut(key.test as usize) {
            test.state = TestState::Done(outcome);
        }
        self.totals.count(outcome);
        self.output.keep(true, outcome, &mut report);
        Action::Emit {
            session: key.session,
            event: Event::TestFinished {
                test: key.test,
                attempt: key.attempt,
                worker,
                is_final: true,
                outcome,
                report,
            },
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
            owner: self.spec.owner.clone(),
        }
    }
}

fn is_permutation(order: &[u32], n: usize) -> bool {
    if order.len() != n {
        return false;
    }
    let mut seen = vec![false; n];
    order.iter().all(|&i| seen.get_mut(i as usize).is_some_and(|s| !std::mem::replace(s, true)))
}

/// Send a test back to the front of its queue with a new attempt (its worker was lost or handed
/// it back): neither a failure nor a retry.
pub(super) fn requeue(
    test: &mut TestEntry,
    queue: &mut VecDeque<u32>,
    key: AssignmentKey,
    reason: String,
    cause: Requeue,
) -> Action {
    test.next_attempt();
    test.state = TestState::Queued;
    queue.push_front(key.test);
    Action::Emit {
        session: key.session,
        event: Event::TestRequeued { test: key.test, attempt: test.attempt, reason, cause },
    }
}

/// Output kept in the event log for a test that passed: the tail, enough to see how it ended.
const KEEP_PASSED_OUTPUT: usize = 16 * 1024;
/// What a failure keeps once the session's budget (or the grid's) is spent.
const KEEP_OUTPUT_OVER_BUDGET: usize = 64 * 1024;

/// How much output the event logs keep: per test, per session, on the whole grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputLimits {
    /// One report's output beyond this keeps only its last this-many bytes.
    pub per_test: u64,
    /// A session keeps failures' output in full (first come, first kept) up to this; later ones
    /// keep their tail only.
    pub per_session: u64,
    /// All sessions together: over it, the oldest finished sessions' output is dropped first,
    /// and while running sessions alone are over it their later failures keep their tail only.
    pub total: u64,
}

impl Default for OutputLimits {
    fn default() -> Self {
        OutputLimits { per_test: 16 << 20, per_session: 256 << 20, total: 2 << 30 }
    }
}

/// How much output a session's event log holds; decides what each attempt's report keeps, so
/// that the log is exactly what the core emitted.
#[derive(Debug, Default)]
pub(super) struct OutputBudget {
    pub stored: u64,
    /// The limits it keeps to (set by the scheduler as the session is made).
    pub limits: OutputLimits,
    /// The grid is over its total: failures keep their tail only (set on every tick).
    pub squeezed: bool,
    /// Its output was dropped from the log to keep the grid under its total.
    pub dropped: bool,
}

impl OutputBudget {
    pub fn new(limits: OutputLimits) -> Self {
        OutputBudget { limits, ..OutputBudget::default() }
    }

    /// Trim `report`'s output for the log: a passed test keeps its tail, a failure keeps all of
    /// it (up to the per-test limit) while the session's budget lasts and its tail after that.
    pub fn keep(&mut self, is_final: bool, outcome: Outcome, report: &mut Report) {
        let per_test = usize::try_from(self.limits.per_test).unwrap_or(usize::MAX);
        let keep = if is_final && outcome.is_success() {
            KEEP_PASSED_OUTPUT
        } else if self.squeezed || self.stored > self.limits.per_session {
            KEEP_OUTPUT_OVER_BUDGET
        } else {
            usize::MAX
        };
        keep_tail(report, keep.min(per_test));
        self.count(report);
    }

    /// Count a report the log holds already (a restored log).
    pub fn count(&mut self, report: &Report) {
        self.stored += report.output.len() as u64;
    }
}

/// Keep the last `keep` bytes of a report's output, counting what goes.
fn keep_tail(report: &mut Report, keep: usize) {
    let len = report.output.len();
    if len <= keep {
        return;
    }
    let cut = len - keep;
    report.output.drain(..cut);
    report.output_dropped_bytes += cut as u64;
    let marker = format!("[... testgrid kept the last {keep} bytes of this output ...]\n");
    report.output.splice(0..0, marker.into_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_tail_counts_what_it_drops() {
        let mut report = Report::synthetic(Outcome::Passed, "");
        report.output = b"0123456789".to_vec();
        report.output_dropped_bytes = 5;
        keep_tail(&mut report, 4);
        assert!(report.output.ends_with(b"6789"));
        assert!(report.output.starts_with(b"[... testgrid kept the last 4 bytes"));
        assert_eq!(report.output_dropped_bytes, 11);
        let mut small = Report::synthetic(Outcome::Passed, "");
        small.output = b"abc".to_vec();
        keep_tail(&mut small, 4);
        assert_eq!(small.output, b"abc");
    }

    #[test]
    fn a_passed_test_keeps_its_tail_and_failures_all_until_the_budget_is_spent() {
        let mut budget = OutputBudget::default();
        let mut passed = Report::synthetic(Outcome::Passed, "");
        passed.output = vec![b'p'; KEEP_PASSED_OUTPUT * 2];
        budget.keep(true, Outcome::Passed, &mut passed);
        assert_eq!(passed.output_dropped_bytes, KEEP_PASSED_OUTPUT as u64);
        let mut failed = Report::synthetic(Outcome::Failed, "");
        failed.output = vec![b'f'; KEEP_PASSED_OUTPUT * 2];
        budget.keep(true, Outcome::Failed, &mut failed);
        assert_eq!(failed.output_dropped_bytes, 0, "a failure keeps all of its output");
        budget.stored = budget.limits.per_session + 1;
        let mut late = Report::synthetic(Outcome::Failed, "");
        late.output = vec![b'l'; KEEP_OUTPUT_OVER_BUDGET * 2];
        budget.keep(false, Outcome::Failed, &mut late);
        assert_eq!(late.output_dropped_bytes, KEEP_OUTPUT_OVER_BUDGET as u64, "over budget: the tail only");
    }
}
