//! The domain types the store takes and returns.

use std::fmt;

use portcullis_engine::scan::{CvssMetric, ScanResult, ScanType, Severity};
use time::OffsetDateTime;

/// Who makes a change: recorded as the author of revisions and in the audit log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actor {
    /// The caller's key id; `None` for the operator key and bootstrap.
    pub key_id: Option<String>,
    /// The caller's role; `None` for the operator.
    pub role: Option<Role>,
    /// The W3C `traceparent` of the call, copied into events and (its trace id) the audit log.
    pub traceparent: Option<String>,
    /// The W3C `tracestate` of the call.
    pub tracestate: Option<String>,
}

impl Actor {
    /// A tenant key.
    pub fn key(key_id: impl Into<String>, role: Role) -> Actor {
        Actor {
            key_id: Some(key_id.into()),
            role: Some(role),
            ..Actor::default()
        }
    }

    /// The operator (or bootstrap): no key id, no role.
    pub fn operator() -> Actor {
        Actor::default()
    }

    /// The key id as stored (`""` for the operator).
    pub(crate) fn key_id_str(&self) -> &str {
        self.key_id.as_deref().unwrap_or("")
    }

    /// The trace id of `traceparent` (`00-<trace id>-<span id>-<flags>`), when well-formed.
    pub(crate) fn trace_id(&self) -> Option<&str> {
        let tp = self.traceparent.as_deref()?;
        let mut parts = tp.split('-');
        let _version = parts.next()?;
        let trace = parts.next()?;
        (trace.len() == 32 && trace.bytes().all(|b| b.is_ascii_hexdigit())).then_some(trace)
    }
}

/// The role of an API key and a cluster's failure mode: the one definition of each, in the
/// domain crate.
pub use portcullis_domain::{FailureMode, Role};

/// The protobuf value of a domain type: the one place storage's types meet the wire enums
/// (the orphan rule keeps a `From` out of this crate).
pub trait ToProto {
    /// The protobuf type.
    type Proto;
    /// The protobuf value.
    fn to_proto(self) -> Self::Proto;
}

impl ToProto for Role {
    type Proto = portcullis_proto::common::v1::Role;
    fn to_proto(self) -> Self::Proto {
        use portcullis_proto::common::v1::Role as P;
        match self {
            Role::Admin => P::Admin,
            Role::Editor => P::Editor,
            Role::Viewer => P::Viewer,
            Role::Connector => P::Connector,
        }
    }
}

impl ToProto for FailureMode {
    type Proto = portcullis_proto::common::v1::FailureMode;
    fn to_proto(self) -> Self::Proto {
        use portcullis_proto::common::v1::FailureMode as P;
        match self {
            FailureMode::FailOpen => P::FailOpen,
            FailureMode::FailClosed => P::FailClosed,
        }
    }
}

/// A resource named by id or by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResourceRef {
    /// By the server-assigned id.
    Id(String),
    /// By name.
    Name(String),
}

impl ResourceRef {
    /// By id.
    pub fn id(id: impl Into<String>) -> ResourceRef {
        ResourceRef::Id(id.into())
    }

    /// By name.
    pub fn name(name: impl Into<String>) -> ResourceRef {
        ResourceRef::Name(name.into())
    }

    /// The reference quoted for messages: `"prod"` or `id "…"`.
    pub(crate) fn describe(&self) -> String {
        match self {
            ResourceRef::Id(id) => format!("id {id:?}"),
            ResourceRef::Name(name) => format!("{name:?}"),
        }
    }
}

/// Which page of a listing to return.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRequest {
    /// How many items; 0 means the default (50); more than 500 is read as 500.
    pub size: u32,
    /// The `next_token` of the previous page; `None` for the first page.
    pub token: Option<String>,
}

impl PageRequest {
    /// The first page of `size` items.
    pub fn first(size: u32) -> PageRequest {
        PageRequest { size, token: None }
    }

    /// The page after the one that returned `token`.
    pub fn after(size: u32, token: impl Into<String>) -> PageRequest {
        PageRequest {
            size,
            token: Some(token.into()),
        }
    }
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// The token of the next page; `None` when this is the last one.
    pub next_token: Option<String>,
}

/// A policy at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Server-assigned id, stable for the policy's life.
    pub id: String,
    /// The name (from the document; unique per tenant, immutable).
    pub name: String,
    /// The revision: 1 for a new policy, incremented by every change.
    pub revision: u64,
    /// The document as normalised JSON; empty in listings without documents.
    pub document_json: String,
    /// The document's description.
    pub description: String,
    /// Id of the key that wrote this revision (`""` for the operator).
    pub author_key_id: String,
    /// When the policy was created.
    pub created_at: OffsetDateTime,
    /// When this revision was written.
    pub updated_at: OffsetDateTime,
}

