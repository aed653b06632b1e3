//! `WorkerService.Attach`: one stream per worker. The first message must be `Register`; after
//! `Welcome`, everything the worker says becomes a core input, and the stream ending makes the
//! worker lost.

use std::pin::Pin;
use std::time::Duration;

use testgrid_proto as pb;
use testgrid_proto::worker_message::Kind;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use tracing::warn;

use super::convert::BadMessage;
use super::engine::{Command, EngineHandle};
use crate::core::{AssignmentKey, Input, Outcome, Report, WorkerId, WorkerSpec};

/// Room in a worker's channel for pings beyond assignments and cancels: a worker that has not
/// read this many pings (one per heartbeat interval) has stopped reading.
const PING_ROOM: usize = 64;

/// How long a new stream may take to send `Register`.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);

pub struct WorkerSvc {
    pub engine: EngineHandle,
    pub heartbeat_interval: Duration,
    pub liveness_timeout: Duration,
    pub prefetch_per_slot: u32,
    /// What garbage collection keeps: the files tests send back are added.
    pub roots: std::sync::Arc<crate::blobs::Roots>,
    /// `Attach` streams open per token (registered or not), against their limit.
    pub attaches: std::sync::Arc<Attaches>,
}

/// How many `Attach` streams each token has open, and how many it may.
#[derive(Debug)]
pub struct Attaches {
    open: std::sync::Mutex<std::collections::HashMap<String, usize>>,
    limit: usize,
}

impl Attaches {
    pub fn new(limit: usize) -> Self {
        Attaches { open: Default::default(), limit }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, usize>> {
        // Each change is one increment or decrement: a poisoned map is still consistent.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for one more stream of `token`, held until the guard drops; none when it has
    /// its limit open.
    fn enter(self: &std::sync::Arc<Self>, token: &str) -> Result<AttachGuard, Status> {
        let mut open = self.lock();
        let count = open.entry(token.to_string()).or_insert(0);
        if *count >= self.limit {
            return Err(Status::resource_exhausted(format!(
                "this token has {} Attach streams open, its limit (--max-attach-per-token); give each pool of workers its own token or raise the limit",
                self.limit
            )));
        }
        *count += 1;
        Ok(AttachGuard { attaches: std::sync::Arc::clone(self), token: token.to_string() })
    }
}

/// One open `Attach` stream's place under its token's limit.
struct AttachGuard {
    attaches: std::sync::Arc<Attaches>,
    token: String,
}

impl Drop for AttachGuard {
    fn drop(&mut self) {
        let mut open = self.attaches.lock();
        if let Some(count) = open.get_mut(&self.token) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.token);
            }
        }
    }
}

type AttachStream = Pin<Box<dyn Stream<Item = Result<pb::CoordinatorMessage, Status>> + Send>>;

#[tonic::async_trait]
impl pb::worker_service_server::WorkerService for WorkerSvc {
    type AttachStream = AttachStream;

