//! `testgrid-coordinator`: parse flags, set up logging, serve; errors pick the exit code
//! ([`Error::exit_code`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use testgrid_coordinator::auth::{self, Role, Token, tokens::TokenDb};
use testgrid_coordinator::{Error, core, service};
use testgrid_proto::logging::LogFormat;
use tokio_util::sync::CancellationToken;

/// The testgrid coordinator: schedules sessions' tests onto workers.
#[derive(Parser, Debug)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: Args,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Make, list and revoke the tokens callers present (kept as hashes in --data-dir/tokens.db).
    Token {
        /// The coordinator's data directory.
        #[arg(long, env = "TESTGRID_DATA_DIR", default_value = "./testgrid-data", global = true)]
        data_dir: PathBuf,
        #[command(subcommand)]
        action: TokenAction,
    },
}

#[derive(clap::Subcommand, Debug)]
enum TokenAction {
    /// Make a token and print it, once (it is not kept, only its hash).
    Create {
        /// What it may do: worker (attach and report), user (its own sessions), admin (everything).
        #[arg(long)]
        role: testgrid_coordinator::auth::Role,
        /// Its name: each session records the name of the token that submitted it.
        name: String,
        /// Refused after this long (e.g. 30d, 12h); never by default.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires: Option<Duration>,
        /// A worker token: the only labels a worker presenting it may register with, `key=value`
        /// (repeat, or separate with commas).
        #[arg(long = "label", value_delimiter = ',', value_parser = testgrid_proto::parse_key_value)]
        labels: Vec<(String, String)>,
        /// A worker token: the most slots a worker presenting it may register with.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
        max_slots: Option<u32>,
    },
    /// The tokens kept: name, role, when made, when they expire.
    List,
    /// Delete a token: calls with it are refused at once, and the streams it opened end.
    Revoke {
        /// The token's name.
        name: String,
    },
}

