//! `portcullis-continuous`: continuous scanning of running pods (issue 19), its I/O-free core.
//!
//! Pods admitted before a policy tightened, or while a cluster failed open, are found here:
//! connectors stream their cluster's running pods, the engine judges each with its
//! continuous semantics ([`CompiledPolicy::evaluate_running`], POLICY.md section 4 point 5),
//! and findings and mitigation commands follow. This crate holds the decisions, with no
//! network, database or bus:
//! - [`inventory`]: what is kept of a running pod (and why that is enough for every rule);
//! - [`sync`]: the sequencing of a cluster's inventory stream (snapshot, deltas, gaps);
//! - [`findings`]: findings opened, kept and resolved, and the commands they order;
//! - [`preview`]: re-evaluation of a cluster, and the same without side effects for a draft
//!   policy (the impact preview).
//!
//! [`store`] is the contract of what the service keeps, and [`storage`] implements it on
//! PostgreSQL or SQLite. The gRPC and NATS adapters come on top, on the service kit, as for the other
//! services.
//!
//! [`CompiledPolicy::evaluate_running`]: portcullis_engine::evaluate::CompiledPolicy::evaluate_running

pub mod findings;
pub mod inventory;
pub mod preview;
pub mod storage;
pub mod store;
pub mod sync;
