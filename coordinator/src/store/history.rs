//! Duration history: for every test of every project (and every case a test reports), an
//! exponentially weighted mean duration, its recent durations (for a high percentile), how many
//! runs were seen and how the last one ended. The scheduler orders a session's queue from it
//! ([`crate::core::plan`]); `testgrid plan` shows it.
//!
//! [`HistoryStore`] is the seam, like [`SessionStore`](super::SessionStore): a later PostgreSQL
//! store implements the same trait. Two implementations: [`MemoryHistory`] (no place to keep
//! it) and [`SqliteHistory`], a database file of its own: `history.db` in a coordinator's
//! `--data-dir`, or in the user's cache folder for local mode, where several `testgrid run`s may
//! share it at once (SQLite's locking and a busy timeout let them).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, mpsc};
use std::thread::JoinHandle;

use rusqlite::{Connection, OptionalExtension, params};
use tracing::error;

use super::{Durable, StoreError};
use crate::core::plan::Known;
use crate::core::{Millis, Outcome};
use crate::service::convert::{outcome_from_pb, outcome_to_pb};

/// One finished test (or case) to learn from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    pub test: String,
    /// The case's name, or empty for the test unit itself.
    pub case: String,
    pub duration_ms: u64,
    pub outcome: Outcome,
}

/// Every project's durations.
pub trait HistoryStore: Send + Sync + 'static {
    /// What is known of `project`'s test units.
    fn project(&self, project: &str) -> Result<HashMap<String, Known>, StoreError>;
    /// Learn from finished tests (kept later; see [`HistoryStore::when_durable`]).
    fn record(&self, project: &str, now: Millis, samples: Vec<Sample>);
    /// Run `done` once everything recorded so far is kept.
    fn when_durable(&self, done: Durable);
}

/// How much a new duration weighs in the mean.
const WEIGHT: f64 = 0.3;
/// Recent durations kept per test for its percentile.
const RECENT: usize = 20;
/// The most cases of one test learned from: beyond that they are not worth a row each.
const MAX_CASES_PER_TEST: usize = 2_000;
/// The longest test or case name kept (longer ones are skipped: never seen again anyway).
const MAX_NAME_BYTES: usize = 4_096;
/// Tests not seen for this long are forgotten (renamed, deleted).
const FORGET_AFTER_MS: u64 = 90 * 24 * 3600 * 1000;

/// One test's (or case's) history.
#[derive(Clone, Debug, PartialEq)]
struct Entry {
    mean_ms: f64,
    recent: Vec<u32>,
    runs: u32,
    last: Outcome,
    seen_ms: Millis,
}

impl Entry {
    fn learn(old: Option<Entry>, duration_ms: u64, outcome: Outcome, now: Millis) -> Entry {
        let d = duration_ms.min(u64::from(u32::MAX)) as f64;
        // A cancelled or lost run says nothing of how long the test takes.
        let timed = !matches!(outcome, Outcome::Cancelled | Outcome::Lost);
        match old {
            None => Entry {
                mean_ms: if timed { d } else { 0.0 },
                recent: if timed { vec![d as u32] } else { Vec::new() },
                runs: 1,
                last: outcome,
                seen_ms: now,
            },
            Some(mut e) => {
                if timed {
                    e.mean_ms = if e.recent.is_empty() { d } else { WEIGHT * d + (1.0 - WEIGHT) * e.mean_ms };
                    e.recent.push(d as u32);
                    if e.recent.len() > RECENT {
                        e.recent.remove(0);
                    }
                }
                e.runs = e.runs.saturating_add(1);
                e.last = outcome;
                e.seen_ms = now;
                e
            }
        }
    }

    fn known(&self) -> Known {
        let mut sorted = self.recent.clone();
        sorted.sort_unstable();
        let p90 = sorted.get((sorted.len() * 9).div_ceil(10).saturating_sub(1)).copied().unwrap_or(0);
        Known { mean_ms: self.mean_ms.round() as u64, p90_ms: u64::from(p90), runs: self.runs, last: self.last }
    }
}

