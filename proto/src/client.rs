//! The one way a program opens a channel to a coordinator: the CLI and the worker both build
//! their connection here, so that what a connection needs (timeouts, keepalive, message limits,
//! and later TLS and a token) is decided in one place.

use std::time::Duration;

use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::v1::admin_service_client::AdminServiceClient;
use crate::v1::blob_service_client::BlobServiceClient;
use crate::v1::session_service_client::SessionServiceClient;
use crate::v1::worker_service_client::WorkerServiceClient;

/// The largest message either side accepts: a submission of very many tests, a result with its
/// bounded output and cases, a listing of many sessions.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// The bytes of one `UploadChunk` or `DownloadChunk`.
pub const BLOB_CHUNK_BYTES: usize = 1024 * 1024;

/// Blobs up to this size go in `BatchUpload`s and `BatchDownload`s; bigger ones are streamed
/// (`Upload`, `Download`).
pub const BATCH_BLOB_BYTES: u64 = 4 * 1024 * 1024;

/// The most blob bytes one batch carries (well under [`MAX_MESSAGE_BYTES`]).
pub const BATCH_BYTES: u64 = 16 * 1024 * 1024;

/// The most digests one `FindMissing` asks about.
pub const FIND_MISSING_DIGESTS: usize = 10_000;

/// HTTP/2 flow-control windows of every connection, both ways (see the endpoint and the
/// coordinator's server).
pub const STREAM_WINDOW_BYTES: u32 = 4 * 1024 * 1024;
pub const CONNECTION_WINDOW_BYTES: u32 = 16 * 1024 * 1024;

/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A grid address that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("bad grid address `{url}`: {problem}; expected something like http://host:7700")]
pub struct BadAddress {
    pub url: String,
    pub problem: String,
}

/// `host:port` means `http://host:port`; surrounding spaces are dropped.
pub fn normalize_url(grid: &str) -> String {
    let grid = grid.trim();
    if grid.contains("://") { grid.to_string() } else { format!("http://{grid}") }
}

/// A connection to a coordinator that sends the caller's token on every call.
pub type GridChannel = InterceptedService<Channel, Credentials>;

/// What every call carries: the token as an `authorization: Bearer` header, if there is one.
#[derive(Clone, Default)]
pub struct Credentials {
    header: Option<AsciiMetadataValue>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.header.is_some() { "Credentials(token)" } else { "Credentials(none)" })
    }
}

impl Credentials {
    /// Credentials presenting `token` (none: no header).
    pub fn new(token: Option<&str>) -> Result<Credentials, BadToken> {
        let Some(token) = token.map(str::trim).filter(|t| !t.is_empty()) else { return Ok(Credentials::default()) };
        if token.len() > MAX_TOKEN_BYTES || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(BadToken(format!(
                "it must be up to {MAX_TOKEN_BYTES} printable characters without spaces ({} bytes given)",
                token.len()
            )));
        }
        let mut header: AsciiMetadataValue = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| BadToken("it is not a valid header value".into()))?;
        header.set_sensitive(true);
        Ok(Credentials { header: Some(header) })
    }

    pub fn has_token(&self) -> bool {
        self.header.is_some()
    }
}

impl Interceptor for Credentials {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(header) = &self.header {
            request.metadata_mut().insert("authorization", header.clone());
        }
        Ok(request)
    }
}

/// The longest token sent.
const MAX_TOKEN_BYTES: usize = 512;

/// A token that cannot be sent.
#[derive(Debug, thiserror::Error)]
#[error("bad token (from --token, TESTGRID_TOKEN or the token file): {0}")]
pub struct BadToken(pub String);

/// The token to send: `token` (`--token` / `TESTGRID_TOKEN`) if given, else the first line of
/// `file` (`--token-file` / `TESTGRID_TOKEN_FILE`, e.g. a mounted Secret).
pub fn read_token(token: Option<&str>, file: Option<&std::path::Path>) -> Result<Option<String>, BadToken> {
    if let Some(token) = token.map(str::trim).filter(|t| !t.is_empty()) {
        return Ok(Some(token.to_string()));
    }
    let Some(file) = file else { return Ok(None) };
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(file)
        .and_then(|f| f.take(MAX_TOKEN_BYTES as u64 * 2).read_to_string(&mut text))
        .map_err(|e| BadToken(format!("cannot read the token file {}: {e}", file.display())))?;
    let token = text.lines().next().unwrap_or_default().trim();
    if token.is_empty() {
        return Err(BadToken(format!("the token file {} is empty", file.display())));
    }
    Ok(Some(token.to_string()))
}

