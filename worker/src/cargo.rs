//! Rust test suites, run the way nextest runs them: the test binaries are built once per session
//! (`cargo test --no-run`), each binary lists its tests (`--list --format terse`), and each test
//! runs in a process of its own (`BIN --exact NAME --nocapture`, in its package's folder).
//!
//! A test unit is `SRC::NAME`: the source file of the test target, relative to the workspace
//! root (`src/lib.rs`, `tests/api.rs`, `crates/x/src/lib.rs`), and the test's path in it. The
//! CLI builds and lists to find the units; each worker builds the same tree (a no-op for cargo
//! when it is already built) to find the binaries, once per session, shared by its slots.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Deserialize;
use testgrid_proto as pb;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use crate::executor::{Executor, GroupGuard, Job, ProcessExecutor, lock};

/// The session variable naming the folder (relative to the workspace root) cargo runs in.
pub const DIR_VAR: &str = "TESTGRID_CARGO_DIR";
/// How long a worker lets a session's build take.
pub const BUILD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30 * 60);
/// What a worker keeps of a failed build's messages (its tail).
const BUILD_LOG_LIMIT: usize = 256 * 1024;

/// The session variable with extra `cargo test` arguments (`--workspace --features x`).
pub const ARGS_VAR: &str = "TESTGRID_CARGO_ARGS";

/// One test binary of a build.
#[derive(Clone, Debug)]
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
    /// The variables `cargo test` sets for a test process.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("CARGO_MANIFEST_DIR".to_string(), self.manifest_dir.display().to_string()),
            ("CARGO_PKG_NAME".to_string(), self.package.clone()),
            ("CARGO_PKG_VERSION".to_string(), self.version.clone()),
            ("CARGO_CRATE_NAME".to_string(), self.target.replace('-', "_")),
        ];
        // Dynamic libraries built alongside (dylib crates) are found next to the binary.
        if let Some(deps) = self.exe.parent() {
            let mut path = deps.display().to_string();
            if let Ok(existing) = std::env::var("LD_LIBRARY_PATH")
                && !existing.is_empty()
            {
                path = format!("{path}:{existing}");
            }
            env.push(("LD_LIBRARY_PATH".to_string(), path));
        }
        env
    }
}

/// The test binaries of one `cargo test --no-run`.
#[derive(Clone, Debug, Default)]
pub struct Build {
    pub binaries: Vec<Binary>,
}

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

/// The extra arguments of a session (`TESTGRID_CARGO_ARGS`, shell words).
pub fn extra_args(text: &str) -> Result<Vec<String>, String> {
    shlex::split(text).ok_or_else(|| format!("{ARGS_VAR} `{text}` is not valid shell words (check its quotes)"))
}

/// Build the test binaries in `dir` and name them. With `show_progress`, cargo's own output goes
/// to this process's stderr (the CLI); otherwise its tail is in the error.
pub async fn build(
    root: &Path,
    dir: &Path,
    args: &[String],
    env: &BTreeMap<String, String>,
    show_progress: bool,
) -> Result<Build, String> {
    let mut cmd = tokio::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["test", "--no-run", "--message-format=json-render-diagnostics"])
        .args(args)
        .current_dir(dir)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(if show_progress { Stdio::inherit() } else { Stdio::piped() })
        .kill_on_drop(true);
    // On a worker, cargo and the compilers it starts are one process group, killed together if
    // the build is abandoned (cancel, timeout, worker exit). The CLI keeps it in the terminal's
    // group instead, so that Ctrl-C reaches cargo directly.
    if !show_progress {
        cmd.process_group(0);
    }
    let shown = format!("cargo test --no-run {}", args.join(" "));
    let mut child =
        cmd.spawn().map_err(|e| format!("cannot start `{shown}` in {}: {e} (is cargo on the PATH?)", dir.display()))?;
    let _group = if show_progress { None } else { child.id().map(|pid| GroupGuard::new(pid as i32)) };
    let stdout = child.stdout.take().ok_or("cargo's output vanished")?;
    let stderr = child.stderr.take();
    let errors = tokio::spawn(async move {
        let mut tail = crate::output::Capture::new(BUILD_LOG_LIMIT);
        if let Some(mut stderr) = stderr {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                tail.push(&buf[..n]);
            }
        }
        tail.finish().0
    });
    let mut build = Build::default();
    let work = async {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let Ok(message) = serde_json::from_str::<Message>(&line) else { continue };
            if let Some(binary) = binary_of(root, message) {
                build.binaries.push(binary);
            }
        }
        child.wait().await
    };
    let status = if show_progress {
        work.await
    } else {
        tokio::time::timeout(BUILD_TIMEOUT, work).await.map_err(|_| {
            format!(
                "`{shown}` in {} took more than {}; it was stopped",
                dir.display(),
                humantime::format_duration(BUILD_TIMEOUT)
            )
        })?
    };
    let status = status.map_err(|e| format!("cannot wait for cargo: {e}"))?;
    let errors = errors.await.unwrap_or_default();
    if !status.success() {
        let text = String::from_utf8_lossy(&errors);
        let tail: Vec<&str> = text.lines().rev().take(60).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!(
            "`{shown}` failed in {} ({status}); fix the build first\n{}",
            dir.display(),
            tail.join("\n")
        ));
    }
    build.binaries.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(build)
}

