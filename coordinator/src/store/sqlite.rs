//! The durable [`SessionStore`]: SQLite (bundled, so nothing is needed on the machine) in WAL
//! mode, in `testgrid.db` under the coordinator's `--data-dir`.
//!
//! **One writer thread** owns the write connection. Creations, appends and forgets are queued
//! to it; it takes everything queued at once and commits it in one transaction (a group commit:
//! under load one fsync covers thousands of events), then marks those events durable, which
//! wakes their watchers, and runs the [`when_durable`](SessionStore::when_durable) callbacks
//! queued behind them. Nobody sees an event before its transaction is committed.
//!
//! An unfinished session's events are also kept in memory (the engine appends them and
//! watchers read them as they come); once its `Finished` event is durable they are dropped and
//! reads go to the database through a second connection (WAL lets it read while the writer
//! writes).
//!
//! **Schema** (version 1, in `PRAGMA user_version`; a newer one is refused):
//! - `sessions(id, created_at, name, spec, finished_at, summary)`: the spec and the summary
//!   (totals, cancel reason) as MessagePack with field names, so fields can be added;
//! - `events(session, seq, time_ms, event)`: keyed by (session, seq), the event as MessagePack.
//!
//! `synchronous = FULL`: a committed transaction survives a power cut, not only a crash of the
//! coordinator. Forgotten sessions are deleted and their pages returned to the file system
//! (`auto_vacuum = INCREMENTAL`), so the file stays as big as what is kept.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak, mpsc};
use std::thread::JoinHandle;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::error;

use super::{Durable, SessionLog, SessionStore, StoreError, StoredEvent};
use crate::core::{Event, Millis, Restored, RestoredSession, SessionId, SessionSpec, Totals};

/// The database file in the data directory.
pub const FILE: &str = "testgrid.db";
/// Held (locked) while a coordinator uses the data directory.
const LOCK_FILE: &str = "testgrid.lock";
const SCHEMA_VERSION: i64 = 1;
/// The most jobs one transaction takes: bounds how long the first of them waits to be durable.
const MAX_BATCH: usize = 16_384;

const SCHEMA: &str = "
CREATE TABLE sessions (
    id BLOB PRIMARY KEY NOT NULL,
    created_at INTEGER NOT NULL,
    name TEXT NOT NULL,
    spec BLOB NOT NULL,
    finished_at INTEGER,
    summary BLOB
);
CREATE TABLE events (
    session BLOB NOT NULL,
    seq INTEGER NOT NULL,
    time_ms INTEGER NOT NULL,
    event BLOB NOT NULL,
    PRIMARY KEY (session, seq)
) WITHOUT ROWID;
";

/// How a finished session ended, kept with it so that a restart needs none of its events.
#[derive(Serialize, Deserialize)]
struct Summary {
    totals: Totals,
    cancel_reason: Option<String>,
}

/// What the writer thread is asked to do, in order.
enum Job {
    Create {
        id: SessionId,
        created_at: Millis,
        name: String,
        spec: Vec<u8>,
    },
    Append {
        log: Arc<SqliteLog>,
        event: Arc<StoredEvent>,
    },
    Forget(SessionId),
    DropOutput(SessionId),
    Durable(Durable),
    /// The store is dropped: write what came before, then end.
    Stop,
}

/// What the store and its logs share.
struct Shared {
    path: PathBuf,
    /// For reading finished logs and loading; the writer has its own.
    reader: Mutex<Connection>,
    jobs: mpsc::Sender<Job>,
    /// Why the writer failed, once it has: nothing more is accepted.
    failed: OnceLock<String>,
}

impl Shared {
    fn reader(&self) -> MutexGuard<'_, Connection> {
        // A panic while reading leaves the connection as it was, so a poisoned lock is safe.
        self.reader.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn send(&self, job: Job) -> Result<(), StoreError> {
        if let Some(why) = self.failed.get() {
            return Err(StoreError(why.clone()));
        }
        self.jobs.send(job).map_err(|_| StoreError(format!("{}: the store is closed", self.path.display())))
    }

    fn error(&self, what: &str, e: impl std::fmt::Display) -> StoreError {
        StoreError(format!("{what} {}: {e}", self.path.display()))
    }
}

