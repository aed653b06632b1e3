//! What `--json` prints: one object per session event (`run`, `watch`), per session
//! (`sessions`) and per worker (`workers`). The keys are a contract scripts rely on; outcome
//! names are the protocol's (`testgrid_proto::outcome`).

use serde_json::{Value, json};
use testgrid_proto as pb;
use testgrid_proto::session_event::Kind;

use crate::report::Tracker;

/// What sending the workspace took, when this CLI sent one: the session's `created` event
/// carries it under `workspace` (set once, before the session is followed).
static WORKSPACE: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
/// Where artifacts go (set once by `follow`), for their local paths in `test_finished`.
static ARTIFACTS_DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Where this session's artifacts are downloaded.
pub fn set_artifacts_dir(dir: &std::path::Path) {
    let _ = ARTIFACTS_DIR.set(dir.to_path_buf());
}

/// Record what sending the workspace took, for the `created` event.
pub fn set_workspace(stats: Value) {
    let _ = WORKSPACE.set(stats);
}

/// One event as a JSON object: `{"seq", "time_ms", "session", "event", ...}`.
pub fn event(tracker: &Tracker, event: &pb::SessionEvent) -> Value {
    let base = json!({ "seq": event.seq, "time_ms": event.time_ms, "session": tracker.session_id });
    let key = |value: i32| pb::Outcome::of(value).key();
    let fields = match &event.kind {
        None => json!({ "event": "unknown" }),
        Some(Kind::Created(c)) => {
            let mut created = json!({ "event": "created", "name": c.name, "total": c.total, "tests": c.test_paths });
            if let Some(workspace) = WORKSPACE.get() {
                created["workspace"] = workspace.clone();
            }
            created
        }
        Some(Kind::TestStarted(s)) => json!({
            "event": "test_started", "test": tracker.path(s.test_index), "index": s.test_index,
            "attempt": s.attempt, "worker": s.worker,
        }),
        Some(Kind::TestFinished(f)) => {
            let r = f.report.clone().unwrap_or_default();
            json!({
                "event": "test_finished", "test": tracker.path(f.test_index), "index": f.test_index,
                "attempt": f.attempt, "worker": f.worker, "final": f.r#final, "outcome": key(f.outcome),
                "attempt_outcome": key(r.outcome), "exit_code": r.exit_code, "signal": r.signal,
                "duration_ms": r.duration_ms, "message": r.message,
                "output": String::from_utf8_lossy(&r.output), "output_dropped_bytes": r.output_dropped_bytes,
                "artifacts": r.artifacts.iter().map(|a| {
                    let local = ARTIFACTS_DIR.get().and_then(|dir| {
                        crate::artifacts::local_path(dir, tracker.path(f.test_index), f.attempt, &a.path)
                    });
                    json!({
                        "path": a.path,
                        "bytes": a.digest.as_ref().map(|d| d.size_bytes),
                        "local": a.digest.as_ref().and(local).map(|p| p.display().to_string()),
                        "refused": (!a.refused.is_empty()).then_some(&a.refused),
                    })
                }).collect::<Vec<_>>(),
                "cases": r.cases.iter().map(|c| json!({
                    "name": c.name, "classname": c.classname, "outcome": key(c.outcome),
                    "duration_ms": c.duration_ms, "message": c.message,
                    "output": String::from_utf8_lossy(&c.output),
                })).collect::<Vec<_>>(),
            })
        }
        Some(Kind::SetupFinished(s)) => {
            let r = s.report.clone().unwrap_or_default();
            json!({
                "event": "setup_finished", "worker": s.worker, "reused": s.reused, "outcome": key(r.outcome),
                "exit_code": r.exit_code, "duration_ms": r.duration_ms, "message": r.message,
                "output": String::from_utf8_lossy(&r.output),
            })
        }
        Some(Kind::TestRequeued(r)) => json!({
            "event": "test_requeued", "test": tracker.path(r.test_index), "index": r.test_index,
            "attempt": r.attempt, "reason": r.reason,
        }),
        Some(Kind::ResultDiscarded(r)) => json!({
            "event": "result_discarded", "test": tracker.path(r.test_index), "index": r.test_index,
            "attempt": r.attempt, "reason": r.reason,
        }),
        Some(Kind::TestSpeculated(s)) => json!({
            "event": "test_speculated", "test": tracker.path(s.test_index), "index": s.test_index,
            "running_attempt": s.running_attempt, "attempt": s.attempt, "worker": s.worker, "reason": s.reason,
        }),
        Some(Kind::Cancelled(c)) => json!({ "event": "cancelled", "reason": c.reason }),
        Some(Kind::Finished(f)) => json!({
            "event": "finished",
            "totals": f.totals.as_ref().map(totals),
            "cancel_reason": (!f.cancel_reason.is_empty()).then_some(&f.cancel_reason),
        }),
    };
    merged(base, fields)
}

/// A session's totals: `{"total", "passed", "failed", ...}`.
pub fn totals(t: &pb::Totals) -> Value {
    json!({
        "total": t.total, "passed": t.passed, "failed": t.failed, "flaky": t.flaky,
        "timed_out": t.timed_out, "lost": t.lost, "cancelled": t.cancelled, "error": t.error,
    })
}

/// A line of `testgrid sessions --json`: the session and its totals, side by side.
pub fn session(s: &pb::SessionInfo) -> Value {
    let fields = json!({
        "session": s.session_id, "name": s.name, "owner": s.owner,
        "state": if s.state == pb::SessionState::Finished as i32 { "finished" } else { "running" },
        "running": s.running, "created_at_ms": s.created_at_ms, "finished_at_ms": s.finished_at_ms,
        "cancel_reason": s.cancel_reason,
    });
    merged(fields, totals(&s.totals.unwrap_or_default()))
}

/// A line of `testgrid workers --json`.
pub fn worker(w: &pb::WorkerInfo) -> Value {
    json!({
        "worker_id": w.worker_id, "name": w.name, "slots": w.slots, "labels": w.labels,
        "running": w.running_tests, "held": w.assignments.len(),
        "last_heartbeat_ms": w.last_heartbeat_ms, "connected_at_ms": w.connected_at_ms,
        "version": w.version, "draining": w.draining,
    })
}

/// `base` with the keys of `extra` added (both objects).
fn merged(mut base: Value, extra: Value) -> Value {
    if let (Value::Object(base), Value::Object(extra)) = (&mut base, extra) {
        base.extend(extra);
    }
    base
}
