//! The write path: a bounded queue of writes (an ingest message's events, a bus delivery's
//! event and, for an admission decision, its recorded admission), a batcher that takes them
//! in batches (by size, or what came within the flush interval from the batch's first
//! write), and up to [`BatchOptions::writers`] batches written at once (each on its own
//! database connection): a batch's events are stored in one call and its recorded
//! admissions in another (both idempotent on event id), then every event goes through the
//! correlator and the alert changes are stored, and only then is each write answered: a bus
//! delivery is acked, and an ingest message answered, after its events and admissions are
//! stored.
//!
//! Storing is what costs (the database's index upkeep), so that is what runs concurrently;
//! correlation takes turns, one batch at a time: the correlator's state moves on only with
//! what is stored, each batch being a correlator transaction, committed once its alert
//! changes are stored and rolled back when they could not be (see [`crate::correlate`],
//! "Batches and failed saves"), and a transaction is never open for two batches. Batches
//! may reach the correlator out of their order; it orders each story by event time within
//! its lateness bound, and skips an event id it has seen, so the outcome is the same.
//!
//! Latency of a write under a steady load below what the writers sustain: at most the flush
//! interval waiting for its batch, plus one batch's store and correlation; beyond that rate,
//! writes queue (bounded by [`BatchOptions::queue`]; callers then wait).
//!
//! After a restart the open alerts are re-attached to the correlator before the first
//! write ([`Pipeline::start`]), so that a story completed across the restart joins its
//! alert instead of opening another.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::correlate::{AlertChange, Correlator};
use crate::error::TelemetryError;
use crate::event::SecurityEvent;
use crate::store::{RecordedAdmission, TelemetryStore};

/// Counters of the write path.
#[derive(Debug, Default)]
pub struct PipelineCounters {
    stored: AtomicU64,
    duplicates: AtomicU64,
    batches: AtomicU64,
    failed_batches: AtomicU64,
    too_late: AtomicU64,
    alerts_opened: AtomicU64,
    admissions_recorded: AtomicU64,
    writing: AtomicU64,
}

impl PipelineCounters {
    /// Events newly stored.
    pub fn stored(&self) -> u64 {
        self.stored.load(Ordering::Relaxed)
    }

    /// Events written again that were already stored (skipped).
    pub fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }

    /// Batches written.
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Batches the store refused (their writers were told; bus deliveries come back).
    pub fn failed_batches(&self) -> u64 {
        self.failed_batches.load(Ordering::Relaxed)
    }

    /// Events stored but too late for the correlator (behind its lateness bound).
    pub fn too_late(&self) -> u64 {
        self.too_late.load(Ordering::Relaxed)
    }

    /// Alerts opened.
    pub fn alerts_opened(&self) -> u64 {
        self.alerts_opened.load(Ordering::Relaxed)
    }

    /// Admissions newly recorded for replay.
    pub fn admissions_recorded(&self) -> u64 {
        self.admissions_recorded.load(Ordering::Relaxed)
    }

    /// Batches being written now: stored, then correlated and their alerts saved. An event
    /// is searchable once its batch is stored; when this reads 0 after that, it is
    /// correlated too.
    pub fn writing(&self) -> u64 {
        self.writing.load(Ordering::Acquire)
    }
}

/// One write: its events and who waits for the answer.
struct Write {
    events: Vec<SecurityEvent>,
    admissions: Vec<RecordedAdmission>,
    done: oneshot::Sender<Result<(), TelemetryError>>,
}

/// The write queue (cheap to clone).
#[derive(Clone)]
pub struct Pipeline {
    queue: mpsc::Sender<Write>,
    correlator: Arc<Mutex<Correlator>>,
    counters: Arc<PipelineCounters>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").finish_non_exhaustive()
    }
}

