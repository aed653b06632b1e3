//! The worker's link to the coordinator: connect, register, heartbeat, receive assignments and
//! cancels, report starts and results; reconnect with exponential backoff and jitter
//! ([`backoff`]) when the coordinator is away.
//!
//! This is the I/O around the pure [`slots`] state: messages and finished jobs go in, the
//! effects that come out are performed here (send a report, start a job). A send that fails
//! means the stream is gone: the connection ends and the worker reconnects.
//!
//! When a stream breaks, the worker holds on ([`Holding`]): what runs goes on, nothing new
//! starts, and reports are kept, for up to the coordinator's liveness timeout, retrying every
//! [`HOLDING_RETRY`] meanwhile. A new stream claims what is held in its `Register` and sends the
//! kept reports again: a coordinator that restarted adopts what is still live (no test runs
//! twice because of a restart); one that did not has requeued it all and cancels the claims.
//! Past the bound everything held is killed and forgotten. Every report is kept until the
//! coordinator says it is durable (`ReportsAcked`), so that a crash between the two loses none.
//! It must not know how a job runs (that is the [`Executor`]'s business).

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
    target.credentials = testgrid_proto::client::Credentials::new(config.token.as_deref())?;
    target.tls = config.tls.clone();
    if let Some(warning) = target.plaintext_warning() {
        tracing::warn!("{warning}");
    }
    let endpoint = target.endpoint().map_err(|e| Error::BadGrid { grid: config.grid.clone(), problem: e.problem })?;
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
    let mut holding = Holding {
        state: Slots::new(config.slots, stop.now.child_token()),
        executor,
        tasks: JoinSet::new(),
        running: HashMap::new(),
        workspaces: Arc::clone(&workspaces),
        own_tree: config.own_tree,
        settings: crate::exec::Settings {
            output_limit: config.output_limit,
            kill_grace: config.kill_grace,
            die_with_worker: config.die_with_worker,
        },
        current: Current::default(),
        unacked: Unacked::default(),
        acks: false,
        adrift: None,
        hold_for: Duration::ZERO,
    };
    let result = serve(&config, root, &stop, (&target, &endpoint), &mut holding).await;
    if !holding.tasks.is_empty() {
        // Stopped with no stream open: nobody to hand anything back to.
        holding.stop_offline().await;
    }
    sweeper.abort();
    workspaces.sweep(true);
    result
}

