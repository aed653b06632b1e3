//! The `testgrid.v1` protocol: messages and services generated from `proto/testgrid/v1/*.proto`.
//!
//! The `.proto` files are the contract; read them for what every field means. This crate holds
//! only generated code and a few conversions that every side needs.

#![expect(clippy::all, reason = "generated code")]

/// Generated messages and services of package `testgrid.v1`.
pub mod v1 {
    tonic::include_proto!("testgrid.v1");

    /// The encoded file descriptor set, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("testgrid_descriptor");
}

pub use v1::*;
