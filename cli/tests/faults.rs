//! Fault injection with the real binaries: workers killed, frozen, cut off, drained; the
//! coordinator restarted; a test that kills its own worker; chaos. Every test checks that each
//! test of the session ends with exactly one outcome and that the totals add up.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{
    Grid, Proxy, Run, Workspace, final_outcomes, finish, now_ms, of_kind, stderr, stdout, wait_exit, wait_for,
};

/// Short liveness settings so that freezes and cuts are detected within a test's patience.
const FAST_LIVENESS: &[&str] = &["--liveness-timeout", "2s", "--heartbeat-interval", "200ms"];

#[test]
fn killed_worker_has_its_tests_rerun_elsewhere_at_once() {
    let ws = Workspace::new();
    let pids = ws.root().join("pids");
    for i in 0..4 {
        ws.test(&format!("t{i}.sh"), &format!("echo \"$TESTGRID_TEST $$\" >> '{}'; sleep 1", pids.display()));
    }
    // A liveness timeout far beyond the test's patience: only the stream ending explains a
    // fast requeue.
    let mut grid = Grid::start_with(&ws.root(), 2, &["--liveness-timeout", "120s"]);
    let run = grid.spawn_run(&[]);
    let holder = grid.holder_of("t0.sh");
    let first = wait_for("t0.sh's pid", || {
        std::fs::read_to_string(&pids).ok()?.lines().find_map(|l| l.strip_prefix("t0.sh ").map(str::to_string))
    });
    let killed_at = now_ms();
    grid.worker(&holder).signal("KILL");
    // The test process dies with its worker: its attempt is requeued, it must not run on.
    wait_for("the killed worker's test to die with it", || {
        (!std::path::Path::new(&format!("/proc/{first}")).exists()).then_some(())
    });
    let events = finish(run, 0);
    let requeued = of_kind(&events, "test_requeued", "t0.sh");
    assert_eq!(requeued.len(), 1, "{requeued:?}");
    assert!(requeued[0]["reason"].as_str().is_some_and(|r| r.contains("lost")), "{}", requeued[0]);
    let latency = requeued[0]["time_ms"].as_u64().expect("time") - killed_at;
    assert!(latency < 10_000, "requeued {latency} ms after the kill, long before the liveness timeout");
    assert!(final_outcomes(&events).values().all(|o| o == "passed"));
    let runs = ws.runs();
    assert!(runs["t0.sh"] == 2 && runs.values().all(|&n| (1..=2).contains(&n)), "{runs:?}");
}

#[test]
fn frozen_worker_is_lost_after_the_liveness_timeout_and_its_late_results_do_not_count() {
    let ws = Workspace::new();
    // The largest file starts first.
    ws.test("slow.sh", "sleep 1 # padding so that this file is the largest and starts first ........");
    for i in 0..8 {
        ws.test(&format!("q{i}.sh"), "sleep 0.5");
    }
    let mut grid = Grid::start_with(&ws.root(), 2, FAST_LIVENESS);
    let run = grid.spawn_run(&[]);
    let holder = grid.holder_of("slow.sh");
    let frozen_at = now_ms();
    grid.worker(&holder).signal("STOP");
    // Lost: the coordinator drops it from its list.
    wait_for("the frozen worker to be declared lost", || {
        let out = grid.cli(&["workers", "--json"]);
        (!stdout(&out).contains(&format!("\"name\":\"{holder}\""))).then_some(())
    });
    // Thaw it while the session still runs: whatever it reports late must not count.
    grid.worker(&holder).signal("CONT");
    let events = finish(run, 0);
    let requeued = of_kind(&events, "test_requeued", "slow.sh");
    assert_eq!(requeued.len(), 1, "{requeued:?}");
    assert!(requeued[0]["reason"].as_str().is_some_and(|r| r.contains("silent")), "{}", requeued[0]);
    let detected = requeued[0]["time_ms"].as_u64().expect("time") - frozen_at;
    // Silence is measured from the last heartbeat, up to one interval before the freeze.
    assert!(detected >= 1_500, "not before the liveness timeout ({detected} ms)");
    assert!(detected < 15_000, "detected {detected} ms after the freeze");
    let finals = of_kind(&events, "test_finished", "slow.sh");
    let counted: Vec<&&Value> = finals.iter().filter(|e| e["final"] == true).collect();
    assert_eq!(counted.len(), 1);
    assert_eq!(counted[0]["attempt"], 2, "only the live attempt counts");
    for discarded in of_kind(&events, "result_discarded", "slow.sh") {
        assert_eq!(discarded["attempt"], 1, "{discarded}");
    }
    grid.wait_workers(2);
}

