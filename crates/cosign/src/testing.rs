//! Test support (feature `testing`): the signing side of what this crate verifies, made by
//! the test itself, for tests that sign images in a local registry.
//!
//! - [`TestKey`]: a P-256 key (ring) with its PEM public key; cosign's keyed signatures.
//! - [`TestLog`]: a Rekor-like transparency log key: `hashedrekord` entries, the legacy
//!   `dev.sigstore.cosign/bundle` annotation (signed entry timestamp) and a bundle's tlog
//!   entry (SET, inclusion proof in a one-leaf tree, signed checkpoint).
//! - [`TestFulcio`]: a CA issuing leaf certificates with the sigstore extensions (code
//!   signing, SAN, OIDC issuer `1.3.6.1.4.1.57264.1.8`) and an embedded SCT from its own CT
//!   log key, as Fulcio issues them.
//! - [`trusted_root_json`] over both, and [`bundle_v03`]: a keyless sigstore bundle v0.3
//!   (message signature) over an artifact.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _};
use sha2::{Digest as _, Sha256};

use crate::der::encode;
use crate::rekor::{hex, leaf_hash, set_payload};

/// Why test material could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TestingError {
    /// Key generation or signing failed.
    #[error("test key: {0}")]
    Key(String),
    /// A certificate could not be made.
    #[error("test certificate: {0}")]
    Certificate(String),
}

/// A P-256 signing key (ECDSA with SHA-256, DER signatures, as cosign signs).
pub struct TestKey {
    pair: EcdsaKeyPair,
    pkcs8: Vec<u8>,
    spki: Vec<u8>,
}

impl std::fmt::Debug for TestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestKey").field("key_id", &hex(&self.key_id())).finish()
    }
}

impl TestKey {
    /// A new random key.
    pub fn generate() -> Result<TestKey, TestingError> {
        let rng = SystemRandom::new();
        let bad = |e: ring::error::Unspecified| TestingError::Key(e.to_string());
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).map_err(bad)?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|e| TestingError::Key(e.to_string()))?;
        // SubjectPublicKeyInfo: id-ecPublicKey, prime256v1, the uncompressed point.
        let algorithm = [
            encode(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]),
            encode(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]),
        ]
        .concat();
        let bits = [&[0u8][..], pair.public_key().as_ref()].concat();
        let spki = encode(0x30, &[encode(0x30, &algorithm), encode(0x03, &bits)].concat());
        Ok(TestKey {
            pair,
            pkcs8: pkcs8.as_ref().to_vec(),
            spki,
        })
    }

    /// The SubjectPublicKeyInfo, DER.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    /// The public key as PEM (`PUBLIC KEY`), as attestor documents hold it.
    pub fn public_pem(&self) -> String {
        pem("PUBLIC KEY", &self.spki)
    }

    /// SHA-256 of the SubjectPublicKeyInfo: a log's id.
    pub fn key_id(&self) -> [u8; 32] {
        Sha256::digest(&self.spki).into()
    }

    /// An ECDSA signature (ASN.1 DER) over `message`.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, TestingError> {
        self.pair
            .sign(&SystemRandom::new(), message)
            .map(|s| s.as_ref().to_vec())
            .map_err(|e| TestingError::Key(e.to_string()))
    }

    /// [`TestKey::sign`], base64 (as the signature annotation holds it).
    pub fn sign_base64(&self, message: &[u8]) -> Result<String, TestingError> {
        self.sign(message).map(|s| STANDARD.encode(s))
    }

    fn rcgen(&self) -> Result<rcgen::KeyPair, TestingError> {
        rcgen::KeyPair::try_from(self.pkcs8.as_slice()).map_err(|e| TestingError::Key(e.to_string()))
    }
}

/// PEM of `der` under `label`, 64 columns.
pub fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A Rekor-like transparency log: a key that signs entry timestamps and checkpoints.
#[derive(Debug)]
pub struct TestLog {
    /// The log's key.
    pub key: TestKey,
}

