//! The warm pytest runner end to end: real pytest (installed by the test into a venv under the
//! target directory), real coordinator and workers, per-case results compared with pytest's own.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use support::{Workspace, case_outcomes, events, final_outcomes, spawn_coordinator, stderr, stdout, testgrid};

/// A venv with pytest, made once per test binary.
fn venv() -> &'static Path {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pytest-venv");
        let python = dir.join("bin/python");
        let ready = Command::new(&python)
            .args(["-c", "import pytest, toolz, pytest_cov"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ready {
            let made = Command::new("python3").arg("-m").arg("venv").arg(&dir).status().expect("python3 runs");
            assert!(made.success(), "python3 -m venv failed");
            let pip = Command::new(&python)
                .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "pytest>=8,<10", THIRD_PARTY])
                .arg("pytest-cov>=5,<8")
                .status()
                .expect("pip runs");
            assert!(pip.success(), "pip install pytest failed");
        }
        dir
    })
}

/// A small pure-Python library whose wheel ships its own tests (`toolz/tests`).
const THIRD_PARTY: &str = "toolz==1.2.0";

/// PATH with the venv's bin first, so that `python3` is the venv's.
fn path_with_venv() -> String {
    format!("{}:{}", venv().join("bin").display(), std::env::var("PATH").unwrap_or_default())
}

const SUITE: &[(&str, &str)] = &[
    (
        "tests/test_mixed.py",
        r#"
import pytest

@pytest.fixture(scope="module")
def resource():
    yield 42

def test_pass(resource):
    print("some output")
    assert resource == 42

def test_fail():
    assert 1 + 1 == 3, "arithmetic"

@pytest.mark.skip(reason="not here")
def test_skip():
    pass

@pytest.mark.xfail(reason="known bug")
def test_xfail():
    assert False

@pytest.fixture
def broken():
    raise RuntimeError("setup exploded")

def test_setup_error(broken):
    pass

class TestGroup:
    def test_in_class(self):
        assert True
"#,
    ),
    ("tests/test_other.py", "def test_one():\n    assert True\n\ndef test_two():\n    assert 'a' in 'abc'\n"),
    ("tests/test_broken_import.py", "import module_that_does_not_exist\n\ndef test_never():\n    pass\n"),
];

fn write_files(ws: &Workspace, files: &[(&str, &str)]) {
    for (path, body) in files {
        let full = ws.root().join(path);
        std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
        std::fs::write(full, body).expect("write");
    }
}

fn write_suite(ws: &Workspace) {
    write_files(ws, SUITE);
}

/// `testgrid run --framework pytest --json ARGS` in the workspace, with pytest on PATH.
fn run_pytest(ws: &Workspace, args: &[&str]) -> std::process::Output {
    testgrid(&ws.root())
        .args(["run", "--framework", "pytest", "--json"])
        .args(args)
        .env("PATH", path_with_venv())
        .output()
        .expect("runs")
}

/// pytest alone (the test venv's), in `root`, with `args`.
fn own_pytest(root: &Path, args: &[&std::ffi::OsStr]) -> Output {
    Command::new(venv().join("bin/python"))
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .args(args)
        .current_dir(root)
        .output()
        .expect("pytest runs")
}

/// pytest's own verdicts, from its JUnit report: nodeid-like name -> outcome word.
fn pytest_outcomes(root: &Path, paths: &[&str]) -> BTreeMap<String, String> {
    pytest_outcomes_with(root, paths, &[])
}

