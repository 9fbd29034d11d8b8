//! The signature verification service (issue 18, POLICY.md sections 4.6 and 6): verifies the
//! cosign signatures of an image against a tenant's attestors and resolves tags to digests,
//! for admission (NATS request/reply on `pc.rpc.signature.verify` and
//! `pc.rpc.signature.resolve`, in a queue group so that replicas share the work) and for
//! people (`SignatureService` over gRPC, `portcullis verify`).
//!
//! - [`verify`]: the domain logic over `portcullis-oci` (the registry) and `portcullis-cosign`
//!   (offline verification): resolve the digest when missing, read the attestors from the
//!   policy store ([`store`]), fetch the signatures once (legacy `.sig` and sigstore bundles
//!   through the referrers API), verify each attestor. Answers are cached (kit `Cache`:
//!   single flight, so concurrent asks for one key make one registry round).
//! - [`follow`]: drops cached attestors and verdicts on `attestor.changed`, cached registry
//!   clients on `cluster.changed`.
//! - [`events`]: every verdict is published to `pc.<tenant>.evt.signature.verdict` without
//!   blocking the answer (a bounded queue).
//! - [`grpc`] and [`rpc`]: the two adapters over the same messages; [`running`] starts them.

pub mod error;
pub mod events;
pub mod follow;
pub mod grpc;
pub mod rpc;
pub mod running;
pub mod store;
pub mod verify;

use std::time::Duration;

use portcullis_server::rate_limit::{RateLimitConfig, TenantLimit};

pub use error::SignatureError;
pub use portcullis_server::BoxFuture;
pub use running::{RunningSignature, SignatureServeOptions};
pub use store::{AttestorStore, PolicyStoreClient, RegistryLogin, StoredAttestor};
pub use verify::{AttestorVerdict, Resolution, SignatureFormat, Verdict, Verification, Verifier, VerifyRequest};

/// The `[signature]` settings: caches, the registry client, the request/reply server.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SignatureOptions {
    /// How long a verdict (and the attestor documents it used) is served (default 5 min);
    /// `attestor.changed` drops it sooner.
    #[serde(with = "humantime_serde")]
    pub verdict_ttl: Duration,
    /// How long a failed verification (registry down, deadline) is served before the registry
    /// is asked again (default 10 s).
    #[serde(with = "humantime_serde")]
    pub failure_ttl: Duration,
    /// How long a tag's digest is served (default 30 s, at most 60 s: a tag moves).
    #[serde(with = "humantime_serde")]
    pub resolve_ttl: Duration,
    /// Entries of each cache, at most (default 100 000).
    pub max_entries: usize,
    /// The registry client.
    pub registry: RegistryOptions,
    /// The NATS request/reply server: its queue group and the requests handled at once.
    pub rpc: RpcOptions,
    /// Verdict events queued for publishing, at most; beyond it new ones are dropped and
    /// counted (default 10 000).
    pub event_queue: usize,
    /// The follower of the policy store's events.
    pub follower: portcullis_kit::FollowOptions,
    /// How long requests in flight may take to finish at shutdown (default 30 s).
    #[serde(with = "humantime_serde")]
    pub drain_deadline: Duration,
    /// Verify and ResolveDigest calls per tenant and replica, over gRPC and the bus alike
    /// (default 5000 per second, burst 10 000); beyond it `ResourceExhausted`.
    pub rate_limit: RateLimitConfig,
}

/// The default `[signature.rate_limit]`: five times admission's default, since one review
/// may ask for several images (each image one call), while still keeping one tenant from
/// taking a whole replica's registry rounds.
pub fn default_rate_limit() -> RateLimitConfig {
    RateLimitConfig {
        default: TenantLimit {
            per_second: 5000.0,
            burst: 10_000,
        },
        ..RateLimitConfig::default()
    }
}

impl Default for SignatureOptions {
    fn default() -> SignatureOptions {
        SignatureOptions {
            verdict_ttl: Duration::from_secs(300),
            failure_ttl: Duration::from_secs(10),
            resolve_ttl: Duration::from_secs(30),
            max_entries: 100_000,
            registry: RegistryOptions::default(),
            rpc: RpcOptions::default(),
            event_queue: 10_000,
            follower: portcullis_kit::FollowOptions::default(),
            drain_deadline: Duration::from_secs(30),
            rate_limit: default_rate_limit(),
        }
    }
}

/// The most a resolution is cached, whatever the settings say: a tag may move.
pub const MAX_RESOLVE_TTL: Duration = Duration::from_secs(60);

/// The `[signature.registry]` settings: how registries are reached.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryOptions {
    /// The most one registry call may take, authentication and redirects included
    /// (default 10 s).
    #[serde(with = "humantime_serde")]
    pub deadline: Duration,
    /// The most a connection (TCP and TLS) may take (default 5 s).
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Requests in flight to one registry host at once (default 8).
    pub max_concurrency_per_registry: usize,
    /// Registries (`host[:port]`) reached over plain HTTP (loopback ones always are).
    pub insecure_registries: Vec<String>,
}

impl Default for RegistryOptions {
    fn default() -> RegistryOptions {
        RegistryOptions {
            deadline: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            max_concurrency_per_registry: 8,
            insecure_registries: Vec::new(),
        }
    }
}

impl RegistryOptions {
    /// The registry client's configuration (no credentials).
    pub fn client_config(&self) -> portcullis_oci::ClientConfig {
        portcullis_oci::ClientConfig {
            deadline: self.deadline,
            connect_timeout: self.connect_timeout,
            max_concurrency_per_registry: self.max_concurrency_per_registry.max(1),
            insecure_registries: self.insecure_registries.clone(),
            ..portcullis_oci::ClientConfig::default()
        }
    }
}

/// The `[signature.rpc]` settings: the NATS request/reply server.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RpcOptions {
    /// The queue group replicas share (default `signature`).
    pub queue_group: String,
    /// Requests handled at once by one replica; more wait in the subscription (default 256).
    pub max_in_flight: usize,
}

impl Default for RpcOptions {
    fn default() -> RpcOptions {
        RpcOptions {
            queue_group: "signature".to_owned(),
            max_in_flight: 256,
        }
    }
}
