//! `testgrid workers`: the grid's workers and what they run, as a table or one JSON object per
//! line.

use crate::args::GridArgs;
use crate::error::{Error, exit};
use crate::report::{format_duration, printable};

pub async fn workers(args: GridArgs) -> Result<u8, Error> {
    let grid = super::connect(args.grid.as_deref(), "workers").await?;
    let workers = grid.workers().await?;
    if args.json {
        super::json_lines(&workers, crate::json::worker);
        return Ok(exit::PASSED);
    }
    if workers.is_empty() {
        out!("no workers connected to {}", grid.url);
        return Ok(exit::PASSED);
    }
    let now = testgrid_proto::now_ms();
    out!(
        "{:<20}  {:<8}  {:>5}  {:>7}  {:>6}  {:<20}  RUNNING TESTS",
        "NAME",
        "STATE",
        "SLOTS",
        "RUNNING",
        "SEEN",
        "LABELS"
    );
    for w in &workers {
        let mut labels: Vec<String> =
            w.labels.iter().map(|(k, v)| format!("{}={}", printable(k, 64), printable(v, 64))).collect();
        labels.sort();
        out!(
            "{:<20}  {:<8}  {:>5}  {:>7}  {:>6}  {:<20}  {}",
            printable(&w.name, 64),
            if w.draining { "draining" } else { "ready" },
            w.slots,
            w.running_tests.len(),
            format_duration(now.saturating_sub(w.last_heartbeat_ms)),
            if labels.is_empty() { "-".to_string() } else { labels.join(",") },
            w.running_tests.iter().map(|t| printable(t, 200)).collect::<Vec<_>>().join(" ")
        );
    }
    Ok(exit::PASSED)
}
