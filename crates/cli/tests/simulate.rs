//! The cluster simulator end to end against `portcullis up` (every service on one loopback
//! address): its connectors' reviews are answered, allowed and denied, none failing; their
//! inventories reach the continuous service (which finds the risky pods); every runtime
//! event is searchable in telemetry under its cluster; mitigation commands come and are
//! acked. Then `portcullis simulate` itself, re-run over the same clusters (new keys),
//! prints its summary and exits 0.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::up::{CLIENT_ENV, Up};
use common::{BIN, Run};
use portcullis_proto::common::v1::{PageRequest, ResourceRef, resource_ref};
use portcullis_proto::continuous::v1 as pc;
use portcullis_proto::continuous::v1::continuous_service_client::ContinuousServiceClient;
use portcullis_proto::telemetry::v1 as pt;
use portcullis_proto::telemetry::v1::telemetry_service_client::TelemetryServiceClient;
use portcullis_simulator::{Endpoints, Simulation, SimulationConfig};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

type Authed = InterceptedService<Channel, portcullis_kit::client::Credential>;

fn authed(url: &str, key: &str) -> Authed {
    let channel = portcullis_kit::client::ClientConfig::new(url)
        .unwrap()
        .connect_lazy()
        .unwrap();
    let credential = portcullis_kit::client::Credential::bearer(key)
        .unwrap()
        .with_timeout(Duration::from_secs(20));
    InterceptedService::new(channel, credential)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_connectors_get_answers_findings_stored_events_and_commands() {
    let up = Up::start();
    let mut config = SimulationConfig::new(Endpoints::single(&up.url), &up.admin_key);
    config.clusters = 2;
    config.pods = 30;
    config.rate = 40;
    config.runtime_rate = 20;
    let simulation = Simulation::start(config).await.expect("simulation starts");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let running = simulation.report();
    assert!(running.reviews_sent > 0, "{running:?}");
    let report = simulation.stop().await;
    eprintln!("{}", report.summary());

    // Reviews: both verdicts, none failed; exec/attach CONNECTs sent and (outside `dev`)
    // denied.
    assert!(report.reviews_allowed > 0, "{report:?}");
    assert!(report.reviews_denied > 0, "{report:?}");
    assert_eq!(report.reviews_failed, 0, "{report:?}");
    assert_eq!(
        report.reviews_allowed + report.reviews_denied,
        report.reviews_sent,
        "{report:?}"
    );
    assert!(report.exec_sent > 0 && report.exec_denied > 0, "{report:?}");
    assert!(report.review_p99_us >= report.review_p50_us && report.review_p50_us > 0);

    // Inventory: every pod synced, and the continuous service judged them.
    assert_eq!(report.pods_synced, 60, "{report:?}");
    let mut continuous = ContinuousServiceClient::new(authed(&up.url, &up.admin_key));
    let findings = continuous
        .list_findings(pc::ListFindingsRequest {
            page: Some(PageRequest {
                page_size: 1000,
                page_token: String::new(),
            }),
            cluster: Some(ResourceRef {
                r#ref: Some(resource_ref::Ref::Name("sim-0".into())),
            }),
            ..Default::default()
        })
        .await
        .expect("findings of sim-0")
        .into_inner()
        .findings;
    assert!(!findings.is_empty(), "no findings for the risky pods of sim-0");

    // Runtime events: all accepted, and each cluster's searchable under its id, exactly
    // as many as it sent.
    assert!(report.events_sent > 0, "{report:?}");
    assert_eq!(report.events_accepted, report.events_sent, "{report:?}");
    let mut telemetry = TelemetryServiceClient::new(authed(&up.url, &up.admin_key));
    for cluster in &report.clusters {
        let found = telemetry
            .search_events(pt::SearchEventsRequest {
                query: portcullis_simulator::events_query(&cluster.id),
                time_range: None,
                page: None,
            })
            .await
            .expect("search")
            .into_inner();
        assert!(!found.total_is_lower_bound);
        assert_eq!(found.total, cluster.events_sent, "{}: {report:?}", cluster.name);
    }

    // Commands: some came (the ruleset terminates and isolates; the policy isolates
    // privileged pods) and every one was acked.
    assert!(report.commands_received > 0, "{report:?}");
    assert_eq!(report.commands_acked, report.commands_received, "{report:?}");
    assert!(report.ok(), "{}", report.summary());

    // The command line, re-run over the same clusters: the setup is idempotent (the
    // clusters exist: their keys are rotated), and the summary says what happened.
    let mut cmd = Command::new(BIN);
    cmd.args(["--server", &up.url, "--api-key", &up.admin_key, "--timeout", "20s"])
        .args(["simulate", "--clusters", "2", "--pods", "10"])
        .args(["--rate", "20", "--runtime-rate", "10", "--duration", "2s"])
        .stdin(Stdio::null());
    for var in CLIENT_ENV {
        cmd.env_remove(var);
    }
    let run = Run::from(cmd.output().expect("run portcullis simulate"));
    run.assert_no_panic();
    assert_eq!(run.code, Some(0), "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("inventory:  20 pods synced"), "{}", run.stdout);
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("reviews:") && l.contains(" 0 failed")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.lines().last().is_some_and(|l| l.ends_with("ok")),
        "{}",
        run.stdout
    );
}
