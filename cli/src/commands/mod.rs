//! One module per subcommand; each takes its parsed arguments and returns the exit code of a
//! command that ran to its end, or the [`Error`](crate::error::Error) that stopped it.

pub mod cancel;
pub mod run;
pub mod sessions;
pub mod watch;
pub mod workers;
