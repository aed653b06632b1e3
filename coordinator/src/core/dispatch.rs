//! Handing queued tests to workers: who gets what next (the session furthest below its weighted
//! fair share of slots, labels, a session's slot cap, retries elsewhere, a last-chance test
//! alone on an emptied worker), within each worker's capacity. Owns no state of its own.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::session::{self, Session, TestState};
use super::{Action, Assignment, AssignmentKey, Millis, Scheduler, SessionId, Worker, WorkerId};

impl Scheduler {
    /// Hand queued tests to workers with free capacity: first up to one per slot across all
    /// workers (so work spreads), then the prefetch.
    pub(super) fn dispatch_all(&mut self, now: Millis, out: &mut Vec<Action>) {
        if self.active.iter().all(|id| self.sessions.get(id).is_none_or(|s| s.queue.is_empty())) {
            return;
        }
        // Only workers with room: a full grid costs nothing per event, however many workers.
        let worker_ids: Vec<WorkerId> = self.hungry.iter().copied().collect();
        for prefetch in [0, self.config.prefetch_per_slot] {
            loop {
                let mut progressed = false;
                for id in &worker_ids {
                    if self.dispatch_one(now, *id, prefetch, out) {
                        progressed = true;
                    }
                }
                if !progressed {
                    break;
                }
            }
        }
    }

    /// Give one queued test to `worker` if it has room under `prefetch`; true if it did.
    pub(super) fn dispatch_one(&mut self, now: Millis, worker: WorkerId, prefetch: u32, out: &mut Vec<Action>) -> bool {
        let Some(w) = self.workers.get(&worker) else { return false };
        if w.draining || w.held.len() >= w.capacity(prefetch) || w.held.keys().any(|k| self.is_suspect(k)) {
            return false;
        }
        let Some((sid, position)) = self.pick(worker, w) else { return false };
        let Some(session) = self.sessions.get_mut(&sid) else { return false };
        let Some(index) = session.queue.remove(position) else { return false };
        let attempt = session.tests[index as usize].attempt;
        self.hand_out(now, worker, AssignmentKey { session: sid, test: index, attempt }, out);
        true
    }

    /// Give `worker` the attempt `key` (the test's live one from now on): the test is assigned
    /// there, counted against its session's share, held by the worker in the order handed out.
    pub(super) fn hand_out(&mut self, now: Millis, worker: WorkerId, key: AssignmentKey, out: &mut Vec<Action>) {
        let Some(session) = self.sessions.get_mut(&key.session) else { return };
        let Some(test) = session.tests.get_mut(key.test as usize) else { return };
        test.state = TestState::Assigned { worker, started: false };
        test.since = now;
        session.held += 1;
        session.served_at = self.next_seq + 1;
        out.push(Action::Assign {
            worker,
            assignment: Assignment {
                key,
                path: session.spec.tests[key.test as usize].clone(),
                spec: Arc::clone(&session.spec),
            },
        });
        self.next_seq += 1;
        let seq = self.next_seq;
        if let Some(w) = self.workers.get_mut(&worker) {
            w.held.insert(key, seq);
        }
        self.note_room(worker);
    }

    /// Keep `hungry` right for `worker` after its held assignments or draining changed.
    pub(super) fn note_room(&mut self, worker: WorkerId) {
        let room = self
            .workers
            .get(&worker)
            .is_some_and(|w| !w.draining && w.held.len() < w.capacity(self.config.prefetch_per_slot));
        if room {
            self.hungry.insert(worker);
        } else {
            self.hungry.remove(&worker);
        }
    }

    /// How often a session's tests may lose their worker.
    pub(super) fn max_losses(&self, session: &Session) -> u32 {
        match session.spec.max_worker_losses {
            0 => self.config.max_worker_losses,
            n => n,
        }
    }

    /// Whether a test is on its last chance: one more worker loss ends it `lost`. Such a test
    /// runs alone on a worker (nothing beside it), so that if it crashes its worker again it is
    /// surely the culprit, and an innocent test that shared a worker with a crasher is never
    /// lost with it.
    pub(super) fn last_chance(&self, session: &Session, test: &session::TestEntry) -> bool {
        test.losses > 0 && test.losses >= self.max_losses(session)
    }

