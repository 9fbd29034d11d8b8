//! Where and how the webhook listens, and the bounds it keeps.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use portcullis_domain::ServeError;
use serde::{Deserialize, Serialize};

/// Where the webhook listens, its certificate, and its bounds. [`WebhookConfig::new`] gives
/// the default [`WebhookLimits`]; every field may be changed before
/// [`crate::WebhookServer::bind`], which checks them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// The listen address; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The certificate chain, PEM (leaf first).
    pub tls_cert: PathBuf,
    /// The private key, PEM: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub tls_key: PathBuf,
    /// Sizes, deadlines and concurrency (the `[webhook]` settings).
    pub limits: WebhookLimits,
}

/// The webhook's bounds: settings with the defaults below.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookLimits {
    /// The largest AdmissionReview body handed to the handler; larger bodies get `413`.
    /// Default [`WebhookLimits::DEFAULT_MAX_BODY_BYTES`], the same 3 MiB the AdmissionService
    /// accepts, so both transports take exactly the same reviews.
    pub max_body_bytes: usize,
    /// The longest one request may take, body and handler together (default 10 s, the
    /// Kubernetes default `timeoutSeconds`); the API server's shorter `?timeout=` wins.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How long an HTTP/1 client may take to send a request's headers (default 10 s).
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// How long a client may take to finish the TLS handshake (default 10 s).
    #[serde(with = "humantime_serde")]
    pub tls_handshake_timeout: Duration,
    /// A connection with no request in flight for this long is closed gracefully (default
    /// 120 s, longer than the API server's 90 s idle-connection timeout so it closes first).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Connections served at once; further clients wait in the listen backlog (default 10 000).
    pub max_connections: usize,
    /// Requests whose body is being read or which are being judged at once, across all
    /// connections; a request waits for a slot until its deadline, then gets `503`. This
    /// bounds the memory held by bodies (default 256, at most 768 MiB of 3 MiB bodies).
    pub max_in_flight: usize,
    /// Of those, at most this many for one key (default 64): a key that trickles bodies holds
    /// its own share, never every slot. Over it: `429` at once.
    pub max_in_flight_per_key: usize,
    /// Of those, at most this many from one client address (default 128). Over it: `429`.
    pub max_in_flight_per_peer: usize,
    /// Concurrent streams per HTTP/2 connection (default 100).
    pub max_concurrent_streams: u32,
    /// On shutdown, how long connections get to finish their requests before they are
    /// dropped (default 15 s).
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl WebhookLimits {
    /// 3 MiB: the AdmissionService's limit on a review.
    pub const DEFAULT_MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

    /// Refuses zero bounds and bounds a semaphore cannot hold (what
    /// [`crate::WebhookServer::bind`] checks first).
    pub fn check(&self) -> Result<(), ServeError> {
        let positive = [
            ("max_body_bytes", self.max_body_bytes),
            ("max_connections", self.max_connections),
            ("max_in_flight", self.max_in_flight),
            ("max_in_flight_per_key", self.max_in_flight_per_key),
            ("max_in_flight_per_peer", self.max_in_flight_per_peer),
            ("max_concurrent_streams", self.max_concurrent_streams as usize),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(ServeError::Config(format!("webhook {name} must be at least 1")));
            }
        }
        for (name, value) in [
            ("max_connections", self.max_connections),
            ("max_in_flight", self.max_in_flight),
        ] {
            if value > tokio::sync::Semaphore::MAX_PERMITS {
                return Err(ServeError::Config(format!("webhook {name} is too large: {value}")));
            }
        }
        let durations = [
            ("request_timeout", self.request_timeout),
            ("header_read_timeout", self.header_read_timeout),
            ("tls_handshake_timeout", self.tls_handshake_timeout),
            ("idle_timeout", self.idle_timeout),
        ];
        for (name, value) in durations {
            if value.is_zero() {
                return Err(ServeError::Config(format!("webhook {name} must be longer than zero")));
            }
            // Deadlines are computed as `now + timeout`; a century is as good as forever and
            // cannot overflow an Instant.
            if value > MAX_TIMEOUT {
                return Err(ServeError::Config(format!("webhook {name} is too long: {value:?}")));
            }
        }
        if self.drain_timeout > MAX_TIMEOUT {
            return Err(ServeError::Config(format!(
                "webhook drain_timeout is too long: {:?}",
                self.drain_timeout
            )));
        }
        Ok(())
    }
}

impl Default for WebhookLimits {
    fn default() -> WebhookLimits {
        WebhookLimits {
            max_body_bytes: WebhookLimits::DEFAULT_MAX_BODY_BYTES,
            request_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            max_connections: 10_000,
            max_in_flight: 256,
            max_in_flight_per_key: 64,
            max_in_flight_per_peer: 128,
            max_concurrent_streams: 100,
            drain_timeout: Duration::from_secs(15),
        }
    }
}

impl WebhookConfig {
    /// The default limits, listening on `listen` with the given certificate chain and key
    /// files.
    pub fn new(listen: SocketAddr, tls_cert: PathBuf, tls_key: PathBuf) -> WebhookConfig {
        WebhookConfig {
            listen,
            tls_cert,
            tls_key,
            limits: WebhookLimits::default(),
        }
    }

    /// [`WebhookLimits::check`].
    pub fn check(&self) -> Result<(), ServeError> {
        self.limits.check()
    }
}

/// The longest timeout accepted (about a year).
const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);