/// Sessions in a SQLite database.
pub struct SqliteStore {
    shared: Arc<Shared>,
    /// Logs of the unfinished sessions this process created or loaded (and of those that finished
    /// since, until forgotten).
    logs: Mutex<HashMap<SessionId, Arc<SqliteLog>>>,
    writer: Option<JoinHandle<()>>,
    /// Locked while this store is open: a second coordinator on the same data directory is
    /// refused instead of interleaving its writes with ours.
    _lock: File,
}

impl SqliteStore {
    /// Open (creating if missing) the database in `dir`, which must exist.
    pub fn open(dir: &Path) -> Result<SqliteStore, StoreError> {
        let lock_path = dir.join(LOCK_FILE);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StoreError(format!("cannot create {}: {e}", lock_path.display())))?;
        lock.try_lock().map_err(|e| match e {
            std::fs::TryLockError::WouldBlock => StoreError(format!(
                "another coordinator is using the data directory {}: stop it, or give this one another --data-dir",
                dir.display()
            )),
            std::fs::TryLockError::Error(e) => StoreError(format!("cannot lock {}: {e}", lock_path.display())),
        })?;
        let path = dir.join(FILE);
        let opening = |e: rusqlite::Error| {
            StoreError(format!(
                "cannot open the session database {}: {e}; check that --data-dir is writable",
                path.display()
            ))
        };
        let writer = Connection::open(&path).map_err(opening)?;
        let version: i64 = writer.pragma_query_value(None, "user_version", |row| row.get(0)).map_err(opening)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError(format!(
                "the session database {} was written by a newer testgrid (schema {version}; this one knows up to \
                 {SCHEMA_VERSION}): run that version, or give this one another --data-dir",
                path.display()
            )));
        }
        if version == 0 {
            // auto_vacuum only takes effect on a database without tables.
            writer.pragma_update(None, "auto_vacuum", "INCREMENTAL").map_err(opening)?;
            writer.execute_batch(SCHEMA).map_err(opening)?;
            writer.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(opening)?;
        }
        let mode: String =
            writer.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0)).map_err(opening)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError(format!(
                "the session database {} cannot use a write-ahead log (journal mode {mode}): put --data-dir on a \
                 local file system",
                path.display()
            )));
        }
        writer.pragma_update(None, "synchronous", "FULL").map_err(opening)?;
        let reader = Connection::open(&path).map_err(opening)?;
        for conn in [&writer, &reader] {
            conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(opening)?;
        }
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared { path, reader: Mutex::new(reader), jobs: tx, failed: OnceLock::new() });
        let for_writer = Arc::downgrade(&shared);
        let writer = std::thread::Builder::new()
            .name("session-store".into())
            .spawn(move || write_loop(writer, rx, for_writer))
            .map_err(|e| StoreError(format!("cannot start the session store's writer: {e}")))?;
        Ok(SqliteStore { shared, logs: Mutex::new(HashMap::new()), writer: Some(writer), _lock: lock })
    }

    fn logs(&self) -> MutexGuard<'_, HashMap<SessionId, Arc<SqliteLog>>> {
        // Inserting into a map cannot leave it half-done, so a poisoned lock is safe to reuse.
        self.logs.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn new_log(&self, id: SessionId, state: LogState) -> Arc<SqliteLog> {
        let durable = watch::Sender::new(state.durable);
        Arc::new_cyclic(|me| SqliteLog {
            me: me.clone(),
            id,
            shared: Arc::clone(&self.shared),
            state: Mutex::new(state),
            durable,
        })
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Whatever was queued is written before the thread ends (sent even after a failure, or
        // the thread would wait for jobs forever: the logs keep the channel open).
        let _ = self.shared.jobs.send(Job::Stop);
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

fn id_bytes(id: SessionId) -> [u8; 16] {
    *id.0.as_bytes()
}

impl SessionStore for SqliteStore {
    fn create(&self, id: SessionId, spec: &SessionSpec, created_at: Millis) -> Result<Arc<dyn SessionLog>, StoreError> {
        let encoded = rmp_serde::to_vec_named(spec).map_err(|e| self.shared.error("cannot encode a session for", e))?;
        self.shared.send(Job::Create { id, created_at, name: spec.name.clone(), spec: encoded })?;
        let log = self.new_log(id, LogState::open(Vec::new()));
        self.logs().insert(id, Arc::clone(&log));
        Ok(log)
    }

    fn log(&self, id: SessionId) -> Option<Arc<dyn SessionLog>> {
        if let Some(log) = self.logs().get(&id) {
            return Some(Arc::clone(log) as Arc<dyn SessionLog>);
        }
        // A finished session from before a restart: its events are read from the database.
        let known = self
            .shared
            .reader()
            .query_row("SELECT 1 FROM sessions WHERE id = ?1", [&id_bytes(id)[..]], |_| Ok(()))
            .optional();
        match known {
            Ok(Some(())) => {}
            Ok(None) => return None,
            Err(e) => {
                error!(session_id = %id, error = %e, "cannot read the session database");
                return None;
            }
        }
        // Not kept in the map: it holds nothing but its id, and a session being forgotten must
        // not come back into it.
        Some(self.new_log(id, LogState::closed()))
    }

    fn forget(&self, id: SessionId) {
        self.logs().remove(&id);
        if let Err(e) = self.shared.send(Job::Forget(id)) {
            error!(session_id = %id, error = %e, "cannot forget a session");
        }
    }

    fn drop_output(&self, id: SessionId) {
        if let Err(e) = self.shared.send(Job::DropOutput(id)) {
            error!(session_id = %id, error = %e, "cannot drop a session's output");
        }
    }

    fn when_durable(&self, done: Durable) {
        // If the store failed, `done` is dropped: what it would have confirmed is not durable.
        let _ = self.shared.send(Job::Durable(done));
    }

    fn failed(&self) -> Option<StoreError> {
        self.shared.failed.get().map(|why| StoreError(why.clone()))
    }

    fn load(&self) -> Result<Vec<RestoredSession>, StoreError> {
        let damaged = |e: &dyn std::fmt::Display| {
            StoreError(format!(
                "the session database {} cannot be read ({e}): move it away to start with no sessions",
                self.shared.path.display()
            ))
        };
        let rows: Vec<SessionRow> = {
            let conn = self.shared.reader();
            let mut stmt = conn
                .prepare("SELECT id, created_at, spec, finished_at, summary FROM sessions ORDER BY rowid")
                .map_err(|e| damaged(&e))?;
            stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?)))
                .and_then(|rows| rows.collect())
                .map_err(|e| damaged(&e))?
        };
        // The report output each finished session's log holds (near enough: its events' size),
        // counted against the grid's total.
        let sizes: HashMap<Vec<u8>, i64> = {
            let conn = self.shared.reader();
            let mut stmt = conn
                .prepare("SELECT session, SUM(length(event)) FROM events GROUP BY session")
                .map_err(|e| damaged(&e))?;
            stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
                .and_then(|rows| rows.collect())
                .map_err(|e| damaged(&e))?
        };
        let mut sessions = Vec::with_capacity(rows.len());
        for (id, created_at, spec, finished_at, summary) in rows {
            let output_bytes = sizes.get(&id).map_or(0, |&n| n.max(0) as u64);
            let id = <[u8; 16]>::try_from(id.as_slice())
                .map(|bytes| SessionId(uuid::Uuid::from_bytes(bytes)))
                .map_err(|_| damaged(&"a session id is not 16 bytes"))?;
            let spec: SessionSpec =
                rmp_serde::from_slice(&spec).map_err(|e| damaged(&format!("session {id}'s spec: {e}")))?;
            let state = match finished_at {
                Some(finished_at) => {
                    let summary: Summary = summary
                        .as_deref()
                        .map(rmp_serde::from_slice)
                        .transpose()
                        .map_err(|e| damaged(&format!("session {id}'s summary: {e}")))?
                        .unwrap_or(Summary { totals: Totals::default(), cancel_reason: None });
                    Restored::Finished {
                        finished_at: finished_at as Millis,
                        totals: summary.totals,
                        cancel_reason: summary.cancel_reason,
                        output_bytes,
                    }
                }
                None => {
                    let events = read_events(&self.shared.reader(), id, 1, usize::MAX).map_err(|e| damaged(&e))?;
                    if events.iter().enumerate().any(|(i, stored)| stored.seq != i as u64 + 1) {
                        return Err(damaged(&format!("session {id}'s events are not numbered 1, 2, 3…")));
                    }
                    let restored = events.iter().map(|stored| stored.event.clone()).collect();
                    self.logs().insert(id, self.new_log(id, LogState::open(events)));
                    Restored::Unfinished { events: restored }
                }
            };
            sessions.push(RestoredSession { id, spec, created_at: created_at as Millis, state });
        }
        Ok(sessions)
    }
}

