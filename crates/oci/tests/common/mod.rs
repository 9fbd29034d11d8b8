//! Helpers shared by the integration suites: clients, images pushed with the crate's own push
//! helpers, and small in-process HTTP servers.

#![allow(dead_code)] // Each suite uses its own subset.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use portcullis_oci::{Client, ClientConfig, Digest, Reference};

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

pub use portcullis_oci::testing::Image;

/// Pushes a one-layer OCI image whose layer holds `text` and tags it as `target`'s tag.
pub async fn push_image(client: &Client, target: &Reference, text: &str, architecture: &str) -> Image {
    let image = portcullis_oci::testing::push_image(client, target, text, architecture)
        .await
        .unwrap();
    assert_eq!(image.digest, Digest::of(&image.manifest));
    image
}

/// Pushes an index over `images` (amd64, arm64, ...) at `target`.
pub async fn push_index(client: &Client, target: &Reference, images: &[(&Image, &str)]) -> (Digest, Bytes) {
    portcullis_oci::testing::push_index(client, target, images)
        .await
        .unwrap()
}

/// Serves `handler` over HTTP/1.1 on a free 127.0.0.1 port until the test ends.
pub async fn serve<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    portcullis_oci::testing::serve(handler).await.unwrap()
}

/// A response with `status`, `headers` and `body`.
pub fn response(status: u16, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut builder = Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(body.into())).unwrap()
}
