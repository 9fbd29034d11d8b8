//! Property tests: parsing and evaluation never panic, whatever the input.
//!
//! - `parse_document` on arbitrary bytes, on random JSON trees built from Kubernetes field
//!   names with values of random types, and on well-shaped objects, reviews and Lists whose
//!   fields are randomly of the wrong type;
//! - every subject parsed is evaluated (`evaluate` and `evaluate_running`) by a policy that
//!   enables every rule type, preset and operator, podSecurityStandard at both levels and
//!   signature rules (`fuzz/broad-policy.json`, shared with the fuzz targets), in an offline
//!   context and in one with scan results, digests, verdicts, exclusions and fail-closed;
//! - `PolicyDocument::parse` + `validate` on arbitrary text and on mutated valid policies.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::HashMap;
use std::sync::OnceLock;

use portcullis_engine::evaluate::{
    CompiledPolicy, DigestMap, EvalContext, FailureMode, Signatures, TrustedImage, Verdict, VerdictMap,
};
use portcullis_engine::input::parse_document;
use portcullis_engine::policy::{Action, PolicyDocument, validate};
use portcullis_engine::scan::{MemoryScanStore, ScanResult};
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::macros::datetime;

const NOW: OffsetDateTime = datetime!(2025-06-01 12:00 UTC);
const DIGEST_A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const DIGEST_B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

/// The broad policy, shared with the fuzz targets.
const BROAD_POLICY: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/broad-policy.json"));
/// The example policy shipped with the CLI (YAML).
const EXAMPLE_POLICY: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/policy.yaml"));

fn policy() -> &'static CompiledPolicy {
    static POLICY: OnceLock<CompiledPolicy> = OnceLock::new();
    POLICY.get_or_init(|| CompiledPolicy::from_text(BROAD_POLICY).expect("the broad policy is valid"))
}

/// Everything a context borrows, built once.
struct World {
    scans: MemoryScanStore,
    digests: DigestMap,
    verdicts: VerdictMap,
    excluded: Vec<String>,
    trusted: Vec<TrustedImage>,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let mut scans = MemoryScanStore::new();
        let results = [
            json!({"digest": DIGEST_A, "scanType": "vulnerability", "scannedAt": "2025-05-30T00:00:00Z", "scanner": "trivy",
                   "findings": [
                       {"id": "CVE-1", "severity": "critical", "cvssV3Vector": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"},
                       {"id": "CVE-2", "severity": "low", "cvssV3Vector": "CVSS:3.0/AV:L/AC:H/PR:L/UI:R/S:C/C:L/I:N/A:L"},
                       {"id": "CVE-3", "severity": "unknown", "cvssV3Vector": "not a vector"},
                       {"id": "CVE-4", "severity": "medium"}]}),
            json!({"digest": DIGEST_A, "scanType": "malware", "scannedAt": "2025-01-01T00:00:00Z", "scanner": "x",
                   "findings": [{"id": "EICAR", "severity": "high"}]}),
            json!({"digest": DIGEST_A, "scanType": "secret", "scannedAt": "2025-05-31T00:00:00Z", "scanner": "trivy"}),
            json!({"digest": DIGEST_B, "scanType": "vulnerability", "scannedAt": "2020-01-01T00:00:00Z", "scanner": "trivy"}),
        ];
        for r in results {
            scans.insert(&ScanResult::parse_native(r.to_string().as_bytes()).unwrap());
        }
        let digests = DigestMap(
            IMAGES
                .iter()
                .enumerate()
                .map(|(i, image)| ((*image).to_owned(), if i % 2 == 0 { DIGEST_A } else { DIGEST_B }.to_owned()))
                .collect(),
        );
        let mut verdicts = HashMap::new();
        verdicts.insert(DIGEST_A.to_owned(), HashMap::from([("release-signer".to_owned(), true), ("qa-signer".to_owned(), false)]));
        verdicts.insert("nginx".to_owned(), HashMap::from([("qa-signer".to_owned(), true)]));
        World {
            scans,
            digests,
            verdicts: VerdictMap(verdicts),
            excluded: vec!["kube-system".to_owned(), "excluded".to_owned()],
            trusted: vec![
                TrustedImage::parse("registry.example.com/platform/agent").unwrap(),
                TrustedImage::parse(&format!("docker.io/library/busybox@{DIGEST_B}")).unwrap(),
            ],
        }
    })
}

