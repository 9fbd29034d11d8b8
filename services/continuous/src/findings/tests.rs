#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use portcullis_engine::evaluate::{CompiledPolicy, EvalContext};
use portcullis_engine::scan::{
    Finding as ScanFinding, MemoryScanStore, ScanResult, ScanResults, ScanSummary, ScanType, ScanUnavailable, Severity,
};
use serde_json::json;
use time::macros::datetime;

use super::*;
use crate::preview::judge;

const VULNERABLE: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

/// Rules of every mitigation: privileged terminates, host namespaces and high
/// vulnerabilities isolate, `latest` tags are logged.
fn policy(tag_mitigation: &str) -> CompiledPolicy {
    let rule = |t: &str, k: &str, v: &str, m: &str| json!({"type": t, "mitigation": m, "statement": {"properties": [{"key": k, "value": v}]}});
    CompiledPolicy::from_text(
        &json!({"name": "continuous", "default": {"rules": [
            rule("containerSecurityContext", "privileged", "true", "terminate"),
            rule("podSecurityContext", "hostPID", "true", "isolate"),
            rule("podSecurityContext", "hostNetwork", "true", "isolate"),
            rule("tag", "equals", "latest", tag_mitigation),
            rule("vulnerabilities", "max-severity", "high", "isolate"),
        ]}})
        .to_string(),
    )
    .unwrap()
}

/// What a pod sets.
#[derive(Default, Clone, Copy)]
struct Spec<'a> {
    privileged: bool,
    host_pid: bool,
    host_network: bool,
    image: &'a str,
    owner: Option<&'a str>,
}

fn pod(uid: &str, spec: Spec<'_>) -> PodProjection {
    let mut container = json!({"name": "app", "image": if spec.image.is_empty() { "nginx:1.27" } else { spec.image }});
    if spec.privileged {
        container["securityContext"] = json!({"privileged": true});
    }
    let mut metadata = json!({"name": format!("web-{uid}"), "namespace": "shop", "uid": uid});
    if let Some(owner) = spec.owner {
        metadata["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d", "uid": owner, "controller": true}]);
    }
    let doc = json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
        "spec": {"hostPID": spec.host_pid, "hostNetwork": spec.host_network, "containers": [container]}});
    PodProjection::from_pod_json(doc.to_string().as_bytes()).unwrap()
}

fn vulnerable_store() -> MemoryScanStore {
    let mut store = MemoryScanStore::new();
    store.insert(&ScanResult {
        digest: VULNERABLE.to_owned(),
        scan_type: ScanType::Vulnerability,
        scanned_at: datetime!(2026-12-01 00:00 UTC),
        scanner: "trivy".to_owned(),
        findings: vec![ScanFinding {
            id: "CVE-2026-0001".to_owned(),
            severity: Severity::Critical,
            cvss_v3_vector: None,
            fixed_version: None,
        }],
    });
    store
}

/// A scan-result store that cannot answer.
struct Unreachable;

impl ScanResults for Unreachable {
    fn latest(&self, _: &str, _: ScanType) -> Result<Option<&ScanSummary>, ScanUnavailable> {
        Err(ScanUnavailable("store unreachable".to_owned()))
    }
}

const T0: OffsetDateTime = datetime!(2026-12-07 10:00 UTC);

fn at(minutes: i64, seconds: i64) -> OffsetDateTime {
    T0 + Duration::minutes(minutes) + Duration::seconds(seconds)
}

/// Judges `pod` with `policy` at `now` (scans from `scans`) and reconciles it with `previous`.
fn step(
    policy: &CompiledPolicy,
    scans: &dyn ScanResults,
    pod: &PodProjection,
    previous: PodState,
    owners: &mut Owners,
    now: OffsetDateTime,
) -> Reconciled {
    let mut ctx = EvalContext::offline(now);
    ctx.scans = scans;
    let decision = judge(policy, &ctx, pod);
    reconcile_pod("prod-eu", pod, previous, &decision, owners, now)
}

fn orders(r: &Reconciled) -> Vec<&'static str> {
    r.outcome.commands.iter().map(|c| c.order.as_str()).collect()
}

