//! Who a valid tenant API key is: what introspection answers, the store records and the
//! servers authorise with.

use time::OffsetDateTime;

use crate::modes::Role;

/// A valid tenant API key: its tenant, role, cluster (connector keys), id and expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyIdentity {
    /// The key's tenant.
    pub tenant_id: String,
    /// The key's role.
    pub role: Role,
    /// For a connector key, its cluster's id.
    pub cluster_id: Option<String>,
    /// The key's id (author of revisions, actor of audit entries).
    pub key_id: String,
    /// When the key stops working on its own (expiry, or the end of a rotation grace
    /// period); `None` when it does not.
    pub expires_at: Option<OffsetDateTime>,
}
