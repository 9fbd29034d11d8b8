//! The signature service against a real registry (docker-registry) and a real policy store,
//! embedded and distributed: images pushed and signed by the test (cosign's legacy layout,
//! P-256 keys made with ring), keyless sigstore bundles from the test's own CA and log,
//! signatures with a required log entry, a registry behind token auth with credentials stored
//! for the cluster, and signatures by the independent Python signer of ../shared/tools/cosign;
//! verified over gRPC and over `pc.rpc.signature.verify`; tags resolved over
//! `pc.rpc.signature.resolve`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use portcullis_bus::{StartFrom, TopicFilter};
use portcullis_cosign::testing::{San, TestFulcio, TestLog, bundle_v03, trusted_root_json, unix_now};
use portcullis_domain::Topic;
use portcullis_oci::manifest::{COSIGN_BUNDLE_ANNOTATION, COSIGN_SIGNATURE_ANNOTATION};
use portcullis_oci::testing::{self, SignatureLayerSpec};
use portcullis_oci::{Client, ClientConfig, Credential, Digest, Reference};
use portcullis_proto::events::v1::EventEnvelope;
use portcullis_proto::policystore::v1 as pb;
use portcullis_proto::policystore::v1::attestor_service_client::AttestorServiceClient;
use portcullis_proto::signature::v1 as ps;
use portcullis_proto::signature::v1::signature_service_client::SignatureServiceClient;
use portcullis_server::Mode;
use portcullis_signature::{RegistryOptions, SignatureOptions, rpc};
use portcullis_test_kit::{Registry, RegistryOptions as TestRegistryOptions};
use prost::Message as _;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod support;

use support::*;

fn verdicts(response: &ps::VerifyResponse) -> Vec<ps::Verdict> {
    response.verdicts.iter().map(|v| v.verdict()).collect()
}

async fn one_key(mode: Mode) {
    let f = start(mode).await;
    let key = Key::new();
    f.attestor("release", &key).await;
    let (digest, _) = f.push_image("app", "v1", "one key").await;
    f.sign("app", &digest, &[&key]).await;
    let image = format!("{}/app@{digest}", f.registry.host());
    let answer = f.verify(&image, &["release"], "").await;
    assert_eq!(verdicts(&answer), [ps::Verdict::Verified], "{answer:?}");
    assert_eq!(answer.digest, digest.to_string());
    assert_eq!(answer.verdicts[0].format(), ps::SignatureFormat::LegacyTag);
    assert_eq!(answer.verdicts[0].attestor_revision, 1);
    assert!(!answer.cached);
    // Asked again: from the cache, the same verdict.
    let again = f.verify(&image, &["release"], "").await;
    assert!(again.cached);
    assert_eq!(verdicts(&again), [ps::Verdict::Verified]);
    // The replica counts what it answered, cached or not (its drain summary).
    let answered = f.signature.signature().answered();
    assert_eq!((answered.verifications(), answered.verify_errors()), (2, 0));
}

async fn two_keys(mode: Mode) {
    let f = start(mode).await;
    let (a, b) = (Key::new(), Key::new());
    f.attestor("team-a", &a).await;
    f.attestor("team-b", &b).await;
    let (one, _) = f.push_image("app", "one", "signed by a").await;
    f.sign("app", &one, &[&a]).await;
    let (both, _) = f.push_image("app", "both", "signed by both").await;
    f.sign("app", &both, &[&a, &b]).await;
    let host = f.registry.host();
    // Per attestor, in request order: `all` would fail, `any` would hold.
    let answer = f.verify(&format!("{host}/app@{one}"), &["team-b", "team-a"], "").await;
    assert_eq!(
        verdicts(&answer),
        [ps::Verdict::NotVerified, ps::Verdict::Verified],
        "{answer:?}"
    );
    let answer = f.verify(&format!("{host}/app@{both}"), &["team-a", "team-b"], "").await;
    assert_eq!(
        verdicts(&answer),
        [ps::Verdict::Verified, ps::Verdict::Verified],
        "{answer:?}"
    );
}

