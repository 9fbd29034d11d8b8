//! Fuzz target: the policy store's and admission's gRPC methods, served as `portcullis up`
//! serves them (a policy store on SQLite in a temporary folder and the in-process bus, with
//! AdmissionService on the same router), behind the guard and authentication layers, called
//! in process. Byte 0 of an input picks the method, byte 1 the credential, the rest is the
//! protobuf message, sent as one gRPC frame (ReviewStream: a stream of that one message).
//! Every call must finish within 10 s with a gRPC status, and no handler may panic (the
//! guard would answer `Internal` and the server go on; here it is a finding).
//!
//! With `PORTCULLIS_FUZZ_SEEDS=<folder>` set, valid requests of every method are first
//! written there as seeds (see README.md); with `PORTCULLIS_FUZZ_VERBOSE` set, each call's
//! status is printed.

#![no_main]

use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use libfuzzer_sys::fuzz_target;
use portcullis_admission::running::grpc_service;
use portcullis_admission::{AdmissionOptions, Hooks, RunningAdmission, ServeOptions, Upstream, UpstreamTimeouts};
use portcullis_bus::{Bus, BusConfig};
use portcullis_policy_store::{Background, BackgroundOptions, PolicyStore, ServiceOptions, sqlite_url};
use portcullis_proto::admission::v1 as adm;
use portcullis_proto::common::v1 as common;
use portcullis_proto::policystore::v1 as pb;
use portcullis_server::permissions::{ADMISSION_METHODS, Access, POLICY_STORE_METHODS};
use portcullis_server::rate_limit::RateLimitConfig;
use portcullis_server::{Credentials, GrpcServer, Mode, ServerConfig, TENANT_METADATA};
use portcullis_storage::{Actor, NewApiKey, NewCluster, NewTenant, ResourceRef, Role, Store, StoreError};
use prost::Message;
use tonic::{Code, Status};
use tower::Service;

const TENANT: &str = "default";
/// The seeded policy, assigned to the seeded cluster.
const POLICY: &str = "fuzz.broad";
const CLUSTER: &str = "fuzz-cluster";
const REVIEW: &str = include_str!("../../examples/review.json");
const OPERATOR_KEY: &str = "fuzz-operator-key-0123456789";
const SERVICE_TOKEN: &str = "fuzz-service-token-0123456789";
/// What the guard answers for a call whose handler panicked (`crates/server/src/guard.rs`).
const GUARD_PANIC_MESSAGE: &str = "internal error: the call failed on the server";
/// Calls that can remove the seeded tenant, policy, cluster or keys: after one succeeds the
/// seeds are made again (with new keys), so that later inputs still get past "not found".
const DESTRUCTIVE: &[&str] = &[
    "TenantService/DeleteTenant",
    "AuthService/RevokeApiKey",
    "ClusterService/RotateConnectorKey",
    "ClusterService/DeleteCluster",
    "PolicyService/DeletePolicy",
];

/// `broad-policy.json` (every rule type) without its references to attestors and rulesets,
/// which the store requires to exist in the tenant.
static BROAD_POLICY: LazyLock<String> = LazyLock::new(|| {
    let mut doc: serde_json::Value =
        serde_json::from_str(include_str!("../broad-policy.json")).expect("broad-policy.json");
    if let Some(doc) = doc.as_object_mut() {
        doc.remove("runtime");
    }
    let no_verification = |def: &mut serde_json::Value| {
        if let Some(def) = def.as_object_mut() {
            def.remove("imageVerification");
        }
    };
    no_verification(&mut doc["default"]);
    doc["namespaced"]
        .as_array_mut()
        .into_iter()
        .flatten()
        .for_each(no_verification);
    doc.to_string()
});

/// `PORTCULLIS_FUZZ_VERBOSE` set: every call's method and status on stderr (to see what a
/// corpus reaches).
static VERBOSE: LazyLock<bool> = LazyLock::new(|| std::env::var_os("PORTCULLIS_FUZZ_VERBOSE").is_some());

