//! One module per subcommand; each takes its parsed arguments and returns the exit code of a
//! command that ran to its end, or the [`Error`](crate::error::Error) that stopped it.

pub mod cancel;
pub mod completions;
pub mod config;
pub mod list;
pub mod plan;
pub mod run;
pub mod sessions;
pub mod watch;
pub mod workers;

use crate::error::Error;
use crate::grid::Grid;
use crate::settings::need_grid;

/// The grid of a command that has no local mode (`what`: its name, for the error).
async fn connect(grid: Option<&str>, what: &'static str) -> Result<Grid, Error> {
    Grid::connect(&need_grid(grid, what)?).await
}

/// `--json` listings: one object per line.
fn json_lines<T>(items: &[T], shape: impl Fn(&T) -> serde_json::Value) {
    for item in items {
        out!("{}", shape(item));
    }
}
