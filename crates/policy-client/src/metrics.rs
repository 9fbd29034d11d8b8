//! The hook through which a service records what the caches of this library do.
//!
//! The library creates no instruments of its own: each service already has a metric of its
//! cache lookups (admission: `portcullis.admission.cache.lookups` with `cache="key"`), and
//! implements [`KeyLookupMetrics`] to record into it.

use std::fmt::Debug;

/// Records the key cache's lookups (called once per authentication, on the request path:
/// implementations must not block or allocate).
pub trait KeyLookupMetrics: Debug + Send + Sync {
    /// A key lookup was served from the cache (`hit`) or had to ask the policy store.
    fn key_lookup(&self, hit: bool);
}

/// Records nothing (tests, and services without a cache metric).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoMetrics;

impl KeyLookupMetrics for NoMetrics {
    fn key_lookup(&self, _hit: bool) {}
}
