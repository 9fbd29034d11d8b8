//! Process-wide observability setup for Portcullis binaries.
//!
//! [`init`] installs, once per process:
//! - the global `tracing` subscriber: human-readable logs on stderr filtered by an [`EnvFilter`] (`RUST_LOG`),
//!   plus, when an OTLP endpoint is configured, a `tracing-opentelemetry` layer exporting spans over OTLP/gRPC;
//! - the global OpenTelemetry meter provider, exporting metrics periodically over OTLP/gRPC when an endpoint is
//!   configured. Without one no provider is installed, so `opentelemetry::global::meter(..)` hands out no-op
//!   instruments and recording costs next to nothing;
//! - the W3C trace-context propagator.
//!
//! Without an endpoint nothing connects anywhere. The returned [`TelemetryGuard`] flushes and shuts the providers
//! down when dropped (or through [`TelemetryGuard::shutdown`]).
//!
//! The standard OpenTelemetry environment variables tune the exporters: `OTEL_EXPORTER_OTLP_TIMEOUT` (export
//! deadline, default 10 s), `OTEL_METRIC_EXPORT_INTERVAL` (default 60 s), `OTEL_TRACES_SAMPLER`/`_ARG`,
//! `OTEL_BSP_MAX_QUEUE_SIZE` (the span queue is bounded; spans beyond it are dropped), `OTEL_RESOURCE_ATTRIBUTES`.

pub mod propagation;
#[cfg(feature = "testing")]
pub mod testing;

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{ExporterBuildError, MetricExporter, SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkError;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tokio::runtime::{Handle, RuntimeFlavor};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::{SubscriberInitExt, TryInitError};

/// Environment variable naming the OTLP/gRPC collector endpoint (e.g. `http://otel-collector:4317`).
pub const OTLP_ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// Environment variable holding the log filter directives.
pub const LOG_FILTER_VAR: &str = "RUST_LOG";
/// Environment variable that, set to `true`, turns OTLP export off even when an endpoint is set (OTel spec).
pub const SDK_DISABLED_VAR: &str = "OTEL_SDK_DISABLED";
/// Log filter used when `RUST_LOG` is unset or blank.
pub const DEFAULT_LOG_FILTER: &str = "info";

/// What [`init`] installs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// `service.name` resource attribute of exported spans and metrics.
    pub service_name: String,
    /// OTLP/gRPC collector endpoint; `None` exports nothing.
    pub otlp_endpoint: Option<String>,
    /// `EnvFilter` directives for logs and spans (`RUST_LOG` syntax).
    pub log_filter: String,
}

impl TelemetryConfig {
    /// Logs at [`DEFAULT_LOG_FILTER`], no export.
    pub fn new(service_name: impl Into<String>) -> Self {
        Self {
            service_name: service_name.into(),
            otlp_endpoint: None,
            log_filter: DEFAULT_LOG_FILTER.to_owned(),
        }
    }

    /// Reads `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_SDK_DISABLED` and `RUST_LOG` from the process environment.
    pub fn from_env(service_name: impl Into<String>) -> Self {
        Self::from_env_or(service_name, DEFAULT_LOG_FILTER)
    }

    /// Like [`TelemetryConfig::from_env`], with `default_filter` when `RUST_LOG` is unset.
    pub fn from_env_or(service_name: impl Into<String>, default_filter: &str) -> Self {
        Self::from_lookup_or(service_name, default_filter, |key| std::env::var(key).ok())
    }

    /// Reads the same variables through `lookup` (tests pass a map: `|k| map.get(k)`).
    pub fn from_lookup<F, V>(service_name: impl Into<String>, lookup: F) -> Self
    where
        F: Fn(&str) -> Option<V>,
        V: AsRef<str>,
    {
        Self::from_lookup_or(service_name, DEFAULT_LOG_FILTER, lookup)
    }

