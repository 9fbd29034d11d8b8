//! The caches behind connector calls (key introspection, effective policy) never serve a
//! change's old state once the change was answered in this process, and learn of other
//! replicas' changes from the bus.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::time::Duration;

use portcullis_bus::{Bus, BusConfig};
use portcullis_policy_store::testing::TestServer;
use portcullis_policy_store::{BackgroundOptions, BusSink, PolicyStore, sqlite_url};
use portcullis_proto::common::v1 as pc;
use portcullis_proto::policystore::v1 as pb;
use portcullis_proto::policystore::v1::auth_service_client::AuthServiceClient;
use portcullis_proto::policystore::v1::cluster_service_client::ClusterServiceClient;
use portcullis_proto::policystore::v1::policy_service_client::PolicyServiceClient;
use portcullis_server::Authenticator as _;
use portcullis_storage::{
    Actor, NewCluster, NewTenant, OutboxRelay, RelayConfig, ResourceRef, Role, SettingsUpdate, Store,
};
use portcullis_test_kit::docs::policy_doc;
use portcullis_test_kit::{DataDir, until};
use tonic::Code;
use tonic::transport::Channel;

portcullis_test_kit::both! {
    embedded: &portcullis_policy_store::testing::TestServer::embedded().await.unwrap(),
    distributed: &portcullis_policy_store::testing::TestServer::distributed().await.unwrap();
    connector_answers_follow_changes_at_once,
}

fn by_name(name: &str) -> Option<pc::ResourceRef> {
    Some(pc::ResourceRef {
        r#ref: Some(pc::resource_ref::Ref::Name(name.to_owned())),
    })
}

async fn effective(
    server: &TestServer,
    policies: &mut PolicyServiceClient<Channel>,
    key: &str,
) -> Result<pb::GetEffectivePolicyResponse, tonic::Status> {
    policies
        .get_effective_policy(server.request(key, pb::GetEffectivePolicyRequest::default()))
        .await
        .map(tonic::Response::into_inner)
}

