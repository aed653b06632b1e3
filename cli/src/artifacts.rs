//! The files tests send back (`--artifacts`): as each attempt's result arrives, the files its
//! report names are downloaded from the grid's blob service into the artifacts folder, a folder
//! per test (`DIR/TEST/FILE`, `DIR/TEST/attempt-N/FILE` for attempts after the first), each
//! checked against its digest and written atomically. The summary and the JUnit report name
//! them by the same paths ([`local_path`]).
//!
//! Paths come from the grid: each part is checked, so that none can leave the folder.

use std::io::Write;
use std::path::{Path, PathBuf};

use testgrid_proto as pb;
use testgrid_proto::client::GridChannel;
use testgrid_proto::session_event::Kind;
use testgrid_proto::tree;
use tokio_stream::StreamExt;

/// Where an artifact of `test`'s attempt `attempt` goes under `dir`; `None` for a path that could
/// leave it (the grid's mistake).
pub fn local_path(dir: &Path, test: &str, attempt: u32, artifact: &str) -> Option<PathBuf> {
    let mut path = dir.to_path_buf();
    // A test id may hold `::` (a case, a Rust test): kept, since it is a valid file name.
    for part in test.split('/') {
        tree::check_name(part).ok()?;
        path.push(part);
    }
    if attempt > 1 {
        path.push(format!("attempt-{attempt}"));
    }
    for part in artifact.split('/') {
        tree::check_name(part).ok()?;
        path.push(part);
    }
    Some(path)
}

/// The default artifacts folder of `session`.
pub fn default_dir(session: &str) -> PathBuf {
    PathBuf::from("testgrid-artifacts").join(session)
}

/// What was brought back.
#[derive(Debug, Default)]
pub struct Fetched {
    pub files: u64,
    pub bytes: u64,
    /// Files that could not be brought back, and why.
    pub failed: Vec<String>,
}

/// One attempt's artifacts to download.
struct Wanted {
    test: String,
    attempt: u32,
    artifacts: Vec<pb::Artifact>,
}

/// Downloads artifacts while the session runs.
pub struct Fetcher {
    dir: PathBuf,
    tx: tokio::sync::mpsc::UnboundedSender<Wanted>,
    task: tokio::task::JoinHandle<Fetched>,
}

/// Downloads at once.
const PARALLEL: usize = 4;

impl Fetcher {
    pub fn start(channel: GridChannel, dir: PathBuf) -> Fetcher {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Wanted>();
        let root = dir.clone();
        let task = tokio::spawn(async move {
            let mut fetched = Fetched::default();
            let mut running = tokio::task::JoinSet::new();
            while let Some(wanted) = rx.recv().await {
                for artifact in wanted.artifacts {
                    let Some(digest) = artifact.digest else { continue };
                    let Some(to) = local_path(&root, &wanted.test, wanted.attempt, &artifact.path) else {
                        fetched.failed.push(format!("{}: a path outside the artifacts folder", wanted.test));
                        continue;
                    };
                    while running.len() >= PARALLEL {
                        collect(running.join_next().await, &mut fetched);
                    }
                    let client = testgrid_proto::client::blobs(channel.clone());
                    running.spawn(async move {
                        let shown = to.display().to_string();
                        download(client, &digest, &to)
                            .await
                            .map(|()| digest.size_bytes)
                            .map_err(|e| format!("{shown}: {e}"))
                    });
                }
            }
            while let Some(done) = running.join_next().await {
                collect(Some(done), &mut fetched);
            }
            fetched
        });
        Fetcher { dir, tx, task }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Download what `event` names, if it is an attempt's end with artifacts.
    pub fn on_event(&self, event: &pb::SessionEvent, tracker: &crate::report::Tracker) {
        let Some(Kind::TestFinished(f)) = &event.kind else { return };
        let Some(report) = &f.report else { return };
        if report.artifacts.iter().all(|a| a.digest.is_none()) {
            return;
        }
        let wanted = Wanted {
            test: tracker.path(f.test_index).to_string(),
            attempt: f.attempt,
            artifacts: report.artifacts.clone(),
        };
        // The task ends only when this sender is dropped, in `finish`.
        let _ = self.tx.send(wanted);
    }

    /// Wait for every download.
    pub async fn finish(self) -> Fetched {
        drop(self.tx);
        self.task
            .await
            .unwrap_or_else(|e| Fetched { failed: vec![format!("downloading failed: {e}")], ..Default::default() })
    }
}

fn collect(done: Option<Result<Result<u64, String>, tokio::task::JoinError>>, fetched: &mut Fetched) {
    match done {
        Some(Ok(Ok(bytes))) => {
            fetched.files += 1;
            fetched.bytes += bytes;
        }
        Some(Ok(Err(e))) => fetched.failed.push(e),
        Some(Err(e)) => fetched.failed.push(format!("a download failed: {e}")),
        None => {}
    }
}

/// Stream one blob into `to`: a temporary file beside it, checked against the digest, renamed.
async fn download(
    mut client: pb::blob_service_client::BlobServiceClient<GridChannel>,
    digest: &pb::Digest,
    to: &Path,
) -> Result<(), String> {
    tree::check_digest(digest)?;
    let dir = to.parent().ok_or("no folder")?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut file =
        tempfile::NamedTempFile::new_in(dir).map_err(|e| format!("cannot write in {}: {e}", dir.display()))?;
    let mut stream = client
        .download(pb::DownloadRequest { digest: Some(digest.clone()) })
        .await
        .map_err(|s| format!("the grid did not send it: {}", s.message()))?
        .into_inner();
    let mut hasher = tree::Hasher::default();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|s| format!("the download broke: {}", s.message()))?;
        if hasher.size() + chunk.data.len() as u64 > digest.size_bytes {
            return Err("the grid sent more bytes than the file has".into());
        }
        hasher.update(&chunk.data);
        file.write_all(&chunk.data).map_err(|e| format!("cannot write it: {e}"))?;
    }
    if hasher.finish() != *digest {
        return Err("the grid sent other bytes than the test did".into());
    }
    // Readable as any file this user writes (a temporary file starts private).
    use std::os::unix::fs::PermissionsExt;
    file.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(|e| format!("cannot write it: {e}"))?;
    file.persist(to).map_err(|e| format!("cannot write it: {}", e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_artifacts_place_stays_in_its_folder() {
        let dir = Path::new("/a");
        assert_eq!(local_path(dir, "tests/t.sh", 1, "out/r.txt"), Some(PathBuf::from("/a/tests/t.sh/out/r.txt")));
        assert_eq!(local_path(dir, "t.py::case", 2, "x"), Some(PathBuf::from("/a/t.py::case/attempt-2/x")));
        assert_eq!(local_path(dir, "../t", 1, "x"), None);
        assert_eq!(local_path(dir, "t", 1, "../../etc/passwd"), None);
        assert_eq!(local_path(dir, "t", 1, "/etc/passwd"), None);
        assert_eq!(local_path(dir, "t", 1, "a//b"), None);
    }
}
