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

/// `portcullis-loadgen webhook`, the benchmark's generator, against the real webhook: a
/// second of open loop over HTTP/2 and over HTTP/1.1 with the benchmark's review, for a
/// cluster whose policy logs the review's violation (every answer allowed) and one whose
/// policy blocks it (every answer denied). Each answer must be 200 with its own uid. Nothing
/// here is timed.
pub async fn load_generator_reviews_are_judged(mode: Mode) {
    use clap::Parser as _;
    use portcullis_loadgen::webhook::WebhookArgs;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: WebhookArgs,
    }

    let dir = portcullis_test_kit::DataDir::new().unwrap();
    let (tls_cert, tls_key, _ca) = pki(dir.path());
    let options = StackOptions {
        webhook: Some(WebhookOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls_cert: tls_cert.clone(),
            tls_key,
            limits: Default::default(),
        }),
        ..StackOptions::new(mode)
    };
    // The benchmark review's mirrored envoy image: logged here, blocked for the second cluster.
    let mirror = |name: &str, action: &str| {
        policy(
            name,
            serde_json::json!([rule("imagePath", "starts-with", "registry.example.com/mirror/", action)]),
        )
        .to_string()
    };
    let mut env = Env::start(options, &mirror("load.logs", "log")).await;
    let blocking = env.admin.create_policy(&mirror("load.blocks", "block")).await.unwrap();
    let blocked = env
        .admin
        .register_cluster("c2", portcullis_integration_tests::store::by_name(&blocking.name))
        .await
        .unwrap();
    let addr = env.stack.replicas[0].webhook_addr().expect("the webhook runs");
    let review = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crates/engine/benches/data/review-8k.json"
    );
    // The chain file holds the CA after the leaf: trusting it trusts the CA.
    let ca = tls_cert.to_str().unwrap();
    let server = format!("https://{addr}");
    let cases = [
        (&env.connector_key, env.cluster_id.clone(), "allowed"),
        (&blocked.connector_key, blocked.cluster.unwrap().id, "denied"),
    ];
    for (key, cluster, expect) in &cases {
        for protocol in ["h2", "http1.1"] {
            let cli = Cli::try_parse_from([
                "webhook",
                "--server",
                &server,
                "--ca-cert",
                ca,
                "--key",
                key,
                "--cluster",
                cluster,
                "--review",
                review,
                "--protocol",
                protocol,
                "--expect",
                expect,
                "--rate",
                "100",
                "--duration",
                "1s",
                "--warmup",
                "0s",
                "--connections",
                "2",
            ])
            .unwrap();
            let report = portcullis_loadgen::webhook::run(&cli.args)
                .await
                .unwrap_or_else(|e| panic!("{protocol} {expect}: {e:#}"));
            let context = format!("{protocol} {expect}: {}", report.json());
            // Every scheduled call answered 200 with its uid and the expected verdict.
            assert_eq!(report.stats.ok, 100, "{context}");
            assert_eq!(report.stats.error_count(), 0, "{context}");
            let verdicts = &report.notes.iter().find(|(k, _)| k == "verdicts").unwrap().1;
            // The first call (unrecorded) and the 100 recorded ones.
            let expected = if *expect == "allowed" {
                "101 allowed, 0 denied"
            } else {
                "0 allowed, 101 denied"
            };
            assert!(verdicts.starts_with(expected), "{context}");
        }
    }
}

portcullis_test_kit::both! {
    embedded: portcullis_server::Mode::Embedded,
    distributed: portcullis_server::Mode::Distributed;
    webhook_over_tls,
    load_generator_reviews_are_judged,
}
