//! What re-evaluates whole clusters, or the pods of a digest: the bus work subscription
//! replicas share (`policy.changed`, `cluster.changed`, `scan.result`, and
//! `runtime.mitigation`, which becomes a command), the periodic sweep, and the timers of a
//! held-back terminate or an expiring exception.
//!
//! A delivery is acked once its re-evaluation is saved and nak'ed when it failed (it comes
//! back, to any replica); after [`MAX_ATTEMPTS`] deliveries it is acked with an error in the
//! log, so that one poisoned event cannot occupy the replicas forever (the sweep judges the
//! cluster again anyway).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use portcullis_bus::{Bus, TopicFilter};
use portcullis_domain::Topic;
use portcullis_kit::work::{WorkHandler, WorkOptions, subscribe_work};
use portcullis_proto::events::v1 as pe;
use portcullis_proto::events::v1::event_envelope::Payload;
use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::commands::CommandHub;
use crate::error::ContinuousError;
use crate::evaluate::{Evaluated, Evaluator, Scope};

/// Deliveries of one event at most before it is given up (acked with an error logged).
pub const MAX_ATTEMPTS: u64 = 5;

/// The topics of the work subscription.
pub const TRIGGER_TOPICS: [Topic; 4] = [
    Topic::PolicyChanged,
    Topic::ClusterChanged,
    Topic::ScanResult,
    Topic::RuntimeMitigation,
];

/// Handles trigger events and keeps the timers (cheap to clone).
#[derive(Clone, Debug)]
pub struct Triggers {
    evaluator: Evaluator,
    hub: CommandHub,
    /// Clusters this replica's sweeps judged (shared by clones).
    swept: Arc<AtomicU64>,
    /// Whole-cluster re-evaluations this replica made, and the pods they judged, whatever
    /// triggered them (shared by clones).
    reevaluated: Arc<AtomicU64>,
    /// Pods judged by this replica's re-evaluations (whole clusters and scan-result scopes).
    judged: Arc<AtomicU64>,
}

