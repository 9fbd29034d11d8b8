//! A restart of the process keeps everything: policies with their history, rulesets,
//! attestors, clusters with assignment and settings, keys (and revocations), tenants, the
//! audit log.
//!
//! Every scenario runs against a fresh policy store, embedded and distributed (`both!`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use portcullis_bus::TopicFilter;
use portcullis_policy_store::testing::TestServer;
use portcullis_proto::common::v1 as pc;
use portcullis_proto::policystore::v1 as pb;
use tonic::Code;

use portcullis_integration_tests::store::{
    Api, attestor_doc, by_id, by_name, expect_code, is_policy_event, next_matching, policy_changed, policy_doc,
    policy_with_refs, ruleset_doc, subscribe,
};

/// A key without its last-used time (which using it may move).
fn key_facts(key: &pb::ApiKey) -> pb::ApiKey {
    pb::ApiKey {
        last_used_at: None,
        ..key.clone()
    }
}

struct Snapshot {
    policies: Vec<pb::Policy>,
    history: Vec<pb::PolicyRevisionInfo>,
    first_revision: pb::Policy,
    cluster: pb::Cluster,
    keys: Vec<pb::ApiKey>,
    audit: Vec<pb::AuditEntry>,
    rulesets: Vec<pb::Ruleset>,
    attestors: Vec<pb::Attestor>,
    tenants: Vec<pb::Tenant>,
    b_policies: Vec<pb::Policy>,
}

async fn snapshot(admin: &mut Api, operator: &mut Api, b: &mut Api) -> Snapshot {
    let req = admin.req(pb::ListRulesetsRequest::default());
    let rulesets = admin.rulesets.list_rulesets(req).await.unwrap().into_inner().rulesets;
    let req = admin.req(pb::ListAttestorsRequest::default());
    let attestors = admin
        .attestors
        .list_attestors(req)
        .await
        .unwrap()
        .into_inner()
        .attestors;
    let req = operator.req(pb::ListTenantsRequest::default());
    let tenants = operator.tenants.list_tenants(req).await.unwrap().into_inner().tenants;
    let mut policies = admin.list_policies().await.unwrap();
    for p in &mut policies {
        *p = admin.get_policy(by_id(&p.id)).await.unwrap();
    }
    Snapshot {
        policies,
        history: admin.history(by_name("kept")).await.unwrap(),
        first_revision: admin.policy_revision(by_name("kept"), 1).await.unwrap(),
        cluster: admin.get_cluster(by_name("kept-cluster")).await.unwrap(),
        keys: admin.list_keys(true).await.unwrap().iter().map(key_facts).collect(),
        audit: admin.audit().await.unwrap(),
        rulesets,
        attestors,
        tenants,
        b_policies: b.list_policies().await.unwrap(),
    }
}

