//! The continuous scanning commands end to end: the real `portcullis` binary against
//! `portcullis up` (every service, the continuous one included, on one loopback address):
//! an inventory with a violating pod opens a finding, the connector's watch gets the isolate
//! command and acks it, and a draft policy's preview shows what it would change while
//! applying nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{BIN, Run, TempDir};
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

/// A running `portcullis up`, killed when dropped.
struct Up {
    child: Child,
    url: String,
    admin_key: String,
    dir: TempDir,
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

impl Up {
    fn start() -> Up {
        let dir = TempDir::new("continuous-up");
        let data = dir.path("data");
        std::fs::create_dir_all(&data).unwrap();
        let log = std::fs::File::create(dir.path("up.log")).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(["up", "--data-dir"])
            .arg(&data)
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--admission-listen", &format!("127.0.0.1:{}", free_port())])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        for var in CLIENT_ENV {
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
                    if line.starts_with("portcullis listening on ")
                        && let Some(url) = line.split_whitespace().find(|w| w.starts_with("http://"))
                    {
                        break url.to_owned();
                    }
                }
                Err(_) if Instant::now() < deadline => {}
                Err(_) => {
                    let _ = child.kill();
                    let log = std::fs::read_to_string(dir.path("up.log")).unwrap_or_default();
                    panic!("`portcullis up` printed no ready line; log:\n{log}");
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(dir.path("up.log")).unwrap_or_default();
                panic!("`portcullis up` exited with {status}; log:\n{log}");
            }
        };
        let admin_key = std::fs::read_to_string(data.join("bootstrap-admin.key"))
            .unwrap()
            .trim()
            .to_owned();
        Up {
            child,
            url,
            admin_key,
            dir,
        }
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
                std::fs::read_to_string(self.dir.path("up.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
fn a_violating_pod_is_found_isolated_and_previewed() {
    let up = Up::start();
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
