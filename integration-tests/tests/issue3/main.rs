//! Issue 3, "How it must be checked": every item is one scenario function, run by `both!`
//! against a fresh server in embedded mode (SQLite in a temporary data folder, the
//! in-process bus, the `portcullis up` bootstrap) and in distributed mode (a fresh
//! PostgreSQL database, a private nats-server with JetStream), through the generated gRPC
//! clients only. One test binary, so the heavy dependencies link once.
//!
//! The outbox scenario differs by mode: distributed stops nats-server between commit and
//! publish; embedded has no broker to stop, so it runs the real gRPC services with an outbox
//! relay whose sink (the in-process bus) fails until released (`events::embedded_outbox_*`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod access;
mod events;
mod policies;
mod restart;
mod support;

/// For each `module::scenario`, a test `embedded::scenario` and a test
/// `distributed::scenario`, each with its own server.
macro_rules! both {
    ($($module:ident :: $name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let mut server = portcullis_policy_store::testing::TestServer::embedded()
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                    crate::$module::$name(&mut server).await;
                }
            )*
        }
        mod distributed {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let mut server = portcullis_policy_store::testing::TestServer::distributed()
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                    crate::$module::$name(&mut server).await;
                }
            )*
        }
    };
}

both!(
    policies::create,
    policies::update_with_stale_revision_writes_nothing,
    policies::duplicate_naming,
    policies::rename_refused,
    policies::identical_apply_makes_no_revision_and_no_event,
    policies::history,
    policies::delete_while_assigned_refused,
    policies::every_validation_error_names_its_field,
    access::tenant_cannot_touch_another_tenant,
    access::viewer_cannot_write,
    access::connector_reads_only_its_own_effective_policy,
    access::revoked_key_stops_working,
    events::events_arrive_with_the_revision,
    events::two_broadcast_subscribers_get_every_event,
    restart::restart_keeps_everything,
);

/// The outbox survives a NATS outage between commit and publish (distributed only: the
/// embedded counterpart is `events::embedded_outbox_survives_a_failing_sink`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_event_survives_a_nats_outage() {
    let mut server = portcullis_policy_store::testing::TestServer::distributed()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    events::event_survives_a_nats_outage(&mut server).await;
}
