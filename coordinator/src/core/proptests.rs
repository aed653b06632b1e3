//! Property tests: for any interleaving of submit, worker join and leave, start, result (live or
//! stale), cancel, time passing and coordinator restarts (a scheduler restored from the events
//! emitted so far, which the old workers rejoin claiming what they held, or forged attempts, and
//! to which they resend reports), the scheduler keeps its invariants, never adopts a claim or
//! counts a resent report that is not a test's live attempt, and once workers drain the queues
//! every test has ended with exactly one outcome, across restarts.

use std::collections::HashMap;

use proptest::prelude::*;

use super::tests::{report, sid, spec, wid, worker};
use super::*;

#[derive(Clone, Debug)]
enum Op {
    Submit {
        tests: usize,
        retries: u32,
        timeout: bool,
        on_disconnect: bool,
        max_fail: u32,
        /// Only for workers labelled `os=mac` (true) or `os=linux` (false).
        needs: Option<bool>,
        /// `--speculate`, with every test known from history to take this many ms.
        speculate: Option<u64>,
    },
    Join {
        slots: u32,
        mac: bool,
    },
    Leave {
        worker: usize,
    },
    Start {
        pick: usize,
    },
    Result {
        pick: usize,
        outcome: Outcome,
    },
    Stale {
        session: usize,
        test: u32,
        attempt: u32,
        worker: usize,
    },
    Cancel {
        session: usize,
    },
    Tick {
        advance: u64,
    },
    Drain {
        worker: usize,
    },
    /// A result arriving late from a worker that was already lost.
    Late {
        pick: usize,
        outcome: Outcome,
    },
    Watch {
        session: usize,
        start: bool,
    },
    /// The coordinator restarts: a new scheduler restored from the events emitted so far, with
    /// no workers (the old ones' results arrive late, or they rejoin).
    Restart,
    /// A worker of a coordinator that restarted rejoins, claiming some of what it held then
    /// (`keep`: which, as bits) and perhaps a forged attempt.
    Rejoin {
        pick: usize,
        keep: u64,
        forge: Option<(usize, u32, u32)>,
    },
    /// A report sent again on a new stream, by any worker, for an attempt once held somewhere.
    Resend {
        pick: usize,
        worker: usize,
        outcome: Outcome,
    },
}

fn os(mac: bool) -> &'static str {
    if mac { "mac" } else { "linux" }
}

/// A worker labelled `os=mac` or `os=linux`.
fn labelled(slots: u32, mac: bool) -> WorkerSpec {
    let mut spec = worker(slots);
    spec.labels.insert("os".into(), os(mac).into());
    spec
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        4 => Just(Outcome::Passed),
        2 => Just(Outcome::Failed),
        1 => Just(Outcome::TimedOut),
        1 => Just(Outcome::Error),
        1 => Just(Outcome::Cancelled),
    ]
}

/// Any op; `speculative`: every session speculates, and time passes more often.
fn op(speculative: bool) -> impl Strategy<Value = Op> {
    let speculate =
        if speculative { (1u64..500).prop_map(Some).boxed() } else { proptest::option::of(1u64..500).boxed() };
    let ticks = if speculative { 4 } else { 1 };
    // Long enough, now and then, for a test to be held unstarted or run past its timeout.
    let advance = if speculative {
        prop_oneof![4 => 0u64..4_000, 1 => 50_000u64..700_000].boxed()
    } else {
        (0u64..4_000).boxed()
    };
    prop_oneof![
        2 => (0usize..6, 0u32..3, any::<bool>(), any::<bool>(), prop_oneof![2 => Just(0u32), 1 => 1u32..4], proptest::option::of(any::<bool>()), speculate)
            .prop_map(|(tests, retries, timeout, on_disconnect, max_fail, needs, speculate)| Op::Submit { tests, retries, timeout, on_disconnect, max_fail, needs, speculate }),
        2 => (1u32..4, any::<bool>()).prop_map(|(slots, mac)| Op::Join { slots, mac }),
        1 => any::<usize>().prop_map(|worker| Op::Leave { worker }),
        3 => any::<usize>().prop_map(|pick| Op::Start { pick }),
        6 => (any::<usize>(), outcome()).prop_map(|(pick, outcome)| Op::Result { pick, outcome }),
        1 => (any::<usize>(), 0u32..6, 0u32..4, any::<usize>())
            .prop_map(|(session, test, attempt, worker)| Op::Stale { session, test, attempt, worker }),
        1 => any::<usize>().prop_map(|session| Op::Cancel { session }),
        ticks => advance.prop_map(|advance| Op::Tick { advance }),
        1 => any::<usize>().prop_map(|worker| Op::Drain { worker }),
        2 => (any::<usize>(), outcome()).prop_map(|(pick, outcome)| Op::Late { pick, outcome }),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(session, start)| Op::Watch { session, start }),
        1 => Just(Op::Restart),
        2 => (any::<usize>(), any::<u64>(), proptest::option::of((any::<usize>(), 0u32..6, 0u32..4)))
            .prop_map(|(pick, keep, forge)| Op::Rejoin { pick, keep, forge }),
        1 => (any::<usize>(), any::<usize>(), outcome()).prop_map(|(pick, worker, outcome)| Op::Resend { pick, worker, outcome }),
    ]
}

