//! `testgrid`: parse arguments, set up logging, hand over to the library.

use std::process::ExitCode;

use clap::Parser;
use testgrid_proto::logging::{self, LogFormat};

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
    logging::init("warn", LogFormat::Text, false);
    testgrid_cli::run(cli)
}
