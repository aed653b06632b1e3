//! What differs between frameworks, one module each: [`shell`] (commands), [`warm`] (pytest,
//! vitest and jest through long-lived runners), [`cargo`] (Rust test binaries), [`go`] (Go test
//! binaries through test2json). [`Executors`] picks one from a job's framework: the only place
//! that does.
//!
//! Frameworks build on `exec` and `job`; none imports another, and none knows the connection.

pub mod cargo;
pub mod go;
pub mod shell;
pub mod warm;

use testgrid_proto as pb;
use testgrid_proto::frameworks::Framework;
use tokio_util::sync::CancellationToken;

use crate::job::{Executor, Job};

/// Every framework's executor; picks each job's from its session's framework.
pub struct Executors {
    pub shell: shell::ShellExecutor,
    pub warm: warm::WarmExecutor,
    pub cargo: cargo::CargoExecutor,
    pub go: go::GoExecutor,
}

impl Executor for Executors {
    async fn run(&self, slot: u32, job: &Job, cancel: CancellationToken) -> pb::TestReport {
        match job.runner.framework {
            // `file` and `test` isolation get a fresh runner per unit (see `WarmExecutor`).
            Framework::Pytest | Framework::Vitest | Framework::Jest => self.warm.run(slot, job, cancel).await,
            // A process per test whatever the isolation: Rust tests start in a millisecond.
            Framework::Cargo => self.cargo.run(slot, job, cancel).await,
            // Every isolation: a Go package's tests share one test binary, as under `go test`.
            Framework::Go => self.go.run(slot, job, cancel).await,
            Framework::Shell | Framework::Custom => self.shell.run(slot, job, cancel).await,
        }
    }

    async fn shutdown(&self) {
        self.warm.shutdown().await;
    }

    async fn end_session(&self, session: &str) {
        self.warm.end_session(session).await;
    }

    async fn prestart(&self, job: &Job, cancel: &CancellationToken) {
        if matches!(job.runner.framework, Framework::Pytest | Framework::Vitest | Framework::Jest) {
            self.warm.prestart(job, cancel).await;
        }
    }

    fn depth(&self, job: &Job) -> usize {
        match job.runner.framework {
            Framework::Pytest | Framework::Vitest | Framework::Jest => self.warm.depth(job),
            _ => 1,
        }
    }
}
