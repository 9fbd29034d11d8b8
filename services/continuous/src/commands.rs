//! The command hub: mitigation commands made outside a reconciliation (runtime detections,
//! people), and the `Commands` streams of the connectors this replica holds.
//!
//! Commands are rows in the store. Whoever makes one (any replica) notifies
//! `pc.<tenant>.cmd.<cluster>` on core NATS; the replica holding that cluster's stream then
//! reads the cluster's pending commands and sends those its stream has not sent yet. A
//! stream also re-reads them every [`crate::ContinuousOptions::command_poll`], so a lost
//! notification only delays a command. A stream sends every pending command when it opens,
//! so a reconnecting connector gets all it has not acked; acks are recorded once (a repeated
//! ack changes nothing) and published. A newer stream for one cluster replaces an older one
//! on this replica (the older ends with `Aborted`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use portcullis_domain::{ClusterId, TenantId, topic::command_subject};
use portcullis_engine::policy::Mitigation;
use portcullis_proto::common::v1 as pc;
use portcullis_proto::continuous::v1 as pv;
use portcullis_proto::events::v1 as pe;
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::convert::{command_to_proto, instant, state_from_proto};
use crate::error::ContinuousError;
use crate::evaluate::{Evaluator, publish_commands};
use crate::findings::{Order, PodAddress, isolation_policy};
use crate::store::{Acked, CommandOrigin, CommandState, NewCommand, StoredCommand};

/// The hub (cheap to clone).
#[derive(Clone)]
pub struct CommandHub {
    inner: Arc<Inner>,
}

struct Inner {
    evaluator: Evaluator,
    /// (tenant, cluster) → the stream held here: its number and what ends it.
    streams: Mutex<HashMap<(String, String), (u64, CancellationToken)>>,
    next_stream: AtomicU64,
    poll: Duration,
}

impl std::fmt::Debug for CommandHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandHub").finish_non_exhaustive()
    }
}

/// The order of a runtime mitigation for `pod` (`None` for `log` or `none`, which order
/// nothing); a pod on the host network cannot be isolated.
pub fn runtime_order(mitigation: Mitigation, namespace: &str, host_network: bool) -> Option<Order> {
    match mitigation {
        Mitigation::Terminate => Some(Order::Terminate),
        Mitigation::Isolate if host_network => Some(Order::NotIsolatable),
        Mitigation::Isolate => Some(Order::Isolate {
            network_policy: isolation_policy(namespace),
        }),
        Mitigation::Log | Mitigation::None => None,
    }
}

impl CommandHub {
    /// A hub storing and publishing through `evaluator`; streams re-read pending commands
    /// every `poll`.
    pub fn new(evaluator: Evaluator, poll: Duration) -> CommandHub {
        CommandHub {
            inner: Arc::new(Inner {
                evaluator,
                streams: Mutex::new(HashMap::new()),
                next_stream: AtomicU64::new(1),
                poll: poll.max(Duration::from_millis(50)),
            }),
        }
    }