/// A log entry: its canonicalized body (base64), index and integrated time.
#[derive(Debug, Clone)]
pub struct TestEntry {
    /// The body, base64 (as the log returns it).
    pub body: String,
    /// The log index.
    pub log_index: i64,
    /// Unix seconds.
    pub integrated_time: i64,
}

impl TestLog {
    /// A log with a new key.
    pub fn new() -> Result<TestLog, TestingError> {
        Ok(TestLog {
            key: TestKey::generate()?,
        })
    }

    /// A `hashedrekord` 0.0.1 entry for `signature` over content whose SHA-256 is `sha256`, by
    /// the key or certificate `signer_pem`.
    pub fn hashedrekord(
        &self,
        sha256: &[u8],
        signature: &[u8],
        signer_pem: &str,
        log_index: i64,
        integrated_time: i64,
    ) -> TestEntry {
        let body = serde_json::json!({
            "apiVersion": "0.0.1",
            "kind": "hashedrekord",
            "spec": {
                "data": {"hash": {"algorithm": "sha256", "value": hex(sha256)}},
                "signature": {
                    "content": STANDARD.encode(signature),
                    "publicKey": {"content": STANDARD.encode(signer_pem)}
                }
            }
        });
        TestEntry {
            body: STANDARD.encode(body.to_string()),
            log_index,
            integrated_time,
        }
    }

    /// The signed entry timestamp of `entry`, base64.
    pub fn signed_entry_timestamp(&self, entry: &TestEntry) -> Result<String, TestingError> {
        let payload = set_payload(
            &entry.body,
            entry.integrated_time,
            &hex(&self.key.key_id()),
            entry.log_index,
        );
        self.key.sign_base64(&payload)
    }

    /// The legacy `dev.sigstore.cosign/bundle` layer annotation for `entry`.
    pub fn annotation_bundle(&self, entry: &TestEntry) -> Result<String, TestingError> {
        Ok(serde_json::json!({
            "SignedEntryTimestamp": self.signed_entry_timestamp(entry)?,
            "Payload": {
                "body": entry.body,
                "integratedTime": entry.integrated_time,
                "logIndex": entry.log_index,
                "logID": hex(&self.key.key_id()),
            }
        })
        .to_string())
    }

    /// A sigstore bundle's `tlogEntries` item for `entry`: SET, and an inclusion proof in a
    /// one-leaf tree with its signed checkpoint.
    pub fn bundle_entry(&self, entry: &TestEntry) -> Result<serde_json::Value, TestingError> {
        let body = STANDARD
            .decode(&entry.body)
            .map_err(|e| TestingError::Key(format!("entry body: {e}")))?;
        let root = leaf_hash(&body);
        let origin = "portcullis test log";
        let note = format!("{origin}\n1\n{}\n", STANDARD.encode(root));
        let signature = self.key.sign(note.as_bytes())?;
        let hint = self.key.key_id();
        let signed = [hint.get(..4).unwrap_or_default(), signature.as_slice()].concat();
        let checkpoint = format!("{note}\n\u{2014} {origin} {}\n", STANDARD.encode(signed));
        Ok(serde_json::json!({
            "logIndex": entry.log_index.to_string(),
            "logId": {"keyId": STANDARD.encode(self.key.key_id())},
            "kindVersion": {"kind": "hashedrekord", "version": "0.0.1"},
            "integratedTime": entry.integrated_time.to_string(),
            "inclusionPromise": {"signedEntryTimestamp": self.signed_entry_timestamp(entry)?},
            "inclusionProof": {
                "logIndex": "0",
                "rootHash": STANDARD.encode(root),
                "treeSize": "1",
                "hashes": [],
                "checkpoint": {"envelope": checkpoint}
            },
            "canonicalizedBody": entry.body,
        }))
    }
}

/// The SAN of a keyless certificate.
#[derive(Debug, Clone)]
pub enum San {
    /// An email address (OIDC email identities).
    Email(String),
    /// A URI (workload identities, e.g. a CI workflow).
    Uri(String),
}

