//! Why a signature does not hold, in words a security engineer reads.

/// Why verification failed. Every variant fails closed: no error is ever a pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// A key (attestor, log, CA) could not be used.
    #[error("bad public key: {0}")]
    Key(String),
    /// The signature material is not of the expected shape (JSON, base64, DER, fields).
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// Which part of the material.
        what: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// A cryptographic signature does not verify.
    #[error("{0} does not verify")]
    BadSignature(&'static str),
    /// The payload is not a cosign container image signature.
    #[error("payload type is {0:?}, expected \"cosign container image signature\"")]
    WrongType(String),
    /// The signature is for another image or artifact.
    #[error("signed digest {found} is not the image's digest {expected}")]
    DigestMismatch {
        /// The digest being verified.
        expected: String,
        /// The digest the signature names.
        found: String,
    },
    /// The transparency log evidence is missing or does not hold.
    #[error("transparency log: {0}")]
    Tlog(String),
    /// The signing certificate does not chain to a trusted CA or is not valid.
    #[error("certificate: {0}")]
    Certificate(String),
    /// The certificate's identity is not the attestor's.
    #[error("identity: {0}")]
    Identity(String),
    /// Material this verifier does not handle; refused rather than guessed.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

impl VerifyError {
    /// A [`VerifyError::Malformed`].
    pub(crate) fn malformed(what: &'static str, detail: impl ToString) -> Self {
        Self::Malformed {
            what,
            detail: detail.to_string(),
        }
    }
}