    /// Whether the live attempt `key` is a last-chance test running alone (see `last_chance`).
    pub(super) fn is_suspect(&self, key: &AssignmentKey) -> bool {
        self.sessions.get(&key.session).is_some_and(|s| {
            s.tests.get(key.test as usize).is_some_and(|t| {
                self.last_chance(s, t) && t.attempt == key.attempt && matches!(t.state, TestState::Assigned { .. })
            })
        })
    }

    /// The worker that stops taking work so that it empties for a last-chance test: the eligible
    /// one holding the least (ties by id).
    pub(super) fn reserved_for(&self, session: &Session) -> Option<WorkerId> {
        self.workers
            .iter()
            .filter(|(_, w)| !w.draining && labels_match(&session.spec.required_labels, &w.spec.labels))
            .min_by_key(|(id, w)| (w.held.len(), **id))
            .map(|(id, _)| *id)
    }

    /// Which queued test `worker` should run next: from the session furthest below its fair
    /// share (assignments held per unit of weight; of equals, the one served longest ago, then
    /// the first submitted) whose labels it matches and whose `max_slots` leaves room, the first
    /// queued test it may take: a retry skips the worker its last attempt failed on while
    /// another connected worker could run it, and a test on its last chance only goes to a
    /// worker that holds nothing.
    pub(super) fn pick(&self, worker: WorkerId, w: &Worker) -> Option<(SessionId, usize)> {
        let mut candidates: Vec<(u64, u64, (u64, usize), SessionId)> = self
            .active
            .iter()
            .enumerate()
            .filter_map(|(rank, sid)| {
                let session = self.sessions.get(sid)?;
                let capped = session.spec.max_slots > 0 && session.held >= session.spec.max_slots;
                let fits = labels_match(&session.spec.required_labels, &w.spec.labels);
                (!session.queue.is_empty() && !capped && fits).then(|| {
                    // held / weight, compared as fractions: held_a * weight_b against held_b * weight_a.
                    (u64::from(session.held), u64::from(session.spec.weight()), (session.served_at, rank), *sid)
                })
            })
            .collect();
        candidates.sort_by(|a, b| (a.0 * b.1).cmp(&(b.0 * a.1)).then(a.2.cmp(&b.2)));
        for (_, _, _, sid) in candidates {
            let Some(session) = self.sessions.get(&sid) else { continue };
            match self.pick_in(worker, w, session) {
                Pick::Test(position) => return Some((sid, position)),
                // The worker empties for a last-chance test: it takes nothing else meanwhile.
                Pick::Reserved => return None,
                Pick::Nothing => continue,
            }
        }
        None
    }

    /// The queued test of `session` that `worker` should take, if any.
    fn pick_in(&self, worker: WorkerId, w: &Worker, session: &Session) -> Pick {
        /// How far into a queue to look for a test this worker may take.
        const LOOKAHEAD: usize = 64;
        let mut others: Option<bool> = None;
        for (position, index) in session.queue.iter().take(LOOKAHEAD).enumerate() {
            let test = &session.tests[*index as usize];
            if self.last_chance(session, test) {
                if w.held.is_empty() {
                    return Pick::Test(position);
                }
                // One worker takes nothing more until it is empty and can run it alone;
                // the others go on with the rest of the queue.
                if self.reserved_for(session) == Some(worker) {
                    return Pick::Reserved;
                }
                continue;
            }
            if test.avoid != Some(worker) {
                return Pick::Test(position);
            }
            let others = *others.get_or_insert_with(|| {
                self.workers.iter().any(|(id, other)| {
                    *id != worker && !other.draining && labels_match(&session.spec.required_labels, &other.spec.labels)
                })
            });
            if !others {
                return Pick::Test(position);
            }
        }
        Pick::Nothing
    }
}

/// What a worker may take from one session.
enum Pick {
    Test(usize),
    Reserved,
    Nothing,
}

pub(super) fn labels_match(required: &BTreeMap<String, String>, have: &BTreeMap<String, String>) -> bool {
    required.iter().all(|(k, v)| have.get(k) == Some(v))
}
