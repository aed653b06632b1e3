//! Rust test units, the contract between the CLI that lists them and the worker that runs them.
//!
//! A unit is `SRC::NAME`: the source file of the test target, relative to the workspace root
//! (`src/lib.rs`, `tests/api.rs`, `crates/x/src/lib.rs`), and the test's path in it. Both sides
//! build the same tree with `cargo test --no-run --message-format=json` and read its artifacts
//! ([`binary_from_message`]) and each binary's `--list --format terse` ([`parse_list`]) the
//! same way, so that a name the CLI submits is one the worker finds. Running cargo is each side's
//! own business (the CLI shows its progress, a worker bounds and kills it).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// One test binary of a build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binary {
    /// nextest's name for it: `pkg` (library), `pkg::api` (integration test), `pkg::bin/x`.
    pub id: String,
    /// The target's source file, relative to the workspace root.
    pub src: String,
    pub exe: PathBuf,
    /// The package's folder: tests run there, as under `cargo test`.
    pub manifest_dir: PathBuf,
    pub package: String,
    pub version: String,
    pub target: String,
}

impl Binary {
    /// The variables `cargo test` sets for a test process. `library_path` is the inherited
    /// `LD_LIBRARY_PATH`, which the binary's own folder goes in front of.
    pub fn env(&self, library_path: Option<&str>) -> Vec<(String, String)> {
        let mut env = vec![
            ("CARGO_MANIFEST_DIR".to_string(), self.manifest_dir.display().to_string()),
            ("CARGO_PKG_NAME".to_string(), self.package.clone()),
            ("CARGO_PKG_VERSION".to_string(), self.version.clone()),
            ("CARGO_CRATE_NAME".to_string(), self.target.replace('-', "_")),
        ];
        // Dynamic libraries built alongside (dylib crates) are found next to the binary.
        if let Some(deps) = self.exe.parent() {
            let mut path = deps.display().to_string();
            if let Some(existing) = library_path.filter(|p| !p.is_empty()) {
                path = format!("{path}:{existing}");
            }
            env.push(("LD_LIBRARY_PATH".to_string(), path));
        }
        env
    }
}

/// The arguments of the build both sides run, before the session's own.
pub const BUILD_ARGS: [&str; 3] = ["test", "--no-run", "--message-format=json-render-diagnostics"];

#[derive(Deserialize)]
struct Message {
    reason: String,
    #[serde(default)]
    package_id: String,
    #[serde(default)]
    manifest_path: Option<PathBuf>,
    target: Option<Target>,
    profile: Option<Profile>,
    executable: Option<PathBuf>,
}

#[derive(Deserialize)]
struct Target {
    kind: Vec<String>,
    name: String,
    src_path: PathBuf,
}

#[derive(Deserialize)]
struct Profile {
    test: bool,
}

/// The test binary a line of cargo's JSON output announces, if it announces one.
pub fn binary_from_message(root: &Path, line: &str) -> Option<Binary> {
    let message: Message = serde_json::from_str(line).ok()?;
    if message.reason != "compiler-artifact" || !message.profile.is_some_and(|p| p.test) {
        return None;
    }
    let exe = message.executable?;
    let target = message.target?;
    let manifest_dir = message.manifest_path?.parent()?.to_path_buf();
    let src = match target.src_path.strip_prefix(root) {
        Ok(rel) => rel.to_str()?.to_string(),
        // A path dependency outside the workspace: name it by its absolute path.
        Err(_) => target.src_path.to_str()?.to_string(),
    };
    let (package, version) = package_of(&message.package_id);
    let kind = target.kind.first().map(String::as_str).unwrap_or("lib");
    let id = match kind {
        "lib" | "rlib" | "dylib" | "cdylib" | "staticlib" | "proc-macro" => package.clone(),
        "test" => format!("{package}::{}", target.name),
        other => format!("{package}::{other}/{}", target.name),
    };
    Some(Binary { id, src, exe, manifest_dir, package, version, target: target.name })
}

/// Name and version from a package id: `path+file:///p/foo#0.1.0`, `…#foo@0.1.0`, or the old
/// `foo 0.1.0 (path+file:///p/foo)`.
fn package_of(id: &str) -> (String, String) {
    if let Some((url, fragment)) = id.rsplit_once('#') {
        if let Some((name, version)) = fragment.split_once('@') {
            return (name.to_string(), version.to_string());
        }
        let name = url.trim_end_matches('/').rsplit('/').next().unwrap_or(url);
        return (name.to_string(), fragment.to_string());
    }
    let mut words = id.split_whitespace();
    let name = words.next().unwrap_or_default().to_string();
    let version = words.next().unwrap_or_default().to_string();
    (name, version)
}

