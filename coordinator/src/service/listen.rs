//! Taking connections on both ports: TLS (certificates reloaded when their files change), a
//! deadline for the first bytes and the handshake, and a bound on open connections so that idle
//! peers cannot use up the descriptors gRPC needs.
//!
//! The gRPC port hands its connections to tonic ([`incoming`]); the HTTP port serves its own
//! ([`serve_http`]) with a header timeout, a connection lifetime and, when full, the oldest
//! connection closed for the newest (a probe always gets in).
//!
//! A TLS port also takes plaintext, only to say so: every call on such a connection is refused
//! with [`testgrid_proto::client::TLS_ONLY`] by the auth layer, except the gRPC health check,
//! which Kubernetes' gRPC probes make without TLS.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// The certificate files of `--tls-cert`, `--tls-key` and `--tls-client-ca`.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Client certificates are checked against these authorities: required of workers,
    /// optional for CLIs.
    pub client_ca: Option<PathBuf>,
}

/// TLS files that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("TLS: {file}: {problem}")]
pub struct TlsError {
    pub file: String,
    pub problem: String,
}

/// The server side of TLS, for both ports: what is loaded now, reloaded when the files change.
pub struct Tls {
    files: TlsFiles,
    current: RwLock<Loaded>,
}

struct Loaded {
    stamps: Vec<Option<(SystemTime, u64)>>,
    grpc: Arc<rustls::ServerConfig>,
    http: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish_non_exhaustive()
    }
}

/// How often the certificate files are looked at.
const RELOAD_EVERY: Duration = Duration::from_secs(1);

impl Tls {
    /// Load the files now; any problem is reported, naming the file.
    pub fn load(files: TlsFiles) -> Result<Arc<Tls>, TlsError> {
        let loaded = Self::build(&files)?;
        Ok(Arc::new(Tls { files, current: RwLock::new(loaded) }))
    }

    /// Whether workers must present a client certificate.
    pub fn requires_worker_certs(&self) -> bool {
        self.files.client_ca.is_some()
    }

    fn paths(files: &TlsFiles) -> Vec<&Path> {
        let mut paths = vec![files.cert.as_path(), files.key.as_path()];
        paths.extend(files.client_ca.as_deref());
        paths
    }

    fn stamps(files: &TlsFiles) -> Vec<Option<(SystemTime, u64)>> {
        Self::paths(files)
            .into_iter()
            .map(|p| std::fs::metadata(p).ok().and_then(|m| Some((m.modified().ok()?, m.len()))))
            .collect()
    }

