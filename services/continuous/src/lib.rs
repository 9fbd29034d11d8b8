//! `portcullis-continuous`: continuous scanning of running pods (issue 19).
//!
//! Pods admitted before a policy tightened, or while a cluster failed open, are found here:
//! connectors stream their cluster's running pods, the engine judges each with its
//! continuous semantics ([`CompiledPolicy::evaluate_running`], POLICY.md section 4 point 5),
//! and findings and mitigation commands follow.
//!
//! The I/O-free core:
//! - [`inventory`]: what is kept of a running pod (and why that is enough for every rule);
//! - [`sync`]: the sequencing of a cluster's inventory stream (snapshot, deltas, gaps);
//! - [`findings`]: findings opened, kept and resolved, and the commands they order;
//! - [`preview`]: re-evaluation of a cluster, and the same without side effects for a draft
//!   policy (the impact preview);
//! - [`store`]: what is kept, and the contract of the storage that keeps it.
//!
//! [`storage`] implements [`store`] on PostgreSQL or SQLite (its own tables and migrations).
//!
//! The service on the kit:
//! - [`policies`]: effective policies (compiled once per revision) and scan summaries from
//!   the policy store, with the service credential;
//! - [`evaluate`]: read, judge, reconcile and save a cluster (or some of its pods), then
//!   publish and notify;
//! - [`commands`]: the command hub (runtime and manual commands, connectors' streams);
//! - [`triggers`]: the bus work subscription (`policy.changed`, `cluster.changed`,
//!   `scan.result`, `runtime.mitigation`), the periodic sweep and the timers;
//! - [`events`]: findings and mitigation events through a bounded queue;
//! - [`follow`]: key revocations forgotten at once by the listener's authenticator;
//! - [`grpc`]: `ContinuousService`; [`error`]: the one mapping to gRPC statuses;
//! - [`running`]: the whole service on one kit `Lifecycle`.
//!
//! [`CompiledPolicy::evaluate_running`]: portcullis_engine::evaluate::CompiledPolicy::evaluate_running

pub mod commands;
pub mod convert;
pub mod error;
pub mod evaluate;
pub mod events;
pub mod findings;
pub mod follow;
pub mod grpc;
pub mod inventory;
pub mod policies;
pub mod preview;
pub mod running;
pub mod storage;
pub mod store;
pub mod sync;
pub mod triggers;

use std::time::Duration;

use portcullis_server::rate_limit::{RateLimitConfig, TenantLimit};

pub use error::ContinuousError;
pub use running::{ContinuousServeOptions, RunningContinuous};

/// The `[continuous]` settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContinuousOptions {
    /// The service's database in distributed mode (`postgres://...`, `--database-url`;
    /// it may be the policy store's: the service keeps its own `cn_` tables); required by
    /// `serve continuous`. `up` keeps a SQLite file `continuous.db` beside the policy store's.
    pub database_url: String,
    /// How often every cluster with an inventory is re-evaluated whole (default 3600 s).
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// How often a command stream re-reads its cluster's pending commands, so that a lost
    /// notification only delays a command (default 5 s).
    #[serde(with = "humantime_serde")]
    pub command_poll: Duration,
    /// The durable name of the work subscription replicas share (default `continuous`).
    pub durable: String,
    /// Trigger events handled at once by one replica (default 4).
    pub max_in_flight: usize,
    /// Events queued for publishing, at most; beyond it new ones are dropped and counted
    /// (default 10 000).
    pub event_queue: usize,
    /// Answers queued per inventory or command stream (default 64).
    pub stream_queue: usize,
    /// How long requests in flight may take to finish at shutdown (default 30 s).
    #[serde(with = "humantime_serde")]
    pub drain_deadline: Duration,
    /// The follower of key revocations (`apikey.revoked`), for the service's own listener.
    pub follower: portcullis_kit::FollowOptions,
    /// Calls per tenant and replica with tenant keys (a stream counts once); beyond it
    /// `ResourceExhausted` (default 100 per second, burst 200).
    pub rate_limit: RateLimitConfig,
}

impl Default for ContinuousOptions {
    fn default() -> ContinuousOptions {
        ContinuousOptions {
            database_url: String::new(),
            sweep_interval: Duration::from_secs(3600),
            command_poll: Duration::from_secs(5),
            durable: "continuous".to_owned(),
            max_in_flight: 4,
            event_queue: 10_000,
            stream_queue: 64,
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
