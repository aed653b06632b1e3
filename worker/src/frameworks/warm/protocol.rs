//! The warm runners' line protocol (docs/runners.md), read at the edge: each line a runner sends
//! becomes a typed [`FromRunner`], outcomes included, and the worker's requests are written here.
//!
//! Pure: it must not touch sockets or processes.

use serde::Deserialize;
use testgrid_proto as pb;

/// A message from a runner.
#[derive(Debug, PartialEq)]
pub enum FromRunner {
    /// The runner has loaded its framework and waits for work. `shares`: it runs files of
    /// several slots at once (vitest 4 and later: its pool takes one file per busy slot), so one
    /// runner serves every slot of its session on the worker.
    Ready { shares: bool },
    /// The unit's file began to run (a runner that queues files says so; for the others a file
    /// begins when it is asked for).
    Begin,
    /// The cases the file holds (ids relative to the runner's folder), and how many more the
    /// session's arguments deselected (pytest's `-k`, `-m`).
    Collected { tests: Vec<String>, deselected: u64 },
    /// A case began.
    Started { test: String },
    /// A case ended.
    Case(Case),
    /// The file is done; `error` is what went wrong outside its cases (collection, a hook).
    Done { error: Option<String> },
    /// The session's test files as the framework lists them, or why it could not (before
    /// `Ready`, from a runner started with `TESTGRID_LIST_FILES=1`).
    Listed(crate::Listing),
}

/// A case's result as a runner reports it.
#[derive(Debug, PartialEq)]
pub struct Case {
    pub test: String,
    pub outcome: pb::Outcome,
    pub duration_ms: u64,
    pub message: String,
    pub output: String,
}

/// A line as it is written on the wire.
#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Wire {
    Ready {
        #[serde(default)]
        shares: bool,
    },
    Begin,
    Collected {
        tests: Vec<String>,
        #[serde(default)]
        deselected: u64,
    },
    Started {
        test: String,
    },
    Case {
        test: String,
        outcome: String,
        duration_ms: u64,
        message: String,
        output: String,
        xfail: bool,
    },
    Done {
        error: Option<String>,
    },
    Listed {
        #[serde(default)]
        files: Option<Vec<WireFile>>,
        #[serde(default)]
        error: Option<String>,
    },
}

/// A listed file on the wire: vitest's own `list --filesOnly --json` shape.
#[derive(Deserialize)]
struct WireFile {
    file: String,
    #[serde(rename = "projectName", default)]
    project: Option<String>,
}

/// A line: the unit it is about (if it names one) beside what it says.
#[derive(Deserialize)]
struct Line {
    unit: Option<u64>,
    #[serde(flatten)]
    wire: Wire,
}

/// A line a runner sent: the unit it names (if any) and what it says, read in one pass.
pub fn parse_addressed(line: &str) -> Result<(Option<u64>, FromRunner), serde_json::Error> {
    let Line { unit, wire } = serde_json::from_str(line)?;
    Ok((unit, typed(wire)))
}

/// A line a runner sent.
pub fn parse(line: &str) -> Result<FromRunner, serde_json::Error> {
    Ok(parse_addressed(line)?.1)
}

/// A wire message, typed (outcomes included).
fn typed(wire: Wire) -> FromRunner {
    match wire {
        Wire::Ready { shares } => FromRunner::Ready { shares },
        Wire::Begin => FromRunner::Begin,
        Wire::Collected { tests, deselected } => FromRunner::Collected { tests, deselected },
        Wire::Started { test } => FromRunner::Started { test },
        Wire::Case { test, outcome, duration_ms, message, output, xfail } => {
            // An expected failure passes or skips as the framework decides; its message says why.
            let message = if xfail && !message.starts_with("xfail") { format!("xfail: {message}") } else { message };
            FromRunner::Case(Case { test, outcome: outcome_of(&outcome), duration_ms, message, output })
        }
        Wire::Done { error } => FromRunner::Done { error },
        Wire::Listed { files: Some(files), error: None } => FromRunner::Listed(Ok(files
            .into_iter()
            .map(|f| crate::ListedFile { file: f.file, project: f.project.filter(|p| !p.is_empty()) })
            .collect())),
        Wire::Listed { error, .. } => {
            FromRunner::Listed(Err(error.unwrap_or_else(|| "the runner listed no files".to_string())))
        }
    }
}

