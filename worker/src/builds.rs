//! Build folders kept between sessions of one project (`CACHE/builds/KEY/`), so that a build
//! after an edit is incremental on a grid worker as it is on a laptop (cargo's target folder
//! lives in one: see the cargo executor).
//!
//! Build tools decide what is stale by modification times. A materialised tree's files are hard
//! links to cached blobs, whose times are when each blob arrived; a file reverted to an older
//! content would get that older blob's time, older than the last build, and look unchanged. So
//! each build folder records the tree it last saw (path → blob), and a session's files that
//! differ from it are copied instead of linked, with a fresh time ([`Lease::changed`]).
//!
//! One session at a time holds a project's folder ([`Lease`]); another session of the same
//! project meanwhile builds in a folder of its own, removed with its tree. At most
//! [`MAX_KEPT`] project folders are kept, the least recently used removed first.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use tracing::warn;

use crate::exec::lock;

/// Project build folders kept on a worker.
pub const MAX_KEPT: usize = 8;

/// The most bytes of a tree record read (a bigger one is ignored, and the folder started over).
const MAX_RECORD_BYTES: u64 = 256 * 1024 * 1024;

/// The record of the tree a build folder last saw.
const RECORD: &str = "tree.json";

/// A tree as a build folder records it: each file's path (relative to the tree) and its blob
/// (hash, `.x` for executables).
pub type Record = HashMap<String, String>;

/// The build folders under one cache.
pub struct Builds {
    dir: PathBuf,
    /// Projects whose folder a session holds.
    busy: Mutex<HashSet<String>>,
}

/// A session's build folder, held while its tree exists.
pub struct Lease {
    pub dir: PathBuf,
    /// The tree the folder saw before this session (`None`: nothing to compare, everything is
    /// new to it).
    before: Option<Record>,
    /// Whose project folder it is; `None`: a folder of the session's own, removed with it.
    key: Option<String>,
    builds: Weak<Builds>,
}

impl Builds {
    pub fn open(dir: PathBuf) -> std::io::Result<Arc<Builds>> {
        std::fs::create_dir_all(&dir)?;
        // A session's own folders left by a worker that stopped.
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with("session-") {
                crate::workspace::remove_tree(&entry.path());
            }
        }
        Ok(Arc::new(Builds { dir, busy: Mutex::new(HashSet::new()) }))
    }

    /// The build folder for a session of `project`: the project's, unless another session holds
    /// it (then one of `session`'s own).
    pub fn lease(self: &Arc<Self>, project: &str, session: &str) -> std::io::Result<Lease> {
        let key = testgrid_proto::tree::digest_of(project.as_bytes()).hash[..32].to_string();
        let taken = lock(&self.busy).insert(key.clone());
        if !taken {
            let dir = self.dir.join(format!("session-{session}"));
            crate::workspace::remove_tree(&dir);
            std::fs::create_dir_all(&dir)?;
            return Ok(Lease { dir, before: None, key: None, builds: Arc::downgrade(self) });
        }
        // Held from here: dropped on every path out, the lease releases the key.
        let mut lease = Lease { dir: self.dir.join(&key), before: None, key: Some(key), builds: Arc::downgrade(self) };
        self.prune();
        lease.before = read_record(&lease.dir.join(RECORD));
        if lease.before.is_none() {
            // Whatever is there was built from a tree nobody recorded: start over.
            crate::workspace::remove_tree(&lease.dir);
        }
        std::fs::create_dir_all(&lease.dir)?;
        // Written now, for the least-recently-used order.
        std::fs::write(lease.dir.join(".used"), b"")?;
        Ok(lease)
    }

    /// Keep at most [`MAX_KEPT`] project folders: remove the least recently used free ones.
    fn prune(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        let mut kept: Vec<(std::time::SystemTime, String, PathBuf)> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("session-") {
                    return None;
                }
                let used = std::fs::metadata(e.path().join(".used")).and_then(|m| m.modified()).ok()?;
                Some((used, name, e.path()))
            })
            .collect();
        if kept.len() <= MAX_KEPT {
            return;
        }
        kept.sort();
        let busy = lock(&self.busy).clone();
        let mut over = kept.len() - MAX_KEPT;
        for (_, name, path) in kept {
            if over == 0 {
                break;
            }
            if !busy.contains(&name) {
                crate::workspace::remove_tree(&path);
                over -= 1;
            }
        }
    }
}

