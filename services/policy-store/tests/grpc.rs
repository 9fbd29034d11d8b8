//! The policy store through real gRPC: every scenario is an `async fn(&TestServer)`, run by
//! `both!` in embedded mode (SQLite, in-process bus) and distributed mode (a fresh
//! PostgreSQL database, a private nats-server).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::time::Duration;

use portcullis_bus::{StartFrom, TRACEPARENT, TopicFilter};
use portcullis_policy_store::testing::{TestOptions, TestServer};
use portcullis_proto::common::v1 as pc;
use portcullis_proto::events::v1 as pe;
use portcullis_proto::policystore::v1 as pb;
use portcullis_proto::policystore::v1::attestor_service_client::AttestorServiceClient;
use portcullis_proto::policystore::v1::audit_service_client::AuditServiceClient;
use portcullis_proto::policystore::v1::auth_service_client::AuthServiceClient;
use portcullis_proto::policystore::v1::cluster_service_client::ClusterServiceClient;
use portcullis_proto::policystore::v1::policy_service_client::PolicyServiceClient;
use portcullis_proto::policystore::v1::tenant_service_client::TenantServiceClient;
use portcullis_server::status::field_violations;
use portcullis_server::{Mode, TlsFiles};
use portcullis_test_kit::docs::policy_doc;
use prost::Message;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};

// ---------------------------------------------------------------------------------------
// Support

portcullis_test_kit::both! {
    embedded: &portcullis_policy_store::testing::TestServer::embedded().await.unwrap(),
    distributed: &portcullis_policy_store::testing::TestServer::distributed().await.unwrap();
    validation_errors_name_the_field,
    tenants_are_isolated,
    connector_reads_only_its_own_cluster,
    events_arrive_on_the_bus_with_the_revision,
    health_and_reflection_answer,
    introspection_is_for_services_only,
    audit_log_records_changes,
    settings_lists_are_capped_below_the_bus_limit,
    a_new_cluster_trusts_portcullis_own_image_until_removed,
}

fn by_name(name: &str) -> Option<pc::ResourceRef> {
    Some(pc::ResourceRef {
        r#ref: Some(pc::resource_ref::Ref::Name(name.to_owned())),
    })
}

fn by_id(id: &str) -> Option<pc::ResourceRef> {
    Some(pc::ResourceRef {
        r#ref: Some(pc::resource_ref::Ref::Id(id.to_owned())),
    })
}

#[track_caller]
fn assert_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code) -> Status {
    match result {
        Ok(v) => panic!("expected {code:?}, got Ok({v:?})"),
        Err(status) => {
            assert_eq!(status.code(), code, "status: {status:?}");
            status
        }
    }
}

struct Clients {
    policies: PolicyServiceClient<Channel>,
    clusters: ClusterServiceClient<Channel>,
    auth: AuthServiceClient<Channel>,
    tenants: TenantServiceClient<Channel>,
}

async fn clients(server: &TestServer) -> Clients {
    let channel = server.channel().await.unwrap();
    Clients {
        policies: PolicyServiceClient::new(channel.clone()),
        clusters: ClusterServiceClient::new(channel.clone()),
        auth: AuthServiceClient::new(channel.clone()),
        tenants: TenantServiceClient::new(channel),
    }
}

