//! The HTTP side: `/healthz` for probes and `/metrics` for Prometheus.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use super::metrics::Metrics;

pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics_handler))
        .with_state(metrics)
}

/// `router` for a plaintext connection to a TLS port: `/healthz` answers (probes), everything
/// else is refused with the fix.
pub fn plaintext_on_tls(router: Router) -> Router {
    router.layer(axum::middleware::from_fn(
        |request: axum::extract::Request, next: axum::middleware::Next| async move {
            if request.uri().path() == "/healthz" {
                next.run(request).await
            } else {
                (axum::http::StatusCode::BAD_REQUEST, "this port takes TLS only: use https://\n").into_response()
            }
        },
    ))
}

async fn metrics_handler(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], metrics.encode())
}
