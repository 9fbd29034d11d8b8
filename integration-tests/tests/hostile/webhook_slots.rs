//! Webhook slots held by strangers: clients with junk tokens trickling bodies, more of them
//! than the webhook has slots, are refused from their headers (`401`) and hold nothing; the
//! cluster's real review is answered at once.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use portcullis_admission::testing::StackOptions;
use portcullis_admission::webhook::{WebhookLimits, WebhookOptions};
use portcullis_integration_tests::admission::*;
use portcullis_server::Mode;
use serde_json::Value;

use crate::tls::{pki, post, status_within, trickle};

pub async fn strangers_trickling_bodies_hold_no_webhook_slot(mode: Mode) {
    let dir = portcullis_test_kit::DataDir::new().unwrap();
    let (tls_cert, tls_key, ca) = pki(dir.path());
    let limits = WebhookLimits {
        max_in_flight: 3,
        ..WebhookLimits::default()
    };
    let options = StackOptions {
        webhook: Some(WebhookOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls_cert,
            tls_key,
            limits,
        }),
        ..StackOptions::new(mode)
    };
    let env = Env::start(
        options,
        &policy("hook", serde_json::json!([host_network("block")])).to_string(),
    )
    .await;
    let addr = env.stack.replicas[0].webhook_addr().expect("the webhook runs");
    let path = format!("/validate/{}", env.cluster_id);

    // Twice as many strangers as slots, each trickling a body: refused from the headers.
    let mut strangers = Vec::new();
    for i in 0..6 {
        strangers.push(trickle(addr, &ca, &path, &format!("pck_junk_{i}_token")).await);
    }
    for tls in &mut strangers {
        let status = status_within(tls, Duration::from_secs(5)).await;
        assert_eq!(status, Some(401), "a stranger's request waited for its body");
    }

    // The API server's real review, while the strangers' connections stay open.
    let denied = create_pod(pod(
        "web",
        "default",
        pod_spec(true, vec![container("app", "nginx:1.25", false)]),
    ));
    let started = Instant::now();
    let (status, answer) = post(
        addr,
        &ca,
        &path,
        Some(&env.connector_key),
        denied.to_string().into_bytes(),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(answer["response"]["allowed"], false, "{answer}");
    // The usual latency is milliseconds; a slot held by a stranger would cost the 10 s deadline.
    assert!(took < Duration::from_secs(3), "the real review took {took:?}");
    drop(strangers);
    crate::report::row(
        "3",
        "6 strangers with junk tokens trickling webhook bodies (3 slots)",
        "each answered 401 from its headers, holding no slot",
        &format!("the cluster's real review answered in {took:.1?}"),
    );
}

portcullis_test_kit::both! {
    embedded: portcullis_server::Mode::Embedded,
    distributed: portcullis_server::Mode::Distributed;
    strangers_trickling_bodies_hold_no_webhook_slot,
}