impl Triggers {
    /// Triggers over `evaluator` and `hub`.
    pub fn new(evaluator: Evaluator, hub: CommandHub) -> Triggers {
        Triggers {
            evaluator,
            hub,
            swept: Arc::new(AtomicU64::new(0)),
            reevaluated: Arc::new(AtomicU64::new(0)),
            judged: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The timers (the evaluator's).
    pub fn timers(&self) -> &Timers {
        self.evaluator.timers()
    }

    /// Re-evaluates a whole cluster (which records when to look at it again).
    pub async fn cluster(&self, tenant: &str, cluster: &str) -> Result<Evaluated, ContinuousError> {
        let evaluated = self.evaluator.reevaluate(tenant, cluster, &Scope::Cluster).await?;
        self.reevaluated.fetch_add(1, Ordering::Relaxed);
        self.judged.fetch_add(evaluated.judged as u64, Ordering::Relaxed);
        Ok(evaluated)
    }

    /// Whole clusters this replica re-evaluated since it started (any trigger, the sweep too).
    pub fn clusters_reevaluated(&self) -> u64 {
        self.reevaluated.load(Ordering::Relaxed)
    }

    /// Pods this replica's re-evaluations judged since it started.
    pub fn pods_judged(&self) -> u64 {
        self.judged.load(Ordering::Relaxed)
    }

    /// Handles one trigger event of `tenant`.
    pub async fn handle(&self, tenant: &str, envelope: &pe::EventEnvelope) -> Result<(), ContinuousError> {
        let store = self.evaluator.store();
        match &envelope.payload {
            // Every cluster of the tenant with an inventory: those of other policies find
            // nothing changed, which costs a judgement but no event.
            Some(Payload::PolicyChanged(_)) => {
                for cluster in store.tenant_clusters(tenant).await? {
                    self.cluster(tenant, &cluster).await?;
                }
            }
            Some(Payload::ClusterChanged(changed)) => {
                if changed.change == pe::ChangeKind::Deleted as i32 {
                    store
                        .forget_cluster(tenant, &changed.cluster_id, OffsetDateTime::now_utc())
                        .await?;
                    self.timers().remove(tenant, &changed.cluster_id);
                } else if judged_by(changed) && store.tenant_clusters(tenant).await?.contains(&changed.cluster_id) {
                    self.cluster(tenant, &changed.cluster_id).await?;
                }
            }
            Some(Payload::ScanResultStored(stored)) => {
                // This replica judges with the new summary at once (others' caches refresh).
                self.evaluator.policies().scans().apply_event(tenant, stored);
                for pods in store.pods_running(tenant, &stored.digest).await? {
                    let evaluated = self
                        .evaluator
                        .reevaluate(tenant, &pods.cluster, &Scope::Pods(pods.uids))
                        .await?;
                    self.judged.fetch_add(evaluated.judged as u64, Ordering::Relaxed);
                }
            }
            Some(Payload::RuntimeMitigation(m)) => match self.hub.runtime(tenant, &envelope.event_id, m).await {
                // A malformed event never gets better: logged, not retried.
                Err(ContinuousError::InvalidArgument(why)) => {
                    tracing::warn!(%tenant, %why, "ignoring an unusable runtime mitigation");
                }
                other => other?,
            },
            _ => {}
        }
        Ok(())
    }

    /// Subscribes to the trigger topics under `durable` (shared by replicas); the work loop
    /// returned (the kit's, `portcullis_kit::work`) runs until `stop`, `max_in_flight`
    /// deliveries at once.
    pub async fn subscribe(
        &self,
        bus: &Bus,
        durable: &str,
        max_in_flight: usize,
        stop: CancellationToken,
    ) -> Result<impl Future<Output = Result<(), String>> + Send + 'static + use<>, ContinuousError> {
        let options = WorkOptions::new(
            "trigger",
            "the sweep will judge its clusters",
            MAX_ATTEMPTS,
            max_in_flight,
        );
        subscribe_work(
            bus,
            durable,
            &TopicFilter::topics(TRIGGER_TOPICS),
            options,
            self.clone(),
            stop,
        )
        .await
        .map_err(|e| ContinuousError::Unavailable(format!("the trigger subscription: {e}")))
    }

    /// Re-evaluates every cluster with an inventory every `interval`, until `stop`.
    pub async fn sweep(&self, interval: Duration, stop: CancellationToken) {
        let interval = interval.max(Duration::from_secs(1));
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate: skip it, the clusters were judged as they synced.
        tick.tick().await;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.sweep_once(interval, &stop).await;
        }
    }

    /// One sweep: every cluster with an inventory that no replica has swept in the last half
    /// `interval` is claimed in the store and judged again (so each cluster is judged about
    /// once per interval, by whichever replica claims it first, not once per replica). How
    /// many clusters this replica judged.
    pub async fn sweep_once(&self, interval: Duration, stop: &CancellationToken) -> usize {
        let store = self.evaluator.store();
        let clusters = match store.clusters().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "the sweep could not list the clusters; trying at the next one");
                return 0;
            }
        };
        let mut judged = 0;
        for (tenant, cluster) in clusters {
            if stop.is_cancelled() {
                break;
            }
            match store
                .claim_sweep(&tenant, &cluster, OffsetDateTime::now_utc(), interval / 2)
                .await
            {
                Ok(true) => {}
                // Another replica sweeps it (or it was just forgotten).
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(%tenant, %cluster, error = %e, "the sweep could not claim a cluster; trying at the next one");
                    continue;
                }
            }
            // Counted once claimed: a failed judgement is still this replica's turn (the
            // cluster waits for the next interval, as it did when every replica swept it).
            judged += 1;
            self.swept.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = self.cluster(&tenant, &cluster).await {
                tracing::warn!(%tenant, %cluster, error = %e, "the sweep could not re-evaluate a cluster");
            }
        }
        judged
    }

    /// How many clusters this replica's sweeps have claimed and judged since it started.
    pub fn clusters_swept(&self) -> u64 {
        self.swept.load(Ordering::Relaxed)
    }

    /// Re-evaluates each cluster when its timer is due, until `stop`.
    pub async fn run_timers(&self, stop: CancellationToken) {
        loop {
            let next = self.timers().next();
            let wait = match next {
                Some((_, at)) => {
                    let left = at - OffsetDateTime::now_utc();
                    Duration::try_from(left).unwrap_or(Duration::ZERO)
                }
                None => Duration::from_secs(3600),
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.timers().changed.notified() => continue,
                () = tokio::time::sleep(wait) => {}
            }
            let Some(((tenant, cluster), at)) = next else { continue };
            if at > OffsetDateTime::now_utc() {
                continue;
            }
            self.timers().remove_if(&tenant, &cluster, at);
            if let Err(e) = self.cluster(&tenant, &cluster).await {
                tracing::warn!(%tenant, %cluster, error = %e, "a timed re-evaluation failed; the sweep will judge the cluster");
            }
        }
    }
}

