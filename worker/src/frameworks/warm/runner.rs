//! One warm runner process: started (its files written to a private folder, a Unix socket for
//! the protocol, its own stdout and stderr captured for diagnostics), then served by a task of
//! its own ([`Handle::serve`]): units are asked for through a [`Handle`], the runner's lines are
//! routed to the unit they name, and when the runner dies or is killed every unit still waiting
//! hears how it ended. It is stopped, retired, and its memory read here.
//!
//! It must not decide which runner serves which job (the executor in `mod.rs` does).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::kind::Kind;
use super::protocol::{self, FromRunner};
use crate::exec::exit::Exit;
use crate::exec::{Process, Running};
use crate::job::Job;

/// How long a runner may take to start, load its framework and the project's config, and connect.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// What the runner's own stdout and stderr keep (for "runner crashed" diagnostics).
const RUNNER_LOG_LIMIT: usize = 64 * 1024;

/// The longest line a runner may send (its case output and errors are capped well below; a
/// file's list of cases is the longest message). A longer one is skipped, never held whole.
const MAX_LINE: usize = 32 * 1024 * 1024;

/// How long a runner may take to run its session-end hooks when it is retired.
const RETIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// A started runner, ready for files.
pub struct Runner {
    pub session: String,
    pub kind: Kind,
    /// It said it runs files of several slots at once (see [`FromRunner::Ready`]).
    pub shares: bool,
    /// Its process; dropping it kills the runner's group with whatever the tests started.
    process: Running,
    lines: LineReader,
    writer: OwnedWriteHalf,
    _dir: tempfile::TempDir,
}

/// Start `kind`'s runner with `program` (the Python or the Node) for `job`'s session in `slot`
/// (the slot it starts for, should it serve several), in the project's folder, and wait until
/// it is ready.
pub async fn start(
    kind: Kind,
    program: &str,
    job: &Job,
    slot: u32,
    die_with_worker: bool,
    coverage_dir: Option<&Path>,
) -> Result<Runner, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("cannot create a runner directory: {e}"))?;
    let file = write_files(kind, dir.path())?;
    let socket = dir.path().join("runner.sock");
    let listener = UnixListener::bind(&socket).map_err(|e| format!("cannot open the runner socket: {e}"))?;
    let (process, shown) = command(kind, program, job, slot, dir.path(), file, die_with_worker);
    // A session's raw coverage goes to a folder of its own, merged when the session is over.
    let session = &job.assignment.session_id;
    let process = match coverage_dir {
        Some(root) if !session.is_empty() && session.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') => {
            let parts = root.join(session);
            let process = process.env("TESTGRID_COVERAGE_DIR", &parts);
            if kind == Kind::Pytest {
                // pytest-cov (coverage.py) writes this runner's data file there, named by it.
                std::fs::create_dir_all(&parts).map_err(|e| format!("cannot create {}: {e}", parts.display()))?;
                let own = dir.path().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                process.env("COVERAGE_FILE", parts.join(format!("pytest-{slot}-{own}.coverage")))
            } else {
                process
            }
        }
        _ => process,
    };
    // The runner lists the session's files as it starts when someone waits for them (vitest's
    // only: the others cannot).
    let list_to = job.list_to.clone().filter(|_| kind == Kind::Vitest);
    let process = if list_to.is_some() { process.env("TESTGRID_LIST_FILES", "1") } else { process };
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
        shares: false,
        process,
        lines: LineReader::new(read),
        writer,
        _dir: dir,
    };
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    let ready = loop {
        match tokio::time::timeout_at(deadline, runner.lines.next()).await {
            Ok(Ok(Read::Line(line))) => match protocol::parse(&line) {
                Ok(FromRunner::Ready { shares }) => break Some(shares),
                Ok(FromRunner::Listed(listing)) => {
                    // Whoever asked may have stopped waiting: then nobody needs it.
                    if let Some(to) = &list_to {
                        let _ = to.try_send(listing);
                    }
                }
                _ => break None,
            },
            _ => break None,
        }
    };
    match ready {
        Some(shares) => {
            runner.shares = shares;
            Ok(runner)
        }
        None => {
            // It connected, then gave up (it could not load its framework, say): wait for it
            // to finish saying why; dropping the runner kills what is left of it.
            let _ = tokio::time::timeout(Duration::from_secs(2), runner.process.wait()).await;
            runner.process.settle_output(Duration::from_secs(1)).await;
            Err(failure(runner.take_log()))
        }
    }
}

