//! Findings events (`pc.<tenant>.evt.continuous.finding`: opened, updated, resolved; never
//! for an unchanged state) and mitigation events (`continuous.mitigation`: every command
//! made and every ack), without making a sync or a re-evaluation wait on the bus: a bounded
//! queue and one publishing task; when the queue is full the event is dropped and counted
//! (the findings and commands themselves are stored; the events are their record).

use portcullis_bus::Bus;
use portcullis_domain::Topic;
pub use portcullis_kit::events::EventCounters;
use portcullis_kit::events::EventPublisher;
use portcullis_proto::continuous::v1 as pv;
use portcullis_proto::events::v1::{ContinuousFinding, ContinuousMitigation, FindingTransition, event_envelope};
use tokio_util::sync::CancellationToken;

/// The producer named in the envelopes.
pub const PRODUCER: &str = "continuous";

/// Queues findings and mitigation events (cheap to clone) on the kit's publisher.
#[derive(Debug, Clone)]
pub struct ContinuousEvents {
    publisher: EventPublisher,
}

impl ContinuousEvents {
    /// A queue of `capacity` events and the task that drains it to `bus` until `stop` (then
    /// it publishes what is queued and ends).
    pub fn start(
        bus: Bus,
        capacity: usize,
        stop: CancellationToken,
    ) -> (ContinuousEvents, impl Future<Output = ()> + Send + 'static) {
        let (publisher, task) = EventPublisher::start(bus, capacity, PRODUCER, stop);
        (ContinuousEvents { publisher }, task)
    }

    /// The counters.
    pub fn counters(&self) -> &EventCounters {
        self.publisher.counters()
    }

    fn queue(&self, tenant: &str, topic: Topic, payload: event_envelope::Payload) {
        self.publisher.queue(tenant, topic, payload);
    }

    /// Queues a finding's transition.
    pub fn finding(&self, tenant: &str, transition: FindingTransition, finding: pv::Finding) {
        self.queue(
            tenant,
            Topic::ContinuousFinding,
            event_envelope::Payload::ContinuousFinding(ContinuousFinding {
                finding: Some(finding),
                transition: transition as i32,
            }),
        );
    }

    /// Queues a command made, or its new state.
    pub fn mitigation(&self, tenant: &str, command: pv::MitigationCommand) {
        self.queue(
            tenant,
            Topic::ContinuousMitigation,
            event_envelope::Payload::ContinuousMitigation(ContinuousMitigation { command: Some(command) }),
        );
    }
}