/// Every change is visible to the very next connector call, though each answer before it
/// was read (and cached) more than once.
async fn connector_answers_follow_changes_at_once(server: &TestServer) {
    let channel = server.channel().await.unwrap();
    let mut policies = PolicyServiceClient::new(channel.clone());
    let mut clusters = ClusterServiceClient::new(channel.clone());
    let mut auth = AuthServiceClient::new(channel);
    let admin = &server.admin_key;
    for name in ["first", "second"] {
        policies
            .create_policy(server.request(
                admin,
                pb::CreatePolicyRequest {
                    document_json: policy_doc(name, "block"),
                },
            ))
            .await
            .unwrap();
    }
    let registered = clusters
        .register_cluster(server.request(
            admin,
            pb::RegisterClusterRequest {
                name: "edge".to_owned(),
                description: String::new(),
                policy: by_name("first"),
                settings: None,
                connector_key_expires_at: None,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let key = registered.connector_key;
    let read_twice = |policies: &mut PolicyServiceClient<Channel>, key: String| {
        let mut policies = policies.clone();
        async move {
            let a = effective(server, &mut policies, &key).await.unwrap();
            let b = effective(server, &mut policies, &key).await.unwrap();
            assert_eq!(a, b);
            b
        }
    };

    let before = read_twice(&mut policies, key.clone()).await;
    assert_eq!(before.policy.as_ref().unwrap().name, "first");
    assert_eq!(before.policy.as_ref().unwrap().revision, 1);

    // A new revision of the assigned policy.
    policies
        .update_policy(server.request(
            admin,
            pb::UpdatePolicyRequest {
                policy: by_name("first"),
                document_json: policy_doc("first", "log"),
                expected_revision: 1,
            },
        ))
        .await
        .unwrap();
    let after = read_twice(&mut policies, key.clone()).await;
    assert_eq!(after.policy.as_ref().unwrap().revision, 2);
    assert!(after.policy.as_ref().unwrap().document_json.contains("\"log\""));

    // Another policy assigned.
    clusters
        .assign_policy(server.request(
            admin,
            pb::AssignPolicyRequest {
                cluster: by_name("edge"),
                policy: by_name("second"),
            },
        ))
        .await
        .unwrap();
    let assigned = read_twice(&mut policies, key.clone()).await;
    assert_eq!(assigned.policy.as_ref().unwrap().name, "second");
    assert!(assigned.cluster_generation > after.cluster_generation);

    // New settings.
    clusters
        .update_cluster_settings(server.request(
            admin,
            pb::UpdateClusterSettingsRequest {
                cluster: by_name("edge"),
                settings: Some(pb::ClusterSettings {
                    failure_mode: pc::FailureMode::FailClosed as i32,
                    excluded_namespaces: vec!["ops".to_owned()],
                    trusted_images: Vec::new(),
                }),
                update_mask: None,
                expected_generation: None,
            },
        ))
        .await
        .unwrap();
    let settled = read_twice(&mut policies, key.clone()).await;
    assert_eq!(settled.settings.as_ref().unwrap().excluded_namespaces, vec!["ops"]);

    // Rotation without grace: the old key stops at once, the new one works.
    let rotated = clusters
        .rotate_connector_key(server.request(
            admin,
            pb::RotateConnectorKeyRequest {
                cluster: by_name("edge"),
                grace_period: Some(prost_types::Duration { seconds: 0, nanos: 0 }),
                expires_at: None,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let old = effective(server, &mut policies, &key).await.unwrap_err();
    assert_eq!(old.code(), Code::Unauthenticated, "{old:?}");
    let new_key = rotated.connector_key;
    read_twice(&mut policies, new_key.clone()).await;

    // Revocation: at once, with the reason.
    auth.revoke_api_key(server.request(
        admin,
        pb::RevokeApiKeyRequest {
            key_id: rotated.connector_key_id,
        },
    ))
    .await
    .unwrap();
    let revoked = effective(server, &mut policies, &new_key).await.unwrap_err();
    assert_eq!(revoked.code(), Code::Unauthenticated, "{revoked:?}");
    assert!(revoked.message().contains("revoked"), "{}", revoked.message());
}

/// Another replica (a second store on the same database, whose commits this process does
/// not see) revokes a key and updates a policy: this replica keeps serving its cached
/// answers until the events arrive through the bus, then drops them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_replicas_changes_arrive_through_the_bus() {
    let dir = DataDir::new().unwrap();
    let url = sqlite_url(&dir.path().join("portcullis.db"));
    let store = Store::connect(&url).await.unwrap();
    let bus = Bus::memory(BusConfig::embedded()).unwrap();
    let service = PolicyStore::new(store.clone());
    // The relay only publishes when this store commits (so the other replica's events go
    // out when the test says).
    let background = service.start_background(
        bus.clone(),
        BackgroundOptions {
            relay: RelayConfig {
                poll_interval: Duration::from_secs(3600),
                ..RelayConfig::default()
            },
            ..BackgroundOptions::default()
        },
    );
    until(Duration::from_secs(10), "the cache follows the bus", async || {
        service.caches().is_following()
    })
    .await;

    let tenant = store
        .create_tenant(
            &Actor::operator(),
            &NewTenant {
                id: Some("acme".to_owned()),
                name: "Acme".to_owned(),
                admin_key_expires_at: None,
            },
        )
        .await
        .unwrap();
    let admin = Actor::key(tenant.admin_key.key.id.clone(), Role::Admin);
    store
        .create_policy("acme", &admin, &policy_doc("prod", "block"))
        .await
        .unwrap();
    let cluster = store
        .register_cluster(
            "acme",
            &admin,
            &NewCluster {
                name: "edge".to_owned(),
                description: String::new(),
                policy: Some(ResourceRef::Name("prod".to_owned())),
                settings: SettingsUpdate::default(),
                connector_key_expires_at: None,
            },
        )
        .await
        .unwrap();
    let key = cluster.connector_key.secret.clone();
    let editor = tenant.admin_key.secret.clone();
    until(
        Duration::from_secs(10),
        "this store's events are published",
        async || store.pending_events(10).await.unwrap().is_empty(),
    )
    .await;

    // Both caches filled through the service itself.
    let authenticator = service.authenticator();
    authenticator.authenticate(&key).await.unwrap();
    authenticator.authenticate(&editor).await.unwrap();
    let cluster_id = cluster.cluster.id.clone();
    let get = async |service: &PolicyStore| {
        use portcullis_proto::policystore::v1::policy_service_server::PolicyService as _;
        let caller = portcullis_server::Caller {
            principal: portcullis_server::Principal::Key(authenticator.authenticate(&key).await?),
            trace: portcullis_server::TraceContext::default(),
        };
        let mut request = tonic::Request::new(pb::GetEffectivePolicyRequest::default());
        request.extensions_mut().insert(caller);
        service
            .get_effective_policy(request)
            .await
            .map(tonic::Response::into_inner)
    };
    assert_eq!(get(&service).await.unwrap().cluster_id, cluster_id);
    assert_eq!(service.caches().sizes(), (2, 1));

    // The other replica changes things; this one does not know yet.
    let other = Store::connect(&url).await.unwrap();
    other
        .update_policy(
            "acme",
            &admin,
            &ResourceRef::Name("prod".to_owned()),
            &policy_doc("prod", "log"),
            1,
        )
        .await
        .unwrap();
    other
        .revoke_api_key("acme", &admin, &tenant.admin_key.key.id)
        .await
        .unwrap();
    assert_eq!(
        get(&service).await.unwrap().policy.unwrap().revision,
        1,
        "served from the cache"
    );
    authenticator
        .authenticate(&editor)
        .await
        .expect("served from the cache");

    // Its events reach the bus: the stale entries go.
    let published = OutboxRelay::new(other.clone(), BusSink::new(bus.clone()))
        .publish_pending()
        .await
        .unwrap();
    assert_eq!(published, 2);
    until(Duration::from_secs(10), "the revoked key is refused", async || {
        authenticator.authenticate(&editor).await.is_err()
    })
    .await;
    let refused = authenticator.authenticate(&editor).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    until(Duration::from_secs(10), "the new revision is served", async || {
        get(&service).await.unwrap().policy.unwrap().revision == 2
    })
    .await;
    // The untouched connector key stayed cached throughout.
    authenticator.authenticate(&key).await.unwrap();

    background.shutdown().await;
}
