//! Scenario 12: the validating webhook over TLS with a real client.
//!
//! Every scenario starts its own stack (a policy store and admission replicas following its
//! bus) in the mode it is given, embedded and distributed (`both!`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use portcullis_admission::testing::StackOptions;
use portcullis_admission::webhook::WebhookOptions;
use portcullis_server::Mode;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
use serde_json::Value;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

use portcullis_integration_tests::admission::*;

/// A test CA and a server certificate for localhost and 127.0.0.1, as PEM files in `dir`.
fn pki(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, CertificateDer<'static>) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "portcullis webhook suite test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "localhost");
    let server_cert = params.signed_by(&server_key, &ca).unwrap();
    let cert = dir.join("tls.crt");
    let key = dir.join("tls.key");
    std::fs::write(&cert, format!("{}{}", server_cert.pem(), ca.pem())).unwrap();
    std::fs::write(&key, server_key.serialize_pem()).unwrap();
    (cert, key, ca.der().clone())
}

/// One HTTP/1.1 POST over a fresh TLS connection trusting only `ca`: (status, body).
async fn post(
    addr: SocketAddr,
    ca: &CertificateDer<'static>,
    path: &str,
    bearer: Option<&str>,
    body: Vec<u8>,
) -> (u16, Bytes) {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let mut request = http::Request::post(path)
        .header(http::header::HOST, "127.0.0.1")
        .header(http::header::CONTENT_TYPE, "application/json");
    if let Some(token) = bearer {
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request.body(Full::new(Bytes::from(body))).unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, body)
}

/// Scenario 12: a real AdmissionReview over HTTPS is answered with its uid; no bearer is 401.
pub async fn webhook_over_tls(mode: Mode) {
    let dir = portcullis_test_kit::DataDir::new().unwrap();
    let (tls_cert, tls_key, ca) = pki(dir.path());
    let options = StackOptions {
        webhook: Some(WebhookOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls_cert,
            tls_key,
        }),
        ..StackOptions::new(mode)
    };
    let env = Env::start(
        options,
        &policy("hook", serde_json::json!([host_network("block")])).to_string(),
    )
    .await;
    let addr = env.stack.replicas[0].webhook_addr().expect("the webhook runs");
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/conformance/admission-reviews/kube-rs_admission_review_v1_pod_create.json"
    );
    let body = std::fs::read(file).unwrap();
    let uid = serde_json::from_slice::<Value>(&body).unwrap()["request"]["uid"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/validate/{}", env.cluster_id);

    let (status, answer) = post(addr, &ca, &path, Some(&env.connector_key), body.clone()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["response"]["uid"], uid.as_str());
    assert!(answer["response"]["allowed"].is_boolean());

    // A violating pod is denied through the webhook too.
    let denied = create_pod(pod(
        "web",
        "default",
        pod_spec(true, vec![container("app", "nginx:1.25", false)]),
    ));
    let (status, answer) = post(
        addr,
        &ca,
        &path,
        Some(&env.connector_key),
        denied.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(answer["response"]["allowed"], false, "{answer}");
    assert_eq!(answer["response"]["uid"], uid_of(&denied).as_str());

    let (status, _) = post(addr, &ca, &path, None, body).await;
    assert_eq!(status, 401);
}

portcullis_test_kit::both! {
    embedded: portcullis_server::Mode::Embedded,
    distributed: portcullis_server::Mode::Distributed;
    webhook_over_tls,
}
