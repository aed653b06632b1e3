//! The JUnit XML report: one testsuite for the session, one testcase per test unit, or per case
//! where a warm runner reported cases (plus one for the unit when it failed outside its cases).
//! Every testcase comes from one builder, [`testcase`], fed by an [`Entry`] that a unit and a
//! case fill alike.

use std::path::Path;
use std::time::Duration;

use quick_junit::{NonSuccessKind, Property, TestCase, TestCaseStatus, TestRerun, TestSuite};
use testgrid_proto as pb;

use super::text::{case_outcome, display_path, output_tail};
use super::tracker::{TestRecord, Tracker};
use crate::error::Error;

/// Fail early, before any test runs, when the JUnit report could not be written later.
pub fn check_writable(path: &Path) -> Result<(), Error> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|source| Error::JunitDir {
        path: path.to_path_buf(),
        dir: dir.to_path_buf(),
        source,
    })?;
    // Try a scratch file beside it, so that an old report is neither truncated nor left
    // looking current before this run has results.
    tempfile::NamedTempFile::new_in(dir).map(drop).map_err(|source| Error::JunitDirNotWritable {
        path: path.to_path_buf(),
        dir: dir.to_path_buf(),
        source,
    })?;
    if path.exists() {
        std::fs::remove_file(path).map_err(|source| Error::JunitOld { path: path.to_path_buf(), source })?;
    }
    Ok(())
}

/// Write the JUnit XML report: one testsuite for the session, one testcase per test. The files
/// tests sent back (under `artifacts`) are attached as Jenkins reads them (`[[ATTACHMENT|path]]`
/// in the testcase's output).
pub fn write_junit(tracker: &Tracker, path: &Path, artifacts: &Path) -> Result<(), Error> {
    let artifacts = std::path::absolute(artifacts).unwrap_or_else(|_| artifacts.to_path_buf());
    let mut report = quick_junit::Report::new("testgrid");
    let mut suite = TestSuite::new(if tracker.name.is_empty() { "testgrid" } else { tracker.name.as_str() });
    suite.add_property(Property::new("session_id", tracker.session_id.as_str()));
    if let Some(reason) = &tracker.cancel_reason {
        suite.add_property(Property::new("cancelled", reason.as_str()));
    }
    let wall = Duration::from_millis(tracker.wall_ms());
    suite.set_time(wall);
    report.set_time(wall);
    if let Some(t) = chrono::DateTime::from_timestamp_millis(tracker.created_ms as i64) {
        suite.set_timestamp(t.fixed_offset());
        report.set_timestamp(t.fixed_offset());
    }
    for test in &tracker.tests {
        match test.attempts.last().filter(|a| !a.report.cases.is_empty()) {
            // A test unit that reported its cases (a warm runner) becomes one testcase per case.
            Some(last) => {
                let mut attachments = attachments_of(test, &artifacts);
                for case in &last.report.cases {
                    let mut entry = case_entry(test, &last.worker, case);
                    // The unit's files go with its first case.
                    entry.attachments = std::mem::take(&mut attachments);
                    suite.add_test_case(testcase(entry));
                }
                // A file that failed outside its cases (a hook, an import error after
                // collection, an unhandled rejection: its outcome is `error`), or failed while
                // every case passed (a Go `TestMain`), gets an entry of its own next to its
                // cases, with the error's text: otherwise the cases would not tell.
                let explained = last.report.cases.iter().any(|c| !case_outcome(c).is_success());
                let outside = test.outcome == Some(pb::Outcome::Error);
                if outside || (test.outcome.is_some_and(|o| !o.is_success()) && !explained) {
                    let mut entry = unit_entry(test);
                    if let Some(first) = last.report.cases.first() {
                        entry.classname = display_path(&first.classname);
                    }
                    suite.add_test_case(testcase(entry));
                }
            }
            None => {
                let mut entry = unit_entry(test);
                entry.attachments = attachments_of(test, &artifacts);
                suite.add_test_case(testcase(entry));
            }
        }
    }
    report.add_test_suite(suite);
    let xml = report.to_string().map_err(Error::JunitBuild)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| Error::JunitCreateDir { dir: dir.to_path_buf(), source })?;
    }
    std::fs::write(path, xml).map_err(|source| Error::JunitWrite { path: path.to_path_buf(), source })
}

