//! A TLS test PKI and a TLS client for the webhook suites: a private CA and a server
//! certificate, one HTTP/1.1 POST, and a raw connection that trickles a body.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

/// A test CA and a server certificate for localhost and 127.0.0.1, as PEM files in `dir`.
pub fn pki(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, CertificateDer<'static>) {
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
pub async fn post(
    addr: SocketAddr,
    ca: &CertificateDer<'static>,
    path: &str,
    bearer: Option<&str>,
    body: Vec<u8>,
) -> (u16, Bytes) {
    let tls = connect(addr, ca).await;
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

/// A TLS connection to `addr` trusting only `ca` (HTTP/1.1).
pub async fn connect(addr: SocketAddr, ca: &CertificateDer<'static>) -> TlsStream<tokio::net::TcpStream> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap()
}

/// A review's head promising a 100 KB body, and 10 bytes of it: the server waits for the
/// rest (a client trickling its body), holding whatever the request holds.
pub async fn trickle(
    addr: SocketAddr,
    ca: &CertificateDer<'static>,
    path: &str,
    bearer: &str,
) -> TlsStream<tokio::net::TcpStream> {
    let mut tls = connect(addr, ca).await;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {bearer}\r\n\
         Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{{\"request\""
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    tls
}

/// The status code of the answer on `tls` within `wait` (`None`: no answer by then).
pub async fn status_within(tls: &mut TlsStream<tokio::net::TcpStream>, wait: std::time::Duration) -> Option<u16> {
    let mut buf = vec![0u8; 512];
    match tokio::time::timeout(wait, tls.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => String::from_utf8_lossy(&buf[..n])
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok()),
        _ => None,
    }
}
