//! The continuous service's errors and the one place they become gRPC statuses.

use portcullis_domain::ErrorKind;
use tonic::Status;

use crate::store::StoreError;

/// Why a call, or a re-evaluation, could not be done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContinuousError {
    /// The request is malformed (a bad cluster reference, an invalid draft policy).
    #[error("{0}")]
    InvalidArgument(String),
    /// The caller may not act for that tenant or cluster.
    #[error("{0}")]
    PermissionDenied(String),
    /// A document (the preview's draft policy) is invalid: (field path, what is wrong).
    #[error("invalid document: {}", .0.iter().map(|(f, m)| format!("{f}: {m}")).collect::<Vec<_>>().join("; "))]
    InvalidDocument(Vec<(String, String)>),
    /// No such cluster, pod or command.
    #[error("{0}")]
    NotFound(String),
    /// The call cannot be done in this state (e.g. a command stream without its hello).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The tenant is over its rate limit.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The database or the policy store could not be reached, or findings kept changing
    /// under a re-evaluation.
    #[error("{0}")]
    Unavailable(String),
    /// A bug, or a stored row that cannot be read.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ContinuousError {
    /// Its kind in the one error table (which gives the gRPC code).
    pub fn kind(&self) -> ErrorKind {
        match self {
            ContinuousError::InvalidArgument(_) | ContinuousError::InvalidDocument(_) => ErrorKind::InvalidArgument,
            ContinuousError::PermissionDenied(_) => ErrorKind::PermissionDenied,
            ContinuousError::NotFound(_) => ErrorKind::NotFound,
            ContinuousError::FailedPrecondition(_) => ErrorKind::FailedPrecondition,
            ContinuousError::ResourceExhausted(_) => ErrorKind::ResourceExhausted,
            ContinuousError::Unavailable(_) => ErrorKind::Unavailable,
            ContinuousError::Internal(_) => ErrorKind::Internal,
        }
    }
}

impl From<StoreError> for ContinuousError {
    fn from(e: StoreError) -> ContinuousError {
        match e {
            StoreError::Unavailable(_) | StoreError::Conflict => ContinuousError::Unavailable(e.to_string()),
            StoreError::InvalidPageToken => ContinuousError::InvalidArgument(e.to_string()),
            StoreError::Corrupt(_) => ContinuousError::Internal(e.to_string()),
        }
    }
}

/// The one domain error.
impl From<ContinuousError> for portcullis_domain::Error {
    fn from(error: ContinuousError) -> portcullis_domain::Error {
        match error {
            // The field paths travel as the status's field violations.
            ContinuousError::InvalidDocument(fields) => portcullis_domain::Error::invalid_fields(fields),
            other => portcullis_domain::Error::new(other.kind(), other.to_string()),
        }
    }
}

impl From<ContinuousError> for Status {
    fn from(error: ContinuousError) -> Status {
        Status::from(portcullis_domain::Error::from(error))
    }
}
