//! Rust suites end to end: a real crate from crates.io (semver, fetched by the test) and a small
//! crate of our own with failures, ignored tests and a hang, run through `--local 2` and through a
//! real coordinator with two workers, with per-case outcomes compared to `cargo test`'s own.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use support::{events, spawn_coordinator, stderr, stdout, testgrid};

/// One target folder for every crate these tests build, kept between runs.
/// The target folder for the crate in `dir`: one per crate folder. Copies of one crate must not
/// share one: cargo names a workspace member's outputs by its path relative to its workspace,
/// so two copies building at once in one target folder take each other's fingerprints (a copy
/// with a broken file was once found fresh).
fn target_dir(dir: &Path) -> PathBuf {
    let key = testgrid_proto::tree::digest_of(dir.as_os_str().as_encoded_bytes()).hash;
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cargo-suites-target").join(&key[..16])
}

fn cargo(dir: &Path) -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.env("CARGO_TARGET_DIR", target_dir(dir));
    cmd
}

/// Copy a folder tree (files and folders only).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// semver's published source, tests included, fetched through cargo from crates.io once per
/// test binary. Its only dev-dependency (criterion) serves its benchmarks, which `cargo test`
/// does not build: it is dropped so the suite builds in seconds.
fn semver_crate() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("semver-suite");
        let dir = base.join("semver");
        if dir.join("Cargo.toml").is_file() {
            return dir;
        }
        let fetcher = base.join(format!("fetcher-{}", std::process::id()));
        std::fs::create_dir_all(fetcher.join("src")).expect("mkdir");
        std::fs::write(
            fetcher.join("Cargo.toml"),
            "[package]\nname = \"fetcher\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\n[dependencies]\nsemver = \"=1.0.28\"\n\n[workspace]\n",
        )
        .expect("write");
        std::fs::write(fetcher.join("src/lib.rs"), "").expect("write");
        let meta = cargo(&fetcher)
            .args(["metadata", "--format-version", "1", "--manifest-path"])
            .arg(fetcher.join("Cargo.toml"))
            .output()
            .expect("cargo metadata runs");
        assert!(meta.status.success(), "cargo metadata: {}", stderr(&meta));
        let meta: serde_json::Value = serde_json::from_slice(&meta.stdout).expect("metadata is JSON");
        let manifest = meta["packages"]
            .as_array()
            .expect("packages")
            .iter()
            .find(|p| p["name"] == "semver")
            .and_then(|p| p["manifest_path"].as_str())
            .expect("semver is a dependency");
        let source = Path::new(manifest).parent().expect("a manifest has a folder");
        // One staging folder per test process: nextest runs this file's tests in several at once.
        let staging = base.join(format!("staging-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        copy_tree(source, &staging);
        let toml = std::fs::read_to_string(staging.join("Cargo.toml")).expect("read");
        let cut = toml.find("[target.\"cfg(not(miri))\".dev-dependencies.criterion]").expect("criterion section");
        let bench = toml.find("[[bench]]").expect("bench section");
        let end = toml[bench..].find("\n\n").map(|i| bench + i).unwrap_or(toml.len());
        // `[workspace]`: a crate of its own, even inside our target folder.
        let toml = format!("{}{}\n[workspace]\n", &toml[..bench], &toml[end..cut]);
        std::fs::write(staging.join("Cargo.toml"), toml).expect("write");
        std::fs::create_dir(staging.join(".git")).expect("mkdir .git");
        if std::fs::rename(&staging, &dir).is_err() {
            // Another process put its copy there first.
            assert!(dir.join("Cargo.toml").is_file(), "semver's copy is in place");
            let _ = std::fs::remove_dir_all(&staging);
        }
        dir
    })
}

