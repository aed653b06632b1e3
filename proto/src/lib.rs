//! The `testgrid.v1` protocol and how to speak it.
//!
//! - [`v1`]: messages and services generated from `proto/testgrid/v1/*.proto` (re-exported at
//!   the crate root). The `.proto` files are the contract; read them for what every field means.
//! - [`frameworks`]: the typed, validated form of a session's runner (framework, isolation,
//!   per-framework options), shared by the coordinator and the worker.
//! - [`client`]: the one way a program opens a channel to a coordinator (CLI and worker).
//! - [`cargo`]: how Rust test units are named and found in cargo's output, the contract between
//!   the CLI that lists them and the worker that runs them.
//! - [`outcome`]: the names of outcomes, one table for every program.
//! - [`setup`]: a session's setup command, typed and checked, and its reuse key.
//! - Small shared pieces: [`error_chain`], [`parse_key_value`], [`parse_bytes`], [`human_bytes`],
//!   [`logging`], [`now_ms`].
//!
//! It must not hold program logic: no scheduling, no executors, no discovery.

#[expect(clippy::all, reason = "generated code")]
pub mod v1 {
    tonic::include_proto!("testgrid.v1");

    /// The encoded file descriptor set, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("testgrid_descriptor");
}

pub use v1::*;

pub mod cargo;
pub mod client;
pub mod frameworks;
pub mod go;
pub mod js;
pub mod logging;
pub mod outcome;
pub mod secrets;
pub mod setup;
pub mod tree;

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the UNIX epoch, the protocol's unit of time (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The chain of an error's causes, joined with `: `, since the top-level messages of tonic and
/// hyper say little ("transport error") on their own. Causes whose words an earlier part already
/// holds are left out ("tcp connect error: tcp connect error").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    chain_from(e.to_string(), e.source())
}

/// A gRPC status in words: its message, then the causes tonic keeps in its source chain (where
/// the OS error, "connection refused", hides).
pub fn status_detail(status: &tonic::Status) -> String {
    chain_from(status.message().to_string(), std::error::Error::source(status))
}

fn chain_from(top: String, mut source: Option<&dyn std::error::Error>) -> String {
    let mut parts = vec![top];
    while let Some(cause) = source {
        let part = cause.to_string();
        if !parts.iter().any(|p| p.contains(&part)) {
            parts.push(part);
        }
        source = cause.source();
    }
    parts.retain(|p| !p.is_empty());
    parts.join(": ")
}

/// Parse a label, `key=value`: both sides trimmed, the key must not be empty. One rule for every
/// program, so that `--label "os= linux"` on the CLI matches a worker started with
/// `--label os=linux`.
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    parse_env_var(s).map(|(k, v)| (k, v.trim().to_string()))
}

/// Parse an environment variable, `NAME=value`: the name trimmed and not empty, as for labels,
/// but the value kept exactly as written (spaces in a value are data).
pub fn parse_env_var(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not key=value (the key must not be empty)")),
    }
}

/// A size for people, in powers of 1000: `512 B`, `12.3 kB`, `4.5 MB`, `1.2 GB`.
pub fn human_bytes(bytes: u64) -> String {
    match bytes {
        b if b >= 1_000_000_000 => format!("{:.1} GB", b as f64 / 1e9),
        b if b >= 1_000_000 => format!("{:.1} MB", b as f64 / 1e6),
        b if b >= 1_000 => format!("{:.1} kB", b as f64 / 1e3),
        b => format!("{b} B"),
    }
}

/// A size in bytes as flags take it: `4096`, `512KiB`, `100MB`, `20GiB` (`K`, `M`, `G`, `T` with
/// `iB` are powers of 1024, with `B` powers of 1000; case and a space before the unit do not
/// matter).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let bad = || format!("`{text}` is not a size (like 4096, 512MiB, 20GiB)");
    let number: u64 = number.parse().map_err(|_| bad())?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    number.checked_mul(factor).ok_or_else(|| format!("`{text}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_units() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_bytes("20 GiB"), Ok(20 << 30));
        assert_eq!(parse_bytes("100mb"), Ok(100_000_000));
        assert_eq!(parse_bytes("2G"), Ok(2 << 30));
        for bad in ["", "x", "1.5GiB", "-1", "10 parsecs", "99999999999999999999TiB"] {
            assert!(parse_bytes(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn key_value_trims_both_sides_and_needs_a_key() {
        assert_eq!(parse_key_value("os= linux "), Ok(("os".into(), "linux".into())));
        assert_eq!(parse_key_value(" a =b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(parse_key_value("k="), Ok(("k".into(), String::new())));
        assert!(parse_key_value("=v").is_err());
        assert!(parse_key_value("  =v").is_err());
        assert!(parse_key_value("novalue").is_err());
        assert_eq!(parse_env_var(" GREETING= hi "), Ok(("GREETING".into(), " hi ".into())), "a value is data");
        assert!(parse_env_var(" =x").is_err());
    }

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as &(dyn std::error::Error + 'static))
        }
    }

    #[test]
    fn error_chain_keeps_new_words_only() {
        let e = Layer(
            "transport error",
            Some(Box::new(Layer("tcp connect error", Some(Box::new(Layer("tcp connect error", None)))))),
        );
        assert_eq!(error_chain(&e), "transport error: tcp connect error");
        let refused = Layer("connect", Some(Box::new(Layer("Connection refused (os error 111)", None))));
        assert_eq!(error_chain(&refused), "connect: Connection refused (os error 111)");
    }
}
