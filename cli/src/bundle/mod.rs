//! The workspace as a content-addressed tree: the files git would see (`.gitignore`,
//! `.git/info/exclude`, the global excludes, `.ignore`, and `.testgridignore`), each hashed, and a
//! canonical `Directory` manifest per folder, so that the same tree always has the same root
//! digest ([`build`]). A local index spares re-hashing files whose size, times and inode did not
//! change ([`index`]); hashing runs on every core. [`upload`] sends a grid only the blobs it
//! lacks.
//!
//! It must not talk to a grid (that is `upload`'s) or know any framework.

pub mod index;
pub mod upload;

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use testgrid_proto as pb;
use testgrid_proto::tree;

use crate::error::Error;

/// A lock that a panicking walker thread did not spoil (what it holds is still whole).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The name of testgrid's own ignore file (gitignore syntax), beside `.gitignore`.
pub const IGNORE_FILE: &str = ".testgridignore";

/// How big a workspace may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Files (symlinks included).
    pub max_files: u64,
    /// Bytes of all files together.
    pub max_bytes: u64,
    /// Bytes of one file.
    pub max_file_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_files: 200_000, max_bytes: 8 << 30, max_file_bytes: 1 << 30 }
    }
}

/// Where a blob's bytes are.
#[derive(Clone, Debug)]
pub enum Source {
    /// A workspace file (re-read, and checked against its digest, when uploaded).
    File(PathBuf),
    /// A manifest, encoded.
    Bytes(Vec<u8>),
}

/// A workspace's tree: its root digest and where every blob of it is.
#[derive(Debug)]
pub struct Bundle {
    pub root: pb::Digest,
    /// Every blob the tree names (files and manifests), by hash, each once (shared with the
    /// upload's tasks).
    pub blobs: std::sync::Arc<HashMap<String, (pb::Digest, Source)>>,
    pub stats: Stats,
    /// Those of the files asked after ([`build`]'s `expected`) that the tree does not hold.
    pub left_out: Vec<String>,
}

/// How far building and sending a bundle has gone, for a progress line.
#[derive(Debug, Default)]
pub struct Progress {
    /// Entries seen and their bytes.
    pub files: AtomicU64,
    pub bytes: AtomicU64,
    /// Bytes hashed (files the index did not know).
    pub hashed_bytes: AtomicU64,
    /// Bytes the grid lacks, and those sent so far.
    pub to_send: AtomicU64,
    pub sent: AtomicU64,
}

/// What building a bundle took.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    pub files: u64,
    pub bytes: u64,
    /// Files hashed (the others' digests came from the index).
    pub hashed: u64,
    pub hashed_bytes: u64,
    pub directories: u64,
    pub millis: u64,
}

/// One entry of the walk.
#[derive(Debug)]
enum Found {
    File { digest: pb::Digest, executable: bool },
    Symlink { target: String },
}

/// One kind of entry the walk left out: how many, and the first one met, told once at the end.
#[derive(Debug, Default)]
struct LeftOut {
    count: usize,
    example: Option<String>,
}

impl LeftOut {
    fn add(&mut self, example: impl FnOnce() -> String) {
        self.count += 1;
        if self.example.is_none() {
            self.example = Some(example());
        }
    }

    /// `left out 2 symlinks leading outside the workspace, e.g. a -> /etc`, when there were any.
    fn warn(self, singular: &str, plural: &str) {
        if let Some(example) = self.example {
            let what = if self.count == 1 { singular } else { plural };
            err!("testgrid: warning: left out {} {what}, e.g. {example}", self.count);
        }
    }
}

