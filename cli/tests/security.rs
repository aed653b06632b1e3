//! Tokens with roles, with the real binaries: every RPC against every kind of caller (no token,
//! a wrong, an expired and a revoked one, each role's), owners, a revoked token ending the
//! streams it opened, and a coordinator that will not serve a network address unprotected.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::{Workspace, bin, spawn_coordinator_in, spawn_worker, stderr, stdout, testgrid, wait_for};
use testgrid_proto as pb;
use tonic::Code;

/// `testgrid-coordinator token ARGS --data-dir DATA`.
fn token(data: &Path, args: &[&str]) -> Output {
    Command::new(bin("testgrid-coordinator"))
        .arg("token")
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .expect("runs")
}

fn create(data: &Path, role: &str, name: &str, extra: &[&str]) -> String {
    let out = token(data, &[&["create", "--role", role, name], extra].concat());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    stdout(&out).trim().to_string()
}

/// What a call ended with: `None` for an answer, else the status code.
type Result = Option<Code>;

/// Call every RPC once with `token` (nothing: no header) and say how each ended.
async fn every_call(url: &str, token: Option<&str>) -> Vec<(&'static str, Result)> {
    let mut target = testgrid_proto::client::Target::new(url, std::time::Duration::from_secs(10));
    target.credentials = testgrid_proto::client::Credentials::new(token).expect("a sendable token");
    let raw = target.endpoint().expect("url").connect().await.expect("connects");
    let channel = target.authorized(raw.clone());
    let code = |r: std::result::Result<(), tonic::Status>| r.err().map(|s| s.code());
    let mut sessions = testgrid_proto::client::sessions(channel.clone());
    let mut blobs = testgrid_proto::client::blobs(channel.clone());
    let mut admin = testgrid_proto::client::admin(channel.clone());
    let mut workers = testgrid_proto::client::workers(channel.clone());
    let nobody = "00000000-0000-4000-8000-000000000000".to_string();
    let mut health = tonic_health::pb::health_client::HealthClient::new(raw);
    vec![
        // An empty spec is refused as invalid, past the check of who calls.
        ("Submit", code(sessions.submit(pb::SubmitRequest::default()).await.map(drop))),
        ("Watch", code(sessions.watch(pb::WatchRequest { session_id: nobody.clone(), from_seq: 0 }).await.map(drop))),
        (
            "Cancel",
            code(
                sessions.cancel(pb::CancelRequest { session_id: nobody.clone(), ..Default::default() }).await.map(drop),
            ),
        ),
        ("Get", code(sessions.get(pb::GetRequest { session_id: nobody.clone() }).await.map(drop))),
        ("List", code(sessions.list(pb::ListRequest::default()).await.map(drop))),
        ("Plan", code(sessions.plan(pb::PlanRequest::default()).await.map(drop))),
        ("ListWorkers", code(admin.list_workers(pb::ListWorkersRequest {}).await.map(drop))),
        ("FindMissing", code(blobs.find_missing(pb::FindMissingRequest::default()).await.map(drop))),
        ("BatchUpload", code(blobs.batch_upload(pb::BatchUploadRequest::default()).await.map(drop))),
        ("BatchDownload", code(blobs.batch_download(pb::BatchDownloadRequest::default()).await.map(drop))),
        ("Download", code(blobs.download(pb::DownloadRequest::default()).await.map(drop))),
        // A first message that is no Register is refused as invalid, past the check of who calls.
        ("Attach", {
            let first = pb::WorkerMessage { kind: Some(pb::worker_message::Kind::Heartbeat(pb::Heartbeat::default())) };
            code(workers.attach(tokio_stream::iter(vec![first])).await.map(drop))
        }),
        ("Health", code(health.check(tonic_health::pb::HealthCheckRequest::default()).await.map(drop))),
    ]
}

/// A channel to the grid at `url` that presents no token.
async fn connect(url: &str) -> testgrid_proto::client::GridChannel {
    let target = testgrid_proto::client::Target::new(url, std::time::Duration::from_secs(10));
    target.authorized(target.endpoint().expect("url").connect().await.expect("connects"))
}

fn refused(result: Result) -> bool {
    matches!(result, Some(Code::Unauthenticated | Code::PermissionDenied))
}

