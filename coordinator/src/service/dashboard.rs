//! The dashboard on the HTTP port: a page served from the binary (`/`, plain HTML, CSS and JS,
//! no build step) and the JSON it reads: the workers, the sessions the caller may see, and a
//! session's events as server-sent events, resumable from any sequence number.
//!
//! Calls carry the same tokens as gRPC (`Authorization: Bearer`): users see their own
//! sessions, admins all; worker tokens see nothing. On an open grid everyone is an admin.
//! Nothing here shows a command, an env value or a test's output.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as Sse, KeepAlive};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

use super::convert::{outcome_to_pb, parse_session_id};
use super::engine::{Command, EngineHandle};
use super::session::{WATCH_BATCH, follow_log};
use crate::auth::{Authority, Identity, Role};
use crate::core::Event;
use crate::store::{SessionStore, StoredEvent};

const PAGE: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/dashboard.js");
const STYLE: &str = include_str!("dashboard/dashboard.css");
const ICON: &str = include_str!("dashboard/favicon.svg");

/// What the dashboard's handlers read.
pub struct DashboardState {
    pub authority: Arc<Authority>,
    pub engine: EngineHandle,
    pub store: Arc<dyn SessionStore>,
    pub shutdown: CancellationToken,
}

pub fn router(state: Arc<DashboardState>) -> Router {
    Router::new()
        .route("/", get(|| async { page(PAGE, "text/html; charset=utf-8") }))
        .route("/dashboard.js", get(|| async { page(SCRIPT, "text/javascript; charset=utf-8") }))
        .route("/dashboard.css", get(|| async { page(STYLE, "text/css; charset=utf-8") }))
        .route("/favicon.svg", get(|| async { page(ICON, "image/svg+xml") }))
        .route("/api/v1/whoami", get(whoami))
        .route("/api/v1/workers", get(workers))
        .route("/api/v1/sessions", get(sessions))
        .route("/api/v1/sessions/{id}/events", get(events))
        .with_state(state)
}

fn page(body: &'static str, kind: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, kind),
        // Everything the page needs comes from here; nothing may frame it.
        (header::CONTENT_SECURITY_POLICY, "default-src 'self'; frame-ancestors 'none'"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CACHE_CONTROL, "no-cache"),
    ];
    (headers, body).into_response()
}

/// The caller, from its bearer token, as gRPC would see a `SessionService` call.
fn caller(state: &DashboardState, headers: &HeaderMap) -> Result<Identity, Box<Response>> {
    let header = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    match state.authority.admit("/testgrid.v1.SessionService/List", header) {
        Ok(identity) if identity.role == Role::Worker => {
            Err(Box::new(refused(StatusCode::FORBIDDEN, "a worker token sees nothing here")))
        }
        Ok(identity) => Ok(identity),
        Err(status) if status.code() == tonic::Code::PermissionDenied => {
            Err(Box::new(refused(StatusCode::FORBIDDEN, status.message())))
        }
        Err(status) => Err(Box::new(refused(StatusCode::UNAUTHORIZED, status.message()))),
    }
}

fn refused(code: StatusCode, message: &str) -> Response {
    (code, axum::Json(json!({ "error": message }))).into_response()
}

fn engine_gone() -> Response {
    refused(StatusCode::SERVICE_UNAVAILABLE, "the coordinator is stopping")
}

async fn whoami(State(state): State<Arc<DashboardState>>, headers: HeaderMap) -> Response {
    match caller(&state, &headers) {
        Ok(who) => {
            axum::Json(json!({ "name": who.name, "role": who.role.as_str(), "open": !state.authority.is_closed() }))
                .into_response()
        }
        Err(refusal) => *refusal,
    }
}

async fn workers(State(state): State<Arc<DashboardState>>, headers: HeaderMap) -> Response {
    if let Err(refusal) = caller(&state, &headers) {
        return *refusal;
    }
    let Ok(views) = state.engine.ask(|reply| Command::Workers { reply }).await else { return engine_gone() };
    let now = testgrid_proto::now_ms();
    let workers: Vec<Value> = views
        .iter()
        .map(|w| {
            json!({
                "name": w.spec.name,
                "slots": w.spec.slots,
                "labels": w.spec.labels,
                "state": w.state().as_str(),
                "held": w.held.len(),
                "running": w.running_tests,
                "last_seen_ms_ago": now.saturating_sub(w.last_seen),
                "connected_ms": w.connected_at,
            })
        })
        .collect();
    axum::Json(json!({ "workers": workers })).into_response()
}

