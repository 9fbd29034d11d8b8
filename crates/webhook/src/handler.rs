//! What the transport hands to the admission evaluation, and how it gets the answer back.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use bytes::Bytes;

use portcullis_domain::Error;

/// The future a [`WebhookHandler`] returns: the response AdmissionReview JSON, or why there is
/// none: an [`Error`] answered with its kind's HTTP status and `{"error": "<message>"}`. The
/// message goes to the API server (and its logs), so it must never carry a secret such as the
/// bearer token; the detail stays in this server's log. (The same type as `futures::future::BoxFuture<'a, Result<Bytes, Error>>`.)
pub type ReviewFuture<'a> = Pin<Box<dyn Future<Output = Result<Bytes, Error>> + Send + 'a>>;

/// The future of [`WebhookHandler::admit`]: the owner a request's slots are counted against
/// (a key id), or the error answered at once.
pub type AdmitFuture<'a> = Pin<Box<dyn Future<Output = Result<String, Error>> + Send + 'a>>;

/// One AdmissionReview that passed the transport's checks (route, bearer present, JSON content
/// type, size), for the handler to authenticate and judge.
#[derive(Clone)]
pub struct WebhookRequest {
    /// The bearer token from `Authorization: Bearer <key>` (the connector key); not yet
    /// checked. Redacted from `Debug`.
    pub bearer: String,
    /// The `{cluster}` path segment, percent-decoded: a cluster id or name, 1-253
    /// characters, no control characters and no `/`.
    pub cluster: String,
    /// The request body as received, at most [`crate::WebhookConfig::max_body_bytes`]; not
    /// yet parsed.
    pub body: Bytes,
    /// When the answer is due: the server's request timeout, or the API server's shorter
    /// `?timeout=`, from when the request arrived. The handler is cancelled (and the client
    /// gets `503`) at this instant, so it should settle a missed stage by the cluster's
    /// failure mode a little before.
    pub deadline: tokio::time::Instant,
    /// The client's address.
    pub peer: SocketAddr,
}

impl fmt::Debug for WebhookRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookRequest")
            .field("bearer", &"<redacted>")
            .field("cluster", &self.cluster)
            .field("body_len", &self.body.len())
            .field("deadline", &self.deadline)
            .field("peer", &self.peer)
            .finish()
    }
}

/// Judges AdmissionReviews for the webhook: the admission service implements it; the
/// transport knows nothing of policies.
pub trait WebhookHandler: Send + Sync + 'static {
    /// Judges one AdmissionReview and returns the response AdmissionReview JSON (served as
    /// `200 application/json`), or an error (served as its status with `{"error": ...}`).
    /// The future is polled in the request's own task (no task of its own, which would cost
    /// every request a spawn): a panic becomes `500`, and it is dropped when the deadline
    /// passes or the client goes away.
    fn review(&self, request: WebhookRequest) -> ReviewFuture<'_>;

    /// Checks the bearer token from the headers, before the body is read or a slot is taken,
    /// so a stranger holds nothing: the owner the request's slots are counted against (the
    /// key's id), or the error answered at once (`401` for an unknown key). Called under the
    /// request's deadline; it should be cheap (a cached lookup). The default admits every
    /// token, each its own owner.
    fn admit<'a>(&'a self, bearer: &'a str) -> AdmitFuture<'a> {
        Box::pin(std::future::ready(Ok(token_owner(bearer))))
    }
}

/// An owner name for a token that is not the token itself (no secret kept in the slot map).
fn token_owner(bearer: &str) -> String {
    use std::hash::{BuildHasher, RandomState};
    use std::sync::OnceLock;
    static SEED: OnceLock<RandomState> = OnceLock::new();
    format!("token-{:016x}", SEED.get_or_init(RandomState::new).hash_one(bearer))
}

/// A [`WebhookHandler`] made from an async function; see [`handler_fn`].
#[derive(Clone)]
pub struct HandlerFn<F>(F);

impl<F> fmt::Debug for HandlerFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HandlerFn")
    }
}

/// Makes a [`WebhookHandler`] from an async function (tests, adapters).
pub fn handler_fn<F, Fut>(f: F) -> HandlerFn<F>
where
    F: Fn(WebhookRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Bytes, Error>> + Send + 'static,
{
    HandlerFn(f)
}

impl<F, Fut> WebhookHandler for HandlerFn<F>
where
    F: Fn(WebhookRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Bytes, Error>> + Send + 'static,
{
    fn review(&self, request: WebhookRequest) -> ReviewFuture<'_> {
        Box::pin((self.0)(request))
    }
}