#[test]
fn a_violation_opens_a_finding_that_is_not_published_again_while_unchanged() {
    let (p, store, mut owners) = (policy("log"), MemoryScanStore::new(), Owners::new());
    let latest = pod(
        "u1",
        Spec {
            image: "nginx:latest",
            ..Spec::default()
        },
    );
    let first = step(&p, &store, &latest, PodState::default(), &mut owners, at(0, 0));
    assert_eq!(first.outcome.opened.len(), 1);
    let f = &first.outcome.opened[0];
    assert_eq!(f.rule.as_str(), "tag { equals:latest }");
    assert_eq!(
        (f.cluster.as_str(), f.uid.as_str(), f.pod.as_str()),
        ("prod-eu", "u1", "web-u1")
    );
    assert_eq!(
        (f.mitigation, f.first_seen, f.last_seen, f.resolved),
        (Mitigation::Log, at(0, 0), at(0, 0), None)
    );
    assert!(first.outcome.commands.is_empty(), "log orders nothing");

    let second = step(&p, &store, &latest, first.state.clone(), &mut owners, at(5, 0));
    assert!(
        second.outcome.opened.is_empty() && second.outcome.changed.is_empty() && second.outcome.resolved.is_empty()
    );
    assert_eq!(second.outcome.unchanged, 1);
    assert_eq!(second.state.open[0].first_seen, at(0, 0), "first seen kept");
    assert_eq!(second.state.open[0].last_seen, at(5, 0), "last seen moved");
}

#[test]
fn a_violation_that_clears_resolves_its_finding() {
    let (p, store, mut owners) = (policy("log"), MemoryScanStore::new(), Owners::new());
    let before = step(
        &p,
        &store,
        &pod(
            "u1",
            Spec {
                image: "nginx:latest",
                ..Spec::default()
            },
        ),
        PodState::default(),
        &mut owners,
        at(0, 0),
    );
    let after = step(
        &p,
        &store,
        &pod("u1", Spec::default()),
        before.state.clone(),
        &mut owners,
        at(1, 0),
    );
    assert_eq!(after.outcome.resolved.len(), 1);
    assert_eq!(after.outcome.resolved[0].resolved, Some(at(1, 0)));
    assert_eq!(after.outcome.resolved[0].first_seen, at(0, 0));
    assert!(after.state.open.is_empty());
    assert_eq!(after.state, PodState::default());
}

