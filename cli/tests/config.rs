//! `testgrid.toml` end to end: the real `testgrid` binary reads a workspace's file, layers it
//! under the environment and the flags, and `testgrid config` says where each setting came from.

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use support::{Workspace, stderr, stdout, testgrid};

/// `testgrid config`'s settings: key -> (value, origin).
fn config(root: &Path, args: &[&str], env: &[(&str, &str)]) -> BTreeMap<String, (String, String)> {
    let out = testgrid(root).arg("config").args(args).envs(env.iter().copied()).output().expect("testgrid runs");
    assert_eq!(out.status.code(), Some(0), "testgrid config {args:?}: {}", stderr(&out));
    stdout(&out)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| {
            let (setting, origin) = l.split_once("  # ")?;
            let (key, value) = setting.split_once(" = ")?;
            Some((key.to_string(), (value.trim().to_string(), origin.trim().to_string())))
        })
        .collect()
}

fn write(root: &Path, rel: &str, body: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, body).expect("write");
}

const LEVELS: &str = r#"
retries = 1
timeout = "1m"
features = ["top"]

[cargo]
features = ["section"]

[profile.ci]
retries = 2
session-timeout = "1h"

[profile.ci.cargo]
features = ["profile-section"]
"#;

/// `testgrid config`'s settings in a workspace holding [`LEVELS`].
fn levels(args: &[&str], env: &[(&str, &str)]) -> BTreeMap<String, (String, String)> {
    let ws = Workspace::new();
    write(&ws.root(), "testgrid.toml", LEVELS);
    config(&ws.root(), args, env)
}

fn setting(value: &str, origin: &str) -> (String, String) {
    (value.to_string(), origin.to_string())
}

#[test]
fn level_1_a_built_in_default_holds_when_nothing_sets_the_option() {
    let settings = levels(&[], &[]);
    assert_eq!(settings["isolation"], setting("\"warm\"", "default"));
    assert!(!settings.contains_key("session-timeout"), "unset without the profile: {settings:?}");
}

#[test]
fn level_2_the_files_top_level_wins_over_the_default() {
    let settings = levels(&[], &[]);
    assert_eq!(settings["timeout"], setting("\"1m\"", "testgrid.toml:3"));
    assert_eq!(settings["retries"], setting("1", "testgrid.toml:2"));
}

#[test]
fn level_3_a_framework_section_wins_over_the_top_level() {
    assert_eq!(levels(&[], &[])["features"], setting("[\"section\"]", "testgrid.toml:7"));
}

#[test]
fn level_4_the_selected_profile_wins_over_the_file_and_leaves_it_the_rest() {
    for (args, env) in [(&["--profile", "ci"][..], &[][..]), (&[][..], &[("TESTGRID_PROFILE", "ci")][..])] {
        let ci = levels(args, env);
        assert_eq!(ci["retries"], setting("2", "profile ci, testgrid.toml:10"));
        assert_eq!(ci["session-timeout"], setting("\"1h\"", "profile ci, testgrid.toml:11"));
        assert_eq!(ci["timeout"], setting("\"1m\"", "testgrid.toml:3"), "the profile leaves the rest to the file");
    }
}

#[test]
fn level_5_the_profiles_framework_section_wins_over_the_profile() {
    let ci = levels(&["--profile", "ci"], &[]);
    assert_eq!(ci["features"], setting("[\"profile-section\"]", "profile ci, testgrid.toml:14"));
}

#[test]
fn level_6_the_environment_wins_over_the_profile() {
    let env = levels(&[], &[("TESTGRID_PROFILE", "ci"), ("TESTGRID_RETRIES", "3")]);
    assert_eq!(env["retries"], setting("3", "env TESTGRID_RETRIES"));
    assert_eq!(env["session-timeout"].1, "profile ci, testgrid.toml:11");
}

#[test]
fn level_7_the_flag_wins_over_everything() {
    let flag = levels(&["--retries", "4"], &[("TESTGRID_PROFILE", "ci"), ("TESTGRID_RETRIES", "3")]);
    assert_eq!(flag["retries"], setting("4", "command line"));
}

#[test]
fn the_file_and_its_profiles_change_a_real_run() {
    let ws = Workspace::new();
    let marker = ws.root().join("seen");
    ws.test("flaky.sh", &format!("if [ -e '{0}' ]; then exit 0; fi; touch '{0}'; exit 1", marker.display()));
    ws.test("slow.sh", "sleep 30");
    write(
        &ws.root(),
        ".config/testgrid.toml",
        "framework = \"shell\"\npaths = [\"flaky.sh\"]\nlocal = 1\n\n[profile.patient]\nretries = 1\n\n[profile.hasty]\npaths = [\"slow.sh\"]\ntimeout = \"1s\"\n",
    );
    // The file's paths; no retries: the flaky test fails.
    let out = testgrid(&ws.root()).arg("run").output().expect("testgrid runs");
    assert_eq!(out.status.code(), Some(1), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(ws.runs().get("slow.sh"), None, "only the file's paths run");
    std::fs::remove_file(&marker).expect("reset the flaky test");
    // The profile's retry makes it flaky, which passes.
    let out = testgrid(&ws.root()).args(["run", "--profile", "patient"]).output().expect("testgrid runs");
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("FLAKY flaky.sh"), "{}", stdout(&out));
    // Another profile's paths and timeout.
    let out = testgrid(&ws.root()).env("TESTGRID_PROFILE", "hasty").arg("run").output().expect("testgrid runs");
    assert_eq!(out.status.code(), Some(1), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("slow.sh"), "{}", stdout(&out));
    assert!(stdout(&out).to_lowercase().contains("timed out"), "{}", stdout(&out));
    // Paths on the command line replace the file's.
    let out = testgrid(&ws.root())
        .args(["run", "--profile", "patient", "slow.sh", "--timeout", "1s"])
        .output()
        .expect("testgrid runs");
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert_eq!(ws.runs().get("flaky.sh"), Some(&3), "{:?}", ws.runs());
    // The file's paths start at the workspace root wherever testgrid runs.
    std::fs::create_dir(ws.root().join("sub")).expect("mkdir");
    let out = testgrid(&ws.root().join("sub")).args(["run", "--json"]).output().expect("testgrid runs");
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(ws.runs().get("flaky.sh"), Some(&4), "{:?}", ws.runs());
}

