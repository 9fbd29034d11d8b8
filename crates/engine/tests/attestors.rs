//! Attestors: documents, validation and the public keys they accept.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use portcullis_engine::attestor::{
    Attestor, KeyError, KeyKind, KeylessOptions, TransparencyLogOptions, parse_public_key_pem,
};
use portcullis_engine::policy::FieldError;

const COSIGN_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/conformance/cosign-signatures"
);

fn cosign_key(file: &str) -> String {
    let path = format!("{COSIGN_DIR}/{file}");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

// Test vectors made with openssl on the development machine:
//   openssl genpkey -algorithm ed25519 | openssl pkey -pubout
//   openssl ecparam -name prime256v1|secp384r1|secp256k1 -genkey | openssl ec -pubout
//   openssl genrsa 1024|2048|3072 | openssl rsa -pubout
//   openssl genpkey -algorithm ed448 | openssl pkey -pubout
//   openssl genpkey -algorithm rsa-pss | openssl pkey -pubout
//   ... | openssl ec -pubout -conv_form compressed
//   openssl genrsa 3072 | openssl rsa -RSAPublicKey_out          (PKCS#1 label)
// RSA_NO_NULL_PARAMS and RSA_EXPONENT_1 are RSA2048 with the DER edited by hand (the
// rsaEncryption NULL parameters dropped; the public exponent replaced by 1).
const ED25519: &str = "\
-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAlcHYHBEC1D+yKOwbD9Tpy4uRpbkZpjgyn/sH80zTH9Y=
-----END PUBLIC KEY-----
";
const P256: &str = "\
-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE5EAXkGF4P0Zr4tYyW2Lm0hZxCMIy
J/SsSp+LVQwzt0Lipr7hzDz18vIC1A9i+cp3eSax0q+oIFJWDOThh58Ung==
-----END PUBLIC KEY-----
";
const P384: &str = "\
-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEQV9QqH9LvalipNhmCLf5V5/OsTZjoMZU
yKxK+83VEyCdyz0Cq1DsVO25fE2Yi8vtpM9RDwjv7Wr1dOf/FDGWqGgGEm3QmqSD
C75y//+h/TFsxDMrr5xLJGfN9yjp3be+
-----END PUBLIC KEY-----
";
const RSA2048: &str = "\
-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEArpm00rHFMhNhxY9sdFFR
97Exfi+/XsNX06hoaYk3CAoxeIqTGSLLaoYmg74rL7rBB6PEWjfASC7HM0svALE3
ZE03zZ00Ky8EepOWZHI0CrI9Ti302UsaflaujuezYe/pq9KSv/9EhczYrGXZNH+G
wwsRx7R8F7rUwilwVH4RkD3YRqkS9CN0B5pFWXaC38KZ5nbnp7M9+TcqKZdiPBP+
5o9J/V4wC9O+6ENXML7BF+6cC8LLjucOZVPnGbArXfV49okAUKHEIApyQ3S42UXz
NRUPeMXUeiQJQkk7lDrwpLXoH/sWNNXcqRNtn/Jf6HOi+wHYRH3ZOqOvmfFdfMou
rQIDAQAB
-----END PUBLIC KEY-----
";
const RSA3072: &str = "\
-----BEGIN PUBLIC KEY-----
MIIBojANBgkqhkiG9w0BAQEFAAOCAY8AMIIBigKCAYEApz0qZod/rZfbRYPBTmgN
yPtMI/qiHMAng+9aCla0+NFqIBtUNmgTIEYCBMRT5G5D8CETvyEsHBeo8yIfus+t
1HX/9p8PBQLQqQe+ZONAP2cv/aL+8PBInxU9oY1rtdTDSrVLalwxmsJm23/7XBCm
OOB623eGYoWUBu+XAnwOsGAFz6C/Kra09ztK/iWkGZcOktyF62SwCPx+7Y96pR0E
qCQaBK1STIoVjcW3aMOtnxDh0FrW+YPMAe7+IO4EUMnNxY8Jz5VQ/u0OxsgIHlPb
AraLJjgPUTEiZLtsJWfy5AsWoyUhF8RJ0B/bPsIR8RWXDOn7colgqaqFTx6nBnQm
xUio46HZtRuXQ4cqHzwENNy0SdcFATTNWTV9QqxPTQg2eK0pbj0iXflj08NRej7g
/qA0xWjxzCRrwMBz31edvpnHphaDdJVLeLKJCVuUC5kxwk3MekG6fUZGrqr6IXtR
uEfREOxyi6VjRDDWiOMNob1N3QOqHE/CmXAJOAiVPrWZAgMBAAE=
-----END PUBLIC KEY-----
";
const RSA1024: &str = "\
-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQD2F+cFPmihFjqSeIJgKtteT8TF
/Q0otN5ohKGrK4FCac4KadAykfs61MNOtgejHkIXurcBscsNaoqQeTUO0ObIzjkZ
L3OvJgcPvnjQDULcQVhWhQecBeblk1D5KJVxIQqvoKMlLPBxYYdxUNrcufACqp4D
yYv2lVtuA2dkSJC2QwIDAQAB
-----END PUBLIC KEY-----
";
const SECP256K1: &str = "\
-----BEGIN PUBLIC KEY-----
MFYwEAYHKoZIzj0CAQYFK4EEAAoDQgAE46qh8pCrYQ+FNShUMxow1wC3QYNIo8xR
kZ3NK8aw6FDSI377kpjc4h5MOMer8+dhSIjPiJdpfOE2PxMb+bU7KA==
-----END PUBLIC KEY-----
";
const ED448: &str = "\
-----BEGIN PUBLIC KEY-----
MEMwBQYDK2VxAzoAhiPy5PGsiC6G5FfxzZIt8A2qjloXQn1tqw3oIFd1a4m3tkw0
J/m9IH+kB4X02wcmHZKpfXoLsyGA
-----END PUBLIC KEY-----
";
const P256_COMPRESSED: &str = "\
-----BEGIN PUBLIC KEY-----
MDkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDIgACpfEuILlRkBSHN2FmM0UG6IgsY7q+
9li8ewYmoXl2roQ=
-----END PUBLIC KEY-----
";
const RSA_PSS: &str = "\
-----BEGIN PUBLIC KEY-----
MIIBIDALBgkqhkiG9w0BAQoDggEPADCCAQoCggEBAJrK8aB4pQqrlYCoWq0bImX1
FUBY0BmrKUA7yTnY/jVDaxFtUOn+UNYg2YfsO4Eznl4xtcQrCBN+uKg160YvfmWM
vKdynLoDemHPHGl8JjEY+mhe1N52rYgkDITADp7Z1Nr49FTucTtdP/mZ7DZ1A1z9
BK8kA++kua697UdUq/nTnwCrtx0IYvHvSX/QG7SPEvd082nUtVBjLPTB6hz29RZw
ymL5nnqGowABreinQ2se41eTRCDzDHMt2oKcp+0aBEZB+UyUNG0koq6zt5aT7IHY
HtsxnW118RckL1vTWWDGJw0gBw961J0/lvwRqIfjf6ISaafIa+5Bx/KpDNZ5/r8C
AwEAAQ==
-----END PUBLIC KEY-----
";
const RSA_NO_NULL_PARAMS: &str = "\
-----BEGIN PUBLIC KEY-----
MIIBIDALBgkqhkiG9w0BAQEDggEPADCCAQoCggEBAK6ZtNKxxTITYcWPbHRRUfex
MX4vv17DV9OoaGmJNwgKMXiKkxkiy2qGJoO+Ky+6wQejxFo3wEguxzNLLwCxN2RN
N82dNCsvBHqTlmRyNAqyPU4t9NlLGn5Wro7ns2Hv6avSkr//RIXM2Kxl2TR/hsML
Ece0fBe61MIpcFR+EZA92EapEvQjdAeaRVl2gt/CmeZ256ezPfk3KimXYjwT/uaP
Sf1eMAvTvuhDVzC+wRfunAvCy47nDmVT5xmwK131ePaJAFChxCAKckN0uNlF8zUV
D3jF1HokCUJJO5Q68KS16B/7FjTV3KkTbZ/yX+hzovsB2ER92Tqjr5nxXXzKLq0C
AwEAAQ==
-----END PUBLIC KEY-----
";
const RSA_EXPONENT_1: &str = "\
-----BEGIN PUBLIC KEY-----
MIIBIDANBgkqhkiG9w0BAQEFAAOCAQ0AMIIBCAKCAQEArpm00rHFMhNhxY9sdFFR
97Exfi+/XsNX06hoaYk3CAoxeIqTGSLLaoYmg74rL7rBB6PEWjfASC7HM0svALE3
ZE03zZ00Ky8EepOWZHI0CrI9Ti302UsaflaujuezYe/pq9KSv/9EhczYrGXZNH+G
wwsRx7R8F7rUwilwVH4RkD3YRqkS9CN0B5pFWXaC38KZ5nbnp7M9+TcqKZdiPBP+
5o9J/V4wC9O+6ENXML7BF+6cC8LLjucOZVPnGbArXfV49okAUKHEIApyQ3S42UXz
NRUPeMXUeiQJQkk7lDrwpLXoH/sWNNXcqRNtn/Jf6HOi+wHYRH3ZOqOvmfFdfMou
rQIBAQ==
-----END PUBLIC KEY-----
";
const RSA_PKCS1_PEM: &str = "\
-----BEGIN RSA PUBLIC KEY-----
MIIBigKCAYEAvlfwl2DhG/5qNbakEShHItPFaRSib3V6cGxFjyaRErPVtu0RxOxK
1W34XRqEh4ouR9Ah3EuBGK7kX4XOcYLhXqg/6JHFuK3sS6r7srd8IhofRTbTrfbX
ym2HBHmq6AkptRzHjgFVIPelgSdLdZoWn+VXd8Rk1TfXszjqz+rrlTQAqrDKK3a2
us7uk1t05SilzbK9HQ6pG2Ui99ifDE1F+T1qPtwAmmyaUlR2ltVTVNT2QsBv24le
dDo/ip6U3e4z2KeDa8BdLYX/AZVOAMJoeH3EIHTNVmAx6W6vUyDyH4YIQ/tRUVIH
1+SXGbVs+ApU9bmiGo2GJKK/ZUEzL3M73biZuBKdFWqv/54nBCeCHmzLD5/OLrLP
x/BtQDEAUpPg9+t2y9YgifaXURNxB+8YyL82Sf3byavXc7XFcQ/Yogao3nQmGI1C
mbRfPJsh0rlt/79oUBoouHxbkAF0qVwELEYzvrVQIlXjPKEK0B7ZriC4CruyDV4k
FvsLXdlClIAZAgMBAAE=
-----END RSA PUBLIC KEY-----
";

fn attestor(public_key: &str) -> Attestor {
    Attestor {
        name: "release-signer".to_owned(),
        description: "Release pipeline key".to_owned(),
        attestor_type: "cosignPublicKey".to_owned(),
        public_key: public_key.to_owned(),
        transparency_log_enabled: false,
        transparency_log_options: None,
        keyless: None,
    }
}

fn paths(errors: &[FieldError]) -> Vec<&str> {
    errors.iter().map(|e| e.path.as_str()).collect()
}

#[test]
fn real_cosign_keys_are_accepted() {
    for file in ["cosign.pub", "cosign2.pub"] {
        let a = attestor(&cosign_key(file));
        assert_eq!(a.validate(), Ok(()), "{file}");
        assert_eq!(a.key_kind(), Ok(KeyKind::EcdsaP256Sha256), "{file}");
    }
}

#[test]
fn supported_key_kinds() {
    let cases = [
        (P256, KeyKind::EcdsaP256Sha256),
        (P384, KeyKind::EcdsaP384Sha384),
        (RSA2048, KeyKind::RsaPkcs1Sha256),
        (RSA3072, KeyKind::RsaPkcs1Sha256),
        (ED25519, KeyKind::Ed25519),
    ];
    for (pem, kind) in cases {
        let a = attestor(pem);
        assert_eq!(a.key_kind(), Ok(kind));
        assert_eq!(a.validate(), Ok(()), "{kind:?}");
    }
}

#[test]
fn parsed_key_exposes_its_der() {
    let key = parse_public_key_pem(ED25519).unwrap();
    assert_eq!(key.kind, KeyKind::Ed25519);
    assert_eq!(key.key_bytes.len(), 32);
    // 12 bytes of SPKI header + the 32 key bytes.
    assert_eq!(key.spki_der.len(), 44);
    assert!(key.spki_der.ends_with(&key.key_bytes));
    let ec = parse_public_key_pem(P384).unwrap();
    assert_eq!(ec.key_bytes.len(), 97);
    assert_eq!(ec.key_bytes.first(), Some(&0x04));
}

#[test]
fn surrounding_whitespace_and_crlf_are_tolerated() {
    let padded = format!("\n  {}\n\n", P256.trim());
    assert_eq!(attestor(&padded).key_kind(), Ok(KeyKind::EcdsaP256Sha256));
    let crlf = P256.replace('\n', "\r\n");
    assert_eq!(attestor(&crlf).key_kind(), Ok(KeyKind::EcdsaP256Sha256));
}

#[test]
fn unsupported_keys_are_refused() {
    assert_eq!(parse_public_key_pem(RSA1024).unwrap_err(), KeyError::RsaKeySize(1024));
    assert!(matches!(
        parse_public_key_pem(SECP256K1).unwrap_err(),
        KeyError::UnsupportedCurve(c) if c.contains("secp256k1")
    ));
    assert!(matches!(
        parse_public_key_pem(ED448).unwrap_err(),
        KeyError::UnsupportedAlgorithm(a) if a.contains("Ed448")
    ));
    assert!(matches!(
        parse_public_key_pem(RSA_PSS).unwrap_err(),
        KeyError::UnsupportedAlgorithm(a) if a.contains("RSASSA-PSS")
    ));
    assert!(matches!(
        parse_public_key_pem(P256_COMPRESSED).unwrap_err(),
        KeyError::InvalidKey { algorithm: "EC", .. }
    ));
    assert!(matches!(
        parse_public_key_pem(RSA_NO_NULL_PARAMS).unwrap_err(),
        KeyError::InvalidKey { algorithm: "RSA", .. }
    ));
    assert!(matches!(
        parse_public_key_pem(RSA_EXPONENT_1).unwrap_err(),
        KeyError::InvalidKey { algorithm: "RSA", .. }
    ));
    assert_eq!(
        parse_public_key_pem(RSA_PKCS1_PEM).unwrap_err(),
        KeyError::WrongLabel("RSA PUBLIC KEY".to_owned())
    );
    let private = "-----BEGIN PRIVATE KEY-----\n\
        MC4CAQAwBQYDK2VwBCIEIF0Lq5z7e5uPunBKq2anptU+c7SF9qiMh77NRBid5q97\n\
        -----END PRIVATE KEY-----\n";
    assert_eq!(
        parse_public_key_pem(private).unwrap_err(),
        KeyError::WrongLabel("PRIVATE KEY".to_owned())
    );
    assert!(matches!(
        parse_public_key_pem("not a key").unwrap_err(),
        KeyError::NotPem(_)
    ));
    // Valid base64 in a PUBLIC KEY block that is not DER.
    let junk = "-----BEGIN PUBLIC KEY-----\naGVsbG8gd29ybGQ=\n-----END PUBLIC KEY-----\n";
    assert!(matches!(
        parse_public_key_pem(junk).unwrap_err(),
        KeyError::InvalidSpki(_)
    ));
    // Two keys in one field.
    let two = format!("{P256}{P384}");
    assert!(parse_public_key_pem(&two).is_err());

    for pem in [RSA1024, SECP256K1, ED448, RSA_PKCS1_PEM] {
        let errors = attestor(pem).validate().unwrap_err();
        assert_eq!(paths(&errors), vec!["publicKey"]);
    }
}

#[test]
fn attestor_field_errors() {
    let p256 = cosign_key("cosign.pub");

    let mut a = attestor(&p256);
    a.name = "bad name".to_owned();
    assert_eq!(paths(&a.validate().unwrap_err()), vec!["name"]);
    a.name = "a".repeat(65);
    assert_eq!(paths(&a.validate().unwrap_err()), vec!["name"]);
    a.name = "ok-name_1.2".to_owned();
    assert_eq!(a.validate(), Ok(()));

    let mut a = attestor(&p256);
    a.description = "d".repeat(129);
    assert_eq!(paths(&a.validate().unwrap_err()), vec!["description"]);

    let mut a = attestor(&p256);
    a.attestor_type = "x509Certificate".to_owned();
    let errors = a.validate().unwrap_err();
    assert_eq!(paths(&errors), vec!["type"]);
    assert!(errors.first().unwrap().to_string().contains("cosignPublicKey"));

    let a = attestor("   ");
    assert_eq!(paths(&a.validate().unwrap_err()), vec!["publicKey"]);
}

#[test]
fn transparency_log_key_is_required_when_enabled() {
    let p256 = cosign_key("cosign.pub");
    let mut a = attestor(&p256);
    a.transparency_log_enabled = true;
    let errors = a.validate().unwrap_err();
    assert_eq!(paths(&errors), vec!["transparencyLogOptions.publicKey"]);

    a.transparency_log_options = Some(TransparencyLogOptions {
        public_key: String::new(),
    });
    assert_eq!(
        paths(&a.validate().unwrap_err()),
        vec!["transparencyLogOptions.publicKey"]
    );

    a.transparency_log_options = Some(TransparencyLogOptions {
        public_key: cosign_key("cosign2.pub"),
    });
    assert_eq!(a.validate(), Ok(()));
    assert_eq!(a.transparency_log_key_kind(), Some(Ok(KeyKind::EcdsaP256Sha256)));

    // A bad log key is refused even while the log is off.
    a.transparency_log_enabled = false;
    a.transparency_log_options = Some(TransparencyLogOptions {
        public_key: RSA1024.to_owned(),
    });
    assert_eq!(
        paths(&a.validate().unwrap_err()),
        vec!["transparencyLogOptions.publicKey"]
    );
    // Off and absent is fine.
    a.transparency_log_options = None;
    assert_eq!(a.validate(), Ok(()));
}

#[test]
fn all_errors_are_reported_together() {
    let mut a = attestor(SECP256K1);
    a.name = String::new();
    a.description = "d".repeat(200);
    a.attestor_type = "kms".to_owned();
    a.transparency_log_enabled = true;
    assert_eq!(
        paths(&a.validate().unwrap_err()),
        vec![
            "name",
            "description",
            "type",
            "publicKey",
            "transparencyLogOptions.publicKey"
        ]
    );
}

#[test]
fn attestor_documents_parse_from_json_and_yaml() {
    let key = cosign_key("cosign.pub");
    let json = serde_json::json!({
        "name": "release-signer",
        "type": "cosignPublicKey",
        "publicKey": key,
        "transparencyLogEnabled": true,
        "transparencyLogOptions": {"publicKey": cosign_key("cosign2.pub")},
    })
    .to_string();
    let from_json = Attestor::from_json(&json).unwrap();
    assert_eq!(from_json.validate(), Ok(()));
    assert!(from_json.description.is_empty());

    let indented: String = key.lines().map(|l| format!("  {l}\n")).collect();
    let yaml = format!("name: release-signer\ntype: cosignPublicKey\npublicKey: |\n{indented}");
    let from_yaml = Attestor::from_yaml(&yaml).unwrap();
    assert!(!from_yaml.transparency_log_enabled);
    assert_eq!(from_yaml.public_key, key);
    assert_eq!(from_yaml.validate(), Ok(()));

    // Round trip.
    let again = Attestor::from_json(&serde_json::to_string(&from_json).unwrap()).unwrap();
    assert_eq!(again, from_json);

    // Unknown fields and missing required ones are refused with a path.
    let err = Attestor::from_json(r#"{"name": "a", "type": "cosignPublicKey", "publicKey": "k", "keyId": true}"#)
        .unwrap_err();
    assert!(err.message.contains("unknown field `keyId`"), "{err}");
    let err = Attestor::from_json(r#"{"name": "a", "type": "cosignKeyless", "keyless": true}"#).unwrap_err();
    assert_eq!(err.path, "keyless");
    let err = Attestor::from_json(r#"{"name": "a", "publicKey": "k"}"#).unwrap_err();
    assert!(err.message.contains("missing field `type`"), "{err}");
    let err = Attestor::from_json(
        r#"{"name": "a", "type": "cosignPublicKey", "publicKey": "k", "transparencyLogOptions": {"url": "x"}}"#,
    )
    .unwrap_err();
    assert_eq!(err.path, "transparencyLogOptions.url");
    let err = Attestor::from_yaml("name: a\ntype: cosignPublicKey\npublicKey: k\ntransparencyLogEnabled: yes please\n")
        .unwrap_err();
    assert_eq!(err.path, "transparencyLogEnabled");
}

const SIGSTORE_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/conformance/sigstore-bundles"
);

/// Sigstore's public-good TrustedRoot, read from ../shared at test time (not copied into the
/// repository).
fn production_root() -> String {
    let path = format!("{SIGSTORE_DIR}/trusted_root.production.json");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn keyless(subject: Option<&str>, subject_reg_exp: Option<&str>) -> Attestor {
    Attestor {
        name: "ci-keyless".to_owned(),
        description: String::new(),
        attestor_type: "cosignKeyless".to_owned(),
        public_key: String::new(),
        transparency_log_enabled: false,
        transparency_log_options: None,
        keyless: Some(KeylessOptions {
            issuer: "https://token.actions.githubusercontent.com".to_owned(),
            subject: subject.map(str::to_owned),
            subject_reg_exp: subject_reg_exp.map(str::to_owned),
            trusted_root: production_root(),
        }),
    }
}

fn keyless_options(a: &mut Attestor) -> &mut KeylessOptions {
    a.keyless.as_mut().unwrap()
}

#[test]
fn keyless_attestors_validate() {
    let a = keyless(
        Some("https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main"),
        None,
    );
    assert_eq!(a.validate(), Ok(()));
    assert!(a.keyless.as_ref().unwrap().to_cosign().is_ok());
    let a = keyless(None, Some(r"https://github\.com/acme/.*"));
    assert_eq!(a.validate(), Ok(()));

    // Exactly one of subject and subjectRegExp.
    let a = keyless(None, None);
    assert_eq!(paths(&a.validate().unwrap_err()), vec!["keyless.subject"]);
    let a = keyless(Some("a@b.c"), Some("a@.*"));
    assert_eq!(paths(&a.validate().unwrap_err()), vec!["keyless.subject"]);
    let a = keyless(Some(" "), None);
    assert_eq!(paths(&a.validate().unwrap_err()), vec!["keyless.subject"]);

    // The expression must compile.
    let a = keyless(None, Some("(unclosed"));
    let errors = a.validate().unwrap_err();
    assert_eq!(paths(&errors), vec!["keyless.subjectRegExp"]);
    assert!(errors[0].message.contains("does not compile"), "{}", errors[0]);

    // Issuer non-empty.
    let mut a = keyless(Some("a@b.c"), None);
    keyless_options(&mut a).issuer = "  ".to_owned();
    assert_eq!(paths(&a.validate().unwrap_err()), vec!["keyless.issuer"]);

    // The keyless block is required, and the public-key fields do not apply.
    let mut a = keyless(Some("a@b.c"), None);
    a.keyless = None;
    assert_eq!(paths(&a.validate().unwrap_err()), vec!["keyless"]);
    let mut a = keyless(Some("a@b.c"), None);
    a.public_key = cosign_key("cosign.pub");
    a.transparency_log_enabled = true;
    assert_eq!(
        paths(&a.validate().unwrap_err()),
        vec!["publicKey", "transparencyLogEnabled"]
    );

    // A public-key attestor must not carry a keyless block.
    let mut a = attestor(&cosign_key("cosign.pub"));
    a.keyless = keyless(Some("a@b.c"), None).keyless;
    assert_eq!(paths(&a.validate().unwrap_err()), vec!["keyless"]);
}

#[test]
fn keyless_trusted_root_must_parse_and_hold_a_ca_and_a_rekor_key() {
    let check = |root: &str| {
        let mut a = keyless(Some("a@b.c"), None);
        keyless_options(&mut a).trusted_root = root.to_owned();
        a.validate().unwrap_err()
    };
    for bad in ["", "not json", "[]", r#"{"mediaType": "application/json"}"#] {
        let errors = check(bad);
        assert_eq!(paths(&errors), vec!["keyless.trustedRoot"], "{bad:?}");
    }

    let mut root: serde_json::Value = serde_json::from_str(&production_root()).unwrap();
    root["certificateAuthorities"] = serde_json::json!([]);
    let errors = check(&root.to_string());
    assert_eq!(paths(&errors), vec!["keyless.trustedRoot"]);
    assert!(errors[0].message.contains("Fulcio"), "{}", errors[0]);

    let mut root: serde_json::Value = serde_json::from_str(&production_root()).unwrap();
    root["tlogs"] = serde_json::json!([]);
    let errors = check(&root.to_string());
    assert_eq!(paths(&errors), vec!["keyless.trustedRoot"]);
    assert!(errors[0].message.contains("Rekor"), "{}", errors[0]);
}

#[test]
fn keyless_documents_parse_from_json_and_yaml() {
    let root = production_root();
    let json = serde_json::json!({
        "name": "ci-keyless",
        "type": "cosignKeyless",
        "keyless": {
            "issuer": "https://accounts.google.com",
            "subjectRegExp": ".*@acme\\.example",
            "trustedRoot": root,
        },
    })
    .to_string();
    let from_json = Attestor::from_json(&json).unwrap();
    assert_eq!(from_json.validate(), Ok(()));
    // Round trip: no empty publicKey written back.
    let text = serde_json::to_string(&from_json).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(value.get("publicKey").is_none(), "{text}");
    assert_eq!(Attestor::from_json(&text).unwrap(), from_json);

    let indented: String = root.lines().map(|l| format!("    {l}\n")).collect();
    let yaml = format!(
        "name: ci-keyless\ntype: cosignKeyless\nkeyless:\n  issuer: https://accounts.google.com\n  subject: dev@acme.example\n  trustedRoot: |\n{indented}"
    );
    let from_yaml = Attestor::from_yaml(&yaml).unwrap();
    assert_eq!(from_yaml.validate(), Ok(()));

    let err = Attestor::from_json(r#"{"name": "a", "type": "cosignKeyless", "keyless": {"issuer": "i", "san": "x"}}"#)
        .unwrap_err();
    assert_eq!(err.path, "keyless.san");
}

#[test]
fn the_keyless_example_validates() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/attestor-keyless.yaml");
    let a = Attestor::from_yaml(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(a.attestor_type, "cosignKeyless");
    assert_eq!(a.validate(), Ok(()));
}
