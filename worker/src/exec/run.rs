//! A test that is one process: run it to its end and turn that end into the unit's report
//! (exit code, signal, timeout, cancel, output). Shared by shell commands and Rust test binaries.
//!
//! It must not choose what runs: callers build the [`Process`].

use std::path::Path;
use std::time::{Duration, Instant};

use testgrid_proto as pb;
use tokio_util::sync::CancellationToken;

use super::exit::test_outcome;
use super::process::{Ending, Process, Settings};
use super::report;

/// How long to keep reading output after the test's process group is gone, for descendants that
/// escaped into their own group with the pipe still open.
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

/// Run `process` (shown as `shown`, started in `dir`) as one test, with the job's `timeout` and
/// `cancel`, and report how it ended.
pub async fn test_process(
    process: Process,
    shown: &str,
    dir: &Path,
    timeout: Option<Duration>,
    cancel: CancellationToken,
    settings: &Settings,
) -> pb::TestReport {
    let started = Instant::now();
    let mut running = match process.capture(settings.output_limit).spawn() {
        Ok(running) => running,
        Err(e) => {
            return report::simple(
                pb::Outcome::Error,
                format!("cannot start `{shown}` in {}: {e}", dir.display()),
                started,
            );
        }
    };
    let ending = running.wait_with(timeout, &cancel, settings.kill_grace, "the test process").await;
    let duration_ms = started.elapsed().as_millis() as u64;
    // Normally the pipe is at EOF once the group is dead; a process that escaped the group
    // (setsid) may hold it open, and then what was read so far is what we report.
    let mut output = running.finish(OUTPUT_DRAIN).await;
    if !output.complete {
        output.bytes.extend_from_slice(
            b"\n[testgrid: output cut short: a process outside the test's group kept its output pipe open]\n",
        );
    }
    let (outcome, exit_code, signal, message) = match ending {
        Ending::TimedOut(limit) => (
            pb::Outcome::TimedOut,
            None,
            None,
            format!("killed after the {} timeout", humantime::format_duration(limit)),
        ),
        Ending::Cancelled => (pb::Outcome::Cancelled, None, None, "cancelled".to_string()),
        Ending::Lost(why) => (pb::Outcome::Error, None, None, why),
        Ending::Exited(status) => test_outcome(status),
    };
    pb::TestReport {
        outcome: outcome as i32,
        exit_code,
        signal,
        duration_ms,
        output: output.bytes,
        output_dropped_bytes: output.dropped,
        message,
        cases: Vec::new(),
        artifacts: Vec::new(),
    }
}
