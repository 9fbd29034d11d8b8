//! Scan summaries, the policy store going away, failure modes and rate limits.
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

use std::time::{Duration, Instant};

use portcullis_admission::rate_limit::{RateLimitConfig, TenantLimit};
use portcullis_admission::testing::StackOptions;
use portcullis_admission::{AdmissionOptions, ClusterSel};
use portcullis_domain::FailureMode;
use portcullis_policy_store::testing::authed;
use portcullis_proto::admission::v1 as pa;
use portcullis_proto::policystore::v1 as pb;
use portcullis_server::Mode;
use portcullis_test_kit::eventually;
use serde_json::json;
use tonic::Code;

use portcullis_integration_tests::admission::{Env, container, create_pod, host_network, pod, pod_spec, policy};
use portcullis_integration_tests::store::by_name;

const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

fn vulnerable_pod_review() -> serde_json::Value {
    let image = format!("registry.example.com/shop/api@{DIGEST}");
    create_pod(pod(
        "api",
        "shop",
        pod_spec(false, vec![container("api", &image, false)]),
    ))
}

async fn upload_scan(env: &Env, severity: &str, scanned_at: &str) {
    env.upload_scan(DIGEST, severity, scanned_at).await;
}

/// A vulnerabilities rule reads scan summaries: an unscanned image passes, a scan uploaded
/// later is fetched on the first miss, and a newer scan replaces it through the bus.
pub async fn scan_summaries_fetched_and_followed(mode: Mode) {
    let doc = policy(
        "scans",
        json!([{"type": "vulnerabilities", "action": "block",
                "statement": {"properties": [{"key": "max-severity", "value": "high"}]}}]),
    );
    let env = Env::one(mode, &doc.to_string()).await;
    // Unscanned: no finding, allowed (the unscannedImage rule is a separate rule).
    assert!(env.judge(&vulnerable_pod_review()).await.allowed());

    // The "no results" answer is cached; a scan uploaded now arrives by its event.
    upload_scan(&env, "critical", "2026-01-01T00:00:00Z").await;
    let started = Instant::now();
    let env_ref = &env;
    let answer = eventually(Duration::from_secs(35), || async move {
        let answer = env_ref.judge(&vulnerable_pod_review()).await;
        if answer.allowed() {
            Err(format!("the scan result never arrived: {answer:?}"))
        } else {
            Ok(answer)
        }
    })
    .await;
    assert!(answer.message().contains("vulnerabilities"), "{}", answer.message());
    eprintln!("scan result in force after {} ms", started.elapsed().as_millis());

    // A newer, clean scan replaces it.
    upload_scan(&env, "low", "2026-02-01T00:00:00Z").await;
    eventually(Duration::from_secs(35), || async move {
        let answer = env_ref.judge(&vulnerable_pod_review()).await;
        if answer.allowed() {
            Ok(())
        } else {
            Err(format!("the newer scan never arrived: {answer:?}"))
        }
    })
    .await;

    // A second replica has nothing cached: its first review fetches the summary.
    let mut env = env;
    env.stack.add_replica().await.unwrap();
    let mut fresh = env.client(1).await;
    let answer = portcullis_integration_tests::admission::review_raw(
        &mut fresh,
        &env.connector_key,
        None,
        vulnerable_pod_review().to_string().into_bytes(),
    )
    .await
    .unwrap();
    assert!(answer.allowed(), "the newest (clean) scan is fetched on a miss");
    assert!(answer.decision.timings.unwrap().scan_lookup_us > 0, "a scan lookup ran");
}

