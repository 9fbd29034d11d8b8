//! The continuous scanning service end to end, each scenario embedded (SQLite, in-process
//! bus) and distributed (PostgreSQL, nats-server): a policy store, two continuous replicas,
//! a connector's inventory and command streams.
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

use portcullis_continuous::ContinuousOptions;
use portcullis_continuous::findings::ISOLATION_LABEL;
use portcullis_integration_tests::store::{Api, by_id};
use portcullis_policy_store::testing::authed;
use portcullis_proto::common::v1 as pc;
use portcullis_proto::continuous::v1 as pv;
use portcullis_server::Mode;
use portcullis_test_kit::{eventually, until};
use stack::*;
use tonic::Code;

const WAIT: Duration = Duration::from_secs(20);

fn rule_of(f: &pv::Finding) -> (&str, &str) {
    (f.pod.as_ref().unwrap().name.as_str(), f.rule.as_str())
}

async fn commands_in(stack: &Stack, key: &str, state: pv::CommandState) -> Vec<pv::MitigationCommand> {
    let mut client = stack.client(0).await;
    client
        .list_commands(authed(
            key,
            pv::ListCommandsRequest {
                state: state as i32,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .commands
}

async fn violating_pods_open_findings_and_order_the_right_commands(mode: Mode) {
    let stack = Stack::start(mode).await;
    let t = stack.tenant.clone();
    let mut sync = Sync::open(&mut stack.client(0).await, &t.connector_key).await;
    let acks = sync
        .send_all(snapshot(&[
            pod("priv", "u-priv", true, false),
            pod("hostnet", "u-hostnet", false, true),
            pod("fine", "u-fine", false, false),
        ]))
        .await;
    assert_eq!(acks.iter().map(|a| a.sequence).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(acks.iter().all(|a| !a.resync && a.errors.is_empty()), "{acks:?}");
    assert_eq!(acks[1].pods_upserted, 3);

    // Judged when the sync was answered; listed on the other replica.
    let mut findings = open_findings(&mut stack.client(1).await, &t.admin_key).await;
    findings.sort_by(|a, b| rule_of(a).cmp(&rule_of(b)));
    let rules: Vec<(&str, &str)> = findings.iter().map(rule_of).collect();
    assert_eq!(
        rules,
        [
            ("hostnet", "podSecurityContext { hostNetwork:true }"),
            ("priv", "containerSecurityContext { privileged:true }"),
        ]
    );
    assert!(
        findings
            .iter()
            .all(|f| f.cluster_id == t.cluster_id && f.state == pv::FindingState::Open as i32)
    );

    // The privileged pod is isolated; the host-network pod cannot be, and is reported.
    let mut commands = Commands::open(&mut stack.client(0).await, &t.connector_key).await;
    let isolate = commands.next().await;
    assert_eq!(isolate.r#type, pv::CommandType::Isolate as i32);
    let target = isolate.pod.clone().unwrap();
    assert_eq!(
        (target.namespace.as_str(), target.name.as_str(), target.uid.as_str()),
        ("web", "priv", "u-priv")
    );
    assert_eq!(isolate.isolation_label, ISOLATION_LABEL);
    let network_policy: serde_json::Value = serde_json::from_str(&isolate.network_policy_json).unwrap();
    assert_eq!(network_policy["kind"], "NetworkPolicy");
    assert_eq!(network_policy["metadata"]["namespace"], "web");
    assert_eq!(
        network_policy["spec"]["podSelector"]["matchLabels"][ISOLATION_LABEL],
        "true"
    );
    assert_eq!(
        network_policy["spec"]["policyTypes"],
        serde_json::json!(["Ingress", "Egress"])
    );
    let reported = commands_in(&stack, &t.admin_key, pv::CommandState::Reported).await;
    assert_eq!(reported.len(), 1, "{reported:?}");
    assert_eq!(reported[0].r#type, pv::CommandType::NotIsolatable as i32);
    assert_eq!(reported[0].pod.as_ref().unwrap().name, "hostnet");
    let pending = commands_in(&stack, &t.admin_key, pv::CommandState::Pending).await;
    assert_eq!(pending.len(), 1, "only the isolation is sent: {pending:?}");
}

async fn fixing_a_pod_resolves_its_finding_and_restores_isolation(mode: Mode) {
    let stack = Stack::start(mode).await;
    let t = stack.tenant.clone();
    let mut sync = Sync::open(&mut stack.client(0).await, &t.connector_key).await;
    sync.send_all(snapshot(&[pod("priv", "u-priv", true, false)])).await;
    let mut commands = Commands::open(&mut stack.client(1).await, &t.connector_key).await;
    let isolate = commands.next().await;
    assert_eq!(isolate.r#type, pv::CommandType::Isolate as i32);
    commands.ack(&isolate.command_id).await;

    // The delta fixing the pod.
    let ack = sync
        .send(update(4, upserts(&[pod("priv", "u-priv", false, false)])))
        .await;
    assert!(!ack.resync && ack.errors.is_empty(), "{ack:?}");
    assert_eq!(ack.pods_upserted, 1);
    let mut client = stack.client(1).await;
    assert!(open_findings(&mut client, &t.admin_key).await.is_empty());
    let all = all_findings(&mut client, &t.admin_key).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].state, pv::FindingState::Resolved as i32);
    assert!(all[0].resolved_at.is_some());

    let restore = commands.next().await;
    assert_eq!(restore.r#type, pv::CommandType::Restore as i32);
    assert_eq!(restore.pod.unwrap().uid, "u-priv");
    assert_eq!(restore.isolation_label, ISOLATION_LABEL);
}

async fn a_policy_change_re_evaluates_the_cluster(mode: Mode) {
    let stack = Stack::start(mode).await;
    let t = stack.tenant.clone();
    let mut sync = Sync::open(&mut stack.client(0).await, &t.connector_key).await;
    sync.send_all(snapshot(&[pod("priv", "u-priv", true, false)])).await;
    let mut client = stack.client(1).await;
    assert_eq!(open_findings(&mut client, &t.admin_key).await.len(), 1);

    // Privileged containers no longer part of continuous scanning: the finding resolves.
    let mut admin = Api::new(&stack.store, &t.admin_key).await;
    admin
        .update_policy(by_id(&t.policy_id), &policy("guard", "none"), 1)
        .await
        .unwrap();
    eventually(WAIT, async || {
        let open = open_findings(&mut client, &t.admin_key).await;
        if open.is_empty() { Ok(()) } else { Err(open) }
    })
    .await;

    // And back: the finding opens again, with the new policy revision.
    admin
        .update_policy(by_id(&t.policy_id), &policy("guard", "terminate"), 2)
        .await
        .unwrap();
    let reopened = eventually(WAIT, async || {
        let open = open_findings(&mut client, &t.admin_key).await;
        match open.first() {
            Some(f) if f.policy_revision == 3 => Ok(f.clone()),
            _ => Err(open),
        }
    })
    .await;
    assert_eq!(reopened.violation.unwrap().mitigation, pc::Mitigation::Terminate as i32);
    assert_eq!(reopened.policy_id, t.policy_id);
}

async fn a_reconnecting_connector_receives_what_it_has_not_acked(mode: Mode) {
    let stack = Stack::start(mode).await;
    let t = stack.tenant.clone();
    let mut sync = Sync::open(&mut stack.client(0).await, &t.connector_key).await;
    sync.send_all(snapshot(&[pod("a", "u-a", true, false), pod("b", "u-b", true, false)]))
        .await;
    let mut first = Commands::open(&mut stack.client(0).await, &t.connector_key).await;
    let (one, two) = (first.next().await, first.next().await);
    assert_ne!(one.command_id, two.command_id);
    first.ack(&one.command_id).await;
    until(WAIT, "the ack is recorded", async || {
        commands_in(&stack, &t.admin_key, pv::CommandState::Done).await.len() == 1
    })
    .await;
    drop(first);

    // On the other replica: only the command not acked, once.
    let mut again = Commands::open(&mut stack.client(1).await, &t.connector_key).await;
    let resent = again.next().await;
    assert_eq!(resent.command_id, two.command_id);
    assert_eq!(again.next_within(Duration::from_secs(1)).await, None);
    let pending = commands_in(&stack, &t.admin_key, pv::CommandState::Pending).await;
    assert_eq!(
        pending.iter().map(|c| c.command_id.as_str()).collect::<Vec<_>>(),
        [two.command_id.as_str()]
    );
    // A repeated ack changes nothing.
    again.ack(&two.command_id).await;
    again.ack(&two.command_id).await;
    until(WAIT, "both acks recorded", async || {
        commands_in(&stack, &t.admin_key, pv::CommandState::Done).await.len() == 2
    })
    .await;
}

async fn a_command_reaches_the_connector_whichever_replica_made_it(mode: Mode) {
    // No polling to speak of: only the notification between replicas can deliver in time.
    let stack = Stack::start_with(
        mode,
        ContinuousOptions {
            command_poll: Duration::from_secs(3600),
            ..ContinuousOptions::default()
        },
    )
    .await;
    let t = stack.tenant.clone();
    let mut commands = Commands::open(&mut stack.client(0).await, &t.connector_key).await;
    // Made by re-evaluation on replica 1.
    let mut sync = Sync::open(&mut stack.client(1).await, &t.connector_key).await;
    sync.send_all(snapshot(&[pod("priv", "u-priv", true, false)])).await;
    let isolate = commands.next().await;
    assert_eq!(isolate.r#type, pv::CommandType::Isolate as i32);
    // Made by hand on replica 1.
    let issued = stack
        .client(1)
        .await
        .issue_command(authed(
            &t.admin_key,
            pv::IssueCommandRequest {
                cluster: by_id(&t.cluster_id),
                pod: Some(pc::PodKey {
                    namespace: "web".into(),
                    name: "priv".into(),
                    uid: String::new(),
                }),
                r#type: pv::CommandType::Restore as i32,
                reason: "cleared by the on-call".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .command
        .unwrap();
    assert_eq!(issued.origin, pv::CommandOrigin::Manual as i32);
    assert_eq!(
        issued.pod.as_ref().unwrap().uid,
        "u-priv",
        "the uid comes from the inventory"
    );
    let restore = commands.next().await;
    assert_eq!(restore.command_id, issued.command_id);
}

async fn deltas_with_a_gap_force_a_new_snapshot(mode: Mode) {
    let stack = Stack::start(mode).await;
    let t = stack.tenant.clone();
    let mut sync = Sync::open(&mut stack.client(0).await, &t.connector_key).await;
    // A delta before any snapshot (a new stream, or the service restarted).
    let ack = sync
        .send(update(1, upserts(&[pod("early", "u-early", true, false)])))
        .await;
    assert!(ack.resync, "{ack:?}");
    sync.send_all(vec![
        update(2, start()),
        update(3, upserts(&[pod("a", "u-a", false, false)])),
        update(4, end()),
    ])
    .await;
    // Message 5 is lost.
    let ack = sync
        .send(update(6, upserts(&[pod("late", "u-late", true, false)])))
        .await;
    assert!(ack.resync, "{ack:?}");
    assert_eq!(ack.sequence, 6);
    assert!(ack.resync_reason.contains('5'), "{}", ack.resync_reason);
    // Deltas stay refused until a snapshot starts.
    let ack = sync
        .send(update(7, upserts(&[pod("later", "u-later", true, false)])))
        .await;
    assert!(ack.resync);
    let mut client = stack.client(1).await;
    assert!(
        open_findings(&mut client, &t.admin_key).await.is_empty(),
        "nothing of a refused delta is judged"
    );
    let missing = client
        .get_pod(authed(
            &t.admin_key,
            pv::GetPodRequest {
                cluster: by_id(&t.cluster_id),
                namespace: "web".into(),
                name: "late".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    // The new snapshot applies.
    let acks = sync
        .send_all(vec![
            update(8, start()),
            update(9, upserts(&[pod("late", "u-late", true, false)])),
            update(10, end()),
        ])
        .await;
    assert!(acks.iter().all(|a| !a.resync), "{acks:?}");
    assert_eq!(acks[2].pods_removed, 1, "the pod the new snapshot did not send is gone");
    let pod = client
        .get_pod(authed(
            &t.admin_key,
            pv::GetPodRequest {
                cluster: by_id(&t.cluster_id),
                namespace: "web".into(),
                name: "late".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pod.uid, "u-late");
    assert_eq!(pod.labels.get("app").map(String::as_str), Some("late"));
    assert_eq!(pod.findings.len(), 1);
    assert!(pod.isolated);
}

async fn one_tenant_never_sees_another_s_findings(mode: Mode) {
    let stack = Stack::start(mode).await;
    let a = stack.tenant.clone();
    let b = stack.other_tenant("beta").await;
    let mut sync = Sync::open(&mut stack.client(0).await, &b.connector_key).await;
    sync.send_all(snapshot(&[pod("priv", "u-b-priv", true, false)])).await;
    let mut client = stack.client(1).await;
    assert_eq!(open_findings(&mut client, &b.admin_key).await.len(), 1);
    assert!(open_findings(&mut client, &a.admin_key).await.is_empty());
    // Nor its pods, nor its commands.
    let hidden = client
        .get_pod(authed(
            &a.admin_key,
            pv::GetPodRequest {
                cluster: by_id(&b.cluster_id),
                namespace: "web".into(),
                name: "priv".into(),
            },
        ))
        .await
        .unwrap_err();
    assert!(matches!(hidden.code(), Code::NotFound), "{hidden:?}");
    assert!(
        commands_in(&stack, &a.admin_key, pv::CommandState::Pending)
            .await
            .is_empty()
    );
    // A's connector cannot sync into B's cluster.
    let mut intruder = Sync::open(&mut stack.client(0).await, &a.connector_key).await;
    intruder
        .tx_raw(pv::InventoryUpdate {
            cluster: by_id(&b.cluster_id),
            sequence: 1,
            update: Some(start()),
        })
        .await;
    let refused = intruder.error().await;
    assert_eq!(refused.code(), Code::PermissionDenied);
}

async fn a_new_scan_result_re_evaluates_the_pods_running_its_digest(mode: Mode) {
    const OTHER: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
    let stack = Stack::start(mode).await;
    let t = stack.tenant.clone();
    // An older scan without a high vulnerability, held by both replicas once each judged
    // the pod.
    upload_scan(&stack.store, &t.admin_key, DIGEST, "low").await;
    for (replica, revision) in [(0, "0"), (1, "1")] {
        let mut scanned = pod_running("scanned", "u-scanned", false, false, DIGEST);
        scanned["metadata"]["labels"]["rev"] = revision.into();
        let mut sync = Sync::open(&mut stack.client(replica).await, &t.connector_key).await;
        sync.send_all(snapshot(&[
            scanned,
            pod_running("other", "u-other", false, false, OTHER),
        ]))
        .await;
    }
    let mut client = stack.client(1).await;
    assert!(
        open_findings(&mut client, &t.admin_key).await.is_empty(),
        "nothing high yet"
    );
    upload_scan_at(&stack.store, &t.admin_key, DIGEST, "critical", "2026-02-01T00:00:00Z").await;
    let found = eventually(WAIT, async || {
        let open = open_findings(&mut client, &t.admin_key).await;
        if open.is_empty() { Err(open) } else { Ok(open) }
    })
    .await;
    let rules: Vec<(&str, &str)> = found.iter().map(rule_of).collect();
    assert_eq!(rules, [("scanned", "vulnerabilities { max-severity:high }")]);
    // Whichever replica judges the pod next knows the scan: a change of the pod synced to
    // each replica keeps the finding open.
    for (replica, revision) in [(0, "2"), (1, "3")] {
        let mut changed = pod_running("scanned", "u-scanned", false, false, DIGEST);
        changed["metadata"]["labels"]["rev"] = revision.into();
        let mut sync = Sync::open(&mut stack.client(replica).await, &t.connector_key).await;
        let acks = sync
            .send_all(vec![
                update(1, start()),
                update(
                    2,
                    upserts(&[changed, pod_running("other", "u-other", false, false, OTHER)]),
                ),
                update(3, end()),
            ])
            .await;
        assert_eq!(acks[1].pods_upserted, 1, "the scanned pod changed: {acks:?}");
        let open = open_findings(&mut client, &t.admin_key).await;
        assert_eq!(
            open.iter().map(|f| f.id.clone()).collect::<Vec<_>>(),
            [found[0].id.clone()],
            "replica {replica}"
        );
    }
}

/// The guard policy with privileged containers out of continuous scanning and `1.0` tags
/// logged.
fn draft() -> String {
    let mut doc: serde_json::Value = serde_json::from_str(&policy("guard", "none")).unwrap();
    doc["default"]["rules"].as_array_mut().unwrap().push(serde_json::json!(
        {"type": "tag", "action": "log", "mitigation": "log", "statement": {"properties": [{"key": "equals", "value": "1.0"}]}}
    ));
    doc.to_string()
}

fn changes(preview: &pv::PreviewPolicyResponse) -> Vec<(i32, String, String)> {
    let mut rows: Vec<(i32, String, String)> = preview
        .findings
        .iter()
        .map(|f| {
            let finding = f.finding.as_ref().unwrap();
            let (pod, rule) = rule_of(finding);
            (f.change, pod.to_owned(), rule.to_owned())
        })
        .collect();
    rows.sort();
    rows
}

async fn a_preview_shows_what_applying_the_draft_then_does(mode: Mode) {
    let stack = Stack::start(mode).await;
    let t = stack.tenant.clone();
    let mut admin = Api::new(&stack.store, &t.admin_key).await;
    // A second cluster of the policy, without an inventory: said, not silently left out.
    let empty = admin
        .register_cluster("c2", portcullis_integration_tests::store::by_name("guard"))
        .await
        .unwrap()
        .cluster
        .unwrap()
        .id;
    let mut sync = Sync::open(&mut stack.client(0).await, &t.connector_key).await;
    sync.send_all(snapshot(&[
        pod("priv", "u-priv", true, false),
        pod("hostnet", "u-hostnet", false, true),
    ]))
    .await;
    let mut client = stack.client(1).await;
    let before = open_findings(&mut client, &t.admin_key).await;
    let pending_before = commands_in(&stack, &t.admin_key, pv::CommandState::Pending).await;
    assert_eq!(before.len(), 2);

    let preview = client
        .preview_policy(authed(
            &t.admin_key,
            pv::PreviewPolicyRequest {
                document: draft(),
                clusters: Vec::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(preview.cluster_ids, std::slice::from_ref(&t.cluster_id));
    assert_eq!(preview.pods_evaluated, 2);
    assert_eq!(preview.skipped.len(), 1, "{preview:?}");
    assert_eq!(preview.skipped[0].cluster_id, empty);
    assert!(
        preview.skipped[0].reason.contains("no inventory"),
        "{}",
        preview.skipped[0].reason
    );
    let rows = changes(&preview);
    let new = pv::PreviewChange::New as i32;
    let resolved = pv::PreviewChange::Resolved as i32;
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(
        rows.iter()
            .any(|(c, p, r)| *c == resolved && p == "priv" && r.starts_with("containerSecurityContext"))
    );
    assert!(
        rows.iter()
            .any(|(c, p, r)| *c == new && p == "priv" && r.starts_with("tag {"))
    );
    assert!(
        rows.iter()
            .any(|(c, p, r)| *c == new && p == "hostnet" && r.starts_with("tag {"))
    );
    let ordered: Vec<(i32, &str)> = preview
        .commands
        .iter()
        .map(|c| (c.r#type, c.pod.as_ref().unwrap().name.as_str()))
        .collect();
    assert_eq!(ordered, [(pv::CommandType::Restore as i32, "priv")]);
    assert!(preview.commands.iter().all(|c| c.command_id.is_empty()));

    // Nothing stored, nothing ordered.
    assert_eq!(open_findings(&mut client, &t.admin_key).await.len(), before.len());
    assert_eq!(
        commands_in(&stack, &t.admin_key, pv::CommandState::Pending).await.len(),
        pending_before.len()
    );

    // Applying the draft finds what the preview showed.
    admin.update_policy(by_id(&t.policy_id), &draft(), 1).await.unwrap();
    let after = eventually(WAIT, async || {
        let open = open_findings(&mut client, &t.admin_key).await;
        if open.iter().any(|f| f.rule.starts_with("tag {")) {
            Ok(open)
        } else {
            Err(open)
        }
    })
    .await;
    let mut seen: Vec<(String, String)> = after
        .iter()
        .map(|f| {
            let (p, r) = rule_of(f);
            (p.to_owned(), r.to_owned())
        })
        .collect();
    seen.sort();
    let mut expected: Vec<(String, String)> = before
        .iter()
        .map(rule_of)
        .filter(|(p, r)| !(*p == "priv" && r.starts_with("containerSecurityContext")))
        .map(|(p, r)| (p.to_owned(), r.to_owned()))
        .chain(
            rows.iter()
                .filter(|(c, _, _)| *c == new)
                .map(|(_, p, r)| (p.clone(), r.clone())),
        )
        .collect();
    expected.sort();
    assert_eq!(seen, expected);

    // An invalid draft is refused with the field at fault.
    let refused = client
        .preview_policy(authed(
            &t.admin_key,
            pv::PreviewPolicyRequest {
                document: r#"{"name": "guard", "default": {"rules": [{"type": "nonsense"}]}}"#.into(),
                clusters: Vec::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().contains("document."), "{}", refused.message());
}

async fn a_runtime_mitigation_becomes_a_command_for_a_pod_not_in_the_inventory(mode: Mode) {
    use prost::Message as _;
    let stack = Stack::start(mode).await;
    let t = stack.tenant.clone();
    let mut commands = Commands::open(&mut stack.client(1).await, &t.connector_key).await;
    let envelope = ghost_mitigation("rt-1", &stack.store.tenant_id, &t.cluster_id, pc::Mitigation::Isolate);
    stack
        .store
        .bus
        .publish(portcullis_bus::Event::new(
            "rt-1",
            stack.store.tenant_id.clone(),
            "runtime.mitigation",
            envelope.encode_to_vec().into(),
        ))
        .await
        .unwrap();
    let isolate = commands.next().await;
    assert_eq!(isolate.r#type, pv::CommandType::Isolate as i32);
    assert_eq!(isolate.origin, pv::CommandOrigin::Runtime as i32);
    assert_eq!(isolate.pod.unwrap().name, "ghost");
    assert_eq!(isolate.runtime_rule_ids, ["Adding ssh keys to authorized_keys"]);
    assert!(!isolate.network_policy_json.is_empty());
}

async fn a_revoked_connector_key_is_refused_at_once(mode: Mode) {
    let stack = Stack::start(mode).await;
    let t = stack.tenant.clone();
    let mut client = stack.client(0).await;
    // The key is cached by the replica's authenticator now.
    let mut sync = Sync::open(&mut client, &t.connector_key).await;
    assert!(!sync.send(update(1, start())).await.resync);
    let mut admin = Api::new(&stack.store, &t.admin_key).await;
    admin.revoke_key(&t.connector_key_id).await.unwrap();
    // Well within the key cache's 30 s: the revocation event, not the expiry, refuses it.
    eventually(Duration::from_secs(10), async || {
        let (_tx, rx) = tokio::sync::mpsc::channel::<pv::InventoryUpdate>(1);
        match client
            .sync_inventory(authed(
                &t.connector_key,
                tokio_stream::wrappers::ReceiverStream::new(rx),
            ))
            .await
        {
            Err(status) if status.code() == Code::Unauthenticated => Ok(()),
            other => Err(format!("{:?}", other.map(|_| "accepted"))),
        }
    })
    .await;
}

async fn a_deleted_cluster_is_forgotten(mode: Mode) {
    use portcullis_proto::policystore::v1 as pb;
    let stack = Stack::start(mode).await;
    let t = stack.tenant.clone();
    let mut sync = Sync::open(&mut stack.client(0).await, &t.connector_key).await;
    sync.send_all(snapshot(&[pod("priv", "u-priv", true, false)])).await;
    assert_eq!(
        commands_in(&stack, &t.admin_key, pv::CommandState::Pending).await.len(),
        1
    );
    let admin = Api::new(&stack.store, &t.admin_key).await;
    let mut clusters = admin.clusters.clone();
    clusters
        .delete_cluster(admin.req(pb::DeleteClusterRequest {
            cluster: by_id(&t.cluster_id),
        }))
        .await
        .unwrap();
    let mut client = stack.client(1).await;
    // Its inventory and pending commands go; nothing is left to send.
    eventually(WAIT, async || {
        let pod = client
            .get_pod(authed(
                &t.admin_key,
                pv::GetPodRequest {
                    cluster: by_id(&t.cluster_id),
                    namespace: "web".into(),
                    name: "priv".into(),
                },
            ))
            .await;
        match pod {
            Err(status) if status.code() == Code::NotFound => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(
        commands_in(&stack, &t.admin_key, pv::CommandState::Pending)
            .await
            .is_empty()
    );
}

async fn a_restarted_service_loses_no_finding_and_sends_no_command_twice(mode: Mode) {
    let mut stack = Stack::start(mode).await;
    let t = stack.tenant.clone();
    let pods = [pod("a", "u-a", true, false), pod("b", "u-b", true, false)];
    let mut sync = Sync::open(&mut stack.client(0).await, &t.connector_key).await;
    sync.send_all(snapshot(&pods)).await;
    let mut commands = Commands::open(&mut stack.client(1).await, &t.connector_key).await;
    let (one, two) = (commands.next().await, commands.next().await);
    commands.ack(&one.command_id).await;
    until(WAIT, "the ack is recorded", async || {
        commands_in(&stack, &t.admin_key, pv::CommandState::Done).await.len() == 1
    })
    .await;
    let before = open_findings(&mut stack.client(0).await, &t.admin_key).await;
    drop((sync, commands));

    stack.restart().await;
    let mut client = stack.client(0).await;
    let mut after = open_findings(&mut client, &t.admin_key).await;
    let key = |f: &pv::Finding| (f.id.clone(), f.first_seen_at);
    let mut before_keys: Vec<_> = before.iter().map(key).collect();
    before_keys.sort_by(|a, b| a.0.cmp(&b.0));
    after.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(after.iter().map(key).collect::<Vec<_>>(), before_keys);
    // The connector reconnects and syncs again: the same pods order nothing new, and only
    // the command it had not acked comes back.
    let mut sync = Sync::open(&mut client, &t.connector_key).await;
    let first = sync.send(update(4, upserts(&pods))).await;
    assert!(first.resync, "a restarted service asks for a snapshot: {first:?}");
    sync.send_all(vec![update(5, start()), update(6, upserts(&pods)), update(7, end())])
        .await;
    let mut commands = Commands::open(&mut client, &t.connector_key).await;
    assert_eq!(commands.next().await.command_id, two.command_id);
    assert_eq!(commands.next_within(Duration::from_secs(1)).await, None);
    let pending = commands_in(&stack, &t.admin_key, pv::CommandState::Pending).await;
    assert_eq!(pending.len(), 1, "{pending:?}");
}

async fn an_expiring_exception_opens_its_findings_when_it_expires(mode: Mode) {
    let stack = Stack::start(mode).await;
    let t = stack.tenant.clone();
    // The sweep is an hour away: only the exception's own timer can judge again in time.
    let expires = time::OffsetDateTime::now_utc() + time::Duration::seconds(3);
    let mut doc: serde_json::Value = serde_json::from_str(&policy("guard", "isolate")).unwrap();
    doc["default"]["exceptions"] = serde_json::json!([{
        "type": "registry",
        "statement": {"properties": [{"key": "equals", "value": "registry.example.com"}]},
        "expiresAt": expires.format(&time::format_description::well_known::Rfc3339).unwrap(),
        "reason": "platform images, until the fix ships",
    }]);
    let mut admin = Api::new(&stack.store, &t.admin_key).await;
    admin
        .update_policy(by_id(&t.policy_id), &doc.to_string(), 1)
        .await
        .unwrap();
    let mut sync = Sync::open(&mut stack.client(0).await, &t.connector_key).await;
    sync.send_all(snapshot(&[pod("priv", "u-priv", true, false)])).await;
    let mut client = stack.client(1).await;
    if time::OffsetDateTime::now_utc() < expires {
        assert!(
            open_findings(&mut client, &t.admin_key).await.is_empty(),
            "the exception holds until it expires"
        );
    }
    let opened = eventually(WAIT, async || {
        let open = open_findings(&mut client, &t.admin_key).await;
        if open.is_empty() { Err(open) } else { Ok(open) }
    })
    .await;
    assert_eq!(
        rule_of(&opened[0]),
        ("priv", "containerSecurityContext { privileged:true }")
    );
}

async fn findings_are_listed_by_filter_and_by_page(mode: Mode) {
    let stack = Stack::start(mode).await;
    let t = stack.tenant.clone();
    let mut sync = Sync::open(&mut stack.client(0).await, &t.connector_key).await;
    sync.send_all(snapshot(&[
        pod("a", "u-a", true, false),
        pod("b", "u-b", true, false),
        pod("c", "u-c", false, true),
    ]))
    .await;
    let mut client = stack.client(1).await;
    let list = |request: pv::ListFindingsRequest| {
        let mut client = client.clone();
        let key = t.admin_key.clone();
        async move { client.list_findings(authed(&key, request)).await.unwrap().into_inner() }
    };
    let first = list(pv::ListFindingsRequest {
        page: Some(pc::PageRequest {
            page_size: 2,
            page_token: String::new(),
        }),
        ..Default::default()
    })
    .await;
    assert_eq!(first.findings.len(), 2);
    let token = first.page.unwrap().next_page_token;
    assert!(!token.is_empty());
    let second = list(pv::ListFindingsRequest {
        page: Some(pc::PageRequest {
            page_size: 2,
            page_token: token,
        }),
        ..Default::default()
    })
    .await;
    assert_eq!(second.findings.len(), 1);
    assert!(second.page.unwrap().next_page_token.is_empty());
    let mut ids: Vec<String> = first
        .findings
        .iter()
        .chain(&second.findings)
        .map(|f| f.id.clone())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "every finding once");

    let of_pod = list(pv::ListFindingsRequest {
        namespace: "web".into(),
        pod: "c".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(
        of_pod.findings.iter().map(rule_of).collect::<Vec<_>>(),
        [("c", "podSecurityContext { hostNetwork:true }")]
    );
    let of_type = list(pv::ListFindingsRequest {
        rule_type: "containerSecurityContext".into(),
        cluster: by_id(&t.cluster_id),
        ..Default::default()
    })
    .await;
    assert_eq!(of_type.findings.len(), 2);
    let bad = client
        .list_findings(authed(
            &t.admin_key,
            pv::ListFindingsRequest {
                page: Some(pc::PageRequest {
                    page_size: 2,
                    page_token: "not-a-token".into(),
                }),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
}

async fn the_sweep_judges_every_cluster_again(mode: Mode) {
    use portcullis_continuous::findings::PodState;
    use portcullis_continuous::store::{FindingsWrite, PolicyUsed};
    let stack = Stack::start_with(
        mode,
        ContinuousOptions {
            sweep_interval: Duration::from_secs(1),
            ..ContinuousOptions::default()
        },
    )
    .await;
    let t = stack.tenant.clone();
    let mut sync = Sync::open(&mut stack.client(0).await, &t.connector_key).await;
    sync.send_all(snapshot(&[pod("priv", "u-priv", true, false)])).await;
    let mut client = stack.client(1).await;
    let first = open_findings(&mut client, &t.admin_key).await;
    assert_eq!(first.len(), 1);
    // The stored state drifts from the inventory (as after a lost re-evaluation): the
    // finding is resolved behind the service's back; no event says anything changed.
    let tenant = stack.store.tenant_id.clone();
    let store = &stack.stores[0];
    let read = store.findings(&tenant, &t.cluster_id, None).await.unwrap();
    let state = read.findings.pods.get("u-priv").cloned().unwrap();
    let now = time::OffsetDateTime::now_utc();
    let resolved = state
        .open
        .iter()
        .cloned()
        .map(|mut f| {
            f.resolved = Some(now);
            f
        })
        .collect();
    store
        .save_findings(
            &tenant,
            &t.cluster_id,
            FindingsWrite {
                version: read.version,
                pods: vec![("u-priv".into(), PodState::default())],
                resolved,
                owners: read.findings.owners.clone(),
                commands: Vec::new(),
                policy: PolicyUsed {
                    id: t.policy_id.clone(),
                    revision: 1,
                },
            },
            now,
        )
        .await
        .unwrap();
    assert!(open_findings(&mut client, &t.admin_key).await.is_empty());
    // Only the sweep looks again: the finding opens anew.
    let again = eventually(WAIT, async || {
        let open = open_findings(&mut client, &t.admin_key).await;
        if open.is_empty() { Err(open) } else { Ok(open) }
    })
    .await;
    assert_eq!(
        rule_of(&again[0]),
        ("priv", "containerSecurityContext { privileged:true }")
    );
    assert_ne!(again[0].id, first[0].id, "a new finding, the old one stays resolved");
}

async fn a_redelivered_runtime_mitigation_makes_one_command(mode: Mode) {
    use portcullis_continuous::commands::runtime_command_id;
    let stack = Stack::start(mode).await;
    let t = stack.tenant.clone();
    let tenant = stack.store.tenant_id.clone();
    let envelope = ghost_mitigation("rt-dup", &tenant, &t.cluster_id, pc::Mitigation::Terminate);
    // Delivered three times, to both replicas (a redelivery goes to whichever replica).
    for replica in [0, 1, 0] {
        stack.replicas[replica]
            .triggers()
            .handle(&tenant, &envelope)
            .await
            .unwrap();
    }
    let pending = commands_in(&stack, &t.admin_key, pv::CommandState::Pending).await;
    let ghost: Vec<_> = pending
        .iter()
        .filter(|c| c.pod.as_ref().is_some_and(|p| p.name == "ghost"))
        .collect();
    assert_eq!(ghost.len(), 1, "{pending:?}");
    assert_eq!(ghost[0].command_id, runtime_command_id(&tenant, "rt-dup"));
    assert_eq!(ghost[0].r#type, pv::CommandType::Terminate as i32);
    // Another event for the same pod is another command.
    let mut other = envelope.clone();
    other.event_id = "rt-other".into();
    stack.replicas[1].triggers().handle(&tenant, &other).await.unwrap();
    let pending = commands_in(&stack, &t.admin_key, pv::CommandState::Pending).await;
    assert_eq!(
        pending
            .iter()
            .filter(|c| c.pod.as_ref().is_some_and(|p| p.name == "ghost"))
            .count(),
        2,
        "{pending:?}"
    );
}

async fn two_replicas_sweep_each_cluster_once_per_interval(mode: Mode) {
    use tokio_util::sync::CancellationToken;
    // The replicas' own sweeps skip their first tick and wait an hour: only the calls below
    // sweep.
    let interval = ContinuousOptions::default().sweep_interval;
    let stack = Stack::start(mode).await;
    let a = stack.tenant.clone();
    let b = stack.other_tenant("beta").await;
    for t in [&a, &b] {
        let mut sync = Sync::open(&mut stack.client(0).await, &t.connector_key).await;
        sync.send_all(snapshot(&[pod("priv", "u-priv", true, false)])).await;
        let mut client = stack.client(1).await;
        assert_eq!(open_findings(&mut client, &t.admin_key).await.len(), 1);
    }
    let clusters = stack.stores[0].clusters().await.unwrap();
    assert_eq!(clusters.len(), 2);
    let stop = CancellationToken::new();
    let (r0, r1) = (stack.replicas[0].triggers(), stack.replicas[1].triggers());
    let work = || {
        (
            r0.clusters_reevaluated() + r1.clusters_reevaluated(),
            r0.pods_judged() + r1.pods_judged(),
        )
    };
    let before = work();
    // Both replicas sweep at once: each cluster is judged by one of them.
    let (n0, n1) = tokio::join!(r0.sweep_once(interval, &stop), r1.sweep_once(interval, &stop));
    assert_eq!(n0 + n1, clusters.len());
    assert_eq!(r0.clusters_swept() + r1.clusters_swept(), 2);
    // What the replicas say they did (their drain summary) counts each cluster and pod once.
    let after = work();
    assert_eq!((after.0 - before.0, after.1 - before.1), (2, 2));
    // Within the same interval neither judges any again.
    assert_eq!(r1.sweep_once(interval, &stop).await, 0);
    assert_eq!(r0.sweep_once(interval, &stop).await, 0);
    assert_eq!(r0.clusters_swept() + r1.clusters_swept(), 2);
    // Half an interval later a cluster may be claimed again, once.
    let (tenant, cluster) = &clusters[0];
    let later = time::OffsetDateTime::now_utc() + interval / 2 + Duration::from_secs(1);
    let store = &stack.stores[1];
    assert!(store.claim_sweep(tenant, cluster, later, interval / 2).await.unwrap());
    assert!(
        !stack.stores[0]
            .claim_sweep(tenant, cluster, later, interval / 2)
            .await
            .unwrap()
    );
}

portcullis_test_kit::both! {
    embedded: portcullis_server::Mode::Embedded,
    distributed: portcullis_server::Mode::Distributed;
    violating_pods_open_findings_and_order_the_right_commands,
    fixing_a_pod_resolves_its_finding_and_restores_isolation,
    a_policy_change_re_evaluates_the_cluster,
    a_reconnecting_connector_receives_what_it_has_not_acked,
    a_command_reaches_the_connector_whichever_replica_made_it,
    deltas_with_a_gap_force_a_new_snapshot,
    one_tenant_never_sees_another_s_findings,
    a_new_scan_result_re_evaluates_the_pods_running_its_digest,
    a_preview_shows_what_applying_the_draft_then_does,
    a_runtime_mitigation_becomes_a_command_for_a_pod_not_in_the_inventory,
    a_revoked_connector_key_is_refused_at_once,
    a_deleted_cluster_is_forgotten,
    a_restarted_service_loses_no_finding_and_sends_no_command_twice,
    an_expiring_exception_opens_its_findings_when_it_expires,
    findings_are_listed_by_filter_and_by_page,
    the_sweep_judges_every_cluster_again,
    a_redelivered_runtime_mitigation_makes_one_command,
    two_replicas_sweep_each_cluster_once_per_interval,
}