/// Drives a scheduler and checks every action it returns.
struct Harness {
    s: Scheduler,
    now: Millis,
    sessions: Vec<SessionId>,
    workers: Vec<WorkerId>,
    next_id: u128,
    /// Final outcomes seen per (session, test).
    finals: HashMap<(SessionId, u32), Vec<Outcome>>,
    finished_sessions: HashMap<SessionId, Totals>,
    /// Assignments that workers held when they were lost, for late results.
    lost_keys: Vec<(WorkerId, AssignmentKey)>,
    /// Every session's events, as a store would keep them.
    logs: HashMap<SessionId, Vec<Event>>,
    /// Workers of coordinators that restarted, as they registered and with what they held then.
    survivors: Vec<(WorkerSpec, Vec<Claim>)>,
    /// Workers that rejoined claiming what they held.
    rejoined: std::collections::BTreeSet<WorkerId>,
}

impl Harness {
    fn config() -> Config {
        Config {
            prefetch_per_slot: 1,
            liveness_timeout_ms: 5_000,
            max_worker_losses: 2,
            keep_finished_sessions: usize::MAX,
            keep_finished_for_ms: u64::MAX,
            ..Config::default()
        }
    }

    fn new() -> Self {
        Harness {
            s: Scheduler::new(Self::config()),
            now: 0,
            sessions: Vec::new(),
            workers: Vec::new(),
            next_id: 1,
            finals: HashMap::new(),
            finished_sessions: HashMap::new(),
            lost_keys: Vec::new(),
            logs: HashMap::new(),
            survivors: Vec::new(),
            rejoined: std::collections::BTreeSet::new(),
        }
    }

    /// Replace the scheduler with one restored from the logs, as a restarted coordinator is.
    fn restart(&mut self) {
        self.lost_keys.extend(self.held_keys());
        for (id, w) in &self.s.workers {
            let claims = w
                .held
                .keys()
                .map(|key| {
                    let test = self.s.sessions.get(&key.session).and_then(|s| s.tests.get(key.test as usize));
                    let started = test.is_some_and(|t| {
                        matches!(t.state, TestState::Assigned { started: true, .. } | TestState::Cancelling { .. })
                            || t.is_elder(key.attempt, *id)
                    });
                    Claim { key: *key, started }
                })
                .collect();
            self.survivors.push((w.spec.clone(), claims));
        }
        self.workers.clear();
        let restored = self
            .s
            .order
            .iter()
            .map(|id| {
                let session = &self.s.sessions[id];
                let state = match (session.finished_at, self.finished_sessions.get(id)) {
                    (Some(finished_at), Some(totals)) => Restored::Finished {
                        finished_at,
                        totals: *totals,
                        cancel_reason: session.cancel_reason.clone(),
                        output_bytes: 0,
                    },
                    _ => Restored::Unfinished { events: self.logs.get(id).cloned().unwrap_or_default() },
                };
                RestoredSession { id: *id, spec: (*session.spec).clone(), created_at: session.created_at, state }
            })
            .collect();
        self.s = Scheduler::new(Self::config());
        self.s.restore(self.now, restored);
        self.check_invariants();
    }

    fn held_keys(&self) -> Vec<(WorkerId, AssignmentKey)> {
        self.s.workers.iter().flat_map(|(id, w)| w.held.keys().map(move |k| (*id, *k))).collect()
    }

