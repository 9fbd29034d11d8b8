//! Test support: a meter whose recordings tests read back ([`in_memory_meter`]), and an
//! in-process OTLP/gRPC collector keeping the spans and metrics it receives ([`OtlpCollector`]).
//!
//! ```
//! use opentelemetry::KeyValue;
//! let (meter, metrics) = portcullis_telemetry::testing::in_memory_meter();
//! meter.u64_counter("jobs").build().add(2, &[KeyValue::new("kind", "scan")]);
//! assert_eq!(metrics.counter("jobs", &[("kind", "scan")]), 2);
//! assert_eq!(metrics.counter("jobs", &[]), 0);
//! ```

use std::sync::{Arc, Weak};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Meter, MeterProvider as _};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, HistogramDataPoint, Metric, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{InstrumentKind, ManualReader, Pipeline, SdkMeterProvider, Temporality};

/// A fresh meter (own provider, cumulative temporality) and the handle reading its recordings back.
pub fn in_memory_meter() -> (Meter, InMemoryMetrics) {
    let reader = SharedReader(Arc::new(ManualReader::builder().build()));
    let provider = SdkMeterProvider::builder().with_reader(reader.clone()).build();
    let meter = provider.meter("portcullis-test");
    (
        meter,
        InMemoryMetrics {
            reader,
            _provider: provider,
        },
    )
}

/// Reads what the meter from [`in_memory_meter`] recorded so far, collecting on each call.
///
/// Attribute matching is exact: a data point matches when its attribute set equals `attrs` (in any order), so
/// `&[]` reads only recordings made without attributes. Unknown names or attribute sets read as zero.
#[derive(Debug)]
pub struct InMemoryMetrics {
    reader: SharedReader,
    // Keeps the pipeline registered with the reader alive even if every meter clone is dropped.
    _provider: SdkMeterProvider,
}

impl InMemoryMetrics {
    /// Cumulative value of the `u64` counter (or observable counter) `name` for exactly `attrs`.
    pub fn counter(&self, name: &str, attrs: &[(&str, &str)]) -> u64 {
        self.with_metric(name, |metric| match metric.data() {
            AggregatedMetrics::U64(MetricData::Sum(sum)) => sum
                .data_points()
                .filter(|p| same_attributes(p.attributes(), attrs))
                .map(|p| p.value())
                .sum(),
            _ => 0,
        })
        .unwrap_or(0)
    }

    /// Number of values recorded into the `f64` histogram `name` for exactly `attrs`.
    pub fn histogram_count(&self, name: &str, attrs: &[(&str, &str)]) -> u64 {
        self.with_histogram_point(name, attrs, |p| p.count()).unwrap_or(0)
    }

    /// Sum of the values recorded into the `f64` histogram `name` for exactly `attrs`.
    pub fn histogram_sum(&self, name: &str, attrs: &[(&str, &str)]) -> f64 {
        self.with_histogram_point(name, attrs, |p| p.sum()).unwrap_or(0.0)
    }

    /// Bucket boundaries of the `f64` histogram `name` for exactly `attrs` (empty when nothing was recorded).
    pub fn histogram_bounds(&self, name: &str, attrs: &[(&str, &str)]) -> Vec<f64> {
        self.with_histogram_point(name, attrs, |p| p.bounds().collect())
            .unwrap_or_default()
    }

    /// Names of the instruments that have recorded something, for diagnosing a failing assertion.
    pub fn names(&self) -> Vec<String> {
        let mut names = Vec::new();
        if let Some(rm) = self.collect() {
            for scope in rm.scope_metrics() {
                names.extend(scope.metrics().map(|m| m.name().to_owned()));
            }
        }
        names
    }

    fn with_histogram_point<R>(
        &self,
        name: &str,
        attrs: &[(&str, &str)],
        f: impl FnOnce(&HistogramDataPoint<f64>) -> R,
    ) -> Option<R> {
        self.with_metric(name, |metric| match metric.data() {
            AggregatedMetrics::F64(MetricData::Histogram(histogram)) => histogram
                .data_points()
                .find(|p| same_attributes(p.attributes(), attrs))
                .map(f),
            _ => None,
        })
        .flatten()
    }

    fn with_metric<R>(&self, name: &str, f: impl FnOnce(&Metric) -> R) -> Option<R> {
        let rm = self.collect()?;
        let metric = rm
            .scope_metrics()
            .flat_map(|scope| scope.metrics())
            .find(|m| m.name() == name)?;
        Some(f(metric))
    }

    fn collect(&self) -> Option<ResourceMetrics> {
        let mut rm = ResourceMetrics::default();
        self.reader.collect(&mut rm).ok()?;
        Some(rm)
    }
}

