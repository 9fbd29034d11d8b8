//! One HTTP request: routing, the transport's checks, the body, the handler, the answer.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt as _;
use http::header::{ALLOW, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Body, Incoming};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use portcullis_domain::ErrorKind;

use crate::handler::{WebhookHandler, WebhookRequest};
use crate::slots::SlotsBy;

/// The path prefix of the review route.
const VALIDATE_PREFIX: &str = "/validate/";
/// The health route.
const HEALTHZ: &str = "/healthz";
/// The longest cluster segment (a DNS subdomain's length).
const MAX_CLUSTER_CHARS: usize = 253;
/// The longest bearer token taken (connector keys are far shorter).
const MAX_BEARER_BYTES: usize = 4096;

/// What every request needs, shared by all connections.
pub(crate) struct RouteState {
    /// The review handler.
    pub(crate) handler: Arc<dyn WebhookHandler>,
    /// The largest body handed to the handler.
    pub(crate) max_body_bytes: usize,
    /// The longest a request may take.
    pub(crate) request_timeout: Duration,
    /// Slots for requests being read or judged.
    pub(crate) in_flight: Arc<Semaphore>,
    /// Of those, each key's share.
    pub(crate) per_key: SlotsBy<String>,
    /// Of those, each client address's share.
    pub(crate) per_peer: SlotsBy<IpAddr>,
}

/// The answer to a handler's error: its kind's status and message (an internal one logged).
fn handler_error(peer: std::net::SocketAddr, e: &portcullis_domain::Error) -> Response<Full<Bytes>> {
    if e.kind() == ErrorKind::Internal {
        tracing::warn!(%peer, error = %e, detail = e.detail(), "webhook review failed");
    }
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = error(status, e.message());
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

/// Answers one request; never fails (every failure is an HTTP answer).
pub(crate) async fn respond(
    state: Arc<RouteState>,
    peer: std::net::SocketAddr,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let arrived = Instant::now();
    let path = req.uri().path();
    if path == HEALTHZ {
        return if req.method() == Method::GET || req.method() == Method::HEAD {
            text(StatusCode::OK, "ok")
        } else {
            with_allow(error(StatusCode::METHOD_NOT_ALLOWED, "use GET"), "GET, HEAD")
        };
    }
    let Some(segment) = path.strip_prefix(VALIDATE_PREFIX) else {
        return error(StatusCode::NOT_FOUND, "not found");
    };
    if segment.contains('/') {
        return error(StatusCode::NOT_FOUND, "not found");
    }
    if req.method() != Method::POST {
        return with_allow(error(StatusCode::METHOD_NOT_ALLOWED, "use POST"), "POST");
    }
    let cluster = match cluster_segment(segment) {
        Ok(cluster) => cluster,
        Err(reason) => return error(StatusCode::BAD_REQUEST, reason),
    };
    let bearer = match bearer_token(req.headers()) {
        Ok(bearer) => bearer,
        Err(reason) => {
            let mut response = error(StatusCode::UNAUTHORIZED, reason);
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    };
    if !is_json(req.headers()) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body must be an AdmissionReview with Content-Type: application/json",
        );
    }
    let max = state.max_body_bytes;
    // A declared length (Content-Length, on HTTP/1 or HTTP/2) over the limit is refused
    // before a byte of the body is read.
    if req.body().size_hint().lower() > max as u64 {
        return too_large(max);
    }
    let timeout = api_server_timeout(req.uri().query()).map_or(state.request_timeout, |t| t.min(state.request_timeout));
    let deadline = arrived + timeout;

    // The key is checked from the headers before anything is held: a stranger's request
    // ends here, costing a cached lookup and no slot.
    let owner = match tokio::time::timeout_at(deadline, state.handler.admit(&bearer)).await {
        Ok(Ok(owner)) => owner,
        Ok(Err(e)) => return handler_error(peer, &e),
        Err(_elapsed) => return error(StatusCode::SERVICE_UNAVAILABLE, "the key could not be checked in time"),
    };
    let Some(_peer_slot) = state.per_peer.try_take(&peer.ip()) else {
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "too many reviews in flight from this address",
        );
    };
    let Some(_key_slot) = state.per_key.try_take(&owner) else {
        return error(StatusCode::TOO_MANY_REQUESTS, "too many reviews in flight for this key");
    };
    // A slot bounds the memory held by bodies across all connections; waiting for one is
    // part of the request's time.
    let permit = match tokio::time::timeout_at(deadline, state.in_flight.clone().acquire_owned()).await {
        Ok(Ok(permit)) => permit,
        Ok(Err(_closed)) => return error(StatusCode::SERVICE_UNAVAILABLE, "the webhook is shutting down"),
        Err(_elapsed) => return error(StatusCode::SERVICE_UNAVAILABLE, "too many reviews in flight"),
    };
    let body = match tokio::time::timeout_at(deadline, Limited::new(req.into_body(), max).collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => return too_large(max),
        Ok(Err(e)) => return error(StatusCode::BAD_REQUEST, &format!("reading the body: {e}")),
        Err(_elapsed) => return error(StatusCode::REQUEST_TIMEOUT, "the body did not arrive in time"),
    };

    let request = WebhookRequest {
        bearer,
        cluster,
        body,
        deadline,
        peer,
    };
    // Polled here, in the connection's request task, not spawned: a task per request would
    // cost a spawn and a wake-up that the gRPC path does not pay. A panic is caught (one
    // `500`, not the connection); dropping this future (the client went away) or the deadline
    // drops the handler's.
    let review = std::panic::AssertUnwindSafe(state.handler.review(request)).catch_unwind();
    let outcome = tokio::time::timeout_at(deadline, review).await;
    drop(permit);
    match outcome {
        Ok(Ok(Ok(review))) => {
            let mut response = Response::new(Full::new(review));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        Ok(Ok(Err(e))) => handler_error(peer, &e),
        Ok(Err(panic)) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(%peer, panic = %message, "webhook handler panicked");
            error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
        Err(_elapsed) => error(StatusCode::SERVICE_UNAVAILABLE, "the review did not finish in time"),
    }
}

