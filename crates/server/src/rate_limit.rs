//! Per-tenant rate limits: one token bucket per tenant, so a tenant flooding a service is
//! refused (`ResourceExhausted`) while every other tenant keeps its own budget. Admission
//! limits each review with one (gRPC and webhook alike); the policy store limits every call
//! made with a tenant's key ([`crate::AuthState::rate_limit`]).
//!
//! Each tenant's bucket holds up to `burst` tokens and refills at `per_second`; a call
//! takes one token, and a tenant with no token left is refused with a [`RateLimited`]
//! telling when the next token arrives. Limits are per replica (buckets live in memory).
//!
//! The hot path is a hash of the tenant id, one short lock of one of [`SHARDS`] shards and a
//! few float operations; a known tenant costs no allocation. The number of buckets is
//! bounded by [`RateLimitConfig::max_tenants`]: a bucket that has refilled completely is
//! the same as no bucket, so idle ones are evicted first.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Number of independently locked shards of the bucket map: enough that two busy tenants
/// rarely wait on each other, few enough that the bound per shard stays meaningful.
pub const SHARDS: usize = 16;

/// Default sustained rate per tenant and replica, in calls per second: the default of admission's Review. One replica on two
/// cores evaluates on the order of ten thousand reviews per second; 1000/s per tenant is far
/// above what even a large cluster's API server sends in a rollout, yet keeps one tenant
/// from taking more than a tenth of a replica.
pub const DEFAULT_PER_SECOND: f64 = 1000.0;
/// Default burst per tenant: two seconds at the default rate, so a rollout's spike passes.
pub const DEFAULT_BURST: u32 = 2000;
/// Default bound on tracked tenants. A tenant's bucket is only needed while it is below full
/// (two seconds after its last review at the defaults), so this is the number of tenants
/// that can be *busy at once* before the least recently seen one is forgotten; at about
/// 150 bytes a bucket it costs at most a few MiB.
pub const DEFAULT_MAX_TENANTS: usize = 10_000;

/// One tenant's limit: a sustained rate and a burst.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantLimit {
    /// Sustained calls per second; `0` means unlimited (no bucket is kept).
    pub per_second: f64,
    /// Calls that may arrive at once after an idle period (bucket size); at least 1 when
    /// `per_second` is positive.
    pub burst: u32,
}

impl TenantLimit {
    /// No limit.
    pub const UNLIMITED: TenantLimit = TenantLimit {
        per_second: 0.0,
        burst: 0,
    };

    /// A limit of `per_second` with a burst of two seconds' worth (at least 1).
    pub fn per_second(per_second: f64) -> TenantLimit {
        TenantLimit {
            per_second,
            burst: default_burst(per_second),
        }
    }

    /// Whether this limit lets everything through.
    pub fn is_unlimited(&self) -> bool {
        self.per_second == 0.0
    }

    /// Checks that the rate is a finite non-negative number and that a limited rate has a
    /// burst of at least 1.
    pub fn validate(&self) -> Result<(), String> {
        if !self.per_second.is_finite() || self.per_second < 0.0 {
            return Err(format!(
                "rate {} must be a finite number >= 0 (0 = unlimited)",
                self.per_second
            ));
        }
        if self.per_second > 0.0 && self.burst == 0 {
            return Err("burst must be at least 1 when the rate is limited".to_owned());
        }
        Ok(())
    }
}

/// Two seconds at `per_second`, at least 1, saturating.
fn default_burst(per_second: f64) -> u32 {
    if !per_second.is_finite() || per_second <= 0.0 {
        return 0;
    }
    let burst = (per_second * 2.0).ceil();
    if burst >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        // In range and integral, so the cast is exact.
        (burst as u32).max(1)
    }
}

impl FromStr for TenantLimit {
    type Err = String;

    /// Parses `rate[:burst]`, e.g. `500` (burst 1000) or `500:50`; `0` is unlimited.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (rate, burst) = match s.split_once(':') {
            Some((rate, burst)) => (rate, Some(burst)),
            None => (s, None),
        };
        let per_second: f64 = rate
            .trim()
            .parse()
            .map_err(|_| format!("rate {rate:?} is not a number"))?;
        let limit = match burst {
            Some(burst) => TenantLimit {
                per_second,
                burst: burst
                    .trim()
                    .parse()
                    .map_err(|_| format!("burst {burst:?} is not a whole number"))?,
            },
            None => TenantLimit::per_second(per_second),
        };
        limit.validate()?;
        Ok(limit)
    }
}

