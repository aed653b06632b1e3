//! One test per transition of the scheduler.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use super::*;

pub(crate) fn sid(n: u128) -> SessionId {
    SessionId(Uuid::from_u128(n))
}

pub(super) fn wid(n: u128) -> WorkerId {
    WorkerId(Uuid::from_u128(1 << 64 | n))
}

pub(crate) fn spec(tests: usize) -> SessionSpec {
    SessionSpec {
        name: "t".into(),
        tests: (0..tests).map(|i| format!("t{i}.sh")).collect(),
        runner: Runner::command(Framework::Shell, "sh {}"),
        env: BTreeMap::new(),
        test_timeout_ms: 0,
        retries: 0,
        required_labels: BTreeMap::new(),
        session_timeout_ms: 0,
        max_worker_losses: 0,
        cancel_on_disconnect: false,
        workspace: None,
        setup: None,
        project: String::new(),
        artifacts: None,
        sizes: Vec::new(),
        keep_order: false,
        max_failures: 0,
        priority: 0,
        max_slots: 0,
        speculate: false,
        owner: String::new(),
        secret_env: Vec::new(),
    }
}

pub(super) fn worker(slots: u32) -> WorkerSpec {
    WorkerSpec { name: format!("w{slots}"), slots, labels: BTreeMap::new(), version: "0".into() }
}

pub(crate) fn report(outcome: Outcome) -> Report {
    Report::synthetic(outcome, "")
}

fn assigned(actions: &[Action]) -> Vec<(WorkerId, AssignmentKey)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Assign { worker, assignment } => Some((*worker, assignment.key)),
            _ => None,
        })
        .collect()
}

fn finals(actions: &[Action]) -> Vec<(u32, Outcome)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Emit { event: Event::TestFinished { test, is_final: true, outcome, .. }, .. } => {
                Some((*test, *outcome))
            }
            _ => None,
        })
        .collect()
}

fn finished_totals(actions: &[Action]) -> Option<Totals> {
    actions.iter().find_map(|a| match a {
        Action::Emit { event: Event::Finished { totals, .. }, .. } => Some(*totals),
        _ => None,
    })
}

fn key(session: SessionId, test: u32, attempt: u32) -> AssignmentKey {
    AssignmentKey { session, test, attempt }
}

fn no_prefetch() -> Scheduler {
    Scheduler::new(Config { prefetch_per_slot: 0, ..Config::default() })
}

#[test]
fn submit_emits_created_and_waits_for_workers() {
    let mut s = Scheduler::new(Config::default());
    let out = s.handle(0, Input::Submit { id: sid(1), spec: spec(3), estimates: Vec::new() });
    assert!(matches!(&out[0], Action::Emit { event: Event::Created { paths, .. }, .. } if paths.len() == 3));
    assert!(assigned(&out).is_empty());
    assert_eq!(s.queued(), 3);
}

#[test]
fn empty_session_finishes_at_once() {
    let mut s = Scheduler::new(Config::default());
    let out = s.handle(0, Input::Submit { id: sid(1), spec: spec(0), estimates: Vec::new() });
    assert_eq!(finished_totals(&out), Some(Totals::default()));
    assert!(s.session(sid(1)).is_some_and(|v| v.finished));
}

