//! Registry credentials through real gRPC, embedded and distributed: an admin sets them, the
//! service credential gets them decrypted, nobody else reads or writes them, and another key
//! ring cannot open them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::sync::Arc;

use portcullis_policy_store::testing::{TestOptions, TestServer};
use portcullis_proto::common::v1 as pc;
use portcullis_proto::policystore::v1 as pb;
use portcullis_proto::policystore::v1::auth_service_client::AuthServiceClient;
use portcullis_proto::policystore::v1::cluster_service_client::ClusterServiceClient;
use portcullis_proto::policystore::v1::tenant_service_client::TenantServiceClient;
use portcullis_server::Mode;
use portcullis_storage::credentials::{KEY_LEN, KeyRing};
use portcullis_storage::{ResourceRef, StoreError};
use tonic::transport::Channel;
use tonic::{Code, Status};

fn ring(byte: u8) -> Arc<KeyRing> {
    Arc::new(KeyRing::new([("k1".to_owned(), [byte; KEY_LEN])], "k1").unwrap())
}

fn by_id(id: &str) -> Option<pc::ResourceRef> {
    Some(pc::ResourceRef {
        r#ref: Some(pc::resource_ref::Ref::Id(id.to_owned())),
    })
}

#[track_caller]
fn assert_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code) {
    match result {
        Ok(v) => panic!("expected {code:?}, got Ok({v:?})"),
        Err(status) => assert_eq!(status.code(), code, "status: {status:?}"),
    }
}

fn cred(registry: &str, username: &str, password: &str) -> pb::RegistryCredential {
    pb::RegistryCredential {
        registry: registry.to_owned(),
        username: username.to_owned(),
        password: password.to_owned(),
    }
}

fn set(cluster: &str, credentials: Vec<pb::RegistryCredential>) -> pb::SetRegistryCredentialsRequest {
    pb::SetRegistryCredentialsRequest {
        cluster: by_id(cluster),
        credentials,
        ..Default::default()
    }
}

fn merge(
    cluster: &str,
    credentials: Vec<pb::RegistryCredential>,
    remove: &[&str],
) -> pb::SetRegistryCredentialsRequest {
    pb::SetRegistryCredentialsRequest {
        cluster: by_id(cluster),
        credentials,
        merge: true,
        remove_registries: remove.iter().map(|r| (*r).to_owned()).collect(),
    }
}

fn hosts_and_users(cluster: &pb::Cluster) -> Vec<(String, String)> {
    cluster
        .registry_credentials
        .iter()
        .map(|c| (c.registry.clone(), c.username.clone()))
        .collect()
}

fn get(tenant: &str, cluster: &str) -> pb::GetRegistryCredentialsRequest {
    pb::GetRegistryCredentialsRequest {
        tenant_id: tenant.to_owned(),
        cluster: by_id(cluster),
    }
}

