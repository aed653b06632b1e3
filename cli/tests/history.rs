//! Duration history with the real binaries: what a run learns orders the next one (failed
//! first, then new, then longest first), `--last-failed` runs only what did not pass,
//! `--max-fail` stops a session, `testgrid plan` shows the estimates, and a grid's history
//! survives a coordinator restart.

mod support;

use std::path::Path;
use std::process::Output;

use serde_json::Value;
use support::{Grid, Workspace, events, final_outcomes, stderr, stdout, testgrid};

/// `testgrid ARGS --json` in local mode with one slot (so the order is the order served), its
/// history in `cache`.
fn local(root: &Path, cache: &Path, args: &[&str]) -> Output {
    testgrid(root)
        .args(args)
        .args(["--local", "1", "--framework", "shell", "--json"])
        .env("XDG_CACHE_HOME", cache)
        .output()
        .expect("testgrid runs")
}

fn started(out: &Output) -> Vec<String> {
    events(out)
        .iter()
        .filter(|e| e["event"] == "test_started")
        .filter_map(|e| e["test"].as_str().map(str::to_string))
        .collect()
}

/// A suite whose file sizes disagree with its durations: the largest file is the quickest.
fn suite() -> Workspace {
    let ws = Workspace::new();
    ws.test("big_but_quick.sh", &format!("# {}\ntrue", "padding ".repeat(200)));
    ws.test("slow.sh", "sleep 1");
    ws.test("medium.sh", "sleep 0.4");
    ws.test("bad.sh", "exit 1");
    ws
}

#[test]
fn what_a_run_learns_orders_the_next_failed_first_then_new_then_longest_first() {
    let ws = suite();
    let cache = tempfile::tempdir().expect("tempdir");
    let first = local(&ws.root(), cache.path(), &["run"]);
    assert_eq!(first.status.code(), Some(1), "{}", stderr(&first));
    assert_eq!(started(&first)[0], "big_but_quick.sh", "no history yet: the largest file first");

    ws.test("new.sh", "true");
    let second = local(&ws.root(), cache.path(), &["run"]);
    assert_eq!(
        started(&second),
        ["bad.sh", "new.sh", "slow.sh", "medium.sh", "big_but_quick.sh"],
        "{}",
        stdout(&second)
    );
    // `--order given` keeps the order the tests are named in.
    let given = local(&ws.root(), cache.path(), &["run", "--order", "given", "medium.sh", "slow.sh"]);
    assert_eq!(started(&given), ["medium.sh", "slow.sh"]);

    // The plan shows where each estimate comes from, without running anything.
    let before = ws.runs().values().sum::<usize>();
    let plan = local(&ws.root(), cache.path(), &["plan"]);
    assert_eq!(plan.status.code(), Some(0), "{}", stderr(&plan));
    let lines: Vec<Value> = events(&plan);
    let slow = lines.iter().find(|l| l["test"] == "slow.sh").expect("slow.sh planned");
    assert_eq!(slow["source"], "history");
    let ms = slow["estimate_ms"].as_u64().expect("estimate");
    assert!((900..5_000).contains(&ms), "about a second: {ms}");
    let bad = lines.iter().find(|l| l["test"] == "bad.sh").expect("bad.sh planned");
    assert_eq!(bad["last_outcome"], "failed");
    let summary = lines.last().expect("summary");
    assert_eq!((summary["event"].as_str(), summary["tests"].as_u64()), (Some("plan"), Some(5)));
    assert!(summary["predicted_ms"].as_u64() >= summary["lower_bound_ms"].as_u64());
    assert_eq!(ws.runs().values().sum::<usize>(), before, "plan runs nothing");
}

