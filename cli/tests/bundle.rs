//! Workspace bundles end to end: a real coordinator with a data directory, workers in empty
//! folders of their own with no `--root` (nothing shared with the CLI), and the real CLI sending
//! its workspace. The hostile cases talk to the blob service with a gRPC client of their own.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use support::{Proc, rootless_worker, spawn_coordinator, testgrid, wait_for_workers};
use testgrid_proto as pb;

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

/// A workspace with nested folders, an executable script, a symlink inside the tree, an ignored
/// folder, unicode and spaces in names; each test checks what it can see.
fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    std::fs::create_dir(root.join(".git")).expect(".git");
    write(root, ".gitignore", "ignored/\n");
    write(root, "ignored/secret.txt", "must not travel");
    write(root, "data/ünï file.txt", "hello from the laptop\n");
    std::os::unix::fs::symlink("ünï file.txt", root.join("data/link.txt")).expect("symlink");
    write(root, "tools/run me.sh", "#!/bin/sh\necho ran\n");
    std::fs::set_permissions(root.join("tools/run me.sh"), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    write(
        root,
        "tests/nested/deep/reads data.sh",
        "set -e\ngrep -q 'hello from the laptop' 'data/ünï file.txt'\ngrep -q 'hello from the laptop' data/link.txt\n",
    );
    write(root, "tests/runs tool.sh", "set -e\n[ \"$('./tools/run me.sh')\" = ran ]\n");
    write(root, "tests/sees no ignored.sh", "set -e\n[ ! -e ignored ]\n[ -e .gitignore ]\n");
    write(root, "tests/not in the cli folder.sh", "set -e\n[ \"$(pwd -P)\" != \"$TESTGRID_CLI_DIR\" ]\n");
    age(root);
    dir
}

/// Files written a minute ago, as a checkout's are: the index trusts them (a file changed within
/// the second the index was written is hashed again, as git does).
fn age(dir: &Path) {
    let then = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let entry = entry.expect("entry");
        let kind = entry.file_type().expect("file type");
        if kind.is_dir() {
            age(&entry.path());
        } else if kind.is_file() {
            let file = std::fs::File::options().write(true).open(entry.path()).expect("open");
            file.set_modified(then).expect("set mtime");
        }
    }
}

/// `testgrid run --json` in `dir`: its exit code, the `workspace` event, and each test's outcome.
fn run(dir: &Path, url: &str, extra: &[&str]) -> (Option<i32>, serde_json::Value, Vec<(String, String)>, String) {
    let (code, events, stderr) = run_events(dir, url, extra);
    let workspace = events.iter().find(|e| e["event"] == "created").map(|e| e["workspace"].clone()).unwrap_or_default();
    let outcomes = events
        .iter()
        .filter(|e| e["event"] == "test_finished")
        .map(|e| (e["test"].as_str().unwrap_or("").to_string(), e["outcome"].as_str().unwrap_or("").to_string()))
        .collect();
    (code, workspace, outcomes, stderr)
}

