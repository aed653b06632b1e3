//! pytest's own configuration of what it collects: `python_files` (which files are tests),
//! `testpaths` (where to look when nothing is named) and `norecursedirs` (which folders to
//! skip), read from the configuration file pytest itself would use, so that `testgrid run`
//! picks the files `pytest` alone would run. Reading files only: no pytest is started (a full
//! `--collect-only` up front would delay the first result by the whole suite's import time).
//!
//! The file is the first of `pytest.ini`, `.pytest.ini`, `pyproject.toml` (with
//! `[tool.pytest.ini_options]`, or pytest 9's `[tool.pytest]`), `tox.ini` (with `[pytest]`) and
//! `setup.cfg` (with `[tool:pytest]`) in the nearest folder at or above the paths asked for, as
//! pytest looks for its `rootdir`. Values of these three options are pytest's "args": shell words in an ini file,
//! a string of shell words or a list in `pyproject.toml`.

use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// What pytest collects, as its configuration says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Collect {
    /// The folder of the configuration file (pytest's rootdir); `testpaths` are relative to it.
    pub rootdir: PathBuf,
    /// `python_files`, when set: globs of test file names.
    pub python_files: Option<Vec<String>>,
    /// `testpaths`: folders or files (globs allowed) searched when no path is named.
    pub testpaths: Vec<String>,
    /// `norecursedirs`, when set: globs of folder names pytest does not enter.
    pub norecursedirs: Option<Vec<String>>,
    /// `addopts`' `--ignore PATH` (relative to where pytest runs).
    pub ignore: Vec<String>,
    /// `addopts`' `--ignore-glob PATTERN` (fnmatch on the whole path).
    pub ignore_glob: Vec<String>,
}

/// What `--ignore` and `--ignore-glob` leave out.
#[derive(Clone, Debug)]
pub struct Ignored {
    paths: Vec<PathBuf>,
    globs: GlobSet,
}

impl Ignored {
    /// Whether pytest would leave out the file at `absolute`.
    pub fn contains(&self, absolute: &Path) -> bool {
        self.paths.iter().any(|p| absolute.starts_with(p)) || self.globs.is_match(absolute)
    }
}

/// pytest's own `norecursedirs` when a project sets none.
const DEFAULT_NORECURSEDIRS: &[&str] =
    &["*.egg", ".*", "_darcs", "build", "CVS", "dist", "node_modules", "venv", "{arch}"];

/// The configuration files pytest reads, in its order, and the section each keeps its options in.
const FILES: &[(&str, Section)] = &[
    ("pytest.ini", Section::Ini("pytest")),
    (".pytest.ini", Section::Ini("pytest")),
    ("pyproject.toml", Section::Pyproject),
    ("tox.ini", Section::Ini("pytest")),
    ("setup.cfg", Section::Ini("tool:pytest")),
];

#[derive(Clone, Copy, Debug)]
enum Section {
    Ini(&'static str),
    Pyproject,
}

/// The most bytes of a configuration file read: anything larger is not pytest's.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

impl Collect {
    /// The configuration in `dir`, if pytest would take one from there (`pytest.ini` counts even
    /// without a `[pytest]` section, as in pytest).
    pub fn read(dir: &Path) -> Option<Collect> {
        for (name, section) in FILES {
            let path = dir.join(name);
            let Ok(meta) = std::fs::metadata(&path) else { continue };
            if !meta.is_file() || meta.len() > MAX_CONFIG_BYTES {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&path) else { continue };
            let options = match section {
                Section::Ini(section) => ini_options(&text, section),
                Section::Pyproject => pyproject_options(&text),
            };
            match options {
                Some(options) => return Some(Collect { rootdir: dir.to_path_buf(), ..options }),
                None if name.ends_with("pytest.ini") => {
                    return Some(Collect { rootdir: dir.to_path_buf(), ..Collect::default() });
                }
                None => {}
            }
        }
        None
    }

    /// The three options as `get` finds them in a file (the rootdir is set by the caller).
    fn from_options(get: impl Fn(&str) -> Option<Vec<String>>) -> Collect {
        let addopts = get("addopts").unwrap_or_default();
        Collect {
            rootdir: PathBuf::new(),
            python_files: get("python_files"),
            testpaths: get("testpaths").unwrap_or_default(),
            norecursedirs: get("norecursedirs"),
            ignore: option_values(&addopts, "--ignore"),
            ignore_glob: option_values(&addopts, "--ignore-glob"),
        }
    }

