//! The command line as clap sees it: every subcommand, flag and value, with its help text (the
//! doc comments) and its environment variable. Only parsing lives here: what the values mean
//! together is `settings`' business, what each command does is `commands`'.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueHint};
use testgrid_proto::frameworks::{self, Framework};
use testgrid_proto::{parse_env_var, parse_key_value};

/// testgrid: run test suites across a grid of workers.
#[derive(Parser, Debug)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub credentials: CredentialArgs,
}

/// What every call to a grid presents.
#[derive(Args, Debug, Default)]
pub struct CredentialArgs {
    /// The token to present to the grid (from `testgrid-coordinator token create`), if it
    /// needs one.
    #[arg(long, global = true, env = "TESTGRID_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file whose first line is the token (--token wins).
    #[arg(long, global = true, env = "TESTGRID_TOKEN_FILE", value_hint = ValueHint::FilePath)]
    pub token_file: Option<PathBuf>,
    /// PEM certificates of the authorities that may sign an https:// grid's certificate (the
    /// system's roots otherwise).
    #[arg(long, global = true, env = "TESTGRID_CA", value_hint = ValueHint::FilePath)]
    pub ca: Option<PathBuf>,
    /// A PEM client certificate to present to an https:// grid (mTLS), with --tls-key.
    #[arg(long, global = true, env = "TESTGRID_CLIENT_CERT", requires = "tls_key", value_hint = ValueHint::FilePath)]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, global = true, env = "TESTGRID_CLIENT_KEY", requires = "tls_cert", value_hint = ValueHint::FilePath)]
    pub tls_key: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Discover tests and run them on the grid (or on a local one), showing results live.
    Run(RunArgs),
    /// Discover tests as `run` would and print each with a command that runs it alone; runs
    /// nothing. Takes `run`'s options; exit 4 when nothing matches.
    List(RunArgs),
    /// Re-attach to a session and follow it to the end.
    Watch(WatchArgs),
    /// Cancel a session: queued tests end `cancelled`, running ones are killed.
    Cancel(SessionArgs),
    /// List the grid's sessions.
    Sessions(GridArgs),
    /// List the grid's workers and what they run.
    Workers(GridArgs),
    /// Discover tests as `run` would and print, without running anything, each one's estimate
    /// from the duration history (and where it comes from), in the order a session would serve
    /// them, and the predicted time for N slots, test by test per slot.
    Plan(PlanArgs),
    /// Print `run`'s settings as this folder, the environment and `testgrid.toml` make them, and
    /// where each came from. Takes `run`'s options, to show what they change.
    Config(RunArgs),
    /// Print the completion script for a shell (`testgrid completions bash > /etc/bash_completion.d/testgrid`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Args, Debug)]
pub struct PlanArgs {
    /// The slots to predict for (default: the connected workers' slots; local mode: --local).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub slots: Option<u32>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Args, Debug)]
pub struct GridArgs {
    /// The coordinator's gRPC address (`http://host:7700`).
    #[arg(long, env = "TESTGRID_GRID")]
    pub grid: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct SessionArgs {
    /// The session's id (as `testgrid run --detach` or `testgrid sessions` prints it).
    pub session: String,
    #[command(flatten)]
    pub grid: GridArgs,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// The session's id.
    pub session: String,
    /// The coordinator's gRPC address.
    #[arg(long, env = "TESTGRID_GRID")]
    pub grid: Option<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Args, Clone, Debug, Default)]
pub struct OutputArgs {
    /// Write a JUnit XML report here.
    #[arg(long, env = "TESTGRID_JUNIT", value_hint = ValueHint::FilePath)]
    pub junit: Option<PathBuf>,
    /// One JSON event per line on stdout, nothing else there.
    #[arg(long)]
    pub json: bool,
    /// Only the summary: no line per test, no progress bar.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Print the output of tests that pass too (by default only that of tests that do not).
    #[arg(long)]
    pub show_output: bool,
    /// Where the files tests send back (--artifacts) go: a folder per test under it (default
    /// `testgrid-artifacts/SESSION`).
    #[arg(long, env = "TESTGRID_ARTIFACTS_DIR", value_hint = ValueHint::DirPath)]
    pub artifacts_dir: Option<PathBuf>,
    /// Colours: `auto` on a terminal unless NO_COLOR is set, `always`, or `never`.
    #[arg(long, value_enum, default_value = "auto", env = "TESTGRID_COLOR", value_name = "WHEN")]
    pub color: ColorChoice,
}

/// When output is coloured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    #[default]
    Auto,
    Always,
    Never,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Files or folders to search for tests (default: the current folder).
    #[arg(value_hint = ValueHint::AnyPath)]
    pub paths: Vec<PathBuf>,
    /// The coordinator's gRPC address; without it (and without TESTGRID_GRID) an embedded grid
    /// runs here.
    #[arg(long, env = "TESTGRID_GRID")]
    pub grid: Option<String>,
    /// Local mode: how many tests run at once (the slots of the embedded worker; default: the
    /// number of CPUs).
    #[arg(long, env = "TESTGRID_LOCAL")]
    pub local: Option<u32>,
    /// The tests' framework; `auto` detects it from the project's files.
    #[arg(long, value_enum, default_value = "auto", env = "TESTGRID_FRAMEWORK")]
    pub framework: FrameworkChoice,
    /// The command that runs one test; `{}` becomes its path, shell-quoted. Runs with `sh -c` in
    /// the workspace root.
    #[arg(long, env = "TESTGRID_COMMAND")]
    pub command: Option<String>,
    /// Which files are tests: globs relative to the workspace root (`**` crosses folders).
    /// Repeat for more. Default: the framework's patterns (pytest's from its configuration;
    /// vitest and jest: the files the framework itself lists).
    #[arg(long = "pattern")]
    pub patterns: Vec<String>,
    /// Run only the tests whose id matches this glob (`tests/test_io.py::test_read*`,
    /// `src/lib.rs::parser::*`, `pkg/**`; `*` stays in one folder); repeat for more.
    #[arg(long = "filter", value_name = "PATTERN")]
    pub filters: Vec<String>,
    /// Leave out the tests whose id matches this glob; repeat for more.
    #[arg(long = "exclude", value_name = "PATTERN")]
    pub excludes: Vec<String>,
    /// Run a failed or timed-out test again up to N times; passing on a retry makes it `flaky`.
    #[arg(long, default_value_t = 0, env = "TESTGRID_RETRIES")]
    pub retries: u32,
    /// Kill a test that runs longer than this (`30s`, `10m`; `0` for none).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration, env = "TESTGRID_TIMEOUT")]
    pub timeout: Duration,
    /// Cancel the whole session when it runs longer than this (off by default).
    #[arg(long, value_parser = humantime::parse_duration, env = "TESTGRID_SESSION_TIMEOUT")]
    pub session_timeout: Option<Duration>,
    /// Only workers with this label run the tests, `key=value`; repeat for more.
    #[arg(long = "label", value_parser = parse_key_value, env = "TESTGRID_LABELS", value_delimiter = ',')]
    pub labels: Vec<(String, String)>,
    /// An environment variable for every test, `NAME=value`; repeat for more.
    #[arg(long = "env", value_parser = parse_env_var)]
    pub env: Vec<(String, String)>,
    /// Pass this variable from your environment to every test as a secret: its value is
    /// masked (`***`) in all output, messages, events and reports, on the worker; repeat for more.
    #[arg(long = "secret", value_name = "NAME")]
    pub secrets: Vec<String>,
    /// The workspace root: test paths are relative to it and commands run in it (default: the
    /// enclosing git checkout, else the current folder).
    #[arg(long, env = "TESTGRID_ROOT", value_hint = ValueHint::DirPath)]
    pub root: Option<PathBuf>,
    /// Submit and print the session id without waiting (needs a grid).
    #[arg(long)]
    pub detach: bool,
    /// A grid: run the tests in each worker's own --root (code baked into its image) instead of
    /// sending this workspace. By default the workspace, as git sees it (plus .testgridignore),
    /// is sent, only the files the grid lacks.
    #[arg(long, env = "TESTGRID_NO_UPLOAD")]
    pub no_upload: bool,
    /// Bring back the files each test writes that match this glob, relative to the workspace
    /// root (`out/**`, `**/*.png`; `*` stays in one folder), into --artifacts-dir; repeat for
    /// more. Only files written while the test ran come back.
    #[arg(long = "artifacts", value_name = "GLOB")]
    pub artifacts: Vec<String>,
    /// The most bytes of files one test attempt sends back (`100MiB`); a file that does not fit
    /// is named in the summary, not sent.
    #[arg(long, env = "TESTGRID_ARTIFACTS_MAX_SIZE", default_value = "100MiB", value_parser = testgrid_proto::parse_bytes)]
    pub artifacts_max_size: u64,
    /// Which project this is, the same for all its sessions (workers keep a build folder per
    /// project, so that a build after an edit is incremental). Default: the git remote
    /// `origin` without credentials, else the workspace root's folder name.
    #[arg(long, env = "TESTGRID_PROJECT")]
    pub project: Option<String>,
    /// A command each worker runs once, in the session's project folder (where the framework's
    /// configuration is; the workspace root for commands), before the session's first test
    /// there (`npm ci`, `pip install -e .`). Its failure fails the session's tests on that
    /// worker, each with the setup's output.
    #[arg(long, env = "TESTGRID_SETUP", help_heading = SETUP_HEADING)]
    pub setup: Option<String>,
    /// A file whose contents decide what the setup produces (`package-lock.json`); repeat for
    /// more. With one, a worker keeps the setup's outputs and a later session whose key files,
    /// command and --env are the same gets them instead of running the setup again.
    #[arg(long = "setup-key", value_name = "FILE", value_hint = ValueHint::FilePath, help_heading = SETUP_HEADING)]
    pub setup_keys: Vec<PathBuf>,
    /// A folder the setup produces (`node_modules`, `.venv`), kept for reuse; repeat for more.
    /// Needs --setup-key.
    #[arg(long = "setup-output", value_name = "DIR", value_hint = ValueHint::DirPath, help_heading = SETUP_HEADING)]
    pub setup_outputs: Vec<PathBuf>,
    /// Kill the setup after this long.
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration, env = "TESTGRID_SETUP_TIMEOUT", help_heading = SETUP_HEADING)]
    pub setup_timeout: Duration,
    /// The most files a workspace sent to a grid may have.
    #[arg(long, env = "TESTGRID_BUNDLE_MAX_FILES", default_value_t = crate::bundle::Limits::default().max_files)]
    pub bundle_max_files: u64,
    /// The most bytes a workspace sent to a grid may have (`8GiB`, `500MB`).
    #[arg(long, env = "TESTGRID_BUNDLE_MAX_BYTES", default_value = "8GiB", value_parser = testgrid_proto::parse_bytes)]
    pub bundle_max_bytes: u64,
    /// The most bytes of one file of a workspace sent to a grid.
    #[arg(long, env = "TESTGRID_BUNDLE_MAX_FILE_SIZE", default_value = "1GiB", value_parser = testgrid_proto::parse_bytes)]
    pub bundle_max_file_size: u64,
    /// The Python that runs pytest on every worker (default: the worker's own: its
    /// TESTGRID_PYTHON, or `python3` on its PATH).
    #[arg(long, help_heading = PYTEST_HEADING)]
    pub python: Option<String>,
    /// How tests are kept apart: `warm` runs a framework's tests in one long-lived process per
    /// slot where testgrid has a warm runner for it (pytest); `file` starts a fresh one per test
    /// file; `test` one per test case (pytest cases are collected first). Rust tests always run
    /// a process per test.
    #[arg(long, value_enum, default_value = "warm", env = "TESTGRID_ISOLATION")]
    pub isolation: Isolation,
    /// Cancel the session if this CLI goes away (no client watches it for the grid's liveness
    /// timeout). Default: the session runs on and `testgrid watch` can re-attach.
    #[arg(long, env = "TESTGRID_CANCEL_ON_DISCONNECT")]
    pub cancel_on_disconnect: bool,
    /// A test whose worker is lost more than this many times ends `lost` (default: the grid's, 2).
    #[arg(long, env = "TESTGRID_MAX_WORKER_LOSSES")]
    pub max_worker_losses: Option<u32>,
    /// The order tests are served in. `history`: those that did not pass in the project's last
    /// run first, then those never run before, then the rest longest first, from the grid's
    /// duration history (largest file first with no history). `given`: as found or named.
    #[arg(long, value_enum, default_value = "history", env = "TESTGRID_ORDER")]
    pub order: Order,
    /// Stop the session once this many tests have failed anywhere on the grid: the rest end
    /// `cancelled`, the summary says why, and the exit code is 1.
    #[arg(long, value_name = "N", env = "TESTGRID_MAX_FAIL", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_fail: Option<u32>,
    /// Run only the tests that did not pass in the project's last run (as pytest's `--lf`);
    /// all of them when none failed.
    #[arg(long, env = "TESTGRID_LAST_FAILED")]
    pub last_failed: bool,
    /// This session's weight in the grid's fair share of slots between sessions running at
    /// once: 2 gets twice the slots of a session of the default 1.
    #[arg(long, env = "TESTGRID_PRIORITY", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub priority: u32,
    /// The most tests this session runs at once on the grid (prefetched ones included).
    #[arg(long, value_name = "N", env = "TESTGRID_MAX_SLOTS", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_slots: Option<u32>,
    /// Near the end of the session, start a test running far past what the duration history
    /// says it takes again on an idle slot: the first of the two to report decides, the other
    /// is stopped. Only for tests the history knows; each at most once.
    #[arg(long, env = "TESTGRID_SPECULATE")]
    pub speculate: bool,
    /// Local mode: replace a warm runner (pytest, vitest, jest) by a fresh one after it has run
    /// this many test files (as `testgrid-worker --recycle-after-files`).
    #[arg(long, hide = true, env = "TESTGRID_RECYCLE_AFTER_FILES", default_value_t = testgrid_worker::Recycle::default().after_files, value_parser = clap::value_parser!(u64).range(1..))]
    pub recycle_after_files: u64,
    /// Local mode: replace a warm runner by a fresh one once its memory (RSS) passes this many
    /// MiB (as `testgrid-worker --recycle-rss-mib`).
    #[arg(long, hide = true, env = "TESTGRID_RECYCLE_RSS_MIB", default_value_t = testgrid_worker::Recycle::default().rss_bytes / (1024 * 1024), value_parser = clap::value_parser!(u64).range(1..))]
    pub recycle_rss_mib: u64,
    /// The Python that local workers, and the collection of pytest cases, use when `--python`
    /// is not given (as `testgrid-worker --python`).
    #[arg(long, hide = true, env = "TESTGRID_PYTHON", default_value = testgrid_worker::DEFAULT_PYTHON)]
    pub worker_python: String,
    /// The Node that local workers start (as `testgrid-worker --node`).
    #[arg(long, hide = true, env = "TESTGRID_NODE", default_value = testgrid_worker::DEFAULT_NODE)]
    pub worker_node: String,
    /// Take the settings of `[profile.NAME]` in testgrid.toml (over the file's top level).
    #[arg(long, env = "TESTGRID_PROFILE")]
    pub profile: Option<String>,
    /// Arguments for the framework, after `--`: they go to it on every worker (`-- -k parser`,
    /// `-- --testNamePattern=io`, `-- -run TestRead`, `-- --include-ignored`).
    #[arg(last = true, value_name = "FRAMEWORK ARGS")]
    pub framework_args: Vec<String>,
    #[command(flatten)]
    pub output: OutputArgs,
    // Last: its help heading holds for every flag after it.
    #[command(flatten)]
    pub cargo: CargoArgs,
}

