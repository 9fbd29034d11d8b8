//! The Portcullis service kit: one way to build a service. A service is a domain crate plus
//! thin adapters; everything they would otherwise each write for themselves lives here.

pub mod cache;
pub mod client;
pub mod follow;
pub mod lifecycle;
mod pinned;
pub mod settings;
pub mod trace;
pub mod upstream;

pub use client::{ClientConfig, Credential, Trust};
pub use follow::{FollowHandler, FollowOptions, FollowedEvent, Follower, Gap, follow};
pub use lifecycle::{Lifecycle, Stopped, shutdown_signal};
pub use trace::Traced;
