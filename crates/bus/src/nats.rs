//! The NATS bus: JetStream stream `PC_EVENTS` for events, core NATS for requests and commands.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer, stream};
use async_nats::{Client, ConnectOptions, HeaderMap, HeaderName, HeaderValue, RequestErrorKind};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::NatsAccess;
use crate::event::{
    Event, Headers, Published, ReceivedEvent, StartFrom, TopicFilter, is_reserved_header, parse_event_subject,
    validate_core_subject, validate_durable, validate_headers, validate_queue_group,
};
use crate::memory::check_core_size;
use crate::subscription::{
    Acker, BroadcastSubscription, CoreMessage, CoreSubscription, Delivery, IncomingRequest, RequestStream, Responder,
    Subscription, WorkSubscription,
};
use crate::{BusConfig, BusError, WorkLimits};

/// Subjects of the event stream.
pub use portcullis_domain::topic::EVENT_SUBJECTS;

/// The NATS bus. Cloning gives another handle on the same connection.
///
/// Reconnection is async-nats's: while the server is away, operations fail after their
/// deadline (`BusConfig::operation_timeout`) and subscriptions resume once it is back.
#[derive(Clone)]
pub struct NatsBus {
    inner: Arc<Shared>,
}

struct Shared {
    client: Client,
    context: jetstream::Context,
    stream: stream::Stream,
    config: Arc<BusConfig>,
}

impl std::fmt::Debug for NatsBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBus")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

async fn deadline<T, E: std::fmt::Display>(
    operation: &'static str,
    timeout: Duration,
    future: impl Future<Output = Result<T, E>>,
) -> Result<T, BusError> {
    match tokio::time::timeout(timeout, future).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(BusError::nats(operation, err)),
        Err(_) => Err(BusError::Timeout { operation, timeout }),
    }
}

fn to_header_map(headers: &Headers) -> Result<HeaderMap, BusError> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let invalid = || BusError::Invalid {
            field: "headers",
            reason: format!("{name:?} is not a valid NATS header"),
        };
        let name = HeaderName::try_from(name.as_str()).map_err(|_| invalid())?;
        let value: HeaderValue = value.parse().map_err(|_| invalid())?;
        map.insert(name, value);
    }
    Ok(map)
}

fn from_header_map(map: Option<&HeaderMap>) -> Headers {
    let mut headers = Headers::new();
    for (name, values) in map.into_iter().flat_map(HeaderMap::iter) {
        let name: &str = name.as_ref();
        if is_reserved_header(name) {
            continue;
        }
        if let Some(value) = values.last() {
            headers.insert(name.to_owned(), value.as_str().to_owned());
        }
    }
    headers
}

fn event_from_message(message: &async_nats::Message) -> Option<Event> {
    let (tenant, topic) = parse_event_subject(message.subject.as_str())?;
    let id = message
        .headers
        .as_ref()
        .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default();
    Some(Event {
        id,
        tenant: tenant.to_owned(),
        topic: topic.to_owned(),
        payload: message.payload.clone(),
        headers: from_header_map(message.headers.as_ref()),
    })
}

/// Retry pacing of the subscription tasks after errors: 100 ms doubling up to 5 s.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Self(Duration::from_millis(100))
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Duration::from_secs(5));
    }

    fn reset(&mut self) {
        *self = Self::new();
    }
}

