//! The one mapping of store errors to gRPC statuses: the store's `From<StoreError> for
//! portcullis_domain::Error`, then the domain's `From<Error> for Status` (detail logged, not
//! sent).
//!
//! (`impl From<StoreError> for Status` is not allowed here: both types are foreign to this
//! crate. [`store_status`] is that conversion, and [`OrStatus`] applies it with `?`.)

use portcullis_storage::StoreError;
use tonic::Status;

/// The gRPC status of a store error. Database failures are logged with their detail and
/// reach the client without it (no SQL, no table names).
pub fn store_status(e: StoreError) -> Status {
    Status::from(portcullis_domain::Error::from(e))
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
