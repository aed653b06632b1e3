//! Discovery on real folders: patterns, detection, ordering, Go packages, named cases.

use std::path::{Path, PathBuf};

use super::*;
use crate::args::{Isolation, OutputArgs};
use crate::settings::Place as Where;

/// What `testgrid run` with these paths, framework and patterns resolves to, run from `root`.
fn request(root: &Path, paths: Vec<PathBuf>, framework: impl Into<FrameworkChoice>, patterns: &[&str]) -> Settings {
    Settings {
        root: root.to_path_buf(),
        cwd: root.to_path_buf(),
        paths,
        framework: framework.into(),
        patterns: patterns.iter().map(|s| s.to_string()).collect(),
        filters: Vec::new(),
        excludes: Vec::new(),
        command: None,
        python: None,
        worker_python: "python3".into(),
        worker_node: "node".into(),
        isolation: Isolation::Warm,
        env: Default::default(),
        secrets: Vec::new(),
        place: Where::Grid("http://unused".into()),
        labels: Vec::new(),
        timeout: std::time::Duration::ZERO,
        session_timeout: None,
        retries: 0,
        max_worker_losses: None,
        cancel_on_disconnect: false,
        keep_order: false,
        max_fail: 0,
        last_failed: false,
        priority: 1,
        max_slots: 0,
        speculate: false,
        detach: false,
        upload: true,
        setup: None,
        project: String::new(),
        artifacts: Vec::new(),
        artifacts_max_size: 0,
        bundle_limits: crate::bundle::Limits::default(),
        cargo: Default::default(),
        cargo_asked: false,
        framework_args: Vec::new(),
        layers: Default::default(),
        output: OutputArgs::default(),
    }
}

fn touch(root: &Path, rel: &str, bytes: usize) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
    std::fs::write(path, vec![b'#'; bytes]).expect("write");
}

fn find(root: &Path, framework: impl Into<FrameworkChoice>, patterns: &[&str]) -> Discovered {
    let root = root.canonicalize().expect("root exists");
    discover(&request(&root, vec![root.clone()], framework, patterns)).expect("discovery works")
}

#[test]
fn shell_files_largest_first_skipping_dependencies() {
    let dir = tempfile::tempdir().expect("tempdir");
    touch(dir.path(), "a.sh", 1);
    touch(dir.path(), "sub/b c.sh", 10);
    touch(dir.path(), "node_modules/x.sh", 1);
    touch(dir.path(), "notes.txt", 1);
    let found = find(dir.path(), FrameworkChoice::Auto, &[]);
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
    let found = find(dir.path(), FrameworkChoice::Auto, &[]);
    assert_eq!((found.framework, found.tests), (Framework::Pytest, vec!["tests/test_x.py".to_string()]));

    let dir = tempfile::tempdir().expect("tempdir");
    touch(dir.path(), "go.mod", 1);
    touch(dir.path(), "pkg/a/a_test.go", 1);
    touch(dir.path(), "pkg/a/b_test.go", 1);
    let found = find(dir.path(), FrameworkChoice::Auto, &[]);
    assert_eq!((found.framework, found.tests), (Framework::Go, vec!["pkg/a".to_string()]));

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("package.json"), r#"{"devDependencies":{"vitest":"3"}}"#).expect("write");
    touch(dir.path(), "src/a.test.ts", 1);
    let root = dir.path().canonicalize().expect("root");
    let settings = request(&root, vec![root.clone()], FrameworkChoice::Auto, &[]);
    assert_eq!(detect::detect(&root, &places(&settings).expect("places")), Framework::Vitest);
    // From a folder inside a project whose package.json is below the root.
    std::fs::rename(root.join("package.json"), root.join("src/package.json")).expect("move");
    touch(&root, "src/deep/b.test.ts", 1);
    let settings = request(&root, vec![root.join("src/deep")], FrameworkChoice::Auto, &[]);
    assert_eq!(detect::detect(&root, &places(&settings).expect("places")), Framework::Vitest);
}

#[test]
fn a_js_project_without_its_framework_installed_names_the_fix_unless_patterns_are_given() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().canonicalize().expect("root");
    std::fs::write(root.join("package.json"), r#"{"devDependencies":{"vitest":"3"}}"#).expect("write");
    touch(&root, "src/a.test.ts", 1);
    for framework in [Framework::Vitest, Framework::Jest] {
        let err = discover(&request(&root, vec![], framework, &[])).expect_err("nothing installed");
        assert!(matches!(err, Error::JsNotInstalled { .. }), "{err}");
        assert!(err.to_string().contains("npm ci") && err.to_string().contains("--pattern"), "{err}");
        assert_eq!(err.code(), crate::error::exit::USAGE);
        let found = discover(&request(&root, vec![], framework, &["src/*.ts"])).expect("--pattern needs no framework");
        assert_eq!(found.tests, vec!["src/a.test.ts".to_string()]);
    }
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
    let paths = vec![root.join("tests/test_x.py::test_one"), root.join("tests/test_y.py")];
    let found = discover(&request(&root, paths, Framework::Pytest, &[])).expect("discovery works");
    assert_eq!(found.tests, vec!["tests/test_y.py".to_string(), "tests/test_x.py::test_one".to_string()]);
}

#[test]
fn go_cases_name_their_package_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    touch(dir.path(), "go.mod", 1);
    touch(dir.path(), "root_test.go", 1);
    touch(dir.path(), "pkg/a/a_test.go", 1);
    let root = dir.path().canonicalize().expect("root");
    let paths = vec![
        root.join("pkg/a::TestX/sub"),
        root.join("pkg/a/a_test.go::TestY"),
        root.join(".::TestRoot"),
        root.join("pkg"),
    ];
    let found = discover(&request(&root, paths, FrameworkChoice::Auto, &[])).expect("discovery works");
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
    let err = discover(&request(&root, vec![root.clone()], Framework::Shell, &["a["])).expect_err("bad glob");
    assert!(matches!(err, Error::BadPattern { .. }) && err.to_string().contains("--pattern"), "{err}");
    assert_eq!(err.code(), crate::error::exit::USAGE);
}
