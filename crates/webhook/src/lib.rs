//! The Kubernetes ValidatingWebhook transport of the admission stage: an HTTPS listener
//! (rustls with the ring provider; HTTP/1.1 and HTTP/2 chosen by ALPN) that a kube-apiserver
//! calls directly, handing each AdmissionReview to a [`WebhookHandler`].
//!
//! Routes:
//! - `POST /validate/{cluster}`: the body is an AdmissionReview (`application/json`), the
//!   connector key comes as `Authorization: Bearer <key>`, `{cluster}` is the cluster's id or
//!   name (percent-decoded, 1-253 characters). The handler's answer is returned as `200` with
//!   its JSON; an [`Error`] becomes its kind's HTTP status (the one error table) with
//!   `{"error": "<message>"}`. The
//!   API server's `?timeout=` query shortens the request's deadline.
//! - `GET /healthz`: `200 ok`.
//! - anything else: `404`, or `405` for a known path with the wrong method.
//!
//! The transport refuses before the handler runs: no or a malformed bearer `401`, another
//! content type `415`, a body over [`WebhookConfig::max_body_bytes`] `413` (by its declared
//! length, without reading it, or as soon as the limit is crossed), a body not received within
//! the request timeout `408`; a handler that does not finish within the deadline `503`.
//!
//! Slow or stalled clients are bounded: a TLS handshake timeout, an HTTP/1 header read
//! timeout, a per-request timeout, an idle timeout per connection, a bound on connections and
//! on requests in flight, and a drain deadline on shutdown.
//!
//! ```no_run
//! # async fn example() -> Result<(), portcullis_webhook::ServeError> {
//! use std::sync::Arc;
//! use portcullis_webhook::{WebhookConfig, WebhookServer, handler_fn};
//!
//! let listen = std::net::SocketAddr::from(([0, 0, 0, 0], 8443));
//! let config = WebhookConfig::new(listen, "tls.crt".into(), "tls.key".into());
//! let handler = handler_fn(|request: portcullis_webhook::WebhookRequest| async move {
//!     // Judge `request.body` for `request.cluster` with `request.bearer`...
//!     Ok(request.body)
//! });
//! let bound = WebhookServer::bind(config, Arc::new(handler)).await?;
//! // Serves until the shutdown future completes (a signal, a cancellation token...).
//! bound.serve(std::future::pending()).await
//! # }
//! ```

mod config;
mod handler;
mod route;
mod server;
mod slots;
mod tls;

pub use config::{WebhookConfig, WebhookLimits};
pub use handler::{AdmitFuture, HandlerFn, ReviewFuture, WebhookHandler, WebhookRequest, handler_fn};
pub use portcullis_domain::{Error, ErrorKind, ServeError};
pub use server::{BoundWebhook, WebhookServer};
