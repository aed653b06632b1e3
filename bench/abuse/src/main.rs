//! `bench/abuse`: does a normal session keep its pace while the coordinator is pressed on?
//!
//! It starts a real coordinator (with its data directory) and `--workers` real workers labelled
//! `pool=real`, and times `--runs` quiet runs of `testgrid run` over `--tests` shell tests, each
//! sleeping `--test-ms`. Then, for `--seconds`, it presses on the coordinator from loopback:
//! `--idle` TCP connections that never say a word (reopened as the coordinator closes them),
//! `--attaches` `Attach` streams that never register (opened again as each is ended), and a
//! rogue worker (registered without the label, so it is handed nothing) sending `--forged`
//! results a second for assignments it does not hold, of the running session and of made-up
//! ones. Meanwhile it times the same session again, back to back. Prints one JSON object: quiet
//! and pressed wall times, their ratio, the coordinator's peak RSS, and what the pressure did.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use testgrid_bench_dispatch::{Coordinator, Error, channel, dir_size};
use testgrid_proto as pb;
use testgrid_proto::worker_message::Kind as ToCoordinator;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

#[derive(Parser)]
struct Args {
    /// Where the release binaries are.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Slots per worker.
    #[arg(long, default_value_t = 2)]
    slots: u32,
    #[arg(long, default_value_t = 200)]
    tests: usize,
    /// How long each test sleeps.
    #[arg(long, default_value_t = 50)]
    test_ms: u64,
    /// Quiet runs timed before the pressure (the median is the baseline).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// How long the pressure lasts.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Idle TCP connections kept open on the gRPC port.
    #[arg(long, default_value_t = 500)]
    idle: usize,
    /// `Attach` streams kept open without a `Register`.
    #[arg(long, default_value_t = 500)]
    attaches: usize,
    /// Forged results the rogue worker sends a second.
    #[arg(long, default_value_t = 1000)]
    forged: u64,
}

/// A workspace of `n` shell tests that each sleep `ms`.
fn workspace(n: usize, ms: u64) -> Result<tempfile::TempDir, Error> {
    let dir = tempfile::tempdir()?;
    std::fs::create_dir(dir.path().join(".git"))?;
    for i in 0..n {
        std::fs::write(dir.path().join(format!("t{i:04}.sh")), format!("sleep {}\n", ms as f64 / 1000.0))?;
    }
    Ok(dir)
}

