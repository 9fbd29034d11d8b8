//! The admission review path in process, for instruction counts: an [`Admission`] over a
//! fake policy store (a loopback gRPC server answering the effective policy and scan
//! summaries), judging `crates/engine/benches/data/review-8k.json` under
//! `crates/loadgen/data/policy-15-rules.yaml` N times once its caches are warm.
//!
//! ```text
//! cargo build --release -p portcullis-admission --example review_path
//! valgrind --tool=callgrind --toggle-collect='review_path::measured' \
//!     target/release/examples/review_path 2000
//! ```
//!
//! Only `measured` (the N reviews, and the decision publisher's work they cause) is counted:
//! Ir per review is the total divided by N. Everything runs on one current-thread runtime,
//! so the count does not depend on scheduling.
//!
//! `review_path --cpu [--nats-url URL] N` instead reads the process's CPU time (one thread
//! does all the work) over the N reviews and until the publisher has stored every decision
//! event, and prints `review_us` (CPU per review: the whole review path without a
//! transport). With `--nats-url` the events go to that nats-server's JetStream, as a
//! distributed admission replica's do, and it also prints `publish_us`: publishing alone,
//! N copies of a decision event the reviews published (captured off the bus), in rounds of
//! the publisher's batch. bench-admission.sh runs it for the webhook's bounds.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::time::Duration;

use portcullis_admission::decision_events::PublisherTask;
use portcullis_admission::metrics::Transport;
use portcullis_admission::rate_limit::RateLimitConfig;
use portcullis_admission::{Admission, AdmissionOptions, ClusterSel, Hooks, ReviewCaller, Upstream};
use portcullis_bus::{Bus, BusConfig};
use portcullis_proto::common::v1 as pc;
use portcullis_proto::policystore::v1 as pb;
use portcullis_proto::policystore::v1::policy_service_server::{PolicyService, PolicyServiceServer};
use portcullis_proto::policystore::v1::scan_result_service_server::{ScanResultService, ScanResultServiceServer};
use tonic::{Request, Response, Status};

const POLICY: &str = include_str!("../../../crates/loadgen/data/policy-15-rules.yaml");
const REVIEW: &[u8] = include_bytes!("../../../crates/engine/benches/data/review-8k.json");
const TENANT: &str = "t-bench";
const CLUSTER: &str = "c-bench";

/// The fake policy store: one cluster with the 15-rule policy; every digest scanned, one
/// medium vulnerability.
struct FakeStore;

fn unused<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("not in the fake store"))
}

#[tonic::async_trait]
impl PolicyService for FakeStore {
    async fn create_policy(
        &self,
        _: Request<pb::CreatePolicyRequest>,
    ) -> Result<Response<pb::CreatePolicyResponse>, Status> {
        unused()
    }
    async fn get_policy(&self, _: Request<pb::GetPolicyRequest>) -> Result<Response<pb::GetPolicyResponse>, Status> {
        unused()
    }
    async fn list_policies(
        &self,
        _: Request<pb::ListPoliciesRequest>,
    ) -> Result<Response<pb::ListPoliciesResponse>, Status> {
        unused()
    }
    async fn update_policy(
        &self,
        _: Request<pb::UpdatePolicyRequest>,
    ) -> Result<Response<pb::UpdatePolicyResponse>, Status> {
        unused()
    }
    async fn apply_policy(
        &self,
        _: Request<pb::ApplyPolicyRequest>,
    ) -> Result<Response<pb::ApplyPolicyResponse>, Status> {
        unused()
    }
    async fn duplicate_policy(
        &self,
        _: Request<pb::DuplicatePolicyRequest>,
    ) -> Result<Response<pb::DuplicatePolicyResponse>, Status> {
        unused()
    }
    async fn delete_policy(
        &self,
        _: Request<pb::DeletePolicyRequest>,
    ) -> Result<Response<pb::DeletePolicyResponse>, Status> {
        unused()
    }
    async fn list_policy_history(
        &self,
        _: Request<pb::ListPolicyHistoryRequest>,
    ) -> Result<Response<pb::ListPolicyHistoryResponse>, Status> {
        unused()
    }
    async fn get_policy_revision(
        &self,
        _: Request<pb::GetPolicyRevisionRequest>,
    ) -> Result<Response<pb::GetPolicyRevisionResponse>, Status> {
        unused()
    }
    async fn get_effective_policy(
        &self,
        _: Request<pb::GetEffectivePolicyRequest>,
    ) -> Result<Response<pb::GetEffectivePolicyResponse>, Status> {
        Ok(Response::new(pb::GetEffectivePolicyResponse {
            cluster_id: CLUSTER.into(),
            cluster_name: "bench".into(),
            policy: Some(pb::Policy {
                id: "p-bench".into(),
                name: "bench.admission15".into(),
                revision: 1,
                document_json: POLICY.into(),
                ..Default::default()
            }),
            settings: Some(pb::ClusterSettings {
                failure_mode: pc::FailureMode::FailOpen as i32,
                ..Default::default()
            }),
            cluster_generation: 1,
        }))
    }
}

