//! A policy's own parse (`CompiledPolicy::parse_document`) reads only the fields its rules
//! read, so it must decide exactly as the full parse does: every rule kind, alone and
//! together, on every Pod Security Admission fixture, real AdmissionReview, the benchmark's
//! corpus and its 8 KB review.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use portcullis_corpus as corpus;

use common::*;
use portcullis_engine::evaluate::{CompiledPolicy, Decision, EvalContext};
use portcullis_engine::input::{parse_document, parse_document_with};
use portcullis_engine::k8s::Fields;
use serde_json::{Value, json};

const FULL_POLICY: &str = include_str!("../benches/data/policy-full.yaml");
const THREE_CHECKS_POLICY: &str = include_str!("../benches/data/policy-three-checks.yaml");
const REVIEW_8K: &str = include_str!("../benches/data/review-8k.json");

/// One block rule of every kind but `podSecurityStandard`, each property value a rule takes.
fn core_rules() -> Vec<(String, Value)> {
    let mut rules = Vec::new();
    let mut add = |rule_type: &str, props: &[(&str, &str)]| {
        rules.push((format!("{rule_type} {props:?}"), rule(rule_type, props, "block")));
    };
    for key in ["hostNetwork", "hostPID", "hostIPC"] {
        add("podSecurityContext", &[(key, "true")]);
    }
    add("containerSecurityContext", &[("privileged", "true")]);
    for preset in ["baseline", "restricted", "restrict-nondefaults", "restrict-all"] {
        add("containerSecurityContext", &[("capabilities-rule", preset)]);
    }
    add("containerSecurityContext", &[("allowPrivilegeEscalation", "true")]);
    add("containerSecurityContext", &[("runAsNonRoot", "false")]);
    add("containerSecurityContext", &[("readOnlyRootFilesystem", "false")]);
    add("registry", &[("equals", "docker.io")]);
    add("image", &[("contains", "nginx")]);
    add("tag", &[("equals", "latest")]);
    add("imagePath", &[("starts-with", "registry.example.com/")]);
    add("vulnerabilities", &[("max-severity", "high")]);
    add("malware", &[("count", "0")]);
    add("secrets", &[("count", "0")]);
    add("podexec", &[("podExec", "true")]);
    add("portforward", &[("podPortForward", "true")]);
    rules
}

/// The policies compared: each core rule alone, all of them together, each Pod Security
/// Standards level alone and with all core rules, and the benchmark's two policies.
fn policies() -> Vec<(String, CompiledPolicy)> {
    let core = core_rules();
    let mut out: Vec<(String, CompiledPolicy)> = core
        .iter()
        .map(|(name, r)| (name.clone(), policy(vec![r.clone()])))
        .collect();
    let all_core: Vec<Value> = core.iter().map(|(_, r)| r.clone()).collect();
    out.push(("every core rule".into(), policy(all_core.clone())));
    for level in ["baseline", "restricted"] {
        let pss = rule("podSecurityStandard", &[("level", level)], "block");
        out.push((format!("pss {level}"), policy(vec![pss.clone()])));
        let mut with_core = all_core.clone();
        with_core.push(pss);
        out.push((format!("pss {level} and every core rule"), policy(with_core)));
    }
    // Pod Security Standards only in a namespaced definition: the policy still reads them.
    out.push((
        "pss in a namespaced definition".into(),
        compile(&json!({
            "name": "test",
            "default": {"rules": [rule("containerSecurityContext", &[("privileged", "true")], "block")]},
            "namespaced": [{"name": "strict", "namespaces": ["strict"], "rules": [
                rule("podSecurityStandard", &[("level", "baseline")], "block")
            ]}]
        })),
    ));
    out.push(("bench full".into(), CompiledPolicy::from_text(FULL_POLICY).unwrap()));
    out.push((
        "bench three checks".into(),
        CompiledPolicy::from_text(THREE_CHECKS_POLICY).unwrap(),
    ));
    out
}

/// Every document compared: PSA fixtures (as JSON), real AdmissionReviews, the corpus, the
/// 8 KB review; each once as given and once moved into the namespace `strict`.
fn documents() -> Vec<(String, Vec<u8>)> {
    let mut docs = Vec::new();
    for path in files_with_extension(&shared("pod-security-admission"), "yaml") {
        let text = std::fs::read_to_string(&path).unwrap();
        let value: Value = yaml_serde::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        docs.push((path.display().to_string(), serde_json::to_vec(&value).unwrap()));
        let mut strict = value;
        if let Some(meta) = strict.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("namespace".into(), json!("strict"));
        }
        docs.push((
            format!("{} (in strict)", path.display()),
            serde_json::to_vec(&strict).unwrap(),
        ));
    }
    for path in files_with_extension(&shared("admission-reviews"), "json") {
        docs.push((path.display().to_string(), std::fs::read(&path).unwrap()));
    }
    for (i, review) in corpus::corpus(corpus::BENCH_CORPUS_SIZE).into_iter().enumerate() {
        docs.push((format!("corpus review {i}"), review.json.into_bytes()));
    }
    docs.push(("review-8k".into(), REVIEW_8K.as_bytes().to_vec()));
    docs
}

