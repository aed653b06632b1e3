//! The typed form of a session's [`Runner`](crate::v1::Runner): which framework runs its tests,
//! how they are kept apart, and the framework's own options. Validated once where a message
//! arrives ([`Runner::try_from`]), so that neither the coordinator's core nor a worker's
//! executors ever see a bare string or a path that escapes the workspace.

use std::path::{Component, Path};

use serde::{Deserialize, Serialize};

use crate::v1 as pb;

/// The frameworks testgrid runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Framework {
    Shell,
    Custom,
    Pytest,
    Cargo,
    Go,
    Jest,
    Vitest,
}

impl Framework {
    /// Its name in flags, logs and output: `shell`, `custom`, `pytest`, ...
    pub fn name(self) -> &'static str {
        match self {
            Framework::Shell => "shell",
            Framework::Custom => "custom",
            Framework::Pytest => "pytest",
            Framework::Cargo => "cargo",
            Framework::Go => "go",
            Framework::Jest => "jest",
            Framework::Vitest => "vitest",
        }
    }

    fn from_pb(value: pb::Framework) -> Option<Self> {
        Some(match value {
            pb::Framework::Unspecified => return None,
            pb::Framework::Shell => Framework::Shell,
            pb::Framework::Custom => Framework::Custom,
            pb::Framework::Pytest => Framework::Pytest,
            pb::Framework::Cargo => Framework::Cargo,
            pb::Framework::Go => Framework::Go,
            pb::Framework::Jest => Framework::Jest,
            pb::Framework::Vitest => Framework::Vitest,
        })
    }

    fn to_pb(self) -> pb::Framework {
        match self {
            Framework::Shell => pb::Framework::Shell,
            Framework::Custom => pb::Framework::Custom,
            Framework::Pytest => pb::Framework::Pytest,
            Framework::Cargo => pb::Framework::Cargo,
            Framework::Go => pb::Framework::Go,
            Framework::Jest => pb::Framework::Jest,
            Framework::Vitest => pb::Framework::Vitest,
        }
    }
}

/// How tests are kept apart (frameworks with warm runners; the others ignore it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Isolation {
    /// One long-lived framework process per slot.
    #[default]
    Warm,
    /// A fresh framework process per test unit.
    File,
    /// A fresh framework process per test unit, units being single cases where possible.
    Test,
}

impl Isolation {
    pub fn name(self) -> &'static str {
        match self {
            Isolation::Warm => "warm",
            Isolation::File => "file",
            Isolation::Test => "test",
        }
    }

    fn from_pb(value: pb::Isolation) -> Self {
        match value {
            pb::Isolation::Unspecified | pb::Isolation::Warm => Isolation::Warm,
            pb::Isolation::File => Isolation::File,
            pb::Isolation::Test => Isolation::Test,
        }
    }

    fn to_pb(self) -> pb::Isolation {
        match self {
            Isolation::Warm => pb::Isolation::Warm,
            Isolation::File => pb::Isolation::File,
            Isolation::Test => pb::Isolation::Test,
        }
    }
}

/// A framework's own options.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Options {
    /// Shell and custom commands: the command template, with `{}` where the test path goes.
    Command { template: String },
    /// pytest: the Python to use (`None`: the worker's) and the project's folder.
    Pytest { python: Option<String>, project_dir: String },
    /// Rust: the folder cargo runs in, extra `cargo test` arguments, and whether `#[ignore]`
    /// tests run (else they are reported skipped).
    Cargo { package_dir: String, cargo_args: Vec<String>, run_ignored: bool },
    /// vitest and jest: the folder of the project's `package.json`.
    Js { project_dir: String },
    /// Go: nothing yet.
    Go,
}

/// How a session's tests run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Runner {
    pub framework: Framework,
    pub isolation: Isolation,
    pub options: Options,
    /// The framework's own arguments (after `--`), given on every run of a test.
    pub args: Vec<String>,
    /// Keep the output of what passes too (`--show-output`).
    pub keep_passing_output: bool,
}