#[test]
fn every_call_is_allowed_or_refused_as_the_role_table_says() {
    let data = tempfile::tempdir().expect("tempdir");
    let worker = create(data.path(), "worker", "pool-1", &[]);
    let user = create(data.path(), "user", "alice", &[]);
    let admin = create(data.path(), "admin", "root", &[]);
    let revoked = create(data.path(), "user", "gone", &[]);
    let expired = create(data.path(), "user", "old", &["--expires", "1ms"]);
    assert_eq!(token(data.path(), &["revoke", "gone"]).status.code(), Some(0));
    let listed = stdout(&token(data.path(), &["list"]));
    assert!(listed.contains("alice") && listed.contains("(expired)") && !listed.contains("gone"), "{listed}");
    assert!(!listed.contains(&user), "no token is shown again");

    let (_coordinator, grpc, _http) = spawn_coordinator_in(data.path(), "127.0.0.1:0", "127.0.0.1:0", &[]);
    let url = format!("http://{grpc}");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let users = ["Submit", "Watch", "Cancel", "Get", "List", "Plan", "ListWorkers"];
    let blob_calls = ["FindMissing", "BatchUpload", "BatchDownload", "Download"];
    let callers = [
        ("no token", None),
        ("a wrong token", Some("tg_notatokenanyonemade0000000000000000000000")),
        ("an expired token", Some(expired.as_str())),
        ("a revoked token", Some(revoked.as_str())),
        ("worker", Some(worker.as_str())),
        ("user", Some(user.as_str())),
        ("admin", Some(admin.as_str())),
    ];
    for (who, token) in callers {
        for (call, result) in runtime.block_on(every_call(&url, token)) {
            let allowed = match who {
                _ if call == "Health" => true,
                "worker" => call == "Attach" || blob_calls.contains(&call),
                "user" => users.contains(&call) || blob_calls.contains(&call),
                "admin" => true,
                _ => false,
            };
            assert_eq!(!refused(result), allowed, "{call} with {who}: {result:?}");
            if let (false, Some(Code::Unauthenticated)) = (allowed, result) {
                assert!(who != "worker" && who != "user", "a role refused is denied, not unauthenticated");
            }
        }
    }
}

