//! A meter whose recordings tests read back, for asserting that code records the right instruments.
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
