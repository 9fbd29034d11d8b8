//! gRPC plumbing shared by every Portcullis service.
//!
//! - [`GrpcServer`]: add tonic services, [`GrpcServer::bind`] a listener (port 0 allowed;
//!   the bound address comes back), [`BoundServer::serve`] until a shutdown future
//!   completes, draining the calls in flight. Health checking (`grpc.health.v1`, one status
//!   per service) and reflection (v1 and v1alpha, from `portcullis_proto::FILE_DESCRIPTOR_SET`)
//!   are always on; TLS (rustls) when given a certificate and key; plain text on a
//!   non-loopback address is refused in distributed mode. Starting, draining and stopping a
//!   whole service (and the signals that stop it) is `portcullis_kit::lifecycle`.
//! - Authentication ([`auth`]): `authorization: Bearer <key>` → [`Caller`]: a tenant key
//!   (through an [`Authenticator`]), the operator key, or the service credential. The
//!   [`permissions`] table decides which methods each may call; the layer enforces it before
//!   any handler runs, and handlers read the caller with [`Caller::of`].
//! - [`GuardLayer`], outermost: a panicking handler answers `Internal` and the server goes
//!   on; error statuses too long for a client's header limits are cut to size.
//! - [`rate_limit`]: per-tenant token buckets; the layer applies one to every tenant-key call
//!   when [`AuthState::rate_limit`] is set.
//! - [`process`]: process-wide settings of a server (transparent huge pages off).

pub mod auth;
mod guard;
mod incoming;
mod layer;
pub mod permissions;
pub mod process;
pub mod rate_limit;
mod server;
pub mod status;

pub use auth::{
    Authenticator, BoxFuture, Caller, Credentials, Principal, Role, Secret, TENANT_METADATA, TenantKey, TraceContext,
};
pub use guard::{GuardLayer, GuardService, MAX_STATUS_DETAILS_BYTES, MAX_STATUS_MESSAGE_BYTES};
pub use layer::{AuthLayer, AuthService, AuthState, CallLimit};
pub use permissions::{Access, PermissionTable};
pub use server::{BoundServer, GrpcServer, Mode, ServerConfig, ServerError, ServerLimits, TlsFiles};
