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
//! Reads go to the store in a spawned task shared by every caller that wants the same entry
//! meanwhile (one read per entry, not one per caller, also when a caller gives up). An entry
//! still in use is read again in the background between 50 % and 80 % of its TTL (spread,
//! so entries filled together are not all read again together), so callers of a busy entry
//! never wait for the store. A key the store no longer accepts (or a cluster it no longer
//! has) leaves the cache when such a read says so.
//!
//! A read that started before an invalidation must not put its (possibly old) answer in
//! the cache after it, nor be handed to callers who came after the invalidation: each cache
//! has an epoch, bumped by every invalidation, which also forgets the reads in flight; an
//! answer is stored only when the epoch did not move while it was read.
//!
//! Only successful answers are cached: an unknown, revoked or expired key is looked up
//! every time (its error names the reason).

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use futures::future::{BoxFuture, Shared};
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheOptions {
    /// How long a key's introspection is served; at most [`MAX_TTL`] (longer is cut to
    /// it); zero turns the key cache off.
    pub key_ttl: Duration,
    /// How long a cluster's effective policy is served; at most [`MAX_TTL`]; zero turns
    /// the cache off.
    pub effective_ttl: Duration,
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

/// A read in flight, awaited by every caller that wants its entry.
type Fill<V> = Shared<BoxFuture<'static, Result<V, Status>>>;

/// Whether a failed read means the entry is gone for good (rather than "try later").
fn is_definitive(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unauthenticated | Code::NotFound | Code::PermissionDenied
    )
}

/// A uniformly spread fraction in [0, 1), for the refresh times.
fn spread() -> f64 {
    // Every RandomState has fresh keys: hashing a constant gives a new value each time.
    let bits = RandomState::new().hash_one(0_u8);
    (bits >> 11) as f64 / (1_u64 << 53) as f64
}

/// When an entry read now is to be read again (if used) and when it may no longer be served.
fn deadlines(ttl: Duration) -> (Instant, Instant) {
    let now = Instant::now();
    (now + ttl.mul_f64(0.5 + 0.3 * spread()), now + ttl)
}

struct Entry<V> {
    value: V,
    refresh_at: Instant,
    expires_at: Instant,
}

impl<V> Entry<V> {
    fn new(value: V, ttl: Duration) -> Entry<V> {
        let (refresh_at, expires_at) = deadlines(ttl);
        Entry {
            value,
            refresh_at,
            expires_at,
        }
    }
}

/// The reads in flight of one cache.
struct Flights<K, V> {
    next_id: u64,
    running: HashMap<K, (u64, Fill<V>)>,
}