#[test]
fn worker_cut_off_from_the_network_is_lost_and_comes_back_when_the_cut_heals() {
    let ws = Workspace::new();
    ws.test("slow.sh", "sleep 1 # padding so that this file is the largest and starts first ........");
    for i in 0..8 {
        ws.test(&format!("q{i}.sh"), "sleep 0.5");
    }
    let mut grid = Grid::start_with(&ws.root(), 0, FAST_LIVENESS);
    let proxy = Proxy::start(grid.url.trim_start_matches("http://"));
    grid.add_worker_with("w1", &proxy.url(), &[]);
    grid.wait_workers(1);
    let run = grid.spawn_run(&[]);
    assert_eq!(grid.holder_of("slow.sh"), "w1");
    let url = grid.url.clone();
    grid.add_worker_with("w2", &url, &[]);
    let cut_at = now_ms();
    proxy.cut(true);
    wait_for("the cut-off worker to be declared lost", || {
        let out = grid.cli(&["workers", "--json"]);
        (!stdout(&out).contains("\"name\":\"w1\"")).then_some(())
    });
    proxy.cut(false);
    let events = finish(run, 0);
    let requeued = of_kind(&events, "test_requeued", "slow.sh");
    assert_eq!(requeued.len(), 1, "{requeued:?}");
    // Either side may notice first: the coordinator (no heartbeats) or the worker (no pings),
    // which then drops the connection.
    assert!(requeued[0]["reason"].as_str().is_some_and(|r| r.contains("lost")), "{}", requeued[0]);
    let detected = requeued[0]["time_ms"].as_u64().expect("time") - cut_at;
    // Silence is measured from the last message heard, up to one heartbeat before the cut.
    assert!((1_500..15_000).contains(&detected), "detected {detected} ms after the cut");
    assert!(final_outcomes(&events).values().all(|o| o == "passed"));
    // The worker notices the silence itself and reconnects once the path works again.
    grid.wait_workers(2);
}

#[test]
fn sigterm_drains_a_worker_without_counting_a_loss() {
    let ws = Workspace::new();
    ws.test("long.sh", "sleep 2 # padding so that this file is the largest and starts first ........");
    for i in 0..4 {
        ws.test(&format!("q{i}.sh"), "sleep 0.2");
    }
    let mut grid = Grid::start(&ws.root(), 0);
    let url = grid.url.clone();
    grid.add_worker_with("w1", &url, &["--drain-timeout", "30s"]);
    grid.wait_workers(1);
    let run = grid.spawn_run(&[]);
    assert_eq!(grid.holder_of("long.sh"), "w1");
    grid.worker("w1").signal("TERM");
    wait_for("w1 to show as draining", || {
        let out = grid.cli(&["workers", "--json"]);
        stdout(&out).lines().any(|l| l.contains("\"name\":\"w1\"") && l.contains("\"draining\":true")).then_some(())
    });
    grid.add_worker_with("w2", &url, &[]);
    let status = wait_exit(&mut grid.worker("w1").child, Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "a drained worker exits 0");
    let events = finish(run, 0);
    let long = of_kind(&events, "test_finished", "long.sh");
    assert_eq!(long.len(), 1);
    assert_eq!((long[0]["worker"].as_str(), long[0]["outcome"].as_str()), (Some("w1"), Some("passed")));
    assert!(of_kind(&events, "test_requeued", "long.sh").is_empty(), "the running test finished where it ran");
    for e in events.iter().filter(|e| e["event"] == "test_requeued") {
        assert!(e["reason"].as_str().is_some_and(|r| r.contains("handed it back")), "no loss counted: {e}");
    }
    assert_eq!(ws.runs().values().sum::<usize>(), 5, "each test ran once");
}

