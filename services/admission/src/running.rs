//! A whole admission server in the background of the current runtime: the gRPC server with
//! `AdmissionService`, the optional HTTPS webhook, the event follower and the decision
//! publisher. `portcullis up`, `portcullis serve admission` and the tests start it the same
//! way.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use portcullis_bus::Bus;
use portcullis_proto::admission::v1::admission_service_server::AdmissionServiceServer;
use portcullis_server::{AuthState, Credentials, GrpcServer, PermissionTable, ServerConfig, ServerError};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::decision_events::DecisionEventStats;
use crate::grpc::AdmissionGrpc;
use crate::webhook::{WebhookAdapter, WebhookOptions};
use crate::{Admission, AdmissionOptions, Hooks, Upstream};

/// Largest gRPC message accepted: above the review limit, so that an oversized review gets
/// the service's own `InvalidArgument` naming the limit rather than a transport error.
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// How often cached policies older than their refresh interval are re-checked.
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// How long the final flush of decision events may take at shutdown.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// How to run an admission server.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The gRPC listener.
    pub grpc: ServerConfig,
    /// The HTTPS webhook listener, when wanted.
    pub webhook: Option<WebhookOptions>,
    /// Deadlines, limits and caches.
    pub admission: AdmissionOptions,
}

/// A running server. Dropping it without [`RunningAdmission::stop`] stops it without
/// waiting for the drain.
#[derive(Debug)]
pub struct RunningAdmission {
    addr: SocketAddr,
    url: String,
    webhook_addr: Option<SocketAddr>,
    admission: Admission,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<DecisionEventStats, ServerError>>>,
}

impl RunningAdmission {
    /// Binds the listeners (port 0 picks a free port), starts following `bus` and serves in
    /// spawned tasks. `upstream` is the policy store; `credentials` the operator key and
    /// service credential this server accepts.
    pub async fn start(
        upstream: Upstream,
        bus: Bus,
        credentials: Credentials,
        options: ServeOptions,
        hooks: Hooks,
    ) -> Result<RunningAdmission, ServerError> {
        let (admission, publisher) = Admission::new(upstream, bus.clone(), options.admission.clone(), hooks)
            .map_err(|e| ServerError::Config(e.to_string()))?;
        let auth = AuthState {
            credentials,
            authenticator: Arc::new(admission.authenticator().clone()),
            table: PermissionTable::standard(),
        };
        let mut server = GrpcServer::new(options.grpc.clone(), auth);
        server.add_service(
            AdmissionServiceServer::new(AdmissionGrpc::new(admission.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        );
        let bound = server.bind().await?;
        let addr = bound.local_addr();
        let url = bound.url();

        let (stop_tx, mut stop_rx) = watch::channel(false);
        let webhook = match &options.webhook {
            Some(webhook_options) => {
                let bound = WebhookAdapter::bind(admission.clone(), webhook_options)
                    .await
                    .map_err(|e| ServerError::Config(format!("webhook: {e}")))?;
                Some(bound)
            }
            None => None,
        };
        let webhook_addr = webhook.as_ref().map(|w| w.local_addr());
        let webhook_task = webhook.map(|w| {
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                let shutdown = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                if let Err(e) = w.serve(shutdown).await {
                    tracing::error!(error = %e, "the webhook listener failed");
                }
            })
        });
        let follow_task = {
            let (admission, mut stop) = (admission.clone(), stop_rx.clone());
            tokio::spawn(async move {
                admission
                    .follow(bus, async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .await;
            })
        };

        let sweep_task = {
            let (admission, mut stop) = (admission.clone(), stop_rx.clone());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.wait_for(|s| *s) => return,
                        () = tokio::time::sleep(SWEEP_INTERVAL) => admission.policies().refresh_stale(),
                    }
                }
            })
        };

        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = bound
                .serve(async {
                    let _ = stopped.await;
                })
                .await;
            let _ = stop_tx.send(true);
            let _ = stop_rx.wait_for(|s| *s).await;
            if let Some(t) = webhook_task {
                let _ = t.await;
            }
            let _ = follow_task.await;
            let _ = sweep_task.await;
            // After the drain no review can queue events any more: this flush is final.
            let stats = publisher.shutdown(FLUSH_TIMEOUT).await;
            served.map(|()| stats)
        });
        tracing::info!(%url, webhook = ?webhook_addr, "admission serving");
        Ok(RunningAdmission {
            addr,
            url,
            webhook_addr,
            admission,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The gRPC listener's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR` or `https://ADDR`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The webhook listener's address, when one runs.
    pub fn webhook_addr(&self) -> Option<SocketAddr> {
        self.webhook_addr
    }

    /// The service's state (caches, counters).
    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    /// Stops accepting reviews, waits for those in flight, and flushes the queued decision
    /// events (for at most a few seconds). Returns the publisher's final counters.
    pub async fn stop(mut self) -> Result<DecisionEventStats, ServerError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.wait().await
    }

    /// Waits until the server ends (it failed, or it was stopped). Cancel-safe.
    pub async fn wait(&mut self) -> Result<DecisionEventStats, ServerError> {
        let Some(task) = self.task.as_mut() else {
            return Ok(DecisionEventStats::default());
        };
        let result = task.await;
        self.task = None;
        result.map_err(|e| ServerError::Config(format!("server task failed: {e}")))?
    }
}

impl Drop for RunningAdmission {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
