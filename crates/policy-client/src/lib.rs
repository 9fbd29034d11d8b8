//! What a service reads from the policy store with the service credential, under deadlines,
//! cached: the shared library of the services that need it (admission, signature,
//! continuous scanning, telemetry), so no service depends on another.
//!
//! - [`upstream`]: the store's client ([`Upstream`]): key introspection, effective policies
//!   and scan summaries, each call with the service credential and a deadline.
//! - [`keys`]: tenant keys checked through introspection, cached
//!   ([`keys::IntrospectingAuthenticator`], the services' [`portcullis_server::Authenticator`]).
//! - [`scans`]: image scan summaries per tenant and digest, cached ([`scans::ScanCache`]).
//! - [`effective`]: a cluster's effective policy read and sorted, its settings, and policies
//!   compiled once per revision ([`effective::CompiledPolicies`]).
//! - [`metrics`]: the hook through which a service records the key cache's hits and misses
//!   under its own instrument names.

pub mod effective;
pub mod error;
pub mod keys;
pub mod metrics;
pub mod scans;
pub mod upstream;

pub use error::PolicyClientError;
pub use upstream::{ClusterSel, Upstream, UpstreamTimeouts};