/// Parses a document and evaluates every subject in every way: nothing may panic. When
/// evaluation fails open, a block is always explained by a blocking violation.
fn parse_and_evaluate(bytes: &[u8]) {
    let Ok(subjects) = parse_document(bytes) else { return };
    for subject in &subjects {
        for ctx in [
            EvalContext::offline(NOW),
            rich(FailureMode::FailOpen),
            rich(FailureMode::FailClosed),
        ] {
            let decision = policy().evaluate(subject, &ctx);
            if ctx.failure_mode == FailureMode::FailOpen {
                let blocking = decision.violations.iter().any(|v| v.action == Action::Block);
                assert_eq!(decision.verdict == Verdict::Block, blocking, "{decision:?}");
            }
            let _ = decision.status_message();
            let _ = policy().evaluate_running(subject, &ctx);
        }
    }
}

/// A context with scan results, digests, verdicts, exclusions and trusted images.
fn rich(failure_mode: FailureMode) -> EvalContext<'static> {
    let w = world();
    EvalContext {
        now: NOW,
        scans: &w.scans,
        digests: &w.digests,
        signatures: Signatures::Stage(&w.verdicts),
        excluded_namespaces: &w.excluded,
        trusted_images: &w.trusted,
        failure_mode,
    }
}

// ---------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------

/// Field names the parser and the evaluator look at, and a few they do not.
#[rustfmt::skip]
const KEYS: &[&str] = &[
    "apiVersion", "kind", "metadata", "name", "generateName", "namespace", "uid", "labels", "annotations",
    "deletionTimestamp", "ownerReferences", "controller", "spec", "template", "jobTemplate", "containers",
    "initContainers", "ephemeralContainers", "image", "securityContext", "capabilities", "add", "drop",
    "privileged", "allowPrivilegeEscalation", "runAsNonRoot", "runAsUser", "readOnlyRootFilesystem", "procMount",
    "seLinuxOptions", "seccompProfile", "appArmorProfile", "localhostProfile", "type", "user", "role", "level",
    "windowsOptions", "hostProcess", "sysctls", "value", "hostNetwork", "hostPID", "hostIPC", "hostUsers",
    "volumes", "hostPath", "path", "configMap", "os", "ports", "hostPort", "containerPort", "livenessProbe",
    "readinessProbe", "startupProbe", "httpGet", "tcpSocket", "host", "lifecycle", "postStart", "preStop",
    "status", "containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses", "imageID", "request",
    "object", "oldObject", "operation", "resource", "subResource", "group", "version", "dryRun", "items",
    "requestKind", "unknownField",
];

/// String values with meaning somewhere, and odd ones.
#[rustfmt::skip]
const STRINGS: &[&str] = &[
    "", "v1", "apps/v1", "batch/v1", "admission.k8s.io/v1", "admission.k8s.io/v1beta1", "Pod", "Deployment",
    "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "CronJob", "ReplicationController", "List", "PodList",
    "AdmissionReview", "ConfigMap", "PodExecOptions", "apps", "batch", "CREATE", "UPDATE", "DELETE", "CONNECT",
    "pods", "exec", "attach", "portforward", "ephemeralcontainers", "status", "ALL", "NET_RAW", "SYS_ADMIN",
    "NET_BIND_SERVICE", "CAP_CHOWN", "windows", "linux", "RuntimeDefault", "Localhost", "Unconfined",
    "kernel.shm_rmid_forced", "net.core.somaxconn", "Default", "Unmasked", "kube-system", "dev", "ops", "default",
    "2024-01-01T00:00:00Z", "container_t", "spc_t", "root", "::", "/", "@", ":", "sha256:", "é", "\u{0}",
];

