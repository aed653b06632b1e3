//! The HTTP side: `/healthz` for probes, `/metrics` for Prometheus and `/api/v1/demand` for an
//! autoscaler (KEDA's metrics-api scaler). None of them shows a secret, a command or a test's
//! output, so they need no token.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use super::engine::{Command, EngineHandle, Snapshot};
use super::metrics::Metrics;
use crate::blobs::BlobStore;
use crate::core::demand::PoolDemand;

/// How long `/healthz` waits for the engine's answer before calling the coordinator unhealthy.
const ENGINE_ANSWERS_WITHIN: Duration = Duration::from_secs(5);
/// A snapshot is reused for this long: scrapes and autoscalers polling often cost the engine
/// one walk of its queues per interval, however many of them there are.
const SNAPSHOT_FRESH_FOR: Duration = Duration::from_secs(1);

/// What the HTTP handlers read.
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    pub engine: EngineHandle,
    /// The data directory (`None`: state in memory).
    pub data_dir: Option<PathBuf>,
    pub blobs: Option<Arc<dyn BlobStore>>,
    last: Mutex<Option<(Instant, Arc<Snapshot>)>>,
}

impl HttpState {
    pub fn new(
        metrics: Arc<Metrics>,
        engine: EngineHandle,
        data_dir: Option<PathBuf>,
        blobs: Option<Arc<dyn BlobStore>>,
    ) -> Self {
        HttpState { metrics, engine, data_dir, blobs, last: Mutex::new(None) }
    }

    /// The engine's snapshot, at most [`SNAPSHOT_FRESH_FOR`] old; `None`: the engine did not
    /// answer within [`ENGINE_ANSWERS_WITHIN`].
    async fn snapshot(&self) -> Option<Arc<Snapshot>> {
        if let Some((at, snapshot)) = self.last.lock().unwrap_or_else(|p| p.into_inner()).as_ref()
            && at.elapsed() < SNAPSHOT_FRESH_FOR
        {
            return Some(Arc::clone(snapshot));
        }
        let asked = self.engine.ask(|reply| Command::Snapshot { reply });
        let snapshot = Arc::new(tokio::time::timeout(ENGINE_ANSWERS_WITHIN, asked).await.ok()?.ok()?);
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), Arc::clone(&snapshot)));
        Some(snapshot)
    }

    /// Bytes the data directory's databases and blobs take.
    fn store_bytes(&self) -> u64 {
        let Some(dir) = &self.data_dir else { return 0 };
        let files = ["testgrid.db", "testgrid.db-wal", "history.db", "history.db-wal", "tokens.db"];
        let databases: u64 = files.iter().filter_map(|f| std::fs::metadata(dir.join(f)).ok()).map(|m| m.len()).sum();
        databases + self.blobs.as_ref().map_or(0, |b| b.usage().0)
    }
}

pub fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_handler))
        .route("/api/v1/demand", get(demand))
        .with_state(state)
}

/// `router` for a plaintext connection to a TLS port: `/healthz` answers (probes), everything
/// else is refused with the fix.
pub fn plaintext_on_tls(router: Router) -> Router {
    router.layer(axum::middleware::from_fn(
        |request: axum::extract::Request, next: axum::middleware::Next| async move {
            if request.uri().path() == "/healthz" {
                next.run(request).await
            } else {
                (StatusCode::BAD_REQUEST, "this port takes TLS only: use https://\n").into_response()
            }
        },
    ))
}

