//! The coordinator's I/O edge: gRPC services, the engine task that owns the core, HTTP health
//! and metrics. [`serve`] runs them all until the shutdown token is cancelled.

mod admin;
mod blob;
pub mod convert;
mod dashboard;
pub mod engine;
mod http;
pub mod listen;
pub mod metrics;
mod session;
pub use session::plan_tests;
mod worker;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use testgrid_proto as pb;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::core::{self, Scheduler};
use crate::store::SessionStore;
use crate::store::history::{HistoryStore, MemoryHistory, SqliteHistory};
use crate::store::memory::MemoryStore;

/// The largest message the coordinator accepts (a submission of very many tests, or a worker's
/// result with its bounded output and case results).
const MAX_MESSAGE_BYTES: usize = testgrid_proto::client::MAX_MESSAGE_BYTES;

/// Everything `serve` needs besides its listeners.
#[derive(Clone, Debug)]
pub struct Config {
    pub core: core::Config,
    /// How often workers must heartbeat.
    pub heartbeat_interval: Duration,
    /// Where state lives (created if missing): the sessions' database (`testgrid.db`) and the
    /// blob store (`blobs/`). `None`: sessions are kept in memory, no blobs are kept.
    pub data_dir: Option<PathBuf>,
    /// Keep sessions in the data directory's database (`false`: in memory, as an embedded
    /// grid whose data directory is temporary does).
    pub durable_sessions: bool,
    /// The most bytes the blob store holds.
    pub blob_store_bytes: u64,
    /// The most bytes of one blob.
    pub max_blob_bytes: u64,
    /// Blobs no workspace submitted within this long names are dropped by garbage collection.
    pub blob_retention: Duration,
    /// Where the duration history lives when sessions are not durable (local mode: the user's
    /// cache folder). With durable sessions it is `history.db` in the data directory; with
    /// neither, it is kept in memory.
    pub history_dir: Option<PathBuf>,
    /// Who may call what (open by default: anyone is an admin).
    pub authority: Arc<crate::auth::Authority>,
    /// TLS on both ports (none: plaintext).
    pub tls: Option<Arc<listen::Tls>>,
    /// How many connections each port holds at once: `(gRPC, HTTP)`.
    pub max_connections: (usize, usize),
    /// A connection must send its first bytes and finish its TLS handshake within this.
    pub handshake_timeout: Duration,
    /// The most `Attach` streams one token may have open (an open grid counts as one token).
    pub max_attach_per_token: usize,
    /// The most unfinished sessions one owner may have (queued or running).
    pub max_sessions_per_owner: usize,
    /// How each pool's desired workers are figured (`/api/v1/demand`, `testgrid_desired_workers`).
    pub demand: core::demand::Policy,
}

/// How many unfinished sessions one owner may have by default.
pub const DEFAULT_MAX_SESSIONS_PER_OWNER: usize = 256;

/// How many `Attach` streams one token may have open by default.
pub const DEFAULT_MAX_ATTACH_PER_TOKEN: usize = 1024;

/// How long a new connection has to say something and finish its TLS handshake by default.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a workspace's blobs are kept after its last session by default.
pub const DEFAULT_BLOB_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// A blob younger than this is never collected: it may belong to a workspace being uploaded,
/// whose session is not submitted yet.
const BLOB_GRACE: Duration = Duration::from_secs(3600);

/// How often the blob store's usage is looked at; it is collected when over [`GC_HIGH_WATER`]
/// of its capacity, and every [`GC_EVERY`] regardless.
const GC_CHECK: Duration = Duration::from_secs(60);
const GC_EVERY: Duration = Duration::from_secs(600);
const GC_HIGH_WATER: f64 = 0.8;

/// The blob store's default size.
pub const DEFAULT_BLOB_STORE_BYTES: u64 = 20 << 30;
/// One blob's default limit.
pub const DEFAULT_MAX_BLOB_BYTES: u64 = 1 << 30;