/// A Fulcio-like CA with its own CT log key.
pub struct TestFulcio {
    root: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    root_key: TestKey,
    /// The CT log key that signs the embedded SCTs.
    pub ct_log: TestKey,
}

impl std::fmt::Debug for TestFulcio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestFulcio").field("root_key", &self.root_key).finish()
    }
}

/// A keyless signing certificate and its key.
#[derive(Debug)]
pub struct TestLeaf {
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// The certificate's key.
    pub key: TestKey,
}

impl TestLeaf {
    /// The certificate as PEM (the certificate annotation, and a log entry's "public key").
    pub fn pem(&self) -> String {
        pem("CERTIFICATE", &self.der)
    }
}

const OID_OIDC_ISSUER_V2: &[u64] = &[1, 3, 6, 1, 4, 1, 57264, 1, 8];
const OID_SCT_LIST: &[u64] = &[1, 3, 6, 1, 4, 1, 11129, 2, 4, 2];

impl TestFulcio {
    /// A new self-signed root CA (P-256) and CT log key.
    pub fn new() -> Result<TestFulcio, TestingError> {
        let root_key = TestKey::generate()?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
            .map_err(|e| TestingError::Certificate(e.to_string()))?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "portcullis test fulcio");
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let (start, end) = validity();
        params.not_before = start;
        params.not_after = end;
        let root = rcgen::CertifiedIssuer::self_signed(params, root_key.rcgen()?)
            .map_err(|e| TestingError::Certificate(e.to_string()))?;
        Ok(TestFulcio {
            root,
            root_key,
            ct_log: TestKey::generate()?,
        })
    }

    /// The root certificate, DER.
    pub fn root_der(&self) -> Vec<u8> {
        self.root.der().to_vec()
    }

    /// Issues a code-signing leaf for `san` and OIDC `issuer`, with an embedded SCT signed
    /// by the CT log key over the precertificate (the leaf without its SCT list).
    pub fn issue(&self, san: &San, issuer: &str) -> Result<TestLeaf, TestingError> {
        let bad = |e: rcgen::Error| TestingError::Certificate(e.to_string());
        let key = TestKey::generate()?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(bad)?;
        let name = match san {
            San::Email(s) | San::Uri(s) => s,
        };
        let ia5 = rcgen::string::Ia5String::try_from(name.as_str()).map_err(bad)?;
        params.subject_alt_names = vec![match san {
            San::Email(_) => rcgen::SanType::Rfc822Name(ia5),
            San::Uri(_) => rcgen::SanType::URI(ia5),
        }];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::CodeSigning];
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        let (start, end) = validity();
        params.not_before = start;
        params.not_after = end;
        params.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(
            OID_OIDC_ISSUER_V2,
            encode(0x0c, issuer.as_bytes()),
        )];
        let public = key.rcgen()?;
        let precert = params.signed_by(&public, &self.root).map_err(bad)?;
        let tbs = tbs_of(precert.der())?;
        let sct = self.sct(&tbs)?;
        params.custom_extensions.push(rcgen::CustomExtension::from_oid_content(
            OID_SCT_LIST,
            encode(0x04, &sct),
        ));
        let leaf = params.signed_by(&public, &self.root).map_err(bad)?;
        Ok(TestLeaf {
            der: leaf.der().to_vec(),
            key,
        })
    }

    /// A TLS-encoded SignedCertificateTimestampList with one SCT over the precertificate
    /// `tbs` (RFC 6962 section 3.2).
    fn sct(&self, tbs: &[u8]) -> Result<Vec<u8>, TestingError> {
        let timestamp = u64::try_from(unix_now().saturating_mul(1000)).unwrap_or_default();
        let issuer_key_hash: [u8; 32] = Sha256::digest(self.root_key.spki_der()).into();
        let tbs_len = u32::try_from(tbs.len()).map_err(|_| TestingError::Certificate("tbs too large".into()))?;
        let mut signed = vec![0u8, 0u8];
        signed.extend_from_slice(&timestamp.to_be_bytes());
        signed.extend_from_slice(&1u16.to_be_bytes());
        signed.extend_from_slice(&issuer_key_hash);
        signed.extend_from_slice(tbs_len.to_be_bytes().get(1..).unwrap_or_default());
        signed.extend_from_slice(tbs);
        signed.extend_from_slice(&0u16.to_be_bytes());
        let signature = self.ct_log.sign(&signed)?;
        let mut sct = vec![0u8];
        sct.extend_from_slice(&self.ct_log.key_id());
        sct.extend_from_slice(&timestamp.to_be_bytes());
        sct.extend_from_slice(&0u16.to_be_bytes());
        sct.extend_from_slice(&[4, 3]); // sha256, ecdsa
        sct.extend_from_slice(&u16_len(&signature)?);
        sct.extend_from_slice(&signature);
        let mut item = u16_len(&sct)?.to_vec();
        item.extend_from_slice(&sct);
        let mut list = u16_len(&item)?.to_vec();
        list.extend_from_slice(&item);
        Ok(list)
    }
}

