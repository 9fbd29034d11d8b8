//! Tenancy and access: tenant isolation, the viewer, the connector, revoked keys.
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
use portcullis_proto::events::v1 as pe;
use portcullis_proto::policystore::v1 as pb;
use tonic::Code;
use tonic::metadata::MetadataValue;

use portcullis_integration_tests::store::{
    Api, attestor_doc, by_id, by_name, expect_code, expect_invalid_field, next_matching, policy_doc, policy_with_refs,
    ruleset_doc, subscribe,
};

pub async fn tenant_cannot_touch_another_tenant(server: &mut TestServer) {
    // Tenant A (`default`) owns one of everything.
    let mut a = Api::new(server, &server.admin_key).await;
    let attestor = a.create_attestor(&attestor_doc("att-a")).await.unwrap();
    let ruleset = a.create_ruleset(&ruleset_doc("rs-a", "isolate")).await.unwrap();
    let policy = a
        .create_policy(&policy_with_refs("shared", Some("att-a"), Some(&ruleset.id)))
        .await
        .unwrap();
    let cluster = a.register_cluster("cluster-a", by_name("shared")).await.unwrap();
    let cluster_id = cluster.cluster.as_ref().unwrap().id.clone();
    let (viewer_a, viewer_a_id) = a.create_key(pc::Role::Viewer, None).await.unwrap();
    let a_key_ids: Vec<String> = a.list_keys(true).await.unwrap().into_iter().map(|k| k.id).collect();
    assert!(a_key_ids.len() >= 3, "admin, connector and viewer keys: {a_key_ids:?}");

    // Tenant B, made by the operator.
    let mut operator = Api::new(server, &server.operator_key).await;
    let b_key = operator.create_tenant("tenant-b").await.unwrap();
    let mut b = a.with_key(&b_key);
    assert_eq!(b.who_am_i().await.unwrap().tenant_id, "tenant-b");

    // Policies: not readable, not listed, not changeable.
    for r in [by_id(&policy.id), by_name("shared")] {
        expect_code(b.get_policy(r.clone()).await, Code::NotFound);
        expect_code(
            b.update_policy(r.clone(), &policy_doc("shared", "log"), 1).await,
            Code::NotFound,
        );
        expect_code(b.duplicate_policy(r.clone(), Some("stolen")).await, Code::NotFound);
        expect_code(b.delete_policy(r.clone(), None).await, Code::NotFound);
        expect_code(b.history(r.clone()).await, Code::NotFound);
        expect_code(b.policy_revision(r, 1).await, Code::NotFound);
    }
    assert!(b.list_policies().await.unwrap().is_empty());

    // Rulesets and attestors.
    for r in [by_id(&ruleset.id), by_name("rs-a")] {
        let req = b.req(pb::GetRulesetRequest { ruleset: r.clone() });
        expect_code(b.rulesets.get_ruleset(req).await, Code::NotFound);
        let req = b.req(pb::UpdateRulesetRequest {
            ruleset: r.clone(),
            document_json: ruleset_doc("rs-a", "log"),
            expected_revision: None,
        });
        expect_code(b.rulesets.update_ruleset(req).await, Code::NotFound);
        let req = b.req(pb::DeleteRulesetRequest { ruleset: r });
        expect_code(b.rulesets.delete_ruleset(req).await, Code::NotFound);
    }
    let req = b.req(pb::ListRulesetsRequest::default());
    assert!(
        b.rulesets
            .list_rulesets(req)
            .await
            .unwrap()
            .into_inner()
            .rulesets
            .is_empty()
    );
    for r in [by_id(&attestor.id), by_name("att-a")] {
        let req = b.req(pb::GetAttestorRequest { attestor: r.clone() });
        expect_code(b.attestors.get_attestor(req).await, Code::NotFound);
        let req = b.req(pb::UpdateAttestorRequest {
            attestor: r.clone(),
            document_json: attestor_doc("att-a"),
            expected_revision: None,
        });
        expect_code(b.attestors.update_attestor(req).await, Code::NotFound);
        let req = b.req(pb::DeleteAttestorRequest { attestor: r });
        expect_code(b.attestors.delete_attestor(req).await, Code::NotFound);
    }
    let req = b.req(pb::ListAttestorsRequest::default());
    assert!(
        b.attestors
            .list_attestors(req)
            .await
            .unwrap()
            .into_inner()
            .attestors
            .is_empty()
    );
    // ... nor referenced from B's policies.
    expect_invalid_field(
        b.create_policy(&policy_with_refs("b1", Some("att-a"), None)).await,
        "default.imageVerification[0].attestors.all[0]",
    );
    expect_invalid_field(
        b.create_policy(&policy_with_refs("b1", None, Some(&ruleset.id))).await,
        "runtime.rulesets[0].id",
    );

    // Clusters: not readable, listed, assignable, configurable, rotatable or deletable.
    for r in [by_id(&cluster_id), by_name("cluster-a")] {
        expect_code(b.get_cluster(r.clone()).await, Code::NotFound);
        expect_code(b.assign(r.clone(), None).await, Code::NotFound);
        expect_code(b.effective(r.clone()).await, Code::NotFound);
        let req = b.req(pb::UpdateClusterSettingsRequest {
            cluster: r.clone(),
            settings: Some(pb::ClusterSettings {
                failure_mode: pc::FailureMode::FailClosed as i32,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["failure_mode".to_owned()],
            }),
            expected_generation: None,
        });
        expect_code(b.clusters.update_cluster_settings(req).await, Code::NotFound);
        let req = b.req(pb::RotateConnectorKeyRequest {
            cluster: r.clone(),
            grace_period: Some(prost_types::Duration { seconds: 0, nanos: 0 }),
            expires_at: None,
        });
        expect_code(b.clusters.rotate_connector_key(req).await, Code::NotFound);
        let req = b.req(pb::DeleteClusterRequest { cluster: r });
        expect_code(b.clusters.delete_cluster(req).await, Code::NotFound);
    }
    assert!(b.list_clusters().await.unwrap().is_empty());
    // B cannot assign A's policy to its own cluster, at registration or later.
    expect_code(b.register_cluster("b-cluster", by_id(&policy.id)).await, Code::NotFound);
    b.register_cluster("b-cluster", None).await.unwrap();
    expect_code(b.assign(by_name("b-cluster"), by_id(&policy.id)).await, Code::NotFound);
    expect_code(b.assign(by_name("b-cluster"), by_name("shared")).await, Code::NotFound);

    // Keys: B lists only its own, cannot revoke A's or bind one to A's cluster.
    let b_keys = b.list_keys(true).await.unwrap();
    assert!(!b_keys.is_empty());
    for key in &b_keys {
        assert!(!a_key_ids.contains(&key.id), "B sees A's key {key:?}");
    }
    expect_code(b.revoke_key(&viewer_a_id).await, Code::NotFound);
    let req = b.req(pb::CreateApiKeyRequest {
        role: pc::Role::Connector as i32,
        cluster: by_id(&cluster_id),
        expires_at: None,
        description: String::new(),
    });
    expect_code(b.auth.create_api_key(req).await, Code::NotFound);
    assert_eq!(
        a.with_key(&viewer_a).who_am_i().await.unwrap().key_id,
        viewer_a_id,
        "A's viewer key still works"
    );

    // Audit: B's log has none of A's entries; A's has its own.
    let a_audit = a.audit().await.unwrap();
    assert!(a_audit.iter().any(|e| e.resource_id == policy.id), "{a_audit:?}");
    let b_audit = b.audit().await.unwrap();
    assert!(!b_audit.is_empty(), "B's own changes are audited");
    let a_resources = [&policy.id, &ruleset.id, &attestor.id, &cluster_id, &viewer_a_id];
    for entry in &b_audit {
        assert!(!a_resources.contains(&&entry.resource_id), "B sees A's entry {entry:?}");
        assert!(
            entry.actor_key_id.is_empty() || !a_key_ids.contains(&entry.actor_key_id),
            "B sees A's entry {entry:?}"
        );
    }
    for filtered in [
        pb::ListAuditEntriesRequest {
            resource_id: policy.id.clone(),
            ..Default::default()
        },
        pb::ListAuditEntriesRequest {
            actor_key_id: a_key_ids[0].clone(),
            ..Default::default()
        },
    ] {
        let req = b.req(filtered);
        assert!(
            b.audit
                .list_audit_entries(req)
                .await
                .unwrap()
                .into_inner()
                .entries
                .is_empty()
        );
    }

    // A key cannot reach the other tenant by naming it.
    let mut request = a.req(pb::ListPoliciesRequest::default());
    request
        .metadata_mut()
        .insert("x-portcullis-tenant", MetadataValue::from_static("tenant-b"));
    expect_code(a.policies.list_policies(request).await, Code::PermissionDenied);
    let req = b.req(pb::GetEffectivePolicyRequest {
        cluster: by_id(&cluster_id),
        tenant_id: "default".to_owned(),
    });
    expect_code(b.policies.get_effective_policy(req).await, Code::PermissionDenied);

    // Names are per tenant: B's "shared" is its own policy; A's is untouched.
    let mine = b.apply_policy(&policy_doc("shared", "log"), None).await.unwrap();
    assert!(mine.created);
    assert_ne!(mine.policy.unwrap().id, policy.id);
    let a_policy = a.get_policy(by_id(&policy.id)).await.unwrap();
    assert_eq!(a_policy.revision, 1);
    assert!(a_policy.document_json.contains("att-a"));
    assert_eq!(a.get_cluster(by_id(&cluster_id)).await.unwrap().policy_id, policy.id);
    assert_eq!(a.list_policies().await.unwrap().len(), 1);
    assert_eq!(a.list_clusters().await.unwrap().len(), 1);
}