/// Why a rate limit configuration was refused; `field` names the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid rate limit {field}: {reason}")]
pub struct RateLimitConfigError {
    /// The offending setting: `default`, `max_tenants` or `override <tenant>`.
    pub field: String,
    /// Why it was refused.
    pub reason: String,
}

/// Rate limits per tenant.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// The limit of every tenant without an override; [`TenantLimit::UNLIMITED`] turns
    /// limiting off.
    pub default: TenantLimit,
    /// Limits of particular tenants, by tenant id.
    pub overrides: HashMap<String, TenantLimit>,
    /// Bound on the number of tenants whose buckets are kept (see [`DEFAULT_MAX_TENANTS`]).
    pub max_tenants: usize,
}

impl Default for RateLimitConfig {
    /// [`DEFAULT_PER_SECOND`], [`DEFAULT_BURST`], no overrides, [`DEFAULT_MAX_TENANTS`].
    fn default() -> Self {
        Self {
            default: TenantLimit {
                per_second: DEFAULT_PER_SECOND,
                burst: DEFAULT_BURST,
            },
            overrides: HashMap::new(),
            max_tenants: DEFAULT_MAX_TENANTS,
        }
    }
}

impl RateLimitConfig {
    /// No limits at all.
    pub fn unlimited() -> Self {
        Self {
            default: TenantLimit::UNLIMITED,
            ..Self::default()
        }
    }

    /// Checks every limit, the override tenant ids and `max_tenants`.
    pub fn validate(&self) -> Result<(), RateLimitConfigError> {
        let error = |field: String, reason: String| RateLimitConfigError { field, reason };
        self.default.validate().map_err(|r| error("default".to_owned(), r))?;
        if self.max_tenants == 0 {
            return Err(error("max_tenants".to_owned(), "must be greater than zero".to_owned()));
        }
        for (tenant, limit) in &self.overrides {
            validate_tenant(tenant).map_err(|r| error("override".to_owned(), r))?;
            limit.validate().map_err(|r| error(format!("override {tenant}"), r))?;
        }
        Ok(())
    }

    /// Adds one override given as `tenant=rate[:burst]` (the form of a command-line flag),
    /// e.g. `3f2a-acme=200:400`; a later override of the same tenant replaces an earlier one.
    pub fn add_override(&mut self, spec: &str) -> Result<(), RateLimitConfigError> {
        let (tenant, limit) = parse_override(spec)?;
        self.overrides.insert(tenant, limit);
        Ok(())
    }

    /// The limit that applies to `tenant`.
    pub fn limit_for(&self, tenant: &str) -> TenantLimit {
        if self.overrides.is_empty() {
            return self.default;
        }
        self.overrides.get(tenant).copied().unwrap_or(self.default)
    }
}

/// Parses `tenant=rate[:burst]`.
pub fn parse_override(spec: &str) -> Result<(String, TenantLimit), RateLimitConfigError> {
    let error = |reason: String| RateLimitConfigError {
        field: "override".to_owned(),
        reason,
    };
    let (tenant, limit) = spec
        .split_once('=')
        .ok_or_else(|| error(format!("{spec:?} is not tenant=rate[:burst]")))?;
    let tenant = tenant.trim();
    validate_tenant(tenant).map_err(error)?;
    let limit: TenantLimit = limit.parse().map_err(|r| error(format!("{tenant}: {r}")))?;
    Ok((tenant.to_owned(), limit))
}

fn validate_tenant(tenant: &str) -> Result<(), String> {
    portcullis_domain::TenantId::parse(tenant)
        .map(drop)
        .map_err(|e| format!("tenant id {}", e.reason))
}

/// A call refused because its tenant is over its rate limit (`ResourceExhausted`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "tenant {tenant} exceeded its rate limit of {} calls per second (burst {}); retry after {} ms",
    limit.per_second,
    limit.burst,
    retry_after.as_millis().max(1)
)]
pub struct RateLimited {
    /// The tenant.
    pub tenant: String,
    /// Its limit.
    pub limit: TenantLimit,
    /// When its next token arrives.
    pub retry_after: Duration,
}

/// One tenant's token bucket.
#[derive(Debug)]
struct Bucket {
    /// Tokens available at `updated`, at most the burst.
    tokens: f64,
    /// When `tokens` was computed (never moves backwards).
    updated: Instant,
}

impl Bucket {
    /// Refills the bucket up to `now`.
    fn refill(&mut self, limit: &TenantLimit, now: Instant) {
        if now > self.updated {
            let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
            self.tokens = (self.tokens + elapsed * limit.per_second).min(f64::from(limit.burst));
            self.updated = now;
        }
    }

