//! Keeps the caches in step with the policy store's events (broadcast: every replica hears
//! every event): `policy.changed` and `cluster.changed` fetch the affected clusters again
//! (the old entry serves until the new one has arrived), `apikey.revoked` drops the key,
//! `scan.result` updates the summaries held.
//!
//! The subscription is the kit's `Follower`: it resumes from the last event handled, and
//! reports a gap when events may have been missed (dropped by the stream before they were
//! read, a long outage, an undecodable event). After a gap:
//! every cached policy is fetched again in the background, cached keys are dropped (one
//! introspection each on next use), and scan summaries are marked due for a refresh. Nothing
//! is dropped that a review would then have to wait for.

use portcullis_bus::{Bus, TopicFilter};
use portcullis_domain::Topic;
use portcullis_kit::follow::{FollowHandler, FollowedEvent, Follower, Gap};
use portcullis_proto::events::v1 as pe;
use portcullis_proto::events::v1::event_envelope::Payload;
use tokio_util::sync::CancellationToken;

use crate::Admission;

/// The topics followed.
pub const FOLLOWED_TOPICS: [Topic; 4] = [
    Topic::PolicyChanged,
    Topic::ClusterChanged,
    Topic::ApiKeyRevoked,
    Topic::ScanResult,
];

impl Admission {
    /// Applies one event of the policy store to the caches.
    pub fn apply_event(&self, envelope: &pe::EventEnvelope) {
        let tenant = envelope.tenant_id.as_str();
        match &envelope.payload {
            Some(Payload::PolicyChanged(changed)) => {
                let id = changed.policy_id.as_str();
                self.policies().refresh_where(tenant, |c| c.policy_id == id);
            }
            Some(Payload::ClusterChanged(changed)) => {
                let id = changed.cluster_id.as_str();
                if changed.change == pe::ChangeKind::Deleted as i32 {
                    self.policies().remove_where(tenant, |c| c.cluster_id == id);
                } else {
                    self.policies().refresh_where(tenant, |c| c.cluster_id == id);
                }
            }
            Some(Payload::ApiKeyRevoked(revoked)) => self.authenticator().forget_key(&revoked.key_id),
            Some(Payload::ScanResultStored(stored)) => self.scans().apply_event(tenant, stored),
            _ => {}
        }
    }

    /// After a gap in the events: see the module docs.
    pub fn resynchronise(&self) {
        self.policies().refresh_all();
        self.authenticator().clear();
        self.scans().expire_all();
    }

    /// Follows the policy store's events on `bus` until `stop` is cancelled, from right
    /// after `start_after` (the stream's last sequence when the caches were created; `None`:
    /// from now, resynchronising once).
    pub async fn follow(&self, bus: Bus, start_after: Option<u64>, stop: CancellationToken) {
        let handler = CacheFollower(self.clone());
        let mut follower =
            Follower::new(bus, TopicFilter::topics(FOLLOWED_TOPICS)).options(&self.inner.options.follower);
        if let Some(sequence) = start_after {
            follower = follower.start_after(sequence);
        }
        follower.run(handler, stop).await;
    }
}

/// Applies events to the caches; resynchronises them after a gap.
struct CacheFollower(Admission);

impl FollowHandler for CacheFollower {
    fn event(&mut self, event: &FollowedEvent) {
        self.0.apply_event(&event.envelope);
    }

    fn gap(&mut self, _gap: &Gap) {
        self.0.resynchronise();
    }
}
