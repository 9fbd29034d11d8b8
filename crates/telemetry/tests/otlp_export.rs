//! With an endpoint, spans and metrics arrive at an OTLP/gRPC collector (an in-process tonic server here).
//! (Its own test binary with a single test: the global subscriber can be installed once per process.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value as NumberValue;
use opentelemetry_proto::tonic::resource::v1::Resource;
use portcullis_telemetry::{TelemetryConfig, init};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

enum Received {
    Traces(ExportTraceServiceRequest),
    Metrics(ExportMetricsServiceRequest),
}

/// Forwards every export request to the test.
#[derive(Clone)]
struct Collector(mpsc::Sender<Received>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.0
            .send(Received::Traces(request.into_inner()))
            .await
            .map_err(|_| Status::internal("test gone"))?;
        Ok(Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.0
            .send(Received::Metrics(request.into_inner()))
            .await
            .map_err(|_| Status::internal("test gone"))?;
        Ok(Response::new(ExportMetricsServiceResponse { partial_success: None }))
    }
}

fn service_name(resource: Option<&Resource>) -> Option<String> {
    resource?
        .attributes
        .iter()
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| match kv.value.as_ref()?.value {
            Some(AnyValue::StringValue(ref s)) => Some(s.clone()),
            _ => None,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_and_metrics_reach_the_otlp_collector() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = futures::stream::unfold(listener, |l| async move {
        Some((l.accept().await.map(|(stream, _)| stream), l))
    });
    let (tx, mut rx) = mpsc::channel(64);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Collector(tx.clone())))
            .add_service(MetricsServiceServer::new(Collector(tx)))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stop_rx.await;
            }),
    );

    let mut config = TelemetryConfig::new("portcullis-otlp-test");
    config.otlp_endpoint = Some(format!("http://{addr}"));
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

    let mut span_names = Vec::new();
    let mut counter_value = None;
    let mut services = Vec::new();
    // A deadline so a broken export fails the test instead of hanging it; not a latency assertion.
    let receive = async {
        while span_names.is_empty() || counter_value.is_none() {
            match rx.recv().await {
                Some(Received::Traces(req)) => {
                    for rs in &req.resource_spans {
                        services.push(service_name(rs.resource.as_ref()));
                        for ss in &rs.scope_spans {
                            span_names.extend(ss.spans.iter().map(|s| s.name.clone()));
                        }
                    }
                }
                Some(Received::Metrics(req)) => {
                    for rm in &req.resource_metrics {
                        services.push(service_name(rm.resource.as_ref()));
                        for sm in &rm.scope_metrics {
                            for metric in sm.metrics.iter().filter(|m| m.name == "portcullis.test.requests") {
                                if let Some(Data::Sum(sum)) = &metric.data {
                                    counter_value = sum.data_points.first().and_then(|p| p.value);
                                }
                            }
                        }
                    }
                }
                None => break,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), receive)
        .await
        .expect("collector received spans and metrics");

    assert_eq!(span_names, vec!["admission.review".to_owned()]);
    assert_eq!(counter_value, Some(NumberValue::AsInt(3)));
    assert!(
        services.iter().all(|s| s.as_deref() == Some("portcullis-otlp-test")),
        "{services:?}"
    );

    let _ = stop_tx.send(());
    server.await.unwrap().unwrap();
}