#[test]
fn isolation_carries_a_deny_all_network_policy_and_is_restored_when_the_violation_clears() {
    let (p, store, mut owners) = (policy("log"), MemoryScanStore::new(), Owners::new());
    let host_pid = pod(
        "u1",
        Spec {
            host_pid: true,
            ..Spec::default()
        },
    );
    let first = step(&p, &store, &host_pid, PodState::default(), &mut owners, at(0, 0));
    assert_eq!(orders(&first), ["isolate"]);
    let command = &first.outcome.commands[0];
    assert_eq!(
        command.pod,
        PodAddress {
            namespace: "shop".into(),
            name: "web-u1".into(),
            uid: "u1".to_owned()
        }
    );
    assert_eq!(
        command.rules,
        [RuleKey("podSecurityContext { hostPID:true }".to_owned())]
    );
    let Order::Isolate { network_policy } = &command.order else {
        panic!("{command:?}")
    };
    assert_eq!(network_policy["kind"], "NetworkPolicy");
    assert_eq!(network_policy["metadata"]["namespace"], "shop");
    assert_eq!(
        network_policy["spec"]["podSelector"]["matchLabels"][ISOLATION_LABEL],
        "true"
    );
    assert_eq!(network_policy["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert!(network_policy["spec"].get("ingress").is_none() && network_policy["spec"].get("egress").is_none());
    assert_eq!(first.state.isolation, Isolation::Isolated);

    let again = step(&p, &store, &host_pid, first.state.clone(), &mut owners, at(1, 0));
    assert!(again.outcome.commands.is_empty(), "isolation is ordered once");

    let fixed = step(
        &p,
        &store,
        &pod("u1", Spec::default()),
        again.state.clone(),
        &mut owners,
        at(2, 0),
    );
    assert_eq!(orders(&fixed), ["restore-isolation"]);
    assert_eq!(fixed.outcome.commands[0].pod.uid, "u1");
    assert_eq!(fixed.outcome.resolved.len(), 1);
    assert_eq!(fixed.state.isolation, Isolation::None);
}

#[test]
fn a_host_network_pod_is_reported_not_isolatable_once() {
    let (p, store, mut owners) = (policy("log"), MemoryScanStore::new(), Owners::new());
    let host_net = pod(
        "u1",
        Spec {
            host_network: true,
            ..Spec::default()
        },
    );
    let first = step(&p, &store, &host_net, PodState::default(), &mut owners, at(0, 0));
    assert_eq!(orders(&first), ["not-isolatable"]);
    assert!(
        !first.outcome.commands[0].order.is_sent(),
        "nothing goes to the connector"
    );
    assert_eq!(first.state.isolation, Isolation::NotIsolatable);
    let again = step(&p, &store, &host_net, first.state.clone(), &mut owners, at(1, 0));
    assert!(again.outcome.commands.is_empty());
}

#[test]
fn a_pod_to_terminate_is_terminated_once() {
    let (p, store, mut owners) = (policy("log"), MemoryScanStore::new(), Owners::new());
    let privileged = pod(
        "u1",
        Spec {
            privileged: true,
            host_pid: true,
            ..Spec::default()
        },
    );
    let first = step(&p, &store, &privileged, PodState::default(), &mut owners, at(0, 0));
    assert_eq!(orders(&first), ["terminate"], "terminate is stronger than isolate");
    assert_eq!(
        first.outcome.commands[0].rules,
        [RuleKey("containerSecurityContext { privileged:true }".to_owned())]
    );
    let again = step(&p, &store, &privileged, first.state.clone(), &mut owners, at(1, 0));
    assert!(
        again.outcome.commands.is_empty(),
        "still there (the connector is slow): not ordered twice"
    );
}

#[test]
fn terminate_backoff_doubles_from_one_minute_up_to_sixty() {
    let minutes: Vec<i64> = (1..=9).map(|n| terminate_backoff(n).whole_minutes()).collect();
    assert_eq!(minutes, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    assert_eq!(terminate_backoff(u32::MAX).whole_minutes(), 60);
}

#[test]
fn a_pod_its_owner_recreates_backs_off_and_opens_a_mitigation_ineffective_finding() {
    let (p, store, mut owners) = (policy("log"), MemoryScanStore::new(), Owners::new());
    let spec = Spec {
        privileged: true,
        owner: Some("rs-1"),
        ..Spec::default()
    };
    let first = step(&p, &store, &pod("a", spec), PodState::default(), &mut owners, at(0, 0));
    assert_eq!(orders(&first), ["terminate"]);
    assert!(first.outcome.opened.iter().all(|f| f.rule.0 != MITIGATION_INEFFECTIVE));

    // The ReplicaSet recreates it ten seconds later: held back until a minute after the first.
    let b = pod("b", spec);
    let held = step(&p, &store, &b, PodState::default(), &mut owners, at(0, 10));
    assert!(held.outcome.commands.is_empty(), "{:?}", held.outcome.commands);
    assert_eq!(held.outcome.retry_at, Some(at(1, 0)));
    let ineffective: Vec<_> = held
        .outcome
        .opened
        .iter()
        .filter(|f| f.rule.0 == MITIGATION_INEFFECTIVE)
        .collect();
    assert_eq!(ineffective.len(), 1);
    assert!(
        ineffective[0].message.contains("ReplicaSet \"web-5d\""),
        "{}",
        ineffective[0].message
    );

    let still = step(&p, &store, &b, held.state.clone(), &mut owners, at(0, 30));
    assert!(
        still.outcome.commands.is_empty() && still.outcome.opened.is_empty(),
        "the finding is not opened twice"
    );
    let due = step(&p, &store, &b, still.state.clone(), &mut owners, at(1, 0));
    assert_eq!(orders(&due), ["terminate"]);

    // The next one waits two minutes from then, the one after four.
    let c = step(&p, &store, &pod("c", spec), PodState::default(), &mut owners, at(1, 5));
    assert_eq!(c.outcome.retry_at, Some(at(3, 0)));
    assert_eq!(
        orders(&step(
            &p,
            &store,
            &pod("c", spec),
            c.state.clone(),
            &mut owners,
            at(3, 0)
        )),
        ["terminate"]
    );
    let d = step(&p, &store, &pod("d", spec), PodState::default(), &mut owners, at(3, 5));
    assert_eq!(d.outcome.retry_at, Some(at(7, 0)));
    assert_eq!(owners["rs-1"].terminations, 3);
}

#[test]
fn replicas_of_one_owner_found_together_are_terminated_together() {
    let (p, store) = (policy("log"), MemoryScanStore::new());
    let spec = Spec {
        privileged: true,
        owner: Some("rs-1"),
        ..Spec::default()
    };
    let pods = [pod("a", spec), pod("b", spec), pod("c", spec)];
    let mut cluster = ClusterFindings::default();
    let ctx = EvalContext {
        scans: &store,
        ..EvalContext::offline(at(0, 0))
    };
    let outcome = cluster.reconcile(
        "prod-eu",
        pods.iter().map(|p2| (p2, judge(&p, &ctx, p2))),
        &[],
        at(0, 0),
    );
    assert_eq!(
        outcome.commands.iter().filter(|c| c.order == Order::Terminate).count(),
        3
    );
    assert!(outcome.opened.iter().all(|f| f.rule.0 != MITIGATION_INEFFECTIVE));
    assert_eq!(cluster.owners["rs-1"].terminations, 1, "one round");
}

#[test]
fn an_owner_whose_pod_is_judged_clean_starts_its_backoff_again() {
    let (p, store, mut owners) = (policy("log"), MemoryScanStore::new(), Owners::new());
    let bad = Spec {
        privileged: true,
        owner: Some("rs-1"),
        ..Spec::default()
    };
    step(&p, &store, &pod("a", bad), PodState::default(), &mut owners, at(0, 0));
    assert!(owners.contains_key("rs-1"));
    step(
        &p,
        &store,
        &pod(
            "b",
            Spec {
                owner: Some("rs-1"),
                ..Spec::default()
            },
        ),
        PodState::default(),
        &mut owners,
        at(0, 10),
    );
    assert!(owners.is_empty());
    let next = step(&p, &store, &pod("c", bad), PodState::default(), &mut owners, at(0, 20));
    assert_eq!(orders(&next), ["terminate"], "no backoff left");
}

#[test]
fn a_stage_failure_keeps_the_pods_previous_state() {
    let (p, mut owners) = (policy("log"), Owners::new());
    let image = format!("registry.example.com/shop/web@{VULNERABLE}");
    let vulnerable = pod(
        "u1",
        Spec {
            image: &image,
            ..Spec::default()
        },
    );
    let first = step(
        &p,
        &vulnerable_store(),
        &vulnerable,
        PodState::default(),
        &mut owners,
        at(0, 0),
    );
    assert_eq!(orders(&first), ["isolate"]);
    assert_eq!(
        first.outcome.opened[0].rule.as_str(),
        "vulnerabilities { max-severity:high }"
    );

    // The scan store cannot answer, and the pod is now privileged too.
    let privileged = pod(
        "u1",
        Spec {
            image: &image,
            privileged: true,
            ..Spec::default()
        },
    );
    let failed = step(
        &p,
        &Unreachable,
        &privileged,
        first.state.clone(),
        &mut owners,
        at(1, 0),
    );
    assert!(
        failed.outcome.resolved.is_empty(),
        "no finding resolves because a lookup failed"
    );
    assert_eq!(failed.state.isolation, Isolation::Isolated, "isolation is not lifted");
    let rules: Vec<&str> = failed.state.open.iter().map(|f| f.rule.as_str()).collect();
    assert_eq!(
        rules,
        [
            "vulnerabilities { max-severity:high }",
            "containerSecurityContext { privileged:true }"
        ]
    );
    assert_eq!(
        failed.state.open[0].last_seen,
        at(0, 0),
        "not confirmed: last seen stays"
    );
    assert_eq!(failed.outcome.opened.len(), 1, "what was found for certain opens");
    assert_eq!(orders(&failed), ["terminate"]);

    // Without the stage failure and with the pod fixed, everything resolves and isolation goes.
    let clean = pod(
        "u1",
        Spec {
            image: "nginx:1.27",
            ..Spec::default()
        },
    );
    let after = step(
        &p,
        &vulnerable_store(),
        &clean,
        failed.state.clone(),
        &mut owners,
        at(2, 0),
    );
    assert_eq!(after.outcome.resolved.len(), 2);
    assert_eq!(orders(&after), ["restore-isolation"]);
}

#[test]
fn a_changed_mitigation_is_a_change_not_a_new_finding() {
    let (store, mut owners) = (MemoryScanStore::new(), Owners::new());
    let latest = pod(
        "u1",
        Spec {
            image: "nginx:latest",
            ..Spec::default()
        },
    );
    let first = step(
        &policy("log"),
        &store,
        &latest,
        PodState::default(),
        &mut owners,
        at(0, 0),
    );
    let stricter = step(
        &policy("isolate"),
        &store,
        &latest,
        first.state.clone(),
        &mut owners,
        at(1, 0),
    );
    assert!(stricter.outcome.opened.is_empty());
    assert_eq!(stricter.outcome.changed.len(), 1);
    assert_eq!(stricter.outcome.changed[0].mitigation, Mitigation::Isolate);
    assert_eq!(stricter.outcome.changed[0].first_seen, at(0, 0));
    assert_eq!(orders(&stricter), ["isolate"]);
}

#[test]
fn a_pod_gone_resolves_its_findings_and_pods_without_findings_hold_no_state() {
    let (p, store) = (policy("log"), MemoryScanStore::new());
    let pods = [
        pod(
            "a",
            Spec {
                image: "nginx:latest",
                ..Spec::default()
            },
        ),
        pod("b", Spec::default()),
    ];
    let mut cluster = ClusterFindings::default();
    let ctx = EvalContext {
        scans: &store,
        ..EvalContext::offline(at(0, 0))
    };
    let first = cluster.reconcile(
        "prod-eu",
        pods.iter().map(|p2| (p2, judge(&p, &ctx, p2))),
        &[],
        at(0, 0),
    );
    assert_eq!(first.opened.len(), 1);
    assert_eq!(cluster.pods.keys().collect::<Vec<_>>(), ["a"]);
    let gone = cluster.reconcile(
        "prod-eu",
        std::iter::empty(),
        &["a".to_owned(), "zz".to_owned()],
        at(1, 0),
    );
    assert_eq!(gone.resolved.len(), 1);
    assert_eq!(gone.resolved[0].resolved, Some(at(1, 0)));
    assert!(cluster.pods.is_empty());
}

#[test]
fn an_excluded_namespace_is_never_mitigated() {
    let (p, store) = (policy("log"), MemoryScanStore::new());
    let privileged = [pod(
        "a",
        Spec {
            privileged: true,
            ..Spec::default()
        },
    )];
    let excluded = ["shop".to_owned()];
    let ctx = EvalContext {
        scans: &store,
        excluded_namespaces: &excluded,
        ..EvalContext::offline(at(0, 0))
    };
    let mut cluster = ClusterFindings::default();
    let outcome = cluster.reconcile(
        "prod-eu",
        privileged.iter().map(|p2| (p2, judge(&p, &ctx, p2))),
        &[],
        at(0, 0),
    );
    assert_eq!(outcome, Outcome::default());
}

#[test]
fn the_next_expiry_is_the_soonest_still_ahead() {
    let now = at(0, 0);
    assert_eq!(next_expiry([at(10, 0), at(-5, 0), at(3, 0)], now), Some(at(3, 0)));
    assert_eq!(next_expiry([now, at(-1, 0)], now), None, "one expiring now has expired");
    assert_eq!(next_expiry([], now), None);
}

#[test]
fn a_rule_key_is_recognised_without_being_built_and_only_for_its_rule() {
    let (p, store) = (policy("log"), MemoryScanStore::new());
    let ctx = EvalContext {
        scans: &store,
        ..EvalContext::offline(at(0, 0))
    };
    let bad = pod(
        "u1",
        Spec {
            privileged: true,
            host_pid: true,
            image: "nginx:latest",
            ..Spec::default()
        },
    );
    let decision = judge(&p, &ctx, &bad);
    assert_eq!(decision.violations.len(), 3);
    for (i, v) in decision.violations.iter().enumerate() {
        let key = RuleKey::of(v);
        for (j, w) in decision.violations.iter().enumerate() {
            assert_eq!(key.is_of(w), i == j, "{key:?} and {}", w.rule_type);
        }
        let mut longer = key.0.clone();
        longer.insert_str(longer.len() - 2, ", x:y");
        assert!(!RuleKey(longer).is_of(v));
    }
}
