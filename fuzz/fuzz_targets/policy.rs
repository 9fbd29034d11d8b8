//! Fuzz target: `PolicyDocument::parse` (JSON or YAML) and `validate` on arbitrary text; a
//! valid policy is compiled and judges a few pods. Nothing may panic.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use portcullis_engine::evaluate::{CompiledPolicy, EvalContext};
use portcullis_engine::input::{Subject, parse_document};
use portcullis_engine::policy::{PolicyDocument, validate};
use time::OffsetDateTime;

static PODS: LazyLock<Vec<Subject>> = LazyLock::new(|| {
    [
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"dev"},
            "spec":{"hostNetwork":true,"containers":[{"name":"a","image":"nginx","securityContext":{"privileged":true,"capabilities":{"add":["NET_RAW"]}}}]}}"#,
        r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d","namespace":"ops"},
            "spec":{"template":{"spec":{"containers":[{"name":"b","image":"registry.example.com/platform/x:1@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}]}}}}"#,
        r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"group":"","version":"v1","kind":"PodExecOptions"},
            "resource":{"group":"","version":"v1","resource":"pods"},"subResource":"exec","name":"p","namespace":"prod","operation":"CONNECT"}}"#,
    ]
    .iter()
    .filter_map(|json| parse_document(json.as_bytes()).ok())
    .flatten()
    .collect()
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(doc) = PolicyDocument::parse(text) else { return };
    let Ok(valid) = validate(&doc) else { return };
    let policy = CompiledPolicy::new(valid);
    let ctx = EvalContext::offline(OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000));
    for subject in PODS.iter() {
        let _ = policy.evaluate(subject, &ctx);
        let _ = policy.evaluate_running(subject, &ctx);
    }
});
