//! What a session produced and the reports made from it: the [`Tracker`] gathers the events,
//! [`summary`] is the final text, [`junit`] the XML file. Also the small text rules every view
//! shares ([`text`]: how a path, a duration, an output tail and a reason are shown).

mod junit;
mod summary;
#[cfg(test)]
mod tests;
mod text;
mod tracker;

pub use junit::{check_writable, write_junit};
pub use summary::{CaseCounts, artifacts, case_counts, summary};
pub use text::{case_outcome, display_path, format_duration, output_tail, printable, why};
pub use tracker::{Attempt, TestRecord, Tracker};
