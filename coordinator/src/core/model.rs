//! The scheduling core's vocabulary: ids, specs, inputs, actions and events.
//!
//! Everything here is plain data (serialisable, no `Option`s forced on us by protobuf), so that a
//! sequence of inputs can be recorded, persisted and replayed.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
pub use testgrid_proto::frameworks::{Framework, Isolation, Runner};
use uuid::Uuid;

/// Milliseconds since the UNIX epoch. Time is an input of the core, never read inside it.
pub type Millis = u64;

/// A session's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SessionId(pub Uuid);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A worker connection's id. A worker that reconnects gets a new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WorkerId(pub Uuid);

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One attempt of one test of one session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AssignmentKey {
    pub session: SessionId,
    pub test: u32,
    pub attempt: u32,
}

/// How a test ended (or, in a report, how one attempt ended).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Outcome {
    Passed,
    Failed,
    Flaky,
    TimedOut,
    Lost,
    Cancelled,
    Error,
    Skipped,
}

impl Outcome {
    /// Whether the outcome counts as a pass for the exit code.
    pub fn is_success(self) -> bool {
        matches!(self, Outcome::Passed | Outcome::Flaky | Outcome::Skipped)
    }
}

/// One test case's result inside a test unit (warm runners report these).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseResult {
    pub name: String,
    pub classname: String,
    pub outcome: Outcome,
    pub duration_ms: u64,
    pub message: String,
    #[serde(with = "serde_bytes")]
    pub output: Vec<u8>,
}

/// What one attempt produced, as the worker reported it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub outcome: Outcome,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub duration_ms: u64,
    #[serde(with = "serde_bytes")]
    pub output: Vec<u8>,
    pub output_dropped_bytes: u64,
    pub message: String,
    pub cases: Vec<CaseResult>,
    /// Files the attempt sent back (checked at the service edge). Passed on untouched.
    #[serde(default)]
    pub artifacts: Vec<Artifact>,
}

/// A file a test sent back (`pb::Artifact`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    pub path: String,
    /// Its blob, `None` when it was refused.
    pub blob: Option<Workspace>,
    pub refused: String,
}

/// Which files of each test's tree come back (`pb::ArtifactSpec`, checked).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactSpec {
    pub globs: Vec<String>,
    pub max_bytes: u64,
}

impl Report {
    /// A report for an attempt that never reached a worker's executor.
    pub fn synthetic(outcome: Outcome, message: impl Into<String>) -> Self {
        Report {
            outcome,
            exit_code: None,
            signal: None,
            duration_ms: 0,
            output: Vec::new(),
            output_dropped_bytes: 0,
            message: message.into(),
            cases: Vec::new(),
            artifacts: Vec::new(),
        }
    }
}

/// Everything the coordinator needs to run a session (validated at the service edge).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSpec {
    pub name: String,
    pub tests: Vec<String>,
    /// How the tests run (framework and options); the core passes it on to workers untouched.
    pub runner: Runner,
    pub env: BTreeMap<String, String>,
    pub test_timeout_ms: u64,
    pub retries: u32,
    pub required_labels: BTreeMap<String, String>,
    pub session_timeout_ms: u64,
    /// 0: the scheduler's default.
    pub max_worker_losses: u32,
    /// Cancel the session once no client has watched it for the liveness timeout.
    #[serde(default)]
    pub cancel_on_disconnect: bool,
    /// The workspace tree the tests run in (its root manifest's digest, checked when submitted);
    /// `None`: workers run them in their own root. Passed on to workers untouched.
    #[serde(default)]
    pub workspace: Option<Workspace>,
    /// Run once on each worker before the session's first test there. Passed on untouched.
    #[serde(default)]
    pub setup: Option<Box<testgrid_proto::setup::Setup>>,
    /// Which project the session tests (empty: none). Passed on untouched.
    #[serde(default)]
    pub project: String,
    /// Files each test writes that come back to the client. Passed on untouched.
    #[serde(default)]
    pub artifacts: Option<ArtifactSpec>,
    /// Each test's file size in bytes (0: unknown), for estimating tests the history has not
    /// seen. Empty: none known.
    #[serde(default)]
    pub sizes: Vec<u64>,
    /// Serve the tests in the order given (`--order given`), not by history.
    #[serde(default)]
    pub keep_order: bool,
    /// Stop the session once this many tests have failed (`--max-fail`); 0: never.
    #[serde(default)]
    pub max_failures: u32,
    /// Its weight in the fair share of slots between sessions (`--priority`); 0 counts as 1.
    #[serde(default)]
    pub priority: u32,
    /// The most assignments it may hold at once, running or prefetched (`--max-slots`); 0: no cap.
    #[serde(default)]
    pub max_slots: u32,
    /// Near the end, start a straggling test again on an idle slot; the first result wins
    /// (`--speculate`).
    #[serde(default)]
    pub speculate: bool,
    /// The name of the token that submitted it (empty on an open grid): who may see and cancel
    /// it besides admins. Set by the coordinator, never by the client.
    #[serde(default)]
    pub owner: String,
    /// Names of `env` variables that are secrets: workers mask their values in reports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_env: Vec<String>,
}

