//! The telemetry correlation service's domain core, free of I/O: security events and their
//! conversions ([`event`]), the correlation entity ([`entity`]), the search filter language
//! ([`query`]), correlation rules and the correlator ([`correlate`]), and the alert lifecycle
//! with the cluster risk score ([`alert`]), and the protobuf conversions ([`convert`]); the
//! storage contract ([`store`]).

pub mod alert;
pub mod convert;
pub mod correlate;
pub mod entity;
pub mod event;
pub mod query;
pub mod storage;
pub mod store;

pub use entity::{Entity, Workload};
pub use event::{Action, EventError, Mitigation, SecurityEvent, Severity, Source};
