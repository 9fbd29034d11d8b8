//! The bounded event publisher: a service's events go to the bus without making the work
//! that caused them (an answer, a sync, a re-evaluation) wait on it.
//!
//! [`EventPublisher::queue`] builds the `EventEnvelope` (fresh UUID v4 event id, the
//! producer, the time, and the current span's trace context in the headers, so the event
//! continues the trace of what caused it) and puts it into a bounded queue with `try_send`:
//! when the queue is full the event is dropped and counted ([`EventCounters::dropped`]);
//! nothing is buffered without bound. One task publishes the queue in order; an event the
//! bus refuses is logged and counted ([`EventCounters::failed`]), not retried (each publish
//! is bounded by the bus's own operation timeout). On stop the task publishes what is
//! queued and ends (the lifecycle's drain deadline bounds this).
//!
//! Admission's decision publisher batches, retries and shares the queue per tenant: a
//! different shape, kept in the admission service.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use portcullis_bus::{Bus, Event};
use portcullis_domain::Topic;
use portcullis_proto::events::v1::{EventEnvelope, event_envelope};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Counters of a publisher.
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

/// Queues a service's events (cheap to clone).
#[derive(Debug, Clone)]
pub struct EventPublisher {
    queue: mpsc::Sender<Event>,
    counters: Arc<EventCounters>,
    producer: &'static str,
}

impl EventPublisher {
    /// A queue of `capacity` events (at least 1) whose envelopes name `producer`, and the
    /// task that drains it to `bus` until `stop` (then it publishes what is queued and ends).
    pub fn start(
        bus: Bus,
        capacity: usize,
        producer: &'static str,
        stop: CancellationToken,
    ) -> (EventPublisher, impl Future<Output = ()> + Send + 'static) {
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
                        tracing::warn!(producer, error = %e, "publishing an event failed");
                        task_counters.failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        };
        (
            EventPublisher {
                queue,
                counters,
                producer,
            },
            task,
        )
    }

    /// The counters.
    pub fn counters(&self) -> &EventCounters {
        &self.counters
    }

    /// Queues `payload` as a `topic` event of `tenant`; dropped and counted when the queue
    /// is full.
    pub fn queue(&self, tenant: &str, topic: Topic, payload: event_envelope::Payload) {
        let event_id = uuid::Uuid::new_v4().to_string();
        let envelope = EventEnvelope {
            event_id: event_id.clone(),
            tenant_id: tenant.to_owned(),
            topic: topic.as_str().to_owned(),
            occurred_at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
            trace: None,
            producer: self.producer.to_owned(),
            payload: Some(payload),
        };
        let mut event = Event::new(event_id, tenant, topic.as_str(), Bytes::from(envelope.encode_to_vec()));
        // The event continues the trace of the work that caused it.
        crate::trace::inject_current(&mut event.headers);
        if self.queue.try_send(event).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::time::Duration;

    use portcullis_bus::{BusConfig, StartFrom, TopicFilter};
    use portcullis_proto::events::v1::SignatureVerdict;

    use super::*;

    fn verdict(cluster: &str) -> event_envelope::Payload {
        event_envelope::Payload::SignatureVerdict(SignatureVerdict {
            cluster_id: cluster.to_owned(),
            ..SignatureVerdict::default()
        })
    }

    #[tokio::test]
    async fn queued_events_are_published_in_order_with_their_envelope_and_drained_on_stop() {
        let bus = Bus::memory(BusConfig::embedded()).unwrap();
        let filter = TopicFilter::topics([Topic::SignatureVerdict.as_str()]);
        let mut seen = bus.subscribe_broadcast(&filter, StartFrom::after(0)).await.unwrap();
        let stop = CancellationToken::new();
        let (publisher, task) = EventPublisher::start(bus.clone(), 8, "tester", stop.clone());
        publisher.queue("acme", Topic::SignatureVerdict, verdict("c1"));
        publisher.queue("acme", Topic::SignatureVerdict, verdict("c2"));
        // Stopped before the task ever ran: what was queued is still published.
        stop.cancel();
        task.await;
        assert_eq!(publisher.counters().published(), 2);
        for cluster in ["c1", "c2"] {
            let received = tokio::time::timeout(Duration::from_secs(10), seen.next())
                .await
                .unwrap()
                .unwrap();
            let envelope = EventEnvelope::decode(received.event.payload.as_ref()).unwrap();
            assert_eq!(envelope.event_id, received.event.id);
            assert_eq!(envelope.tenant_id, "acme");
            assert_eq!(envelope.topic, Topic::SignatureVerdict.as_str());
            assert_eq!(envelope.producer, "tester");
            assert!(envelope.occurred_at.is_some());
            assert_eq!(envelope.payload, Some(verdict(cluster)));
        }
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let bus = Bus::memory(BusConfig::embedded()).unwrap();
        let stop = CancellationToken::new();
        let (publisher, task) = EventPublisher::start(bus, 2, "tester", stop.clone());
        // The task is not running yet: the third event finds the queue full.
        for cluster in ["c1", "c2", "c3"] {
            publisher.queue("acme", Topic::SignatureVerdict, verdict(cluster));
        }
        assert_eq!(publisher.counters().dropped(), 1);
        stop.cancel();
        task.await;
        assert_eq!(publisher.counters().published(), 2);
        assert_eq!(publisher.counters().failed(), 0);
    }

    #[tokio::test]
    async fn an_event_the_bus_refuses_is_counted_as_failed() {
        let bus = Bus::memory(BusConfig::embedded()).unwrap();
        let stop = CancellationToken::new();
        let (publisher, task) = EventPublisher::start(bus, 2, "tester", stop.clone());
        // Not a valid tenant name: the bus refuses the event.
        publisher.queue("not a tenant!", Topic::SignatureVerdict, verdict("c1"));
        stop.cancel();
        task.await;
        assert_eq!(publisher.counters().failed(), 1);
        assert_eq!(publisher.counters().published(), 0);
    }
}
