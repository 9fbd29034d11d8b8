//! Issue 20's replay benchmark end to end (see BENCHMARKS.md): a draft policy replayed by the
//! telemetry service's `replay::replay` over `TELEMETRY_BENCH_ADMISSIONS` (default 1,000,000)
//! admissions recorded in PostgreSQL, with the cluster settings read from a policy store.
//!
//! Set-up (not timed, except the recording, which is printed): a policy store in distributed
//! mode (a fresh PostgreSQL database and a private nats-server, through the test kit; both
//! removed at the end) with 8 clusters under the live policy; the telemetry tables in the same
//! database (as the service keeps them). The live policy is the engine bench's three checks
//! with the baseline-capabilities rule `log` instead of `block` (so that the recorded
//! decisions are allowed, logged and blocked) and `xdrEnabled: true`. The recorded admissions
//! are those of `TELEMETRY_BENCH_WORKLOADS` (default 4,096, as the engine bench) distinct
//! workload reviews of the benchmark corpus: each judged by the live policy, made into the
//! lean reviewed-pod projection as admission does, put on a decision event and read by
//! `replay::recorded_admission` as ingest does; each workload belongs to one cluster (8) and
//! one of the corpus's namespaces. The N records cycle through the workloads, one every
//! ~0.6 s over a week, each with its own random event id, and are written by the store's
//! `record_admissions` in batches of 5,000, as many at once as the store's
//! `write_concurrency`. Then `VACUUM ANALYZE tm_admissions` (the state autovacuum leaves).
//!
//! Timed, each run printed with wall time and CPU seconds of this process and of the
//! database's PostgreSQL backends (from `/proc`):
//! - `read`: every page of the listing the replay reads (`store.admissions`, pages of
//!   `replay::PAGE_SIZE`), nothing judged: the PostgreSQL read and row decoding alone;
//! - `replay`: `replay::replay` with the engine bench's full policy as the draft, over every
//!   recorded admission (`TELEMETRY_BENCH_RUNS` runs, default 3, and their median). Each
//!   report must have replayed all N, none unreadable, newly blocked some, and equal the
//!   first run's, or the bench panics.
//!
//! ```sh
//! PORTCULLIS_NATS_SERVER=.venv/bin/nats-server cargo bench -p portcullis-telemetry-service --bench replay
//! ```
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_precision_loss,
    missing_docs
)]

use std::collections::HashMap;

mod support;
use std::time::{Duration, Instant};
use support::{backend_ticks, backend_ticks_since, env_or, ticks};

use futures::StreamExt as _;
use portcullis_corpus as corpus;
use portcullis_domain::Topic;
use portcullis_engine::evaluate::{CompiledPolicy, EvalContext, Verdict};
use portcullis_engine::input::parse_document;
use portcullis_engine::policy::Action;
use portcullis_engine::projection::{ReviewedPod, review_pod_labels};
use portcullis_engine::replay::ReplayReport;
use portcullis_integration_tests::store::{Api, by_name};
use portcullis_policy_client::UpstreamTimeouts;
use portcullis_policy_store::testing::TestServer;
use portcullis_proto::admission::v1 as pa;
use portcullis_proto::common::v1 as pc;
use portcullis_proto::events::v1 as pe;
use portcullis_telemetry_service::policies::PolicyStore;
use portcullis_telemetry_service::storage::SqlStore;
use portcullis_telemetry_service::store::{AdmissionFilter, PageRequest, RecordedAdmission, TelemetryStore};
use portcullis_telemetry_service::{SecurityEvent, TelemetryOptions, replay};
use sea_orm::sqlx;
use time::OffsetDateTime;
use time::macros::datetime;

/// The allocator of the `portcullis` binary, which runs the service (crates/cli): the replay
/// allocates a few strings and a projection buffer per recorded admission.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const LIVE_POLICY: &str = include_str!("../../../crates/engine/benches/data/policy-three-checks.yaml");
const DRAFT_POLICY: &str = include_str!("../../../crates/engine/benches/data/policy-full.yaml");
const CLUSTERS: usize = 8;
const BATCH: usize = 5_000;
/// The first recorded decision; the rest follow over [`SPAN`].
const START: OffsetDateTime = datetime!(2026-11-23 00:00 UTC);
const SPAN: Duration = Duration::from_secs(7 * 24 * 3600);

