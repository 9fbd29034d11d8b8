//! Decision events through a real bus: delivery and batching on the in-process bus, the queue
//! bound, and a NATS outage (nats-server stopped and restarted).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::time::Duration;

use portcullis_admission::decision_events::{
    DecisionEventStats, DecisionEventsConfig, DecisionPublisher, TOPIC, admission_decision_event,
};
use portcullis_bus::{BroadcastSubscription, Bus, BusConfig, StartFrom, TopicFilter};
use portcullis_proto::admission::v1::{Decision, DecisionBasis};
use portcullis_proto::common::v1::Violation;
use portcullis_proto::events::v1::{AdmissionDecision, EventEnvelope, event_envelope};
use portcullis_test_kit::{NatsServer, eventually};
use prost::Message;

/// Overall limit of every wait; generous, since other builds share the machine.
const PATIENCE: Duration = Duration::from_secs(60);

/// A decision with request uid `uid`: every third one blocked with a violation, the rest
/// plain allows.
fn decision(uid: &str, i: usize) -> Decision {
    let blocked = i.is_multiple_of(3);
    Decision {
        uid: uid.to_owned(),
        allowed: !blocked,
        basis: DecisionBasis::Evaluated as i32,
        cluster_id: "c1".into(),
        operation: "CREATE".into(),
        violations: if blocked {
            vec![Violation {
                rule_type: "containerSecurityContext".into(),
                message: format!("violation of {uid}"),
                ..Default::default()
            }]
        } else {
            Vec::new()
        },
        ..Default::default()
    }
}

/// Polls `stats` until `done` holds, failing after [`PATIENCE`] with the last stats seen.
async fn wait_for(
    what: &str,
    stats: impl Fn() -> DecisionEventStats,
    done: impl Fn(&DecisionEventStats) -> bool,
) -> DecisionEventStats {
    eventually(PATIENCE, async || {
        let s = stats();
        if done(&s) { Ok(s) } else { Err(format!("{what}: {s:?}")) }
    })
    .await
}

/// Reads `count` decision events from `sub`, checking subject, envelope and payload, and
/// returns their request uids.
async fn read_decisions(sub: &mut BroadcastSubscription, count: usize) -> Vec<(String, AdmissionDecision)> {
    let mut got = Vec::new();
    while got.len() < count {
        let received = tokio::time::timeout(PATIENCE, sub.next())
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("only {} of {count} decision events arrived", got.len()));
        let event = received.event;
        assert_eq!(event.topic, TOPIC);
        let envelope = EventEnvelope::decode(event.payload.clone()).unwrap();
        assert_eq!(envelope.event_id, event.id, "the bus id is the envelope's event id");
        assert_eq!(envelope.tenant_id, event.tenant);
        assert_eq!(envelope.topic, TOPIC);
        assert_eq!(envelope.producer, "admission");
        assert!(envelope.occurred_at.is_some());
        let Some(event_envelope::Payload::AdmissionDecision(decision)) = envelope.payload else {
            panic!("not an admission decision: {:?}", envelope.payload);
        };
        let uid = decision.summary.as_ref().map(|s| s.uid.clone()).unwrap_or_default();
        got.push((uid, decision));
    }
    got
}

/// Asserts that nothing more arrives for a moment (no extra or duplicate events).
async fn expect_no_more(sub: &mut BroadcastSubscription) {
    if let Ok(Some(extra)) = tokio::time::timeout(Duration::from_millis(500), sub.next()).await {
        panic!("unexpected extra event {:?}", extra.event.id);
    }
}

