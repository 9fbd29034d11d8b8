//! A policy store, the continuous store and two continuous replicas (embedded: SQLite and
//! the in-process bus; distributed: PostgreSQL and a private nats-server, each replica on
//! its own NATS connection and database pool), with one policy assigned to one cluster;
//! and the connector's side of the streams.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    dead_code,
    missing_docs
)]

use std::sync::Arc;
use std::time::Duration;

use portcullis_bus::{Bus, BusConfig};
use portcullis_continuous::policies::PolicyStore;
use portcullis_continuous::storage::SqlStore;
use portcullis_continuous::store::ContinuousStore;
use portcullis_continuous::{ContinuousOptions, ContinuousServeOptions, RunningContinuous};
use portcullis_integration_tests::store::{Api, by_name};
use portcullis_policy_client::keys::{IntrospectingAuthenticator, KeyCacheOptions};
use portcullis_policy_client::metrics::NoMetrics;
use portcullis_policy_client::{Upstream, UpstreamTimeouts};
use portcullis_policy_store::testing::{TestServer, authed, loopback_listener};
use portcullis_proto::common::v1 as pc;
use portcullis_proto::continuous::v1 as pv;
use portcullis_proto::continuous::v1::continuous_service_client::ContinuousServiceClient;
use portcullis_server::Mode;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;

/// How long a stream answer may take before the test fails.
pub const ANSWER: Duration = Duration::from_secs(20);

/// The policy of the scenarios: privileged containers and host networking isolate, the
/// `debug` label is logged.
pub fn policy(name: &str, privileged: &str) -> String {
    let rule = |t: &str, k: &str, v: &str, m: &str| json!({"type": t, "action": "log", "mitigation": m, "statement": {"properties": [{"key": k, "value": v}]}});
    json!({"name": name, "default": {"rules": [
        rule("containerSecurityContext", "privileged", "true", privileged),
        rule("podSecurityContext", "hostNetwork", "true", "isolate"),
        rule("vulnerabilities", "max-severity", "high", "log"),
    ]}})
    .to_string()
}

/// The digest the scenarios' pods run.
pub const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

/// A running pod as a connector sends it.
pub fn pod(name: &str, uid: &str, privileged: bool, host_network: bool) -> Value {
    pod_running(name, uid, privileged, host_network, DIGEST)
}

/// A running pod of an image given by tag, whose status names `digest`.
pub fn pod_running(name: &str, uid: &str, privileged: bool, host_network: bool, digest: &str) -> Value {
    let mut container = json!({"name": "app", "image": "registry.example.com/app:1.0"});
    if privileged {
        container["securityContext"] = json!({"privileged": true});
    }
    let mut spec = json!({"containers": [container]});
    if host_network {
        spec["hostNetwork"] = json!(true);
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "web", "uid": uid, "labels": {"app": name}},
        "spec": spec,
        "status": {"phase": "Running", "containerStatuses": [{"name": "app",
            "imageID": format!("registry.example.com/app@{digest}")}]},
    })
}

/// Uploads a vulnerability scan of `digest` with one finding of `severity`.
pub async fn upload_scan(store: &TestServer, key: &str, digest: &str, severity: &str) {
    upload_scan_at(store, key, digest, severity, "2026-01-01T00:00:00Z").await;
}

