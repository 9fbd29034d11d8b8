//! The one mapping of store errors to gRPC statuses.
//!
//! (`impl From<StoreError> for Status` is not allowed here: both types are foreign to this
//! crate. [`store_status`] is that conversion, and [`OrStatus`] applies it with `?`.)

use portcullis_server::status::invalid_fields;
use portcullis_storage::StoreError;
use sea_orm::DbErr;
use tonic::Status;

/// The gRPC status of a store error. Database failures are logged here with their detail
/// and reach the client without it (no SQL, no table names).
pub fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::NotFound { .. } => Status::not_found(e.to_string()),
        StoreError::AlreadyExists { .. } => Status::already_exists(e.to_string()),
        StoreError::FailedPrecondition(message) => Status::failed_precondition(message),
        StoreError::InvalidArgument(errors) => invalid_fields(errors.into_iter().map(|f| (f.path, f.message))),
        StoreError::Unauthenticated(reason) => Status::unauthenticated(format!("API key is {}", reason.as_str())),
        StoreError::PermissionDenied(message) => Status::permission_denied(message),
        StoreError::Database(db) => {
            tracing::error!(error = %db, "database error");
            match db {
                DbErr::Conn(_) | DbErr::ConnectionAcquire(_) => {
                    Status::unavailable("the database is unavailable; retry later")
                }
                _ => Status::internal("internal error (database); the server log has the details"),
            }
        }
        StoreError::Internal(message) => {
            tracing::error!(error = %message, "internal store error");
            Status::internal("internal error; the server log has the details")
        }
    }
}

/// `result.or_status()?` in a handler: a store error becomes its status.
pub trait OrStatus<T> {
    /// Maps the error with [`store_status`].
    fn or_status(self) -> Result<T, Status>;
}

impl<T> OrStatus<T> for Result<T, StoreError> {
    fn or_status(self) -> Result<T, Status> {
        self.map_err(store_status)
    }
}
