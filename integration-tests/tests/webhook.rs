//! Scenario 12: the validating webhook over TLS with a real client.
//!
//! Every scenario starts its own stack (a policy store and admission replicas following its
//! bus) in the mode it is given, embedded and distributed (`both!`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

#[path = "support/tls.rs"]
mod tls;

use std::net::SocketAddr;

use portcullis_admission::testing::StackOptions;
use portcullis_admission::webhook::WebhookOptions;
use portcullis_server::Mode;
use serde_json::Value;
use tls::{pki, post};

use portcullis_integration_tests::admission::*;

/// Scenario 12: a real AdmissionReview over HTTPS is answered with its uid; no bearer is 401.
pub async fn webhook_over_tls(mode: Mode) {
    let dir = portcullis_test_kit::DataDir::new().unwrap();
    let (tls_cert, tls_key, ca) = pki(dir.path());
    let options = StackOptions {
        webhook: Some(WebhookOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls_cert,
            tls_key,
            limits: Default::default(),
        }),
        ..StackOptions::new(mode)
    };
    let env = Env::start(
        options,
        &policy("hook", serde_json::json!([host_network("block")])).to_string(),
    )
    .await;
    let addr = env.stack.replicas[0].webhook_addr().expect("the webhook runs");
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/conformance/admission-reviews/kube-rs_admission_review_v1_pod_create.json"
    );
    let body = std::fs::read(file).unwrap();
    let uid = serde_json::from_slice::<Value>(&body).unwrap()["request"]["uid"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/validate/{}", env.cluster_id);

    let (status, answer) = post(addr, &ca, &path, Some(&env.connector_key), body.clone()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["response"]["uid"], uid.as_str());
    assert!(answer["response"]["allowed"].is_boolean());

    // A violating pod is denied through the webhook too.
    let denied = create_pod(pod(
        "web",
        "default",
        pod_spec(true, vec![container("app", "nginx:1.25", false)]),
    ));
    let (status, answer) = post(
        addr,
        &ca,
        &path,
        Some(&env.connector_key),
        denied.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(answer["response"]["allowed"], false, "{answer}");
    assert_eq!(answer["response"]["uid"], uid_of(&denied).as_str());

    let (status, _) = post(addr, &ca, &path, None, body).await;
    assert_eq!(status, 401);
}

portcullis_test_kit::both! {
    embedded: portcullis_server::Mode::Embedded,
    distributed: portcullis_server::Mode::Distributed;
    webhook_over_tls,
}