async fn scenario(mode: Mode) {
    let mut options = TestOptions::new(mode);
    options.credential_keys = Some(ring(1));
    let server = TestServer::start(options).await.unwrap();
    let channel: Channel = server.channel().await.unwrap();
    let mut clusters = ClusterServiceClient::new(channel.clone());
    let mut tenants = TenantServiceClient::new(channel);
    let admin = &server.admin_key;
    let registered = clusters
        .register_cluster(server.request(
            admin,
            pb::RegisterClusterRequest {
                name: "c1".to_owned(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let cluster = registered.cluster.unwrap();
    let connector = registered.connector_key;

    // The admin sets; the answer lists registries, never secrets.
    let answer = clusters
        .set_registry_credentials(server.request(
            admin,
            set(
                &cluster.id,
                vec![
                    cred("registry.example:5000", "bot", "s3cret-pw"),
                    cred("ghcr.io", "me", "tok"),
                ],
            ),
        ))
        .await
        .unwrap()
        .into_inner();
    let listed = answer.cluster.unwrap();
    assert_eq!(listed.credential_registries, ["ghcr.io", "registry.example:5000"]);
    assert!(!format!("{listed:?}").contains("s3cret-pw"));

    // GetCluster lists the registries too.
    let shown = clusters
        .get_cluster(server.request(
            admin,
            pb::GetClusterRequest {
                cluster: by_id(&cluster.id),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .cluster
        .unwrap();
    assert_eq!(shown.credential_registries, ["ghcr.io", "registry.example:5000"]);

    // The service credential gets them decrypted.
    let got = clusters
        .get_registry_credentials(server.service_request(&server.tenant_id, get(&server.tenant_id, &cluster.id)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        got.credentials,
        [
            cred("ghcr.io", "me", "tok"),
            cred("registry.example:5000", "bot", "s3cret-pw")
        ]
    );

    // A tenant key cannot get them, admin or connector.
    for key in [admin.as_str(), connector.as_str()] {
        assert_code(
            clusters
                .get_registry_credentials(server.request(key, get(&server.tenant_id, &cluster.id)))
                .await,
            Code::PermissionDenied,
        );
    }
    // An editor, a viewer and a connector cannot set them, nor can an editor get them.
    let mut auth = AuthServiceClient::new(server.channel().await.unwrap());
    let mut keys = vec![connector.clone()];
    for role in [pc::Role::Editor, pc::Role::Viewer] {
        let created = auth
            .create_api_key(server.request(
                admin,
                pb::CreateApiKeyRequest {
                    role: role as i32,
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        keys.push(created.secret);
    }
    for key in &keys {
        assert_code(
            clusters
                .set_registry_credentials(server.request(key, set(&cluster.id, vec![cred("a.io", "u", "p")])))
                .await,
            Code::PermissionDenied,
        );
        assert_code(
            clusters
                .get_registry_credentials(server.request(key, get(&server.tenant_id, &cluster.id)))
                .await,
            Code::PermissionDenied,
        );
    }
    // Bad entries are refused whole.
    assert_code(
        clusters
            .set_registry_credentials(server.request(
                admin,
                set(
                    &cluster.id,
                    vec![cred("https://a.io/x", "u", "p"), cred("b.io", "u", "")],
                ),
            ))
            .await,
        Code::InvalidArgument,
    );

    // Another tenant sees nothing: not its cluster, neither by its admin nor for it by the
    // service.
    let b = tenants
        .create_tenant(server.request(
            &server.operator_key,
            pb::CreateTenantRequest {
                name: "B".to_owned(),
                id: "tenant-b".to_owned(),
                admin_key_expires_at: None,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_code(
        clusters
            .set_registry_credentials(server.request(&b.admin_key, set(&cluster.id, vec![cred("a.io", "u", "p")])))
            .await,
        Code::NotFound,
    );
    assert_code(
        clusters
            .get_registry_credentials(server.service_request("tenant-b", get("tenant-b", &cluster.id)))
            .await,
        Code::NotFound,
    );

    // Another key ring (same id, other key) cannot open them.
    match server
        .store
        .get_registry_credentials(&server.tenant_id, &ResourceRef::id(&cluster.id), None, &ring(2))
        .await
    {
        Err(StoreError::FailedPrecondition(message)) => assert!(!message.contains("s3cret")),
        other => panic!("expected FailedPrecondition, got {other:?}"),
    }

    // An empty set removes them all.
    clusters
        .set_registry_credentials(server.request(admin, set(&cluster.id, Vec::new())))
        .await
        .unwrap();
    let got = clusters
        .get_registry_credentials(server.service_request(&server.tenant_id, get(&server.tenant_id, &cluster.id)))
        .await
        .unwrap()
        .into_inner();
    assert!(got.credentials.is_empty());
}

/// With `merge`, one registry is set or removed while the others keep their secrets; the
/// listing shows hosts and usernames, never a secret.
async fn merge_scenario(mode: Mode) {
    let mut options = TestOptions::new(mode);
    options.credential_keys = Some(ring(1));
    let server = TestServer::start(options).await.unwrap();
    let mut clusters = ClusterServiceClient::new(server.channel().await.unwrap());
    let admin = &server.admin_key;
    let c1 = register(&server, "c1").await.id;
    let c1 = c1.as_str();
    register(&server, "c2").await;
    for credential in [
        cred("ghcr.io", "me", "first-secret"),
        cred("registry.example:5000", "bot", "second-secret"),
    ] {
        clusters
            .set_registry_credentials(server.request(admin, merge(c1, vec![credential], &[])))
            .await
            .unwrap();
    }
    let stored = || async {
        ClusterServiceClient::new(server.channel().await.unwrap())
            .get_registry_credentials(server.service_request(&server.tenant_id, get(&server.tenant_id, c1)))
            .await
            .unwrap()
            .into_inner()
            .credentials
    };
    assert_eq!(
        stored().await,
        [
            cred("ghcr.io", "me", "first-secret"),
            cred("registry.example:5000", "bot", "second-secret")
        ]
    );

    // ListClusters shows each cluster's registries with usernames, and no secret.
    let listed = clusters
        .list_clusters(server.request(admin, pb::ListClustersRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(!format!("{listed:?}").contains("secret\""));
    let by_name = |name: &str| listed.clusters.iter().find(|c| c.name == name).unwrap().clone();
    assert_eq!(
        hosts_and_users(&by_name("c1")),
        [
            ("ghcr.io".to_owned(), "me".to_owned()),
            ("registry.example:5000".to_owned(), "bot".to_owned())
        ]
    );
    assert_eq!(
        by_name("c1").credential_registries,
        ["ghcr.io", "registry.example:5000"]
    );
    assert!(by_name("c2").registry_credentials.is_empty());

    // Replace one, remove the other in one call.
    let answer = clusters
        .set_registry_credentials(server.request(
            admin,
            merge(
                c1,
                vec![cred("ghcr.io", "me2", "third-secret")],
                &["registry.example:5000"],
            ),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        hosts_and_users(&answer.cluster.unwrap()),
        [("ghcr.io".to_owned(), "me2".to_owned())]
    );
    assert_eq!(stored().await, [cred("ghcr.io", "me2", "third-secret")]);

    // Removing a registry without credentials changes nothing; a registry named twice,
    // removal without merge and an empty merge are refused.
    assert_code(
        clusters
            .set_registry_credentials(server.request(admin, merge(c1, vec![cred("a.io", "u", "p")], &["b.io"])))
            .await,
        Code::NotFound,
    );
    assert_code(
        clusters
            .set_registry_credentials(server.request(admin, merge(c1, vec![cred("a.io", "u", "p")], &["a.io"])))
            .await,
        Code::InvalidArgument,
    );
    let mut not_merged = merge(c1, Vec::new(), &["ghcr.io"]);
    not_merged.merge = false;
    assert_code(
        clusters
            .set_registry_credentials(server.request(admin, not_merged))
            .await,
        Code::InvalidArgument,
    );
    assert_code(
        clusters
            .set_registry_credentials(server.request(admin, merge(c1, Vec::new(), &[])))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(stored().await, [cred("ghcr.io", "me2", "third-secret")]);
}

/// Registers a cluster named `name` as the tenant's admin.
async fn register(server: &TestServer, name: &str) -> pb::Cluster {
    ClusterServiceClient::new(server.channel().await.unwrap())
        .register_cluster(server.request(
            &server.admin_key,
            pb::RegisterClusterRequest {
                name: name.to_owned(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .cluster
        .unwrap()
}

/// Without a key ring, Set is refused and Get answers UNIMPLEMENTED (the signature service's
/// "no stored credentials").
async fn without_keys(mode: Mode) {
    let server = TestServer::start(TestOptions::new(mode)).await.unwrap();
    let mut clusters = ClusterServiceClient::new(server.channel().await.unwrap());
    let cluster = register(&server, "c1").await;
    assert_code(
        clusters
            .set_registry_credentials(server.request(&server.admin_key, set(&cluster.id, vec![cred("a.io", "u", "p")])))
            .await,
        Code::FailedPrecondition,
    );
    assert_code(
        clusters
            .get_registry_credentials(server.service_request(&server.tenant_id, get(&server.tenant_id, &cluster.id)))
            .await,
        Code::Unimplemented,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_set_get_and_isolation() {
    scenario(Mode::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_set_get_and_isolation() {
    scenario(Mode::Distributed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_without_keys() {
    without_keys(Mode::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_without_keys() {
    without_keys(Mode::Distributed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_merge_sets_and_removes_one_registry() {
    merge_scenario(Mode::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_merge_sets_and_removes_one_registry() {
    merge_scenario(Mode::Distributed).await;
}
