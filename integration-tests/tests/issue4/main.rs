//! Issue 4, the admission service: every item is one scenario function, run by `both!`
//! against a fresh stack (a policy store and admission replicas following its bus) in
//! embedded mode (SQLite, the in-process bus) and in distributed mode (a fresh PostgreSQL
//! database, a private nats-server), through the generated gRPC clients and the HTTPS webhook.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;
mod decisions;
mod resilience;
mod service;
#[allow(dead_code)]
#[path = "../issue3/support.rs"]
mod support;
mod webhook;

/// For each `module::scenario`, a test `embedded::scenario` and a test
/// `distributed::scenario`; the scenario starts its own stack in the mode it is given.
macro_rules! both {
    ($($module:ident :: $name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::$module::$name(portcullis_server::Mode::Embedded).await;
                }
            )*
        }
        mod distributed {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::$module::$name(portcullis_server::Mode::Distributed).await;
                }
            )*
        }
    };
}

both!(
    decisions::pods_blocked_logged_and_clean,
    decisions::workloads_with_a_violating_template,
    decisions::connect_exec_attach_portforward,
    decisions::updates_and_ephemeral_containers,
    decisions::namespaced_definition_and_exception,
    decisions::the_parse_follows_what_the_policy_reads,
    service::policy_update_reaches_every_replica,
    service::conformance_reviews_answered,
    service::malformed_input_refused,
    service::other_clusters_refused,
    service::revoked_key_refused,
    webhook::webhook_over_tls,
    resilience::scan_summaries_fetched_and_followed,
    resilience::store_outage_keeps_admission_serving,
    resilience::unseen_cluster_gets_the_default_failure_mode,
    resilience::rate_limits_per_tenant,
    resilience::review_stream_answers_each_item,
);

/// Scenario 11: nats-server stops and restarts under the admission service (distributed only:
/// embedded has no broker to stop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_nats_outage_does_not_stop_admission() {
    service::nats_outage_does_not_stop_admission().await;
}
