//! The one work-subscription loop: a durable bus subscription shared by a service's replicas,
//! each event going to one of them (ARCHITECTURE.md, Messaging).
//!
//! Each delivery is decoded as an `EventEnvelope` and handed to the service's
//! [`WorkHandler`], inside a span whose parent is the context in the event's headers. Then:
//! - the handler succeeded: the delivery is acked (after the handler's save, so an event is
//!   never lost to a crash between the two);
//! - the handler failed: after a short pause (so that a store that is down is not
//!   hammered) the delivery is nak'ed and comes back, to any replica;
//! - the handler failed on the [`WorkOptions::max_attempts`]th delivery: the event is given
//!   up, acked with an error in the log, so that one poisoned event cannot occupy the
//!   replicas forever;
//! - the event is not an `EventEnvelope`: it never gets better, so it is acked with a
//!   warning, not retried.
//!
//! At most [`WorkOptions::max_in_flight`] deliveries are handled at once (a service that
//! batches its writes wants many); on stop, those in flight finish (the lifecycle's drain
//! deadline bounds this).

use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

use portcullis_bus::{Bus, BusError, Delivery, TopicFilter, WorkLimits};
use portcullis_proto::events::v1::EventEnvelope;
use prost::Message as _;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

/// What a service does with one work event.
pub trait WorkHandler: Clone + Send + Sync + 'static {
    /// Why handling failed (logged; the delivery comes back).
    type Error: Display + Send;

    /// Handles one event of `tenant` (the subject's tenant). Must be idempotent on the
    /// event id: a delivery whose ack was lost comes back.
    fn handle(&self, tenant: &str, envelope: &EventEnvelope) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// How a work subscription runs.
#[derive(Debug, Clone)]
pub struct WorkOptions {
    /// What the subscription is, for logs and the error when it ends ("trigger", "ingest").
    pub name: &'static str,
    /// What giving an event up means for the service, logged with it.
    pub given_up: &'static str,
    /// Deliveries of one event at most before it is given up.
    pub max_attempts: u64,
    /// Deliveries handled at once (at least 1).
    pub max_in_flight: usize,
    /// The pause before a failed delivery is nak'ed, times its attempt (at most 10 times).
    pub retry_pause: Duration,
    /// The durable's own limits (un-acknowledged deliveries, pull size) in place of the bus
    /// configuration's; none by default.
    pub limits: WorkLimits,
}

impl WorkOptions {
    /// Options named `name`, giving up after `max_attempts` deliveries, `max_in_flight` at
    /// once, pausing 200 ms per attempt before a nak.
    pub fn new(name: &'static str, given_up: &'static str, max_attempts: u64, max_in_flight: usize) -> Self {
        Self {
            name,
            given_up,
            max_attempts,
            max_in_flight,
            retry_pause: Duration::from_millis(200),
            limits: WorkLimits::default(),
        }
    }
}

/// Handles one delivery, then acks or naks it as the module docs say.
async fn settle<H: WorkHandler>(handler: &H, options: &WorkOptions, delivery: Delivery) {
    let event = &delivery.event;
    let span = crate::trace::event_span(&event.topic, delivery.sequence, &event.headers);
    async {
        let result = match EventEnvelope::decode(event.payload.as_ref()) {
            Ok(envelope) => handler.handle(&event.tenant, &envelope).await,
            Err(e) => {
                tracing::warn!(topic = %event.topic, error = %e, "ignoring an undecodable event");
                Ok(())
            }
        };
        let settled = match result {
            Ok(()) => delivery.ack().await,
            Err(e) if delivery.attempt >= options.max_attempts => {
                tracing::error!(subscription = options.name, tenant = %event.tenant, topic = %event.topic, attempts = delivery.attempt, error = %e, "giving up an event: {}", options.given_up);
                delivery.ack().await
            }
            Err(e) => {
                tracing::warn!(subscription = options.name, tenant = %event.tenant, topic = %event.topic, attempt = delivery.attempt, error = %e, "handling an event failed; it comes back");
                let factor = u32::try_from(delivery.attempt.min(10)).unwrap_or(10);
                tokio::time::sleep(options.retry_pause.saturating_mul(factor)).await;
                delivery.nak().await
            }
        };
        if let Err(e) = settled {
            tracing::warn!(subscription = options.name, error = %e, "settling a delivery failed; it may come back");
        }
    }
    .instrument(span)
    .await;
}

/// Subscribes to `filter` under `durable` (shared by replicas); the work loop returned runs
/// until `stop`, handing each delivery to `handler`. The loop fails when the subscription
/// ends by itself (the bus connection closed for good).
pub async fn subscribe_work<H: WorkHandler>(
    bus: &Bus,
    durable: &str,
    filter: &TopicFilter,
    options: WorkOptions,
    handler: H,
    stop: CancellationToken,
) -> Result<impl Future<Output = Result<(), String>> + Send + 'static + use<H>, BusError> {
    let mut subscription = bus.subscribe_work_with(durable, filter, options.limits).await?;
    let slots = Arc::new(Semaphore::new(options.max_in_flight.max(1)));
    let options = Arc::new(options);
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
                return Err(format!("the {} subscription ended", options.name));
            };
            let handler = handler.clone();
            let options = options.clone();
            tasks.spawn(async move {
                settle(&handler, &options, next).await;
                drop(permit);
            });
            while tasks.try_join_next().is_some() {}
        }
        // Deliveries in flight finish (the lifecycle's drain deadline bounds this).
        while tasks.join_next().await.is_some() {}
        Ok(())
    })
}
