//! Shell and custom commands: one process per test, `sh -c COMMAND` (or, for a plain program
//! and arguments, the program directly: see [`command`]) in the job's workspace root, run by
//! the one process lifecycle ([`crate::exec::run::test_process`]).
//!
//! It must not know other frameworks.

pub mod command;

use testgrid_proto as pb;
use tokio_util::sync::CancellationToken;

use crate::exec::run::test_process;
use crate::exec::{Process, Settings};
use crate::job::{Executor, Job};

/// Runs each test as a process of its own.
#[derive(Clone, Debug)]
pub struct ShellExecutor {
    pub settings: Settings,
}

impl Executor for ShellExecutor {
    async fn run(&self, slot: u32, job: &Job, cancel: CancellationToken) -> pb::TestReport {
        let guard = self.settings.die_with_worker;
        // The session's arguments follow the test's path, as a script's own arguments.
        let command = match shlex::try_join(job.runner.args.iter().map(String::as_str)) {
            Ok(args) if !args.is_empty() => format!("{} {args}", job.command),
            Ok(_) => job.command.clone(),
            Err(e) => {
                let message = format!("cannot quote the session's arguments: {e}");
                return crate::exec::report::simple(pb::Outcome::Error, message, std::time::Instant::now());
            }
        };
        let process = match command::direct_argv(&command) {
            Some(argv) => Process::new(&argv[0], &job.root, guard).args(&argv[1..]),
            None => Process::new("sh", &job.root, guard).arg("-c").arg(&command),
        };
        let process = process.envs(job.test_env(slot));
        test_process(process, &command, &job.root, job.timeout, cancel, &self.settings).await
    }
}