/// The help heading of the setup options.
const SETUP_HEADING: &str = "Setup (once per worker, before the tests)";
/// The help heading of the pytest options, which `[pytest]` in testgrid.toml may hold.
pub const PYTEST_HEADING: &str = "pytest tests (--framework pytest)";
/// The help heading of the Rust options, which `[cargo]` in testgrid.toml may hold.
pub const CARGO_HEADING: &str = "Rust tests (--framework cargo)";

/// The framework whose options a help heading gathers.
pub fn heading_framework(heading: &str) -> Option<Framework> {
    match heading {
        PYTEST_HEADING => Some(Framework::Pytest),
        CARGO_HEADING => Some(Framework::Cargo),
        _ => None,
    }
}

/// What `cargo test` builds, for Rust tests, with cargo's own flags (passed on to every `cargo test
/// --no-run`, the CLI's and each worker's).
#[derive(Args, Clone, Debug, Default, PartialEq, Eq)]
#[command(next_help_heading = CARGO_HEADING)]
pub struct CargoArgs {
    /// Features to turn on, space- or comma-separated, as `cargo test --features`; repeat for more.
    #[arg(long = "features", short = 'F')]
    pub features: Vec<String>,
    /// Turn on every feature of the packages built.
    #[arg(long)]
    pub all_features: bool,
    /// Leave out the packages' `default` feature.
    #[arg(long)]
    pub no_default_features: bool,
    /// Test only this workspace member (a package spec, as `cargo test -p`); repeat for more.
    #[arg(long = "package", short = 'p')]
    pub packages: Vec<String>,
    /// Test every member of the workspace.
    #[arg(long)]
    pub workspace: bool,
    /// Build with this cargo profile (`cargo test --profile`), e.g. `release`.
    #[arg(long, value_name = "PROFILE")]
    pub cargo_profile: Option<String>,
    /// `#[ignore]` tests: `default` reports them skipped, `only` runs them alone, `all` runs
    /// them with the others (as nextest's `--run-ignored`).
    #[arg(long, value_enum, value_name = "WHICH")]
    pub run_ignored: Option<RunIgnored>,
}

