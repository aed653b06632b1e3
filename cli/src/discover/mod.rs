//! Finding a session's test units and how to run them: resolve the paths asked for, pick the
//! framework ([`detect`] for `auto`), then one function per framework ([`files`] for shell
//! scripts and custom commands, [`pytest`], [`cargo`], [`js`], [`go`]) returns the units and
//! the framework's typed runner options. Nothing here talks to a grid.
//!
//! A test unit is a file by default (a package folder for Go, a single test for Rust, a case
//! for pytest with `--isolation test`). Paths are relative to the workspace root, which is also
//! where the command runs. Patterns are globs relative to that root where `*` stays inside one
//! folder and `**` crosses folders.

mod cargo;
mod detect;
mod files;
mod go;
mod js;
mod project;
mod pytest;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use globset::GlobSet;
use testgrid_proto::frameworks::{self, Options, Runner};

use crate::args::Framework;
use crate::error::Error;
use crate::settings::Settings;

pub use project::project_dir;

/// What a session will run.
#[derive(Clone, Debug)]
pub struct Discovered {
    /// The framework, decided (never `auto`).
    pub framework: Framework,
    /// Test paths relative to the root, in the order they should start (largest first: the
    /// cheapest guess at longest first until durations are known).
    pub tests: Vec<String>,
    /// How the workers run them.
    pub runner: Runner,
}

/// One path asked for on the command line, resolved.
#[derive(Clone, Debug)]
struct Place {
    /// The file or folder, absolute (for `FILE::CASE`, the file).
    absolute: PathBuf,
    /// `FILE::CASE`: the file relative to the root, and the case.
    case: Option<(String, String)>,
}

/// A search under way: the settings, the framework decided, the places and patterns resolved.
struct Search<'a> {
    settings: &'a Settings,
    framework: Framework,
    /// What the command line names, or the current folder when it names nothing.
    places: Vec<Place>,
    patterns: Vec<String>,
    /// The patterns, compiled.
    set: GlobSet,
}

impl Search<'_> {
    fn root(&self) -> &Path {
        &self.settings.root
    }

    /// Every place's absolute path (case files included).
    fn absolute_places(&self) -> Vec<PathBuf> {
        self.places.iter().map(|p| p.absolute.clone()).collect()
    }
}

/// The command a shell test runs with.
const SHELL_TEMPLATE: &str = "sh {}";

/// Find the tests `settings` ask for and the runner for them.
pub fn discover(settings: &Settings) -> Result<Discovered, Error> {
    let places = places(settings)?;
    let framework = match settings.framework {
        Framework::Auto => detect::detect(&settings.root, &places),
        f => f,
    };
    let patterns: Vec<String> = if settings.patterns.is_empty() {
        default_patterns(framework).iter().map(|p| p.to_string()).collect()
    } else {
        settings.patterns.clone()
    };
    let set = files::glob_set(&patterns)?;
    let search = Search { settings, framework, places, patterns, set };
    let (tests, options) = match (&settings.command, framework) {
        (Some(template), _) => (command_units(&search)?, Options::Command { template: template.clone() }),
        (None, Framework::Auto | Framework::Shell) => {
            (files::units(&search)?, Options::Command { template: SHELL_TEMPLATE.to_string() })
        }
        (None, Framework::Pytest) => pytest::discover(&search)?,
        (None, Framework::Cargo) => cargo::discover(&search)?,
        (None, Framework::Jest | Framework::Vitest) => js::discover(&search)?,
        (None, Framework::Go) => go::discover(&search)?,
    };
    if tests.is_empty() {
        return Err(no_tests(&search));
    }
    let runner = Runner {
        framework: if settings.command.is_some() { frameworks::Framework::Custom } else { framework.typed() },
        isolation: settings.isolation.typed(),
        options,
    };
    Ok(Discovered { framework, tests, runner })
}

/// The default test patterns of a framework.
fn default_patterns(framework: Framework) -> &'static [&'static str] {
    match framework {
        Framework::Auto => &[],
        Framework::Shell => files::SHELL_PATTERNS,
        Framework::Pytest => pytest::PATTERNS,
        Framework::Cargo => cargo::PATTERNS,
        Framework::Go => go::PATTERNS,
        Framework::Jest | Framework::Vitest => js::PATTERNS,
    }
}

/// The units of a `--command`: the framework's files (or Go packages), run as the template
/// says. Rust tests are found by building them, which a custom command does not do: none.
fn command_units(search: &Search) -> Result<Vec<String>, Error> {
    match search.framework {
        Framework::Cargo => Ok(Vec::new()),
        Framework::Go => go::units(search),
        _ => files::units(search),
    }
}

/// Resolve the command line's paths against the current folder; `FILE::CASE` names a case in
/// a file (a pytest node id, a Go package's test) when no file has that very name.
fn places(settings: &Settings) -> Result<Vec<Place>, Error> {
    let (root, cwd) = (&settings.root, &settings.cwd);
    let mut places = Vec::new();
    for path in &settings.paths {
        let text = path.to_string_lossy();
        if let Some((file, case)) = text.split_once("::")
            && !path.exists()
        {
            let absolute = cwd
                .join(file)
                .canonicalize()
                .map_err(|source| Error::MissingCaseFile { file: file.to_string(), source })?;
            let rel = files::relative(root, &absolute)?;
            places.push(Place { absolute, case: Some((rel, case.to_string())) });
            continue;
        }
        let absolute =
            cwd.join(path).canonicalize().map_err(|source| Error::MissingPath { path: path.clone(), source })?;
        if !absolute.starts_with(root) {
            return Err(Error::OutsideRoot { path: path.clone(), root: root.clone() });
        }
        places.push(Place { absolute, case: None });
    }
    if places.is_empty() {
        places.push(Place { absolute: cwd.clone(), case: None });
    }
    Ok(places)
}

fn no_tests(search: &Search) -> Error {
    let paths = &search.settings.paths;
    Error::NoTests {
        searched: if paths.is_empty() {
            vec![".".into()]
        } else {
            paths.iter().map(|p| p.display().to_string()).collect()
        },
        patterns: search.patterns.clone(),
        framework: search.framework.name(),
        root: search.root().to_path_buf(),
    }
}
