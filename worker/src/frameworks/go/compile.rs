//! Compiling a package's test binary: `go test -c -o OUT .` in the package's folder, with the
//! session's environment, through the one process lifecycle.
//!
//! It must not run tests.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::exec::exit::Exit;
use crate::exec::{Ending, Process, Settings};
use crate::job::Job;

/// How long `go test -c` may take for one package.
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// How long the compiler's last words may take once it has exited.
const DRAIN: Duration = Duration::from_secs(2);

/// One package's compile, shared by the session's slots.
#[derive(Clone, Debug)]
pub enum Build {
    Binary(PathBuf),
    NoTestFiles,
    Failed { message: String, output: Vec<u8> },
}

/// `go test -c -o OUT [BUILD FLAGS] .` in the folder of `pkg` (`build`: the session's build
/// flags, `-tags`, `-race`).
pub async fn compile(settings: &Settings, job: &Job, pkg: &str, out: &Path, build: &[String]) -> Build {
    let dir = job.root.join(pkg);
    let spawned = Process::new("go", &dir, settings.die_with_worker)
        .args(["test", "-c", "-o"])
        .arg(out)
        .args(build)
        .arg(".")
        .envs(&job.env)
        .capture(settings.output_limit)
        .spawn();
    let mut running = match spawned {
        Ok(running) => running,
        Err(e) => {
            let message = format!(
                "cannot start `go test -c` in {}: {e}; install Go on the worker (e.g. `apt-get install golang-go`) \
                 or put `go` on the worker's PATH",
                dir.display()
            );
            return Build::Failed { message, output: Vec::new() };
        }
    };
    // Not cancelled here: a cancelled waiter drops this future, which kills the compile.
    let never = CancellationToken::new();
    let ending = running.wait_with(Some(BUILD_TIMEOUT), &never, settings.kill_grace, "`go test -c`").await;
    // The compiler's helpers go with it (all of it, after a timeout).
    let output = running.finish(DRAIN).await.bytes;
    match ending {
        Ending::Exited(status) if status.success() => {
            if out.is_file() {
                Build::Binary(out.to_path_buf())
            } else {
                Build::NoTestFiles
            }
        }
        Ending::Exited(status) => {
            Build::Failed { message: format!("build failed: `go test -c` {}", Exit::of(status).sentence()), output }
        }
        Ending::Lost(message) => Build::Failed { message, output },
        Ending::TimedOut(_) | Ending::Cancelled => Build::Failed {
            message: format!(
                "build failed: `go test -c` did not finish within {}",
                humantime::format_duration(BUILD_TIMEOUT)
            ),
            output,
        },
    }
}
