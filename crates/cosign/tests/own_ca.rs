//! Material made by the test itself with the `testing` feature: a Fulcio-like CA with its CT
//! log, a Rekor-like log and a trusted root over them; keyless bundles and legacy layers
//! verify for the right identity only, and a keyed legacy signature with its log entry.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use common::{DIGEST, payload};
use portcullis_cosign::testing::{San, TestFulcio, TestKey, TestLog, bundle_v03, trusted_root_json, unix_now};
use portcullis_cosign::{Attestor, SignatureLayer, verify_bundle, verify_legacy};
use sha2::{Digest as _, Sha256};

const ISSUER: &str = "https://issuer.example";
const SUBJECT: &str = "ci@example.com";
const COSIGN_TYPE: &str = "cosign container image signature";

#[test]
fn keyless_bundle_holds_for_its_identity_only() {
    let (fulcio, log) = (TestFulcio::new().unwrap(), TestLog::new().unwrap());
    let root = trusted_root_json(&fulcio, &log);
    let leaf = fulcio.issue(&San::Email(SUBJECT.into()), ISSUER).unwrap();
    let artifact = b"an image manifest";
    let bundle = bundle_v03(&leaf, &log, artifact).unwrap();
    let attestor = |issuer: &str, subject: Option<&str>, pattern: Option<&str>| {
        Attestor::keyless(issuer, subject, pattern, root.as_bytes()).unwrap()
    };
    let now = unix_now();
    let check = |attestor: &Attestor| verify_bundle(bundle.as_bytes(), artifact, attestor, now);
    for held in [
        attestor(ISSUER, Some(SUBJECT), None),
        attestor(ISSUER, None, Some(".*@example\\.com")),
    ] {
        let verdict = check(&held);
        assert!(verdict.verified(), "{verdict}");
    }
    for (refused, why) in [
        (attestor(ISSUER, Some("other@example.com"), None), "subject"),
        (attestor("https://other.example", Some(SUBJECT), None), "issuer"),
    ] {
        let verdict = check(&refused);
        assert!(!verdict.verified() && verdict.reason().contains(why), "{verdict}");
    }
    // Another artifact, or a root of another CA and log: refused.
    let other = verify_bundle(
        bundle.as_bytes(),
        b"another",
        &attestor(ISSUER, Some(SUBJECT), None),
        now,
    );
    assert!(!other.verified(), "{other}");
    let stranger = trusted_root_json(&TestFulcio::new().unwrap(), &TestLog::new().unwrap());
    let untrusted = Attestor::keyless(ISSUER, Some(SUBJECT), None, stranger.as_bytes()).unwrap();
    let refused = verify_bundle(bundle.as_bytes(), artifact, &untrusted, now);
    assert!(!refused.verified(), "{refused}");
}

#[test]
fn keyless_legacy_layer_with_certificate_and_log_entry() {
    let (fulcio, log) = (TestFulcio::new().unwrap(), TestLog::new().unwrap());
    let root = trusted_root_json(&fulcio, &log);
    let leaf = fulcio
        .issue(&San::Uri("https://ci.example/workflow".into()), ISSUER)
        .unwrap();
    let payload = payload(DIGEST, COSIGN_TYPE);
    let signature = leaf.key.sign(&payload).unwrap();
    let entry = log.hashedrekord(&Sha256::digest(&payload), &signature, &leaf.pem(), 7, unix_now());
    let annotation = log.annotation_bundle(&entry).unwrap();
    let (encoded, certificate) = (base64_of(&signature), leaf.pem());
    let layer = SignatureLayer {
        payload: &payload,
        signature: &encoded,
        bundle: Some(&annotation),
        certificate: Some(&certificate),
    };
    let attestor = Attestor::keyless(ISSUER, Some("https://ci.example/workflow"), None, root.as_bytes()).unwrap();
    let verdict = verify_legacy(DIGEST, &[layer], &attestor);
    assert!(verdict.verified(), "{verdict}");
    let other = Attestor::keyless(ISSUER, Some("https://ci.example/other"), None, root.as_bytes()).unwrap();
    assert!(!verify_legacy(DIGEST, &[layer], &other).verified());
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn keyed_signature_with_a_required_log_entry() {
    let (key, log) = (TestKey::generate().unwrap(), TestLog::new().unwrap());
    let attestor = Attestor::public_key(&key.public_pem(), Some(&log.key.public_pem())).unwrap();
    let payload = payload(DIGEST, COSIGN_TYPE);
    let signature = key.sign(&payload).unwrap();
    let encoded = base64_of(&signature);
    let entry = log.hashedrekord(&Sha256::digest(&payload), &signature, &key.public_pem(), 3, unix_now());
    let annotation = log.annotation_bundle(&entry).unwrap();
    let layer = |bundle| SignatureLayer {
        payload: &payload,
        signature: &encoded,
        bundle,
        certificate: None,
    };
    let logged = verify_legacy(DIGEST, &[layer(Some(&annotation))], &attestor);
    assert!(
        logged.verified() && logged.reason().contains("transparency log"),
        "{logged}"
    );
    let missing = verify_legacy(DIGEST, &[layer(None)], &attestor);
    assert!(
        !missing.verified() && missing.reason().contains("signed entry timestamp"),
        "{missing}"
    );
    // An entry signed by another log is no entry of this one.
    let forged = TestLog::new().unwrap().annotation_bundle(&entry).unwrap();
    assert!(!verify_legacy(DIGEST, &[layer(Some(&forged))], &attestor).verified());
}