/// `testgrid run --json` of the shell tests under `tests/` in `dir`: its exit code, its events
/// and its stderr.
fn run_events(dir: &Path, url: &str, extra: &[&str]) -> (Option<i32>, Vec<serde_json::Value>, String) {
    let real = dir.canonicalize().expect("canonical");
    let cli_dir = format!("TESTGRID_CLI_DIR={}", real.display());
    let out = testgrid(dir)
        .args(["run", "--grid", url, "--framework", "shell", "--json", "--env", &cli_dir])
        .args(extra)
        .arg("tests")
        .output()
        .expect("testgrid runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let events: Vec<serde_json::Value> = stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    (out.status.code(), events, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The finished tests' `(outcome, message, output)`.
fn finished(events: &[serde_json::Value]) -> Vec<(String, String, String)> {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
    events
        .iter()
        .filter(|e| e["event"] == "test_finished")
        .map(|e| (text(&e["outcome"]), text(&e["message"]), text(&e["output"])))
        .collect()
}

/// A workspace whose tests need what a setup makes: `deps/made.txt` (ignored, so it never
/// travels) holding `made from` and the key file's contents.
fn setup_workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    std::fs::create_dir(root.join(".git")).expect(".git");
    write(root, ".gitignore", "deps/\nlocal.lock\n");
    write(root, "lock.txt", "v1\n");
    write(root, "local.lock", "ignored\n");
    for i in 0..4 {
        write(root, &format!("tests/t{i}.sh"), "set -e\ngrep -q \"made from $(cat lock.txt)\" deps/made.txt\n");
    }
    age(root);
    dir
}

/// The setup: counts its runs in `$SETUP_RUNS` (outside every tree) and makes `deps/`.
const SETUP: &str = "echo run >> \"$SETUP_RUNS\"; mkdir -p deps; echo \"made from $(cat lock.txt)\" > deps/made.txt";

fn runs(file: &Path) -> usize {
    std::fs::read_to_string(file).map_or(0, |t| t.lines().count())
}

#[test]
fn a_setup_runs_once_per_worker_is_reused_for_the_same_key_and_its_failure_fails_the_tests() {
    let (_coordinator, grpc, _http) = spawn_coordinator("127.0.0.1:0", "127.0.0.1:0", &[]);
    let url = format!("http://{grpc}");
    let (place, cache) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let _worker = rootless_worker(&url, "bare", place.path(), cache.path());
    wait_for_workers(&url, &["bare".into()]);
    let ws = setup_workspace();
    let counter = tempfile::tempdir().expect("tempdir");
    let count = counter.path().join("runs");
    let env = format!("SETUP_RUNS={}", count.display());
    let with_setup = ["--env", &env, "--setup", SETUP, "--setup-key", "lock.txt", "--setup-output", "deps"];

    // Four tests on one worker of two slots: the setup runs once, before the first.
    let (code, events, stderr) = run_events(ws.path(), &url, &with_setup);
    let done = finished(&events);
    assert_eq!(code, Some(0), "{stderr}\n{done:?}");
    assert_eq!(done.len(), 4, "{done:?}");
    assert_eq!(runs(&count), 1, "one setup per worker and session");
    assert_eq!(setups(&events), [("passed".to_string(), false)], "the setup is told once");

    // The same key: what it made is put in place, and it does not run.
    let (code, events, stderr) = run_events(ws.path(), &url, &with_setup);
    assert_eq!(code, Some(0), "{stderr}\n{:?}", finished(&events));
    assert_eq!(runs(&count), 1, "the second session reused the setup's outputs");
    assert_eq!(setups(&events), [("passed".to_string(), true)]);

    // A changed key file: the setup runs again, and the tests see what it made this time.
    write(ws.path(), "lock.txt", "v2\n");
    let (code, events, stderr) = run_events(ws.path(), &url, &with_setup);
    assert_eq!(code, Some(0), "{stderr}\n{:?}", finished(&events));
    assert_eq!(runs(&count), 2, "a new key runs the setup");

    // A failing setup: every test of the session on the worker fails with its output; it ran once.
    let failing = "echo run >> \"$SETUP_RUNS\"; echo 'cannot install: no registry'; exit 7";
    let (code, events, stderr) = run_events(ws.path(), &url, &["--env", &env, "--setup", failing]);
    let done = finished(&events);
    assert_eq!(code, Some(1), "{stderr}\n{done:?}");
    assert_eq!(done.len(), 4, "{done:?}");
    for (outcome, message, output) in &done {
        assert_eq!(outcome, "error", "{done:?}");
        assert!(message.contains("setup") && message.contains("exit code 7"), "{message}");
        assert!(output.contains("cannot install: no registry"), "{output}");
    }
    assert_eq!(runs(&count), 3, "a failed setup is not run again for each test");
    assert_eq!(setups(&events), [("failed".to_string(), false)]);
    let told = events.iter().find(|e| e["event"] == "setup_finished").expect("told");
    assert!(told["output"].as_str().unwrap_or("").contains("cannot install: no registry"), "{told}");
    assert_eq!(told["exit_code"], 7, "{told}");

    // A key file that does not travel: said, since the workers cannot see it change.
    let (code, _, stderr) = run_events(
        ws.path(),
        &url,
        &["--setup", "mkdir -p deps; echo made from v2 > deps/made.txt", "--setup-key", "local.lock"],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("--setup-key local.lock is not sent with the workspace"), "{stderr}");
}

/// The `setup_finished` events: (outcome, reused).
fn setups(events: &[serde_json::Value]) -> Vec<(String, bool)> {
    events
        .iter()
        .filter(|e| e["event"] == "setup_finished")
        .map(|e| (e["outcome"].as_str().unwrap_or("").to_string(), e["reused"].as_bool().unwrap_or(false)))
        .collect()
}

#[test]
fn a_setup_in_the_local_tree_is_skipped_while_its_key_is_unchanged() {
    let ws = setup_workspace();
    let (counter, xdg) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let count = counter.path().join("runs");
    let env = format!("SETUP_RUNS={}", count.display());
    let run_local = || {
        let out = testgrid(ws.path())
            .args(["run", "--local", "2", "--framework", "shell", "--env", &env, "--setup", SETUP])
            .args(["--setup-key", "lock.txt", "--setup-output", "deps", "tests"])
            .env("XDG_CACHE_HOME", xdg.path())
            .output()
            .expect("testgrid runs");
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, stderr) = run_local();
    assert_eq!((code, runs(&count)), (Some(0), 1), "{stderr}");
    let (code, stderr) = run_local();
    assert_eq!((code, runs(&count)), (Some(0), 1), "the same key in the same tree: {stderr}");
    // Its output gone: it runs again, even with the same key.
    std::fs::remove_dir_all(ws.path().join("deps")).expect("rm deps");
    let (code, stderr) = run_local();
    assert_eq!((code, runs(&count)), (Some(0), 2), "{stderr}");
    write(ws.path(), "lock.txt", "v2\n");
    let (code, stderr) = run_local();
    assert_eq!((code, runs(&count)), (Some(0), 3), "{stderr}");

    // Parts of a setup that cannot work are refused before anything runs, naming the fix.
    for (args, says) in [
        (&["--setup", "true", "--setup-output", "deps"][..], "--setup-key"),
        (&["--setup-key", "lock.txt"][..], "--setup"),
        (&["--setup", "true", "--setup-key", "../elsewhere.lock"][..], "--setup-key ../elsewhere.lock"),
        (&["--setup", "true", "--setup-key", "tests"][..], "not a file"),
    ] {
        let out = testgrid(ws.path()).args(["run", "--framework", "shell"]).args(args).output().expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    assert_eq!(runs(&count), 3);
}

#[test]
fn workers_with_no_checkout_run_the_laptops_tree_and_an_unchanged_tree_uploads_nothing() {
    let (_coordinator, grpc, _http) = spawn_coordinator("127.0.0.1:0", "127.0.0.1:0", &[]);
    let url = format!("http://{grpc}");
    let places: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let _workers: Vec<Proc> = (0..2)
        .map(|i| rootless_worker(&url, &format!("bare-{i}"), places[i * 2].path(), places[i * 2 + 1].path()))
        .collect();
    wait_for_workers(&url, &["bare-0".into(), "bare-1".into()]);
    let ws = workspace();

    let (code, sent, outcomes, stderr) = run(ws.path(), &url, &[]);
    assert_eq!(code, Some(0), "{stderr}\n{outcomes:?}");
    assert_eq!(outcomes.len(), 4, "{outcomes:?}");
    assert!(outcomes.iter().all(|(_, o)| o == "passed"), "{outcomes:?}");
    assert!(sent["missing_blobs"].as_u64().expect("a count") > 0, "{sent}");
    assert!(sent["uploaded_bytes"].as_u64().expect("a count") > 0, "{sent}");
    assert_eq!(sent["files"], 8, "seven files and a symlink, the ignored folder left out: {sent}");
    // The session is over: each worker removes its folder of the session's tree.
    for cache in [&places[1], &places[3]] {
        let sessions = cache.path().join("sessions");
        support::wait_for("the session's folders removed", || {
            let left = std::fs::read_dir(&sessions).map_or(0, |d| d.count());
            (left == 0).then_some(())
        });
    }

    // The same tree again: nothing to send.
    let (code, again, _, stderr) = run(ws.path(), &url, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(again["root"], sent["root"]);
    assert_eq!(again["uploaded_bytes"], 0, "{again}");
    assert_eq!(again["missing_blobs"], 0, "{again}");
    assert_eq!(again["hashed_files"], 0, "the index spared re-hashing: {again}");

    // One edited file: that blob, and the manifests on its way to the root (data/, the root).
    write(ws.path(), "data/ünï file.txt", "hello from the laptop, edited\n");
    let (code, edited, _, stderr) = run(ws.path(), &url, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_ne!(edited["root"], sent["root"]);
    assert_eq!(edited["missing_blobs"], 3, "{edited}");
    assert_eq!(edited["hashed_files"], 1, "{edited}");

    // The workers' own folders got nothing: the trees live in their caches.
    for place in [&places[0], &places[2]] {
        assert_eq!(std::fs::read_dir(place.path()).expect("read_dir").count(), 0, "nothing in the worker's folder");
    }
}

#[test]
fn a_grid_refuses_hostile_blobs_and_trees_and_keeps_serving() {
    let (_coordinator, grpc, _http) = spawn_coordinator("127.0.0.1:0", "127.0.0.1:0", &["--max-blob-size", "1MiB"]);
    let url = format!("http://{grpc}");
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        let channel =
            tonic::transport::Endpoint::from_shared(url.clone()).expect("url").connect().await.expect("connects");
        let channel = testgrid_proto::client::Target::new(&url, std::time::Duration::from_secs(10)).authorized(channel);
        let mut blobs = testgrid_proto::client::blobs(channel.clone());
        let mut sessions = testgrid_proto::client::sessions(channel);
        let digest = testgrid_proto::tree::digest_of;

        // A malformed digest is refused, not used as a file name.
        let bad = pb::Digest { hash: "../../../etc/passwd".into(), size_bytes: 4 };
        let refused = blobs.find_missing(pb::FindMissingRequest { digests: vec![bad.clone()] }).await;
        assert_eq!(refused.expect_err("refused").code(), tonic::Code::InvalidArgument);

        // A malformed digest in a batch is refused by a short message, not quoted whole.
        let long = pb::Digest { hash: "x".repeat(1 << 20), size_bytes: 3 };
        let answer = blobs
            .batch_upload(pb::BatchUploadRequest {
                blobs: vec![pb::Blob { digest: Some(long), data: b"four".to_vec() }],
            })
            .await
            .expect("answered")
            .into_inner();
        let error = &answer.statuses[0].error;
        assert!(
            error.contains("malformed digest") && error.len() < 500,
            "{} bytes: {}",
            error.len(),
            &error[..200.min(error.len())]
        );

        // Bytes that do not hash to their digest are refused and not stored.
        let claimed = digest(b"the real bytes");
        let answer = blobs
            .batch_upload(pb::BatchUploadRequest {
                blobs: vec![pb::Blob { digest: Some(claimed.clone()), data: b"other bytes!!!".to_vec() }],
            })
            .await
            .expect("answered")
            .into_inner();
        assert!(answer.statuses[0].error.contains("hash"), "{:?}", answer.statuses);
        let missing = blobs.find_missing(pb::FindMissingRequest { digests: vec![claimed.clone()] }).await;
        assert_eq!(missing.expect("answered").into_inner().missing, vec![claimed.clone()], "not stored");

        // Over the blob limit: refused before a byte is stored.
        let huge = vec![0u8; 2 << 20];
        let chunks = vec![pb::UploadChunk { digest: Some(digest(&huge)), data: huge[..1 << 20].to_vec() }];
        let refused = blobs.upload(tokio_stream::iter(chunks)).await.expect_err("too large");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused:?}");

        // Trees that would escape, or that are not all uploaded, are refused at Submit.
        let file = pb::FileNode { name: "a.sh".into(), digest: Some(digest(b"true\n")), is_executable: false };
        let trees = [
            (
                "a traversal",
                pb::Directory { files: vec![pb::FileNode { name: "..".into(), ..file.clone() }], ..Default::default() },
            ),
            (
                "an absolute symlink",
                pb::Directory {
                    symlinks: vec![pb::SymlinkNode { name: "l".into(), target: "/etc/passwd".into() }],
                    ..Default::default()
                },
            ),
            (
                "a symlink out",
                pb::Directory {
                    symlinks: vec![pb::SymlinkNode { name: "l".into(), target: "../x".into() }],
                    ..Default::default()
                },
            ),
            ("a file not uploaded", pb::Directory { files: vec![file.clone()], ..Default::default() }),
        ];
        for (what, tree) in trees {
            let bytes = prost::Message::encode_to_vec(&tree);
            let root = digest(&bytes);
            let stored = blobs
                .batch_upload(pb::BatchUploadRequest {
                    blobs: vec![pb::Blob { digest: Some(root.clone()), data: bytes }],
                })
                .await
                .expect("answered")
                .into_inner();
            assert!(stored.statuses[0].error.is_empty(), "{what}: a manifest is a blob like any other");
            let spec = pb::SessionSpec {
                tests: vec![pb::TestSpec { path: "a.sh".into(), ..Default::default() }],
                runner: Some(pb::Runner::from(&testgrid_proto::frameworks::Runner::command(
                    testgrid_proto::frameworks::Framework::Shell,
                    "sh {}",
                ))),
                workspace: Some(root),
                ..Default::default()
            };
            let refused = sessions.submit(pb::SubmitRequest { spec: Some(spec), session_id: String::new() }).await;
            let status = refused.expect_err(what);
            assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{what}: {status:?}");
            assert!(status.message().len() < 500, "{what}: the message is bounded");
        }

        // And it still serves: a good blob is stored and found.
        let good = digest(b"true\n");
        let answer = blobs
            .batch_upload(pb::BatchUploadRequest {
                blobs: vec![pb::Blob { digest: Some(good.clone()), data: b"true\n".to_vec() }],
            })
            .await
            .expect("answered")
            .into_inner();
        assert!(answer.statuses[0].error.is_empty(), "{:?}", answer.statuses);
        let missing = blobs.find_missing(pb::FindMissingRequest { digests: vec![good] }).await.expect("answered");
        assert!(missing.into_inner().missing.is_empty());
    });
}

/// A cargo workspace of two crates, `b` depending on `a`; `b`'s test compares what its code
/// computes with `b/expected.txt`, read when the test runs.
fn cargo_workspace(factor: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    std::fs::create_dir(root.join(".git")).expect(".git");
    write(root, ".gitignore", "target/\n");
    write(root, "Cargo.toml", "[workspace]\nmembers = [\"a\", \"b\"]\nresolver = \"2\"\n");
    write(root, "a/Cargo.toml", "[package]\nname = \"a\"\nversion = \"0.1.0\"\nedition = \"2021\"\n");
    write(
        root,
        "a/src/lib.rs",
        "pub fn base() -> u32 {\n    1\n}\n\n#[test]\nfn base_is_one() {\n    assert_eq!(base(), 1);\n}\n",
    );
    write(
        root,
        "b/Cargo.toml",
        "[package]\nname = \"b\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\na = { path = \"../a\" }\n",
    );
    write_b(root, factor);
    write(root, "b/expected.txt", "1\n");
    age(root);
    dir
}

fn write_b(root: &Path, factor: u32) {
    write(
        root,
        "b/src/lib.rs",
        &format!(
            "pub fn value() -> u32 {{\n    a::base() * {factor}\n}}\n\n#[test]\nfn value_is_expected() {{\n    \
             let expected: u32 = std::fs::read_to_string(\"expected.txt\").unwrap().trim().parse().unwrap();\n    \
             assert_eq!(value(), expected);\n}}\n"
        ),
    );
}

/// When each build output under the worker's cache whose file name starts with `prefix` was
/// last written.
fn outputs(cache: &Path, prefix: &str) -> Vec<std::time::SystemTime> {
    let mut found = Vec::new();
    let Ok(builds) = std::fs::read_dir(cache.join("builds")) else { return found };
    for build in builds.flatten() {
        let Ok(deps) = std::fs::read_dir(build.path().join("cargo-target/debug/deps")) else { continue };
        for f in deps.flatten() {
            if f.file_name().to_string_lossy().starts_with(prefix) {
                found.push(f.metadata().and_then(|m| m.modified()).expect("mtime"));
            }
        }
    }
    found.sort();
    found
}

#[test]
fn a_cargo_workspace_runs_on_workers_with_no_checkout_and_builds_incrementally_per_project() {
    let (_coordinator, grpc, _http) = spawn_coordinator("127.0.0.1:0", "127.0.0.1:0", &[]);
    let url = format!("http://{grpc}");
    let (place, cache) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let _worker = rootless_worker(&url, "bare", place.path(), cache.path());
    wait_for_workers(&url, &["bare".into()]);
    let ws = cargo_workspace(1);
    let run_cargo = || {
        let out = testgrid(ws.path())
            .args(["run", "--grid", &url, "--framework", "cargo", "--json", "--project", "two-crates"])
            .output()
            .expect("testgrid runs");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let events: Vec<serde_json::Value> = stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        (out.status.code(), finished(&events), String::from_utf8_lossy(&out.stderr).into_owned())
    };

    let (code, done, stderr) = run_cargo();
    assert_eq!(code, Some(0), "{stderr}\n{done:?}");
    assert_eq!(done.len(), 2, "{done:?}");
    let a_before = outputs(cache.path(), "liba-");
    let b_before = outputs(cache.path(), "b-");
    assert!(!a_before.is_empty() && !b_before.is_empty(), "built in the project's build folder");

    // One line of `b` edited: only `b` is built again, and its test sees the edit.
    write_b(ws.path(), 2);
    let (code, done, stderr) = run_cargo();
    assert_eq!(code, Some(1), "b's value is 2 now: {stderr}\n{done:?}");
    assert_eq!(outputs(cache.path(), "liba-"), a_before, "a, unchanged, was not built again");
    assert_ne!(outputs(cache.path(), "b-"), b_before, "b was built again");

    // Reverted: its file is the old blob again, with the old time; it must still be built again.
    write_b(ws.path(), 1);
    let (code, done, stderr) = run_cargo();
    assert_eq!(code, Some(0), "the reverted b passes again: {stderr}\n{done:?}");
    assert_eq!(outputs(cache.path(), "liba-"), a_before);
}

/// A test that writes a small report, a 5 MB file and one that no longer fits the limit, and a
/// file that was there before it ran (not its own, never sent).
fn artifacts_workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    std::fs::create_dir(root.join(".git")).expect(".git");
    write(root, "out/old.txt", "written before the test\n");
    write(
        root,
        "tests/writes.sh",
        "set -e\nmkdir -p out\necho \"report of $TESTGRID_TEST\" > out/report.txt\n\
         yes 0123456789abcdef | head -c 5000000 > out/big.bin\nhead -c 2000000 /dev/zero > out/zz-over.bin\n",
    );
    age(root);
    dir
}

