//! One error kind for every service, with its gRPC code and HTTP status in one table
//! ([`ErrorKind::TABLE`]), as quickwit and restate do.
//!
//! An [`Error`] carries a message for the caller and, apart, a detail for the server log:
//! the conversion to a gRPC status (feature `grpc`) logs the detail and never sends it, so
//! SQL, file paths or peer errors do not reach a tenant.

use std::fmt;

/// What kind of failure: decides the gRPC code and the HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request is malformed, out of range or over a limit; the fields are named.
    InvalidArgument,
    /// The credential is missing, unknown, revoked or expired.
    Unauthenticated,
    /// The credential may not do this.
    PermissionDenied,
    /// No such thing in the caller's tenant (also for another tenant's ids).
    NotFound,
    /// The name or id is taken.
    AlreadyExists,
    /// The state does not allow it (for example deleting a policy still assigned).
    FailedPrecondition,
    /// A concurrent change won; retry.
    Aborted,
    /// A rate or size limit of the caller's tenant.
    ResourceExhausted,
    /// A remote stage did not answer within its deadline.
    DeadlineExceeded,
    /// A stage or the database cannot be reached now; retry later.
    Unavailable,
    /// A bug or an unexpected failure; the server log has the detail.
    Internal,
}

#[cfg(feature = "grpc")]
use tonic::Code;

/// One row of the table: a kind, its gRPC code and its HTTP status.
#[derive(Debug, Clone, Copy)]
pub struct KindRow {
    /// The kind.
    pub kind: ErrorKind,
    /// The gRPC code, as its number (`tonic::Code as i32`).
    pub grpc_code: i32,
    /// The HTTP status.
    pub http_status: u16,
}

impl ErrorKind {
    /// The one table. gRPC codes are the numbers of `google.rpc.Code`; HTTP statuses follow
    /// Google's mapping of those codes (429 for exhaustion, 503 for unavailability).
    pub const TABLE: [KindRow; 11] = [
        KindRow {
            kind: ErrorKind::InvalidArgument,
            grpc_code: 3,
            http_status: 400,
        },
        KindRow {
            kind: ErrorKind::Unauthenticated,
            grpc_code: 16,
            http_status: 401,
        },
        KindRow {
            kind: ErrorKind::PermissionDenied,
            grpc_code: 7,
            http_status: 403,
        },
        KindRow {
            kind: ErrorKind::NotFound,
            grpc_code: 5,
            http_status: 404,
        },
        KindRow {
            kind: ErrorKind::AlreadyExists,
            grpc_code: 6,
            http_status: 409,
        },
        KindRow {
            kind: ErrorKind::FailedPrecondition,
            grpc_code: 9,
            http_status: 400,
        },
        KindRow {
            kind: ErrorKind::Aborted,
            grpc_code: 10,
            http_status: 409,
        },
        KindRow {
            kind: ErrorKind::ResourceExhausted,
            grpc_code: 8,
            http_status: 429,
        },
        KindRow {
            kind: ErrorKind::DeadlineExceeded,
            grpc_code: 4,
            http_status: 504,
        },
        KindRow {
            kind: ErrorKind::Unavailable,
            grpc_code: 14,
            http_status: 503,
        },
        KindRow {
            kind: ErrorKind::Internal,
            grpc_code: 13,
            http_status: 500,
        },
    ];

    fn row(self) -> &'static KindRow {
        // Every kind has its row (a unit test checks it); the fallback is never reached.
        const FALLBACK: KindRow = KindRow {
            kind: ErrorKind::Internal,
            grpc_code: 13,
            http_status: 500,
        };
        Self::TABLE.iter().find(|r| r.kind == self).unwrap_or(&FALLBACK)
    }

    /// The HTTP status of the kind.
    pub fn http_status(self) -> u16 {
        self.row().http_status
    }

    /// The gRPC code number of the kind.
    pub fn grpc_code_number(self) -> i32 {
        self.row().grpc_code
    }

    /// The gRPC code of the kind.
    #[cfg(feature = "grpc")]
    pub fn grpc_code(self) -> Code {
        Code::from_i32(self.grpc_code_number())
    }

    /// The kind a gRPC code stands for: the table read backwards; codes with no row of their
    /// own take the nearest (`OutOfRange` is an invalid argument, `Cancelled` and `Unknown`
    /// an unavailable peer, anything else internal).
    #[cfg(feature = "grpc")]
    pub fn from_grpc_code(code: Code) -> ErrorKind {
        match code {
            Code::OutOfRange => ErrorKind::InvalidArgument,
            Code::Cancelled | Code::Unknown => ErrorKind::Unavailable,
            other => Self::TABLE
                .iter()
                .find(|r| r.grpc_code == other as i32)
                .map_or(ErrorKind::Internal, |r| r.kind),
        }
    }

    /// Whether the log should carry the detail at error level (the server's fault) rather
    /// than debug (the caller's).
    pub fn is_server_fault(self) -> bool {
        matches!(
            self,
            ErrorKind::Internal | ErrorKind::Unavailable | ErrorKind::DeadlineExceeded
        )
    }
}

