//! The in-memory [`SessionStore`] (local mode): a map of logs, each a vector of events behind a
//! mutex with a `watch` channel that wakes its watchers. Everything is "durable" at once, and
//! gone when the coordinator stops.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use super::{Durable, SessionLog, SessionStore, StoreError, StoredEvent};
use crate::core::{Event, Millis, RestoredSession, SessionId, SessionSpec};

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
    fn create(&self, id: SessionId, _: &SessionSpec, _: Millis) -> Result<Arc<dyn SessionLog>, StoreError> {
        let log: Arc<MemoryLog> = Arc::clone(self.logs().entry(id).or_insert_with(|| Arc::new(MemoryLog::new())));
        Ok(log)
    }

    fn log(&self, id: SessionId) -> Option<Arc<dyn SessionLog>> {
        self.logs().get(&id).map(|log| Arc::clone(log) as Arc<dyn SessionLog>)
    }

    fn forget(&self, id: SessionId) {
        self.logs().remove(&id);
    }

    fn drop_output(&self, id: SessionId) {
        let Some(log) = self.logs().get(&id).cloned() else { return };
        let mut inner = log.lock();
        for stored in &mut inner.events {
            if let Some(event) = super::without_output(&stored.event) {
                *stored = Arc::new(StoredEvent { seq: stored.seq, time_ms: stored.time_ms, event });
            }
        }
    }

    fn when_durable(&self, done: Durable) {
        done();
    }

    fn load(&self) -> Result<Vec<RestoredSession>, StoreError> {
        Ok(Vec::new())
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

    fn read_from(&self, from: u64, max: usize) -> Result<(Vec<Arc<StoredEvent>>, bool), StoreError> {
        let inner = self.lock();
        let start = from.saturating_sub(1).min(inner.events.len() as u64) as usize;
        let batch: Vec<_> = inner.events[start..].iter().take(max).cloned().collect();
        Ok((batch, inner.finished))
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Totals;

    use crate::core::tests::{sid as id, spec};

    fn cancelled() -> Event {
        Event::Cancelled { reason: "x".into() }
    }

    fn create(store: &MemoryStore, n: u128) -> Arc<dyn SessionLog> {
        store.create(id(n), &spec(1), 0).expect("in memory")
    }

    fn read(log: &dyn SessionLog, from: u64, max: usize) -> (Vec<Arc<StoredEvent>>, bool) {
        log.read_from(from, max).expect("in memory")
    }

    #[test]
    fn numbers_from_one_and_resumes_anywhere() {
        let store = MemoryStore::new();
        let log = create(&store, 1);
        for _ in 0..5 {
            log.append(0, cancelled()).expect("in memory");
        }
        let (all, finished) = read(log.as_ref(), 0, 100);
        assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
        assert!(!finished);
        let (tail, _) = read(log.as_ref(), 4, 100);
        assert_eq!(tail.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![4, 5]);
        assert!(read(log.as_ref(), 9, 100).0.is_empty());
        assert_eq!(read(log.as_ref(), 1, 2).0.len(), 2);
        assert_eq!(all[0].event, cancelled(), "stored as the core emitted it");
    }

    #[test]
    fn finished_event_closes_the_log() {
        let store = MemoryStore::new();
        let log = create(&store, 1);
        let rx = log.subscribe();
        log.append(0, Event::Finished { totals: Totals::default(), cancel_reason: None }).expect("in memory");
        assert!(rx.has_changed().expect("sender alive"));
        assert!(read(log.as_ref(), 1, 10).1);
    }

    #[test]
    fn forgotten_logs_are_gone_but_readers_keep_theirs() {
        let store = MemoryStore::new();
        let kept = create(&store, 1);
        create(&store, 2);
        kept.append(0, cancelled()).expect("in memory");
        store.forget(id(1));
        assert!(store.log(id(1)).is_none());
        assert!(store.log(id(2)).is_some());
        assert_eq!(read(kept.as_ref(), 1, 10).0.len(), 1, "a watcher reading it finishes with what it has");
    }
}
