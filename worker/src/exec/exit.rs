//! How a process ended, in words: one reading of an exit status ([`Exit`]) with the phrasings
//! the reports use, and a test's outcome from it ([`test_outcome`]).

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use nix::sys::signal::Signal;
use testgrid_proto as pb;

/// An exit status: an exit code, or the signal that killed the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    pub fn of(status: ExitStatus) -> Exit {
        match status.code() {
            Some(code) => Exit::Code(code),
            None => Exit::Signal(status.signal().unwrap_or(0)),
        }
    }

    fn signal_name(signal: i32) -> String {
        Signal::try_from(signal).map(|s| s.as_str().to_string()).unwrap_or_else(|_| format!("signal {signal}"))
    }

    /// `exit code 3`, `killed by SIGKILL`: a test's message.
    pub fn text(self) -> String {
        match self {
            Exit::Code(code) => format!("exit code {code}"),
            Exit::Signal(signal) => format!("killed by {}", Exit::signal_name(signal)),
        }
    }

    /// `exited with exit code 3`, `was killed by SIGKILL`: after a process's name.
    pub fn sentence(self) -> String {
        match self {
            Exit::Code(_) => format!("exited with {}", self.text()),
            Exit::Signal(_) => format!("was {}", self.text()),
        }
    }

    /// `exit code 3`, `signal 11`: in parentheses after what crashed.
    pub fn brief(self) -> String {
        match self {
            Exit::Code(code) => format!("exit code {code}"),
            Exit::Signal(signal) => format!("signal {signal}"),
        }
    }
}

/// A test process that exited on its own: its outcome, exit code, signal and message.
pub fn test_outcome(status: ExitStatus) -> (pb::Outcome, Option<i32>, Option<i32>, String) {
    match Exit::of(status) {
        Exit::Code(0) => (pb::Outcome::Passed, Some(0), None, String::new()),
        exit @ Exit::Code(code) => {
            let message = match code {
                // From `sh`, 126/127 mean "not executable" / "not found"; a script can also exit
                // with them on purpose, so they stay failures, with a hint.
                126 => "exit code 126 (a command was not executable?)".to_string(),
                127 => "exit code 127 (a command was not found on the worker's PATH?)".to_string(),
                _ => exit.text(),
            };
            (pb::Outcome::Failed, Some(code), None, message)
        }
        exit @ Exit::Signal(signal) => (pb::Outcome::Failed, None, Some(signal), exit.text()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_reading_three_phrasings() {
        let code = ExitStatus::from_raw(3 << 8);
        let killed = ExitStatus::from_raw(9);
        assert_eq!(Exit::of(code).text(), "exit code 3");
        assert_eq!(Exit::of(code).sentence(), "exited with exit code 3");
        assert_eq!(Exit::of(killed).text(), "killed by SIGKILL");
        assert_eq!(Exit::of(killed).sentence(), "was killed by SIGKILL");
        assert_eq!(Exit::of(killed).brief(), "signal 9");
        assert_eq!(test_outcome(ExitStatus::from_raw(0)).0, pb::Outcome::Passed);
        assert_eq!(
            test_outcome(ExitStatus::from_raw(127 << 8)).3,
            "exit code 127 (a command was not found on the worker's PATH?)"
        );
        assert_eq!(test_outcome(killed), (pb::Outcome::Failed, None, Some(9), "killed by SIGKILL".to_string()));
    }
}
