//! Helpers shared by the integration suites: clients, images pushed with the crate's own push
//! helpers, and small in-process HTTP servers.

#![allow(dead_code)] // Each suite uses its own subset.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use portcullis_oci::manifest::{OCI_CONFIG, OCI_INDEX, OCI_MANIFEST};
use portcullis_oci::{Client, ClientConfig, Descriptor, Digest, ImageIndex, ImageManifest, Platform, Reference};

/// A client with a short deadline, for tests.
pub fn client() -> Client {
    client_with(ClientConfig {
        deadline: Duration::from_secs(10),
        ..ClientConfig::default()
    })
}

/// A client with `config`.
pub fn client_with(config: ClientConfig) -> Client {
    Client::new(config).unwrap()
}

/// Parses a reference.
pub fn reference(text: &str) -> Reference {
    Reference::parse(text).unwrap()
}

/// A pushed single-platform image.
pub struct Image {
    pub digest: Digest,
    pub manifest: Bytes,
    pub config: Bytes,
    pub layer: Bytes,
}

/// Pushes a one-layer OCI image whose layer holds `text` and tags it as `target`'s tag.
pub async fn push_image(client: &Client, target: &Reference, text: &str, architecture: &str) -> Image {
    let config = Bytes::from(format!(
        r#"{{"architecture":"{architecture}","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}}}}"#
    ));
    let layer = Bytes::from(format!("layer of {text}"));
    client.push_blob(target, config.clone()).await.unwrap();
    client.push_blob(target, layer.clone()).await.unwrap();
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.into()),
        artifact_type: None,
        config: Descriptor::of(OCI_CONFIG, &config),
        layers: vec![Descriptor::of("application/vnd.oci.image.layer.v1.tar", &layer)],
        subject: None,
        annotations: BTreeMap::new(),
    };
    let manifest = Bytes::from(serde_json::to_vec(&manifest).unwrap());
    let digest = client
        .push_manifest(target, OCI_MANIFEST, manifest.clone())
        .await
        .unwrap();
    assert_eq!(digest, Digest::of(&manifest));
    Image {
        digest,
        manifest,
        config,
        layer,
    }
}

/// Pushes an index over `images` (amd64, arm64, ...) at `target`.
pub async fn push_index(client: &Client, target: &Reference, images: &[(&Image, &str)]) -> (Digest, Bytes) {
    let index = ImageIndex {
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
    };
    let bytes = Bytes::from(serde_json::to_vec(&index).unwrap());
    let digest = client.push_manifest(target, OCI_INDEX, bytes.clone()).await.unwrap();
    (digest, bytes)
}

/// Serves `handler` over HTTP/1.1 on a free 127.0.0.1 port until the test ends.
pub async fn serve<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let handler = Arc::new(handler);
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
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
    address
}

/// A response with `status`, `headers` and `body`.
pub fn response(status: u16, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut builder = Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(body.into())).unwrap()
}
