//! The client against in-process fake registries: the bearer-token flow (docker-registry's
//! token auth needs a JWT issuer), and registries that send wrong content or headers.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use common::{client, client_with, reference, response, serve};
use http_body_util::BodyExt as _;
use portcullis_oci::manifest::OCI_MANIFEST;
use portcullis_oci::{ClientConfig, Credential, Digest, ErrorKind};

const MANIFEST: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#;

/// What the fake token service saw.
#[derive(Default)]
struct Seen {
    token_requests: AtomicUsize,
    token_queries: Mutex<Vec<String>>,
    token_forms: Mutex<Vec<String>>,
    registry_authorizations: Mutex<Vec<String>>,
}

/// A registry at `/v2/...` answering 401 with a Bearer challenge unless it gets
/// `Bearer good-token`, and its token service at `/token` granting `good-token` to
/// alice/secret (basic) or to refresh token `refresh-me` (POST form).
async fn bearer_registry() -> (String, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let port_cell = Arc::new(Mutex::new(0_u16));
    let (handler_seen, handler_port) = (seen.clone(), port_cell.clone());
    let address = serve(move |request| {
        let seen = handler_seen.clone();
        let port = *handler_port.lock().unwrap();
        async move {
            let path = request.uri().path().to_owned();
            let query = request.uri().query().unwrap_or_default().to_owned();
            let authorization = request
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            if path == "/token" {
                seen.token_requests.fetch_add(1, Ordering::SeqCst);
                seen.token_queries.lock().unwrap().push(query);
                let method = request.method().clone();
                let body = request.into_body().collect().await.unwrap().to_bytes();
                let form = String::from_utf8_lossy(&body).into_owned();
                seen.token_forms.lock().unwrap().push(form.clone());
                let basic = format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode("alice:secret")
                );
                if method == hyper::Method::GET && authorization == basic {
                    return response(200, &[], r#"{"token":"good-token","expires_in":300}"#);
                }
                if method == hyper::Method::POST
                    && form.contains("grant_type=refresh_token")
                    && form.contains("refresh_token=refresh-me")
                {
                    return response(200, &[], r#"{"access_token":"good-token","expires_in":300}"#);
                }
                return response(401, &[], r#"{"details":"bad credentials"}"#);
            }
            seen.registry_authorizations.lock().unwrap().push(authorization.clone());
            if authorization != "Bearer good-token" {
                let challenge = format!(
                    r#"Bearer realm="http://127.0.0.1:{port}/token",service="fake.registry",scope="repository:team/app:pull""#
                );
                return response(
                    401,
                    &[("www-authenticate", challenge.as_str())],
                    r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
                );
            }
            if path == "/v2/team/app/manifests/v1" {
                let digest = Digest::of(MANIFEST.as_bytes()).to_string();
                return response(
                    200,
                    &[("content-type", OCI_MANIFEST), ("docker-content-digest", digest.as_str())],
                    MANIFEST,
                );
            }
            response(404, &[], r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}"#)
        }
    })
    .await;
    *port_cell.lock().unwrap() = address.port();
    (format!("127.0.0.1:{}", address.port()), seen)
}

fn with_credential(host: &str, credential: Option<Credential>) -> portcullis_oci::Client {
    let mut credentials = HashMap::new();
    if let Some(credential) = credential {
        credentials.insert(host.to_owned(), credential);
    }
    client_with(ClientConfig {
        deadline: Duration::from_secs(10),
        credentials,
        ..ClientConfig::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_flow_with_basic_credentials() {
    let (host, seen) = bearer_registry().await;
    let client = with_credential(&host, Some(Credential::basic("alice", "secret")));
    let target = reference(&format!("{host}/team/app:v1"));
    let expected = Digest::of(MANIFEST.as_bytes());
    assert_eq!(client.resolve(&target).await.unwrap(), expected);
    let manifest = client.fetch_manifest(&target).await.unwrap();
    assert_eq!(manifest.digest, expected);
    // One token for both calls: the second went straight to the registry with it.
    assert_eq!(seen.token_requests.load(Ordering::SeqCst), 1);
    let queries = seen.token_queries.lock().unwrap().clone();
    assert!(queries[0].contains("service=fake.registry"), "{queries:?}");
    assert!(
        queries[0].contains("scope=repository%3Ateam%2Fapp%3Apull"),
        "{queries:?}"
    );
    let authorizations = seen.registry_authorizations.lock().unwrap().clone();
    assert_eq!(authorizations, ["", "Bearer good-token", "Bearer good-token"]);
    // An unknown tag behind the token is NotFound, not an auth failure.
    let missing = client.resolve(&target.with_tag("nope").unwrap()).await.unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound, "{missing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_flow_with_an_identity_token() {
    let (host, seen) = bearer_registry().await;
    let client = with_credential(&host, Some(Credential::IdentityToken("refresh-me".into())));
    let target = reference(&format!("{host}/team/app:v1"));
    assert_eq!(client.resolve(&target).await.unwrap(), Digest::of(MANIFEST.as_bytes()));
    let forms = seen.token_forms.lock().unwrap().clone();
    assert!(forms[0].contains("service=fake.registry") && forms[0].contains("grant_type=refresh_token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_flow_refused() {
    let (host, _) = bearer_registry().await;
    let target = reference(&format!("{host}/team/app:v1"));
    let wrong = with_credential(&host, Some(Credential::basic("alice", "guess")));
    let error = wrong.resolve(&target).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unauthorized, "{error}");
    assert!(!error.to_string().contains("guess"));
    let anonymous = with_credential(&host, None);
    assert_eq!(
        anonymous.resolve(&target).await.unwrap_err().kind(),
        ErrorKind::Unauthorized
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_realm_in_plain_text_off_host_is_refused() {
    // The registry is on loopback but sends credentials' realm to another host over http.
    let address = serve(|_| async {
        response(
            401,
            &[(
                "www-authenticate",
                r#"Bearer realm="http://auth.example/token",service="x""#,
            )],
            "",
        )
    })
    .await;
    let host = format!("127.0.0.1:{}", address.port());
    let client = with_credential(&host, Some(Credential::basic("alice", "secret")));
    let error = client.resolve(&reference(&format!("{host}/a/b:c"))).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unauthorized, "{error}");
    assert!(error.to_string().contains("not https"), "{error}");
}

/// A registry that lies: wrong digests, wrong blob bytes, huge and malformed manifests,
/// server errors.
async fn lying_registry() -> String {
    let address = serve(|request| async move {
        let path = request.uri().path().to_owned();
        let good = Digest::of(MANIFEST.as_bytes()).to_string();
        let other = Digest::of(b"something else").to_string();
        match path.as_str() {
            "/v2/lie/manifests/wrong-header" => response(
                200,
                &[
                    ("content-type", OCI_MANIFEST),
                    ("docker-content-digest", other.as_str()),
                ],
                MANIFEST,
            ),
            "/v2/lie/manifests/bad-header" => response(
                200,
                &[("content-type", OCI_MANIFEST), ("docker-content-digest", "md5:abc")],
                MANIFEST,
            ),
            "/v2/lie/manifests/huge" => response(200, &[("content-type", OCI_MANIFEST)], vec![b' '; 5 << 20]),
            "/v2/lie/manifests/garbage" => response(200, &[("content-type", OCI_MANIFEST)], "{not json"),
            "/v2/lie/manifests/v1" => response(200, &[("content-type", OCI_MANIFEST)], MANIFEST),
            "/v2/lie/manifests/down" => response(503, &[], "maintenance"),
            "/v2/lie/manifests/forbidden" => response(403, &[], r#"{"errors":[{"code":"DENIED"}]}"#),
            p if p == format!("/v2/lie/manifests/{other}") => {
                response(200, &[("content-type", OCI_MANIFEST)], MANIFEST)
            }
            p if p == format!("/v2/lie/blobs/{good}") => response(200, &[], "not the blob"),
            _ => response(404, &[], ""),
        }
    })
    .await;
    format!("127.0.0.1:{}", address.port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_content_is_invalid() {
    let host = lying_registry().await;
    let client = client();
    let at = |tag: &str| reference(&format!("{host}/lie:{tag}"));
    // Without a header the body's own digest is the answer.
    let fetched = client.fetch_manifest(&at("v1")).await.unwrap();
    assert_eq!(fetched.digest, Digest::of(MANIFEST.as_bytes()));
    assert_eq!(fetched.image().unwrap().layers.len(), 0);
    for tag in ["wrong-header", "bad-header", "huge"] {
        let error = client.fetch_manifest(&at(tag)).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Invalid, "{tag}: {error}");
    }
    let garbage = client.fetch_manifest(&at("garbage")).await;
    // Fetched (its digest is what it is) but not a manifest.
    match garbage {
        Ok(manifest) => assert_eq!(manifest.image().unwrap_err().kind(), ErrorKind::Invalid),
        Err(error) => assert_eq!(error.kind(), ErrorKind::Invalid),
    }
    // Asked by digest, served other bytes.
    let other = Digest::of(b"something else");
    let lie = reference(&format!("{host}/lie@{other}"));
    assert_eq!(
        client.fetch_manifest(&lie).await.unwrap_err().kind(),
        ErrorKind::Invalid
    );
    let blob = client
        .fetch_blob(&at("v1"), &Digest::of(MANIFEST.as_bytes()), 1024)
        .await
        .unwrap_err();
    assert_eq!(blob.kind(), ErrorKind::Invalid, "{blob}");
    assert!(blob.to_string().contains("digest mismatch"), "{blob}");
    assert_eq!(
        client.resolve(&at("down")).await.unwrap_err().kind(),
        ErrorKind::Unavailable
    );
    assert_eq!(
        client.resolve(&at("forbidden")).await.unwrap_err().kind(),
        ErrorKind::Denied
    );
    // A body that cannot be a signature manifest.
    let sig_target = reference(&format!("{host}/lie@{}", Digest::of(b"img")));
    assert!(client.cosign_signatures(&sig_target).await.unwrap().is_none());
}

#[test]
fn an_unreadable_extra_ca_is_a_configuration_error() {
    let bad_ca = ClientConfig {
        extra_ca_pem: Some(b"not a pem".to_vec()),
        ..ClientConfig::default()
    };
    assert_eq!(
        portcullis_oci::Client::new(bad_ca).unwrap_err().kind(),
        ErrorKind::Config
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrers_api_when_the_registry_has_it() {
    let subject = Digest::of(MANIFEST.as_bytes()).to_string();
    let queries = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = queries.clone();
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{a}","size":10,"artifactType":"application/vnd.dev.sigstore.bundle.v0.3+json"}},
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{b}","size":11,"artifactType":"application/spdx+json"}}]}}"#,
        a = Digest::of(b"a"),
        b = Digest::of(b"b")
    );
    let address = serve(move |request| {
        let (subject, index, seen) = (subject.clone(), index.clone(), seen.clone());
        async move {
            let path = request.uri().path().to_owned();
            if path == "/v2/api/app/manifests/v1" {
                return response(
                    200,
                    &[
                        ("content-type", OCI_MANIFEST),
                        ("docker-content-digest", subject.as_str()),
                    ],
                    MANIFEST,
                );
            }
            if path == format!("/v2/api/app/referrers/{subject}") {
                seen.lock()
                    .unwrap()
                    .push(request.uri().query().unwrap_or_default().to_owned());
                // Ignores the filter, as a registry may: the client filters too.
                return response(
                    200,
                    &[("content-type", "application/vnd.oci.image.index.v1+json")],
                    index,
                );
            }
            response(404, &[], "")
        }
    })
    .await;
    let client = client();
    let target = reference(&format!("127.0.0.1:{}/api/app:v1", address.port()));
    let all = client.referrers(&target, None).await.unwrap();
    assert_eq!(all.source, portcullis_oci::ReferrersSource::Api);
    assert_eq!(all.descriptors.len(), 2);
    let bundles = client
        .referrers(&target, Some(portcullis_oci::manifest::SIGSTORE_BUNDLE_V03))
        .await
        .unwrap();
    assert_eq!(bundles.descriptors.len(), 1);
    assert_eq!(bundles.descriptors[0].digest, Digest::of(b"a"));
    let queries = queries.lock().unwrap().clone();
    assert_eq!(
        queries,
        ["", "artifactType=application%2Fvnd.dev.sigstore.bundle.v0.3%2Bjson"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_never_follow_to_a_storage_host() {
    const BLOB: &[u8] = b"blob kept in storage";
    // The storage service: another host (port), recording what authorization it was sent.
    let storage_seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = storage_seen.clone();
    let storage = serve(move |request| {
        let seen = seen.clone();
        async move {
            let authorization = request
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
                .to_owned();
            seen.lock()
                .unwrap()
                .push(format!("{} {}", request.method(), authorization));
            match request.method().as_str() {
                "GET" => response(200, &[], BLOB),
                _ => response(201, &[], ""),
            }
        }
    })
    .await;
    let storage_port = storage.port();
    let blob_digest = Digest::of(BLOB).to_string();
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:secret")
    );
    let registry = serve(move |request| {
        let (blob_digest, basic) = (blob_digest.clone(), basic.clone());
        async move {
            let authorized = request.headers().get("authorization").and_then(|v| v.to_str().ok()) == Some(&basic);
            if !authorized {
                return response(401, &[("www-authenticate", r#"Basic realm="fake""#)], "");
            }
            let path = request.uri().path().to_owned();
            let method = request.method().as_str().to_owned();
            let blob_location = format!("http://127.0.0.1:{storage_port}/blob");
            let upload_location = format!("http://127.0.0.1:{storage_port}/upload?state=opaque");
            match (method.as_str(), path.as_str()) {
                ("GET", p) if p == format!("/v2/team/app/blobs/{blob_digest}") => {
                    response(307, &[("location", blob_location.as_str())], "")
                }
                ("POST", "/v2/team/app/blobs/uploads/") => response(202, &[("location", upload_location.as_str())], ""),
                _ => response(404, &[], ""),
            }
        }
    })
    .await;
    let host = format!("127.0.0.1:{}", registry.port());
    let client = with_credential(&host, Some(Credential::basic("alice", "secret")));
    let target = reference(&format!("{host}/team/app:v1"));
    let blob = client.fetch_blob(&target, &Digest::of(BLOB), 1024).await.unwrap();
    assert_eq!(blob.as_ref(), BLOB);
    client
        .push_blob(&target, bytes::Bytes::from_static(b"new blob"))
        .await
        .unwrap();
    let seen = storage_seen.lock().unwrap().clone();
    assert_eq!(seen, ["GET none", "PUT none"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_error_body_is_not_read_whole() {
    // A 404 whose body streams forever: the client reads a bounded prefix and answers NotFound.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0_u8; 4096];
                let _ = socket.read(&mut request).await;
                let head =
                    "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = format!("{:x}\r\n{}\r\n", 8192, "x".repeat(8192));
                while socket.write_all(chunk.as_bytes()).await.is_ok() {}
            });
        }
    });
    let client = client();
    let target = reference(&format!("{address}/endless/app:v1"));
    let started = std::time::Instant::now();
    let error = client.fetch_manifest(&target).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::NotFound, "{error}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_registry_serves_what_was_pushed() {
    use portcullis_oci::testing::{MemoryRegistry, SignatureLayerSpec, push_cosign_signatures, push_image};
    let registry = MemoryRegistry::start().await.unwrap();
    let client = client();
    let target = reference(&format!("{}/mem/app:v1", registry.host()));
    let image = push_image(&client, &target, "in memory", "amd64").await.unwrap();
    assert_eq!(client.resolve(&target).await.unwrap(), image.digest);
    let fetched = client.fetch_manifest(&target).await.unwrap();
    assert_eq!(fetched.bytes, image.manifest);
    let layer = client
        .fetch_blob(&target, &Digest::of(&image.layer), 1 << 20)
        .await
        .unwrap();
    assert_eq!(layer, image.layer);
    let spec = SignatureLayerSpec {
        payload: "payload".into(),
        annotations: [("a".to_owned(), "b".to_owned())].into(),
    };
    push_cosign_signatures(&client, &target, &image.digest, &[spec])
        .await
        .unwrap();
    let signatures = client.cosign_signatures(&target).await.unwrap().unwrap();
    assert_eq!(signatures.layers[0].payload, "payload");
    // No referrers API, as docker-registry 2.x: the tag schema is asked, and has nothing.
    let before = registry.requests();
    let referrers = client
        .referrers(&target.with_digest(image.digest.clone()), None)
        .await
        .unwrap();
    assert_eq!(referrers.source, portcullis_oci::ReferrersSource::None);
    assert_eq!(registry.requests() - before, 2, "the referrers API, then the tag");
    let missing = client
        .resolve(&reference(&format!("{}/mem/app:nope", registry.host())))
        .await;
    assert_eq!(missing.unwrap_err().kind(), ErrorKind::NotFound);
}
