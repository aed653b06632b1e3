//! What a session produced, gathered from its events, and the reports made from it: the final
//! summary and the JUnit XML file.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use quick_junit::{NonSuccessKind, Property, TestCase, TestCaseStatus, TestRerun, TestSuite};
use testgrid_proto as pb;
use testgrid_proto::session_event::Kind;

use crate::error::Error;

/// One attempt of a test as the events told it.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub attempt: u32,
    pub worker: String,
    pub outcome: pb::Outcome,
    pub report: pb::TestReport,
    pub time_ms: u64,
}

/// Everything known about one test.
#[derive(Clone, Debug, Default)]
pub struct TestRecord {
    pub path: String,
    /// The test's outcome, once it has one.
    pub outcome: Option<pb::Outcome>,
    /// Every attempt that ended, the last one being the final one when `outcome` is set.
    pub attempts: Vec<Attempt>,
    /// An attempt of it is running now.
    pub running: bool,
}

/// A session as gathered from its events.
#[derive(Clone, Debug, Default)]
pub struct Tracker {
    pub session_id: String,
    pub name: String,
    pub tests: Vec<TestRecord>,
    pub created_ms: u64,
    pub finished_ms: Option<u64>,
    pub cancel_reason: Option<String>,
    pub totals: Option<pb::Totals>,
    pub running: usize,
}

impl Tracker {
    pub fn new(session_id: &str) -> Self {
        Tracker { session_id: session_id.to_string(), ..Tracker::default() }
    }

    /// The tests this client submitted, known before the session's first event arrives.
    pub fn expect(&mut self, paths: &[String]) {
        if self.tests.is_empty() && !paths.is_empty() {
            self.tests = paths.iter().map(|p| TestRecord { path: p.clone(), ..TestRecord::default() }).collect();
            self.created_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
        }
    }

    pub fn path(&self, index: u32) -> &str {
        self.tests.get(index as usize).map(|t| t.path.as_str()).unwrap_or("?")
    }

    pub fn apply(&mut self, event: &pb::SessionEvent) {
        let Some(kind) = &event.kind else { return };
        match kind {
            Kind::Created(c) => {
                self.name = c.name.clone();
                self.created_ms = event.time_ms;
                self.tests =
                    c.test_paths.iter().map(|p| TestRecord { path: p.clone(), ..TestRecord::default() }).collect();
            }
            Kind::TestStarted(s) => {
                if let Some(test) = self.tests.get_mut(s.test_index as usize)
                    && !test.running
                {
                    test.running = true;
                    self.running += 1;
                }
            }
            Kind::TestFinished(f) => {
                let Some(test) = self.tests.get_mut(f.test_index as usize) else { return };
                let outcome = pb::Outcome::try_from(f.outcome).unwrap_or(pb::Outcome::Unspecified);
                let report = f.report.clone().unwrap_or_default();
                // A cancelled test that never started has no attempt worth keeping, but it
                // still needs one to carry its message.
                if std::mem::take(&mut test.running) {
                    self.running = self.running.saturating_sub(1);
                }
                if !f.worker.is_empty() || test.attempts.is_empty() || f.r#final {
                    test.attempts.push(Attempt {
                        attempt: f.attempt,
                        worker: f.worker.clone(),
                        outcome: pb::Outcome::try_from(report.outcome).unwrap_or(outcome),
                        report,
                        time_ms: event.time_ms,
                    });
                }
                if f.r#final {
                    test.outcome = Some(outcome);
                }
            }
            Kind::TestRequeued(r) => {
                if let Some(test) = self.tests.get_mut(r.test_index as usize)
                    && std::mem::take(&mut test.running)
                {
                    self.running = self.running.saturating_sub(1);
                }
            }
            Kind::ResultDiscarded(_) => {}
            Kind::Cancelled(c) => self.cancel_reason = Some(c.reason.clone()),
            Kind::Finished(f) => {
                self.finished_ms = Some(event.time_ms);
                self.totals = f.totals;
                if !f.cancel_reason.is_empty() {
                    self.cancel_reason = Some(f.cancel_reason.clone());
                }
                self.running = 0;
            }
        }
    }

    pub fn finished(&self) -> usize {
        self.tests.iter().filter(|t| t.outcome.is_some()).count()
    }

    /// True when every test passed (flaky counts as passed).
    pub fn all_passed(&self) -> bool {
        !self.tests.is_empty() && self.tests.iter().all(|t| matches!(t.outcome, Some(o) if is_success(o)))
    }
}

