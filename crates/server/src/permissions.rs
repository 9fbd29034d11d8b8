//! Who may call what: every gRPC method has one [`Access`] class ([`METHODS`]), and
//! [`GRANTS`] says which callers each class admits. The authentication layer enforces both
//! before a handler runs; a method missing from the table is refused.
//!
//! | access          | admin | editor | viewer | connector     | operator | service |
//! |-----------------|-------|--------|--------|---------------|----------|---------|
//! | `Public`        | (no credential needed: health, reflection)                       |
//! | `Identity`      | yes   | yes    | yes    | yes           | yes      | yes     |
//! | `Read`          | yes   | yes    | yes    | no            | no       | yes     |
//! | `Write`         | yes   | yes    | no     | no            | no       | no      |
//! | `Admin`         | yes   | no     | no     | no            | no       | no      |
//! | `ClusterRead`   | yes   | yes    | yes    | own cluster   | no       | yes     |
//! | `ClusterReport` | no    | no     | no     | own cluster   | no       | yes     |
//! | `Operator`      | no    | no     | no     | no            | yes      | no      |
//! | `Service`       | no    | no     | no     | no            | no       | yes     |
//!
//! "Own cluster" is checked by the handler, which knows the request's cluster. Connector
//! keys do not upload scan results: scans come from CI pipelines (editor keys), and a
//! leaked connector key should not be able to change what admission believes about images
//! of every cluster of the tenant. The service credential reads any tenant's data and makes
//! the connector-facing calls on a connector's behalf, but writes nothing.

use std::collections::HashMap;

use crate::auth::{Principal, Role};

/// What a method needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// No credential: health checking and reflection.
    Public,
    /// Any valid credential (`WhoAmI`).
    Identity,
    /// Reads of tenant data.
    Read,
    /// Writes of policies, rulesets, attestors, clusters and scan results.
    Write,
    /// API keys (connector key rotation included), registry credentials and the audit log.
    Admin,
    /// A cluster's effective policy: tenant readers, its connector, services.
    ClusterRead,
    /// What a connector reports for its cluster (heartbeats).
    ClusterReport,
    /// Tenant management and the operator's maintenance (dead letters).
    Operator,
    /// Service-to-service calls only (introspection, registry credentials).
    Service,
}

/// Which callers an access class admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grants {
    /// Admin keys.
    pub admin: bool,
    /// Editor keys.
    pub editor: bool,
    /// Viewer keys.
    pub viewer: bool,
    /// Connector keys (for their own cluster; the handler checks which).
    pub connector: bool,
    /// The operator key.
    pub operator: bool,
    /// The service credential.
    pub service: bool,
}

const fn grants(admin: bool, editor: bool, viewer: bool, connector: bool, operator: bool, service: bool) -> Grants {
    Grants {
        admin,
        editor,
        viewer,
        connector,
        operator,
        service,
    }
}

/// The one table of role permissions (see the module documentation).
pub const GRANTS: &[(Access, Grants)] = &[
    //                               admin  editor viewer connector operator service
    (Access::Identity, grants(true, true, true, true, true, true)),
    (Access::Read, grants(true, true, true, false, false, true)),
    (Access::Write, grants(true, true, false, false, false, false)),
    (Access::Admin, grants(true, false, false, false, false, false)),
    (Access::ClusterRead, grants(true, true, true, true, false, true)),
    (Access::ClusterReport, grants(false, false, false, true, false, true)),
    (Access::Operator, grants(false, false, false, false, true, false)),
    (Access::Service, grants(false, false, false, false, false, true)),
];

/// Whether `principal` may use a method of class `access` (`Public` admits everyone).
pub fn permits(access: Access, principal: &Principal) -> bool {
    if access == Access::Public {
        return true;
    }
    let Some((_, g)) = GRANTS.iter().find(|(a, _)| *a == access) else {
        return false;
    };
    match principal {
        Principal::Key(key) => match key.role {
            Role::Admin => g.admin,
            Role::Editor => g.editor,
            Role::Viewer => g.viewer,
            Role::Connector => g.connector,
        },
        Principal::Operator => g.operator,
        Principal::Service { .. } => g.service,
    }
}

