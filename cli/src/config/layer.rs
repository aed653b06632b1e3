//! The clap side of the config file: [`Schema`] turns `run`'s arguments into the file's keys
//! (and checks a value with the argument's own parser); [`layer`] picks each option's value by
//! precedence and turns the file's into the flags they stand for.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command, ValueHint};

use super::file::{File, Given, Level, Setting};
use super::{FrameworkKey, Layers, Origin};
use crate::args;
use crate::error::Error;

/// Arguments the file cannot set: `root` decides which file is read, `profile` which part of it.
pub const NOT_IN_FILE: [&str; 2] = ["root", "profile"];

/// How an option takes its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A flag without a value: `true` or `false`.
    Switch,
    /// One value.
    One,
    /// A repeatable flag (or the paths): one value or a list.
    Many,
}

/// One option the file may set.
#[derive(Clone, Debug)]
pub struct Key {
    /// clap's id.
    pub id: String,
    /// The key: the flag's long name (`max-worker-losses`), or the positional's id (`paths`).
    pub name: String,
    pub kind: Kind,
    /// The framework whose section may hold it too (`[cargo] features = …`).
    pub framework: Option<FrameworkKey>,
    /// Its environment variable, if it has one.
    pub env: Option<String>,
    /// Whether it is a positional argument rather than a flag.
    pub positional: bool,
    /// Whether `--help` leaves it out.
    pub hidden: bool,
    /// Whether its values are files or folders: relative ones in the file start at the root.
    pub path: bool,
}

/// The options of one subcommand, as file keys.
#[derive(Clone, Debug)]
pub struct Schema {
    command: Command,
    pub keys: Vec<Key>,
}

impl Schema {
    pub fn of(command: &Command) -> Schema {
        let keys = command
            .get_arguments()
            .filter(|arg| !NOT_IN_FILE.contains(&arg.get_id().as_str()) && !arg.is_last_set())
            .filter_map(|arg| {
                let kind = match arg.get_action() {
                    ArgAction::SetTrue => Kind::Switch,
                    ArgAction::Set => Kind::One,
                    ArgAction::Append => Kind::Many,
                    _ => return None,
                };
                let id = arg.get_id().as_str().to_string();
                let positional = arg.is_positional();
                let name = match arg.get_long() {
                    Some(long) => long.to_string(),
                    None if positional => id.clone(),
                    None => return None,
                };
                let framework = arg.get_help_heading().and_then(args::heading_framework).map(FrameworkKey::of);
                let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
                let path =
                    matches!(arg.get_value_hint(), ValueHint::AnyPath | ValueHint::FilePath | ValueHint::DirPath);
                Some(Key { id, name, kind, framework, env, positional, hidden: arg.is_hide_set(), path })
            })
            .collect();
        Schema { command: command.clone(), keys }
    }

    /// The option a key names; `_` may stand for `-`.
    pub fn key(&self, name: &str) -> Option<&Key> {
        let name = name.replace('_', "-");
        self.keys.iter().find(|k| k.name == name)
    }

    /// Every key.
    pub fn names(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.name.as_str()).collect()
    }

    /// The keys a framework's section may hold.
    pub fn names_of(&self, framework: FrameworkKey) -> Vec<&str> {
        self.keys.iter().filter(|k| k.framework == Some(framework)).map(|k| k.name.as_str()).collect()
    }

    /// Whether `value` is one the option takes, by its own parser: the problem if not.
    pub fn check(&self, key: &Key, value: &str) -> Result<(), String> {
        let token = if key.positional { value.to_string() } else { format!("--{}={value}", key.name) };
        let parsed = self.command.clone().no_binary_name(true).try_get_matches_from([token]);
        parsed.map(drop).map_err(|e| problem(&e))
    }
}

/// What is wrong with a value, from clap's error about it (without its usage lines).
fn problem(error: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    if let Some(source) = std::error::Error::source(error) {
        return source.to_string();
    }
    if let Some(ContextValue::Strings(valid)) = error.get(ContextKind::ValidValue) {
        return format!("the possible values are {}", valid.join(", "));
    }
    let rendered = error.render().to_string();
    let first = rendered.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}

