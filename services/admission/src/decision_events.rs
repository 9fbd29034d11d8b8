//! Decision events: every admission decision goes to `pc.<tenant>.evt.admission.decision`
//! without making the review wait.
//!
//! [`DecisionPublisher::submit_decision`] (and its siblings) only put the decision into a
//! bounded queue (`try_send`: no await, and no encoding on the caller's thread); when the
//! queue is full the decision is dropped and counted. One tenant may hold at most
//! `max_per_tenant` of the queue: a tenant flooding reviews drops its own decisions, not
//! another tenant's. A
//! background task ([`PublisherTask`]) takes up to `batch` queued decisions, builds their
//! [`EventEnvelope`]s (fresh UUID v4 event id, producer, time, trace context: the one given,
//! or else the submitting span's, so the event continues the review's trace), and publishes
//! them concurrently, each publish bounded by the bus's own `operation_timeout`. Events whose
//! publish failed with a transient error (bus down) are retried with the same id, after a
//! capped exponential backoff, while new decisions keep queueing: during an outage the queue
//! fills and only the overflow is dropped. Events the bus refuses for good (invalid tenant,
//! too large) are dropped and counted as `rejected`. At most `capacity + batch` decisions are
//! held at any time; nothing is buffered without bound.
//!
//! Blocked, log-only (any violation), fail-open or fail-closed decisions and those with a
//! signature verdict other than verified carry the full [`Decision`] (with its digests and
//! signature verdicts); plain allows carry only the compact [`AdmissionDecisionSummary`] (see
//! [`admission_decision_event`]).
//!
//! In embedded mode nothing survives a crash: [`PublisherTask::shutdown`] drains the queue on
//! an orderly stop, and what it cannot publish by its deadline is counted as dropped.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use portcullis_bus::{Bus, Event, TRACEPARENT, TRACESTATE, validate_headers};
use portcullis_proto::admission::v1::{Decision, DecisionBasis};
use portcullis_proto::events::v1::{
    AdmissionDecision, AdmissionDecisionSummary, EventEnvelope, TraceContext, event_envelope,
};
use portcullis_proto::signature::v1::Verdict;
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The topic of decision events: subject `pc.<tenant>.evt.admission.decision`.
pub const TOPIC: &str = portcullis_domain::Topic::AdmissionDecision.as_str();

/// Default queue bound: about one second of reviews at a busy replica's rate, a few MiB.
pub const DEFAULT_CAPACITY: usize = 10_000;
/// Default share of one tenant: half the default queue, so one tenant's flood (or its
/// events during an outage) leaves the other half to everyone else.
pub const DEFAULT_MAX_PER_TENANT: usize = 5_000;
/// Default batch: enough concurrent publishes to keep up with a replica's review rate over
/// one round trip, few enough not to flood the NATS client's outgoing buffer.
pub const DEFAULT_BATCH: usize = 256;
/// Default time the task waits for a batch to fill once it has one event.
pub const DEFAULT_LINGER: Duration = Duration::from_millis(20);
/// Default first retry delay after a failed round.
pub const DEFAULT_RETRY_INITIAL: Duration = Duration::from_millis(100);
/// Default longest retry delay.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(5);
/// Default producer written into the envelopes.
pub const DEFAULT_PRODUCER: &str = "admission";
/// Shortest interval between two warnings about dropped or failing events.
const WARN_EVERY: Duration = Duration::from_secs(5);

/// Settings of the decision event publisher.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecisionEventsConfig {
    /// Decisions that may wait in the queue; beyond it they are dropped and counted.
    pub capacity: usize,
    /// Decisions of one tenant that may wait in the queue (at most `capacity`); beyond it
    /// that tenant's decisions are dropped and counted while other tenants' still queue.
    pub max_per_tenant: usize,
    /// Events published concurrently in one round (and retried together).
    pub batch: usize,
    /// How long the task waits for a batch to fill once it has one event; zero publishes
    /// whatever is queued at once.
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// Delay before the first retry of events whose publish failed; doubled per failed round.
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    /// Longest delay between retries.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// The envelopes' `producer`, e.g. `admission/2` for a replica.
    pub producer: String,
}

impl Default for DecisionEventsConfig {
    fn default() -> Self {
        Self {
            capacity: DEFAULT_CAPACITY,
            max_per_tenant: DEFAULT_MAX_PER_TENANT,
            batch: DEFAULT_BATCH,
            linger: DEFAULT_LINGER,
            retry_initial: DEFAULT_RETRY_INITIAL,
            retry_max: DEFAULT_RETRY_MAX,
            producer: DEFAULT_PRODUCER.to_owned(),
        }
    }
}

