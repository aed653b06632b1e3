//! A session's setup command in its typed, validated form ([`Setup`]), shared by the CLI that
//! builds it, the coordinator that checks it at `Submit` and the worker that runs it; and the
//! key under which a worker keeps what it produced ([`Setup::reuse_key`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::v1 as pb;

/// The most bytes of the command.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;
/// The most bytes of one path (Linux's `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;
/// The most bytes of the whole setup: it travels in every assignment of its session.
pub const MAX_TOTAL_BYTES: usize = 128 * 1024;
/// The most key files, and the most output folders.
pub const MAX_PATHS: usize = 64;

/// What a session runs once on each worker before its first test there.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Setup {
    /// Run with `sh -c`.
    pub command: String,
    /// The folder it runs in, relative to the workspace root (empty: the root).
    pub dir: String,
    /// Files whose contents decide what it produces; reuse needs at least one.
    pub key_files: Vec<String>,
    /// Folders it produces, kept for reuse.
    pub outputs: Vec<String>,
    /// 0: the worker's default.
    pub timeout_ms: u64,
}

/// A setup message that cannot be used; names the field.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {problem}")]
pub struct BadSetup {
    pub field: &'static str,
    pub problem: String,
}

fn bad(field: &'static str, problem: impl Into<String>) -> BadSetup {
    BadSetup { field, problem: problem.into() }
}

impl Setup {
    /// Whether what it produces may be kept and reused: it names its key files. (With no
    /// outputs, what is reused is the setup's effect outside the tree, such as packages it
    /// installed for the worker's Python.)
    pub fn reusable(&self) -> bool {
        !self.key_files.is_empty()
    }

