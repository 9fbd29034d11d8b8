//! Finding 6: every call made with a tenant's key is rate limited per tenant, not only
//! Review. One tenant's connector floods Heartbeat (a database write each), GetEffectivePolicy
//! and WhoAmI from many tasks at once: beyond its budget it is refused `ResourceExhausted`
//! naming the limit, and another tenant's connector is answered as usual meanwhile.

use std::time::{Duration, Instant};

use portcullis_integration_tests::store::{Api, by_name, policy_doc};
use portcullis_policy_store::ServiceOptions;
use portcullis_policy_store::testing::{TestOptions, TestServer};
use portcullis_proto::policystore::v1 as pb;
use portcullis_server::Mode;
use portcullis_server::rate_limit::{RateLimitConfig, TenantLimit};
use tonic::Code;

/// The budget of the test: 20 calls a second, 40 at once.
const LIMIT: TenantLimit = TenantLimit {
    per_second: 20.0,
    burst: 40,
};
/// How long the flood lasts.
const FLOOD: Duration = Duration::from_secs(2);

async fn heartbeat(api: &mut Api) -> Result<(), tonic::Status> {
    let req = api.req(pb::HeartbeatRequest {
        cluster: None,
        connector_version: "1.0.0".into(),
        kubernetes_version: "v1.33.1".into(),
    });
    api.clusters.heartbeat(req).await.map(drop)
}

/// One of the three connector calls, by number.
async fn connector_call(api: &mut Api, which: usize) -> Result<(), tonic::Status> {
    match which % 3 {
        0 => heartbeat(api).await,
        1 => api.effective(None).await.map(drop),
        _ => api.who_am_i().await.map(drop),
    }
}

pub async fn a_flooding_connector_is_limited_and_another_tenant_is_not(mode: Mode) {
    let options = TestOptions {
        service: ServiceOptions {
            rate_limit: RateLimitConfig {
                default: LIMIT,
                ..RateLimitConfig::default()
            },
            ..ServiceOptions::default()
        },
        ..TestOptions::new(mode)
    };
    let server = TestServer::start(options).await.unwrap();
    let mut admin = Api::new(&server, &server.admin_key).await;
    admin.create_policy(&policy_doc("p", "block")).await.unwrap();
    let noisy = admin.register_cluster("noisy", by_name("p")).await.unwrap();
    let mut operator = admin.with_key(&server.operator_key);
    let mut b_admin = admin.with_key(&operator.create_tenant("tenant-b").await.unwrap());
    b_admin.create_policy(&policy_doc("pb", "block")).await.unwrap();
    let quiet = b_admin.register_cluster("quiet", by_name("pb")).await.unwrap();
    let mut quiet = b_admin.with_key(&quiet.connector_key);

    // The other tenant's usual latency, before the flood.
    let started = Instant::now();
    heartbeat(&mut quiet).await.unwrap();
    let usual = started.elapsed();

    // Eight tasks calling as fast as they are answered, for FLOOD.
    let flood_started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let mut api = admin.with_key(&noisy.connector_key);
        tasks.push(tokio::spawn(async move {
            let (mut served, mut refused, mut other) = (0_u64, 0_u64, Vec::new());
            let mut i = t;
            while flood_started.elapsed() < FLOOD {
                match connector_call(&mut api, i).await {
                    Ok(()) => served += 1,
                    Err(s) if s.code() == Code::ResourceExhausted => {
                        assert!(s.message().contains("rate limit"), "names the limit: {}", s.message());
                        refused += 1;
                    }
                    Err(s) => other.push(format!("{:?}: {}", s.code(), s.message())),
                }
                i += 1;
            }
            (served, refused, other)
        }));
    }

    // Meanwhile the other tenant's connector: every call answered, each in about its usual time.
    let mut slowest = Duration::ZERO;
    let mut calls = 0;
    while flood_started.elapsed() < FLOOD {
        let started = Instant::now();
        connector_call(&mut quiet, calls).await.unwrap();
        slowest = slowest.max(started.elapsed());
        calls += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (mut served, mut refused) = (0, 0);
    for task in tasks {
        let (s, r, other) = task.await.unwrap();
        assert!(other.is_empty(), "unexpected answers to the flood: {other:?}");
        served += s;
        refused += r;
    }
    let elapsed = flood_started.elapsed().as_secs_f64();
    // The budget: the burst plus the refill over the flood (and a little slack for timing).
    let budget = f64::from(LIMIT.burst) + LIMIT.per_second * (elapsed + 0.5);
    assert!(refused > 0, "the flood was never refused ({served} served)");
    assert!(
        (served as f64) <= budget,
        "{served} calls served in {elapsed:.2} s, over the budget of {budget:.0}"
    );
    // The other tenant's calls were all answered (unwrap above); none waited for the flood.
    // Its usual latency is milliseconds; the bound only catches a service slowed to a crawl.
    assert!(
        slowest < usual.max(Duration::from_millis(50)) * 20,
        "the other tenant's slowest call took {slowest:?} (usual {usual:?})"
    );
    crate::report::row(
        "6",
        "a connector floods Heartbeat, GetEffectivePolicy and WhoAmI from 8 tasks (limit 20/s, burst 40)",
        &format!("{served} served, {refused} refused ResourceExhausted in {elapsed:.1} s"),
        &format!("{calls} calls of another tenant answered, slowest {slowest:.1?} (usual {usual:.1?})"),
    );

    // Once the flood stops, the budget refills and the connector is served again.
    tokio::time::sleep(Duration::from_millis(200)).await;
    heartbeat(&mut admin.with_key(&noisy.connector_key)).await.unwrap();
}

portcullis_test_kit::both! {
    embedded: portcullis_server::Mode::Embedded,
    distributed: portcullis_server::Mode::Distributed;
    a_flooding_connector_is_limited_and_another_tenant_is_not,
}
