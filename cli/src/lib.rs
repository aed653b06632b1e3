//! The `testgrid` command line: discover tests, submit them to a grid (or an embedded local
//! one), show results live, write reports, and exit with a status CI can trust.
//!
//! - [`args`]: the command line as clap parses it (help texts, environment variables).
//! - [`commands`]: one module per subcommand; `run` reads top to bottom:
//!   [`settings`] → [`discover`] → [`grid`] submit → [`follow`] → [`report`].
//! - [`settings`]: `run`'s flags, checked and resolved.
//! - [`discover`]: frameworks, patterns, test units and the typed runner, one module per
//!   framework.
//! - [`grid`]: the gRPC client (submit, watch with resume, cancel, list); [`local`]: the
//!   embedded grid of local mode; [`signals`]: Ctrl-C and SIGTERM.
//! - [`follow`]: a session to its end; [`live`]: the live view; [`json`]: what `--json`
//!   prints; [`report`]: the tracker, summary and JUnit.
//! - [`error`]: errors and the one place they become exit codes.

/// `println!` that ignores a closed stdout (`testgrid … | head`): the exit code still matters.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($t)*);
    }};
}

/// `eprintln!` that ignores a closed stderr.
macro_rules! err {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($t)*);
    }};
}

pub mod args;
pub mod artifacts;
pub mod bundle;
pub mod commands;
pub mod config;
pub mod discover;
pub mod error;
pub mod follow;
pub mod grid;
pub mod json;
pub mod live;
pub mod local;
pub mod report;
pub mod settings;
pub mod signals;

use std::process::ExitCode;
use std::time::Duration;

pub use args::Cli;
use args::Command;
pub use config::{Invocation, ParseError, parse};
use error::Error;

/// Run the CLI; every error becomes its documented exit code here.
pub fn run(invocation: Invocation) -> ExitCode {
    match run_command(invocation) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            err!("error: {e}");
            e.exit_code()
        }
    }
}

fn run_command(invocation: Invocation) -> Result<u8, Error> {
    let Invocation { cli, layers } = invocation;
    let token =
        testgrid_proto::client::read_token(cli.credentials.token.as_deref(), cli.credentials.token_file.as_deref())?;
    grid::present(
        testgrid_proto::client::Credentials::new(token.as_deref())?,
        testgrid_proto::client::TlsFiles {
            ca: cli.credentials.ca.clone(),
            cert: cli.credentials.tls_cert.clone(),
            key: cli.credentials.tls_key.clone(),
        },
    );
    let runtime = tokio::runtime::Runtime::new().map_err(Error::Runtime)?;
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => commands::run::run(args, layers).await,
            Command::Config(args) => commands::config::config(args, &layers),
            Command::List(args) => commands::list::list(args, layers),
            Command::Plan(args) => commands::plan::plan(args, layers).await,
            Command::Completions { shell } => commands::completions::completions(shell),
            Command::Watch(args) => commands::watch::watch(args).await,
            Command::Cancel(args) => commands::cancel::cancel(args).await,
            Command::Sessions(args) => commands::sessions::sessions(args).await,
            Command::Workers(args) => commands::workers::workers(args).await,
        }
    });
    // Anything still running in the background (a local grid's tasks) must not delay the exit.
    runtime.shutdown_timeout(Duration::from_millis(500));
    result
}
