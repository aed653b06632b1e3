//! Files a test wrote that its session wants back (`--artifacts GLOB`): after each attempt, the
//! files of the test's tree that match the session's globs and were written while it ran are
//! sent to the coordinator's blob service and named in the attempt's report. What does not fit
//! in the session's limit per attempt is named too, with why it was not sent.
//!
//! It must not know frameworks: it looks at the tree after the executor is done.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use testgrid_proto as pb;
use testgrid_proto::client::BLOB_CHUNK_BYTES;
use testgrid_proto::client::GridChannel;
use testgrid_proto::tree;
use tracing::warn;

/// The most bytes one attempt sends back when the session names no limit.
pub const DEFAULT_MAX_BYTES: u64 = 100 * 1024 * 1024;

/// The most files one attempt names (the coordinator takes no more).
const MAX_FILES: usize = 1000;

/// The most entries looked at in a tree for one attempt (a huge tree is not walked forever).
const MAX_WALKED: usize = 2_000_000;

/// A file found to send back.
struct Found {
    path: String,
    file: PathBuf,
    size: u64,
}

/// Send back the files of the tree at `root` matching `spec` written since `since`; what to
/// name in the report.
/// A file whose path and contents are those of `tree` (the tree as materialised) is the
/// workspace's own, not the test's: it is left out.
pub async fn send_back(
    root: &Path,
    spec: &pb::ArtifactSpec,
    since: SystemTime,
    tree: Option<&crate::builds::Record>,
    channel: &GridChannel,
) -> Vec<pb::Artifact> {
    let (root, globs) = (root.to_path_buf(), spec.globs.clone());
    let found = match tokio::task::spawn_blocking(move || find(&root, &globs, since)).await {
        Ok(Ok(found)) => found,
        Ok(Err(problem)) => return vec![refused(String::new(), problem)],
        Err(e) => return vec![refused(String::new(), format!("looking for the files failed: {e}"))],
    };
    let limit = if spec.max_bytes == 0 { DEFAULT_MAX_BYTES } else { spec.max_bytes };
    let mut client = testgrid_proto::client::blobs(channel.clone());
    let mut used = 0u64;
    let mut named = Vec::with_capacity(found.len());
    for f in found {
        if used + f.size > limit {
            let why = format!(
                "{} does not fit in the {} left of the limit of {} per test (--artifacts-max-size)",
                testgrid_proto::human_bytes(f.size),
                testgrid_proto::human_bytes(limit - used),
                testgrid_proto::human_bytes(limit)
            );
            named.push(refused(f.path, why));
            continue;
        }
        let path = f.file.clone();
        let digest = match tokio::task::spawn_blocking(move || hash(&path, f.size)).await {
            Ok(Ok(digest)) => digest,
            Ok(Err(why)) => {
                named.push(refused(f.path, why));
                continue;
            }
            Err(e) => {
                named.push(refused(f.path, format!("hashing failed: {e}")));
                continue;
            }
        };
        let blob = tree.and_then(|t| t.get(&f.path)).map(|b| b.trim_end_matches(".x"));
        if blob == Some(digest.hash.as_str()) {
            continue;
        }
        match send(&mut client, &f.file, f.size, digest).await {
            Ok(digest) => {
                used += f.size;
                named.push(pb::Artifact { path: f.path, digest: Some(digest), refused: String::new() });
            }
            Err(why) => {
                warn!(file = %f.file.display(), "an artifact was not sent: {why}");
                named.push(refused(f.path, why));
            }
        }
    }
    named
}

fn refused(path: String, why: String) -> pb::Artifact {
    pb::Artifact { path, digest: None, refused: why }
}