#[test]
fn users_see_only_their_sessions_and_a_revoked_token_ends_its_streams() {
    let data = tempfile::tempdir().expect("tempdir");
    let worker = create(data.path(), "worker", "pool-1", &[]);
    let alice = create(data.path(), "user", "alice", &[]);
    let bob = create(data.path(), "user", "bob", &[]);
    let root = create(data.path(), "admin", "root", &[]);
    let (_coordinator, grpc, _http) = spawn_coordinator_in(data.path(), "127.0.0.1:0", "127.0.0.1:0", &[]);
    let url = format!("http://{grpc}");
    let ws = Workspace::new();
    ws.test("quick.sh", "true");
    ws.test("slow.sh", &format!("touch '{}/slow-started'; sleep 120", ws.root().display()));

    // A worker with no token is refused, and says how to get one.
    let mut anonymous = spawn_worker(&url, "anonymous", &ws.root(), &[]);
    let status = wait_for("the anonymous worker to give up", || anonymous.child.try_wait().expect("wait"));
    assert!(!status.success());
    let mut pool = spawn_worker(&url, "pool-1", &ws.root(), &["--slots", "2", "--token", &worker]);

    let run = |token: &str, args: &[&str]| {
        testgrid(&ws.root()).args(args).args(["--grid", &url]).env("TESTGRID_TOKEN", token).output().expect("runs")
    };
    let ran = run(&alice, &["run", "--framework", "shell", "--no-upload", "quick.sh"]);
    assert_eq!(ran.status.code(), Some(0), "{}", stderr(&ran));
    let sessions = |token: &str| stdout(&run(token, &["sessions"]));
    assert!(sessions(&alice).contains("alice"), "{}", sessions(&alice));
    assert!(sessions(&bob).contains("no sessions"), "{}", sessions(&bob));
    assert!(sessions(&root).contains("alice"), "an admin sees everyone's");

    // Without a token the CLI says which variable to set, and exits 3.
    let bare =
        testgrid(&ws.root()).args(["sessions", "--grid", &url]).env_remove("TESTGRID_TOKEN").output().expect("runs");
    assert_eq!(bare.status.code(), Some(3), "{}", stderr(&bare));
    assert!(stderr(&bare).contains("TESTGRID_TOKEN"), "{}", stderr(&bare));
    // A worker's token may not submit.
    let denied = run(&worker, &["run", "--framework", "shell", "--no-upload", "quick.sh"]);
    assert_eq!(denied.status.code(), Some(3), "{}", stderr(&denied));
    assert!(stderr(&denied).contains("user or admin"), "{}", stderr(&denied));

    // Bob cannot cancel Alice's session; an admin can, and the log says who.
    let detached = run(&alice, &["run", "--framework", "shell", "--no-upload", "--detach", "slow.sh"]);
    assert_eq!(detached.status.code(), Some(0), "{}", stderr(&detached));
    let id = stdout(&detached).split_whitespace().find(|w| w.len() == 36).expect("a session id").to_string();
    wait_for("slow.sh to start", || ws.root().join("slow-started").exists().then_some(()));
    let other = run(&bob, &["cancel", &id]);
    assert_ne!(other.status.code(), Some(0), "{}", stderr(&other));
    assert!(stderr(&other).contains("no session"), "not even told it exists: {}", stderr(&other));

    // Alice follows it; her token is revoked: her stream ends, refused.
    let mut watcher = testgrid(&ws.root())
        .args(["watch", &id, "--json", "--grid", &url])
        .env("TESTGRID_TOKEN", &alice)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("watch starts");
    // Kept open to the end: the watch must not die of a closed pipe.
    let mut events = std::io::BufReader::new(watcher.stdout.take().expect("piped"));
    let mut first = String::new();
    std::io::BufRead::read_line(&mut events, &mut first).expect("reads");
    assert!(first.contains("\"created\""), "the stream is open: {first}");
    let mut watcher = support::Proc { child: watcher };
    assert_eq!(token(data.path(), &["revoke", "alice"]).status.code(), Some(0));
    let status = wait_for("the watch to end", || watcher.child.try_wait().expect("wait"));
    assert_eq!(status.code(), Some(3));

    let cancelled = run(&root, &["cancel", &id]);
    assert_eq!(cancelled.status.code(), Some(0), "{}", stderr(&cancelled));
    let log = stdout(&run(&root, &["watch", &id, "--json"]));
    assert!(log.contains("(by root)"), "{log}");

    // The worker's token revoked: its stream ends and it cannot come back.
    assert!(pool.child.try_wait().expect("wait").is_none(), "the worker serves until then");
    assert_eq!(token(data.path(), &["revoke", "pool-1"]).status.code(), Some(0));
    let status = wait_for("the worker to be turned away", || pool.child.try_wait().expect("wait"));
    assert!(!status.success());
}

