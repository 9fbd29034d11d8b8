//! What one simulated connector does: sync its inventory, send reviews and runtime events,
//! and watch its command stream, acking every command. Every remote call has a deadline;
//! breaks are retried on the next replica with a growing pause.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::Bytes;
use portcullis_proto::admission::v1 as pa;
use portcullis_proto::admission::v1::admission_service_client::AdmissionServiceClient;
use portcullis_proto::continuous::v1 as pc;
use portcullis_proto::continuous::v1::continuous_service_client::ContinuousServiceClient;
use portcullis_proto::telemetry::v1 as pt;
use portcullis_proto::telemetry::v1::telemetry_service_client::TelemetryServiceClient;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;

use crate::net::{BACKOFF_START, MAX_MESSAGE, Replicas, credential, next_backoff, retryable, status_line};
use crate::protocol::{SnapshotError, snapshot_messages, stream_snapshot};
use crate::stats::Stats;
use crate::workload::{CONNECT_EVERY, ClusterLoad, runtime_event};
use crate::{SimulateError, SimulationConfig};

/// Attempts of one snapshot before the simulation gives up.
const SNAPSHOT_ATTEMPTS: u32 = 5;
/// Most events in one ingest call.
const EVENT_BATCH: usize = 500;
/// How often the event senders send what is due.
const EVENT_TICK: Duration = Duration::from_millis(100);
/// Acks queued towards the service on a command stream.
const ACK_QUEUE: usize = 64;

/// A connector: its cluster, key and what it sends.
pub(crate) struct Connector {
    pub(crate) index: usize,
    pub(crate) name: String,
    pub(crate) id: String,
    pub(crate) key: String,
    pub(crate) load: ClusterLoad,
}

/// What every connector task shares.
pub(crate) struct Shared {
    pub(crate) config: SimulationConfig,
    pub(crate) connectors: Vec<Connector>,
    pub(crate) admission: Replicas,
    pub(crate) continuous: Replicas,
    pub(crate) telemetry: Replicas,
    pub(crate) stats: Stats,
    pub(crate) reviews: Vec<Bytes>,
    /// Connector `i`'s CONNECT reviews.
    pub(crate) connects: Vec<Vec<Bytes>>,
    /// When the last command came in.
    pub(crate) last_command: std::sync::Mutex<Instant>,
}

impl Shared {
    fn authed<C>(
        &self,
        connector: &Connector,
        channel: tonic::transport::Channel,
        deadline: bool,
        make: impl FnOnce(InterceptedService<tonic::transport::Channel, portcullis_kit::client::Credential>) -> C,
    ) -> Result<C, SimulateError> {
        let timeout = deadline.then_some(self.config.call_timeout);
        let credential = credential(
            &connector.key,
            &format!("the connector key of {}", connector.name),
            timeout,
        )?;
        Ok(make(InterceptedService::new(channel, credential)))
    }
}

/// Sends connector `c`'s pods as one full snapshot; retried on the next continuous replica
/// after a break.
pub(crate) async fn sync_inventory(shared: Arc<Shared>, c: usize) -> Result<(), SimulateError> {
    let Some(connector) = shared.connectors.get(c) else {
        return Ok(());
    };
    let mut pause = BACKOFF_START;
    let mut last = String::new();
    for attempt in 0..SNAPSHOT_ATTEMPTS {
        let (url, channel) = shared.continuous.pick(c + attempt as usize);
        let client = shared.authed(connector, channel, false, |ch| {
            ContinuousServiceClient::new(ch)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE)
        })?;
        match snapshot(client, &connector.load.pods_json, shared.config.call_timeout).await {
            Ok((synced, upserted)) => {
                if let Some(stats) = shared.stats.cluster(c) {
                    stats.pods_synced.store(synced, Relaxed);
                }
                shared.stats.pods_upserted.fetch_add(upserted, Relaxed);
                return Ok(());
            }
            Err(Snapshot::Refused(why)) => {
                return Err(SimulateError::Setup(format!(
                    "inventory of {} at {url}: {why}",
                    connector.name
                )));
            }
            Err(Snapshot::Broken(why)) => {
                last = format!("inventory of {} at {url}: {why}", connector.name);
                shared.stats.retry_reason(last.clone());
                tokio::time::sleep(pause).await;
                pause = next_backoff(pause);
            }
        }
    }
    Err(SimulateError::Setup(last))
}

