//! A search under way: the command line's paths resolved against the current folder and the
//! workspace root, with the framework and patterns decided; and the path rules every framework
//! shares (relative to the root, UTF-8, `/` separators).

use std::path::{Path, PathBuf};

use globset::GlobSet;
use testgrid_proto::frameworks::{Framework, Options};

use super::Listing;
use crate::error::Error;
use crate::settings::Settings;

/// One path asked for on the command line, resolved.
#[derive(Clone, Debug)]
pub struct Place {
    /// The file or folder, absolute (for `FILE::CASE`, the file).
    pub absolute: PathBuf,
    /// `FILE::CASE`: the file relative to the root, and the case.
    pub case: Option<(String, String)>,
}

/// A search under way: the settings, the framework decided, the places and patterns resolved.
pub struct Search<'a> {
    pub settings: &'a Settings,
    pub framework: Framework,
    /// What the command line names, or the current folder when it names nothing.
    pub places: Vec<Place>,
    pub patterns: Vec<String>,
    /// The patterns, compiled.
    pub set: GlobSet,
    /// Folder names not to enter besides the usual ones (pytest's `norecursedirs`).
    pub skip_dirs: Option<GlobSet>,
    /// Files and folders left out (pytest's `--ignore`, `--ignore-glob` in `addopts`).
    pub ignored: Option<super::pytest_config::Ignored>,
    /// `--filter` and `--exclude`.
    pub filter: super::select::IdFilter,
    /// Told how the tests will run as soon as that is known, before a slow listing (see
    /// [`super::discover_with`]).
    pub early: &'a (dyn Fn(Options, bool) -> Option<Listing> + Sync),
}

impl Search<'_> {
    pub fn root(&self) -> &Path {
        &self.settings.root
    }

    /// Every place's absolute path (case files included).
    pub fn absolute_places(&self) -> Vec<PathBuf> {
        self.places.iter().map(|p| p.absolute.clone()).collect()
    }
}

/// Resolve the command line's paths against the current folder; `FILE::CASE` names a case in
/// a file (a pytest node id, a Go package's test) when no file has that very name.
pub fn places(settings: &Settings) -> Result<Vec<Place>, Error> {
    let (root, cwd) = (&settings.root, &settings.cwd);
    let mut places = Vec::new();
    for path in &settings.paths {
        let text = path.to_string_lossy();
        if let Some((file, case)) = text.split_once("::")
            && !path.exists()
        {
            let absolute = cwd
                .join(file)
                .canonicalize()
                .map_err(|source| Error::MissingCaseFile { file: file.to_string(), source })?;
            let rel = relative(root, &absolute)?;
            places.push(Place { absolute, case: Some((rel, case.to_string())) });
            continue;
        }
        let absolute =
            cwd.join(path).canonicalize().map_err(|source| Error::MissingPath { path: path.clone(), source })?;
        if !absolute.starts_with(root) {
            return Err(Error::OutsideRoot { path: path.clone(), root: root.clone() });
        }
        places.push(Place { absolute, case: None });
    }
    if places.is_empty() {
        places.push(Place { absolute: cwd.clone(), case: None });
    }
    Ok(places)
}

/// The path relative to the root, with `/` separators.
pub fn relative(root: &Path, path: &Path) -> Result<String, Error> {
    let rel = path
        .strip_prefix(root)
        .map_err(|_| Error::NotUnderRoot { path: path.to_path_buf(), root: root.to_path_buf() })?;
    let text = rel.to_str().ok_or_else(|| Error::NotUtf8 { path: path.to_path_buf() })?;
    Ok(if text.is_empty() { ".".to_string() } else { text.to_string() })
}
