//! Operating a grid, with the real binaries: the demand signal an autoscaler reads
//! (`/api/v1/demand`, `testgrid_desired_workers`), the metrics, and health.

mod support;

use serde_json::Value;
use support::{Grid, Workspace, http_get, stderr, wait_for};

fn demand(grid: &Grid, pool: &str) -> Value {
    let body = http_get(&grid.http, &format!("/api/v1/demand?pool={pool}")).expect("/api/v1/demand answers");
    serde_json::from_str(&body).expect("JSON")
}

/// The value of one sample line of `/metrics` (`name{labels} value`).
fn metric(grid: &Grid, sample: &str) -> Option<f64> {
    let body = http_get(&grid.http, "/metrics")?;
    body.lines().find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn desired_workers_rise_with_queued_work_seconds_and_fall_to_the_minimum_as_the_queue_drains() {
    let ws = Workspace::new();
    for i in 0..12 {
        ws.test(&format!("t{i:02}.sh"), "sleep 0.5");
    }
    // Two seconds to drain, one slot a worker until one connects, at least one worker kept.
    let mut grid = Grid::start_with(&ws.root(), 0, &["--target-drain", "2s", "--min-workers", "1"]);
    let url = grid.url.clone();
    assert_eq!(demand(&grid, "default")["desired_workers"], 1, "idle: the minimum");

    // A first run teaches the grid how long each test takes.
    grid.add_worker_with("w1", &url, &[]);
    grid.wait_workers(1);
    let first = grid.cli(&["run"]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    grid.worker("w1").signal("TERM");
    wait_for("the worker to leave", || (demand(&grid, "default")["workers"] == 0).then_some(()));

    // The same suite again with no worker to run it: all of it waits, at its known durations.
    let out = grid.cli(&["run", "--detach"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let queued = wait_for("the session's tests to be queued", || {
        let d = demand(&grid, "default");
        (d["queued_tests"] == 12).then_some(d)
    });
    let work = queued["queued_work_seconds"].as_f64().expect("seconds");
    assert!((6.0..30.0).contains(&work), "12 tests of about 0.5 s each are known: {queued}");
    // ceil(work / 2 s): the work drains in the target with that many one-slot workers.
    let desired = queued["desired_workers"].as_u64().expect("a number");
    assert_eq!(desired, (work / 2.0).ceil() as u64, "{queued}");
    assert!(desired >= 3, "{queued}");
    assert_eq!(metric(&grid, "testgrid_desired_workers{pool=\"default\"}"), Some(desired as f64));
    assert_eq!(metric(&grid, "testgrid_queued_tests{pool=\"default\"}"), Some(12.0));

    // Workers come, the queue drains, and the figure falls back to the minimum.
    grid.add_worker_with("w2", &url, &["--slots", "4"]);
    wait_for("the queue to drain", || {
        let d = demand(&grid, "default");
        (d["queued_tests"] == 0 && d["running_tests"] == 0).then_some(())
    });
    let drained = demand(&grid, "default");
    assert_eq!(drained["desired_workers"], 1, "{drained}");
    assert_eq!(drained["worker_slots"], 4, "learned from the connected worker: {drained}");
    assert_eq!(metric(&grid, "testgrid_tests_finished_total{outcome=\"passed\"}"), Some(24.0));
    assert_eq!(metric(&grid, "testgrid_worker_losses_total"), Some(0.0), "a drained worker is no loss");
}

#[test]
fn healthz_reports_a_data_directory_that_takes_no_write() {
    let ws = Workspace::new();
    let grid = Grid::start(&ws.root(), 0);
    assert_eq!(http_get(&grid.http, "/healthz").as_deref(), Some("ok\n"));
    // Root ignores permissions, so the directory's place is taken by a file instead.
    let data = grid.data.clone();
    let moved = data.with_extension("moved");
    std::fs::rename(&data, &moved).expect("move the data directory away");
    std::fs::write(&data, "not a directory").expect("write");
    wait_for("/healthz to turn unhealthy", || http_get(&grid.http, "/healthz").is_none().then_some(()));
    std::fs::remove_file(&data).expect("remove");
    std::fs::rename(&moved, &data).expect("move it back");
    wait_for("/healthz to recover", || http_get(&grid.http, "/healthz").filter(|b| b == "ok\n"));
}

#[test]
fn json_logs_say_which_session_test_attempt_and_worker_each_line_concerns() {
    let ws = Workspace::new();
    ws.test("bad.sh", "exit 1");
    ws.test("good.sh", "true");
    let log = tempfile::NamedTempFile::new().expect("tempfile");
    let data = tempfile::tempdir().expect("tempdir");
    let child = std::process::Command::new(support::bin("testgrid-coordinator"))
        .args(["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--log-format", "json", "--data-dir"])
        .arg(data.path())
        .env("TESTGRID_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(log.reopen().expect("reopen"))
        .spawn()
        .expect("coordinator starts");
    let mut coordinator = support::Proc { child };
    let url = format!("http://{}", support::first_line(&mut coordinator)("grpc"));
    let _worker = support::spawn_worker(&url, "w1", &ws.root(), &[]);
    let run = support::testgrid(&ws.root()).args(["run", "--grid", &url]).output().expect("testgrid runs");
    assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
    let lines = wait_for("the session's last log line", || {
        let text = std::fs::read_to_string(log.path()).ok()?;
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("every line is JSON")).collect();
        lines.iter().any(|l| l["fields"]["message"] == "session finished").then_some(lines)
    });
    let failed = lines
        .iter()
        .find(|l| l["fields"]["message"] == "test finished" && l["fields"]["test"] == "bad.sh")
        .expect("a line for the failed test");
    let f = &failed["fields"];
    assert_eq!(
        (f["attempt"].as_u64(), f["worker"].as_str(), f["outcome"].as_str()),
        (Some(1), Some("w1"), Some("failed"))
    );
    let session = f["session"].as_str().expect("a session field");
    assert_eq!(failed["span"]["session"], session, "inside the session's span: {failed}");
    let finished = lines.iter().find(|l| l["fields"]["message"] == "session finished").expect("finished");
    assert_eq!(finished["fields"]["session"], session);
}

#[test]
fn sigterm_as_kubernetes_sends_it_hands_back_unstarted_tests_at_once_and_lets_running_ones_finish() {
    let ws = Workspace::new();
    // The two long ones are the largest files: they start first, and hold both slots.
    for i in 0..2 {
        ws.test(&format!("long{i}.sh"), &format!("sleep 2 # {}", "padding ".repeat(20)));
    }
    for i in 0..6 {
        ws.test(&format!("q{i}.sh"), "true");
    }
    let mut grid = Grid::start(&ws.root(), 0);
    let url = grid.url.clone();
    grid.add_worker_with("w1", &url, &["--slots", "2", "--drain-timeout", "5m"]);
    grid.wait_workers(1);
    let run = grid.spawn_run(&[]);
    run.wait_submitted();
    wait_for("both long tests to run on w1", || {
        let out = grid.cli(&["workers", "--json"]);
        let w: Value = serde_json::from_str(support::stdout(&out).lines().next()?).ok()?;
        (w["running"].as_array()?.len() == 2).then_some(())
    });
    let signalled = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis();
    grid.worker("w1").signal("TERM");
    // Its prefetched tests come back; a new worker takes them while the long ones finish.
    grid.add_worker_with("w2", &url, &[]);
    let status = support::wait_exit(&mut grid.worker("w1").child, std::time::Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "a drained worker exits 0");
    let events = support::finish(run, 0);
    let handed: Vec<&Value> = events.iter().filter(|e| e["event"] == "test_requeued").collect();
    assert!(!handed.is_empty(), "w1 held prefetched tests to hand back: {events:?}");
    for e in &handed {
        assert!(e["reason"].as_str().is_some_and(|r| r.contains("handed it back")), "{e}");
        let after = e["time_ms"].as_u64().expect("time_ms") as i128 - signalled as i128;
        eprintln!("{} handed back {after} ms after SIGTERM", e["test"]);
        // 100 ms on a quiet machine (docs/operations.md has the figures); room for a loaded one.
        assert!(after < 1_000, "{e} came back {after} ms after SIGTERM");
    }
    for long in ["long0.sh", "long1.sh"] {
        let done = support::of_kind(&events, "test_finished", long);
        assert_eq!(done.len(), 1);
        assert_eq!((done[0]["worker"].as_str(), done[0]["outcome"].as_str()), (Some("w1"), Some("passed")));
    }
    let runs = ws.runs();
    assert!(runs.len() == 8 && runs.values().all(|n| *n == 1), "each test ran once: {runs:?}");
    assert_eq!(metric(&grid, "testgrid_worker_losses_total"), Some(0.0));
}