enum Snapshot {
    Refused(String),
    Broken(String),
}

/// One snapshot on one stream: `(pods acked without error, pods upserted)`.
async fn snapshot(
    mut client: ContinuousServiceClient<crate::net::Authed>,
    pods: &[Bytes],
    step: Duration,
) -> Result<(u64, u64), Snapshot> {
    use pc::inventory_update::Update;
    let messages = snapshot_messages(pods.to_vec(), None);
    // Pods per message, to count what each ack covers.
    let sizes: Vec<u64> = messages
        .iter()
        .map(|m| match &m.update {
            Some(Update::Upserts(batch)) => batch.pods_json.len() as u64,
            _ => 0,
        })
        .collect();
    let (mut synced, mut upserted) = (0u64, 0u64);
    let streamed = stream_snapshot(
        |r| client.sync_inventory(r),
        messages,
        step,
        |ack, expected| {
            if ack.resync {
                return Err(Snapshot::Broken(format!("resync asked: {}", ack.resync_reason)));
            }
            if ack.sequence != expected {
                return Err(Snapshot::Refused(format!(
                    "acked {} where {expected} was due",
                    ack.sequence
                )));
            }
            if let Some(first) = ack.errors.first() {
                return Err(Snapshot::Refused(format!(
                    "{} pod(s) refused: {}",
                    ack.errors.len(),
                    first.message
                )));
            }
            upserted += ack.pods_upserted;
            synced += sizes.get((expected - 1) as usize).copied().unwrap_or(0);
            Ok(())
        },
    )
    .await;
    match streamed {
        Ok(()) => Ok((synced, upserted)),
        Err(SnapshotError::Ack(e)) => Err(e),
        Err(SnapshotError::Ended(acked)) => Err(Snapshot::Broken(format!("the stream ended after {acked} acks"))),
        Err(SnapshotError::Rpc(s)) if retryable(s.code()) => Err(Snapshot::Broken(status_line(&s))),
        Err(SnapshotError::Rpc(s)) => Err(Snapshot::Refused(status_line(&s))),
    }
}

/// Watches connector `c`'s command stream until `stop`, acking every command as done;
/// reopened on the next continuous replica after a break.
pub(crate) async fn watch_commands(shared: Arc<Shared>, c: usize, stop: CancellationToken) {
    let Some(connector) = shared.connectors.get(c) else {
        return;
    };
    let mut pause = BACKOFF_START;
    let mut attempt = 0usize;
    loop {
        let (url, channel) = shared.continuous.pick(c + attempt);
        let end = tokio::select! {
            end = watch_once(&shared, connector, channel, &mut pause, &stop) => end,
            () = stop.cancelled() => return,
        };
        match end {
            Ok(()) => return,
            Err(Watch::Refused(why)) => {
                shared
                    .stats
                    .error(format!("commands of {} at {url}: {why}", connector.name));
                return;
            }
            Err(Watch::Broken(why)) => {
                if stop.is_cancelled() {
                    return;
                }
                shared.stats.reconnects.fetch_add(1, Relaxed);
                shared
                    .stats
                    .retry_reason(format!("commands of {} at {url}: {why}", connector.name));
                attempt += 1;
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = stop.cancelled() => return,
                }
                pause = next_backoff(pause);
            }
        }
    }
}

enum Watch {
    Refused(String),
    Broken(String),
}