/// Image references: valid, odd and invalid ones.
const IMAGES: &[&str] = &[
    "nginx",
    "nginx:1.25",
    "docker.io/library/nginx:latest",
    "index.docker.io/library/busybox",
    "busybox@sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
    "registry.example.com/platform/agent:3",
    "registry.example.com/sandbox/app:1@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "registry.example.com/team/app",
    "untrusted.example.com/x:latest",
    "localhost:5000/a/b/c:dev",
    "Upper.Case/Repo:1",
    "quay.io/exempt/thing:2",
    "[::1]:5000/x:y",
    "foo.local/bar",
    "",
    ":",
    "UPPER",
    "a//b",
    "x:y:z",
    "nginx@sha256:short",
    "nginx@",
    "-dash",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => proptest::sample::select(KEYS).prop_map(str::to_owned),
        1 => "[a-zA-Z]{0,8}",
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        prop_oneof![Just(0i64), Just(1), Just(-1), Just(65536), Just(i64::MAX)].prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        proptest::sample::select(STRINGS).prop_map(Value::from),
        proptest::sample::select(IMAGES).prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ]
}

/// Random JSON trees over the Kubernetes vocabulary.
fn tree() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(6, 96, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::vec((key(), inner), 0..7).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Small random trees, to put in place of a right value.
fn small_tree() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            proptest::collection::vec((key(), inner), 0..3).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// `right` most of the time, else anything.
fn mostly(right: impl Strategy<Value = Value> + 'static) -> BoxedStrategy<Value> {
    prop_oneof![40 => right, 1 => small_tree()].boxed()
}

fn maybe_bool() -> BoxedStrategy<Value> {
    mostly(prop_oneof![Just(Value::Null), any::<bool>().prop_map(Value::Bool)])
}

/// An object with some of the given fields (each present or not).
fn some_fields(fields: Vec<(&'static str, BoxedStrategy<Value>)>) -> BoxedStrategy<Value> {
    let n = fields.len();
    let (names, values): (Vec<_>, Vec<_>) = fields.into_iter().unzip();
    (values, proptest::collection::vec(any::<bool>(), n))
        .prop_map(move |(values, keep)| {
            let mut m = Map::new();
            for ((name, value), keep) in names.iter().zip(values).zip(keep) {
                if keep {
                    m.insert((*name).to_owned(), value);
                }
            }
            Value::Object(m)
        })
        .boxed()
}

fn strings_from(choices: &'static [&'static str]) -> BoxedStrategy<Value> {
    mostly(proptest::collection::vec(proptest::sample::select(choices), 0..4).prop_map(|v| json!(v)))
}

fn se_linux() -> BoxedStrategy<Value> {
    some_fields(vec![
        (
            "type",
            mostly(
                proptest::sample::select(&["", "container_t", "spc_t", "container_init_t"][..]).prop_map(Value::from),
            ),
        ),
        (
            "user",
            mostly(proptest::sample::select(&["", "root"][..]).prop_map(Value::from)),
        ),
        (
            "role",
            mostly(proptest::sample::select(&["", "sysadm_r"][..]).prop_map(Value::from)),
        ),
        ("level", mostly(Just(Value::from("s0:c1")))),
    ])
}

fn profile() -> BoxedStrategy<Value> {
    some_fields(vec![
        (
            "type",
            mostly(
                proptest::sample::select(&["RuntimeDefault", "Localhost", "Unconfined", ""][..]).prop_map(Value::from),
            ),
        ),
        ("localhostProfile", mostly(Just(Value::from("profiles/x.json")))),
    ])
}

fn windows_options() -> BoxedStrategy<Value> {
    some_fields(vec![("hostProcess", maybe_bool())])
}

fn container_security_context() -> BoxedStrategy<Value> {
    some_fields(vec![
        ("privileged", maybe_bool()),
        ("allowPrivilegeEscalation", maybe_bool()),
        ("runAsNonRoot", maybe_bool()),
        (
            "runAsUser",
            mostly(prop_oneof![Just(json!(0)), Just(json!(1000)), Just(json!(-1))]),
        ),
        ("readOnlyRootFilesystem", maybe_bool()),
        (
            "procMount",
            mostly(proptest::sample::select(&["Default", "Unmasked", ""][..]).prop_map(Value::from)),
        ),
        (
            "capabilities",
            some_fields(vec![
                (
                    "add",
                    strings_from(&[
                        "NET_RAW",
                        "SYS_ADMIN",
                        "NET_BIND_SERVICE",
                        "CHOWN",
                        "chown",
                        "CAP_KILL",
                        "ALL",
                    ]),
                ),
                ("drop", strings_from(&["ALL", "all", "NET_RAW", "KILL"])),
            ]),
        ),
        ("seLinuxOptions", se_linux()),
        ("seccompProfile", profile()),
        ("appArmorProfile", profile()),
        ("windowsOptions", windows_options()),
    ])
}

fn container() -> BoxedStrategy<Value> {
    some_fields(vec![
        (
            "name",
            mostly(proptest::sample::select(&["app", "sidecar", "init", "debug", ""][..]).prop_map(Value::from)),
        ),
        ("image", mostly(proptest::sample::select(IMAGES).prop_map(Value::from))),
        ("securityContext", container_security_context()),
        (
            "ports",
            mostly(
                proptest::collection::vec(
                    some_fields(vec![
                        ("hostPort", mostly(prop_oneof![Just(json!(0)), Just(json!(8080))])),
                        ("containerPort", mostly(Just(json!(80)))),
                    ]),
                    0..3,
                )
                .prop_map(Value::Array),
            ),
        ),
        (
            "livenessProbe",
            some_fields(vec![(
                "httpGet",
                some_fields(vec![("host", mostly(Just(Value::from("127.0.0.1"))))]),
            )]),
        ),
        (
            "lifecycle",
            some_fields(vec![(
                "preStop",
                some_fields(vec![(
                    "tcpSocket",
                    some_fields(vec![("host", mostly(Just(Value::from("10.0.0.1"))))]),
                )]),
            )]),
        ),
    ])
}

fn containers() -> BoxedStrategy<Value> {
    mostly(proptest::collection::vec(container(), 0..4).prop_map(Value::Array))
}

fn pod_spec() -> BoxedStrategy<Value> {
    some_fields(vec![
        ("containers", containers()),
        ("initContainers", containers()),
        ("ephemeralContainers", containers()),
        ("hostNetwork", maybe_bool()),
        ("hostPID", maybe_bool()),
        ("hostIPC", maybe_bool()),
        ("hostUsers", maybe_bool()),
        (
            "securityContext",
            some_fields(vec![
                ("runAsNonRoot", maybe_bool()),
                ("runAsUser", mostly(prop_oneof![Just(json!(0)), Just(json!(1000))])),
                ("seLinuxOptions", se_linux()),
                ("seccompProfile", profile()),
                ("appArmorProfile", profile()),
                ("windowsOptions", windows_options()),
                (
                    "sysctls",
                    mostly(
                        proptest::collection::vec(
                            some_fields(vec![
                                (
                                    "name",
                                    mostly(
                                        proptest::sample::select(
                                            &[
                                                "kernel.shm_rmid_forced",
                                                "net.core.somaxconn",
                                                "net.ipv4.ip_unprivileged_port_start",
                                            ][..],
                                        )
                                        .prop_map(Value::from),
                                    ),
                                ),
                                (
                                    "value",
                                    mostly(proptest::sample::select(&["1", "0", ""][..]).prop_map(Value::from)),
                                ),
                            ]),
                            0..3,
                        )
                        .prop_map(Value::Array),
                    ),
                ),
            ]),
        ),
        (
            "volumes",
            mostly(
                proptest::collection::vec(
                    some_fields(vec![
                        ("name", mostly(Just(Value::from("v")))),
                        ("hostPath", mostly(Just(json!({"path": "/"})))),
                        ("configMap", mostly(Just(json!({"name": "c"})))),
                        ("gcePersistentDisk", mostly(Just(json!({})))),
                    ]),
                    0..3,
                )
                .prop_map(Value::Array),
            ),
        ),
        (
            "os",
            some_fields(vec![(
                "name",
                mostly(proptest::sample::select(&["windows", "linux", ""][..]).prop_map(Value::from)),
            )]),
        ),
    ])
}

fn metadata() -> BoxedStrategy<Value> {
    some_fields(vec![
        (
            "name",
            mostly(proptest::sample::select(&["p", "web", ""][..]).prop_map(Value::from)),
        ),
        ("generateName", mostly(Just(Value::from("gen-")))),
        (
            "namespace",
            mostly(
                proptest::sample::select(&["dev", "ops", "kube-system", "exempt", "prod", ""][..])
                    .prop_map(Value::from),
            ),
        ),
        ("labels", mostly(Just(json!({"app": "x"})))),
        ("deletionTimestamp", mostly(Just(Value::from("2025-01-01T00:00:00Z")))),
    ])
}

/// A workload of any evaluated kind (or another), its pod spec where that kind keeps it.
fn workload() -> BoxedStrategy<Value> {
    let kinds = &[
        ("v1", "Pod"),
        ("v1", "ReplicationController"),
        ("apps/v1", "Deployment"),
        ("apps/v1", "ReplicaSet"),
        ("apps/v1", "StatefulSet"),
        ("apps/v1", "DaemonSet"),
        ("batch/v1", "Job"),
        ("batch/v1", "CronJob"),
        ("v1", "ConfigMap"),
        ("apps/v1", "Pod"),
    ][..];
    (
        proptest::sample::select(kinds),
        metadata(),
        metadata(),
        pod_spec(),
        status(),
    )
        .prop_map(|((api_version, kind), meta, template_meta, spec, status)| {
            let template = json!({"metadata": template_meta, "spec": spec});
            let spec = match kind {
                "Pod" => template["spec"].clone(),
                "CronJob" => json!({"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template}}}),
                _ => json!({"replicas": 1, "template": template}),
            };
            json!({"apiVersion": api_version, "kind": kind, "metadata": meta, "spec": spec, "status": status})
        })
        .boxed()
}

fn status() -> BoxedStrategy<Value> {
    some_fields(vec![(
        "containerStatuses",
        mostly(
            proptest::collection::vec(
                some_fields(vec![
                    ("name", mostly(Just(Value::from("app")))),
                    ("image", mostly(proptest::sample::select(IMAGES).prop_map(Value::from))),
                    (
                        "imageID",
                        mostly(prop_oneof![
                            Just(Value::from(format!("docker.io/library/nginx@{DIGEST_A}"))),
                            Just(Value::from(DIGEST_B)),
                            Just(Value::from("docker-pullable://x@sha256:zz")),
                        ]),
                    ),
                ]),
                0..3,
            )
            .prop_map(Value::Array),
        ),
    )])
}

fn request_kind() -> BoxedStrategy<Value> {
    mostly(
        proptest::sample::select(
            &[
                ("", "Pod"),
                ("apps", "Deployment"),
                ("batch", "CronJob"),
                ("", "PodExecOptions"),
                ("", "ConfigMap"),
            ][..],
        )
        .prop_map(|(g, k)| json!({"group": g, "version": "v1", "kind": k})),
    )
}

/// An AdmissionRequest around a workload, with an operation, a subresource and an old object.
fn request() -> BoxedStrategy<Value> {
    let optional = some_fields(vec![
        ("uid", mostly(Just(Value::from("0000-1111")))),
        (
            "resource",
            mostly(
                proptest::sample::select(&["pods", "deployments", "cronjobs"][..])
                    .prop_map(|r| json!({"group": "", "version": "v1", "resource": r})),
            ),
        ),
        (
            "subResource",
            mostly(
                proptest::sample::select(
                    &[
                        "",
                        "exec",
                        "attach",
                        "portforward",
                        "ephemeralcontainers",
                        "status",
                        "log",
                    ][..],
                )
                .prop_map(Value::from),
            ),
        ),
        ("name", mostly(Just(Value::from("p")))),
        (
            "namespace",
            mostly(proptest::sample::select(&["dev", "ops", "kube-system", "prod", ""][..]).prop_map(Value::from)),
        ),
        ("oldObject", mostly(workload())),
        ("dryRun", maybe_bool()),
    ]);
    let operation = prop_oneof![
        20 => proptest::sample::select(&["CREATE", "UPDATE", "DELETE", "CONNECT"][..]).prop_map(Value::from),
        1 => leaf(),
    ];
    // Kind and operation are (nearly) always there: without them a request is refused early.
    // The object is there, and the request's kind is mostly the object's own.
    (optional, request_kind(), operation, mostly(workload()), 0u8..5)
        .prop_map(|(mut fields, kind, operation, object, roll)| {
            let own_kind = match (object["apiVersion"].as_str(), object["kind"].as_str()) {
                (Some(api_version), Some(k)) if roll > 0 => {
                    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
                    json!({"group": group, "version": "v1", "kind": k})
                }
                _ => kind,
            };
            if let Value::Object(m) = &mut fields {
                m.insert("kind".to_owned(), own_kind);
                m.insert("operation".to_owned(), operation);
                m.insert("object".to_owned(), object);
            }
            fields
        })
        .boxed()
}

/// A document: a workload, a review, a bare request or a List of documents.
fn document() -> BoxedStrategy<Value> {
    let single = prop_oneof![
        3 => workload(),
        3 => (proptest::sample::select(&["admission.k8s.io/v1", "admission.k8s.io/v1beta1", ""][..]), request())
            .prop_map(|(v, r)| json!({"apiVersion": v, "kind": "AdmissionReview", "request": r})),
        1 => request(),
    ];
    let list_kind = || proptest::sample::select(&["List", "PodList", "DeploymentList"][..]);
    let list = |(kind, items): (&str, Vec<Value>)| json!({"apiVersion": "v1", "kind": kind, "items": items});
    let flat = (list_kind(), proptest::collection::vec(single.clone(), 1..4)).prop_map(list);
    let nested = (list_kind(), proptest::collection::vec(flat.clone(), 1..3)).prop_map(list);
    prop_oneof![
        8 => single,
        2 => flat,
        1 => nested,
        // An empty List says nothing, but is a document too.
        1 => list_kind().prop_map(move |kind| list((kind, Vec::new()))),
    ]
    .boxed()
}

// ---------------------------------------------------------------------------------------
// Policy mutations
// ---------------------------------------------------------------------------------------

/// What a mutation does at the node it picks.
#[derive(Debug, Clone)]
enum Mutation {
    /// Replace the node.
    Replace(Value),
    /// Remove a member (of an object or array node).
    Remove(usize),
    /// Add a member (to an object or array node).
    Insert(String, Value),
}

fn mutation() -> impl Strategy<Value = (usize, Mutation)> {
    let policy_keys = prop_oneof![
        proptest::sample::select(
            &[
                "name",
                "description",
                "xdrEnabled",
                "default",
                "rules",
                "exceptions",
                "imageVerification",
                "namespaced",
                "namespaces",
                "runtime",
                "rulesets",
                "id",
                "type",
                "enabled",
                "action",
                "mitigation",
                "statement",
                "properties",
                "key",
                "value",
                "requireDigest",
                "attestors",
                "all",
                "any",
                "conditions",
                "resourceFilter",
                "operator",
                "createdDateTime",
                "expiresAt",
                "reason",
            ][..]
        )
        .prop_map(str::to_owned),
        "[a-z]{1,6}",
    ];
    let policy_values = prop_oneof![
        proptest::sample::select(
            &[
                "block",
                "log",
                "none",
                "isolate",
                "terminate",
                "true",
                "false",
                "0",
                "31",
                "critical",
                "high",
                "baseline",
                "restricted",
                "restrict-all",
                "equals",
                "starts-with",
                "beginsWith",
                "match",
                "exclude",
                "registry",
                "repository",
                "podSecurityStandard",
                "imagePath",
                "vulnerabilities",
                "level",
                "days",
                "max-severity",
                "Bad Name",
                "a.b",
                "",
                "2025-06-01T12:00:00Z",
                "9999-12-31T23:59:60+23:59",
            ][..]
        )
        .prop_map(Value::from),
        leaf(),
        tree(),
    ];
    (
        any::<usize>(),
        prop_oneof![
            policy_values.clone().prop_map(Mutation::Replace),
            any::<usize>().prop_map(Mutation::Remove),
            (policy_keys, policy_values).prop_map(|(k, v)| Mutation::Insert(k, v)),
        ],
    )
}

fn count_nodes(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(count_nodes).sum(),
        Value::Object(o) => o.values().map(count_nodes).sum(),
        _ => 0,
    }
}

/// Applies `m` at the `target`-th node in pre-order; returns the nodes left to skip.
fn apply(v: &mut Value, target: usize, m: &Mutation) -> Option<usize> {
    if target == 0 {
        match (m, &mut *v) {
            (Mutation::Replace(new), node) => *node = new.clone(),
            (Mutation::Remove(i), Value::Array(a)) if !a.is_empty() => {
                a.remove(i % a.len());
            }
            (Mutation::Remove(i), Value::Object(o)) if !o.is_empty() => {
                let key = o.keys().nth(i % o.len()).cloned().unwrap();
                o.remove(&key);
            }
            (Mutation::Insert(_, new), Value::Array(a)) => a.push(new.clone()),
            (Mutation::Insert(k, new), Value::Object(o)) => {
                o.insert(k.clone(), new.clone());
            }
            (_, node) => *node = Value::Null,
        }
        return None;
    }
    let mut left = target - 1;
    let children: Vec<&mut Value> = match v {
        Value::Array(a) => a.iter_mut().collect(),
        Value::Object(o) => o.values_mut().collect(),
        _ => Vec::new(),
    };
    for child in children {
        let n = count_nodes(child);
        if left < n {
            return apply(child, left, m);
        }
        left -= n;
    }
    Some(left)
}

/// Parses and validates a policy text; when valid, compiles it and evaluates a few pods.
fn parse_validate_compile(text: &str) {
    let Ok(doc) = PolicyDocument::parse(text) else { return };
    let Ok(valid) = validate(&doc) else { return };
    let compiled = CompiledPolicy::new(valid);
    let ctx = EvalContext::offline(NOW);
    for pod in [
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "dev"},
               "spec": {"hostNetwork": true, "containers": [{"name": "a", "image": "nginx", "securityContext": {"privileged": true}}]}}),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "q", "namespace": "ops"},
               "spec": {"containers": [{"name": "b", "image": "registry.example.com/platform/x:1"}]}}),
    ] {
        for subject in parse_document(pod.to_string().as_bytes()).unwrap() {
            let _ = compiled.evaluate(&subject, &ctx);
            let _ = compiled.evaluate_running(&subject, &ctx);
        }
    }
}

