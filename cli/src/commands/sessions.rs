//! `testgrid sessions`: the grid's sessions as a table, or one JSON object per line.

use testgrid_proto as pb;

use crate::args::GridArgs;
use crate::error::{Error, exit};
use crate::report::printable;

pub async fn sessions(args: GridArgs) -> Result<u8, Error> {
    let grid = super::connect(args.grid.as_deref(), "sessions").await?;
    let sessions = grid.list().await?;
    if args.json {
        super::json_lines(&sessions, crate::json::session);
        return Ok(exit::PASSED);
    }
    if sessions.is_empty() {
        out!("no sessions on {}", grid.url);
        return Ok(exit::PASSED);
    }
    out!(
        "{:<36}  {:<9}  {:>5}  {:>6}  {:>8}  {:>7}  {:<16}  NAME",
        "SESSION",
        "STATE",
        "TESTS",
        "PASSED",
        "NOT PASS",
        "RUNNING",
        "OWNER"
    );
    for s in &sessions {
        let t = s.totals.unwrap_or_default();
        let state = if s.state == pb::SessionState::Finished as i32 {
            if s.cancel_reason.is_empty() { "finished" } else { "cancelled" }
        } else {
            "running"
        };
        let not_passed = t.failed + t.timed_out + t.lost + t.cancelled + t.error;
        out!(
            "{:<36}  {:<9}  {:>5}  {:>6}  {:>8}  {:>7}  {:<16}  {}",
            s.session_id,
            state,
            t.total,
            t.passed + t.flaky,
            not_passed,
            s.running,
            if s.owner.is_empty() { "-".to_string() } else { printable(&s.owner, 32) },
            printable(&s.name, 200)
        );
    }
    Ok(exit::PASSED)
}
