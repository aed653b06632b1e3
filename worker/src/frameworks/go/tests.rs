//! The Go executor end to end on this machine's Go (skipped without one), and its binaries cache.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use testgrid_proto as pb;
use tokio_util::sync::CancellationToken;

use super::*;

fn case<'a>(report: &'a pb::TestReport, name: &str) -> &'a pb::CaseResult {
    report.cases.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no case {name}: {report:?}"))
}

fn executor(_root: &Path) -> GoExecutor {
    GoExecutor::new(Settings { output_limit: 1024 * 1024, kill_grace: Duration::from_secs(1), die_with_worker: false })
}

#[test]
fn the_least_recently_used_sessions_binaries_go_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let go = executor(dir.path());
    let mut held = None;
    let dirs: Vec<PathBuf> = (0..KEEP_SESSIONS)
        .map(|i| {
            let builds = go.session_builds(&format!("s{i}")).expect("builds");
            if i == 2 {
                held = Some(Arc::clone(&builds));
            }
            builds.dir.path().to_path_buf()
        })
        .collect();
    assert!(dirs.iter().all(|d| d.is_dir()));
    // s0 is used again, so s1 is now the least recently used.
    go.session_builds("s0").expect("builds");
    go.session_builds("new-1").expect("builds");
    assert!(!dirs[1].exists(), "s1's binaries are gone");
    assert!(dirs[0].is_dir());
    go.session_builds("new-2").expect("builds");
    go.session_builds("new-3").expect("builds");
    let kept: Vec<String> = go.sessions.keys();
    assert_eq!(kept.len(), KEEP_SESSIONS);
    assert!(!kept.contains(&"s2".to_string()), "{kept:?}");
    assert!(dirs[2].is_dir(), "a job still using s2's binaries keeps them");
    drop(held);
    assert!(!dirs[2].exists());
}

/// `go` on PATH, or a message saying why a test is skipped.
fn have_go() -> bool {
    let ok = std::process::Command::new("go").arg("version").output().is_ok_and(|o| o.status.success());
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "CI is set but `go` is not on PATH: .ci/run installs golang-go");
        eprintln!("skipping: `go` is not on PATH (install golang-go to run the Go executor's tests)");
    }
    ok
}

fn job(root: &Path, session: &str, path: &str, timeout: Option<Duration>) -> Job {
    let mut job = crate::job::testing::job(
        testgrid_proto::frameworks::Framework::Go,
        testgrid_proto::frameworks::Options::Go,
        session,
        path,
        root,
    );
    job.timeout = timeout;
    job
}

fn write_module(root: &Path, marker: &Path) {
    std::fs::write(root.join("go.mod"), "module example.com/m\n\ngo 1.18\n").expect("write go.mod");
    std::fs::create_dir_all(root.join("p")).expect("mkdir");
    let test = format!(
        r#"package p

import (
	"os"
	"testing"
	"time"
)

func TestA(t *testing.T) {{}}

func TestSub(t *testing.T) {{
	t.Run("one", func(t *testing.T) {{}})
	t.Run("two", func(t *testing.T) {{ t.Error("two is wrong") }})
}}

func TestWait(t *testing.T) {{
	if os.Getenv("WAIT") == "" {{
		t.Skip("only when asked")
	}}
	os.WriteFile({marker:?}, []byte("started"), 0o644)
	time.Sleep(10 * time.Minute)
}}
"#
    );
    std::fs::write(root.join("p/p_test.go"), test).expect("write test");
}

#[tokio::test]
async fn slots_share_one_compile_and_cases_can_be_picked() {
    if !have_go() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().canonicalize().expect("root");
    write_module(&root, &root.join("unused"));
    let go = executor(&root);
    let jobs = [job(&root, "s", "p", None), job(&root, "s", "p::TestA", None), job(&root, "s", "p::TestSub/two", None)];
    let (whole, one, sub) = tokio::join!(
        go.run(0, &jobs[0], CancellationToken::new()),
        go.run(1, &jobs[1], CancellationToken::new()),
        go.run(2, &jobs[2], CancellationToken::new()),
    );
    assert_eq!(go.compiles.load(Ordering::Relaxed), 1, "one compile for the three slots");
    assert_eq!(whole.outcome, pb::Outcome::Failed as i32, "{whole:?}");
    assert_eq!(whole.cases.len(), 5, "{whole:?}");
    let names = |r: &pb::TestReport| r.cases.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&one), vec!["p::TestA"]);
    assert_eq!(one.outcome, pb::Outcome::Passed as i32);
    assert_eq!(names(&sub), vec!["p::TestSub/two", "p::TestSub"]);
    assert_eq!(sub.outcome, pb::Outcome::Failed as i32);
    let nope = go.run(0, &job(&root, "s", "p::TestNope", None), CancellationToken::new()).await;
    assert_eq!(nope.outcome, pb::Outcome::Error as i32, "{nope:?}");
    assert_eq!(go.compiles.load(Ordering::Relaxed), 1, "the session's binary is reused");
}

#[tokio::test]
async fn a_timeout_and_a_cancel_stop_the_binary() {
    if !have_go() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().canonicalize().expect("root");
    let marker = root.join("started");
    write_module(&root, &marker);
    let go = executor(&root);
    let mut waiting = job(&root, "s", "p", Some(Duration::from_secs(3)));
    waiting.env.insert("WAIT".into(), "1".into());
    let report = go.run(0, &waiting, CancellationToken::new()).await;
    assert_eq!(report.outcome, pb::Outcome::TimedOut as i32, "{report:?}");
    let outcome = |name: &str| case(&report, name).outcome;
    assert_eq!(outcome("p::TestWait"), pb::Outcome::TimedOut as i32);
    assert_eq!(outcome("p::TestA"), pb::Outcome::Passed as i32);

    std::fs::remove_file(&marker).expect("remove marker");
    let cancel = CancellationToken::new();
    let canceller = {
        let cancel = cancel.clone();
        let marker = marker.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !marker.exists() {
                assert!(Instant::now() < deadline, "TestWait never started");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            cancel.cancel();
        })
    };
    waiting.path = "p::TestWait".into();
    waiting.timeout = None;
    let report = go.run(0, &waiting, cancel).await;
    canceller.await.expect("canceller");
    assert_eq!(report.outcome, pb::Outcome::Cancelled as i32, "{report:?}");
    assert_eq!(case(&report, "p::TestWait").message, "cancelled");
}
