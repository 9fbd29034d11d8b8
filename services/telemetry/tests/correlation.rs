//! Each shipped correlation rule through the running service, each scenario embedded
//! (SQLite, in-process bus) and distributed (PostgreSQL, nats-server): the rule's story opens
//! one alert (severity, events, risk score) and its near misses open none. Events come as
//! the stages send them (bus events) and as sensors do (`IngestEvents`), each with its own
//! time, relative to now.
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

use portcullis_domain::Topic;
use portcullis_proto::common::v1 as pc;
use portcullis_proto::continuous::v1 as pcont;
use portcullis_proto::events::v1 as pe;
use portcullis_proto::signature::v1 as ps;
use portcullis_proto::telemetry::v1 as pt;
use portcullis_server::Mode;
use portcullis_test_kit::eventually;
use serde_json::json;
use stack::*;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const WAIT: Duration = Duration::from_secs(20);

fn ago(seconds: i64) -> OffsetDateTime {
    OffsetDateTime::now_utc() - time::Duration::seconds(seconds)
}

fn timestamp(at: OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(std::time::SystemTime::from(at))
}

/// A Falco event of `rule` in bare pod `namespace/pod`, `seconds_ago` before now; `n` makes
/// otherwise equal events distinct (their ids derive from their content).
fn falco_at(rule: &str, namespace: &str, pod: &str, seconds_ago: i64, n: u32) -> String {
    let at = ago(seconds_ago).format(&Rfc3339).unwrap();
    json!({
        "output": format!("{at}: Warning {rule} (k8s.ns={namespace} k8s.pod={pod} n={n})"),
        "priority": "Warning",
        "rule": rule,
        "time": at,
        "source": "syscall",
        "output_fields": {
            "container.name": "app",
            "container.image.repository": "registry.example/web",
            "k8s.ns.name": namespace,
            "k8s.pod.name": pod,
            "k8s.pod.labels": {"app": pod},
        },
        "hostname": "node-1",
    })
    .to_string()
}

fn envelope(
    tenant: &Tenant,
    id: &str,
    topic: Topic,
    seconds_ago: i64,
    payload: pe::event_envelope::Payload,
) -> pe::EventEnvelope {
    pe::EventEnvelope {
        event_id: id.into(),
        tenant_id: tenant.id.clone(),
        topic: topic.as_str().into(),
        occurred_at: Some(timestamp(ago(seconds_ago))),
        trace: None,
        producer: topic.publisher().into(),
        payload: Some(payload),
    }
}