/// The arguments that make a test binary list its tests (`ignored`: only its `#[ignore]` ones).
pub fn list_args(ignored: bool) -> Vec<&'static str> {
    let mut args = vec!["--list", "--format", "terse"];
    if ignored {
        args.push("--ignored");
    }
    args
}

/// Arguments for Rust test binaries (what the user typed after `--`), sorted as a grid runs
/// them: the selection (libtest's filters, `--skip`, `--exact`, which pick the tests when the
/// CLI lists them, so that what is deselected is never scheduled), which `#[ignore]` tests run,
/// and the rest, which every test's process gets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TestArgs {
    /// Filters, `--skip NAME`s and `--exact`, as libtest's `--list` takes them.
    pub selection: Vec<String>,
    /// `--ignored` (only them) or `--include-ignored` (them too).
    pub ignored: Option<Ignored>,
    /// Everything else (`--test-threads 1`, `--show-output`, `-Z unstable-options`).
    pub run: Vec<String>,
}

/// Which `#[ignore]` tests the arguments ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ignored {
    Only,
    All,
}

/// libtest's options that take a value (`--skip NAME` or `--skip=NAME`).
const VALUED: [&str; 7] = ["--skip", "--logfile", "--test-threads", "--color", "--format", "-Z", "--shuffle-seed"];
/// Options a grid sets itself on each test's run: given twice, libtest refuses to start.
const OWN: [&str; 3] = ["--nocapture", "--exact", "--list"];

impl TestArgs {
    /// Sort `args` (libtest's command line after `--`); the problem if one cannot be used.
    pub fn split(args: &[String]) -> Result<TestArgs, String> {
        let mut out = TestArgs::default();
        let mut rest = args.iter();
        while let Some(arg) = rest.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((name, value)) if name.starts_with('-') => (name, Some(value)),
                _ => (arg.as_str(), None),
            };
            if VALUED.contains(&name) {
                let value = match inline {
                    Some(value) => value.to_string(),
                    None => rest.next().ok_or_else(|| format!("`{name}` needs a value"))?.clone(),
                };
                let into = if name == "--skip" { &mut out.selection } else { &mut out.run };
                into.extend([name.to_string(), value]);
                continue;
            }
            match name {
                "--ignored" => out.ignored = Some(Ignored::Only),
                "--include-ignored" => out.ignored = Some(Ignored::All),
                "--exact" => out.selection.push(arg.clone()),
                "--list" => return Err("`--list` lists tests; use `testgrid list`".into()),
                "--bench" => return Err("`--bench` runs benchmarks, which testgrid does not schedule".into()),
                "--nocapture" | "--no-capture" => {
                    // Each test's output is captured by the worker already.
                }
                _ if !arg.starts_with('-') => out.selection.push(arg.clone()),
                _ => out.run.push(arg.clone()),
            }
        }
        debug_assert!(out.run.iter().all(|a| !OWN.contains(&a.as_str())));
        Ok(out)
    }
}

/// `name: test` lines of libtest's terse list (benchmarks are left out).
pub fn parse_list(text: &str) -> Vec<String> {
    text.lines().filter_map(|line| line.strip_suffix(": test")).map(str::to_string).collect()
}

/// A unit's source file and test name.
pub fn split_unit(unit: &str) -> Option<(&str, &str)> {
    unit.split_once("::").filter(|(src, name)| !src.is_empty() && !name.is_empty())
}

