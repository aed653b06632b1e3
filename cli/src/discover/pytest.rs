//! pytest: test files by pytest's default patterns, the project folder of its configuration for
//! the warm runner, and with `--isolation test` every file's cases (`pytest --collect-only`).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use testgrid_proto::frameworks::{Framework, Options};

use super::ask::{self, Failed, first_lines};
use super::pytest_config::Collect;
use super::search::{Place, Search};
use super::{files, project};
use crate::args::Isolation;
use crate::error::Error;
use crate::settings::Settings;

/// The default patterns of pytest tests.
pub const PATTERNS: &[&str] = &["**/test_*.py", "**/*_test.py"];

pub fn discover(search: &Search) -> Result<(Vec<String>, Options), Error> {
    let settings = search.settings;
    let tests = files::units(search)?;
    // Warm runners start in the project's folder, so that its configuration applies.
    let project_dir = project::runner_project(search, is_project)?;
    // Cases are collected for `--isolation test`, and for a `--filter`/`--exclude` that names
    // them (the cases it keeps then run in the warm runners, each a unit).
    let tests = if settings.isolation == Isolation::Test || search.filter.names_cases() {
        let python = settings.python.as_deref().unwrap_or(&settings.worker_python);
        cases(&settings.root, &tests, python, &settings.env, &settings.args_for(Framework::Pytest))?
    } else {
        tests
    };
    Ok((tests, Options::Pytest { python: settings.python.clone(), project_dir }))
}

/// The cases of each file unit, as pytest collects them with the session's arguments (for
/// `testgrid list`); units that are cases already, and files that collect none, have none.
pub fn cases_of(settings: &Settings, units: &[String]) -> Result<Vec<(String, Vec<String>)>, Error> {
    let files: Vec<String> = units.iter().filter(|u| !u.contains("::")).cloned().collect();
    // Units that are all cases already: nothing to collect (pytest without paths would collect
    // the whole rootdir).
    if files.is_empty() {
        return Ok(units.iter().map(|unit| (unit.clone(), Vec::new())).collect());
    }
    let python = settings.python.as_deref().unwrap_or(&settings.worker_python);
    let found = cases(&settings.root, &files, python, &settings.env, &settings.args_for(Framework::Pytest))?;
    Ok(units
        .iter()
        .map(|unit| {
            let prefix = format!("{unit}::");
            (unit.clone(), found.iter().filter(|c| c.starts_with(&prefix)).cloned().collect())
        })
        .collect())
}

/// pytest arguments a grid cannot take: pytest-xdist's, which would spread the tests a second
/// time inside each runner.
pub fn check_args(args: &[String]) -> Result<(), String> {
    for arg in args {
        let name = arg.split_once('=').map_or(arg.as_str(), |(name, _)| name);
        let xdist = matches!(name, "--numprocesses" | "--dist" | "--tx" | "--maxprocesses")
            || (name.starts_with("-n") && !name.starts_with("--"));
        if xdist {
            return Err(format!(
                "`{name}` is pytest-xdist's; testgrid spreads the tests itself: use --local N (or more workers) instead"
            ));
        }
    }
    Ok(())
}

/// A folder with pytest's configuration: `pytest.ini` or `.pytest.ini`, or a `pyproject.toml`,
/// `tox.ini` or `setup.cfg` with a pytest section.
fn is_project(dir: &Path) -> bool {
    Collect::is_config_dir(dir)
}

/// The configuration pytest would read for the places searched: the nearest folder at or above
/// them (inside the workspace root) that holds one.
pub fn config(settings: &Settings, places: &[Place]) -> Option<Collect> {
    let absolute: Vec<PathBuf> = places.iter().map(|p| p.absolute.clone()).collect();
    project::nearest_with(&settings.root, &absolute, Collect::read)
}

/// How long `pytest --collect-only` may take (a large suite imports every test module).
const COLLECT_DEADLINE: Duration = Duration::from_secs(600);

/// The most its list of node ids may hold.
const MAX_COLLECT_BYTES: usize = 64 * 1024 * 1024;

/// `--isolation test` for pytest: every file becomes its test cases (`pytest --collect-only`),
/// so that each case runs in a process of its own. A file that yields no case (a collection
/// error, say) stays a unit, so its error is reported when it runs.
fn cases(
    root: &Path,
    tests: &[String],
    python: &str,
    env: &BTreeMap<String, String>,
    args: &[String],
) -> Result<Vec<String>, Error> {
    let python = python.to_string();
    let mut cmd = Command::new(&python);
    // The runners' rootdir is the workspace root: node ids must be relative to it too. The
    // session's own arguments select as they will when the cases run (`-k`, `-m`).
    cmd.args(["-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "--rootdir", "."])
        .args(args)
        .arg("--")
        .args(tests)
        .current_dir(root)
        .envs(env);
    let output = ask::ask(&mut cmd, COLLECT_DEADLINE, MAX_COLLECT_BYTES).map_err(|e| match e {
        Failed::Start(source) => Error::PytestCannotCollect { python: python.clone(), source },
        other => Error::PytestCollectNoAnswer { python: python.clone(), problem: other.to_string() },
    })?;
    let text = String::from_utf8_lossy(&output.stdout);
    let ids: Vec<&str> = text.lines().take_while(|l| !l.trim().is_empty()).filter(|l| l.contains("::")).collect();
    // 0: collected; 2: some files did not collect (they stay units, and report their error);
    // 5: nothing collected. Anything else (pytest missing, a usage error) is not a collection.
    if !matches!(output.status.code(), Some(0 | 2 | 5)) {
        return Err(Error::PytestCollectFailed {
            python,
            status: output.status,
            output: first_lines(if output.stderr.iter().all(u8::is_ascii_whitespace) {
                &output.stdout
            } else {
                &output.stderr
            }),
        });
    }
    let mut units = Vec::new();
    for test in tests {
        let prefix = format!("{test}::");
        let mut found: Vec<String> =
            ids.iter().filter(|id| **id == test || id.starts_with(&prefix)).map(|id| id.to_string()).collect();
        if found.is_empty() {
            found.push(test.clone());
        }
        units.extend(found);
    }
    let mut seen = HashSet::new();
    units.retain(|u| seen.insert(u.clone()));
    Ok(units)
}
