//! `testgrid-worker`: parse flags, set up logging, run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

/// A testgrid worker: runs the tests a coordinator assigns to it.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The coordinator's gRPC address.
    #[arg(long, env = "TESTGRID_GRID")]
    grid: String,
    /// Tests to run at once (default: the number of CPUs).
    #[arg(long, env = "TESTGRID_SLOTS")]
    slots: Option<u32>,
    /// The worker's name (default: the host name).
    #[arg(long, env = "TESTGRID_WORKER_NAME")]
    name: Option<String>,
    /// A label sessions can require, `key=value`; repeat for more.
    #[arg(long = "label", env = "TESTGRID_LABELS", value_delimiter = ',', value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// The workspace root: the checkout the tests live in (baked into the image, or a volume).
    #[arg(long, env = "TESTGRID_ROOT", default_value = ".")]
    root: PathBuf,
    /// Output kept per test in bytes (head and tail; the middle is dropped).
    #[arg(long, env = "TESTGRID_OUTPUT_LIMIT", default_value_t = testgrid_worker::DEFAULT_OUTPUT_LIMIT)]
    output_limit: usize,
    /// Time between SIGTERM and SIGKILL when a test is stopped (timeout, cancel).
    #[arg(long, env = "TESTGRID_KILL_GRACE", default_value = "1s", value_parser = humantime::parse_duration)]
    kill_grace: Duration,
    /// On SIGTERM, how long running tests may finish before they are killed and handed back.
    #[arg(long, env = "TESTGRID_DRAIN_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
    /// Let tests outlive a worker that is killed outright. By default the kernel kills them with
    /// it, since their attempts are requeued elsewhere; this saves about 0.9 ms per test start.
    #[arg(long, env = "TESTGRID_ORPHANS_SURVIVE")]
    orphans_survive: bool,
    /// Replace a warm runner (pytest, vitest, jest) by a fresh one after it has run this many
    /// test files.
    #[arg(long, env = "TESTGRID_RECYCLE_AFTER_FILES", default_value_t = testgrid_worker::Recycle::default().after_files, value_parser = clap::value_parser!(u64).range(1..))]
    recycle_after_files: u64,
    /// Replace a warm runner by a fresh one once its memory (RSS) passes this many MiB.
    #[arg(long, env = "TESTGRID_RECYCLE_RSS_MIB", default_value_t = testgrid_worker::Recycle::default().rss_bytes / (1024 * 1024), value_parser = clap::value_parser!(u64).range(1..))]
    recycle_rss_mib: u64,
    /// Log format.
    #[arg(long, env = "TESTGRID_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum LogFormat {
    Text,
    Json,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("`{s}` is not a label; write key=value")),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("TESTGRID_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A closed stderr must not turn a log line into a panic.
        .log_internal_errors(false)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    if let Some(slots) = args.slots
        && !(1..=testgrid_worker::MAX_SLOTS).contains(&slots)
    {
        eprintln!("error: --slots {slots} is not in 1..={}", testgrid_worker::MAX_SLOTS);
        return ExitCode::from(2);
    }
    let config = testgrid_worker::Config {
        grid: args.grid,
        slots: args.slots.unwrap_or_else(testgrid_worker::default_slots),
        name: args.name.unwrap_or_else(testgrid_worker::default_name),
        labels: args.labels.into_iter().collect::<BTreeMap<_, _>>(),
        root: args.root,
        output_limit: args.output_limit.max(2),
        kill_grace: args.kill_grace,
        drain_timeout: args.drain_timeout,
        die_with_worker: !args.orphans_survive,
        recycle: testgrid_worker::Recycle {
            after_files: args.recycle_after_files,
            rss_bytes: args.recycle_rss_mib.saturating_mul(1024 * 1024),
        },
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(3);
        }
    };
    let stop = testgrid_worker::Stop::default();
    let result = runtime.block_on(async {
        let signals = stop.clone();
        tokio::spawn(async move {
            // First SIGTERM (or Ctrl-C): drain. Second: stop now.
            if wait_for_signal().await.is_err() {
                return;
            }
            tracing::info!("stopping: draining (signal again to stop at once)");
            signals.drain.cancel();
            if wait_for_signal().await.is_ok() {
                tracing::info!("stopping now: killing running tests and handing them back");
            }
            signals.now.cancel();
        });
        testgrid_worker::run(config, stop).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// Wait for SIGTERM or SIGINT.
async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
