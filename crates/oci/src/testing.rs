//! Test support (feature `testing`): images pushed with the client's own push helpers,
//! cosign's legacy signature manifests, referrers attached through the referrers tag schema,
//! and [`MemoryRegistry`], an in-process registry serving from memory (for benchmarks and
//! tests that must not depend on docker-registry's speed).

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

use crate::manifest::{COSIGN_SIMPLE_SIGNING, OCI_CONFIG, OCI_EMPTY, OCI_INDEX, OCI_MANIFEST};
use crate::{Client, Descriptor, Digest, Error, ImageIndex, ImageManifest, Platform, Reference};

/// A pushed single-platform image.
#[derive(Debug, Clone)]
pub struct Image {
    /// The manifest's digest.
    pub digest: Digest,
    /// The manifest's bytes.
    pub manifest: Bytes,
    /// The config blob.
    pub config: Bytes,
    /// The one layer.
    pub layer: Bytes,
}

fn json<T: serde::Serialize>(value: &T) -> Result<Bytes, Error> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| Error::Invalid(format!("encoding a manifest: {e}")))
}

/// Pushes a one-layer OCI image whose layer holds `text` and whose config names
/// `architecture`, at `target` (a tag or digest reference).
pub async fn push_image(client: &Client, target: &Reference, text: &str, architecture: &str) -> Result<Image, Error> {
    let config = Bytes::from(format!(
        r#"{{"architecture":"{architecture}","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}}}}"#
    ));
    let layer = Bytes::from(format!("layer of {text}"));
    client.push_blob(target, config.clone()).await?;
    client.push_blob(target, layer.clone()).await?;
    let manifest = json(&ImageManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.into()),
        artifact_type: None,
        config: Descriptor::of(OCI_CONFIG, &config),
        layers: vec![Descriptor::of("application/vnd.oci.image.layer.v1.tar", &layer)],
        subject: None,
        annotations: BTreeMap::new(),
    })?;
    let digest = client.push_manifest(target, OCI_MANIFEST, manifest.clone()).await?;
    Ok(Image {
        digest,
        manifest,
        config,
        layer,
    })
}

/// Pushes an OCI index over `images` (each with its architecture, os `linux`) at `target`;
/// returns its digest and bytes.
pub async fn push_index(
    client: &Client,
    target: &Reference,
    images: &[(&Image, &str)],
) -> Result<(Digest, Bytes), Error> {
    let index = json(&ImageIndex {
        schema_version: 2,
        media_type: Some(OCI_INDEX.into()),
        artifact_type: None,
        manifests: images
            .iter()
            .map(|(image, architecture)| Descriptor {
                platform: Some(Platform {
                    architecture: (*architecture).into(),
                    os: "linux".into(),
                    variant: None,
                }),
                ..Descriptor::of(OCI_MANIFEST, &image.manifest)
            })
            .collect(),
        subject: None,
        annotations: BTreeMap::new(),
    })?;
    let digest = client.push_manifest(target, OCI_INDEX, index.clone()).await?;
    Ok((digest, index))
}

/// Cosign's simple-signing payload for `digest`, naming `docker_reference`
/// (`registry/repository`), as `cosign sign` writes it.
pub fn simple_signing_payload(docker_reference: &str, digest: &Digest) -> Bytes {
    Bytes::from(format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"{docker_reference}"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#
    ))
}

/// One layer of a legacy signature manifest: the payload and its annotations (the signature,
/// and for keyless or logged signatures the certificate and Rekor bundle).
#[derive(Debug, Clone, Default)]
pub struct SignatureLayerSpec {
    /// The simple-signing payload, byte for byte.
    pub payload: Bytes,
    /// The layer's annotations.
    pub annotations: BTreeMap<String, String>,
}

/// Pushes the `sha256-<hex>.sig` manifest of `digest` in `repository`'s repository (any tag
/// or digest reference there), one layer per spec; returns the signature manifest's digest.
pub async fn push_cosign_signatures(
    client: &Client,
    repository: &Reference,
    digest: &Digest,
    layers: &[SignatureLayerSpec],
) -> Result<Digest, Error> {
    let target = repository.with_tag(&format!("{}.sig", digest.tag_form()))?;
    let config = Bytes::from_static(b"{}");
    client.push_blob(&target, config.clone()).await?;
    let mut descriptors = Vec::with_capacity(layers.len());
    for layer in layers {
        client.push_blob(&target, layer.payload.clone()).await?;
        let mut descriptor = Descriptor::of(COSIGN_SIMPLE_SIGNING, &layer.payload);
        descriptor.annotations = layer.annotations.clone();
        descriptors.push(descriptor);
    }
    let manifest = json(&ImageManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.into()),
        artifact_type: None,
        config: Descriptor::of(OCI_CONFIG, &config),
        layers: descriptors,
        subject: None,
        annotations: BTreeMap::new(),
    })?;
    client.push_manifest(&target, OCI_MANIFEST, manifest).await
}

