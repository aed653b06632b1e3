//! The Go executor end to end: a small Go module (standard library only) in a temp dir, run by
//! the real `testgrid` CLI in local mode and on a real coordinator with two workers, with its
//! per-case outcomes compared with those of `go test -json ./...` on the same module.
//!
//! Skipped, with a message, when `go` is not on PATH (`.ci/run` installs it).

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use support::{Grid, Workspace, case_outcomes, events, final_outcomes, stderr, stdout, testgrid};

const MODULE_PATH: &str = "example.com/fixture";

/// The module: passing, failing and skipped tests, subtests, parallel tests, an example, a
/// panic, a compile error, a hang, a failing TestMain and a package without tests.
const MODULE: &[(&str, &str)] = &[
    ("go.mod", "module example.com/fixture\n\ngo 1.18\n"),
    ("root_test.go", "package fixture\n\nimport \"testing\"\n\nfunc TestRoot(t *testing.T) {}\n"),
    ("calc/calc.go", "package calc\n\n// Add adds.\nfunc Add(a, b int) int { return a + b }\n"),
    (
        "calc/calc_test.go",
        r#"package calc

import (
	"fmt"
	"testing"
	"time"
)

func TestAdd(t *testing.T) {
	fmt.Println("adding up")
	if Add(1, 2) != 3 {
		t.Fatal("1 + 2 != 3")
	}
}

func TestAddWrong(t *testing.T) {
	t.Log("about to compare")
	if got := Add(2, 2); got != 5 {
		t.Errorf("Add(2, 2) = %d, want 5", got)
	}
}

func TestSkipped(t *testing.T) { t.Skip("not on this machine") }

func TestTable(t *testing.T) {
	t.Run("one", func(t *testing.T) {})
	t.Run("two", func(t *testing.T) { t.Error("two is wrong") })
	t.Run("with space", func(t *testing.T) {})
	t.Run("outer", func(t *testing.T) {
		t.Run("inner", func(t *testing.T) {})
	})
}

func TestParallelA(t *testing.T) {
	t.Parallel()
	time.Sleep(20 * time.Millisecond)
}

func TestParallelB(t *testing.T) {
	t.Parallel()
	time.Sleep(10 * time.Millisecond)
}

func ExampleAdd() {
	fmt.Println(Add(1, 2))
	// Output: 3
}
"#,
    ),
    (
        "crash/crash_test.go",
        r#"package crash

import "testing"

func TestBeforePanic(t *testing.T) {}

func TestPanics(t *testing.T) {
	var m map[string]int
	m["boom"] = 1
}

func TestNeverReached(t *testing.T) {}
"#,
    ),
    (
        "broken/broken_test.go",
        "package broken\n\nimport \"testing\"\n\nfunc TestBroken(t *testing.T) {\n\tnotDefinedAnywhere()\n}\n",
    ),
    (
        "hang/hang_test.go",
        r#"package hang

import (
	"testing"
	"time"
)

func TestQuick(t *testing.T) {}

func TestHangs(t *testing.T) {
	t.Log("going to sleep")
	time.Sleep(10 * time.Minute)
}

func TestAfterHang(t *testing.T) {}
"#,
    ),
    (
        "setup/setup_test.go",
        r#"package setup

import (
	"fmt"
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	fmt.Println("setup failed: no database")
	os.Exit(3)
}

func TestNever(t *testing.T) {}
"#,
    ),
    ("helpers/helpers_test.go", "package helpers\n\nfunc helper() int { return 1 }\n"),
];

/// Cases `go test` never names because a crash or the timeout stopped their package first;
/// testgrid reports them as errors ("not run").
const NOT_RUN: &[&str] = &["crash::TestNeverReached", "hang::TestAfterHang"];

