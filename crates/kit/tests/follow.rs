//! The bus follower: order, resuming from the last sequence handled, and gaps.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use portcullis_bus::{Bus, BusConfig, Event, TopicFilter};
use portcullis_kit::follow::{FollowHandler, FollowedEvent, Follower, Gap};
use portcullis_proto::events::v1::EventEnvelope;
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, PartialEq)]
enum Seen {
    Event(u64, String),
    Gap(Gap),
    Following(bool),
}

struct Recorder(mpsc::UnboundedSender<Seen>);

impl FollowHandler for Recorder {
    fn event(&mut self, event: &FollowedEvent) {
        let _ = self
            .0
            .send(Seen::Event(event.sequence, event.envelope.event_id.clone()));
    }
    fn gap(&mut self, gap: &Gap) {
        let _ = self.0.send(Seen::Gap(gap.clone()));
    }
    fn following(&mut self, following: bool) {
        let _ = self.0.send(Seen::Following(following));
    }
}

fn envelope(id: &str, topic: &str) -> Event {
    let payload = EventEnvelope {
        event_id: id.to_owned(),
        tenant_id: "acme".to_owned(),
        topic: topic.to_owned(),
        ..EventEnvelope::default()
    };
    Event::new(id, "acme", topic, Bytes::from(payload.encode_to_vec()))
}

async fn publish(bus: &Bus, id: &str, topic: &str) -> u64 {
    bus.publish(envelope(id, topic)).await.unwrap().sequence
}

/// The next thing the handler saw that is not a `following` change, waiting up to 10 s.
async fn next(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(Seen::Following(_))) => continue,
            Ok(Some(seen)) => return seen,
            Ok(None) => panic!("the follower ended"),
            Err(_) => panic!("nothing seen within 10 s"),
        }
    }
}

fn start(
    follower: Follower,
) -> (
    mpsc::UnboundedReceiver<Seen>,
    CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let task = tokio::spawn(follower.run(Recorder(tx), stop.clone()));
    (rx, stop, task)
}

#[tokio::test]
async fn events_after_the_snapshot_arrive_in_order_and_a_restart_resumes_without_loss() {
    let bus = Bus::memory(BusConfig::embedded()).unwrap();
    publish(&bus, "before", "policy.changed").await;
    let snapshot = bus.last_sequence().await.unwrap();
    let s1 = publish(&bus, "one", "policy.changed").await;
    // Another topic between ours: a jump in sequence, not a gap.
    publish(&bus, "other", "admission.decision").await;
    let s2 = publish(&bus, "two", "policy.changed").await;

    let filter = TopicFilter::topics(["policy.changed"]);
    let (mut rx, stop, task) = start(Follower::new(bus.clone(), filter.clone()).start_after(snapshot));
    assert_eq!(next(&mut rx).await, Seen::Event(s1, "one".into()));
    assert_eq!(next(&mut rx).await, Seen::Event(s2, "two".into()));
    stop.cancel();
    task.await.unwrap();

    // Published while nobody follows; a new subscription from the last sequence handled
    // gets exactly what came after it.
    let s3 = publish(&bus, "three", "policy.changed").await;
    let (mut rx, stop, task) = start(Follower::new(bus.clone(), filter).start_after(s2));
    assert_eq!(next(&mut rx).await, Seen::Event(s3, "three".into()));
    let s4 = publish(&bus, "four", "policy.changed").await;
    assert_eq!(next(&mut rx).await, Seen::Event(s4, "four".into()));
    stop.cancel();
    task.await.unwrap();
}

