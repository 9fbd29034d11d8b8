//! Replay of recorded admissions against a draft policy, each scenario embedded (SQLite,
//! in-process bus) and distributed (PostgreSQL, nats-server): admission decision events
//! published as admission publishes them for an `xdrEnabled` policy (with the engine's
//! reviewed pod projection), recorded by the telemetry service, and `ReplayPolicy` over them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

#[path = "support/stack.rs"]
mod stack;

use std::time::Duration;

use bytes::Bytes;
use portcullis_bus::Event;
use portcullis_domain::Topic;
use portcullis_engine::input::parse_document;
use portcullis_engine::projection::{ReviewedPod, review_pod_labels};
use portcullis_integration_tests::store::Api;
use portcullis_policy_store::testing::authed;
use portcullis_proto::admission::v1 as pa;
use portcullis_proto::common::v1 as pc;
use portcullis_proto::events::v1 as pe;
use portcullis_proto::telemetry::v1 as pt;
use portcullis_server::Mode;
use portcullis_test_kit::eventually;
use prost::Message as _;
use serde_json::json;
use stack::*;

const WAIT: Duration = Duration::from_secs(20);

/// The AdmissionReview of a Deployment `name` in `prod` with one container, privileged or not.
fn review(name: &str, privileged: bool) -> Vec<u8> {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": format!("uid-{name}"),
        "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
        "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
        "operation": "CREATE", "namespace": "prod",
        "object": {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "prod"},
            "spec": {"template": {"metadata": {"labels": {"app": name}}, "spec": {
                "containers": [{"name": "app", "image": format!("registry.example.com/{name}:1"),
                                "securityContext": {"privileged": privileged}}]}}}}}})
    .to_string()
    .into_bytes()
}

/// The engine's projection of `review`, as admission puts it on the decision event.
fn projection(review: &[u8]) -> Vec<u8> {
    let subject = parse_document(review).unwrap().remove(0);
    let labels = review_pod_labels(review, &subject).unwrap();
    ReviewedPod::from_subject(&subject, labels).unwrap().to_json().unwrap()
}

/// Publishes the decision the live policy of [`policy`] (privileged containers: log) makes
/// on Deployment `name`, carrying the reviewed pod projection, as admission does for an
/// `xdrEnabled` policy.
async fn publish_reviewed(stack: &Stack, tenant: &Tenant, event_id: &str, name: &str, privileged: bool) {
    let object = pc::WorkloadRef {
        kind: "Deployment".into(),
        namespace: "prod".into(),
        name: name.into(),
        ..Default::default()
    };
    let violations: Vec<pc::Violation> = privileged
        .then(|| pc::Violation {
            rule_type: "containerSecurityContext".into(),
            action: pc::Action::Log as i32,
            message: "containerSecurityContext violates rule with properties { privileged:true }".into(),
            containers: vec!["app".into()],
            ..Default::default()
        })
        .into_iter()
        .collect();
    let summary = pe::AdmissionDecisionSummary {
        uid: event_id.into(),
        cluster_id: tenant.cluster_id.clone(),
        operation: "CREATE".into(),
        object: Some(object.clone()),
        allowed: true,
        basis: pa::DecisionBasis::Evaluated as i32,
        policy_id: "p".into(),
        policy_revision: 1,
        ..Default::default()
    };
    let envelope = pe::EventEnvelope {
        event_id: event_id.into(),
        tenant_id: tenant.id.clone(),
        topic: Topic::AdmissionDecision.as_str().into(),
        occurred_at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
        trace: None,
        producer: "admission".into(),
        payload: Some(pe::event_envelope::Payload::AdmissionDecision(pe::AdmissionDecision {
            summary: Some(summary),
            decision: Some(pa::Decision {
                allowed: true,
                violations,
                object: Some(object),
                ..Default::default()
            }),
            reviewed_pod_json: projection(&review(name, privileged)).into(),
        })),
    };
    stack
        .store
        .bus
        .publish(Event::new(
            event_id,
            tenant.id.as_str(),
            Topic::AdmissionDecision.as_str(),
            Bytes::from(envelope.encode_to_vec()),
        ))
        .await
        .unwrap();
}

/// Waits until `n` admission decisions of the tenant are stored (their recorded admissions are
/// stored before them, so replay reads them all).
async fn wait_for_admissions(stack: &Stack, key: &str, n: u64) {
    stack.wait_found(key, "type:admission", n).await;
}

