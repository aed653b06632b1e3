//! The one task that owns the scheduling core. gRPC handlers send it [`Command`]s; it feeds the
//! core, performs the core's actions (send to a worker, append to a session log) and answers
//! queries. It never awaits on a peer: worker channels are bounded and sized so that a full
//! channel means the worker stopped reading, which is treated as a lost worker.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use testgrid_proto as pb;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::{debug, error, info, warn};

use super::convert::key_to_pb;
use super::metrics::Metrics;
use crate::core::demand::{PerPool, Policy, PoolDemand};
use crate::core::{
    Action, Claim, Event, Input, Millis, RestoredSession, Scheduler, SessionId, SessionSpec, SessionView, WorkerId,
    WorkerSpec, WorkerView,
};
use crate::store::history::{HistoryStore, Sample};
use crate::store::{SessionStore, StoreError};
use testgrid_proto::frameworks::expand_command;

/// The grid's state as the HTTP side shows it.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub pools: Vec<PoolDemand>,
    pub sessions: SessionCounts,
    pub worker_losses: u64,
    /// Each pool's `--min-workers` (for a pool nothing names yet).
    pub min_workers: PerPool,
    /// Why the store can no longer be written to (the coordinator is stopping).
    pub store_failed: Option<String>,
}

impl Snapshot {
    /// The desired workers of a pool nothing names: its minimum.
    pub fn minimum(&self, pool: &str) -> u32 {
        self.min_workers.get(pool)
    }
}

/// Sessions the grid keeps, by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionCounts {
    pub running: u64,
    pub passed: u64,
    pub failed: u64,
    pub cancelled: u64,
}

impl SessionCounts {
    fn of(sessions: &[SessionView]) -> Self {
        let mut counts = SessionCounts::default();
        for s in sessions {
            let slot = match s.state() {
                "running" => &mut counts.running,
                "cancelled" => &mut counts.cancelled,
                "failed" => &mut counts.failed,
                _ => &mut counts.passed,
            };
            *slot += 1;
        }
        counts
    }
}

/// What flows to a worker's `Attach` response stream.
pub type WorkerTx = mpsc::Sender<Result<pb::CoordinatorMessage, Status>>;

/// Requests to the engine task.
pub enum Command {
    /// Feed the core an input that needs no answer.
    Input(Input),
    /// `id`: the one the client chose, if any; `Err` in the reply: that id is in use.
    Submit {
        spec: SessionSpec,
        id: Option<SessionId>,
        /// Each test's estimate from the project's history (empty: none).
        estimates: Vec<crate::core::plan::Estimate>,
        reply: oneshot::Sender<Result<SessionId, SessionId>>,
    },
    /// `None` in the reply: no such session; `Some(false)`: it had already finished.
    Cancel {
        session: SessionId,
        reason: String,
        reply: oneshot::Sender<Option<bool>>,
    },
    Get {
        session: SessionId,
        reply: oneshot::Sender<Option<SessionView>>,
    },
    List {
        reply: oneshot::Sender<Vec<SessionView>>,
    },
    Workers {
        reply: oneshot::Sender<Vec<WorkerView>>,
    },
    /// The grid's state for `/metrics`, `/api/v1/demand` and `/healthz`.
    Snapshot {
        reply: oneshot::Sender<Snapshot>,
    },
    /// A worker registered: keep its channel and tell the core (with what it claims to hold).
    Attach {
        id: WorkerId,
        spec: WorkerSpec,
        claims: Vec<Claim>,
        tx: WorkerTx,
    },
    /// A worker's stream ended.
    Detach {
        id: WorkerId,
        reason: String,
    },
}

/// A cheap handle to send commands to the engine.
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Command>,
}

/// The engine task stopped (the coordinator is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("the coordinator is shutting down")]
pub struct EngineGone;

impl From<EngineGone> for Status {
    fn from(e: EngineGone) -> Self {
        Status::unavailable(e.to_string())
    }
}