/// An event whose body names another tenant (or topic) than its subject is dropped and
/// counted; the events around it are handled as usual.
#[tokio::test]
async fn an_event_whose_body_and_subject_disagree_is_dropped_and_counted() {
    let bus = Bus::memory(BusConfig::embedded()).unwrap();
    let (meter, metrics) = portcullis_telemetry::testing::in_memory_meter();
    let (mut rx, stop, task) = start(
        Follower::new(bus.clone(), TopicFilter::topics(["scan.result", "policy.changed"]))
            .start_after(0)
            .meter(&meter),
    );
    let forged = |id: &str, tenant: &str, topic: &str| {
        let body = EventEnvelope {
            event_id: id.to_owned(),
            tenant_id: tenant.to_owned(),
            topic: topic.to_owned(),
            ..EventEnvelope::default()
        };
        // Published on tenant `mallory`'s subject for `scan.result`.
        Event::new(id, "mallory", "scan.result", Bytes::from(body.encode_to_vec()))
    };
    bus.publish(forged("other-tenant", "acme", "scan.result"))
        .await
        .unwrap();
    bus.publish(forged("other-topic", "mallory", "policy.changed"))
        .await
        .unwrap();
    let own = bus
        .publish(forged("own", "mallory", "scan.result"))
        .await
        .unwrap()
        .sequence;
    let s = publish(&bus, "fine", "policy.changed").await;
    assert_eq!(next(&mut rx).await, Seen::Event(own, "own".into()));
    assert_eq!(next(&mut rx).await, Seen::Event(s, "fine".into()));
    assert_eq!(metrics.counter(portcullis_kit::follow::MISMATCHED_METRIC, &[]), 2);
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn a_start_the_stream_no_longer_holds_is_a_gap() {
    let mut config = BusConfig::embedded();
    config.stream.max_events = Some(2);
    let bus = Bus::memory(config).unwrap();
    for id in ["a", "b", "c", "d"] {
        publish(&bus, id, "policy.changed").await;
    }
    let (mut rx, stop, task) =
        start(Follower::new(bus.clone(), TopicFilter::topics(["policy.changed"])).start_after(0));
    assert_eq!(next(&mut rx).await, Seen::Gap(Gap::Dropped { expected: 1, first: 3 }));
    assert_eq!(next(&mut rx).await, Seen::Event(3, "c".into()));
    assert_eq!(next(&mut rx).await, Seen::Event(4, "d".into()));
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn an_undecodable_event_is_a_gap_and_without_a_snapshot_the_start_is_one() {
    let bus = Bus::memory(BusConfig::embedded()).unwrap();
    publish(&bus, "old", "policy.changed").await;
    let (mut rx, stop, task) = start(Follower::new(bus.clone(), TopicFilter::topics(["policy.changed"])));
    assert_eq!(next(&mut rx).await, Seen::Gap(Gap::Unanchored { sequence: 1 }));
    let garbage = bus
        .publish(Event::new(
            "junk",
            "acme",
            "policy.changed",
            Bytes::from_static(&[0xff, 0xff, 0xff]),
        ))
        .await
        .unwrap()
        .sequence;
    assert_eq!(next(&mut rx).await, Seen::Gap(Gap::Undecodable { sequence: garbage }));
    let s = publish(&bus, "fine", "policy.changed").await;
    assert_eq!(next(&mut rx).await, Seen::Event(s, "fine".into()));
    stop.cancel();
    task.await.unwrap();
}

/// With NATS down the follower cannot subscribe: after the outage bound it reports a gap,
/// and once NATS is back it reads every event from its start, none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_outage_is_a_gap_and_the_follower_resumes_after_it() {
    let mut nats = portcullis_test_kit::NatsServer::start().await.unwrap();
    let bus = Bus::connect_nats(&nats.url(), BusConfig::default()).await.unwrap();
    let s1 = publish(&bus, "one", "policy.changed").await;
    nats.stop();
    let follower = Follower::new(bus.clone(), TopicFilter::topics(["policy.changed"]))
        .start_after(0)
        .retry(Duration::from_millis(50), Duration::from_millis(200))
        .outage_gap(Duration::from_millis(200));
    let (mut rx, stop, task) = start(follower);
    let Seen::Gap(Gap::Outage { .. }) = next(&mut rx).await else {
        panic!("expected an outage gap")
    };
    nats.restart().await.unwrap();
    assert_eq!(next(&mut rx).await, Seen::Event(s1, "one".into()));
    // The client reconnects on its own; publish once it has.
    let deadline = Instant::now() + Duration::from_secs(20);
    let s2 = loop {
        match bus.publish(envelope("two", "policy.changed")).await {
            Ok(published) => break published.sequence,
            Err(e) => assert!(Instant::now() < deadline, "publishing after the restart: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(next(&mut rx).await, Seen::Event(s2, "two".into()));
    stop.cancel();
    task.await.unwrap();
}
