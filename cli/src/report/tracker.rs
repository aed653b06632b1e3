//! A session as its events tell it: every test's attempts and outcome, what runs now, and how
//! the session ended. Fed by the live view, read by the summary and the JUnit report.

use testgrid_proto as pb;
use testgrid_proto::session_event::Kind;

/// One attempt of a test as the events told it.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub attempt: u32,
    pub worker: String,
    pub outcome: pb::Outcome,
    pub report: pb::TestReport,
    pub time_ms: u64,
}

/// Everything known about one test.
#[derive(Clone, Debug, Default)]
pub struct TestRecord {
    pub path: String,
    /// The test's outcome, once it has one.
    pub outcome: Option<pb::Outcome>,
    /// Every attempt that ended, the last one being the final one when `outcome` is set.
    pub attempts: Vec<Attempt>,
    /// An attempt of it is running now.
    pub running: bool,
}

/// A session as gathered from its events.
#[derive(Clone, Debug, Default)]
pub struct Tracker {
    pub session_id: String,
    pub name: String,
    pub tests: Vec<TestRecord>,
    pub created_ms: u64,
    pub finished_ms: Option<u64>,
    pub cancel_reason: Option<String>,
    pub totals: Option<pb::Totals>,
    pub running: usize,
}

impl Tracker {
    pub fn new(session_id: &str) -> Self {
        Tracker { session_id: session_id.to_string(), ..Tracker::default() }
    }

    /// The tests this client submitted, known before the session's first event arrives.
    pub fn expect(&mut self, paths: &[String]) {
        if self.tests.is_empty() && !paths.is_empty() {
            self.tests = paths.iter().map(|p| TestRecord { path: p.clone(), ..TestRecord::default() }).collect();
            self.created_ms = testgrid_proto::now_ms();
        }
    }

    pub fn path(&self, index: u32) -> &str {
        self.tests.get(index as usize).map(|t| t.path.as_str()).unwrap_or("?")
    }

    pub fn apply(&mut self, event: &pb::SessionEvent) {
        let Some(kind) = &event.kind else { return };
        match kind {
            Kind::Created(c) => {
                self.name = c.name.clone();
                self.created_ms = event.time_ms;
                self.tests =
                    c.test_paths.iter().map(|p| TestRecord { path: p.clone(), ..TestRecord::default() }).collect();
            }
            Kind::TestStarted(s) => {
                if let Some(test) = self.tests.get_mut(s.test_index as usize)
                    && !test.running
                {
                    test.running = true;
                    self.running += 1;
                }
            }
            Kind::TestFinished(f) => {
                let Some(test) = self.tests.get_mut(f.test_index as usize) else { return };
                let outcome = pb::Outcome::of(f.outcome);
                let report = f.report.clone().unwrap_or_default();
                // A cancelled test that never started has no attempt worth keeping, but it
                // still needs one to carry its message.
                if std::mem::take(&mut test.running) {
                    self.running = self.running.saturating_sub(1);
                }
                if !f.worker.is_empty() || test.attempts.is_empty() || f.r#final {
                    test.attempts.push(Attempt {
                        attempt: f.attempt,
                        worker: f.worker.clone(),
                        outcome: pb::Outcome::try_from(report.outcome).unwrap_or(outcome),
                        report,
                        time_ms: event.time_ms,
                    });
                }
                if f.r#final {
                    test.outcome = Some(outcome);
                }
            }
            Kind::TestRequeued(r) => {
                if let Some(test) = self.tests.get_mut(r.test_index as usize)
                    && std::mem::take(&mut test.running)
                {
                    self.running = self.running.saturating_sub(1);
                }
            }
            // The test stays running until one of its attempts reports.
            Kind::ResultDiscarded(_) | Kind::TestSpeculated(_) => {}
            Kind::Cancelled(c) => self.cancel_reason = Some(c.reason.clone()),
            // A failed setup shows in every test it failed.
            Kind::SetupFinished(_) => {}
            Kind::Finished(f) => {
                self.finished_ms = Some(event.time_ms);
                self.totals = f.totals;
                if !f.cancel_reason.is_empty() {
                    self.cancel_reason = Some(f.cancel_reason.clone());
                }
                self.running = 0;
            }
        }
    }

    /// The session's wall time so far: from its creation to its end (0 before either).
    pub fn wall_ms(&self) -> u64 {
        self.finished_ms.unwrap_or(self.created_ms).saturating_sub(self.created_ms)
    }

    /// True when every test passed (flaky counts as passed).
    pub fn all_passed(&self) -> bool {
        !self.tests.is_empty() && self.tests.iter().all(|t| matches!(t.outcome, Some(o) if o.is_success()))
    }
}
