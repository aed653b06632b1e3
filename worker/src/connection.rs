//! The worker's link to the coordinator: connect, register, heartbeat, receive assignments and
//! cancels, report starts and results; reconnect with exponential backoff and jitter when the
//! coordinator is away.
//!
//! When a stream breaks, everything the worker held is killed: the coordinator has already
//! requeued it with a new attempt number, so a late result could never count.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use rand::Rng;
use testgrid_proto as pb;
use testgrid_proto::coordinator_message::Kind as FromCoordinator;
use testgrid_proto::worker_message::Kind as ToCoordinator;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::executor::{Executor, Job};
use crate::{Config, Error, Stop};
use testgrid_proto::frameworks::Runner;

/// An assignment as the worker tracks it: (session, test, attempt).
type Key = (String, u32, u32);

fn key_of(r: &pb::AssignmentRef) -> Key {
    (r.session_id.clone(), r.test_index, r.attempt)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// How long connecting, attaching and receiving `Welcome` may take before the worker gives up
/// on this attempt (a coordinator behind a black-holing network accepts TCP and says nothing).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connect and serve until told to stop; reconnect whenever the coordinator goes away.
pub async fn run<E: Executor>(config: Config, executor: Arc<E>, stop: Stop) -> Result<(), Error> {
    let endpoint = tonic::transport::Endpoint::from_shared(config.grid.clone())
        .map_err(|e| Error::BadGrid { grid: config.grid.clone(), problem: e.to_string() })?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    let mut backoff = Backoff::new();
    loop {
        if stop.requested() {
            return Ok(());
        }
        let outcome = tokio::select! {
            () = stop.drain.cancelled() => return Ok(()),
            () = stop.now.cancelled() => return Ok(()),
            channel = tokio::time::timeout(HANDSHAKE_TIMEOUT, endpoint.connect()) => match channel {
                Ok(Ok(channel)) => attach(&config, channel, Arc::clone(&executor), &stop, &mut backoff).await,
                Ok(Err(e)) => Err(Problem::Retry(format!("cannot reach the coordinator at {}: {}", config.grid, error_chain(&e)))),
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

/// The full chain of an error's causes, since tonic's top-level messages say little
/// ("transport error") on their own.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        // Layers often repeat their cause's words ("tcp connect error: tcp connect error").
        if !parts.iter().any(|p| p.contains(&part)) {
            parts.push(part);
        }
        source = cause.source();
    }
    parts.join(": ")
}

/// Exponential backoff with jitter: 100 ms doubling to 5 s, each delay drawn from [d/2, d].
struct Backoff {
    current: Duration,
}

impl Backoff {
    const START: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    fn new() -> Self {
        Backoff { current: Self::START }
    }

    fn reset(&mut self) {
        self.current = Self::START;
    }

    fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(Self::MAX);
        let half = base / 2;
        half + half.mul_f64(rand::rng().random::<f64>())
    }
}

/// What the slots share for one connection.
struct Held {
    /// Every assignment the worker holds, with its cancel token and whether a slot started it.
    jobs: Mutex<HashMap<Key, (CancellationToken, bool)>>,
}

impl Held {
    fn lock(&self) -> MutexGuard<'_, HashMap<Key, (CancellationToken, bool)>> {
        crate::executor::lock(&self.jobs)
    }
}

/// Why a connection ended.
enum Problem {
    /// Lost or unreachable: try again after a backoff.
    Retry(String),
    /// The coordinator rejected this worker's registration: retrying cannot help.
    Refused(String),
}

impl From<String> for Problem {
    fn from(s: String) -> Self {
        Problem::Retry(s)
    }
}

/// One connection's life. `Ok` when the worker is shutting down; `Err` when the connection was
/// lost (reconnect) or refused (give up).
async fn attach<E: Executor>(
    config: &Config,
    channel: tonic::transport::Channel,
    executor: Arc<E>,
    stop: &Stop,
    backoff: &mut Backoff,
) -> Result<(), Problem> {
    let mut client =
        pb::worker_service_client::WorkerServiceClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);
    let (out_tx, out_rx) = mpsc::channel::<pb::WorkerMessage>(1024);
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

    // `conn` ends with this connection and kills what runs; `taking` ends when slots must stop
    // taking new work (draining).
    let conn = stop.now.child_token();
    let taking = conn.child_token();
    let held = Arc::new(Held { jobs: Mutex::new(HashMap::new()) });
    let (job_tx, job_rx) = mpsc::unbounded_channel::<Job>();
    let job_rx = Arc::new(tokio::sync::Mutex::new(job_rx));
    let mut slots = tokio::task::JoinSet::new();
    for slot in 0..config.slots {
        slots.spawn(run_slot(
            slot,
            Arc::clone(&job_rx),
            Arc::clone(&held),
            Arc::clone(&executor),
            out_tx.clone(),
            taking.clone(),
        ));
    }

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
                taking.cancel();
                let drain = pb::Drain { reason: "worker stopping".into(), drain_timeout_ms: config.drain_timeout.as_millis() as u64 };
                if out_tx.send(pb::WorkerMessage { kind: Some(ToCoordinator::Drain(drain)) }).await.is_err() {
                    break Ok(());
                }
                let handed = hand_back_queued(&job_rx, &held, &out_tx, "worker draining").await;
                info!(
                    running = held.lock().len(),
                    handed_back = handed,
                    "draining: no new work; running tests have {} to finish",
                    humantime::format_duration(config.drain_timeout)
                );
            }
            () = tokio::time::sleep_until(deadline), if drain_deadline.is_some() => {
                warn!(running = held.lock().len(), "drain timeout passed; killing what still runs and handing it back");
                break Ok(());
            }
            done = slots.join_next(), if drain_deadline.is_some() => {
                if done.is_none() {
                    info!("drained: every running test finished");
                    break Ok(());
                }
            }
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > liveness {
                    break Err(format!("no word from the coordinator for {}s", liveness.as_secs()));
                }
                let count = held.lock().len() as u32;
                if out_tx.send(pb::WorkerMessage { kind: Some(ToCoordinator::Heartbeat(pb::Heartbeat { held: count })) }).await.is_err() {
                    break Err("the stream to the coordinator closed".to_string());
                }
            }
            message = inbound.next() => match message {
                None => break Err("the coordinator ended the stream".to_string()),
                Some(Err(s)) => break Err(format!("lost the coordinator: {}", s.message())),
                Some(Ok(pb::CoordinatorMessage { kind })) => {
                    last_heard = Instant::now();
                    if let Some(kind) = kind {
                        handle_message(kind, &held, &job_tx, &out_tx, &conn, drain_deadline.is_some()).await;
                    }
                }
            },
        }
    };

    // Stop every slot: running tests are killed. On shutdown their `cancelled` reports still go
    // out, so that the coordinator requeues them at once instead of waiting for the stream to end.
    conn.cancel();
    drop(job_tx);
    let all_stopped = async { while slots.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(30), all_stopped).await.is_err() {
        warn!("some tests did not stop within 30s of being killed");
    }
    hand_back_queued(&job_rx, &held, &out_tx, "worker shutting down").await;
    drop(out_tx);
    if result.is_ok() {
        // Our half of the stream is closed; the coordinator ends its half once it has read
        // everything we sent (the hand-backs above), so wait for that before the process exits.
        let flushed = async { while let Some(Ok(_)) = inbound.next().await {} };
        let _ = tokio::time::timeout(Duration::from_secs(3), flushed).await;
    }
    result.map_err(Problem::Retry)
}

