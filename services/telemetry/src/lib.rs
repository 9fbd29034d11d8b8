//! The telemetry correlation service (issue 20).
//!
//! The I/O-free core: security events and their conversions ([`event`]), the correlation
//! entity ([`entity`]), the search filter language ([`query`]), correlation rules and the
//! correlator ([`correlate`]), the alert lifecycle with the cluster risk score ([`alert`]),
//! the protobuf conversions ([`convert`]) and the storage contract ([`store`]).
//!
//! The service on the kit:
//! - [`policies`]: what a cluster's effective policy says to telemetry (`xdrEnabled`, its
//!   runtime rulesets, excluded namespaces, trusted images), cached briefly;
//! - [`pipeline`]: the bounded write queue, batched writes and the correlator;
//! - [`ingest`]: events judged (time, `xdrEnabled`), runtime rulesets matched and
//!   mitigations published, then queued for the pipeline;
//! - [`replay`]: admission decisions recorded, and judged again with a draft policy;
//! - [`subscription`]: the bus work subscription over the other stages' events;
//! - [`grpc`]: `TelemetryService`; [`error`]: the one mapping to gRPC statuses;
//! - [`running`]: the whole service on one kit `Lifecycle`.

pub mod alert;
pub mod convert;
pub mod correlate;
pub mod entity;
pub mod error;
pub mod event;
pub mod grpc;
pub mod ingest;
pub mod pipeline;
pub mod policies;
pub mod query;
pub mod replay;
pub mod running;
pub mod storage;
pub mod store;
pub mod subscription;

use std::time::Duration;

use portcullis_server::rate_limit::{RateLimitConfig, TenantLimit};

pub use entity::{Entity, Workload};
pub use error::TelemetryError;
pub use event::{Action, EventError, Mitigation, SecurityEvent, Severity, Source};
pub use running::{RunningTelemetry, TelemetryServeOptions};

/// The `[telemetry]` settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryOptions {
    /// The service's database in distributed mode (`postgres://...`, `--database-url`; it
    /// may be another service's: telemetry keeps its own tables); required by `serve
    /// telemetry`. `up` keeps a SQLite file `telemetry.db` beside the policy store's.
    pub database_url: String,
    /// The continuous service's address, for the labels of a pod a runtime event does not
    /// carry (`GetPod`); empty: no lookup (said in the log). `up` uses its own address.
    pub continuous_url: String,
    /// How long events are kept; older ones are refused at ingest (default 30 days).
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// The durable name of the work subscription replicas share (default `telemetry`).
    pub durable: String,
    /// Events written in one batch, at most (default 5 000; a batch is written as soon as it
    /// is full or `flush_interval` after its first event, whichever comes first).
    pub batch_size: usize,
    /// How long a batch waits for more events before it is written (default 50 ms: part of
    /// every event's time to searchable).
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Writes (an ingest message or a bus delivery) queued for the writer, at most; beyond
    /// it callers wait (default 1 000).
    pub write_queue: usize,
    /// Bus deliveries handled at once by one replica (default 10,000): a batch holds at most
    /// this many bus events, so it bounds a replica's throughput (10,000 events of ~1 KB,
    /// about 10 MB held).
    pub max_in_flight: usize,
    /// Bus deliveries of the work subscription un-acknowledged at once, all replicas
    /// together (default 20,000): at least `max_in_flight` times the replicas, or the
    /// replicas wait for acks rather than fill their batches. Overrides `[bus]
    /// max_ack_pending` for this subscription.
    pub max_ack_pending: usize,
    /// Batches written to the database at once, each on its own connection (default 2;
    /// 1 on SQLite, which takes one writer at a time; at most half the pool on PostgreSQL).
    pub writers: usize,
    /// How long a cluster's effective policy is reused before it is read again (default 10 s).
    #[serde(with = "humantime_serde")]
    pub policy_cache_ttl: Duration,
    /// The deadline of one `GetPod` call to the continuous service (default 2 s).
    #[serde(with = "humantime_serde")]
    pub pod_lookup_deadline: Duration,
    /// How long requests in flight may take to finish at shutdown (default 30 s).
    #[serde(with = "humantime_serde")]
    pub drain_deadline: Duration,
    /// The follower of key revocations (`apikey.revoked`), for the service's own listener.
    pub follower: portcullis_kit::FollowOptions,
    /// Calls per tenant and replica with tenant keys (a stream counts once); beyond it
    /// `ResourceExhausted` (default 100 per second, burst 200).
    pub rate_limit: RateLimitConfig,
}

impl Default for TelemetryOptions {
    fn default() -> TelemetryOptions {
        TelemetryOptions {
            database_url: String::new(),
            continuous_url: String::new(),
            retention: Duration::from_secs(30 * 24 * 3600),
            durable: "telemetry".to_owned(),
            batch_size: 5000,
            flush_interval: Duration::from_millis(50),
            write_queue: 1000,
            max_in_flight: 10_000,
            max_ack_pending: 20_000,
            writers: 2,
            policy_cache_ttl: Duration::from_secs(10),
            pod_lookup_deadline: Duration::from_secs(2),
            drain_deadline: Duration::from_secs(30),
            follower: portcullis_kit::FollowOptions::default(),
            rate_limit: RateLimitConfig {
                default: TenantLimit {
                    per_second: 100.0,
                    burst: 200,
                },
                ..RateLimitConfig::default()
            },
        }
    }
}
