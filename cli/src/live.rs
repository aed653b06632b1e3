//! The live view of a session: a progress bar and a line per finished test on a terminal, plain
//! lines otherwise, or one JSON object per event (`--json`, shaped by [`crate::json`]). It
//! feeds the [`Tracker`] every event, so the reports see what the view saw.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use testgrid_proto as pb;
use testgrid_proto::session_event::Kind;

use crate::args::{ColorChoice, OutputArgs};
use crate::report::{Tracker, case_outcome, display_path, format_duration, output_tail, why};

/// How the session is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Terminal,
    Plain,
    Json,
}

impl Mode {
    pub fn pick(json: bool) -> Mode {
        if json {
            Mode::Json
        } else if std::io::stdout().is_terminal() {
            Mode::Terminal
        } else {
            Mode::Plain
        }
    }
}

/// How the session is shown: the mode, and what the output flags ask of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct View {
    pub mode: Mode,
    /// Outcomes in colour.
    pub color: bool,
    /// `--quiet`: the summary only.
    pub quiet: bool,
    /// `--show-output`: the output of passing tests too.
    pub show_output: bool,
}

impl View {
    pub fn pick(output: &OutputArgs) -> View {
        let mode = Mode::pick(output.json);
        // no-color.org: a NO_COLOR that is set and not empty turns colour off, unless asked for.
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let color = match output.color {
            ColorChoice::Always => mode != Mode::Json,
            ColorChoice::Never => false,
            ColorChoice::Auto => mode == Mode::Terminal && !no_color,
        };
        View { mode, color, quiet: output.quiet, show_output: output.show_output }
    }
}

/// Renders events as they arrive and keeps the [`Tracker`] up to date.
pub struct Live {
    view: View,
    mode: Mode,
    bar: Option<ProgressBar>,
    pub tracker: Tracker,
    /// Cases reported by tests that have ended, for the progress bar.
    cases_done: usize,
    /// Each test's estimated duration (ms, by index; empty: none), for the ETA.
    estimates: Vec<u64>,
    /// When each running test was seen to start.
    started: std::collections::HashMap<u32, std::time::Instant>,
    /// The most tests seen running at once: the slots the session gets.
    peak: usize,
}

impl Live {
    pub fn new(view: View, session_id: &str) -> Self {
        Live {
            view,
            mode: view.mode,
            bar: None,
            tracker: Tracker::new(session_id),
            cases_done: 0,
            estimates: Vec::new(),
            started: Default::default(),
            peak: 0,
        }
    }

    /// Each test's estimate (ms, by index), from the duration history: the live view shows an
    /// ETA from the predicted work left.
    pub fn set_estimates(&mut self, estimates: Vec<u64>) {
        self.estimates = estimates;
    }

    /// The predicted time left: the estimated work of the tests without an outcome (less what
    /// the running ones have done) over the slots the session has had, and no less than the
    /// longest running test still needs. `None` without estimates.
    fn eta(&self) -> Option<std::time::Duration> {
        if self.estimates.iter().all(|&e| e == 0) {
            return None;
        }
        let estimate = |i: usize| self.estimates.get(i).copied().unwrap_or(0);
        let mut left: u64 = 0;
        let mut longest: u64 = 0;
        for (i, test) in self.tracker.tests.iter().enumerate() {
            if test.outcome.is_some() {
                continue;
            }
            let done = self.started.get(&(i as u32)).map_or(0, |at| at.elapsed().as_millis() as u64);
            let rest = estimate(i).saturating_sub(done);
            left += rest;
            if self.started.contains_key(&(i as u32)) {
                longest = longest.max(rest);
            }
        }
        let slots = self.peak.max(1) as u64;
        Some(std::time::Duration::from_millis((left / slots).max(longest)))
    }

    pub fn on_event(&mut self, event: pb::SessionEvent) {
        self.tracker.apply(&event);
        match &event.kind {
            Some(Kind::TestStarted(s)) => {
                self.started.insert(s.test_index, std::time::Instant::now());
            }
            Some(Kind::TestFinished(f)) => {
                self.started.remove(&f.test_index);
            }
            Some(Kind::TestRequeued(r)) => {
                self.started.remove(&r.test_index);
            }
            _ => {}
        }
        self.peak = self.peak.max(self.tracker.running);
        match self.mode {
            // stdout is line-buffered: every event leaves at once.
            Mode::Json => out!("{}", crate::json::event(&self.tracker, &event)),
            Mode::Terminal | Mode::Plain if !self.view.quiet => self.human(&event),
            Mode::Terminal | Mode::Plain => {}
        }
    }

