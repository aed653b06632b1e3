//! How the worker runs anything: the one process lifecycle ([`process`]: a process group, stdin
//! closed, bounded capture, timeout and cancel with a grace period, the orphan guard), how an
//! exit reads in words ([`exit`]), bounded output ([`output`]), a one-process test to its report
//! ([`run`]), the report of a unit and its cases ([`report`]), and the per-session build cache
//! ([`cache`]).
//!
//! It must not know any framework, the connection or the protocol's stream: frameworks build on
//! it, never the other way round.

pub mod cache;
pub mod exit;
mod lock;
pub mod output;
pub mod process;
pub mod report;
pub mod run;

pub(crate) use lock::lock;
pub use process::{Ending, Process, Running, Settings, kill_all_running};
