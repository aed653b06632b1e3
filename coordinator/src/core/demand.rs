//! The grid's demand: per worker pool, what waits, what runs, and how many workers would drain
//! it within the target time. An autoscaler (KEDA through `/api/v1/demand`, or anything reading
//! `testgrid_desired_workers`) scales each pool's workers to that figure.
//!
//! A worker's pool is its `pool` label (`default` without one). A session's tests count toward
//! the pool its `--label pool=NAME` asks for, or `default` when it asks for none (even though
//! any pool's workers may run them: the figure tells the default pool to make room for them).
//!
//! Desired workers for a pool, with `slots` the slots of one of its workers:
//! - enough that the remaining predicted work (queued tests' estimates, plus what running tests
//!   have left of theirs) drains within `target_drain`: `ceil(work / (target_drain * slots))`;
//! - never more than the tests could use, queued and running: `ceil(tests / slots)`;
//! - never fewer than hold the tests running now, so that scaling in never stops a started test
//!   that could finish (a worker that shuts down hands back only what it has not started);
//! - within the pool's `--min-workers` and `--max-workers`.

use std::collections::BTreeMap;

use super::session::TestState;
use super::{Millis, Scheduler};

/// The pool of a worker or a session without a `pool` label.
pub const DEFAULT_POOL: &str = "default";
/// The label that names a pool.
pub const POOL_LABEL: &str = "pool";
/// What a test with no estimate (a project with no history) is counted as.
pub const UNKNOWN_TEST_MS: u64 = 1_000;
/// The most pools reported (names come from workers' and sessions' labels): the rest are left
/// out, so that nobody can blow up the metrics with made-up pool names.
pub const MAX_POOLS: usize = 256;

/// The most workers a pool's demand asks for, unless told otherwise.
pub const DEFAULT_MAX_WORKERS: u32 = 100;

/// What a connected worker is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerState {
    Idle,
    Busy,
    Draining,
}

impl WorkerState {
    pub fn of(draining: bool, holds_nothing: bool) -> Self {
        match (draining, holds_nothing) {
            (true, _) => WorkerState::Draining,
            (false, true) => WorkerState::Idle,
            (false, false) => WorkerState::Busy,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Idle => "idle",
            WorkerState::Busy => "busy",
            WorkerState::Draining => "draining",
        }
    }
}

/// A setting per pool, with a value for the pools not named.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PerPool {
    pub default: u32,
    pub pools: BTreeMap<String, u32>,
}

impl PerPool {
    pub fn all(default: u32) -> Self {
        PerPool { default, pools: BTreeMap::new() }
    }

    pub fn get(&self, pool: &str) -> u32 {
        self.pools.get(pool).copied().unwrap_or(self.default)
    }
}

/// How desired workers are figured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Drain the remaining predicted work within this long.
    pub target_drain_ms: u64,
    pub min_workers: PerPool,
    pub max_workers: PerPool,
    /// Slots of one worker of the pool; 0: as its connected workers have (the most of any of
    /// them), or 1 while none is connected.
    pub worker_slots: PerPool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            target_drain_ms: 5 * 60 * 1000,
            min_workers: PerPool::all(0),
            max_workers: PerPool::all(DEFAULT_MAX_WORKERS),
            worker_slots: PerPool::all(0),
        }
    }
}

/// One pool's demand.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolDemand {
    pub pool: String,
    /// Connected workers, by state.
    pub workers_idle: u32,
    pub workers_busy: u32,
    pub workers_draining: u32,
    pub slots_busy: u64,
    pub slots_idle: u64,
    pub queued_tests: u64,
    /// What the queued tests' estimates add up to.
    pub queued_work_ms: u64,
    /// Tests handed to a worker and not finished (prefetched ones included).
    pub running_tests: u64,
    /// Of those, the ones that started (prefetched ones wait on their worker).
    pub started_tests: u64,
    /// What the running tests have left of their estimates.
    pub running_work_ms: u64,
    /// The slots of one worker the figure assumes.
    pub worker_slots: u32,
    pub desired_workers: u32,
}

