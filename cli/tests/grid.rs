//! End to end with the real binaries: a `testgrid-coordinator` and two `testgrid-worker`
//! processes on OS-chosen loopback ports, sessions submitted with the real `testgrid` CLI.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::{Grid, Workspace, events, final_outcomes, stderr, stdout, testgrid, wait_exit, wait_for};

#[test]
fn failing_test_exits_1_with_junit_and_every_test_runs_once() {
    let ws = Workspace::new();
    for i in 0..6 {
        ws.test(&format!("t/pass_{i}.sh"), "echo fine");
    }
    ws.test("t/fail.sh", "echo 'about to fail'; echo 'expected 5, got 4' >&2; exit 3");
    let grid = Grid::start(&ws.root(), 2);
    let junit = ws.root().join("out/junit.xml");
    let out = grid.cli(&["run", "t", "--junit", junit.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(1), "stdout: {}\nstderr: {}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("FAIL") && text.contains("t/fail.sh"), "{text}");
    assert!(text.contains("expected 5, got 4"), "summary shows the output tail: {text}");
    assert!(text.contains("6 passed, 1 failed"), "{text}");
    assert!(text.contains("success rate 85.7%"), "{text}");

    let runs = ws.runs();
    assert_eq!(runs.len(), 7, "{runs:?}");
    assert!(runs.values().all(|&n| n == 1), "each test ran exactly once: {runs:?}");

    let xml = std::fs::read_to_string(&junit).expect("JUnit written");
    assert!(xml.contains(r#"tests="7""#) && xml.contains(r#"failures="1""#), "{xml}");
    assert!(xml.contains(r#"<testcase name="t/fail.sh" classname="t""#), "{xml}");
    assert!(xml.contains(r#"<failure message="exit code 3" type="failed">"#), "{xml}");
    assert!(xml.contains(r#"<property name="worker" value="w"#), "{xml}");
    assert_eq!(xml.matches("<testcase ").count(), 7);
}

#[test]
fn all_passing_exits_0_and_work_spreads_over_both_workers() {
    let ws = Workspace::new();
    for i in 0..8 {
        ws.test(&format!("ok_{i}.sh"), "sleep 0.2");
    }
    let grid = Grid::start(&ws.root(), 2);
    let out = grid.cli(&["run", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let events = events(&out);
    let outcomes = final_outcomes(&events);
    assert_eq!(outcomes.len(), 8);
    assert!(outcomes.values().all(|o| o == "passed"));
    let workers: std::collections::BTreeSet<&str> =
        events.iter().filter(|e| e["event"] == "test_finished").filter_map(|e| e["worker"].as_str()).collect();
    assert_eq!(workers.len(), 2, "both workers ran tests: {workers:?}");
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().expect("seq")).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "events are numbered without gaps");
}

#[test]
fn hanging_test_times_out_and_its_process_group_is_killed() {
    let ws = Workspace::new();
    let pidfile = ws.root().join("child.pid");
    ws.test("hang.sh", &format!("sleep 300 & echo $! > '{}'; wait", pidfile.display()));
    ws.test("quick.sh", "true");
    let grid = Grid::start(&ws.root(), 2);
    let started = Instant::now();
    let out = grid.cli(&["run", "--timeout", "1s", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(30), "the timeout cut the hang short");
    let outcomes = final_outcomes(&events(&out));
    assert_eq!(outcomes["hang.sh"], "timed_out");
    assert_eq!(outcomes["quick.sh"], "passed");
    let pid = std::fs::read_to_string(&pidfile).expect("pid written").trim().to_string();
    wait_for("the test's background child to be killed", || {
        (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    });
}

#[test]
fn non_utf8_output_and_file_names_with_spaces() {
    let ws = Workspace::new();
    ws.test("dir with space/a test.sh", "printf 'bytes: \\377\\376 end\\n'; exit 1");
    ws.test("it's quoted.sh", "echo quoted ok");
    let grid = Grid::start(&ws.root(), 2);
    let junit = ws.root().join("junit.xml");
    let out = grid.cli(&["run", "--json", "--junit", junit.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let events = events(&out);
    let outcomes = final_outcomes(&events);
    assert_eq!(outcomes["dir with space/a test.sh"], "failed");
    assert_eq!(outcomes["it's quoted.sh"], "passed");
    let failed = events
        .iter()
        .find(|e| e["event"] == "test_finished" && e["test"] == "dir with space/a test.sh")
        .expect("finished event");
    assert_eq!(failed["output"], "bytes: \u{fffd}\u{fffd} end\n");
    let xml = std::fs::read_to_string(&junit).expect("JUnit written");
    assert!(xml.contains("bytes: \u{fffd}\u{fffd} end"), "{xml}");
    assert_eq!(ws.runs().values().sum::<usize>(), 2);
}

#[test]
fn human_output_on_non_utf8_and_summary() {
    let ws = Workspace::new();
    ws.test("bin.sh", "printf '\\377\\000\\033[31m red\\n'; exit 1");
    let grid = Grid::start(&ws.root(), 1);
    let out = grid.cli(&["run"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("FAILED bin.sh (exit code 1"), "{text}");
    assert!(!text.contains('\u{1b}'), "no raw escapes from test output reach the terminal: {text:?}");
}

#[test]
fn zero_tests_found_exits_4() {
    let ws = Workspace::new();
    std::fs::write(ws.root().join("notes.txt"), "not a test").expect("write");
    let grid = Grid::start(&ws.root(), 1);
    let out = grid.cli(&["run", "--framework", "shell"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(stderr(&out).contains("no tests found"), "{}", stderr(&out));
    let out = grid.cli(&["run", "--pattern", "nothing/**/*.sh"]);
    assert_eq!(out.status.code(), Some(4));
}

#[test]
fn unknown_session_for_watch_and_cancel_exits_2() {
    let ws = Workspace::new();
    let grid = Grid::start(&ws.root(), 0);
    for verb in ["watch", "cancel"] {
        let out = grid.cli(&[verb, "6b1e0f5e-0000-4000-8000-000000000000"]);
        assert_eq!(out.status.code(), Some(2), "{verb}: {}", stderr(&out));
        assert!(stderr(&out).contains("no session 6b1e0f5e-0000-4000-8000-000000000000"), "{}", stderr(&out));
        let out = grid.cli(&[verb, "not-a-session"]);
        assert_eq!(out.status.code(), Some(2));
        assert!(stderr(&out).contains("not a session id"), "{}", stderr(&out));
    }
}

#[test]
fn unreachable_grid_exits_3_with_a_clear_message() {
    let ws = Workspace::new();
    ws.test("a.sh", "true");
    // Bind then drop: nothing listens on this port any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let url = format!("http://127.0.0.1:{port}");
    for args in [vec!["run", "--grid", url.as_str()], vec!["sessions", "--grid", url.as_str()]] {
        let out = testgrid(&ws.root()).args(&args).output().expect("runs");
        assert_eq!(out.status.code(), Some(3), "{args:?}");
        let err = stderr(&out);
        assert!(err.contains(&format!("cannot reach grid at {url}")), "{err}");
        assert!(err.contains("refused") && err.contains("TESTGRID_GRID"), "{err}");
    }
}

#[test]
fn usage_errors_exit_2() {
    let ws = Workspace::new();
    ws.test("a.sh", "true");
    for args in [
        vec!["run", "--command", "echo no placeholder"],
        vec!["run", "no/such/path"],
        vec!["run", "--pattern", "a["],
        vec!["run", "--detach"],
        vec!["run", "--local", "0"],
        vec!["run", "--timeout", "soon"],
        vec!["sessions"],
    ] {
        let out = testgrid(&ws.root()).args(&args).output().expect("runs");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(!stderr(&out).is_empty(), "{args:?} explains itself");
    }
}

#[test]
fn retries_make_a_flaky_test_that_counts_as_passed() {
    let ws = Workspace::new();
    let marker = ws.root().join("seen");
    ws.test(
        "flaky.sh",
        &format!("if [ -e '{0}' ]; then exit 0; fi; touch '{0}'; echo first; exit 1", marker.display()),
    );
    let grid = Grid::start(&ws.root(), 2);
    let junit = ws.root().join("junit.xml");
    let out = grid.cli(&["run", "--retries", "2", "--junit", junit.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("FLAKY flaky.sh (2 attempts)"), "{}", stdout(&out));
    let xml = std::fs::read_to_string(&junit).expect("JUnit");
    assert!(xml.contains("<flakyFailure"), "{xml}");
    assert_eq!(ws.runs()["flaky.sh"], 2);
}

#[test]
fn session_timeout_cancels_and_says_why() {
    let ws = Workspace::new();
    ws.test("long.sh", "echo 'waiting for the network'; sleep 60");
    ws.test("short.sh", "true");
    let grid = Grid::start(&ws.root(), 2);
    let started = Instant::now();
    let out = grid.cli(&["run", "--session-timeout", "2s"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(started.elapsed() < Duration::from_secs(30));
    let text = stdout(&out);
    assert!(text.contains("cancelled: session timeout of 2s passed"), "{text}");
    assert!(text.contains("CANCELLED long.sh"), "{text}");
    assert!(text.contains("│ waiting for the network"), "the output up to the kill is kept: {text}");
}

#[test]
fn detach_then_watch_cancel_sessions_and_workers() {
    let ws = Workspace::new();
    let pidfile = ws.root().join("pid");
    ws.test("slow.sh", &format!("echo $$ > '{}'; sleep 120", pidfile.display()));
    ws.test("quick.sh", "true");
    let grid = Grid::start(&ws.root(), 2);
    let out = grid.cli(&["run", "--detach"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let session = stdout(&out).trim().to_string();

    let pid = wait_for("slow.sh to start", || std::fs::read_to_string(&pidfile).ok().filter(|s| !s.trim().is_empty()));
    let workers = grid.cli(&["workers"]);
    assert!(stdout(&workers).contains("slow.sh"), "workers shows running tests: {}", stdout(&workers));
    let sessions = grid.cli(&["sessions"]);
    assert!(stdout(&sessions).contains(&session) && stdout(&sessions).contains("running"), "{}", stdout(&sessions));

    let cancelled_at = Instant::now();
    let out = grid.cli(&["cancel", &session]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    wait_for("the cancelled test to be killed", || {
        (!std::path::Path::new(&format!("/proc/{}", pid.trim())).exists()).then_some(())
    });
    assert!(cancelled_at.elapsed() < Duration::from_secs(10));

    // Re-attaching to a finished session replays it from the start.
    let out = grid.cli(&["watch", &session, "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let outcomes = final_outcomes(&events(&out));
    assert_eq!(outcomes["slow.sh"], "cancelled");
    assert_eq!(outcomes["quick.sh"], "passed");

    let out = grid.cli(&["cancel", &session]);
    assert!(stdout(&out).contains("already finished"));
    let metrics = support::http_get(&grid.http, "/metrics").expect("metrics served");
    assert!(metrics.contains("testgrid_tests_finished_total{outcome=\"cancelled\"} 1"), "{metrics}");
}

#[test]
fn local_mode_runs_without_a_grid() {
    let ws = Workspace::new();
    for i in 0..5 {
        ws.test(&format!("l{i}.sh"), "true");
    }
    ws.test("bad.sh", "exit 1");
    let out = testgrid(&ws.root()).args(["run", "--local", "2", "--json"]).output().expect("runs");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let outcomes = final_outcomes(&events(&out));
    assert_eq!(outcomes.len(), 6);
    assert_eq!(outcomes["bad.sh"], "failed");
    assert!(ws.runs().values().all(|&n| n == 1));
}

fn sigint(child: &std::process::Child) {
    let status = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
}

#[test]
fn ctrl_c_cancels_the_session_kills_its_tests_and_exits_130() {
    let ws = Workspace::new();
    let pidfile = ws.root().join("pid");
    ws.test("slow.sh", &format!("echo $$ > '{}'; sleep 120", pidfile.display()));
    let mut child = testgrid(&ws.root())
        .args(["run", "--local", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starts");
    let pid = wait_for("slow.sh to start", || std::fs::read_to_string(&pidfile).ok().filter(|s| !s.trim().is_empty()));
    sigint(&child);
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(130));
    let out = child.wait_with_output().expect("output");
    assert!(stdout(&out).contains("CANCELLED slow.sh"), "{}", stdout(&out));
    assert!(stdout(&out).contains("interrupted by the user"), "{}", stdout(&out));
    assert!(!std::path::Path::new(&format!("/proc/{}", pid.trim())).exists(), "the test was killed");
}

#[test]
fn second_ctrl_c_quits_at_once_and_still_kills_the_tests() {
    let ws = Workspace::new();
    let pidfile = ws.root().join("pid");
    // The test ignores SIGTERM, so the first Ctrl-C's polite kill would wait out the grace period.
    ws.test("stubborn.sh", &format!("trap '' TERM; echo $$ > '{}'; sleep 120", pidfile.display()));
    let mut child = testgrid(&ws.root())
        .args(["run", "--local", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starts");
    let pid =
        wait_for("stubborn.sh to start", || std::fs::read_to_string(&pidfile).ok().filter(|s| !s.trim().is_empty()));
    sigint(&child);
    std::thread::sleep(Duration::from_millis(300));
    sigint(&child);
    // Within the 5 s grace the first Ctrl-C would have waited.
    let status = wait_exit(&mut child, Duration::from_secs(4));
    assert_eq!(status.code(), Some(130));
    wait_for("the stubborn test to be killed", || {
        (!std::path::Path::new(&format!("/proc/{}", pid.trim())).exists()).then_some(())
    });
}

#[test]
fn a_closed_stdout_does_not_change_the_exit_code() {
    let ws = Workspace::new();
    for i in 0..20 {
        ws.test(&format!("t{i}.sh"), "exit 1");
    }
    let mut child = testgrid(&ws.root())
        .args(["run", "--local", "2"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starts");
    // Like `testgrid run | head -0`: the reader goes away at once.
    drop(child.stdout.take());
    let status = wait_exit(&mut child, Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "no panic (101) on a broken pipe");
}

#[test]
fn odd_file_names_run_as_files() {
    let ws = Workspace::new();
    ws.test("-e.sh", "echo dash");
    let grid = Grid::start(&ws.root(), 1);
    let out = grid.cli(&["run", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(final_outcomes(&events(&out))["-e.sh"], "passed");
}

#[test]
fn list_names_the_scripts_run_schedules_with_their_commands() {
    let ws = Workspace::new();
    ws.test("a.sh", "exit 0").test("sub/b c.sh", "exit 0").test("sub/skip.sh", "exit 0");
    let out =
        testgrid(&ws.root()).args(["list", "--json", "--exclude", "**/skip*", "--", "arg"]).output().expect("runs");
    let listed = support::listed(&out);
    assert_eq!(listed.keys().map(String::as_str).collect::<Vec<_>>(), ["a.sh", "sub/b c.sh"]);
    let text = testgrid(&ws.root()).args(["list", "--exclude", "**/skip*", "--", "arg"]).output().expect("runs");
    assert!(stdout(&text).contains("sh 'sub/b c.sh' arg"), "{}", stdout(&text));
    let out = testgrid(&ws.root())
        .args(["run", "--local", "2", "--json", "--exclude", "**/skip*", "--", "arg"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let units: Vec<String> = final_outcomes(&events(&out)).into_keys().collect();
    assert_eq!(listed.into_keys().collect::<Vec<_>>(), units);
    assert_eq!(ws.runs().get("sub/skip.sh"), None);
}

#[test]
fn show_output_quiet_and_color_shape_the_human_view() {
    let ws = Workspace::new();
    ws.test("talk.sh", "echo said \"$1\"").test("bad.sh", "echo broken; exit 1");
    let run = |args: &[&str]| testgrid(&ws.root()).args(["run", "--local", "1"]).args(args).output().expect("runs");
    let out = run(&["--show-output", "--", "hello"]);
    assert!(stdout(&out).contains("PASS") && stdout(&out).contains("    said hello"), "{}", stdout(&out));
    let plain = run(&[]);
    assert!(!stdout(&plain).contains("said hello"), "passing output only when asked: {}", stdout(&plain));
    assert!(!stdout(&plain).contains('\x1b'), "no colour off a terminal: {}", stdout(&plain));
    let quiet = run(&["--quiet"]);
    assert!(!stdout(&quiet).contains("PASS "), "no line per test: {}", stdout(&quiet));
    assert!(stdout(&quiet).contains("Summary") && stdout(&quiet).contains("bad.sh"), "{}", stdout(&quiet));
    let colored = run(&["--color", "always"]);
    assert!(stdout(&colored).contains("\x1b[31m"), "{}", stdout(&colored));
    let never = testgrid(&ws.root())
        .args(["run", "--local", "1", "--color", "never"])
        .env("TESTGRID_COLOR", "always")
        .output()
        .expect("runs");
    assert!(!stdout(&never).contains('\x1b'), "the flag wins over the environment: {}", stdout(&never));
}

#[test]
fn completions_cover_every_subcommand() {
    for shell in ["bash", "zsh", "fish"] {
        let out = testgrid(Path::new(".")).args(["completions", shell]).output().expect("runs");
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", stderr(&out));
        for word in ["run", "list", "config", "completions", "filter", "profile", "show-output"] {
            assert!(stdout(&out).contains(word), "{shell} completes {word}");
        }
    }
}

#[test]
fn a_small_session_behind_a_huge_one_gets_its_share_of_slots_at_once() {
    let ws = Workspace::new();
    for i in 0..40 {
        ws.test(&format!("big/t{i}.sh"), "sleep 0.5");
    }
    ws.test("small/a.sh", "true");
    ws.test("small/b.sh", "true");
    let grid = Grid::start(&ws.root(), 2);
    let big = grid.spawn_run(&["big"]);
    wait_for("the big session to be running", || (ws.runs().values().sum::<usize>() >= 2).then_some(()));
    let small = grid.cli(&["run", "small", "--json"]);
    assert_eq!(small.status.code(), Some(0), "{}", stderr(&small));
    // The small one is done while most of the big one still waits for slots.
    let big_ran = ws.runs().keys().filter(|t| t.starts_with("big/")).count();
    assert!(big_ran < 30, "the small session waited for the big one: {big_ran} of its tests ran first");
    let out = big.wait(Duration::from_secs(300));
    assert_eq!(final_outcomes(&events(&out)).len(), 40);
}