/// What one `<testcase>` says.
struct Entry<'a> {
    name: String,
    classname: String,
    /// `None`: the session was lost before the test ended.
    outcome: Option<pb::Outcome>,
    of: Of,
    message: &'a str,
    output: &'a [u8],
    duration_ms: u64,
    /// The worker of the last run (empty: none).
    worker: &'a str,
    /// How many times it ran.
    attempts: usize,
    /// The earlier runs that did not pass, oldest first.
    reruns: Vec<Run<'a>>,
    /// Files the test sent back, where they are on this machine.
    attachments: Vec<std::path::PathBuf>,
}

/// Where the files of `test`'s last attempt are on this machine.
fn attachments_of(test: &TestRecord, dir: &Path) -> Vec<std::path::PathBuf> {
    let Some(last) = test.attempts.last() else { return Vec::new() };
    last.report
        .artifacts
        .iter()
        .filter(|a| a.digest.is_some())
        .filter_map(|a| crate::artifacts::local_path(dir, &test.path, last.attempt, &a.path))
        .collect()
}

/// What a testcase stands for. Their reports differ where a unit's output can be long (a whole
/// file's) and a case's is its own.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Of {
    /// A test unit: `<system-out>` holds its whole output and a failure its tail; `attempts`
    /// is always said.
    Unit,
    /// A case a warm runner reported: a failure holds its whole output, `<system-out>` only a
    /// pass's; `attempts` is said when the case ran more than once.
    Case,
}

/// One earlier run that did not pass (`<flakyFailure>`, `<rerunFailure>`, `<rerunError>`).
struct Run<'a> {
    outcome: pb::Outcome,
    message: &'a str,
    output: &'a [u8],
    duration_ms: u64,
}

/// A test unit that reported no cases: its attempts.
fn unit_entry(test: &TestRecord) -> Entry<'_> {
    let path = display_path(&test.path);
    let classname = classname_of(&path);
    let (outcome, last) = match (test.outcome, test.attempts.split_last()) {
        (Some(outcome), Some((last, _))) => (Some(outcome), Some(last)),
        _ => (None, None),
    };
    let earlier = test.attempts.split_last().map_or(&[][..], |(_, earlier)| earlier);
    Entry {
        name: path,
        classname,
        outcome,
        of: Of::Unit,
        message: last.map_or("", |a| a.report.message.as_str()),
        output: last.map_or(&[][..], |a| a.report.output.as_slice()),
        duration_ms: last.map_or(0, |a| a.report.duration_ms),
        worker: last.map_or("", |a| a.worker.as_str()),
        attempts: test.attempts.len(),
        attachments: Vec::new(),
        reruns: earlier
            .iter()
            .filter(|a| !a.outcome.is_success())
            .map(|a| Run {
                outcome: a.outcome,
                message: &a.report.message,
                output: &a.report.output,
                duration_ms: a.report.duration_ms,
            })
            .collect(),
    }
}

/// A case of a unit's last attempt, with the same case's runs in earlier attempts (a retried
/// file) that did not pass.
fn case_entry<'a>(test: &'a TestRecord, worker: &'a str, case: &'a pb::CaseResult) -> Entry<'a> {
    let earlier = test.attempts.split_last().map_or(&[][..], |(_, earlier)| earlier);
    let reruns: Vec<Run> = earlier
        .iter()
        .flat_map(|a| a.report.cases.iter())
        .filter(|e| e.name == case.name && !case_outcome(e).is_success())
        .map(|e| Run { outcome: case_outcome(e), message: &e.message, output: &e.output, duration_ms: e.duration_ms })
        .collect();
    Entry {
        name: display_path(&case.name),
        classname: display_path(&case.classname),
        outcome: Some(case_outcome(case)),
        of: Of::Case,
        message: &case.message,
        output: &case.output,
        duration_ms: case.duration_ms,
        worker,
        attempts: reruns.len() + 1,
        reruns,
        attachments: Vec::new(),
    }
}

