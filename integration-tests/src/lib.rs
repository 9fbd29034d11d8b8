//! End-to-end suites of the policy store and the admission service, through the real gRPC
//! API and webhook, each scenario in embedded mode (SQLite, the in-process bus) and
//! distributed mode (PostgreSQL, a private nats-server) by `portcullis_test_kit::both!`.
//!
//! The suites are named by feature, one test binary each (`cargo test -p
//! portcullis-integration-tests --test NAME`): `policies`, `access`, `events`, `restart` (the
//! policy store), `decisions`, `admission`, `resilience`, `webhook` (the admission service), `trace` (trace
//! context across both) and `hostile` (hostile input and faults, SECURITY.md).
//! `faults` runs every service as its own process of the `portcullis` binary and kills or
//! restarts one piece at a time ([`process_cluster`]).
//! This library holds what they share: the store's clients and assertions ([`store`]), the
//! admission stack ([`admission`]), the processes of the `faults` suite ([`process_cluster`]),
//! and the attack table the hostile suite writes for
//! SECURITY.md ([`security_report`]); fixtures and documents come from `portcullis_test_kit`.

// Test support: a failed call or a malformed answer fails the test that made it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

pub mod admission;
pub mod process_cluster;
pub mod security_report;
pub mod store;
