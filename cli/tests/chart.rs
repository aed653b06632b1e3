//! The Helm chart describes a grid that works: the chart is rendered (every toggle on: TLS with
//! mTLS, tokens made on install, two worker pools), and each rendered container's command, args
//! and env run as local processes against each other on loopback, the coordinator from its
//! StatefulSet and one worker from each pool's Deployment. A mistyped flag, env var, mount path
//! or secret key in the chart fails here.
//!
//! What stands in for Kubernetes, and nothing more: each volume is a folder (a Secret's holds its
//! keys as files), a path under a mount is moved into its folder, a listen address takes a port
//! the OS chooses, the coordinator's Service name resolves to `localhost` (which the generated
//! certificate names), and `fieldRef: metadata.name` is the pod's name.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;
use support::{Proc, Workspace, bin, first_line, http_get, repo, stderr, stdout, testgrid, wait_for};

/// The chart rendered with `values` (a file under helm/testgrid/ci), as JSON objects.
fn render(values: &str) -> Vec<Value> {
    let repo = repo();
    let ci = repo.join("helm/testgrid/ci");
    let tools = Command::new(ci.join("tools.sh")).status().expect("tools.sh runs");
    assert!(tools.success(), "helm/testgrid/ci/tools.sh could not install helm and its checkers");
    let out = tempfile::tempdir().expect("tempdir");
    let rendered = out.path().join("rendered.yaml");
    let helm = Command::new(repo.join("target/tools/helm"))
        .args(["template", "testgrid"])
        .arg(repo.join("helm/testgrid"))
        .arg("-f")
        .arg(ci.join(values))
        .args(["--namespace", "ci"])
        .output()
        .expect("helm runs");
    assert!(helm.status.success(), "helm template: {}", stderr(&helm));
    std::fs::write(&rendered, &helm.stdout).expect("write");
    let json = Command::new("node")
        .arg("render-json.mjs")
        .arg(&rendered)
        .current_dir(repo.join("target/tools/crd"))
        .output()
        .expect("node runs");
    assert!(json.status.success(), "render-json.mjs: {}", stderr(&json));
    serde_json::from_slice(&json.stdout).expect("a JSON array")
}

fn b64(text: &str) -> Vec<u8> {
    // base64 without a crate: the `base64` tool, fed on stdin.
    let mut child =
        Command::new("base64").arg("-d").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("base64 runs");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), text.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("base64 ends");
    assert!(out.status.success());
    out.stdout
}

/// The rendered Secrets: name -> key -> bytes.
fn secrets(objects: &[Value]) -> BTreeMap<String, BTreeMap<String, Vec<u8>>> {
    objects
        .iter()
        .filter(|o| o["kind"] == "Secret")
        .map(|o| {
            let name = o["metadata"]["name"].as_str().expect("a name").to_string();
            let data = o["data"].as_object().map_or_else(BTreeMap::new, |d| {
                d.iter().map(|(k, v)| (k.clone(), b64(v.as_str().expect("base64 text")))).collect()
            });
            (name, data)
        })
        .collect()
}

/// One pod of a rendered workload, made local.
struct Pod {
    name: String,
    /// mountPath -> the folder standing in for it (longest first).
    mounts: Vec<(String, PathBuf)>,
    container: Value,
    _dirs: Vec<tempfile::TempDir>,
}

