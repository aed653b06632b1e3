//! The names of outcomes: one table for every program (events in `--json`, metrics labels, the
//! live view, reports, the warm runners' protocol).

use crate::v1::Outcome;

impl Outcome {
    /// Every outcome a test or case can have, in the order reports list them.
    pub const ALL: [Outcome; 8] = [
        Outcome::Passed,
        Outcome::Skipped,
        Outcome::Flaky,
        Outcome::Failed,
        Outcome::TimedOut,
        Outcome::Error,
        Outcome::Lost,
        Outcome::Cancelled,
    ];

    /// The machine name: `passed`, `timed_out`, ... (`unknown` for an unspecified one).
    pub fn key(self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed => "failed",
            Outcome::Flaky => "flaky",
            Outcome::TimedOut => "timed_out",
            Outcome::Lost => "lost",
            Outcome::Cancelled => "cancelled",
            Outcome::Error => "error",
            Outcome::Skipped => "skipped",
            Outcome::Unspecified => "unknown",
        }
    }

    /// The outcome a machine name stands for.
    pub fn from_key(key: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.key() == key)
    }

    /// The word a human reads: `passed`, `timed out`, ...
    pub fn word(self) -> &'static str {
        match self {
            Outcome::TimedOut => "timed out",
            other => other.key(),
        }
    }

    /// Whether it counts as a pass for the exit code (flaky and skipped do).
    pub fn is_success(self) -> bool {
        matches!(self, Outcome::Passed | Outcome::Flaky | Outcome::Skipped)
    }

    /// The outcome of a protocol value; unknown values read as `Unspecified`.
    pub fn of(value: i32) -> Outcome {
        Outcome::try_from(value).unwrap_or(Outcome::Unspecified)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_words_read_well() {
        for outcome in Outcome::ALL {
            assert_eq!(Outcome::from_key(outcome.key()), Some(outcome));
        }
        assert_eq!(Outcome::TimedOut.key(), "timed_out");
        assert_eq!(Outcome::TimedOut.word(), "timed out");
        assert_eq!(Outcome::from_key("unknown"), None);
        assert_eq!(Outcome::of(999), Outcome::Unspecified);
        assert!(Outcome::Flaky.is_success() && !Outcome::Lost.is_success());
    }
}
