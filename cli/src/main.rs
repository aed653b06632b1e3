//! `testgrid`: parse arguments, set up logging, hand over to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match testgrid_cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help and version to stdout with exit 0, usage errors to stderr with 2.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    // The embedded grid of local mode logs only what the user must see.
    let filter = tracing_subscriber::EnvFilter::try_from_env("TESTGRID_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A closed stderr must not turn a log line into a panic.
        .log_internal_errors(false)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    testgrid_cli::run(cli)
}
