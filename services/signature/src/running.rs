//! A whole signature service in the background of the current runtime: the verifier, the
//! NATS request/reply server, the event follower, the verdict publisher and (distributed)
//! its own gRPC server, on one kit `Lifecycle`. `portcullis up`, `portcullis serve
//! signature` and the tests start it the same way; embedded, [`grpc_service`] joins the
//! one router instead of a listener of its own.

use std::net::SocketAddr;
use std::sync::Arc;

use portcullis_bus::Bus;
use portcullis_kit::lifecycle::Lifecycle;
use portcullis_kit::service::{RunningService, Served};
use portcullis_proto::signature::v1::signature_service_server::SignatureServiceServer;
use portcullis_server::{AuthState, Authenticator, Credentials, PermissionTable, ServerConfig, ServerError};

use crate::events::VerdictEvents;
use crate::grpc::Signature;
use crate::store::AttestorStore;
use crate::{SignatureOptions, Verifier, rpc};

/// `SignatureService` over `signature`, as this server adds it (also to another server's
/// router: `up` serves it on its one address).
pub fn grpc_service(signature: &Signature) -> SignatureServiceServer<Signature> {
    SignatureServiceServer::new(signature.clone())
}

/// How to run a signature service.
#[derive(Debug, Clone)]
pub struct SignatureServeOptions {
    /// Its own gRPC listener (distributed); `None` when another server's router carries
    /// [`grpc_service`] (embedded).
    pub grpc: Option<ServerConfig>,
    /// Caches, registry client, request/reply server.
    pub signature: SignatureOptions,
}

/// A running service. Dropping it without [`RunningSignature::stop`] stops it without
/// waiting for the drain.
#[derive(Debug)]
pub struct RunningSignature {
    signature: Signature,
    service: RunningService,
}

impl RunningSignature {
    /// Starts following `bus`, serves `pc.rpc.signature.verify` and
    /// `pc.rpc.signature.resolve` and, when configured, its gRPC listener (port 0 picks a free port). `store` gives attestors and registry
    /// credentials; `authenticator` resolves tenant keys on the listener.
    pub async fn start(
        store: Arc<dyn AttestorStore>,
        bus: Bus,
        credentials: Credentials,
        authenticator: Arc<dyn Authenticator>,
        options: SignatureServeOptions,
    ) -> Result<RunningSignature, ServerError> {
        // Recorded before the caches can hold anything: the follower starts right after it.
        let snapshot = portcullis_kit::revocations::stream_position(&bus).await;
        let verifier =
            Verifier::new(store, options.signature.clone()).map_err(|e| ServerError::Config(e.to_string()))?;
        let mut service = RunningService::new(Lifecycle::new(options.signature.drain_deadline));
        let lifecycle = service.lifecycle();
        // The publisher ends after the drain (its own token), so that verdicts of the
        // requests drained are still published.
        let publisher_stop = tokio_util::sync::CancellationToken::new();
        let (events, publisher) =
            VerdictEvents::start(bus.clone(), options.signature.event_queue, publisher_stop.clone());
        let signature = Signature::new(verifier.clone(), events);
        lifecycle.spawn("verdict publisher", |_| publisher);
        let follow_bus = bus.clone();
        let follower = verifier.clone();
        let follow_options = options.signature.follower;
        let forgetting = authenticator.clone();
        lifecycle.spawn("event follower", |stop| async move {
            follower
                .follow(follow_bus, snapshot, &follow_options, forgetting, stop)
                .await;
        });
        let (rpc_signature, rpc_options) = (signature.clone(), options.signature.rpc.clone());
        // Subscribed before `start` returns, so that a request right after finds a server.
        let serve = |subject: &'static str| {
            let (bus, group) = (bus.clone(), rpc_options.queue_group.clone());
            async move {
                bus.serve(subject, &group)
                    .await
                    .map_err(|e| ServerError::Config(format!("serving {subject}: {e}")))
            }
        };
        let verify = serve(portcullis_domain::topic::SIGNATURE_VERIFY_SUBJECT).await?;
        let resolve = serve(portcullis_domain::topic::SIGNATURE_RESOLVE_SUBJECT).await?;
        lifecycle.spawn_fallible("signature requests", move |stop| async move {
            let result = rpc::serve_requests(rpc_signature, verify, resolve, rpc_options, stop).await;
            publisher_stop.cancel();
            result
        });
        if let Some(config) = options.grpc {
            let auth = AuthState {
                credentials,
                authenticator,
                table: PermissionTable::standard(),
                rate_limit: None,
            };
            service
                .listen("signature gRPC", config, auth, |server| {
                    server.add_service(grpc_service(&signature));
                })
                .await?;
        }
        tracing::info!(url = ?service.url(), "signature service running");
        Ok(RunningSignature { signature, service })
    }

    /// `http://ADDR` or `https://ADDR` of its own listener, when it has one.
    pub fn url(&self) -> Option<&str> {
        self.service.url()
    }

    /// Its own listener's address, when it has one.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.service.local_addr()
    }

    /// The service (verifier, events).
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// Stops: no new requests, those in flight answered, verdicts queued published (within
    /// the drain deadline).
    pub async fn stop(&self) -> Result<(), ServerError> {
        self.service.stop().await
    }

    /// Waits until the service ends (it failed, or it was stopped), then drains.
    pub async fn wait(&self) -> Result<(), ServerError> {
        self.service.wait().await
    }
}

impl Served for RunningSignature {
    fn running(&self) -> &RunningService {
        &self.service
    }

    /// Verifications and digest resolutions this replica answered (gRPC and NATS).
    fn work_done(&self) -> Vec<(&'static str, u64)> {
        let answered = self.signature.answered();
        vec![
            ("verifications", answered.verifications()),
            ("verify_errors", answered.verify_errors()),
            ("resolutions", answered.resolutions()),
            ("resolve_errors", answered.resolve_errors()),
            ("registry_rounds", self.signature.verifier().registry_rounds()),
        ]
    }
}
