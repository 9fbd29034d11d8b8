//! Helpers shared by the CLI integration tests: run the built `portcullis` binary, manage
//! temporary files, read its JSON Lines output.

// Each test file uses a different subset of these helpers.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

pub mod up;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

/// A path in the repository (relative to its root).
pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

/// A path in the shared conformance material, beside the repository.
pub fn shared(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared").join(path)
}

/// What a run of the binary gave.
#[derive(Debug)]
pub struct Run {
    /// The exit code; `None` when killed by a signal (a stack overflow, say).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// The stdout lines parsed as JSON, one value a line.
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    /// The stderr lines.
    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr.lines().collect()
    }

    /// Asserts the process ended by itself (no signal) without a Rust panic message.
    pub fn assert_no_panic(&self) {
        assert!(self.code.is_some(), "killed by a signal; stderr: {}", self.stderr);
        assert_ne!(
            self.code,
            Some(101),
            "exit code 101 is Rust's panic code; stderr: {}",
            self.stderr
        );
        assert!(!self.stderr.contains("panicked"), "panic: {}", self.stderr);
    }
}

impl From<std::process::Output> for Run {
    fn from(out: std::process::Output) -> Run {
        Run {
            code: out.status.code(),
            stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Runs `portcullis ARGS` with no standard input.
pub fn portcullis<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Run {
    run_with(args, None, &[])
}

/// Runs `portcullis ARGS` with `input` on standard input.
pub fn portcullis_stdin<S: AsRef<std::ffi::OsStr>>(args: &[S], input: Vec<u8>) -> Run {
    run_with(args, Some(input), &[])
}

/// Runs `portcullis ARGS` with optional standard input and extra environment variables.
pub fn run_with<S: AsRef<std::ffi::OsStr>>(args: &[S], input: Option<Vec<u8>>, env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("NO_COLOR")
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn portcullis");
    // Write from a thread: the child may fill its stdout pipe before reading all its input.
    let writer = input.map(|bytes| {
        let mut stdin = child.stdin.take().expect("stdin");
        std::thread::spawn(move || {
            // The child may stop reading early (a bad policy): a broken pipe is fine.
            let _ = stdin.write_all(&bytes);
        })
    });
    let out = child.wait_with_output().expect("wait for portcullis");
    if let Some(w) = writer {
        w.join().expect("stdin writer");
    }
    Run::from(out)
}

/// A temporary directory, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new, empty directory with a unique name.
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "portcullis-cli-{tag}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    /// A path inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Writes a file and returns its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, contents).expect("write temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The example policy shipped in `examples/`.
pub fn example_policy() -> String {
    repo("examples/policy.yaml").display().to_string()
}

/// The keys of one output line, exactly as the issue lists them.
pub const LINE_KEYS: [&str; 7] = [
    "kind",
    "namespace",
    "name",
    "decision",
    "policy",
    "violations",
    "unverified",
];
/// The keys every violation has.
pub const VIOLATION_KEYS: [&str; 5] = ["type", "properties", "action", "containers", "message"];
/// Keys a violation may add: the PSA check ids of rules mapped to Pod Security Admission.
pub const VIOLATION_OPTIONAL_KEYS: [&str; 1] = ["checks"];

/// Asserts a decision line has exactly the documented shape.
pub fn assert_line_shape(line: &Value) {
    let obj = line.as_object().unwrap_or_else(|| panic!("not an object: {line}"));
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut want = LINE_KEYS.to_vec();
    want.sort_unstable();
    assert_eq!(keys, want, "keys of {line}");
    for k in ["kind", "namespace", "name", "policy"] {
        assert!(obj[k].is_string(), "{k} is a string in {line}");
    }
    let decision = obj["decision"].as_str().unwrap();
    assert!(decision == "allow" || decision == "block", "decision {decision:?}");
    for v in obj["violations"].as_array().unwrap() {
        let vo = v.as_object().unwrap_or_else(|| panic!("violation not an object: {v}"));
        for k in VIOLATION_KEYS {
            assert!(vo.contains_key(k), "violation lacks {k}: {v}");
        }
        for k in vo.keys() {
            assert!(
                VIOLATION_KEYS.contains(&k.as_str()) || VIOLATION_OPTIONAL_KEYS.contains(&k.as_str()),
                "unexpected violation key {k:?}: {v}"
            );
        }
        assert!(vo["type"].is_string());
        let props = vo["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("properties: {v}"));
        assert!(props.values().all(Value::is_string), "property values are strings: {v}");
        let action = vo["action"].as_str().unwrap();
        assert!(action == "log" || action == "block", "action {action:?}");
        assert!(vo["containers"].as_array().unwrap().iter().all(Value::is_string));
        assert!(vo["message"].is_string());
    }
    assert!(obj["unverified"].is_array());
    // A block decision needs a blocking violation, and vice versa.
    let blocking = obj["violations"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["action"] == "block");
    assert_eq!(
        decision == "block",
        blocking,
        "decision agrees with the violations: {line}"
    );
}

/// `(name, decision)` of each line.
pub fn names_and_decisions(lines: &[Value]) -> Vec<(String, String)> {
    lines
        .iter()
        .map(|l| {
            (
                l["name"].as_str().unwrap().to_owned(),
                l["decision"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The violation types of a line, in order.
pub fn violation_types(line: &Value) -> Vec<String> {
    line["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["type"].as_str().unwrap().to_owned())
        .collect()
}

/// A minimal Pod manifest as JSON; `privileged` sets the container's security context.
pub fn pod_json(name: &str, namespace: &str, image: &str, privileged: bool) -> String {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"containers": [{
            "name": "app",
            "image": image,
            "securityContext": {"privileged": privileged}
        }]}
    })
    .to_string()
}

/// A Pod AdmissionReview with or without hostNetwork.
pub fn pod_review(uid: &str, host_network: bool) -> String {
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid, "operation": "CREATE", "namespace": "apps",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
                       "spec": {"hostNetwork": host_network, "containers": [{"name": "app", "image": "nginx:1.27"}]}}
        }
    })
    .to_string()
}
