//! Keys made by the test (P-256, P-384, RSA, Ed25519) signing simple-signing payloads: one
//! key, the wrong key, a tampered payload, a signature for another digest, the wrong type.
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
use portcullis_cosign::{Attestor, KeyKind, PublicKey, SignatureLayer, Verdict, VerifyError, all, any, verify_legacy};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};

use common::{DIGEST, payload};

const OTHER_DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

/// A 2048-bit RSA test key made with `openssl genpkey` for this test only (ring cannot
/// generate RSA keys).
const RSA_PKCS8: &str = "
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCshjifV3yL2KOkBu7qiG40dxIQspYVZYLkmTVQxjF4XNxp+huYGOW5ilJpzt0qEGZFWcOvxJnEZeoXX41pvTFYrf8vbn+tafFaeaSbvffbcdc6kbYTmFFzRUvjZ7TCgJAnHl/lPiAiahv+fOe1SPJBWOCrKvwaVqAMY70hEi66gQKyjLm8umkwMu5OhbmSxldh1kFJVqhnEFXXruOvskEtPjtWljhrUqp81Q4P8W9L9+zZiGCnATVv1zfRgp9r8pk93/YiFqjzDxHvonkQ2qZoI3LpISueM5n3nnNmhF2p27ggqfA/EZT+L/oqZjN6w52Y1H9zkfLH8lUYaah9vZsVAgMBAAECggEAAq/XHemCOmNWA8NKi+3dWYUpNjKx0lonCbcLyjBBVlCL65KbmhN5MG85DVt4Ek74aMgXG3ECZrlM8K7qSDqhaXIm8UQqn4wbgtSLfb7IUhXvINhixOIFvWKCO2PCwEIO/Kz6bVrkVo+J1BLPQQGGfwIKrbUZAV1WrMVjjVT31AERICihrTdiW09mpgXanUJf5RYkCFCE4L2mrJUuMXRRTmHCjKMx/gnQIp9RF1VOgX+lIYo3zLryxVgv0nrLeYS27yxw5l/z1jw6qMwfteWGBTbwW2ExeHabRZkc7vgAeRd91yY/UbHSgcSQrR4cnjMNrQCYVe4K3MVHUB9ivz5H2QKBgQDjKTzD3/xDFoDQhXquz9IUIDI9N48SgEdg1B33Rq478vQ8m8cwIqBPROiuzfAx5379wmWQVBjD8po6cEewLqmXLStbL9OfWtJuGP7d++1VQv7uGZsBMnc5lqHEMoB0lrvHVKzD4nRMX4418RblCjd0gfaiA99e7P8EOYVD0+8jgwKBgQDCbUgkjWLKoQe9HVvP9V78/uohjTXQG/4cFSjkDsLI2zaIPqKQQGKNm2JT5ERU7zg7iwJfjZQgfFRGHdtNIiZIJ5pVrv8Yw4cork/fd0WgDP2qhTpfg0sS6KpzUjaMVS6WrTM7bOHKJMz2d3tZZcLeqpz8Z+k5W4AWKaCfMlPLhwKBgQDFHrWyK53WAaMKT6nkJEbiXAX8hUfMADDwX2EZgOYU84DpTyyMIqAF6YAYoHA8fev+/D/x/Gf5MX6QE3rB8dwMaY/j8x6qe7969onDy6dpg1eA+gs+ALLg8Euz2zcI9PxBvsKkwM+2rnzTZkA9xJ3WpiiE8uNUlke9PMTd1P0BTQKBgD3LuihT/9hjgjAriqj4Vi6XXxc26Kmym/uVBiAmSObKNfTr44Nx02Eqx//eB5HvTrIuJpz0ROZmXerDRpanif9ZBwbAzjeyvdzCOoTORgTu3Bk8qyb8dfoWlUZ+FPRZhqtBdY0nuEQlmjekFkJ9w4g+NhNLe6dNW9KvfGvc9SE1AoGAZEQAGXlkpX7v9q/ql06gKHSp9BSWt0QgGs0WlllCRba+Yvlk9P/adQIgVLp0bvR4fAT8iqn4yG/CryEZd/3uD2hLbWn/QcpKrXIQa9ss7cQczVijY83UDK6/uUnJ0grqkexnZRCx86e2FJWIKXGT5mpfTq1IjASumOIlkJWa3MU=";
const RSA_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEArIY4n1d8i9ijpAbu6ohu
NHcSELKWFWWC5Jk1UMYxeFzcafobmBjluYpSac7dKhBmRVnDr8SZxGXqF1+Nab0x
WK3/L25/rWnxWnmkm73323HXOpG2E5hRc0VL42e0woCQJx5f5T4gImob/nzntUjy
QVjgqyr8GlagDGO9IRIuuoECsoy5vLppMDLuToW5ksZXYdZBSVaoZxBV167jr7JB
LT47VpY4a1KqfNUOD/FvS/fs2YhgpwE1b9c30YKfa/KZPd/2Ihao8w8R76J5ENqm
aCNy6SErnjOZ955zZoRdqdu4IKnwPxGU/i/6KmYzesOdmNR/c5Hyx/JVGGmofb2b
FQIDAQAB
-----END PUBLIC KEY-----";

/// Signs a message with a test key.
type SignFn = Box<dyn Fn(&[u8]) -> Vec<u8>>;

/// A test signer: its PEM public key and a signing function.
struct Signer {
    kind: KeyKind,
    public_pem: String,
    sign: SignFn,
}

fn pem(spki: &[u8]) -> String {
    let b64 = STANDARD.encode(spki);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        lines.join("\n")
    )
}

