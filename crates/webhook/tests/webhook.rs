//! The webhook over real TLS: a self-signed CA, the server on a free loopback port, hyper
//! client connections (HTTP/1.1 and HTTP/2) over tokio-rustls, and fake handlers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{Chunked, Client, KUBE_RS_REVIEW, Proto, config, pki, request, review, start};
use http::{Request, StatusCode, Version};
use http_body_util::Either;
use portcullis_webhook::{
    Error, ErrorKind, ReviewFuture, ServeError, WebhookConfig, WebhookHandler, WebhookRequest, WebhookServer,
    handler_fn,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc};

/// The connector key the tests send.
const KEY: &str = "pc_4f1c0e2a.s3cr3t-connector-key";

/// Answers a review with an AdmissionReview that echoes the request's uid; some cluster names
/// make it fail instead, one makes it report the body's size.
#[derive(Default)]
struct Echo {
    /// (bearer, cluster) of every call.
    seen: Mutex<Vec<(String, String)>>,
}

impl Echo {
    fn calls(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

impl WebhookHandler for Echo {
    fn review(&self, request: WebhookRequest) -> ReviewFuture<'_> {
        Box::pin(async move {
            self.seen
                .lock()
                .unwrap()
                .push((request.bearer.clone(), request.cluster.clone()));
            match request.cluster.as_str() {
                "invalid" => {
                    return Err(Error::new(
                        ErrorKind::InvalidArgument,
                        "review: missing field `request`",
                    ));
                }
                "unauthenticated" => return Err(Error::new(ErrorKind::Unauthenticated, "unknown or revoked key")),
                "denied" => {
                    return Err(Error::new(
                        ErrorKind::PermissionDenied,
                        "the key is for another cluster",
                    ));
                }
                "unknown" => return Err(Error::new(ErrorKind::NotFound, "cluster unknown not found")),
                "busy" => return Err(Error::new(ErrorKind::ResourceExhausted, "tenant rate limit exceeded")),
                "down" => return Err(Error::new(ErrorKind::Unavailable, "policy store unreachable")),
                "broken" => return Err(Error::new(ErrorKind::Internal, "bug")),
                "panic" => panic!("a handler bug"),
                "size" => return Ok(Bytes::from(json!({ "len": request.body.len() }).to_string())),
                _ => {}
            }
            let review: Value = serde_json::from_slice(&request.body)
                .map_err(|e| Error::new(ErrorKind::InvalidArgument, format!("review: {e}")))?;
            let uid = review["request"]["uid"]
                .as_str()
                .ok_or_else(|| Error::new(ErrorKind::InvalidArgument, "review: no request.uid"))?;
            let answer = json!({
                "apiVersion": review["apiVersion"],
                "kind": "AdmissionReview",
                "response": {
                    "uid": uid,
                    "allowed": true,
                    "status": {"message": format!("judged for cluster {}", request.cluster)},
                },
            });
            Ok(Bytes::from(answer.to_string()))
        })
    }
}

/// A handler that reports each call, then waits for a permit (none are ever given unless the
/// test adds them) before answering `{"done": true}`.
struct Gate {
    entered: mpsc::UnboundedSender<Duration>,
    release: Arc<Semaphore>,
}

impl WebhookHandler for Gate {
    fn review(&self, request: WebhookRequest) -> ReviewFuture<'_> {
        Box::pin(async move {
            let budget = request.deadline.saturating_duration_since(tokio::time::Instant::now());
            let _ = self.entered.send(budget);
            let _permit = self.release.acquire().await;
            Ok(Bytes::from_static(br#"{"done":true}"#))
        })
    }
}

fn gate() -> (Arc<Gate>, mpsc::UnboundedReceiver<Duration>, Arc<Semaphore>) {
    let (entered, calls) = mpsc::unbounded_channel();
    let release = Arc::new(Semaphore::new(0));
    let handler = Arc::new(Gate {
        entered,
        release: release.clone(),
    });
    (handler, calls, release)
}

fn kube_rs_review() -> (Vec<u8>, String) {
    let body = std::fs::read(KUBE_RS_REVIEW).unwrap();
    let parsed: Value = serde_json::from_slice(&body).unwrap();
    let uid = parsed["request"]["uid"].as_str().unwrap().to_owned();
    (body, uid)
}

#[tokio::test]
async fn answers_a_real_admission_review_over_http1_and_http2() {
    let pki = pki();
    let echo = Arc::new(Echo::default());
    let server = start(config(&pki), echo.clone()).await;
    let (body, uid) = kube_rs_review();

    for proto in Proto::ALL {
        let mut client = Client::connect(server.addr, &pki.ca, proto).await;
        // Twice on one connection: keep-alive / several streams. The API server adds ?timeout=.
        for path in ["/validate/prod-eu?timeout=10s", "/validate/prod-eu"] {
            let answer = client.send(review(path, KEY, body.clone())).await;
            assert_eq!(answer.status, StatusCode::OK, "{proto:?}: {answer:?}");
            let expected_version = if matches!(proto, Proto::Http2 | Proto::Http2NoAlpn) {
                Version::HTTP_2
            } else {
                Version::HTTP_11
            };
            assert_eq!(answer.version, expected_version, "{proto:?}");
            assert_eq!(answer.content_type(), "application/json");
            let response = answer.json();
            assert_eq!(response["apiVersion"], "admission.k8s.io/v1");
            assert_eq!(response["kind"], "AdmissionReview");
            assert_eq!(response["response"]["uid"], uid.as_str());
            assert_eq!(response["response"]["allowed"], true);
            assert_eq!(response["response"]["status"]["message"], "judged for cluster prod-eu");
        }
    }

    // The bearer token and the (percent-decoded) cluster segment reach the handler.
    let mut client = Client::connect(server.addr, &pki.ca, Proto::Http2).await;
    let answer = client.send(review("/validate/prod%20eu", KEY, body.clone())).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.json()["response"]["status"]["message"],
        "judged for cluster prod eu"
    );
    let seen = echo.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2 * Proto::ALL.len() + 1);
    for (i, (bearer, cluster)) in seen.iter().enumerate() {
        assert_eq!(bearer, KEY);
        let expected = if i + 1 == seen.len() { "prod eu" } else { "prod-eu" };
        assert_eq!(cluster, expected);
    }
    server.shutdown().await;
}

