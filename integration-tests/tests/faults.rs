//! Faults, end to end, in distributed mode as deployed: every service its own process of the
//! `portcullis` binary (policy store ×1, admission ×2, signature ×2, continuous ×2,
//! telemetry ×1) on a private PostgreSQL and a private nats-server
//! ([`ProcessCluster`]), connectors and sensors played against it, and one fault at a time:
//!
//! - an admission replica killed under load: no review fails (a review whose replica dies
//!   under it is retried once on the other; that retry is counted, not failed);
//! - nats-server restarted: no runtime event and no admission decision event is lost;
//! - PostgreSQL restarted: reviews, policy changes, inventory and ingest work again within a
//!   bound, with no service restarted;
//! - telemetry killed mid-stream and restarted: a sensor resends its unanswered stream, and
//!   the stored events per cluster equal the accepted ones exactly (nothing lost, nothing
//!   doubled);
//! - a continuous replica killed while it holds the connectors' command streams: they
//!   reconnect to the other and every command issued is acked.
//!
//! Through every fault the cluster simulator (`portcullis-simulator`, what `portcullis
//! simulate` runs) plays two more clusters' connectors against all replicas (reviews, exec
//! attempts, inventory, runtime events, command streams), with its own failover; its report
//! must show no failed review, every command it received acked and every runtime event it got
//! accepted stored once. The suite's own connectors and sensors beside it make the exact
//! checks (which replica is hit when, which command ids, which events).
//!
//! The scenarios run in sequence on one set of processes (starting eight processes is the
//! expensive part). Each prints what it measured on the process's standard error directly
//! (`figure!`), which the test harness does not capture, so CI's log shows the figures.
//! A second test checks the harness's cleanup: a test that panics leaves no process, no
//! listener and no folder behind.
//!
//! The `portcullis` binary must be built (`cargo test --workspace` does; see
//! [`process_cluster`](portcullis_integration_tests::process_cluster)).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