/// A JSON error answer: `{"error": message}`.
fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "error": message }).to_string();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A plain text answer.
fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// Adds the `Allow` header of a `405`.
fn with_allow(mut response: Response<Full<Bytes>>, allow: &'static str) -> Response<Full<Bytes>> {
    response.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
    response
}

/// `413` naming the limit.
fn too_large(max: usize) -> Response<Full<Bytes>> {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("the AdmissionReview is larger than {max} bytes"),
    )
}

/// The percent-decoded cluster segment: 1-253 characters of UTF-8, no control characters,
/// no `/`.
pub(crate) fn cluster_segment(raw: &str) -> Result<String, &'static str> {
    if raw.is_empty() {
        return Err("the cluster (id or name) is missing from the path: /validate/{cluster}");
    }
    let mut bytes = Vec::with_capacity(raw.len());
    let mut input = raw.bytes();
    while let Some(b) = input.next() {
        if b == b'%' {
            let hi = input.next().and_then(hex_value);
            let lo = input.next().and_then(hex_value);
            match (hi, lo) {
                (Some(hi), Some(lo)) => bytes.push(hi << 4 | lo),
                _ => return Err("the cluster path segment has a malformed percent escape"),
            }
        } else {
            bytes.push(b);
        }
    }
    let cluster = String::from_utf8(bytes).map_err(|_| "the cluster path segment is not UTF-8")?;
    if cluster.is_empty() {
        return Err("the cluster (id or name) is missing from the path: /validate/{cluster}");
    }
    if cluster.chars().count() > MAX_CLUSTER_CHARS {
        return Err("the cluster path segment is longer than 253 characters");
    }
    if cluster.chars().any(|c| c.is_control() || c == '/') {
        return Err("the cluster path segment has a control character or a slash");
    }
    Ok(cluster)
}

/// The value of one hex digit.
fn hex_value(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// The token of the one `Authorization: Bearer <token>` header. The reasons never quote the
/// header.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Result<String, &'static str> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err("missing Authorization: Bearer <connector key>");
    };
    if values.next().is_some() {
        return Err("more than one Authorization header");
    }
    let malformed = "malformed Authorization header: expected Bearer <connector key>";
    let value = value.to_str().map_err(|_| malformed)?;
    let (scheme, token) = value.trim().split_once(' ').ok_or(malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err("the Authorization scheme must be Bearer");
    }
    let token = token.trim();
    if token.is_empty() || token.len() > MAX_BEARER_BYTES || token.contains(|c: char| c.is_ascii_whitespace()) {
        return Err(malformed);
    }
    Ok(token.to_owned())
}

