//! Keeps the caches in step with the policy store's events (broadcast: every replica hears
//! every event): `policy.changed` and `cluster.changed` fetch the affected clusters again
//! (the old entry serves until the new one has arrived), `apikey.revoked` drops the key,
//! `scan.result` updates the summaries held.
//!
//! After a gap (the subscription ended, or could not be made), events may have been missed:
//! every cached policy is fetched again in the background, cached keys are dropped (one
//! introspection each on next use), and scan summaries are marked due for a refresh. Nothing
//! is dropped that a review would then have to wait for.

use std::future::Future;
use std::time::Duration;

use portcullis_bus::{Bus, StartFrom, TopicFilter};
use portcullis_proto::events::v1 as pe;
use portcullis_proto::events::v1::event_envelope::Payload;
use prost::Message as _;

use crate::Admission;

/// The topics followed.
pub const FOLLOWED_TOPICS: [&str; 4] = ["policy.changed", "cluster.changed", "apikey.revoked", "scan.result"];

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

    /// Follows the policy store's events on `bus` until `stop` completes.
    pub async fn follow(&self, bus: Bus, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let filter = TopicFilter::topics(FOLLOWED_TOPICS);
        let mut first = true;
        loop {
            let subscribed = tokio::select! {
                () = &mut stop => return,
                subscribed = bus.subscribe_broadcast(&filter, StartFrom::New) => subscribed,
            };
            match subscribed {
                Ok(mut subscription) => {
                    if !first {
                        self.resynchronise();
                    }
                    loop {
                        let next = tokio::select! {
                            () = &mut stop => return,
                            next = subscription.next() => next,
                        };
                        let Some(received) = next else {
                            tracing::warn!("the admission cache subscription ended; subscribing again");
                            break;
                        };
                        match pe::EventEnvelope::decode(received.event.payload.as_ref()) {
                            Ok(envelope) => self.apply_event(&envelope),
                            Err(e) => {
                                tracing::warn!(error = %e, subject = %received.event.subject(), "undecodable event; refreshing the caches");
                                self.resynchronise();
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "subscribing to the policy store's events failed; retrying"),
            }
            first = false;
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}