/// The policy store goes away: a cluster already judged keeps its compiled policy; a
/// cluster never seen gets the default failure mode (fail-open), marked as such; a scan
/// lookup that cannot be made follows the cluster's failure mode, never "unscanned".
pub async fn store_outage_keeps_admission_serving(mode: Mode) {
    let doc = policy(
        "outage",
        json!([host_network("block"),
               {"type": "vulnerabilities", "action": "block",
                "statement": {"properties": [{"key": "max-severity", "value": "high"}]}}]),
    );
    let mut env = Env::one(mode, &doc.to_string()).await;
    let mut admin = env.admin.clone();
    // A second cluster, never reviewed, and fail-closed settings for the first.
    let second = admin.register_cluster("c2", by_name("outage")).await.unwrap();
    admin
        .clusters
        .update_cluster_settings(admin.req(pb::UpdateClusterSettingsRequest {
            cluster: by_name("c1"),
            settings: Some(pb::ClusterSettings {
                failure_mode: portcullis_proto::common::v1::FailureMode::FailClosed as i32,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["failure_mode".into()],
            }),
            ..Default::default()
        }))
        .await
        .unwrap();
    let blocked = create_pod(pod(
        "web",
        "apps",
        pod_spec(true, vec![container("app", "nginx:1.27", false)]),
    ));
    // Warm: the settings change is in force (fail-closed) before the store goes.
    // Polled for: the replica holds c1's policy with the fail-closed setting (the update's
    // cluster.changed event has been applied), where a fixed 300 ms pause stood.
    let (env_ref, blocked_ref) = (&env, &blocked);
    let cluster = ClusterSel::Id(env.cluster_id.clone());
    let cluster = &cluster;
    eventually(Duration::from_secs(10), || async move {
        let answer = env_ref.judge(blocked_ref).await;
        assert!(!answer.allowed());
        let policies = env_ref.stack.replicas[0].admission().policies();
        let held = policies.cached(&env_ref.stack.store.tenant_id, cluster);
        match held.map(|l| l.policy.failure_mode) {
            Some(FailureMode::FailClosed) if policies.len() == 1 => Ok(()),
            other => Err(format!("{} policies held, c1's failure mode {other:?}", policies.len())),
        }
    })
    .await;

    env.stack.store.stop().await.unwrap();

    // Known cluster: still judged by its policy.
    let answer = env.judge(&blocked).await;
    assert!(!answer.allowed());
    assert_eq!(answer.decision.basis, pa::DecisionBasis::Evaluated as i32);
    // A digest whose summary is not cached cannot be looked up: fail-closed denies it,
    // naming why, rather than treating it as unscanned.
    let answer = env.judge(&vulnerable_pod_review()).await;
    assert!(!answer.allowed(), "{:?}", answer.json);
    assert_eq!(answer.decision.basis, pa::DecisionBasis::FailClosed as i32);
    assert!(!answer.decision.degraded.is_empty());

    // Never seen: the default failure mode, fail-open, with a warning.
    let mut client = env.client(0).await;
    let answer = portcullis_integration_tests::admission::review_raw(
        &mut client,
        &second.connector_key,
        None,
        blocked.to_string().into_bytes(),
    )
    .await;
    // The key of the second cluster was never introspected either: with the store gone it
    // cannot be checked at all.
    assert_eq!(answer.unwrap_err().code(), Code::Unavailable);

    env.stack.store.restart().await.unwrap();
    let answer = portcullis_integration_tests::admission::review_raw(
        &mut client,
        &second.connector_key,
        None,
        blocked.to_string().into_bytes(),
    )
    .await
    .unwrap();
    assert!(!answer.allowed(), "after the restart its policy is fetched and applied");
}

/// A cluster whose policy cannot be had and that was never seen gets the default failure
/// mode: the key is known (cached) but the policy store cannot answer for the cluster.
pub async fn unseen_cluster_gets_the_default_failure_mode(mode: Mode) {
    let doc = policy("unseen", json!([host_network("block")]));
    let mut options = StackOptions::new(mode);
    options.admission = AdmissionOptions {
        policy_deadline: Duration::from_millis(300),
        ..AdmissionOptions::default()
    };
    let mut env = Env::start(options, &doc.to_string()).await;
    let blocked = create_pod(pod(
        "web",
        "apps",
        pod_spec(true, vec![container("app", "nginx:1.27", false)]),
    ));
    // The key is introspected (and cached) by a first review; then the policy cache is the
    // only thing missing after the store goes: a cluster named by a name never resolved.
    assert!(!env.judge(&blocked).await.allowed());
    env.stack.store.stop().await.unwrap();
    let mut client = env.client(0).await;
    let answer = portcullis_integration_tests::admission::review_raw(
        &mut client,
        &env.connector_key,
        by_name("c1"),
        blocked.to_string().into_bytes(),
    )
    .await
    .unwrap();
    assert!(answer.allowed(), "fail-open by default: {:?}", answer.json);
    assert_eq!(answer.decision.basis, pa::DecisionBasis::FailOpen as i32);
    assert!(
        answer.warnings().iter().any(|w| w.contains("fail-open")),
        "{:?}",
        answer.warnings()
    );
    env.stack.store.restart().await.unwrap();
}