impl Pod {
    fn of(workload: &Value, secrets: &BTreeMap<String, BTreeMap<String, Vec<u8>>>) -> Pod {
        let name = format!("{}-0", workload["metadata"]["name"].as_str().expect("a name"));
        let spec = &workload["spec"]["template"]["spec"];
        let containers = spec["containers"].as_array().expect("containers");
        assert_eq!(containers.len(), 1, "one container per pod");
        let mut volumes: BTreeMap<String, PathBuf> = BTreeMap::new();
        let mut dirs = Vec::new();
        let claims = workload["spec"]["volumeClaimTemplates"].as_array().cloned().unwrap_or_default();
        let all = spec["volumes"].as_array().cloned().unwrap_or_default();
        for volume in all.iter().chain(claims.iter().map(|c| &c["metadata"])) {
            let vname = volume["name"].as_str().expect("a volume name").to_string();
            let dir = tempfile::tempdir().expect("tempdir");
            if let Some(secret) = volume.get("secret") {
                let sname = secret["secretName"].as_str().expect("secretName");
                let data = secrets.get(sname).unwrap_or_else(|| panic!("volume {vname}: no Secret {sname} rendered"));
                let items: Vec<(String, String)> = match secret["items"].as_array() {
                    Some(items) => items
                        .iter()
                        .map(|i| (i["key"].as_str().expect("key").into(), i["path"].as_str().expect("path").into()))
                        .collect(),
                    None => data.keys().map(|k| (k.clone(), k.clone())).collect(),
                };
                for (key, path) in items {
                    let bytes = data.get(&key).unwrap_or_else(|| panic!("Secret {sname} has no key {key}"));
                    std::fs::write(dir.path().join(path), bytes).expect("write");
                }
            }
            volumes.insert(vname, dir.path().to_path_buf());
            dirs.push(dir);
        }
        let container = containers[0].clone();
        let mut mounts: Vec<(String, PathBuf)> = container["volumeMounts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|m| {
                let vname = m["name"].as_str().expect("name");
                let dir = volumes.get(vname).unwrap_or_else(|| panic!("a mount of {vname}, which is no volume"));
                (m["mountPath"].as_str().expect("mountPath").to_string(), dir.clone())
            })
            .collect();
        mounts.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
        Pod { name, mounts, container, _dirs: dirs }
    }

    /// `text` with paths under a mount moved into its folder, listen addresses on OS-chosen
    /// loopback ports, and the coordinator's Service at `grid`.
    fn local(&self, text: &str, coordinator: &str, grid: Option<(&str, &str)>) -> String {
        let mut text = text.to_string();
        for (path, dir) in &self.mounts {
            if let Some(at) = text.find(path.as_str())
                && text[at + path.len()..].chars().next().is_none_or(|c| c == '/')
            {
                text = format!("{}{}{}", &text[..at], dir.display(), &text[at + path.len()..]);
                break;
            }
        }
        if let Some(rest) = text.strip_prefix("0.0.0.0:").or_else(|| text.split_once("=0.0.0.0:").map(|(_, r)| r))
            && rest.chars().all(|c| c.is_ascii_digit())
        {
            text = text.replace(&format!("0.0.0.0:{rest}"), "127.0.0.1:0");
        }
        if let Some((grpc, http)) = grid {
            let service = format!("{coordinator}.ci.svc");
            text = text.replace(&format!("{service}:7700"), &format!("localhost:{grpc}"));
            text = text.replace(&format!("{service}:7701"), &format!("localhost:{http}"));
        }
        text
    }

    /// Start the container's command; return it with the `name=ADDR` fields of the first line
    /// it prints (the addresses it bound).
    fn spawn(
        &self,
        secrets: &BTreeMap<String, BTreeMap<String, Vec<u8>>>,
        coordinator: &str,
        grid: Option<(&str, &str)>,
    ) -> Proc {
        let c = &self.container;
        let command: Vec<&str> = c["command"].as_array().expect("a command").iter().filter_map(Value::as_str).collect();
        let mut cmd = Command::new(bin(command[0]));
        cmd.args(&command[1..]);
        for arg in c["args"].as_array().cloned().unwrap_or_default() {
            cmd.arg(self.local(arg.as_str().expect("args are strings"), coordinator, grid));
        }
        cmd.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).env("TESTGRID_LOG", "warn");
        for env in c["env"].as_array().cloned().unwrap_or_default() {
            let name = env["name"].as_str().expect("env name");
            let value = if let Some(v) = env["value"].as_str() {
                self.local(v, coordinator, grid)
            } else if let Some(key) = env["valueFrom"].get("secretKeyRef") {
                let (s, k) = (key["name"].as_str().expect("name"), key["key"].as_str().expect("key"));
                let bytes = secrets.get(s).and_then(|d| d.get(k)).unwrap_or_else(|| panic!("env {name}: no {s}/{k}"));
                String::from_utf8(bytes.clone()).expect("utf-8")
            } else if env["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name" {
                self.name.clone()
            } else {
                panic!("env {name}: a source this test cannot stand in for: {env}");
            };
            cmd.env(name, value);
        }
        Proc { child: cmd.stdout(Stdio::piped()).spawn().expect("the container's command starts") }
    }
}

