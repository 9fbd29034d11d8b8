//! The outbox relay's sink: the bus. Each event goes to `pc.<tenant>.evt.<topic>` with
//! `Nats-Msg-Id` = the event id (the bus's de-duplication key), the encoded envelope as
//! payload, and the envelope's W3C trace context as headers. The envelope (the outbox row's
//! payload) keeps the context of the request that made the change; while spans are exported
//! each publish has a span, its child, whose context the headers carry instead.

use std::future::Future;

use bytes::Bytes;
use portcullis_bus::{Bus, BusError, Event, TRACEPARENT, TRACESTATE};
use portcullis_kit::trace;
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
        let mut event = BusSink::event(event);
        let span = publish_span(&mut event);
        tracing::Instrument::instrument(async move { bus.publish(event).await.map(|_| ()) }, span)
    }

    /// Too large or invalid (tenant, topic, id, headers): the bus will refuse the event
    /// however often it is sent. Timeouts and transport errors are retried.
    fn is_permanent(&self, error: &BusError) -> bool {
        matches!(error, BusError::TooLarge { .. } | BusError::Invalid { .. })
    }
}

/// The span of one relayed event, a child of the request that made the change; its context
/// replaces the request's in the headers (disabled while spans are not exported).
fn publish_span(event: &mut Event) -> tracing::Span {
    if !trace::exporting_traces() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "outbox.publish",
        otel.kind = "producer",
        messaging.destination.name = event.topic.as_str()
    );
    trace::set_parent_from(&span, &trace::MapExtractor(&event.headers));
    trace::inject_span(&span, &mut trace::MapInjector(&mut event.headers));
    span
}
