//! `portcullis up` and `portcullis serve policy-store` as processes: the one ready line,
//! the bootstrap key file, real gRPC calls, and a clean exit 0 on SIGTERM / SIGINT.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use portcullis_policy_store::testing::authed;
use portcullis_proto::admission::v1 as pa;
use portcullis_proto::admission::v1::admission_service_client::AdmissionServiceClient;
use portcullis_proto::common::v1 as pc;
use portcullis_proto::policystore::v1 as pb;
use portcullis_proto::policystore::v1::auth_service_client::AuthServiceClient;
use portcullis_proto::policystore::v1::cluster_service_client::ClusterServiceClient;
use portcullis_proto::policystore::v1::policy_service_client::PolicyServiceClient;
use portcullis_proto::policystore::v1::tenant_service_client::TenantServiceClient;
use portcullis_test_kit::NatsServer;
use portcullis_test_kit::TestDatabase;

const OPERATOR_KEY: &str = "operator-key-for-cli-tests";
/// The service credential of the services these tests start.
const SERVICE_TOKEN: &str = "service-token-for-cli-tests";

const POLICY: &str = r#"{"name":"cliPolicy","default":{"rules":[{"type":"podSecurityContext","action":"block","statement":{"properties":[{"key":"hostNetwork","value":"true"}]}}]}}"#;

/// A server process: its ready line's URL, and the rest of its stdout when it ends.
struct Running {
    child: Child,
    url: String,
    lines: mpsc::Receiver<String>,
}

