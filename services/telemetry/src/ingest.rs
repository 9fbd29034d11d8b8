//! What happens to an event before the write path: its time is checked against the
//! retention (refused and counted otherwise), a runtime detection is matched to its
//! cluster's runtime rulesets (an isolate or terminate goes out on `runtime.mitigation` for
//! the continuous service to deliver, whatever `xdrEnabled` says), and an event of a cluster
//! whose policy has `xdrEnabled: false` is counted, not stored. An admission decision event
//! that carries the reviewed pod projection is also recorded for replay
//! ([`crate::replay`]), in the same write as its event (acked only once both are stored).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use portcullis_bus::{Bus, Event};
use portcullis_domain::Topic;
use portcullis_engine::runtime::{RuntimeEvent, RuntimeMitigation};
use portcullis_kit::client::for_tenant;
use portcullis_kit::upstream::{ClusterSel, ServiceChannel};
use portcullis_proto::common::v1 as pc;
use portcullis_proto::continuous::v1 as pv;
use portcullis_proto::continuous::v1::continuous_service_client::ContinuousServiceClient;
use portcullis_proto::events::v1 as pe;
use prost::Message as _;
use time::OffsetDateTime;

use crate::error::TelemetryError;
use crate::event::{SecurityEvent, Source, check_time};
use crate::pipeline::Pipeline;
use crate::policies::{ClusterView, PolicyStore};

/// The producer named in the envelopes this service publishes.
pub const PRODUCER: &str = "telemetry";

/// Counters of ingest.
#[derive(Debug, Default)]
pub struct IngestCounters {
    refused: AtomicU64,
    not_stored: AtomicU64,
    unreadable: AtomicU64,
    mitigations: AtomicU64,
    mitigations_failed: AtomicU64,
    pod_lookups_failed: AtomicU64,
}

impl IngestCounters {
    /// Events refused for their time (older than the retention, or in the future).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Events not stored because their cluster's policy has `xdrEnabled: false`.
    pub fn not_stored(&self) -> u64 {
        self.not_stored.load(Ordering::Relaxed)
    }

    /// Events that could not be read.
    pub fn unreadable(&self) -> u64 {
        self.unreadable.load(Ordering::Relaxed)
    }

    /// Mitigations published on `runtime.mitigation`.
    pub fn mitigations(&self) -> u64 {
        self.mitigations.load(Ordering::Relaxed)
    }

    /// Mitigations the bus refused (logged).
    pub fn mitigations_failed(&self) -> u64 {
        self.mitigations_failed.load(Ordering::Relaxed)
    }

    /// Pod label lookups at the continuous service that failed (matching went on with the
    /// labels known).
    pub fn pod_lookups_failed(&self) -> u64 {
        self.pod_lookups_failed.load(Ordering::Relaxed)
    }
}

/// The answer to one batch of runtime events.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IngestOutcome {
    /// Events stored (or already stored).
    pub accepted: u64,
    /// Events that could not be read.
    pub rejected: u64,
    /// Events refused for their time.
    pub refused: u64,
    /// Events counted but not stored (`xdrEnabled: false`).
    pub not_stored: u64,
    /// Mitigations published.
    pub mitigations: u64,
    /// Why events were rejected or refused, by index in the batch.
    pub errors: Vec<pc::ItemError>,
}

/// The ingest step (cheap to clone).
#[derive(Clone)]
pub struct Ingestor {
    pipeline: Pipeline,
    policies: PolicyStore,
    bus: Bus,
    continuous: Option<ServiceChannel>,
    pod_deadline: Duration,
    retention: Duration,
    counters: Arc<IngestCounters>,
}

impl std::fmt::Debug for Ingestor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingestor").finish_non_exhaustive()
    }
}

fn item_error(index: usize, code: tonic::Code, message: String) -> pc::ItemError {
    pc::ItemError {
        code: code as u32,
        message,
        field: format!("events_json[{index}]"),
    }
}

impl Ingestor {
    /// The ingest step over `pipeline`, reading policies through `policies`, publishing
    /// mitigations on `bus`, and asking the continuous service (when `continuous` is given)
    /// for the labels a runtime event lacks.
    pub fn new(
        pipeline: Pipeline,
        policies: PolicyStore,
        bus: Bus,
        continuous: Option<ServiceChannel>,
        pod_deadline: Duration,
        retention: Duration,
    ) -> Ingestor {
        Ingestor {
            pipeline,
            policies,
            bus,
            continuous,
            pod_deadline,
            retention,
            counters: Arc::new(IngestCounters::default()),
        }
    }

