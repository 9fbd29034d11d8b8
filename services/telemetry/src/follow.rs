//! (The same as the continuous service's `follow`; a shared place in the kit would be better.)
//! Keeps the service's own listener in step with key revocations (broadcast: every replica
//! hears every event): `apikey.revoked` drops the key's cached introspection, so a revoked
//! connector or person is refused at once rather than after the key cache's TTL; after a gap
//! (events may have been missed) every cached key is dropped.

use std::sync::Arc;

use portcullis_bus::{Bus, TopicFilter};
use portcullis_domain::Topic;
use portcullis_kit::follow::{FollowHandler, FollowedEvent, Follower, Gap};
use portcullis_proto::events::v1::event_envelope::Payload;
use portcullis_server::Authenticator;
use tokio_util::sync::CancellationToken;

/// Follows `apikey.revoked` on `bus` until `stop`, from right after `start_after` (`None`:
/// from now), telling `authenticator` to forget revoked keys.
pub async fn follow_revocations(
    bus: Bus,
    start_after: Option<u64>,
    options: &portcullis_kit::FollowOptions,
    authenticator: Arc<dyn Authenticator>,
    stop: CancellationToken,
) {
    let mut follower = Follower::new(bus, TopicFilter::topics([Topic::ApiKeyRevoked])).options(options);
    if let Some(sequence) = start_after {
        follower = follower.start_after(sequence);
    }
    follower.run(KeyFollower { authenticator }, stop).await;
}

struct KeyFollower {
    authenticator: Arc<dyn Authenticator>,
}

impl FollowHandler for KeyFollower {
    fn event(&mut self, event: &FollowedEvent) {
        if let Some(Payload::ApiKeyRevoked(revoked)) = &event.envelope.payload {
            self.authenticator.forget_key(&revoked.key_id);
        }
    }

    fn gap(&mut self, _gap: &Gap) {
        self.authenticator.forget_all();
    }
}
