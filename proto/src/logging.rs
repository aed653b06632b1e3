//! Tracing setup, the same for the three programs: `TESTGRID_LOG` filters (default given by the
//! program), human lines on stderr (coloured on a terminal) or JSON lines with `--log-format json`.

/// How log lines are written.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Install the global subscriber. `default_filter` applies when `TESTGRID_LOG` is unset or
/// invalid (`info` for services, `warn` for the CLI); `targets` shows module paths.
pub fn init(default_filter: &str, format: LogFormat, targets: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TESTGRID_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A closed stderr must not turn a log line into a panic.
        .log_internal_errors(false)
        .with_writer(std::io::stderr)
        .with_target(targets);
    // A second call (tests, an embedding program) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
