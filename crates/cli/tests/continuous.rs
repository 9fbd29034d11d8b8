//! The continuous scanning commands end to end: the real `portcullis` binary against
//! `portcullis up` (every service, the continuous one included, on one loopback address),
//! and against `serve policy-store` + `serve continuous` (PostgreSQL, NATS; the continuous
//! service on its own address, reached with `--continuous-server`):
//! an inventory with a violating pod opens a finding, the connector's watch gets the isolate
//! command and acks it, and a draft policy's preview shows what it would change while
//! applying nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{BIN, Run, TempDir};
use portcullis_test_kit::{NatsServer, TestDatabase};
use serde_json::Value;

/// How long `up` may take to print its ready line (a cold SQLite file, migrations).
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// How long a finding or a command may take to show (the service promises a second; the
/// margin is for a loaded test machine, and is no timing assertion).
const SHOW_TIMEOUT: Duration = Duration::from_secs(30);

/// The environment variables the client reads; removed so the caller's shell cannot leak in.
const CLIENT_ENV: [&str; 5] = [
    "PORTCULLIS_SERVER",
    "PORTCULLIS_API_KEY",
    "PORTCULLIS_OPERATOR_KEY",
    "PORTCULLIS_CA_CERT",
    "PORTCULLIS_CONTINUOUS_SERVER",
];

/// The services under test, killed (by their process ids) when dropped: `portcullis up`, or
/// `serve policy-store` and `serve continuous` on PostgreSQL and NATS.
struct Stack {
    children: Vec<Child>,
    /// `--server`: the policy store (and in `up` every service).
    url: String,
    /// `--continuous-server`.
    continuous_url: String,
    admin_key: String,
    dir: TempDir,
    /// The distributed stack's database, NATS server and the runtime they live on.
    _fixtures: Option<(TestDatabase, NatsServer, tokio::runtime::Runtime)>,
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// The operator key the services are started with.
const OPERATOR_KEY: &str = "operator-key-for-continuous-cli-tests";

/// The service credential of the distributed services.
const SERVICE_TOKEN: &str = "service-token-for-continuous-cli-tests";

/// Spawns a server process, its log in `log`, and returns it with the URL of its first
/// stdout line starting with `prefix`.
fn spawn_server(cmd: &mut Command, prefix: &str, log: &Path, env: &[(&str, &str)]) -> (Child, String) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(log).unwrap()));
    for var in CLIENT_ENV.iter().chain(&SERVER_ENV) {
        cmd.env_remove(var);
    }
    cmd.env("PORTCULLIS_OPERATOR_KEY", OPERATOR_KEY);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn portcullis");
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
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                if let Some(url) = line.strip_prefix(prefix) {
                    return (child, url.trim().to_owned());
                }
            }
            Err(_) if Instant::now() < deadline => {}
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "no ready line {prefix:?}; log:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "exited with {status}; log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
    }
}

/// Server settings from the environment that must not leak into the services started here.
const SERVER_ENV: [&str; 4] = [
    "PORTCULLIS_SERVICE_TOKEN",
    "PORTCULLIS_DATABASE_URL",
    "PORTCULLIS_NATS_URL",
    "PORTCULLIS_LISTEN",
];

impl Stack {
    /// `portcullis up`: every service on one address.
    fn up() -> Stack {
        let dir = TempDir::new("continuous-up");
        let data = dir.path("data");
        std::fs::create_dir_all(&data).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(["up", "--data-dir"])
            .arg(&data)
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--admission-listen", &format!("127.0.0.1:{}", free_port())]);
        let (child, url) = spawn_server(&mut cmd, "portcullis listening on ", &dir.path("up.log"), &[]);
        let admin_key = std::fs::read_to_string(data.join("bootstrap-admin.key"))
            .unwrap()
            .trim()
            .to_owned();
        Stack {
            children: vec![child],
            continuous_url: url.clone(),
            url,
            admin_key,
            dir,
            _fixtures: None,
        }
    }