/// [`pytest_outcomes`] of pytest run with `extra` arguments too.
fn pytest_outcomes_with(root: &Path, paths: &[&str], extra: &[&str]) -> BTreeMap<String, String> {
    let xml = root.join("reference.xml");
    let mut args: Vec<&std::ffi::OsStr> = extra.iter().chain(paths).map(std::ffi::OsStr::new).collect();
    args.extend([std::ffi::OsStr::new("--junitxml"), xml.as_os_str()]);
    let status = own_pytest(root, &args);
    assert!(status.status.code().is_some(), "pytest ran");
    // Read pytest's report with Python's own XML parser; classname + name back to node ids.
    const READ: &str = r#"
import json, os, sys, xml.etree.ElementTree as ET
out = {}
for case in ET.parse(sys.argv[1]).iter("testcase"):
    parts = case.get("classname").split(".")
    for cut in range(len(parts), 0, -1):
        if os.path.exists("/".join(parts[:cut]) + ".py"):
            break
    node = "/".join(parts[:cut]) + ".py" + "".join("::" + p for p in parts[cut:]) + "::" + case.get("name")
    tags = {child.tag: child for child in case}
    if "failure" in tags:
        outcome = "failed"
    elif "error" in tags:
        outcome = "error"
    elif "skipped" in tags:
        outcome = "passed" if tags["skipped"].get("type") == "pytest.xfail" else "skipped"
    else:
        outcome = "passed"
    out[node] = outcome
print(json.dumps(out))
"#;
    let read = Command::new(venv().join("bin/python"))
        .args(["-c", READ])
        .arg(&xml)
        .current_dir(root)
        .output()
        .expect("python runs");
    serde_json::from_slice(&read.stdout).unwrap_or_else(|e| panic!("reading pytest's report: {e}: {}", stderr(&read)))
}

fn check_run(out: &std::process::Output, root: &Path) {
    assert_eq!(out.status.code(), Some(1), "stdout: {}\nstderr: {}", stdout(out), stderr(out));
    let events = events(out);
    let files = final_outcomes(&events);
    assert_eq!(files["tests/test_mixed.py"], "failed");
    assert_eq!(files["tests/test_other.py"], "passed");
    assert_eq!(files["tests/test_broken_import.py"], "error", "a collection error is an error for that file");
    let ours = case_outcomes(&events);
    let theirs = pytest_outcomes(root, &["tests/test_mixed.py", "tests/test_other.py"]);
    assert_eq!(ours, theirs, "the same per-case outcomes as pytest's own run");
    let xfail = events
        .iter()
        .flat_map(|e| e["cases"].as_array().cloned().unwrap_or_default())
        .find(|c| c["name"] == "tests/test_mixed.py::test_xfail")
        .expect("xfail case");
    assert!(xfail["message"].as_str().is_some_and(|m| m.starts_with("xfail")), "{xfail}");
}

#[test]
fn warm_runner_in_local_mode_matches_pytest() {
    let ws = Workspace::new();
    write_suite(&ws);
    let out = run_pytest(&ws, &["--local", "2"]);
    check_run(&out, &ws.root());
}

