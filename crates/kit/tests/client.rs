//! The client builder: the credential and the tenant reach the server; bad input is refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use portcullis_kit::client::{ClientConfig, ClientError, Credential, CredentialError, Trust, for_tenant};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// A health server that reports the metadata of every call it gets.
async fn echo_server() -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<tonic::metadata::MetadataMap>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let service = InterceptedService::new(health, move |request: tonic::Request<()>| {
        let _ = tx.send(request.metadata().clone());
        Ok(request)
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    (url, rx)
}

#[tokio::test]
async fn the_credential_tenant_and_deadline_reach_the_server() {
    let (url, mut seen) = echo_server().await;
    let channel = ClientConfig::new(&url)
        .unwrap()
        .request_timeout(Duration::from_secs(3))
        .connect()
        .await
        .unwrap();
    let credential = Credential::bearer(" svc-token \n")
        .unwrap()
        .with_timeout(Duration::from_secs(7));
    assert!(!format!("{credential:?}").contains("svc-token"));
    let mut client = HealthClient::with_interceptor(channel, credential);
    let request = for_tenant("acme", HealthCheckRequest::default()).unwrap();
    client.check(request).await.unwrap();
    let metadata = seen.recv().await.unwrap();
    let text = |name: &str| metadata.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    assert_eq!(text("authorization").as_deref(), Some("Bearer svc-token"));
    assert_eq!(text("x-portcullis-tenant").as_deref(), Some("acme"));
    assert_eq!(text("grpc-timeout").as_deref(), Some("7000000u"));

    // A call's own shorter deadline wins over the credential's.
    let mut request = tonic::Request::new(HealthCheckRequest::default());
    request.set_timeout(Duration::from_millis(500));
    client.check(request).await.unwrap();
    let metadata = seen.recv().await.unwrap();
    assert_eq!(metadata.get("grpc-timeout").unwrap().to_str().unwrap(), "500000u");
}

#[test]
fn bad_keys_urls_and_cas_are_refused() {
    assert_eq!(Credential::bearer("  ").unwrap_err(), CredentialError::Empty);
    assert_eq!(Credential::bearer("a b").unwrap_err(), CredentialError::BadCharacters);
    assert!(matches!(ClientConfig::new("ftp://h:1"), Err(ClientError::Url { .. })));
    assert!(matches!(ClientConfig::new("not a url"), Err(ClientError::Url { .. })));
    let plain = ClientConfig::new("http://127.0.0.1:1")
        .unwrap()
        .trust(Trust::Ca(b"pem".to_vec()));
    assert!(matches!(plain.endpoint(), Err(ClientError::CaWithoutTls { .. })));
    assert!(ClientConfig::new("https://[::1]:8443").unwrap().endpoint().is_ok());
    let missing = Trust::ca_file(std::path::Path::new("/nonexistent/ca.pem")).unwrap_err();
    assert!(matches!(missing, ClientError::CaFile { .. }));
}

#[tokio::test]
async fn an_unreachable_server_is_one_connect_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let err = ClientConfig::new(&url).unwrap().connect().await.unwrap_err();
    let ClientError::Connect { reason, .. } = &err else {
        panic!("expected a connect error, got {err:?}")
    };
    assert!(err.to_string().starts_with(&format!("cannot reach {url}")), "{err}");
    assert!(!reason.contains('\n'));
}
