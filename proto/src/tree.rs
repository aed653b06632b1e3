//! Workspace trees as the protocol carries them: blob digests (BLAKE3, see
//! `docs/architecture.md` for why), canonical `Directory` manifests, and the checks every program
//! applies to a manifest it did not build (the coordinator to what a CLI uploads, a worker before
//! it writes anything to disk). One rule set, here, so that what the CLI builds is exactly what
//! the others accept.

use crate::v1::{Digest, Directory};

/// Hex characters of a digest's hash.
pub const HASH_HEX_LEN: usize = 64;

/// The digest of `bytes`.
pub fn digest_of(bytes: &[u8]) -> Digest {
    Digest { hash: blake3::hash(bytes).to_hex().to_string(), size_bytes: bytes.len() as u64 }
}

/// A digest computed over bytes that come in pieces (a file read in chunks, an upload).
#[derive(Default)]
pub struct Hasher {
    inner: blake3::Hasher,
    size: u64,
}

impl Hasher {
    pub fn update(&mut self, bytes: &[u8]) {
        self.inner.update(bytes);
        self.size += bytes.len() as u64;
    }

    /// Bytes seen so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn finish(&self) -> Digest {
        Digest { hash: self.inner.finalize().to_hex().to_string(), size_bytes: self.size }
    }
}

/// Whether `digest` is well formed: 64 lowercase hex characters. Its `hash` is then safe as a
/// file name.
pub fn check_digest(digest: &Digest) -> Result<(), String> {
    let hash = &digest.hash;
    if hash.len() == HASH_HEX_LEN && hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        Ok(())
    } else {
        Err(format!("a malformed digest {:?} (want {HASH_HEX_LEN} lowercase hex characters)", shorten(hash)))
    }
}

/// The longest name a manifest entry may have (as Linux's `NAME_MAX`).
pub const MAX_NAME_BYTES: usize = 255;

/// The digest of everything `reader` gives, read in pieces (never whole in memory).
pub fn digest_of_reader(mut reader: impl std::io::Read) -> std::io::Result<Digest> {
    let mut hasher = Hasher::default();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(hasher.finish());
        }
        hasher.update(&buf[..n]);
    }
}

/// Whether `name` can be one path component of a tree: not empty, not `.` or `..`, no `/` or
/// NUL, at most [`MAX_NAME_BYTES`].
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(format!("a bad name {:?} in a manifest", shorten(name)));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!("a name of {} bytes in a manifest (at most {MAX_NAME_BYTES})", name.len()));
    }
    if name.contains('/') || name.contains('\0') {
        return Err(format!("a name with `/` or NUL in a manifest: {:?}", shorten(name)));
    }
    Ok(())
}

/// The longest symlink target a manifest may hold (as Linux's `PATH_MAX`).
pub const MAX_TARGET_BYTES: usize = 4096;

/// Whether a symlink `target`, in a directory `depth` levels below the tree's root, is relative
/// and stays inside the tree by its components. A chain of links can still lead out (a link to
/// `..` named in another link's target): the materialiser checks each link it made, resolved,
/// before a test runs.
pub fn check_symlink(depth: usize, target: &str) -> Result<(), String> {
    let refuse = |why: &str| Err(format!("a symlink to {:?} {why}", shorten(target)));
    if target.is_empty() || target.len() > MAX_TARGET_BYTES || target.contains('\0') {
        return refuse("is not a usable target");
    }
    if target.starts_with('/') {
        return refuse("is absolute (a tree's links stay inside it)");
    }
    let mut level = depth as i64;
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => level -= 1,
            _ => level += 1,
        }
        if level < 0 {
            return refuse("leads outside the tree");
        }
    }
    Ok(())
}

