//! Keeps the caches in step with the policy store's events (broadcast: every replica hears
//! every event): `attestor.changed` drops the attestor and the verdicts made with it;
//! `cluster.changed` about registry credentials (or a deleted cluster) drops that cluster's
//! registry client and what it resolved or verified; `apikey.revoked` drops the key's
//! cached introspection, so a revoked key is refused at once rather than after the key
//! cache's TTL. After a gap (events may have been missed) everything is dropped: a stale
//! verdict must not outlive its attestor, nor a cached key its revocation.

use std::sync::Arc;

use portcullis_bus::Bus;
use portcullis_domain::Topic;
use portcullis_kit::follow::{FollowHandler, FollowedEvent, Gap};
use portcullis_kit::revocations::follow_with_revocations;
use portcullis_proto::events::v1 as pe;
use portcullis_proto::events::v1::event_envelope::Payload;
use portcullis_server::Authenticator;
use tokio_util::sync::CancellationToken;

use crate::Verifier;

/// The topics followed.
pub const FOLLOWED_TOPICS: [Topic; 3] = [Topic::AttestorChanged, Topic::ClusterChanged, Topic::ApiKeyRevoked];

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
    /// last sequence when the caches were created; `None`: from now). `authenticator` (the
    /// one checking tenant keys on the service's listener) forgets revoked keys (the kit's
    /// `revocations`).
    pub async fn follow(
        &self,
        bus: Bus,
        start_after: Option<u64>,
        options: &portcullis_kit::FollowOptions,
        authenticator: Arc<dyn Authenticator>,
        stop: CancellationToken,
    ) {
        let handler = CacheFollower(self.clone());
        follow_with_revocations(
            bus,
            &FOLLOWED_TOPICS,
            start_after,
            options,
            authenticator,
            handler,
            stop,
        )
        .await;
    }
}

/// Applies events to the caches; drops them all after a gap.
struct CacheFollower(Verifier);

impl FollowHandler for CacheFollower {
    fn event(&mut self, event: &FollowedEvent) {
        self.0.apply_event(&event.envelope);
    }

    fn gap(&mut self, _gap: &Gap) {
        self.0.clear();
    }
}