    /// Like [`TelemetryConfig::from_lookup`], with `default_filter` when `RUST_LOG` is unset.
    pub fn from_lookup_or<F, V>(service_name: impl Into<String>, default_filter: &str, lookup: F) -> Self
    where
        F: Fn(&str) -> Option<V>,
        V: AsRef<str>,
    {
        // Blank values count as unset: `OTEL_EXPORTER_OTLP_ENDPOINT=` in a manifest must not mean "export to ''".
        let non_blank = |key: &str| {
            lookup(key)
                .map(|v| v.as_ref().trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let disabled = non_blank(SDK_DISABLED_VAR).is_some_and(|v| v.eq_ignore_ascii_case("true"));
        Self {
            service_name: service_name.into(),
            otlp_endpoint: if disabled { None } else { non_blank(OTLP_ENDPOINT_VAR) },
            log_filter: non_blank(LOG_FILTER_VAR).unwrap_or_else(|| default_filter.to_owned()),
        }
    }
}

/// Why [`init`] or [`TelemetryGuard::shutdown`] failed.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// [`init`] already succeeded in this process; the first setup stays in place.
    #[error("telemetry is already initialised in this process")]
    AlreadyInitialized,
    /// Another global `tracing` subscriber (or `log` logger) was installed by someone else.
    #[error("a global tracing subscriber is already installed")]
    SubscriberAlreadySet(#[source] TryInitError),
    /// The log filter does not parse.
    #[error("invalid log filter {filter:?}")]
    InvalidLogFilter {
        /// The rejected directives.
        filter: String,
        /// The parser's complaint.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// OTLP export over tonic needs a Tokio runtime; call [`init`] inside one (e.g. under `Runtime::enter`).
    #[error("OTLP export needs a Tokio runtime: call telemetry::init inside one")]
    NoRuntime,
    /// The OTLP exporter rejected its configuration (e.g. a malformed endpoint).
    #[error("building the OTLP exporter")]
    Exporter(#[from] ExporterBuildError),
    /// Flushing or shutting a provider down failed.
    #[error("shutting down the {provider} provider")]
    Shutdown {
        /// `tracer` or `meter`.
        provider: &'static str,
        /// The SDK's error.
        #[source]
        source: OTelSdkError,
    },
}

/// Set once [`init`] succeeded: the global subscriber cannot be replaced, so neither can the rest.
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Installs the global subscriber, meter provider and propagator described by `config`.
///
/// With an OTLP endpoint this must run inside a Tokio runtime (the tonic channel spawns its worker there), and
/// that runtime must outlive the returned guard so the final flush can reach the collector. A second call returns
/// [`TelemetryError::AlreadyInitialized`] and changes nothing.
pub fn init(config: TelemetryConfig) -> Result<TelemetryGuard, TelemetryError> {
    if INSTALLED.swap(true, Ordering::SeqCst) {
        return Err(TelemetryError::AlreadyInitialized);
    }
    install(config).inspect_err(|_| INSTALLED.store(false, Ordering::SeqCst))
}

fn install(config: TelemetryConfig) -> Result<TelemetryGuard, TelemetryError> {
    let filter = EnvFilter::try_new(&config.log_filter).map_err(|source| TelemetryError::InvalidLogFilter {
        filter: config.log_filter.clone(),
        source,
    })?;
    let mut guard = match &config.otlp_endpoint {
        None => TelemetryGuard {
            tracer_provider: None,
            meter_provider: None,
        },
        Some(endpoint) => otlp_providers(&config.service_name, endpoint)?,
    };
    let otel_layer = guard.tracer_provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("portcullis"))
            .with_filter(not_export_machinery())
    });
    let fmt_layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(otel_layer)
        .with(fmt_layer)
        .try_init();
    if let Err(err) = installed {
        // Nothing global was touched yet; stop the exporters' threads before giving up.
        let _ = guard.shutdown_providers();
        return Err(TelemetryError::SubscriberAlreadySet(err));
    }
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    if let Some(provider) = &guard.tracer_provider {
        opentelemetry::global::set_tracer_provider(provider.clone());
        // From now on trace context is extracted and injected (propagation.rs).
        propagation::set_exporting(true);
    }
    if let Some(provider) = &guard.meter_provider {
        opentelemetry::global::set_meter_provider(provider.clone());
    }
    Ok(guard)
}

/// Spans from the crates that carry the export itself are not exported: at `RUST_LOG=trace` each export would
/// otherwise produce spans that need exporting, without end.
fn not_export_machinery() -> Targets {
    let off = LevelFilter::OFF;
    Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_target("opentelemetry", off)
        .with_target("tonic", off)
        .with_target("tower", off)
        .with_target("hyper", off)
        .with_target("h2", off)
}

/// Builds the span and metric pipelines exporting to `endpoint`; connects lazily, on the first export.
fn otlp_providers(service_name: &str, endpoint: &str) -> Result<TelemetryGuard, TelemetryError> {
    // tonic's lazy channel spawns its worker on the current runtime and would panic without one.
    Handle::try_current().map_err(|_| TelemetryError::NoRuntime)?;
    let resource = Resource::builder().with_service_name(service_name.to_owned()).build();
    let span_exporter = SpanExporter::builder().with_tonic().with_endpoint(endpoint).build()?;
    let metric_exporter = MetricExporter::builder().with_tonic().with_endpoint(endpoint).build()?;
    // Both processors run on their own threads with bounded buffers; the hot path only enqueues or aggregates.
    let tracer_provider = SdkTracerProvider::builder()
        .with_resource(resource.clone())
        .with_batch_exporter(span_exporter)
        .build();
    let meter_provider = SdkMeterProvider::builder()
        .with_resource(resource)
        .with_periodic_exporter(metric_exporter)
        .build();
    Ok(TelemetryGuard {
        tracer_provider: Some(tracer_provider),
        meter_provider: Some(meter_provider),
    })
}

/// Keeps the exporters alive; flushes and shuts them down on drop or [`TelemetryGuard::shutdown`].
#[must_use = "dropping the guard shuts OTLP export down"]
#[derive(Debug)]
pub struct TelemetryGuard {
    tracer_provider: Option<SdkTracerProvider>,
    meter_provider: Option<SdkMeterProvider>,
}

impl TelemetryGuard {
    /// Whether spans and metrics are exported over OTLP (an endpoint was configured).
    pub fn exporting(&self) -> bool {
        self.tracer_provider.is_some() || self.meter_provider.is_some()
    }

