//! The client's one error type; each variant is a kind a caller acts on.

use std::time::Duration;

/// Why a registry operation failed. Messages never hold credentials or tokens.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The manifest, blob, tag or repository does not exist (404).
    #[error("not found: {0}")]
    NotFound(String),
    /// The registry wants (other) credentials: 401 after authenticating, or a token refused.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The credentials are known but not allowed this (403).
    #[error("denied: {0}")]
    Denied(String),
    /// The registry could not be reached or failed (connection refused or reset, TLS failure,
    /// 5xx, 429): worth retrying later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The call did not finish within its deadline.
    #[error("deadline of {0:?} exceeded")]
    DeadlineExceeded(Duration),
    /// What the registry sent (or what was asked) is wrong: digest mismatch, malformed manifest,
    /// a body over its size limit, a bad reference, an unexpected status.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The client's own settings are unusable (an unreadable extra CA, say).
    #[error("configuration: {0}")]
    Config(String),
}

/// The kinds of [`Error`], for callers that branch without matching on messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// [`Error::NotFound`].
    NotFound,
    /// [`Error::Unauthorized`].
    Unauthorized,
    /// [`Error::Denied`].
    Denied,
    /// [`Error::Unavailable`].
    Unavailable,
    /// [`Error::DeadlineExceeded`].
    DeadlineExceeded,
    /// [`Error::Invalid`].
    Invalid,
    /// [`Error::Config`].
    Config,
}

impl Error {
    /// This error's kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::NotFound(_) => ErrorKind::NotFound,
            Self::Unauthorized(_) => ErrorKind::Unauthorized,
            Self::Denied(_) => ErrorKind::Denied,
            Self::Unavailable(_) => ErrorKind::Unavailable,
            Self::DeadlineExceeded(_) => ErrorKind::DeadlineExceeded,
            Self::Invalid(_) => ErrorKind::Invalid,
            Self::Config(_) => ErrorKind::Config,
        }
    }

    /// Whether trying again later may succeed (unavailable or out of time).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::DeadlineExceeded(_))
    }
}
