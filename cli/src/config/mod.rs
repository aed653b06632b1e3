//! `testgrid.toml`: every `testgrid run` option set in a file, under the flag's own name, with
//! per-framework sections and named profiles, layered under the command line.
//!
//! Precedence, lowest first: built-in defaults < the file's top level < its framework sections
//! (`[cargo]`) < the selected profile (`[profile.NAME]`) < the profile's framework sections
//! (`[profile.NAME.cargo]`) < environment variables < flags.
//!
//! Nothing here knows a single option: the keys are `run`'s clap arguments (their long names),
//! a value is checked by the argument's own value parser, and a layered value reaches `run` as
//! the flag it stands for, inserted before the command line's own (which clap then reads as
//! usual). An option added to `RunArgs` is a key of the file without a line here.
//!
//! - [`file`]: finding the file, reading it into checked levels (keys, values, lines).
//! - [`layer`]: choosing each option's value by precedence and remembering where it came from.

mod file;
mod layer;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use clap::{CommandFactory, FromArgMatches};
use testgrid_proto::frameworks::Framework;

use crate::args::Cli;
use crate::error::Error;

pub use file::{FILE_NAMES, find};

/// The command line, with `testgrid.toml` layered under it.
#[derive(Debug)]
pub struct Invocation {
    pub cli: Cli,
    /// Where `run`'s (or `config`'s) settings came from; empty for other commands.
    pub layers: Layers,
}

/// Why the command line could not be read.
#[derive(Debug)]
pub enum ParseError {
    /// clap's own (help and version too), printed as clap prints it.
    Clap(clap::Error),
    /// `testgrid.toml` or `--profile`.
    Config(Error),
}

impl From<clap::Error> for ParseError {
    fn from(e: clap::Error) -> Self {
        ParseError::Clap(e)
    }
}

impl From<Error> for ParseError {
    fn from(e: Error) -> Self {
        ParseError::Config(e)
    }
}

/// A line of the config file, for messages: `testgrid.toml:12`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct At {
    pub file: PathBuf,
    pub line: usize,
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// Where a setting's value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The command line.
    Flag,
    /// This environment variable.
    Env(String),
    /// The config file, in the selected profile when `profile` is set.
    File { profile: Option<String>, at: At },
    /// Built in.
    Default,
    /// Nowhere: the option is off.
    Unset,
}

impl Origin {
    /// Whether the user asked for it in this invocation (a flag or the environment), rather than
    /// a project's file or a default.
    pub fn is_direct(&self) -> bool {
        matches!(self, Origin::Flag | Origin::Env(_))
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag => f.write_str("command line"),
            Origin::Env(name) => write!(f, "env {name}"),
            Origin::File { profile: Some(profile), at } => write!(f, "profile {profile}, {at}"),
            Origin::File { profile: None, at } => write!(f, "{at}"),
            Origin::Default => f.write_str("default"),
            Origin::Unset => f.write_str("unset"),
        }
    }
}

/// What the layering decided, for `run` and `testgrid config`.
#[derive(Clone, Debug, Default)]
pub struct Layers {
    /// The config file read, if any.
    pub file: Option<PathBuf>,
    /// The selected profile and where that choice came from.
    pub profile: Option<(String, Origin)>,
    /// Each option's origin, by clap argument id.
    pub origins: BTreeMap<String, Origin>,
    /// Each framework section's `args`, which go to that framework before the command line's
    /// arguments after `--`.
    pub framework_args: BTreeMap<FrameworkKey, (Vec<String>, Origin)>,
    /// Every option's final value, in `run`'s order, for `testgrid config`.
    pub resolved: Vec<Resolved>,
}

/// One option as the layering left it.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// Its key in the file.
    pub name: String,
    /// Whether it is an on/off flag (its one value `true` or `false`).
    pub switch: bool,
    /// Whether it takes several values.
    pub many: bool,
    /// Whether `--help` leaves it out.
    pub hidden: bool,
    /// Its values as the flag takes them (none: unset).
    pub values: Vec<String>,
    pub origin: Origin,
}

