//! Real admission requests (kube-rs' captured review and kubewarden's policy test data, in
//! `../shared/conformance/admission-reviews`): every file parses and is evaluated against a
//! broad policy, and what the engine reports is checked against an independent reading of
//! the file's JSON under our semantics (kubewarden's own verdicts belong to its policies).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::*;
use portcullis_engine::evaluate::{CompiledPolicy, Decision, EvalContext, Verdict};
use portcullis_engine::input::{Operation, parse_document};
use serde_json::{Value, json};

fn root() -> PathBuf {
    shared("admission-reviews")
}

/// A policy with a rule of most types: privileged containers block, everything else logs.
fn broad_policy() -> CompiledPolicy {
    compile(&json!({
        "name": "broad",
        "default": {
            "rules": [
                rule("podSecurityContext", &[("hostNetwork", "true")], "log"),
                rule("podSecurityContext", &[("hostIPC", "true")], "log"),
                rule("podSecurityContext", &[("hostPID", "true")], "log"),
                block("containerSecurityContext", "privileged", "true"),
                rule("containerSecurityContext", &[("allowPrivilegeEscalation", "true")], "log"),
                rule("containerSecurityContext", &[("runAsNonRoot", "false")], "log"),
                rule("containerSecurityContext", &[("readOnlyRootFilesystem", "false")], "log"),
                rule("containerSecurityContext", &[("capabilities-rule", "restricted")], "log"),
                rule("tag", &[("equals", "latest")], "log"),
                rule("registry", &[("not-equals", "registry.example.com")], "log"),
                rule("vulnerabilities", &[("max-severity", "high")], "log"),
                rule("unscannedImage", &[("days", "7")], "log"),
                rule("malware", &[("count", "0")], "log"),
                rule("podexec", &[("podExec", "true")], "log"),
                rule("podSecurityStandard", &[("level", "restricted")], "log"),
            ],
            "imageVerification": [
                {"name": "signed", "action": "log", "attestors": {"any": ["release-signer"]}}
            ]
        }
    }))
}

/// The request of a file: `request` of a review, or the file itself.
fn request_of(doc: &Value) -> &Value {
    doc.get("request").unwrap_or(doc)
}

/// The pod spec of the request's object, found by `request.kind` (read independently of
/// the engine).
fn pod_spec_of(doc: &Value) -> Value {
    let request = request_of(doc);
    let kind = request["kind"]["kind"].as_str().unwrap();
    let object = &request["object"];
    let spec = match kind {
        "Pod" => &object["spec"],
        "CronJob" => &object["spec"]["jobTemplate"]["spec"]["template"]["spec"],
        _ => &object["spec"]["template"]["spec"],
    };
    assert!(spec.is_object(), "no pod spec for {kind}");
    spec.clone()
}

fn containers_of(spec: &Value) -> Vec<Value> {
    ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|list| spec[*list].as_array().cloned().unwrap_or_default())
        .collect()
}

