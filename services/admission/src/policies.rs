//! Compiled policies and cluster settings per cluster, in memory.
//!
//! - A miss is filled by one `GetEffectivePolicy` call to the policy store; concurrent
//!   misses for one cluster share that call (single flight), and the call runs in its own
//!   task, so it completes (and fills the cache) even when the review that started it gave
//!   up at its deadline.
//! - A hit never waits: an entry older than [`PolicyCacheOptions::refresh_after`] (30 s) is
//!   served while it is fetched again in the background; a `policy.changed` or
//!   `cluster.changed` event does the same at once ([`PolicyCache::refresh_where`]). The new
//!   entry replaces the old one in one step when it has arrived, so a review sees either the
//!   old policy or the new one, never a mix.
//! - When the policy store cannot be reached, the last entry keeps serving, however old.
//!   A cluster the store says is gone (deleted, or a name that no longer exists) is dropped.
//! - Clusters with the same policy revision share one compiled policy. Compiling takes no
//!   lock (only looking up and recording the shared result do), so one tenant's large
//!   policy never delays another tenant's.
//!
//! The entries are the kit's refreshing cache ([`portcullis_kit::cache`]), with no TTL (the
//! last entry serves however old) and a background refresh after `refresh_after`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use portcullis_engine::evaluate::{CompiledPolicy, FailureMode, TrustedImage};
use portcullis_kit::cache::{Answer, Cache, CacheConfig, LoadAborted};
use portcullis_proto::policystore::v1 as pb;
use tonic::Code;

use crate::BoxFuture as SendFuture;
use portcullis_policy_client::effective::EffectiveSettings;
use portcullis_policy_client::{ClusterSel, Upstream};

/// Where the cache reads effective policies: the policy store ([`Upstream`]), or a fake in
/// tests.
pub trait PolicySource: Send + Sync + 'static {
    /// The effective policy and settings of `tenant`'s `cluster`.
    fn effective_policy<'a>(
        &'a self,
        tenant: &'a str,
        cluster: &'a ClusterSel,
    ) -> SendFuture<'a, Result<pb::GetEffectivePolicyResponse, tonic::Status>>;
}

impl PolicySource for Upstream {
    fn effective_policy<'a>(
        &'a self,
        tenant: &'a str,
        cluster: &'a ClusterSel,
    ) -> SendFuture<'a, Result<pb::GetEffectivePolicyResponse, tonic::Status>> {
        Box::pin(Upstream::effective_policy(self, tenant, cluster))
    }
}

/// What admission knows of one cluster.
#[derive(Debug)]
pub struct ClusterPolicy {
    /// The tenant.
    pub tenant: String,
    /// The cluster's id.
    pub cluster_id: String,
    /// The cluster's name.
    pub cluster_name: String,
    /// The assigned policy, compiled; `None` when none is assigned.
    pub policy: Option<Arc<CompiledPolicy>>,
    /// Its id; empty when none.
    pub policy_id: String,
    /// Its revision; 0 when none.
    pub revision: u64,
    /// What happens when a stage cannot answer.
    pub failure_mode: FailureMode,
    /// Namespaces allowed without evaluation.
    pub excluded_namespaces: Vec<String>,
    /// Images always exempt.
    pub trusted_images: Vec<TrustedImage>,
    /// The cluster's generation.
    pub generation: u64,
}

/// Why a cluster's policy could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyFetchError {
    /// The store says there is no such cluster (or the caller may not see it).
    #[error("no such cluster: {0}")]
    NotFound(String),
    /// The store could not be asked, or answered something unusable.
    #[error("policy unavailable: {0}")]
    Unavailable(String),
}

impl From<LoadAborted> for PolicyFetchError {
    fn from(e: LoadAborted) -> PolicyFetchError {
        PolicyFetchError::Unavailable(e.to_string())
    }
}

/// Sizing and timing of the policy cache.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyCacheOptions {
    /// An entry older than this is fetched again (in the background) on its next use.
    #[serde(with = "humantime_serde")]
    pub refresh_after: Duration,
    /// At most this many clusters.
    pub max_entries: usize,
    /// A cluster no review has used for this long is forgotten rather than re-checked.
    #[serde(with = "humantime_serde")]
    pub idle_after: Duration,
}

impl Default for PolicyCacheOptions {
    fn default() -> PolicyCacheOptions {
        PolicyCacheOptions {
            refresh_after: Duration::from_secs(30),
            max_entries: 100_000,
            idle_after: Duration::from_secs(600),
        }
    }
}

type SlotKey = (String, ClusterSel);

