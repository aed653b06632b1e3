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
    let args_text = std::env::var(rust::ARGS_VAR).unwrap_or_default();
    let args = rust::extra_args(&args_text).map_err(Error::Usage)?;
    let build = rust::build(root, &dir, &args, env, true).await.map_err(Error::Usage)?;
    let mut units = rust::all_tests(&build, env).await.map_err(Error::Usage)?;
    if !patterns.is_empty() {
        let set = glob_set(patterns)?;
        units.retain(|(src, _)| set.is_match(src));
    }
    let tests = rust::select(&units, &files, &cases);
    let mut session_env = BTreeMap::new();
    session_env.insert(rust::DIR_VAR.to_string(), relative(root, &dir)?);
    if !args_text.trim().is_empty() {
        session_env.insert(rust::ARGS_VAR.to_string(), args_text);
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