#[tokio::test]
async fn health_unknown_paths_and_wrong_methods() {
    let pki = pki();
    let echo = Arc::new(Echo::default());
    let server = start(config(&pki), echo.clone()).await;
    for proto in [Proto::Http1, Proto::Http2] {
        let mut client = Client::connect(server.addr, &pki.ca, proto).await;
        let health = client.send(request("GET", "/healthz", &[], Bytes::new())).await;
        assert_eq!(health.status, StatusCode::OK);
        assert_eq!(&health.body[..], b"ok");

        for path in ["/", "/nope", "/validate", "/validate/a/b", "/validatex/a", "/healthz/x"] {
            let answer = client.send(review(path, KEY, "{}")).await;
            assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
            assert!(!answer.error().is_empty());
        }
        let answer = client.send(request("GET", "/validate/prod", &[], Bytes::new())).await;
        assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(answer.headers["allow"], "POST");
        let answer = client.send(request("POST", "/healthz", &[], Bytes::new())).await;
        assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(answer.headers["allow"], "GET, HEAD");

        // The cluster segment: present, at most 253 characters, no encoded slash or control.
        let long = "c".repeat(254);
        for path in [
            "/validate/",
            &format!("/validate/{long}"),
            "/validate/a%2Fb",
            "/validate/a%00",
            "/validate/%zz",
        ] {
            let answer = client.send(review(path, KEY, "{}")).await;
            assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{path}");
            assert!(answer.error().contains("cluster"), "{path}: {}", answer.error());
        }
        let answer = client
            .send(review(&format!("/validate/{}", "c".repeat(253)), KEY, "{}"))
            .await;
        // Reaches the handler, which finds no uid in `{}`.
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
        assert_eq!(answer.error(), "review: no request.uid");
    }
    assert_eq!(echo.calls(), 2);
    server.shutdown().await;
}

