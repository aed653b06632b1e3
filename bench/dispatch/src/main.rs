//! `bench/dispatch`: how fast a real coordinator (with its data directory, so every event is
//! committed to SQLite) hands out work, and how much memory it takes doing it.
//!
//! It starts the coordinator binary, attaches `--workers` light workers over real gRPC (each a
//! stream that answers every `Assign` with `TestStarted` and a passing `TestFinished` at once),
//! submits one session of `--tests` zero-length tests and follows it to its end: assignments
//! per second over the session, and the coordinator's peak RSS. Then it measures reloads: the
//! coordinator restarted on a data directory holding `--finished` finished sessions, and on one
//! holding a session of `--tests` queued tests. Prints one JSON object.

use std::path::PathBuf;
use std::time::{Duration, Instant};
use testgrid_bench_dispatch::{AbortOnDrop, Coordinator, Error, channel, dir_size};
use testgrid_proto::client::GridChannel;

use clap::Parser;
use testgrid_proto as pb;
use testgrid_proto::coordinator_message::Kind as FromCoordinator;
use testgrid_proto::worker_message::Kind as ToCoordinator;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

#[derive(Parser)]
struct Args {
    /// The coordinator binary (a release build).
    #[arg(long, default_value = "target/release/testgrid-coordinator")]
    coordinator: PathBuf,
    #[arg(long, default_value_t = 1000)]
    workers: usize,
    #[arg(long, default_value_t = 100_000)]
    tests: usize,
    /// gRPC connections the light workers share (each carries workers / channels streams).
    #[arg(long, default_value_t = 20)]
    channels: usize,
    /// Finished sessions (of 100 tests each) in the data directory whose reload is timed.
    #[arg(long, default_value_t = 1000)]
    finished: usize,
}

/// One light worker: register, then answer every assignment at once, until the stream ends.
async fn light_worker(channel: GridChannel, n: usize) -> Result<(), Error> {
    let (tx, rx) = mpsc::channel(64);
    let register = pb::Register { name: format!("light-{n}"), slots: 1, version: "bench".into(), ..Default::default() };
    tx.send(pb::WorkerMessage { kind: Some(ToCoordinator::Register(register)) }).await?;
    let mut inbound = pb::worker_service_client::WorkerServiceClient::new(channel)
        .attach(ReceiverStream::new(rx))
        .await?
        .into_inner();
    // Proof of life for the workers no test reaches for a while.
    let beat = tx.clone();
    let heartbeats = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let held = pb::WorkerMessage { kind: Some(ToCoordinator::Heartbeat(pb::Heartbeat { held: 0 })) };
            if beat.send(held).await.is_err() {
                return;
            }
        }
    });
    let _stop_beating = AbortOnDrop(heartbeats);
    while let Some(message) = inbound.next().await {
        let Some(kind) = message?.kind else { continue };
        if let FromCoordinator::Assign(assign) = kind {
            let started = pb::TestStarted { assignment: assign.assignment.clone(), started_at_ms: 0 };
            tx.send(pb::WorkerMessage { kind: Some(ToCoordinator::TestStarted(started)) }).await?;
            let report = pb::TestReport { outcome: pb::Outcome::Passed as i32, ..Default::default() };
            let finished = pb::TestFinished { assignment: assign.assignment, report: Some(report), resent: false };
            tx.send(pb::WorkerMessage { kind: Some(ToCoordinator::TestFinished(finished)) }).await?;
        }
    }
    Ok(())
}

fn spec(tests: usize) -> pb::SessionSpec {
    let runner = testgrid_proto::frameworks::Runner::command(testgrid_proto::frameworks::Framework::Shell, "true {}");
    pb::SessionSpec {
        name: "dispatch".into(),
        tests: (0..tests).map(|i| pb::TestSpec { path: format!("t{i}"), size_bytes: 0 }).collect(),
        runner: Some(pb::Runner::from(&runner)),
        ..Default::default()
    }
}

