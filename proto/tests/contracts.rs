//! The contracts as shipped: the descriptor set describes every service, the generated
//! messages round-trip, and the .proto files keep the house rules (every service, rpc,
//! message, field, enum and value commented; enums start at an UNSPECIFIED zero).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::{BTreeMap, BTreeSet};

use prost::Message;
use prost_types::{FileDescriptorProto, FileDescriptorSet};

use portcullis_proto::{FILE_DESCRIPTOR_SET, SERVICE_NAMES, admission, common, continuous, events, policystore};

/// Every service the architecture names, with every rpc it must offer.
const EXPECTED: &[(&str, &[&str])] = &[
    (
        "portcullis.policystore.v1.PolicyService",
        &[
            "CreatePolicy",
            "GetPolicy",
            "ListPolicies",
            "UpdatePolicy",
            "ApplyPolicy",
            "DuplicatePolicy",
            "DeletePolicy",
            "ListPolicyHistory",
            "GetPolicyRevision",
            "GetEffectivePolicy",
        ],
    ),
    (
        "portcullis.policystore.v1.RulesetService",
        &[
            "CreateRuleset",
            "GetRuleset",
            "ListRulesets",
            "UpdateRuleset",
            "ApplyRuleset",
            "DeleteRuleset",
        ],
    ),
    (
        "portcullis.policystore.v1.AttestorService",
        &[
            "CreateAttestor",
            "GetAttestor",
            "ListAttestors",
            "UpdateAttestor",
            "ApplyAttestor",
            "DeleteAttestor",
        ],
    ),
    (
        "portcullis.policystore.v1.ClusterService",
        &[
            "RegisterCluster",
            "GetCluster",
            "ListClusters",
            "AssignPolicy",
            "UpdateClusterSettings",
            "SetRegistryCredentials",
            "GetRegistryCredentials",
            "Heartbeat",
            "RotateConnectorKey",
            "DeleteCluster",
        ],
    ),
    (
        "portcullis.policystore.v1.ScanResultService",
        &[
            "UploadScanResult",
            "GetLatestScanResult",
            "ListScanResults",
            "GetScanSummaries",
        ],
    ),
    (
        "portcullis.policystore.v1.TenantService",
        &["CreateTenant", "GetTenant", "ListTenants", "DeleteTenant"],
    ),
    (
        "portcullis.policystore.v1.AuthService",
        &["CreateApiKey", "ListApiKeys", "RevokeApiKey", "Introspect", "WhoAmI"],
    ),
    ("portcullis.policystore.v1.AuditService", &["ListAuditEntries"]),
    ("portcullis.policystore.v1.OperatorService", &["ListDeadLetters"]),
    ("portcullis.admission.v1.AdmissionService", &["Review", "ReviewStream"]),
    (
        "portcullis.continuous.v1.ContinuousService",
        &[
            "SyncInventory",
            "Commands",
            "ListFindings",
            "GetPod",
            "IssueCommand",
            "ListCommands",
            "PreviewPolicy",
        ],
    ),
    ("portcullis.signature.v1.SignatureService", &["Verify", "ResolveDigest"]),
    (
        "portcullis.telemetry.v1.TelemetryService",
        &[
            "IngestEvents",
            "SearchEvents",
            "ListAlerts",
            "GetAlert",
            "UpdateAlertStatus",
            "ListRiskScores",
            "ReplayPolicy",
        ],
    ),
];

fn descriptor_set() -> FileDescriptorSet {
    FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("descriptor set decodes")
}

/// The Portcullis files of the set (the well-known types it imports left out).
fn portcullis_files(set: &FileDescriptorSet) -> Vec<&FileDescriptorProto> {
    set.file
        .iter()
        .filter(|f| f.package().starts_with("portcullis."))
        .collect()
}

/// Full service name → rpc names, as the descriptor set has them.
fn services(set: &FileDescriptorSet) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for file in portcullis_files(set) {
        for service in &file.service {
            let methods = service.method.iter().map(|m| m.name().to_owned()).collect();
            out.insert(format!("{}.{}", file.package(), service.name()), methods);
        }
    }
    out
}