/// Report every assignment still queued (not started) as cancelled, so the coordinator requeues
/// it elsewhere without counting a loss. Returns how many.
async fn hand_back_queued(
    job_rx: &tokio::sync::Mutex<mpsc::UnboundedReceiver<Job>>,
    held: &Held,
    out_tx: &mpsc::Sender<pb::WorkerMessage>,
    why: &str,
) -> usize {
    let mut handed = 0;
    let mut queued = job_rx.lock().await;
    while let Ok(job) = queued.try_recv() {
        if held.lock().remove(&key_of(&job.assignment)).is_some() {
            send_finished(out_tx, job.assignment, cancelled_report(why)).await;
            handed += 1;
        }
    }
    handed
}

async fn handle_message(
    kind: FromCoordinator,
    held: &Held,
    job_tx: &mpsc::UnboundedSender<Job>,
    out_tx: &mpsc::Sender<pb::WorkerMessage>,
    conn: &CancellationToken,
    draining: bool,
) {
    match kind {
        FromCoordinator::Welcome(_) => warn!("ignoring a second Welcome"),
        FromCoordinator::Ping(_) => {}
        FromCoordinator::Assign(a) => {
            let Some(assignment) = a.assignment else {
                warn!("ignoring an Assign without an assignment");
                return;
            };
            if draining {
                // Sent before the coordinator read our Drain: give it straight back.
                send_finished(out_tx, assignment, cancelled_report("worker draining")).await;
                return;
            }
            let runner = match a.runner.as_ref().map(Runner::try_from) {
                Some(Ok(runner)) => runner,
                problem => {
                    let why = match problem {
                        Some(Err(e)) => e.to_string(),
                        _ => "the assignment has no runner".to_string(),
                    };
                    warn!(test = %a.test_path, "refusing an assignment: {why}");
                    let report = pb::TestReport {
                        outcome: pb::Outcome::Error as i32,
                        message: format!("the worker cannot run this assignment: {why}"),
                        ..Default::default()
                    };
                    send_finished(out_tx, assignment, report).await;
                    return;
                }
            };
            debug!(test = %a.test_path, attempt = assignment.attempt, "assigned");
            held.lock().insert(key_of(&assignment), (conn.child_token(), false));
            let job = Job {
                assignment,
                path: a.test_path,
                command: a.command,
                env: a.env.into_iter().collect(),
                timeout: (a.timeout_ms > 0).then(|| Duration::from_millis(a.timeout_ms)),
                runner,
                dir: None,
            };
            // The receiver lives as long as the slots, which outlive this loop.
            let _ = job_tx.send(job);
        }
        FromCoordinator::Cancel(c) => {
            let Some(assignment) = c.assignment else { return };
            let key = key_of(&assignment);
            let queued = {
                let mut jobs = held.lock();
                match jobs.get(&key) {
                    Some((token, true)) => {
                        token.cancel();
                        false
                    }
                    // Not started: forget it now and report it, so its slot is free at once.
                    Some((_, false)) => jobs.remove(&key).is_some(),
                    None => false,
                }
            };
            if queued {
                let report = cancelled_report(&format!("cancelled before it started: {}", c.reason));
                send_finished(out_tx, assignment, report).await;
            }
        }
    }
}