    fn build(files: &TlsFiles) -> Result<Loaded, TlsError> {
        // Stamped before reading: a file changed while it is read is read again next time.
        let stamps = Self::stamps(files);
        let problem = |file: &Path, problem: String| TlsError { file: file.display().to_string(), problem };
        let certs =
            CertificateDer::pem_file_iter(&files.cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| problem(&files.cert, format!("cannot read a PEM certificate chain (--tls-cert): {e}")))?;
        if certs.is_empty() {
            return Err(problem(&files.cert, "no CERTIFICATE block (--tls-cert)".into()));
        }
        let key = PrivateKeyDer::from_pem_file(&files.key)
            .map_err(|e| problem(&files.key, format!("cannot read a PEM private key (--tls-key): {e}")))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = match &files.client_ca {
            None => rustls::server::WebPkiClientVerifier::no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                let cas = CertificateDer::pem_file_iter(ca)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| problem(ca, format!("cannot read PEM certificates (--tls-client-ca): {e}")))?;
                for cert in cas {
                    roots.add(cert).map_err(|e| problem(ca, format!("not a usable CA certificate: {e}")))?;
                }
                if roots.is_empty() {
                    return Err(problem(ca, "no CERTIFICATE block (--tls-client-ca)".into()));
                }
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| problem(ca, e.to_string()))?
            }
        };
        let config = |alpn: &[&[u8]]| -> Result<Arc<rustls::ServerConfig>, TlsError> {
            let mut config = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
                .with_safe_default_protocol_versions()
                .map_err(|e| problem(&files.cert, e.to_string()))?
                .with_client_cert_verifier(Arc::clone(&verifier))
                .with_single_cert(certs.clone(), key.clone_key())
                .map_err(|e| {
                    problem(&files.key, format!("does not go with the certificate {}: {e}", files.cert.display()))
                })?;
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Ok(Arc::new(config))
        };
        Ok(Loaded { stamps, grpc: config(&[b"h2"])?, http: config(&[b"h2", b"http/1.1"])? })
    }

    fn config(&self, port: Port) -> Arc<rustls::ServerConfig> {
        // A poisoned lock still holds a whole configuration (it is replaced in one assignment).
        let loaded = self.current.read().unwrap_or_else(|e| e.into_inner());
        Arc::clone(match port {
            Port::Grpc => &loaded.grpc,
            Port::Http => &loaded.http,
        })
    }

    /// Load the files again whenever they change, until `stop`; a change that does not load
    /// (a key written after its certificate) keeps the previous certificate, with a warning.
    pub async fn keep_current(self: Arc<Self>, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(RELOAD_EVERY) => {}
            }
            let stamps = Self::stamps(&self.files);
            if stamps == self.current.read().unwrap_or_else(|e| e.into_inner()).stamps {
                continue;
            }
            match Self::build(&self.files) {
                Ok(loaded) => {
                    *self.current.write().unwrap_or_else(|e| e.into_inner()) = loaded;
                    info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                }
                Err(e) => {
                    warn!("{e}; keeping the certificate loaded before");
                    self.current.write().unwrap_or_else(|e| e.into_inner()).stamps = stamps;
                }
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Port {
    Grpc,
    Http,
}

/// How a connection reached us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Plaintext on a plaintext port.
    Plain,
    /// TLS, with or without a verified client certificate.
    Tls { client_cert: bool },
    /// Plaintext on a TLS port: only told to use TLS (and health checks).
    PlainOnTlsPort,
}

/// What the services learn of a connection (put in every request's extensions by tonic).
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    pub addr: SocketAddr,
    pub transport: Transport,
}

/// An accepted connection; its place under the connection limit is held while it lives.
pub struct Conn {
    stream: Stream,
    peer: Peer,
    _slot: Slot,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer
    }
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// How connections are taken on one port.
#[derive(Clone, Debug)]
pub struct Limits {
    /// The most connections open at once (handshakes included).
    pub max_connections: usize,
    /// A connection must send its first bytes and finish its TLS handshake within this.
    pub handshake_timeout: Duration,
}

/// The first byte of a TLS record carrying a handshake (a ClientHello).
const TLS_HANDSHAKE: u8 = 0x16;

/// Says "some were refused" at most this often, not once per connection.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// One warning per [`WARN_EVERY`] for a repeated problem, with how many times it happened.
struct Throttled {
    last: Option<tokio::time::Instant>,
    count: u64,
}

impl Throttled {
    fn new() -> Self {
        Throttled { last: None, count: 0 }
    }

    fn note(&mut self, what: impl FnOnce(u64) -> String) {
        self.count += 1;
        if self.last.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            warn!("{}", what(self.count));
            self.last = Some(tokio::time::Instant::now());
            self.count = 0;
        }
    }
}

