//! Every verdict goes to `pc.<tenant>.evt.signature.verdict`, without making the answer wait
//! on the bus: a bounded queue and one publishing task; when the queue is full the event is
//! dropped and counted (the answer matters more than its record).

use portcullis_bus::Bus;
use portcullis_domain::Topic;
pub use portcullis_kit::events::EventCounters;
use portcullis_kit::events::EventPublisher;
use portcullis_proto::events::v1::{SignatureVerdict, event_envelope};
use tokio_util::sync::CancellationToken;

use crate::grpc::to_proto_verdict;
use crate::verify::Verification;

/// The producer named in the envelopes.
pub const PRODUCER: &str = "signature";

/// Queues verdict events (cheap to clone) on the kit's publisher.
#[derive(Debug, Clone)]
pub struct VerdictEvents {
    publisher: EventPublisher,
}

impl VerdictEvents {
    /// A queue of `capacity` events and the task that drains it to `bus` until `stop`
    /// (then it publishes what is queued and ends).
    pub fn start(bus: Bus, capacity: usize, stop: CancellationToken) -> (VerdictEvents, impl Future<Output = ()>) {
        let (publisher, task) = EventPublisher::start(bus, capacity, PRODUCER, stop);
        (VerdictEvents { publisher }, task)
    }

    /// The counters.
    pub fn counters(&self) -> &EventCounters {
        self.publisher.counters()
    }

    /// Queues the event of `verification` for `tenant` (and `cluster_id` when known). It
    /// carries the current span's trace context (the kit's publisher adds it).
    pub fn verdict(&self, tenant: &str, cluster_id: &str, verification: &Verification) {
        self.publisher.queue(
            tenant,
            Topic::SignatureVerdict,
            event_envelope::Payload::SignatureVerdict(SignatureVerdict {
                cluster_id: cluster_id.to_owned(),
                image: verification.image.clone(),
                digest: verification.digest.clone().unwrap_or_default(),
                verdicts: verification.verdicts.iter().map(to_proto_verdict).collect(),
            }),
        );
    }
}
