//! Keeps each replica's caches in step with the policy store's events (broadcast: every
//! replica hears every event): `apikey.revoked` drops the key's cached introspection (the
//! kit's `revocations`), so a revoked connector or person is refused at once rather than
//! after the key cache's TTL; `scan.result` replaces the digest's scan summary, so that
//! whichever replica judges a pod next judges it with the new scan (the work subscription's
//! re-evaluation runs on one replica only). After a gap (events may have been missed) every
//! cached summary and key is dropped.

use std::sync::Arc;

use portcullis_bus::Bus;
use portcullis_domain::Topic;
use portcullis_kit::follow::{FollowHandler, FollowedEvent, Gap};
use portcullis_kit::revocations::follow_with_revocations;
use portcullis_proto::events::v1::event_envelope::Payload;
use portcullis_server::Authenticator;
use tokio_util::sync::CancellationToken;

use crate::policies::PolicyStore;

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
    let handler = ScanFollower { policies };
    follow_with_revocations(
        bus,
        &[Topic::ScanResult],
        start_after,
        options,
        authenticator,
        handler,
        stop,
    )
    .await;
}

struct ScanFollower {
    policies: PolicyStore,
}

impl FollowHandler for ScanFollower {
    fn event(&mut self, event: &FollowedEvent) {
        if let Some(Payload::ScanResultStored(stored)) = &event.envelope.payload {
            self.policies.scans().apply_event(&event.envelope.tenant_id, stored);
        }
    }

    fn gap(&mut self, _gap: &Gap) {
        self.policies.scans().clear(None);
    }
}
