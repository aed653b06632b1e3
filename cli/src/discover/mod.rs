//! Finding a session's test units and how to run them: resolve the paths asked for, pick the
//! framework ([`detect`] for `auto`), then one function per framework ([`files`] for shell
//! scripts and custom commands, [`pytest`], [`cargo`], [`js`], [`go`]) returns the units and
//! the framework's typed runner options. Nothing here talks to a grid.
//!
//! A test unit is a file by default (a package folder for Go, a single test for Rust, a case
//! for pytest with `--isolation test`). Paths are relative to the workspace root, which is also
//! where the command runs. Patterns are globs relative to that root where `*` stays inside one
//! folder and `**` crosses folders.

mod ask;
mod cargo;
mod detect;
pub(crate) mod files;
mod go;
mod js;
mod js_list;
mod project;
mod pytest;
mod pytest_config;
mod search;
mod select;
#[cfg(test)]
mod tests;

use testgrid_proto::frameworks::{Options, Runner};

use crate::args::FrameworkChoice;
use crate::error::Error;
use crate::settings::Settings;
use testgrid_proto::frameworks::Framework;

pub use project::project_dir;
pub use pytest::cases_of as pytest_cases;
use search::{Place, Search, places};

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

/// The command a shell test runs with.
const SHELL_TEMPLATE: &str = "sh {}";

/// Find the tests `settings` ask for and the runner for them.
pub fn discover(settings: &Settings) -> Result<Discovered, Error> {
    discover_with(settings, &|_, _| None)
}

/// Where a runner started ahead sends its framework's list of the session's test files (see
/// [`testgrid_worker::FileList`]): vitest's, in local mode.
pub type Listing = std::sync::mpsc::Receiver<testgrid_worker::Listing>;

/// [`discover`], telling `early` how the tests will run as soon as that is known, while the
/// framework still lists them (vitest and jest, whose listing costs the framework's start): a
/// local grid starts the session's runner meanwhile. The flag says the runner may list the
/// files too; `early` then answers where that list will come, and discovery waits for it
/// instead of starting the framework a second time (falling back on its own listing when none
/// comes).
pub fn discover_with(
    settings: &Settings,
    early: &(dyn Fn(&Runner, bool) -> Option<Listing> + Sync),
) -> Result<Discovered, Error> {
    let mut places = places(settings)?;
    let framework = match settings.framework {
        FrameworkChoice::Auto => detect::detect(&settings.root, &places),
        FrameworkChoice::Named(f) => f,
    };
    let args = settings.args_for(framework);
    if settings.command.is_some() && !args.is_empty() {
        return Err(Error::ArgsWithCommand);
    }
    let runtime_args = runtime_args(framework, &args)?;
    if settings.cargo_asked && framework != Framework::Cargo {
        return Err(Error::CargoFlagsWithout { framework: framework.name() });
    }
    // pytest's own configuration says which files are tests, where to look when nothing is
    // named, and which folders not to enter: the files `pytest` alone would collect.
    let pytest = (framework == Framework::Pytest).then(|| pytest::config(settings, &places)).flatten();
    if let Some(config) = &pytest
        && settings.paths.is_empty()
        && settings.cwd == config.rootdir
    {
        let named = config.testpath_places();
        if !named.is_empty() {
            places = named.into_iter().map(|absolute| Place { absolute, case: None }).collect();
        }
    }
    let patterns: Vec<String> = if !settings.patterns.is_empty() {
        settings.patterns.clone()
    } else if let Some(patterns) = pytest.as_ref().and_then(|c| c.patterns()) {
        patterns
    } else {
        detect::default_patterns(framework).iter().map(|p| p.to_string()).collect()
    };
    let set = files::glob_set(&patterns)?;
    let skip_dirs = (framework == Framework::Pytest).then(|| pytest_config::skipped_dirs(pytest.as_ref()));
    let ignored = pytest.as_ref().and_then(|c| c.ignored(&settings.cwd));
    let isolation = settings.isolation.typed();
    let tell = |options: Options, list: bool| {
        if settings.command.is_none() {
            early(
                &Runner {
                    framework,
                    isolation,
                    options,
                    args: runtime_args.clone(),
                    keep_passing_output: settings.output.show_output,
                },
                list,
            )
        } else {
            None
        }
    };
    let filter = select::IdFilter::new(&settings.filters, &settings.excludes)?;
    if filter.names_cases() && settings.command.is_none() {
        let instead = match framework {
            Framework::Jest | Framework::Vitest => Some("select cases with `-- -t PATTERN` instead"),
            Framework::Go => Some("select tests with `-- -run REGEXP` instead"),
            _ => None,
        };
        if let Some(instead) = instead {
            let pattern = settings.filters.iter().chain(&settings.excludes).find(|p| p.contains("::")).cloned();
            return Err(Error::FilterNeedsCases {
                pattern: pattern.unwrap_or_default(),
                framework: framework.name(),
                instead,
            });
        }
    }
    let search = Search { settings, framework, places, patterns, set, skip_dirs, ignored, filter, early: &tell };
    let (tests, options) = match (&settings.command, framework) {
        (Some(template), _) => (command_units(&search)?, Options::Command { template: template.clone() }),
        (None, Framework::Shell | Framework::Custom) => {
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
    let found = tests.len();
    let tests: Vec<String> = tests.into_iter().filter(|t| search.filter.keeps(t)).collect();
    if tests.is_empty() {
        let patterns = settings.filters.iter().map(|p| format!("--filter {p}"));
        let patterns = patterns.chain(settings.excludes.iter().map(|p| format!("--exclude {p}")));
        return Err(Error::NothingMatchesFilter { found, patterns: patterns.collect::<Vec<_>>().join(", ") });
    }
    let runner = Runner {
        framework: if settings.command.is_some() { Framework::Custom } else { framework },
        isolation,
        options,
        args: runtime_args,
        keep_passing_output: settings.output.show_output,
    };
    Ok(Discovered { framework, tests, runner })
}

/// The framework's arguments as every run of a test gets them, checked first: a Rust session's
/// selection is applied when its tests are listed (the rest goes to each test), the others go
/// as they are.
fn runtime_args(framework: Framework, args: &[String]) -> Result<Vec<String>, Error> {
    let refused = |problem: String| Error::BadFrameworkArgs { framework: framework.name(), problem };
    match framework {
        Framework::Cargo => Ok(testgrid_proto::cargo::TestArgs::split(args).map_err(refused)?.run),
        Framework::Go => {
            testgrid_proto::go::GoArgs::split(args).map_err(refused)?;
            Ok(args.to_vec())
        }
        Framework::Pytest => {
            pytest::check_args(args).map_err(refused)?;
            Ok(args.to_vec())
        }
        Framework::Jest | Framework::Vitest => {
            js::check_args(args).map_err(refused)?;
            Ok(args.to_vec())
        }
        Framework::Shell | Framework::Custom => Ok(args.to_vec()),
    }
}

/// The units of a `--command`: the framework's files, Go packages or Rust tests (`SRC::NAME`,
/// found by building them), run as the template says.
fn command_units(search: &Search) -> Result<Vec<String>, Error> {
    match search.framework {
        Framework::Cargo => cargo::discover(search).map(|(tests, _)| tests),
        Framework::Go => go::units(search),
        _ => files::units(search),
    }
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
        root: search.settings.root.clone(),
    }
}
