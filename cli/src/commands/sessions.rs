//! `testgrid sessions`: the grid's sessions as a table, or one JSON object per line.

use testgrid_proto as pb;

use crate::args::GridArgs;
use crate::error::{Error, exit};
use crate::grid::Grid;
use crate::settings::need_grid;

pub async fn sessions(args: GridArgs) -> Result<u8, Error> {
    let grid = Grid::connect(&need_grid(args.grid.as_deref(), "sessions")?).await?;
    let sessions = grid.list().await?;
    if args.json {
        for s in &sessions {
            out!("{}", crate::json::session(s));
        }
        return Ok(exit::PASSED);
    }
    if sessions.is_empty() {
        out!("no sessions on {}", grid.url);
        return Ok(exit::PASSED);
    }
    out!(
        "{:<36}  {:<9}  {:>5}  {:>6}  {:>8}  {:>7}  NAME",
        "SESSION",
        "STATE",
        "TESTS",
        "PASSED",
        "NOT PASS",
        "RUNNING"
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
            "{:<36}  {:<9}  {:>5}  {:>6}  {:>8}  {:>7}  {}",
            s.session_id,
            state,
            t.total,
            t.passed + t.flaky,
            not_passed,
            s.running,
            s.name
        );
    }
    Ok(exit::PASSED)
}
