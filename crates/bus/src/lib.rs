//! The Portcullis event bus.
//!
//! One API, two implementations with the same semantics:
//! - [`NatsBus`]: NATS with JetStream (distributed mode). Events go to the stream
//!   `PC_EVENTS` over `pc.*.evt.>`; work subscriptions are durable pull consumers,
//!   broadcast subscriptions ordered ephemeral consumers; requests and commands are core NATS.
//! - [`MemoryBus`]: in-process (embedded mode). Nothing survives the process.
//!
//! Callers hold a [`Bus`], an enum over the two: the set of implementations is closed,
//! async methods stay plain `async fn` (no boxing, which a `dyn` trait would need), and it
//! is cheap to clone.
//!
//! Operations:
//! - [`Bus::publish`]: event to `pc.<tenant>.evt.<topic>`, returns its stream sequence once
//!   stored; an id seen inside the duplicate window is not stored again (the original
//!   sequence comes back with `duplicate: true`).
//! - [`Bus::subscribe_work`]: a durable shared by every subscriber of the same name; each
//!   event goes to one of them; explicit ack, redelivery after the ack wait, `nak`.
//! - [`Bus::subscribe_broadcast`]: every subscriber gets every event from a start sequence.
//! - [`Bus::request`] / [`Bus::serve`]: request/reply with queue groups.
//! - [`Bus::publish_core`] / [`Bus::subscribe_core`]: fire-and-forget commands.

mod access;
mod config;
mod error;
mod event;
mod id_window;
mod memory;
mod nats;
mod subscription;

use std::time::Duration;

use bytes::Bytes;

pub use access::NatsAccess;
pub use config::{BusConfig, StreamConfig, WorkLimits};
pub use error::BusError;
pub use event::{
    Event, Headers, MAX_EVENT_ID_LEN, MAX_HEADER_NAME_LEN, MAX_HEADER_VALUE_LEN, MAX_SUBJECT_LEN, MAX_TOPIC_LEN,
    Published, ReceivedEvent, StartFrom, TRACEPARENT, TRACESTATE, TopicFilter, event_subject, parse_event_subject,
    subject_matches, validate_core_subject, validate_durable, validate_event_id, validate_headers,
    validate_queue_group, validate_tenant, validate_topic,
};
pub use memory::MemoryBus;
pub use nats::{EVENT_SUBJECTS, NatsBus};
pub use subscription::{
    BroadcastSubscription, CoreMessage, CoreSubscription, Delivery, IncomingRequest, RequestStream, Subscription,
    WorkSubscription,
};

/// The bus a service holds: NATS in distributed mode, in-process in embedded mode.
#[derive(Debug, Clone)]
pub enum Bus {
    /// NATS with JetStream.
    Nats(NatsBus),
    /// In-process.
    Memory(MemoryBus),
}

impl From<NatsBus> for Bus {
    fn from(bus: NatsBus) -> Self {
        Self::Nats(bus)
    }
}

impl From<MemoryBus> for Bus {
    fn from(bus: MemoryBus) -> Self {
        Self::Memory(bus)
    }
}

impl Bus {
    /// Connects to NATS; see [`NatsBus::connect`].
    pub async fn connect_nats(url: &str, config: BusConfig) -> Result<Self, BusError> {
        Self::connect_nats_with(url, config, &NatsAccess::default()).await
    }

    /// Connects to the NATS server at `url` with `access`'s credentials and TLS; see
    /// [`NatsBus::connect_with`].
    pub async fn connect_nats_with(url: &str, config: BusConfig, access: &NatsAccess) -> Result<Self, BusError> {
        NatsBus::connect_with(url, config, access).await.map(Self::Nats)
    }

    /// A new in-process bus; see [`MemoryBus::new`].
    pub fn memory(config: BusConfig) -> Result<Self, BusError> {
        MemoryBus::new(config).map(Self::Memory)
    }

    /// The configuration in use.
    pub fn config(&self) -> &BusConfig {
        match self {
            Self::Nats(b) => b.config(),
            Self::Memory(b) => b.config(),
        }
    }

    /// Publishes an event to `pc.<tenant>.evt.<topic>` and returns once the stream has stored
    /// it, with its sequence. Headers travel with it (NATS headers); the id is the
    /// de-duplication key (`Nats-Msg-Id`): inside the duplicate window a second event with
    /// the same id is dropped and the first one's sequence is returned with `duplicate: true`.
    ///
    /// Fails with [`BusError::Invalid`] for a bad id, tenant, topic or header,
    /// [`BusError::TooLarge`], and (NATS) [`BusError::Timeout`] when no acknowledgement
    /// arrives within `operation_timeout`, for example during an outage: retry with the same id.
    pub async fn publish(&self, event: Event) -> Result<Published, BusError> {
        match self {
            Self::Nats(b) => b.publish(event).await,
            Self::Memory(b) => b.publish(event).await,
        }
    }