async fn submit(channel: &GridChannel, tests: usize) -> Result<String, Error> {
    let request = pb::SubmitRequest { spec: Some(spec(tests)), session_id: String::new() };
    let mut client = testgrid_proto::client::sessions(channel.clone());
    Ok(client.submit(request).await?.into_inner().session_id)
}

/// Follow a session's events until it finishes.
async fn finish(channel: &GridChannel, session: &str) -> Result<(), Error> {
    let mut client = testgrid_proto::client::sessions(channel.clone());
    let mut from_seq = 1;
    loop {
        let request = pb::WatchRequest { session_id: session.to_string(), from_seq };
        let mut events = client.watch(request).await?.into_inner();
        while let Some(event) = events.next().await {
            let event = event?;
            from_seq = event.seq + 1;
            if let Some(pb::session_event::Kind::Finished(_)) = event.kind {
                return Ok(());
            }
        }
    }
}

async fn wait_for_workers(channel: &GridChannel, n: usize) -> Result<(), Error> {
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut admin = testgrid_proto::client::admin(channel.clone());
    while admin.list_workers(pb::ListWorkersRequest {}).await?.into_inner().workers.len() < n {
        if Instant::now() > deadline {
            return Err(format!("{n} workers did not attach within 5 minutes").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args = Args::parse();
    let data = tempfile::tempdir()?;
    let (coordinator, _) = Coordinator::start(&args.coordinator, data.path(), &["--liveness-timeout", "120s"]).await?;
    let mut channels = Vec::new();
    for _ in 0..args.channels.max(1) {
        channels.push(channel(&coordinator.url).await?);
    }
    let mut workers = tokio::task::JoinSet::new();
    for n in 0..args.workers {
        workers.spawn(light_worker(channels[n % channels.len()].clone(), n));
    }
    wait_for_workers(&channels[0], args.workers).await?;

    let started = Instant::now();
    let session = submit(&channels[0], args.tests).await?;
    finish(&channels[0], &session).await?;
    let elapsed = started.elapsed();
    let rss = coordinator.peak_rss();

    // Fill the data directory with finished sessions (50 at a time), then time a restart on it.
    let mut left = args.finished.saturating_sub(1);
    while left > 0 {
        let batch = left.min(50);
        left -= batch;
        let mut running = tokio::task::JoinSet::new();
        for n in 0..batch {
            let channel = channels[n % channels.len()].clone();
            running.spawn(async move {
                let session = submit(&channel, 100).await?;
                finish(&channel, &session).await
            });
        }
        while let Some(done) = running.join_next().await {
            done??;
        }
    }
    workers.abort_all();
    coordinator.kill();
    let (coordinator, reload_finished) =
        Coordinator::start(&args.coordinator, data.path(), &["--liveness-timeout", "120s"]).await?;
    coordinator.kill();

    // A data directory holding one session of queued tests (no worker to run them).
    let queued_dir = tempfile::tempdir()?;
    let (coordinator, _) =
        Coordinator::start(&args.coordinator, queued_dir.path(), &["--liveness-timeout", "120s"]).await?;
    let queued = channel(&coordinator.url).await?;
    submit(&queued, args.tests).await?;
    coordinator.kill();
    let (coordinator, reload_queued) =
        Coordinator::start(&args.coordinator, queued_dir.path(), &["--liveness-timeout", "120s"]).await?;
    coordinator.kill();

    let report = serde_json::json!({
        "workers": args.workers,
        "tests": args.tests,
        "seconds": elapsed.as_secs_f64(),
        "assignments_per_second": args.tests as f64 / elapsed.as_secs_f64(),
        "coordinator_peak_rss_mib": rss as f64 / (1024.0 * 1024.0),
        "reload_finished_sessions": args.finished,
        "reload_finished_ms": reload_finished.as_secs_f64() * 1000.0,
        "reload_queued_tests": args.tests,
        "reload_queued_ms": reload_queued.as_secs_f64() * 1000.0,
        "data_dir_mib": dir_size(data.path()) as f64 / (1024.0 * 1024.0),
    });
    println!("{report}");
    Ok(())
}
