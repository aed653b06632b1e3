//! The warm vitest and jest runners end to end: the fixture projects in `tests/fixtures`, with
//! the framework installed from npm by the test itself, run through `--local 2` and through a real
//! coordinator with two workers; per-case outcomes compared with the framework's own JSON report.
//! Discovery too: the units `testgrid run` submits for the projects in `tests/fixtures/discovery`
//! compared with the framework's own listing of their files.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use support::{events, final_outcomes, spawn_coordinator, stderr, stdout, testgrid};

/// Copy a folder tree (files and folders only), leaving out `node_modules`.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        if entry.file_name() == "node_modules" {
            continue;
        }
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// The fixture project, copied under the target folder for this test process (nextest runs each
/// test in a process of its own), with its dependencies linked from a shared install: `npm ci`
/// from its lockfile, once per content of the fixture. Its own `.git` makes it the root.
fn project(name: &str) -> PathBuf {
    static DONE: OnceLock<std::sync::Mutex<BTreeMap<String, PathBuf>>> = OnceLock::new();
    let done = DONE.get_or_init(Default::default);
    let mut done = done.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(dir) = done.get(name) {
        return dir.clone();
    }
    let dir = fresh_copy(name, name);
    done.insert(name.to_string(), dir.clone());
    dir
}

/// A copy of the fixture `name` of its own, as folder `copy` of this process (its installed
/// `node_modules` linked in): for a test that adds files, which the copy other tests of this
/// process share (see [`project`]) must not see.
fn fresh_copy(name: &str, copy: &str) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    let shared = installed(name, &source);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("js-fixtures")
        .join(format!("run-{}", std::process::id()))
        .join(copy);
    let _ = std::fs::remove_dir_all(&dir);
    copy_tree(&source, &dir);
    std::fs::create_dir_all(dir.join(".git")).expect("mkdir .git");
    std::os::unix::fs::symlink(shared.join("node_modules"), dir.join("node_modules")).expect("link node_modules");
    dir
}

/// The fixture installed once for its content, whichever test process gets there first: each
/// installs into a folder of its own and renames it into place, so a folder that exists is whole.
fn installed(name: &str, source: &Path) -> PathBuf {
    use std::hash::{Hash, Hasher};
    fn hash_tree(dir: &Path, hasher: &mut std::collections::hash_map::DefaultHasher) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).expect("read_dir").map(|e| e.expect("entry").path()).collect();
        entries.sort();
        for path in entries {
            path.file_name().hash(hasher);
            if path.is_dir() {
                hash_tree(&path, hasher);
            } else {
                std::fs::read(&path).expect("read").hash(hasher);
            }
        }
    }
    // One install at a time in this process (its threads would share the scratch folder below).
    static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _installing = INSTALLING.lock().unwrap_or_else(|p| p.into_inner());
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    hash_tree(source, &mut hasher);
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("js-fixtures");
    let ready = base.join(format!("{name}-{:016x}", hasher.finish()));
    if ready.join("node_modules").is_dir() {
        return ready;
    }
    let own = base.join(format!("{name}-{:016x}.{}", hasher.finish(), std::process::id()));
    let _ = std::fs::remove_dir_all(&own);
    copy_tree(source, &own);
    let npm = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&own)
        .output()
        .expect("npm runs (Node.js and npm are needed for these tests)");
    assert!(npm.status.success(), "npm ci in {}: {}", own.display(), stderr(&npm));
    if std::fs::rename(&own, &ready).is_err() {
        // Another test process got there first: use its install.
        assert!(ready.join("node_modules").is_dir(), "cannot put the install of {name} in place");
        let _ = std::fs::remove_dir_all(&own);
    }
    ready
}

/// The framework's own verdicts from its JSON report (vitest's is jest's format): case name ->
/// passed | failed | skipped, and the files that failed outside any case.
fn own_outcomes(dir: &Path, framework: &str) -> (BTreeMap<String, String>, Vec<String>) {
    own_outcomes_with(dir, framework, &[])
}

/// [`own_outcomes`] of the framework run with `extra` arguments too.
fn own_outcomes_with(dir: &Path, framework: &str, extra: &[&str]) -> (BTreeMap<String, String>, Vec<String>) {
    let report = dir.join("own-report.json");
    let mut cmd = Command::new("npx");
    match framework {
        "vitest" => cmd.args(["vitest", "run", "--reporter=json", "--outputFile"]).arg(&report),
        _ => cmd.args(["jest", "--ci", "--json", "--outputFile"]).arg(&report),
    };
    cmd.args(extra);
    let out = cmd.current_dir(dir).output().expect("npx runs");
    let text = std::fs::read_to_string(&report)
        .unwrap_or_else(|e| panic!("{framework} wrote no report ({e}): {}\n{}", stdout(&out), stderr(&out)));
    let json: serde_json::Value = serde_json::from_str(&text).expect("a JSON report");
    let mut cases = BTreeMap::new();
    let mut file_errors = Vec::new();
    for file in json["testResults"].as_array().expect("testResults") {
        let abs = file["name"].as_str().expect("file name");
        let rel = Path::new(abs).strip_prefix(dir).expect("inside the project").to_string_lossy().into_owned();
        let assertions = file["assertionResults"].as_array().cloned().unwrap_or_default();
        let failed_outside =
            file["status"] == "failed" && assertions.iter().all(|a| a["status"] != "failed") || assertions.is_empty();
        if failed_outside && file["message"].as_str().is_some_and(|m| !m.is_empty()) {
            file_errors.push(rel.clone());
        }
        for a in assertions {
            let mut titles: Vec<String> = a["ancestorTitles"]
                .as_array()
                .expect("ancestorTitles")
                .iter()
                .map(|t| t.as_str().expect("title").to_string())
                .collect();
            titles.push(a["title"].as_str().expect("title").to_string());
            let outcome = match a["status"].as_str().expect("status") {
                "passed" => "passed",
                "failed" => "failed",
                _ => "skipped",
            };
            cases.insert(format!("{rel}::{}", titles.join(" > ")), outcome.to_string());
        }
    }
    file_errors.sort();
    (cases, file_errors)
}