    /// `serve policy-store` and `serve continuous` on a fresh database and a private NATS
    /// server; the continuous service on its own address, a tenant made by the operator.
    fn distributed() -> Stack {
        let dir = TempDir::new("continuous-serve");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let database = runtime.block_on(TestDatabase::create()).unwrap();
        let nats = runtime.block_on(NatsServer::start()).unwrap();
        let mut store = Command::new(BIN);
        store
            .args(["serve", "policy-store", "--database-url", &database.url, "--nats-url"])
            .arg(nats.url())
            .args(["--listen", "127.0.0.1:0"]);
        let (store_child, url) = spawn_server(
            &mut store,
            "portcullis policy-store listening on ",
            &dir.path("store.log"),
            &[("PORTCULLIS_SERVICE_TOKEN", SERVICE_TOKEN)],
        );
        let mut continuous = Command::new(BIN);
        continuous
            .args(["serve", "continuous", "--policy-store-url", &url, "--nats-url"])
            .arg(nats.url())
            .args(["--database-url", &database.url, "--listen", "127.0.0.1:0"]);
        let (continuous_child, continuous_url) = spawn_server(
            &mut continuous,
            "portcullis continuous listening on ",
            &dir.path("continuous.log"),
            &[("PORTCULLIS_SERVICE_TOKEN", SERVICE_TOKEN)],
        );
        let mut stack = Stack {
            children: vec![continuous_child, store_child],
            url,
            continuous_url,
            admin_key: String::new(),
            dir,
            _fixtures: Some((database, nats, runtime)),
        };
        let created = stack.run(OPERATOR_KEY, &["tenant", "create", "shop-co"]);
        assert_eq!(created.code, Some(0), "{}", created.stderr);
        stack.admin_key = created.stdout.trim().to_owned();
        stack
    }