/// A runner message that cannot be used as it is; names the field.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("field `runner.{field}`: {problem}")]
pub struct BadRunner {
    pub field: &'static str,
    pub problem: String,
}

fn bad(field: &'static str, problem: impl Into<String>) -> BadRunner {
    BadRunner { field, problem: problem.into() }
}

/// The most bytes a template, folder, Python path or cargo argument may have.
const MAX_OPTION_BYTES: usize = 64 * 1024;
/// The most extra cargo arguments.
const MAX_CARGO_ARGS: usize = 256;
/// The most framework arguments.
const MAX_ARGS: usize = 256;

impl Runner {
    /// A command runner (`shell`, or `custom` for a user's `--command`).
    pub fn command(framework: Framework, template: impl Into<String>) -> Self {
        Runner {
            framework,
            isolation: Isolation::Warm,
            options: Options::Command { template: template.into() },
            args: Vec::new(),
            keep_passing_output: false,
        }
    }

    /// The command template, for command runners.
    pub fn template(&self) -> Option<&str> {
        match &self.options {
            Options::Command { template } => Some(template),
            _ => None,
        }
    }

    /// The project folder (relative to the workspace root, `.` for the root) that warm runners
    /// start in and cargo runs in.
    pub fn project_dir(&self) -> &str {
        let dir = match &self.options {
            Options::Pytest { project_dir, .. } | Options::Js { project_dir } => project_dir.as_str(),
            Options::Cargo { package_dir, .. } => package_dir.as_str(),
            Options::Command { .. } | Options::Go => "",
        };
        if dir.is_empty() { "." } else { dir }
    }

    /// The options a framework has when a message leaves them out (`None` for a custom command,
    /// which has no default).
    fn default_options(framework: Framework) -> Option<Options> {
        Some(match framework {
            Framework::Shell => Options::Command { template: "sh {}".into() },
            Framework::Custom => return None,
            Framework::Pytest => Options::Pytest { python: None, project_dir: String::new() },
            Framework::Cargo => {
                Options::Cargo { package_dir: String::new(), cargo_args: Vec::new(), run_ignored: false }
            }
            Framework::Jest | Framework::Vitest => Options::Js { project_dir: String::new() },
            Framework::Go => Options::Go,
        })
    }
}

impl TryFrom<&pb::Runner> for Runner {
    type Error = BadRunner;

    fn try_from(r: &pb::Runner) -> Result<Self, BadRunner> {
        use pb::runner::Options as P;
        let framework = pb::Framework::try_from(r.framework)
            .ok()
            .and_then(Framework::from_pb)
            .ok_or_else(|| bad("framework", format!("unknown framework {}", r.framework)))?;
        let isolation = pb::Isolation::try_from(r.isolation)
            .map(Isolation::from_pb)
            .map_err(|_| bad("isolation", format!("unknown isolation {}", r.isolation)))?;
        // Every value is checked where it arrived, before it is copied.
        let options = match (&r.options, framework) {
            (None, framework) => Runner::default_options(framework).ok_or_else(|| {
                bad("command.template", "a custom command needs a template with `{}` where the test path goes")
            })?,
            (Some(P::Command(c)), Framework::Shell | Framework::Custom) => {
                check_template(&c.template)?;
                Options::Command { template: c.template.clone() }
            }
            (Some(P::Pytest(p)), Framework::Pytest) => {
                check_text("pytest.python", &p.python)?;
                check_dir("pytest.project_dir", &p.project_dir)?;
                Options::Pytest {
                    python: Some(p.python.clone()).filter(|p| !p.is_empty()),
                    project_dir: p.project_dir.clone(),
                }
            }
            (Some(P::Cargo(c)), Framework::Cargo) => {
                check_dir("cargo.package_dir", &c.package_dir)?;
                if c.cargo_args.len() > MAX_CARGO_ARGS {
                    return Err(bad("cargo.cargo_args", format!("more than {MAX_CARGO_ARGS} arguments")));
                }
                for arg in &c.cargo_args {
                    check_text("cargo.cargo_args", arg)?;
                }
                Options::Cargo {
                    package_dir: c.package_dir.clone(),
                    cargo_args: c.cargo_args.clone(),
                    run_ignored: c.run_ignored,
                }
            }
            (Some(P::Js(j)), Framework::Jest | Framework::Vitest) => {
                check_dir("js.project_dir", &j.project_dir)?;
                Options::Js { project_dir: j.project_dir.clone() }
            }
            (Some(P::Go(_)), Framework::Go) => Options::Go,
            (Some(_), framework) => {
                return Err(bad("options", format!("these options are not for framework {}", framework.name())));
            }
        };
        if r.args.len() > MAX_ARGS {
            return Err(bad("args", format!("more than {MAX_ARGS} arguments")));
        }
        for arg in &r.args {
            check_text("args", arg)?;
        }
        Ok(Runner { framework, isolation, options, args: r.args.clone(), keep_passing_output: r.keep_passing_output })
    }
}

