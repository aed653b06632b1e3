//! What the worker holds, as a pure state machine: the assignments (keyed by [`AssignmentKey`]),
//! the local queue of those not started, which slot runs what, draining and closing, and, when
//! the stream to the coordinator breaks, holding on (nothing new starts, what runs goes on) until
//! a new stream resumes it or the holding is given up. A slot runs one job at a time, except that a job whose executor pipelines (a warm
//! vitest runner, which keeps its pool worker only while a next file is queued in it) may be
//! started beside a running job of the same session, up to the job's depth: the executor runs
//! them one after the other. Events in ([`Slots::assign`], [`Slots::cancel`], [`Slots::finished`],
//! [`Slots::drain`], [`Slots::close`], [`Slots::pause`], [`Slots::resume`], [`Slots::abandon`]),
//! [`Effect`]s out, which the connection performs.
//!
//! No tokio, no clocks, no I/O: it must not send, spawn or wait. (A running test's
//! `CancellationToken` is held here and fired by [`Slots::cancel`]; firing it is all it does.)

use std::collections::{BTreeSet, HashMap, VecDeque};

use testgrid_proto as pb;
use tokio_util::sync::CancellationToken;

use crate::job::{Job, Refused};

/// Assignments queued per slot at most. The coordinator sends at most `slots * (1 + prefetch)`
/// (prefetch 1 by default); this bound only stops a peer that ignores its own.
pub const QUEUE_PER_SLOT: usize = 64;

/// An assignment as the worker tracks it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AssignmentKey {
    pub session: String,
    pub test: u32,
    pub attempt: u32,
}

impl From<&pb::AssignmentRef> for AssignmentKey {
    fn from(r: &pb::AssignmentRef) -> Self {
        AssignmentKey { session: r.session_id.clone(), test: r.test_index, attempt: r.attempt }
    }
}

/// What the connection must do.
#[derive(Debug)]
pub enum Effect {
    /// Report `TestStarted` and run `job` in `slot` until it ends or `cancel` fires; then call
    /// [`Slots::finished`].
    Start { slot: u32, job: Box<Job>, cancel: CancellationToken },
    /// Report `TestFinished` with this report (handed back, refused, cancelled, or done).
    Report { assignment: pb::AssignmentRef, report: pb::TestReport },
}

/// Where a held assignment is.
#[derive(Debug, PartialEq)]
enum Place {
    Queued,
    Running(u32),
}

#[derive(Debug)]
struct Held {
    cancel: CancellationToken,
    place: Place,
}

/// A slot running something: whose jobs, how many, and how many it may run at once.
#[derive(Debug)]
struct Busy {
    session: String,
    running: usize,
    depth: usize,
}

/// A job waiting for a slot, and how many of its session's jobs its slot may hold at once.
#[derive(Debug)]
struct Queued {
    job: Job,
    depth: usize,
}

/// The worker's slots, held assignments and queue.
#[derive(Debug)]
pub struct Slots {
    /// Slots not running anything, lowest first.
    free: BTreeSet<u32>,
    /// Slots running something.
    busy: HashMap<u32, Busy>,
    held: HashMap<AssignmentKey, Held>,
    /// Queued jobs in arrival order (every one of them is in `held` as `Queued`).
    queue: VecDeque<Queued>,
    queue_limit: usize,
    /// Set by [`Slots::drain`]: new assignments are handed straight back.
    draining: bool,
    /// Cleared by draining or closing: no queued job starts any more.
    taking: bool,
    /// Cleared while no stream is open: nothing starts until one is.
    connected: bool,
    /// The worker's token: each assignment's is a child, so that stopping the worker cancels
    /// everything it runs.
    life: CancellationToken,
}

/// A report without cases, for what never ran.
fn handed_back(outcome: pb::Outcome, message: String) -> pb::TestReport {
    pb::TestReport { outcome: outcome as i32, message, ..Default::default() }
}

