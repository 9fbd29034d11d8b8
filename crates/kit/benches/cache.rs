//! A cache hit on admission's hot path (a review's policy lookup), three ways: the policy
//! cache admission had before the kit (a `HashMap` of slots behind a `Mutex`, reproduced
//! here as it was), `moka` (sync and future), and the kit's [`Cache`].
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis_kit::cache::{Cache, CacheConfig, LoadAborted};

/// admission's `ClusterSel`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ClusterSel {
    Id(String),
    #[allow(dead_code)]
    Name(String),
}

/// Stands for admission's `ClusterPolicy`.
#[derive(Debug)]
struct Policy {
    #[allow(dead_code)]
    revision: u64,
}

const CLUSTERS: usize = 1000;
const REFRESH_AFTER: Duration = Duration::from_secs(30);

fn cluster(i: usize) -> ClusterSel {
    ClusterSel::Id(format!("3f2a9c1e-0000-4000-8000-{i:012}"))
}

/// admission's policy cache before the kit: the slot and the hit path, as they were.
mod before {
    use super::*;

    #[derive(Default)]
    pub struct Slot {
        value: Option<Arc<Policy>>,
        fetched: Option<Instant>,
        inflight: Option<()>,
        #[allow(dead_code)]
        epoch: u64,
        last_used: Option<Instant>,
    }

    pub struct PolicyCache {
        slots: Mutex<HashMap<(String, ClusterSel), Slot>>,
    }

    impl PolicyCache {
        pub fn filled() -> PolicyCache {
            let mut slots = HashMap::new();
            for i in 0..CLUSTERS {
                slots.insert(
                    ("tenant-1".to_owned(), cluster(i)),
                    Slot {
                        value: Some(Arc::new(Policy { revision: 1 })),
                        fetched: Some(Instant::now()),
                        ..Slot::default()
                    },
                );
            }
            PolicyCache {
                slots: Mutex::new(slots),
            }
        }

        /// `PolicyCache::cached` as it was.
        pub fn cached(&self, tenant: &str, cluster: &ClusterSel) -> Option<Arc<Policy>> {
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            let key = (tenant.to_owned(), cluster.clone());
            let slot = slots.get_mut(&key)?;
            slot.last_used = Some(Instant::now());
            let value = slot.value.clone()?;
            let stale = slot.fetched.is_none_or(|at| at.elapsed() >= REFRESH_AFTER);
            if stale && slot.inflight.is_none() {
                unreachable!("fresh in the benchmark");
            }
            Some(value)
        }
    }
}

fn hits(c: &mut Criterion) {
    let wanted = cluster(CLUSTERS / 2);
    let mut group = c.benchmark_group("policy cache hit");

    let old = before::PolicyCache::filled();
    group.bench_function("before (Mutex<HashMap>)", |b| {
        b.iter(|| black_box(old.cached(black_box("tenant-1"), black_box(&wanted))).unwrap());
    });

    let sync: moka::sync::Cache<(String, ClusterSel), Arc<Policy>> = moka::sync::Cache::builder()
        .max_capacity(100_000)
        .time_to_live(REFRESH_AFTER)
        .build();
    let future: moka::future::Cache<(String, ClusterSel), Arc<Policy>> = moka::future::Cache::builder()
        .max_capacity(100_000)
        .time_to_live(REFRESH_AFTER)
        .build();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for i in 0..CLUSTERS {
        let policy = Arc::new(Policy { revision: 1 });
        sync.insert(("tenant-1".to_owned(), cluster(i)), policy.clone());
        runtime.block_on(future.insert(("tenant-1".to_owned(), cluster(i)), policy));
    }
    group.bench_function("moka::sync", |b| {
        b.iter(|| {
            let key = (black_box("tenant-1").to_owned(), black_box(&wanted).clone());
            black_box(sync.get(&key)).unwrap()
        });
    });
    group.bench_function("moka::future", |b| {
        b.iter(|| {
            let key = (black_box("tenant-1").to_owned(), black_box(&wanted).clone());
            black_box(futures::executor::block_on(future.get(&key))).unwrap()
        });
    });

    let mut config = CacheConfig::<LoadAborted>::with_ttl(Duration::MAX, 100_000);
    config.refresh = REFRESH_AFTER..=REFRESH_AFTER;
    let kit: Cache<(String, ClusterSel), Arc<Policy>, LoadAborted> = Cache::new(config);
    runtime.block_on(async {
        for i in 0..CLUSTERS {
            kit.get(("tenant-1".to_owned(), cluster(i)), || async {
                Ok(Arc::new(Policy { revision: 1 }))
            })
            .get()
            .await
            .unwrap();
        }
    });
    group.bench_function("kit", |b| {
        b.iter(|| {
            let key = (black_box("tenant-1").to_owned(), black_box(&wanted).clone());
            black_box(kit.get_cached(&key, || async { Err(LoadAborted("fresh in the benchmark".into())) })).unwrap()
        });
    });
    group.finish();
}

criterion_group!(benches, hits);
criterion_main!(benches);