pub fn is_success(outcome: pb::Outcome) -> bool {
    matches!(outcome, pb::Outcome::Passed | pb::Outcome::Flaky | pb::Outcome::Skipped)
}

/// The word a line or summary uses for an outcome.
pub fn outcome_word(outcome: pb::Outcome) -> &'static str {
    match outcome {
        pb::Outcome::Passed => "passed",
        pb::Outcome::Failed => "failed",
        pb::Outcome::Flaky => "flaky",
        pb::Outcome::TimedOut => "timed out",
        pb::Outcome::Lost => "lost",
        pb::Outcome::Cancelled => "cancelled",
        pb::Outcome::Error => "error",
        pb::Outcome::Skipped => "skipped",
        pb::Outcome::Unspecified => "unknown",
    }
}

/// A test path as a terminal or report shows it: control characters (a newline or an escape
/// sequence in a file name) are written out as escapes, never sent raw.
pub fn display_path(path: &str) -> String {
    if !path.chars().any(char::is_control) {
        return path.to_string();
    }
    path.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// Seconds with two decimals under a minute, humantime-like above.
pub fn format_duration(ms: u64) -> String {
    if ms < 60_000 {
        format!("{:.2}s", ms as f64 / 1000.0)
    } else {
        humantime::format_duration(Duration::from_secs(ms / 1000)).to_string()
    }
}

fn format_time(ms: u64) -> String {
    use chrono::{Local, TimeZone};
    match Local.timestamp_millis_opt(ms as i64).single() {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S %Z").to_string(),
        None => ms.to_string(),
    }
}

/// The last `lines` lines of a test's output, lossily decoded, each cut to a readable width.
pub fn output_tail(output: &[u8], lines: usize) -> Vec<String> {
    let text = String::from_utf8_lossy(output);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|l| {
            let clean: String = l.chars().map(|c| if c.is_control() && c != '\t' { '\u{fffd}' } else { c }).collect();
            if clean.chars().count() > 240 { clean.chars().take(240).collect::<String>() + "…" } else { clean }
        })
        .collect()
}

/// What the last attempt says about why a test did not pass.
pub fn why(test: &TestRecord, with_duration: bool) -> String {
    let Some(last) = test.attempts.last() else { return String::new() };
    let mut parts = Vec::new();
    if !last.report.message.is_empty() {
        parts.push(last.report.message.clone());
    }
    if with_duration && (last.report.duration_ms > 0 || !last.worker.is_empty()) {
        parts.push(format_duration(last.report.duration_ms));
    }
    if !last.worker.is_empty() {
        parts.push(format!("on {}", last.worker));
    }
    if test.attempts.len() > 1 {
        parts.push(format!("{} attempts", test.attempts.len()));
    }
    parts.join(", ")
}