impl Slots {
    /// `slots` slots (`0..slots`), at most `slots * QUEUE_PER_SLOT` queued.
    pub fn new(slots: u32, life: CancellationToken) -> Self {
        Slots {
            free: (0..slots).collect(),
            busy: HashMap::new(),
            held: HashMap::new(),
            queue: VecDeque::new(),
            queue_limit: (slots as usize).max(1) * QUEUE_PER_SLOT,
            draining: false,
            taking: true,
            connected: true,
            life,
        }
    }

    /// Assignments held: queued or running (the heartbeat's `held`).
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Assignments running now.
    pub fn running(&self) -> usize {
        self.held.len() - self.queue.len()
    }

    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// An assignment arrived: start it in a free slot (or beside its session's job in a busy one,
    /// when `depth` > 1 allows), queue it, or answer it at once.
    pub fn assign(&mut self, incoming: Result<Job, Refused>, depth: usize) -> Vec<Effect> {
        let job = match incoming {
            // Sent before the coordinator read our Drain: give it straight back.
            _ if self.draining => {
                let assignment = match incoming {
                    Ok(job) => job.assignment,
                    Err(refused) => refused.assignment,
                };
                return vec![Effect::Report {
                    assignment,
                    report: handed_back(pb::Outcome::Cancelled, "worker draining".into()),
                }];
            }
            Err(refused) => {
                let message = format!("the worker cannot run this assignment: {}", refused.why);
                return vec![Effect::Report {
                    assignment: refused.assignment,
                    report: handed_back(pb::Outcome::Error, message),
                }];
            }
            Ok(job) => job,
        };
        let key = AssignmentKey::from(&job.assignment);
        if self.held.contains_key(&key) {
            // The same attempt twice: the first one stands.
            return Vec::new();
        }
        if self.taking
            && self.connected
            && let Some(slot) = self.slot_for(&job, depth)
        {
            return vec![self.start(key, job, slot, depth)];
        }
        if self.queue.len() >= self.queue_limit {
            let message = format!("worker queue full ({} queued); handed back", self.queue.len());
            return vec![Effect::Report {
                assignment: job.assignment,
                report: handed_back(pb::Outcome::Cancelled, message),
            }];
        }
        self.held.insert(key, Held { cancel: self.life.child_token(), place: Place::Queued });
        self.queue.push_back(Queued { job, depth });
        Vec::new()
    }

    /// Where `job` could start now: a free slot (lowest first, so work spreads), else a busy slot
    /// of its session with room under `depth`.
    fn slot_for(&self, job: &Job, depth: usize) -> Option<u32> {
        if let Some(slot) = self.free.first() {
            return Some(*slot);
        }
        if depth <= 1 {
            return None;
        }
        self.busy
            .iter()
            .filter(|(_, b)| b.session == job.assignment.session_id && b.depth == depth && b.running < depth)
            .min_by_key(|(slot, b)| (b.running, **slot))
            .map(|(slot, _)| *slot)
    }

    fn start(&mut self, key: AssignmentKey, job: Job, slot: u32, depth: usize) -> Effect {
        self.free.remove(&slot);
        let busy = self.busy.entry(slot).or_insert_with(|| Busy {
            session: job.assignment.session_id.clone(),
            running: 0,
            depth: depth.max(1),
        });
        busy.running += 1;
        let held =
            self.held.entry(key).or_insert_with(|| Held { cancel: self.life.child_token(), place: Place::Queued });
        held.place = Place::Running(slot);
        Effect::Start { slot, job: Box::new(job), cancel: held.cancel.clone() }
    }

    /// The coordinator cancelled an assignment: a running one's token fires (its report follows
    /// when it ends); a queued one is forgotten and reported at once, so that its slot is free
    /// for another; an unknown one is ignored.
    pub fn cancel(&mut self, assignment: &pb::AssignmentRef, reason: &str) -> Vec<Effect> {
        let key = AssignmentKey::from(assignment);
        match self.held.get(&key).map(|h| &h.place) {
            Some(Place::Running(_)) => {
                if let Some(held) = self.held.get(&key) {
                    held.cancel.cancel();
                }
                Vec::new()
            }
            Some(Place::Queued) => {
                self.held.remove(&key);
                self.queue.retain(|q| AssignmentKey::from(&q.job.assignment) != key);
                let message = format!("cancelled before it started: {reason}");
                vec![Effect::Report {
                    assignment: assignment.clone(),
                    report: handed_back(pb::Outcome::Cancelled, message),
                }]
            }
            None => Vec::new(),
        }
    }

