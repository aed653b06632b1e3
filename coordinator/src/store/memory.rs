//! The in-memory [`SessionStore`]: a map of logs, each a vector of events behind a mutex with a
//! `watch` channel that wakes its watchers. Gone when the coordinator stops.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use super::{SessionLog, SessionStore, StoreError, StoredEvent};
use crate::core::{Event, Millis, SessionId};

/// Every session's log, in memory.
#[derive(Default)]
pub struct MemoryStore {
    logs: Mutex<HashMap<SessionId, Arc<MemoryLog>>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn logs(&self) -> MutexGuard<'_, HashMap<SessionId, Arc<MemoryLog>>> {
        // Inserting into a map cannot leave it half-done, so a poisoned lock is safe to reuse.
        self.logs.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl SessionStore for MemoryStore {
    fn create(&self, id: SessionId) -> Arc<dyn SessionLog> {
        let log: Arc<MemoryLog> = Arc::clone(self.logs().entry(id).or_insert_with(|| Arc::new(MemoryLog::new())));
        log
    }

    fn log(&self, id: SessionId) -> Option<Arc<dyn SessionLog>> {
        self.logs().get(&id).map(|log| Arc::clone(log) as Arc<dyn SessionLog>)
    }

    fn list(&self) -> Vec<SessionId> {
        let mut ids: Vec<SessionId> = self.logs().keys().copied().collect();
        ids.sort();
        ids
    }

    fn forget(&self, id: SessionId) {
        self.logs().remove(&id);
    }
}

/// One session's events, numbered from 1 without gaps.
struct MemoryLog {
    inner: Mutex<LogInner>,
    /// Carries the last sequence number written; watchers wait on it.
    changed: watch::Sender<u64>,
}

struct LogInner {
    events: Vec<Arc<StoredEvent>>,
    finished: bool,
}

impl MemoryLog {
    fn new() -> Self {
        MemoryLog {
            inner: Mutex::new(LogInner { events: Vec::new(), finished: false }),
            changed: watch::Sender::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, LogInner> {
        // A panic while holding this lock leaves the log consistent (pushes are atomic), so a
        // poisoned lock is still safe to use.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl SessionLog for MemoryLog {
    fn append(&self, time_ms: Millis, event: Event) -> Result<u64, StoreError> {
        let finished = matches!(event, Event::Finished { .. });
        let seq = {
            let mut inner = self.lock();
            let seq = inner.events.len() as u64 + 1;
            inner.events.push(Arc::new(StoredEvent { seq, time_ms, event }));
            inner.finished |= finished;
            seq
        };
        self.changed.send_replace(seq);
        Ok(seq)
    }

    fn read_from(&self, from: u64, max: usize) -> (Vec<Arc<StoredEvent>>, bool) {
        let inner = self.lock();
        let start = from.saturating_sub(1).min(inner.events.len() as u64) as usize;
        let batch: Vec<_> = inner.events[start..].iter().take(max).cloned().collect();
        (batch, inner.finished)
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Totals;

    fn cancelled() -> Event {
        Event::Cancelled { reason: "x".into() }
    }

    fn id(n: u128) -> SessionId {
        SessionId(uuid::Uuid::from_u128(n))
    }

    #[test]
    fn numbers_from_one_and_resumes_anywhere() {
        let store = MemoryStore::new();
        let log = store.create(id(1));
        for _ in 0..5 {
            log.append(0, cancelled()).expect("in memory");
        }
        let (all, finished) = log.read_from(0, 100);
        assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
        assert!(!finished);
        let (tail, _) = log.read_from(4, 100);
        assert_eq!(tail.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![4, 5]);
        assert!(log.read_from(9, 100).0.is_empty());
        assert_eq!(log.read_from(1, 2).0.len(), 2);
        assert_eq!(all[0].event, cancelled(), "stored as the core emitted it");
    }

    #[test]
    fn finished_event_closes_the_log() {
        let store = MemoryStore::new();
        let log = store.create(id(1));
        let rx = log.subscribe();
        log.append(0, Event::Finished { totals: Totals::default(), cancel_reason: None }).expect("in memory");
        assert!(rx.has_changed().expect("sender alive"));
        assert!(log.read_from(1, 10).1);
    }

    #[test]
    fn forgotten_logs_are_gone_but_readers_keep_theirs() {
        let store = MemoryStore::new();
        let kept = store.create(id(1));
        store.create(id(2));
        assert_eq!(store.list(), vec![id(1), id(2)]);
        kept.append(0, cancelled()).expect("in memory");
        store.forget(id(1));
        assert!(store.log(id(1)).is_none());
        assert_eq!(store.list(), vec![id(2)]);
        assert_eq!(kept.read_from(1, 10).0.len(), 1, "a watcher reading it finishes with what it has");
    }
}
