//! Admission metrics through OpenTelemetry.
//!
//! | Instrument | Kind | Unit | Attributes |
//! |---|---|---|---|
//! | `portcullis.admission.requests` | counter | `{request}` | `transport` (`grpc`, `webhook`), `outcome` (`allowed`, `blocked`, `error`, `rate_limited`) |
//! | `portcullis.admission.duration` | histogram (f64) | `s` | `transport` |
//! | `portcullis.admission.decisions` | counter | `{decision}` | `action` (`allow`, `block`, `log`), `basis` (`evaluated`, `not_evaluated`, `excluded_namespace`, `fail_open`, `fail_closed`) |
//! | `portcullis.admission.cache.lookups` | counter | `{lookup}` | `cache` (`policy`, `scan`, `key`), `result` (`hit`, `miss`) |
//! | `portcullis.admission.rate_limited` | counter | `{request}` | none |
//! | `portcullis.admission.events.published` | observable counter | `{event}` | none |
//! | `portcullis.admission.events.dropped` | observable counter | `{event}` | none |
//!
//! Every attribute value comes from a closed set, so the number of series is fixed (at most 8 + 2 + 15 + 6 + 3).
//! No tenant or cluster attribute anywhere: their number is unbounded, and the SDK folds series beyond its
//! cardinality limit into an overflow series. Per-tenant figures belong to the decision events.
//!
//! Recording is cheap enough for the review hot path (~10k reviews/s on a core): attribute sets are built once in
//! [`AdmissionMetrics::new`] and passed by reference, nothing allocates per call. Without a meter provider
//! installed (no OTLP endpoint, see `portcullis-telemetry`) the global meter's instruments are no-ops.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter};

/// Name of the meter [`AdmissionMetrics::global`] records through (the instrumentation scope).
pub const METER_NAME: &str = "portcullis-admission";

/// Upper bounds (seconds) of the duration histogram's buckets: reviews from the caches take tens to hundreds of
/// microseconds, a cache miss waits on the policy store for milliseconds, deadlines cut off around a second.
pub const DURATION_BOUNDARIES: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// How a review reached the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// `AdmissionService` over gRPC (cluster connectors).
    Grpc,
    /// The Kubernetes validating webhook.
    Webhook,
}

impl Transport {
    /// The `transport` attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Grpc => "grpc",
            Transport::Webhook => "webhook",
        }
    }
}

/// How a review ended, from the caller's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Answered: allowed.
    Allowed,
    /// Answered: denied.
    Blocked,
    /// Not answered: the request was invalid or the service failed.
    Error,
    /// Refused by the tenant's rate limit.
    RateLimited,
}

impl Outcome {
    /// The `outcome` attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Blocked => "blocked",
            Outcome::Error => "error",
            Outcome::RateLimited => "rate_limited",
        }
    }
}

/// Which cache a lookup went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheKind {
    /// Compiled policies and settings per cluster.
    Policy,
    /// Image scan summaries.
    Scan,
    /// API key introspections.
    Key,
}

impl CacheKind {
    /// The `cache` attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheKind::Policy => "policy",
            CacheKind::Scan => "scan",
            CacheKind::Key => "key",
        }
    }
}

/// The admission service's instruments; cheap to clone (handles and shared attribute sets).
#[derive(Debug, Clone)]
pub struct AdmissionMetrics {
    meter: Meter,
    /// `portcullis.admission.requests`.
    requests: Counter<u64>,
    /// `portcullis.admission.duration`.
    duration: Histogram<f64>,
    /// `portcullis.admission.decisions`.
    decisions: Counter<u64>,
    /// `portcullis.admission.cache.lookups`.
    cache_lookups: Counter<u64>,
    /// `portcullis.admission.rate_limited`.
    rate_limited: Counter<u64>,
    attributes: Arc<Attributes>,
}

