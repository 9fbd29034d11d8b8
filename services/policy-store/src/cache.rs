//! In-process caches for the two reads behind every connector call: the introspection of
//! the caller's key (authentication) and the effective policy of a cluster.
//!
//! Without them every `GetEffectivePolicy` costs three database reads (key, cluster,
//! policy); with them, none once warm. ARCHITECTURE.md (Tenancy, Messaging) allows key
//! answers to be cached for at most 30 s and dropped on `apikey.revoked`, and policy
//! revisions to be re-checked at least every 30 s. How an entry goes:
//!
//! - **This process's changes**: the store tells the caches the events of every commit
//!   ([`CommitListener`]) before the writing call returns, so a revoked key, a rotated
//!   connector key or a changed policy is never served from the cache after the change
//!   was answered.
//! - **Other replicas' changes**: the same events arrive through the bus (a broadcast
//!   subscription run by [`crate::PolicyStore::start_background`]).
//! - **Backstop**: an answer is served at most the TTL ([`MAX_TTL`], 30 s) after it was
//!   read, whatever happens to the bus; a key past its expiry (or the end of its rotation
//!   grace period) is never served.
//!
//! Both are the kit's refreshing cache ([`portcullis_kit::cache`]): reads go to the store in
//! a spawned task shared by every caller that wants the same entry meanwhile (one read per
//! entry, not one per caller, also when a caller gives up). An entry still in use is read
//! again in the background between 50 % and 80 % of its TTL (spread, so entries filled
//! together are not all read again together), so callers of a busy entry never wait for the
//! store. A key the store no longer accepts (or a cluster it no longer has) leaves the cache
//! when such a read says so. A read that started before an invalidation neither puts its
//! (possibly old) answer in the cache after it nor is handed to callers who came after it.
//!
//! Only successful answers are cached: an unknown, revoked or expired key is looked up
//! every time (its error names the reason).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use portcullis_kit::cache::{Cache, CacheConfig};
use portcullis_proto::events::v1 as pe;
use portcullis_proto::policystore::v1 as pb;
use portcullis_server::TenantKey;
use portcullis_storage::CommitListener;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tonic::{Code, Status};

/// The longest any answer is served after it was read (ARCHITECTURE.md, Tenancy: 30 s).
pub const MAX_TTL: Duration = Duration::from_secs(30);

/// Sizes and lifetimes of the caches.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheOptions {
    /// How long a key's introspection is served; at most [`MAX_TTL`] (longer is cut to
    /// it); zero turns the key cache off.
    #[serde(with = "humantime_serde")]
    pub key_ttl: Duration,
    /// How long a cluster's effective policy is served; at most [`MAX_TTL`]; zero turns
    /// the cache off.
    #[serde(with = "humantime_serde")]
    pub effective_ttl: Duration,
    /// How long an unknown, revoked or expired key's refusal is served before the key is
    /// read again (default 5 s): junk tokens sent again and again cost one read each
    /// interval, not one each. Zero: off.
    #[serde(with = "humantime_serde")]
    pub key_negative_ttl: Duration,
    /// Most keys kept.
    pub max_keys: usize,
    /// Most clusters kept.
    pub max_clusters: usize,
}

impl Default for CacheOptions {
    fn default() -> CacheOptions {
        CacheOptions {
            key_ttl: MAX_TTL,
            effective_ttl: MAX_TTL,
            key_negative_ttl: Duration::from_secs(5),
            max_keys: 100_000,
            max_clusters: 100_000,
        }
    }
}

impl CacheOptions {
    /// No caching: every call reads the store.
    pub fn disabled() -> CacheOptions {
        CacheOptions {
            key_ttl: Duration::ZERO,
            effective_ttl: Duration::ZERO,
            key_negative_ttl: Duration::ZERO,
            ..CacheOptions::default()
        }
    }
}

/// The hash a key is cached under (the secret itself is never kept).
pub(crate) type KeyHash = [u8; 32];

/// The cache key of a presented secret.
pub(crate) fn key_hash(secret: &str) -> KeyHash {
    Sha256::digest(secret.as_bytes()).into()
}

/// A store read: its answer, as the callers get it.
pub(crate) type Fetch<V> = BoxFuture<'static, Result<V, Status>>;

/// A cache's answer: at hand, or a read to wait for.
pub(crate) type Answer<V> = portcullis_kit::cache::Answer<V, Status>;

