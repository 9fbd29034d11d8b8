//! Finding 10: rotating a connector key is key management, admin-only like the rest of it.
//! An editor key (with a grace period of 0 it could cut a cluster off at once, and it would
//! receive the new secret) is refused and the cluster's key keeps working; the admin may
//! rotate; another tenant is served as before.

use portcullis_integration_tests::store::{Api, by_name, expect_code, policy_doc};
use portcullis_policy_store::testing::TestServer;
use portcullis_proto::common::v1 as pc;
use portcullis_proto::policystore::v1 as pb;
use tonic::Code;

fn rotate_now(api: &Api, cluster: &str) -> tonic::Request<pb::RotateConnectorKeyRequest> {
    api.req(pb::RotateConnectorKeyRequest {
        cluster: by_name(cluster),
        grace_period: Some(prost_types::Duration { seconds: 0, nanos: 0 }),
        expires_at: None,
    })
}

pub async fn editor_cannot_rotate_a_connector_key(server: &mut TestServer) {
    let mut admin = Api::new(server, &server.admin_key).await;
    admin.create_policy(&policy_doc("p", "block")).await.unwrap();
    let cluster = admin.register_cluster("c1", by_name("p")).await.unwrap();
    let (editor_key, _) = admin.create_key(pc::Role::Editor, None).await.unwrap();
    let mut editor = admin.with_key(&editor_key);

    // Another tenant with its own cluster.
    let mut operator = admin.with_key(&server.operator_key);
    let mut b = admin.with_key(&operator.create_tenant("tenant-b").await.unwrap());
    b.create_policy(&policy_doc("pb", "block")).await.unwrap();
    let b_cluster = b.register_cluster("b1", by_name("pb")).await.unwrap();

    // The editor is refused, and says why; no secret comes back.
    let status = expect_code(
        editor.clusters.rotate_connector_key(rotate_now(&editor, "c1")).await,
        Code::PermissionDenied,
    );
    assert!(
        status.message().contains("editor"),
        "names the role: {}",
        status.message()
    );

    // The cluster's key still works; no key was added or revoked.
    let mut connector = admin.with_key(&cluster.connector_key);
    assert_eq!(connector.effective(None).await.unwrap().cluster_name, "c1");
    let keys = admin.list_keys(false).await.unwrap();
    let connector_keys: Vec<&str> = keys
        .iter()
        .filter(|k| k.role == pc::Role::Connector as i32)
        .map(|k| k.id.as_str())
        .collect();
    assert_eq!(connector_keys, [cluster.connector_key_id.as_str()]);

    // The other tenant is served normally.
    let mut b_connector = b.with_key(&b_cluster.connector_key);
    assert_eq!(b_connector.effective(None).await.unwrap().cluster_name, "b1");

    // The admin may rotate: the old key stops at once, the new one works.
    let rotated = admin
        .clusters
        .rotate_connector_key(rotate_now(&admin, "c1"))
        .await
        .unwrap()
        .into_inner();
    expect_code(connector.effective(None).await, Code::Unauthenticated);
    let mut new = admin.with_key(&rotated.connector_key);
    assert_eq!(new.effective(None).await.unwrap().cluster_name, "c1");
    assert_eq!(b_connector.effective(None).await.unwrap().cluster_name, "b1");
    crate::report::row(
        "10",
        "an editor rotating a connector key with a grace period of 0",
        "PermissionDenied naming the role; no secret returned; the cluster's key still works",
        "another tenant's connector served as before",
    );
}

portcullis_test_kit::both! {
    embedded: &mut portcullis_integration_tests::store::embedded().await,
    distributed: &mut portcullis_integration_tests::store::distributed().await;
    editor_cannot_rotate_a_connector_key,
}
