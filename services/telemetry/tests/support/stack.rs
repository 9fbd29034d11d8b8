//! A policy store and a telemetry service (embedded: SQLite and the in-process bus;
//! distributed: PostgreSQL and a private nats-server), one tenant with a policy assigned to
//! one cluster; Falco events and bus events as the sensors and the other stages send them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    dead_code,
    missing_docs
)]

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use portcullis_bus::Event;
use portcullis_domain::Topic;
use portcullis_integration_tests::store::{Api, by_name};
use portcullis_policy_client::keys::{IntrospectingAuthenticator, KeyCacheOptions};
use portcullis_policy_client::metrics::NoMetrics;
use portcullis_policy_client::{Upstream, UpstreamTimeouts};
use portcullis_policy_store::testing::{TestServer, authed};
use portcullis_proto::admission::v1 as pa;
use portcullis_proto::common::v1 as pc;
use portcullis_proto::events::v1 as pe;
use portcullis_proto::telemetry::v1 as pt;
use portcullis_proto::telemetry::v1::telemetry_service_client::TelemetryServiceClient;
use portcullis_server::{Credentials, Mode, ServerConfig};
use portcullis_telemetry_service::policies::PolicyStore;
use portcullis_telemetry_service::storage::SqlStore;
use portcullis_telemetry_service::store::TelemetryStore;
use portcullis_telemetry_service::{RunningTelemetry, TelemetryOptions, TelemetryServeOptions};
use prost::Message as _;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tonic::transport::Channel;

/// A policy with one log-only rule; `xdr` its `xdrEnabled`; `ruleset` a runtime ruleset id.
pub fn policy(name: &str, xdr: bool, ruleset: Option<&str>) -> String {
    let mut doc = json!({"name": name, "xdrEnabled": xdr, "default": {"rules": [
        {"type": "containerSecurityContext", "action": "log", "mitigation": "log",
         "statement": {"properties": [{"key": "privileged", "value": "true"}]}},
    ]}});
    if let Some(id) = ruleset {
        doc["runtime"] = json!({"rulesets": [{"id": id}]});
    }
    doc.to_string()
}

/// What a service needs of the policy store, owned (to move onto another runtime).
struct Upstreams {
    url: String,
    service_token: String,
    operator_key: String,
    bus: portcullis_bus::Bus,
}

impl Upstreams {
    fn of(store: &TestServer) -> Self {
        Self {
            url: store.url.clone(),
            service_token: store.service_token.clone(),
            operator_key: store.operator_key.clone(),
            bus: store.bus.clone(),
        }
    }
}

/// Starts a telemetry service over `events`.
async fn launch(up: &Upstreams, events: Arc<dyn TelemetryStore>) -> RunningTelemetry {
    let timeouts = UpstreamTimeouts::default();
    let options = TelemetryOptions {
        // Policy changes in a scenario are seen at once.
        policy_cache_ttl: std::time::Duration::ZERO,
        ..TelemetryOptions::default()
    };
    let policies = PolicyStore::new(
        &up.url,
        None,
        &up.service_token,
        &timeouts,
        false,
        options.policy_cache_ttl,
    )
    .unwrap();
    let upstream = Upstream::new(&up.url, None, &up.service_token, &timeouts, false).unwrap();
    let authenticator = IntrospectingAuthenticator::new(upstream, KeyCacheOptions::default(), Arc::new(NoMetrics));
    let credentials = Credentials::new(Some(up.operator_key.clone()), Some(up.service_token.clone())).unwrap();
    RunningTelemetry::start(
        events,
        policies,
        None,
        up.bus.clone(),
        credentials,
        Arc::new(authenticator),
        TelemetryServeOptions {
            grpc: Some(ServerConfig::new(
                SocketAddr::from(([127, 0, 0, 1], 0)),
                Mode::Distributed,
            )),
            telemetry: options,
        },
    )
    .await
    .unwrap()
}

/// A telemetry service on a runtime of its own ([`Stack::start_killable`]).
pub struct Killable {
    runtime: Option<tokio::runtime::Runtime>,
    pub url: String,
}

impl Killable {
    /// Kills the service: every task of its runtime is dropped where it stands.
    pub fn kill(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }

    pub async fn client(&self) -> TelemetryServiceClient<Channel> {
        TelemetryServiceClient::new(
            tonic::transport::Endpoint::from_shared(self.url.clone())
                .unwrap()
                .connect()
                .await
                .unwrap(),
        )
    }
}