    fn human(&mut self, event: &pb::SessionEvent) {
        let Some(kind) = &event.kind else { return };
        let line = match kind {
            Kind::Created(c) => {
                if self.mode == Mode::Terminal {
                    let bar = ProgressBar::with_draw_target(Some(c.total as u64), ProgressDrawTarget::stderr());
                    let style =
                        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_bar());
                    bar.set_style(style);
                    bar.enable_steady_tick(std::time::Duration::from_millis(120));
                    self.bar = Some(bar);
                }
                None
            }
            Kind::TestFinished(f) => {
                let path = display_path(self.tracker.path(f.test_index));
                let outcome = pb::Outcome::of(f.outcome);
                let duration = f.report.as_ref().map(|r| r.duration_ms).unwrap_or(0);
                if f.r#final {
                    if let Some(bar) = &self.bar {
                        bar.inc(1);
                    }
                    self.cases_done += f.report.as_ref().map_or(0, |r| r.cases.len());
                    let detail = if outcome.is_success() {
                        String::new()
                    } else {
                        let detail = self.tracker.tests.get(f.test_index as usize).map(|t| why(t, false));
                        format!("  ({})", detail.unwrap_or_default())
                    };
                    let color = self.view.color;
                    let mut line =
                        format!("{} [{:>7}] {path}{detail}", label(outcome, color), format_duration(duration));
                    // A warm runner's file: name each case that did not pass under it (a test that
                    // is a single case, as a Rust test is, has said it all already).
                    let cases = f.report.as_ref().map(|r| r.cases.as_slice()).unwrap_or_default();
                    let single = matches!(cases, [c] if c.name == path || path.ends_with(&format!("::{}", c.name)));
                    for c in cases.iter().filter(|_| !single) {
                        let case_outcome = case_outcome(c);
                        if !matches!(case_outcome, pb::Outcome::Passed | pb::Outcome::Skipped) {
                            line.push_str(&format!(
                                "\n{}           {}  {}",
                                label(case_outcome, color),
                                display_path(&c.name),
                                c.message.lines().find(|l| !l.trim().is_empty()).unwrap_or_default()
                            ));
                        }
                    }
                    if self.view.show_output && outcome.is_success() {
                        line.push_str(&passing_output(f.report.as_ref()));
                    }
                    Some(line)
                } else {
                    Some(format!(
                        "{} [{:>7}] {path}  (attempt {} {}; retrying)",
                        paint(self.view.color, "33", "  RETRY"),
                        format_duration(duration),
                        f.attempt,
                        outcome.word()
                    ))
                }
            }
            Kind::TestRequeued(r) => Some(format!(
                "{} {}  (attempt {}: {})",
                paint(self.view.color, "33", "REQUEUE"),
                display_path(self.tracker.path(r.test_index)),
                r.attempt,
                r.reason
            )),
            Kind::TestSpeculated(s) => Some(format!(
                "{} {}  (attempt {} on {} beside attempt {}: {})",
                paint(self.view.color, "33", "  AGAIN"),
                display_path(self.tracker.path(s.test_index)),
                s.attempt,
                s.worker,
                s.running_attempt,
                s.reason
            )),
            Kind::Cancelled(c) => Some(format!("{} {}", paint(self.view.color, "33", "CANCEL "), c.reason)),
            Kind::SetupFinished(s) => {
                let report = s.report.clone().unwrap_or_default();
                let outcome = pb::Outcome::of(report.outcome);
                let what = match (s.reused, outcome.is_success()) {
                    (true, _) => "reused what an earlier setup with the same key made".to_string(),
                    (false, true) => "passed".to_string(),
                    (false, false) => format!("failed ({}); the session's tests there fail", report.message),
                };
                let color = if outcome.is_success() { "36" } else { "31" };
                Some(format!(
                    "{} [{:>7}] setup on {}: {what}",
                    paint(self.view.color, color, "  SETUP"),
                    format_duration(report.duration_ms),
                    s.worker
                ))
            }
            Kind::Finished(_) => {
                if let Some(bar) = self.bar.take() {
                    bar.finish_and_clear();
                }
                None
            }
            Kind::TestStarted(_) | Kind::ResultDiscarded(_) => None,
        };
        if let Some(bar) = &self.bar {
            // Warm runners report cases: count them too (final attempts, as the summary does).
            let cases = if self.cases_done > 0 { format!(", {} cases done", self.cases_done) } else { String::new() };
            let eta = match self.eta() {
                Some(left) => format!(", about {} left", format_duration(left.as_millis() as u64)),
                None => String::new(),
            };
            bar.set_message(format!("{} running{cases}{eta}", self.tracker.running));
        }
        if let Some(line) = line {
            match &self.bar {
                Some(bar) => bar.suspend(|| out!("{line}")),
                None => out!("{line}"),
            }
        }
    }

    /// Stop drawing (before printing anything else).
    pub fn clear(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

fn paint(color: bool, code: &str, text: &str) -> String {
    if color { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_string() }
}

/// `--show-output`: what a passing test printed, and each of its cases that printed something,
/// indented under its line.
fn passing_output(report: Option<&pb::TestReport>) -> String {
    let Some(report) = report else { return String::new() };
    let mut text = String::new();
    let mut block = |title: Option<&str>, output: &[u8]| {
        if output.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        if let Some(title) = title {
            text.push_str(&format!("\n    --- {} ---", display_path(title)));
        }
        for line in output_tail(output, usize::MAX) {
            text.push_str(&format!("\n    {line}"));
        }
    };
    block(None, &report.output);
    for case in &report.cases {
        block(Some(&case.name), &case.output);
    }
    text
}

/// The column a line starts with: an outcome as a short, coloured label (the outcome's name is
/// `pb::Outcome::word`; this is only its look on a line).
fn label(outcome: pb::Outcome, color: bool) -> String {
    let (code, word) = match outcome {
        pb::Outcome::Passed => ("32", "   PASS"),
        pb::Outcome::Flaky => ("33", "  FLAKY"),
        pb::Outcome::Failed => ("31", "   FAIL"),
        pb::Outcome::TimedOut => ("31", "TIMEOUT"),
        pb::Outcome::Lost => ("31", "   LOST"),
        pb::Outcome::Cancelled => ("33", " CANCEL"),
        pb::Outcome::Error => ("31", "  ERROR"),
        pb::Outcome::Skipped => ("36", "   SKIP"),
        pb::Outcome::Unspecified => ("31", "  ?????"),
    };
    paint(color, code, word)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: Kind) -> pb::SessionEvent {
        pb::SessionEvent { seq: 0, time_ms: 0, kind: Some(kind) }
    }

    #[test]
    fn the_eta_is_the_work_left_over_the_slots_and_no_less_than_the_longest_running() {
        let view = View { mode: Mode::Plain, color: false, quiet: true, show_output: false };
        let mut live = Live::new(view, "s");
        let paths: Vec<String> = (0..4).map(|i| format!("t{i}")).collect();
        live.on_event(event(Kind::Created(pb::SessionCreated { name: "s".into(), total: 4, test_paths: paths })));
        assert_eq!(live.eta(), None, "no estimates, no ETA");
        live.set_estimates(vec![8_000, 2_000, 2_000, 60_000]);
        for test_index in [0, 1] {
            live.on_event(event(Kind::TestStarted(pb::TestStartedEvent {
                test_index,
                attempt: 1,
                worker: "w".into(),
            })));
        }
        let finished = pb::TestFinishedEvent {
            test_index: 1,
            attempt: 1,
            r#final: true,
            outcome: pb::Outcome::Passed as i32,
            ..Default::default()
        };
        live.on_event(event(Kind::TestFinished(finished)));
        // 8 + 2 + 60 s left (less a moment) over the 2 slots seen.
        let eta = live.eta().expect("an ETA").as_millis();
        assert!((34_000..=35_000).contains(&eta), "{eta}");
        // With one long test running, no sooner than it ends.
        live.set_estimates(vec![8_000, 2_000, 0, 0]);
        assert!(live.eta().expect("an ETA").as_millis() > 7_000);
    }
}
