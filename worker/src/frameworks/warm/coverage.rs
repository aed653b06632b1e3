//! A session's coverage, merged: each warm runner left its part (what the files it ran covered)
//! in the session's folder when it retired; the framework's own coverage code, run once more in
//! the project, merges the parts and writes the reports the project's config asks for, where the
//! framework alone writes them. Used where the runners' folder is on this machine (local mode).
//!
//! It must not decide when to merge (the CLI does, once the workers have stopped).

use std::path::Path;
use std::time::Duration;

use testgrid_proto::frameworks::Framework;

use super::kind::Kind;
use crate::exec::Process;

/// How long merging may take (it reads every part and writes every report).
const MERGE_TIMEOUT: Duration = Duration::from_secs(300);

/// What the merge printed at most (a coverage table of a large project).
const MERGE_OUTPUT_LIMIT: usize = 256 * 1024;

/// How a merge went: whether the framework was content (thresholds met) and what it printed.
#[derive(Debug)]
pub struct Merged {
    pub ok: bool,
    pub output: String,
}

/// Merge the parts under `parts` with `framework`'s own coverage code, run by `program` (the Node
/// of a JavaScript project, the Python of a pytest one) in the project's folder `project`. `None`
/// when there is nothing to merge (coverage off, or a framework whose runners leave no parts).
pub async fn merge(
    framework: Framework,
    program: &str,
    project: &Path,
    parts: &Path,
) -> Result<Option<Merged>, String> {
    let Some(kind) = Kind::of(framework) else { return Ok(None) };
    let has_parts = std::fs::read_dir(parts).map(|mut d| d.next().is_some()).unwrap_or(false);
    if !has_parts {
        return Ok(None);
    }
    if kind == Kind::Pytest {
        return merge_pytest(program, project, parts).await;
    }
    let dir = tempfile::tempdir().map_err(|e| format!("cannot create a folder for the coverage merge: {e}"))?;
    let file = super::runner::write_files(kind, dir.path())?;
    let process = Process::new(program, project, false).arg(dir.path().join(file)).arg("--merge-coverage").arg(parts);
    let (ok, output) = run(process, kind.name()).await?;
    Ok(Some(Merged { ok, output }))
}

/// The report writer of a combined pytest-cov session (`--cov-report` types and paths).
const PYTEST_COV_REPORT: (&str, &str) =
    ("testgrid_pytest_cov.py", include_str!("../../runners/testgrid_pytest_cov.py"));

/// pytest-cov's data files, one per runner: combined into the project's data file by coverage.py
/// (`coverage combine`, as pytest-cov combines its xdist workers'), then reported as pytest-cov
/// was asked to (its `--cov-report` types and paths and `--cov-fail-under`, which the runners
/// saved as `pytest-cov.json`), else on the terminal (`coverage report`, pytest-cov's default).
async fn merge_pytest(python: &str, project: &Path, parts: &Path) -> Result<Option<Merged>, String> {
    let mut files: Vec<_> = std::fs::read_dir(parts)
        .map_err(|e| format!("cannot read {}: {e}", parts.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "coverage"))
        .collect();
    if files.is_empty() {
        return Ok(None);
    }
    files.sort();
    let combine = Process::new(python, project, false).args(["-m", "coverage", "combine", "-q"]).args(&files);
    let (ok, mut output) = run(combine, "pytest").await?;
    if !ok {
        return Ok(Some(Merged { ok, output }));
    }
    let options = parts.join("pytest-cov.json");
    let report = if options.is_file() {
        let dir = tempfile::tempdir().map_err(|e| format!("cannot create a folder for the coverage merge: {e}"))?;
        let (name, text) = PYTEST_COV_REPORT;
        let script = dir.path().join(name);
        std::fs::write(&script, text).map_err(|e| format!("cannot write the pytest-cov report writer: {e}"))?;
        run(Process::new(python, project, false).arg(&script).arg(&options), "pytest").await?
    } else {
        run(Process::new(python, project, false).args(["-m", "coverage", "report"]), "pytest").await?
    };
    let (ok, report) = report;
    output.push_str(&report);
    Ok(Some(Merged { ok, output }))
}

/// Run a merge step to its end (bounded in time and output): whether it succeeded, what it said.
async fn run(process: Process, name: &str) -> Result<(bool, String), String> {
    let mut process = process
        .env_remove("COVERAGE_FILE")
        .capture(MERGE_OUTPUT_LIMIT)
        .spawn()
        .map_err(|e| format!("cannot start the {name} coverage merge: {e}"))?;
    let status = match tokio::time::timeout(MERGE_TIMEOUT, process.wait()).await {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => return Err(format!("merging the {name} coverage failed: {e}")),
        Err(_) => {
            process.kill_group();
            return Err(format!("merging the {name} coverage took over {}s", MERGE_TIMEOUT.as_secs()));
        }
    };
    process.settle_output(Duration::from_secs(2)).await;
    Ok((status.success(), String::from_utf8_lossy(&process.take_output()).into_owned()))
}
