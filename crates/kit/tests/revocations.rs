//! Key revocations on a service's listener: the kit's follower forgets revoked keys, hands
//! the service's own events on, and forgets every key after a gap.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use portcullis_bus::{Bus, BusConfig, Event};
use portcullis_domain::Topic;
use portcullis_kit::FollowOptions;
use portcullis_kit::follow::{FollowHandler, FollowedEvent, Gap};
use portcullis_kit::revocations::{follow_with_revocations, stream_position};
use portcullis_proto::events::v1::{ApiKeyRevoked, EventEnvelope, PolicyChanged, event_envelope::Payload};
use portcullis_server::auth::BoxFuture;
use portcullis_server::{Authenticator, TenantKey};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, PartialEq)]
enum Seen {
    Forgot(String),
    ForgotAll,
    Event(String),
    Gap,
}

struct Recording(mpsc::UnboundedSender<Seen>);

impl Authenticator for Recording {
    fn authenticate<'a>(&'a self, _key: &'a str) -> BoxFuture<'a, Result<TenantKey, tonic::Status>> {
        Box::pin(async { Err(tonic::Status::unauthenticated("no keys here")) })
    }
    fn forget_key(&self, key_id: &str) {
        let _ = self.0.send(Seen::Forgot(key_id.to_owned()));
    }
    fn forget_all(&self) {
        let _ = self.0.send(Seen::ForgotAll);
    }
}

struct Service(mpsc::UnboundedSender<Seen>);

impl FollowHandler for Service {
    fn event(&mut self, event: &FollowedEvent) {
        let _ = self.0.send(Seen::Event(event.envelope.topic.clone()));
    }
    fn gap(&mut self, _gap: &Gap) {
        let _ = self.0.send(Seen::Gap);
    }
}

fn event(id: &str, topic: Topic, payload: Payload) -> Event {
    let envelope = EventEnvelope {
        event_id: id.to_owned(),
        tenant_id: "acme".to_owned(),
        topic: topic.as_str().to_owned(),
        payload: Some(payload),
        ..EventEnvelope::default()
    };
    Event::new(id, "acme", topic.as_str(), Bytes::from(envelope.encode_to_vec()))
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
        Ok(Some(seen)) => seen,
        Ok(None) => panic!("the follower ended"),
        Err(_) => panic!("nothing seen within 10 s"),
    }
}

#[tokio::test]
async fn a_revoked_key_is_forgotten_and_the_services_events_still_arrive() {
    let bus = Bus::memory(BusConfig::embedded()).unwrap();
    let start = stream_position(&bus).await;
    assert_eq!(start, Some(0));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let (follow_bus, follow_stop) = (bus.clone(), stop.clone());
    let task = tokio::spawn(async move {
        let options = FollowOptions::default();
        let authenticator = Arc::new(Recording(tx.clone()));
        follow_with_revocations(
            follow_bus,
            &[Topic::PolicyChanged],
            start,
            &options,
            authenticator,
            Service(tx),
            follow_stop,
        )
        .await;
    });
    let revoked = ApiKeyRevoked {
        key_id: "k1".into(),
        ..ApiKeyRevoked::default()
    };
    bus.publish(event("e1", Topic::ApiKeyRevoked, Payload::ApiKeyRevoked(revoked)))
        .await
        .unwrap();
    bus.publish(event(
        "e2",
        Topic::PolicyChanged,
        Payload::PolicyChanged(PolicyChanged::default()),
    ))
    .await
    .unwrap();
    assert_eq!(next(&mut rx).await, Seen::Forgot("k1".into()));
    assert_eq!(next(&mut rx).await, Seen::Event(Topic::ApiKeyRevoked.as_str().into()));
    assert_eq!(next(&mut rx).await, Seen::Event(Topic::PolicyChanged.as_str().into()));
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn without_a_recorded_position_every_key_is_forgotten_after_the_services_resync() {
    let bus = Bus::memory(BusConfig::embedded()).unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    // No position: the follower records one itself and reports an unanchored gap.
    let follow_stop = stop.clone();
    let task = tokio::spawn(async move {
        let options = FollowOptions::default();
        let authenticator = Arc::new(Recording(tx.clone()));
        follow_with_revocations(bus, &[], None, &options, authenticator, Service(tx), follow_stop).await;
    });
    assert_eq!(next(&mut rx).await, Seen::Gap);
    assert_eq!(next(&mut rx).await, Seen::ForgotAll);
    stop.cancel();
    task.await.unwrap();
}