/// A refused field of an `InvalidArgument`: its path and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// The field path (`spec.rules[2].action`), empty for the request as a whole.
    pub field: String,
    /// What is wrong.
    pub description: String,
}

/// An error of any service: kind, a message the caller may read, the refused fields, and a
/// detail kept for the server log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    fields: Vec<FieldViolation>,
    detail: Option<String>,
}

impl Error {
    /// An error of `kind` whose `message` the caller reads.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            fields: Vec::new(),
            detail: None,
        }
    }

    /// `InvalidArgument` for one field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Error {
        Error::invalid_fields([(field.into(), description.into())])
    }

    /// `InvalidArgument` for `(field path, problem)` pairs: the message lists every one as
    /// `path: problem` joined by `; `.
    pub fn invalid_fields<I, F, M>(violations: I) -> Error
    where
        I: IntoIterator<Item = (F, M)>,
        F: Into<String>,
        M: Into<String>,
    {
        let fields: Vec<FieldViolation> = violations
            .into_iter()
            .map(|(f, m)| FieldViolation {
                field: f.into(),
                description: m.into(),
            })
            .collect();
        let message = fields
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
        Error {
            kind: ErrorKind::InvalidArgument,
            message,
            fields,
            detail: None,
        }
    }

    /// A server fault: the caller reads `message` (say what failed, not why); `detail` goes
    /// to the log only.
    pub fn internal(message: impl Into<String>, detail: impl fmt::Display) -> Error {
        Error::new(ErrorKind::Internal, message).with_detail(detail)
    }

    /// Keeps `detail` for the server log; it never reaches the caller.
    #[must_use]
    pub fn with_detail(mut self, detail: impl fmt::Display) -> Error {
        self.detail = Some(detail.to_string());
        self
    }

    /// The kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message the caller reads.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The refused fields (empty unless `InvalidArgument` named some).
    pub fn fields(&self) -> &[FieldViolation] {
        &self.fields
    }

    /// The detail kept for the log.
    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    /// The HTTP status of the error.
    pub fn http_status(&self) -> u16 {
        self.kind.http_status()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// Why a server (the gRPC server, the webhook listener) could not start, or stopped with an
/// error: one error for every listener of every service.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is refused (for example plain text on a public address).
    #[error("{0}")]
    Config(String),
    /// A TLS file could not be read or used; the message names the file.
    #[error("TLS: {0}")]
    Tls(String),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("{what}: {source}")]
    Failed {
        /// Which server (`gRPC server`).
        what: &'static str,
        /// Why.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

#[cfg(feature = "grpc")]
mod grpc {
    //! `Error` ↔ `tonic::Status`, with the refused fields as `google.rpc.BadRequest` field
    //! violations in the standard error details (`grpc-status-details-bin`).

    use prost::Message;
    use tonic::{Code, Status};

    use super::{Error, ErrorKind, FieldViolation};

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
        field_violations: Vec<RpcFieldViolation>,
    }

    /// `google.rpc.BadRequest.FieldViolation`.
    #[derive(Clone, PartialEq, prost::Message)]
    struct RpcFieldViolation {
        #[prost(string, tag = "1")]
        field: String,
        #[prost(string, tag = "2")]
        description: String,
    }

    const BAD_REQUEST_TYPE: &str = "type.googleapis.com/google.rpc.BadRequest";

    impl From<Error> for Status {
        /// The detail is logged here (error level for server faults) and not sent.
        fn from(e: Error) -> Status {
            if let Some(detail) = &e.detail {
                if e.kind.is_server_fault() {
                    tracing::error!(kind = ?e.kind, message = %e.message, detail = %detail, "request failed");
                } else {
                    tracing::debug!(kind = ?e.kind, message = %e.message, detail = %detail, "request refused");
                }
            }
            let code = e.kind.grpc_code();
            if e.fields.is_empty() {
                return Status::new(code, e.message);
            }
            let details = RpcStatus {
                code: code as i32,
                message: e.message.clone(),
                details: vec![prost_types::Any {
                    type_url: BAD_REQUEST_TYPE.to_owned(),
                    value: BadRequest {
                        field_violations: e
                            .fields
                            .into_iter()
                            .map(|v| RpcFieldViolation {
                                field: v.field,
                                description: v.description,
                            })
                            .collect(),
                    }
                    .encode_to_vec(),
                }],
            };
            Status::with_details(code, e.message, details.encode_to_vec().into())
        }
    }

    impl From<&Status> for Error {
        /// A peer's status read back: its kind by the table, its message, its fields.
        fn from(status: &Status) -> Error {
            Error {
                kind: ErrorKind::from_grpc_code(status.code()),
                message: status.message().to_owned(),
                fields: field_violations(status),
                detail: None,
            }
        }
    }

    impl From<Status> for Error {
        fn from(status: Status) -> Error {
            Error::from(&status)
        }
    }

    /// The refused fields of a status (empty when it has no `google.rpc.BadRequest` details).
    pub fn field_violations(status: &Status) -> Vec<FieldViolation> {
        let Ok(rpc) = RpcStatus::decode(status.details()) else {
            return Vec::new();
        };
        rpc.details
            .iter()
            .filter(|any| any.type_url == BAD_REQUEST_TYPE)
            .filter_map(|any| BadRequest::decode(any.value.as_slice()).ok())
            .flat_map(|b| b.field_violations)
            .map(|v| FieldViolation {
                field: v.field,
                description: v.description,
            })
            .collect()
    }

    /// `true` for the codes that mean the peer could not be reached or did not answer in
    /// time (as opposed to an answer that refused).
    pub fn is_unreachable(code: Code) -> bool {
        matches!(code, Code::Unavailable | Code::DeadlineExceeded)
    }
}