async fn run_slot<E: Executor>(
    slot: u32,
    jobs: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Job>>>,
    held: Arc<Held>,
    executor: Arc<E>,
    out_tx: mpsc::Sender<pb::WorkerMessage>,
    taking: CancellationToken,
) {
    loop {
        let job = {
            let mut rx = jobs.lock().await;
            tokio::select! {
                biased;
                () = taking.cancelled() => None,
                job = rx.recv() => job,
            }
        };
        let Some(job) = job else { break };
        let key = key_of(&job.assignment);
        let token = {
            let mut map = held.lock();
            match map.get_mut(&key) {
                // Cancelled while queued: already reported.
                None => continue,
                Some((token, started)) => {
                    *started = true;
                    token.clone()
                }
            }
        };
        if taking.is_cancelled() {
            // The worker is draining or the connection is going away before this test started:
            // hand it back untouched.
            held.lock().remove(&key);
            send_finished(&out_tx, job.assignment, cancelled_report("worker shutting down")).await;
            continue;
        }
        debug!(slot, test = %job.path, "start");
        let started = pb::TestStarted { assignment: Some(job.assignment.clone()), started_at_ms: now_ms() };
        let _ = out_tx.send(pb::WorkerMessage { kind: Some(ToCoordinator::TestStarted(started)) }).await;
        // The token is a child of the connection's: a connection that goes away cancels it too.
        // Draining does not: a running test may finish.
        let report = executor.run(slot, &job, token).await;
        held.lock().remove(&key);
        send_finished(&out_tx, job.assignment, report).await;
    }
}

fn cancelled_report(message: &str) -> pb::TestReport {
    pb::TestReport { outcome: pb::Outcome::Cancelled as i32, message: message.to_string(), ..Default::default() }
}

/// Report a result. If the stream is gone the coordinator has requeued the test already, so the
/// result has nowhere useful to go.
async fn send_finished(
    out_tx: &mpsc::Sender<pb::WorkerMessage>,
    assignment: pb::AssignmentRef,
    report: pb::TestReport,
) {
    let finished = pb::TestFinished { assignment: Some(assignment), report: Some(report) };
    let _ = out_tx.send(pb::WorkerMessage { kind: Some(ToCoordinator::TestFinished(finished)) }).await;
}