impl EngineHandle {
    pub async fn send(&self, command: Command) -> Result<(), EngineGone> {
        self.tx.send(command).await.map_err(|_| EngineGone)
    }

    /// Send a command built around a reply channel and wait for the reply.
    pub async fn ask<T>(&self, build: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, EngineGone> {
        let (reply, rx) = oneshot::channel();
        self.send(build(reply)).await?;
        rx.await.map_err(|_| EngineGone)
    }
}

/// The core's clock: wall-clock milliseconds at start plus monotonic time since, so that event
/// times read as dates while a wall-clock step (NTP) can neither expire every worker's liveness
/// at once nor stretch a session deadline.
struct Clock {
    wall_at_start: Millis,
    start: std::time::Instant,
}

impl Clock {
    fn new() -> Self {
        Clock { wall_at_start: testgrid_proto::now_ms(), start: std::time::Instant::now() }
    }

    fn now(&self) -> Millis {
        self.wall_at_start + self.start.elapsed().as_millis() as u64
    }
}

/// How often the engine gives the core a `Tick` (deadlines, liveness).
const TICK: Duration = Duration::from_millis(200);

/// Start the engine task; it runs until `shutdown` is cancelled.
pub fn spawn(
    mut scheduler: Scheduler,
    restored: Vec<RestoredSession>,
    (store, history): (Arc<dyn SessionStore>, Arc<dyn HistoryStore>),
    metrics: Arc<Metrics>,
    ping_every: Duration,
    demand: Policy,
    shutdown: CancellationToken,
) -> (EngineHandle, tokio::task::JoinHandle<Result<(), StoreError>>) {
    let (tx, rx) = mpsc::channel(4096);
    let clock = Clock::new();
    if !restored.is_empty() {
        info!(sessions = restored.len(), "sessions restored from the store");
    }
    scheduler.restore(clock.now(), restored);
    let engine = Engine {
        scheduler,
        store,
        history,
        metrics,
        workers: HashMap::new(),
        ping_every,
        demand,
        clock,
        stop: shutdown.clone(),
        failed: None,
    };
    let task = tokio::spawn(engine.run(rx, shutdown));
    (EngineHandle { tx }, task)
}

struct Engine {
    scheduler: Scheduler,
    store: Arc<dyn SessionStore>,
    /// Learns every final outcome's duration.
    history: Arc<dyn HistoryStore>,
    metrics: Arc<Metrics>,
    workers: HashMap<WorkerId, WorkerTx>,
    /// How often every worker hears from us, so that it can tell a dead coordinator.
    ping_every: Duration,
    /// How desired workers are figured.
    demand: Policy,
    clock: Clock,
    /// Stops the coordinator when the store fails: it could no longer keep its promises.
    stop: CancellationToken,
    /// Why the store failed, which the task returns, so that the coordinator exits with an error.
    failed: Option<StoreError>,
}

impl Engine {
    /// Run until shutdown; an error if the store failed (the coordinator must not look as if it
    /// stopped cleanly).
    async fn run(mut self, mut rx: mpsc::Receiver<Command>, shutdown: CancellationToken) -> Result<(), StoreError> {
        // If this task ends for any reason, a panic included, the whole coordinator stops rather
        // than serve on with nobody scheduling.
        let _stop_all = shutdown.clone().drop_guard();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ping = tokio::time::interval(self.ping_every);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                command = rx.recv() => match command {
                    Some(command) => self.command(command),
                    None => break,
                },
                _ = ping.tick() => self.ping_all(),
                _ = tick.tick() => {
                    if let Some(e) = self.store.failed() {
                        self.store_failed(e);
                    }
                    self.input(Input::Tick);
                }
            }
        }
        // Dropping the worker channels ends their streams; workers reconnect to the next coordinator.
        self.workers.clear();
        self.failed.map_or(Ok(()), Err)
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Input(input) => {
                let report = match &input {
                    Input::Finished { worker, key, .. } | Input::Resent { worker, key, .. } => Some((*worker, *key)),
                    _ => None,
                };
                self.input(input);
                if let Some((worker, key)) = report {
                    self.ack_when_durable(worker, key);
                }
            }
            Command::Submit { spec, id, estimates, reply } => {
                let id = match id {
                    Some(id) if self.store.log(id).is_some() || self.scheduler.session(id).is_some() => {
                        let _ = reply.send(Err(id));
                        return;
                    }
                    Some(id) => id,
                    None => SessionId(uuid::Uuid::new_v4()),
                };
                info!(session = %id, tests = spec.tests.len(), name = %spec.name, "session submitted");
                self.metrics.sessions_submitted.inc();
                // Create the log before anyone can learn the id, so `Watch` always finds it.
                if let Err(e) = self.store.create(id, &spec, self.clock.now()) {
                    // The reply is dropped: the submitter hears that the coordinator stopped.
                    self.store_failed(e);
                    return;
                }
                self.input(Input::Submit { id, spec, estimates });
                // Answered once the session and its first events are durable. The submitter
                // may have gone away; the session runs regardless.
                self.store.when_durable(Box::new(move || {
                    let _ = reply.send(Ok(id));
                }));
            }
            Command::Cancel { session, reason, reply } => {
                let answer = self.scheduler.session(session).map(|view| !view.finished);
                if answer == Some(true) {
                    self.input(Input::Cancel { session, reason });
                }
                let _ = reply.send(answer);
            }
            Command::Get { session, reply } => {
                let _ = reply.send(self.scheduler.session(session));
            }
            Command::List { reply } => {
                let _ = reply.send(self.scheduler.sessions());
            }
            Command::Workers { reply } => {
                let _ = reply.send(self.scheduler.workers());
            }
            Command::Snapshot { reply } => {
                let _ = reply.send(Snapshot {
                    pools: self.scheduler.demand(self.clock.now(), &self.demand),
                    sessions: SessionCounts::of(&self.scheduler.sessions()),
                    worker_losses: self.scheduler.worker_losses(),
                    min_workers: self.demand.min_workers.clone(),
                    store_failed: self.store.failed().map(|e| e.to_string()),
                });
            }
            Command::Attach { id, spec, claims, tx } => {
                info!(worker = %spec.name, worker_id = %id, slots = spec.slots, claims = claims.len(), "worker joined");
                self.workers.insert(id, tx);
                self.input(Input::WorkerJoined { id, spec, claims });
            }
            Command::Detach { id, reason } => {
                if self.workers.remove(&id).is_some() {
                    info!(worker_id = %id, %reason, "worker lost");
                    self.input(Input::WorkerLost { id, reason });
                }
            }
        }
    }

    /// Tell `worker` its report of `key` is kept, once what it caused is durable: until then the
    /// worker keeps the report, to send again if we restart. A worker gone, or not reading, is
    /// not waited for: it sends the report again, which is then dropped as counted.
    fn ack_when_durable(&self, worker: WorkerId, key: crate::core::AssignmentKey) {
        let Some(tx) = self.workers.get(&worker).cloned() else { return };
        let history = Arc::clone(&self.history);
        // The report's events first, then what the history learned from it.
        self.store.when_durable(Box::new(move || {
            history.when_durable(Box::new(move || {
                let acked = pb::ReportsAcked { assignments: vec![key_to_pb(&key)] };
                let kind = pb::coordinator_message::Kind::ReportsAcked(acked);
                let _ = tx.try_send(Ok(pb::CoordinatorMessage { kind: Some(kind) }));
            }));
        }));
    }

    /// Learn a final outcome's duration (and its cases') for the session's project. A cancelled
    /// test teaches nothing: it may never have run, and what its last real run said (a failure)
    /// must still put it first next time.
    fn learn(
        &self,
        now: Millis,
        session: SessionId,
        test: u32,
        outcome: crate::core::Outcome,
        report: &crate::core::Report,
    ) {
        if outcome == crate::core::Outcome::Cancelled {
            return;
        }
        let Some(spec) = self.scheduler.spec(session) else { return };
        let Some(path) = spec.tests.get(test as usize) else { return };
        let mut samples = Vec::with_capacity(1 + report.cases.len());
        samples.push(Sample { test: path.clone(), case: String::new(), duration_ms: report.duration_ms, outcome });
        let ran = |c: &&crate::core::CaseResult| !c.name.is_empty() && c.outcome != crate::core::Outcome::Cancelled;
        samples.extend(report.cases.iter().filter(ran).map(|c| Sample {
            test: path.clone(),
            case: c.name.clone(),
            duration_ms: c.duration_ms,
            outcome: c.outcome,
        }));
        self.history.record(&spec.project, now, samples);
    }

    /// The store cannot keep what it is given: stop, rather than make promises it cannot keep.
    fn store_failed(&mut self, e: StoreError) {
        if self.failed.is_none() {
            error!(error = %e, "stopping: the session store failed");
            self.failed = Some(e);
        }
        self.stop.cancel();
    }

    fn ping_all(&mut self) {
        let time_ms = self.clock.now();
        let ids: Vec<WorkerId> = self.workers.keys().copied().collect();
        let mut pending = Vec::new();
        for id in ids {
            self.send_worker(id, pb::coordinator_message::Kind::Ping(pb::Ping { time_ms }), &mut pending);
        }
        for input in pending {
            self.input(input);
        }
    }

    fn input(&mut self, input: Input) {
        let now = self.clock.now();
        let mut pending = vec![input];
        while let Some(input) = pending.pop() {
            let actions = self.scheduler.handle(now, input);
            for action in actions {
                self.perform(now, action, &mut pending);
            }
        }
    }

    /// Perform one action. A worker whose channel is closed or full is lost: that becomes a new
    /// input, handled after this batch.
    fn perform(&mut self, now: Millis, action: Action, pending: &mut Vec<Input>) {
        match action {
            Action::Assign { worker, assignment } => {
                let spec = &assignment.spec;
                let msg = pb::coordinator_message::Kind::Assign(pb::Assign {
                    assignment: Some(key_to_pb(&assignment.key)),
                    test_path: assignment.path.clone(),
                    command: spec.runner.template().map(|t| expand_command(t, &assignment.path)).unwrap_or_default(),
                    env: spec.env.clone().into_iter().collect(),
                    timeout_ms: spec.test_timeout_ms,
                    runner: Some(pb::Runner::from(&spec.runner)),
                    workspace: spec
                        .workspace
                        .as_ref()
                        .map(|w| pb::Digest { hash: w.hash.clone(), size_bytes: w.size_bytes }),
                    setup: spec.setup.as_deref().map(pb::Setup::from),
                    project: spec.project.clone(),
                    artifacts: spec
                        .artifacts
                        .as_ref()
                        .map(|a| pb::ArtifactSpec { globs: a.globs.clone(), max_bytes: a.max_bytes }),
                    secret_env: spec.secret_env.clone(),
                });
                debug!(worker_id = %worker, session = %assignment.key.session, test = %assignment.path,
                       attempt = assignment.key.attempt, "assign");
                self.metrics.assignments.inc();
                self.send_worker(worker, msg, pending);
            }
            Action::CancelAssignment { worker, key, reason } => {
                let msg =
                    pb::coordinator_message::Kind::Cancel(pb::Cancel { assignment: Some(key_to_pb(&key)), reason });
                self.send_worker(worker, msg, pending);
            }
            Action::Emit { session, event } => {
                self.log_event(session, &event);
                if let Event::TestFinished { is_final: true, outcome, test, report, .. } = &event {
                    self.metrics.test_finished(*outcome, report.duration_ms);
                    self.learn(now, session, *test, *outcome, report);
                }
                if matches!(event, Event::TestRequeued { .. }) {
                    self.metrics.requeues.inc();
                }
                if matches!(event, Event::Finished { .. }) {
                    // Every worker hears it: a worker that ran none of its tests ignores it.
                    let ended = pb::SessionEnded { session_id: session.to_string() };
                    for worker in self.workers.keys().copied().collect::<Vec<_>>() {
                        let kind = pb::coordinator_message::Kind::SessionEnded(ended.clone());
                        self.send_worker(worker, kind, pending);
                    }
                }
                match self.store.log(session) {
                    Some(log) => {
                        if let Err(e) = log.append(now, event) {
                            self.store_failed(e);
                        }
                    }
                    // Every session's log is created before the core hears of it.
                    None => error!(session = %session, "an event for a session the store does not have was dropped"),
                }
            }
            Action::Forget { session } => self.store.forget(session),
            Action::DropOutput { session } => {
                info!(session = %session, "its output was dropped: the grid is over --max-output-total");
                self.store.drop_output(session);
            }
            Action::DisconnectWorker { worker, reason } => {
                if let Some(tx) = self.workers.remove(&worker) {
                    warn!(worker_id = %worker, %reason, "worker lost");
                    let _ = tx.try_send(Err(Status::unavailable(format!("worker declared lost: {reason}"))));
                }
            }
        }
    }

    /// A log line for what a session's event says happened to one of its tests (or to it),
    /// with the session, test, attempt and worker as fields, in the session's span. Starts and
    /// passes are `debug`: a big session would otherwise log twice per test (and their span is
    /// a `debug` one, which costs nothing when it is filtered out).
    fn log_event(&self, session: SessionId, event: &Event) {
        let path = |test: u32| {
            self.scheduler.spec(session).and_then(|s| s.tests.get(test as usize)).map_or("", String::as_str)
        };
        let passed = |outcome: crate::core::Outcome| {
            matches!(super::convert::outcome_to_pb(outcome).key(), "passed" | "skipped")
        };
        let at_info = match event {
            Event::TestFinished { outcome, .. } => !passed(*outcome),
            Event::TestRequeued { .. } | Event::Cancelled { .. } | Event::Finished { .. } => true,
            _ => false,
        };
        let span = if at_info {
            tracing::info_span!("session", session = %session)
        } else {
            tracing::debug_span!("session", session = %session)
        };
        let _entered = span.entered();
        match event {
            Event::TestStarted { test, attempt, worker } => {
                debug!(session = %session, test = %path(*test), attempt, worker = %worker, "test started");
            }
            Event::TestFinished { test, attempt, worker, is_final, outcome, report } => {
                let (test, ms) = (path(*test), report.duration_ms);
                let name = super::convert::outcome_to_pb(*outcome).key();
                if at_info {
                    info!(session = %session, test, attempt, worker = %worker, outcome = name, duration_ms = ms, is_final, "test finished");
                } else {
                    debug!(session = %session, test, attempt, worker = %worker, outcome = name, duration_ms = ms, is_final, "test finished");
                }
            }
            Event::TestRequeued { test, attempt, reason, .. } => {
                info!(session = %session, test = %path(*test), attempt, %reason, "test requeued");
            }
            Event::Cancelled { reason } => info!(session = %session, %reason, "session cancelled"),
            Event::Finished { totals, .. } => info!(
                session = %session,
                total = totals.total,
                passed = totals.passed,
                failed = totals.failures(),
                "session finished"
            ),
            _ => {}
        }
    }

    fn send_worker(&mut self, worker: WorkerId, kind: pb::coordinator_message::Kind, pending: &mut Vec<Input>) {
        let Some(tx) = self.workers.get(&worker) else { return };
        if let Err(e) = tx.try_send(Ok(pb::CoordinatorMessage { kind: Some(kind) })) {
            let reason = match e {
                mpsc::error::TrySendError::Full(_) => "stopped reading its stream",
                mpsc::error::TrySendError::Closed(_) => "stream closed",
            };
            self.workers.remove(&worker);
            pending.push(Input::WorkerLost { id: worker, reason: reason.to_string() });
        }
    }
}
