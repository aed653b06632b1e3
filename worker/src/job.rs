//! One assignment as the worker runs it ([`Job`]), converted from the protocol's `Assign` at the
//! edge, the seam every framework implements ([`Executor`]), and the one place a test's
//! environment is put together ([`Job::test_env`], [`Job::runner_env`]).
//!
//! It must not start processes or know any framework: `exec/` runs processes, `frameworks/`
//! decides what runs.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use testgrid_proto as pb;
use testgrid_proto::frameworks::Runner;
use tokio_util::sync::CancellationToken;

/// One assignment as an executor sees it.
#[derive(Clone, Debug)]
pub struct Job {
    pub assignment: pb::AssignmentRef,
    /// The test unit's path, relative to [`Job::root`].
    pub path: String,
    /// For command runners: the command, already expanded.
    pub command: String,
    /// What the session asked for on top of the worker's own environment.
    pub env: BTreeMap<String, String>,
    pub timeout: Option<Duration>,
    /// How the session's tests run: framework, isolation and the framework's options.
    pub runner: Runner,
    /// The workspace the test lives in: every path of the job is relative to it.
    pub root: PathBuf,
    /// The worker's name (for `TESTGRID_WORKER`).
    pub worker: String,
    /// A runner started ahead of its session sends the session's list of test files here (see
    /// [`crate::FileList`]).
    pub list_to: Option<std::sync::mpsc::SyncSender<crate::Listing>>,
    /// The session's workspace tree: [`Job::root`] becomes its folder on this worker before the
    /// job runs. `None`: the worker's own root.
    pub workspace: Option<pb::Digest>,
    /// The session's setup, run once in [`Job::root`] before the session's first test there.
    pub setup: Option<testgrid_proto::setup::Setup>,
    /// The session's project (empty: none).
    pub project: String,
    /// A folder for build output that outlives the session, kept per project (set with a
    /// materialised tree; see `crate::builds`). `None`: builds go where the project says.
    pub build_dir: Option<PathBuf>,
    /// Which files the test writes come back (see `crate::artifacts`).
    pub artifacts: Option<pb::ArtifactSpec>,
    /// The files of a materialised tree as they arrived (path → blob name): a file still the
    /// same is not one the test wrote.
    pub tree_files: Option<std::sync::Arc<crate::builds::Record>>,
    /// The values of the session's secrets (`--secret`), masked in every report it sends.
    pub secrets: Vec<String>,
}

/// An assignment the worker cannot run, and why.
#[derive(Debug)]
pub struct Refused {
    pub assignment: pb::AssignmentRef,
    pub path: String,
    pub why: String,
}

impl Job {
    /// The job a session's runner is started ahead for (see [`crate::Prestart`]): the session's
    /// environment and runner, no test.
    pub fn ahead_of(prestart: crate::Prestart, root: &Path, worker: &str) -> Job {
        let list_to = prestart.list.as_ref().and_then(crate::FileList::take);
        Job {
            assignment: pb::AssignmentRef { session_id: prestart.session_id, ..Default::default() },
            path: String::new(),
            command: String::new(),
            env: prestart.env,
            timeout: None,
            runner: prestart.runner,
            root: root.to_path_buf(),
            worker: worker.to_string(),
            list_to,
            workspace: None,
            setup: None,
            project: String::new(),
            build_dir: None,
            artifacts: None,
            tree_files: None,
            // Its jobs' reports are masked as they are made.
            secrets: Vec::new(),
        }
    }

    /// The job an `Assign` asks for, run in `root` by the worker `worker`; `None` when it names
    /// no assignment (nothing to report to), `Refused` when its runner cannot be used.
    pub fn from_assign(a: pb::Assign, root: &Path, worker: &str) -> Option<Result<Job, Refused>> {
        let assignment = a.assignment?;
        let runner = match a.runner.as_ref().map(Runner::try_from) {
            Some(Ok(runner)) => runner,
            problem => {
                let why = match problem {
                    Some(Err(e)) => e.to_string(),
                    _ => "the assignment has no runner".to_string(),
                };
                return Some(Err(Refused { assignment, path: a.test_path, why }));
            }
        };
        let setup = match a.setup.as_ref().map(testgrid_proto::setup::Setup::try_from) {
            Some(Ok(setup)) => Some(setup),
            Some(Err(e)) => return Some(Err(Refused { assignment, path: a.test_path, why: e.to_string() })),
            None => None,
        };
        let env: BTreeMap<String, String> = a.env.into_iter().collect();
        let secrets = testgrid_proto::secrets::values(&a.secret_env, |name| env.get(name).map(String::as_str));
        Some(Ok(Job {
            assignment,
            path: a.test_path,
            command: a.command,
            env,
            timeout: (a.timeout_ms > 0).then(|| Duration::from_millis(a.timeout_ms)),
            runner,
            root: root.to_path_buf(),
            worker: worker.to_string(),
            list_to: None,
            workspace: a.workspace,
            setup,
            project: a.project,
            build_dir: None,
            artifacts: a.artifacts.filter(|a| !a.globs.is_empty()),
            tree_files: None,
            secrets,
        }))
    }

