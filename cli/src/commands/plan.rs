//! `testgrid plan`: discover the tests as `run` would, ask the duration history what each should
//! take (the grid's; in local mode this machine's own, in the user's cache folder) and print the
//! order a session would serve them in, and the makespan predicted for N slots that pull tests
//! as they free, test by test per slot. Runs nothing.

use testgrid_coordinator::core::plan::{Estimate, Source, predict};
use testgrid_coordinator::store::history::{HistoryStore, MemoryHistory, SqliteHistory};
use testgrid_proto as pb;

use crate::args::PlanArgs;
use crate::commands::run::{by_index, test_specs};
use crate::config::Layers;
use crate::discover;
use crate::error::{Error, exit};
use crate::grid::Grid;
use crate::report::{display_path, format_duration};
use crate::settings::{self, Place};

pub async fn plan(args: PlanArgs, layers: Layers) -> Result<u8, Error> {
    let settings = settings::resolve(args.run, layers)?;
    let found = discover::discover(&settings)?;
    let specs = test_specs(&settings.root, &found.tests);
    let (planned, slots) = match &settings.place {
        Place::Grid(url) => {
            let grid = Grid::connect(url).await?;
            let planned = grid.plan(&settings.project, specs, settings.keep_order).await?;
            let connected: u32 = grid.workers().await?.iter().map(|w| w.slots).sum();
            (planned, args.slots.unwrap_or(connected.max(1)))
        }
        Place::Local(local) => {
            let history: Box<dyn HistoryStore> = match settings::user_cache() {
                Some(dir) if dir.join(testgrid_coordinator::store::history::FILE).exists() => {
                    match SqliteHistory::open(&dir, false) {
                        Ok(history) => Box::new(history),
                        Err(e) => {
                            err!("testgrid: no duration history: {e}");
                            Box::new(MemoryHistory::default())
                        }
                    }
                }
                _ => Box::new(MemoryHistory::default()),
            };
            let (tests, sizes): (Vec<String>, Vec<u64>) = specs.into_iter().map(|t| (t.path, t.size_bytes)).unzip();
            let planned = testgrid_coordinator::service::plan_tests(
                history.as_ref(),
                &settings.project,
                &tests,
                &sizes,
                settings.keep_order,
            )
            .map_err(|e| Error::History(e.to_string()))?;
            (planned, args.slots.unwrap_or(local.slots))
        }
    };
    // The estimates by test index, and the order they would be served in.
    // (Only the durations matter to the prediction.)
    let estimates: Vec<Estimate> = by_index(&planned, found.tests.len())
        .into_iter()
        .map(|ms| Estimate { ms, source: Source::Unknown, failed_last: false })
        .collect();
    let order: Vec<u32> = planned.iter().map(|p| p.index).collect();
    let (makespan, per_slot) = predict(&estimates, &order, slots as usize);
    let total: u64 = estimates.iter().map(|e| e.ms).sum();
    let longest = estimates.iter().map(|e| e.ms).max().unwrap_or(0);
    let bound = (total / u64::from(slots)).max(longest);
    let by_index: std::collections::HashMap<u32, &pb::PlannedTest> = planned.iter().map(|p| (p.index, p)).collect();
    let last = |p: &pb::PlannedTest| match pb::Outcome::try_from(p.last_outcome) {
        Ok(pb::Outcome::Unspecified) | Err(_) => None,
        Ok(outcome) => Some(outcome.key()),
    };
    if settings.output.json {
        for (slot, tests) in per_slot.iter().enumerate() {
            for index in tests {
                let Some(p) = by_index.get(index) else { continue };
                let line = serde_json::json!({
                    "test": found.tests[*index as usize],
                    "estimate_ms": p.estimate_ms,
                    "source": p.source,
                    "p90_ms": p.p90_ms,
                    "runs": p.runs,
                    "last_outcome": last(p),
                    "slot": slot,
                });
                out!("{line}");
            }
        }
        let summary = serde_json::json!({
            "event": "plan", "tests": found.tests.len(), "slots": slots,
            "predicted_ms": makespan, "work_ms": total, "lower_bound_ms": bound,
        });
        out!("{summary}");
        return Ok(exit::PASSED);
    }
    let width = found.tests.iter().map(|t| t.chars().count()).max().unwrap_or(0).min(60);
    for (slot, tests) in per_slot.iter().enumerate() {
        let busy: u64 = tests.iter().map(|i| estimates[*i as usize].ms).sum();
        out!("slot {}  ({} tests, {})", slot + 1, tests.len(), format_duration(busy));
        for index in tests {
            let Some(p) = by_index.get(index) else { continue };
            let note = match last(p) {
                Some(outcome) if outcome != "passed" => format!("  last run: {outcome}"),
                _ => String::new(),
            };
            let estimate =
                if p.source == Source::Unknown.as_str() { "?".to_string() } else { format_duration(p.estimate_ms) };
            let line = format!(
                "  {estimate:>9}  {:<7}  {:width$}{note}",
                p.source,
                display_path(&found.tests[*index as usize])
            );
            out!("{}", line.trim_end());
        }
    }
    if planned.iter().all(|p| p.source == Source::Unknown.as_str()) {
        out!("no duration history for {} yet: tests are served largest file first", settings.project);
        return Ok(exit::PASSED);
    }
    let plural = if slots == 1 { "" } else { "s" };
    out!(
        "predicted: {} on {slots} slot{plural} for {} tests ({} of work; lower bound {})",
        format_duration(makespan),
        found.tests.len(),
        format_duration(total),
        format_duration(bound)
    );
    Ok(exit::PASSED)
}
