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

/// Merge the parts under `parts` with `framework`'s own coverage code, run by `node` in the
/// project's folder `project`. `None` when there is nothing to merge (coverage off, or a
/// framework whose runners leave no parts).
pub async fn merge(framework: Framework, node: &str, project: &Path, parts: &Path) -> Result<Option<Merged>, String> {
    let kind = match Kind::of(framework) {
        Some(kind @ (Kind::Vitest | Kind::Jest)) => kind,
        _ => return Ok(None),
    };
    let has_parts = std::fs::read_dir(parts).map(|mut d| d.next().is_some()).unwrap_or(false);
    if !has_parts {
        return Ok(None);
    }
    let dir = tempfile::tempdir().map_err(|e| format!("cannot create a folder for the coverage merge: {e}"))?;
    let (file, text) = kind.runner();
    for (name, text) in std::iter::once(&(file, text)).chain(kind.support_files()) {
        std::fs::write(dir.path().join(name), text)
            .map_err(|e| format!("cannot write the {} runner: {e}", kind.name()))?;
    }
    let mut process = Process::new(node, project, false)
        .arg(dir.path().join(file))
        .arg("--merge-coverage")
        .arg(parts)
        .capture(MERGE_OUTPUT_LIMIT)
        .spawn()
        .map_err(|e| format!("cannot start `{node}` to merge the {} coverage: {e}", kind.name()))?;
    let status = match tokio::time::timeout(MERGE_TIMEOUT, process.wait()).await {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => return Err(format!("merging the {} coverage failed: {e}", kind.name())),
        Err(_) => {
            process.kill_group();
            return Err(format!("merging the {} coverage took over {}s", kind.name(), MERGE_TIMEOUT.as_secs()));
        }
    };
    process.settle_output(Duration::from_secs(2)).await;
    let output = String::from_utf8_lossy(&process.take_output()).into_owned();
    Ok(Some(Merged { ok: status.success(), output }))
}
