//! Issue 17's hostile inputs: one module per finding, each run embedded and distributed, each
//! showing other tenants are still served.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod extreme_fields;
mod yaml_aliases;
