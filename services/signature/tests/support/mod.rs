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

use bytes::Bytes;
use portcullis_cosign::testing::TestKey;
use portcullis_oci::manifest::{COSIGN_SIGNATURE_ANNOTATION, OCI_MANIFEST, SIGSTORE_BUNDLE_V03};
use portcullis_oci::testing::{self, SignatureLayerSpec, simple_signing_payload};
use portcullis_oci::{Client, ClientConfig, Digest, Reference};
use portcullis_policy_client::keys::{IntrospectingAuthenticator, KeyCacheOptions};
use portcullis_policy_client::metrics::NoMetrics;
use portcullis_policy_client::{Upstream, UpstreamTimeouts};
use portcullis_policy_store::testing::{TestOptions, TestServer};
use portcullis_proto::common::v1 as pc;
use portcullis_proto::policystore::v1 as pb;
use portcullis_proto::policystore::v1::attestor_service_client::AttestorServiceClient;
use portcullis_proto::policystore::v1::cluster_service_client::ClusterServiceClient;
use portcullis_proto::policystore::v1::policy_service_client::PolicyServiceClient;
use portcullis_proto::signature::v1 as ps;
use portcullis_proto::signature::v1::signature_service_client::SignatureServiceClient;
use portcullis_server::{Credentials, Mode, ServerConfig};
use portcullis_signature::{PolicyStoreClient, RunningSignature, SignatureOptions, SignatureServeOptions};
use portcullis_storage::credentials::{KEY_LEN, KeyRing};
use portcullis_test_kit::Registry;
use tonic::transport::Channel;

/// A P-256 signing key and its PEM public key.
pub struct Key {
    pub key: TestKey,
    pub pem: String,
}

impl Key {
    pub fn new() -> Key {
        let key = TestKey::generate().unwrap();
        Key {
            pem: key.public_pem(),
            key,
        }
    }

    /// A base64 signature over `payload`.
    pub fn sign(&self, payload: &[u8]) -> String {
        self.key.sign_base64(payload).unwrap()
    }
}

/// Cosign's simple-signing payload naming `digest`.
pub fn payload(repository: &str, digest: &Digest) -> Vec<u8> {
    simple_signing_payload(repository, digest).to_vec()
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
    // A registry credential key, so that clusters can store credentials.
    let keys = KeyRing::new([("test".to_owned(), [7; KEY_LEN])], "test").unwrap();
    let store = TestServer::start(TestOptions {
        credential_keys: Some(Arc::new(keys)),
        ..TestOptions::new(mode)
    })
    .await
    .unwrap();
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
        IntrospectingAuthenticator::new(upstream, KeyCacheOptions::default(), std::sync::Arc::new(NoMetrics));
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
        self.create_attestor(serde_json::json!({"name": name, "type": "cosignPublicKey", "publicKey": key.pem}))
            .await;
    }

    /// Creates the attestor `document` in the tenant.
    pub async fn create_attestor(&self, document: serde_json::Value) {
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
        let image = testing::push_image(&self.oci, &self.reference(repository, tag), text, "amd64")
            .await
            .unwrap();
        (image.digest, image.manifest)
    }

    /// Pushes the `sha256-<hex>.sig` manifest of `digest` in `repository` with one layer per
    /// (payload, signature).
    pub async fn push_signatures(&self, repository: &str, digest: &Digest, layers: &[(Vec<u8>, String)]) {
        let layers: Vec<SignatureLayerSpec> = layers
            .iter()
            .map(|(payload, signature)| SignatureLayerSpec {
                payload: Bytes::from(payload.clone()),
                annotations: BTreeMap::from([(COSIGN_SIGNATURE_ANNOTATION.to_owned(), signature.clone())]),
            })
            .collect();
        self.push_layers(repository, digest, &layers).await;
    }

    /// Pushes the `sha256-<hex>.sig` manifest of `digest` in `repository` with these layers.
    pub async fn push_layers(&self, repository: &str, digest: &Digest, layers: &[SignatureLayerSpec]) {
        testing::push_cosign_signatures(&self.oci, &self.reference(repository, "latest"), digest, layers)
            .await
            .unwrap();
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

    /// Verifies `image` with the registry credentials of cluster `cluster` (by name).
    pub async fn verify_for(&self, cluster: &str, image: &str, attestors: &[&str]) -> ps::VerifyResponse {
        self.send(ps::VerifyRequest {
            image: image.to_owned(),
            attestors: attestors.iter().map(|a| (*a).to_owned()).collect(),
            cluster: Some(pc::ResourceRef {
                r#ref: Some(pc::resource_ref::Ref::Name(cluster.to_owned())),
            }),
            ..Default::default()
        })
        .await
        .unwrap()
    }

    /// Attaches sigstore `bundle` to the image `manifest` of `repository` (a referrer, listed
    /// in the referrers tag schema, which docker-registry 2.x is read through).
    pub async fn attach_bundle(&self, repository: &str, manifest: &Bytes, bundle: String) {
        testing::attach_referrer(
            &self.oci,
            &self.reference(repository, "latest"),
            (OCI_MANIFEST, manifest),
            SIGSTORE_BUNDLE_V03,
            bundle.into(),
        )
        .await
        .unwrap();
    }

    /// Registers cluster `name` (on a policy of its own) and stores `credentials`
    /// (registry, username, password) for it with `SetRegistryCredentials`.
    pub async fn cluster_with_credentials(&self, name: &str, credentials: &[(&str, &str, &str)]) {
        let mut policies = PolicyServiceClient::new(self.store.channel().await.unwrap());
        let policy = format!("{name}.policy");
        policies
            .create_policy(self.store.request(
                &self.store.admin_key,
                pb::CreatePolicyRequest {
                    document_json: portcullis_test_kit::docs::policy_doc(&policy, "log"),
                },
            ))
            .await
            .unwrap();
        let mut clusters = ClusterServiceClient::new(self.store.channel().await.unwrap());
        let by_name = |name: &str| pc::ResourceRef {
            r#ref: Some(pc::resource_ref::Ref::Name(name.to_owned())),
        };
        clusters
            .register_cluster(self.store.request(
                &self.store.admin_key,
                pb::RegisterClusterRequest {
                    name: name.to_owned(),
                    policy: Some(by_name(&policy)),
                    ..Default::default()
                },
            ))
            .await
            .unwrap();
        clusters
            .set_registry_credentials(
                self.store.request(
                    &self.store.admin_key,
                    pb::SetRegistryCredentialsRequest {
                        cluster: Some(by_name(name)),
                        credentials: credentials
                            .iter()
                            .map(|(registry, username, password)| pb::RegistryCredential {
                                registry: (*registry).to_owned(),
                                username: (*username).to_owned(),
                                password: (*password).to_owned(),
                            })
                            .collect(),
                        ..Default::default()
                    },
                ),
            )
            .await
            .unwrap();
    }

    pub async fn try_verify(
        &self,
        image: &str,
        attestors: &[&str],
        digest: &str,
    ) -> Result<ps::VerifyResponse, tonic::Status> {
        self.send(ps::VerifyRequest {
            image: image.to_owned(),
            attestors: attestors.iter().map(|a| (*a).to_owned()).collect(),
            digest: digest.to_owned(),
            ..Default::default()
        })
        .await
    }

    /// Sends `request` to the service's Verify with the admin key.
    pub async fn send(&self, request: ps::VerifyRequest) -> Result<ps::VerifyResponse, tonic::Status> {
        let mut client = SignatureServiceClient::new(self.channel.clone());
        client
            .verify(self.store.request(&self.store.admin_key, request))
            .await
            .map(tonic::Response::into_inner)
    }
}
