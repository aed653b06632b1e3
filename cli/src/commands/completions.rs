//! `testgrid completions SHELL`: the shell's completion script for every command and flag, from
//! clap's own description of the command line.

use clap::CommandFactory;

use crate::args::Cli;
use crate::error::{Error, exit};

pub fn completions(shell: clap_complete::Shell) -> Result<u8, Error> {
    let mut command = Cli::command();
    let mut stdout = std::io::stdout().lock();
    clap_complete::generate(shell, &mut command, "testgrid", &mut stdout);
    Ok(exit::PASSED)
}
