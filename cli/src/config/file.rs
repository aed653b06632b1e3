//! Finding `testgrid.toml` and reading it into checked [`Level`]s: every key is one of `run`'s
//! options (or a section, or `profile`), every value has the shape its option takes and passes
//! the option's own parser, and every setting remembers its line. The first problem is the
//! error, naming the file, the line, the key and, for a key that does not exist, the nearest
//! one that does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::layer::{Kind, Schema};
use super::{At, FrameworkKey};
use crate::error::Error;

/// Where the file may be, relative to the workspace root.
pub const FILE_NAMES: [&str; 2] = ["testgrid.toml", ".config/testgrid.toml"];
/// A config file larger than this is refused before it is read.
const MAX_BYTES: u64 = 1024 * 1024;
/// The frameworks a section may be named after (`custom` is what `--command` makes).
const SECTIONS: [&str; 6] = ["shell", "pytest", "cargo", "go", "jest", "vitest"];
/// The key of a framework section that holds the framework's own arguments.
const ARGS: &str = "args";
/// The table of profiles.
const PROFILE: &str = "profile";

/// One option as the file sets it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    pub value: Given,
    pub at: At,
}

/// A value as the file gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Given {
    /// An on/off flag (`detach = true`).
    Switch(bool),
    /// An option's values (one, or several for a repeatable flag), as the flag would take them.
    Values(Vec<String>),
}

/// The top of the file, or one profile.
#[derive(Clone, Debug, Default)]
pub struct Level {
    /// By clap argument id.
    pub settings: BTreeMap<String, Setting>,
    pub sections: BTreeMap<FrameworkKey, Section>,
}

/// A framework's section: its own options and the arguments it is given.
#[derive(Clone, Debug, Default)]
pub struct Section {
    pub settings: BTreeMap<String, Setting>,
    pub args: Option<(Vec<String>, At)>,
}

/// A read and checked config file.
#[derive(Clone, Debug)]
pub struct File {
    /// As messages show it.
    pub shown: PathBuf,
    pub top: Level,
    pub profiles: BTreeMap<String, (Level, At)>,
}

/// The config file of the workspace at `root`, if it has one.
pub fn find(root: &Path) -> Result<Option<PathBuf>, Error> {
    let found: Vec<PathBuf> = FILE_NAMES.iter().map(|name| root.join(name)).filter(|p| p.is_file()).collect();
    match found.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.clone())),
        [first, second, ..] => Err(Error::TwoConfigFiles { first: first.clone(), second: second.clone() }),
    }
}

/// Read and check the file at `path` (shown in messages as `shown`).
pub fn read(path: &Path, shown: &Path, schema: &Schema) -> Result<File, Error> {
    let read_error = |source| Error::ConfigRead { path: shown.to_path_buf(), source };
    let bytes = std::fs::metadata(path).map_err(read_error)?.len();
    if bytes > MAX_BYTES {
        return Err(Error::ConfigTooBig { path: shown.to_path_buf(), bytes, limit: MAX_BYTES });
    }
    let text = std::fs::read_to_string(path).map_err(read_error)?;
    let reader = Reader { text: &text, shown, schema };
    let table = DeTable::parse(&text).map_err(|e| Error::ConfigSyntax {
        at: reader.at(e.span().map(|s| s.start).unwrap_or(0)),
        message: e.message().to_string(),
    })?;
    let mut profiles = BTreeMap::new();
    let mut top = Level::default();
    for (key, value) in table.get_ref() {
        if key.get_ref() == PROFILE {
            let DeValue::Table(named) = value.get_ref() else {
                return Err(reader.bad(
                    key,
                    "holds the profiles, as `[profile.NAME]` tables; choose one with --profile or TESTGRID_PROFILE",
                ));
            };
            for (name, profile) in named {
                let DeValue::Table(profile_table) = profile.get_ref() else {
                    return Err(reader.bad(name, "a profile is a table of settings, `[profile.NAME]`"));
                };
                let table_name = format!("[profile.{}]", clip(name.get_ref()));
                let level = reader.level(profile_table, &table_name, false)?;
                profiles.insert(name.get_ref().to_string(), (level, reader.at(name.span().start)));
            }
        } else {
            reader.level_entry(&mut top, key, value, "the top level", true)?;
        }
    }
    Ok(File { shown: shown.to_path_buf(), top, profiles })
}

struct Reader<'a> {
    text: &'a str,
    shown: &'a Path,
    schema: &'a Schema,
}

type Key<'i> = Spanned<std::borrow::Cow<'i, str>>;