#[test]
fn joining_worker_gets_one_per_slot_plus_prefetch() {
    let mut s = Scheduler::new(Config { prefetch_per_slot: 1, ..Config::default() });
    s.handle(0, Input::Submit { id: sid(1), spec: spec(10), estimates: Vec::new() });
    let out = s.handle(0, Input::WorkerJoined { id: wid(1), spec: worker(2), claims: Vec::new() });
    let keys = assigned(&out);
    assert_eq!(keys.len(), 4, "2 slots + 2 prefetched");
    assert_eq!(keys.iter().map(|(_, k)| k.test).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    assert!(keys.iter().all(|(_, k)| k.attempt == 1));
}

#[test]
fn work_spreads_over_workers_before_prefetch() {
    let mut s = Scheduler::new(Config { prefetch_per_slot: 1, ..Config::default() });
    s.handle(0, Input::WorkerJoined { id: wid(1), spec: worker(1), claims: Vec::new() });
    s.handle(0, Input::WorkerJoined { id: wid(2), spec: worker(1), claims: Vec::new() });
    let out = s.handle(0, Input::Submit { id: sid(1), spec: spec(2), estimates: Vec::new() });
    let workers: BTreeSet<WorkerId> = assigned(&out).iter().map(|(w, _)| *w).collect();
    assert_eq!(workers.len(), 2, "each worker runs one rather than one running and one queued");
}

#[test]
fn finished_result_frees_the_slot_and_pulls_the_next_test() {
    let mut s = no_prefetch();
    s.handle(0, Input::Submit { id: sid(1), spec: spec(2), estimates: Vec::new() });
    s.handle(0, Input::WorkerJoined { id: wid(1), spec: worker(1), claims: Vec::new() });
    s.handle(1, Input::Started { worker: wid(1), key: key(sid(1), 0, 1) });
    let out = s.handle(2, Input::Finished { worker: wid(1), key: key(sid(1), 0, 1), report: report(Outcome::Passed) });
    assert_eq!(finals(&out), vec![(0, Outcome::Passed)]);
    assert_eq!(assigned(&out), vec![(wid(1), key(sid(1), 1, 1))]);
    let out = s.handle(3, Input::Finished { worker: wid(1), key: key(sid(1), 1, 1), report: report(Outcome::Failed) });
    assert_eq!(finals(&out), vec![(1, Outcome::Failed)]);
    let totals = finished_totals(&out).expect("session finished");
    assert_eq!((totals.total, totals.passed, totals.failed), (2, 1, 1));
}

#[test]
fn a_setup_is_told_once_per_worker_and_only_by_a_worker_holding_the_session() {
    let mut s = no_prefetch();
    s.handle(0, Input::Submit { id: sid(1), spec: spec(2), estimates: Vec::new() });
    s.handle(0, Input::WorkerJoined { id: wid(1), spec: worker(1), claims: Vec::new() });
    s.handle(0, Input::WorkerJoined { id: wid(2), spec: worker(1), claims: Vec::new() });
    s.handle(0, Input::WorkerJoined { id: wid(3), spec: worker(1), claims: Vec::new() });
    let setup =
        |worker, session| Input::SetupFinished { worker, session, report: report(Outcome::Passed), reused: true };
    let told = |out: &[Action]| {
        out.iter()
            .filter(|a| matches!(a, Action::Emit { event: Event::SetupFinished { reused: true, .. }, .. }))
            .count()
    };
    assert_eq!(told(&s.handle(1, setup(wid(1), sid(1)))), 1, "a worker holding a test of it");
    assert_eq!(told(&s.handle(1, setup(wid(1), sid(1)))), 0, "once per worker");
    assert_eq!(told(&s.handle(1, setup(wid(3), sid(1)))), 0, "a worker holding none of its tests");
    assert_eq!(told(&s.handle(1, setup(wid(2), sid(9)))), 0, "an unknown session");
    assert_eq!(told(&s.handle(1, setup(wid(2), sid(1)))), 1);
}

#[test]
fn started_emits_once_and_counts_running() {
    let mut s = no_prefetch();
    s.handle(0, Input::Submit { id: sid(1), spec: spec(1), estimates: Vec::new() });
    s.handle(0, Input::WorkerJoined { id: wid(1), spec: worker(1), claims: Vec::new() });
    let out = s.handle(1, Input::Started { worker: wid(1), key: key(sid(1), 0, 1) });
    assert_eq!(out.len(), 1);
    assert_eq!(s.session(sid(1)).map(|v| v.running), Some(1));
    let again = s.handle(1, Input::Started { worker: wid(1), key: key(sid(1), 0, 1) });
    assert!(again.is_empty());
    assert_eq!(s.workers()[0].running_tests, vec!["t0.sh".to_string()]);
}

#[test]
fn failed_test_is_retried_and_becomes_flaky_when_it_passes() {
    let mut s = no_prefetch();
    let mut sp = spec(1);
    sp.retries = 2;
    s.handle(0, Input::Submit { id: sid(1), spec: sp, estimates: Vec::new() });
    s.handle(0, Input::WorkerJoined { id: wid(1), spec: worker(1), claims: Vec::new() });
    let out = s.handle(1, Input::Finished { worker: wid(1), key: key(sid(1), 0, 1), report: report(Outcome::Failed) });
    assert!(finals(&out).is_empty());
    assert_eq!(assigned(&out), vec![(wid(1), key(sid(1), 0, 2))]);
    let out = s.handle(2, Input::Finished { worker: wid(1), key: key(sid(1), 0, 2), report: report(Outcome::Passed) });
    assert_eq!(finals(&out), vec![(0, Outcome::Flaky)]);
}

#[test]
fn retries_run_out() {
    let mut s = no_prefetch();
    let mut sp = spec(1);
    sp.retries = 1;
    s.handle(0, Input::Submit { id: sid(1), spec: sp, estimates: Vec::new() });
    s.handle(0, Input::WorkerJoined { id: wid(1), spec: worker(1), claims: Vec::new() });
    s.handle(1, Input::Finished { worker: wid(1), key: key(sid(1), 0, 1), report: report(Outcome::TimedOut) });
    let out =
        s.handle(2, Input::Finished { worker: wid(1), key: key(sid(1), 0, 2), report: report(Outcome::TimedOut) });
    assert_eq!(finals(&out), vec![(0, Outcome::TimedOut)]);
}

#[test]
fn error_is_final_without_retry() {
    let mut s = no_prefetch();
    let mut sp = spec(1);
    sp.retries = 3;
    s.handle(0, Input::Submit { id: sid(1), spec: sp, estimates: Vec::new() });
    s.handle(0, Input::WorkerJoined { id: wid(1), spec: worker(1), claims: Vec::new() });
    let out = s.handle(1, Input::Finished { worker: wid(1), key: key(sid(1), 0, 1), report: report(Outcome::Error) });
    assert_eq!(finals(&out), vec![(0, Outcome::Error)]);
}

#[test]
fn lost_worker_requeues_at_front_with_new_attempt() {
    let mut s = no_prefetch();
    s.handle(0, Input::Submit { id: sid(1), spec: spec(3), estimates: Vec::new() });
    s.handle(0, Input::WorkerJoined { id: wid(1), spec: worker(1), claims: Vec::new() });
    let out = s.handle(1, Input::WorkerLost { id: wid(1), reason: "stream ended".into() });
    assert!(
        out.iter().any(|a| matches!(a, Action::Emit { event: Event::TestRequeued { test: 0, attempt: 2, .. }, .. }))
    );
    let out = s.handle(2, Input::WorkerJoined { id: wid(2), spec: worker(1), claims: Vec::new() });
    assert_eq!(assigned(&out), vec![(wid(2), key(sid(1), 0, 2))], "requeued test goes first");
}

#[test]
fn late_result_from_superseded_attempt_is_discarded() {
    let mut s = no_prefetch();
    s.handle(0, Input::Submit { id: sid(1), spec: spec(1), estimates: Vec::new() });
    s.handle(0, Input::WorkerJoined { id: wid(1), spec: worker(1), claims: Vec::new() });
    s.handle(1, Input::WorkerLost { id: wid(1), reason: "silent".into() });
    s.handle(2, Input::WorkerJoined { id: wid(2), spec: worker(1), claims: Vec::new() });
    // wid(1) is gone: its result is ignored entirely.
    let out = s.handle(3, Input::Finished { worker: wid(1), key: key(sid(1), 0, 1), report: report(Outcome::Passed) });
    assert!(finals(&out).is_empty());
    // wid(2) reports the stale attempt number: discarded and recorded.
    let out = s.handle(3, Input::Finished { worker: wid(2), key: key(sid(1), 0, 1), report: report(Outcome::Passed) });
    assert!(finals(&out).is_empty());
    assert!(out.iter().any(|a| matches!(a, Action::Emit { event: Event::ResultDiscarded { .. }, .. })));
    let out = s.handle(4, Input::Finished { worker: wid(2), key: key(sid(1), 0, 2), report: report(Outcome::Passed) });
    assert_eq!(finals(&out), vec![(0, Outcome::Passed)]);
}

#[test]
fn result_for_a_test_another_worker_holds_is_discarded() {
    let mut s = no_prefetch();
    s.handle(0, Input::Submit { id: sid(1), spec: spec(1), estimates: Vec::new() });
    s.handle(0, Input::WorkerJoined { id: wid(1), spec: worker(1), claims: Vec::new() });
    s.handle(0, Input::WorkerJoined { id: wid(2), spec: worker(1), claims: Vec::new() });
    let out = s.handle(1, Input::Finished { worker: wid(2), key: key(sid(1), 0, 1), report: report(Outcome::Passed) });
    assert!(finals(&out).is_empty());
    let out = s.handle(1, Input::Finished { worker: wid(1), key: key(sid(1), 0, 1), report: report(Outcome::Passed) });
    assert_eq!(finals(&out), vec![(0, Outcome::Passed)]);
}

#[test]
fn test_ends_lost_after_too_many_worker_losses() {
    let mut s = no_prefetch();
    s.handle(0, Input::Submit { id: sid(1), spec: spec(1), estimates: Vec::new() });
    for n in 1..=3 {
        s.handle(n, Input::WorkerJoined { id: wid(n as u128), spec: worker(1), claims: Vec::new() });
        s.handle(n, Input::Started { worker: wid(n as u128), key: key(sid(1), 0, n as u32) });
        let out = s.handle(n, Input::WorkerLost { id: wid(n as u128), reason: "crash".into() });
        if n == 3 {
            assert_eq!(finals(&out), vec![(0, Outcome::Lost)]);
            assert_eq!(finished_totals(&out).map(|t| t.lost), Some(1));
        } else {
            assert!(finals(&out).is_empty());
        }
    }
}

#[test]
fn cancel_ends_every_unfinished_test_and_cancels_running_ones() {
    let mut s = no_prefetch();
    s.handle(0, Input::Submit { id: sid(1), spec: spec(3), estimates: Vec::new() });
    s.handle(0, Input::WorkerJoined { id: wid(1), spec: worker(1), claims: Vec::new() });
    let out = s.handle(1, Input::Cancel { session: sid(1), reason: "user".into() });
    assert_eq!(finals(&out).len(), 3);
    assert!(out.iter().any(|a| matches!(a, Action::CancelAssignment { worker, .. } if *worker == wid(1))));
    assert_eq!(finished_totals(&out).map(|t| t.cancelled), Some(3));
    // The cancelled test's report arrives later: silently ignored, and the slot frees.
    let out =
        s.handle(2, Input::Finished { worker: wid(1), key: key(sid(1), 0, 1), report: report(Outcome::Cancelled) });
    assert!(out.is_empty());
    assert!(s.workers()[0].held.is_empty());
    // Cancelling twice changes nothing.
    assert!(s.handle(3, Input::Cancel { session: sid(1), reason: "again".into() }).is_empty());
}

#[test]
fn cancelled_slot_is_not_reused_before_the_worker_reports() {
    let mut s = no_prefetch();
    s.handle(0, Input::Submit { id: sid(1), spec: spec(1), estimates: Vec::new() });
    s.handle(0, Input::WorkerJoined { id: wid(1), spec: worker(1), claims: Vec::new() });
    s.handle(1, Input::Cancel { session: sid(1), reason: "user".into() });
    let out = s.handle(2, Input::Submit { id: sid(2), spec: spec(1), estimates: Vec::new() });
    assert!(assigned(&out).is_empty(), "the slot still runs the cancelled test");
    let out =
        s.handle(3, Input::Finished { worker: wid(1), key: key(sid(1), 0, 1), report: report(Outcome::Cancelled) });
    assert_eq!(assigned(&out), vec![(wid(1), key(sid(2), 0, 1))]);
}

#[test]
fn worker_handing_a_test_back_requeues_it_without_a_loss() {
    let mut s = no_prefetch();
    s.handle(0, Input::Submit { id: sid(1), spec: spec(1), estimates: Vec::new() });
    s.handle(0, Input::WorkerJoined { id: wid(1), spec: worker(1), claims: Vec::new() });
    let out =
        s.handle(1, Input::Finished { worker: wid(1), key: key(sid(1), 0, 1), report: report(Outcome::Cancelled) });
    assert!(finals(&out).is_empty());
    assert!(out.iter().any(|a| matches!(a, Action::Emit { event: Event::TestRequeued { attempt: 2, .. }, .. })));
}

#[test]
fn session_timeout_cancels_on_tick() {
    let mut s = no_prefetch();
    let mut sp = spec(2);
    sp.session_timeout_ms = 1_000;
    s.handle(0, Input::Submit { id: sid(1), spec: sp, estimates: Vec::new() });
    assert!(finals(&s.handle(999, Input::Tick)).is_empty());
    let out = s.handle(1_000, Input::Tick);
    assert_eq!(finals(&out).len(), 2);
    let view = s.session(sid(1)).expect("session exists");
    assert!(view.cancel_reason.is_some_and(|r| r.contains("session timeout")));
}

#[test]
fn silent_worker_is_disconnected_and_lost_on_tick() {
    let mut s = Scheduler::new(Config { liveness_timeout_ms: 5_000, prefetch_per_slot: 0, ..Config::default() });
    s.handle(0, Input::Submit { id: sid(1), spec: spec(1), estimates: Vec::new() });
    s.handle(0, Input::WorkerJoined { id: wid(1), spec: worker(1), claims: Vec::new() });
    s.handle(4_000, Input::Heartbeat { worker: wid(1) });
    assert!(s.handle(9_000, Input::Tick).is_empty());
    let out = s.handle(9_001, Input::Tick);
    assert!(out.iter().any(|a| matches!(a, Action::DisconnectWorker { worker, .. } if *worker == wid(1))));
    assert!(s.workers().is_empty());
    assert_eq!(s.queued(), 1);
}

#[test]
fn required_labels_pick_the_worker() {
    let mut s = no_prefetch();
    let mut sp = spec(1);
    sp.required_labels.insert("os".into(), "mac".into());
    s.handle(0, Input::WorkerJoined { id: wid(1), spec: worker(1), claims: Vec::new() });
    let mut mac = worker(1);
    mac.labels.insert("os".into(), "mac".into());
    s.handle(0, Input::WorkerJoined { id: wid(2), spec: mac, claims: Vec::new() });
    let out = s.handle(0, Input::Submit { id: sid(1), spec: sp, estimates: Vec::new() });
    assert_eq!(assigned(&out), vec![(wid(2), key(sid(1), 0, 1))]);
}

#[test]
fn sessions_are_served_in_submission_order_and_listed_newest_first() {
    let mut s = no_prefetch();
    s.handle(0, Input::Submit { id: sid(1), spec: spec(1), estimates: Vec::new() });
    s.handle(0, Input::Submit { id: sid(2), spec: spec(1), estimates: Vec::new() });
    let out = s.handle(0, Input::WorkerJoined { id: wid(1), spec: worker(1), claims: Vec::new() });
    assert_eq!(assigned(&out), vec![(wid(1), key(sid(1), 0, 1))]);
    let ids: Vec<SessionId> = s.sessions().iter().map(|v| v.id).collect();
    assert_eq!(ids, vec![sid(2), sid(1)]);
}

#[test]
fn inputs_serialise_for_replay() {
    let input = Input::Finished { worker: wid(1), key: key(sid(1), 0, 1), report: report(Outcome::Passed) };
    let json = serde_json::to_string(&input).expect("inputs are plain data");
    let back: Input = serde_json::from_str(&json).expect("round trip");
    assert_eq!(back, input);
}

#[test]
fn oldest_finished_sessions_are_forgotten_beyond_the_limit() {
    let mut s = Scheduler::new(Config { keep_finished_sessions: 2, prefetch_per_slot: 0, ..Config::default() });
    for n in 1..=4 {
        s.handle(0, Input::Submit { id: sid(n), spec: spec(0), estimates: Vec::new() });
    }
    s.handle(0, Input::Submit { id: sid(5), spec: spec(1), estimates: Vec::new() });
    assert_eq!(s.forget_old_sessions(0), vec![sid(1), sid(2)]);
    let ids: Vec<SessionId> = s.sessions().iter().map(|v| v.id).collect();
    assert_eq!(ids, vec![sid(5), sid(4), sid(3)], "the running session is never forgotten");
    assert!(s.forget_old_sessions(0).is_empty());
}

#[test]
fn finished_sessions_are_forgotten_once_old_enough() {
    let config = Config { keep_finished_for_ms: 100, prefetch_per_slot: 0, ..Config::default() };
    let mut s = Scheduler::new(config);
    s.handle(0, Input::Submit { id: sid(1), spec: spec(0), estimates: Vec::new() });
    s.handle(50, Input::Submit { id: sid(2), spec: spec(0), estimates: Vec::new() });
    s.handle(50, Input::Submit { id: sid(3), spec: spec(1), estimates: Vec::new() });
    assert!(s.forget_old_sessions(99).is_empty());
    assert_eq!(s.forget_old_sessions(100), vec![sid(1)]);
    assert_eq!(s.forget_old_sessions(10_000), vec![sid(2)], "the running session is never forgotten");
}

#[test]
fn report_for_a_forgotten_session_frees_the_slot() {
    let mut s = Scheduler::new(Config { keep_finished_sessions: 0, prefetch_per_slot: 0, ..Config::default() });
    s.handle(0, Input::Submit { id: sid(1), spec: spec(1), estimates: Vec::new() });
    s.handle(0, Input::WorkerJoined { id: wid(1), spec: worker(1), claims: Vec::new() });
    s.handle(1, Input::Cancel { session: sid(1), reason: "user".into() });
    assert_eq!(s.forget_old_sessions(0), vec![sid(1)]);
    s.handle(2, Input::Submit { id: sid(2), spec: spec(1), estimates: Vec::new() });
    let out =
        s.handle(3, Input::Finished { worker: wid(1), key: key(sid(1), 0, 1), report: report(Outcome::Cancelled) });
    assert_eq!(assigned(&out), vec![(wid(1), key(sid(2), 0, 1))]);
}

#[test]
fn every_test_a_lost_worker_held_counts_a_loss_and_on_its_last_chance_runs_alone() {
    let mut s = Scheduler::new(Config { prefetch_per_slot: 1, max_worker_losses: 1, ..Config::default() });
    s.handle(0, Input::Submit { id: sid(1), spec: spec(3), estimates: Vec::new() });
    // A one-slot worker holds test 0 and test 1 (prefetched). Either may have been running: test
    // 0 may have finished with its report lost in the crash, and test 1 started and crashed it.
    s.handle(0, Input::WorkerJoined { id: wid(1), spec: worker(1), claims: Vec::new() });
    let out = s.handle(0, Input::WorkerLost { id: wid(1), reason: "crash".into() });
    assert!(finals(&out).is_empty());
    // Both are on their last chance: the next worker runs test 0 alone, nothing prefetched.
    let out = s.handle(1, Input::WorkerJoined { id: wid(2), spec: worker(1), claims: Vec::new() });
    assert_eq!(assigned(&out), vec![(wid(2), key(sid(1), 0, 2))]);
    // It crashes that worker too: it ends lost, and only it.
    let out = s.handle(2, Input::WorkerLost { id: wid(2), reason: "crash".into() });
    assert_eq!(finals(&out), vec![(0, Outcome::Lost)]);
    // Test 1 runs alone as well, passes, and then normal dispatch (with prefetch) resumes.
    let out = s.handle(3, Input::WorkerJoined { id: wid(3), spec: worker(1), claims: Vec::new() });
    assert_eq!(assigned(&out), vec![(wid(3), key(sid(1), 1, 2))]);
    let out = s.handle(4, Input::Finished { worker: wid(3), key: key(sid(1), 1, 2), report: report(Outcome::Passed) });
    assert_eq!(finals(&out), vec![(1, Outcome::Passed)]);
    assert_eq!(assigned(&out), vec![(wid(3), key(sid(1), 2, 1))]);
}

#[test]
fn a_worker_gone_silent_charges_only_the_next_test_of_each_slot() {
    let config = Config { prefetch_per_slot: 1, max_worker_losses: 1, liveness_timeout_ms: 1_000, ..Config::default() };
    let mut s = Scheduler::new(config);
    s.handle(0, Input::Submit { id: sid(1), spec: spec(3), estimates: Vec::new() });
    s.handle(0, Input::WorkerJoined { id: wid(1), spec: worker(1), claims: Vec::new() });
    // Frozen or cut off: no word, and no broken stream either, until the liveness timeout.
    let mut lost = false;
    for now in (200..=2_000).step_by(200) {
        lost |= s.handle(now, Input::Tick).iter().any(|a| matches!(a, Action::DisconnectWorker { .. }));
    }
    assert!(lost);
    // Test 0 (next in line) is on its last chance and runs alone...
    let out = s.handle(2_100, Input::WorkerJoined { id: wid(2), spec: worker(1), claims: Vec::new() });
    assert_eq!(assigned(&out), vec![(wid(2), key(sid(1), 0, 2))]);
    // ...test 1, only prefetched there, was not charged: it goes with a prefetch beside it.
    let out =
        s.handle(2_200, Input::Finished { worker: wid(2), key: key(sid(1), 0, 2), report: report(Outcome::Passed) });
    assert_eq!(assigned(&out), vec![(wid(2), key(sid(1), 1, 2)), (wid(2), key(sid(1), 2, 1))]);
}

#[test]
fn a_draining_worker_lost_counts_only_what_it_started() {
    let mut s = Scheduler::new(Config { prefetch_per_slot: 1, max_worker_losses: 1, ..Config::default() });
    s.handle(0, Input::Submit { id: sid(1), spec: spec(3), estimates: Vec::new() });
    s.handle(0, Input::WorkerJoined { id: wid(1), spec: worker(1), claims: Vec::new() });
    s.handle(1, Input::Started { worker: wid(1), key: key(sid(1), 0, 1) });
    s.handle(2, Input::Draining { worker: wid(1) });
    s.handle(3, Input::WorkerLost { id: wid(1), reason: "crash".into() });
    // Test 0 had started: it is on its last chance and runs alone.
    let out = s.handle(4, Input::WorkerJoined { id: wid(2), spec: worker(1), claims: Vec::new() });
    assert_eq!(assigned(&out), vec![(wid(2), key(sid(1), 0, 2))]);
    // Test 1 was never started by the draining worker: no loss, so it is dispatched with a
    // prefetch beside it.
    let out = s.handle(5, Input::Finished { worker: wid(2), key: key(sid(1), 0, 2), report: report(Outcome::Passed) });
    assert_eq!(assigned(&out), vec![(wid(2), key(sid(1), 1, 2)), (wid(2), key(sid(1), 2, 1))]);
}

#[test]
fn a_last_chance_test_gets_an_emptied_worker_while_others_keep_working() {
    let mut s = Scheduler::new(Config { prefetch_per_slot: 0, max_worker_losses: 1, ..Config::default() });
    s.handle(0, Input::Submit { id: sid(1), spec: spec(6), estimates: Vec::new() });
    s.handle(0, Input::WorkerJoined { id: wid(1), spec: worker(1), claims: Vec::new() });
    s.handle(0, Input::WorkerJoined { id: wid(2), spec: worker(2), claims: Vec::new() });
    // wid(1) runs test 0 and dies: test 0 is on its last chance; wid(2) is busy with 1 and 2.
    s.handle(1, Input::Started { worker: wid(1), key: key(sid(1), 0, 1) });
    s.handle(1, Input::WorkerLost { id: wid(1), reason: "crash".into() });
    // wid(2) is the only worker: it takes no more work until it is empty...
    let out = s.handle(2, Input::Finished { worker: wid(2), key: key(sid(1), 1, 1), report: report(Outcome::Passed) });
    assert!(assigned(&out).is_empty(), "{out:?}");
    // ...then runs test 0 alone.
    let out = s.handle(3, Input::Finished { worker: wid(2), key: key(sid(1), 2, 1), report: report(Outcome::Passed) });
    assert_eq!(assigned(&out), vec![(wid(2), key(sid(1), 0, 2))]);
}

#[test]
fn a_coordinator_stall_does_not_make_every_worker_lost() {
    let mut s = no_prefetch();
    s.handle(0, Input::WorkerJoined { id: wid(1), spec: worker(1), claims: Vec::new() });
    s.handle(100, Input::Tick);
    // The coordinator was paused for 30 s: the worker's heartbeats wait unread in its socket.
    let out = s.handle(30_100, Input::Tick);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(s.workers().len(), 1);
    // A worker that then stays silent is still lost, once the engine's regular ticks resume.
    let mut lost_at = None;
    for now in (30_300..=36_000).step_by(200) {
        if s.handle(now, Input::Tick).iter().any(|a| matches!(a, Action::DisconnectWorker { .. })) {
            lost_at = Some(now);
            break;
        }
    }
    assert_eq!(lost_at, Some(35_300), "5 s of silence after the stall");
}

#[test]
fn a_retry_prefers_another_worker() {
    let mut s = no_prefetch();
    let mut sp = spec(1);
    sp.retries = 1;
    s.handle(0, Input::Submit { id: sid(1), spec: sp, estimates: Vec::new() });
    s.handle(0, Input::WorkerJoined { id: wid(1), spec: worker(1), claims: Vec::new() });
    s.handle(0, Input::WorkerJoined { id: wid(2), spec: worker(1), claims: Vec::new() });
    // wid(1) got the test (first in order) and fails it; the idle wid(2) must get the retry.
    let out = s.handle(1, Input::Finished { worker: wid(1), key: key(sid(1), 0, 1), report: report(Outcome::Failed) });
    assert_eq!(assigned(&out), vec![(wid(2), key(sid(1), 0, 2))]);
}

#[test]
fn a_retry_waits_for_another_worker_while_one_exists_and_runs_where_it_can_when_none_does() {
    let mut s = no_prefetch();
    let mut sp = spec(2);
    sp.retries = 1;
    s.handle(0, Input::Submit { id: sid(1), spec: sp, estimates: Vec::new() });
    s.handle(0, Input::WorkerJoined { id: wid(1), spec: worker(1), claims: Vec::new() });
    s.handle(0, Input::WorkerJoined { id: wid(2), spec: worker(1), claims: Vec::new() });
    let out = s.handle(1, Input::Finished { worker: wid(1), key: key(sid(1), 0, 1), report: report(Outcome::Failed) });
    assert!(assigned(&out).is_empty(), "wid(2) is busy with test 1; wid(1) does not take its own retry");
    let out = s.handle(2, Input::WorkerLost { id: wid(2), reason: "gone".into() });
    let keys: Vec<AssignmentKey> = assigned(&out).iter().map(|(_, k)| *k).collect();
    assert_eq!(keys.len(), 1, "with wid(2) gone, wid(1) is the only one left and runs a test: {keys:?}");
}

#[test]
fn a_draining_worker_gets_no_new_work() {
    let mut s = no_prefetch();
    s.handle(0, Input::Submit { id: sid(1), spec: spec(2), estimates: Vec::new() });
    s.handle(0, Input::WorkerJoined { id: wid(1), spec: worker(1), claims: Vec::new() });
    s.handle(1, Input::Draining { worker: wid(1) });
    let out = s.handle(2, Input::Finished { worker: wid(1), key: key(sid(1), 0, 1), report: report(Outcome::Passed) });
    assert_eq!(finals(&out), vec![(0, Outcome::Passed)]);
    assert!(assigned(&out).is_empty());
    assert!(s.workers()[0].draining);
}

#[test]
fn a_late_result_from_a_lost_worker_is_recorded_as_discarded() {
    let mut s = no_prefetch();
    s.handle(0, Input::Submit { id: sid(1), spec: spec(1), estimates: Vec::new() });
    s.handle(0, Input::WorkerJoined { id: wid(1), spec: worker(1), claims: Vec::new() });
    s.handle(1, Input::WorkerLost { id: wid(1), reason: "silent".into() });
    let out = s.handle(2, Input::Finished { worker: wid(1), key: key(sid(1), 0, 1), report: report(Outcome::Passed) });
    assert!(finals(&out).is_empty());
    assert!(out.iter().any(|a| matches!(a, Action::Emit { event: Event::ResultDiscarded { attempt: 1, .. }, .. })));
}

#[test]
fn cancel_on_disconnect_waits_for_the_grace_and_only_when_asked() {
    let mut s = Scheduler::new(Config { liveness_timeout_ms: 1_000, ..Config::default() });
    let mut sp = spec(1);
    sp.cancel_on_disconnect = true;
    s.handle(0, Input::Submit { id: sid(1), spec: sp, estimates: Vec::new() });
    s.handle(0, Input::Submit { id: sid(2), spec: spec(1), estimates: Vec::new() });
    s.handle(100, Input::WatchStarted { session: sid(1) });
    s.handle(100, Input::WatchStarted { session: sid(2) });
    assert!(finals(&s.handle(5_000, Input::Tick)).is_empty(), "watched: nothing happens");
    s.handle(5_000, Input::WatchEnded { session: sid(1) });
    s.handle(5_000, Input::WatchEnded { session: sid(2) });
    assert!(finals(&s.handle(5_999, Input::Tick)).is_empty(), "within the grace");
    s.handle(5_500, Input::WatchStarted { session: sid(1) });
    assert!(finals(&s.handle(7_000, Input::Tick)).is_empty(), "a client came back");
    s.handle(7_000, Input::WatchEnded { session: sid(1) });
    let out = s.handle(8_000, Input::Tick);
    assert_eq!(finals(&out), vec![(0, Outcome::Cancelled)]);
    assert!(out.iter().all(|a| !matches!(a, Action::Emit { session, .. } if *session == sid(2))));
}

#[test]
fn a_running_test_of_a_cancelled_session_ends_with_the_output_up_to_the_kill() {
    let mut s = no_prefetch();
    s.handle(0, Input::Submit { id: sid(1), spec: spec(2), estimates: Vec::new() });
    s.handle(0, Input::WorkerJoined { id: wid(1), spec: worker(1), claims: Vec::new() });
    s.handle(1, Input::Started { worker: wid(1), key: key(sid(1), 0, 1) });
    let out = s.handle(2, Input::Cancel { session: sid(1), reason: "user".into() });
    assert_eq!(finals(&out), vec![(1, Outcome::Cancelled)], "the queued test ends at once");
    assert!(finished_totals(&out).is_none(), "the running one waits for its worker");
    let mut killed = report(Outcome::Cancelled);
    killed.output = b"stuck here".to_vec();
    killed.duration_ms = 1_500;
    let out = s.handle(3, Input::Finished { worker: wid(1), key: key(sid(1), 0, 1), report: killed });
    let event = out.iter().find_map(|a| match a {
        Action::Emit { event: Event::TestFinished { is_final: true, outcome, report, .. }, .. } => {
            Some((*outcome, report.clone()))
        }
        _ => None,
    });
    let (outcome, report) = event.expect("a final event");
    assert_eq!(
        (outcome, report.output.as_slice(), report.duration_ms),
        (Outcome::Cancelled, &b"stuck here"[..], 1_500)
    );
    assert_eq!(report.message, "user");
    assert_eq!(finished_totals(&out).map(|t| t.cancelled), Some(2));
}

#[test]
fn a_cancelled_running_test_whose_worker_dies_still_ends() {
    let mut s = no_prefetch();
    s.handle(0, Input::Submit { id: sid(1), spec: spec(1), estimates: Vec::new() });
    s.handle(0, Input::WorkerJoined { id: wid(1), spec: worker(1), claims: Vec::new() });
    s.handle(1, Input::Started { worker: wid(1), key: key(sid(1), 0, 1) });
    s.handle(2, Input::Cancel { session: sid(1), reason: "user".into() });
    let out = s.handle(3, Input::WorkerLost { id: wid(1), reason: "crash".into() });
    assert_eq!(finals(&out), vec![(0, Outcome::Cancelled)]);
    assert!(finished_totals(&out).is_some());
}

#[test]
fn a_worker_that_hands_work_back_gets_no_more() {
    let mut s = no_prefetch();
    s.handle(0, Input::Submit { id: sid(1), spec: spec(2), estimates: Vec::new() });
    s.handle(0, Input::WorkerJoined { id: wid(1), spec: worker(1), claims: Vec::new() });
    let out =
        s.handle(1, Input::Finished { worker: wid(1), key: key(sid(1), 0, 1), report: report(Outcome::Cancelled) });
    assert!(assigned(&out).is_empty(), "{out:?}");
    let out = s.handle(2, Input::WorkerJoined { id: wid(2), spec: worker(1), claims: Vec::new() });
    assert_eq!(assigned(&out), vec![(wid(2), key(sid(1), 0, 2))]);
}

#[test]
fn a_tick_forgets_old_finished_sessions_through_actions() {
    let mut s = Scheduler::new(Config { keep_finished_sessions: 1, prefetch_per_slot: 0, ..Config::default() });
    for n in 1..=3 {
        s.handle(0, Input::Submit { id: sid(n), spec: spec(0), estimates: Vec::new() });
    }
    let forgotten = |out: &[Action]| -> Vec<SessionId> {
        out.iter()
            .filter_map(|a| match a {
                Action::Forget { session } => Some(*session),
                _ => None,
            })
            .collect()
    };
    assert_eq!(forgotten(&s.handle(1, Input::Tick)), vec![sid(1), sid(2)]);
    assert!(forgotten(&s.handle(2, Input::Tick)).is_empty(), "each session is forgotten once");
    assert!(s.session(sid(1)).is_none() && s.session(sid(3)).is_some());
}

#[test]
fn the_log_gets_a_passed_tests_tail_and_a_failures_whole_output() {
    let mut s = no_prefetch();
    s.handle(0, Input::Submit { id: sid(1), spec: spec(2), estimates: Vec::new() });
    s.handle(0, Input::WorkerJoined { id: wid(1), spec: worker(2), claims: Vec::new() });
    let emitted = |out: &[Action]| {
        out.iter()
            .find_map(|a| match a {
                Action::Emit { event: Event::TestFinished { report, .. }, .. } => Some(report.clone()),
                _ => None,
            })
            .expect("a TestFinished event")
    };
    let mut passed = report(Outcome::Passed);
    passed.output = vec![b'x'; 100_000];
    let out = s.handle(1, Input::Finished { worker: wid(1), key: key(sid(1), 0, 1), report: passed });
    let kept = emitted(&out);
    assert!(kept.output.len() < 20_000 && kept.output.ends_with(b"xxx"), "{}", kept.output.len());
    assert_eq!(kept.output_dropped_bytes, 100_000 - 16 * 1024);
    let mut failed = report(Outcome::Failed);
    failed.output = vec![b'y'; 100_000];
    let out = s.handle(2, Input::Finished { worker: wid(1), key: key(sid(1), 1, 1), report: failed });
    assert_eq!(emitted(&out).output.len(), 100_000, "a failure keeps all of its output");
}

/// A scheduler whose session 1's events are kept, as a store would keep them.
struct Recorded {
    s: Scheduler,
    log: Vec<Event>,
}

impl Recorded {
    /// Session 1 of `spec` submitted, a worker of `slots` slots joined, tests `0..started`
    /// started on it.
    fn started(config: Config, spec: SessionSpec, slots: u32, started: u32) -> Recorded {
        let mut r = Recorded { s: Scheduler::new(config), log: Vec::new() };
        r.feed(0, Input::Submit { id: sid(1), spec, estimates: Vec::new() });
        r.feed(0, Input::WorkerJoined { id: wid(1), spec: worker(slots), claims: Vec::new() });
        for test in 0..started {
            r.feed(1, Input::Started { worker: wid(1), key: key(sid(1), test, 1) });
        }
        r
    }

    fn feed(&mut self, now: Millis, input: Input) {
        for action in self.s.handle(now, input) {
            if let Action::Emit { session, event } = action
                && session == sid(1)
            {
                self.log.push(event);
            }
        }
    }
}

/// A scheduler restarted from `log`, the events a first one emitted for session 1.
fn restarted(config: Config, spec: SessionSpec, log: Vec<Event>, now: Millis) -> Scheduler {
    let mut s = Scheduler::new(config);
    s.restore(
        now,
        vec![RestoredSession { id: sid(1), spec, created_at: 0, state: Restored::Unfinished { events: log } }],
    );
    s
}

fn requeued(actions: &[Action]) -> Vec<(u32, u32, Requeue)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Emit { event: Event::TestRequeued { test, attempt, cause, .. }, .. } => {
                Some((*test, *attempt, *cause))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_restarted_scheduler_keeps_outcomes_and_requeues_what_nobody_claimed_without_a_loss() {
    let config = Config { prefetch_per_slot: 0, liveness_timeout_ms: 1_000, ..Config::default() };
    let mut first = Recorded::started(config.clone(), spec(3), 3, 2);
    first.feed(2, Input::Finished { worker: wid(1), key: key(sid(1), 0, 1), report: report(Outcome::Passed) });

    let mut s = restarted(config, spec(3), first.log, 10_000);
    let view = s.session(sid(1)).expect("restored");
    assert_eq!((view.totals.passed, view.finished), (1, false));
    // Inside the adoption window the orphans are nobody's to run again.
    assert!(
        assigned(&s.handle(10_000, Input::WorkerJoined { id: wid(2), spec: worker(3), claims: Vec::new() })).is_empty()
    );
    assert!(requeued(&s.handle(10_999, Input::Tick)).is_empty());
    let out = s.handle(11_000, Input::Tick);
    assert_eq!(requeued(&out), vec![(1, 2, Requeue::Unclaimed), (2, 2, Requeue::Unclaimed)]);
    assert_eq!(assigned(&out), vec![(wid(2), key(sid(1), 1, 2)), (wid(2), key(sid(1), 2, 2))], "in their order");
    // A result of the attempt nobody claimed does not count.
    let stale = Input::Finished { worker: wid(2), key: key(sid(1), 1, 1), report: report(Outcome::Passed) };
    assert!(finals(&s.handle(11_001, stale)).is_empty());
    for test in 1..3 {
        let done = Input::Finished { worker: wid(2), key: key(sid(1), test, 2), report: report(Outcome::Passed) };
        s.handle(11_002, done);
    }
    let view = s.session(sid(1)).expect("kept");
    assert_eq!((view.totals.passed, view.totals.lost, view.finished), (3, 0, true));
}

#[test]
fn a_restarted_scheduler_remembers_retries_and_losses_spent() {
    let config = Config { prefetch_per_slot: 0, liveness_timeout_ms: 1_000, max_worker_losses: 1, ..Config::default() };
    let mut sp = spec(2);
    sp.retries = 1;
    let mut first = Recorded::started(config.clone(), sp.clone(), 2, 0);
    first.feed(1, Input::Finished { worker: wid(1), key: key(sid(1), 0, 1), report: report(Outcome::Failed) });
    first.feed(1, Input::Started { worker: wid(1), key: key(sid(1), 1, 1) });
    first.feed(2, Input::WorkerLost { id: wid(1), reason: "gone".into() });
    let log = first.log;
    assert!(
        log.iter()
            .any(|e| matches!(e, Event::TestRequeued { test: 1, cause: Requeue::WorkerLost { charged: true }, .. }))
    );

    // Test 0 has had attempts 1 (failed, its one retry) and 2 (its worker lost); test 1 has
    // had attempt 1, whose loss was charged to it (its one loss).
    let mut s = restarted(config, sp, log, 5_000);
    s.handle(5_000, Input::WorkerJoined { id: wid(2), spec: worker(1), claims: Vec::new() });
    let out = s.handle(6_000, Input::Tick);
    assert_eq!(assigned(&out), vec![(wid(2), key(sid(1), 0, 4))], "a new attempt after the ones the log spent");
    let failed = Input::Finished { worker: wid(2), key: key(sid(1), 0, 4), report: report(Outcome::Failed) };
    let out = s.handle(6_001, failed);
    assert_eq!(finals(&out), vec![(0, Outcome::Failed)], "its one retry was used before");
    assert_eq!(assigned(&out), vec![(wid(2), key(sid(1), 1, 3))]);
    let out = s.handle(6_002, Input::WorkerLost { id: wid(2), reason: "gone".into() });
    assert_eq!(finals(&out), vec![(1, Outcome::Lost)], "its one loss was spent before");
}

#[test]
fn a_restarted_cancelled_session_ends_its_orphans_cancelled() {
    let config = Config { prefetch_per_slot: 0, liveness_timeout_ms: 1_000, ..Config::default() };
    let mut first = Recorded::started(config.clone(), spec(2), 2, 2);
    first.feed(1, Input::Cancel { session: sid(1), reason: "stop".into() });
    let log = first.log;
    assert!(!log.iter().any(|e| matches!(e, Event::Finished { .. })), "the running tests had not reported yet");

    let mut s = restarted(config, spec(2), log, 5_000);
    let out = s.handle(6_000, Input::Tick);
    assert_eq!(finals(&out), vec![(0, Outcome::Cancelled), (1, Outcome::Cancelled)]);
    assert_eq!(finished_totals(&out).map(|t| t.cancelled), Some(2));
}

#[test]
fn a_restored_finished_session_is_shown_as_it_ended() {
    let mut s = Scheduler::new(Config::default());
    let totals = Totals { total: 2, passed: 1, failed: 1, ..Totals::default() };
    let state = Restored::Finished { finished_at: 9, totals, cancel_reason: None, output_bytes: 0 };
    s.restore(10, vec![RestoredSession { id: sid(1), spec: spec(2), created_at: 1, state }]);
    let view = s.session(sid(1)).expect("restored");
    assert_eq!((view.totals, view.finished, view.finished_at), (totals, true, Some(9)));
    assert!(
        assigned(&s.handle(10, Input::WorkerJoined { id: wid(1), spec: worker(2), claims: Vec::new() })).is_empty()
    );
}

#[test]
fn a_restored_session_whose_tests_all_ended_finishes_on_the_first_tick() {
    let mut first = Recorded::started(Config { prefetch_per_slot: 0, ..Config::default() }, spec(1), 1, 0);
    first.feed(1, Input::Finished { worker: wid(1), key: key(sid(1), 0, 1), report: report(Outcome::Passed) });
    // The coordinator died after keeping the test's outcome but before its `Finished`.
    assert!(matches!(first.log.pop(), Some(Event::Finished { .. })));
    let mut s = restarted(Config::default(), spec(1), first.log, 10);
    let out = s.handle(10, Input::Tick);
    assert_eq!(finished_totals(&out).map(|t| t.passed), Some(1));
    assert!(finished_totals(&s.handle(11, Input::Tick)).is_none(), "once");
}

fn claim(test: u32, attempt: u32, started: bool) -> Claim {
    Claim { key: key(sid(1), test, attempt), started }
}

fn cancels(actions: &[Action]) -> Vec<(WorkerId, AssignmentKey)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::CancelAssignment { worker, key, .. } => Some((*worker, *key)),
            _ => None,
        })
        .collect()
}