#[test]
fn drain_timeout_hands_back_a_test_that_runs_too_long() {
    let ws = Workspace::new();
    ws.test("endless.sh", "sleep 600");
    let mut grid = Grid::start(&ws.root(), 0);
    let url = grid.url.clone();
    grid.add_worker_with("w1", &url, &["--drain-timeout", "1s"]);
    grid.wait_workers(1);
    let run = grid.spawn_run(&["--timeout", "0"]);
    grid.holder_of("endless.sh");
    grid.worker("w1").signal("TERM");
    let status = wait_exit(&mut grid.worker("w1").child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(0));
    // Handed back, not lost: it waits for the next worker, which we then cancel it on.
    let out = grid.cli(&["sessions", "--json"]);
    let session: Value = serde_json::from_str(stdout(&out).lines().next().expect("a session")).expect("json");
    assert_eq!(session["state"], "running");
    let id = session["session"].as_str().expect("id").to_string();
    grid.cli(&["cancel", &id]);
    let events = finish(run, 1);
    let requeued = of_kind(&events, "test_requeued", "endless.sh");
    assert_eq!(requeued.len(), 1);
    assert!(requeued[0]["reason"].as_str().is_some_and(|r| r.contains("handed it back")), "{}", requeued[0]);
}

#[test]
fn coordinator_restart_workers_reconnect_and_the_watcher_says_what_was_lost() {
    let ws = Workspace::new();
    ws.test("long.sh", "sleep 60");
    ws.test("quick.sh", "true");
    let mut grid = Grid::start(&ws.root(), 2);
    let junit = ws.root().join("report.xml");
    std::fs::write(&junit, "<testsuites name=\"an old green run\"/>").expect("write");
    let run = grid.spawn_run(&["long.sh", "--junit", junit.to_str().expect("utf-8")]);
    // The session is the grid's before it restarts: a Submit still unanswered would be sent
    // again to the new coordinator, which never saw the workspace.
    run.wait_submitted();
    grid.holder_of("long.sh");
    assert!(!junit.exists(), "the old report is gone before the new run has results");
    grid.restart_coordinator();
    grid.wait_workers(2);
    let out = run.wait(Duration::from_secs(120));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("lost: the grid at"), "{}", stderr(&out));
    assert!(stderr(&out).contains("restarted"), "{}", stderr(&out));
    let xml = std::fs::read_to_string(&junit).expect("a report even for a lost session");
    assert!(xml.contains(r#"name="long.sh""#) && xml.contains("session was lost"), "{xml}");
    // The restarted grid works.
    let out = grid.cli(&["run", "quick.sh"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn a_coordinator_killed_and_restarted_within_the_liveness_timeout_runs_no_test_twice() {
    let ws = Workspace::new();
    for i in 0..8 {
        ws.test(&format!("t{i}.sh"), "sleep 0.7");
    }
    // Room for a restart on a loaded machine: workers hold on to what runs for this long.
    let liveness = ["--liveness-timeout", "20s", "--heartbeat-interval", "200ms"];
    let mut grid = Grid::start_with(&ws.root(), 2, &liveness);
    let run = grid.spawn_run(&[]);
    run.wait_submitted();
    // The fifth start: four have run or are running, and the workers are busy.
    wait_for("a few tests to have started", || (ws.runs().values().sum::<usize>() >= 5).then_some(()));
    grid.restart_coordinator_keeping_data();
    let events = finish(run, 0);
    let outcomes = final_outcomes(&events);
    assert_eq!(outcomes.len(), 8);
    assert!(outcomes.values().all(|o| o == "passed"), "{outcomes:?}");
    // Counted by the tests themselves: what ran, was running or finished unreported when the
    // coordinator died was adopted, not run again.
    let runs = ws.runs();
    assert!(runs.len() == 8 && runs.values().all(|n| *n == 1), "{runs:?}");
    assert!(!events.iter().any(|e| e["event"] == "result_discarded"), "{events:?}");
    // An assignment the coordinator sent as it died may never have reached its worker: that
    // test, never started, is queued again once the adoption window closes. Nothing that ran
    // is.
    for requeued in events.iter().filter(|e| e["event"] == "test_requeued") {
        let test = requeued["test"].as_str().expect("test");
        let reason = requeued["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("coordinator restarted"), "{requeued}");
        let starts = of_kind(&events, "test_started", test);
        assert!(starts.iter().all(|s| s["attempt"] != 1), "{test} had started before it was requeued: {events:?}");
    }
    // One start per test in the log, although some starts were not kept before the kill.
    for i in 0..8 {
        assert_eq!(of_kind(&events, "test_started", &format!("t{i}.sh")).len(), 1, "{events:?}");
    }
    // The session is still known to the restarted grid, finished.
    let out = grid.cli(&["sessions", "--json"]);
    let session: Value = serde_json::from_str(stdout(&out).lines().next().expect("a session")).expect("json");
    assert_eq!((session["state"].as_str(), session["passed"].as_u64()), (Some("finished"), Some(8)), "{session}");
    // And after another restart, with nothing running, it is still there as it ended.
    grid.restart_coordinator_keeping_data();
    let out = grid.cli(&["sessions", "--json"]);
    let again: Value = serde_json::from_str(stdout(&out).lines().next().expect("a session")).expect("json");
    assert_eq!(again, session);
    let id = session["session"].as_str().expect("id");
    let watched = grid.cli(&["watch", id, "--json"]);
    let replayed: Vec<u64> = support::events(&watched).iter().filter_map(|e| e["seq"].as_u64()).collect();
    let original: Vec<u64> = events.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert_eq!(replayed, original, "the whole log, from the database");
}

#[test]
fn a_coordinator_back_after_the_liveness_timeout_requeues_what_was_out_and_blames_no_worker() {
    let ws = Workspace::new();
    let root = ws.root();
    // A first run that would outlast the test's patience, so that it must be given up.
    let body = |name: &str| {
        let marker = root.join(format!("{name}.first"));
        let pid = root.join(format!("{name}.pid"));
        format!(
            "if [ ! -e '{m}' ]; then touch '{m}'; echo $$ > '{p}'; sleep 60; fi",
            m = marker.display(),
            p = pid.display()
        )
    };
    for name in ["long0.sh", "long1.sh"] {
        ws.test(name, &body(name));
    }
    ws.test("quick.sh", "true");
    let mut grid = Grid::start_with(&root, 2, FAST_LIVENESS);
    let run = grid.spawn_run(&["long0.sh", "long1.sh", "quick.sh"]);
    // What is requeued after the restart is what the restarted grid knows of.
    run.wait_submitted();
    let pids: Vec<String> = ["long0.sh", "long1.sh"]
        .iter()
        .map(|name| {
            wait_for(&format!("{name} to run"), || {
                std::fs::read_to_string(root.join(format!("{name}.pid"))).ok().filter(|p| p.ends_with('\n'))
            })
        })
        .collect();
    grid.kill_coordinator();
    // Past the liveness timeout the workers give up what they held: its processes are killed.
    for pid in &pids {
        let proc = format!("/proc/{}", pid.trim());
        wait_for("a worker to give up its test", || (!Path::new(&proc).exists()).then_some(()));
    }
    grid.start_coordinator_keeping_data();
    let events = finish(run, 0);
    assert!(final_outcomes(&events).values().all(|o| o == "passed"), "{events:?}");
    for name in ["long0.sh", "long1.sh"] {
        let requeued = of_kind(&events, "test_requeued", name);
        assert_eq!(requeued.len(), 1, "{name}: {events:?}");
        let reason = requeued[0]["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("coordinator restarted"), "{reason}");
    }
    assert!(!events.iter().any(|e| e["outcome"] == "lost"));
    let runs = ws.runs();
    assert_eq!((runs["long0.sh"], runs["long1.sh"]), (2, 2), "{runs:?}");
}

#[test]
fn a_submit_whose_answer_was_lost_is_sent_again_and_its_session_runs_once() {
    let ws = Workspace::new();
    for i in 0..3 {
        ws.test(&format!("t{i}.sh"), "true");
    }
    let grid = Grid::start(&ws.root(), 2);
    // The grid hears the submit and creates the session; its answer never reaches the CLI, as
    // when the coordinator dies between the two.
    let proxy = Proxy::start(grid.url.trim_start_matches("http://"));
    proxy.mute_replies(true);
    let mut cmd = support::testgrid(&ws.root());
    cmd.args(["run", "--json", "--no-upload", "--grid", &proxy.url()]);
    let run = Run::spawn(cmd);
    let listed = || stdout(&grid.cli(&["sessions", "--json"])).lines().count();
    wait_for("the session on the grid", || (listed() == 1).then_some(()));
    proxy.mute_replies(false);
    proxy.reset();
    let events = finish(run, 0);
    assert_eq!(final_outcomes(&events).len(), 3);
    let runs = ws.runs();
    assert!(runs.len() == 3 && runs.values().all(|n| *n == 1), "{runs:?}");
    assert_eq!(listed(), 1, "the submit sent again made no second session");
}

#[test]
fn watch_resumes_after_the_connection_drops_without_missing_an_event() {
    let ws = Workspace::new();
    for i in 0..10 {
        ws.test(&format!("t{i}.sh"), "sleep 0.3");
    }
    let grid = Grid::start(&ws.root(), 2);
    let proxy = Proxy::start(grid.url.trim_start_matches("http://"));
    let mut cmd = support::testgrid(&ws.root());
    cmd.args(["run", "--json", "--grid", &proxy.url()]);
    let run = Run::spawn(cmd);
    wait_for("a few tests to run", || (ws.runs().values().sum::<usize>() >= 3).then_some(()));
    proxy.reset();
    let events = finish(run, 0);
    assert_eq!(final_outcomes(&events).len(), 10);
}

#[test]
fn a_test_that_kills_its_worker_every_time_ends_lost() {
    let ws = Workspace::new();
    ws.test("killer.sh", "kill -9 $PPID; sleep 5");
    for i in 0..3 {
        ws.test(&format!("ok{i}.sh"), "true");
    }
    let mut grid = Grid::start(&ws.root(), 2);
    let mut run = grid.spawn_run(&[]);
    let url = grid.url.clone();
    // A supervisor, as Kubernetes would be: restart workers that die.
    let deadline = Instant::now() + Duration::from_secs(120);
    while run.child.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "the session did not finish");
        for i in 0..grid.workers.len() {
            if grid.workers[i].child.try_wait().expect("wait").is_some() {
                let name = format!("w{}", i + 1);
                let replacement = support::spawn_worker(&url, &name, &grid.root, &[]);
                grid.workers[i] = replacement;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let events = finish(run, 1);
    let outcomes = final_outcomes(&events);
    assert_eq!(outcomes["killer.sh"], "lost");
    assert!(
        outcomes.iter().filter(|(t, _)| t.starts_with("ok")).all(|(_, o)| o == "passed"),
        "{outcomes:?}\n{events:#?}"
    );
    assert_eq!(ws.runs()["killer.sh"], 3, "run once, then requeued twice (--max-worker-losses 2)");
}

#[test]
fn chaos_workers_killed_and_restarted_for_the_whole_session() {
    let ws = Workspace::new();
    for i in 0..300 {
        ws.test(&format!("c/t{i:03}.sh"), "sleep 0.05");
    }
    let mut grid = Grid::start(&ws.root(), 3);
    let mut run = grid.spawn_run(&["--max-worker-losses", "1000"]);
    let url = grid.url.clone();
    let mut seed = now_ms();
    let mut kills = 0;
    let deadline = Instant::now() + Duration::from_secs(300);
    while run.child.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "the session did not finish");
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let victim = (seed >> 33) as usize % grid.workers.len();
        grid.workers[victim].signal("KILL");
        let _ = grid.workers[victim].child.wait();
        kills += 1;
        grid.workers[victim] = support::spawn_worker(&url, &format!("w{}", victim + 1), &grid.root, &[]);
        std::thread::sleep(Duration::from_millis(150 + (seed >> 40) % 250));
    }
    let events = finish(run, 0);
    let outcomes = final_outcomes(&events);
    assert_eq!(outcomes.len(), 300);
    assert!(outcomes.values().all(|o| o == "passed"), "{outcomes:?}");
    assert!(kills >= 3, "the chaos actually happened ({kills} kills)");
    let runs = ws.runs();
    assert_eq!(runs.len(), 300, "every test ran");
}

#[test]
fn cancel_on_disconnect_ends_the_session_when_its_cli_dies() {
    let ws = Workspace::new();
    let pidfile = ws.root().join("pid");
    ws.test("long.sh", &format!("echo $$ > '{}'; sleep 120", pidfile.display()));
    let grid = Grid::start_with(&ws.root(), 1, FAST_LIVENESS);
    let mut run = grid.spawn_run(&["--cancel-on-disconnect"]);
    let pid = wait_for("long.sh to start", || std::fs::read_to_string(&pidfile).ok().filter(|s| !s.trim().is_empty()));
    run.child.kill().expect("kill the CLI");
    let _ = run.child.wait();
    let session = wait_for("the session to be cancelled", || {
        let out = grid.cli(&["sessions", "--json"]);
        let s: Value = serde_json::from_str(stdout(&out).lines().next()?).ok()?;
        (s["state"] == "finished").then_some(s)
    });
    assert!(session["cancel_reason"].as_str().is_some_and(|r| r.contains("no client watched")), "{session}");
    assert_eq!(session["cancelled"], 1);
    wait_for("the test to be killed", || {
        (!std::path::Path::new(&format!("/proc/{}", pid.trim())).exists()).then_some(())
    });
}
