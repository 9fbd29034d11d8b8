//! The runtime of re-evaluation: read a cluster's pods and findings from the store, judge
//! them with the cluster's policy ([`crate::preview::judge`], the engine's continuous
//! semantics), reconcile ([`crate::findings::reconcile_pod`]) and save the result in one
//! transaction, then publish what changed and tell the replica holding the cluster's command
//! stream that commands wait.
//!
//! Replicas may re-evaluate one cluster at the same time: the save is optimistic (the
//! findings version read), and on a conflict the whole read-judge-save runs again, a few
//! times at most.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use portcullis_bus::Bus;
use portcullis_domain::{ClusterId, TenantId, topic::command_subject};
use portcullis_engine::evaluate::{CompiledPolicy, EvalContext, RunningDecision, Signatures};
use portcullis_engine::policy::Mitigation;
use portcullis_kit::upstream::ClusterSel;
use portcullis_proto::events::v1::FindingTransition;
use time::OffsetDateTime;

use crate::convert::{command_to_proto, stored_finding_to_proto};
use crate::error::ContinuousError;
use crate::events::ContinuousEvents;
use crate::findings::{Command, Outcome, PodState, pod_gone, reconcile_pod};
use crate::inventory::PodProjection;
use crate::policies::{ClusterPolicy, PolicyStore, pod_digests};
use crate::store::{
    CommandOrigin, ContinuousStore, FindingsRead, FindingsSaved, FindingsWrite, NewCommand, StoreError, StoredCommand,
};

/// Read-judge-save rounds at most when other replicas keep changing the cluster's findings.
const MAX_ATTEMPTS: usize = 5;

/// What to re-evaluate in a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// These pods (changed or removed by a sync, or running a digest just scanned).
    Pods(Vec<String>),
    /// Every pod (policy or cluster changed, the sweep, an exception expired).
    Cluster,
}

/// What a re-evaluation did.
#[derive(Debug, Clone, Default)]
pub struct Evaluated {
    /// Pods judged.
    pub judged: usize,
    /// What was written.
    pub saved: FindingsSaved,
    /// When to look at the cluster again: a held-back terminate, or an exception expiring.
    pub again_at: Option<OffsetDateTime>,
}

/// The instants at which exceptions of `policy` expire.
///
/// HOOK: the engine does not expose its exceptions' `expiresAt` yet (issue 19, the
/// `exceptions` work); until it does this has none to give, so an expiring exception is
/// noticed at the next sweep rather than at its expiry. Replace the body with the engine's
/// method when it lands.
pub fn exception_expiries(_policy: &CompiledPolicy) -> Vec<OffsetDateTime> {
    Vec::new()
}

/// Tells the replica holding `tenant`'s `cluster` command stream that commands wait
/// (`pc.<tenant>.cmd.<cluster>`, core NATS: a lost message only delays them until the
/// stream's next poll of the store).
pub async fn notify_commands(bus: &Bus, tenant: &str, cluster: &str) {
    let (Ok(t), Ok(c)) = (TenantId::parse(tenant), ClusterId::parse(cluster)) else {
        tracing::warn!(%tenant, %cluster, "not notifying commands of an unusable tenant or cluster id");
        return;
    };
    let subject = command_subject(&t, &c);
    let headers = portcullis_kit::trace::current_headers();
    if let Err(e) = bus.publish_core_with_headers(&subject, headers, Bytes::new()).await {
        tracing::warn!(%subject, error = %e, "notifying commands failed; the stream's poll will send them");
    }
}

/// Publishes the events of what a save wrote, and notifies the command stream when it
/// stored commands to send.
pub async fn publish_saved(events: &ContinuousEvents, bus: &Bus, tenant: &str, cluster: &str, saved: &FindingsSaved) {
    for f in &saved.opened {
        events.finding(tenant, FindingTransition::Opened, stored_finding_to_proto(f));
    }
    for f in &saved.changed {
        events.finding(tenant, FindingTransition::Updated, stored_finding_to_proto(f));
    }
    for f in &saved.resolved {
        events.finding(tenant, FindingTransition::Resolved, stored_finding_to_proto(f));
    }
    publish_commands(events, bus, tenant, cluster, &saved.commands).await;
}