impl AdmissionMetrics {
    /// Instruments created on `meter` (tests pass an in-memory one).
    pub fn new(meter: &Meter) -> AdmissionMetrics {
        AdmissionMetrics {
            meter: meter.clone(),
            requests: meter
                .u64_counter("portcullis.admission.requests")
                .with_description("Admission reviews answered or refused, by transport and outcome.")
                .with_unit("{request}")
                .build(),
            duration: meter
                .f64_histogram("portcullis.admission.duration")
                .with_description("Time from receiving an admission review to its answer, by transport.")
                .with_unit("s")
                .with_boundaries(DURATION_BOUNDARIES.to_vec())
                .build(),
            decisions: meter
                .u64_counter("portcullis.admission.decisions")
                .with_description("Admission decisions, by action taken and what it was based on.")
                .with_unit("{decision}")
                .build(),
            cache_lookups: meter
                .u64_counter("portcullis.admission.cache.lookups")
                .with_description("Lookups in the admission caches, by cache and hit or miss.")
                .with_unit("{lookup}")
                .build(),
            rate_limited: meter
                .u64_counter("portcullis.admission.rate_limited")
                .with_description("Reviews refused by a tenant's rate limit (no tenant attribute: unbounded).")
                .with_unit("{request}")
                .build(),
            attributes: Arc::new(Attributes::new()),
        }
    }

    /// Instruments on the global meter provider's [`METER_NAME`] meter: exported when telemetry was
    /// initialised with an OTLP endpoint, no-ops otherwise. Instruments are bound to the provider installed when
    /// this is called, so build it after `portcullis_telemetry::init`.
    pub fn global() -> AdmissionMetrics {
        AdmissionMetrics::new(&opentelemetry::global::meter(METER_NAME))
    }

    /// A review ended with `outcome` after `elapsed`: counts `requests` and records `duration`.
    pub fn request(&self, transport: Transport, outcome: Outcome, elapsed: Duration) {
        let by_transport = self.attributes.transports.get(transport);
        self.requests.add(1, by_transport.outcomes.get(outcome));
        self.duration.record(elapsed.as_secs_f64(), &by_transport.transport);
    }

    /// A decision was made: `action` is `allow`, `block` or `log`; `basis` is `evaluated`, `not_evaluated`,
    /// `excluded_namespace`, `fail_open` or `fail_closed`. Static strings keep the series bounded and the call
    /// allocation-free.
    pub fn decision(&self, action: &'static str, basis: &'static str) {
        self.decisions
            .add(1, &[KeyValue::new(ACTION, action), KeyValue::new(BASIS, basis)]);
    }

    /// A lookup in `cache` hit or missed.
    pub fn cache_lookup(&self, cache: CacheKind, hit: bool) {
        let by_result = self.attributes.caches.get(cache);
        self.cache_lookups
            .add(1, if hit { &by_result.hit } else { &by_result.miss });
    }

    /// A review was refused by its tenant's rate limit. Which tenant is not recorded: tenants are unbounded.
    pub fn rate_limited(&self) {
        self.rate_limited.add(1, &[]);
    }

    /// Reports the decision publisher's cumulative counts as `portcullis.admission.events.published` and
    /// `portcullis.admission.events.dropped`.
    ///
    /// The publisher already counts in atomics, so this costs nothing per event: `published` and `dropped` are
    /// read when the metrics are collected (every export interval), and never without a meter provider. They
    /// must return totals since the start, never decreasing, and must not keep the publisher alive (capture its
    /// counters or a `Weak`, not a `DecisionPublisher`, whose queue would then never close). The callbacks stay
    /// registered for the meter provider's life: call this once per publisher.
    pub fn observe_events<P, D>(&self, published: P, dropped: D)
    where
        P: Fn() -> u64 + Send + Sync + 'static,
        D: Fn() -> u64 + Send + Sync + 'static,
    {
        // The returned handles are markers: the SDK keeps the callbacks, so they need not be stored.
        let _published = self
            .meter
            .u64_observable_counter("portcullis.admission.events.published")
            .with_description("Decision events the bus stored.")
            .with_unit("{event}")
            .with_callback(move |observer| observer.observe(published(), &[]))
            .build();
        let _dropped = self
            .meter
            .u64_observable_counter("portcullis.admission.events.dropped")
            .with_description("Decision events lost because the queue was full or the publisher stopped.")
            .with_unit("{event}")
            .with_callback(move |observer| observer.observe(dropped(), &[]))
            .build();
    }
}

