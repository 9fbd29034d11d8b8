//! One trace across the bus: a verification asked over `pc.rpc.signature.verify` inside a
//! span (as admission asks inside its review span) is answered inside a child of that span,
//! and the signature service's calls to the policy store continue it. Checked at an
//! in-process OTLP collector, embedded and distributed. (Its own test binary: telemetry is
//! installed once per process.)

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod support;

use std::time::Duration;

use portcullis_proto::signature::v1 as ps;
use portcullis_server::Mode;
use portcullis_signature::rpc;
use portcullis_telemetry::testing::{CollectedSpan, export_to_collector, flush};
use tracing::Instrument as _;

fn describe(spans: &[CollectedSpan]) -> String {
    spans
        .iter()
        .map(|s| {
            format!(
                "{} trace={} span={} parent={}\n",
                s.name, s.trace_id, s.span_id, s.parent_span_id
            )
        })
        .collect()
}

/// Asks for a verification inside a span named `asker` (an unknown attestor: the service
/// still asks the store for it).
async fn ask(mode: Mode, asker: &'static str) {
    let f = support::start(mode).await;
    let request = ps::VerifyRequest {
        tenant_id: f.store.tenant_id.clone(),
        image: format!(
            "{}/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            f.registry.host()
        ),
        attestors: vec!["nobody".into()],
        ..Default::default()
    };
    let span = tracing::info_span!("test.ask", test.asker = asker);
    rpc::request(&f.store.bus, &request, Duration::from_secs(10))
        .instrument(span)
        .await
        .unwrap();
    f.signature.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answer_over_the_bus_continues_the_askers_trace() {
    let (collector, guard) = export_to_collector("portcullis-signature-trace-test").await.unwrap();
    ask(Mode::Embedded, "embedded").await;
    ask(Mode::Distributed, "distributed").await;
    flush(guard).await.unwrap();

    let spans = collector
        .wait_for_spans(Duration::from_secs(30), |spans| {
            spans.iter().filter(|s| s.name == "test.ask").count() == 2
                && spans.iter().filter(|s| s.name == "bus.request").count() >= 2
        })
        .await
        .unwrap_or_else(|spans| panic!("spans received:\n{}", describe(&spans)));
    for asker in spans.iter().filter(|s| s.name == "test.ask") {
        let which = asker.attribute("test.asker").unwrap_or_default();
        // The service's span: a child of the asker's.
        let answered = spans
            .iter()
            .find(|s| s.name == "bus.request" && s.parent_span_id == asker.span_id)
            .unwrap_or_else(|| panic!("{which}: no answering span under the asker's:\n{}", describe(&spans)));
        assert_eq!(answered.trace_id, asker.trace_id, "{which}");
        assert_eq!(
            answered.attribute("messaging.destination.name"),
            Some("pc.rpc.signature.verify"),
            "{which}"
        );
        // Its read of the attestor from the policy store continues the same trace below it.
        let store_call = spans
            .iter()
            .find(|s| {
                s.name == "grpc.client"
                    && s.parent_span_id == answered.span_id
                    && s.attribute("rpc.method").is_some_and(|m| m.ends_with("GetAttestor"))
            })
            .unwrap_or_else(|| panic!("{which}: no store call under the answer:\n{}", describe(&spans)));
        assert_eq!(store_call.trace_id, asker.trace_id, "{which}");
    }
}