/// One entry of a policy's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRevisionInfo {
    /// The revision number.
    pub revision: u64,
    /// Id of the key that wrote it.
    pub author_key_id: String,
    /// When it was written.
    pub created_at: OffsetDateTime,
    /// Hex SHA-256 of the revision's normalised document.
    pub document_sha256: String,
}

/// What a listing of policies returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyQuery {
    /// Paging.
    pub page: PageRequest,
    /// Only names containing this text (case-sensitive); empty for all.
    pub name_filter: String,
    /// Whether each policy carries its document.
    pub include_documents: bool,
}

/// The result of a write that may change nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written<T> {
    /// The resource after the call.
    pub value: T,
    /// True when it did not exist and was created.
    pub created: bool,
    /// True when anything was written (always true when created).
    pub changed: bool,
}

/// A deleted resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deleted {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its last revision (a cluster's last generation).
    pub revision: u64,
}

/// A runtime ruleset as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRuleset {
    /// Server-assigned id; what policies' `runtime.rulesets[].id` refer to.
    pub id: String,
    /// Name, unique per tenant, immutable.
    pub name: String,
    /// Incremented by every change, starting at 1.
    pub revision: u64,
    /// The ruleset document as normalised JSON.
    pub document_json: String,
    /// The document's description.
    pub description: String,
    /// Number of rules.
    pub rule_count: u32,
    /// Id of the key that made the last change.
    pub author_key_id: String,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// When it last changed.
    pub updated_at: OffsetDateTime,
}

/// An attestor as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAttestor {
    /// Server-assigned id.
    pub id: String,
    /// Name, unique per tenant, immutable; what policies' `imageVerification[].attestors` name.
    pub name: String,
    /// Incremented by every change, starting at 1.
    pub revision: u64,
    /// The attestor document as normalised JSON.
    pub document_json: String,
    /// The document's description.
    pub description: String,
    /// The attestor type, e.g. `cosignPublicKey`.
    pub attestor_type: String,
    /// Id of the key that made the last change.
    pub author_key_id: String,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// When it last changed.
    pub updated_at: OffsetDateTime,
}

/// A listing by name, with paging and a substring filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameQuery {
    /// Paging.
    pub page: PageRequest,
    /// Only names containing this text (case-sensitive); empty for all.
    pub name_filter: String,
}

/// The namespaces a new cluster excludes unless told otherwise.
pub const DEFAULT_EXCLUDED_NAMESPACES: [&str; 2] = ["kube-system", "portcullis-system"];

/// Per-cluster settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// What happens when no decision can be had.
    pub failure_mode: FailureMode,
    /// Namespaces whose workloads are allowed without evaluation and never mitigated.
    pub excluded_namespaces: Vec<String>,
    /// Images always exempt: `registry/image[@digest]`.
    pub trusted_images: Vec<String>,
}

impl Default for ClusterSettings {
    fn default() -> ClusterSettings {
        ClusterSettings {
            failure_mode: FailureMode::FailOpen,
            excluded_namespaces: DEFAULT_EXCLUDED_NAMESPACES.iter().map(|s| (*s).to_owned()).collect(),
            trusted_images: Vec::new(),
        }
    }
}

impl ClusterSettings {
    /// The protobuf message.
    pub fn to_proto(&self) -> portcullis_proto::policystore::v1::ClusterSettings {
        portcullis_proto::policystore::v1::ClusterSettings {
            failure_mode: self.failure_mode.to_proto() as i32,
            excluded_namespaces: self.excluded_namespaces.clone(),
            trusted_images: self.trusted_images.clone(),
        }
    }
}

/// A change to cluster settings: `None` fields keep their value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettingsUpdate {
    /// The new failure mode.
    pub failure_mode: Option<FailureMode>,
    /// The new excluded namespaces (each an RFC 1123 label).
    pub excluded_namespaces: Option<Vec<String>>,
    /// The new trusted images (`registry/image[@digest]`, never a tag).
    pub trusted_images: Option<Vec<String>>,
}

/// A registered cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// Server-assigned id.
    pub id: String,
    /// Name, unique per tenant.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Id of the assigned policy.
    pub policy_id: Option<String>,
    /// Name of the assigned policy.
    pub policy_name: Option<String>,
    /// The settings.
    pub settings: ClusterSettings,
    /// When the connector last sent a heartbeat.
    pub last_seen_at: Option<OffsetDateTime>,
    /// The connector version of the last heartbeat.
    pub connector_version: String,
    /// The Kubernetes version of the last heartbeat.
    pub kubernetes_version: String,
    /// When it was registered.
    pub created_at: OffsetDateTime,
    /// When its assignment, settings or keys last changed.
    pub updated_at: OffsetDateTime,
    /// Incremented by every change (assignment, settings, keys); 1 when registered.
    pub generation: u64,
}