/// Check what `artifacts_workspace`'s test sent back, seen through `--json` and on disk.
fn check_artifacts(ws: &Path, events: &[serde_json::Value], junit: &Path) {
    let finished = events.iter().find(|e| e["event"] == "test_finished").expect("a test finished");
    let artifacts = finished["artifacts"].as_array().expect("artifacts named");
    let named: Vec<&str> = artifacts.iter().filter_map(|a| a["path"].as_str()).collect();
    assert_eq!(named, ["out/big.bin", "out/report.txt", "out/zz-over.bin"], "{finished}");
    let local = |i: usize| PathBuf::from(artifacts[i]["local"].as_str().expect("a local path"));
    assert_eq!(std::fs::read_to_string(ws.join(local(1))).expect("report"), "report of tests/writes.sh\n");
    let big = std::fs::read(ws.join(local(0))).expect("big");
    assert_eq!(big.len(), 5_000_000);
    assert!(big.starts_with(b"0123456789abcdef\n0123"), "the right bytes");
    assert!(local(0).starts_with("testgrid-artifacts"), "under the default folder: {:?}", local(0));
    let refused = artifacts[2]["refused"].as_str().expect("refused");
    assert!(refused.contains("--artifacts-max-size") && refused.contains("2.0 MB"), "{refused}");
    assert!(artifacts[2]["local"].is_null());
    let xml = std::fs::read_to_string(junit).expect("junit");
    assert!(xml.contains("[[ATTACHMENT|") && xml.contains("out/report.txt]]"), "{xml}");
}