#[test]
fn the_chart_with_every_toggle_on_describes_a_grid_that_runs_a_session() {
    let objects = render("all-on-values.yaml");
    let secrets = secrets(&objects);
    let workload = |kind: &str, component: &str| -> Vec<&Value> {
        objects
            .iter()
            .filter(|o| o["kind"] == kind && o["metadata"]["labels"]["app.kubernetes.io/component"] == component)
            .collect()
    };
    let coordinators = workload("StatefulSet", "coordinator");
    assert_eq!(coordinators.len(), 1);
    let service = coordinators[0]["spec"]["serviceName"].as_str().expect("serviceName").to_string();
    let coordinator_pod = Pod::of(coordinators[0], &secrets);
    let mut coordinator = coordinator_pod.spawn(&secrets, &service, None);
    let bound = first_line(&mut coordinator);
    let port = |name: &str| bound(name).rsplit(':').next().expect("a port").to_string();
    let (grpc, http) = (port("grpc"), port("http"));
    // Kubernetes' liveness probe: /healthz answers in plaintext even on the TLS port.
    wait_for("the coordinator's /healthz", || http_get(&format!("127.0.0.1:{http}"), "/healthz"));

    let pools = workload("Deployment", "worker");
    assert_eq!(pools.len(), 2, "a Deployment per pool");
    let worker_pods: Vec<Pod> = pools.iter().map(|w| Pod::of(w, &secrets)).collect();
    let mut workers: Vec<Proc> =
        worker_pods.iter().map(|p| p.spawn(&secrets, &service, Some((grpc.as_str(), http.as_str())))).collect();
    let health: Vec<String> = workers.iter_mut().map(|w| first_line(w)("health")).collect();

    // A user as NOTES.txt tells: the admin token from the tokens Secret, the CA from the TLS one.
    let tokens = secrets.keys().find(|k| k.ends_with("-tokens")).expect("a tokens Secret");
    let admin = String::from_utf8(secrets[tokens]["admin-token"].clone()).expect("utf-8");
    let tls = secrets.keys().find(|k| k.ends_with("-tls")).expect("a TLS Secret");
    let ca = tempfile::NamedTempFile::new().expect("tempfile");
    std::fs::write(ca.path(), &secrets[tls]["ca.crt"]).expect("write");
    let ws = Workspace::new();
    for i in 0..4 {
        ws.test(&format!("t{i}.sh"), "test -n \"$HOME\" && echo ran");
    }
    let cli = |args: &[&str]| {
        testgrid(&ws.root())
            .args(args)
            .env("TESTGRID_GRID", format!("https://localhost:{grpc}"))
            .env("TESTGRID_TOKEN", &admin)
            .env("TESTGRID_CA", ca.path())
            .output()
            .expect("testgrid runs")
    };
    let listed = wait_for("both pools' workers to register (over mTLS)", || {
        let out = cli(&["workers", "--json"]);
        let workers: Vec<Value> = stdout(&out).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        (workers.len() == 2).then_some(workers)
    });
    let mut pools_seen: Vec<String> = listed
        .iter()
        .map(|w| w["labels"]["pool"].as_str().unwrap_or_else(|| panic!("a pool label: {w}")).to_string())
        .collect();
    pools_seen.sort();
    assert_eq!(pools_seen, ["default", "gpu"]);
    for w in &listed {
        assert!(worker_pods.iter().any(|p| w["name"] == p.name.as_str()), "named after its pod: {w}");
    }
    // Each worker answers its probes: alive, and ready once registered.
    for addr in &health {
        assert_eq!(http_get(addr, "/healthz").as_deref(), Some("ok\n"));
        wait_for("the worker's readiness", || http_get(addr, "/readyz"));
    }

    let run = cli(&["run"]);
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    let gpu = cli(&["run", "--label", "pool=gpu", "t0.sh"]);
    assert_eq!(gpu.status.code(), Some(0), "{}", stderr(&gpu));
    // The demand signal KEDA reads, over TLS only: plaintext is refused on the TLS port.
    assert!(http_get(&format!("127.0.0.1:{http}"), "/api/v1/demand?pool=gpu").is_none());
}
