//! The CLI's one error type: a variant per thing that can stop a command before it can report
//! on tests, carrying what the message needs, and [`Error::exit_code`], the one place a
//! variant becomes one of the documented exit codes.

use std::path::PathBuf;
use std::process::{ExitCode, ExitStatus};

/// Exit codes of `testgrid` (PRODUCT.md).
pub mod exit {
    pub const PASSED: u8 = 0;
    pub const FAILED: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const INFRA: u8 = 3;
    pub const NO_TESTS: u8 = 4;
    pub const INTERRUPTED: u8 = 130;
}

/// Everything that stops the CLI before it can report on tests.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // Flags that do not go together (usage).
    #[error("--local needs at least 1 worker")]
    NoLocalWorkers,
    #[error("--local runs an embedded grid; it cannot be combined with --grid/TESTGRID_GRID")]
    LocalWithGrid,
    #[error("--max-worker-losses must be at least 1")]
    NoWorkerLosses,
    #[error("--detach leaves the session without a watcher; drop --cancel-on-disconnect")]
    DetachWithCancelOnDisconnect,
    #[error(
        "--label picks workers of a shared grid; the local grid's workers have no labels (drop --label or set --grid)"
    )]
    LabelsWithoutGrid,
    #[error("--detach needs a grid to leave the session on: set --grid or TESTGRID_GRID")]
    DetachWithoutGrid,
    #[error("--command `{0}` has no `{{}}` where the test path goes")]
    CommandWithoutPlaceholder(String),
    #[error("--setup-key and --setup-output go with a --setup command")]
    SetupPartsWithoutSetup,
    #[error(
        "--setup-output keeps what the setup made for a later session with the same key: name the key with --setup-key FILE (`package-lock.json`)"
    )]
    SetupOutputWithoutKey,
    #[error("--{flag} {}: {problem}", path.display())]
    SetupPath { flag: &'static str, path: PathBuf, problem: String },
    #[error("--setup: {0}")]
    BadSetup(testgrid_proto::setup::BadSetup),
    #[error("bad --artifacts `{glob}`: {source}")]
    BadArtifacts { glob: String, source: globset::Error },
    /// `watch`, `cancel`, `sessions` and `workers` have no local mode.
    #[error("`testgrid {0}` needs a grid: set --grid or TESTGRID_GRID")]
    NeedsGrid(&'static str),

    #[error("arguments for {framework} (after `--`, or testgrid.toml's `args`): {problem}")]
    BadFrameworkArgs { framework: &'static str, problem: String },
    #[error("--run-ignored and `--ignored`/`--include-ignored` after `--` ask for different tests; keep one")]
    IgnoredTwice,
    #[error("arguments after `--` go to a framework; with --command, put them in the command's template")]
    ArgsWithCommand,

    // testgrid.toml and --profile (usage).
    #[error("two config files: {} and {}; keep one", first.display(), second.display())]
    TwoConfigFiles { first: PathBuf, second: PathBuf },
    #[error("cannot read {}: {source}", path.display())]
    ConfigRead { path: PathBuf, source: std::io::Error },
    #[error("{}: {bytes} bytes; a config file may have at most {limit}", path.display())]
    ConfigTooBig { path: PathBuf, bytes: u64, limit: u64 },
    #[error("{at}: not valid TOML: {message}")]
    ConfigSyntax { at: crate::config::At, message: String },
    #[error("{at}: unknown key `{key}` in {table}{}", match suggestion {
        Some(s) => format!("; did you mean `{s}`?"),
        None => "; `testgrid config` lists every key".to_string(),
    })]
    ConfigUnknownKey { at: crate::config::At, key: String, table: String, suggestion: Option<String> },
    #[error("{at}: `{key}` {problem}")]
    ConfigBadValue { at: crate::config::At, key: String, problem: String },
    #[error("{at}: {key} = {value:?} is not valid: {problem}")]
    ConfigInvalid { at: crate::config::At, key: String, value: String, problem: String },
    #[error("{}", unknown_profile(name, file.as_deref(), known))]
    UnknownProfile { name: String, file: Option<PathBuf>, known: Vec<String> },

    // Places on this machine (usage).
    #[error("cannot read the current directory: {0}")]
    CurrentDir(std::io::Error),
    #[error("--root {}: {source}", path.display())]
    Root { path: PathBuf, source: std::io::Error },
    #[error("--junit {}: cannot create {}: {source}", path.display(), dir.display())]
    JunitDir { path: PathBuf, dir: PathBuf, source: std::io::Error },
    #[error("--junit {}: cannot write in {}: {source}", path.display(), dir.display())]
    JunitDirNotWritable { path: PathBuf, dir: PathBuf, source: std::io::Error },
    #[error("--junit {}: cannot replace the old report: {source}", path.display())]
    JunitOld { path: PathBuf, source: std::io::Error },
    #[error("cannot create {} for the JUnit report: {source}", dir.display())]
    JunitCreateDir { dir: PathBuf, source: std::io::Error },
    #[error("cannot write the JUnit report {}: {source}", path.display())]
    JunitWrite { path: PathBuf, source: std::io::Error },

    // What was asked for on the command line (usage).
    #[error("{}: {source}; pass files or folders that exist", path.display())]
    MissingPath { path: PathBuf, source: std::io::Error },
    #[error("{file}: {source}; pass FILE::CASE with a file (or Go package folder) that exists")]
    MissingCaseFile { file: String, source: std::io::Error },
    /// A path asked for lies outside the workspace root.
    #[error("{} is outside the workspace root {}; run from inside it or set --root", path.display(), root.display())]
    OutsideRoot { path: PathBuf, root: PathBuf },
    /// A path found lies outside the workspace root (a case's file, a project folder).
    #[error("{} is outside the workspace root {}", path.display(), root.display())]
    NotUnderRoot { path: PathBuf, root: PathBuf },
    #[error("{}: test paths must be valid UTF-8 to be sent to workers", path.display())]
    NotUtf8 { path: PathBuf },
    #[error("bad --filter/--exclude `{pattern}`: {source}")]
    BadFilter { pattern: String, source: globset::Error },
    #[error("no test of the {found} found matches --filter/--exclude ({patterns})")]
    NothingMatchesFilter { found: usize, patterns: String },
    #[error("--filter/--exclude `{pattern}` names cases, which {framework} does not list before it runs; {instead}")]
    FilterNeedsCases { pattern: String, framework: &'static str, instead: &'static str },
    #[error("bad --pattern `{pattern}`: {source}")]
    BadPattern { pattern: String, source: globset::Error },
    #[error("bad --pattern: {0}")]
    BadPatterns(globset::Error),

    // Asking the framework for its tests (usage: the project or the machine needs fixing).
    #[error("cannot run `{python} -m pytest --collect-only`: {source}; pass --python PATH")]
    PytestCannotCollect { python: String, source: std::io::Error },
    #[error("`{python} -m pytest --collect-only` failed ({status}): {output}")]
    PytestCollectFailed { python: String, status: ExitStatus, output: String },
    #[error("`{python} -m pytest --collect-only` gave no list: {problem}")]
    PytestCollectNoAnswer { python: String, problem: String },
    #[error(
        "cannot find {framework} from {}: no node_modules/{framework} there or in a folder above; install the \
         project's dependencies (`npm ci`), or pass --pattern GLOB to choose the test files yourself",
        dir.display()
    )]
    JsNotInstalled { framework: &'static str, dir: PathBuf },
    #[error(
        "cannot start Node (`{node}`) to ask {framework} for its test files: {source}; install Node.js or set \
         TESTGRID_NODE, or pass --pattern GLOB to choose the test files yourself"
    )]
    JsCannotStart { node: String, framework: &'static str, source: std::io::Error },
    #[error(
        "`{command}` in {} failed to list the test files: {problem}\nfix the project's configuration, or pass \
         --pattern GLOB to choose the test files yourself",
        dir.display()
    )]
    JsListFailed { command: String, dir: PathBuf, problem: String },
    #[error("{framework} lists {file}, which is outside the workspace root {}; set --root to a folder holding it", root.display())]
    JsListedOutside { framework: &'static str, file: String, root: PathBuf },
    #[error("{framework} lists {problem}")]
    JsBadEntry { framework: &'static str, problem: String },
    #[error("cannot make a scratch folder for the framework's list of tests: {0}")]
    ListScratch(std::io::Error),
    #[error(
        "{var} is no longer read: pass cargo's options as flags of `testgrid run` (--features, --all-features, \
         --no-default-features, --package/-p, --workspace, --cargo-profile), then unset it"
    )]
    OldCargoArgs { var: &'static str },
    #[error(
        "--features, --all-features, --no-default-features, --package, --workspace, --cargo-profile and \
         --run-ignored are for Rust tests, and these are {framework} tests (use --framework cargo for a Rust project)"
    )]
    CargoFlagsWithout { framework: &'static str },
    #[error(
        "no Cargo.toml at or above {} inside the workspace root {}; run from a Rust project or set --root",
        place.display(),
        root.display()
    )]
    NoCargoToml { place: PathBuf, root: PathBuf },
    #[error("cannot start `{command}` in {}: {source} (is cargo on the PATH?)", dir.display())]
    CargoCannotStart { command: String, dir: PathBuf, source: std::io::Error },
    #[error("cannot wait for cargo: {0}")]
    CargoWait(std::io::Error),
    #[error("`{command}` failed in {} ({status}); fix the build first", dir.display())]
    CargoBuild { command: String, dir: PathBuf, status: ExitStatus },
    #[error("{id} and {other} are both built from {src}: testgrid names Rust tests by their source file")]
    SameSource { id: String, other: String, src: String },
    #[error("cannot list the tests of {}: {source}", exe.display())]
    CannotList { exe: PathBuf, source: std::io::Error },
    #[error("cannot list the tests of {}: {problem}", exe.display())]
    ListNoAnswer { exe: PathBuf, problem: String },
    #[error("`{} --list` failed ({status}): {stderr}", exe.display())]
    ListFailed { exe: PathBuf, status: ExitStatus, stderr: String },
    #[error(
        "{file}: no Rust test target there (name a target's source file such as src/lib.rs or tests/api.rs, \
         or a folder holding some)"
    )]
    NoRustTarget { file: String },
    #[error("{file}::{case}: no such test or module in that target")]
    NoRustTest { file: String, case: String },

    /// Discovery found nothing to run.
    #[error(
        "no tests found in {} matching {} (framework {framework}; patterns are relative to the workspace root {}); \
         pass other paths, --pattern GLOB or --framework",
        searched.join(", "),
        patterns.join(", "),
        root.display()
    )]
    NoTests { searched: Vec<String>, patterns: Vec<String>, framework: &'static str, root: PathBuf },
    /// vitest or jest listed no test files in the places asked for.
    #[error(
        "no tests found in {}: {framework} lists no test files there (its configuration in {} decides which files \
         are tests); pass other paths, or --pattern GLOB to choose the test files yourself",
        searched.join(", "),
        dir.display()
    )]
    NoListedTests { searched: Vec<String>, framework: &'static str, dir: PathBuf },

    // The grid (usage when the request was wrong, infrastructure otherwise).
    #[error("bad grid address `{url}`: {problem}; expected http://host:7700")]
    BadGridAddress { url: String, problem: String },
    #[error("cannot reach grid at {url}: {detail}; is testgrid-coordinator running? set --grid or TESTGRID_GRID")]
    GridUnreachable { url: String, detail: String },
    /// An https:// address whose port speaks plaintext.
    #[error("{0}")]
    WrongScheme(String),
    #[error(
        "the grid at {url} presented a certificate this machine does not trust ({detail}); pass --ca FILE (or set TESTGRID_CA) naming the authority that signed it"
    )]
    Untrusted { url: String, detail: String },
    /// The grid said the request was wrong (an unknown session, a bad spec).
    #[error("{what}: {message}")]
    Rejected { what: &'static str, message: String },
    /// The grid's own message says what is wrong with the token (missing, unknown, expired,
    /// the wrong role) and how to get one.
    #[error("{what}: the grid at {url} refused the call: {message}")]
    Refused { what: &'static str, url: String, message: String },
    #[error(
        "submit: the grid at {url} no longer holds the uploaded workspace ({message}); was it restarted without its --data-dir? Run again"
    )]
    WorkspaceGone { url: String, message: String },
    #[error(transparent)]
    BadToken(#[from] testgrid_proto::client::BadToken),
    #[error("--secret {name}: there is no such variable in this environment (or it is not UTF-8); export it first")]
    SecretUnset { name: String },
    #[error("{what}: the grid at {url} answered {code:?}: {message}")]
    GridFailed { what: &'static str, url: String, code: tonic::Code, message: String },
    #[error(
        "session {session} lost: the grid at {url} no longer knows it (was the coordinator restarted without its --data-dir, or the session forgotten?)"
    )]
    SessionLost { session: String, url: String },
    #[error(
        "lost the grid at {url} while watching session {session}: {detail}; resume with `testgrid watch {session}`"
    )]
    GridLost { url: String, session: String, detail: String },
    #[error("cannot build the JUnit report: {0}")]
    JunitBuild(quick_junit::SerializeError),

    // This process (infrastructure).
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot handle Ctrl-C: {0}")]
    Signals(std::io::Error),
    #[error("cannot open a loopback port for the local grid: {0}")]
    LocalPort(std::io::Error),
    #[error("local grid: {0}")]
    LocalAddr(std::io::Error),
    #[error("cannot create a folder for the local grid's coverage (is the temporary folder writable? set TMPDIR): {0}")]
    LocalCoverage(std::io::Error),
    #[error("cannot create a folder for the local grid's state (is the temporary folder writable? set TMPDIR): {0}")]
    LocalState(std::io::Error),
    #[error("{0}; move the user's cache folder's testgrid/history.db away to start a new history")]
    History(String),
    #[error("cannot walk the workspace to send it to the grid: {problem}")]
    BundleWalk { problem: String },
    #[error("cannot read {} to send it to the grid: {source}", path.display())]
    BundleRead { path: PathBuf, source: std::io::Error },
    #[error(
        "the workspace has more than {limit} files to send to the grid: leave folders out with a .testgridignore \
         (gitignore syntax), or raise the limit with --bundle-max-files"
    )]
    BundleTooManyFiles { limit: u64 },
    #[error(
        "the workspace's files add up to more than {limit} bytes to send to the grid: leave folders out with a \
         .testgridignore (gitignore syntax), or raise the limit with --bundle-max-bytes"
    )]
    BundleTooLarge { limit: u64 },
    #[error(
        "{path} is {size} bytes, more than the {limit} bytes one file may have to be sent to the grid: leave it out \
         with a .testgridignore, or raise the limit with --bundle-max-file-size"
    )]
    BundleFileTooLarge { path: String, size: u64, limit: u64 },
    #[error("{path} cannot be sent to the grid: {problem}")]
    BundleName { path: String, problem: String },
    #[error("{} changed while it was sent to the grid: run again", path.display())]
    BundleChanged { path: PathBuf },
    #[error("the grid at {url} refused a blob of the workspace: {message}")]
    BundleRefused { url: String, message: String },
}