#[test]
fn warm_runner_on_a_real_grid_matches_pytest_and_writes_junit_per_case() {
    let ws = Workspace::new();
    write_suite(&ws);
    let (coordinator, grpc, _http) = spawn_coordinator("127.0.0.1:0", "127.0.0.1:0", &[]);
    let url = format!("http://{grpc}");
    // The workers find pytest through their own PATH, as a worker image would.
    let path = path_with_venv();
    let names: Vec<String> = (1..=2).map(|i| format!("w{i}")).collect();
    let procs: Vec<support::Proc> =
        names.iter().map(|n| support::spawn_worker_env(&url, n, &ws.root(), &[("PATH", &path)])).collect();
    support::wait_for_workers(&url, &names);
    let junit = ws.root().join("junit.xml");
    let out = testgrid(&ws.root())
        .args(["run", "--grid", &url, "--framework", "pytest", "--json", "--junit"])
        .arg(&junit)
        .output()
        .expect("runs");
    check_run(&out, &ws.root());
    let xml = std::fs::read_to_string(&junit).expect("JUnit");
    assert!(xml.contains(r#"name="tests/test_mixed.py::test_fail""#), "{xml}");
    assert!(xml.contains("<skipped"), "skips stay visible: {xml}");
    assert!(xml.contains(r#"name="xfail""#), "xfail stays visible: {xml}");
    drop(procs);
    drop(coordinator);
}

#[test]
fn a_runner_that_dies_hangs_or_segfaults_is_reported_and_the_rest_still_runs() {
    let ws = Workspace::new();
    let files: &[(&str, &str)] = &[
        ("tests/test_exit.py", "import os\n\ndef test_exits():\n    os._exit(3)\n\ndef test_after_exit():\n    pass\n"),
        ("tests/test_hang.py", "import time\n\ndef test_hangs():\n    time.sleep(600)\n"),
        ("tests/test_segv.py", "import ctypes\n\ndef test_segfaults():\n    ctypes.string_at(0)\n"),
        ("tests/test_fine_1.py", "def test_a():\n    pass\n"),
        ("tests/test_fine_2.py", "def test_b():\n    pass\n"),
        ("tests/test_fine_3.py", "def test_c():\n    pass\n"),
    ];
    write_files(&ws, files);
    let out = run_pytest(&ws, &["--local", "2", "--timeout", "3s"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let events = events(&out);
    let files = final_outcomes(&events);
    assert_eq!(files["tests/test_exit.py"], "failed");
    assert_eq!(files["tests/test_segv.py"], "failed");
    assert_eq!(files["tests/test_hang.py"], "timed_out");
    for fine in ["tests/test_fine_1.py", "tests/test_fine_2.py", "tests/test_fine_3.py"] {
        assert_eq!(files[fine], "passed", "{fine} still ran");
    }
    let cases = case_outcomes(&events);
    assert_eq!(cases["tests/test_exit.py::test_exits"], "failed");
    assert_eq!(cases["tests/test_segv.py::test_segfaults"], "failed");
    assert_eq!(cases["tests/test_hang.py::test_hangs"], "timed_out");
    assert_eq!(cases["tests/test_exit.py::test_after_exit"], "error", "a case the crash kept from running is named");
    let segv =
        events.iter().find(|e| e["event"] == "test_finished" && e["test"] == "tests/test_segv.py").expect("segv event");
    assert!(segv["message"].as_str().is_some_and(|m| m.contains("crashed (signal 11)")), "{segv}");
}

#[test]
fn a_single_case_can_be_asked_for() {
    let ws = Workspace::new();
    write_suite(&ws);
    let out = run_pytest(&ws, &["--local", "1", "tests/test_other.py::test_two", "tests/test_mixed.py::TestGroup"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let cases = case_outcomes(&events(&out));
    let names: Vec<&str> = cases.keys().map(String::as_str).collect();
    assert_eq!(names, vec!["tests/test_mixed.py::TestGroup::test_in_class", "tests/test_other.py::test_two"]);
}

#[test]
fn addopts_stop_early_and_chatty_tests_keep_every_file_and_case_accounted_for() {
    let ws = Workspace::new();
    let files: &[(&str, &str)] = &[
        ("pytest.ini", "[pytest]\naddopts = -x\n"),
        ("tests/test_a.py", "def test_first():\n    assert False\n\ndef test_second():\n    pass\n"),
        ("tests/test_b.py", "def test_b():\n    pass\n"),
        (
            "tests/test_big.py",
            "def test_chatty():\n    for i in range(300000):\n        print('x' * 100, i)\n    assert False, 'after all that'\n",
        ),
    ];
    write_files(&ws, files);
    let out = run_pytest(&ws, &["--local", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let events = events(&out);
    let files = final_outcomes(&events);
    assert_eq!(files["tests/test_b.py"], "passed", "-x in one file does not stop the next");
    assert_eq!(files["tests/test_big.py"], "failed", "a chatty file is reported, not lost");
    let cases = case_outcomes(&events);
    assert_eq!(cases["tests/test_a.py::test_first"], "failed");
    assert_eq!(cases["tests/test_a.py::test_second"], "skipped", "stopped early, still named");
    let big = events
        .iter()
        .flat_map(|e| e["cases"].as_array().cloned().unwrap_or_default())
        .find(|c| c["name"] == "tests/test_big.py::test_chatty")
        .expect("chatty case");
    assert!(
        big["output"].as_str().is_some_and(|o| o.len() < 200_000 && o.contains("after all that")),
        "bounded, tail kept"
    );
}

/// toolz's own suite, copied out of the venv into a workspace.
fn third_party_workspace() -> Workspace {
    let ws = Workspace::new();
    let out = Command::new(venv().join("bin/python"))
        .args(["-c", "import os, toolz; print(os.path.dirname(toolz.__file__))"])
        .output()
        .expect("python runs");
    let source = PathBuf::from(stdout(&out).trim());
    let copied = Command::new("cp").arg("-r").arg(&source).arg(ws.root().join("toolz")).status().expect("cp runs");
    assert!(copied.success(), "copying {} failed", source.display());
    ws
}

#[test]
fn a_third_party_suite_in_local_mode_matches_pytest() {
    let ws = third_party_workspace();
    let out = run_pytest(&ws, &["--local", "2", "toolz"]);
    let ours = case_outcomes(&events(&out));
    let theirs = pytest_outcomes(&ws.root(), &["toolz"]);
    assert!(theirs.len() > 100, "toolz has hundreds of tests: {theirs:?}");
    assert_eq!(ours, theirs, "the same per-case outcomes as pytest's own run\n{}", stderr(&out));
    let expected = if theirs.values().all(|o| o == "passed" || o == "skipped") { 0 } else { 1 };
    assert_eq!(out.status.code(), Some(expected), "{}", stderr(&out));
}

#[test]
fn a_third_party_suite_on_a_real_grid_matches_pytest() {
    let ws = third_party_workspace();
    let (coordinator, grpc, _http) = spawn_coordinator("127.0.0.1:0", "127.0.0.1:0", &[]);
    let url = format!("http://{grpc}");
    let path = path_with_venv();
    let names: Vec<String> = (1..=2).map(|i| format!("w{i}")).collect();
    let workers: Vec<support::Proc> =
        names.iter().map(|n| support::spawn_worker_env(&url, n, &ws.root(), &[("PATH", &path)])).collect();
    support::wait_for_workers(&url, &names);
    let out = run_pytest(&ws, &["--grid", &url, "toolz"]);
    let events = events(&out);
    let ours = case_outcomes(&events);
    assert_eq!(ours, pytest_outcomes(&ws.root(), &["toolz"]), "{}", stderr(&out));
    let workers_used: std::collections::BTreeSet<&str> =
        events.iter().filter(|e| e["event"] == "test_finished").filter_map(|e| e["worker"].as_str()).collect();
    assert_eq!(workers_used.len(), 2, "both workers ran files: {workers_used:?}");
    drop(workers);
    drop(coordinator);
}

#[test]
fn isolation_test_runs_each_case_on_its_own_and_file_a_fresh_runner_per_file_with_the_same_verdicts() {
    let ws = Workspace::new();
    write_suite(&ws);
    let theirs = pytest_outcomes(&ws.root(), &["tests/test_mixed.py", "tests/test_other.py"]);
    for isolation in ["test", "file"] {
        let out = run_pytest(&ws, &["--local", "2", "--isolation", isolation]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let events = events(&out);
        let ours = case_outcomes(&events);
        assert_eq!(ours, theirs, "--isolation {isolation}: the same per-case outcomes as pytest");
        let units = final_outcomes(&events);
        if isolation == "test" {
            assert!(units.contains_key("tests/test_mixed.py::test_fail"), "one unit per case: {units:?}");
            assert_eq!(units["tests/test_mixed.py::test_skip"], "skipped");
            assert_eq!(units["tests/test_broken_import.py"], "error", "a file that does not collect stays a unit");
        } else {
            assert_eq!(units.len(), 3, "one unit per file: {units:?}");
        }
    }
}

#[test]
fn a_worker_recycles_its_warm_runner_after_the_configured_number_of_files() {
    let ws = Workspace::new();
    let pids = ws.root().join("pids.log");
    let body = format!("import os\n\ndef test_pid():\n    open({:?}, 'a').write(f'{{os.getpid()}}\\n')\n", pids);
    let files: Vec<(String, String)> = (0..4).map(|i| (format!("tests/test_p{i}.py"), body.clone())).collect();
    let files: Vec<(&str, &str)> = files.iter().map(|(p, b)| (p.as_str(), b.as_str())).collect();
    write_files(&ws, &files);
    let (coordinator, grpc, _http) = spawn_coordinator("127.0.0.1:0", "127.0.0.1:0", &[]);
    let url = format!("http://{grpc}");
    let path = path_with_venv();
    for (after, expected) in [("2", 2), ("1000", 1)] {
        let _ = std::fs::remove_file(&pids);
        let worker = support::spawn_worker_env(
            &url,
            &format!("recycle-{after}"),
            &ws.root(),
            &[("PATH", &path), ("TESTGRID_RECYCLE_AFTER_FILES", after)],
        );
        support::wait_for_workers(&url, &[format!("recycle-{after}")]);
        let out = run_pytest(&ws, &["--grid", &url]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let log = std::fs::read_to_string(&pids).expect("the tests wrote their pids");
        let distinct: std::collections::BTreeSet<&str> = log.lines().collect();
        assert_eq!(log.lines().count(), 4);
        assert_eq!(distinct.len(), expected, "4 files, recycled after {after}: {log}");
        drop(worker);
    }
    drop(coordinator);
}

#[test]
fn isolation_test_splits_files_under_a_subfolder_with_its_own_pytest_ini() {
    let ws = Workspace::new();
    write_files(
        &ws,
        &[
            ("py/pytest.ini", "[pytest]\n"),
            ("py/tests/test_a.py", "def test_one():\n    pass\n\ndef test_two():\n    pass\n"),
        ],
    );
    let out = run_pytest(&ws, &["--local", "1", "--isolation", "test", "py"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let units = final_outcomes(&events(&out));
    let names: Vec<&str> = units.keys().map(String::as_str).collect();
    assert_eq!(names, vec!["py/tests/test_a.py::test_one", "py/tests/test_a.py::test_two"], "one unit per case");
}

#[test]
fn a_subfolder_with_its_own_pytest_ini_gets_its_configuration_in_warm_runners() {
    let ws = Workspace::new();
    write_files(
        &ws,
        &[
            // `pythonpath` only works if this file is the runner's configuration.
            ("py/pytest.ini", "[pytest]\npythonpath = src\n"),
            ("py/src/helper.py", "def answer():\n    return 42\n"),
            ("py/tests/test_a.py", "import helper\n\ndef test_answer():\n    assert helper.answer() == 42\n"),
        ],
    );
    let out = run_pytest(&ws, &["--local", "1", "py"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stdout(&out), stderr(&out));
    let cases = case_outcomes(&events(&out));
    assert_eq!(cases["py/tests/test_a.py::test_answer"], "passed", "named from the workspace root: {cases:?}");
}

/// The files pytest itself collects, run from the workspace root with no paths.
fn pytest_files(root: &Path) -> Vec<String> {
    let out = Command::new(venv().join("bin/python"))
        .args(["-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"])
        .current_dir(root)
        .output()
        .expect("pytest runs");
    let text = String::from_utf8_lossy(&out.stdout);
    // `FILE::TEST` per case, or `FILE: N` per file when the project's addopts add a `-q`.
    let mut files: Vec<String> = text
        .lines()
        .filter_map(|l| l.split_once("::").or_else(|| l.rsplit_once(": ")).map(|(file, _)| file.to_string()))
        .filter(|f| f.ends_with(".py"))
        .collect();
    files.sort();
    files.dedup();
    files
}

/// The test units `testgrid run` submitted, from its `created` event.
fn submitted_files(out: &std::process::Output) -> Vec<String> {
    let created = events(out).into_iter().find(|e| e["event"] == "created").expect("a created event");
    let mut files: Vec<String> =
        created["tests"].as_array().expect("tests").iter().map(|t| t.as_str().expect("a path").to_string()).collect();
    files.sort();
    files
}

#[test]
fn the_projects_testpaths_python_files_and_norecursedirs_pick_the_files_pytest_would() {
    let ws = Workspace::new();
    let files: &[(&str, &str)] = &[
        ("pytest.ini", "[pytest]\ntestpaths = checks\npython_files = check_*.py\nnorecursedirs = skipme\n"),
        ("checks/check_a.py", "def test_a():\n    pass\n"),
        ("checks/skipme/check_b.py", "def test_b():\n    pass\n"),
        ("checks/test_c.py", "def test_c():\n    pass\n"),
        ("checks/build/check_e.py", "def test_e():\n    pass\n"),
        ("other/check_d.py", "def test_d():\n    pass\n"),
    ];
    write_files(&ws, files);
    let out = run_pytest(&ws, &["--local", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let ours = submitted_files(&out);
    assert_eq!(ours, pytest_files(&ws.root()), "the same files as pytest collects");
    assert_eq!(ours, vec!["checks/build/check_e.py", "checks/check_a.py"]);

    // Without a configuration, pytest's own norecursedirs leave build output alone.
    let plain = Workspace::new();
    let files: &[(&str, &str)] = &[
        ("tests/test_ok.py", "def test_ok():\n    pass\n"),
        ("build/lib/tests/test_built.py", "def test_built():\n    pass\n"),
        ("pkg.egg/test_egg.py", "def test_egg():\n    pass\n"),
    ];
    write_files(&plain, files);
    let out = run_pytest(&plain, &["--local", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let ours = submitted_files(&out);
    assert_eq!(ours, pytest_files(&plain.root()), "the same files as pytest collects");
    assert_eq!(ours, vec!["tests/test_ok.py"]);
}

#[test]
fn addopts_ignore_and_ignore_glob_leave_out_what_pytest_would() {
    let ws = Workspace::new();
    let files: &[(&str, &str)] = &[
        (
            "pyproject.toml",
            "[tool.pytest.ini_options]\naddopts = \"-q --ignore=tests/legacy --ignore-glob=*_slow.py\"\n",
        ),
        ("tests/test_new.py", "def test_new():\n    pass\n"),
        ("tests/legacy/test_old.py", "def test_old():\n    pass\n"),
        ("tests/deep/test_db_slow.py", "def test_slow():\n    pass\n"),
        ("tests/deep/test_db.py", "def test_db():\n    pass\n"),
    ];
    write_files(&ws, files);
    let out = run_pytest(&ws, &["--local", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let ours = submitted_files(&out);
    assert_eq!(ours, pytest_files(&ws.root()), "the same files as pytest collects");
    assert_eq!(ours, vec!["tests/deep/test_db.py", "tests/test_new.py"]);
}

/// coverage.py's report of the project's `.coverage`: per file, (statements, statements run).
fn statement_coverage(root: &Path) -> BTreeMap<String, (u64, u64)> {
    let report = root.join("coverage.json");
    let out = Command::new(venv().join("bin/python"))
        .args(["-m", "coverage", "json", "-q", "-o"])
        .arg(&report)
        .current_dir(root)
        .output()
        .expect("coverage runs");
    assert!(out.status.success(), "coverage json: {}", stderr(&out));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("report")).expect("JSON");
    let files = json["files"].as_object().expect("files");
    files
        .iter()
        .map(|(name, file)| {
            let summary = &file["summary"];
            (
                name.clone(),
                (summary["num_statements"].as_u64().unwrap_or(0), summary["covered_lines"].as_u64().unwrap_or(0)),
            )
        })
        .collect()
}

#[test]
fn pytest_cov_data_of_every_runner_is_combined_into_the_projects_coverage() {
    let ws = Workspace::new();
    let root = ws.root();
    write_files(
        &ws,
        &[
            (
                "pytest.ini",
                "[pytest]\naddopts = --cov=pkg --cov-report=term-missing --cov-report=xml:reports/cov.xml\n",
            ),
            ("pkg/__init__.py", ""),
            (
                "pkg/calc.py",
                "def add(a, b):\n    return a + b\n\n\ndef sign(n):\n    if n > 0:\n        return 1\n    if n < 0:\n        return -1\n    return 0\n",
            ),
            ("pkg/untested.py", "def never(x):\n    y = x * 2\n    return y + 1\n"),
            ("tests/test_add.py", "from pkg.calc import add\n\n\ndef test_add():\n    assert add(1, 2) == 3\n"),
            ("tests/test_sign.py", "from pkg.calc import sign\n\n\ndef test_sign():\n    assert sign(5) == 1\n"),
        ],
    );
    let own = own_pytest(&root, &[]);
    assert!(own.status.success(), "pytest alone: {}", stdout(&own));
    let expected = statement_coverage(&root);
    assert_eq!(expected.len(), 3, "{expected:?}");
    let xml = |root: &Path| {
        let text =
            std::fs::read_to_string(root.join("reports/cov.xml")).expect("the XML report pytest-cov was asked for");
        // The totals of the report's root element (its timestamp differs between runs).
        let head =
            text.split("<coverage ").nth(1).and_then(|rest| rest.split('>').next()).unwrap_or_default().to_string();
        head.split_whitespace()
            .filter(|a| a.starts_with("lines-") || a.starts_with("line-rate"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let expected_xml = xml(&root);
    assert!(expected_xml.iter().any(|a| a.starts_with("lines-covered")), "{expected_xml:?}");
    std::fs::remove_file(root.join(".coverage")).expect("pytest-cov's data file");
    std::fs::remove_dir_all(root.join("reports")).expect("pytest-cov's XML report");

    let out = run_pytest(&ws, &["--local", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(statement_coverage(&root), expected, "both runners' data, combined, is pytest-cov's own");
    assert_eq!(xml(&root), expected_xml, "the XML report pytest-cov was asked for, of both runners' data");
    assert!(
        stderr(&out).contains("TOTAL") && stderr(&out).contains("Missing"),
        "term-missing is shown: {}",
        stderr(&out)
    );

    // A threshold the combined total misses fails the run, as it fails pytest alone.
    std::fs::write(root.join("pytest.ini"), "[pytest]\naddopts = --cov=pkg --cov-fail-under=95\n")
        .expect("write pytest.ini");
    let own = own_pytest(&root, &[]);
    assert_eq!(own.status.code(), Some(1), "pytest alone misses the threshold: {}", stdout(&own));
    let out = run_pytest(&ws, &["--local", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("Required test coverage of 95% not reached"), "{}", stderr(&out));
}

const SELECTION: &[(&str, &str)] = &[
    ("pytest.ini", "[pytest]\nmarkers =\n    slow: takes long\n"),
    (
        "tests/test_io.py",
        r#"
import pytest

def test_read():
    pass

def test_read_fails():
    assert False

@pytest.mark.slow
def test_read_big():
    pass

def test_write():
    pass

@pytest.mark.parametrize("n", [1, 2])
def test_parse(n):
    assert n == 1
"#,
    ),
    (
        "tests/test_net.py",
        r#"
def test_connect():
    pass

def test_send():
    pass
"#,
    ),
];

#[test]
fn k_and_m_after_the_dashes_select_what_pytest_selects_and_a_file_left_empty_says_so() {
    let ws = Workspace::new();
    write_files(&ws, SELECTION);
    // The file's pytest arguments come first, the command line's after `--`.
    std::fs::write(ws.root().join("testgrid.toml"), "[pytest]\nargs = [\"-m\", \"not slow\"]\n").expect("write");
    let selection = ["-m", "not slow", "-k", "read or parse"];
    let theirs = pytest_outcomes_with(&ws.root(), &["tests"], &selection);
    assert_eq!(theirs.len(), 4, "pytest selects 4 of the 9 cases: {theirs:?}");
    for isolation in ["warm", "test"] {
        let out = run_pytest(&ws, &["--local", "2", "--isolation", isolation, "--", "-k", "read or parse"]);
        assert_eq!(out.status.code(), Some(1), "{isolation}: {}{}", stdout(&out), stderr(&out));
        let events = events(&out);
        assert_eq!(case_outcomes(&events), theirs, "{isolation}: the cases pytest selects, with its outcomes");
        let net = events
            .iter()
            .find(|e| e["event"] == "test_finished" && e["final"] == true && e["test"] == "tests/test_net.py")
            .unwrap_or_else(|| panic!("{isolation}: tests/test_net.py is reported: {}", stdout(&out)));
        assert_eq!(net["outcome"], "skipped", "{isolation}: {net}");
        assert!(net["message"].as_str().is_some_and(|m| m.contains("deselected")), "{isolation}: {net}");
    }
}

#[test]
fn xdist_arguments_are_refused_with_what_to_use_instead() {
    let ws = Workspace::new();
    write_files(&ws, SELECTION);
    let out = run_pytest(&ws, &["--", "-n", "4"]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(stderr(&out).contains("pytest-xdist") && stderr(&out).contains("--local"), "{}", stderr(&out));
}

#[test]
fn list_names_the_units_and_cases_run_schedules_and_filters_pick_cases_by_id() {
    let ws = Workspace::new();
    write_files(&ws, SELECTION);
    let list = |args: &[&str]| {
        testgrid(&ws.root())
            .args(["list", "--json", "--framework", "pytest"])
            .args(args)
            .env("PATH", path_with_venv())
            .output()
            .expect("runs")
    };
    let listed = support::listed(&list(&[]));
    let out = run_pytest(&ws, &["--local", "2"]);
    let all = events(&out);
    let units: Vec<String> = final_outcomes(&all).into_keys().collect();
    assert_eq!(listed.keys().cloned().collect::<Vec<_>>(), units, "list names the units run schedules");
    let cases: Vec<String> = listed.values().flatten().cloned().collect();
    let ran: Vec<String> = case_outcomes(&all).into_keys().collect();
    let mut sorted = cases.clone();
    sorted.sort();
    assert_eq!(sorted, ran, "and the cases they hold");
    // A filter over case ids, an exclude over a file's cases: the cases kept are the units.
    let args =
        ["--filter", "tests/test_io.py::test_read*", "--filter", "tests/test_net.py", "--exclude", "**::*_fails"];
    // (With cases named, every file becomes its cases: a file pattern keeps all of them.)
    let filtered = support::listed(&list(&args));
    let expected = [
        "tests/test_io.py::test_read",
        "tests/test_io.py::test_read_big",
        "tests/test_net.py::test_connect",
        "tests/test_net.py::test_send",
    ];
    assert_eq!(filtered.keys().map(String::as_str).collect::<Vec<_>>(), expected);
    let out = run_pytest(&ws, &args);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    let ran = case_outcomes(&events(&out));
    let expected = [
        "tests/test_io.py::test_read",
        "tests/test_io.py::test_read_big",
        "tests/test_net.py::test_connect",
        "tests/test_net.py::test_send",
    ];
    assert_eq!(ran.keys().map(String::as_str).collect::<Vec<_>>(), expected);
    // Nothing matches: exit 4, as for a run that finds no tests.
    let none = list(&["--filter", "nothing/*"]);
    assert_eq!(none.status.code(), Some(4), "{}", stderr(&none));
}

#[test]
fn a_pytest_project_sent_to_workers_without_a_checkout_runs_warm_there() {
    let (_coordinator, grpc, _http) = spawn_coordinator("127.0.0.1:0", "127.0.0.1:0", &[]);
    let url = format!("http://{grpc}");
    let (place, cache) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let _worker = support::rootless_worker(&url, "bare-py", place.path(), cache.path());
    support::wait_for_workers(&url, &["bare-py".to_string()]);
    let ws = tempfile::tempdir().expect("tempdir");
    let root = ws.path();
    std::fs::create_dir_all(root.join(".git")).expect(".git");
    std::fs::create_dir_all(root.join("tests")).expect("tests");
    std::fs::create_dir_all(root.join("data")).expect("data");
    std::fs::write(root.join("pytest.ini"), "[pytest]\ntestpaths = tests\n").expect("pytest.ini");
    std::fs::write(root.join("data/value.txt"), "41\n").expect("data");
    std::fs::write(
        root.join("tests/test_tree.py"),
        "import os, pathlib\n\
         HERE = pathlib.Path(__file__).resolve().parent\n\
         def test_reads_the_sent_data():\n    assert int((HERE.parent / 'data' / 'value.txt').read_text()) + 1 == 42\n\
         def test_runs_outside_the_cli_folder():\n    assert os.environ['CLI_DIR'] != str(HERE.parent)\n\
         def test_fails_as_it_should():\n    assert False, 'expected'\n",
    )
    .expect("test file");
    let python = venv().join("bin/python");
    let cli_dir = format!("CLI_DIR={}", root.canonicalize().expect("canonical").display());
    let out = testgrid(root)
        .args(["run", "--grid", &url, "--framework", "pytest", "--json", "--env", &cli_dir, "--python"])
        .arg(&python)
        .output()
        .expect("testgrid runs");
    assert_eq!(out.status.code(), Some(1), "one case fails: {}", stderr(&out));
    let cases = case_outcomes(&events(&out));
    let want: Vec<(String, String)> = [
        ("tests/test_tree.py::test_fails_as_it_should", "failed"),
        ("tests/test_tree.py::test_reads_the_sent_data", "passed"),
        ("tests/test_tree.py::test_runs_outside_the_cli_folder", "passed"),
    ]
    .iter()
    .map(|(c, o)| (c.to_string(), o.to_string()))
    .collect();
    let mut got: Vec<(String, String)> = cases.into_iter().collect();
    got.sort();
    assert_eq!(got, want, "{}", stdout(&out));
    assert_eq!(std::fs::read_dir(place.path()).expect("read_dir").count(), 0, "nothing in the worker's own folder");
}