/// A `sessions` row: id, created_at, spec, finished_at, summary.
type SessionRow = (Vec<u8>, i64, Vec<u8>, Option<i64>, Option<Vec<u8>>);

/// A log's events from `from` on (at most `max`), from the database.
fn read_events(conn: &Connection, id: SessionId, from: u64, max: usize) -> Result<Vec<Arc<StoredEvent>>, String> {
    let mut stmt = conn
        .prepare_cached("SELECT seq, time_ms, event FROM events WHERE session = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3")
        .map_err(|e| e.to_string())?;
    let limit = i64::try_from(max).unwrap_or(i64::MAX);
    let rows = stmt
        .query_map(params![&id_bytes(id)[..], from as i64, limit], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?, row.get::<_, Vec<u8>>(2)?))
        })
        .map_err(|e| e.to_string())?;
    let mut events = Vec::new();
    for row in rows {
        let (seq, time_ms, event) = row.map_err(|e| e.to_string())?;
        let event: Event = rmp_serde::from_slice(&event).map_err(|e| format!("session {id}'s event {seq}: {e}"))?;
        events.push(Arc::new(StoredEvent { seq: seq as u64, time_ms: time_ms as Millis, event }));
    }
    Ok(events)
}

/// One session's log.
struct SqliteLog {
    /// Itself, to hand to the writer with each append.
    me: Weak<SqliteLog>,
    id: SessionId,
    shared: Arc<Shared>,
    state: Mutex<LogState>,
    /// Carries the last durable sequence number; watchers wait on it.
    durable: watch::Sender<u64>,
}