/// The final summary: totals, success rate, times, and every test that did not pass with the
/// tail of its output.
pub fn summary(tracker: &Tracker, tail_lines: usize) -> String {
    let mut out = String::new();
    let total = tracker.tests.len();
    let mut counts: Vec<(pb::Outcome, usize)> = Vec::new();
    for outcome in [
        pb::Outcome::Passed,
        pb::Outcome::Skipped,
        pb::Outcome::Flaky,
        pb::Outcome::Failed,
        pb::Outcome::TimedOut,
        pb::Outcome::Error,
        pb::Outcome::Lost,
        pb::Outcome::Cancelled,
    ] {
        let n = tracker.tests.iter().filter(|t| t.outcome == Some(outcome)).count();
        if n > 0 {
            counts.push((outcome, n));
        }
    }
    let passed = tracker.tests.iter().filter(|t| t.outcome.is_some_and(is_success)).count();
    let wall = tracker.finished_ms.unwrap_or(tracker.created_ms).saturating_sub(tracker.created_ms);

    let failures: Vec<&TestRecord> = tracker.tests.iter().filter(|t| !t.outcome.is_some_and(is_success)).collect();
    let flaky: Vec<&TestRecord> = tracker.tests.iter().filter(|t| t.outcome == Some(pb::Outcome::Flaky)).collect();
    if !flaky.is_empty() {
        let _ = writeln!(out, "\nFlaky (failed, then passed on a retry):");
        for t in &flaky {
            let _ = writeln!(out, "  FLAKY {} ({} attempts)", display_path(&t.path), t.attempts.len());
        }
    }
    if !failures.is_empty() {
        let _ = writeln!(out, "\nNot passed:");
        for t in &failures {
            let word = t.outcome.map(outcome_word).unwrap_or("unfinished").to_uppercase();
            let _ = writeln!(out, "\n  {word} {} ({})", display_path(&t.path), why(t, true));
            if let Some(last) = t.attempts.last() {
                for line in output_tail(&last.report.output, tail_lines) {
                    let _ = writeln!(out, "    │ {line}");
                }
            }
        }
    }
    let _ = writeln!(out);
    let breakdown: Vec<String> = counts.iter().map(|(o, n)| format!("{n} {}", outcome_word(*o))).collect();
    let _ = writeln!(
        out,
        "Summary: {total} test{} in {}: {}",
        if total == 1 { "" } else { "s" },
        format_duration(wall),
        if breakdown.is_empty() { "nothing ran".to_string() } else { breakdown.join(", ") }
    );
    let rate = if total == 0 { 0.0 } else { passed as f64 * 100.0 / total as f64 };
    let _ = writeln!(out, "  success rate {rate:.1}% ({passed} of {total})");
    if let Some(cases) = case_counts(tracker) {
        let words: Vec<String> = cases.by_outcome.iter().map(|(o, n)| format!("{n} {}", outcome_word(*o))).collect();
        let xfail = match cases.xfail {
            0 => String::new(),
            n => format!(" ({n} expected failures among the passed)"),
        };
        let _ = writeln!(out, "  {} test cases: {}{xfail}", cases.total, words.join(", "));
    }
    let _ = writeln!(
        out,
        "  started {}, ended {}, wall time {}",
        format_time(tracker.created_ms),
        format_time(tracker.finished_ms.unwrap_or(tracker.created_ms)),
        format_duration(wall)
    );
    if let Some(reason) = &tracker.cancel_reason {
        let _ = writeln!(out, "  cancelled: {reason}");
    }
    let _ = writeln!(out, "  session {}", tracker.session_id);
    out
}

/// Fail early, before any test runs, when the JUnit report could not be written later.
pub fn check_writable(path: &Path) -> Result<(), Error> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::Usage(format!("--junit {}: cannot create {}: {e}", path.display(), dir.display())))?;
    // Try a scratch file beside it, so that an old report is neither truncated nor left
    // looking current before this run has results.
    tempfile::NamedTempFile::new_in(dir)
        .map(drop)
        .map_err(|e| Error::Usage(format!("--junit {}: cannot write in {}: {e}", path.display(), dir.display())))?;
    if path.exists() {
        std::fs::remove_file(path)
            .map_err(|e| Error::Usage(format!("--junit {}: cannot replace the old report: {e}", path.display())))?;
    }
    Ok(())
}

/// Write the JUnit XML report: one testsuite for the session, one testcase per test.
pub fn write_junit(tracker: &Tracker, path: &Path) -> Result<(), Error> {
    let mut report = quick_junit::Report::new("testgrid");
    let mut suite = TestSuite::new(if tracker.name.is_empty() { "testgrid" } else { tracker.name.as_str() });
    suite.add_property(Property::new("session_id", tracker.session_id.as_str()));
    if let Some(reason) = &tracker.cancel_reason {
        suite.add_property(Property::new("cancelled", reason.as_str()));
    }
    let wall = tracker.finished_ms.unwrap_or(tracker.created_ms).saturating_sub(tracker.created_ms);
    suite.set_time(Duration::from_millis(wall));
    report.set_time(Duration::from_millis(wall));
    if let Some(t) = chrono::DateTime::from_timestamp_millis(tracker.created_ms as i64) {
        suite.set_timestamp(t.fixed_offset());
        report.set_timestamp(t.fixed_offset());
    }
    for test in &tracker.tests {
        // A test unit that reported its cases (a warm runner) becomes one testcase per case.
        match test.attempts.last().filter(|a| !a.report.cases.is_empty()) {
            Some(last) => {
                for c in &last.report.cases {
                    // The same case in earlier attempts (a retried file) that did not pass.
                    let earlier: Vec<TestRerun> = test.attempts[..test.attempts.len() - 1]
                        .iter()
                        .flat_map(|a| a.report.cases.iter())
                        .filter(|e| e.name == c.name && !is_success(outcome_of(e.outcome)))
                        .map(case_rerun)
                        .collect();
                    suite.add_test_case(case_test_case(c, &last.worker, earlier));
                }
            }
            None => {
                suite.add_test_case(test_case(test));
            }
        }
    }
    report.add_test_suite(suite);
    let xml = report.to_string().map_err(|e| Error::Infra(format!("cannot build the JUnit report: {e}")))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Usage(format!("cannot create {} for the JUnit report: {e}", dir.display())))?;
    }
    std::fs::write(path, xml)
        .map_err(|e| Error::Usage(format!("cannot write the JUnit report {}: {e}", path.display())))
}

