//! Runtime mitigation across services, embedded (SQLite, in-process bus) and distributed
//! (PostgreSQL, nats-server: the mitigation crosses real NATS on `runtime.mitigation`): a
//! sensor's Falco event that a `terminate` ruleset entry matches, ingested by telemetry,
//! reaches the cluster's connector as a terminate command from continuous, addressed by
//! namespace and pod (and uid when continuous knows the pod), also for a pod continuous has
//! not seen in the inventory.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use portcullis_continuous::{ContinuousOptions, ContinuousServeOptions, RunningContinuous};
use portcullis_integration_tests::store::{Api, by_name};
use portcullis_policy_client::keys::{IntrospectingAuthenticator, KeyCacheOptions};
use portcullis_policy_client::metrics::NoMetrics;
use portcullis_policy_client::{Upstream, UpstreamTimeouts};
use portcullis_policy_store::testing::{TestServer, authed};
use portcullis_proto::continuous::v1 as pv;
use portcullis_proto::continuous::v1::continuous_service_client::ContinuousServiceClient;
use portcullis_proto::telemetry::v1 as pt;
use portcullis_proto::telemetry::v1::telemetry_service_client::TelemetryServiceClient;
use portcullis_server::{Credentials, Mode, ServerConfig};
use portcullis_telemetry_service::{RunningTelemetry, TelemetryOptions, TelemetryServeOptions};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

const ANSWER: Duration = Duration::from_secs(20);

fn authenticator(store: &TestServer) -> Arc<IntrospectingAuthenticator> {
    let upstream = Upstream::new(
        &store.url,
        None,
        &store.service_token,
        &UpstreamTimeouts::default(),
        false,
    )
    .unwrap();
    Arc::new(IntrospectingAuthenticator::new(
        upstream,
        KeyCacheOptions::default(),
        Arc::new(NoMetrics),
    ))
}

fn credentials(store: &TestServer) -> Credentials {
    Credentials::new(Some(store.operator_key.clone()), Some(store.service_token.clone())).unwrap()
}

fn listener() -> Option<ServerConfig> {
    Some(ServerConfig::new(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        Mode::Distributed,
    ))
}

/// A database URL for a service's own tables: a SQLite file `file` beside the policy
/// store's (embedded), the same PostgreSQL database (distributed).
fn data_url(store: &TestServer, file: &str) -> String {
    match store.data_dir() {
        Some(dir) => portcullis_test_kit::sqlite_url(&dir.join(file)),
        None => store.database_url.clone(),
    }
}

async fn start_continuous(store: &TestServer) -> RunningContinuous {
    let data = portcullis_continuous::storage::SqlStore::connect(&data_url(store, "continuous.db"))
        .await
        .unwrap();
    let policies = portcullis_continuous::policies::PolicyStore::new(
        &store.url,
        None,
        &store.service_token,
        &UpstreamTimeouts::default(),
        false,
    )
    .unwrap();
    RunningContinuous::start(
        Arc::new(data),
        policies,
        store.bus.clone(),
        credentials(store),
        authenticator(store),
        ContinuousServeOptions {
            grpc: listener(),
            continuous: ContinuousOptions::default(),
        },
    )
    .await
    .unwrap()
}

async fn start_telemetry(store: &TestServer) -> RunningTelemetry {
    let data = portcullis_telemetry_service::storage::SqlStore::connect(&data_url(store, "telemetry.db"))
        .await
        .unwrap();
    let options = TelemetryOptions {
        policy_cache_ttl: Duration::ZERO,
        ..TelemetryOptions::default()
    };
    let policies = portcullis_telemetry_service::policies::PolicyStore::new(
        &store.url,
        None,
        &store.service_token,
        &UpstreamTimeouts::default(),
        false,
        options.policy_cache_ttl,
    )
    .unwrap();
    RunningTelemetry::start(
        Arc::new(data),
        policies,
        None,
        store.bus.clone(),
        credentials(store),
        authenticator(store),
        TelemetryServeOptions {
            grpc: listener(),
            telemetry: options,
        },
    )
    .await
    .unwrap()
}