/// A cluster to register.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewCluster {
    /// 1-64 characters of `[A-Za-z0-9_.-]`, unique per tenant.
    pub name: String,
    /// Free text, at most 128 characters.
    pub description: String,
    /// The policy to assign.
    pub policy: Option<ResourceRef>,
    /// Initial settings; `None` fields take the defaults.
    pub settings: SettingsUpdate,
    /// Expiry of the connector key; `None` for none.
    pub connector_key_expires_at: Option<OffsetDateTime>,
}

/// A listing of clusters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterQuery {
    /// Paging.
    pub page: PageRequest,
    /// Only names containing this text (case-sensitive); empty for all.
    pub name_filter: String,
    /// Only clusters assigned to this policy.
    pub policy: Option<ResourceRef>,
}

/// A newly registered cluster and its connector key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredCluster {
    /// The cluster.
    pub cluster: Cluster,
    /// Its connector key, with the secret shown this once.
    pub connector_key: IssuedKey,
}

/// What a heartbeat answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatInfo {
    /// The server's time.
    pub server_time: OffsetDateTime,
    /// The assigned policy's id.
    pub policy_id: Option<String>,
    /// Its current revision; 0 when none.
    pub policy_revision: u64,
    /// The cluster's generation.
    pub cluster_generation: u64,
}

/// The result of a connector key rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRotation {
    /// The new key, with the secret shown this once.
    pub new_key: IssuedKey,
    /// When the previous keys stop working.
    pub previous_keys_expire_at: OffsetDateTime,
    /// The previous keys that now expire then.
    pub previous_key_ids: Vec<String>,
}

/// A deleted cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletedCluster {
    /// Its id.
    pub id: String,
    /// The connector keys revoked with it.
    pub revoked_key_ids: Vec<String>,
}

/// What a connector (or admission's cache) reads for a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectivePolicy {
    /// The cluster's id.
    pub cluster_id: String,
    /// The cluster's name.
    pub cluster_name: String,
    /// The assigned policy at its current revision; `None` when none is assigned.
    pub policy: Option<Policy>,
    /// The cluster's settings.
    pub settings: ClusterSettings,
    /// The cluster's generation.
    pub cluster_generation: u64,
}

/// An API key, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Server-assigned id.
    pub id: String,
    /// The tenant.
    pub tenant_id: String,
    /// Free text.
    pub description: String,
    /// The role.
    pub role: Role,
    /// For a connector key, its cluster's id.
    pub cluster_id: Option<String>,
    /// The first characters of the key, to recognise it.
    pub secret_prefix: String,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// When it expires.
    pub expires_at: Option<OffsetDateTime>,
    /// When it was last used (updated at most once a minute).
    pub last_used_at: Option<OffsetDateTime>,
    /// When it was revoked.
    pub revoked_at: Option<OffsetDateTime>,
    /// Id of the key that created it; `None` for the operator or bootstrap.
    pub created_by_key_id: Option<String>,
    /// For a connector key made by rotation, the key it replaced.
    pub rotated_from: Option<String>,
    /// For a rotated-out connector key, when its grace period ends.
    pub grace_ends_at: Option<OffsetDateTime>,
}

impl ApiKey {
    /// When the key stops working on its own: its expiry or the end of its grace period.
    pub fn effective_expiry(&self) -> Option<OffsetDateTime> {
        match (self.expires_at, self.grace_ends_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether the key works at `now`.
    pub fn is_active(&self, now: OffsetDateTime) -> bool {
        self.revoked_at.is_none() && self.effective_expiry().is_none_or(|t| t > now)
    }
}

/// A new key with its secret, which is shown this once.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedKey {
    /// The key.
    pub key: ApiKey,
    /// The whole secret the client presents: `pck_<key id>_<base64url of 32 random bytes>`.
    pub secret: String,
}

impl fmt::Debug for IssuedKey {
    /// Never prints the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedKey")
            .field("key", &self.key)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// A key to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiKey {
    /// The role.
    pub role: Role,
    /// For a connector key (required), its cluster; refused for other roles.
    pub cluster: Option<ResourceRef>,
    /// When it expires; must be in the future.
    pub expires_at: Option<OffsetDateTime>,
    /// Free text, at most 128 characters.
    pub description: String,
}

/// A listing of keys, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiKeyQuery {
    /// Paging.
    pub page: PageRequest,
    /// Only keys of this role.
    pub role: Option<Role>,
    /// Only connector keys of this cluster.
    pub cluster: Option<ResourceRef>,
    /// Whether revoked and expired keys are listed too.
    pub include_inactive: bool,
}