/// Serving (no subcommand).
#[derive(clap::Args, Debug)]
struct Args {
    /// Address for gRPC (workers and clients).
    #[arg(long, env = "TESTGRID_LISTEN", default_value = "0.0.0.0:7700")]
    listen: SocketAddr,
    /// Address for HTTP (/healthz, /metrics).
    #[arg(long, env = "TESTGRID_HTTP", default_value = "0.0.0.0:7701")]
    http: SocketAddr,
    /// Directory for the coordinator's state (created if missing): its sessions (testgrid.db)
    /// and uploaded workspaces (blobs/). A restarted coordinator picks its sessions up from here.
    #[arg(long, env = "TESTGRID_DATA_DIR", default_value = "./testgrid-data")]
    data_dir: PathBuf,
    /// How often workers heartbeat.
    #[arg(long, env = "TESTGRID_HEARTBEAT_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    heartbeat_interval: Duration,
    /// A worker silent for this long is lost and its tests requeued.
    #[arg(long, env = "TESTGRID_LIVENESS_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    liveness_timeout: Duration,
    /// Assignments queued on a worker per slot beyond the running one.
    #[arg(long, env = "TESTGRID_PREFETCH", default_value_t = 1)]
    prefetch: u32,
    /// A test whose worker is lost more than this many times ends `lost`.
    #[arg(long, env = "TESTGRID_MAX_WORKER_LOSSES", default_value_t = 2)]
    max_worker_losses: u32,
    /// Finished sessions kept for `testgrid sessions` and `testgrid watch`; older ones are forgotten.
    #[arg(long, env = "TESTGRID_KEEP_SESSIONS", default_value_t = 1000)]
    keep_sessions: usize,
    /// Finished sessions are forgotten this long after they finished (with their event logs).
    #[arg(long, env = "TESTGRID_KEEP_SESSIONS_FOR", default_value = "7d", value_parser = humantime::parse_duration)]
    keep_sessions_for: Duration,
    /// The most bytes the blob store (workspace files uploaded by CLIs, under --data-dir) holds.
    #[arg(long, env = "TESTGRID_BLOB_STORE_SIZE", default_value = "20GiB", value_parser = testgrid_proto::parse_bytes)]
    blob_store_size: u64,
    /// The most bytes of one blob (one workspace file).
    #[arg(long, env = "TESTGRID_MAX_BLOB_SIZE", default_value = "1GiB", value_parser = testgrid_proto::parse_bytes)]
    max_blob_size: u64,
    /// How long a workspace's files stay in the blob store after its last session was submitted
    /// (blobs no workspace of that time names are dropped).
    #[arg(long, env = "TESTGRID_BLOB_RETENTION", default_value = "24h", value_parser = humantime::parse_duration)]
    blob_retention: Duration,
    /// One test report's output kept beyond this: only its last this-many bytes.
    #[arg(long, env = "TESTGRID_MAX_TEST_OUTPUT", default_value = "16MiB", value_parser = testgrid_proto::parse_bytes)]
    max_test_output: u64,
    /// A session keeps its failures' output in full up to this; later failures keep their tail.
    #[arg(long, env = "TESTGRID_MAX_SESSION_OUTPUT", default_value = "256MiB", value_parser = testgrid_proto::parse_bytes)]
    max_session_output: u64,
    /// All sessions' output together: over it, the oldest finished sessions' output is dropped
    /// first (their outcomes stay), and running sessions keep only failures' tails.
    #[arg(long, env = "TESTGRID_MAX_OUTPUT_TOTAL", default_value = "2GiB", value_parser = testgrid_proto::parse_bytes)]
    max_output_total: u64,
    /// A worker that holds a test this long past the test's timeout without a result loses it
    /// (it ends `timed_out` there) and gets no more work.
    #[arg(long, env = "TESTGRID_OVERRUN_GRACE", default_value = "10m", value_parser = humantime::parse_duration)]
    overrun_grace: Duration,
    /// A worker with an idle slot that leaves a test it was handed unstarted this long loses it
    /// (it goes back to the queue) and gets no more work.
    #[arg(long, env = "TESTGRID_START_WITHIN", default_value = "60s", value_parser = humantime::parse_duration)]
    start_within: Duration,
    /// Log format.
    #[arg(long, env = "TESTGRID_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Tokens from a file of `ROLE NAME TOKEN` lines (e.g. a mounted Secret), beside those of
    /// `token create`; read again when it changes.
    #[arg(long, env = "TESTGRID_TOKENS_FILE")]
    tokens_file: Option<PathBuf>,
    /// Serve a non-loopback address with no tokens: anyone who reaches it may run commands on
    /// every worker. Only for a network where that is wanted.
    #[arg(long, env = "TESTGRID_INSECURE")]
    insecure: bool,
    /// Serve TLS on both ports with this PEM certificate chain (with --tls-key); the files are
    /// read again when they change (a renewed certificate needs no restart).
    #[arg(long, env = "TESTGRID_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "TESTGRID_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// PEM certificates of the authorities that sign client certificates (mTLS): workers must
    /// present one; CLIs may.
    #[arg(long, env = "TESTGRID_TLS_CLIENT_CA", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// The most gRPC connections open at once (default: from the descriptor limit, keeping room
    /// for files and the HTTP port).
    #[arg(long, env = "TESTGRID_MAX_CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: Option<u32>,
    /// The most HTTP connections open at once; when full, the oldest is closed for the newest.
    #[arg(long, env = "TESTGRID_MAX_HTTP_CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..))]
    max_http_connections: Option<u32>,
    /// The most Attach streams (workers) one token may have open at once.
    #[arg(long, env = "TESTGRID_MAX_ATTACH_PER_TOKEN", default_value_t = service::DEFAULT_MAX_ATTACH_PER_TOKEN as u32, value_parser = clap::value_parser!(u32).range(1..))]
    max_attach_per_token: u32,
    /// The most sessions one token may have unfinished (queued or running) at once.
    #[arg(long, env = "TESTGRID_MAX_SESSIONS_PER_OWNER", default_value_t = service::DEFAULT_MAX_SESSIONS_PER_OWNER as u32, value_parser = clap::value_parser!(u32).range(1..))]
    max_sessions_per_owner: u32,
    /// A new connection must send its first bytes and finish its TLS handshake within this.
    #[arg(long, env = "TESTGRID_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    handshake_timeout: Duration,
    /// The demand signal (`testgrid_desired_workers`, `/api/v1/demand`): enough workers to
    /// finish each pool's remaining predicted work within this.
    #[arg(long, env = "TESTGRID_TARGET_DRAIN", default_value = "5m", value_parser = humantime::parse_duration)]
    target_drain: Duration,
    /// The fewest workers a pool's demand asks for: `N` for every pool, `POOL=N` for one
    /// (repeat, or separate with commas). A worker's pool is its `pool` label.
    #[arg(long, env = "TESTGRID_MIN_WORKERS", value_delimiter = ',', value_parser = per_pool)]
    min_workers: Vec<(Option<String>, u32)>,
    /// The most workers a pool's demand asks for (`N` or `POOL=N`, as --min-workers) [default: 100].
    #[arg(long, env = "TESTGRID_MAX_WORKERS", value_delimiter = ',', value_parser = per_pool)]
    max_workers: Vec<(Option<String>, u32)>,
    /// Slots of one worker of a pool, for its demand while none is connected (`N` or `POOL=N`;
    /// default: as its connected workers have, 1 while none is).
    #[arg(long, env = "TESTGRID_WORKER_SLOTS", value_delimiter = ',', value_parser = per_pool)]
    worker_slots: Vec<(Option<String>, u32)>,
}

