//! The final summary: totals, success rate, times, the flaky tests, and every test that did
//! not pass with the tail of its output.

use std::fmt::Write as _;

use testgrid_proto as pb;

use super::text::{display_path, format_duration, output_tail, why};
use super::tracker::{TestRecord, Tracker};

/// The final summary: totals, success rate, times, and every test that did not pass with the
/// tail of its output.
pub fn summary(tracker: &Tracker, tail_lines: usize) -> String {
    let mut out = String::new();
    let total = tracker.tests.len();
    let mut counts: Vec<(pb::Outcome, usize)> = Vec::new();
    for outcome in pb::Outcome::ALL {
        let n = tracker.tests.iter().filter(|t| t.outcome == Some(outcome)).count();
        if n > 0 {
            counts.push((outcome, n));
        }
    }
    let passed = tracker.tests.iter().filter(|t| t.outcome.is_some_and(pb::Outcome::is_success)).count();
    let wall = tracker.wall_ms();

    let failures: Vec<&TestRecord> =
        tracker.tests.iter().filter(|t| !t.outcome.is_some_and(pb::Outcome::is_success)).collect();
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
            let word = t.outcome.map(pb::Outcome::word).unwrap_or("unfinished").to_uppercase();
            let _ = writeln!(out, "\n  {word} {} ({})", display_path(&t.path), why(t, true));
            if let Some(last) = t.attempts.last() {
                for line in output_tail(&last.report.output, tail_lines) {
                    let _ = writeln!(out, "    │ {line}");
                }
            }
        }
    }
    let _ = writeln!(out);
    let breakdown: Vec<String> = counts.iter().map(|(o, n)| format!("{n} {}", o.word())).collect();
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
        let words: Vec<String> = cases.by_outcome.iter().map(|(o, n)| format!("{n} {}", o.word())).collect();
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

fn format_time(ms: u64) -> String {
    use chrono::{Local, TimeZone};
    match Local.timestamp_millis_opt(ms as i64).single() {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S %Z").to_string(),
        None => ms.to_string(),
    }
}

/// The artifacts tests sent back, as the summary lists them: where they are, each test's files
/// (at most `max` tests), and what was refused or could not be brought back. Empty when no test
/// sent any.
pub fn artifacts(tracker: &Tracker, dir: &std::path::Path, fetched: &crate::artifacts::Fetched, max: usize) -> String {
    use std::fmt::Write as _;
    let mut lines = Vec::new();
    let mut refused = Vec::new();
    for test in &tracker.tests {
        for attempt in &test.attempts {
            let sent: Vec<&str> =
                attempt.report.artifacts.iter().filter(|a| a.digest.is_some()).map(|a| a.path.as_str()).collect();
            let label = match attempt.attempt {
                1 => super::display_path(&test.path).to_string(),
                n => format!("{} (attempt {n})", super::display_path(&test.path)),
            };
            if !sent.is_empty() {
                lines.push(format!("  {label}: {}", sent.join(", ")));
            }
            for a in attempt.report.artifacts.iter().filter(|a| a.digest.is_none()) {
                refused.push(format!("  not sent: {label}: {} ({})", a.path, a.refused));
            }
        }
    }
    if lines.is_empty() && refused.is_empty() {
        return String::new();
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nArtifacts: {} file{} ({}) in {}",
        fetched.files,
        if fetched.files == 1 { "" } else { "s" },
        testgrid_proto::human_bytes(fetched.bytes),
        dir.display()
    );
    let more = lines.len().saturating_sub(max);
    for line in lines.into_iter().take(max) {
        let _ = writeln!(out, "{line}");
    }
    if more > 0 {
        let _ = writeln!(out, "  … and {more} more");
    }
    for line in refused.iter().take(max) {
        let _ = writeln!(out, "{line}");
    }
    for failed in fetched.failed.iter().take(max) {
        let _ = writeln!(out, "  not brought back: {failed}");
    }
    out
}