    /// The write path.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// The policy store client.
    pub fn policies(&self) -> &PolicyStore {
        &self.policies
    }

    /// The counters.
    pub fn counters(&self) -> &IngestCounters {
        &self.counters
    }

    /// Ingests one message of Falco JSON events of `tenant`'s cluster `view`.
    pub async fn runtime(
        &self,
        tenant: &str,
        view: &ClusterView,
        raws: &[Bytes],
    ) -> Result<IngestOutcome, TelemetryError> {
        let now = OffsetDateTime::now_utc();
        let mut outcome = IngestOutcome::default();
        let mut keep = Vec::with_capacity(raws.len());
        for (i, raw) in raws.iter().enumerate() {
            let event = match SecurityEvent::from_falco_json(tenant, &view.cluster_id, raw) {
                Ok(e) => e,
                Err(e) => {
                    outcome.rejected += 1;
                    self.counters.unreadable.fetch_add(1, Ordering::Relaxed);
                    outcome
                        .errors
                        .push(item_error(i, tonic::Code::InvalidArgument, e.to_string()));
                    continue;
                }
            };
            if let Err(refusal) = check_time(event.occurred_at, now, self.retention) {
                outcome.refused += 1;
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                outcome
                    .errors
                    .push(item_error(i, tonic::Code::OutOfRange, refusal.to_string()));
                continue;
            }
            // Mitigation is the policy's, whatever xdrEnabled says.
            if self.mitigate(tenant, view, &event).await {
                outcome.mitigations += 1;
            }
            if !view.xdr_enabled {
                outcome.not_stored += 1;
                self.counters.not_stored.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            keep.push(event);
        }
        let kept = keep.len() as u64;
        self.pipeline.write(keep).await?;
        outcome.accepted = kept;
        Ok(outcome)
    }

    /// Ingests one bus event of `tenant` (the bus subject's tenant, which overrides what the
    /// envelope says). `Ok` when it is stored, or deliberately not (unreadable, refused,
    /// `xdrEnabled: false`: counted and logged); `Err` when it should come back.
    pub async fn bus_event(&self, tenant: &str, envelope: &pe::EventEnvelope) -> Result<(), TelemetryError> {
        let mut event = match SecurityEvent::from_envelope(envelope) {
            Ok(Some(e)) => e,
            Ok(None) => return Ok(()),
            Err(e) => {
                self.counters.unreadable.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%tenant, error = %e, "ignoring an unreadable bus event");
                return Ok(());
            }
        };
        event.tenant_id = tenant.into();
        if let Err(refusal) = check_time(event.occurred_at, OffsetDateTime::now_utc(), self.retention) {
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%tenant, event = %event.id, reason = %refusal, "refusing a bus event for its time");
            return Ok(());
        }
        if !event.cluster_id.is_empty() {
            match self
                .policies
                .cluster(tenant, &ClusterSel::Id(event.cluster_id.to_string()))
                .await
            {
                Ok(view) if !view.xdr_enabled => {
                    self.counters.not_stored.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                Ok(_) => {}
                // A deleted cluster's last events are still kept (no policy says otherwise).
                Err(TelemetryError::NotFound(why)) => {
                    tracing::debug!(%tenant, cluster = %event.cluster_id, %why, "storing an event of a cluster the policy store does not know");
                }
                Err(e) => return Err(e),
            }
        }
        let admissions = crate::replay::recorded_admission(envelope, &event)
            .into_iter()
            .collect();
        self.pipeline.write_with_admissions(vec![event], admissions).await
    }