/// `N` or `POOL=N`.
fn per_pool(text: &str) -> Result<(Option<String>, u32), String> {
    let (pool, n) = match text.split_once('=') {
        Some((pool, n)) => (Some(pool.trim()), n),
        None => (None, text),
    };
    let n = n.trim().parse::<u32>().map_err(|_| "expected N or POOL=N, N a whole number".to_string())?;
    match pool {
        Some("") => Err("a pool name before `=` (POOL=N)".into()),
        Some(p) if p.len() > 256 || p.chars().any(char::is_control) => {
            Err("a pool name is at most 256 bytes, without control characters".into())
        }
        pool => Ok((pool.map(str::to_string), n)),
    }
}

/// Collect `N` / `POOL=N` values over `default`.
fn pools(values: &[(Option<String>, u32)], default: u32) -> core::demand::PerPool {
    let mut out = core::demand::PerPool::all(default);
    for (pool, n) in values {
        match pool {
            Some(pool) => {
                out.pools.insert(pool.clone(), *n);
            }
            None => out.default = *n,
        }
    }
    out
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Token { data_dir, action }) = cli.command {
        return match token(&data_dir, action) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(e.exit_code())
            }
        };
    }
    let args = cli.serve;
    testgrid_proto::logging::init("info", args.log_format, true);
    let result = tokio::runtime::Runtime::new().map_err(Error::Runtime).and_then(|rt| rt.block_on(run(args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

async fn run(args: Args) -> Result<(), Error> {
    if args.heartbeat_interval.is_zero() || args.heartbeat_interval >= args.liveness_timeout {
        return Err(Error::Liveness {
            heartbeat: humantime::format_duration(args.heartbeat_interval).to_string(),
            liveness: humantime::format_duration(args.liveness_timeout).to_string(),
        });
    }
    std::fs::create_dir_all(&args.data_dir).map_err(|source| Error::DataDir { path: args.data_dir.clone(), source })?;
    let sources = auth::Sources { data_dir: Some(args.data_dir.clone()), file: args.tokens_file.clone() };
    let authority = auth::Authority::load(sources)?;
    if !authority.is_closed() && !args.listen.ip().is_loopback() && !args.insecure {
        return Err(Error::Unprotected { addr: args.listen, data_dir: args.data_dir.clone() });
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(service::listen::Tls::load(service::listen::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: args.tls_client_ca.clone(),
        })?),
        _ => None,
    };
    let (grpc_room, http_room, fds) = service::listen::connection_budget();
    let max_connections = (
        args.max_connections.map_or(grpc_room, |n| n as usize),
        args.max_http_connections.map_or(http_room, |n| n as usize),
    );
    tracing::info!(grpc = max_connections.0, http = max_connections.1, descriptors = fds, "connections held at most");
    let grpc = tokio::net::TcpListener::bind(args.listen).await.map_err(|source| Error::Listen {
        what: "gRPC",
        addr: args.listen,
        hint: "is another coordinator running? pick another --listen",
        source,
    })?;
    let http = tokio::net::TcpListener::bind(args.http).await.map_err(|source| Error::Listen {
        what: "HTTP",
        addr: args.http,
        hint: "pick another --http",
        source,
    })?;
    // One line on stdout with the bound addresses, for scripts and tests that listen on port 0.
    let grpc_addr = grpc.local_addr().map_err(|source| Error::LocalAddr { what: "gRPC", source })?;
    let http_addr = http.local_addr().map_err(|source| Error::LocalAddr { what: "HTTP", source })?;
    println!("testgrid-coordinator listening grpc={grpc_addr} http={http_addr}");
    let config = service::Config {
        core: core::Config {
            prefetch_per_slot: args.prefetch,
            liveness_timeout_ms: args.liveness_timeout.as_millis() as u64,
            max_worker_losses: args.max_worker_losses,
            keep_finished_sessions: args.keep_sessions,
            keep_finished_for_ms: u64::try_from(args.keep_sessions_for.as_millis()).unwrap_or(u64::MAX),
            output: core::OutputLimits {
                per_test: args.max_test_output,
                per_session: args.max_session_output,
                total: args.max_output_total,
            },
            overrun_grace_ms: u64::try_from(args.overrun_grace.as_millis()).unwrap_or(u64::MAX),
            start_within_ms: u64::try_from(args.start_within.as_millis()).unwrap_or(u64::MAX),
        },
        heartbeat_interval: args.heartbeat_interval,
        data_dir: Some(args.data_dir),
        durable_sessions: true,
        blob_store_bytes: args.blob_store_size,
        max_blob_bytes: args.max_blob_size,
        blob_retention: args.blob_retention,
        // The data directory's own `history.db`.
        history_dir: None,
        authority,
        tls,
        max_connections,
        handshake_timeout: args.handshake_timeout,
        max_attach_per_token: args.max_attach_per_token as usize,
        max_sessions_per_owner: args.max_sessions_per_owner as usize,
        demand: core::demand::Policy {
            target_drain_ms: u64::try_from(args.target_drain.as_millis()).unwrap_or(u64::MAX).max(1),
            min_workers: pools(&args.min_workers, 0),
            max_workers: pools(&args.max_workers, core::demand::DEFAULT_MAX_WORKERS),
            worker_slots: pools(&args.worker_slots, 0),
        },
    };
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        stop.cancel();
    });
    let serve = service::serve(grpc, Some(http), config, shutdown.clone());
    tokio::pin!(serve);
    tokio::select! {
        result = &mut serve => return Ok(result?),
        () = shutdown.cancelled() => {}
    }
    // Give open streams a moment to end cleanly, but never hang on a peer that does not let go.
    match tokio::time::timeout(std::time::Duration::from_secs(5), serve).await {
        Ok(result) => Ok(result?),
        Err(_) => {
            tracing::warn!("some connections did not close within 5s; exiting anyway");
            Ok(())
        }
    }
}