/// Our verdicts from `--json` events: case name -> outcome, each case reported once.
fn our_cases(out: &Output) -> BTreeMap<String, String> {
    support::case_outcomes(&events(out))
}

fn check(out: &Output, dir: &Path, framework: &str) {
    assert_eq!(out.status.code(), Some(1), "stdout: {}\nstderr: {}", stdout(out), stderr(out));
    let (theirs, their_errors) = own_outcomes(dir, framework);
    let ours = our_cases(out);
    assert_eq!(ours, theirs, "{framework}: the same per-case outcomes as its own run");
    let files = final_outcomes(&events(out));
    let mut errors: Vec<String> = files.iter().filter(|(_, o)| *o == "error").map(|(f, _)| f.clone()).collect();
    errors.sort();
    for file in &their_errors {
        assert!(errors.contains(file), "{file} failed outside its tests in {framework}'s own run: ours {errors:?}");
    }
    assert_eq!(files["src/math.test.js"], "failed");
    assert_eq!(files["src/with space.test.js"], "passed");
}

fn run_local(dir: &Path, framework: &str, args: &[&str]) -> Output {
    testgrid(dir)
        .args(["run", "--local", "2", "--framework", framework, "--json"])
        .args(args)
        .output()
        .expect("testgrid runs")
}

#[test]
fn vitest_in_local_mode_matches_vitest() {
    let dir = project("vitest");
    check(&run_local(&dir, "vitest", &[]), &dir, "vitest");
}

#[test]
fn jest_in_local_mode_matches_jest() {
    let dir = project("jest");
    check(&run_local(&dir, "jest", &[]), &dir, "jest");
}

/// The files of jest's transform cache under `cache` (its folder is named by the project's
/// config, each file by a transformed file's content and that config's text).
fn transform_cache_files(cache: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, found);
            } else {
                found.push(path);
            }
        }
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(cache).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with("jest-transform-cache-") {
            walk(&entry.path(), &mut found);
        }
    }
    found.sort();
    found
}

#[test]
fn jest_runners_reuse_the_transform_cache_jest_itself_wrote() {
    // Its own cache folder, inside a copy of its own.
    let dir = fresh_copy("jest", "jest-cache");
    let cache = dir.join(".jest-cache");
    let package = std::fs::read_to_string(dir.join("package.json")).expect("package.json");
    let mut package: serde_json::Value = serde_json::from_str(&package).expect("package.json is JSON");
    package["jest"] = serde_json::json!({ "cacheDirectory": "<rootDir>/.jest-cache" });
    std::fs::write(dir.join("package.json"), package.to_string()).expect("write package.json");

    own_outcomes(&dir, "jest");
    let after_jest = transform_cache_files(&cache);
    assert!(!after_jest.is_empty(), "jest alone fills its transform cache under {}", cache.display());
    check(&run_local(&dir, "jest", &[]), &dir, "jest");
    // The runners' project config is jest's own, so every file they transform is found in the
    // cache: nothing is transformed (or written) again.
    assert_eq!(transform_cache_files(&cache), after_jest, "testgrid's runners transformed files jest had cached");
}

/// A copy of the jest fixture whose listing (`jest --listTests`) takes 3 s, with a globalSetup
/// (run once per runner) that says when a runner started and its pid: `KIND TIME [PID]` lines in
/// `TESTGRID_FIXTURE_MARKS/log`.
fn slow_listing_jest(copy: &str) -> PathBuf {
    let dir = fresh_copy("jest", copy);
    std::fs::write(
        dir.join("jest.config.js"),
        "const fs = require('node:fs');\n\
         const log = (what) => fs.appendFileSync(`${process.env.TESTGRID_FIXTURE_MARKS}/log`, `${what} ${Date.now()}\\n`);\n\
         if (process.argv.includes('--listTests')) {\n\
           log('list-start');\n\
           const until = Date.now() + 3000;\n\
           while (Date.now() < until) {}\n\
           log('list-end');\n\
         }\n\
         module.exports = { globalSetup: '<rootDir>/setup.js' };\n",
    )
    .expect("write jest.config.js");
    std::fs::write(
        dir.join("setup.js"),
        "module.exports = async () => require('node:fs').appendFileSync(`${process.env.TESTGRID_FIXTURE_MARKS}/log`, `setup ${Date.now()} ${process.pid}\\n`);\n",
    )
    .expect("write setup.js");
    dir
}

