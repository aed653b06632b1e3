//! TLS and mTLS with the real binaries and certificates made here: the CLI and workers over
//! `https://`, a worker without a client certificate turned away, the wrong scheme either way
//! named as such, an untrusted certificate, and a renewed certificate taken without a restart.

mod support;

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use support::{Workspace, spawn_coordinator_in, spawn_worker, stderr, testgrid, wait_for};

/// A certificate authority: its PEM certificate and what signs with it.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::new()).expect("no names is fine");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("self-signed");
    Ca { pem: cert.pem(), issuer: Issuer::new(params, key) }
}

/// A leaf certificate for `names` signed by `ca`, written as `stem.pem` and `stem.key` in `dir`.
fn leaf(ca: &Ca, names: &[&str], dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
    let params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("names");
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &ca.issuer).expect("signed");
    let (cert_path, key_path) = (dir.join(format!("{stem}.pem")), dir.join(format!("{stem}.key")));
    std::fs::write(&cert_path, cert.pem()).expect("write cert");
    std::fs::write(&key_path, key.serialize_pem()).expect("write key");
    (cert_path, key_path)
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path.to_str().expect("utf-8 path").to_string()
}

fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

#[test]
fn cli_and_workers_over_tls_with_client_certificates_and_a_renewed_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server_ca, client_ca) = (ca("grid CA"), ca("worker CA"));
    let ca_file = write(dir.path(), "ca.pem", &server_ca.pem);
    let client_ca_file = write(dir.path(), "client-ca.pem", &client_ca.pem);
    let (cert, key) = leaf(&server_ca, &["localhost", "127.0.0.1"], dir.path(), "server");
    let (worker_cert, worker_key) = leaf(&client_ca, &["worker-1"], dir.path(), "worker");
    let data = dir.path().join("data");
    let (_coordinator, grpc, _http) = spawn_coordinator_in(
        &data,
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--tls-cert", s(&cert), "--tls-key", s(&key), "--tls-client-ca", &client_ca_file],
    );
    let port = grpc.rsplit(':').next().expect("a port");
    let url = format!("https://localhost:{port}");
    let ws = Workspace::new();
    ws.test("a.sh", "true").test("b.sh", "true").test("c.sh", "echo fine");
    let cli = |args: &[&str], ca: Option<&str>| {
        let mut cmd = testgrid(&ws.root());
        cmd.args(args).env_remove("TESTGRID_CA");
        if let Some(ca) = ca {
            cmd.env("TESTGRID_CA", ca);
        }
        cmd.output().expect("testgrid runs")
    };

    // A worker with no client certificate is turned away, saying what to give it.
    let mut bare = spawn_worker(&url, "bare", &ws.root(), &["--ca", &ca_file]);
    let status =
        wait_for("the worker without a certificate to be turned away", || bare.child.try_wait().expect("wait"));
    assert!(!status.success());
    let _worker = spawn_worker(
        &url,
        "w1",
        &ws.root(),
        &["--ca", &ca_file, "--tls-cert", s(&worker_cert), "--tls-key", s(&worker_key), "--slots", "2"],
    );
    wait_for("the worker with a certificate to register", || {
        let out = cli(&["workers", "--json", "--grid", &url], Some(&ca_file));
        String::from_utf8_lossy(&out.stdout).contains("\"w1\"").then_some(())
    });
    let listed = cli(&["workers", "--grid", &url], Some(&ca_file));
    assert!(!String::from_utf8_lossy(&listed.stdout).contains("bare"), "never registered");

    // A CLI needs no certificate of its own; the session runs on the worker over TLS.
    let run = cli(&["run", "--grid", &url, "--framework", "shell"], Some(&ca_file));
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));

    // Not trusting the grid's authority: a configuration error naming --ca.
    let untrusted = cli(&["sessions", "--grid", &url], None);
    assert_eq!(untrusted.status.code(), Some(2), "{}", stderr(&untrusted));
    assert!(stderr(&untrusted).contains("--ca"), "{}", stderr(&untrusted));

    // http:// to the TLS port: told to use https://.
    let plaintext = cli(&["sessions", "--grid", &format!("http://{grpc}")], None);
    assert_eq!(plaintext.status.code(), Some(2), "{}", stderr(&plaintext));
    assert!(stderr(&plaintext).contains("https://"), "{}", stderr(&plaintext));

    // A renewed certificate from another authority is served without a restart, while the
    // worker's connection made under the old one goes on.
    let renewed_ca = ca("renewed grid CA");
    let renewed_ca_file = write(dir.path(), "renewed-ca.pem", &renewed_ca.pem);
    let (new_cert, new_key) = leaf(&renewed_ca, &["localhost"], dir.path(), "renewed");
    // Key first, then the certificate: the moment in between does not load and is waited out.
    std::fs::rename(&new_key, &key).expect("swap key");
    std::fs::rename(&new_cert, &cert).expect("swap cert");
    wait_for("the renewed certificate to be served", || {
        (cli(&["sessions", "--grid", &url], Some(&renewed_ca_file)).status.code() == Some(0)).then_some(())
    });
    let old = cli(&["sessions", "--grid", &url], Some(&ca_file));
    assert_eq!(old.status.code(), Some(2), "the old authority no longer vouches for it: {}", stderr(&old));
    let again = cli(&["run", "--grid", &url, "--framework", "shell"], Some(&renewed_ca_file));
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
}

#[test]
fn https_to_a_plaintext_grid_says_to_use_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_coordinator, grpc, _http) = spawn_coordinator_in(dir.path(), "127.0.0.1:0", "127.0.0.1:0", &[]);
    let ws = Workspace::new();
    let url = format!("https://{grpc}");
    let out = testgrid(&ws.root()).args(["sessions", "--grid", &url]).output().expect("runs");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("use http://{grpc}")), "{}", stderr(&out));
    let mut worker = spawn_worker(&url, "w", &ws.root(), &[]);
    let status = wait_for("the worker to stop", || worker.child.try_wait().expect("wait"));
    assert!(!status.success(), "retrying cannot help a wrong scheme");
}

#[test]
fn a_tls_http_port_serves_probes_in_plaintext_and_nothing_else() {
    let dir = tempfile::tempdir().expect("tempdir");
    let grid_ca = ca("grid CA");
    let (cert, key) = leaf(&grid_ca, &["localhost"], dir.path(), "server");
    let (_coordinator, _grpc, http) = spawn_coordinator_in(
        &dir.path().join("data"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--tls-cert", s(&cert), "--tls-key", s(&key)],
    );
    assert_eq!(support::http_get(&http, "/healthz").as_deref(), Some("ok\n"));
    assert_eq!(support::http_get(&http, "/metrics"), None, "metrics only over TLS");
    // A certificate that does not go with its key is refused at start, naming the file.
    let (other_cert, _) = leaf(&grid_ca, &["localhost"], dir.path(), "other");
    let out = std::process::Command::new(support::bin("testgrid-coordinator"))
        .args(["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data2"))
        .args(["--tls-cert", s(&other_cert), "--tls-key", s(&key)])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("server.key"), "{}", stderr(&out));
}
