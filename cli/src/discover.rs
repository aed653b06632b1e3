//! Finding test units: which framework a project uses, which files are its tests, and the
//! command that runs one of them.
//!
//! A test unit is a file by default (a package directory for Go). Paths are relative to the
//! workspace root, which is also where the command runs. Patterns are globs relative to that
//! root where `*` stays inside one folder and `**` crosses folders.

use std::path::{Path, PathBuf};

use globset::{GlobSet, GlobSetBuilder};

use crate::error::Error;

/// The frameworks testgrid knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Framework {
    /// Detect from the project's files.
    Auto,
    /// Shell scripts, each run with `sh`.
    Shell,
    /// pytest test files.
    Pytest,
    /// Rust tests: the test binaries are built once, and each test runs on its own.
    Cargo,
    /// Go packages with `_test.go` files, each run with `go test`.
    Go,
    /// Jest test files.
    Jest,
    /// Vitest test files.
    Vitest,
}

impl Framework {
    pub fn name(self) -> &'static str {
        match self {
            Framework::Auto => "auto",
            Framework::Shell => "shell",
            Framework::Pytest => "pytest",
            Framework::Cargo => "cargo",
            Framework::Go => "go",
            Framework::Jest => "jest",
            Framework::Vitest => "vitest",
        }
    }

    /// The default test patterns.
    pub fn patterns(self) -> &'static [&'static str] {
        const JS: &[&str] = &[
            "**/*.test.{js,jsx,ts,tsx,mjs,cjs,mts,cts}",
            "**/*.spec.{js,jsx,ts,tsx,mjs,cjs,mts,cts}",
            "**/__tests__/**/*.{js,jsx,ts,tsx,mjs,cjs,mts,cts}",
        ];
        match self {
            Framework::Auto => &[],
            Framework::Shell => &["**/*.sh"],
            Framework::Pytest => &["**/test_*.py", "**/*_test.py"],
            Framework::Cargo => &["**/*.rs"],
            Framework::Go => &["**/*_test.go"],
            Framework::Jest | Framework::Vitest => JS,
        }
    }

    /// The protocol's framework (`auto` is decided before anything is sent).
    pub fn typed(self) -> testgrid_proto::frameworks::Framework {
        use testgrid_proto::frameworks::Framework as F;
        match self {
            Framework::Auto | Framework::Shell => F::Shell,
            Framework::Pytest => F::Pytest,
            Framework::Cargo => F::Cargo,
            Framework::Go => F::Go,
            Framework::Jest => F::Jest,
            Framework::Vitest => F::Vitest,
        }
    }

    /// Go runs packages, not files: a unit is the folder of its test files.
    fn unit_is_folder(self) -> bool {
        self == Framework::Go
    }
}

/// What to look for.
#[derive(Clone, Debug)]
pub struct Request {
    /// The workspace root (absolute).
    pub root: PathBuf,
    /// Files or folders to search, absolute or relative to the current directory.
    pub paths: Vec<PathBuf>,
    pub framework: Framework,
    /// Patterns from `--pattern`; empty: the framework's defaults.
    pub patterns: Vec<String>,
}

/// What was found.
#[derive(Clone, Debug)]
pub struct Found {
    pub framework: Framework,
    pub patterns: Vec<String>,
    /// Test paths relative to the root, in the order they should start (largest first: the
    /// cheapest guess at longest first until durations are known).
    pub tests: Vec<String>,
}

/// Folders never searched: dependencies and build output, even when not gitignored.
const SKIP_DIRS: &[&str] = &["node_modules", "target", ".git", "__pycache__", ".venv", "venv", ".tox", "vendor"];

