//! The report of a test unit: one builder for every framework that reports cases (warm runners,
//! Go). [`Unit`] collects a unit's cases as they arrive, with typed outcomes and bounded output;
//! [`unit_report`] turns them into the unit's `TestReport`; [`simple`] is a report without cases.
//!
//! Pure: it must not run processes or parse any framework's output (the frameworks parse at
//! their edge and hand typed outcomes in).

use std::collections::HashSet;
use std::time::Instant;

use testgrid_proto as pb;

use super::output::Capture;

/// Per-case output kept by the worker (head and tail), and per unit across its cases: a chatty
/// suite must not produce a result too large to send.
pub const CASE_OUTPUT_LIMIT: usize = 64 * 1024;
const UNIT_CASE_OUTPUT_BUDGET: usize = 4 * 1024 * 1024;

/// A report without cases: `outcome` with `message`, timed from `started`.
pub fn simple(outcome: pb::Outcome, message: impl Into<String>, started: Instant) -> pb::TestReport {
    pb::TestReport {
        outcome: outcome as i32,
        duration_ms: started.elapsed().as_millis() as u64,
        message: message.into(),
        ..Default::default()
    }
}

/// One unit's cases as they arrive.
pub struct Unit {
    /// What the unit's cases are filed under in JUnit.
    classname: String,
    /// Case ids the framework collected: those without a result are reported by [`Unit::not_run`].
    pub collected: Vec<String>,
    pub cases: Vec<pb::CaseResult>,
    /// The case running now, if the framework said so.
    pub current: Option<String>,
    /// Cases the session's arguments deselected (never run, never reported as cases).
    pub deselected: u64,
    /// Keep the output of passing cases too (`--show-output`).
    pub keep_passing: bool,
    output_left: usize,
}

impl Unit {
    /// A unit whose cases are filed under `classname`.
    pub fn new(classname: impl Into<String>) -> Self {
        Unit {
            classname: classname.into(),
            collected: Vec::new(),
            cases: Vec::new(),
            current: None,
            deselected: 0,
            keep_passing: false,
            output_left: UNIT_CASE_OUTPUT_BUDGET,
        }
    }

    /// A case's result. Output is kept for what did not pass (bounded); a passing case's output
    /// is noise, unless the session asked for it ([`Unit::keep_passing`]).
    pub fn add(&mut self, name: String, outcome: pb::Outcome, duration_ms: u64, message: String, output: &str) {
        let passing = matches!(outcome, pb::Outcome::Passed | pb::Outcome::Skipped);
        let keep = (!passing || self.keep_passing) && self.output_left > 0;
        let output = if keep {
            let mut capture = Capture::new(CASE_OUTPUT_LIMIT.min(self.output_left));
            capture.push(output.as_bytes());
            let (bytes, _) = capture.finish();
            self.output_left = self.output_left.saturating_sub(bytes.len());
            bytes
        } else {
            Vec::new()
        };
        self.push(name, outcome, duration_ms, message, output);
    }

    fn push(&mut self, name: String, outcome: pb::Outcome, duration_ms: u64, message: String, output: Vec<u8>) {
        let classname = self.classname.clone();
        self.cases.push(pb::CaseResult { name, classname, outcome: outcome as i32, duration_ms, message, output });
    }

    /// Record every collected case that got no result.
    pub fn not_run(&mut self, outcome: pb::Outcome, message: &str) {
        let reported: HashSet<String> = self.cases.iter().map(|c| c.name.clone()).collect();
        let missing: Vec<String> = self.collected.iter().filter(|id| !reported.contains(*id)).cloned().collect();
        for id in missing {
            self.push(id, outcome, 0, message.to_string(), Vec::new());
        }
    }
}

/// A unit's report that says how many of its cases the session's arguments deselected: a unit
/// whose every case was deselected is `skipped`, and says so.
pub fn with_deselected(mut report: pb::TestReport, deselected: u64) -> pb::TestReport {
    if deselected == 0 {
        return report;
    }
    if report.cases.is_empty() && report.outcome == pb::Outcome::Passed as i32 {
        report.outcome = pb::Outcome::Skipped as i32;
        report.message = format!("every case deselected ({deselected}) by the session's arguments");
    } else {
        report.message = format!("{}, {deselected} deselected", report.message);
    }
    report
}

