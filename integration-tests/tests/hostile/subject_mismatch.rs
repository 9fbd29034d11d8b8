//! Finding 8 (subject and body): an event published on one tenant's subject that names
//! another tenant in its body is dropped by every follower, so whoever may publish on
//! `pc.mallory.evt.>` cannot change what admission believes about tenant `default`.
//!
//! The forged event goes straight onto the bus the policy store publishes on: the
//! in-process bus in embedded mode, JetStream through a NATS client in distributed mode.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::Duration;

use bytes::Bytes;
use portcullis_admission::AdmissionOptions;
use portcullis_admission::testing::StackOptions;
use portcullis_bus::Event;
use portcullis_integration_tests::admission::{Env, container, create_pod, pod, pod_spec, policy};
use portcullis_policy_client::scans::ScanCacheOptions;
use portcullis_proto::common::v1 as pc;
use portcullis_proto::events::v1 as pe;
use portcullis_server::Mode;
use portcullis_test_kit::eventually;
use prost::Message as _;
use serde_json::{Value, json};

const VULNERABLE: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const LATER: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

fn review_of(digest: &str) -> Value {
    let image = format!("registry.example.com/shop/api@{digest}");
    create_pod(pod(
        "api",
        "shop",
        pod_spec(false, vec![container("api", &image, false)]),
    ))
}

async fn upload_critical_scan(env: &Env, digest: &str) {
    env.upload_scan(digest, "critical", "2026-01-01T00:00:00Z").await;
}

/// A `scan.result` saying `digest` is clean (a newer scan, no findings), for `victim`.
fn forged_clean_scan(victim: &str, digest: &str) -> pe::EventEnvelope {
    let summary = pc::ScanSummary {
        digest: digest.into(),
        scan_type: pc::ScanType::Vulnerability as i32,
        scanned_at: Some(prost_types::Timestamp {
            seconds: 1_800_000_000,
            nanos: 0,
        }),
        scanner: "forged".into(),
        findings: 0,
        ..Default::default()
    };
    pe::EventEnvelope {
        event_id: "forged-scan-1".into(),
        tenant_id: victim.into(),
        topic: "scan.result".into(),
        producer: "mallory".into(),
        payload: Some(pe::event_envelope::Payload::ScanResultStored(pe::ScanResultStored {
            digest: digest.into(),
            scan_type: pc::ScanType::Vulnerability as i32,
            summary: Some(summary),
            is_latest: true,
        })),
        ..Default::default()
    }
}

pub async fn event_naming_another_tenant_is_dropped(mode: Mode) {
    // Summaries are not refreshed in the background during the test: only events change them.
    let options = StackOptions {
        admission: AdmissionOptions {
            scan_cache: ScanCacheOptions {
                refresh_after: Duration::from_secs(600),
                ..ScanCacheOptions::default()
            },
            ..AdmissionOptions::default()
        },
        ..StackOptions::new(mode)
    };
    let doc = policy(
        "scans",
        json!([{"type": "vulnerabilities", "action": "block",
                "statement": {"properties": [{"key": "max-severity", "value": "high"}]}}]),
    );
    let env = Env::start(options, &doc.to_string()).await;
    let victim = env.stack.store.tenant_id.clone();
    upload_critical_scan(&env, VULNERABLE).await;
    // Both digests are held by admission: VULNERABLE as critical, LATER as unscanned.
    assert!(!env.judge(&review_of(VULNERABLE)).await.allowed());
    assert!(env.judge(&review_of(LATER)).await.allowed());

    // Mallory publishes on her own subject an event about the victim's image.
    let forged = forged_clean_scan(&victim, VULNERABLE);
    env.stack
        .store
        .bus
        .publish(Event::new(
            "forged-scan-1",
            "mallory",
            "scan.result",
            Bytes::from(forged.encode_to_vec()),
        ))
        .await
        .unwrap();

    // A genuine event of the victim after it: once admission has applied this one, it has
    // handled the forged one (events are handled in stream order).
    upload_critical_scan(&env, LATER).await;
    let env_ref = &env;
    eventually(Duration::from_secs(15), || async move {
        if env_ref.judge(&review_of(LATER)).await.allowed() {
            Err("the genuine scan of LATER has not arrived".to_owned())
        } else {
            Ok(())
        }
    })
    .await;

    // The victim's decisions stand: the forged "clean" scan was dropped.
    let answer = env.judge(&review_of(VULNERABLE)).await;
    assert!(
        !answer.allowed(),
        "the forged event on mallory's subject changed the victim's decision: {:?}",
        answer.json
    );
    assert!(answer.message().contains("vulnerabilities"), "{}", answer.message());
    crate::report::row(
        "8",
        "a scan.result on tenant mallory's subject naming another tenant in its body",
        "dropped and counted by admission's follower",
        "the victim's decisions unchanged (its vulnerable image still blocked)",
    );
}

portcullis_test_kit::both! {
    embedded: portcullis_server::Mode::Embedded,
    distributed: portcullis_server::Mode::Distributed;
    event_naming_another_tenant_is_dropped,
}
