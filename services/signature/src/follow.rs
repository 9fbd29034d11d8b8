//! Keeps the caches in step with the policy store's events (broadcast: every replica hears
//! every event): `attestor.changed` drops the attestor and the verdicts made with it;
//! `cluster.changed` about registry credentials (or a deleted cluster) drops that cluster's
//! registry client and what it resolved or verified. After a gap (events may have been
//! missed) everything is dropped: a stale verdict must not outlive its attestor.

use portcullis_bus::{Bus, TopicFilter};
use portcullis_domain::Topic;
use portcullis_kit::follow::{FollowHandler, FollowedEvent, Follower, Gap};
use portcullis_proto::events::v1 as pe;
use portcullis_proto::events::v1::event_envelope::Payload;
use tokio_util::sync::CancellationToken;

use crate::Verifier;

/// The topics followed.
pub const FOLLOWED_TOPICS: [Topic; 2] = [Topic::AttestorChanged, Topic::ClusterChanged];

impl Verifier {
    /// Applies one event of the policy store to the caches.
    pub fn apply_event(&self, envelope: &pe::EventEnvelope) {
        let tenant = envelope.tenant_id.as_str();
        match &envelope.payload {
            Some(Payload::AttestorChanged(changed)) => self.attestor_changed(tenant, &changed.name),
            Some(Payload::ClusterChanged(changed)) => {
                let credentials = changed.change == pe::ChangeKind::Deleted as i32
                    || changed
                        .aspects
                        .contains(&(pe::ClusterChangeAspect::RegistryCredentials as i32));
                if credentials {
                    self.cluster_changed(tenant, &changed.cluster_id, &changed.name);
                }
            }
            _ => {}
        }
    }

    /// Follows the events on `bus` until `stop`, from right after `start_after` (the stream's
    /// last sequence when the caches were created; `None`: from now).
    pub async fn follow(
        &self,
        bus: Bus,
        start_after: Option<u64>,
        options: &portcullis_kit::FollowOptions,
        stop: CancellationToken,
    ) {
        let mut follower = Follower::new(bus, TopicFilter::topics(FOLLOWED_TOPICS)).options(options);
        if let Some(sequence) = start_after {
            follower = follower.start_after(sequence);
        }
        follower.run(CacheFollower(self.clone()), stop).await;
    }
}

struct CacheFollower(Verifier);

impl FollowHandler for CacheFollower {
    fn event(&mut self, event: &FollowedEvent) {
        self.0.apply_event(&event.envelope);
    }

    fn gap(&mut self, _gap: &Gap) {
        self.0.clear();
    }
}