async fn channel(url: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A Falco event of `rule` in pod `web/pod` labelled `app=web`.
fn falco(rule: &str, pod: &str) -> String {
    let at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    json!({
        "output": format!("{at}: Notice {rule} (k8s.ns=web k8s.pod={pod})"),
        "priority": "Notice",
        "rule": rule,
        "time": at,
        "source": "syscall",
        "output_fields": {
            "container.name": "app",
            "k8s.ns.name": "web",
            "k8s.pod.name": pod,
            "k8s.pod.labels": {"app": "web"},
        },
        "hostname": "node-1",
    })
    .to_string()
}

async fn ingest(telemetry: &RunningTelemetry, key: &str, events: &[String]) -> pt::IngestEventsResponse {
    TelemetryServiceClient::new(channel(telemetry.url().unwrap()).await)
        .ingest_events(authed(
            key,
            tokio_stream::iter(vec![pt::IngestEventsRequest {
                cluster: None,
                events_json: events.iter().map(|e| e.clone().into_bytes().into()).collect(),
            }]),
        ))
        .await
        .unwrap()
        .into_inner()
}

/// The next command on the connector's stream.
async fn next(commands: &mut tonic::Streaming<pv::MitigationCommand>) -> pv::MitigationCommand {
    tokio::time::timeout(ANSWER, commands.message())
        .await
        .expect("no command in time")
        .unwrap()
        .expect("the command stream ended")
}

async fn a_terminate_ruleset_entry_becomes_a_terminate_command_at_the_connector(mode: Mode) {
    let store = match mode {
        Mode::Embedded => TestServer::embedded().await.unwrap(),
        Mode::Distributed => TestServer::distributed().await.unwrap(),
    };
    let mut admin = Api::new(&store, &store.admin_key).await;
    let shells = "Terminal shell in container";
    let ruleset = admin
        .create_ruleset(
            &json!({"name": "shells", "labels": {"matchLabels": {"app": "web"}},
                    "rules": [{"id": shells, "mitigation": "terminate"},
                              {"id": "Read sensitive file untrusted", "mitigation": "log"}]})
            .to_string(),
        )
        .await
        .unwrap();
    let policy = admin
        .create_policy(
            &json!({"name": "guard", "xdrEnabled": true, "default": {"rules": [
                {"type": "containerSecurityContext", "action": "log", "mitigation": "log",
                 "statement": {"properties": [{"key": "privileged", "value": "true"}]}}]},
                    "runtime": {"rulesets": [{"id": ruleset.id}]}})
            .to_string(),
        )
        .await
        .unwrap();
    let registered = admin.register_cluster("c1", by_name(&policy.name)).await.unwrap();
    let key = registered.connector_key.clone();
    let continuous = start_continuous(&store).await;
    let telemetry = start_telemetry(&store).await;
    let mut client = ContinuousServiceClient::new(channel(continuous.url().unwrap()).await);

    // The connector reports pod `web-1` (uid known); `ghost-1` it never reports.
    let (inventory, updates) = mpsc::channel(8);
    let mut acks = client
        .sync_inventory(authed(&key, ReceiverStream::new(updates)))
        .await
        .unwrap()
        .into_inner();
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "web", "uid": "uid-web-1", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "app", "image": "registry.example.com/app:1.0"}]},
        "status": {"phase": "Running"},
    });
    let snapshot = [
        pv::inventory_update::Update::SnapshotStart(pv::SnapshotStart { expected_pods: 1 }),
        pv::inventory_update::Update::Upserts(pv::PodBatch {
            pods_json: vec![pod.to_string().into_bytes().into()],
        }),
        pv::inventory_update::Update::SnapshotEnd(pv::SnapshotEnd {}),
    ];
    for (sequence, update) in (1..).zip(snapshot) {
        inventory
            .send(pv::InventoryUpdate {
                cluster: None,
                sequence,
                update: Some(update),
            })
            .await
            .unwrap();
        tokio::time::timeout(ANSWER, acks.message())
            .await
            .expect("no inventory ack in time")
            .unwrap()
            .expect("the inventory stream ended");
    }

    let (connector, messages) = mpsc::channel(8);
    connector
        .send(pv::ConnectorMessage {
            message: Some(pv::connector_message::Message::Hello(pv::ConnectorHello {
                cluster: None,
                connector_version: "test".into(),
            })),
        })
        .await
        .unwrap();
    let mut commands = client
        .commands(authed(&key, ReceiverStream::new(messages)))
        .await
        .unwrap()
        .into_inner();

    // A log-only entry, then the terminate entry, on the known pod.
    let answer = ingest(
        &telemetry,
        &key,
        &[falco("Read sensitive file untrusted", "web-1"), falco(shells, "web-1")],
    )
    .await;
    assert_eq!((answer.accepted, answer.mitigations), (2, 1), "{answer:?}");
    let command = next(&mut commands).await;
    assert_eq!(command.r#type, pv::CommandType::Terminate as i32, "{command:?}");
    assert_eq!(command.cluster_id, registered.cluster.as_ref().unwrap().id);
    let target = command.pod.clone().unwrap();
    assert_eq!(
        (target.namespace.as_str(), target.name.as_str(), target.uid.as_str()),
        ("web", "web-1", "uid-web-1")
    );
    assert_eq!(command.runtime_rule_ids, [shells]);

    // A pod continuous has not seen: terminated by namespace and name.
    let answer = ingest(&telemetry, &key, &[falco(shells, "ghost-1")]).await;
    assert_eq!(answer.mitigations, 1, "{answer:?}");
    let command = next(&mut commands).await;
    assert_eq!(command.r#type, pv::CommandType::Terminate as i32, "{command:?}");
    let target = command.pod.clone().unwrap();
    assert_eq!(
        (target.namespace.as_str(), target.name.as_str(), target.uid.as_str()),
        ("web", "ghost-1", "")
    );
    assert_eq!(command.runtime_rule_ids, [shells]);

    telemetry.stop().await.unwrap();
    continuous.stop().await.unwrap();
}

portcullis_test_kit::both! {
    embedded: portcullis_server::Mode::Embedded,
    distributed: portcullis_server::Mode::Distributed;
    a_terminate_ruleset_entry_becomes_a_terminate_command_at_the_connector,
}