/// [`run`]'s loop of streams.
async fn serve<E: Executor>(
    config: &Config,
    root: &Path,
    stop: &Stop,
    (target, endpoint): (&testgrid_proto::client::Target, &tonic::transport::Endpoint),
    holding: &mut Holding<E>,
) -> Result<(), Error> {
    let mut backoff = Backoff::new();
    loop {
        if stop.requested() {
            return Ok(());
        }
        let claims = holding.state.claims();
        let opening = async {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, endpoint.connect()).await {
                Ok(Ok(channel)) => handshake(config, target.authorized(channel), claims).await,
                Ok(Err(e)) => match testgrid_proto::client::wrong_scheme(target).await {
                    Some(message) => Err(Problem::Refused(message)),
                    None if testgrid_proto::error_chain(&e).contains("invalid peer certificate") => {
                        Err(Problem::Refused(format!(
                            "its certificate is not trusted ({}); give the worker --ca FILE (or TESTGRID_CA) naming the authority that signed it",
                            testgrid_proto::error_chain(&e)
                        )))
                    }
                    None => Err(Problem::Retry(format!(
                        "cannot reach the coordinator at {}: {}",
                        config.grid,
                        testgrid_proto::error_chain(&e)
                    ))),
                },
                Err(_) => Err(Problem::Retry(format!(
                    "cannot reach the coordinator at {}: no answer within {}s",
                    config.grid,
                    HANDSHAKE_TIMEOUT.as_secs()
                ))),
            }
        };
        let opened = tokio::select! {
            () = stop.drain.cancelled() => return Ok(()),
            () = stop.now.cancelled() => return Ok(()),
            opened = holding.offline(opening, false) => opened,
        };
        let outcome = match opened {
            Ok(stream) => {
                backoff.reset();
                attached(config, root, stream, stop, holding).await
            }
            Err(problem) => Err(problem),
        };
        match outcome {
            Ok(()) => return Ok(()),
            Err(Problem::Refused(why)) => return Err(Error::Refused { grid: config.grid.clone(), why }),
            Err(Problem::Retry(problem)) => {
                holding.stream_lost();
                if stop.requested() {
                    return Ok(());
                }
                let mut delay = backoff.next_delay();
                // Within the holding bound only: past it there is nothing worth hurrying for.
                if holding.adrift.is_some() {
                    delay = delay.min(HOLDING_RETRY);
                }
                warn!("{problem}; retrying in {}", humantime::format_duration(round_ms(delay)));
                tokio::select! {
                    () = stop.drain.cancelled() => return Ok(()),
                    () = stop.now.cancelled() => return Ok(()),
                    () = holding.offline(tokio::time::sleep(delay), true) => {}
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

/// The stream open now: where messages go, and the channel blobs come through.
#[derive(Clone)]
struct Link {
    out: mpsc::Sender<pb::WorkerMessage>,
    channel: testgrid_proto::client::GridChannel,
}

impl Link {
    async fn send(&self, kind: ToCoordinator) -> Result<(), Gone> {
        self.out.send(pb::WorkerMessage { kind: Some(kind) }).await.map_err(|_| Gone)
    }
}

/// The stream open now, for jobs that outlive the stream they started on: its sender (none
/// while no stream is open: a job holds no sender of its own, which would keep a dead stream's
/// request open) and the last channel, which reconnects by itself.
#[derive(Default)]
struct Stream {
    out: Option<mpsc::Sender<pb::WorkerMessage>>,
    channel: Option<testgrid_proto::client::GridChannel>,
}

type Current = Arc<std::sync::RwLock<Stream>>;

fn current(current: &Current) -> std::sync::RwLockReadGuard<'_, Stream> {
    // A writer that panicked left a whole `Stream` behind: still usable.
    current.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Marks the worker registered while it lives.
struct Connected(Option<Arc<std::sync::atomic::AtomicBool>>);

impl Connected {
    fn new(flag: Option<Arc<std::sync::atomic::AtomicBool>>) -> Self {
        if let Some(flag) = &flag {
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Connected(flag)
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        if let Some(flag) = &self.0 {
            flag.store(false, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

fn set_current(
    current: &Current,
    out: Option<mpsc::Sender<pb::WorkerMessage>>,
    channel: Option<testgrid_proto::client::GridChannel>,
) {
    let mut now = current.write().unwrap_or_else(std::sync::PoisonError::into_inner);
    now.out = out;
    if channel.is_some() {
        now.channel = channel;
    }
}

/// How long a worker whose stream broke waits between tries while it holds work: the
/// coordinator is usually restarting, and what runs should be claimed as soon as it is back.
const HOLDING_RETRY: Duration = Duration::from_millis(250);

/// Reports kept until the coordinator acknowledges them, at most.
const UNACKED_COUNT: usize = 4096;
const UNACKED_BYTES: usize = 256 * 1024 * 1024;

/// Reports the coordinator has not yet said it kept, oldest first, bounded in count and bytes
/// (beyond that the oldest go: their tests are run again, nothing is lost).
#[derive(Default)]
struct Unacked {
    reports: std::collections::VecDeque<pb::TestFinished>,
    bytes: usize,
}

impl Unacked {
    fn push(&mut self, finished: pb::TestFinished) {
        use prost::Message as _;
        self.bytes += finished.encoded_len();
        self.reports.push_back(finished);
        while self.reports.len() > UNACKED_COUNT || (self.bytes > UNACKED_BYTES && self.reports.len() > 1) {
            if let Some(old) = self.reports.pop_front() {
                self.bytes = self.bytes.saturating_sub(old.encoded_len());
                warn!("too many unacknowledged reports kept; forgetting the oldest (its test may run again)");
            }
        }
    }

    fn ack(&mut self, acked: &[pb::AssignmentRef]) {
        use prost::Message as _;
        for done in acked {
            if let Some(at) = self.reports.iter().position(|r| r.assignment.as_ref() == Some(done))
                && let Some(r) = self.reports.remove(at)
            {
                self.bytes = self.bytes.saturating_sub(r.encoded_len());
            }
        }
    }

    fn clear(&mut self) {
        self.reports.clear();
        self.bytes = 0;
    }
}

/// What the worker holds across streams: the slots state, the jobs running in them, and the
/// reports the coordinator has not acknowledged. A stream that breaks pauses it (what runs goes
/// on, nothing new starts) for up to the coordinator's liveness timeout; a new stream claims it
/// all and resumes it.
struct Holding<E> {
    state: Slots,
    executor: Arc<E>,
    /// Running jobs; each ends with its slot, assignment and report.
    tasks: JoinSet<(u32, pb::AssignmentRef, pb::TestReport)>,
    /// What each task runs, for a task that panicked.
    running: HashMap<tokio::task::Id, (u32, pb::AssignmentRef)>,
    /// Sessions' workspace folders.
    workspaces: Arc<crate::workspace::Shared>,
    /// Every test runs in the worker's root ([`Config::own_tree`]).
    own_tree: bool,
    /// How setup commands run.
    settings: crate::exec::Settings,
    current: Current,
    unacked: Unacked,
    /// Whether the coordinator of the current stream acknowledges reports.
    acks: bool,
    /// Since when no stream is open while something is held or unreported (`None` past the
    /// holding bound).
    adrift: Option<Instant>,
    /// How long to hold on without a stream (the coordinator's liveness timeout).
    hold_for: Duration,
}

impl<E: Executor> Holding<E> {
    /// Do what the slots state asks; reports go to `link` (and are kept until acknowledged), or
    /// are kept for the next stream when there is none.
    async fn perform(&mut self, effects: Vec<Effect>, link: Option<&Link>) -> Result<(), Gone> {
        for effect in effects {
            match effect {
                Effect::Report { assignment, report } => {
                    let finished =
                        pb::TestFinished { assignment: Some(assignment), report: Some(report), resent: false };
                    match link {
                        Some(link) => {
                            if self.acks {
                                self.unacked.push(finished.clone());
                            }
                            link.send(ToCoordinator::TestFinished(finished)).await?;
                        }
                        None => self.unacked.push(finished),
                    }
                }
                Effect::Start { slot, job, cancel } => {
                    debug!(slot, test = %job.path, "start");
                    let assignment = job.assignment.clone();
                    let tree = Tree {
                        workspaces: Arc::clone(&self.workspaces),
                        current: Arc::clone(&self.current),
                        own: self.own_tree,
                        settings: self.settings.clone(),
                    };
                    let executor = Arc::clone(&self.executor);
                    // Every line the test's run logs says which session, test and attempt.
                    let span = tracing::info_span!(
                        "test",
                        session = %assignment.session_id,
                        test = %job.path,
                        attempt = assignment.attempt,
                        slot
                    );
                    let task = self.tasks.spawn(tracing::Instrument::instrument(
                        async move {
                            let (assignment, report) = run_job(*job, slot, cancel, executor.as_ref(), &tree).await;
                            (slot, assignment, report)
                        },
                        span,
                    ));
                    self.running.insert(task.id(), (slot, assignment.clone()));
                    // Started first: a stream that breaks now leaves a job that runs (and is
                    // claimed on the next stream), never one the slots think runs but none does.
                    if let Some(link) = link {
                        let started =
                            pb::TestStarted { assignment: Some(assignment), started_at_ms: testgrid_proto::now_ms() };
                        link.send(ToCoordinator::TestStarted(started)).await?;
                    }
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

    /// The stream broke: hold on to what runs, start nothing, until a new stream or the bound.
    fn stream_lost(&mut self) {
        set_current(&self.current, None, None);
        self.state.pause();
        if self.adrift.is_none() && self.holds_anything() {
            info!(
                held = self.state.held(),
                "holding on to running tests for up to {} while the coordinator is away",
                humantime::format_duration(self.hold_for)
            );
            self.adrift = Some(Instant::now());
        }
    }

    /// Whether a broken stream left anything to claim or report.
    fn holds_anything(&self) -> bool {
        self.state.held() > 0 || !self.unacked.reports.is_empty()
    }

    /// Wait for `until` while no stream is open: jobs that end keep their reports for the next
    /// stream, and once the holding bound passes (and `may_abandon`: not while a new stream is
    /// being opened, whose `Register` claims what is held) everything held is given up.
    async fn offline<T>(&mut self, until: impl std::future::Future<Output = T>, may_abandon: bool) -> T {
        tokio::pin!(until);
        loop {
            let deadline = self.adrift.map(|since| since + self.hold_for);
            tokio::select! {
                out = &mut until => return out,
                Some((slot, assignment, report)) = self.next_done(), if !self.tasks.is_empty() => {
                    let effects = self.state.finished(slot, assignment, report);
                    // With no stream, performing only keeps reports: it cannot fail.
                    let _ = self.perform(effects, None).await;
                }
                () = tokio::time::sleep_until(deadline.unwrap_or_else(far_future)), if may_abandon && deadline.is_some() => {
                    warn!(
                        held = self.state.held(),
                        "the coordinator stayed away for {}; giving up the tests held for it (it runs them again elsewhere)",
                        humantime::format_duration(self.hold_for)
                    );
                    self.state.abandon();
                    self.adrift = None;
                }
            }
        }
    }

    /// The worker stops with no stream open: kill everything and wait for it to end.
    async fn stop_offline(&mut self) {
        let _ = self.state.close();
        let all_stopped = async { while self.next_done().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(30), all_stopped).await.is_err() {
            warn!("some tests did not stop within 30s of being killed");
        }
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400)
}

/// Where a job's tree comes from and how its setup runs.
struct Tree {
    workspaces: Arc<crate::workspace::Shared>,
    /// The stream open now (or the last one): blobs come through its channel, and the
    /// coordinator hears how a session's setup went on it.
    current: Current,
    /// Every test runs in the worker's root ([`Config::own_tree`]).
    own: bool,
    settings: crate::exec::Settings,
}

/// Run `job` in `slot`: in its session's tree (materialised the first time), after its
/// session's setup there, and send back the files it wrote that the session asked for.
async fn run_job<E: Executor>(
    job: Job,
    slot: u32,
    cancel: tokio_util::sync::CancellationToken,
    executor: &E,
    tree: &Tree,
) -> (pb::AssignmentRef, pb::TestReport) {
    let secrets = job.secrets.clone();
    let (assignment, mut report) = run_job_unmasked(job, slot, cancel, executor, tree).await;
    testgrid_proto::secrets::mask_report(&mut report, &secrets);
    (assignment, report)
}

/// [`run_job`] before the session's secrets are masked in its report.
async fn run_job_unmasked<E: Executor>(
    mut job: Job,
    slot: u32,
    cancel: tokio_util::sync::CancellationToken,
    executor: &E,
    tree: &Tree,
) -> (pb::AssignmentRef, pb::TestReport) {
    let started = std::time::Instant::now();
    // A job starts only while a stream is open, so there is a channel.
    let Some(channel) = current(&tree.current).channel.clone() else {
        return (
            job.assignment,
            crate::exec::report::simple(pb::Outcome::Error, "no stream to the coordinator", started),
        );
    };
    // The session's own tree, when it sent one: the test runs there.
    let in_use = match job.workspace.clone().filter(|_| !tree.own) {
        Some(digest) => {
            let got = tokio::select! {
                got = in_workspace(&tree.workspaces, &job, &digest, &channel) => got,
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
        let secrets = job.secrets.clone();
        let tell = |mut report: pb::TestReport, reused: bool| {
            testgrid_proto::secrets::mask_report(&mut report, &secrets);
            let finished = pb::SetupFinished { session_id, report: Some(report), reused };
            // Only news for the user: no stream now, or a full queue, drops it.
            if let Some(out) = &current(&tree.current).out {
                let _ = out.try_send(pb::WorkerMessage { kind: Some(ToCoordinator::SetupFinished(finished)) });
            }
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
    // The token is a child of the worker's: stopping the worker cancels it too. Neither
    // draining nor the stream breaking does: a running test may finish.
    let mut report = executor.run(slot, &job, cancel).await;
    if let Some(spec) = &job.artifacts {
        let tree_files = job.tree_files.as_deref();
        // The stream open now, which may not be the one the test started on.
        let channel = current(&tree.current).channel.clone().unwrap_or(channel);
        report.artifacts = crate::artifacts::send_back(&job.root, spec, since, tree_files, &channel).await;
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
    channel: &testgrid_proto::client::GridChannel,
) -> Result<crate::workspace::InUse, String> {
    let why =
        |problem: String| format!("the session's workspace could not be set up on worker {}: {problem}", job.worker);
    let workspaces = workspaces.get().await.map_err(why)?;
    workspaces.acquire(&job.assignment.session_id, digest, channel, &job.project).await.map_err(why)
}

/// A stream that has been welcomed.
struct Opened {
    link: Link,
    inbound: tonic::Streaming<pb::CoordinatorMessage>,
    welcome: pb::Welcome,
}

/// Open `Attach` on `channel`, register (claiming `held`) and wait for `Welcome`.
async fn handshake(
    config: &Config,
    channel: testgrid_proto::client::GridChannel,
    held: Vec<pb::HeldAssignment>,
) -> Result<Opened, Problem> {
    let mut client = testgrid_proto::client::workers(channel.clone());
    let (out_tx, out_rx) = mpsc::channel::<pb::WorkerMessage>(OUTBOUND_QUEUE);
    let register = pb::Register {
        name: config.name.clone(),
        slots: config.slots,
        labels: config.labels.clone().into_iter().collect(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        held,
    };
    out_tx
        .send(pb::WorkerMessage { kind: Some(ToCoordinator::Register(register)) })
        .await
        .map_err(|_| Problem::Retry("internal: outbound queue closed".to_string()))?;
    let refused = |s: tonic::Status| match s.code() {
        tonic::Code::InvalidArgument | tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => {
            Problem::Refused(s.message().to_string())
        }
        tonic::Code::FailedPrecondition if s.message() == testgrid_proto::client::TLS_ONLY => {
            Problem::Refused(s.message().to_string())
        }
        _ => Problem::Retry(format!("the coordinator at {} did not take the worker: {}", config.grid, s.message())),
    };
    let welcomed = async {
        let mut inbound = client.attach(ReceiverStream::new(out_rx)).await.map_err(refused)?.into_inner();
        match inbound.next().await {
            Some(Ok(pb::CoordinatorMessage { kind: Some(FromCoordinator::Welcome(w)) })) => Ok((inbound, w)),
            Some(Ok(_)) => Err(Problem::Retry("the coordinator did not answer Register with Welcome".to_string())),
            Some(Err(s)) => Err(refused(s)),
            None => Err(Problem::Retry("the coordinator closed the stream before Welcome".to_string())),
        }
    };
    let (inbound, welcome) = tokio::time::timeout(HANDSHAKE_TIMEOUT, welcomed).await.map_err(|_| {
        Problem::Retry(format!(
            "no Welcome from the coordinator at {} within {}s",
            config.grid,
            HANDSHAKE_TIMEOUT.as_secs()
        ))
    })??;
    Ok(Opened { link: Link { out: out_tx, channel }, inbound, welcome })
}

/// One stream's life after `Welcome`. `Ok` when the worker is shutting down; `Err` when the
/// stream was lost (reconnect; what runs goes on meanwhile).
async fn attached<E: Executor>(
    config: &Config,
    root: &Path,
    opened: Opened,
    stop: &Stop,
    holding: &mut Holding<E>,
) -> Result<(), Problem> {
    let Opened { link, mut inbound, welcome } = opened;
    info!(grid = %config.grid, worker_id = %welcome.worker_id, slots = config.slots, "registered");
    let _connected = Connected::new(config.connected.clone());
    let closed = || Problem::Retry("the stream to the coordinator closed".to_string());

    let heartbeat_every = Duration::from_millis(welcome.heartbeat_interval_ms.max(50));
    let liveness = Duration::from_millis(welcome.liveness_timeout_ms.max(heartbeat_every.as_millis() as u64 * 2));
    set_current(&holding.current, Some(link.out.clone()), Some(link.channel.clone()));
    holding.hold_for = liveness;
    holding.acks = welcome.acks_reports;
    holding.adrift = None;
    // What ended while no stream was open (or was never acknowledged) goes again; the
    // coordinator drops what it had already counted.
    for report in &holding.unacked.reports {
        let resent = pb::TestFinished { resent: true, ..report.clone() };
        link.send(ToCoordinator::TestFinished(resent)).await.map_err(|_| closed())?;
    }
    if !holding.acks {
        holding.unacked.clear();
    }
    let resumed = holding.state.resume();
    holding.perform(resumed, Some(&link)).await.map_err(|_| closed())?;

    let mut heartbeat = tokio::time::interval(heartbeat_every);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    let mut drain_deadline: Option<Instant> = None;

    let result: Result<(), String> = loop {
        let deadline = drain_deadline.unwrap_or_else(far_future);
        tokio::select! {
            () = stop.now.cancelled() => break Ok(()),
            () = stop.drain.cancelled(), if drain_deadline.is_none() => {
                drain_deadline = Some(Instant::now() + config.drain_timeout);
                let drain = pb::Drain { reason: "worker stopping".into(), drain_timeout_ms: config.drain_timeout.as_millis() as u64 };
                if link.send(ToCoordinator::Drain(drain)).await.is_err() {
                    break Ok(());
                }
                let handed = holding.state.drain();
                let count = handed.len();
                if holding.perform(handed, Some(&link)).await.is_err() {
                    break Ok(());
                }
                info!(
                    running = holding.state.running(),
                    handed_back = count,
                    "draining: no new work; running tests have {} to finish",
                    humantime::format_duration(config.drain_timeout)
                );
                if holding.state.running() == 0 {
                    info!("drained: every running test finished");
                    break Ok(());
                }
            }
            () = tokio::time::sleep_until(deadline), if drain_deadline.is_some() => {
                warn!(running = holding.state.running(), "drain timeout passed; killing what still runs and handing it back");
                break Ok(());
            }
            Some((slot, assignment, report)) = holding.next_done(), if !holding.tasks.is_empty() => {
                let effects = holding.state.finished(slot, assignment, report);
                if holding.perform(effects, Some(&link)).await.is_err() {
                    break Err("the stream to the coordinator closed".to_string());
                }
                if holding.state.is_draining() && holding.state.running() == 0 {
                    info!("drained: every running test finished");
                    break Ok(());
                }
            }
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > liveness {
                    break Err(format!("no word from the coordinator for {}s", liveness.as_secs()));
                }
                let held = pb::Heartbeat { held: holding.state.held() as u32 };
                if link.send(ToCoordinator::Heartbeat(held)).await.is_err() {
                    break Err("the stream to the coordinator closed".to_string());
                }
            }
            message = inbound.next() => match message {
                None => break Err("the coordinator ended the stream".to_string()),
                Some(Err(s)) => break Err(format!("lost the coordinator: {}", s.message())),
                Some(Ok(pb::CoordinatorMessage { kind })) => {
                    last_heard = Instant::now();
                    match &kind {
                        Some(FromCoordinator::SessionEnded(ended)) => holding.session_ended(&ended.session_id),
                        Some(FromCoordinator::ReportsAcked(acked)) => holding.unacked.ack(&acked.assignments),
                        _ => {}
                    }
                    let effects = match kind {
                        Some(kind) => on_message(kind, &mut holding.state, holding.executor.as_ref(), root, &config.name),
                        None => Vec::new(),
                    };
                    if holding.perform(effects, Some(&link)).await.is_err() {
                        break Err("the stream to the coordinator closed".to_string());
                    }
                }
            },
        }
    };
    let Err(problem) = result else {
        shut_down(holding, link, &mut inbound).await;
        return Ok(());
    };
    Err(Problem::Retry(problem))
}

/// The worker stops with a stream open: running tests are killed, and what has not started is
/// handed back. The reports still go out, so that the coordinator requeues at once instead of
/// waiting for the stream to end; once a send fails, nobody is listening any more.
async fn shut_down<E: Executor>(
    holding: &mut Holding<E>,
    link: Link,
    inbound: &mut tonic::Streaming<pb::CoordinatorMessage>,
) {
    let closing = holding.state.close();
    let mut gone = holding.perform(closing, Some(&link)).await.is_err();
    let all_stopped = async {
        while let Some((slot, assignment, report)) = holding.next_done().await {
            let effects = holding.state.finished(slot, assignment, report);
            if !gone {
                gone = holding.perform(effects, Some(&link)).await.is_err();
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(30), all_stopped).await.is_err() {
        warn!("some tests did not stop within 30s of being killed");
    }
    // Every sender of this stream goes, so that our half of it closes; the coordinator ends its
    // half once it has read everything we sent (the hand-backs above): wait for that before the
    // process exits.
    set_current(&holding.current, None, None);
    drop(link);
    let flushed = async { while let Some(Ok(_)) = inbound.next().await {} };
    let _ = tokio::time::timeout(Duration::from_secs(3), flushed).await;
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
        FromCoordinator::Ping(_) | FromCoordinator::SessionEnded(_) | FromCoordinator::ReportsAcked(_) => Vec::new(),
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