pub fn discover(request: &Request) -> Result<Found, Error> {
    let cwd = std::env::current_dir().map_err(|e| Error::Usage(format!("cannot read the current directory: {e}")))?;
    let mut roots = Vec::new();
    // `file::case` names test cases inside a file (pytest node ids): they run as given.
    let mut cases: Vec<String> = Vec::new();
    // Roots pushed only so that detection sees the case's file; not searched for tests.
    let mut case_roots: Vec<usize> = Vec::new();
    for path in &request.paths {
        let text = path.to_string_lossy();
        if let Some((file, case)) = text.split_once("::")
            && !path.exists()
        {
            let file_path = Path::new(file);
            let absolute = if file_path.is_absolute() { file_path.to_path_buf() } else { cwd.join(file_path) };
            let absolute = absolute.canonicalize().map_err(|e| {
                Error::Usage(format!("{file}: {e}; pass FILE::CASE with a file (or Go package folder) that exists"))
            })?;
            cases.push(format!("{}::{case}", relative(&request.root, &absolute)?));
            case_roots.push(roots.len());
            roots.push(absolute);
            continue;
        }
        let absolute = if path.is_absolute() { path.clone() } else { cwd.join(path) };
        let absolute = absolute
            .canonicalize()
            .map_err(|e| Error::Usage(format!("{}: {e}; pass files or folders that exist", path.display())))?;
        if !absolute.starts_with(&request.root) {
            return Err(Error::Usage(format!(
                "{} is outside the workspace root {}; run from inside it or set --root",
                path.display(),
                request.root.display()
            )));
        }
        roots.push(absolute);
    }
    if roots.is_empty() {
        roots.push(cwd.canonicalize().unwrap_or(cwd));
    }
    let framework = match request.framework {
        Framework::Auto => detect(&request.root, &roots),
        f => f,
    };
    let patterns: Vec<String> = if request.patterns.is_empty() {
        framework.patterns().iter().map(|p| p.to_string()).collect()
    } else {
        request.patterns.clone()
    };
    let set = glob_set(&patterns)?;
    if framework == Framework::Cargo {
        // Rust tests are found by building and listing the test binaries: see `crate::cargo`.
        return Ok(Found { framework, patterns, tests: Vec::new() });
    }

    let mut tests: Vec<(u64, String)> = Vec::new();
    for case in &cases {
        tests.push((0, case.clone()));
    }
    for (index, root) in roots.iter().enumerate() {
        if case_roots.contains(&index) {
            continue;
        }
        if root.is_file() {
            // A file named on the command line is a test, whatever the patterns say.
            tests.push((file_size(root), relative(&request.root, root)?));
            continue;
        }
        for path in walk(root) {
            // Match on a lossy form first: a file that is not a test may have any name.
            let Ok(rel_path) = path.strip_prefix(&request.root) else { continue };
            if !set.is_match(rel_path.to_string_lossy().as_ref()) {
                continue;
            }
            tests.push((file_size(&path), relative(&request.root, &path)?));
        }
    }
    if framework == Framework::Go {
        // `go test ./...` leaves out testdata folders and names starting with `_` or `.`.
        let ignored = |c: &str| c == "testdata" || c.starts_with('_') || (c.starts_with('.') && c != ".");
        tests.retain(|(_, rel)| !rel.split("::").next().unwrap_or_default().split('/').any(ignored));
    }
    if framework.unit_is_folder() {
        tests = tests
            .into_iter()
            .map(|(size, rel)| {
                // `pkg/a::TestX` names a case of a package and stays; a file before `::` names its folder.
                let (path, case) = rel.split_once("::").map_or((rel.as_str(), None), |(p, c)| (p, Some(c)));
                let dir = if request.root.join(path).is_dir() {
                    path.to_string()
                } else {
                    Path::new(path).parent().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default()
                };
                let dir = if dir.is_empty() { ".".to_string() } else { dir };
                (
                    size,
                    match case {
                        Some(case) => format!("{dir}::{case}"),
                        None => dir,
                    },
                )
            })
            .collect();
    }
    tests.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let mut seen = std::collections::HashSet::new();
    let tests = tests.into_iter().map(|(_, p)| p).filter(|p| seen.insert(p.clone())).collect();
    Ok(Found { framework, patterns, tests })
}

