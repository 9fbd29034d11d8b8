//! `InvalidArgument` with every field named: in the message and, for clients that read
//! them, as `google.rpc.BadRequest` field violations in the standard error details
//! (`grpc-status-details-bin`).

use prost::Message;
use tonic::{Code, Status};

/// `google.rpc.Status`.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types::Any>,
}

/// `google.rpc.BadRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct BadRequest {
    #[prost(message, repeated, tag = "1")]
    field_violations: Vec<FieldViolation>,
}

/// `google.rpc.BadRequest.FieldViolation`.
#[derive(Clone, PartialEq, prost::Message)]
struct FieldViolation {
    #[prost(string, tag = "1")]
    field: String,
    #[prost(string, tag = "2")]
    description: String,
}

const BAD_REQUEST_TYPE: &str = "type.googleapis.com/google.rpc.BadRequest";

/// `InvalidArgument` for the `(field path, problem)` pairs: the message lists every one as
/// `path: problem` joined by `; `, and the details carry them as a `google.rpc.BadRequest`.
pub fn invalid_fields<I, F, M>(violations: I) -> Status
where
    I: IntoIterator<Item = (F, M)>,
    F: Into<String>,
    M: Into<String>,
{
    let field_violations: Vec<FieldViolation> = violations
        .into_iter()
        .map(|(f, m)| FieldViolation {
            field: f.into(),
            description: m.into(),
        })
        .collect();
    let message = field_violations
        .iter()
        .map(|v| {
            if v.field.is_empty() {
                v.description.clone()
            } else {
                format!("{}: {}", v.field, v.description)
            }
        })
        .collect::<Vec<_>>()
        .join("; ");
    let details = RpcStatus {
        code: Code::InvalidArgument as i32,
        message: message.clone(),
        details: vec![prost_types::Any {
            type_url: BAD_REQUEST_TYPE.to_owned(),
            value: BadRequest { field_violations }.encode_to_vec(),
        }],
    };
    Status::with_details(Code::InvalidArgument, message, details.encode_to_vec().into())
}

/// `InvalidArgument` for one field.
pub fn invalid_field(field: impl Into<String>, problem: impl Into<String>) -> Status {
    invalid_fields([(field.into(), problem.into())])
}

/// The `(field path, problem)` pairs of a status made by [`invalid_fields`] (or any status
/// with `google.rpc.BadRequest` details); empty when it has none.
pub fn field_violations(status: &Status) -> Vec<(String, String)> {
    let Ok(rpc) = RpcStatus::decode(status.details()) else {
        return Vec::new();
    };
    rpc.details
        .iter()
        .filter(|any| any.type_url == BAD_REQUEST_TYPE)
        .filter_map(|any| BadRequest::decode(any.value.as_slice()).ok())
        .flat_map(|b| b.field_violations)
        .map(|v| (v.field, v.description))
        .collect()
}