impl SessionSpec {
    /// Its weight in the fair share.
    pub fn weight(&self) -> u32 {
        self.priority.max(1)
    }
}

/// A workspace tree by its root manifest's digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workspace {
    pub hash: String,
    pub size_bytes: u64,
}

/// What a worker says about itself when it joins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerSpec {
    pub name: String,
    pub slots: u32,
    pub labels: BTreeMap<String, String>,
    pub version: String,
}

/// Everything that can happen to the scheduler.
// Inputs are built and handled one at a time, never stored in bulk: a large `Submit` costs a
// move, not memory.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Input {
    /// A new session, with each test's estimate from the project's history (empty: none). The
    /// id is chosen by the caller so that inputs replay deterministically.
    Submit { id: SessionId, spec: SessionSpec, estimates: Vec<super::plan::Estimate> },
    /// A worker registered on a new stream, claiming what it still holds from an earlier one.
    WorkerJoined { id: WorkerId, spec: WorkerSpec, claims: Vec<Claim> },
    /// A worker's stream ended or errored.
    WorkerLost { id: WorkerId, reason: String },
    /// A worker proved it is alive.
    Heartbeat { worker: WorkerId },
    /// A worker's slot began an assignment.
    Started { worker: WorkerId, key: AssignmentKey },
    /// A worker finished an assignment.
    Finished { worker: WorkerId, key: AssignmentKey, report: Report },
    /// A worker sent again, on a new stream, a report it was never told was kept.
    Resent { worker: WorkerId, key: AssignmentKey, report: Report },
    /// Cancel a session.
    Cancel { session: SessionId, reason: String },
    /// A worker is shutting down: no new work for it; it hands back what it has not started.
    Draining { worker: WorkerId },
    /// A client began following a session's events.
    WatchStarted { session: SessionId },
    /// A client stopped following a session's events.
    WatchEnded { session: SessionId },
    /// A worker's setup of a session is done.
    SetupFinished { worker: WorkerId, session: SessionId, report: Report, reused: bool },
    /// Time passed: check deadlines and liveness.
    Tick,
}

/// An assignment a reconnecting worker says it still holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub key: AssignmentKey,
    /// A slot runs it (otherwise it waits in the worker's queue).
    pub started: bool,
}

/// One test attempt handed to a worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    pub key: AssignmentKey,
    pub path: String,
    pub spec: Arc<SessionSpec>,
}

/// Everything the scheduler wants done; the service layer performs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send an assignment to a worker.
    Assign { worker: WorkerId, assignment: Assignment },
    /// Tell a worker to stop an assignment it holds.
    CancelAssignment { worker: WorkerId, key: AssignmentKey, reason: String },
    /// Append an event to a session's log.
    Emit { session: SessionId, event: Event },
    /// Close a worker's stream (it was declared lost without its stream ending).
    DisconnectWorker { worker: WorkerId, reason: String },
    /// The scheduler forgot a finished session (beyond `keep_finished_sessions`): drop its log.
    Forget { session: SessionId },
    /// Drop a finished session's report output from its log (the grid is over its total).
    DropOutput { session: SessionId },
}

/// Per-outcome counts of a session's tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Totals {
    pub total: u32,
    pub passed: u32,
    pub failed: u32,
    pub flaky: u32,
    pub timed_out: u32,
    pub lost: u32,
    pub cancelled: u32,
    pub error: u32,
}

