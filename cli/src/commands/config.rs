//! `testgrid config`: `run`'s settings as the command line, the environment and testgrid.toml
//! make them here, each with where it came from, in the file's own syntax (so that a line can be
//! copied into the file).

use crate::args::RunArgs;
use crate::config::{Layers, Origin, Resolved};
use crate::error::Error;

pub fn config(args: RunArgs, layers: &Layers) -> Result<u8, Error> {
    let order = "built-in < testgrid.toml < its [FRAMEWORK] < [profile.NAME] < environment < command line";
    out!("# `testgrid run` here, from {order}");
    match &layers.file {
        Some(file) => out!("# config file: {}", file.display()),
        None => out!("# config file: none (testgrid.toml or .config/testgrid.toml at the workspace root)"),
    }
    if let Some((name, origin)) = &layers.profile {
        out!("# profile: {name} ({origin})");
    }
    // Hidden options (local workers' tuning) only when something sets them.
    let shown = |r: &&Resolved| !r.hidden || r.origin != Origin::Default;
    let set: Vec<&Resolved> = layers.resolved.iter().filter(|r| !r.values.is_empty()).filter(shown).collect();
    let lines: Vec<(String, String)> =
        set.iter().map(|r| (format!("{} = {}", r.name, toml_value(r)), r.origin.to_string())).collect();
    let width = lines.iter().map(|(line, _)| line.chars().count()).max().unwrap_or(0);
    for (line, origin) in &lines {
        out!("{line:width$}  # {origin}");
    }
    let unset: Vec<&str> = layers.resolved.iter().filter(|r| r.values.is_empty()).map(|r| r.name.as_str()).collect();
    if !unset.is_empty() {
        out!("# unset: {}", unset.join(", "));
    }
    for (framework, (file_args, origin)) in &layers.framework_args {
        out!("[{}]", framework.name());
        out!("args = {}  # {origin}", toml_list(file_args));
    }
    if !args.framework_args.is_empty() {
        out!("# after --, for the framework: {}", toml_list(&args.framework_args));
    }
    Ok(crate::error::exit::PASSED)
}

/// A setting's value as the file would hold it.
fn toml_value(resolved: &Resolved) -> String {
    if resolved.many {
        return toml_list(&resolved.values);
    }
    let value = resolved.values.first().map(String::as_str).unwrap_or_default();
    let bare = resolved.switch || (!value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) && value.len() < 19);
    if bare { value.to_string() } else { toml::Value::String(value.to_string()).to_string() }
}

fn toml_list(values: &[String]) -> String {
    toml::Value::Array(values.iter().cloned().map(toml::Value::String).collect()).to_string()
}