async fn replay(stack: &Stack, key: &str, document: &str) -> Result<pt::ReplayPolicyResponse, tonic::Status> {
    stack
        .client()
        .await
        .replay_policy(authed(
            key,
            pt::ReplayPolicyRequest {
                document: document.to_owned(),
                ..Default::default()
            },
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// The live policy with its log-only rule now `block`.
fn stricter(name: &str) -> String {
    policy(name, true, None).replace(r#""action":"log""#, r#""action":"block""#)
}

/// A workload's change as the assertions compare it: name, admissions, newly blocked and
/// (decided, would be, count).
type Changed = (String, u64, u64, Vec<(i32, i32, u64)>);

fn changed(r: &pt::ReplayPolicyResponse) -> Vec<Changed> {
    r.workloads
        .iter()
        .map(|w| {
            let c = w.counts.clone().unwrap();
            (
                w.workload.clone().unwrap().name,
                c.admissions,
                c.newly_blocked,
                c.changes.iter().map(|x| (x.decided, x.would_be, x.count)).collect(),
            )
        })
        .collect()
}

async fn a_stricter_draft_reports_exactly_the_admissions_it_would_now_block(mode: Mode) {
    let stack = Stack::start(mode).await;
    let t = stack.tenant.clone();
    // `web` was admitted twice with the log-only violation, `api` once cleanly.
    publish_reviewed(&stack, &t, "33333333-0000-4000-8000-000000000001", "web", true).await;
    publish_reviewed(&stack, &t, "33333333-0000-4000-8000-000000000002", "web", true).await;
    publish_reviewed(&stack, &t, "33333333-0000-4000-8000-000000000003", "api", false).await;
    // A delivery again (same event id) is recorded once.
    publish_reviewed(&stack, &t, "33333333-0000-4000-8000-000000000001", "web", true).await;
    wait_for_admissions(&stack, &t.admin_key, 3).await;

    let strict = replay(&stack, &t.admin_key, &stricter("guard")).await.unwrap();
    assert_eq!((strict.replayed, strict.unreadable), (3, 0), "{strict:?}");
    let (log, block) = (pt::ReplayOutcome::Log as i32, pt::ReplayOutcome::Block as i32);
    assert_eq!(
        changed(&strict),
        [("web".to_owned(), 2, 2, vec![(log, block, 2)])],
        "{strict:?}"
    );
    assert_eq!(strict.workloads[0].cluster_id, t.cluster_id);
    assert_eq!(strict.workloads[0].namespace, "prod");
    assert_eq!(strict.workloads[0].workload.as_ref().unwrap().kind, "Deployment");
    assert_eq!(strict.unchanged_workloads, 1, "api stays allowed");
    let totals = strict.totals.unwrap();
    assert_eq!((totals.admissions, totals.newly_blocked), (3, 2));

    // The live policy itself changes nothing.
    let same = replay(&stack, &t.admin_key, &policy("guard", true, None))
        .await
        .unwrap();
    assert_eq!(same.replayed, 3);
    assert!(same.workloads.is_empty(), "{same:?}");
    assert_eq!(same.unchanged_workloads, 2);
    assert!(same.totals.unwrap().changes.is_empty());

    // Narrowed to a cluster the admissions are not of: nothing replayed.
    let mut client = stack.client().await;
    let elsewhere = client
        .replay_policy(authed(
            &t.admin_key,
            pt::ReplayPolicyRequest {
                document: stricter("guard"),
                cluster: Some(pc::ResourceRef {
                    r#ref: Some(pc::resource_ref::Ref::Id("no-such-cluster".into())),
                }),
                since: None,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(elsewhere.replayed, 0);

    // A bad draft is InvalidArgument with the engine's message.
    let bad = replay(
        &stack,
        &t.admin_key,
        r#"{"name":"x","default":{"rules":[{"type":"nope"}]}}"#,
    )
    .await
    .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");
    assert!(bad.message().starts_with("document: "), "{bad:?}");
}

async fn xdr_disabled_admissions_are_not_recorded_and_tenants_stay_apart(mode: Mode) {
    let stack = Stack::start(mode).await;
    let t = stack.tenant.clone();
    let other = stack.other_tenant("acme", &policy("guard", true, None)).await;
    let mut operator = Api::new(&stack.store, &stack.store.operator_key).await;
    let quiet_key = operator.create_tenant("quiet").await.unwrap();
    let quiet = Stack::tenant_in(&stack.store, "quiet", &quiet_key, &policy("quiet", false, None)).await;

    publish_reviewed(&stack, &t, "44444444-0000-4000-8000-000000000001", "web", true).await;
    publish_reviewed(&stack, &other, "44444444-0000-4000-8000-000000000002", "shop", true).await;
    publish_reviewed(&stack, &other, "44444444-0000-4000-8000-000000000003", "cart", true).await;
    publish_reviewed(&stack, &quiet, "44444444-0000-4000-8000-000000000004", "web", true).await;
    wait_for_admissions(&stack, &t.admin_key, 1).await;
    wait_for_admissions(&stack, &other.admin_key, 2).await;
    // The quiet tenant's decision is taken and counted, not stored: wait for it to be handled.
    let service = stack.telemetry.as_ref().unwrap();
    eventually(WAIT, async || {
        let n = service.telemetry().ingestor().counters().not_stored();
        if n >= 1 { Ok(()) } else { Err(n) }
    })
    .await;

    let mine = replay(&stack, &t.admin_key, &stricter("guard")).await.unwrap();
    assert_eq!(mine.replayed, 1, "{mine:?}");
    assert_eq!(changed(&mine).iter().map(|c| c.0.as_str()).collect::<Vec<_>>(), ["web"]);
    let theirs = replay(&stack, &other.admin_key, &stricter("guard")).await.unwrap();
    assert_eq!(theirs.replayed, 2, "{theirs:?}");
    let mut names: Vec<String> = changed(&theirs).into_iter().map(|c| c.0).collect();
    names.sort();
    assert_eq!(names, ["cart", "shop"]);
    assert!(theirs.workloads.iter().all(|w| w.cluster_id == other.cluster_id));
    let nothing = replay(&stack, &quiet_key, &stricter("quiet")).await.unwrap();
    assert_eq!((nothing.replayed, nothing.workloads.len()), (0, 0), "{nothing:?}");
}

portcullis_test_kit::both! {
    embedded: portcullis_server::Mode::Embedded,
    distributed: portcullis_server::Mode::Distributed;
    a_stricter_draft_reports_exactly_the_admissions_it_would_now_block,
    xdr_disabled_admissions_are_not_recorded_and_tenants_stay_apart,
}