/// The numbers after `what ` on each line of the marks' log that starts so.
fn marked(marks: &Path, what: &str) -> Vec<Vec<u64>> {
    let log = std::fs::read_to_string(marks.join("log")).unwrap_or_default();
    log.lines()
        .filter_map(|l| l.strip_prefix(what).and_then(|rest| rest.strip_prefix(' ')))
        .map(|rest| rest.split_whitespace().map(|n| n.parse().expect("a number")).collect())
        .collect()
}

#[test]
fn in_local_mode_the_sessions_runner_starts_while_the_framework_lists_the_tests() {
    let dir = slow_listing_jest("jest-prestart");
    let marks = tempfile::tempdir().expect("a temp dir");
    let env = format!("TESTGRID_FIXTURE_MARKS={}", marks.path().display());
    let out = testgrid(&dir)
        .args(["run", "--local", "1", "--framework", "jest", "--env", &env, "src/with space.test.js"])
        .output()
        .expect("testgrid runs");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (setups, ends) = (marked(marks.path(), "setup"), marked(marks.path(), "list-end"));
    assert_eq!(setups.len(), 1, "one runner, started ahead and then used by the session: {setups:?}");
    assert_eq!(ends.len(), 1, "{ends:?}");
    assert!(setups[0][0] < ends[0][0], "the runner started before the listing ended: {setups:?} {ends:?}");
}

