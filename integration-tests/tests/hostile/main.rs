//! Hostile inputs and faults (issue 17): one module per finding, each scenario run embedded
//! and distributed (`both!`), each showing another tenant is still served normally.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod rotate_role;
mod signature_rules;