async fn sessions(State(state): State<Arc<DashboardState>>, headers: HeaderMap) -> Response {
    let who = match caller(&state, &headers) {
        Ok(who) => who,
        Err(refusal) => return *refusal,
    };
    let Ok(views) = state.engine.ask(|reply| Command::List { reply }).await else { return engine_gone() };
    let sessions: Vec<Value> = views
        .iter()
        .filter(|s| who.owns(&s.owner))
        // The newest thousand: a page, not an archive.
        .take(1_000)
        .map(|s| {
            json!({
                "id": s.id.to_string(),
                "name": s.name,
                "owner": s.owner,
                "state": s.state(),
                "running": s.running,
                "created_ms": s.created_at,
                "finished_ms": s.finished_at,
                "cancel_reason": s.cancel_reason,
                "totals": s.totals,
            })
        })
        .collect();
    axum::Json(json!({ "sessions": sessions })).into_response()
}

#[derive(Deserialize)]
struct From {
    from: Option<u64>,
}

/// A session's events from `?from=N` (or the `Last-Event-ID` a reconnecting reader sends, plus
/// one), as server-sent events whose ids are their sequence numbers; the stream ends after the
/// session's last event.
async fn events(
    State(state): State<Arc<DashboardState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(from): Query<From>,
) -> Response {
    let who = match caller(&state, &headers) {
        Ok(who) => who,
        Err(refusal) => return *refusal,
    };
    let Ok(id) = parse_session_id(&id) else { return refused(StatusCode::BAD_REQUEST, "not a session id") };
    let Ok(view) = state.engine.ask(|reply| Command::Get { session: id, reply }).await else { return engine_gone() };
    // Someone else's session is as absent as one that never was.
    let (Some(_), Some(log)) = (view.filter(|v| who.owns(&v.owner)), state.store.log(id)) else {
        return refused(StatusCode::NOT_FOUND, "no such session");
    };
    let resumed = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|seen| seen.saturating_add(1));
    let from = resumed.or(from.from).unwrap_or(1).max(1);
    let (tx, rx) = tokio::sync::mpsc::channel(WATCH_BATCH);
    let (shutdown, revoked) = (state.shutdown.clone(), who.revoked.clone());
    tokio::spawn(async move {
        tokio::select! {
            () = follow_log(log.as_ref(), from, &tx, &shutdown, event_json) => {}
            () = revoked.cancelled() => {}
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(|item| {
        Ok::<_, Infallible>(match item {
            Ok((seq, data)) => Sse::default().id(seq.to_string()).data(data),
            Err(status) => Sse::default().event("error").data(status.message()),
        })
    });
    axum::response::sse::Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response()
}

/// An event as the dashboard reads it: what a timeline needs, never a test's output.
fn event_json(stored: &StoredEvent) -> (u64, String) {
    let outcome = |o| outcome_to_pb(o).key();
    let base = json!({ "seq": stored.seq, "time_ms": stored.time_ms });
    let extra = match &stored.event {
        Event::Created { name, paths, .. } => json!({ "kind": "created", "name": name, "paths": paths }),
        Event::TestStarted { test, attempt, worker } => {
            json!({ "kind": "test_started", "test": test, "attempt": attempt, "worker": worker })
        }
        Event::TestFinished { test, attempt, worker, is_final, outcome: o, report } => json!({
            "kind": "test_finished", "test": test, "attempt": attempt, "worker": worker, "final": is_final,
            "outcome": outcome(*o), "attempt_outcome": outcome(report.outcome), "duration_ms": report.duration_ms,
        }),
        Event::TestRequeued { test, attempt, reason, .. } => {
            json!({ "kind": "test_requeued", "test": test, "attempt": attempt, "reason": reason })
        }
        Event::TestSpeculated { test, attempt, worker, .. } => {
            json!({ "kind": "test_speculated", "test": test, "attempt": attempt, "worker": worker })
        }
        Event::Cancelled { reason } => json!({ "kind": "cancelled", "reason": reason }),
        Event::Finished { totals, .. } => json!({ "kind": "finished", "totals": totals }),
        Event::ResultDiscarded { .. } => json!({ "kind": "result_discarded" }),
        Event::SetupFinished { .. } => json!({ "kind": "setup_finished" }),
    };
    let mut merged = base;
    if let (Some(m), Value::Object(e)) = (merged.as_object_mut(), extra) {
        m.extend(e);
    }
    (stored.seq, merged.to_string())
}
