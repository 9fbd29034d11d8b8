//! The telemetry commands end to end: the real `portcullis` binary against `portcullis up`
//! (every service, telemetry included, on one loopback address): a connector's `runtime
//! ingest` of Falco events, then `events search` finds them (and refused or unreadable lines
//! are counted, never dropped unsaid); `alerts list` and `risk` answer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{BIN, Run, TempDir};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// How long `up` may take to print its ready line (a cold SQLite file, migrations).
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// The environment variables the client and servers read; removed so the caller's shell
/// cannot leak in.
const ENV: [&str; 9] = [
    "PORTCULLIS_SERVER",
    "PORTCULLIS_API_KEY",
    "PORTCULLIS_OPERATOR_KEY",
    "PORTCULLIS_CA_CERT",
    "PORTCULLIS_TELEMETRY_SERVER",
    "PORTCULLIS_SERVICE_TOKEN",
    "PORTCULLIS_DATABASE_URL",
    "PORTCULLIS_NATS_URL",
    "PORTCULLIS_LISTEN",
];

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// `portcullis up`, killed (by its process id) when dropped.
struct Up {
    child: Child,
    url: String,
    admin_key: String,
    admission_url: String,
    dir: TempDir,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Up {
    fn start() -> Up {
        let dir = TempDir::new("telemetry-up");
        let data = dir.path("data");
        std::fs::create_dir_all(&data).unwrap();
        let log = dir.path("up.log");
        let admission_port = free_port();
        let mut cmd = Command::new(BIN);
        cmd.args(["up", "--data-dir"])
            .arg(&data)
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--admission-listen", &format!("127.0.0.1:{admission_port}")])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()));
        for var in ENV {
            cmd.env_remove(var);
        }
        let mut child = cmd.spawn().expect("spawn portcullis up");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        // Drains stdout, so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + READY_TIMEOUT;
        let url = loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix("portcullis listening on ") {
                        break url.trim().to_owned();
                    }
                }
                Err(_) => {
                    if Instant::now() >= deadline || child.try_wait().ok().flatten().is_some() {
                        let _ = child.kill();
                        let _ = child.wait();
                        panic!(
                            "up never got ready; log:\n{}",
                            std::fs::read_to_string(&log).unwrap_or_default()
                        );
                    }
                }
            }
        };
        let admin_key = std::fs::read_to_string(data.join("bootstrap-admin.key"))
            .unwrap()
            .trim()
            .to_owned();
        // The admission URL has the same scheme as the store's.
        let scheme = if url.starts_with("https://") { "https" } else { "http" };
        let admission_url = format!("{scheme}://127.0.0.1:{admission_port}");
        Up {
            child,
            url,
            admin_key,
            admission_url,
            dir,
        }
    }

    fn run(&self, key: &str, args: &[&str]) -> Run {
        self.run_at(&self.url, key, args)
    }

    fn run_at(&self, url: &str, key: &str, args: &[&str]) -> Run {
        let mut cmd = Command::new(BIN);
        cmd.args(["--server", url, "--timeout", "20s", "--api-key", key])
            .args(args)
            .stdin(Stdio::null());
        for var in ENV {
            cmd.env_remove(var);
        }
        let run = Run::from(cmd.output().expect("run portcullis"));
        run.assert_no_panic();
        run
    }

    fn json(&self, key: &str, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let run = self.run(key, &all);
        assert_eq!(run.code, Some(0), "portcullis {args:?} failed: {}", run.stderr);
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}", run.stdout))
    }
}

/// A Falco event of `rule` in pod `pod` of namespace `shop`, `seconds_ago` before now.
fn falco(rule: &str, pod: &str, seconds_ago: i64) -> String {
    let at = (OffsetDateTime::now_utc() - time::Duration::seconds(seconds_ago))
        .format(&Rfc3339)
        .unwrap();
    json!({
        "output": format!("{at}: Warning {rule} (k8s.ns=shop k8s.pod={pod})"),
        "priority": "Warning",
        "rule": rule,
        "time": at,
        "source": "syscall",
        "output_fields": {
            "container.name": "app",
            "container.image.repository": "registry.example/web",
            "k8s.ns.name": "shop",
            "k8s.pod.name": pod,
            "k8s.pod.labels": {"app": "web"},
        },
    })
    .to_string()
}