    /// What `addopts`' `--ignore` and `--ignore-glob` leave out, for pytest run in `cwd`.
    pub fn ignored(&self, cwd: &Path) -> Option<Ignored> {
        if self.ignore.is_empty() && self.ignore_glob.is_empty() {
            return None;
        }
        let mut globs = GlobSetBuilder::new();
        for pattern in &self.ignore_glob {
            // fnmatch: `*` crosses `/`, and the pattern is matched against the whole path.
            if let Ok(glob) = GlobBuilder::new(pattern).literal_separator(false).build() {
                globs.add(glob);
            }
        }
        Some(Ignored {
            paths: self.ignore.iter().map(|p| cwd.join(p)).collect(),
            globs: globs.build().unwrap_or_else(|_| GlobSet::empty()),
        })
    }

    /// Whether `dir` holds a configuration pytest would use.
    pub fn is_config_dir(dir: &Path) -> bool {
        Collect::read(dir).is_some()
    }

    /// The file patterns of `python_files` as globs relative to the workspace root.
    pub fn patterns(&self) -> Option<Vec<String>> {
        self.python_files
            .as_ref()
            .map(|names| names.iter().map(|n| format!("**/{}", n.trim_start_matches("./"))).collect())
    }

    /// The places `testpaths` names under the rootdir that exist (globs expanded), sorted.
    pub fn testpath_places(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for entry in &self.testpaths {
            if entry.contains(['*', '?', '[']) {
                let Ok(glob) = GlobBuilder::new(entry).literal_separator(true).build() else { continue };
                let matcher = glob.compile_matcher();
                let walker = ignore::WalkBuilder::new(&self.rootdir).standard_filters(false).build();
                for item in walker.filter_map(Result::ok) {
                    if let Ok(rel) = item.path().strip_prefix(&self.rootdir)
                        && !rel.as_os_str().is_empty()
                        && matcher.is_match(rel)
                    {
                        found.push(item.into_path());
                    }
                }
            } else {
                let path = self.rootdir.join(entry);
                if path.exists() {
                    found.push(path);
                }
            }
        }
        found.sort();
        found.dedup();
        found
    }
}

/// The folder names pytest does not enter: the project's `norecursedirs`, else pytest's own.
pub fn skipped_dirs(collect: Option<&Collect>) -> GlobSet {
    let names: Vec<&str> = match collect.and_then(|c| c.norecursedirs.as_deref()) {
        Some(names) => names.iter().map(String::as_str).collect(),
        None => DEFAULT_NORECURSEDIRS.to_vec(),
    };
    let mut builder = GlobSetBuilder::new();
    for name in names {
        // fnmatch has no `{a,b}`: braces are plain characters there (pytest's `{arch}`).
        let pattern = name.replace('{', "[{]").replace('}', "[}]");
        if let Ok(glob) = GlobBuilder::new(pattern.trim_end_matches('/')).literal_separator(true).build() {
            builder.add(glob);
        }
    }
    // Patterns that do not compile were skipped above, so building cannot fail; if it did,
    // nothing would be skipped, which is pytest's behaviour for an empty list.
    builder.build().unwrap_or_else(|_| GlobSet::empty())
}

/// The three options of an ini file's `[section]`; `None` when it has no such section.
fn ini_options(text: &str, section: &str) -> Option<Collect> {
    let mut in_section = false;
    let mut found = false;
    let mut values: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if let Some(name) = trimmed.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            in_section = name.trim() == section;
            found |= in_section;
            continue;
        }
        if !in_section || trimmed.is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            // A continuation line of the previous value.
            if let Some((_, value)) = values.last_mut() {
                value.push('\n');
                value.push_str(trimmed);
            }
            continue;
        }
        let Some(at) = trimmed.find(['=', ':']) else { continue };
        let (key, value) = trimmed.split_at(at);
        values.push((key.trim().to_string(), value[1..].trim().to_string()));
    }
    if !found {
        return None;
    }
    Some(Collect::from_options(|key| values.iter().rev().find(|(k, _)| k == key).map(|(_, v)| shell_words(v))))
}

/// The three options of `pyproject.toml`'s `[tool.pytest.ini_options]`, or of `[tool.pytest]`
/// itself (pytest 9's native TOML configuration); `None` without either.
fn pyproject_options(text: &str) -> Option<Collect> {
    let doc: toml::Table = text.parse().ok()?;
    let pytest = doc.get("tool")?.get("pytest")?.as_table()?;
    let options = match pytest.get("ini_options") {
        Some(ini) => ini.as_table()?,
        None => pytest,
    };
    Some(Collect::from_options(|key| match options.get(key)? {
        toml::Value::String(s) => Some(shell_words(s)),
        toml::Value::Array(items) => Some(items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()),
        _ => None,
    }))
}

/// The values an option has in a list of arguments: `--opt=VALUE` and `--opt VALUE`.
fn option_values(args: &[String], option: &str) -> Vec<String> {
    let mut values = Vec::new();
    let mut words = args.iter();
    while let Some(word) = words.next() {
        if word == option {
            values.extend(words.next().cloned());
        } else if let Some(value) = word.strip_prefix(option).and_then(|rest| rest.strip_prefix('=')) {
            values.push(value.to_string());
        }
    }
    values
}