impl Totals {
    pub fn count(&mut self, outcome: Outcome) {
        let slot = match outcome {
            Outcome::Passed | Outcome::Skipped => &mut self.passed,
            Outcome::Failed => &mut self.failed,
            Outcome::Flaky => &mut self.flaky,
            Outcome::TimedOut => &mut self.timed_out,
            Outcome::Lost => &mut self.lost,
            Outcome::Cancelled => &mut self.cancelled,
            Outcome::Error => &mut self.error,
        };
        *slot += 1;
    }

    /// How many tests ended in a failure of any kind (failed, timed out, lost, error).
    pub fn failures(&self) -> u32 {
        self.failed + self.timed_out + self.lost + self.error
    }

    /// How many tests have an outcome.
    pub fn ended(&self) -> u32 {
        self.passed + self.failed + self.flaky + self.timed_out + self.lost + self.cancelled + self.error
    }
}

/// What a session's log records, exactly as the core emitted it (output already trimmed to the
/// session's budget). The store numbers them; the service serves them to watchers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// `order`: the order its tests are served in (empty: as listed). `estimates`: what each
    /// test's own history says it takes, in ms (0: the history does not know it), kept for
    /// `--speculate` (empty otherwise).
    Created {
        name: String,
        paths: Vec<String>,
        #[serde(default)]
        order: Vec<u32>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        estimates: Vec<u64>,
    },
    TestStarted {
        test: u32,
        attempt: u32,
        worker: String,
    },
    TestFinished {
        test: u32,
        attempt: u32,
        worker: String,
        is_final: bool,
        outcome: Outcome,
        report: Report,
    },
    TestRequeued {
        test: u32,
        attempt: u32,
        reason: String,
        cause: Requeue,
    },
    ResultDiscarded {
        test: u32,
        attempt: u32,
        reason: String,
    },
    Cancelled {
        reason: String,
    },
    Finished {
        totals: Totals,
        cancel_reason: Option<String>,
    },
    SetupFinished {
        worker: String,
        report: Report,
        reused: bool,
    },
    /// A second attempt of a straggling test went to `worker` while `running` goes on.
    TestSpeculated {
        test: u32,
        running: u32,
        attempt: u32,
        worker: String,
        reason: String,
    },
}

/// Why a test went back to its queue with a new attempt (neither a failure nor a retry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Requeue {
    /// Its worker was lost. `charged`: the loss counts against the test, which may have caused
    /// it (see `max_worker_losses`).
    WorkerLost { charged: bool },
    /// Its worker handed it back (shutting down).
    HandedBack,
    /// The coordinator restarted and no worker claimed the attempt in time.
    Unclaimed,
}

/// A session as a store kept it, for a coordinator that restarts ([`Scheduler::restore`]).
///
/// [`Scheduler::restore`]: super::Scheduler::restore
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoredSession {
    pub id: SessionId,
    pub spec: SessionSpec,
    pub created_at: Millis,
    pub state: Restored,
}

/// How far a restored session had come.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Restored {
    /// It had finished: only its summary is needed.
    /// `output_bytes`: the report output its log holds.
    Finished { finished_at: Millis, totals: Totals, cancel_reason: Option<String>, output_bytes: u64 },
    /// It was running: its whole event log, from which its tests' states are rebuilt.
    Unfinished { events: Vec<Event> },
}

/// A session as the service shows it (`Get`, `List`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionView {
    pub id: SessionId,
    pub name: String,
    pub finished: bool,
    pub totals: Totals,
    pub running: u32,
    pub created_at: Millis,
    pub finished_at: Option<Millis>,
    pub cancel_reason: Option<String>,
    pub owner: String,
}

impl SessionView {
    /// `running`, or how it ended: `cancelled`, `failed` (a test failed in any way), `passed`.
    pub fn state(&self) -> &'static str {
        if !self.finished {
            "running"
        } else if self.cancel_reason.is_some() {
            "cancelled"
        } else if self.totals.failures() > 0 {
            "failed"
        } else {
            "passed"
        }
    }
}

/// A worker as the service shows it (`ListWorkers`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerView {
    pub id: WorkerId,
    pub spec: WorkerSpec,
    pub held: Vec<AssignmentKey>,
    pub running_tests: Vec<String>,
    pub last_seen: Millis,
    pub connected_at: Millis,
    pub draining: bool,
}

impl WorkerView {
    pub fn state(&self) -> super::demand::WorkerState {
        super::demand::WorkerState::of(self.draining, self.held.is_empty())
    }
}
