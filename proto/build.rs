//! Compiles `proto/testgrid/v1/*.proto` with protox (pure Rust, no system `protoc`) and generates
//! the prost messages and tonic services, plus the encoded file descriptor set that gRPC
//! reflection serves.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "testgrid/v1/common.proto",
    "testgrid/v1/blob.proto",
    "testgrid/v1/worker.proto",
    "testgrid/v1/session.proto",
    "testgrid/v1/admin.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(PROTOS, ["."])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("testgrid_descriptor.bin"), prost::Message::encode_to_vec(&fds))?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}
