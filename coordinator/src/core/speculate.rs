//! `--speculate`: near the end of a session, a test running far past what its own history says
//! it takes is started again on an idle slot, and the first of the two attempts to report
//! decides. A hung or unlucky attempt then costs the session its estimate, not its timeout.
//!
//! "Near the end" is when nothing of the session is left to start: before that, every slot is
//! better spent on tests that have not run at all. An idle slot is one that nothing else wants:
//! speculation runs after dispatch has handed out what any session has queued. Only tests with
//! an estimate from their own history are speculated (a guess from file size is no grounds to
//! call a test late), each at most once, and never a test on its last chance (it runs alone).
//!
//! While both run, the first attempt is the test's [`Elder`] and the second its live attempt.
//! The first report of either decides (a failure with retries left is retried as usual); the
//! other is cancelled on its worker and its report void. A worker lost, or shutting down, takes
//! only its own attempt with it: the other goes on, and nothing is requeued. A session cancelled
//! keeps the elder (it has run longest: its output is what a user looks for). A coordinator that
//! restarts forgets the pair: only the live attempt can be adopted.

use super::plan::{Estimate, Source};
use super::session::{Elder, TestEntry, TestState};
use super::{Action, AssignmentKey, Event, Millis, Outcome, Scheduler, SessionId, WorkerId};

/// A test is late once it has run this many times its estimate...
const LATE_FACTOR: u64 = 2;
/// ...and at least this much longer than it (a 50 ms test is not late at 120 ms).
const LATE_MARGIN_MS: u64 = 1_000;

/// Each test's estimate where its own history gave it (0 elsewhere).
pub(super) fn known_estimates(estimates: &[Estimate]) -> Vec<u64> {
    estimates.iter().map(|e| if e.source == Source::History { e.ms } else { 0 }).collect()
}

/// Whether a test that has run for `ran` ms is late against its estimate `estimate`.
pub(super) fn is_late(ran: Millis, estimate: u64) -> bool {
    estimate > 0 && ran >= estimate.saturating_mul(LATE_FACTOR) && ran >= estimate.saturating_add(LATE_MARGIN_MS)
}

/// The attempt of a speculated pair that lost (or is dropped), to be cancelled on its worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Loser {
    pub worker: WorkerId,
    pub attempt: u32,
    pub started: bool,
}

/// What one report of a speculated pair does to it.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Settled {
    /// The report decides the test; the other attempt is stopped. The reporting attempt is now
    /// the test's live one (`attempt`, `state`), so the report is counted as usual.
    Goes(Loser),
    /// The reporting attempt was handed back (its worker shuts down): the other goes on alone.
    /// `started`: the handed-back attempt had started.
    HandedBack { started: bool },
}

/// Settle a speculated pair on a report from one of its attempts (`from_elder`: the elder's);
/// `None` if the test has no pair.
pub(super) fn settle(test: &mut TestEntry, from_elder: bool, outcome: Outcome) -> Option<Settled> {
    let elder = test.elder?;
    if outcome == Outcome::Cancelled {
        // Not a result: the worker gave it back unasked.
        if from_elder {
            test.elder = None;
            return Some(Settled::HandedBack { started: true });
        }
        let (_, _, started) = test.promote_elder()?;
        return Some(Settled::HandedBack { started });
    }
    if from_elder {
        let (worker, attempt, started) = test.promote_elder()?;
        return Some(Settled::Goes(Loser { worker, attempt, started }));
    }
    test.elder = None;
    Some(Settled::Goes(Loser { worker: elder.worker, attempt: elder.attempt, started: true }))
}

/// A speculated test's session is cancelled: keep the elder as the live attempt (it has run
/// longest) and return the newer one, to be cancelled with its report void.
pub(super) fn keep_one(test: &mut TestEntry) -> Option<Loser> {
    let (worker, attempt, started) = test.promote_elder()?;
    Some(Loser { worker, attempt, started })
}

