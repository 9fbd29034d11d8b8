//! Keeps each replica's caches in step with the policy store's events (broadcast: every
//! replica hears every event): `apikey.revoked` drops the key's cached introspection, so a
//! revoked connector or person is refused at once rather than after the key cache's TTL;
//! `scan.result` replaces the digest's scan summary, so that whichever replica judges a pod
//! next judges it with the new scan (the work subscription's re-evaluation runs on one
//! replica only). After a gap (events may have been missed) every cached key and summary is
//! dropped.

use std::sync::Arc;

use portcullis_bus::{Bus, TopicFilter};
use portcullis_domain::Topic;
use portcullis_kit::follow::{FollowHandler, FollowedEvent, Follower, Gap};
use portcullis_proto::events::v1::event_envelope::Payload;
use portcullis_server::Authenticator;

use crate::policies::PolicyStore;
use tokio_util::sync::CancellationToken;

/// Follows `apikey.revoked` and `scan.result` on `bus` until `stop`, from right after
/// `start_after` (`None`: from now): `authenticator` forgets revoked keys, `policies`'s
/// scan cache takes new summaries.
pub async fn follow_events(
    bus: Bus,
    start_after: Option<u64>,
    options: &portcullis_kit::FollowOptions,
    authenticator: Arc<dyn Authenticator>,
    policies: PolicyStore,
    stop: CancellationToken,
) {
    let topics = TopicFilter::topics([Topic::ApiKeyRevoked, Topic::ScanResult]);
    let mut follower = Follower::new(bus, topics).options(options);
    if let Some(sequence) = start_after {
        follower = follower.start_after(sequence);
    }
    follower
        .run(
            CacheFollower {
                authenticator,
                policies,
            },
            stop,
        )
        .await;
}

struct CacheFollower {
    authenticator: Arc<dyn Authenticator>,
    policies: PolicyStore,
}

impl FollowHandler for CacheFollower {
    fn event(&mut self, event: &FollowedEvent) {
        match &event.envelope.payload {
            Some(Payload::ApiKeyRevoked(revoked)) => self.authenticator.forget_key(&revoked.key_id),
            Some(Payload::ScanResultStored(stored)) => {
                self.policies.scans().apply_event(&event.envelope.tenant_id, stored);
            }
            _ => {}
        }
    }

    fn gap(&mut self, _gap: &Gap) {
        self.authenticator.forget_all();
        self.policies.scans().clear(None);
    }
}
