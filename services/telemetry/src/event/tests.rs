#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::time::Duration;

use portcullis_proto::admission::v1 as pa;
use portcullis_proto::common::v1 as pc;
use portcullis_proto::continuous::v1 as pcont;
use portcullis_proto::events::v1 as pe;
use portcullis_proto::signature::v1 as ps;
use time::macros::datetime;

use super::*;

/// A runtime event of Deployment prod/web in cluster c1, for other modules' tests.
pub(crate) fn sample_event() -> SecurityEvent {
    SecurityEvent {
        id: "e1".into(),
        tenant_id: "t1".into(),
        cluster_id: "c1".into(),
        source: Source::Runtime,
        occurred_at: datetime!(2026-12-07 10:00:00 UTC),
        severity: Severity::High,
        rule: "Terminal shell in container".into(),
        summary: "A shell was spawned in a container with an attached terminal".into(),
        action: Action::Notice,
        namespace: "prod".into(),
        pod: "web-7c9f8d6b5-x2x4q".into(),
        pod_uid: "u1".into(),
        container: "app".into(),
        image: "registry.example/web:1.2".into(),
        digest: "sha256:aa".into(),
        subresource: "".into(),
        workload: Some(Workload::new("Deployment", "web")),
        labels: Some(vec![("app".into(), "web".into())]),
        mitigation: None,
        details_json: "{}".into(),
    }
}

const FALCO: &str = r#"{"output":"10:00:00.123456789: Notice A shell was spawned (user=root k8s.ns=prod k8s.pod=web-7c9f8d6b5-x2x4q)","priority":"Notice","rule":"Terminal shell in container","time":"2026-12-07T10:00:00.123456789Z","source":"syscall","output_fields":{"container.id":"abc","container.name":"app","container.image.repository":"registry.example/web","container.image.tag":"1.2","container.image.digest":"sha256:aa","k8s.ns.name":"prod","k8s.pod.name":"web-7c9f8d6b5-x2x4q","k8s.pod.uid":"u1","k8s.pod.labels":{"app":"web","pod-template-hash":"7c9f8d6b5"},"proc.pid":42,"user.name":null},"tags":["container","shell","mitre_execution","T1059"],"hostname":"node-1"}"#;

#[test]
fn falco_event_is_read_with_all_its_fields() {
    let e = SecurityEvent::from_falco_json("t1", "c1", FALCO.as_bytes()).unwrap();
    assert_eq!(e.source, Source::Runtime);
    assert_eq!(e.rule, "Terminal shell in container");
    assert_eq!(e.action, Action::Notice);
    assert_eq!(e.severity, Severity::Low);
    assert_eq!(e.occurred_at, datetime!(2026-12-07 10:00:00.123456789 UTC));
    assert_eq!(e.namespace, "prod");
    assert_eq!(e.pod, "web-7c9f8d6b5-x2x4q");
    assert_eq!(e.pod_uid, "u1");
    assert_eq!(e.container, "app");
    assert_eq!(e.image, "registry.example/web:1.2");
    assert_eq!(e.digest, "sha256:aa");
    assert_eq!(e.workload, Some(Workload::new("Deployment", "web")));
    let labels = e.labels.clone().unwrap();
    assert_eq!(crate::entity::label(&labels, "app"), Some("web"));
    assert!(e.summary.starts_with("10:00:00.123456789: Notice A shell"));
    assert_eq!(e.details_json, FALCO);
    assert_eq!(e.tenant_id, "t1");
    assert_eq!(e.cluster_id, "c1");
}

