//! The one process lifecycle. Every process the worker starts (a test, a warm runner, a build,
//! a Go test binary and its test2json, a listing) goes through [`Process`]:
//!
//! - in its own process group, stdin closed, killed when dropped, and (when configured) killed
//!   by the kernel if the worker dies outright ([`die_with_worker`]);
//! - stdout and stderr on one pipe, interleaved as written, captured head-and-tail up to a limit
//!   ([`Process::capture`]), or only stderr captured, or pipes the caller gives;
//! - a timeout and a cancel that stop the whole group: SIGTERM, then SIGKILL after a grace
//!   period ([`Running::wait_with`]); whatever the main process leaves running in its group is
//!   killed with it ([`Running::finish`], or when the [`Running`] is dropped);
//! - registered while it runs, so that [`kill_all_running`] can kill every group at once.
//!
//! It must not know what runs (frameworks decide that) nor build reports (see `report`).

use std::collections::HashSet;
use std::ffi::OsStr;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::lock::lock;
use super::output::Capture;

/// How the worker treats the processes of tests.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Output kept per test (head + tail).
    pub output_limit: usize,
    /// Time between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// Have the kernel kill each test when the worker dies ([`die_with_worker`]).
    pub die_with_worker: bool,
}

/// How a process's run ended.
#[derive(Debug)]
pub enum Ending {
    /// It exited on its own.
    Exited(ExitStatus),
    /// It was stopped after this timeout.
    TimedOut(Duration),
    /// It was stopped because its job was cancelled.
    Cancelled,
    /// Its end could not be seen (waiting failed): why.
    Lost(String),
}

/// Where the process's output goes besides the caller's own pipes.
#[derive(Clone, Copy)]
enum Capturing {
    Nothing,
    /// stdout and stderr on one pipe, this many bytes kept.
    Both(usize),
    /// Only stderr, this many bytes kept.
    Stderr(usize),
}

/// A process to start.
pub struct Process {
    cmd: Command,
    capturing: Capturing,
}

impl Process {
    /// `program` in `dir`, stdin closed, in a process group of its own, killed when dropped, and
    /// with the kernel guard when `die_with_worker`.
    pub fn new(program: impl AsRef<OsStr>, dir: &Path, die_with_worker: bool) -> Self {
        let mut cmd = Command::new(program);
        cmd.current_dir(dir).stdin(Stdio::null()).process_group(0).kill_on_drop(true);
        if die_with_worker {
            self::die_with_worker(&mut cmd);
        }
        Process { cmd, capturing: Capturing::Nothing }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.cmd.arg(arg);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.cmd.env(key, value);
        self
    }

    /// Leave `key` out of its environment.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.cmd.env_remove(key);
        self
    }

    pub fn envs<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        self.cmd.envs(vars);
        self
    }

    pub fn stdin(mut self, stdin: impl Into<Stdio>) -> Self {
        self.cmd.stdin(stdin);
        self
    }

    pub fn stdout(mut self, stdout: impl Into<Stdio>) -> Self {
        self.cmd.stdout(stdout);
        self
    }

    pub fn stderr(mut self, stderr: impl Into<Stdio>) -> Self {
        self.cmd.stderr(stderr);
        self
    }

    /// stdout and stderr on one pipe (interleaved as written), `limit` bytes kept.
    pub fn capture(mut self, limit: usize) -> Self {
        self.capturing = Capturing::Both(limit);
        self
    }

    /// stderr captured, `limit` bytes kept (stdout as set).
    pub fn capture_stderr(mut self, limit: usize) -> Self {
        self.capturing = Capturing::Stderr(limit);
        self
    }

    /// Start it.
    pub fn spawn(mut self) -> std::io::Result<Running> {
        let (reader, limit) = match self.capturing {
            Capturing::Nothing => (None, 0),
            Capturing::Both(limit) => {
                let (reader, writer) = std::io::pipe()?;
                self.cmd.stdout(writer.try_clone()?).stderr(writer);
                (Some(reader), limit)
            }
            Capturing::Stderr(limit) => {
                let (reader, writer) = std::io::pipe()?;
                self.cmd.stderr(writer);
                (Some(reader), limit)
            }
        };
        let spawned = self.cmd.spawn();
        // The command holds the pipe's write ends; drop them so the reader sees EOF.
        drop(self.cmd);
        let child = spawned?;
        let pgid = child.id().ok_or_else(|| std::io::Error::other("the process vanished at start"))? as i32;
        let group = GroupGuard::new(pgid);
        let (capture, reader) = match reader {
            Some(reader) => {
                let capture = Arc::new(Mutex::new(Capture::new(limit)));
                let task = tokio::spawn(read_output(OwnedFd::from(reader), Arc::clone(&capture)));
                (Some(capture), Some(task))
            }
            None => (None, None),
        };
        Ok(Running { child, group, capture, reader })
    }

    /// Run it to its end, stdout and stderr collected, for short questions (`go env`, a test
    /// binary's list). Whatever it leaves in its group is killed.
    pub async fn output(mut self, timeout: Duration) -> Result<std::process::Output, Failure> {
        self.cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let child = self.cmd.spawn().map_err(Failure::Start)?;
        let _group = child.id().map(|pid| GroupGuard::new(pid as i32));
        match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Ok(Ok(output)) => Ok(output),
            Ok(Err(e)) => Err(Failure::Wait(e)),
            Err(_) => Err(Failure::TimedOut),
        }
    }
}