fn names_where(spec: &Value, pred: impl Fn(&Value) -> bool) -> BTreeSet<String> {
    containers_of(spec)
        .iter()
        .filter(|c| pred(c))
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

/// The containers named by the violation of `rule_type` whose first property key is `key`.
fn reported(d: &Decision, rule_type: &str, key: &str) -> BTreeSet<String> {
    d.violations
        .iter()
        .filter(|v| v.rule_type == rule_type && v.properties.first().is_some_and(|(k, _)| k == key))
        .flat_map(|v| v.containers.iter().cloned())
        .collect()
}

fn host_namespace_reported(d: &Decision, key: &str) -> bool {
    d.violations
        .iter()
        .any(|v| v.rule_type == "podSecurityContext" && v.properties[0].0 == key && v.pod_level)
}

/// Whether an image reference gives no tag and no digest, or the tag `latest`.
fn is_latest(image: &str) -> bool {
    if image.contains('@') {
        return false;
    }
    let last = image.rsplit('/').next().unwrap();
    match last.split_once(':') {
        None => true,
        Some((_, tag)) => tag == "latest",
    }
}

fn evaluate_file(path: &Path, policy: &CompiledPolicy) -> (Value, Decision) {
    let bytes = std::fs::read(path).unwrap();
    let doc: Value = serde_json::from_slice(&bytes).unwrap();
    let subjects = parse_document(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(subjects.len(), 1, "{}", path.display());
    let s = &subjects[0];
    let request = request_of(&doc);
    assert_eq!(s.uid, request["uid"].as_str().unwrap(), "{}", path.display());
    assert_eq!(s.kind, request["kind"]["kind"].as_str().unwrap());
    // A missing group is the core group.
    assert_eq!(s.group, request["kind"]["group"].as_str().unwrap_or(""));
    assert_eq!(s.operation.as_str(), request["operation"].as_str().unwrap());
    let namespace = request["namespace"]
        .as_str()
        .filter(|n| !n.is_empty())
        .or_else(|| request["object"]["metadata"]["namespace"].as_str())
        .unwrap_or("default");
    assert_eq!(s.namespace, namespace, "{}", path.display());
    (doc, policy.evaluate(s, &EvalContext::offline(NOW)))
}

#[test]
fn every_admission_request_file_is_evaluated_as_our_semantics_say() {
    let files = files_with_extension(&root(), "json");
    let policy = broad_policy();
    let mut evaluated = 0;
    let (mut blocked, mut allowed) = (0, 0);
    for path in &files {
        let name = path.strip_prefix(root()).unwrap().display().to_string();
        let (doc, d) = evaluate_file(path, &policy);
        // Every file is a CREATE of a workload kind: none is skipped.
        assert_eq!(request_of(&doc)["operation"], "CREATE", "{name}");
        assert_eq!(d.not_evaluated, None, "{name}");
        assert!(d.stage_failures.is_empty(), "{name}");

        let spec = pod_spec_of(&doc);
        let windows = spec["os"]["name"] == "windows";
        let sc = |c: &Value, field: &str| c["securityContext"][field].clone();

        let privileged = names_where(&spec, |c| sc(c, "privileged") == true);
        assert_eq!(
            reported(&d, "containerSecurityContext", "privileged"),
            privileged,
            "{name}"
        );
        assert_eq!(
            d.verdict == Verdict::Block,
            !privileged.is_empty(),
            "{name}: only privileged blocks"
        );
        if privileged.is_empty() {
            allowed += 1;
        } else {
            blocked += 1;
        }

        let escalation = names_where(&spec, |c| !windows && sc(c, "allowPrivilegeEscalation") != false);
        assert_eq!(
            reported(&d, "containerSecurityContext", "allowPrivilegeEscalation"),
            escalation,
            "{name}"
        );
        let writable = names_where(&spec, |c| sc(c, "readOnlyRootFilesystem") != true);
        assert_eq!(
            reported(&d, "containerSecurityContext", "readOnlyRootFilesystem"),
            writable,
            "{name}"
        );
        let latest = names_where(&spec, |c| is_latest(c["image"].as_str().unwrap()));
        assert_eq!(reported(&d, "tag", "equals"), latest, "{name}");
        // No scan results offline: every container is unscanned, none is vulnerable.
        let all = names_where(&spec, |_| true);
        assert_eq!(reported(&d, "unscannedImage", "days"), all, "{name}");
        assert!(reported(&d, "vulnerabilities", "max-severity").is_empty(), "{name}");
        assert!(reported(&d, "malware", "count").is_empty(), "{name}");
        // A pod CREATE is not a CONNECT.
        assert!(d.violations.iter().all(|v| v.rule_type != "podexec"), "{name}");
        for key in ["hostNetwork", "hostIPC", "hostPID"] {
            assert_eq!(host_namespace_reported(&d, key), spec[key] == true, "{name}: {key}");
        }
        // Signature rules are unverified offline, one entry per distinct image.
        let images: BTreeSet<String> = containers_of(&spec)
            .iter()
            .map(|c| c["image"].as_str().unwrap().to_owned())
            .collect();
        let unverified: BTreeSet<String> = d.unverified.iter().map(|u| u.image.clone()).collect();
        assert_eq!(unverified, images, "{name}");
        evaluated += 1;
    }
    println!(
        "evaluated {evaluated} admission request files of {} .json files ({blocked} blocked, {allowed} allowed)",
        files.len()
    );
    assert_eq!(evaluated, files.len());
    assert!(files.len() >= 80, "expected the shipped files, found {}", files.len());
    assert!(blocked > 0 && allowed > 0);
}

fn kubewarden(path: &str) -> PathBuf {
    root().join("kubewarden-requests").join(path)
}

fn privileged_only() -> CompiledPolicy {
    policy(vec![block("containerSecurityContext", "privileged", "true")])
}

#[test]
fn privileged_container_requests_block_under_a_policy_blocking_privileged() {
    let p = privileged_only();
    for (file, kind) in [
        ("privileged_container.json", "Pod"),
        ("privileged_init_container.json", "Pod"),
        ("privileged_ephemeral_container.json", "Pod"),
        ("deployment_with_privileged_containers.json", "Deployment"),
        ("statefulset_with_privileged_container.json", "StatefulSet"),
    ] {
        let (doc, d) = evaluate_file(&kubewarden(&format!("pod-privileged-policy/test_data/{file}")), &p);
        assert_eq!(d.verdict, Verdict::Block, "{file}");
        let v = only_violation(&d);
        assert_eq!(request_of(&doc)["kind"]["kind"], kind);
        let expected = names_where(&pod_spec_of(&doc), |c| c["securityContext"]["privileged"] == true);
        assert!(!expected.is_empty());
        assert_eq!(
            v.containers.iter().cloned().collect::<BTreeSet<_>>(),
            expected,
            "{file}"
        );
        assert!(v.message.ends_with("(block)."), "{}", v.message);
    }
    let (_, d) = evaluate_file(
        &kubewarden("pod-privileged-policy/test_data/no_privileged_containers.json"),
        &p,
    );
    assert_eq!(d.verdict, Verdict::Allow);
    assert!(d.violations.is_empty());
}

#[test]
fn the_deployment_request_is_evaluated_on_its_template() {
    let path = kubewarden("pod-privileged-policy/test_data/deployment_with_privileged_containers.json");
    let (doc, d) = evaluate_file(&path, &privileged_only());
    // The object lacks apiVersion and kind: request.kind says it is a Deployment.
    let object = &request_of(&doc)["object"];
    assert!(object.get("kind").is_none() && object.get("apiVersion").is_none());
    let template: BTreeSet<String> = containers_of(&object["spec"]["template"]["spec"])
        .iter()
        .filter(|c| c["securityContext"]["privileged"] == true)
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        only_violation(&d).containers.iter().cloned().collect::<BTreeSet<_>>(),
        template
    );
}

#[test]
fn host_namespace_requests_are_judged_on_the_pod_spec() {
    let p = policy(vec![
        block("podSecurityContext", "hostNetwork", "true"),
        block("podSecurityContext", "hostIPC", "true"),
        block("podSecurityContext", "hostPID", "true"),
    ]);
    for file in [
        "host-namespaces-psp-policy/test_data/pod_request.json",
        "host-namespaces-psp-policy/test_data/deployment_request.json",
        "share-pid-namespace-policy/test_data/pod_with_sharing_pid_namespace_true_admission_request.json",
        "share-pid-namespace-policy/test_data/deployment_with_sharing_pid_namespace_true_admission_request.json",
    ] {
        let (doc, d) = evaluate_file(&kubewarden(file), &p);
        let spec = pod_spec_of(&doc);
        let expected: Vec<&str> = ["hostNetwork", "hostIPC", "hostPID"]
            .into_iter()
            .filter(|k| spec[*k] == true)
            .collect();
        let got: Vec<&str> = d.violations.iter().map(|v| v.properties[0].0.as_str()).collect();
        assert_eq!(got, expected, "{file}");
        assert_eq!(d.verdict == Verdict::Block, !expected.is_empty(), "{file}");
        assert!(
            d.violations
                .iter()
                .all(|v| v.pod_level && v.message.contains("in pod "))
        );
    }
}

#[test]
fn the_kube_rs_review_is_a_dry_run_pod_create() {
    let path = root().join("kube-rs_admission_review_v1_pod_create.json");
    let bytes = std::fs::read(&path).unwrap();
    let doc: Value = serde_json::from_slice(&bytes).unwrap();
    let s = &parse_document(&bytes).unwrap()[0];
    assert_eq!(s.review_api_version, doc["apiVersion"].as_str().unwrap());
    assert_eq!(s.operation, Operation::Create);
    assert_eq!(s.dry_run, doc["request"]["dryRun"].as_bool().unwrap());
    assert_eq!(s.namespace, doc["request"]["namespace"].as_str().unwrap());
    let (_, d) = evaluate_file(&path, &broad_policy());
    assert_eq!(d.verdict, Verdict::Allow);
}

#[test]
fn panic_json_is_an_ordinary_pod_request() {
    // Named after a kubewarden regression, it is a real bare AdmissionRequest: a Pod with
    // runAsNonRoot at pod level, one container disallowing privilege escalation, one not.
    let path = kubewarden("capabilities-psp-policy/test_data/panic.json");
    let (doc, d) = evaluate_file(&path, &broad_policy());
    let spec = pod_spec_of(&doc);
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    assert_eq!(d.verdict, Verdict::Allow);
    let escalating = names_where(&spec, |c| c["securityContext"]["allowPrivilegeEscalation"] != false);
    assert_eq!(escalating.len(), 1);
    assert_eq!(
        reported(&d, "containerSecurityContext", "allowPrivilegeEscalation"),
        escalating
    );
    assert!(reported(&d, "containerSecurityContext", "runAsNonRoot").is_empty());
}

#[test]
fn root_user_requests_violate_run_as_root() {
    let p = policy(vec![block("containerSecurityContext", "runAsNonRoot", "false")]);
    let dir = kubewarden("user-group-psp-policy/test_data");
    let mut judged = 0;
    for path in files_with_extension(&dir, "json") {
        let (doc, d) = evaluate_file(&path, &p);
        let spec = pod_spec_of(&doc);
        // An independent reading of PSA's runAsNonRoot + runAsUser checks.
        if spec["hostUsers"] == false {
            continue;
        }
        let pod_sc = &spec["securityContext"];
        let pod_non_root = pod_sc["runAsNonRoot"] == true;
        let pod_bad = pod_sc["runAsNonRoot"] == false || pod_sc["runAsUser"] == 0;
        let bad_containers = names_where(&spec, |c| {
            let sc = &c["securityContext"];
            sc["runAsNonRoot"] == false || sc["runAsUser"] == 0 || (sc["runAsNonRoot"].is_null() && !pod_non_root)
        });
        let should_block = pod_bad || !bad_containers.is_empty();
        assert_eq!(d.verdict == Verdict::Block, should_block, "{}", path.display());
        if should_block {
            let v = only_violation(&d);
            assert_eq!(
                v.containers.iter().cloned().collect::<BTreeSet<_>>(),
                bad_containers,
                "{}",
                path.display()
            );
            // A pod-level field at fault makes it a pod-level violation.
            if pod_bad {
                assert!(v.pod_level, "{}", path.display());
            }
        }
        judged += 1;
    }
    assert!(judged >= 20, "{judged}");
}
