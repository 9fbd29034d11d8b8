//! A whole telemetry service in the background of the current runtime: the gRPC service
//! (its own listener when distributed, or another server's router when embedded), the bus
//! work subscription and the batched writer, on one kit `Lifecycle`. `portcullis up`,
//! `portcullis serve telemetry` and the tests start it the same way.

use std::net::SocketAddr;
use std::sync::Arc;

use portcullis_bus::Bus;
use portcullis_kit::lifecycle::Lifecycle;
use portcullis_kit::revocations::{NoCaches, follow_with_revocations, stream_position};
use portcullis_kit::service::{RunningService, Served};
use portcullis_kit::upstream::ServiceChannel;
use portcullis_proto::telemetry::v1::telemetry_service_server::TelemetryServiceServer;
use portcullis_server::CallLimit;
use portcullis_server::rate_limit::TenantRateLimiter;
use portcullis_server::{AuthState, Authenticator, Credentials, PermissionTable, ServerConfig, ServerError};

use crate::TelemetryOptions;
use crate::correlate::{Correlator, CorrelatorConfig};
use crate::grpc::Telemetry;
use crate::ingest::Ingestor;
use crate::pipeline::{BatchOptions, Pipeline};
use crate::policies::PolicyStore;
use crate::store::TelemetryStore;

/// `TelemetryService` over `telemetry`, as this server adds it (also to another server's
/// router: `up` serves it on its one address).
pub fn grpc_service(telemetry: &Telemetry) -> TelemetryServiceServer<Telemetry> {
    TelemetryServiceServer::new(telemetry.clone())
}

/// How to run a telemetry service.
#[derive(Debug, Clone)]
pub struct TelemetryServeOptions {
    /// Its own gRPC listener (distributed); `None` when another server's router carries
    /// [`grpc_service`] (embedded).
    pub grpc: Option<ServerConfig>,
    /// The `[telemetry]` settings.
    pub telemetry: TelemetryOptions,
}

/// A running service. Dropping it without [`RunningTelemetry::stop`] stops it without
/// waiting for the drain.
#[derive(Debug)]
pub struct RunningTelemetry {
    telemetry: Telemetry,
    service: RunningService,
}

impl RunningTelemetry {
    /// Starts the service over `store` (its own tables), reading policies through
    /// `policies` and pods through `continuous` (when given), on `bus` (the ingest
    /// subscription, mitigations) and, when configured, its gRPC listener (port 0 picks a
    /// free port); `authenticator` resolves tenant keys on the listener.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        store: Arc<dyn TelemetryStore>,
        policies: PolicyStore,
        continuous: Option<ServiceChannel>,
        bus: Bus,
        credentials: Credentials,
        authenticator: Arc<dyn Authenticator>,
        options: TelemetryServeOptions,
    ) -> Result<RunningTelemetry, ServerError> {
        let settings = options.telemetry;
        settings
            .rate_limit
            .validate()
            .map_err(|e| ServerError::Config(format!("telemetry.rate_limit: {e}")))?;
        // Recorded before any key can be cached: the follower starts right after it.
        let snapshot = stream_position(&bus).await;
        let mut service = RunningService::new(Lifecycle::new(settings.drain_deadline));
        let lifecycle = service.lifecycle();
        let (follow_bus, follow_options, forgetting) = (bus.clone(), settings.follower, authenticator.clone());
        lifecycle.spawn("key revocation follower", move |stop| async move {
            follow_with_revocations(follow_bus, &[], snapshot, &follow_options, forgetting, NoCaches, stop).await;
        });
        let correlator = Correlator::with_shipped_rules(CorrelatorConfig::default())
            .map_err(|e| ServerError::Config(format!("the shipped correlation rules: {e}")))?;
        // The writer ends after the drain (its own token), so that the writes of the work
        // drained are still stored.
        let writer_stop = tokio_util::sync::CancellationToken::new();
        let (pipeline, writer) = Pipeline::start(
            store.clone(),
            correlator,
            BatchOptions {
                batch_size: settings.batch_size,
                flush_interval: settings.flush_interval,
                queue: settings.write_queue,
                writers: settings.writers,
            },
            writer_stop.clone(),
        )
        .await
        .map_err(|e| ServerError::Config(format!("starting the telemetry writer: {e}")))?;
        lifecycle.spawn("telemetry writer", |_| writer);
        let ingestor = Ingestor::new(
            pipeline,
            policies,
            bus.clone(),
            continuous,
            settings.pod_lookup_deadline,
            settings.retention,
        );
        let telemetry = Telemetry::new(ingestor.clone(), store, settings.retention);
        // Subscribed before `start` returns, so that an event right after is handled.
        let work = crate::subscription::subscribe(
            ingestor,
            &bus,
            &settings.durable,
            settings.max_in_flight,
            settings.max_ack_pending,
            lifecycle.token().clone(),
        )
        .await
        .map_err(|e| ServerError::Config(e.to_string()))?;
        lifecycle.spawn_fallible("telemetry ingest subscription", move |_| async move {
            let result = work.await;
            writer_stop.cancel();
            result
        });
        if let Some(config) = options.grpc {
            let auth = AuthState {
                credentials,
                authenticator,
                table: PermissionTable::standard(),
                rate_limit: Some(CallLimit {
                    limiter: Arc::new(TenantRateLimiter::new(settings.rate_limit.clone())),
                    package_prefix: portcullis_server::permissions::TELEMETRY_PACKAGE,
                }),
            };
            service
                .listen("telemetry gRPC", config, auth, |server| {
                    server.add_service(grpc_service(&telemetry));
                })
                .await?;
        }
        tracing::info!(url = ?service.url(), "telemetry service running");
        Ok(RunningTelemetry { telemetry, service })
    }

    /// `http://ADDR` or `https://ADDR` of its own listener, when it has one.
    pub fn url(&self) -> Option<&str> {
        self.service.url()
    }

    /// Its own listener's address, when it has one.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.service.local_addr()
    }

    /// The service.
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// Stops: no new calls, work in flight finished, queued writes stored (within the
    /// drain deadline).
    pub async fn stop(&self) -> Result<(), ServerError> {
        self.service.stop().await
    }

    /// Waits until the service ends (it failed, or it was stopped), then drains.
    pub async fn wait(&self) -> Result<(), ServerError> {
        self.service.wait().await
    }
}

impl Served for RunningTelemetry {
    fn running(&self) -> &RunningService {
        &self.service
    }

    /// Events this replica stored (its share of the work consumer's and of the sensors'
    /// streams), written again, and counted without being stored.
    fn work_done(&self) -> Vec<(&'static str, u64)> {
        let ingestor = self.telemetry.ingestor();
        let (written, ingest) = (ingestor.pipeline().counters(), ingestor.counters());
        vec![
            ("stored", written.stored()),
            ("duplicates", written.duplicates()),
            ("batches", written.batches()),
            ("failed_batches", written.failed_batches()),
            ("not_stored", ingest.not_stored()),
            ("refused", ingest.refused()),
            ("unreadable", ingest.unreadable()),
            ("alerts_opened", written.alerts_opened()),
        ]
    }
}