/// Which samples are worth learning from: names within bounds, at most so many cases per test.
fn bounded(samples: Vec<Sample>) -> impl Iterator<Item = Sample> {
    let mut cases: HashMap<String, usize> = HashMap::new();
    samples.into_iter().filter(move |s| {
        if s.test.len() > MAX_NAME_BYTES || s.case.len() > MAX_NAME_BYTES {
            return false;
        }
        if s.case.is_empty() {
            return true;
        }
        let n = cases.entry(s.test.clone()).or_default();
        *n += 1;
        *n <= MAX_CASES_PER_TEST
    })
}

/// History kept in memory (gone with the process).
#[derive(Default)]
pub struct MemoryHistory {
    entries: Mutex<HashMap<(String, String, String), Entry>>,
}

impl MemoryHistory {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String, String), Entry>> {
        // Each update replaces a whole entry, so a poisoned map is consistent.
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl HistoryStore for MemoryHistory {
    fn project(&self, project: &str) -> Result<HashMap<String, Known>, StoreError> {
        Ok(self
            .entries()
            .iter()
            .filter(|((p, _, case), _)| p == project && case.is_empty())
            .map(|((_, test, _), e)| (test.clone(), e.known()))
            .collect())
    }

    fn record(&self, project: &str, now: Millis, samples: Vec<Sample>) {
        let mut entries = self.entries();
        for s in bounded(samples) {
            let key = (project.to_string(), s.test, s.case);
            let old = entries.remove(&key);
            entries.insert(key, Entry::learn(old, s.duration_ms, s.outcome, now));
        }
    }

    fn when_durable(&self, done: Durable) {
        done();
    }
}

/// The history database's file name.
pub const FILE: &str = "history.db";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS durations (
    project TEXT NOT NULL,
    test TEXT NOT NULL,
    case_name TEXT NOT NULL,
    mean_ms REAL NOT NULL,
    recent BLOB NOT NULL,
    runs INTEGER NOT NULL,
    last_outcome TEXT NOT NULL,
    seen_ms INTEGER NOT NULL,
    PRIMARY KEY (project, test, case_name)
) WITHOUT ROWID;
";

enum Job {
    Record {
        project: String,
        now: Millis,
        samples: Vec<Sample>,
    },
    /// Forget tests not seen since `now` less [`FORGET_AFTER_MS`].
    Forget {
        now: Millis,
    },
    Durable(Durable),
    Stop,
}

/// History in a SQLite file, written by one thread in batches.
pub struct SqliteHistory {
    path: PathBuf,
    reader: Mutex<Connection>,
    jobs: mpsc::Sender<Job>,
    writer: Option<JoinHandle<()>>,
    failed: std::sync::Arc<OnceLock<String>>,
}

impl SqliteHistory {
    /// Open (creating if missing) `history.db` in `dir`, which must exist. `durable`: every
    /// batch survives a power cut (a coordinator's data directory); otherwise a crash of this
    /// process, not of the machine (a cache).
    pub fn open(dir: &Path, durable: bool) -> Result<SqliteHistory, StoreError> {
        let path = dir.join(FILE);
        let opening = |e: rusqlite::Error| {
            StoreError(format!("cannot open the duration history {}: {e}; check that it is writable", path.display()))
        };
        let writer = Connection::open(&path).map_err(opening)?;
        writer.busy_timeout(std::time::Duration::from_secs(10)).map_err(opening)?;
        let _: String =
            writer.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0)).map_err(opening)?;
        writer.pragma_update(None, "synchronous", if durable { "FULL" } else { "NORMAL" }).map_err(opening)?;
        writer.execute_batch(SCHEMA).map_err(opening)?;
        let reader = Connection::open(&path).map_err(opening)?;
        reader.busy_timeout(std::time::Duration::from_secs(10)).map_err(opening)?;
        let (jobs, rx) = mpsc::channel();
        let failed = std::sync::Arc::new(OnceLock::new());
        let thread = {
            let (failed, path) = (std::sync::Arc::clone(&failed), path.clone());
            std::thread::Builder::new()
                .name("history".into())
                .spawn(move || write_loop(writer, rx, &failed, &path))
                .map_err(|e| StoreError(format!("cannot start the duration history's writer: {e}")))?
        };
        Ok(SqliteHistory { path, reader: Mutex::new(reader), jobs, writer: Some(thread), failed })
    }

    /// Forget tests not seen for [`FORGET_AFTER_MS`]: queued like any write.
    pub fn forget_older_than(&self, now: Millis) {
        let _ = self.jobs.send(Job::Forget { now });
    }
}

