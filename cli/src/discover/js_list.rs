//! vitest's and jest's own list of test files: the project's installed framework, run by Node in
//! the project's folder, says which files its configuration makes tests (vitest's `include`,
//! `exclude`, `dir`, `projects`, type tests; jest's `testMatch`, `testRegex`, `roots`,
//! `testPathIgnorePatterns`, `projects`), the way its own command line lists them:
//! `vitest list --filesOnly --json=FILE` and `jest --listTests --json`. Only files are listed,
//! nothing is collected, so this costs about as much as the framework's start (well under a
//! second on small projects), not the suite's imports.
//!
//! The paths asked for on the command line restrict the list (filtered here, which is what the
//! frameworks' own filters do with folder and file names). A file that vitest lists in more than
//! one project becomes one unit per project, `|PROJECT| FILE` (vitest's own notation); jest runs
//! a file once for every project matching it, so it stays one unit.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use testgrid_proto::frameworks::Framework;
use testgrid_proto::js;

use super::Listing;
use super::ask::{self, Failed, excerpt, first_lines};
use super::files;
use super::search::{Place, Search, relative};
use crate::error::Error;

/// How long the framework may take to list its files: generous, for a loaded two-core machine
/// and a big project's config.
const DEADLINE: Duration = Duration::from_secs(120);

/// The most bytes of a list read: about 300,000 files of 100 bytes.
const MAX_LIST_BYTES: usize = 32 * 1024 * 1024;

/// The most bytes of a framework's `package.json` read.
const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;

/// One file as the framework listed it: its path as printed, and (vitest) its project's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub file: String,
    pub project: Option<String>,
}

/// The test units of a vitest or jest search whose project (the folder of its `package.json`,
/// relative to the root) is `project_dir`, in the order they should start.
/// `from_runner`: where the session's runner, started ahead, sends the list (vitest's); the
/// framework is asked here when that list does not come.
pub fn units(search: &Search, project_dir: &str, from_runner: Option<Listing>) -> Result<Vec<String>, Error> {
    let root = search.root();
    let package = if project_dir == "." { root.to_path_buf() } else { root.join(project_dir) };
    // The runner's list comes in the order vitest itself would run the files (its sequencer,
    // its results cache); the framework's command lists them in no useful order.
    let (entries, order) =
        match from_runner.filter(|_| search.framework == Framework::Vitest).and_then(listed_by_runner) {
            Some(entries) => (entries, Order::Listed),
            None => (list(search, &package)?, Order::Size),
        };
    let framework = search.framework.name();
    let named = !search.settings.paths.is_empty();
    let Selected { units, unmatched } =
        select(&entries, &package, root, &search.places, order).map_err(|e| e.into_error(framework, root))?;
    for place in unmatched.into_iter().filter(|p| named && !p.absolute.is_dir()) {
        let shown = relative(root, &place.absolute).unwrap_or_else(|_| place.absolute.display().to_string());
        err!(
            "testgrid: warning: {framework} does not list {shown} among its test files (the project's configuration \
             leaves it out), so it is not run"
        );
    }
    if units.is_empty() {
        return Err(Error::NoListedTests {
            framework,
            searched: if named {
                search.settings.paths.iter().map(|p| p.display().to_string()).collect()
            } else {
                vec![".".into()]
            },
            dir: package,
        });
    }
    let ordered = files::ordered(units);
    Ok(if search.framework == Framework::Vitest { type_tests_spread(ordered) } else { ordered })
}

/// Whether `unit` (`FILE` or `|PROJECT| FILE`) is a type test by vitest's naming convention
/// (`*.test-d.ts`, `*.spec-d.mts`, ...: its default `typecheck.include`).
fn is_type_test(unit: &str) -> bool {
    let file = unit.rsplit('/').next().unwrap_or(unit);
    let Some((stem, ext)) = file.rsplit_once('.') else { return false };
    let script = matches!(ext, "ts" | "tsx" | "js" | "jsx" | "mts" | "cts" | "mjs" | "cjs");
    script && (stem.ends_with(".test-d") || stem.ends_with(".spec-d"))
}

