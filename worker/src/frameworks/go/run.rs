//! Running a compiled test binary: in the package's folder, as `go test` runs it, in its own
//! process group, its output piped through `test2json` (the documented converter, in a group of
//! its own so that it can still flush after the tests are killed), whose events feed
//! [`GoRun`]. When the run stopped early, the binary's own list (`-test.list`) names the tests
//! never reached.
//!
//! It must not parse events (see `parse.rs`) or compile (see `compile.rs`).

use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::{Duration, Instant};

use testgrid_proto as pb;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::parse::{GoRun, Line, parse_line};
use super::target::{Target, is_runnable_name, run_pattern};
use super::toolchain::Toolchain;
use crate::exec::{Ending, Process, Settings, report};
use crate::job::Job;

/// How long `BIN -test.list` may take (it runs `TestMain` and `init`).
const LIST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long test2json may take to flush after the binary's group is gone; longer only when a
/// process that escaped the group holds the pipe open.
const DRAIN: Duration = Duration::from_secs(2);

/// A line of test2json output longer than this is dropped (test2json splits long test output).
const MAX_LINE: usize = 1024 * 1024;

/// What test2json's own stderr keeps.
const CONVERTER_LOG_LIMIT: usize = 8 * 1024;

/// Run the test binary of `target` through test2json and turn its events into cases.
#[expect(clippy::too_many_arguments, reason = "one run's inputs, all different")]
pub async fn run_binary(
    settings: &Settings,
    slot: u32,
    job: &Job,
    target: &Target,
    tools: &Toolchain,
    binary: &Path,
    args: &[String],
    started: Instant,
    cancel: CancellationToken,
) -> pb::TestReport {
    let error = |message: String| report::simple(pb::Outcome::Error, message, started);
    let Some(binary_path) = binary.to_str() else {
        return error(format!("the test binary's path {} is not UTF-8; set TMPDIR to a plain path", binary.display()));
    };
    let dir = job.root.join(&target.pkg);
    let pipes = (|| Ok::<_, std::io::Error>((std::io::pipe()?, std::io::pipe()?)))();
    let ((tests_out, tests_in), (events_out, events_in)) = match pipes {
        Ok(pipes) => pipes,
        Err(e) => return error(format!("cannot create a pipe: {e}")),
    };
    let tests_in2 = match tests_in.try_clone() {
        Ok(w) => w,
        Err(e) => return error(format!("cannot create a pipe: {e}")),
    };

    // test2json first: its own group, reading the binary's output until EOF.
    let converter = Process::new(&tools.test2json[0], &job.root, settings.die_with_worker)
        .args(&tools.test2json[1..])
        .args(["-t", "-p", &target.pkg])
        .envs(&job.env)
        .stdin(tests_out)
        .stdout(events_in)
        .capture_stderr(CONVERTER_LOG_LIMIT)
        .spawn();
    let mut converter = match converter {
        Ok(running) => running,
        Err(e) => return error(format!("cannot start `{}`: {e}", tools.test2json.join(" "))),
    };

    // The session's test flags first: a unit that is one test names it last, and the last
    // `-test.run` is the one that counts.
    let mut tests = Process::new(binary_path, &dir, settings.die_with_worker)
        .arg(tools.verbose_flag)
        .arg("-test.paniconexit0")
        .args(args);
    if let Some(case) = &target.case {
        tests = tests.arg("-test.run").arg(run_pattern(case));
    }
    let tests = tests.envs(job.test_env(slot)).stdout(tests_in2).stderr(tests_in).spawn();
    let mut tests = match tests {
        Ok(running) => running,
        Err(e) => return error(format!("cannot start the test binary in {}: {e}", dir.display())),
    };

    let (tx, mut rx) = mpsc::channel(1024);
    let events = tokio::spawn(read_events(OwnedFd::from(events_out), tx));
    let mut run = GoRun::new(&target.pkg, settings.output_limit);
    run.unit.keep_passing = job.runner.keep_passing_output;
    let mut events_done = false;
    let ending = {
        let wait = tests.wait_with(job.timeout, &cancel, settings.kill_grace, "the test binary");
        tokio::pin!(wait);
        loop {
            tokio::select! {
                ending = &mut wait => break ending,
                line = rx.recv(), if !events_done => match line {
                    Some(line) => run.line(line),
                    None => events_done = true,
                },
            }
        }
    };
    // Whatever the tests left running goes, and with it the pipe's last writers.
    drop(tests);
    let cut = !events_done && tokio::time::timeout(DRAIN, feed(&mut rx, &mut run)).await.is_err();
    if cut {
        // A process outside the group holds the pipe: stop test2json, keep what it said.
        converter.kill_group();
        let _ = tokio::time::timeout(Duration::from_secs(1), feed(&mut rx, &mut run)).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), converter.wait()).await;
    events.abort();
    let log = String::from_utf8_lossy(&converter.finish(Duration::from_secs(1)).await.bytes).into_owned();
    if !log.trim().is_empty() {
        run.package_output.push(format!("[test2json] {log}").as_bytes());
    }
    if cut {
        run.package_output
            .push(b"\n[testgrid: output cut short: a process outside the test's group kept its output pipe open]\n");
    }

    // Name the tests a crash or timeout kept from running, from the binary's own list.
    let stopped_early = match &ending {
        Ending::TimedOut(_) => true,
        Ending::Exited(status) => !run.running.is_empty() || !matches!(status.code(), Some(0 | 1)),
        Ending::Cancelled | Ending::Lost(_) => false,
    };
    let listed = if stopped_early && run.any_started {
        let session_run = args.iter().rev().find_map(|a| a.strip_prefix("-test.run=")).map(str::to_string);
        let pattern = target.case.as_deref().map(|c| run_pattern(c.split('/').next().unwrap_or(c))).or(session_run);
        tokio::select! {
            listed = list_tests(settings, job, binary_path, &dir, pattern.as_deref().unwrap_or(".*")) => listed,
            () = cancel.cancelled() => None,
        }
    } else {
        None
    };
    run.finish(ending, listed, target.case.as_deref(), started)
}