/// DER TLV with a short or long length.
fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = contents.len();
    if len < 128 {
        out.push(len as u8);
    } else if len < 256 {
        out.extend([0x81, len as u8]);
    } else {
        out.extend([0x82, (len >> 8) as u8, len as u8]);
    }
    out.extend_from_slice(contents);
    out
}

fn spki(algorithm: &[u8], key: &[u8]) -> Vec<u8> {
    let mut bits = vec![0u8];
    bits.extend_from_slice(key);
    tlv(0x30, &[tlv(0x30, algorithm), tlv(0x03, &bits)].concat())
}

fn ec_signer(curve_oid: &[u8], alg: &'static signature::EcdsaSigningAlgorithm, kind: KeyKind) -> Signer {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
    let algorithm = [
        tlv(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]),
        tlv(0x06, curve_oid),
    ]
    .concat();
    Signer {
        kind,
        public_pem: pem(&spki(&algorithm, pair.public_key().as_ref())),
        sign: Box::new(move |m| pair.sign(&SystemRandom::new(), m).unwrap().as_ref().to_vec()),
    }
}

fn signers() -> Vec<Signer> {
    let rng = SystemRandom::new();
    let ed = Ed25519KeyPair::from_pkcs8(Ed25519KeyPair::generate_pkcs8(&rng).unwrap().as_ref()).unwrap();
    let ed_pem = pem(&spki(&tlv(0x06, &[0x2b, 0x65, 0x70]), ed.public_key().as_ref()));
    let rsa_der = STANDARD.decode(RSA_PKCS8.trim()).unwrap();
    let rsa = RsaKeyPair::from_pkcs8(&rsa_der).unwrap();
    vec![
        ec_signer(
            &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
            &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            KeyKind::EcdsaP256,
        ),
        ec_signer(
            &[0x2b, 0x81, 0x04, 0x00, 0x22],
            &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
            KeyKind::EcdsaP384,
        ),
        Signer {
            kind: KeyKind::Ed25519,
            public_pem: ed_pem,
            sign: Box::new(move |m| ed.sign(m).as_ref().to_vec()),
        },
        Signer {
            kind: KeyKind::Rsa,
            public_pem: RSA_PUBLIC.to_owned(),
            sign: Box::new(move |m| {
                let mut sig = vec![0; rsa.public().modulus_len()];
                rsa.sign(&signature::RSA_PKCS1_SHA256, &SystemRandom::new(), m, &mut sig)
                    .unwrap();
                sig
            }),
        },
    ]
}

fn check(signer: &Signer, attestor: &Attestor, payload: &[u8], signed: &[u8]) -> Verdict {
    let sig = STANDARD.encode((signer.sign)(signed));
    let layer = SignatureLayer {
        payload,
        signature: &sig,
        bundle: None,
        certificate: None,
    };
    verify_legacy(DIGEST, &[layer], attestor)
}

#[test]
fn every_key_kind() {
    let signers = signers();
    for (i, signer) in signers.iter().enumerate() {
        let attestor = Attestor::public_key(&signer.public_pem, None).unwrap();
        assert_eq!(PublicKey::from_pem(&signer.public_pem).unwrap().kind(), signer.kind);
        let good = payload(DIGEST, "cosign container image signature");
        let v = check(signer, &attestor, &good, &good);
        assert!(v.verified(), "{:?}: {v}", signer.kind);

        // Another key of the set: refused.
        let other = &signers[(i + 1) % signers.len()];
        let wrong = Attestor::public_key(&other.public_pem, None).unwrap();
        let v = check(signer, &wrong, &good, &good);
        assert!(
            !v.verified() && v.reason().contains("does not verify"),
            "{:?}: {v}",
            signer.kind
        );

        // A payload changed after signing (one space added): refused.
        let mut tampered = good.clone();
        tampered.push(b' ');
        let v = check(signer, &attestor, &tampered, &good);
        assert!(
            !v.verified() && v.reason().contains("does not verify"),
            "{:?}: {v}",
            signer.kind
        );

        // A genuine signature, for another image.
        let other_image = payload(OTHER_DIGEST, "cosign container image signature");
        let v = check(signer, &attestor, &other_image, &other_image);
        assert!(
            !v.verified() && v.reason().contains("is not the image's digest"),
            "{:?}: {v}",
            signer.kind
        );

        // A genuine signature of another payload type.
        let attestation = payload(DIGEST, "cosign attestation");
        let v = check(signer, &attestor, &attestation, &attestation);
        assert!(
            !v.verified() && v.reason().contains("payload type"),
            "{:?}: {v}",
            signer.kind
        );
    }
}

#[test]
fn all_and_any() {
    let yes = Verdict::from_result(Ok("held".into()));
    let no = Verdict::from_result(Err(VerifyError::BadSignature("the signature")));
    assert!(all(&[yes.clone(), yes.clone()]).verified());
    assert!(!all(&[yes.clone(), no.clone()]).verified());
    assert!(!all(&[]).verified());
    assert!(any(&[no.clone(), yes]).verified());
    assert!(!any(&[no.clone(), no]).verified());
    assert!(!any(&[]).verified());
}

#[test]
fn unsupported_keys_refused() {
    // P-521 and a certificate are not cosign public keys here.
    assert!(
        PublicKey::from_pem(
            "-----BEGIN PUBLIC KEY-----\nMIGbMBAGByqGSM49AgEGBSuBBAAjA4GGAAQ=\n-----END PUBLIC KEY-----"
        )
        .is_err()
    );
    assert!(PublicKey::from_pem("not pem").is_err());
    assert!(Attestor::keyless("i", Some("s"), Some("r"), b"{}").is_err());
}