async fn watch_once(
    shared: &Shared,
    connector: &Connector,
    channel: tonic::transport::Channel,
    pause: &mut Duration,
    stop: &CancellationToken,
) -> Result<(), Watch> {
    let mut client = shared
        .authed(connector, channel, false, |ch| {
            ContinuousServiceClient::new(ch).max_decoding_message_size(MAX_MESSAGE)
        })
        .map_err(|e| Watch::Refused(e.to_string()))?;
    let step = shared.config.call_timeout;
    let (tx, rx) = mpsc::channel(ACK_QUEUE);
    let hello = crate::protocol::hello(None, format!("portcullis-simulator {}", env!("CARGO_PKG_VERSION")));
    tx.send(hello)
        .await
        .map_err(|_| Watch::Broken("the stream closed before its hello".into()))?;
    let classify = |s: tonic::Status| {
        if retryable(s.code()) {
            Watch::Broken(status_line(&s))
        } else {
            Watch::Refused(status_line(&s))
        }
    };
    let mut stream = tokio::time::timeout(step, client.commands(ReceiverStream::new(rx)))
        .await
        .map_err(|_| Watch::Broken("the stream did not open in time".into()))?
        .map_err(classify)?
        .into_inner();
    let Some(stats) = shared.stats.cluster(connector.index) else {
        return Ok(());
    };
    loop {
        let command = tokio::select! {
            message = stream.message() => match message {
                Ok(Some(command)) => command,
                Ok(None) => return Err(Watch::Broken("the service ended the stream".into())),
                Err(status) => return Err(classify(status)),
            },
            () = stop.cancelled() => {
                // Half-close, and let the acks already queued reach the service (bounded).
                drop(tx);
                let _ = tokio::time::timeout(step, async { while let Ok(Some(_)) = stream.message().await {} }).await;
                return Ok(());
            }
        };
        *pause = BACKOFF_START;
        if let Ok(mut last) = shared.last_command.lock() {
            *last = Instant::now();
        }
        let new = stats
            .commands
            .lock()
            .map(|mut ids| ids.received.insert(command.command_id.clone()))
            .unwrap_or(false);
        if new {
            let kind = command_kind(command.r#type);
            if let Ok(mut by_kind) = shared.stats.by_kind.lock() {
                *by_kind.entry(kind).or_default() += 1;
            }
        } else {
            shared.stats.commands_repeated.fetch_add(1, Relaxed);
        }
        let ack = crate::protocol::done(command.command_id.clone(), "done by the simulator".to_owned());
        if tokio::time::timeout(step, tx.send(ack)).await.is_err() {
            return Err(Watch::Broken("the service takes no acks".into()));
        }
        if let Ok(mut ids) = stats.commands.lock() {
            ids.acked.insert(command.command_id);
        }
    }
}

/// A command type's name in the report.
fn command_kind(value: i32) -> String {
    match pc::CommandType::try_from(value) {
        Ok(pc::CommandType::Isolate) => "isolate".to_owned(),
        Ok(pc::CommandType::Terminate) => "terminate".to_owned(),
        Ok(pc::CommandType::Restore) => "restore".to_owned(),
        Ok(pc::CommandType::NotIsolatable) => "not-isolatable".to_owned(),
        _ => format!("type-{value}"),
    }
}

/// Sends reviews at the configured rate (open loop: each review at its scheduled time,
/// whatever the answers before it) until `stop`, at most `in_flight` unanswered; waits for
/// the answers of those sent.
pub(crate) async fn send_reviews(shared: Arc<Shared>, stop: CancellationToken) {
    let rate = shared.config.rate;
    let clusters = shared.connectors.len();
    if rate == 0 || clusters == 0 {
        return;
    }
    // At least a nanosecond: a rate above 10^9/s must still move the schedule on.
    let period = (Duration::from_secs(1) / rate).max(Duration::from_nanos(1));
    let limit = shared.config.in_flight.max(1);
    let permits = Arc::new(Semaphore::new(limit));
    let mut tasks = tokio::task::JoinSet::new();
    let mut next = tokio::time::Instant::now();
    let mut index = 0u64;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = stop.cancelled() => break,
        }
        let now = tokio::time::Instant::now();
        while next <= now {
            let scheduled = next.into_std();
            next += period;
            let i = index;
            index += 1;
            match permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    let shared = shared.clone();
                    tasks.spawn(async move {
                        review_one(&shared, i, scheduled).await;
                        drop(permit);
                    });
                }
                Err(_) => {
                    shared.stats.reviews_not_sent.fetch_add(1, Relaxed);
                }
            }
            // Reap finished tasks so the set stays small.
            while tasks.try_join_next().is_some() {}
        }
    }
    if shared.stats.reviews_not_sent.load(Relaxed) > 0 {
        shared.stats.error(format!(
            "reviews not sent: {limit} were waiting for an answer (the system answered slower than {rate}/s)"
        ));
    }
    let drain = tokio::time::timeout(shared.config.drain, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drain.is_err() {
        let unanswered = tasks.len() as u64;
        tasks.abort_all();
        shared.stats.reviews_failed.fetch_add(unanswered, Relaxed);
        shared
            .stats
            .error(format!("{unanswered} review(s) unanswered when the simulation stopped"));
    }
}