pub async fn viewer_cannot_write(server: &mut TestServer) {
    let mut admin = Api::new(server, &server.admin_key).await;
    let policy = admin.create_policy(&policy_doc("seen", "block")).await.unwrap();
    admin.create_ruleset(&ruleset_doc("rs", "log")).await.unwrap();
    admin.create_attestor(&attestor_doc("att")).await.unwrap();
    let cluster = admin.register_cluster("seen-cluster", by_name("seen")).await.unwrap();
    let (viewer_key, viewer_id) = admin.create_key(pc::Role::Viewer, None).await.unwrap();
    let mut v = admin.with_key(&viewer_key);

    // Reads work.
    assert_eq!(v.get_policy(by_name("seen")).await.unwrap().id, policy.id);
    assert_eq!(v.list_policies().await.unwrap().len(), 1);
    assert_eq!(v.history(by_name("seen")).await.unwrap().len(), 1);
    assert_eq!(v.list_clusters().await.unwrap().len(), 1);
    assert_eq!(
        v.effective(by_name("seen-cluster")).await.unwrap().policy.unwrap().id,
        policy.id
    );

    // Every write is PermissionDenied.
    let denied = Code::PermissionDenied;
    let status = expect_code(v.create_policy(&policy_doc("mine", "block")).await, denied);
    assert!(
        status.message().contains("viewer"),
        "names the role: {}",
        status.message()
    );
    expect_code(v.list_keys(false).await, denied);
    expect_code(
        v.update_policy(by_name("seen"), &policy_doc("seen", "log"), 1).await,
        denied,
    );
    expect_code(v.apply_policy(&policy_doc("seen", "log"), None).await, denied);
    expect_code(v.apply_policy(&policy_doc("mine", "log"), None).await, denied);
    expect_code(v.duplicate_policy(by_name("seen"), None).await, denied);
    expect_code(v.delete_policy(by_name("seen"), None).await, denied);
    expect_code(v.create_ruleset(&ruleset_doc("rs2", "log")).await, denied);
    let req = v.req(pb::ApplyRulesetRequest {
        document_json: ruleset_doc("rs", "terminate"),
        expected_revision: None,
    });
    expect_code(v.rulesets.apply_ruleset(req).await, denied);
    let req = v.req(pb::DeleteRulesetRequest { ruleset: by_name("rs") });
    expect_code(v.rulesets.delete_ruleset(req).await, denied);
    expect_code(v.create_attestor(&attestor_doc("att2")).await, denied);
    let req = v.req(pb::DeleteAttestorRequest {
        attestor: by_name("att"),
    });
    expect_code(v.attestors.delete_attestor(req).await, denied);
    expect_code(v.register_cluster("mine", None).await, denied);
    expect_code(v.assign(by_name("seen-cluster"), None).await, denied);
    let req = v.req(pb::UpdateClusterSettingsRequest {
        cluster: by_name("seen-cluster"),
        settings: Some(pb::ClusterSettings::default()),
        update_mask: None,
        expected_generation: None,
    });
    expect_code(v.clusters.update_cluster_settings(req).await, denied);
    let req = v.req(pb::RotateConnectorKeyRequest {
        cluster: by_name("seen-cluster"),
        grace_period: None,
        expires_at: None,
    });
    expect_code(v.clusters.rotate_connector_key(req).await, denied);
    let req = v.req(pb::DeleteClusterRequest {
        cluster: by_name("seen-cluster"),
    });
    expect_code(v.clusters.delete_cluster(req).await, denied);
    expect_code(v.create_key(pc::Role::Admin, None).await, denied);
    expect_code(v.revoke_key(&viewer_id).await, denied);
    expect_code(v.revoke_key(&cluster.connector_key_id).await, denied);

    // Nothing changed.
    let after = admin.get_policy(by_name("seen")).await.unwrap();
    assert_eq!(after.revision, 1);
    assert_eq!(admin.list_policies().await.unwrap().len(), 1);
    let seen = admin.get_cluster(by_name("seen-cluster")).await.unwrap();
    assert_eq!(
        (seen.policy_id.as_str(), seen.generation),
        (policy.id.as_str(), cluster.cluster.unwrap().generation)
    );
    let req = admin.req(pb::ListRulesetsRequest::default());
    let rulesets = admin.rulesets.list_rulesets(req).await.unwrap().into_inner().rulesets;
    assert_eq!(rulesets.len(), 1);
    assert_eq!(rulesets[0].revision, 1);
    let keys = admin.list_keys(false).await.unwrap();
    assert!(keys.iter().any(|k| k.id == viewer_id));
    assert!(
        keys.iter().any(|k| k.id == cluster.connector_key_id),
        "connector key not revoked"
    );
    assert_eq!(keys.len(), 3, "admin, connector and viewer keys only: {keys:?}");

    // An editor writes policies but manages no keys.
    let (editor_key, _) = admin.create_key(pc::Role::Editor, None).await.unwrap();
    let mut editor = admin.with_key(&editor_key);
    editor.create_policy(&policy_doc("edited", "block")).await.unwrap();
    expect_code(editor.create_key(pc::Role::Admin, None).await, denied);
    // Rotating a connector key is key management too: it hands out the new secret.
    let req = editor.req(pb::RotateConnectorKeyRequest {
        cluster: by_name("seen-cluster"),
        grace_period: Some(prost_types::Duration { seconds: 0, nanos: 0 }),
        expires_at: None,
    });
    expect_code(editor.clusters.rotate_connector_key(req).await, denied);
    let keys = admin.list_keys(false).await.unwrap();
    assert!(
        keys.iter().any(|k| k.id == cluster.connector_key_id),
        "the connector key survives the editor's attempt"
    );
}