/// vitest checks all the type tests of a project in one `tsc` run, which their first one
/// starts, and each of the others is done the moment that run is: the first type test goes
/// first (its run then overlaps the other tests, one core for `tsc`, as under `vitest run`), the
/// others last, so that they never hold slots while `tsc` runs. Units name their project only
/// when a file is in several (`|PROJECT| FILE`): the first of each project so named goes first,
/// and the unnamed ones count as one group. The order only; what runs is the same.
fn type_tests_spread(ordered: Vec<String>) -> Vec<String> {
    let mut started = std::collections::HashSet::new();
    let (mut first, mut middle, mut last) = (Vec::new(), Vec::new(), Vec::new());
    for unit in ordered {
        if !is_type_test(&unit) {
            middle.push(unit);
        } else if started.insert(js::split_project(&unit).0.to_string()) {
            first.push(unit);
        } else {
            last.push(unit);
        }
    }
    first.into_iter().chain(middle).chain(last).collect()
}

/// The list the session's runner sent, as the framework's own command would have printed it;
/// `None` when it sent none (it could not start or list: the framework's own listing then says
/// why, as without a runner).
fn listed_by_runner(from_runner: Listing) -> Option<Vec<Entry>> {
    match from_runner.recv_timeout(DEADLINE) {
        Ok(Ok(files)) => Some(files.into_iter().map(|f| Entry { file: f.file, project: f.project }).collect()),
        Ok(Err(problem)) => {
            tracing::debug!("the vitest runner could not list the test files: {}", excerpt(&problem));
            None
        }
        Err(_) => None,
    }
}

/// Ask the project's framework for its list of test files.
fn list(search: &Search, package: &Path) -> Result<Vec<Entry>, Error> {
    let settings = search.settings;
    let framework = search.framework;
    let (name, known_bin) = match framework {
        Framework::Vitest => ("vitest", "vitest.mjs"),
        _ => ("jest", "bin/jest.js"),
    };
    let bin = find_bin(package, name, known_bin)
        .ok_or_else(|| Error::JsNotInstalled { framework: name, dir: package.to_path_buf() })?;
    let node = &settings.worker_node;
    let shown_bin = bin.strip_prefix(package).unwrap_or(&bin).display().to_string();
    let mut cmd = Command::new(node);
    cmd.arg(&bin).current_dir(package).envs(&settings.env).env("NO_COLOR", "1");
    // vitest writes its list to a file: a config that prints to stdout cannot spoil it.
    let scratch = tempfile::tempdir().map_err(Error::ListScratch)?;
    let list_file = scratch.path().join("list.json");
    let args = match framework {
        Framework::Vitest => {
            let mut json = std::ffi::OsString::from("--json=");
            json.push(&list_file);
            cmd.args(["list", "--filesOnly"]).arg(json);
            "list --filesOnly --json"
        }
        _ => {
            cmd.args(["--listTests", "--json"]);
            "--listTests --json"
        }
    };
    // The session's arguments pick files as they do for the framework alone (`--project`,
    // `--selectProjects`, a path filter).
    cmd.args(settings.args_for(framework));
    let command = format!("{node} {shown_bin} {args}");
    let failed =
        |problem: String| Error::JsListFailed { command: command.clone(), dir: package.to_path_buf(), problem };
    let answer = ask::ask(&mut cmd, DEADLINE, MAX_LIST_BYTES).map_err(|e| match e {
        Failed::Start(source) => Error::JsCannotStart { node: node.clone(), framework: name, source },
        other => failed(other.to_string()),
    })?;
    if !answer.status.success() {
        let said = if answer.stderr.iter().all(u8::is_ascii_whitespace) { &answer.stdout } else { &answer.stderr };
        return Err(failed(format!("{}:\n{}", answer.status, first_lines(said))));
    }
    match framework {
        Framework::Vitest => {
            let text = read_list(&list_file)
                .map_err(|problem| failed(format!("{problem} (vitest 3 or later lists files)")))?;
            parse_vitest(&text).map_err(failed)
        }
        _ => parse_jest(&answer.stdout).map_err(failed),
    }
}

/// The framework's command-line script, found as Node finds the package from `package`: the
/// first `node_modules/NAME` in it or a folder above, then its `package.json`'s `bin` (else the
/// `known` one), which must lie inside the package.
fn find_bin(package: &Path, name: &str, known: &str) -> Option<PathBuf> {
    package.ancestors().find_map(|dir| {
        let folder = dir.join("node_modules").join(name);
        let manifest = folder.join("package.json");
        if !manifest.is_file() {
            return None;
        }
        let bin = bin_of(&manifest, name).unwrap_or_else(|| known.to_string());
        let path = normalize(&folder.join(bin))?;
        (path.starts_with(&folder) && path.is_file()).then_some(path)
    })
}

