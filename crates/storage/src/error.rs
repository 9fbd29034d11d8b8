//! The one error type of the store, which the service maps to gRPC codes in one place.

use portcullis_engine::policy::FieldError;
use sea_orm::{DbErr, SqlErr};

/// Why a presented API key is not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InactiveReason {
    /// No such key, or the secret does not match (the two are not told apart).
    Unknown,
    /// The key was revoked.
    Revoked,
    /// The key is past its expiry, or a rotated connector key past its grace period.
    Expired,
}

impl InactiveReason {
    /// The lower-case word for messages: `unknown`, `revoked`, `expired`.
    pub fn as_str(self) -> &'static str {
        match self {
            InactiveReason::Unknown => "unknown",
            InactiveReason::Revoked => "revoked",
            InactiveReason::Expired => "expired",
        }
    }
}

/// Why a store operation failed. Every variant but [`StoreError::Database`] and
/// [`StoreError::Internal`] is the caller's doing.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The resource does not exist in the caller's tenant (foreign ids look the same).
    #[error("{resource} {reference} not found")]
    NotFound {
        /// The resource type: `policy`, `cluster`, ...
        resource: &'static str,
        /// How it was asked for, quoted: `"prod"` or `id "…"`.
        reference: String,
    },
    /// A resource with that name (or id) already exists.
    #[error("{resource} {reference} already exists")]
    AlreadyExists {
        /// The resource type.
        resource: &'static str,
        /// The taken name or id, quoted.
        reference: String,
    },
    /// The state of the store does not allow the change (stale revision, still in use).
    #[error("{0}")]
    FailedPrecondition(String),
    /// Bad input; every problem found, each naming its field path.
    #[error("{}", join_errors(.0))]
    InvalidArgument(Vec<FieldError>),
    /// The presented key is not valid.
    #[error("API key is {}", .0.as_str())]
    Unauthenticated(InactiveReason),
    /// The caller may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[source] DbErr),
    /// Stored data could not be read back (a bug or a hand-edited row).
    #[error("internal error: {0}")]
    Internal(String),
}

fn join_errors(errors: &[FieldError]) -> String {
    let parts: Vec<String> = errors.iter().map(ToString::to_string).collect();
    parts.join("; ")
}

impl StoreError {
    /// One invalid field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> StoreError {
        StoreError::InvalidArgument(vec![FieldError::new(field, message)])
    }

    /// Not found, by a reference already quoted for messages.
    pub(crate) fn not_found(resource: &'static str, reference: impl Into<String>) -> StoreError {
        StoreError::NotFound {
            resource,
            reference: reference.into(),
        }
    }

    /// Already exists, by name.
    pub(crate) fn exists(resource: &'static str, name: &str) -> StoreError {
        StoreError::AlreadyExists {
            resource,
            reference: format!("{name:?}"),
        }
    }

    /// The field errors of an `InvalidArgument`, empty for other variants.
    pub fn field_errors(&self) -> &[FieldError] {
        match self {
            StoreError::InvalidArgument(errors) => errors,
            _ => &[],
        }
    }
}

impl From<DbErr> for StoreError {
    /// Constraint violations that got past the explicit checks (two writers racing) keep
    /// their meaning; anything else is a database failure.
    fn from(e: DbErr) -> StoreError {
        match e.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(_)) => StoreError::AlreadyExists {
                resource: "resource",
                reference: "with that name".to_owned(),
            },
            Some(SqlErr::ForeignKeyConstraintViolation(_)) => StoreError::FailedPrecondition(
                "the change conflicts with a concurrent change to a referenced resource; retry".to_owned(),
            ),
            _ if is_text_refused(&e) => {
                StoreError::invalid("(request)", "text fields must be UTF-8 without NUL characters")
            }
            _ => StoreError::Database(e),
        }
    }
}

/// Whether PostgreSQL refused a text value it cannot store (a NUL character, SQLSTATE 22021),
/// the caller's input rather than a database failure. SQLite stores such text as it is.
fn is_text_refused(e: &DbErr) -> bool {
    use sea_orm::RuntimeErr;
    let (DbErr::Query(RuntimeErr::SqlxError(err)) | DbErr::Exec(RuntimeErr::SqlxError(err))) = e else {
        return false;
    };
    err.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| code == "22021")
}

impl From<StoreError> for portcullis_domain::Error {
    /// The store's row of the one error table. Database and internal failures keep their
    /// detail for the log only: no SQL or table names reach a caller.
    fn from(e: StoreError) -> portcullis_domain::Error {
        use portcullis_domain::{Error, ErrorKind};
        match e {
            StoreError::NotFound { .. } => Error::new(ErrorKind::NotFound, e.to_string()),
            StoreError::AlreadyExists { .. } => Error::new(ErrorKind::AlreadyExists, e.to_string()),
            StoreError::FailedPrecondition(message) => Error::new(ErrorKind::FailedPrecondition, message),
            StoreError::InvalidArgument(errors) => {
                Error::invalid_fields(errors.into_iter().map(|f| (f.path, f.message)))
            }
            StoreError::Unauthenticated(_) => Error::new(ErrorKind::Unauthenticated, e.to_string()),
            StoreError::PermissionDenied(message) => Error::new(ErrorKind::PermissionDenied, message),
            StoreError::Database(db) => match db {
                DbErr::Conn(_) | DbErr::ConnectionAcquire(_) => {
                    Error::new(ErrorKind::Unavailable, "the database is unavailable; retry later").with_detail(db)
                }
                _ => Error::internal("internal error (database); the server log has the details", db),
            },
            StoreError::Internal(message) => Error::internal("internal error; the server log has the details", message),
        }
    }
}

/// The store's result type.
pub type StoreResult<T> = Result<T, StoreError>;
