//! Admission asking the signature service (`pc.rpc.signature.verify` and
//! `pc.rpc.signature.resolve` over the bus) end to end: a policy store, the signature
//! service, admission with the bus-backed digest and signature stages and a docker-registry
//! holding images signed in the test.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use portcullis_admission::{
    AdmissionOptions, BusDigestStage, BusSignatureStage, Hooks, RunningAdmission, ServeOptions, Upstream,
    UpstreamTimeouts,
};
use portcullis_proto::admission::v1 as pa;
use portcullis_proto::admission::v1::admission_service_client::AdmissionServiceClient;
use portcullis_proto::common::v1 as pc;
use portcullis_proto::policystore::v1 as pb;
use portcullis_proto::policystore::v1::cluster_service_client::ClusterServiceClient;
use portcullis_proto::policystore::v1::policy_service_client::PolicyServiceClient;
use portcullis_proto::policystore::v1::scan_result_service_client::ScanResultServiceClient;
use portcullis_proto::signature::v1 as ps;
use portcullis_server::{Credentials, Mode, ServerConfig};
use portcullis_test_kit::docs::{container, create_pod, host_network, pod, pod_spec, policy, vulnerability_scan};
use portcullis_test_kit::eventually;
use serde_json::{Value, json};
use support::{Fixture, Key, start};

/// Admission over the fixture's store and bus, with the signature service as its digest and
/// signature stages.
async fn admission(f: &Fixture, mode: Mode) -> RunningAdmission {
    let upstream = Upstream::new(
        &f.store.url,
        None,
        &f.store.service_token,
        &UpstreamTimeouts::default(),
        false,
    )
    .unwrap();
    let credentials =
        Credentials::new(Some(f.store.operator_key.clone()), Some(f.store.service_token.clone())).unwrap();
    let options = AdmissionOptions {
        signature_deadline: Duration::from_secs(2),
        digest_deadline: Duration::from_secs(2),
        ..AdmissionOptions::default()
    };
    let hooks = Hooks {
        digests: Some(Arc::new(BusDigestStage::new(
            f.store.bus.clone(),
            options.digest_deadline,
        ))),
        signatures: Some(Arc::new(BusSignatureStage::new(
            f.store.bus.clone(),
            options.signature_deadline,
        ))),
    };
    RunningAdmission::start(
        upstream,
        f.store.bus.clone(),
        credentials,
        ServeOptions {
            grpc: ServerConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), mode),
            webhook: None,
            admission: options,
        },
        hooks,
    )
    .await
    .unwrap()
}

/// A policy named `name` whose one `block` signature rule requires `attestors`
/// (`{"all": [...]}` or `{"any": [...]}`) of images from the test registry.
async fn signed_policy(f: &Fixture, name: &str, attestors: Value) {
    let mut doc = policy(name, json!([host_network("block")]));
    doc["default"]["imageVerification"] = json!([{
        "name": "signed", "action": "block", "attestors": attestors,
        "conditions": [{"type": "match", "resourceFilter": "registry", "operator": "equals",
                        "value": f.registry.host()}]
    }]);
    create_policy(f, doc).await;
}

/// Stores the policy `doc`.
async fn create_policy(f: &Fixture, doc: Value) {
    let mut client = PolicyServiceClient::new(f.store.channel().await.unwrap());
    client
        .create_policy(f.store.request(
            &f.store.admin_key,
            pb::CreatePolicyRequest {
                document_json: doc.to_string(),
            },
        ))
        .await
        .unwrap();
}

/// Registers a fail-closed cluster on `policy`; returns its connector key.
async fn cluster(f: &Fixture, name: &str, policy: &str) -> String {
    cluster_with(f, name, policy, pc::FailureMode::FailClosed).await
}

