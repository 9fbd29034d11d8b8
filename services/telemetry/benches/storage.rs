//! The store on PostgreSQL (a database the bench creates and drops, through
//! `portcullis-test-kit`; `PORTCULLIS_TEST_POSTGRES` names another server):
//! - `insert/falco_batch`: sustained inserts of realistic runtime events (Falco JSON read
//!   into `SecurityEvent`s, ~1.5 KB each with their raw JSON), batches of 10,000 as two
//!   concurrent inserts of 5,000, every search index in place;
//! - `query/*` over `TELEMETRY_BENCH_ROWS` stored events (default 10,000,000) spread over 7
//!   days in 20 clusters, generated server-side with `INSERT ... SELECT generate_series`:
//!   `terms_1h` (cluster and namespace over one hour, first page), `free_text_7d` (a word of
//!   the summaries over the 7 days), `count_24h` (`type:runtime` over 24 h, counted to
//!   10,000+), `pod_type_24h` (pod and type over 24 h), `rule_24h` (a rule over 24 h). Each
//!   search is the first page of 100 and the count.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use portcullis_telemetry_service::SecurityEvent;
use portcullis_telemetry_service::query::Query;
use portcullis_telemetry_service::storage::{DAY_MICROS, SqlStore};
use portcullis_telemetry_service::store::{PageRequest, TelemetryStore, TimeRange};
use portcullis_test_kit::TestDatabase;
use sea_orm::ConnectionTrait;
use time::OffsetDateTime;
use time::macros::datetime;

fn falco_json(i: usize) -> String {
    format!(
        r#"{{"output":"10:00:00.123456789: Notice A shell was spawned in a container with an attached terminal (user=root user_loginuid=-1 k8s.ns=ns{ns} k8s.pod=web{d}-7c9f8d6b5-x2x{i} container=abc shell=bash parent=runc cmdline=bash terminal=34816 container_id=abc image=registry.example/web)","priority":"Notice","rule":"Terminal shell in container","time":"2026-12-07T10:{m:02}:{s:02}.{i:09}Z","source":"syscall","output_fields":{{"container.id":"abc","container.name":"app","container.image.repository":"registry.example/web","container.image.tag":"1.2","container.image.digest":"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef","evt.time":1765101600123456789,"k8s.ns.name":"ns{ns}","k8s.pod.name":"web{d}-7c9f8d6b5-x2x{i}","k8s.pod.labels":"[app:web, pod-template-hash:7c9f8d6b5, tier:frontend]","proc.cmdline":"bash","proc.name":"bash","proc.pid":4242,"proc.pname":"runc","user.loginuid":-1,"user.name":"root"}},"tags":["container","shell","mitre_execution","T1059"],"hostname":"node-1"}}"#,
        ns = i % 50,
        d = i % 1000,
        m = (i / 60) % 60,
        s = i % 60,
    )
}

/// The end of the generated data (the queries look back from here).
const END: OffsetDateTime = datetime!(2026-11-30 00:00 UTC);

/// Generates `rows` events of tenant `bench` over the 7 days before [`END`], server-side.
async fn generate(store: &SqlStore, rows: u64) {
    let end = END.unix_timestamp() * 1_000_000;
    let start = end - 7 * DAY_MICROS;
    store
        .ensure_partitions((0..7).map(|d| start + d * DAY_MICROS))
        .await
        .unwrap();
    let chunk = 1_000_000u64;
    let mut from = 0u64;
    while from < rows {
        let to = (from + chunk).min(rows);
        let t = Instant::now();
        // Spread evenly over the 7 days; fields cycle with co-prime-ish moduli.
        let sql = format!(
            "INSERT INTO tm_events (tenant_id, id, occurred_at, cluster_id, source, severity, rule, summary, action, namespace, pod, pod_uid, container, image, image_repo, digest, subresource, workload_kind, workload_name, labels, mitigation, details)
             SELECT 'bench', 'g' || g, {start} + (g * {span} / {rows}), 'cluster-' || (g % 20),
               (ARRAY['runtime','admission','finding','mitigation','signature'])[1 + g % 5], (g % 5)::smallint,
               'rule-' || (g % 53), 'A shell was spawned in pod web-' || (g % 5000) || ' by user ' || md5(g::text),
               (ARRAY['warning','block','open','isolate','failed'])[1 + g % 5], 'ns-' || (g % 100), 'web-' || (g % 5000),
               'uid-' || (g % 5000), 'app', 'registry.example/web-' || (g % 200) || ':1.' || (g % 7),
               'registry.example/web-' || (g % 200), 'sha256:' || md5((g % 200)::text), '', 'Deployment',
               'web-' || (g % 1000), NULL, NULL, '{{\"bench\":true}}'
             FROM generate_series({from}::bigint, {last}::bigint) AS g",
            span = 7 * DAY_MICROS,
            last = to - 1,
        );
        store.connection().execute_unprepared(&sql).await.unwrap();
        eprintln!("generated rows {from}..{to} in {:.1}s", t.elapsed().as_secs_f64());
        from = to;
    }
    store
        .connection()
        .execute_unprepared("ANALYZE tm_events")
        .await
        .unwrap();
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(10)
        .measurement_time(Duration::from_secs(20))
        .configure_from_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let database = rt.block_on(TestDatabase::create()).unwrap();
    let store = rt.block_on(SqlStore::connect(&database.url)).unwrap();

    // Sustained inserts: fresh ids every batch (the raw JSON, hence the id, varies with n).
    let mut g = c.benchmark_group("insert");
    g.throughput(Throughput::Elements(10_000));
    let mut n = 0usize;
    g.bench_function("falco_batch", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let events: Vec<SecurityEvent> = (n..n + 10_000)
                    .map(|i| SecurityEvent::from_falco_json("t-insert", "prod", falco_json(i).as_bytes()).unwrap())
                    .collect();
                n += 10_000;
                let (a, b2) = events.split_at(5_000);
                let t = Instant::now();
                let (x, y) = rt.block_on(async { tokio::join!(store.insert_events(a), store.insert_events(b2)) });
                total += t.elapsed();
                assert_eq!(x.unwrap() + y.unwrap(), 10_000);
            }
            total
        })
    });
    g.finish();

    let rows: u64 = std::env::var("TELEMETRY_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let t = Instant::now();
    rt.block_on(generate(&store, rows));
    eprintln!("generated {rows} rows in {:.1}s", t.elapsed().as_secs_f64());

    let hours = |h: i64| TimeRange {
        from: END - time::Duration::hours(h),
        to: END,
    };
    let queries: [(&str, &str, TimeRange); 5] = [
        ("terms_1h", "cluster:cluster-3 namespace:ns-23", hours(1)),
        ("free_text_7d", "c4ca42", hours(24 * 7)),
        ("count_24h", "type:runtime", hours(24)),
        ("pod_type_24h", "pod:web-42 type:admission", hours(24)),
        ("rule_24h", "rule:rule-7", hours(24)),
    ];
    let mut g = c.benchmark_group("query");
    for (name, q, range) in queries {
        let query = Query::parse(q).unwrap();
        let page = PageRequest { size: 100, token: None };
        let first = rt.block_on(store.search("bench", &query, range, &page)).unwrap();
        eprintln!(
            "{name} ({q}): {} on the first page, total {}{}",
            first.events.len(),
            first.total,
            if first.total_is_lower_bound { "+" } else { "" }
        );
        g.bench_function(name, |b| {
            b.iter(|| black_box(rt.block_on(store.search("bench", &query, range, &page)).unwrap()))
        });
    }
    g.finish();
    drop(store);
    drop(database);
    c.final_summary();
}