impl<K: Hash + Eq, V> Default for Flights<K, V> {
    fn default() -> Self {
        Flights {
            next_id: 0,
            running: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone + Send + Sync + 'static> Flights<K, V> {
    fn get(&self, key: &K) -> Option<Fill<V>> {
        self.running.get(key).map(|(_, fill)| fill.clone())
    }

    /// Spawns `fetch` followed by `finish(id, result)`, and records it as the read of `key`.
    fn start<F>(&mut self, key: K, fetch: Fetch<V>, finish: F) -> Fill<V>
    where
        F: FnOnce(u64, &Result<V, Status>) + Send + 'static,
    {
        self.next_id += 1;
        let id = self.next_id;
        let task = tokio::spawn(async move {
            let result = fetch.await;
            finish(id, &result);
            result
        });
        let fill = async move {
            task.await
                .unwrap_or_else(|e| Err(Status::internal(format!("a cache read failed: {e}"))))
        }
        .boxed()
        .shared();
        self.running.insert(key, (id, fill.clone()));
        fill
    }

    /// Forgets the read `id` of `key` (when it is still the recorded one).
    fn finish(&mut self, key: &K, id: u64) {
        if self.running.get(key).is_some_and(|(running, _)| *running == id) {
            self.running.remove(key);
        }
    }
}

/// A cache's answer: at hand, or a read to wait for.
pub(crate) enum Answer<V> {
    /// From the cache.
    Ready(V),
    /// A read in flight (shared with other callers).
    Wait(Fill<V>),
}

impl<V: Clone> Answer<V> {
    /// The value, once read when need be.
    pub(crate) async fn get(self) -> Result<V, Status> {
        match self {
            Answer::Ready(value) => Ok(value),
            Answer::Wait(fill) => fill.await,
        }
    }
}

/// What a lookup found.
enum Lookup<V> {
    /// Served as is.
    Fresh(V),
    /// Served as is; a read in the background is due.
    Due(V),
    /// Not served: read it.
    Miss,
}

#[derive(Default)]
struct KeyCache {
    epoch: u64,
    entries: HashMap<KeyHash, Entry<TenantKey>>,
    /// Tenant → hashes of its cached keys, to drop a key, a cluster's keys or a tenant.
    by_tenant: HashMap<String, HashSet<KeyHash>>,
    flights: Flights<KeyHash, TenantKey>,
}

impl KeyCache {
    fn lookup(&mut self, hash: &KeyHash, now: OffsetDateTime) -> Lookup<TenantKey> {
        let Some(entry) = self.entries.get(hash) else {
            return Lookup::Miss;
        };
        let at = Instant::now();
        if at >= entry.expires_at || entry.value.expires_at.is_some_and(|t| t <= now) {
            self.remove(hash);
            return Lookup::Miss;
        }
        if at >= entry.refresh_at {
            Lookup::Due(entry.value.clone())
        } else {
            Lookup::Fresh(entry.value.clone())
        }
    }

    fn insert(&mut self, hash: KeyHash, key: TenantKey, ttl: Duration, max: usize) {
        if self.entries.len() >= max && !self.entries.contains_key(&hash) {
            // Full: drop some other entry (any; the cache is a shortcut, not a record).
            if let Some(victim) = self.entries.keys().next().copied() {
                self.remove(&victim);
            }
        }
        self.by_tenant.entry(key.tenant_id.clone()).or_default().insert(hash);
        self.entries.insert(hash, Entry::new(key, ttl));
    }

    fn remove(&mut self, hash: &KeyHash) {
        if let Some(entry) = self.entries.remove(hash)
            && let Some(set) = self.by_tenant.get_mut(&entry.value.tenant_id)
        {
            set.remove(hash);
            if set.is_empty() {
                self.by_tenant.remove(&entry.value.tenant_id);
            }
        }
    }

    /// A change: later reads start afresh, reads in flight are not stored.
    fn invalidate(&mut self) {
        self.epoch += 1;
        self.flights.running.clear();
    }

    /// Drops the tenant's keys for which `matches` holds.
    fn evict_where(&mut self, tenant: &str, matches: impl Fn(&TenantKey) -> bool) {
        self.invalidate();
        let Some(hashes) = self.by_tenant.get(tenant) else {
            return;
        };
        let doomed: Vec<KeyHash> = hashes
            .iter()
            .filter(|h| self.entries.get(*h).is_some_and(|e| matches(&e.value)))
            .copied()
            .collect();
        for hash in &doomed {
            self.remove(hash);
        }
    }

    fn clear(&mut self) {
        self.invalidate();
        self.entries.clear();
        self.by_tenant.clear();
    }
}

/// Tenant and cluster id.
type ClusterKey = (String, String);

#[derive(Default)]
struct EffectiveCache {
    epoch: u64,
    /// Tenant → cluster id → answer.
    tenants: HashMap<String, HashMap<String, Entry<pb::GetEffectivePolicyResponse>>>,
    len: usize,
    flights: Flights<ClusterKey, pb::GetEffectivePolicyResponse>,
}

impl EffectiveCache {
    fn lookup(&mut self, tenant: &str, cluster_id: &str) -> Lookup<pb::GetEffectivePolicyResponse> {
        let Some(entry) = self.tenants.get(tenant).and_then(|c| c.get(cluster_id)) else {
            return Lookup::Miss;
        };
        let at = Instant::now();
        if at >= entry.expires_at {
            self.remove(tenant, cluster_id);
            Lookup::Miss
        } else if at >= entry.refresh_at {
            Lookup::Due(entry.value.clone())
        } else {
            Lookup::Fresh(entry.value.clone())
        }
    }

    fn insert(&mut self, tenant: &str, response: pb::GetEffectivePolicyResponse, ttl: Duration, max: usize) {
        let present = self
            .tenants
            .get(tenant)
            .is_some_and(|c| c.contains_key(&response.cluster_id));
        if !present && self.len >= max {
            // Full: drop some other entry (any; the cache is a shortcut, not a record).
            let victim = self
                .tenants
                .iter()
                .next()
                .and_then(|(t, c)| c.keys().next().map(|id| (t.clone(), id.clone())));
            if let Some((t, id)) = victim {
                self.remove(&t, &id);
            }
        }
        let clusters = self.tenants.entry(tenant.to_owned()).or_default();
        if clusters
            .insert(response.cluster_id.clone(), Entry::new(response, ttl))
            .is_none()
        {
            self.len += 1;
        }
    }

    fn remove(&mut self, tenant: &str, cluster_id: &str) {
        if let Some(clusters) = self.tenants.get_mut(tenant) {
            if clusters.remove(cluster_id).is_some() {
                self.len -= 1;
            }
            if clusters.is_empty() {
                self.tenants.remove(tenant);
            }
        }
    }

    /// A change: later reads start afresh, reads in flight are not stored.
    fn invalidate(&mut self) {
        self.epoch += 1;
        self.flights.running.clear();
    }

    fn evict_cluster(&mut self, tenant: &str, cluster_id: &str) {
        self.invalidate();
        self.remove(tenant, cluster_id);
    }

    fn evict_tenant(&mut self, tenant: &str) {
        self.invalidate();
        if let Some(clusters) = self.tenants.remove(tenant) {
            self.len -= clusters.len();
        }
    }

    /// Drops the clusters of the tenant to which policy `policy_id` is assigned.
    fn evict_policy(&mut self, tenant: &str, policy_id: &str) {
        self.invalidate();
        if let Some(clusters) = self.tenants.get_mut(tenant) {
            let before = clusters.len();
            clusters.retain(|_, e| e.value.policy.as_ref().is_none_or(|p| p.id != policy_id));
            self.len -= before - clusters.len();
            if clusters.is_empty() {
                self.tenants.remove(tenant);
            }
        }
    }

    fn clear(&mut self) {
        self.invalidate();
        self.tenants.clear();
        self.len = 0;
    }
}

/// Both caches. Shared by the services of one [`crate::PolicyStore`] and its authenticator.
pub struct Caches {
    options: CacheOptions,
    keys: Mutex<KeyCache>,
    effective: Mutex<EffectiveCache>,
    following: AtomicBool,
}

impl std::fmt::Debug for Caches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caches")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// A poisoned lock only means a panic elsewhere mid-update of a cache; the maps stay
/// consistent enough to use (worst case an entry is dropped early).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Caches {
    /// Empty caches; TTLs above [`MAX_TTL`] are cut to it.
    pub fn new(mut options: CacheOptions) -> Caches {
        options.key_ttl = options.key_ttl.min(MAX_TTL);
        options.effective_ttl = options.effective_ttl.min(MAX_TTL);
        Caches {
            options,
            keys: Mutex::new(KeyCache::default()),
            effective: Mutex::new(EffectiveCache::default()),
            following: AtomicBool::new(false),
        }
    }

    fn keys_on(&self) -> bool {
        !self.options.key_ttl.is_zero() && self.options.max_keys > 0
    }

    fn effective_on(&self) -> bool {
        !self.options.effective_ttl.is_zero() && self.options.max_clusters > 0
    }

    /// What the key of `hash` is: from the cache unless it is older than the TTL or the key
    /// has expired by `now` (the store's clock); else from `fetch` (one read shared by
    /// every caller of the same key meanwhile).
    pub(crate) fn key(
        self: &Arc<Self>,
        hash: KeyHash,
        now: OffsetDateTime,
        fetch: impl FnOnce() -> Fetch<TenantKey>,
    ) -> Answer<TenantKey> {
        if self.keys_on() {
            let mut cache = lock(&self.keys);
            match cache.lookup(&hash, now) {
                Lookup::Fresh(key) => Answer::Ready(key),
                Lookup::Due(key) => {
                    if cache.flights.get(&hash).is_none() {
                        drop(self.start_key_read(&mut cache, hash, fetch()));
                    }
                    Answer::Ready(key)
                }
                Lookup::Miss => Answer::Wait(match cache.flights.get(&hash) {
                    Some(fill) => fill,
                    None => self.start_key_read(&mut cache, hash, fetch()),
                }),
            }
        } else {
            Answer::Wait(fetch().shared())
        }
    }

    fn start_key_read(
        self: &Arc<Self>,
        cache: &mut KeyCache,
        hash: KeyHash,
        fetch: Fetch<TenantKey>,
    ) -> Fill<TenantKey> {
        let caches = Arc::clone(self);
        let epoch = cache.epoch;
        cache.flights.start(hash, fetch, move |id, result| {
            let mut cache = lock(&caches.keys);
            cache.flights.finish(&hash, id);
            match result {
                Ok(key) if cache.epoch == epoch => {
                    cache.insert(hash, key.clone(), caches.options.key_ttl, caches.options.max_keys);
                }
                Err(status) if is_definitive(status) => cache.remove(&hash),
                _ => {}
            }
        })
    }

    /// The effective policy of the tenant's cluster `cluster_id`: from the cache unless
    /// older than the TTL, else from `fetch` (one read shared by every caller of the same
    /// cluster meanwhile).
    pub(crate) fn effective(
        self: &Arc<Self>,
        tenant: &str,
        cluster_id: &str,
        fetch: impl FnOnce() -> Fetch<pb::GetEffectivePolicyResponse>,
    ) -> Answer<pb::GetEffectivePolicyResponse> {
        if self.effective_on() {
            let mut cache = lock(&self.effective);
            let key = (tenant.to_owned(), cluster_id.to_owned());
            match cache.lookup(tenant, cluster_id) {
                Lookup::Fresh(answer) => Answer::Ready(answer),
                Lookup::Due(answer) => {
                    if cache.flights.get(&key).is_none() {
                        drop(self.start_effective_read(&mut cache, key, fetch()));
                    }
                    Answer::Ready(answer)
                }
                Lookup::Miss => Answer::Wait(match cache.flights.get(&key) {
                    Some(fill) => fill,
                    None => self.start_effective_read(&mut cache, key, fetch()),
                }),
            }
        } else {
            Answer::Wait(fetch().shared())
        }
    }

    fn start_effective_read(
        self: &Arc<Self>,
        cache: &mut EffectiveCache,
        key: ClusterKey,
        fetch: Fetch<pb::GetEffectivePolicyResponse>,
    ) -> Fill<pb::GetEffectivePolicyResponse> {
        let caches = Arc::clone(self);
        let epoch = cache.epoch;
        let flight_key = key.clone();
        cache.flights.start(flight_key, fetch, move |id, result| {
            let mut cache = lock(&caches.effective);
            cache.flights.finish(&key, id);
            let (tenant, cluster_id) = &key;
            match result {
                // Cached under the cluster it answers for (the read was by that id).
                Ok(answer) if cache.epoch == epoch && answer.cluster_id == *cluster_id => {
                    cache.insert(
                        tenant,
                        answer.clone(),
                        caches.options.effective_ttl,
                        caches.options.max_clusters,
                    );
                }
                Err(status) if is_definitive(status) => cache.remove(tenant, cluster_id),
                _ => {}
            }
        })
    }

    /// Drops everything (for instance when the bus subscription was lost, so changes of
    /// other replicas may have been missed).
    pub fn clear(&self) {
        lock(&self.keys).clear();
        lock(&self.effective).clear();
    }

    /// Drops what one event says has changed.
    pub fn apply(&self, event: &pe::EventEnvelope) {
        use pe::event_envelope::Payload;
        let tenant = event.tenant_id.as_str();
        match &event.payload {
            Some(Payload::ApiKeyRevoked(revoked)) => {
                if revoked.reason == pe::RevocationReason::TenantDeleted as i32 {
                    lock(&self.keys).evict_where(tenant, |_| true);
                    lock(&self.effective).evict_tenant(tenant);
                } else {
                    lock(&self.keys).evict_where(tenant, |k| k.key_id == revoked.key_id);
                }
            }
            Some(Payload::ClusterChanged(changed)) => {
                let rotated = changed
                    .aspects
                    .contains(&(pe::ClusterChangeAspect::ConnectorKey as i32));
                let deleted = changed.change == pe::ChangeKind::Deleted as i32;
                if rotated || deleted {
                    // The previous keys now end with their grace period (or at once).
                    lock(&self.keys).evict_where(tenant, |k| k.cluster_id.as_deref() == Some(&changed.cluster_id));
                }
                lock(&self.effective).evict_cluster(tenant, &changed.cluster_id);
            }
            Some(Payload::PolicyChanged(changed)) => {
                lock(&self.effective).evict_policy(tenant, &changed.policy_id);
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
        (lock(&self.keys).entries.len(), lock(&self.effective).len)
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

    async fn eventually(what: &str, check: impl Fn() -> bool) {
        for _ in 0..500 {
            if check() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("timed out waiting until {what}");
    }

    #[tokio::test]
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

    #[tokio::test]
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

    #[tokio::test]
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
            lock(&c.effective).tenants["t1"]["c1"].value.policy.as_ref().unwrap().id == "p2"
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

    #[tokio::test]
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

    #[tokio::test]
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

    #[tokio::test]
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

    #[tokio::test]
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

    #[tokio::test]
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
        assert!(lock(&c.effective).tenants.contains_key("t2"));
    }

    #[tokio::test]
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
        assert!(!lock(&c.effective).tenants["t1"].contains_key("c1"));
        c.apply(&changed(pe::ClusterChangeAspect::ConnectorKey));
        let keys = lock(&c.keys);
        assert_eq!(keys.entries.len(), 1, "rotation changes the old key's expiry");
        assert!(keys.entries.contains_key(&key_hash("s2")));
    }

    #[tokio::test]
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
        let effective = lock(&c.effective);
        assert!(!effective.tenants["t1"].contains_key("c1"));
        assert!(effective.tenants["t1"].contains_key("c2"));
        assert!(
            effective.tenants["t2"].contains_key("c3"),
            "another tenant's policy of the same id stays"
        );
    }

    #[tokio::test]
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
        assert!(
            lock(&c.keys).entries.contains_key(&key_hash("s9")),
            "the newest entry is kept"
        );
        assert!(lock(&c.effective).tenants.contains_key("t9"));
    }

    #[tokio::test]
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