/// Which `#[ignore]` tests run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RunIgnored {
    Default,
    Only,
    All,
}

impl CargoArgs {
    /// Whether any of them was given.
    pub fn any(&self) -> bool {
        *self != CargoArgs::default()
    }

    /// The build options as `cargo test` arguments (`--run-ignored` is not one: it picks the
    /// tests).
    pub fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        for features in &self.features {
            args.extend(["--features".to_string(), features.clone()]);
        }
        if self.all_features {
            args.push("--all-features".into());
        }
        if self.no_default_features {
            args.push("--no-default-features".into());
        }
        for package in &self.packages {
            args.extend(["--package".to_string(), package.clone()]);
        }
        if self.workspace {
            args.push("--workspace".into());
        }
        if let Some(profile) = &self.cargo_profile {
            args.extend(["--profile".to_string(), profile.clone()]);
        }
        args
    }
}

/// `--framework`: `auto`, or one of the protocol's frameworks (`custom` is what `--command`
/// makes a session, not a choice).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameworkChoice {
    /// Detect it from the project's files.
    Auto,
    Named(Framework),
}

impl From<Framework> for FrameworkChoice {
    fn from(framework: Framework) -> Self {
        FrameworkChoice::Named(framework)
    }
}

impl clap::ValueEnum for FrameworkChoice {
    fn value_variants<'a>() -> &'a [Self] {
        use FrameworkChoice::{Auto, Named};
        &[
            Auto,
            Named(Framework::Shell),
            Named(Framework::Pytest),
            Named(Framework::Cargo),
            Named(Framework::Go),
            Named(Framework::Jest),
            Named(Framework::Vitest),
        ]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        let (name, help) = match self {
            FrameworkChoice::Auto => ("auto", "Detect from the project's files"),
            FrameworkChoice::Named(framework) => (
                framework.name(),
                match framework {
                    Framework::Shell | Framework::Custom => "Shell scripts, each run with `sh`",
                    Framework::Pytest => "pytest test files",
                    Framework::Cargo => "Rust tests: the test binaries are built once, and each test runs on its own",
                    Framework::Go => "Go packages with `_test.go` files, each run with `go test`",
                    Framework::Jest => "Jest test files",
                    Framework::Vitest => "Vitest test files",
                },
            ),
        };
        Some(clap::builder::PossibleValue::new(name).help(help))
    }
}

/// The order a session's tests are served in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Order {
    History,
    Given,
}

/// How tests are kept apart from each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Isolation {
    Warm,
    File,
    Test,
}

impl Isolation {
    /// The protocol's isolation.
    pub fn typed(self) -> frameworks::Isolation {
        match self {
            Isolation::Warm => frameworks::Isolation::Warm,
            Isolation::File => frameworks::Isolation::File,
            Isolation::Test => frameworks::Isolation::Test,
        }
    }
}