/// Prints a line of what the suite measured to the process's standard error itself: the
/// harness captures `println!`/`eprintln!` of a passing test, and the issue wants CI to show
/// these figures.
macro_rules! figure {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
use std::time::{Duration, Instant};

use portcullis_integration_tests::admission::{container, create_pod, pod, pod_spec};
use portcullis_integration_tests::process_cluster::{ProcessCluster, Replicas, Service};
use portcullis_integration_tests::store::{Api, by_id, by_name};
use portcullis_policy_store::testing::authed;
use portcullis_proto::admission::v1 as pa;
use portcullis_proto::admission::v1::admission_service_client::AdmissionServiceClient;
use portcullis_proto::common::v1 as pc;
use portcullis_proto::continuous::v1 as pv;
use portcullis_proto::continuous::v1::continuous_service_client::ContinuousServiceClient;
use portcullis_proto::telemetry::v1 as pt;
use portcullis_proto::telemetry::v1::telemetry_service_client::TelemetryServiceClient;
use portcullis_simulator::{Endpoints, Report, Simulation, SimulationConfig};
use portcullis_test_kit::eventually;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// Every call of the suite's clients has this deadline.
const CALL: Duration = Duration::from_secs(5);

/// How long a service may take to work again after PostgreSQL or NATS is back.
const RECOVERY: Duration = Duration::from_secs(60);

/// How long stored events may take to become searchable.
const SEARCHABLE: Duration = Duration::from_secs(30);

/// The policy of every cluster: host-network pods are blocked, everything is recorded.
fn policy_document(block_privileged: bool) -> String {
    let mut rules = vec![json!({"type": "podSecurityContext", "action": "block",
        "statement": {"properties": [{"key": "hostNetwork", "value": "true"}]}})];
    if block_privileged {
        rules.push(json!({"type": "containerSecurityContext", "action": "block",
            "statement": {"properties": [{"key": "privileged", "value": "true"}]}}));
    }
    json!({"name": "faults", "xdrEnabled": true, "default": {"rules": rules}}).to_string()
}

fn channel(url: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect_timeout(Duration::from_secs(1))
        .timeout(CALL)
        .connect_lazy()
}

/// A registered cluster: its id and connector key.
#[derive(Debug, Clone)]
struct Cluster {
    name: String,
    id: String,
    key: String,
}

async fn register(admin: &mut Api, name: &str) -> Cluster {
    let registered = admin.register_cluster(name, by_name("faults")).await.unwrap();
    Cluster {
        name: name.to_owned(),
        id: registered.cluster.unwrap().id,
        key: registered.connector_key,
    }
}

// ---------------------------------------------------------------------------------------
// Reviews

/// What a review load saw.
#[derive(Debug, Default)]
struct ReviewTally {
    sent: u64,
    allowed: u64,
    denied: u64,
    /// Reviews whose first replica failed under them, answered by the other.
    retried: u64,
    /// Reviews no replica answered.
    failed: u64,
    /// Answers that contradict the policy.
    wrong: u64,
    latencies_us: Vec<u64>,
    errors: Vec<String>,
}

impl ReviewTally {
    fn merge(&mut self, other: ReviewTally) {
        self.sent += other.sent;
        self.allowed += other.allowed;
        self.denied += other.denied;
        self.retried += other.retried;
        self.failed += other.failed;
        self.wrong += other.wrong;
        self.latencies_us.extend(other.latencies_us);
        self.errors.extend(other.errors.into_iter().take(10));
    }

    fn percentile(&self, p: f64) -> u64 {
        let mut sorted = self.latencies_us.clone();
        sorted.sort_unstable();
        if sorted.is_empty() {
            return 0;
        }
        let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    fn summary(&self) -> String {
        format!(
            "reviews sent {} (allowed {}, denied {}), retried {}, failed {}, wrong {}, p50 {} µs, p99 {} µs",
            self.sent,
            self.allowed,
            self.denied,
            self.retried,
            self.failed,
            self.wrong,
            self.percentile(0.50),
            self.percentile(0.99)
        )
    }
}

/// A connector's reviews: alternately a host-network pod (denied) and a plain one (allowed).
fn pod_review(n: u64, block: bool) -> Vec<u8> {
    let object = pod(
        &format!("pod-{n}"),
        "shop",
        pod_spec(block, vec![container("app", "nginx:1.27", false)]),
    );
    create_pod(object).to_string().into_bytes()
}

/// One review, tried on `first` and, when that replica fails to answer, once on the next.
async fn review_with_failover(
    clients: &mut [AdmissionServiceClient<Channel>],
    first: usize,
    key: &str,
    body: &[u8],
    tally: &mut ReviewTally,
) -> Option<pa::Decision> {
    let n = clients.len();
    for attempt in 0..n.min(2) {
        let client = &mut clients[(first + attempt) % n];
        let request = authed(
            key,
            pa::ReviewRequest {
                cluster: None,
                admission_review_json: body.to_vec().into(),
                request_id: String::new(),
            },
        );
        match client.review(request).await {
            Ok(answer) => {
                if attempt > 0 {
                    tally.retried += 1;
                }
                return answer.into_inner().decision;
            }
            // The next replica gets it.
            Err(_) if attempt + 1 < n.min(2) => {}
            Err(status) => {
                tally.failed += 1;
                if tally.errors.len() < 10 {
                    tally.errors.push(format!("{:?}: {}", status.code(), status.message()));
                }
            }
        }
    }
    None
}

/// Reviews from `workers` connectors of `cluster` spread over `urls` until `stop`; each
/// worker waits `pause` between reviews (the suite shares 2 cores with the services).
async fn review_load(
    urls: Vec<String>,
    cluster: Cluster,
    workers: usize,
    pause: Duration,
    stop: CancellationToken,
) -> ReviewTally {
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let mut clients: Vec<_> = urls.iter().map(|u| AdmissionServiceClient::new(channel(u))).collect();
        let key = cluster.key.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut tally = ReviewTally::default();
            let mut n = worker as u64;
            while !stop.is_cancelled() {
                let block = n.is_multiple_of(2);
                let body = pod_review(n, block);
                let started = Instant::now();
                tally.sent += 1;
                let first = (n as usize) % clients.len();
                if let Some(decision) = review_with_failover(&mut clients, first, &key, &body, &mut tally).await {
                    tally.latencies_us.push(started.elapsed().as_micros() as u64);
                    if decision.allowed {
                        tally.allowed += 1;
                    } else {
                        tally.denied += 1;
                    }
                    if decision.allowed == block {
                        tally.wrong += 1;
                    }
                }
                n += workers as u64;
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = tokio::time::sleep(pause) => {}
                }
            }
            tally
        }));
    }
    let mut total = ReviewTally::default();
    for task in tasks {
        total.merge(task.await.unwrap());
    }
    total
}

