//! A whole admission server in the background of the current runtime: the gRPC server with
//! `AdmissionService`, the optional HTTPS webhook, the event follower and the decision
//! publisher, on one kit `Lifecycle`. `portcullis up`, `portcullis serve admission` and the tests start it the same
//! way.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use portcullis_bus::Bus;
use portcullis_kit::lifecycle::Lifecycle;
use portcullis_proto::admission::v1::admission_service_server::AdmissionServiceServer;
use portcullis_server::{AuthState, Credentials, GrpcServer, PermissionTable, ServerConfig, ServerError};

use crate::decision_events::{DecisionEventStats, PublisherTask};
use crate::grpc::AdmissionGrpc;
use crate::webhook::{WebhookAdapter, WebhookOptions};
use crate::{Admission, AdmissionOptions, Hooks, Upstream};

/// Largest gRPC message accepted: above the review limit, so that an oversized review gets
/// the service's own `InvalidArgument` naming the limit rather than a transport error.
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// `AdmissionService` over `admission`, as this server adds it (also to another server's
/// router: `up` serves it on its one address too).
pub fn grpc_service(admission: &Admission) -> AdmissionServiceServer<AdmissionGrpc> {
    AdmissionServiceServer::new(AdmissionGrpc::new(admission.clone())).max_decoding_message_size(MAX_MESSAGE_BYTES)
}

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
    lifecycle: Lifecycle,
    /// Taken by the final flush: later waits return the default counters.
    publisher: Option<PublisherTask>,
    /// How long the final flush may take.
    flush_timeout: Duration,
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
        // Recorded before the caches can hold anything: the follower starts right after it.
        let snapshot = portcullis_kit::revocations::stream_position(&bus).await;
        let (admission, publisher) = Admission::new(upstream, bus.clone(), options.admission.clone(), hooks)
            .map_err(|e| ServerError::Config(e.to_string()))?;
        let auth = AuthState {
            credentials,
            authenticator: Arc::new(admission.authenticator().clone()),
            table: PermissionTable::standard(),
            rate_limit: None,
        };
        let mut server = GrpcServer::new(options.grpc.clone(), auth);
        server.add_service(grpc_service(&admission));
        let bound = server.bind().await?;
        let addr = bound.local_addr();
        let url = bound.url();
        let webhook = match &options.webhook {
            Some(webhook_options) => Some(
                WebhookAdapter::bind(admission.clone(), webhook_options)
                    .await
                    .map_err(|e| ServerError::Config(format!("webhook: {e}")))?,
            ),
            None => None,
        };
        let webhook_addr = webhook.as_ref().map(|w| w.local_addr());

        let lifecycle = Lifecycle::new(options.admission.drain_deadline);
        let sweep_interval = options.admission.sweep_interval;
        let follower = admission.clone();
        lifecycle.spawn("event follower", |stop| async move {
            follower.follow(bus, snapshot, stop).await;
        });
        let sweeper = admission.clone();
        lifecycle.spawn("policy sweep", |stop| async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(sweep_interval) => sweeper.policies().refresh_stale(),
                }
            }
        });
        if let Some(webhook) = webhook {
            lifecycle.spawn("webhook", |stop| async move {
                if let Err(e) = webhook.serve(stop.cancelled_owned()).await {
                    tracing::error!(error = %e, "the webhook listener failed");
                }
            });
        }
        lifecycle.serve("admission gRPC", bound).await;
        tracing::info!(%url, webhook = ?webhook_addr, "admission serving");
        Ok(RunningAdmission {
            addr,
            url,
            webhook_addr,
            admission,
            lifecycle,
            publisher: Some(publisher),
            flush_timeout: options.admission.flush_timeout,
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
        self.lifecycle.token().cancel();
        self.wait().await
    }

    /// Waits until the server ends (it failed, or it was stopped), then drains and flushes.
    /// Cancel-safe.
    pub async fn wait(&mut self) -> Result<DecisionEventStats, ServerError> {
        self.lifecycle.stopping().await;
        let stopped = self.lifecycle.stop().await;
        let Some(publisher) = self.publisher.take() else {
            return Ok(DecisionEventStats::default());
        };
        // After the drain no review can queue events any more: this flush is final.
        let stats = publisher.shutdown(self.flush_timeout).await;
        stopped.result().map_err(ServerError::Config)?;
        Ok(stats)
    }
}