/// The tenant keys the credential byte picks from.
struct Keys {
    admin: String,
    editor: String,
    viewer: String,
    connector: String,
}

struct World {
    runtime: tokio::runtime::Runtime,
    service: Mutex<portcullis_server::GuardService<portcullis_server::AuthService<tonic::service::Routes>>>,
    store: Store,
    keys: Mutex<Keys>,
    /// `/package.Service/Method` and its access class, policy store then admission.
    methods: Vec<(String, Access)>,
    // Kept running for the process's life.
    _admission: Mutex<RunningAdmission>,
    _background: Mutex<Background>,
    _dir: tempfile::TempDir,
}

fn methods() -> Vec<(String, Access)> {
    let store = POLICY_STORE_METHODS
        .iter()
        .map(|(m, a)| (format!("/portcullis.policystore.v1.{m}"), *a));
    let admission = ADMISSION_METHODS
        .iter()
        .map(|(m, a)| (format!("/portcullis.admission.v1.{m}"), *a));
    store.chain(admission).collect()
}

static WORLD: LazyLock<World> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temporary folder");
    let (service, store, keys, admission, background) = runtime.block_on(async {
        let store = Store::connect(&sqlite_url(&dir.path().join("portcullis.db")))
            .await
            .expect("SQLite");
        let keys = seed(&store).await;
        let bus = Bus::memory(BusConfig::embedded()).expect("memory bus");
        let credentials =
            Credentials::new(Some(OPERATOR_KEY.to_owned()), Some(SERVICE_TOKEN.to_owned())).expect("credentials");
        let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        // No per-tenant rate limits: every input should reach its handler, not a refusal.
        let policy_store = PolicyStore::with_options(
            store.clone(),
            ServiceOptions {
                rate_limit: RateLimitConfig::unlimited(),
                ..ServiceOptions::default()
            },
        );
        let background = policy_store.start_background(bus.clone(), BackgroundOptions::default());
        // Admission calls the store over gRPC (in `up`, on the process's own listener): this
        // listener serves those calls only.
        let mut upstream_server = GrpcServer::new(
            ServerConfig::new(loopback, Mode::Embedded),
            policy_store.auth_state(credentials.clone()),
        );
        policy_store.register(&mut upstream_server);
        let bound = upstream_server.bind().await.expect("bind");
        let url = bound.url();
        tokio::spawn(bound.serve(std::future::pending()));
        let upstream = Upstream::new(&url, None, SERVICE_TOKEN, &UpstreamTimeouts::default(), false).expect("upstream");
        let admission = RunningAdmission::start(
            upstream,
            bus,
            credentials.clone(),
            ServeOptions {
                grpc: ServerConfig::new(loopback, Mode::Embedded),
                webhook: None,
                admission: AdmissionOptions {
                    rate_limit: RateLimitConfig::unlimited(),
                    ..AdmissionOptions::default()
                },
            },
            Hooks::default(),
        )
        .await
        .expect("admission");
        // The fuzzed router: what `up` serves on its one address.
        let mut server = GrpcServer::new(
            ServerConfig::new(loopback, Mode::Embedded),
            policy_store.auth_state(credentials),
        );
        policy_store.register(&mut server);
        server.add_service(grpc_service(admission.admission()));
        (server.into_service(), store, keys, admission, background)
    });
    World {
        runtime,
        service: Mutex::new(service),
        store,
        keys: Mutex::new(keys),
        methods: methods(),
        _admission: Mutex::new(admission),
        _background: Mutex::new(background),
        _dir: dir,
    }
});