/// Whether a failed read means the entry is gone for good (rather than "try later").
fn is_definitive(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unauthenticated | Code::NotFound | Code::PermissionDenied
    )
}

/// A cache of this service: served for `ttl` (at most [`MAX_TTL`]), dropped when the store
/// refuses, nothing negative cached, never served stale.
fn config(ttl: Duration, max: usize) -> CacheConfig<Status> {
    CacheConfig {
        gone: is_definitive,
        ..CacheConfig::with_ttl(ttl, max)
    }
}

/// Tenant and cluster id.
type ClusterKey = (String, String);

/// Both caches. Shared by the services of one [`crate::PolicyStore`] and its authenticator.
pub struct Caches {
    options: CacheOptions,
    keys: Cache<KeyHash, TenantKey, Status>,
    effective: Cache<ClusterKey, pb::GetEffectivePolicyResponse, Status>,
    following: AtomicBool,
}

impl std::fmt::Debug for Caches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caches")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Caches {
    /// Empty caches; TTLs above [`MAX_TTL`] are cut to it.
    pub fn new(mut options: CacheOptions) -> Caches {
        options.key_ttl = options.key_ttl.min(MAX_TTL);
        options.effective_ttl = options.effective_ttl.min(MAX_TTL);
        Caches {
            keys: Cache::new(CacheConfig {
                negative_ttl: options.key_negative_ttl.min(MAX_TTL),
                ..config(options.key_ttl, options.max_keys)
            }),
            effective: Cache::new(config(options.effective_ttl, options.max_clusters)),
            options,
            following: AtomicBool::new(false),
        }
    }

    /// What the key of `hash` is: from the cache unless it is older than the TTL or the key
    /// has expired by `now` (the store's clock); else from `fetch` (one read shared by
    /// every caller of the same key meanwhile).
    pub(crate) fn key(
        &self,
        hash: KeyHash,
        now: OffsetDateTime,
        fetch: impl FnOnce() -> Fetch<TenantKey>,
    ) -> Answer<TenantKey> {
        self.keys
            .get_if(hash, |key| key.expires_at.is_none_or(|t| t > now), fetch)
    }

    /// The effective policy of the tenant's cluster `cluster_id`: from the cache unless
    /// older than the TTL, else from `fetch` (one read shared by every caller of the same
    /// cluster meanwhile).
    pub(crate) fn effective(
        &self,
        tenant: &str,
        cluster_id: &str,
        fetch: impl FnOnce() -> Fetch<pb::GetEffectivePolicyResponse>,
    ) -> Answer<pb::GetEffectivePolicyResponse> {
        self.effective.get((tenant.to_owned(), cluster_id.to_owned()), fetch)
    }

    /// Drops everything (for instance when the bus subscription was lost, so changes of
    /// other replicas may have been missed).
    pub fn clear(&self) {
        self.keys.invalidate_all();
        self.effective.invalidate_all();
    }

    /// Drops the tenant's keys for which `matches` holds.
    fn evict_keys(&self, tenant: &str, matches: impl Fn(&TenantKey) -> bool) {
        self.keys
            .invalidate_where(|_, key| key.tenant_id == tenant && matches(key));
    }

    /// Drops the tenant's effective policies for which `matches` holds.
    fn evict_effective(&self, tenant: &str, matches: impl Fn(&str, &pb::GetEffectivePolicyResponse) -> bool) {
        self.effective
            .invalidate_where(|(t, cluster), answer| t == tenant && matches(cluster, answer));
    }

    /// Drops what one event says has changed.
    pub fn apply(&self, event: &pe::EventEnvelope) {
        use pe::event_envelope::Payload;
        let tenant = event.tenant_id.as_str();
        match &event.payload {
            Some(Payload::ApiKeyRevoked(revoked)) => {
                if revoked.reason == pe::RevocationReason::TenantDeleted as i32 {
                    self.evict_keys(tenant, |_| true);
                    self.evict_effective(tenant, |_, _| true);
                } else {
                    self.evict_keys(tenant, |k| k.key_id == revoked.key_id);
                }
            }
            Some(Payload::ClusterChanged(changed)) => {
                let rotated = changed
                    .aspects
                    .contains(&(pe::ClusterChangeAspect::ConnectorKey as i32));
                let deleted = changed.change == pe::ChangeKind::Deleted as i32;
                if rotated || deleted {
                    // The previous keys now end with their grace period (or at once).
                    self.evict_keys(tenant, |k| k.cluster_id.as_deref() == Some(&changed.cluster_id));
                }
                self.evict_effective(tenant, |cluster, _| cluster == changed.cluster_id);
            }
            Some(Payload::PolicyChanged(changed)) => {
                self.evict_effective(tenant, |_, answer| {
                    answer.policy.as_ref().is_some_and(|p| p.id == changed.policy_id)
                });
            }
            // Nothing cached depends on the others.
            _ => {}
        }
    }

    /// Whether the bus subscription that reports other replicas' changes is up.
    pub fn is_following(&self) -> bool {
        self.following.load(Ordering::Acquire)
    }

    pub(crate) fn set_following(&self, following: bool) {
        self.following.store(following, Ordering::Release);
    }

    /// How many keys and clusters are cached (for tests and metrics).
    pub fn sizes(&self) -> (usize, usize) {
        (self.keys.len(), self.effective.len())
    }
}

