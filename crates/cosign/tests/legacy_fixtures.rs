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