/// `count` reviews of `cluster` on `url`, each of which must be answered as the policy says.
async fn reviews_answered(url: &str, cluster: &Cluster, count: u64) -> Result<(), String> {
    let mut client = AdmissionServiceClient::new(channel(url));
    for n in 0..count {
        let block = n.is_multiple_of(2);
        let decision = client
            .review(authed(
                &cluster.key,
                pa::ReviewRequest {
                    cluster: None,
                    admission_review_json: pod_review(n, block).into(),
                    request_id: String::new(),
                },
            ))
            .await
            .map_err(|s| format!("{url}: {:?} {}", s.code(), s.message()))?
            .into_inner()
            .decision
            .ok_or("no decision")?;
        if decision.allowed == block {
            return Err(format!("{url}: wrong decision {decision:?}"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Runtime events

/// A Falco event, unique by `tag` and `n` (the stored id derives from the raw event).
fn falco(tag: &str, n: u64) -> Vec<u8> {
    let at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    json!({
        "output": format!("{at}: Notice Unexpected outbound connection {tag}-{n} (k8s.ns=shop k8s.pod=web-{n})"),
        "priority": "Notice",
        "rule": "Unexpected outbound connection",
        "time": at,
        "source": "syscall",
        "output_fields": {"container.name": "app", "k8s.ns.name": "shop", "k8s.pod.name": format!("web-{n}")},
        "hostname": "node-1",
    })
    .to_string()
    .into_bytes()
}

/// One ingest stream of `batches`, each message sent `pause` after the last.
async fn ingest(
    url: &str,
    key: &str,
    batches: Vec<Vec<Vec<u8>>>,
    pause: Duration,
) -> Result<pt::IngestEventsResponse, tonic::Status> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        for batch in batches {
            let message = pt::IngestEventsRequest {
                cluster: None,
                events_json: batch.into_iter().map(Into::into).collect(),
            };
            if tx.send(message).await.is_err() {
                return;
            }
            tokio::time::sleep(pause).await;
        }
    });
    // A stream has no whole-call deadline of the channel's: its own, generous one.
    let mut client = TelemetryServiceClient::new(channel(url));
    let call = client.ingest_events(authed(key, ReceiverStream::new(rx)));
    match tokio::time::timeout(Duration::from_secs(60), call).await {
        Ok(answer) => answer.map(tonic::Response::into_inner),
        Err(_) => Err(tonic::Status::deadline_exceeded("ingest stream took over 60 s")),
    }
}

/// What a sensor sent and what came back.
#[derive(Debug, Default)]
struct SensorTally {
    /// Distinct events sent in streams that were answered.
    sent: u64,
    accepted: u64,
    rejected: u64,
    /// Streams that failed and were sent again (the same events).
    resent_streams: u64,
    errors: Vec<String>,
}

/// A sensor of `cluster`: `streams` streams of `batches` × `per_batch` new events, each
/// stream resent whole until answered (for at most `RECOVERY`).
async fn sensor(
    url: String,
    cluster: Cluster,
    tag: String,
    streams: u64,
    batches: u64,
    per_batch: u64,
    pause: Duration,
) -> SensorTally {
    let mut tally = SensorTally::default();
    let mut n = 0;
    for _ in 0..streams {
        let stream: Vec<Vec<Vec<u8>>> = (0..batches)
            .map(|_| {
                (0..per_batch)
                    .map(|_| {
                        n += 1;
                        falco(&tag, n)
                    })
                    .collect()
            })
            .collect();
        let give_up = Instant::now() + RECOVERY;
        loop {
            match ingest(&url, &cluster.key, stream.clone(), pause).await {
                Ok(answer) => {
                    tally.sent += batches * per_batch;
                    tally.accepted += answer.accepted;
                    tally.rejected += answer.rejected;
                    break;
                }
                Err(status) => {
                    assert!(
                        Instant::now() < give_up,
                        "{}: telemetry did not take a stream again within {RECOVERY:?}: {status:?}",
                        cluster.name
                    );
                    tally.resent_streams += 1;
                    if tally.errors.len() < 5 {
                        tally.errors.push(format!("{:?}: {}", status.code(), status.message()));
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
    tally
}

/// How many stored events of `source` the cluster has (exact below 10,000).
async fn stored_events(url: &str, admin_key: &str, cluster: &Cluster, source: &str) -> Result<u64, String> {
    let answer = TelemetryServiceClient::new(channel(url))
        .search_events(authed(
            admin_key,
            pt::SearchEventsRequest {
                query: format!("type:{source} cluster:{}", cluster.id),
                time_range: None,
                page: Some(pc::PageRequest {
                    page_size: 1,
                    page_token: String::new(),
                }),
            },
        ))
        .await
        .map_err(|s| format!("{:?} {}", s.code(), s.message()))?
        .into_inner();
    assert!(
        !answer.total_is_lower_bound,
        "the suite stays below search's exact count"
    );
    Ok(answer.total)
}

/// Waits until telemetry stores exactly `expected` events of `source` for `cluster`, and
/// checks that the count then stays there (nothing doubled by a late redelivery).
async fn assert_stored_exactly(url: &str, admin_key: &str, cluster: &Cluster, source: &str, expected: u64) {
    let seen = eventually(SEARCHABLE, async || {
        match stored_events(url, admin_key, cluster, source).await {
            Ok(n) if n >= expected => Ok(n),
            state => Err(format!("{}: {state:?} of {expected} {source} events", cluster.name)),
        }
    })
    .await;
    assert_eq!(seen, expected, "{}: {source} events stored (doubled?)", cluster.name);
    // Redeliveries come within the bus's ack wait; a second look after a pause.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again = stored_events(url, admin_key, cluster, source).await.unwrap();
    assert_eq!(
        again, expected,
        "{}: {source} events stored later (doubled?)",
        cluster.name
    );
}

// ---------------------------------------------------------------------------------------
// Connectors' command streams

/// The ids a connector has acked, shared with the test.
type Acked = Arc<Mutex<BTreeSet<String>>>;

/// A connector of `cluster`: holds a command stream on `urls[0]`, acks every command DONE,
/// and on a broken stream reconnects to the next URL (round robin), counting reconnects.
fn connector(
    urls: Vec<String>,
    cluster: Cluster,
    acked: Acked,
    reconnects: Arc<Mutex<u64>>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut next = 0;
        while !stop.is_cancelled() {
            let url = &urls[next % urls.len()];
            next += 1;
            let (tx, rx) = mpsc::channel(64);
            tx.send(pv::ConnectorMessage {
                message: Some(pv::connector_message::Message::Hello(pv::ConnectorHello {
                    cluster: None,
                    connector_version: "faults-suite".into(),
                })),
            })
            .await
            .unwrap();
            let mut client = ContinuousServiceClient::new(
                tonic::transport::Endpoint::from_shared(url.clone())
                    .unwrap()
                    .connect_timeout(Duration::from_secs(1))
                    .connect_lazy(),
            );
            let opened =
                tokio::time::timeout(CALL, client.commands(authed(&cluster.key, ReceiverStream::new(rx)))).await;
            let mut commands = match opened {
                Ok(Ok(answer)) => answer.into_inner(),
                _ => {
                    *reconnects.lock().unwrap() += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            loop {
                let message = tokio::select! {
                    () = stop.cancelled() => return,
                    m = commands.message() => m,
                };
                let Ok(Some(command)) = message else { break };
                let ack = pv::ConnectorMessage {
                    message: Some(pv::connector_message::Message::Ack(pv::CommandAck {
                        command_id: command.command_id.clone(),
                        state: pv::CommandState::Done as i32,
                        message: "done by the faults suite".into(),
                        completed_at: None,
                    })),
                };
                if tx.send(ack).await.is_err() {
                    break;
                }
                acked.lock().unwrap().insert(command.command_id);
            }
            *reconnects.lock().unwrap() += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

/// Issues a terminate command for a pod of its own (no command supersedes another).
async fn issue(url: &str, admin_key: &str, cluster: &Cluster, n: u64) -> Result<String, String> {
    let answer = ContinuousServiceClient::new(channel(url))
        .issue_command(authed(
            admin_key,
            pv::IssueCommandRequest {
                cluster: by_id(&cluster.id),
                pod: Some(pc::PodKey {
                    namespace: "shop".into(),
                    name: format!("victim-{n}"),
                    uid: String::new(),
                }),
                r#type: pv::CommandType::Terminate as i32,
                reason: "faults suite".into(),
            },
        ))
        .await
        .map_err(|s| format!("{:?} {}", s.code(), s.message()))?;
    Ok(answer.into_inner().command.unwrap().command_id)
}

/// The states of `cluster`'s commands, by id.
async fn command_states(url: &str, admin_key: &str, cluster: &Cluster) -> Result<BTreeMap<String, i32>, String> {
    let mut states = BTreeMap::new();
    let mut token = String::new();
    loop {
        let answer = ContinuousServiceClient::new(channel(url))
            .list_commands(authed(
                admin_key,
                pv::ListCommandsRequest {
                    page: Some(pc::PageRequest {
                        page_size: 1000,
                        page_token: token.clone(),
                    }),
                    cluster: by_id(&cluster.id),
                    ..Default::default()
                },
            ))
            .await
            .map_err(|s| format!("{:?} {}", s.code(), s.message()))?
            .into_inner();
        states.extend(answer.commands.into_iter().map(|c| (c.command_id, c.state)));
        token = answer.page.map(|p| p.next_page_token).unwrap_or_default();
        if token.is_empty() {
            return Ok(states);
        }
    }
}

/// One pod snapshot on `url`'s inventory stream, every update acked.
async fn sync_inventory(url: &str, cluster: &Cluster, pods: u64) -> Result<(), String> {
    let mut updates = vec![pv::inventory_update::Update::SnapshotStart(pv::SnapshotStart {
        expected_pods: pods,
    })];
    let objects: Vec<bytes::Bytes> = (0..pods)
        .map(|n| {
            let mut object: Value = pod(
                &format!("inv-{n}"),
                "shop",
                pod_spec(false, vec![container("app", "nginx:1.27", false)]),
            );
            object["metadata"]["uid"] = json!(format!("uid-inv-{n}"));
            object["status"] = json!({"phase": "Running"});
            object.to_string().into_bytes().into()
        })
        .collect();
    updates.push(pv::inventory_update::Update::Upserts(pv::PodBatch {
        pods_json: objects,
    }));
    updates.push(pv::inventory_update::Update::SnapshotEnd(pv::SnapshotEnd {}));
    let count = updates.len();
    let messages: Vec<_> = (1..)
        .zip(updates)
        .map(|(sequence, update)| pv::InventoryUpdate {
            cluster: None,
            sequence,
            update: Some(update),
        })
        .collect();
    let mut client = ContinuousServiceClient::new(channel(url));
    let sync = async {
        let mut acks = client
            .sync_inventory(authed(&cluster.key, tokio_stream::iter(messages)))
            .await
            .map_err(|s| format!("{:?} {}", s.code(), s.message()))?
            .into_inner();
        for _ in 0..count {
            match acks.message().await {
                Ok(Some(ack)) if !ack.resync && ack.errors.is_empty() => {}
                other => return Err(format!("{url}: inventory ack {other:?}")),
            }
        }
        Ok(())
    };
    tokio::time::timeout(CALL * 2, sync)
        .await
        .map_err(|_| format!("{url}: inventory not acked in time"))?
}

// ---------------------------------------------------------------------------------------
// The simulator

/// Starts the simulator on every replica: clusters `<prefix>-0` and `-1`, a light load (the
/// suite shares 2 cores with eight services).
async fn simulate(f: &Fixture, prefix: &str) -> Simulation {
    let endpoints = Endpoints {
        policy_store: f.processes.policy_store(),
        admission: f.urls(Service::Admission),
        continuous: f.urls(Service::Continuous),
        telemetry: f.urls(Service::Telemetry),
        ca_cert: None,
    };
    let mut config = SimulationConfig::new(endpoints, f.processes.admin_key.clone());
    config.clusters = 2;
    config.pods = 10;
    config.rate = 40;
    config.runtime_rate = 20;
    config.cluster_prefix = prefix.to_owned();
    // Ended by the scenario, not by time.
    config.duration = Duration::from_secs(3600);
    Simulation::start(config).await.unwrap()
}

/// Stops the simulation and checks its report: no review failed (the in-flight ones the
/// fault broke were retried, `reviews_retried`), every command received was acked, and each
/// cluster's runtime events the simulator got accepted are stored exactly once. When some
/// event batches failed for good (`events_failed`: telemetry down longer than the
/// simulator's retries) a failed batch may still have been stored before the break: then
/// the stored count lies between the accepted and the sent, and the suite says so.
async fn finish(f: &Fixture, simulation: Simulation, what: &str) -> Report {
    let report = simulation.stop().await;
    figure!(
        "faults: {what}: simulator: reviews {} sent, {} failed, {} retried, p50 {} µs, p99 {} µs; \
         events {} sent, {} accepted, {} failed, {} re-sent; commands {} received, {} acked; {} reconnects; errors {:?}",
        report.reviews_sent,
        report.reviews_failed,
        report.reviews_retried,
        report.review_p50_us,
        report.review_p99_us,
        report.events_sent,
        report.events_accepted,
        report.events_failed,
        report.events_retried,
        report.commands_received,
        report.commands_acked,
        report.reconnects,
        report.errors
    );
    assert!(report.reviews_sent > 0, "{what}: the simulator sent no review");
    assert_eq!(report.reviews_failed, 0, "{what}: {}", report.summary());
    assert_eq!(
        report.commands_acked,
        report.commands_received,
        "{what}: {}",
        report.summary()
    );
    let telemetry = f.telemetry();
    for c in &report.clusters {
        let cluster = Cluster {
            name: c.name.clone(),
            id: c.id.clone(),
            key: String::new(),
        };
        if report.events_failed == 0 {
            assert_stored_exactly(
                &telemetry,
                &f.processes.admin_key,
                &cluster,
                "runtime",
                c.events_accepted,
            )
            .await;
        } else {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let stored = stored_events(&telemetry, &f.processes.admin_key, &cluster, "runtime")
                .await
                .unwrap();
            figure!(
                "faults: {what}: {}: {} events sent, {} accepted, {stored} stored (failed batches may have been stored before the break)",
                c.name,
                c.events_sent,
                c.events_accepted
            );
            assert!(
                (c.events_accepted..=c.events_sent).contains(&stored),
                "{what}: {}: {stored} stored, {} accepted, {} sent",
                c.name,
                c.events_accepted,
                c.events_sent
            );
        }
    }
    report
}

// ---------------------------------------------------------------------------------------
// The scenarios

struct Fixture {
    processes: ProcessCluster,
    admin: Api,
}

impl Fixture {
    fn urls(&self, service: Service) -> Vec<String> {
        self.processes.urls(service)
    }

    fn telemetry(&self) -> String {
        self.processes.url((Service::Telemetry, 0))
    }
}

/// `count` reviews of `cluster` spread over `urls`; every one must be answered as the policy
/// says. Returns how many were answered (all of them).
async fn reviews_on(urls: &[String], cluster: &Cluster, count: u64) -> u64 {
    for (i, url) in urls.iter().enumerate() {
        let share = count / urls.len() as u64 + u64::from((i as u64) < count % urls.len() as u64);
        reviews_answered(url, cluster, share).await.unwrap();
    }
    count
}

async fn admission_replica_killed(f: &mut Fixture) {
    let cluster = register(&mut f.admin, "reviews").await;
    let urls = f.urls(Service::Admission);
    reviews_on(&urls, &cluster, 4).await;
    let simulation = simulate(f, "sim-admission").await;
    let stop = CancellationToken::new();
    let load = tokio::spawn(review_load(
        urls.clone(),
        cluster.clone(),
        4,
        Duration::from_millis(10),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    f.processes.kill((Service::Admission, 0));
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.cancel();
    let tally = load.await.unwrap();
    figure!("faults: admission replica killed under load: {}", tally.summary());
    assert_eq!(tally.failed, 0, "reviews failed on both replicas: {:?}", tally.errors);
    assert_eq!(tally.wrong, 0, "answers against the policy");
    // The kill hit the load: reviews sent to the dead replica were answered by the other.
    assert!(
        tally.retried > 0,
        "no review met the killed replica: {}",
        tally.summary()
    );
    finish(f, simulation, "admission replica killed").await;
    f.processes.restart((Service::Admission, 0)).await;
    reviews_answered(&urls[0], &cluster, 4).await.unwrap();
}

async fn nats_restarted(f: &mut Fixture) {
    let before = register(&mut f.admin, "nats-before").await;
    let during = register(&mut f.admin, "nats-during").await;
    let after = register(&mut f.admin, "nats-after").await;
    let urls = f.urls(Service::Admission);
    let telemetry = f.telemetry();
    let pause = Duration::from_millis(50);

    let reviews_before = reviews_on(&urls, &before, 20).await;
    let events_before = sensor(telemetry.clone(), before.clone(), "before".into(), 2, 5, 10, pause).await;

    let simulation = simulate(f, "sim-nats").await;
    let stop = CancellationToken::new();
    let load = tokio::spawn(review_load(
        urls.clone(),
        during.clone(),
        2,
        Duration::from_millis(20),
        stop.clone(),
    ));
    let events = tokio::spawn(sensor(
        telemetry.clone(),
        during.clone(),
        "during".into(),
        8,
        10,
        10,
        pause,
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let outage = Instant::now();
    f.processes.restart_nats(Duration::from_secs(2)).await;
    let down = outage.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.cancel();
    let during_reviews = load.await.unwrap();
    let events_during = events.await.unwrap();
    finish(f, simulation, "nats-server restarted").await;

    let reviews_after = reviews_on(&urls, &after, 20).await;
    let events_after = sensor(telemetry.clone(), after.clone(), "after".into(), 2, 5, 10, pause).await;

    for (cluster, tally) in [
        (&before, &events_before),
        (&during, &events_during),
        (&after, &events_after),
    ] {
        assert_eq!(tally.accepted, tally.sent, "{}: {tally:?}", cluster.name);
        assert_stored_exactly(&telemetry, &f.processes.admin_key, cluster, "runtime", tally.accepted).await;
    }
    // Admission decisions reach telemetry over NATS: none lost, before, across or after.
    let answered_during = during_reviews.allowed + during_reviews.denied;
    for (cluster, answered) in [
        (&before, reviews_before),
        (&during, answered_during),
        (&after, reviews_after),
    ] {
        assert_stored_exactly(&telemetry, &f.processes.admin_key, cluster, "admission", answered).await;
    }
    figure!(
        "faults: nats-server restarted (down {down:?}): {}; runtime events accepted {} (resent streams {}), all stored; admission decision events stored {} of {}",
        during_reviews.summary(),
        events_before.accepted + events_during.accepted + events_after.accepted,
        events_during.resent_streams,
        reviews_before + answered_during + reviews_after,
        reviews_before + answered_during + reviews_after,
    );
    assert_eq!(during_reviews.failed, 0, "{:?}", during_reviews.errors);
    assert_eq!(during_reviews.wrong, 0);
}

async fn postgres_restarted(f: &mut Fixture) {
    let cluster = register(&mut f.admin, "pg").await;
    let admission = f.urls(Service::Admission);
    let continuous = f.urls(Service::Continuous);
    let telemetry = f.telemetry();
    let simulation = simulate(f, "sim-pg").await;
    f.processes.restart_postgres(Duration::from_secs(3)).await;
    let back = Instant::now();

    // The policy store writes again: a policy change (block privileged containers too)...
    let mut admin = f.admin.clone();
    let revision = admin.get_policy(by_name("faults")).await.map(|p| p.revision);
    let changed = eventually(RECOVERY, async || {
        let current = admin
            .get_policy(by_name("faults"))
            .await
            .map_err(|s| format!("get: {:?} {}", s.code(), s.message()))?;
        admin
            .update_policy(by_name("faults"), &policy_document(true), current.revision)
            .await
            .map_err(|s| format!("update: {:?} {}", s.code(), s.message()))
    })
    .await;
    let store_back = back.elapsed();
    // ...that every admission replica then applies.
    let privileged = create_pod(pod(
        "priv",
        "shop",
        pod_spec(false, vec![container("app", "nginx:1.27", true)]),
    ));
    for url in &admission {
        eventually(RECOVERY, async || {
            let mut client = AdmissionServiceClient::new(channel(url));
            let decision = client
                .review(authed(
                    &cluster.key,
                    pa::ReviewRequest {
                        cluster: None,
                        admission_review_json: privileged.to_string().into_bytes().into(),
                        request_id: String::new(),
                    },
                ))
                .await
                .map_err(|s| format!("{url}: {:?} {}", s.code(), s.message()))?
                .into_inner()
                .decision;
            match decision {
                Some(d) if !d.allowed => Ok(()),
                other => Err(format!("{url}: {other:?}")),
            }
        })
        .await;
        reviews_answered(url, &cluster, 4).await.unwrap();
    }
    let admission_back = back.elapsed();
    // Inventory on every continuous replica.
    for url in &continuous {
        eventually(RECOVERY, async || sync_inventory(url, &cluster, 5).await).await;
    }
    let inventory_back = back.elapsed();
    // Runtime events stored.
    let events = sensor(
        telemetry.clone(),
        cluster.clone(),
        "pg".into(),
        1,
        1,
        10,
        Duration::ZERO,
    )
    .await;
    assert_eq!(events.accepted, 10, "{events:?}");
    assert_stored_exactly(&telemetry, &f.processes.admin_key, &cluster, "runtime", 10).await;
    let telemetry_back = back.elapsed();
    finish(f, simulation, "PostgreSQL restarted").await;
    figure!(
        "faults: PostgreSQL restarted (down 3 s): policy {:?} -> {} written after {store_back:?}, \
         admission applies it after {admission_back:?}, inventory after {inventory_back:?}, \
         runtime events stored after {telemetry_back:?}; resent ingest streams {}",
        revision.ok(),
        changed.policy.map(|p| p.revision).unwrap_or_default(),
        events.resent_streams
    );
    // Recovered without a restart: every process is the one started before the fault.
    let unhealthy = f.processes.unhealthy().await;
    assert!(
        unhealthy.is_empty(),
        "not serving after PostgreSQL came back: {unhealthy:#?}"
    );
}

async fn telemetry_killed_mid_stream(f: &mut Fixture) {
    let clusters = [
        register(&mut f.admin, "tel-a").await,
        register(&mut f.admin, "tel-b").await,
    ];
    let telemetry = f.telemetry();
    let simulation = simulate(f, "sim-telemetry").await;
    let sensors: Vec<_> = clusters
        .iter()
        .map(|c| {
            tokio::spawn(sensor(
                telemetry.clone(),
                c.clone(),
                c.name.clone(),
                6,
                10,
                20,
                Duration::from_millis(100),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let killed = Instant::now();
    f.processes.kill((Service::Telemetry, 0));
    tokio::time::sleep(Duration::from_secs(1)).await;
    f.processes.restart((Service::Telemetry, 0)).await;
    let back = killed.elapsed();
    let mut tallies = Vec::new();
    for task in sensors {
        tallies.push(task.await.unwrap());
    }
    for (cluster, tally) in clusters.iter().zip(&tallies) {
        assert_eq!(tally.accepted, tally.sent, "{}: {tally:?}", cluster.name);
        assert_stored_exactly(&telemetry, &f.processes.admin_key, cluster, "runtime", tally.accepted).await;
    }
    finish(f, simulation, "telemetry killed mid-stream").await;
    let resent: u64 = tallies.iter().map(|t| t.resent_streams).sum();
    figure!(
        "faults: telemetry killed mid-stream (back after {back:?}): events accepted {:?}, stored the same per cluster; \
         streams resent {resent} ({:?})",
        tallies.iter().map(|t| t.accepted).collect::<Vec<_>>(),
        tallies.iter().flat_map(|t| t.errors.first()).collect::<Vec<_>>()
    );
    assert!(resent > 0, "the kill met no stream: {tallies:?}");
}

async fn continuous_replica_killed(f: &mut Fixture) {
    let clusters = [
        register(&mut f.admin, "cmd-a").await,
        register(&mut f.admin, "cmd-b").await,
    ];
    let urls = f.urls(Service::Continuous);
    // The connectors start on replica 1, the one killed; commands are issued on replica 0.
    let order = vec![urls[1].clone(), urls[0].clone()];
    // The simulator's cluster 1 holds its command stream on replica 1 too.
    let simulation = simulate(f, "sim-continuous").await;
    let stop = CancellationToken::new();
    let reconnects = Arc::new(Mutex::new(0_u64));
    let acked: Vec<Acked> = clusters.iter().map(|_| Acked::default()).collect();
    let connectors: Vec<_> = clusters
        .iter()
        .zip(&acked)
        .map(|(c, a)| connector(order.clone(), c.clone(), a.clone(), reconnects.clone(), stop.clone()))
        .collect();
    let key = f.processes.admin_key.clone();
    let mut issued: Vec<Vec<String>> = vec![Vec::new(); clusters.len()];
    let mut n = 0;
    // Streams up: a first command each, acked.
    for (i, cluster) in clusters.iter().enumerate() {
        n += 1;
        let id = issue(&urls[0], &key, cluster, n).await.unwrap();
        issued[i].push(id.clone());
        let seen = acked[i].clone();
        eventually(RECOVERY, async || {
            if seen.lock().unwrap().contains(&id) {
                Ok(())
            } else {
                Err("not acked")
            }
        })
        .await;
    }
    let reconnects_before = *reconnects.lock().unwrap();
    for round in 0..30 {
        if round == 10 {
            f.processes.kill((Service::Continuous, 1));
        }
        for (i, cluster) in clusters.iter().enumerate() {
            n += 1;
            issued[i].push(issue(&urls[0], &key, cluster, n).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = Instant::now();
    for (i, cluster) in clusters.iter().enumerate() {
        let seen = acked[i].clone();
        let wanted = issued[i].clone();
        eventually(RECOVERY, async || {
            let got = seen.lock().unwrap();
            let missing: Vec<&String> = wanted.iter().filter(|id| !got.contains(*id)).collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("{}: {} not acked", cluster.name, missing.len()))
            }
        })
        .await;
        let states = eventually(RECOVERY, async || {
            let states = command_states(&urls[0], &key, cluster).await?;
            let pending: Vec<_> = wanted
                .iter()
                .filter(|id| states.get(*id) != Some(&(pv::CommandState::Done as i32)))
                .collect();
            if pending.is_empty() {
                Ok(states)
            } else {
                Err(format!("{}: {} not done", cluster.name, pending.len()))
            }
        })
        .await;
        assert_eq!(states.len(), wanted.len(), "{}: commands listed", cluster.name);
    }
    let reconnected = *reconnects.lock().unwrap() - reconnects_before;
    stop.cancel();
    let report = finish(f, simulation, "continuous replica killed").await;
    assert!(
        report.reconnects > 0,
        "the simulator's connector on the killed replica did not reconnect"
    );
    for task in connectors {
        task.await.unwrap();
    }
    figure!(
        "faults: continuous replica killed under {} connector streams: {} commands issued, all acked and done \
         (last within {:?} of the end), {reconnected} reconnects",
        clusters.len(),
        issued.iter().map(Vec::len).sum::<usize>(),
        started.elapsed()
    );
    assert!(
        reconnected >= clusters.len() as u64,
        "the connectors did not reconnect: {reconnected}"
    );
    f.processes.restart((Service::Continuous, 1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_fault_at_a_time() {
    let started = Instant::now();
    let processes = ProcessCluster::start(Replicas::default()).await;
    let mut admin = Api::connect(&processes.policy_store(), &processes.admin_key).await;
    admin.create_policy(&policy_document(false)).await.unwrap();
    figure!(
        "faults: 8 service processes, PostgreSQL and nats-server up in {:?}",
        started.elapsed()
    );
    let mut f = Fixture { processes, admin };
    admission_replica_killed(&mut f).await;
    nats_restarted(&mut f).await;
    postgres_restarted(&mut f).await;
    telemetry_killed_mid_stream(&mut f).await;
    continuous_replica_killed(&mut f).await;
    let unhealthy = f.processes.unhealthy().await;
    assert!(unhealthy.is_empty(), "not serving at the end: {unhealthy:#?}");
    figure!("faults: all scenarios in {:?}", started.elapsed());
}

/// A failing test leaves nothing behind: its processes are killed, PostgreSQL and
/// nats-server stopped and the folder removed while the panic unwinds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_test_leaves_no_process_behind() {
    let seen = Arc::new(Mutex::new(None));
    let record = seen.clone();
    let failed = tokio::spawn(async move {
        let processes = ProcessCluster::start(Replicas {
            admission: 1,
            signature: 0,
            continuous: 0,
            telemetry: 0,
        })
        .await;
        *record.lock().unwrap() = Some((
            [
                processes.pid((Service::PolicyStore, 0)).unwrap(),
                processes.pid((Service::Admission, 0)).unwrap(),
            ],
            processes.dir().to_owned(),
            processes.infrastructure_ports(),
        ));
        panic!("a scenario fails");
    })
    .await;
    assert!(failed.unwrap_err().is_panic());
    let (pids, dir, (pg, nats)) = seen.lock().unwrap().take().expect("the cluster started");
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} still runs"
        );
    }
    assert!(!dir.exists(), "{} is still there", dir.display());
    for port in [pg, nats] {
        assert!(
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err(),
            "something still listens on {port}"
        );
    }
}
