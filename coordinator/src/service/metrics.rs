//! Prometheus metrics of the coordinator (named and explained in `docs/operations.md`).
//!
//! Counters are bumped where things happen (the engine, the blob and session services). The
//! gauges that describe the grid's state (workers, slots, queues, demand, sessions) are set from
//! an engine [`Snapshot`] when `/metrics` is read, so that no input pays for them.

use std::sync::atomic::{AtomicI64, AtomicU64};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::convert::outcome_to_pb;
use super::engine::Snapshot;
use crate::core::Outcome;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabel {
    pub pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatePoolLabel {
    pub state: &'static str,
    pub pool: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Every metric the coordinator exports.
pub struct Metrics {
    registry: Registry,
    pub sessions_submitted: Counter,
    pub assignments: Counter,
    pub requeues: Counter,
    pub tests_finished: Family<OutcomeLabel, Counter>,
    pub test_duration: Histogram,
    pub upload_bytes: Counter,
    /// Watch streams open now (a guard per stream, see [`WatchGuard`]).
    pub watch_streams: Gauge<i64, AtomicI64>,
    worker_losses: Counter,
    workers: Family<StateLabel, Gauge>,
    slots: Family<StatePoolLabel, Gauge>,
    queued_tests: Family<PoolLabel, Gauge>,
    queued_work_seconds: Family<PoolLabel, FloatGauge>,
    running_tests: Family<PoolLabel, Gauge>,
    desired_workers: Family<PoolLabel, Gauge>,
    sessions: Family<StateLabel, Gauge>,
    store_bytes: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("testgrid");
        let m = Metrics {
            sessions_submitted: Counter::default(),
            assignments: Counter::default(),
            requeues: Counter::default(),
            tests_finished: Family::default(),
            // 10 ms to about 45 minutes.
            test_duration: Histogram::new(exponential_buckets(0.01, 2.0, 19)),
            upload_bytes: Counter::default(),
            watch_streams: Gauge::default(),
            worker_losses: Counter::default(),
            workers: Family::default(),
            slots: Family::default(),
            queued_tests: Family::default(),
            queued_work_seconds: Family::default(),
            running_tests: Family::default(),
            desired_workers: Family::default(),
            sessions: Family::default(),
            store_bytes: Gauge::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register("sessions_submitted", "Sessions submitted", m.sessions_submitted.clone());
        r.register("assignments", "Assignments sent to workers", m.assignments.clone());
        r.register(
            "requeues",
            "Attempts put back in the queue (a worker lost, handed back, or late)",
            m.requeues.clone(),
        );
        r.register("tests_finished", "Tests that ended, by final outcome", m.tests_finished.clone());
        r.register("test_duration_seconds", "How long tests' final attempts ran", m.test_duration.clone());
        r.register("upload_bytes", "Bytes of workspace blobs clients uploaded", m.upload_bytes.clone());
        r.register("watch_streams", "Watch streams open now", m.watch_streams.clone());
        r.register("worker_losses", "Workers lost (their stream broke, or they went silent)", m.worker_losses.clone());
        r.register("workers", "Connected workers, by state (idle, busy, draining)", m.workers.clone());
        r.register("slots", "Workers' slots, by state (busy, idle) and pool", m.slots.clone());
        r.register("queued_tests", "Tests waiting for a slot, by pool", m.queued_tests.clone());
        r.register(
            "queued_work_seconds",
            "What the queued tests are predicted to take, by pool",
            m.queued_work_seconds.clone(),
        );
        r.register("running_tests", "Tests held by workers (running or about to), by pool", m.running_tests.clone());
        r.register(
            "desired_workers",
            "Workers each pool needs to finish its work within --target-drain",
            m.desired_workers.clone(),
        );
        r.register(
            "sessions",
            "Sessions the grid keeps, by state (running, passed, failed, cancelled)",
            m.sessions.clone(),
        );
        r.register("store_bytes", "Bytes the data directory's sessions and blobs take", m.store_bytes.clone());
        Metrics { registry, ..m }
    }
}

impl Metrics {
    pub fn test_finished(&self, outcome: Outcome, duration_ms: u64) {
        let outcome = outcome_to_pb(outcome).key();
        self.tests_finished.get_or_create(&OutcomeLabel { outcome }).inc();
        if !matches!(outcome, "cancelled" | "lost") {
            self.test_duration.observe(duration_ms as f64 / 1000.0);
        }
    }

    /// Set the state gauges from `snapshot`. Pools that went away go from the output.
    pub fn observe(&self, snapshot: &Snapshot, store_bytes: u64) {
        let losses = snapshot.worker_losses.saturating_sub(self.worker_losses.get());
        self.worker_losses.inc_by(losses);
        self.slots.clear();
        for family in [&self.queued_tests, &self.running_tests, &self.desired_workers] {
            family.clear();
        }
        self.queued_work_seconds.clear();
        let (mut idle, mut busy, mut draining) = (0, 0, 0);
        for p in &snapshot.pools {
            let name = escaped(&p.pool);
            let pool = || PoolLabel { pool: name.clone() };
            idle += i64::from(p.workers_idle);
            busy += i64::from(p.workers_busy);
            draining += i64::from(p.workers_draining);
            self.slots.get_or_create(&StatePoolLabel { state: "busy", pool: name.clone() }).set(gauge(p.slots_busy));
            self.slots.get_or_create(&StatePoolLabel { state: "idle", pool: name.clone() }).set(gauge(p.slots_idle));
            self.queued_tests.get_or_create(&pool()).set(gauge(p.queued_tests));
            self.queued_work_seconds.get_or_create(&pool()).set(p.queued_work_ms as f64 / 1000.0);
            self.running_tests.get_or_create(&pool()).set(gauge(p.running_tests));
            self.desired_workers.get_or_create(&pool()).set(i64::from(p.desired_workers));
        }
        for (state, n) in [("idle", idle), ("busy", busy), ("draining", draining)] {
            self.workers.get_or_create(&StateLabel { state }).set(n);
        }
        let s = &snapshot.sessions;
        for (state, n) in
            [("running", s.running), ("passed", s.passed), ("failed", s.failed), ("cancelled", s.cancelled)]
        {
            self.sessions.get_or_create(&StateLabel { state }).set(gauge(n));
        }
        self.store_bytes.set(gauge(store_bytes));
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// A label value as the text format wants it (the encoder writes values as they are, and pool
/// names come from workers' and sessions' labels).
fn escaped(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Counts a watch stream while it lives.
pub struct WatchGuard(std::sync::Arc<Metrics>);

impl WatchGuard {
    pub fn new(metrics: std::sync::Arc<Metrics>) -> Self {
        metrics.watch_streams.inc();
        WatchGuard(metrics)
    }
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.watch_streams.dec();
    }
}
