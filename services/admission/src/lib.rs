//! The admission evaluation service: judges the Kubernetes admission requests that cluster
//! connectors forward ([`grpc`], `AdmissionService`) or that a kube-apiserver sends to the
//! validating webhook ([`webhook`]), from memory.
//!
//! A review ([`Admission::review`]) never waits on storage or on the bus once its cluster is
//! known: the compiled policy and settings ([`policies`]), scan summaries
//! ([`portcullis_policy_client::scans`]) and key introspections
//! ([`portcullis_policy_client::keys`]) are cached, refreshed in the background, and replaced when
//! the policy store's events ([`follow`]) say they changed. A miss makes one call to the
//! policy store under the stage's deadline; what cannot be had follows the cluster's failure
//! mode (a cluster never seen: [`AdmissionOptions::default_failure_mode`]). Each tenant is
//! rate limited ([`rate_limit`]); every decision is published to the bus without blocking
//! the answer ([`decision_events`]); [`metrics`] go through OpenTelemetry.

pub mod decision_events;
pub mod error;
pub mod follow;
pub mod grpc;
pub mod metrics;
pub mod policies;
pub mod replay;
pub use portcullis_server::rate_limit;
pub mod review;
pub mod running;
pub mod signatures;
#[cfg(feature = "testing")]
pub mod testing;
pub mod webhook;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use portcullis_bus::Bus;
use portcullis_engine::evaluate::FailureMode;
use portcullis_policy_client::keys::{IntrospectingAuthenticator, KeyCacheOptions};
use portcullis_policy_client::scans::{ScanCache, ScanCacheOptions};

pub use error::AdmissionError;
pub use review::{
    DigestStage, ImageToVerify, MAX_REVIEW_BYTES, ReviewCaller, ReviewOutput, SignatureAnswers, SignatureOutcome,
    SignatureStage, SignatureVerdict,
};
pub use running::{RunningAdmission, ServeOptions};
pub use signatures::{BusDigestStage, BusSignatureStage};
// Admission's own API takes an `Upstream`: its callers need not name the library.
pub use portcullis_policy_client::{ClusterSel, Upstream, UpstreamTimeouts};

use crate::decision_events::{DecisionEventsConfig, DecisionPublisher, PublisherTask};
use crate::metrics::AdmissionMetrics;
use crate::policies::{PolicyCache, PolicyCacheOptions, PolicySource};
use crate::rate_limit::{RateLimitConfig, TenantRateLimiter};

/// A boxed, sendable future (for the object-safe stage hooks).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Deadlines, limits and cache sizing.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdmissionOptions {
    /// How long a review waits for its cluster's policy on a cache miss.
    #[serde(with = "humantime_serde")]
    pub policy_deadline: Duration,
    /// How long a review waits for scan summaries it does not hold.
    #[serde(with = "humantime_serde")]
    pub scan_deadline: Duration,
    /// How long the digest resolution stage may take.
    #[serde(with = "humantime_serde")]
    pub digest_deadline: Duration,
    /// How long the signature stage may take.
    #[serde(with = "humantime_serde")]
    pub signature_deadline: Duration,
    /// What a cluster whose policy cannot be had at all gets (we know nothing of its own
    /// failure mode then): fail-open, as the engine's default.
    pub default_failure_mode: FailureMode,
    /// Per-tenant rate limits.
    pub rate_limit: RateLimitConfig,
    /// The decision event queue.
    pub events: DecisionEventsConfig,
    /// The policy cache.
    pub policy_cache: PolicyCacheOptions,
    /// The scan cache.
    pub scan_cache: ScanCacheOptions,
    /// The key cache.
    pub key_cache: KeyCacheOptions,
    /// The follower of the policy store's events: retries and the outage bound.
    pub follower: portcullis_kit::FollowOptions,
    /// How often cached policies older than their refresh interval are re-checked.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// How long reviews in flight and background tasks may take to finish at shutdown.
    #[serde(with = "humantime_serde")]
    pub drain_deadline: Duration,
    /// How long the final flush of decision events may take at shutdown.
    #[serde(with = "humantime_serde")]
    pub flush_timeout: Duration,
}

impl Default for AdmissionOptions {
    fn default() -> AdmissionOptions {
        AdmissionOptions {
            policy_deadline: Duration::from_secs(2),
            scan_deadline: Duration::from_millis(500),
            digest_deadline: Duration::from_secs(2),
            signature_deadline: Duration::from_secs(3),
            default_failure_mode: FailureMode::FailOpen,
            rate_limit: RateLimitConfig::default(),
            events: DecisionEventsConfig::default(),
            policy_cache: PolicyCacheOptions::default(),
            scan_cache: ScanCacheOptions::default(),
            key_cache: KeyCacheOptions::default(),
            follower: portcullis_kit::FollowOptions::default(),
            sweep_interval: Duration::from_secs(5),
            drain_deadline: Duration::from_secs(30),
            flush_timeout: Duration::from_secs(5),
        }
    }
}