impl CommitListener for Caches {
    fn committed(&self, events: &[pe::EventEnvelope]) {
        for event in events {
            self.apply(event);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

    use std::sync::atomic::AtomicUsize;
    use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

    use portcullis_server::Role;
    use tokio::sync::Notify;

    use super::*;

    fn key(tenant: &str, id: &str, cluster: Option<&str>) -> TenantKey {
        TenantKey {
            tenant_id: tenant.to_owned(),
            role: if cluster.is_some() {
                Role::Connector
            } else {
                Role::Editor
            },
            cluster_id: cluster.map(str::to_owned),
            key_id: id.to_owned(),
            expires_at: None,
        }
    }

    fn answer(cluster: &str, policy: &str) -> pb::GetEffectivePolicyResponse {
        pb::GetEffectivePolicyResponse {
            cluster_id: cluster.to_owned(),
            cluster_name: format!("name-{cluster}"),
            policy: Some(pb::Policy {
                id: policy.to_owned(),
                revision: 1,
                ..pb::Policy::default()
            }),
            settings: None,
            cluster_generation: 1,
        }
    }

    fn event(tenant: &str, payload: pe::event_envelope::Payload) -> pe::EventEnvelope {
        pe::EventEnvelope {
            tenant_id: tenant.to_owned(),
            payload: Some(payload),
            ..pe::EventEnvelope::default()
        }
    }

    fn revoked(key_id: &str, reason: pe::RevocationReason) -> pe::event_envelope::Payload {
        pe::event_envelope::Payload::ApiKeyRevoked(pe::ApiKeyRevoked {
            key_id: key_id.to_owned(),
            reason: reason as i32,
            ..pe::ApiKeyRevoked::default()
        })
    }

    fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        m.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn cluster_key(tenant: &str, cluster: &str) -> ClusterKey {
        (tenant.to_owned(), cluster.to_owned())
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    fn caches(options: CacheOptions) -> Arc<Caches> {
        Arc::new(Caches::new(options))
    }

    /// A store stand-in: counts its reads and answers `value`.
    struct Source<V> {
        reads: Arc<AtomicUsize>,
        value: Arc<Mutex<Result<V, Status>>>,
        /// When set, each read waits for a permit.
        gate: Option<Arc<Notify>>,
    }

    impl<V: Clone + Send + Sync + 'static> Source<V> {
        fn new(value: V) -> Source<V> {
            Source {
                reads: Arc::new(AtomicUsize::new(0)),
                value: Arc::new(Mutex::new(Ok(value))),
                gate: None,
            }
        }

        fn gated(value: V) -> Source<V> {
            Source {
                gate: Some(Arc::new(Notify::new())),
                ..Source::new(value)
            }
        }

        fn set(&self, value: Result<V, Status>) {
            *lock(&self.value) = value;
        }

        fn reads(&self) -> usize {
            self.reads.load(Ordering::SeqCst)
        }

        fn fetch(&self) -> Fetch<V> {
            let (reads, value, gate) = (self.reads.clone(), self.value.clone(), self.gate.clone());
            reads.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                if let Some(gate) = gate {
                    gate.notified().await;
                }
                lock(&value).clone()
            })
        }
    }