#[tonic::async_trait]
impl ScanResultService for FakeStore {
    async fn upload_scan_result(
        &self,
        _: Request<pb::UploadScanResultRequest>,
    ) -> Result<Response<pb::UploadScanResultResponse>, Status> {
        unused()
    }
    async fn get_latest_scan_result(
        &self,
        _: Request<pb::GetLatestScanResultRequest>,
    ) -> Result<Response<pb::GetLatestScanResultResponse>, Status> {
        unused()
    }
    async fn list_scan_results(
        &self,
        _: Request<pb::ListScanResultsRequest>,
    ) -> Result<Response<pb::ListScanResultsResponse>, Status> {
        unused()
    }
    async fn get_scan_summaries(
        &self,
        request: Request<pb::GetScanSummariesRequest>,
    ) -> Result<Response<pb::GetScanSummariesResponse>, Status> {
        let scanned_at = prost_types::Timestamp {
            seconds: time::OffsetDateTime::now_utc().unix_timestamp() - 3600,
            nanos: 0,
        };
        let digests = request
            .into_inner()
            .digests
            .into_iter()
            .map(|digest| pb::DigestScanSummaries {
                summaries: vec![pc::ScanSummary {
                    digest: digest.clone(),
                    scan_type: pc::ScanType::Vulnerability as i32,
                    scanned_at: Some(scanned_at),
                    scanner: "trivy 0.58.1".into(),
                    findings: 1,
                    max_severity: pc::Severity::Medium as i32,
                    cvss: Vec::new(),
                    result_id: "r-bench".into(),
                }],
                digest,
            })
            .collect();
        Ok(Response::new(pb::GetScanSummariesResponse { digests }))
    }
}