fn same_attributes<'a>(actual: impl Iterator<Item = &'a KeyValue>, expected: &[(&str, &str)]) -> bool {
    let actual: Vec<&KeyValue> = actual.collect();
    actual.len() == expected.len()
        && expected.iter().all(|(key, value)| {
            actual
                .iter()
                .any(|kv| kv.key.as_str() == *key && kv.value.as_str() == *value)
        })
}

/// The provider takes its reader by value; sharing it lets [`InMemoryMetrics`] collect on demand.
#[derive(Debug, Clone)]
struct SharedReader(Arc<ManualReader>);

impl MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline);
    }

    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

/// One span as an [`OtlpCollector`] received it; ids in lower-case hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectedSpan {
    /// The span's name.
    pub name: String,
    /// The `service.name` of the process that exported it.
    pub service: Option<String>,
    /// Its trace id (32 hex digits).
    pub trace_id: String,
    /// Its span id (16 hex digits).
    pub span_id: String,
    /// Its parent's span id; empty for a root span.
    pub parent_span_id: String,
    /// Its string attributes.
    pub attributes: Vec<(String, String)>,
}

impl CollectedSpan {
    /// The string attribute `key`, when the span has it.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Default)]
struct Received {
    spans: std::sync::Mutex<Vec<CollectedSpan>>,
    metrics: std::sync::Mutex<Vec<ExportMetricsServiceRequest>>,
    changed: tokio::sync::Notify,
}

impl Received {
    fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[derive(Debug, Clone)]
struct CollectorService(Arc<Received>);

#[tonic::async_trait]
impl TraceService for CollectorService {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = Vec::new();
        for rs in request.into_inner().resource_spans {
            let service = service_name(rs.resource.as_ref());
            for ss in rs.scope_spans {
                spans.extend(ss.spans.into_iter().map(|s| {
                    CollectedSpan {
                        name: s.name,
                        service: service.clone(),
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent_span_id: hex(&s.parent_span_id),
                        attributes: s
                            .attributes
                            .into_iter()
                            .filter_map(|kv| match kv.value?.value? {
                                AnyValue::StringValue(v) => Some((kv.key, v)),
                                _ => None,
                            })
                            .collect(),
                    }
                }));
            }
        }
        Received::lock(&self.0.spans).extend(spans);
        self.0.changed.notify_waiters();
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for CollectorService {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        Received::lock(&self.0.metrics).push(request.into_inner());
        self.0.changed.notify_waiters();
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

/// The `service.name` attribute of an exported resource.
pub fn service_name(resource: Option<&Resource>) -> Option<String> {
    resource?
        .attributes
        .iter()
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| match kv.value.as_ref()?.value {
            Some(AnyValue::StringValue(ref s)) => Some(s.clone()),
            _ => None,
        })
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Why [`export_to_collector`] or [`flush`] failed.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// The collector could not listen.
    #[error("starting the collector: {0}")]
    Collector(#[from] std::io::Error),
    /// Telemetry could not be installed (it is, once per process).
    #[error("telemetry: {0}")]
    Telemetry(#[from] crate::TelemetryError),
    /// The shutdown task did not finish (it panicked).
    #[error("flushing: {0}")]
    Flush(#[from] tokio::task::JoinError),
}

/// A collector, and this process's telemetry (service `service`, log filter `info`)
/// exporting to it: a test binary's one trace setup.
pub async fn export_to_collector(service: &str) -> Result<(OtlpCollector, crate::TelemetryGuard), CollectError> {
    let collector = OtlpCollector::start().await?;
    let mut config = crate::TelemetryConfig::new(service);
    config.otlp_endpoint = Some(collector.endpoint().to_owned());
    config.log_filter = "info".to_owned();
    let guard = crate::init(config)?;
    Ok((collector, guard))
}

/// Flushes and stops `guard`'s exporters off the async threads (the shutdown blocks), so
/// that the collector has every span.
pub async fn flush(guard: crate::TelemetryGuard) -> Result<(), CollectError> {
    tokio::task::spawn_blocking(move || guard.shutdown()).await??;
    Ok(())
}

/// An OTLP/gRPC collector on a free loopback port, keeping what it receives; stopped when
/// dropped. Point `TelemetryConfig::otlp_endpoint` at [`OtlpCollector::endpoint`].
#[derive(Debug)]
pub struct OtlpCollector {
    endpoint: String,
    received: Arc<Received>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl OtlpCollector {
    /// Starts the collector on the current Tokio runtime.
    pub async fn start() -> std::io::Result<OtlpCollector> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let incoming = futures::stream::unfold(listener, |l| async move {
            Some((l.accept().await.map(|(stream, _)| stream), l))
        });
        let received = Arc::new(Received::default());
        let service = CollectorService(Arc::clone(&received));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(service.clone()))
                .add_service(MetricsServiceServer::new(service))
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                }),
        );
        Ok(OtlpCollector {
            endpoint: format!("http://{addr}"),
            received,
            stop: Some(stop),
        })
    }