    /// Whether the bucket, refilled to `now`, would be full: then it is the same as no bucket.
    fn is_full_at(&self, limit: &TenantLimit, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens + elapsed * limit.per_second >= f64::from(limit.burst)
    }
}

/// One shard of the bucket map.
#[derive(Debug, Default)]
struct Shard {
    buckets: HashMap<String, Bucket>,
}

/// Per-tenant token buckets; cheap to share (`Arc`) between request handlers.
#[derive(Debug)]
pub struct TenantRateLimiter {
    config: RateLimitConfig,
    /// Buckets kept per shard before idle ones are evicted.
    shard_capacity: usize,
    shards: Box<[Mutex<Shard>]>,
    rejected: AtomicU64,
}

impl TenantRateLimiter {
    /// A limiter with `config`, which should have passed [`RateLimitConfig::validate`]
    /// (an invalid limit is treated as unlimited rather than refusing every call).
    pub fn new(config: RateLimitConfig) -> Self {
        let shard_capacity = config.max_tenants.div_ceil(SHARDS).max(1);
        Self {
            config,
            shard_capacity,
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            rejected: AtomicU64::new(0),
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &RateLimitConfig {
        &self.config
    }

    /// Takes one token of `tenant`'s bucket now, or says when to retry.
    pub fn check(&self, tenant: &str) -> Result<(), RateLimited> {
        self.check_at(tenant, Instant::now())
    }

    /// [`TenantRateLimiter::check`] at a given instant (tests use synthetic instants). An
    /// instant earlier than one already seen for the tenant counts as that one.
    pub fn check_at(&self, tenant: &str, now: Instant) -> Result<(), RateLimited> {
        let limit = self.config.limit_for(tenant);
        if limit.is_unlimited() || limit.validate().is_err() {
            return Ok(());
        }
        let mut shard = self.shard(tenant);
        let result = match shard.buckets.get_mut(tenant) {
            Some(bucket) => {
                bucket.refill(&limit, now);
                take(bucket, &limit)
            }
            None => {
                if shard.buckets.len() >= self.shard_capacity {
                    evict(&mut shard, &self.config, self.shard_capacity, now);
                }
                let mut bucket = Bucket {
                    tokens: f64::from(limit.burst),
                    updated: now,
                };
                let result = take(&mut bucket, &limit);
                shard.buckets.insert(tenant.to_owned(), bucket);
                result
            }
        };
        drop(shard);
        result.map_err(|retry_after| {
            self.rejected.fetch_add(1, Ordering::Relaxed);
            RateLimited {
                tenant: tenant.to_owned(),
                limit,
                retry_after,
            }
        })
    }

    /// Calls refused so far, all tenants together.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Tenants whose buckets are kept now (at most about `max_tenants`).
    pub fn tracked_tenants(&self) -> usize {
        self.shards.iter().map(|s| lock(s).buckets.len()).sum()
    }

    #[allow(clippy::indexing_slicing)] // shard_index is below SHARDS, the length of `shards`
    fn shard(&self, tenant: &str) -> MutexGuard<'_, Shard> {
        lock(&self.shards[shard_index(tenant)])
    }
}

/// The shard of a tenant: a fixed-key hash, so the same tenant always lands in the same one.
fn shard_index(tenant: &str) -> usize {
    let mut hasher = DefaultHasher::new();
    tenant.hash(&mut hasher);
    // Below SHARDS, so the cast is exact.
    (hasher.finish() % SHARDS as u64) as usize
}

/// Locks a shard; a poisoned lock only means another thread panicked mid-update of plain
/// numbers, which leaves nothing inconsistent, so its data is used as is.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Takes one token, or returns how long until one is available.
fn take(bucket: &mut Bucket, limit: &TenantLimit) -> Result<(), Duration> {
    if bucket.tokens >= 1.0 {
        bucket.tokens -= 1.0;
        Ok(())
    } else {
        let wait = (1.0 - bucket.tokens) / limit.per_second;
        Err(Duration::try_from_secs_f64(wait).unwrap_or(Duration::MAX))
    }
}

/// Makes room in a full shard: drops every bucket that has refilled completely (forgetting
/// it changes nothing), and if none has, the least recently updated one.
fn evict(shard: &mut Shard, config: &RateLimitConfig, capacity: usize, now: Instant) {
    shard
        .buckets
        .retain(|tenant, bucket| !bucket.is_full_at(&config.limit_for(tenant), now));
    if shard.buckets.len() >= capacity {
        let oldest = shard
            .buckets
            .iter()
            .min_by_key(|(_, b)| b.updated)
            .map(|(tenant, _)| tenant.clone());
        if let Some(tenant) = oldest {
            shard.buckets.remove(&tenant);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    // Rates are powers of two so that the synthetic instants give exact token counts.
    fn limiter(per_second: f64, burst: u32) -> TenantRateLimiter {
        TenantRateLimiter::new(RateLimitConfig {
            default: TenantLimit { per_second, burst },
            ..RateLimitConfig::default()
        })
    }

    /// How many of `n` checks at `now` pass.
    fn passes(l: &TenantRateLimiter, tenant: &str, n: usize, now: Instant) -> usize {
        (0..n).filter(|_| l.check_at(tenant, now).is_ok()).count()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn burst_then_refusal_with_retry_after() {
        let l = limiter(8.0, 4);
        let t0 = Instant::now();
        assert_eq!(passes(&l, "t1", 4, t0), 4);
        let err = l.check_at("t1", t0).unwrap_err();
        assert_eq!(err.tenant, "t1");
        // One token every 125 ms at 8/s.
        assert_eq!(err.retry_after, ms(125));
        assert_eq!(
            err.to_string(),
            "tenant t1 exceeded its rate limit of 8 calls per second (burst 4); retry after 125 ms"
        );
        // Half a token later, half the wait.
        assert_eq!(
            l.check_at("t1", t0 + ms(62) + Duration::from_micros(500))
                .unwrap_err()
                .retry_after,
            ms(62) + Duration::from_micros(500)
        );
        assert_eq!(l.rejected(), 2);
    }

    #[test]
    fn refills_over_time_up_to_the_burst() {
        let l = limiter(8.0, 4);
        let t0 = Instant::now();
        assert_eq!(passes(&l, "t1", 4, t0), 4);
        // 250 ms later: 2 tokens.
        assert_eq!(passes(&l, "t1", 10, t0 + ms(250)), 2);
        // An hour later: only the burst.
        let t1 = t0 + Duration::from_secs(3600);
        assert_eq!(passes(&l, "t1", 100, t1), 4);
        // Sustained: one check every 1/64 s for 2 s passes 16 (8/s), one every 8 checks.
        let ok: Vec<u32> = (1..=128)
            .filter(|i| l.check_at("t1", t1 + Duration::from_secs(1) * *i / 64).is_ok())
            .collect();
        assert_eq!(ok, (1..=16).map(|k| k * 8).collect::<Vec<_>>());
        assert_eq!(l.rejected(), 8 + 96 + 112);
    }

    #[test]
    fn an_instant_from_the_past_does_not_refill() {
        let l = limiter(8.0, 2);
        let t0 = Instant::now() + Duration::from_secs(10);
        assert_eq!(passes(&l, "t1", 2, t0), 2);
        assert!(l.check_at("t1", t0 - Duration::from_secs(5)).is_err());
        assert!(l.check_at("t1", t0).is_err());
        assert!(l.check_at("t1", t0 + ms(125)).is_ok());
    }

    #[test]
    fn one_tenant_exhausted_does_not_affect_another() {
        let l = limiter(8.0, 4);
        let t0 = Instant::now();
        assert_eq!(passes(&l, "noisy", 1000, t0), 4);
        assert_eq!(l.rejected(), 996);
        assert_eq!(passes(&l, "quiet", 4, t0), 4);
        assert!(l.check_at("quiet", t0).is_err());
        assert_eq!(l.rejected(), 997);
        // The noisy tenant keeps being refused while the quiet one refills.
        let t1 = t0 + ms(125);
        assert!(l.check_at("quiet", t1).is_ok());
    }

    #[test]
    fn overrides_apply_to_their_tenant_only() {
        let mut config = RateLimitConfig {
            default: TenantLimit {
                per_second: 1.0,
                burst: 2,
            },
            ..RateLimitConfig::default()
        };
        config.add_override("big=100:50").unwrap();
        config.add_override("free=0").unwrap();
        config.validate().unwrap();
        let l = TenantRateLimiter::new(config);
        let t0 = Instant::now();
        assert_eq!(passes(&l, "small", 10, t0), 2);
        assert_eq!(passes(&l, "big", 100, t0), 50);
        assert_eq!(passes(&l, "free", 10_000, t0), 10_000);
        assert_eq!(l.rejected(), 8 + 50);
        // The unlimited tenant keeps no bucket.
        assert_eq!(l.tracked_tenants(), 2);
    }

    #[test]
    fn unlimited_default_lets_everything_through() {
        let l = TenantRateLimiter::new(RateLimitConfig::unlimited());
        assert_eq!(passes(&l, "t1", 100_000, Instant::now()), 100_000);
        assert_eq!(l.rejected(), 0);
        assert_eq!(l.tracked_tenants(), 0);
    }

    #[test]
    fn tenant_count_is_bounded() {
        let l = TenantRateLimiter::new(RateLimitConfig {
            default: TenantLimit {
                per_second: 1.0,
                burst: 1,
            },
            overrides: HashMap::new(),
            max_tenants: 64,
        });
        let t0 = Instant::now();
        // 1000 tenants, each left exhausted: never more than the bound kept.
        for i in 0..1000 {
            assert!(l.check_at(&format!("t{i}"), t0).is_ok());
            assert!(l.tracked_tenants() <= 64, "{} buckets", l.tracked_tenants());
        }
        let t1 = t0 + Duration::from_secs(10);
        for i in 0..1000 {
            assert!(l.check_at(&format!("u{i}"), t1).is_ok());
        }
        assert!(l.tracked_tenants() <= 64, "{} buckets", l.tracked_tenants());
    }

    #[test]
    fn refilled_buckets_are_evicted_before_busy_ones() {
        // Two buckets per shard; four tenants of one shard.
        let l = TenantRateLimiter::new(RateLimitConfig {
            default: TenantLimit {
                per_second: 8.0,
                burst: 3,
            },
            overrides: HashMap::new(),
            max_tenants: 2 * SHARDS,
        });
        let target = shard_index("t0");
        let same: Vec<String> = (1..)
            .map(|i| format!("t{i}"))
            .filter(|t| shard_index(t) == target)
            .take(3)
            .collect();
        let [b, c, d]: [String; 3] = same.try_into().unwrap();
        let (a, b, c, d) = ("t0", b.as_str(), c.as_str(), d.as_str());
        let t0 = Instant::now();
        assert!(l.check_at(b, t0).is_ok());
        // `a` is exhausted 10 s later, when `b` has long refilled.
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(passes(&l, a, 10, t1), 3);
        // A newcomer evicts `b`, not `a`: `a` is still refused.
        assert!(l.check_at(c, t1 + ms(1)).is_ok());
        assert!(l.check_at(a, t1 + ms(2)).is_err());
        // With only busy buckets left, the least recently used one goes (the bound wins).
        assert!(l.check_at(d, t1 + ms(3)).is_ok());
        let kept = l.shards.get(target).map(|s| lock(s).buckets.len());
        assert_eq!(kept, Some(2));
        assert!(l.check_at(a, t1 + ms(4)).is_err());
    }

    #[test]
    fn config_parsing_and_validation() {
        assert_eq!(
            "500".parse::<TenantLimit>().unwrap(),
            TenantLimit {
                per_second: 500.0,
                burst: 1000
            }
        );
        assert_eq!(
            "0.5:3".parse::<TenantLimit>().unwrap(),
            TenantLimit {
                per_second: 0.5,
                burst: 3
            }
        );
        assert_eq!("0.1".parse::<TenantLimit>().unwrap().burst, 1);
        assert!("0".parse::<TenantLimit>().unwrap().is_unlimited());
        for bad in ["", "x", "-1", "NaN", "inf", "5:0", "5:x", "5:-1"] {
            assert!(bad.parse::<TenantLimit>().is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            parse_override("3f2a-acme=200:400").unwrap(),
            (
                "3f2a-acme".to_owned(),
                TenantLimit {
                    per_second: 200.0,
                    burst: 400
                }
            )
        );
        for bad in ["acme", "=5", "Acme=5", "a.b=5", "acme=x"] {
            let err = parse_override(bad).unwrap_err();
            assert_eq!(err.field, "override", "{bad:?}");
        }
        assert!(RateLimitConfig::default().validate().is_ok());
        let c = RateLimitConfig {
            max_tenants: 0,
            ..RateLimitConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().field, "max_tenants");
        let c = RateLimitConfig {
            default: TenantLimit {
                per_second: f64::NAN,
                burst: 1,
            },
            ..RateLimitConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().field, "default");
        let mut c = RateLimitConfig::default();
        c.overrides.insert(
            "t1".into(),
            TenantLimit {
                per_second: 5.0,
                burst: 0,
            },
        );
        assert_eq!(c.validate().unwrap_err().field, "override t1");
    }
}