async fn wrong_key_unsigned_and_unknown(mode: Mode) {
    let f = start(mode).await;
    let (good, other) = (Key::new(), Key::new());
    f.attestor("release", &good).await;
    let (signed, _) = f.push_image("app", "v1", "signed by another").await;
    f.sign("app", &signed, &[&other]).await;
    let (unsigned, _) = f.push_image("app", "v2", "unsigned").await;
    let host = f.registry.host();
    let answer = f.verify(&format!("{host}/app@{signed}"), &["release"], "").await;
    assert_eq!(verdicts(&answer), [ps::Verdict::NotVerified], "{answer:?}");
    assert!(answer.verdicts[0].reason.contains("does not verify"), "{answer:?}");
    let answer = f.verify(&format!("{host}/app@{unsigned}"), &["release"], "").await;
    assert_eq!(verdicts(&answer), [ps::Verdict::NotVerified], "{answer:?}");
    assert!(answer.verdicts[0].reason.contains("no signatures"), "{answer:?}");
    // An attestor the tenant does not have is an error, never a pass or a plain failure.
    let answer = f
        .verify(&format!("{host}/app@{signed}"), &["nobody", "release"], "")
        .await;
    assert_eq!(
        verdicts(&answer),
        [ps::Verdict::Error, ps::Verdict::NotVerified],
        "{answer:?}"
    );
    assert!(answer.verdicts[0].reason.contains("unknown attestor"), "{answer:?}");
    // A malformed request is refused.
    let refused = f
        .try_verify(&format!("{host}/app@{signed}"), &[], "")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
}

async fn tampered_and_other_digest(mode: Mode) {
    let f = start(mode).await;
    let key = Key::new();
    f.attestor("release", &key).await;
    let host = f.registry.host();
    let name = format!("{host}/app");
    // A payload changed after it was signed.
    let (tampered, _) = f.push_image("app", "t", "tampered").await;
    let signed = payload(&name, &tampered);
    let signature = key.sign(&signed);
    let mut changed = signed.clone();
    changed.extend_from_slice(b" ");
    f.push_signatures("app", &tampered, &[(changed, signature)]).await;
    let answer = f.verify(&format!("{name}@{tampered}"), &["release"], "").await;
    assert_eq!(verdicts(&answer), [ps::Verdict::NotVerified], "{answer:?}");
    // A valid signature over another image's digest, put where this image's would be.
    let (this, _) = f.push_image("app", "this", "this image").await;
    let (other, _) = f.push_image("app", "other", "another image").await;
    let elsewhere = payload(&name, &other);
    let signature = key.sign(&elsewhere);
    f.push_signatures("app", &this, &[(elsewhere, signature)]).await;
    let answer = f.verify(&format!("{name}@{this}"), &["release"], "").await;
    assert_eq!(verdicts(&answer), [ps::Verdict::NotVerified], "{answer:?}");
    assert!(answer.verdicts[0].reason.contains(&other.to_string()), "{answer:?}");
}