/// CPU seconds spent between `start` and `stop` in this process and the database's backends.
struct Cpu {
    me: u64,
    pg: HashMap<i32, u64>,
}

impl Cpu {
    async fn start(pool: &sqlx::PgPool) -> Cpu {
        Cpu {
            me: ticks("self"),
            pg: backend_ticks(pool).await,
        }
    }

    async fn stop(&self, pool: &sqlx::PgPool) -> String {
        let me = ticks("self") - self.me;
        let pg = backend_ticks_since(pool, &self.pg).await;
        format!(
            "CPU: bench process {:.2} s, PostgreSQL backends {:.2} s",
            me as f64 / 100.0,
            pg as f64 / 100.0
        )
    }
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// The live policy as the store keeps it (JSON): the engine bench's three checks, the
/// baseline-capabilities rule only logged, `xdrEnabled`.
fn live_policy() -> String {
    let mut doc: serde_json::Value = yaml_serde::from_str(LIVE_POLICY).unwrap();
    doc["name"] = "bench.live".into();
    doc["xdrEnabled"] = true.into();
    let rules = doc["default"]["rules"].as_array_mut().unwrap();
    let caps = rules
        .iter_mut()
        .find(|r| r["statement"]["properties"][0]["key"] == "capabilities-rule")
        .unwrap();
    caps["action"] = "log".into();
    doc.to_string()
}

/// 64-bit mixing (splitmix64): random-looking, deterministic event ids.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A UUID-shaped id of record `i`.
fn event_id(i: u64) -> String {
    let (a, b) = (mix(i), mix(i ^ 0x5555_5555_5555_5555));
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | ((b >> 48) & 0x3fff),
        b & 0xffff_ffff_ffff
    )
}

fn action(a: Action) -> pc::Action {
    match a {
        Action::Block => pc::Action::Block,
        Action::Log => pc::Action::Log,
        _ => pc::Action::None,
    }
}

/// The recorded admissions of `n` distinct workload reviews of the corpus, as telemetry
/// records them from admission's decision events (live decision and projection), each in
/// one of `clusters`; and how many were allowed, logged and blocked.
fn templates(live: &CompiledPolicy, tenant: &str, clusters: &[String], n: usize) -> (Vec<RecordedAdmission>, [u64; 3]) {
    let ctx = EvalContext::offline(START);
    let mut out = Vec::with_capacity(n);
    let mut outcomes = [0u64; 3];
    let mut index = 0;
    while out.len() < n {
        let generated = corpus::review(index);
        index += 1;
        if !generated.workload {
            continue;
        }
        let body = generated.json.as_bytes();
        let subject = parse_document(body).unwrap().remove(0);
        let decision = live.evaluate(&subject, &ctx);
        let labels = review_pod_labels(body, &subject).unwrap();
        let Some(pod) = ReviewedPod::from_subject(&subject, labels) else {
            continue;
        };
        let allowed = decision.verdict == Verdict::Allow;
        let violations: Vec<pc::Violation> = decision
            .violations
            .iter()
            .map(|v| pc::Violation {
                rule_type: v.rule_type.to_owned(),
                action: action(v.action) as i32,
                message: v.message.clone(),
                containers: v.containers.clone(),
                ..Default::default()
            })
            .collect();
        outcomes[match (allowed, violations.is_empty()) {
            (true, true) => 0,
            (true, false) => 1,
            (false, _) => 2,
        }] += 1;
        let cluster = &clusters[out.len() % clusters.len()];
        let object = pc::WorkloadRef {
            kind: pod.kind.clone(),
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            ..Default::default()
        };
        let owner = pod.owner.as_ref().map(|o| pc::OwnerRef {
            api_version: o.api_version.clone(),
            kind: o.kind.clone(),
            name: o.name.clone(),
            uid: o.uid.clone(),
        });
        let id = event_id(u64::MAX - out.len() as u64);
        let envelope = pe::EventEnvelope {
            event_id: id.clone(),
            tenant_id: tenant.into(),
            topic: Topic::AdmissionDecision.as_str().into(),
            occurred_at: Some(prost_types::Timestamp::from(std::time::SystemTime::from(START))),
            trace: None,
            producer: "admission".into(),
            payload: Some(pe::event_envelope::Payload::AdmissionDecision(pe::AdmissionDecision {
                summary: Some(pe::AdmissionDecisionSummary {
                    uid: id,
                    cluster_id: cluster.clone(),
                    operation: "CREATE".into(),
                    subresource: String::new(),
                    object: Some(object.clone()),
                    owner,
                    allowed,
                    basis: pa::DecisionBasis::Evaluated as i32,
                    policy_id: "p".into(),
                    policy_revision: 1,
                    decided_at: None,
                }),
                decision: (!violations.is_empty()).then(|| pa::Decision {
                    allowed,
                    violations,
                    object: Some(object),
                    ..Default::default()
                }),
                reviewed_pod_json: pod.to_json().unwrap().into(),
            })),
        };
        let event = SecurityEvent::from_envelope(&envelope).unwrap().unwrap();
        out.push(replay::recorded_admission(&envelope, &event).unwrap());
    }
    (out, outcomes)
}