/// Pick every option's value by precedence: the flags that the file's values stand for (to go
/// before the command line's own), and where each option came from.
pub fn layer(
    schema: &Schema,
    matches: &ArgMatches,
    file: Option<&File>,
    root: &Path,
) -> Result<(Vec<OsString>, Layers), Error> {
    // An empty TESTGRID_PROFILE (or `--profile ''`) chooses none, as an empty TESTGRID_GRID does.
    let profile = matches.get_one::<String>("profile").filter(|name| !name.trim().is_empty()).map(|name| {
        let origin = match matches.value_source("profile") {
            Some(ValueSource::EnvVariable) => Origin::Env("TESTGRID_PROFILE".into()),
            _ => Origin::Flag,
        };
        (name.clone(), origin)
    });
    let chosen: Option<(&str, &Level)> = match &profile {
        None => None,
        Some((name, _)) => match file.and_then(|f| f.profiles.get(name)) {
            Some((level, _)) => Some((name.as_str(), level)),
            None => {
                return Err(Error::UnknownProfile {
                    name: name.chars().take(64).collect(),
                    file: file.map(|f| f.shown.clone()),
                    known: file.map(|f| f.profiles.keys().cloned().collect()).unwrap_or_default(),
                });
            }
        },
    };
    let mut flags = Vec::new();
    let mut positionals = Vec::new();
    let mut origins = BTreeMap::new();
    for key in &schema.keys {
        let origin = match matches.value_source(&key.id) {
            Some(ValueSource::CommandLine) => Origin::Flag,
            Some(ValueSource::EnvVariable) => Origin::Env(key.env.clone().unwrap_or_default()),
            source => match pick(key, chosen, file) {
                Some((setting, profile)) => {
                    let into = if key.positional { &mut positionals } else { &mut flags };
                    into.extend(tokens(key, &setting.value, root));
                    Origin::File { profile: profile.map(str::to_string), at: setting.at.clone() }
                }
                None if source == Some(ValueSource::DefaultValue) => Origin::Default,
                None => Origin::Unset,
            },
        };
        origins.insert(key.id.clone(), origin);
    }
    let mut framework_args = BTreeMap::new();
    let levels = [chosen.map(|(name, level)| (Some(name), level)), file.map(|f| (None, &f.top))];
    for (profile, level) in levels.into_iter().flatten().rev() {
        for (framework, section) in &level.sections {
            if let Some((args, at)) = &section.args {
                let origin = Origin::File { profile: profile.map(str::to_string), at: at.clone() };
                framework_args.insert(*framework, (args.clone(), origin));
            }
        }
    }
    flags.extend(positionals);
    let layers = Layers { file: file.map(|f| f.shown.clone()), profile, origins, framework_args, resolved: Vec::new() };
    Ok((flags, layers))
}

/// The file's setting for `key` that wins, and the profile it is in: the profile's framework
/// section, the profile, the file's framework section, the file's top level.
fn pick<'f>(
    key: &Key,
    profile: Option<(&'f str, &'f Level)>,
    file: Option<&'f File>,
) -> Option<(&'f Setting, Option<&'f str>)> {
    let in_level = |level: &'f Level| {
        let section = key.framework.and_then(|f| level.sections.get(&f)).and_then(|s| s.settings.get(&key.id));
        section.or_else(|| level.settings.get(&key.id))
    };
    if let Some((name, level)) = profile
        && let Some(setting) = in_level(level)
    {
        return Some((setting, Some(name)));
    }
    file.and_then(|f| in_level(&f.top)).map(|setting| (setting, None))
}

/// The command-line tokens a setting stands for; a relative path in the file starts at `root`
/// (where the file is), not where testgrid runs.
fn tokens(key: &Key, value: &Given, root: &Path) -> Vec<OsString> {
    let value_of = |v: &String| -> OsString {
        if key.path && Path::new(v).is_relative() { root.join(v).into_os_string() } else { v.into() }
    };
    match value {
        Given::Switch(true) => vec![format!("--{}", key.name).into()],
        Given::Switch(false) => Vec::new(),
        Given::Values(values) if key.positional => values.iter().map(value_of).collect(),
        Given::Values(values) => values
            .iter()
            .map(|v| {
                let mut token = OsString::from(format!("--{}=", key.name));
                token.push(value_of(v));
                token
            })
            .collect(),
    }
}