/// Write `kind`'s runner and the files it loads into `dir`; the runner's own file name.
pub fn write_files(kind: Kind, dir: &Path) -> Result<&'static str, String> {
    let (file, text) = kind.runner();
    for (name, text) in std::iter::once(&(file, text)).chain(kind.support_files()) {
        std::fs::write(dir.join(name), text).map_err(|e| format!("cannot write the {} runner: {e}", kind.name()))?;
    }
    Ok(file)
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
            // The session's arguments are pytest's own (`-k`, `-m`, `-p`, plugin options).
            let process = process
                .args(["-m", "pytest", "-p", "testgrid_pytest", "-q"])
                .args(&job.runner.args)
                .env("PYTHONPATH", pythonpath);
            (process, format!("{program} -m pytest"))
        }
        // The session's arguments follow `--`: the runner hands them to its framework's own
        // command-line parser.
        Kind::Vitest | Kind::Jest => {
            (process.arg(dir.join(file)).arg("--").args(&job.runner.args), format!("{program} {file}"))
        }
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
    pub async fn next_line(&mut self) -> std::io::Result<Read> {
        self.lines.next().await
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
    pub async fn stop(&mut self, grace: Duration) {
        self.process.stop(grace).await;
    }

    /// It died mid-file: how it ended (waiting a little for it), if that can be known.
    pub async fn exit(&mut self) -> Option<Exit> {
        let status = tokio::time::timeout(Duration::from_secs(5), self.process.wait()).await.ok()?.ok()?;
        Some(Exit::of(status))
    }
}

/// What reading a runner's socket gave.
#[derive(Debug, PartialEq)]
pub enum Read {
    Line(String),
    /// A line longer than [`MAX_LINE`], skipped: its length.
    TooLong(usize),
    /// The runner closed the socket.
    Closed,
}

/// A runner's socket, read a line at a time and never more than [`MAX_LINE`] bytes of one
/// line held. Cancel safe (what a cancelled read took in stays for the next one), as `select!`
/// needs.
struct LineReader {
    inner: BufReader<OwnedReadHalf>,
    /// The longest line taken ([`MAX_LINE`]).
    limit: usize,
    buf: Vec<u8>,
    /// Bytes of an over-long line skipped so far, while looking for its end.
    skipping: Option<usize>,
}

impl LineReader {
    fn new(read: OwnedReadHalf) -> Self {
        LineReader { inner: BufReader::new(read), limit: MAX_LINE, buf: Vec::new(), skipping: None }
    }

    async fn next(&mut self) -> std::io::Result<Read> {
        loop {
            if let Some(skipped) = self.skipping {
                let available = self.inner.fill_buf().await?;
                if available.is_empty() {
                    self.skipping = None;
                    return Ok(Read::Closed);
                }
                let (end, used) = match available.iter().position(|&b| b == b'\n') {
                    Some(i) => (true, i + 1),
                    None => (false, available.len()),
                };
                self.inner.consume(used);
                if end {
                    self.skipping = None;
                    return Ok(Read::TooLong(skipped + used));
                }
                self.skipping = Some(skipped + used);
                continue;
            }
            // Room for one byte over the limit: that byte says the line is too long.
            let room = (self.limit + 1).saturating_sub(self.buf.len()) as u64;
            let read = (&mut self.inner).take(room).read_until(b'\n', &mut self.buf).await?;
            if self.buf.last() == Some(&b'\n') || (read == 0 && !self.buf.is_empty()) {
                let mut line = std::mem::take(&mut self.buf);
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                return Ok(Read::Line(String::from_utf8_lossy(&line).into_owned()));
            }
            if read == 0 {
                return Ok(Read::Closed);
            }
            if self.buf.len() > self.limit {
                self.skipping = Some(self.buf.len());
                self.buf = Vec::new();
            }
        }
    }
}

/// What a unit hears from the runner it was asked of.
#[derive(Debug)]
pub enum Event {
    Message(FromRunner),
    /// The runner is gone before the unit was done.
    Ended(Ended),
}

/// How a runner went away.
#[derive(Clone, Debug)]
pub struct Ended {
    pub exit: Option<Exit>,
    /// What it printed since the last unit began.
    pub log: String,
    /// It was killed on purpose (the timeout or cancel of the unit running in it) or closed
    /// before it took the unit: not a crash.
    pub killed: bool,
    /// Units that had begun (said so) and were not done when it went: more than one, and a
    /// crash cannot be pinned on any of them.
    pub begun: usize,
}

enum Command {
    Run {
        unit: u64,
        path: String,
        slot: u32,
        events: mpsc::UnboundedSender<Event>,
    },
    /// Drop whatever the runner says about the unit from now on.
    Forget {
        unit: u64,
    },
    /// Kill the runner now; answered once it is dead.
    Kill {
        done: oneshot::Sender<()>,
    },
    /// Take no more units, and retire once the ones asked for are done.
    Close,
}

