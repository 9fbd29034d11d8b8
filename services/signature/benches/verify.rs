//! The signature verifier, in process, on the domain type (no gRPC):
//! `cargo bench -p portcullis-signature --bench verify`.
//!
//! - `cached`: a `Verifier::verify` answered from the verdict cache (target under 5 µs).
//! - `uncached`: verifications of distinct signed images (one legacy P-256 signature each),
//!   64 in flight on a 2-worker runtime, against `MemoryRegistry` (in-process, from memory)
//!   and against docker-registry; reported as time per verification (and elements/s).
//!   Target at least 5,000/s on 2 cores. `p256_verify` is the ECDSA verification alone, the
//!   bound the crypto puts on it, measured in the same run.
//! - `thousand_asks`: 1,000 concurrent `verify` calls for one image by tag (uncached): the
//!   time, and (printed) the registry rounds and HTTP requests they made.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use portcullis_cosign::testing::TestKey;
use portcullis_cosign::{Attestor, SignatureLayer, verify_legacy};
use portcullis_oci::manifest::COSIGN_SIGNATURE_ANNOTATION;
use portcullis_oci::testing::{self, MemoryRegistry, SignatureLayerSpec, simple_signing_payload};
use portcullis_oci::{Client, ClientConfig, Reference};
use portcullis_server::rate_limit::{RateLimitConfig, TenantLimit};
use portcullis_signature::{
    AttestorStore, BoxFuture, RegistryLogin, SignatureError, SignatureOptions, StoredAttestor, Verdict, Verifier,
    VerifyRequest,
};
use portcullis_test_kit::Registry;
use tokio::runtime::Runtime;

const TENANT: &str = "acme";
/// Verifications in flight at once in the uncached runs.
const IN_FLIGHT: usize = 64;
/// Distinct signed images per registry (each uncached run verifies each once).
const MEMORY_IMAGES: usize = 4000;
const DOCKER_IMAGES: usize = 1000;

/// The attestor from memory: the store is not what is measured.
struct MemoryStore {
    attestor: StoredAttestor,
}

impl AttestorStore for MemoryStore {
    fn attestor<'a>(
        &'a self,
        _tenant: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredAttestor>, SignatureError>> {
        let found = (name == self.attestor.name).then(|| self.attestor.clone());
        Box::pin(async move { Ok(found) })
    }

    fn registry_credentials<'a>(
        &'a self,
        _tenant: &'a str,
        _cluster: &'a portcullis_admission::ClusterSel,
    ) -> BoxFuture<'a, Result<Vec<RegistryLogin>, SignatureError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

fn verifier(key: &TestKey) -> Verifier {
    let store = MemoryStore {
        attestor: StoredAttestor {
            name: "release".into(),
            revision: 1,
            document_json:
                serde_json::json!({"name": "release", "type": "cosignPublicKey", "publicKey": key.public_pem()})
                    .to_string(),
        },
    };
    // The tenant's bucket is kept and checked on every call (its cost is measured), but
    // large enough that no call of the bench is refused.
    let options = SignatureOptions {
        rate_limit: RateLimitConfig {
            default: TenantLimit {
                per_second: 1e12,
                burst: u32::MAX,
            },
            ..RateLimitConfig::default()
        },
        ..SignatureOptions::default()
    };
    Verifier::new(Arc::new(store), options).unwrap()
}

fn request(image: &str) -> VerifyRequest {
    VerifyRequest {
        tenant: TENANT.into(),
        cluster: None,
        image: image.to_owned(),
        attestors: vec!["release".into()],
        digest: None,
    }
}

async fn verified(verifier: &Verifier, image: &str) {
    let answer = verifier.verify(&request(image)).await.unwrap();
    assert_eq!(answer.verdicts[0].verdict, Verdict::Verified, "{answer:?}");
}

/// Pushes `n` images signed by `key` to `host` (tags `v0`..); returns their references by
/// digest.
async fn signed_images(client: &Client, host: &str, key: &TestKey, n: usize) -> Vec<String> {
    let mut images = Vec::with_capacity(n);
    for i in 0..n {
        let target = Reference::parse(&format!("{host}/bench/app:v{i}")).unwrap();
        let image = testing::push_image(client, &target, &format!("image {i}"), "amd64")
            .await
            .unwrap();
        let payload = simple_signing_payload(&format!("{host}/bench/app"), &image.digest);
        let layer = SignatureLayerSpec {
            annotations: [(
                COSIGN_SIGNATURE_ANNOTATION.to_owned(),
                key.sign_base64(&payload).unwrap(),
            )]
            .into(),
            payload,
        };
        testing::push_cosign_signatures(client, &target, &image.digest, &[layer])
            .await
            .unwrap();
        images.push(format!("{host}/bench/app@{}", image.digest));
    }
    images
}

