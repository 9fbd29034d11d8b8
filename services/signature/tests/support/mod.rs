//! Helpers shared by the signature service's tests: a policy store with the signature
//! service and a docker-registry, P-256 keys made with ring, images pushed and signed in
//! cosign's legacy layout.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    dead_code,
    clippy::new_without_default,
    missing_docs
)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use portcullis_admission::keys::IntrospectingAuthenticator;
use portcullis_admission::keys::KeyCacheOptions;
use portcullis_admission::metrics::AdmissionMetrics;
use portcullis_admission::{Upstream, UpstreamTimeouts};
use portcullis_oci::manifest::{COSIGN_SIGNATURE_ANNOTATION, COSIGN_SIMPLE_SIGNING, OCI_CONFIG, OCI_MANIFEST};
use portcullis_oci::{Client, ClientConfig, Descriptor, Digest, ImageManifest, Reference};
use portcullis_policy_store::testing::{TestOptions, TestServer};
use portcullis_proto::policystore::v1 as pb;
use portcullis_proto::policystore::v1::attestor_service_client::AttestorServiceClient;
use portcullis_proto::signature::v1 as ps;
use portcullis_proto::signature::v1::signature_service_client::SignatureServiceClient;
use portcullis_server::{Credentials, Mode, ServerConfig};
use portcullis_signature::{PolicyStoreClient, RunningSignature, SignatureOptions, SignatureServeOptions};
use portcullis_test_kit::Registry;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _};
use tonic::transport::Channel;

/// A P-256 signing key and its PEM public key.
pub struct Key {
    pub pair: EcdsaKeyPair,
    pub pem: String,
}

impl Key {
    pub fn new() -> Key {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        // SubjectPublicKeyInfo of an uncompressed P-256 point: the fixed prefix, then the point.
        let mut spki = hex("3059301306072a8648ce3d020106082a8648ce3d030107034200");
        spki.extend_from_slice(pair.public_key().as_ref());
        let b64 = base64::engine::general_purpose::STANDARD.encode(&spki);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            lines.join("\n")
        );
        Key { pair, pem }
    }

    pub fn sign(&self, payload: &[u8]) -> String {
        let signature = self.pair.sign(&SystemRandom::new(), payload).unwrap();
        base64::engine::general_purpose::STANDARD.encode(signature.as_ref())
    }
}

pub fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// Cosign's simple-signing payload naming `digest`.
pub fn payload(repository: &str, digest: &Digest) -> Vec<u8> {
    format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"{repository}"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#
    )
    .into_bytes()
}

pub struct Fixture {
    pub store: TestServer,
    pub signature: RunningSignature,
    pub registry: Registry,
    pub oci: Client,
    pub channel: Channel,
}

pub async fn start(mode: Mode) -> Fixture {
    start_with(mode, SignatureOptions::default()).await
}

pub async fn start_with(mode: Mode, options: SignatureOptions) -> Fixture {
    let registry = Registry::start().await.unwrap();
    let store = TestServer::start(TestOptions::new(mode)).await.unwrap();
    let client = PolicyStoreClient::new(
        &store.url,
        None,
        &store.service_token,
        &UpstreamTimeouts::default(),
        false,
    )
    .unwrap();
    let upstream = Upstream::new(
        &store.url,
        None,
        &store.service_token,
        &UpstreamTimeouts::default(),
        false,
    )
    .unwrap();
    let authenticator =
        IntrospectingAuthenticator::new(upstream, KeyCacheOptions::default(), AdmissionMetrics::global());
    let credentials = Credentials::new(Some(store.operator_key.clone()), Some(store.service_token.clone())).unwrap();
    let signature = RunningSignature::start(
        Arc::new(client),
        store.bus.clone(),
        credentials,
        Arc::new(authenticator),
        SignatureServeOptions {
            grpc: Some(ServerConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), mode)),
            signature: options,
        },
    )
    .await
    .unwrap();
    let channel = tonic::transport::Endpoint::from_shared(signature.url().unwrap().to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let oci = Client::new(ClientConfig {
        deadline: Duration::from_secs(10),
        ..ClientConfig::default()
    })
    .unwrap();
    Fixture {
        store,
        signature,
        registry,
        oci,
        channel,
    }
}

