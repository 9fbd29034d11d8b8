//! The connector's side of the continuous service's streams, shared by `portcullis
//! inventory sync` / `commands watch` and the simulator's connectors: a snapshot's messages,
//! streaming them with an ack per message under a deadline per step, and which breaks are
//! worth reopening a stream for.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use portcullis_proto::common::v1::ResourceRef;
use portcullis_proto::continuous::v1 as pc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};

/// Most pods in one message of a snapshot.
pub const PAGE_PODS: usize = 500;

/// Most bytes of pod JSON in one message (a pod larger than this goes alone): well under
/// the 4 MiB a gRPC server takes by default.
pub const PAGE_BYTES: usize = 3 * 1024 * 1024;

/// Messages queued towards the service ahead of its acks.
const IN_FLIGHT: usize = 4;

/// The messages of one full snapshot, sequences 1..n: `snapshot_start`, pages of at most
/// [`PAGE_PODS`] pods and [`PAGE_BYTES`] bytes, `snapshot_end`. Only the first names the
/// cluster.
pub fn snapshot_messages(pods: Vec<Bytes>, cluster: Option<ResourceRef>) -> Vec<pc::InventoryUpdate> {
    use pc::inventory_update::Update;
    let mut updates = vec![Update::SnapshotStart(pc::SnapshotStart {
        expected_pods: pods.len() as u64,
    })];
    let mut page: Vec<Bytes> = Vec::new();
    let mut page_bytes = 0;
    for pod in pods {
        if !page.is_empty() && (page.len() >= PAGE_PODS || page_bytes + pod.len() > PAGE_BYTES) {
            updates.push(Update::Upserts(pc::PodBatch {
                pods_json: std::mem::take(&mut page),
            }));
            page_bytes = 0;
        }
        page_bytes += pod.len();
        page.push(pod);
    }
    if !page.is_empty() {
        updates.push(Update::Upserts(pc::PodBatch { pods_json: page }));
    }
    updates.push(Update::SnapshotEnd(pc::SnapshotEnd {}));
    let mut cluster = cluster;
    updates
        .into_iter()
        .zip(1u64..)
        .map(|(update, sequence)| pc::InventoryUpdate {
            cluster: cluster.take(),
            sequence,
            update: Some(update),
        })
        .collect()
}

/// Why streaming a snapshot stopped.
#[derive(Debug)]
pub enum SnapshotError<E> {
    /// The call failed, or a step took longer than its deadline (`DeadlineExceeded`).
    Rpc(Status),
    /// The service ended the stream early: acks received before.
    Ended(u64),
    /// The ack handler refused an ack.
    Ack(E),
}

/// Streams `messages` through `open` (e.g. `|r| client.sync_inventory(r)`) and hands each
/// ack, with the sequence due, to `on_ack`, each step within `step` (the whole call's
/// deadline is `step` per message, so a large snapshot is not cut off by one call's). The
/// request stream stays open until the last ack: a closed request stream may end the call
/// early.
pub async fn stream_snapshot<F, Fut, E>(
    open: F,
    messages: Vec<pc::InventoryUpdate>,
    step: Duration,
    mut on_ack: impl FnMut(&pc::InventoryAck, u64) -> Result<(), E>,
) -> Result<(), SnapshotError<E>>
where
    F: FnOnce(Request<ReceiverStream<pc::InventoryUpdate>>) -> Fut,
    Fut: Future<Output = Result<Response<Streaming<pc::InventoryAck>>, Status>>,
{
    let total = messages.len() as u64;
    let (tx, rx) = mpsc::channel(IN_FLIGHT);
    let keep_open = tx.clone();
    let feeder = tokio::spawn(async move {
        for message in messages {
            if tx.send(message).await.is_err() {
                break;
            }
        }
    });
    let mut request = Request::new(ReceiverStream::new(rx));
    request.set_timeout(step.saturating_mul(u32::try_from(total.saturating_add(1)).unwrap_or(u32::MAX)));
    let outcome = async {
        let mut acks = tokio::time::timeout(step, open(request))
            .await
            .map_err(|_| SnapshotError::Rpc(Status::deadline_exceeded("no answer")))?
            .map_err(SnapshotError::Rpc)?
            .into_inner();
        for expected in 1..=total {
            let ack = tokio::time::timeout(step, acks.message())
                .await
                .map_err(|_| SnapshotError::Rpc(Status::deadline_exceeded("no ack")))?
                .map_err(SnapshotError::Rpc)?
                .ok_or(SnapshotError::Ended(expected - 1))?;
            on_ack(&ack, expected).map_err(SnapshotError::Ack)?;
        }
        Ok(())
    }
    .await;
    drop(keep_open);
    feeder.abort();
    outcome
}

