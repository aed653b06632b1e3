//! What `testgrid run` was asked to do, resolved and checked before anything is searched or
//! started: the workspace root, where the session runs (a grid or a local one), and every flag
//! that does not go with another, each refused with its own [`Error`]. Nothing here touches the
//! grid or the tests.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args as _;

use crate::args::{CargoArgs, FrameworkChoice, Isolation, OutputArgs, RunArgs};
use crate::config::{self, Layers};
use crate::error::Error;
use crate::report;

/// Where a session runs.
#[derive(Clone, Debug)]
pub enum Place {
    /// A coordinator at this address.
    Grid(String),
    /// An embedded grid of `workers` one-slot workers.
    Local(LocalGrid),
}

/// How the embedded grid of local mode runs.
#[derive(Clone, Debug)]
pub struct LocalGrid {
    /// How many tests run at once: the slots of the embedded worker.
    pub slots: u32,
    pub recycle: testgrid_worker::Recycle,
    /// The workers' own Python and Node (a session's `--python` wins).
    pub python: String,
    pub node: String,
}

/// A checked `testgrid run`.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The workspace root (absolute): test paths are relative to it.
    pub root: PathBuf,
    /// The current folder (absolute), where relative paths on the command line start.
    pub cwd: PathBuf,
    /// Files, folders or `FILE::CASE`s to search, as given.
    pub paths: Vec<PathBuf>,
    pub framework: FrameworkChoice,
    /// `--pattern`s; empty: the framework's own.
    pub patterns: Vec<String>,
    /// `--filter`s and `--exclude`s: globs over test ids.
    pub filters: Vec<String>,
    pub excludes: Vec<String>,
    /// `--command`: a template with `{}` (checked).
    pub command: Option<String>,
    pub python: Option<String>,
    /// The Python of this machine's workers (`TESTGRID_PYTHON`), for discovery's own pytest runs
    /// when `--python` is not given.
    pub worker_python: String,
    /// The Node of this machine's workers (`TESTGRID_NODE`), which asks vitest or jest for their
    /// test files.
    pub worker_node: String,
    pub isolation: Isolation,
    /// `--env`, for the tests and for discovery's own runs of the framework.
    pub env: BTreeMap<String, String>,
    /// `--secret`: names of `env` variables whose values workers mask.
    pub secrets: Vec<String>,
    pub place: Place,
    /// `--label`s, as given.
    pub labels: Vec<(String, String)>,
    pub timeout: Duration,
    pub session_timeout: Option<Duration>,
    pub retries: u32,
    pub max_worker_losses: Option<u32>,
    pub cancel_on_disconnect: bool,
    /// `--order given`: keep the order tests were found or named in.
    pub keep_order: bool,
    /// `--max-fail`, 0 for none.
    pub max_fail: u32,
    pub last_failed: bool,
    /// `--priority` (1 by default) and `--max-slots` (0: none).
    pub priority: u32,
    pub max_slots: u32,
    pub speculate: bool,
    pub detach: bool,
    /// Send the workspace to a grid (not `--no-upload`, not local mode).
    pub upload: bool,
    pub bundle_limits: crate::bundle::Limits,
    /// `--setup` with its key files and outputs, relative to the workspace root; its folder is
    /// the session's project folder, known once the tests are found.
    pub setup: Option<testgrid_proto::setup::Setup>,
    /// The project key sessions carry (`--project`, else derived from the root).
    pub project: String,
    /// `--artifacts` (checked globs) and `--artifacts-max-size`.
    pub artifacts: Vec<String>,
    pub artifacts_max_size: u64,
    /// Rust tests: what `cargo test` builds (`--features`, `-p`, ...).
    pub cargo: CargoArgs,
    /// Whether a Rust option was given as a flag or in the environment (not only in
    /// testgrid.toml, where it waits for a Rust session): a session of another framework refuses
    /// it.
    pub cargo_asked: bool,
    /// The arguments after `--`, for the framework.
    pub framework_args: Vec<String>,
    /// Where each setting came from, and testgrid.toml's arguments for each framework.
    pub layers: Layers,
    pub output: OutputArgs,
}

impl Settings {
    /// The arguments `framework` is given on every worker: its testgrid.toml section's `args`,
    /// then the command line's after `--` (which win where the framework takes the last of a
    /// repeated option).
    pub fn args_for(&self, framework: testgrid_proto::frameworks::Framework) -> Vec<String> {
        let mut args = self.layers.args_for(framework).to_vec();
        args.extend(self.framework_args.iter().cloned());
        args
    }
}

/// This user's testgrid cache folder: `$XDG_CACHE_HOME/testgrid`, else `~/.cache/testgrid`.
pub fn user_cache() -> Option<PathBuf> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".cache")))?;
    Some(cache.join("testgrid"))
}

/// The grid address, treating an empty one (`TESTGRID_GRID=`) as unset.
pub fn grid_of(grid: Option<&str>) -> Option<String> {
    grid.map(|g| g.trim().to_string()).filter(|g| !g.is_empty())
}

