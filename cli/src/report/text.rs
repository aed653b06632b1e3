//! How a report shows things, the same in every view: a path, a duration, an output's tail,
//! why a test did not pass, and how to read a case's outcome.

use std::time::Duration;

use testgrid_proto as pb;

use super::tracker::TestRecord;

/// A case's outcome; a value this client does not know counts as an error, never a pass.
pub fn case_outcome(case: &pb::CaseResult) -> pb::Outcome {
    pb::Outcome::try_from(case.outcome).unwrap_or(pb::Outcome::Error)
}

/// A test path as a terminal or report shows it: control characters (a newline or an escape
/// sequence in a file name) are written out as escapes, never sent raw.
pub fn display_path(path: &str) -> String {
    if !path.chars().any(char::is_control) {
        return path.to_string();
    }
    path.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// A name from the grid as a terminal may show it: control characters (escape sequences that
/// would move the cursor, retitle the window or hide text) become `?`, and it is cut to `max`
/// characters.
pub fn printable(text: &str, max: usize) -> String {
    let mut out: String = text.chars().take(max).map(|c| if c.is_control() { '?' } else { c }).collect();
    if text.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

/// Seconds with two decimals under a minute, humantime-like above.
pub fn format_duration(ms: u64) -> String {
    if ms < 60_000 {
        format!("{:.2}s", ms as f64 / 1000.0)
    } else {
        humantime::format_duration(Duration::from_secs(ms / 1000)).to_string()
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
