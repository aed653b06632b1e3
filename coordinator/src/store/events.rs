//! Per-session event logs with sequence numbers, and waiting for new events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use testgrid_proto as pb;
use tokio::sync::watch;

use crate::core::SessionId;

/// One session's events, numbered from 1 without gaps.
pub struct SessionLog {
    inner: Mutex<LogInner>,
    /// Carries the last sequence number written; watchers wait on it.
    changed: watch::Sender<u64>,
}

struct LogInner {
    events: Vec<Arc<pb::SessionEvent>>,
    finished: bool,
}

impl SessionLog {
    fn new() -> Self {
        SessionLog {
            inner: Mutex::new(LogInner { events: Vec::new(), finished: false }),
            changed: watch::Sender::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, LogInner> {
        // A panic while holding this lock leaves the log consistent (pushes are atomic), so a
        // poisoned lock is still safe to use.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Append an event; returns its sequence number.
    pub fn append(&self, time_ms: u64, kind: pb::session_event::Kind) -> u64 {
        let finished = matches!(kind, pb::session_event::Kind::Finished(_));
        let seq = {
            let mut inner = self.lock();
            let seq = inner.events.len() as u64 + 1;
            inner.events.push(Arc::new(pb::SessionEvent { seq, time_ms, kind: Some(kind) }));
            inner.finished |= finished;
            seq
        };
        self.changed.send_replace(seq);
        seq
    }

    /// Events with sequence number `from` and later (at most `max`), and whether the log is
    /// complete (the session finished).
    pub fn read_from(&self, from: u64, max: usize) -> (Vec<Arc<pb::SessionEvent>>, bool) {
        let inner = self.lock();
        let start = from.saturating_sub(1).min(inner.events.len() as u64) as usize;
        let batch: Vec<_> = inner.events[start..].iter().take(max).cloned().collect();
        (batch, inner.finished)
    }

    /// How many events the log holds.
    pub fn len(&self) -> u64 {
        self.lock().events.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A receiver that wakes when an event is appended. Subscribe before reading so that no
    /// append can fall between the read and the wait.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// All sessions' logs.
#[derive(Default)]
pub struct EventStore {
    logs: Mutex<HashMap<SessionId, Arc<SessionLog>>>,
}

impl EventStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn logs(&self) -> MutexGuard<'_, HashMap<SessionId, Arc<SessionLog>>> {
        // Inserting into a map cannot leave it half-done, so a poisoned lock is safe to reuse.
        self.logs.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The session's log, created on first use.
    pub fn log(&self, id: SessionId) -> Arc<SessionLog> {
        Arc::clone(self.logs().entry(id).or_insert_with(|| Arc::new(SessionLog::new())))
    }

    /// Drop a forgotten session's log. Watchers already reading it keep their copy.
    pub fn remove(&self, id: SessionId) {
        self.logs().remove(&id);
    }

    /// The session's log if the session exists.
    pub fn get(&self, id: SessionId) -> Option<Arc<SessionLog>> {
        self.logs().get(&id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cancelled() -> pb::session_event::Kind {
        pb::session_event::Kind::Cancelled(pb::SessionCancelled { reason: "x".into() })
    }

    #[test]
    fn numbers_from_one_and_resumes_anywhere() {
        let log = SessionLog::new();
        for _ in 0..5 {
            log.append(0, cancelled());
        }
        let (all, finished) = log.read_from(0, 100);
        assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
        assert!(!finished);
        let (tail, _) = log.read_from(4, 100);
        assert_eq!(tail.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![4, 5]);
        assert!(log.read_from(9, 100).0.is_empty());
        assert_eq!(log.read_from(1, 2).0.len(), 2);
    }

    #[test]
    fn finished_event_closes_the_log() {
        let log = SessionLog::new();
        let rx = log.subscribe();
        log.append(0, pb::session_event::Kind::Finished(pb::SessionFinished::default()));
        assert!(rx.has_changed().expect("sender alive"));
        assert!(log.read_from(1, 10).1);
    }
}