/// Verifies each of `images` once with a fresh verifier (attestor and registry client warmed
/// on `warm` first, untimed), `IN_FLIGHT` at a time on the runtime's workers; the time taken.
fn verify_all(runtime: &Runtime, key: &TestKey, warm: &str, images: &[String]) -> Duration {
    runtime.block_on(async {
        let verifier = verifier(key);
        verified(&verifier, warm).await;
        let images: Arc<Vec<String>> = Arc::new(images.to_vec());
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let workers: Vec<_> = (0..IN_FLIGHT)
            .map(|_| {
                let (verifier, images, next) = (verifier.clone(), images.clone(), next.clone());
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(image) = images.get(i) else { return };
                        verified(&verifier, image).await;
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.await.unwrap();
        }
        started.elapsed()
    })
}

/// Criterion's `iters` verifications over a pool of distinct images: as many fresh-verifier
/// passes over the pool as needed, only the verifications timed.
fn uncached(runtime: &Runtime, key: &TestKey, warm: &str, pool: &[String], iters: u64) -> Duration {
    let mut left = usize::try_from(iters).unwrap();
    let mut total = Duration::ZERO;
    while left > 0 {
        let n = left.min(pool.len());
        total += verify_all(runtime, key, warm, &pool[..n]);
        left -= n;
    }
    total
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let key = TestKey::generate().unwrap();
    let oci = Client::new(ClientConfig {
        deadline: Duration::from_secs(30),
        ..ClientConfig::default()
    })
    .unwrap();
    let (memory, docker, memory_images, docker_images) = runtime.block_on(async {
        let memory = MemoryRegistry::start().await.unwrap();
        let docker = Registry::start().await.unwrap();
        let memory_images = signed_images(&oci, &memory.host(), &key, MEMORY_IMAGES + 1).await;
        let docker_images = signed_images(&oci, &docker.host(), &key, DOCKER_IMAGES + 1).await;
        (memory, docker, memory_images, docker_images)
    });

    // (a) A verdict from the cache.
    let cached_verifier = verifier(&key);
    let image = memory_images[0].clone();
    runtime.block_on(verified(&cached_verifier, &image));
    let mut group = c.benchmark_group("cached");
    group.bench_function("verify", |b| {
        let request = request(&image);
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let answer = cached_verifier.verify(std::hint::black_box(&request)).await.unwrap();
                    debug_assert!(answer.cached);
                    std::hint::black_box(answer);
                }
                started.elapsed()
            })
        })
    });
    group.finish();

    // (b) Uncached verifications, and the ECDSA verification alone.
    let mut group = c.benchmark_group("uncached");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.bench_function("memory_registry", |b| {
        b.iter_custom(|iters| uncached(&runtime, &key, &memory_images[0], &memory_images[1..], iters))
    });
    group.bench_function("docker_registry", |b| {
        b.iter_custom(|iters| uncached(&runtime, &key, &docker_images[0], &docker_images[1..], iters))
    });
    group.finish();

    let payload = simple_signing_payload("registry.example/app", &portcullis_oci::Digest::of(b"image"));
    let signature = key.sign_base64(&payload).unwrap();
    let attestor = Attestor::public_key(&key.public_pem(), None).unwrap();
    let digest = portcullis_oci::Digest::of(b"image").to_string();
    let layers = [SignatureLayer {
        payload: &payload,
        signature: &signature,
        bundle: None,
        certificate: None,
    }];
    assert!(verify_legacy(&digest, &layers, &attestor).verified());
    let mut group = c.benchmark_group("p256_verify");
    group.throughput(Throughput::Elements(1));
    group.bench_function("legacy_layer", |b| {
        b.iter(|| verify_legacy(std::hint::black_box(&digest), &layers, &attestor))
    });
    group.finish();

    // (c) 1,000 concurrent asks for one image by tag, uncached: one resolution, one round.
    let thousand = |verifier: &Verifier, image: &str| {
        runtime.block_on(async {
            let asks: Vec<_> = (0..1000)
                .map(|_| {
                    let (verifier, image) = (verifier.clone(), image.to_owned());
                    tokio::spawn(async move { verified(&verifier, &image).await })
                })
                .collect();
            for ask in asks {
                ask.await.unwrap();
            }
        })
    };
    let tag = |i: usize| format!("{}/bench/app:v{i}", memory.host());
    let verifier = verifier(&key);
    runtime.block_on(verified(&verifier, &memory_images[0]));
    let (rounds, requests) = (verifier.registry_rounds(), memory.requests());
    thousand(&verifier, &tag(1));
    eprintln!(
        "thousand_asks: 1,000 concurrent asks of one image by tag made {} registry round(s) and {} HTTP request(s) \
         (one ask alone: see the test one_round_for_concurrent_asks)",
        verifier.registry_rounds() - rounds,
        memory.requests() - requests
    );
    let before = memory.requests();
    let alone = self::verifier(&key);
    runtime.block_on(verified(&alone, &memory_images[0]));
    let warm = memory.requests();
    runtime.block_on(verified(&alone, &tag(2)));
    eprintln!(
        "thousand_asks: one ask alone by tag made {} HTTP request(s) after warming ({} to warm)",
        memory.requests() - warm,
        warm - before
    );
    let mut group = c.benchmark_group("thousand_asks");
    group.sample_size(10);
    let next = AtomicUsize::new(3);
    group.bench_function("one_image_by_tag", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let verifier = self::verifier(&key);
                runtime.block_on(verified(&verifier, &memory_images[0]));
                // Each iteration a tag not asked before, wrapping around the pool.
                let i = 1 + next.fetch_add(1, Ordering::Relaxed) % MEMORY_IMAGES;
                let started = Instant::now();
                thousand(&verifier, &tag(i));
                total += started.elapsed();
            }
            total
        })
    });
    group.finish();
    drop((memory, docker));
}

criterion_group!(benches, bench);
criterion_main!(benches);