    /// The project's folder (where warm runners start and cargo builds), under the root.
    pub fn project_dir(&self) -> PathBuf {
        self.root.join(self.runner.project_dir())
    }

    /// The environment of a process that runs this one test in `slot`: what the session asked
    /// for, then the documented facts (docs/runners.md), which win over the session's.
    pub fn test_env(&self, slot: u32) -> Vec<(String, String)> {
        let mut env = self.runner_env(slot);
        env.push(("TESTGRID_TEST".into(), self.path.clone()));
        env.push(("TESTGRID_ATTEMPT".into(), self.assignment.attempt.to_string()));
        env
    }

    /// The environment of a warm runner process, which runs many tests of one session in
    /// `slot`: what the session asked for and the facts that hold for all its tests.
    pub fn runner_env(&self, slot: u32) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = self.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        env.push(("TESTGRID_SESSION".into(), self.assignment.session_id.clone()));
        env.push(("TESTGRID_SLOT".into(), slot.to_string()));
        env.push(("TESTGRID_WORKER".into(), self.worker.clone()));
        env
    }
}

/// Runs jobs. `run` must end soon after `cancel` fires, and report `Cancelled` then. `slot`
/// says which of the worker's slots (0-based) runs the job, for executors that keep a process
/// per slot and for `TESTGRID_SLOT`.
pub trait Executor: Send + Sync + 'static {
    fn run(&self, slot: u32, job: &Job, cancel: CancellationToken) -> impl Future<Output = pb::TestReport> + Send;

    /// How many of a session's jobs one slot may hold at once: more than one only for an
    /// executor that queues the next job in its runner while one runs (and runs them one after
    /// the other, timing each from its own start).
    fn depth(&self, _job: &Job) -> usize {
        1
    }

    /// The worker stops: let long-lived processes finish their work (write their reports).
    fn shutdown(&self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// `session` is over: let its long-lived processes finish (session hooks, reports) and go.
    fn end_session(&self, _session: &str) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Start what `job`'s session will run on before its first test comes (a warm runner),
    /// giving up when `cancel` fires; a failure is left for that first test to meet and report.
    fn prestart(&self, _job: &Job, _cancel: &CancellationToken) -> impl Future<Output = ()> + Send {
        async {}
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Jobs for the crate's unit tests.
    use super::*;
    use testgrid_proto::frameworks::{Framework, Options};

    /// A job of `session` for `path` with `options`, rooted at `root`.
    pub(crate) fn job(framework: Framework, options: Options, session: &str, path: &str, root: &Path) -> Job {
        Job {
            assignment: pb::AssignmentRef { session_id: session.into(), ..Default::default() },
            path: path.into(),
            command: String::new(),
            env: Default::default(),
            timeout: None,
            runner: Runner {
                framework,
                isolation: Default::default(),
                options,
                args: Vec::new(),
                keep_passing_output: false,
            },
            root: root.to_path_buf(),
            worker: "test-worker".into(),
            list_to: None,
            workspace: None,
            setup: None,
            project: String::new(),
            build_dir: None,
            artifacts: None,
            tree_files: None,
            secrets: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use testgrid_proto::frameworks::{Framework, Options};

    #[test]
    fn the_facts_win_over_the_session_env_and_runners_get_the_shared_ones() {
        let mut job = testing::job(
            Framework::Shell,
            Options::Command { template: "sh {}".into() },
            "s1",
            "a.sh",
            Path::new("/w"),
        );
        job.assignment.attempt = 2;
        job.env.insert("TESTGRID_SLOT".into(), "99".into());
        job.env.insert("MINE".into(), "1".into());
        let env: BTreeMap<String, String> = job.test_env(3).into_iter().collect();
        assert_eq!(env["TESTGRID_SESSION"], "s1");
        assert_eq!(env["TESTGRID_TEST"], "a.sh");
        assert_eq!(env["TESTGRID_ATTEMPT"], "2");
        assert_eq!(env["TESTGRID_SLOT"], "3");
        assert_eq!(env["TESTGRID_WORKER"], "test-worker");
        assert_eq!(env["MINE"], "1");
        let runner: BTreeMap<String, String> = job.runner_env(0).into_iter().collect();
        assert!(!runner.contains_key("TESTGRID_TEST") && !runner.contains_key("TESTGRID_ATTEMPT"));
        assert_eq!(runner["TESTGRID_SLOT"], "0");
    }
}