/// Record `i` of the run: workload `i % templates`, its own id and time.
fn record(templates: &[RecordedAdmission], i: u64, step_micros: i64) -> RecordedAdmission {
    let mut a = templates[(i % templates.len() as u64) as usize].clone();
    a.event_id = event_id(i).into();
    a.decided_at = START + time::Duration::microseconds(i as i64 * step_micros);
    a
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn summary(report: &ReplayReport) -> String {
    let t = report.totals();
    format!(
        "replayed {}, unreadable {}, not judged {}, {} workloads ({} changed), newly blocked {}, newly logged {}, no longer blocked {}, no longer logged {}",
        report.replayed,
        report.unreadable,
        t.not_judged,
        report.workloads.len(),
        report.workloads.values().filter(|w| w.changed()).count(),
        t.newly_blocked,
        t.newly_logged,
        t.no_longer_blocked,
        t.no_longer_logged
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: u64 = env_or("TELEMETRY_BENCH_ADMISSIONS", 1_000_000);
    let workloads: usize = env_or("TELEMETRY_BENCH_WORKLOADS", 4_096);
    let runs: usize = env_or::<usize>("TELEMETRY_BENCH_RUNS", 3).max(1);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    println!(
        "telemetry replay end to end: {n} recorded admissions, {workloads} workloads, {CLUSTERS} clusters; {model}, {} cores; load average {}",
        std::thread::available_parallelism().map_or(0, usize::from),
        load()
    );

    // The policy store, its clusters under the live policy, and the telemetry tables.
    let server = TestServer::distributed().await.unwrap();
    let tenant = server.tenant_id.clone();
    let mut admin = Api::new(&server, &server.admin_key).await;
    let live_doc = live_policy();
    let created = admin.create_policy(&live_doc).await.unwrap();
    let mut clusters = Vec::with_capacity(CLUSTERS);
    for c in 0..CLUSTERS {
        let registered = admin
            .register_cluster(&format!("bench-{c}"), by_name(&created.name))
            .await
            .unwrap();
        clusters.push(registered.cluster.unwrap().id);
    }
    let store = SqlStore::connect(&server.service_database_url("telemetry.db"))
        .await
        .unwrap();
    let pool = store.connection().get_postgres_connection_pool().clone();
    let settings: Vec<(String,)> =
        sqlx::query_as("SELECT version() UNION ALL SELECT 'shared_buffers ' || current_setting('shared_buffers')")
            .fetch_all(&pool)
            .await
            .unwrap();
    println!("{}", settings.into_iter().map(|(s,)| s).collect::<Vec<_>>().join("; "));
    let policies = PolicyStore::new(
        &server.url,
        None,
        &server.service_token,
        &UpstreamTimeouts::default(),
        false,
        TelemetryOptions::default().policy_cache_ttl,
    )
    .unwrap();

    // The recorded admissions.
    let live = CompiledPolicy::from_text(&live_doc).unwrap();
    let (templates, outcomes) = templates(&live, &tenant, &clusters, workloads);
    let mean = templates.iter().map(|t| t.projection.len()).sum::<usize>() / templates.len();
    println!(
        "workloads as decided by the live policy: {} allowed clean, {} allowed with a logged violation, {} blocked; projections {mean} B of JSON on average",
        outcomes[0], outcomes[1], outcomes[2]
    );
    let step = i64::try_from(SPAN.as_micros()).unwrap() / i64::try_from(n).unwrap().max(1);
    let cpu = Cpu::start(&pool).await;
    let started = Instant::now();
    let batches: Vec<(u64, u64)> = (0..n)
        .step_by(BATCH)
        .map(|from| (from, (from + BATCH as u64).min(n)))
        .collect();
    let store_ref = &store;
    let templates_ref = &templates;
    let recorded: u64 = futures::stream::iter(batches)
        .map(|(from, to)| async move {
            let batch: Vec<RecordedAdmission> = (from..to).map(|i| record(templates_ref, i, step)).collect();
            store_ref.record_admissions(&batch).await.unwrap()
        })
        .buffer_unordered(store.write_concurrency())
        .fold(0, |sum, new| async move { sum + new })
        .await;
    let wall = started.elapsed();
    assert_eq!(recorded, n, "every record is new");
    println!(
        "record: {n} admissions in {:.1} s = {:.0}/s (batches of {BATCH}, {} at once); {}",
        wall.as_secs_f64(),
        n as f64 / wall.as_secs_f64(),
        store.write_concurrency(),
        cpu.stop(&pool).await
    );
    let started = Instant::now();
    sqlx::query("VACUUM ANALYZE tm_admissions")
        .execute(&pool)
        .await
        .unwrap();
    let size: (i64, i64) = sqlx::query_as("SELECT pg_table_size('tm_admissions'), pg_indexes_size('tm_admissions')")
        .fetch_one(&pool)
        .await
        .unwrap();
    println!(
        "VACUUM ANALYZE in {:.1} s; table {:.0} MB, its indexes {:.0} MB",
        started.elapsed().as_secs_f64(),
        size.0 as f64 / 1e6,
        size.1 as f64 / 1e6
    );

    let filter = AdmissionFilter::default();
    // The read alone: every page the replay reads, nothing judged.
    let mut read_times = Vec::new();
    for run in 1..=runs {
        let cpu = Cpu::start(&pool).await;
        let started = Instant::now();
        let mut page = PageRequest {
            size: replay::PAGE_SIZE,
            token: None,
        };
        let (mut rows, mut pages, mut bytes) = (0u64, 0u64, 0usize);
        loop {
            let listed = store.admissions(&tenant, &filter, &page).await.unwrap();
            pages += 1;
            rows += listed.items.len() as u64;
            bytes += listed.items.iter().map(|a| a.projection.len()).sum::<usize>();
            match listed.next {
                Some(next) => page.token = Some(next),
                None => break,
            }
        }
        let wall = started.elapsed().as_secs_f64();
        assert_eq!(rows, n, "the read lists every recorded admission");
        read_times.push(wall);
        println!(
            "read {run}: {rows} admissions in {pages} pages ({:.0} MB of projections) in {wall:.2} s = {:.0}/s; {}; load average {}",
            bytes as f64 / 1e6,
            rows as f64 / wall,
            cpu.stop(&pool).await,
            load()
        );
    }

    // The replay end to end.
    let mut first: Option<ReplayReport> = None;
    let mut times = Vec::new();
    for run in 1..=runs {
        let draft = replay::compile_draft(DRAFT_POLICY).unwrap();
        let cpu = Cpu::start(&pool).await;
        let started = Instant::now();
        let report = replay::replay(&store, &policies, &tenant, draft, &filter)
            .await
            .unwrap();
        let wall = started.elapsed().as_secs_f64();
        let cpu = cpu.stop(&pool).await;
        assert_eq!((report.replayed, report.unreadable), (n, 0), "{}", summary(&report));
        assert!(report.totals().newly_blocked > 0, "the stricter draft blocks more");
        match &first {
            None => println!("report: {}", summary(&report)),
            Some(f) => assert!(*f == report, "run {run}'s report differs from the first"),
        }
        if first.is_none() {
            first = Some(report);
        }
        times.push(wall);
        println!(
            "replay {run}: {n} admissions in {wall:.2} s = {:.0}/s; {cpu}; load average {}",
            n as f64 / wall,
            load()
        );
    }
    println!(
        "median: read {:.2} s, replay {:.2} s (target < 10 s)",
        median(read_times),
        median(times)
    );
    drop(store);
    drop(pool);
    drop(server);
    println!("load average at the end: {}", load());
}
