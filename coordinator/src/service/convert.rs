//! Conversions between protobuf messages and the core's types. Proto types stop here: the core
//! never sees the `Option`s and defaults that protobuf forces on us.

use std::collections::BTreeMap;

use testgrid_proto as pb;
use uuid::Uuid;

use crate::core::{
    Artifact, ArtifactSpec, AssignmentKey, CaseResult, Claim, Event, Outcome, Report, Runner, SessionId, SessionSpec,
    SessionView, Totals, WorkerSpec, WorkerView, Workspace,
};

/// A message from a client or worker that cannot be used as it is.
#[derive(Debug, thiserror::Error)]
pub enum BadMessage {
    #[error("missing field `{0}`")]
    Missing(&'static str),
    #[error("field `{field}`: {problem}")]
    Invalid { field: &'static str, problem: String },
    #[error(transparent)]
    Runner(#[from] testgrid_proto::frameworks::BadRunner),
}

impl From<BadMessage> for tonic::Status {
    fn from(e: BadMessage) -> Self {
        tonic::Status::invalid_argument(e.to_string())
    }
}

/// The largest session a coordinator accepts in one submission.
pub const MAX_TESTS_PER_SESSION: usize = 1_000_000;

pub fn parse_session_id(s: &str) -> Result<SessionId, BadMessage> {
    Uuid::parse_str(s.trim()).map(SessionId).map_err(|_| BadMessage::Invalid {
        field: "session_id",
        problem: format!("`{s}` is not a session id (a UUID, as `testgrid sessions` prints them)"),
    })
}

/// A session id a client chose for its `Submit`: a UUID in its canonical hyphenated form, never
/// the nil one (a hostile value is not echoed whole).
pub fn chosen_session_id(s: &str) -> Result<SessionId, BadMessage> {
    let bad = || BadMessage::Invalid {
        field: "session_id",
        problem: format!(
            "`{}` is not a UUID in its hyphenated form (or leave it empty: the grid picks one)",
            s.chars().take(40).collect::<String>()
        ),
    };
    let id = (s.len() == 36).then(|| Uuid::try_parse(s).ok()).flatten().filter(|id| !id.is_nil()).ok_or_else(bad)?;
    Ok(SessionId(id))
}

pub fn outcome_from_pb(value: i32) -> Result<Outcome, BadMessage> {
    use pb::Outcome as P;
    Ok(match P::try_from(value) {
        Ok(P::Passed) => Outcome::Passed,
        Ok(P::Failed) => Outcome::Failed,
        Ok(P::Flaky) => Outcome::Flaky,
        Ok(P::TimedOut) => Outcome::TimedOut,
        Ok(P::Lost) => Outcome::Lost,
        Ok(P::Cancelled) => Outcome::Cancelled,
        Ok(P::Error) => Outcome::Error,
        Ok(P::Skipped) => Outcome::Skipped,
        Ok(P::Unspecified) | Err(_) => {
            return Err(BadMessage::Invalid { field: "outcome", problem: format!("unknown outcome {value}") });
        }
    })
}

pub fn outcome_to_pb(outcome: Outcome) -> pb::Outcome {
    match outcome {
        Outcome::Passed => pb::Outcome::Passed,
        Outcome::Failed => pb::Outcome::Failed,
        Outcome::Flaky => pb::Outcome::Flaky,
        Outcome::TimedOut => pb::Outcome::TimedOut,
        Outcome::Lost => pb::Outcome::Lost,
        Outcome::Cancelled => pb::Outcome::Cancelled,
        Outcome::Error => pb::Outcome::Error,
        Outcome::Skipped => pb::Outcome::Skipped,
    }
}

impl TryFrom<&pb::AssignmentRef> for AssignmentKey {
    type Error = BadMessage;
    fn try_from(r: &pb::AssignmentRef) -> Result<Self, BadMessage> {
        Ok(AssignmentKey { session: parse_session_id(&r.session_id)?, test: r.test_index, attempt: r.attempt })
    }
}

pub fn key_to_pb(key: &AssignmentKey) -> pb::AssignmentRef {
    pb::AssignmentRef { session_id: key.session.to_string(), test_index: key.test, attempt: key.attempt }
}

/// The most cases one report may carry.
pub const MAX_CASES: usize = 100_000;
/// What a report's parts keep (the rest is cut, not refused: the result still counts). With
/// the output's own limit (`--max-test-output`) they keep every event well under the message
/// limit, so that a session stays watchable whatever a worker sends.
const MAX_REPORT_MESSAGE_BYTES: usize = 64 * 1024;
const MAX_CASE_NAME_BYTES: usize = 4096;
const MAX_CASE_MESSAGE_BYTES: usize = 16 * 1024;
const MAX_CASE_OUTPUT_BYTES: usize = 64 * 1024;
/// All of a report's cases' messages and output together.
const MAX_CASES_BYTES: usize = 24 * 1024 * 1024;

/// `s` cut to at most `max` bytes, at a character boundary.
fn cut(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// The last `max` bytes of `v`.
fn tail(mut v: Vec<u8>, max: usize) -> Vec<u8> {
    if v.len() > max {
        v.drain(..v.len() - max);
    }
    v
}

impl TryFrom<pb::TestReport> for Report {
    type Error = BadMessage;
    fn try_from(r: pb::TestReport) -> Result<Self, BadMessage> {
        if r.cases.len() > MAX_CASES {
            return Err(BadMessage::Invalid {
                field: "report.cases",
                problem: format!("{} cases is more than the limit of {MAX_CASES}", r.cases.len()),
            });
        }
        let mut budget = MAX_CASES_BYTES;
        let cases = r
            .cases
            .into_iter()
            .map(|c| {
                let message = cut(c.message, MAX_CASE_MESSAGE_BYTES.min(budget));
                budget -= message.len();
                let output = tail(c.output, MAX_CASE_OUTPUT_BYTES.min(budget));
                budget -= output.len();
                Ok(CaseResult {
                    outcome: outcome_from_pb(c.outcome)?,
                    name: cut(c.name, MAX_CASE_NAME_BYTES),
                    classname: cut(c.classname, MAX_CASE_NAME_BYTES),
                    duration_ms: c.duration_ms,
                    message,
                    output,
                })
            })
            .collect::<Result<_, BadMessage>>()?;
        if r.artifacts.len() > MAX_ARTIFACTS {
            return Err(BadMessage::Invalid {
                field: "report.artifacts",
                problem: format!("{} artifacts is more than the limit of {MAX_ARTIFACTS}", r.artifacts.len()),
            });
        }
        let artifacts = r
            .artifacts
            .into_iter()
            .map(|a| {
                let bad = |problem: String| BadMessage::Invalid { field: "report.artifacts", problem };
                if a.path.len() > 4096 || a.path.split('/').any(|p| testgrid_proto::tree::check_name(p).is_err()) {
                    return Err(bad("an artifact path that is not a relative path inside the tree".into()));
                }
                let blob = match a.digest {
                    Some(d) => {
                        testgrid_proto::tree::check_digest(&d).map_err(bad)?;
                        Some(Workspace { hash: d.hash, size_bytes: d.size_bytes })
                    }
                    None => None,
                };
                Ok(Artifact { path: a.path, blob, refused: cut(a.refused, 1024) })
            })
            .collect::<Result<_, BadMessage>>()?;
        Ok(Report {
            outcome: outcome_from_pb(r.outcome)?,
            exit_code: r.exit_code,
            signal: r.signal,
            duration_ms: r.duration_ms,
            output: r.output,
            output_dropped_bytes: r.output_dropped_bytes,
            message: cut(r.message, MAX_REPORT_MESSAGE_BYTES),
            cases,
            artifacts,
        })
    }
}

pub fn report_to_pb(r: &Report) -> pb::TestReport {
    pb::TestReport {
        outcome: outcome_to_pb(r.outcome) as i32,
        exit_code: r.exit_code,
        signal: r.signal,
        duration_ms: r.duration_ms,
        output: r.output.clone(),
        output_dropped_bytes: r.output_dropped_bytes,
        message: r.message.clone(),
        cases: r
            .cases
            .iter()
            .map(|c| pb::CaseResult {
                name: c.name.clone(),
                classname: c.classname.clone(),
                outcome: outcome_to_pb(c.outcome) as i32,
                duration_ms: c.duration_ms,
                message: c.message.clone(),
                output: c.output.clone(),
            })
            .collect(),
        artifacts: r
            .artifacts
            .iter()
            .map(|a| pb::Artifact {
                path: a.path.clone(),
                digest: a.blob.as_ref().map(|b| pb::Digest { hash: b.hash.clone(), size_bytes: b.size_bytes }),
                refused: a.refused.clone(),
            })
            .collect(),
    }
}

/// The most artifacts one report may name.
pub const MAX_ARTIFACTS: usize = 1000;
/// The most artifact globs a session may have, and the most bytes of each.
const MAX_ARTIFACT_GLOBS: usize = 64;
const MAX_GLOB_BYTES: usize = 4096;
/// The most bytes of all of a session's globs (they travel in every assignment).
const MAX_GLOBS_BYTES: usize = 16 * 1024;

impl TryFrom<pb::Register> for WorkerSpec {
    type Error = BadMessage;
    fn try_from(r: pb::Register) -> Result<Self, BadMessage> {
        if r.slots == 0 || r.slots > 4096 {
            return Err(BadMessage::Invalid { field: "slots", problem: format!("{} is not in 1..=4096", r.slots) });
        }
        // The name is copied into every event and log line about the worker: short and plain.
        check_name("name", &r.name, MAX_WORKER_NAME_BYTES)?;
        check_name("version", &r.version, MAX_WORKER_NAME_BYTES)?;
        check_labels("labels", &r.labels)?;
        let name = if r.name.trim().is_empty() { "worker".to_string() } else { r.name };
        Ok(WorkerSpec { name, slots: r.slots, labels: r.labels.into_iter().collect(), version: r.version })
    }
}

/// The longest worker name (and version) a worker may register with.
pub const MAX_WORKER_NAME_BYTES: usize = 256;
/// The longest session name.
pub const MAX_SESSION_NAME_BYTES: usize = 1024;
/// The longest test path (as a file system's PATH_MAX).
pub const MAX_TEST_PATH_BYTES: usize = 4096;
/// Labels a worker offers or a session requires: how many, and how long each key and value.
pub const MAX_LABELS: usize = 64;
pub const MAX_LABEL_BYTES: usize = 256;
/// A session's `--env`: how many variables, and their bytes in all.
pub const MAX_ENV_VARS: usize = 1024;
pub const MAX_ENV_BYTES: usize = 256 * 1024;
/// The longest command a test's template may expand to (the path quoted, once per `{}`),
/// checked before anything is expanded.
pub const MAX_COMMAND_BYTES: usize = 128 * 1024;

/// A name that is shown and logged: at most `max` bytes, no control characters. The error
/// says how long it is, never what it is.
fn check_name(field: &'static str, name: &str, max: usize) -> Result<(), BadMessage> {
    if name.len() > max {
        return Err(BadMessage::Invalid {
            field,
            problem: format!("{} bytes is more than the limit of {max}", name.len()),
        });
    }
    if name.chars().any(char::is_control) {
        return Err(BadMessage::Invalid { field, problem: "contains control characters".into() });
    }
    Ok(())
}

fn check_labels<'a>(
    field: &'static str,
    labels: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<(), BadMessage> {
    let mut n = 0;
    for (key, value) in labels {
        n += 1;
        if n > MAX_LABELS {
            return Err(BadMessage::Invalid { field, problem: format!("more than {MAX_LABELS} labels") });
        }
        if key.is_empty() {
            return Err(BadMessage::Invalid { field, problem: "a label with an empty key".into() });
        }
        check_name(field, key, MAX_LABEL_BYTES)?;
        check_name(field, value, MAX_LABEL_BYTES)?;
    }
    Ok(())
}

/// The longest command `template` can expand to for a path of `path_bytes` bytes: the template,
/// plus per `{}` the path quoted (at worst every byte escaped, and the quotes and `./`).
fn expanded_bound(template: &str, path_bytes: usize) -> usize {
    let slots = template.matches("{}").count();
    template.len().saturating_add(slots.saturating_mul(path_bytes.saturating_mul(4).saturating_add(4)))
}

/// Assignments per slot a reconnecting worker may claim (the worker's own queue bound).
const MAX_CLAIMS_PER_SLOT: usize = 64;

/// What a reconnecting worker claims to hold, checked: at most [`MAX_CLAIMS_PER_SLOT`] per slot,
/// each a well-formed assignment.
pub fn claims(held: &[pb::HeldAssignment], slots: u32) -> Result<Vec<Claim>, BadMessage> {
    let limit = (slots as usize).saturating_mul(MAX_CLAIMS_PER_SLOT);
    if held.len() > limit {
        return Err(BadMessage::Invalid {
            field: "held",
            problem: format!("{} held assignments is more than {MAX_CLAIMS_PER_SLOT} per slot", held.len()),
        });
    }
    held.iter()
        .map(|h| {
            let key = AssignmentKey::try_from(h.assignment.as_ref().ok_or(BadMessage::Missing("held.assignment"))?)?;
            Ok(Claim { key, started: h.started })
        })
        .collect()
}

/// A `Plan` request, checked as a session's tests and project are: the project, the test paths
/// and their sizes.
pub fn plan_request(project: String, tests: Vec<pb::TestSpec>) -> Result<(String, Vec<String>, Vec<u64>), BadMessage> {
    check_test_count(tests.len())?;
    check_project(&project)?;
    let sizes = tests.iter().map(|t| t.size_bytes).collect();
    Ok((project, tests.into_iter().map(|t| t.path).collect(), sizes))
}

/// The highest weight a session may have in the fair share.
const MAX_PRIORITY: u32 = 1_000;

/// The longest project key a session may carry.
const MAX_PROJECT_BYTES: usize = 256;

/// At most [`MAX_TESTS_PER_SESSION`] tests.
fn check_test_count(n: usize) -> Result<(), BadMessage> {
    if n > MAX_TESTS_PER_SESSION {
        return Err(BadMessage::Invalid {
            field: "tests",
            problem: format!("{n} tests is more than the limit of {MAX_TESTS_PER_SESSION}"),
        });
    }
    Ok(())
}

/// A project key: at most [`MAX_PROJECT_BYTES`], no control characters.
fn check_project(project: &str) -> Result<(), BadMessage> {
    check_name("project", project, MAX_PROJECT_BYTES)
}

impl TryFrom<pb::SessionSpec> for SessionSpec {
    type Error = BadMessage;
    fn try_from(s: pb::SessionSpec) -> Result<Self, BadMessage> {
        if s.tests.is_empty() {
            return Err(BadMessage::Invalid { field: "tests", problem: "a session needs at least one test".into() });
        }
        check_test_count(s.tests.len())?;
        let runner = s.runner.as_ref().ok_or(BadMessage::Missing("runner"))?;
        let runner = Runner::try_from(runner)?;
        if s.priority > MAX_PRIORITY {
            return Err(BadMessage::Invalid {
                field: "priority",
                problem: format!("{} is more than the limit of {MAX_PRIORITY}", s.priority),
            });
        }
        let priority = s.priority;
        let mut tests = Vec::with_capacity(s.tests.len());
        let sizes: Vec<u64> = s.tests.iter().map(|t| t.size_bytes).collect();
        check_name("name", &s.name, MAX_SESSION_NAME_BYTES)?;
        let mut longest = 0;
        for t in s.tests {
            if t.path.is_empty() || t.path.contains('\0') || t.path.len() > MAX_TEST_PATH_BYTES {
                return Err(BadMessage::Invalid {
                    field: "tests.path",
                    problem: format!(
                        "bad test path `{}` ({} bytes): not empty, at most {MAX_TEST_PATH_BYTES} bytes, without NUL",
                        testgrid_proto::tree::shorten(&t.path),
                        t.path.len()
                    ),
                });
            }
            longest = longest.max(t.path.len());
            tests.push(t.path);
        }
        if let Some(template) = runner.template()
            && expanded_bound(template, longest) > MAX_COMMAND_BYTES
        {
            return Err(BadMessage::Invalid {
                field: "runner.command.template",
                problem: format!(
                    "with {} `{{}}` and test paths of up to {longest} bytes it expands to more than {MAX_COMMAND_BYTES} bytes",
                    template.matches("{}").count()
                ),
            });
        }
        if s.env.len() > MAX_ENV_VARS || s.env.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() > MAX_ENV_BYTES {
            return Err(BadMessage::Invalid {
                field: "env",
                problem: format!("at most {MAX_ENV_VARS} variables and {MAX_ENV_BYTES} bytes in all"),
            });
        }
        for key in s.env.keys() {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(BadMessage::Invalid {
                    field: "env",
                    problem: format!("bad variable name `{}`", testgrid_proto::tree::shorten(key)),
                });
            }
        }
        check_labels("required_labels", &s.required_labels)?;
        // Each names an env variable, and there are no more than those (it goes in every Assign).
        if s.secret_env.len() > s.env.len() {
            return Err(BadMessage::Invalid {
                field: "secret_env",
                problem: format!("{} names for {} env variables", s.secret_env.len(), s.env.len()),
            });
        }
        if let Some(name) = s.secret_env.iter().find(|name| !s.env.contains_key(*name)) {
            return Err(BadMessage::Invalid {
                field: "secret_env",
                problem: format!("`{}` is not among the session's env", testgrid_proto::tree::shorten(name)),
            });
        }
        let workspace = match s.workspace {
            Some(digest) => {
                testgrid_proto::tree::check_digest(&digest)
                    .map_err(|problem| BadMessage::Invalid { field: "workspace", problem })?;
                Some(Workspace { hash: digest.hash, size_bytes: digest.size_bytes })
            }
            None => None,
        };
        let setup = match &s.setup {
            Some(setup) => Some(Box::new(
                testgrid_proto::setup::Setup::try_from(setup)
                    .map_err(|e| BadMessage::Invalid { field: e.field, problem: e.problem })?,
            )),
            None => None,
        };
        check_project(&s.project)?;
        let artifacts = match s.artifacts {
            Some(a) if !a.globs.is_empty() => {
                if a.globs.len() > MAX_ARTIFACT_GLOBS
                    || a.globs.iter().any(|g| g.is_empty() || g.len() > MAX_GLOB_BYTES || g.contains('\0'))
                    || a.globs.iter().map(String::len).sum::<usize>() > MAX_GLOBS_BYTES
                {
                    return Err(BadMessage::Invalid {
                        field: "artifacts.globs",
                        problem: format!(
                            "at most {MAX_ARTIFACT_GLOBS} globs, each not empty, at most {MAX_GLOB_BYTES} bytes, without NUL, \
                             {MAX_GLOBS_BYTES} bytes in all"
                        ),
                    });
                }
                Some(ArtifactSpec { globs: a.globs, max_bytes: a.max_bytes })
            }
            _ => None,
        };
        Ok(SessionSpec {
            name: s.name,
            tests,
            runner,
            env: s.env.into_iter().collect::<BTreeMap<_, _>>(),
            test_timeout_ms: s.test_timeout_ms,
            retries: s.retries,
            required_labels: s.required_labels.into_iter().collect(),
            session_timeout_ms: s.session_timeout_ms,
            max_worker_losses: s.max_worker_losses,
            cancel_on_disconnect: s.cancel_on_disconnect,
            workspace,
            setup,
            project: s.project,
            artifacts,
            sizes: if sizes.iter().all(|&b| b == 0) { Vec::new() } else { sizes },
            keep_order: s.keep_order,
            max_failures: s.max_failures,
            priority,
            max_slots: s.max_slots,
            speculate: s.speculate,
            owner: String::new(),
            secret_env: s.secret_env,
        })
    }
}

pub fn totals_to_pb(t: &Totals) -> pb::Totals {
    pb::Totals {
        total: t.total,
        passed: t.passed,
        failed: t.failed,
        flaky: t.flaky,
        timed_out: t.timed_out,
        lost: t.lost,
        cancelled: t.cancelled,
        error: t.error,
    }
}

pub fn session_view_to_pb(v: &SessionView) -> pb::SessionInfo {
    pb::SessionInfo {
        session_id: v.id.to_string(),
        name: v.name.clone(),
        state: if v.finished { pb::SessionState::Finished } else { pb::SessionState::Running } as i32,
        totals: Some(totals_to_pb(&v.totals)),
        created_at_ms: v.created_at,
        finished_at_ms: v.finished_at.unwrap_or(0),
        cancel_reason: v.cancel_reason.clone().unwrap_or_default(),
        running: v.running,
        owner: v.owner.clone(),
    }
}

pub fn worker_view_to_pb(v: &WorkerView) -> pb::WorkerInfo {
    pb::WorkerInfo {
        worker_id: v.id.to_string(),
        name: v.spec.name.clone(),
        slots: v.spec.slots,
        labels: v.spec.labels.clone().into_iter().collect(),
        assignments: v.held.iter().map(key_to_pb).collect(),
        last_heartbeat_ms: v.last_seen,
        connected_at_ms: v.connected_at,
        version: v.spec.version.clone(),
        running_tests: v.running_tests.clone(),
        draining: v.draining,
    }
}

/// The proto form of a core event; the store adds the sequence number and time.
pub fn event_to_pb(event: &Event) -> pb::session_event::Kind {
    use pb::session_event::Kind;
    match event {
        Event::Created { name, paths, .. } => Kind::Created(pb::SessionCreated {
            name: name.clone(),
            total: paths.len() as u32,
            test_paths: paths.clone(),
        }),
        Event::TestStarted { test, attempt, worker } => {
            Kind::TestStarted(pb::TestStartedEvent { test_index: *test, attempt: *attempt, worker: worker.clone() })
        }
        Event::TestFinished { test, attempt, worker, is_final, outcome, report } => {
            Kind::TestFinished(pb::TestFinishedEvent {
                test_index: *test,
                attempt: *attempt,
                worker: worker.clone(),
                r#final: *is_final,
                outcome: outcome_to_pb(*outcome) as i32,
                report: Some(report_to_pb(report)),
            })
        }
        Event::TestRequeued { test, attempt, reason, .. } => {
            Kind::TestRequeued(pb::TestRequeued { test_index: *test, attempt: *attempt, reason: reason.clone() })
        }
        Event::ResultDiscarded { test, attempt, reason } => {
            Kind::ResultDiscarded(pb::ResultDiscarded { test_index: *test, attempt: *attempt, reason: reason.clone() })
        }
        Event::Cancelled { reason } => Kind::Cancelled(pb::SessionCancelled { reason: reason.clone() }),
        Event::Finished { totals, cancel_reason } => Kind::Finished(pb::SessionFinished {
            totals: Some(totals_to_pb(totals)),
            cancel_reason: cancel_reason.clone().unwrap_or_default(),
        }),
        Event::SetupFinished { worker, report, reused } => Kind::SetupFinished(pb::SetupFinishedEvent {
            worker: worker.clone(),
            report: Some(report_to_pb(report)),
            reused: *reused,
        }),
        Event::TestSpeculated { test, running, attempt, worker, reason } => Kind::TestSpeculated(pb::TestSpeculated {
            test_index: *test,
            running_attempt: *running,
            attempt: *attempt,
            worker: worker.clone(),
            reason: reason.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_session_ids_name_the_field() {
        let e = parse_session_id("nope").expect_err("not a uuid");
        assert!(e.to_string().contains("session_id"));
    }

    #[test]
    fn secret_names_are_the_sessions_env_variables_and_no_more() {
        let spec = |env: &[&str], secrets: &[&str]| pb::SessionSpec {
            name: "s".into(),
            tests: vec![pb::TestSpec { path: "a.sh".into(), size_bytes: 0 }],
            runner: Some(pb::Runner {
                framework: pb::Framework::Shell as i32,
                options: Some(pb::runner::Options::Command(pb::CommandOptions { template: "sh {}".into() })),
                ..Default::default()
            }),
            env: env.iter().map(|k| (k.to_string(), "v".to_string())).collect(),
            secret_env: secrets.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        assert!(SessionSpec::try_from(spec(&["KEY"], &["KEY"])).is_ok());
        let unknown = SessionSpec::try_from(spec(&["KEY"], &["OTHER"])).expect_err("not in env");
        assert!(unknown.to_string().contains("secret_env"));
        let repeated = vec!["KEY"; 100_000];
        let flood = SessionSpec::try_from(spec(&["KEY"], &repeated)).expect_err("bounded");
        assert!(flood.to_string().contains("secret_env") && flood.to_string().len() < 200);
    }

    #[test]
    fn a_chosen_session_id_is_a_hyphenated_uuid_and_is_not_echoed_whole() {
        let id = "1b4e28ba-2fa1-4d2e-883f-0016d3cca427";
        assert_eq!(chosen_session_id(id).expect("a uuid").to_string(), id);
        for bad in [
            "",
            "1b4e28ba2fa14d2e883f0016d3cca427",
            "00000000-0000-0000-0000-000000000000",
            " 1b4e28ba-2fa1-4d2e-883f-0016d3cca42",
        ] {
            assert!(chosen_session_id(bad).is_err(), "{bad:?}");
        }
        let long = "x".repeat(100_000);
        let text = chosen_session_id(&long).expect_err("too long").to_string();
        assert!(text.contains("session_id") && text.len() < 300, "{text}");
    }

    #[test]
    fn spec_without_placeholder_is_rejected() {
        let spec = pb::SessionSpec {
            tests: vec![pb::TestSpec { path: "a".into(), ..Default::default() }],
            runner: Some(pb::Runner {
                framework: pb::Framework::Custom as i32,
                options: Some(pb::runner::Options::Command(pb::CommandOptions { template: "true".into() })),
                ..Default::default()
            }),
            ..Default::default()
        };
        let e = SessionSpec::try_from(spec).expect_err("no {}");
        assert!(e.to_string().contains("command.template"), "{e}");
    }
}

/// Every conversion at the proto edge, fed arbitrary bytes (decoded as the message it expects)
/// and arbitrary well-formed messages: none panics, and every refusal names the field.
#[cfg(test)]
mod edge {
    use proptest::prelude::*;
    use prost::Message;

    use super::*;

    #[test]
    fn a_huge_report_is_cut_to_fit_in_an_event_and_too_many_cases_are_refused() {
        let case = pb::CaseResult {
            name: "n".repeat(10_000),
            message: "m".repeat(20_000),
            output: vec![b'o'; 100_000],
            outcome: pb::Outcome::Passed as i32,
            ..Default::default()
        };
        let report = pb::TestReport {
            message: "é".repeat(1 << 19),
            cases: vec![case; 500],
            outcome: pb::Outcome::Passed as i32,
            ..Default::default()
        };
        let r = Report::try_from(report).expect("kept, cut");
        assert_eq!(r.cases.len(), 500, "every case counts");
        let case_bytes: usize = r.cases.iter().map(|c| c.message.len() + c.output.len()).sum();
        assert!(case_bytes <= MAX_CASES_BYTES, "{case_bytes}");
        assert!(r.cases.iter().all(|c| c.name.len() == MAX_CASE_NAME_BYTES));
        assert!(r.message.len() <= MAX_REPORT_MESSAGE_BYTES && r.message.len() > MAX_REPORT_MESSAGE_BYTES - 2);
        let many = pb::TestReport { cases: vec![pb::CaseResult::default(); MAX_CASES + 1], ..Default::default() };
        let e = Report::try_from(many).expect_err("refused");
        assert!(names_a_field(&e), "{e}");
    }

    /// A refusal that says which field is wrong.
    fn names_a_field(e: &BadMessage) -> bool {
        let text = e.to_string();
        text.starts_with("field `") || text.starts_with("missing field `")
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => "[a-z{}./ -]{0,12}",
            1 => any::<String>(),
            1 => (0usize..3, 1usize..5000).prop_map(|(c, n)| ["x", "{}", "\u{1b}"][c].repeat(n)),
        ]
    }

    fn spec() -> impl Strategy<Value = pb::SessionSpec> {
        (
            text(),
            proptest::collection::vec((text(), any::<u64>()), 0..4),
            (0i32..10, 0i32..5, text()),
            proptest::collection::btree_map(text(), text(), 0..3),
            (any::<u32>(), any::<u32>(), any::<u64>()),
            proptest::collection::btree_map(text(), text(), 0..3),
        )
            .prop_map(
                |(name, tests, (framework, isolation, template), env, (priority, max_slots, timeout), labels)| {
                    pb::SessionSpec {
                        name,
                        tests: tests.into_iter().map(|(path, size_bytes)| pb::TestSpec { path, size_bytes }).collect(),
                        runner: Some(pb::Runner {
                            framework,
                            isolation,
                            options: Some(pb::runner::Options::Command(pb::CommandOptions { template })),
                            ..Default::default()
                        }),
                        env: env.into_iter().collect(),
                        priority,
                        max_slots,
                        test_timeout_ms: timeout,
                        required_labels: labels.into_iter().collect(),
                        ..Default::default()
                    }
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(spec) = pb::SessionSpec::decode(bytes.as_slice())
                && let Err(e) = SessionSpec::try_from(spec)
            {
                prop_assert!(names_a_field(&e), "{e}");
            }
            if let Ok(register) = pb::Register::decode(bytes.as_slice()) {
                let slots = register.slots;
                let held = register.held.clone();
                if let Err(e) = WorkerSpec::try_from(register) {
                    prop_assert!(names_a_field(&e), "{e}");
                }
                let _ = claims(&held, slots.clamp(1, 4096));
            }
            if let Ok(report) = pb::TestReport::decode(bytes.as_slice()) {
                let _ = Report::try_from(report);
            }
            if let Ok(assignment) = pb::AssignmentRef::decode(bytes.as_slice()) {
                let _ = AssignmentKey::try_from(&assignment);
            }
            if let Ok(plan) = pb::PlanRequest::decode(bytes.as_slice()) {
                let _ = plan_request(plan.project, plan.tests);
            }
            let _ = chosen_session_id(&String::from_utf8_lossy(&bytes));
        }

        #[test]
        fn arbitrary_session_specs_are_taken_or_refused_by_field(spec in spec()) {
            match SessionSpec::try_from(spec) {
                Ok(spec) => {
                    // What is taken is within the limits.
                    prop_assert!(spec.name.len() <= MAX_SESSION_NAME_BYTES);
                    prop_assert!(spec.tests.iter().all(|p| p.len() <= MAX_TEST_PATH_BYTES));
                    if let Some(template) = spec.runner.template() {
                        let longest = spec.tests.iter().map(String::len).max().unwrap_or(0);
                        prop_assert!(expanded_bound(template, longest) <= MAX_COMMAND_BYTES);
                        for path in &spec.tests {
                            prop_assert!(testgrid_proto::frameworks::expand_command(template, path).len() <= MAX_COMMAND_BYTES);
                        }
                    }
                }
                Err(e) => prop_assert!(names_a_field(&e), "{e}"),
            }
        }
    }
}