async fn create_policy(server: &TestServer, c: &mut Clients, key: &str, name: &str) -> pb::Policy {
    c.policies
        .create_policy(server.request(
            key,
            pb::CreatePolicyRequest {
                document_json: policy_doc(name, "block"),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .policy
        .unwrap()
}

async fn register_cluster(
    server: &TestServer,
    c: &mut Clients,
    name: &str,
    policy: Option<&str>,
) -> pb::RegisterClusterResponse {
    c.clusters
        .register_cluster(server.request(
            &server.admin_key,
            pb::RegisterClusterRequest {
                name: name.to_owned(),
                description: String::new(),
                policy: policy.and_then(by_name),
                settings: None,
                connector_key_expires_at: None,
            },
        ))
        .await
        .unwrap()
        .into_inner()
}

async fn validation_errors_name_the_field(server: &TestServer) {
    let mut c = clients(server).await;
    let status = assert_code(
        c.policies
            .create_policy(server.request(
                &server.admin_key,
                pb::CreatePolicyRequest {
                    document_json: policy_doc("bad", "sometimes"),
                },
            ))
            .await,
        Code::InvalidArgument,
    );
    assert!(
        status.message().contains("default.rules[0].action"),
        "{}",
        status.message()
    );
    let fields = field_violations(&status);
    assert!(
        fields.iter().any(|(field, _)| field == "default.rules[0].action"),
        "{fields:?}"
    );

    // Request fields are checked at the edge, each named.
    let status = assert_code(
        c.policies
            .get_policy(server.request(&server.admin_key, pb::GetPolicyRequest { policy: None }))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(field_violations(&status)[0].0, "policy");
    let status = assert_code(
        c.policies
            .get_policy(server.request(&server.admin_key, pb::GetPolicyRequest { policy: by_name("") }))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(field_violations(&status)[0].0, "policy.name");
    let status = assert_code(
        c.auth
            .create_api_key(server.request(
                &server.admin_key,
                pb::CreateApiKeyRequest {
                    role: 42,
                    ..Default::default()
                },
            ))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(field_violations(&status)[0].0, "role");
    let status = assert_code(
        c.clusters
            .update_cluster_settings(server.request(
                &server.admin_key,
                pb::UpdateClusterSettingsRequest {
                    cluster: by_name("c1"),
                    settings: None,
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["colour".to_owned()],
                    }),
                    expected_generation: None,
                },
            ))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(field_violations(&status)[0].0, "update_mask.paths[0]");

    // Nothing was written by the refused create.
    assert_code(
        c.policies
            .get_policy(server.request(&server.admin_key, pb::GetPolicyRequest { policy: by_name("bad") }))
            .await,
        Code::NotFound,
    );
}

async fn tenants_are_isolated(server: &TestServer) {
    let mut c = clients(server).await;
    let policy_a = create_policy(server, &mut c, &server.admin_key, "aPolicy").await;
    let cluster_a = register_cluster(server, &mut c, "aCluster", Some("aPolicy")).await;

    // A tenant key cannot manage tenants; the operator key can.
    assert_code(
        c.tenants
            .create_tenant(server.request(
                &server.admin_key,
                pb::CreateTenantRequest {
                    name: "B".to_owned(),
                    id: "tenant-b".to_owned(),
                    admin_key_expires_at: None,
                },
            ))
            .await,
        Code::PermissionDenied,
    );
    let b = c
        .tenants
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
    let b_key = b.admin_key;
    // The operator key manages tenants only.
    assert_code(
        c.policies
            .list_policies(server.request(&server.operator_key, pb::ListPoliciesRequest::default()))
            .await,
        Code::PermissionDenied,
    );

    for policy in [by_name("aPolicy"), by_id(&policy_a.id)] {
        assert_code(
            c.policies
                .get_policy(server.request(&b_key, pb::GetPolicyRequest { policy }))
                .await,
            Code::NotFound,
        );
    }
    let listed = c
        .policies
        .list_policies(server.request(&b_key, pb::ListPoliciesRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.policies.is_empty());
    assert_code(
        c.policies
            .update_policy(server.request(
                &b_key,
                pb::UpdatePolicyRequest {
                    policy: by_id(&policy_a.id),
                    document_json: policy_doc("aPolicy", "log"),
                    expected_revision: 1,
                },
            ))
            .await,
        Code::NotFound,
    );
    assert_code(
        c.clusters
            .get_cluster(server.request(
                &b_key,
                pb::GetClusterRequest {
                    cluster: by_id(&cluster_a.cluster.as_ref().unwrap().id),
                },
            ))
            .await,
        Code::NotFound,
    );
    // B cannot assign A's policy to its own cluster.
    c.clusters
        .register_cluster(server.request(
            &b_key,
            pb::RegisterClusterRequest {
                name: "b-cluster".to_owned(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    assert_code(
        c.clusters
            .assign_policy(server.request(
                &b_key,
                pb::AssignPolicyRequest {
                    cluster: by_name("b-cluster"),
                    policy: by_id(&policy_a.id),
                },
            ))
            .await,
        Code::NotFound,
    );
    // A tenant key cannot act for another tenant through the metadata either.
    let mut request = server.request(&b_key, pb::ListPoliciesRequest::default());
    request
        .metadata_mut()
        .insert("x-portcullis-tenant", MetadataValue::from_static("default"));
    assert_code(c.policies.list_policies(request).await, Code::PermissionDenied);
}

async fn connector_reads_only_its_own_cluster(server: &TestServer) {
    let mut c = clients(server).await;
    let policy = create_policy(server, &mut c, &server.admin_key, "edge").await;
    let c1 = register_cluster(server, &mut c, "c1", Some("edge")).await;
    let c2 = register_cluster(server, &mut c, "c2", None).await;
    let connector = c1.connector_key.clone();
    let c1_id = c1.cluster.unwrap().id;
    let c2_id = c2.cluster.unwrap().id;

    for cluster in [None, by_name("c1"), by_id(&c1_id)] {
        let effective = c
            .policies
            .get_effective_policy(server.request(
                &connector,
                pb::GetEffectivePolicyRequest {
                    cluster,
                    tenant_id: String::new(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(effective.cluster_id, c1_id);
        let p = effective.policy.unwrap();
        assert_eq!((p.id.as_str(), p.revision), (policy.id.as_str(), 1));
    }
    for cluster in [by_name("c2"), by_id(&c2_id), by_name("no-such-cluster")] {
        assert_code(
            c.policies
                .get_effective_policy(server.request(
                    &connector,
                    pb::GetEffectivePolicyRequest {
                        cluster,
                        tenant_id: String::new(),
                    },
                ))
                .await,
            Code::PermissionDenied,
        );
    }
    // Nothing else.
    assert_code(
        c.policies
            .get_policy(server.request(
                &connector,
                pb::GetPolicyRequest {
                    policy: by_name("edge"),
                },
            ))
            .await,
        Code::PermissionDenied,
    );
    assert_code(
        c.clusters
            .list_clusters(server.request(&connector, pb::ListClustersRequest::default()))
            .await,
        Code::PermissionDenied,
    );
    // Heartbeats for its own cluster only.
    let beat = c
        .clusters
        .heartbeat(server.request(
            &connector,
            pb::HeartbeatRequest {
                cluster: None,
                connector_version: "1.4.2".to_owned(),
                kubernetes_version: "v1.33.1".to_owned(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((beat.policy_id.as_str(), beat.policy_revision), (policy.id.as_str(), 1));
    assert_code(
        c.clusters
            .heartbeat(server.request(
                &connector,
                pb::HeartbeatRequest {
                    cluster: by_name("c2"),
                    ..Default::default()
                },
            ))
            .await,
        Code::PermissionDenied,
    );
    // Versions are bounded: a heartbeat writes them every time.
    let status = c
        .clusters
        .heartbeat(server.request(
            &connector,
            pb::HeartbeatRequest {
                cluster: None,
                connector_version: "1".repeat(129),
                kubernetes_version: "v1.33.1".to_owned(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("connector_version") && status.message().contains("limit is 128"),
        "{status:?}"
    );
    let seen = c
        .clusters
        .get_cluster(server.request(&server.admin_key, pb::GetClusterRequest { cluster: by_name("c1") }))
        .await
        .unwrap()
        .into_inner()
        .cluster
        .unwrap();
    assert_eq!(seen.connector_version, "1.4.2");
    assert!(seen.last_seen_at.is_some());

    // The service credential reads any cluster of the tenant it names.
    let effective = c
        .policies
        .get_effective_policy(server.service_request(
            "default",
            pb::GetEffectivePolicyRequest {
                cluster: by_name("c2"),
                tenant_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(effective.cluster_id, c2_id);
    assert!(effective.policy.is_none());
    let mut no_tenant = tonic::Request::new(pb::GetEffectivePolicyRequest {
        cluster: by_name("c2"),
        tenant_id: String::new(),
    });
    no_tenant.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {}", server.service_token)).unwrap(),
    );
    assert_code(c.policies.get_effective_policy(no_tenant).await, Code::InvalidArgument);
    // ... but writes nothing.
    assert_code(
        c.policies
            .create_policy(server.service_request(
                "default",
                pb::CreatePolicyRequest {
                    document_json: policy_doc("svc", "block"),
                },
            ))
            .await,
        Code::PermissionDenied,
    );
}

async fn events_arrive_on_the_bus_with_the_revision(server: &TestServer) {
    let filter = TopicFilter::topics(["policy.changed"]).for_tenant("default");
    let last = server.bus.last_sequence().await.unwrap();
    let mut events = server
        .bus
        .subscribe_broadcast(&filter, StartFrom::after(last))
        .await
        .unwrap();
    let mut c = clients(server).await;
    let created = create_policy(server, &mut c, &server.admin_key, "evented").await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut update = server.request(
        &server.admin_key,
        pb::UpdatePolicyRequest {
            policy: by_name("evented"),
            document_json: policy_doc("evented", "log"),
            expected_revision: 1,
        },
    );
    update
        .metadata_mut()
        .insert("traceparent", MetadataValue::from_static(traceparent));
    c.policies.update_policy(update).await.unwrap();

    for (revision, change) in [(1, pe::ChangeKind::Created), (2, pe::ChangeKind::Updated)] {
        let received = tokio::time::timeout(Duration::from_secs(15), events.next())
            .await
            .expect("event in time")
            .expect("subscription open");
        let event = received.event;
        assert_eq!(event.subject(), "pc.default.evt.policy.changed");
        let envelope = pe::EventEnvelope::decode(event.payload.clone()).unwrap();
        assert_eq!(envelope.event_id, event.id, "Nats-Msg-Id is the event id");
        assert_eq!(envelope.tenant_id, "default");
        let Some(pe::event_envelope::Payload::PolicyChanged(changed)) = envelope.payload else {
            panic!("not a policy.changed payload: {envelope:?}");
        };
        assert_eq!(changed.policy_id, created.id);
        assert_eq!(changed.revision, revision);
        assert_eq!(changed.change, change as i32);
        if revision == 2 {
            assert_eq!(event.traceparent(), Some(traceparent));
            assert_eq!(event.headers.get(TRACEPARENT).map(String::as_str), Some(traceparent));
        }
    }
}

async fn health_and_reflection_answer(server: &TestServer) {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let channel = server.channel().await.unwrap();
    let mut health = HealthClient::new(channel.clone());
    for service in [
        "",
        "portcullis.policystore.v1.PolicyService",
        "portcullis.policystore.v1.AuthService",
    ] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    assert_code(
        health
            .check(tonic_health::pb::HealthCheckRequest {
                service: "no.such.Service".to_owned(),
            })
            .await,
        Code::NotFound,
    );

    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(futures::stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("unexpected answer {answer:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in portcullis_proto::SERVICE_NAMES.iter().take(9) {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
    }
}

async fn introspection_is_for_services_only(server: &TestServer) {
    let mut c = clients(server).await;
    let answer = c
        .auth
        .introspect(server.service_request(
            "default",
            pb::IntrospectRequest {
                key: server.admin_key.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.active);
    assert_eq!(answer.tenant_id, "default");
    assert_eq!(answer.role, pc::Role::Admin as i32);
    let unknown = c
        .auth
        .introspect(server.service_request(
            "default",
            pb::IntrospectRequest {
                key: "pck_unknown_key".to_owned(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!unknown.active);
    assert_eq!(unknown.inactive_reason, pb::InactiveReason::Unknown as i32);
    assert_code(
        c.auth
            .introspect(server.request(
                &server.admin_key,
                pb::IntrospectRequest {
                    key: server.admin_key.clone(),
                },
            ))
            .await,
        Code::PermissionDenied,
    );
}

async fn audit_log_records_changes(server: &TestServer) {
    let mut c = clients(server).await;
    let policy = create_policy(server, &mut c, &server.admin_key, "audited").await;
    let channel = server.channel().await.unwrap();
    let mut audit = AuditServiceClient::new(channel.clone());
    let entries = audit
        .list_audit_entries(server.request(
            &server.admin_key,
            pb::ListAuditEntriesRequest {
                resource_id: policy.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].action, "policy.create");
    assert_eq!(entries[0].actor_key_id, policy.author_key_id);
    assert_eq!(entries[0].actor_role, pc::Role::Admin as i32);

    // Attestors and rulesets go through the same adapters.
    let mut attestors = AttestorServiceClient::new(channel);
    assert_code(
        attestors
            .get_attestor(server.request(
                &server.admin_key,
                pb::GetAttestorRequest {
                    attestor: by_name("none"),
                },
            ))
            .await,
        Code::NotFound,
    );
    let status = assert_code(
        attestors
            .create_attestor(server.request(
                &server.admin_key,
                pb::CreateAttestorRequest {
                    document_json: r#"{"name":"k","type":"cosignPublicKey","publicKey":"not a key"}"#.to_owned(),
                },
            ))
            .await,
        Code::InvalidArgument,
    );
    assert!(
        field_violations(&status).iter().any(|(f, _)| f == "publicKey"),
        "{:?}",
        field_violations(&status)
    );
}

// ---------------------------------------------------------------------------------------
// Embedded only: TLS, restart, bootstrap file

fn self_signed(dir: &std::path::Path) -> (TlsFiles, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_pem = certified.cert.pem();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    (TlsFiles { cert, key }, cert_pem)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_self_signed_certificate() {
    let dir = portcullis_test_kit::DataDir::new().unwrap();
    let (tls, ca) = self_signed(dir.path());
    let mut options = TestOptions::new(Mode::Embedded);
    options.tls = Some(tls);
    let server = TestServer::start(options).await.unwrap();
    assert!(server.url.starts_with("https://127.0.0.1:"), "{}", server.url);

    let channel = Endpoint::from_shared(server.url.clone())
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca))
                .domain_name("localhost"),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    let who = AuthServiceClient::new(channel)
        .who_am_i(server.request(&server.admin_key, pb::WhoAmIRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(who.tenant_id, "default");

    // Plain text is not answered.
    let plain = Endpoint::from_shared(server.url.replace("https://", "http://"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await;
    if let Ok(channel) = plain {
        let result = AuthServiceClient::new(channel)
            .who_am_i(server.request(&server.admin_key, pb::WhoAmIRequest {}))
            .await;
        assert!(result.is_err(), "plain text must not be served: {result:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_everything_and_bootstrap_is_once() {
    let mut server = TestServer::embedded().await.unwrap();
    let key_file = server.data_dir().unwrap().join("bootstrap-admin.key");
    let written = std::fs::read_to_string(&key_file).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let mut c = clients(&server).await;
    create_policy(&server, &mut c, &server.admin_key, "kept").await;
    let flushed_or_published = server.stop().await.unwrap();
    assert!(
        server.store.pending_event_count().await.unwrap() == 0,
        "flushed: {flushed_or_published}"
    );

    // A second bootstrap finds the file and does nothing.
    let again = portcullis_policy_store::bootstrap_default_tenant(&server.store, server.data_dir().unwrap())
        .await
        .unwrap();
    assert!(again.is_none());
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), written);

    server.restart().await.unwrap();
    let mut c = clients(&server).await;
    let kept = c
        .policies
        .get_policy(server.request(
            &server.admin_key,
            pb::GetPolicyRequest {
                policy: by_name("kept"),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .policy
        .unwrap();
    assert_eq!(kept.revision, 1);
}

/// Settings lists over their limits are refused naming the field and the limit; lists at
/// the limits, of the longest entries, make a `cluster.changed` event the bus takes.
async fn settings_lists_are_capped_below_the_bus_limit(server: &TestServer) {
    use portcullis_policy_store::convert::{MAX_EXCLUDED_NAMESPACES, MAX_TRUSTED_IMAGES};
    let mut c = clients(server).await;
    let namespaces = |n: usize| -> Vec<String> { (0..n).map(|i| format!("{i:063}")).collect() };
    let host = format!("{}.example.com", vec!["a".repeat(60); 9].join("."));
    let digest = format!("sha512:{}", "f".repeat(128));
    let images = |n: usize| -> Vec<String> {
        (0..n)
            .map(|i| format!("{host}/t{i:03}/{}@{digest}", "p".repeat(250)))
            .collect()
    };
    let register = |name: &str, settings: pb::ClusterSettings| {
        server.request(
            &server.admin_key,
            pb::RegisterClusterRequest {
                name: name.to_owned(),
                settings: Some(settings),
                ..Default::default()
            },
        )
    };
    let over_limits = [
        (
            pb::ClusterSettings {
                excluded_namespaces: namespaces(MAX_EXCLUDED_NAMESPACES + 1),
                ..Default::default()
            },
            "settings.excluded_namespaces",
            "at most 1000",
        ),
        (
            pb::ClusterSettings {
                trusted_images: images(MAX_TRUSTED_IMAGES + 1),
                ..Default::default()
            },
            "settings.trusted_images",
            "at most 256",
        ),
        (
            pb::ClusterSettings {
                trusted_images: vec![format!("{host}/{}", "a".repeat(1024))],
                ..Default::default()
            },
            "settings.trusted_images[0]",
            "at most 1024 bytes",
        ),
    ];
    for (settings, field, limit) in over_limits {
        let status = assert_code(
            c.clusters.register_cluster(register("big", settings)).await,
            Code::InvalidArgument,
        );
        assert_eq!(field_violations(&status)[0].0, field);
        assert!(status.message().contains(limit), "{}", status.message());
    }

    // Every new cluster also trusts Portcullis's own image: it is the 256th.
    let at_limits = pb::ClusterSettings {
        excluded_namespaces: namespaces(MAX_EXCLUDED_NAMESPACES),
        trusted_images: images(MAX_TRUSTED_IMAGES - 1),
        ..Default::default()
    };
    let mut sub = server
        .bus
        .subscribe_broadcast(
            &portcullis_bus::TopicFilter::topics(["cluster.changed"]),
            portcullis_bus::StartFrom::New,
        )
        .await
        .unwrap();
    c.clusters.register_cluster(register("big", at_limits)).await.unwrap();
    let received = tokio::time::timeout(std::time::Duration::from_secs(10), sub.next())
        .await
        .expect("the cluster.changed event is published")
        .unwrap();
    let limit = portcullis_bus::BusConfig::default().max_event_bytes;
    assert!(
        received.event.payload.len() < limit / 2,
        "{} bytes at the limits",
        received.event.payload.len()
    );
}

/// The seed: every new cluster trusts Portcullis's own image repository, shown by get and
/// list like any other trusted image, added once beside those the registration gives, and
/// gone for good once removed.
async fn a_new_cluster_trusts_portcullis_own_image_until_removed(server: &TestServer) {
    use portcullis_policy_store::DEFAULT_TRUSTED_IMAGE;
    let mut c = clients(server).await;
    let own = DEFAULT_TRUSTED_IMAGE.to_owned();
    let other = "registry.example.com/platform/agent".to_owned();
    let trusted = |cluster: Option<pb::Cluster>| cluster.unwrap().settings.unwrap().trusted_images;

    let plain = register_cluster(server, &mut c, "plain", None).await;
    assert_eq!(trusted(plain.cluster), vec![own.clone()]);
    let register = |name: &str, images: Vec<String>| {
        server.request(
            &server.admin_key,
            pb::RegisterClusterRequest {
                name: name.to_owned(),
                settings: Some(pb::ClusterSettings {
                    trusted_images: images,
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
    };
    let given = c
        .clusters
        .register_cluster(register("given", vec![other.clone()]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(trusted(given.cluster), vec![own.clone(), other.clone()]);
    let both = c
        .clusters
        .register_cluster(register("both", vec![other.clone(), own.clone()]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(trusted(both.cluster), vec![own.clone(), other.clone()], "listed once");

    // Shown by get and list.
    let got = c
        .clusters
        .get_cluster(server.request(
            &server.admin_key,
            pb::GetClusterRequest {
                cluster: by_name("plain"),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(trusted(got.cluster), vec![own.clone()]);
    let listed = c
        .clusters
        .list_clusters(server.request(&server.admin_key, pb::ListClustersRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.clusters.len(), 3);
    for cluster in &listed.clusters {
        let images = &cluster.settings.as_ref().unwrap().trusted_images;
        assert_eq!(images.first(), Some(&own), "{}: {images:?}", cluster.name);
    }

    // Removable like any other, and not put back by later changes.
    let update = |images: Vec<String>, paths: &[&str]| {
        server.request(
            &server.admin_key,
            pb::UpdateClusterSettingsRequest {
                cluster: by_name("given"),
                settings: Some(pb::ClusterSettings {
                    trusted_images: images,
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: paths.iter().map(|p| (*p).to_owned()).collect(),
                }),
                expected_generation: None,
            },
        )
    };
    let removed = c
        .clusters
        .update_cluster_settings(update(vec![other.clone()], &["trusted_images"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(trusted(removed.cluster), vec![other.clone()]);
    c.clusters
        .update_cluster_settings(update(Vec::new(), &["excluded_namespaces"]))
        .await
        .unwrap();
    let got = c
        .clusters
        .get_cluster(server.request(
            &server.admin_key,
            pb::GetClusterRequest {
                cluster: by_name("given"),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(trusted(got.cluster), vec![other]);
}
