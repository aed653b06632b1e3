//! Prometheus metrics of the coordinator.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::convert::outcome_to_pb;
use crate::core::{Outcome, Scheduler};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

/// Every metric the coordinator exports.
pub struct Metrics {
    pub registry: Registry,
    pub sessions_submitted: Counter,
    pub assignments: Counter,
    pub tests_finished: Family<OutcomeLabel, Counter>,
    pub workers_connected: Gauge,
    pub tests_queued: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("testgrid");
        let sessions_submitted = Counter::default();
        let assignments = Counter::default();
        let tests_finished = Family::<OutcomeLabel, Counter>::default();
        let workers_connected = Gauge::default();
        let tests_queued = Gauge::default();
        registry.register("sessions_submitted", "Sessions submitted", sessions_submitted.clone());
        registry.register("assignments", "Assignments sent to workers", assignments.clone());
        registry.register("tests_finished", "Tests that ended, by outcome", tests_finished.clone());
        registry.register("workers_connected", "Workers connected now", workers_connected.clone());
        registry.register("tests_queued", "Tests waiting for a slot", tests_queued.clone());
        Metrics { registry, sessions_submitted, assignments, tests_finished, workers_connected, tests_queued }
    }
}

impl Metrics {
    pub fn test_finished(&self, outcome: Outcome) {
        let outcome = outcome_to_pb(outcome).key();
        self.tests_finished.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    pub fn observe(&self, scheduler: &Scheduler, workers: usize) {
        self.workers_connected.set(workers as i64);
        self.tests_queued.set(scheduler.queued() as i64);
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
