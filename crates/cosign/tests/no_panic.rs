//! No input makes the verifier panic: real bundles and signatures, corrupted at random and
//! truncated everywhere, always come back as a verdict.
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
use portcullis_cosign::{Attestor, PublicKey, SignatureLayer, TrustedRoot, verify_bundle, verify_legacy};
use proptest::prelude::*;

const IDENTITY: &str = "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main";
const ISSUER: &str = "https://token.actions.githubusercontent.com";

struct Inputs {
    bundle: Vec<u8>,
    artifact: Vec<u8>,
    keyless: Attestor,
    keyed: Attestor,
    keyed_bundle: Vec<u8>,
    dsse_bundle: Vec<u8>,
    payload: Vec<u8>,
    signature: String,
    rekor_bundle: String,
    legacy: Attestor,
    digest: String,
}

fn inputs() -> Inputs {
    let root_json = common::read("sigstore-bundles/trusted_root.production.json");
    let root = TrustedRoot::from_json(&root_json).unwrap();
    let raw = common::read("cosign-signatures/dir-img-cosign-key-rekor-valid/signature-1");
    let v: serde_json::Value = serde_json::from_slice(raw.strip_prefix(b"\x00sigstore-json\n").unwrap()).unwrap();
    let pem = String::from_utf8(common::read("cosign-signatures/cosign2.pub")).unwrap();
    let managed = String::from_utf8(common::read("sigstore-bundles/managed-key-happy-path/key.pub")).unwrap();
    Inputs {
        bundle: common::read("sigstore-bundles/happy-path-v0.2/bundle.sigstore.json"),
        artifact: common::read("sigstore-bundles/a.txt"),
        keyless: Attestor::keyless(ISSUER, Some(IDENTITY), None, &root_json).unwrap(),
        keyed: Attestor::PublicKey {
            key: PublicKey::from_pem(&managed).unwrap(),
            transparency_log: Some(root.clone()),
        },
        keyed_bundle: common::read("sigstore-bundles/managed-key-happy-path/bundle.sigstore.json"),
        dsse_bundle: common::read("sigstore-bundles/happy-path-intoto-in-dsse-v3/bundle.sigstore.json"),
        payload: STANDARD.decode(v["payload"].as_str().unwrap()).unwrap(),
        signature: v["annotations"]["dev.cosignproject.cosign/signature"]
            .as_str()
            .unwrap()
            .to_owned(),
        rekor_bundle: v["annotations"]["dev.sigstore.cosign/bundle"]
            .as_str()
            .unwrap()
            .to_owned(),
        legacy: Attestor::PublicKey {
            key: PublicKey::from_pem(&pem).unwrap(),
            transparency_log: Some(root),
        },
        digest: "sha256:0489474da8ea22426ece86ace6c1c0026ab2fd3cdfbbd62b7e94650266c37d9a".into(),
    }
}

fn legacy(i: &Inputs, payload: &[u8], signature: &str, bundle: &str) -> bool {
    let layer = SignatureLayer {
        payload,
        signature,
        bundle: Some(bundle),
        certificate: None,
    };
    verify_legacy(&i.digest, &[layer], &i.legacy).verified()
}

#[test]
fn originals_verify() {
    let i = inputs();
    let now = common::now();
    assert!(verify_bundle(&i.bundle, &i.artifact, &i.keyless, now).verified());
    assert!(verify_bundle(&i.keyed_bundle, &i.artifact, &i.keyed, now).verified());
    assert!(verify_bundle(&i.dsse_bundle, &i.artifact, &i.keyless, now).verified());
    assert!(legacy(&i, &i.payload, &i.signature, &i.rekor_bundle));
}

#[test]
fn truncations_never_panic_nor_pass() {
    let i = inputs();
    let now = common::now();
    for bundle in [&i.bundle, &i.dsse_bundle] {
        for len in (0..bundle.len()).step_by(53) {
            assert!(!verify_bundle(&bundle[..len], &i.artifact, &i.keyless, now).verified());
        }
    }
    for len in (0..i.rekor_bundle.len()).step_by(7) {
        assert!(!legacy(&i, &i.payload, &i.signature, &i.rekor_bundle[..len]));
    }
}

fn mutate(bytes: &[u8], at: usize, value: u8) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if !out.is_empty() {
        let at = at % out.len();
        out[at] = value;
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn corrupted_bundles_never_panic(at in any::<usize>(), value in any::<u8>(), which in 0u8..3) {
        let i = inputs();
        let (bundle, attestor) = match which {
            0 => (&i.keyed_bundle, &i.keyed),
            1 => (&i.dsse_bundle, &i.keyless),
            _ => (&i.bundle, &i.keyless),
        };
        let corrupted = mutate(bundle, at, value);
        let verdict = verify_bundle(&corrupted, &i.artifact, attestor, common::now());
        // A changed byte may be insignificant (JSON whitespace, an unchecked hint); otherwise refused.
        prop_assert!(!verdict.reason().is_empty());
    }

    #[test]
    fn corrupted_legacy_never_panics(at in any::<usize>(), value in any::<u8>(), part in 0u8..3) {
        let i = inputs();
        let (payload, signature, bundle) = match part {
            0 => (mutate(&i.payload, at, value), i.signature.clone(), i.rekor_bundle.clone()),
            1 => (i.payload.clone(), String::from_utf8_lossy(&mutate(i.signature.as_bytes(), at, value)).into_owned(), i.rekor_bundle.clone()),
            _ => (i.payload.clone(), i.signature.clone(), String::from_utf8_lossy(&mutate(i.rekor_bundle.as_bytes(), at, value)).into_owned()),
        };
        let _ = legacy(&i, &payload, &signature, &bundle);
    }

    #[test]
    fn arbitrary_bytes_never_pass(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let i = inputs();
        prop_assert!(!verify_bundle(&bytes, &i.artifact, &i.keyless, common::now()).verified());
        let _ = PublicKey::from_spki_der(&bytes);
        let _ = TrustedRoot::from_json(&bytes);
    }
}