/// Why [`Process::output`] has no answer.
#[derive(Debug)]
pub enum Failure {
    Start(std::io::Error),
    Wait(std::io::Error),
    TimedOut,
}

/// What a process wrote, once it is done.
pub struct Output {
    pub bytes: Vec<u8>,
    pub dropped: u64,
    /// False when a process outside the group kept the pipe open past the drain time: `bytes` is
    /// what was read until then.
    pub complete: bool,
}

/// A started process. Dropping it kills its whole group.
pub struct Running {
    child: Child,
    group: GroupGuard,
    capture: Option<Arc<Mutex<Capture>>>,
    reader: Option<JoinHandle<()>>,
}

impl Running {
    /// Its process group (its pid).
    pub fn pgid(&self) -> i32 {
        self.group.0
    }

    /// The child, for its piped stdout.
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Wait for the main process to exit.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// Wait until the process exits, `timeout` passes or `cancel` fires; in the last two cases
    /// stop its group ([`Running::stop`]). `what` names it in a message ("the test process").
    pub async fn wait_with(
        &mut self,
        timeout: Option<Duration>,
        cancel: &CancellationToken,
        grace: Duration,
        what: &str,
    ) -> Ending {
        let limit = async {
            match timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        let ending = tokio::select! {
            status = self.child.wait() => match status {
                Ok(status) => return Ending::Exited(status),
                Err(e) => return Ending::Lost(format!("cannot wait for {what}: {e}")),
            },
            () = limit => Ending::TimedOut(timeout.unwrap_or_default()),
            () = cancel.cancelled() => Ending::Cancelled,
        };
        self.stop(grace).await;
        ending
    }

    /// Stop the whole group: SIGTERM, then SIGKILL after `grace` unless the main process exits.
    pub async fn stop(&mut self, grace: Duration) {
        let child = &mut self.child;
        kill_group(self.group.0, grace, async {
            let _ = child.wait().await;
        })
        .await;
    }

    /// Kill the whole group now (SIGKILL): what the main process left running goes too.
    pub fn kill_group(&self) {
        let _ = killpg(Pid::from_raw(self.group.0), Signal::SIGKILL);
    }

    /// What it wrote so far, emptying the capture (which keeps its limit).
    pub fn take_output(&self) -> Vec<u8> {
        match &self.capture {
            Some(capture) => {
                let mut capture = lock(capture);
                let limit = capture.limit();
                std::mem::replace(&mut *capture, Capture::new(limit)).finish().0
            }
            None => Vec::new(),
        }
    }

    /// Forget what it wrote so far.
    pub fn clear_output(&self) {
        let _ = self.take_output();
    }

    /// Wait up to `limit` for its output pipe to close (its writers have exited): for a
    /// process's last words after it died. False if the pipe is still open.
    pub async fn settle_output(&mut self, limit: Duration) -> bool {
        let Some(reader) = self.reader.as_mut() else { return true };
        if tokio::time::timeout(limit, reader).await.is_ok() {
            self.reader = None;
            return true;
        }
        false
    }

    /// The process has ended: kill what is left of its group, then read its output to the end,
    /// waiting at most `drain` for descendants that escaped the group with the pipe open.
    pub async fn finish(mut self, drain: Duration) -> Output {
        self.kill_group();
        let complete = self.settle_output(drain).await;
        if let Some(reader) = self.reader.take() {
            reader.abort();
        }
        let (bytes, dropped) = match self.capture.take() {
            Some(capture) => std::mem::replace(&mut *lock(&capture), Capture::new(0)).finish(),
            None => (Vec::new(), 0),
        };
        Output { bytes, dropped, complete }
    }
}

impl Drop for Running {
    /// The group goes with [`GroupGuard`]; the output reader goes too, so that a descendant that
    /// escaped the group and holds the pipe open cannot keep it (and its buffer) alive.
    fn drop(&mut self) {
        if let Some(reader) = self.reader.take() {
            reader.abort();
        }
    }
}

/// Read a process's output pipe into `capture` until EOF.
async fn read_output(fd: OwnedFd, capture: Arc<Mutex<Capture>>) {
    let Ok(mut pipe) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) else {
        lock(&capture).push(b"[testgrid: cannot read the test's output pipe]\n");
        return;
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => lock(&capture).push(&buf[..n]),
        }
    }
}