struct Inner {
    upstream: Arc<dyn PolicySource>,
    options: PolicyCacheOptions,
    entries: Cache<SlotKey, Arc<ClusterPolicy>, PolicyFetchError>,
    /// Compiled policies by (tenant, policy id, revision), shared while some cluster uses one.
    compiled: Mutex<HashMap<(String, String, u64), Weak<CompiledPolicy>>>,
    /// The engine's compiler (tests put a slow one in).
    compiler: Compiler,
}

/// Compiles a policy document.
type Compiler = fn(&str) -> Result<CompiledPolicy, String>;

fn compile_with_engine(text: &str) -> Result<CompiledPolicy, String> {
    CompiledPolicy::from_text(text).map_err(|e| e.to_string())
}

/// The cache (cheap to clone).
#[derive(Clone)]
pub struct PolicyCache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PolicyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyCache").field("clusters", &self.len()).finish()
    }
}

/// The result of a lookup.
#[derive(Debug)]
pub struct Lookup {
    /// The cluster's policy.
    pub policy: Arc<ClusterPolicy>,
    /// Whether it came from the cache without waiting.
    pub hit: bool,
}

impl PolicyCache {
    /// An empty cache filled from `upstream`.
    pub fn new(upstream: Arc<dyn PolicySource>, options: PolicyCacheOptions) -> PolicyCache {
        PolicyCache::with_compiler(upstream, options, compile_with_engine)
    }

    fn with_compiler(upstream: Arc<dyn PolicySource>, options: PolicyCacheOptions, compiler: Compiler) -> PolicyCache {
        let config = CacheConfig {
            // No expiry: the last entry serves however old while the store is unreachable.
            ttl: Duration::MAX,
            refresh: options.refresh_after..=options.refresh_after,
            max_stale: Duration::MAX,
            unreachable: |e| matches!(e, PolicyFetchError::Unavailable(_)),
            gone: |e| matches!(e, PolicyFetchError::NotFound(_)),
            negative_ttl: Duration::ZERO,
            max_entries: options.max_entries,
        };
        PolicyCache {
            inner: Arc::new(Inner {
                upstream,
                options,
                entries: Cache::new(config),
                compiled: Mutex::new(HashMap::new()),
                compiler,
            }),
        }
    }

    /// How many clusters are cached.
    pub fn len(&self) -> usize {
        self.inner.entries.len()
    }

    /// Whether no cluster is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The policy of `cluster` in `tenant`: from memory when held (never waiting), else
    /// fetched, waiting at most `deadline`.
    pub async fn get(
        &self,
        tenant: &str,
        cluster: &ClusterSel,
        deadline: Duration,
    ) -> Result<Lookup, PolicyFetchError> {
        let key = (tenant.to_owned(), cluster.clone());
        let flight = match self.inner.entries.get(key.clone(), || self.load(&key)) {
            Answer::Ready(policy) => return Ok(Lookup { policy, hit: true }),
            Answer::Refused(e) => return Err(e),
            Answer::Wait(flight) => flight,
        };
        match tokio::time::timeout(deadline, flight).await {
            Ok(result) => result.map(|policy| Lookup { policy, hit: false }),
            Err(_) => Err(PolicyFetchError::Unavailable(format!(
                "the policy store did not answer within {deadline:?}"
            ))),
        }
    }

    /// The policy of `cluster` in `tenant` when it is held in memory (a hit, as [`Self::get`]
    /// counts and refreshes it); `None` without fetching otherwise.
    pub fn cached(&self, tenant: &str, cluster: &ClusterSel) -> Option<Lookup> {
        let key = (tenant.to_owned(), cluster.clone());
        let policy = self.inner.entries.get_cached(&key, || self.load(&key))?;
        Some(Lookup { policy, hit: true })
    }

