//! With an endpoint, spans and metrics arrive at an OTLP/gRPC collector (an in-process tonic server here).
//! (Its own test binary with a single test: the global subscriber can be installed once per process.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value as NumberValue;
use portcullis_telemetry::testing::{OtlpCollector, service_name};
use portcullis_telemetry::{TelemetryConfig, init};

fn counter_value(requests: &[ExportMetricsServiceRequest]) -> Option<NumberValue> {
    let mut value = None;
    for rm in requests.iter().flat_map(|r| &r.resource_metrics) {
        for sm in &rm.scope_metrics {
            for metric in sm.metrics.iter().filter(|m| m.name == "portcullis.test.requests") {
                if let Some(Data::Sum(sum)) = &metric.data {
                    value = sum.data_points.first().and_then(|p| p.value);
                }
            }
        }
    }
    value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_and_metrics_reach_the_otlp_collector() {
    let collector = OtlpCollector::start().await.unwrap();

    let mut config = TelemetryConfig::new("portcullis-otlp-test");
    config.otlp_endpoint = Some(collector.endpoint().to_owned());
    let guard = init(config).expect("init with endpoint");
    assert!(guard.exporting());

    tracing::info_span!("admission.review", transport = "grpc").in_scope(|| tracing::info!("reviewed"));
    tracing::debug_span!("filtered.out").in_scope(|| {});
    let counter = opentelemetry::global::meter("portcullis-test")
        .u64_counter("portcullis.test.requests")
        .build();
    counter.add(3, &[KeyValue::new("outcome", "allowed")]);

    // Shutdown flushes the batched spans and takes a final metrics collection.
    guard.shutdown().expect("flush to the collector");

    // A deadline so a broken export fails the test instead of hanging it; not a latency assertion.
    let spans = collector
        .wait_for_spans(Duration::from_secs(30), |spans| !spans.is_empty())
        .await
        .expect("collector received spans");
    let metrics = collector
        .wait_for_metrics(Duration::from_secs(30), |m| counter_value(m).is_some())
        .await
        .expect("collector received metrics");
    let span_names: Vec<String> = spans.iter().map(|s| s.name.clone()).collect();
    let counter_value = counter_value(&metrics);
    let mut services: Vec<Option<String>> = spans.iter().map(|s| s.service.clone()).collect();
    services.extend(
        metrics
            .iter()
            .flat_map(|r| &r.resource_metrics)
            .map(|rm| service_name(rm.resource.as_ref())),
    );

    assert_eq!(span_names, vec!["admission.review".to_owned()]);
    assert_eq!(counter_value, Some(NumberValue::AsInt(3)));
    assert!(
        services.iter().all(|s| s.as_deref() == Some("portcullis-otlp-test")),
        "{services:?}"
    );
}
