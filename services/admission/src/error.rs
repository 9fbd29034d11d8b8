//! The admission service's errors and the one place they become gRPC statuses.

use tonic::{Code, Status};

/// Why a review could not be answered with a decision.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    /// The AdmissionReview is malformed, truncated, not UTF-8, too large, or not a review.
    #[error("{0}")]
    InvalidArgument(String),
    /// The credential is unknown, revoked or expired.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller may not act for that cluster.
    #[error("{0}")]
    PermissionDenied(String),
    /// The tenant is over its rate limit.
    #[error("{0}")]
    RateLimited(String),
    /// Something the review needs cannot be had now and no decision can stand in for it
    /// (for example the credential cannot be checked).
    #[error("{0}")]
    Unavailable(String),
    /// A bug: nothing a caller can do.
    #[error("internal error: {0}")]
    Internal(String),
}

impl AdmissionError {
    /// The gRPC code of this error.
    pub fn code(&self) -> Code {
        match self {
            AdmissionError::InvalidArgument(_) => Code::InvalidArgument,
            AdmissionError::Unauthenticated(_) => Code::Unauthenticated,
            AdmissionError::PermissionDenied(_) => Code::PermissionDenied,
            AdmissionError::RateLimited(_) => Code::ResourceExhausted,
            AdmissionError::Unavailable(_) => Code::Unavailable,
            AdmissionError::Internal(_) => Code::Internal,
        }
    }

    /// The same error read back from a status (the authentication layer speaks `Status`).
    pub fn from_status(status: &Status) -> AdmissionError {
        let message = status.message().to_owned();
        match status.code() {
            Code::InvalidArgument | Code::OutOfRange => AdmissionError::InvalidArgument(message),
            Code::Unauthenticated => AdmissionError::Unauthenticated(message),
            Code::PermissionDenied | Code::NotFound => AdmissionError::PermissionDenied(message),
            Code::ResourceExhausted => AdmissionError::RateLimited(message),
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown | Code::Aborted => {
                AdmissionError::Unavailable(message)
            }
            _ => AdmissionError::Internal(message),
        }
    }
}

impl From<AdmissionError> for Status {
    fn from(error: AdmissionError) -> Status {
        Status::new(error.code(), error.to_string())
    }
}
