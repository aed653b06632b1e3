//! Go: a unit is a package, the folder of its `_test.go` files (`pkg/a`), or one test in it
//! (`pkg/a::TestX`); folders `go test ./...` leaves out are left out here too.

use std::path::Path;

use testgrid_proto::frameworks::Options;

use super::files;
use super::search::Search;
use crate::error::Error;

/// The default patterns of Go tests.
pub const PATTERNS: &[&str] = &["**/*_test.go"];

pub fn discover(search: &Search) -> Result<(Vec<String>, Options), Error> {
    Ok((units(search)?, Options::Go))
}

/// The packages (and named tests) of a search, in the order they should start.
pub fn units(search: &Search) -> Result<Vec<String>, Error> {
    let root = search.root();
    // `go test ./...` leaves out testdata folders and names starting with `_` or `.`.
    let ignored = |c: &str| c == "testdata" || c.starts_with('_') || (c.starts_with('.') && c != ".");
    let packages = files::sized(search)?
        .into_iter()
        .filter(|(_, rel)| !rel.split("::").next().unwrap_or_default().split('/').any(ignored))
        .map(|(size, rel)| (size, package_of(root, &rel)))
        .collect();
    Ok(files::ordered(packages))
}

/// A file's package: its folder; `pkg/a::TestX` names a test of a package and stays, and a
/// file before `::` names its folder.
fn package_of(root: &Path, rel: &str) -> String {
    let (path, case) = rel.split_once("::").map_or((rel, None), |(p, c)| (p, Some(c)));
    let dir = if root.join(path).is_dir() {
        path.to_string()
    } else {
        Path::new(path).parent().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default()
    };
    let dir = if dir.is_empty() { ".".to_string() } else { dir };
    match case {
        Some(case) => format!("{dir}::{case}"),
        None => dir,
    }
}
