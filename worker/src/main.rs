//! `testgrid-worker`: parse flags, set up logging, run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use testgrid_proto::logging::LogFormat;

/// A testgrid worker: runs the tests a coordinator assigns to it.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The coordinator's gRPC address.
    #[arg(long, env = "TESTGRID_GRID")]
    grid: String,
    /// The token to present (a `worker` token from `testgrid-coordinator token create`), if the
    /// grid needs one.
    #[arg(long, env = "TESTGRID_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A file whose first line is the token (e.g. a mounted Secret); --token wins.
    #[arg(long, env = "TESTGRID_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// PEM certificates of the authorities that may sign an https:// grid's certificate (the
    /// system's roots otherwise).
    #[arg(long, env = "TESTGRID_CA")]
    ca: Option<PathBuf>,
    /// A PEM client certificate to present (mTLS: required by a grid started with
    /// --tls-client-ca), with --tls-key.
    #[arg(long, env = "TESTGRID_CLIENT_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "TESTGRID_CLIENT_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Tests to run at once (default: the number of CPUs).
    #[arg(long, env = "TESTGRID_SLOTS")]
    slots: Option<u32>,
    /// The worker's name (default: the host name).
    #[arg(long, env = "TESTGRID_WORKER_NAME")]
    name: Option<String>,
    /// A label sessions can require, `key=value`; repeat for more.
    #[arg(long = "label", env = "TESTGRID_LABELS", value_delimiter = ',', value_parser = testgrid_proto::parse_key_value)]
    labels: Vec<(String, String)>,
    /// The workspace root: the checkout the tests live in (baked into the image, or a volume).
    /// Given, every test runs there, also a session that sent its workspace. Without it, a
    /// session's workspace is materialised in a folder of its own (under --cache-dir), and a
    /// session without one runs in the current folder.
    #[arg(long, env = "TESTGRID_ROOT")]
    root: Option<PathBuf>,
    /// Output kept per test in bytes (head and tail; the middle is dropped).
    #[arg(long, env = "TESTGRID_OUTPUT_LIMIT", default_value_t = testgrid_worker::DEFAULT_OUTPUT_LIMIT)]
    output_limit: usize,
    /// Time between SIGTERM and SIGKILL when a test is stopped (timeout, cancel).
    #[arg(long, env = "TESTGRID_KILL_GRACE", default_value = "1s", value_parser = humantime::parse_duration)]
    kill_grace: Duration,
    /// On SIGTERM, how long running tests may finish before they are killed and handed back.
    #[arg(long, env = "TESTGRID_DRAIN_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
    /// Let tests outlive a worker that is killed outright. By default the kernel kills them with
    /// it, since their attempts are requeued elsewhere; this saves about 0.9 ms per test start.
    #[arg(long, env = "TESTGRID_ORPHANS_SURVIVE")]
    orphans_survive: bool,
    /// Replace a warm runner (pytest, vitest, jest) by a fresh one after it has run this many
    /// test files.
    #[arg(long, env = "TESTGRID_RECYCLE_AFTER_FILES", default_value_t = testgrid_worker::Recycle::default().after_files, value_parser = clap::value_parser!(u64).range(1..))]
    recycle_after_files: u64,
    /// Replace a warm runner by a fresh one once its memory (RSS) passes this many MiB.
    #[arg(long, env = "TESTGRID_RECYCLE_RSS_MIB", default_value_t = testgrid_worker::Recycle::default().rss_mib(), value_parser = clap::value_parser!(u64).range(1..))]
    recycle_rss_mib: u64,
    /// The Python that pytest runners start when a session names none (`testgrid run --python`).
    #[arg(long, env = "TESTGRID_PYTHON", default_value = testgrid_worker::DEFAULT_PYTHON)]
    python: String,
    /// The Node that vitest and jest runners start.
    #[arg(long, env = "TESTGRID_NODE", default_value = testgrid_worker::DEFAULT_NODE)]
    node: String,
    /// Where sessions' workspaces are materialised and their files cached, kept across restarts
    /// (one worker per folder). Default: a temporary folder, removed when the worker stops.
    #[arg(long, env = "TESTGRID_CACHE_DIR", value_hint = clap::ValueHint::DirPath)]
    cache_dir: Option<PathBuf>,
    /// The most bytes the file cache keeps (`10GiB`, `500MB`); the least recently used go first.
    #[arg(long, env = "TESTGRID_CACHE_SIZE", default_value = "10GiB", value_parser = testgrid_proto::parse_bytes)]
    cache_size: u64,
    /// Log format.
    #[arg(long, env = "TESTGRID_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Serve the worker's health on this address for probes: `/healthz` (the process answers)
    /// and `/readyz` (registered with the grid and not draining).
    #[arg(long, env = "TESTGRID_WORKER_HEALTH")]
    health: Option<std::net::SocketAddr>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    testgrid_proto::logging::init("info", args.log_format, true);
    if let Some(slots) = args.slots
        && !(1..=testgrid_worker::MAX_SLOTS).contains(&slots)
    {
        eprintln!("error: --slots {slots} is not in 1..={}", testgrid_worker::MAX_SLOTS);
        return ExitCode::from(2);
    }
    let token = match testgrid_proto::client::read_token(args.token.as_deref(), args.token_file.as_deref()) {
        Ok(token) => token,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let connected = Arc::new(AtomicBool::new(false));
    let config = testgrid_worker::Config {
        grid: args.grid,
        token,
        tls: testgrid_proto::client::TlsFiles { ca: args.ca, cert: args.tls_cert, key: args.tls_key },
        slots: args.slots.unwrap_or_else(testgrid_worker::default_slots),
        name: args.name.unwrap_or_else(testgrid_worker::default_name),
        labels: args.labels.into_iter().collect::<BTreeMap<_, _>>(),
        own_tree: args.root.is_some(),
        root: args.root.unwrap_or_else(|| PathBuf::from(".")),
        output_limit: args.output_limit.max(2),
        kill_grace: args.kill_grace,
        drain_timeout: args.drain_timeout,
        die_with_worker: !args.orphans_survive,
        recycle: testgrid_worker::Recycle::new(args.recycle_after_files, args.recycle_rss_mib),
        python: args.python,
        node: args.node,
        // A grid worker's runners write coverage where the project's config says; merging a
        // session's coverage across workers needs it sent back (workspace bundles).
        coverage_dir: None,
        // A grid worker learns of a session from its first assignment.
        prestart: None,
        cache_dir: args.cache_dir,
        cache_size: args.cache_size,
        // Beside the cache (`--cache-dir`), when there is one.
        setup_stamps: None,
        connected: Some(Arc::clone(&connected)),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(3);
        }
    };
    let stop = testgrid_worker::Stop::default();
    let health = match args.health {
        Some(addr) => match runtime.block_on(tokio::net::TcpListener::bind(addr)) {
            Ok(listener) => {
                // One line on stdout with the bound address, for scripts and tests on port 0.
                if let Ok(bound) = listener.local_addr() {
                    println!("testgrid-worker health={bound}");
                }
                Some(listener)
            }
            Err(e) => {
                eprintln!("error: --health {addr}: cannot listen there: {e}; pick another address");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let result = runtime.block_on(async {
        if let Some(listener) = health {
            tokio::spawn(serve_health(listener, connected, stop.clone()));
        }
        let signals = stop.clone();
        tokio::spawn(async move {
            // First SIGTERM (or Ctrl-C): drain. Second: stop now.
            if wait_for_signal().await.is_err() {
                return;
            }
            tracing::info!("stopping: draining (signal again to stop at once)");
            signals.drain.cancel();
            if wait_for_signal().await.is_ok() {
                tracing::info!("stopping now: killing running tests and handing them back");
            }
            signals.now.cancel();
        });
        // Every line says which worker wrote it.
        let span = tracing::info_span!("worker", worker = %config.name);
        tracing::Instrument::instrument(testgrid_worker::run(config, stop), span).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// `/healthz`: 200 while the process answers. `/readyz`: 200 while registered with the grid and
/// not stopping, 503 saying why otherwise.
async fn serve_health(listener: tokio::net::TcpListener, connected: Arc<AtomicBool>, stop: testgrid_worker::Stop) {
    use axum::http::StatusCode;
    use axum::routing::get;
    let ready = move || {
        let (connected, stop) = (Arc::clone(&connected), stop.clone());
        async move {
            if stop.requested() {
                (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            } else if connected.load(Ordering::Relaxed) {
                (StatusCode::OK, "ok\n")
            } else {
                (StatusCode::SERVICE_UNAVAILABLE, "not registered with the grid (yet)\n")
            }
        }
    };
    let router = axum::Router::new().route("/healthz", get(|| async { "ok\n" })).route("/readyz", get(ready));
    if let Err(e) = axum::serve(listener, router).await {
        tracing::warn!("the health endpoint stopped: {e}");
    }
}

/// Wait for SIGTERM or SIGINT.
async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
