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
//! - Memory is bounded: the admissions are read a page at a time (at most one page per
//!   judging task in memory), each task remembers at most [`MEMO_CAPACITY`] distinct
//!   projections, and only the per-workload counts are kept.

use std::collections::BTreeMap;

use portcullis_engine::evaluate::CompiledPolicy;
use portcullis_engine::policy::Action;
use std::sync::Arc;

use futures::stream::{FuturesUnordered, StreamExt};
use portcullis_engine::replay::{ClusterSettings, ReplayMemo, ReplayReport, Replayer};
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
pub const PAGE_SIZE: u32 = 1000;

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

/// Whether a recorded decision had a log-only violation; `None` when its violations do not
/// read back.
fn logged(a: &RecordedAdmission) -> Option<bool> {
    let violations: Vec<Violation> = serde_json::from_str(&a.violations_json).ok()?;
    Some(violations.iter().any(|v| v.action == Action::Log))
}

/// The draft policy document (YAML or JSON) compiled by the engine; a bad draft is
/// `InvalidArgument` with the engine's message.
pub fn compile_draft(document: &str) -> Result<CompiledPolicy, TelemetryError> {
    CompiledPolicy::from_text(document).map_err(|e| TelemetryError::InvalidArgument(format!("document: {e}")))
}

/// Distinct projections each judging task remembers (about 1 KB each).
const MEMO_CAPACITY: usize = 20_000;

/// Judges one page of recorded admissions into `memo` (a blocking task's body).
fn judge_page(
    draft: &CompiledPolicy,
    clusters: &BTreeMap<String, ClusterSettings>,
    now: OffsetDateTime,
    tenant: &str,
    page: &[RecordedAdmission],
    memo: &mut ReplayMemo,
    unreadable: &mut u64,
) {
    let replayer = Replayer::new(draft, &MemoryScanStore::EMPTY, now, clusters);
    for a in page {
        match logged(a) {
            Some(was_logged) => replayer.replay_stored(memo, &a.cluster_id, &a.projection, !a.allowed, was_logged),
            None => {
                tracing::warn!(%tenant, event = %a.event_id, "a recorded admission's violations do not read back: counted unreadable");
                *unreadable += 1;
            }
        }
    }
}

/// What a judging task hands back: its memo and the admissions it found unreadable.
type Judging = (ReplayMemo, u64);

/// Replays `tenant`'s recorded admissions that pass `filter` with `draft`.
///
/// Pages are read one after another and judged on blocking tasks, one per core at most, while
/// the next page is read. Each task keeps a [`ReplayMemo`]: a projection recorded again in the
/// same cluster (a workload's pods, re-admitted unchanged) is judged once per task, not once
/// per admission (the engine's `Replayer::replay_stored` says why that is sound: the judging
/// time is this replay's `now`, the scan results a fixed empty store). The counts are those
/// of judging every admission one by one.
pub async fn replay(
    store: &dyn TelemetryStore,
    policies: &PolicyStore,
    tenant: &str,
    draft: CompiledPolicy,
    filter: &AdmissionFilter,
) -> Result<ReplayReport, TelemetryError> {
    let now = OffsetDateTime::now_utc();
    let draft = Arc::new(draft);
    let tenant_id: Arc<str> = Arc::from(tenant);
    let mut clusters: Arc<BTreeMap<String, ClusterSettings>> = Arc::new(BTreeMap::new());
    let workers = std::thread::available_parallelism().map_or(2, usize::from).clamp(1, 4);
    let mut idle: Vec<Judging> = (0..workers).map(|_| (ReplayMemo::new(MEMO_CAPACITY), 0)).collect();
    let mut running = FuturesUnordered::new();
    let mut page = PageRequest {
        size: PAGE_SIZE,
        token: None,
    };
    loop {
        let listed = store.admissions(tenant, filter, &page).await?;
        for a in &listed.items {
            if !clusters.contains_key(a.cluster_id.as_str()) {
                let settings = cluster_settings(policies, tenant, &a.cluster_id).await?;
                Arc::make_mut(&mut clusters).insert(a.cluster_id.to_string(), settings);
            }
        }
        let (mut memo, mut unreadable) = match idle.pop() {
            Some(free) => free,
            None => joined(running.next().await)?,
        };
        let (draft, clusters, tenant_id) = (Arc::clone(&draft), Arc::clone(&clusters), Arc::clone(&tenant_id));
        let items = listed.items;
        running.push(tokio::task::spawn_blocking(move || {
            judge_page(&draft, &clusters, now, &tenant_id, &items, &mut memo, &mut unreadable);
            (memo, unreadable)
        }));
        match listed.next {
            Some(next) => page.token = Some(next),
            None => break,
        }
    }
    let mut report = ReplayReport::default();
    for (memo, unreadable) in idle {
        report.merge(memo.finish());
        report.unreadable += unreadable;
    }
    while let Some(done) = running.next().await {
        let (memo, unreadable) = joined(Some(done))?;
        report.merge(memo.finish());
        report.unreadable += unreadable;
    }
    Ok(report)
}

/// A finished judging task's memo; a task that panicked (a bug) is an internal error.
fn joined(done: Option<Result<Judging, tokio::task::JoinError>>) -> Result<Judging, TelemetryError> {
    match done {
        Some(Ok(judging)) => Ok(judging),
        Some(Err(e)) => Err(TelemetryError::Internal(format!("replay task: {e}"))),
        None => Err(TelemetryError::Internal(
            "replay: no judging task to wait for".to_owned(),
        )),
    }
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