/// Publishes commands made and notifies the command stream when one is to be sent.
pub async fn publish_commands(
    events: &ContinuousEvents,
    bus: &Bus,
    tenant: &str,
    cluster: &str,
    commands: &[StoredCommand],
) {
    for c in commands {
        events.mitigation(tenant, command_to_proto(c));
    }
    if commands.iter().any(|c| c.command.order.is_sent()) {
        notify_commands(bus, tenant, cluster).await;
    }
}

/// A command of a reconciliation, to store.
pub fn new_command(command: Command) -> NewCommand {
    let rules: Vec<String> = command.rules.into_iter().map(|r| r.0).collect();
    let reason = if rules.is_empty() {
        format!("{}: the violations that called for it cleared", command.order.as_str())
    } else {
        format!("{}: {}", command.order.as_str(), rules.join("; "))
    };
    NewCommand {
        pod: command.pod,
        order: command.order,
        origin: CommandOrigin::Continuous,
        reason,
        rules,
        runtime_rule_ids: Vec::new(),
    }
}

/// The judgement of a cluster whose policy is not assigned: nothing is violated.
fn nothing() -> RunningDecision {
    RunningDecision {
        mitigation: Mitigation::None,
        violations: Vec::new(),
        digests: Vec::new(),
        stage_failures: Vec::new(),
    }
}

/// Judges `pods` with the cluster's policy and reconciles them, and the pods of `gone`,
/// with `read` at `now`; what to save, and the outcome. `unavailable` says why scan
/// summaries not held could not be had.
#[allow(clippy::too_many_arguments)]
pub fn judge_and_reconcile(
    policies: &PolicyStore,
    tenant: &str,
    cluster: &ClusterPolicy,
    pods: &[PodProjection],
    gone: &[String],
    read: FindingsRead,
    now: OffsetDateTime,
    unavailable: &str,
) -> (FindingsWrite, Outcome) {
    let mut findings = read.findings;
    let view = policies.scans().view(tenant, Some(unavailable));
    let ctx = EvalContext {
        now,
        scans: &view,
        digests: &portcullis_engine::evaluate::NoDigests,
        // Continuous scanning verifies no signatures (admission does); a signature rule it
        // cannot decide has no effect here.
        signatures: Signatures::Offline(None),
        excluded_namespaces: &cluster.excluded_namespaces,
        trusted_images: &cluster.trusted_images,
        failure_mode: cluster.failure_mode,
    };
    let mut outcome = Outcome::default();
    let mut states = Vec::with_capacity(pods.len() + gone.len());
    for pod in pods {
        let decision = match &cluster.policy {
            Some(policy) => crate::preview::judge(policy, &ctx, pod),
            None => nothing(),
        };
        let previous = findings.pods.remove(pod.uid()).unwrap_or_default();
        let had = previous != PodState::default();
        let r = reconcile_pod(&cluster.cluster_id, pod, previous, &decision, &mut findings.owners, now);
        outcome.absorb(r.outcome);
        // A compliant pod that had no state needs no row.
        if had || r.state != PodState::default() {
            states.push((pod.uid().to_owned(), r.state));
        }
    }
    for uid in gone {
        if let Some(state) = findings.pods.remove(uid) {
            outcome.resolved.extend(pod_gone(state, now));
            states.push((uid.clone(), PodState::default()));
        }
    }
    let write = FindingsWrite {
        version: read.version,
        pods: states,
        resolved: outcome.resolved.clone(),
        owners: findings.owners,
        commands: outcome.commands.iter().cloned().map(new_command).collect(),
        policy: cluster.used.clone(),
    };
    (write, outcome)
}

/// Re-evaluates clusters (cheap to clone).
#[derive(Clone)]
pub struct Evaluator {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn ContinuousStore>,
    policies: PolicyStore,
    events: ContinuousEvents,
    bus: Bus,
}

impl std::fmt::Debug for Evaluator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evaluator").finish_non_exhaustive()
    }
}

