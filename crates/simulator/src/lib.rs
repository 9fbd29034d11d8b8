//! The cluster simulator: N connectors against a running Portcullis (embedded `portcullis up`
//! or distributed services), the demo, the load tool and the driver of the fault suite.
//!
//! [`Simulation::start`] sets up with the tenant's admin key (a runtime ruleset and a policy
//! that blocks, logs and mitigates, N clusters named `<prefix>-0..`, a connector key each;
//! re-running re-applies the same documents and rotates the keys), syncs each cluster's
//! inventory (M running pods made from the engine benchmark's corpus) to the continuous
//! service, then starts the connectors: admission reviews at a total rate (open loop, a
//! bounded number in flight; the corpus's reviews and, one in ten, an exec/attach CONNECT),
//! Falco-shaped runtime events to telemetry (some matching the ruleset's terminate and
//! isolate rules, so commands come), and a command stream per cluster whose every command
//! is acked. [`Simulation::report`] reads the counters while it runs; [`Simulation::stop`]
//! stops sending, waits (bounded) for the answers and the commands still coming, and returns
//! the final [`Report`].
//!
//! Several replicas of admission, continuous and telemetry are spread over (cluster `i`
//! starts at replica `i`); a review or event batch that breaks is tried on the next replica,
//! and a command stream that breaks is reopened on the next one with a growing pause.
//!
//! Runtime events carry their cluster and sequence number (`sim.cluster`, `sim.seq` in
//! `output_fields`; see `workload`): cluster `c` sent sequences
//! `0..report.clusters[c].events_sent`, and a telemetry search `cluster:<id> type:runtime`
//! finds each of them once (retries are the same bytes, so the same content-derived id).

mod connector;
mod net;
pub mod protocol;
mod setup;
mod stats;
mod workload;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::connector::{Connector, Shared};
use crate::workload::ClusterLoad;

pub use crate::setup::{RUNTIME_RULES, cluster_name, policy_document, policy_name, ruleset_document, ruleset_name};
pub use crate::stats::{ClusterReport, Report};
pub use crate::workload::event_rule;

/// Where the services are. In embedded mode (`portcullis up`) one address serves all.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// The policy store (setup with the admin key).
    pub policy_store: String,
    /// Admission replicas.
    pub admission: Vec<String>,
    /// Continuous replicas.
    pub continuous: Vec<String>,
    /// Telemetry replicas.
    pub telemetry: Vec<String>,
    /// CA certificate (PEM) to trust for `https://` endpoints, besides the system's roots.
    pub ca_cert: Option<PathBuf>,
}

impl Endpoints {
    /// Every service at `url` (embedded mode).
    pub fn single(url: impl Into<String>) -> Endpoints {
        let url = url.into();
        Endpoints {
            policy_store: url.clone(),
            admission: vec![url.clone()],
            continuous: vec![url.clone()],
            telemetry: vec![url],
            ca_cert: None,
        }
    }
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimulationConfig {
    /// Where the services are.
    pub endpoints: Endpoints,
    /// An admin API key of the tenant.
    pub admin_key: String,
    /// Clusters (connectors).
    pub clusters: usize,
    /// Running pods per cluster.
    pub pods: usize,
    /// Admission reviews per second, all clusters together.
    pub rate: u32,
    /// Runtime events per second, all clusters together.
    pub runtime_rate: u32,
    /// How long [`run`] sends.
    pub duration: Duration,
    /// Cluster names are `<prefix>-0`, `<prefix>-1`, ...
    pub cluster_prefix: String,
    /// Reviews waiting for an answer at most; a review due beyond it is not sent (counted).
    pub in_flight: usize,
    /// Deadline of every call (a stream: of every step).
    pub call_timeout: Duration,
    /// Attempts of one review (each on the next admission replica).
    pub review_attempts: u32,
    /// After the senders stop: how long answers still in flight are waited for, and the
    /// longest wait for commands still coming.
    pub drain: Duration,
    /// Commands are waited for after the stop until none came for this long.
    pub command_quiet: Duration,
    /// Allows plain-text `http://` endpoints off this host (keys in the clear).
    pub insecure: bool,
}

impl SimulationConfig {
    /// 2 clusters of 50 pods, 200 reviews/s, 50 events/s, for 10 s, clusters `sim-0..`.
    pub fn new(endpoints: Endpoints, admin_key: impl Into<String>) -> Self {
        SimulationConfig {
            endpoints,
            admin_key: admin_key.into(),
            clusters: 2,
            pods: 50,
            rate: 200,
            runtime_rate: 50,
            duration: Duration::from_secs(10),
            cluster_prefix: "sim".to_owned(),
            in_flight: 256,
            call_timeout: Duration::from_secs(10),
            review_attempts: 4,
            drain: Duration::from_secs(10),
            command_quiet: Duration::from_millis(1500),
            insecure: false,
        }
    }
}

/// Why a simulation could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    /// The configuration cannot work (an endpoint URL, a key, a CA file).
    #[error("{0}")]
    Config(String),
    /// Setup failed (policy, ruleset, clusters, inventory).
    #[error("setup: {0}")]
    Setup(String),
}

