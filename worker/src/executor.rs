//! How a slot runs one assignment. [`Executor`] is the seam: [`ProcessExecutor`] starts one
//! child process per test; warm runners (one long-lived framework process per slot, reporting
//! per-case results) implement the same trait.
//!
//! A test runs as `sh -c COMMAND` (or, for a plain program and arguments, directly: see
//! [`crate::command`]) in the workspace root, in its own process group, with stdout
//! and stderr on one pipe (interleaved as written), stdin closed. On timeout or cancel the whole
//! group gets SIGTERM, then SIGKILL after a grace period; when the test's main process exits,
//! whatever it left running in its group is killed too.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use testgrid_proto as pb;
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use crate::output::Capture;
use testgrid_proto::frameworks::{Framework, Runner};

/// One assignment as the executor sees it.
#[derive(Clone, Debug)]
pub struct Job {
    pub assignment: pb::AssignmentRef,
    pub path: String,
    pub command: String,
    pub env: BTreeMap<String, String>,
    pub timeout: Option<Duration>,
    /// How the session's tests run: framework, isolation and the framework's options.
    pub runner: Runner,
    /// Where the test runs, when not the workspace root (a Rust test binary runs in its
    /// package's folder, a Go test in its package's).
    pub dir: Option<PathBuf>,
}

/// Picks each job's executor from its session's framework and isolation.
pub struct Executors {
    pub process: std::sync::Arc<ProcessExecutor>,
    pub warm: crate::warm::WarmExecutor,
    pub cargo: crate::cargo::CargoExecutor,
    pub go: crate::gotest::GoExecutor,
}

impl Executor for Executors {
    async fn run(&self, slot: u32, job: &Job, cancel: CancellationToken) -> pb::TestReport {
        match job.runner.framework {
            // `file` and `test` isolation get a fresh runner per unit (see `WarmExecutor`).
            Framework::Pytest | Framework::Vitest | Framework::Jest => self.warm.run(slot, job, cancel).await,
            // A process per test whatever the isolation: Rust tests start in a millisecond.
            Framework::Cargo => self.cargo.run(slot, job, cancel).await,
            // Every isolation: a Go package's tests share one test binary, as under `go test`.
            Framework::Go => self.go.run(slot, job, cancel).await,
            Framework::Shell | Framework::Custom => self.process.run(slot, job, cancel).await,
        }
    }
}

/// Runs jobs. `run` must end soon after `cancel` fires, and report `Cancelled` then. `slot`
/// says which of the worker's slots runs the job, for executors that keep a process per slot.
pub trait Executor: Send + Sync + 'static {
    fn run(&self, slot: u32, job: &Job, cancel: CancellationToken) -> impl Future<Output = pb::TestReport> + Send;
}

/// Settings of the process executor.
#[derive(Clone, Debug)]
pub struct ProcessExecutor {
    /// The workspace root: tests run here.
    pub root: PathBuf,
    /// Output kept per test (head + tail).
    pub output_limit: usize,
    /// Time between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// Have the kernel kill each test when the worker dies ([`die_with_worker`]).
    pub die_with_worker: bool,
}

impl ProcessExecutor {
    /// The command every test process starts from: working directory, stdin closed, its own
    /// process group, and the kernel guard when configured.
    pub fn base_command(&self, program: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(program);
        cmd.current_dir(&self.root).stdin(Stdio::null()).process_group(0).kill_on_drop(true);
        if self.die_with_worker {
            die_with_worker(&mut cmd);
        }
        cmd
    }
}

/// How long to keep reading output after the test's process group is gone, for descendants that
/// escaped into their own group with the pipe still open.
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

/// Process groups of tests running now, so that a worker that must exit at once can kill them.
static RUNNING_GROUPS: LazyLock<Mutex<HashSet<i32>>> = LazyLock::new(|| Mutex::new(HashSet::new()));

fn running_groups() -> std::sync::MutexGuard<'static, HashSet<i32>> {
    lock(&RUNNING_GROUPS)
}

