//! Portcullis domain types, the one definition of each, shared by every service, the CLI
//! and the tests:
//! - [`ids`]: validated newtypes for tenant, cluster and key ids;
//! - [`Role`] of an API key and [`FailureMode`] of a cluster;
//! - [`KeyIdentity`]: who a valid API key is;
//! - [`topic`]: the registry of event topics and the one subject builder
//!   (`pc.<tenant>.evt.<topic>`, `pc.<tenant>.cmd.<cluster>`);
//! - [`error`]: one error kind with its gRPC code and HTTP status in one table, and
//!   (feature `grpc`) `From<Error> for tonic::Status`.
//!
//! No I/O: the engine depends on this crate (without `grpc`).

pub mod error;
pub mod identity;
pub mod ids;
mod modes;
pub mod topic;

pub use error::{Error, ErrorKind, FieldViolation, ServeError};
pub use identity::KeyIdentity;
pub use ids::{ClusterId, IdError, KeyId, TenantId};
pub use modes::{FailureMode, Role, UnknownValue};
pub use topic::Topic;
