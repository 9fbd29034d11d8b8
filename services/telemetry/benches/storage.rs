//! The store on PostgreSQL (a database the bench creates and drops, through
//! `portcullis-test-kit`; `PORTCULLIS_TEST_POSTGRES` names another server):
//! - `insert/falco_batch_words`: sustained inserts of realistic runtime events (Falco JSON
//!   read into `SecurityEvent`s, ~1.5 KB each with their raw JSON), batches of 10,000 as two
//!   concurrent inserts of 5,000 (the store's `COPY` path), every search index in place, free
//!   text indexed by words (the schema's); `insert/falco_batch_trigram`: the same with the
//!   summary's trigram index of the first schema instead, for comparison in the same run;
//! - `query/*` over `TELEMETRY_BENCH_ROWS` stored events (default 10,000,000) spread over 8
//!   days, generated server-side with `INSERT ... SELECT generate_series` into the
//!   partitioned table with every index in place: 20 clusters, 47 namespaces, 20,011 pods,
//!   Falco-like summaries from eight templates (shells, sensitive files, outbound
//!   connections, package managers, crypto miners rarely) with per-pod container ids,
//!   users, pids. Each query's first page of 100 and its count; before measuring, each
//!   prints its match count and the `EXPLAIN (ANALYZE, BUFFERS)` summary of each statement
//!   the search runs, named (plan nodes that ran, buffers, execution time), so that a figure
//!   is known to come from rows found by the intended plan.
//!
//! `TELEMETRY_BENCH_DB=NAME` (iterating on the queries): the database `NAME` on the same
//! server is used and kept instead of a fresh one — created and generated when it holds no
//! events of the bench, reused as it is otherwise (the inserts, which would swap the summary's
//! index over millions of rows, are then skipped). Drop it when done: `dropdb NAME`.
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
/// Days of generated data before [`END`].
const DAYS: i64 = 8;

/// Generates `rows` events of tenant `bench` over the [`DAYS`] days before [`END`],
/// server-side. Fields cycle with co-prime moduli so every combination the queries ask
/// for occurs: type `g % 5`, cluster `g % 20`, namespace `g % 47`, pod `(g * 7919) % 20011`.
/// The URL of the kept database `name` on the test server (`PORTCULLIS_TEST_POSTGRES`, else
/// the local one), created when missing.
async fn kept_database(name: &str) -> String {
    assert!(
        name.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
        "TELEMETRY_BENCH_DB: lowercase letters, digits and _ only"
    );
    let admin_url = std::env::var("PORTCULLIS_TEST_POSTGRES")
        .unwrap_or_else(|_| portcullis_test_kit::postgres::DEFAULT_ADMIN_URL.to_owned());
    let admin = sea_orm::Database::connect(admin_url.as_str()).await.unwrap();
    let exists = admin
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            format!("SELECT 1 AS one FROM pg_database WHERE datname = '{name}'"),
        ))
        .await
        .unwrap()
        .is_some();
    if !exists {
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
    }
    admin.close().await.unwrap();
    let (base, _) = admin_url.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}

/// Whether generated events are stored already (tenant `bench`).
async fn generated(store: &SqlStore) -> bool {
    store
        .connection()
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT EXISTS (SELECT 1 FROM tm_events WHERE tenant_id = 'bench') AS found",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<bool>("", "found")
        .unwrap()
}