impl Default for Config {
    fn default() -> Self {
        Config {
            core: core::Config::default(),
            heartbeat_interval: Duration::from_secs(1),
            data_dir: None,
            durable_sessions: true,
            blob_store_bytes: DEFAULT_BLOB_STORE_BYTES,
            max_blob_bytes: DEFAULT_MAX_BLOB_BYTES,
            blob_retention: DEFAULT_BLOB_RETENTION,
            history_dir: None,
            authority: crate::auth::Authority::open(),
            tls: None,
            max_connections: (4096, 64),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_attach_per_token: DEFAULT_MAX_ATTACH_PER_TOKEN,
            max_sessions_per_owner: DEFAULT_MAX_SESSIONS_PER_OWNER,
            demand: core::demand::Policy::default(),
        }
    }
}

/// Why the coordinator could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot create data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("HTTP server failed: {0}")]
    Http(std::io::Error),
    #[error("the scheduling engine stopped unexpectedly ({0}); this is a bug, please report it")]
    Engine(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("cannot build gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// The blob store's garbage collector: now and then, and whenever the store fills up, drop the
/// blobs no recently submitted workspace names.
async fn collect_blobs(
    store: Arc<dyn crate::blobs::BlobStore>,
    roots: Arc<crate::blobs::Roots>,
    retention: Duration,
    stop: CancellationToken,
) {
    let mut last = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(GC_CHECK) => {}
        }
        let (used, capacity) = store.usage();
        if (used as f64) < capacity as f64 * GC_HIGH_WATER && last.elapsed() < GC_EVERY {
            continue;
        }
        last = tokio::time::Instant::now();
        let (store, roots) = (Arc::clone(&store), Arc::clone(&roots));
        match tokio::task::spawn_blocking(move || {
            crate::blobs::collect_garbage(store.as_ref(), &roots, retention, BLOB_GRACE)
        })
        .await
        {
            Ok((0, _)) => {}
            Ok((blobs, bytes)) => info!(blobs, bytes, "blob garbage collected"),
            Err(e) => tracing::warn!("blob garbage collection failed: {e}"),
        }
    }
}