#[test]
fn falco_labels_as_text_are_read() {
    let raw = r#"{"rule":"r","priority":"Warning","time":"2026-12-07T10:00:00Z","output":"o","output_fields":{"k8s.ns.name":"prod","k8s.pod.name":"web-1","k8s.pod.labels":"[app:web, tier:fe, url:http://x]"}}"#;
    let e = SecurityEvent::from_falco_json("t", "c", raw.as_bytes()).unwrap();
    let l = e.labels.unwrap();
    assert_eq!(l.len(), 3);
    assert_eq!(crate::entity::label(&l, "app"), Some("web"));
    assert_eq!(crate::entity::label(&l, "tier"), Some("fe"));
    assert_eq!(crate::entity::label(&l, "url"), Some("http://x"));
    assert_eq!(e.severity, Severity::Medium);
    assert_eq!(e.workload, Some(Workload::new("Pod", "web-1")));
}

#[test]
fn falco_na_fields_are_absent() {
    let raw = r#"{"rule":"r","priority":"Error","time":"2026-12-07T10:00:00Z","output":"o","output_fields":{"k8s.ns.name":"<NA>","k8s.pod.name":"<NA>","k8s.pod.labels":"<NA>","container.image.repository":"<NA>","container.image.digest":null}}"#;
    let e = SecurityEvent::from_falco_json("t", "c", raw.as_bytes()).unwrap();
    assert_eq!(e.namespace, "");
    assert_eq!(e.pod, "");
    assert_eq!(e.labels, None);
    assert_eq!(e.workload, None);
    assert_eq!(e.image, "");
    assert_eq!(e.digest, "");
    assert_eq!(e.severity, Severity::High);
    assert_eq!(e.action, Action::Error);
}

#[test]
fn falco_owner_fields_give_the_workload() {
    let raw = r#"{"rule":"r","priority":"Info","time":"2026-12-07T10:00:00Z","output_fields":{"k8s.ns.name":"prod","k8s.pod.name":"db-0","k8smeta.statefulset.name":"db"}}"#;
    let e = SecurityEvent::from_falco_json("t", "c", raw.as_bytes()).unwrap();
    assert_eq!(e.workload, Some(Workload::new("StatefulSet", "db")));
    assert_eq!(e.action, Action::Informational);
    // No output: the summary is the rule.
    assert_eq!(e.summary, "r");
}

#[test]
fn falco_old_and_new_owner_fields_together_are_read() {
    let raw = r#"{"rule":"r","priority":"Info","time":"2026-12-07T10:00:00Z","output_fields":{"k8s.ns.name":"prod","k8s.pod.name":"web-7c9f8d6b5-x2x4q","k8s.rs.name":"web-7c9f8d6b5","k8smeta.rs.name":"web-7c9f8d6b5","k8s.pod.labels":{"pod-template-hash":"7c9f8d6b5"}}}"#;
    let e = SecurityEvent::from_falco_json("t", "c", raw.as_bytes()).unwrap();
    assert_eq!(e.workload, Some(Workload::new("Deployment", "web")));
}

#[test]
fn falco_odd_field_values_are_absent_not_fatal() {
    let raw = r#"{"rule":"r","priority":"Info","time":"2026-12-07T10:00:00Z","output_fields":{"k8s.ns.name":{"x":[1,2]},"k8s.pod.name":["a"],"container.name":7}}"#;
    let e = SecurityEvent::from_falco_json("t", "c", raw.as_bytes()).unwrap();
    assert_eq!(
        (e.namespace.as_str(), e.pod.as_str(), e.container.as_str()),
        ("", "", "")
    );
}

#[test]
fn falco_priority_maps_to_severity() {
    let cases = [
        ("Emergency", Severity::Critical),
        ("ALERT", Severity::Critical),
        ("Critical", Severity::Critical),
        ("Error", Severity::High),
        ("Warning", Severity::Medium),
        ("Notice", Severity::Low),
        ("Informational", Severity::Info),
        ("Info", Severity::Info),
        ("debug", Severity::Info),
    ];
    for (p, s) in cases {
        assert_eq!(Severity::from_falco_priority(p), Some(s), "{p}");
    }
    assert_eq!(Severity::from_falco_priority("loud"), None);
}