/// A framework as a section name of the file (`[pytest]`), ordered by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FrameworkKey(&'static str);

impl FrameworkKey {
    pub fn of(framework: Framework) -> Self {
        FrameworkKey(framework.name())
    }

    pub fn name(self) -> &'static str {
        self.0
    }
}

impl Layers {
    /// Where the option with this clap id came from (`Unset` when it is not one of `run`'s).
    pub fn origin(&self, id: &str) -> Origin {
        self.origins.get(id).cloned().unwrap_or(Origin::Unset)
    }

    /// The file's arguments for `framework` (its section's `args`), empty when it has none.
    pub fn args_for(&self, framework: Framework) -> &[String] {
        self.framework_args.get(&FrameworkKey::of(framework)).map(|(args, _)| args.as_slice()).unwrap_or_default()
    }
}

/// The subcommands whose options the file sets.
const LAYERED: [&str; 4] = ["run", "list", "plan", "config"];

/// Parse the command line; for `run`, `list`, `plan` and `config`, layer the workspace's `testgrid.toml` under it.
pub fn parse(argv: Vec<OsString>) -> Result<Invocation, ParseError> {
    let command = Cli::command();
    let matches = command.clone().try_get_matches_from(&argv)?;
    // No global options: the subcommand's name is the first argument after the program's.
    let layered = matches
        .subcommand()
        .filter(|(name, _)| LAYERED.contains(name))
        .and_then(|(name, sub)| argv.iter().skip(1).position(|a| a == name).map(|i| (name, sub, i + 1)));
    let Some((name, sub, at)) = layered else {
        return Ok(Invocation { cli: Cli::from_arg_matches(&matches)?, layers: Layers::default() });
    };
    let cwd = std::env::current_dir().map_err(Error::CurrentDir)?;
    let root = match sub.get_one::<PathBuf>("root") {
        Some(root) => root.canonicalize().map_err(|source| Error::Root { path: root.clone(), source })?,
        None => default_root(&cwd.canonicalize().unwrap_or(cwd.clone())),
    };
    let subcommand = command.find_subcommand(name).expect("clap matched this subcommand, so the command has it");
    let schema = layer::Schema::of(subcommand);
    let file = match find(&root)? {
        Some(path) => Some(file::read(&path, &display_path(&path, &cwd), &schema)?),
        None => None,
    };
    let (tokens, mut layers) = layer::layer(&schema, sub, file.as_ref(), &root)?;
    let mut argv = argv;
    argv.splice(at + 1..at + 1, tokens);
    let matches = command.try_get_matches_from(&argv)?;
    if let Some((_, sub)) = matches.subcommand() {
        layers.resolved = schema
            .keys
            .iter()
            .map(|key| Resolved {
                name: key.name.clone(),
                switch: key.kind == layer::Kind::Switch,
                many: key.kind == layer::Kind::Many,
                hidden: key.hidden,
                values: sub
                    .get_raw(&key.id)
                    .map(|values| values.map(|v| v.to_string_lossy().into_owned()).collect())
                    .unwrap_or_default(),
                origin: layers.origin(&key.id),
            })
            .collect();
    }
    Ok(Invocation { cli: Cli::from_arg_matches(&matches)?, layers })
}

/// The workspace root when `--root` is not given: the enclosing git checkout, else the nearest
/// folder holding a `testgrid.toml`, else `dir`.
pub fn default_root(dir: &Path) -> PathBuf {
    let marked = |d: &&Path| d.join(".git").exists();
    let configured = |d: &&Path| FILE_NAMES.iter().any(|name| d.join(name).is_file());
    dir.ancestors().find(marked).or_else(|| dir.ancestors().find(configured)).unwrap_or(dir).to_path_buf()
}

/// `path` as messages show it: relative to the current folder when it lies under it.
fn display_path(path: &Path, cwd: &Path) -> PathBuf {
    let cwd = cwd.canonicalize().unwrap_or(cwd.to_path_buf());
    path.strip_prefix(&cwd).map(Path::to_path_buf).unwrap_or_else(|_| path.to_path_buf())
}
