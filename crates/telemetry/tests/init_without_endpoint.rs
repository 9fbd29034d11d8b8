//! `init` without an OTLP endpoint: logs and spans work, metrics are no-ops, a second call is refused.
//! (Its own test binary with a single test: the global subscriber can be installed once per process.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use opentelemetry::KeyValue;
use portcullis_telemetry::{TelemetryConfig, TelemetryError, init};

#[test]
fn init_without_endpoint_installs_logging_only_and_refuses_a_second_call() {
    // Failed attempts leave the one init available.
    let mut bad_filter = TelemetryConfig::new("portcullis-test");
    bad_filter.log_filter = "info,[{".to_owned();
    match init(bad_filter) {
        Err(TelemetryError::InvalidLogFilter { filter, .. }) => assert_eq!(filter, "info,[{"),
        other => panic!("expected InvalidLogFilter, got {other:?}"),
    }
    let mut no_runtime = TelemetryConfig::new("portcullis-test");
    no_runtime.otlp_endpoint = Some("http://127.0.0.1:4317".to_owned());
    assert!(matches!(init(no_runtime), Err(TelemetryError::NoRuntime)));

    // No Tokio runtime here: without an endpoint none is needed, and nothing connects anywhere.
    let config = TelemetryConfig::new("portcullis-test");
    assert_eq!(config.otlp_endpoint, None);
    let guard = init(config).expect("first init");
    assert!(!guard.exporting());

    let span = tracing::info_span!("review", transport = "grpc");
    span.in_scope(|| tracing::info!(allowed = true, "reviewed"));
    tracing::warn!("a warning outside any span");
    assert!(tracing::enabled!(tracing::Level::INFO));
    assert!(!tracing::enabled!(tracing::Level::DEBUG), "the default filter is info");

    // No meter provider: the global meter hands out no-op instruments.
    let counter = opentelemetry::global::meter("test")
        .u64_counter("portcullis.test")
        .build();
    counter.add(1, &[KeyValue::new("k", "v")]);

    // The W3C trace-context propagator is global.
    let fields: Vec<String> =
        opentelemetry::global::get_text_map_propagator(|p| p.fields().map(str::to_owned).collect());
    assert!(
        fields.contains(&"traceparent".to_owned()),
        "propagator fields: {fields:?}"
    );

    assert!(matches!(
        init(TelemetryConfig::new("again")),
        Err(TelemetryError::AlreadyInitialized)
    ));
    guard.shutdown().expect("shutdown without exporters");
    // Still refused after the guard is gone: the subscriber cannot be replaced.
    assert!(matches!(
        init(TelemetryConfig::new("again")),
        Err(TelemetryError::AlreadyInitialized)
    ));
}
