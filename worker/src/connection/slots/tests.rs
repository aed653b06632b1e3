//! The slots state, one transition at a time.

use std::path::Path;

use testgrid_proto::frameworks::{Framework, Options};

use super::*;
use crate::job::testing;

fn job(test: u32) -> Job {
    let mut job =
        testing::job(Framework::Shell, Options::Command { template: "sh {}".into() }, "s", "t.sh", Path::new("/w"));
    job.assignment.test_index = test;
    job.assignment.attempt = 1;
    job
}

fn reference(test: u32) -> pb::AssignmentRef {
    job(test).assignment
}

fn done() -> pb::TestReport {
    pb::TestReport { outcome: pb::Outcome::Passed as i32, ..Default::default() }
}

/// The (slot, test) of each Start, and the (test, outcome, message) of each Report.
fn started(effects: &[Effect]) -> Vec<(u32, u32)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Start { slot, job, .. } => Some((*slot, job.assignment.test_index)),
            Effect::Report { .. } => None,
        })
        .collect()
}

fn reported(effects: &[Effect]) -> Vec<(u32, pb::Outcome, String)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Report { assignment, report } => {
                Some((assignment.test_index, pb::Outcome::of(report.outcome), report.message.clone()))
            }
            Effect::Start { .. } => None,
        })
        .collect()
}

fn token(effects: &[Effect]) -> CancellationToken {
    match effects.first() {
        Some(Effect::Start { cancel, .. }) => cancel.clone(),
        other => panic!("not a start: {other:?}"),
    }
}

#[test]
fn assign_starts_in_a_free_slot_queues_the_rest_and_finish_starts_the_next() {
    let mut slots = Slots::new(2, CancellationToken::new());
    assert_eq!(started(&slots.assign(Ok(job(1)), 1)), vec![(0, 1)]);
    assert_eq!(started(&slots.assign(Ok(job(2)), 1)), vec![(1, 2)]);
    assert!(slots.assign(Ok(job(3)), 1).is_empty(), "queued");
    assert_eq!((slots.held(), slots.running()), (3, 2));
    let effects = slots.finished(1, reference(2), done());
    assert_eq!(reported(&effects), vec![(2, pb::Outcome::Passed, String::new())]);
    assert_eq!(started(&effects), vec![(1, 3)], "the freed slot takes the queued one");
    assert_eq!((slots.held(), slots.running()), (2, 2));
}

#[test]
fn cancel_of_a_queued_one_is_reported_at_once() {
    let mut slots = Slots::new(1, CancellationToken::new());
    slots.assign(Ok(job(1)), 1);
    slots.assign(Ok(job(2)), 1);
    let effects = slots.cancel(&reference(2), "session cancelled");
    assert_eq!(
        reported(&effects),
        vec![(2, pb::Outcome::Cancelled, "cancelled before it started: session cancelled".into())]
    );
    assert_eq!(slots.held(), 1);
    let effects = slots.finished(0, reference(1), done());
    assert!(started(&effects).is_empty(), "the cancelled one never starts");
}

#[test]
fn cancel_of_a_running_one_fires_its_token_and_reports_when_it_ends() {
    let mut slots = Slots::new(1, CancellationToken::new());
    let cancel = token(&slots.assign(Ok(job(1)), 1));
    assert!(slots.cancel(&reference(1), "session cancelled").is_empty());
    assert!(cancel.is_cancelled());
    assert_eq!(slots.held(), 1, "held until it ends");
    let ended = pb::TestReport { outcome: pb::Outcome::Cancelled as i32, ..Default::default() };
    assert_eq!(reported(&slots.finished(0, reference(1), ended)).len(), 1);
    assert_eq!(slots.held(), 0);
}

#[test]
fn unknown_cancels_and_forgotten_finishes_are_ignored() {
    let mut slots = Slots::new(1, CancellationToken::new());
    assert!(slots.cancel(&reference(9), "x").is_empty());
    slots.assign(Ok(job(1)), 1);
    assert!(slots.finished(0, reference(9), done()).is_empty(), "not held: nothing to report");
    assert_eq!(slots.held(), 1);
}