/// The `bin` entry named `name` in a `package.json` (a plain string is the package's only one).
fn bin_of(manifest: &Path, name: &str) -> Option<String> {
    if std::fs::metadata(manifest).ok()?.len() > MAX_MANIFEST_BYTES {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(manifest).ok()?).ok()?;
    match &json["bin"] {
        serde_json::Value::String(bin) => Some(bin.clone()),
        serde_json::Value::Object(bins) => bins.get(name)?.as_str().map(str::to_string),
        _ => None,
    }
}

/// The list file vitest wrote, bounded.
fn read_list(path: &Path) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("it wrote no list ({e})"))?;
    ask::read_capped(file, MAX_LIST_BYTES)
        .ok_or_else(|| format!("its list is larger than {} MiB", MAX_LIST_BYTES / (1024 * 1024)))
}

/// vitest's `list --filesOnly --json`: `[{"file": ABSOLUTE, "projectName": NAME}, ...]`, the
/// name left out for a project without one.
pub fn parse_vitest(text: &[u8]) -> Result<Vec<Entry>, String> {
    #[derive(serde::Deserialize)]
    struct Item {
        file: String,
        #[serde(rename = "projectName")]
        project: Option<String>,
    }
    let items: Vec<Item> = serde_json::from_slice(text).map_err(|e| {
        // The parser's message may quote a value at length: say where, and show the start.
        format!(
            "its list is not vitest's JSON (line {}, column {}):\n{}",
            e.line(),
            e.column(),
            first_lines(&text[..text.len().min(4096)])
        )
    })?;
    Ok(items.into_iter().map(|i| Entry { file: i.file, project: i.project.filter(|p| !p.is_empty()) }).collect())
}

/// jest's `--listTests --json`: one line with a JSON array of absolute paths. A config may print
/// lines of its own on stdout too: the last line that is such an array is the list.
pub fn parse_jest(stdout: &[u8]) -> Result<Vec<Entry>, String> {
    let text = String::from_utf8_lossy(stdout);
    text.lines()
        .rev()
        .find_map(|line| serde_json::from_str::<Vec<String>>(line.trim()).ok())
        .map(|files| files.into_iter().map(|file| Entry { file, project: None }).collect())
        .ok_or_else(|| {
            format!("no JSON list of files in what it printed:\n{}", first_lines(&stdout[..stdout.len().min(4096)]))
        })
}

/// What was wrong with a list, before the framework's name is known to the message.
#[derive(Debug, PartialEq, Eq)]
pub enum BadEntry {
    /// A file outside the workspace root (shown shortened).
    Outside(String),
    /// An empty path, or one with a NUL.
    BadPath(String),
    /// A file in several projects, one of which has a name that cannot be written `|NAME|`.
    BadProject(Option<String>),
    NotUtf8(PathBuf),
}

impl BadEntry {
    fn into_error(self, framework: &'static str, root: &Path) -> Error {
        match self {
            BadEntry::Outside(file) => Error::JsListedOutside { framework, file, root: root.to_path_buf() },
            BadEntry::BadPath(file) => Error::JsBadEntry { framework, problem: format!("a bad path {file:?}") },
            BadEntry::BadProject(name) => Error::JsBadEntry {
                framework,
                problem: match name {
                    Some(name) => {
                        format!("a file in several projects, one named {name:?}, which cannot be written `|NAME| FILE`")
                    }
                    None => "a file in several projects, one of them without a name".into(),
                },
            },
            BadEntry::NotUtf8(path) => Error::NotUtf8 { path },
        }
    }
}

/// How the units of a list are ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Largest file first (the cheapest guess at longest first).
    Size,
    /// As listed: the framework's own order.
    Listed,
}

/// What a list makes of the places asked for.
#[derive(Debug)]
pub struct Selected<'p> {
    /// Test units, each with its weight: the larger, the sooner it starts ([`files::ordered`]).
    pub units: Vec<(u64, String)>,
    /// The places that matched no listed file.
    pub unmatched: Vec<&'p Place>,
}

