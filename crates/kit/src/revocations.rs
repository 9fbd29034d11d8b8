//! Key revocations on a service's own listener: every service that checks tenant keys
//! through a cache follows `apikey.revoked` (broadcast: every replica hears every event), so
//! that a revoked connector or person is refused at once rather than after the key cache's
//! TTL; after a gap (events may have been missed) every cached key is dropped.
//!
//! A service with caches of its own follows its topics and the revocations in one
//! follower ([`follow_with_revocations`] over its handler); one with none passes
//! [`NoCaches`].

use std::sync::Arc;

use portcullis_bus::{Bus, TopicFilter};
use portcullis_domain::Topic;
use portcullis_proto::events::v1::event_envelope::Payload;
use portcullis_server::Authenticator;
use tokio_util::sync::CancellationToken;

use crate::follow::{FollowHandler, FollowOptions, FollowedEvent, Follower, Gap};

/// The stream's last sequence, recorded before a replica's caches can hold anything, so
/// that its follower starts right after it; `None` (logged) when the bus cannot say, and
/// the follower then records it itself (reporting [`Gap::Unanchored`]).
pub async fn stream_position(bus: &Bus) -> Option<u64> {
    match bus.last_sequence().await {
        Ok(sequence) => Some(sequence),
        Err(e) => {
            tracing::warn!(error = %e, "reading the event stream's position failed; the follower will record it");
            None
        }
    }
}

/// A handler for a service that keeps no caches of its own beside the key cache.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoCaches;

impl FollowHandler for NoCaches {
    fn event(&mut self, _event: &FollowedEvent) {}
    fn gap(&mut self, _gap: &Gap) {}
}

/// `inner`, and `authenticator` forgetting revoked keys: each `apikey.revoked` drops its
/// key (before `inner` sees the event), each gap every key (after `inner` resynchronised).
pub struct ForgetRevoked<H> {
    authenticator: Arc<dyn Authenticator>,
    inner: H,
}

impl<H> ForgetRevoked<H> {
    /// `inner` with `authenticator` forgetting revoked keys.
    pub fn new(authenticator: Arc<dyn Authenticator>, inner: H) -> Self {
        Self { authenticator, inner }
    }
}

impl<H: FollowHandler> FollowHandler for ForgetRevoked<H> {
    fn event(&mut self, event: &FollowedEvent) {
        if let Some(Payload::ApiKeyRevoked(revoked)) = &event.envelope.payload {
            self.authenticator.forget_key(&revoked.key_id);
        }
        self.inner.event(event);
    }

    fn gap(&mut self, gap: &Gap) {
        self.inner.gap(gap);
        self.authenticator.forget_all();
    }

    fn following(&mut self, following: bool) {
        self.inner.following(following);
    }
}

/// Follows `topics` and `apikey.revoked` on `bus` until `stop`, from right after
/// `start_after` (`None`: from now), handing events to `handler` and revocations to
/// `authenticator` ([`ForgetRevoked`]).
pub async fn follow_with_revocations<H: FollowHandler>(
    bus: Bus,
    topics: &[Topic],
    start_after: Option<u64>,
    options: &FollowOptions,
    authenticator: Arc<dyn Authenticator>,
    handler: H,
    stop: CancellationToken,
) {
    let mut followed = topics.to_vec();
    if !followed.contains(&Topic::ApiKeyRevoked) {
        followed.push(Topic::ApiKeyRevoked);
    }
    let mut follower = Follower::new(bus, TopicFilter::topics(followed)).options(options);
    if let Some(sequence) = start_after {
        follower = follower.start_after(sequence);
    }
    follower.run(ForgetRevoked::new(authenticator, handler), stop).await;
}