/// Lock a mutex, reusing it if a panic poisoned it: every value the worker guards this way
/// (sets, maps, output buffers) is changed by single calls that cannot leave it half-updated.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Kill every running test's process group now (SIGKILL). For a process that must exit at once
/// (a second Ctrl-C) and must not leave tests behind.
pub fn kill_all_running() {
    for pgid in running_groups().drain() {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
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
pub fn die_with_worker(cmd: &mut tokio::process::Command) {
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

enum End {
    Exited(std::io::Result<ExitStatus>),
    TimedOut,
    Cancelled,
}

fn report(outcome: pb::Outcome, message: String, started: Instant) -> pb::TestReport {
    pb::TestReport {
        outcome: outcome as i32,
        duration_ms: started.elapsed().as_millis() as u64,
        message,
        ..Default::default()
    }
}

impl ProcessExecutor {
    async fn spawn_and_wait(&self, job: &Job, cancel: CancellationToken) -> pb::TestReport {
        let started = Instant::now();
        let (reader, writer) = match std::io::pipe() {
            Ok(pair) => pair,
            Err(e) => return report(pb::Outcome::Error, format!("cannot create an output pipe: {e}"), started),
        };
        let writer2 = match writer.try_clone() {
            Ok(w) => w,
            Err(e) => return report(pb::Outcome::Error, format!("cannot create an output pipe: {e}"), started),
        };
        let mut cmd = match crate::command::direct_argv(&job.command) {
            Some(argv) => {
                let mut cmd = tokio::process::Command::new(&argv[0]);
                cmd.args(&argv[1..]);
                cmd
            }
            None => {
                let mut cmd = tokio::process::Command::new("sh");
                cmd.arg("-c").arg(&job.command);
                cmd
            }
        };
        let dir = job.dir.as_deref().unwrap_or(&self.root);
        cmd.current_dir(dir)
            .envs(&job.env)
            .env("TESTGRID_TEST", &job.path)
            .env("TESTGRID_SESSION", &job.assignment.session_id)
            .env("TESTGRID_ATTEMPT", job.assignment.attempt.to_string())
            .stdin(Stdio::null())
            .stdout(writer2)
            .stderr(writer)
            .process_group(0)
            .kill_on_drop(true);
        if self.die_with_worker {
            die_with_worker(&mut cmd);
        }
        let spawned = cmd.spawn();
        // The command holds the pipe's write ends; drop them so the reader sees EOF.
        drop(cmd);
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                return report(
                    pb::Outcome::Error,
                    format!("cannot start `{}` in {}: {e}", job.command, dir.display()),
                    started,
                );
            }
        };
        let Some(pid) = child.id().map(|id| id as i32) else {
            return report(pb::Outcome::Error, "the test process vanished at start".into(), started);
        };
        track_group(pid, true);

        let capture = Arc::new(Mutex::new(Capture::new(self.output_limit)));
        let mut output = tokio::spawn(read_output(OwnedFd::from(reader), Arc::clone(&capture)));
        let timeout = async {
            match job.timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        let end = tokio::select! {
            status = child.wait() => End::Exited(status),
            () = timeout => End::TimedOut,
            () = cancel.cancelled() => End::Cancelled,
        };
        let kind = end_kind(&end);
        let status = match end {
            End::Exited(status) => status,
            End::TimedOut | End::Cancelled => {
                kill_group(pid, self.kill_grace, async {
                    let _ = child.wait().await;
                })
                .await;
                // Already reaped or dead by now: this returns its status.
                child.wait().await
            }
        };
        // Whatever the test left running in its group goes with it.
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        track_group(pid, false);
        let duration_ms = started.elapsed().as_millis() as u64;
        // Normally the pipe is at EOF once the group is dead; a process that escaped the group
        // (setsid) may hold it open, and then what was read so far is what we report.
        let complete = tokio::time::timeout(OUTPUT_DRAIN, &mut output).await.is_ok();
        if !complete {
            output.abort();
        }
        let captured = std::mem::replace(&mut *lock(&capture), Capture::new(0));
        let (mut output, output_dropped_bytes) = captured.finish();
        if !complete {
            output.extend_from_slice(
                b"\n[testgrid: output cut short: a process outside the test's group kept its output pipe open]\n",
            );
        }
        let (outcome, exit_code, signal, message) = match (kind, status) {
            (Kind::TimedOut, _) => (
                pb::Outcome::TimedOut,
                None,
                None,
                format!("killed after the {} timeout", humantime::format_duration(job.timeout.unwrap_or_default())),
            ),
            (Kind::Cancelled, _) => (pb::Outcome::Cancelled, None, None, "cancelled".to_string()),
            (Kind::Exited, Err(e)) => {
                (pb::Outcome::Error, None, None, format!("cannot wait for the test process: {e}"))
            }
            (Kind::Exited, Ok(status)) => classify(status),
        };
        pb::TestReport {
            outcome: outcome as i32,
            exit_code,
            signal,
            duration_ms,
            output,
            output_dropped_bytes,
            message,
            cases: Vec::new(),
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Exited,
    TimedOut,
    Cancelled,
}

fn end_kind(end: &End) -> Kind {
    match end {
        End::Exited(_) => Kind::Exited,
        End::TimedOut => Kind::TimedOut,
        End::Cancelled => Kind::Cancelled,
    }
}

/// Outcome of a process that exited on its own.
fn classify(status: ExitStatus) -> (pb::Outcome, Option<i32>, Option<i32>, String) {
    if let Some(code) = status.code() {
        let message = match code {
            0 => return (pb::Outcome::Passed, Some(0), None, String::new()),
            // From `sh`, 126/127 mean "not executable" / "not found"; a script can also exit
            // with them on purpose, so they stay failures, with a hint.
            126 => "exit code 126 (a command was not executable?)".to_string(),
            127 => "exit code 127 (a command was not found on the worker's PATH?)".to_string(),
            _ => format!("exit code {code}"),
        };
        return (pb::Outcome::Failed, Some(code), None, message);
    }
    let signal = status.signal().unwrap_or(0);
    let name = Signal::try_from(signal).map(|s| s.as_str().to_string()).unwrap_or_else(|_| format!("signal {signal}"));
    (pb::Outcome::Failed, None, Some(signal), format!("killed by {name}"))
}

/// Read the test's output pipe into `capture` until EOF.
pub(crate) async fn read_output(fd: OwnedFd, capture: Arc<Mutex<Capture>>) {
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

impl Executor for ProcessExecutor {
    fn run(&self, _slot: u32, job: &Job, cancel: CancellationToken) -> impl Future<Output = pb::TestReport> + Send {
        self.spawn_and_wait(job, cancel)
    }
}

/// Kill a whole process group: SIGTERM, then SIGKILL after `grace` unless `exited` resolves.
pub async fn kill_group(pgid: i32, grace: Duration, exited: impl Future<Output = ()>) {
    let _ = killpg(Pid::from_raw(pgid), Signal::SIGTERM);
    if tokio::time::timeout(grace, exited).await.is_err() {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
}

/// A running process group: killed (SIGKILL) and forgotten when this is dropped, so that no
/// early return, cancel or panic leaves the group running or its id registered.
pub(crate) struct GroupGuard(i32);

impl GroupGuard {
    pub(crate) fn new(pgid: i32) -> Self {
        track_group(pgid, true);
        GroupGuard(pgid)
    }

    pub(crate) fn pgid(&self) -> i32 {
        self.0
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.0), Signal::SIGKILL);
        track_group(self.0, false);
    }
}

/// Register a process group as running (for [`kill_all_running`]) or forget it.
pub fn track_group(pgid: i32, running: bool) {
    if running {
        running_groups().insert(pgid);
    } else {
        running_groups().remove(&pgid);
    }
}
