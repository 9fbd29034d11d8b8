//! `webhook`: the HTTPS validating webhook (`POST /validate/{cluster}`, the connector key as
//! bearer token) under load, through the [`crate::load`] driver, as a kube-apiserver calls it:
//!
//! - `--protocol h2`: HTTP/2 (ALPN `h2`), requests multiplexed over `--connections`
//!   connections in turn (the API server keeps one or a few per webhook);
//! - `--protocol http1.1`: HTTP/1.1 (ALPN `http/1.1`), a pool of `--connections` keep-alive
//!   connections with one request in flight on each; a call waits for a free connection
//!   (its wait counts in its latency) and a broken one is replaced on the next call.
//!
//! TLS trusts only `--ca-cert` (the private CA). The body is the review template of
//! [`crate::admission`] (compact JSON, `request.uid` fresh for every call) with the API
//! server's `?timeout=` query. A call succeeds when the answer is `200` with an
//! AdmissionReview whose `response.uid` is the one sent and, with `--expect`, whose
//! `response.allowed` is the one expected.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

use crate::admission::{ReviewTemplate, call_uid, run_id};
use crate::load::{self, LoadOptions, Outcome, Report};

/// The API server's deadline query on every call (its default `timeoutSeconds`).
const TIMEOUT_QUERY: &str = "timeout=10s";

/// How the generator talks to the webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// HTTP/2, multiplexed.
    #[value(name = "h2")]
    H2,
    /// HTTP/1.1, one request in flight per connection.
    #[value(name = "http1.1")]
    Http11,
}

impl Protocol {
    fn alpn(self) -> &'static [u8] {
        match self {
            Protocol::H2 => b"h2",
            Protocol::Http11 => b"http/1.1",
        }
    }
}

/// The verdict every answer must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Expect {
    /// `response.allowed: true`.
    Allowed,
    /// `response.allowed: false`.
    Denied,
}

/// Arguments of `webhook`.
#[derive(Debug, Args)]
pub struct WebhookArgs {
    /// The webhook, `https://HOST:PORT`.
    #[arg(long)]
    pub server: String,
    /// The CA certificate (PEM) to trust for the server's certificate; nothing else is trusted.
    #[arg(long)]
    pub ca_cert: PathBuf,
    /// The connector key, sent as `Authorization: Bearer KEY`.
    #[arg(long, env = "PORTCULLIS_CONNECTOR_KEY", hide_env_values = true)]
    pub key: String,
    /// The `{cluster}` of the path: the cluster's id or name.
    #[arg(long)]
    pub cluster: String,
    /// The AdmissionReview JSON file (e.g. crates/engine/benches/data/review-8k.json).
    #[arg(long)]
    pub review: PathBuf,
    /// `h2` (multiplexed over `--connections`) or `http1.1` (a pool of `--connections`).
    #[arg(long, value_enum, default_value = "h2")]
    pub protocol: Protocol,
    /// Counts an answer with the other verdict as an error (`unexpected-allowed`,
    /// `unexpected-denied`); without it either verdict is a success.
    #[arg(long, value_enum)]
    pub expect: Option<Expect>,
    /// How to load the server.
    #[command(flatten)]
    pub load: LoadOptions,
}

/// Where to connect and how to check the server.
struct Target {
    host: String,
    port: u16,
    name: ServerName<'static>,
    tls: TlsConnector,
    protocol: Protocol,
    connect_timeout: Duration,
}

