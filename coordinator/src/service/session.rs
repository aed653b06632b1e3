//! `SessionService`: submit, watch (resumable), cancel, get, list.

use std::pin::Pin;
use std::sync::Arc;

use testgrid_proto as pb;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::convert::{chosen_session_id, event_to_pb, outcome_to_pb, parse_session_id, session_view_to_pb};
use super::engine::{Command, EngineHandle};
use crate::auth::Identity;
use crate::core::plan::Estimate;
use crate::core::{Input, SessionId, SessionSpec};
use crate::store::history::HistoryStore;
use crate::store::{SessionLog, SessionStore, StoredEvent};

pub struct SessionSvc {
    pub engine: EngineHandle,
    pub store: Arc<dyn SessionStore>,
    /// Ends open `Watch` streams when the coordinator stops, so that it can stop.
    pub shutdown: CancellationToken,
    /// Where submitted workspaces' blobs are (`None`: none are kept, none can be submitted).
    pub blobs: Option<Arc<dyn crate::blobs::BlobStore>>,
    /// The workspaces submitted lately, which garbage collection keeps.
    pub roots: Arc<crate::blobs::Roots>,
    /// Every project's test durations, which order a session's queue.
    pub history: Arc<dyn HistoryStore>,
}

impl SessionSvc {
    /// The session `id` if `caller` may see it: its owner, or an admin. Another user's session
    /// is "not found", as one that does not exist (its id says nothing to them).
    async fn visible(&self, caller: &Identity, id: SessionId) -> Result<crate::core::SessionView, Status> {
        match self.engine.ask(|reply| Command::Get { session: id, reply }).await? {
            Some(view) if caller.owns(&view.owner) => Ok(view),
            _ => Err(not_found(id)),
        }
    }

    /// Each test's estimate from its project's history (read off the async threads: a project
    /// may have a hundred thousand tests). A history that cannot be read costs the order only.
    async fn estimates(&self, spec: &SessionSpec) -> Vec<Estimate> {
        let history = Arc::clone(&self.history);
        let project = spec.project.clone();
        let known = tokio::task::spawn_blocking(move || history.project(&project))
            .await
            .map_err(|e| e.to_string())
            .and_then(|read| read.map_err(|e| e.to_string()));
        match known {
            Ok(known) => crate::core::plan::estimate(&spec.tests, &spec.sizes, &known),
            Err(e) => {
                tracing::warn!(error = %e, "ordering a session without its history");
                Vec::new()
            }
        }
    }
}

/// The most entries (files, symlinks, folders) a submitted workspace may have.
const MAX_WORKSPACE_ENTRIES: u64 = 2_000_000;

fn not_found(id: SessionId) -> Status {
    Status::not_found(format!("no session {id} on this coordinator; `testgrid sessions` lists the sessions it knows"))
}

/// How many events a watcher reads from the log at once.
const WATCH_BATCH: usize = 256;