#[test]
fn falco_errors_name_the_field() {
    let read = |raw: &str| SecurityEvent::from_falco_json("t", "c", raw.as_bytes()).unwrap_err();
    assert_eq!(
        read(r#"{"priority":"Notice","time":"2026-12-07T10:00:00Z"}"#),
        EventError::Missing("rule")
    );
    assert_eq!(
        read(r#"{"rule":" ","priority":"Notice","time":"2026-12-07T10:00:00Z"}"#),
        EventError::Missing("rule")
    );
    assert_eq!(
        read(r#"{"rule":"r","time":"2026-12-07T10:00:00Z"}"#),
        EventError::Missing("priority")
    );
    assert_eq!(read(r#"{"rule":"r","priority":"Notice"}"#), EventError::Missing("time"));
    assert!(matches!(
        read(r#"{"rule":"r","priority":"Loud","time":"2026-12-07T10:00:00Z"}"#),
        EventError::Invalid { field: "priority", .. }
    ));
    assert!(matches!(
        read(r#"{"rule":"r","priority":"Notice","time":"yesterday"}"#),
        EventError::Invalid { field: "time", .. }
    ));
    assert!(matches!(read("not json"), EventError::Json(_)));
    assert!(matches!(
        read(r#"{"rule":5,"priority":"Notice","time":"2026-12-07T10:00:00Z"}"#),
        EventError::Json(_)
    ));
    let big = format!(
        r#"{{"rule":"r","priority":"Notice","time":"2026-12-07T10:00:00Z","output":"{}"}}"#,
        "x".repeat(MAX_RAW_EVENT_BYTES)
    );
    assert!(matches!(read(&big), EventError::TooLarge(_)));
}

#[test]
fn event_id_is_deterministic_per_cluster_and_content() {
    let a = SecurityEvent::from_falco_json("t", "c1", FALCO.as_bytes()).unwrap();
    let b = SecurityEvent::from_falco_json("t", "c1", FALCO.as_bytes()).unwrap();
    let c = SecurityEvent::from_falco_json("t", "c2", FALCO.as_bytes()).unwrap();
    assert_eq!(a.id, b.id);
    assert_ne!(a.id, c.id);
    let other = FALCO.replace("10:00:00.123456789Z", "10:00:01.123456789Z");
    let d = SecurityEvent::from_falco_json("t", "c1", other.as_bytes()).unwrap();
    assert_ne!(a.id, d.id);
    // A UUID, version 8, RFC variant.
    let id = a.id.as_str();
    assert_eq!(id.len(), 36);
    assert_eq!(id.as_bytes()[14], b'8');
    assert!(matches!(id.as_bytes()[19], b'8' | b'9' | b'a' | b'b'));
    assert_eq!(id.matches('-').count(), 4);
}

#[test]
fn time_check_refuses_too_old_and_future_events() {
    let now = datetime!(2026-12-07 10:00:00 UTC);
    let day = Duration::from_secs(86_400);
    assert_eq!(check_time(now, now, day), Ok(()));
    assert_eq!(check_time(now - time::Duration::DAY, now, day), Ok(()));
    assert!(matches!(
        check_time(now - time::Duration::DAY - time::Duration::SECOND, now, day),
        Err(TimeRefusal::TooOld {
            retention_secs: 86_400,
            ..
        })
    ));
    assert_eq!(check_time(now + time::Duration::minutes(5), now, day), Ok(()));
    assert!(matches!(
        check_time(now + time::Duration::minutes(5) + time::Duration::SECOND, now, day),
        Err(TimeRefusal::InFuture { .. })
    ));
}

#[test]
fn time_check_at_the_edges_of_time_does_not_overflow() {
    let max = time::PrimitiveDateTime::MAX.assume_utc();
    let min = time::PrimitiveDateTime::MIN.assume_utc();
    assert_eq!(check_time(max, max, Duration::from_secs(60)), Ok(()));
    assert!(check_time(min, max, Duration::from_secs(60)).is_err());
    assert_eq!(check_time(min, min, Duration::MAX), Ok(()));
    let early = SecurityEvent::from_falco_json(
        "t",
        "c",
        br#"{"rule":"r","priority":"Info","time":"0000-01-01T00:00:00Z"}"#,
    )
    .unwrap();
    assert!(
        check_time(
            early.occurred_at,
            datetime!(2026-12-07 10:00:00 UTC),
            Duration::from_secs(86_400)
        )
        .is_err()
    );
}

#[test]
fn names_round_trip() {
    for s in Source::ALL {
        assert_eq!(s.as_str().parse::<Source>(), Ok(s));
    }
    for s in Severity::ALL {
        assert_eq!(s.as_str().parse::<Severity>(), Ok(s));
    }
    for a in Action::ALL {
        assert_eq!(a.as_str().parse::<Action>(), Ok(a));
    }
    assert_eq!("Info".parse::<Action>(), Ok(Action::Informational));
    assert!("bogus".parse::<Action>().is_err());
    assert!(Severity::Critical > Severity::High && Severity::Low > Severity::Info);
}

fn ts(t: OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.unix_timestamp(),
        nanos: i32::try_from(t.nanosecond()).unwrap(),
    }
}

fn envelope(payload: pe::event_envelope::Payload) -> pe::EventEnvelope {
    pe::EventEnvelope {
        event_id: "9d1c7f6e-0000-4000-8000-000000000001".into(),
        tenant_id: "t1".into(),
        topic: String::new(),
        occurred_at: Some(ts(datetime!(2026-12-07 10:00:00 UTC))),
        trace: None,
        producer: "test/1".into(),
        payload: Some(payload),
    }
}

pub(crate) fn admission_payload(
    allowed: bool,
    violations: Vec<pc::Violation>,
    kind: &str,
    name: &str,
    subresource: &str,
) -> pe::event_envelope::Payload {
    let object = pc::WorkloadRef {
        kind: kind.into(),
        namespace: "prod".into(),
        name: name.into(),
        ..Default::default()
    };
    let summary = pe::AdmissionDecisionSummary {
        uid: "u".into(),
        cluster_id: "c1".into(),
        operation: if subresource.is_empty() {
            "CREATE".into()
        } else {
            "CONNECT".into()
        },
        subresource: subresource.into(),
        object: Some(object.clone()),
        owner: None,
        allowed,
        basis: pa::DecisionBasis::Evaluated as i32,
        policy_id: "p".into(),
        policy_revision: 1,
        decided_at: None,
    };
    let decision = (!violations.is_empty()).then(|| pa::Decision {
        allowed,
        violations,
        digests: vec![pc::ImageDigest {
            image: "web:1".into(),
            digest: "sha256:aa".into(),
            source: 0,
        }],
        object: Some(object),
        ..Default::default()
    });
    pe::event_envelope::Payload::AdmissionDecision(pe::AdmissionDecision {
        summary: Some(summary),
        decision,
        ..Default::default()
    })
}

pub(crate) fn violation(action: pc::Action) -> pc::Violation {
    pc::Violation {
        rule_type: "containerSecurityContext".into(),
        action: action as i32,
        message:
            "containerSecurityContext violates rule with properties { privileged:true } in container(s) \"app\" (log)."
                .into(),
        containers: vec!["app".into()],
        ..Default::default()
    }
}

#[test]
fn admission_decisions_become_allow_log_block() {
    let e = SecurityEvent::from_envelope(&envelope(admission_payload(true, vec![], "Deployment", "web", "")))
        .unwrap()
        .unwrap();
    assert_eq!(
        (e.source, e.action, e.severity),
        (Source::Admission, Action::Allow, Severity::Info)
    );
    assert_eq!(e.id, "9d1c7f6e-0000-4000-8000-000000000001");
    assert_eq!(e.workload, Some(Workload::new("Deployment", "web")));
    assert_eq!(e.cluster_id, "c1");
    assert_eq!(e.namespace, "prod");

    let e = SecurityEvent::from_envelope(&envelope(admission_payload(
        true,
        vec![violation(pc::Action::Log)],
        "Deployment",
        "web",
        "",
    )))
    .unwrap()
    .unwrap();
    assert_eq!((e.action, e.severity), (Action::Log, Severity::Medium));
    assert_eq!(e.rule, "containerSecurityContext");
    assert_eq!(e.digest, "sha256:aa");
    assert!(e.summary.contains("admitted with violations"), "{}", e.summary);
    let details: serde_json::Value = serde_json::from_str(&e.details_json).unwrap();
    assert_eq!(details["violations"][0]["action"], "log");

    let e = SecurityEvent::from_envelope(&envelope(admission_payload(
        false,
        vec![violation(pc::Action::Block)],
        "Pod",
        "web-1",
        "",
    )))
    .unwrap()
    .unwrap();
    assert_eq!((e.action, e.severity), (Action::Block, Severity::High));
    assert_eq!(e.pod, "web-1");
    assert_eq!(e.workload, Some(Workload::new("Pod", "web-1")));

    let e = SecurityEvent::from_envelope(&envelope(admission_payload(true, vec![], "Pod", "web-1", "exec")))
        .unwrap()
        .unwrap();
    assert_eq!(e.subresource, "exec");
    assert!(e.summary.starts_with("CONNECT Pod/exec prod/web-1"), "{}", e.summary);
}

#[test]
fn findings_become_open_and_resolve() {
    let finding = |transition: pe::FindingTransition, mitigation: pc::Mitigation| {
        pe::event_envelope::Payload::ContinuousFinding(pe::ContinuousFinding {
            finding: Some(pcont::Finding {
                id: "f1".into(),
                cluster_id: "c1".into(),
                pod: Some(pc::PodKey {
                    namespace: "prod".into(),
                    name: "web-7c9f8d6b5-x2x4q".into(),
                    uid: "u1".into(),
                }),
                owner: Some(pc::OwnerRef {
                    kind: "ReplicaSet".into(),
                    name: "web-7c9f8d6b5".into(),
                    ..Default::default()
                }),
                violation: Some(pc::Violation {
                    mitigation: mitigation as i32,
                    ..violation(pc::Action::Log)
                }),
                rule: "containerSecurityContext { privileged:true }".into(),
                ..Default::default()
            }),
            transition: transition as i32,
        })
    };
    let e = SecurityEvent::from_envelope(&envelope(finding(
        pe::FindingTransition::Opened,
        pc::Mitigation::Isolate,
    )))
    .unwrap()
    .unwrap();
    assert_eq!(
        (e.source, e.action, e.severity),
        (Source::Finding, Action::Open, Severity::High)
    );
    assert_eq!(e.mitigation, Some(Mitigation::Isolate));
    assert_eq!(e.workload, Some(Workload::new("Deployment", "web")));
    assert_eq!(e.container, "app");
    let e = SecurityEvent::from_envelope(&envelope(finding(pe::FindingTransition::Updated, pc::Mitigation::Log)))
        .unwrap()
        .unwrap();
    assert_eq!((e.action, e.severity), (Action::Open, Severity::Medium));
    let e = SecurityEvent::from_envelope(&envelope(finding(pe::FindingTransition::Resolved, pc::Mitigation::Log)))
        .unwrap()
        .unwrap();
    assert_eq!((e.action, e.severity), (Action::Resolve, Severity::Info));
}

pub(crate) fn command_payload(kind: pcont::CommandType, pod: &str) -> pe::event_envelope::Payload {
    pe::event_envelope::Payload::ContinuousMitigation(pe::ContinuousMitigation {
        command: Some(pcont::MitigationCommand {
            command_id: "m1".into(),
            cluster_id: "c1".into(),
            pod: Some(pc::PodKey {
                namespace: "prod".into(),
                name: pod.into(),
                uid: String::new(),
            }),
            r#type: kind as i32,
            state: pcont::CommandState::Done as i32,
            runtime_rule_ids: vec!["crypto-miner".into()],
            reason: "runtime rule crypto-miner".into(),
            ..Default::default()
        }),
    })
}

#[test]
fn mitigation_commands_become_mitigation_events() {
    let e = SecurityEvent::from_envelope(&envelope(command_payload(pcont::CommandType::Isolate, "web-1")))
        .unwrap()
        .unwrap();
    assert_eq!((e.source, e.action), (Source::Mitigation, Action::Isolate));
    assert_eq!(e.mitigation, Some(Mitigation::Isolate));
    assert_eq!(e.pod, "web-1");
    assert_eq!(e.rule, "crypto-miner");
    assert!(e.summary.contains("(done)"), "{}", e.summary);
    let e = SecurityEvent::from_envelope(&envelope(command_payload(pcont::CommandType::Restore, "web-1")))
        .unwrap()
        .unwrap();
    assert_eq!((e.action, e.mitigation), (Action::Restore, None));
    assert!(matches!(
        SecurityEvent::from_envelope(&envelope(command_payload(pcont::CommandType::Unspecified, "web-1"))),
        Err(BusEventError::Missing { field: "command", .. })
    ));
}

pub(crate) fn verdict_payload(cluster: &str, verdict: ps::Verdict) -> pe::event_envelope::Payload {
    pe::event_envelope::Payload::SignatureVerdict(pe::SignatureVerdict {
        cluster_id: cluster.into(),
        image: "registry.example/web:1".into(),
        digest: "sha256:bad".into(),
        verdicts: vec![
            ps::AttestorVerdict {
                attestor: "ok".into(),
                verdict: ps::Verdict::Verified as i32,
                ..Default::default()
            },
            ps::AttestorVerdict {
                attestor: "release".into(),
                verdict: verdict as i32,
                reason: "no signature matches the key".into(),
                ..Default::default()
            },
        ],
    })
}

#[test]
fn signature_verdicts_become_verified_failed_error() {
    let e = SecurityEvent::from_envelope(&envelope(verdict_payload("c1", ps::Verdict::NotVerified)))
        .unwrap()
        .unwrap();
    assert_eq!(
        (e.source, e.action, e.severity),
        (Source::Signature, Action::Failed, Severity::High)
    );
    assert_eq!(e.rule, "release");
    assert_eq!(e.digest, "sha256:bad");
    let e = SecurityEvent::from_envelope(&envelope(verdict_payload("c1", ps::Verdict::Error)))
        .unwrap()
        .unwrap();
    assert_eq!((e.action, e.severity), (Action::Error, Severity::Medium));
    let e = SecurityEvent::from_envelope(&envelope(verdict_payload("c1", ps::Verdict::Verified)))
        .unwrap()
        .unwrap();
    assert_eq!((e.action, e.severity), (Action::Verified, Severity::Info));
}

#[test]
fn other_topics_are_skipped_and_bad_envelopes_refused() {
    let env = envelope(pe::event_envelope::Payload::PolicyChanged(pe::PolicyChanged::default()));
    assert_eq!(SecurityEvent::from_envelope(&env), Ok(None));
    let mut env = envelope(verdict_payload("c1", ps::Verdict::Verified));
    env.occurred_at = None;
    assert!(matches!(
        SecurityEvent::from_envelope(&env),
        Err(BusEventError::Missing {
            field: "occurred_at",
            ..
        })
    ));
    let mut env = envelope(verdict_payload("c1", ps::Verdict::Verified));
    env.event_id.clear();
    assert!(matches!(
        SecurityEvent::from_envelope(&env),
        Err(BusEventError::Missing { field: "event_id", .. })
    ));
}