/// How the writer batches.
#[derive(Debug, Clone, Copy)]
pub struct BatchOptions {
    /// Events per batch, at most (a single write larger than this is one batch).
    pub batch_size: usize,
    /// How long a batch waits for more writes.
    pub flush_interval: Duration,
    /// Writes queued, at most (callers wait beyond it).
    pub queue: usize,
    /// Batches stored at once, at most (each on its own database connection; 1 on a store
    /// that takes one write at a time, see [`TelemetryStore::write_concurrency`]).
    pub writers: usize,
}

fn lock(c: &Mutex<Correlator>) -> std::sync::MutexGuard<'_, Correlator> {
    // A poisoned lock only means a panic elsewhere mid-ingest; the state stays usable.
    c.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Pipeline {
    /// Re-attaches the stored open alerts to `correlator`, then returns the queue and the
    /// writer task, which runs until `stop` (then it writes what is queued and ends).
    pub async fn start(
        store: Arc<dyn TelemetryStore>,
        mut correlator: Correlator,
        options: BatchOptions,
        stop: CancellationToken,
    ) -> Result<(Pipeline, impl Future<Output = ()> + Send + 'static), TelemetryError> {
        let open = store.open_alerts().await?;
        for alert in &open {
            if !correlator.adopt_alert(&alert.tenant_id, &alert.key, &alert.id, alert.last_event_at) {
                tracing::warn!(tenant = %alert.tenant_id, alert = %alert.id, rule = %alert.rule, "an open alert names no rule of this correlator; its story starts again");
            }
        }
        tracing::info!(alerts = open.len(), "open alerts re-attached to the correlator");
        let (queue, mut receiver) = mpsc::channel::<Write>(options.queue.max(1));
        let correlator = Arc::new(Mutex::new(correlator));
        let counters = Arc::new(PipelineCounters::default());
        let pipeline = Pipeline {
            queue,
            correlator: correlator.clone(),
            counters: counters.clone(),
        };
        let batch_size = options.batch_size.max(1);
        let writers = options.writers.clamp(1, store.write_concurrency().max(1));
        let slots = Arc::new(Semaphore::new(writers));
        let shared = Arc::new(Writer {
            store,
            correlator,
            counters,
            turn: tokio::sync::Mutex::new(()),
        });
        let task = async move {
            let mut in_flight = tokio::task::JoinSet::new();
            loop {
                // A free writer first: meanwhile writes queue, and the next batch fills at once.
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    break;
                };
                let first = tokio::select! {
                    w = receiver.recv() => w,
                    () = stop.cancelled() => {
                        receiver.close();
                        receiver.recv().await
                    }
                };
                let Some(first) = first else { break };
                let mut size = first.events.len() + first.admissions.len();
                let mut writes = vec![first];
                let deadline = tokio::time::Instant::now() + options.flush_interval;
                while size < batch_size {
                    match tokio::time::timeout_at(deadline, receiver.recv()).await {
                        Ok(Some(w)) => {
                            size += w.events.len() + w.admissions.len();
                            writes.push(w);
                        }
                        Ok(None) | Err(_) => break,
                    }
                }
                let shared = shared.clone();
                in_flight.spawn(async move {
                    shared.write(writes, size).await;
                    drop(slot);
                });
                while in_flight.try_join_next().is_some() {}
            }
            // The batches being written finish (the stop drains; nothing is left unanswered).
            while in_flight.join_next().await.is_some() {}
        };
        Ok((pipeline, task))
    }

    /// Writes `events` (stored, then correlated) and waits until they are.
    pub async fn write(&self, events: Vec<SecurityEvent>) -> Result<(), TelemetryError> {
        self.write_with_admissions(events, Vec::new()).await
    }

    /// Writes `events` and the recorded `admissions` (in the same batch) and waits until
    /// both are stored.
    pub async fn write_with_admissions(
        &self,
        events: Vec<SecurityEvent>,
        admissions: Vec<RecordedAdmission>,
    ) -> Result<(), TelemetryError> {
        if events.is_empty() && admissions.is_empty() {
            return Ok(());
        }
        let (done, answer) = oneshot::channel();
        self.queue
            .send(Write {
                events,
                admissions,
                done,
            })
            .await
            .map_err(|_| TelemetryError::Unavailable("the telemetry writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| TelemetryError::Unavailable("the telemetry writer has stopped".into()))?
    }

    /// Forgets a closed alert in the correlator: the next story of its rule and entity opens
    /// a new one.
    pub fn close_alert(&self, tenant: &str, alert_id: &str) {
        lock(&self.correlator).close_alert(tenant, alert_id);
    }

    /// The counters.
    pub fn counters(&self) -> &PipelineCounters {
        &self.counters
    }
}

/// What the batches being written share.
struct Writer {
    store: Arc<dyn TelemetryStore>,
    correlator: Arc<Mutex<Correlator>>,
    counters: Arc<PipelineCounters>,
    /// Held by the batch being correlated, from its correlator transaction's begin to its
    /// commit or rollback.
    turn: tokio::sync::Mutex<()>,
}

impl Writer {
    /// Writes one batch and answers its writers.
    async fn write(&self, writes: Vec<Write>, size: usize) {
        self.counters.writing.fetch_add(1, Ordering::AcqRel);
        let mut events = Vec::with_capacity(size);
        let mut admissions = Vec::new();
        let mut answers = Vec::with_capacity(writes.len());
        for w in writes {
            events.extend(w.events);
            admissions.extend(w.admissions);
            answers.push(w.done);
        }
        let result = write_batch(self, &events, &admissions).await;
        if result.is_err() {
            self.counters.failed_batches.fetch_add(1, Ordering::Relaxed);
        }
        self.counters.writing.fetch_sub(1, Ordering::AcqRel);
        for answer in answers {
            // A writer that went away (a cancelled call) needs no answer.
            let _ = answer.send(result.clone());
        }
    }
}

async fn write_batch(
    writer: &Writer,
    events: &[SecurityEvent],
    admissions: &[RecordedAdmission],
) -> Result<(), TelemetryError> {
    let (store, correlator, counters) = (writer.store.as_ref(), writer.correlator.as_ref(), &writer.counters);
    // Admissions before their events: a decision found by search is then always one replay
    // reads too. Both writes are idempotent, so a batch failed between them and written
    // again (the bus redelivers) stores each once.
    if !admissions.is_empty() {
        let recorded = store.record_admissions(admissions).await?;
        counters.admissions_recorded.fetch_add(recorded, Ordering::Relaxed);
    }
    let new = store.insert_events(events).await?;
    counters.stored.fetch_add(new, Ordering::Relaxed);
    counters
        .duplicates
        .fetch_add((events.len() as u64).saturating_sub(new), Ordering::Relaxed);
    counters.batches.fetch_add(1, Ordering::Relaxed);
    // Correlated in event-time order within the batch (sequences are ordered by event time).
    let mut order: Vec<&SecurityEvent> = events.iter().collect();
    order.sort_by(|a, b| a.occurred_at.cmp(&b.occurred_at).then_with(|| a.id.cmp(&b.id)));
    let mut changes: Vec<AlertChange> = Vec::new();
    let _turn = writer.turn.lock().await;
    {
        let mut c = lock(correlator);
        // A transaction: undone when the changes cannot be stored (see below).
        c.begin();
        for e in order {
            match c.ingest(e) {
                Ok(mut more) => changes.append(&mut more),
                Err(late) => {
                    counters.too_late.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(event = %late.event_id, "an event too late for correlation (stored)");
                }
            }
        }
    }
    let opened = changes.iter().filter(|c| matches!(c, AlertChange::Opened(_))).count() as u64;
    let saved = if changes.is_empty() {
        Ok(())
    } else {
        store.record_alert_changes(&changes, OffsetDateTime::now_utc()).await
    };
    // The correlator's state follows what is stored: on a failed save it goes back to
    // before the batch, and the batch's writers are told to send again (a bus delivery comes
    // back, a sensor resends), which completes the same stories with the same alert ids.
    match saved {
        Ok(()) => {
            lock(correlator).commit();
            counters.alerts_opened.fetch_add(opened, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => {
            lock(correlator).rollback();
            Err(e.into())
        }
    }
}