/// Whether `url` names this machine (a token sent there in plaintext stays on it).
pub fn is_loopback(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(host, _)| host),
    };
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// TLS towards a grid (`https://` addresses): the roots to trust and, for mTLS, the certificate
/// to present. Ignored for `http://` addresses (local mode, a loopback grid).
#[derive(Clone, Debug, Default)]
pub struct TlsFiles {
    /// PEM certificates of the authorities that may sign the grid's certificate (`--ca`,
    /// `TESTGRID_CA`); the system's roots when not given.
    pub ca: Option<std::path::PathBuf>,
    /// PEM certificate chain and private key presented to the grid (`--tls-cert`, `--tls-key`).
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
}

/// TLS settings that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("TLS: {0}")]
pub struct BadTls(pub String);

/// The most bytes read from a PEM file (a chain of a few certificates is a few KiB).
const MAX_PEM_BYTES: u64 = 1024 * 1024;

fn read_pem(path: &std::path::Path, what: &str) -> Result<Vec<u8>, BadTls> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_PEM_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| BadTls(format!("cannot read the {what} {}: {e}", path.display())))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(BadTls(format!("the {what} {} is over {MAX_PEM_BYTES} bytes", path.display())));
    }
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(BadTls(format!("the {what} {} holds no PEM block (-----BEGIN ...)", path.display())));
    }
    Ok(bytes)
}

impl TlsFiles {
    /// The client TLS configuration these files describe.
    pub fn client_config(&self) -> Result<ClientTlsConfig, BadTls> {
        let mut config = ClientTlsConfig::new();
        config = match &self.ca {
            Some(ca) => config.ca_certificate(Certificate::from_pem(read_pem(ca, "CA file (--ca, TESTGRID_CA)")?)),
            None => config.with_native_roots(),
        };
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let cert = read_pem(cert, "client certificate (--tls-cert)")?;
                let key = read_pem(key, "client key (--tls-key)")?;
                config = config.identity(Identity::from_pem(cert, key));
            }
            (None, None) => {}
            (Some(_), None) => return Err(BadTls("--tls-cert needs --tls-key (the certificate's private key)".into())),
            (None, Some(_)) => return Err(BadTls("--tls-key needs --tls-cert (the certificate it belongs to)".into())),
        }
        Ok(config)
    }
}

/// What a coordinator's refusal of a Submit says when a blob of its workspace is missing (the
/// coordinator restarted without its data, or collected the upload before the session came):
/// the client sends the workspace again.
pub const NOT_UPLOADED: &str = "is not uploaded";

/// The message a coordinator's TLS port answers a plaintext call with; clients recognise it.
pub const TLS_ONLY: &str = "this grid port takes TLS only: use an https:// grid address (with --ca FILE if its certificate is not from a public authority)";

/// How to reach a coordinator.
#[derive(Clone, Debug)]
pub struct Target {
    /// The normalized address (`http://host:7700`).
    pub url: String,
    /// HTTP/2 keepalive: how often to ping, and how long to wait for the answer.
    pub keepalive: Duration,
    /// Ping even when no call is open (a worker between streams must notice a dead peer).
    pub keepalive_while_idle: bool,
    /// What every call carries.
    pub credentials: Credentials,
    /// TLS for an `https://` address.
    pub tls: TlsFiles,
}

impl Target {
    /// A target with keepalive every `keepalive`, only while calls are open.
    pub fn new(url: &str, keepalive: Duration) -> Self {
        Target {
            url: normalize_url(url),
            keepalive,
            keepalive_while_idle: false,
            credentials: Credentials::default(),
            tls: TlsFiles::default(),
        }
    }

    /// `channel`, sending this target's credentials on every call.
    pub fn authorized(&self, channel: Channel) -> GridChannel {
        InterceptedService::new(channel, self.credentials.clone())
    }

    /// A warning to print, if the token would travel in plaintext off this machine.
    pub fn plaintext_warning(&self) -> Option<String> {
        (self.credentials.has_token() && self.url.starts_with("http://") && !is_loopback(&self.url))
            .then(|| format!("warning: the token is sent in plaintext to {}; use an https:// grid address", self.url))
    }

    /// Whether the address asks for TLS.
    pub fn is_tls(&self) -> bool {
        self.url.starts_with("https://")
    }

