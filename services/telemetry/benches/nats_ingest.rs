//! Issue 20's ingest benchmark (see BENCHMARKS.md): bus events from NATS into PostgreSQL
//! through the telemetry service's own work consumer, and the bound of this machine for the
//! same rows.
//!
//! The run starts a policy store in distributed mode (a private nats-server and a fresh
//! PostgreSQL database, through the test kit; both removed at the end) with one tenant whose
//! cluster's policy has `xdrEnabled: true`, and the telemetry service on it
//! (`RunningTelemetry`: the work subscription, the ingest step, the batching writer, the
//! correlator with the shipped rules, the store's `COPY` insert). Events are admission
//! decisions of that cluster, as the admission service publishes them (log and block
//! violations, many namespaces and workloads). Runtime detections do not come over NATS
//! (they come through `IngestEvents`) and are not part of this path.
//!
//! Phases, each printed with wall time, events/s and CPU seconds of this process (publisher,
//! nats client, service) and of the PostgreSQL backends of the database (from `/proc`; the
//! nats-server's CPU is printed too):
//! 1. `full speed`: `TELEMETRY_BENCH_EVENTS` events (default 200,000) published as fast as
//!    the bus takes them while the service consumes; the rate is stored events over the
//!    time from the first publish to the writer's count of stored events reaching them all
//!    (polled every 20 ms; checked against the table afterwards).
//! 2. `fixed rate`: `TELEMETRY_BENCH_RATE` events/s (default 10,000) for
//!    `TELEMETRY_BENCH_SECONDS` (default 10); the event-to-searchable latency of each event
//!    is the time from its publish call to the first poll (every 20 ms) that finds its row
//!    committed (what `search` reads: committed rows are searchable at once); p50, p90, p99,
//!    max are printed (each up to one poll late).
//! 3. `bound`: the full-speed phase's rows (the same `SecurityEvent`s, as `COPY` text) written
//!    by bare `COPY` into a fresh database's events table (partitioned, every index in place,
//!    nothing else), batches of 5,000 per transaction, on 1 and on 2 connections (the
//!    service's writer is one connection at a time); then with the word index's (GIN) pending
//!    list at 64 MB instead of 4 MB (merged at the end of each run, inside the timing), without
//!    the summary's word index, and without any secondary index.
//!
//! The service runs with its defaults unless set: `batch_size` 5,000 (`TELEMETRY_BENCH_BATCH`),
//! `flush_interval` 50 ms (`TELEMETRY_BENCH_FLUSH_MS`), `max_in_flight` 10,000
//! (`TELEMETRY_BENCH_IN_FLIGHT`), `max_ack_pending` 20,000 (`TELEMETRY_BENCH_ACK_PENDING`) and
//! `writers` 2 (`TELEMETRY_BENCH_WRITERS`).
//!
//! ```sh
//! cargo bench -p portcullis-telemetry-service --bench nats_ingest
//! ```
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_precision_loss,
    dead_code,
    missing_docs
)]

#[path = "../tests/support/stack.rs"]
mod stack;

use std::collections::{HashMap, VecDeque};

mod support;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{backend_ticks, backend_ticks_since, env_or, ticks};

use bytes::Bytes;
use futures::StreamExt as _;
use portcullis_bus::Event;
use portcullis_domain::Topic;
use portcullis_policy_client::keys::{IntrospectingAuthenticator, KeyCacheOptions};
use portcullis_policy_client::metrics::NoMetrics;
use portcullis_policy_client::{Upstream, UpstreamTimeouts};
use portcullis_policy_store::testing::TestServer;
use portcullis_proto::admission::v1 as pa;
use portcullis_proto::common::v1 as pc;
use portcullis_proto::events::v1 as pe;
use portcullis_server::Credentials;
use portcullis_telemetry_service::SecurityEvent;
use portcullis_telemetry_service::policies::PolicyStore;
use portcullis_telemetry_service::storage::{EVENT_COLUMNS, SqlStore, copy_text};
use portcullis_telemetry_service::store::TelemetryStore;
use portcullis_telemetry_service::{RunningTelemetry, TelemetryOptions, TelemetryServeOptions};
use portcullis_test_kit::TestDatabase;
use prost::Message as _;
use sea_orm::sqlx;

