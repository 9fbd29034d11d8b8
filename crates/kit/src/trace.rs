//! Trace context across processes: one trace runs from a caller through every service it
//! reaches and every event they publish (W3C `traceparent` and `tracestate`, through the
//! OpenTelemetry propagator that `portcullis_telemetry::init` installs).
//!
//! - Servers: the authentication layer of `portcullis-server` makes each call's span a child
//!   of the caller's context (gRPC metadata).
//! - Clients: [`Traced`] (a tower service around a channel) makes a client span per call and
//!   sends its context; the [`crate::Credential`] interceptor sends the current span's.
//! - Publishers: [`inject_current`] / [`inject_context`] write a context into an event's
//!   headers; [`capture`] keeps the current one for a publish that happens later.
//! - Followers: [`event_span`] is the handling span of one event, a child of the context in
//!   its headers (the follower enters it around each handler call).
//! - Request/reply: the asker sends [`current_headers`]; the answering side handles each
//!   request inside [`request_span`], a child of the asker's span.
//!
//! All of it works only while spans are exported (an OTLP endpoint is configured): without
//! one nothing is parsed, made or formatted, so the request path pays one relaxed load.

use std::task::{Context as TaskContext, Poll};

pub use opentelemetry::Context;
use portcullis_bus::Headers;
pub use portcullis_telemetry::propagation::{
    HeaderExtractor, HeaderInjector, MapExtractor, MapInjector, MetadataExtractor, MetadataInjector, TRACEPARENT,
    TRACESTATE, context_of, exporting_traces, extract, inject, inject_span, set_parent, set_parent_from, w3c_of,
};
use tonic::codegen::Service;
use tonic::metadata::MetadataMap;
use tracing::Instrument as _;
use tracing::instrument::Instrumented;

/// The current span's context, to inject later (a publish queued now, sent by a task);
/// `None` while spans are not exported or outside any span.
pub fn capture() -> Option<Context> {
    if !exporting_traces() {
        return None;
    }
    context_of(&tracing::Span::current())
}

/// Writes `cx` into bus `headers`.
pub fn inject_context(cx: &Context, headers: &mut Headers) {
    inject(cx, &mut MapInjector(headers));
}

/// Writes the current span's context into bus `headers`; whether it wrote one.
pub fn inject_current(headers: &mut Headers) -> bool {
    exporting_traces() && inject_span(&tracing::Span::current(), &mut MapInjector(headers))
}

/// Writes the current span's context into gRPC `metadata`; whether it wrote one.
pub fn inject_current_metadata(metadata: &mut MetadataMap) -> bool {
    exporting_traces() && inject_span(&tracing::Span::current(), &mut MetadataInjector(metadata))
}

/// Bus headers carrying the current span's context, for a request (request/reply) that
/// the answering service's [`request_span`] continues; empty while spans are not exported.
pub fn current_headers() -> Headers {
    let mut headers = Headers::new();
    inject_current(&mut headers);
    headers
}

/// The span answering one bus request on `subject`, a child of the context in its
/// `headers` (the asker's span), so the answer continues the asker's trace (disabled while
/// spans are not exported).
pub fn request_span(subject: &str, headers: &Headers) -> tracing::Span {
    if !exporting_traces() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "bus.request",
        otel.kind = "server",
        messaging.destination.name = subject
    );
    set_parent_from(&span, &MapExtractor(headers));
    span
}

/// The span handling one bus event of `topic`, a child of the context in its `headers`
/// (disabled while spans are not exported).
pub fn event_span(topic: &str, sequence: u64, headers: &Headers) -> tracing::Span {
    if !exporting_traces() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "bus.event",
        otel.kind = "consumer",
        messaging.destination.name = topic,
        messaging.sequence = sequence
    );
    set_parent_from(&span, &MapExtractor(headers));
    span
}

/// A gRPC channel (any tower service of HTTP requests) whose every call has a client span,
/// a child of the current span, whose context the call carries (`traceparent`): the
/// server's span becomes its child. `XClient::new(Traced::new(channel))`, or under an
/// interceptor: `InterceptedService::new(Traced::new(channel), credential)`.
#[derive(Debug, Clone)]
pub struct Traced<S> {
    inner: S,
}

impl<S> Traced<S> {
    /// Traces the calls made through `inner`.
    pub fn new(inner: S) -> Traced<S> {
        Traced { inner }
    }

    /// The service underneath.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, B> Service<http::Request<B>> for Traced<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Instrumented<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if !exporting_traces() {
            return self.inner.call(request).instrument(tracing::Span::none());
        }
        let span = tracing::info_span!("grpc.client", otel.kind = "client", rpc.method = request.uri().path());
        inject_span(&span, &mut HeaderInjector(request.headers_mut()));
        self.inner.call(request).instrument(span)
    }
}
