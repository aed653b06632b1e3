//! Test files on disk: walking the searched folders (gitignore-aware, dependency folders
//! skipped), matching them against the patterns, and ordering them largest first. Shell scripts
//! and custom commands use these units as they are; pytest, JavaScript and Go start from them.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use globset::{GlobSet, GlobSetBuilder};

use super::search::{Search, relative};
use crate::error::Error;

/// The default patterns of shell tests.
pub const SHELL_PATTERNS: &[&str] = &["**/*.sh"];

/// Folders never searched: dependencies and build output, even when not gitignored.
const SKIP_DIRS: &[&str] = &["node_modules", "target", ".git", "__pycache__", ".venv", "venv", ".tox", "vendor"];

/// The test files (and named cases) of a search, in the order they should start.
pub fn units(search: &Search) -> Result<Vec<String>, Error> {
    Ok(ordered(sized(search)?))
}

/// The test files (and named cases) of a search, each with its size, unordered.
pub fn sized(search: &Search) -> Result<Vec<(u64, String)>, Error> {
    let root = search.root();
    let mut tests = Vec::new();
    for place in &search.places {
        if let Some((file, case)) = &place.case {
            // `file::case` names a test case inside a file: it runs as given.
            tests.push((0, format!("{file}::{case}")));
            continue;
        }
        if place.absolute.is_file() {
            // A file named on the command line is a test, whatever the patterns say.
            tests.push((file_size(&place.absolute), relative(root, &place.absolute)?));
            continue;
        }
        for path in walk(&place.absolute, search.skip_dirs.as_ref()) {
            // Match on a lossy form first: a file that is not a test may have any name.
            let Ok(rel_path) = path.strip_prefix(root) else { continue };
            if !search.set.is_match(rel_path.to_string_lossy().as_ref())
                || search.ignored.as_ref().is_some_and(|i| i.contains(&path))
            {
                continue;
            }
            tests.push((file_size(&path), relative(root, &path)?));
        }
    }
    Ok(tests)
}

/// Largest first (the cheapest guess at longest first until durations are known), then by
/// name; each once.
pub fn ordered(mut tests: Vec<(u64, String)>) -> Vec<String> {
    tests.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let mut seen = HashSet::new();
    tests.into_iter().map(|(_, p)| p).filter(|p| seen.insert(p.clone())).collect()
}

/// A file's size (0 when it cannot be read): the ordering's guess at its duration.
pub fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Compile `--pattern`s (or a framework's own).
pub fn glob_set(patterns: &[String]) -> Result<GlobSet, Error> {
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        let glob = globset::GlobBuilder::new(pattern.trim_start_matches("./"))
            .literal_separator(true)
            .build()
            .map_err(|source| Error::BadPattern { pattern: pattern.clone(), source })?;
        builder.add(glob);
    }
    builder.build().map_err(Error::BadPatterns)
}

/// Every file under `dir`, honouring .gitignore, skipping hidden and dependency folders, and
/// folders whose names `skip` matches.
pub fn walk(dir: &Path, skip: Option<&GlobSet>) -> Vec<PathBuf> {
    let skip = skip.cloned();
    let mut files: Vec<PathBuf> = ignore::WalkBuilder::new(dir)
        .hidden(true)
        .git_ignore(true)
        .require_git(false)
        .filter_entry(move |entry| {
            if !entry.file_type().is_some_and(|t| t.is_dir()) {
                return true;
            }
            let name = entry.file_name().to_string_lossy();
            // `skip` applies below the folder searched: pytest enters a folder it is given.
            let skipped = entry.depth() > 0 && skip.as_ref().is_some_and(|s| s.is_match(name.as_ref()));
            !(SKIP_DIRS.contains(&name.as_ref()) || skipped)
        })
        .build()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_some_and(|t| t.is_file()))
        .map(|e| e.into_path())
        .collect();
    files.sort();
    files
}
