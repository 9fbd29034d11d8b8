//! The telemetry service's errors and the one place they become gRPC statuses.

use portcullis_domain::ErrorKind;
use tonic::Status;

use crate::store::StoreError;

/// Why a call, or a write, could not be done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TelemetryError {
    /// The request is malformed (a bad query, cluster reference or page token).
    #[error("{0}")]
    InvalidArgument(String),
    /// The caller may not act for that cluster.
    #[error("{0}")]
    PermissionDenied(String),
    /// No such alert or cluster.
    #[error("{0}")]
    NotFound(String),
    /// The change is not allowed in this state (an alert lifecycle transition).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The database, the bus or the policy store could not be reached.
    #[error("{0}")]
    Unavailable(String),
    /// A bug, or a stored row that cannot be read.
    #[error("internal error: {0}")]
    Internal(String),
}

impl TelemetryError {
    /// Its kind in the one error table (which gives the gRPC code).
    pub fn kind(&self) -> ErrorKind {
        match self {
            TelemetryError::InvalidArgument(_) => ErrorKind::InvalidArgument,
            TelemetryError::PermissionDenied(_) => ErrorKind::PermissionDenied,
            TelemetryError::NotFound(_) => ErrorKind::NotFound,
            TelemetryError::FailedPrecondition(_) => ErrorKind::FailedPrecondition,
            TelemetryError::Unavailable(_) => ErrorKind::Unavailable,
            TelemetryError::Internal(_) => ErrorKind::Internal,
        }
    }
}

impl From<StoreError> for TelemetryError {
    fn from(e: StoreError) -> TelemetryError {
        match e {
            StoreError::Unavailable(_) => TelemetryError::Unavailable(e.to_string()),
            StoreError::InvalidPageToken | StoreError::InvalidTimeRange => {
                TelemetryError::InvalidArgument(e.to_string())
            }
            StoreError::InvalidTransition(_) => TelemetryError::FailedPrecondition(e.to_string()),
            StoreError::Corrupt(_) => TelemetryError::Internal(e.to_string()),
        }
    }
}

impl From<TelemetryError> for Status {
    fn from(error: TelemetryError) -> Status {
        Status::from(portcullis_domain::Error::new(error.kind(), error.to_string()))
    }
}