fn u16_len(bytes: &[u8]) -> Result<[u8; 2], TestingError> {
    u16::try_from(bytes.len())
        .map(u16::to_be_bytes)
        .map_err(|_| TestingError::Certificate("too long for a TLS vector".into()))
}

fn tbs_of(der: &[u8]) -> Result<Vec<u8>, TestingError> {
    crate::cert::parse(der)
        .map(|c| c.tbs_certificate.as_ref().to_vec())
        .map_err(|e| TestingError::Certificate(e.to_string()))
}

/// Validity of test certificates: from an hour ago for a day.
fn validity() -> (time::OffsetDateTime, time::OffsetDateTime) {
    let now = time::OffsetDateTime::now_utc();
    (now - time::Duration::hours(1), now + time::Duration::days(1))
}

/// Unix seconds now.
pub fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A sigstore TrustedRoot JSON holding `fulcio`'s CA and CT log and `log`'s Rekor key, all
/// valid from a day ago.
pub fn trusted_root_json(fulcio: &TestFulcio, log: &TestLog) -> String {
    let start = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    let start = start
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let log_json = |key: &TestKey| {
        serde_json::json!({
            "baseUrl": "https://log.invalid",
            "hashAlgorithm": "SHA2_256",
            "publicKey": {
                "rawBytes": STANDARD.encode(key.spki_der()),
                "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                "validFor": {"start": start}
            },
            "logId": {"keyId": STANDARD.encode(key.key_id())}
        })
    };
    serde_json::json!({
        "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
        "tlogs": [log_json(&log.key)],
        "certificateAuthorities": [{
            "subject": {"organization": "portcullis", "commonName": "portcullis test fulcio"},
            "uri": "https://fulcio.invalid",
            "certChain": {"certificates": [{"rawBytes": STANDARD.encode(fulcio.root_der())}]},
            "validFor": {"start": start}
        }],
        "ctlogs": [log_json(&fulcio.ct_log)]
    })
    .to_string()
}

/// A keyless sigstore bundle v0.3 over `artifact`: `leaf`'s message signature, logged in
/// `log` now (SET, inclusion proof, checkpoint).
pub fn bundle_v03(leaf: &TestLeaf, log: &TestLog, artifact: &[u8]) -> Result<String, TestingError> {
    let signature = leaf.key.sign(artifact)?;
    let digest: [u8; 32] = Sha256::digest(artifact).into();
    let entry = log.hashedrekord(&digest, &signature, &leaf.pem(), 0, unix_now());
    Ok(serde_json::json!({
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {
            "certificate": {"rawBytes": STANDARD.encode(&leaf.der)},
            "tlogEntries": [log.bundle_entry(&entry)?]
        },
        "messageSignature": {
            "messageDigest": {"algorithm": "SHA2_256", "digest": STANDARD.encode(digest)},
            "signature": STANDARD.encode(&signature)
        }
    })
    .to_string())
}