/// Feeds a work subscription from a durable pull consumer, re-opening the message stream
/// (and re-creating the consumer if it was deleted) after errors.
async fn work_task(
    stream: stream::Stream,
    config: consumer::pull::Config,
    mut consumer: consumer::PullConsumer,
    bus: Arc<BusConfig>,
    pull_batch: usize,
    tx: mpsc::Sender<Delivery>,
) {
    let mut backoff = Backoff::new();
    loop {
        let messages = consumer.stream().max_messages_per_batch(pull_batch).messages().await;
        let mut messages = match messages {
            Ok(messages) => messages,
            Err(err) => {
                tracing::warn!(error = %err, "work subscription: cannot pull, retrying");
                backoff.wait().await;
                continue;
            }
        };
        let mut recreate = false;
        while let Some(item) = messages.next().await {
            match item {
                Ok(message) => {
                    backoff.reset();
                    let Some(delivery) = delivery_from(message, &bus) else {
                        continue;
                    };
                    if tx.send(delivery).await.is_err() {
                        return;
                    }
                }
                Err(err) => match err.kind() {
                    consumer::pull::MessagesErrorKind::MissingHeartbeat => {
                        tracing::debug!("work subscription: missed heartbeat");
                    }
                    consumer::pull::MessagesErrorKind::ConsumerDeleted
                    | consumer::pull::MessagesErrorKind::NoResponders => {
                        tracing::warn!(error = %err, "work subscription: consumer gone, re-creating it");
                        recreate = true;
                        break;
                    }
                    _ => {
                        tracing::warn!(error = %err, "work subscription: pull failed, re-opening");
                        break;
                    }
                },
            }
        }
        backoff.wait().await;
        if recreate {
            match deadline(
                "create consumer",
                bus.operation_timeout,
                stream.create_consumer(config.clone()),
            )
            .await
            {
                Ok(created) => consumer = created,
                Err(err) => tracing::warn!(error = %err, "work subscription: cannot re-create the consumer"),
            }
        }
    }
}

fn delivery_from(message: jetstream::Message, bus: &Arc<BusConfig>) -> Option<Delivery> {
    let (sequence, attempt) = match message.info() {
        Ok(info) => (info.stream_sequence, u64::try_from(info.delivered).unwrap_or(1)),
        Err(err) => {
            tracing::warn!(error = %err, "work subscription: message without JetStream metadata skipped");
            return None;
        }
    };
    let (message, acker) = message.split();
    let acker = NatsAcker {
        acker,
        timeout: bus.operation_timeout,
    };
    match event_from_message(&message) {
        Some(event) => Some(Delivery {
            event,
            sequence,
            attempt,
            acker: Acker::Nats(Box::new(acker)),
        }),
        None => {
            // Not an event subject (cannot happen through this API): terminate it so it does not loop.
            tracing::warn!(subject = %message.subject, "work subscription: not an event subject, terminated");
            tokio::spawn(async move {
                let _ = acker.acker.ack_with(AckKind::Term).await;
            });
            None
        }
    }
}

/// Feeds a broadcast subscription from an ordered consumer; starts a new one after the
/// last sequence seen if the stream ends.
async fn broadcast_task(
    stream: stream::Stream,
    base: consumer::pull::OrderedConfig,
    mut messages: consumer::pull::Ordered,
    mut next: u64,
    bus: Arc<BusConfig>,
    tx: mpsc::Sender<ReceivedEvent>,
) {
    let mut backoff = Backoff::new();
    loop {
        while let Some(item) = messages.next().await {
            match item {
                Ok(message) => {
                    backoff.reset();
                    let Ok(sequence) = message.info().map(|i| i.stream_sequence) else {
                        continue;
                    };
                    // An ordered consumer recreated before its first message restarts from the
                    // beginning of the stream; skip what precedes the requested start.
                    if sequence < next {
                        continue;
                    }
                    next = sequence.saturating_add(1);
                    let Some(event) = event_from_message(&message.message) else {
                        continue;
                    };
                    if tx.send(ReceivedEvent { event, sequence }).await.is_err() {
                        return;
                    }
                }
                Err(err) => tracing::warn!(error = %err, "broadcast subscription: error"),
            }
        }
        loop {
            backoff.wait().await;
            match open_ordered(&stream, &base, next, &bus).await {
                Ok(opened) => {
                    messages = opened;
                    break;
                }
                Err(err) => tracing::warn!(error = %err, "broadcast subscription: cannot re-open"),
            }
        }
    }
}

async fn open_ordered(
    stream: &stream::Stream,
    base: &consumer::pull::OrderedConfig,
    start: u64,
    bus: &BusConfig,
) -> Result<consumer::pull::Ordered, BusError> {
    let config = consumer::pull::OrderedConfig {
        deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence: start },
        ..base.clone()
    };
    let consumer = deadline("create consumer", bus.operation_timeout, stream.create_consumer(config)).await?;
    deadline("open consumer", bus.operation_timeout, consumer.messages()).await
}