/// Healthy when the engine answers, the store has not failed, and the data directory takes a
/// write: what a coordinator needs to keep its promises. 503 with the reason otherwise.
async fn healthz(State(state): State<Arc<HttpState>>) -> Response {
    let Some(snapshot) = state.snapshot().await else {
        let why = format!("unhealthy: the scheduler did not answer within {ENGINE_ANSWERS_WITHIN:?}\n");
        return (StatusCode::SERVICE_UNAVAILABLE, why).into_response();
    };
    if let Some(e) = &snapshot.store_failed {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("unhealthy: the session store failed: {e}\n"))
            .into_response();
    }
    if let Some(dir) = state.data_dir.clone() {
        let probe = tokio::task::spawn_blocking(move || {
            let path = dir.join(".healthz");
            std::fs::write(&path, b"ok").and_then(|()| std::fs::remove_file(&path)).map_err(|e| (dir, e))
        });
        match tokio::time::timeout(ENGINE_ANSWERS_WITHIN, probe).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err((dir, e)))) => {
                let why = format!("unhealthy: the data directory {} takes no write: {e}\n", dir.display());
                return (StatusCode::SERVICE_UNAVAILABLE, why).into_response();
            }
            Ok(Err(_)) | Err(_) => {
                let why = "unhealthy: a write to the data directory did not finish in time\n";
                return (StatusCode::SERVICE_UNAVAILABLE, why).into_response();
            }
        }
    }
    "ok\n".into_response()
}

async fn metrics_handler(State(state): State<Arc<HttpState>>) -> Response {
    match state.snapshot().await {
        Some(snapshot) => state.metrics.observe(&snapshot, state.store_bytes()),
        // The counters still tell something; the state gauges keep their last values.
        None => tracing::warn!("/metrics: the scheduler did not answer; the grid's gauges are stale"),
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.encode())
        .into_response()
}

#[derive(Deserialize)]
struct DemandQuery {
    pool: Option<String>,
}

/// One pool as `/api/v1/demand` shows it.
#[derive(serde::Serialize)]
struct PoolJson<'a> {
    pool: &'a str,
    desired_workers: u32,
    queued_tests: u64,
    queued_work_seconds: f64,
    running_tests: u64,
    running_work_seconds: f64,
    workers: u32,
    workers_draining: u32,
    slots_busy: u64,
    slots_idle: u64,
    worker_slots: u32,
}

impl<'a> From<&'a PoolDemand> for PoolJson<'a> {
    fn from(p: &'a PoolDemand) -> Self {
        PoolJson {
            pool: &p.pool,
            desired_workers: p.desired_workers,
            queued_tests: p.queued_tests,
            queued_work_seconds: p.queued_work_ms as f64 / 1000.0,
            running_tests: p.running_tests,
            running_work_seconds: p.running_work_ms as f64 / 1000.0,
            workers: p.workers_idle + p.workers_busy + p.workers_draining,
            workers_draining: p.workers_draining,
            slots_busy: p.slots_busy,
            slots_idle: p.slots_idle,
            worker_slots: p.worker_slots,
        }
    }
}

/// Every pool's demand, keyed by pool (`{"pools": {"default": {...}}}`), or one pool's alone
/// with `?pool=NAME` (a pool nobody mentions yet shows its minimum), for KEDA's `valueLocation`.
async fn demand(State(state): State<Arc<HttpState>>, Query(query): Query<DemandQuery>) -> Response {
    let Some(snapshot) = state.snapshot().await else {
        return (StatusCode::SERVICE_UNAVAILABLE, "the scheduler did not answer\n").into_response();
    };
    match query.pool {
        Some(name) => {
            let found = snapshot.pools.iter().find(|p| p.pool == name);
            match found {
                Some(p) => axum::Json(PoolJson::from(p)).into_response(),
                None if name.len() > 256 => {
                    (StatusCode::BAD_REQUEST, "a pool name is at most 256 bytes\n").into_response()
                }
                None => {
                    let p = PoolDemand {
                        desired_workers: snapshot.minimum(&name),
                        worker_slots: 1,
                        pool: name,
                        ..PoolDemand::default()
                    };
                    axum::Json(PoolJson::from(&p)).into_response()
                }
            }
        }
        None => {
            let pools: serde_json::Map<String, serde_json::Value> = snapshot
                .pools
                .iter()
                .map(|p| (p.pool.clone(), serde_json::to_value(PoolJson::from(p)).unwrap_or_default()))
                .collect();
            axum::Json(serde_json::json!({ "pools": pools })).into_response()
        }
    }
}