impl Fixture {
    pub async fn attestor(&self, name: &str, key: &Key) {
        let document = serde_json::json!({"name": name, "type": "cosignPublicKey", "publicKey": key.pem});
        let mut client = AttestorServiceClient::new(self.store.channel().await.unwrap());
        client
            .create_attestor(self.store.request(
                &self.store.admin_key,
                pb::CreateAttestorRequest {
                    document_json: document.to_string(),
                },
            ))
            .await
            .unwrap();
    }

    pub fn reference(&self, repository: &str, tag: &str) -> Reference {
        Reference::parse(&format!("{}/{repository}:{tag}", self.registry.host())).unwrap()
    }

    /// Pushes a one-layer image at `repository:tag`; returns its digest and manifest bytes.
    pub async fn push_image(&self, repository: &str, tag: &str, text: &str) -> (Digest, Bytes) {
        let target = self.reference(repository, tag);
        let config = Bytes::from(format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"text":"{text}"}}"#
        ));
        let layer = Bytes::from(format!("layer of {text}"));
        self.oci.push_blob(&target, config.clone()).await.unwrap();
        self.oci.push_blob(&target, layer.clone()).await.unwrap();
        let manifest = ImageManifest {
            schema_version: 2,
            media_type: Some(OCI_MANIFEST.into()),
            artifact_type: None,
            config: Descriptor::of(OCI_CONFIG, &config),
            layers: vec![Descriptor::of("application/vnd.oci.image.layer.v1.tar", &layer)],
            subject: None,
            annotations: BTreeMap::new(),
        };
        let bytes = Bytes::from(serde_json::to_vec(&manifest).unwrap());
        let digest = self
            .oci
            .push_manifest(&target, OCI_MANIFEST, bytes.clone())
            .await
            .unwrap();
        (digest, bytes)
    }

    /// Pushes the `sha256-<hex>.sig` manifest of `digest` in `repository` with one layer per
    /// (payload, signature).
    pub async fn push_signatures(&self, repository: &str, digest: &Digest, layers: &[(Vec<u8>, String)]) {
        let target = self.reference(repository, &format!("{}.sig", digest.tag_form()));
        let config = Bytes::from_static(b"{}");
        self.oci.push_blob(&target, config.clone()).await.unwrap();
        let mut descriptors = Vec::new();
        for (payload, signature) in layers {
            let bytes = Bytes::from(payload.clone());
            self.oci.push_blob(&target, bytes.clone()).await.unwrap();
            let mut descriptor = Descriptor::of(COSIGN_SIMPLE_SIGNING, &bytes);
            descriptor
                .annotations
                .insert(COSIGN_SIGNATURE_ANNOTATION.to_owned(), signature.clone());
            descriptors.push(descriptor);
        }
        let manifest = ImageManifest {
            schema_version: 2,
            media_type: Some(OCI_MANIFEST.into()),
            artifact_type: None,
            config: Descriptor::of(OCI_CONFIG, &config),
            layers: descriptors,
            subject: None,
            annotations: BTreeMap::new(),
        };
        let bytes = Bytes::from(serde_json::to_vec(&manifest).unwrap());
        self.oci.push_manifest(&target, OCI_MANIFEST, bytes).await.unwrap();
    }

    /// Signs `digest` in `repository` with each key (one layer each).
    pub async fn sign(&self, repository: &str, digest: &Digest, keys: &[&Key]) {
        let name = format!("{}/{repository}", self.registry.host());
        let layers: Vec<(Vec<u8>, String)> = keys
            .iter()
            .map(|key| {
                let payload = payload(&name, digest);
                let signature = key.sign(&payload);
                (payload, signature)
            })
            .collect();
        self.push_signatures(repository, digest, &layers).await;
    }

    pub async fn verify(&self, image: &str, attestors: &[&str], digest: &str) -> ps::VerifyResponse {
        self.try_verify(image, attestors, digest).await.unwrap()
    }

    pub async fn try_verify(
        &self,
        image: &str,
        attestors: &[&str],
        digest: &str,
    ) -> Result<ps::VerifyResponse, tonic::Status> {
        let mut client = SignatureServiceClient::new(self.channel.clone());
        client
            .verify(self.store.request(
                &self.store.admin_key,
                ps::VerifyRequest {
                    image: image.to_owned(),
                    attestors: attestors.iter().map(|a| (*a).to_owned()).collect(),
                    digest: digest.to_owned(),
                    ..Default::default()
                },
            ))
            .await
            .map(tonic::Response::into_inner)
    }
}