/// The grid address of a command that needs one (`what`: the command's name).
pub fn need_grid(grid: Option<&str>, what: &'static str) -> Result<String, Error> {
    grid_of(grid).ok_or(Error::NeedsGrid(what))
}

/// Check `run`'s flags and resolve its places, in the order a user fixes them: root, flags that
/// do not go together, the JUnit report's folder.
pub fn resolve(args: RunArgs, layers: Layers) -> Result<Settings, Error> {
    let grid = grid_of(args.grid.as_deref());
    let cwd = std::env::current_dir().map_err(Error::CurrentDir)?;
    let cwd = cwd.canonicalize().unwrap_or(cwd);
    let root = match &args.root {
        Some(root) => root.canonicalize().map_err(|source| Error::Root { path: root.clone(), source })?,
        None => config::default_root(&cwd),
    };
    if args.local == Some(0) {
        return Err(Error::NoLocalWorkers);
    }
    if grid.is_some() && args.local.is_some() {
        return Err(Error::LocalWithGrid);
    }
    if args.max_worker_losses == Some(0) {
        return Err(Error::NoWorkerLosses);
    }
    if args.detach && args.cancel_on_disconnect {
        return Err(Error::DetachWithCancelOnDisconnect);
    }
    if grid.is_none() && !args.labels.is_empty() {
        return Err(Error::LabelsWithoutGrid);
    }
    if args.detach && grid.is_none() {
        return Err(Error::DetachWithoutGrid);
    }
    if let Some(command) = &args.command
        && !command.contains("{}")
    {
        return Err(Error::CommandWithoutPlaceholder(command.clone()));
    }
    if let Some(path) = &args.output.junit {
        report::check_writable(path)?;
    }
    let setup = setup_of(&args, &cwd, &root)?;
    for glob in &args.artifacts {
        globset::GlobBuilder::new(glob)
            .literal_separator(true)
            .build()
            .map_err(|source| Error::BadArtifacts { glob: glob.clone(), source })?;
    }
    let project = match args.project.as_deref().map(str::trim).filter(|p| !p.is_empty()) {
        Some(project) => bounded_project(project),
        None => project_of(&root),
    };
    let place = match grid {
        Some(url) => Place::Grid(url),
        None => Place::Local(LocalGrid {
            slots: args.local.unwrap_or_else(testgrid_worker::default_slots),
            recycle: testgrid_worker::Recycle::new(args.recycle_after_files, args.recycle_rss_mib),
            python: args.worker_python.clone(),
            node: args.worker_node.clone(),
        }),
    };
    let cargo_ids = CargoArgs::augment_args(clap::Command::new("cargo"));
    let cargo_asked = args.cargo.any()
        && cargo_ids.get_arguments().any(|arg| layers.origins.get(arg.get_id().as_str()).is_none_or(|o| o.is_direct()));
    Ok(Settings {
        root,
        cwd,
        paths: args.paths,
        framework: args.framework,
        patterns: args.patterns,
        filters: args.filters,
        excludes: args.excludes,
        command: args.command,
        python: args.python,
        worker_python: args.worker_python,
        worker_node: args.worker_node,
        isolation: args.isolation,
        env: {
            let mut env: BTreeMap<String, String> = args.env.into_iter().collect();
            for name in &args.secrets {
                let value = std::env::var(name).map_err(|_| Error::SecretUnset { name: name.clone() })?;
                env.insert(name.clone(), value);
            }
            env
        },
        secrets: args.secrets,
        place,
        labels: args.labels,
        timeout: args.timeout,
        session_timeout: args.session_timeout,
        retries: args.retries,
        max_worker_losses: args.max_worker_losses,
        cancel_on_disconnect: args.cancel_on_disconnect,
        keep_order: args.order == crate::args::Order::Given,
        max_fail: args.max_fail.unwrap_or(0),
        last_failed: args.last_failed,
        priority: args.priority,
        max_slots: args.max_slots.unwrap_or(0),
        speculate: args.speculate,
        detach: args.detach,
        upload: !args.no_upload,
        setup,
        project,
        artifacts: args.artifacts,
        artifacts_max_size: args.artifacts_max_size,
        bundle_limits: crate::bundle::Limits {
            max_files: args.bundle_max_files,
            max_bytes: args.bundle_max_bytes,
            max_file_bytes: args.bundle_max_file_size,
        },
        cargo: args.cargo,
        cargo_asked,
        framework_args: args.framework_args,
        layers,
        output: args.output,
    })
}