/// The outcomes a runner may report; anything else is an error of the case.
fn outcome_of(key: &str) -> pb::Outcome {
    match pb::Outcome::from_key(key) {
        Some(outcome @ (pb::Outcome::Passed | pb::Outcome::Failed | pb::Outcome::Skipped | pb::Outcome::TimedOut)) => {
            outcome
        }
        _ => pb::Outcome::Error,
    }
}

/// Ask the runner to run one file (or case), `path` relative to its folder, for `slot`.
pub fn run_request(unit: u64, path: &str, slot: u32) -> String {
    serde_json::json!({ "op": "run", "unit": unit, "path": path, "slot": slot }).to_string() + "\n"
}

/// Ask the runner to finish its session and exit.
pub const STOP_REQUEST: &[u8] = b"{\"op\": \"stop\"}\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_typed_messages() {
        assert_eq!(parse(r#"{"op":"ready","pid":12}"#).ok(), Some(FromRunner::Ready { shares: false }));
        assert_eq!(parse(r#"{"op":"ready","pid":12,"shares":true}"#).ok(), Some(FromRunner::Ready { shares: true }));
        assert_eq!(
            parse(r#"{"op":"collected","unit":0,"tests":["a.py::x"]}"#).ok(),
            Some(FromRunner::Collected { tests: vec!["a.py::x".into()], deselected: 0 })
        );
        assert_eq!(
            parse(r#"{"op":"started","test":"a.py::x"}"#).ok(),
            Some(FromRunner::Started { test: "a.py::x".into() })
        );
        assert_eq!(parse(r#"{"op":"done","unit":0,"error":null}"#).ok(), Some(FromRunner::Done { error: None }));
        assert!(parse("not json").is_err());
        assert_eq!(parse_addressed(r#"{"op":"begin","unit":7}"#).ok(), Some((Some(7), FromRunner::Begin)));
        assert_eq!(
            parse_addressed(r#"{"op":"ready","pid":1}"#).ok(),
            Some((None, FromRunner::Ready { shares: false }))
        );
        assert!(parse_addressed(r#"{"op":"begin","unit":"x"}"#).is_err(), "a unit is a number");
        assert!(parse(r#"{"op":"what"}"#).is_err());
        assert_eq!(
            parse(r#"{"op":"listed","files":[{"file":"/p/a.test.ts","projectName":"unit"},{"file":"/p/b.test.ts"}]}"#)
                .ok(),
            Some(FromRunner::Listed(Ok(vec![
                crate::ListedFile { file: "/p/a.test.ts".into(), project: Some("unit".into()) },
                crate::ListedFile { file: "/p/b.test.ts".into(), project: None },
            ])))
        );
        assert_eq!(
            parse(r#"{"op":"listed","error":"bad config"}"#).ok(),
            Some(FromRunner::Listed(Err("bad config".into())))
        );
        assert!(matches!(parse(r#"{"op":"listed"}"#), Ok(FromRunner::Listed(Err(_)))));
    }

    #[test]
    fn outcomes_are_typed_at_the_edge_and_xfail_is_said() {
        let case = |outcome: &str, xfail: bool, message: &str| {
            let line = serde_json::json!({"op": "case", "test": "t", "outcome": outcome, "duration_ms": 3,
                "message": message, "output": "o", "xfail": xfail});
            match parse(&line.to_string()) {
                Ok(FromRunner::Case(case)) => case,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(case("passed", false, "").outcome, pb::Outcome::Passed);
        assert_eq!(case("timed_out", false, "").outcome, pb::Outcome::TimedOut);
        assert_eq!(case("skipped", true, "flaky on arm").message, "xfail: flaky on arm");
        assert_eq!(case("skipped", true, "xfail: known").message, "xfail: known");
        assert_eq!(case("lost", false, "").outcome, pb::Outcome::Error, "not an outcome a runner reports");
        assert_eq!(case("bogus", false, "").outcome, pb::Outcome::Error);
        assert_eq!(run_request(4, "a.py", 1), "{\"op\":\"run\",\"path\":\"a.py\",\"slot\":1,\"unit\":4}\n");
    }
}
