//! The tracker, summary and JUnit report on made-up sessions.

use std::path::Path;

use testgrid_proto as pb;
use testgrid_proto::session_event::Kind;

use super::*;

fn finished(index: u32, attempt: u32, outcome: pb::Outcome, is_final: bool, output: &[u8]) -> pb::SessionEvent {
    pb::SessionEvent {
        seq: 0,
        time_ms: 1_000,
        kind: Some(Kind::TestFinished(pb::TestFinishedEvent {
            test_index: index,
            attempt,
            worker: "w1".into(),
            r#final: is_final,
            outcome: outcome as i32,
            report: Some(pb::TestReport {
                outcome: if outcome == pb::Outcome::Flaky { pb::Outcome::Passed } else { outcome } as i32,
                output: output.to_vec(),
                message: format!("{outcome:?}"),
                duration_ms: 10,
                ..Default::default()
            }),
        })),
    }
}

/// A session's first event, naming its tests.
fn created(name: &str, paths: &[&str]) -> pb::SessionEvent {
    pb::SessionEvent {
        seq: 1,
        time_ms: 0,
        kind: Some(Kind::Created(pb::SessionCreated {
            name: name.into(),
            total: paths.len() as u32,
            test_paths: paths.iter().map(|p| p.to_string()).collect(),
        })),
    }
}

fn tracker() -> Tracker {
    let mut t = Tracker::new("s-1");
    t.apply(&created("demo", &["a/pass.sh", "a/fail.sh", "flaky.sh"]));
    t.apply(&finished(0, 1, pb::Outcome::Passed, true, b"ok\n"));
    t.apply(&finished(1, 1, pb::Outcome::Failed, true, b"line1\nboom \xff\x00\n"));
    t.apply(&finished(2, 1, pb::Outcome::Failed, false, b"first try\n"));
    t.apply(&finished(2, 2, pb::Outcome::Flaky, true, b"second try\n"));
    t
}

#[test]
fn summary_names_failures_with_output_tail() {
    let t = tracker();
    assert!(!t.all_passed());
    let text = summary(&t, 10);
    assert!(text.contains("FAILED a/fail.sh"), "{text}");
    assert!(text.contains("│ boom \u{fffd}\u{fffd}"), "{text}");
    assert!(text.contains("FLAKY flaky.sh (2 attempts)"), "{text}");
    assert!(text.contains("1 passed, 1 flaky, 1 failed"), "{text}");
    assert!(text.contains("success rate 66.7% (2 of 3)"), "{text}");
}