impl Scheduler {
    /// Start late tests again on idle slots, for sessions with `--speculate` and nothing left
    /// to start. Called on every tick, after dispatch.
    pub(super) fn speculate(&mut self, now: Millis, out: &mut Vec<Action>) {
        for sid in self.active.clone() {
            let Some(session) = self.sessions.get(&sid) else { continue };
            if !session.spec.speculate
                || session.estimates.len() != session.tests.len()
                || !session.queue.is_empty()
                || session.cancel_reason.is_some()
            {
                continue;
            }
            // The latest first, by how many times its estimate it has run.
            let mut late: Vec<(u128, u32)> = session
                .tests
                .iter()
                .zip(&session.estimates)
                .enumerate()
                .filter_map(|(index, (test, &estimate))| {
                    let TestState::Assigned { started: true, .. } = test.state else { return None };
                    let ran = now.saturating_sub(test.since);
                    let candidate = !test.speculated
                        && test.elder.is_none()
                        && !self.last_chance(session, test)
                        && is_late(ran, estimate);
                    candidate.then(|| (u128::from(ran) * 1000 / u128::from(estimate), index as u32))
                })
                .collect();
            late.sort_by(|a, b| b.cmp(a));
            for (_, index) in late {
                if !self.speculate_one(now, sid, index, out) {
                    break;
                }
            }
        }
    }

    /// Hand a second attempt of the late test `index` to an idle slot; false if there is none
    /// (or the session's slot cap is reached).
    fn speculate_one(&mut self, now: Millis, sid: SessionId, index: u32, out: &mut Vec<Action>) -> bool {
        let Some(session) = self.sessions.get(&sid) else { return false };
        if session.spec.max_slots > 0 && session.held >= session.spec.max_slots {
            return false;
        }
        let Some(&TestEntry { state: TestState::Assigned { worker: holder, .. }, .. }) =
            session.tests.get(index as usize)
        else {
            return false;
        };
        let Some(spare) = self.idle_slot(sid, holder) else { return false };
        let Some(session) = self.sessions.get_mut(&sid) else { return false };
        let test = &mut session.tests[index as usize];
        let running = test.attempt;
        let estimate = session.estimates[index as usize];
        test.elder = Some(Elder { attempt: running, worker: holder });
        test.speculated = true;
        let attempt = test.next_attempt();
        let ran = now.saturating_sub(test.since);
        let key = AssignmentKey { session: sid, test: index, attempt };
        let fmt = |ms: u64| humantime::format_duration(std::time::Duration::from_millis(ms / 100 * 100)).to_string();
        let worker = self.workers.get(&spare).map(|w| w.spec.name.clone()).unwrap_or_default();
        out.push(Action::Emit {
            session: sid,
            event: Event::TestSpeculated {
                test: index,
                running,
                attempt,
                worker,
                reason: format!("running for {}, its estimate is {}", fmt(ran), fmt(estimate)),
            },
        });
        self.hand_out(now, spare, key, out);
        true
    }

    /// A slot with nothing to do that may run session `sid`'s tests: on a worker holding fewer
    /// assignments than it has slots, not draining, not running or emptying for a last-chance
    /// test. One other than `holder`'s first (the late attempt may be slow because of its
    /// worker), then the least busy.
    fn idle_slot(&self, sid: SessionId, holder: WorkerId) -> Option<WorkerId> {
        let session = self.sessions.get(&sid)?;
        let reserved: Vec<WorkerId> = self
            .active
            .iter()
            .filter_map(|id| self.sessions.get(id))
            .filter(|s| s.queue.iter().any(|&i| self.last_chance(s, &s.tests[i as usize])))
            .filter_map(|s| self.reserved_for(s))
            .collect();
        self.hungry
            .iter()
            .filter_map(|id| Some((*id, self.workers.get(id)?)))
            .filter(|(id, w)| {
                !w.draining
                    && w.held.len() < w.spec.slots as usize
                    && !w.held.keys().any(|k| self.is_suspect(k))
                    && !reserved.contains(id)
                    && super::dispatch::labels_match(&session.spec.required_labels, &w.spec.labels)
            })
            .min_by_key(|(id, w)| (*id == holder, w.held.len(), *id))
            .map(|(id, _)| id)
    }
}