impl From<&Runner> for pb::Runner {
    fn from(r: &Runner) -> Self {
        use pb::runner::Options as P;
        let options = match &r.options {
            Options::Command { template } => P::Command(pb::CommandOptions { template: template.clone() }),
            Options::Pytest { python, project_dir } => P::Pytest(pb::PytestOptions {
                python: python.clone().unwrap_or_default(),
                project_dir: project_dir.clone(),
            }),
            Options::Cargo { package_dir, cargo_args, run_ignored } => P::Cargo(pb::CargoOptions {
                package_dir: package_dir.clone(),
                cargo_args: cargo_args.clone(),
                run_ignored: *run_ignored,
            }),
            Options::Js { project_dir } => P::Js(pb::JsOptions { project_dir: project_dir.clone() }),
            Options::Go => P::Go(pb::GoOptions {}),
        };
        pb::Runner {
            framework: r.framework.to_pb() as i32,
            isolation: r.isolation.to_pb() as i32,
            options: Some(options),
            args: r.args.clone(),
            keep_passing_output: r.keep_passing_output,
        }
    }
}

/// Expand a command template: every `{}` becomes the shell-quoted test path.
pub fn expand_command(template: &str, path: &str) -> String {
    // A path like `-x.sh` would read as an option to the command.
    let path = if path.starts_with('-') { format!("./{path}") } else { path.to_string() };
    template.replace("{}", &shell_quote(&path))
}

/// A word quoted for `sh`.
pub fn shell_quote(s: &str) -> String {
    // Paths and arguments with NUL are refused where they arrive, so quoting cannot fail; fall
    // back to an empty quoted word rather than panic if that ever changes.
    shlex::try_quote(s).map(|q| q.into_owned()).unwrap_or_else(|_| "''".to_string())
}

/// A command template: bounded, and with `{}` where the test path goes. The error shows only
/// the template's start: it came from a client and may be long.
fn check_template(template: &str) -> Result<(), BadRunner> {
    check_text("command.template", template)?;
    if template.contains("{}") {
        return Ok(());
    }
    let shown = crate::tree::shorten(template);
    Err(bad("command.template", format!("`{shown}` has no `{{}}` where the test path goes")))
}

/// Bounded, and free of NUL (which no process argument can carry).
fn check_text(field: &'static str, text: &str) -> Result<(), BadRunner> {
    if text.len() > MAX_OPTION_BYTES {
        return Err(bad(field, format!("{} bytes is more than the limit of {MAX_OPTION_BYTES}", text.len())));
    }
    if text.contains('\0') {
        return Err(bad(field, "contains a NUL byte"));
    }
    Ok(())
}

