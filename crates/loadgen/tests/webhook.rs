//! The `webhook` load generator against the no-op webhook (started in-process on 127.0.0.1:0
//! behind the real HTTPS transport, with a throwaway CA): short open-loop and closed-loop
//! runs over HTTP/2 and HTTP/1.1 count only successes (200, the uid echoed, allowed), a
//! wrong key fails at the first call with its status, an unexpected verdict is an error, and
//! a server certificate from another CA is refused. Functional only: nothing here asserts
//! speed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::path::PathBuf;
use std::process::Output;

use common::{REVIEW, report};

use portcullis_loadgen::admission::ReviewTemplate;
use portcullis_loadgen::noop_webhook;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};

const KEY: &str = "test-connector-key-0123456789";

/// A CA and a server certificate for 127.0.0.1 in a temporary folder: (folder, CA, cert, key).
fn pki() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "loadgen test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (ca_path, cert_path, key_path) = (
        dir.path().join("ca.crt"),
        dir.path().join("tls.crt"),
        dir.path().join("tls.key"),
    );
    std::fs::write(&ca_path, ca.pem()).unwrap();
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (dir, ca_path, cert_path, key_path)
}

/// The no-op webhook on a free loopback port: its URL, the CA to trust, and what stops it.
struct Noop {
    url: String,
    ca: PathBuf,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn start_noop() -> Noop {
    let (dir, ca, cert, key) = pki();
    let template = ReviewTemplate::new(&std::fs::read(REVIEW).unwrap()).unwrap();
    let server = noop_webhook::bind("127.0.0.1:0".parse().unwrap(), cert, key, KEY, Some(template))
        .await
        .unwrap();
    let url = server.url();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server
            .serve(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    Noop {
        url,
        ca,
        stop,
        task,
        _dir: dir,
    }
}

impl Noop {
    async fn stop(self) {
        self.stop.send(()).unwrap();
        self.task.await.unwrap();
    }
}

/// Runs the built `portcullis-loadgen webhook` with `args` after the common ones.
async fn loadgen(noop: &Noop, key: &str, args: &[&str]) -> Output {
    let mut command = common::loadgen();
    command
        .args([
            "webhook", "--server", &noop.url, "--key", key, "--review", REVIEW, "--json",
        ])
        .args(["--cluster", "bench-1"])
        .arg("--ca-cert")
        .arg(&noop.ca)
        .args(args);
    common::output(command).await
}

/// Every answered call a success (200, uid echoed, allowed), none denied.
fn assert_only_allowed(report: &serde_json::Value) {
    assert!(report["ok"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
    assert_eq!(report["dropped"], 0, "{report}");
    assert_eq!(report["latency_ms"]["n"].as_u64(), report["ok"].as_u64(), "{report}");
    let verdicts = report["notes"]["verdicts"].as_str().unwrap();
    assert!(verdicts.contains(" 0 denied"), "{verdicts}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_over_h2_and_http1_sends_the_scheduled_calls() {
    let noop = start_noop().await;
    for (protocol, transport) in [("h2", "HTTP/2"), ("http1.1", "HTTP/1.1")] {
        let args = [
            "--protocol",
            protocol,
            "--expect",
            "allowed",
            "--rate",
            "200",
            "--duration",
            "1s",
            "--warmup",
            "0s",
            "--connections",
            "2",
        ];
        let report = report(&loadgen(&noop, KEY, &args).await);
        assert_only_allowed(&report);
        // Calls 0..200 are due within the window; each is sent, so each is answered.
        assert_eq!(report["ok"], 200, "{report}");
        let note = report["notes"]["transport"].as_str().unwrap();
        assert!(note.contains(transport), "{note}");
        // The first call (unrecorded) and the 200 recorded ones, all allowed.
        let verdicts = report["notes"]["verdicts"].as_str().unwrap();
        assert!(verdicts.starts_with("201 allowed"), "{verdicts}");
    }
    noop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_over_h2_and_http1_has_only_successes() {
    let noop = start_noop().await;
    for protocol in ["h2", "http1.1"] {
        let args = [
            "--protocol",
            protocol,
            "--closed-loop",
            "--concurrency",
            "8",
            "--connections",
            "4",
            "--duration",
            "1s",
            "--warmup",
            "200ms",
        ];
        let report = report(&loadgen(&noop, KEY, &args).await);
        assert_only_allowed(&report);
        assert_eq!(report["concurrency"], 8);
    }
    noop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_keys_verdicts_and_certificates_are_reported() {
    let noop = start_noop().await;
    let short = ["--rate", "50", "--duration", "200ms", "--warmup", "0s"];

    let output = loadgen(&noop, "not-the-key-0123456789", &short).await;
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("the first webhook call failed: http-401"), "{stderr}");

    // The no-op allows everything: expecting denials fails at the first call too.
    let mut args = short.to_vec();
    args.extend(["--expect", "denied"]);
    let output = loadgen(&noop, KEY, &args).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unexpected-allowed"), "{stderr}");

    // Another CA: the TLS handshake is refused before any load.
    let (_other, other_ca, _, _) = pki();
    let mut command = common::loadgen();
    command
        .args(["webhook", "--server", &noop.url, "--key", KEY, "--review", REVIEW])
        .args(["--cluster", "bench-1", "--closed-loop", "--duration", "200ms"])
        .arg("--ca-cert")
        .arg(&other_ca);
    let output = common::output(command).await;
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("TLS handshake"), "{stderr}");
    noop.stop().await;
}
