//! Errors: a handler's refusal of one review, and the server's own failures.

use std::net::SocketAddr;

use http::StatusCode;
use portcullis_domain::ErrorKind;

/// Why a handler did not judge a review. Each kind becomes an HTTP status, with the message
/// as `{"error": "<message>"}`; messages go to the API server (and its logs), so they must
/// never carry a secret such as the bearer token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// The review is malformed, truncated, not UTF-8 or too large: `400`.
    #[error("{0}")]
    InvalidArgument(String),
    /// The bearer token is unknown, revoked or expired: `401`.
    #[error("{0}")]
    Unauthenticated(String),
    /// The key may not review for this cluster: `403`.
    #[error("{0}")]
    PermissionDenied(String),
    /// The cluster is unknown (or not the key's tenant's): `404`.
    #[error("{0}")]
    NotFound(String),
    /// The tenant is over its rate limit: `429`.
    #[error("{0}")]
    ResourceExhausted(String),
    /// A stage the review needs is unavailable: `503`.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an unexpected failure: `500`.
    #[error("{0}")]
    Internal(String),
}

impl WebhookError {
    /// Its kind in the one error table (which gives the HTTP status).
    pub fn kind(&self) -> ErrorKind {
        match self {
            WebhookError::InvalidArgument(_) => ErrorKind::InvalidArgument,
            WebhookError::Unauthenticated(_) => ErrorKind::Unauthenticated,
            WebhookError::PermissionDenied(_) => ErrorKind::PermissionDenied,
            WebhookError::NotFound(_) => ErrorKind::NotFound,
            WebhookError::ResourceExhausted(_) => ErrorKind::ResourceExhausted,
            WebhookError::Unavailable(_) => ErrorKind::Unavailable,
            WebhookError::Internal(_) => ErrorKind::Internal,
        }
    }

    /// The HTTP status the error is answered with, from the table.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.kind().http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The message, without the kind.
    pub fn message(&self) -> &str {
        match self {
            WebhookError::InvalidArgument(m)
            | WebhookError::Unauthenticated(m)
            | WebhookError::PermissionDenied(m)
            | WebhookError::NotFound(m)
            | WebhookError::ResourceExhausted(m)
            | WebhookError::Unavailable(m)
            | WebhookError::Internal(m) => m,
        }
    }
}

/// Why the webhook server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is refused.
    #[error("{0}")]
    Config(String),
    /// A TLS file could not be read or used; the message names the file.
    #[error("TLS: {0}")]
    Tls(String),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}
