//! The inventory ingestion benchmark of issue 19 (see BENCHMARKS.md): a snapshot of 100,000
//! realistic running pods (`tests/support/pods.rs`) written through
//! [`ContinuousStore::write_inventory`] in pages of 500 pods (one call per page, as the
//! service writes a connector's `PodBatch`), into a fresh PostgreSQL database (the local
//! server, `PORTCULLIS_TEST_POSTGRES` or a private `initdb` cluster, as the tests find it;
//! created and dropped here) and, as a baseline of the same run, into a fresh SQLite file.
//! Target: the PostgreSQL snapshot in at most 10 s on 2 cores.
//!
//! Per backend it prints the wall time of:
//! - `first snapshot`: every pod new (inserted with its digests), into a fresh database;
//! - `same snapshot again`: a re-snapshot where no pod changed (each page's upsert compares
//!   the stored projection hashes and reports nothing);
//! - `snapshot, 10% changed`: the same with a label changed on every tenth pod.
//!
//! - `bound: bare COPY` (PostgreSQL only, in a fresh database of its own): the same rows
//!   (same columns, the same digests rows) serialised the same way and written by a bare
//!   binary `COPY` into fresh tables with the same columns and indexes (`LIKE ... INCLUDING
//!   ALL`), one transaction per page of 500 as the store's, with no `RETURNING` and no
//!   logic: what this machine's PostgreSQL can take at best, to judge the target by.
//!
//! Around each it prints the load average, the CPU of the client and of the PostgreSQL
//! backends, and the server's WAL and buffer-write counters (`pg_stat_wal`,
//! `pg_stat_bgwriter`, server-wide: another database's work on the same server shows up
//! there too); at the start, the CPU model, the commit and the server's settings that
//! matter here.
//!
//! The pods are projected beforehand (the `reevaluate` bench measures projection); the
//! projection's serialisation to its row is part of each write. A bench binary rather than
//! criterion: one sample is seconds of database work. The machine is shared, so each
//! snapshot also prints its CPU time: this process's (the client, and all of SQLite's work)
//! and that of the PostgreSQL backends serving the database (from `/proc`, the server being
//! local). `ROUNDS` fresh databases per backend (the median is printed).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

#[path = "../tests/support/pods.rs"]
mod pods;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use portcullis_continuous::inventory::PodProjection;
use portcullis_continuous::storage::SqlStore;
use portcullis_continuous::store::{ContinuousStore, InventoryWrite};
use portcullis_test_kit::{DataDir, TestDatabase};
use serde_json::Value;
use time::OffsetDateTime;

const PODS: usize = 100_000;
const PAGE: usize = 500;
const ROUNDS: usize = 1;

/// CPU time of this process (all threads: the client side, and all of SQLite's work).
fn process_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(u64::try_from(t.tv_sec).unwrap(), u32::try_from(t.tv_nsec).unwrap())
}

/// CPU ticks (user + system) of each PostgreSQL backend serving the store's database, read
/// from `/proc` (the server runs on this machine); empty for SQLite.
async fn server_ticks(store: &SqlStore) -> HashMap<i32, u64> {
    use sea_orm::{ConnectionTrait, DbBackend, Statement};
    let db = store.connection();
    if db.get_database_backend() != DbBackend::Postgres {
        return HashMap::new();
    }
    let rows = db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()",
        ))
        .await
        .unwrap();
    let mut ticks = HashMap::new();
    for row in rows {
        let pid: i32 = row.try_get("", "pid").unwrap();
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command's closing parenthesis: utime and stime are the 12th and
        // 13th there (fields 14 and 15 of the line).
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let t = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        ticks.insert(pid, t);
    }
    ticks
}

/// CPU time the server spent between two readings (clock ticks of 10 ms).
fn server_cpu(before: &HashMap<i32, u64>, after: &HashMap<i32, u64>) -> Duration {
    let ticks: u64 = after
        .iter()
        .map(|(pid, t)| t.saturating_sub(before.get(pid).copied().unwrap_or(0)))
        .sum();
    Duration::from_millis(ticks * 10)
}

