//! The testgrid coordinator.
//!
//! - [`core`]: the pure scheduling state machine (no I/O).
//! - [`service`]: gRPC handlers, the task that owns the core, HTTP health and metrics.
//! - [`store`]: session event logs that watchers read and resume from.

//! - [`error`]: why it could not run, and its exit codes.

pub mod auth;
pub mod blobs;
pub mod core;
pub mod error;
pub mod service;
pub mod store;

pub use error::Error;
