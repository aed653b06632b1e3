//! How long each test of a session should take, and the order its queue is served in: tests that
//! did not pass in the project's last run first (the news a developer waits for), then tests the
//! history has never seen (their estimate is a guess: better early than as a surprise at the
//! end), then the rest longest first, so that the last test to finish is a short one. Slots pull
//! as they free, so an estimate that is off is absorbed by the short tests at the end.
//!
//! Pure: the history comes in as a map, the estimates go out as numbers with where they came
//! from.

use std::cmp::Reverse;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::Outcome;

/// What the history knows of one test of a project.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Known {
    /// Exponentially weighted mean duration.
    pub mean_ms: u64,
    /// A high percentile (p90) of its recent durations.
    pub p90_ms: u64,
    /// How many runs the history has seen.
    pub runs: u32,
    /// How its last run ended.
    pub last: Outcome,
}

impl Known {
    /// Whether its last run did not pass.
    pub fn failed_last(&self) -> bool {
        matches!(self.last, Outcome::Failed | Outcome::TimedOut | Outcome::Error | Outcome::Lost)
    }
}

/// Where an estimate comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Source {
    /// The test's own history.
    History,
    /// Its file size, at the rate (ms per byte) of the project's known tests in this session.
    Size,
    /// The median of the project's known tests.
    Median,
    /// Nothing is known about the project: no estimate.
    Unknown,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::History => "history",
            Source::Size => "size",
            Source::Median => "median",
            Source::Unknown => "unknown",
        }
    }
}

/// One test's estimate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Estimate {
    pub ms: u64,
    pub source: Source,
    /// It did not pass in the project's last run.
    pub failed_last: bool,
}

/// Estimate each of `tests` (with their file sizes in bytes, 0 where unknown) from what the
/// project's history knows.
pub fn estimate(tests: &[String], sizes: &[u64], history: &HashMap<String, Known>) -> Vec<Estimate> {
    let size = |i: usize| sizes.get(i).copied().unwrap_or(0);
    let known: Vec<Option<&Known>> = tests.iter().map(|t| history.get(t)).collect();
    // The rate of this session's known tests that have a size: what a byte of test costs here.
    let (mut known_ms, mut known_bytes) = (0u128, 0u128);
    for (i, k) in known.iter().enumerate() {
        if let Some(k) = k
            && size(i) > 0
        {
            known_ms += u128::from(k.mean_ms);
            known_bytes += u128::from(size(i));
        }
    }
    let mut means: Vec<u64> = history.values().map(|k| k.mean_ms).collect();
    let median = (!means.is_empty()).then(|| {
        let middle = means.len() / 2;
        *means.select_nth_unstable(middle).1
    });
    known
        .iter()
        .enumerate()
        .map(|(i, k)| match (k, median) {
            (Some(k), _) => Estimate { ms: k.mean_ms, source: Source::History, failed_last: k.failed_last() },
            (None, _) if known_bytes > 0 && size(i) > 0 => {
                let ms = (known_ms * u128::from(size(i)) / known_bytes).min(u128::from(u64::MAX)) as u64;
                Estimate { ms, source: Source::Size, failed_last: false }
            }
            (None, Some(median)) => Estimate { ms: median, source: Source::Median, failed_last: false },
            (None, None) => Estimate { ms: 0, source: Source::Unknown, failed_last: false },
        })
        .collect()
}

/// The order a session's tests are served in (indices into its tests): those that did not pass
/// last time, then those the history has not seen, then the rest; longest estimate first within
/// each, then largest file, then as given. `given`: as given, whatever the estimates.
pub fn order(estimates: &[Estimate], sizes: &[u64], given: bool) -> Vec<u32> {
    let mut order: Vec<u32> = (0..estimates.len() as u32).collect();
    if given {
        return order;
    }
    let class = |e: &Estimate| match (e.failed_last, e.source) {
        (true, _) => 0,
        (false, Source::History) => 2,
        (false, _) => 1,
    };
    order.sort_by_key(|&i| {
        let e = &estimates[i as usize];
        (class(e), Reverse(e.ms), Reverse(sizes.get(i as usize).copied().unwrap_or(0)), i)
    });
    order
}

