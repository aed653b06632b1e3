//! The one way a program opens a channel to a coordinator: the CLI and the worker both build
//! their connection here, so that what a connection needs (timeouts, keepalive, message limits,
//! and later TLS and a token) is decided in one place.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

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

/// How to reach a coordinator.
#[derive(Clone, Debug)]
pub struct Target {
    /// The normalized address (`http://host:7700`).
    pub url: String,
    /// HTTP/2 keepalive: how often to ping, and how long to wait for the answer.
    pub keepalive: Duration,
    /// Ping even when no call is open (a worker between streams must notice a dead peer).
    pub keepalive_while_idle: bool,
}

impl Target {
    /// A target with keepalive every `keepalive`, only while calls are open.
    pub fn new(url: &str, keepalive: Duration) -> Self {
        Target { url: normalize_url(url), keepalive, keepalive_while_idle: false }
    }

    /// The endpoint to connect (lazily or at once) with every setting applied.
    pub fn endpoint(&self) -> Result<Endpoint, BadAddress> {
        let endpoint = Endpoint::from_shared(self.url.clone())
            .map_err(|e| BadAddress { url: self.url.clone(), problem: e.to_string() })?;
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

/// The session service on `channel`, with the protocol's message limits.
pub fn sessions(channel: Channel) -> SessionServiceClient<Channel> {
    SessionServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// The worker service on `channel`, with the protocol's message limits.
pub fn workers(channel: Channel) -> WorkerServiceClient<Channel> {
    WorkerServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// The admin service on `channel`, with the protocol's message limits.
pub fn admin(channel: Channel) -> AdminServiceClient<Channel> {
    AdminServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// The blob service on `channel`, with the protocol's message limits.
pub fn blobs(channel: Channel) -> BlobServiceClient<Channel> {
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
}
