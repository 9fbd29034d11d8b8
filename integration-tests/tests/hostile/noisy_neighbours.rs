//! Finding 11: shared caches and queues bound each tenant's share. A tenant reviewing pod
//! after pod with images never seen before fills the scan cache; another tenant's summaries
//! stay held (its reviews need no fetch), and its reviews are answered as usual meanwhile.
//! The decision-event queue's share and compiling without a global lock are shown by the
//! admission crate's own tests (`a_flooding_tenant_holds_only_its_share_of_the_queue`,
//! `one_tenants_slow_compile_does_not_delay_anothers`), where the timing can be held still.

use std::time::{Duration, Instant};

use portcullis_admission::AdmissionOptions;
use portcullis_admission::testing::StackOptions;
use portcullis_integration_tests::admission::{Env, container, create_pod, pod, pod_spec, policy, review_raw};
use portcullis_integration_tests::store::by_name;
use portcullis_policy_client::scans::ScanCacheOptions;
use portcullis_server::Mode;
use serde_json::{Value, json};

/// The scan cache of the test: 60 digests in all, 20 per tenant when full.
const MAX_ENTRIES: usize = 60;
const SHARE: usize = 20;
/// Digests of the quiet tenant's images.
const QUIET_IMAGES: usize = 5;

fn digest(tenant: u8, i: usize) -> String {
    format!("sha256:{tenant:02x}{i:062x}")
}

/// A pod of `images` containers, one per digest.
fn review_of(digests: &[String]) -> Value {
    let containers = digests
        .iter()
        .enumerate()
        .map(|(i, d)| container(&format!("c{i}"), &format!("registry.example.com/shop/api@{d}"), false))
        .collect();
    create_pod(pod("api", "shop", pod_spec(false, containers)))
}

fn scan_policy(name: &str) -> String {
    policy(
        name,
        json!([{"type": "vulnerabilities", "action": "block",
                "statement": {"properties": [{"key": "max-severity", "value": "high"}]}}]),
    )
    .to_string()
}

pub async fn a_tenant_flooding_new_images_keeps_to_its_share_of_the_scan_cache(mode: Mode) {
    let options = StackOptions {
        admission: AdmissionOptions {
            scan_cache: ScanCacheOptions {
                refresh_after: Duration::from_secs(600),
                max_entries: MAX_ENTRIES,
                max_per_tenant: SHARE,
            },
            ..AdmissionOptions::default()
        },
        ..StackOptions::new(mode)
    };
    let env = Env::start(options, &scan_policy("noisy_scans")).await;
    let mut operator = env.admin.with_key(&env.stack.store.operator_key);
    let mut quiet_admin = env.admin.with_key(&operator.create_tenant("quiet").await.unwrap());
    quiet_admin.create_policy(&scan_policy("quiet_scans")).await.unwrap();
    let quiet = quiet_admin
        .register_cluster("q1", by_name("quiet_scans"))
        .await
        .unwrap();
    let mut client = env.client(0).await;
    let quiet_digests: Vec<String> = (0..QUIET_IMAGES).map(|i| digest(0xb, i)).collect();
    let quiet_review = review_of(&quiet_digests).to_string().into_bytes();

    // The quiet tenant's images are looked up once and held.
    let started = Instant::now();
    let answer = review_raw(&mut client, &quiet.connector_key, None, quiet_review.clone())
        .await
        .unwrap();
    let usual = started.elapsed();
    assert!(answer.allowed(), "{:?}", answer.json);
    let scans = env.stack.replicas[0].admission().scans();
    assert!(quiet_digests.iter().all(|d| scans.holds("quiet", d)));

    // The noisy tenant reviews 40 pods of 10 images each, all new: 400 digests, far more
    // than the cache holds. The quiet tenant's images above stay idle meanwhile (plain LRU
    // would evict them first); its reviews of another image go on.
    let busy_review = review_of(&[digest(0xc, 0)]).to_string().into_bytes();
    let noisy = async {
        for pod_number in 0..40 {
            let digests: Vec<String> = (0..10).map(|i| digest(0xa, pod_number * 10 + i)).collect();
            let answer = env.review(&review_of(&digests)).await.unwrap();
            assert!(answer.allowed(), "{:?}", answer.json);
        }
    };
    let bystander = async {
        let mut client = env.client(0).await;
        let mut slowest = Duration::ZERO;
        for _ in 0..20 {
            let started = Instant::now();
            let answer = review_raw(&mut client, &quiet.connector_key, None, busy_review.clone())
                .await
                .unwrap();
            slowest = slowest.max(started.elapsed());
            assert!(answer.allowed(), "{:?}", answer.json);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        slowest
    };
    let ((), slowest) = tokio::join!(noisy, bystander);

    // The quiet tenant's summaries were never pushed out; the cache kept its bound.
    let evicted: Vec<&String> = quiet_digests.iter().filter(|d| !scans.holds("quiet", d)).collect();
    assert!(
        evicted.is_empty(),
        "the noisy tenant evicted the quiet tenant's {evicted:?}"
    );
    assert!(scans.len() <= MAX_ENTRIES + 1, "{} digests held", scans.len());
    // Usual latency is milliseconds; the bound only catches a review held up by the flood.
    assert!(
        slowest < usual.max(Duration::from_millis(50)) * 20,
        "the quiet tenant's slowest review took {slowest:?} (usual {usual:?})"
    );
    crate::report::row(
        "11",
        "a tenant reviewing 400 never-seen images against a scan cache of 60 (share 20)",
        &format!("its own older summaries evicted; {} digests held in all", scans.len()),
        &format!(
            "another tenant's {QUIET_IMAGES} summaries all still held; its 20 reviews' slowest {slowest:.1?} (usual {usual:.1?})"
        ),
    );
}

portcullis_test_kit::both! {
    embedded: portcullis_server::Mode::Embedded,
    distributed: portcullis_server::Mode::Distributed;
    a_tenant_flooding_new_images_keeps_to_its_share_of_the_scan_cache,
}