/// The first message of a command stream.
pub fn hello(cluster: Option<ResourceRef>, connector_version: String) -> pc::ConnectorMessage {
    pc::ConnectorMessage {
        message: Some(pc::connector_message::Message::Hello(pc::ConnectorHello {
            cluster,
            connector_version,
        })),
    }
}

/// The ack of command `command_id` as done, now.
pub fn done(command_id: String, message: String) -> pc::ConnectorMessage {
    let now = time::OffsetDateTime::now_utc();
    pc::ConnectorMessage {
        message: Some(pc::connector_message::Message::Ack(pc::CommandAck {
            command_id,
            state: pc::CommandState::Done as i32,
            message,
            completed_at: Some(prost_types::Timestamp {
                seconds: now.unix_timestamp(),
                nanos: i32::try_from(now.nanosecond()).unwrap_or(0),
            }),
        })),
    }
}

/// Whether a failed stream (or call) is worth reopening: transport trouble and a service
/// that is restarting are; a refusal (bad key, unknown cluster, bad request) is not, nor is
/// a command stream a newer one for the cluster replaced (`Aborted`: another connector took
/// over, and taking it back would only make the two take turns).
pub fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::Unknown
            | Code::Internal
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
    )
}

/// The pause before the next attempt after `pause`: doubled, at most `max`.
pub fn next_backoff(pause: Duration, max: Duration) -> Duration {
    pause.saturating_mul(2).min(max)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn kinds(messages: &[pc::InventoryUpdate]) -> Vec<&'static str> {
        use pc::inventory_update::Update;
        messages
            .iter()
            .map(|m| match m.update.as_ref().unwrap() {
                Update::SnapshotStart(_) => "start",
                Update::Upserts(_) => "upserts",
                Update::Deletions(_) => "deletions",
                Update::SnapshotEnd(_) => "end",
            })
            .collect()
    }

    #[test]
    fn a_snapshot_is_start_pages_end_and_only_the_first_names_the_cluster() {
        let pods: Vec<Bytes> = (0..PAGE_PODS + 1)
            .map(|i| Bytes::from(format!("{{\"i\":{i}}}")))
            .collect();
        let cluster = Some(ResourceRef {
            r#ref: Some(portcullis_proto::common::v1::resource_ref::Ref::Name("c".into())),
        });
        let messages = snapshot_messages(pods, cluster);
        assert_eq!(kinds(&messages), ["start", "upserts", "upserts", "end"]);
        assert_eq!(messages.iter().map(|m| m.sequence).collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert!(messages[0].cluster.is_some() && messages[1..].iter().all(|m| m.cluster.is_none()));
    }

    #[test]
    fn breaks_are_retried_with_growing_pauses_and_refusals_are_not() {
        assert!(retryable(Code::Unavailable));
        assert!(!retryable(Code::PermissionDenied));
        assert!(!retryable(Code::Aborted));
        let max = Duration::from_secs(2);
        assert_eq!(
            next_backoff(Duration::from_millis(100), max),
            Duration::from_millis(200)
        );
        assert_eq!(next_backoff(max, max), max);
    }
}
