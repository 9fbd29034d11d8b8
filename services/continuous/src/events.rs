//! Findings events (`pc.<tenant>.evt.continuous.finding`: opened, updated, resolved; never
//! for an unchanged state) and mitigation events (`continuous.mitigation`: every command
//! made and every ack), without making a sync or a re-evaluation wait on the bus: a bounded
//! queue and one publishing task; when the queue is full the event is dropped and counted
//! (the findings and commands themselves are stored; the events are their record).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use portcullis_bus::{Bus, Event};
use portcullis_domain::Topic;
use portcullis_proto::continuous::v1 as pv;
use portcullis_proto::events::v1::{
    ContinuousFinding, ContinuousMitigation, EventEnvelope, FindingTransition, event_envelope,
};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The producer named in the envelopes.
pub const PRODUCER: &str = "continuous";

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

/// Queues findings and mitigation events (cheap to clone).
#[derive(Debug, Clone)]
pub struct ContinuousEvents {
    queue: mpsc::Sender<Event>,
    counters: Arc<EventCounters>,
}

impl ContinuousEvents {
    /// A queue of `capacity` events and the task that drains it to `bus` until `stop` (then
    /// it publishes what is queued and ends).
    pub fn start(
        bus: Bus,
        capacity: usize,
        stop: CancellationToken,
    ) -> (ContinuousEvents, impl Future<Output = ()> + Send + 'static) {
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
                        tracing::warn!(error = %e, "publishing a continuous event failed");
                        task_counters.failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        };
        (ContinuousEvents { queue, counters }, task)
    }

    /// The counters.
    pub fn counters(&self) -> &EventCounters {
        &self.counters
    }

    fn queue(&self, tenant: &str, topic: Topic, payload: event_envelope::Payload) {
        let event_id = uuid::Uuid::new_v4().to_string();
        let envelope = EventEnvelope {
            event_id: event_id.clone(),
            tenant_id: tenant.to_owned(),
            topic: topic.as_str().to_owned(),
            occurred_at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
            trace: None,
            producer: PRODUCER.to_owned(),
            payload: Some(payload),
        };
        let mut event = Event::new(event_id, tenant, topic.as_str(), Bytes::from(envelope.encode_to_vec()));
        // The event continues the trace of the sync or event that caused it.
        portcullis_kit::trace::inject_current(&mut event.headers);
        if self.queue.try_send(event).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
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
