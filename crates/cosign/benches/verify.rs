//! One P-256 legacy signature verification (signature, payload type and digest), the cost of
//! one attestor on one image at admission:
//! `cargo bench -p portcullis-cosign --bench verify`.
#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use criterion::{Criterion, criterion_group, criterion_main};
use portcullis_cosign::{Attestor, SignatureLayer, verify_legacy};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};

const DIGEST: &str = "sha256:634a8f35b5f16dcf4aaa0822adc0b1964bb786fca12f6831de8ddc45e5986a00";

fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![tag, contents.len() as u8];
    out.extend_from_slice(contents);
    out
}

fn bench(c: &mut Criterion) {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let algorithm = [
        tlv(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]),
        tlv(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]),
    ]
    .concat();
    let mut bits = vec![0u8];
    bits.extend_from_slice(pair.public_key().as_ref());
    let spki = tlv(0x30, &[tlv(0x30, &algorithm), tlv(0x03, &bits)].concat());
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        STANDARD.encode(spki)
    );
    let attestor = Attestor::public_key(&pem, None).unwrap();
    let payload = format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"registry.example/app"}},"image":{{"docker-manifest-digest":"{DIGEST}"}},"type":"cosign container image signature"}},"optional":null}}"#
    );
    let signature = STANDARD.encode(pair.sign(&rng, payload.as_bytes()).unwrap());
    let layers = [SignatureLayer {
        payload: payload.as_bytes(),
        signature: &signature,
        bundle: None,
        certificate: None,
    }];
    assert!(verify_legacy(DIGEST, &layers, &attestor).verified());
    c.bench_function("legacy_p256_verify", |b| {
        b.iter(|| verify_legacy(std::hint::black_box(DIGEST), &layers, &attestor))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