impl Error {
    /// The documented exit code of each error (PRODUCT.md): 2 for what the user can fix on the
    /// command line or in the project, 4 for nothing to run, 3 for the grid and this machine.
    pub fn code(&self) -> u8 {
        use Error::*;
        match self {
            NoLocalWorkers
            | LocalWithGrid
            | NoWorkerLosses
            | DetachWithCancelOnDisconnect
            | LabelsWithoutGrid
            | DetachWithoutGrid
            | CommandWithoutPlaceholder(_)
            | SetupPartsWithoutSetup
            | SetupOutputWithoutKey
            | SetupPath { .. }
            | BadSetup(_)
            | BadArtifacts { .. }
            | NeedsGrid(_)
            | BadFrameworkArgs { .. }
            | ArgsWithCommand
            | IgnoredTwice
            | TwoConfigFiles { .. }
            | ConfigRead { .. }
            | ConfigTooBig { .. }
            | ConfigSyntax { .. }
            | ConfigUnknownKey { .. }
            | ConfigBadValue { .. }
            | ConfigInvalid { .. }
            | UnknownProfile { .. }
            | CurrentDir(_)
            | Root { .. }
            | JunitDir { .. }
            | JunitDirNotWritable { .. }
            | JunitOld { .. }
            | JunitCreateDir { .. }
            | JunitWrite { .. }
            | MissingPath { .. }
            | MissingCaseFile { .. }
            | OutsideRoot { .. }
            | NotUnderRoot { .. }
            | NotUtf8 { .. }
            | BadPattern { .. }
            | BadFilter { .. }
            | FilterNeedsCases { .. }
            | BadPatterns(_)
            | PytestCannotCollect { .. }
            | PytestCollectFailed { .. }
            | PytestCollectNoAnswer { .. }
            | JsNotInstalled { .. }
            | JsCannotStart { .. }
            | JsListFailed { .. }
            | JsListedOutside { .. }
            | JsBadEntry { .. }
            | OldCargoArgs { .. }
            | CargoFlagsWithout { .. }
            | NoCargoToml { .. }
            | CargoCannotStart { .. }
            | CargoWait(_)
            | CargoBuild { .. }
            | SameSource { .. }
            | CannotList { .. }
            | ListNoAnswer { .. }
            | ListFailed { .. }
            | NoRustTarget { .. }
            | NoRustTest { .. }
            | BundleTooManyFiles { .. }
            | BundleTooLarge { .. }
            | BundleFileTooLarge { .. }
            | BundleName { .. }
            | BundleChanged { .. }
            | BadGridAddress { .. }
            | WrongScheme(_)
            | Untrusted { .. }
            | BadToken(_)
            | SecretUnset { .. }
            | Rejected { .. } => exit::USAGE,
            NoTests { .. } | NoListedTests { .. } | NothingMatchesFilter { .. } => exit::NO_TESTS,
            GridUnreachable { .. }
            | Refused { .. }
            | WorkspaceGone { .. }
            | GridFailed { .. }
            | SessionLost { .. }
            | GridLost { .. }
            | JunitBuild(_)
            | ListScratch(_)
            | Runtime(_)
            | Signals(_)
            | LocalPort(_)
            | LocalAddr(_)
            | LocalCoverage(_)
            | LocalState(_)
            | History(_)
            | BundleWalk { .. }
            | BundleRead { .. }
            | BundleRefused { .. } => exit::INFRA,
        }
    }

    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code())
    }

    /// Classify a gRPC status from the grid at `url`, answering `what` (`submit`, `watch`, ...).
    pub fn from_status(url: &str, what: &'static str, status: &tonic::Status) -> Self {
        use tonic::Code;
        let message = status.message().to_string();
        match status.code() {
            Code::InvalidArgument | Code::NotFound | Code::FailedPrecondition | Code::OutOfRange => {
                Error::Rejected { what, message }
            }
            Code::Unauthenticated | Code::PermissionDenied => Error::Refused { what, url: url.to_string(), message },
            Code::Unavailable => {
                Error::GridUnreachable { url: url.to_string(), detail: testgrid_proto::status_detail(status) }
            }
            code => Error::GridFailed { what, url: url.to_string(), code, message },
        }
    }
}

/// The message of a `--profile` that the config file does not have.
fn unknown_profile(name: &str, file: Option<&std::path::Path>, known: &[String]) -> String {
    match file {
        None => format!(
            "--profile {name}: there is no testgrid.toml (or .config/testgrid.toml) at the workspace root to hold it"
        ),
        Some(file) if known.is_empty() => {
            format!("--profile {name}: {} has no profiles; add a [profile.{name}] table", file.display())
        }
        Some(file) => format!("--profile {name}: {} has no such profile; it has: {}", file.display(), known.join(", ")),
    }
}
