//! `InvalidArgument` with every field named: in the message and, for clients that read
//! them, as `google.rpc.BadRequest` field violations in the standard error details
//! (`grpc-status-details-bin`). Thin wrappers of the one implementation in
//! `portcullis_domain::Error`, kept for the many callers that build a `Status` directly.

use portcullis_domain::Error;
use tonic::Status;

/// `InvalidArgument` for the `(field path, problem)` pairs: the message lists every one as
/// `path: problem` joined by `; `, and the details carry them as a `google.rpc.BadRequest`.
pub fn invalid_fields<I, F, M>(violations: I) -> Status
where
    I: IntoIterator<Item = (F, M)>,
    F: Into<String>,
    M: Into<String>,
{
    Status::from(Error::invalid_fields(violations))
}

/// `InvalidArgument` for one field.
pub fn invalid_field(field: impl Into<String>, problem: impl Into<String>) -> Status {
    Status::from(Error::invalid(field, problem))
}

/// The `(field path, problem)` pairs of a status made by [`invalid_fields`] (or any status
/// with `google.rpc.BadRequest` details); empty when it has none.
pub fn field_violations(status: &Status) -> Vec<(String, String)> {
    portcullis_domain::error::field_violations(status)
        .into_iter()
        .map(|v| (v.field, v.description))
        .collect()
}