/// `--setup` and its parts, checked: key files that exist, outputs that are folders of the
/// workspace (or will be), every path relative to the root.
fn setup_of(
    args: &RunArgs,
    cwd: &std::path::Path,
    root: &std::path::Path,
) -> Result<Option<testgrid_proto::setup::Setup>, Error> {
    let Some(command) = args.setup.as_ref().filter(|c| !c.trim().is_empty()) else {
        if !args.setup_keys.is_empty() || !args.setup_outputs.is_empty() {
            return Err(Error::SetupPartsWithoutSetup);
        }
        return Ok(None);
    };
    if !args.setup_outputs.is_empty() && args.setup_keys.is_empty() {
        return Err(Error::SetupOutputWithoutKey);
    }
    let inside = |flag: &'static str, path: &PathBuf| -> Result<String, Error> {
        let bad = |problem: String| Error::SetupPath { flag, path: path.clone(), problem };
        let absolute = cwd.join(path);
        // The folder above may not exist yet for an output; a key file must.
        let resolved = match absolute.canonicalize() {
            Ok(resolved) => resolved,
            Err(_) if flag == "setup-output" => {
                match (absolute.parent().map(|p| p.canonicalize()), absolute.file_name()) {
                    (Some(Ok(parent)), Some(name)) => parent.join(name),
                    _ => return Err(bad("its folder does not exist".into())),
                }
            }
            Err(e) => return Err(bad(format!("{e}; name a file of the workspace"))),
        };
        let relative = resolved
            .strip_prefix(root)
            .map_err(|_| bad(format!("it is outside the workspace root {}", root.display())))?;
        if relative.as_os_str().is_empty() {
            return Err(bad("it is the workspace root itself; name a folder inside it".into()));
        }
        let relative = relative.to_str().ok_or_else(|| bad("it is not valid UTF-8".into()))?;
        if flag == "setup-key" && !resolved.is_file() {
            return Err(bad("not a file; a key is a file whose contents decide what the setup makes".into()));
        }
        Ok(relative.to_string())
    };
    let key_files = args.setup_keys.iter().map(|p| inside("setup-key", p)).collect::<Result<Vec<_>, _>>()?;
    let outputs = args.setup_outputs.iter().map(|p| inside("setup-output", p)).collect::<Result<Vec<_>, _>>()?;
    let setup = testgrid_proto::setup::Setup {
        command: command.clone(),
        dir: String::new(),
        key_files,
        outputs,
        timeout_ms: args.setup_timeout.as_millis().min(u128::from(u64::MAX)) as u64,
    };
    // The same checks the grid makes, so that a bad one is refused here with its flag's name.
    testgrid_proto::setup::Setup::try_from(&testgrid_proto::Setup::from(&setup)).map_err(Error::BadSetup)?;
    Ok(Some(setup))
}

/// The project key of the workspace at `root`: its git remote `origin` without credentials
/// (`github.com/org/repo`), else the root folder's name.
fn project_of(root: &std::path::Path) -> String {
    let remote = std::fs::read_to_string(root.join(".git").join("config")).ok().and_then(|c| origin_url(&c));
    match remote {
        Some(url) => bounded_project(&remote_key(&url)),
        None => bounded_project(&root.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()),
    }
}

/// `[remote "origin"] url = …` of a git config file.
fn origin_url(config: &str) -> Option<String> {
    let mut in_origin = false;
    for line in config.lines().take(10_000) {
        let line = line.trim();
        if line.starts_with('[') {
            in_origin = line.replace(' ', "") == "[remote\"origin\"]";
        } else if in_origin
            && let Some((key, value)) = line.split_once('=')
            && key.trim() == "url"
        {
            return Some(value.trim().to_string());
        }
    }
    None
}

/// A remote URL as a key: no scheme, no user or password, no `.git` (the same repository by
/// https and by ssh gives the same key).
fn remote_key(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    // `user:token@host/...` or `git@host:org/repo`: what is before the `@` is a credential.
    let rest = match rest.split_once('/') {
        Some((authority, _)) if authority.contains('@') => rest.rsplit_once('@').map_or(rest, |(_, r)| r),
        _ => rest.rsplit_once('@').filter(|(user, _)| !user.contains('/')).map_or(rest, |(_, r)| r),
    };
    let rest = rest.replacen(':', "/", usize::from(!url.contains("://")));
    rest.trim_end_matches('/').trim_end_matches(".git").to_string()
}

/// A project key the grid takes: at most 256 bytes, no control characters.
fn bounded_project(text: &str) -> String {
    let mut key = String::new();
    for c in text.chars().filter(|c| !c.is_control()) {
        if key.len() + c.len_utf8() > 256 {
            break;
        }
        key.push(c);
    }
    key
}

#[cfg(test)]
mod project_tests {
    use super::*;

    #[test]
    fn a_remote_becomes_a_key_without_credentials() {
        for (url, key) in [
            ("https://github.com/org/repo.git", "github.com/org/repo"),
            ("https://alice:s3cret@github.com/org/repo", "github.com/org/repo"),
            ("git@github.com:org/repo.git", "github.com/org/repo"),
            ("ssh://git@host:22/org/repo/", "host:22/org/repo"),
            ("/srv/git/repo.git", "/srv/git/repo"),
        ] {
            assert_eq!(remote_key(url), key, "{url}");
        }
        let config =
            "[core]\n\tbare = false\n[remote \"upstream\"]\n\turl = x\n[remote \"origin\"]\n\turl = git@h:o/r.git\n";
        assert_eq!(origin_url(config).as_deref(), Some("git@h:o/r.git"));
        assert_eq!(bounded_project(&"é".repeat(200)).len(), 256);
        assert_eq!(bounded_project("a\u{1b}[31mb"), "a[31mb");
    }
}
