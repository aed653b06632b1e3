//! Rust: build the test binaries (`cargo test --no-run`), list each one's tests, and name every
//! test `SRC::NAME` (see `testgrid_proto::cargo`). Paths on the command line pick targets by
//! their source file or folder (`tests/api.rs`, `crates/x`), and `SRC::NAME` picks one test, or
//! every test under a module path.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use testgrid_proto::cargo::{Binary, Ignored, TestArgs, binary_from_message, list_args, parse_list, select};
use testgrid_proto::frameworks::{Framework, Options};

use super::ask::{self, Failed, first_lines};
use super::project;
use super::search::{Search, relative};
use crate::args::RunIgnored;
use crate::error::Error;

/// The variable that once carried extra `cargo test` arguments; the flags replace it, and a
/// value left in it is refused rather than ignored.
const OLD_ARGS_VAR: &str = "TESTGRID_CARGO_ARGS";

/// What `--pattern`s match for Rust: the targets' source files.
pub const PATTERNS: &[&str] = &["**/*.rs"];

pub fn discover(search: &Search) -> Result<(Vec<String>, Options), Error> {
    let settings = search.settings;
    let root = search.root();
    let mut files: Vec<String> = Vec::new();
    let mut cases: Vec<(String, String)> = Vec::new();
    if settings.paths.is_empty() {
        // The current folder, which may lie outside a `--root` given.
        files.push(relative(root, &settings.cwd).unwrap_or_else(|_| ".".into()));
    } else {
        for place in &search.places {
            match &place.case {
                Some(case) => cases.push(case.clone()),
                None => files.push(relative(root, &place.absolute)?),
            }
        }
    }
    let dir = cargo_dir(root, &search.absolute_places())?;
    if std::env::var_os(OLD_ARGS_VAR).is_some_and(|v| !v.is_empty()) {
        return Err(Error::OldCargoArgs { var: OLD_ARGS_VAR });
    }
    let mut args = settings.cargo.to_args();
    // Paths named in a workspace whose root is also a package: `cargo test` there would build
    // only the root package, and the members' tests asked for would silently be missing.
    let picks_packages =
        args.iter().any(|a| matches!(a.as_str(), "-p" | "--workspace" | "--all") || a.starts_with("--package"));
    let is_workspace = std::fs::read_to_string(dir.join("Cargo.toml")).is_ok_and(|t| t.contains("[workspace]"));
    if !settings.paths.is_empty() && is_workspace && !picks_packages {
        args.push("--workspace".into());
    }
    let binaries = build(root, &dir, &args, &settings.env)?;
    // libtest's own selection after `--` (filters, `--skip`, `--exact`) picks the tests as it
    // would under `cargo test`: what it leaves out is never scheduled.
    let test_args = TestArgs::split(&settings.args_for(Framework::Cargo))
        .map_err(|problem| Error::BadFrameworkArgs { framework: "cargo", problem })?;
    let ignored = match (settings.cargo.run_ignored, test_args.ignored) {
        (Some(flag), None) => flag,
        (None, Some(Ignored::Only)) => RunIgnored::Only,
        (None, Some(Ignored::All)) => RunIgnored::All,
        (None, None) => RunIgnored::Default,
        (Some(flag), Some(arg))
            if matches!((flag, arg), (RunIgnored::Only, Ignored::Only) | (RunIgnored::All, Ignored::All)) =>
        {
            flag
        }
        (Some(_), Some(_)) => return Err(Error::IgnoredTwice),
    };
    let mut units = all_tests(&binaries, &settings.env, ignored == RunIgnored::Only, &test_args.selection)?;
    // With only the ignored tests listed, or a selection, a binary without any is no surprise.
    let selects = ignored == RunIgnored::Only || !test_args.selection.is_empty();
    for binary in binaries.iter().filter(|_| !selects) {
        if !units.iter().any(|(src, _)| *src == binary.src) {
            err!(
                "warning: {} ({}) lists no tests and is not run; a `harness = false` target must answer \
                 `--list --format terse` as libtest does to run under testgrid",
                binary.id,
                binary.src
            );
        }
    }
    if !settings.patterns.is_empty() {
        units.retain(|(src, _)| search.set.is_match(src));
    }
    // Everything asked for by name must find something: a typo must not pass as "0 failed".
    // (Under a selection after `--`, finding nothing is the selection's doing: no tests, exit 4.)
    for file in files.iter().filter(|f| f.as_str() != "." && test_args.selection.is_empty()) {
        if select(&units, std::slice::from_ref(file), &[]).is_empty() {
            return Err(Error::NoRustTarget { file: file.clone() });
        }
    }
    for (file, case) in cases.iter().filter(|_| test_args.selection.is_empty()) {
        if select(&units, &[], &[(file.clone(), case.clone())]).is_empty() {
            return Err(Error::NoRustTest { file: file.clone(), case: case.clone() });
        }
    }
    let tests = select(&units, &files, &cases);
    let run_ignored = ignored != RunIgnored::Default;
    Ok((tests, Options::Cargo { package_dir: relative(root, &dir)?, cargo_args: args, run_ignored }))
}