/// One `testgrid run` of the workspace on the grid's labelled workers; its wall time.
fn run_session(testgrid: &Path, root: &Path, url: &str) -> Result<Duration, Error> {
    let started = Instant::now();
    let out = Command::new(testgrid)
        .args(["run", "--grid", url, "--framework", "shell", "--label", "pool=real"])
        .current_dir(root)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        return Err(format!("a session failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(started.elapsed())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// What the pressure did, counted as it goes.
#[derive(Default)]
struct Pressure {
    idle_opened: AtomicU64,
    attaches_opened: AtomicU64,
    attaches_refused: AtomicU64,
    forged_sent: AtomicU64,
}

/// Keep one idle connection open to `addr`: connect, wait until the coordinator closes it,
/// connect again, until `stop`.
async fn idle(addr: String, pressure: Arc<Pressure>, stop: Arc<AtomicBool>) {
    use tokio::io::AsyncReadExt;
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut conn) = tokio::net::TcpStream::connect(&addr).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        pressure.idle_opened.fetch_add(1, Ordering::Relaxed);
        let mut byte = [0u8; 1];
        let _ = tokio::time::timeout(Duration::from_secs(1), conn.read(&mut byte)).await;
        // Read timed out: still open, keep it; closed: open another.
        while !stop.load(Ordering::Relaxed) {
            match tokio::time::timeout(Duration::from_secs(1), conn.read(&mut byte)).await {
                Err(_) => continue,
                Ok(_) => break,
            }
        }
    }
}

/// Keep one `Attach` stream open that never registers, until `stop`.
async fn silent_attach(channel: testgrid_proto::client::GridChannel, pressure: Arc<Pressure>, stop: Arc<AtomicBool>) {
    let mut client = testgrid_proto::client::workers(channel);
    while !stop.load(Ordering::Relaxed) {
        let (_keep, rx) = mpsc::channel::<pb::WorkerMessage>(1);
        pressure.attaches_opened.fetch_add(1, Ordering::Relaxed);
        if let Err(status) = client.attach(ReceiverStream::new(rx)).await
            && status.code() == tonic::Code::ResourceExhausted
        {
            pressure.attaches_refused.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A worker that registers and then sends `per_second` results for assignments it never held.
async fn rogue(
    channel: testgrid_proto::client::GridChannel,
    per_second: u64,
    pressure: Arc<Pressure>,
    stop: Arc<AtomicBool>,
) -> Result<(), Error> {
    let (tx, rx) = mpsc::channel(4096);
    let register = pb::Register { name: "rogue".into(), slots: 1, version: "bench".into(), ..Default::default() };
    tx.send(pb::WorkerMessage { kind: Some(ToCoordinator::Register(register)) }).await?;
    let mut inbound =
        testgrid_proto::client::workers(channel.clone()).attach(ReceiverStream::new(rx)).await?.into_inner();
    // Read (and drop) whatever the coordinator sends, so that its queue never fills.
    let drain =
        tokio::spawn(async move { while let Some(Ok(_)) = tokio_stream::StreamExt::next(&mut inbound).await {} });
    let _drain = testgrid_bench_dispatch::AbortOnDrop(drain);
    let mut sessions = testgrid_proto::client::sessions(channel);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let per_tick = (per_second / 10).max(1);
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        // The sessions it can see (an open grid shows them all): forge results for theirs too.
        let known: Vec<String> = sessions
            .list(pb::ListRequest { page_size: 10, page_token: String::new() })
            .await
            .map(|r| r.into_inner().sessions.into_iter().map(|s| s.session_id).collect())
            .unwrap_or_default();
        for _ in 0..per_tick {
            n += 1;
            let session_id = match known.get((n % 4) as usize) {
                Some(id) if n.is_multiple_of(2) => id.clone(),
                _ => uuid::Uuid::new_v4().to_string(),
            };
            let assignment =
                pb::AssignmentRef { session_id, test_index: (n % 200) as u32, attempt: (n % 3) as u32 + 1 };
            let report = pb::TestReport { outcome: pb::Outcome::Passed as i32, ..Default::default() };
            let finished = pb::TestFinished { assignment: Some(assignment), report: Some(report), resent: false };
            tx.send(pb::WorkerMessage { kind: Some(ToCoordinator::TestFinished(finished)) }).await?;
            pressure.forged_sent.fetch_add(1, Ordering::Relaxed);
        }
        let beat = pb::WorkerMessage { kind: Some(ToCoordinator::Heartbeat(pb::Heartbeat { held: 0 })) };
        tx.send(beat).await?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let mut args = Args::parse();
    // Programs are found from the workspace folder the CLI runs in: make the path absolute.
    args.bin_dir = std::fs::canonicalize(&args.bin_dir).map_err(|e| {
        format!("--bin-dir {}: {e} (build with `cargo build --release --bins`)", args.bin_dir.display())
    })?;
    let data = tempfile::tempdir()?;
    let (coordinator, _) = Coordinator::start(&args.bin_dir.join("testgrid-coordinator"), data.path(), &[]).await?;
    let url = coordinator.url.clone();
    let ws = workspace(args.tests, args.test_ms)?;
    let mut workers = Vec::new();
    for i in 0..args.workers {
        let child = Command::new(args.bin_dir.join("testgrid-worker"))
            .args(["--grid", &url, "--name", &format!("real-{i}"), "--slots", &args.slots.to_string()])
            .args(["--label", "pool=real", "--root"])
            .arg(ws.path())
            .env("TESTGRID_LOG", "error")
            .stdin(Stdio::null())
            .spawn()?;
        workers.push(KillOnDrop(child));
    }
    let testgrid = args.bin_dir.join("testgrid");
    // The first run also waits for the workers (their tests queue until they attach).
    run_session(&testgrid, ws.path(), &url)?;
    let mut quiet = Vec::new();
    for _ in 0..args.runs.max(1) {
        quiet.push(run_session(&testgrid, ws.path(), &url)?.as_secs_f64());
    }
    let quiet_rss = coordinator.peak_rss();

    let stop = Arc::new(AtomicBool::new(false));
    let pressure = Arc::new(Pressure::default());
    let mut tasks = tokio::task::JoinSet::new();
    let grpc = url.trim_start_matches("http://").to_string();
    for _ in 0..args.idle {
        tasks.spawn(idle(grpc.clone(), Arc::clone(&pressure), Arc::clone(&stop)));
    }
    // Streams over a few connections, as one misbehaving client would open them.
    let mut channels = Vec::new();
    for _ in 0..10 {
        channels.push(channel(&url).await?);
    }
    for i in 0..args.attaches {
        tasks.spawn(silent_attach(channels[i % channels.len()].clone(), Arc::clone(&pressure), Arc::clone(&stop)));
    }
    let rogue_task = tokio::spawn(rogue(channel(&url).await?, args.forged, Arc::clone(&pressure), Arc::clone(&stop)));

    let pressed_until = Instant::now() + Duration::from_secs(args.seconds);
    let mut pressed = Vec::new();
    while Instant::now() < pressed_until {
        let (testgrid, root, url) = (testgrid.clone(), ws.path().to_path_buf(), url.clone());
        let wall = tokio::task::spawn_blocking(move || run_session(&testgrid, &root, &url)).await??;
        pressed.push(wall.as_secs_f64());
    }
    stop.store(true, Ordering::Relaxed);
    let pressed_rss = coordinator.peak_rss();
    let rogue_result = rogue_task.await?;
    tasks.abort_all();
    // The grid still answers after it all.
    let after = run_session(&testgrid, ws.path(), &url)?.as_secs_f64();

    let quiet_median = median(quiet.clone());
    let worst = pressed.iter().copied().fold(0.0, f64::max);
    let report = serde_json::json!({
        "tests": args.tests,
        "test_ms": args.test_ms,
        "workers": args.workers,
        "slots": args.slots,
        "quiet_seconds": quiet,
        "pressed_seconds": pressed,
        "after_seconds": after,
        "worst_ratio": worst / quiet_median,
        "median_ratio": median(pressed.clone()) / quiet_median,
        "coordinator_peak_rss_mib_quiet": quiet_rss as f64 / (1024.0 * 1024.0),
        "coordinator_peak_rss_mib": pressed_rss as f64 / (1024.0 * 1024.0),
        "idle_connections": args.idle,
        "idle_connections_opened": pressure.idle_opened.load(Ordering::Relaxed),
        "silent_attaches": args.attaches,
        "silent_attaches_opened": pressure.attaches_opened.load(Ordering::Relaxed),
        "silent_attaches_refused": pressure.attaches_refused.load(Ordering::Relaxed),
        "forged_results_sent": pressure.forged_sent.load(Ordering::Relaxed),
        "rogue_worker_ended": match rogue_result { Ok(()) => "ran to the end".to_string(), Err(e) => e.to_string() },
        "data_dir_mib": dir_size(data.path()) as f64 / (1024.0 * 1024.0),
    });
    println!("{report}");
    drop(workers);
    coordinator.kill();
    Ok(())
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
