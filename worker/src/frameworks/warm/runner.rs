//! One warm runner process: started (its files written to a private folder, a Unix socket for
//! the protocol, its own stdout and stderr captured for diagnostics), spoken to line by line,
//! stopped, retired, and its memory read.
//!
//! It must not decide which runner serves which job (the executor in `mod.rs` does).

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::UnixListener;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use super::kind::Kind;
use super::protocol::{self, FromRunner};
use crate::exec::exit::Exit;
use crate::exec::{Process, Running};
use crate::job::Job;

/// How long a runner may take to start, load its framework and the project's config, and connect.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// What the runner's own stdout and stderr keep (for "runner crashed" diagnostics).
const RUNNER_LOG_LIMIT: usize = 64 * 1024;

/// How long a runner may take to run its session-end hooks when it is retired.
const RETIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// A started runner, ready for files.
pub struct Runner {
    pub session: String,
    pub kind: Kind,
    /// Its process; dropping it kills the runner's group with whatever the tests started.
    process: Running,
    lines: Lines<BufReader<OwnedReadHalf>>,
    writer: OwnedWriteHalf,
    /// Files asked for so far.
    pub next_unit: u64,
    /// When it finished its last file (for reaping idle runners).
    pub idle_since: Instant,
    _dir: tempfile::TempDir,
}

/// Start `kind`'s runner with `program` (the Python or the Node) for `job`'s session in `slot`,
/// in the project's folder, and wait until it is ready.
pub async fn start(kind: Kind, program: &str, job: &Job, slot: u32, die_with_worker: bool) -> Result<Runner, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("cannot create a runner directory: {e}"))?;
    let (file, text) = kind.runner();
    for (name, text) in std::iter::once(&(file, text)).chain(kind.support_files()) {
        std::fs::write(dir.path().join(name), text)
            .map_err(|e| format!("cannot write the {} runner: {e}", kind.name()))?;
    }
    let socket = dir.path().join("runner.sock");
    let listener = UnixListener::bind(&socket).map_err(|e| format!("cannot open the runner socket: {e}"))?;
    let (process, shown) = command(kind, program, job, slot, dir.path(), file, die_with_worker);
    let mut process = process
        .env("TESTGRID_RUNNER_SOCKET", &socket)
        .capture(RUNNER_LOG_LIMIT)
        .spawn()
        .map_err(|e| format!("cannot start `{shown}`: {e}; {}", kind.start_fix()))?;
    let connected = tokio::select! {
        accepted = tokio::time::timeout(START_TIMEOUT, listener.accept()) => accepted.ok().and_then(Result::ok),
        _ = process.wait() => None,
    };
    // Why a runner did not start: its last words, and the usual fix.
    let failure =
        |tail: String| format!("the {} runner did not start{}:\n{tail}", kind.name(), kind.start_hint(&tail, program));
    let Some((stream, _)) = connected else {
        process.kill_group();
        // Let the reader take in what the runner said before it died.
        process.settle_output(Duration::from_secs(1)).await;
        return Err(failure(String::from_utf8_lossy(&process.take_output()).into_owned()));
    };
    let (read, writer) = stream.into_split();
    let mut runner = Runner {
        session: job.assignment.session_id.clone(),
        kind,
        process,
        lines: BufReader::new(read).lines(),
        writer,
        next_unit: 0,
        idle_since: Instant::now(),
        _dir: dir,
    };
    match tokio::time::timeout(START_TIMEOUT, runner.lines.next_line()).await {
        Ok(Ok(Some(line))) if matches!(protocol::parse(&line), Ok(FromRunner::Ready)) => Ok(runner),
        _ => {
            // It connected, then gave up (it could not load its framework, say): wait for it
            // to finish saying why; dropping the runner kills what is left of it.
            let _ = tokio::time::timeout(Duration::from_secs(2), runner.process.wait()).await;
            runner.process.settle_output(Duration::from_secs(1)).await;
            Err(failure(runner.take_log()))
        }
    }
}

/// The runner's process and how it is shown in messages.
fn command(
    kind: Kind,
    program: &str,
    job: &Job,
    slot: u32,
    dir: &Path,
    file: &str,
    die_with_worker: bool,
) -> (Process, String) {
    // A runner works in its project's folder, so that the project's own configuration applies.
    let process = Process::new(program, &job.project_dir(), die_with_worker).envs(job.runner_env(slot));
    match kind {
        Kind::Pytest => {
            let mut pythonpath = dir.display().to_string();
            if let Some(existing) = job.env.get("PYTHONPATH").cloned().or_else(|| std::env::var("PYTHONPATH").ok()) {
                pythonpath = format!("{pythonpath}:{existing}");
            }
            let process = process.args(["-m", "pytest", "-p", "testgrid_pytest", "-q"]).env("PYTHONPATH", pythonpath);
            (process, format!("{program} -m pytest"))
        }
        Kind::Vitest | Kind::Jest => (process.arg(dir.join(file)), format!("{program} {file}")),
    }
}

impl Runner {
    /// Its process group.
    pub fn pgid(&self) -> i32 {
        self.process.pgid()
    }

    /// Send one request line.
    pub async fn send(&mut self, line: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(line).await
    }

    /// The next line it sends; `None` once it has closed the socket.
    pub async fn next_line(&mut self) -> std::io::Result<Option<String>> {
        self.lines.next_line().await
    }

    /// Forget what it printed so far: crash diagnostics show this file's last words only.
    pub fn clear_log(&self) {
        self.process.clear_output();
    }

    /// What it printed since the last [`Runner::clear_log`], emptying it.
    pub fn take_log(&self) -> String {
        String::from_utf8_lossy(&self.process.take_output()).into_owned()
    }

    /// Kill it now (timeout, cancel): its process group goes.
    pub async fn stop(mut self, grace: Duration) {
        self.process.stop(grace).await;
    }

    /// It died mid-file: how it ended (waiting a little for it), if that can be known.
    pub async fn exit(&mut self) -> Option<Exit> {
        let status = tokio::time::timeout(Duration::from_secs(5), self.process.wait()).await.ok()?.ok()?;
        Some(Exit::of(status))
    }

    /// Resident memory of its main process.
    pub fn rss_bytes(&self) -> u64 {
        rss_bytes(self.pgid())
    }
}

/// Ask a runner to finish its session (so `pytest_sessionfinish`, `--junitxml` and coverage
/// plugins write their files), then kill whatever is left of its process group.
pub async fn retire(mut runner: Runner, grace: Duration) {
    // A runner that can no longer be asked is killed below all the same.
    let _ = runner.writer.write_all(protocol::STOP_REQUEST).await;
    let _ = runner.writer.shutdown().await;
    let finished = tokio::time::timeout(RETIRE_TIMEOUT, runner.process.wait()).await.is_ok();
    if !finished {
        runner.process.stop(grace).await;
    }
}

/// Resident memory of a process, from /proc (0 when unknown).
fn rss_bytes(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_of_this_process_is_known_and_of_nobody_is_zero() {
        assert!(rss_bytes(std::process::id() as i32) > 0);
        assert_eq!(rss_bytes(i32::MAX), 0);
    }
}