pub async fn connector_reads_only_its_own_effective_policy(server: &mut TestServer) {
    let mut admin = Api::new(server, &server.admin_key).await;
    let p1 = admin.create_policy(&policy_doc("p1", "block")).await.unwrap();
    let p2 = admin.create_policy(&policy_doc("p2", "log")).await.unwrap();
    let c1 = admin.register_cluster("c1", by_name("p1")).await.unwrap();
    let c2 = admin.register_cluster("c2", by_name("p2")).await.unwrap();
    let c1_id = c1.cluster.as_ref().unwrap().id.clone();
    let c2_id = c2.cluster.as_ref().unwrap().id.clone();
    let mut conn = admin.with_key(&c1.connector_key);

    // Its own cluster: implicitly, by name, by id.
    for cluster in [None, by_name("c1"), by_id(&c1_id)] {
        let effective = conn.effective(cluster).await.unwrap();
        assert_eq!(
            (effective.cluster_id.as_str(), effective.cluster_name.as_str()),
            (c1_id.as_str(), "c1")
        );
        let policy = effective.policy.unwrap();
        assert_eq!((policy.id.as_str(), policy.revision), (p1.id.as_str(), 1));
        assert!(effective.settings.is_some());
    }
    // Any other cluster, existing or not, is refused.
    let denied = Code::PermissionDenied;
    for cluster in [by_name("c2"), by_id(&c2_id), by_name("no-such-cluster")] {
        expect_code(conn.effective(cluster).await, denied);
    }
    let req = conn.req(pb::GetEffectivePolicyRequest {
        cluster: None,
        tenant_id: "tenant-x".to_owned(),
    });
    expect_code(conn.policies.get_effective_policy(req).await, denied);
    // Nothing else of the tenant is readable with it, and nothing writable.
    expect_code(conn.get_policy(by_id(&p1.id)).await, denied);
    expect_code(conn.get_policy(by_id(&p2.id)).await, denied);
    expect_code(conn.list_policies().await, denied);
    expect_code(conn.history(by_id(&p1.id)).await, denied);
    expect_code(conn.get_cluster(by_id(&c1_id)).await, denied);
    expect_code(conn.list_clusters().await, denied);
    let req = conn.req(pb::ListRulesetsRequest::default());
    expect_code(conn.rulesets.list_rulesets(req).await, denied);
    expect_code(conn.create_policy(&policy_doc("mine", "block")).await, denied);
    expect_code(conn.assign(by_id(&c1_id), by_id(&p2.id)).await, denied);
    expect_code(conn.list_keys(false).await, denied);

    // It follows its cluster: a new revision, then a new assignment.
    admin
        .update_policy(by_name("p1"), &policy_doc("p1", "log"), 1)
        .await
        .unwrap();
    let policy = conn.effective(None).await.unwrap().policy.unwrap();
    assert_eq!((policy.id.as_str(), policy.revision), (p1.id.as_str(), 2));
    admin.assign(by_name("c1"), by_name("p2")).await.unwrap();
    assert_eq!(conn.effective(None).await.unwrap().policy.unwrap().id, p2.id);
    admin.assign(by_name("c1"), None).await.unwrap();
    assert!(conn.effective(None).await.unwrap().policy.is_none());

    // A connector key made through CreateApiKey is bound the same way.
    let (c2_key, _) = admin.create_key(pc::Role::Connector, Some("c2")).await.unwrap();
    let mut conn2 = admin.with_key(&c2_key);
    assert_eq!(conn2.effective(None).await.unwrap().cluster_id, c2_id);
    expect_code(conn2.effective(by_id(&c1_id)).await, denied);
}