impl Target {
    fn new(args: &WebhookArgs) -> Result<Target> {
        let uri: Uri = args
            .server
            .parse()
            .with_context(|| format!("--server {:?} is not a URL", args.server))?;
        if uri.scheme_str() != Some("https") {
            bail!("--server must be https://HOST:PORT (the webhook speaks TLS only)");
        }
        let host = uri.host().context("--server has no host")?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = uri.port_u16().unwrap_or(443);
        let name = ServerName::try_from(host.clone()).with_context(|| format!("{host:?} is not a server name"))?;
        let pem = std::fs::read(&args.ca_cert).with_context(|| format!("reading {}", args.ca_cert.display()))?;
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.with_context(|| format!("{}: not a PEM certificate", args.ca_cert.display()))?;
            roots
                .add(cert)
                .with_context(|| format!("{}: not a usable CA certificate", args.ca_cert.display()))?;
        }
        if roots.is_empty() {
            bail!("{}: no CERTIFICATE block", args.ca_cert.display());
        }
        let mut config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![args.protocol.alpn().to_vec()];
        Ok(Target {
            host,
            port,
            name,
            tls: TlsConnector::from(Arc::new(config)),
            protocol: args.protocol,
            connect_timeout: Duration::from_secs(5),
        })
    }

    /// A TLS connection that agreed on the protocol by ALPN.
    async fn tls(&self) -> Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>> {
        let connect = async {
            let tcp = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .with_context(|| format!("connecting to {}:{}", self.host, self.port))?;
            // As the API server's Go client: no Nagle delay on small writes.
            tcp.set_nodelay(true).context("TCP_NODELAY")?;
            let tls = self
                .tls
                .connect(self.name.clone(), tcp)
                .await
                .context("TLS handshake (is --ca-cert the server's CA?)")?;
            let alpn = tls.get_ref().1.alpn_protocol();
            if alpn != Some(self.protocol.alpn()) {
                bail!(
                    "the server did not agree on ALPN {:?}",
                    String::from_utf8_lossy(self.protocol.alpn())
                );
            }
            Ok(TokioIo::new(tls))
        };
        tokio::time::timeout(self.connect_timeout, connect)
            .await
            .context("connecting took more than 5 s")?
    }

    async fn h2(&self) -> Result<http2::SendRequest<Full<Bytes>>> {
        let (sender, conn) = http2::handshake(TokioExecutor::new(), self.tls().await?)
            .await
            .context("HTTP/2 handshake")?;
        tokio::spawn(conn);
        Ok(sender)
    }

    async fn h1(&self) -> Result<http1::SendRequest<Full<Bytes>>> {
        let (sender, conn) = http1::handshake(self.tls().await?)
            .await
            .context("HTTP/1.1 handshake")?;
        tokio::spawn(conn);
        Ok(sender)
    }
}

/// HTTP/1.1 connections, each with at most one request in flight.
struct Pool {
    target: Arc<Target>,
    /// Connections not in use.
    idle: Mutex<Vec<http1::SendRequest<Full<Bytes>>>>,
    /// One permit per connection: a call holds one while it uses a connection.
    free: Semaphore,
}

impl Pool {
    /// Sends `request` over an idle connection (a new one when none is open for the permit,
    /// after a broken one was dropped) and reads the answer whole.
    async fn send(&self, request: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), String> {
        let _permit = self.free.acquire().await.map_err(|_| "pool-closed".to_owned())?;
        let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let mut sender = match idle {
            Some(sender) if !sender.is_closed() => sender,
            _ => self.target.h1().await.map_err(|_| "connect".to_owned())?,
        };
        let answer = async {
            sender.ready().await?;
            read(sender.send_request(request)).await
        }
        .await
        .map_err(|e| transport_error(&e))?;
        // Only a connection whose answer was read whole goes back (a failed one is dropped).
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).push(sender);
        Ok(answer)
    }
}

/// One way to reach the server: an HTTP/2 connection or the HTTP/1.1 pool.
#[derive(Clone)]
enum Connection {
    /// One HTTP/2 connection (streams multiplexed).
    H2(http2::SendRequest<Full<Bytes>>),
    /// The pool of HTTP/1.1 connections.
    H1(Arc<Pool>),
}

impl Connection {
    async fn send(self, request: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), String> {
        match self {
            Connection::H2(mut sender) => {
                let answer = async {
                    sender.ready().await?;
                    read(sender.send_request(request)).await
                }
                .await;
                answer.map_err(|e| transport_error(&e))
            }
            Connection::H1(pool) => pool.send(request).await,
        }
    }
}