/// Review `i`: cluster `i mod N`, a corpus review or (one in [`CONNECT_EVERY`]) an
/// exec/attach CONNECT; tried on the admission replicas in turn after a break.
async fn review_one(shared: &Shared, i: u64, scheduled: Instant) {
    let clusters = shared.connectors.len().max(1) as u64;
    let c = (i % clusters) as usize;
    let k = i / clusters;
    let Some(connector) = shared.connectors.get(c) else {
        return;
    };
    let connect = k % CONNECT_EVERY == CONNECT_EVERY - 1;
    let body = if connect {
        shared
            .connects
            .get(c)
            .and_then(|list| list.get((k / CONNECT_EVERY) as usize % list.len().max(1)))
            .cloned()
    } else {
        shared.reviews.get(k as usize % shared.reviews.len().max(1)).cloned()
    };
    let Some(body) = body else {
        return;
    };
    shared.stats.reviews_sent.fetch_add(1, Relaxed);
    if let Some(stats) = shared.stats.cluster(c) {
        stats.reviews_sent.fetch_add(1, Relaxed);
    }
    if connect {
        shared.stats.exec_sent.fetch_add(1, Relaxed);
    }
    let replicas = shared.admission.len();
    let attempts = shared.config.review_attempts.max(1);
    let mut pause = Duration::from_millis(20);
    let mut last = String::new();
    for attempt in 0..attempts {
        if attempt > 0 {
            shared.stats.reviews_retried.fetch_add(1, Relaxed);
            // A pause only once every replica was tried.
            if (attempt as usize).is_multiple_of(replicas.max(1)) {
                tokio::time::sleep(pause).await;
                pause = next_backoff(pause);
            }
        }
        let (url, channel) = shared
            .admission
            .pick(c + i as usize / clusters as usize + attempt as usize);
        let client = shared.authed(connector, channel, true, |ch| {
            AdmissionServiceClient::new(ch)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE)
        });
        let mut client = match client {
            Ok(client) => client,
            Err(e) => {
                last = e.to_string();
                break;
            }
        };
        let request = pa::ReviewRequest {
            cluster: None,
            admission_review_json: body.clone(),
            request_id: String::new(),
        };
        match client.review(request).await {
            Ok(answer) => {
                shared.stats.latency(scheduled.elapsed());
                let allowed = answer.into_inner().decision.is_some_and(|d| d.allowed);
                if allowed {
                    shared.stats.reviews_allowed.fetch_add(1, Relaxed);
                } else {
                    shared.stats.reviews_denied.fetch_add(1, Relaxed);
                    if connect {
                        shared.stats.exec_denied.fetch_add(1, Relaxed);
                    }
                }
                return;
            }
            Err(status) if retryable(status.code()) => {
                last = format!("review at {url}: {}", status_line(&status));
                shared.stats.retry_reason(last.clone());
            }
            Err(status) => {
                last = format!("review at {url}: {}", status_line(&status));
                break;
            }
        }
    }
    shared.stats.reviews_failed.fetch_add(1, Relaxed);
    shared.stats.error(last);
}