#[test]
fn an_interrupt_while_the_framework_lists_the_tests_stops_the_runner_started_ahead() {
    let dir = slow_listing_jest("jest-prestart-interrupt");
    let marks = tempfile::tempdir().expect("a temp dir");
    let env = format!("TESTGRID_FIXTURE_MARKS={}", marks.path().display());
    let mut child = testgrid(&dir)
        .args(["run", "--local", "1", "--framework", "jest", "--env", &env, "src/with space.test.js"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("testgrid starts");
    // The runner started ahead says so while the listing still takes its 3 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let runner = loop {
        if let Some(setup) = marked(marks.path(), "setup").first() {
            break setup[1];
        }
        assert!(std::time::Instant::now() < deadline, "no runner started ahead");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(marked(marks.path(), "list-end").is_empty(), "the listing was still under way");
    let kill = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill runs");
    assert!(kill.success());
    let status = child.wait().expect("testgrid ends");
    assert_eq!(status.code(), Some(130));
    // Its own process group, which the signal did not reach: testgrid stopped it on its way out.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while Path::new(&format!("/proc/{runner}")).exists() {
        assert!(std::time::Instant::now() < deadline, "the runner {runner} outlived testgrid");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn vitest_and_jest_on_a_real_grid_match_their_own_runs() {
    let (coordinator, grpc, _http) = spawn_coordinator("127.0.0.1:0", "127.0.0.1:0", &[]);
    let url = format!("http://{grpc}");
    for framework in ["vitest", "jest"] {
        let dir = project(framework);
        let names: Vec<String> = (1..=2).map(|i| format!("{framework}-{i}")).collect();
        let workers: Vec<support::Proc> = names.iter().map(|n| support::spawn_worker_env(&url, n, &dir, &[])).collect();
        support::wait_for_workers(&url, &names);
        let junit = dir.join("grid-report.xml");
        let out = testgrid(&dir)
            .args(["run", "--grid", &url, "--framework", framework, "--json", "--junit"])
            .arg(&junit)
            .output()
            .expect("testgrid runs");
        check(&out, &dir, framework);
        let xml = std::fs::read_to_string(&junit).expect("JUnit written");
        assert!(xml.contains(r#"name="src/math.test.js::outer &gt; inner &gt; nested fails""#), "{xml}");
        assert!(xml.contains(r#"classname="src/math.test.js""#), "{xml}");
        assert!(xml.contains("<skipped"), "skips and todos stay visible: {xml}");
        // A file whose hooks failed is named with the hook's error, beside its cases.
        assert!(xml.contains(r#"<testcase name="src/hooks.test.js" classname="src/hooks.test.js""#), "{xml}");
        assert!(xml.contains("afterAll broke"), "{xml}");
        drop(workers);
    }
    drop(coordinator);
}

#[test]
fn a_single_case_runs_alone_and_a_hang_or_exit_is_reported() {
    for framework in ["vitest", "jest"] {
        // It adds a file: a copy of its own.
        let dir = fresh_copy(framework, &format!("{framework}-crash"));
        let out = run_local(&dir, framework, &["src/math.test.js::outer > talks"]);
        assert_eq!(out.status.code(), Some(0), "{framework}: {}", stderr(&out));
        let cases = our_cases(&out);
        let ran: Vec<&String> = cases.iter().filter(|(_, o)| *o != "skipped").map(|(n, _)| n).collect();
        assert_eq!(ran, vec!["src/math.test.js::outer > talks"], "{framework}: {cases:?}");

        // One slot, files largest first: exit, hang, then a small file that a vitest runner
        // already holds queued behind the hang when the hang's timeout kills it.
        let small = "crash/small.test.js";
        let import = if framework == "vitest" { "import { expect, test } from 'vitest';\n" } else { "" };
        std::fs::write(dir.join(small), format!("{import}test('small', () => expect(1).toBe(1));\n"))
            .expect("write a small test");
        let out = testgrid(&dir)
            .args(["run", "--local", "1", "--framework", framework, "--json", "--timeout", "10s"])
            .args(["--env", "TESTGRID_FIXTURE_CRASH=1", "crash/hang.test.js", "crash/exit.test.js", small])
            .output()
            .expect("testgrid runs");
        assert_eq!(out.status.code(), Some(1), "{framework}: {}", stderr(&out));
        let files = final_outcomes(&events(&out));
        assert_eq!(files["crash/hang.test.js"], "timed_out", "{framework}");
        assert_eq!(files["crash/exit.test.js"], "failed", "{framework}: process.exit fails its test");
        assert_eq!(files[small], "passed", "{framework}: a file queued behind a killed one runs again, uncharged");
        let cases = our_cases(&out);
        assert_eq!(cases["crash/exit.test.js::after the exit"], "passed", "{framework}: the runner lives on");
        assert_eq!(cases["crash/small.test.js::small"], "passed", "{framework}");
    }
}

/// Write vitest test files into `dir`: (name, body) pairs, each importing vitest's API and
/// `node:fs`, seeing the folder `MARKS` (where the files leave marks for each other).
fn vitest_files(dir: &Path, marks: &Path, files: &[(&str, &str)]) {
    for (name, body) in files {
        let text = format!(
            "import {{ expect, test }} from 'vitest';\nimport fs from 'node:fs';\nconst MARKS = {marks:?};\n{body}\n"
        );
        std::fs::write(dir.join(name), text).expect("write a test file");
    }
}

/// With more than one slot, vitest's runner serves every slot of the session; a file that
/// crashes the runner must still be the only one charged: the files running beside it run
/// again. (A file killed for another's timeout runs again, uncharged, whether it had begun or
/// not: `a_single_case_runs_alone_and_a_hang_or_exit_is_reported`.)
#[test]
fn a_runner_shared_by_slots_charges_only_the_file_that_crashed_it() {
    let dir = fresh_copy("vitest", "vitest-shared-runner");
    std::fs::create_dir_all(dir.join("shared")).expect("mkdir shared");
    let marks = tempfile::tempdir().expect("a temp dir");
    // The culprit waits for the bystander's mark with a deadline; the first run of the bystander
    // holds on until the runner goes (a rerun finds its own mark and passes at once).
    let wait_for = "async function waitFor(name) {\n  for (let i = 0; i < 600 && !fs.existsSync(`${MARKS}/${name}`); i++) await new Promise((r) => setTimeout(r, 50));\n}";
    let bystander = |name: &str| {
        format!(
            "{wait_for}\ntest('{name}', async () => {{\n  const mine = `${{MARKS}}/{name}`;\n  if (fs.existsSync(mine)) return;\n  fs.writeFileSync(mine, '');\n  await new Promise(() => {{}});\n}}, 120000);"
        )
    };
    // The culprit kills the runner itself (its parent: vitest's test workers are its children),
    // once the bystander runs beside it.
    let killer = format!(
        "{wait_for}\ntest('kills the runner', async () => {{\n  // {}\n  await waitFor('crash-by');\n  const parent = fs.readFileSync(`/proc/${{process.ppid}}/cmdline`, 'utf8');\n  if (parent.includes('testgrid_vitest')) process.kill(process.ppid, 'SIGKILL');\n  await new Promise((r) => setTimeout(r, 5000));\n}}, 60000);",
        "x".repeat(400)
    );
    vitest_files(
        &dir,
        marks.path(),
        &[("shared/killer.test.js", &killer), ("shared/crash-by.test.js", &bystander("crash-by"))],
    );
    let out = testgrid(&dir)
        .args(["run", "--local", "2", "--framework", "vitest", "--json", "--timeout", "60s"])
        .args(["shared/killer.test.js", "shared/crash-by.test.js"])
        .output()
        .expect("testgrid runs");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let all = events(&out);
    let files = final_outcomes(&all);
    assert_eq!(files["shared/killer.test.js"], "failed", "{files:?}");
    let killed = all.iter().rev().find(|e| e["event"] == "test_finished" && e["test"] == "shared/killer.test.js");
    let message = killed.and_then(|e| e["message"].as_str()).unwrap_or_default().to_string();
    assert!(message.contains("runner crashed"), "the culprit is told why: {message:?}");
    assert!(marks.path().join("crash-by").exists(), "the bystander ran beside the culprit");
    assert_eq!(
        files["shared/crash-by.test.js"], "passed",
        "running beside a crash, it runs again, uncharged: {files:?}"
    );
}

/// One vitest runner serves both slots: its test workers running at once still have distinct
/// `VITEST_POOL_ID`s between 1 and the slot count, as under `vitest run --maxWorkers=2`, and no
/// `TESTGRID_SLOT` (no one slot runs them).
#[test]
fn test_workers_of_a_shared_vitest_runner_have_distinct_pool_ids() {
    let dir = fresh_copy("vitest", "vitest-pool-ids");
    std::fs::create_dir_all(dir.join("ids")).expect("mkdir ids");
    let marks = tempfile::tempdir().expect("a temp dir");
    let names: Vec<String> = (1..=6).map(|i| format!("ids/p{i}.test.js")).collect();
    let body = "test('records its pool id', async () => {\n  const start = Date.now();\n  await new Promise((r) => setTimeout(r, 500));\n  fs.appendFileSync(`${MARKS}/ids`, `${process.env.VITEST_POOL_ID} ${start} ${Date.now()} ${process.env.TESTGRID_SLOT ?? 'none'}\\n`);\n});";
    let files: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), body)).collect();
    vitest_files(&dir, marks.path(), &files);
    let out = testgrid(&dir)
        .args(["run", "--local", "2", "--framework", "vitest", "--json"])
        .args(&names)
        .output()
        .expect("testgrid runs");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = std::fs::read_to_string(marks.path().join("ids")).expect("the files recorded their ids");
    let runs: Vec<(u64, u64, u64)> = text
        .lines()
        .map(|l| {
            let v: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(v.get(3), Some(&"none"), "a runner of both slots is neither's (no TESTGRID_SLOT): {l}");
            let n = |i: usize| v[i].parse::<u64>().expect("a number");
            (n(0), n(1), n(2))
        })
        .collect();
    assert_eq!(runs.len(), 6, "{text}");
    for (i, a) in runs.iter().enumerate() {
        assert!((1..=2).contains(&a.0), "a pool id between 1 and the slots: {text}");
        for b in &runs[i + 1..] {
            let overlap = a.1 < b.2 && b.1 < a.2;
            assert!(!overlap || a.0 != b.0, "two files running at once had pool id {}: {text}", a.0);
        }
    }
}

/// vitest 3 runs one `runTestSpecifications` per file: its runner says it cannot serve several
/// slots, the worker falls back to a runner per slot (each with its `TESTGRID_SLOT`), and the
/// outcomes are vitest's own.
#[test]
fn a_test_name_pattern_after_the_dashes_selects_what_the_framework_itself_selects() {
    for (fixture, framework, args) in [
        ("vitest", "vitest", ["-t", "nested"]),
        ("vitest3", "vitest", ["--testNamePattern=c ", "--silent"]),
        ("jest", "jest", ["--testNamePattern", "nested"]),
    ] {
        let dir = project(fixture);
        let (theirs, _) = own_outcomes_with(&dir, framework, &args);
        let selected = theirs.values().filter(|o| *o != "skipped").count();
        assert!(selected >= 1 && selected + 2 < theirs.len(), "{fixture}: the pattern selects some cases: {theirs:?}");
        let mut ours = vec!["--"];
        ours.extend(args);
        let out = run_local(&dir, framework, &ours);
        assert!(matches!(out.status.code(), Some(0 | 1)), "{fixture}: {}", stderr(&out));
        assert_eq!(our_cases(&out), theirs, "{fixture}: the cases {framework} selects, with its outcomes");
    }
    // What a grid decides itself is refused, saying what to use.
    let out = run_local(&project("jest"), "jest", &["--", "--maxWorkers=4"]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(stderr(&out).contains("--local"), "{}", stderr(&out));
}

#[test]
fn list_names_the_files_run_schedules() {
    for (fixture, framework) in [("vitest", "vitest"), ("jest", "jest")] {
        let dir = project(fixture);
        let out = testgrid(&dir).args(["list", "--json", "--framework", framework]).output().expect("testgrid runs");
        let listed: Vec<String> = support::listed(&out).into_keys().collect();
        let out = run_local(&dir, framework, &[]);
        let units: Vec<String> = final_outcomes(&events(&out)).into_keys().collect();
        assert_eq!(listed, units, "{fixture}: list names the files run schedules");
    }
}

#[test]
fn vitest_3_runners_serve_one_slot_each_and_match_vitest() {
    let dir = project("vitest3");
    let marks = tempfile::tempdir().expect("a temp dir");
    let out = testgrid(&dir)
        .args(["run", "--local", "2", "--framework", "vitest", "--json"])
        .env("TESTGRID_FIXTURE_MARKS", marks.path())
        .output()
        .expect("testgrid runs");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let (theirs, _) = own_outcomes(&dir, "vitest");
    assert_eq!(our_cases(&out), theirs, "vitest 3: the same per-case outcomes as its own run");
    assert_eq!(theirs.len(), 5, "{theirs:?}");
    let slots = std::fs::read_to_string(marks.path().join("slots")).expect("the tests recorded their slots");
    let seen: Vec<&str> = slots.lines().collect();
    assert_eq!(seen.len(), 4, "{slots}");
    assert!(seen.iter().all(|s| *s == "0" || *s == "1"), "each file ran in a runner of one slot: {slots}");
}

#[test]
fn type_tests_run_with_the_suite_and_a_file_run_both_ways_keeps_both_outcomes() {
    let dir = project("vitest-typecheck");
    let out = run_local(&dir, "vitest", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    // vitest names a type test's file as its outermost suite: `F::F > name` in its own report.
    // testgrid marks the type tests of a file that also runs (`F::[typecheck] name`), and leaves
    // those of a file that is only type-checked as they are.
    let (own, _) = own_outcomes(&dir, "vitest");
    let runs: BTreeSet<&str> =
        own.keys().filter_map(|k| k.split_once("::")).filter(|(f, t)| !t.starts_with(*f)).map(|(f, _)| f).collect();
    let theirs: BTreeMap<String, String> = own
        .iter()
        .map(|(key, outcome)| {
            let (file, title) = key.split_once("::").expect("FILE::NAME");
            let key = match title.strip_prefix(&format!("{file} > ")) {
                Some(name) if runs.contains(file) => format!("{file}::[typecheck] {name}"),
                Some(name) => format!("{file}::{name}"),
                None => key.clone(),
            };
            (key, outcome.clone())
        })
        .collect();
    let ours = our_cases(&out);
    assert_eq!(ours, theirs, "the same per-case outcomes as vitest's own run, type tests included");
    assert_eq!(ours["src/both.test.ts::fails only at runtime"], "failed");
    assert_eq!(ours["src/both.test.ts::[typecheck] fails only at runtime"], "passed");
    assert_eq!(ours["src/types.test-d.ts::a string is not a number"], "failed");
}

/// The discovery fixtures (`tests/fixtures/discovery`): one workspace root (its own `.git`)
/// holding a project per configuration, each using the installed `vitest` or `jest` fixture's
/// `node_modules` through a symlink, so nothing is installed twice.
fn discovery() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // A copy per test process: nextest runs tests in processes of their own, at once.
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("js-fixtures")
            .join(format!("run-{}", std::process::id()))
            .join("discovery");
        let _ = std::fs::remove_dir_all(&dir);
        copy_tree(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/discovery"), &dir);
        std::fs::create_dir_all(dir.join(".git")).expect("mkdir .git");
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let name = entry.expect("entry").file_name().to_string_lossy().into_owned();
            let Some(framework) = ["vitest", "jest"].into_iter().find(|f| name.starts_with(f)) else { continue };
            std::os::unix::fs::symlink(project(framework).join("node_modules"), dir.join(&name).join("node_modules"))
                .expect("symlink node_modules");
        }
        dir
    })
}

/// The test units `testgrid run ARGS`, run in `dir`, submits to `grid` (which has no workers),
/// in the order submitted: the session is submitted detached, cancelled, and its `created`
/// event read back.
fn submitted(grid: &support::Grid, dir: &Path, args: &[&str]) -> Vec<String> {
    let out = testgrid(dir)
        .args(["run", "--detach", "--json"])
        .args(args)
        .env("TESTGRID_GRID", &grid.url)
        .output()
        .expect("testgrid runs");
    assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    let answer: serde_json::Value = serde_json::from_str(stdout(&out).trim()).expect("a JSON answer");
    let session = answer["session"].as_str().expect("a session id");
    assert!(grid.cli(&["cancel", session]).status.success(), "cancel {session}");
    let watched = grid.cli(&["watch", session, "--json"]);
    let created = events(&watched).into_iter().find(|e| e["event"] == "created").expect("a created event");
    created["tests"].as_array().expect("tests").iter().map(|t| t.as_str().expect("a path").to_string()).collect()
}

/// The files the framework itself lists in `project` (`npx vitest list --filesOnly`,
/// `npx jest --listTests`) as testgrid names its units: from the workspace root `root`, and
/// `|PROJECT| FILE` for a file vitest lists in more than one project. Sorted.
fn own_listing(root: &Path, project: &str, framework: &str) -> Vec<String> {
    let dir = root.join(project);
    let mut cmd = Command::new("npx");
    match framework {
        "vitest" => cmd.args(["vitest", "list", "--filesOnly"]),
        _ => cmd.args(["jest", "--listTests"]),
    };
    let out = cmd.current_dir(&dir).env("NO_COLOR", "1").output().expect("npx runs");
    assert!(out.status.success(), "{framework} lists its files in {project}: {}", stderr(&out));
    // vitest: `FILE` or `[PROJECT] FILE`, relative to the project; jest: absolute paths.
    let mut projects: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in stdout(&out).lines().filter(|l| !l.trim().is_empty()) {
        let (name, file) = match line.strip_prefix('[').and_then(|l| l.split_once("] ")) {
            Some((name, file)) => (Some(name.to_string()), file),
            None => (None, line),
        };
        let file = Path::new(file).strip_prefix(&dir).unwrap_or(Path::new(file)).to_string_lossy().into_owned();
        projects.entry(format!("{project}/{file}")).or_default().extend(name);
    }
    let mut units: Vec<String> = projects
        .into_iter()
        .flat_map(|(file, names)| match names.len() {
            0 | 1 => vec![file],
            _ => names.into_iter().map(|n| format!("|{n}| {file}")).collect(),
        })
        .collect();
    units.sort();
    units
}

fn sorted(mut units: Vec<String>) -> Vec<String> {
    units.sort();
    units
}

#[test]
fn the_projects_own_configuration_picks_the_files_as_the_framework_lists_them() {
    let root = discovery();
    let grid = support::Grid::start(root, 0);
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "vitest-include",
            "vitest",
            &["vitest-include/other/o.js", "vitest-include/src/check.js", "vitest-include/src/deep/check.ts"],
        ),
        ("vitest-dir", "vitest", &["vitest-dir/tests/a.test.js", "vitest-dir/tests/sub/b.spec.js"]),
        (
            "vitest-projects",
            "vitest",
            &[
                "vitest-projects/packages/a/a.test.js",
                "vitest-projects/packages/a/t.test-d.ts",
                "vitest-projects/packages/c/spec/c.js",
                "|integ| vitest-projects/shared/s.test.js",
                "|unit| vitest-projects/shared/s.test.js",
            ],
        ),
        ("jest-match", "jest", &["jest-match/lib/checks/a.js", "jest-match/more/checks/b.js"]),
        ("jest-regex", "jest", &["jest-regex/spec/a.js", "jest-regex/spec/deep/b.js", "jest-regex/src/c.check.js"]),
        (
            "jest-projects",
            "jest",
            &[
                "jest-projects/one/o.js",
                "jest-projects/pkg/p.spec.js",
                "jest-projects/shared/s.js",
                "jest-projects/two/t.js",
            ],
        ),
    ];
    for (project, framework, want) in cases {
        // From the workspace root, naming the project; and from inside it, naming nothing.
        let named = submitted(&grid, root, &["--framework", framework, project]);
        assert_eq!(sorted(named.clone()), own_listing(root, project, framework), "{project}: as {framework} lists");
        let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(sorted(named), want, "{project}");
        let inside = submitted(&grid, &root.join(project), &["--framework", framework]);
        assert_eq!(sorted(inside), want, "{project}: run from inside it");
    }
    // Largest first, as for every framework.
    let ordered = submitted(&grid, root, &["--framework", "vitest", "vitest-dir"]);
    assert_eq!(ordered, vec!["vitest-dir/tests/sub/b.spec.js", "vitest-dir/tests/a.test.js"]);
}

/// The units a local `testgrid run --json ARGS`, run in `dir`, created its session with.
fn created_locally(dir: &Path, args: &[&str]) -> Vec<String> {
    let out = testgrid(dir).args(["run", "--local", "2", "--json"]).args(args).output().expect("testgrid runs");
    let created = events(&out).into_iter().find(|e| e["event"] == "created");
    let created = created.unwrap_or_else(|| panic!("{args:?}: no created event: {}", stderr(&out)));
    created["tests"].as_array().expect("tests").iter().map(|t| t.as_str().expect("a path").to_string()).collect()
}

#[test]
fn in_local_mode_vitests_own_runner_lists_the_files_as_vitest_list_does() {
    let root = discovery();
    for project in ["vitest-include", "vitest-dir", "vitest-projects"] {
        let listed = created_locally(root, &["--framework", "vitest", project]);
        assert_eq!(sorted(listed), own_listing(root, project, "vitest"), "{project}: as vitest lists");
    }
    // The runner that runs the files is the one vitest that lists them: no `vitest list` of its own.
    let dir = fresh_copy("vitest", "vitest-lists-once");
    let marks = tempfile::tempdir().expect("a temp dir");
    std::fs::write(
        dir.join("vitest.config.mjs"),
        "import fs from 'node:fs';\n\
         const marks = process.env.TESTGRID_FIXTURE_MARKS;\n\
         if (marks) fs.appendFileSync(`${marks}/log`, `config ${process.argv.includes('list') ? 1 : 0}\\n`);\n\
         export default {};\n",
    )
    .expect("write vitest.config.mjs");
    let env = format!("TESTGRID_FIXTURE_MARKS={}", marks.path().display());
    let listed = created_locally(&dir, &["--framework", "vitest", "--env", &env]);
    assert!(listed.iter().any(|t| t.ends_with(".test.js")), "{listed:?}");
    let loads = marked(marks.path(), "config");
    assert!(!loads.is_empty(), "the config was loaded");
    assert!(loads.iter().all(|l| l == &[0]), "no `vitest list` ran: {loads:?}");
    // Its own listing, for comparison: the same files.
    let mut own = own_listing(dir.parent().expect("a parent"), "vitest-lists-once", "vitest");
    own.iter_mut().for_each(|f| *f = f.trim_start_matches("vitest-lists-once/").to_string());
    assert_eq!(sorted(listed), own);
}

#[test]
fn paths_asked_for_restrict_the_frameworks_list_and_patterns_replace_it() {
    let root = discovery();
    let grid = support::Grid::start(root, 0);
    let shared = submitted(&grid, root, &["--framework", "vitest", "vitest-projects/shared"]);
    assert_eq!(
        sorted(shared),
        vec!["|integ| vitest-projects/shared/s.test.js", "|unit| vitest-projects/shared/s.test.js"]
    );
    let some = submitted(&grid, root, &["--framework", "jest", "jest-projects/one", "jest-projects/shared/s.js"]);
    assert_eq!(sorted(some), vec!["jest-projects/one/o.js", "jest-projects/shared/s.js"]);
    let case = submitted(&grid, root, &["--framework", "vitest", "vitest-include/src/check.js::runs"]);
    assert_eq!(case, vec!["vitest-include/src/check.js::runs"]);

    // A file the configuration leaves out is not run, and said so.
    let out = testgrid(root)
        .args(["run", "--framework", "vitest", "vitest-include/src/a.test.js"])
        .env("TESTGRID_GRID", &grid.url)
        .output()
        .expect("testgrid runs");
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("vitest does not list vitest-include/src/a.test.js"), "{}", stderr(&out));

    // `--pattern` chooses the files itself: the framework is not asked (no Node needed).
    let patterned = testgrid(root)
        .args(["run", "--detach", "--json", "--framework", "vitest", "--pattern", "vitest-include/src/*.js"])
        .env("TESTGRID_GRID", &grid.url)
        .env("TESTGRID_NODE", "/nonexistent/node")
        .output()
        .expect("testgrid runs");
    assert_eq!(patterned.status.code(), Some(0), "{}", stderr(&patterned));
    assert!(stdout(&patterned).contains("\"tests\":2"), "{}", stdout(&patterned));

    // Without Node the framework cannot be asked: a usage error naming the fixes.
    let out = testgrid(root)
        .args(["run", "--framework", "jest", "jest-regex"])
        .env("TESTGRID_GRID", &grid.url)
        .env("TESTGRID_NODE", "/nonexistent/node")
        .output()
        .expect("testgrid runs");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("TESTGRID_NODE") && stderr(&out).contains("--pattern"), "{}", stderr(&out));

    // A configuration that does not load: the framework's own words, first lines only.
    let broken = root.join("vitest-broken");
    let _ = std::fs::remove_dir_all(&broken);
    copy_tree(&root.join("vitest-dir"), &broken);
    std::os::unix::fs::symlink(project("vitest").join("node_modules"), broken.join("node_modules")).expect("symlink");
    let config = "throw new Error('config exploded' + '\\ndetail'.repeat(100));\n";
    std::fs::write(broken.join("vitest.config.mjs"), config).expect("write");
    let out = testgrid(root)
        .args(["run", "--framework", "vitest", "vitest-broken"])
        .env("TESTGRID_GRID", &grid.url)
        .output()
        .expect("testgrid runs");
    let said = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(said.contains("failed to list the test files") && said.contains("config exploded"), "{said}");
    assert!(said.matches("detail").count() < 10, "first lines only: {said}");
}

/// Per file of an istanbul `coverage-final.json`: (statements, statements covered), by path
/// relative to `dir`.
fn statement_coverage(dir: &Path, report: &Path) -> BTreeMap<String, (usize, usize)> {
    let text =
        std::fs::read_to_string(report).unwrap_or_else(|e| panic!("no coverage report {}: {e}", report.display()));
    let json: serde_json::Value = serde_json::from_str(&text).expect("coverage JSON");
    let files = json.as_object().expect("a map of files");
    files
        .iter()
        .map(|(path, file)| {
            let counts = file["s"].as_object().expect("statement counts");
            let covered = counts.values().filter(|n| n.as_u64().unwrap_or(0) > 0).count();
            let name = Path::new(path).strip_prefix(dir).unwrap_or(Path::new(path)).to_string_lossy().into_owned();
            (name, (counts.len(), covered))
        })
        .collect()
}

#[test]
fn coverage_from_every_slot_is_merged_into_the_report_the_framework_alone_writes() {
    for framework in ["jest", "vitest"] {
        let fixture = format!("coverage-{framework}");
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(&fixture);
        let dir = project(framework).parent().expect("the run folder").join(&fixture);
        let _ = std::fs::remove_dir_all(&dir);
        copy_tree(&source, &dir);
        std::fs::create_dir_all(dir.join(".git")).expect("mkdir .git");
        std::os::unix::fs::symlink(project(framework).join("node_modules"), dir.join("node_modules")).expect("symlink");
        let report = dir.join("coverage/coverage-final.json");

        let own = match framework {
            "jest" => Command::new("npx").args(["jest", "--ci"]).current_dir(&dir).output(),
            _ => Command::new("npx").args(["vitest", "run"]).current_dir(&dir).output(),
        }
        .expect("npx runs");
        assert!(own.status.success(), "{framework} alone: {}", stderr(&own));
        let expected = statement_coverage(&dir, &report);
        assert_eq!(expected.len(), 3, "{framework}: the untested file counts too: {expected:?}");
        std::fs::remove_dir_all(dir.join("coverage")).expect("remove the framework's report");

        let out =
            testgrid(&dir).args(["run", "--local", "2", "--framework", framework]).output().expect("testgrid runs");
        assert_eq!(out.status.code(), Some(0), "{framework}: {}", stderr(&out));
        assert_eq!(statement_coverage(&dir, &report), expected, "{framework}: the merged report is its own");
        assert!(stderr(&out).contains("Statements"), "{framework}'s summary is shown: {}", stderr(&out));
    }
}