/// Attaches `content` (one layer of `artifact_type`) to the image `subject` (its manifest's
/// bytes and media type) as an OCI 1.1 referrer in `repository`'s repository, and lists it in
/// the referrers tag schema (`sha256-<hex>` index, created or extended), which registries
/// without the referrers API (docker-registry 2.x) are read through. Returns the referrer's
/// digest.
pub async fn attach_referrer(
    client: &Client,
    repository: &Reference,
    subject: (&str, &Bytes),
    artifact_type: &str,
    content: Bytes,
) -> Result<Digest, Error> {
    let (subject_type, subject_bytes) = subject;
    let subject_digest = Digest::of(subject_bytes);
    let empty = Bytes::from_static(b"{}");
    client.push_blob(repository, empty.clone()).await?;
    client.push_blob(repository, content.clone()).await?;
    let manifest = json(&ImageManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.into()),
        artifact_type: Some(artifact_type.into()),
        config: Descriptor::of(OCI_EMPTY, &empty),
        layers: vec![Descriptor::of(artifact_type, &content)],
        subject: Some(Descriptor::of(subject_type, subject_bytes)),
        annotations: BTreeMap::new(),
    })?;
    let digest = client
        .push_manifest(
            &repository.with_digest(Digest::of(&manifest)),
            OCI_MANIFEST,
            manifest.clone(),
        )
        .await?;
    let tag = repository.with_tag(&subject_digest.tag_form())?;
    let mut index = match client.fetch_manifest(&tag).await {
        Ok(existing) => existing.index()?,
        Err(Error::NotFound(_)) => ImageIndex {
            schema_version: 2,
            media_type: Some(OCI_INDEX.into()),
            artifact_type: None,
            manifests: Vec::new(),
            subject: None,
            annotations: BTreeMap::new(),
        },
        Err(e) => return Err(e),
    };
    index.manifests.push(Descriptor {
        artifact_type: Some(artifact_type.into()),
        ..Descriptor::of(OCI_MANIFEST, &manifest)
    });
    client.push_manifest(&tag, OCI_INDEX, json(&index)?).await?;
    Ok(digest)
}

#[derive(Default)]
struct Stored {
    /// (repository, tag or digest) → (media type, bytes).
    manifests: HashMap<(String, String), (String, Bytes)>,
    /// digest → bytes (shared by every repository: enough for tests).
    blobs: HashMap<String, Bytes>,
}

/// An in-process OCI registry on a free 127.0.0.1 port, serving manifests and blobs from
/// memory over HTTP/1.1, anonymous. It takes pushes (the client's push helpers work against
/// it) and answers the referrers API with 404, as docker-registry 2.x does, so clients read
/// referrers through the tag schema. It stops when the runtime that started it ends.
#[derive(Clone)]
pub struct MemoryRegistry {
    address: SocketAddr,
    requests: Arc<AtomicUsize>,
}

impl std::fmt::Debug for MemoryRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryRegistry")
            .field("address", &self.address)
            .field("requests", &self.requests())
            .finish_non_exhaustive()
    }
}

impl MemoryRegistry {
    /// Starts it on the current tokio runtime.
    pub async fn start() -> Result<MemoryRegistry, Error> {
        let stored: Arc<RwLock<Stored>> = Arc::default();
        let requests: Arc<AtomicUsize> = Arc::default();
        let (s, r) = (stored.clone(), requests.clone());
        let address = serve(move |request| answer(s.clone(), r.clone(), request)).await?;
        Ok(MemoryRegistry { address, requests })
    }

    /// `127.0.0.1:<port>`: the registry part of an image reference.
    pub fn host(&self) -> String {
        self.address.to_string()
    }

    /// HTTP requests answered so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }
}