#[test]
fn a_session_lost_before_its_first_event_still_names_its_tests() {
    let mut t = Tracker::new("s-3");
    t.expect(&["a.sh".to_string(), "b.sh".to_string()]);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("r.xml");
    write_junit(&t, &path, Path::new("artifacts")).expect("written");
    let xml = std::fs::read_to_string(path).expect("read");
    assert!(xml.contains(r#"name="a.sh""#) && xml.contains(r#"name="b.sh""#), "{xml}");
    assert!(xml.contains("the session was lost"), "{xml}");
    assert!(!t.all_passed());
}

#[test]
fn junit_keeps_a_retried_case_flaky() {
    let case = |outcome: pb::Outcome| pb::CaseResult {
        name: "t/test_x.py::test_once".into(),
        classname: "t.test_x".into(),
        outcome: outcome as i32,
        message: format!("{outcome:?}"),
        ..Default::default()
    };
    let mut t = Tracker::new("s-2");
    t.apply(&created("warm", &["t/test_x.py"]));
    for (attempt, outcome, is_final) in [(1, pb::Outcome::Failed, false), (2, pb::Outcome::Flaky, true)] {
        let mut event = finished(0, attempt, outcome, is_final, b"");
        if let Some(Kind::TestFinished(f)) = &mut event.kind {
            let report = f.report.as_mut().expect("report");
            report.cases = vec![case(if attempt == 1 { pb::Outcome::Failed } else { pb::Outcome::Passed })];
        }
        t.apply(&event);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("r.xml");
    write_junit(&t, &path, Path::new("artifacts")).expect("written");
    let xml = std::fs::read_to_string(path).expect("read");
    assert!(xml.contains(r#"name="t/test_x.py::test_once""#), "{xml}");
    assert!(xml.contains("<flakyFailure"), "{xml}");
    assert!(xml.contains(r#"name="attempts" value="2""#), "{xml}");
}

#[test]
fn junit_has_failure_and_flaky_elements() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("out/report.xml");
    write_junit(&tracker(), &path, Path::new("artifacts")).expect("written");
    let xml = std::fs::read_to_string(path).expect("read");
    assert!(xml.contains(r#"tests="3""#), "{xml}");
    assert!(xml.contains(r#"failures="1""#), "{xml}");
    assert!(xml.contains("<flakyFailure"), "{xml}");
    assert!(xml.contains(r#"classname="a""#), "{xml}");
    assert!(xml.contains(r#"name="worker" value="w1""#), "{xml}");
    assert!(!xml.contains('\u{0}'));
}

#[test]
fn junit_files_a_case_as_an_error_only_when_its_framework_said_error() {
    let case = |name: &str, outcome: pb::Outcome| pb::CaseResult {
        name: name.into(),
        classname: "mini".into(),
        outcome: outcome as i32,
        message: format!("{outcome:?}"),
        ..Default::default()
    };
    let mut t = Tracker::new("s-4");
    t.apply(&created("rust", &["src/lib.rs::a", "src/lib.rs::b", "t/test_y.py"]));
    let cases = [
        vec![case("a", pb::Outcome::Cancelled)],
        vec![case("b", pb::Outcome::Failed)],
        vec![case("t/test_y.py::boom", pb::Outcome::Error)],
    ];
    for (index, cases) in cases.into_iter().enumerate() {
        let outcome = if index == 0 { pb::Outcome::Cancelled } else { pb::Outcome::Failed };
        let mut event = finished(index as u32, 1, outcome, true, b"");
        if let Some(Kind::TestFinished(f)) = &mut event.kind {
            f.report.as_mut().expect("report").cases = cases;
        }
        t.apply(&event);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("r.xml");
    write_junit(&t, &path, Path::new("artifacts")).expect("written");
    let xml = std::fs::read_to_string(path).expect("read");
    assert!(xml.contains(r#"<failure message="Cancelled" type="cancelled">"#), "a cancelled case is a failure: {xml}");
    assert!(xml.contains(r#"<failure message="Failed" type="failed">"#), "{xml}");
    assert!(xml.contains(r#"<error message="Error" type="error">"#), "an erroring case is an error: {xml}");
}

#[test]
fn junit_names_a_file_that_failed_outside_its_cases() {
    let case = |name: &str, outcome: pb::Outcome| pb::CaseResult {
        name: name.into(),
        classname: "src/hooks.test.js".into(),
        outcome: outcome as i32,
        ..Default::default()
    };
    let mut t = Tracker::new("s-5");
    t.apply(&created("js", &["src/hooks.test.js", "src/ok.test.js", "src/bad.test.js"]));
    let units = [
        (pb::Outcome::Error, vec![case("src/hooks.test.js::b", pb::Outcome::Passed)]),
        (pb::Outcome::Passed, vec![case("src/ok.test.js::c", pb::Outcome::Passed)]),
        (pb::Outcome::Failed, vec![case("src/bad.test.js::d", pb::Outcome::Failed)]),
    ];
    for (index, (outcome, cases)) in units.into_iter().enumerate() {
        let mut event = finished(index as u32, 1, outcome, true, b"Error: afterAll broke\n");
        if let Some(Kind::TestFinished(f)) = &mut event.kind {
            let report = f.report.as_mut().expect("report");
            report.cases = cases;
            report.message = "error outside its tests (a hook, or an unhandled error)".into();
        }
        t.apply(&event);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("r.xml");
    write_junit(&t, &path, Path::new("artifacts")).expect("written");
    let xml = std::fs::read_to_string(path).expect("read");
    assert!(xml.contains(r#"<testcase name="src/hooks.test.js" classname="src/hooks.test.js""#), "{xml}");
    assert!(xml.contains("afterAll broke"), "the error's text is in the file's entry: {xml}");
    assert!(xml.contains(r#"message="error outside its tests"#), "{xml}");
    assert!(!xml.contains(r#"<testcase name="src/ok.test.js""#), "a file that passed adds no entry: {xml}");
    assert!(!xml.contains(r#"<testcase name="src/bad.test.js""#), "a failing case already explains its file: {xml}");
    assert!(xml.contains(r#"tests="4""#), "three cases and one file: {xml}");
}