impl Reader<'_> {
    fn at(&self, offset: usize) -> At {
        let before = &self.text.as_bytes()[..offset.min(self.text.len())];
        At { file: self.shown.to_path_buf(), line: 1 + before.iter().filter(|b| **b == b'\n').count() }
    }

    fn bad(&self, key: &Key, problem: impl Into<String>) -> Error {
        Error::ConfigBadValue { at: self.at(key.span().start), key: clip(key.get_ref()), problem: problem.into() }
    }

    fn unknown(&self, key: &Key, table: &str, valid: Vec<&str>) -> Error {
        Error::ConfigUnknownKey {
            at: self.at(key.span().start),
            key: clip(key.get_ref()),
            table: table.to_string(),
            suggestion: nearest(key.get_ref(), valid),
        }
    }

    /// A profile's table, or (`top`) the top level without its profiles.
    fn level(&self, table: &DeTable, name: &str, top: bool) -> Result<Level, Error> {
        let mut level = Level::default();
        for (key, value) in table {
            self.level_entry(&mut level, key, value, name, top)?;
        }
        Ok(level)
    }

    fn level_entry(
        &self,
        level: &mut Level,
        key: &Key,
        value: &Spanned<DeValue>,
        table: &str,
        top: bool,
    ) -> Result<(), Error> {
        let name = key.get_ref().as_ref();
        if let Some(framework) = SECTIONS.iter().find(|s| **s == name) {
            let DeValue::Table(section) = value.get_ref() else {
                return Err(self.bad(key, format!("holds {framework}'s settings, as a `[{framework}]` table")));
            };
            let table =
                if top { format!("[{framework}]") } else { format!("{}.{framework}]", table.trim_end_matches(']')) };
            level.sections.insert(FrameworkKey(framework), self.section(section, framework, &table)?);
            return Ok(());
        }
        let Some(option) = self.schema.key(name) else {
            if name == PROFILE {
                return Err(self.bad(key, "profiles live at the top level, as `[profile.NAME]`"));
            }
            if name == "root" {
                return Err(self.bad(
                    key,
                    "cannot be set here: the file is read from the workspace root; use --root or TESTGRID_ROOT",
                ));
            }
            let mut valid = self.schema.names();
            valid.extend(SECTIONS);
            if top {
                valid.push(PROFILE);
            }
            return Err(self.unknown(key, table, valid));
        };
        let setting = self.setting(key, value, option)?;
        level.settings.insert(option.id.clone(), setting);
        Ok(())
    }

    fn section(&self, table: &DeTable, framework: &'static str, name: &str) -> Result<Section, Error> {
        let mut section = Section::default();
        for (key, value) in table {
            let key_name = key.get_ref().as_ref();
            if key_name == ARGS {
                section.args = Some((self.args(key, value)?, self.at(key.span().start)));
                continue;
            }
            match self.schema.key(key_name) {
                Some(option) if option.framework == Some(FrameworkKey(framework)) => {
                    let setting = self.setting(key, value, option)?;
                    section.settings.insert(option.id.clone(), setting);
                }
                Some(_) => {
                    return Err(self.bad(
                        key,
                        format!("applies to every framework: set it at the top level or in a profile, not in {name}"),
                    ));
                }
                None => {
                    let mut valid = self.schema.names_of(FrameworkKey(framework));
                    valid.push(ARGS);
                    return Err(self.unknown(key, name, valid));
                }
            }
        }
        Ok(section)
    }

    /// A section's `args`: a list of strings, or one string split as a shell would.
    fn args(&self, key: &Key, value: &Spanned<DeValue>) -> Result<Vec<String>, Error> {
        const SHAPE: &str = "takes the framework's arguments, as a list of strings (`[\"-k\", \"parser\"]`)";
        match value.get_ref() {
            DeValue::String(line) => {
                shlex::split(line).ok_or_else(|| self.bad(key, format!("{SHAPE}: unbalanced quotes")))
            }
            DeValue::Array(items) => items
                .iter()
                .map(|item| match item.get_ref() {
                    DeValue::String(s) => Ok(s.to_string()),
                    _ => Err(self.bad(key, SHAPE)),
                })
                .collect(),
            _ => Err(self.bad(key, SHAPE)),
        }
    }

    /// One option's value, in the shape its flag takes, checked by the flag's own parser.
    fn setting(&self, key: &Key, value: &Spanned<DeValue>, option: &super::layer::Key) -> Result<Setting, Error> {
        let at = self.at(key.span().start);
        let given = match (option.kind, value.get_ref()) {
            (Kind::Switch, DeValue::Boolean(on)) => Given::Switch(*on),
            (Kind::Switch, _) => return Err(self.bad(key, "is on or off: `true` or `false`")),
            (Kind::One, DeValue::Array(_)) => return Err(self.bad(key, "takes one value, not a list")),
            (Kind::One, scalar) => Given::Values(vec![self.scalar(key, scalar)?]),
            (Kind::Many, DeValue::Array(items)) => {
                Given::Values(items.iter().map(|item| self.scalar(key, item.get_ref())).collect::<Result<_, _>>()?)
            }
            (Kind::Many, scalar) => Given::Values(vec![self.scalar(key, scalar)?]),
        };
        if let Given::Values(values) = &given {
            for value in values {
                self.schema.check(option, value).map_err(|problem| Error::ConfigInvalid {
                    at: at.clone(),
                    key: clip(key.get_ref()),
                    value: clip(value),
                    problem,
                })?;
            }
        }
        Ok(Setting { value: given, at })
    }

    /// A string, number or boolean as the flag's text.
    fn scalar(&self, key: &Key, value: &DeValue) -> Result<String, Error> {
        match value {
            DeValue::String(s) => Ok(s.to_string()),
            DeValue::Integer(i) => i128::from_str_radix(i.as_str(), i.radix())
                .map(|n| n.to_string())
                .map_err(|_| self.bad(key, "is not a number testgrid can read")),
            DeValue::Float(f) => Ok(f.as_str().to_string()),
            DeValue::Boolean(b) => Ok(b.to_string()),
            DeValue::Datetime(_) | DeValue::Array(_) | DeValue::Table(_) => {
                Err(self.bad(key, "takes a string or a number"))
            }
        }
    }
}

/// The valid key most like `key`, if any is close.
fn nearest(key: &str, valid: Vec<&str>) -> Option<String> {
    let key = key.replace('_', "-");
    valid
        .into_iter()
        .map(|candidate| (strsim::jaro_winkler(&key, candidate), candidate))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate.to_string())
}

/// A key or value as messages show it: its first 64 characters.
fn clip(key: &str) -> String {
    const MAX: usize = 64;
    match key.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}…", &key[..end]),
        None => key.to_string(),
    }
}
