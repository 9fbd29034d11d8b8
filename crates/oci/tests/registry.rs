//! The client against a real registry (Debian's docker-registry 2.8, started by the test kit on
//! a free loopback port): push and resolve, multi-architecture indexes, verified fetches, basic
//! and bearer-token auth, not found, registry down, a registry that never answers, cosign's `.sig` manifest and
//! the referrers tag schema.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{client, client_with, push_image, push_index, reference};
use portcullis_oci::manifest::{
    COSIGN_SIGNATURE_ANNOTATION, COSIGN_SIMPLE_SIGNING, OCI_CONFIG, OCI_EMPTY, OCI_INDEX, OCI_MANIFEST,
};
use portcullis_oci::{
    ClientConfig, Credential, Descriptor, Digest, Error, ErrorKind, ImageIndex, ImageManifest, ReferrersSource,
};
use portcullis_test_kit::{Registry, RegistryOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_then_resolve_tag_to_digest() {
    let registry = Registry::start().await.unwrap();
    let client = client();
    let target = reference(&format!("{}/team/app:v1", registry.host()));
    let image = push_image(&client, &target, "v1", "amd64").await;
    assert_eq!(client.resolve(&target).await.unwrap(), image.digest);
    // A digest reference resolves to itself without asking.
    let pinned = target.with_digest(image.digest.clone());
    assert_eq!(client.resolve(&pinned).await.unwrap(), image.digest);
    // Retagging points the new tag at the same manifest.
    assert_eq!(client.tag(&pinned, "stable").await.unwrap(), image.digest);
    let stable = target.with_tag("stable").unwrap();
    assert_eq!(client.resolve(&stable).await.unwrap(), image.digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_arch_index_resolves_to_the_index_digest() {
    let registry = Registry::start().await.unwrap();
    let client = client();
    let amd = push_image(
        &client,
        &reference(&format!("{}/multi/app:amd64", registry.host())),
        "a",
        "amd64",
    )
    .await;
    let arm = push_image(
        &client,
        &reference(&format!("{}/multi/app:arm64", registry.host())),
        "b",
        "arm64",
    )
    .await;
    let target = reference(&format!("{}/multi/app:latest", registry.host()));
    let (index_digest, index_bytes) = push_index(&client, &target, &[(&amd, "amd64"), (&arm, "arm64")]).await;
    assert_eq!(client.resolve(&target).await.unwrap(), index_digest);
    let fetched = client.fetch_manifest(&target).await.unwrap();
    assert_eq!(fetched.digest, index_digest);
    assert_eq!(fetched.bytes, index_bytes);
    assert_eq!(fetched.media_type, OCI_INDEX);
    assert!(fetched.is_index());
    let index = fetched.index().unwrap();
    assert_eq!(index.manifests.len(), 2);
    assert_eq!(index.manifests[0].digest, amd.digest);
    assert_eq!(index.manifests[1].platform.as_ref().unwrap().architecture, "arm64");
    assert_eq!(fetched.image().unwrap_err().kind(), ErrorKind::Invalid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_manifest_and_blob_verified() {
    let registry = Registry::start().await.unwrap();
    let client = client();
    let target = reference(&format!("{}/fetch/app:v1", registry.host()));
    let image = push_image(&client, &target, "fetch", "amd64").await;
    let by_digest = target.with_digest(image.digest.clone());
    let manifest = client.fetch_manifest(&by_digest).await.unwrap();
    assert_eq!(
        (manifest.digest.clone(), manifest.bytes.clone()),
        (image.digest.clone(), image.manifest.clone())
    );
    assert_eq!(manifest.media_type, OCI_MANIFEST);
    let parsed = manifest.image().unwrap();
    assert_eq!(parsed.layers.len(), 1);
    let layer = client
        .fetch_blob(&target, &parsed.layers[0].digest, 1 << 20)
        .await
        .unwrap();
    assert_eq!(layer, image.layer);
    let config = client
        .fetch_blob(&target, &parsed.config.digest, 1 << 20)
        .await
        .unwrap();
    assert_eq!(config, image.config);
    // The size cap holds, whatever the blob.
    let capped = client
        .fetch_blob(&target, &parsed.layers[0].digest, 4)
        .await
        .unwrap_err();
    assert_eq!(capped.kind(), ErrorKind::Invalid, "{capped}");
    // A digest the registry does not hold.
    let missing = Digest::of(b"never pushed");
    assert_eq!(
        client.fetch_blob(&target, &missing, 1024).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        client
            .fetch_manifest(&target.with_digest(missing))
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_tag_and_repository_are_not_found() {
    let registry = Registry::start().await.unwrap();
    let client = client();
    let target = reference(&format!("{}/known/app:v1", registry.host()));
    push_image(&client, &target, "known", "amd64").await;
    let unknown_tag = target.with_tag("nope").unwrap();
    let error = client.resolve(&unknown_tag).await.unwrap_err();
    assert!(matches!(error, Error::NotFound(_)), "{error}");
    let unknown_repo = reference(&format!("{}/nobody/here:v1", registry.host()));
    assert_eq!(
        client.fetch_manifest(&unknown_repo).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    // No signatures and no referrers are answers, not errors.
    assert!(client.cosign_signatures(&target).await.unwrap().is_none());
    let referrers = client.referrers(&target, None).await.unwrap();
    assert!(referrers.descriptors.is_empty());
    assert_eq!(referrers.source, ReferrersSource::None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_with_right_and_wrong_credentials() {
    let registry = Registry::start_with_basic_auth("alice", "correct horse").await.unwrap();
    let target = reference(&format!("{}/private/app:v1", registry.host()));
    let with = |credential: Option<Credential>| {
        let mut credentials = HashMap::new();
        if let Some(credential) = credential {
            credentials.insert(registry.host(), credential);
        }
        client_with(ClientConfig {
            deadline: Duration::from_secs(10),
            credentials,
            ..ClientConfig::default()
        })
    };
    let good = with(Some(Credential::basic("alice", "correct horse")));
    let image = push_image(&good, &target, "private", "amd64").await;
    assert_eq!(good.resolve(&target).await.unwrap(), image.digest);
    // Again, now that the client knows the registry wants basic auth.
    assert_eq!(good.resolve(&target).await.unwrap(), image.digest);

    let wrong = with(Some(Credential::basic("alice", "wrong")));
    let error = wrong.resolve(&target).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unauthorized, "{error}");
    assert!(!error.to_string().contains("wrong"), "{error}");
    let error = with(None).resolve(&target).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unauthorized, "{error}");
    // Debug of the configuration never shows the password.
    let shown = format!("{:?}", good.config());
    assert!(shown.contains("alice") && !shown.contains("correct horse"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_auth_with_right_and_wrong_credentials() {
    let registry = Registry::start_with(RegistryOptions {
        token_auth: Some(("bob".into(), "token secret".into())),
        ..RegistryOptions::default()
    })
    .await
    .unwrap();
    let target = reference(&format!("{}/private/app:v1", registry.host()));
    let with = |credential: Credential| {
        client_with(ClientConfig {
            deadline: Duration::from_secs(10),
            credentials: HashMap::from([(registry.host(), credential)]),
            ..ClientConfig::default()
        })
    };
    // The registry sends the client to the token service, whose JWT it then accepts.
    let good = with(Credential::basic("bob", "token secret"));
    let image = push_image(&good, &target, "behind a token", "amd64").await;
    assert_eq!(good.resolve(&target).await.unwrap(), image.digest);
    let wrong = with(Credential::basic("bob", "not it"));
    let error = wrong.resolve(&target).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unauthorized, "{error}");
    let error = client().resolve(&target).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unauthorized, "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_down_is_unavailable_and_back_after_restart() {
    let mut registry = Registry::start().await.unwrap();
    let client = client();
    let target = reference(&format!("{}/down/app:v1", registry.host()));
    let image = push_image(&client, &target, "down", "amd64").await;
    registry.stop();
    let error = client.resolve(&target).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");
    assert!(error.is_transient());
    registry.restart().await.unwrap();
    assert_eq!(client.resolve(&target).await.unwrap(), image.digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_never_answers_hits_the_deadline() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let deadline = Duration::from_millis(800);
    let client = client_with(ClientConfig {
        deadline,
        ..ClientConfig::default()
    });
    let target = reference(&format!("{address}/slow/app:v1"));
    for call in 0..2 {
        let started = Instant::now();
        let error = if call == 0 {
            client.resolve(&target).await.unwrap_err()
        } else {
            client.fetch_blob(&target, &Digest::of(b"x"), 10).await.unwrap_err()
        };
        let took = started.elapsed();
        assert!(matches!(error, Error::DeadlineExceeded(d) if d == deadline), "{error}");
        assert!(
            took >= deadline && took < deadline + Duration::from_millis(500),
            "{took:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_registry_concurrency_is_limited() {
    // A listener that never answers holds every request in flight; with one permit per host
    // a second call waits for the first rather than opening a second connection.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (accepted_tx, mut accepted_rx) = tokio::sync::mpsc::channel::<()>(16);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
            let _ = accepted_tx.try_send(());
        }
    });
    let client = client_with(ClientConfig {
        deadline: Duration::from_millis(1500),
        max_concurrency_per_registry: 1,
        ..ClientConfig::default()
    });
    let target = reference(&format!("{address}/slow/app:v1"));
    let first = tokio::spawn({
        let (client, target) = (client.clone(), target.clone());
        async move { client.resolve(&target).await }
    });
    accepted_rx.recv().await.unwrap();
    let second = tokio::spawn(async move { client.resolve(&target).await });
    // While the first holds the one permit, the second does not connect.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        accepted_rx.try_recv().is_err(),
        "a second connection while the first is in flight"
    );
    assert_eq!(first.await.unwrap().unwrap_err().kind(), ErrorKind::DeadlineExceeded);
    assert_eq!(second.await.unwrap().unwrap_err().kind(), ErrorKind::DeadlineExceeded);
}

/// A simple-signing payload as cosign writes it.
fn simple_signing_payload(registry: &str, repository: &str, digest: &Digest) -> Bytes {
    Bytes::from(
        serde_json::json!({
            "critical": {
                "identity": {"docker-reference": format!("{registry}/{repository}")},
                "image": {"docker-manifest-digest": digest.as_str()},
                "type": "cosign container image signature"
            },
            "optional": null
        })
        .to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_cosign_signature_manifest_is_listed_with_its_layers() {
    let registry = Registry::start().await.unwrap();
    let client = client();
    let target = reference(&format!("{}/signed/app:v1", registry.host()));
    let image = push_image(&client, &target, "signed", "amd64").await;

    // Two signatures, as two signings with cosign leave them: one layer each.
    let mut layers = Vec::new();
    let mut payloads = Vec::new();
    for signer in ["first", "second"] {
        let payload = simple_signing_payload(&registry.host(), "signed/app", &image.digest);
        let payload = Bytes::from([payload.as_ref(), b"\n", signer.as_bytes()].concat());
        client.push_blob(&target, payload.clone()).await.unwrap();
        let mut descriptor = Descriptor::of(COSIGN_SIMPLE_SIGNING, &payload);
        descriptor.annotations.insert(
            COSIGN_SIGNATURE_ANNOTATION.into(),
            format!("MEUCIQ-{signer}-signature=="),
        );
        layers.push(descriptor);
        payloads.push(payload);
    }
    let config = Bytes::from_static(b"{}");
    client.push_blob(&target, config.clone()).await.unwrap();
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.into()),
        artifact_type: None,
        config: Descriptor::of(OCI_CONFIG, &config),
        layers,
        subject: None,
        annotations: BTreeMap::new(),
    };
    let bytes = Bytes::from(serde_json::to_vec(&manifest).unwrap());
    let sig_tag = format!("sha256-{}.sig", image.digest.hex());
    let sig_digest = client
        .push_manifest(&target.with_tag(&sig_tag).unwrap(), OCI_MANIFEST, bytes.clone())
        .await
        .unwrap();

    let found = client.cosign_signatures(&target).await.unwrap().expect("signatures");
    assert_eq!(found.image_digest, image.digest);
    assert_eq!(found.manifest.digest, sig_digest);
    assert_eq!(found.manifest.bytes, bytes);
    assert_eq!(found.layers.len(), 2);
    for (layer, (payload, signer)) in found.layers.iter().zip(payloads.iter().zip(["first", "second"])) {
        assert_eq!(&layer.payload, payload);
        assert_eq!(layer.descriptor.media_type, COSIGN_SIMPLE_SIGNING);
        assert_eq!(
            layer.descriptor.annotations[COSIGN_SIGNATURE_ANNOTATION],
            format!("MEUCIQ-{signer}-signature==")
        );
    }
    // By digest too.
    let pinned = target.with_digest(image.digest.clone());
    assert_eq!(
        client.cosign_signatures(&pinned).await.unwrap().unwrap().layers.len(),
        2
    );

    // More layers than allowed is refused, not read.
    let strict = client_with(ClientConfig {
        max_signature_layers: 1,
        ..ClientConfig::default()
    });
    assert_eq!(
        strict.cosign_signatures(&target).await.unwrap_err().kind(),
        ErrorKind::Invalid
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrers_fall_back_to_the_tag_schema() {
    let registry = Registry::start().await.unwrap();
    let client = client();
    let target = reference(&format!("{}/refs/app:v1", registry.host()));
    let image = push_image(&client, &target, "refs", "amd64").await;

    // Two artifacts referring to the image: a sigstore bundle and an SBOM.
    let empty = Bytes::from_static(b"{}");
    client.push_blob(&target, empty.clone()).await.unwrap();
    let mut referrer_descriptors = Vec::new();
    for (artifact_type, content) in [
        ("application/vnd.dev.sigstore.bundle.v0.3+json", "bundle"),
        ("application/spdx+json", "sbom"),
    ] {
        let content = Bytes::from(content);
        client.push_blob(&target, content.clone()).await.unwrap();
        let subject = Descriptor::of(OCI_MANIFEST, &image.manifest);
        let manifest = ImageManifest {
            schema_version: 2,
            media_type: Some(OCI_MANIFEST.into()),
            artifact_type: Some(artifact_type.into()),
            config: Descriptor::of(OCI_EMPTY, &empty),
            layers: vec![Descriptor::of(artifact_type, &content)],
            subject: Some(subject),
            annotations: BTreeMap::new(),
        };
        let bytes = Bytes::from(serde_json::to_vec(&manifest).unwrap());
        let digest = client
            .push_manifest(&target.with_digest(Digest::of(&bytes)), OCI_MANIFEST, bytes.clone())
            .await
            .unwrap();
        referrer_descriptors.push(Descriptor {
            artifact_type: Some(artifact_type.into()),
            ..Descriptor {
                digest,
                ..Descriptor::of(OCI_MANIFEST, &bytes)
            }
        });
    }
    // The referrers tag schema: an index at tag sha256-<hex> listing them.
    let index = ImageIndex {
        schema_version: 2,
        media_type: Some(OCI_INDEX.into()),
        artifact_type: None,
        manifests: referrer_descriptors.clone(),
        subject: None,
        annotations: BTreeMap::new(),
    };
    let index_bytes = Bytes::from(serde_json::to_vec(&index).unwrap());
    client
        .push_manifest(
            &target.with_tag(&image.digest.tag_form()).unwrap(),
            OCI_INDEX,
            index_bytes,
        )
        .await
        .unwrap();

    let all = client.referrers(&target, None).await.unwrap();
    assert_eq!(
        all.source,
        ReferrersSource::TagSchema,
        "docker-registry 2.8 has no referrers API"
    );
    assert_eq!(all.subject, image.digest);
    assert_eq!(all.descriptors, referrer_descriptors);
    let bundles = client
        .referrers(&target, Some("application/vnd.dev.sigstore.bundle.v0.3+json"))
        .await
        .unwrap();
    assert_eq!(bundles.descriptors, referrer_descriptors[..1]);
    // Each referrer can then be fetched and checked.
    let first = client
        .fetch_manifest(&target.with_digest(bundles.descriptors[0].digest.clone()))
        .await
        .unwrap();
    assert_eq!(
        first.image().unwrap().subject.unwrap().digest,
        image.digest,
        "the referrer names the image"
    );
}

/// A private CA and a certificate for 127.0.0.1 signed by it: (chain PEM, key PEM, CA PEM).
fn test_pki() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "portcullis oci test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "127.0.0.1");
    let cert = params.signed_by(&key, &ca).unwrap();
    (format!("{}{}", cert.pem(), ca.pem()), key.serialize_pem(), ca.pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_registry_trusted_through_the_extra_ca() {
    let (chain, key, ca) = test_pki();
    let registry = Registry::start_with(RegistryOptions {
        tls: Some((chain, key)),
        ..RegistryOptions::default()
    })
    .await
    .unwrap();
    assert!(registry.url().starts_with("https://"));
    let https = |extra_ca: Option<&str>| {
        client_with(ClientConfig {
            deadline: Duration::from_secs(10),
            plain_http_loopback: false,
            extra_ca_pem: extra_ca.map(|pem| pem.as_bytes().to_vec()),
            ..ClientConfig::default()
        })
    };
    let trusted = https(Some(&ca));
    let target = reference(&format!("{}/tls/app:v1", registry.host()));
    let image = push_image(&trusted, &target, "tls", "amd64").await;
    assert_eq!(trusted.resolve(&target).await.unwrap(), image.digest);
    let blob = trusted
        .fetch_blob(&target, &Digest::of(&image.layer), 1 << 20)
        .await
        .unwrap();
    assert_eq!(blob, image.layer);
    // Without the CA the certificate is not trusted: the registry is unavailable to us.
    let error = https(None).resolve(&target).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");
    // Plain HTTP to a TLS port is no answer either.
    assert!(client().resolve(&target).await.is_err());
}