const POLICY: &str = "\
name: prod.strict
default:
  rules:
    - type: containerSecurityContext
      action: log
      mitigation: log
      statement: {properties: [{key: privileged, value: \"true\"}]}
";

#[test]
fn up_runtime_ingest_then_events_search_finds_the_events() {
    let up = Up::start();
    let policy = up.dir.write("policy.yaml", POLICY);
    let applied = up.run(&up.admin_key, &["policy", "apply", "-f", policy.to_str().unwrap()]);
    assert_eq!(applied.code, Some(0), "{}", applied.stderr);
    let created = up.run(
        &up.admin_key,
        &["cluster", "create", "prod-eu", "--policy", "prod.strict"],
    );
    assert_eq!(created.code, Some(0), "{}", created.stderr);
    let connector = created.stdout.trim().to_owned();

    let lines = [
        falco("Terminal shell in container", "web-1", 20),
        String::new(),
        falco("Read sensitive file untrusted", "web-1", 10),
        falco("Terminal shell in container", "db-1", 5),
        "{not json".to_owned(),
    ]
    .join("\n");
    let events = up.dir.write("events.jsonl", lines);
    let ingested = up.json(&connector, &["runtime", "ingest", "-f", events.to_str().unwrap()]);
    assert_eq!(ingested["sent"], 4, "{ingested}");
    assert_eq!(ingested["accepted"], 3, "{ingested}");
    assert_eq!(ingested["rejected"], 1, "{ingested}");
    assert_eq!(ingested["errors"].as_array().unwrap().len(), 1, "{ingested}");

    // Stored when the ingest answered: found at once.
    let found = up.json(
        &up.admin_key,
        &["events", "search", "pod:web-1 type:runtime", "--since", "1h"],
    );
    assert_eq!(found["total"], 2, "{found}");
    assert_eq!(found["totalIsLowerBound"], false);
    let events = found["events"].as_array().unwrap();
    assert!(
        events
            .iter()
            .all(|e| e["pod"] == "web-1" && e["type"] == "runtime" && e["namespace"] == "shop"),
        "{found}"
    );
    // Newest first.
    assert_eq!(events[0]["rule"], "Read sensitive file untrusted");
    // An empty query finds every event in the range.
    let all = up.json(&up.admin_key, &["events", "search", "--since", "1h"]);
    assert_eq!(all["total"], 3, "{all}");
    let table = up.run(
        &up.admin_key,
        &["events", "search", "rule:\"Terminal shell in container\""],
    );
    assert_eq!(table.code, Some(0), "{}", table.stderr);
    assert!(
        table.stdout.contains("db-1") && table.stdout.contains("web-1"),
        "{}",
        table.stdout
    );
    assert!(table.stdout.contains("2 shown of 2 matching."), "{}", table.stdout);
    // A bad query is the caller's error.
    let bad = up.run(&up.admin_key, &["events", "search", "nosuchfield:x"]);
    assert_ne!(bad.code, Some(0), "{}", bad.stdout);
    assert!(bad.stderr.contains("unknown field `nosuchfield`"), "{}", bad.stderr);

    // No story completed: no alert, no risk.
    assert_eq!(up.json(&up.admin_key, &["alerts", "list"]), json!([]));
    assert_eq!(up.json(&up.admin_key, &["risk"]), json!([]));
}

/// The AdmissionReview of a Deployment `name` in `shop`, its container privileged or not.
fn deployment_review(name: &str, privileged: bool) -> String {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": format!("uid-{name}"), "operation": "CREATE", "namespace": "shop",
        "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
        "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
        "object": {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"template": {"metadata": {"labels": {"app": name}}, "spec": {
                "containers": [{"name": "app", "image": "registry.example/web:1",
                                "securityContext": {"privileged": privileged}}]}}}}}})
    .to_string()
}

#[test]
fn up_admissions_reviewed_under_a_log_only_policy_then_policy_replay_of_a_stricter_draft() {
    let up = Up::start();
    let live = format!("{POLICY}xdrEnabled: true\n");
    let policy = up.dir.write("policy.yaml", &live);
    let applied = up.run(&up.admin_key, &["policy", "apply", "-f", policy.to_str().unwrap()]);
    assert_eq!(applied.code, Some(0), "{}", applied.stderr);
    let created = up.run(
        &up.admin_key,
        &["cluster", "create", "prod-eu", "--policy", "prod.strict"],
    );
    assert_eq!(created.code, Some(0), "{}", created.stderr);
    let connector = created.stdout.trim().to_owned();

    // Reviewed by the admission service: `web` privileged (logged, allowed), `api` clean.
    for (name, privileged) in [("web", true), ("api", false)] {
        let file = up
            .dir
            .write(&format!("{name}.json"), deployment_review(name, privileged));
        let run = up.run_at(&up.admission_url, &connector, &["review", "-f", file.to_str().unwrap()]);
        assert_eq!(run.code, Some(0), "{}", run.stderr);
    }
    // Decision events reach telemetry through the bus: wait until both are stored.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = up.json(&up.admin_key, &["events", "search", "type:admission", "--since", "1h"]);
        if found["total"] == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "admission decisions never stored: {found}");
        std::thread::sleep(Duration::from_millis(200));
    }

    let draft = up.dir.write("draft.yaml", live.replace("action: log", "action: block"));
    let replayed = up.json(
        &up.admin_key,
        &["policy", "replay", "-f", draft.to_str().unwrap(), "--since", "1h"],
    );
    assert_eq!(replayed["replayed"], 2, "{replayed}");
    let workloads = replayed["workloads"].as_array().unwrap();
    assert_eq!(workloads.len(), 1, "{replayed}");
    assert_eq!(workloads[0]["workload"], "Deployment/web");
    assert_eq!(workloads[0]["namespace"], "shop");
    assert_eq!(workloads[0]["counts"]["newlyBlocked"], 1, "{replayed}");
    assert_eq!(
        workloads[0]["counts"]["changes"],
        json!([{"decided": "log", "wouldBe": "block", "count": 1}])
    );
    assert_eq!(replayed["unchangedWorkloads"], 1);
    let table = up.run(&up.admin_key, &["policy", "replay", "-f", draft.to_str().unwrap()]);
    assert_eq!(table.code, Some(0), "{}", table.stderr);
    assert!(
        table.stdout.contains("Deployment/web") && table.stdout.contains("1 log→block"),
        "{}",
        table.stdout
    );
    assert!(!table.stdout.contains("Deployment/api"), "{}", table.stdout);
    // The live policy as the draft: nothing differs.
    let same = up.json(&up.admin_key, &["policy", "replay", "-f", policy.to_str().unwrap()]);
    assert_eq!(same["workloads"], json!([]), "{same}");
    // A draft the engine refuses never reaches the service.
    let bad = up.dir.write("bad.yaml", "name: x\ndefault: {rules: [{type: nope}]}\n");
    let refused = up.run(&up.admin_key, &["policy", "replay", "-f", bad.to_str().unwrap()]);
    assert_ne!(refused.code, Some(0), "{}", refused.stdout);
}