/// One snapshot of `pods` in pages; returns the wall time and how many pods were reported
/// changed.
async fn snapshot(store: &SqlStore, pods: &[PodProjection]) -> (Duration, usize) {
    let now = OffsetDateTime::now_utc();
    let counters_before = server_counters(store).await;
    let server_before = server_ticks(store).await;
    let cpu_before = process_cpu();
    let started = Instant::now();
    store
        .write_inventory("bench", "cluster", InventoryWrite::BeginSnapshot, now)
        .await
        .unwrap();
    let mut changed = 0;
    for page in pods.chunks(PAGE) {
        let applied = store
            .write_inventory("bench", "cluster", InventoryWrite::Upsert(page.to_vec()), now)
            .await
            .unwrap();
        changed += applied.changed.len();
    }
    let end = store
        .write_inventory("bench", "cluster", InventoryWrite::EndSnapshot, now)
        .await
        .unwrap();
    assert!(end.removed.is_empty());
    let elapsed = started.elapsed();
    let cpu = process_cpu() - cpu_before;
    let server = server_cpu(&server_before, &server_ticks(store).await);
    eprintln!(
        "  snapshot of {} pods: {:.2} s wall; CPU {:.2} s in this process + {:.2} s in PostgreSQL backends; {changed} changed; load average {}",
        pods.len(),
        elapsed.as_secs_f64(),
        cpu.as_secs_f64(),
        server.as_secs_f64(),
        load_average()
    );
    print_counters(&counters_before, &server_counters(store).await);
    (elapsed, changed)
}

/// The load average (1, 5 and 15 minutes), as `/proc/loadavg` says.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// Server-wide WAL and buffer-write counters (PostgreSQL 15's names); empty for SQLite.
async fn server_counters(store: &SqlStore) -> Vec<(String, i64)> {
    use sea_orm::{ConnectionTrait, DbBackend, Statement};
    let db = store.connection();
    if db.get_database_backend() != DbBackend::Postgres {
        return Vec::new();
    }
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT w.wal_records, w.wal_fpi, w.wal_bytes::int8 AS wal_bytes, w.wal_buffers_full, \
             w.wal_write, w.wal_sync, (w.wal_write_time + w.wal_sync_time)::int8 AS wal_io_ms, \
             b.buffers_checkpoint, b.buffers_clean, b.buffers_backend, b.buffers_backend_fsync, \
             b.checkpoints_timed + b.checkpoints_req AS checkpoints \
             FROM pg_stat_wal w, pg_stat_bgwriter b",
        ))
        .await
        .unwrap()
        .unwrap();
    [
        "wal_records",
        "wal_fpi",
        "wal_bytes",
        "wal_buffers_full",
        "wal_write",
        "wal_sync",
        "wal_io_ms",
        "buffers_checkpoint",
        "buffers_clean",
        "buffers_backend",
        "buffers_backend_fsync",
        "checkpoints",
    ]
    .into_iter()
    .map(|c| (c.to_owned(), row.try_get::<i64>("", c).unwrap()))
    .chain(std::iter::once(("tcp_delayed_acks".to_owned(), delayed_acks())))
    .collect()
}

/// Linux's count of delayed ACKs sent (`TcpExt: DelayedACKs`, machine-wide): a client that
/// leaves Nagle's algorithm on stalls on them, 40 ms each on loopback.
fn delayed_acks() -> i64 {
    let netstat = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let lines: Vec<&str> = netstat.lines().filter(|l| l.starts_with("TcpExt:")).collect();
    let [names, values] = lines.as_slice() else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "DelayedACKs")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// The counters' growth between two readings.
fn print_counters(before: &[(String, i64)], after: &[(String, i64)]) {
    if after.is_empty() {
        return;
    }
    let deltas: Vec<String> = before
        .iter()
        .zip(after)
        .map(|((name, b), (_, a))| format!("{name} {}", a - b))
        .collect();
    eprintln!("    server-wide: {}", deltas.join(", "));
}