/// Makes tenant `default`, the policy and the cluster when missing (again after a
/// destructive call), and issues fresh keys of every role.
async fn seed(store: &Store) -> Keys {
    let operator = Actor::operator();
    match store.get_tenant(TENANT).await {
        Ok(_) => {}
        Err(StoreError::NotFound { .. }) => {
            let tenant = NewTenant {
                id: Some(TENANT.to_owned()),
                name: TENANT.to_owned(),
                admin_key_expires_at: None,
            };
            store.create_tenant(&operator, &tenant).await.expect("tenant");
        }
        Err(e) => panic!("reading the tenant: {e}"),
    }
    let policy = ResourceRef::name(POLICY);
    match store.get_policy(TENANT, &policy).await {
        Ok(_) => {}
        Err(StoreError::NotFound { .. }) => {
            store
                .create_policy(TENANT, &operator, &BROAD_POLICY)
                .await
                .expect("policy");
        }
        Err(e) => panic!("reading the policy: {e}"),
    }
    let cluster = ResourceRef::name(CLUSTER);
    match store.get_cluster(TENANT, &cluster).await {
        Ok(_) => {
            store
                .assign_policy(TENANT, &operator, &cluster, Some(&policy))
                .await
                .expect("assigning the policy");
        }
        Err(StoreError::NotFound { .. }) => {
            let new = NewCluster {
                name: CLUSTER.to_owned(),
                description: "fuzz".to_owned(),
                policy: Some(policy),
                settings: Default::default(),
                connector_key_expires_at: None,
            };
            store.register_cluster(TENANT, &operator, &new).await.expect("cluster");
        }
        Err(e) => panic!("reading the cluster: {e}"),
    }
    let key = async |role, cluster: Option<&ResourceRef>| {
        let new = NewApiKey {
            role,
            cluster: cluster.cloned(),
            expires_at: None,
            description: "fuzz".to_owned(),
        };
        store.create_api_key(TENANT, &operator, &new).await.expect("key").secret
    };
    Keys {
        admin: key(Role::Admin, None).await,
        editor: key(Role::Editor, None).await,
        viewer: key(Role::Viewer, None).await,
        connector: key(Role::Connector, Some(&cluster)).await,
    }
}

/// The `authorization` and `x-portcullis-tenant` values of credential byte `c`: admin,
/// editor, viewer, connector, operator, service (acting in the tenant; without naming one
/// when the top bit is set), none, a key nobody issued.
fn credential(c: u8, keys: &Keys) -> (Option<String>, Option<&'static str>) {
    let bearer = |k: &str| Some(format!("Bearer {k}"));
    match c % 8 {
        0 => (bearer(&keys.admin), None),
        1 => (bearer(&keys.editor), None),
        2 => (bearer(&keys.viewer), None),
        3 => (bearer(&keys.connector), None),
        4 => (bearer(OPERATOR_KEY), None),
        5 => (bearer(SERVICE_TOKEN), (c < 128).then_some(TENANT)),
        6 => (None, None),
        _ => (bearer("pck_0123456789abcdef_bm90IGEga2V5IGFueWJvZHkgaXNzdWVk"), None),
    }
}