/// Registers a cluster on `policy` with failure mode `mode`; returns its connector key.
async fn cluster_with(f: &Fixture, name: &str, policy: &str, mode: pc::FailureMode) -> String {
    let mut client = ClusterServiceClient::new(f.store.channel().await.unwrap());
    client
        .register_cluster(f.store.request(
            &f.store.admin_key,
            pb::RegisterClusterRequest {
                name: name.to_owned(),
                policy: Some(pc::ResourceRef {
                    r#ref: Some(pc::resource_ref::Ref::Name(policy.to_owned())),
                }),
                settings: Some(pb::ClusterSettings {
                    failure_mode: mode as i32,
                    ..Default::default()
                }),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .connector_key
}

/// Reviews the creation of a pod running `image` with `key` (a connector key).
async fn review(f: &Fixture, admission: &RunningAdmission, key: &str, image: &str) -> (pa::Decision, Value) {
    let channel = tonic::transport::Endpoint::from_shared(admission.url().to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let body = create_pod(pod(
        "web",
        "apps",
        pod_spec(false, vec![container("app", image, false)]),
    ));
    let request = f.store.request(
        key,
        pa::ReviewRequest {
            cluster: None,
            admission_review_json: Bytes::from(body.to_string()),
            request_id: "r".into(),
        },
    );
    let out = AdmissionServiceClient::new(channel)
        .review(request)
        .await
        .unwrap()
        .into_inner();
    let json: Value = serde_json::from_slice(&out.admission_review_json).unwrap();
    (out.decision.unwrap(), json)
}

async fn all_and_any_policies(mode: Mode) {
    let f = start(mode).await;
    let (release, stranger) = (Key::new(), Key::new());
    f.attestor("release", &release).await;
    f.attestor("wrong", &stranger).await;
    let (signed, _) = f.push_image("app", "signed", "signed by release").await;
    f.sign("app", &signed, &[&release]).await;
    let (unsigned, _) = f.push_image("app", "unsigned", "unsigned").await;
    let host = f.registry.host();
    let (signed, unsigned) = (format!("{host}/app@{signed}"), format!("{host}/app@{unsigned}"));
    signed_policy(&f, "all_release", json!({"all": ["release"]})).await;
    signed_policy(&f, "any_of_two", json!({"any": ["wrong", "release"]})).await;
    let all_key = cluster(&f, "all", "all_release").await;
    let any_key = cluster(&f, "any", "any_of_two").await;
    let admission = admission(&f, mode).await;

    // `all`: the unsigned image is a violation, the signed one is allowed.
    let (decision, json) = review(&f, &admission, &all_key, &unsigned).await;
    assert!(!decision.allowed, "{json}");
    assert!(decision.not_judged.is_empty(), "{decision:?}");
    assert_eq!(decision.violations.len(), 1, "{decision:?}");
    let (decision, json) = review(&f, &admission, &all_key, &signed).await;
    assert!(decision.allowed, "{json}");
    assert!(decision.not_judged.is_empty(), "{decision:?}");
    // `any` of a wrong attestor and a good one: allowed.
    let (decision, json) = review(&f, &admission, &any_key, &signed).await;
    assert!(decision.allowed, "{json}");
    assert!(decision.not_judged.is_empty(), "{decision:?}");
    // `any` where neither holds: a violation.
    let (decision, json) = review(&f, &admission, &any_key, &unsigned).await;
    assert!(!decision.allowed, "{json}");

    // The signature service stopped: the rule is not judged, and the fail-closed cluster
    // denies with the reason in the warnings, even for the signed image.
    f.signature.stop().await.unwrap();
    let (decision, json) = review(&f, &admission, &all_key, &signed).await;
    assert!(!decision.allowed, "{json}");
    let [unjudged] = decision.not_judged.as_slice() else {
        panic!("expected one rule not judged: {decision:?}");
    };
    assert_eq!(unjudged.rule, "signed");
    assert!(unjudged.reason.contains("signature"), "{unjudged:?}");
    let warnings = json["response"]["warnings"].to_string();
    assert!(warnings.contains(&unjudged.reason), "{json}");
    admission.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_all_and_any_policies_through_admission() {
    all_and_any_policies(Mode::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_all_and_any_policies_through_admission() {
    all_and_any_policies(Mode::Distributed).await;
}

/// Uploads, as the tenant admin, a vulnerability scan of `digest` with one critical finding.
async fn upload_critical_scan(f: &Fixture, digest: &str) {
    let native = vulnerability_scan(digest, "critical", "2026-01-01T00:00:00Z");
    ScanResultServiceClient::new(f.store.channel().await.unwrap())
        .upload_scan_result(f.store.request(
            &f.store.admin_key,
            pb::UploadScanResultRequest {
                digest: digest.to_owned(),
                report: Some(pb::upload_scan_result_request::Report::NativeJson(
                    native.to_string().into_bytes().into(),
                )),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
}

/// The digests the decision lists, as (image, digest, source).
fn digests_of(decision: &pa::Decision) -> Vec<(String, String, i32)> {
    decision
        .digests
        .iter()
        .map(|d| (d.image.clone(), d.digest.clone(), d.source))
        .collect()
}

async fn vulnerability_rule_on_a_tag_only_image(mode: Mode) {
    let f = start(mode).await;
    let (digest, _) = f.push_image("shop", "v1", "vulnerable by tag").await;
    let image = format!("{}/shop:v1", f.registry.host());
    let doc = policy(
        "scans",
        json!([{"type": "vulnerabilities", "action": "block",
                "statement": {"properties": [{"key": "max-severity", "value": "high"}]}}]),
    );
    create_policy(&f, doc).await;
    let key = cluster(&f, "scans", "scans").await;
    let admission = admission(&f, mode).await;

    // Unscanned: what the policy says for an unscanned image (it has no unscanned-image
    // rule): allowed, with the digest the registry returned on record.
    let (decision, json) = review(&f, &admission, &key, &image).await;
    assert!(decision.allowed, "{json}");
    assert!(
        decision.violations.is_empty() && decision.degraded.is_empty(),
        "{decision:?}"
    );
    assert_eq!(
        digests_of(&decision),
        [(image.clone(), digest.to_string(), pc::DigestSource::Registry as i32)]
    );

    // A scan of that digest with a critical finding: the rule fires on the tag.
    upload_critical_scan(&f, &digest.to_string()).await;
    let (f_ref, admission_ref, key_ref, image_ref) = (&f, &admission, &key, &image);
    let decision = eventually(Duration::from_secs(35), || async move {
        let (decision, json) = review(f_ref, admission_ref, key_ref, image_ref).await;
        if decision.allowed {
            Err(format!("the scan never applied: {json}"))
        } else {
            Ok(decision)
        }
    })
    .await;
    let [violation] = decision.violations.as_slice() else {
        panic!("one violation: {decision:?}");
    };
    assert_eq!(violation.rule_type, "vulnerabilities", "{decision:?}");
    assert!(decision.degraded.is_empty(), "{decision:?}");
    admission.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_a_vulnerability_rule_fires_on_a_tag_only_image_once_its_digest_is_scanned() {
    vulnerability_rule_on_a_tag_only_image(Mode::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_a_vulnerability_rule_fires_on_a_tag_only_image_once_its_digest_is_scanned() {
    vulnerability_rule_on_a_tag_only_image(Mode::Distributed).await;
}

async fn registry_down_follows_the_failure_mode(mode: Mode) {
    let mut f = start(mode).await;
    let release = Key::new();
    f.attestor("release", &release).await;
    let (digest, _) = f.push_image("app", "v1", "signed, then unreachable").await;
    f.sign("app", &digest, &[&release]).await;
    signed_policy(&f, "signed", json!({"all": ["release"]})).await;
    let open_key = cluster_with(&f, "open", "signed", pc::FailureMode::FailOpen).await;
    let closed_key = cluster_with(&f, "closed", "signed", pc::FailureMode::FailClosed).await;
    let admission = admission(&f, mode).await;
    // Never asked before the registry stops: nothing of it is cached.
    let image = format!("{}/app:v1", f.registry.host());
    f.registry.stop();

    // Fail-open: allowed, with a warning naming why; no signature violation.
    let (decision, json) = review(&f, &admission, &open_key, &image).await;
    assert!(decision.allowed, "{json}");
    assert!(
        decision.violations.is_empty(),
        "not a signature violation: {decision:?}"
    );
    assert_eq!(decision.basis, pa::DecisionBasis::FailOpen as i32, "{decision:?}");
    let [unjudged] = decision.not_judged.as_slice() else {
        panic!("one rule not judged: {decision:?}");
    };
    assert_eq!((unjudged.rule.as_str(), unjudged.digest.as_str()), ("signed", ""));
    assert!(unjudged.reason.contains("digest resolution"), "{unjudged:?}");
    let warnings = json["response"]["warnings"].to_string();
    assert!(warnings.contains(&unjudged.reason), "{json}");
    assert!(decision.digests.is_empty(), "{decision:?}");

    // Fail-closed: blocked by the failure mode, again without a signature violation.
    let (decision, json) = review(&f, &admission, &closed_key, &image).await;
    assert!(!decision.allowed, "{json}");
    assert!(
        decision.violations.is_empty(),
        "not a signature violation: {decision:?}"
    );
    assert_eq!(decision.basis, pa::DecisionBasis::FailClosed as i32, "{decision:?}");
    assert_eq!(decision.not_judged.len(), 1, "{decision:?}");
    // The signature service's own error (it could not reach the registry either) is on
    // record with its reason.
    let [verdict] = decision.signatures.as_slice() else {
        panic!("one verdict: {decision:?}");
    };
    assert_eq!(
        (verdict.attestor.as_str(), verdict.verdict),
        ("release", ps::Verdict::Error as i32)
    );
    assert!(!verdict.reason.is_empty(), "{verdict:?}");
    admission.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_a_registry_down_follows_the_failure_mode_for_a_tag_only_image() {
    registry_down_follows_the_failure_mode(Mode::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_a_registry_down_follows_the_failure_mode_for_a_tag_only_image() {
    registry_down_follows_the_failure_mode(Mode::Distributed).await;
}

async fn decision_records_digests_and_verdicts(mode: Mode) {
    let f = start(mode).await;
    let (release, stranger) = (Key::new(), Key::new());
    f.attestor("release", &release).await;
    f.attestor("wrong", &stranger).await;
    let (digest, _) = f.push_image("app", "v2", "signed by release").await;
    f.sign("app", &digest, &[&release]).await;
    signed_policy(&f, "any_of_two", json!({"any": ["wrong", "release"]})).await;
    let key = cluster(&f, "any", "any_of_two").await;
    let admission = admission(&f, mode).await;
    let image = format!("{}/app:v2", f.registry.host());

    let (decision, json) = review(&f, &admission, &key, &image).await;
    assert!(decision.allowed, "{json}");
    assert!(
        decision.not_judged.is_empty() && decision.violations.is_empty(),
        "{decision:?}"
    );
    let digest = digest.to_string();
    assert_eq!(
        digests_of(&decision),
        [(image.clone(), digest.clone(), pc::DigestSource::Registry as i32)]
    );
    let verdicts: Vec<(&str, &str, &str, i32)> = decision
        .signatures
        .iter()
        .map(|v| (v.image.as_str(), v.digest.as_str(), v.attestor.as_str(), v.verdict))
        .collect();
    assert_eq!(
        verdicts,
        [
            (
                image.as_str(),
                digest.as_str(),
                "wrong",
                ps::Verdict::NotVerified as i32
            ),
            (image.as_str(), digest.as_str(), "release", ps::Verdict::Verified as i32),
        ]
    );
    assert!(decision.signatures.iter().all(|v| !v.reason.is_empty()), "{decision:?}");
    admission.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_the_decision_records_digests_and_signature_verdicts() {
    decision_records_digests_and_verdicts(Mode::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_the_decision_records_digests_and_signature_verdicts() {
    decision_records_digests_and_verdicts(Mode::Distributed).await;
}