/// A small crate with what a real suite has: failures, panics, ignored and should_panic tests,
/// a test reading a file relative to its package, a nested module, and a test that hangs when
/// `HANG` is set.
fn our_crate() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    std::fs::create_dir(root.join(".git")).expect("mkdir");
    let files: &[(&str, &str)] = &[
        (
            "Cargo.toml",
            "[package]\nname = \"mini\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[features]\nextra = []\n\n[workspace]\n",
        ),
        ("data/x.txt", "hello\n"),
        (
            "src/lib.rs",
            r#"
pub fn add(a: u64, b: u64) -> u64 { a + b }

#[cfg(test)]
mod tests {
    use super::*;
    #[test] fn works() { assert_eq!(add(2, 2), 4); }
    #[test] fn fails() { assert_eq!(add(2, 2), 5, "math is hard"); }
    #[test] #[ignore] fn slow() {}
    #[test] #[should_panic(expected = "boom")] fn panics_as_expected() { panic!("boom") }
    #[test] fn reads_a_file_of_its_package() {
        assert_eq!(std::fs::read_to_string("data/x.txt").unwrap(), "hello\n");
        assert!(std::env::var("CARGO_MANIFEST_DIR").unwrap().len() > 1);
    }
    #[test] fn hangs_when_asked() {
        while std::env::var("HANG").is_ok() { std::thread::sleep(std::time::Duration::from_millis(50)); }
    }
    mod nested { #[test] fn deep() {} }
    // Only with `--features extra`; passes only when built with the release profile.
    #[cfg(feature = "extra")]
    mod gated { #[test] fn by_feature() { assert!(!cfg!(debug_assertions), "built without the release profile") } }
}
"#,
        ),
        (
            "tests/api.rs",
            "#[test] fn api_ok() { assert_eq!(mini::add(1, 1), 2); }\n\
             #[test] fn exits_badly() { println!(\"some output\"); if std::env::var(\"CRASH\").is_ok() { std::process::exit(3) } panic!(\"bad\") }\n",
        ),
    ];
    for (path, body) in files {
        let full = root.join(path);
        std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
        std::fs::write(full, body).expect("write");
    }
    dir
}

/// `cargo test`'s own verdicts: `SRC::NAME` -> passed | failed | skipped.
fn cargo_outcomes(dir: &Path) -> BTreeMap<String, String> {
    cargo_outcomes_with(dir, &[])
}

/// [`cargo_outcomes`] with `test_args` for the test binaries (after `--`).
fn cargo_outcomes_with(dir: &Path, test_args: &[&str]) -> BTreeMap<String, String> {
    let out = cargo(dir)
        .args(["test", "--no-fail-fast", "--tests", "--"])
        .args(test_args)
        .current_dir(dir)
        .env_remove("HANG")
        .output()
        .expect("cargo test runs");
    // Which binary's results follow: `Running unittests src/lib.rs (…)` / `Running tests/x.rs (…)`.
    let text = format!("{}\n{}", stdout(&out), stderr(&out));
    let mut outcomes = BTreeMap::new();
    let mut src = String::new();
    // stdout and stderr are read apart, so tie each result line to its binary by test name
    // order instead: cargo prints one binary's results in one block on stdout, in the order of
    // the `Running` lines on stderr.
    let sources: Vec<String> = stderr(&out)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Running "))
        .map(|l| l.trim_start_matches("unittests ").split(" (").next().unwrap_or_default().to_string())
        .collect();
    let mut blocks = sources.into_iter();
    for line in stdout(&out).lines() {
        if line.starts_with("running ") {
            src = blocks.next().unwrap_or_else(|| panic!("more result blocks than binaries:\n{text}"));
            continue;
        }
        let Some(rest) = line.strip_prefix("test ") else { continue };
        let Some((name, verdict)) = rest.rsplit_once(" ... ") else { continue };
        let name = name.trim_end_matches(" - should panic");
        let outcome = match verdict {
            "ok" => "passed",
            "FAILED" => "failed",
            v if v.starts_with("ignored") => "skipped",
            _ => continue,
        };
        outcomes.insert(format!("{src}::{name}"), outcome.to_string());
    }
    assert!(!outcomes.is_empty(), "cargo test printed no results:\n{text}");
    outcomes
}

/// Our verdicts from `--json` events: test -> its one case's outcome, checking that each test is
/// exactly one case named like the test.
fn our_outcomes(out: &Output) -> BTreeMap<String, String> {
    let mut outcomes = BTreeMap::new();
    for e in events(out).iter().filter(|e| e["event"] == "test_finished" && e["final"] == true) {
        let test = e["test"].as_str().expect("test").to_string();
        let cases = e["cases"].as_array().expect("cases");
        assert_eq!(cases.len(), 1, "{test}: {cases:?}");
        assert!(test.ends_with(&format!("::{}", cases[0]["name"].as_str().expect("name"))), "{test}: {cases:?}");
        let outcome = cases[0]["outcome"].as_str().expect("outcome").to_string();
        assert!(outcomes.insert(test.clone(), outcome).is_none(), "{test} finished twice");
    }
    outcomes
}

