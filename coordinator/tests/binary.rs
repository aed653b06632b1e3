//! The `testgrid-coordinator` binary: startup, readiness and the errors an operator can cause.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn coordinator() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_testgrid-coordinator"));
    // A data directory of its own unless a test names one: sessions outlive the process now.
    let data = tempfile::tempdir().expect("tempdir").keep();
    cmd.env("TESTGRID_LOG", "warn").env("TESTGRID_DATA_DIR", data).stdin(Stdio::null());
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

#[test]
fn a_client_may_choose_its_session_id_once_and_only_a_well_formed_one() {
    use testgrid_proto as pb;
    let mut child = coordinator()
        .args(["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line).expect("a line");
    let grpc = line.split_whitespace().find_map(|w| w.strip_prefix("grpc=")).expect("grpc address").to_string();
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let codes = runtime.block_on(async {
        let mut client = pb::session_service_client::SessionServiceClient::connect(format!("http://{grpc}"))
            .await
            .expect("connects");
        let spec = pb::SessionSpec {
            tests: vec![pb::TestSpec { path: "a.sh".into(), ..Default::default() }],
            runner: Some(pb::Runner {
                framework: pb::Framework::Shell as i32,
                options: Some(pb::runner::Options::Command(pb::CommandOptions { template: "sh {}".into() })),
                ..Default::default()
            }),
            ..Default::default()
        };
        let submit = |id: &str| pb::SubmitRequest { spec: Some(spec.clone()), session_id: id.to_string() };
        let id = "1b4e28ba-2fa1-4d2e-883f-0016d3cca427";
        let first = client.submit(submit(id)).await.expect("a chosen id is taken").into_inner();
        assert_eq!(first.session_id, id);
        let picked = client.submit(submit("")).await.expect("no id: the grid picks one").into_inner();
        assert_ne!(picked.session_id, id);
        let again = client.submit(submit(id)).await.expect_err("an id in use");
        assert!(again.message().contains(id), "{}", again.message());
        let bad = client.submit(submit(&"x".repeat(10_000))).await.expect_err("not a uuid");
        assert!(bad.message().len() < 300, "a hostile id is not echoed whole: {}", bad.message().len());
        (again.code(), bad.code())
    });
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(codes, (tonic::Code::AlreadyExists, tonic::Code::InvalidArgument));
}