/// What every handle of a runner shares.
struct Shared {
    /// Units asked for so far (also the next unit's number).
    asked: AtomicU64,
    pgid: i32,
}

/// A served runner. Cloned by every job that asks it for a unit; the runner retires once it is
/// closed (or every handle is gone) and nothing it was asked for is left, or after `idle_limit`
/// with nothing to do.
#[derive(Clone)]
pub struct Handle {
    pub session: String,
    pub kind: Kind,
    /// See [`Runner::shares`].
    pub shares: bool,
    commands: mpsc::UnboundedSender<Command>,
    shared: Arc<Shared>,
    /// Cancelled once its task has ended (the runner retired, died or was killed).
    gone: CancellationToken,
}

impl Handle {
    /// Serve `runner` from a task of its own.
    pub fn serve(runner: Runner, grace: Duration, idle_limit: Duration) -> Handle {
        let (commands, received) = mpsc::unbounded_channel();
        let handle = Handle {
            session: runner.session.clone(),
            kind: runner.kind,
            shares: runner.shares,
            commands,
            shared: Arc::new(Shared { asked: AtomicU64::new(0), pgid: runner.pgid() }),
            gone: CancellationToken::new(),
        };
        let gone = handle.gone.clone().drop_guard();
        tokio::spawn(async move {
            let _gone = gone;
            serve(runner, received, grace, idle_limit).await;
        });
        handle
    }

    /// Whether it can still take units.
    pub fn is_alive(&self) -> bool {
        !self.commands.is_closed()
    }

    /// Whether its process may still run (it has not retired, died or been killed).
    pub fn is_running(&self) -> bool {
        !self.gone.is_cancelled()
    }

    /// Wait until it has retired, died or been killed.
    pub async fn gone(&self) {
        self.gone.cancelled().await;
    }

    /// Ask for the unit `path`, run for `slot`: its number, and where its messages come. `None`
    /// if the runner is gone.
    pub fn run(&self, path: &str, slot: u32) -> Option<(u64, mpsc::UnboundedReceiver<Event>)> {
        let unit = self.shared.asked.fetch_add(1, Ordering::Relaxed);
        let (events, receiver) = mpsc::unbounded_channel();
        self.commands.send(Command::Run { unit, path: path.to_string(), slot, events }).ok()?;
        Some((unit, receiver))
    }

    /// Units asked of it so far.
    pub fn asked(&self) -> u64 {
        self.shared.asked.load(Ordering::Relaxed)
    }

    /// Stop listening for `unit` (cancelled before it began).
    pub fn forget(&self, unit: u64) {
        // A runner that is gone has nothing to forget.
        let _ = self.commands.send(Command::Forget { unit });
    }

    /// Kill the runner and wait until it is dead; the other units asked of it hear `Ended`.
    pub async fn kill(&self) {
        let (done, dead) = oneshot::channel();
        if self.commands.send(Command::Kill { done }).is_ok() {
            // Dropped unanswered only if the runner died on its own meanwhile: dead either way.
            let _ = dead.await;
        }
    }

    /// Take no more units; retire once the ones asked for are done.
    pub fn close(&self) {
        // A runner that is gone is closed already.
        let _ = self.commands.send(Command::Close);
    }

    /// Resident memory of its main process.
    pub fn rss_bytes(&self) -> u64 {
        rss_bytes(self.shared.pgid)
    }
}

