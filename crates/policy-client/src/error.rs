//! The library's errors.

/// Why a policy store client could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyClientError {
    /// The store's address, trust or credential is unusable (for example a plain-text URL
    /// off this host).
    #[error("{0}")]
    InvalidArgument(String),
}