/// The key cache of `portcullis-policy-client` records into `portcullis.admission.cache.lookups` (`cache="key"`).
impl portcullis_policy_client::metrics::KeyLookupMetrics for AdmissionMetrics {
    fn key_lookup(&self, hit: bool) {
        self.cache_lookup(CacheKind::Key, hit);
    }
}

const TRANSPORT: &str = "transport";
const OUTCOME: &str = "outcome";
const ACTION: &str = "action";
const BASIS: &str = "basis";
const CACHE: &str = "cache";
const RESULT: &str = "result";

/// Every attribute set the enum-keyed methods record with, built once.
#[derive(Debug)]
struct Attributes {
    transports: ByTransport<TransportAttributes>,
    caches: ByCache<HitMiss>,
}

impl Attributes {
    fn new() -> Attributes {
        Attributes {
            transports: ByTransport::new(|transport| TransportAttributes {
                transport: [KeyValue::new(TRANSPORT, transport.as_str())],
                outcomes: ByOutcome::new(|outcome| {
                    [
                        KeyValue::new(TRANSPORT, transport.as_str()),
                        KeyValue::new(OUTCOME, outcome.as_str()),
                    ]
                }),
            }),
            caches: ByCache::new(|cache| HitMiss {
                hit: [KeyValue::new(CACHE, cache.as_str()), KeyValue::new(RESULT, "hit")],
                miss: [KeyValue::new(CACHE, cache.as_str()), KeyValue::new(RESULT, "miss")],
            }),
        }
    }
}

#[derive(Debug)]
struct TransportAttributes {
    /// `{transport}` for the duration.
    transport: [KeyValue; 1],
    /// `{transport, outcome}` for the request count.
    outcomes: ByOutcome<[KeyValue; 2]>,
}

#[derive(Debug)]
struct HitMiss {
    hit: [KeyValue; 2],
    miss: [KeyValue; 2],
}

// Tables keyed by the enums through `match`: no indexing, and a new variant fails to compile until it has its set.

#[derive(Debug)]
struct ByTransport<T> {
    grpc: T,
    webhook: T,
}

impl<T> ByTransport<T> {
    fn new(make: impl Fn(Transport) -> T) -> Self {
        ByTransport {
            grpc: make(Transport::Grpc),
            webhook: make(Transport::Webhook),
        }
    }

    fn get(&self, transport: Transport) -> &T {
        match transport {
            Transport::Grpc => &self.grpc,
            Transport::Webhook => &self.webhook,
        }
    }
}

#[derive(Debug)]
struct ByOutcome<T> {
    allowed: T,
    blocked: T,
    error: T,
    rate_limited: T,
}

impl<T> ByOutcome<T> {
    fn new(make: impl Fn(Outcome) -> T) -> Self {
        ByOutcome {
            allowed: make(Outcome::Allowed),
            blocked: make(Outcome::Blocked),
            error: make(Outcome::Error),
            rate_limited: make(Outcome::RateLimited),
        }
    }

    fn get(&self, outcome: Outcome) -> &T {
        match outcome {
            Outcome::Allowed => &self.allowed,
            Outcome::Blocked => &self.blocked,
            Outcome::Error => &self.error,
            Outcome::RateLimited => &self.rate_limited,
        }
    }
}

#[derive(Debug)]
struct ByCache<T> {
    policy: T,
    scan: T,
    key: T,
}

impl<T> ByCache<T> {
    fn new(make: impl Fn(CacheKind) -> T) -> Self {
        ByCache {
            policy: make(CacheKind::Policy),
            scan: make(CacheKind::Scan),
            key: make(CacheKind::Key),
        }
    }