/// Take one connection through its first bytes and TLS handshake.
async fn open(tcp: TcpStream, addr: SocketAddr, tls: Option<(&Tls, Port)>) -> io::Result<(Stream, Transport)> {
    let _ = tcp.set_nodelay(true);
    let mut first = [0u8; 1];
    if tcp.peek(&mut first).await? == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before sending anything"));
    }
    match tls {
        Some((tls, port)) if first[0] == TLS_HANDSHAKE => {
            let stream = tokio_rustls::TlsAcceptor::from(tls.config(port)).accept(tcp).await?;
            let client_cert = stream.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty());
            Ok((Stream::Tls(Box::new(stream)), Transport::Tls { client_cert }))
        }
        Some(_) => Ok((Stream::Plain(tcp), Transport::PlainOnTlsPort)),
        None if first[0] == TLS_HANDSHAKE => {
            debug!(%addr, "TLS handshake on a plaintext port; closing");
            Err(io::Error::new(io::ErrorKind::InvalidData, "TLS on a plaintext port"))
        }
        None => Ok((Stream::Plain(tcp), Transport::Plain)),
    }
}

/// The connections a port holds, oldest first, each with the token that closes it (before
/// it is open, on either port; once open, on the HTTP port, whose connections are ours).
#[derive(Default)]
struct Registry {
    conns: Mutex<VecDeque<Entry>>,
    next: std::sync::atomic::AtomicU64,
}

struct Entry {
    id: u64,
    close: CancellationToken,
    opened: bool,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Entry>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(self: &Arc<Self>, close: CancellationToken, permit: OwnedSemaphorePermit) -> Slot {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.lock().push_back(Entry { id, close, opened: false });
        Slot { id, registry: Arc::clone(self), _permit: permit }
    }

    fn opened(&self, id: u64) {
        if let Some(entry) = self.lock().iter_mut().find(|e| e.id == id) {
            entry.opened = true;
        }
    }

    /// Close the oldest connection that may be closed to make room; whether there was one.
    fn close_oldest(&self, opened_too: bool) -> bool {
        let mut conns = self.lock();
        let Some(at) = conns.iter().position(|e| opened_too || !e.opened) else { return false };
        conns.remove(at).map(|e| e.close.cancel()).is_some()
    }
}

/// A connection's place in its port's [`Registry`] and under its limit, given up on drop.
struct Slot {
    id: u64,
    registry: Arc<Registry>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let id = self.id;
        self.registry.lock().retain(|e| e.id != id);
    }
}