/// A running simulation.
pub struct Simulation {
    shared: Arc<Shared>,
    /// Stops the senders (reviews, events).
    stop_sending: CancellationToken,
    /// Stops the command watchers.
    stop_watching: CancellationToken,
    senders: Vec<JoinHandle<()>>,
    watchers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Simulation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulation")
            .field("clusters", &self.shared.connectors.len())
            .finish_non_exhaustive()
    }
}

impl Simulation {
    /// Sets up (policy, clusters, keys, inventory) and starts the connectors.
    pub async fn start(config: SimulationConfig) -> Result<Simulation, SimulateError> {
        if config.clusters == 0 {
            return Err(SimulateError::Config("--clusters must be at least 1".into()));
        }
        let endpoints = &config.endpoints;
        let ca = endpoints.ca_cert.as_deref();
        let timeout = config.call_timeout;
        let store = net::channel(&endpoints.policy_store, ca, config.insecure, timeout)?;
        let admin = net::credential(&config.admin_key, "the admin key", Some(timeout))?;
        let admission = net::Replicas::new("admission", &endpoints.admission, ca, config.insecure, timeout)?;
        let continuous = net::Replicas::new("continuous", &endpoints.continuous, ca, config.insecure, timeout)?;
        let telemetry = net::Replicas::new("telemetry", &endpoints.telemetry, ca, config.insecure, timeout)?;

        let registered = setup::prepare(
            &config,
            tonic::service::interceptor::InterceptedService::new(store, admin),
        )
        .await?;
        let connectors: Vec<Connector> = registered
            .into_iter()
            .enumerate()
            .map(|(index, r)| Connector {
                index,
                name: r.name,
                key: r.key,
                load: ClusterLoad::new(index, config.pods),
                id: r.id,
            })
            .collect();
        let names: Vec<(String, String)> = connectors.iter().map(|c| (c.name.clone(), c.id.clone())).collect();
        let connects = connectors
            .iter()
            .map(|c| {
                (0..64u64)
                    .filter_map(|k| {
                        c.load.pod(k).map(|pod| {
                            bytes::Bytes::from(portcullis_corpus::connect::review(k, &pod.namespace, &pod.name))
                        })
                    })
                    .collect()
            })
            .collect();
        let shared = Arc::new(Shared {
            stats: stats::Stats::new(&names)?,
            config,
            connectors,
            admission,
            continuous,
            telemetry,
            reviews: workload::review_pool(),
            connects,
            last_command: std::sync::Mutex::new(Instant::now()),
        });

        // Command streams first, so that the commands the inventory brings are received.
        let stop_watching = CancellationToken::new();
        let watchers = (0..shared.connectors.len())
            .map(|c| {
                tokio::spawn(connector::watch_commands(
                    shared.clone(),
                    c,
                    stop_watching.child_token(),
                ))
            })
            .collect();
        let syncs: Vec<_> = (0..shared.connectors.len())
            .map(|c| tokio::spawn(connector::sync_inventory(shared.clone(), c)))
            .collect();
        let mut failed = None;
        for sync in syncs {
            let outcome = sync
                .await
                .unwrap_or_else(|e| Err(SimulateError::Setup(format!("inventory task: {e}"))));
            if let Err(e) = outcome {
                failed.get_or_insert(e);
            }
        }
        if let Some(e) = failed {
            stop_watching.cancel();
            return Err(e);
        }
        if let Ok(mut started) = shared.stats.started.lock() {
            *started = Instant::now();
        }
        let stop_sending = CancellationToken::new();
        let mut senders = vec![tokio::spawn(connector::send_reviews(
            shared.clone(),
            stop_sending.child_token(),
        ))];
        senders.extend(
            (0..shared.connectors.len())
                .map(|c| tokio::spawn(connector::send_events(shared.clone(), c, stop_sending.child_token()))),
        );
        Ok(Simulation {
            shared,
            stop_sending,
            stop_watching,
            senders,
            watchers,
        })
    }

