//! The `testgrid-coordinator` binary: startup, readiness and the errors an operator can cause.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn coordinator() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_testgrid-coordinator"));
    cmd.env("TESTGRID_LOG", "warn").stdin(Stdio::null());
    cmd
}

#[test]
fn prints_its_addresses_and_creates_the_data_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("nested/data");
    let mut child = coordinator()
        .args(["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .stdout(Stdio::piped())
        .spawn()
        .expect("starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line).expect("a line");
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.starts_with("testgrid-coordinator listening grpc=127.0.0.1:"), "{line}");
    assert!(line.contains(" http=127.0.0.1:"), "{line}");
    assert!(data.is_dir(), "--data-dir is created");
}

#[test]
fn port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = coordinator()
        .args(["--listen", &addr, "--http", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot listen on {addr}")) && err.contains("--listen"), "{err}");
}

#[test]
fn bad_flags_exit_2() {
    let out = coordinator().args(["--liveness-timeout", "soon"]).output().expect("runs");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_port_in_use_names_the_systems_reason() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = coordinator()
        .args(["--listen", "127.0.0.1:0", "--http", &addr, "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--http") && err.to_lowercase().contains("in use"), "{err}");
}
