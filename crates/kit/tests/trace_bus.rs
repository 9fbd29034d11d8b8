//! Trace context through NATS headers, with the real nats-server: an event published inside
//! a span is handled, by the follower, inside a span whose parent is the publisher's span,
//! as the in-process OTLP collector sees it; a gRPC call made in a span carries it; a bus
//! request made in a span is answered inside a child of that span.
//! (Its own test binary: telemetry is installed once per process.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bytes::Bytes;
use opentelemetry::trace::TraceContextExt as _;
use portcullis_bus::{Bus, BusConfig, Event, TopicFilter};
use portcullis_kit::Credential;
use portcullis_kit::follow::{FollowHandler, FollowedEvent, Follower, Gap};
use portcullis_kit::trace;
use portcullis_proto::events::v1::EventEnvelope;
use portcullis_telemetry::testing::OtlpCollector;
use portcullis_telemetry::{TelemetryConfig, init};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

struct Handled(mpsc::UnboundedSender<(String, Option<String>)>);

impl FollowHandler for Handled {
    fn event(&mut self, event: &FollowedEvent) {
        // The handler runs inside the follower's span for this event.
        let inside =
            trace::context_of(&tracing::Span::current()).map(|cx| cx.span().span_context().trace_id().to_string());
        let _ = self.0.send((event.envelope.event_id.clone(), inside));
    }
    fn gap(&mut self, _gap: &Gap) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handling_and_answering_spans_continue_the_senders_trace() {
    let collector = OtlpCollector::start().await.unwrap();
    let mut config = TelemetryConfig::new("portcullis-kit-trace");
    config.otlp_endpoint = Some(collector.endpoint().to_owned());
    let guard = init(config).unwrap();
    assert!(trace::exporting_traces());

    let nats = portcullis_test_kit::NatsServer::start().await.unwrap();
    // Small stream limits: JetStream refuses a stream larger than the disk's free space.
    let bus = Bus::connect_nats(&nats.url(), BusConfig::embedded()).await.unwrap();
    let start = bus.last_sequence().await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let follower = Follower::new(bus.clone(), TopicFilter::topics(["policy.changed"])).start_after(start);
    let task = tokio::spawn(follower.run(Handled(tx), stop.clone()));

    let publishing = tracing::info_span!("test.publish");
    let publisher = trace::context_of(&publishing).expect("an exported span has a context");
    let (trace_id, span_id) = (
        publisher.span().span_context().trace_id().to_string(),
        publisher.span().span_context().span_id().to_string(),
    );
    let payload = EventEnvelope {
        event_id: "e1".to_owned(),
        tenant_id: "acme".to_owned(),
        topic: "policy.changed".to_owned(),
        ..EventEnvelope::default()
    };
    let mut event = Event::new("e1", "acme", "policy.changed", Bytes::from(payload.encode_to_vec()));
    publishing.in_scope(|| assert!(trace::inject_current(&mut event.headers)));
    assert!(event.traceparent().is_some_and(|tp| tp.contains(&span_id)));
    bus.publish(event).await.unwrap();
    // A gRPC call made in the span carries it too (the credential interceptor sends it).
    let mut call = tonic::Request::new(());
    publishing.in_scope(|| Credential::bearer("pc_key.secret").unwrap().apply(&mut call));
    let sent = call.metadata().get(trace::TRACEPARENT).unwrap().to_str().unwrap();
    assert_eq!(sent, format!("00-{trace_id}-{span_id}-01"));
    drop(publishing);

    let (id, inside) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("the event is handled")
        .unwrap();
    assert_eq!(id, "e1");
    assert_eq!(
        inside.as_deref(),
        Some(trace_id.as_str()),
        "the handler runs in the trace"
    );
    stop.cancel();
    task.await.unwrap();

    // Request/reply: the answering side runs in a child of the asker's span.
    let mut requests = bus.serve("pc.rpc.test.echo", "echo").await.unwrap();
    let server = tokio::spawn(async move {
        let request = requests.next().await.unwrap();
        let span = trace::request_span(&request.subject, &request.headers);
        let inside = span.in_scope(|| {
            trace::context_of(&tracing::Span::current()).map(|cx| cx.span().span_context().trace_id().to_string())
        });
        drop(span);
        request.reply(Bytes::from_static(b"pong")).await.unwrap();
        inside
    });
    let asking = tracing::info_span!("test.ask");
    let asker = trace::context_of(&asking).expect("an exported span has a context");
    let (ask_trace, ask_span) = (
        asker.span().span_context().trace_id().to_string(),
        asker.span().span_context().span_id().to_string(),
    );
    let headers = asking.in_scope(trace::current_headers);
    assert!(headers.get(trace::TRACEPARENT).is_some_and(|tp| tp.contains(&ask_span)));
    let reply = bus
        .request_with_headers(
            "pc.rpc.test.echo",
            headers,
            Bytes::from_static(b"ping"),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert_eq!(&reply[..], b"pong");
    drop(asking);
    assert_eq!(
        server.await.unwrap().as_deref(),
        Some(ask_trace.as_str()),
        "the answer runs in the trace"
    );

    // Flush, then look at what the collector got: the link, not only the header.
    tokio::task::spawn_blocking(move || guard.shutdown())
        .await
        .unwrap()
        .unwrap();
    let spans = collector
        .wait_for_spans(Duration::from_secs(30), |spans| {
            ["bus.event", "test.publish", "bus.request", "test.ask"]
                .iter()
                .all(|name| spans.iter().any(|s| s.name == *name))
        })
        .await
        .unwrap_or_else(|spans| panic!("spans received: {spans:#?}"));
    let published = spans.iter().find(|s| s.name == "test.publish").unwrap();
    let handled = spans.iter().find(|s| s.name == "bus.event").unwrap();
    assert_eq!(published.span_id, span_id);
    assert_eq!(handled.trace_id, trace_id);
    assert_eq!(handled.parent_span_id, span_id, "{handled:#?}");
    assert_eq!(handled.attribute("messaging.destination.name"), Some("policy.changed"));
    let asked = spans.iter().find(|s| s.name == "test.ask").unwrap();
    let answered = spans.iter().find(|s| s.name == "bus.request").unwrap();
    assert_eq!(asked.span_id, ask_span);
    assert_eq!(answered.trace_id, ask_trace);
    assert_eq!(answered.parent_span_id, ask_span, "{answered:#?}");
    assert_eq!(
        answered.attribute("messaging.destination.name"),
        Some("pc.rpc.test.echo")
    );
}