/// Each of `tests` (with their sizes) with its estimate and what `project`'s history knows of
/// it, in the order a session of them would be served (`Plan`, and `testgrid plan` in local
/// mode).
pub fn plan_tests(
    history: &dyn HistoryStore,
    project: &str,
    tests: &[String],
    sizes: &[u64],
    keep_order: bool,
) -> Result<Vec<pb::PlannedTest>, crate::store::StoreError> {
    let known = history.project(project)?;
    let estimates = crate::core::plan::estimate(tests, sizes, &known);
    let order = crate::core::plan::order(&estimates, sizes, keep_order);
    Ok(order
        .into_iter()
        .map(|index| {
            let e = estimates[index as usize];
            let k = known.get(&tests[index as usize]);
            pb::PlannedTest {
                index,
                estimate_ms: e.ms,
                source: e.source.as_str().to_string(),
                last_outcome: k.map_or(pb::Outcome::Unspecified, |k| outcome_to_pb(k.last)) as i32,
                p90_ms: k.map_or(0, |k| k.p90_ms),
                runs: k.map_or(0, |k| k.runs),
            }
        })
        .collect())
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::SessionEvent, Status>> + Send>>;

/// Send a log's events from `next` on until the session finishes, the watcher goes away, or the
/// coordinator stops.
async fn follow_log(
    log: &dyn SessionLog,
    mut next: u64,
    tx: &mpsc::Sender<Result<pb::SessionEvent, Status>>,
    shutdown: &CancellationToken,
) {
    let mut changed = log.subscribe();
    loop {
        let (batch, finished) = match log.read_from(next, WATCH_BATCH) {
            Ok(read) => read,
            Err(e) => {
                tracing::error!(error = %e, "a watcher's events cannot be read");
                let _ = tx.send(Err(Status::internal("the coordinator cannot read this session's events"))).await;
                return;
            }
        };
        if batch.is_empty() {
            if finished {
                return;
            }
            tokio::select! {
                changed = changed.changed() => if changed.is_err() { return },
                // The client hung up: notice now, not at the next event.
                () = tx.closed() => return,
                () = shutdown.cancelled() => {
                    let _ = tx.send(Err(Status::unavailable("the coordinator is shutting down"))).await;
                    return;
                }
            }
            continue;
        }
        for event in batch {
            next = event.seq + 1;
            if tx.send(Ok(stored_to_pb(&event))).await.is_err() {
                return;
            }
        }
    }
}

/// An event as watchers receive it.
fn stored_to_pb(stored: &StoredEvent) -> pb::SessionEvent {
    pb::SessionEvent { seq: stored.seq, time_ms: stored.time_ms, kind: Some(event_to_pb(&stored.event)) }
}

#[tonic::async_trait]
impl pb::session_service_server::SessionService for SessionSvc {
    type WatchStream = WatchStream;

    async fn submit(&self, request: Request<pb::SubmitRequest>) -> Result<Response<pb::SubmitResponse>, Status> {
        let caller = Identity::of(&request)?;
        let request = request.into_inner();
        let id = match request.session_id.as_str() {
            "" => None,
            chosen => Some(chosen_session_id(chosen)?),
        };
        let spec = request.spec.ok_or_else(|| Status::invalid_argument("missing field `spec`"))?;
        let mut spec = SessionSpec::try_from(spec)?;
        spec.owner = caller.name;
        if spec.artifacts.is_some() && self.blobs.is_none() {
            return Err(Status::failed_precondition(
                "this coordinator keeps no blobs (it runs without a --data-dir), so tests cannot send files back: \
                 drop --artifacts, or give the coordinator a --data-dir",
            ));
        }
        if let Some(workspace) = &spec.workspace {
            let store = self.blobs.clone().ok_or_else(|| {
                Status::failed_precondition(
                    "this coordinator keeps no blobs (it runs without a --data-dir): pass `testgrid run --no-upload` \
                     to run the tests in the workers' own --root",
                )
            })?;
            let root = pb::Digest { hash: workspace.hash.clone(), size_bytes: workspace.size_bytes };
            let checked = root.clone();
            tokio::task::spawn_blocking(move || {
                crate::blobs::check_tree(store.as_ref(), &checked, MAX_WORKSPACE_ENTRIES)
            })
            .await
            .map_err(|e| Status::internal(format!("checking the workspace failed: {e}")))?
            .map_err(|problem| Status::failed_precondition(format!("the workspace cannot be used: {problem}")))?;
            self.roots.submitted(root);
        }
        let estimates = self.estimates(&spec).await;
        let id = self.engine.ask(|reply| Command::Submit { spec, id, estimates, reply }).await?.map_err(|id| {
            Status::already_exists(format!(
                "session {id} exists already: choose another id, or leave `session_id` empty"
            ))
        })?;
        Ok(Response::new(pb::SubmitResponse { session_id: id.to_string() }))
    }

    async fn watch(&self, request: Request<pb::WatchRequest>) -> Result<Response<WatchStream>, Status> {
        let caller = Identity::of(&request)?;
        let request = request.into_inner();
        let id = parse_session_id(&request.session_id)?;
        self.visible(&caller, id).await?;
        let log = self.store.log(id).ok_or_else(|| not_found(id))?;
        let (tx, rx) = mpsc::channel(WATCH_BATCH);
        let shutdown = self.shutdown.clone();
        let engine = self.engine.clone();
        engine.send(Command::Input(Input::WatchStarted { session: id })).await?;
        tokio::spawn(async move {
            tokio::select! {
                () = follow_log(log.as_ref(), request.from_seq.max(1), &tx, &shutdown) => {}
                () = caller.revoked.cancelled() => {
                    let _ = tx.send(Err(Status::unauthenticated("the token of this call was revoked or expired"))).await;
                }
            }
            // Counted for --cancel-on-disconnect; if the engine is gone nobody needs to know.
            let _ = engine.send(Command::Input(Input::WatchEnded { session: id })).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn cancel(&self, request: Request<pb::CancelRequest>) -> Result<Response<pb::CancelResponse>, Status> {
        let caller = Identity::of(&request)?;
        let request = request.into_inner();
        let session = parse_session_id(&request.session_id)?;
        self.visible(&caller, session).await?;
        let mut reason =
            if request.reason.trim().is_empty() { "cancelled by request".to_string() } else { request.reason };
        if !caller.name.is_empty() {
            reason = format!("{reason} (by {})", caller.name);
        }
        match self.engine.ask(|reply| Command::Cancel { session, reason, reply }).await? {
            None => Err(not_found(session)),
            Some(cancelled) => Ok(Response::new(pb::CancelResponse { cancelled })),
        }
    }

    async fn get(&self, request: Request<pb::GetRequest>) -> Result<Response<pb::SessionInfo>, Status> {
        let caller = Identity::of(&request)?;
        let session = parse_session_id(&request.into_inner().session_id)?;
        let view = self.visible(&caller, session).await?;
        Ok(Response::new(session_view_to_pb(&view)))
    }

    async fn list(&self, request: Request<pb::ListRequest>) -> Result<Response<pb::ListResponse>, Status> {
        let caller = Identity::of(&request)?;
        let views = self.engine.ask(|reply| Command::List { reply }).await?;
        let sessions = views.iter().filter(|v| caller.owns(&v.owner)).map(session_view_to_pb).collect();
        Ok(Response::new(pb::ListResponse { sessions }))
    }

    async fn plan(&self, request: Request<pb::PlanRequest>) -> Result<Response<pb::PlanResponse>, Status> {
        let request = request.into_inner();
        let (project, tests, sizes) = super::convert::plan_request(request.project, request.tests)?;
        let history = Arc::clone(&self.history);
        let planned = tokio::task::spawn_blocking(move || {
            plan_tests(history.as_ref(), &project, &tests, &sizes, request.keep_order)
        })
        .await
        .map_err(|e| Status::internal(format!("planning failed: {e}")))?
        .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(pb::PlanResponse { tests: planned }))
    }
}