fn portcullis(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    command
        .args(args)
        .env("PORTCULLIS_OPERATOR_KEY", OPERATOR_KEY)
        .env_remove("PORTCULLIS_SERVICE_TOKEN")
        .env_remove("PORTCULLIS_DATABASE_URL")
        .env_remove("PORTCULLIS_NATS_URL")
        .env_remove("PORTCULLIS_LISTEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Spawns `command` and waits for its ready line, which must start with `prefix`.
fn start_command(command: &mut Command, prefix: &str) -> Running {
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let Ok(first) = lines.recv_timeout(Duration::from_secs(60)) else {
        let _ = child.kill();
        let mut stderr = String::new();
        child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
        panic!("no ready line; stderr:\n{stderr}");
    };
    let url = first
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("ready line {first:?} does not start with {prefix:?}"))
        .to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    Running { child, url, lines }
}

/// Starts `up` (with its admission listener on a free port): the store's URL from the first
/// ready line, the admission service's from the second.
fn start_up(args: &[&str]) -> (Running, String) {
    let mut all = args.to_vec();
    all.extend(["--admission-listen", "127.0.0.1:0"]);
    start_up_command(&mut portcullis(&all))
}

/// [`start_up`] of a prepared command (its own `--admission-listen` given).
fn start_up_command(command: &mut Command) -> (Running, String) {
    let running = start_command(command, "portcullis listening on ");
    let Ok(second) = running.lines.recv_timeout(Duration::from_secs(60)) else {
        panic!("no admission ready line");
    };
    let admission = second
        .strip_prefix("portcullis admission listening on ")
        .unwrap_or_else(|| panic!("second ready line {second:?}"))
        .to_owned();
    (running, admission)
}

/// Registers a cluster with the `cliPolicy` policy; returns its connector key.
async fn cluster_with_policy(url: &str, admin_key: &str, name: &str) -> String {
    let mut clusters = ClusterServiceClient::connect(url.to_owned()).await.unwrap();
    clusters
        .register_cluster(authed(
            admin_key,
            pb::RegisterClusterRequest {
                name: name.to_owned(),
                policy: Some(pc::ResourceRef {
                    r#ref: Some(pc::resource_ref::Ref::Name("cliPolicy".to_owned())),
                }),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .connector_key
}

/// Reviews a hostNetwork pod (blocked by `cliPolicy`) and a plain one (allowed).
async fn check_reviews(admission_url: &str, connector_key: &str) {
    let mut admission = AdmissionServiceClient::connect(admission_url.to_owned()).await.unwrap();
    for (uid, host_network) in [("blocked", true), ("allowed", false)] {
        let answer = admission
            .review(authed(
                connector_key,
                pa::ReviewRequest {
                    admission_review_json: common::pod_review(uid, host_network).into_bytes().into(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        let decision = answer.decision.unwrap();
        assert_eq!(decision.uid, uid);
        assert_eq!(decision.allowed, !host_network, "{decision:?}");
        let json: serde_json::Value = serde_json::from_slice(&answer.admission_review_json).unwrap();
        assert_eq!(json["response"]["allowed"], !host_network);
    }
}

/// Sends `signal`, waits for the exit, and checks it was 0 and that stdout had nothing more.
fn stop(mut running: Running, signal: &str) {
    let status = Command::new("kill")
        .args([format!("-{signal}"), running.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = running.child.try_wait().unwrap() {
            break exit;
        }
        if Instant::now() > deadline {
            let _ = running.child.kill();
            panic!("did not exit within 30 s of SIG{signal}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    running
        .child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(exit.code(), Some(0), "exit {exit:?}; stderr:\n{stderr}");
    let more: Vec<String> = running.lines.try_iter().collect();
    assert!(more.is_empty(), "stdout has exactly one line; also got {more:?}");
}

async fn apply_policy(url: &str, key: &str) -> pb::ApplyPolicyResponse {
    let mut policies = PolicyServiceClient::connect(url.to_owned()).await.unwrap();
    policies
        .apply_policy(authed(
            key,
            pb::ApplyPolicyRequest {
                document_json: POLICY.to_owned(),
                expected_revision: None,
            },
        ))
        .await
        .unwrap()
        .into_inner()
}

/// `up` and `serve` turn transparent huge pages off for themselves: their faults stalled
/// admission under load (BENCHMARKS.md).
fn assert_huge_pages_off(running: &Running) {
    if cfg!(target_os = "linux") {
        let status = std::fs::read_to_string(format!("/proc/{}/status", running.child.id())).unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with("THP_enabled:"))
            .expect("THP_enabled in /proc/PID/status (Linux 5.0 and later)");
        assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
    }
}

/// Creates a tenant as the operator; its admin key is in the answer.
async fn create_tenant(url: &str, name: &str, id: &str) -> pb::CreateTenantResponse {
    TenantServiceClient::connect(url.to_owned())
        .await
        .unwrap()
        .create_tenant(authed(
            OPERATOR_KEY,
            pb::CreateTenantRequest {
                name: name.to_owned(),
                id: id.to_owned(),
                admin_key_expires_at: None,
            },
        ))
        .await
        .unwrap()
        .into_inner()
}

/// `serve policy-store` on `database_url` and `nats_url`, on a free loopback port.
fn policy_store_command(database_url: &str, nats_url: &str) -> Command {
    portcullis(&[
        "serve",
        "policy-store",
        "--database-url",
        database_url,
        "--nats-url",
        nats_url,
        "--listen",
        "127.0.0.1:0",
    ])
}

/// `portcullis serve NAME` (with the service credential) beside the policy store at
/// `store_url`, on NATS at `nats_url`, with `extra` flags, listening on a free loopback port.
fn start_service(name: &str, store_url: &str, nats_url: &str, extra: &[&str]) -> Running {
    let mut args = vec![
        "serve",
        name,
        "--policy-store-url",
        store_url,
        "--nats-url",
        nats_url,
        "--listen",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    start_command(
        portcullis(&args).env("PORTCULLIS_SERVICE_TOKEN", SERVICE_TOKEN),
        &format!("portcullis {name} listening on "),
    )
}

/// `portcullis serve policy-store` on `database_url` and NATS at `nats_url`, knowing the
/// service credential.
fn start_store_with_token(database_url: &str, nats_url: &str) -> Running {
    start_command(
        policy_store_command(database_url, nats_url).env("PORTCULLIS_SERVICE_TOKEN", SERVICE_TOKEN),
        "portcullis policy-store listening on ",
    )
}

fn read_key(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_bootstraps_serves_and_drains() {
    let dir = portcullis_test_kit::DataDir::new().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let args = ["up", "--data-dir", data_arg, "--listen", "127.0.0.1:0"];

    let (first, admission_url) = start_up(&args);
    assert_huge_pages_off(&first);
    let key_file = data.join("bootstrap-admin.key");
    let key = read_key(&key_file);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let who = AuthServiceClient::connect(first.url.clone())
        .await
        .unwrap()
        .who_am_i(authed(&key, pb::WhoAmIRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(who.tenant_id, "default");
    assert_eq!(who.role, portcullis_proto::common::v1::Role::Admin as i32);
    let applied = apply_policy(&first.url, &key).await;
    assert!(applied.created);
    // `up` runs the admission service too, on its own listener.
    let connector_key = cluster_with_policy(&first.url, &key, "up-cluster").await;
    check_reviews(&admission_url, &connector_key).await;
    stop(first, "TERM");

    // The second start keeps the data and never rewrites the key file.
    let (second, _) = start_up(&args);
    assert_eq!(read_key(&key_file), key);
    let again = apply_policy(&second.url, &key).await;
    assert!(!again.created && !again.changed, "identical apply writes nothing");
    assert_eq!(again.policy.unwrap().revision, 1);
    stop(second, "INT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_policy_store_runs_on_postgres_and_nats() {
    let database = TestDatabase::create().await.unwrap();
    let nats = NatsServer::start().await.unwrap();
    let nats_url = nats.url();
    let running = start_command(
        &mut policy_store_command(&database.url, &nats_url),
        "portcullis policy-store listening on ",
    );
    let created = create_tenant(&running.url, "CLI tenant", "cli").await;
    let applied = apply_policy(&running.url, &created.admin_key).await;
    assert_eq!(applied.policy.unwrap().revision, 1);
    // `portcullis health`, what compose and the Kubernetes probes run: the store is ready.
    let health = portcullis(&[
        "health",
        &running.url,
        "--service",
        "portcullis.policystore.v1.PolicyService",
    ])
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&health.stdout);
    assert_eq!(
        (health.status.code(), stdout.trim()),
        (Some(0), "SERVING"),
        "{}",
        String::from_utf8_lossy(&health.stderr)
    );
    stop(running, "TERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_admission_judges_from_a_policy_store_over_nats() {
    let database = TestDatabase::create().await.unwrap();
    let nats = NatsServer::start().await.unwrap();
    let nats_url = nats.url();
    let store = start_store_with_token(&database.url, &nats_url);
    let admission = start_service("admission", &store.url, &nats_url, &[]);
    assert_huge_pages_off(&store);
    assert_huge_pages_off(&admission);
    let created = create_tenant(&store.url, "Admission tenant", "adm").await;
    apply_policy(&store.url, &created.admin_key).await;
    let connector_key = cluster_with_policy(&store.url, &created.admin_key, "distributed").await;
    check_reviews(&admission.url, &connector_key).await;
    stop(admission, "TERM");
    stop(store, "TERM");
}

#[test]
fn serve_admission_needs_the_service_credential() {
    let output = portcullis(&[
        "serve",
        "admission",
        "--policy-store-url",
        "http://127.0.0.1:1",
        "--nats-url",
        "nats://127.0.0.1:1",
        "--listen",
        "127.0.0.1:0",
    ])
    .output()
    .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("PORTCULLIS_SERVICE_TOKEN"), "{stderr}");
}

#[test]
fn serve_refuses_plain_text_on_a_public_address() {
    // Refused before any connection is tried: the URLs point nowhere.
    let output = portcullis(&[
        "serve",
        "policy-store",
        "--database-url",
        "postgres://nobody@127.0.0.1:1/none",
        "--nats-url",
        "nats://127.0.0.1:1",
        "--listen",
        "0.0.0.0:50051",
    ])
    .output()
    .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("without TLS"), "{stderr}");
}

/// `up` on a non-loopback address without TLS exits before it creates or binds anything
/// (no `--insecure`); `serve admission` refuses a plain-text policy store off this host
/// (its service credential would cross the network in the clear). Nothing is dialled.
#[test]
fn up_and_admission_refuse_plain_text_off_this_host() {
    let dir = portcullis_test_kit::DataDir::new().unwrap();
    let data = dir.path().join("data");
    let output = portcullis(&["up", "--listen", "0.0.0.0:50051", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("without TLS") && stderr.contains("--insecure"),
        "{stderr}"
    );
    assert!(!data.exists(), "up created its data folder before refusing");

    let output = portcullis(&[
        "serve",
        "admission",
        "--policy-store-url",
        "http://192.0.2.1:50051",
        "--nats-url",
        "nats://127.0.0.1:1",
        "--listen",
        "127.0.0.1:0",
    ])
    .env("PORTCULLIS_SERVICE_TOKEN", "svc-test-token-0123456789")
    .output()
    .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("plain text"), "{stderr}");
}

#[test]
fn up_refuses_a_short_operator_key() {
    let dir = portcullis_test_kit::DataDir::new().unwrap();
    let output = portcullis(&[
        "up",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ])
    .env("PORTCULLIS_OPERATOR_KEY", "short")
    .output()
    .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("PORTCULLIS_OPERATOR_KEY"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_signature_answers_with_the_stores_attestors() {
    use portcullis_proto::policystore::v1::attestor_service_client::AttestorServiceClient;
    use portcullis_proto::signature::v1 as ps;
    use portcullis_proto::signature::v1::signature_service_client::SignatureServiceClient;
    let database = TestDatabase::create().await.unwrap();
    let nats = NatsServer::start().await.unwrap();
    let nats_url = nats.url();
    let store = start_store_with_token(&database.url, &nats_url);
    let signature = start_service("signature", &store.url, &nats_url, &[]);
    let created = create_tenant(&store.url, "Signature tenant", "sig").await;
    let pem = std::fs::read_to_string(common::shared("conformance/cosign-signatures/cosign.pub")).unwrap();
    let document = serde_json::json!({"name": "release", "type": "cosignPublicKey", "publicKey": pem});
    AttestorServiceClient::connect(store.url.clone())
        .await
        .unwrap()
        .create_attestor(authed(
            &created.admin_key,
            pb::CreateAttestorRequest {
                document_json: document.to_string(),
            },
        ))
        .await
        .unwrap();
    // The tenant's key is checked by the store; the attestor read from it. Nothing listens on
    // the registry: an error verdict for the known attestor, "unknown" for the other.
    let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let answer = SignatureServiceClient::connect(signature.url.clone())
        .await
        .unwrap()
        .verify(authed(
            &created.admin_key,
            ps::VerifyRequest {
                image: format!("127.0.0.1:1/app@{digest}"),
                attestors: vec!["release".into(), "nobody".into()],
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let verdicts: Vec<ps::Verdict> = answer.verdicts.iter().map(ps::AttestorVerdict::verdict).collect();
    assert_eq!(verdicts, [ps::Verdict::Error, ps::Verdict::Error], "{answer:?}");
    assert_eq!(answer.verdicts[0].attestor_revision, 1, "{answer:?}");
    assert!(answer.verdicts[0].reason.contains("unavailable"), "{answer:?}");
    assert!(answer.verdicts[1].reason.contains("unknown attestor"), "{answer:?}");
    let refused = SignatureServiceClient::connect(signature.url.clone())
        .await
        .unwrap()
        .verify(authed("not-a-key", ps::VerifyRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    stop(signature, "TERM");
    stop(store, "TERM");
}

/// `cluster registry set|list|delete` through the CLI against `url` as `admin_key`: two
/// registries set, both listed (never a password), one deleted, the other listed, an
/// identity token set; then the service credential (the signature service's read) still
/// gets the remaining secrets.
async fn registry_credentials_through_the_cli(url: &str, admin_key: &str, tenant: &str, service_token: &str) {
    let cli = |args: &[&str], stdin: Option<&str>| {
        let mut all = vec!["--server", url, "--api-key", admin_key, "cluster"];
        all.extend(args);
        common::run_with(&all, stdin.map(|s| s.as_bytes().to_vec()), &[])
    };
    let ok = |args: &[&str], stdin: Option<&str>| {
        let run = cli(args, stdin);
        assert_eq!(run.code, Some(0), "{args:?}: {}", run.stderr);
        assert!(!run.stdout.contains("pw-") && !run.stderr.contains("pw-"), "{run:?}");
        run
    };
    ok(&["create", "reg-cluster"], None);
    ok(
        &[
            "registry",
            "set",
            "reg-cluster",
            "ghcr.io",
            "--username",
            "me",
            "--password-stdin",
        ],
        Some("pw-ghcr\n"),
    );
    ok(
        &[
            "registry",
            "set",
            "reg-cluster",
            "registry.example.com:5000",
            "--username",
            "bot",
            "--password-stdin",
        ],
        Some("pw-example"),
    );
    let table = ok(&["registry", "list", "reg-cluster"], None);
    let rows: Vec<Vec<&str>> = table.stdout.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0][..2], ["REGISTRY", "USERNAME"], "{}", table.stdout);
    assert_eq!(rows[1][..2], ["ghcr.io", "me"], "{}", table.stdout);
    assert_eq!(rows[2][..2], ["registry.example.com:5000", "bot"], "{}", table.stdout);
    let cluster: serde_json::Value =
        serde_json::from_str(&ok(&["get", "reg-cluster", "-o", "json"], None).stdout).unwrap();
    assert_eq!(
        cluster["credentialRegistries"],
        serde_json::json!(["ghcr.io", "registry.example.com:5000"])
    );

    ok(
        &["registry", "delete", "reg-cluster", "registry.example.com:5000"],
        None,
    );
    let listed: serde_json::Value =
        serde_json::from_str(&ok(&["registry", "list", "reg-cluster", "-o", "json"], None).stdout).unwrap();
    let hosts: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["registry"].as_str().unwrap())
        .collect();
    assert_eq!(hosts, ["ghcr.io"]);
    assert_eq!(listed[0]["username"], "me");
    // An identity token is stored under Docker's `<token>` username.
    ok(
        &["registry", "set", "reg-cluster", "quay.io", "--identity-token-stdin"],
        Some("pw-token\n"),
    );

    // Bad input is said, and nothing changes.
    for (args, stdin, says) in [
        (
            vec![
                "registry",
                "set",
                "nope",
                "ghcr.io",
                "--username",
                "u",
                "--password-stdin",
            ],
            Some("pw-x"),
            "not found",
        ),
        (
            vec![
                "registry",
                "set",
                "reg-cluster",
                "https://ghcr.io/x",
                "--username",
                "u",
                "--password-stdin",
            ],
            Some("pw-x"),
            "not a registry host",
        ),
        (
            vec![
                "registry",
                "set",
                "reg-cluster",
                "quay.io",
                "--username",
                "u",
                "--password-stdin",
            ],
            Some("\n"),
            "empty password",
        ),
        (
            vec!["registry", "delete", "reg-cluster", "docker.io"],
            None,
            "not found",
        ),
        (vec!["registry", "list", "nope"], None, "not found"),
    ] {
        let run = cli(&args, stdin);
        assert_eq!(run.code, Some(2), "{args:?}: {run:?}");
        assert!(run.stderr.contains(says), "{args:?}: {}", run.stderr);
        assert!(!run.stderr.contains("pw-x"), "{}", run.stderr);
    }

    let mut request = authed(
        service_token,
        pb::GetRegistryCredentialsRequest {
            tenant_id: tenant.to_owned(),
            cluster: Some(pc::ResourceRef {
                r#ref: Some(pc::resource_ref::Ref::Name("reg-cluster".to_owned())),
            }),
        },
    );
    request
        .metadata_mut()
        .insert(portcullis_server::TENANT_METADATA, tenant.parse().unwrap());
    let stored = ClusterServiceClient::connect(url.to_owned())
        .await
        .unwrap()
        .get_registry_credentials(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        stored.credentials,
        [
            pb::RegistryCredential {
                registry: "ghcr.io".to_owned(),
                username: "me".to_owned(),
                password: "pw-ghcr".to_owned(),
            },
            pb::RegistryCredential {
                registry: "quay.io".to_owned(),
                username: "<token>".to_owned(),
                password: "pw-token".to_owned(),
            }
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_cluster_registry_set_list_delete() {
    let dir = portcullis_test_kit::DataDir::new().unwrap();
    let data = dir.path().join("data");
    let args = [
        "up",
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--admission-listen",
        "127.0.0.1:0",
    ];
    let (running, _) = start_up_command(portcullis(&args).env("PORTCULLIS_SERVICE_TOKEN", SERVICE_TOKEN));
    let key = read_key(&data.join("bootstrap-admin.key"));
    registry_credentials_through_the_cli(&running.url, &key, "default", SERVICE_TOKEN).await;
    stop(running, "TERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_cluster_registry_set_list_delete() {
    let database = TestDatabase::create().await.unwrap();
    let nats = NatsServer::start().await.unwrap();
    let nats_url = nats.url();
    let dir = portcullis_test_kit::DataDir::new().unwrap();
    let key_file = dir.path().join("credentials.key");
    std::fs::write(&key_file, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let config = dir.path().join("portcullis.toml");
    std::fs::write(
        &config,
        format!(
            "[policy_store.credentials.keys]\nk1 = {:?}\n",
            key_file.to_str().unwrap()
        ),
    )
    .unwrap();
    let store = start_command(
        policy_store_command(&database.url, &nats_url)
            .env("PORTCULLIS_SERVICE_TOKEN", SERVICE_TOKEN)
            .env("PORTCULLIS_CONFIG", &config),
        "portcullis policy-store listening on ",
    );
    let created = create_tenant(&store.url, "Registry tenant", "reg").await;
    registry_credentials_through_the_cli(&store.url, &created.admin_key, "reg", SERVICE_TOKEN).await;
    stop(store, "TERM");
}

/// `up` runs the signature service and wires admission's signature stage to it: a signature
/// rule over an image whose registry cannot be reached gets the service's ERROR verdict with
/// its reason (without the wiring it would be "no signature verifier configured"), the rule
/// is not judged, and the cluster's failure mode decides: never a violation, never a pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_asks_its_signature_service() {
    use portcullis_proto::policystore::v1::attestor_service_client::AttestorServiceClient;
    use portcullis_proto::signature::v1 as ps;

    let dir = portcullis_test_kit::DataDir::new().unwrap();
    let data = dir.path().join("data");
    let args = ["up", "--data-dir", data.to_str().unwrap(), "--listen", "127.0.0.1:0"];
    let (running, admission_url) = start_up(&args);
    let key = read_key(&data.join("bootstrap-admin.key"));
    let pem = std::fs::read_to_string(common::shared("conformance/cosign-signatures/cosign.pub")).unwrap();
    let attestor = serde_json::json!({"name": "release", "type": "cosignPublicKey", "publicKey": pem});
    AttestorServiceClient::connect(running.url.clone())
        .await
        .unwrap()
        .create_attestor(authed(
            &key,
            pb::CreateAttestorRequest {
                document_json: attestor.to_string(),
            },
        ))
        .await
        .unwrap();
    let policy = serde_json::json!({"name": "cliPolicy", "default": {
        "rules": [],
        "imageVerification": [{"name": "signed", "action": "block", "attestors": {"all": ["release"]}}]
    }});
    PolicyServiceClient::connect(running.url.clone())
        .await
        .unwrap()
        .apply_policy(authed(
            &key,
            pb::ApplyPolicyRequest {
                document_json: policy.to_string(),
                expected_revision: None,
            },
        ))
        .await
        .unwrap();
    let connector_key = cluster_with_policy(&running.url, &key, "signed-cluster").await;
    // Nothing listens on port 1: the registry cannot be reached.
    let image = "127.0.0.1:1/team/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let review = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "signed", "operation": "CREATE", "namespace": "apps",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
                       "spec": {"containers": [{"name": "app", "image": image}]}}
        }
    });
    let answer = AdmissionServiceClient::connect(admission_url.clone())
        .await
        .unwrap()
        .review(authed(
            &connector_key,
            pa::ReviewRequest {
                admission_review_json: review.to_string().into_bytes().into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let decision = answer.decision.unwrap();
    assert_eq!(decision.signatures.len(), 1, "{decision:?}");
    let verdict = &decision.signatures[0];
    assert_eq!(verdict.attestor, "release", "{decision:?}");
    assert_eq!(verdict.verdict(), ps::Verdict::Error, "{decision:?}");
    assert!(verdict.reason.contains("unavailable"), "{decision:?}");
    assert_eq!(decision.not_judged.len(), 1, "{decision:?}");
    assert!(decision.violations.is_empty(), "{decision:?}");
    assert!(!decision.degraded.is_empty(), "the failure mode decided: {decision:?}");
    stop(running, "TERM");
}

/// `cliPolicy` with hostNetwork pods logged by continuous scanning.
const CONTINUOUS_POLICY: &str = r#"{"name":"cliPolicy","default":{"rules":[{"type":"podSecurityContext","action":"log","mitigation":"log","statement":{"properties":[{"key":"hostNetwork","value":"true"}]}}]}}"#;

/// Applies [`CONTINUOUS_POLICY`], registers a cluster with it, syncs a hostNetwork pod with
/// its connector key on the continuous service at `continuous_url`, and checks that the pod's
/// finding is listed there.
async fn check_continuous(store_url: &str, continuous_url: &str, admin_key: &str) {
    use portcullis_proto::continuous::v1 as pv;
    use portcullis_proto::continuous::v1::continuous_service_client::ContinuousServiceClient;

    PolicyServiceClient::connect(store_url.to_owned())
        .await
        .unwrap()
        .apply_policy(authed(
            admin_key,
            pb::ApplyPolicyRequest {
                document_json: CONTINUOUS_POLICY.to_owned(),
                expected_revision: None,
            },
        ))
        .await
        .unwrap();
    let connector_key = cluster_with_policy(store_url, admin_key, "continuous-cluster").await;
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "hostnet", "namespace": "web", "uid": "u-hostnet"},
        "spec": {"hostNetwork": true, "containers": [{"name": "app", "image": "nginx@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}]}
    });
    let update = |sequence: u64, update: pv::inventory_update::Update| pv::InventoryUpdate {
        cluster: None,
        sequence,
        update: Some(update),
    };
    let messages = vec![
        update(
            1,
            pv::inventory_update::Update::SnapshotStart(pv::SnapshotStart::default()),
        ),
        update(
            2,
            pv::inventory_update::Update::Upserts(pv::PodBatch {
                pods_json: vec![pod.to_string().into_bytes().into()],
            }),
        ),
        update(3, pv::inventory_update::Update::SnapshotEnd(pv::SnapshotEnd {})),
    ];
    let mut client = ContinuousServiceClient::connect(continuous_url.to_owned())
        .await
        .unwrap();
    let mut acks = client
        .sync_inventory(authed(&connector_key, futures_stream(messages)))
        .await
        .unwrap()
        .into_inner();
    for expected in 1..=3 {
        let ack = acks.message().await.unwrap().unwrap();
        assert_eq!(ack.sequence, expected);
        assert!(!ack.resync && ack.errors.is_empty(), "{ack:?}");
    }
    let findings = client
        .list_findings(authed(admin_key, pv::ListFindingsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .findings;
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].rule, "podSecurityContext { hostNetwork:true }");
}

/// The messages as a request stream that stays open (so that every ack comes back).
fn futures_stream<T: Send + 'static>(messages: Vec<T>) -> impl tokio_stream::Stream<Item = T> + Send + 'static {
    use tokio_stream::StreamExt as _;
    tokio_stream::iter(messages).chain(tokio_stream::pending())
}

/// `up` serves ContinuousService on its one address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_serves_continuous_scanning() {
    let dir = portcullis_test_kit::DataDir::new().unwrap();
    let data = dir.path().join("data");
    let args = ["up", "--data-dir", data.to_str().unwrap(), "--listen", "127.0.0.1:0"];
    let (running, _) = start_up(&args);
    let key = read_key(&data.join("bootstrap-admin.key"));
    check_continuous(&running.url, &running.url, &key).await;
    assert!(
        data.join("continuous.db").exists(),
        "its own SQLite file beside the store's"
    );
    stop(running, "TERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_continuous_runs_on_postgres_and_nats() {
    let database = TestDatabase::create().await.unwrap();
    let nats = NatsServer::start().await.unwrap();
    let nats_url = nats.url();
    let store = start_store_with_token(&database.url, &nats_url);
    let continuous = start_service("continuous", &store.url, &nats_url, &["--database-url", &database.url]);
    let created = create_tenant(&store.url, "Continuous tenant", "cont").await;
    check_continuous(&store.url, &continuous.url, &created.admin_key).await;
    stop(continuous, "TERM");
    stop(store, "TERM");
}

/// `serve telemetry` on PostgreSQL and NATS: a connector's Falco event is stored and found
/// by the tenant's search.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_telemetry_runs_on_postgres_and_nats() {
    use portcullis_proto::telemetry::v1 as pt;
    use portcullis_proto::telemetry::v1::telemetry_service_client::TelemetryServiceClient;

    let database = TestDatabase::create().await.unwrap();
    let nats = NatsServer::start().await.unwrap();
    let nats_url = nats.url();
    let store = start_store_with_token(&database.url, &nats_url);
    let telemetry = start_service("telemetry", &store.url, &nats_url, &["--database-url", &database.url]);
    let created = create_tenant(&store.url, "Telemetry tenant", "tele").await;
    PolicyServiceClient::connect(store.url.clone())
        .await
        .unwrap()
        .apply_policy(authed(
            &created.admin_key,
            pb::ApplyPolicyRequest {
                document_json: CONTINUOUS_POLICY.to_owned(),
                expected_revision: None,
            },
        ))
        .await
        .unwrap();
    let connector_key = cluster_with_policy(&store.url, &created.admin_key, "telemetry-cluster").await;
    let at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let event = serde_json::json!({"rule": "Terminal shell in container", "priority": "Warning", "time": at,
        "output": "a shell", "output_fields": {"k8s.ns.name": "web", "k8s.pod.name": "web-1"}});
    let mut client = TelemetryServiceClient::connect(telemetry.url.clone()).await.unwrap();
    let answer = client
        .ingest_events(authed(
            &connector_key,
            tokio_stream::iter(vec![pt::IngestEventsRequest {
                cluster: None,
                events_json: vec![event.to_string().into_bytes().into()],
            }]),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.accepted, 1, "{answer:?}");
    let found = client
        .search_events(authed(
            &created.admin_key,
            pt::SearchEventsRequest {
                query: "pod:web-1".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.total, 1, "{found:?}");
    assert_eq!(found.events[0].rule, "Terminal shell in container");
    stop(telemetry, "TERM");
    stop(store, "TERM");
}