fn rerun(attempt: &Attempt) -> TestRerun {
    let kind = if attempt.outcome == pb::Outcome::Error { NonSuccessKind::Error } else { NonSuccessKind::Failure };
    let mut rerun = TestRerun::new(kind);
    rerun
        .set_type(outcome_word(attempt.outcome))
        .set_message(attempt.report.message.as_str())
        .set_time(Duration::from_millis(attempt.report.duration_ms))
        .set_system_out_lossy(&attempt.report.output);
    rerun
}

fn outcome_of(value: i32) -> pb::Outcome {
    pb::Outcome::try_from(value).unwrap_or(pb::Outcome::Error)
}

fn case_rerun(c: &pb::CaseResult) -> TestRerun {
    let outcome = outcome_of(c.outcome);
    let kind = if outcome == pb::Outcome::Error { NonSuccessKind::Error } else { NonSuccessKind::Failure };
    let mut rerun = TestRerun::new(kind);
    rerun
        .set_type(outcome_word(outcome))
        .set_message(c.message.as_str())
        .set_time(Duration::from_millis(c.duration_ms))
        .set_system_out_lossy(&c.output);
    rerun
}

fn case_test_case(c: &pb::CaseResult, worker: &str, earlier: Vec<TestRerun>) -> TestCase {
    let outcome = outcome_of(c.outcome);
    let attempts = earlier.len() + 1;
    let status = match outcome {
        // Failed before, passed now: flaky, with its failed runs as `flakyFailure`s.
        pb::Outcome::Passed => TestCaseStatus::Success { flaky_runs: earlier },
        pb::Outcome::Skipped => {
            let mut status = TestCaseStatus::skipped();
            status.set_message(c.message.as_str());
            status
        }
        other => {
            let kind = if other == pb::Outcome::Error { NonSuccessKind::Error } else { NonSuccessKind::Failure };
            let mut status = TestCaseStatus::non_success(kind);
            status.set_type(outcome_word(other));
            status.set_message(if c.message.is_empty() { outcome_word(other) } else { c.message.as_str() });
            status.set_description(String::from_utf8_lossy(&c.output).into_owned());
            status.add_reruns(earlier);
            status
        }
    };
    let name = display_path(&c.name);
    let mut case = TestCase::new(name.as_str(), status);
    case.set_classname(display_path(&c.classname));
    case.set_time(Duration::from_millis(c.duration_ms));
    if !c.output.is_empty() && outcome == pb::Outcome::Passed {
        case.set_system_out_lossy(&c.output);
    }
    if c.message.starts_with("xfail") {
        // Kept visible: an expected failure that passes as "success" would hide it.
        case.add_property(Property::new("xfail", c.message.as_str()));
    }
    if !worker.is_empty() {
        case.add_property(Property::new("worker", worker));
    }
    if attempts > 1 {
        case.add_property(Property::new("attempts", attempts.to_string()));
    }
    case
}

/// How the cases reported by the tests' final attempts ended.
pub struct CaseCounts {
    pub total: usize,
    pub by_outcome: Vec<(pb::Outcome, usize)>,
    pub xfail: usize,
}

