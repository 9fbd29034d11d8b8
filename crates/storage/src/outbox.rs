//! The outbox relay: publishes the events that changes wrote into the outbox table, in
//! order, deleting each row only after the sink acknowledged it. Rows survive restarts; a
//! failing sink is retried with exponential backoff.
//!
//! An event the sink refuses for good ([`EventSink::is_permanent`]: too large for the bus,
//! an invalid subject) would stop every later event of every tenant if it were retried: it
//! moves to the dead letters instead ([`DeadLetter`], [`Store::list_dead_letters`]), in the
//! same transaction that deletes it from the outbox, and the relay goes on.
//!
//! Several relays may run against one PostgreSQL database: each batch is claimed with
//! `FOR UPDATE SKIP LOCKED`, so no row is published by two relays at once (events of
//! different batches may then be published out of order; consumers order by revision or
//! generation, and deduplicate by event id). On SQLite the relays of one process take turns.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use portcullis_proto::events::v1::EventEnvelope;
use prost::Message;
use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::sea_query::{LockBehavior, LockType};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, TransactionTrait,
};
use time::OffsetDateTime;

use crate::clock::from_micros;
use crate::entity::{dead_letter, outbox};
use crate::error::{StoreError, StoreResult};
use crate::model::{Page, PageRequest};
use crate::store::{Backend, Store, decode_int_token, finish_page, page_limit};

/// One event waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    /// Position in the outbox (increasing).
    pub seq: i64,
    /// The event id (a UUID): the `Nats-Msg-Id`.
    pub event_id: String,
    /// The tenant.
    pub tenant_id: String,
    /// The topic, e.g. `policy.changed`.
    pub topic: String,
    /// The encoded [`EventEnvelope`].
    pub payload: Vec<u8>,
    /// When the change was committed.
    pub created_at: OffsetDateTime,
}

impl OutboxEvent {
    /// The subject to publish on: `pc.<tenant>.evt.<topic>`.
    pub fn subject(&self) -> String {
        crate::events::subject(&self.tenant_id, &self.topic)
    }

    /// The decoded envelope.
    pub fn envelope(&self) -> Result<EventEnvelope, prost::DecodeError> {
        EventEnvelope::decode(self.payload.as_slice())
    }
}

fn event_from(m: outbox::Model) -> OutboxEvent {
    OutboxEvent {
        seq: m.seq,
        event_id: m.event_id,
        tenant_id: m.tenant_id,
        topic: m.topic,
        payload: m.payload,
        created_at: from_micros(m.created_at),
    }
}

/// Where the relay publishes: the bus, or anything that acknowledges.
pub trait EventSink: Send + Sync {
    /// Why a publish failed.
    type Error: std::fmt::Display + Send;

    /// Publishes one event; `Ok` means the bus has it (for JetStream: the publish ack).
    fn publish(&self, event: &OutboxEvent) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Whether `error` means this event will never be taken (too large, invalid subject), so
    /// that retrying it cannot help: the relay then moves it to the dead letters. By default
    /// every failure is retried.
    fn is_permanent(&self, _error: &Self::Error) -> bool {
        false
    }
}

impl<S: EventSink + ?Sized> EventSink for std::sync::Arc<S> {
    type Error = S::Error;

    fn publish(&self, event: &OutboxEvent) -> impl Future<Output = Result<(), Self::Error>> + Send {
        (**self).publish(event)
    }

    fn is_permanent(&self, error: &Self::Error) -> bool {
        (**self).is_permanent(error)
    }
}

/// An event the bus refused for good, kept for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Position in the dead letters (increasing).
    pub id: i64,
    /// The event as it stood in the outbox.
    pub event: OutboxEvent,
    /// What the sink said.
    pub reason: String,
    /// When the relay gave up on it.
    pub dead_at: OffsetDateTime,
}

fn dead_letter_from(m: dead_letter::Model) -> DeadLetter {
    DeadLetter {
        id: m.id,
        event: OutboxEvent {
            seq: m.outbox_seq,
            event_id: m.event_id,
            tenant_id: m.tenant_id,
            topic: m.topic,
            payload: m.payload,
            created_at: from_micros(m.created_at),
        },
        reason: m.reason,
        dead_at: from_micros(m.dead_at),
    }
}

/// What one batch did: the rows acknowledged, the rows refused for good (with why), the
/// first failure worth retrying (the batch stops there).
#[derive(Default)]
struct Outcome {
    done: Vec<i64>,
    dead: Vec<(OutboxEvent, String)>,
    error: Option<RelayError>,
}