/// Why a decision events configuration was refused; `field` names the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid decision events {field}: {reason}")]
pub struct DecisionEventsConfigError {
    /// The offending setting.
    pub field: &'static str,
    /// Why it was refused.
    pub reason: String,
}

impl DecisionEventsConfig {
    /// Refuses a zero capacity, batch or retry delay, a maximum delay below the first one,
    /// and an empty producer.
    pub fn validate(&self) -> Result<(), DecisionEventsConfigError> {
        let error = |field, reason: &str| {
            Err(DecisionEventsConfigError {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.capacity == 0 {
            return error("capacity", "must be greater than zero");
        }
        if self.max_per_tenant == 0 {
            return error("max_per_tenant", "must be greater than zero");
        }
        if self.batch == 0 {
            return error("batch", "must be greater than zero");
        }
        if self.retry_initial.is_zero() {
            return error("retry_initial", "must be greater than zero");
        }
        if self.retry_max < self.retry_initial {
            return error("retry_max", "must be at least retry_initial");
        }
        if self.producer.is_empty() {
            return error("producer", "must not be empty");
        }
        Ok(())
    }
}

/// Counters of the publisher, since it started. At any time
/// `submitted = published + dropped + rejected + queued()`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecisionEventStats {
    /// Decisions handed to `submit*`.
    pub submitted: u64,
    /// Events the bus stored (or recognised as duplicates of stored ones).
    pub published: u64,
    /// Decisions lost without the bus refusing them: the queue was full or the publisher
    /// stopped when they were submitted, or they were still unpublished at the shutdown
    /// deadline.
    pub dropped: u64,
    /// Events the bus refused for good (invalid tenant, too large): never retried.
    pub rejected: u64,
    /// Of `dropped`, those dropped because their tenant held its whole share of the queue.
    pub over_share: u64,
    /// Publish attempts that failed with a transient error (each then retried).
    pub failed_attempts: u64,
}

impl DecisionEventStats {
    /// Decisions in the queue or awaiting a retry (approximate while the publisher runs).
    pub fn queued(&self) -> u64 {
        self.submitted
            .saturating_sub(self.published)
            .saturating_sub(self.dropped)
            .saturating_sub(self.rejected)
    }
}

#[derive(Debug, Default)]
struct Counters {
    submitted: AtomicU64,
    published: AtomicU64,
    dropped: AtomicU64,
    rejected: AtomicU64,
    over_share: AtomicU64,
    failed_attempts: AtomicU64,
}

/// How many decisions each tenant has in the queue, to bound its share.
#[derive(Debug)]
struct Shares {
    max_per_tenant: usize,
    queued: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

impl Shares {
    fn new(max_per_tenant: usize) -> Shares {
        Shares {
            max_per_tenant: max_per_tenant.max(1),
            queued: std::sync::Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, usize>> {
        // Plain counts: a panic elsewhere mid-update leaves nothing inconsistent.
        self.queued.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts one more queued decision of `tenant`, unless it holds its whole share.
    fn take(&self, tenant: &str) -> bool {
        let mut queued = self.lock();
        match queued.get_mut(tenant) {
            Some(n) if *n >= self.max_per_tenant => false,
            Some(n) => {
                *n += 1;
                true
            }
            None => {
                queued.insert(tenant.to_owned(), 1);
                true
            }
        }
    }

    /// One decision of `tenant` left the queue.
    fn give_back(&self, tenant: &str) {
        let mut queued = self.lock();
        if let Some(n) = queued.get_mut(tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                queued.remove(tenant);
            }
        }
    }
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn snapshot(&self) -> DecisionEventStats {
        // Outcomes first, `submitted` last: an event is counted submitted before its outcome,
        // so the snapshot never shows more outcomes than submissions.
        let published = self.published.load(Ordering::Relaxed);
        let dropped = self.dropped.load(Ordering::Relaxed);
        let rejected = self.rejected.load(Ordering::Relaxed);
        let over_share = self.over_share.load(Ordering::Relaxed);
        let failed_attempts = self.failed_attempts.load(Ordering::Relaxed);
        DecisionEventStats {
            submitted: self.submitted.load(Ordering::Relaxed),
            published,
            dropped,
            rejected,
            over_share,
            failed_attempts,
        }
    }
}

/// A submitted decision, as cheap to make as possible: the envelope is built in the task.
#[derive(Debug)]
enum Payload {
    /// A ready event payload. (Both variants are boxed so that a queue slot stays small.)
    Event(Box<AdmissionDecision>),
    /// A full decision, trimmed by [`admission_decision_event`] in the task, and the
    /// replay projection of what was reviewed (empty when none).
    Decision(Box<Decision>, Bytes),
}

#[derive(Debug)]
struct Queued {
    tenant: String,
    payload: Payload,
    trace: Option<TraceContext>,
    /// The submitting span's context, when no trace context was given and spans are
    /// exported: formatted in the task, off the review's path.
    span: Option<portcullis_kit::trace::Context>,
    submitted_at: SystemTime,
}

/// The handle request handlers publish decisions through; cheap to clone. Every method
/// returns at once: nothing here waits for the bus.
#[derive(Debug, Clone)]
pub struct DecisionPublisher {
    queue: mpsc::Sender<Queued>,
    counters: Arc<Counters>,
    shares: Arc<Shares>,
}

/// A read-only view of a publisher's counters that, unlike a [`DecisionPublisher`], does not
/// keep its queue open (for metrics callbacks that live as long as the meter provider).
#[derive(Debug, Clone)]
pub struct DecisionEventCounters {
    counters: Arc<Counters>,
}

impl DecisionEventCounters {
    /// The counters so far.
    pub fn stats(&self) -> DecisionEventStats {
        self.counters.snapshot()
    }
}

/// The background task publishing queued decisions; [`PublisherTask::shutdown`] flushes it.
#[derive(Debug)]
#[must_use = "the task runs until every publisher is dropped; call shutdown to flush it"]
pub struct PublisherTask {
    handle: JoinHandle<()>,
    stop: oneshot::Sender<Instant>,
    counters: Arc<Counters>,
}

impl DecisionPublisher {
    /// Starts the publishing task on the current Tokio runtime (so call it from inside
    /// one). `config` should have passed [`DecisionEventsConfig::validate`]; zero sizes are
    /// raised to 1 rather than refused here.
    pub fn start(bus: Bus, config: DecisionEventsConfig) -> (DecisionPublisher, PublisherTask) {
        let (queue, receiver) = mpsc::channel(config.capacity.max(1));
        let (stop, stop_receiver) = oneshot::channel();
        let counters = Arc::new(Counters::default());
        let shares = Arc::new(Shares::new(config.max_per_tenant.min(config.capacity)));
        let worker = Worker {
            bus,
            config,
            counters: Arc::clone(&counters),
            shares: Arc::clone(&shares),
            warnings: Warnings::default(),
        };
        let handle = tokio::spawn(worker.run(receiver, stop_receiver));
        (
            DecisionPublisher {
                queue,
                counters: Arc::clone(&counters),
                shares,
            },
            PublisherTask { handle, stop, counters },
        )
    }

    /// A publisher that publishes nothing: every submitted decision is counted as dropped.
    /// For configurations and tests without a bus.
    pub fn disabled() -> DecisionPublisher {
        let (queue, _) = mpsc::channel(1);
        DecisionPublisher {
            queue,
            counters: Arc::default(),
            shares: Arc::new(Shares::new(usize::MAX)),
        }
    }

    /// Queues a full decision of `tenant` (the subject's tenant id) for publishing, with the
    /// trace context of the review. A plain allow is reduced to its summary (see
    /// [`admission_decision_event`]), in the task. Never blocks: when the queue is full the
    /// decision is dropped and counted.
    pub fn submit_decision(&self, tenant: &str, decision: Decision, trace: Option<TraceContext>) {
        self.enqueue(tenant, Payload::Decision(Box::new(decision), Bytes::new()), trace);
    }

    /// [`DecisionPublisher::submit_decision`] with the replay projection of what was
    /// reviewed (`AdmissionDecision.reviewed_pod_json`; empty for none), set on the event
    /// whatever the decision is trimmed to.
    pub fn submit_decision_with_projection(
        &self,
        tenant: &str,
        decision: Decision,
        trace: Option<TraceContext>,
        reviewed_pod_json: Bytes,
    ) {
        self.enqueue(tenant, Payload::Decision(Box::new(decision), reviewed_pod_json), trace);
    }

    /// Queues a ready event payload of `tenant`, published as it is. Never blocks.
    pub fn submit(&self, tenant: &str, decision: AdmissionDecision) {
        self.enqueue(tenant, Payload::Event(Box::new(decision)), None);
    }

    /// [`DecisionPublisher::submit`] with a trace context.
    pub fn submit_traced(&self, tenant: &str, decision: AdmissionDecision, trace: Option<TraceContext>) {
        self.enqueue(tenant, Payload::Event(Box::new(decision)), trace);
    }

    fn enqueue(&self, tenant: &str, payload: Payload, trace: Option<TraceContext>) {
        Counters::add(&self.counters.submitted, 1);
        if !self.shares.take(tenant) {
            Counters::add(&self.counters.over_share, 1);
            Counters::add(&self.counters.dropped, 1);
            return;
        }
        // The review's span: the event continues its trace (nothing while not exported).
        let span = if trace.is_none() {
            portcullis_kit::trace::capture()
        } else {
            None
        };
        let queued = Queued {
            tenant: tenant.to_owned(),
            payload,
            trace,
            span,
            submitted_at: SystemTime::now(),
        };
        // Full or stopped: the decision is dropped; the task reports drops now and then.
        if self.queue.try_send(queued).is_err() {
            self.shares.give_back(tenant);
            Counters::add(&self.counters.dropped, 1);
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> DecisionEventStats {
        self.counters.snapshot()
    }

    /// A handle on the counters that does not keep the queue open.
    pub fn counters(&self) -> DecisionEventCounters {
        DecisionEventCounters {
            counters: Arc::clone(&self.counters),
        }
    }
}

impl PublisherTask {
    /// The counters so far.
    pub fn stats(&self) -> DecisionEventStats {
        self.counters.snapshot()
    }

    /// Stops taking decisions (later submissions count as dropped), publishes what is queued
    /// for at most `within`, counts whatever is still unpublished then as dropped, and returns
    /// the final counters.
    pub async fn shutdown(self, within: Duration) -> DecisionEventStats {
        let PublisherTask {
            mut handle,
            stop,
            counters,
        } = self;
        let deadline = Instant::now() + within;
        // The task may already have ended (every publisher dropped); nothing to tell it then.
        let _ = stop.send(deadline);
        // The task honours the deadline itself; the margin only guards against a task stuck
        // in something that ignores it.
        let margin = Duration::from_secs(1);
        if tokio::time::timeout_at(deadline + margin, &mut handle).await.is_err() {
            handle.abort();
            let left = counters.snapshot().queued();
            Counters::add(&counters.dropped, left);
            tracing::warn!(
                dropped = left,
                "decision event publisher did not stop by its deadline; aborted"
            );
        }
        counters.snapshot()
    }
}

/// The event payload of a decision: the summary always; the full decision too unless it is a
/// plain allow ([`is_plain_allow`]).
pub fn admission_decision_event(decision: Decision) -> AdmissionDecision {
    if is_plain_allow(&decision) {
        // Move what the summary needs; the rest of the decision is dropped.
        let summary = AdmissionDecisionSummary {
            uid: decision.uid,
            cluster_id: decision.cluster_id,
            operation: decision.operation,
            subresource: decision.subresource,
            object: decision.object,
            owner: decision.owner,
            allowed: decision.allowed,
            basis: decision.basis,
            policy_id: decision.policy_id,
            policy_revision: decision.policy_revision,
            decided_at: decision.decided_at,
        };
        return AdmissionDecision {
            summary: Some(summary),
            decision: None,
            reviewed_pod_json: Bytes::new(),
        };
    }
    let summary = AdmissionDecisionSummary {
        uid: decision.uid.clone(),
        cluster_id: decision.cluster_id.clone(),
        operation: decision.operation.clone(),
        subresource: decision.subresource.clone(),
        object: decision.object.clone(),
        owner: decision.owner.clone(),
        allowed: decision.allowed,
        basis: decision.basis,
        policy_id: decision.policy_id.clone(),
        policy_revision: decision.policy_revision,
        decided_at: decision.decided_at,
    };
    AdmissionDecision {
        summary: Some(summary),
        decision: Some(decision),
        reviewed_pod_json: Bytes::new(),
    }
}

/// Whether a decision is a plain allow, published as its summary only: admitted, without any
/// violation (a log-only one included), signature rule not judged or signature verdict other
/// than verified (an error's reason is worth keeping), not made by failing open or closed,
/// nothing degraded.
pub fn is_plain_allow(decision: &Decision) -> bool {
    let degraded_basis =
        decision.basis == DecisionBasis::FailOpen as i32 || decision.basis == DecisionBasis::FailClosed as i32;
    decision.allowed
        && decision.violations.is_empty()
        && decision.not_judged.is_empty()
        && decision.degraded.is_empty()
        && !degraded_basis
        && decision
            .signatures
            .iter()
            .all(|v| v.verdict == Verdict::Verified as i32)
}

/// Builds the bus event of a queued decision: a fresh event id (kept across retries, since
/// the event is built once), the envelope, and the trace context as headers too.
fn build_event(queued: Queued, producer: &str) -> Event {
    let event_id = uuid::Uuid::new_v4().to_string();
    let decision = match queued.payload {
        Payload::Event(decision) => *decision,
        Payload::Decision(decision, reviewed_pod_json) => AdmissionDecision {
            reviewed_pod_json,
            ..admission_decision_event(*decision)
        },
    };
    // When the decision was made, not when it is published.
    let occurred_at = decision
        .summary
        .as_ref()
        .and_then(|s| s.decided_at)
        .unwrap_or_else(|| prost_types::Timestamp::from(queued.submitted_at));
    let trace = queued
        .trace
        .or_else(|| {
            let (traceparent, tracestate) = portcullis_kit::trace::w3c_of(queued.span.as_ref()?)?;
            Some(TraceContext {
                traceparent,
                tracestate,
            })
        })
        .filter(|t| !t.traceparent.is_empty());
    let mut headers = portcullis_bus::Headers::new();
    if let Some(trace) = &trace {
        headers.insert(TRACEPARENT.to_owned(), trace.traceparent.clone());
        if !trace.tracestate.is_empty() {
            headers.insert(TRACESTATE.to_owned(), trace.tracestate.clone());
        }
        // A malformed trace context must not cost the event: it still rides in the envelope.
        if validate_headers(&headers).is_err() {
            headers.clear();
        }
    }
    let envelope = EventEnvelope {
        event_id: event_id.clone(),
        tenant_id: queued.tenant.clone(),
        topic: TOPIC.to_owned(),
        occurred_at: Some(occurred_at),
        trace,
        producer: producer.to_owned(),
        payload: Some(event_envelope::Payload::AdmissionDecision(decision)),
    };
    Event {
        id: event_id,
        tenant: queued.tenant,
        topic: TOPIC.to_owned(),
        payload: Bytes::from(envelope.encode_to_vec()),
        headers,
    }
}

/// Rate-limited warnings: what went wrong since the last one, at most every [`WARN_EVERY`].
#[derive(Debug, Default)]
struct Warnings {
    last: Option<Instant>,
    dropped: u64,
    rejected: u64,
    failed_attempts: u64,
    last_transient: Option<String>,
    last_rejection: Option<String>,
    /// The last round had transient failures (the bus is down or slow).
    failing: bool,
}

impl Warnings {
    fn report(&mut self, counters: &Counters, force: bool) {
        let now = Instant::now();
        if !force && self.last.is_some_and(|last| now.duration_since(last) < WARN_EVERY) {
            return;
        }
        let stats = counters.snapshot();
        let dropped = stats.dropped.saturating_sub(self.dropped);
        let rejected = stats.rejected.saturating_sub(self.rejected);
        let failed = stats.failed_attempts.saturating_sub(self.failed_attempts);
        if dropped == 0 && rejected == 0 && failed == 0 {
            return;
        }
        tracing::warn!(
            dropped,
            rejected,
            failed_attempts = failed,
            queued = stats.queued(),
            last_error = self.last_transient.as_deref().unwrap_or(""),
            last_rejection = self.last_rejection.as_deref().unwrap_or(""),
            "admission decision events: some could not be published since the last report \
             (dropped: queue full or shut down; rejected: refused by the bus; failed attempts are retried)"
        );
        self.last = Some(now);
        self.dropped = stats.dropped;
        self.rejected = stats.rejected;
        self.failed_attempts = stats.failed_attempts;
        self.last_transient = None;
        self.last_rejection = None;
    }
}

/// The publishing task's state.
struct Worker {
    bus: Bus,
    config: DecisionEventsConfig,
    counters: Arc<Counters>,
    shares: Arc<Shares>,
    warnings: Warnings,
}

/// Waits for the shutdown deadline while the sender is alive; pending forever once it has
/// fired or its `PublisherTask` was dropped without a shutdown.
async fn stop_signal(stop: &mut Option<oneshot::Receiver<Instant>>) -> Instant {
    if let Some(receiver) = stop {
        let deadline = receiver.await.ok();
        *stop = None;
        if let Some(deadline) = deadline {
            return deadline;
        }
    }
    std::future::pending().await
}

impl Worker {
    async fn run(mut self, mut queue: mpsc::Receiver<Queued>, stop: oneshot::Receiver<Instant>) {
        let batch = self.config.batch.max(1);
        let retry_initial = self.config.retry_initial.max(Duration::from_millis(1));
        let retry_max = self.config.retry_max.max(retry_initial);
        let mut stop = Some(stop);
        // Events built and not yet stored: at most `batch` of them.
        let mut pending: Vec<Event> = Vec::with_capacity(batch);
        let mut backoff = retry_initial;
        let mut deadline: Option<Instant> = None;
        loop {
            if deadline.is_none() {
                if pending.is_empty() {
                    tokio::select! {
                        biased;
                        d = stop_signal(&mut stop) => {
                            deadline = Some(d);
                            queue.close();
                        }
                        item = queue.recv() => match item {
                            Some(queued) => {
                                pending.push(self.take(queued));
                                self.linger(&mut queue, &mut pending, batch).await;
                            }
                            // Every publisher is gone and the queue is empty.
                            None => break,
                        },
                    }
                } else {
                    // Retrying: wait, unless told to stop.
                    tokio::select! {
                        biased;
                        d = stop_signal(&mut stop) => {
                            deadline = Some(d);
                            queue.close();
                        }
                        () = tokio::time::sleep(backoff) => {}
                    }
                }
            } else if !pending.is_empty() {
                // Shutting down with failed events: a short pause, never past the deadline.
                if let Some(deadline) = deadline {
                    tokio::time::sleep_until(deadline.min(Instant::now() + backoff)).await;
                }
            }
            // Top the batch up with whatever is queued (retries go first).
            while pending.len() < batch {
                match queue.try_recv() {
                    Ok(queued) => pending.push(self.take(queued)),
                    Err(_) => break,
                }
            }
            if pending.is_empty() {
                if deadline.is_some() {
                    break;
                }
                continue;
            }
            let round = std::mem::take(&mut pending);
            let size = round.len();
            let settled = AtomicUsize::new(0);
            let mut publish = std::pin::pin!(publish_round(&self.bus, round, &self.counters, &settled));
            // A shutdown during the round sets the deadline the round must then finish by.
            let outcome = loop {
                match deadline {
                    Some(deadline) => break tokio::time::timeout_at(deadline, &mut publish).await.ok(),
                    None => tokio::select! {
                        biased;
                        result = &mut publish => break Some(result),
                        d = stop_signal(&mut stop) => {
                            deadline = Some(d);
                            queue.close();
                        }
                    },
                }
            };
            match outcome {
                Some(result) => {
                    if result.retry.is_empty() {
                        backoff = retry_initial;
                        if std::mem::take(&mut self.warnings.failing) {
                            tracing::info!("admission decision events: the bus takes events again");
                        }
                    } else {
                        backoff = backoff.saturating_mul(2).min(retry_max);
                        self.warnings.failing = true;
                    }
                    if let Some(err) = result.last_transient {
                        self.warnings.last_transient = Some(err);
                    }
                    if let Some(err) = result.last_rejection {
                        self.warnings.last_rejection = Some(err);
                    }
                    pending = result.retry;
                }
                None => {
                    // The deadline passed mid-round: what had not been stored is lost.
                    let unsettled = size.saturating_sub(settled.load(Ordering::Relaxed));
                    Counters::add(&self.counters.dropped, unsettled as u64);
                    break;
                }
            }
            self.warnings.report(&self.counters, false);
            if let Some(deadline) = deadline
                && Instant::now() >= deadline
            {
                break;
            }
        }
        // Shutting down (or every publisher gone): whatever is left is dropped and counted.
        queue.close();
        let mut left = pending.len() as u64;
        while let Ok(queued) = queue.try_recv() {
            self.shares.give_back(&queued.tenant);
            left += 1;
        }
        Counters::add(&self.counters.dropped, left);
        self.warnings.report(&self.counters, true);
    }

    /// A decision taken off the queue (its tenant's share freed), as its event.
    fn take(&self, queued: Queued) -> Event {
        self.shares.give_back(&queued.tenant);
        build_event(queued, &self.config.producer)
    }

    /// Waits up to `linger` for the batch to fill.
    async fn linger(&self, queue: &mut mpsc::Receiver<Queued>, pending: &mut Vec<Event>, batch: usize) {
        if self.config.linger.is_zero() {
            return;
        }
        let until = Instant::now() + self.config.linger;
        while pending.len() < batch {
            match tokio::time::timeout_at(until, queue.recv()).await {
                Ok(Some(queued)) => pending.push(self.take(queued)),
                Ok(None) | Err(_) => return,
            }
        }
    }
}

/// What one round of publishing left to do.
struct RoundResult {
    /// Events that failed with a transient error, to publish again with the same id.
    retry: Vec<Event>,
    last_transient: Option<String>,
    last_rejection: Option<String>,
}

/// Publishes `events` concurrently; counts every outcome as it happens (`settled` counts the
/// events whose fate is final, so that a round cut short by the shutdown deadline can count
/// the rest as dropped).
fn publish_round<'a>(
    bus: &'a Bus,
    events: Vec<Event>,
    counters: &'a Counters,
    settled: &'a AtomicUsize,
) -> impl Future<Output = RoundResult> + 'a {
    let publishes = events.into_iter().map(move |event| async move {
        let outcome = bus.publish(event.clone()).await;
        match outcome {
            Ok(_) => {
                Counters::add(&counters.published, 1);
                settled.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(err) if err.is_transient() => {
                Counters::add(&counters.failed_attempts, 1);
                Err((Some(event), err))
            }
            Err(err) => {
                Counters::add(&counters.rejected, 1);
                settled.fetch_add(1, Ordering::Relaxed);
                Err((None, err))
            }
        }
    });
    async move {
        let mut result = RoundResult {
            retry: Vec::new(),
            last_transient: None,
            last_rejection: None,
        };
        for outcome in futures::future::join_all(publishes).await {
            match outcome {
                Ok(()) => {}
                Err((Some(event), err)) => {
                    result.retry.push(event);
                    result.last_transient = Some(err.to_string());
                }
                Err((None, err)) => result.last_rejection = Some(err.to_string()),
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use portcullis_proto::admission::v1::SignatureVerdict;
    use portcullis_proto::common::v1::{Violation, WorkloadRef};

    use super::*;

    fn decision(allowed: bool) -> Decision {
        Decision {
            uid: "u1".into(),
            allowed,
            basis: DecisionBasis::Evaluated as i32,
            cluster_id: "c1".into(),
            policy_id: "p1".into(),
            policy_revision: 3,
            operation: "CREATE".into(),
            object: Some(WorkloadRef {
                kind: "Deployment".into(),
                namespace: "ns".into(),
                name: "web".into(),
                ..Default::default()
            }),
            decided_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 5,
            }),
            user: "alice".into(),
            ..Default::default()
        }
    }

    fn violation() -> Violation {
        Violation {
            rule_type: "containerSecurityContext".into(),
            message: "privileged".into(),
            ..Default::default()
        }
    }

    #[test]
    fn plain_allow_carries_only_the_summary() {
        let verified = Decision {
            signatures: vec![SignatureVerdict {
                image: "r.example/app:1".into(),
                verdict: Verdict::Verified as i32,
                ..SignatureVerdict::default()
            }],
            ..decision(true)
        };
        assert!(is_plain_allow(&verified), "verified signatures alone are plain");
        let d = decision(true);
        let event = admission_decision_event(d.clone());
        assert!(event.decision.is_none());
        let s = event.summary.unwrap();
        assert_eq!(s.uid, "u1");
        assert_eq!(s.cluster_id, "c1");
        assert_eq!(s.operation, "CREATE");
        assert_eq!(s.object, d.object);
        assert!(s.allowed);
        assert_eq!(s.basis, DecisionBasis::Evaluated as i32);
        assert_eq!((s.policy_id.as_str(), s.policy_revision), ("p1", 3));
        assert_eq!(s.decided_at, d.decided_at);
    }

    #[test]
    fn blocked_log_only_and_degraded_decisions_carry_everything() {
        let blocked = Decision {
            violations: vec![violation(), violation()],
            ..decision(false)
        };
        let log_only = Decision {
            violations: vec![violation()],
            warnings: vec!["privileged (log)".into()],
            ..decision(true)
        };
        let fail_open = Decision {
            basis: DecisionBasis::FailOpen as i32,
            degraded: vec!["policy: deadline exceeded".into()],
            ..decision(true)
        };
        let fail_closed = Decision {
            basis: DecisionBasis::FailClosed as i32,
            ..decision(false)
        };
        let verdict = |outcome: Verdict, reason: &str| SignatureVerdict {
            image: "r.example/app:1".into(),
            digest: "sha256:ab".into(),
            attestor: "release".into(),
            verdict: outcome as i32,
            reason: reason.into(),
        };
        // An `any` rule held by one attestor while another could not be checked: allowed,
        // and the error's reason is kept.
        let signature_error = Decision {
            signatures: vec![
                verdict(Verdict::Verified, "verified"),
                verdict(Verdict::Error, "registry: connection refused"),
            ],
            ..decision(true)
        };
        for d in [blocked, log_only, fail_open, fail_closed, signature_error] {
            assert!(!is_plain_allow(&d));
            let event = admission_decision_event(d.clone());
            assert_eq!(event.summary.as_ref().map(|s| s.uid.as_str()), Some("u1"));
            assert_eq!(event.summary.as_ref().map(|s| s.allowed), Some(d.allowed));
            assert_eq!(
                event.decision.as_ref(),
                Some(&d),
                "the full decision, violations included"
            );
        }
    }

    #[test]
    fn envelope_is_filled_like_the_store_does() {
        let trace = TraceContext {
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            tracestate: "k=v".into(),
        };
        let queued = Queued {
            tenant: "t1".into(),
            payload: Payload::Decision(Box::new(decision(true)), Bytes::new()),
            trace: Some(trace.clone()),
            span: None,
            submitted_at: SystemTime::now(),
        };
        let event = build_event(queued, "admission/1");
        assert_eq!(event.tenant, "t1");
        assert_eq!(event.topic, TOPIC);
        assert_eq!(event.subject(), "pc.t1.evt.admission.decision");
        assert!(uuid::Uuid::parse_str(&event.id).is_ok());
        assert_eq!(event.traceparent(), Some(trace.traceparent.as_str()));
        assert_eq!(event.headers.get(TRACESTATE).map(String::as_str), Some("k=v"));
        event.validate().unwrap();
        let envelope = EventEnvelope::decode(event.payload).unwrap();
        assert_eq!(envelope.event_id, event.id);
        assert_eq!(envelope.tenant_id, "t1");
        assert_eq!(envelope.topic, TOPIC);
        assert_eq!(envelope.producer, "admission/1");
        assert_eq!(envelope.trace, Some(trace));
        // The decision's own time, not the publishing time.
        assert_eq!(envelope.occurred_at, decision(true).decided_at);
        match envelope.payload {
            Some(event_envelope::Payload::AdmissionDecision(d)) => {
                assert_eq!(d, admission_decision_event(decision(true)));
            }
            other => panic!("payload {other:?}"),
        }
    }

    #[test]
    fn malformed_trace_context_is_left_out_of_the_headers() {
        let queued = Queued {
            tenant: "t1".into(),
            payload: Payload::Event(Box::default()),
            trace: Some(TraceContext {
                traceparent: "bad\r\nvalue".into(),
                tracestate: String::new(),
            }),
            span: None,
            submitted_at: SystemTime::UNIX_EPOCH + Duration::from_secs(42),
        };
        let event = build_event(queued, "admission");
        assert!(event.headers.is_empty());
        event.validate().unwrap();
        let envelope = EventEnvelope::decode(event.payload).unwrap();
        // No decision time: the submission time stands in.
        assert_eq!(
            envelope.occurred_at,
            Some(prost_types::Timestamp { seconds: 42, nanos: 0 })
        );
    }

    #[test]
    fn config_validation() {
        assert!(DecisionEventsConfig::default().validate().is_ok());
        let bad = [
            (
                DecisionEventsConfig {
                    capacity: 0,
                    ..Default::default()
                },
                "capacity",
            ),
            (
                DecisionEventsConfig {
                    batch: 0,
                    ..Default::default()
                },
                "batch",
            ),
            (
                DecisionEventsConfig {
                    retry_initial: Duration::ZERO,
                    ..Default::default()
                },
                "retry_initial",
            ),
            (
                DecisionEventsConfig {
                    retry_max: Duration::from_millis(1),
                    ..Default::default()
                },
                "retry_max",
            ),
            (
                DecisionEventsConfig {
                    producer: String::new(),
                    ..Default::default()
                },
                "producer",
            ),
        ];
        for (config, field) in bad {
            assert_eq!(config.validate().unwrap_err().field, field);
        }
    }

    #[tokio::test]
    async fn the_task_ends_when_every_publisher_is_gone() {
        let bus = Bus::memory(portcullis_bus::BusConfig::embedded()).unwrap();
        let (publisher, task) = DecisionPublisher::start(bus, DecisionEventsConfig::default());
        let counters = publisher.counters();
        let clone = publisher.clone();
        for i in 0..3 {
            clone.submit_decision("t1", decision(i % 2 == 0), None);
        }
        drop((publisher, clone));
        // The counters handle does not keep the queue open: the task flushes and ends.
        tokio::time::timeout(Duration::from_secs(30), task.handle)
            .await
            .unwrap()
            .unwrap();
        let stats = counters.stats();
        assert_eq!((stats.submitted, stats.published, stats.dropped), (3, 3, 0));
    }

    #[test]
    fn disabled_publisher_counts_drops() {
        let p = DecisionPublisher::disabled();
        p.submit("t1", AdmissionDecision::default());
        p.submit_decision("t1", decision(true), None);
        let stats = p.stats();
        assert_eq!((stats.submitted, stats.dropped, stats.queued()), (2, 2, 0));
    }
}
