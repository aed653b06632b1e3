//! vitest and jest: test files by the usual patterns, and the folder of the project's
//! `package.json` for the warm runner.

use std::path::Path;

use testgrid_proto::frameworks::Options;

use super::search::Search;
use super::{files, project};
use crate::error::Error;
use testgrid_proto::frameworks::Framework;

/// The default patterns of JavaScript and TypeScript tests.
pub const PATTERNS: &[&str] = &[
    "**/*.test.{js,jsx,ts,tsx,mjs,cjs,mts,cts}",
    "**/*.spec.{js,jsx,ts,tsx,mjs,cjs,mts,cts}",
    "**/__tests__/**/*.{js,jsx,ts,tsx,mjs,cjs,mts,cts}",
];

pub fn discover(search: &Search) -> Result<(Vec<String>, Options), Error> {
    let tests = files::units(search)?;
    let project_dir = project::runner_project(search, |dir| dir.join("package.json").is_file())?;
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
