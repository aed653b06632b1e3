//! test2json's events, turned into cases: pure, fed line by line ([`GoRun::line`]) and finished
//! with how the test binary ended ([`GoRun::finish`]). Cases are named `PKG::TestName`
//! (`PKG::TestName/sub` for subtests), the package folder their class name.
//!
//! It must not run processes or read pipes (`run.rs` does).

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use serde::Deserialize;
use testgrid_proto as pb;

use crate::exec::Ending;
use crate::exec::exit::Exit;
use crate::exec::output::Capture;
use crate::exec::report::{CASE_OUTPUT_LIMIT, Unit, unit_report};

/// One event from test2json (fields it adds in newer Go versions are ignored).
#[derive(Deserialize, Debug)]
#[serde(rename_all = "PascalCase")]
pub struct Event {
    action: String,
    #[serde(default)]
    test: Option<String>,
    #[serde(default)]
    elapsed: Option<f64>,
    #[serde(default)]
    output: Option<String>,
}

/// A line test2json printed: an event, or text that is not one (kept as package output).
#[derive(Debug)]
pub enum Line {
    Event(Event),
    Text(String),
}

pub fn parse_line(line: &[u8]) -> Line {
    match serde_json::from_slice::<Event>(line) {
        Ok(event) => Line::Event(event),
        Err(_) => Line::Text(format!("{}\n", String::from_utf8_lossy(line))),
    }
}

/// A test that started and has not ended.
pub struct Open {
    order: u64,
    since: Instant,
    output: Capture,
}

/// One package run's events as they arrive, turned into cases.
pub struct GoRun {
    pkg: String,
    pub unit: Unit,
    pub running: HashMap<String, Open>,
    next: u64,
    /// Output outside any test (TestMain, init, the final PASS/FAIL).
    pub package_output: Capture,
    /// Tests that failed, in order (a parent's message names its failed subtest).
    failed: Vec<String>,
    pub any_started: bool,
    output_limit: usize,
}

impl GoRun {
    pub fn new(pkg: &str, output_limit: usize) -> Self {
        GoRun {
            pkg: pkg.to_string(),
            unit: Unit::new(pkg),
            running: HashMap::new(),
            next: 0,
            package_output: Capture::new(output_limit),
            failed: Vec::new(),
            any_started: false,
            output_limit,
        }
    }

    pub fn line(&mut self, line: Line) {
        match line {
            Line::Event(event) => self.event(event),
            Line::Text(text) => self.package_output.push(text.as_bytes()),
        }
    }

    fn event(&mut self, event: Event) {
        let output = event.output.unwrap_or_default();
        match (event.action.as_str(), event.test) {
            ("run", Some(test)) => {
                self.any_started = true;
                let order = self.next;
                self.next += 1;
                self.running.entry(test).or_insert_with(|| Open {
                    order,
                    since: Instant::now(),
                    output: Capture::new(CASE_OUTPUT_LIMIT),
                });
            }
            ("output", Some(test)) => match self.running.get_mut(&test) {
                Some(running) if !is_framing(&output) => running.output.push(output.as_bytes()),
                Some(_) => {}
                None => self.package_output.push(output.as_bytes()),
            },
            ("output", None) => self.package_output.push(output.as_bytes()),
            (action @ ("pass" | "fail" | "skip"), Some(test)) => {
                let running = self.running.remove(&test);
                let duration_ms = match (event.elapsed, &running) {
                    (Some(seconds), _) => (seconds * 1000.0).round() as u64,
                    (None, Some(r)) => r.since.elapsed().as_millis() as u64,
                    (None, None) => 0,
                };
                let output = running.map(|r| String::from_utf8_lossy(&r.output.finish().0).into_owned());
                let output = output.unwrap_or_default();
                let (outcome, message) = match action {
                    "pass" => (pb::Outcome::Passed, String::new()),
                    "skip" => (pb::Outcome::Skipped, summary(&output)),
                    _ => {
                        let mut message = summary(&output);
                        if message.is_empty()
                            && let Some(sub) = self.failed.iter().find(|f| f.starts_with(&format!("{test}/")))
                        {
                            message = format!("subtest {sub} failed");
                        }
                        self.failed.push(test.clone());
                        (pb::Outcome::Failed, message)
                    }
                };
                self.unit.add(format!("{}::{test}", self.pkg), outcome, duration_ms, message, &output);
            }
            _ => {}
        }
    }

