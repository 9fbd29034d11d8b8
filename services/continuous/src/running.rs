//! A whole continuous service in the background of the current runtime: the gRPC service
//! (its own listener when distributed, or another server's router when embedded), the
//! trigger work subscription, the sweep, the timers and the event publisher, on one kit
//! `Lifecycle`. `portcullis up`, `portcullis serve continuous` and the tests start it the
//! same way.

use std::net::SocketAddr;
use std::sync::Arc;

use portcullis_bus::Bus;
use portcullis_kit::lifecycle::Lifecycle;
use portcullis_kit::service::{RunningService, Served};
use portcullis_proto::continuous::v1::continuous_service_server::ContinuousServiceServer;
use portcullis_server::CallLimit;
use portcullis_server::rate_limit::TenantRateLimiter;
use portcullis_server::{AuthState, Authenticator, Credentials, PermissionTable, ServerConfig, ServerError};

use crate::ContinuousOptions;
use crate::commands::CommandHub;
use crate::evaluate::Evaluator;
use crate::events::ContinuousEvents;
use crate::grpc::Continuous;
use crate::policies::PolicyStore;
use crate::store::ContinuousStore;
use crate::triggers::Triggers;

/// `ContinuousService` over `continuous`, as this server adds it (also to another server's
/// router: `up` serves it on its one address).
pub fn grpc_service(continuous: &Continuous) -> ContinuousServiceServer<Continuous> {
    ContinuousServiceServer::new(continuous.clone())
}

/// How to run a continuous service.
#[derive(Debug, Clone)]
pub struct ContinuousServeOptions {
    /// Its own gRPC listener (distributed); `None` when another server's router carries
    /// [`grpc_service`] (embedded).
    pub grpc: Option<ServerConfig>,
    /// The `[continuous]` settings.
    pub continuous: ContinuousOptions,
}

/// A running service. Dropping it without [`RunningContinuous::stop`] stops it without
/// waiting for the drain.
#[derive(Debug)]
pub struct RunningContinuous {
    continuous: Continuous,
    triggers: Triggers,
    service: RunningService,
}

impl RunningContinuous {
    /// Starts the service over `store` (its own tables), reading policies and scan
    /// summaries through `policies`, on `bus` (the trigger subscription, events, command
    /// notifications) and, when configured, its gRPC listener (port 0 picks a free port);
    /// `authenticator` resolves tenant keys on the listener.
    pub async fn start(
        store: Arc<dyn ContinuousStore>,
        policies: PolicyStore,
        bus: Bus,
        credentials: Credentials,
        authenticator: Arc<dyn Authenticator>,
        options: ContinuousServeOptions,
    ) -> Result<RunningContinuous, ServerError> {
        let settings = options.continuous;
        settings
            .rate_limit
            .validate()
            .map_err(|e| ServerError::Config(format!("continuous.rate_limit: {e}")))?;
        // Recorded before any key can be cached: the follower starts right after it.
        let snapshot = portcullis_kit::revocations::stream_position(&bus).await;
        let mut service = RunningService::new(Lifecycle::new(settings.drain_deadline));
        let lifecycle = service.lifecycle();
        let (follow_bus, follow_options, forgetting, scans) =
            (bus.clone(), settings.follower, authenticator.clone(), policies.clone());
        lifecycle.spawn("event follower", move |stop| async move {
            crate::follow::follow_events(follow_bus, snapshot, &follow_options, forgetting, scans, stop).await;
        });
        // The publisher ends after the drain (its own token), so that the events of the
        // work drained are still published.
        let publisher_stop = tokio_util::sync::CancellationToken::new();
        let (events, publisher) = ContinuousEvents::start(bus.clone(), settings.event_queue, publisher_stop.clone());
        lifecycle.spawn("continuous event publisher", |_| publisher);
        let evaluator = Evaluator::new(store, policies, events, bus.clone());
        let hub = CommandHub::new(evaluator.clone(), settings.command_poll);
        let continuous = Continuous::new(
            evaluator.clone(),
            hub.clone(),
            settings.stream_queue,
            lifecycle.token().clone(),
        );
        let triggers = Triggers::new(evaluator, hub);
        // Subscribed before `start` returns, so that an event right after is handled.
        let work = triggers
            .subscribe(
                &bus,
                &settings.durable,
                settings.max_in_flight,
                lifecycle.token().clone(),
            )
            .await
            .map_err(|e| ServerError::Config(e.to_string()))?;
        lifecycle.spawn_fallible("continuous triggers", move |_| async move {
            let result = work.await;
            publisher_stop.cancel();
            result
        });
        let (sweeper, interval) = (triggers.clone(), settings.sweep_interval);
        lifecycle.spawn("continuous sweep", move |stop| async move {
            sweeper.sweep(interval, stop).await
        });
        let timers = triggers.clone();
        lifecycle.spawn(
            "continuous timers",
            move |stop| async move { timers.run_timers(stop).await },
        );
        if let Some(config) = options.grpc {
            let auth = AuthState {
                credentials,
                authenticator,
                table: PermissionTable::standard(),
                rate_limit: Some(CallLimit {
                    limiter: Arc::new(TenantRateLimiter::new(settings.rate_limit.clone())),
                    package_prefix: portcullis_server::permissions::CONTINUOUS_PACKAGE,
                }),
            };
            service
                .listen("continuous gRPC", config, auth, |server| {
                    server.add_service(grpc_service(&continuous));
                })
                .await?;
        }
        tracing::info!(url = ?service.url(), "continuous service running");
        Ok(RunningContinuous {
            continuous,
            triggers,
            service,
        })
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
    pub fn continuous(&self) -> &Continuous {
        &self.continuous
    }

    /// The triggers (whole-cluster re-evaluation, timers).
    pub fn triggers(&self) -> &Triggers {
        &self.triggers
    }

    /// Stops: no new calls, streams ended, work in flight finished, events queued published
    /// (within the drain deadline).
    pub async fn stop(&self) -> Result<(), ServerError> {
        self.service.stop().await
    }

    /// Waits until the service ends (it failed, or it was stopped), then drains.
    pub async fn wait(&self) -> Result<(), ServerError> {
        self.service.wait().await
    }
}

impl Served for RunningContinuous {
    fn running(&self) -> &RunningService {
        &self.service
    }

    /// Whole clusters this replica re-evaluated, the pods its re-evaluations judged, and
    /// the clusters its sweeps claimed.
    fn work_done(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("clusters_reevaluated", self.triggers.clusters_reevaluated()),
            ("pods_judged", self.triggers.pods_judged()),
            ("clusters_swept", self.triggers.clusters_swept()),
        ]
    }
}
