//! The telemetry service end to end, each scenario embedded (SQLite, in-process bus) and
//! distributed (PostgreSQL, nats-server): a policy store, the telemetry service, a sensor's
//! Falco events and the other stages' bus events.
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

use portcullis_bus::TopicFilter;
use portcullis_domain::Topic;
use portcullis_integration_tests::store::{Api, next_matching, subscribe};
use portcullis_proto::common::v1 as pc;
use portcullis_proto::events::v1::event_envelope::Payload;
use portcullis_proto::telemetry::v1 as pt;
use portcullis_server::Mode;
use portcullis_test_kit::eventually;
use serde_json::json;
use stack::*;

const WAIT: Duration = Duration::from_secs(20);

fn pods(r: &pt::SearchEventsResponse) -> Vec<String> {
    let mut names: Vec<String> = r.events.iter().map(|e| e.pod.as_ref().unwrap().name.clone()).collect();
    names.sort();
    names
}

async fn ingested_falco_events_are_searchable_when_the_ingest_answers(mode: Mode) {
    let stack = Stack::start(mode).await;
    let t = stack.tenant.clone();
    let answer = stack
        .ingest(
            &t.connector_key,
            &[
                falco("Terminal shell in container", "web-1", None, 5),
                falco("Read sensitive file untrusted", "web-1", None, 4),
                falco("Terminal shell in container", "db-1", None, 3),
                "not json".to_owned(),
                // Older than the 30-day retention.
                falco("Terminal shell in container", "old-1", None, 40 * 24 * 3600),
            ],
        )
        .await;
    assert_eq!(
        (answer.accepted, answer.rejected, answer.refused, answer.not_stored),
        (3, 1, 1, 0),
        "{answer:?}"
    );
    assert_eq!(answer.errors.len(), 2, "{answer:?}");
    // Stored before the ingest answered: searchable at once.
    let found = stack.search(&t.admin_key, "pod:web-1 type:runtime").await;
    assert_eq!(found.total, 2, "{found:?}");
    assert!(!found.total_is_lower_bound);
    assert_eq!(pods(&found), ["web-1", "web-1"]);
    let shells = stack.search(&t.admin_key, "rule:\"Terminal shell in container\"").await;
    assert_eq!(pods(&shells), ["db-1", "web-1"], "{shells:?}");
    assert!(shells.events.iter().all(|e| e.cluster_id == t.cluster_id));
    let none = stack.search(&t.admin_key, "pod:old-1").await;
    assert_eq!(none.total, 0);
}

