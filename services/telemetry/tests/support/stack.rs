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

use std::sync::Arc;

use bytes::Bytes;
use portcullis_bus::Event;
use portcullis_domain::Topic;
use portcullis_integration_tests::store::{Api, by_name};
use portcullis_policy_client::keys::{IntrospectingAuthenticator, KeyCacheOptions};
use portcullis_policy_client::metrics::NoMetrics;
use portcullis_policy_client::{Upstream, UpstreamTimeouts};
use portcullis_policy_store::testing::{TestServer, authed, loopback_listener};
use portcullis_proto::admission::v1 as pa;
use portcullis_proto::common::v1 as pc;
use portcullis_proto::events::v1 as pe;
use portcullis_proto::telemetry::v1 as pt;
use portcullis_proto::telemetry::v1::telemetry_service_client::TelemetryServiceClient;
use portcullis_server::Mode;
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
        let timeouts = UpstreamTimeouts::default();
        let options = TelemetryOptions {
            // Policy changes in a scenario are seen at once.
            policy_cache_ttl: std::time::Duration::ZERO,
            ..TelemetryOptions::default()
        };
        let policies = PolicyStore::new(
            &self.store.url,
            None,
            &self.store.service_token,
            &timeouts,
            false,
            options.policy_cache_ttl,
        )
        .unwrap();
        let upstream = Upstream::new(&self.store.url, None, &self.store.service_token, &timeouts, false).unwrap();
        let authenticator =
            IntrospectingAuthenticator::new(upstream, KeyCacheOptions::default(), std::sync::Arc::new(NoMetrics));
        let credentials = self.store.credentials().unwrap();
        let running = RunningTelemetry::start(
            self.events.clone(),
            policies,
            None,
            self.store.bus.clone(),
            credentials,
            Arc::new(authenticator),
            TelemetryServeOptions {
                grpc: Some(loopback_listener()),
                telemetry: options,
            },
        )
        .await
        .unwrap();
        self.telemetry = Some(running);
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