    /// The URL to export to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The spans received so far.
    pub fn spans(&self) -> Vec<CollectedSpan> {
        Received::lock(&self.received.spans).clone()
    }

    /// The metric export requests received so far.
    pub fn metrics(&self) -> Vec<ExportMetricsServiceRequest> {
        Received::lock(&self.received.metrics).clone()
    }

    /// Waits until `done` holds for the spans received (re-checked on every export), for at
    /// most `within`; the spans then, or `Err` with those received so far.
    pub async fn wait_for_spans(
        &self,
        within: Duration,
        done: impl Fn(&[CollectedSpan]) -> bool,
    ) -> Result<Vec<CollectedSpan>, Vec<CollectedSpan>> {
        self.wait_for(within, || self.spans(), done).await
    }

    /// Waits until `done` holds for the metric export requests received, for at most
    /// `within`; like [`OtlpCollector::wait_for_spans`].
    pub async fn wait_for_metrics(
        &self,
        within: Duration,
        done: impl Fn(&[ExportMetricsServiceRequest]) -> bool,
    ) -> Result<Vec<ExportMetricsServiceRequest>, Vec<ExportMetricsServiceRequest>> {
        self.wait_for(within, || self.metrics(), done).await
    }

    async fn wait_for<T>(
        &self,
        within: Duration,
        read: impl Fn() -> Vec<T>,
        done: impl Fn(&[T]) -> bool,
    ) -> Result<Vec<T>, Vec<T>> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            // Registered before reading, so an export in between still wakes the wait.
            let changed = self.received.changed.notified();
            let got = read();
            if done(&got) {
                return Ok(got);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(read());
            }
        }
    }
}

impl Drop for OtlpCollector {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn counters_read_back_by_name_and_exact_attributes() {
        let (meter, metrics) = in_memory_meter();
        let counter = meter.u64_counter("requests").build();
        counter.add(
            1,
            &[KeyValue::new("transport", "grpc"), KeyValue::new("outcome", "allowed")],
        );
        counter.add(
            2,
            &[KeyValue::new("outcome", "allowed"), KeyValue::new("transport", "grpc")],
        );
        counter.add(
            5,
            &[
                KeyValue::new("transport", "webhook"),
                KeyValue::new("outcome", "allowed"),
            ],
        );
        assert_eq!(
            metrics.counter("requests", &[("transport", "grpc"), ("outcome", "allowed")]),
            3
        );
        assert_eq!(
            metrics.counter("requests", &[("outcome", "allowed"), ("transport", "webhook")]),
            5
        );
        // A subset of the attributes is a different series.
        assert_eq!(metrics.counter("requests", &[("transport", "grpc")]), 0);
        assert_eq!(metrics.counter("other", &[]), 0);
        // Reading collects again; counts stay cumulative.
        counter.add(
            1,
            &[KeyValue::new("transport", "grpc"), KeyValue::new("outcome", "allowed")],
        );
        assert_eq!(
            metrics.counter("requests", &[("transport", "grpc"), ("outcome", "allowed")]),
            4
        );
    }

    #[test]
    fn observable_counters_read_back() {
        let (meter, metrics) = in_memory_meter();
        let _counter = meter
            .u64_observable_counter("published")
            .with_callback(|o| o.observe(7, &[]))
            .build();
        assert_eq!(metrics.counter("published", &[]), 7);
    }

    #[test]
    fn histograms_read_back_count_sum_and_bounds() {
        let (meter, metrics) = in_memory_meter();
        let histogram = meter
            .f64_histogram("duration")
            .with_boundaries(vec![0.001, 0.01])
            .build();
        histogram.record(0.0005, &[KeyValue::new("transport", "grpc")]);
        histogram.record(0.02, &[KeyValue::new("transport", "grpc")]);
        histogram.record(0.5, &[KeyValue::new("transport", "webhook")]);
        assert_eq!(metrics.histogram_count("duration", &[("transport", "grpc")]), 2);
        assert!((metrics.histogram_sum("duration", &[("transport", "grpc")]) - 0.0205).abs() < 1e-12);
        assert_eq!(
            metrics.histogram_bounds("duration", &[("transport", "grpc")]),
            vec![0.001, 0.01]
        );
        assert_eq!(metrics.histogram_count("duration", &[("transport", "webhook")]), 1);
        assert_eq!(metrics.histogram_count("duration", &[]), 0);
        // A histogram is not a counter.
        assert_eq!(metrics.counter("duration", &[("transport", "grpc")]), 0);
        assert_eq!(metrics.names(), vec!["duration".to_owned()]);
    }

    #[test]
    fn meters_are_independent() {
        let (meter_a, metrics_a) = in_memory_meter();
        let (_meter_b, metrics_b) = in_memory_meter();
        meter_a.u64_counter("c").build().add(1, &[]);
        assert_eq!(metrics_a.counter("c", &[]), 1);
        assert_eq!(metrics_b.counter("c", &[]), 0);
    }
}
