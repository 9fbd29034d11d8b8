//! The bus work subscription replicas share, over the other stages' events (admission
//! decisions, continuous findings and mitigations, signature verdicts). A delivery is acked
//! once its event is stored (or deliberately not: unreadable, refused for its time, or of an
//! `xdrEnabled: false` policy, each counted), and nak'ed when the write failed (it comes
//! back, to any replica); after [`MAX_ATTEMPTS`] deliveries it is acked with an error in
//! the log.
//!
//! Many deliveries are handled at once, so that the write path batches them.

use portcullis_bus::{Bus, TopicFilter, WorkLimits};
use portcullis_domain::Topic;
use portcullis_kit::work::{WorkHandler, WorkOptions, subscribe_work};
use portcullis_proto::events::v1 as pe;
use tokio_util::sync::CancellationToken;

use crate::error::TelemetryError;
use crate::ingest::Ingestor;

/// Deliveries of one event at most before it is given up (acked with an error logged).
pub const MAX_ATTEMPTS: u64 = 5;

/// Deliveries asked for in one pull from NATS, at most.
pub const PULL_BATCH: usize = 1000;

/// The topics of the work subscription.
pub const INGEST_TOPICS: [Topic; 4] = [
    Topic::AdmissionDecision,
    Topic::ContinuousFinding,
    Topic::ContinuousMitigation,
    Topic::SignatureVerdict,
];

/// The ingestor as the kit's work handler.
#[derive(Clone)]
struct Ingest(Ingestor);

impl WorkHandler for Ingest {
    type Error = TelemetryError;

    async fn handle(&self, tenant: &str, envelope: &pe::EventEnvelope) -> Result<(), TelemetryError> {
        self.0.bus_event(tenant, envelope).await
    }
}

/// Subscribes to [`INGEST_TOPICS`] under `durable` (shared by replicas); the work loop
/// returned (the kit's, `portcullis_kit::work`) runs until `stop`, `max_in_flight`
/// deliveries at once, `max_ack_pending` un-acknowledged in the durable (all replicas).
pub async fn subscribe(
    ingestor: Ingestor,
    bus: &Bus,
    durable: &str,
    max_in_flight: usize,
    max_ack_pending: usize,
    stop: CancellationToken,
) -> Result<impl Future<Output = Result<(), String>> + Send + 'static + use<>, TelemetryError> {
    let mut options = WorkOptions::new("ingest", "it is not stored", MAX_ATTEMPTS, max_in_flight);
    // Deliveries come in pulls of up to PULL_BATCH, and wait unacked for their batch's
    // commit: the bus's default outstanding limit (1,000) would cap a batch below it.
    options.limits = WorkLimits {
        max_ack_pending: Some(max_ack_pending.max(1)),
        pull_batch: Some(max_in_flight.clamp(1, PULL_BATCH)),
    };
    subscribe_work(
        bus,
        durable,
        &TopicFilter::topics(INGEST_TOPICS),
        options,
        Ingest(ingestor),
        stop,
    )
    .await
    .map_err(|e| TelemetryError::Unavailable(format!("the ingest subscription: {e}")))
}