/// The task that owns a runner: writes the units asked for, routes each line to the unit it
/// names (or the oldest one waiting, for a line that names none), and tells every waiting unit
/// when the runner is gone.
async fn serve(
    mut runner: Runner,
    mut commands: mpsc::UnboundedReceiver<Command>,
    grace: Duration,
    idle_limit: Duration,
) {
    let mut routes: BTreeMap<u64, mpsc::UnboundedSender<Event>> = BTreeMap::new();
    // Units of `routes` that said they began.
    let mut begun: BTreeSet<u64> = BTreeSet::new();
    let mut closing = false;
    let mut listening = true;
    let mut idle_since = Instant::now();
    let tell_all = |routes: &BTreeMap<u64, mpsc::UnboundedSender<Event>>, ended: Ended| {
        for events in routes.values() {
            // A unit that stopped listening (it returned) needs no word.
            let _ = events.send(Event::Ended(ended.clone()));
        }
    };
    loop {
        if closing && routes.is_empty() {
            retire(runner, grace).await;
            return;
        }
        let idle = async {
            if routes.is_empty() {
                tokio::time::sleep_until((idle_since + idle_limit).into()).await
            } else {
                std::future::pending().await
            }
        };
        tokio::select! {
            command = commands.recv(), if listening => match command {
                // Every handle is gone: finish what was asked, then retire.
                None => {
                    listening = false;
                    closing = true;
                }
                Some(Command::Run { unit, path, events, .. }) if closing => {
                    let _ = events.send(Event::Ended(Ended { exit: None, log: String::new(), killed: true, begun: 0 }));
                    tracing::debug!(unit, path, "a closing runner refused a unit");
                }
                Some(Command::Run { unit, path, slot, events }) => {
                    if routes.is_empty() {
                        runner.clear_log();
                    }
                    routes.insert(unit, events);
                    // A runner that cannot be written to has died: its end is read below.
                    let _ = runner.send(protocol::run_request(unit, &path, slot).as_bytes()).await;
                }
                Some(Command::Forget { unit }) => {
                    routes.remove(&unit);
                    begun.remove(&unit);
                    if routes.is_empty() {
                        idle_since = Instant::now();
                    }
                }
                Some(Command::Kill { done }) => {
                    runner.stop(grace).await;
                    tell_all(&routes, Ended { exit: None, log: runner.take_log(), killed: true, begun: begun.len() });
                    let _ = done.send(());
                    return;
                }
                Some(Command::Close) => closing = true,
            },
            line = runner.next_line() => match line {
                Ok(Read::TooLong(bytes)) => {
                    warn!("ignoring a line of {bytes} bytes the {} runner sent (at most {MAX_LINE})", runner.kind.name());
                }
                Ok(Read::Line(line)) => match protocol::parse_addressed(&line) {
                    Ok((_, FromRunner::Ready { .. } | FromRunner::Listed(_))) => {}
                    Ok((unit, message)) => {
                        // A unit forgotten (cancelled) is not heard any more.
                        let target = match unit {
                            Some(unit) => routes.contains_key(&unit).then_some(unit),
                            None => routes.keys().next().copied(),
                        };
                        let Some(target) = target else { continue };
                        if message == FromRunner::Begin && begun.insert(target) && begun.len() == 1 {
                            // Crash diagnostics show this file's last words (the files running
                            // beside it, if any, share them).
                            runner.clear_log();
                        }
                        let done = matches!(message, FromRunner::Done { .. });
                        if let Some(events) = routes.get(&target) {
                            let _ = events.send(Event::Message(message));
                        }
                        if done {
                            routes.remove(&target);
                            begun.remove(&target);
                            if routes.is_empty() {
                                idle_since = Instant::now();
                            }
                        }
                    }
                    Err(e) => warn!("ignoring a line the {} runner sent: {e}", runner.kind.name()),
                },
                _ => {
                    let exit = runner.exit().await;
                    tell_all(&routes, Ended { exit, log: runner.take_log(), killed: false, begun: begun.len() });
                    return;
                }
            },
            () = idle => {
                retire(runner, grace).await;
                return;
            }
        }
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

    #[tokio::test]
    async fn an_over_long_line_is_skipped_and_the_next_one_read_whole() {
        let (a, b) = tokio::net::UnixStream::pair().expect("a socket pair");
        let (read, _) = a.into_split();
        let mut reader = LineReader::new(read);
        reader.limit = 16;
        let mut writer = b;
        let long = "x".repeat(1000);
        let sent = format!("{{\"op\":\"ready\"}}\n{long}\nshort\n{}\nlast", "y".repeat(16));
        tokio::spawn(async move {
            // Small writes: the reader sees the long line in pieces.
            for chunk in sent.as_bytes().chunks(7) {
                writer.write_all(chunk).await.expect("write");
            }
        });
        assert_eq!(reader.next().await.expect("read"), Read::Line("{\"op\":\"ready\"}".into()));
        assert_eq!(reader.next().await.expect("read"), Read::TooLong(1001));
        assert_eq!(reader.next().await.expect("read"), Read::Line("short".into()));
        assert_eq!(reader.next().await.expect("read"), Read::Line("y".repeat(16)), "a line of the limit is taken");
        assert_eq!(reader.next().await.expect("read"), Read::Line("last".into()), "a last line without its newline");
        assert_eq!(reader.next().await.expect("read"), Read::Closed);
    }

    #[test]
    fn rss_of_this_process_is_known_and_of_nobody_is_zero() {
        assert!(rss_bytes(std::process::id() as i32) > 0);
        assert_eq!(rss_bytes(i32::MAX), 0);
    }
}