impl Evaluator {
    /// An evaluator over `store`, reading policies from `policies`, publishing to `events`
    /// and notifying command streams on `bus`.
    pub fn new(
        store: Arc<dyn ContinuousStore>,
        policies: PolicyStore,
        events: ContinuousEvents,
        bus: Bus,
    ) -> Evaluator {
        Evaluator {
            inner: Arc::new(Inner {
                store,
                policies,
                events,
                bus,
            }),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn ContinuousStore> {
        &self.inner.store
    }

    /// The policy store client.
    pub fn policies(&self) -> &PolicyStore {
        &self.inner.policies
    }

    /// The events.
    pub fn events(&self) -> &ContinuousEvents {
        &self.inner.events
    }

    /// The bus.
    pub fn bus(&self) -> &Bus {
        &self.inner.bus
    }

    /// Re-evaluates `scope` of `tenant`'s cluster `cluster` (by id) and saves the result.
    /// A cluster the policy store no longer knows is forgotten (its inventory, findings
    /// state and pending commands dropped).
    pub async fn reevaluate(&self, tenant: &str, cluster: &str, scope: &Scope) -> Result<Evaluated, ContinuousError> {
        let policy = match self
            .inner
            .policies
            .cluster(tenant, &ClusterSel::Id(cluster.to_owned()))
            .await
        {
            Ok(p) => p,
            Err(ContinuousError::NotFound(why)) => {
                tracing::info!(%tenant, %cluster, %why, "the cluster is gone; forgetting its inventory and findings");
                self.inner
                    .store
                    .forget_cluster(tenant, cluster, OffsetDateTime::now_utc())
                    .await?;
                return Ok(Evaluated::default());
            }
            Err(e) => return Err(e),
        };
        self.reevaluate_with(tenant, &policy, scope).await
    }

    /// [`Evaluator::reevaluate`] with the cluster's policy already read.
    pub async fn reevaluate_with(
        &self,
        tenant: &str,
        policy: &ClusterPolicy,
        scope: &Scope,
    ) -> Result<Evaluated, ContinuousError> {
        let store = &self.inner.store;
        let cluster = policy.cluster_id.as_str();
        let mut fetched = false;
        let mut unavailable = String::from("no scan summary could be read for it");
        for _ in 0..MAX_ATTEMPTS {
            let (pods, read, gone) = match scope {
                Scope::Pods(uids) => {
                    let pods = store.pods(tenant, cluster, Some(uids)).await?;
                    let read = store.findings(tenant, cluster, Some(uids)).await?;
                    let present: HashSet<&str> = pods.iter().map(PodProjection::uid).collect();
                    let gone: Vec<String> = uids.iter().filter(|u| !present.contains(u.as_str())).cloned().collect();
                    (pods, read, gone)
                }
                Scope::Cluster => {
                    let pods = store.pods(tenant, cluster, None).await?;
                    let read = store.findings(tenant, cluster, None).await?;
                    let present: HashSet<&str> = pods.iter().map(PodProjection::uid).collect();
                    let mut gone: Vec<String> = read
                        .findings
                        .pods
                        .keys()
                        .filter(|u| !present.contains(u.as_str()))
                        .cloned()
                        .collect();
                    gone.sort();
                    (pods, read, gone)
                }
            };
            if !fetched && policy.policy.is_some() {
                let digests: Vec<String> = pods
                    .iter()
                    .flat_map(pod_digests)
                    .collect::<HashSet<_>>()
                    .into_iter()
                    .collect();
                if let Err(e) = self.inner.policies.fetch_scans(tenant, digests).await {
                    unavailable = format!("scan summaries could not be read: {e}");
                }
                fetched = true;
            }
            let now = OffsetDateTime::now_utc();
            let judged = pods.len();
            let (write, outcome) = judge_and_reconcile(
                &self.inner.policies,
                tenant,
                policy,
                &pods,
                &gone,
                read,
                now,
                &unavailable,
            );
            match store.save_findings(tenant, cluster, write, now).await {
                Ok(saved) => {
                    publish_saved(&self.inner.events, &self.inner.bus, tenant, cluster, &saved).await;
                    let expiry = policy
                        .policy
                        .as_deref()
                        .and_then(|p| crate::findings::next_expiry(exception_expiries(p), now));
                    let again_at = match (outcome.retry_at, expiry) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    return Ok(Evaluated {
                        judged,
                        saved,
                        again_at,
                    });
                }
                Err(StoreError::Conflict) => {
                    tracing::debug!(%tenant, %cluster, "findings changed under the re-evaluation; judging again");
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ContinuousError::Unavailable(format!(
            "cluster {cluster}: its findings kept changing during {MAX_ATTEMPTS} re-evaluations"
        )))
    }
}
