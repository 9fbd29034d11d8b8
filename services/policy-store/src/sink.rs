//! The outbox relay's sink: the bus. Each event goes to `pc.<tenant>.evt.<topic>` with
//! `Nats-Msg-Id` = the event id (the bus's de-duplication key), the encoded envelope as
//! payload, and the envelope's W3C trace context as headers.

use std::future::Future;

use bytes::Bytes;
use portcullis_bus::{Bus, BusError, Event, TRACEPARENT, TRACESTATE};
use portcullis_storage::{EventSink, OutboxEvent};

/// Publishes outbox events on the bus.
#[derive(Debug, Clone)]
pub struct BusSink {
    bus: Bus,
}

impl BusSink {
    /// A sink publishing on `bus`.
    pub fn new(bus: Bus) -> BusSink {
        BusSink { bus }
    }

    /// The bus event of an outbox event.
    pub fn event(outbox: &OutboxEvent) -> Event {
        let mut event = Event::new(
            outbox.event_id.clone(),
            outbox.tenant_id.clone(),
            outbox.topic.clone(),
            Bytes::from(outbox.payload.clone()),
        );
        // The trace context rides in the envelope; copy it into the headers so consumers
        // can join the trace without decoding the payload.
        if let Ok(envelope) = outbox.envelope()
            && let Some(trace) = envelope.trace
        {
            if !trace.traceparent.is_empty() {
                event = event.with_header(TRACEPARENT, trace.traceparent);
            }
            if !trace.tracestate.is_empty() {
                event = event.with_header(TRACESTATE, trace.tracestate);
            }
        }
        event
    }
}

impl EventSink for BusSink {
    type Error = BusError;

    fn publish(&self, event: &OutboxEvent) -> impl Future<Output = Result<(), BusError>> + Send {
        let bus = self.bus.clone();
        let event = BusSink::event(event);
        async move { bus.publish(event).await.map(|_| ()) }
    }
}