/// Where cargo runs: the nearest folder with a `Cargo.toml` at or above everything asked for,
/// inside the workspace root, as `cargo test` run from there would pick.
fn cargo_dir(root: &Path, places: &[PathBuf]) -> Result<PathBuf, Error> {
    project::project_dir(root, places, "Cargo.toml").ok_or_else(|| Error::NoCargoToml {
        place: places.first().cloned().unwrap_or_else(|| root.to_path_buf()),
        root: root.to_path_buf(),
    })
}

/// Build the test binaries in `dir` and name them. cargo's own output goes to this terminal (it
/// stays in the terminal's process group, so that Ctrl-C reaches it directly).
fn build(root: &Path, dir: &Path, args: &[String], env: &BTreeMap<String, String>) -> Result<Vec<Binary>, Error> {
    let shown = format!("cargo test --no-run {}", args.join(" "));
    let mut child = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(testgrid_proto::cargo::BUILD_ARGS)
        .args(args)
        .current_dir(dir)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|source| Error::CargoCannotStart { command: shown.clone(), dir: dir.to_path_buf(), source })?;
    let mut binaries = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            binaries.extend(binary_from_message(root, &line));
        }
    }
    let status = child.wait().map_err(Error::CargoWait)?;
    if !status.success() {
        return Err(Error::CargoBuild { command: shown, dir: dir.to_path_buf(), status });
    }
    binaries.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(binaries)
}

/// How long a test binary may take to list its tests.
const LIST_DEADLINE: Duration = Duration::from_secs(120);

/// The most a test binary's list may hold (a name per line).
const MAX_LIST_BYTES: usize = 64 * 1024 * 1024;

/// Every test of a build as `(SRC, NAME)`, binaries in order.
fn all_tests(
    binaries: &[Binary],
    env: &BTreeMap<String, String>,
    only_ignored: bool,
    selection: &[String],
) -> Result<Vec<(String, String)>, Error> {
    let mut units = Vec::new();
    let mut by_src: HashMap<&str, &str> = HashMap::new();
    for binary in binaries {
        if let Some(other) = by_src.insert(&binary.src, &binary.id) {
            return Err(Error::SameSource { id: binary.id.clone(), other: other.to_string(), src: binary.src.clone() });
        }
        let mut cmd = Command::new(&binary.exe);
        cmd.args(list_args(only_ignored))
            .args(selection)
            .current_dir(&binary.manifest_dir)
            .envs(env)
            .envs(binary.env(std::env::var("LD_LIBRARY_PATH").ok().as_deref()));
        let output = ask::ask(&mut cmd, LIST_DEADLINE, MAX_LIST_BYTES).map_err(|e| match e {
            Failed::Start(source) => Error::CannotList { exe: binary.exe.clone(), source },
            other => Error::ListNoAnswer { exe: binary.exe.clone(), problem: other.to_string() },
        })?;
        if !output.status.success() {
            return Err(Error::ListFailed {
                exe: binary.exe.clone(),
                status: output.status,
                stderr: first_lines(&output.stderr),
            });
        }
        units.extend(
            parse_list(&String::from_utf8_lossy(&output.stdout)).into_iter().map(|name| (binary.src.clone(), name)),
        );
    }
    Ok(units)
}