    /// The job in `slot` ended with `report`: report it (unless it was forgotten) and start the
    /// next queued job in the freed slot.
    pub fn finished(&mut self, slot: u32, assignment: pb::AssignmentRef, report: pb::TestReport) -> Vec<Effect> {
        let mut effects = Vec::new();
        let key = AssignmentKey::from(&assignment);
        if self.held.get(&key).is_some_and(|h| h.place == Place::Running(slot)) {
            self.held.remove(&key);
            effects.push(Effect::Report { assignment, report });
        }
        if let Some(busy) = self.busy.get_mut(&slot) {
            busy.running = busy.running.saturating_sub(1);
            if busy.running == 0 {
                self.busy.remove(&slot);
                self.free.insert(slot);
            }
        }
        effects.extend(self.start_queued());
        effects
    }

    /// Start queued jobs, in arrival order, while some slot can take them.
    fn start_queued(&mut self) -> Vec<Effect> {
        let mut effects = Vec::new();
        let mut position = 0;
        while self.taking && self.connected && position < self.queue.len() {
            let Some(slot) = self.slot_for(&self.queue[position].job, self.queue[position].depth) else {
                position += 1;
                continue;
            };
            let Some(Queued { job, depth }) = self.queue.remove(position) else { break };
            let key = AssignmentKey::from(&job.assignment);
            effects.push(self.start(key, job, slot, depth));
        }
        effects
    }

    /// The worker drains: it takes no new work and hands back what has not started; running
    /// tests go on.
    pub fn drain(&mut self) -> Vec<Effect> {
        self.draining = true;
        self.hand_back_queued("worker draining")
    }

    /// The worker stops: nothing more starts, what has not started is handed back, and what
    /// runs is killed (each reports when it ends).
    pub fn close(&mut self) -> Vec<Effect> {
        for held in self.held.values() {
            held.cancel.cancel();
        }
        self.hand_back_queued("worker shutting down")
    }

    /// The stream broke: nothing starts until [`Slots::resume`]; what runs goes on.
    pub fn pause(&mut self) {
        self.connected = false;
    }

    /// A new stream is open: queued jobs start again where slots are free.
    pub fn resume(&mut self) -> Vec<Effect> {
        self.connected = true;
        self.start_queued()
    }

    /// Give up everything held (no stream came back in time: the coordinator has given it to
    /// others): kill what runs and forget it all, so that nothing is reported.
    pub fn abandon(&mut self) {
        for held in self.held.values() {
            held.cancel.cancel();
        }
        self.held.clear();
        self.queue.clear();
    }

    /// What the worker holds, for a new stream's `Register`: what runs, then the queue in order.
    pub fn claims(&self) -> Vec<pb::HeldAssignment> {
        let claim = |key: &AssignmentKey, started: bool| pb::HeldAssignment {
            assignment: Some(pb::AssignmentRef {
                session_id: key.session.clone(),
                test_index: key.test,
                attempt: key.attempt,
            }),
            started,
        };
        let running =
            self.held.iter().filter(|(_, h)| matches!(h.place, Place::Running(_))).map(|(k, _)| claim(k, true));
        let queued = self.queue.iter().map(|q| claim(&AssignmentKey::from(&q.job.assignment), false));
        running.chain(queued).collect()
    }

    /// Report every queued assignment as cancelled, so that the coordinator requeues it elsewhere
    /// without counting a loss.
    fn hand_back_queued(&mut self, why: &str) -> Vec<Effect> {
        self.taking = false;
        let queued: Vec<Job> = self.queue.drain(..).map(|q| q.job).collect();
        queued
            .into_iter()
            .map(|job| {
                self.held.remove(&AssignmentKey::from(&job.assignment));
                Effect::Report { assignment: job.assignment, report: handed_back(pb::Outcome::Cancelled, why.into()) }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
