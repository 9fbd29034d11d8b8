//! Replay (issue 20, point 5): the admissions recorded from decision events of `xdrEnabled`
//! policies, judged again with a draft policy by the engine's [`Replayer`].
//!
//! # Choices
//!
//! - Recorded: every admission decision event that carries the reviewed pod projection
//!   (admission sets it only for policies with `xdrEnabled: true`; an event of a cluster whose
//!   policy now says `xdrEnabled: false` is neither stored nor recorded).
//! - Without a cluster, every recorded admission of the tenant is replayed (whatever policy
//!   each cluster has); `--cluster` narrows it to one.
//! - Each cluster's excluded namespaces, trusted images and failure mode are the ones it has
//!   now (the policy store's view); a cluster the policy store no longer knows is replayed with
//!   none and the default failure mode (fail-open). Scan-based rules are judged with no scan results and signature rules from the
//!   verdicts recorded (see [`portcullis_engine::replay`]): what cannot be judged is counted
//!   as `not_judged`, never passed silently.
//! - Memory is bounded: the admissions are read a page at a time; only the per-workload
//!   counts are kept.

use std::collections::BTreeMap;

use portcullis_engine::evaluate::CompiledPolicy;
use portcullis_engine::policy::Action;
use portcullis_engine::projection::ReviewedPod;
use portcullis_engine::replay::{self as engine, ClusterSettings, ReplayReport, Replayer};
use portcullis_engine::scan::MemoryScanStore;
use portcullis_kit::upstream::ClusterSel;
use portcullis_proto::common::v1 as pc;
use portcullis_proto::events::v1 as pe;
use time::OffsetDateTime;

use crate::error::TelemetryError;
use crate::event::SecurityEvent;
use crate::policies::PolicyStore;
use crate::store::{AdmissionFilter, PageRequest, RecordedAdmission, TelemetryStore};

/// Recorded admissions read per page during a replay.
const PAGE_SIZE: u32 = 1000;

/// One violation as recorded (`violations_json` is a list of these).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Violation {
    rule_type: String,
    action: Action,
}

/// The recorded admission of an admission decision event, when it carries the reviewed pod
/// projection; `event` is its security event (tenant, cluster, workload already read).
pub fn recorded_admission(envelope: &pe::EventEnvelope, event: &SecurityEvent) -> Option<RecordedAdmission> {
    let Some(pe::event_envelope::Payload::AdmissionDecision(d)) = &envelope.payload else {
        return None;
    };
    if d.reviewed_pod_json.is_empty() {
        return None;
    }
    let summary = d.summary.as_ref()?;
    let violations: Vec<Violation> = d
        .decision
        .as_ref()
        .map(|full| {
            full.violations
                .iter()
                .map(|v| Violation {
                    rule_type: v.rule_type.clone(),
                    action: match pc::Action::try_from(v.action) {
                        Ok(pc::Action::Block) => Action::Block,
                        Ok(pc::Action::Log) => Action::Log,
                        _ => Action::None,
                    },
                })
                .collect()
        })
        .unwrap_or_default();
    Some(RecordedAdmission {
        tenant_id: event.tenant_id.clone(),
        event_id: event.id.clone(),
        cluster_id: event.cluster_id.clone(),
        namespace: event.namespace.clone(),
        workload: event.workload.clone(),
        decided_at: event.occurred_at,
        allowed: summary.allowed,
        // Serialising plain strings and enums cannot fail; an empty list is the fallback.
        violations_json: serde_json::to_string(&violations).unwrap_or_else(|_| "[]".to_owned()),
        projection: d.reviewed_pod_json.to_vec(),
    })
}

/// The engine's form of a stored admission; `None` when it cannot be read back.
fn to_engine(a: &RecordedAdmission) -> Option<engine::RecordedAdmission> {
    let pod = ReviewedPod::from_json(&a.projection).ok()?;
    let violations: Vec<Violation> = serde_json::from_str(&a.violations_json).ok()?;
    Some(engine::RecordedAdmission {
        cluster_id: a.cluster_id.to_string(),
        pod,
        allowed: a.allowed,
        violations: violations
            .into_iter()
            .map(|v| engine::RecordedViolation {
                rule_type: v.rule_type,
                action: v.action,
            })
            .collect(),
    })
}

/// The draft policy document (YAML or JSON) compiled by the engine; a bad draft is
/// `InvalidArgument` with the engine's message.
pub fn compile_draft(document: &str) -> Result<CompiledPolicy, TelemetryError> {
    CompiledPolicy::from_text(document).map_err(|e| TelemetryError::InvalidArgument(format!("document: {e}")))
}

/// Replays `tenant`'s recorded admissions that pass `filter` with `draft`, a page at a time.
pub async fn replay(
    store: &dyn TelemetryStore,
    policies: &PolicyStore,
    tenant: &str,
    draft: &CompiledPolicy,
    filter: &AdmissionFilter,
) -> Result<ReplayReport, TelemetryError> {
    let now = OffsetDateTime::now_utc();
    let mut clusters: BTreeMap<String, ClusterSettings> = BTreeMap::new();
    let mut report = ReplayReport::default();
    let mut page = PageRequest {
        size: PAGE_SIZE,
        token: None,
    };
    loop {
        let listed = store.admissions(tenant, filter, &page).await?;
        for a in &listed.items {
            if !clusters.contains_key(a.cluster_id.as_str()) {
                let settings = cluster_settings(policies, tenant, &a.cluster_id).await?;
                clusters.insert(a.cluster_id.to_string(), settings);
            }
        }
        let replayer = Replayer::new(draft, &MemoryScanStore::EMPTY, now, &clusters);
        for a in &listed.items {
            match to_engine(a) {
                Some(record) => replayer.replay(record, &mut report),
                None => {
                    tracing::warn!(%tenant, event = %a.event_id, "a recorded admission does not read back: counted unreadable");
                    report.unreadable += 1;
                }
            }
        }
        match listed.next {
            Some(next) => page.token = Some(next),
            None => break,
        }
    }
    Ok(report)
}

/// The cluster's excluded namespaces, trusted images and failure mode as it has them now; the
/// defaults for a cluster the policy store does not know (deleted since).
async fn cluster_settings(
    policies: &PolicyStore,
    tenant: &str,
    cluster_id: &str,
) -> Result<ClusterSettings, TelemetryError> {
    match policies.cluster(tenant, &ClusterSel::Id(cluster_id.to_owned())).await {
        Ok(view) => Ok(ClusterSettings {
            excluded_namespaces: view.excluded_namespaces.clone(),
            trusted_images: view.trusted_images.clone(),
            failure_mode: view.failure_mode,
        }),
        Err(TelemetryError::NotFound(why)) => {
            tracing::debug!(%tenant, cluster = %cluster_id, %why, "replaying admissions of a cluster the policy store does not know");
            Ok(ClusterSettings::default())
        }
        Err(e) => Err(e),
    }
}
