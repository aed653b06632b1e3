//! Asking a framework's own command line for its tests (`vitest list`, `jest --listTests`): the
//! child runs with stdin closed, within a deadline, and what it prints is bounded (its answer by
//! a size cap, its complaints by their first bytes). Errors quote only the first lines of what
//! it said. What to ask and how to read the answer is the framework's module's business.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How much of the child's stderr is kept for an error message.
const STDERR_KEPT: usize = 64 * 1024;

/// What the child printed, and how it ended.
#[derive(Debug)]
pub struct Answer {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    /// The first [`STDERR_KEPT`] bytes of stderr.
    pub stderr: Vec<u8>,
}

/// Why no answer came.
#[derive(Debug)]
pub enum Failed {
    /// The program could not be started.
    Start(std::io::Error),
    /// It ran past the deadline (or a process it started kept its output open that long).
    TimedOut(Duration),
    /// It printed more than the cap on stdout.
    TooLarge(usize),
    Wait(std::io::Error),
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failed::Start(e) => write!(f, "cannot start it: {e}"),
            Failed::TimedOut(after) => write!(f, "no answer within {}", humantime::format_duration(*after)),
            Failed::TooLarge(cap) => write!(f, "it printed more than {} MiB", cap / (1024 * 1024)),
            Failed::Wait(e) => write!(f, "cannot wait for it: {e}"),
        }
    }
}

enum Stream {
    Out(Option<Vec<u8>>),
    Err(Vec<u8>),
}

/// Run `cmd` to its end within `deadline`, keeping at most `stdout_cap` bytes of stdout (more
/// is an error, and the child is killed). The child stays in this terminal's process group, so
/// that Ctrl-C reaches it too.
pub fn ask(cmd: &mut Command, deadline: Duration, stdout_cap: usize) -> Result<Answer, Failed> {
    let started = Instant::now();
    let mut child =
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(Failed::Start)?;
    let (tx, rx) = mpsc::channel();
    if let Some(out) = child.stdout.take() {
        let tx = tx.clone();
        std::thread::spawn(move || tx.send(Stream::Out(read_capped(out, stdout_cap))));
    }
    if let Some(err) = child.stderr.take() {
        std::thread::spawn(move || tx.send(Stream::Err(read_head(err, STDERR_KEPT))));
    }
    let (mut stdout, mut stderr) = (None, None);
    let status = loop {
        while let Ok(message) = rx.try_recv() {
            record(message, &mut stdout, &mut stderr);
        }
        if matches!(stdout, Some(None)) {
            stop(&mut child);
            return Err(Failed::TooLarge(stdout_cap));
        }
        if let Some(status) = child.try_wait().map_err(Failed::Wait)? {
            break status;
        }
        if started.elapsed() >= deadline {
            stop(&mut child);
            return Err(Failed::TimedOut(deadline));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // The pipes end with the child, unless a process it started still holds them.
    loop {
        match (&stdout, &stderr) {
            (Some(Some(_)), Some(_)) => break,
            (Some(None), _) => return Err(Failed::TooLarge(stdout_cap)),
            _ => {}
        }
        let left = deadline.saturating_sub(started.elapsed());
        match rx.recv_timeout(left) {
            Ok(message) => record(message, &mut stdout, &mut stderr),
            Err(_) => return Err(Failed::TimedOut(deadline)),
        }
    }
    Ok(Answer { status, stdout: stdout.flatten().unwrap_or_default(), stderr: stderr.unwrap_or_default() })
}

fn record(message: Stream, stdout: &mut Option<Option<Vec<u8>>>, stderr: &mut Option<Vec<u8>>) {
    match message {
        Stream::Out(out) => *stdout = Some(out),
        Stream::Err(err) => *stderr = Some(err),
    }
}

fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Everything `reader` yields, or `None` when that is more than `cap` bytes.
pub fn read_capped(reader: impl Read, cap: usize) -> Option<Vec<u8>> {
    let mut bytes = Vec::new();
    // A read error ends the answer where it stopped; the parser then says what is wrong.
    let _ = reader.take(cap as u64 + 1).read_to_end(&mut bytes);
    (bytes.len() <= cap).then_some(bytes)
}

/// The first `keep` bytes `reader` yields; the rest is read and dropped, so that the writer
/// never blocks on a full pipe.
fn read_head(mut reader: impl Read, keep: usize) -> Vec<u8> {
    let mut bytes = Vec::new();
    let _ = (&mut reader).take(keep as u64).read_to_end(&mut bytes);
    let _ = std::io::copy(&mut reader, &mut std::io::sink());
    bytes
}

/// The first lines of what a program said, for an error message: blank lines left out, each
/// line an [`excerpt`], at most 10 lines, then how many more there were.
pub fn first_lines(bytes: &[u8]) -> String {
    const LINES: usize = 10;
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<String> = text.lines().map(excerpt).filter(|l| !l.trim().is_empty()).collect();
    let mut shown: Vec<String> = lines.iter().take(LINES).cloned().collect();
    if lines.len() > LINES {
        shown.push(format!("… ({} more lines)", lines.len() - LINES));
    }
    shown.join("\n")
}

/// A text from a program, fit for a message: without terminal escapes (colours) and other
/// control characters, cut at 200 characters.
pub fn excerpt(text: &str) -> String {
    const WIDTH: usize = 200;
    let text = plain(text);
    if text.chars().count() <= WIDTH { text } else { format!("{}…", text.chars().take(WIDTH).collect::<String>()) }
}

/// A line without terminal escape sequences and other control characters.
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters, ending with a letter; other escapes: ESC and one character.
            if chars.next_if_eq(&'[').is_some() {
                while chars.next().is_some_and(|c| !c.is_ascii_alphabetic()) {}
            } else {
                chars.next();
            }
        } else if c == '\t' || !c.is_control() {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_capped_and_complaints_shortened() {
        assert_eq!(read_capped(&b"[1,2]"[..], 5), Some(b"[1,2]".to_vec()));
        assert_eq!(read_capped(std::io::repeat(b'x').take(10 << 20), 1 << 20), None, "a huge answer is refused");
        assert_eq!(read_head(std::io::repeat(b'x').take(1 << 20), 3), b"xxx");
        let noisy = "\u{1b}[31mError:\u{1b}[39m bad config\n\n\u{7}ring\n".to_string() + &"x".repeat(500) + "\n";
        let many = noisy + &"line\n".repeat(30);
        let shown = first_lines(many.as_bytes());
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines[0], "Error: bad config");
        assert_eq!(lines[1], "ring");
        assert_eq!(lines[2].chars().count(), 201, "a long line is cut");
        assert_eq!(lines.len(), 11);
        assert_eq!(lines[10], "… (23 more lines)");
    }

    #[test]
    fn a_child_is_bounded_in_time_and_output() {
        let answer =
            ask(Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]), Duration::from_secs(30), 64)
                .expect("an answer");
        assert_eq!(
            (answer.status.code(), &answer.stdout[..], &answer.stderr[..]),
            (Some(3), &b"out\n"[..], &b"err\n"[..])
        );
        let slow = ask(Command::new("sleep").arg("30"), Duration::from_millis(200), 64);
        assert!(matches!(slow, Err(Failed::TimedOut(_))), "{slow:?}");
        let chatty = ask(&mut Command::new("yes"), Duration::from_secs(30), 1 << 20);
        assert!(matches!(chatty, Err(Failed::TooLarge(_))), "{chatty:?}");
        let missing = ask(&mut Command::new("/nonexistent/program"), Duration::from_secs(1), 64);
        assert!(matches!(missing, Err(Failed::Start(_))), "{missing:?}");
    }
}
