//! What the coordinator keeps about sessions beyond the scheduler's state: the numbered event
//! log of every session, which watchers read and resume from. In memory for now; the log is
//! already the unit that persistence will write.

mod events;

pub use events::{EventStore, SessionLog};