pub async fn revoked_key_stops_working(server: &mut TestServer) {
    let mut admin = Api::new(server, &server.admin_key).await;
    let mut revocations = subscribe(
        &server.bus,
        &TopicFilter::topics(["apikey.revoked"]).for_tenant("default"),
    )
    .await;
    // No credential, or a key nobody issued: Unauthenticated.
    let anonymous = tonic::Request::new(pb::ListPoliciesRequest::default());
    expect_code(admin.policies.list_policies(anonymous).await, Code::Unauthenticated);
    expect_code(
        admin.with_key("pck_nope_nope").list_policies().await,
        Code::Unauthenticated,
    );
    let (editor_key, editor_id) = admin.create_key(pc::Role::Editor, None).await.unwrap();
    let mut editor = admin.with_key(&editor_key);
    let who = editor.who_am_i().await.unwrap();
    assert_eq!((who.role, who.tenant_id.as_str()), (pc::Role::Editor as i32, "default"));
    editor.create_policy(&policy_doc("before", "block")).await.unwrap();
    assert_eq!(editor.list_policies().await.unwrap().len(), 1);

    let revoked = admin.revoke_key(&editor_id).await.unwrap();
    assert!(revoked.revoked_at.is_some());
    for status in [
        editor.list_policies().await.unwrap_err(),
        editor.create_policy(&policy_doc("after", "block")).await.unwrap_err(),
        editor.who_am_i().await.unwrap_err(),
    ] {
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        assert!(status.message().contains("revoked"), "{}", status.message());
    }
    expect_code(admin.get_policy(by_name("after")).await, Code::NotFound);
    let active = admin.list_keys(false).await.unwrap();
    assert!(!active.iter().any(|k| k.id == editor_id), "revoked keys are not active");
    let all = admin.list_keys(true).await.unwrap();
    assert!(all.iter().any(|k| k.id == editor_id && k.revoked_at.is_some()));
    let (_, event) = next_matching(&mut revocations, |_| true).await;
    match event.payload {
        Some(pe::event_envelope::Payload::ApiKeyRevoked(r)) => {
            assert_eq!(r.key_id, editor_id);
            assert_eq!(r.reason, pe::RevocationReason::Revoked as i32);
        }
        other => panic!("not apikey.revoked: {other:?}"),
    }

    // A connector key rotated with no grace period stops at once; the new one works.
    admin.create_policy(&policy_doc("edge", "block")).await.unwrap();
    let cluster = admin.register_cluster("edge", by_name("edge")).await.unwrap();
    let mut old = admin.with_key(&cluster.connector_key);
    old.effective(None).await.unwrap();
    let req = admin.req(pb::RotateConnectorKeyRequest {
        cluster: by_name("edge"),
        grace_period: Some(prost_types::Duration { seconds: 0, nanos: 0 }),
        expires_at: None,
    });
    let rotated = admin.clusters.rotate_connector_key(req).await.unwrap().into_inner();
    assert_eq!(
        rotated.previous_key_ids,
        std::slice::from_ref(&cluster.connector_key_id)
    );
    expect_code(old.effective(None).await, Code::Unauthenticated);
    let mut new = admin.with_key(&rotated.connector_key);
    assert_eq!(new.effective(None).await.unwrap().cluster_name, "edge");

    // The admin revoking its own key locks itself out too.
    let me = admin.who_am_i().await.unwrap().key_id;
    admin.revoke_key(&me).await.unwrap();
    expect_code(admin.list_policies().await, Code::Unauthenticated);
}

portcullis_test_kit::both! {
    embedded: &mut portcullis_integration_tests::store::embedded().await,
    distributed: &mut portcullis_integration_tests::store::distributed().await;
    tenant_cannot_touch_another_tenant,
    viewer_cannot_write,
    connector_reads_only_its_own_effective_policy,
    revoked_key_stops_working,
}