/// The one testcase builder.
fn testcase(entry: Entry) -> TestCase {
    let Some(outcome) = entry.outcome else {
        let mut status = TestCaseStatus::non_success(NonSuccessKind::Error);
        status.set_type("unfinished").set_message("no outcome: the session was lost before this test ended");
        let mut case = TestCase::new(entry.name.as_str(), status);
        case.set_classname(entry.classname);
        return case;
    };
    let reruns: Vec<TestRerun> = entry.reruns.iter().map(rerun).collect();
    let status = match outcome {
        // Failed before, passed now: flaky, with its failed runs as `flakyFailure`s.
        pb::Outcome::Passed | pb::Outcome::Flaky => TestCaseStatus::Success { flaky_runs: reruns },
        pb::Outcome::Skipped if entry.of == Of::Unit => TestCaseStatus::success(),
        pb::Outcome::Skipped => {
            let mut status = TestCaseStatus::skipped();
            status.set_message(entry.message);
            status
        }
        other => {
            // A unit that failed or timed out is a failure and anything else (lost, cancelled,
            // could not start) an error; a case is an error only when its framework said so.
            let kind = match (entry.of, other) {
                (Of::Unit, pb::Outcome::Failed | pb::Outcome::TimedOut) => NonSuccessKind::Failure,
                (Of::Unit, _) | (Of::Case, pb::Outcome::Error) => NonSuccessKind::Error,
                (Of::Case, _) => NonSuccessKind::Failure,
            };
            let mut status = TestCaseStatus::non_success(kind);
            status.set_type(other.word());
            status.set_message(if entry.message.is_empty() { other.word() } else { entry.message });
            status.set_description(match entry.of {
                Of::Unit => output_tail(entry.output, 50).join("\n"),
                Of::Case => String::from_utf8_lossy(entry.output).into_owned(),
            });
            status.add_reruns(reruns);
            status
        }
    };
    let mut case = TestCase::new(entry.name.as_str(), status);
    case.set_classname(entry.classname);
    case.set_time(Duration::from_millis(entry.duration_ms));
    if !entry.attachments.is_empty() {
        let mut out = String::from_utf8_lossy(entry.output).into_owned();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        for path in &entry.attachments {
            out.push_str(&format!("[[ATTACHMENT|{}]]\n", path.display()));
        }
        case.set_system_out(out);
    } else if entry.of == Of::Unit || (outcome == pb::Outcome::Passed && !entry.output.is_empty()) {
        case.set_system_out_lossy(entry.output);
    }
    if entry.of == Of::Case && entry.message.starts_with("xfail") {
        // Kept visible: an expected failure that passes as "success" would hide it.
        case.add_property(Property::new("xfail", entry.message));
    }
    if !entry.worker.is_empty() {
        case.add_property(Property::new("worker", entry.worker));
    }
    if entry.of == Of::Unit || entry.attempts > 1 {
        case.add_property(Property::new("attempts", entry.attempts.to_string()));
    }
    case
}

fn rerun(run: &Run) -> TestRerun {
    let kind = if run.outcome == pb::Outcome::Error { NonSuccessKind::Error } else { NonSuccessKind::Failure };
    let mut rerun = TestRerun::new(kind);
    rerun
        .set_type(run.outcome.word())
        .set_message(run.message)
        .set_time(Duration::from_millis(run.duration_ms))
        .set_system_out_lossy(run.output);
    rerun
}

/// A test file's JUnit classname: its folder, dotted (`tests` at the root).
fn classname_of(path: &str) -> String {
    match path.rsplit_once('/') {
        Some((dir, _)) => dir.replace('/', "."),
        None => "tests".to_string(),
    }
}