/// What a valid key is: the answer of introspection (the domain's one definition).
pub use portcullis_domain::KeyIdentity;

/// A tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    /// `[a-z0-9-]{1,36}`.
    pub id: String,
    /// Display name, unique.
    pub name: String,
    /// When it was created.
    pub created_at: OffsetDateTime,
}

/// A tenant to create.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewTenant {
    /// The id; `None` makes a random UUID.
    pub id: Option<String>,
    /// Display name, 1-128 characters, unique.
    pub name: String,
    /// Expiry of the first admin key.
    pub admin_key_expires_at: Option<OffsetDateTime>,
}

/// A new tenant and its first admin key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedTenant {
    /// The tenant.
    pub tenant: Tenant,
    /// Its first admin key, with the secret shown this once.
    pub admin_key: IssuedKey,
}

/// An uploaded scan report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanReport {
    /// The native form as JSON.
    NativeJson(Vec<u8>),
    /// The native form, already parsed.
    Native(ScanResult),
    /// A Trivy JSON report (SchemaVersion 2).
    Trivy {
        /// The report's bytes.
        json: Vec<u8>,
        /// The uploader ran the secret scanner.
        secret_scan: bool,
    },
}

/// A scan upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanUpload {
    /// The image digest; for Trivy, taken from the report when `None`; for the native form,
    /// must equal the result's digest when given.
    pub digest: Option<String>,
    /// The image reference, informational.
    pub image: String,
    /// The report.
    pub report: ScanReport,
}

/// The most severe finding having one CVSS metric value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CvssSeverity {
    /// The metric.
    pub metric: CvssMetric,
    /// The value, lower-case: `network`, `low`, ...
    pub value: &'static str,
    /// The most severe finding with it.
    pub max_severity: Severity,
}

/// A stored scan result without its findings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanRecord {
    /// Server-assigned id.
    pub id: String,
    /// The image digest.
    pub digest: String,
    /// The scan type.
    pub scan_type: ScanType,
    /// When the scan ran.
    pub scanned_at: OffsetDateTime,
    /// The scanner.
    pub scanner: String,
    /// Number of findings.
    pub findings: u64,
    /// The most severe finding's severity.
    pub max_severity: Option<Severity>,
    /// Per CVSS metric value present, the most severe finding with it.
    pub cvss: Vec<CvssSeverity>,
    /// The image reference given at upload.
    pub image: String,
    /// When it was stored.
    pub uploaded_at: OffsetDateTime,
    /// Id of the uploading key.
    pub uploader_key_id: String,
    /// Whether it is the newest result of its digest and type.
    pub is_latest: bool,
}

/// A stored scan result with its findings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredScan {
    /// The record.
    pub record: ScanRecord,
    /// The result in the native form.
    pub result: ScanResult,
}

/// A listing of scan results, newest upload first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanQuery {
    /// Paging.
    pub page: PageRequest,
    /// Only this digest.
    pub digest: Option<String>,
    /// Only this scan type.
    pub scan_type: Option<ScanType>,
}

/// The newest summaries of one digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestSummaries {
    /// The digest.
    pub digest: String,
    /// The newest result per scan type that has one.
    pub summaries: Vec<ScanRecord>,
}

/// One administrative change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Server-assigned id (increasing).
    pub id: String,
    /// When the change was committed.
    pub time: OffsetDateTime,
    /// The key that made it; `""` for the operator.
    pub actor_key_id: String,
    /// The actor's role; `None` for the operator.
    pub actor_role: Option<Role>,
    /// `<resource>.<verb>`, e.g. `policy.update`.
    pub action: String,
    /// The resource type, e.g. `policy`.
    pub resource_type: String,
    /// The resource's id.
    pub resource_id: String,
    /// The resource's name.
    pub resource_name: String,
    /// Details as a JSON object; never a secret.
    pub details_json: String,
    /// The W3C trace id of the call, when it had one.
    pub trace_id: String,
}

/// A listing of audit entries, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Paging.
    pub page: PageRequest,
    /// Only entries at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Only entries before this time.
    pub until: Option<OffsetDateTime>,
    /// Only entries by this key.
    pub actor_key_id: Option<String>,
    /// Only entries about this resource type.
    pub resource_type: Option<String>,
    /// Only entries about this resource id.
    pub resource_id: Option<String>,
    /// Only entries with this action.
    pub action: Option<String>,
}