impl Drop for SqliteHistory {
    fn drop(&mut self) {
        let _ = self.jobs.send(Job::Stop);
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl HistoryStore for SqliteHistory {
    fn project(&self, project: &str) -> Result<HashMap<String, Known>, StoreError> {
        let conn = self.reader.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let read =
            |e: rusqlite::Error| StoreError(format!("cannot read the duration history {}: {e}", self.path.display()));
        let mut stmt = conn
            .prepare_cached(
                "SELECT test, mean_ms, recent, runs, last_outcome, seen_ms FROM durations \
                 WHERE project = ?1 AND case_name = ''",
            )
            .map_err(read)?;
        let rows = stmt.query_map([project], |row| Ok((row.get::<_, String>(0)?, entry_of(row, 1)?))).map_err(read)?;
        let mut known = HashMap::new();
        for row in rows {
            let (test, entry) = row.map_err(read)?;
            known.insert(test, entry.known());
        }
        Ok(known)
    }

    fn record(&self, project: &str, now: Millis, samples: Vec<Sample>) {
        if self.failed.get().is_some() {
            return;
        }
        let _ = self.jobs.send(Job::Record { project: project.to_string(), now, samples });
    }

    fn when_durable(&self, done: Durable) {
        if self.failed.get().is_some() {
            // Nothing more is kept: waiting would wait forever.
            done();
            return;
        }
        let _ = self.jobs.send(Job::Durable(done));
    }
}

/// An entry from the columns mean_ms, recent, runs, last_outcome, seen_ms starting at `at`.
fn entry_of(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Entry> {
    let recent: Vec<u8> = row.get(at + 1)?;
    let last: String = row.get(at + 3)?;
    Ok(Entry {
        mean_ms: row.get(at)?,
        recent: recent.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        runs: row.get::<_, i64>(at + 2)?.clamp(0, i64::from(u32::MAX)) as u32,
        last: testgrid_proto::Outcome::from_key(&last)
            .and_then(|o| outcome_from_pb(o as i32).ok())
            .unwrap_or(Outcome::Passed),
        seen_ms: row.get::<_, i64>(at + 4)?.max(0) as Millis,
    })
}

fn write_loop(mut conn: Connection, rx: mpsc::Receiver<Job>, failed: &OnceLock<String>, path: &Path) {
    loop {
        let Ok(first) = rx.recv() else { return };
        let mut batch = vec![first];
        while batch.len() < 16_384 {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let stop = batch.iter().any(|j| matches!(j, Job::Stop));
        let mut done = Vec::new();
        let mut records = Vec::new();
        for job in batch {
            match job {
                Job::Record { project, now, samples } => records.push(Write::Learn { project, now, samples }),
                Job::Forget { now } => records.push(Write::Forget { before: now.saturating_sub(FORGET_AFTER_MS) }),
                Job::Durable(d) => done.push(d),
                Job::Stop => {}
            }
        }
        if failed.get().is_none()
            && !records.is_empty()
            && let Err(e) = write(&mut conn, records)
        {
            // The history is a hint: a failure costs ordering, never a session.
            error!(path = %path.display(), error = %e, "the duration history cannot be written; it is no longer updated");
            let _ = failed.set(e.to_string());
        }
        for d in done {
            d();
        }
        if stop {
            return;
        }
    }
}

/// One change to the database, in the order it was asked for.
enum Write {
    Learn { project: String, now: Millis, samples: Vec<Sample> },
    Forget { before: Millis },
}

fn write(conn: &mut Connection, records: Vec<Write>) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut get = tx.prepare_cached(
            "SELECT mean_ms, recent, runs, last_outcome, seen_ms FROM durations \
             WHERE project = ?1 AND test = ?2 AND case_name = ?3",
        )?;
        let mut put = tx.prepare_cached(
            "INSERT OR REPLACE INTO durations (project, test, case_name, mean_ms, recent, runs, last_outcome, seen_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        let mut forget = tx.prepare_cached("DELETE FROM durations WHERE seen_ms < ?1")?;
        for record in records {
            let (project, now, samples) = match record {
                Write::Forget { before } => {
                    forget.execute([before as i64])?;
                    continue;
                }
                Write::Learn { project, now, samples } => (project, now, samples),
            };
            for s in bounded(samples) {
                let old = get.query_row(params![project, s.test, s.case], |row| entry_of(row, 0)).optional()?;
                let e = Entry::learn(old, s.duration_ms, s.outcome, now);
                let recent: Vec<u8> = e.recent.iter().flat_map(|d| d.to_le_bytes()).collect();
                put.execute(params![
                    project,
                    s.test,
                    s.case,
                    e.mean_ms,
                    recent,
                    i64::from(e.runs),
                    outcome_to_pb(e.last).key(),
                    e.seen_ms as i64
                ])?;
            }
        }
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(test: &str, ms: u64, outcome: Outcome) -> Sample {
        Sample { test: test.into(), case: String::new(), duration_ms: ms, outcome }
    }

    fn kept(history: &dyn HistoryStore) {
        let (tx, rx) = std::sync::mpsc::channel();
        history.when_durable(Box::new(move || {
            let _ = tx.send(());
        }));
        rx.recv_timeout(std::time::Duration::from_secs(30)).expect("the history keeps what it was given");
    }

    #[test]
    fn the_mean_weighs_recent_runs_and_the_percentile_is_of_the_recent_ones() {
        let mut e = Entry::learn(None, 1_000, Outcome::Passed, 1);
        for _ in 0..9 {
            e = Entry::learn(Some(e), 1_000, Outcome::Passed, 2);
        }
        e = Entry::learn(Some(e), 11_000, Outcome::Failed, 3);
        let k = e.known();
        assert_eq!((k.mean_ms, k.p90_ms, k.runs, k.last), (4_000, 1_000, 11, Outcome::Failed));
        // A cancelled run counts as the last run, not as a duration.
        let k = Entry::learn(Some(e), 1, Outcome::Cancelled, 4).known();
        assert_eq!((k.mean_ms, k.last), (4_000, Outcome::Cancelled));
    }

    #[test]
    fn a_reopened_history_knows_what_it_learned_per_project() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let h = SqliteHistory::open(dir.path(), true).expect("open");
            h.record("p", 10, vec![sample("a.sh", 500, Outcome::Passed), sample("b.sh", 80, Outcome::Failed)]);
            h.record("q", 10, vec![sample("a.sh", 9, Outcome::Passed)]);
            h.record("p", 11, vec![Sample { case: "a::x".into(), ..sample("a.sh", 5, Outcome::Passed) }]);
            kept(&h);
        }
        let h = SqliteHistory::open(dir.path(), true).expect("reopen");
        let p = h.project("p").expect("read");
        assert_eq!(p.len(), 2, "units only: {p:?}");
        assert_eq!((p["a.sh"].mean_ms, p["b.sh"].last), (500, Outcome::Failed));
        assert_eq!(h.project("q").expect("read")["a.sh"].mean_ms, 9);
        // Old entries go.
        h.forget_older_than(FORGET_AFTER_MS + 11);
        kept(&h);
        assert!(h.project("p").expect("read").is_empty());
    }

    #[test]
    fn names_beyond_the_bound_are_not_learned() {
        let h = MemoryHistory::default();
        h.record("p", 1, vec![sample(&"x".repeat(MAX_NAME_BYTES + 1), 5, Outcome::Passed)]);
        assert!(h.project("p").expect("read").is_empty());
    }
}
