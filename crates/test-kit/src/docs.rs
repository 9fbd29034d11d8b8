//! Document builders: policies (JSON values, JSON text, YAML text), attestors, rulesets, scan
//! results and AdmissionReview v1 documents of pods and other objects.

// serde_json::Value indexing: a read of a missing key gives Null, and the writes go into
// objects built right here.
#![allow(clippy::indexing_slicing)]

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------
// Policies, attestors, rulesets

/// A policy document: `rules` (an array of rules) as the default definition.
pub fn policy(name: &str, rules: Value) -> Value {
    json!({"name": name, "default": {"rules": rules}})
}

/// One rule of `rule_type` whose statement is the property `key` = `value`.
pub fn rule(rule_type: &str, key: &str, value: &str, action: &str) -> Value {
    json!({"type": rule_type, "action": action, "statement": {"properties": [{"key": key, "value": value}]}})
}

/// The rule on `hostNetwork: true` with `action` (`block`, `log`, ...).
pub fn host_network(action: &str) -> Value {
    rule("podSecurityContext", "hostNetwork", "true", action)
}

/// The rule on a privileged container with `action`.
pub fn privileged(action: &str) -> Value {
    rule("containerSecurityContext", "privileged", "true", action)
}

/// A minimal valid policy as JSON text: one hostNetwork rule with `action`.
pub fn policy_doc(name: &str, action: &str) -> String {
    policy(name, json!([host_network(action)])).to_string()
}

/// A policy (blocking hostNetwork) naming `attestor` in an imageVerification rule for
/// `registry.example.com` and/or the runtime ruleset `ruleset_id`, as JSON text.
pub fn policy_with_refs(name: &str, attestor: Option<&str>, ruleset_id: Option<&str>) -> String {
    let mut doc = policy(name, json!([host_network("block")]));
    if let Some(a) = attestor {
        doc["default"]["imageVerification"] = json!([{
            "name": "signed", "action": "block", "attestors": {"all": [a]},
            "conditions": [{"type": "match", "resourceFilter": "registry", "operator": "equals",
                            "value": "registry.example.com"}]
        }]);
    }
    if let Some(r) = ruleset_id {
        doc["runtime"] = json!({"rulesets": [{"id": r}]});
    }
    doc.to_string()
}

/// A native vulnerability scan result of `digest` (scanned at `scanned_at`, RFC 3339) with
/// one finding of `severity`.
pub fn vulnerability_scan(digest: &str, severity: &str, scanned_at: &str) -> Value {
    json!({
        "digest": digest, "scanType": "vulnerability", "scannedAt": scanned_at, "scanner": "trivy 0.58.1",
        "findings": [{"id": "CVE-2024-0001", "severity": severity}]
    })
}

/// A document as YAML text (policies are accepted as YAML or JSON).
pub fn yaml(document: &Value) -> String {
    // A serde_json::Value always serialises; an empty string would fail the test that reads it.
    yaml_serde::to_string(document).unwrap_or_default()
}

/// A cosign public-key attestor with the key of the shared conformance material.
pub fn attestor_doc(name: &str) -> String {
    json!({
        "name": name, "type": "cosignPublicKey",
        "publicKey": crate::shared("cosign-signatures/cosign.pub"),
    })
    .to_string()
}

/// A runtime ruleset with one rule and its `mitigation`.
pub fn ruleset_doc(name: &str, mitigation: &str) -> String {
    json!({
        "name": name,
        "rules": [{"id": "Adding ssh keys to authorized_keys", "mitigation": mitigation}],
    })
    .to_string()
}

// ---------------------------------------------------------------------------------------
// Pods and AdmissionReviews

/// A container; `privileged` adds `securityContext.privileged: true`.
pub fn container(name: &str, image: &str, privileged: bool) -> Value {
    let mut c = json!({"name": name, "image": image});
    if privileged {
        c["securityContext"] = json!({"privileged": true});
    }
    c
}

/// A pod spec with these containers; `host_network` adds `hostNetwork: true`.
pub fn pod_spec(host_network: bool, containers: Vec<Value>) -> Value {
    let mut spec = json!({"containers": containers});
    if host_network {
        spec["hostNetwork"] = json!(true);
    }
    spec
}

/// A Pod object.
pub fn pod(name: &str, namespace: &str, spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace}, "spec": spec})
}

/// A request uid unique in the test process, in UUID form.
pub fn next_uid() -> String {
    static N: AtomicU64 = AtomicU64::new(1);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("00000000-0000-4000-8000-{n:012}")
}

/// An AdmissionReview v1 of `operation` on an object of (group, version, kind) and
/// `resource`, by user `alice`, without an object (add `request.object` as needed).
pub fn review(operation: &str, gvk: (&str, &str, &str), resource: &str, namespace: &str, name: &str) -> Value {
    let (group, version, kind) = gvk;
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": next_uid(),
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": resource},
            "name": name,
            "namespace": namespace,
            "operation": operation,
            "userInfo": {"username": "alice"},
            "dryRun": false
        }
    })
}

/// The AdmissionReview of a CREATE of the pod `object` (its name and namespace from its
/// metadata; namespace `default` when it has none).
pub fn create_pod(object: Value) -> Value {
    let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
    let ns = object["metadata"]["namespace"].as_str().unwrap_or("default").to_owned();
    let mut r = review("CREATE", ("", "v1", "Pod"), "pods", &ns, &name);
    r["request"]["object"] = object;
    r
}

/// The request uid of a review.
pub fn uid_of(review: &Value) -> String {
    review["request"]["uid"].as_str().unwrap_or_default().to_owned()
}