async fn core_task<T>(
    mut subscriber: async_nats::Subscriber,
    tx: mpsc::Sender<T>,
    convert: impl Fn(async_nats::Message) -> T,
) {
    while let Some(message) = subscriber.next().await {
        if tx.send(convert(message)).await.is_err() {
            return;
        }
    }
}

/// Acknowledges deliveries of the NATS bus.
pub(crate) struct NatsAcker {
    acker: jetstream::message::Acker,
    timeout: Duration,
}

impl NatsAcker {
    pub(crate) async fn ack(&self) -> Result<(), BusError> {
        // Waits for the server to confirm: once `ack` returns, a new subscriber of the durable
        // never gets the event again (a plain ack is fire-and-forget and can be lost when the
        // subscriber goes away right after it).
        deadline("ack", self.timeout, self.acker.double_ack()).await
    }

    pub(crate) async fn nak(&self) -> Result<(), BusError> {
        deadline("nak", self.timeout, self.acker.ack_with(AckKind::Nak(None))).await
    }
}

/// Answers requests of the NATS bus.
pub(crate) struct NatsResponder {
    client: Client,
    reply: Option<async_nats::Subject>,
    timeout: Duration,
}

impl NatsResponder {
    pub(crate) async fn reply(self, payload: Bytes) -> Result<(), BusError> {
        let reply = self.reply.ok_or(BusError::NoReplySubject)?;
        deadline("reply", self.timeout, self.client.publish(reply, payload)).await
    }
}

impl NatsBus {
    /// Connects to `url` and creates or updates the event stream with `config.stream`.
    pub async fn connect(url: &str, config: BusConfig) -> Result<Self, BusError> {
        Self::connect_with(url, config, &NatsAccess::default()).await
    }