#[test]
fn a_coordinator_on_a_network_address_needs_a_token_or_insecure() {
    let data = tempfile::tempdir().expect("tempdir");
    let out = Command::new(bin("testgrid-coordinator"))
        .args(["--listen", "0.0.0.0:0", "--http", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("token create") && stderr(&out).contains("--insecure"), "{}", stderr(&out));
    // With a token it serves (and with --insecure it would too, unprotected).
    create(data.path(), "admin", "root", &[]);
    let (_coordinator, grpc, _http) = spawn_coordinator_in(data.path(), "0.0.0.0:0", "127.0.0.1:0", &[]);
    assert!(grpc.ends_with(|c: char| c.is_ascii_digit()));
}

#[test]
fn hostile_submissions_and_registrations_are_refused_briefly_and_the_grid_keeps_serving() {
    let (_coordinator, grpc, _http) = support::spawn_coordinator("127.0.0.1:0", "127.0.0.1:0", &[]);
    let url = format!("http://{grpc}");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let channel = connect(&url).await;
        let mut sessions = testgrid_proto::client::sessions(channel.clone());
        let runner = |template: String| pb::Runner {
            framework: pb::Framework::Custom as i32,
            options: Some(pb::runner::Options::Command(pb::CommandOptions { template })),
            ..Default::default()
        };
        let spec = |name: String, path: String, template: String| pb::SubmitRequest {
            spec: Some(pb::SessionSpec {
                name,
                tests: vec![pb::TestSpec { path, size_bytes: 0 }],
                runner: Some(runner(template)),
                ..Default::default()
            }),
            ..Default::default()
        };
        // A template bomb: 20,000 `{}` and a 4 KiB path would expand to hundreds of MB.
        let bomb = spec("bomb".into(), "p".repeat(4096), "{}".repeat(20_000));
        let refused = sessions.submit(bomb).await.expect_err("refused");
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert!(refused.message().contains("template") && refused.message().len() < 1024, "{}", refused.message());
        for (request, field) in [
            (spec("n".repeat(2_000_000), "a.sh".into(), "sh {}".into()), "name"),
            (spec("ok".into(), "p".repeat(200_000), "sh {}".into()), "path"),
            (spec("esc\u{1b}]0;owned\u{7}".into(), "a.sh".into(), "sh {}".into()), "control"),
        ] {
            let refused = sessions.submit(request).await.expect_err("refused");
            assert_eq!(refused.code(), Code::InvalidArgument, "{field}");
            assert!(refused.message().len() < 1024, "{field}: not echoed whole ({} bytes)", refused.message().len());
        }
        // Framework folders outside the workspace (an absolute path, `..`) are refused.
        for dir in ["/etc", "../../home", "a/../../b"] {
            let mut request = spec("ok".into(), "t.py".into(), String::new());
            let runner = pb::Runner {
                framework: pb::Framework::Pytest as i32,
                options: Some(pb::runner::Options::Pytest(pb::PytestOptions {
                    project_dir: dir.into(),
                    ..Default::default()
                })),
                ..Default::default()
            };
            request.spec.as_mut().expect("spec").runner = Some(runner);
            let refused = sessions.submit(request).await.expect_err("refused");
            assert_eq!(refused.code(), Code::InvalidArgument, "{dir}: {refused:?}");
            assert!(refused.message().contains("project_dir"), "{}", refused.message());
        }
        // A worker with a 1 MB name is turned away at Register.
        let register = pb::Register { name: "w".repeat(1 << 20), slots: 1, version: "x".into(), ..Default::default() };
        let first = pb::WorkerMessage { kind: Some(pb::worker_message::Kind::Register(register)) };
        let mut workers = testgrid_proto::client::workers(channel.clone());
        let refused = workers.attach(tokio_stream::iter(vec![first])).await.expect_err("refused");
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert!(refused.message().len() < 1024);
        // And a normal session still runs.
        sessions.list(pb::ListRequest::default()).await.expect("still serving");
    });
}

#[test]
fn a_worker_token_limits_labels_and_slots_and_a_tokens_file_is_read_again() {
    let data = tempfile::tempdir().expect("tempdir");
    let pool = create(data.path(), "worker", "linux-pool", &["--label", "os=linux", "--max-slots", "2"]);
    let listed = stdout(&token(data.path(), &["list"]));
    assert!(listed.contains("labels os=linux; at most 2 slots"), "{listed}");
    let refused = token(data.path(), &["create", "--role", "user", "u", "--max-slots", "2"]);
    assert_eq!(refused.status.code(), Some(2), "limits are for worker tokens");
    let file = data.path().join("tokens.txt");
    let ci = "ci-token-0123456789abcdefghij";
    std::fs::write(&file, format!("admin ops {ci}-ops\n")).expect("write");
    let tokens_file = file.to_str().expect("utf-8 path");
    let (_coordinator, grpc, _http) =
        spawn_coordinator_in(data.path(), "127.0.0.1:0", "127.0.0.1:0", &["--tokens-file", tokens_file]);
    let url = format!("http://{grpc}");
    let ws = Workspace::new();
    let turned_away = |extra: &[&str]| {
        let mut worker = spawn_worker(&url, "w", &ws.root(), &[&["--token", &pool], extra].concat());
        wait_for("the worker to be turned away", || worker.child.try_wait().expect("wait"))
    };
    assert!(!turned_away(&["--label", "os=mac"]).success(), "a label the token does not allow");
    assert!(!turned_away(&["--slots", "4", "--label", "os=linux"]).success(), "more slots than allowed");
    let _fits = spawn_worker(&url, "fits", &ws.root(), &["--token", &pool, "--slots", "2", "--label", "os=linux"]);
    support::wait_for_workers_with(&url, &["fits".to_string()], &format!("{ci}-ops"));

    // A token added to the file works within a second or so, without a restart.
    let sessions = |token: &str| {
        testgrid(&ws.root()).args(["sessions", "--grid", &url]).env("TESTGRID_TOKEN", token).output().expect("runs")
    };
    assert_eq!(sessions(ci).status.code(), Some(3));
    std::fs::write(&file, format!("admin ops {ci}-ops\nuser ci {ci}\n")).expect("write");
    wait_for("the new token to be read", || (sessions(ci).status.code() == Some(0)).then_some(()));
}

