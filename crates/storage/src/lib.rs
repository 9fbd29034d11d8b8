//! The policy store's storage: tenants, API keys, clusters, policies with every revision,
//! runtime rulesets, attestors, scan results, registry credentials (sealed), the audit log and the event outbox, on
//! PostgreSQL (distributed mode) or a SQLite file (embedded mode), with the same
//! sea-orm migrations for both.
//!
//! Every method takes the caller's tenant id and reads and writes only that tenant's rows;
//! a foreign id is [`StoreError::NotFound`]. Every change commits in one transaction with its
//! audit entry and its outbox event; [`OutboxRelay`] publishes the events. All document
//! validation is the engine's (`portcullis-engine`).

mod audit;
mod clock;
mod clusters;
pub mod credentials;
mod entity;
mod error;
pub mod events;
mod keys;
mod migration;
mod model;
mod objects;
mod outbox;
mod policies;
mod registry;
mod scans;
mod store;

pub use clock::{Clock, ManualClock, SystemClock};
pub use clusters::DEFAULT_ROTATION_GRACE;
pub use error::{InactiveReason, StoreError, StoreResult};
pub use keys::KEY_PREFIX;
pub use migration::Migrator;
pub use model::*;
pub use outbox::{DeadLetter, EventSink, OutboxEvent, OutboxRelay, RelayConfig, RelayError};
pub use policies::PolicyHistory;
pub use registry::{
    MAX_CREDENTIALS_PER_CLUSTER, MAX_REGISTRY_LEN, MAX_SECRET_LEN, MAX_USERNAME_LEN, RegistryCredential,
    RegistryCredentialInfo, is_valid_registry, is_valid_username,
};
pub use scans::MAX_SUMMARY_DIGESTS;
pub use store::{Backend, CommitListener, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Store, StoreOptions, is_valid_tenant_id};
