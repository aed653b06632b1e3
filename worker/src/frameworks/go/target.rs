//! What a Go unit names: a package folder under the job's root, and maybe one test (or
//! subtest) of it; and the `-test.run` / `-test.list` words for it.
//!
//! Pure: it must not run anything.

use std::path::{Component, Path};

/// What a unit names: a package folder and maybe one test (or subtest) of it.
#[derive(Debug, PartialEq)]
pub struct Target {
    pub pkg: String,
    pub case: Option<String>,
}

/// The unit `path` under the workspace `root`.
pub fn parse_target(path: &str, root: &Path) -> Result<Target, String> {
    let (pkg, case) = match path.split_once("::") {
        Some((pkg, case)) => (pkg, Some(case)),
        None => (path, None),
    };
    let pkg = pkg.trim_end_matches('/');
    let pkg = if pkg.is_empty() { "." } else { pkg };
    let usage = "Go units are package folders relative to the workspace root (`pkg/a`, `.`), optionally with \
                 `::TestName` or `::TestName/subtest`";
    if case.is_some_and(|c| c.is_empty() || c.starts_with('/')) {
        return Err(format!("`{path}` names no test after `::`; {usage}"));
    }
    let rel = Path::new(pkg);
    if rel.is_absolute() || rel.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!("`{path}` is not inside the workspace root; {usage}"));
    }
    if !root.join(rel).is_dir() {
        return Err(format!(
            "`{pkg}` is not a folder under the workspace root {} on this worker; {usage}",
            root.display()
        ));
    }
    Ok(Target { pkg: pkg.to_string(), case: case.map(str::to_string) })
}

/// `-test.run` for one test or subtest: each level matched exactly.
pub fn run_pattern(case: &str) -> String {
    case.split('/').map(|level| format!("^{}$", quote_meta(level))).collect::<Vec<_>>().join("/")
}

/// Escape RE2 metacharacters (Go's `regexp.QuoteMeta`).
fn quote_meta(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if r"\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A name `-test.list` prints that the binary runs without extra flags (benchmarks need -bench).
pub fn is_runnable_name(line: &str) -> bool {
    ["Test", "Example", "Fuzz"].iter().any(|p| line.starts_with(p))
        && line.chars().all(|c| c.is_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_name_package_folders_and_cases() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("pkg/a")).expect("mkdir");
        let root = dir.path();
        let t = |pkg: &str, case: Option<&str>| Target { pkg: pkg.into(), case: case.map(str::to_string) };
        assert_eq!(parse_target("pkg/a", root), Ok(t("pkg/a", None)));
        assert_eq!(parse_target(".", root), Ok(t(".", None)));
        assert_eq!(parse_target("pkg/a::TestX/sub", root), Ok(t("pkg/a", Some("TestX/sub"))));
        assert_eq!(parse_target(".::TestRoot", root), Ok(t(".", Some("TestRoot"))));
        for bad in ["../x", "/etc", "pkg/none", "pkg/a::", "pkg/a::/x"] {
            let err = parse_target(bad, root).expect_err(bad);
            assert!(err.contains("package folders relative to the workspace root"), "{bad}: {err}");
        }
    }

    #[test]
    fn run_patterns_match_each_level_exactly() {
        assert_eq!(run_pattern("TestX"), "^TestX$");
        assert_eq!(run_pattern("TestX/a.b(1)"), r"^TestX$/^a\.b\(1\)$");
        assert_eq!(run_pattern("TestX/with_space/inner"), "^TestX$/^with_space$/^inner$");
    }

    #[test]
    fn listed_names_keep_tests_examples_and_fuzz_targets() {
        let names: Vec<&str> = ["TestA", "BenchmarkB", "ExampleC", "FuzzD", "setup failed: x", "ok  \tpkg"]
            .into_iter()
            .filter(|l| is_runnable_name(l))
            .collect();
        assert_eq!(names, vec!["TestA", "ExampleC", "FuzzD"]);
    }
}