#[test]
fn a_secret_reaches_the_tests_and_never_their_reports() {
    let ws = Workspace::new();
    ws.test("leaks.sh", "echo \"the key is $CLOUD_KEY\"; echo \"$CLOUD_KEY\" >&2; exit 1");
    let junit = ws.root().join("report.xml");
    let value = "s3cr3t-Value-0123";
    let out = testgrid(&ws.root())
        .args(["run", "--local", "1", "--framework", "shell", "--json", "--secret", "CLOUD_KEY", "--junit"])
        .arg(&junit)
        .env("CLOUD_KEY", value)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let (json, report) = (stdout(&out), std::fs::read_to_string(&junit).expect("junit written"));
    assert!(json.contains("the key is ***"), "the test saw it, the report masks it: {json}");
    for text in [&json, &report, &stderr(&out)] {
        assert!(!text.contains(value), "leaked: {text}");
    }
    // A secret that is not set is a usage error, before anything runs.
    let unset = testgrid(&ws.root())
        .args(["run", "--local", "1", "--secret", "NOT_SET_ANYWHERE"])
        .env_remove("NOT_SET_ANYWHERE")
        .output()
        .expect("runs");
    assert_eq!(unset.status.code(), Some(2), "{}", stderr(&unset));
    assert!(stderr(&unset).contains("NOT_SET_ANYWHERE"));
}

/// Raise this process's descriptor limit to `n` if it is lower (the test holds many sockets).
fn allow_descriptors(n: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft < n {
        setrlimit(Resource::RLIMIT_NOFILE, n.min(hard), hard).expect("raise the descriptor limit");
    }
}

