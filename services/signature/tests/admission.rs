//! Admission asking the signature service (`pc.rpc.signature.verify` over the bus) end to
//! end: a policy store, the signature service, admission with the bus-backed signature stage
//! and a docker-registry holding images signed in the test.

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
    AdmissionOptions, BusSignatureStage, Hooks, RunningAdmission, ServeOptions, Upstream, UpstreamTimeouts,
};
use portcullis_proto::admission::v1 as pa;
use portcullis_proto::admission::v1::admission_service_client::AdmissionServiceClient;
use portcullis_proto::common::v1 as pc;
use portcullis_proto::policystore::v1 as pb;
use portcullis_proto::policystore::v1::cluster_service_client::ClusterServiceClient;
use portcullis_proto::policystore::v1::policy_service_client::PolicyServiceClient;
use portcullis_server::{Credentials, Mode, ServerConfig};
use portcullis_test_kit::docs::{container, create_pod, host_network, pod, pod_spec, policy};
use serde_json::{Value, json};
use support::{Fixture, Key, start};

/// Admission over the fixture's store and bus, with the signature service as its stage.
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
        ..AdmissionOptions::default()
    };
    let hooks = Hooks {
        digests: None,
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
                    failure_mode: pc::FailureMode::FailClosed as i32,
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