#[test]
fn drain_hands_back_the_queued_ones_and_new_assignments_straight_away() {
    let mut slots = Slots::new(1, CancellationToken::new());
    slots.assign(Ok(job(1)), 1);
    slots.assign(Ok(job(2)), 1);
    slots.assign(Ok(job(3)), 1);
    let effects = slots.drain();
    let handed: Vec<u32> = reported(&effects)
        .into_iter()
        .map(|(t, o, m)| {
            assert_eq!((o, m.as_str()), (pb::Outcome::Cancelled, "worker draining"));
            t
        })
        .collect();
    assert_eq!(handed, vec![2, 3]);
    assert!(slots.is_draining());
    assert_eq!(reported(&slots.assign(Ok(job(4)), 1)), vec![(4, pb::Outcome::Cancelled, "worker draining".into())]);
    let effects = slots.finished(0, reference(1), done());
    assert_eq!(reported(&effects).len(), 1, "a running test may finish");
    assert!(started(&effects).is_empty());
    assert_eq!(slots.running(), 0);
}

#[test]
fn close_hands_back_the_queued_ones_and_starts_nothing() {
    let mut slots = Slots::new(1, CancellationToken::new());
    slots.assign(Ok(job(1)), 1);
    slots.assign(Ok(job(2)), 1);
    assert_eq!(reported(&slots.close()), vec![(2, pb::Outcome::Cancelled, "worker shutting down".into())]);
    assert!(started(&slots.finished(0, reference(1), done())).is_empty());
}

#[test]
fn a_refused_assignment_is_an_error_and_a_duplicate_is_ignored() {
    let mut slots = Slots::new(1, CancellationToken::new());
    let refused =
        Refused { assignment: reference(1), path: "t.sh".into(), why: "field `runner.framework`: unknown".into() };
    assert_eq!(
        reported(&slots.assign(Err(refused), 1)),
        vec![(
            1,
            pb::Outcome::Error,
            "the worker cannot run this assignment: field `runner.framework`: unknown".into()
        )]
    );
    slots.assign(Ok(job(2)), 1);
    assert!(slots.assign(Ok(job(2)), 1).is_empty());
    assert_eq!(slots.held(), 1);
}

#[test]
fn the_queue_is_bounded() {
    let mut slots = Slots::new(1, CancellationToken::new());
    slots.assign(Ok(job(0)), 1);
    for test in 1..=QUEUE_PER_SLOT as u32 {
        assert!(slots.assign(Ok(job(test)), 1).is_empty());
    }
    let over = reported(&slots.assign(Ok(job(10_000)), 1));
    assert_eq!(over.len(), 1);
    assert_eq!(over[0].1, pb::Outcome::Cancelled, "handed back, not failed");
    assert_eq!(slots.held(), 1 + QUEUE_PER_SLOT);
}

#[test]
fn the_worker_stopping_cancels_what_runs() {
    let life = CancellationToken::new();
    let mut slots = Slots::new(1, life.clone());
    let cancel = token(&slots.assign(Ok(job(1)), 1));
    life.cancel();
    assert!(cancel.is_cancelled());
}

#[test]
fn close_kills_what_runs_and_its_report_still_goes_out() {
    let mut slots = Slots::new(1, CancellationToken::new());
    let cancel = token(&slots.assign(Ok(job(1)), 1));
    assert!(slots.close().is_empty());
    assert!(cancel.is_cancelled());
    assert_eq!(reported(&slots.finished(0, reference(1), done())).len(), 1);
}

