//! The admission service's errors and the one place they become gRPC statuses.

use portcullis_domain::ErrorKind;
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
    /// Its kind in the one error table (which gives the gRPC code).
    pub fn kind(&self) -> ErrorKind {
        match self {
            AdmissionError::InvalidArgument(_) => ErrorKind::InvalidArgument,
            AdmissionError::Unauthenticated(_) => ErrorKind::Unauthenticated,
            AdmissionError::PermissionDenied(_) => ErrorKind::PermissionDenied,
            AdmissionError::RateLimited(_) => ErrorKind::ResourceExhausted,
            AdmissionError::Unavailable(_) => ErrorKind::Unavailable,
            AdmissionError::Internal(_) => ErrorKind::Internal,
        }
    }

    /// The gRPC code of this error, from the table.
    pub fn code(&self) -> Code {
        self.kind().grpc_code()
    }

    /// The same error read back from a status (the authentication layer speaks `Status`):
    /// the code's kind by the table, folded onto admission's variants (a cluster not found
    /// is one the caller may not review; a conflict means retry later).
    pub fn from_status(status: &Status) -> AdmissionError {
        let message = status.message().to_owned();
        match ErrorKind::from_grpc_code(status.code()) {
            ErrorKind::InvalidArgument => AdmissionError::InvalidArgument(message),
            ErrorKind::Unauthenticated => AdmissionError::Unauthenticated(message),
            ErrorKind::PermissionDenied | ErrorKind::NotFound => AdmissionError::PermissionDenied(message),
            ErrorKind::ResourceExhausted => AdmissionError::RateLimited(message),
            ErrorKind::Unavailable | ErrorKind::DeadlineExceeded | ErrorKind::Aborted => {
                AdmissionError::Unavailable(message)
            }
            ErrorKind::AlreadyExists | ErrorKind::FailedPrecondition | ErrorKind::Internal => {
                AdmissionError::Internal(message)
            }
        }
    }
}

/// The one domain error (the webhook answers with its HTTP status, gRPC with its code).
impl From<AdmissionError> for portcullis_domain::Error {
    fn from(error: AdmissionError) -> portcullis_domain::Error {
        portcullis_domain::Error::new(error.kind(), error.to_string())
    }
}

impl From<AdmissionError> for Status {
    fn from(error: AdmissionError) -> Status {
        Status::from(portcullis_domain::Error::from(error))
    }
}
