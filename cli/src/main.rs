//! `testgrid`: parse arguments, set up logging, hand over to the library.

use std::process::ExitCode;

use testgrid_cli::ParseError;
use testgrid_proto::logging::{self, LogFormat};

fn main() -> ExitCode {
    let invocation = match testgrid_cli::parse(std::env::args_os().collect()) {
        Ok(invocation) => invocation,
        Err(ParseError::Clap(e)) => {
            // clap prints help and version to stdout with exit 0, usage errors to stderr with 2.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
        Err(ParseError::Config(e)) => {
            eprintln!("error: {e}");
            return e.exit_code();
        }
    };
    // The embedded grid of local mode logs only what the user must see.
    logging::init("warn", LogFormat::Text, false);
    testgrid_cli::run(invocation)
}