/// The status of one call of `path` with `message`.
async fn call(path: &str, auth: Option<String>, tenant: Option<&str>, message: &[u8]) -> Status {
    let mut frame = Vec::with_capacity(5 + message.len());
    frame.push(0);
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(message);
    let mut request = http::Request::builder()
        .method("POST")
        .uri(format!("http://in-process{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    if let Some(tenant) = tenant {
        request = request.header(TENANT_METADATA, tenant);
    }
    let request = request
        .body(tonic::body::Body::new(Full::new(Bytes::from(frame))))
        .expect("request");
    let mut service = WORLD.service.lock().expect("service").clone();
    std::future::poll_fn(|cx| service.poll_ready(cx)).await.expect("ready");
    let response = service.call(request).await.expect("infallible");
    // A trailers-only answer carries the status in its headers; others in the trailers.
    if let Some(status) = Status::from_header_map(response.headers()) {
        return status;
    }
    let body = match response.into_body().collect().await {
        Ok(body) => body,
        Err(status) => panic!("{path}: the answer's body failed: {status:?}"),
    };
    match body.trailers().and_then(Status::from_header_map) {
        Some(status) => status,
        None => panic!("{path}: an answer without grpc-status"),
    }
}

fuzz_target!(
    init: {
        if let Some(folder) = std::env::var_os("PORTCULLIS_FUZZ_SEEDS") {
            write_seeds(std::path::Path::new(&folder));
        }
    },
    |data: &[u8]| {
        let [method, credential_byte, message @ ..] = data else { return };
        let w = &*WORLD;
        let (path, _) = &w.methods[*method as usize % w.methods.len()];
        let (auth, tenant) = credential(*credential_byte, &w.keys.lock().expect("keys"));
        let status = w.runtime.block_on(async {
            match tokio::time::timeout(Duration::from_secs(10), call(path, auth, tenant, message)).await {
                Ok(status) => status,
                Err(_) => panic!("{path}: hung (no answer in 10 s)"),
            }
        });
        if *VERBOSE {
            eprintln!("{path}: {:?} {}", status.code(), status.message());
        }
        if status.code() == Code::Internal && status.message().starts_with(GUARD_PANIC_MESSAGE) {
            panic!("{path}: a handler panicked (the guard answered {status:?})");
        }
        if status.code() == Code::Ok && DESTRUCTIVE.iter().any(|m| path.ends_with(m)) {
            let keys = w.runtime.block_on(seed(&w.store));
            *w.keys.lock().expect("keys") = keys;
        }
    }
);

/// Writes a valid request of every method (an empty message where that is one) with a
/// credential allowed to call it, as seed inputs named after the method.
fn write_seeds(folder: &std::path::Path) {
    let name = |n: &str| {
        Some(common::ResourceRef {
            r#ref: Some(common::resource_ref::Ref::Name(n.to_owned())),
        })
    };
    let other_policy = BROAD_POLICY.replacen(POLICY, "fuzz.other", 1);
    const RULESET: &str =
        r#"{"name":"seed-ruleset","rules":[{"id":"Adding ssh keys to authorized_keys","mitigation":"isolate"}]}"#;
    let review = adm::ReviewRequest {
        cluster: name(CLUSTER),
        admission_review_json: Bytes::from_static(REVIEW.as_bytes()),
        request_id: "r1".to_owned(),
    };
    let scan = format!(
        r#"{{"digest":"sha256:{0}","scanType":"vulnerability","scannedAt":"2025-05-30T00:00:00Z","scanner":"trivy","findings":[{{"id":"CVE-1","severity":"critical"}}]}}"#,
        "a".repeat(64)
    );
    // Messages worth more than an empty one, by method.
    let messages: Vec<(&str, Vec<u8>)> = vec![
        (
            "PolicyService/CreatePolicy",
            pb::CreatePolicyRequest {
                document_json: other_policy.clone(),
            }
            .encode_to_vec(),
        ),
        (
            "PolicyService/ApplyPolicy",
            pb::ApplyPolicyRequest {
                document_json: BROAD_POLICY.clone(),
                expected_revision: None,
            }
            .encode_to_vec(),
        ),
        (
            "PolicyService/GetPolicy",
            pb::GetPolicyRequest { policy: name(POLICY) }.encode_to_vec(),
        ),
        (
            "PolicyService/GetEffectivePolicy",
            pb::GetEffectivePolicyRequest {
                cluster: name(CLUSTER),
                tenant_id: String::new(),
            }
            .encode_to_vec(),
        ),
        (
            "PolicyService/UpdatePolicy",
            pb::UpdatePolicyRequest {
                policy: name(POLICY),
                document_json: BROAD_POLICY.clone(),
                expected_revision: 0,
            }
            .encode_to_vec(),
        ),
        (
            "PolicyService/DuplicatePolicy",
            pb::DuplicatePolicyRequest {
                policy: name(POLICY),
                new_name: Some("fuzz.copy".to_owned()),
            }
            .encode_to_vec(),
        ),
        (
            "PolicyService/ListPolicyHistory",
            pb::ListPolicyHistoryRequest {
                policy: name(POLICY),
                page: None,
            }
            .encode_to_vec(),
        ),
        (
            "PolicyService/GetPolicyRevision",
            pb::GetPolicyRevisionRequest {
                policy: name(POLICY),
                revision: 1,
            }
            .encode_to_vec(),
        ),
        (
            "RulesetService/CreateRuleset",
            pb::CreateRulesetRequest {
                document_json: RULESET.to_owned(),
            }
            .encode_to_vec(),
        ),
        (
            "RulesetService/ApplyRuleset",
            pb::ApplyRulesetRequest {
                document_json: RULESET.to_owned(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "ClusterService/GetCluster",
            pb::GetClusterRequest { cluster: name(CLUSTER) }.encode_to_vec(),
        ),
        (
            "ClusterService/AssignPolicy",
            pb::AssignPolicyRequest {
                cluster: name(CLUSTER),
                policy: name(POLICY),
            }
            .encode_to_vec(),
        ),
        (
            "ClusterService/UpdateClusterSettings",
            pb::UpdateClusterSettingsRequest {
                cluster: name(CLUSTER),
                settings: Some(pb::ClusterSettings {
                    failure_mode: common::FailureMode::FailClosed as i32,
                    excluded_namespaces: vec!["kube-system".to_owned()],
                    trusted_images: vec!["registry.example.com/platform/agent".to_owned()],
                }),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "ClusterService/RegisterCluster",
            pb::RegisterClusterRequest {
                name: "seed-cluster".to_owned(),
                policy: name(POLICY),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "ClusterService/Heartbeat",
            pb::HeartbeatRequest {
                cluster: None,
                connector_version: "1.0.0".to_owned(),
                kubernetes_version: "v1.31.0".to_owned(),
            }
            .encode_to_vec(),
        ),
        (
            "AuthService/CreateApiKey",
            pb::CreateApiKeyRequest {
                role: common::Role::Viewer as i32,
                description: "seed".to_owned(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "TenantService/CreateTenant",
            pb::CreateTenantRequest {
                name: "seed".to_owned(),
                id: "seed".to_owned(),
                admin_key_expires_at: None,
            }
            .encode_to_vec(),
        ),
        (
            "ScanResultService/UploadScanResult",
            pb::UploadScanResultRequest {
                digest: format!("sha256:{}", "a".repeat(64)),
                report: Some(pb::upload_scan_result_request::Report::NativeJson(scan.into())),
                trivy_secret_scan: false,
                image: "registry.example.com/observability/metrics-agent:3.2.0".to_owned(),
            }
            .encode_to_vec(),
        ),
        (
            "ScanResultService/GetLatestScanResult",
            pb::GetLatestScanResultRequest {
                digest: format!("sha256:{}", "a".repeat(64)),
                scan_type: 0,
            }
            .encode_to_vec(),
        ),
        (
            "TenantService/GetTenant",
            pb::GetTenantRequest { id: TENANT.to_owned() }.encode_to_vec(),
        ),
        ("AdmissionService/Review", review.encode_to_vec()),
        ("AdmissionService/ReviewStream", review.encode_to_vec()),
    ];
    std::fs::create_dir_all(folder).expect("seed folder");
    for (i, (path, access)) in methods().iter().enumerate() {
        // A credential the permission table admits (see `credential`).
        let credential_byte = match access {
            Access::Public | Access::Identity | Access::Read => 2,
            Access::Write => 1,
            Access::Admin => 0,
            Access::ClusterRead | Access::ClusterReport => 3,
            Access::Operator => 4,
            Access::Service => 5,
        };
        let method = path.rsplit_once(".v1.").map_or(path.as_str(), |(_, m)| m);
        let message = messages
            .iter()
            .find(|(m, _)| *m == method)
            .map(|(_, bytes)| bytes.clone())
            .unwrap_or_default();
        let mut seed = vec![i as u8, credential_byte];
        seed.extend_from_slice(&message);
        std::fs::write(folder.join(format!("seed-{}", method.replace('/', "-"))), seed).expect("seed");
    }
}
