//! The cosign-signatures fixtures (containers/image), every case as its SOURCE.txt says.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use portcullis_cosign::{Attestor, PublicKey, SignatureLayer, TrustedRoot, verify_legacy};
use sha2::{Digest, Sha256};

/// A decoded `signature-N` file: payload bytes, signature annotation, bundle annotation.
struct Sig {
    payload: Vec<u8>,
    signature: String,
    bundle: Option<String>,
    certificate: Option<String>,
}

fn load_sig(path: &str) -> Sig {
    let raw = common::read(path);
    let json = raw.strip_prefix(b"\x00sigstore-json\n").expect("sigstore-json prefix");
    let v: serde_json::Value = serde_json::from_slice(json).unwrap();
    let ann = &v["annotations"];
    Sig {
        payload: STANDARD.decode(v["payload"].as_str().unwrap()).unwrap(),
        signature: ann["dev.cosignproject.cosign/signature"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        bundle: ann["dev.sigstore.cosign/bundle"].as_str().map(str::to_owned),
        certificate: ann["dev.sigstore.cosign/certificate"].as_str().map(str::to_owned),
    }
}

fn case(dir: &str) -> (String, Vec<Sig>) {
    let manifest = common::read(&format!("cosign-signatures/{dir}/manifest.json"));
    let digest = format!("sha256:{:x}", Sha256::digest(&manifest));
    let sigs = (1..)
        .map(|n| format!("cosign-signatures/{dir}/signature-{n}"))
        .take_while(|p| common::conformance_dir().join(p).exists())
        .map(|p| load_sig(&p))
        .collect();
    (digest, sigs)
}

fn layers(sigs: &[Sig]) -> Vec<SignatureLayer<'_>> {
    sigs.iter()
        .map(|s| SignatureLayer {
            payload: &s.payload,
            signature: &s.signature,
            bundle: s.bundle.as_deref(),
            certificate: s.certificate.as_deref(),
        })
        .collect()
}

fn key(name: &str) -> Attestor {
    let pem = String::from_utf8(common::read(&format!("cosign-signatures/{name}"))).unwrap();
    Attestor::public_key(&pem, None).unwrap()
}

fn production_root() -> TrustedRoot {
    TrustedRoot::from_json(&common::read("sigstore-bundles/trusted_root.production.json")).unwrap()
}

fn verdict(dir: &str, attestor: &Attestor) -> portcullis_cosign::Verdict {
    let (digest, sigs) = case(dir);
    assert!(!sigs.is_empty(), "{dir}: no signatures");
    let v = verify_legacy(&digest, &layers(&sigs), attestor);
    println!("{dir}: {v}");
    v
}

#[test]
fn valid_with_cosign_pub() {
    for dir in [
        "dir-img-cosign-valid",
        "dir-img-cosign-valid-2",
        "dir-img-cosign-valid-with-tag",
    ] {
        assert!(verdict(dir, &key("cosign.pub")).verified(), "{dir}");
        assert!(
            !verdict(dir, &key("cosign2.pub")).verified(),
            "{dir} with the other key"
        );
    }
}

#[test]
fn key_rekor_valid_with_cosign2_pub_and_its_set() {
    let dir = "dir-img-cosign-key-rekor-valid";
    assert!(verdict(dir, &key("cosign2.pub")).verified());
    assert!(!verdict(dir, &key("cosign.pub")).verified());
    // With the transparency log required, the bundle's SET verifies with Rekor's key.
    let Attestor::PublicKey { key: k, .. } = key("cosign2.pub") else {
        unreachable!()
    };
    let with_log = Attestor::PublicKey {
        key: k.clone(),
        transparency_log: Some(production_root()),
    };
    let v = verdict(dir, &with_log);
    assert!(v.verified(), "{v}");
    // Another log key: the SET does not hold.
    let other_log = Attestor::PublicKey {
        key: k,
        transparency_log: Some(TrustedRoot::with_rekor_key(
            PublicKey::from_pem(&String::from_utf8(common::read("cosign-signatures/cosign.pub")).unwrap()).unwrap(),
        )),
    };
    assert!(!verdict(dir, &other_log).verified());
}

#[test]
fn log_required_but_absent_fails() {
    let Attestor::PublicKey { key: k, .. } = key("cosign.pub") else {
        unreachable!()
    };
    let with_log = Attestor::PublicKey {
        key: k,
        transparency_log: Some(production_root()),
    };
    let v = verdict("dir-img-cosign-valid", &with_log);
    assert!(!v.verified());
    assert!(v.reason().contains("transparency log"), "{v}");
}

