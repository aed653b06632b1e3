//! The workspace index: each file's digest beside what `stat` said when it was hashed (size,
//! modification and change times, inode), as git's index keeps them, so that a workspace whose
//! files did not change is not read again. A file whose times fall within the index's own
//! second of writing may have changed unseen within that second ("racy git"): it is hashed again.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;

use testgrid_proto as pb;
use testgrid_proto::tree;

/// The most bytes of an index read: a bigger one is ignored (and rebuilt).
const MAX_INDEX_BYTES: u64 = 256 * 1024 * 1024;

/// A file's `stat` as the index compares it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stamp {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    inode: u64,
}

impl Stamp {
    pub fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            size: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
            inode: meta.ino(),
        }
    }
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Index {
    /// When it was written, in nanoseconds since the epoch.
    written_ns: i128,
    files: HashMap<String, (Stamp, String)>,
}

impl Index {
    /// The index at `path`; empty when there is none or it cannot be read.
    pub fn load(path: &Path) -> Index {
        let read = || -> Option<Index> {
            if std::fs::metadata(path).ok()?.len() > MAX_INDEX_BYTES {
                return None;
            }
            serde_json::from_slice(&std::fs::read(path).ok()?).ok()
        };
        read().unwrap_or_default()
    }

    /// The digest recorded for `rel`, if its stamp is the same and it was not racy.
    pub fn get(&self, rel: &str, stamp: &Stamp) -> Option<pb::Digest> {
        let (known, hash) = self.files.get(rel)?;
        // A change within the second the index was written could have kept the same stamp (on
        // a filesystem that keeps whole seconds).
        let racy = stamp.mtime_ns >= self.written_ns - 1_000_000_000;
        let digest = pb::Digest { hash: hash.clone(), size_bytes: stamp.size };
        (known == stamp && !racy && tree::check_digest(&digest).is_ok()).then_some(digest)
    }

    pub fn put(&mut self, rel: String, stamp: Stamp, digest: &pb::Digest) {
        self.files.insert(rel, (stamp, digest.hash.clone()));
    }

    pub fn shared(self) -> Mutex<Index> {
        Mutex::new(self)
    }

    /// Write it to `path` whole or not at all (a temporary file renamed into place).
    pub fn save(mut self, path: &Path) -> std::io::Result<()> {
        self.written_ns =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128);
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let mut file = tempfile::NamedTempFile::new_in(dir)?;
        serde_json::to_writer(std::io::BufWriter::new(file.as_file_mut()), &self)?;
        file.persist(path).map_err(|e| e.error)?;
        Ok(())
    }
}

/// Where the index of the workspace at `root` lives: the user's cache folder
/// (`$XDG_CACHE_HOME/testgrid/index/`, else `~/.cache/testgrid/index/`), one file per workspace
/// path; `None` without a home.
pub fn path_for(root: &Path) -> Option<std::path::PathBuf> {
    let key = tree::digest_of(root.as_os_str().as_encoded_bytes()).hash;
    Some(crate::settings::user_cache()?.join("index").join(format!("{}.json", &key[..32])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_stamp_or_a_racy_one_is_not_trusted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("f");
        std::fs::write(&file, "x").expect("write");
        let stamp = Stamp::of(&std::fs::metadata(&file).expect("stat"));
        let digest = tree::digest_of(b"x");
        let mut index = Index::default();
        index.put("f".into(), stamp, &digest);
        let path = dir.path().join("index.json");
        index.save(&path).expect("saved");
        // Written within a second of the file's change: racy, hashed again.
        assert_eq!(Index::load(&path).get("f", &stamp), None);
        let old = Stamp { mtime_ns: 1, ..stamp };
        let mut index = Index::default();
        index.put("f".into(), old, &digest);
        index.save(&path).expect("saved");
        let loaded = Index::load(&path);
        assert_eq!(loaded.get("f", &old), Some(digest));
        assert_eq!(loaded.get("f", &Stamp { size: 2, ..old }), None, "another size");
        assert_eq!(loaded.get("g", &old), None);
        std::fs::write(&path, "not json").expect("write");
        assert_eq!(Index::load(&path).get("f", &old), None, "a broken index is an empty one");
    }
}
