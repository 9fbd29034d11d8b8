//! Events: on the bus with the revision, through an outage (the outbox), to every
//! broadcast subscriber.
//!
//! Every scenario runs against a fresh policy store, embedded and distributed (`both!`).
//!
//! The outbox scenario differs by mode: distributed stops nats-server between commit and
//! publish; embedded has no broker to stop, so it runs the real gRPC services with an outbox
//! relay whose sink (the in-process bus) fails until released
//! (`embedded_outbox_survives_a_failing_sink`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use portcullis_bus::{Bus, BusConfig, StartFrom, TopicFilter};
use portcullis_policy_store::testing::TestServer;
use portcullis_policy_store::{BusSink, PolicyStore, bootstrap_default_tenant, sqlite_url};
use portcullis_proto::common::v1 as pc;
use portcullis_proto::events::v1 as pe;
use portcullis_server::{Credentials, GrpcServer, Mode, ServerConfig};
use portcullis_storage::{EventSink, OutboxEvent, OutboxRelay, RelayConfig, Store};
use portcullis_test_kit::eventually;

use portcullis_integration_tests::store::{
    Api, EVENT_WAIT, QUIET, assert_quiet, attestor_doc, by_name, is_policy_event, next_event, next_matching,
    policy_changed, policy_doc, ruleset_doc, subscribe, subscribe_after_restart,
};

pub async fn events_arrive_with_the_revision(server: &mut TestServer) {
    let mut a = Api::new(server, &server.admin_key).await;
    let author = a.who_am_i().await.unwrap().key_id;
    let b_key = a
        .with_key(&server.operator_key)
        .create_tenant("tenant-ev")
        .await
        .unwrap();
    let mut b = a.with_key(&b_key);
    let mut events = subscribe(&server.bus, &TopicFilter::topics(["policy.changed", "cluster.changed"])).await;

    let created = a.create_policy(&policy_doc("evented", "block")).await.unwrap();
    a.update_policy(by_name("evented"), &policy_doc("evented", "log"), 1)
        .await
        .unwrap();
    let cluster = a.register_cluster("evented-cluster", by_name("evented")).await.unwrap();
    let cluster_id = cluster.cluster.unwrap().id;
    a.assign(by_name("evented-cluster"), None).await.unwrap();
    a.delete_policy(by_name("evented"), Some(2)).await.unwrap();
    let other = b.create_policy(&policy_doc("evented", "block")).await.unwrap();

    let expected_policy = [
        (created.id.as_str(), "default", 1, pe::ChangeKind::Created),
        (created.id.as_str(), "default", 2, pe::ChangeKind::Updated),
        (created.id.as_str(), "default", 2, pe::ChangeKind::Deleted),
        (other.id.as_str(), "tenant-ev", 1, pe::ChangeKind::Created),
    ];
    let mut policy_events = Vec::new();
    let mut cluster_events = Vec::new();
    while policy_events.len() < expected_policy.len() || cluster_events.len() < 2 {
        let (received, envelope) = next_event(&mut events).await;
        let event = &received.event;
        assert_eq!(envelope.event_id, event.id, "the bus id (Nats-Msg-Id) is the event id");
        assert_eq!(envelope.topic, event.topic);
        assert_eq!(envelope.tenant_id, event.tenant);
        assert_eq!(
            event.subject(),
            format!("pc.{}.evt.{}", envelope.tenant_id, envelope.topic)
        );
        assert!(envelope.occurred_at.is_some());
        match &envelope.payload {
            Some(pe::event_envelope::Payload::PolicyChanged(c)) => {
                assert_eq!(event.topic, "policy.changed");
                policy_events.push((c.clone(), envelope.tenant_id.clone(), event.subject()));
            }
            Some(pe::event_envelope::Payload::ClusterChanged(c)) => {
                assert_eq!(event.topic, "cluster.changed");
                assert_eq!(envelope.tenant_id, "default");
                cluster_events.push(c.clone());
            }
            other => panic!("unexpected payload {other:?}"),
        }
    }
    // In commit order per tenant; cross-tenant order is not promised, so sort by tenant.
    policy_events.sort_by_key(|(_, tenant, _)| tenant.clone());
    for ((changed, tenant, subject), (id, want_tenant, revision, change)) in policy_events.iter().zip(expected_policy) {
        assert_eq!(changed.policy_id, id);
        assert_eq!(tenant, want_tenant);
        assert_eq!(subject, &format!("pc.{want_tenant}.evt.policy.changed"));
        assert_eq!(changed.name, "evented");
        assert_eq!(changed.revision, revision, "{changed:?}");
        assert_eq!(changed.change, change as i32, "{changed:?}");
    }
    assert_eq!(policy_events[0].0.author_key_id, author);
    // The cluster's events carry the assigned policy and its revision.
    assert_eq!(cluster_events[0].cluster_id, cluster_id);
    assert_eq!(cluster_events[0].change, pe::ChangeKind::Created as i32);
    assert_eq!(
        (cluster_events[0].policy_id.as_str(), cluster_events[0].policy_revision),
        (created.id.as_str(), 2)
    );
    assert_eq!(cluster_events[1].change, pe::ChangeKind::Updated as i32);
    assert!(cluster_events[1].policy_id.is_empty());
    assert!(cluster_events[1].generation > cluster_events[0].generation);
    assert_quiet(&mut events, QUIET, |_| true).await;
}