struct LogState {
    /// The number the next append gets.
    next: u64,
    /// The last durable sequence number.
    durable: u64,
    /// Every event, durable or not, while the log is open; `None` once `Finished` is durable
    /// (reads go to the database).
    events: Option<Vec<Arc<StoredEvent>>>,
}

impl LogState {
    /// A log still being written, holding `events` (all durable).
    fn open(events: Vec<Arc<StoredEvent>>) -> Self {
        let last = events.last().map_or(0, |e| e.seq);
        LogState { next: last + 1, durable: last, events: Some(events) }
    }

    /// A finished log, read from the database.
    fn closed() -> Self {
        LogState { next: u64::MAX, durable: u64::MAX, events: None }
    }
}

impl SqliteLog {
    fn lock(&self) -> MutexGuard<'_, LogState> {
        // Every change under this lock is a single assignment or push, so a poisoned lock still
        // guards a consistent state.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The writer committed events up to `seq` (`finished`: the last is `Finished`).
    fn made_durable(&self, seq: u64, finished: bool) {
        {
            let mut state = self.lock();
            state.durable = state.durable.max(seq);
            if finished {
                state.events = None;
            }
        }
        self.durable.send_replace(seq);
    }
}

impl SessionLog for SqliteLog {
    fn append(&self, time_ms: Millis, event: Event) -> Result<u64, StoreError> {
        let Some(me) = self.me.upgrade() else {
            // `self` is borrowed, so an `Arc` of it exists.
            return Err(StoreError("a session log was appended to while being dropped".into()));
        };
        let mut state = self.lock();
        let seq = state.next;
        let stored = Arc::new(StoredEvent { seq, time_ms, event });
        self.shared.send(Job::Append { log: me, event: Arc::clone(&stored) })?;
        state.next += 1;
        if let Some(events) = &mut state.events {
            events.push(stored);
        }
        Ok(seq)
    }

    fn read_from(&self, from: u64, max: usize) -> Result<(Vec<Arc<StoredEvent>>, bool), StoreError> {
        {
            let state = self.lock();
            if let Some(events) = &state.events {
                let durable = state.durable.min(events.len() as u64) as usize;
                let start = (from.saturating_sub(1) as usize).min(durable);
                return Ok((events[start..durable].iter().take(max).cloned().collect(), false));
            }
        }
        let events = read_events(&self.shared.reader(), self.id, from.max(1), max)
            .map_err(|e| self.shared.error("cannot read the session database", e))?;
        Ok((events, true))
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.durable.subscribe()
    }
}