/// `testgrid config`'s error for a file with `body` (exit 2).
fn refused(body: &str) -> String {
    let ws = Workspace::new();
    write(&ws.root(), "testgrid.toml", body);
    let out = testgrid(&ws.root()).arg("config").output().expect("testgrid runs");
    assert_eq!(out.status.code(), Some(2), "{body}: {}", stdout(&out));
    let run = testgrid(&ws.root()).arg("run").output().expect("testgrid runs");
    assert_eq!(run.status.code(), Some(2), "run refuses the file too: {body}");
    assert_eq!(stderr(&run), stderr(&out));
    stderr(&out)
}

#[test]
fn unknown_keys_and_bad_values_name_the_file_the_line_and_the_nearest_key() {
    let cases = [
        (
            "retries = 1\ntimout = \"5m\"\n",
            "testgrid.toml:2: unknown key `timout` in the top level; did you mean `timeout`?",
        ),
        (
            "[profile.ci]\nretriez = 1\n",
            "testgrid.toml:2: unknown key `retriez` in [profile.ci]; did you mean `retries`?",
        ),
        ("[pytest]\nargz = [\"-x\"]\n", "unknown key `argz` in [pytest]; did you mean `args`?"),
        (
            "[profile.ci.cargo]\nfeaturs = [\"a\"]\n",
            "testgrid.toml:2: unknown key `featurs` in [profile.ci.cargo]; did you mean `features`?",
        ),
        ("\n\ntimeout = \"5x\"\n", "testgrid.toml:3: timeout = \"5x\" is not valid: unknown time unit"),
        (
            "framework = \"mocha\"\n",
            "testgrid.toml:1: framework = \"mocha\" is not valid: the possible values are auto, shell,",
        ),
        ("retries = [1, 2]\n", "testgrid.toml:1: `retries` takes one value, not a list"),
        ("detach = \"yes\"\n", "testgrid.toml:1: `detach` is on or off"),
        ("label = [\"os=linux\", \"nolabel\"]\n", "testgrid.toml:1: label = \"nolabel\" is not valid"),
        ("[pytest]\ntimeout = \"1m\"\n", "testgrid.toml:2: `timeout` applies to every framework"),
        ("root = \"/\"\n", "testgrid.toml:1: `root` cannot be set here"),
        ("retries = [\n", "testgrid.toml:1: not valid TOML: unclosed array"),
        ("zzzzzz = 1\n", "testgrid.toml:1: unknown key `zzzzzz` in the top level; `testgrid config` lists every key"),
    ];
    for (body, expected) in cases {
        let message = refused(body);
        assert!(message.contains(expected), "{body:?}\nwanted: {expected}\ngot: {message}");
    }
}

#[test]
fn a_profile_the_file_lacks_and_two_files_are_refused() {
    let ws = Workspace::new();
    let out = testgrid(&ws.root()).args(["config", "--profile", "ci"]).output().expect("testgrid runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--profile ci: there is no testgrid.toml"), "{}", stderr(&out));
    write(&ws.root(), "testgrid.toml", "[profile.dev]\n[profile.nightly]\n");
    let out = testgrid(&ws.root()).args(["run", "--profile", "ci"]).output().expect("testgrid runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("has no such profile; it has: dev, nightly"), "{}", stderr(&out));
    write(&ws.root(), ".config/testgrid.toml", "");
    let out = testgrid(&ws.root()).arg("config").output().expect("testgrid runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("two config files"), "{}", stderr(&out));
}

#[test]
fn config_prints_every_setting_with_its_origin_and_the_framework_arguments() {
    let ws = Workspace::new();
    write(&ws.root(), "testgrid.toml", "label = [\"os=linux\"]\n[pytest]\nargs = \"-p no:randomly --tb=short\"\n");
    let out = testgrid(&ws.root())
        .args(["config", "--grid", "http://grid:7700", "--", "-k", "parser"])
        .output()
        .expect("testgrid runs");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("# config file: testgrid.toml"), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("grid = \"http://grid:7700\"") && l.ends_with("# command line")),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("label = [\"os=linux\"]") && l.ends_with("# testgrid.toml:1")),
        "{text}"
    );
    assert!(text.contains("[pytest]\nargs = [\"-p\", \"no:randomly\", \"--tb=short\"]  # testgrid.toml:3"), "{text}");
    assert!(text.contains("# after --, for the framework: [\"-k\", \"parser\"]"), "{text}");
    assert!(text.contains("# unset: ") && text.contains("session-timeout"), "{text}");
}