    /// [`NatsBus::connect`] with `access`'s credentials and TLS.
    pub async fn connect_with(url: &str, config: BusConfig, access: &NatsAccess) -> Result<Self, BusError> {
        config.validate()?;
        let connect_error = |reason: String| BusError::Connect {
            url: url.to_owned(),
            reason,
        };
        let options = ConnectOptions::new()
            .name(&config.client_name)
            .connection_timeout(config.connect_timeout)
            .request_timeout(Some(config.operation_timeout));
        let options = access.apply(options).await?;
        let client = match tokio::time::timeout(config.connect_timeout, options.connect(url)).await {
            Ok(Ok(client)) => client,
            Ok(Err(err)) => return Err(connect_error(err.to_string())),
            Err(_) => {
                return Err(connect_error(format!(
                    "no connection within {:?}",
                    config.connect_timeout
                )));
            }
        };
        let mut context = jetstream::new(client.clone());
        context.set_timeout(config.operation_timeout);
        let stream_config = stream::Config {
            name: config.stream.name.clone(),
            subjects: vec![EVENT_SUBJECTS.to_owned()],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::Old,
            max_age: config.stream.max_age,
            max_bytes: i64::try_from(config.stream.max_bytes).unwrap_or(i64::MAX),
            max_messages: config
                .stream
                .max_events
                .map_or(-1, |m| i64::try_from(m).unwrap_or(i64::MAX)),
            max_message_size: i32::try_from(config.max_event_bytes).unwrap_or(i32::MAX),
            duplicate_window: config.stream.duplicate_window,
            num_replicas: config.stream.replicas,
            ..Default::default()
        };
        deadline(
            "create or update stream",
            config.operation_timeout,
            context.create_or_update_stream(stream_config),
        )
        .await?;
        let stream = deadline(
            "get stream",
            config.operation_timeout,
            context.get_stream(&config.stream.name),
        )
        .await?;
        Ok(Self {
            inner: Arc::new(Shared {
                client,
                context,
                stream,
                config: Arc::new(config),
            }),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &BusConfig {
        &self.inner.config
    }

    /// The underlying NATS client (health checks, draining).
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// Publishes the event and waits for JetStream's acknowledgement; see [`crate::Bus::publish`].
    pub async fn publish(&self, event: Event) -> Result<Published, BusError> {
        event.validate()?;
        let size = event.size();
        if size > self.inner.config.max_event_bytes {
            return Err(BusError::TooLarge {
                size,
                limit: self.inner.config.max_event_bytes,
            });
        }
        let headers = to_header_map(&event.headers)?;
        let subject = event.subject();
        let message = jetstream::message::PublishMessage::build()
            .payload(event.payload)
            .headers(headers)
            .message_id(&event.id);
        let context = &self.inner.context;
        let timeout = self.inner.config.operation_timeout;
        // One deadline over sending and the acknowledgement: during an outage the message
        // waits in the client's buffer and no ack comes.
        let ack = deadline("publish", timeout, async {
            context.send_publish(subject, message).await?.await
        })
        .await?;
        Ok(Published {
            sequence: ack.sequence,
            duplicate: ack.duplicate,
        })
    }

    /// The stream's last sequence; see [`crate::Bus::last_sequence`].
    pub async fn last_sequence(&self) -> Result<u64, BusError> {
        Ok(self.stream_state().await?.last_sequence)
    }

    async fn stream_state(&self) -> Result<stream::State, BusError> {
        let info = deadline(
            "stream info",
            self.inner.config.operation_timeout,
            self.inner.stream.get_info(),
        )
        .await?;
        Ok(info.state)
    }

    /// The stream's first sequence; see [`crate::Bus::first_sequence`].
    pub async fn first_sequence(&self) -> Result<u64, BusError> {
        Ok(self.stream_state().await?.first_sequence)
    }

    /// Joins (or creates) a durable pull consumer with `limits`; see
    /// [`crate::Bus::subscribe_work_with`].
    pub async fn subscribe_work_with(
        &self,
        durable: &str,
        filter: &TopicFilter,
        limits: WorkLimits,
    ) -> Result<WorkSubscription, BusError> {
        validate_durable(durable)?;
        filter.validate()?;
        let mut subjects = filter.subjects();
        let (filter_subject, filter_subjects) = match subjects.len() {
            1 => (subjects.pop().unwrap_or_default(), Vec::new()),
            _ => (String::new(), subjects),
        };
        let config = consumer::pull::Config {
            durable_name: Some(durable.to_owned()),
            deliver_policy: consumer::DeliverPolicy::All,
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: self.inner.config.ack_wait,
            max_ack_pending: i64::try_from(
                limits
                    .max_ack_pending
                    .unwrap_or(self.inner.config.max_ack_pending)
                    .max(1),
            )
            .unwrap_or(i64::MAX),
            filter_subject,
            filter_subjects,
            ..Default::default()
        };
        // Create-or-update: the newest subscriber's filter and ack wait win, as in the memory bus.
        let consumer = deadline(
            "create consumer",
            self.inner.config.operation_timeout,
            self.inner.stream.create_consumer(config.clone()),
        )
        .await?;
        let (tx, rx) = mpsc::channel(self.inner.config.channel_capacity);
        let pull_batch = limits.pull_batch.unwrap_or(self.inner.config.channel_capacity).max(1);
        let task = tokio::spawn(work_task(
            self.inner.stream.clone(),
            config,
            consumer,
            Arc::clone(&self.inner.config),
            pull_batch,
            tx,
        ));
        Ok(Subscription::new(rx, Some(task)))
    }

    /// An ordered ephemeral consumer from `start`; see [`crate::Bus::subscribe_broadcast`].
    pub async fn subscribe_broadcast(
        &self,
        filter: &TopicFilter,
        start: StartFrom,
    ) -> Result<BroadcastSubscription, BusError> {
        filter.validate()?;
        let start = match start {
            StartFrom::New => self.last_sequence().await?.saturating_add(1),
            StartFrom::Sequence(seq) => seq.max(1),
        };
        let mut subjects = filter.subjects();
        let base = match subjects.len() {
            1 => consumer::pull::OrderedConfig {
                filter_subject: subjects.pop().unwrap_or_default(),
                ..Default::default()
            },
            _ => consumer::pull::OrderedConfig {
                filter_subjects: subjects,
                ..Default::default()
            },
        };
        let messages = open_ordered(&self.inner.stream, &base, start, &self.inner.config).await?;
        let (tx, rx) = mpsc::channel(self.inner.config.channel_capacity);
        let task = tokio::spawn(broadcast_task(
            self.inner.stream.clone(),
            base,
            messages,
            start,
            Arc::clone(&self.inner.config),
            tx,
        ));
        Ok(Subscription::new(rx, Some(task)))
    }

    /// Core NATS request; see [`crate::Bus::request_with_headers`].
    pub async fn request_with_headers(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, BusError> {
        validate_core_subject(subject, false)?;
        validate_headers(&headers)?;
        check_core_size(&self.inner.config, subject, &headers, &payload)?;
        let request = async_nats::Request::new()
            .payload(payload)
            .headers(to_header_map(&headers)?)
            .timeout(Some(timeout));
        let timed_out = BusError::Timeout {
            operation: "request",
            timeout,
        };
        // The outer deadline also covers sending, which can wait while disconnected.
        match tokio::time::timeout(timeout, self.inner.client.send_request(subject.to_owned(), request)).await {
            Ok(Ok(reply)) => Ok(reply.payload),
            Ok(Err(err)) => match err.kind() {
                RequestErrorKind::NoResponders => Err(BusError::NoResponders {
                    subject: subject.to_owned(),
                }),
                RequestErrorKind::TimedOut => Err(timed_out),
                _ => Err(BusError::nats("request", err)),
            },
            Err(_) => Err(timed_out),
        }
    }

    /// Queue subscription for requests; see [`crate::Bus::serve`].
    pub async fn serve(&self, subject: &str, queue_group: &str) -> Result<RequestStream, BusError> {
        validate_core_subject(subject, true)?;
        validate_queue_group(queue_group)?;
        let timeout = self.inner.config.operation_timeout;
        let subscriber = deadline(
            "subscribe",
            timeout,
            self.inner
                .client
                .queue_subscribe(subject.to_owned(), queue_group.to_owned()),
        )
        .await?;
        self.flush().await?;
        let client = self.inner.client.clone();
        let (tx, rx) = mpsc::channel(self.inner.config.channel_capacity);
        let task = tokio::spawn(core_task(subscriber, tx, move |message| IncomingRequest {
            subject: message.subject.to_string(),
            headers: from_header_map(message.headers.as_ref()),
            payload: message.payload,
            responder: Responder::Nats(NatsResponder {
                client: client.clone(),
                reply: message.reply,
                timeout,
            }),
        }));
        Ok(Subscription::new(rx, Some(task)))
    }

    /// Core NATS publish; see [`crate::Bus::publish_core_with_headers`].
    pub async fn publish_core_with_headers(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
    ) -> Result<(), BusError> {
        validate_core_subject(subject, false)?;
        validate_headers(&headers)?;
        check_core_size(&self.inner.config, subject, &headers, &payload)?;
        let headers = to_header_map(&headers)?;
        deadline(
            "publish core",
            self.inner.config.operation_timeout,
            self.inner
                .client
                .publish_with_headers(subject.to_owned(), headers, payload),
        )
        .await
    }

    /// Core NATS subscription; see [`crate::Bus::subscribe_core`].
    pub async fn subscribe_core(&self, subject: &str) -> Result<CoreSubscription, BusError> {
        validate_core_subject(subject, true)?;
        let subscriber = deadline(
            "subscribe",
            self.inner.config.operation_timeout,
            self.inner.client.subscribe(subject.to_owned()),
        )
        .await?;
        self.flush().await?;
        let (tx, rx) = mpsc::channel(self.inner.config.channel_capacity);
        let task = tokio::spawn(core_task(subscriber, tx, |message| CoreMessage {
            subject: message.subject.to_string(),
            headers: from_header_map(message.headers.as_ref()),
            payload: message.payload,
        }));
        Ok(Subscription::new(rx, Some(task)))
    }

    /// Waits until the server has processed everything sent so far, so a subscription made
    /// just before is in place when this returns.
    async fn flush(&self) -> Result<(), BusError> {
        deadline("flush", self.inner.config.operation_timeout, self.inner.client.flush()).await
    }
}