/// Per-outcome counts of the cases reported by the tests' final attempts.
pub fn case_counts(tracker: &Tracker) -> Option<CaseCounts> {
    let cases: Vec<&pb::CaseResult> =
        tracker.tests.iter().filter_map(|t| t.attempts.last()).flat_map(|a| a.report.cases.iter()).collect();
    if cases.is_empty() {
        return None;
    }
    let mut counts = Vec::new();
    for outcome in
        [pb::Outcome::Passed, pb::Outcome::Failed, pb::Outcome::Error, pb::Outcome::TimedOut, pb::Outcome::Skipped]
    {
        let n = cases.iter().filter(|c| c.outcome == outcome as i32).count();
        if n > 0 {
            counts.push((outcome, n));
        }
    }
    let xfail = cases.iter().filter(|c| c.message.starts_with("xfail")).count();
    Some(CaseCounts { total: cases.len(), by_outcome: counts, xfail })
}

/// A test file's JUnit classname: its folder, dotted (`tests` at the root).
fn classname_of(path: &str) -> String {
    match path.rsplit_once('/') {
        Some((dir, _)) => dir.replace('/', "."),
        None => "tests".to_string(),
    }
}

fn test_case(test: &TestRecord) -> TestCase {
    let last = test.attempts.last();
    let earlier: Vec<TestRerun> = test
        .attempts
        .iter()
        .take(test.attempts.len().saturating_sub(1))
        .filter(|a| !is_success(a.outcome))
        .map(rerun)
        .collect();
    let Some(outcome) = test.outcome else {
        // The session was lost before this test ended.
        let mut status = TestCaseStatus::non_success(NonSuccessKind::Error);
        status.set_type("unfinished").set_message("no outcome: the session was lost before this test ended");
        let mut case = TestCase::new(display_path(&test.path).as_str(), status);
        case.set_classname(classname_of(&display_path(&test.path)));
        return case;
    };
    let status = match outcome {
        pb::Outcome::Passed | pb::Outcome::Skipped => TestCaseStatus::success(),
        pb::Outcome::Flaky => TestCaseStatus::Success { flaky_runs: earlier },
        other => {
            let kind = match other {
                pb::Outcome::Failed | pb::Outcome::TimedOut => NonSuccessKind::Failure,
                _ => NonSuccessKind::Error,
            };
            let mut status = TestCaseStatus::non_success(kind);
            let message = last.map(|a| a.report.message.clone()).filter(|m| !m.is_empty());
            status.set_type(outcome_word(other));
            status.set_message(message.unwrap_or_else(|| outcome_word(other).to_string()));
            if let Some(a) = last {
                status.set_description(output_tail(&a.report.output, 50).join("\n"));
            }
            status.add_reruns(earlier);
            status
        }
    };
    let path = display_path(&test.path);
    let mut case = TestCase::new(path.as_str(), status);
    case.set_classname(classname_of(&path));
    if let Some(a) = last {
        case.set_time(Duration::from_millis(a.report.duration_ms));
        case.set_system_out_lossy(&a.report.output);
        if !a.worker.is_empty() {
            case.add_property(Property::new("worker", a.worker.as_str()));
        }
        case.add_property(Property::new("attempts", test.attempts.len().to_string()));
    }
    case
}

#[cfg(test)]
mod tests {
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
        write_junit(&t, &path).expect("written");
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
        write_junit(&t, &path).expect("written");
        let xml = std::fs::read_to_string(path).expect("read");
        assert!(xml.contains(r#"name="t/test_x.py::test_once""#), "{xml}");
        assert!(xml.contains("<flakyFailure"), "{xml}");
        assert!(xml.contains(r#"name="attempts" value="2""#), "{xml}");
    }

    #[test]
    fn junit_has_failure_and_flaky_elements() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out/report.xml");
        write_junit(&tracker(), &path).expect("written");
        let xml = std::fs::read_to_string(path).expect("read");
        assert!(xml.contains(r#"tests="3""#), "{xml}");
        assert!(xml.contains(r#"failures="1""#), "{xml}");
        assert!(xml.contains("<flakyFailure"), "{xml}");
        assert!(xml.contains(r#"classname="a""#), "{xml}");
        assert!(xml.contains(r#"name="worker" value="w1""#), "{xml}");
        assert!(!xml.contains('\u{0}'));
    }
}