    /// The key of what this setup produces: its command, folder, outputs, the session's
    /// environment and each key file's contents (`None`: the file is missing), so that a
    /// change to any of them runs it again.
    pub fn reuse_key(&self, env: &BTreeMap<String, String>, keys: &[Option<pb::Digest>]) -> String {
        let mut h = blake3::Hasher::new();
        // Every part is length-prefixed, so that no two different setups hash alike.
        let mut part = |bytes: &[u8]| {
            h.update(&(bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        part(b"testgrid setup v1");
        part(self.command.as_bytes());
        part(self.dir.as_bytes());
        for output in &self.outputs {
            part(output.as_bytes());
        }
        for (name, value) in env {
            part(name.as_bytes());
            part(value.as_bytes());
        }
        for (file, digest) in self.key_files.iter().zip(keys) {
            part(file.as_bytes());
            match digest {
                Some(d) => part(d.hash.as_bytes()),
                None => part(b"-"),
            }
        }
        h.finalize().to_hex().to_string()
    }
}

impl TryFrom<&pb::Setup> for Setup {
    type Error = BadSetup;

    fn try_from(s: &pb::Setup) -> Result<Self, BadSetup> {
        check_text("setup.command", &s.command)?;
        if s.command.trim().is_empty() {
            return Err(bad("setup.command", "is empty"));
        }
        // `.` is the root, as a runner's project folder says it.
        let dir = if s.dir == "." { String::new() } else { s.dir.clone() };
        if !dir.is_empty() {
            check_path("setup.dir", &dir)?;
        }
        for (field, paths) in [("setup.key_files", &s.key_files), ("setup.outputs", &s.outputs)] {
            if paths.len() > MAX_PATHS {
                return Err(bad(field, format!("{} paths is more than the limit of {MAX_PATHS}", paths.len())));
            }
            for path in paths {
                check_path(field, path)?;
            }
        }
        let total = s.command.len() + dir.len() + s.key_files.iter().chain(&s.outputs).map(String::len).sum::<usize>();
        if total > MAX_TOTAL_BYTES {
            return Err(bad("setup", format!("{total} bytes in all is more than the limit of {MAX_TOTAL_BYTES}")));
        }
        Ok(Setup {
            command: s.command.clone(),
            dir,
            key_files: s.key_files.clone(),
            outputs: s.outputs.clone(),
            timeout_ms: s.timeout_ms,
        })
    }
}

impl From<&Setup> for pb::Setup {
    fn from(s: &Setup) -> Self {
        pb::Setup {
            command: s.command.clone(),
            dir: s.dir.clone(),
            key_files: s.key_files.clone(),
            outputs: s.outputs.clone(),
            timeout_ms: s.timeout_ms,
        }
    }
}

fn check_text(field: &'static str, text: &str) -> Result<(), BadSetup> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(bad(field, format!("{} bytes is more than the limit of {MAX_TEXT_BYTES}", text.len())));
    }
    if text.contains('\0') {
        return Err(bad(field, "contains a NUL byte"));
    }
    Ok(())
}

/// A path inside the workspace: relative, forward slashes, every part a usable name (no `.`,
/// `..` or empty part). Never echoed whole: it came from a client.
fn check_path(field: &'static str, path: &str) -> Result<(), BadSetup> {
    if path.len() > MAX_PATH_BYTES {
        return Err(bad(field, format!("a path of {} bytes is more than the limit of {MAX_PATH_BYTES}", path.len())));
    }
    check_text(field, path)?;
    for part in path.split('/') {
        if crate::tree::check_name(part).is_err() {
            return Err(bad(
                field,
                format!(
                    "`{}` is not a path inside the workspace (relative, `/` between parts, no `.`, `..` or empty part)",
                    crate::tree::shorten(path)
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(command: &str, dir: &str, keys: &[&str], outputs: &[&str]) -> pb::Setup {
        pb::Setup {
            command: command.into(),
            dir: dir.into(),
            key_files: keys.iter().map(|s| s.to_string()).collect(),
            outputs: outputs.iter().map(|s| s.to_string()).collect(),
            timeout_ms: 0,
        }
    }

    #[test]
    fn a_setup_survives_the_wire_and_paths_must_stay_inside() {
        let good = setup("npm ci", "web", &["web/package-lock.json"], &["web/node_modules"]);
        let typed = Setup::try_from(&good).expect("valid");
        assert_eq!(pb::Setup::from(&typed), good);
        assert!(typed.reusable());
        for (message, field) in [
            (setup("", "", &[], &[]), "setup.command"),
            (setup("x\0", "", &[], &[]), "setup.command"),
            (setup("x", "/abs", &[], &[]), "setup.dir"),
            (setup("x", "", &["../lock"], &[]), "setup.key_files"),
            (setup("x", "", &["a//b"], &[]), "setup.key_files"),
            (setup("x", "", &[], &["a/./b"]), "setup.outputs"),
            (setup("x", "", &[], &["a/"]), "setup.outputs"),
        ] {
            assert_eq!(Setup::try_from(&message).map_err(|e| e.field), Err(field), "{message:?}");
        }
        let many: Vec<String> = (0..=MAX_PATHS).map(|i| format!("f{i}")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(Setup::try_from(&setup("x", "", &refs, &[])).is_err());
        let long = "a/".repeat(MAX_PATH_BYTES / 2) + "b";
        assert_eq!(Setup::try_from(&setup("x", "", &[&long], &[])).map_err(|e| e.field), Err("setup.key_files"));
        // Each path within its limit, the whole over: it would travel in every assignment.
        let deep = vec!["p".repeat(200); 19].join("/");
        let many: Vec<String> = (0..MAX_PATHS).map(|i| format!("{i}/{deep}")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(Setup::try_from(&setup("x", "", &refs, &refs)).map_err(|e| e.field), Err("setup"));
    }

    #[test]
    fn the_reuse_key_changes_with_every_input() {
        let base = Setup::try_from(&setup("npm ci", "", &["lock"], &["node_modules"])).expect("valid");
        let env = BTreeMap::new();
        let d = |h: &str| Some(crate::tree::digest_of(h.as_bytes()));
        let key = base.reuse_key(&env, &[d("a")]);
        assert_eq!(key, base.reuse_key(&env, &[d("a")]));
        assert_ne!(key, base.reuse_key(&env, &[d("b")]));
        assert_ne!(key, base.reuse_key(&env, &[None]));
        let with_env = BTreeMap::from([("NODE_ENV".to_string(), "test".to_string())]);
        assert_ne!(key, base.reuse_key(&with_env, &[d("a")]));
        let other = Setup { command: "npm install".into(), ..base.clone() };
        assert_ne!(key, other.reuse_key(&env, &[d("a")]));
        let moved = Setup { outputs: vec!["vendor".into()], ..base };
        assert_ne!(key, moved.reuse_key(&env, &[d("a")]));
    }
}