/// Build the tree of the workspace at `root`, reusing and then updating the digests in
/// `index` (when given). The folders `leave_out` (testgrid's own output, such as the artifacts
/// folder) are not sent. Of the files `expected` (relative paths), those the tree does not hold
/// (ignored) are named in [`Bundle::left_out`].
pub fn build(
    root: &Path,
    limits: &Limits,
    index: Option<&Path>,
    leave_out: Vec<PathBuf>,
    expected: &[String],
    progress: &Progress,
) -> Result<Bundle, Error> {
    let started = Instant::now();
    let known = index.map(index::Index::load).unwrap_or_default();
    let found: Mutex<Vec<(String, Found)>> = Mutex::new(Vec::new());
    let special = Mutex::new(LeftOut::default());
    let outside_links = Mutex::new(LeftOut::default());
    let problem: Mutex<Option<Error>> = Mutex::new(None);
    let next_index = index::Index::default().shared();
    let hashed = std::sync::atomic::AtomicU64::new(0);
    let (counted, total, hashed_bytes) = (&progress.files, &progress.bytes, &progress.hashed_bytes);

    let walker = ignore::WalkBuilder::new(root)
        .hidden(false)
        .git_ignore(true)
        .git_exclude(true)
        .git_global(true)
        .ignore(true)
        .require_git(false)
        .add_custom_ignore_filename(IGNORE_FILE)
        .follow_links(false)
        .filter_entry(move |e| e.file_name() != ".git" && !leave_out.iter().any(|p| p == e.path()))
        .threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
        .build_parallel();
    walker.run(|| {
        Box::new(|entry| {
            use ignore::WalkState;
            let fail = |e: Error| {
                lock(&problem).get_or_insert(e);
                WalkState::Quit
            };
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => return fail(Error::BundleWalk { problem: e.to_string() }),
            };
            let path = entry.path();
            if path == root {
                return WalkState::Continue;
            }
            let Some(kind) = entry.file_type() else { return WalkState::Continue };
            if kind.is_dir() {
                return WalkState::Continue;
            }
            let rel = match path.strip_prefix(root).ok().and_then(Path::to_str) {
                Some(rel) => rel.to_string(),
                None => return fail(Error::NotUtf8 { path: path.to_path_buf() }),
            };
            let n = counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            if n > limits.max_files {
                return fail(Error::BundleTooManyFiles { limit: limits.max_files });
            }
            let meta = match std::fs::symlink_metadata(path) {
                Ok(meta) => meta,
                Err(e) => return fail(Error::BundleRead { path: path.to_path_buf(), source: e }),
            };
            if kind.is_symlink() {
                let target = match std::fs::read_link(path) {
                    Ok(t) => t,
                    Err(e) => return fail(Error::BundleRead { path: path.to_path_buf(), source: e }),
                };
                let depth = rel.matches('/').count();
                match target.to_str() {
                    Some(t) if tree::check_symlink(depth, t).is_ok() => {
                        lock(&found).push((rel, Found::Symlink { target: t.to_string() }));
                    }
                    _ => lock(&outside_links).add(|| format!("{rel} -> {}", target.display())),
                }
                return WalkState::Continue;
            }
            if !kind.is_file() {
                lock(&special).add(|| rel);
                return WalkState::Continue;
            }
            let size = meta.len();
            if size > limits.max_file_bytes {
                return fail(Error::BundleFileTooLarge { path: rel, size, limit: limits.max_file_bytes });
            }
            if total.fetch_add(size, std::sync::atomic::Ordering::Relaxed) + size > limits.max_bytes {
                return fail(Error::BundleTooLarge { limit: limits.max_bytes });
            }
            let stamp = index::Stamp::of(&meta);
            let digest = match known.get(&rel, &stamp) {
                Some(digest) => digest,
                None => match hash_file(path) {
                    Ok(digest) => {
                        hashed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        hashed_bytes.fetch_add(digest.size_bytes, std::sync::atomic::Ordering::Relaxed);
                        digest
                    }
                    Err(e) => return fail(Error::BundleRead { path: path.to_path_buf(), source: e }),
                },
            };
            lock(&next_index).put(rel.clone(), stamp, &digest);
            let executable = meta.permissions().mode() & 0o111 != 0;
            lock(&found).push((rel, Found::File { digest, executable }));
            WalkState::Continue
        })
    });
    if let Some(e) = lock(&problem).take() {
        return Err(e);
    }
    let into = |m: Mutex<LeftOut>| m.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    into(special).warn("special file (socket, FIFO, device)", "special files (sockets, FIFOs, devices)");
    into(outside_links).warn("symlink leading outside the workspace", "symlinks leading outside the workspace");
    let found = found.into_inner().unwrap_or_else(|p| p.into_inner());
    let left_out: Vec<String> = expected.iter().filter(|e| !found.iter().any(|(rel, _)| rel == *e)).cloned().collect();
    let mut bundle = assemble(root, found)?;
    bundle.left_out = left_out;
    bundle.stats.hashed = hashed.into_inner();
    bundle.stats.hashed_bytes = hashed_bytes.load(Ordering::Relaxed);
    if let Some(path) = index {
        let next = next_index.into_inner().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = next.save(path) {
            tracing::debug!("the workspace index was not saved: {e}");
        }
    }
    bundle.stats.millis = started.elapsed().as_millis() as u64;
    Ok(bundle)
}