/// Whether `go` is on PATH; says why the test is skipped when not.
fn have_go() -> bool {
    let ok = Command::new("go").arg("version").output().is_ok_and(|o| o.status.success());
    if !ok {
        // CI installs Go (.ci/run): there a missing Go is a broken setup, not a reason to skip.
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but `go` is not on PATH: .ci/run should install golang-go"
        );
        eprintln!("skipping: `go` is not on PATH; install Go (e.g. `apt-get install golang-go`) to run the Go tests");
    }
    ok
}

fn write_module(ws: &Workspace) {
    for (path, body) in MODULE {
        let full = ws.root().join(path);
        std::fs::create_dir_all(full.parent().expect("files are inside the root")).expect("mkdir");
        std::fs::write(full, body).expect("write");
    }
}

/// A package's folder relative to the module root, from its import path.
fn folder(package: &str) -> String {
    match package.strip_prefix(MODULE_PATH) {
        Some("") => ".".to_string(),
        Some(rest) => rest.trim_start_matches('/').to_string(),
        None => panic!("package {package} is outside the module"),
    }
}

/// `go test -json`'s verdicts on the module: per case (`FOLDER::Test`) and per package.
struct Reference {
    cases: BTreeMap<String, String>,
    packages: BTreeMap<String, String>,
}

fn go_reference(root: &Path) -> Reference {
    go_reference_with(root, &["-timeout", "5s", "./..."])
}

/// [`go_reference`] of `go test -json ARGS`.
fn go_reference_with(root: &Path, args: &[&str]) -> Reference {
    let out = Command::new("go").arg("test").arg("-json").args(args).current_dir(root).output().expect("go test runs");
    let mut cases: BTreeMap<String, String> = BTreeMap::new();
    let mut packages: BTreeMap<String, String> = BTreeMap::new();
    let mut timed_out: Vec<String> = Vec::new();
    for line in stdout(&out).lines() {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let (Some(action), Some(package)) = (event["Action"].as_str(), event["Package"].as_str()) else { continue };
        let pkg = folder(package);
        let output = event["Output"].as_str().unwrap_or_default();
        if output.contains("panic: test timed out after") {
            timed_out.push(pkg.clone());
        }
        if output.contains("[build failed]") {
            packages.insert(pkg.clone(), "fail".into());
        }
        let outcome = match action {
            "run" => "running",
            "pass" => "passed",
            "fail" => "failed",
            "skip" => "skipped",
            _ => continue,
        };
        match event["Test"].as_str() {
            Some(test) => {
                cases.insert(format!("{pkg}::{test}"), outcome.to_string());
            }
            None if outcome != "running" => {
                packages.insert(pkg, action.to_string());
            }
            None => {}
        }
    }
    // Go 1.19 reports a build failure on stderr only.
    for line in stderr(&out).lines() {
        if let Some(package) = line.strip_prefix("FAIL\t").and_then(|l| l.strip_suffix(" [build failed]")) {
            packages.insert(folder(package), "fail".into());
        }
    }
    // A test that started and never ended was running when its package died.
    for (name, outcome) in cases.iter_mut() {
        if outcome == "running" {
            let pkg = name.split("::").next().expect("split has a first part");
            *outcome = if timed_out.iter().any(|t| t == pkg) { "timed_out" } else { "failed" }.to_string();
        }
    }
    Reference { cases, packages }
}