/// Whether the content type is `application/json` (parameters such as `charset` allowed).
pub(crate) fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
}

/// The API server's `timeout` query parameter (a Go duration such as `10s`), if usable.
pub(crate) fn api_server_timeout(query: Option<&str>) -> Option<Duration> {
    let value = query?.split('&').find_map(|pair| pair.strip_prefix("timeout="))?;
    go_duration(value).filter(|d| !d.is_zero())
}

/// Parses a Go `time.Duration` string (`10s`, `1m30s`, `1.5s`, `250ms`); no sign.
pub(crate) fn go_duration(text: &str) -> Option<Duration> {
    if text.is_empty() || text.len() > 64 {
        return None;
    }
    let mut total = 0f64;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at_checked(number_len)?;
        let value: f64 = number.parse().ok()?;
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at_checked(unit_len)?;
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += value * scale;
        rest = after;
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn cluster_segments_are_decoded_and_bounded() {
        assert_eq!(cluster_segment("prod-eu").unwrap(), "prod-eu");
        assert_eq!(cluster_segment("prod%20eu").unwrap(), "prod eu");
        assert_eq!(cluster_segment("caf%C3%A9").unwrap(), "café");
        assert!(cluster_segment("").is_err());
        assert!(cluster_segment("a%2Fb").is_err());
        assert!(cluster_segment("a%0Ab").is_err());
        assert!(cluster_segment("a%zz").is_err());
        assert!(cluster_segment("a%4").is_err());
        assert!(cluster_segment("%").is_err());
        assert!(cluster_segment("%FF").is_err());
        assert!(cluster_segment(&"a".repeat(253)).is_ok());
        assert!(cluster_segment(&"a".repeat(254)).is_err());
    }

    #[test]
    fn bearer_tokens_are_taken_from_one_header() {
        let mut headers = HeaderMap::new();
        assert!(bearer_token(&headers).is_err());
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer pc_key.secret"));
        assert_eq!(bearer_token(&headers).unwrap(), "pc_key.secret");
        headers.insert(AUTHORIZATION, HeaderValue::from_static("bearer   pc_key "));
        assert_eq!(bearer_token(&headers).unwrap(), "pc_key");
        for bad in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "Bearer a b", "pc_key"] {
            headers.insert(AUTHORIZATION, HeaderValue::from_static(bad));
            assert!(bearer_token(&headers).is_err(), "{bad}");
        }
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer a"));
        headers.append(AUTHORIZATION, HeaderValue::from_static("Bearer b"));
        assert!(bearer_token(&headers).is_err());
        headers.insert(AUTHORIZATION, HeaderValue::from_bytes(b"Bearer \xff").unwrap());
        assert!(bearer_token(&headers).is_err());
    }

    #[test]
    fn json_content_types() {
        let mut headers = HeaderMap::new();
        assert!(!is_json(&headers));
        for (value, json) in [
            ("application/json", true),
            ("application/json; charset=utf-8", true),
            ("Application/JSON", true),
            ("text/plain", false),
            ("application/jsonx", false),
            ("application/yaml", false),
        ] {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(value));
            assert_eq!(is_json(&headers), json, "{value}");
        }
    }

    #[test]
    fn api_server_timeouts_are_go_durations() {
        assert_eq!(api_server_timeout(Some("timeout=10s")), Some(Duration::from_secs(10)));
        assert_eq!(
            api_server_timeout(Some("a=b&timeout=1m30s")),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            api_server_timeout(Some("timeout=1.5s")),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            api_server_timeout(Some("timeout=250ms")),
            Some(Duration::from_millis(250))
        );
        assert_eq!(api_server_timeout(Some("timeout=0s")), None);
        assert_eq!(api_server_timeout(Some("timeout=")), None);
        assert_eq!(api_server_timeout(Some("timeout=10")), None);
        assert_eq!(api_server_timeout(Some("timeout=-1s")), None);
        assert_eq!(api_server_timeout(Some("timeout=1e400s")), None);
        assert_eq!(api_server_timeout(Some("timeout=99999999999999999999h")), None);
        assert_eq!(api_server_timeout(None), None);
    }
}