/// A file's digest, read in chunks.
pub fn hash_file(path: &Path) -> std::io::Result<pb::Digest> {
    tree::digest_of_reader(std::fs::File::open(path)?)
}

/// The tree of the walk's entries (paths relative to `root`, `/`-separated): a manifest per
/// folder, bottom up.
fn assemble(root: &Path, found: Vec<(String, Found)>) -> Result<Bundle, Error> {
    #[derive(Default)]
    struct Folder {
        files: Vec<pb::FileNode>,
        symlinks: Vec<pb::SymlinkNode>,
        folders: Vec<String>,
    }
    let mut folders: BTreeMap<String, Folder> = BTreeMap::new();
    folders.insert(String::new(), Folder::default());
    let mut blobs = HashMap::new();
    let mut stats = Stats::default();
    for (rel, entry) in found {
        let (parent, name) = rel.rsplit_once('/').unwrap_or(("", &rel));
        tree::check_name(name).map_err(|problem| Error::BundleName { path: rel.clone(), problem })?;
        let folder = folders.entry(parent.to_string()).or_default();
        match entry {
            Found::File { digest, executable } => {
                stats.files += 1;
                stats.bytes += digest.size_bytes;
                blobs.entry(digest.hash.clone()).or_insert_with(|| (digest.clone(), Source::File(root.join(&rel))));
                folder.files.push(pb::FileNode {
                    name: name.to_string(),
                    digest: Some(digest),
                    is_executable: executable,
                });
            }
            Found::Symlink { target } => {
                stats.files += 1;
                folder.symlinks.push(pb::SymlinkNode { name: name.to_string(), target });
            }
        }
    }
    // Every folder up to the root exists, each named in its parent.
    let up = |path: &str| path.rsplit_once('/').map_or("", |(up, _)| up).to_string();
    for path in folders.keys().cloned().collect::<Vec<_>>() {
        let mut child = path;
        while !child.is_empty() {
            child = up(&child);
            folders.entry(child.clone()).or_default();
        }
    }
    for path in folders.keys().filter(|p| !p.is_empty()).cloned().collect::<Vec<_>>() {
        if let Some(parent) = folders.get_mut(&up(&path)) {
            parent.folders.push(path);
        }
    }
    // Deepest folders first, so that each one's digest is known when its parent is encoded.
    let mut order: Vec<String> = folders.keys().cloned().collect();
    order.sort_by_key(|f| std::cmp::Reverse(if f.is_empty() { 0 } else { f.matches('/').count() + 1 }));
    let mut digests: HashMap<String, pb::Digest> = HashMap::new();
    for path in order {
        let Some(folder) = folders.remove(&path) else { continue };
        let mut dir = pb::Directory {
            files: folder.files,
            directories: folder
                .folders
                .iter()
                .map(|sub| pb::DirectoryNode {
                    name: sub.rsplit_once('/').map_or(sub.as_str(), |(_, n)| n).to_string(),
                    digest: digests.get(sub).cloned(),
                })
                .collect(),
            symlinks: folder.symlinks,
        };
        dir.files.sort_by(|a, b| a.name.cmp(&b.name));
        dir.directories.sort_by(|a, b| a.name.cmp(&b.name));
        dir.symlinks.sort_by(|a, b| a.name.cmp(&b.name));
        let bytes = prost::Message::encode_to_vec(&dir);
        let digest = tree::digest_of(&bytes);
        stats.directories += 1;
        blobs.entry(digest.hash.clone()).or_insert_with(|| (digest.clone(), Source::Bytes(bytes)));
        digests.insert(path, digest);
    }
    let root = digests.remove("").unwrap_or_else(|| tree::digest_of(&[]));
    Ok(Bundle { root, blobs: std::sync::Arc::new(blobs), stats, left_out: Vec::new() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    fn manifest(bundle: &Bundle, digest: &pb::Digest) -> pb::Directory {
        match &bundle.blobs[&digest.hash].1 {
            Source::Bytes(bytes) => prost::Message::decode(bytes.as_slice()).expect("a manifest"),
            other => panic!("not a manifest: {other:?}"),
        }
    }

    #[test]
    fn the_tree_is_what_git_sees_and_the_same_tree_has_the_same_digest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir(root.join(".git")).expect(".git");
        write(root, ".git/config", "[core]");
        write(root, ".gitignore", "build/\n*.log\n");
        write(root, IGNORE_FILE, "secret.txt\n");
        write(root, "src/a b.txt", "a");
        write(root, "src/ünï/c.txt", "c");
        write(root, "build/out.o", "ignored");
        write(root, "x.log", "ignored");
        write(root, "secret.txt", "ignored");
        write(root, "run.sh", "#!/bin/sh\n");
        std::fs::set_permissions(root.join("run.sh"), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::os::unix::fs::symlink("src/a b.txt", root.join("link")).expect("symlink");
        std::os::unix::fs::symlink("/etc/passwd", root.join("outside")).expect("symlink");

        let bundle = build(root, &Limits::default(), None, Vec::new(), &[], &Progress::default()).expect("a bundle");
        let top = manifest(&bundle, &bundle.root);
        let names = |d: &pb::Directory| {
            let mut n: Vec<String> = d.files.iter().map(|f| f.name.clone()).collect();
            n.extend(d.directories.iter().map(|d| format!("{}/", d.name)));
            n.extend(d.symlinks.iter().map(|s| format!("{} -> {}", s.name, s.target)));
            n
        };
        assert_eq!(names(&top), vec![".gitignore", IGNORE_FILE, "run.sh", "src/", "link -> src/a b.txt"]);
        assert!(top.files.iter().find(|f| f.name == "run.sh").expect("run.sh").is_executable);
        let src = manifest(&bundle, top.directories[0].digest.as_ref().expect("a digest"));
        assert_eq!(names(&src), vec!["a b.txt", "ünï/"]);
        for (depth, d) in [(0, &top), (1, &src)] {
            tree::check_directory(d, depth).expect("canonical");
        }
        assert_eq!(bundle.stats.files, 6, "five files and a symlink");

        // Built again, through an index, the digest is the same; an edit changes it.
        let index_dir = tempfile::tempdir().expect("tempdir");
        let index = index_dir.path().join("index.json");
        let again =
            build(root, &Limits::default(), Some(&index), Vec::new(), &[], &Progress::default()).expect("a bundle");
        assert_eq!(again.root, bundle.root);
        let third =
            build(root, &Limits::default(), Some(&index), Vec::new(), &[], &Progress::default()).expect("a bundle");
        assert_eq!(third.root, bundle.root);
        write(root, "src/a b.txt", "edited");
        let edited =
            build(root, &Limits::default(), Some(&index), Vec::new(), &[], &Progress::default()).expect("a bundle");
        assert_ne!(edited.root, bundle.root);
    }

    #[test]
    fn limits_are_errors_that_name_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        for i in 0..5 {
            write(dir.path(), &format!("f{i}"), "12345");
        }
        let files = Limits { max_files: 4, ..Limits::default() };
        assert!(matches!(
            build(dir.path(), &files, None, Vec::new(), &[], &Progress::default()),
            Err(Error::BundleTooManyFiles { limit: 4 })
        ));
        let bytes = Limits { max_bytes: 20, ..Limits::default() };
        assert!(matches!(
            build(dir.path(), &bytes, None, Vec::new(), &[], &Progress::default()),
            Err(Error::BundleTooLarge { limit: 20 })
        ));
        let one = Limits { max_file_bytes: 4, ..Limits::default() };
        assert!(matches!(
            build(dir.path(), &one, None, Vec::new(), &[], &Progress::default()),
            Err(Error::BundleFileTooLarge { size: 5, .. })
        ));
    }
}