    /// Matches a runtime event to the cluster's rulesets and publishes an isolate or
    /// terminate; true when one was published.
    async fn mitigate(&self, tenant: &str, view: &ClusterView, event: &SecurityEvent) -> bool {
        if event.source != Source::Runtime || view.rulesets.is_empty() {
            return false;
        }
        let labels = self.labels(tenant, view, event).await;
        let image = (!event.image.is_empty()).then_some(event.image.as_str());
        let matched = view.rulesets.match_event(
            &RuntimeEvent {
                rule: &event.rule,
                namespace: &event.namespace,
                pod_labels: &labels,
                image,
            },
            &view.excluded_namespaces,
            &view.trusted_images,
        );
        if let Some(exemption) = matched.exemption {
            tracing::info!(%tenant, cluster = %view.cluster_id, pod = %event.pod, rule = %event.rule, ?exemption, "a runtime detection matched rulesets but the pod is exempt");
        }
        let mitigation = match matched.mitigation {
            Some(RuntimeMitigation::Isolate) => pc::Mitigation::Isolate,
            Some(RuntimeMitigation::Terminate) => pc::Mitigation::Terminate,
            Some(RuntimeMitigation::Log) | None => return false,
        };
        let mut ruleset_ids: Vec<String> = matched.matched.iter().map(|m| m.ruleset_id.clone()).collect();
        ruleset_ids.dedup();
        let payload = pe::RuntimeMitigation {
            cluster_id: view.cluster_id.clone(),
            pod: Some(pc::PodKey {
                namespace: event.namespace.to_string(),
                name: event.pod.to_string(),
                uid: event.pod_uid.to_string(),
            }),
            mitigation: mitigation as i32,
            rule_ids: vec![event.rule.to_string()],
            ruleset_ids,
            policy_id: view.policy.0.clone(),
            policy_revision: view.policy.1,
            event_ids: vec![event.id.to_string()],
            alert_id: String::new(),
        };
        // Derived from the event, so that a replayed ingest publishes the same id (the bus
        // and the continuous service drop the repeat).
        let event_id = format!("rtm-{}", event.id);
        let envelope = pe::EventEnvelope {
            event_id: event_id.clone(),
            tenant_id: tenant.to_owned(),
            topic: Topic::RuntimeMitigation.as_str().to_owned(),
            occurred_at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
            trace: None,
            producer: PRODUCER.to_owned(),
            payload: Some(pe::event_envelope::Payload::RuntimeMitigation(payload)),
        };
        let mut bus_event = Event::new(
            event_id,
            tenant,
            Topic::RuntimeMitigation.as_str(),
            Bytes::from(envelope.encode_to_vec()),
        );
        portcullis_kit::trace::inject_current(&mut bus_event.headers);
        match self.bus.publish(bus_event).await {
            Ok(_) => {
                self.counters.mitigations.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(e) => {
                self.counters.mitigations_failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%tenant, cluster = %view.cluster_id, pod = %event.pod, rule = %event.rule, error = %e, "publishing a runtime mitigation failed");
                false
            }
        }
    }

    /// The pod's labels: the event's, else the continuous service's inventory; a failed
    /// lookup is logged and counted, and matching goes on with no labels.
    async fn labels(&self, tenant: &str, view: &ClusterView, event: &SecurityEvent) -> BTreeMap<String, String> {
        if let Some(labels) = &event.labels {
            return labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        }
        if event.pod.is_empty() {
            return BTreeMap::new();
        }
        let Some(channel) = &self.continuous else {
            self.counters.pod_lookups_failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%tenant, cluster = %view.cluster_id, pod = %event.pod, "a runtime event without pod labels and no continuous service to ask: matched with no labels");
            return BTreeMap::new();
        };
        match self.get_pod(channel, tenant, view, event).await {
            Ok(labels) => labels,
            Err(why) => {
                self.counters.pod_lookups_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%tenant, cluster = %view.cluster_id, namespace = %event.namespace, pod = %event.pod, %why, "looking up the pod's labels failed: matched with no labels");
                BTreeMap::new()
            }
        }
    }

    async fn get_pod(
        &self,
        channel: &ServiceChannel,
        tenant: &str,
        view: &ClusterView,
        event: &SecurityEvent,
    ) -> Result<BTreeMap<String, String>, String> {
        let mut request = for_tenant(
            tenant,
            pv::GetPodRequest {
                cluster: Some(pc::ResourceRef {
                    r#ref: Some(pc::resource_ref::Ref::Id(view.cluster_id.clone())),
                }),
                namespace: event.namespace.to_string(),
                name: event.pod.to_string(),
            },
        )
        .map_err(|s| s.message().to_owned())?;
        request.set_timeout(self.pod_deadline);
        let mut client = ContinuousServiceClient::new(channel.clone());
        let answer = tokio::time::timeout(self.pod_deadline, client.get_pod(request))
            .await
            .map_err(|_| "the continuous service did not answer in time".to_owned())?
            .map_err(|s| format!("the continuous service answered {:?}: {}", s.code(), s.message()))?
            .into_inner();
        pod_labels(&answer.pod_json)
    }
}

/// `metadata.labels` of a Kubernetes-shaped pod.
fn pod_labels(pod_json: &[u8]) -> Result<BTreeMap<String, String>, String> {
    #[derive(serde::Deserialize)]
    struct Pod {
        #[serde(default)]
        metadata: Meta,
    }
    #[derive(serde::Deserialize, Default)]
    struct Meta {
        #[serde(default)]
        labels: Option<BTreeMap<String, String>>,
    }
    let pod: Pod = serde_json::from_slice(pod_json).map_err(|e| format!("the pod does not read: {e}"))?;
    Ok(pod.metadata.labels.unwrap_or_default())
}