/// What the figures depend on: the CPU, the commit, the server and its settings.
async fn print_conditions(store: &SqlStore) {
    use sea_orm::{ConnectionTrait, DbBackend, Statement};
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    eprintln!(
        "CPU {cpu}, {} cores; commit {commit}; load average {}",
        std::thread::available_parallelism().map_or(0, usize::from),
        load_average()
    );
    let db = store.connection();
    let rows = db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT name || '=' || current_setting(name) AS s FROM pg_settings WHERE name IN \
             ('server_version', 'shared_buffers', 'wal_buffers', 'max_wal_size', 'synchronous_commit', \
             'full_page_writes', 'wal_compression', 'autovacuum', 'checkpoint_timeout', 'jit', 'fsync') \
             ORDER BY name",
        ))
        .await
        .unwrap();
    let settings: Vec<String> = rows.iter().map(|r| r.try_get::<String>("", "s").unwrap()).collect();
    eprintln!("PostgreSQL: {}", settings.join(", "));
}

/// The bound: `pods` written by bare binary `COPY` into fresh tables shaped as the store's
/// (same columns and indexes), one transaction per page, the rows serialised as the store
/// serialises them; no `RETURNING`, no logic.
async fn copy_bound(store: &SqlStore, pods: &[PodProjection]) -> Duration {
    use sea_orm::sqlx;
    let pool = store.connection().get_postgres_connection_pool();
    let mut conn = pool.acquire().await.unwrap();
    for ddl in [
        "CREATE TABLE bound_pods (LIKE cn_pods INCLUDING ALL)",
        "CREATE TABLE bound_pod_digests (LIKE cn_pod_digests INCLUDING ALL)",
    ] {
        sqlx::query(ddl).execute(&mut *conn).await.unwrap();
    }
    let counters_before = server_counters(store).await;
    let server_before = server_ticks(store).await;
    let cpu_before = process_cpu();
    let started = Instant::now();
    let now_us = i64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000).unwrap();
    for page in pods.chunks(PAGE) {
        let mut rows = copy_header();
        let mut digests = copy_header();
        for pod in page {
            let projection = pod.to_row().unwrap();
            let hash = fnv1a(&projection);
            copy_tuple(
                &mut rows,
                &[
                    b"bench",
                    b"cluster",
                    pod.uid().as_bytes(),
                    pod.namespace().as_bytes(),
                    pod.name().as_bytes(),
                    &projection,
                    &hash.to_be_bytes(),
                    &1i64.to_be_bytes(),
                    &now_us.to_be_bytes(),
                    &2i32.to_be_bytes(),
                ],
            );
            let run: std::collections::BTreeSet<&str> = pod.digests_run().collect();
            for digest in run {
                copy_tuple(
                    &mut digests,
                    &[b"bench", digest.as_bytes(), b"cluster", pod.uid().as_bytes()],
                );
            }
        }
        rows.extend_from_slice(&(-1i16).to_be_bytes());
        digests.extend_from_slice(&(-1i16).to_be_bytes());
        sqlx::query("BEGIN").execute(&mut *conn).await.unwrap();
        let mut copy = conn
            .copy_in_raw(
                "COPY bound_pods (tenant_id, cluster_id, uid, namespace, name, projection, projection_hash, \
                 generation, synced_at, change) FROM STDIN (FORMAT binary)",
            )
            .await
            .unwrap();
        copy.send(rows).await.unwrap();
        copy.finish().await.unwrap();
        let mut copy = conn
            .copy_in_raw("COPY bound_pod_digests (tenant_id, digest, cluster_id, uid) FROM STDIN (FORMAT binary)")
            .await
            .unwrap();
        copy.send(digests).await.unwrap();
        copy.finish().await.unwrap();
        sqlx::query("COMMIT").execute(&mut *conn).await.unwrap();
    }
    let elapsed = started.elapsed();
    let cpu = process_cpu() - cpu_before;
    let server = server_cpu(&server_before, &server_ticks(store).await);
    eprintln!(
        "  bare COPY of {} pods: {:.2} s wall; CPU {:.2} s in this process + {:.2} s in PostgreSQL backends; load average {}",
        pods.len(),
        elapsed.as_secs_f64(),
        cpu.as_secs_f64(),
        server.as_secs_f64(),
        load_average()
    );
    print_counters(&counters_before, &server_counters(store).await);
    elapsed
}

/// A binary `COPY` stream's header (signature, no flags, no extension).
fn copy_header() -> Vec<u8> {
    let mut out = b"PGCOPY\n\xff\r\n\0".to_vec();
    out.extend_from_slice(&0i32.to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes());
    out
}