impl Drop for Killable {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One tenant's cluster.
#[derive(Clone)]
pub struct Tenant {
    pub id: String,
    pub admin_key: String,
    pub cluster_id: String,
    pub connector_key: String,
}

pub struct Stack {
    pub store: TestServer,
    pub telemetry: Option<RunningTelemetry>,
    pub events: Arc<dyn TelemetryStore>,
    pub tenant: Tenant,
}

/// Embedded: a file beside the policy store's; distributed: the same database, the
/// service's own tables.
async fn sql_store(store: &TestServer) -> SqlStore {
    SqlStore::connect(&store.service_database_url("telemetry.db"))
        .await
        .unwrap()
}

impl Stack {
    /// A stack whose tenant's policy has `xdrEnabled: true` and no rulesets.
    pub async fn start(mode: Mode) -> Stack {
        let store = TestServer::in_mode(mode).await.unwrap();
        let tenant = Stack::tenant_in(
            &store,
            "default",
            &store.admin_key.clone(),
            &policy("guard", true, None),
        )
        .await;
        let events: Arc<dyn TelemetryStore> = Arc::new(sql_store(&store).await);
        let mut stack = Stack {
            store,
            telemetry: None,
            events,
            tenant,
        };
        stack.start_service().await;
        stack
    }

    /// Starts (again) the service over the stack's store.
    pub async fn start_service(&mut self) {
        let running = launch(&Upstreams::of(&self.store), self.events.clone()).await;
        self.telemetry = Some(running);
    }

    /// Starts the service on a runtime of its own, which [`Killable::kill`] drops at once: no
    /// drain, no answer, no ack, as when the process is killed. Its store connections are
    /// its own too (they die with it).
    pub async fn start_killable(&self) -> Killable {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let upstreams = Upstreams::of(&self.store);
        let data_url = match self.store.data_dir() {
            Some(dir) => portcullis_test_kit::sqlite_url(&dir.join("telemetry.db")),
            None => self.store.database_url.clone(),
        };
        let (started, url) = tokio::sync::oneshot::channel();
        runtime.spawn(async move {
            let events: Arc<dyn TelemetryStore> = Arc::new(SqlStore::connect(&data_url).await.unwrap());
            let running = launch(&upstreams, events).await;
            let _ = started.send(running.url().unwrap().to_owned());
            // Runs until its runtime is dropped.
            let _ = running.wait().await;
        });
        let url = url.await.unwrap();
        Killable {
            runtime: Some(runtime),
            url,
        }
    }

    /// Another replica of the service over the same store and bus (the caller stops it).
    pub async fn start_replica(&self) -> RunningTelemetry {
        launch(&Upstreams::of(&self.store), self.events.clone()).await
    }

    /// Stops the service (drained).
    pub async fn stop_service(&mut self) {
        if let Some(running) = self.telemetry.take() {
            running.stop().await.unwrap();
        }
    }

    /// A policy (`document`) assigned to a new cluster `c1` of tenant `id`.
    pub async fn tenant_in(store: &TestServer, id: &str, admin_key: &str, document: &str) -> Tenant {
        let mut admin = Api::new(store, admin_key).await;
        let created = admin.create_policy(document).await.unwrap();
        let registered = admin.register_cluster("c1", by_name(&created.name)).await.unwrap();
        Tenant {
            id: id.to_owned(),
            admin_key: admin_key.to_owned(),
            cluster_id: registered.cluster.unwrap().id,
            connector_key: registered.connector_key,
        }
    }

    /// A new tenant `id` whose cluster's policy is `document`.
    pub async fn other_tenant(&self, id: &str, document: &str) -> Tenant {
        let mut operator = Api::new(&self.store, &self.store.operator_key).await;
        let admin_key = operator.create_tenant(id).await.unwrap();
        Stack::tenant_in(&self.store, id, &admin_key, document).await
    }

    pub async fn client(&self) -> TelemetryServiceClient<Channel> {
        let url = self.telemetry.as_ref().unwrap().url().unwrap().to_owned();
        let channel = tonic::transport::Endpoint::from_shared(url)
            .unwrap()
            .connect()
            .await
            .unwrap();
        TelemetryServiceClient::new(channel)
    }

    /// Ingests `events` (Falco JSON) with `key` (a connector key: its own cluster).
    pub async fn ingest(&self, key: &str, events: &[String]) -> pt::IngestEventsResponse {
        let message = pt::IngestEventsRequest {
            cluster: None,
            events_json: events.iter().map(|e| Bytes::from(e.clone().into_bytes())).collect(),
        };
        self.client()
            .await
            .ingest_events(authed(key, tokio_stream::iter(vec![message])))
            .await
            .unwrap()
            .into_inner()
    }

    /// Searches with `key` over the default range.
    pub async fn search(&self, key: &str, query: &str) -> pt::SearchEventsResponse {
        self.client()
            .await
            .search_events(authed(
                key,
                pt::SearchEventsRequest {
                    query: query.to_owned(),
                    time_range: None,
                    page: Some(pc::PageRequest {
                        page_size: 1000,
                        page_token: String::new(),
                    }),
                },
            ))
            .await
            .unwrap()
            .into_inner()
    }

