//! A framework's project folder: the nearest folder at or above everything asked for that holds
//! its configuration, inside the workspace root. Warm runners start there (so that the
//! project's configuration applies) and cargo builds there.

use std::path::{Path, PathBuf};

use super::search::{Search, relative};
use crate::error::Error;

/// The nearest folder holding `marker` (`Cargo.toml`, `package.json`) at or above every one of
/// `places` (absolute), inside `root`.
pub fn project_dir(root: &Path, places: &[PathBuf], marker: &str) -> Option<PathBuf> {
    nearest(root, places, |d| d.join(marker).is_file())
}

/// The project of a search for a warm runner to start in, relative to the root: the nearest
/// folder for which `is_project` holds, or the root when there is none.
pub fn runner_project(search: &Search, is_project: impl Fn(&Path) -> bool) -> Result<String, Error> {
    let root = search.root();
    let dir = nearest(root, &search.absolute_places(), is_project).unwrap_or_else(|| root.to_path_buf());
    relative(root, &dir)
}

/// The nearest folder for which `is_project` holds at or above every one of `places`, inside
/// `root`.
fn nearest(root: &Path, places: &[PathBuf], is_project: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    nearest_with(root, places, |d| is_project(d).then(|| d.to_path_buf()))
}

/// What `find` returns for the nearest folder at or above every one of `places`, inside `root`,
/// for which it returns anything.
pub fn nearest_with<T>(root: &Path, places: &[PathBuf], find: impl Fn(&Path) -> Option<T>) -> Option<T> {
    let mut common = places.first().cloned().unwrap_or_else(|| root.to_path_buf());
    for place in places {
        while !place.starts_with(&common) {
            if !common.pop() {
                break;
            }
        }
    }
    common.ancestors().filter(|d| d.starts_with(root)).find_map(find)
}