    /// Counters so far (cheap; callable while running).
    pub fn report(&self) -> Report {
        self.shared.stats.report()
    }

    /// The simulated clusters: `(name, id)` each, in order.
    pub fn clusters(&self) -> Vec<(String, String)> {
        self.shared
            .connectors
            .iter()
            .map(|c| (c.name.clone(), c.id.clone()))
            .collect()
    }

    /// Ids of the commands acked so far, per cluster in order.
    pub fn acked_command_ids(&self) -> Vec<Vec<String>> {
        self.shared
            .stats
            .clusters
            .iter()
            .map(|(_, _, c)| {
                c.commands
                    .lock()
                    .map(|ids| {
                        let mut ids: Vec<String> = ids.acked.iter().cloned().collect();
                        ids.sort();
                        ids
                    })
                    .unwrap_or_default()
            })
            .collect()
    }

    /// Stops sending, waits (bounded) for in-flight answers and command acks, returns the
    /// final report.
    pub async fn stop(self) -> Report {
        self.stop_sending.cancel();
        if let Ok(mut stopped) = self.shared.stats.stopped.lock() {
            *stopped = Some(Instant::now());
        }
        let config = &self.shared.config;
        // Senders wait for their own answers, each bounded by the drain time.
        let bound = config.drain + config.call_timeout;
        for sender in self.senders {
            if tokio::time::timeout(bound, sender).await.is_err() {
                self.shared.stats.error("a sender did not finish in time".to_owned());
            }
        }
        // Commands the last events and reviews cause still come: wait until none came for a
        // while (at most the drain time).
        let deadline = Instant::now() + config.drain;
        loop {
            let quiet = self
                .shared
                .last_command
                .lock()
                .map(|last| last.elapsed() >= config.command_quiet)
                .unwrap_or(true);
            if quiet || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.stop_watching.cancel();
        for watcher in self.watchers {
            let _ = tokio::time::timeout(config.call_timeout, watcher).await;
        }
        self.shared.stats.report()
    }
}

/// The telemetry search that finds exactly the runtime events the simulator sent for the
/// cluster of id `cluster_id` (as many as its [`ClusterReport::events_sent`]; the simulator
/// sends no other runtime events).
pub fn events_query(cluster_id: &str) -> String {
    format!("cluster:{cluster_id} type:runtime")
}

/// Runs for `config.duration` then stops (what the CLI calls).
pub async fn run(config: SimulationConfig) -> Result<Report, SimulateError> {
    let duration = config.duration;
    let simulation = Simulation::start(config).await?;
    tokio::time::sleep(duration).await;
    Ok(simulation.stop().await)
}