/// Serve gRPC on `grpc` and, if given, HTTP on `http`, until `shutdown` is cancelled.
pub async fn serve(
    grpc: TcpListener,
    http: Option<TcpListener>,
    config: Config,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let blob_store: Option<Arc<dyn crate::blobs::BlobStore>> = match &config.data_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|source| Error::DataDir { path: dir.clone(), source })?;
            let blobs = dir.join("blobs");
            let store = crate::blobs::FsStore::open(&blobs, config.blob_store_bytes, config.max_blob_bytes)
                .map_err(|source| Error::DataDir { path: blobs, source })?;
            Some(Arc::new(store))
        }
        None => None,
    };
    let store: Arc<dyn SessionStore> = match &config.data_dir {
        Some(dir) if config.durable_sessions => {
            let store = crate::store::sqlite::SqliteStore::open(dir)?;
            info!(path = %dir.join(crate::store::sqlite::FILE).display(), "sessions kept in");
            Arc::new(store)
        }
        _ => Arc::new(MemoryStore::new()),
    };
    let history: Arc<dyn HistoryStore> = match (&config.data_dir, &config.history_dir) {
        (Some(dir), _) if config.durable_sessions => {
            let history = SqliteHistory::open(dir, true)?;
            history.forget_older_than(testgrid_proto::now_ms());
            Arc::new(history)
        }
        (_, Some(dir)) => match std::fs::create_dir_all(dir)
            .map_err(|e| crate::store::StoreError(e.to_string()))
            .and_then(|()| SqliteHistory::open(dir, false))
        {
            Ok(history) => {
                history.forget_older_than(testgrid_proto::now_ms());
                Arc::new(history)
            }
            Err(e) => {
                // A cache that cannot be written costs the order, not the run.
                tracing::warn!("durations are not remembered this time: {e}");
                Arc::new(MemoryHistory::default())
            }
        },
        _ => Arc::new(MemoryHistory::default()),
    };
    let restored = store.load()?;
    let auth_task = tokio::spawn(Arc::clone(&config.authority).keep_current(shutdown.clone()));
    let tls_task = config.tls.clone().map(|tls| tokio::spawn(tls.keep_current(shutdown.clone())));
    let limits = |max_connections| listen::Limits { max_connections, handshake_timeout: config.handshake_timeout };
    let (grpc_limits, http_limits) = (limits(config.max_connections.0), limits(config.max_connections.1));
    let metrics = Arc::new(metrics::Metrics::default());
    let liveness_timeout = Duration::from_millis(config.core.liveness_timeout_ms);
    let prefetch_per_slot = config.core.prefetch_per_slot;
    let (engine, engine_task) = engine::spawn(
        Scheduler::new(config.core),
        restored,
        (Arc::clone(&store), Arc::clone(&history)),
        Arc::clone(&metrics),
        config.heartbeat_interval,
        config.demand,
        shutdown.clone(),
    );

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<pb::worker_service_server::WorkerServiceServer<worker::WorkerSvc>>().await;
    health_reporter.set_serving::<pb::session_service_server::SessionServiceServer<session::SessionSvc>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::v1::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    let roots = Arc::new(crate::blobs::Roots::default());
    let worker_svc = worker::WorkerSvc {
        engine: engine.clone(),
        heartbeat_interval: config.heartbeat_interval,
        liveness_timeout,
        prefetch_per_slot,
        roots: Arc::clone(&roots),
        attaches: Arc::new(worker::Attaches::new(config.max_attach_per_token)),
    };
    let gc_task = blob_store.clone().map(|store| {
        let (roots, retention, stop) = (Arc::clone(&roots), config.blob_retention, shutdown.clone());
        tokio::spawn(collect_blobs(store, roots, retention, stop))
    });
    let dashboard = Arc::new(dashboard::DashboardState {
        authority: Arc::clone(&config.authority),
        engine: engine.clone(),
        store: Arc::clone(&store),
        shutdown: shutdown.clone(),
    });
    let session_svc = session::SessionSvc {
        engine: engine.clone(),
        store,
        shutdown: shutdown.clone(),
        blobs: blob_store.clone(),
        roots: Arc::clone(&roots),
        history,
        max_sessions_per_owner: config.max_sessions_per_owner,
        metrics: Arc::clone(&metrics),
    };
    let engine_for_http = engine.clone();
    let admin_svc = admin::AdminSvc { engine };
    let blob_store_for_http = blob_store.clone();
    let blob_svc = blob::BlobSvc { store: blob_store, metrics: Arc::clone(&metrics) };

    let http_task = match http {
        Some(listener) => {
            info!(addr = %listener.local_addr().map_err(Error::Http)?, "HTTP listening (the dashboard, /healthz, /metrics, /api/v1/demand)");
            let state = http::HttpState::new(metrics, engine_for_http, config.data_dir.clone(), blob_store_for_http);
            let router = http::router(Arc::new(state)).merge(dashboard::router(dashboard));
            Some(tokio::spawn(listen::serve_http(listener, config.tls.clone(), http_limits, router, shutdown.clone())))
        }
        None => None,
    };

    if let Ok(addr) = grpc.local_addr() {
        info!(%addr, "gRPC listening");
    }
    tonic::transport::Server::builder()
        .layer(crate::auth::AuthLayer::new(
            Arc::clone(&config.authority),
            config.tls.as_ref().is_some_and(|tls| tls.requires_worker_certs()),
        ))
        .http2_keepalive_interval(Some(liveness_timeout))
        .http2_keepalive_timeout(Some(liveness_timeout))
        .tcp_nodelay(true)
        .initial_stream_window_size(testgrid_proto::client::STREAM_WINDOW_BYTES)
        .initial_connection_window_size(testgrid_proto::client::CONNECTION_WINDOW_BYTES)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(
            pb::worker_service_server::WorkerServiceServer::new(worker_svc)
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            pb::session_service_server::SessionServiceServer::new(session_svc)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(pb::admin_service_server::AdminServiceServer::new(admin_svc))
        .add_service(
            pb::blob_service_server::BlobServiceServer::new(blob_svc)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(
            listen::incoming(grpc, config.tls.clone(), grpc_limits, shutdown.clone()),
            shutdown.clone().cancelled_owned(),
        )
        .await?;
    shutdown.cancel();
    match engine_task.await {
        Ok(Err(e)) => return Err(Error::Store(e)),
        Err(e) if e.is_panic() => return Err(Error::Engine(format!("{e}"))),
        Ok(Ok(())) | Err(_) => {}
    }
    if let Some(task) = gc_task {
        task.abort();
    }
    auth_task.abort();
    if let Some(task) = tls_task {
        task.abort();
    }
    if let Some(task) = http_task {
        let _ = task.await;
    }
    Ok(())
}
