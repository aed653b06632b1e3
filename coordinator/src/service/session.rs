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
    /// The most unfinished sessions one owner (token) may have.
    pub max_sessions_per_owner: usize,
    /// Counts the watch streams.
    pub metrics: Arc<super::metrics::Metrics>,
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

/// Sessions in a `List` answer by default, and at most.
const LIST_PAGE: usize = 100;
const MAX_LIST_PAGE: usize = 1_000;
/// A `List` answer stops before this many bytes, whatever the page size (names can be long).
const LIST_PAGE_BYTES: usize = 4 * 1024 * 1024;

/// A page token: the last session of the page and when it was created, `ID@MS`.
fn page_token(view: &crate::core::SessionView) -> String {
    format!("{}@{}", view.id, view.created_at)
}

fn parse_page_token(token: &str) -> Option<(SessionId, u64)> {
    let (id, ms) = token.split_once('@')?;
    Some((parse_session_id(id).ok()?, ms.parse().ok()?))
}

/// One page of the sessions `caller` may see, newest first, after the session `after` (the last
/// of the previous page; if it was forgotten since, after the sessions created no later).
fn list_page(
    views: &[crate::core::SessionView],
    caller: &Identity,
    after: Option<(SessionId, u64)>,
    page_size: u32,
) -> pb::ListResponse {
    use prost::Message;
    let size = match page_size as usize {
        0 => LIST_PAGE,
        n => n.min(MAX_LIST_PAGE),
    };
    let visible: Vec<&crate::core::SessionView> = views.iter().filter(|v| caller.owns(&v.owner)).collect();
    let start = match after {
        None => 0,
        Some((id, created)) => match visible.iter().position(|v| v.id == id) {
            Some(i) => i + 1,
            None => visible.iter().position(|v| v.created_at < created).unwrap_or(visible.len()),
        },
    };
    let mut sessions = Vec::new();
    let mut last = None;
    let mut bytes = 0;
    for view in &visible[start.min(visible.len())..] {
        let info = session_view_to_pb(view);
        bytes += info.encoded_len() + 8;
        if sessions.len() == size || (bytes > LIST_PAGE_BYTES && !sessions.is_empty()) {
            break;
        }
        sessions.push(info);
        last = Some(*view);
    }
    let more = start + sessions.len() < visible.len();
    let next_page_token = match last {
        Some(view) if more => page_token(view),
        _ => String::new(),
    };
    pb::ListResponse { sessions, next_page_token }
}

/// How many events a watcher reads from the log at once.
pub(super) const WATCH_BATCH: usize = 256;

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
pub(super) async fn follow_log<T>(
    log: &dyn SessionLog,
    mut next: u64,
    tx: &mpsc::Sender<Result<T, Status>>,
    shutdown: &CancellationToken,
    convert: impl Fn(&StoredEvent) -> T,
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
            if tx.send(Ok(convert(&event))).await.is_err() {
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
        let views = self.engine.ask(|reply| Command::List { reply }).await?;
        let unfinished = views.iter().filter(|v| !v.finished && v.owner == spec.owner).count();
        if unfinished >= self.max_sessions_per_owner {
            let who = if spec.owner.is_empty() { "this grid".to_string() } else { format!("`{}`", spec.owner) };
            return Err(Status::resource_exhausted(format!(
                "{who} has {unfinished} sessions not finished, the limit (--max-sessions-per-owner): \
                 wait for them, or cancel some (`testgrid sessions`, `testgrid cancel ID`)"
            )));
        }
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
        let counted = super::metrics::WatchGuard::new(Arc::clone(&self.metrics));
        tokio::spawn(async move {
            let _counted = counted;
            tokio::select! {
                () = follow_log(log.as_ref(), request.from_seq.max(1), &tx, &shutdown, stored_to_pb) => {}
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
        let request = request.into_inner();
        let after = match request.page_token.as_str() {
            "" => None,
            token => Some(parse_page_token(token).ok_or_else(|| {
                Status::invalid_argument(
                    "field `page_token`: not a token this coordinator gave; start from an empty one",
                )
            })?),
        };
        let views = self.engine.ask(|reply| Command::List { reply }).await?;
        Ok(Response::new(list_page(&views, &caller, after, request.page_size)))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Role, WorkerLimits};
    use crate::core::{SessionView, Totals};

    fn view(n: u128, owner: &str, name: String) -> SessionView {
        SessionView {
            id: SessionId(uuid::Uuid::from_u128(n)),
            name,
            finished: true,
            totals: Totals::default(),
            running: 0,
            created_at: 10_000 - n as u64,
            finished_at: None,
            cancel_reason: None,
            owner: owner.to_string(),
        }
    }

    fn who(name: &str, role: Role) -> Identity {
        Identity { name: name.into(), role, revoked: CancellationToken::new(), limits: WorkerLimits::default() }
    }

    /// Every session `caller` may see, page after page.
    fn all_pages(views: &[SessionView], caller: &Identity, page_size: u32) -> (Vec<String>, usize) {
        let (mut seen, mut pages, mut after) = (Vec::new(), 0, None);
        loop {
            let page = list_page(views, caller, after, page_size);
            pages += 1;
            seen.extend(page.sessions.into_iter().map(|s| s.session_id));
            if page.next_page_token.is_empty() {
                return (seen, pages);
            }
            after = parse_page_token(&page.next_page_token);
        }
    }

    #[test]
    fn sessions_come_a_page_at_a_time_each_once_and_only_the_callers() {
        let views: Vec<SessionView> =
            (1..=250).map(|n| view(n, if n % 2 == 1 { "alice" } else { "bob" }, format!("s{n}"))).collect();
        let (seen, pages) = all_pages(&views, &who("root", Role::Admin), 0);
        assert_eq!((seen.len(), pages), (250, 3));
        assert_eq!(seen.iter().collect::<std::collections::BTreeSet<_>>().len(), 250, "each once");
        let (seen, _) = all_pages(&views, &who("alice", Role::User), 1_000_000);
        assert_eq!(seen.len(), 125);
        assert!(views.iter().filter(|v| v.owner == "bob").all(|v| !seen.contains(&v.id.to_string())));
        // Huge names: the page stops short of 4 MiB however many were asked for.
        let big: Vec<SessionView> = (1..=10).map(|n| view(n, "", "n".repeat(1 << 20))).collect();
        let page = list_page(&big, &who("", Role::Admin), None, 1_000);
        assert!((1..=4).contains(&page.sessions.len()) && !page.next_page_token.is_empty());
        let (seen, _) = all_pages(&big, &who("", Role::Admin), 1_000);
        assert_eq!(seen.len(), 10);
    }

    #[test]
    fn a_page_token_whose_session_was_forgotten_goes_on_after_its_time() {
        let views: Vec<SessionView> = (1..=5).map(|n| view(n, "", format!("s{n}"))).collect();
        let page = list_page(&views, &who("", Role::Admin), None, 2);
        let (id, created) = parse_page_token(&page.next_page_token).expect("a token");
        let rest: Vec<SessionView> = views.into_iter().filter(|v| v.id != id).collect();
        let next = list_page(&rest, &who("", Role::Admin), Some((id, created)), 10);
        let names: Vec<&str> = next.sessions.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["s3", "s4", "s5"]);
        assert!(parse_page_token("not-a-token").is_none());
    }
}
