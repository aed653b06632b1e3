//! The CLI's errors and the one place they become exit codes.

use std::process::ExitCode;

/// Exit codes of `testgrid` (PRODUCT.md).
pub mod exit {
    pub const PASSED: u8 = 0;
    pub const FAILED: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const INFRA: u8 = 3;
    pub const NO_TESTS: u8 = 4;
    pub const INTERRUPTED: u8 = 130;
}

/// Everything that stops the CLI before it can report on tests.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad flags, paths or ids: the user can fix the command line.
    #[error("{0}")]
    Usage(String),
    /// Discovery found nothing to run.
    #[error("{0}")]
    NoTests(String),
    /// The grid could not be reached, refused us, or lost the session.
    #[error("{0}")]
    Infra(String),
}

impl Error {
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            Error::Usage(_) => exit::USAGE,
            Error::NoTests(_) => exit::NO_TESTS,
            Error::Infra(_) => exit::INFRA,
        })
    }

    /// Classify a gRPC status from the grid.
    pub fn from_status(grid: &str, what: &str, status: &tonic::Status) -> Self {
        use tonic::Code;
        let message = status.message();
        match status.code() {
            Code::InvalidArgument | Code::NotFound | Code::FailedPrecondition | Code::OutOfRange => {
                Error::Usage(format!("{what}: {message}"))
            }
            Code::Unauthenticated | Code::PermissionDenied => {
                Error::Infra(format!("{what}: the grid at {grid} refused us: {message}; check TESTGRID_TOKEN"))
            }
            Code::Unavailable => Error::Infra(format!(
                "cannot reach grid at {grid}: {}; is testgrid-coordinator running? set --grid or TESTGRID_GRID",
                detail(status)
            )),
            _ => Error::Infra(format!("{what}: the grid at {grid} answered {:?}: {message}", status.code())),
        }
    }
}

/// The most telling part of a status: tonic hides the OS error ("connection refused") in the
/// source chain.
fn detail(status: &tonic::Status) -> String {
    use std::error::Error as _;
    let mut text = status.message().to_string();
    let mut source = status.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
