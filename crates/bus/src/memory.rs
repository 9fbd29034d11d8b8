//! The in-process bus for embedded mode.
//!
//! Same subjects and semantics as the NATS bus: an event log with stream sequences, limits
//! (max events, bytes, age; oldest dropped first) and a duplicate window on the event id;
//! durable work cursors with pending deliveries, explicit ack, redelivery after the ack wait
//! and `nak`; broadcast fan-out from a sequence; request/reply with queue groups; core
//! publish/subscribe.
//!
//! Nothing survives the process: the log, the durables' positions and un-acknowledged
//! deliveries live in memory only. Embedded mode gets its durability from the store's
//! outbox (events are re-published after a restart) and from draining on shutdown.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::event::{
    Event, Headers, Published, ReceivedEvent, StartFrom, TopicFilter, subject_matches, validate_core_subject,
    validate_durable, validate_headers, validate_queue_group,
};
use crate::id_window::IdWindow;
use crate::subscription::{
    Acker, BroadcastSubscription, CoreMessage, CoreSubscription, Delivery, IncomingRequest, RequestStream, Responder,
    Subscription, WorkSubscription,
};
use crate::{BusConfig, BusError, WorkLimits};

/// The in-process bus. Cloning gives another handle to the same bus.
#[derive(Clone)]
pub struct MemoryBus {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MemoryBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBus")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

struct Inner {
    config: BusConfig,
    state: Mutex<State>,
    /// Woken on every publish, ack and nak, so waiting subscribers look again.
    notify: Notify,
}

struct Stored {
    event: Event,
    sequence: u64,
    at: Instant,
    size: u64,
}

struct State {
    log: VecDeque<Arc<Stored>>,
    /// Sequence of the front of `log`; `last_seq + 1` when the log is empty.
    first_seq: u64,
    last_seq: u64,
    bytes: u64,
    ids: IdWindow,
    durables: HashMap<String, Durable>,
    servers: Vec<ServeEntry>,
    core_subs: Vec<CoreEntry>,
    round_robin: usize,
}

struct Durable {
    filter: TopicFilter,
    /// Deliveries outstanding at most (the subscription's limit, else the bus's).
    max_ack_pending: usize,
    /// Next sequence never delivered to this durable.
    next_seq: u64,
    /// Delivered, not yet acknowledged.
    pending: BTreeMap<u64, Pending>,
    /// Nak'ed or expired: delivered again before anything new, with their attempt counts.
    redeliver: VecDeque<(u64, u64)>,
}

struct Pending {
    deadline: Instant,
    attempt: u64,
}

struct ServeEntry {
    pattern: String,
    group: String,
    tx: mpsc::Sender<IncomingRequest>,
}

struct CoreEntry {
    pattern: String,
    tx: mpsc::Sender<CoreMessage>,
}

/// How many of the newest event ids the duplicate window keeps at least (and twice that at
/// most): as many as the log holds (`stream.max_events`). Unlike NATS, whose window is time
/// alone, this bus lives in the service's memory: at 25,000 events/s a 2-minute window
/// would be 3 million ids. An id published again after that many newer events may be
/// stored again (consumers are at-least-once anyway).
fn ids_per_generation(config: &BusConfig) -> usize {
    config
        .stream
        .max_events
        .map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX))
}

fn lookup(log: &VecDeque<Arc<Stored>>, first_seq: u64, seq: u64) -> Option<&Arc<Stored>> {
    let index = usize::try_from(seq.checked_sub(first_seq)?).ok()?;
    log.get(index)
}

impl State {
    fn pop_front(&mut self) {
        if let Some(stored) = self.log.pop_front() {
            self.bytes = self.bytes.saturating_sub(stored.size);
            self.first_seq = stored.sequence.saturating_add(1);
        }
    }

    /// Drops events older than `max_age`.
    fn expire(&mut self, now: Instant, config: &BusConfig) {
        while self.log.front().is_some_and(|s| s.at + config.stream.max_age <= now) {
            self.pop_front();
        }
    }

    /// Applies every limit, oldest first (limits retention, discard old).
    fn enforce_limits(&mut self, now: Instant, config: &BusConfig) {
        self.expire(now, config);
        let too_many = |s: &Self| config.stream.max_events.is_some_and(|m| s.log.len() as u64 > m);
        while !self.log.is_empty() && (too_many(self) || self.bytes > config.stream.max_bytes) {
            self.pop_front();
        }
    }
}

