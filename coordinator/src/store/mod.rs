//! What the coordinator keeps about sessions beyond the scheduler's state: every session's
//! numbered event log, exactly as the core emitted it, which watchers read and resume from.
//!
//! [`SessionStore`] is the seam: the engine appends, `Watch` reads from any sequence number and
//! waits for more, the scheduler's `Forget` drops a log. [`memory::MemoryStore`] keeps it in memory; a
//! durable store (embedded, or PostgreSQL for a shared grid) implements the same two traits.
//! Nothing above this module knows how events are kept.

pub mod memory;

use std::sync::Arc;

use tokio::sync::watch;

use crate::core::{Event, Millis, SessionId};

/// One event of a session's log with its place in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    /// Its sequence number: from 1, no gaps.
    pub seq: u64,
    /// When the coordinator recorded it.
    pub time_ms: Millis,
    pub event: Event,
}

/// A store could not keep an event: the coordinator cannot keep its promises to watchers.
#[derive(Debug, thiserror::Error)]
#[error("the session store failed: {0}")]
pub struct StoreError(pub String);

/// All sessions' logs.
pub trait SessionStore: Send + Sync + 'static {
    /// Create an empty log for a new session (before anyone can learn its id) and return it.
    fn create(&self, id: SessionId) -> Arc<dyn SessionLog>;
    /// The session's log, if the store has it.
    fn log(&self, id: SessionId) -> Option<Arc<dyn SessionLog>>;
    /// Every session the store holds a log of.
    fn list(&self) -> Vec<SessionId>;
    /// Drop a forgotten session's log. Watchers already reading it may finish with what they have.
    fn forget(&self, id: SessionId);
}

/// One session's numbered events.
pub trait SessionLog: Send + Sync {
    /// Append an event; returns its sequence number.
    fn append(&self, time_ms: Millis, event: Event) -> Result<u64, StoreError>;
    /// Events with sequence number `from` and later (at most `max`), and whether the log is
    /// complete (its last event is `Finished`).
    fn read_from(&self, from: u64, max: usize) -> (Vec<Arc<StoredEvent>>, bool);
    /// A receiver that wakes when an event is appended (it carries the last sequence number).
    /// Subscribe before reading, so that no append can fall between the read and the wait.
    fn subscribe(&self) -> watch::Receiver<u64>;
}