/// The makespan predicted for `slots` slots pulling tests in `order`: each test goes to the
/// slot that frees first. Returns the makespan and, per slot, the tests it would run.
pub fn predict(estimates: &[Estimate], order: &[u32], slots: usize) -> (u64, Vec<Vec<u32>>) {
    let slots = slots.max(1);
    let mut free_at = vec![0u64; slots];
    let mut runs = vec![Vec::new(); slots];
    for &test in order {
        let Some(ms) = estimates.get(test as usize).map(|e| e.ms) else { continue };
        // Ties (tests of no estimate) go to the slot with the fewest tests.
        let (slot, at) = free_at
            .iter()
            .enumerate()
            .min_by_key(|(slot, at)| (**at, runs[*slot].len(), *slot))
            .map_or((0, 0), |(s, a)| (s, *a));
        free_at[slot] = at.saturating_add(ms);
        runs[slot].push(test);
    }
    (free_at.into_iter().max().unwrap_or(0), runs)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn known(mean_ms: u64, last: Outcome) -> Known {
        Known { mean_ms, p90_ms: mean_ms, runs: 3, last }
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("t{i}")).collect()
    }

    #[test]
    fn unknown_tests_are_estimated_by_size_at_the_projects_rate_else_by_its_median() {
        let history: HashMap<String, Known> =
            [("t0".to_string(), known(1_000, Outcome::Passed)), ("t1".to_string(), known(3_000, Outcome::Passed))]
                .into();
        let estimates = estimate(&names(4), &[100, 100, 50, 0], &history);
        let got: Vec<(u64, Source)> = estimates.iter().map(|e| (e.ms, e.source)).collect();
        // 4,000 ms over 200 bytes: 20 ms a byte.
        assert_eq!(
            got,
            vec![(1_000, Source::History), (3_000, Source::History), (1_000, Source::Size), (3_000, Source::Median)]
        );
        let nothing = estimate(&names(2), &[10, 20], &HashMap::new());
        assert!(nothing.iter().all(|e| e.source == Source::Unknown && e.ms == 0));
    }

    #[test]
    fn failed_last_time_first_then_unseen_then_longest_first() {
        let history: HashMap<String, Known> = [
            ("t0".to_string(), known(100, Outcome::Passed)),
            ("t1".to_string(), known(9_000, Outcome::Passed)),
            ("t2".to_string(), known(10, Outcome::Failed)),
            ("t3".to_string(), known(500, Outcome::Passed)),
        ]
        .into();
        let sizes = [1, 1, 1, 1, 0];
        let estimates = estimate(&names(5), &sizes, &history);
        assert_eq!(order(&estimates, &sizes, false), vec![2, 4, 1, 3, 0]);
        assert_eq!(order(&estimates, &sizes, true), vec![0, 1, 2, 3, 4]);
        // With no history at all: largest file first, as discovery did.
        let none = estimate(&names(3), &[5, 50, 20], &HashMap::new());
        assert_eq!(order(&none, &[5, 50, 20], false), vec![1, 2, 0]);
    }

    #[test]
    fn the_prediction_puts_each_test_on_the_slot_that_frees_first() {
        let estimates: Vec<Estimate> =
            [5, 4, 3, 3].iter().map(|&ms| Estimate { ms, source: Source::History, failed_last: false }).collect();
        let (makespan, slots) = predict(&estimates, &[0, 1, 2, 3], 2);
        assert_eq!((makespan, slots), (8, vec![vec![0, 3], vec![1, 2]]));
    }

    fn outcome() -> impl Strategy<Value = Outcome> {
        prop_oneof![Just(Outcome::Passed), Just(Outcome::Failed), Just(Outcome::TimedOut), Just(Outcome::Flaky)]
    }

    proptest! {
        /// The order is a permutation; every test that did not pass last time comes before every
        /// other; unseen tests come before seen ones that passed; and within those classes,
        /// estimates never increase.
        #[test]
        fn the_order_is_fail_first_then_unseen_then_longest_first(
            tests in proptest::collection::vec((proptest::option::of((0u64..10_000, outcome())), 0u64..5_000), 0..60),
        ) {
            let history: HashMap<String, Known> = tests
                .iter()
                .enumerate()
                .filter_map(|(i, (k, _))| k.map(|(ms, last)| (format!("t{i}"), known(ms, last))))
                .collect();
            let sizes: Vec<u64> = tests.iter().map(|(_, size)| *size).collect();
            let estimates = estimate(&names(tests.len()), &sizes, &history);
            let order = order(&estimates, &sizes, false);
            let mut seen = order.clone();
            seen.sort_unstable();
            prop_assert_eq!(seen, (0..tests.len() as u32).collect::<Vec<_>>());
            let class = |i: u32| {
                let e = estimates[i as usize];
                if e.failed_last { 0 } else if e.source != Source::History { 1 } else { 2 }
            };
            for pair in order.windows(2) {
                let (a, b) = (pair[0], pair[1]);
                prop_assert!(class(a) <= class(b), "{:?} before {:?}", estimates[a as usize], estimates[b as usize]);
                if class(a) == class(b) {
                    prop_assert!(estimates[a as usize].ms >= estimates[b as usize].ms);
                }
            }
            // And the prediction places every test once.
            let (_, slots) = predict(&estimates, &order, 3);
            prop_assert_eq!(slots.iter().map(Vec::len).sum::<usize>(), tests.len());
        }
    }
}
