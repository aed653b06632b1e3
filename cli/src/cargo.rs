//! Finding Rust tests: build the test binaries (`cargo test --no-run`), list each one's tests,
//! and name every test `SRC::NAME` (see `testgrid_proto::cargo`). Paths on the command line
//! pick targets by their source file or folder (`tests/api.rs`, `crates/x`), and
//! `SRC::NAME` picks one test, or every test under a module path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::collections::HashMap;
use std::process::Stdio;

use testgrid_proto::cargo::{Binary, binary_from_message, list_args, parse_list, select};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::discover::{glob_set, project_dir, relative};
use crate::error::Error;

/// The variable with extra `cargo test` arguments (`--workspace --features x`), shell words.
pub const ARGS_VAR: &str = "TESTGRID_CARGO_ARGS";

/// What a cargo session needs: its tests, and what lets workers build the same.
pub struct Found {
    pub tests: Vec<String>,
    /// Where cargo runs, relative to the workspace root.
    pub package_dir: String,
    /// Extra `cargo test` arguments.
    pub cargo_args: Vec<String>,
}

/// The extra arguments in `TESTGRID_CARGO_ARGS` (shell words).
fn extra_args(text: &str) -> Result<Vec<String>, Error> {
    shlex::split(text)
        .ok_or_else(|| Error::Usage(format!("{ARGS_VAR} `{text}` is not valid shell words (check its quotes)")))
}

pub async fn discover(
    root: &Path,
    cwd: &Path,
    paths: &[PathBuf],
    patterns: &[String],
    env: &BTreeMap<String, String>,
) -> Result<Found, Error> {
    let mut files: Vec<String> = Vec::new();
    let mut cases: Vec<(String, String)> = Vec::new();
    let mut places: Vec<PathBuf> = Vec::new();
    for path in paths {
        let text = path.to_string_lossy();
        let (file, case) = match text.split_once("::") {
            Some((file, case)) if !path.exists() => (PathBuf::from(file), Some(case.to_string())),
            _ => (path.clone(), None),
        };
        let absolute = cwd.join(&file).canonicalize().map_err(|e| {
            Error::Usage(format!("{}: {e}; pass files or folders that exist (or SRC::TEST)", file.display()))
        })?;
        let rel = relative(root, &absolute)?;
        places.push(absolute);
        match case {
            Some(case) => cases.push((rel, case)),
            None => files.push(rel),
        }
    }
    if paths.is_empty() {
        files.push(relative(root, cwd).unwrap_or_else(|_| ".".into()));
        places.push(cwd.to_path_buf());
    }
    let dir = cargo_dir(root, &places)?;
    let mut args = extra_args(&std::env::var(ARGS_VAR).unwrap_or_default())?;
    // Paths named in a workspace whose root is also a package: `cargo test` there would build
    // only the root package, and the members' tests asked for would silently be missing.
    let picks_packages =
        args.iter().any(|a| matches!(a.as_str(), "-p" | "--workspace" | "--all") || a.starts_with("--package"));
    let is_workspace = std::fs::read_to_string(dir.join("Cargo.toml")).is_ok_and(|t| t.contains("[workspace]"));
    if !paths.is_empty() && is_workspace && !picks_packages {
        args.push("--workspace".into());
    }
    let binaries = build(root, &dir, &args, env).await?;
    let mut units = all_tests(&binaries, env).await?;
    for binary in &binaries {
        if !units.iter().any(|(src, _)| *src == binary.src) {
            eprintln!(
                "warning: {} ({}) lists no tests and is not run; a `harness = false` target must answer \
                 `--list --format terse` as libtest does to run under testgrid",
                binary.id, binary.src
            );
        }
    }
    if !patterns.is_empty() {
        let set = glob_set(patterns)?;
        units.retain(|(src, _)| set.is_match(src));
    }
    // Everything asked for by name must find something: a typo must not pass as "0 failed".
    for file in files.iter().filter(|f| f.as_str() != ".") {
        if select(&units, std::slice::from_ref(file), &[]).is_empty() {
            return Err(Error::Usage(format!(
                "{file}: no Rust test target there (name a target's source file such as src/lib.rs or \
                 tests/api.rs, or a folder holding some)"
            )));
        }
    }
    for (file, case) in &cases {
        if select(&units, &[], &[(file.clone(), case.clone())]).is_empty() {
            return Err(Error::Usage(format!("{file}::{case}: no such test or module in that target")));
        }
    }
    let tests = select(&units, &files, &cases);
    Ok(Found { tests, package_dir: relative(root, &dir)?, cargo_args: args })
}

/// Where cargo runs: the nearest folder with a `Cargo.toml` at or above everything asked for,
/// inside the workspace root, as `cargo test` run from there would pick.
fn cargo_dir(root: &Path, places: &[PathBuf]) -> Result<PathBuf, Error> {
    project_dir(root, places, "Cargo.toml").ok_or_else(|| {
        Error::Usage(format!(
            "no Cargo.toml at or above {} inside the workspace root {}; run from a Rust project or set --root",
            places.first().unwrap_or(&root.to_path_buf()).display(),
            root.display()
        ))
    })
}

/// Build the test binaries in `dir` and name them. cargo's own output goes to this terminal (it
/// stays in the terminal's process group, so that Ctrl-C reaches it directly).
async fn build(root: &Path, dir: &Path, args: &[String], env: &BTreeMap<String, String>) -> Result<Vec<Binary>, Error> {
    let shown = format!("cargo test --no-run {}", args.join(" "));
    let mut child = tokio::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(testgrid_proto::cargo::BUILD_ARGS)
        .args(args)
        .current_dir(dir)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            Error::Usage(format!("cannot start `{shown}` in {}: {e} (is cargo on the PATH?)", dir.display()))
        })?;
    let mut binaries = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            binaries.extend(binary_from_message(root, &line));
        }
    }
    let status = child.wait().await.map_err(|e| Error::Usage(format!("cannot wait for cargo: {e}")))?;
    if !status.success() {
        return Err(Error::Usage(format!("`{shown}` failed in {} ({status}); fix the build first", dir.display())));
    }
    binaries.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(binaries)
}

/// Every test of a build as `(SRC, NAME)`, binaries in order.
async fn all_tests(binaries: &[Binary], env: &BTreeMap<String, String>) -> Result<Vec<(String, String)>, Error> {
    let mut units = Vec::new();
    let mut by_src: HashMap<&str, &str> = HashMap::new();
    for binary in binaries {
        if let Some(other) = by_src.insert(&binary.src, &binary.id) {
            return Err(Error::Usage(format!(
                "{} and {other} are both built from {}: testgrid names Rust tests by their source file",
                binary.id, binary.src
            )));
        }
        let output = tokio::process::Command::new(&binary.exe)
            .args(list_args(false))
            .current_dir(&binary.manifest_dir)
            .envs(env)
            .envs(binary.env(std::env::var("LD_LIBRARY_PATH").ok().as_deref()))
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| Error::Usage(format!("cannot list the tests of {}: {e}", binary.exe.display())))?;
        if !output.status.success() {
            return Err(Error::Usage(format!(
                "`{} --list` failed ({}): {}",
                binary.exe.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        units.extend(
            parse_list(&String::from_utf8_lossy(&output.stdout)).into_iter().map(|name| (binary.src.clone(), name)),
        );
    }
    Ok(units)
}