/// `--isolation test` for pytest: every file becomes its test cases (`pytest --collect-only`),
/// so that each case runs in a process of its own. A file that yields no case (a collection
/// error, say) stays a unit, so its error is reported when it runs.
pub fn pytest_cases(
    root: &Path,
    tests: &[String],
    python: Option<&str>,
    env: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<String>, Error> {
    let python = python
        .map(str::to_string)
        .or_else(|| std::env::var("TESTGRID_PYTHON").ok())
        .unwrap_or_else(|| "python3".into());
    let output = std::process::Command::new(&python)
        // The runners' rootdir is the workspace root: node ids must be relative to it too.
        .args(["-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "--rootdir", "."])
        .arg("--")
        .args(tests)
        .current_dir(root)
        .envs(env)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| {
            Error::Usage(format!("cannot run `{python} -m pytest --collect-only`: {e}; pass --python PATH"))
        })?;
    let text = String::from_utf8_lossy(&output.stdout);
    let ids: Vec<&str> = text.lines().take_while(|l| !l.trim().is_empty()).filter(|l| l.contains("::")).collect();
    // 0: collected; 2: some files did not collect (they stay units, and report their error);
    // 5: nothing collected. Anything else (pytest missing, a usage error) is not a collection.
    if !matches!(output.status.code(), Some(0 | 2 | 5)) {
        return Err(Error::Usage(format!(
            "`{python} -m pytest --collect-only` failed ({}): {}{}",
            output.status,
            text.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let mut units = Vec::new();
    for test in tests {
        let prefix = format!("{test}::");
        let mut found: Vec<String> =
            ids.iter().filter(|id| **id == test || id.starts_with(&prefix)).map(|id| id.to_string()).collect();
        if found.is_empty() {
            found.push(test.clone());
        }
        units.extend(found);
    }
    let mut seen = std::collections::HashSet::new();
    units.retain(|u| seen.insert(u.clone()));
    Ok(units)
}

/// The nearest folder holding `marker` (`Cargo.toml`, `package.json`) at or above every one of
/// `places` (absolute), inside `root`.
pub fn project_dir(root: &Path, places: &[PathBuf], marker: &str) -> Option<PathBuf> {
    nearest(root, places, |d| d.join(marker).is_file())
}

/// The nearest folder for which `is_project` holds at or above every one of `places`, inside
/// `root`.
fn nearest(root: &Path, places: &[PathBuf], is_project: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    let mut common = places.first().cloned().unwrap_or_else(|| root.to_path_buf());
    for place in places {
        while !place.starts_with(&common) {
            if !common.pop() {
                break;
            }
        }
    }
    common.ancestors().filter(|d| d.starts_with(root)).find(|d| is_project(d)).map(Path::to_path_buf)
}

/// The project of the paths asked for, for a warm runner to start in: the nearest folder at or
/// above them that holds the framework's configuration (a `package.json` for JavaScript;
/// `pytest.ini`, or a `pyproject.toml`, `tox.ini` or `setup.cfg` with a pytest section, for
/// pytest), or the root when there is none; relative to the root.
pub fn runner_project(root: &Path, paths: &[PathBuf], framework: Framework) -> Result<String, Error> {
    let cwd = std::env::current_dir().and_then(|d| d.canonicalize()).unwrap_or_else(|_| root.to_path_buf());
    let places: Vec<PathBuf> = if paths.is_empty() {
        vec![cwd]
    } else {
        paths
            .iter()
            .map(|p| {
                let text = p.to_string_lossy();
                let file = text.split_once("::").map(|(f, _)| PathBuf::from(f)).unwrap_or_else(|| p.clone());
                cwd.join(file).canonicalize().unwrap_or_else(|_| cwd.clone())
            })
            .collect()
    };
    let contains = |dir: &Path, file: &str, section: &str| {
        std::fs::read_to_string(dir.join(file)).is_ok_and(|text| text.contains(section))
    };
    let is_project = |dir: &Path| match framework {
        Framework::Pytest => {
            dir.join("pytest.ini").is_file()
                || contains(dir, "pyproject.toml", "[tool.pytest")
                || contains(dir, "tox.ini", "[pytest]")
                || contains(dir, "setup.cfg", "[tool:pytest]")
        }
        _ => dir.join("package.json").is_file(),
    };
    let dir = nearest(root, &places, is_project).unwrap_or_else(|| root.to_path_buf());
    relative(root, &dir)
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

pub(crate) fn glob_set(patterns: &[String]) -> Result<GlobSet, Error> {
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        let glob = globset::GlobBuilder::new(pattern.trim_start_matches("./"))
            .literal_separator(true)
            .build()
            .map_err(|e| Error::Usage(format!("bad --pattern `{pattern}`: {e}")))?;
        builder.add(glob);
    }
    builder.build().map_err(|e| Error::Usage(format!("bad --pattern: {e}")))
}

/// The path relative to the root, with `/` separators.
pub(crate) fn relative(root: &Path, path: &Path) -> Result<String, Error> {
    let rel = path
        .strip_prefix(root)
        .map_err(|_| Error::Usage(format!("{} is outside the workspace root {}", path.display(), root.display())))?;
    let text = rel.to_str().ok_or_else(|| {
        Error::Usage(format!("{}: test paths must be valid UTF-8 to be sent to workers", path.display()))
    })?;
    Ok(if text.is_empty() { ".".to_string() } else { text.to_string() })
}

/// Every file under `dir`, honouring .gitignore, skipping hidden and dependency folders.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = ignore::WalkBuilder::new(dir)
        .hidden(true)
        .git_ignore(true)
        .require_git(false)
        .filter_entry(|entry| {
            !(entry.file_type().is_some_and(|t| t.is_dir())
                && entry.file_name().to_str().is_some_and(|name| SKIP_DIRS.contains(&name)))
        })
        .build()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_some_and(|t| t.is_file()))
        .map(|e| e.into_path())
        .collect();
    files.sort();
    files
}

/// Pick the framework from marker files in the searched folders (then the root), then from
/// which framework's test files exist there; shell when nothing else matches.
fn detect(root: &Path, searched: &[PathBuf]) -> Framework {
    let mut places: Vec<&Path> = searched.iter().map(|p| p.as_path()).filter(|p| p.is_dir()).collect();
    for place in &places {
        if let Some(f) = markers(place) {
            return f;
        }
    }
    let files: Vec<PathBuf> =
        searched.iter().flat_map(|p| if p.is_file() { vec![p.clone()] } else { walk(p) }).collect();
    let rels: Vec<String> =
        files.iter().filter_map(|f| f.strip_prefix(root).ok().map(|r| r.to_string_lossy().into_owned())).collect();
    for candidate in [Framework::Pytest, Framework::Go, Framework::Vitest, Framework::Shell] {
        let Ok(set) = glob_set(&candidate.patterns().iter().map(|s| s.to_string()).collect::<Vec<_>>()) else {
            continue;
        };
        if rels.iter().any(|r| set.is_match(r)) {
            if candidate == Framework::Vitest {
                places.push(root);
                return js_framework(&places);
            }
            return candidate;
        }
    }
    markers(root).unwrap_or(Framework::Shell)
}

fn markers(dir: &Path) -> Option<Framework> {
    if dir.join("package.json").is_file() {
        return Some(js_framework(&[dir]));
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

/// vitest when a package.json nearby mentions it, jest otherwise.
fn js_framework(dirs: &[&Path]) -> Framework {
    let vitest = dirs.iter().any(|d| {
        std::fs::read_to_string(d.join("package.json")).is_ok_and(|s| s.contains("\"vitest\""))
            || ["vitest.config.ts", "vitest.config.js", "vitest.config.mjs"].iter().any(|f| d.join(f).is_file())
    });
    if vitest { Framework::Vitest } else { Framework::Jest }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(root: &Path, rel: &str, bytes: usize) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
        std::fs::write(path, vec![b'#'; bytes]).expect("write");
    }

    fn find(root: &Path, framework: Framework, patterns: &[&str]) -> Found {
        let root = root.canonicalize().expect("root exists");
        discover(&Request {
            root: root.clone(),
            paths: vec![root],
            framework,
            patterns: patterns.iter().map(|s| s.to_string()).collect(),
        })
        .expect("discovery works")
    }

    #[test]
    fn shell_files_largest_first_skipping_dependencies() {
        let dir = tempfile::tempdir().expect("tempdir");
        touch(dir.path(), "a.sh", 1);
        touch(dir.path(), "sub/b c.sh", 10);
        touch(dir.path(), "node_modules/x.sh", 1);
        touch(dir.path(), "notes.txt", 1);
        let found = find(dir.path(), Framework::Auto, &[]);
        assert_eq!(found.framework, Framework::Shell);
        assert_eq!(found.tests, vec!["sub/b c.sh".to_string(), "a.sh".to_string()]);
    }

    #[test]
    fn single_star_stays_in_one_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        touch(dir.path(), "t/a.sh", 1);
        touch(dir.path(), "t/deep/b.sh", 1);
        assert_eq!(find(dir.path(), Framework::Shell, &["t/*.sh"]).tests, vec!["t/a.sh".to_string()]);
        assert_eq!(find(dir.path(), Framework::Shell, &["t/**/*.sh"]).tests.len(), 2);
    }

    #[test]
    fn detects_pytest_go_and_vitest() {
        let dir = tempfile::tempdir().expect("tempdir");
        touch(dir.path(), "tests/test_x.py", 1);
        touch(dir.path(), "tests/helper.py", 1);
        let found = find(dir.path(), Framework::Auto, &[]);
        assert_eq!((found.framework, found.tests), (Framework::Pytest, vec!["tests/test_x.py".to_string()]));

        let dir = tempfile::tempdir().expect("tempdir");
        touch(dir.path(), "go.mod", 1);
        touch(dir.path(), "pkg/a/a_test.go", 1);
        touch(dir.path(), "pkg/a/b_test.go", 1);
        let found = find(dir.path(), Framework::Auto, &[]);
        assert_eq!((found.framework, found.tests), (Framework::Go, vec!["pkg/a".to_string()]));

        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("package.json"), r#"{"devDependencies":{"vitest":"3"}}"#).expect("write");
        touch(dir.path(), "src/a.test.ts", 1);
        assert_eq!(find(dir.path(), Framework::Auto, &[]).framework, Framework::Vitest);
    }

    #[test]
    fn go_leaves_out_testdata_and_underscore_folders_as_go_test_does() {
        let dir = tempfile::tempdir().expect("tempdir");
        touch(dir.path(), "go.mod", 1);
        touch(dir.path(), "pkg/a/a_test.go", 1);
        touch(dir.path(), "pkg/a/testdata/fixture/bad_test.go", 1);
        touch(dir.path(), "_old/old_test.go", 1);
        assert_eq!(find(dir.path(), Framework::Go, &[]).tests, vec!["pkg/a".to_string()]);
    }

    #[test]
    fn a_non_utf8_name_that_is_not_a_test_is_ignored() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().expect("tempdir");
        touch(dir.path(), "ok.sh", 1);
        std::fs::write(dir.path().join(std::ffi::OsStr::from_bytes(b"data\xff.bin")), b"x").expect("write");
        assert_eq!(find(dir.path(), Framework::Shell, &[]).tests, vec!["ok.sh".to_string()]);
    }

    #[test]
    fn file_colon_colon_case_names_a_single_case() {
        let dir = tempfile::tempdir().expect("tempdir");
        touch(dir.path(), "tests/test_x.py", 1);
        touch(dir.path(), "tests/test_y.py", 1);
        let root = dir.path().canonicalize().expect("root");
        let found = discover(&Request {
            root: root.clone(),
            paths: vec![root.join("tests/test_x.py::test_one"), root.join("tests/test_y.py")],
            framework: Framework::Pytest,
            patterns: Vec::new(),
        })
        .expect("discovery works");
        assert_eq!(found.tests, vec!["tests/test_y.py".to_string(), "tests/test_x.py::test_one".to_string()]);
    }

    #[test]
    fn go_cases_name_their_package_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        touch(dir.path(), "go.mod", 1);
        touch(dir.path(), "root_test.go", 1);
        touch(dir.path(), "pkg/a/a_test.go", 1);
        let root = dir.path().canonicalize().expect("root");
        let found = discover(&Request {
            root: root.clone(),
            paths: vec![
                root.join("pkg/a::TestX/sub"),
                root.join("pkg/a/a_test.go::TestY"),
                root.join(".::TestRoot"),
                root.join("pkg"),
            ],
            framework: Framework::Auto,
            patterns: Vec::new(),
        })
        .expect("discovery works");
        assert_eq!(found.framework, Framework::Go);
        assert_eq!(found.tests, vec!["pkg/a", ".::TestRoot", "pkg/a::TestX/sub", "pkg/a::TestY"]);
    }

    #[test]
    fn the_project_is_the_nearest_marker_above_everything_asked_for() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().canonicalize().expect("root");
        touch(&root, "package.json", 1);
        touch(&root, "web/package.json", 1);
        touch(&root, "web/src/a.test.js", 1);
        touch(&root, "web/lib/b.test.js", 1);
        touch(&root, "api/c.test.js", 1);
        let web = project_dir(&root, &[root.join("web/src"), root.join("web/lib/b.test.js")], "package.json");
        assert_eq!(web, Some(root.join("web")));
        let both = project_dir(&root, &[root.join("web/src"), root.join("api")], "package.json");
        assert_eq!(both, Some(root.clone()), "paths in two projects: their common one");
        assert_eq!(project_dir(&root, &[root.join("api")], "Cargo.toml"), None);
    }

    #[test]
    fn bad_pattern_is_a_usage_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().canonicalize().expect("root");
        let err = discover(&Request {
            root: root.clone(),
            paths: vec![root],
            framework: Framework::Shell,
            patterns: vec!["a[".into()],
        })
        .expect_err("bad glob");
        assert!(matches!(err, Error::Usage(m) if m.contains("--pattern")));
    }
}