#[tokio::test]
async fn refuses_requests_without_a_bearer_token() {
    let pki = pki();
    let echo = Arc::new(Echo::default());
    let server = start(config(&pki), echo.clone()).await;
    let (body, _) = kube_rs_review();
    for proto in [Proto::Http1, Proto::Http2] {
        let mut client = Client::connect(server.addr, &pki.ca, proto).await;
        let cases: [&[(&str, &str)]; 5] = [
            &[("content-type", "application/json")],
            &[("content-type", "application/json"), ("authorization", "Bearer")],
            &[
                ("content-type", "application/json"),
                ("authorization", "Basic dXNlcjpwYXNz"),
            ],
            &[("content-type", "application/json"), ("authorization", KEY)],
            &[("content-type", "application/json"), ("authorization", "Bearer a b")],
        ];
        for headers in cases {
            let answer = client
                .send(request("POST", "/validate/prod-eu", headers, body.clone()))
                .await;
            assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{headers:?}");
            assert_eq!(answer.headers["www-authenticate"], "Bearer");
            let error = answer.error();
            assert!(!error.contains(KEY) && !error.contains("dXNlcjpwYXNz"), "{error}");
        }
    }
    assert_eq!(echo.calls(), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn refuses_other_content_types() {
    let pki = pki();
    let echo = Arc::new(Echo::default());
    let server = start(config(&pki), echo.clone()).await;
    let (body, _) = kube_rs_review();
    let authorization = format!("Bearer {KEY}");
    for proto in [Proto::Http1, Proto::Http2] {
        let mut client = Client::connect(server.addr, &pki.ca, proto).await;
        for content_type in [
            None,
            Some("text/plain"),
            Some("application/yaml"),
            Some("application/jsonx"),
        ] {
            let mut headers = vec![("authorization", authorization.as_str())];
            headers.extend(content_type.map(|c| ("content-type", c)));
            let answer = client
                .send(request("POST", "/validate/prod-eu", &headers, body.clone()))
                .await;
            assert_eq!(answer.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{content_type:?}");
            assert!(answer.error().contains("application/json"));
        }
        // Parameters are fine.
        let headers = [
            ("authorization", authorization.as_str()),
            ("content-type", "application/json; charset=utf-8"),
        ];
        let answer = client
            .send(request("POST", "/validate/prod-eu", &headers, body.clone()))
            .await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    assert_eq!(echo.calls(), 2);
    server.shutdown().await;
}

#[tokio::test]
async fn refuses_bodies_over_the_limit() {
    let pki = pki();
    let echo = Arc::new(Echo::default());
    let mut cfg = config(&pki);
    cfg.limits.max_body_bytes = 1024;
    let server = start(cfg, echo.clone()).await;
    let authorization = format!("Bearer {KEY}");
    let headers = [
        ("authorization", authorization.as_str()),
        ("content-type", "application/json"),
    ];
    let chunked = |sizes: &[usize]| -> Request<common::RequestBody> {
        let mut req = request("POST", "/validate/size", &headers, Bytes::new());
        let chunks: VecDeque<Bytes> = sizes.iter().map(|n| Bytes::from(vec![b' '; *n])).collect();
        *req.body_mut() = Either::Right(Chunked(chunks));
        req
    };
    for proto in [Proto::Http1, Proto::Http2] {
        // Exactly the limit reaches the handler, declared or not.
        let mut client = Client::connect(server.addr, &pki.ca, proto).await;
        let answer = client.send(review("/validate/size", KEY, vec![b' '; 1024])).await;
        assert_eq!(answer.status, StatusCode::OK, "{proto:?}");
        assert_eq!(answer.json()["len"], 1024);
        let answer = client.send(chunked(&[512, 512])).await;
        assert_eq!(answer.status, StatusCode::OK, "{proto:?}");
        assert_eq!(answer.json()["len"], 1024);

        // One byte more: by its declared length (refused before it is read)...
        let answer = client.send(review("/validate/size", KEY, vec![b' '; 1025])).await;
        assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE, "{proto:?}");
        assert!(answer.error().contains("1024"));

        // ... and undeclared, as soon as it crosses the limit. A refused HTTP/1.1 request
        // whose body was not read closes the connection, so each gets its own.
        let mut client = Client::connect(server.addr, &pki.ca, proto).await;
        let answer = client.send(chunked(&[1000, 25])).await;
        assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE, "{proto:?}");
    }
    // A large body on HTTP/2: the answer comes while the client is still held back by flow
    // control. (On HTTP/1.1 the server closes the connection unread, which a client that is
    // still writing may see as a reset instead of the answer.)
    let mut client = Client::connect(server.addr, &pki.ca, Proto::Http2).await;
    let answer = client
        .send(review("/validate/size", KEY, vec![b' '; 4 * 1024 * 1024]))
        .await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(echo.calls(), 4);
    server.shutdown().await;
}

#[tokio::test]
async fn handler_errors_map_to_their_status() {
    let pki = pki();
    let echo = Arc::new(Echo::default());
    let server = start(config(&pki), echo.clone()).await;
    let cases = [
        ("invalid", StatusCode::BAD_REQUEST, "review: missing field `request`"),
        ("unauthenticated", StatusCode::UNAUTHORIZED, "unknown or revoked key"),
        ("denied", StatusCode::FORBIDDEN, "the key is for another cluster"),
        ("unknown", StatusCode::NOT_FOUND, "cluster unknown not found"),
        ("busy", StatusCode::TOO_MANY_REQUESTS, "tenant rate limit exceeded"),
        ("down", StatusCode::SERVICE_UNAVAILABLE, "policy store unreachable"),
        ("broken", StatusCode::INTERNAL_SERVER_ERROR, "bug"),
        // A panicking handler costs one 500, not the connection.
        ("panic", StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
    ];
    for proto in [Proto::Http1, Proto::Http2] {
        let mut client = Client::connect(server.addr, &pki.ca, proto).await;
        for (cluster, status, message) in cases {
            let answer = client.send(review(&format!("/validate/{cluster}"), KEY, "{}")).await;
            assert_eq!(answer.status, status, "{proto:?} {cluster}");
            assert_eq!(answer.error(), message);
            assert!(!answer.body.windows(KEY.len()).any(|w| w == KEY.as_bytes()));
        }
        // The same connection still answers.
        let (body, uid) = kube_rs_review();
        let answer = client.send(review("/validate/prod-eu", KEY, body)).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.json()["response"]["uid"], uid.as_str());
    }
    assert_eq!(
        Error::new(ErrorKind::ResourceExhausted, "x").http_status(),
        StatusCode::TOO_MANY_REQUESTS.as_u16()
    );
    assert_eq!(Error::new(ErrorKind::Unavailable, "why").message(), "why");
    server.shutdown().await;
}

#[tokio::test]
async fn plain_http_is_refused() {
    let pki = pki();
    let echo = Arc::new(Echo::default());
    let server = start(config(&pki), echo.clone()).await;
    let (body, _) = kube_rs_review();

    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /validate/prod-eu HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    // The server may already have closed; that is the point.
    let _ = tcp.write_all(&body).await;
    let mut answer = Vec::new();
    // Closed by the server: EOF (after at most a TLS alert) or a reset.
    let _ = tcp.read_to_end(&mut answer).await;
    assert!(!answer.starts_with(b"HTTP/"), "{:?}", String::from_utf8_lossy(&answer));
    assert!(answer.len() < 64, "{} bytes", answer.len());
    assert_eq!(echo.calls(), 0);

    // Still serving TLS clients.
    let mut client = Client::connect(server.addr, &pki.ca, Proto::Http1).await;
    let answer = client.send(review("/validate/prod-eu", KEY, body)).await;
    assert_eq!(answer.status, StatusCode::OK);
    server.shutdown().await;
}

/// Waits until nothing accepts connections on `addr` (the listener was dropped).
async fn until_refused(addr: std::net::SocketAddr) {
    portcullis_test_kit::until(Duration::from_secs(10), "connections are refused", async || {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
}

#[tokio::test]
async fn graceful_shutdown_lets_requests_in_flight_finish() {
    for proto in [Proto::Http1, Proto::Http2] {
        let pki = pki();
        let (handler, mut entered, release) = gate();
        let mut server = start(config(&pki), handler).await;
        let addr = server.addr;
        let mut client = Client::connect(addr, &pki.ca, proto).await;
        let in_flight = tokio::spawn(async move { client.send(review("/validate/prod-eu", KEY, "{}")).await });
        entered.recv().await.unwrap();

        // Shutdown begins while the review is being judged: the listener goes away...
        let _ = server.stop.take().unwrap().send(());
        until_refused(addr).await;
        assert!(!in_flight.is_finished());
        // ... and the review still gets its answer before serve returns.
        release.add_permits(1);
        let answer = in_flight.await.unwrap();
        assert_eq!(answer.status, StatusCode::OK, "{proto:?}");
        assert_eq!(&answer.body[..], br#"{"done":true}"#);
        (&mut server.task).await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn shutdown_drops_connections_that_do_not_drain_in_time() {
    let pki = pki();
    let (handler, mut entered, _release) = gate();
    let mut cfg = config(&pki);
    cfg.limits.request_timeout = Duration::from_secs(3600);
    cfg.limits.drain_timeout = Duration::from_millis(50);
    let server = start(cfg, handler).await;
    let mut client = Client::connect(server.addr, &pki.ca, Proto::Http1).await;
    let in_flight = tokio::spawn(async move { client.try_send(review("/validate/prod-eu", KEY, "{}")).await });
    entered.recv().await.unwrap();
    // The handler never finishes; serve still returns, and the client loses the connection.
    server.shutdown().await;
    assert!(in_flight.await.unwrap().is_err());
}

#[tokio::test]
async fn a_review_that_misses_its_deadline_gets_503() {
    let pki = pki();
    let (handler, mut entered, _release) = gate();
    let mut cfg = config(&pki);
    cfg.limits.request_timeout = Duration::from_millis(200);
    let server = start(cfg, handler).await;
    for proto in [Proto::Http1, Proto::Http2] {
        let mut client = Client::connect(server.addr, &pki.ca, proto).await;
        let answer = client.send(review("/validate/prod-eu", KEY, "{}")).await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{proto:?}");
        assert_eq!(answer.error(), "the review did not finish in time");
        let budget = entered.recv().await.unwrap();
        assert!(budget <= Duration::from_millis(200), "{budget:?}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn the_api_servers_timeout_shortens_the_deadline() {
    let pki = pki();
    let (handler, mut entered, _release) = gate();
    let mut cfg = config(&pki);
    cfg.limits.request_timeout = Duration::from_secs(3600);
    let server = start(cfg, handler).await;
    let mut client = Client::connect(server.addr, &pki.ca, Proto::Http2).await;
    let answer = client.send(review("/validate/prod-eu?timeout=150ms", KEY, "{}")).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    let budget = entered.recv().await.unwrap();
    assert!(budget <= Duration::from_millis(150), "{budget:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn handler_fn_adapts_an_async_function() {
    let pki = pki();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let handler = handler_fn(move |request: WebhookRequest| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            assert!(format!("{request:?}").contains("<redacted>"));
            assert!(!format!("{request:?}").contains(KEY));
            Ok(request.body)
        }
    });
    let server = start(config(&pki), Arc::new(handler)).await;
    let mut client = Client::connect(server.addr, &pki.ca, Proto::Http1).await;
    let answer = client.send(review("/validate/prod-eu", KEY, r#"{"echo":1}"#)).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(&answer.body[..], br#"{"echo":1}"#);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn bad_tls_files_and_bounds_are_refused_naming_the_file() {
    let pki = pki();
    let handler: Arc<dyn WebhookHandler> = Arc::new(Echo::default());
    let bind = |cfg: WebhookConfig| {
        let handler = handler.clone();
        async move { WebhookServer::bind(cfg, handler).await.map(|_| ()) }
    };

    let missing = pki.dir.path().join("missing.crt");
    let mut cfg = config(&pki);
    cfg.tls_cert = missing.clone();
    let err = bind(cfg).await.unwrap_err();
    assert!(matches!(err, ServeError::Tls(_)), "{err}");
    assert!(err.to_string().contains(&missing.display().to_string()), "{err}");

    let garbage = pki.dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a PEM file\n").unwrap();
    let mut cfg = config(&pki);
    cfg.tls_cert = garbage.clone();
    let err = bind(cfg).await.unwrap_err();
    assert!(
        err.to_string().contains("garbage.pem") && err.to_string().contains("certificate"),
        "{err}"
    );
    let mut cfg = config(&pki);
    cfg.tls_key = garbage.clone();
    let err = bind(cfg).await.unwrap_err();
    assert!(
        err.to_string().contains("garbage.pem") && err.to_string().contains("private key"),
        "{err}"
    );

    // A key that is not the certificate's.
    let other_key = pki.dir.path().join("other.key");
    std::fs::write(&other_key, rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap();
    let mut cfg = config(&pki);
    cfg.tls_key = other_key;
    let err = bind(cfg).await.unwrap_err();
    assert!(err.to_string().contains("other.key"), "{err}");

    // The certificate as the key and the key as the certificate.
    let mut cfg = config(&pki);
    std::mem::swap(&mut cfg.tls_cert, &mut cfg.tls_key);
    assert!(bind(cfg).await.is_err());

    for tweak in [
        (|c: &mut WebhookConfig| c.limits.max_connections = 0) as fn(&mut WebhookConfig),
        |c| c.limits.max_in_flight = 0,
        |c| c.limits.max_body_bytes = 0,
        |c| c.limits.max_concurrent_streams = 0,
        |c| c.limits.request_timeout = Duration::ZERO,
        |c| c.limits.max_connections = usize::MAX,
        |c| c.limits.idle_timeout = Duration::MAX,
    ] {
        let mut cfg = config(&pki);
        tweak(&mut cfg);
        let err = bind(cfg).await.unwrap_err();
        assert!(matches!(err, ServeError::Config(_)), "{err}");
    }

    // A taken port.
    let server = start(config(&pki), handler.clone()).await;
    let mut cfg = config(&pki);
    cfg.listen = server.addr;
    let err = bind(cfg).await.unwrap_err();
    assert!(matches!(err, ServeError::Bind { .. }), "{err}");
    server.shutdown().await;
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let pki = pki();
    let mut cfg = config(&pki);
    cfg.limits.idle_timeout = Duration::from_millis(100);
    let server = start(cfg, Arc::new(Echo::default())).await;
    for proto in [Proto::Http1, Proto::Http2] {
        let mut client = Client::connect(server.addr, &pki.ca, proto).await;
        let answer = client.send(request("GET", "/healthz", &[], Bytes::new())).await;
        assert_eq!(answer.status, StatusCode::OK);
        // Left idle, the server closes the connection (HTTP/2: GOAWAY); the client notices.
        let closed = async || match &client {
            Client::H1(sender) => sender.is_closed(),
            Client::H2(sender) => sender.is_closed(),
        };
        portcullis_test_kit::until(Duration::from_secs(10), "the idle connection is closed", closed).await;
    }
    // A TLS connection that never sends a request is closed as well.
    let mut tls = common::tls_connect(server.addr, &pki.ca, Proto::Http1NoAlpn).await;
    let mut buf = Vec::new();
    let _ = tls.read_to_end(&mut buf).await;
    assert!(buf.is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn a_declared_length_over_the_limit_is_refused_before_the_body_arrives() {
    let pki = pki();
    let echo = Arc::new(Echo::default());
    let mut cfg = config(&pki);
    // Were the body awaited, this request would end in 408 after 20 s.
    cfg.limits.request_timeout = Duration::from_secs(20);
    let server = start(cfg, echo.clone()).await;
    let mut tls = common::tls_connect(server.addr, &pki.ca, Proto::Http1).await;
    let head = format!(
        "POST /validate/prod-eu HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        portcullis_webhook::WebhookLimits::DEFAULT_MAX_BODY_BYTES + 1
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    // No body is sent; the answer comes anyway, and the connection is closed after it.
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
    assert!(answer.contains(&format!(
        "larger than {} bytes",
        portcullis_webhook::WebhookLimits::DEFAULT_MAX_BODY_BYTES
    )));
    assert_eq!(echo.calls(), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn stalled_clients_are_disconnected() {
    let pki = pki();
    let mut cfg = config(&pki);
    // Only the handshake and header timeouts can end these connections.
    cfg.limits.idle_timeout = Duration::from_secs(3600);
    cfg.limits.request_timeout = Duration::from_secs(3600);
    cfg.limits.tls_handshake_timeout = Duration::from_millis(100);
    cfg.limits.header_read_timeout = Duration::from_millis(100);
    let server = start(cfg, Arc::new(Echo::default())).await;

    // A TCP client that never starts the TLS handshake.
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut buf = Vec::new();
    let _ = tcp.read_to_end(&mut buf).await;
    assert!(buf.is_empty());

    // A TLS client that sends half a request head and stops.
    let mut tls = common::tls_connect(server.addr, &pki.ca, Proto::Http1).await;
    tls.write_all(b"POST /validate/prod-eu HTTP/1.1\r\nHost: local")
        .await
        .unwrap();
    tls.flush().await.unwrap();
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");
    server.shutdown().await;
}

/// Admits only the keys it knows, each its own owner; judges like [`Echo`].
struct KnownKeys(Echo);

impl WebhookHandler for KnownKeys {
    fn review(&self, request: WebhookRequest) -> ReviewFuture<'_> {
        self.0.review(request)
    }

    fn admit<'a>(&'a self, bearer: &'a str) -> portcullis_webhook::AdmitFuture<'a> {
        Box::pin(async move {
            match bearer {
                "key-a" | "key-b" => Ok(bearer.to_owned()),
                _ => Err(Error::new(ErrorKind::Unauthenticated, "unknown or revoked key")),
            }
        })
    }
}

/// A request head promising a 1000-byte body, and 10 bytes of it: the server waits for the
/// rest, holding whatever the request holds.
async fn trickle(
    server: &common::Running,
    pki: &common::Pki,
    bearer: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut tls = common::tls_connect(server.addr, &pki.ca, Proto::Http1).await;
    let head = format!(
        "POST /validate/prod-eu HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {bearer}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"request\""
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    tls
}

/// The status line of the answer on `tls`, within 10 s (`None`: no answer yet).
async fn status_line(tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> Option<String> {
    let mut buf = vec![0u8; 512];
    match tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => Some(
            String::from_utf8_lossy(&buf[..n])
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned(),
        ),
        _ => None,
    }
}

#[tokio::test]
async fn strangers_hold_no_slot_and_one_key_holds_only_its_share() {
    let pki = pki();
    let mut cfg = config(&pki);
    cfg.limits.request_timeout = Duration::from_secs(30);
    cfg.limits.max_in_flight = 3;
    cfg.limits.max_in_flight_per_key = 2;
    let server = start(cfg, Arc::new(KnownKeys(Echo::default()))).await;

    // More strangers than slots, each trickling a body: each is answered 401 from its
    // headers, before its body is read, and holds nothing.
    let mut strangers = Vec::new();
    for _ in 0..5 {
        strangers.push(trickle(&server, &pki, "junk-token").await);
    }
    for tls in &mut strangers {
        let line = status_line(tls).await.expect("a stranger waits for no body");
        assert!(line.starts_with("HTTP/1.1 401"), "{line}");
    }

    // One known key trickling holds its share (2 of 3 slots); a third request of that key is
    // refused at once, and another key is still served.
    let mut held = vec![
        trickle(&server, &pki, "key-a").await,
        trickle(&server, &pki, "key-a").await,
    ];
    let mut third = trickle(&server, &pki, "key-a").await;
    let line = status_line(&mut third)
        .await
        .expect("the key's third request is answered at once");
    assert!(line.starts_with("HTTP/1.1 429"), "{line}");
    let (body, uid) = kube_rs_review();
    let mut client = Client::connect(server.addr, &pki.ca, Proto::Http2).await;
    let answer = client.send(review("/validate/prod-eu", "key-b", body)).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(answer.json()["response"]["uid"], uid.as_str());
    for tls in &mut held {
        tls.shutdown().await.ok();
    }
    server.shutdown().await;
}