    /// Waits until `key`'s search for `query` finds `n` events and the service writes no
    /// batch: what search finds is then correlated too (an event is searchable as soon as its
    /// batch is stored, correlated just after), so what a test sends next comes after it.
    pub async fn wait_found(&self, key: &str, query: &str, n: u64) {
        portcullis_test_kit::eventually(std::time::Duration::from_secs(20), async || {
            let found = self.search(key, query).await.total;
            if found != n {
                return Err(format!("{found} found"));
            }
            let pipeline = self.telemetry.as_ref().unwrap().telemetry().ingestor().pipeline();
            match pipeline.counters().writing() {
                0 => Ok(()),
                writing => Err(format!("{found} found, {writing} batches being written")),
            }
        })
        .await;
    }

    /// The alerts of `key`'s tenant.
    pub async fn alerts(&self, key: &str) -> Vec<pt::Alert> {
        self.client()
            .await
            .list_alerts(authed(key, pt::ListAlertsRequest::default()))
            .await
            .unwrap()
            .into_inner()
            .alerts
    }

    /// A new cluster `name` of `tenant` under the policy `policy` (its name): its id and
    /// connector key.
    pub async fn add_cluster(&self, tenant: &Tenant, name: &str, policy: &str) -> (String, String) {
        let mut admin = Api::new(&self.store, &tenant.admin_key).await;
        let registered = admin.register_cluster(name, by_name(policy)).await.unwrap();
        (registered.cluster.unwrap().id, registered.connector_key)
    }

    /// Publishes `envelope` on the bus under its own topic, as its stage does.
    pub async fn publish_envelope(&self, envelope: &pe::EventEnvelope) {
        self.store
            .bus
            .publish(Event::new(
                envelope.event_id.as_str(),
                envelope.tenant_id.as_str(),
                envelope.topic.as_str(),
                Bytes::from(envelope.encode_to_vec()),
            ))
            .await
            .unwrap();
    }

    /// Publishes an admission decision of `tenant` on the bus, as admission does.
    pub async fn publish_admission(
        &self,
        tenant: &Tenant,
        event_id: &str,
        allowed: bool,
        violation: Option<pc::Action>,
        kind: &str,
        name: &str,
    ) {
        let object = pc::WorkloadRef {
            kind: kind.into(),
            namespace: "prod".into(),
            name: name.into(),
            ..Default::default()
        };
        let violations: Vec<pc::Violation> = violation
            .map(|action| pc::Violation {
                rule_type: "containerSecurityContext".into(),
                action: action as i32,
                message: "containerSecurityContext violates rule with properties { privileged:true }".into(),
                containers: vec!["app".into()],
                ..Default::default()
            })
            .into_iter()
            .collect();
        let summary = pe::AdmissionDecisionSummary {
            uid: event_id.into(),
            cluster_id: tenant.cluster_id.clone(),
            operation: "CREATE".into(),
            subresource: String::new(),
            object: Some(object.clone()),
            owner: None,
            allowed,
            basis: pa::DecisionBasis::Evaluated as i32,
            policy_id: "p".into(),
            policy_revision: 1,
            decided_at: None,
        };
        let decision = (!violations.is_empty()).then(|| pa::Decision {
            allowed,
            violations,
            object: Some(object),
            ..Default::default()
        });
        let envelope = pe::EventEnvelope {
            event_id: event_id.into(),
            tenant_id: tenant.id.clone(),
            topic: Topic::AdmissionDecision.as_str().into(),
            occurred_at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
            trace: None,
            producer: "admission".into(),
            payload: Some(pe::event_envelope::Payload::AdmissionDecision(pe::AdmissionDecision {
                summary: Some(summary),
                decision,
                ..Default::default()
            })),
        };
        self.store
            .bus
            .publish(Event::new(
                event_id,
                tenant.id.as_str(),
                Topic::AdmissionDecision.as_str(),
                Bytes::from(envelope.encode_to_vec()),
            ))
            .await
            .unwrap();
    }
}

/// A Falco event of `rule` in pod `pod` (namespace `prod`, a Deployment `workload`'s pod
/// when given), `seconds_ago` before now.
pub fn falco(rule: &str, pod: &str, workload: Option<&str>, seconds_ago: i64) -> String {
    let at = (OffsetDateTime::now_utc() - time::Duration::seconds(seconds_ago))
        .format(&Rfc3339)
        .unwrap();
    let mut labels = json!({"app": pod});
    let mut pod_name = pod.to_owned();
    if let Some(w) = workload {
        labels = json!({"app": w, "pod-template-hash": "7c9f8d6b5"});
        pod_name = format!("{w}-7c9f8d6b5-{pod}");
    }
    json!({
        "output": format!("{at}: Notice {rule} (k8s.ns=prod k8s.pod={pod_name})"),
        "priority": "Warning",
        "rule": rule,
        "time": at,
        "source": "syscall",
        "output_fields": {
            "container.name": "app",
            "container.image.repository": "registry.example/web",
            "container.image.tag": "1.2",
            "k8s.ns.name": "prod",
            "k8s.pod.name": pod_name,
            "k8s.pod.labels": labels,
        },
        "hostname": "node-1",
    })
    .to_string()
}