/// Accept connections on `listener` until `stop`, each opened within the handshake timeout and
/// under the connection limit. When the port is full the oldest connection still opening (the
/// oldest of all with `close_open`) is closed for the new one: idle peers that connect and say
/// nothing cannot keep anyone out. An accept error (out of descriptors) is waited out.
fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<Tls>>,
    port: Port,
    limits: Limits,
    close_open: bool,
    stop: CancellationToken,
    on_conn: impl Fn(Conn, CancellationToken) + Send + Sync + 'static,
) -> tokio::task::JoinHandle<()> {
    let on_conn = Arc::new(on_conn);
    let room = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let registry = Arc::new(Registry::default());
    tokio::spawn(async move {
        let what = match port {
            Port::Grpc => "gRPC",
            Port::Http => "HTTP",
        };
        let mut refused = Throttled::new();
        let mut failing = Throttled::new();
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let (tcp, addr) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    failing.note(|n| format!("{what}: cannot accept connections ({e}); {n} failures"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let permit = match Arc::clone(&room).try_acquire_owned() {
                Ok(permit) => Some(permit),
                // The closed connection's task gives its place back as it ends.
                Err(_) if registry.close_oldest(close_open) => {
                    tokio::time::timeout(Duration::from_millis(500), Arc::clone(&room).acquire_owned())
                        .await
                        .ok()
                        .and_then(Result::ok)
                }
                Err(_) => None,
            };
            let Some(permit) = permit else {
                refused.note(|n| {
                    format!("{what}: {n} connections refused: {} are open (the limit)", limits.max_connections)
                });
                continue;
            };
            let close = stop.child_token();
            let slot = registry.add(close.clone(), permit);
            let (tls, on_conn, timeout) = (tls.clone(), Arc::clone(&on_conn), limits.handshake_timeout);
            tokio::spawn(async move {
                let opening = tokio::time::timeout(timeout, open(tcp, addr, tls.as_deref().map(|t| (t, port))));
                let opened = tokio::select! {
                    () = close.cancelled() => return debug!(%addr, "connection still opening closed for a newer one"),
                    opened = opening => opened,
                };
                match opened {
                    Ok(Ok((stream, transport))) => {
                        slot.registry.opened(slot.id);
                        on_conn(Conn { stream, peer: Peer { addr, transport }, _slot: slot }, close)
                    }
                    Ok(Err(e)) => debug!(%addr, "connection not opened: {e}"),
                    Err(_) => debug!(%addr, "connection sent nothing (or no TLS handshake) within {timeout:?}; closed"),
                }
            });
        }
    })
}

/// The gRPC port's connections, for `serve_with_incoming`.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<Tls>>,
    limits: Limits,
    stop: CancellationToken,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<Conn>> {
    let (tx, rx) = mpsc::channel(64);
    accept_loop(listener, tls, Port::Grpc, limits, false, stop, move |conn, _| {
        // Full (the server is behind) or gone: the connection just closes.
        let _ = tx.try_send(Ok(conn));
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// How long an HTTP client has to send a request's headers.
const HTTP_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP connection is closed (gracefully) after this long: probes and scrapers reconnect.
const HTTP_LIFETIME: Duration = Duration::from_secs(60);

/// Serve `router` on the HTTP port until `stop`. When the port is full the oldest connection
/// is closed for the newest, so that a flood of idle connections cannot keep a probe out.
pub async fn serve_http(
    listener: TcpListener,
    tls: Option<Arc<Tls>>,
    limits: Limits,
    router: axum::Router,
    stop: CancellationToken,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let plaintext = super::http::plaintext_on_tls(router.clone());
    let task = accept_loop(listener, tls, Port::Http, limits, true, stop, move |conn, close| {
        let router = if conn.peer.transport == Transport::PlainOnTlsPort { plaintext.clone() } else { router.clone() };
        tokio::spawn(async move {
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder.http1().timer(TokioTimer::new()).header_read_timeout(HTTP_HEADER_TIMEOUT);
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(Some(Duration::from_secs(20)))
                .keep_alive_timeout(Duration::from_secs(10))
                .max_concurrent_streams(32);
            let service = hyper_util::service::TowerToHyperService::new(router);
            let connection = builder.serve_connection(TokioIo::new(conn), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                () = close.cancelled() => {}
                () = tokio::time::sleep(HTTP_LIFETIME) => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), connection).await;
                }
            }
        });
    });
    let _ = task.await;
}

/// Descriptors kept free of connections (the store, blobs being written, logs, child pipes).
const FD_RESERVE_MIN: u64 = 64;

/// How many connections each port may hold: from the process's descriptor limit (raised to its
/// hard limit first), keeping a reserve for files and most of the rest for gRPC (workers and
/// CLIs), a small share for HTTP probes and scrapers. Returns `(grpc, http, descriptor limit)`.
pub fn connection_budget() -> (usize, usize, u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let limit = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Err(_) => 1024,
    };
    budget(limit)
}

fn budget(limit: u64) -> (usize, usize, u64) {
    // An "unlimited" limit is still bounded by what the kernel hands one process.
    let usable = limit.min(1 << 20);
    let reserve = (usable / 8).max(FD_RESERVE_MIN);
    let http = (usable / 16).clamp(4, 256);
    let grpc = usable.saturating_sub(reserve + http).max(16);
    (usize::try_from(grpc).unwrap_or(usize::MAX), usize::try_from(http).unwrap_or(usize::MAX), limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_keeps_room_for_files_and_most_for_grpc() {
        let (grpc, http, _) = budget(1024);
        assert_eq!((grpc, http), (1024 - 128 - 64, 64));
        let (grpc, http, _) = budget(u64::MAX);
        assert_eq!(http, 256);
        assert!(grpc > 100_000);
        let (grpc, http, _) = budget(100);
        assert!(grpc >= 16 && http >= 4);
    }
}