    fn is_live(&self, worker: WorkerId, key: AssignmentKey) -> bool {
        let held = self.s.workers.get(&worker).is_some_and(|w| w.held.contains_key(&key));
        let test = self.s.sessions.get(&key.session).and_then(|s| s.tests.get(key.test as usize));
        held && test.is_some_and(|t| {
            t.attempt == key.attempt
                && matches!(t.state, TestState::Assigned { worker: h, .. } | TestState::Cancelling { worker: h } if h == worker)
                || t.is_elder(key.attempt, worker)
        })
    }

    /// Whether `key` is the live attempt of a test orphaned by a restart.
    fn is_orphan(&self, key: AssignmentKey) -> bool {
        let test = self.s.sessions.get(&key.session).and_then(|s| s.tests.get(key.test as usize));
        test.is_some_and(|t| t.attempt == key.attempt && matches!(t.state, TestState::Orphaned { .. }))
    }

    fn apply(&mut self, input: Input) {
        let stale_result = match &input {
            Input::Finished { worker, key, .. } => (!self.is_live(*worker, *key)).then_some(*key),
            Input::Resent { worker, key, .. } => {
                let counts =
                    self.is_live(*worker, *key) || (self.s.workers.contains_key(worker) && self.is_orphan(*key));
                (!counts).then_some(*key)
            }
            _ => None,
        };
        let adoptable: Option<(WorkerId, Vec<AssignmentKey>)> = match &input {
            Input::WorkerJoined { id, claims, .. } => {
                Some((*id, claims.iter().map(|c| c.key).filter(|k| self.is_orphan(*k)).collect()))
            }
            _ => None,
        };
        let actions = self.s.handle(self.now, input);
        if let Some((id, adoptable)) = adoptable
            && let Some(w) = self.s.workers.get(&id)
        {
            for key in w.held.keys() {
                // It may also have been handed a queued test since; that is no adoption.
                let handed =
                    actions.iter().any(|a| matches!(a, Action::Assign { assignment, .. } if assignment.key == *key));
                assert!(handed || adoptable.contains(key), "adopted {key:?}, which was no orphan's live attempt");
            }
        }
        for action in &actions {
            if let Action::Emit { session, event } = action {
                self.logs.entry(*session).or_default().push(event.clone());
            }
            match action {
                Action::Emit { session, event: Event::TestFinished { test, is_final, outcome, .. } } => {
                    if let Some(key) = stale_result {
                        // Only a cancel can end tests during a stale result's handling, and it
                        // cannot: a result never cancels. So no test may end here at all.
                        panic!("stale result {key:?} produced a TestFinished for test {test}");
                    }
                    if *is_final {
                        self.finals.entry((*session, *test)).or_default().push(*outcome);
                    }
                }
                Action::Emit { session, .. } if self.finished_sessions.contains_key(session) => {
                    panic!("an event after session {session} finished: {action:?}");
                }
                Action::Emit { session, event: Event::Finished { totals, .. } } => {
                    assert!(self.finished_sessions.insert(*session, *totals).is_none(), "session finished twice");
                }
                Action::Assign { worker, assignment } => {
                    assert!(self.s.workers.contains_key(worker), "assigned to an unknown worker");
                    let labels = &self.s.workers[worker].spec.labels;
                    let required = &assignment.spec.required_labels;
                    assert!(
                        required.iter().all(|(k, v)| labels.get(k) == Some(v)),
                        "labels {required:?} not on {labels:?}"
                    );
                    assert!(self.is_live(*worker, assignment.key), "assignment is not the live attempt");
                }
                _ => {}
            }
        }
        self.check_invariants();
    }