/// Whether `dir` is a canonical manifest for a directory `depth` levels below the root: every
/// name valid and unique across files, directories and symlinks, each list sorted by name,
/// every digest well formed, every symlink inside the tree.
pub fn check_directory(dir: &Directory, depth: usize) -> Result<(), String> {
    let mut names: Vec<&str> = Vec::with_capacity(dir.files.len() + dir.directories.len() + dir.symlinks.len());
    for (kind, list) in [
        ("files", dir.files.iter().map(|f| f.name.as_str()).collect::<Vec<_>>()),
        ("directories", dir.directories.iter().map(|d| d.name.as_str()).collect()),
        ("symlinks", dir.symlinks.iter().map(|s| s.name.as_str()).collect()),
    ] {
        for name in &list {
            check_name(name)?;
        }
        if list.windows(2).any(|w| w[0] >= w[1]) {
            return Err(format!("a manifest whose {kind} are not sorted by name, or repeat one"));
        }
        names.extend(list);
    }
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("a manifest naming {:?} twice", shorten(w[0])));
    }
    for file in &dir.files {
        check_digest(file.digest.as_ref().ok_or("a file without a digest in a manifest")?)?;
    }
    for sub in &dir.directories {
        check_digest(sub.digest.as_ref().ok_or("a directory without a digest in a manifest")?)?;
    }
    for link in &dir.symlinks {
        check_symlink(depth, &link.target)?;
    }
    Ok(())
}

/// A hostile value, cut for a message.
/// The first 80 characters of `text`, with `…` when there were more: how a value that came
/// from elsewhere is quoted in a message.
pub fn shorten(text: &str) -> String {
    let mut cut: String = text.chars().take(80).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{DirectoryNode, FileNode, SymlinkNode};

    fn file(name: &str) -> FileNode {
        FileNode { name: name.into(), digest: Some(digest_of(name.as_bytes())), is_executable: false }
    }

    #[test]
    fn digests_are_blake3_hex_and_streaming_agrees() {
        let d = digest_of(b"hello");
        assert_eq!(d.hash, "ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f");
        assert_eq!(d.size_bytes, 5);
        let mut h = Hasher::default();
        h.update(b"he");
        h.update(b"llo");
        assert_eq!(h.finish(), d);
        assert!(check_digest(&d).is_ok());
        for bad in
            ["", "EA8F163DB38682925E4491C5E58D4BB3506EF8C14EB78A86E908C5624A67200F", "../etc/passwd", &"a".repeat(65)]
        {
            assert!(check_digest(&Digest { hash: bad.into(), size_bytes: 0 }).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_are_one_component() {
        for good in ["a", "a b", "ünï", ".hidden", "..x"] {
            assert!(check_name(good).is_ok(), "{good:?}");
        }
        for bad in ["", ".", "..", "a/b", "/", "a\0b", &"x".repeat(256)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn symlinks_stay_inside_the_tree() {
        assert!(check_symlink(0, "a/b").is_ok());
        assert!(check_symlink(1, "../x").is_ok());
        assert!(check_symlink(0, "a/../b").is_ok());
        assert!(check_symlink(0, "../x").is_err());
        assert!(check_symlink(2, "../../../x").is_err());
        assert!(check_symlink(1, "a/../../../x").is_err());
        assert!(check_symlink(3, "/etc/passwd").is_err());
        assert!(check_symlink(0, "").is_err());
    }

    #[test]
    fn manifests_must_be_canonical() {
        let dir = |files: Vec<FileNode>, dirs: Vec<&str>, links: Vec<(&str, &str)>| Directory {
            files,
            directories: dirs
                .into_iter()
                .map(|n| DirectoryNode { name: n.into(), digest: Some(digest_of(n.as_bytes())) })
                .collect(),
            symlinks: links.into_iter().map(|(n, t)| SymlinkNode { name: n.into(), target: t.into() }).collect(),
        };
        assert!(check_directory(&dir(vec![file("a"), file("b")], vec!["c"], vec![("d", "a")]), 0).is_ok());
        assert!(check_directory(&dir(vec![file("b"), file("a")], vec![], vec![]), 0).is_err(), "unsorted");
        assert!(check_directory(&dir(vec![file("a"), file("a")], vec![], vec![]), 0).is_err(), "repeated");
        assert!(check_directory(&dir(vec![file("a")], vec!["a"], vec![]), 0).is_err(), "a file and a dir");
        assert!(check_directory(&dir(vec![file("..")], vec![], vec![]), 0).is_err(), "traversal");
        assert!(check_directory(&dir(vec![], vec![], vec![("l", "../../x")]), 1).is_err(), "outside link");
        let mut no_digest = file("a");
        no_digest.digest = None;
        assert!(check_directory(&dir(vec![no_digest], vec![], vec![]), 0).is_err());
    }
}
