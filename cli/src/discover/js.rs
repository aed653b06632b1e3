//! vitest and jest: the folder of the project's `package.json` for the warm runner, and the test
//! files the framework itself lists there ([`js_list`](super::js_list)), or those `--pattern`
//! picks.

use std::path::Path;

use testgrid_proto::frameworks::Options;

use super::search::Search;
use super::{files, js_list, project};
use crate::error::Error;
use testgrid_proto::frameworks::Framework;

/// JavaScript and TypeScript test files as the frameworks' defaults roughly name them: what
/// `--framework auto` looks for, and the files of a `--command` run. A vitest or jest run takes
/// the framework's own list instead.
pub const PATTERNS: &[&str] = &[
    "**/*.test.{js,jsx,ts,tsx,mjs,cjs,mts,cts}",
    "**/*.spec.{js,jsx,ts,tsx,mjs,cjs,mts,cts}",
    "**/__tests__/**/*.{js,jsx,ts,tsx,mjs,cjs,mts,cts}",
];

pub fn discover(search: &Search) -> Result<(Vec<String>, Options), Error> {
    let project_dir = project::runner_project(search, |dir| dir.join("package.json").is_file())?;
    // Without `--pattern` the project's own configuration decides, as it does for the framework
    // alone: our patterns would run benchmarks it excludes and miss files it includes.
    let listed = search.settings.patterns.is_empty();
    let from_runner = (search.early)(Options::Js { project_dir: project_dir.clone() }, listed);
    let tests = if listed { js_list::units(search, &project_dir, from_runner)? } else { files::units(search)? };
    Ok((tests, Options::Js { project_dir }))
}

/// vitest and jest options a grid decides itself: how tests are spread, reported and watched.
const REFUSED: &[(&str, &str)] = &[
    ("--watch", "a grid session runs once"),
    ("-w", "a grid session runs once"),
    ("--watchAll", "a grid session runs once"),
    ("--ui", "a grid session runs once"),
    ("--reporter", "testgrid reports the results (--json, --junit)"),
    ("--reporters", "testgrid reports the results (--json, --junit)"),
    ("--json", "testgrid reports the results (testgrid run --json)"),
    ("--outputFile", "testgrid reports the results (--junit FILE)"),
    ("--shard", "testgrid spreads the tests over its workers"),
    ("--maxWorkers", "testgrid spreads the tests: use --local N"),
    ("--runInBand", "testgrid spreads the tests: use --local 1"),
    ("-i", "testgrid spreads the tests: use --local 1"),
    ("--listTests", "use `testgrid list`"),
    ("--bail", "a grid cannot stop every worker's framework at once"),
    ("--help", "see the framework's own help"),
    ("-h", "see the framework's own help"),
];

/// Refuse what a grid decides itself, by name and with what to do instead.
pub fn check_args(args: &[String]) -> Result<(), String> {
    for arg in args.iter().filter(|a| a.starts_with('-')) {
        let name = arg.split_once('=').map_or(arg.as_str(), |(name, _)| name);
        if let Some((_, instead)) = REFUSED.iter().find(|(refused, _)| *refused == name) {
            return Err(format!("`{name}` is not for a grid: {instead}"));
        }
    }
    Ok(())
}

/// vitest when a package.json in `dirs` mentions it (or a vitest config is there), jest
/// otherwise.
pub fn framework(dirs: &[&Path]) -> Framework {
    let vitest = dirs.iter().any(|d| {
        std::fs::read_to_string(d.join("package.json")).is_ok_and(|s| s.contains("\"vitest\""))
            || ["vitest.config.ts", "vitest.config.js", "vitest.config.mjs"].iter().any(|f| d.join(f).is_file())
    });
    if vitest { Framework::Vitest } else { Framework::Jest }
}
