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
        "  snapshot of {} pods: {:.2} s wall; CPU {:.2} s in this process + {:.2} s in PostgreSQL backends; {changed} changed",
        pods.len(),
        elapsed.as_secs_f64(),
        cpu.as_secs_f64(),
        server.as_secs_f64()
    );
    (elapsed, changed)
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
    for _ in 0..ROUNDS {
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