/// The path prefix of every policy store method.
pub const POLICY_STORE_PACKAGE: &str = "/portcullis.policystore.v1.";
const PS: &str = POLICY_STORE_PACKAGE;

/// The access class of every policy store method, by `Service/Method`.
pub const POLICY_STORE_METHODS: &[(&str, Access)] = &[
    ("PolicyService/CreatePolicy", Access::Write),
    ("PolicyService/GetPolicy", Access::Read),
    ("PolicyService/ListPolicies", Access::Read),
    ("PolicyService/UpdatePolicy", Access::Write),
    ("PolicyService/ApplyPolicy", Access::Write),
    ("PolicyService/DuplicatePolicy", Access::Write),
    ("PolicyService/DeletePolicy", Access::Write),
    ("PolicyService/ListPolicyHistory", Access::Read),
    ("PolicyService/GetPolicyRevision", Access::Read),
    ("PolicyService/GetEffectivePolicy", Access::ClusterRead),
    ("RulesetService/CreateRuleset", Access::Write),
    ("RulesetService/GetRuleset", Access::Read),
    ("RulesetService/ListRulesets", Access::Read),
    ("RulesetService/UpdateRuleset", Access::Write),
    ("RulesetService/ApplyRuleset", Access::Write),
    ("RulesetService/DeleteRuleset", Access::Write),
    ("AttestorService/CreateAttestor", Access::Write),
    ("AttestorService/GetAttestor", Access::Read),
    ("AttestorService/ListAttestors", Access::Read),
    ("AttestorService/UpdateAttestor", Access::Write),
    ("AttestorService/ApplyAttestor", Access::Write),
    ("AttestorService/DeleteAttestor", Access::Write),
    ("ClusterService/RegisterCluster", Access::Write),
    ("ClusterService/GetCluster", Access::Read),
    ("ClusterService/ListClusters", Access::Read),
    ("ClusterService/AssignPolicy", Access::Write),
    ("ClusterService/UpdateClusterSettings", Access::Write),
    ("ClusterService/SetRegistryCredentials", Access::Admin),
    ("ClusterService/GetRegistryCredentials", Access::Service),
    ("ClusterService/Heartbeat", Access::ClusterReport),
    // Key management: the caller receives the new secret, and a grace period of 0 cuts the
    // cluster's connector off at once.
    ("ClusterService/RotateConnectorKey", Access::Admin),
    ("ClusterService/DeleteCluster", Access::Write),
    ("ScanResultService/UploadScanResult", Access::Write),
    ("ScanResultService/GetLatestScanResult", Access::Read),
    ("ScanResultService/ListScanResults", Access::Read),
    ("ScanResultService/GetScanSummaries", Access::Read),
    ("TenantService/CreateTenant", Access::Operator),
    ("TenantService/GetTenant", Access::Operator),
    ("TenantService/ListTenants", Access::Operator),
    ("TenantService/DeleteTenant", Access::Operator),
    ("OperatorService/ListDeadLetters", Access::Operator),
    ("AuthService/CreateApiKey", Access::Admin),
    ("AuthService/ListApiKeys", Access::Admin),
    ("AuthService/RevokeApiKey", Access::Admin),
    ("AuthService/Introspect", Access::Service),
    ("AuthService/WhoAmI", Access::Identity),
    ("AuditService/ListAuditEntries", Access::Admin),
];

const ADM: &str = "/portcullis.admission.v1.";

/// The access class of every admission method: connectors (for their own cluster, checked by
/// the handler) and the service credential; people's keys do not make admission decisions.
pub const ADMISSION_METHODS: &[(&str, Access)] = &[
    ("AdmissionService/Review", Access::ClusterReport),
    ("AdmissionService/ReviewStream", Access::ClusterReport),
];