impl Scheduler {
    /// Every pool's demand at `now`, by pool name.
    pub fn demand(&self, now: Millis, policy: &Policy) -> Vec<PoolDemand> {
        let mut pools: BTreeMap<String, PoolDemand> = BTreeMap::new();
        let touch = |pools: &mut BTreeMap<String, PoolDemand>, name: &str| -> bool {
            if !pools.contains_key(name) {
                if pools.len() >= MAX_POOLS {
                    return false;
                }
                pools.insert(name.to_string(), PoolDemand { pool: name.to_string(), ..PoolDemand::default() });
            }
            true
        };
        touch(&mut pools, DEFAULT_POOL);
        for name in policy.min_workers.pools.keys().chain(policy.max_workers.pools.keys()) {
            touch(&mut pools, name);
        }
        let mut seen_slots: BTreeMap<&str, u32> = BTreeMap::new();
        for w in self.workers.values() {
            let name = w.spec.labels.get(POOL_LABEL).map_or(DEFAULT_POOL, String::as_str);
            if !touch(&mut pools, name) {
                continue;
            }
            let p = pools.get_mut(name).expect("touched above");
            let busy = (w.held.len() as u64).min(u64::from(w.spec.slots));
            p.slots_busy += busy;
            p.slots_idle += u64::from(w.spec.slots) - busy;
            match WorkerState::of(w.draining, w.held.is_empty()) {
                WorkerState::Draining => p.workers_draining += 1,
                WorkerState::Idle => p.workers_idle += 1,
                WorkerState::Busy => p.workers_busy += 1,
            }
            let most = seen_slots.entry(name).or_default();
            *most = (*most).max(w.spec.slots);
        }
        for session in self.active.iter().filter_map(|id| self.sessions.get(id)) {
            let name = session.spec.required_labels.get(POOL_LABEL).map_or(DEFAULT_POOL, String::as_str);
            if !touch(&mut pools, name) {
                continue;
            }
            let p = pools.get_mut(name).expect("touched above");
            let predicted = |i: usize| match session.predicted.get(i) {
                Some(&ms) if ms > 0 => ms,
                _ => UNKNOWN_TEST_MS,
            };
            for (i, test) in session.tests.iter().enumerate() {
                match test.state {
                    TestState::Queued | TestState::Orphaned { started: false } => {
                        p.queued_tests += 1;
                        p.queued_work_ms = p.queued_work_ms.saturating_add(predicted(i));
                    }
                    TestState::Assigned { started, .. } | TestState::Orphaned { started } => {
                        p.running_tests += 1;
                        p.started_tests += u64::from(started);
                        let ran = if started { now.saturating_sub(test.since) } else { 0 };
                        p.running_work_ms = p.running_work_ms.saturating_add(predicted(i).saturating_sub(ran));
                    }
                    TestState::Cancelling { .. } | TestState::Done(_) => {}
                }
            }
        }
        pools
            .into_values()
            .map(|mut p| {
                let hinted = policy.worker_slots.get(&p.pool);
                let seen = seen_slots.get(p.pool.as_str()).copied().unwrap_or(0);
                p.worker_slots = if hinted > 0 { hinted } else { seen.max(1) };
                p.desired_workers = desired(&p, policy);
                p
            })
            .collect()
    }
}