impl Lease {
    /// Whether the file at `path` with blob `blob` differs from what this folder last saw (it
    /// needs a fresh modification time).
    pub fn changed(&self, path: &str, blob: &str) -> bool {
        self.before.as_ref().is_some_and(|before| before.get(path).is_none_or(|b| b != blob))
    }

    /// Record the session's tree as the one this folder sees now (before anything builds in it).
    pub fn record(&self, tree: &Record) {
        if self.key.is_none() {
            return;
        }
        let written = serde_json::to_vec(tree).map_err(std::io::Error::other).and_then(|bytes| {
            let file = tempfile::NamedTempFile::new_in(&self.dir)?;
            std::fs::write(file.path(), bytes)?;
            file.persist(self.dir.join(RECORD)).map(drop).map_err(|e| e.error)
        });
        if let Err(e) = written {
            warn!(dir = %self.dir.display(), "cannot record the tree of a build folder, it starts over next time: {e}");
            let _ = std::fs::remove_file(self.dir.join(RECORD));
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        match &self.key {
            Some(key) => {
                if let Some(builds) = self.builds.upgrade() {
                    lock(&builds.busy).remove(key);
                }
            }
            None => crate::workspace::remove_tree(&self.dir),
        }
    }
}

fn read_record(path: &Path) -> Option<Record> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.len() > MAX_RECORD_BYTES {
        return None;
    }
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_project_folder_is_held_by_one_session_and_remembers_the_tree_it_saw() {
        let cache = tempfile::tempdir().expect("tempdir");
        let builds = Builds::open(cache.path().join("builds")).expect("opens");
        let first = builds.lease("github.com/o/r", "s1").expect("lease");
        assert!(!first.changed("src/lib.rs", "aa"), "a new folder compares with nothing");
        first.record(&Record::from([("src/lib.rs".to_string(), "aa".to_string())]));
        // Held: another session of the project gets a folder of its own, removed with it.
        let second = builds.lease("github.com/o/r", "s2").expect("lease");
        assert_ne!(second.dir, first.dir);
        let own = second.dir.clone();
        drop(second);
        assert!(!own.exists());
        let dir = first.dir.clone();
        std::fs::write(dir.join("artifact"), "x").expect("write");
        drop(first);
        let again = builds.lease("github.com/o/r", "s3").expect("lease");
        assert_eq!(again.dir, dir);
        assert!(dir.join("artifact").exists(), "kept between sessions");
        assert!(!again.changed("src/lib.rs", "aa"));
        assert!(again.changed("src/lib.rs", "bb"), "another content");
        assert!(again.changed("src/new.rs", "aa"), "a new file");
        drop(again);
        // A folder with no record is started over.
        std::fs::remove_file(dir.join(RECORD)).expect("rm");
        let fresh = builds.lease("github.com/o/r", "s4").expect("lease");
        assert!(!dir.join("artifact").exists());
        drop(fresh);
    }

    #[test]
    fn only_the_newest_project_folders_are_kept() {
        let cache = tempfile::tempdir().expect("tempdir");
        let builds = Builds::open(cache.path().join("builds")).expect("opens");
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for i in 0..=MAX_KEPT {
            let lease = builds.lease(&format!("p{i}"), "s").expect("lease");
            lease.record(&Record::new());
            if i == 0 {
                let used = std::fs::File::options().write(true).open(lease.dir.join(".used")).expect("open");
                used.set_modified(old).expect("mtime");
            }
        }
        let oldest = cache.path().join("builds").join(&testgrid_proto::tree::digest_of(b"p0").hash[..32]);
        let _one_more = builds.lease("another", "s").expect("lease");
        assert!(!oldest.exists(), "the least recently used folder went");
        let count = std::fs::read_dir(cache.path().join("builds")).expect("read").count();
        assert_eq!(count, MAX_KEPT + 1, "the kept ones and the one just leased");
    }
}