    fn check_invariants(&self) {
        let prefetch = self.s.config.prefetch_per_slot;
        let hungry: std::collections::BTreeSet<WorkerId> = self
            .s
            .workers
            .iter()
            .filter(|(_, w)| !w.draining && w.held.len() < w.capacity(prefetch))
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(self.s.hungry, hungry, "the workers with room");
        let mut holders: HashMap<(SessionId, u32), WorkerId> = HashMap::new();
        for (id, w) in &self.s.workers {
            assert!(w.held.len() <= w.capacity(prefetch), "worker over capacity");
            // (A worker that rejoined goes on with what it was running: it may adopt one beside others.)
            if !self.rejoined.contains(id) && w.held.keys().any(|k| self.s.is_suspect(k)) {
                assert_eq!(w.held.len(), 1, "a test with a worker loss on record runs alone");
            }
            for key in w.held.keys() {
                let test = &self.s.sessions[&key.session].tests[key.test as usize];
                // Of a speculated pair, the elder runs beside the live attempt.
                if self.is_live(*id, *key) && !test.is_elder(key.attempt, *id) {
                    let prev = holders.insert((key.session, key.test), *id);
                    assert!(prev.is_none(), "test {key:?} live on two workers");
                }
            }
        }
        for session in self.s.sessions.values() {
            if session.cancel_reason.is_none() && session.finished_at.is_none() {
                let running = session
                    .tests
                    .iter()
                    .map(|t| {
                        u32::from(matches!(t.state, TestState::Assigned { started: true, .. }))
                            + u32::from(t.elder.is_some())
                    })
                    .sum::<u32>();
                assert_eq!(session.running, running, "running attempts of {}", session.id);
            }
            let queued = session.queue.len();
            let states = session.tests.iter().filter(|t| t.state == TestState::Queued).count();
            assert_eq!(queued, states, "queue and queued states disagree");
            for (i, t) in session.tests.iter().enumerate() {
                if let TestState::Assigned { worker, .. } | TestState::Cancelling { worker } = t.state {
                    let key = AssignmentKey { session: session.id, test: i as u32, attempt: t.attempt };
                    assert!(self.is_live(worker, key), "assigned test not held by its worker");
                }
                if let Some(elder) = t.elder {
                    let key = AssignmentKey { session: session.id, test: i as u32, attempt: elder.attempt };
                    assert!(self.is_live(elder.worker, key), "an elder not held by its worker");
                    assert!(matches!(t.state, TestState::Assigned { .. }), "an elder beside {:?}", t.state);
                    assert!(elder.attempt < t.attempt && t.attempt <= t.issued, "attempts out of order");
                }
            }
        }
    }

