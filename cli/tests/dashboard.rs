//! The dashboard in a real headless browser (Debian's chromium driven by puppeteer-core): a grid
//! with tokens runs a session with a requeue (a test kills its worker) and a retry (a flaky
//! test); the session's page, followed live, ends with one bar per attempt in the rows of the
//! workers' slots; a user sees only their own sessions. A screenshot is kept in
//! `target/dashboard.png`.

mod support;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::{Workspace, events, repo, spawn_coordinator, spawn_worker, stderr, stdout, testgrid, wait_for};

/// The browser driver, installed once from the npm registry into target/tools/browser.
fn driver() -> PathBuf {
    let fixture = repo().join("cli/tests/fixtures/dashboard");
    let dir = repo().join("target/tools/browser");
    std::fs::create_dir_all(&dir).expect("mkdir");
    for file in ["package.json", "look.mjs"] {
        std::fs::copy(fixture.join(file), dir.join(file)).expect("copy the driver");
    }
    if !dir.join("node_modules/puppeteer-core/package.json").exists() {
        let status = Command::new("npm")
            .args(["install", "--silent", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .expect("npm runs");
        assert!(status.success(), "npm install puppeteer-core into {} failed", dir.display());
    }
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "no Chromium at {chromium}: `apt-get install chromium` (.ci/run does), or set CHROMIUM to one"
    );
    dir
}

/// What the page at `url` shows once `wait_for` holds (see look.mjs).
fn look(url: &str, token: &str, shot: &Path, wait_for: &str) -> Value {
    let out = Command::new("node")
        .arg("look.mjs")
        .args([url, token])
        .arg(shot)
        .arg(wait_for)
        .current_dir(driver())
        .output()
        .expect("node runs");
    assert!(out.status.success(), "the browser did not see {wait_for} at {url}: {}{}", stdout(&out), stderr(&out));
    let seen: Value = serde_json::from_str(stdout(&out).lines().last().expect("a line")).expect("JSON");
    assert_eq!(seen["errors"], Value::Array(Vec::new()), "the page logged errors: {seen}");
    seen
}

/// `GET path` with a bearer token: the status code.
fn status_of(addr: &str, path: &str, token: Option<&str>) -> u16 {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n").expect("write");
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).expect("a status line");
    String::from_utf8_lossy(&head[9..12]).parse().expect("a status code")
}

#[test]
fn a_session_with_a_requeue_and_a_retry_shows_one_bar_per_attempt_live_and_only_to_its_owner() {
    let ws = Workspace::new();
    let secret = |who: &str| format!("{who}-{}", "x".repeat(40));
    let (admin, alice, bob, worker) = (secret("admin"), secret("alice"), secret("bob"), secret("worker"));
    let tokens = ws.root().join("tokens");
    std::fs::write(
        &tokens,
        format!("admin root {admin}\nuser alice {alice}\nuser bob {bob}\nworker workers {worker}\n"),
    )
    .expect("write");
    for i in 0..6 {
        ws.test(&format!("t{i}.sh"), "sleep 0.4");
    }
    let marks = ws.root().join("marks");
    std::fs::create_dir_all(&marks).expect("mkdir");
    // Fails its first attempt: retried.
    ws.test("flaky.sh", &format!("m='{}/flaky'; [ -f \"$m\" ] && exit 0; touch \"$m\"; exit 1", marks.display()));
    // Kills its worker on its first attempt: requeued, with what else that worker held.
    ws.test(
        "killer.sh",
        &format!(
            "m='{}/killer'; [ -f \"$m\" ] && exit 0; touch \"$m\"; sleep 0.3; kill -9 $PPID; sleep 5",
            marks.display()
        ),
    );
    let tokens_arg = tokens.to_str().expect("utf-8").to_string();
    let (_coordinator, grpc, http) = spawn_coordinator("127.0.0.1:0", "127.0.0.1:0", &["--tokens-file", &tokens_arg]);
    let url = format!("http://{grpc}");
    let _workers: Vec<_> = ["w1", "w2", "w3"]
        .iter()
        .map(|name| spawn_worker(&url, name, &ws.root(), &["--slots", "2", "--token", &worker]))
        .collect();
    let cli = |token: &str, args: &[&str]| {
        testgrid(&ws.root()).args(args).env("TESTGRID_GRID", &url).env("TESTGRID_TOKEN", token).output().expect("runs")
    };
    wait_for("3 workers", || (stdout(&cli(&admin, &["workers", "--json"])).lines().count() == 3).then_some(()));

    let run = cli(&alice, &["run", "--retries", "1", "--json"]);
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    let events = events(&run);
    let session = events[0]["session"].as_str().expect("a session id").to_string();
    let attempts = events.iter().filter(|e| e["event"] == "test_started").count();
    assert!(events.iter().any(|e| e["event"] == "test_requeued"), "the killer's worker took tests with it");
    let bob_run = cli(&bob, &["run", "t0.sh"]);
    assert_eq!(bob_run.status.code(), Some(0), "{}", stderr(&bob_run));

    let page = format!("http://{http}/");
    let shot = repo().join("target/dashboard.png");
    let seen = look(&format!("{page}#/session/{session}"), &alice, &shot, &format!("bars={attempts}"));
    let bars = seen["bars"].as_array().expect("bars");
    assert!(bars.iter().any(|b| b["outcome"] == "requeued"), "a requeued attempt: {seen}");
    assert!(
        bars.iter()
            .any(|b| b["attempt"].as_u64() > Some(1) && b["classes"].as_str().is_some_and(|c| c.contains("retry")))
    );
    assert!(
        bars.iter().any(|b| b["test"] == "flaky.sh" && b["outcome"] == "failed"),
        "the flaky test's failed try: {seen}"
    );
    for test in ["t0.sh", "t5.sh", "flaky.sh", "killer.sh"] {
        assert!(bars.iter().any(|b| b["test"] == test && b["outcome"] != "requeued"), "{test} has its bar: {seen}");
    }
    // At most a row per slot: 3 workers of 2.
    let lanes = seen["lanes"].as_array().expect("lanes").len();
    assert!((2..=6).contains(&lanes), "{seen}");

    // The overview: alice sees her session, not bob's; an admin sees both.
    let mine = look(&page, &alice, &repo().join("target/dashboard-overview.png"), "sessions=1");
    assert_eq!(mine["owners"], serde_json::json!(["alice"]), "{mine}");
    assert_eq!(mine["workers"].as_array().map(Vec::len), Some(2), "one worker was killed; two remain: {mine}");
    let all = look(&page, &admin, &repo().join("target/dashboard-admin.png"), "sessions=2");
    assert_eq!(all["owners"].as_array().map(Vec::len), Some(2));
    // Not through the API either: someone else's session is not found, no token is refused.
    let events_path = format!("/api/v1/sessions/{session}/events");
    assert_eq!(status_of(&http, &events_path, Some(&bob)), 404);
    assert_eq!(status_of(&http, &events_path, None), 401);
    assert_eq!(status_of(&http, "/api/v1/sessions", Some(&worker)), 403);
    assert_eq!(status_of(&http, &events_path, Some(&alice)), 200);
}
