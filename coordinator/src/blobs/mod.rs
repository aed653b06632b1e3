//! Where the coordinator keeps blobs (workspace files and manifests, by digest): behind
//! [`BlobStore`], so that a large grid can put an S3-compatible object store behind the same
//! calls later. [`FsStore`] keeps them as files under `--data-dir`, each written whole or not at
//! all (a temporary file, fsync, rename) and only once its bytes hash to its digest.
//!
//! It must not speak gRPC (that is `service/blob.rs`) or know sessions.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use testgrid_proto as pb;
use testgrid_proto::client::NOT_UPLOADED;
use testgrid_proto::tree;

/// How temporary files start.
const TEMP_PREFIX: &str = ".tmp-";

/// Why a blob was not stored or read.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("{0}")]
    BadDigest(String),
    #[error("the bytes sent hash to {got}, not to the digest {want} they were sent as")]
    Mismatch { want: String, got: String },
    #[error("a blob of {size} bytes is over the coordinator's limit of {limit} bytes per blob (--max-blob-size)")]
    TooLarge { size: u64, limit: u64 },
    #[error("the coordinator's blob store is full ({limit} bytes, --blob-store-size)")]
    Full { limit: u64 },
    #[error("the blob store failed: {0}")]
    Io(#[from] std::io::Error),
}

/// A blob being written: bytes in order, then [`BlobWrite::commit`], which stores it only if
/// they hash to its digest.
pub trait BlobWrite: Send {
    fn write(&mut self, bytes: &[u8]) -> Result<(), BlobError>;
    fn commit(self: Box<Self>) -> Result<(), BlobError>;
}

/// Blobs by digest.
pub trait BlobStore: Send + Sync + 'static {
    fn contains(&self, digest: &pb::Digest) -> bool;
    /// Start writing `digest`'s blob. Writing one that is already held is harmless.
    fn write(&self, digest: &pb::Digest) -> Result<Box<dyn BlobWrite>, BlobError>;
    /// Drop every blob not in `keep` that was written longer than `grace` ago (a blob uploaded
    /// for a session not submitted yet is younger): what was removed, in blobs and bytes.
    fn retain(&self, keep: &std::collections::HashSet<String>, grace: std::time::Duration) -> (u64, u64);
    /// Bytes held, and the most it may hold.
    fn usage(&self) -> (u64, u64);
    /// The blob's bytes, if held.
    fn open(&self, digest: &pb::Digest) -> Result<Option<Box<dyn Read + Send>>, BlobError>;

    /// Store a whole blob.
    fn put(&self, digest: &pb::Digest, bytes: &[u8]) -> Result<(), BlobError> {
        let mut w = self.write(digest)?;
        w.write(bytes)?;
        w.commit()
    }
}

/// Blobs as files: `ROOT/ab/abcdef…` (by the hash's first two characters), each written as a
/// temporary `.tmp-*` file in its own shard folder (one folder taking every new file is slow on
/// ext4) and renamed into place.
pub struct FsStore {
    root: PathBuf,
    /// The most bytes all blobs may take.
    capacity: u64,
    /// The most bytes of one blob.
    max_blob: u64,
    used: std::sync::Arc<AtomicU64>,
}

impl FsStore {
    /// The store under `root` (created if missing), its size counted from what is there.
    pub fn open(root: &Path, capacity: u64, max_blob: u64) -> std::io::Result<FsStore> {
        std::fs::create_dir_all(root)?;
        let mut used = 0;
        for shard in std::fs::read_dir(root)? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for blob in std::fs::read_dir(shard.path())? {
                let blob = blob?;
                // Temporary files of a coordinator that stopped mid-upload are of no use.
                if blob.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                    let _ = std::fs::remove_file(blob.path());
                    continue;
                }
                used += blob.metadata()?.len();
            }
        }
        Ok(FsStore { root: root.to_path_buf(), capacity, max_blob, used: std::sync::Arc::new(AtomicU64::new(used)) })
    }

    /// Bytes held.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    fn path(&self, digest: &pb::Digest) -> Result<PathBuf, BlobError> {
        tree::check_digest(digest).map_err(BlobError::BadDigest)?;
        Ok(self.root.join(&digest.hash[..2]).join(&digest.hash))
    }
}

impl BlobStore for FsStore {
    fn contains(&self, digest: &pb::Digest) -> bool {
        self.path(digest).is_ok_and(|p| std::fs::metadata(p).is_ok_and(|m| m.len() == digest.size_bytes))
    }