/// The status and the whole body of a response.
async fn read(
    response: impl std::future::Future<Output = hyper::Result<http::Response<hyper::body::Incoming>>>,
) -> hyper::Result<(StatusCode, Bytes)> {
    let response = response.await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// An error's name for the report.
fn transport_error(e: &hyper::Error) -> String {
    if e.is_timeout() {
        "timeout".to_owned()
    } else if e.is_closed() || e.is_incomplete_message() {
        "connection-closed".to_owned()
    } else {
        "transport".to_owned()
    }
}

/// `--connections` HTTP/2 connections, or one pool of `--connections` HTTP/1.1 ones (all
/// opened now, so that a wrong CA or key fails before the run).
async fn connect(target: Arc<Target>, connections: usize) -> Result<Vec<Connection>> {
    let n = connections.max(1);
    match target.protocol {
        Protocol::H2 => {
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                out.push(Connection::H2(target.h2().await?));
            }
            Ok(out)
        }
        Protocol::Http11 => {
            let mut idle = Vec::with_capacity(n);
            for _ in 0..n {
                idle.push(target.h1().await?);
            }
            let pool = Pool {
                target,
                idle: Mutex::new(idle),
                free: Semaphore::new(n),
            };
            Ok(vec![Connection::H1(Arc::new(pool))])
        }
    }
}

/// The part of a response AdmissionReview checked.
#[derive(Deserialize)]
struct Answer<'a> {
    #[serde(borrow)]
    response: AnswerResponse<'a>,
}

#[derive(Deserialize)]
struct AnswerResponse<'a> {
    #[serde(borrow)]
    uid: Cow<'a, str>,
    allowed: bool,
}

/// Verdicts seen, warm-up included.
#[derive(Debug, Default)]
struct Verdicts {
    allowed: AtomicU64,
    denied: AtomicU64,
}

/// Checks one answer: `200`, the uid sent, the verdict expected.
fn check(status: StatusCode, body: &[u8], uid: &str, expect: Option<Expect>, verdicts: &Verdicts) -> Outcome {
    if status != StatusCode::OK {
        return Err(format!("http-{}", status.as_u16()));
    }
    let answer: Answer<'_> = serde_json::from_slice(body).map_err(|_| "bad-response".to_owned())?;
    if answer.response.uid != uid {
        return Err("wrong-uid".to_owned());
    }
    let allowed = answer.response.allowed;
    let counter = if allowed { &verdicts.allowed } else { &verdicts.denied };
    counter.fetch_add(1, Ordering::Relaxed);
    match (expect, allowed) {
        (Some(Expect::Denied), true) => Err("unexpected-allowed".to_owned()),
        (Some(Expect::Allowed), false) => Err("unexpected-denied".to_owned()),
        _ => Ok(()),
    }
}

/// What every call shares.
struct Call {
    protocol: Protocol,
    /// HTTP/2: the absolute URI; HTTP/1.1: the origin form (with a `Host` header).
    uri: Uri,
    host: HeaderValue,
    authorization: HeaderValue,
    template: ReviewTemplate,
    expect: Option<Expect>,
    verdicts: Verdicts,
    timeout: Duration,
}

impl Call {
    async fn make(self: Arc<Call>, connection: Connection, uid: String) -> Outcome {
        let mut request = Request::new(Full::new(Bytes::from(self.template.review(&uid))));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = self.uri.clone();
        let headers = request.headers_mut();
        if self.protocol == Protocol::Http11 {
            headers.insert(HOST, self.host.clone());
        }
        headers.insert(AUTHORIZATION, self.authorization.clone());
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let (status, body) = tokio::time::timeout(self.timeout, connection.send(request))
            .await
            .map_err(|_| "timeout".to_owned())??;
        check(status, &body, &uid, self.expect, &self.verdicts)
    }
}