#[test]
fn last_failed_runs_only_what_did_not_pass_and_max_fail_stops_the_session() {
    let ws = suite();
    ws.test("also_bad.sh", "exit 2");
    let cache = tempfile::tempdir().expect("tempdir");
    let first = local(&ws.root(), cache.path(), &["run"]);
    assert_eq!(first.status.code(), Some(1), "{}", stderr(&first));

    let again = local(&ws.root(), cache.path(), &["run", "--last-failed"]);
    assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
    let outcomes = final_outcomes(&events(&again));
    assert_eq!(outcomes.keys().map(String::as_str).collect::<Vec<_>>(), ["also_bad.sh", "bad.sh"]);
    assert!(stderr(&again).contains("2 tests that did not pass last time"), "{}", stderr(&again));

    // One failure stops it: the failed tests come first, so the rest never start.
    let stopped = local(&ws.root(), cache.path(), &["run", "--max-fail", "1"]);
    assert_eq!(stopped.status.code(), Some(1), "{}", stderr(&stopped));
    let events = events(&stopped);
    let outcomes = final_outcomes(&events);
    assert_eq!(outcomes.values().filter(|o| *o == "failed").count(), 1, "{outcomes:?}");
    assert_eq!(outcomes.values().filter(|o| *o == "cancelled").count(), 4, "{outcomes:?}");
    let finished = events.last().expect("finished");
    let reason = finished["cancel_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("--max-fail 1"), "{finished}");
    // What was cancelled taught the history nothing: both failures are still the last word.
    let again = local(&ws.root(), cache.path(), &["run", "--last-failed"]);
    let outcomes = final_outcomes(&support::events(&again));
    assert_eq!(outcomes.keys().map(String::as_str).collect::<Vec<_>>(), ["also_bad.sh", "bad.sh"]);
}

#[test]
fn a_grids_history_survives_a_coordinator_restart() {
    let ws = suite();
    let mut grid = Grid::start(&ws.root(), 1);
    let out = grid.cli(&["run", "--framework", "shell", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    grid.restart_coordinator_keeping_data();
    let plan = grid.cli(&["plan", "--framework", "shell", "--json"]);
    assert_eq!(plan.status.code(), Some(0), "{}", stderr(&plan));
    let lines = events(&plan);
    for test in ["slow.sh", "medium.sh", "bad.sh", "big_but_quick.sh"] {
        let line = lines.iter().find(|l| l["test"] == test).expect("planned");
        assert_eq!((line["source"].as_str(), line["runs"].as_u64()), (Some("history"), Some(1)), "{line}");
    }
    let after = grid.cli(&["run", "--framework", "shell", "--json"]);
    assert_eq!(started(&after)[0], "bad.sh", "{}", stdout(&after));
}

#[test]
fn a_test_hung_far_past_its_history_runs_again_on_an_idle_slot_and_the_first_to_finish_wins() {
    let ws = Workspace::new();
    let cache = tempfile::tempdir().expect("tempdir");
    let root = ws.root();
    let hang = root.join("hang-next");
    let pids = root.join("pids");
    // Quick, unless asked to hang: then this run (only) hangs, and says which process it is.
    ws.test(
        "sometimes_hangs.sh",
        &format!(
            "if rm \"{hang}\" 2>/dev/null; then echo $$ >> \"{pids}\"; sleep 120; fi\nsleep 0.2",
            hang = hang.display(),
            pids = pids.display()
        ),
    );
    ws.test("quick.sh", "true");
    let two = |args: &[&str]| {
        testgrid(&root)
            .args(args)
            .args(["--local", "2", "--framework", "shell", "--json"])
            .env("XDG_CACHE_HOME", cache.path())
            .output()
            .expect("testgrid runs")
    };
    let first = two(&["run"]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));

    // The history now says it takes about 0.2 s; its next run hangs.
    std::fs::write(&hang, "").expect("write marker");
    let began = std::time::Instant::now();
    let second = two(&["run", "--speculate"]);
    let took = began.elapsed();
    assert_eq!(second.status.code(), Some(0), "{}\n{}", stdout(&second), stderr(&second));
    assert!(took < std::time::Duration::from_secs(60), "finished long before the hung run would: {took:?}");
    let lines = events(&second);
    let speculated: Vec<&Value> = lines.iter().filter(|e| e["event"] == "test_speculated").collect();
    assert_eq!(speculated.len(), 1, "{}", stdout(&second));
    assert_eq!(speculated[0]["test"], "sometimes_hangs.sh");
    assert_eq!((speculated[0]["running_attempt"].as_u64(), speculated[0]["attempt"].as_u64()), (Some(1), Some(2)));
    let finals: Vec<&Value> =
        lines.iter().filter(|e| e["event"] == "test_finished" && e["test"] == "sometimes_hangs.sh").collect();
    assert_eq!(finals.len(), 1, "one result, the winner's: {}", stdout(&second));
    assert_eq!((finals[0]["attempt"].as_u64(), finals[0]["outcome"].as_str()), (Some(2), Some("passed")));
    assert_eq!(final_outcomes(&lines).get("quick.sh").map(String::as_str), Some("passed"));
    // The hung attempt was stopped, not left behind.
    let pid = std::fs::read_to_string(&pids).expect("the hung run wrote its pid");
    assert!(!Path::new(&format!("/proc/{}", pid.trim())).exists(), "the loser {pid} still runs");
    assert_eq!(ws.runs().get("sometimes_hangs.sh"), Some(&3), "once in the first run, twice in the second");
}