/// pytest's "args" values: shell words (quotes group), falling back to whitespace.
fn shell_words(text: &str) -> Vec<String> {
    shlex::split(text).unwrap_or_else(|| text.split_whitespace().map(str::to_string).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ini_sections_with_continuation_lines_and_comments() {
        let text = "[other]\ntestpaths = nope\n[pytest]\n# a comment\naddopts = -q\ntestpaths =\n    tests\n    integration\npython_files = check_*.py 'with space_*.py'\nnorecursedirs: .git build\n";
        let c = ini_options(text, "pytest").expect("a [pytest] section");
        assert_eq!(c.testpaths, vec!["tests", "integration"]);
        assert_eq!(c.python_files, Some(vec!["check_*.py".to_string(), "with space_*.py".to_string()]));
        assert_eq!(c.norecursedirs, Some(vec![".git".to_string(), "build".to_string()]));
        let opts = ini_options(
            "[pytest]\naddopts = -q --ignore=tests/old --ignore tests/x.py --ignore-glob=*_slow.py --ignore-globber=y\n",
            "pytest",
        );
        let opts = opts.expect("section");
        assert_eq!(opts.ignore, vec!["tests/old", "tests/x.py"]);
        assert_eq!(opts.ignore_glob, vec!["*_slow.py"]);
        let ignored = opts.ignored(Path::new("/w")).expect("something is ignored");
        assert!(ignored.contains(Path::new("/w/tests/old/test_a.py")) && ignored.contains(Path::new("/w/tests/x.py")));
        assert!(ignored.contains(Path::new("/w/tests/deep/test_db_slow.py")));
        assert!(
            !ignored.contains(Path::new("/w/tests/test_new.py")) && !ignored.contains(Path::new("/w/tests/oldish.py"))
        );
        assert!(ini_options("[tool:pytest]\nx = 1\n", "pytest").is_none());
        let setup = ini_options("[metadata]\nname = x\n[tool:pytest]\npython_files = t_*.py\n", "tool:pytest");
        assert_eq!(setup.expect("section").python_files, Some(vec!["t_*.py".to_string()]));
    }

    #[test]
    fn pyproject_takes_lists_and_strings() {
        let text = "[project]\nname = 'x'\n[tool.pytest.ini_options]\ntestpaths = ['tests']\npython_files = 'check_*.py test_*.py'\n";
        let c = pyproject_options(text).expect("ini_options");
        assert_eq!(c.testpaths, vec!["tests"]);
        assert_eq!(c.python_files, Some(vec!["check_*.py".to_string(), "test_*.py".to_string()]));
        assert_eq!(c.norecursedirs, None);
        assert!(pyproject_options("[tool.black]\nline-length = 99\n").is_none());
        let native = pyproject_options("[tool.pytest]\ntestpaths = ['t']\n").expect("pytest 9's table");
        assert_eq!(native.testpaths, vec!["t"]);
        assert!(pyproject_options("not toml [").is_none());
    }

    #[test]
    fn skipped_dirs_follow_the_project_or_pytests_defaults() {
        let defaults = skipped_dirs(None);
        for name in ["build", "dist", ".hidden", "pkg.egg", "{arch}", "venv"] {
            assert!(defaults.is_match(name), "{name}");
        }
        assert!(!defaults.is_match("tests") && !defaults.is_match("arch"));
        let own = Collect { norecursedirs: Some(vec!["skipme".into(), "gen_*".into()]), ..Collect::default() };
        let set = skipped_dirs(Some(&own));
        assert!(set.is_match("skipme") && set.is_match("gen_x"));
        assert!(!set.is_match("build"), "a project's own list replaces pytest's defaults");
    }

    #[test]
    fn the_first_file_pytest_would_read_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("tox.ini"), "[pytest]\ntestpaths = from_tox\n").expect("write");
        std::fs::write(dir.path().join("pyproject.toml"), "[tool.black]\nx = 1\n").expect("write");
        let c = Collect::read(dir.path()).expect("tox.ini counts");
        assert_eq!(c.testpaths, vec!["from_tox"]);
        std::fs::write(dir.path().join("pytest.ini"), "# empty\n").expect("write");
        assert_eq!(Collect::read(dir.path()).expect("pytest.ini counts").testpaths, Vec::<String>::new());
        std::fs::create_dir_all(dir.path().join("tests/unit")).expect("mkdir");
        let globbed = Collect {
            rootdir: dir.path().to_path_buf(),
            testpaths: vec!["tes*".into(), "missing".into()],
            ..Collect::default()
        };
        assert_eq!(globbed.testpath_places(), vec![dir.path().join("tests")]);
    }
}