/// The writer thread: take what is queued, commit it in one transaction, then tell.
fn write_loop(mut conn: Connection, jobs: mpsc::Receiver<Job>, shared: Weak<Shared>) {
    let mut stop = false;
    while !stop {
        let Ok(first) = jobs.recv() else { return };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if let Some(at) = batch.iter().position(|job| matches!(job, Job::Stop)) {
            batch.truncate(at);
            stop = true;
        }
        let Some(shared) = shared.upgrade() else { return };
        if shared.failed.get().is_some() {
            // Drop it all: the callbacks must not confirm what was not written.
            continue;
        }
        match commit(&mut conn, &batch) {
            Ok(forgot) => {
                if forgot && let Err(e) = vacuum(&conn) {
                    error!(error = %e, "cannot return a forgotten session's space to the file system");
                }
                tell(batch);
            }
            Err(e) => {
                let why = format!("cannot write the session database {}: {e}", shared.path.display());
                error!("{why}");
                let _ = shared.failed.set(why);
            }
        }
    }
}

/// Return free pages to the file system. The pragma frees one page per step, so it is stepped
/// to the end.
fn vacuum(conn: &Connection) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached("PRAGMA incremental_vacuum")?;
    let mut rows = stmt.query([])?;
    while rows.next()?.is_some() {}
    Ok(())
}

/// Write a batch in one transaction; whether it forgot any session.
fn commit(conn: &mut Connection, batch: &[Job]) -> Result<bool, String> {
    let tx = conn.transaction().map_err(|e| e.to_string())?;
    let mut forgot = false;
    {
        let sql = |e: rusqlite::Error| e.to_string();
        let mut create = tx
            .prepare_cached("INSERT INTO sessions (id, created_at, name, spec) VALUES (?1, ?2, ?3, ?4)")
            .map_err(sql)?;
        let mut append = tx
            .prepare_cached("INSERT INTO events (session, seq, time_ms, event) VALUES (?1, ?2, ?3, ?4)")
            .map_err(sql)?;
        let mut finish =
            tx.prepare_cached("UPDATE sessions SET finished_at = ?2, summary = ?3 WHERE id = ?1").map_err(sql)?;
        let mut drop_events = tx.prepare_cached("DELETE FROM events WHERE session = ?1").map_err(sql)?;
        let mut drop_session = tx.prepare_cached("DELETE FROM sessions WHERE id = ?1").map_err(sql)?;
        for job in batch {
            match job {
                Job::Create { id, created_at, name, spec } => {
                    create.execute(params![&id_bytes(*id)[..], *created_at as i64, name, spec]).map_err(sql)?;
                }
                Job::Append { log, event } => {
                    let id = id_bytes(log.id);
                    let encoded = rmp_serde::to_vec_named(&event.event).map_err(|e| e.to_string())?;
                    append.execute(params![&id[..], event.seq as i64, event.time_ms as i64, encoded]).map_err(sql)?;
                    if let Event::Finished { totals, cancel_reason } = &event.event {
                        let summary = Summary { totals: *totals, cancel_reason: cancel_reason.clone() };
                        let summary = rmp_serde::to_vec_named(&summary).map_err(|e| e.to_string())?;
                        finish.execute(params![&id[..], event.time_ms as i64, summary]).map_err(sql)?;
                    }
                }
                Job::Forget(id) => {
                    drop_events.execute([&id_bytes(*id)[..]]).map_err(sql)?;
                    drop_session.execute([&id_bytes(*id)[..]]).map_err(sql)?;
                    forgot = true;
                }
                Job::DropOutput(id) => {
                    let id = id_bytes(*id);
                    let mut read = tx
                        .prepare_cached("SELECT seq, event FROM events WHERE session = ?1 AND length(event) > ?2")
                        .map_err(sql)?;
                    let mut rewrite = tx
                        .prepare_cached("UPDATE events SET event = ?3 WHERE session = ?1 AND seq = ?2")
                        .map_err(sql)?;
                    // Small events hold no output worth dropping.
                    let rows: Vec<(i64, Vec<u8>)> = read
                        .query_map(params![&id[..], 4096], |row| Ok((row.get(0)?, row.get(1)?)))
                        .and_then(|rows| rows.collect())
                        .map_err(sql)?;
                    for (seq, bytes) in rows {
                        let event: Event = rmp_serde::from_slice(&bytes).map_err(|e| e.to_string())?;
                        if let Some(event) = super::without_output(&event) {
                            let encoded = rmp_serde::to_vec_named(&event).map_err(|e| e.to_string())?;
                            rewrite.execute(params![&id[..], seq, encoded]).map_err(sql)?;
                        }
                    }
                    forgot = true;
                }
                Job::Durable(_) | Job::Stop => {}
            }
        }
    }
    tx.commit().map_err(|e| e.to_string())?;
    Ok(forgot)
}