    /// The endpoint to connect (lazily or at once) with every setting applied.
    pub fn endpoint(&self) -> Result<Endpoint, BadAddress> {
        let bad = |problem: String| BadAddress { url: self.url.clone(), problem };
        if !self.url.starts_with("http://") && !self.is_tls() {
            return Err(bad("the scheme must be http:// or https://".into()));
        }
        let mut endpoint = Endpoint::from_shared(self.url.clone()).map_err(|e| bad(e.to_string()))?;
        if self.is_tls() {
            let config = self.tls.client_config().map_err(|e| bad(e.to_string()))?;
            endpoint = endpoint.tls_config(config).map_err(|e| bad(crate::error_chain(&e)))?;
        }
        Ok(endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            // HTTP/2's default 64 KiB windows make a big message (a blob batch, a big report)
            // wait on a window update every 64 KiB.
            .initial_stream_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
            .http2_keep_alive_interval(self.keepalive)
            .keep_alive_timeout(self.keepalive)
            .keep_alive_while_idle(self.keepalive_while_idle))
    }
}

/// Why connecting to `target` failed, when the cause is the scheme: an `https://` address whose
/// port speaks plaintext (the grid answers a plaintext call there). `None` when that is not it.
/// (The reverse, `http://` to a TLS port, needs no probe: the port answers with [`TLS_ONLY`].)
pub async fn wrong_scheme(target: &Target) -> Option<String> {
    let plain_url = target.url.strip_prefix("https://").map(|rest| format!("http://{rest}"))?;
    let plain = Target { url: plain_url.clone(), tls: TlsFiles::default(), ..target.clone() };
    let endpoint = plain.endpoint().ok()?.connect_timeout(Duration::from_secs(3));
    let channel = tokio::time::timeout(Duration::from_secs(5), endpoint.connect()).await.ok()?.ok()?;
    let request = crate::v1::ListRequest { page_size: 1, page_token: String::new() };
    let answer =
        tokio::time::timeout(Duration::from_secs(5), sessions(plain.authorized(channel)).list(request)).await.ok()?;
    match answer {
        // A TLS port answering plaintext: the https:// failure was something else (a certificate).
        Err(status) if status.message() == TLS_ONLY => None,
        Err(status) if status.code() == tonic::Code::Unavailable => None,
        _ => Some(format!("the grid at {} does not speak TLS: use {plain_url}", target.url)),
    }
}

/// The session service on `channel`, with the protocol's message limits.
pub fn sessions(channel: GridChannel) -> SessionServiceClient<GridChannel> {
    SessionServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// The worker service on `channel`, with the protocol's message limits.
pub fn workers(channel: GridChannel) -> WorkerServiceClient<GridChannel> {
    WorkerServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// The admin service on `channel`, with the protocol's message limits.
pub fn admin(channel: GridChannel) -> AdminServiceClient<GridChannel> {
    AdminServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// The blob service on `channel`, with the protocol's message limits.
pub fn blobs(channel: GridChannel) -> BlobServiceClient<GridChannel> {
    BlobServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_host_port_means_http() {
        assert_eq!(normalize_url(" localhost:7700 "), "http://localhost:7700");
        assert_eq!(normalize_url("https://grid:7700"), "https://grid:7700");
        assert!(Target::new("http://[::1", Duration::from_secs(1)).endpoint().is_err());
    }

    #[test]
    fn loopback_addresses_are_recognised() {
        for url in ["http://127.0.0.1:7700", "http://localhost:1", "http://[::1]:7700", "127.0.0.2:9"] {
            assert!(is_loopback(url), "{url}");
        }
        for url in ["http://10.0.0.1:7700", "http://grid:7700", "http://[2001:db8::1]:1", "http://localhost.evil:1"] {
            assert!(!is_loopback(url), "{url}");
        }
    }

    #[test]
    fn a_token_is_sent_as_a_bearer_header_and_checked_first() {
        let mut creds = Credentials::new(Some(" tg_abc ")).expect("fine");
        let request = creds.call(tonic::Request::new(())).expect("intercepted");
        assert_eq!(request.metadata().get("authorization").and_then(|v| v.to_str().ok()), Some("Bearer tg_abc"));
        assert!(!Credentials::new(None).expect("none").has_token());
        assert!(Credentials::new(Some("has space")).is_err());
        let long = "x".repeat(MAX_TOKEN_BYTES + 1);
        let e = Credentials::new(Some(&long)).expect_err("too long").to_string();
        assert!(!e.contains(&long), "not echoed");
    }
}
