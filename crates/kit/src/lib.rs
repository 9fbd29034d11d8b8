//! The Portcullis service kit: one way to build a service. A service is a domain crate plus
//! thin adapters; everything they would otherwise each write for themselves lives here.

pub mod cache;
pub mod client;
pub mod events;
pub mod follow;
pub mod lifecycle;
mod pinned;
pub mod revocations;
pub mod service;
pub mod settings;
pub mod trace;
pub mod upstream;
pub mod work;

pub use client::{ClientConfig, Credential, Trust};
pub use events::{EventCounters, EventPublisher};
pub use follow::{FollowHandler, FollowOptions, FollowedEvent, Follower, Gap, follow};
pub use lifecycle::{Lifecycle, Stopped, shutdown_signal};
pub use service::{Ended, RunningService, Served, serve_until_signal};
pub use trace::Traced;
pub use work::{WorkHandler, WorkOptions, subscribe_work};