/// `token create | list | revoke`.
fn token(data_dir: &std::path::Path, action: TokenAction) -> Result<(), Error> {
    std::fs::create_dir_all(data_dir).map_err(|source| Error::DataDir { path: data_dir.to_path_buf(), source })?;
    let db = TokenDb::open(data_dir)?;
    match action {
        TokenAction::Create { role, name, expires, labels, max_slots } => {
            if role != Role::Worker && (!labels.is_empty() || max_slots.is_some()) {
                return Err(Error::Usage("--label and --max-slots restrict worker tokens: add --role worker".into()));
            }
            let now = testgrid_proto::now_ms();
            let expires_ms = expires.map(|d| now.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)));
            let (mut token, secret) = Token::generate(&name, role, now, expires_ms);
            token.limits = auth::WorkerLimits { labels: labels.into_iter().collect(), max_slots };
            db.create(&token)?;
            eprintln!(
                "token `{name}` ({role}) made; it is shown once, here. Give it as TESTGRID_TOKEN (or --token){}",
                if role == Role::Worker { " to the workers" } else { "" }
            );
            println!("{secret}");
        }
        TokenAction::List => {
            let when = |ms: u64| {
                humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
            };
            println!("{:<32} {:<7} {:<21} {:<32} LIMITS", "NAME", "ROLE", "CREATED", "EXPIRES");
            let now = testgrid_proto::now_ms();
            for t in db.all()? {
                let expires = match t.expires_ms {
                    None => "never".to_string(),
                    Some(ms) if ms <= now => format!("{} (expired)", when(ms)),
                    Some(ms) => when(ms),
                };
                let mut limits = Vec::new();
                if !t.limits.labels.is_empty() {
                    limits.push(format!("labels {}", t.limits.labels_text()));
                }
                if let Some(n) = t.limits.max_slots {
                    limits.push(format!("at most {n} slots"));
                }
                let limits = if limits.is_empty() { "-".to_string() } else { limits.join("; ") };
                println!("{:<32} {:<7} {:<21} {expires:<32} {limits}", t.name, t.role.as_str(), when(t.created_ms));
            }
        }
        TokenAction::Revoke { name } => {
            db.revoke(&name)?;
            eprintln!("token `{name}` revoked: a running coordinator refuses it within a second");
        }
    }
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