#[test]
fn idle_connections_under_a_low_descriptor_limit_keep_neither_probes_nor_workers_out() {
    allow_descriptors(4096);
    let data = tempfile::tempdir().expect("tempdir");
    // The coordinator under a 1,024-descriptor limit, hard and soft.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 1024 && exec \"$0\" \"$@\"")
        .arg(bin("testgrid-coordinator"))
        .args(["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--handshake-timeout", "60s", "--data-dir"])
        .arg(data.path())
        .env("TESTGRID_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("starts");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().expect("piped")), &mut line)
        .expect("prints its addresses");
    let _coordinator = support::Proc { child };
    let field = |name: &str| {
        line.split_whitespace().find_map(|w| w.strip_prefix(&format!("{name}="))).expect("address").to_string()
    };
    let (grpc, http) = (field("grpc"), field("http"));
    // 1,100 connections to each port that never say a word (the handshake timeout is a minute).
    let mut idle = Vec::new();
    for addr in [&http, &grpc] {
        for _ in 0..1_100 {
            idle.push(std::net::TcpStream::connect(addr).expect("connects"));
        }
    }
    wait_for("the health probe to get through", || support::http_get(&http, "/healthz"));
    let ws = Workspace::new();
    ws.test("a.sh", "true").test("b.sh", "true");
    let url = format!("http://{grpc}");
    let _worker = spawn_worker(&url, "w", &ws.root(), &["--slots", "2"]);
    let out = testgrid(&ws.root()).args(["run", "--grid", &url, "--framework", "shell"]).output().expect("runs");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(support::http_get(&http, "/healthz").is_some(), "still answering");
    drop(idle);
}

#[test]
fn attach_streams_are_bounded_per_token_and_unregistered_ones_end() {
    let (_coordinator, grpc, _http) =
        support::spawn_coordinator("127.0.0.1:0", "127.0.0.1:0", &["--max-attach-per-token", "2"]);
    let url = format!("http://{grpc}");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let channel = connect(&url).await;
        let mut workers = testgrid_proto::client::workers(channel);
        let stream = tokio_stream::wrappers::ReceiverStream::new;
        // Two registered workers hold the token's two places.
        let mut held = Vec::new();
        for name in ["a", "b"] {
            let (tx, rx) = tokio::sync::mpsc::channel::<pb::WorkerMessage>(4);
            let register = pb::Register { name: name.into(), slots: 1, version: "x".into(), ..Default::default() };
            tx.send(pb::WorkerMessage { kind: Some(pb::worker_message::Kind::Register(register)) })
                .await
                .expect("queued");
            let answer = workers.attach(stream(rx)).await.expect("attached");
            held.push((tx, answer.into_inner()));
        }
        // A third stream, registered or not, is one too many, and says so at once.
        let (_silent, rx) = tokio::sync::mpsc::channel::<pb::WorkerMessage>(1);
        let refused = workers.attach(stream(rx)).await.expect_err("over the limit");
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
        assert!(refused.message().contains("--max-attach-per-token"), "{}", refused.message());
        // One worker goes: its place comes free, and a stream that never registers holds it only
        // until the register timeout.
        drop(held.remove(0));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let (_silent, rx) = tokio::sync::mpsc::channel::<pb::WorkerMessage>(1);
            match workers.attach(stream(rx)).await {
                Err(status) if status.code() == Code::ResourceExhausted && std::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(status) => {
                    assert_eq!(status.code(), Code::DeadlineExceeded, "ended for want of a Register: {status:?}");
                    break;
                }
                Ok(_) => panic!("a stream without Register was taken"),
            }
        }
    });
    // Their places are free again: a real worker attaches.
    let ws = Workspace::new();
    let _worker = spawn_worker(&url, "real", &ws.root(), &[]);
    support::wait_for_workers(&url, &["real".to_string()]);
}

#[test]
fn one_owner_may_have_only_so_many_sessions_unfinished() {
    let (_coordinator, grpc, _http) =
        support::spawn_coordinator("127.0.0.1:0", "127.0.0.1:0", &["--max-sessions-per-owner", "1"]);
    let url = format!("http://{grpc}");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let channel = connect(&url).await;
        let mut sessions = testgrid_proto::client::sessions(channel);
        let submit = || pb::SubmitRequest {
            spec: Some(pb::SessionSpec {
                name: "queued".into(),
                tests: vec![pb::TestSpec { path: "a.sh".into(), size_bytes: 0 }],
                runner: Some(pb::Runner::from(&testgrid_proto::frameworks::Runner::command(
                    testgrid_proto::frameworks::Framework::Shell,
                    "sh {}",
                ))),
                ..Default::default()
            }),
            ..Default::default()
        };
        // No worker: the first stays queued, and a second is one too many.
        let first = sessions.submit(submit()).await.expect("taken").into_inner().session_id;
        let refused = sessions.submit(submit()).await.expect_err("over the limit");
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
        assert!(refused.message().contains("--max-sessions-per-owner"), "{}", refused.message());
        let cancel = pb::CancelRequest { session_id: first, reason: "make room".into() };
        sessions.cancel(cancel).await.expect("cancelled");
        sessions.submit(submit()).await.expect("room again once the first finished");
    });
}

/// The coordinator's resident memory now, in MiB.
fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb / 1024
}