/// Distributed: nats-server is down between the commit and the publish; the change is
/// committed (with its event in the outbox) and the event arrives once NATS is back.
pub async fn event_survives_a_nats_outage(server: &mut TestServer) {
    let mut api = Api::new(server, &server.admin_key).await;
    let filter = TopicFilter::topics(["policy.changed"]).for_tenant("default");
    let mut events = subscribe(&server.bus, &filter).await;
    let policy = api.create_policy(&policy_doc("outage", "block")).await.unwrap();
    let (_, created) = next_matching(&mut events, |e| is_policy_event(e, &policy.id)).await;
    assert_eq!(policy_changed(&created).revision, 1);
    drop(events);
    let before_outage = server.bus.last_sequence().await.unwrap();
    let nats_url = server.nats().unwrap().url();

    server.nats().unwrap().stop();
    // Both commit without the bus.
    let updated = api
        .update_policy(by_name("outage"), &policy_doc("outage", "log"), 1)
        .await
        .unwrap();
    assert_eq!(updated.policy.unwrap().revision, 2);
    let during = api.create_policy(&policy_doc("during.outage", "block")).await.unwrap();
    assert_eq!(api.get_policy(by_name("outage")).await.unwrap().revision, 2);
    // The relay has tried and failed: the events wait in the outbox. A pause that is the
    // scenario (real time under the outage, for the relay's attempts; they leave no state to
    // poll for), not a wait for something to happen.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pending = server.store.pending_event_count().await.unwrap();
    assert!(pending >= 2, "the two events wait in the outbox: {pending}");

    server.nats().unwrap().restart().await.unwrap();
    let (_bus, mut events) = subscribe_after_restart(&nats_url, &filter, before_outage).await;
    let (_, first) = next_event(&mut events).await;
    let first = policy_changed(&first);
    assert_eq!((first.policy_id.as_str(), first.revision), (policy.id.as_str(), 2));
    assert_eq!(first.change, pe::ChangeKind::Updated as i32);
    let (_, second) = next_event(&mut events).await;
    let second = policy_changed(&second);
    assert_eq!((second.policy_id.as_str(), second.revision), (during.id.as_str(), 1));
    // Each exactly once (a publish retried across the outage is de-duplicated).
    assert_quiet(&mut events, QUIET, |_| true).await;
    let store = &server.store;
    eventually(EVENT_WAIT, || async move {
        match store.pending_event_count().await.unwrap() {
            0 => Ok(()),
            n => Err(format!("the outbox was not emptied: {n} pending")),
        }
    })
    .await;
}