/// Rate limits: a tenant over its limit gets ResourceExhausted (counted); another tenant
/// is not affected.
pub async fn rate_limits_per_tenant(mode: Mode) {
    let doc = policy("limits", json!([host_network("block")]));
    let mut options = StackOptions::new(mode);
    // A tiny bucket that refills slowly, so the test does not depend on speed.
    let rate_limit = RateLimitConfig {
        default: TenantLimit {
            per_second: 0.01,
            burst: 5,
        },
        ..RateLimitConfig::default()
    };
    options.admission = AdmissionOptions {
        rate_limit,
        ..AdmissionOptions::default()
    };
    let env = Env::start(options, &doc.to_string()).await;
    let clean = create_pod(pod(
        "web",
        "apps",
        pod_spec(false, vec![container("app", "nginx:1.27", false)]),
    ));
    for _ in 0..5 {
        assert!(env.judge(&clean).await.allowed());
    }
    let over = env.review(&clean).await.unwrap_err();
    assert_eq!(over.code(), Code::ResourceExhausted, "{over:?}");
    assert_eq!(env.stack.replicas[0].admission().limiter().rejected(), 1);

    // Another tenant, with its own cluster and bucket.
    let mut operator =
        portcullis_integration_tests::store::Api::new(&env.stack.store, &env.stack.store.operator_key).await;
    let other_admin = operator.create_tenant("other-tenant").await.unwrap();
    let mut other = portcullis_integration_tests::store::Api::new(&env.stack.store, &other_admin).await;
    other.create_policy(&doc.to_string()).await.unwrap();
    let registered = other.register_cluster("o1", by_name("limits")).await.unwrap();
    let mut client = env.client(0).await;
    let answer = portcullis_integration_tests::admission::review_raw(
        &mut client,
        &registered.connector_key,
        None,
        clean.to_string().into_bytes(),
    )
    .await
    .unwrap();
    assert!(answer.allowed());
}

/// ReviewStream: every request gets one response with its request id; a bad item gets an
/// item error and the stream goes on.
pub async fn review_stream_answers_each_item(mode: Mode) {
    let doc = policy("stream", json!([host_network("block")]));
    let env = Env::one(mode, &doc.to_string()).await;
    let mut requests = Vec::new();
    for i in 0..20_usize {
        let body = if i == 7 {
            b"{\"apiVersion\": ".to_vec()
        } else {
            create_pod(pod(
                "web",
                "apps",
                pod_spec(i.is_multiple_of(2), vec![container("app", "nginx:1.27", false)]),
            ))
            .to_string()
            .into_bytes()
        };
        requests.push(pa::ReviewRequest {
            cluster: None,
            admission_review_json: body.into(),
            request_id: format!("r{i}"),
        });
    }
    let mut client = env.client(0).await;
    let responses = client
        .review_stream(authed(&env.connector_key, futures::stream::iter(requests)))
        .await
        .unwrap()
        .into_inner();
    let responses: Vec<pa::ReviewResponse> = futures::StreamExt::collect::<Vec<_>>(responses)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(responses.len(), 20);
    let mut ids: Vec<&str> = responses.iter().map(|r| r.request_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 20, "one response per request id");
    for r in &responses {
        let i: usize = r.request_id.trim_start_matches('r').parse().unwrap();
        if i == 7 {
            let error = r.error.as_ref().expect("the bad item has an error");
            assert_eq!(error.code, Code::InvalidArgument as u32);
            assert!(r.decision.is_none());
        } else {
            let decision = r.decision.as_ref().expect("a decision");
            assert_eq!(decision.allowed, !i.is_multiple_of(2), "item {i}");
        }
    }
}

portcullis_test_kit::both! {
    embedded: portcullis_server::Mode::Embedded,
    distributed: portcullis_server::Mode::Distributed;
    scan_summaries_fetched_and_followed,
    store_outage_keeps_admission_serving,
    unseen_cluster_gets_the_default_failure_mode,
    rate_limits_per_tenant,
    review_stream_answers_each_item,
}