pub async fn restart_keeps_everything(server: &mut TestServer) {
    let mut admin = Api::new(server, &server.admin_key).await;
    let mut operator = admin.with_key(&server.operator_key);
    let b_key = operator.create_tenant("tenant-kept").await.unwrap();
    let mut b = admin.with_key(&b_key);
    b.create_policy(&policy_doc("b.policy", "block")).await.unwrap();

    let (editor_key, editor_id) = admin.create_key(pc::Role::Editor, None).await.unwrap();
    let (viewer_key, _) = admin.create_key(pc::Role::Viewer, None).await.unwrap();
    let (revoked_key, revoked_id) = admin.create_key(pc::Role::Editor, None).await.unwrap();
    admin.revoke_key(&revoked_id).await.unwrap();
    admin.create_attestor(&attestor_doc("kept-att")).await.unwrap();
    let ruleset = admin.create_ruleset(&ruleset_doc("kept-rs", "isolate")).await.unwrap();
    let policy = admin.create_policy(&policy_doc("kept", "block")).await.unwrap();
    admin
        .with_key(&editor_key)
        .update_policy(
            by_name("kept"),
            &policy_with_refs("kept", Some("kept-att"), Some(&ruleset.id)),
            1,
        )
        .await
        .unwrap();
    let cluster = admin.register_cluster("kept-cluster", by_name("kept")).await.unwrap();
    let req = admin.req(pb::UpdateClusterSettingsRequest {
        cluster: by_name("kept-cluster"),
        settings: Some(pb::ClusterSettings {
            failure_mode: pc::FailureMode::FailClosed as i32,
            excluded_namespaces: vec!["kube-system".to_owned(), "infra".to_owned()],
            trusted_images: vec!["registry.example.com/platform/agent".to_owned()],
        }),
        update_mask: None,
        expected_generation: None,
    });
    admin.clusters.update_cluster_settings(req).await.unwrap();
    let mut connector = admin.with_key(&cluster.connector_key);
    let req = connector.req(pb::HeartbeatRequest {
        cluster: None,
        connector_version: "1.4.2".to_owned(),
        kubernetes_version: "v1.33.1".to_owned(),
    });
    connector.clusters.heartbeat(req).await.unwrap();

    let before = snapshot(&mut admin, &mut operator, &mut b).await;
    assert_eq!(before.history.len(), 2);
    assert_eq!(before.cluster.connector_version, "1.4.2");

    server.restart().await.unwrap();

    let mut admin = Api::new(server, &server.admin_key).await;
    let mut operator = admin.with_key(&server.operator_key);
    let mut b = admin.with_key(&b_key);
    let after = snapshot(&mut admin, &mut operator, &mut b).await;
    assert_eq!(after.policies, before.policies, "policies");
    assert_eq!(after.history, before.history, "history");
    assert_eq!(after.first_revision, before.first_revision, "old revisions");
    assert_eq!(
        after.cluster, before.cluster,
        "cluster, assignment, settings, last seen"
    );
    assert_eq!(after.keys, before.keys, "keys and revocations");
    assert_eq!(after.audit, before.audit, "audit log");
    assert_eq!(after.rulesets, before.rulesets, "rulesets");
    assert_eq!(after.attestors, before.attestors, "attestors");
    assert_eq!(after.tenants, before.tenants, "tenants");
    assert_eq!(after.b_policies, before.b_policies, "the other tenant's policies");
    let tenant_ids: Vec<&str> = after.tenants.iter().map(|t| t.id.as_str()).collect();
    assert!(
        tenant_ids.contains(&"default") && tenant_ids.contains(&"tenant-kept"),
        "{tenant_ids:?}"
    );
    let settings = after.cluster.settings.clone().unwrap();
    assert_eq!(settings.failure_mode, pc::FailureMode::FailClosed as i32);
    assert_eq!(settings.excluded_namespaces, ["kube-system", "infra"]);

    // The keys still work as before: the connector reads its effective policy, the viewer
    // reads, the revoked key stays revoked.
    let mut connector = admin.with_key(&cluster.connector_key);
    let effective = connector.effective(None).await.unwrap();
    let current = effective.policy.unwrap();
    assert_eq!((current.id.as_str(), current.revision), (policy.id.as_str(), 2));
    assert_eq!(admin.with_key(&viewer_key).list_policies().await.unwrap().len(), 1);
    let status = expect_code(
        admin.with_key(&revoked_key).list_policies().await,
        Code::Unauthenticated,
    );
    assert!(status.message().contains("revoked"), "{}", status.message());
    assert_eq!(admin.with_key(&editor_key).who_am_i().await.unwrap().key_id, editor_id);

    // Writing goes on from where it was, with its event.
    let mut events = subscribe(
        &server.bus,
        &TopicFilter::topics(["policy.changed"]).for_tenant("default"),
    )
    .await;
    let stale = admin
        .update_policy(by_name("kept"), &policy_doc("kept", "log"), 1)
        .await;
    expect_code(stale, Code::FailedPrecondition);
    let next = admin
        .update_policy(by_name("kept"), &policy_doc("kept", "log"), 2)
        .await
        .unwrap();
    assert_eq!(next.policy.unwrap().revision, 3);
    let (_, event) = next_matching(&mut events, |e| is_policy_event(e, &policy.id)).await;
    assert_eq!(policy_changed(&event).revision, 3);
    expect_code(
        admin.create_policy(&policy_doc("kept", "block")).await,
        Code::AlreadyExists,
    );
}

portcullis_test_kit::both! {
    embedded: &mut portcullis_integration_tests::store::embedded().await,
    distributed: &mut portcullis_integration_tests::store::distributed().await;
    restart_keeps_everything,
}
