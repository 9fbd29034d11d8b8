//! Tenant keys checked through the policy store's `AuthService.Introspect`, cached.
//!
//! - An answer is trusted for [`KeyCacheOptions::ttl`] (30 s): a key revoked on another
//!   replica is refused within that time even if its bus event is lost; the bus event
//!   (`apikey.revoked`) drops it at once. A key past its expiry is never served.
//! - A key in use is introspected again in the background after half the TTL, so callers of
//!   a busy key never wait for the policy store.
//! - When the policy store cannot be reached, an answer up to [`KeyCacheOptions::max_stale`]
//!   old keeps serving (admission must not stop because storage is down; revocations made
//!   meanwhile still arrive by the bus). Unknown, revoked and expired keys are not cached.
//! - The secret itself is never kept: entries are keyed by its SHA-256.
//! - One introspection per key at a time, whoever asks (the kit's refreshing cache,
//!   [`portcullis_kit::cache`]).

use std::sync::Arc;
use std::time::Duration;

use portcullis_kit::cache::{Cache, CacheConfig};

use portcullis_proto::common::v1 as pc;
use portcullis_server::{Authenticator, BoxFuture, Role, TenantKey};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tonic::{Code, Status};

use crate::metrics::KeyLookupMetrics;
use crate::upstream::Upstream;

/// Sizing and timing of the key cache.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeyCacheOptions {
    /// How long an introspection is trusted.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// How old an answer may be and still serve while the policy store is unreachable.
    #[serde(with = "humantime_serde")]
    pub max_stale: Duration,
    /// How long an unknown, revoked or expired key's refusal is served before the policy
    /// store is asked again (default 5 s): junk tokens sent again and again cost one lookup
    /// each interval. Zero: off.
    #[serde(with = "humantime_serde")]
    pub negative_ttl: Duration,
    /// At most this many keys; beyond it the oldest answers are dropped.
    pub max_entries: usize,
}

impl Default for KeyCacheOptions {
    fn default() -> KeyCacheOptions {
        KeyCacheOptions {
            ttl: Duration::from_secs(30),
            max_stale: Duration::from_secs(600),
            negative_ttl: Duration::from_secs(5),
            max_entries: 100_000,
        }
    }
}

#[derive(Debug)]
struct Inner {
    upstream: Upstream,
    entries: Cache<[u8; 32], TenantKey, Status>,
    metrics: Arc<dyn KeyLookupMetrics>,
}

/// The [`Authenticator`] of the services that check tenant keys with the policy store
/// (cheap to clone).
#[derive(Debug, Clone)]
pub struct IntrospectingAuthenticator {
    inner: Arc<Inner>,
}

fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn role_of(value: i32) -> Option<Role> {
    match pc::Role::try_from(value).ok()? {
        pc::Role::Admin => Some(Role::Admin),
        pc::Role::Editor => Some(Role::Editor),
        pc::Role::Viewer => Some(Role::Viewer),
        pc::Role::Connector => Some(Role::Connector),
        pc::Role::Unspecified => None,
    }
}

fn expired(key: &TenantKey) -> bool {
    key.expires_at.is_some_and(|at| at <= OffsetDateTime::now_utc())
}

impl IntrospectingAuthenticator {
    /// Keys checked with `upstream`; each lookup's hit or miss is recorded in `metrics`.
    pub fn new(
        upstream: Upstream,
        options: KeyCacheOptions,
        metrics: Arc<dyn KeyLookupMetrics>,
    ) -> IntrospectingAuthenticator {
        let config = CacheConfig {
            refresh: options.ttl / 2..=options.ttl / 2,
            max_stale: options.max_stale,
            unreachable: store_unreachable,
            // An inactive key (see `introspect`) leaves the cache.
            gone: |status| status.code() == Code::Unauthenticated,
            negative_ttl: options.negative_ttl,
            ..CacheConfig::with_ttl(options.ttl, options.max_entries)
        };
        IntrospectingAuthenticator {
            inner: Arc::new(Inner {
                upstream,
                entries: Cache::new(config),
                metrics,
            }),
        }
    }

    /// Drops the answer of the key `key_id` (it was revoked).
    pub fn forget_key(&self, key_id: &str) {
        self.inner.entries.invalidate_where(|_, key| key.key_id == key_id);
    }

    /// Drops every answer (after a gap in the bus events, nothing cached can be vouched for;
    /// callers re-introspect, which is one call per key).
    pub fn clear(&self) {
        self.inner.entries.invalidate_all();
    }

    /// How many keys are cached.
    pub fn len(&self) -> usize {
        self.inner.entries.len()
    }

    /// Whether no key is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    async fn check(&self, secret: &str) -> Result<TenantKey, Status> {
        let answer = self
            .inner
            .entries
            .get_if(hash(secret), |key| !expired(key), || self.introspect(secret));
        self.inner.metrics.key_lookup(answer.is_hit());
        match answer.get().await {
            Err(status) if not_checked(&status) => Err(Status::unavailable(format!(
                "the credential cannot be checked now: {}",
                status.message()
            ))),
            result => result,
        }
    }

    /// Introspects `secret`; an inactive key is refused.
    fn introspect(&self, secret: &str) -> impl Future<Output = Result<TenantKey, Status>> + Send + 'static + use<> {
        let (upstream, secret) = (self.inner.upstream.clone(), secret.to_owned());
        async move {
            let answer = upstream.introspect(&secret).await?;
            match role_of(answer.role) {
                Some(role) if answer.active => Ok(TenantKey {
                    tenant_id: answer.tenant_id,
                    role,
                    cluster_id: Some(answer.cluster_id).filter(|c| !c.is_empty()),
                    key_id: answer.key_id,
                    expires_at: answer
                        .expires_at
                        .and_then(|t| OffsetDateTime::from_unix_timestamp(t.seconds).ok()),
                }),
                _ => Err(Status::unauthenticated("unknown, revoked or expired key")),
            }
        }
    }
}

/// Whether an introspection failed on the store's side (no answer, or the store's own
/// error): the caller is told the key cannot be checked now (`Unavailable`), not that it is
/// bad.
fn not_checked(status: &Status) -> bool {
    store_unreachable(status) || matches!(status.code(), Code::Unknown | Code::Aborted | Code::Internal)
}

/// Whether an introspection failed because no answer came (the store is down or did not
/// answer in time: the transport's `Unavailable`, and the deadline's `DeadlineExceeded` or
/// tonic's client-side `Cancelled`). Only then may a cached key serve past its lifetime. An
/// answer the store did give (`Internal`, `Unknown`, ...) is not an outage: serving a cached
/// key on it would let a key revoked meanwhile pass for as long as the store errs.
fn store_unreachable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled
    )
}

impl Authenticator for IntrospectingAuthenticator {
    fn authenticate<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<TenantKey, Status>> {
        Box::pin(self.check(key))
    }

    fn forget_key(&self, key_id: &str) {
        IntrospectingAuthenticator::forget_key(self, key_id);
    }

    fn forget_all(&self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_absent_answer_serves_a_stale_key() {
        for code in [Code::Unavailable, Code::DeadlineExceeded, Code::Cancelled] {
            assert!(store_unreachable(&Status::new(code, "")), "{code:?}");
        }
        for code in [
            Code::Internal,
            Code::Unknown,
            Code::Aborted,
            Code::Unauthenticated,
            Code::PermissionDenied,
            Code::InvalidArgument,
        ] {
            assert!(!store_unreachable(&Status::new(code, "")), "{code:?}");
        }
    }
}
