//! Why the coordinator could not run, and the one place that picks its exit code.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::service;

/// Everything that stops `testgrid-coordinator`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Flags that cannot work together: the operator fixes the command line.
    #[error(
        "--heartbeat-interval ({heartbeat}) must be above zero and below --liveness-timeout ({liveness}), or every worker looks silent"
    )]
    Liveness { heartbeat: String, liveness: String },
    /// A command line that cannot work, with the fix.
    #[error("{0}")]
    Usage(String),
    #[error("cannot create --data-dir {}: {source}", path.display())]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("cannot listen on {addr} ({what}); {hint}: {source}")]
    Listen { what: &'static str, addr: SocketAddr, hint: &'static str, source: std::io::Error },
    #[error("cannot read the {what} listener's address: {source}")]
    LocalAddr { what: &'static str, source: std::io::Error },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Serve(#[from] service::Error),
    #[error(transparent)]
    Tokens(#[from] crate::auth::tokens::TokenError),
    /// A non-loopback address with no tokens and no `--insecure`.
    #[error(
        "refusing to serve {addr} with no tokens: anyone who can reach it could run commands on every worker. \
         Make one with `testgrid-coordinator token create --data-dir {} --role admin NAME` (or pass --tokens-file), \
         listen on a loopback address (--listen 127.0.0.1:7700), or pass --insecure on a network where that is wanted",
        data_dir.display()
    )]
    Unprotected { addr: SocketAddr, data_dir: PathBuf },
    #[error(transparent)]
    Tls(#[from] service::listen::TlsError),
}

impl Error {
    /// `2`: the flags cannot work (a configuration error); `3`: the machine or the network let
    /// the coordinator down (the documented exit codes).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Liveness { .. } | Error::Unprotected { .. } | Error::Usage(_) | Error::Tls(_) => 2,
            Error::Tokens(
                crate::auth::tokens::TokenError::Exists(_)
                | crate::auth::tokens::TokenError::Unknown(_)
                | crate::auth::tokens::TokenError::BadName(_)
                | crate::auth::tokens::TokenError::BadLine { .. },
            ) => 2,
            Error::Tokens(_) => 3,
            Error::DataDir { .. }
            | Error::Listen { .. }
            | Error::LocalAddr { .. }
            | Error::Runtime(_)
            | Error::Serve(_) => 3,
        }
    }
}