/// The later stages' hooks: signature verification ([`BusSignatureStage`]) and tag-to-digest
/// resolution ([`BusDigestStage`]), both the signature service's; `None` leaves them out
/// (tag-only references then stay unresolved).
#[derive(Clone, Default)]
pub struct Hooks {
    /// Tag-to-digest resolution.
    pub digests: Option<Arc<dyn DigestStage>>,
    /// Signature verification.
    pub signatures: Option<Arc<dyn SignatureStage>>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("digests", &self.digests.is_some())
            .field("signatures", &self.signatures.is_some())
            .finish()
    }
}

struct Inner {
    options: AdmissionOptions,
    policies: PolicyCache,
    scans: ScanCache,
    keys: IntrospectingAuthenticator,
    limiter: TenantRateLimiter,
    events: DecisionPublisher,
    /// Plain allows recently recorded with their replay projection.
    seen: replay::SeenAllows,
    metrics: AdmissionMetrics,
    hooks: Hooks,
}

/// The admission service's state: caches, limits, the event publisher (cheap to clone).
#[derive(Clone)]
pub struct Admission {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("policies", &self.inner.policies)
            .field("hooks", &self.inner.hooks)
            .finish_non_exhaustive()
    }
}

impl Admission {
    /// The service over the policy store `upstream`, publishing decisions to `bus`. Returns
    /// the publisher's task too: shut it down to flush the queued events.
    pub fn new(
        upstream: Upstream,
        bus: Bus,
        options: AdmissionOptions,
        hooks: Hooks,
    ) -> Result<(Admission, PublisherTask), AdmissionError> {
        options
            .rate_limit
            .validate()
            .map_err(|e| AdmissionError::InvalidArgument(e.to_string()))?;
        options
            .events
            .validate()
            .map_err(|e| AdmissionError::InvalidArgument(e.to_string()))?;
        let source: Arc<dyn PolicySource> = Arc::new(upstream.clone());
        Ok(Admission::assemble(upstream, source, bus, options, hooks))
    }

    /// The service with its parts: policies from `source`, the rest from `upstream`.
    fn assemble(
        upstream: Upstream,
        source: Arc<dyn PolicySource>,
        bus: Bus,
        options: AdmissionOptions,
        hooks: Hooks,
    ) -> (Admission, PublisherTask) {
        let metrics = AdmissionMetrics::global();
        let (events, task) = DecisionPublisher::start(bus, options.events.clone());
        let (published, dropped) = (events.counters(), events.counters());
        metrics.observe_events(move || published.stats().published, move || dropped.stats().dropped);
        let admission = Admission {
            inner: Arc::new(Inner {
                policies: PolicyCache::new(source, options.policy_cache.clone()),
                scans: ScanCache::new(upstream.clone(), options.scan_cache.clone()),
                keys: IntrospectingAuthenticator::new(upstream, options.key_cache.clone(), Arc::new(metrics.clone())),
                limiter: TenantRateLimiter::new(options.rate_limit.clone()),
                events,
                seen: replay::SeenAllows::default(),
                metrics,
                hooks,
                options,
            }),
        };
        (admission, task)
    }

    /// For tests: the service with policies from `source` (a stand-in for the store).
    #[cfg(test)]
    pub(crate) fn with_policy_source(
        upstream: Upstream,
        source: Arc<dyn PolicySource>,
        bus: Bus,
        options: AdmissionOptions,
    ) -> (Admission, PublisherTask) {
        Admission::assemble(upstream, source, bus, options, Hooks::default())
    }

    /// The authenticator of tenant keys (the policy store's introspection, cached).
    pub fn authenticator(&self) -> &IntrospectingAuthenticator {
        &self.inner.keys
    }

    /// The policy cache.
    pub fn policies(&self) -> &PolicyCache {
        &self.inner.policies
    }

    /// The scan cache.
    pub fn scans(&self) -> &ScanCache {
        &self.inner.scans
    }

    /// The decision event publisher (its counters).
    pub fn events(&self) -> &DecisionPublisher {
        &self.inner.events
    }

    /// The rate limiter (its counters).
    pub fn limiter(&self) -> &TenantRateLimiter {
        &self.inner.limiter
    }
}