/// Kill a whole process group: SIGTERM, then SIGKILL after `grace` unless `exited` resolves.
async fn kill_group(pgid: i32, grace: Duration, exited: impl Future<Output = ()>) {
    let _ = killpg(Pid::from_raw(pgid), Signal::SIGTERM);
    if tokio::time::timeout(grace, exited).await.is_err() {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
}

/// Process groups running now, so that a worker that must exit at once can kill them.
static RUNNING_GROUPS: LazyLock<Mutex<HashSet<i32>>> = LazyLock::new(|| Mutex::new(HashSet::new()));

/// Kill every running test's process group now (SIGKILL). For a process that must exit at once
/// (a second Ctrl-C) and must not leave tests behind.
pub fn kill_all_running() {
    for pgid in lock(&RUNNING_GROUPS).drain() {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
}

/// A running process group: killed (SIGKILL) and forgotten when this is dropped, so that no
/// early return, cancel or panic leaves the group running or its id registered.
struct GroupGuard(i32);

impl GroupGuard {
    fn new(pgid: i32) -> Self {
        lock(&RUNNING_GROUPS).insert(pgid);
        GroupGuard(pgid)
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.0), Signal::SIGKILL);
        lock(&RUNNING_GROUPS).remove(&self.0);
    }
}

/// A test must not outlive a worker that is killed outright (`kill -9`, OOM): its attempt is
/// requeued elsewhere, and the orphan would run it twice. The kernel sends the test SIGKILL when
/// the thread that started it dies; that thread is a tokio runtime worker, which lives as long
/// as the worker process (executors never spawn from the blocking pool, whose threads retire).
///
/// The price: a `pre_exec` hook makes the standard library fork instead of `posix_spawn`, about
/// 0.9 ms more per test for a worker of a few tens of MiB (docs/benchmarks.md).
#[expect(unsafe_code, reason = "pre_exec runs between fork and exec; see the SAFETY note")]
fn die_with_worker(cmd: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // calls are allowed: it makes two system calls (prctl, getppid) and allocates nothing.
    let worker = Pid::this();
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
            // The worker may have died between fork and prctl; then nobody will signal us.
            if nix::unistd::getppid() != worker {
                // An errno, not a message: allocating here could deadlock on the allocator's lock.
                return Err(std::io::Error::from(nix::errno::Errno::ESRCH));
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Process {
        Process::new("sh", Path::new("/"), false).arg("-c").arg(script)
    }

    #[tokio::test]
    async fn output_is_captured_from_both_streams_and_the_group_is_forgotten() {
        let mut running = sh("echo out; echo err >&2").capture(1024).spawn().expect("spawn");
        let pgid = running.pgid();
        assert!(lock(&RUNNING_GROUPS).contains(&pgid));
        let ending = running.wait_with(None, &CancellationToken::new(), Duration::from_secs(1), "sh").await;
        assert!(matches!(ending, Ending::Exited(s) if s.success()), "{ending:?}");
        let output = running.finish(Duration::from_secs(2)).await;
        assert_eq!(output.bytes, b"out\nerr\n");
        assert!(output.complete);
        assert!(!lock(&RUNNING_GROUPS).contains(&pgid));
    }

    #[tokio::test]
    async fn a_timeout_stops_the_group_and_a_cancel_too() {
        let mut running = sh("sleep 30").spawn().expect("spawn");
        let ending = running
            .wait_with(Some(Duration::from_millis(50)), &CancellationToken::new(), Duration::from_secs(1), "sh")
            .await;
        assert!(matches!(ending, Ending::TimedOut(t) if t == Duration::from_millis(50)), "{ending:?}");
        let cancel = CancellationToken::new();
        cancel.cancel();
        let mut running = sh("sleep 30").spawn().expect("spawn");
        let ending = running.wait_with(None, &cancel, Duration::from_secs(1), "sh").await;
        assert!(matches!(ending, Ending::Cancelled), "{ending:?}");
    }
}