    /// The unit's report once the binary and test2json are done.
    pub fn finish(
        mut self,
        ending: Ending,
        listed: Option<Vec<String>>,
        case: Option<&str>,
        started: Instant,
    ) -> pb::TestReport {
        let mut left: Vec<(String, Open)> = self.running.drain().collect();
        left.sort_by_key(|(_, r)| r.order);
        let stopped_mid_test = !left.is_empty();
        let limit = humantime::format_duration(match &ending {
            Ending::TimedOut(t) => *t,
            _ => Duration::ZERO,
        })
        .to_string();
        let how = match &ending {
            Ending::Exited(status) => format!("the test binary {}", Exit::of(*status).sentence()),
            Ending::Lost(why) => why.clone(),
            Ending::TimedOut(_) | Ending::Cancelled => String::new(),
        };
        for (test, running) in left {
            let duration_ms = running.since.elapsed().as_millis() as u64;
            let output = String::from_utf8_lossy(&running.output.finish().0).into_owned();
            let (outcome, message) = match &ending {
                // A cancel's cases read as errors, as before typed outcomes.
                Ending::Cancelled => (pb::Outcome::Error, "cancelled".to_string()),
                Ending::TimedOut(_) => (pb::Outcome::TimedOut, format!("killed after the {limit} timeout")),
                Ending::Exited(_) | Ending::Lost(_) => {
                    let said = summary(&output);
                    let message = if said.starts_with("panic: ") {
                        format!("{said} ({how})")
                    } else {
                        format!("{how} before this test finished")
                    };
                    (pb::Outcome::Failed, message)
                }
            };
            self.unit.add(format!("{}::{test}", self.pkg), outcome, duration_ms, message, &output);
        }
        if let Some(listed) = listed {
            self.unit.collected = listed.into_iter().map(|t| format!("{}::{t}", self.pkg)).collect();
            let why = match &ending {
                Ending::TimedOut(_) => format!("not run: the package was killed after the {limit} timeout"),
                _ => format!("not run: {how} before it"),
            };
            self.unit.not_run(pb::Outcome::Error, &why);
        }
        let cases = std::mem::take(&mut self.unit.cases);
        let no_cases = cases.is_empty();
        let mut report = unit_report(cases, None, started, self.output_limit);
        match &ending {
            Ending::Cancelled => {
                report.outcome = pb::Outcome::Cancelled as i32;
                report.message = "cancelled".into();
            }
            Ending::TimedOut(_) => {
                report.outcome = pb::Outcome::TimedOut as i32;
                report.message = format!("killed after the {limit} timeout");
            }
            Ending::Lost(why) => {
                report.outcome = pb::Outcome::Error as i32;
                report.message = why.clone();
            }
            Ending::Exited(status) => {
                report.exit_code = status.code();
                report.signal = status.signal();
                let passed = report.outcome == pb::Outcome::Passed as i32;
                if !status.success() && passed {
                    report.outcome = pb::Outcome::Failed as i32;
                    report.message =
                        format!("{how} and no test failed (TestMain, an init function or os.Exit? see the output)");
                } else if !passed && (stopped_mid_test || !matches!(status.code(), Some(0 | 1))) {
                    report.message = format!("{}; {how}", report.message);
                } else if let (true, true, Some(case)) = (passed, no_cases, case) {
                    report.outcome = pb::Outcome::Error as i32;
                    report.message = format!("no test in {} matches `{case}` (go test: no tests to run)", self.pkg);
                }
            }
        }
        let package_output = String::from_utf8_lossy(&self.package_output.finish().0).into_owned();
        let trivial = matches!(package_output.trim(), "" | "PASS" | "FAIL");
        if report.outcome != pb::Outcome::Passed as i32 && !trivial {
            let mut capture = Capture::new(self.output_limit);
            capture.push(&report.output);
            capture.push(format!("_____ {} (package output) _____\n", self.pkg).as_bytes());
            capture.push(package_output.as_bytes());
            let (output, dropped) = capture.finish();
            report.output = output;
            report.output_dropped_bytes += dropped;
        }
        report
    }
}

/// test2json's framing lines, which say nothing a case's outcome does not.
fn is_framing(line: &str) -> bool {
    ["=== RUN", "=== PAUSE", "=== CONT", "=== NAME"].iter().any(|p| line.starts_with(p))
}

/// A short message from a case's output: its panic, else its last `file.go:N:` line before the
/// `--- FAIL`/`--- SKIP` line (usually the failing check or the skip reason), else its first line.
fn summary(output: &str) -> String {
    let lines: Vec<&str> = output.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if let Some(panic) = lines.iter().find(|l| l.starts_with("panic: ")) {
        return clip(panic.trim_end_matches(" [recovered]"));
    }
    let end = lines.iter().position(|l| l.starts_with("--- ")).unwrap_or(lines.len());
    let before = &lines[..end];
    before.iter().rev().find(|l| is_located(l)).or(before.first()).map(|l| clip(l)).unwrap_or_default()
}

