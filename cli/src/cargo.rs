//! Finding Rust tests: build the test binaries (`cargo test --no-run`), list each one's tests,
//! and name every test `SRC::NAME` (see `testgrid_worker::cargo`). Paths on the command line
//! pick targets by their source file or folder (`tests/api.rs`, `crates/x`), and
//! `SRC::NAME` picks one test, or every test under a module path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use testgrid_worker::cargo as rust;

use crate::discover::{glob_set, project_dir, relative};
use crate::error::Error;

/// What a cargo session needs: its tests, and the variables that let workers build the same.
pub struct Found {
    pub tests: Vec<String>,
    pub env: BTreeMap<String, String>,
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
    let mut args = rust::extra_args(&std::env::var(rust::ARGS_VAR).unwrap_or_default()).map_err(Error::Usage)?;
    // Paths named in a workspace whose root is also a package: `cargo test` there would build
    // only the root package, and the members' tests asked for would silently be missing.
    let picks_packages =
        args.iter().any(|a| matches!(a.as_str(), "-p" | "--workspace" | "--all") || a.starts_with("--package"));
    let is_workspace = std::fs::read_to_string(dir.join("Cargo.toml")).is_ok_and(|t| t.contains("[workspace]"));
    if !paths.is_empty() && is_workspace && !picks_packages {
        args.push("--workspace".into());
    }
    let build = rust::build(root, &dir, &args, env, true).await.map_err(Error::Usage)?;
    let mut units = rust::all_tests(&build, env).await.map_err(Error::Usage)?;
    for binary in &build.binaries {
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
        if rust::select(&units, std::slice::from_ref(file), &[]).is_empty() {
            return Err(Error::Usage(format!(
                "{file}: no Rust test target there (name a target's source file such as src/lib.rs or \
                 tests/api.rs, or a folder holding some)"
            )));
        }
    }
    for (file, case) in &cases {
        if rust::select(&units, &[], &[(file.clone(), case.clone())]).is_empty() {
            return Err(Error::Usage(format!("{file}::{case}: no such test or module in that target")));
        }
    }
    let tests = rust::select(&units, &files, &cases);
    let mut session_env = BTreeMap::new();
    session_env.insert(rust::DIR_VAR.to_string(), relative(root, &dir)?);
    if !args.is_empty() {
        let text = shlex::try_join(args.iter().map(String::as_str))
            .map_err(|e| Error::Usage(format!("{}: {e}", rust::ARGS_VAR)))?;
        session_env.insert(rust::ARGS_VAR.to_string(), text);
    }
    Ok(Found { tests, env: session_env })
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