/// The N reviews counted (by name, in callgrind's `--toggle-collect`). With `pace`, each
/// review waits while that publisher has more than 1,000 events queued, as a server's
/// intake is paced by its transport: a loop faster than the bus stores would only fill the
/// queue and drop (waiting costs no CPU).
#[inline(never)]
fn measured(
    rt: &tokio::runtime::Runtime,
    admission: &Admission,
    caller: &ReviewCaller,
    n: usize,
    pace: Option<&PublisherTask>,
) -> usize {
    rt.block_on(async {
        let mut allowed = 0;
        for _ in 0..n {
            let out = admission
                .review(caller, None, REVIEW, Transport::Grpc)
                .await
                .expect("review");
            allowed += usize::from(out.decision.allowed);
            // Lets the decision publisher drain its queue, as a busy server's would.
            tokio::task::yield_now().await;
            while pace.is_some_and(|task| task.stats().queued() > 1_000) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        allowed
    })
}

/// CPU seconds (user + system) this process has used, from `/proc/self/stat`.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command (which may hold spaces): state is the 3rd, utime the 14th.
    let rest = &stat[stat.rfind(')').expect("stat") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // The kernel's USER_HZ is 100 on Linux.
    ticks / 100.0
}

/// `--cpu`: the review path's CPU per review, publisher included; then, on NATS, the CPU of
/// publishing a captured decision event alone.
fn cpu_mode(
    rt: &tokio::runtime::Runtime,
    admission: Admission,
    task: PublisherTask,
    caller: &ReviewCaller,
    bus: &Bus,
    n: usize,
    nats: bool,
) {
    let before = task.stats();
    let started = cpu_seconds();
    let allowed = measured(rt, &admission, caller, n, Some(&task));
    drop(admission);
    let stats = rt.block_on(task.shutdown(Duration::from_secs(60)));
    let review_s = cpu_seconds() - started;
    let published = stats.published - before.published;
    assert_eq!(stats.dropped, 0, "the publisher dropped events: {stats:?}");
    assert_eq!((stats.submitted - before.submitted) as usize, n, "{stats:?}");
    assert_eq!(stats.published, stats.submitted, "every decision published: {stats:?}");
    println!("{n} reviews, {allowed} allowed, {published} decision events published");
    println!("review_us {:.2}", review_s * 1e6 / n as f64);
    if !nats {
        return;
    }
    // The last decision event the reviews published, read back from the stream.
    let event = rt.block_on(async {
        let last = bus.last_sequence().await.unwrap();
        let filter = portcullis_bus::TopicFilter::all();
        let start = portcullis_bus::StartFrom::after(last.saturating_sub(1));
        let mut read = bus.subscribe_broadcast(&filter, start).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), read.next())
            .await
            .expect("the last decision event")
            .expect("the last decision event")
            .event
    });
    let batch = portcullis_admission::decision_events::DEFAULT_BATCH;
    let started = cpu_seconds();
    rt.block_on(async {
        let mut sent = 0;
        while sent < n {
            let round = batch.min(n - sent);
            let publishes = (sent..sent + round).map(|i| {
                let mut e = portcullis_bus::Event::new(
                    format!("publish-floor-{i}"),
                    TENANT,
                    portcullis_admission::decision_events::TOPIC,
                    event.payload.clone(),
                );
                e.headers = event.headers.clone();
                bus.publish(e)
            });
            for result in futures::future::join_all(publishes).await {
                result.expect("publish");
            }
            sent += round;
        }
    });
    let publish_s = cpu_seconds() - started;
    println!(
        "publish_us {:.2} ({n} events of {} bytes, rounds of {batch})",
        publish_s * 1e6 / n as f64,
        event.payload.len()
    );
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let cpu = args.iter().any(|a| a == "--cpu");
    args.retain(|a| a != "--cpu");
    let nats_url = args.iter().position(|a| a == "--nats-url").map(|i| {
        let url = args.get(i + 1).expect("--nats-url URL").clone();
        args.drain(i..i + 2);
        url
    });
    let n: usize = args.first().map_or(1000, |a| a.parse().expect("N: a count"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (admission, caller, task, bus) = rt.block_on(async {
        let incoming = tonic::transport::server::TcpIncoming::bind(([127, 0, 0, 1], 0).into()).unwrap();
        let url = format!("http://{}", incoming.local_addr().unwrap());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(PolicyServiceServer::new(FakeStore))
                .add_service(ScanResultServiceServer::new(FakeStore))
                .serve_with_incoming(incoming),
        );
        let upstream = Upstream::new(&url, None, "service-token", &Default::default(), false).unwrap();
        let bus = match &nats_url {
            Some(url) => Bus::connect_nats(url, BusConfig::default()).await.unwrap(),
            None => Bus::memory(BusConfig::embedded()).unwrap(),
        };
        let mut options = AdmissionOptions {
            rate_limit: RateLimitConfig::unlimited(),
            ..AdmissionOptions::default()
        };
        // No background refresh while counting (callgrind is slow).
        options.policy_cache.refresh_after = Duration::from_secs(3600);
        options.scan_cache.refresh_after = Duration::from_secs(3600);
        let (admission, task) = Admission::new(upstream, bus.clone(), options, Hooks::default()).unwrap();
        let caller = ReviewCaller {
            tenant: TENANT.into(),
            own_cluster: Some(CLUSTER.into()),
        };
        // Warm: the policy and the scan summaries are fetched once.
        let first = admission
            .review(&caller, Some(ClusterSel::Id(CLUSTER.into())), REVIEW, Transport::Grpc)
            .await
            .unwrap();
        assert!(first.decision.degraded.is_empty(), "{:?}", first.decision.degraded);
        (admission, caller, task, bus)
    });
    if cpu {
        cpu_mode(&rt, admission, task, &caller, &bus, n, nats_url.is_some());
        return;
    }
    std::mem::forget(task);
    let allowed = measured(&rt, &admission, &caller, n, None);
    println!("{n} reviews, {allowed} allowed");
}