fn to_yaml(v: &Value) -> Option<String> {
    yaml_serde::to_string(v).ok()
}

// ---------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------

#[test]
fn the_broad_policy_enables_every_rule_type() {
    // The properties below are only as good as the policy's coverage.
    let doc: Value = serde_json::from_str(BROAD_POLICY).unwrap();
    let types: std::collections::BTreeSet<&str> = doc["default"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    let every = [
        "podSecurityContext",
        "containerSecurityContext",
        "registry",
        "image",
        "tag",
        "imagePath",
        "vulnerabilities",
        "cvssAttackVector",
        "cvssAttackComplexity",
        "cvssAvailability",
        "malware",
        "secrets",
        "unscannedImage",
        "unscannedImageMalware",
        "unscannedImageSecret",
        "podexec",
        "portforward",
        "podSecurityStandard",
    ];
    for t in every {
        assert!(types.contains(t), "the broad policy lacks {t}");
    }
    assert!(!doc["default"]["imageVerification"].as_array().unwrap().is_empty());
    assert_eq!(policy().name(), "fuzz.broad");
    // And it does judge: a privileged pod is blocked.
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                     "spec": {"containers": [{"name": "a", "image": "nginx", "securityContext": {"privileged": true}}]}});
    let subject = &parse_document(pod.to_string().as_bytes()).unwrap()[0];
    assert_eq!(
        policy().evaluate(subject, &EvalContext::offline(NOW)).verdict,
        Verdict::Block
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn parse_document_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        parse_and_evaluate(&bytes);
    }

    #[test]
    fn parse_document_never_panics_on_json_like_bytes(
        text in r#"[\[\]{}":,0-9a-zA-Z \\.-]{0,200}"#,
    ) {
        parse_and_evaluate(text.as_bytes());
    }
}