/// Runs `webhook`.
pub async fn run(args: &WebhookArgs) -> Result<Report> {
    let text = std::fs::read(&args.review).with_context(|| format!("reading {}", args.review.display()))?;
    let template = ReviewTemplate::new(&text).with_context(|| format!("in {}", args.review.display()))?;
    let bytes = template.len();
    let target = Arc::new(Target::new(args)?);
    let cluster = percent_encode(&args.cluster);
    let path = format!("/validate/{cluster}?{TIMEOUT_QUERY}");
    let authority = match target.name {
        ServerName::IpAddress(ip) if std::net::IpAddr::from(ip).is_ipv6() => {
            format!("[{}]:{}", target.host, target.port)
        }
        _ => format!("{}:{}", target.host, target.port),
    };
    let uri: Uri = match args.protocol {
        Protocol::H2 => format!("https://{authority}{path}").parse(),
        Protocol::Http11 => path.parse(),
    }
    .context("--cluster does not make a valid path")?;
    let call = Arc::new(Call {
        protocol: args.protocol,
        uri,
        host: HeaderValue::from_str(&authority).context("the server's host is not a valid Host header")?,
        authorization: HeaderValue::from_str(&format!("Bearer {}", args.key.trim()))
            .context("--key is not a valid header value")?,
        template,
        expect: args.expect,
        verdicts: Verdicts::default(),
        timeout: args.load.timeout,
    });
    let connections = load::Connections::to_one(args.server.clone(), connect(target, args.load.connections).await?);
    let (run, counter) = (run_id(), Arc::new(AtomicU64::new(0)));
    let mut report = load::drive(&args.load, connections, "webhook", {
        let call = call.clone();
        move |_, connection| {
            let uid = call_uid(run, counter.fetch_add(1, Ordering::Relaxed));
            call.clone().make(connection, uid)
        }
    })
    .await?;
    let transport = match args.protocol {
        Protocol::H2 => format!(
            "HTTPS, HTTP/2 (ALPN h2): requests multiplexed over {} connections in turn",
            args.load.connections.max(1)
        ),
        Protocol::Http11 => format!(
            "HTTPS, HTTP/1.1 (ALPN http/1.1): a pool of {} keep-alive connections, one request in flight each",
            args.load.connections.max(1)
        ),
    };
    let verdicts = format!(
        "{} allowed, {} denied (warm-up and the first call included)",
        call.verdicts.allowed.load(Ordering::Relaxed),
        call.verdicts.denied.load(Ordering::Relaxed)
    );
    report.notes.splice(
        0..0,
        [
            (
                "review".to_owned(),
                format!(
                    "{} ({bytes} bytes of compact JSON, request.uid unique per call)",
                    args.review.display()
                ),
            ),
            ("transport".to_owned(), transport),
            ("verdicts".to_owned(), verdicts),
        ],
    );
    Ok(report)
}

/// `text` as one path segment: unreserved characters kept, every other byte `%XX`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

    use super::*;

    #[test]
    fn answers_are_checked_for_status_uid_and_verdict() {
        let verdicts = Verdicts::default();
        let allowed = br#"{"response":{"uid":"u-1","allowed":true}}"#;
        let denied = br#"{"response":{"uid":"u-1","allowed":false,"status":{"code":403}}}"#;
        assert_eq!(check(StatusCode::OK, allowed, "u-1", None, &verdicts), Ok(()));
        assert_eq!(
            check(StatusCode::OK, denied, "u-1", Some(Expect::Denied), &verdicts),
            Ok(())
        );
        assert_eq!(
            check(StatusCode::OK, denied, "u-1", Some(Expect::Allowed), &verdicts),
            Err("unexpected-denied".to_owned())
        );
        assert_eq!(
            check(StatusCode::OK, allowed, "u-1", Some(Expect::Denied), &verdicts),
            Err("unexpected-allowed".to_owned())
        );
        assert_eq!(
            check(StatusCode::OK, allowed, "u-2", None, &verdicts),
            Err("wrong-uid".to_owned())
        );
        assert_eq!(
            check(StatusCode::OK, b"{}", "u-1", None, &verdicts),
            Err("bad-response".to_owned())
        );
        assert_eq!(
            check(StatusCode::UNAUTHORIZED, allowed, "u-1", None, &verdicts),
            Err("http-401".to_owned())
        );
        assert_eq!(verdicts.allowed.load(Ordering::Relaxed), 2);
        assert_eq!(verdicts.denied.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn cluster_names_are_one_encoded_path_segment() {
        assert_eq!(percent_encode("bench-1"), "bench-1");
        assert_eq!(percent_encode("a b/c"), "a%20b%2Fc");
        assert_eq!(percent_encode("café"), "caf%C3%A9");
    }
}
