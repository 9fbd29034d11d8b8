//! Configuration shared by both implementations.

use std::time::Duration;

use crate::BusError;

/// Limits of the event stream (`PC_EVENTS` in NATS, the in-memory log in embedded mode).
/// When a limit is reached the oldest events are dropped (limits retention, discard old).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamConfig {
    /// JetStream stream name.
    pub name: String,
    /// Events older than this are dropped.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Total stored bytes before the oldest events are dropped.
    pub max_bytes: u64,
    /// Number of stored events before the oldest are dropped; `None` for no count limit.
    pub max_events: Option<u64>,
    /// Window in which a second event with the same id is dropped.
    #[serde(with = "humantime_serde")]
    pub duplicate_window: Duration,
    /// JetStream replicas (NATS clusters only; ignored by the memory bus).
    pub replicas: usize,
}

impl Default for StreamConfig {
    /// The design defaults: 7 days, 10 GiB, 2-minute duplicate window.
    fn default() -> Self {
        Self {
            name: "PC_EVENTS".to_owned(),
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_bytes: 10 * 1024 * 1024 * 1024,
            max_events: None,
            duplicate_window: Duration::from_secs(120),
            replicas: 1,
        }
    }
}

/// Bus configuration; `Default` gives the design values.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusConfig {
    /// Stream limits.
    pub stream: StreamConfig,
    /// Deadline of every remote operation: publish (until the stream acknowledges), ack,
    /// consumer creation, stream info, core publish.
    #[serde(with = "humantime_serde")]
    pub operation_timeout: Duration,
    /// Deadline for connecting to NATS.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// A work delivery not acknowledged within this time is delivered again.
    #[serde(with = "humantime_serde")]
    pub ack_wait: Duration,
    /// Deliveries of one durable that may be un-acknowledged at once; no more are handed out
    /// until some are acknowledged or expire.
    pub max_ack_pending: usize,
    /// Capacity of every subscription's channel; a full channel stops delivery (backpressure).
    pub channel_capacity: usize,
    /// Largest event (payload, headers, id, subject) or core message accepted.
    pub max_event_bytes: usize,
    /// Connection name shown by the NATS server.
    pub client_name: String,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            stream: StreamConfig::default(),
            operation_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 1000,
            channel_capacity: 64,
            max_event_bytes: 1024 * 1024,
            client_name: "portcullis".to_owned(),
        }
    }
}

impl BusConfig {
    /// The defaults with memory-sized limits for the in-process bus (100,000 events, 256 MiB).
    pub fn embedded() -> Self {
        let mut config = Self::default();
        config.stream.max_events = Some(100_000);
        config.stream.max_bytes = 256 * 1024 * 1024;
        config
    }

    /// Refuses zero durations, capacities and limits, which would mean "no deadline",
    /// "immediate redelivery" or an unusable channel.
    pub fn validate(&self) -> Result<(), BusError> {
        let positive = [
            ("operation_timeout", !self.operation_timeout.is_zero()),
            ("connect_timeout", !self.connect_timeout.is_zero()),
            ("ack_wait", !self.ack_wait.is_zero()),
            ("max_ack_pending", self.max_ack_pending > 0),
            ("channel_capacity", self.channel_capacity > 0),
            ("max_event_bytes", self.max_event_bytes > 0),
            ("stream.max_age", !self.stream.max_age.is_zero()),
            ("stream.max_bytes", self.stream.max_bytes > 0),
            ("stream.max_events", self.stream.max_events != Some(0)),
            ("stream.duplicate_window", !self.stream.duplicate_window.is_zero()),
            ("stream.replicas", self.stream.replicas > 0),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, ok)| !ok) {
            return Err(BusError::Invalid {
                field: "config",
                reason: format!("{name} must be greater than zero"),
            });
        }
        if self.stream.name.is_empty()
            || !self
                .stream
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(BusError::Invalid {
                field: "config",
                reason: format!(
                    "stream.name {:?} must be non-empty A-Z, a-z, 0-9, '_' or '-'",
                    self.stream.name
                ),
            });
        }
        Ok(())
    }
}

/// Limits of one work subscription that override the bus configuration's (a service that
/// batches its writes wants more deliveries outstanding than the default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkLimits {
    /// Deliveries of the durable that may be un-acknowledged at once
    /// ([`BusConfig::max_ack_pending`] when `None`). The latest subscriber's value applies to
    /// the durable, as its filter does.
    pub max_ack_pending: Option<usize>,
    /// Messages asked for in one pull request on NATS ([`BusConfig::channel_capacity`] when
    /// `None`; the in-process bus has no pulls).
    pub pull_batch: Option<usize>,
}