#[test]
fn files_a_test_writes_come_back_from_a_remote_worker_and_from_local_mode() {
    let (_coordinator, grpc, _http) = spawn_coordinator("127.0.0.1:0", "127.0.0.1:0", &[]);
    let url = format!("http://{grpc}");
    let (place, cache) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let _worker = rootless_worker(&url, "bare", place.path(), cache.path());
    wait_for_workers(&url, &["bare".into()]);
    let ws = artifacts_workspace();
    let junit = ws.path().join("junit.xml");
    let asked = ["--artifacts", "out/**", "--artifacts-max-size", "6MB", "--junit", "junit.xml"];

    let (code, events, stderr) = run_events(ws.path(), &url, &asked);
    assert_eq!(code, Some(0), "{stderr}");
    check_artifacts(ws.path(), &events, &junit);
    let sent = |events: &[serde_json::Value]| {
        events.iter().find(|e| e["event"] == "created").map(|e| e["workspace"].clone()).unwrap_or_default()
    };
    let first = sent(&events);

    // Again: the artifacts now in the workspace are not sent with it.
    assert!(ws.path().join("testgrid-artifacts").is_dir());
    let (code, events, stderr) = run_events(ws.path(), &url, &asked);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(sent(&events)["files"], first["files"], "{first}");

    // Local mode: the same files, the same way.
    std::fs::remove_dir_all(ws.path().join("testgrid-artifacts")).expect("rm");
    write(ws.path(), "out/old.txt", "written before the test\n");
    age(ws.path());
    let out = testgrid(ws.path())
        .args(["run", "--local", "1", "--framework", "shell", "--json"])
        .args(asked)
        .arg("tests")
        .output()
        .expect("testgrid runs");
    let events: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    check_artifacts(ws.path(), &events, &junit);
}