fn nats_pid() -> Option<String> {
    // The nats-server started by the test kit is a child of this process.
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|d| {
        let pid = d.file_name().to_string_lossy().to_string();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (name, rest) = stat.rsplit_once(')')?;
        let ppid = rest.split_whitespace().nth(1)?;
        (name.contains("nats-server") && ppid == me).then_some(pid)
    })
}

/// CPU seconds spent between `start` and `stop` in this process, the database's backends and
/// the nats-server.
struct Cpu {
    me: u64,
    pg: HashMap<i32, u64>,
    nats: u64,
    nats_pid: Option<String>,
}

impl Cpu {
    async fn start(pool: &sqlx::PgPool) -> Cpu {
        let nats_pid = nats_pid();
        Cpu {
            me: ticks("self"),
            pg: backend_ticks(pool).await,
            nats: nats_pid.as_deref().map_or(0, ticks),
            nats_pid,
        }
    }

    async fn stop(&self, pool: &sqlx::PgPool) -> String {
        let me = ticks("self") - self.me;
        let pg = backend_ticks_since(pool, &self.pg).await;
        let nats = self.nats_pid.as_deref().map_or(0, ticks).saturating_sub(self.nats);
        format!(
            "CPU {:.2} s this process + {:.2} s PostgreSQL backends + {:.2} s nats-server",
            me as f64 / 100.0,
            pg as f64 / 100.0,
            nats as f64 / 100.0
        )
    }
}

/// An admission decision of `cluster` as the admission service publishes it: every fifth
/// blocked, every other one with a log-only violation.
fn envelope(i: u64, run: &str, tenant: &str, cluster: &str) -> pe::EventEnvelope {
    let id = format!("adm-{run}-{i}");
    let namespace = format!("team-{}", i % 40);
    let name = format!("web-{}", i % 997);
    let allowed = !i.is_multiple_of(5);
    let object = pc::WorkloadRef {
        kind: "Deployment".into(),
        namespace: namespace.clone(),
        name: name.clone(),
        ..Default::default()
    };
    let action = if allowed { pc::Action::Log } else { pc::Action::Block };
    let violations: Vec<pc::Violation> = (i.is_multiple_of(2) || !allowed)
        .then(|| pc::Violation {
            rule_type: "containerSecurityContext".into(),
            action: action as i32,
            message: format!(
                "containerSecurityContext violates rule with properties {{ privileged:true }} in container app-{}",
                i % 7
            ),
            containers: vec![format!("app-{}", i % 7)],
            ..Default::default()
        })
        .into_iter()
        .collect();
    let summary = pe::AdmissionDecisionSummary {
        uid: id.clone(),
        cluster_id: cluster.into(),
        operation: "CREATE".into(),
        subresource: String::new(),
        object: Some(object.clone()),
        owner: None,
        allowed,
        basis: pa::DecisionBasis::Evaluated as i32,
        policy_id: "p".into(),
        policy_revision: 1,
        decided_at: None,
    };
    let decision = (!violations.is_empty()).then(|| pa::Decision {
        allowed,
        violations,
        object: Some(object),
        ..Default::default()
    });
    pe::EventEnvelope {
        event_id: id,
        tenant_id: tenant.into(),
        topic: Topic::AdmissionDecision.as_str().into(),
        occurred_at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
        trace: None,
        producer: "admission".into(),
        payload: Some(pe::event_envelope::Payload::AdmissionDecision(pe::AdmissionDecision {
            summary: Some(summary),
            decision,
            ..Default::default()
        })),
    }
}

fn bus_event(tenant: &str, e: &pe::EventEnvelope) -> Event {
    Event::new(
        e.event_id.as_str(),
        tenant,
        Topic::AdmissionDecision.as_str(),
        Bytes::from(e.encode_to_vec()),
    )
}