/// `name.go:12: text`, as `t.Error` and `t.Log` print.
fn is_located(line: &str) -> bool {
    line.split_once(": ").is_some_and(|(at, _)| at.rsplit_once(".go:").is_some_and(|(_, n)| n.parse::<u32>().is_ok()))
}

fn clip(line: &str) -> String {
    const MAX: usize = 300;
    if line.len() <= MAX {
        return line.to_string();
    }
    let mut end = MAX;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &line[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::ExitStatus;

    /// Real test2json output (Go 1.19.8, `BIN -test.v -test.paniconexit0 2>&1 | go tool test2json
    /// -t -p PKG`) of the packages in `cli/tests/go.rs`; see `testdata/go/README.md`.
    const CALC: &str = include_str!("../../../testdata/go/calc.jsonl");
    const CRASH: &str = include_str!("../../../testdata/go/crash.jsonl");
    const SETUP: &str = include_str!("../../../testdata/go/setup.jsonl");
    const HANG: &str = include_str!("../../../testdata/go/hang.jsonl");

    fn feed(pkg: &str, recording: &str) -> GoRun {
        let mut run = GoRun::new(pkg, 1024 * 1024);
        for line in recording.lines() {
            run.line(parse_line(line.as_bytes()));
        }
        run
    }

    fn exited(code: i32) -> Ending {
        Ending::Exited(ExitStatus::from_raw(code << 8))
    }

    fn outcomes(report: &pb::TestReport) -> Vec<(String, pb::Outcome)> {
        report
            .cases
            .iter()
            .map(|c| (c.name.clone(), pb::Outcome::try_from(c.outcome).unwrap_or(pb::Outcome::Unspecified)))
            .collect()
    }

    fn case<'a>(report: &'a pb::TestReport, name: &str) -> &'a pb::CaseResult {
        report.cases.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no case {name}: {report:?}"))
    }

    #[test]
    fn a_package_run_becomes_cases_with_subtests_skips_and_failures() {
        let report = feed("calc", CALC).finish(exited(1), None, None, Instant::now());
        use pb::Outcome::{Failed, Passed, Skipped};
        let expected: Vec<(String, pb::Outcome)> = [
            ("TestAdd", Passed),
            ("TestAddWrong", Failed),
            ("TestSkipped", Skipped),
            ("TestTable/one", Passed),
            ("TestTable/two", Failed),
            ("TestTable/with_space", Passed),
            ("TestTable/outer/inner", Passed),
            ("TestTable/outer", Passed),
            ("TestTable", Failed),
            ("TestParallelB", Passed),
            ("TestParallelA", Passed),
            ("ExampleAdd", Passed),
        ]
        .into_iter()
        .map(|(n, o)| (format!("calc::{n}"), o))
        .collect();
        assert_eq!(outcomes(&report), expected);
        assert_eq!(report.outcome, Failed as i32);
        assert_eq!(report.message, "3 of 12 cases did not pass");
        assert_eq!(report.exit_code, Some(1));
        assert!(report.cases.iter().all(|c| c.classname == "calc"));

        let wrong = case(&report, "calc::TestAddWrong");
        assert_eq!(wrong.message, "calc_test.go:19: Add(2, 2) = 4, want 5");
        let text = String::from_utf8_lossy(&wrong.output);
        assert!(text.contains("about to compare") && text.contains("--- FAIL: TestAddWrong"), "{text}");
        assert!(!text.contains("=== RUN"), "framing lines are dropped: {text}");
        assert_eq!(case(&report, "calc::TestSkipped").message, "calc_test.go:23: not on this machine");
        assert_eq!(case(&report, "calc::TestTable").message, "subtest TestTable/two failed");
        assert!(case(&report, "calc::TestAdd").output.is_empty(), "a passing case's output is dropped");
        assert_eq!(case(&report, "calc::TestParallelA").duration_ms, 20, "from test2json's Elapsed");
        let unit_output = String::from_utf8_lossy(&report.output);
        assert!(unit_output.contains("_____ calc::TestTable/two _____"), "{unit_output}");
        assert!(!unit_output.contains("package output"), "a plain FAIL line is not worth showing: {unit_output}");
    }

    #[test]
    fn a_panic_fails_the_running_test_and_names_the_tests_never_reached() {
        let listed = Some(vec!["TestBeforePanic".into(), "TestPanics".into(), "TestNeverReached".into()]);
        let report = feed("crash", CRASH).finish(exited(2), listed, None, Instant::now());
        use pb::Outcome::{Error, Failed, Passed};
        assert_eq!(
            outcomes(&report),
            vec![
                ("crash::TestBeforePanic".to_string(), Passed),
                ("crash::TestPanics".to_string(), Failed),
                ("crash::TestNeverReached".to_string(), Error),
            ]
        );
        let panicked = case(&report, "crash::TestPanics");
        assert_eq!(panicked.message, "panic: assignment to entry in nil map (the test binary exited with exit code 2)");
        assert!(String::from_utf8_lossy(&panicked.output).contains("crash_test.go:9"), "the stack is kept");
        let never = case(&report, "crash::TestNeverReached");
        assert_eq!(never.message, "not run: the test binary exited with exit code 2 before it");
        assert_eq!(report.outcome, Failed as i32);
        assert_eq!(report.message, "2 of 3 cases did not pass; the test binary exited with exit code 2");
    }

    #[test]
    fn test_main_exiting_fails_the_package_with_its_output() {
        let report = feed("setup", SETUP).finish(exited(3), None, None, Instant::now());
        assert!(report.cases.is_empty());
        assert_eq!(report.outcome, pb::Outcome::Failed as i32);
        assert!(report.message.contains("exit code 3 and no test failed"), "{}", report.message);
        let text = String::from_utf8_lossy(&report.output);
        assert!(text.contains("setup failed: no database"), "{text}");
    }

    #[test]
    fn a_timeout_times_out_the_running_test_and_names_the_rest() {
        let listed = Some(vec!["TestQuick".into(), "TestHangs".into(), "TestAfterHang".into()]);
        let report = feed("hang", HANG).finish(Ending::TimedOut(Duration::from_secs(5)), listed, None, Instant::now());
        use pb::Outcome::{Error, Passed, TimedOut};
        assert_eq!(
            outcomes(&report),
            vec![
                ("hang::TestQuick".to_string(), Passed),
                ("hang::TestHangs".to_string(), TimedOut),
                ("hang::TestAfterHang".to_string(), Error),
            ]
        );
        assert_eq!(report.outcome, TimedOut as i32);
        assert_eq!(report.message, "killed after the 5s timeout");
        let hung = case(&report, "hang::TestHangs");
        assert!(String::from_utf8_lossy(&hung.output).contains("going to sleep"), "its output so far is kept");
        assert_eq!(
            case(&report, "hang::TestAfterHang").message,
            "not run: the package was killed after the 5s timeout"
        );
    }

    #[test]
    fn a_cancel_cancels_the_running_tests() {
        let report = feed("hang", HANG).finish(Ending::Cancelled, None, None, Instant::now());
        assert_eq!(report.outcome, pb::Outcome::Cancelled as i32);
        assert_eq!(case(&report, "hang::TestHangs").message, "cancelled");
        assert_eq!(case(&report, "hang::TestQuick").outcome, pb::Outcome::Passed as i32);
    }

    #[test]
    fn a_single_case_that_matches_nothing_is_an_error() {
        let recording = r#"{"Action":"output","Package":"calc","Output":"testing: warning: no tests to run\n"}
{"Action":"output","Package":"calc","Output":"PASS\n"}
{"Action":"pass","Package":"calc","Elapsed":0.002}"#;
        let report = feed("calc", recording).finish(exited(0), None, Some("TestNope"), Instant::now());
        assert_eq!(report.outcome, pb::Outcome::Error as i32);
        assert_eq!(report.message, "no test in calc matches `TestNope` (go test: no tests to run)");
        let whole = feed("calc", recording).finish(exited(0), None, None, Instant::now());
        assert_eq!(whole.outcome, pb::Outcome::Passed as i32, "a package without tests passes, as in go test");
    }

    #[test]
    fn output_is_bounded_and_stray_lines_are_kept_as_package_output() {
        let mut run = GoRun::new("p", 4096);
        run.line(parse_line(br#"{"Action":"run","Test":"TestBig"}"#));
        let chunk = serde_json::json!({"Action": "output", "Test": "TestBig", "Output": "x".repeat(10_000) + "\n"});
        for _ in 0..100 {
            run.line(parse_line(chunk.to_string().as_bytes()));
        }
        run.line(parse_line(b"not json at all"));
        run.line(parse_line(br#"{"Action":"fail","Test":"TestBig","Elapsed":1.5}"#));
        let report = run.finish(exited(1), None, None, Instant::now());
        let big = case(&report, "p::TestBig");
        assert!(big.output.len() <= CASE_OUTPUT_LIMIT + 100, "capped: {}", big.output.len());
        assert_eq!(big.duration_ms, 1500);
        assert!(report.output.len() <= 4096 + 100, "the unit's output is capped too");
        assert!(String::from_utf8_lossy(&report.output).contains("not json at all"));
    }
}
