//! Helpers shared by the engine's behaviour tests: policies and pods built as JSON values,
//! and shortcuts to parse and evaluate them.
//!
//! Each test file uses a subset of these helpers, hence `dead_code` is allowed.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use portcullis_engine::evaluate::{
    CompiledPolicy, Decision, DigestMap, EvalContext, FailureMode, NoDigests, RunningDecision, Signatures,
    TrustedImage, Verdict, VerdictMap, Violation,
};
use portcullis_engine::input::{Subject, parse_document};
use portcullis_engine::scan::{Finding, MemoryScanStore, ScanResult, ScanType, Severity};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::macros::datetime;

/// The fixed "now" of every evaluation (as `--now` would give it).
pub const NOW: OffsetDateTime = datetime!(2025-06-01 12:00 UTC);

/// Digests used by the tests (well-formed sha256 digests).
pub const DIGEST_A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
/// A second digest.
pub const DIGEST_B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
/// A third digest.
pub const DIGEST_C: &str = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

/// The shared conformance material beside the repository.
pub fn shared(path: &str) -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/conformance")).join(path)
}

/// Every file under `dir` whose name ends in `.extension`, recursively, sorted.
pub fn files_with_extension(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == extension) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

// ---------------------------------------------------------------------------------------
// Policies
// ---------------------------------------------------------------------------------------

/// A statement with the given properties.
pub fn statement(props: &[(&str, &str)]) -> Value {
    json!({"properties": props.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>()})
}

/// A rule with an admission action (mitigation none).
pub fn rule(rule_type: &str, props: &[(&str, &str)], action: &str) -> Value {
    json!({"type": rule_type, "action": action, "statement": statement(props)})
}

/// A rule with both an action and a mitigation.
pub fn rule_with(rule_type: &str, props: &[(&str, &str)], action: &str, mitigation: &str) -> Value {
    json!({"type": rule_type, "action": action, "mitigation": mitigation, "statement": statement(props)})
}

/// A rule with action `block`.
pub fn block(rule_type: &str, key: &str, value: &str) -> Value {
    rule(rule_type, &[(key, value)], "block")
}

/// An exception.
pub fn exception(exception_type: &str, key: &str, value: &str) -> Value {
    json!({"type": exception_type, "statement": statement(&[(key, value)])})
}

/// An exception limited to some namespaces.
pub fn exception_in(exception_type: &str, key: &str, value: &str, namespaces: &[&str]) -> Value {
    json!({"type": exception_type, "statement": statement(&[(key, value)]), "namespaces": namespaces})
}

/// Compiles a policy document given as a JSON value.
pub fn compile(doc: &Value) -> CompiledPolicy {
    CompiledPolicy::from_text(&doc.to_string()).unwrap_or_else(|e| panic!("policy refused: {e}\n{doc:#}"))
}

/// A policy whose default definition has these rules and nothing else.
pub fn policy(rules: Vec<Value>) -> CompiledPolicy {
    compile(&json!({"name": "test", "default": {"rules": rules}}))
}

/// A policy whose default definition has these rules and exceptions.
pub fn policy_with_exceptions(rules: Vec<Value>, exceptions: Vec<Value>) -> CompiledPolicy {
    compile(&json!({"name": "test", "default": {"rules": rules, "exceptions": exceptions}}))
}

// ---------------------------------------------------------------------------------------
// Workloads
// ---------------------------------------------------------------------------------------

/// A container.
pub fn container(name: &str, image: &str) -> Value {
    json!({"name": name, "image": image})
}

/// A container with a security context.
pub fn container_sc(name: &str, image: &str, security_context: Value) -> Value {
    json!({"name": name, "image": image, "securityContext": security_context})
}

/// A privileged container.
pub fn privileged(name: &str, image: &str) -> Value {
    container_sc(name, image, json!({"privileged": true}))
}

/// A bare Pod named `p` in namespace `default` with this spec.
pub fn pod(spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"}, "spec": spec})
}

/// A bare Pod named `p` in `namespace`.
pub fn pod_in(namespace: &str, spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": namespace}, "spec": spec})
}

/// A bare Pod with these containers.
pub fn pod_of(containers: Vec<Value>) -> Value {
    pod(json!({"containers": containers}))
}

