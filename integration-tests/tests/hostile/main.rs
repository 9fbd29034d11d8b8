//! Hostile input and faults: what one tenant or a stranger sends cannot hurt another tenant.
//! One module per attack; each scenario runs embedded and distributed (`both!`) and shows
//! that the service still answers others normally while the attack runs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

#[path = "../support/tls.rs"]
mod tls;

mod connector_flood;
mod extreme_fields;
mod noisy_neighbours;
mod poison_events;
mod report;
mod rotate_role;
mod signature_rules;
mod stalled_handshakes;
mod subject_mismatch;
mod webhook_slots;
mod yaml_aliases;