/// An admission decision of `kind namespace/name` in `cluster`: blocked when `action` is
/// block, admitted with a log-only violation when log, cleanly admitted when none; the
/// reviewed image's digest `digest`; the `subresource` reviewed (`exec`, ...).
#[allow(clippy::too_many_arguments)]
fn admission(
    tenant: &Tenant,
    cluster: &str,
    id: &str,
    seconds_ago: i64,
    action: pc::Action,
    (kind, namespace, name): (&str, &str, &str),
    digest: &str,
    subresource: &str,
) -> pe::EventEnvelope {
    let allowed = action != pc::Action::Block;
    let object = pc::WorkloadRef {
        kind: kind.into(),
        namespace: namespace.into(),
        name: name.into(),
        ..Default::default()
    };
    let violations = match action {
        pc::Action::Block | pc::Action::Log => vec![pc::Violation {
            rule_type: "containerSecurityContext".into(),
            action: action as i32,
            message: "containerSecurityContext violates rule with properties { privileged:true }".into(),
            containers: vec!["app".into()],
            ..Default::default()
        }],
        _ => Vec::new(),
    };
    let decision = pe::AdmissionDecision {
        summary: Some(pe::AdmissionDecisionSummary {
            uid: id.into(),
            cluster_id: cluster.into(),
            operation: if subresource.is_empty() { "CREATE" } else { "CONNECT" }.into(),
            subresource: subresource.into(),
            object: Some(object.clone()),
            owner: None,
            allowed,
            basis: portcullis_proto::admission::v1::DecisionBasis::Evaluated as i32,
            policy_id: "p".into(),
            policy_revision: 1,
            decided_at: None,
        }),
        decision: Some(portcullis_proto::admission::v1::Decision {
            allowed,
            violations,
            object: Some(object),
            digests: vec![pc::ImageDigest {
                image: "registry.example/web:1.2".into(),
                digest: digest.into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    envelope(
        tenant,
        id,
        Topic::AdmissionDecision,
        seconds_ago,
        pe::event_envelope::Payload::AdmissionDecision(decision),
    )
}

/// A signature verification of `digest` in `cluster` that an attestor did not verify.
fn signature_failed(tenant: &Tenant, cluster: &str, id: &str, seconds_ago: i64, digest: &str) -> pe::EventEnvelope {
    let verdict = pe::SignatureVerdict {
        cluster_id: cluster.into(),
        image: "registry.example/web:1.2".into(),
        digest: digest.into(),
        verdicts: vec![ps::AttestorVerdict {
            attestor: "release-key".into(),
            verdict: ps::Verdict::NotVerified as i32,
            reason: "no signature matches the key".into(),
            ..Default::default()
        }],
    };
    envelope(
        tenant,
        id,
        Topic::SignatureVerdict,
        seconds_ago,
        pe::event_envelope::Payload::SignatureVerdict(verdict),
    )
}

/// A continuous mitigation command of `kind` for pod `namespace/pod` in `state`.
fn mitigation(
    tenant: &Tenant,
    id: &str,
    seconds_ago: i64,
    kind: pcont::CommandType,
    state: pcont::CommandState,
    (namespace, pod): (&str, &str),
) -> pe::EventEnvelope {
    let command = pcont::MitigationCommand {
        command_id: format!("cmd-{id}"),
        cluster_id: tenant.cluster_id.clone(),
        pod: Some(pc::PodKey {
            namespace: namespace.into(),
            name: pod.into(),
            uid: String::new(),
        }),
        r#type: kind as i32,
        state: state as i32,
        reason: "runtime rule fired".into(),
        issued_at: Some(timestamp(ago(seconds_ago))),
        ..Default::default()
    };
    envelope(
        tenant,
        id,
        Topic::ContinuousMitigation,
        seconds_ago,
        pe::event_envelope::Payload::ContinuousMitigation(pe::ContinuousMitigation { command: Some(command) }),
    )
}

impl Stack {
    /// Waits until `key`'s tenant has `n` stored and correlated events (bus events are taken
    /// asynchronously).
    async fn wait_stored(&self, key: &str, n: u64) {
        self.wait_found(key, "", n).await;
    }

    /// An alert with its events (all on one page).
    async fn alert_detail(&self, key: &str, id: &str) -> pt::GetAlertResponse {
        self.client()
            .await
            .get_alert(portcullis_policy_store::testing::authed(
                key,
                pt::GetAlertRequest {
                    id: id.into(),
                    events_page: Some(pc::PageRequest {
                        page_size: 100,
                        page_token: String::new(),
                    }),
                },
            ))
            .await
            .unwrap()
            .into_inner()
    }

    /// The risk score of each cluster with alerts: (cluster id, score), by cluster id.
    async fn risk(&self, key: &str) -> Vec<(String, u64)> {
        let mut scores: Vec<(String, u64)> = self
            .client()
            .await
            .list_risk_scores(portcullis_policy_store::testing::authed(
                key,
                pt::ListRiskScoresRequest::default(),
            ))
            .await
            .unwrap()
            .into_inner()
            .scores
            .into_iter()
            .filter(|s| s.score > 0)
            .map(|s| (s.cluster_id, s.score))
            .collect();
        scores.sort();
        scores
    }

    /// Closes alert `id`.
    async fn close(&self, key: &str, id: &str) {
        let changed = self
            .client()
            .await
            .update_alert_status(portcullis_policy_store::testing::authed(
                key,
                pt::UpdateAlertStatusRequest {
                    id: id.into(),
                    status: pt::AlertStatus::Closed as i32,
                    note: String::new(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(changed.changed);
    }
}

/// (source, action, pod name or cluster id) of each event, sorted.
fn described(events: &[pt::SecurityEvent]) -> Vec<(i32, String, String)> {
    let mut d: Vec<(i32, String, String)> = events
        .iter()
        .map(|e| {
            let place = e
                .pod
                .as_ref()
                .filter(|p| !p.name.is_empty())
                .map_or_else(|| e.cluster_id.clone(), |p| p.name.clone());
            (e.source, e.action.clone(), place)
        })
        .collect();
    d.sort();
    d
}

async fn log_only_admission_then_detection_fires_only_on_its_story(mode: Mode) {
    let stack = Stack::start(mode).await;
    let t = stack.tenant.clone();
    let c = t.cluster_id.clone();
    let bare = |name| ("Pod", "prod", name);
    // Outside the window: admitted with a violation 25 h ago (first, so it is correlated),
    // a detection now.
    stack
        .publish_envelope(&admission(
            &t,
            &c,
            "a-stale",
            25 * 3600,
            pc::Action::Log,
            bare("stale"),
            "",
            "",
        ))
        .await;
    stack.wait_stored(&t.admin_key, 1).await;
    for (id, action, name) in [
        // A clean admission.
        ("a-clean", pc::Action::None, "clean"),
        // The detection comes before the admission.
        ("a-late", pc::Action::Log, "late"),
        // The story's workload; a detection on another workload must not complete it.
        ("a-web", pc::Action::Log, "web"),
    ] {
        let seconds_ago = if name == "late" { 60 } else { 120 };
        stack
            .publish_envelope(&admission(&t, &c, id, seconds_ago, action, bare(name), "", ""))
            .await;
    }
    stack.wait_stored(&t.admin_key, 4).await;
    let near_misses = [
        falco_at("Read sensitive file untrusted", "prod", "stale", 10, 0),
        falco_at("Read sensitive file untrusted", "prod", "clean", 10, 0),
        falco_at("Read sensitive file untrusted", "prod", "late", 90, 0),
        falco_at("Read sensitive file untrusted", "prod", "other", 10, 0),
    ];
    assert_eq!(stack.ingest(&t.connector_key, &near_misses).await.accepted, 4);
    assert!(stack.alerts(&t.admin_key).await.is_empty());
    assert!(stack.risk(&t.admin_key).await.is_empty());
    // The story: `web` admitted with a log-only violation 2 minutes ago, a detection now.
    let story = falco_at("Read sensitive file untrusted", "prod", "web", 5, 0);
    stack.ingest(&t.connector_key, std::slice::from_ref(&story)).await;
    let alerts = stack.alerts(&t.admin_key).await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].rule, "admitted-with-violations-then-runtime");
    assert_eq!(alerts[0].severity, pt::EventSeverity::High as i32);
    let detail = stack.alert_detail(&t.admin_key, &alerts[0].id).await;
    let mut expected = vec![
        (pt::EventSource::Runtime as i32, "warning".to_owned(), "web".to_owned()),
        (pt::EventSource::Admission as i32, "log".to_owned(), "web".to_owned()),
    ];
    expected.sort();
    assert_eq!(described(&detail.events), expected);
    assert!(detail.events.iter().any(|e| e.id == "a-web"));
    assert_eq!(stack.risk(&t.admin_key).await, [(c, 5)]);
}

async fn an_image_refused_in_three_clusters_fires_and_two_do_not(mode: Mode) {
    let stack = Stack::start(mode).await;
    let t = stack.tenant.clone();
    let c1 = t.cluster_id.clone();
    let (c2, _) = stack.add_cluster(&t, "c2", "guard").await;
    let (c3, _) = stack.add_cluster(&t, "c3", "guard").await;
    let web = ("Deployment", "prod", "web");
    let digest = |n: u8| format!("sha256:{}", format!("{n:x}").repeat(64));
    let block =
        |id: &str, cluster: &str, secs: i64, d: &str| admission(&t, cluster, id, secs, pc::Action::Block, web, d, "");
    let mut events = vec![
        // Near misses: image 1 in two clusters only; image 2 three times in one cluster;
        // images 3, 4, 5 once each in three clusters.
        block("n1", &c1, 100, &digest(1)),
        signature_failed(&t, &c2, "n2", 90, &digest(1)),
        block("n3", &c1, 80, &digest(2)),
        block("n4", &c1, 70, &digest(2)),
        signature_failed(&t, &c1, "n5", 60, &digest(2)),
        block("n6", &c1, 50, &digest(3)),
        block("n7", &c2, 50, &digest(4)),
        signature_failed(&t, &c3, "n8", 50, &digest(5)),
        // Admitted (with a violation) in a third cluster: not a refusal.
        admission(&t, &c3, "n9", 40, pc::Action::Log, web, &digest(1), ""),
    ];
    for e in &events {
        stack.publish_envelope(e).await;
    }
    stack.wait_stored(&t.admin_key, events.len() as u64).await;
    assert!(stack.alerts(&t.admin_key).await.is_empty());
    // The story: image 6 blocked in c1, failing verification in c2, blocked in c3.
    let story = [
        block("s1", &c1, 30, &digest(6)),
        signature_failed(&t, &c2, "s2", 20, &digest(6)),
        block("s3", &c3, 10, &digest(6)),
    ];
    for e in &story {
        stack.publish_envelope(e).await;
    }
    events.extend(story);
    stack.wait_stored(&t.admin_key, events.len() as u64).await;
    let alerts = eventually(WAIT, async || {
        let alerts = stack.alerts(&t.admin_key).await;
        if alerts.is_empty() { Err(()) } else { Ok(alerts) }
    })
    .await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let alert = &alerts[0];
    assert_eq!(alert.rule, "image-refused-in-many-clusters");
    assert_eq!(alert.severity, pt::EventSeverity::Critical as i32);
    assert_eq!(alert.digest, digest(6));
    let mut clusters = alert.cluster_ids.clone();
    clusters.sort();
    let mut expected = vec![c1.clone(), c2.clone(), c3.clone()];
    expected.sort();
    assert_eq!(clusters, expected);
    let detail = stack.alert_detail(&t.admin_key, &alert.id).await;
    let mut ids: Vec<&str> = detail.events.iter().map(|e| e.id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["s1", "s2", "s3"]);
    // Critical: 10 in each cluster it spans.
    let mut risk = vec![(c1, 10), (c2, 10), (c3, 10)];
    risk.sort();
    assert_eq!(stack.risk(&t.admin_key).await, risk);
}

async fn an_isolated_pod_that_keeps_detecting_fires_and_near_misses_do_not(mode: Mode) {
    let stack = Stack::start(mode).await;
    let t = stack.tenant.clone();
    use pcont::{CommandState as S, CommandType as K};
    // `iso-1` isolated (ordered, not yet acked) and then two detections only; `iso-2` isolated and
    // done, with three detections before the isolation; `iso-3` restored, not
    // isolated; `free` never isolated.
    let commands = [
        mitigation(&t, "m1", 200, K::Isolate, S::Pending, ("prod", "iso-1")),
        mitigation(&t, "m2", 200, K::Isolate, S::Done, ("prod", "iso-2")),
        mitigation(&t, "m3", 200, K::Restore, S::Done, ("prod", "iso-3")),
        // The story: `story` isolated (acknowledged), then three detections.
        mitigation(&t, "m4", 200, K::Isolate, S::Done, ("prod", "story")),
    ];
    for c in &commands {
        stack.publish_envelope(c).await;
    }
    stack.wait_stored(&t.admin_key, 4).await;
    let rule = "Read sensitive file untrusted";
    let mut near = Vec::new();
    for n in 0..2 {
        near.push(falco_at(rule, "prod", "iso-1", 100 - i64::from(n), n));
    }
    for n in 0..3 {
        near.push(falco_at(rule, "prod", "iso-2", 250 - i64::from(n), n));
        near.push(falco_at(rule, "prod", "iso-3", 100 - i64::from(n), n));
        near.push(falco_at(rule, "prod", "free", 100 - i64::from(n), n));
        // Same pod name, another namespace.
        near.push(falco_at(rule, "dev", "story", 100 - i64::from(n), n));
    }
    assert_eq!(stack.ingest(&t.connector_key, &near).await.accepted, 14);
    assert!(stack.alerts(&t.admin_key).await.is_empty());
    let story: Vec<String> = (0..3)
        .map(|n| falco_at(rule, "prod", "story", 50 - i64::from(n), n))
        .collect();
    stack.ingest(&t.connector_key, &story[..2]).await;
    assert!(
        stack.alerts(&t.admin_key).await.is_empty(),
        "two detections are not enough"
    );
    stack.ingest(&t.connector_key, &story[2..]).await;
    let alerts = stack.alerts(&t.admin_key).await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].rule, "isolated-pod-keeps-detecting");
    assert_eq!(alerts[0].severity, pt::EventSeverity::Critical as i32);
    let pod = alerts[0].pod.clone().unwrap();
    assert_eq!((pod.namespace.as_str(), pod.name.as_str()), ("prod", "story"));
    assert_eq!(alerts[0].namespace, "prod");
    let detail = stack.alert_detail(&t.admin_key, &alerts[0].id).await;
    assert_eq!(detail.events.len(), 4);
    assert!(detail.events.iter().any(|e| e.id == "m4"));
    assert_eq!(
        detail
            .events
            .iter()
            .filter(|e| e.source == pt::EventSource::Runtime as i32
                && e.pod
                    .as_ref()
                    .is_some_and(|p| p.name == "story" && p.namespace == "prod"))
            .count(),
        3
    );
    assert_eq!(stack.risk(&t.admin_key).await, [(t.cluster_id.clone(), 10)]);
}

async fn an_exec_attach_burst_fires_and_fewer_or_slower_do_not(mode: Mode) {
    let stack = Stack::start(mode).await;
    let t = stack.tenant.clone();
    let shell = "Terminal shell in container";
    // Four in one namespace; five spread over 160 s in another (the window is 2 minutes).
    let mut near: Vec<String> = (0..4).map(|n| falco_at(shell, "few", "p", 30, n)).collect();
    near.extend((0..5).map(|n| falco_at(shell, "slow", "p", 200 - 40 * i64::from(n), n)));
    assert_eq!(stack.ingest(&t.connector_key, &near).await.accepted, 9);
    assert!(stack.alerts(&t.admin_key).await.is_empty());
    // The story in `burst`: an admitted `pods/exec`, then four shells within a minute.
    stack
        .publish_envelope(&admission(
            &t,
            &t.cluster_id,
            "x1",
            60,
            pc::Action::None,
            ("Pod", "burst", "p"),
            "",
            "exec",
        ))
        .await;
    stack.wait_stored(&t.admin_key, 10).await;
    assert!(stack.alerts(&t.admin_key).await.is_empty());
    let story: Vec<String> = (0..4)
        .map(|n| falco_at(shell, "burst", "p", 50 - 10 * i64::from(n), n))
        .collect();
    stack.ingest(&t.connector_key, &story).await;
    let alerts = stack.alerts(&t.admin_key).await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].rule, "exec-attach-burst");
    assert_eq!(alerts[0].severity, pt::EventSeverity::Medium as i32);
    assert_eq!(alerts[0].namespace, "burst");
    let detail = stack.alert_detail(&t.admin_key, &alerts[0].id).await;
    assert_eq!(detail.events.len(), 5);
    assert!(detail.events.iter().any(|e| e.id == "x1"));
    assert!(detail.events.iter().all(|e| e.namespace == "burst"));
    assert_eq!(stack.risk(&t.admin_key).await, [(t.cluster_id.clone(), 2)]);
}

async fn resent_and_redelivered_events_never_count_twice(mode: Mode) {
    let stack = Stack::start(mode).await;
    let t = stack.tenant.clone();
    let shell = "Terminal shell in container";
    let burst: Vec<String> = (0..4)
        .map(|n| falco_at(shell, "burst", "p", 40 - 5 * i64::from(n), n))
        .collect();
    let exec = admission(
        &t,
        &t.cluster_id,
        "x1",
        45,
        pc::Action::None,
        ("Pod", "burst", "p"),
        "",
        "exec",
    );
    stack.publish_envelope(&exec).await;
    stack.wait_stored(&t.admin_key, 1).await;
    stack.ingest(&t.connector_key, &burst).await;
    let alerts = stack.alerts(&t.admin_key).await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    stack.close(&t.admin_key, &alerts[0].id).await;
    // The sensor sends the burst again (it saw no answer) and the bus redelivers the exec
    // admission: the same five events, already counted; no second burst.
    stack.publish_envelope(&exec).await;
    let answer = stack.ingest(&t.connector_key, &burst).await;
    assert_eq!(answer.accepted, 4);
    // Four new shells: with the five old ones counted again they would make a burst.
    let more: Vec<String> = (4..8)
        .map(|n| falco_at(shell, "burst", "p", 30 - i64::from(n), n))
        .collect();
    stack.ingest(&t.connector_key, &more).await;
    // The redelivered admission is taken by now: a marker published after it is stored.
    let marker = admission(
        &t,
        &t.cluster_id,
        "marker",
        1,
        pc::Action::None,
        ("Pod", "other", "q"),
        "",
        "",
    );
    stack.publish_envelope(&marker).await;
    stack.wait_stored(&t.admin_key, 10).await;
    let alerts = stack.alerts(&t.admin_key).await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].status, pt::AlertStatus::Closed as i32);
    assert!(stack.risk(&t.admin_key).await.is_empty());
    // One more new shell completes a new burst of five.
    stack
        .ingest(&t.connector_key, &[falco_at(shell, "burst", "p", 20, 8)])
        .await;
    let alerts = stack.alerts(&t.admin_key).await;
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    assert_eq!(stack.risk(&t.admin_key).await, [(t.cluster_id.clone(), 2)]);
}

portcullis_test_kit::both! {
    embedded: portcullis_server::Mode::Embedded,
    distributed: portcullis_server::Mode::Distributed;
    log_only_admission_then_detection_fires_only_on_its_story,
    an_image_refused_in_three_clusters_fires_and_two_do_not,
    an_isolated_pod_that_keeps_detecting_fires_and_near_misses_do_not,
    an_exec_attach_burst_fires_and_fewer_or_slower_do_not,
    resent_and_redelivered_events_never_count_twice,
}
