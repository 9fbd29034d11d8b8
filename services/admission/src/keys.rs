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

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use portcullis_proto::common::v1 as pc;
use portcullis_server::{Authenticator, BoxFuture, Role, TenantKey};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tonic::{Code, Status};

use crate::metrics::{AdmissionMetrics, CacheKind};
use crate::upstream::Upstream;

/// Sizing and timing of the key cache.
#[derive(Debug, Clone)]
pub struct KeyCacheOptions {
    /// How long an introspection is trusted.
    pub ttl: Duration,
    /// How old an answer may be and still serve while the policy store is unreachable.
    pub max_stale: Duration,
    /// At most this many keys; beyond it the oldest answers are dropped.
    pub max_entries: usize,
}

impl Default for KeyCacheOptions {
    fn default() -> KeyCacheOptions {
        KeyCacheOptions {
            ttl: Duration::from_secs(30),
            max_stale: Duration::from_secs(600),
            max_entries: 100_000,
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    key: TenantKey,
    fetched: Instant,
    refreshing: bool,
}

#[derive(Debug)]
struct Inner {
    upstream: Upstream,
    options: KeyCacheOptions,
    entries: Mutex<HashMap<[u8; 32], Entry>>,
    metrics: AdmissionMetrics,
}

/// The [`Authenticator`] of the admission service (cheap to clone).
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
    /// Keys checked with `upstream`.
    pub fn new(upstream: Upstream, options: KeyCacheOptions, metrics: AdmissionMetrics) -> IntrospectingAuthenticator {
        IntrospectingAuthenticator {
            inner: Arc::new(Inner {
                upstream,
                options,
                entries: Mutex::new(HashMap::new()),
                metrics,
            }),
        }
    }

    /// Drops the answer of the key `key_id` (it was revoked).
    pub fn forget_key(&self, key_id: &str) {
        self.entries().retain(|_, e| e.key.key_id != key_id);
    }

    /// Drops every answer (after a gap in the bus events, nothing cached can be vouched for;
    /// callers re-introspect, which is one call per key).
    pub fn clear(&self) {
        self.entries().clear();
    }

    /// How many keys are cached.
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    /// Whether no key is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Entry>> {
        self.inner.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn check(&self, secret: &str) -> Result<TenantKey, Status> {
        let id = hash(secret);
        let ttl = self.inner.options.ttl;
        let cached = {
            let mut entries = self.entries();
            match entries.get_mut(&id) {
                Some(entry) if expired(&entry.key) => {
                    entries.remove(&id);
                    None
                }
                Some(entry) => {
                    let age = entry.fetched.elapsed();
                    if age < ttl {
                        if age >= ttl / 2 && !entry.refreshing {
                            entry.refreshing = true;
                            self.refresh_in_background(secret.to_owned(), id);
                        }
                        self.inner.metrics.cache_lookup(CacheKind::Key, true);
                        return Ok(entry.key.clone());
                    }
                    Some(entry.clone())
                }
                None => None,
            }
        };
        self.inner.metrics.cache_lookup(CacheKind::Key, false);
        match self.introspect(secret, id).await {
            Ok(key) => Ok(key),
            Err(status) if is_transient(&status) => match cached {
                Some(entry) if entry.fetched.elapsed() < self.inner.options.max_stale => {
                    tracing::debug!(error = %status, "policy store unreachable; serving a cached key introspection");
                    Ok(entry.key)
                }
                _ => Err(Status::unavailable(format!(
                    "the credential cannot be checked now: {}",
                    status.message()
                ))),
            },
            Err(status) => Err(status),
        }
    }

    /// Introspects and records the answer; an inactive key is removed.
    async fn introspect(&self, secret: &str, id: [u8; 32]) -> Result<TenantKey, Status> {
        let answer = self.inner.upstream.introspect(secret).await;
        let mut entries = self.entries();
        let answer = match answer {
            Ok(answer) => answer,
            Err(status) => {
                if let Some(entry) = entries.get_mut(&id) {
                    entry.refreshing = false;
                }
                return Err(status);
            }
        };
        let key = match role_of(answer.role) {
            Some(role) if answer.active => TenantKey {
                tenant_id: answer.tenant_id,
                role,
                cluster_id: Some(answer.cluster_id).filter(|c| !c.is_empty()),
                key_id: answer.key_id,
                expires_at: answer
                    .expires_at
                    .and_then(|t| OffsetDateTime::from_unix_timestamp(t.seconds).ok()),
            },
            _ => {
                entries.remove(&id);
                return Err(Status::unauthenticated("unknown, revoked or expired key"));
            }
        };
        if entries.len() >= self.inner.options.max_entries && !entries.contains_key(&id) {
            // Over the bound: drop the oldest tenth rather than grow.
            let mut ages: Vec<(Instant, [u8; 32])> = entries.iter().map(|(k, e)| (e.fetched, *k)).collect();
            ages.sort_unstable();
            for (_, k) in ages.iter().take(self.inner.options.max_entries / 10 + 1) {
                entries.remove(k);
            }
        }
        entries.insert(
            id,
            Entry {
                key: key.clone(),
                fetched: Instant::now(),
                refreshing: false,
            },
        );
        Ok(key)
    }

    fn refresh_in_background(&self, secret: String, id: [u8; 32]) {
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(status) = this.introspect(&secret, id).await
                && is_transient(&status)
            {
                tracing::debug!(error = %status, "refreshing a key introspection failed; keeping the answer");
            }
        });
    }
}

fn is_transient(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown | Code::Aborted | Code::Internal
    )
}

impl Authenticator for IntrospectingAuthenticator {
    fn authenticate<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<TenantKey, Status>> {
        Box::pin(self.check(key))
    }
}
