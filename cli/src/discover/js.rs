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
    (search.early)(Options::Js { project_dir: project_dir.clone() });
    // Without `--pattern` the project's own configuration decides, as it does for the framework
    // alone: our patterns would run benchmarks it excludes and miss files it includes.
    let tests =
        if search.settings.patterns.is_empty() { js_list::units(search, &project_dir)? } else { files::units(search)? };
    Ok((tests, Options::Js { project_dir }))
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