#[test]
fn descriptor_set_holds_every_service_and_rpc() {
    let found = services(&descriptor_set());
    let expected: BTreeMap<String, Vec<String>> = EXPECTED
        .iter()
        .map(|(name, rpcs)| ((*name).to_owned(), rpcs.iter().map(|r| (*r).to_owned()).collect()))
        .collect();
    assert_eq!(found, expected);
    println!(
        "{} services, {} rpcs",
        found.len(),
        found.values().map(Vec::len).sum::<usize>()
    );
}

#[test]
fn service_names_match_the_descriptor_set() {
    let found: BTreeSet<String> = services(&descriptor_set()).into_keys().collect();
    let listed: BTreeSet<String> = SERVICE_NAMES.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(listed.len(), SERVICE_NAMES.len(), "SERVICE_NAMES has duplicates");
    assert_eq!(listed, found);
}

#[test]
fn descriptor_set_holds_every_package_and_the_timestamp_type() {
    let set = descriptor_set();
    let packages: BTreeSet<&str> = portcullis_files(&set).iter().map(|f| f.package()).collect();
    let expected: BTreeSet<&str> = [
        "portcullis.common.v1",
        "portcullis.policystore.v1",
        "portcullis.admission.v1",
        "portcullis.continuous.v1",
        "portcullis.signature.v1",
        "portcullis.telemetry.v1",
        "portcullis.events.v1",
    ]
    .into_iter()
    .collect();
    assert_eq!(packages, expected);
    // Reflection clients resolve imports from the same set, so the imports must be in it.
    assert!(
        set.file.iter().any(|f| f.name() == "google/protobuf/timestamp.proto"),
        "well-known types missing from the descriptor set"
    );
}

#[test]
fn policy_round_trips_through_the_wire_format() {
    let policy = policystore::v1::Policy {
        id: "pol-1".into(),
        name: "prod.strict".into(),
        revision: 7,
        document_json: r#"{"name":"prod.strict","default":{"rules":[]}}"#.into(),
        description: "Production clusters".into(),
        author_key_id: "key-9".into(),
        created_at: Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 5,
        }),
        updated_at: Some(prost_types::Timestamp {
            seconds: 1_700_000_100,
            nanos: 0,
        }),
    };
    let bytes = policy.encode_to_vec();
    let back = policystore::v1::Policy::decode(bytes.as_slice()).unwrap();
    assert_eq!(back, policy);
}

#[test]
fn event_envelope_round_trips_with_a_nested_decision() {
    let violation = common::v1::Violation {
        rule_type: "containerSecurityContext".into(),
        properties: [("privileged".to_owned(), "true".to_owned())].into(),
        action: common::v1::Action::Block.into(),
        containers: vec!["app".into(), "sidecar".into()],
        message: "containerSecurityContext violates rule with properties { privileged:true } \
                  in container(s) \"app\", \"sidecar\" (block)."
            .into(),
        ..Default::default()
    };
    let decision = admission::v1::Decision {
        uid: "705ab4f5-6393-11e8-b7cc-42010a800002".into(),
        allowed: false,
        basis: admission::v1::DecisionBasis::Evaluated.into(),
        policy_id: "pol-1".into(),
        policy_revision: 3,
        violations: vec![violation],
        timings: Some(admission::v1::StageTimings {
            parse_us: 7,
            evaluate_us: 2,
            total_us: 12,
            ..Default::default()
        }),
        ..Default::default()
    };
    let envelope = events::v1::EventEnvelope {
        event_id: "0190d6c2-0000-7000-8000-000000000001".into(),
        tenant_id: "3f2a-acme".into(),
        topic: "admission.decision".into(),
        payload: Some(events::v1::event_envelope::Payload::AdmissionDecision(
            events::v1::AdmissionDecision {
                summary: Some(events::v1::AdmissionDecisionSummary {
                    uid: decision.uid.clone(),
                    allowed: false,
                    ..Default::default()
                }),
                decision: Some(decision),
                reviewed_pod_json: Default::default(),
            },
        )),
        ..Default::default()
    };
    let bytes = envelope.encode_to_vec();
    let back = events::v1::EventEnvelope::decode(bytes.as_slice()).unwrap();
    assert_eq!(back, envelope);
    let Some(events::v1::event_envelope::Payload::AdmissionDecision(d)) = back.payload else {
        panic!("payload case lost");
    };
    let violation = &d.decision.unwrap().violations[0];
    assert_eq!(violation.action(), common::v1::Action::Block);
    assert_eq!(violation.properties["privileged"], "true");
}