/// The files under `root` matching `globs`, modified at or after `since`, in path order.
fn find(root: &Path, globs: &[String], since: SystemTime) -> Result<Vec<Found>, String> {
    let mut set = globset::GlobSetBuilder::new();
    for glob in globs {
        let glob = globset::GlobBuilder::new(glob)
            .literal_separator(true)
            .build()
            .map_err(|e| format!("a bad artifacts glob: {e}"))?;
        set.add(glob);
    }
    let set = set.build().map_err(|e| format!("bad artifacts globs: {e}"))?;
    // Only the folders the globs can reach: each glob's parts before its first pattern.
    let mut starts: Vec<PathBuf> = globs.iter().map(|g| root.join(literal_prefix(g))).collect();
    starts.sort();
    starts.dedup_by(|b, a| b.starts_with(&*a));
    let mut found = Vec::new();
    let mut walked = 0;
    let real_root = root.canonicalize().map_err(|e| format!("cannot look at the tree: {e}"))?;
    for start in starts {
        // A folder on the way that is a symlink out of the tree is not followed.
        if !start.canonicalize().is_ok_and(|real| real.starts_with(&real_root)) {
            continue;
        }
        let mut pending = vec![start];
        while let Some(path) = pending.pop() {
            walked += 1;
            if walked > MAX_WALKED || found.len() >= MAX_FILES {
                break;
            }
            let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
            if meta.is_dir() {
                if let Ok(entries) = std::fs::read_dir(&path) {
                    pending.extend(entries.flatten().map(|e| e.path()));
                }
                continue;
            }
            if !meta.is_file() || meta.modified().is_ok_and(|m| m < since) {
                continue;
            }
            let Ok(relative) = path.strip_prefix(root) else { continue };
            let Some(text) = relative.to_str() else { continue };
            if set.is_match(relative) {
                found.push(Found { path: text.to_string(), file: path.clone(), size: meta.len() });
            }
        }
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    found.dedup_by(|b, a| a.path == b.path);
    Ok(found)
}

/// The folder a glob's matches all lie in: its parts before the first one with a pattern.
fn literal_prefix(glob: &str) -> PathBuf {
    let mut prefix = PathBuf::new();
    let parts: Vec<&str> = glob.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        let pattern = part.contains(['*', '?', '[', '{', '\\']);
        // The last part is a file name, not a folder to start in; `..` never leaves the tree.
        if pattern || i + 1 == parts.len() || *part == ".." || part.is_empty() || *part == "." {
            break;
        }
        prefix.push(part);
    }
    prefix
}

/// Upload `file` (of `digest`) unless the coordinator has it.
async fn send(
    client: &mut pb::blob_service_client::BlobServiceClient<GridChannel>,
    file: &Path,
    size: u64,
    digest: pb::Digest,
) -> Result<pb::Digest, String> {
    let missing = client
        .find_missing(pb::FindMissingRequest { digests: vec![digest.clone()] })
        .await
        .map_err(|s| format!("the coordinator did not answer: {}", s.message()))?
        .into_inner()
        .missing;
    if missing.is_empty() {
        return Ok(digest);
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::UploadChunk>(4);
    let reader = {
        let (path, digest) = (file.to_path_buf(), digest.clone());
        tokio::task::spawn_blocking(move || -> Result<(), String> {
            let mut f = std::fs::File::open(&path).map_err(|e| format!("cannot read it: {e}"))?.take(size);
            let mut hasher = tree::Hasher::default();
            let mut first = true;
            loop {
                let mut buf = vec![0u8; BLOB_CHUNK_BYTES];
                let n = f.read(&mut buf).map_err(|e| format!("cannot read it: {e}"))?;
                buf.truncate(n);
                hasher.update(&buf);
                let done = n == 0 || hasher.size() >= digest.size_bytes;
                if done && hasher.finish() != digest {
                    // Without its last chunk the upload is incomplete, and refused.
                    return Err("it changed while it was sent".into());
                }
                let chunk = pb::UploadChunk { digest: first.then(|| digest.clone()), data: buf };
                first = false;
                if tx.blocking_send(chunk).is_err() || done {
                    return Ok(());
                }
            }
        })
    };
    let answer = client.upload(tokio_stream::wrappers::ReceiverStream::new(rx)).await;
    reader.await.map_err(|e| format!("reading failed: {e}"))??;
    answer.map_err(|s| format!("the coordinator refused it: {}", s.message()))?;
    Ok(digest)
}

/// The digest of the first `size` bytes of `path` (what the stat said it had).
fn hash(path: &Path, size: u64) -> Result<pb::Digest, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read it: {e}"))?;
    tree::digest_of_reader(file.take(size)).map_err(|e| format!("cannot read it: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_globs_files_written_since_the_start_are_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        for f in ["out/report.txt", "out/deep/shot.png", "src/main.rs", "old/report.txt"] {
            std::fs::create_dir_all(root.join(f).parent().expect("parent")).expect("mkdir");
            std::fs::write(root.join(f), "x").expect("write");
        }
        let before = SystemTime::now() - std::time::Duration::from_secs(60);
        let old = std::fs::File::options().write(true).open(root.join("old/report.txt")).expect("open");
        old.set_modified(before - std::time::Duration::from_secs(60)).expect("mtime");
        let globs = ["out/**".to_string(), "*/report.txt".to_string()];
        let found: Vec<String> = find(root, &globs, before).expect("found").into_iter().map(|f| f.path).collect();
        assert_eq!(found, ["out/deep/shot.png", "out/report.txt"], "old/report.txt is older than the test");
        assert_eq!(literal_prefix("out/deep/*.png"), PathBuf::from("out/deep"));
        assert_eq!(literal_prefix("**/*.png"), PathBuf::new());
        assert_eq!(literal_prefix("../x/y"), PathBuf::new());
        assert!(find(root, &["[".to_string()], before).is_err());
    }
}