/// A workload object of `kind` whose pod template has `spec`, as stored by the API server.
pub fn workload(kind: &str, pod_spec: Value) -> Value {
    let api_version = match kind {
        "Pod" | "ReplicationController" => "v1",
        "Job" | "CronJob" => "batch/v1",
        _ => "apps/v1",
    };
    let template = json!({"metadata": {"labels": {"app": "w"}}, "spec": pod_spec});
    let spec = match kind {
        "Pod" => pod_spec,
        "CronJob" => json!({"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template}}}),
        _ => json!({"replicas": 1, "selector": {"matchLabels": {"app": "w"}}, "template": template}),
    };
    json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": "w", "namespace": "default"}, "spec": spec})
}

/// The API group of an evaluated kind.
pub fn group_of_kind(kind: &str) -> &'static str {
    match kind {
        "Pod" | "ReplicationController" => "",
        "Job" | "CronJob" => "batch",
        _ => "apps",
    }
}

/// The resource (plural) of a kind.
pub fn resource_of_kind(kind: &str) -> String {
    match kind {
        "Pod" => "pods".to_owned(),
        "ReplicationController" => "replicationcontrollers".to_owned(),
        "Deployment" => "deployments".to_owned(),
        "ReplicaSet" => "replicasets".to_owned(),
        "StatefulSet" => "statefulsets".to_owned(),
        "DaemonSet" => "daemonsets".to_owned(),
        "Job" => "jobs".to_owned(),
        "CronJob" => "cronjobs".to_owned(),
        other => format!("{}s", other.to_ascii_lowercase()),
    }
}

/// An AdmissionRequest (not wrapped) for `object` of group/kind.
pub fn request(operation: &str, group: &str, kind: &str, namespace: &str, object: Value, old: Value) -> Value {
    json!({
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
        "kind": {"group": group, "version": "v1", "kind": kind},
        "resource": {"group": group, "version": "v1", "resource": resource_of_kind(kind)},
        "namespace": namespace,
        "operation": operation,
        "userInfo": {"username": "admin"},
        "object": object,
        "oldObject": old,
        "dryRun": false
    })
}

/// An AdmissionReview v1 wrapping `request`.
pub fn review(request: Value) -> Value {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
}

/// Removes `apiVersion` and `kind` from an object, as some API servers send it.
pub fn strip_type(mut object: Value) -> Value {
    if let Some(map) = object.as_object_mut() {
        map.remove("apiVersion");
        map.remove("kind");
    }
    object
}

// ---------------------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------------------

/// Every subject of a document.
pub fn subjects(doc: &Value) -> Vec<Subject> {
    parse_document(doc.to_string().as_bytes()).unwrap_or_else(|e| panic!("document refused: {e}\n{doc:#}"))
}

/// The only subject of a document.
pub fn subject(doc: &Value) -> Subject {
    let mut all = subjects(doc);
    assert_eq!(all.len(), 1, "expected one subject");
    all.remove(0)
}

/// The admission decision for a one-subject document, offline.
pub fn eval(policy: &CompiledPolicy, doc: &Value) -> Decision {
    policy.evaluate(&subject(doc), &EvalContext::offline(NOW))
}

/// The admission decision with a context.
pub fn eval_with(policy: &CompiledPolicy, doc: &Value, ctx: &EvalContext<'_>) -> Decision {
    policy.evaluate(&subject(doc), ctx)
}

/// The continuous decision for a one-subject document, offline.
pub fn eval_running(policy: &CompiledPolicy, doc: &Value) -> RunningDecision {
    policy.evaluate_running(&subject(doc), &EvalContext::offline(NOW))
}

/// Asserts a decision blocks, with a readable failure.
#[track_caller]
pub fn assert_blocks(d: &Decision) {
    assert_eq!(d.verdict, Verdict::Block, "expected block, got {d:#?}");
}

/// Asserts a decision allows and lists no violation.
#[track_caller]
pub fn assert_clean(d: &Decision) {
    assert_eq!(d.verdict, Verdict::Allow, "expected allow, got {d:#?}");
    assert!(
        d.violations.is_empty(),
        "expected no violation, got {:#?}",
        d.violations
    );
}

/// The only violation of a decision.
#[track_caller]
pub fn only_violation(d: &Decision) -> &Violation {
    assert_eq!(d.violations.len(), 1, "expected one violation, got {:#?}", d.violations);
    &d.violations[0]
}

/// The containers named by the only violation.
#[track_caller]
pub fn violating_containers(d: &Decision) -> Vec<String> {
    only_violation(d).containers.clone()
}

// ---------------------------------------------------------------------------------------
// Scan results and context
// ---------------------------------------------------------------------------------------

/// A finding.
pub fn finding(id: &str, severity: Severity, vector: Option<&str>) -> Finding {
    Finding {
        id: id.to_owned(),
        severity,
        cvss_v3_vector: vector.map(str::to_owned),
        fixed_version: None,
    }
}

/// A native scan result taken `days_ago` days before [`NOW`].
pub fn scan(digest: &str, scan_type: ScanType, days_ago: i64, findings: Vec<Finding>) -> ScanResult {
    ScanResult {
        digest: digest.to_owned(),
        scan_type,
        scanned_at: NOW - time::Duration::days(days_ago),
        scanner: "test".to_owned(),
        findings,
    }
}

/// A store holding these results.
pub fn store(results: &[ScanResult]) -> MemoryScanStore {
    let mut s = MemoryScanStore::new();
    for r in results {
        s.insert(r);
    }
    s
}

/// A digest map from references to digests.
pub fn digest_map(pairs: &[(&str, &str)]) -> DigestMap {
    DigestMap(pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect())
}

/// Verdicts: `{image or digest: {attestor: valid}}`.
pub fn verdict_map(entries: Vec<(&str, Vec<(&str, bool)>)>) -> VerdictMap {
    VerdictMap(
        entries
            .into_iter()
            .map(|(k, m)| {
                let inner: HashMap<String, bool> = m.into_iter().map(|(a, v)| (a.to_owned(), v)).collect();
                (k.to_owned(), inner)
            })
            .collect(),
    )
}

/// An evaluation context over these scans (no resolver, no verdicts, nothing excluded).
pub fn ctx_scans(scans: &MemoryScanStore) -> EvalContext<'_> {
    EvalContext {
        now: NOW,
        scans,
        digests: &NoDigests,
        signatures: Signatures::Offline(None),
        excluded_namespaces: &[],
        trusted_images: &[],
        failure_mode: FailureMode::FailOpen,
    }
}

/// Parses trusted images.
pub fn trusted(list: &[&str]) -> Vec<TrustedImage> {
    list.iter()
        .map(|s| TrustedImage::parse(s).unwrap_or_else(|e| panic!("{s}: {e}")))
        .collect()
}
