//! The worker's link to the coordinator: connect, register, heartbeat, receive assignments and
//! cancels, report starts and results; reconnect with exponential backoff and jitter
//! ([`backoff`]) when the coordinator is away.
//!
//! This is the I/O around the pure [`slots`] state: messages and finished jobs go in, the
//! effects that come out are performed here (send a report, start a job). A send that fails
//! means the stream is gone: the connection ends and the worker reconnects.
//!
//! When a stream breaks, everything the worker held is killed: the coordinator has already
//! requeued it with a new attempt number, so a late result could never count. It must not know
//! how a job runs (that is the [`Executor`]'s business).

pub mod backoff;
pub mod slots;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use testgrid_proto as pb;
use testgrid_proto::coordinator_message::Kind as FromCoordinator;
use testgrid_proto::worker_message::Kind as ToCoordinator;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, info, warn};

use crate::config::{Config, Error, Stop};
use crate::job::{Executor, Job};
use backoff::Backoff;
use slots::{Effect, Slots};

/// How long connecting, attaching and receiving `Welcome` may take before the worker gives up
/// on this attempt (a coordinator behind a black-holing network accepts TCP and says nothing).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// HTTP/2 keepalive towards the coordinator, also between streams.
const KEEPALIVE: Duration = Duration::from_secs(5);

/// Messages waiting to go to the coordinator.
const OUTBOUND_QUEUE: usize = 1024;

/// Connect and serve until told to stop; reconnect whenever the coordinator goes away. `root`
/// is the canonical workspace root every job runs in.
pub async fn run<E: Executor>(config: Config, root: &Path, executor: Arc<E>, stop: Stop) -> Result<(), Error> {
    let mut target = testgrid_proto::client::Target::new(&config.grid, KEEPALIVE);
    target.keepalive_while_idle = true;
    let endpoint = target.endpoint().map_err(|e| Error::BadGrid { grid: config.grid.clone(), problem: e.problem })?;
    let mut backoff = Backoff::new();
    let workspaces = Arc::new(crate::workspace::Shared::new(
        config.cache_dir.clone(),
        config.cache_size,
        config.setup_stamps.clone(),
    ));
    // Idle sessions' folders go; all of them when the worker stops.
    let sweeper = {
        let workspaces = Arc::clone(&workspaces);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(30));
            loop {
                every.tick().await;
                workspaces.sweep(false);
            }
        })
    };
    let result = serve(&config, root, executor, &stop, &endpoint, &mut backoff, &workspaces).await;
    sweeper.abort();
    workspaces.sweep(true);
    result
}