    /// Flushes pending spans and metrics to the collector and stops the exporters.
    ///
    /// Blocks up to the export deadline; inside a multi-thread Tokio runtime it moves off the worker first.
    pub fn shutdown(mut self) -> Result<(), TelemetryError> {
        self.shutdown_providers()
    }

    fn shutdown_providers(&mut self) -> Result<(), TelemetryError> {
        let tracer_provider = self.tracer_provider.take();
        let meter_provider = self.meter_provider.take();
        if tracer_provider.is_none() && meter_provider.is_none() {
            return Ok(());
        }
        if tracer_provider.is_some() {
            propagation::set_exporting(false);
        }
        run_blocking(move || {
            let traces = tracer_provider.map_or(Ok(()), |provider| provider.shutdown());
            let metrics = meter_provider.map_or(Ok(()), |provider| provider.shutdown());
            traces.map_err(|source| TelemetryError::Shutdown {
                provider: "tracer",
                source,
            })?;
            metrics.map_err(|source| TelemetryError::Shutdown {
                provider: "meter",
                source,
            })
        })
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Err(err) = self.shutdown_providers() {
            tracing::warn!(error = %err, "telemetry shutdown did not complete");
        }
    }
}

/// Runs `f`, which blocks on the exporters' threads; on a multi-thread runtime worker it first hands the worker's
/// other tasks (among them tonic's channel, which the export needs) to another thread.
fn run_blocking<R>(f: impl FnOnce() -> R) -> R {
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::collections::HashMap;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> TelemetryConfig {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        TelemetryConfig::from_lookup("svc", |k| map.get(k))
    }

    #[test]
    fn config_without_variables_logs_at_info_and_exports_nothing() {
        assert_eq!(config(&[]), TelemetryConfig::new("svc"));
        assert_eq!(config(&[]).log_filter, "info");
        assert_eq!(config(&[]).otlp_endpoint, None);
    }

    #[test]
    fn config_reads_endpoint_and_filter() {
        let cfg = config(&[
            (OTLP_ENDPOINT_VAR, "http://collector:4317"),
            (LOG_FILTER_VAR, "debug,sqlx=warn"),
        ]);
        assert_eq!(cfg.service_name, "svc");
        assert_eq!(cfg.otlp_endpoint.as_deref(), Some("http://collector:4317"));
        assert_eq!(cfg.log_filter, "debug,sqlx=warn");
    }

    #[test]
    fn blank_values_count_as_unset() {
        let cfg = config(&[(OTLP_ENDPOINT_VAR, "  "), (LOG_FILTER_VAR, "")]);
        assert_eq!(cfg.otlp_endpoint, None);
        assert_eq!(cfg.log_filter, DEFAULT_LOG_FILTER);
    }

    #[test]
    fn sdk_disabled_turns_export_off() {
        let cfg = config(&[(OTLP_ENDPOINT_VAR, "http://collector:4317"), (SDK_DISABLED_VAR, "TRUE")]);
        assert_eq!(cfg.otlp_endpoint, None);
        let cfg = config(&[
            (OTLP_ENDPOINT_VAR, "http://collector:4317"),
            (SDK_DISABLED_VAR, "false"),
        ]);
        assert_eq!(cfg.otlp_endpoint.as_deref(), Some("http://collector:4317"));
    }

    #[test]
    fn default_filter_applies_only_without_rust_log() {
        let quiet = "info,sqlx=warn";
        let map: HashMap<&str, &str> = HashMap::new();
        assert_eq!(
            TelemetryConfig::from_lookup_or("svc", quiet, |k| map.get(k)).log_filter,
            quiet
        );
        let map = HashMap::from([(LOG_FILTER_VAR, "trace")]);
        assert_eq!(
            TelemetryConfig::from_lookup_or("svc", quiet, |k| map.get(k)).log_filter,
            "trace"
        );
    }

    #[test]
    fn exporters_need_a_tokio_runtime() {
        assert!(matches!(
            otlp_providers("svc", "http://127.0.0.1:4317"),
            Err(TelemetryError::NoRuntime)
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exporters_build_without_connecting_and_reject_bad_endpoints() {
        // Port 1 on loopback has no collector: building must not care (the channel connects on first export).
        for endpoint in ["http://127.0.0.1:1", "https://127.0.0.1:1"] {
            let guard = otlp_providers("svc", endpoint).expect(endpoint);
            assert!(guard.exporting());
            // Nothing was recorded, so shutting down exports nothing.
            guard.shutdown().expect("shutdown with nothing to flush");
        }
        assert!(matches!(
            otlp_providers("svc", "not a url"),
            Err(TelemetryError::Exporter(_))
        ));
    }

    #[test]
    fn guard_without_providers_shuts_down_cleanly() {
        let guard = TelemetryGuard {
            tracer_provider: None,
            meter_provider: None,
        };
        assert!(!guard.exporting());
        assert!(guard.shutdown().is_ok());
    }
}
