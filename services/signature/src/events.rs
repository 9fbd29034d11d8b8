//! Every verdict goes to `pc.<tenant>.evt.signature.verdict`, without making the answer wait
//! on the bus: a bounded queue and one publishing task; when the queue is full the event is
//! dropped and counted (the answer matters more than its record).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use portcullis_bus::{Bus, Event};
use portcullis_domain::Topic;
use portcullis_proto::events::v1::{EventEnvelope, SignatureVerdict, event_envelope};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::grpc::to_proto_verdict;
use crate::verify::Verification;

/// The producer named in the envelopes.
pub const PRODUCER: &str = "signature";

/// Counters of the publisher.
#[derive(Debug, Default)]
pub struct EventCounters {
    published: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
}

impl EventCounters {
    /// Events the bus accepted.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Events the bus refused.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

/// Queues verdict events (cheap to clone).
#[derive(Debug, Clone)]
pub struct VerdictEvents {
    queue: mpsc::Sender<Event>,
    counters: Arc<EventCounters>,
}

impl VerdictEvents {
    /// A queue of `capacity` events and the task that drains it to `bus` until `stop`
    /// (then it publishes what is queued and ends).
    pub fn start(bus: Bus, capacity: usize, stop: CancellationToken) -> (VerdictEvents, impl Future<Output = ()>) {
        let (queue, mut receiver) = mpsc::channel::<Event>(capacity.max(1));
        let counters = Arc::new(EventCounters::default());
        let task_counters = counters.clone();
        let task = async move {
            loop {
                let event = tokio::select! {
                    event = receiver.recv() => event,
                    () = stop.cancelled() => {
                        receiver.close();
                        receiver.recv().await
                    }
                };
                let Some(event) = event else { return };
                match bus.publish(event).await {
                    Ok(_) => task_counters.published.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        tracing::warn!(error = %e, "publishing a signature verdict failed");
                        task_counters.failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        };
        (VerdictEvents { queue, counters }, task)
    }

    /// The counters.
    pub fn counters(&self) -> &EventCounters {
        &self.counters
    }

    /// Queues the event of `verification` for `tenant` (and `cluster_id` when known).
    pub fn verdict(&self, tenant: &str, cluster_id: &str, verification: &Verification) {
        let event_id = uuid::Uuid::new_v4().to_string();
        let envelope = EventEnvelope {
            event_id: event_id.clone(),
            tenant_id: tenant.to_owned(),
            topic: Topic::SignatureVerdict.as_str().to_owned(),
            occurred_at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
            trace: None,
            producer: PRODUCER.to_owned(),
            payload: Some(event_envelope::Payload::SignatureVerdict(SignatureVerdict {
                cluster_id: cluster_id.to_owned(),
                image: verification.image.clone(),
                digest: verification.digest.clone().unwrap_or_default(),
                verdicts: verification.verdicts.iter().map(to_proto_verdict).collect(),
            })),
        };
        let event = Event::new(
            event_id,
            tenant,
            Topic::SignatureVerdict.as_str(),
            Bytes::from(envelope.encode_to_vec()),
        );
        if self.queue.try_send(event).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}