    fn step(&mut self, op: Op) {
        match op {
            Op::Submit { tests, retries, timeout, on_disconnect, max_fail, needs, speculate } => {
                let id = sid(self.next_id);
                self.next_id += 1;
                let mut sp = spec(tests);
                sp.retries = retries;
                sp.max_failures = max_fail;
                if let Some(mac) = needs {
                    sp.required_labels.insert("os".into(), os(mac).into());
                }
                sp.session_timeout_ms = if timeout { 10_000 } else { 0 };
                sp.cancel_on_disconnect = on_disconnect;
                sp.speculate = speculate.is_some();
                // Sessions that speculate also have a test timeout, which the coordinator enforces.
                sp.test_timeout_ms = if speculate.is_some() { 1_000 } else { 0 };
                let known = |ms| plan::Estimate { ms, source: plan::Source::History, failed_last: false };
                let estimates = speculate.map(|ms| vec![known(ms); tests]).unwrap_or_default();
                self.sessions.push(id);
                self.apply(Input::Submit { id, spec: sp, estimates });
            }
            Op::Join { slots, mac } => {
                let id = wid(self.next_id);
                self.next_id += 1;
                self.workers.push(id);
                self.apply(Input::WorkerJoined { id, spec: labelled(slots, mac), claims: Vec::new() });
            }
            Op::Rejoin { pick, keep, forge } => {
                if self.survivors.is_empty() {
                    return;
                }
                let (spec, held) = self.survivors.remove(pick % self.survivors.len());
                let mut claims: Vec<Claim> =
                    held.into_iter().enumerate().filter(|(i, _)| keep & (1 << (i % 64)) != 0).map(|(_, c)| c).collect();
                if let Some((session, test, attempt)) = forge
                    && !self.sessions.is_empty()
                {
                    let key = AssignmentKey { session: self.sessions[session % self.sessions.len()], test, attempt };
                    claims.push(Claim { key, started: attempt % 2 == 0 });
                }
                let id = wid(self.next_id);
                self.next_id += 1;
                self.workers.push(id);
                self.rejoined.insert(id);
                self.apply(Input::WorkerJoined { id, spec, claims });
            }
            Op::Resend { pick, worker, outcome } => {
                if !self.lost_keys.is_empty() && !self.workers.is_empty() {
                    let (_, key) = self.lost_keys[pick % self.lost_keys.len()];
                    let worker = self.workers[worker % self.workers.len()];
                    self.apply(Input::Resent { worker, key, report: report(outcome) });
                }
            }
            Op::Leave { worker } => {
                if !self.workers.is_empty() {
                    let id = self.workers.remove(worker % self.workers.len());
                    if let Some(w) = self.s.workers.get(&id) {
                        self.lost_keys.extend(w.held.keys().map(|k| (id, *k)));
                    }
                    self.apply(Input::WorkerLost { id, reason: "gone".into() });
                }
            }
            Op::Start { pick } => {
                let held = self.held_keys();
                if !held.is_empty() {
                    let (worker, key) = held[pick % held.len()];
                    self.apply(Input::Started { worker, key });
                }
            }
            Op::Result { pick, outcome } => {
                let held = self.held_keys();
                if !held.is_empty() {
                    let (worker, key) = held[pick % held.len()];
                    self.apply(Input::Finished { worker, key, report: report(outcome) });
                }
            }
            Op::Stale { session, test, attempt, worker } => {
                if !self.sessions.is_empty() && !self.workers.is_empty() {
                    let key = AssignmentKey { session: self.sessions[session % self.sessions.len()], test, attempt };
                    let worker = self.workers[worker % self.workers.len()];
                    self.apply(Input::Finished { worker, key, report: report(Outcome::Passed) });
                }
            }
            Op::Cancel { session } => {
                if !self.sessions.is_empty() {
                    let session = self.sessions[session % self.sessions.len()];
                    self.apply(Input::Cancel { session, reason: "test".into() });
                }
            }
            Op::Drain { worker } => {
                if !self.workers.is_empty() {
                    let id = self.workers[worker % self.workers.len()];
                    self.apply(Input::Draining { worker: id });
                }
            }
            Op::Late { pick, outcome } => {
                if !self.lost_keys.is_empty() {
                    let (worker, key) = self.lost_keys[pick % self.lost_keys.len()];
                    self.apply(Input::Finished { worker, key, report: report(outcome) });
                }
            }
            Op::Watch { session, start } => {
                if !self.sessions.is_empty() {
                    let session = self.sessions[session % self.sessions.len()];
                    self.apply(if start { Input::WatchStarted { session } } else { Input::WatchEnded { session } });
                }
            }
            Op::Restart => self.restart(),
            Op::Tick { advance } => {
                self.now += advance;
                // Keep the workers the harness believes in alive; silence is tested separately.
                for id in self.workers.clone() {
                    self.apply(Input::Heartbeat { worker: id });
                }
                self.apply(Input::Tick);
            }
        }
    }