/// How the relay paces itself.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayConfig {
    /// Rows claimed per batch.
    pub batch_size: u64,
    /// How often the relay looks for rows without being woken (commits of other processes
    /// do not wake it).
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// The first wait after a failure.
    #[serde(with = "humantime_serde")]
    pub min_backoff: Duration,
    /// The longest wait after failures.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// How long one publish may take before it counts as failed.
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
}

impl Default for RelayConfig {
    fn default() -> RelayConfig {
        RelayConfig {
            batch_size: 100,
            poll_interval: Duration::from_secs(1),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            publish_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a relay pass stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The sink refused or timed out; the event stays in the outbox.
    #[error("publishing event {event_id} ({subject}): {message}")]
    Publish {
        /// The event's id.
        event_id: String,
        /// Its subject.
        subject: String,
        /// What the sink said.
        message: String,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sea_orm::DbErr> for RelayError {
    fn from(e: sea_orm::DbErr) -> RelayError {
        RelayError::Store(StoreError::Database(e))
    }
}

/// Publishes outbox rows through a sink.
pub struct OutboxRelay<S> {
    store: Store,
    sink: S,
    config: RelayConfig,
    dead_lettered: AtomicU64,
}

impl<S: EventSink> OutboxRelay<S> {
    /// A relay with the default pacing.
    pub fn new(store: Store, sink: S) -> OutboxRelay<S> {
        OutboxRelay::with_config(store, sink, RelayConfig::default())
    }

    /// A relay with the given pacing.
    pub fn with_config(store: Store, sink: S, config: RelayConfig) -> OutboxRelay<S> {
        OutboxRelay {
            store,
            sink,
            config,
            dead_lettered: AtomicU64::new(0),
        }
    }

    /// How many events this relay moved to the dead letters since it was made (a metric).
    pub fn dead_lettered(&self) -> u64 {
        self.dead_lettered.load(Ordering::Relaxed)
    }

    /// The sink.
    pub fn sink(&self) -> &S {
        &self.sink
    }

    /// Wakes the relay (the store does this itself after each commit that wrote events).
    pub fn notify(&self) {
        self.store.notify_outbox();
    }

    /// Publishes waiting events in order until none is left or one fails; returns how many
    /// were published. Events refused for good become dead letters on the way.
    pub async fn publish_pending(&self) -> Result<usize, RelayError> {
        let mut total = 0;
        loop {
            let (published, error, claimed) = match self.store.inner.backend {
                Backend::Postgres => self.batch_postgres().await?,
                Backend::Sqlite => self.batch_sqlite().await?,
            };
            total += published;
            if let Some(e) = error {
                return Err(e);
            }
            if claimed < self.config.batch_size {
                return Ok(total);
            }
        }
    }

    /// Publishes `rows` in order, setting aside those refused for good, up to the first
    /// failure worth retrying.
    async fn publish_rows(&self, rows: Vec<outbox::Model>) -> Outcome {
        let mut outcome = Outcome::default();
        for row in rows {
            let event = event_from(row);
            let published = tokio::time::timeout(self.config.publish_timeout, self.sink.publish(&event)).await;
            let message = match published {
                Ok(Ok(())) => {
                    outcome.done.push(event.seq);
                    continue;
                }
                Ok(Err(e)) if self.sink.is_permanent(&e) => {
                    tracing::error!(
                        event_id = %event.event_id,
                        subject = %event.subject(),
                        bytes = event.payload.len(),
                        error = %e,
                        "outbox relay: the bus refuses this event for good; moved to the dead letters"
                    );
                    outcome.dead.push((event, e.to_string()));
                    continue;
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no acknowledgement within {:?}", self.config.publish_timeout),
            };
            outcome.error = Some(RelayError::Publish {
                subject: event.subject(),
                event_id: event.event_id,
                message,
            });
            break;
        }
        outcome
    }

    async fn batch_postgres(&self) -> Result<(usize, Option<RelayError>, u64), RelayError> {
        let tx = self.store.inner.db.begin().await?;
        let rows = outbox::Entity::find()
            .order_by_asc(outbox::Column::Seq)
            .limit(self.config.batch_size)
            .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
            .all(&tx)
            .await?;
        let claimed = rows.len() as u64;
        let outcome = self.publish_rows(rows).await;
        self.settle(&tx, &outcome).await?;
        tx.commit().await?;
        self.count_dead(&outcome);
        Ok((outcome.done.len(), outcome.error, claimed))
    }

    async fn batch_sqlite(&self) -> Result<(usize, Option<RelayError>, u64), RelayError> {
        // No transaction while publishing: it would hold SQLite's one write lock.
        let _turn = self.store.inner.relay_lock.lock().await;
        let db: &DatabaseConnection = &self.store.inner.db;
        let rows = outbox::Entity::find()
            .order_by_asc(outbox::Column::Seq)
            .limit(self.config.batch_size)
            .all(db)
            .await?;
        let claimed = rows.len() as u64;
        let outcome = self.publish_rows(rows).await;
        // Short, after publishing: a dead letter is written and its row deleted together.
        let tx = db.begin().await?;
        self.settle(&tx, &outcome).await?;
        tx.commit().await?;
        self.count_dead(&outcome);
        Ok((outcome.done.len(), outcome.error, claimed))
    }

    async fn settle<C: ConnectionTrait>(&self, conn: &C, outcome: &Outcome) -> Result<(), DbErr> {
        settle_rows(conn, outcome, crate::clock::to_micros(self.store.now())).await
    }

    fn count_dead(&self, outcome: &Outcome) {
        self.dead_lettered
            .fetch_add(outcome.dead.len() as u64, Ordering::Relaxed);
    }

    /// Runs until `shutdown` completes: publishes whenever woken or every poll interval, and
    /// after a failure waits with exponential backoff before retrying.
    pub async fn run<F: Future<Output = ()>>(&self, shutdown: F) {
        tokio::pin!(shutdown);
        let signal = self.store.inner.outbox_signal.clone();
        let mut backoff = self.config.min_backoff;
        loop {
            match self.publish_pending().await {
                Ok(_) => {
                    backoff = self.config.min_backoff;
                    tokio::select! {
                        () = &mut shutdown => return,
                        () = signal.notified() => {}
                        () = tokio::time::sleep(self.config.poll_interval) => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "outbox relay: publish failed");
                    tokio::select! {
                        () = &mut shutdown => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(self.config.max_backoff);
                }
            }
        }
    }
}

impl Store {
    /// The events waiting in the outbox, oldest first (for tests and operators).
    pub async fn pending_events(&self, limit: u64) -> StoreResult<Vec<OutboxEvent>> {
        Ok(outbox::Entity::find()
            .order_by_asc(outbox::Column::Seq)
            .limit(limit)
            .all(&self.inner.db)
            .await?
            .into_iter()
            .map(event_from)
            .collect())
    }

    /// How many events wait in the outbox.
    pub async fn pending_event_count(&self) -> StoreResult<u64> {
        Ok(outbox::Entity::find().count(&self.inner.db).await?)
    }

    /// The dead letters (events the bus refused for good), oldest first, a page at a time
    /// (for operators).
    pub async fn list_dead_letters(&self, page: &PageRequest) -> StoreResult<Page<DeadLetter>> {
        let mut select = dead_letter::Entity::find();
        if let Some(after) = decode_int_token(page)? {
            select = select.filter(dead_letter::Column::Id.gt(after));
        }
        let rows = select
            .order_by_asc(dead_letter::Column::Id)
            .limit(page_limit(page))
            .all(&self.inner.db)
            .await?;
        let letters = rows.into_iter().map(dead_letter_from).collect();
        let (items, next_token) = finish_page(letters, page, |d: &DeadLetter| d.id.to_string());
        Ok(Page { items, next_token })
    }
}

/// Writes the batch's dead letters (dead at `now_us`) and deletes from the outbox the rows
/// the bus has stored or refused for good, inside the caller's transaction or on the
/// connection.
async fn settle_rows<C: ConnectionTrait>(conn: &C, outcome: &Outcome, now_us: i64) -> Result<(), DbErr> {
    if !outcome.dead.is_empty() {
        let letters = outcome.dead.iter().map(|(event, reason)| dead_letter::ActiveModel {
            id: NotSet,
            outbox_seq: Set(event.seq),
            event_id: Set(event.event_id.clone()),
            tenant_id: Set(event.tenant_id.clone()),
            topic: Set(event.topic.clone()),
            payload: Set(event.payload.clone()),
            created_at: Set(crate::clock::to_micros(event.created_at)),
            reason: Set(reason.clone()),
            dead_at: Set(now_us),
        });
        dead_letter::Entity::insert_many(letters).exec(conn).await?;
    }
    let settled = outcome
        .done
        .iter()
        .copied()
        .chain(outcome.dead.iter().map(|(event, _)| event.seq));
    let settled: Vec<i64> = settled.collect();
    if !settled.is_empty() {
        outbox::Entity::delete_many()
            .filter(outbox::Column::Seq.is_in(settled))
            .exec(conn)
            .await?;
    }
    Ok(())
}