/// The workers `pool` wants under `policy` (see the module's text).
fn desired(pool: &PoolDemand, policy: &Policy) -> u32 {
    let slots = u64::from(pool.worker_slots.max(1));
    let capacity_ms = policy.target_drain_ms.max(1).saturating_mul(slots);
    let work = pool.queued_work_ms.saturating_add(pool.running_work_ms);
    let by_work = work.div_ceil(capacity_ms);
    let by_tests = (pool.queued_tests + pool.running_tests).div_ceil(slots);
    let holding = pool.started_tests.div_ceil(slots);
    let want = by_work.min(by_tests).max(holding);
    let (min, max) = (policy.min_workers.get(&pool.pool), policy.max_workers.get(&pool.pool));
    (want.min(u64::from(u32::MAX)) as u32).clamp(min, max.max(min))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{report, sid, spec, worker};
    use super::super::{Action, Input, Outcome, SessionSpec, WorkerId};
    use super::*;
    use crate::core::plan::{Estimate, Source};

    fn known(ms: u64, n: usize) -> Vec<Estimate> {
        vec![Estimate { ms, source: Source::History, failed_last: false }; n]
    }

    fn in_pool(tests: usize, pool: &str) -> SessionSpec {
        let mut s = spec(tests);
        s.required_labels.insert(POOL_LABEL.into(), pool.into());
        s
    }

    fn of<'a>(demand: &'a [PoolDemand], pool: &str) -> &'a PoolDemand {
        demand.iter().find(|p| p.pool == pool).expect("the pool is reported")
    }

    #[test]
    fn a_session_raises_its_pools_demand_and_its_end_brings_it_back_to_the_minimum() {
        let mut s = Scheduler::new(crate::core::Config::default());
        let policy = Policy {
            target_drain_ms: 60_000,
            min_workers: PerPool { default: 0, pools: [("gpu".to_string(), 1)].into() },
            ..Policy::default()
        };
        let idle = s.demand(0, &policy);
        assert_eq!(
            idle.iter().map(|p| (p.pool.as_str(), p.desired_workers)).collect::<Vec<_>>(),
            [("default", 0), ("gpu", 1)]
        );
        // 40 tests of 30 s in the gpu pool: 20 minutes of work, a minute to drain it, one slot
        // a worker until one connects.
        s.handle(0, Input::Submit { id: sid(1), spec: in_pool(40, "gpu"), estimates: known(30_000, 40) });
        let d = s.demand(0, &policy);
        let gpu = of(&d, "gpu");
        assert_eq!((gpu.queued_tests, gpu.queued_work_ms, gpu.desired_workers), (40, 1_200_000, 20));
        assert_eq!(of(&d, "default").desired_workers, 0, "another pool's work is not the default's");
        // A worker of 4 slots joins the pool: 5 of them would do, and it takes 8 (prefetch).
        let w = WorkerId(uuid::Uuid::from_u128(7));
        let mut spec4 = worker(4);
        spec4.labels.insert(POOL_LABEL.into(), "gpu".into());
        let actions = s.handle(0, Input::WorkerJoined { id: w, spec: spec4, claims: Vec::new() });
        let keys: Vec<_> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Assign { assignment, .. } => Some(assignment.key),
                _ => None,
            })
            .collect();
        assert_eq!(keys.len(), 8);
        let d = s.demand(0, &policy);
        let gpu = of(&d, "gpu");
        assert_eq!((gpu.queued_tests, gpu.running_tests, gpu.worker_slots), (32, 8, 4));
        assert_eq!((gpu.slots_busy, gpu.slots_idle, gpu.workers_busy), (4, 0, 1));
        assert_eq!(gpu.desired_workers, 5);
        // Time passes on the started ones: what they have left counts, not their estimate.
        for key in &keys[..4] {
            s.handle(0, Input::Started { worker: w, key: *key });
        }
        let later = of(&s.demand(20_000, &policy), "gpu").running_work_ms;
        assert_eq!(later, 4 * 10_000 + 4 * 30_000);
        // Everything ends: back to the pool's minimum.
        let mut pending = keys;
        while let Some(key) = pending.pop() {
            s.handle(0, Input::Started { worker: w, key });
            for a in s.handle(0, Input::Finished { worker: w, key, report: report(Outcome::Passed) }) {
                if let Action::Assign { assignment, .. } = a {
                    pending.push(assignment.key);
                }
            }
        }
        let d = s.demand(0, &policy);
        let gpu = of(&d, "gpu");
        assert_eq!((gpu.queued_tests, gpu.running_tests, gpu.desired_workers, gpu.workers_idle), (0, 0, 1, 1));
    }

    #[test]
    fn made_up_pool_names_are_bounded() {
        let mut s = Scheduler::new(crate::core::Config::default());
        for i in 0..(MAX_POOLS as u128 + 50) {
            s.handle(0, Input::Submit { id: sid(i + 1), spec: in_pool(1, &format!("p{i}")), estimates: Vec::new() });
        }
        assert_eq!(s.demand(0, &Policy::default()).len(), MAX_POOLS);
    }

    fn pool(queued: u64, queued_ms: u64, running: u64, running_ms: u64, slots: u32) -> PoolDemand {
        PoolDemand {
            started_tests: running,
            pool: DEFAULT_POOL.into(),
            queued_tests: queued,
            queued_work_ms: queued_ms,
            running_tests: running,
            running_work_ms: running_ms,
            worker_slots: slots,
            ..PoolDemand::default()
        }
    }

    #[test]
    fn desired_workers_drain_the_work_within_the_target_and_no_faster_than_the_tests_allow() {
        let policy = Policy { target_drain_ms: 60_000, ..Policy::default() };
        // 10 minutes of work, 2 slots a worker, a minute to drain it: 5 workers.
        assert_eq!(desired(&pool(100, 600_000, 0, 0, 2), &policy), 5);
        // The same work in 3 tests: 2 workers can run all of them.
        assert_eq!(desired(&pool(3, 600_000, 0, 0, 2), &policy), 2);
        // Nothing: the minimum.
        assert_eq!(desired(&pool(0, 0, 0, 0, 2), &policy), 0);
        let floor = Policy { min_workers: PerPool::all(1), ..policy.clone() };
        assert_eq!(desired(&pool(0, 0, 0, 0, 2), &floor), 1);
        // Four tests running with little left: no scale-in below the workers they hold.
        assert_eq!(desired(&pool(0, 0, 4, 1_000, 2), &policy), 2);
        // Capped.
        let cap = Policy { max_workers: PerPool::all(3), ..policy.clone() };
        assert_eq!(desired(&pool(1_000, 100 * 600_000, 0, 0, 1), &cap), 3);
        // A minimum above the maximum wins (the flags contradict; the figure must not go below
        // what the operator asked to keep).
        let odd = Policy { min_workers: PerPool::all(5), max_workers: PerPool::all(2), ..policy };
        assert_eq!(desired(&pool(0, 0, 0, 0, 1), &odd), 5);
    }
}