/// The generator of mostly-right documents must reach the evaluator, or the properties
/// below would only exercise the parser's error paths.
#[test]
fn mostly_right_documents_reach_the_evaluator() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = document();
    let (mut parsed, mut evaluated, mut violating) = (0, 0, 0);
    let total = 300;
    for _ in 0..total {
        let doc = strategy.new_tree(&mut runner).unwrap().current();
        let Ok(subjects) = parse_document(doc.to_string().as_bytes()) else {
            continue;
        };
        parsed += 1;
        let decisions: Vec<_> = subjects
            .iter()
            .map(|s| policy().evaluate(s, &rich(FailureMode::FailOpen)))
            .collect();
        if decisions.iter().any(|d| d.not_evaluated.is_none()) {
            evaluated += 1;
        }
        if decisions.iter().any(|d| !d.violations.is_empty()) {
            violating += 1;
        }
    }
    println!("of {total} documents: {parsed} parsed, {evaluated} evaluated, {violating} with violations");
    assert!(parsed * 4 >= total, "at least a quarter parse: {parsed}/{total}");
    assert!(
        evaluated * 10 >= total,
        "at least a tenth are evaluated: {evaluated}/{total}"
    );
    assert!(
        violating * 10 >= total,
        "at least a tenth violate a rule: {violating}/{total}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn parsing_and_evaluation_never_panic_on_random_kubernetes_trees(doc in tree()) {
        parse_and_evaluate(doc.to_string().as_bytes());
    }

    #[test]
    fn parsing_and_evaluation_never_panic_on_mostly_right_documents(doc in document()) {
        parse_and_evaluate(doc.to_string().as_bytes());
    }

    #[test]
    fn truncated_documents_never_panic(doc in document(), cut in any::<usize>()) {
        let text = doc.to_string();
        let bytes = text.as_bytes();
        let end = cut % (bytes.len() + 1);
        parse_and_evaluate(&bytes[..end]);
    }

    #[test]
    fn policy_parse_and_validate_never_panic_on_arbitrary_text(text in "\\PC{0,300}") {
        parse_validate_compile(&text);
    }

    #[test]
    fn policy_parse_and_validate_never_panic_on_mutated_policies(
        base in prop_oneof![Just(BROAD_POLICY), Just(EXAMPLE_POLICY)],
        mutations in proptest::collection::vec(mutation(), 1..6),
    ) {
        let mut doc: Value = match serde_json::from_str(base) {
            Ok(v) => v,
            Err(_) => yaml_serde::from_str(base).unwrap(),
        };
        for (at, m) in &mutations {
            let n = count_nodes(&doc);
            let _ = apply(&mut doc, at % n, m);
        }
        parse_validate_compile(&doc.to_string());
        if let Some(yaml) = to_yaml(&doc) {
            parse_validate_compile(&yaml);
        }
    }

    #[test]
    fn policy_parse_never_panics_on_byte_mutations_of_policy_text(
        base in prop_oneof![Just(BROAD_POLICY), Just(EXAMPLE_POLICY)],
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..8),
    ) {
        let mut bytes = base.as_bytes().to_vec();
        for (at, byte, op) in edits {
            let i = at % (bytes.len() + 1);
            match op {
                0 => bytes.insert(i, byte),
                1 if i < bytes.len() => { bytes.remove(i); }
                _ if i < bytes.len() => bytes[i] = byte,
                _ => bytes.push(byte),
            }
        }
        parse_validate_compile(&String::from_utf8_lossy(&bytes));
    }
}
