//! Workspace bundles end to end: a real coordinator with a data directory, workers in empty
//! folders of their own with no `--root` (nothing shared with the CLI), and the real CLI sending
//! its workspace. The hostile cases talk to the blob service with a gRPC client of their own.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
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
    let workspace = events.iter().find(|e| e["event"] == "created").map(|e| e["workspace"].clone()).unwrap_or_default();
    let outcomes = events
        .iter()
        .filter(|e| e["event"] == "test_finished")
        .map(|e| (e["test"].as_str().unwrap_or("").to_string(), e["outcome"].as_str().unwrap_or("").to_string()))
        .collect();
    (out.status.code(), workspace, outcomes, String::from_utf8_lossy(&out.stderr).into_owned())
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
                tests: vec![pb::TestSpec { path: "a.sh".into() }],
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