async fn generate(store: &SqlStore, rows: u64) {
    let end = END.unix_timestamp() * 1_000_000;
    let start = end - DAYS * DAY_MICROS;
    store
        .ensure_partitions((0..DAYS).map(|d| start + d * DAY_MICROS))
        .await
        .unwrap();
    let chunk = 500_000u64;
    let mut from = 0u64;
    while from < rows {
        let to = (from + chunk).min(rows);
        let t = Instant::now();
        // The summary: one of eight Falco-like outputs (a crypto miner one in 100,000), with
        // the pod's name, its container id, a user and a pid as Falco writes them.
        let sql = format!(
            "INSERT INTO tm_events (tenant_id, id, occurred_at, cluster_id, source, severity, rule, summary, action, namespace, pod, pod_uid, container, image, image_repo, digest, subresource, workload_kind, workload_name, labels, mitigation, details)
             SELECT 'bench', 'g' || g, {start} + (g * {span} / {rows}), 'cluster-' || (g % 20),
               (ARRAY['runtime','admission','finding','mitigation','signature'])[1 + g % 5], (g % 5)::smallint,
               CASE WHEN g % 997 = 0 THEN 'Detect outbound connections to common miner pool ports'
                    ELSE (ARRAY['Terminal shell in container','Read sensitive file untrusted','Launch Package Management Process in Container',
                                'Unexpected outbound connection destination','Write below etc','Contact K8S API Server From Container',
                                'Drop and execute new binary in container','Clear Log Activities'])[1 + g % 8] END,
               CASE WHEN g % 100000 = 7 THEN 'Outbound connection to a crypto mining pool (command=xmrig -o stratum+tcp://pool.example:3333 connection=10.0.' || (g % 250) || '.7:3333 user=root container_id=' || c || ' k8s.pod=' || p || ')'
                    ELSE (ARRAY[
                      'A shell was spawned in a container with an attached terminal (user=root user_loginuid=-1 k8s.ns=' || ns || ' k8s.pod=' || p || ' container=' || c || ' shell=bash parent=runc cmdline=bash terminal=34816 image=registry.example/web)',
                      'Sensitive file opened for reading by non-trusted program (user=' || u || ' program=cat command=cat /etc/shadow file=/etc/shadow parent=bash k8s.pod=' || p || ' container=' || c || ')',
                      'Package management process launched in container (user=root command=apt-get install -y curl pid=' || (g % 32768) || ' k8s.pod=' || p || ' container=' || c || ')',
                      'Disallowed outbound connection destination (command=curl http://198.51.100.' || (g % 250) || '/install.sh connection=10.0.1.4:' || (30000 + g % 30000) || '->198.51.100.' || (g % 250) || ':80 user=' || u || ' k8s.pod=' || p || ')',
                      'File below /etc opened for writing (user=' || u || ' command=sed -i s/a/b/ /etc/resolv.conf file=/etc/resolv.conf parent=sh pid=' || (g % 32768) || ' k8s.pod=' || p || ' container=' || c || ')',
                      'Unexpected connection to K8s API Server from container (command=kubectl get secrets -A k8s.ns=' || ns || ' k8s.pod=' || p || ' container=' || c || ' image=bitnami/kubectl)',
                      'Executing binary not part of base image (proc.exe=/tmp/.x/run proc.cmdline=run --daemon user=' || u || ' k8s.pod=' || p || ' container=' || c || ')',
                      'Log files were tampered (command=truncate -s 0 /var/log/auth.log file=/var/log/auth.log user=root k8s.pod=' || p || ' container=' || c || ')'
                    ])[1 + g % 8] END,
               (ARRAY['warning','block','open','isolate','failed'])[1 + g % 5], ns, p,
               'uid-' || pn, 'app', 'registry.example/web-' || (pn % 200) || ':1.' || (pn % 7),
               'registry.example/web-' || (pn % 200), 'sha256:' || md5((pn % 200)::text), '', 'Deployment',
               'web-' || (pn % 1000), NULL, NULL, '{{\"bench\":true}}'
             FROM (SELECT g, (g * 7919) % 20011 AS pn, 'ns-' || (g % 47) AS ns, 'web-' || ((g * 7919) % 20011) AS p,
                          substr(md5(((g * 7919) % 20011)::text), 1, 12) AS c,
                          (ARRAY['root','www-data','nobody','app','postgres'])[1 + g % 5 ] AS u
                   FROM generate_series({from}::bigint, {last}::bigint) AS g) AS s",
            span = DAYS * DAY_MICROS,
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

/// Swaps the summary's index: to the trigram index of the first schema, or back to the word
/// index of the schema (`word_index`: its definition, read before it was dropped).
async fn summary_index(store: &SqlStore, trigram: bool, word_index: &str) {
    let statements = if trigram {
        [
            "DROP INDEX ix_tm_events_summary_words",
            "CREATE INDEX ix_tm_events_summary ON tm_events USING gin (summary gin_trgm_ops)",
        ]
    } else {
        ["DROP INDEX ix_tm_events_summary", word_index]
    };
    for sql in statements {
        store.connection().execute_unprepared(sql).await.unwrap();
    }
}

/// `text` with day partitions' names folded (`tm_events_p20261129_...` → `tm_events_p*_...`).
fn fold_partitions(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("tm_events_p") {
        let (head, tail) = rest.split_at(i + "tm_events_p".len());
        out.push_str(head);
        let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 8 {
            out.push('*');
        }
        rest = &tail[if digits == 8 { 8 } else { 0 }..];
    }
    out.push_str(rest);
    out
}

/// One line per plan: its top node, the scan nodes that ran (partitions folded), buffers and
/// times.
fn plan_summary(lines: &[String]) -> String {
    let mut nodes: Vec<(String, usize)> = Vec::new();
    let mut out = Vec::new();
    if let Some(top) = lines.first() {
        out.push(top.split("  (").next().unwrap_or(top).trim().to_owned());
    }
    for l in lines.iter().skip(1) {
        let t = l.trim_start().trim_start_matches("->").trim();
        if t.contains("Scan") && !t.contains("never executed") {
            // "Index Scan using ix_... on tm_events_p20261129 ..." folded over partitions.
            let node = fold_partitions(t.split(" on ").next().unwrap_or(t).split("  (").next().unwrap_or(t));
            match nodes.iter_mut().find(|(n, _)| *n == node) {
                Some((_, k)) => *k += 1,
                None => nodes.push((node, 1)),
            }
        }
        if t.starts_with("Rows Removed by Filter") {
            out.push(t.to_owned());
        }
    }
    for (n, k) in nodes {
        out.push(format!("{n} ×{k}"));
    }
    if let Some(b) = lines.iter().find(|l| l.trim_start().starts_with("Buffers:")) {
        out.push(b.trim().to_owned());
    }
    for l in lines
        .iter()
        .filter(|l| l.starts_with("Planning Time") || l.starts_with("Execution Time"))
    {
        out.push(l.clone());
    }
    out.join("; ")
}

fn insert_bench(c: &mut Criterion, rt: &tokio::runtime::Runtime, store: &SqlStore, name: &str, n: &mut usize) {
    let mut g = c.benchmark_group("insert");
    g.throughput(Throughput::Elements(10_000));
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let events: Vec<SecurityEvent> = (*n..*n + 10_000)
                    .map(|i| SecurityEvent::from_falco_json("t-insert", "prod", falco_json(i).as_bytes()).unwrap())
                    .collect();
                *n += 10_000;
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
    let kept = std::env::var("TELEMETRY_BENCH_DB").ok().filter(|n| !n.is_empty());
    let (database, url) = match &kept {
        Some(name) => (None, rt.block_on(kept_database(name))),
        None => {
            let database = rt.block_on(TestDatabase::create()).unwrap();
            let url = database.url.clone();
            (Some(database), url)
        }
    };
    let store = rt.block_on(SqlStore::connect(&url)).unwrap();
    let reused = rt.block_on(generated(&store));
    let word_index = rt
        .block_on(store.connection().query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT pg_get_indexdef('ix_tm_events_summary_words'::regclass) AS def",
        )))
        .unwrap()
        .unwrap()
        .try_get::<String>("", "def")
        .unwrap()
        // The definition of a partitioned table's index reads `ON ONLY`: recreated, it must
        // reach the partitions.
        .replacen(" ON ONLY ", " ON ", 1);

    // Sustained inserts: fresh ids every batch (the raw JSON, hence the id, varies with n);
    // the word index, then the trigram index, then the word index again for the queries.
    if !reused {
        let mut n = 0usize;
        insert_bench(&mut c, &rt, &store, "falco_batch_words", &mut n);
        rt.block_on(summary_index(&store, true, &word_index));
        insert_bench(&mut c, &rt, &store, "falco_batch_trigram", &mut n);
        rt.block_on(summary_index(&store, false, &word_index));

        let rows: u64 = std::env::var("TELEMETRY_BENCH_ROWS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10_000_000);
        let t = Instant::now();
        rt.block_on(generate(&store, rows));
        eprintln!("generated {rows} rows in {:.1}s", t.elapsed().as_secs_f64());
    } else {
        eprintln!("reusing the events generated in {url}; inserts skipped");
    }

    let hours = |h: i64| TimeRange {
        from: END - time::Duration::hours(h),
        to: END,
    };
    let queries: [(&str, &str, TimeRange); 9] = [
        ("terms_1h", "cluster:cluster-3 namespace:ns-23", hours(1)),
        ("free_text_common_7d", "shell", hours(24 * 7)),
        ("free_text_rare_7d", "xmrig", hours(24 * 7)),
        ("free_text_phrase_7d", "\"cat /etc/shadow\"", hours(24 * 7)),
        // A word of most events (seven templates of eight), and a common word over an hour.
        ("free_text_dense_7d", "container", hours(24 * 7)),
        ("free_text_common_1h", "shell", hours(1)),
        ("count_24h", "type:runtime", hours(24)),
        ("pod_type_24h", "pod:web-42 type:admission", hours(24)),
        (
            "rule_24h",
            "rule:\"Detect outbound connections to common miner pool ports\"",
            hours(24),
        ),
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
        assert!(first.total > 0, "{name} matches no row: not a measurement");
        let plans = rt.block_on(store.explain_search("bench", &query, range)).unwrap();
        for (what, plan) in &plans {
            eprintln!("  {what}: {}", plan_summary(plan));
        }
        g.bench_function(name, |b| {
            b.iter(|| black_box(rt.block_on(store.search("bench", &query, range, &page)).unwrap()))
        });
    }
    g.finish();
    drop(store);
    drop(database);
    c.final_summary();
}