async fn stored(pool: &sqlx::PgPool, tenant: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM tm_events WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_one(pool)
        .await
        .unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// Bare `COPY` of `text` (rows of `rows_per_batch` lines each) into `pool`'s events table on
/// `streams` connections at once; returns events/s and the CPU line.
async fn copy_bound(
    pool: &sqlx::PgPool,
    batches: &[Vec<u8>],
    rows: usize,
    streams: usize,
    after: Option<&'static str>,
) -> (f64, String) {
    let cpu = Cpu::start(pool).await;
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let batches = Arc::new(batches.to_vec());
    for _ in 0..streams {
        let (pool, next, batches) = (pool.clone(), next.clone(), batches.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(batch) = batches.get(i) else { return };
                let mut tx = pool.begin().await.unwrap();
                let mut copy = tx
                    .copy_in_raw(&format!("COPY tm_events ({EVENT_COLUMNS}) FROM STDIN"))
                    .await
                    .unwrap();
                copy.send(batch.as_slice()).await.unwrap();
                copy.finish().await.unwrap();
                tx.commit().await.unwrap();
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    if let Some(sql) = after {
        sqlx::query(sql).execute(pool).await.unwrap();
    }
    let wall = started.elapsed();
    let line = cpu.stop(pool).await;
    (
        rows as f64 / wall.as_secs_f64(),
        format!("{:.2} s wall; {line}", wall.as_secs_f64()),
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let events: u64 = env_or("TELEMETRY_BENCH_EVENTS", 200_000);
    let rate: u64 = env_or("TELEMETRY_BENCH_RATE", 10_000);
    let seconds: u64 = env_or("TELEMETRY_BENCH_SECONDS", 10);
    let publishers: usize = env_or("TELEMETRY_BENCH_PUBLISHERS", 256);

    let server = TestServer::distributed().await.unwrap();
    let tenant = stack::Stack::tenant_in(
        &server,
        "default",
        &server.admin_key.clone(),
        &stack::policy("guard", true, None),
    )
    .await;
    let store = SqlStore::connect(&server.database_url).await.unwrap();
    let pool = store.connection().get_postgres_connection_pool().clone();
    let options = TelemetryOptions {
        batch_size: env_or("TELEMETRY_BENCH_BATCH", 5_000),
        flush_interval: Duration::from_millis(env_or("TELEMETRY_BENCH_FLUSH_MS", 50)),
        write_queue: 20_000,
        max_in_flight: env_or("TELEMETRY_BENCH_IN_FLIGHT", 10_000),
        max_ack_pending: env_or("TELEMETRY_BENCH_ACK_PENDING", 20_000),
        writers: env_or("TELEMETRY_BENCH_WRITERS", 2),
        policy_cache_ttl: Duration::from_secs(60),
        ..TelemetryOptions::default()
    };
    println!(
        "telemetry NATS -> PostgreSQL ingest: batch_size {}, flush_interval {:?}, max_in_flight {}, max_ack_pending {}, writers {}, write_queue {}; {} cores; load average {}",
        options.batch_size,
        options.flush_interval,
        options.max_in_flight,
        options.max_ack_pending,
        options.writers,
        options.write_queue,
        std::thread::available_parallelism().map_or(0, usize::from),
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    );
    let timeouts = UpstreamTimeouts::default();
    let policies = PolicyStore::new(
        &server.url,
        None,
        &server.service_token,
        &timeouts,
        false,
        options.policy_cache_ttl,
    )
    .unwrap();
    let upstream = Upstream::new(&server.url, None, &server.service_token, &timeouts, false).unwrap();
    let authenticator = IntrospectingAuthenticator::new(upstream, KeyCacheOptions::default(), Arc::new(NoMetrics));
    let credentials = Credentials::new(Some(server.operator_key.clone()), Some(server.service_token.clone())).unwrap();
    let running = RunningTelemetry::start(
        Arc::new(store.clone()) as Arc<dyn TelemetryStore>,
        policies,
        None,
        server.bus.clone(),
        credentials,
        Arc::new(authenticator),
        TelemetryServeOptions {
            grpc: None,
            telemetry: options,
        },
    )
    .await
    .unwrap();
    let bus = server.bus.clone();
    let tid = tenant.id.clone();

    // 1. Full speed.
    let envelopes: Vec<pe::EventEnvelope> = (0..events)
        .map(|i| envelope(i, "a", &tid, &tenant.cluster_id))
        .collect();
    let cpu = Cpu::start(&pool).await;
    let started = Instant::now();
    let publishing = {
        let (bus, tid) = (bus.clone(), tid.clone());
        let list: Vec<Event> = envelopes.iter().map(|e| bus_event(&tid, e)).collect();
        tokio::spawn(async move {
            futures::stream::iter(list)
                .map(|e| {
                    let bus = bus.clone();
                    async move { bus.publish(e).await.unwrap() }
                })
                .buffer_unordered(publishers)
                .for_each(|_| async {})
                .await;
            started.elapsed()
        })
    };
    // The writer's own counter (no database work): stored means committed.
    let counters = running.telemetry().ingestor().pipeline().counters();
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if counters.stored() >= events {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "the events were not all stored in 30 min"
        );
    }
    let wall = started.elapsed();
    let published = publishing.await.unwrap();
    assert_eq!(stored(&pool, &tid).await, i64::try_from(events).unwrap());
    println!(
        "full speed: {events} events stored in {:.2} s = {:.0} events/s (published in {:.2} s = {:.0}/s); {}",
        wall.as_secs_f64(),
        events as f64 / wall.as_secs_f64(),
        published.as_secs_f64(),
        events as f64 / published.as_secs_f64(),
        cpu.stop(&pool).await
    );

    // 2. Fixed rate, event-to-searchable latency.
    let pending: Arc<Mutex<VecDeque<(String, Instant)>>> = Arc::new(Mutex::new(VecDeque::new()));
    let total = rate * seconds;
    let cpu = Cpu::start(&pool).await;
    let started = Instant::now();
    let publisher = {
        let (bus, tid, cluster, pending) = (bus.clone(), tid.clone(), tenant.cluster_id.clone(), pending.clone());
        tokio::spawn(async move {
            // Ticks of 10 ms, each publishing its share concurrently.
            let per_tick = (rate / 100).max(1);
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut i = 0;
            let mut behind = 0u64;
            while i < total {
                tick.tick().await;
                let n = per_tick.min(total - i);
                let batch: Vec<Event> = (i..i + n)
                    .map(|k| {
                        let e = envelope(k, "b", &tid, &cluster);
                        pending.lock().unwrap().push_back((e.event_id.clone(), Instant::now()));
                        bus_event(&tid, &e)
                    })
                    .collect();
                i += n;
                let t = Instant::now();
                futures::future::join_all(batch.into_iter().map(|e| bus.publish(e)))
                    .await
                    .into_iter()
                    .for_each(|r| {
                        r.unwrap();
                    });
                if t.elapsed() > Duration::from_millis(10) {
                    behind += 1;
                }
            }
            (started.elapsed(), behind)
        })
    };
    let mut latencies = Vec::with_capacity(usize::try_from(total).unwrap());
    while (latencies.len() as u64) < total {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let ids: Vec<String> = pending.lock().unwrap().iter().map(|(id, _)| id.clone()).collect();
        if ids.is_empty() {
            continue;
        }
        let found: Vec<(String,)> = sqlx::query_as("SELECT id FROM tm_events WHERE tenant_id = $1 AND id = ANY($2)")
            .bind(&tid)
            .bind(&ids)
            .fetch_all(&pool)
            .await
            .unwrap();
        let seen = Instant::now();
        let found: std::collections::HashSet<String> = found.into_iter().map(|(id,)| id).collect();
        pending.lock().unwrap().retain(|(id, at)| {
            if found.contains(id) {
                latencies.push(seen - *at);
                false
            } else {
                true
            }
        });
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "the events were not all stored in 30 min"
        );
    }
    let wall = started.elapsed();
    let (published, slow_ticks) = publisher.await.unwrap();
    latencies.sort_unstable();
    println!(
        "fixed rate {rate}/s: {total} events published in {:.2} s ({:.0}/s achieved; {slow_ticks} ticks over 10 ms), all stored after {:.2} s; publish -> searchable p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms (polled every 20 ms); {}",
        published.as_secs_f64(),
        total as f64 / published.as_secs_f64(),
        wall.as_secs_f64(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.9),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
        cpu.stop(&pool).await
    );
    running.stop().await.unwrap();
    drop(store);

    // 3. The bound: the full-speed rows by bare COPY into a fresh schema.
    let rows: Vec<SecurityEvent> = envelopes
        .iter()
        .map(|e| {
            let mut s = SecurityEvent::from_envelope(e).unwrap().unwrap();
            s.tenant_id = tid.as_str().into();
            s
        })
        .collect();
    let batches: Vec<Vec<u8>> = rows.chunks(5_000).map(copy_text).collect();
    let mb = batches.iter().map(Vec::len).sum::<usize>() as f64 / 1e6;
    println!("bound: {} rows, {mb:.1} MB of COPY text, batches of 5,000", rows.len());
    let database = TestDatabase::create().await.unwrap();
    let bound = SqlStore::connect(&database.url).await.unwrap();
    let times: Vec<i64> = rows
        .iter()
        .map(|e| e.occurred_at.unix_timestamp() * 1_000_000)
        .collect();
    bound.ensure_partitions(times.iter().copied()).await.unwrap();
    let bpool = bound.connection().get_postgres_connection_pool().clone();
    // The summary's word index's pending list (fastupdate) is merged at the end of each run with it,
    // so that its whole cost is counted.
    let flush = Some(
        "SELECT gin_clean_pending_list(c.oid) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'ix_tm_events_summary_words'",
    );
    let bigger_pending_list = "DO $$ DECLARE r record; BEGIN FOR r IN SELECT c.relname FROM pg_inherits i \
         JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent \
         WHERE p.relname = 'ix_tm_events_summary_words' LOOP \
         EXECUTE format('ALTER INDEX %I SET (gin_pending_list_limit = 65536)', r.relname); END LOOP; END $$";
    let cases: [(&str, &[&str], Option<&'static str>); 4] = [
        ("every index (GIN pending list 4 MB, the default)", &[], flush),
        ("every index, GIN pending list 64 MB", &[bigger_pending_list], flush),
        (
            "without the summary's word index",
            &["DROP INDEX ix_tm_events_summary_words"],
            None,
        ),
        (
            "primary key only",
            &[
                "DROP INDEX ix_tm_events_time",
                "DROP INDEX ix_tm_events_cluster",
                "DROP INDEX ix_tm_events_namespace",
                "DROP INDEX ix_tm_events_pod",
                "DROP INDEX ix_tm_events_rule",
                "DROP INDEX ix_tm_events_image_repo",
                "DROP INDEX ix_tm_events_digest",
                "DROP INDEX ix_tm_events_workload",
                "DROP INDEX ix_tm_events_source",
                "DROP INDEX ix_tm_events_action",
            ],
            None,
        ),
    ];
    for (name, ddl, after) in cases {
        for sql in ddl {
            sqlx::query(sqlx::AssertSqlSafe(*sql)).execute(&bpool).await.unwrap();
        }
        for streams in [1, 2] {
            sqlx::query("TRUNCATE tm_events").execute(&bpool).await.unwrap();
            let (per_s, line) = copy_bound(&bpool, &batches, rows.len(), streams, after).await;
            println!("bound, {name}, {streams} connection(s): {per_s:.0} events/s; {line}");
        }
    }
    drop(bound);
    drop(database);
    println!(
        "load average at the end: {}",
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    );
}