fn decisions(policy: &CompiledPolicy, json: &[u8], own_parse: bool) -> Result<Vec<Decision>, String> {
    let subjects = if own_parse {
        policy.parse_document(json)
    } else {
        parse_document(json)
    };
    let ctx = EvalContext::offline(NOW);
    subjects
        .map(|s| s.iter().map(|s| policy.evaluate(s, &ctx)).collect())
        .map_err(|e| e.to_string())
}

#[test]
fn a_policy_reads_the_pod_details_only_with_pod_security_standards_rules() {
    for (name, policy) in policies() {
        let pss = name.contains("pss") || name == "bench full";
        // No rule reads labels: only the replay projection asks for them.
        let expected = Fields {
            pod_details: pss,
            labels: false,
        };
        assert_eq!(policy.fields(), expected, "{name}");
    }
}

#[test]
fn the_policy_parse_decides_as_the_full_parse_on_every_document() {
    let policies = policies();
    let documents = documents();
    let mut compared = 0;
    let mut differing = 0;
    for (doc_name, json) in &documents {
        for (policy_name, policy) in &policies {
            let own = decisions(policy, json, true);
            let full = decisions(policy, json, false);
            assert_eq!(own, full, "{policy_name} on {doc_name}");
            compared += 1;
        }
        // Not vacuous: the core parse does leave out details the full parse holds.
        if let (Ok(mut core), Ok(all)) = (parse_document_with(json, Fields::CORE), parse_document(json)) {
            for s in &mut core {
                s.fields = Fields::ALL;
            }
            differing += usize::from(core != all);
        }
    }
    println!(
        "{compared} decisions compared ({} documents x {} policies); the core parse differs from the full one on {differing} documents",
        documents.len(),
        policies.len()
    );
    assert!(differing > 100, "only {differing} documents have pod details");
}

#[test]
fn skipped_pod_details_are_still_checked_as_json() {
    let bad = br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"x","ports":[1,]}]}}"#;
    assert!(parse_document_with(bad, Fields::CORE).is_err());
    assert!(parse_document(bad).is_err());
    // A well-formed detail of an unexpected shape is not read, so not refused, by the core parse.
    let odd = br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"x","ports":"none"}]}}"#;
    assert!(parse_document_with(odd, Fields::CORE).is_ok());
    assert!(parse_document(odd).is_err());
}

#[test]
fn the_core_parse_leaves_the_details_out_and_keeps_the_rest() {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "n", "annotations": {
            "container.apparmor.security.beta.kubernetes.io/c": "unconfined"}},
        "spec": {
            "hostNetwork": true,
            "securityContext": {"runAsNonRoot": true, "sysctls": [{"name": "kernel.x", "value": "1"}]},
            "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
            "containers": [{
                "name": "c", "image": "nginx:1",
                "securityContext": {"privileged": true, "capabilities": {"add": ["NET_ADMIN"]}},
                "ports": [{"hostPort": 80}],
                "livenessProbe": {"httpGet": {"host": "10.0.0.1"}},
                "lifecycle": {"preStop": {"tcpSocket": {"host": "10.0.0.1"}}}
            }]
        }
    })
    .to_string();
    let core = &parse_document_with(pod.as_bytes(), Fields::CORE).unwrap()[0];
    let all = &parse_document(pod.as_bytes()).unwrap()[0];
    assert_eq!((core.fields, all.fields), (Fields::CORE, Fields::ALL));
    let (core_meta, core_spec) = core.object.as_ref().unwrap().pod("", "Pod").unwrap();
    let (all_meta, all_spec) = all.object.as_ref().unwrap().pod("", "Pod").unwrap();
    // Left out.
    assert!(core_meta.annotations.is_empty() && !all_meta.annotations.is_empty());
    assert!(core_spec.volumes.is_empty() && !all_spec.volumes.is_empty());
    let (c, a) = (&core_spec.containers[0], &all_spec.containers[0]);
    assert!(c.ports.is_empty() && !a.ports.is_empty());
    assert!(c.liveness_probe.is_none() && a.liveness_probe.is_some());
    assert!(c.lifecycle.is_none() && a.lifecycle.is_some());
    let sysctls = |s: &portcullis_engine::k8s::PodSpec| s.security_context.as_ref().unwrap().sysctls.len();
    assert_eq!((sysctls(core_spec), sysctls(all_spec)), (0, 1));
    // Kept.
    assert_eq!(core_spec.host_network, Some(true));
    assert_eq!(c.image, "nginx:1");
    assert_eq!(c.security_context, a.security_context);
    assert_eq!(core_spec.security_context.as_ref().unwrap().run_as_non_root, Some(true));
    assert_eq!((&core.name, &core.namespace), (&all.name, &all.namespace));
}