    fn get(&self, cache: CacheKind) -> &T {
        match cache {
            CacheKind::Policy => &self.policy,
            CacheKind::Scan => &self.scan,
            CacheKind::Key => &self.key,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::sync::atomic::{AtomicU64, Ordering};

    use portcullis_telemetry::testing::{InMemoryMetrics, in_memory_meter};

    use super::*;

    fn metrics() -> (AdmissionMetrics, InMemoryMetrics) {
        let (meter, read) = in_memory_meter();
        (AdmissionMetrics::new(&meter), read)
    }

    const TRANSPORTS: [Transport; 2] = [Transport::Grpc, Transport::Webhook];
    const OUTCOMES: [Outcome; 4] = [Outcome::Allowed, Outcome::Blocked, Outcome::Error, Outcome::RateLimited];

    #[test]
    fn request_counts_by_transport_and_outcome_and_times_by_transport() {
        let (m, read) = metrics();
        m.request(Transport::Grpc, Outcome::Allowed, Duration::from_micros(200));
        m.request(Transport::Grpc, Outcome::Allowed, Duration::from_micros(300));
        m.request(Transport::Grpc, Outcome::Blocked, Duration::from_millis(2));
        m.request(Transport::Webhook, Outcome::RateLimited, Duration::from_micros(10));
        m.request(Transport::Webhook, Outcome::Error, Duration::from_secs(2));

        let requests = "portcullis.admission.requests";
        assert_eq!(
            read.counter(requests, &[("transport", "grpc"), ("outcome", "allowed")]),
            2
        );
        assert_eq!(
            read.counter(requests, &[("transport", "grpc"), ("outcome", "blocked")]),
            1
        );
        assert_eq!(
            read.counter(requests, &[("transport", "grpc"), ("outcome", "error")]),
            0
        );
        assert_eq!(
            read.counter(requests, &[("transport", "webhook"), ("outcome", "rate_limited")]),
            1
        );
        assert_eq!(
            read.counter(requests, &[("transport", "webhook"), ("outcome", "error")]),
            1
        );
        assert_eq!(
            read.counter(requests, &[("transport", "webhook"), ("outcome", "allowed")]),
            0
        );

        let duration = "portcullis.admission.duration";
        assert_eq!(read.histogram_count(duration, &[("transport", "grpc")]), 3);
        assert_eq!(read.histogram_count(duration, &[("transport", "webhook")]), 2);
        // Recorded in seconds.
        let grpc_sum = read.histogram_sum(duration, &[("transport", "grpc")]);
        assert!((grpc_sum - 0.0025).abs() < 1e-9, "{grpc_sum}");
        assert_eq!(
            read.histogram_bounds(duration, &[("transport", "grpc")]),
            DURATION_BOUNDARIES.to_vec()
        );
        // The request path records nothing else.
        let mut names = read.names();
        names.sort();
        assert_eq!(names, vec![duration.to_owned(), requests.to_owned()]);
    }

    #[test]
    fn every_transport_and_outcome_has_its_own_series() {
        let (m, read) = metrics();
        for (i, transport) in TRANSPORTS.into_iter().enumerate() {
            for (j, outcome) in OUTCOMES.into_iter().enumerate() {
                // A distinct count per pair shows no two pairs share a series.
                for _ in 0..(1 + i * OUTCOMES.len() + j) {
                    m.request(transport, outcome, Duration::ZERO);
                }
            }
        }
        for (i, transport) in TRANSPORTS.into_iter().enumerate() {
            for (j, outcome) in OUTCOMES.into_iter().enumerate() {
                let attrs = [("transport", transport.as_str()), ("outcome", outcome.as_str())];
                let expected = (1 + i * OUTCOMES.len() + j) as u64;
                assert_eq!(
                    read.counter("portcullis.admission.requests", &attrs),
                    expected,
                    "{attrs:?}"
                );
            }
        }
    }

    #[test]
    fn decisions_count_by_action_and_basis() {
        let (m, read) = metrics();
        m.decision("allow", "evaluated");
        m.decision("allow", "evaluated");
        m.decision("block", "fail_closed");
        m.decision("log", "excluded_namespace");
        let decisions = "portcullis.admission.decisions";
        assert_eq!(
            read.counter(decisions, &[("action", "allow"), ("basis", "evaluated")]),
            2
        );
        assert_eq!(
            read.counter(decisions, &[("action", "block"), ("basis", "fail_closed")]),
            1
        );
        assert_eq!(
            read.counter(decisions, &[("action", "log"), ("basis", "excluded_namespace")]),
            1
        );
        assert_eq!(
            read.counter(decisions, &[("action", "block"), ("basis", "evaluated")]),
            0
        );
        assert_eq!(read.names(), vec![decisions.to_owned()]);
    }

    #[test]
    fn cache_lookups_count_by_cache_and_result() {
        let (m, read) = metrics();
        m.cache_lookup(CacheKind::Policy, true);
        m.cache_lookup(CacheKind::Policy, true);
        m.cache_lookup(CacheKind::Policy, false);
        m.cache_lookup(CacheKind::Scan, false);
        m.cache_lookup(CacheKind::Key, true);
        let lookups = "portcullis.admission.cache.lookups";
        assert_eq!(read.counter(lookups, &[("cache", "policy"), ("result", "hit")]), 2);
        assert_eq!(read.counter(lookups, &[("cache", "policy"), ("result", "miss")]), 1);
        assert_eq!(read.counter(lookups, &[("cache", "scan"), ("result", "miss")]), 1);
        assert_eq!(read.counter(lookups, &[("cache", "scan"), ("result", "hit")]), 0);
        assert_eq!(read.counter(lookups, &[("cache", "key"), ("result", "hit")]), 1);
        assert_eq!(read.counter(lookups, &[("cache", "key"), ("result", "miss")]), 0);
    }

    #[test]
    fn the_policy_client_s_key_lookups_count_as_the_key_cache() {
        use portcullis_policy_client::metrics::KeyLookupMetrics;
        let (m, read) = metrics();
        let hook: &dyn KeyLookupMetrics = &m;
        hook.key_lookup(true);
        hook.key_lookup(false);
        hook.key_lookup(false);
        let lookups = "portcullis.admission.cache.lookups";
        assert_eq!(read.counter(lookups, &[("cache", "key"), ("result", "hit")]), 1);
        assert_eq!(read.counter(lookups, &[("cache", "key"), ("result", "miss")]), 2);
        assert_eq!(read.counter(lookups, &[("cache", "policy"), ("result", "miss")]), 0);
    }

    #[test]
    fn rate_limited_counts_without_attributes() {
        let (m, read) = metrics();
        m.rate_limited();
        m.rate_limited();
        assert_eq!(read.counter("portcullis.admission.rate_limited", &[]), 2);
        assert_eq!(read.names(), vec!["portcullis.admission.rate_limited".to_owned()]);
    }

    #[test]
    fn event_counts_are_read_from_the_callbacks_at_collection() {
        let (m, read) = metrics();
        let published = Arc::new(AtomicU64::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        let (p, d) = (Arc::clone(&published), Arc::clone(&dropped));
        m.observe_events(move || p.load(Ordering::Relaxed), move || d.load(Ordering::Relaxed));

        published.store(5, Ordering::Relaxed);
        dropped.store(1, Ordering::Relaxed);
        assert_eq!(read.counter("portcullis.admission.events.published", &[]), 5);
        assert_eq!(read.counter("portcullis.admission.events.dropped", &[]), 1);
        published.store(9, Ordering::Relaxed);
        assert_eq!(read.counter("portcullis.admission.events.published", &[]), 9);
        assert_eq!(read.counter("portcullis.admission.events.dropped", &[]), 1);
    }

    #[test]
    fn clones_record_into_the_same_instruments() {
        let (m, read) = metrics();
        let clone = m.clone();
        m.rate_limited();
        clone.rate_limited();
        assert_eq!(read.counter("portcullis.admission.rate_limited", &[]), 2);
    }
}