    /// Add a fresh worker and pass everything it (or anyone) holds until all sessions end.
    fn drain(&mut self) {
        // Past any adoption window: what nobody claimed after a restart is queued again.
        self.step(Op::Tick { advance: 5_000 });
        self.step(Op::Join { slots: 4, mac: false });
        self.step(Op::Join { slots: 4, mac: true });
        for _ in 0..1_000 {
            let held = self.held_keys();
            if held.is_empty() {
                break;
            }
            for (worker, key) in held {
                self.apply(Input::Finished { worker, key, report: report(Outcome::Passed) });
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_test_ends_with_exactly_one_outcome(ops in proptest::collection::vec(op(false), 0..80)) {
        check_outcomes(ops)?;
    }

    /// The same with `--speculate` on every session, and time passing often enough for tests
    /// to be late.
    #[test]
    fn every_speculated_test_ends_with_exactly_one_outcome(ops in proptest::collection::vec(op(true), 0..80)) {
        check_outcomes(ops)?;
    }
}

fn check_outcomes(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut h = Harness::new();
    for op in ops {
        h.step(op);
    }
    h.drain();
    for id in &h.sessions {
        let session = &h.s.sessions[id];
        let totals = h.finished_sessions.get(id).copied();
        prop_assert!(totals.is_some(), "session {id} never finished");
        // A session restored finished keeps no tests, only its spec.
        let tests = session.spec.tests.len() as u32;
        let mut counted = Totals { total: tests, ..Totals::default() };
        for test in 0..tests {
            let outcomes = h.finals.get(&(*id, test)).cloned().unwrap_or_default();
            prop_assert_eq!(outcomes.len(), 1, "test {} of {} has outcomes {:?}", test, id, outcomes);
            counted.count(outcomes[0]);
        }
        prop_assert_eq!(totals, Some(counted));
        // --max-fail N: never more than N failures, and exactly N when it stopped the session.
        let max = session.spec.max_failures;
        if max > 0 {
            let failed = counted.failed + counted.timed_out + counted.error + counted.lost;
            prop_assert!(failed <= max, "{} failures over --max-fail {}", failed, max);
            if session.cancel_reason.as_deref().is_some_and(|r| r.contains("--max-fail")) {
                prop_assert_eq!(failed, max);
            }
        }
    }
    Ok(())
}

/// The sessions still competing for slots: tests queued and room under their cap.
fn competing(s: &Scheduler) -> Vec<(SessionId, u64, u64)> {
    s.active
        .iter()
        .filter_map(|id| {
            let session = s.sessions.get(id)?;
            let capped = session.spec.max_slots > 0 && session.held >= session.spec.max_slots;
            (!session.queue.is_empty() && !capped)
                .then(|| (*id, u64::from(session.held), u64::from(session.spec.weight())))
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Sessions sharing workers, tests finishing in any order: each session's share of the
    /// slots stays within one test of its weight's (held / weight never differ by more than
    /// 1/weight on either side), no session's cap is passed, and no competing session holding
    /// nothing waits longer than one turn of every session (its weight's worth of assignments
    /// each).
    #[test]
    fn slots_are_shared_by_weight_and_no_session_starves(
        sessions in proptest::collection::vec((1u32..5, proptest::option::of(1u32..6)), 2..5),
        workers in proptest::collection::vec(1u32..4, 1..4),
        finishes in proptest::collection::vec(any::<usize>(), 0..300),
    ) {
        let mut s = Scheduler::new(Config { prefetch_per_slot: 1, ..Config::default() });
        for (i, (weight, cap)) in sessions.iter().enumerate() {
            let mut sp = spec(60);
            sp.priority = *weight;
            sp.max_slots = cap.unwrap_or(0);
            s.handle(0, Input::Submit { id: sid(i as u128 + 1), spec: sp, estimates: Vec::new() });
        }
        let mut waited: HashMap<SessionId, usize> = HashMap::new();
        // One turn of every session, by weight.
        let bound = sessions.iter().map(|(w, _)| *w as usize + 1).sum::<usize>();
        let mut turn = |s: &Scheduler, actions: &[Action]| -> Result<(), TestCaseError> {
            // How many assignments went elsewhere while a competing session held nothing.
            for a in actions {
                if let Action::Assign { assignment, .. } = a {
                    for (id, held, _) in competing(s) {
                        if held == 0 {
                            *waited.entry(id).or_default() += 1;
                        }
                    }
                    waited.insert(assignment.key.session, 0);
                }
            }
            let competing = competing(s);
            for (id, _, _) in &competing {
                let n = waited.get(id).copied().unwrap_or(0);
                prop_assert!(n <= bound, "session {} waited {} assignments", id, n);
            }
            for (a, held_a, w_a) in &competing {
                for (b, held_b, w_b) in &competing {
                    // held_a / w_a - held_b / w_b <= 1 / w_a + 1 / w_b, multiplied out.
                    prop_assert!(held_a * w_b <= held_b * w_a + w_a + w_b, "{a}: {held_a}/{w_a} against {b}: {held_b}/{w_b}");
                }
            }
            for session in s.sessions.values() {
                let cap = session.spec.max_slots;
                prop_assert!(cap == 0 || session.held <= cap, "{} holds {} over its cap {}", session.id, session.held, cap);
            }
            Ok(())
        };
        for (i, slots) in workers.iter().enumerate() {
            let out = s.handle(0, Input::WorkerJoined { id: wid(i as u128 + 1), spec: worker(*slots), claims: Vec::new() });
            turn(&s, &out)?;
        }
        for pick in finishes {
            let held: Vec<(WorkerId, AssignmentKey)> =
                s.workers.iter().flat_map(|(id, w)| w.held.keys().map(move |k| (*id, *k))).collect();
            if held.is_empty() {
                break;
            }
            let (worker, key) = held[pick % held.len()];
            let out = s.handle(1, Input::Finished { worker, key, report: report(Outcome::Passed) });
            turn(&s, &out)?;
        }
    }
}
