//! What the coordinator keeps about sessions beyond the scheduler's state: every session's spec
//! and numbered event log, exactly as the core emitted it, which watchers read and resume from,
//! and which a restarted coordinator rebuilds its sessions from.
//!
//! [`SessionStore`] is the seam: the engine creates and appends, `Watch` reads from any sequence
//! number and waits for more, the scheduler's `Forget` drops a session. Two implementations:
//! [`memory::MemoryStore`] (local mode: gone when the process ends) and [`sqlite::SqliteStore`]
//! (a coordinator with a `--data-dir`). A later one (PostgreSQL, for active/standby coordinators)
//! implements the same two traits; nothing above this module knows how sessions are kept.
//!
//! **Durability.** Writes may be made durable later than they are made (a store batches them):
//! readers only ever see durable events, and [`SessionStore::when_durable`] runs its callback
//! once everything written before it is durable. The engine answers a `Submit` and acknowledges
//! a worker's report only from such a callback, so nothing anyone was told is lost by a crash.

pub mod history;
pub mod memory;
pub mod sqlite;

use std::sync::Arc;

use tokio::sync::watch;

use crate::core::{Event, Millis, RestoredSession, SessionId, SessionSpec};

/// One event of a session's log with its place in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    /// Its sequence number: from 1, no gaps.
    pub seq: u64,
    /// When the coordinator recorded it.
    pub time_ms: Millis,
    pub event: Event,
}

/// A store could not keep or read what it was given: the coordinator cannot keep its promises.
#[derive(Debug, thiserror::Error)]
#[error("the session store failed: {0}")]
pub struct StoreError(pub String);

/// Work to do once the writes before it are durable.
pub type Durable = Box<dyn FnOnce() + Send>;

/// All sessions.
pub trait SessionStore: Send + Sync + 'static {
    /// Record a new session (before anyone can learn its id) and return its empty log.
    fn create(&self, id: SessionId, spec: &SessionSpec, created_at: Millis) -> Result<Arc<dyn SessionLog>, StoreError>;
    /// The session's log, if the store has it.
    fn log(&self, id: SessionId) -> Option<Arc<dyn SessionLog>>;
    /// Drop a forgotten session and its log. Watchers already reading it may finish with what
    /// they have.
    fn forget(&self, id: SessionId);
    /// Replace the output of a finished session's reports with a note that it was dropped (the
    /// grid is over its total output limit); its events, outcomes and cases stay.
    fn drop_output(&self, id: SessionId);
    /// Run `done` once everything written so far is durable (never, if the store fails first).
    fn when_durable(&self, done: Durable);
    /// Why the store stopped keeping what it is given, once it has (the coordinator must stop).
    fn failed(&self) -> Option<StoreError> {
        None
    }
    /// Every session the store holds, oldest first, for a coordinator that starts: finished ones
    /// by their summary, unfinished ones with their whole log. Their logs are open afterwards.
    fn load(&self) -> Result<Vec<RestoredSession>, StoreError>;
}

/// The note a dropped report's output is replaced with.
pub const OUTPUT_DROPPED: &[u8] =
    b"[... testgrid dropped this output: the grid was over its total output limit (--max-output-total) ...]\n";

/// `event` with its report's output replaced by [`OUTPUT_DROPPED`], if it has output.
pub fn without_output(event: &Event) -> Option<Event> {
    let mut event = event.clone();
    let report = match &mut event {
        Event::TestFinished { report, .. } | Event::SetupFinished { report, .. } => report,
        _ => return None,
    };
    if report.output.is_empty() || report.output == OUTPUT_DROPPED {
        return None;
    }
    report.output_dropped_bytes += report.output.len() as u64;
    report.output = OUTPUT_DROPPED.to_vec();
    Some(event)
}

/// The output bytes `event` holds.
pub fn output_bytes(event: &Event) -> u64 {
    match event {
        Event::TestFinished { report, .. } | Event::SetupFinished { report, .. } => report.output.len() as u64,
        _ => 0,
    }
}

/// One session's numbered events.
pub trait SessionLog: Send + Sync {
    /// Append an event; returns its sequence number.
    fn append(&self, time_ms: Millis, event: Event) -> Result<u64, StoreError>;
    /// Durable events with sequence number `from` and later (at most `max`), and whether the log
    /// is complete (its last event, `Finished`, is durable).
    fn read_from(&self, from: u64, max: usize) -> Result<(Vec<Arc<StoredEvent>>, bool), StoreError>;
    /// A receiver that wakes when events become durable (it carries the last durable sequence
    /// number). Subscribe before reading, so that no append can fall between the read and the
    /// wait.
    fn subscribe(&self) -> watch::Receiver<u64>;
}