fn started_events(actions: &[Action]) -> Vec<(u32, u32)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Emit { event: Event::TestStarted { test, attempt, .. }, .. } => Some((*test, *attempt)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_worker_that_rejoins_a_restarted_scheduler_keeps_its_live_attempts_and_their_results_count() {
    let config = Config { prefetch_per_slot: 0, liveness_timeout_ms: 1_000, ..Config::default() };
    // Tests 0 and 1 started on worker 1; test 1's start was not kept before the crash.
    let mut first = Recorded::started(config.clone(), spec(3), 3, 1);
    let mut s = restarted(config, spec(3), first.log.clone(), 10_000);
    first.feed(1, Input::Started { worker: wid(1), key: key(sid(1), 1, 1) });

    let claims = vec![claim(0, 1, true), claim(1, 1, true), claim(2, 1, false)];
    let out = s.handle(10_100, Input::WorkerJoined { id: wid(2), spec: worker(3), claims });
    assert!(cancels(&out).is_empty() && assigned(&out).is_empty(), "{out:?}");
    assert_eq!(started_events(&out), vec![(1, 1)], "the start the log missed, once");
    assert_eq!(s.session(sid(1)).map(|v| v.running), Some(2));
    // The window closes: nothing adopted is run again.
    assert!(requeued(&s.handle(11_000, Input::Tick)).is_empty());
    let out = s.handle(11_001, Input::Started { worker: wid(2), key: key(sid(1), 2, 1) });
    assert_eq!(started_events(&out), vec![(2, 1)]);
    for test in 0..3 {
        let done = Input::Finished { worker: wid(2), key: key(sid(1), test, 1), report: report(Outcome::Passed) };
        assert_eq!(finals(&s.handle(11_002, done)), vec![(test, Outcome::Passed)]);
    }
    assert!(s.session(sid(1)).is_some_and(|v| v.finished && v.totals.passed == 3));
}

#[test]
fn claims_that_are_no_live_attempt_are_cancelled_and_their_reports_ignored() {
    let config = Config { prefetch_per_slot: 0, liveness_timeout_ms: 1_000, ..Config::default() };
    let mut first = Recorded::started(config.clone(), spec(2), 2, 2);
    first.feed(2, Input::Finished { worker: wid(1), key: key(sid(1), 0, 1), report: report(Outcome::Passed) });
    let mut s = restarted(config, spec(2), first.log, 10_000);

    // Test 0 has its outcome; attempt 2 of test 1 was never handed out; and the same live
    // attempt claimed by two workers goes to the first.
    let claims = vec![claim(0, 1, true), claim(1, 2, true), claim(1, 1, true)];
    let out = s.handle(10_100, Input::WorkerJoined { id: wid(2), spec: worker(2), claims });
    assert_eq!(cancels(&out), vec![(wid(2), key(sid(1), 0, 1)), (wid(2), key(sid(1), 1, 2))]);
    let out = s.handle(10_100, Input::WorkerJoined { id: wid(3), spec: worker(2), claims: vec![claim(1, 1, true)] });
    assert_eq!(cancels(&out), vec![(wid(3), key(sid(1), 1, 1))]);
    // The reports of those cancels say nothing: no event at all.
    for (worker, test, attempt) in [(wid(2), 0, 1), (wid(2), 1, 2), (wid(3), 1, 1)] {
        let cancelled = Input::Finished { worker, key: key(sid(1), test, attempt), report: report(Outcome::Cancelled) };
        assert!(s.handle(10_200, cancelled).is_empty());
    }
    let done = Input::Finished { worker: wid(2), key: key(sid(1), 1, 1), report: report(Outcome::Failed) };
    assert_eq!(finals(&s.handle(10_300, done)), vec![(1, Outcome::Failed)]);
}

#[test]
fn a_resent_report_counts_once_for_an_orphan_and_never_for_a_counted_or_stale_attempt() {
    let config = Config { prefetch_per_slot: 0, liveness_timeout_ms: 1_000, ..Config::default() };
    let first = Recorded::started(config.clone(), spec(2), 2, 2);
    let mut s = restarted(config, spec(2), first.log, 10_000);
    s.handle(10_100, Input::WorkerJoined { id: wid(2), spec: worker(2), claims: Vec::new() });

    // Test 0 finished while the coordinator was away; its worker resends the report.
    let resent = Input::Resent { worker: wid(2), key: key(sid(1), 0, 1), report: report(Outcome::Passed) };
    assert_eq!(finals(&s.handle(10_200, resent.clone())), vec![(0, Outcome::Passed)]);
    assert!(s.handle(10_201, resent).is_empty(), "sent again after it counted: dropped without a word");
    let stale = Input::Resent { worker: wid(2), key: key(sid(1), 1, 7), report: report(Outcome::Passed) };
    assert!(s.handle(10_202, stale).is_empty());
    // Test 1 is requeued once the window closes; its old attempt's report no longer counts.
    let out = s.handle(11_000, Input::Tick);
    assert_eq!(assigned(&out), vec![(wid(2), key(sid(1), 1, 2))]);
    let late = Input::Resent { worker: wid(2), key: key(sid(1), 1, 1), report: report(Outcome::Passed) };
    assert!(finals(&s.handle(11_001, late)).is_empty());
}

#[test]
fn a_running_claim_in_a_session_cancelled_before_the_restart_is_stopped_and_ends_cancelled() {
    let config = Config { prefetch_per_slot: 0, liveness_timeout_ms: 1_000, ..Config::default() };
    let mut first = Recorded::started(config.clone(), spec(2), 2, 1);
    first.feed(1, Input::Cancel { session: sid(1), reason: "stop".into() });
    let mut s = restarted(config, spec(2), first.log, 10_000);
    // Test 1 was never started: it was cancelled with the session; test 0 was still stopping.
    let out = s.handle(10_100, Input::WorkerJoined { id: wid(2), spec: worker(2), claims: vec![claim(0, 1, true)] });
    assert_eq!(cancels(&out), vec![(wid(2), key(sid(1), 0, 1))]);
    let mut killed = report(Outcome::Failed);
    killed.output = b"up to the kill".to_vec();
    let out = s.handle(10_200, Input::Finished { worker: wid(2), key: key(sid(1), 0, 1), report: killed });
    assert_eq!(finals(&out), vec![(0, Outcome::Cancelled)]);
    assert_eq!(finished_totals(&out).map(|t| t.cancelled), Some(2));
}

fn history(ms: u64, failed_last: bool) -> plan::Estimate {
    plan::Estimate { ms, source: plan::Source::History, failed_last }
}

#[test]
fn a_session_is_served_failed_first_then_longest_first_and_keeps_that_order_across_a_restart() {
    let config = Config { prefetch_per_slot: 0, liveness_timeout_ms: 1_000, ..Config::default() };
    let estimates = vec![history(10, false), history(900, false), history(5, true), history(300, false)];
    let mut first = Recorded { s: Scheduler::new(config.clone()), log: Vec::new() };
    first.feed(0, Input::Submit { id: sid(1), spec: spec(4), estimates: estimates.clone() });
    let out = first.s.handle(0, Input::WorkerJoined { id: wid(1), spec: worker(1), claims: Vec::new() });
    assert_eq!(assigned(&out), vec![(wid(1), key(sid(1), 2, 1))], "the one that failed last time first");
    // The coordinator dies before anything ends: the rest keep their order after the restart.
    let mut s = restarted(config, spec(4), first.log, 10_000);
    s.handle(10_000, Input::WorkerJoined { id: wid(2), spec: worker(1), claims: Vec::new() });
    let mut served = Vec::new();
    let mut out = s.handle(11_000, Input::Tick);
    while let Some((worker, key)) = assigned(&out).first().copied() {
        served.push(key.test);
        out = s.handle(11_001, Input::Finished { worker, key, report: report(Outcome::Passed) });
    }
    assert_eq!(served, vec![2, 1, 3, 0]);
}

#[test]
fn max_fail_cancels_the_rest_once_enough_tests_have_failed() {
    let mut sp = spec(4);
    sp.max_failures = 1;
    let mut s = no_prefetch();
    s.handle(0, Input::Submit { id: sid(1), spec: sp, estimates: Vec::new() });
    s.handle(0, Input::WorkerJoined { id: wid(1), spec: worker(2), claims: Vec::new() });
    s.handle(1, Input::Started { worker: wid(1), key: key(sid(1), 1, 1) });
    let out = s.handle(2, Input::Finished { worker: wid(1), key: key(sid(1), 0, 1), report: report(Outcome::Failed) });
    assert_eq!(finals(&out), vec![(0, Outcome::Failed), (2, Outcome::Cancelled), (3, Outcome::Cancelled)]);
    assert_eq!(cancels(&out), vec![(wid(1), key(sid(1), 1, 1))], "what runs is stopped");
    // The running one fails too, but it was stopped: cancelled, and the session says why.
    let out = s.handle(3, Input::Finished { worker: wid(1), key: key(sid(1), 1, 1), report: report(Outcome::Failed) });
    assert_eq!(finals(&out), vec![(1, Outcome::Cancelled)]);
    let view = s.session(sid(1)).expect("kept");
    assert!(view.finished && view.cancel_reason.is_some_and(|r| r.contains("--max-fail 1")));
}

/// `--speculate`: session 1 of `tests` tests, each known from history to take 1 s, on two
/// one-slot workers; test 0 started on worker 1 at 0, and every other test passed at once, so
/// worker 2 is idle from 1 on.
fn speculating(tests: u32, change: impl FnOnce(&mut SessionSpec)) -> Scheduler {
    speculating_recorded(tests, change).s
}

fn speculating_recorded(tests: u32, change: impl FnOnce(&mut SessionSpec)) -> Recorded {
    let mut r = Recorded { s: no_prefetch(), log: Vec::new() };
    r.feed(0, Input::Submit { id: sid(1), spec: speculated_spec(tests, change), estimates: known(tests) });
    r.feed(0, Input::WorkerJoined { id: wid(1), spec: worker(1), claims: Vec::new() });
    r.feed(0, Input::WorkerJoined { id: wid(2), spec: worker(1), claims: Vec::new() });
    r.feed(0, Input::Started { worker: wid(1), key: key(sid(1), 0, 1) });
    for test in 1..tests {
        r.feed(1, Input::Started { worker: wid(2), key: key(sid(1), test, 1) });
        let passed = Input::Finished { worker: wid(2), key: key(sid(1), test, 1), report: report(Outcome::Passed) };
        r.feed(1, passed);
    }
    r
}

fn speculated_spec(tests: u32, change: impl FnOnce(&mut SessionSpec)) -> SessionSpec {
    let mut sp = spec(tests as usize);
    sp.speculate = true;
    change(&mut sp);
    sp
}

/// Estimates of 1 s from history for `tests` tests.
fn known(tests: u32) -> Vec<plan::Estimate> {
    vec![plan::Estimate { ms: 1_000, source: plan::Source::History, failed_last: false }; tests as usize]
}

/// Heartbeats from both workers and a tick at `now`.
fn tick_at(s: &mut Scheduler, now: Millis) -> Vec<Action> {
    for w in [wid(1), wid(2)] {
        s.handle(now, Input::Heartbeat { worker: w });
    }
    s.handle(now, Input::Tick)
}

fn speculated(actions: &[Action]) -> Vec<(u32, u32, u32)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Emit { event: Event::TestSpeculated { test, running, attempt, .. }, .. } => {
                Some((*test, *running, *attempt))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_late_test_runs_again_on_an_idle_slot_once_and_the_first_to_pass_wins() {
    let mut s = speculating(2, |_| {});
    assert!(assigned(&tick_at(&mut s, 1_999)).is_empty(), "not yet twice its estimate");
    let out = tick_at(&mut s, 2_000);
    assert_eq!(speculated(&out), vec![(0, 1, 2)]);
    assert_eq!(assigned(&out), vec![(wid(2), key(sid(1), 0, 2))]);
    assert!(assigned(&tick_at(&mut s, 9_000)).is_empty(), "a test is speculated once");
    assert_eq!(s.workers()[1].running_tests.len(), 0, "the spare has not started");
    s.handle(9_001, Input::Started { worker: wid(2), key: key(sid(1), 0, 2) });
    assert_eq!(s.session(sid(1)).map(|v| v.running), Some(2), "both attempts run");
    assert!(s.workers().iter().all(|w| w.running_tests == vec!["t0.sh".to_string()]));

    let out =
        s.handle(9_500, Input::Finished { worker: wid(2), key: key(sid(1), 0, 2), report: report(Outcome::Passed) });
    assert_eq!(finals(&out), vec![(0, Outcome::Passed)]);
    assert_eq!(cancels(&out), vec![(wid(1), key(sid(1), 0, 1))]);
    assert_eq!(finished_totals(&out).map(|t| (t.passed, t.total)), Some((2, 2)));
    // The elder's report of the kill is void: no event, and its slot frees.
    let late = Input::Finished { worker: wid(1), key: key(sid(1), 0, 1), report: report(Outcome::Cancelled) };
    assert!(s.handle(9_600, late).is_empty());
    assert!(s.workers().iter().all(|w| w.held.is_empty()));
}

#[test]
fn the_elder_reporting_first_wins_and_the_spare_is_stopped() {
    let mut s = speculating(2, |_| {});
    tick_at(&mut s, 2_000);
    let out =
        s.handle(2_100, Input::Finished { worker: wid(1), key: key(sid(1), 0, 1), report: report(Outcome::Passed) });
    assert_eq!(finals(&out), vec![(0, Outcome::Passed)]);
    assert_eq!(cancels(&out), vec![(wid(2), key(sid(1), 0, 2))]);
    let void = Input::Finished { worker: wid(2), key: key(sid(1), 0, 2), report: report(Outcome::Cancelled) };
    assert!(s.handle(2_200, void).is_empty());
    assert!(s.session(sid(1)).is_some_and(|v| v.finished && v.totals.passed == 2 && v.running == 0));
}

#[test]
fn a_failure_of_either_with_retries_left_is_retried_above_both_attempts() {
    for (worker, attempt) in [(wid(1), 1), (wid(2), 2)] {
        let mut s = speculating(2, |sp| sp.retries = 1);
        tick_at(&mut s, 2_000);
        s.handle(2_001, Input::Started { worker: wid(2), key: key(sid(1), 0, 2) });
        let failed = Input::Finished { worker, key: key(sid(1), 0, attempt), report: report(Outcome::Failed) };
        let out = s.handle(2_100, failed);
        assert!(finals(&out).is_empty(), "a retry is left");
        let other = if worker == wid(1) { (wid(2), key(sid(1), 0, 2)) } else { (wid(1), key(sid(1), 0, 1)) };
        assert_eq!(cancels(&out), vec![other]);
        // The retry, numbered above both, avoids the worker it failed on: it waits for the
        // other one to be done stopping its attempt.
        assert!(assigned(&out).is_empty());
        let void = Input::Finished { worker: other.0, key: other.1, report: report(Outcome::Cancelled) };
        assert_eq!(assigned(&s.handle(2_150, void)), vec![(other.0, key(sid(1), 0, 3))]);
        let passed = Input::Finished { worker: other.0, key: key(sid(1), 0, 3), report: report(Outcome::Passed) };
        assert_eq!(finals(&s.handle(2_200, passed)), vec![(0, Outcome::Flaky)]);
    }
}

#[test]
fn a_lost_worker_takes_only_its_own_attempt_of_a_pair_and_nothing_is_requeued() {
    for (gone, stays, attempt) in [(wid(1), wid(2), 2), (wid(2), wid(1), 1)] {
        let mut s = speculating(2, |_| {});
        tick_at(&mut s, 2_000);
        s.handle(2_001, Input::Started { worker: wid(2), key: key(sid(1), 0, 2) });
        let out = s.handle(2_100, Input::WorkerLost { id: gone, reason: "killed".into() });
        assert!(requeued(&out).is_empty() && assigned(&out).is_empty(), "{out:?}");
        assert_eq!(s.session(sid(1)).map(|v| v.running), Some(1));
        let passed = Input::Finished { worker: stays, key: key(sid(1), 0, attempt), report: report(Outcome::Passed) };
        let out = s.handle(2_200, passed);
        assert_eq!(finals(&out), vec![(0, Outcome::Passed)]);
        assert!(cancels(&out).is_empty(), "nothing left to stop");
    }
}

#[test]
fn a_handed_back_attempt_of_a_pair_leaves_the_other_running() {
    let mut s = speculating(2, |_| {});
    tick_at(&mut s, 2_000);
    let back = Input::Finished { worker: wid(2), key: key(sid(1), 0, 2), report: report(Outcome::Cancelled) };
    let out = s.handle(2_100, back);
    assert!(out.is_empty(), "{out:?}");
    assert!(s.workers()[1].draining);
    let passed = Input::Finished { worker: wid(1), key: key(sid(1), 0, 1), report: report(Outcome::Passed) };
    assert_eq!(finals(&s.handle(2_200, passed)), vec![(0, Outcome::Passed)]);
}

#[test]
fn cancelling_a_session_keeps_the_elders_output_and_voids_the_spare() {
    let mut s = speculating(2, |_| {});
    tick_at(&mut s, 2_000);
    let out = s.handle(2_100, Input::Cancel { session: sid(1), reason: "user".into() });
    let mut stopped = cancels(&out);
    stopped.sort();
    assert_eq!(stopped, vec![(wid(1), key(sid(1), 0, 1)), (wid(2), key(sid(1), 0, 2))]);
    let spare = Input::Finished { worker: wid(2), key: key(sid(1), 0, 2), report: report(Outcome::Cancelled) };
    assert!(s.handle(2_200, spare).is_empty());
    let mut elder = report(Outcome::Cancelled);
    elder.output = b"what it printed".to_vec();
    let out = s.handle(2_300, Input::Finished { worker: wid(1), key: key(sid(1), 0, 1), report: elder });
    let kept = out.iter().any(|a| {
        matches!(a, Action::Emit { event: Event::TestFinished { attempt: 1, is_final: true, report, .. }, .. }
            if report.output == b"what it printed")
    });
    assert!(kept, "{out:?}");
    assert_eq!(finished_totals(&out).map(|t| t.cancelled), Some(1));
}

#[test]
fn nothing_is_speculated_without_the_flag_history_an_empty_queue_or_room_under_the_cap() {
    let quiet = |mut s: Scheduler| speculated(&tick_at(&mut s, 20_000)).is_empty();
    assert!(quiet(speculating(2, |sp| sp.speculate = false)), "off by default");
    assert!(quiet(speculating(2, |sp| sp.max_slots = 1)), "the session's slot cap");
    assert!(quiet(speculating(2, |sp| sp.required_labels = BTreeMap::from([("gpu".into(), "1".into())]))));
    // A guess from file size is no grounds to call a test late.
    let mut s = no_prefetch();
    let guess = plan::Estimate { ms: 1_000, source: plan::Source::Size, failed_last: false };
    s.handle(0, Input::Submit { id: sid(1), spec: speculated_spec(1, |_| {}), estimates: vec![guess] });
    s.handle(0, Input::WorkerJoined { id: wid(1), spec: worker(1), claims: Vec::new() });
    s.handle(0, Input::WorkerJoined { id: wid(2), spec: worker(1), claims: Vec::new() });
    s.handle(0, Input::Started { worker: wid(1), key: key(sid(1), 0, 1) });
    assert!(quiet(s));
    // While tests wait to start, idle slots are theirs.
    let mut s = no_prefetch();
    s.handle(0, Input::Submit { id: sid(1), spec: speculated_spec(3, |_| {}), estimates: known(3) });
    s.handle(0, Input::WorkerJoined { id: wid(1), spec: worker(1), claims: Vec::new() });
    s.handle(0, Input::Started { worker: wid(1), key: key(sid(1), 0, 1) });
    s.handle(0, Input::WorkerJoined { id: wid(2), spec: worker(1), claims: Vec::new() });
    s.handle(0, Input::Started { worker: wid(2), key: key(sid(1), 1, 1) });
    assert!(quiet(s));
}

#[test]
fn one_worker_with_a_free_slot_runs_both_attempts() {
    let mut s = no_prefetch();
    s.handle(0, Input::Submit { id: sid(1), spec: speculated_spec(1, |_| {}), estimates: known(1) });
    s.handle(0, Input::WorkerJoined { id: wid(1), spec: worker(2), claims: Vec::new() });
    s.handle(0, Input::Started { worker: wid(1), key: key(sid(1), 0, 1) });
    s.handle(3_000, Input::Heartbeat { worker: wid(1) });
    let out = s.handle(3_000, Input::Tick);
    assert_eq!(assigned(&out), vec![(wid(1), key(sid(1), 0, 2))]);
    // Lost with both: the test is requeued once, with an attempt above both.
    let out = s.handle(3_100, Input::WorkerLost { id: wid(1), reason: "killed".into() });
    assert_eq!(requeued(&out).iter().map(|r| (r.0, r.1)).collect::<Vec<_>>(), vec![(0, 3)]);
}

#[test]
fn a_restarted_scheduler_can_adopt_the_spare_of_a_pair_only() {
    let config = Config { prefetch_per_slot: 0, liveness_timeout_ms: 1_000, ..Config::default() };
    let mut first = speculating_recorded(2, |_| {});
    first.feed(2_000, Input::Heartbeat { worker: wid(1) });
    first.feed(2_000, Input::Heartbeat { worker: wid(2) });
    first.feed(2_000, Input::Tick);
    assert!(first.log.iter().any(|e| matches!(e, Event::TestSpeculated { .. })));

    let mut s = restarted(config, speculated_spec(2, |_| {}), first.log, 10_000);
    let out = s.handle(10_100, Input::WorkerJoined { id: wid(1), spec: worker(1), claims: vec![claim(0, 1, true)] });
    assert_eq!(cancels(&out), vec![(wid(1), key(sid(1), 0, 1))], "the elder is not adopted");
    let out = s.handle(10_100, Input::WorkerJoined { id: wid(2), spec: worker(1), claims: vec![claim(0, 2, true)] });
    assert!(cancels(&out).is_empty() && assigned(&out).is_empty());
    // Adopted, it is not speculated again however long it runs.
    assert!(speculated(&tick_at(&mut s, 60_000)).is_empty());
    let passed = Input::Finished { worker: wid(2), key: key(sid(1), 0, 2), report: report(Outcome::Passed) };
    assert_eq!(finals(&s.handle(60_001, passed)), vec![(0, Outcome::Passed)]);
}

#[test]
fn a_worker_that_leaves_a_test_unstarted_with_a_slot_free_loses_it_and_gets_no_more() {
    let mut s = Scheduler::new(Config { prefetch_per_slot: 1, liveness_timeout_ms: 1_000_000, ..Config::default() });
    s.handle(0, Input::Submit { id: sid(1), spec: spec(3), estimates: Vec::new() });
    // A one-slot worker runs test 0 with test 1 prefetched: waiting on a busy slot is fine.
    s.handle(0, Input::WorkerJoined { id: wid(1), spec: worker(1), claims: Vec::new() });
    s.handle(0, Input::Started { worker: wid(1), key: key(sid(1), 0, 1) });
    // A two-slot worker is given test 2 and never starts it.
    s.handle(0, Input::WorkerJoined { id: wid(2), spec: worker(2), claims: Vec::new() });
    assert!(cancels(&s.handle(overdue::START_WITHIN_MS, Input::Tick)).is_empty(), "not yet");
    let out = s.handle(overdue::START_WITHIN_MS + 1, Input::Tick);
    assert_eq!(cancels(&out), vec![(wid(2), key(sid(1), 2, 1))], "{out:?}");
    assert_eq!(requeued(&out), vec![(2, 2, Requeue::WorkerLost { charged: false })]);
    let draining = s.workers().into_iter().find(|w| w.id == wid(2)).is_some_and(|w| w.draining);
    assert!(draining, "it gets no more work");
    // Its late word on the test is void; the test runs where it is started.
    let late = Input::Finished { worker: wid(2), key: key(sid(1), 2, 1), report: report(Outcome::Passed) };
    assert!(finals(&s.handle(70_000, late)).is_empty());
    let first = Input::Finished { worker: wid(1), key: key(sid(1), 0, 1), report: report(Outcome::Passed) };
    let out = s.handle(70_001, first);
    assert!(assigned(&out).iter().all(|(w, _)| *w == wid(1)));
}

#[test]
fn a_test_run_far_past_its_timeout_without_a_result_ends_timed_out_there() {
    let mut s = Scheduler::new(Config { prefetch_per_slot: 0, liveness_timeout_ms: u64::MAX / 4, ..Config::default() });
    let mut sp = spec(1);
    sp.test_timeout_ms = 1_000;
    s.handle(0, Input::Submit { id: sid(1), spec: sp, estimates: Vec::new() });
    s.handle(0, Input::WorkerJoined { id: wid(1), spec: worker(1), claims: Vec::new() });
    s.handle(5, Input::Started { worker: wid(1), key: key(sid(1), 0, 1) });
    let limit = 5 + 1_000 + overdue::RUN_GRACE_MS;
    assert!(finals(&s.handle(limit, Input::Tick)).is_empty(), "within the grace for setup and workspace");
    let out = s.handle(limit + 1, Input::Tick);
    assert_eq!(finals(&out), vec![(0, Outcome::TimedOut)]);
    assert_eq!(cancels(&out), vec![(wid(1), key(sid(1), 0, 1))]);
    let said = out.iter().any(|a| {
        matches!(a, Action::Emit { event: Event::TestFinished { report, .. }, .. }
            if report.message.contains("worker w1 ran it for") && report.message.contains("no more work"))
    });
    assert!(said, "{out:?}");
}

#[test]
fn a_flood_of_forged_results_records_a_bounded_number_of_events() {
    let mut s = no_prefetch();
    s.handle(0, Input::Submit { id: sid(1), spec: spec(2), estimates: Vec::new() });
    s.handle(0, Input::WorkerJoined { id: wid(1), spec: worker(1), claims: Vec::new() });
    s.handle(0, Input::WorkerJoined { id: wid(2), spec: worker(1), claims: Vec::new() });
    let mut recorded = Vec::new();
    for n in 0..1_000 {
        // Worker 2 claims results for test 0, which worker 1 holds.
        let forged =
            Input::Finished { worker: wid(2), key: key(sid(1), 0, 1 + n % 3), report: report(Outcome::Passed) };
        for action in s.handle(1, forged) {
            if let Action::Emit { event: Event::ResultDiscarded { reason, .. }, .. } = action {
                recorded.push(reason);
            }
        }
    }
    assert_eq!(recorded.len(), MAX_DISCARDED_EVENTS as usize);
    assert!(recorded.last().is_some_and(|r| r.contains("later ones are not recorded")));
    // The real result still counts.
    let real = Input::Finished { worker: wid(1), key: key(sid(1), 0, 1), report: report(Outcome::Passed) };
    assert_eq!(finals(&s.handle(2, real)), vec![(0, Outcome::Passed)]);
}

#[test]
fn over_the_grid_total_the_oldest_finished_sessions_output_goes_first_and_running_ones_keep_tails() {
    let output = crate::core::OutputLimits { per_test: 150_000, per_session: u64::MAX, total: 250_000 };
    let mut s = Scheduler::new(Config { prefetch_per_slot: 0, output, ..Config::default() });
    s.handle(0, Input::WorkerJoined { id: wid(1), spec: worker(1), claims: Vec::new() });
    let kept_len = |out: &[Action]| {
        out.iter()
            .find_map(|a| match a {
                Action::Emit { event: Event::TestFinished { report, .. }, .. } => Some(report.output.len()),
                _ => None,
            })
            .expect("a TestFinished event")
    };
    let fail = |s: &mut Scheduler, now, session: u128, bytes: usize| {
        let mut failed = report(Outcome::Error);
        failed.output = vec![b'f'; bytes];
        kept_len(&s.handle(now, Input::Finished { worker: wid(1), key: key(sid(session), 0, 1), report: failed }))
    };
    let dropped = |out: &[Action]| -> Vec<SessionId> {
        out.iter()
            .filter_map(|a| match a {
                Action::DropOutput { session } => Some(*session),
                _ => None,
            })
            .collect()
    };
    // One test each; each fails with more output than one test may keep.
    for i in 1..=3 {
        s.handle(i, Input::Submit { id: sid(i as u128), spec: spec(1), estimates: Vec::new() });
    }
    let cut = fail(&mut s, 10, 1, 200_000);
    assert!(cut > 150_000 && cut < 150_100, "cut to the per-test limit (and a note): {cut}");
    assert_eq!(fail(&mut s, 11, 2, 99_000), 99_000);
    assert!(dropped(&s.handle(12, Input::Tick)).is_empty(), "under the total");
    assert_eq!(fail(&mut s, 13, 3, 1_000), 1_000);
    assert_eq!(dropped(&s.handle(14, Input::Tick)), vec![sid(1)], "the oldest finished session's output goes");
    assert!(dropped(&s.handle(15, Input::Tick)).is_empty(), "once, and the rest is under the total again");

    // A running session over the total with the finished ones: theirs goes first; with
    // nothing finished left to drop, its later failures keep their tails only.
    s.handle(16, Input::Submit { id: sid(4), spec: spec(3), estimates: Vec::new() });
    let fail4 = |s: &mut Scheduler, now, test: u32| {
        let mut failed = report(Outcome::Error);
        failed.output = vec![b'g'; 140_000];
        kept_len(&s.handle(now, Input::Finished { worker: wid(1), key: key(sid(4), test, 1), report: failed }))
    };
    assert_eq!(fail4(&mut s, 17, 0), 140_000);
    assert!(dropped(&s.handle(18, Input::Tick)).is_empty());
    assert_eq!(fail4(&mut s, 19, 1), 140_000, "not squeezed before a tick saw the grid over");
    assert_eq!(dropped(&s.handle(20, Input::Tick)), vec![sid(2), sid(3)], "finished ones first");
    assert!(fail4(&mut s, 21, 2) < 70_000, "squeezed: the tail only");
}