    fn write(&self, digest: &pb::Digest) -> Result<Box<dyn BlobWrite>, BlobError> {
        let path = self.path(digest)?;
        if digest.size_bytes > self.max_blob {
            return Err(BlobError::TooLarge { size: digest.size_bytes, limit: self.max_blob });
        }
        if self.used() + digest.size_bytes > self.capacity {
            return Err(BlobError::Full { limit: self.capacity });
        }
        let shard = path.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(shard)?;
        let file = tempfile::Builder::new().prefix(TEMP_PREFIX).tempfile_in(shard)?;
        Ok(Box::new(FsWrite {
            want: digest.clone(),
            path,
            file,
            hasher: tree::Hasher::default(),
            used: std::sync::Arc::clone(&self.used),
        }))
    }

    fn retain(&self, keep: &std::collections::HashSet<String>, grace: std::time::Duration) -> (u64, u64) {
        let cutoff = std::time::SystemTime::now().checked_sub(grace).unwrap_or(std::time::UNIX_EPOCH);
        let (mut blobs, mut bytes) = (0, 0);
        let Ok(shards) = std::fs::read_dir(&self.root) else { return (0, 0) };
        for shard in shards.flatten() {
            let Ok(entries) = std::fs::read_dir(shard.path()) else { continue };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(TEMP_PREFIX) || keep.contains(&name) {
                    continue;
                }
                let Ok(meta) = entry.metadata() else { continue };
                if meta.modified().is_ok_and(|m| m > cutoff) {
                    continue;
                }
                if std::fs::remove_file(entry.path()).is_ok() {
                    blobs += 1;
                    bytes += meta.len();
                    self.used.fetch_sub(meta.len().min(self.used()), Ordering::Relaxed);
                }
            }
        }
        (blobs, bytes)
    }

    fn usage(&self) -> (u64, u64) {
        (self.used(), self.capacity)
    }

    fn open(&self, digest: &pb::Digest) -> Result<Option<Box<dyn Read + Send>>, BlobError> {
        match std::fs::File::open(self.path(digest)?) {
            Ok(file) => Ok(Some(Box::new(file))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

struct FsWrite {
    want: pb::Digest,
    path: PathBuf,
    file: tempfile::NamedTempFile,
    hasher: tree::Hasher,
    used: std::sync::Arc<AtomicU64>,
}

impl BlobWrite for FsWrite {
    fn write(&mut self, bytes: &[u8]) -> Result<(), BlobError> {
        // More bytes than the digest says: refused before they are written.
        if self.hasher.size() + bytes.len() as u64 > self.want.size_bytes {
            return Err(BlobError::Mismatch { want: self.want.hash.clone(), got: "a longer blob".into() });
        }
        self.hasher.update(bytes);
        self.file.write_all(bytes)?;
        Ok(())
    }

    fn commit(self: Box<Self>) -> Result<(), BlobError> {
        let got = self.hasher.finish();
        if got != self.want {
            return Err(BlobError::Mismatch { want: self.want.hash.clone(), got: got.hash });
        }
        self.file.as_file().sync_all()?;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let existed = self.path.exists();
        // Two uploads of one blob: both hold the same bytes, whichever rename lands last wins.
        self.file.persist(&self.path).map_err(|e| e.error)?;
        if !existed {
            self.used.fetch_add(self.want.size_bytes, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Every blob the trees of `roots` name (their manifests and files), by hash: what garbage
/// collection keeps. A manifest that cannot be read keeps only itself.
pub fn reachable(store: &dyn BlobStore, roots: &[pb::Digest]) -> std::collections::HashSet<String> {
    let mut keep = std::collections::HashSet::new();
    let mut queue: Vec<pb::Digest> = roots.to_vec();
    while let Some(digest) = queue.pop() {
        if !keep.insert(digest.hash.clone()) || digest.size_bytes > MAX_MANIFEST_BYTES {
            continue;
        }
        let mut bytes = Vec::new();
        let Ok(Some(reader)) = store.open(&digest) else { continue };
        if reader.take(MAX_MANIFEST_BYTES).read_to_end(&mut bytes).is_err() {
            continue;
        }
        let Ok(dir) = <pb::Directory as prost::Message>::decode(bytes.as_slice()) else { continue };
        keep.extend(dir.files.iter().filter_map(|f| f.digest.as_ref()).map(|d| d.hash.clone()));
        queue.extend(dir.directories.into_iter().filter_map(|d| d.digest));
    }
    keep
}

/// The roots of the workspaces submitted lately, newest last: what garbage collection keeps.
#[derive(Default)]
pub struct Roots {
    recent: std::sync::Mutex<std::collections::VecDeque<(std::time::Instant, pb::Digest)>>,
    /// Blobs kept for themselves, not as trees: files tests sent back (artifacts).
    leaves: std::sync::Mutex<std::collections::VecDeque<(std::time::Instant, pb::Digest)>>,
}

/// Roots remembered at most (older ones are forgotten first).
const MAX_ROOTS: usize = 10_000;
/// Sent-back blobs remembered at most.
const MAX_LEAVES: usize = 1_000_000;

impl Roots {
    /// A session was submitted with the workspace `root`.
    pub fn submitted(&self, root: pb::Digest) {
        let mut recent = self.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        recent.retain(|(_, d)| d.hash != root.hash);
        recent.push_back((std::time::Instant::now(), root));
        while recent.len() > MAX_ROOTS {
            recent.pop_front();
        }
    }

    /// A test sent back these files: kept as long as a workspace would be.
    pub fn sent_back(&self, blobs: impl IntoIterator<Item = pb::Digest>) {
        let mut leaves = self.leaves.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for blob in blobs {
            leaves.push_back((std::time::Instant::now(), blob));
        }
        while leaves.len() > MAX_LEAVES {
            leaves.pop_front();
        }
    }

    /// The blobs sent back within `retention`.
    pub fn leaves_within(&self, retention: std::time::Duration) -> Vec<pb::Digest> {
        let mut leaves = self.leaves.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while leaves.front().is_some_and(|(at, _)| at.elapsed() > retention) {
            leaves.pop_front();
        }
        leaves.iter().map(|(_, d)| d.clone()).collect()
    }

    /// The roots submitted within `retention`.
    pub fn within(&self, retention: std::time::Duration) -> Vec<pb::Digest> {
        let mut recent = self.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while recent.front().is_some_and(|(at, _)| at.elapsed() > retention) {
            recent.pop_front();
        }
        recent.iter().map(|(_, d)| d.clone()).collect()
    }
}

/// Drop the blobs that no workspace submitted within `retention` names, once they are older
/// than `grace`: (blobs, bytes) removed.
pub fn collect_garbage(
    store: &dyn BlobStore,
    roots: &Roots,
    retention: std::time::Duration,
    grace: std::time::Duration,
) -> (u64, u64) {
    let mut keep = reachable(store, &roots.within(retention));
    keep.extend(roots.leaves_within(retention).into_iter().map(|d| d.hash));
    store.retain(&keep, grace)
}

/// The most bytes of one manifest read while checking a tree.
const MAX_MANIFEST_BYTES: u64 = 64 * 1024 * 1024;

/// What a tree holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TreeStats {
    pub files: u64,
    pub bytes: u64,
    pub directories: u64,
}

/// Check the tree whose root manifest is `root`: every manifest held, canonical and safe
/// ([`tree::check_directory`]), every file blob held, at most `max_entries` entries. The
/// message says what is wrong, naming the first missing blob.
pub fn check_tree(store: &dyn BlobStore, root: &pb::Digest, max_entries: u64) -> Result<TreeStats, String> {
    let mut stats = TreeStats::default();
    let mut queue = vec![(root.clone(), 0usize)];
    let mut seen = std::collections::HashSet::new();
    while let Some((digest, depth)) = queue.pop() {
        if !seen.insert(digest.hash.clone()) {
            continue;
        }
        if digest.size_bytes > MAX_MANIFEST_BYTES {
            return Err(format!("a manifest of {} bytes (at most {MAX_MANIFEST_BYTES})", digest.size_bytes));
        }
        let mut bytes = Vec::new();
        match store.open(&digest).map_err(|e| e.to_string())? {
            Some(reader) => reader.take(MAX_MANIFEST_BYTES).read_to_end(&mut bytes).map_err(|e| e.to_string())?,
            None => return Err(format!("the workspace's manifest {} {NOT_UPLOADED}", digest.hash)),
        };
        let dir: pb::Directory = prost::Message::decode(bytes.as_slice())
            .map_err(|e| format!("manifest {} is not a Directory: {e}", digest.hash))?;
        tree::check_directory(&dir, depth)?;
        stats.directories += 1;
        stats.files += (dir.files.len() + dir.symlinks.len()) as u64;
        if stats.files + stats.directories > max_entries {
            return Err(format!("the workspace has more than {max_entries} entries"));
        }
        for file in &dir.files {
            // check_directory made sure every file has a digest.
            let Some(d) = &file.digest else { continue };
            if !store.contains(d) {
                return Err(format!("the workspace's file {} ({}) {NOT_UPLOADED}", file.name, d.hash));
            }
            stats.bytes += d.size_bytes;
        }
        for sub in &dir.directories {
            if let Some(d) = &sub.digest {
                queue.push((d.clone(), depth + 1));
            }
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(walk(&entry.path()));
            } else {
                out.push(entry.path().display().to_string());
            }
        }
        out
    }

    #[test]
    fn garbage_collection_keeps_recent_trees_and_young_blobs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsStore::open(dir.path(), 1 << 20, 1 << 16).expect("a store");
        let file = tree::digest_of(b"kept file");
        store.put(&file, b"kept file").expect("stored");
        let manifest = pb::Directory {
            files: vec![pb::FileNode { name: "f".into(), digest: Some(file.clone()), is_executable: false }],
            ..Default::default()
        };
        let bytes = prost::Message::encode_to_vec(&manifest);
        let root = tree::digest_of(&bytes);
        store.put(&root, &bytes).expect("stored");
        let orphan = tree::digest_of(b"orphan");
        store.put(&orphan, b"orphan").expect("stored");
        let young = tree::digest_of(b"young orphan");
        store.put(&young, b"young orphan").expect("stored");
        // Everything but the young orphan was written an hour ago.
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for d in [&file, &root, &orphan] {
            let path = store.path(d).expect("a path");
            std::fs::File::options().write(true).open(path).expect("open").set_modified(hour_ago).expect("mtime");
        }
        let roots = Roots::default();
        roots.submitted(root.clone());
        let minute = std::time::Duration::from_secs(60);
        let day = std::time::Duration::from_secs(86_400);
        assert_eq!(collect_garbage(&store, &roots, day, minute), (1, 6), "the old orphan goes");
        for d in [&file, &root, &young] {
            assert!(store.contains(d), "{}", d.hash);
        }
        assert!(!store.contains(&orphan));
        assert_eq!(store.used(), (b"kept file".len() + bytes.len() + b"young orphan".len()) as u64);
        // Past its retention the tree goes too.
        assert_eq!(collect_garbage(&store, &roots, std::time::Duration::ZERO, minute).0, 2);
        assert!(!store.contains(&root) && !store.contains(&file) && store.contains(&young));
    }

    #[test]
    fn a_blob_is_stored_only_when_it_matches_its_digest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsStore::open(dir.path(), 1 << 20, 1 << 16).expect("a store");
        let digest = tree::digest_of(b"hello");
        assert!(!store.contains(&digest));
        store.put(&digest, b"hello").expect("stored");
        assert!(store.contains(&digest));
        store.put(&digest, b"hello").expect("stored twice: harmless");
        assert_eq!(store.used(), 5);
        let mut back = String::new();
        store.open(&digest).expect("opens").expect("held").read_to_string(&mut back).expect("reads");
        assert_eq!(back, "hello");

        let other = tree::digest_of(b"other");
        assert!(matches!(store.put(&other, b"wrong"), Err(BlobError::Mismatch { .. })));
        assert!(!store.contains(&other), "a mismatch is not stored");
        assert!(matches!(store.put(&other, b"other!"), Err(BlobError::Mismatch { .. })), "longer");
        let bad = pb::Digest { hash: "../../etc/passwd".into(), size_bytes: 1 };
        assert!(matches!(store.put(&bad, b"x"), Err(BlobError::BadDigest(_))));
        assert!(store.open(&bad).is_err());
        let big = pb::Digest { size_bytes: 1 << 17, ..tree::digest_of(b"x") };
        assert!(matches!(store.write(&big), Err(BlobError::TooLarge { .. })));
        let files: Vec<String> = walk(dir.path());
        assert!(!files.iter().any(|f| f.contains(TEMP_PREFIX)), "refused writes leave no temporary file: {files:?}");

        // Reopened, it counts what it holds; full, it refuses more.
        let full = FsStore::open(dir.path(), 8, 1 << 16).expect("a store");
        assert_eq!(full.used(), 5);
        assert!(matches!(full.put(&tree::digest_of(b"four"), b"four"), Err(BlobError::Full { limit: 8 })));
    }
}
