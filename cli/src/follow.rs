//! Following a session to its end, for `run` and `watch`: the live view while it runs, then
//! the summary, the JUnit report, and the exit code its outcomes call for.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::args::OutputArgs;
use crate::error::{Error, exit};
use crate::grid::Grid;
use crate::live::{Live, Mode, View};
use crate::report;

/// Watch a session to its end, print the summary, write the JUnit report, and return the exit
/// code. `submitted`: the tests of a session this client just submitted (empty for `watch`), so
/// that even a session lost before its first event gets a report; `estimates`: their estimated
/// durations (ms, by index; empty: none), for the live view's ETA.
pub async fn follow(
    grid: &Grid,
    session: &str,
    submitted: &[String],
    estimates: Vec<u64>,
    view: View,
    output: &OutputArgs,
    interrupted: &AtomicBool,
) -> Result<u8, Error> {
    let mode = view.mode;
    let mut live = Live::new(view, session);
    live.tracker.expect(submitted);
    live.set_estimates(estimates);
    let dir = output.artifacts_dir.clone().unwrap_or_else(|| crate::artifacts::default_dir(session));
    crate::json::set_artifacts_dir(&dir);
    let fetcher = crate::artifacts::Fetcher::start(grid.channel(), dir);
    let watched = grid
        .watch(session, 1, !submitted.is_empty(), |event| {
            fetcher.on_event(&event, &live.tracker);
            live.on_event(event)
        })
        .await;
    live.clear();
    let dir = fetcher.dir().to_path_buf();
    let fetched = fetcher.finish().await;
    let tracker = &live.tracker;
    let artifacts = report::artifacts(tracker, &dir, &fetched, 20);
    if mode == Mode::Json && !fetched.failed.is_empty() {
        err!("testgrid: {} artifacts were not brought back: {}", fetched.failed.len(), fetched.failed[0]);
    }
    let list_artifacts = || {
        if mode != Mode::Json && !artifacts.is_empty() {
            out!("{}", artifacts.trim_end());
        }
    };
    if let Err(e) = watched {
        // What did finish is still worth a summary and a report; the rest are named as unknown.
        if !tracker.tests.is_empty() {
            if mode != Mode::Json {
                out!("{}", report::summary(tracker, 15).trim_end());
            }
            list_artifacts();
            if let Some(path) = &output.junit {
                report::write_junit(tracker, path, &dir)?;
            }
        }
        return Err(e);
    }
    if mode == Mode::Json {
        err!("{}", report::summary(tracker, 0).trim_end().lines().find(|l| l.starts_with("Summary")).unwrap_or(""));
    } else {
        out!("{}", report::summary(tracker, 15).trim_end());
    }
    list_artifacts();
    // After the summary, so that a report that cannot be written never hides the results.
    if let Some(path) = &output.junit {
        report::write_junit(tracker, path, &dir)?;
        if mode != Mode::Json {
            out!("  JUnit report: {}", path.display());
        }
    }
    if interrupted.load(Ordering::SeqCst) {
        return Ok(exit::INTERRUPTED);
    }
    Ok(if tracker.all_passed() { exit::PASSED } else { exit::FAILED })
}
