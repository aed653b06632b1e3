//! Which Go the worker has: how to run test2json and which verbose flag the test binaries take.
//!
//! It must not compile or run tests.

use std::path::Path;
use std::time::Duration;

use crate::exec::Process;
use crate::exec::exit::Exit;
use crate::exec::process::Failure;
use crate::job::Job;

/// How this worker's Go runs tests.
#[derive(Clone, Debug)]
pub struct Toolchain {
    /// test2json: the binary in `GOTOOLDIR`, else `go tool test2json`.
    pub test2json: Vec<String>,
    /// `-test.v=test2json` (Go 1.20+: exact framing of test output) or `-test.v`.
    pub verbose_flag: &'static str,
}

/// Ask `go env` for the version and the tool directory.
pub async fn detect(job: &Job, die_with_worker: bool) -> Result<Toolchain, String> {
    let query = Process::new("go", &job.root, die_with_worker).args(["env", "GOVERSION", "GOTOOLDIR"]).envs(&job.env);
    let out = match query.output(Duration::from_secs(60)).await {
        Ok(out) => out,
        Err(Failure::Start(e) | Failure::Wait(e)) => {
            return Err(format!(
                "cannot run `go`: {e}; install Go on the worker (e.g. `apt-get install golang-go`) or put `go` on \
                 the worker's PATH"
            ));
        }
        Err(Failure::TimedOut) => return Err("`go env GOVERSION GOTOOLDIR` did not answer within a minute".into()),
    };
    if !out.status.success() {
        return Err(format!(
            "`go env GOVERSION GOTOOLDIR` failed ({}): {}",
            Exit::of(out.status).sentence(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines().map(str::trim);
    let version = lines.next().unwrap_or_default();
    let tooldir = lines.next().unwrap_or_default();
    let test2json = format!("{tooldir}/test2json");
    let test2json = if !tooldir.is_empty() && Path::new(&test2json).is_file() {
        vec![test2json]
    } else {
        vec!["go".into(), "tool".into(), "test2json".into()]
    };
    let verbose_flag = if frames_test2json(version) { "-test.v=test2json" } else { "-test.v" };
    Ok(Toolchain { test2json, verbose_flag })
}

/// Whether test binaries of this Go version take `-test.v=test2json` (Go 1.20 and later).
fn frames_test2json(version: &str) -> bool {
    let Some(at) = version.find("go") else { return false };
    let mut parts = version[at + 2..].split(|c: char| !c.is_ascii_digit());
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    major > 1 || (major == 1 && minor >= 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test2json_framing_flag_from_go_1_20() {
        assert!(!frames_test2json("go1.19.8"));
        assert!(frames_test2json("go1.20"));
        assert!(frames_test2json("go1.22rc1"));
        assert!(frames_test2json("devel go1.24-abcdef Tue"));
        assert!(!frames_test2json(""));
    }
}
