//! `--framework auto`: pick the framework from marker files in the searched folders (then the
//! root), then from which framework's test files exist there; shell when nothing else matches.

use std::path::{Path, PathBuf};

use super::search::Place;
use super::{cargo, files, go, js, pytest};
use testgrid_proto::frameworks::Framework;

pub fn detect(root: &Path, places: &[Place]) -> Framework {
    let searched: Vec<&Path> = places.iter().map(|p| p.absolute.as_path()).collect();
    let mut dirs: Vec<&Path> = searched.iter().copied().filter(|p| p.is_dir()).collect();
    for dir in &dirs {
        if let Some(f) = markers(dir) {
            return f;
        }
    }
    let found: Vec<PathBuf> =
        searched.iter().flat_map(|p| if p.is_file() { vec![p.to_path_buf()] } else { files::walk(p, None) }).collect();
    let rels: Vec<String> =
        found.iter().filter_map(|f| f.strip_prefix(root).ok().map(|r| r.to_string_lossy().into_owned())).collect();
    for candidate in [Framework::Pytest, Framework::Go, Framework::Vitest, Framework::Shell] {
        let patterns: Vec<String> = default_patterns(candidate).iter().map(|s| s.to_string()).collect();
        let Ok(set) = files::glob_set(&patterns) else { continue };
        if rels.iter().any(|r| set.is_match(r)) {
            if candidate == Framework::Vitest {
                // The project's package.json may lie between a folder asked for and the root.
                let around = searched.iter().flat_map(|p| p.ancestors().take_while(|a| a.starts_with(root)));
                dirs.extend(around);
                dirs.push(root);
                return js::framework(&dirs);
            }
            return candidate;
        }
    }
    markers(root).unwrap_or(Framework::Shell)
}

/// The framework a folder's own files name: `package.json`, a pytest configuration, `go.mod`,
/// `Cargo.toml`.
fn markers(dir: &Path) -> Option<Framework> {
    if dir.join("package.json").is_file() {
        return Some(js::framework(&[dir]));
    }
    if ["pytest.ini", "conftest.py", "tox.ini"].iter().any(|m| dir.join(m).is_file())
        || std::fs::read_to_string(dir.join("pyproject.toml")).is_ok_and(|s| s.contains("[tool.pytest"))
    {
        return Some(Framework::Pytest);
    }
    if dir.join("go.mod").is_file() {
        return Some(Framework::Go);
    }
    if dir.join("Cargo.toml").is_file() {
        return Some(Framework::Cargo);
    }
    None
}

/// The default test patterns of each framework, which detection looks for too.
pub fn default_patterns(framework: Framework) -> &'static [&'static str] {
    match framework {
        Framework::Shell | Framework::Custom => files::SHELL_PATTERNS,
        Framework::Pytest => pytest::PATTERNS,
        Framework::Cargo => cargo::PATTERNS,
        Framework::Go => go::PATTERNS,
        Framework::Jest | Framework::Vitest => js::PATTERNS,
    }
}