/// Sends connector `c`'s runtime events, its share of the configured rate, in batches every
/// [`EVENT_TICK`] until `stop`; a batch that breaks is re-sent (byte for byte, on the next
/// telemetry replica) until it is answered or the drain time after `stop` is over.
pub(crate) async fn send_events(shared: Arc<Shared>, c: usize, stop: CancellationToken) {
    let Some(connector) = shared.connectors.get(c) else {
        return;
    };
    let Some(stats) = shared.stats.cluster(c) else {
        return;
    };
    let clusters = shared.connectors.len().max(1) as f64;
    let per_second = f64::from(shared.config.runtime_rate) / clusters;
    if per_second <= 0.0 || connector.load.pods.is_empty() {
        return;
    }
    let started = Instant::now();
    let mut seq = 0u64;
    let mut tick = tokio::time::interval(EVENT_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut attempt = 0usize;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        // Events due by now (a late tick sends more), at most a batch.
        let due = (started.elapsed().as_secs_f64() * per_second) as u64;
        let count = due.saturating_sub(seq).min(EVENT_BATCH as u64);
        if count == 0 {
            continue;
        }
        let at = time::OffsetDateTime::now_utc();
        let batch: Vec<Bytes> = (seq..seq + count)
            .filter_map(|s| {
                connector
                    .load
                    .pod(s)
                    .map(|pod| runtime_event(&connector.name, s, pod, at))
            })
            .collect();
        seq += count;
        stats.events_sent.fetch_add(count, Relaxed);
        ingest(&shared, connector, c, batch, &mut attempt, &stop).await;
    }
}

/// Sends one batch until it is answered; gives up (counting the events failed) when the
/// drain time after `stop` is over or the service refuses it.
async fn ingest(
    shared: &Shared,
    connector: &Connector,
    c: usize,
    batch: Vec<Bytes>,
    attempt: &mut usize,
    stop: &CancellationToken,
) {
    let count = batch.len() as u64;
    let mut pause = BACKOFF_START;
    let mut give_up_at: Option<Instant> = None;
    let mut retry = false;
    loop {
        if retry {
            shared.stats.events_retried.fetch_add(count, Relaxed);
        }
        let (url, channel) = shared.telemetry.pick(c + *attempt);
        let client = shared.authed(connector, channel, true, |ch| {
            TelemetryServiceClient::new(ch)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE)
        });
        let outcome = match client {
            Ok(mut client) => {
                let request = pt::IngestEventsRequest {
                    cluster: None,
                    events_json: batch.clone(),
                };
                client
                    .ingest_events(tokio_stream::iter([request]))
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(|s| (retryable(s.code()), format!("events at {url}: {}", status_line(&s))))
            }
            Err(e) => Err((false, e.to_string())),
        };
        match outcome {
            Ok(answer) => {
                if let Some(stats) = shared.stats.cluster(c) {
                    stats.events_accepted.fetch_add(answer.accepted, Relaxed);
                }
                let refused = answer.rejected + answer.refused;
                shared.stats.events_rejected.fetch_add(refused, Relaxed);
                shared.stats.events_mitigations.fetch_add(answer.mitigations, Relaxed);
                for e in answer.errors.iter().take(3) {
                    shared.stats.error(format!("event refused by {url}: {}", e.message));
                }
                if answer.not_stored > 0 {
                    shared.stats.error(format!(
                        "{} event(s) accepted but not stored by {url}",
                        answer.not_stored
                    ));
                }
                return;
            }
            Err((true, why)) => {
                shared.stats.retry_reason(why.clone());
                *attempt += 1;
                retry = true;
                if stop.is_cancelled() {
                    let deadline = *give_up_at.get_or_insert_with(|| Instant::now() + shared.config.drain);
                    if Instant::now() >= deadline {
                        shared.stats.events_failed.fetch_add(count, Relaxed);
                        shared.stats.error(why);
                        return;
                    }
                }
                tokio::time::sleep(pause).await;
                pause = next_backoff(pause);
            }
            Err((false, why)) => {
                shared.stats.events_failed.fetch_add(count, Relaxed);
                shared.stats.error(why);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_kinds_have_their_documented_names() {
        assert_eq!(command_kind(pc::CommandType::Isolate as i32), "isolate");
        assert_eq!(command_kind(pc::CommandType::Terminate as i32), "terminate");
        assert_eq!(command_kind(99), "type-99");
    }
}