/// A committed batch: mark its events durable (waking watchers), then run its callbacks.
fn tell(batch: Vec<Job>) {
    // The last sequence number per log, and whether it is `Finished`.
    let mut latest: HashMap<SessionId, (Arc<SqliteLog>, u64, bool)> = HashMap::new();
    let mut callbacks = Vec::new();
    for job in batch {
        match job {
            Job::Append { log, event } => {
                let finished = matches!(event.event, Event::Finished { .. });
                latest.insert(log.id, (log, event.seq, finished));
            }
            Job::Durable(done) => callbacks.push(done),
            Job::Create { .. } | Job::Forget(_) | Job::DropOutput(_) | Job::Stop => {}
        }
    }
    for (log, seq, finished) in latest.into_values() {
        log.made_durable(seq, finished);
    }
    for done in callbacks {
        done();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::core::tests::{report, sid, spec};
    use crate::core::{Outcome, Report};

    /// Wait until everything written to `store` so far is durable.
    fn flush(store: &SqliteStore) {
        let (tx, rx) = std::sync::mpsc::channel();
        store.when_durable(Box::new(move || {
            let _ = tx.send(());
        }));
        rx.recv_timeout(Duration::from_secs(30)).expect("the writer commits within the deadline");
    }

    fn finished(passed: u32) -> Event {
        let totals = Totals { total: passed, passed, ..Totals::default() };
        Event::Finished { totals, cancel_reason: None }
    }

    fn test_finished(test: u32, output: &[u8]) -> Event {
        let report = Report { output: output.to_vec(), ..report(Outcome::Passed) };
        Event::TestFinished { test, attempt: 0, worker: "w".into(), is_final: true, outcome: Outcome::Passed, report }
    }

    fn seqs(events: &[Arc<StoredEvent>]) -> Vec<u64> {
        events.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn a_finished_sessions_output_is_dropped_and_its_outcomes_stay() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path()).expect("open");
        let log = store.create(sid(1), &spec(2), 1).expect("create");
        log.append(2, test_finished(0, &vec![b'x'; 100_000])).expect("append");
        log.append(3, test_finished(1, b"short")).expect("append");
        log.append(4, finished(2)).expect("append");
        flush(&store);
        store.drop_output(sid(1));
        flush(&store);
        let (events, complete) = store.log(sid(1)).expect("kept").read_from(1, 10).expect("read");
        assert!(complete);
        let outputs: Vec<&[u8]> = events
            .iter()
            .filter_map(|e| match &e.event {
                Event::TestFinished { report, .. } => Some(report.output.as_slice()),
                _ => None,
            })
            .collect();
        assert_eq!(outputs, vec![super::super::OUTPUT_DROPPED, b"short"], "only output worth dropping goes");
        assert!(matches!(events[2].event, Event::Finished { .. }));
        drop(store);
        let reopened = SqliteStore::open(dir.path()).expect("reopen");
        let sessions = reopened.load().expect("load");
        assert!(
            matches!(sessions[0].state, Restored::Finished { output_bytes, .. } if output_bytes < 10_000),
            "counted as it is now: {:?}",
            sessions[0].state
        );
    }

    #[test]
    fn a_reopened_store_has_every_session_as_it_was_left() {
        let dir = tempfile::tempdir().expect("temp dir");
        let spec = spec(2);
        {
            let store = SqliteStore::open(dir.path()).expect("open");
            let running = store.create(sid(1), &spec, 10).expect("create");
            running
                .append(
                    11,
                    Event::Created {
                        name: "t".into(),
                        paths: spec.tests.clone(),
                        order: Vec::new(),
                        estimates: Vec::new(),
                    },
                )
                .expect("append");
            running.append(12, test_finished(0, b"out\0put")).expect("append");
            let done = store.create(sid(2), &spec, 20).expect("create");
            done.append(21, test_finished(0, b"")).expect("append");
            done.append(22, finished(1)).expect("append");
            flush(&store);
            let (events, complete) = running.read_from(1, 10).expect("read");
            assert_eq!((seqs(&events), complete), (vec![1, 2], false));
            let (events, complete) = done.read_from(2, 10).expect("read");
            assert_eq!((seqs(&events), complete), (vec![2], true), "a finished log reads from the database");
        }
        let store = SqliteStore::open(dir.path()).expect("reopen");
        let sessions = store.load().expect("load");
        assert_eq!(sessions.len(), 2);
        assert_eq!((sessions[0].id, sessions[0].created_at, &sessions[0].spec), (sid(1), 10, &spec));
        match &sessions[0].state {
            Restored::Unfinished { events } => assert_eq!(events[1], test_finished(0, b"out\0put")),
            other => panic!("session 1 is unfinished, not {other:?}"),
        }
        let totals = Totals { total: 1, passed: 1, ..Totals::default() };
        assert!(
            matches!(sessions[1].state, Restored::Finished { finished_at: 22, totals: t, cancel_reason: None, output_bytes }
                if t == totals && output_bytes > 0),
            "{:?}",
            sessions[1].state
        );
        // The unfinished log goes on where it stopped; the finished one is still readable.
        let running = store.log(sid(1)).expect("loaded");
        assert_eq!(running.append(30, finished(1)).expect("append"), 3);
        flush(&store);
        let (events, complete) = running.read_from(1, 10).expect("read");
        assert_eq!((seqs(&events), complete), (vec![1, 2, 3], true));
        let (events, complete) = store.log(sid(2)).expect("kept").read_from(1, 1).expect("read");
        assert_eq!((seqs(&events), complete), (vec![1], true), "reads are bounded by `max`");
        assert!(store.log(sid(3)).is_none());
    }

    #[test]
    fn watchers_wake_when_events_are_durable() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path()).expect("open");
        let log = store.create(sid(1), &spec(1), 0).expect("create");
        let mut rx = log.subscribe();
        let seq = log.append(1, Event::Cancelled { reason: "x".into() }).expect("append");
        flush(&store);
        assert!(rx.has_changed().expect("log alive"));
        assert_eq!(*rx.borrow_and_update(), seq);
        assert_eq!(seqs(&log.read_from(1, 10).expect("read").0), vec![seq]);
    }

    #[test]
    fn forgotten_sessions_leave_the_file_and_its_size() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path()).expect("open");
        let big = vec![b'x'; 64 << 10];
        let size = || {
            std::fs::metadata(dir.path().join(FILE)).map(|m| m.len()).unwrap_or(0)
                + std::fs::metadata(dir.path().join(format!("{FILE}-wal"))).map(|m| m.len()).unwrap_or(0)
        };
        for n in 0..40 {
            let log = store.create(sid(n), &spec(1), 0).expect("create");
            log.append(0, test_finished(0, &big)).expect("append");
            log.append(0, finished(1)).expect("append");
        }
        flush(&store);
        for n in 0..40 {
            store.forget(sid(n));
        }
        flush(&store);
        store.shared.reader().execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").expect("checkpoint");
        assert!(store.load().expect("load").is_empty());
        let pages: i64 = store.shared.reader().query_row("PRAGMA page_count", [], |r| r.get(0)).expect("pages");
        assert!(pages < 64, "40 sessions of 64 KiB were returned to the file system: {pages} pages, {} bytes", size());
    }

    #[test]
    fn a_second_coordinator_on_the_same_data_dir_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let _first = SqliteStore::open(dir.path()).expect("open");
        let second = SqliteStore::open(dir.path()).err().expect("refused");
        assert!(second.0.contains("another coordinator"), "{second}");
    }

    #[test]
    fn a_database_from_a_newer_testgrid_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        drop(SqliteStore::open(dir.path()).expect("open"));
        let conn = Connection::open(dir.path().join(FILE)).expect("open");
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1).expect("set version");
        drop(conn);
        let refused = SqliteStore::open(dir.path()).err().expect("refused");
        assert!(refused.0.contains("newer testgrid"), "{refused}");
    }

    #[test]
    fn a_damaged_event_stops_the_load_with_a_way_out() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let store = SqliteStore::open(dir.path()).expect("open");
            store.create(sid(1), &spec(1), 0).expect("create").append(0, test_finished(0, b"")).expect("append");
            flush(&store);
        }
        let conn = Connection::open(dir.path().join(FILE)).expect("open");
        conn.execute("UPDATE events SET event = x'c1'", []).expect("damage");
        drop(conn);
        let store = SqliteStore::open(dir.path()).expect("reopen");
        let damaged = store.load().expect_err("refused");
        assert!(damaged.0.contains("move it away"), "{damaged}");
    }
}