#[cfg(feature = "grpc")]
pub use grpc::{field_violations, is_unreachable};

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn every_kind_has_one_row() {
        let kinds = [
            ErrorKind::InvalidArgument,
            ErrorKind::Unauthenticated,
            ErrorKind::PermissionDenied,
            ErrorKind::NotFound,
            ErrorKind::AlreadyExists,
            ErrorKind::FailedPrecondition,
            ErrorKind::Aborted,
            ErrorKind::ResourceExhausted,
            ErrorKind::DeadlineExceeded,
            ErrorKind::Unavailable,
            ErrorKind::Internal,
        ];
        for kind in kinds {
            assert_eq!(
                ErrorKind::TABLE.iter().filter(|r| r.kind == kind).count(),
                1,
                "{kind:?}"
            );
        }
        assert_eq!(ErrorKind::TABLE.len(), kinds.len());
        assert_eq!(ErrorKind::ResourceExhausted.http_status(), 429);
        assert_eq!(ErrorKind::Unavailable.http_status(), 503);
    }

    #[cfg(feature = "grpc")]
    #[test]
    fn status_round_trip_keeps_kind_message_and_fields_but_not_detail() {
        for row in ErrorKind::TABLE {
            let status = tonic::Status::from(Error::new(row.kind, "m").with_detail("SELECT secret"));
            assert_eq!(status.code() as i32, row.grpc_code);
            assert_eq!(status.message(), "m");
            assert!(!format!("{status:?}").contains("secret"));
            assert_eq!(Error::from(&status).kind(), row.kind);
        }
        let e = Error::invalid_fields([("spec.a", "bad"), ("", "whole")]);
        assert_eq!(e.message(), "spec.a: bad; whole");
        let back = Error::from(tonic::Status::from(e.clone()));
        assert_eq!(back.fields(), e.fields());
        assert_eq!(
            ErrorKind::from_grpc_code(tonic::Code::OutOfRange),
            ErrorKind::InvalidArgument
        );
    }
}