/// [`run`]'s loop of connections.
async fn serve<E: Executor>(
    config: &Config,
    root: &Path,
    executor: Arc<E>,
    stop: &Stop,
    endpoint: &tonic::transport::Endpoint,
    backoff: &mut Backoff,
    workspaces: &Arc<crate::workspace::Shared>,
) -> Result<(), Error> {
    loop {
        if stop.requested() {
            return Ok(());
        }
        let outcome = tokio::select! {
            () = stop.drain.cancelled() => return Ok(()),
            () = stop.now.cancelled() => return Ok(()),
            channel = tokio::time::timeout(HANDSHAKE_TIMEOUT, endpoint.connect()) => match channel {
                Ok(Ok(channel)) => attach(config, root, channel, Arc::clone(&executor), stop, backoff, workspaces).await,
                Ok(Err(e)) => Err(Problem::Retry(format!("cannot reach the coordinator at {}: {}", config.grid, testgrid_proto::error_chain(&e)))),
                Err(_) => Err(Problem::Retry(format!("cannot reach the coordinator at {}: no answer within {}s", config.grid, HANDSHAKE_TIMEOUT.as_secs()))),
            },
        };
        match outcome {
            Ok(()) => return Ok(()),
            Err(Problem::Refused(why)) => return Err(Error::Refused { grid: config.grid.clone(), why }),
            Err(Problem::Retry(problem)) => {
                if stop.requested() {
                    return Ok(());
                }
                let delay = backoff.next_delay();
                warn!("{problem}; retrying in {}", humantime::format_duration(round_ms(delay)));
                tokio::select! {
                    () = stop.drain.cancelled() => return Ok(()),
                    () = stop.now.cancelled() => return Ok(()),
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

/// Why a connection ended.
enum Problem {
    /// Lost or unreachable: try again after a backoff.
    Retry(String),
    /// The coordinator rejected this worker's registration: retrying cannot help.
    Refused(String),
}

/// The stream to the coordinator is gone: a send failed.
#[derive(Debug)]
struct Gone;

/// The sending half of the stream, and the jobs it runs.
struct Link<E> {
    out: mpsc::Sender<pb::WorkerMessage>,
    executor: Arc<E>,
    /// Running jobs; each ends with its slot, assignment and report.
    tasks: JoinSet<(u32, pb::AssignmentRef, pb::TestReport)>,
    /// What each task runs, for a task that panicked.
    running: HashMap<tokio::task::Id, (u32, pb::AssignmentRef)>,
    /// Sessions' workspace folders, and the channel their blobs come through.
    workspaces: Arc<crate::workspace::Shared>,
    channel: tonic::transport::Channel,
    /// Every test runs in the worker's root ([`Config::own_tree`]).
    own_tree: bool,
    /// How setup commands run.
    settings: crate::exec::Settings,
}

impl<E: Executor> Link<E> {
    async fn send(&self, kind: ToCoordinator) -> Result<(), Gone> {
        self.out.send(pb::WorkerMessage { kind: Some(kind) }).await.map_err(|_| Gone)
    }

    /// Do what the slots state asks.
    async fn perform(&mut self, effects: Vec<Effect>) -> Result<(), Gone> {
        for effect in effects {
            match effect {
                Effect::Report { assignment, report } => {
                    let finished = pb::TestFinished { assignment: Some(assignment), report: Some(report) };
                    self.send(ToCoordinator::TestFinished(finished)).await?;
                }
                Effect::Start { slot, job, cancel } => {
                    debug!(slot, test = %job.path, "start");
                    let started = pb::TestStarted {
                        assignment: Some(job.assignment.clone()),
                        started_at_ms: testgrid_proto::now_ms(),
                    };
                    self.send(ToCoordinator::TestStarted(started)).await?;
                    let assignment = job.assignment.clone();
                    let tree = Tree {
                        workspaces: Arc::clone(&self.workspaces),
                        channel: self.channel.clone(),
                        own: self.own_tree,
                        settings: self.settings.clone(),
                        out: self.out.clone(),
                    };
                    let executor = Arc::clone(&self.executor);
                    let task = self.tasks.spawn(async move {
                        let (assignment, report) = run_job(*job, slot, cancel, executor.as_ref(), &tree).await;
                        (slot, assignment, report)
                    });
                    self.running.insert(task.id(), (slot, assignment));
                }
            }
        }
        Ok(())
    }

    /// A session is over: its runners finish and go, then its workspace folder (once no test of
    /// it runs here).
    fn session_ended(&self, session: &str) {
        let (executor, workspaces, session) =
            (Arc::clone(&self.executor), Arc::clone(&self.workspaces), session.to_string());
        tokio::spawn(async move {
            executor.end_session(&session).await;
            workspaces.ended(&session);
        });
    }

    /// The next job to end; `None` once none runs.
    async fn next_done(&mut self) -> Option<(u32, pb::AssignmentRef, pb::TestReport)> {
        loop {
            match self.tasks.join_next_with_id().await? {
                Ok((id, done)) => {
                    self.running.remove(&id);
                    return Some(done);
                }
                Err(e) => {
                    // Every task is recorded when it is spawned; one that is not has nobody to
                    // report to, and the others must still be waited for.
                    let Some((slot, assignment)) = self.running.remove(&e.id()) else { continue };
                    warn!(slot, "a test's executor failed: {e}");
                    let report = pb::TestReport {
                        outcome: pb::Outcome::Error as i32,
                        message: format!("the worker failed while running this test: {e}"),
                        ..Default::default()
                    };
                    return Some((slot, assignment, report));
                }
            }
        }
    }
}

/// Where a job's tree comes from and how its setup runs.
struct Tree {
    workspaces: Arc<crate::workspace::Shared>,
    channel: tonic::transport::Channel,
    /// Every test runs in the worker's root ([`Config::own_tree`]).
    own: bool,
    settings: crate::exec::Settings,
    /// Where the coordinator hears how a session's setup went.
    out: mpsc::Sender<pb::WorkerMessage>,
}

/// Run `job` in `slot`: in its session's tree (materialised the first time), after its
/// session's setup there, and send back the files it wrote that the session asked for.
async fn run_job<E: Executor>(
    mut job: Job,
    slot: u32,
    cancel: tokio_util::sync::CancellationToken,
    executor: &E,
    tree: &Tree,
) -> (pb::AssignmentRef, pb::TestReport) {
    let started = std::time::Instant::now();
    // The session's own tree, when it sent one: the test runs there.
    let in_use = match job.workspace.clone().filter(|_| !tree.own) {
        Some(digest) => {
            let got = tokio::select! {
                got = in_workspace(&tree.workspaces, &job, &digest, &tree.channel) => got,
                () = cancel.cancelled() => {
                    return (job.assignment, crate::exec::report::simple(pb::Outcome::Cancelled, "cancelled", started));
                }
            };
            match got {
                Ok(in_use) => {
                    job.root = in_use.root.clone();
                    job.build_dir = in_use.build_dir.clone();
                    job.tree_files = Some(Arc::clone(&in_use.files));
                    Some(in_use)
                }
                Err(problem) => {
                    warn!(test = %job.path, "{problem}");
                    return (job.assignment, crate::exec::report::simple(pb::Outcome::Error, problem, started));
                }
            }
        }
        None => None,
    };
    if job.setup.is_some() {
        let session_id = job.assignment.session_id.clone();
        let tell = |report: pb::TestReport, reused: bool| {
            let finished = pb::SetupFinished { session_id, report: Some(report), reused };
            // Only news for the user: a full queue (a stream going away) drops it.
            let _ = tree.out.try_send(pb::WorkerMessage { kind: Some(ToCoordinator::SetupFinished(finished)) });
        };
        let set_up = match &in_use {
            Some(in_use) => match tree.workspaces.get().await {
                Ok(materialised) => {
                    let place = crate::setup::Place::Materialised(materialised);
                    crate::setup::ensure(&in_use.setup, &job, place, &tree.settings, &cancel, tell).await
                }
                // The tree came from there: it opened.
                Err(problem) => Err(crate::exec::report::simple(pb::Outcome::Error, problem, started)),
            },
            None => {
                let state = tree.workspaces.own_setups.state(&job.assignment.session_id);
                let place = crate::setup::Place::Own(tree.workspaces.stamps.clone());
                crate::setup::ensure(&state, &job, place, &tree.settings, &cancel, tell).await
            }
        };
        if let Err(report) = set_up {
            return (job.assignment, report);
        }
    }
    // Kernel file times lag the clock by up to a tick: a file the test writes at once may look
    // a little older than this.
    let since = std::time::SystemTime::now() - std::time::Duration::from_millis(50);
    // The token is a child of the connection's: a connection that goes away cancels it too.
    // Draining does not: a running test may finish.
    let mut report = executor.run(slot, &job, cancel).await;
    if let Some(spec) = &job.artifacts {
        let tree_files = job.tree_files.as_deref();
        report.artifacts = crate::artifacts::send_back(&job.root, spec, since, tree_files, &tree.channel).await;
    }
    // The tree stays in use until its files are sent.
    drop(in_use);
    (job.assignment, report)
}

/// The folder of `job`'s session tree on this worker, or why there is none.
async fn in_workspace(
    workspaces: &crate::workspace::Shared,
    job: &Job,
    digest: &pb::Digest,
    channel: &tonic::transport::Channel,
) -> Result<crate::workspace::InUse, String> {
    let why =
        |problem: String| format!("the session's workspace could not be set up on worker {}: {problem}", job.worker);
    let workspaces = workspaces.get().await.map_err(why)?;
    workspaces.acquire(&job.assignment.session_id, digest, channel, &job.project).await.map_err(why)
}

/// One connection's life. `Ok` when the worker is shutting down; `Err` when the connection was
/// lost (reconnect) or refused (give up).
async fn attach<E: Executor>(
    config: &Config,
    root: &Path,
    channel: tonic::transport::Channel,
    executor: Arc<E>,
    stop: &Stop,
    backoff: &mut Backoff,
    workspaces: &Arc<crate::workspace::Shared>,
) -> Result<(), Problem> {
    let blob_channel = channel.clone();
    let mut client = testgrid_proto::client::workers(channel);
    let (out_tx, out_rx) = mpsc::channel::<pb::WorkerMessage>(OUTBOUND_QUEUE);
    let register = pb::Register {
        name: config.name.clone(),
        slots: config.slots,
        labels: config.labels.clone().into_iter().collect(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    };
    out_tx
        .send(pb::WorkerMessage { kind: Some(ToCoordinator::Register(register)) })
        .await
        .map_err(|_| Problem::Retry("internal: outbound queue closed".to_string()))?;
    let refused = |s: tonic::Status| match s.code() {
        tonic::Code::InvalidArgument | tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => {
            Problem::Refused(s.message().to_string())
        }
        _ => Problem::Retry(format!("the coordinator at {} did not take the worker: {}", config.grid, s.message())),
    };
    let handshake = async {
        let mut inbound = client.attach(ReceiverStream::new(out_rx)).await.map_err(refused)?.into_inner();
        match inbound.next().await {
            Some(Ok(pb::CoordinatorMessage { kind: Some(FromCoordinator::Welcome(w)) })) => Ok((inbound, w)),
            Some(Ok(_)) => Err(Problem::Retry("the coordinator did not answer Register with Welcome".to_string())),
            Some(Err(s)) => Err(refused(s)),
            None => Err(Problem::Retry("the coordinator closed the stream before Welcome".to_string())),
        }
    };
    let (mut inbound, welcome) = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await.map_err(|_| {
        Problem::Retry(format!(
            "no Welcome from the coordinator at {} within {}s",
            config.grid,
            HANDSHAKE_TIMEOUT.as_secs()
        ))
    })??;
    backoff.reset();
    info!(grid = %config.grid, worker_id = %welcome.worker_id, slots = config.slots, "registered");

    // `conn` ends with this connection and kills what runs.
    let conn = stop.now.child_token();
    let mut state = Slots::new(config.slots, conn.clone());
    let mut link = Link {
        out: out_tx,
        executor,
        tasks: JoinSet::new(),
        running: HashMap::new(),
        workspaces: Arc::clone(workspaces),
        channel: blob_channel,
        own_tree: config.own_tree,
        settings: crate::exec::Settings {
            output_limit: config.output_limit,
            kill_grace: config.kill_grace,
            die_with_worker: config.die_with_worker,
        },
    };
    let closed = || "the stream to the coordinator closed".to_string();

    let heartbeat_every = Duration::from_millis(welcome.heartbeat_interval_ms.max(50));
    let liveness = Duration::from_millis(welcome.liveness_timeout_ms.max(heartbeat_every.as_millis() as u64 * 2));
    let mut heartbeat = tokio::time::interval(heartbeat_every);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    let mut drain_deadline: Option<Instant> = None;

    let result: Result<(), String> = loop {
        let deadline = drain_deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            () = stop.now.cancelled() => break Ok(()),
            () = stop.drain.cancelled(), if drain_deadline.is_none() => {
                drain_deadline = Some(Instant::now() + config.drain_timeout);
                let drain = pb::Drain { reason: "worker stopping".into(), drain_timeout_ms: config.drain_timeout.as_millis() as u64 };
                if link.send(ToCoordinator::Drain(drain)).await.is_err() {
                    break Ok(());
                }
                let handed = state.drain();
                let count = handed.len();
                if link.perform(handed).await.is_err() {
                    break Ok(());
                }
                info!(
                    running = state.running(),
                    handed_back = count,
                    "draining: no new work; running tests have {} to finish",
                    humantime::format_duration(config.drain_timeout)
                );
                if state.running() == 0 {
                    info!("drained: every running test finished");
                    break Ok(());
                }
            }
            () = tokio::time::sleep_until(deadline), if drain_deadline.is_some() => {
                warn!(running = state.running(), "drain timeout passed; killing what still runs and handing it back");
                break Ok(());
            }
            Some((slot, assignment, report)) = link.next_done(), if !link.tasks.is_empty() => {
                if link.perform(state.finished(slot, assignment, report)).await.is_err() {
                    break Err(closed());
                }
                if state.is_draining() && state.running() == 0 {
                    info!("drained: every running test finished");
                    break Ok(());
                }
            }
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > liveness {
                    break Err(format!("no word from the coordinator for {}s", liveness.as_secs()));
                }
                let held = pb::Heartbeat { held: state.held() as u32 };
                if link.send(ToCoordinator::Heartbeat(held)).await.is_err() {
                    break Err(closed());
                }
            }
            message = inbound.next() => match message {
                None => break Err("the coordinator ended the stream".to_string()),
                Some(Err(s)) => break Err(format!("lost the coordinator: {}", s.message())),
                Some(Ok(pb::CoordinatorMessage { kind })) => {
                    last_heard = Instant::now();
                    if let Some(FromCoordinator::SessionEnded(ended)) = &kind {
                        link.session_ended(&ended.session_id);
                    }
                    let effects = match kind {
                        Some(kind) => on_message(kind, &mut state, link.executor.as_ref(), root, &config.name),
                        None => Vec::new(),
                    };
                    if link.perform(effects).await.is_err() {
                        break Err(closed());
                    }
                }
            },
        }
    };

    // Stop everything: running tests are killed, and what has not started is handed back. On
    // shutdown the reports still go out, so that the coordinator requeues at once instead of
    // waiting for the stream to end; once a send fails, nobody is listening any more.
    conn.cancel();
    let mut gone = link.perform(state.close()).await.is_err();
    let all_stopped = async {
        while let Some((slot, assignment, report)) = link.next_done().await {
            let effects = state.finished(slot, assignment, report);
            if !gone {
                gone = link.perform(effects).await.is_err();
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(30), all_stopped).await.is_err() {
        warn!("some tests did not stop within 30s of being killed");
    }
    drop(link);
    if result.is_ok() {
        // Our half of the stream is closed; the coordinator ends its half once it has read
        // everything we sent (the hand-backs above), so wait for that before the process exits.
        let flushed = async { while let Some(Ok(_)) = inbound.next().await {} };
        let _ = tokio::time::timeout(Duration::from_secs(3), flushed).await;
    }
    result.map_err(Problem::Retry)
}

/// A message from the coordinator, turned into events of the slots state.
fn on_message<E: Executor>(
    kind: FromCoordinator,
    state: &mut Slots,
    executor: &E,
    root: &Path,
    worker: &str,
) -> Vec<Effect> {
    match kind {
        FromCoordinator::Welcome(_) => {
            warn!("ignoring a second Welcome");
            Vec::new()
        }
        FromCoordinator::Ping(_) | FromCoordinator::SessionEnded(_) => Vec::new(),
        FromCoordinator::Assign(a) => {
            let Some(incoming) = Job::from_assign(a, root, worker) else {
                warn!("ignoring an Assign without an assignment");
                return Vec::new();
            };
            match &incoming {
                Ok(job) => debug!(test = %job.path, attempt = job.assignment.attempt, "assigned"),
                Err(refused) => warn!(test = %refused.path, "refusing an assignment: {}", refused.why),
            }
            let depth = incoming.as_ref().map_or(1, |job| executor.depth(job));
            state.assign(incoming, depth)
        }
        FromCoordinator::Cancel(c) => match c.assignment {
            Some(assignment) => state.cancel(&assignment, &c.reason),
            None => Vec::new(),
        },
    }
}
