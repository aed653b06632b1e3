//! `testgrid list`: discover the tests as `run` would (the same paths, framework, config file,
//! `--filter`s and arguments after `--`) and print each unit with a command that runs it alone
//! the framework's own way, and pytest's cases under each file. Nothing runs on a grid; exit 4
//! when nothing matches, as `run`.

use testgrid_proto::frameworks::{Framework, Options, Runner, expand_command, shell_quote};

use crate::args::RunArgs;
use crate::config::Layers;
use crate::discover::{self, Discovered};
use crate::error::{Error, exit};
use crate::settings::{self, Settings};

pub fn list(args: RunArgs, layers: Layers) -> Result<u8, Error> {
    let settings = settings::resolve(args, layers)?;
    let found = discover::discover(&settings)?;
    let cases = if found.framework == Framework::Pytest && settings.command.is_none() {
        discover::pytest_cases(&settings, &found.tests)?
    } else {
        found.tests.iter().map(|t| (t.clone(), Vec::new())).collect()
    };
    let rows: Vec<(&str, String, &[String])> = cases
        .iter()
        .map(|(unit, cases)| (unit.as_str(), command_of(&settings, &found, unit), cases.as_slice()))
        .collect();
    if settings.output.json {
        for (unit, command, cases) in &rows {
            let mut line =
                serde_json::json!({ "test": unit, "framework": found.runner.framework.name(), "command": command });
            if found.framework == Framework::Pytest {
                line["cases"] = serde_json::json!(cases);
            }
            out!("{line}");
        }
    } else {
        let width = rows.iter().map(|(unit, ..)| unit.chars().count()).max().unwrap_or(0).min(60);
        for (unit, command, cases) in &rows {
            out!("{:width$}  {command}", crate::report::display_path(unit));
            for case in cases.iter() {
                out!("    {}", crate::report::display_path(case));
            }
        }
        let total_cases: usize = rows.iter().map(|(_, _, cases)| cases.len()).sum();
        let cases = if total_cases > 0 { format!(", {total_cases} cases") } else { String::new() };
        let plural = if rows.len() == 1 { "" } else { "s" };
        err!("testgrid: {} {} test{plural}{cases}", rows.len(), found.framework.name());
    }
    Ok(exit::PASSED)
}

/// A command that runs `unit` alone, from the workspace root, the way its framework runs alone.
fn command_of(settings: &Settings, found: &Discovered, unit: &str) -> String {
    let runner = &found.runner;
    let args = join(&runner.args);
    let with_args = |command: String| if args.is_empty() { command } else { format!("{command} {args}") };
    let dir = runner.project_dir();
    let in_dir = |command: String| if dir == "." { command } else { format!("cd {} && {command}", shell_quote(dir)) };
    match &runner.options {
        Options::Command { template } => with_args(expand_command(template, unit)),
        Options::Pytest { python, .. } => {
            let python = python.as_deref().unwrap_or(&settings.worker_python);
            let unit = relative_to(dir, unit);
            in_dir(with_args(format!("{} -m pytest {}", shell_quote(python), shell_quote(&unit))))
        }
        Options::Cargo { cargo_args, run_ignored, .. } => {
            let name = unit.split_once("::").map_or(unit, |(_, name)| name);
            let mut command = format!("cargo test {}", join(cargo_args)).trim_end().to_string();
            command.push_str(&format!(" -- --exact {}", shell_quote(name)));
            if *run_ignored {
                command.push_str(" --include-ignored");
            }
            in_dir(with_args(command))
        }
        Options::Go => {
            let (pkg, case) = match unit.split_once("::") {
                Some((pkg, case)) => (pkg, Some(case)),
                None => (unit, None),
            };
            let mut command = format!("go test ./{}", pkg.trim_start_matches("./"));
            if !args.is_empty() {
                command.push_str(&format!(" {args}"));
            }
            if let Some(case) = case {
                command.push_str(&format!(" -run {}", shell_quote(&format!("^{case}$"))));
            }
            command
        }
        Options::Js { .. } => in_dir(with_args(js_command(runner, dir, unit))),
    }
}

/// `npx vitest run FILE` / `npx jest FILE` from the project's folder, with the case as a name
/// pattern.
fn js_command(runner: &Runner, dir: &str, unit: &str) -> String {
    let (project, rest) = testgrid_proto::js::split_project(unit);
    let (file, case) = match rest.split_once("::") {
        Some((file, case)) => (file, Some(case)),
        None => (rest, None),
    };
    let file = relative_to(dir, file);
    let mut command = match runner.framework {
        Framework::Vitest => format!("npx vitest run {}", shell_quote(&file)),
        _ => format!("npx jest {}", shell_quote(&file)),
    };
    let project = project.trim().trim_matches('|');
    if !project.is_empty() {
        command.push_str(&format!(" --project {}", shell_quote(project)));
    }
    if let Some(case) = case {
        command.push_str(&format!(" -t {}", shell_quote(&format!("^{}$", case.replace(" > ", " ")))));
    }
    command
}

/// A unit's path from the project's folder, where its framework runs.
fn relative_to(dir: &str, path: &str) -> String {
    match dir {
        "." | "" => path.to_string(),
        dir => path.strip_prefix(&format!("{}/", dir.trim_end_matches('/'))).unwrap_or(path).to_string(),
    }
}

fn join(args: &[String]) -> String {
    args.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" ")
}