enum Claim {
    Got(Box<Delivery>),
    /// Nothing to deliver now; look again at this instant (the earliest ack deadline) or on a notification.
    Wait(Option<Instant>),
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-updated in a way that
        // matters more than losing the bus, so keep going with it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Hands the next delivery of durable `name` to a subscriber: expired or nak'ed ones first,
/// then new matching events while fewer than `max_ack_pending` are outstanding.
fn claim(inner: &Arc<Inner>, name: &str) -> Claim {
    let config = &inner.config;
    let now = Instant::now();
    let mut guard = inner.lock();
    guard.expire(now, config);
    let state = &mut *guard;
    let Some(durable) = state.durables.get_mut(name) else {
        return Claim::Wait(None);
    };
    let expired: Vec<(u64, u64)> = durable
        .pending
        .iter()
        .filter(|(_, p)| p.deadline <= now)
        .map(|(seq, p)| (*seq, p.attempt))
        .collect();
    for (seq, attempt) in expired {
        durable.pending.remove(&seq);
        durable.redeliver.push_back((seq, attempt));
    }
    let deliver = |durable: &mut Durable, stored: &Stored, attempt: u64| {
        durable.pending.insert(
            stored.sequence,
            Pending {
                deadline: now + config.ack_wait,
                attempt,
            },
        );
        Claim::Got(Box::new(Delivery {
            event: stored.event.clone(),
            sequence: stored.sequence,
            attempt,
            acker: Acker::Memory(MemoryAcker {
                inner: Arc::clone(inner),
                durable: name.to_owned(),
                sequence: stored.sequence,
            }),
        }))
    };
    while let Some((seq, attempt)) = durable.redeliver.pop_front() {
        // Events dropped by the limits, or no longer in the filter, are not redelivered.
        if let Some(stored) = lookup(&state.log, state.first_seq, seq)
            && durable.filter.matches(&stored.event.tenant, &stored.event.topic)
        {
            return deliver(durable, stored, attempt.saturating_add(1));
        }
    }
    if durable.pending.len() < durable.max_ack_pending {
        let mut seq = durable.next_seq.max(state.first_seq);
        while let Some(stored) = lookup(&state.log, state.first_seq, seq) {
            seq = seq.saturating_add(1);
            if durable.filter.matches(&stored.event.tenant, &stored.event.topic) {
                durable.next_seq = seq;
                return deliver(durable, stored, 1);
            }
        }
        durable.next_seq = seq;
    }
    Claim::Wait(durable.pending.values().map(|p| p.deadline).min())
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn work_task(inner: Arc<Inner>, name: String, tx: mpsc::Sender<Delivery>) {
    loop {
        // Reserve room first, so nothing is claimed (and its ack clock started) while the
        // subscriber's channel is full.
        let Ok(permit) = tx.reserve().await else { return };
        let notified = inner.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        match claim(&inner, &name) {
            Claim::Got(delivery) => permit.send(*delivery),
            Claim::Wait(deadline) => {
                tokio::select! {
                    () = &mut notified => {}
                    () = sleep_until(deadline) => {}
                    () = tx.closed() => return,
                }
            }
        }
    }
}

async fn broadcast_task(inner: Arc<Inner>, filter: TopicFilter, mut cursor: u64, tx: mpsc::Sender<ReceivedEvent>) {
    loop {
        let Ok(permit) = tx.reserve().await else { return };
        let notified = inner.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let found = {
            let mut state = inner.lock();
            state.expire(Instant::now(), &inner.config);
            let mut found = None;
            cursor = cursor.max(state.first_seq);
            while let Some(stored) = lookup(&state.log, state.first_seq, cursor) {
                cursor = cursor.saturating_add(1);
                if filter.matches(&stored.event.tenant, &stored.event.topic) {
                    found = Some(ReceivedEvent {
                        event: stored.event.clone(),
                        sequence: stored.sequence,
                    });
                    break;
                }
            }
            found
        };
        match found {
            Some(event) => permit.send(event),
            None => {
                tokio::select! {
                    () = &mut notified => {}
                    () = tx.closed() => return,
                }
            }
        }
    }
}

/// Acknowledges deliveries of the memory bus.
pub(crate) struct MemoryAcker {
    inner: Arc<Inner>,
    durable: String,
    sequence: u64,
}

impl MemoryAcker {
    pub(crate) fn ack(&self) {
        {
            let mut state = self.inner.lock();
            if let Some(durable) = state.durables.get_mut(&self.durable) {
                durable.pending.remove(&self.sequence);
                durable.redeliver.retain(|(seq, _)| *seq != self.sequence);
            }
        }
        // Room under max_ack_pending may let a waiting subscriber go on.
        self.inner.notify.notify_waiters();
    }

    pub(crate) fn nak(&self) {
        {
            let mut state = self.inner.lock();
            if let Some(durable) = state.durables.get_mut(&self.durable)
                && let Some(pending) = durable.pending.remove(&self.sequence)
            {
                durable.redeliver.push_front((self.sequence, pending.attempt));
            }
        }
        self.inner.notify.notify_waiters();
    }
}

/// Answers requests of the memory bus; the first reply wins.
pub(crate) struct MemoryResponder {
    tx: mpsc::Sender<Bytes>,
}

impl MemoryResponder {
    pub(crate) fn reply(self, payload: Bytes) {
        // Capacity 1: a second reply (another queue group) finds it full and is dropped, like NATS.
        let _ = self.tx.try_send(payload);
    }
}

impl MemoryBus {
    /// A new, empty bus. `BusConfig::embedded()` gives memory-sized limits.
    pub fn new(config: BusConfig) -> Result<Self, BusError> {
        config.validate()?;
        let state = State {
            log: VecDeque::new(),
            first_seq: 1,
            last_seq: 0,
            bytes: 0,
            ids: IdWindow::new(config.stream.duplicate_window, ids_per_generation(&config)),
            durables: HashMap::new(),
            servers: Vec::new(),
            core_subs: Vec::new(),
            round_robin: 0,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                state: Mutex::new(state),
                notify: Notify::new(),
            }),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &BusConfig {
        &self.inner.config
    }

    /// Appends the event to the log, unless its id was published inside the duplicate window.
    pub async fn publish(&self, event: Event) -> Result<Published, BusError> {
        event.validate()?;
        let config = &self.inner.config;
        let size = event.size();
        if size > config.max_event_bytes {
            return Err(BusError::TooLarge {
                size,
                limit: config.max_event_bytes,
            });
        }
        let now = Instant::now();
        let published = {
            let mut state = self.inner.lock();
            let sequence = state.last_seq.saturating_add(1);
            if let Some(earlier) = state.ids.check_and_remember(&event.id, sequence, now) {
                return Ok(Published {
                    sequence: earlier,
                    duplicate: true,
                });
            }
            state.last_seq = sequence;
            let size = size as u64;
            state.bytes = state.bytes.saturating_add(size);
            if state.log.is_empty() {
                state.first_seq = sequence;
            }
            state.log.push_back(Arc::new(Stored {
                event,
                sequence,
                at: now,
                size,
            }));
            state.enforce_limits(now, config);
            Published {
                sequence,
                duplicate: false,
            }
        };
        self.inner.notify.notify_waiters();
        Ok(published)
    }

    /// Sequence of the last event appended (0 when none ever was).
    pub async fn last_sequence(&self) -> Result<u64, BusError> {
        Ok(self.inner.lock().last_seq)
    }

    /// Sequence of the oldest event held (`last + 1` when none is); see [`crate::Bus::first_sequence`].
    pub async fn first_sequence(&self) -> Result<u64, BusError> {
        let mut state = self.inner.lock();
        state.expire(Instant::now(), &self.inner.config);
        Ok(state.first_seq)
    }

    /// Joins (or creates) durable `durable` with `limits`; see [`crate::Bus::subscribe_work_with`].
    pub async fn subscribe_work_with(
        &self,
        durable: &str,
        filter: &TopicFilter,
        limits: WorkLimits,
    ) -> Result<WorkSubscription, BusError> {
        validate_durable(durable)?;
        filter.validate()?;
        let max_ack_pending = limits
            .max_ack_pending
            .unwrap_or(self.inner.config.max_ack_pending)
            .max(1);
        {
            let mut state = self.inner.lock();
            state
                .durables
                .entry(durable.to_owned())
                .and_modify(|d| {
                    d.filter = filter.clone();
                    d.max_ack_pending = max_ack_pending;
                })
                .or_insert_with(|| Durable {
                    filter: filter.clone(),
                    max_ack_pending,
                    next_seq: 1,
                    pending: BTreeMap::new(),
                    redeliver: VecDeque::new(),
                });
        }
        let (tx, rx) = mpsc::channel(self.inner.config.channel_capacity);
        let task = tokio::spawn(work_task(Arc::clone(&self.inner), durable.to_owned(), tx));
        Ok(Subscription::new(rx, Some(task)))
    }

    /// A broadcast subscription; see [`crate::Bus::subscribe_broadcast`].
    pub async fn subscribe_broadcast(
        &self,
        filter: &TopicFilter,
        start: StartFrom,
    ) -> Result<BroadcastSubscription, BusError> {
        filter.validate()?;
        let cursor = match start {
            StartFrom::New => self.inner.lock().last_seq.saturating_add(1),
            StartFrom::Sequence(seq) => seq.max(1),
        };
        let (tx, rx) = mpsc::channel(self.inner.config.channel_capacity);
        let task = tokio::spawn(broadcast_task(Arc::clone(&self.inner), filter.clone(), cursor, tx));
        Ok(Subscription::new(rx, Some(task)))
    }

    /// A request with headers; see [`crate::Bus::request_with_headers`].
    pub async fn request_with_headers(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, BusError> {
        validate_core_subject(subject, false)?;
        validate_headers(&headers)?;
        self.check_size(subject, &headers, &payload)?;
        let targets: Vec<mpsc::Sender<IncomingRequest>> = {
            let mut state = self.inner.lock();
            state.servers.retain(|s| !s.tx.is_closed());
            state.round_robin = state.round_robin.wrapping_add(1);
            let mut groups: BTreeMap<&str, Vec<&mpsc::Sender<IncomingRequest>>> = BTreeMap::new();
            for server in state.servers.iter().filter(|s| subject_matches(&s.pattern, subject)) {
                groups.entry(server.group.as_str()).or_default().push(&server.tx);
            }
            // One member of each queue group gets the request, in turn.
            groups
                .values()
                .filter_map(|members| {
                    members
                        .get(state.round_robin % members.len().max(1))
                        .map(|tx| (*tx).clone())
                })
                .collect()
        };
        if targets.is_empty() {
            return Err(BusError::NoResponders {
                subject: subject.to_owned(),
            });
        }
        let (reply_tx, mut reply_rx) = mpsc::channel(1);
        let exchange = async {
            for target in targets {
                let request = IncomingRequest {
                    subject: subject.to_owned(),
                    headers: headers.clone(),
                    payload: payload.clone(),
                    responder: Responder::Memory(MemoryResponder { tx: reply_tx.clone() }),
                };
                // A server that went away meanwhile just does not answer.
                let _ = target.send(request).await;
            }
            drop(reply_tx);
            match reply_rx.recv().await {
                Some(reply) => Some(reply),
                // Every server dropped the request unanswered: nobody will reply, wait out the deadline like NATS.
                None => std::future::pending().await,
            }
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Some(reply)) => Ok(reply),
            Ok(None) | Err(_) => Err(BusError::Timeout {
                operation: "request",
                timeout,
            }),
        }
    }

    /// Serves requests on `subject` in `queue_group`; see [`crate::Bus::serve`].
    pub async fn serve(&self, subject: &str, queue_group: &str) -> Result<RequestStream, BusError> {
        validate_core_subject(subject, true)?;
        validate_queue_group(queue_group)?;
        let (tx, rx) = mpsc::channel(self.inner.config.channel_capacity);
        self.inner.lock().servers.push(ServeEntry {
            pattern: subject.to_owned(),
            group: queue_group.to_owned(),
            tx,
        });
        Ok(Subscription::new(rx, None))
    }

    /// Fire-and-forget publish with headers; see [`crate::Bus::publish_core_with_headers`].
    pub async fn publish_core_with_headers(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
    ) -> Result<(), BusError> {
        validate_core_subject(subject, false)?;
        validate_headers(&headers)?;
        self.check_size(subject, &headers, &payload)?;
        let targets: Vec<mpsc::Sender<CoreMessage>> = {
            let mut state = self.inner.lock();
            state.core_subs.retain(|s| !s.tx.is_closed());
            state
                .core_subs
                .iter()
                .filter(|s| subject_matches(&s.pattern, subject))
                .map(|s| s.tx.clone())
                .collect()
        };
        let timeout = self.inner.config.operation_timeout;
        let message = CoreMessage {
            subject: subject.to_owned(),
            headers,
            payload,
        };
        for target in targets {
            // Backpressure up to the deadline; past it the message is dropped for that slow
            // subscriber, as the NATS server drops messages for a slow consumer.
            if tokio::time::timeout(timeout, target.send(message.clone()))
                .await
                .is_err()
            {
                tracing::warn!(subject, "core subscriber too slow, message dropped");
            }
        }
        Ok(())
    }

    /// Subscribes to a core subject; see [`crate::Bus::subscribe_core`].
    pub async fn subscribe_core(&self, subject: &str) -> Result<CoreSubscription, BusError> {
        validate_core_subject(subject, true)?;
        let (tx, rx) = mpsc::channel(self.inner.config.channel_capacity);
        self.inner.lock().core_subs.push(CoreEntry {
            pattern: subject.to_owned(),
            tx,
        });
        Ok(Subscription::new(rx, None))
    }

    fn check_size(&self, subject: &str, headers: &Headers, payload: &Bytes) -> Result<(), BusError> {
        check_core_size(&self.inner.config, subject, headers, payload)
    }
}

/// Size rule for core messages and requests, shared with the NATS bus.
pub(crate) fn check_core_size(
    config: &BusConfig,
    subject: &str,
    headers: &Headers,
    payload: &Bytes,
) -> Result<(), BusError> {
    let size = payload.len() + subject.len() + headers.iter().map(|(k, v)| k.len() + v.len() + 4).sum::<usize>();
    if size > config.max_event_bytes {
        return Err(BusError::TooLarge {
            size,
            limit: config.max_event_bytes,
        });
    }
    Ok(())
}