    /// The sequence of the last event stored (0 if none). A replica records it before loading
    /// its snapshot and subscribes with [`StartFrom::after`] it.
    pub async fn last_sequence(&self) -> Result<u64, BusError> {
        match self {
            Self::Nats(b) => b.last_sequence().await,
            Self::Memory(b) => b.last_sequence().await,
        }
    }

    /// The sequence of the oldest event the stream still holds (`last_sequence() + 1` when it
    /// holds none). A broadcast follower that meant to start before it has missed events.
    pub async fn first_sequence(&self) -> Result<u64, BusError> {
        match self {
            Self::Nats(b) => b.first_sequence().await,
            Self::Memory(b) => b.first_sequence().await,
        }
    }

    /// Subscribes to the durable `durable` (`[A-Za-z0-9_-]{1,64}`), created on first use, which
    /// then starts at the oldest retained event. Every subscriber of the same name shares its
    /// deliveries: each event goes to one of them. Each delivery must be acknowledged
    /// ([`Delivery::ack`]); one that is not is delivered again after `ack_wait`, and
    /// [`Delivery::nak`] asks for redelivery at once. A new subscriber of the same name
    /// continues after what was acknowledged. The latest subscriber's filter applies to the
    /// durable.
    pub async fn subscribe_work(&self, durable: &str, filter: &TopicFilter) -> Result<WorkSubscription, BusError> {
        self.subscribe_work_with(durable, filter, WorkLimits::default()).await
    }

    /// [`Bus::subscribe_work`] with `limits` in place of the bus configuration's.
    pub async fn subscribe_work_with(
        &self,
        durable: &str,
        filter: &TopicFilter,
        limits: WorkLimits,
    ) -> Result<WorkSubscription, BusError> {
        match self {
            Self::Nats(b) => b.subscribe_work_with(durable, filter, limits).await,
            Self::Memory(b) => b.subscribe_work_with(durable, filter, limits).await,
        }
    }

    /// Subscribes to every matching event from `start`, in sequence order, for this
    /// subscriber alone (each broadcast subscriber gets every event). No acknowledgements.
    pub async fn subscribe_broadcast(
        &self,
        filter: &TopicFilter,
        start: StartFrom,
    ) -> Result<BroadcastSubscription, BusError> {
        match self {
            Self::Nats(b) => b.subscribe_broadcast(filter, start).await,
            Self::Memory(b) => b.subscribe_broadcast(filter, start).await,
        }
    }

    /// Sends a request to `subject` (no wildcards, not an event subject) and waits up to
    /// `timeout` for the reply. [`BusError::NoResponders`] at once when nobody serves the
    /// subject; [`BusError::Timeout`] when nobody answers in time.
    pub async fn request(&self, subject: &str, payload: Bytes, timeout: Duration) -> Result<Bytes, BusError> {
        self.request_with_headers(subject, Headers::new(), payload, timeout)
            .await
    }

    /// [`Bus::request`] with headers (trace context).
    pub async fn request_with_headers(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, BusError> {
        match self {
            Self::Nats(b) => b.request_with_headers(subject, headers, payload, timeout).await,
            Self::Memory(b) => b.request_with_headers(subject, headers, payload, timeout).await,
        }
    }

    /// Serves requests on `subject` (wildcards allowed) in `queue_group`: each request goes
    /// to one server of each group. The subscription is in place when this returns.
    pub async fn serve(&self, subject: &str, queue_group: &str) -> Result<RequestStream, BusError> {
        match self {
            Self::Nats(b) => b.serve(subject, queue_group).await,
            Self::Memory(b) => b.serve(subject, queue_group).await,
        }
    }

    /// Fire-and-forget publish to a core subject such as `pc.<tenant>.cmd.<cluster>`:
    /// nothing is stored, subscribers present now get it.
    pub async fn publish_core(&self, subject: &str, payload: Bytes) -> Result<(), BusError> {
        self.publish_core_with_headers(subject, Headers::new(), payload).await
    }

    /// [`Bus::publish_core`] with headers (trace context).
    pub async fn publish_core_with_headers(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
    ) -> Result<(), BusError> {
        match self {
            Self::Nats(b) => b.publish_core_with_headers(subject, headers, payload).await,
            Self::Memory(b) => b.publish_core_with_headers(subject, headers, payload).await,
        }
    }

    /// Subscribes to a core subject (wildcards allowed; event subjects refused). The
    /// subscription is in place when this returns.
    pub async fn subscribe_core(&self, subject: &str) -> Result<CoreSubscription, BusError> {
        match self {
            Self::Nats(b) => b.subscribe_core(subject).await,
            Self::Memory(b) => b.subscribe_core(subject).await,
        }
    }
}