/// The units the entries make for the places asked for, each weighted by `order` (its file's
/// size, or its first place in the list), and the places that matched none of them. A file in
/// several projects is one unit per project; a place `FILE::CASE` makes `FILE::CASE` units.
pub fn select<'p>(
    entries: &[Entry],
    package: &Path,
    root: &Path,
    places: &'p [Place],
    order: Order,
) -> Result<Selected<'p>, BadEntry> {
    let mut by_file: BTreeMap<PathBuf, (usize, Vec<Option<&str>>)> = BTreeMap::new();
    for (index, entry) in entries.iter().enumerate() {
        let path = locate(&entry.file, package, root)?;
        let (_, projects) = by_file.entry(path).or_insert((index, Vec::new()));
        if !projects.contains(&entry.project.as_deref()) {
            projects.push(entry.project.as_deref());
        }
    }
    let mut units = Vec::new();
    let mut matched = vec![false; places.len()];
    for (path, (index, projects)) in &by_file {
        let hits: Vec<usize> = (0..places.len()).filter(|&i| path.starts_with(&places[i].absolute)).collect();
        if hits.is_empty() {
            continue;
        }
        let rel = relative(root, path).map_err(|_| BadEntry::NotUtf8(path.clone()))?;
        let prefixes = if projects.len() > 1 {
            projects.iter().map(|p| project_prefix(*p)).collect::<Result<Vec<_>, _>>()?
        } else {
            vec![String::new()]
        };
        let weight = match order {
            Order::Size => files::file_size(path),
            Order::Listed => u64::MAX - *index as u64,
        };
        for i in hits {
            matched[i] = true;
            let name = match &places[i].case {
                Some((_, case)) => format!("{rel}::{case}"),
                None => rel.clone(),
            };
            units.extend(prefixes.iter().map(|prefix| (weight, format!("{prefix}{name}"))));
        }
    }
    let unmatched = places.iter().zip(matched).filter(|(_, m)| !m).map(|(p, _)| p).collect();
    Ok(Selected { units, unmatched })
}

/// `|NAME| `, for a project name that can be written so (`testgrid_proto::js`).
fn project_prefix(name: Option<&str>) -> Result<String, BadEntry> {
    // Quoted in the message, which escapes control characters; a long name is cut.
    let bad = || BadEntry::BadProject(name.map(|n| n.chars().take(js::MAX_PROJECT_NAME).collect()));
    name.and_then(js::project_prefix).ok_or_else(bad)
}

/// A listed file as an absolute path inside the root: as printed when absolute, else relative to
/// the package folder; `.` and `..` resolved without touching the disk.
fn locate(file: &str, package: &Path, root: &Path) -> Result<PathBuf, BadEntry> {
    if file.is_empty() || file.contains('\0') {
        // Quoted in the message (`{:?}`), which escapes the NUL and any control character.
        return Err(BadEntry::BadPath(file.chars().take(200).collect()));
    }
    normalize(&package.join(file))
        .filter(|p| p.starts_with(root) && p != root)
        .ok_or_else(|| BadEntry::Outside(excerpt(file)))
}

