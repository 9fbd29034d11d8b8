//! W3C trace context across processes (`traceparent`, `tracestate`), through the global
//! OpenTelemetry propagator that [`crate::init`] installs.
//!
//! The carriers: gRPC metadata ([`MetadataMap`]), HTTP headers ([`HeaderMap`], what a tower
//! layer sees) and bus headers (a `BTreeMap<String, String>`, `portcullis_bus::Headers`).
//!
//! Everything here is gated on [`exporting_traces`]: without an OTLP endpoint no span is
//! exported, so nothing is extracted, parsed or formatted on the request path (callers then
//! pass an incoming context through unchanged, as a W3C intermediary that does not trace).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt as _;
use tonic::metadata::{KeyRef, MetadataKey, MetadataMap};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The W3C trace context header.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C trace state header.
pub const TRACESTATE: &str = "tracestate";

/// Set while spans are exported (an OTLP tracer is installed).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported in this process: only then is trace context extracted and
/// injected (one relaxed load: the check the hot path pays when tracing is off).
#[inline]
pub fn exporting_traces() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

pub(crate) fn set_exporting(on: bool) {
    EXPORTING.store(on, Ordering::Relaxed);
}

/// Reads trace context from gRPC metadata.
#[derive(Debug)]
pub struct MetadataExtractor<'a>(pub &'a MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                KeyRef::Ascii(k) => Some(k.as_str()),
                KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// Writes trace context into gRPC metadata (values a metadata entry cannot carry are skipped).
#[derive(Debug)]
pub struct MetadataInjector<'a>(pub &'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (MetadataKey::from_bytes(key.as_bytes()), value.parse()) {
            self.0.insert(key, value);
        }
    }
}

/// Reads trace context from HTTP headers.
#[derive(Debug)]
pub struct HeaderExtractor<'a>(pub &'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// Writes trace context into HTTP headers (values a header cannot carry are skipped).
#[derive(Debug)]
pub struct HeaderInjector<'a>(pub &'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (HeaderName::from_bytes(key.as_bytes()), HeaderValue::from_str(&value)) {
            self.0.insert(key, value);
        }
    }
}

/// Reads trace context from bus headers (name → value).
#[derive(Debug)]
pub struct MapExtractor<'a>(pub &'a BTreeMap<String, String>);

impl Extractor for MapExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// Writes trace context into bus headers.
#[derive(Debug)]
pub struct MapInjector<'a>(pub &'a mut BTreeMap<String, String>);

impl Injector for MapInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

/// The remote context `carrier` holds, through the global propagator (an empty context
/// when it holds none or a malformed one).
pub fn extract(carrier: &dyn Extractor) -> Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract_with_context(&Context::new(), carrier))
}

/// Writes `cx` into `carrier` through the global propagator (nothing for a context without
/// a valid span).
pub fn inject(cx: &Context, carrier: &mut dyn Injector) {
    if cx.span().span_context().is_valid() {
        opentelemetry::global::get_text_map_propagator(|p| p.inject_context(cx, carrier));
    }
}

/// Makes `span` (not yet entered) a child of the remote context in `carrier`; whether it
/// did. Nothing when spans are not exported, `span` is disabled or the carrier has no
/// valid context.
pub fn set_parent_from(span: &Span, carrier: &dyn Extractor) -> bool {
    if !exporting_traces() || span.is_disabled() {
        return false;
    }
    let cx = extract(carrier);
    cx.span().span_context().is_valid() && span.set_parent(cx).is_ok()
}

/// Makes `span` (not yet entered) a child of `cx`, when spans are exported and `cx` holds a
/// valid span; whether it did.
pub fn set_parent(span: &Span, cx: Context) -> bool {
    exporting_traces() && !span.is_disabled() && cx.span().span_context().is_valid() && span.set_parent(cx).is_ok()
}

/// The OpenTelemetry context of `span`, when spans are exported and it has a valid one.
pub fn context_of(span: &Span) -> Option<Context> {
    if !exporting_traces() || span.is_disabled() {
        return None;
    }
    let cx = span.context();
    cx.span().span_context().is_valid().then_some(cx)
}

/// Writes the context of `span` into `carrier`; whether it wrote one (see [`context_of`]).
pub fn inject_span(span: &Span, carrier: &mut dyn Injector) -> bool {
    match context_of(span) {
        Some(cx) => {
            inject(&cx, carrier);
            true
        }
        None => false,
    }
}

/// `traceparent` and `tracestate` (empty when none) of `cx`, formatted by the propagator;
/// `None` for a context without a valid span.
pub fn w3c_of(cx: &Context) -> Option<(String, String)> {
    let mut map = BTreeMap::new();
    inject(cx, &mut MapInjector(&mut map));
    let traceparent = map.remove(TRACEPARENT)?;
    Some((traceparent, map.remove(TRACESTATE).unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    use opentelemetry_sdk::propagation::TraceContextPropagator;

    use super::*;

    const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    fn remote() -> Context {
        let sc = SpanContext::new(
            TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap(),
            SpanId::from_hex("b7ad6b7169203331").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::from_key_value([("k", "v")]).unwrap(),
        );
        Context::new().with_remote_span_context(sc)
    }

    #[test]
    fn carriers_round_trip_through_the_w3c_propagator() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let cx = remote();
        assert_eq!(w3c_of(&cx), Some((TP.to_owned(), "k=v".to_owned())));

        let mut map = BTreeMap::new();
        inject(&cx, &mut MapInjector(&mut map));
        assert_eq!(map.get(TRACEPARENT).map(String::as_str), Some(TP));
        let back = extract(&MapExtractor(&map));
        assert_eq!(back.span().span_context().span_id(), cx.span().span_context().span_id());
        assert_eq!(back.span().span_context().trace_state().header(), "k=v");

        let mut metadata = MetadataMap::new();
        inject(&cx, &mut MetadataInjector(&mut metadata));
        assert_eq!(metadata.get(TRACEPARENT).and_then(|v| v.to_str().ok()), Some(TP));
        let back = extract(&MetadataExtractor(&metadata));
        assert_eq!(
            back.span().span_context().trace_id(),
            cx.span().span_context().trace_id()
        );

        let mut headers = HeaderMap::new();
        inject(&cx, &mut HeaderInjector(&mut headers));
        let back = extract(&HeaderExtractor(&headers));
        assert!(back.span().span_context().is_remote());
        assert_eq!(
            back.span().span_context().trace_id(),
            cx.span().span_context().trace_id()
        );

        // Malformed or absent: an empty context, and nothing injected from it.
        let mut bad = BTreeMap::new();
        bad.insert(TRACEPARENT.to_owned(), "00-zz-b7ad6b7169203331-01".to_owned());
        let empty = extract(&MapExtractor(&bad));
        assert!(!empty.span().span_context().is_valid());
        assert_eq!(w3c_of(&empty), None);
        let mut nothing = BTreeMap::new();
        inject(&empty, &mut MapInjector(&mut nothing));
        assert!(nothing.is_empty());
    }

    #[test]
    fn without_export_nothing_is_parented_or_injected() {
        // No tracer in this test binary: the gate is off, so spans are left alone.
        assert!(!exporting_traces());
        let mut map = BTreeMap::new();
        map.insert(TRACEPARENT.to_owned(), TP.to_owned());
        let span = tracing::info_span!("x");
        assert!(!set_parent_from(&span, &MapExtractor(&map)));
        assert!(!set_parent(&span, remote()));
        assert!(context_of(&span).is_none());
        let mut out = BTreeMap::new();
        assert!(!inject_span(&span, &mut MapInjector(&mut out)));
        assert!(out.is_empty());
    }
}