    /// A fetch of `key`'s policy, for the cache to run.
    fn load(
        &self,
        key: &SlotKey,
    ) -> impl Future<Output = Result<Arc<ClusterPolicy>, PolicyFetchError>> + Send + 'static + use<> {
        let (this, (tenant, cluster)) = (self.clone(), key.clone());
        async move {
            let result = match this.inner.upstream.effective_policy(&tenant, &cluster).await {
                Ok(answer) => this.build(&tenant, answer).map(Arc::new),
                Err(status) if matches!(status.code(), Code::NotFound | Code::PermissionDenied) => {
                    Err(PolicyFetchError::NotFound(status.message().to_owned()))
                }
                Err(status) => Err(PolicyFetchError::Unavailable(format!(
                    "{}: {}",
                    status.code(),
                    status.message()
                ))),
            };
            if let Err(PolicyFetchError::Unavailable(e)) = &result {
                tracing::warn!(%tenant, ?cluster, error = %e, "reading a cluster's policy failed; a held one keeps serving");
            }
            result
        }
    }

    fn build(&self, tenant: &str, answer: pb::GetEffectivePolicyResponse) -> Result<ClusterPolicy, PolicyFetchError> {
        let settings = EffectiveSettings::from_proto(tenant, &answer.cluster_id, answer.settings);
        let (policy, policy_id, revision) = match answer.policy {
            None => (None, String::new(), 0),
            Some(p) => {
                let compiled = self.compile(tenant, &p)?;
                (Some(compiled), p.id, p.revision)
            }
        };
        Ok(ClusterPolicy {
            tenant: tenant.to_owned(),
            cluster_id: answer.cluster_id,
            cluster_name: answer.cluster_name,
            policy,
            policy_id,
            revision,
            failure_mode: settings.failure_mode,
            excluded_namespaces: settings.excluded_namespaces,
            trusted_images: settings.trusted_images,
            generation: answer.cluster_generation,
        })
    }

    fn compile(&self, tenant: &str, policy: &pb::Policy) -> Result<Arc<CompiledPolicy>, PolicyFetchError> {
        let key = (tenant.to_owned(), policy.id.clone(), policy.revision);
        if let Some(held) = self.compiled().get(&key).and_then(Weak::upgrade) {
            return Ok(held);
        }
        // Without the lock: another tenant's policies are looked up and compiled meanwhile.
        // Two clusters of one revision missing at once may both compile; the first stored
        // wins and the other copy is dropped.
        let fresh = (self.inner.compiler)(&policy.document_json)
            .map(Arc::new)
            .map_err(|e| {
                // The store validated it; a failure here means the two disagree (a version skew).
                PolicyFetchError::Unavailable(format!(
                    "policy {} revision {} does not compile here: {e}",
                    policy.id, policy.revision
                ))
            })?;
        let mut compiled = self.compiled();
        if let Some(held) = compiled.get(&key).and_then(Weak::upgrade) {
            return Ok(held);
        }
        compiled.retain(|_, w| w.strong_count() > 0);
        compiled.insert(key, Arc::downgrade(&fresh));
        Ok(fresh)
    }

    /// The compiled policies; a poisoned lock only means a panic elsewhere mid-update.
    fn compiled(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String, u64), Weak<CompiledPolicy>>> {
        self.inner.compiled.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Fetches again, in the background, every cached cluster of `tenant` for which `which`
    /// holds (policy or settings changed); the old entry serves until the new one arrives.
    pub fn refresh_where(&self, tenant: &str, which: impl Fn(&ClusterPolicy) -> bool) {
        self.inner
            .entries
            .refresh_where(|(t, _), policy| t == tenant && which(policy), |key| self.load(key));
    }

    /// Re-checks, in the background, every entry older than the refresh interval, so that an
    /// entry is never more than that (plus the sweep's period) behind the store even when a
    /// bus event was lost; forgets clusters unused for [`PolicyCacheOptions::idle_after`].
    /// Called periodically by the running server.
    pub fn refresh_stale(&self) {
        self.inner
            .entries
            .sweep(self.inner.options.idle_after, |key| self.load(key));
    }

    /// Fetches every cached cluster again in the background (after a gap in the events).
    pub fn refresh_all(&self) {
        self.inner.entries.refresh_where(|_, _| true, |key| self.load(key));
    }

    /// Forgets every cluster of `tenant` for which `which` holds (deleted).
    pub fn remove_where(&self, tenant: &str, which: impl Fn(&ClusterPolicy) -> bool) {
        self.inner
            .entries
            .invalidate_where(|(t, _), policy| t == tenant && which(policy));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    use portcullis_proto::common::v1 as pc;
    use tonic::Status;

    use super::*;

    /// A policy store stand-in: answers after `delay`, counting calls; the answer's policy
    /// revision is whatever `revision` holds; `fail` makes it unavailable, `gone` NotFound.
    struct FakeSource {
        calls: AtomicUsize,
        revision: AtomicU64,
        fail: std::sync::atomic::AtomicBool,
        gone: std::sync::atomic::AtomicBool,
        delay: Duration,
    }

    impl FakeSource {
        fn new(delay: Duration) -> Arc<FakeSource> {
            Arc::new(FakeSource {
                calls: AtomicUsize::new(0),
                revision: AtomicU64::new(1),
                fail: Default::default(),
                gone: Default::default(),
                delay,
            })
        }
    }

    fn document(revision: u64) -> String {
        serde_json::json!({
            "name": "p",
            "description": format!("revision {revision}"),
            "default": {"rules": [{
                "type": "podSecurityContext", "action": "block",
                "statement": {"properties": [{"key": "hostNetwork", "value": "true"}]}
            }]}
        })
        .to_string()
    }

    impl PolicySource for FakeSource {
        fn effective_policy<'a>(
            &'a self,
            _tenant: &'a str,
            cluster: &'a ClusterSel,
        ) -> SendFuture<'a, Result<pb::GetEffectivePolicyResponse, Status>> {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(self.delay).await;
                if self.gone.load(Ordering::SeqCst) {
                    return Err(Status::not_found("no such cluster"));
                }
                if self.fail.load(Ordering::SeqCst) {
                    return Err(Status::unavailable("store down"));
                }
                let revision = self.revision.load(Ordering::SeqCst);
                let ClusterSel::Id(id) = cluster else {
                    return Err(Status::not_found("by name"));
                };
                Ok(pb::GetEffectivePolicyResponse {
                    cluster_id: id.clone(),
                    cluster_name: format!("name-{id}"),
                    policy: Some(pb::Policy {
                        id: "pol-1".into(),
                        name: "p".into(),
                        revision,
                        document_json: document(revision),
                        ..Default::default()
                    }),
                    settings: Some(pb::ClusterSettings {
                        failure_mode: pc::FailureMode::FailClosed as i32,
                        excluded_namespaces: vec!["kube-system".into()],
                        trusted_images: vec!["registry.example/agent".into()],
                    }),
                    cluster_generation: 7,
                })
            })
        }
    }

    fn cache(source: &Arc<FakeSource>, refresh_after: Duration) -> PolicyCache {
        PolicyCache::new(
            source.clone(),
            PolicyCacheOptions {
                refresh_after,
                ..PolicyCacheOptions::default()
            },
        )
    }

    const DEADLINE: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn concurrent_misses_for_one_cluster_make_one_call() {
        let source = FakeSource::new(Duration::from_millis(100));
        let cache = cache(&source, Duration::from_secs(30));
        let c1 = ClusterSel::Id("c1".into());
        let lookups = futures::future::join_all((0..50).map(|_| cache.get("t", &c1, DEADLINE))).await;
        assert_eq!(source.calls.load(Ordering::SeqCst), 1);
        for lookup in lookups {
            let lookup = lookup.unwrap();
            assert!(!lookup.hit);
            assert_eq!(lookup.policy.revision, 1);
            assert_eq!(lookup.policy.failure_mode, FailureMode::FailClosed);
            assert_eq!(lookup.policy.excluded_namespaces, vec!["kube-system".to_owned()]);
            assert_eq!(lookup.policy.trusted_images.len(), 1);
        }
        // Held now: a hit, no call.
        let again = cache.get("t", &c1, DEADLINE).await.unwrap();
        assert!(again.hit);
        assert_eq!(source.calls.load(Ordering::SeqCst), 1);
        // Another cluster (or tenant) is its own entry.
        cache.get("t", &ClusterSel::Id("c2".into()), DEADLINE).await.unwrap();
        cache.get("u", &c1, DEADLINE).await.unwrap();
        assert_eq!(source.calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn clusters_on_one_revision_share_the_compiled_policy() {
        let source = FakeSource::new(Duration::ZERO);
        let cache = cache(&source, Duration::from_secs(30));
        let a = cache.get("t", &ClusterSel::Id("a".into()), DEADLINE).await.unwrap();
        let b = cache.get("t", &ClusterSel::Id("b".into()), DEADLINE).await.unwrap();
        let (pa, pb) = (a.policy.policy.clone().unwrap(), b.policy.policy.clone().unwrap());
        assert!(Arc::ptr_eq(&pa, &pb));
    }

    /// Set while the slow compiler runs; it returns once `RELEASE` is set.
    static SLOW_STARTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    static RELEASE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

    /// The engine's compiler, except that a document mentioning "slow" waits for `RELEASE`.
    fn slow_compiler(text: &str) -> Result<CompiledPolicy, String> {
        if text.contains("slow") {
            SLOW_STARTED.store(true, Ordering::SeqCst);
            while !RELEASE.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        compile_with_engine(text)
    }

    fn policy(id: &str, description: &str) -> pb::Policy {
        pb::Policy {
            id: id.into(),
            revision: 1,
            document_json: document(1).replace("revision 1", description),
            ..Default::default()
        }
    }

    #[test]
    fn one_tenants_slow_compile_does_not_delay_anothers() {
        let cache = PolicyCache::with_compiler(
            FakeSource::new(Duration::ZERO),
            PolicyCacheOptions::default(),
            slow_compiler,
        );
        let slow = {
            let cache = cache.clone();
            std::thread::spawn(move || cache.compile("big", &policy("pol-big", "slow to compile")).map(drop))
        };
        while !SLOW_STARTED.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        // Another tenant's compile, while the slow one runs: it must not wait for it.
        let (done, finished) = std::sync::mpsc::channel();
        let other = {
            let cache = cache.clone();
            std::thread::spawn(move || {
                let result = cache.compile("small", &policy("pol-small", "quick")).map(drop);
                let _ = done.send(result.is_ok());
            })
        };
        let answered = finished.recv_timeout(Duration::from_secs(20));
        RELEASE.store(true, Ordering::SeqCst);
        assert_eq!(answered, Ok(true), "the other tenant waited for the slow compile");
        other.join().unwrap();
        slow.join().unwrap().unwrap();
    }

    async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
        for _ in 0..500 {
            if check() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{what} did not happen within 5 s");
    }

    #[tokio::test]
    async fn a_change_replaces_the_entry_while_the_old_one_serves() {
        let source = FakeSource::new(Duration::from_millis(200));
        let cache = cache(&source, Duration::from_secs(30));
        let c1 = ClusterSel::Id("c1".into());
        cache.get("t", &c1, DEADLINE).await.unwrap();
        source.revision.store(2, Ordering::SeqCst);
        cache.refresh_where("t", |c| c.policy_id == "pol-1");
        // While the fetch is in flight, the old revision answers at once.
        let during = cache.get("t", &c1, DEADLINE).await.unwrap();
        assert!(during.hit);
        assert_eq!(during.policy.revision, 1);
        let probe = cache.clone();
        eventually("the new revision replacing the old", move || {
            probe
                .inner
                .entries
                .peek(&("t".to_owned(), ClusterSel::Id("c1".into())))
                .is_some_and(|v| v.revision == 2)
        })
        .await;
        assert_eq!(cache.get("t", &c1, DEADLINE).await.unwrap().policy.revision, 2);
        // Another tenant's change leaves it alone.
        let calls = source.calls.load(Ordering::SeqCst);
        cache.refresh_where("other", |_| true);
        assert_eq!(source.calls.load(Ordering::SeqCst), calls);
    }

    #[tokio::test]
    async fn the_last_policy_keeps_serving_while_the_store_is_down() {
        let source = FakeSource::new(Duration::ZERO);
        let cache = cache(&source, Duration::ZERO);
        let c1 = ClusterSel::Id("c1".into());
        cache.get("t", &c1, DEADLINE).await.unwrap();
        source.fail.store(true, Ordering::SeqCst);
        for _ in 0..5 {
            // Every lookup is stale (refresh_after is 0) and triggers a failing refresh.
            let lookup = cache.get("t", &c1, DEADLINE).await.unwrap();
            assert!(lookup.hit);
            assert_eq!(lookup.policy.revision, 1);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(source.calls.load(Ordering::SeqCst) > 1, "refreshes were attempted");
        // A cluster never seen cannot be had.
        let unseen = cache.get("t", &ClusterSel::Id("c9".into()), DEADLINE).await;
        assert!(matches!(unseen, Err(PolicyFetchError::Unavailable(_))), "{unseen:?}");
    }

    #[tokio::test]
    async fn a_miss_waits_at_most_its_deadline_and_the_fetch_still_fills_the_cache() {
        let source = FakeSource::new(Duration::from_millis(300));
        let cache = cache(&source, Duration::from_secs(30));
        let c1 = ClusterSel::Id("c1".into());
        let first = cache.get("t", &c1, Duration::from_millis(10)).await;
        assert!(matches!(first, Err(PolicyFetchError::Unavailable(_))), "{first:?}");
        let probe = cache.clone();
        eventually("the abandoned fetch filling the cache", move || probe.len() == 1).await;
        assert!(cache.get("t", &c1, DEADLINE).await.unwrap().hit);
        assert_eq!(source.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_cluster_the_store_says_is_gone_is_dropped() {
        let source = FakeSource::new(Duration::ZERO);
        let cache = cache(&source, Duration::ZERO);
        let c1 = ClusterSel::Id("c1".into());
        cache.get("t", &c1, DEADLINE).await.unwrap();
        source.gone.store(true, Ordering::SeqCst);
        // Stale: served once more while the refresh learns the cluster is gone.
        cache.get("t", &c1, DEADLINE).await.unwrap();
        let probe = cache.clone();
        eventually("the deleted cluster leaving the cache", move || probe.is_empty()).await;
        let after = cache.get("t", &c1, DEADLINE).await;
        assert!(matches!(after, Err(PolicyFetchError::NotFound(_))), "{after:?}");
    }
}