    /// The services' logs, for a failure message.
    fn logs(&self) -> String {
        ["up.log", "store.log", "continuous.log"]
            .iter()
            .filter_map(|f| std::fs::read_to_string(self.dir.path(f)).ok())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Runs a client command with `key`, killed if it runs past `limit`.
    fn run_for(&self, key: &str, args: &[&str], limit: Duration) -> Run {
        let mut cmd = Command::new(BIN);
        cmd.args(["--server", &self.url, "--timeout", "20s", "--api-key", key])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for var in CLIENT_ENV {
            cmd.env_remove(var);
        }
        // Through the environment: the flag belongs to the continuous commands only.
        cmd.env("PORTCULLIS_CONTINUOUS_SERVER", &self.continuous_url);
        let child = cmd.spawn().expect("run portcullis");
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let output = match rx.recv_timeout(limit) {
            Ok(output) => output.expect("wait for portcullis"),
            Err(_) => {
                // Only the process this test started, by its id.
                let _ = Command::new("kill").arg(pid.to_string()).status();
                let output = rx.recv().unwrap().unwrap();
                panic!(
                    "portcullis {args:?} still ran after {limit:?}; stdout: {}; stderr: {}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        };
        let run = Run::from(output);
        run.assert_no_panic();
        run
    }

    fn run(&self, key: &str, args: &[&str]) -> Run {
        self.run_for(key, args, Duration::from_secs(120))
    }

    /// Runs a command as the bootstrap admin and asserts success.
    fn ok(&self, args: &[&str]) -> Run {
        let run = self.run(&self.admin_key, args);
        assert_eq!(run.code, Some(0), "portcullis {args:?} failed: {}", run.stderr);
        run
    }

    /// A command's JSON output (`-o json`), as the bootstrap admin.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let run = self.ok(&all);
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}", run.stdout))
    }

    /// Polls `findings list` until `wanted` holds of its items.
    fn findings_until(&self, args: &[&str], wanted: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let mut all = vec!["findings", "list"];
        all.extend(args);
        let deadline = Instant::now() + SHOW_TIMEOUT;
        loop {
            let items = self.json(&all).as_array().cloned().unwrap_or_default();
            if wanted(&items) {
                return items;
            }
            assert!(
                Instant::now() < deadline,
                "findings list {args:?} never showed what was wanted: {items:?}; log:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The policy: a privileged container is isolated (a hostNetwork pod could not be: the
/// service reports it `not-isolatable`), hostPID is logged.
const POLICY: &str = "\
name: prod.strict
description: Production clusters
default:
  rules:
    - type: containerSecurityContext
      action: block
      mitigation: isolate
      statement: {properties: [{key: privileged, value: \"true\"}]}
    - type: podSecurityContext
      action: block
      mitigation: log
      statement: {properties: [{key: hostPID, value: \"true\"}]}
";

/// The draft: the same policy without the privileged rule.
const DRAFT: &str = "\
name: prod.strict
description: Production clusters
default:
  rules:
    - type: podSecurityContext
      action: block
      mitigation: log
      statement: {properties: [{key: hostPID, value: \"true\"}]}
";

/// Two pods as `kubectl get pods -o yaml` prints them: `web-1` privileged (isolated by the
/// policy), `web-2` clean; and a Service, skipped.
const PODS: &str = "\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata:
    name: web-1
    namespace: shop
    uid: 7d1c0c52-0000-4000-8000-000000000001
    labels: {app: web}
  spec:
    containers:
    - name: web
      image: registry.example.com/shop/web:1.0
      securityContext: {privileged: true}
  status:
    phase: Running
    containerStatuses:
    - name: web
      imageID: registry.example.com/shop/web@sha256:4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945
- apiVersion: v1
  kind: Pod
  metadata:
    name: web-2
    namespace: shop
    uid: 7d1c0c52-0000-4000-8000-000000000002
    labels: {app: web}
  spec:
    containers:
    - name: web
      image: registry.example.com/shop/web:1.0
  status:
    phase: Running
metadata:
  resourceVersion: \"\"
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
";

fn is_privileged_finding(f: &Value) -> bool {
    f["pod"] == "web-1" && f["rule"].as_str().is_some_and(|r| r.contains("privileged"))
}

#[test]
fn up_a_violating_pod_is_found_isolated_and_previewed() {
    scenario(&Stack::up());
}

#[test]
fn distributed_a_violating_pod_is_found_isolated_and_previewed() {
    scenario(&Stack::distributed());
}

/// Sync, finding, watch and ack, preview, restore, fix, on `up` (the stack).
fn scenario(up: &Stack) {
    let policy = up.dir.path("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    up.ok(&["policy", "apply", "-f", policy.to_str().unwrap()]);
    let created = up.ok(&["cluster", "create", "prod-eu", "--policy", "prod.strict"]);
    let connector = created.stdout.trim().to_owned();
    assert!(!connector.is_empty());

    // The connector's snapshot.
    let pods = up.dir.path("pods.yaml");
    std::fs::write(&pods, PODS).unwrap();
    let sync = up.run(
        &connector,
        &["inventory", "sync", "-f", pods.to_str().unwrap(), "-o", "json"],
    );
    assert_eq!(sync.code, Some(0), "{}", sync.stderr);
    let summary: Value = serde_json::from_str(&sync.stdout).unwrap();
    assert_eq!(summary["podsSent"], 2, "{summary}");
    assert_eq!(summary["podsUpserted"], 2, "{summary}");
    assert_eq!(summary["errors"], serde_json::json!([]), "{summary}");
    assert!(sync.stderr.contains("Service (1)"), "{}", sync.stderr);

    // The finding, with the documented fields.
    let open = up.findings_until(&["--open", "--cluster", "prod-eu"], |items| {
        items.iter().any(is_privileged_finding)
    });
    let finding = open.iter().find(|f| is_privileged_finding(f)).unwrap();
    assert_eq!(finding["namespace"], "shop");
    assert_eq!(finding["uid"], "7d1c0c52-0000-4000-8000-000000000001");
    assert_eq!(finding["mitigation"], "isolate");
    assert_eq!(finding["resolved"], Value::Null);
    assert!(
        finding["firstSeen"].is_string() && finding["lastSeen"].is_string(),
        "{finding}"
    );
    assert!(
        !open.iter().any(|f| f["pod"] == "web-2" && f["mitigation"] == "isolate"),
        "the clean pod is not isolated: {open:?}"
    );

    // The connector's watch gets the isolate command and acks it.
    let watch = up.run_for(
        &connector,
        &["commands", "watch", "--count", "1"],
        Duration::from_secs(60),
    );
    assert_eq!(watch.code, Some(0), "{}", watch.stderr);
    let lines = watch.json_lines();
    assert_eq!(lines.len(), 1, "{}", watch.stdout);
    let command = &lines[0];
    assert_eq!(command["type"], "isolate", "{command}");
    assert_eq!(command["pod"], "web-1");
    assert_eq!(command["namespace"], "shop");
    assert_eq!(command["networkPolicy"]["kind"], "NetworkPolicy", "{command}");
    assert!(
        command["isolationLabel"].as_str().is_some_and(|l| !l.is_empty()),
        "{command}"
    );
    let id = command["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + SHOW_TIMEOUT;
    loop {
        let listed = up.json(&["commands", "list", "--cluster", "prod-eu"]);
        let state = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id.as_str())
            .map(|c| c["state"].clone());
        if state == Some(Value::String("done".into())) {
            break;
        }
        assert!(Instant::now() < deadline, "the ack never showed: {listed}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // A draft without the privileged rule would resolve the finding and lift the isolation;
    // nothing is applied.
    let draft = up.dir.path("draft.yaml");
    std::fs::write(&draft, DRAFT).unwrap();
    let before = up.json(&["policy", "get", "prod.strict"]);
    let preview = up.json(&["policy", "apply", "-f", draft.to_str().unwrap(), "--preview"]);
    let changes = preview.as_array().unwrap();
    assert!(
        changes
            .iter()
            .any(|c| c["change"] == "resolved" && is_privileged_finding(c)),
        "{preview}"
    );
    let table = up.ok(&["policy", "apply", "-f", draft.to_str().unwrap(), "--preview"]);
    let mitigations = table
        .stdout
        .split("Mitigations it would order:\n")
        .nth(1)
        .unwrap_or_default();
    assert!(mitigations.contains("restore-isolation"), "{}", table.stdout);
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.starts_with("resolved ") && l.contains("web-1")),
        "{}",
        table.stdout
    );
    assert_eq!(
        up.json(&["policy", "get", "prod.strict"]),
        before,
        "the preview applied nothing"
    );
    let still = up.findings_until(&["--open"], |items| items.iter().any(is_privileged_finding));
    assert!(still.iter().any(is_privileged_finding));

    // An admin lifts the isolation by hand: the uid comes from the inventory.
    let restore = up.json(&[
        "commands",
        "restore",
        "web-1",
        "-n",
        "shop",
        "--cluster",
        "prod-eu",
        "--reason",
        "checked",
    ]);
    assert_eq!(restore["type"], "restore-isolation", "{restore}");
    assert_eq!(restore["origin"], "manual");
    assert_eq!(restore["uid"], "7d1c0c52-0000-4000-8000-000000000001");
    assert_eq!(restore["reason"], "checked");

    // The pod fixed: the finding resolves, listed without --open only.
    std::fs::write(&pods, PODS.replace("{privileged: true}", "{privileged: false}")).unwrap();
    let sync = up.run(&connector, &["inventory", "sync", "-f", pods.to_str().unwrap()]);
    assert_eq!(sync.code, Some(0), "{}", sync.stderr);
    let all = up.findings_until(&["--cluster", "prod-eu"], |items| {
        items
            .iter()
            .any(|f| is_privileged_finding(f) && f["resolved"].is_string())
    });
    assert!(
        all.iter()
            .all(|f| !is_privileged_finding(f) || f["resolved"].is_string()),
        "{all:?}"
    );
    let open = up.json(&["findings", "list", "--open"]);
    assert!(!open.as_array().unwrap().iter().any(is_privileged_finding), "{open}");
}