    fn streams(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), (u64, CancellationToken)>> {
        // A poisoned lock only means a panic elsewhere mid-update; the map stays usable.
        self.inner.streams.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a stream for `tenant`'s `cluster`, ending the one held before.
    fn register(&self, tenant: &str, cluster: &str) -> (u64, CancellationToken) {
        let id = self.inner.next_stream.fetch_add(1, Ordering::Relaxed);
        let token = CancellationToken::new();
        if let Some((_, older)) = self
            .streams()
            .insert((tenant.to_owned(), cluster.to_owned()), (id, token.clone()))
        {
            older.cancel();
        }
        (id, token)
    }

    fn unregister(&self, tenant: &str, cluster: &str, id: u64) {
        let mut streams = self.streams();
        let key = (tenant.to_owned(), cluster.to_owned());
        if streams.get(&key).is_some_and(|(held, _)| *held == id) {
            streams.remove(&key);
        }
    }

    /// How many command streams this replica holds.
    pub fn streams_held(&self) -> usize {
        self.streams().len()
    }

    /// Stores `commands` for `tenant`'s `cluster` (pending), publishes them and notifies the
    /// cluster's stream.
    pub async fn issue(
        &self,
        tenant: &str,
        cluster: &str,
        commands: Vec<NewCommand>,
    ) -> Result<Vec<StoredCommand>, ContinuousError> {
        let e = &self.inner.evaluator;
        let stored = e
            .store()
            .issue_commands(tenant, cluster, commands, OffsetDateTime::now_utc())
            .await?;
        publish_commands(e.events(), e.bus(), tenant, cluster, &stored).await;
        Ok(stored)
    }

    /// Turns a runtime detection's mitigation into a command (also for a pod not in the
    /// inventory: the event names it).
    pub async fn runtime(&self, tenant: &str, m: &pe::RuntimeMitigation) -> Result<(), ContinuousError> {
        let Some(pod) = &m.pod else {
            return Err(ContinuousError::InvalidArgument(
                "runtime mitigation without a pod".into(),
            ));
        };
        if m.cluster_id.is_empty() || pod.namespace.is_empty() || pod.name.is_empty() {
            return Err(ContinuousError::InvalidArgument(
                "runtime mitigation without its cluster, namespace or pod name".into(),
            ));
        }
        let Some(mitigation) = crate::convert::mitigation_from_proto(m.mitigation) else {
            return Err(ContinuousError::InvalidArgument(
                "runtime mitigation without a mitigation".into(),
            ));
        };
        let stored = self
            .inner
            .evaluator
            .store()
            .pod(tenant, &m.cluster_id, &pod.namespace, &pod.name)
            .await?;
        let host_network = stored.as_ref().is_some_and(|s| s.pod.host_network());
        let Some(order) = runtime_order(mitigation, &pod.namespace, host_network) else {
            return Ok(());
        };
        let uid = match (&stored, pod.uid.is_empty()) {
            (Some(s), true) => s.pod.uid().to_owned(),
            _ => pod.uid.clone(),
        };
        let command = NewCommand {
            pod: PodAddress {
                namespace: pod.namespace.as_str().into(),
                name: pod.name.as_str().into(),
                uid,
            },
            reason: format!("{}: runtime rules {}", order.as_str(), m.rule_ids.join(", ")),
            order,
            origin: CommandOrigin::Runtime,
            rules: Vec::new(),
            runtime_rule_ids: m.rule_ids.clone(),
        };
        self.issue(tenant, &m.cluster_id, vec![command]).await?;
        Ok(())
    }

    /// Records a connector's ack of a command of `tenant`'s `cluster`, and publishes the new
    /// state (once: a repeated ack publishes nothing).
    pub async fn ack(&self, tenant: &str, cluster: &str, ack: &pv::CommandAck) -> Result<Acked, ContinuousError> {
        let state = match state_from_proto(ack.state) {
            Some(s @ (CommandState::Done | CommandState::Failed | CommandState::Rejected)) => s,
            _ => {
                return Err(ContinuousError::InvalidArgument(format!(
                    "ack of {}: the state must be done, failed or rejected",
                    ack.command_id
                )));
            }
        };
        let at = ack
            .completed_at
            .as_ref()
            .and_then(instant)
            .unwrap_or_else(OffsetDateTime::now_utc);
        let e = &self.inner.evaluator;
        let acked = e
            .store()
            .ack_command(tenant, cluster, &ack.command_id, state, &ack.message, at)
            .await?;
        if let Acked::Now(command) = &acked {
            e.events().mitigation(tenant, command_to_proto(command));
        }
        Ok(acked)
    }

    /// Serves one connector's command stream for `tenant`'s `cluster` until the connector
    /// ends it, a newer stream replaces it, or `stop`: every pending command at once, then
    /// new ones as notified or polled; acks recorded.
    pub async fn serve_stream(
        &self,
        tenant: String,
        cluster: String,
        mut inbound: impl futures::Stream<Item = Result<pv::ConnectorMessage, Status>> + Unpin + Send,
        out: mpsc::Sender<Result<pv::MitigationCommand, Status>>,
        stop: CancellationToken,
    ) {
        use futures::StreamExt as _;
        let (Ok(t), Ok(c)) = (TenantId::parse(tenant.as_str()), ClusterId::parse(cluster.as_str())) else {
            let _ = out
                .send(Err(Status::invalid_argument("unusable tenant or cluster id")))
                .await;
            return;
        };
        let subject = command_subject(&t, &c);
        let bus = self.inner.evaluator.bus().clone();
        // Subscribed before the first read, so a command made meanwhile is not missed.
        let mut notified = match bus.subscribe_core(&subject).await {
            Ok(s) => s,
            Err(e) => {
                let _ = out
                    .send(Err(Status::unavailable(format!("the command channel: {e}"))))
                    .await;
                return;
            }
        };
        let (id, replaced) = self.register(&tenant, &cluster);
        let mut sent: HashSet<String> = HashSet::new();
        let mut poll = tokio::time::interval(self.inner.poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => {
                    let _ = out.send(Err(Status::unavailable("the service is shutting down"))).await;
                    break;
                }
                () = replaced.cancelled() => {
                    let _ = out
                        .send(Err(Status::aborted("a newer command stream for this cluster replaced this one")))
                        .await;
                    break;
                }
                () = out.closed() => break,
                _ = poll.tick() => {
                    if !self.send_pending(&tenant, &cluster, &mut sent, &out).await {
                        break;
                    }
                }
                message = notified.next() => {
                    if message.is_none() {
                        tracing::warn!(%tenant, %cluster, "the command channel ended; polling only");
                        notified = match bus.subscribe_core(&subject).await {
                            Ok(s) => s,
                            Err(_) => break,
                        };
                    }
                    if !self.send_pending(&tenant, &cluster, &mut sent, &out).await {
                        break;
                    }
                }
                message = inbound.next() => match message {
                    Some(Ok(pv::ConnectorMessage { message: Some(pv::connector_message::Message::Ack(ack)) })) => {
                        match self.ack(&tenant, &cluster, &ack).await {
                            Ok(Acked::Unknown) => {
                                tracing::warn!(%tenant, %cluster, command = %ack.command_id, "ack of an unknown command");
                            }
                            Ok(_) => {
                                sent.remove(&ack.command_id);
                            }
                            Err(e) => {
                                tracing::warn!(%tenant, %cluster, command = %ack.command_id, error = %e, "recording an ack failed; the command stays pending");
                            }
                        }
                    }
                    Some(Ok(_)) => {
                        tracing::debug!(%tenant, %cluster, "ignoring a second hello or an empty message");
                    }
                    Some(Err(_)) | None => break,
                },
            }
        }
        self.unregister(&tenant, &cluster, id);
    }

