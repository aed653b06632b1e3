//! The `testgrid-worker` binary: the errors an operator can cause, and reconnecting.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn worker() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_testgrid-worker"));
    cmd.env("TESTGRID_LOG", "info").stdin(Stdio::null());
    cmd
}

#[test]
fn missing_root_names_the_flag() {
    let out = worker().args(["--grid", "http://127.0.0.1:1", "--root", "/no/such/dir"]).output().expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/no/such/dir") && err.contains("--root"), "{err}");
}

#[test]
fn zero_slots_is_a_usage_error() {
    let out = worker().args(["--grid", "http://127.0.0.1:1", "--slots", "0"]).output().expect("runs");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn keeps_retrying_an_absent_coordinator_and_stops_cleanly_on_sigterm() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let log = tempfile::NamedTempFile::new().expect("tempfile");
    let mut child = worker()
        .args(["--grid", &format!("http://127.0.0.1:{port}"), "--slots", "1"])
        .stderr(log.reopen().expect("reopen"))
        .spawn()
        .expect("starts");
    let start = Instant::now();
    // Wait for at least two retry messages: the worker backs off and tries again.
    loop {
        let text = std::fs::read_to_string(log.path()).unwrap_or_default();
        if text.matches("retrying in").count() >= 2 {
            assert!(text.contains("cannot reach the coordinator"), "{text}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no retries logged: {text}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "worker did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
}