const SIG: &str = "/portcullis.signature.v1.";

/// The signature service's methods: tenant readers, a connector for its own cluster (the
/// handler checks which), and the service credential (admission).
pub const SIGNATURE_METHODS: &[(&str, Access)] = &[
    ("SignatureService/Verify", Access::ClusterRead),
    ("SignatureService/ResolveDigest", Access::ClusterRead),
];

/// The path prefix of every continuous scanning method.
pub const CONTINUOUS_PACKAGE: &str = "/portcullis.continuous.v1.";

/// The continuous scanning service's methods: the inventory and command streams are a
/// connector's (own cluster, checked by the handler) or the service credential's; findings,
/// pods and commands are read by tenant readers and services (telemetry reads pods); people
/// with write access issue commands and preview drafts.
pub const CONTINUOUS_METHODS: &[(&str, Access)] = &[
    ("ContinuousService/SyncInventory", Access::ClusterReport),
    ("ContinuousService/Commands", Access::ClusterReport),
    ("ContinuousService/ListFindings", Access::Read),
    ("ContinuousService/GetPod", Access::Read),
    ("ContinuousService/IssueCommand", Access::Write),
    ("ContinuousService/ListCommands", Access::Read),
    ("ContinuousService/PreviewPolicy", Access::Write),
];

/// The path prefix of every telemetry method.
pub const TELEMETRY_PACKAGE: &str = "/portcullis.telemetry.v1.";

/// The telemetry service's methods: runtime events are ingested by a connector (own
/// cluster, checked by the handler) or the service credential; events, alerts and risk
/// scores are read by tenant readers; people with write access change an alert's status and
/// replay a draft policy over the recorded admissions.
pub const TELEMETRY_METHODS: &[(&str, Access)] = &[
    ("TelemetryService/IngestEvents", Access::ClusterReport),
    ("TelemetryService/SearchEvents", Access::Read),
    ("TelemetryService/ListAlerts", Access::Read),
    ("TelemetryService/GetAlert", Access::Read),
    ("TelemetryService/UpdateAlertStatus", Access::Write),
    ("TelemetryService/ListRiskScores", Access::Read),
    ("TelemetryService/ReplayPolicy", Access::Write),
];

/// gRPC services every caller may use without a credential.
const PUBLIC_SERVICES: &[&str] = &[
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// Method paths (`/package.Service/Method`) to access classes.
#[derive(Debug, Clone, Default)]
pub struct PermissionTable {
    methods: HashMap<String, Access>,
}

impl PermissionTable {
    /// The table of every service built so far (the policy store's and admission's methods).
    pub fn standard() -> PermissionTable {
        PermissionTable::default()
            .with(PS, POLICY_STORE_METHODS)
            .with(ADM, ADMISSION_METHODS)
            .with(SIG, SIGNATURE_METHODS)
            .with(CONTINUOUS_PACKAGE, CONTINUOUS_METHODS)
            .with(TELEMETRY_PACKAGE, TELEMETRY_METHODS)
    }

    /// Adds rows `Service/Method` under the package prefix `/package.` (a later row for the
    /// same method replaces the earlier one).
    #[must_use]
    pub fn with(mut self, package_prefix: &str, rows: &[(&str, Access)]) -> PermissionTable {
        for (method, access) in rows {
            self.methods.insert(format!("{package_prefix}{method}"), *access);
        }
        self
    }

    /// The access class of a method path; `None` for a method the table does not know.
    pub fn access(&self, path: &str) -> Option<Access> {
        if PUBLIC_SERVICES.iter().any(|p| path.starts_with(p)) {
            return Some(Access::Public);
        }
        self.methods.get(path).copied()
    }

    /// Every method path in the table.
    pub fn methods(&self) -> impl Iterator<Item = (&str, Access)> {
        self.methods.iter().map(|(k, v)| (k.as_str(), *v))
    }
}