#[test]
fn a_paused_worker_runs_on_starts_nothing_and_claims_what_it_holds_in_order() {
    let mut slots = Slots::new(1, CancellationToken::new());
    let cancel = token(&slots.assign(Ok(job(1)), 1));
    slots.assign(Ok(job(2)), 1);
    slots.assign(Ok(job(3)), 1);
    slots.pause();
    assert!(!cancel.is_cancelled(), "the stream breaking kills nothing");
    let claims: Vec<(u32, bool)> =
        slots.claims().iter().map(|c| (c.assignment.as_ref().map_or(0, |a| a.test_index), c.started)).collect();
    assert_eq!(claims, vec![(1, true), (2, false), (3, false)]);
    // The running one ends while no stream is open: reported (kept for later), nothing starts.
    let effects = slots.finished(0, reference(1), done());
    assert_eq!((reported(&effects).len(), started(&effects)), (1, vec![]));
    assert_eq!(started(&slots.resume()), vec![(0, 2)]);
}

#[test]
fn abandoning_kills_what_runs_and_forgets_everything() {
    let mut slots = Slots::new(1, CancellationToken::new());
    let cancel = token(&slots.assign(Ok(job(1)), 1));
    slots.assign(Ok(job(2)), 1);
    slots.pause();
    slots.abandon();
    assert!(cancel.is_cancelled());
    assert_eq!((slots.held(), slots.claims().len()), (0, 0));
    assert!(slots.finished(0, reference(1), done()).is_empty(), "nothing to report: it is someone else's now");
    assert!(started(&slots.resume()).is_empty());
    assert_eq!(started(&slots.assign(Ok(job(3)), 1)), vec![(0, 3)], "the slot is free again");
}

fn job_of(session: &str, test: u32) -> Job {
    let mut job = job(test);
    job.assignment.session_id = session.into();
    job
}

#[test]
fn a_pipelining_job_starts_beside_its_sessions_job_only_once_every_slot_is_busy() {
    let mut slots = Slots::new(2, CancellationToken::new());
    assert_eq!(started(&slots.assign(Ok(job_of("a", 1)), 2)), vec![(0, 1)]);
    assert_eq!(started(&slots.assign(Ok(job_of("a", 2)), 2)), vec![(1, 2)], "a free slot first");
    assert_eq!(started(&slots.assign(Ok(job_of("a", 3)), 2)), vec![(0, 3)], "then beside a running one");
    assert_eq!(started(&slots.assign(Ok(job_of("a", 4)), 2)), vec![(1, 4)]);
    assert!(slots.assign(Ok(job_of("a", 5)), 2).is_empty(), "each slot holds its depth: queued");
    assert!(slots.assign(Ok(job_of("b", 6)), 2).is_empty(), "never beside another session's job");
    assert_eq!(slots.running(), 4);
    // Slot 0's first job ends: its next queued job joins the one still running there.
    assert_eq!(started(&slots.finished(0, reference_of("a", 1), done())), vec![(0, 5)]);
    // Slot 1 empties: the other session's job gets it.
    assert_eq!(started(&slots.finished(1, reference_of("a", 2), done())), Vec::<(u32, u32)>::new());
    assert_eq!(started(&slots.finished(1, reference_of("a", 4), done())), vec![(1, 6)]);
    assert_eq!(slots.held(), 3);
}

#[test]
fn a_job_of_depth_one_never_shares_a_slot() {
    let mut slots = Slots::new(1, CancellationToken::new());
    assert_eq!(started(&slots.assign(Ok(job_of("a", 1)), 1)), vec![(0, 1)]);
    assert!(slots.assign(Ok(job_of("a", 2)), 2).is_empty(), "the running job does not pipeline");
    assert!(slots.assign(Ok(job_of("a", 3)), 1).is_empty());
    assert_eq!(started(&slots.finished(0, reference_of("a", 1), done())), vec![(0, 2)]);
    assert_eq!(started(&slots.finished(0, reference_of("a", 2), done())), vec![(0, 3)]);
}

fn reference_of(session: &str, test: u32) -> pb::AssignmentRef {
    job_of(session, test).assignment
}
