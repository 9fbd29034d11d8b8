//! The work-subscription loop: ack after success, nak and redelivery on failure, giving up
//! after the last attempt, undecodable events not retried.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use portcullis_bus::{Bus, BusConfig, Event, TopicFilter};
use portcullis_kit::work::{WorkHandler, WorkOptions, subscribe_work};
use portcullis_proto::events::v1::EventEnvelope;
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const TOPIC: &str = "policy.changed";

/// Fails each event id its first `failures[id]` times; reports every call.
#[derive(Clone)]
struct Flaky {
    failures: Arc<HashMap<String, u64>>,
    calls: Arc<Mutex<HashMap<String, u64>>>,
    seen: mpsc::UnboundedSender<(String, String)>,
}

impl WorkHandler for Flaky {
    type Error = String;

    async fn handle(&self, tenant: &str, envelope: &EventEnvelope) -> Result<(), String> {
        let id = envelope.event_id.clone();
        let call = {
            let mut calls = self.calls.lock().unwrap();
            let n = calls.entry(id.clone()).or_insert(0);
            *n += 1;
            *n
        };
        let _ = self.seen.send((tenant.to_owned(), id.clone()));
        if call <= self.failures.get(&id).copied().unwrap_or(0) {
            Err(format!("{id} fails on call {call}"))
        } else {
            Ok(())
        }
    }
}

fn event(id: &str) -> Event {
    let payload = EventEnvelope {
        event_id: id.to_owned(),
        tenant_id: "acme".to_owned(),
        topic: TOPIC.to_owned(),
        ..EventEnvelope::default()
    };
    Event::new(id, "acme", TOPIC, Bytes::from(payload.encode_to_vec()))
}

async fn next(rx: &mut mpsc::UnboundedReceiver<(String, String)>) -> (String, String) {
    match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
        Ok(Some(seen)) => seen,
        Ok(None) => panic!("the handler went away"),
        Err(_) => panic!("no event handled within 10 s"),
    }
}

struct Running {
    seen: mpsc::UnboundedReceiver<(String, String)>,
    calls: Arc<Mutex<HashMap<String, u64>>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

async fn start(bus: &Bus, failures: &[(&str, u64)], max_attempts: u64) -> Running {
    let (tx, seen) = mpsc::unbounded_channel();
    let calls = Arc::new(Mutex::new(HashMap::new()));
    let handler = Flaky {
        failures: Arc::new(failures.iter().map(|(id, n)| ((*id).to_owned(), *n)).collect()),
        calls: calls.clone(),
        seen: tx,
    };
    let mut options = WorkOptions::new("test", "it is dropped", max_attempts, 1);
    options.retry_pause = Duration::from_millis(1);
    let stop = CancellationToken::new();
    let run = subscribe_work(
        bus,
        "work-test",
        &TopicFilter::topics([TOPIC]),
        options,
        handler,
        stop.clone(),
    )
    .await
    .unwrap();
    Running {
        seen,
        calls,
        stop,
        task: tokio::spawn(run),
    }
}

#[tokio::test]
async fn a_failed_event_comes_back_until_it_succeeds_and_then_not_again() {
    let bus = Bus::memory(BusConfig::embedded()).unwrap();
    let mut run = start(&bus, &[("flaky", 2)], 5).await;
    bus.publish(event("flaky")).await.unwrap();
    for _ in 0..3 {
        assert_eq!(next(&mut run.seen).await, ("acme".to_owned(), "flaky".to_owned()));
    }
    // One event at a time: once the marker is handled, `flaky` was acked and not redelivered.
    bus.publish(event("marker")).await.unwrap();
    assert_eq!(next(&mut run.seen).await.1, "marker");
    assert_eq!(run.calls.lock().unwrap().get("flaky"), Some(&3));
    run.stop.cancel();
    assert_eq!(run.task.await.unwrap(), Ok(()));
}

#[tokio::test]
async fn an_event_that_always_fails_is_given_up_after_the_last_attempt() {
    let bus = Bus::memory(BusConfig::embedded()).unwrap();
    let mut run = start(&bus, &[("poison", u64::MAX)], 3).await;
    bus.publish(event("poison")).await.unwrap();
    for _ in 0..3 {
        assert_eq!(next(&mut run.seen).await.1, "poison");
    }
    bus.publish(event("marker")).await.unwrap();
    assert_eq!(next(&mut run.seen).await.1, "marker");
    assert_eq!(run.calls.lock().unwrap().get("poison"), Some(&3));
    run.stop.cancel();
    assert_eq!(run.task.await.unwrap(), Ok(()));
}

#[tokio::test]
async fn an_undecodable_event_is_acked_without_reaching_the_handler() {
    let bus = Bus::memory(BusConfig::embedded()).unwrap();
    let mut run = start(&bus, &[], 3).await;
    bus.publish(Event::new(
        "junk",
        "acme",
        TOPIC,
        Bytes::from_static(&[0xff, 0xff, 0xff]),
    ))
    .await
    .unwrap();
    bus.publish(event("marker")).await.unwrap();
    assert_eq!(next(&mut run.seen).await.1, "marker");
    assert!(run.seen.try_recv().is_err());
    assert_eq!(run.calls.lock().unwrap().len(), 1);
    run.stop.cancel();
    assert_eq!(run.task.await.unwrap(), Ok(()));
}