async fn answer(
    stored: Arc<RwLock<Stored>>,
    requests: Arc<AtomicUsize>,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    static UPLOADS: AtomicU64 = AtomicU64::new(0);
    requests.fetch_add(1, Ordering::Relaxed);
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or_default().to_owned();
    let content_type = request
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or(OCI_MANIFEST)
        .to_owned();
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return reply(StatusCode::BAD_REQUEST, &[], Bytes::new()),
    };
    let Some(rest) = path.strip_prefix("/v2/") else {
        return reply(StatusCode::NOT_FOUND, &[], Bytes::new());
    };
    if rest.is_empty() {
        return reply(StatusCode::OK, &[], Bytes::from_static(b"{}"));
    }
    let split = ["/manifests/", "/blobs/uploads/", "/blobs/", "/referrers/"]
        .iter()
        .find_map(|kind| rest.rfind(kind).map(|at| (at, *kind)));
    let Some((at, kind)) = split else {
        return reply(StatusCode::NOT_FOUND, &[], Bytes::new());
    };
    let repository = rest.get(..at).unwrap_or_default().to_owned();
    let name = rest.get(at + kind.len()..).unwrap_or_default().to_owned();
    let head = method == Method::HEAD;
    match (kind, method) {
        ("/manifests/", Method::GET | Method::HEAD) => {
            let found = read(&stored).manifests.get(&(repository, name)).cloned();
            match found {
                Some((media_type, bytes)) => {
                    let digest = Digest::of(&bytes).to_string();
                    let headers = [
                        ("content-type", media_type.as_str()),
                        ("docker-content-digest", &digest),
                    ];
                    reply(StatusCode::OK, &headers, if head { Bytes::new() } else { bytes })
                }
                None => not_found("MANIFEST_UNKNOWN"),
            }
        }
        ("/manifests/", Method::PUT) => {
            let digest = Digest::of(&body).to_string();
            if let Ok(mut stored) = stored.write() {
                let entry = (content_type, body);
                stored
                    .manifests
                    .insert((repository.clone(), digest.clone()), entry.clone());
                stored.manifests.insert((repository, name), entry);
            }
            reply(StatusCode::CREATED, &[("docker-content-digest", &digest)], Bytes::new())
        }
        ("/blobs/", Method::GET | Method::HEAD) => match read(&stored).blobs.get(&name).cloned() {
            Some(bytes) => reply(StatusCode::OK, &[], if head { Bytes::new() } else { bytes }),
            None => not_found("BLOB_UNKNOWN"),
        },
        ("/blobs/uploads/", Method::POST) => {
            let id = UPLOADS.fetch_add(1, Ordering::Relaxed);
            let location = format!("/v2/{repository}/blobs/uploads/{id}");
            reply(StatusCode::ACCEPTED, &[("location", &location)], Bytes::new())
        }
        ("/blobs/uploads/", Method::PUT) => {
            let digest = query
                .split('&')
                .find_map(|pair| pair.strip_prefix("digest="))
                .map(|d| d.replace("%3A", ":").replace("%3a", ":"));
            match digest {
                Some(digest) if Digest::of(&body).as_str() == digest => {
                    if let Ok(mut stored) = stored.write() {
                        stored.blobs.insert(digest, body);
                    }
                    reply(StatusCode::CREATED, &[], Bytes::new())
                }
                _ => reply(StatusCode::BAD_REQUEST, &[], Bytes::new()),
            }
        }
        _ => not_found("UNSUPPORTED"),
    }
}

fn read(stored: &RwLock<Stored>) -> std::sync::RwLockReadGuard<'_, Stored> {
    // A panic while holding the lock would have failed the test already.
    stored.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Serves `handler` over HTTP/1.1 on a free 127.0.0.1 port, on the current tokio runtime
/// (until it ends); returns the address.
pub async fn serve<F, Fut>(handler: F) -> Result<SocketAddr, Error>
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| Error::Config(format!("test server: {e}")))?;
    let address = listener
        .local_addr()
        .map_err(|e| Error::Config(format!("test server: {e}")))?;
    let handler = Arc::new(handler);
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(request).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(socket), service)
                    .await;
            });
        }
    });
    Ok(address)
}

fn not_found(code: &str) -> Response<Full<Bytes>> {
    let body = format!(r#"{{"errors":[{{"code":"{code}","message":"not found"}}]}}"#);
    reply(
        StatusCode::NOT_FOUND,
        &[("content-type", "application/json")],
        Bytes::from(body),
    )
}

fn reply(status: StatusCode, headers: &[(&str, &str)], body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            hyper::header::HeaderName::from_bytes(name.as_bytes()),
            hyper::header::HeaderValue::from_str(value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}