#[test]
fn a_rogue_worker_that_hoards_and_forges_loses_its_tests_and_the_session_finishes() {
    use pb::coordinator_message::Kind as From;
    use pb::worker_message::Kind as To;
    let (coordinator, grpc, _http) =
        support::spawn_coordinator("127.0.0.1:0", "127.0.0.1:0", &["--start-within", "2s", "--overrun-grace", "1s"]);
    let url = format!("http://{grpc}");
    let ws = Workspace::new();
    for i in 0..6 {
        ws.test(&format!("t{i}.sh"), "true");
    }
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (out, forged) = runtime.block_on(async {
        let channel = connect(&url).await;
        // The rogue: eight slots claimed, heartbeats kept up, one test started and never
        // finished, the others never started, and a flood of results for tests it never held.
        let (tx, rx) = tokio::sync::mpsc::channel::<pb::WorkerMessage>(8192);
        let register = pb::Register { name: "rogue".into(), slots: 8, version: "x".into(), ..Default::default() };
        tx.send(pb::WorkerMessage { kind: Some(To::Register(register)) }).await.expect("queued");
        let mut inbound = testgrid_proto::client::workers(channel)
            .attach(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("attached")
            .into_inner();
        let beat = tx.clone();
        let heartbeats = tokio::spawn(async move {
            loop {
                let held = pb::WorkerMessage { kind: Some(To::Heartbeat(pb::Heartbeat { held: 0 })) };
                if beat.send(held).await.is_err() {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            }
        });
        let mut run = testgrid(&ws.root())
            .args(["run", "--grid", &url, "--framework", "shell", "--json", "--timeout", "2s", "--retries", "1"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("runs");
        let mut session = String::new();
        let mut assigned = 0;
        while assigned < 6 {
            let message =
                tokio::time::timeout(std::time::Duration::from_secs(60), tokio_stream::StreamExt::next(&mut inbound))
                    .await
                    .expect("assignments within a minute")
                    .expect("stream open")
                    .expect("a message");
            if let Some(From::Assign(assign)) = message.kind {
                assigned += 1;
                let assignment = assign.assignment.expect("an assignment");
                session = assignment.session_id.clone();
                if assigned == 1 {
                    let started = pb::TestStarted { assignment: Some(assignment), started_at_ms: 0 };
                    tx.send(pb::WorkerMessage { kind: Some(To::TestStarted(started)) }).await.expect("sent");
                }
            }
        }
        let mut forged = 0;
        for n in 0..2_000u32 {
            let session_id = if n % 2 == 0 { session.clone() } else { format!("00000000-0000-4000-8000-{n:012}") };
            // Attempts it was never handed (its own are attempt 1): a worker's word on the tests it
            // holds is all the grid has, on anything else it counts for nothing.
            let assignment = pb::AssignmentRef { session_id, test_index: n % 6, attempt: n % 3 + 2 };
            let report =
                pb::TestReport { outcome: pb::Outcome::Passed as i32, output: vec![b'x'; 2048], ..Default::default() };
            let finished = pb::TestFinished { assignment: Some(assignment), report: Some(report), resent: false };
            if tx.send(pb::WorkerMessage { kind: Some(To::TestFinished(finished)) }).await.is_ok() {
                forged += 1;
            }
        }
        // An honest worker joins; the rogue's tests must come back to it.
        let _honest = spawn_worker(&url, "honest", &ws.root(), &["--slots", "2"]);
        let drain =
            tokio::spawn(async move { while let Some(Ok(_)) = tokio_stream::StreamExt::next(&mut inbound).await {} });
        let out = tokio::task::spawn_blocking(move || {
            support::wait_exit(&mut run, std::time::Duration::from_secs(180));
            run.wait_with_output().expect("output")
        })
        .await
        .expect("joined");
        heartbeats.abort();
        drain.abort();
        (out, forged)
    });
    assert_eq!(forged, 2_000);
    let events = support::events(&out);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stdout(&out), stderr(&out));
    let requeued = events.iter().filter(|e| e["event"] == "test_requeued").count();
    assert!(requeued >= 5, "the unstarted tests came back: {requeued}");
    assert!(
        events.iter().any(|e| e["event"] == "test_finished" && e["attempt_outcome"] == "timed_out"),
        "the test held past its timeout ended timed_out on the rogue: {}",
        stdout(&out)
    );
    let discarded = events.iter().filter(|e| e["event"] == "result_discarded").count();
    assert!(discarded <= 100, "forged results recorded within their bound: {discarded}");
    let final_outcomes = support::final_outcomes(&events);
    assert_eq!(final_outcomes.len(), 6, "{final_outcomes:?}");
    assert!(rss_mib(coordinator.child.id()) < 200, "coordinator RSS within its bound");
}