fn run_local(dir: &Path, args: &[&str]) -> Output {
    testgrid(dir)
        .args(["run", "--local", "2", "--framework", "cargo", "--json"])
        .args(args)
        .env("CARGO_TARGET_DIR", target_dir(dir))
        .output()
        .expect("testgrid runs")
}

#[test]
fn a_crates_io_suite_in_local_mode_matches_cargo_test() {
    let dir = semver_crate();
    let out = run_local(dir, &[]);
    assert_eq!(out.status.code(), Some(0), "stdout: {}\nstderr: {}", stdout(&out), stderr(&out));
    let ours = our_outcomes(&out);
    let theirs = cargo_outcomes(dir);
    assert_eq!(ours, theirs, "the same per-case outcomes as cargo test");
    assert!(ours.len() >= 30, "semver 1.0.28 has 34 tests: {ours:?}");
}

#[test]
fn our_crate_in_local_mode_matches_cargo_test_and_writes_junit_per_case() {
    let dir = our_crate();
    let junit = dir.path().join("report.xml");
    let out = run_local(dir.path(), &["--junit", junit.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(1), "stdout: {}\nstderr: {}", stdout(&out), stderr(&out));
    let ours = our_outcomes(&out);
    assert_eq!(ours["src/lib.rs::tests::fails"], "failed");
    assert_eq!(ours["src/lib.rs::tests::slow"], "skipped");
    assert_eq!(ours["tests/api.rs::exits_badly"], "failed");
    assert_eq!(ours, cargo_outcomes(dir.path()), "the same per-case outcomes as cargo test");
    let xml = std::fs::read_to_string(&junit).expect("JUnit written");
    assert!(xml.contains(r#"<testcase name="tests::fails" classname="mini""#), "{xml}");
    assert!(xml.contains(r#"<testcase name="exits_badly" classname="mini::api""#), "{xml}");
    assert!(xml.contains("math is hard"), "a failure keeps the test's own output: {xml}");
}

#[test]
fn single_tests_modules_and_targets_can_be_picked() {
    let dir = our_crate();
    let out = run_local(dir.path(), &["src/lib.rs::tests::nested", "tests/api.rs"]);
    let ours = our_outcomes(&out);
    let names: Vec<&str> = ours.keys().map(String::as_str).collect();
    assert_eq!(names, vec!["src/lib.rs::tests::nested::deep", "tests/api.rs::api_ok", "tests/api.rs::exits_badly"]);
    let out = run_local(dir.path(), &["src/lib.rs::tests::works"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(our_outcomes(&out).len(), 1);
}

#[test]
fn cargo_flags_pick_features_and_profile_for_the_cli_and_every_worker() {
    let dir = our_crate();
    let gated = "src/lib.rs::tests::gated";
    let out = run_local(dir.path(), &[gated]);
    assert_eq!(out.status.code(), Some(2), "without the feature the test does not exist: {}", stderr(&out));
    let out = run_local(dir.path(), &[gated, "--features", "extra"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(our_outcomes(&out)["src/lib.rs::tests::gated::by_feature"], "failed", "a debug build");
    let out = run_local(dir.path(), &[gated, "-F", "extra", "--cargo-profile", "release"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(our_outcomes(&out).len(), 1);

    // The variable that carried them once is refused, not silently ignored; the flags are
    // refused for another framework.
    let out = run_local(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let out = testgrid(dir.path())
        .args(["run", "--local", "1", "--framework", "cargo"])
        .env("TESTGRID_CARGO_ARGS", "--features extra")
        .output()
        .expect("testgrid runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--features"), "{}", stderr(&out));
    let out = testgrid(dir.path())
        .args(["run", "--local", "1", "--framework", "shell", "-p", "mini"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("for Rust tests, and these are shell tests"), "{}", stderr(&out));
}

#[test]
fn run_ignored_runs_the_ignored_tests_alone_or_with_the_others() {
    let dir = our_crate();
    let out = run_local(dir.path(), &["--run-ignored", "only"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let ours = our_outcomes(&out);
    assert_eq!(
        ours.into_iter().collect::<Vec<_>>(),
        vec![("src/lib.rs::tests::slow".to_string(), "passed".to_string())]
    );
    assert!(
        !stderr(&out).contains("lists no tests"),
        "binaries without ignored tests are no surprise: {}",
        stderr(&out)
    );

    let out = run_local(dir.path(), &["src/lib.rs", "--run-ignored", "all"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let ours = our_outcomes(&out);
    assert_eq!(ours["src/lib.rs::tests::slow"], "passed", "run, not skipped");
    assert_eq!(ours["src/lib.rs::tests::works"], "passed");
    assert_eq!(ours["src/lib.rs::tests::fails"], "failed");
    let out = run_local(dir.path(), &["src/lib.rs"]);
    assert_eq!(
        our_outcomes(&out)["src/lib.rs::tests::slow"],
        "skipped",
        "by default an ignored test is reported skipped"
    );
}

#[test]
fn libtest_filters_after_the_dashes_select_what_cargo_test_selects() {
    let dir = our_crate();
    let selection = ["tests::", "--skip", "hangs", "--skip=fails", "--include-ignored", "--test-threads", "1"];
    let theirs = cargo_outcomes_with(dir.path(), &selection);
    let mut args = vec!["--"];
    args.extend(selection);
    let out = run_local(dir.path(), &args);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    let ours = our_outcomes(&out);
    assert_eq!(ours, theirs, "the tests cargo test selects, with its verdicts");
    assert_eq!(ours["src/lib.rs::tests::slow"], "passed", "--include-ignored runs the ignored test");
    assert!(!ours.keys().any(|t| t.starts_with("tests/api.rs")), "the filter leaves out tests/api.rs: {ours:?}");
    // A filter that matches nothing: no tests, exit 4; asking twice for ignored tests: refused.
    let out = run_local(dir.path(), &["--", "no_such_test"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let out = run_local(dir.path(), &["--run-ignored", "only", "--", "--include-ignored"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--run-ignored"), "{}", stderr(&out));
}

#[test]
fn list_names_the_tests_run_schedules_and_filters_pick_them_by_id() {
    let dir = our_crate();
    let list = |args: &[&str]| {
        let out = testgrid(dir.path())
            .args(["list", "--json", "--framework", "cargo"])
            .args(args)
            .env("CARGO_TARGET_DIR", target_dir(dir.path()))
            .output()
            .expect("testgrid runs");
        support::listed(&out).into_keys().collect::<Vec<_>>()
    };
    let out = run_local(dir.path(), &["--", "--skip", "hangs"]);
    let scheduled: Vec<String> = our_outcomes(&out).into_keys().collect();
    assert_eq!(list(&["--", "--skip", "hangs"]), scheduled, "list names what run schedules");
    let args = ["--filter", "src/lib.rs::tests::*", "--exclude", "**::*::fails", "--exclude", "src/*.rs::*hangs*"];
    let out = run_local(dir.path(), &args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let ran: Vec<String> = our_outcomes(&out).into_keys().collect();
    assert_eq!(list(&args), ran);
    assert!(ran.contains(&"src/lib.rs::tests::nested::deep".to_string()), "{ran:?}");
    assert!(!ran.iter().any(|t| t.ends_with("::fails") || t.starts_with("tests/")), "{ran:?}");
}

#[test]
fn a_command_runs_once_per_rust_test() {
    let dir = our_crate();
    let log = dir.path().join("ran.log");
    let out = testgrid(dir.path())
        .args(["run", "--local", "2", "--framework", "cargo", "--json", "--command"])
        .arg(format!("echo {{}} >> '{}'", log.display()))
        .arg("tests/api.rs")
        .env("CARGO_TARGET_DIR", target_dir(dir.path()))
        .output()
        .expect("testgrid runs");
    assert_eq!(out.status.code(), Some(0), "stdout: {}\nstderr: {}", stdout(&out), stderr(&out));
    let mut ran: Vec<String> =
        std::fs::read_to_string(&log).expect("the command ran").lines().map(str::to_string).collect();
    ran.sort();
    assert_eq!(ran, vec!["tests/api.rs::api_ok", "tests/api.rs::exits_badly"]);
}

#[test]
fn a_hanging_test_times_out_and_a_broken_build_says_so() {
    let dir = our_crate();
    let out = testgrid(dir.path())
        .args(["run", "--local", "2", "--framework", "cargo", "--json", "--timeout", "3s", "--env", "HANG=1"])
        .arg("src/lib.rs::tests::hangs_when_asked")
        .env("CARGO_TARGET_DIR", target_dir(dir.path()))
        .output()
        .expect("testgrid runs");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(our_outcomes(&out)["src/lib.rs::tests::hangs_when_asked"], "timed_out");

    std::fs::write(dir.path().join("tests/api.rs"), "#[test] fn broken() { let x: u32 = \"no\"; }\n").expect("write");
    let out = run_local(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(2), "a build that fails is reported before anything runs");
    let err = stderr(&out);
    assert!(err.contains("mismatched types") && err.contains("fix the build"), "{err}");
}

#[test]
fn a_crates_io_suite_on_a_real_grid_matches_cargo_test() {
    let dir = semver_crate();
    let (coordinator, grpc, _http) = spawn_coordinator("127.0.0.1:0", "127.0.0.1:0", &[]);
    let url = format!("http://{grpc}");
    // Each worker builds the session's tree itself (cargo finds it already built here).
    let target = target_dir(dir).display().to_string();
    let names: Vec<String> = (1..=2).map(|i| format!("w{i}")).collect();
    let workers: Vec<support::Proc> =
        names.iter().map(|n| support::spawn_worker_env(&url, n, dir, &[("CARGO_TARGET_DIR", &target)])).collect();
    support::wait_for_workers(&url, &names);
    let out = testgrid(dir)
        .args(["run", "--framework", "cargo", "--json", "--grid", &url])
        .env("CARGO_TARGET_DIR", target_dir(dir))
        .output()
        .expect("testgrid runs");
    assert_eq!(out.status.code(), Some(0), "stdout: {}\nstderr: {}", stdout(&out), stderr(&out));
    let ours = our_outcomes(&out);
    assert_eq!(ours, cargo_outcomes(dir), "the same per-case outcomes as cargo test");
    let hosts: std::collections::BTreeSet<String> = events(&out)
        .iter()
        .filter(|e| e["event"] == "test_finished")
        .filter_map(|e| e["worker"].as_str().map(str::to_string))
        .collect();
    assert_eq!(hosts.len(), 2, "both workers ran tests: {hosts:?}");
    drop(workers);
    drop(coordinator);
}

#[test]
fn paths_in_several_workspace_members_all_run_and_a_path_with_no_tests_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    std::fs::create_dir(root.join(".git")).expect("mkdir");
    let files: &[(&str, &str)] = &[
        (
            "Cargo.toml",
            "[package]\nname = \"top\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\nmembers = [\"crates/x\"]\n",
        ),
        ("src/lib.rs", "#[test] fn top_ok() {}\n"),
        ("crates/x/Cargo.toml", "[package]\nname = \"x\"\nversion = \"0.1.0\"\nedition = \"2021\"\n"),
        ("crates/x/src/lib.rs", "#[test] fn x_fails() { panic!(\"member failure\") }\n"),
        ("notes/readme.txt", "not code\n"),
    ];
    for (path, body) in files {
        let full = root.join(path);
        std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
        std::fs::write(full, body).expect("write");
    }
    let out = run_local(root, &["src", "crates/x"]);
    assert_eq!(out.status.code(), Some(1), "the member's failure counts: {}", stderr(&out));
    let ours = our_outcomes(&out);
    assert_eq!(ours["src/lib.rs::top_ok"], "passed");
    assert_eq!(ours["crates/x/src/lib.rs::x_fails"], "failed");

    // Members picked as cargo picks them: `-p x` only x's tests, `--workspace` every member's.
    let out = run_local(root, &["-p", "x"]);
    let names: Vec<String> = our_outcomes(&out).into_keys().collect();
    assert_eq!(names, vec!["crates/x/src/lib.rs::x_fails"], "{}", stderr(&out));
    let out = run_local(root, &["--workspace"]);
    let names: Vec<String> = our_outcomes(&out).into_keys().collect();
    assert_eq!(names, vec!["crates/x/src/lib.rs::x_fails", "src/lib.rs::top_ok"], "{}", stderr(&out));

    let out = run_local(root, &["notes"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("no Rust test target there"), "{}", stderr(&out));
    let out = run_local(root, &["src/lib.rs::no_such_test"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("no such test"), "{}", stderr(&out));
}