/// Which units of a build the given filters select: `paths` are files or folders relative to
/// the root (`.` for all), `cases` are `(SRC, NAME)` pairs where NAME may be a module prefix.
pub fn select(units: &[(String, String)], paths: &[String], cases: &[(String, String)]) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (src, name) in units {
        let by_path = paths.iter().any(|p| p == "." || p == src || src.starts_with(&format!("{p}/")));
        let by_case = cases
            .iter()
            .any(|(file, prefix)| file == src && (name == prefix || name.starts_with(&format!("{prefix}::"))));
        let unit = format!("{src}::{name}");
        if (by_path || by_case) && seen.insert(unit.clone()) {
            out.push(unit);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_ids_old_and_new() {
        assert_eq!(package_of("path+file:///w/foo#0.1.0"), ("foo".into(), "0.1.0".into()));
        assert_eq!(package_of("path+file:///w/crates/x#bar@1.2.3"), ("bar".into(), "1.2.3".into()));
        assert_eq!(
            package_of("registry+https://github.com/rust-lang/crates.io-index#semver@1.0.26"),
            ("semver".into(), "1.0.26".into())
        );
        assert_eq!(package_of("foo 0.1.0 (path+file:///w/foo)"), ("foo".into(), "0.1.0".into()));
    }

    #[test]
    fn test_args_split_into_selection_ignored_and_the_rest() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let split = TestArgs::split(&args(&[
            "parser",
            "--skip",
            "slow",
            "--skip=io::",
            "--exact",
            "--include-ignored",
            "--test-threads",
            "1",
            "--show-output",
            "--nocapture",
            "--color=never",
        ]))
        .expect("valid");
        assert_eq!(split.selection, args(&["parser", "--skip", "slow", "--skip", "io::", "--exact"]));
        assert_eq!(split.ignored, Some(Ignored::All));
        assert_eq!(split.run, args(&["--test-threads", "1", "--show-output", "--color", "never"]));
        assert_eq!(TestArgs::split(&args(&["--ignored"])).expect("valid").ignored, Some(Ignored::Only));
        assert!(TestArgs::split(&args(&["--skip"])).expect_err("no value").contains("--skip"));
        assert!(TestArgs::split(&args(&["--list"])).is_err());
    }

    #[test]
    fn terse_list_keeps_tests_only() {
        let text = "tests::a: test\ntests::b::c: test\nbench_x: benchmark\n\n";
        assert_eq!(parse_list(text), vec!["tests::a".to_string(), "tests::b::c".to_string()]);
        assert_eq!(list_args(true), vec!["--list", "--format", "terse", "--ignored"]);
    }

    #[test]
    fn artifacts_become_binaries_with_nextest_ids() {
        let root = Path::new("/w");
        let line = |kind: &str, name: &str, src: &str, test: bool, exe: Option<&str>| {
            serde_json::json!({
                "reason": "compiler-artifact",
                "package_id": "path+file:///w#foo@0.1.0",
                "manifest_path": "/w/Cargo.toml",
                "target": { "kind": [kind], "name": name, "src_path": src },
                "profile": { "test": test },
                "executable": exe,
            })
            .to_string()
        };
        let lib =
            binary_from_message(root, &line("lib", "foo", "/w/src/lib.rs", true, Some("/w/target/debug/deps/foo-1")));
        let lib = lib.expect("a test binary");
        assert_eq!((lib.id.as_str(), lib.src.as_str()), ("foo", "src/lib.rs"));
        assert_eq!(lib.manifest_dir, Path::new("/w"));
        let api = binary_from_message(root, &line("test", "api", "/w/tests/api.rs", true, Some("/w/t/api-2")));
        assert_eq!(api.expect("test").id, "foo::api");
        let bin = binary_from_message(root, &line("bin", "cli", "/w/src/main.rs", true, Some("/w/t/cli-3")));
        assert_eq!(bin.expect("bin").id, "foo::bin/cli");
        assert!(
            binary_from_message(root, &line("lib", "foo", "/w/src/lib.rs", false, Some("/w/t/libfoo.rlib"))).is_none()
        );
        assert!(binary_from_message(root, &line("lib", "foo", "/w/src/lib.rs", true, None)).is_none());
        assert!(binary_from_message(root, "not json").is_none());
    }

    #[test]
    fn the_library_path_puts_the_binarys_folder_first() {
        let binary = Binary {
            id: "foo".into(),
            src: "src/lib.rs".into(),
            exe: "/w/target/debug/deps/foo-1".into(),
            manifest_dir: "/w".into(),
            package: "foo".into(),
            version: "0.1.0".into(),
            target: "foo-bar".into(),
        };
        let env = binary.env(Some("/usr/lib"));
        assert!(env.contains(&("CARGO_CRATE_NAME".into(), "foo_bar".into())));
        assert!(env.contains(&("LD_LIBRARY_PATH".into(), "/w/target/debug/deps:/usr/lib".into())));
    }

    #[test]
    fn selection_by_folder_file_and_case() {
        let units: Vec<(String, String)> = [
            ("src/lib.rs", "tests::a"),
            ("src/lib.rs", "parse::tests::b"),
            ("tests/api.rs", "create"),
            ("crates/x/src/lib.rs", "t"),
        ]
        .iter()
        .map(|(s, n)| (s.to_string(), n.to_string()))
        .collect();
        assert_eq!(select(&units, &[".".into()], &[]).len(), 4);
        assert_eq!(select(&units, &["crates".into()], &[]), vec!["crates/x/src/lib.rs::t".to_string()]);
        assert_eq!(select(&units, &["tests/api.rs".into()], &[]), vec!["tests/api.rs::create".to_string()]);
        assert_eq!(
            select(&units, &[], &[("src/lib.rs".into(), "parse".into())]),
            vec!["src/lib.rs::parse::tests::b".to_string()]
        );
        assert!(select(&units, &["src/li".into()], &[]).is_empty(), "a prefix of a name is not a folder");
        assert_eq!(split_unit("src/lib.rs::a::b"), Some(("src/lib.rs", "a::b")));
        assert_eq!(split_unit("src/lib.rs"), None);
    }
}