/// One tuple of a binary `COPY` stream: each field's length, then its bytes.
fn copy_tuple(out: &mut Vec<u8>, fields: &[&[u8]]) {
    out.extend_from_slice(&i16::try_from(fields.len()).unwrap().to_be_bytes());
    for f in fields {
        out.extend_from_slice(&i32::try_from(f.len()).unwrap().to_be_bytes());
        out.extend_from_slice(f);
    }
}

/// A 64-bit FNV-1a hash, as the store's `projection_hash` (the bound pays the same work).
fn fnv1a(bytes: &[u8]) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(h.to_ne_bytes())
}

fn median(mut d: Vec<Duration>) -> Duration {
    d.sort_unstable();
    d[d.len() / 2]
}

fn report(backend: &str, what: &str, d: Duration, all: &[Duration]) {
    let rate = PODS as f64 / d.as_secs_f64();
    let all: Vec<String> = all.iter().map(|d| format!("{:.2}", d.as_secs_f64())).collect();
    println!(
        "ingest/{backend}/{what}: {:.2} s ({rate:.0} pods/s; rounds: {} s)",
        d.as_secs_f64(),
        all.join(", ")
    );
}

async fn run(backend: &str, open: impl AsyncFn() -> (SqlStore, Box<dyn std::any::Any>), pods: &[PodProjection]) {
    let changed_pods: Vec<PodProjection> = pods
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if i % 10 == 0 {
                let mut row: Value = serde_json::from_slice(&p.to_row().unwrap()).unwrap();
                row["labels"]["bench/changed"] = Value::String("yes".to_owned());
                PodProjection::from_row(&serde_json::to_vec(&row).unwrap()).unwrap()
            } else {
                p.clone()
            }
        })
        .collect();
    let mut first = Vec::new();
    let mut again = Vec::new();
    let mut tenth = Vec::new();
    let mut bound = Vec::new();
    for _ in 0..ROUNDS {
        if backend == "postgres" {
            let (store, guard) = open().await;
            print_conditions(&store).await;
            bound.push(copy_bound(&store, pods).await);
            drop(store);
            drop(guard);
        }
        let (store, guard) = open().await;
        let (d, changed) = snapshot(&store, pods).await;
        assert_eq!(changed, PODS);
        first.push(d);
        let (d, changed) = snapshot(&store, pods).await;
        assert_eq!(changed, 0);
        again.push(d);
        let (d, changed) = snapshot(&store, &changed_pods).await;
        assert_eq!(changed, PODS / 10);
        tenth.push(d);
        // The pool goes before its database (the guard drops the database or the folder).
        drop(store);
        drop(guard);
    }
    report(backend, "first_snapshot", median(first.clone()), &first);
    report(backend, "same_snapshot_again", median(again.clone()), &again);
    report(backend, "snapshot_10pct_changed", median(tenth.clone()), &tenth);
    if !bound.is_empty() {
        report(backend, "bound_bare_copy", median(bound.clone()), &bound);
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument picks one backend.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wanted = |backend: &str| filter.as_deref().is_none_or(|f| backend.contains(f));
    let started = Instant::now();
    let json = pods::running_pods(PODS);
    let pods: Vec<PodProjection> = json
        .iter()
        .map(|j| PodProjection::from_pod_json(j.as_bytes()).unwrap())
        .collect();
    let row_bytes: usize = pods.iter().map(|p| p.to_row().unwrap().len()).sum();
    eprintln!(
        "{PODS} pods, {} MB of rows, pages of {PAGE}; prepared in {:.1} s",
        row_bytes / 1_000_000,
        started.elapsed().as_secs_f64()
    );
    drop(json);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        if wanted("postgres") {
            run(
                "postgres",
                async || {
                    let database = TestDatabase::create().await.unwrap_or_else(|e| panic!("{e}"));
                    let store = SqlStore::connect(&database.url).await.unwrap();
                    (store, Box::new(database) as Box<dyn std::any::Any>)
                },
                &pods,
            )
            .await;
        }
        if wanted("sqlite") {
            run(
                "sqlite",
                async || {
                    let dir = DataDir::new().unwrap();
                    let store = SqlStore::connect(&dir.sqlite_url("continuous.db")).await.unwrap();
                    (store, Box::new(dir) as Box<dyn std::any::Any>)
                },
                &pods,
            )
            .await;
        }
    });
}