async fn one_tenant_never_sees_another_s_events(mode: Mode) {
    let stack = Stack::start(mode).await;
    let t = stack.tenant.clone();
    let other = stack.other_tenant("acme", &policy("guard", true, None)).await;
    stack
        .ingest(
            &t.connector_key,
            &[falco("Terminal shell in container", "mine-1", None, 5)],
        )
        .await;
    stack
        .ingest(
            &other.connector_key,
            &[falco("Terminal shell in container", "theirs-1", None, 5)],
        )
        .await;
    let mine = stack.search(&t.admin_key, "").await;
    assert_eq!(pods(&mine), ["mine-1"]);
    let theirs = stack.search(&other.admin_key, "").await;
    assert_eq!(pods(&theirs), ["theirs-1"]);
    // Even naming the other tenant's pod finds nothing.
    assert_eq!(stack.search(&t.admin_key, "theirs-1").await.total, 0);
    // A connector key ingests only for its own cluster.
    let mut client = stack.client().await;
    let refused = client
        .ingest_events(portcullis_policy_store::testing::authed(
            &t.connector_key,
            tokio_stream::iter(vec![pt::IngestEventsRequest {
                cluster: Some(pc::ResourceRef {
                    r#ref: Some(pc::resource_ref::Ref::Id(other.cluster_id.clone())),
                }),
                events_json: vec![falco("Terminal shell in container", "x", None, 1).into_bytes().into()],
            }]),
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
}

async fn a_log_only_admission_then_a_runtime_detection_opens_an_alert(mode: Mode) {
    let stack = Stack::start(mode).await;
    let t = stack.tenant.clone();
    // Near miss: a clean admission of `api`, then a detection in it: no alert.
    stack
        .publish_admission(
            &t,
            "11111111-0000-4000-8000-000000000001",
            true,
            None,
            "Deployment",
            "api",
        )
        .await;
    // The story: `web` admitted with a log-only violation, then a detection in its pod.
    stack
        .publish_admission(
            &t,
            "11111111-0000-4000-8000-000000000002",
            true,
            Some(pc::Action::Log),
            "Deployment",
            "web",
        )
        .await;
    stack.wait_found(&t.admin_key, "type:admission", 2).await;
    stack
        .ingest(
            &t.connector_key,
            &[falco("Terminal shell in container", "a1", Some("api"), 0)],
        )
        .await;
    assert!(
        stack.alerts(&t.admin_key).await.is_empty(),
        "a clean admission opened an alert"
    );
    stack
        // Timed now: after the admission (sequences are ordered by event time).
        .ingest(
            &t.connector_key,
            &[falco("Terminal shell in container", "w1", Some("web"), 0)],
        )
        .await;
    // Correlated and stored before the ingest answered.
    let alerts = stack.alerts(&t.admin_key).await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let alert = &alerts[0];
    assert_eq!(alert.rule, "admitted-with-violations-then-runtime");
    assert_eq!(alert.status, pt::AlertStatus::Open as i32);
    assert_eq!(alert.severity, pt::EventSeverity::High as i32);
    assert_eq!(alert.cluster_ids, std::slice::from_ref(&t.cluster_id));
    assert_eq!(alert.event_count, 2);
    // The risk score counts it (high: 5).
    let risk = stack
        .client()
        .await
        .list_risk_scores(portcullis_policy_store::testing::authed(
            &t.admin_key,
            pt::ListRiskScoresRequest::default(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(risk.scores.len(), 1);
    assert_eq!((risk.scores[0].score, risk.scores[0].high_alerts), (5, 1));
    // Acknowledged, then closed: it no longer counts.
    let mut client = stack.client().await;
    for status in [pt::AlertStatus::Acknowledged, pt::AlertStatus::Closed] {
        let changed = client
            .update_alert_status(portcullis_policy_store::testing::authed(
                &t.admin_key,
                pt::UpdateAlertStatusRequest {
                    id: alert.id.clone(),
                    status: status as i32,
                    note: String::new(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(changed.changed);
        assert_eq!(changed.alert.unwrap().status, status as i32);
    }
    let risk = client
        .list_risk_scores(portcullis_policy_store::testing::authed(
            &t.admin_key,
            pt::ListRiskScoresRequest::default(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(risk.scores.iter().all(|s| s.score == 0), "{risk:?}");
}

async fn xdr_disabled_stores_nothing_but_still_mitigates(mode: Mode) {
    let stack = Stack::start(mode).await;
    // A tenant whose policy has xdrEnabled false and a ruleset terminating shells in `web`.
    let mut operator = Api::new(&stack.store, &stack.store.operator_key).await;
    let admin_key = operator.create_tenant("quiet").await.unwrap();
    let mut admin = Api::new(&stack.store, &admin_key).await;
    let ruleset = admin
        .create_ruleset(
            &json!({"name": "shells", "labels": {"matchLabels": {"app": "web"}},
                    "rules": [{"id": "Terminal shell in container", "mitigation": "terminate"}]})
            .to_string(),
        )
        .await
        .unwrap();
    let t = Stack::tenant_in(
        &stack.store,
        "quiet",
        &admin_key,
        &policy("quiet", false, Some(&ruleset.id)),
    )
    .await;
    let mut mitigations = subscribe(&stack.store.bus, &TopicFilter::topics([Topic::RuntimeMitigation])).await;
    let answer = stack
        .ingest(
            &t.connector_key,
            &[
                falco("Terminal shell in container", "w1", Some("web"), 2),
                // Not selected by the ruleset's labels: no mitigation.
                falco("Terminal shell in container", "a1", Some("api"), 1),
            ],
        )
        .await;
    assert_eq!(
        (answer.accepted, answer.not_stored, answer.mitigations),
        (0, 2, 1),
        "{answer:?}"
    );
    assert_eq!(stack.search(&t.admin_key, "").await.total, 0);
    let (received, envelope) = next_matching(&mut mitigations, |e| {
        matches!(e.payload, Some(Payload::RuntimeMitigation(_)))
    })
    .await;
    assert_eq!(received.event.tenant, "quiet");
    let Some(Payload::RuntimeMitigation(m)) = envelope.payload else {
        unreachable!()
    };
    assert_eq!(m.cluster_id, t.cluster_id);
    assert_eq!(m.mitigation, pc::Mitigation::Terminate as i32);
    assert_eq!(m.pod.unwrap().name, "web-7c9f8d6b5-w1");
    assert_eq!(m.rule_ids, ["Terminal shell in container"]);
    assert_eq!(m.ruleset_ids, [ruleset.id]);
}

async fn a_restart_loses_no_event_and_stores_none_twice(mode: Mode) {
    let mut stack = Stack::start(mode).await;
    let t = stack.tenant.clone();
    let first: Vec<String> = (0..20)
        .map(|i| falco("Terminal shell in container", &format!("p{i}"), None, 30 - i))
        .collect();
    stack.ingest(&t.connector_key, &first).await;
    // Bus events published while the service is down are taken after the restart.
    stack.stop_service().await;
    stack
        .publish_admission(
            &t,
            "22222222-0000-4000-8000-000000000001",
            false,
            Some(pc::Action::Block),
            "Deployment",
            "web",
        )
        .await;
    stack.start_service().await;
    // The sensor sends the same events again (it did not see the answer), and new ones.
    let mut again = first.clone();
    again.extend((20..25).map(|i| falco("Terminal shell in container", &format!("p{i}"), None, 30 - i)));
    let answer = stack.ingest(&t.connector_key, &again).await;
    assert_eq!(answer.accepted, 25);
    eventually(WAIT, async || {
        let all = stack.search(&t.admin_key, "").await;
        if all.total == 26 { Ok(()) } else { Err(all.total) }
    })
    .await;
    let runtime = stack.search(&t.admin_key, "type:runtime").await;
    assert_eq!(runtime.total, 25);
    let mut ids: Vec<&str> = runtime.events.iter().map(|e| e.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 25);
}

fn all_time() -> portcullis_telemetry_service::store::TimeRange {
    let now = time::OffsetDateTime::now_utc();
    portcullis_telemetry_service::store::TimeRange {
        from: now - time::Duration::days(1),
        to: now + time::Duration::hours(1),
    }
}

fn page() -> portcullis_telemetry_service::store::PageRequest {
    portcullis_telemetry_service::store::PageRequest { size: 10, token: None }
}

async fn a_kill_mid_stream_loses_no_event_and_stores_none_twice(mode: Mode) {
    let mut stack = Stack::start(mode).await;
    let t = stack.tenant.clone();
    stack.stop_service().await;
    let mut killable = stack.start_killable().await;
    let shell = "Terminal shell in container";
    let other = "Read sensitive file untrusted";
    let message = |events: &[String]| pt::IngestEventsRequest {
        cluster: None,
        events_json: events.iter().map(|e| e.clone().into_bytes().into()).collect(),
    };
    // The stream's first message: three shells (of an exec burst of five in `prod`) and 17
    // other detections; its second, never sent before the kill: ten more and a fourth shell.
    let mut first: Vec<String> = (0..3).map(|i| falco(shell, &format!("s{i}"), None, 30 - i)).collect();
    first.extend((0..17).map(|i| falco(other, &format!("p{i}"), None, 30 - i)));
    let mut second: Vec<String> = (17..27).map(|i| falco(other, &format!("p{i}"), None, 30 - i)).collect();
    second.push(falco(shell, "s3", None, 20));
    let (sensor, stream) = tokio::sync::mpsc::channel(4);
    let mut client = killable.client().await;
    let key = t.connector_key.clone();
    let call = tokio::spawn(async move {
        client
            .ingest_events(portcullis_policy_store::testing::authed(
                &key,
                tokio_stream::wrappers::ReceiverStream::new(stream),
            ))
            .await
    });
    sensor.send(message(&first)).await.unwrap();
    // The half-sent stream's first message is stored (its answer comes only at the end).
    eventually(WAIT, async || {
        let found = stack
            .events
            .search(
                &t.id,
                &portcullis_telemetry_service::query::Query::default(),
                all_time(),
                &page(),
            )
            .await
            .unwrap();
        if found.total == 20 { Ok(()) } else { Err(found.total) }
    })
    .await;
    // Bus events in flight when the service is killed: some taken, some not yet acked.
    for i in 0..10 {
        stack
            .publish_admission(
                &t,
                &format!("33333333-0000-4000-8000-0000000000{i:02}"),
                true,
                None,
                "Deployment",
                &format!("api{i}"),
            )
            .await;
    }
    killable.kill();
    assert!(call.await.unwrap().is_err(), "the stream was not answered");
    drop(sensor);
    stack.start_service().await;
    // The sensor resends the whole unanswered stream, then goes on.
    let mut all = first.clone();
    all.extend(second);
    let answer = stack.ingest(&t.connector_key, &all).await;
    assert_eq!(
        (answer.accepted, answer.rejected, answer.refused),
        (31, 0, 0),
        "{answer:?}"
    );
    // Unacked bus events come back after the bus's ack wait (30 s).
    eventually(Duration::from_secs(90), async || {
        let found = stack.search(&t.admin_key, "type:admission").await;
        if found.total == 10 { Ok(()) } else { Err(found.total) }
    })
    .await;
    let runtime = stack.search(&t.admin_key, "type:runtime").await;
    assert_eq!(runtime.total, 31);
    let mut ids: Vec<&str> = runtime.events.iter().map(|e| e.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 31);
    assert_eq!(stack.search(&t.admin_key, "").await.total, 41);
    // Four distinct shells so far: the resent three counted again would have made a burst.
    assert!(stack.alerts(&t.admin_key).await.is_empty());
    stack.ingest(&t.connector_key, &[falco(shell, "s4", None, 15)]).await;
    let alerts = stack.alerts(&t.admin_key).await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].rule, "exec-attach-burst");
    assert_eq!(alerts[0].event_count, 5);
}

/// Two replicas share the work subscription: every bus event is stored once, and what each
/// replica says it stored (its drain summary) adds up to what was sent.
async fn two_replicas_store_each_bus_event_once_and_count_their_share(mode: Mode) {
    use portcullis_kit::service::Served as _;
    let mut stack = Stack::start(mode).await;
    let t = stack.tenant.clone();
    let second = stack.start_replica().await;
    // Both replicas are subscribed before anything is sent.
    let sent = 200_u64;
    for i in 0..sent {
        stack
            .publish_admission(
                &t,
                &format!("44444444-0000-4000-8000-{i:012}"),
                true,
                Some(pc::Action::Log),
                "Deployment",
                &format!("w{i}"),
            )
            .await;
    }
    eventually(WAIT, async || {
        let found = stack.search(&t.admin_key, "type:admission").await;
        if found.total == sent { Ok(()) } else { Err(found.total) }
    })
    .await;
    let count = |work: Vec<(&'static str, u64)>, name: &str| {
        work.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, c)| *c)
            .unwrap_or_else(|| panic!("no {name} in {work:?}"))
    };
    // Read after both drained, so that no write is still being counted.
    let replica = stack.telemetry.take().unwrap();
    replica.stop().await.unwrap();
    second.stop().await.unwrap();
    let (first, other) = (replica.work_done(), second.work_done());
    assert_eq!(
        count(first.clone(), "stored") + count(other.clone(), "stored"),
        sent,
        "{first:?} {other:?}"
    );
    assert_eq!(count(first, "duplicates") + count(other, "duplicates"), 0);
}

portcullis_test_kit::both! {
    embedded: portcullis_server::Mode::Embedded,
    distributed: portcullis_server::Mode::Distributed;
    ingested_falco_events_are_searchable_when_the_ingest_answers,
    one_tenant_never_sees_another_s_events,
    a_log_only_admission_then_a_runtime_detection_opens_an_alert,
    xdr_disabled_stores_nothing_but_still_mitigates,
    a_restart_loses_no_event_and_stores_none_twice,
    a_kill_mid_stream_loses_no_event_and_stores_none_twice,
    two_replicas_store_each_bus_event_once_and_count_their_share,
}