/// A folder relative to the workspace root that stays inside it (empty or `.`: the root).
fn check_dir(field: &'static str, dir: &str) -> Result<(), BadRunner> {
    check_text(field, dir)?;
    let path = Path::new(dir);
    if path.is_absolute() || path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(bad(field, "must be a folder inside the workspace root, relative to it"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(runner: Runner) {
        let message = pb::Runner::from(&runner);
        assert_eq!(Runner::try_from(&message), Ok(runner));
    }

    #[test]
    fn every_runner_survives_the_wire() {
        round_trip(Runner::command(Framework::Shell, "sh {}"));
        round_trip(Runner {
            framework: Framework::Pytest,
            isolation: Isolation::Test,
            options: Options::Pytest { python: Some("/venv/bin/python".into()), project_dir: "py".into() },
            args: vec!["-k".into(), "parser and not slow".into()],
            keep_passing_output: true,
        });
        round_trip(Runner {
            framework: Framework::Cargo,
            isolation: Isolation::Warm,
            options: Options::Cargo {
                package_dir: "crates/x".into(),
                cargo_args: vec!["--features".into(), "a b".into()],
                run_ignored: true,
            },
            args: Vec::new(),
            keep_passing_output: false,
        });
        round_trip(Runner {
            framework: Framework::Vitest,
            isolation: Isolation::File,
            options: Options::Js { project_dir: String::new() },
            args: vec!["--testNamePattern=io".into()],
            keep_passing_output: false,
        });
        round_trip(Runner {
            framework: Framework::Go,
            isolation: Isolation::Warm,
            options: Options::Go,
            args: vec!["-run".into(), "TestRead".into()],
            keep_passing_output: false,
        });
    }

    #[test]
    fn expand_quotes_paths_for_sh() {
        assert_eq!(expand_command("sh {}", "a/b.sh"), "sh a/b.sh");
        assert_eq!(expand_command("sh {}", "with space.sh"), "sh 'with space.sh'");
        assert_eq!(expand_command("sh {}", "it's"), r#"sh "it's""#);
        assert_eq!(expand_command("x {}", "$(rm -rf /)"), "x '$(rm -rf /)'");
        assert_eq!(expand_command("sh {}", "-e.sh"), "sh ./-e.sh");
    }

    #[test]
    fn bad_runners_name_their_field() {
        let message = |framework: pb::Framework, options| pb::Runner {
            framework: framework as i32,
            isolation: 0,
            options,
            args: Vec::new(),
            keep_passing_output: false,
        };
        let err = |m: pb::Runner| Runner::try_from(&m).expect_err("refused");
        assert_eq!(err(message(pb::Framework::Unspecified, None)).field, "framework");
        let template = |t: &str| Some(pb::runner::Options::Command(pb::CommandOptions { template: t.into() }));
        assert_eq!(err(message(pb::Framework::Custom, template("true"))).field, "command.template");
        assert_eq!(err(message(pb::Framework::Pytest, template("sh {}"))).field, "options");
        for dir in ["../up", "/etc", "a/../../b"] {
            let js = Some(pb::runner::Options::Js(pb::JsOptions { project_dir: dir.into() }));
            assert_eq!(err(message(pb::Framework::Jest, js)).field, "js.project_dir", "{dir}");
        }
        let unknown = pb::Runner {
            framework: pb::Framework::Go as i32,
            isolation: 42,
            options: None,
            args: Vec::new(),
            keep_passing_output: false,
        };
        assert_eq!(err(unknown).field, "isolation");
        assert_eq!(
            err(message(pb::Framework::Custom, None)).field,
            "command.template",
            "a custom command has no default"
        );
        let many = pb::Runner { args: vec!["-x".into(); 257], ..message(pb::Framework::Pytest, None) };
        assert_eq!(err(many).field, "args");
        let nul = pb::Runner { args: vec!["a\0b".into()], ..message(pb::Framework::Pytest, None) };
        assert_eq!(err(nul).field, "args");
        let long = err(message(pb::Framework::Custom, template(&"x".repeat(10_000))));
        assert!(long.problem.len() < 200, "a long template is not echoed whole: {}", long.problem.len());
    }

    #[test]
    fn missing_options_are_the_frameworks_defaults() {
        let shell = pb::Runner {
            framework: pb::Framework::Shell as i32,
            isolation: 0,
            options: None,
            args: Vec::new(),
            keep_passing_output: false,
        };
        let runner = Runner::try_from(&shell).expect("valid");
        assert_eq!(runner.template(), Some("sh {}"));
        assert_eq!(runner.isolation, Isolation::Warm);
        assert_eq!(runner.project_dir(), ".");
    }
}
