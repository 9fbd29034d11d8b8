//! The bus work subscription replicas share, over the other stages' events (admission
//! decisions, continuous findings and mitigations, signature verdicts). A delivery is acked
//! once its event is stored (or deliberately not: unreadable, refused for its time, or of an
//! `xdrEnabled: false` policy, each counted), and nak'ed when the write failed (it comes
//! back, to any replica); after [`MAX_ATTEMPTS`] deliveries it is acked with an error in
//! the log.
//!
//! Many deliveries are handled at once, so that the write path batches them.

use std::sync::Arc;
use std::time::Duration;

use portcullis_bus::{Bus, Delivery, TopicFilter};
use portcullis_domain::Topic;
use portcullis_proto::events::v1 as pe;
use prost::Message as _;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::error::TelemetryError;
use crate::ingest::Ingestor;

/// Deliveries of one event at most before it is given up (acked with an error logged).
pub const MAX_ATTEMPTS: u64 = 5;

/// The topics of the work subscription.
pub const INGEST_TOPICS: [Topic; 4] = [
    Topic::AdmissionDecision,
    Topic::ContinuousFinding,
    Topic::ContinuousMitigation,
    Topic::SignatureVerdict,
];

async fn delivery(ingestor: &Ingestor, delivery: Delivery) {
    let event = &delivery.event;
    let span = portcullis_kit::trace::event_span(&event.topic, delivery.sequence, &event.headers);
    async {
        let result = match pe::EventEnvelope::decode(event.payload.as_ref()) {
            Ok(envelope) => ingestor.bus_event(&event.tenant, &envelope).await,
            Err(e) => {
                tracing::warn!(topic = %event.topic, error = %e, "ignoring an undecodable event");
                Ok(())
            }
        };
        let settled = match result {
            Ok(()) => delivery.ack().await,
            Err(e) if delivery.attempt >= MAX_ATTEMPTS => {
                tracing::error!(tenant = %event.tenant, topic = %event.topic, attempts = delivery.attempt, error = %e, "giving up an event: it is not stored");
                delivery.ack().await
            }
            Err(e) => {
                tracing::warn!(tenant = %event.tenant, topic = %event.topic, attempt = delivery.attempt, error = %e, "storing an event failed; it comes back");
                // A short pause, so that a store that is down is not hammered.
                tokio::time::sleep(Duration::from_millis(200 * delivery.attempt.min(10))).await;
                delivery.nak().await
            }
        };
        if let Err(e) = settled {
            tracing::warn!(error = %e, "settling a delivery failed; it may come back");
        }
    }
    .instrument(span)
    .await;
}

/// Subscribes to [`INGEST_TOPICS`] under `durable` (shared by replicas); the work loop
/// returned runs until `stop`, `max_in_flight` deliveries at once.
pub async fn subscribe(
    ingestor: Ingestor,
    bus: &Bus,
    durable: &str,
    max_in_flight: usize,
    stop: CancellationToken,
) -> Result<impl Future<Output = Result<(), String>> + Send + 'static + use<>, TelemetryError> {
    let mut subscription = bus
        .subscribe_work(durable, &TopicFilter::topics(INGEST_TOPICS))
        .await
        .map_err(|e| TelemetryError::Unavailable(format!("the ingest subscription: {e}")))?;
    let slots = Arc::new(Semaphore::new(max_in_flight.max(1)));
    Ok(async move {
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            let permit = tokio::select! {
                () = stop.cancelled() => break,
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let next = tokio::select! {
                () = stop.cancelled() => break,
                d = subscription.next() => d,
            };
            let Some(next) = next else {
                return Err("the ingest subscription ended".to_owned());
            };
            let ingestor = ingestor.clone();
            tasks.spawn(async move {
                delivery(&ingestor, next).await;
                drop(permit);
            });
            while tasks.try_join_next().is_some() {}
        }
        // Deliveries in flight finish (the lifecycle's drain deadline bounds this).
        while tasks.join_next().await.is_some() {}
        Ok(())
    })
}
