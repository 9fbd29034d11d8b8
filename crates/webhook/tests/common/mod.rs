//! Test plumbing: a throwaway CA and server certificate, a webhook on a free loopback port,
//! and a real TLS client (hyper client connections over tokio-rustls) trusting the CA.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame};
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis_webhook::{BoundWebhook, WebhookConfig, WebhookHandler, WebhookServer};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

/// The real AdmissionReview captured from a GKE cluster (Pod CREATE).
pub const KUBE_RS_REVIEW: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/conformance/admission-reviews/kube-rs_admission_review_v1_pod_create.json"
);

/// A CA and a server certificate for `localhost` and `127.0.0.1`, as PEM files.
pub struct Pki {
    /// Holds the files.
    pub dir: tempfile::TempDir,
    /// Server chain: leaf, then the CA.
    pub cert: PathBuf,
    /// Server key, PKCS#8.
    pub key: PathBuf,
    /// The CA certificate the client trusts.
    pub ca: CertificateDer<'static>,
}

/// Makes a fresh CA and server certificate.
pub fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "portcullis webhook test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

    let server_key = KeyPair::generate().unwrap();
    let mut server_params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    server_params.distinguished_name.push(DnType::CommonName, "localhost");
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server_params.signed_by(&server_key, &ca).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    std::fs::write(&cert, format!("{}{}", server_cert.pem(), ca.pem())).unwrap();
    std::fs::write(&key, server_key.serialize_pem()).unwrap();
    Pki {
        ca: ca.der().clone(),
        dir,
        cert,
        key,
    }
}

/// A webhook served in the background.
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Completes the shutdown future.
    pub stop: Option<oneshot::Sender<()>>,
    /// The serve task.
    pub task: JoinHandle<Result<(), portcullis_webhook::ServeError>>,
}

impl Running {
    /// Starts the graceful shutdown and waits for `serve` to return.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.unwrap().unwrap();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The default configuration on a free loopback port with the PKI's files.
pub fn config(pki: &Pki) -> WebhookConfig {
    WebhookConfig::new(([127, 0, 0, 1], 0).into(), pki.cert.clone(), pki.key.clone())
}

/// Binds and serves the webhook until [`Running::shutdown`].
pub async fn start(config: WebhookConfig, handler: Arc<dyn WebhookHandler>) -> Running {
    let bound: BoundWebhook = WebhookServer::bind(config, handler).await.unwrap();
    let addr = bound.local_addr();
    assert_eq!(bound.url(), format!("https://{addr}"));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(bound.serve(async move {
        let _ = stopped.await;
    }));
    Running {
        addr,
        stop: Some(stop),
        task,
    }
}

/// How the client talks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// ALPN `http/1.1`.
    Http1,
    /// ALPN `h2`.
    Http2,
    /// No ALPN, HTTP/1.1 (the server tells by the preface).
    Http1NoAlpn,
    /// No ALPN, HTTP/2 with prior knowledge.
    Http2NoAlpn,
}

impl Proto {
    /// Every way to talk.
    pub const ALL: [Proto; 4] = [Proto::Http1, Proto::Http2, Proto::Http1NoAlpn, Proto::Http2NoAlpn];

    fn alpn(self) -> Vec<Vec<u8>> {
        match self {
            Proto::Http1 => vec![b"http/1.1".to_vec()],
            Proto::Http2 => vec![b"h2".to_vec()],
            Proto::Http1NoAlpn | Proto::Http2NoAlpn => Vec::new(),
        }
    }

    fn is_h2(self) -> bool {
        matches!(self, Proto::Http2 | Proto::Http2NoAlpn)
    }
}

/// A TLS connection to the webhook, trusting only the test CA.
pub async fn tls_connect(addr: SocketAddr, ca: &CertificateDer<'static>, proto: Proto) -> TlsStream<TcpStream> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let mut config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = proto.alpn();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let negotiated = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    match proto {
        Proto::Http1 => assert_eq!(negotiated.as_deref(), Some(&b"http/1.1"[..])),
        Proto::Http2 => assert_eq!(negotiated.as_deref(), Some(&b"h2"[..])),
        Proto::Http1NoAlpn | Proto::Http2NoAlpn => assert_eq!(negotiated, None),
    }
    tls
}

/// A client connection speaking HTTP/1.1 or HTTP/2.
pub enum Client {
    /// HTTP/1.1.
    H1(hyper::client::conn::http1::SendRequest<RequestBody>),
    /// HTTP/2.
    H2(hyper::client::conn::http2::SendRequest<RequestBody>),
}

/// The request body the tests send: whole, or in chunks with no declared length.
pub type RequestBody = http_body_util::Either<Full<Bytes>, Chunked>;

/// A body sent in chunks whose total size the client does not declare.
pub struct Chunked(pub VecDeque<Bytes>);

impl Body for Chunked {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.pop_front().map(|chunk| Ok(Frame::data(chunk))))
    }
}

impl Client {
    /// Connects (TLS, then the HTTP handshake).
    pub async fn connect(addr: SocketAddr, ca: &CertificateDer<'static>, proto: Proto) -> Client {
        let io = TokioIo::new(tls_connect(addr, ca, proto).await);
        if proto.is_h2() {
            let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
            tokio::spawn(conn);
            Client::H2(sender)
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            Client::H1(sender)
        }
    }

    /// Sends one request and reads the whole answer.
    pub async fn send(&mut self, request: Request<RequestBody>) -> Answer {
        let result = self.try_send(request).await;
        result.unwrap()
    }

    /// Sends one request; the error when the connection fails.
    pub async fn try_send(&mut self, mut request: Request<RequestBody>) -> Result<Answer, hyper::Error> {
        let response = match self {
            Client::H1(sender) => {
                // Origin form and a Host header on HTTP/1.1.
                let path = request.uri().path_and_query().map(|p| p.as_str().to_owned()).unwrap();
                *request.uri_mut() = path.parse().unwrap();
                request
                    .headers_mut()
                    .insert(http::header::HOST, http::HeaderValue::from_static("localhost"));
                sender.ready().await?;
                sender.send_request(request).await?
            }
            Client::H2(sender) => {
                sender.ready().await?;
                sender.send_request(request).await?
            }
        };
        let status = response.status();
        let version = response.version();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Answer {
            status,
            version,
            headers,
            body,
        })
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Answer {
    /// Its status.
    pub status: StatusCode,
    /// The HTTP version it came over.
    pub version: Version,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }

    /// The `error` of a JSON error body.
    pub fn error(&self) -> String {
        assert_eq!(self.content_type(), "application/json", "{self:?}");
        self.json()["error"].as_str().unwrap().to_owned()
    }

    /// The content type.
    pub fn content_type(&self) -> &str {
        self.headers
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }
}

/// A request to the webhook: `method` on `https://localhost{path}` with the given headers
/// and a whole body.
pub fn request(method: &str, path: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Request<RequestBody> {
    let mut builder = Request::builder()
        .method(method)
        .uri(format!("https://localhost{path}"));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder
        .body(http_body_util::Either::Left(Full::new(body.into())))
        .unwrap()
}

/// A review POST with the usual headers.
pub fn review(path: &str, bearer: &str, body: impl Into<Bytes>) -> Request<RequestBody> {
    let authorization = format!("Bearer {bearer}");
    request(
        "POST",
        path,
        &[
            ("authorization", authorization.as_str()),
            ("content-type", "application/json"),
        ],
        body,
    )
}