/// A whole-module run: units and cases as `go test` sees them, plus what only testgrid names.
fn check_run(out: &Output, reference: &Reference, junit: &Path) {
    assert_eq!(out.status.code(), Some(1), "stdout: {}\nstderr: {}", stdout(out), stderr(out));
    let events = events(out);
    let units = final_outcomes(&events);
    let expected_units: BTreeMap<String, String> = [
        (".", "passed"),
        ("calc", "failed"),
        ("crash", "failed"),
        ("broken", "error"),
        ("hang", "timed_out"),
        ("setup", "failed"),
        ("helpers", "passed"),
    ]
    .into_iter()
    .map(|(u, o)| (u.to_string(), o.to_string()))
    .collect();
    assert_eq!(units, expected_units);
    for (pkg, verdict) in &reference.packages {
        assert_eq!(verdict == "pass", units[pkg] == "passed", "{pkg}: go test says {verdict}, testgrid {}", units[pkg]);
    }

    let ours = case_outcomes(&events);
    for (name, outcome) in &reference.cases {
        assert_eq!(ours.get(name), Some(outcome), "{name}: go test says {outcome}; testgrid: {ours:?}");
    }
    let extra: BTreeMap<&str, &str> = ours
        .iter()
        .filter(|(name, _)| !reference.cases.contains_key(*name))
        .map(|(n, o)| (n.as_str(), o.as_str()))
        .collect();
    let not_run: BTreeMap<&str, &str> = NOT_RUN.iter().map(|n| (*n, "error")).collect();
    assert_eq!(extra, not_run, "only the cases a crash or timeout kept from running are testgrid's own");

    let finished = |unit: &str| {
        events
            .iter()
            .find(|e| e["event"] == "test_finished" && e["final"] == true && e["test"] == unit)
            .unwrap_or_else(|| panic!("no final event for {unit}"))
    };
    let broken = finished("broken");
    assert!(broken["output"].as_str().is_some_and(|o| o.contains("undefined: notDefinedAnywhere")), "{broken}");
    let setup = finished("setup");
    assert!(setup["output"].as_str().is_some_and(|o| o.contains("setup failed: no database")), "{setup}");
    let case = |name: &str| {
        events
            .iter()
            .flat_map(|e| e["cases"].as_array().cloned().unwrap_or_default())
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no case {name}"))
    };
    assert_eq!(case("calc::TestAddWrong")["message"], "calc_test.go:19: Add(2, 2) = 4, want 5");
    assert_eq!(case("calc::TestAddWrong")["classname"], "calc");
    assert!(case("crash::TestPanics")["message"].as_str().is_some_and(|m| m.contains("nil map")));

    let xml = std::fs::read_to_string(junit).expect("JUnit written");
    assert!(xml.contains(r#"<testcase name="calc::TestAddWrong" classname="calc""#), "{xml}");
    assert!(xml.contains(r#"<testcase name="calc::TestTable/with_space" classname="calc""#), "{xml}");
    assert!(xml.contains("<skipped"), "skips stay visible: {xml}");
    assert!(xml.contains("undefined: notDefinedAnywhere"), "the compile error is in the report: {xml}");
}

#[test]
fn local_mode_matches_go_test() {
    if !have_go() {
        return;
    }
    let ws = Workspace::new();
    write_module(&ws);
    let reference = go_reference(&ws.root());
    let junit = ws.root().join("junit.xml");
    let out = testgrid(&ws.root())
        .args(["run", "--local", "2", "--framework", "go", "--timeout", "5s", "--json", "--junit"])
        .arg(&junit)
        .output()
        .expect("testgrid runs");
    check_run(&out, &reference, &junit);
}

#[test]
fn a_real_grid_with_two_workers_matches_go_test() {
    if !have_go() {
        return;
    }
    let ws = Workspace::new();
    write_module(&ws);
    let reference = go_reference(&ws.root());
    let grid = Grid::start(&ws.root(), 2);
    let junit = ws.root().join("junit.xml");
    let out = grid.cli(&[
        "run",
        "--framework",
        "go",
        "--timeout",
        "5s",
        "--json",
        "--junit",
        junit.to_str().expect("temp paths are UTF-8"),
    ]);
    check_run(&out, &reference, &junit);
    let workers: std::collections::BTreeSet<String> = events(&out)
        .iter()
        .filter(|e| e["event"] == "test_finished")
        .filter_map(|e| e["worker"].as_str().map(str::to_string))
        .collect();
    assert_eq!(workers.len(), 2, "both workers ran packages: {workers:?}");
}

#[test]
fn single_tests_and_subtests_run_alone_with_go_detected_from_go_mod() {
    if !have_go() {
        return;
    }
    let ws = Workspace::new();
    write_module(&ws);
    let out = testgrid(&ws.root())
        .args(["run", "--local", "1", "--json", "calc::TestTable/two", "crash/crash_test.go::TestBeforePanic"])
        .output()
        .expect("testgrid runs");
    assert_eq!(out.status.code(), Some(1), "stdout: {}\nstderr: {}", stdout(&out), stderr(&out));
    let events = events(&out);
    let units = final_outcomes(&events);
    assert_eq!(units["calc::TestTable/two"], "failed");
    assert_eq!(units["crash::TestBeforePanic"], "passed");
    let cases = case_outcomes(&events);
    let expected: BTreeMap<String, String> =
        [("calc::TestTable", "failed"), ("calc::TestTable/two", "failed"), ("crash::TestBeforePanic", "passed")]
            .into_iter()
            .map(|(n, o)| (n.to_string(), o.to_string()))
            .collect();
    assert_eq!(cases, expected, "only the asked-for tests ran");
}

#[test]
fn run_and_tags_after_the_dashes_select_what_go_test_selects() {
    if !have_go() {
        return;
    }
    let ws = Workspace::new();
    write_module(&ws);
    let tagged =
        "//go:build integration\n\npackage calc\n\nimport \"testing\"\n\nfunc TestAddIntegration(t *testing.T) {}\n";
    std::fs::write(ws.root().join("calc/integration_test.go"), tagged).expect("write");
    let selection = ["-run", "TestAdd|TestTable/one", "-tags=integration", "-count=1"];
    let mut reference_args = selection.to_vec();
    reference_args.extend(["./calc", "."]);
    let reference = go_reference_with(&ws.root(), &reference_args);
    assert!(
        reference.cases.contains_key("calc::TestAddIntegration"),
        "the tag's test runs under go test: {:?}",
        reference.cases
    );
    let out = testgrid(&ws.root())
        .args(["run", "--local", "2", "--json", "calc", "root_test.go", "--"])
        .args(selection)
        .output()
        .expect("testgrid runs");
    assert_eq!(out.status.code(), Some(1), "stdout: {}\nstderr: {}", stdout(&out), stderr(&out));
    let events = events(&out);
    assert_eq!(case_outcomes(&events), reference.cases, "the cases go test selects, with its outcomes");
    let units = final_outcomes(&events);
    assert_eq!(units["calc"], "failed", "TestAddWrong fails: {units:?}");
    assert_eq!(units["."], "skipped", "no test of the root package matches -run: {units:?}");
    // A flag go test does not have is refused before anything runs.
    let out = testgrid(&ws.root()).args(["run", "--local", "1", "--", "-frobnicate"]).output().expect("testgrid runs");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("-frobnicate"), "{}", stderr(&out));
}

#[test]
fn list_names_the_packages_run_schedules_and_a_case_filter_says_to_use_run() {
    if !have_go() {
        return;
    }
    let ws = Workspace::new();
    write_module(&ws);
    let out = testgrid(&ws.root()).args(["list", "--json", "--exclude", "hang"]).output().expect("testgrid runs");
    let listed: Vec<String> = support::listed(&out).into_keys().collect();
    let out = testgrid(&ws.root())
        .args(["run", "--local", "2", "--json", "--exclude", "hang"])
        .output()
        .expect("testgrid runs");
    let units: Vec<String> = final_outcomes(&events(&out)).into_keys().collect();
    assert_eq!(listed, units, "list names the packages run schedules");
    assert!(!units.contains(&"hang".to_string()), "{units:?}");
    let out = testgrid(&ws.root()).args(["list", "--filter", "calc::TestAdd*"]).output().expect("testgrid runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("-- -run"), "{}", stderr(&out));
}