#[test]
fn digest_mismatch_rejected() {
    for dir in [
        "dir-img-cosign-modified-manifest",
        "dir-img-cosign-manifest-digest-error",
    ] {
        let v = verdict(dir, &key("cosign.pub"));
        assert!(!v.verified(), "{dir}");
        assert!(v.reason().contains("is not the image's digest"), "{dir}: {v}");
    }
}

#[test]
fn unknown_key_rejected() {
    let sig = load_sig("cosign-signatures/unknown-cosign-key.signature");
    let (digest, _) = case("dir-img-cosign-valid");
    let layer = SignatureLayer {
        payload: &sig.payload,
        signature: &sig.signature,
        bundle: sig.bundle.as_deref(),
        certificate: None,
    };
    let v = verify_legacy(&digest, &[layer], &key("cosign.pub"));
    assert!(!v.verified());
    assert!(v.reason().contains("does not verify"), "{v}");
}

#[test]
fn other_attachment_rejected() {
    let v = verdict("dir-img-cosign-other-attachment", &key("cosign.pub"));
    assert!(!v.verified());
}

#[test]
fn certificate_based_out_of_scope_for_keys() {
    for dir in ["dir-img-cosign-fulcio-rekor-valid", "dir-img-cosign-pki-valid"] {
        assert!(!verdict(dir, &key("cosign.pub")).verified(), "{dir}");
        assert!(!verdict(dir, &key("cosign2.pub")).verified(), "{dir}");
    }
}

fn keyless(issuer: &str, subject: &str) -> Attestor {
    Attestor::keyless(
        issuer,
        Some(subject),
        None,
        &common::read("sigstore-bundles/trusted_root.production.json"),
    )
    .unwrap()
}

#[test]
fn fulcio_rekor_valid_with_its_identity() {
    let dir = "dir-img-cosign-fulcio-rekor-valid";
    // The certificate names its issuer only in the legacy extension 1.3.6.1.4.1.57264.1.1.
    let v = verdict(dir, &keyless("https://github.com/login/oauth", "mitr@redhat.com"));
    assert!(v.verified(), "{v}");
    let v = verdict(dir, &keyless("https://github.com/login/oauth", "someone@example.com"));
    assert!(!v.verified() && v.reason().contains("identity"), "{v}");
    let v = verdict(dir, &keyless("https://accounts.google.com", "mitr@redhat.com"));
    assert!(!v.verified() && v.reason().contains("OIDC issuer"), "{v}");
    let any_redhat = Attestor::keyless(
        "https://github.com/login/oauth",
        None,
        Some(r"[a-z]+@redhat\.com"),
        &common::read("sigstore-bundles/trusted_root.production.json"),
    )
    .unwrap();
    assert!(verdict(dir, &any_redhat).verified());
    // A pattern must match the whole SAN, not a part of it.
    let partial = Attestor::keyless(
        "https://github.com/login/oauth",
        None,
        Some("redhat"),
        &common::read("sigstore-bundles/trusted_root.production.json"),
    )
    .unwrap();
    assert!(!verdict(dir, &partial).verified());
    // Another instance's root (staging): no trusted CA nor log.
    let staging = Attestor::keyless(
        "https://github.com/login/oauth",
        Some("mitr@redhat.com"),
        None,
        &common::read("sigstore-bundles/trusted_root.staging.json"),
    )
    .unwrap();
    assert!(!verdict(dir, &staging).verified());
    // Keyed signatures are not keyless ones.
    assert!(
        !verdict(
            "dir-img-cosign-key-rekor-valid",
            &keyless("https://github.com/login/oauth", "mitr@redhat.com")
        )
        .verified()
    );
}

#[test]
fn mixed_holds_through_its_valid_layer() {
    let (digest, sigs) = case("dir-img-cosign-mixed");
    assert_eq!(sigs.len(), 2);
    let attestor = key("cosign.pub");
    let each: Vec<bool> = sigs
        .iter()
        .map(|s| verify_legacy(&digest, &layers(std::slice::from_ref(s)), &attestor).verified())
        .collect();
    assert_eq!(each.iter().filter(|b| **b).count(), 1, "{each:?}");
    assert!(verdict("dir-img-cosign-mixed", &attestor).verified());
}