    fn get_key(
        c: &Arc<Caches>,
        secret: &str,
        at: OffsetDateTime,
        source: &Source<TenantKey>,
    ) -> impl Future<Output = Result<TenantKey, Status>> + use<> {
        c.key(key_hash(secret), at, || source.fetch()).get()
    }

    fn get_answer(
        c: &Arc<Caches>,
        tenant: &str,
        cluster: &str,
        source: &Source<pb::GetEffectivePolicyResponse>,
    ) -> impl Future<Output = Result<pb::GetEffectivePolicyResponse, Status>> + use<> {
        c.effective(tenant, cluster, || source.fetch()).get()
    }

    /// Polls for `check` (time is paused: each sleep moves the clock on 5 ms, no more).
    async fn eventually(what: &str, check: impl Fn() -> bool) {
        for _ in 0..500 {
            if check() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("timed out waiting until {what}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cached_key_is_served_until_its_own_expiry() {
        let c = caches(CacheOptions::default());
        let mut k = key("t1", "k1", None);
        k.expires_at = Some(now() + time::Duration::hours(1));
        let source = Source::new(k.clone());
        assert_eq!(get_key(&c, "s1", now(), &source).await.unwrap(), k);
        assert_eq!(get_key(&c, "s1", now(), &source).await.unwrap(), k);
        assert_eq!(source.reads(), 1, "the second call is served from the cache");
        get_key(&c, "s2", now(), &source).await.unwrap();
        assert_eq!(source.reads(), 2, "another secret is another entry");
        // Past the key's own expiry (by the store's clock) the entry is not used.
        get_key(&c, "s1", now() + time::Duration::hours(2), &source)
            .await
            .unwrap();
        assert_eq!(source.reads(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn an_entry_is_not_served_past_its_ttl_which_is_at_most_thirty_seconds() {
        let c = caches(CacheOptions {
            key_ttl: Duration::from_millis(40),
            effective_ttl: Duration::from_millis(40),
            ..CacheOptions::default()
        });
        let keys = Source::new(key("t1", "k1", None));
        let answers = Source::new(answer("c1", "p1"));
        get_key(&c, "s1", now(), &keys).await.unwrap();
        get_answer(&c, "t1", "c1", &answers).await.unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
        keys.set(Ok(key("t1", "k1-new", None)));
        answers.set(Ok(answer("c1", "p2")));
        // Expired: read now and waited for, not served old.
        assert_eq!(get_key(&c, "s1", now(), &keys).await.unwrap().key_id, "k1-new");
        assert_eq!(
            get_answer(&c, "t1", "c1", &answers).await.unwrap().policy.unwrap().id,
            "p2"
        );
        assert_eq!((keys.reads(), answers.reads()), (2, 2));

        let long = Caches::new(CacheOptions {
            key_ttl: Duration::from_secs(3600),
            effective_ttl: Duration::from_secs(3600),
            ..CacheOptions::default()
        });
        assert_eq!(long.options.key_ttl, MAX_TTL);
        assert_eq!(long.options.effective_ttl, MAX_TTL);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_entry_is_read_again_in_the_background_before_its_ttl() {
        let c = caches(CacheOptions {
            effective_ttl: Duration::from_secs(2),
            ..CacheOptions::default()
        });
        let answers = Source::new(answer("c1", "p1"));
        get_answer(&c, "t1", "c1", &answers).await.unwrap();
        // Before 50 % of the TTL: no read.
        get_answer(&c, "t1", "c1", &answers).await.unwrap();
        assert_eq!(answers.reads(), 1);
        // Past 80 % (and before 100 %): the cached answer at once, and one read in the
        // background.
        tokio::time::sleep(Duration::from_millis(1700)).await;
        answers.set(Ok(answer("c1", "p2")));
        let served = get_answer(&c, "t1", "c1", &answers).await.unwrap();
        assert_eq!(served.policy.unwrap().id, "p1");
        get_answer(&c, "t1", "c1", &answers).await.unwrap();
        eventually("the background read landed", || {
            c.effective.peek(&cluster_key("t1", "c1")).unwrap().policy.unwrap().id == "p2"
        })
        .await;
        assert_eq!(answers.reads(), 2, "one background read, however many callers");
        // The refreshed entry lives a whole TTL from its read.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            get_answer(&c, "t1", "c1", &answers).await.unwrap().policy.unwrap().id,
            "p2"
        );
        assert_eq!(answers.reads(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_found_by_a_background_read_drops_the_key() {
        let c = caches(CacheOptions {
            key_ttl: Duration::from_secs(2),
            ..CacheOptions::default()
        });
        let keys = Source::new(key("t1", "k1", None));
        get_key(&c, "s1", now(), &keys).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1700)).await;
        keys.set(Err(Status::unauthenticated("API key is revoked")));
        get_key(&c, "s1", now(), &keys).await.expect("still within its TTL");
        eventually("the entry is gone", || c.sizes().0 == 0).await;
        let refused = get_key(&c, "s1", now(), &keys).await.unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_misses_share_one_read() {
        let c = caches(CacheOptions::default());
        let keys = Source::gated(key("t1", "k1", None));
        let calls: Vec<_> = (0..10).map(|_| get_key(&c, "s1", now(), &keys)).collect();
        let waiting = tokio::spawn(futures::future::join_all(calls));
        keys.gate.as_ref().unwrap().notify_one();
        for result in waiting.await.unwrap() {
            assert_eq!(result.unwrap().key_id, "k1");
        }
        assert_eq!(keys.reads(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_that_started_before_an_invalidation_is_neither_cached_nor_shared() {
        let c = caches(CacheOptions::default());
        let old = Source::gated(key("t1", "k1", None));
        let first = tokio::spawn(get_key(&c, "s1", now(), &old));
        // The key is revoked while its read is in flight.
        c.apply(&event("t1", revoked("k1", pe::RevocationReason::Revoked)));
        let new = Source::new(key("t1", "k1-after", None));
        let second = get_key(&c, "s1", now(), &new).await.unwrap();
        assert_eq!(
            second.key_id, "k1-after",
            "a caller after the change does not join the old read"
        );
        old.gate.as_ref().unwrap().notify_one();
        assert_eq!(first.await.unwrap().unwrap().key_id, "k1");
        // The old read did not overwrite the newer entry.
        assert_eq!(get_key(&c, "s1", now(), &old).await.unwrap().key_id, "k1-after");

        // Same for effective policies.
        let old = Source::gated(answer("c1", "p1"));
        let first = tokio::spawn(get_answer(&c, "t1", "c1", &old));
        c.apply(&event(
            "t1",
            pe::event_envelope::Payload::PolicyChanged(pe::PolicyChanged {
                policy_id: "p1".to_owned(),
                ..pe::PolicyChanged::default()
            }),
        ));
        old.gate.as_ref().unwrap().notify_one();
        first.await.unwrap().unwrap();
        assert_eq!(c.sizes().1, 0, "the read that straddled the change is not cached");
    }

    #[tokio::test(start_paused = true)]
    async fn a_revocation_drops_that_key_only() {
        let c = caches(CacheOptions::default());
        let (k1, k2, k3) = (
            Source::new(key("t1", "k1", None)),
            Source::new(key("t1", "k2", None)),
            Source::new(key("t2", "k1", None)),
        );
        get_key(&c, "s1", now(), &k1).await.unwrap();
        get_key(&c, "s2", now(), &k2).await.unwrap();
        get_key(&c, "s3", now(), &k3).await.unwrap();
        c.apply(&event("t1", revoked("k1", pe::RevocationReason::Revoked)));
        get_key(&c, "s1", now(), &k1).await.unwrap();
        get_key(&c, "s2", now(), &k2).await.unwrap();
        get_key(&c, "s3", now(), &k3).await.unwrap();
        assert_eq!(k1.reads(), 2, "the revoked key is read again");
        assert_eq!(k2.reads(), 1);
        assert_eq!(k3.reads(), 1, "the same key id in another tenant stays");
    }

    #[tokio::test(start_paused = true)]
    async fn a_deleted_tenant_loses_every_entry() {
        let c = caches(CacheOptions::default());
        get_key(&c, "s1", now(), &Source::new(key("t1", "k1", None)))
            .await
            .unwrap();
        get_key(&c, "s2", now(), &Source::new(key("t1", "k2", Some("c1"))))
            .await
            .unwrap();
        get_key(&c, "s3", now(), &Source::new(key("t2", "k3", None)))
            .await
            .unwrap();
        get_answer(&c, "t1", "c1", &Source::new(answer("c1", "p1")))
            .await
            .unwrap();
        get_answer(&c, "t2", "c2", &Source::new(answer("c2", "p2")))
            .await
            .unwrap();
        assert_eq!(c.sizes(), (3, 2));
        c.apply(&event("t1", revoked("k1", pe::RevocationReason::TenantDeleted)));
        assert_eq!(c.sizes(), (1, 1));
        assert!(c.effective.any(|(t, _), _| t == "t2"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cluster_change_drops_its_answer_and_on_rotation_its_keys() {
        let c = caches(CacheOptions::default());
        get_key(&c, "s1", now(), &Source::new(key("t1", "k1", Some("c1"))))
            .await
            .unwrap();
        get_key(&c, "s2", now(), &Source::new(key("t1", "k2", Some("c2"))))
            .await
            .unwrap();
        get_answer(&c, "t1", "c1", &Source::new(answer("c1", "p1")))
            .await
            .unwrap();
        get_answer(&c, "t1", "c2", &Source::new(answer("c2", "p1")))
            .await
            .unwrap();
        let changed = |aspect: pe::ClusterChangeAspect| {
            event(
                "t1",
                pe::event_envelope::Payload::ClusterChanged(pe::ClusterChanged {
                    cluster_id: "c1".to_owned(),
                    change: pe::ChangeKind::Updated as i32,
                    aspects: vec![aspect as i32],
                    ..pe::ClusterChanged::default()
                }),
            )
        };
        c.apply(&changed(pe::ClusterChangeAspect::Settings));
        assert_eq!(c.sizes(), (2, 1), "a settings change leaves keys alone");
        assert!(c.effective.peek(&cluster_key("t1", "c1")).is_none());
        c.apply(&changed(pe::ClusterChangeAspect::ConnectorKey));
        assert_eq!(c.keys.len(), 1, "rotation changes the old key's expiry");
        assert!(c.keys.peek(&key_hash("s2")).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_policy_change_drops_the_clusters_it_is_assigned_to() {
        let c = caches(CacheOptions::default());
        get_answer(&c, "t1", "c1", &Source::new(answer("c1", "p1")))
            .await
            .unwrap();
        get_answer(&c, "t1", "c2", &Source::new(answer("c2", "p2")))
            .await
            .unwrap();
        get_answer(&c, "t2", "c3", &Source::new(answer("c3", "p1")))
            .await
            .unwrap();
        c.apply(&event(
            "t1",
            pe::event_envelope::Payload::PolicyChanged(pe::PolicyChanged {
                policy_id: "p1".to_owned(),
                revision: 2,
                ..pe::PolicyChanged::default()
            }),
        ));
        let effective = &c.effective;
        assert!(effective.peek(&cluster_key("t1", "c1")).is_none());
        assert!(effective.peek(&cluster_key("t1", "c2")).is_some());
        assert!(
            effective.peek(&cluster_key("t2", "c3")).is_some(),
            "another tenant's policy of the same id stays"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_caches_are_bounded() {
        let c = caches(CacheOptions {
            max_keys: 3,
            max_clusters: 2,
            ..CacheOptions::default()
        });
        for i in 0..10 {
            get_key(
                &c,
                &format!("s{i}"),
                now(),
                &Source::new(key("t1", &format!("k{i}"), None)),
            )
            .await
            .unwrap();
            get_answer(
                &c,
                &format!("t{i}"),
                &format!("c{i}"),
                &Source::new(answer(&format!("c{i}"), "p")),
            )
            .await
            .unwrap();
        }
        assert_eq!(c.sizes(), (3, 2));
        assert!(c.keys.peek(&key_hash("s9")).is_some(), "the newest entry is kept");
        assert!(c.effective.any(|(t, _), _| t == "t9"));
    }

    #[tokio::test(start_paused = true)]
    async fn disabled_caches_read_every_time() {
        let c = caches(CacheOptions::disabled());
        let keys = Source::new(key("t1", "k1", None));
        let answers = Source::new(answer("c1", "p1"));
        for _ in 0..3 {
            get_key(&c, "s1", now(), &keys).await.unwrap();
            get_answer(&c, "t1", "c1", &answers).await.unwrap();
        }
        assert_eq!((keys.reads(), answers.reads()), (3, 3));
        assert_eq!(c.sizes(), (0, 0));
    }
}