fn binary_of(root: &Path, message: Message) -> Option<Binary> {
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

/// The tests a binary has (`ignored`: only its `#[ignore]` ones).
pub async fn list(binary: &Binary, env: &BTreeMap<String, String>, ignored: bool) -> Result<Vec<String>, String> {
    let mut cmd = tokio::process::Command::new(&binary.exe);
    cmd.args(["--list", "--format", "terse"]);
    if ignored {
        cmd.arg("--ignored");
    }
    let output = cmd
        .current_dir(&binary.manifest_dir)
        .envs(env)
        .envs(binary.env())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot list the tests of {}: {e}", binary.exe.display()))?;
    if !output.status.success() {
        return Err(format!(
            "`{} --list` failed ({}): {}",
            binary.exe.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(parse_list(&String::from_utf8_lossy(&output.stdout)))
}

/// `name: test` lines of libtest's terse list (benchmarks are left out).
fn parse_list(text: &str) -> Vec<String> {
    text.lines().filter_map(|line| line.strip_suffix(": test")).map(str::to_string).collect()
}

/// A unit's source file and test name.
pub fn split_unit(unit: &str) -> Option<(&str, &str)> {
    unit.split_once("::").filter(|(src, name)| !src.is_empty() && !name.is_empty())
}

/// A worker's view of one session's build.
struct SessionBuild {
    build: Build,
    /// Per binary (by index): all its tests and the ignored ones, listed on first use.
    lists: Vec<OnceCell<Result<Listing, String>>>,
}

/// A binary's tests, and which of them are `#[ignore]`d.
struct Listing {
    all: HashSet<String>,
    ignored: HashSet<String>,
}

type SharedBuild = Arc<OnceCell<Result<Arc<SessionBuild>, String>>>;

/// Runs `cargo` sessions: one process per test, from binaries built once per session.
pub struct CargoExecutor {
    pub process: Arc<ProcessExecutor>,
    builds: Mutex<Vec<(String, SharedBuild)>>,
}

/// Sessions whose builds a worker remembers (the newest ones).
const KEEP_BUILDS: usize = 8;

impl CargoExecutor {
    pub fn new(process: Arc<ProcessExecutor>) -> Self {
        CargoExecutor { process, builds: Mutex::new(Vec::new()) }
    }

    fn shared(&self, session: &str) -> SharedBuild {
        let mut builds = lock(&self.builds);
        if let Some(at) = builds.iter().position(|(s, _)| s == session) {
            // Most recently used last: the oldest go first.
            let entry = builds.remove(at);
            let shared = Arc::clone(&entry.1);
            builds.push(entry);
            return shared;
        }
        let shared: SharedBuild = Arc::new(OnceCell::new());
        builds.push((session.to_string(), Arc::clone(&shared)));
        if builds.len() > KEEP_BUILDS {
            builds.remove(0);
        }
        shared
    }

    async fn session_build(&self, job: &Job) -> Result<Arc<SessionBuild>, String> {
        let shared = self.shared(&job.assignment.session_id);
        let root = self.process.root.clone();
        shared
            .get_or_init(|| async move {
                let dir = root.join(job.env.get(DIR_VAR).map(String::as_str).unwrap_or("."));
                let args = extra_args(job.env.get(ARGS_VAR).map(String::as_str).unwrap_or(""))?;
                let build = build(&root, &dir, &args, &job.env, false).await?;
                let lists = build.binaries.iter().map(|_| OnceCell::new()).collect();
                Ok(Arc::new(SessionBuild { build, lists }))
            })
            .await
            .clone()
    }

    async fn run_test(&self, slot: u32, job: &Job, cancel: CancellationToken) -> Result<pb::TestReport, String> {
        let (src, name) = split_unit(&job.path)
            .ok_or_else(|| format!("`{}` is not a Rust test (SOURCE::NAME, as `testgrid run` lists them)", job.path))?;
        let session = tokio::select! {
            build = self.session_build(job) => build?,
            () = cancel.cancelled() => return Ok(cancelled()),
        };
        let index = session.build.binaries.iter().position(|b| b.src == src).ok_or_else(|| {
            format!(
                "no test binary built from {src} on this worker (is its tree the same as the one the session was \
                 submitted from?)"
            )
        })?;
        let binary = &session.build.binaries[index];
        let Listing { all, ignored } = session.lists[index]
            .get_or_init(|| async {
                let all = list(binary, &job.env, false).await?;
                let ignored = list(binary, &job.env, true).await?;
                Ok(Listing { all: all.into_iter().collect(), ignored: ignored.into_iter().collect() })
            })
            .await
            .as_ref()
            .map_err(Clone::clone)?;
        if !all.contains(name) {
            return Err(format!(
                "{} has no test named `{name}` (was it renamed since the session was submitted?)",
                binary.id
            ));
        }
        let started = Instant::now();
        if ignored.contains(name) {
            let mut report = pb::TestReport {
                outcome: pb::Outcome::Skipped as i32,
                message: "ignored".into(),
                ..Default::default()
            };
            report.cases.push(case_of(binary, name, &report, started));
            return Ok(report);
        }
        let argv = [binary.exe.display().to_string(), "--exact".into(), name.to_string(), "--nocapture".into()];
        let mut env = job.env.clone();
        env.extend(binary.env());
        let test = Job {
            command: shlex::try_join(argv.iter().map(String::as_str))
                .map_err(|e| format!("cannot quote the command of {name}: {e}"))?,
            env,
            dir: Some(binary.manifest_dir.clone()),
            ..job.clone()
        };
        let mut report = self.process.run(slot, &test, cancel).await;
        report.cases.push(case_of(binary, name, &report, started));
        Ok(report)
    }
}

fn cancelled() -> pb::TestReport {
    pb::TestReport { outcome: pb::Outcome::Cancelled as i32, message: "cancelled".into(), ..Default::default() }
}

/// The one case a test unit is, named as nextest's JUnit names it (binary id as the class).
fn case_of(binary: &Binary, name: &str, report: &pb::TestReport, started: Instant) -> pb::CaseResult {
    let passed = matches!(pb::Outcome::try_from(report.outcome), Ok(pb::Outcome::Passed | pb::Outcome::Skipped));
    pb::CaseResult {
        name: name.to_string(),
        classname: binary.id.clone(),
        outcome: report.outcome,
        duration_ms: report.duration_ms.max(started.elapsed().as_millis() as u64),
        message: report.message.clone(),
        // The unit's report already carries the output; the case keeps it only for failures.
        output: if passed { Vec::new() } else { report.output.clone() },
    }
}

impl Executor for CargoExecutor {
    async fn run(&self, slot: u32, job: &Job, cancel: CancellationToken) -> pb::TestReport {
        let started = Instant::now();
        match self.run_test(slot, job, cancel).await {
            Ok(report) => report,
            Err(message) => pb::TestReport {
                outcome: pb::Outcome::Error as i32,
                duration_ms: started.elapsed().as_millis() as u64,
                message,
                ..Default::default()
            },
        }
    }
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

/// Every test of a build as `(SRC, NAME)`, binaries in order.
pub async fn all_tests(build: &Build, env: &BTreeMap<String, String>) -> Result<Vec<(String, String)>, String> {
    let mut units = Vec::new();
    let mut by_src: HashMap<&str, &str> = HashMap::new();
    for binary in &build.binaries {
        if let Some(other) = by_src.insert(&binary.src, &binary.id) {
            return Err(format!(
                "{} and {other} are both built from {}: testgrid names Rust tests by their source file",
                binary.id, binary.src
            ));
        }
        for name in list(binary, env, false).await? {
            units.push((binary.src.clone(), name));
        }
    }
    Ok(units)
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
    fn terse_list_keeps_tests_only() {
        let text = "tests::a: test\ntests::b::c: test\nbench_x: benchmark\n\n";
        assert_eq!(parse_list(text), vec!["tests::a".to_string(), "tests::b::c".to_string()]);
    }

    #[test]
    fn artifacts_become_binaries_with_nextest_ids() {
        let root = Path::new("/w");
        let line = |kind: &str, name: &str, src: &str, test: bool, exe: Option<&str>| Message {
            reason: "compiler-artifact".into(),
            package_id: "path+file:///w#foo@0.1.0".into(),
            manifest_path: Some("/w/Cargo.toml".into()),
            target: Some(Target { kind: vec![kind.into()], name: name.into(), src_path: src.into() }),
            profile: Some(Profile { test }),
            executable: exe.map(PathBuf::from),
        };
        let lib = binary_of(root, line("lib", "foo", "/w/src/lib.rs", true, Some("/w/target/debug/deps/foo-1")));
        let lib = lib.expect("a test binary");
        assert_eq!((lib.id.as_str(), lib.src.as_str()), ("foo", "src/lib.rs"));
        assert_eq!(lib.manifest_dir, Path::new("/w"));
        let api = binary_of(root, line("test", "api", "/w/tests/api.rs", true, Some("/w/t/api-2"))).expect("test");
        assert_eq!(api.id, "foo::api");
        let bin = binary_of(root, line("bin", "cli", "/w/src/main.rs", true, Some("/w/t/cli-3"))).expect("bin");
        assert_eq!(bin.id, "foo::bin/cli");
        assert!(binary_of(root, line("lib", "foo", "/w/src/lib.rs", false, Some("/w/t/libfoo.rlib"))).is_none());
        assert!(binary_of(root, line("lib", "foo", "/w/src/lib.rs", true, None)).is_none());
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