    /// Sends the pending commands `sent` does not hold; false when the stream is gone.
    async fn send_pending(
        &self,
        tenant: &str,
        cluster: &str,
        sent: &mut HashSet<String>,
        out: &mpsc::Sender<Result<pv::MitigationCommand, Status>>,
    ) -> bool {
        let pending = match self.inner.evaluator.store().pending_commands(tenant, cluster).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(%tenant, %cluster, error = %e, "reading pending commands failed; trying again at the next poll");
                return true;
            }
        };
        for command in pending {
            if !command.command.order.is_sent() || sent.contains(&command.id) {
                continue;
            }
            if out.send(Ok(command_to_proto(&command))).await.is_err() {
                return false;
            }
            sent.insert(command.id);
        }
        true
    }
}

/// The command type of `IssueCommand` as an order for a pod in `namespace`.
pub fn manual_order(kind: i32, namespace: &str) -> Result<Order, ContinuousError> {
    match pv::CommandType::try_from(kind) {
        Ok(pv::CommandType::Isolate) => Ok(Order::Isolate {
            network_policy: isolation_policy(namespace),
        }),
        Ok(pv::CommandType::Terminate) => Ok(Order::Terminate),
        Ok(pv::CommandType::Restore) => Ok(Order::RestoreIsolation),
        _ => Err(ContinuousError::InvalidArgument(
            "type: one of isolate, terminate or restore".into(),
        )),
    }
}

/// The pod key of a request, checked.
pub fn pod_key(pod: Option<&pc::PodKey>) -> Result<&pc::PodKey, ContinuousError> {
    match pod {
        Some(p) if !p.namespace.trim().is_empty() && !p.name.trim().is_empty() => Ok(p),
        _ => Err(ContinuousError::InvalidArgument(
            "pod: namespace and name are required".into(),
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn a_runtime_isolation_of_a_host_network_pod_is_reported_not_isolatable() {
        assert_eq!(
            runtime_order(Mitigation::Isolate, "web", true),
            Some(Order::NotIsolatable)
        );
        assert!(matches!(
            runtime_order(Mitigation::Isolate, "web", false),
            Some(Order::Isolate { .. })
        ));
        assert_eq!(
            runtime_order(Mitigation::Terminate, "web", true),
            Some(Order::Terminate)
        );
        assert_eq!(runtime_order(Mitigation::Log, "web", false), None);
    }

    #[test]
    fn a_manual_command_is_isolate_terminate_or_restore() {
        assert_eq!(
            manual_order(pv::CommandType::Restore as i32, "web").unwrap(),
            Order::RestoreIsolation
        );
        assert!(manual_order(pv::CommandType::NotIsolatable as i32, "web").is_err());
        assert!(manual_order(0, "web").is_err());
    }
}