/// The unit's report from its cases: failed when any case failed or errored, with their output;
/// `error` (outside any case: collection, a hook) makes it an error.
pub fn unit_report(
    cases: Vec<pb::CaseResult>,
    error: Option<String>,
    started: Instant,
    limit: usize,
) -> pb::TestReport {
    let duration_ms = started.elapsed().as_millis() as u64;
    if let Some(error) = error {
        return pb::TestReport {
            outcome: pb::Outcome::Error as i32,
            duration_ms,
            message: if cases.is_empty() {
                "collection failed"
            } else {
                "error outside its tests (a hook, or an unhandled error)"
            }
            .into(),
            output: error.into_bytes(),
            cases,
            ..Default::default()
        };
    }
    let bad: Vec<&pb::CaseResult> = cases
        .iter()
        .filter(|c| {
            matches!(pb::Outcome::of(c.outcome), pb::Outcome::Failed | pb::Outcome::Error | pb::Outcome::TimedOut)
        })
        .collect();
    let mut capture = Capture::new(limit);
    for c in &bad {
        capture.push(format!("_____ {} _____\n", c.name).as_bytes());
        capture.push(&c.output);
        capture.push(b"\n");
    }
    let (output, output_dropped_bytes) = capture.finish();
    let skipped = cases.iter().filter(|c| c.outcome == pb::Outcome::Skipped as i32).count();
    let message = if bad.is_empty() {
        format!(
            "{} passed{}",
            cases.len() - skipped,
            if skipped > 0 { format!(", {skipped} skipped") } else { String::new() }
        )
    } else {
        format!("{} of {} cases did not pass", bad.len(), cases.len())
    };
    let outcome = if !bad.is_empty() {
        pb::Outcome::Failed
    } else if skipped > 0 && skipped == cases.len() {
        pb::Outcome::Skipped
    } else {
        pb::Outcome::Passed
    };
    pb::TestReport {
        outcome: outcome as i32,
        duration_ms,
        message,
        output,
        output_dropped_bytes,
        cases,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_fails_when_a_case_fails_and_names_it() {
        let mut unit = Unit::new("t.test_a");
        unit.push("t/test_a.py::ok".into(), pb::Outcome::Passed, 1, String::new(), Vec::new());
        unit.push("t/test_a.py::bad".into(), pb::Outcome::Failed, 1, "boom".into(), b"trace".to_vec());
        unit.push("t/test_a.py::skip".into(), pb::Outcome::Skipped, 0, "later".into(), Vec::new());
        let report = unit_report(unit.cases, None, Instant::now(), 1024);
        assert_eq!(report.outcome, pb::Outcome::Failed as i32);
        assert_eq!(report.message, "1 of 3 cases did not pass");
        let text = String::from_utf8_lossy(&report.output);
        assert!(text.contains("t/test_a.py::bad") && text.contains("trace"), "{text}");
        assert_eq!(report.cases[0].classname, "t.test_a");
    }

    #[test]
    fn cases_that_never_ran_are_reported_and_output_is_bounded() {
        let mut unit = Unit::new("t.test_a");
        unit.collected =
            vec!["t/test_a.py::TestX::a".into(), "t/test_a.py::TestX::b".into(), "t/test_a.py::TestX::c".into()];
        unit.add("t/test_a.py::TestX::a".into(), pb::Outcome::Failed, 1, "boom".into(), &"x".repeat(1_000_000));
        unit.add("t/test_a.py::TestX::b".into(), pb::Outcome::Passed, 1, String::new(), "noise");
        unit.not_run(pb::Outcome::Error, "not run: the runner crashed before it");
        let names: Vec<&str> = unit.cases.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["t/test_a.py::TestX::a", "t/test_a.py::TestX::b", "t/test_a.py::TestX::c"]);
        assert!(unit.cases[0].output.len() <= CASE_OUTPUT_LIMIT + 100, "capped");
        assert!(unit.cases[1].output.is_empty(), "a passing case's output is dropped");
        assert_eq!(unit.cases[2].outcome, pb::Outcome::Error as i32);
        assert_eq!(unit.cases[0].classname, "t.test_a", "the class name comes from the file part");
    }

    #[test]
    fn a_collection_error_is_an_error_for_the_file() {
        let report = unit_report(Vec::new(), Some("ImportError".into()), Instant::now(), 1024);
        assert_eq!(report.outcome, pb::Outcome::Error as i32);
        assert_eq!(report.output, b"ImportError");
    }
}