#[test]
fn review_request_bytes_survive_decoding() {
    let body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#;
    let request = admission::v1::ReviewRequest {
        cluster: Some(common::v1::ResourceRef {
            r#ref: Some(common::v1::resource_ref::Ref::Name("prod-eu".into())),
        }),
        admission_review_json: prost::bytes::Bytes::from_static(body),
        request_id: "r1".into(),
    };
    let back = admission::v1::ReviewRequest::decode(request.encode_to_vec().as_slice()).unwrap();
    assert_eq!(back.admission_review_json.as_ref(), body.as_slice());
    assert_eq!(back, request);
}

#[test]
fn unknown_enum_values_decode_without_error() {
    // A newer producer may send enum values this build does not know; they must decode and
    // read as the UNSPECIFIED default rather than fail.
    let command = continuous::v1::MitigationCommand {
        command_id: "c1".into(),
        r#type: 99,
        ..Default::default()
    };
    let back = continuous::v1::MitigationCommand::decode(command.encode_to_vec().as_slice()).unwrap();
    assert_eq!(back.r#type, 99);
    assert_eq!(back.r#type(), continuous::v1::CommandType::Unspecified);
}

// --- house rules of the .proto files, checked on the descriptor set's source info ---

/// Field numbers of descriptor.proto, for source-code-info paths.
const FILE_MESSAGE: i32 = 4;
const FILE_ENUM: i32 = 5;
const FILE_SERVICE: i32 = 6;
const MESSAGE_FIELD: i32 = 2;
const MESSAGE_NESTED: i32 = 3;
const MESSAGE_ENUM: i32 = 4;
const MESSAGE_ONEOF: i32 = 8;
const ENUM_VALUE: i32 = 2;
const SERVICE_METHOD: i32 = 2;

/// Every element of a file that must carry a comment: (path, human name).
fn commentable(file: &FileDescriptorProto) -> Vec<(Vec<i32>, String)> {
    fn message(m: &prost_types::DescriptorProto, path: Vec<i32>, name: String, out: &mut Vec<(Vec<i32>, String)>) {
        out.push((path.clone(), name.clone()));
        for (i, f) in m.field.iter().enumerate() {
            out.push((cat(&path, &[MESSAGE_FIELD, idx(i)]), format!("{name}.{}", f.name())));
        }
        for (i, o) in m.oneof_decl.iter().enumerate() {
            // proto3 `optional` fields are synthetic oneofs that the source cannot comment.
            if !o.name().starts_with('_') {
                out.push((cat(&path, &[MESSAGE_ONEOF, idx(i)]), format!("{name}.{}", o.name())));
            }
        }
        for (i, n) in m.nested_type.iter().enumerate() {
            if !n.options.as_ref().is_some_and(|o| o.map_entry()) {
                let p = cat(&path, &[MESSAGE_NESTED, idx(i)]);
                message(n, p, format!("{name}.{}", n.name()), out);
            }
        }
        for (i, e) in m.enum_type.iter().enumerate() {
            let p = cat(&path, &[MESSAGE_ENUM, idx(i)]);
            enumeration(e, p, format!("{name}.{}", e.name()), out);
        }
    }
    fn enumeration(
        e: &prost_types::EnumDescriptorProto,
        path: Vec<i32>,
        name: String,
        out: &mut Vec<(Vec<i32>, String)>,
    ) {
        out.push((path.clone(), name.clone()));
        for (i, v) in e.value.iter().enumerate() {
            out.push((cat(&path, &[ENUM_VALUE, idx(i)]), format!("{name}.{}", v.name())));
        }
    }
    let mut out = Vec::new();
    for (i, m) in file.message_type.iter().enumerate() {
        message(m, vec![FILE_MESSAGE, idx(i)], m.name().to_owned(), &mut out);
    }
    for (i, e) in file.enum_type.iter().enumerate() {
        enumeration(e, vec![FILE_ENUM, idx(i)], e.name().to_owned(), &mut out);
    }
    for (i, s) in file.service.iter().enumerate() {
        out.push((vec![FILE_SERVICE, idx(i)], s.name().to_owned()));
        for (j, m) in s.method.iter().enumerate() {
            out.push((
                vec![FILE_SERVICE, idx(i), SERVICE_METHOD, idx(j)],
                format!("{}.{}", s.name(), m.name()),
            ));
        }
    }
    out
}

fn cat(a: &[i32], b: &[i32]) -> Vec<i32> {
    a.iter().chain(b).copied().collect()
}

fn idx(i: usize) -> i32 {
    i32::try_from(i).unwrap()
}

#[test]
fn every_service_rpc_message_field_and_enum_value_is_commented() {
    let set = descriptor_set();
    let mut missing = Vec::new();
    let mut checked = 0usize;
    for file in portcullis_files(&set) {
        let info = file.source_code_info.as_ref().expect("source info kept");
        let comments: BTreeMap<&[i32], &str> = info
            .location
            .iter()
            .map(|l| (l.path.as_slice(), l.leading_comments()))
            .collect();
        for (path, name) in commentable(file) {
            checked += 1;
            let text = comments.get(path.as_slice()).copied().unwrap_or("");
            if text.trim().is_empty() {
                missing.push(format!("{}: {name}", file.name()));
            }
        }
    }
    assert!(checked > 500, "only {checked} elements checked: the walk is broken");
    assert!(missing.is_empty(), "uncommented: {missing:#?}");
}

/// `CommandType` → `COMMAND_TYPE`.
fn screaming_snake(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

#[test]
fn every_enum_starts_with_its_unspecified_zero_and_prefixes_its_values() {
    let set = descriptor_set();
    let mut enums = Vec::new();
    for file in portcullis_files(&set) {
        enums.extend(file.enum_type.iter());
        for m in &file.message_type {
            enums.extend(m.enum_type.iter());
        }
    }
    assert!(enums.len() >= 20, "only {} enums found", enums.len());
    for e in enums {
        let prefix = screaming_snake(e.name());
        let first = &e.value[0];
        assert_eq!(first.number(), 0, "{}: first value is not 0", e.name());
        assert_eq!(first.name(), format!("{prefix}_UNSPECIFIED"), "{}", e.name());
        for v in &e.value {
            assert!(
                v.name().starts_with(&format!("{prefix}_")),
                "{}: value {} lacks the {prefix}_ prefix",
                e.name(),
                v.name()
            );
        }
    }
}

#[test]
fn every_event_payload_case_names_its_topic() {
    // The envelope's payload cases are the topics of ARCHITECTURE.md, one each.
    let set = descriptor_set();
    let envelope = portcullis_files(&set)
        .into_iter()
        .filter(|f| f.package() == "portcullis.events.v1")
        .flat_map(|f| f.message_type.iter())
        .find(|m| m.name() == "EventEnvelope")
        .expect("EventEnvelope");
    let cases: BTreeSet<&str> = envelope
        .field
        .iter()
        .filter(|f| f.oneof_index.is_some())
        .map(|f| f.name())
        .collect();
    let expected: BTreeSet<&str> = [
        "policy_changed",
        "cluster_changed",
        "attestor_changed",
        "ruleset_changed",
        "api_key_revoked",
        "scan_result_stored",
        "admission_decision",
        "continuous_finding",
        "continuous_mitigation",
        "signature_verdict",
        "runtime_mitigation",
    ]
    .into_iter()
    .collect();
    assert_eq!(cases, expected);
}