fn filter(tenant: &str) -> TopicFilter {
    TopicFilter::topics([TOPIC]).for_tenant(tenant)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bus_gets_every_decision_for_its_tenant_in_batches() {
    let bus = Bus::memory(BusConfig::embedded()).unwrap();
    let mut t1 = bus.subscribe_broadcast(&filter("t1"), StartFrom::New).await.unwrap();
    let mut t2 = bus.subscribe_broadcast(&filter("t2"), StartFrom::New).await.unwrap();
    let config = DecisionEventsConfig {
        batch: 8,
        linger: Duration::from_millis(5),
        ..Default::default()
    };
    let (publisher, task) = DecisionPublisher::start(bus.clone(), config);
    // 100 decisions, far more than one batch, alternating between two tenants.
    let (mut expected_t1, mut expected_t2) = (Vec::new(), Vec::new());
    for i in 0..100 {
        let uid = format!("d{i}");
        let d = decision(&uid, i);
        let tenant = if i % 2 == 0 { "t1" } else { "t2" };
        if i % 4 == 1 {
            // The ready-made form too.
            publisher.submit(tenant, admission_decision_event(d.clone()));
        } else {
            publisher.submit_decision(tenant, d.clone(), None);
        }
        let expected = if i % 2 == 0 { &mut expected_t1 } else { &mut expected_t2 };
        expected.push((uid, admission_decision_event(d)));
    }
    for (sub, expected) in [(&mut t1, &expected_t1), (&mut t2, &expected_t2)] {
        let mut got = read_decisions(sub, 50).await;
        got.sort_by(|a, b| a.0.cmp(&b.0));
        let mut expected = expected.clone();
        expected.sort_by(|a, b| a.0.cmp(&b.0));
        // Each tenant gets exactly its own decisions: blocked ones in full (violations
        // included), plain allows as the summary only.
        assert_eq!(got, expected);
        assert!(got.iter().any(|(_, d)| d.decision.is_none()));
        assert!(
            got.iter()
                .any(|(_, d)| d.decision.as_ref().is_some_and(|d| d.violations.len() == 1))
        );
        expect_no_more(sub).await;
    }
    let stats = task.shutdown(Duration::from_secs(10)).await;
    assert_eq!(
        (stats.submitted, stats.published, stats.dropped, stats.rejected),
        (100, 100, 0, 0)
    );
    assert_eq!(publisher.stats(), stats);
    // After shutdown a submission is dropped and counted, and returns at once.
    publisher.submit_decision("t1", decision("late", 1), None);
    assert_eq!(publisher.stats().dropped, 1);
}

/// On a current-thread runtime the task cannot run while the test submits without awaiting,
/// so exactly `capacity` decisions fit in the queue and the rest are dropped and counted.
#[tokio::test(flavor = "current_thread")]
async fn a_full_queue_drops_and_counts_without_blocking() {
    let bus = Bus::memory(BusConfig::embedded()).unwrap();
    let config = DecisionEventsConfig {
        capacity: 16,
        batch: 4,
        ..Default::default()
    };
    let (publisher, task) = DecisionPublisher::start(bus.clone(), config);
    for i in 0..1000 {
        publisher.submit_decision("t1", decision(&format!("d{i}"), i), None);
    }
    let stats = publisher.stats();
    assert_eq!((stats.submitted, stats.dropped, stats.queued()), (1000, 984, 16));
    // The queued ones are still published, and nothing else.
    let stats = wait_for("the queue is flushed", || publisher.stats(), |s| s.queued() == 0).await;
    assert_eq!((stats.published, stats.dropped, stats.rejected), (16, 984, 0));
    let mut all = bus
        .subscribe_broadcast(&filter("t1"), StartFrom::Sequence(1))
        .await
        .unwrap();
    let got: BTreeSet<String> = read_decisions(&mut all, 16)
        .await
        .into_iter()
        .map(|(uid, _)| uid)
        .collect();
    assert_eq!(got, (0..16).map(|i| format!("d{i}")).collect());
    expect_no_more(&mut all).await;
    let stats = task.shutdown(Duration::from_secs(10)).await;
    assert_eq!((stats.submitted, stats.published, stats.dropped), (1000, 16, 984));
}

/// One tenant flooding the queue holds at most its share: another tenant's decisions,
/// submitted after the flood, still queue and are published. (A current-thread runtime: the
/// task does not run while the test submits.)
#[tokio::test(flavor = "current_thread")]
async fn a_flooding_tenant_holds_only_its_share_of_the_queue() {
    let bus = Bus::memory(BusConfig::embedded()).unwrap();
    let config = DecisionEventsConfig {
        capacity: 16,
        max_per_tenant: 10,
        batch: 4,
        ..Default::default()
    };
    let (publisher, task) = DecisionPublisher::start(bus.clone(), config);
    for i in 0..1000 {
        publisher.submit_decision("noisy", decision(&format!("n{i}"), i), None);
    }
    for i in 0..5 {
        publisher.submit_decision("quiet", decision(&format!("q{i}"), i), None);
    }
    let stats = publisher.stats();
    assert_eq!(
        (stats.submitted, stats.dropped, stats.over_share, stats.queued()),
        (1005, 990, 990, 15)
    );
    let stats = wait_for("the queue is flushed", || publisher.stats(), |s| s.queued() == 0).await;
    assert_eq!(stats.published, 15);
    let mut quiet = bus
        .subscribe_broadcast(&filter("quiet"), StartFrom::Sequence(1))
        .await
        .unwrap();
    let got: BTreeSet<String> = read_decisions(&mut quiet, 5)
        .await
        .into_iter()
        .map(|(uid, _)| uid)
        .collect();
    assert_eq!(
        got,
        (0..5).map(|i| format!("q{i}")).collect(),
        "every quiet decision arrived"
    );
    // Once its events left the queue, the noisy tenant may queue again.
    publisher.submit_decision("noisy", decision("later", 1), None);
    assert_eq!(publisher.stats().dropped, 990);
    task.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_the_bus_refuses_are_counted_not_retried() {
    let bus = Bus::memory(BusConfig::embedded()).unwrap();
    let (publisher, task) = DecisionPublisher::start(bus.clone(), DecisionEventsConfig::default());
    publisher.submit_decision("Not.A.Tenant", decision("bad", 1), None);
    publisher.submit_decision("t1", decision("good", 1), None);
    let stats = wait_for("both settle", || publisher.stats(), |s| s.queued() == 0).await;
    assert_eq!((stats.published, stats.rejected, stats.dropped), (1, 1, 0));
    assert_eq!(stats.failed_attempts, 0);
    let stats = task.shutdown(Duration::from_secs(10)).await;
    assert_eq!((stats.submitted, stats.published, stats.rejected), (2, 1, 1));
}

/// A bus config whose publishes give up quickly during an outage.
fn nats_config() -> BusConfig {
    BusConfig {
        operation_timeout: Duration::from_secs(1),
        ..BusConfig::default()
    }
}

fn outage_config(capacity: usize, batch: usize) -> DecisionEventsConfig {
    DecisionEventsConfig {
        capacity,
        batch,
        linger: Duration::from_millis(5),
        retry_initial: Duration::from_millis(50),
        retry_max: Duration::from_millis(500),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_outage_loses_nothing_within_capacity_and_counts_the_overflow() {
    let mut server = NatsServer::start().await.unwrap_or_else(|e| panic!("{e}"));
    let bus = Bus::connect_nats(&server.url(), nats_config()).await.unwrap();
    let (capacity, batch) = (200, 16);
    let (publisher, task) = DecisionPublisher::start(bus.clone(), outage_config(capacity, batch));
    let stats = || publisher.stats();

    publisher.submit_decision("t1", decision("before", 1), None);
    wait_for("the first event is published", stats, |s| s.published == 1).await;

    // Phase 1: fewer decisions than the queue holds while the server is down.
    server.stop();
    let n = 100;
    for i in 0..n {
        publisher.submit_decision("t1", decision(&format!("a{i}"), i), None);
    }
    assert_eq!(publisher.stats().dropped, 0);
    wait_for("publishing fails during the outage", stats, |s| s.failed_attempts > 0).await;
    server.restart().await.unwrap_or_else(|e| panic!("{e}"));
    let after_one = wait_for("all are published after the restart", stats, |s| s.queued() == 0).await;
    assert_eq!(
        (
            after_one.submitted,
            after_one.published,
            after_one.dropped,
            after_one.rejected
        ),
        (1 + n as u64, 1 + n as u64, 0, 0)
    );
    let mut all = bus
        .subscribe_broadcast(&filter("t1"), StartFrom::Sequence(1))
        .await
        .unwrap();
    let got: BTreeSet<String> = read_decisions(&mut all, 1 + n)
        .await
        .into_iter()
        .map(|(uid, _)| uid)
        .collect();
    let mut expected: BTreeSet<String> = (0..n).map(|i| format!("a{i}")).collect();
    expected.insert("before".into());
    assert_eq!(
        got, expected,
        "every decision submitted during the outage arrived, once"
    );
    expect_no_more(&mut all).await;

    // Phase 2: three times the queue bound while the server is down.
    server.stop();
    let m = 3 * capacity;
    for i in 0..m {
        publisher.submit_decision("t1", decision(&format!("b{i}"), i), None);
    }
    let failed_before = after_one.failed_attempts;
    wait_for("publishing fails again", stats, |s| s.failed_attempts > failed_before).await;
    server.restart().await.unwrap_or_else(|e| panic!("{e}"));
    let end = wait_for("the queue drains after the restart", stats, |s| s.queued() == 0).await;
    let published = end.published - after_one.published;
    let dropped = end.dropped;
    assert_eq!(end.rejected, 0);
    assert_eq!(published + dropped, m as u64, "{end:?}");
    // At least the queue's worth was kept; at most the queue plus one batch in retry.
    assert!(dropped <= (m - capacity) as u64, "{end:?}");
    assert!(dropped >= (m - capacity - batch) as u64, "{end:?}");
    // What was published is exactly what arrives.
    let got: BTreeSet<String> = read_decisions(&mut all, published as usize)
        .await
        .into_iter()
        .map(|(uid, _)| uid)
        .collect();
    assert_eq!(got.len() as u64, published);
    assert!(got.iter().all(|uid| uid.starts_with('b')), "{got:?}");
    expect_no_more(&mut all).await;

    let stats = task.shutdown(Duration::from_secs(10)).await;
    assert_eq!(stats.queued(), 0);
    assert_eq!(stats.published + stats.dropped, stats.submitted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_the_bus_down_counts_what_is_left_as_dropped() {
    let mut server = NatsServer::start().await.unwrap_or_else(|e| panic!("{e}"));
    let bus = Bus::connect_nats(&server.url(), nats_config()).await.unwrap();
    let (publisher, task) = DecisionPublisher::start(bus, outage_config(100, 16));
    server.stop();
    for i in 0..50 {
        publisher.submit_decision("t1", decision(&format!("d{i}"), i), None);
    }
    let stats = task.shutdown(Duration::from_secs(2)).await;
    assert_eq!(
        (stats.submitted, stats.published, stats.dropped, stats.queued()),
        (50, 0, 50, 0)
    );
}