/// A sink that refuses every event until opened: the in-process bus "down".
#[derive(Clone)]
struct Gate {
    bus: BusSink,
    open: Arc<AtomicBool>,
    refused: Arc<AtomicUsize>,
}

impl EventSink for Gate {
    type Error = String;

    fn publish(&self, event: &OutboxEvent) -> impl std::future::Future<Output = Result<(), String>> + Send {
        let open = self.open.load(Ordering::SeqCst);
        if !open {
            self.refused.fetch_add(1, Ordering::SeqCst);
        }
        let publish = self.bus.publish(event);
        async move {
            if open {
                publish.await.map_err(|e| e.to_string())
            } else {
                Err("bus unavailable (test gate closed)".to_owned())
            }
        }
    }
}

/// Embedded: no broker to stop, so the relay's sink (the in-process bus) fails until
/// released. The real gRPC services and store run as in `portcullis up`; only the relay
/// is built here, to put the gate in front of the bus.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_outbox_survives_a_failing_sink() {
    let dir = portcullis_test_kit::DataDir::new().unwrap();
    let store = Store::connect(&sqlite_url(&dir.path().join("portcullis.db")))
        .await
        .unwrap();
    let key_file = bootstrap_default_tenant(&store, dir.path()).await.unwrap().unwrap();
    let admin_key = std::fs::read_to_string(key_file).unwrap().trim().to_owned();
    let bus = Bus::memory(BusConfig::embedded()).unwrap();

    let service = PolicyStore::new(store.clone());
    let config = ServerConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), Mode::Embedded);
    let mut grpc = GrpcServer::new(config, service.auth_state(Credentials::default()));
    service.register(&mut grpc);
    let bound = grpc.bind().await.unwrap();
    let url = bound.url();
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(bound.serve(async {
        let _ = server_stopped.await;
    }));
    let gate = Gate {
        bus: BusSink::new(bus.clone()),
        open: Arc::new(AtomicBool::new(false)),
        refused: Arc::new(AtomicUsize::new(0)),
    };
    let relay = Arc::new(OutboxRelay::with_config(
        store.clone(),
        gate.clone(),
        RelayConfig {
            min_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
            ..RelayConfig::default()
        },
    ));
    let (stop_relay, relay_stopped) = tokio::sync::oneshot::channel::<()>();
    let relaying = tokio::spawn({
        let relay = relay.clone();
        async move {
            relay
                .run(async {
                    let _ = relay_stopped.await;
                })
                .await;
        }
    });

    let mut events = subscribe(&bus, &TopicFilter::topics(["policy.changed"])).await;
    let mut api = Api::connect(&url, &admin_key).await;
    let policy = api.create_policy(&policy_doc("gated", "block")).await.unwrap();
    let updated = api
        .update_policy(by_name("gated"), &policy_doc("gated", "log"), 1)
        .await
        .unwrap();
    assert_eq!(updated.policy.unwrap().revision, 2, "committed while the bus is down");
    let refused = &gate.refused;
    eventually(EVENT_WAIT, || async move {
        match refused.load(Ordering::SeqCst) {
            n if n >= 2 => Ok(()),
            n => Err(format!("the relay was refused {n} times, expected 2 tries")),
        }
    })
    .await;
    assert_eq!(
        store.pending_event_count().await.unwrap(),
        2,
        "the events wait in the outbox"
    );
    assert_quiet(&mut events, Duration::from_millis(300), |_| true).await;

    gate.open.store(true, Ordering::SeqCst);
    for (revision, change) in [(1, pe::ChangeKind::Created), (2, pe::ChangeKind::Updated)] {
        let (received, envelope) = next_event(&mut events).await;
        assert_eq!(received.event.subject(), "pc.default.evt.policy.changed");
        let changed = policy_changed(&envelope);
        assert_eq!(
            (changed.policy_id.as_str(), changed.revision),
            (policy.id.as_str(), revision)
        );
        assert_eq!(changed.change, change as i32);
    }
    assert_quiet(&mut events, QUIET, |_| true).await;
    assert_eq!(store.pending_event_count().await.unwrap(), 0);

    let _ = stop_relay.send(());
    relaying.await.unwrap();
    let _ = stop_server.send(());
    serving.await.unwrap().unwrap();
}

