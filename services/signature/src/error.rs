//! The signature service's errors and the one place they become gRPC statuses.

use portcullis_domain::ErrorKind;
use tonic::Status;

/// Why a request could not be answered at all. What goes wrong for one attestor or with the
/// registry is not an error of the call: it is a `VERDICT_ERROR` verdict with its reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The request is malformed (no image, no attestor, a bad tenant id or digest).
    #[error("{0}")]
    InvalidArgument(String),
    /// The caller may not act for that tenant or cluster.
    #[error("{0}")]
    PermissionDenied(String),
    /// The image (a tag) does not exist (ResolveDigest only).
    #[error("{0}")]
    NotFound(String),
    /// The tenant is over its rate limit (`[signature.rate_limit]`).
    #[error("{0}")]
    ResourceExhausted(String),
    /// The registry or the policy store could not be asked, or did not answer in time.
    #[error("{0}")]
    Unavailable(String),
    /// A bug, or a load that did not complete.
    #[error("internal error: {0}")]
    Internal(String),
}

impl SignatureError {
    /// Its kind in the one error table (which gives the gRPC code).
    pub fn kind(&self) -> ErrorKind {
        match self {
            SignatureError::InvalidArgument(_) => ErrorKind::InvalidArgument,
            SignatureError::PermissionDenied(_) => ErrorKind::PermissionDenied,
            SignatureError::NotFound(_) => ErrorKind::NotFound,
            SignatureError::ResourceExhausted(_) => ErrorKind::ResourceExhausted,
            SignatureError::Unavailable(_) => ErrorKind::Unavailable,
            SignatureError::Internal(_) => ErrorKind::Internal,
        }
    }
}

impl From<portcullis_kit::cache::LoadAborted> for SignatureError {
    fn from(e: portcullis_kit::cache::LoadAborted) -> SignatureError {
        SignatureError::Internal(e.to_string())
    }
}

/// The one domain error.
impl From<SignatureError> for portcullis_domain::Error {
    fn from(error: SignatureError) -> portcullis_domain::Error {
        portcullis_domain::Error::new(error.kind(), error.to_string())
    }
}

impl From<SignatureError> for Status {
    fn from(error: SignatureError) -> Status {
        Status::from(portcullis_domain::Error::from(error))
    }
}