impl WorkHandler for Triggers {
    type Error = ContinuousError;

    async fn handle(&self, tenant: &str, envelope: &pe::EventEnvelope) -> Result<(), ContinuousError> {
        Triggers::handle(self, tenant, envelope).await
    }
}

/// Whether a cluster change can change its judgement (assignment, settings, lifecycle).
fn judged_by(changed: &pe::ClusterChanged) -> bool {
    changed.aspects.is_empty()
        || changed.aspects.iter().any(|a| {
            *a == pe::ClusterChangeAspect::Assignment as i32
                || *a == pe::ClusterChangeAspect::Settings as i32
                || *a == pe::ClusterChangeAspect::Lifecycle as i32
        })
}

/// When to look at a cluster again, per (tenant, cluster) (this replica's; the sweep covers
/// a replica that goes away).
#[derive(Debug, Clone, Default)]
pub struct Timers {
    at: Arc<Mutex<BTreeMap<(String, String), OffsetDateTime>>>,
    changed: Arc<Notify>,
}

impl Timers {
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), OffsetDateTime>> {
        // A poisoned lock only means a panic elsewhere mid-update; the map stays usable.
        self.at.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Looks at `tenant`'s `cluster` again at `at` (an earlier timer held wins).
    pub fn set(&self, tenant: &str, cluster: &str, at: OffsetDateTime) {
        let mut map = self.map();
        let slot = map.entry((tenant.to_owned(), cluster.to_owned())).or_insert(at);
        if at < *slot {
            *slot = at;
        }
        drop(map);
        self.changed.notify_one();
    }

    /// Drops the cluster's timer.
    pub fn remove(&self, tenant: &str, cluster: &str) {
        self.map().remove(&(tenant.to_owned(), cluster.to_owned()));
    }

    fn remove_if(&self, tenant: &str, cluster: &str, at: OffsetDateTime) {
        let mut map = self.map();
        let key = (tenant.to_owned(), cluster.to_owned());
        if map.get(&key) == Some(&at) {
            map.remove(&key);
        }
    }

    /// The earliest timer.
    pub fn next(&self) -> Option<((String, String), OffsetDateTime)> {
        self.map()
            .iter()
            .min_by_key(|(_, at)| **at)
            .map(|(k, at)| (k.clone(), *at))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn the_earliest_timer_of_a_cluster_wins_and_the_earliest_cluster_is_next() {
        let timers = Timers::default();
        let t0 = OffsetDateTime::from_unix_timestamp(1_000).unwrap();
        timers.set("acme", "c1", t0 + time::Duration::minutes(5));
        timers.set("acme", "c1", t0 + time::Duration::minutes(2));
        timers.set("acme", "c1", t0 + time::Duration::minutes(9));
        timers.set("acme", "c2", t0 + time::Duration::minutes(3));
        assert_eq!(
            timers.next(),
            Some((("acme".into(), "c1".into()), t0 + time::Duration::minutes(2)))
        );
        timers.remove("acme", "c1");
        assert_eq!(timers.next().map(|(k, _)| k.1), Some("c2".into()));
    }

    #[test]
    fn registry_credentials_or_a_key_rotation_do_not_re_judge_a_cluster() {
        let mut changed = pe::ClusterChanged {
            aspects: vec![pe::ClusterChangeAspect::RegistryCredentials as i32],
            ..Default::default()
        };
        assert!(!judged_by(&changed));
        changed.aspects.push(pe::ClusterChangeAspect::Assignment as i32);
        assert!(judged_by(&changed));
    }
}