pub async fn two_broadcast_subscribers_get_every_event(server: &mut TestServer) {
    // In distributed mode the second subscriber is another connection (another replica);
    // embedded mode has one in-process bus.
    let second_bus = match server.options.mode {
        Mode::Distributed => {
            let url = server.nats().unwrap().url();
            Bus::connect_nats(&url, BusConfig::default()).await.unwrap()
        }
        Mode::Embedded => server.bus.clone(),
    };
    let start = StartFrom::after(server.bus.last_sequence().await.unwrap());
    let all = TopicFilter::all();
    let mut first = server.bus.subscribe_broadcast(&all, start).await.unwrap();
    let mut second = second_bus.subscribe_broadcast(&all, start).await.unwrap();

    let mut api = Api::new(server, &server.admin_key).await;
    let policy = api.create_policy(&policy_doc("fanout", "block")).await.unwrap();
    api.update_policy(by_name("fanout"), &policy_doc("fanout", "log"), 1)
        .await
        .unwrap();
    api.create_ruleset(&ruleset_doc("fanout-rs", "log")).await.unwrap();
    api.create_attestor(&attestor_doc("fanout-att")).await.unwrap();
    api.register_cluster("fanout-cluster", by_name("fanout")).await.unwrap();
    let (_, key_id) = api.create_key(pc::Role::Viewer, None).await.unwrap();
    api.revoke_key(&key_id).await.unwrap();
    api.assign(by_name("fanout-cluster"), None).await.unwrap();
    api.delete_policy(by_name("fanout"), None).await.unwrap();

    // The first subscriber reads until the last change (the delete) has arrived.
    let mut seen = Vec::new();
    loop {
        let (received, envelope) = next_event(&mut first).await;
        let last = is_policy_event(&envelope, &policy.id)
            && policy_changed(&envelope).change == pe::ChangeKind::Deleted as i32;
        seen.push((
            received.sequence,
            received.event.id.clone(),
            received.event.topic.clone(),
        ));
        if last {
            break;
        }
    }
    let topics: BTreeSet<&str> = seen.iter().map(|(_, _, topic)| topic.as_str()).collect();
    let expected: BTreeSet<&str> = [
        "policy.changed",
        "ruleset.changed",
        "attestor.changed",
        "cluster.changed",
        "apikey.revoked",
    ]
    .into();
    assert_eq!(topics, expected, "{seen:?}");
    assert!(seen.len() >= 8, "{seen:?}");
    // The second gets exactly the same events, in the same order.
    let mut also = Vec::new();
    while also.len() < seen.len() {
        let (received, _) = next_event(&mut second).await;
        also.push((
            received.sequence,
            received.event.id.clone(),
            received.event.topic.clone(),
        ));
    }
    assert_eq!(also, seen);
    // And reading on did not take them from the first: both saw the same, nothing more.
    assert_quiet(&mut first, Duration::from_millis(500), |_| true).await;
    assert_quiet(&mut second, Duration::from_millis(500), |_| true).await;
}

portcullis_test_kit::both! {
    embedded: &mut portcullis_integration_tests::store::embedded().await,
    distributed: &mut portcullis_integration_tests::store::distributed().await;
    events_arrive_with_the_revision,
    two_broadcast_subscribers_get_every_event,
}

/// The outbox survives a NATS outage between commit and publish (distributed only: the
/// embedded counterpart is `embedded_outbox_survives_a_failing_sink`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_event_survives_a_nats_outage() {
    let mut server = portcullis_policy_store::testing::TestServer::distributed()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    event_survives_a_nats_outage(&mut server).await;
}