/// Feed the rest of the events to `run`.
async fn feed(rx: &mut mpsc::Receiver<Line>, run: &mut GoRun) {
    while let Some(line) = rx.recv().await {
        run.line(line);
    }
}

/// The top-level tests, examples and fuzz targets the binary would run (`-test.list`).
async fn list_tests(settings: &Settings, job: &Job, binary: &str, dir: &Path, pattern: &str) -> Option<Vec<String>> {
    let query = Process::new(binary, dir, settings.die_with_worker).arg("-test.list").arg(pattern).envs(&job.env);
    let out = query.output(LIST_TIMEOUT).await.ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Some(text.lines().map(str::trim).filter(|l| is_runnable_name(l)).map(str::to_string).collect())
}

/// Read test2json's stdout into lines until EOF.
async fn read_events(fd: OwnedFd, tx: mpsc::Sender<Line>) {
    let Ok(mut pipe) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) else {
        // Nobody to tell if the receiver is gone too.
        let _ = tx.send(Line::Text("[testgrid: cannot read test2json's output pipe]\n".into())).await;
        return;
    };
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut overlong = false;
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        let mut start = 0;
        while let Some(end) = pending[start..].iter().position(|&b| b == b'\n') {
            let line = &pending[start..start + end];
            if !overlong && !line.is_empty() && tx.send(parse_line(line)).await.is_err() {
                return;
            }
            overlong = false;
            start += end + 1;
        }
        pending.drain(..start);
        if pending.len() > MAX_LINE {
            pending.clear();
            if !overlong {
                overlong = true;
                let note = Line::Text("[testgrid: dropped an over-long line of test2json output]\n".into());
                if tx.send(note).await.is_err() {
                    return;
                }
            }
        }
    }
    if !pending.is_empty() && !overlong {
        // The last line; a receiver that is gone has stopped listening on purpose.
        let _ = tx.send(parse_line(&pending)).await;
    }
}