/// Uploads a vulnerability scan of `digest` made at `scanned_at` (RFC 3339).
pub async fn upload_scan_at(store: &TestServer, key: &str, digest: &str, severity: &str, scanned_at: &str) {
    use portcullis_proto::policystore::v1 as pb;
    let mut scans = pb::scan_result_service_client::ScanResultServiceClient::new(store.channel().await.unwrap());
    let native = portcullis_test_kit::docs::vulnerability_scan(digest, severity, scanned_at);
    scans
        .upload_scan_result(authed(
            key,
            pb::UploadScanResultRequest {
                digest: digest.into(),
                report: Some(pb::upload_scan_result_request::Report::NativeJson(
                    native.to_string().into_bytes().into(),
                )),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
}

/// An inventory message.
pub fn update(sequence: u64, update: pv::inventory_update::Update) -> pv::InventoryUpdate {
    pv::InventoryUpdate {
        cluster: None,
        sequence,
        update: Some(update),
    }
}

pub fn start() -> pv::inventory_update::Update {
    pv::inventory_update::Update::SnapshotStart(pv::SnapshotStart { expected_pods: 0 })
}

pub fn end() -> pv::inventory_update::Update {
    pv::inventory_update::Update::SnapshotEnd(pv::SnapshotEnd {})
}

pub fn upserts(pods: &[Value]) -> pv::inventory_update::Update {
    pv::inventory_update::Update::Upserts(pv::PodBatch {
        pods_json: pods.iter().map(|p| p.to_string().into_bytes().into()).collect(),
    })
}

pub fn deletions(uids: &[&str]) -> pv::inventory_update::Update {
    pv::inventory_update::Update::Deletions(pv::PodDeletions {
        pods: uids
            .iter()
            .map(|u| pc::PodKey {
                namespace: "web".into(),
                name: String::new(),
                uid: (*u).to_owned(),
            })
            .collect(),
    })
}

/// A snapshot of `pods` from sequence 1.
pub fn snapshot(pods: &[Value]) -> Vec<pv::InventoryUpdate> {
    vec![update(1, start()), update(2, upserts(pods)), update(3, end())]
}

/// One tenant's cluster: its connector key and ids.
#[derive(Clone)]
pub struct Tenant {
    pub admin_key: String,
    pub policy_id: String,
    pub cluster_id: String,
    pub connector_key: String,
    pub connector_key_id: String,
}

pub struct Stack {
    pub store: TestServer,
    pub replicas: Vec<RunningContinuous>,
    pub stores: Vec<Arc<dyn ContinuousStore>>,
    pub tenant: Tenant,
    pub options: ContinuousOptions,
}

/// Embedded: a file beside the policy store's; distributed: the same database, the
/// service's own tables.
async fn sql_store(store: &TestServer) -> SqlStore {
    SqlStore::connect(&store.service_database_url("continuous.db"))
        .await
        .unwrap()
}

impl Stack {
    pub async fn start(mode: Mode) -> Stack {
        Stack::start_with(mode, ContinuousOptions::default()).await
    }

    pub async fn start_with(mode: Mode, options: ContinuousOptions) -> Stack {
        let mut store = TestServer::in_mode(mode).await.unwrap();
        let tenant = Stack::tenant_in(&store, &store.admin_key.clone(), &policy("guard", "isolate")).await;
        let nats_url = store.nats().map(|n| n.url());
        let mut replicas = Vec::new();
        let mut stores: Vec<Arc<dyn ContinuousStore>> = Vec::new();
        let shared: Arc<dyn ContinuousStore> = Arc::new(sql_store(&store).await);
        for i in 0..2 {
            // Distributed: each replica its own pool and NATS connection, as processes.
            let (continuous_store, bus): (Arc<dyn ContinuousStore>, Bus) = match (&nats_url, i) {
                (Some(url), 1) => (
                    Arc::new(sql_store(&store).await),
                    Bus::connect_nats(url, BusConfig::default()).await.unwrap(),
                ),
                _ => (shared.clone(), store.bus.clone()),
            };
            let replica = start_replica(&store, continuous_store.clone(), bus, options.clone()).await;
            stores.push(continuous_store);
            replicas.push(replica);
        }
        Stack {
            store,
            replicas,
            stores,
            tenant,
            options,
        }
    }

    /// Stops every replica (drained), then starts one again on the same database and bus,
    /// as a restarted deployment would: replica 0 is the new one, alone.
    pub async fn restart(&mut self) {
        for replica in self.replicas.drain(..) {
            replica.stop().await.unwrap();
        }
        let store: Arc<dyn ContinuousStore> = Arc::new(sql_store(&self.store).await);
        let replica = start_replica(&self.store, store.clone(), self.store.bus.clone(), self.options.clone()).await;
        self.stores = vec![store];
        self.replicas = vec![replica];
    }

    /// A policy (`document`) assigned to a new cluster `c1`, with the key `admin_key`.
    pub async fn tenant_in(store: &TestServer, admin_key: &str, document: &str) -> Tenant {
        let mut admin = Api::new(store, admin_key).await;
        let created = admin.create_policy(document).await.unwrap();
        let registered = admin.register_cluster("c1", by_name(&created.name)).await.unwrap();
        Tenant {
            admin_key: admin_key.to_owned(),
            policy_id: created.id,
            cluster_id: registered.cluster.unwrap().id,
            connector_key: registered.connector_key,
            connector_key_id: registered.connector_key_id,
        }
    }

    /// A second tenant with the same policy on its own cluster.
    pub async fn other_tenant(&self, id: &str) -> Tenant {
        let mut operator = Api::new(&self.store, &self.store.operator_key).await;
        let admin_key = operator.create_tenant(id).await.unwrap();
        Stack::tenant_in(&self.store, &admin_key, &policy("guard", "isolate")).await
    }

    pub async fn client(&self, replica: usize) -> ContinuousServiceClient<Channel> {
        let url = self.replicas[replica].url().unwrap().to_owned();
        let channel = tonic::transport::Endpoint::from_shared(url)
            .unwrap()
            .connect()
            .await
            .unwrap();
        ContinuousServiceClient::new(channel)
    }
}

async fn start_replica(
    store: &TestServer,
    continuous_store: Arc<dyn ContinuousStore>,
    bus: Bus,
    options: ContinuousOptions,
) -> RunningContinuous {
    let timeouts = UpstreamTimeouts::default();
    let policies = PolicyStore::new(&store.url, None, &store.service_token, &timeouts, false).unwrap();
    let upstream = Upstream::new(&store.url, None, &store.service_token, &timeouts, false).unwrap();
    let authenticator =
        IntrospectingAuthenticator::new(upstream, KeyCacheOptions::default(), std::sync::Arc::new(NoMetrics));
    let credentials = store.credentials().unwrap();
    RunningContinuous::start(
        continuous_store,
        policies,
        bus,
        credentials,
        Arc::new(authenticator),
        ContinuousServeOptions {
            grpc: Some(loopback_listener()),
            continuous: options,
        },
    )
    .await
    .unwrap()
}

/// An open inventory stream.
pub struct Sync {
    tx: mpsc::Sender<pv::InventoryUpdate>,
    rx: Streaming<pv::InventoryAck>,
}

impl Sync {
    pub async fn open(client: &mut ContinuousServiceClient<Channel>, key: &str) -> Sync {
        let (tx, rx) = mpsc::channel(64);
        let acks = client
            .sync_inventory(authed(key, ReceiverStream::new(rx)))
            .await
            .unwrap()
            .into_inner();
        Sync { tx, rx: acks }
    }

    /// Sends one message and waits for its answer.
    pub async fn send(&mut self, message: pv::InventoryUpdate) -> pv::InventoryAck {
        self.tx.send(message).await.unwrap();
        tokio::time::timeout(ANSWER, self.rx.message())
            .await
            .expect("no inventory ack in time")
            .unwrap()
            .expect("the inventory stream ended")
    }

    /// Sends each message; the answers.
    pub async fn send_all(&mut self, messages: Vec<pv::InventoryUpdate>) -> Vec<pv::InventoryAck> {
        let mut acks = Vec::new();
        for m in messages {
            acks.push(self.send(m).await);
        }
        acks
    }
}

/// A connector's command stream.
pub struct Commands {
    tx: mpsc::Sender<pv::ConnectorMessage>,
    rx: Streaming<pv::MitigationCommand>,
}

impl Commands {
    pub async fn open(client: &mut ContinuousServiceClient<Channel>, key: &str) -> Commands {
        let (tx, rx) = mpsc::channel(64);
        tx.send(pv::ConnectorMessage {
            message: Some(pv::connector_message::Message::Hello(pv::ConnectorHello {
                cluster: None,
                connector_version: "test".into(),
            })),
        })
        .await
        .unwrap();
        let commands = client
            .commands(authed(key, ReceiverStream::new(rx)))
            .await
            .unwrap()
            .into_inner();
        Commands { tx, rx: commands }
    }

    /// The next command.
    pub async fn next(&mut self) -> pv::MitigationCommand {
        tokio::time::timeout(ANSWER, self.rx.message())
            .await
            .expect("no command in time")
            .unwrap()
            .expect("the command stream ended")
    }

    /// The next command within `wait`, if any.
    pub async fn next_within(&mut self, wait: Duration) -> Option<pv::MitigationCommand> {
        match tokio::time::timeout(wait, self.rx.message()).await {
            Ok(Ok(Some(c))) => Some(c),
            _ => None,
        }
    }

    pub async fn ack(&self, command_id: &str) {
        self.tx
            .send(pv::ConnectorMessage {
                message: Some(pv::connector_message::Message::Ack(pv::CommandAck {
                    command_id: command_id.to_owned(),
                    state: pv::CommandState::Done as i32,
                    message: "done".into(),
                    completed_at: None,
                })),
            })
            .await
            .unwrap();
    }
}

/// The open findings of the key's tenant.
pub async fn open_findings(client: &mut ContinuousServiceClient<Channel>, key: &str) -> Vec<pv::Finding> {
    client
        .list_findings(authed(key, pv::ListFindingsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .findings
}

/// Every finding (open and resolved) of the key's tenant.
pub async fn all_findings(client: &mut ContinuousServiceClient<Channel>, key: &str) -> Vec<pv::Finding> {
    client
        .list_findings(authed(
            key,
            pv::ListFindingsRequest {
                states: vec![pv::FindingState::Open as i32, pv::FindingState::Resolved as i32],
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .findings
}

impl Sync {
    /// Sends a message without waiting for its answer.
    pub async fn tx_raw(&self, message: pv::InventoryUpdate) {
        self.tx.send(message).await.unwrap();
    }

    /// The error the stream ends with.
    pub async fn error(&mut self) -> tonic::Status {
        match tokio::time::timeout(ANSWER, self.rx.message())
            .await
            .expect("no answer in time")
        {
            Err(status) => status,
            Ok(other) => panic!("expected the stream to fail, got {other:?}"),
        }
    }
}

/// A `runtime.mitigation` event from telemetry: `mitigation` of the pod `web/ghost` (uid
/// `u-ghost`, in no inventory) of `tenant`'s `cluster`, for an SSH-keys rule.
pub fn ghost_mitigation(
    event_id: &str,
    tenant: &str,
    cluster: &str,
    mitigation: pc::Mitigation,
) -> portcullis_proto::events::v1::EventEnvelope {
    use portcullis_proto::events::v1 as pe;
    pe::EventEnvelope {
        event_id: event_id.into(),
        tenant_id: tenant.into(),
        topic: "runtime.mitigation".into(),
        producer: "telemetry".into(),
        payload: Some(pe::event_envelope::Payload::RuntimeMitigation(pe::RuntimeMitigation {
            cluster_id: cluster.into(),
            pod: Some(pc::PodKey {
                namespace: "web".into(),
                name: "ghost".into(),
                uid: "u-ghost".into(),
            }),
            mitigation: mitigation as i32,
            rule_ids: vec!["Adding ssh keys to authorized_keys".into()],
            ..Default::default()
        })),
        ..Default::default()
    }
}
