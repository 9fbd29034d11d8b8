//! Portcullis contracts: the Rust generated from the `.proto` files of this crate.
//!
//! One module per protobuf package, `portcullis.<service>.v1` becoming
//! `portcullis_proto::<service>::v1`, each with its messages, enums, and for services a
//! `<name>_client` and a `<name>_server` module. Policy, ruleset and attestor documents travel
//! as JSON text, so that the engine's validation stays the one definition of a valid
//! document. [`FILE_DESCRIPTOR_SET`] describes every file, for gRPC server reflection.

pub mod codec;

/// Wraps one generated package in a module. The generated code is held to the workspace
/// lints like any other: the `.proto` comments become its docs (so an uncommented message or
/// field fails `missing_docs`), and tonic already allows what its stubs need.
macro_rules! proto_package {
    ($(#[$doc:meta])* $name:ident => $package:literal) => {
        $(#[$doc])*
        pub mod $name {
            /// Version 1 of the package.
            pub mod v1 {
                tonic::include_proto!($package);
            }
        }
    };
}

proto_package!(
    /// Shared types: paging, references, the policy model's enums, violations, scan summaries.
    common => "portcullis.common.v1"
);
proto_package!(
    /// The policy store: policies, rulesets, attestors, clusters, scan results, tenants, API
    /// keys, the audit log and the operator's dead letters.
    policystore => "portcullis.policystore.v1"
);
proto_package!(
    /// Admission decisions for cluster connectors.
    admission => "portcullis.admission.v1"
);
proto_package!(
    /// Continuous compliance: inventories, findings and mitigation commands.
    continuous => "portcullis.continuous.v1"
);
proto_package!(
    /// Image signature verification and digest resolution.
    signature => "portcullis.signature.v1"
);
proto_package!(
    /// Runtime event ingest, security event search, alerts and risk scores.
    telemetry => "portcullis.telemetry.v1"
);
proto_package!(
    /// The bus event envelope and its payloads.
    events => "portcullis.events.v1"
);

/// The encoded `google.protobuf.FileDescriptorSet` of every Portcullis `.proto` file (and
/// the well-known types they import), for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/portcullis_descriptor.bin"));

/// The fully qualified name of every gRPC service defined here, e.g.
/// `portcullis.policystore.v1.PolicyService`, for health checking and reflection.
pub const SERVICE_NAMES: &[&str] = &[
    policystore::v1::policy_service_server::SERVICE_NAME,
    policystore::v1::ruleset_service_server::SERVICE_NAME,
    policystore::v1::attestor_service_server::SERVICE_NAME,
    policystore::v1::cluster_service_server::SERVICE_NAME,
    policystore::v1::scan_result_service_server::SERVICE_NAME,
    policystore::v1::tenant_service_server::SERVICE_NAME,
    policystore::v1::auth_service_server::SERVICE_NAME,
    policystore::v1::audit_service_server::SERVICE_NAME,
    policystore::v1::operator_service_server::SERVICE_NAME,
    admission::v1::admission_service_server::SERVICE_NAME,
    continuous::v1::continuous_service_server::SERVICE_NAME,
    signature::v1::signature_service_server::SERVICE_NAME,
    telemetry::v1::telemetry_service_server::SERVICE_NAME,
];