async fn tag_and_index(mode: Mode) {
    let f = start(mode).await;
    let key = Key::new();
    f.attestor("release", &key).await;
    let host = f.registry.host();
    // A tag resolves to the digest the registry returns.
    let (digest, _) = f.push_image("app", "v1", "tagged").await;
    f.sign("app", &digest, &[&key]).await;
    let answer = f.verify(&format!("{host}/app:v1"), &["release"], "").await;
    assert_eq!(answer.digest, digest.to_string());
    assert_eq!(verdicts(&answer), [ps::Verdict::Verified], "{answer:?}");
    let mut client = SignatureServiceClient::new(f.channel.clone());
    let resolved = client
        .resolve_digest(f.store.request(
            &f.store.admin_key,
            ps::ResolveDigestRequest {
                image: format!("{host}/app:v1"),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resolved.digest, digest.to_string());
    let missing = client
        .resolve_digest(f.store.request(
            &f.store.admin_key,
            ps::ResolveDigestRequest {
                image: format!("{host}/app:missing"),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound, "{missing:?}");
    // A tag the registry does not have fails (POLICY.md 4.6), it is no error.
    let answer = f.verify(&format!("{host}/app:missing"), &["release"], "").await;
    assert_eq!(verdicts(&answer), [ps::Verdict::NotVerified], "{answer:?}");

    // A multi-architecture image: the index digest is what is resolved and signed.
    let amd = testing::push_image(&f.oci, &f.reference("multi", "amd64"), "amd64 image", "amd64")
        .await
        .unwrap();
    let arm = testing::push_image(&f.oci, &f.reference("multi", "arm64"), "arm64 image", "arm64")
        .await
        .unwrap();
    let (index_digest, _) = testing::push_index(
        &f.oci,
        &f.reference("multi", "latest"),
        &[(&amd, "amd64"), (&arm, "arm64")],
    )
    .await
    .unwrap();
    f.sign("multi", &index_digest, &[&key]).await;
    let answer = f.verify(&format!("{host}/multi:latest"), &["release"], "").await;
    assert_eq!(answer.digest, index_digest.to_string());
    assert_eq!(verdicts(&answer), [ps::Verdict::Verified], "{answer:?}");
    // The platform image itself carries no signature of its own.
    let answer = f
        .verify(&format!("{host}/multi@{}", amd.digest), &["release"], "")
        .await;
    assert_eq!(verdicts(&answer), [ps::Verdict::NotVerified], "{answer:?}");
}

async fn registry_down(mode: Mode) {
    let mut f = start(mode).await;
    let key = Key::new();
    f.attestor("release", &key).await;
    let (digest, _) = f.push_image("app", "v1", "soon unreachable").await;
    f.sign("app", &digest, &[&key]).await;
    f.registry.stop();
    let host = f.registry.host();
    let answer = f.verify(&format!("{host}/app@{digest}"), &["release"], "").await;
    assert_eq!(verdicts(&answer), [ps::Verdict::Error], "{answer:?}");
    assert!(answer.verdicts[0].reason.contains("unavailable"), "{answer:?}");
    let answer = f.verify(&format!("{host}/app:v1"), &["release"], "").await;
    assert_eq!(verdicts(&answer), [ps::Verdict::Error], "{answer:?}");
}

async fn registry_slow(mode: Mode) {
    let options = SignatureOptions {
        registry: RegistryOptions {
            deadline: Duration::from_millis(500),
            ..RegistryOptions::default()
        },
        ..SignatureOptions::default()
    };
    let f = start_with(mode, options).await;
    f.attestor("release", &Key::new()).await;
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let digest = Digest::of(b"anything");
    let started = std::time::Instant::now();
    let answer = f.verify(&format!("{host}/app@{digest}"), &["release"], "").await;
    assert_eq!(verdicts(&answer), [ps::Verdict::Error], "{answer:?}");
    assert!(answer.verdicts[0].reason.contains("deadline"), "{answer:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

/// A TCP proxy to `target` counting the HTTP requests that pass (one `Host` header each).
async fn counting_proxy(target: SocketAddr) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                let (mut in_read, mut in_write) = inbound.split();
                let (mut out_read, mut out_write) = outbound.split();
                let upstream = async {
                    let mut buffer = vec![0u8; 16 * 1024];
                    let mut tail: Vec<u8> = Vec::new();
                    loop {
                        let n = match in_read.read(&mut buffer).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let mut seen = tail.clone();
                        seen.extend_from_slice(&buffer[..n]);
                        let lower = seen.to_ascii_lowercase();
                        counter.fetch_add(lower.windows(7).filter(|w| *w == b"\nhost: ").count(), Ordering::SeqCst);
                        tail = seen[seen.len().saturating_sub(6)..].to_vec();
                        if out_write.write_all(&buffer[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = out_write.shutdown().await;
                };
                let downstream = async {
                    let _ = tokio::io::copy(&mut out_read, &mut in_write).await;
                    let _ = in_write.shutdown().await;
                };
                tokio::join!(upstream, downstream);
            });
        }
    });
    (address, count)
}

/// `n` verifications of `image` at once; each must be verified.
async fn verify_at_once(f: &Fixture, image: &str, n: usize) {
    let asks = (0..n).map(|_| async move { f.verify(image, &["release"], "").await });
    let answers = futures::future::join_all(asks).await;
    assert!(answers.iter().all(|a| verdicts(a) == [ps::Verdict::Verified]));
}

async fn one_round_for_concurrent_asks(mode: Mode) {
    let f = start(mode).await;
    let key = Key::new();
    f.attestor("release", &key).await;
    let registry: SocketAddr = f.registry.host().parse().unwrap();
    let (proxy, requests) = counting_proxy(registry).await;
    let mut digests = Vec::new();
    for tag in ["warm", "one", "many", "one-tag", "many-tag"] {
        let (digest, _) = f.push_image("app", tag, tag).await;
        f.sign("app", &digest, &[&key]).await;
        digests.push(digest);
    }
    let verifier = f.signature.signature().verifier();
    // Warm up (the client's first contact with the registry), then one verification alone.
    let warm = f.verify(&format!("{proxy}/app@{}", digests[0]), &["release"], "").await;
    assert_eq!(verdicts(&warm), [ps::Verdict::Verified], "{warm:?}");
    let before = requests.load(Ordering::SeqCst);
    let rounds = verifier.registry_rounds();
    let one = f.verify(&format!("{proxy}/app@{}", digests[1]), &["release"], "").await;
    assert_eq!(verdicts(&one), [ps::Verdict::Verified], "{one:?}");
    let per_round = requests.load(Ordering::SeqCst) - before;
    assert!(
        per_round >= 2,
        "a round reads the .sig manifest and its layer: {per_round}"
    );
    // 1,000 at once for one image: one round, the same requests as one verification.
    let before = requests.load(Ordering::SeqCst);
    verify_at_once(&f, &format!("{proxy}/app@{}", digests[2]), 1000).await;
    assert_eq!(requests.load(Ordering::SeqCst) - before, per_round);
    assert_eq!(verifier.registry_rounds(), rounds + 2);

    // By tag: one resolution more than by digest, and no more for 1,000 at once.
    let before = requests.load(Ordering::SeqCst);
    let one = f.verify(&format!("{proxy}/app:one-tag"), &["release"], "").await;
    assert_eq!(one.digest, digests[3].to_string());
    let per_tag = requests.load(Ordering::SeqCst) - before;
    assert_eq!(per_tag, per_round + 1, "a tag costs one resolution");
    let before = requests.load(Ordering::SeqCst);
    verify_at_once(&f, &format!("{proxy}/app:many-tag"), 1000).await;
    assert_eq!(requests.load(Ordering::SeqCst) - before, per_tag);
    assert_eq!(verifier.registry_rounds(), rounds + 4);
}

async fn over_the_bus_with_verdict_events(mode: Mode) {
    let f = start(mode).await;
    let key = Key::new();
    f.attestor("release", &key).await;
    let (digest, _) = f.push_image("app", "v1", "over the bus").await;
    f.sign("app", &digest, &[&key]).await;
    let start_at = f.store.bus.last_sequence().await.unwrap();
    let host = f.registry.host();
    let request = ps::VerifyRequest {
        tenant_id: f.store.tenant_id.clone(),
        image: format!("{host}/app:v1"),
        attestors: vec!["release".into()],
        ..Default::default()
    };
    let answer = rpc::request(&f.store.bus, &request, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(verdicts(&answer), [ps::Verdict::Verified], "{answer:?}");
    // The tenant is in the message and checked.
    let bad = rpc::request(
        &f.store.bus,
        &ps::VerifyRequest {
            tenant_id: "Not A Tenant".into(),
            ..request.clone()
        },
        Duration::from_secs(10),
    )
    .await
    .unwrap_err();
    assert!(bad.to_string().contains("tenant"), "{bad}");
    // Answers over the bus are counted as over gRPC: one verification, one refusal.
    let answered = f.signature.signature().answered();
    assert_eq!((answered.verifications(), answered.verify_errors()), (1, 1));
    // The verdict was published on pc.<tenant>.evt.signature.verdict.
    let mut events = f
        .store
        .bus
        .subscribe_broadcast(
            &TopicFilter::topics([Topic::SignatureVerdict]),
            StartFrom::after(start_at),
        )
        .await
        .unwrap();
    let received = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(received.event.tenant, f.store.tenant_id);
    let envelope = EventEnvelope::decode(received.event.payload.clone()).unwrap();
    let Some(portcullis_proto::events::v1::event_envelope::Payload::SignatureVerdict(verdict)) = envelope.payload
    else {
        panic!("not a signature verdict: {envelope:?}");
    };
    assert_eq!(verdict.digest, digest.to_string());
    assert_eq!(verdict.verdicts[0].verdict(), ps::Verdict::Verified);
}

async fn attestor_change_drops_verdicts(mode: Mode) {
    let f = start(mode).await;
    let (old, new) = (Key::new(), Key::new());
    f.attestor("release", &old).await;
    let (digest, _) = f.push_image("app", "v1", "rotated key").await;
    f.sign("app", &digest, &[&new]).await;
    let image = format!("{}/app@{digest}", f.registry.host());
    assert_eq!(
        verdicts(&f.verify(&image, &["release"], "").await),
        [ps::Verdict::NotVerified]
    );
    // The attestor now holds the new key: the cached verdict must not outlive the old one.
    let document = serde_json::json!({"name": "release", "type": "cosignPublicKey", "publicKey": new.pem});
    let mut client = AttestorServiceClient::new(f.store.channel().await.unwrap());
    client
        .update_attestor(f.store.request(
            &f.store.admin_key,
            pb::UpdateAttestorRequest {
                attestor: Some(portcullis_proto::common::v1::ResourceRef {
                    r#ref: Some(portcullis_proto::common::v1::resource_ref::Ref::Name("release".into())),
                }),
                document_json: document.to_string(),
                expected_revision: None,
            },
        ))
        .await
        .unwrap();
    portcullis_test_kit::eventually(Duration::from_secs(10), async || {
        let answer = f.verify(&image, &["release"], "").await;
        (verdicts(&answer) == [ps::Verdict::Verified] && answer.verdicts[0].attestor_revision == 2)
            .then_some(())
            .ok_or(format!("{answer:?}"))
    })
    .await;
}

const OIDC_ISSUER: &str = "https://issuer.example";
const SIGNER: &str = "release@example.com";

/// A keyless attestor of `trusted_root` for `issuer` and `subject`.
fn keyless(name: &str, issuer: &str, subject: &str, trusted_root: &str) -> serde_json::Value {
    serde_json::json!({
        "name": name,
        "type": "cosignKeyless",
        "keyless": {"issuer": issuer, "subject": subject, "trustedRoot": trusted_root}
    })
}

async fn keyless_bundle_good_and_bad_identity(mode: Mode) {
    let f = start(mode).await;
    // The test's own Fulcio-like CA (with its CT log) and Rekor-like log, in one trusted root.
    let (fulcio, log) = (TestFulcio::new().unwrap(), TestLog::new().unwrap());
    let root = trusted_root_json(&fulcio, &log);
    f.create_attestor(keyless("release", OIDC_ISSUER, SIGNER, &root)).await;
    f.create_attestor(keyless("other-subject", OIDC_ISSUER, "someone@example.com", &root))
        .await;
    f.create_attestor(keyless("other-issuer", "https://elsewhere.example", SIGNER, &root))
        .await;
    let (digest, manifest) = f.push_image("app", "v1", "keyless").await;
    let leaf = fulcio.issue(&San::Email(SIGNER.into()), OIDC_ISSUER).unwrap();
    let bundle = bundle_v03(&leaf, &log, &manifest).unwrap();
    // docker-registry 2.x has no referrers API: the bundle is found through the tag schema.
    f.attach_bundle("app", &manifest, bundle).await;
    let host = f.registry.host();
    for image in [format!("{host}/app@{digest}"), format!("{host}/app:v1")] {
        let answer = f
            .verify(&image, &["release", "other-subject", "other-issuer"], "")
            .await;
        assert_eq!(
            verdicts(&answer),
            [
                ps::Verdict::Verified,
                ps::Verdict::NotVerified,
                ps::Verdict::NotVerified
            ],
            "{answer:?}"
        );
        assert_eq!(answer.digest, digest.to_string());
        let held = &answer.verdicts[0];
        assert_eq!(held.format(), ps::SignatureFormat::SigstoreBundle, "{held:?}");
        assert!(
            held.tlog_verified,
            "keyless signatures always carry their log entry: {held:?}"
        );
        assert!(answer.verdicts[1].reason.contains("subject"), "{answer:?}");
        assert!(answer.verdicts[2].reason.contains("issuer"), "{answer:?}");
    }
    // A certificate of another CA naming the same identity does not chain to the root.
    let (stranger, stranger_manifest) = f.push_image("app", "v2", "signed by a stranger CA").await;
    let rogue = TestFulcio::new().unwrap();
    let leaf = rogue.issue(&San::Email(SIGNER.into()), OIDC_ISSUER).unwrap();
    let bundle = bundle_v03(&leaf, &log, &stranger_manifest).unwrap();
    f.attach_bundle("app", &stranger_manifest, bundle).await;
    let answer = f.verify(&format!("{host}/app@{stranger}"), &["release"], "").await;
    assert_eq!(verdicts(&answer), [ps::Verdict::NotVerified], "{answer:?}");
    assert!(answer.verdicts[0].reason.contains("Fulcio"), "{answer:?}");
}

async fn legacy_signature_with_log_entry_required(mode: Mode) {
    let f = start(mode).await;
    let (key, log) = (Key::new(), TestLog::new().unwrap());
    f.create_attestor(serde_json::json!({
        "name": "logged",
        "type": "cosignPublicKey",
        "publicKey": key.pem,
        "transparencyLogEnabled": true,
        "transparencyLogOptions": {"publicKey": log.key.public_pem()}
    }))
    .await;
    f.attestor("unlogged", &key).await;
    let host = f.registry.host();
    let name = format!("{host}/app");
    // Signed and logged: the signed entry timestamp verifies offline with the log's key.
    let (entered, _) = f.push_image("app", "entered", "in the log").await;
    let signed = payload(&name, &entered);
    let signature = key.key.sign(&signed).unwrap();
    let entry = log.hashedrekord(&Sha256::digest(&signed), &signature, &key.pem, 42, unix_now());
    let layer = SignatureLayerSpec {
        payload: signed.into(),
        annotations: BTreeMap::from([
            (COSIGN_SIGNATURE_ANNOTATION.to_owned(), STANDARD.encode(&signature)),
            (
                COSIGN_BUNDLE_ANNOTATION.to_owned(),
                log.annotation_bundle(&entry).unwrap(),
            ),
        ]),
    };
    f.push_layers("app", &entered, &[layer]).await;
    let answer = f.verify(&format!("{name}@{entered}"), &["logged"], "").await;
    assert_eq!(verdicts(&answer), [ps::Verdict::Verified], "{answer:?}");
    assert!(answer.verdicts[0].tlog_verified, "{answer:?}");
    assert!(answer.verdicts[0].reason.contains("index 42"), "{answer:?}");
    // Signed by the same key, with no log entry: the key alone does not do when the log is
    // required, and does when it is not.
    let (missing, _) = f.push_image("app", "missing", "not in the log").await;
    f.sign("app", &missing, &[&key]).await;
    let answer = f
        .verify(&format!("{name}@{missing}"), &["logged", "unlogged"], "")
        .await;
    assert_eq!(
        verdicts(&answer),
        [ps::Verdict::NotVerified, ps::Verdict::Verified],
        "{answer:?}"
    );
    assert!(
        answer.verdicts[0].reason.contains("signed entry timestamp"),
        "{answer:?}"
    );
    assert!(!answer.verdicts[1].tlog_verified, "{answer:?}");
}

async fn token_auth_with_stored_credentials(mode: Mode) {
    let f = start(mode).await;
    let key = Key::new();
    f.attestor("release", &key).await;
    // A registry behind bearer-token auth (docker-registry's `auth: token`, the kit's token service).
    let private = Registry::start_with(TestRegistryOptions {
        token_auth: Some(("robot".into(), "pull secret".into())),
        ..TestRegistryOptions::default()
    })
    .await
    .unwrap();
    let host = private.host();
    let pusher = Client::new(ClientConfig {
        deadline: Duration::from_secs(10),
        credentials: HashMap::from([(host.clone(), Credential::basic("robot", "pull secret"))]),
        ..ClientConfig::default()
    })
    .unwrap();
    let target = Reference::parse(&format!("{host}/team/app:v1")).unwrap();
    let image = testing::push_image(&pusher, &target, "private", "amd64").await.unwrap();
    let signed = payload(&format!("{host}/team/app"), &image.digest);
    let layer = SignatureLayerSpec {
        annotations: BTreeMap::from([(COSIGN_SIGNATURE_ANNOTATION.to_owned(), key.sign(&signed))]),
        payload: signed.into(),
    };
    testing::push_cosign_signatures(&pusher, &target, &image.digest, &[layer])
        .await
        .unwrap();
    f.cluster_with_credentials("prod", &[(&host, "robot", "pull secret")])
        .await;
    f.cluster_with_credentials("stale", &[(&host, "robot", "an old secret")])
        .await;

    // The service fetches the cluster's credentials from the store and follows the token flow.
    for image in [
        format!("{host}/team/app:v1"),
        format!("{host}/team/app@{}", image.digest),
    ] {
        let answer = f.verify_for("prod", &image, &["release"]).await;
        assert_eq!(verdicts(&answer), [ps::Verdict::Verified], "{answer:?}");
    }
    // A wrong stored password is no verdict on the image: an error, saying why.
    let answer = f
        .verify_for("stale", &format!("{host}/team/app@{}", image.digest), &["release"])
        .await;
    assert_eq!(verdicts(&answer), [ps::Verdict::Error], "{answer:?}");
    assert!(answer.verdicts[0].reason.contains("unauthorized"), "{answer:?}");
    assert!(!answer.verdicts[0].reason.contains("an old secret"), "{answer:?}");
    // Without a cluster (anonymous) the registry refuses too.
    let answer = f.verify(&format!("{host}/team/app:v1"), &["release"], "").await;
    assert_eq!(verdicts(&answer), [ps::Verdict::Error], "{answer:?}");
    assert!(answer.verdicts[0].reason.contains("unauthorized"), "{answer:?}");
}

/// `pc.rpc.signature.resolve` through admission's digest stage: each reference its own
/// answer, NotFound only for what the registry does not have, unavailable when it cannot be
/// asked; the tenant in the message is checked like a verification's.
async fn resolution_over_the_bus(mode: Mode) {
    use portcullis_admission::{BusDigestStage, DigestStage as _};
    use portcullis_engine::evaluate::DigestLookup;

    let mut f = start(mode).await;
    let (digest, _) = f.push_image("app", "v1", "resolved over the bus").await;
    let host = f.registry.host();
    let stage = BusDigestStage::new(f.store.bus.clone(), Duration::from_secs(10));
    let (tagged, missing) = (format!("{host}/app:v1"), format!("{host}/app:nope"));
    let answers = stage
        .resolve(&f.store.tenant_id, "", &[tagged.clone(), missing.clone()])
        .await;
    assert_eq!(answers.get(&tagged), Some(&DigestLookup::Found(digest.to_string())));
    assert_eq!(answers.get(&missing), Some(&DigestLookup::NotFound));

    // The tenant is in the message and checked.
    let request = ps::ResolveDigestRequest {
        tenant_id: "Not A Tenant".into(),
        image: tagged.clone(),
        ..Default::default()
    };
    let reply = f
        .store
        .bus
        .request(
            portcullis_domain::topic::SIGNATURE_RESOLVE_SUBJECT,
            Bytes::from(request.encode_to_vec()),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let reply = ps::ResolveDigestResponse::decode(reply).unwrap();
    let error = reply.error.unwrap();
    assert_eq!(error.code, 3, "{error:?}");
    assert!(error.message.contains("tenant"), "{error:?}");

    // The registry stopped: a tag never resolved is unavailable, never "not found"; the one
    // resolved a moment ago is still answered from the cache.
    f.registry.stop();
    let other = format!("{host}/app:v2");
    let answers = stage
        .resolve(&f.store.tenant_id, "", &[tagged.clone(), other.clone()])
        .await;
    assert_eq!(answers.get(&tagged), Some(&DigestLookup::Found(digest.to_string())));
    assert!(
        matches!(answers.get(&other), Some(DigestLookup::Unavailable(_))),
        "{answers:?}"
    );
}

/// The interpreter for ../shared/tools/cosign (`cryptography` installed): `./test.sh` makes
/// `.venv-cosign` and names it in `PORTCULLIS_COSIGN_PYTHON`. Never skipped: the cross-check
/// is part of what this suite asserts.
fn cosign_python() -> std::path::PathBuf {
    if let Some(path) = std::env::var_os("PORTCULLIS_COSIGN_PYTHON") {
        return path.into();
    }
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv-cosign/bin/python");
    assert!(
        venv.is_file(),
        "no Python for the cosign cross-check: run ./test.sh (it makes .venv-cosign) or set PORTCULLIS_COSIGN_PYTHON"
    );
    venv
}

/// Runs the shared Python tool `script` with `args`; its stdout, and whether it exited 0.
async fn python_tool(script: &str, args: &[&str]) -> (String, bool) {
    let tool = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/tools/cosign");
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(cosign_python())
            .arg(tool.join(script))
            .args(args)
            .output(),
    )
    .await
    .expect("the Python tool within 60 s")
    .expect("the Python tool runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (stdout, output.status.success())
}

/// A cross-check case: the repository, its signings as (signer, signer's mode), and the
/// expected verdicts of alice, bob and carol.
type CrossCheck = (&'static str, &'static [(&'static str, &'static str)], [ps::Verdict; 3]);

/// Signatures made by the independent signer of ../shared/tools/cosign (Python,
/// `cryptography`), verified by the service: one key, two keys (a second signing adds a layer,
/// as cosign does), a key that never signed, a tampered payload and a signature over another
/// digest. The signer's own verifier agrees on each.
async fn python_signer_cross_check(mode: Mode) {
    let f = start(mode).await;
    let dir = portcullis_test_kit::DataDir::new().unwrap();
    let mut public = HashMap::new();
    for name in ["alice", "bob", "carol"] {
        let private = dir.path().join(format!("{name}.key.pem"));
        let public_path = dir.path().join(format!("{name}.pub.pem"));
        let make_key = "import sys\nfrom cryptography.hazmat.primitives.asymmetric import ec\nfrom cryptography.hazmat.primitives import serialization as s\nk = ec.generate_private_key(ec.SECP256R1())\nopen(sys.argv[1], 'wb').write(k.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption()))\nopen(sys.argv[2], 'wb').write(k.public_key().public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo))\n";
        let made = tokio::process::Command::new(cosign_python())
            .args(["-c", make_key, private.to_str().unwrap(), public_path.to_str().unwrap()])
            .status()
            .await
            .unwrap();
        assert!(made.success(), "key generation");
        let pem = std::fs::read_to_string(&public_path).unwrap();
        f.create_attestor(serde_json::json!({"name": name, "type": "cosignPublicKey", "publicKey": pem}))
            .await;
        public.insert(name, (private, public_path));
    }
    let host = f.registry.host();
    let key = |name: &str| public[name].0.to_str().unwrap().to_owned();
    let pub_of = |name: &str| public[name].1.to_str().unwrap().to_owned();
    let cases: [CrossCheck; 4] = [
        (
            "py/one",
            &[("alice", "ok")],
            [
                ps::Verdict::Verified,
                ps::Verdict::NotVerified,
                ps::Verdict::NotVerified,
            ],
        ),
        (
            "py/two",
            &[("alice", "ok"), ("bob", "ok")],
            [ps::Verdict::Verified, ps::Verdict::Verified, ps::Verdict::NotVerified],
        ),
        (
            "py/tampered",
            &[("alice", "tamper")],
            [
                ps::Verdict::NotVerified,
                ps::Verdict::NotVerified,
                ps::Verdict::NotVerified,
            ],
        ),
        (
            "py/other-digest",
            &[("alice", "wrong-digest")],
            [
                ps::Verdict::NotVerified,
                ps::Verdict::NotVerified,
                ps::Verdict::NotVerified,
            ],
        ),
    ];
    for (repository, signings, expected) in cases {
        f.push_image(repository, "v1", repository).await;
        for (signer, signing_mode) in signings {
            let (out, ok) = python_tool(
                "cosign_oci.py",
                &["sign", &host, repository, "v1", &key(signer), "--mode", signing_mode],
            )
            .await;
            assert!(ok, "{repository}: signing failed: {out}");
        }
        let answer = f
            .verify(&format!("{host}/{repository}:v1"), &["alice", "bob", "carol"], "")
            .await;
        assert_eq!(verdicts(&answer), expected, "{repository}: {answer:?}");
        // The independent verifier agrees, attestor by attestor.
        for (name, verdict) in ["alice", "bob", "carol"].into_iter().zip(expected) {
            let (out, ok) = python_tool("cosign_oci.py", &["verify", &host, repository, "v1", &pub_of(name)]).await;
            assert_eq!(ok, verdict == ps::Verdict::Verified, "{repository} {name}: {out}");
        }
    }
}

portcullis_test_kit::both! {
    embedded: portcullis_server::Mode::Embedded,
    distributed: portcullis_server::Mode::Distributed;
    one_key,
    two_keys,
    wrong_key_unsigned_and_unknown,
    tampered_and_other_digest,
    tag_and_index,
    registry_down,
    registry_slow,
    one_round_for_concurrent_asks,
    over_the_bus_with_verdict_events,
    resolution_over_the_bus,
    attestor_change_drops_verdicts,
    keyless_bundle_good_and_bad_identity,
    legacy_signature_with_log_entry_required,
    token_auth_with_stored_credentials,
    python_signer_cross_check,
}