    async fn attach(&self, request: Request<Streaming<pb::WorkerMessage>>) -> Result<Response<AttachStream>, Status> {
        let caller = crate::auth::Identity::of(&request)?;
        let place = self.attaches.enter(&caller.name)?;
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(REGISTER_TIMEOUT, inbound.next())
            .await
            .map_err(|_| Status::deadline_exceeded("no Register message within 10s of opening Attach"))?;
        let register = match first {
            Some(Ok(pb::WorkerMessage { kind: Some(Kind::Register(r)) })) => r,
            Some(Ok(_)) => return Err(Status::invalid_argument("the first message on Attach must be Register")),
            Some(Err(status)) => return Err(status),
            None => return Err(Status::cancelled("stream closed before Register")),
        };
        let mut register = register;
        let held = std::mem::take(&mut register.held);
        let spec = WorkerSpec::try_from(register)?;
        if let Some(why) = caller.limits.refuse(&caller.name, spec.slots, &spec.labels) {
            return Err(Status::permission_denied(why));
        }
        let claims = super::convert::claims(&held, spec.slots)?;
        drop(held);
        let id = WorkerId(uuid::Uuid::new_v4());
        // The core never lets a worker hold more than slots * (1 + prefetch) assignments, and sends
        // at most one cancel and one acknowledgement per held assignment, plus one cancel per
        // refused claim, so this bound is only reached by a worker that stopped reading.
        let capacity = (spec.slots as usize) * (1 + self.prefetch_per_slot as usize) * 3 + claims.len() + PING_ROOM;
        let (tx, rx) = mpsc::channel(capacity);
        let welcome = pb::CoordinatorMessage {
            kind: Some(pb::coordinator_message::Kind::Welcome(pb::Welcome {
                worker_id: id.to_string(),
                heartbeat_interval_ms: self.heartbeat_interval.as_millis() as u64,
                liveness_timeout_ms: self.liveness_timeout.as_millis() as u64,
                acks_reports: true,
            })),
        };
        tx.try_send(Ok(welcome)).map_err(|_| Status::internal("cannot queue Welcome"))?;
        // Weak: the stream must still end when the engine drops the worker.
        let refuse = tx.downgrade();
        self.engine.send(Command::Attach { id, spec: spec.clone(), claims, tx }).await?;
        let (engine, roots) = (self.engine.clone(), std::sync::Arc::clone(&self.roots));
        tokio::spawn(async move {
            let reason = tokio::select! {
                reason = read_worker(id, &spec.name, &mut inbound, &engine, &roots) => reason,
                () = caller.revoked.cancelled() => {
                    if let Some(tx) = refuse.upgrade() {
                        let _ = tx.try_send(Err(Status::unauthenticated("this worker's token was revoked or expired")));
                    }
                    "its token was revoked or expired".to_string()
                }
            };
            drop(place);
            // If the engine is gone the coordinator is stopping and nobody needs to know.
            let _ = engine.send(Command::Detach { id, reason }).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Feed the worker's messages to the engine until the stream ends; return why it ended.
async fn read_worker(
    id: WorkerId,
    name: &str,
    inbound: &mut Streaming<pb::WorkerMessage>,
    engine: &EngineHandle,
    roots: &crate::blobs::Roots,
) -> String {
    loop {
        let message = match inbound.next().await {
            None => return "stream ended".to_string(),
            // The transport's own words ("h2 protocol error: ...") mean nothing to a user.
            Some(Err(_)) => return "its connection broke".to_string(),
            Some(Ok(pb::WorkerMessage { kind: None })) => continue,
            Some(Ok(pb::WorkerMessage { kind: Some(kind) })) => kind,
        };
        let input = match to_input(id, message) {
            Ok(input) => input,
            Err(e) => {
                warn!(worker = name, worker_id = %id, error = %e, "ignoring a malformed message from a worker");
                continue;
            }
        };
        if let Input::Finished { report, .. } | Input::Resent { report, .. } = &input
            && !report.artifacts.is_empty()
        {
            roots.sent_back(
                report
                    .artifacts
                    .iter()
                    .filter_map(|a| a.blob.as_ref())
                    .map(|b| pb::Digest { hash: b.hash.clone(), size_bytes: b.size_bytes }),
            );
        }
        if engine.send(Command::Input(input)).await.is_err() {
            return "coordinator shutting down".to_string();
        }
    }
}

fn to_input(worker: WorkerId, kind: Kind) -> Result<Input, BadMessage> {
    Ok(match kind {
        Kind::Register(_) => {
            return Err(BadMessage::Invalid { field: "register", problem: "sent twice on one stream".into() });
        }
        Kind::Heartbeat(_) => Input::Heartbeat { worker },
        Kind::Drain(_) => Input::Draining { worker },
        Kind::TestStarted(s) => {
            let key = AssignmentKey::try_from(s.assignment.as_ref().ok_or(BadMessage::Missing("assignment"))?)?;
            Input::Started { worker, key }
        }
        Kind::SetupFinished(s) => {
            let session = crate::service::convert::parse_session_id(&s.session_id)?;
            let report = match s.report.map(Report::try_from) {
                Some(Ok(report)) => report,
                Some(Err(e)) => {
                    Report::synthetic(Outcome::Error, format!("the worker sent an unreadable setup report: {e}"))
                }
                None => return Err(BadMessage::Missing("report")),
            };
            Input::SetupFinished { worker, session, report, reused: s.reused }
        }
        Kind::TestFinished(f) => {
            let key = AssignmentKey::try_from(f.assignment.as_ref().ok_or(BadMessage::Missing("assignment"))?)?;
            // A result we cannot read still ends the attempt: better an `error` outcome naming
            // the problem than a test that waits forever.
            let report = match f.report.map(Report::try_from) {
                Some(Ok(report)) => report,
                Some(Err(e)) => Report::synthetic(Outcome::Error, format!("the worker sent an unreadable result: {e}")),
                None => Report::synthetic(Outcome::Error, "the worker sent a result without a report"),
            };
            if f.resent { Input::Resent { worker, key, report } } else { Input::Finished { worker, key, report } }
        }
    })
}