/// `path` with `.` and `..` resolved lexically; `None` when `..` climbs above the top.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            other => out.push(other),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(absolute: &str) -> Place {
        Place { absolute: PathBuf::from(absolute), case: None }
    }

    fn entry(file: &str, project: Option<&str>) -> Entry {
        Entry { file: file.into(), project: project.map(str::to_string) }
    }

    fn names(units: Vec<(u64, String)>) -> Vec<String> {
        let mut names: Vec<String> = units.into_iter().map(|(_, n)| n).collect();
        names.sort();
        names
    }

    #[test]
    fn each_projects_first_type_test_goes_first_and_the_others_last() {
        let units = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let ordered = units(&[
            "|types| src/big.test-d.ts",
            "|types| src/b.test-d.ts",
            "|runtime| src/a.test.ts",
            "|other| src/c.spec-d.mts",
            "src/d.test.ts",
            "|types| src/e.test-d.ts",
            "src/notatest-d.ts",
        ]);
        assert_eq!(
            type_tests_spread(ordered),
            units(&[
                "|types| src/big.test-d.ts",
                "|other| src/c.spec-d.mts",
                "|runtime| src/a.test.ts",
                "src/d.test.ts",
                "src/notatest-d.ts",
                "|types| src/b.test-d.ts",
                "|types| src/e.test-d.ts",
            ])
        );
        assert!(!is_type_test("src/a.test-d.json") && is_type_test("a.spec-d.tsx"));
    }

    #[test]
    fn vitests_list_keeps_projects_and_jests_takes_the_last_array() {
        let text = br#"[{"file":"/w/web/a.test.ts"},{"file":"/w/web/b.test.ts","projectName":"unit"},{"file":"/w/web/c.ts","projectName":""}]"#;
        assert_eq!(
            parse_vitest(text).expect("vitest's list"),
            vec![entry("/w/web/a.test.ts", None), entry("/w/web/b.test.ts", Some("unit")), entry("/w/web/c.ts", None)]
        );
        let printed = b"loading config...\n[\"not\", 1]\n[\"/w/a.test.js\",\"/w/b c.test.js\"]\n";
        assert_eq!(
            parse_jest(printed).expect("jest's list"),
            vec![entry("/w/a.test.js", None), entry("/w/b c.test.js", None)]
        );
        assert_eq!(parse_jest(b"[]\n").expect("an empty list"), vec![]);
    }

    #[test]
    fn hostile_answers_are_refused_and_quoted_only_by_their_start() {
        for bad in [&b"not json"[..], b"{\"file\":\"/a\"}", b"[{\"file\":1}]", b"[{\"name\":\"/a\"}]", b""] {
            assert!(parse_vitest(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let huge = format!("[{{\"file\": {}}}]", "1".repeat(1 << 20));
        let problem = parse_vitest(huge.as_bytes()).expect_err("a number is not a file");
        assert!(problem.len() < 1000, "the message quotes the start only: {} bytes", problem.len());
        let long_string = format!("[{{\"file\": [\"{}\"]}}]", "x".repeat(1 << 20));
        assert!(parse_vitest(long_string.as_bytes()).expect_err("not a file").len() < 1000);
        let noise = "x".repeat(1 << 20);
        let problem = parse_jest(noise.as_bytes()).expect_err("no list");
        assert!(problem.len() < 1000, "{} bytes", problem.len());
        assert!(parse_jest(b"{\"a\":1}\nPASS\n").is_err());
    }

    #[test]
    fn files_outside_the_root_and_bad_paths_are_refused() {
        let (package, root) = (Path::new("/w/web"), Path::new("/w"));
        let places = [place("/w")];
        for (file, bad) in [
            ("/etc/passwd", BadEntry::Outside("/etc/passwd".into())),
            ("../../etc/x.test.js", BadEntry::Outside("../../etc/x.test.js".into())),
            ("/w/../x/a.test.js", BadEntry::Outside("/w/../x/a.test.js".into())),
            ("/../../..", BadEntry::Outside("/../../..".into())),
            ("/w", BadEntry::Outside("/w".into())),
            ("/x/\u{1b}[31mred", BadEntry::Outside("/x/red".into())),
            ("", BadEntry::BadPath(String::new())),
            ("/w/a\0.js", BadEntry::BadPath("/w/a\0.js".into())),
        ] {
            assert_eq!(
                select(&[entry(file, None)], package, root, &places, Order::Size).map(|s| s.units),
                Err(bad),
                "{file:?}"
            );
        }
        // Relative paths are the package folder's; `.` and `..` inside the root are fine.
        let entries =
            [entry("src/a.test.js", None), entry("/w/web/./lib/../b.test.js", None), entry("../api/c.test.js", None)];
        let Selected { units, unmatched } =
            select(&entries, package, root, &places, Order::Size).expect("inside the root");
        assert_eq!(names(units), vec!["api/c.test.js", "web/b.test.js", "web/src/a.test.js"]);
        assert!(unmatched.is_empty());
    }

    #[test]
    fn a_file_in_several_projects_is_a_unit_per_project() {
        let (package, root) = (Path::new("/w"), Path::new("/w"));
        let entries = [
            entry("/w/shared/s.test.js", Some("integ")),
            entry("/w/a/a.test.js", Some("unit")),
            entry("/w/shared/s.test.js", Some("unit")),
            entry("/w/shared/s.test.js", Some("unit")),
        ];
        let units = select(&entries, package, root, &[place("/w")], Order::Size).expect("a list").units;
        assert_eq!(names(units), vec!["a/a.test.js", "|integ| shared/s.test.js", "|unit| shared/s.test.js"]);
        for bad in [Some("a|b"), Some("x\ny"), Some(" padded"), None] {
            let entries = [entry("/w/s.test.js", Some("unit")), entry("/w/s.test.js", bad)];
            let err = select(&entries, package, root, &[place("/w")], Order::Size)
                .expect_err("a name that cannot be written");
            assert_eq!(err, BadEntry::BadProject(bad.map(str::to_string)));
        }
    }

    #[test]
    fn a_list_in_the_frameworks_order_keeps_it_and_the_others_start_largest_first() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let root = dir.path();
        for (name, size) in [("small.test.js", 10), ("big.test.js", 1000), ("mid.test.js", 100)] {
            std::fs::write(root.join(name), "x".repeat(size)).expect("a test file");
        }
        let file = |name: &str| entry(&root.join(name).display().to_string(), None);
        let entries = [file("small.test.js"), file("mid.test.js"), file("big.test.js"), file("small.test.js")];
        let everything = [Place { absolute: root.to_path_buf(), case: None }];
        let ordered = |order| {
            let units = select(&entries, root, root, &everything, order).expect("a list").units;
            files::ordered(units)
        };
        assert_eq!(ordered(Order::Listed), vec!["small.test.js", "mid.test.js", "big.test.js"]);
        assert_eq!(ordered(Order::Size), vec!["big.test.js", "mid.test.js", "small.test.js"]);
    }

    #[test]
    fn the_places_asked_for_restrict_the_list() {
        let (package, root) = (Path::new("/w"), Path::new("/w"));
        let entries = [
            entry("/w/src/a.test.js", None),
            entry("/w/src/deep/b.test.js", None),
            entry("/w/srcx/c.test.js", None),
            entry("/w/lib/d.test.js", Some("p")),
            entry("/w/lib/d.test.js", Some("q")),
        ];
        let case =
            Place { absolute: PathBuf::from("/w/lib/d.test.js"), case: Some(("lib/d.test.js".into(), "t > x".into())) };
        let places = [place("/w/src"), case, place("/w/src/deep/b.test.js"), place("/w/src/not-listed.js")];
        let Selected { units, unmatched } = select(&entries, package, root, &places, Order::Size).expect("a list");
        let mut want = vec![
            "src/a.test.js",
            "src/deep/b.test.js",
            "src/deep/b.test.js",
            "|p| lib/d.test.js::t > x",
            "|q| lib/d.test.js::t > x",
        ];
        want.sort();
        assert_eq!(names(units), want, "a folder is not a prefix of a name (srcx)");
        assert_eq!(
            unmatched.iter().map(|p| p.absolute.clone()).collect::<Vec<_>>(),
            vec![PathBuf::from("/w/src/not-listed.js")]
        );
    }

    #[test]
    fn the_framework_is_found_as_node_finds_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let write = |rel: &str, text: &str| {
            let path = root.join(rel);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, text).expect("write");
        };
        std::fs::create_dir_all(root.join("web/src")).expect("mkdir");
        assert_eq!(find_bin(&root.join("web/src"), "vitest", "vitest.mjs"), None);
        write("node_modules/vitest/package.json", r#"{"bin":{"vitest":"./vitest.mjs"}}"#);
        write("node_modules/vitest/vitest.mjs", "");
        assert_eq!(
            find_bin(&root.join("web/src"), "vitest", "vitest.mjs"),
            Some(root.join("node_modules/vitest/vitest.mjs"))
        );
        write("web/node_modules/jest/package.json", r#"{"bin":"./bin/jest.js"}"#);
        write("web/node_modules/jest/bin/jest.js", "");
        assert_eq!(
            find_bin(&root.join("web"), "jest", "bin/jest.js"),
            Some(root.join("web/node_modules/jest/bin/jest.js"))
        );
        // A `bin` that leaves its package is not the framework's.
        write("web/node_modules/vitest/package.json", r#"{"bin":"../../../evil.mjs"}"#);
        write("evil.mjs", "");
        assert_eq!(
            find_bin(&root.join("web"), "vitest", "vitest.mjs"),
            Some(root.join("node_modules/vitest/vitest.mjs"))
        );
    }
}
