//! Sigstore bundles (`application/vnd.dev.sigstore.bundle...+json`, v0.1 to v0.3) with a
//! message signature and a Rekor v1 log entry, keyed or keyless.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer};
use sha2::{Digest, Sha256};

use crate::cert::{self, Identity};
use crate::error::VerifyError;
use crate::key::PublicKey;
use crate::rekor::{self, Expected, hash32};
use crate::trust::{TrustedRoot, b64};

/// Seconds an integrated time may lie ahead of `now` (clock skew between log and verifier).
const MAX_FUTURE_SECONDS: i64 = 60;

/// Who must have signed a bundle.
#[derive(Debug, Clone, Copy)]
pub enum Signer<'a> {
    /// A public key; with `tlog`, the log entry must verify against a log of that root.
    Key {
        /// The attestor's key.
        key: &'a PublicKey,
        /// The logs trusted for the entry, when the transparency log is required.
        tlog: Option<&'a TrustedRoot>,
    },
    /// A Fulcio certificate of this identity, chaining to this root (log required).
    Keyless {
        /// The expected SAN and OIDC issuer.
        identity: &'a Identity,
        /// The CAs, Rekor logs and CT logs trusted.
        root: &'a TrustedRoot,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Bundle {
    media_type: String,
    verification_material: Material,
    message_signature: Option<MessageSignature>,
    dsse_envelope: Option<Envelope>,
}

/// A DSSE envelope.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Envelope {
    pub payload: String,
    pub payload_type: String,
    pub signatures: Vec<EnvelopeSignature>,
}

/// One signature of a DSSE envelope.
#[derive(Deserialize)]
pub(crate) struct EnvelopeSignature {
    pub sig: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Material {
    x509_certificate_chain: Option<Chain>,
    certificate: Option<RawBytes>,
    public_key: Option<serde_json::Value>,
    #[serde(default)]
    tlog_entries: Vec<TlogEntry>,
    timestamp_verification_data: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Chain {
    #[serde(default)]
    certificates: Vec<RawBytes>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawBytes {
    raw_bytes: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TlogEntry {
    #[serde(deserialize_with = "int64")]
    log_index: i64,
    log_id: LogId,
    kind_version: KindVersion,
    // Absent in Rekor v2 entries (their time comes from a timestamp authority).
    #[serde(default, deserialize_with = "int64")]
    integrated_time: i64,
    inclusion_promise: Option<Promise>,
    inclusion_proof: Option<Proof>,
    canonicalized_body: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogId {
    key_id: String,
}

#[derive(Deserialize)]
struct KindVersion {
    kind: String,
    version: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Promise {
    signed_entry_timestamp: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Proof {
    #[serde(deserialize_with = "int64")]
    log_index: i64,
    root_hash: String,
    #[serde(deserialize_with = "int64")]
    tree_size: i64,
    #[serde(default)]
    hashes: Vec<String>,
    checkpoint: Option<Checkpoint>,
}

#[derive(Deserialize)]
struct Checkpoint {
    envelope: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessageSignature {
    message_digest: Option<MessageDigest>,
    signature: String,
}

#[derive(Deserialize)]
struct MessageDigest {
    algorithm: String,
    digest: String,
}

/// Protobuf JSON writes int64 as a string; a number is accepted too.
fn int64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Number(i64),
        Text(String),
    }
    match Either::deserialize(d)? {
        Either::Number(n) => Ok(n),
        Either::Text(t) => t.parse().map_err(serde::de::Error::custom),
    }
}

/// The bundle format version (minor of 0.x) its media type names.
fn version(media_type: &str) -> Result<u8, VerifyError> {
    match media_type {
        "application/vnd.dev.sigstore.bundle+json;version=0.1" => Ok(1),
        "application/vnd.dev.sigstore.bundle+json;version=0.2" => Ok(2),
        "application/vnd.dev.sigstore.bundle+json;version=0.3" | "application/vnd.dev.sigstore.bundle.v0.3+json" => {
            Ok(3)
        }
        other => Err(VerifyError::Unsupported(format!("bundle media type {other:?}"))),
    }
}

/// Verifies a sigstore bundle over `artifact` for `signer`; `now` (Unix seconds) bounds the
/// log's integrated time. Returns what held.
pub fn verify_bundle(bundle_json: &[u8], artifact: &[u8], signer: Signer<'_>, now: i64) -> Result<String, VerifyError> {
    let bundle: Bundle = serde_json::from_slice(bundle_json).map_err(|e| VerifyError::malformed("bundle", e))?;
    let version = version(&bundle.media_type)?;
    let sha256: [u8; 32] = Sha256::digest(artifact).into();
    let content = match (bundle.message_signature, bundle.dsse_envelope) {
        (Some(message), None) => message_content(&message, sha256)?,
        (None, Some(envelope)) => dsse_content(envelope, sha256)?,
        _ => {
            return Err(VerifyError::malformed(
                "bundle",
                "needs exactly one of a message signature and a DSSE envelope",
            ));
        }
    };
    let material = &bundle.verification_material;
    let leaf_der = leaf_certificate(material, version)?;
    let (signer_der, tlog_root) = match (signer, &leaf_der) {
        (Signer::Key { key, tlog }, None) => (key.spki_der().to_vec(), tlog),
        (Signer::Key { .. }, Some(_)) => {
            return Err(VerifyError::Identity(
                "the bundle is signed with a certificate, the attestor is a public key".into(),
            ));
        }
        (Signer::Keyless { root, .. }, Some(der)) => (der.clone(), Some(root)),
        (Signer::Keyless { .. }, None) => {
            return Err(VerifyError::Identity(
                "the bundle is signed with a key, not a certificate of the attestor's identity".into(),
            ));
        }
    };
    let logged = match tlog_root {
        Some(root) => Some(verify_entry(material, version, root, &content, &signer_der, now)?),
        None => None,
    };
    let key = match (signer, &leaf_der) {
        (Signer::Keyless { identity, root }, Some(der)) => {
            // The certificate is judged at the log's signed time: keyless needs the SET.
            let time = match logged.as_ref().and_then(|l| l.signed_time) {
                Some(t) => t,
                None if material.timestamp_verification_data.is_some() => {
                    return Err(VerifyError::Unsupported(
                        "the signing time is proven only by RFC 3161 timestamps, not verified yet".into(),
                    ));
                }
                None => {
                    return Err(VerifyError::Tlog(
                        "no signed entry timestamp to date the certificate".into(),
                    ));
                }
            };
            cert::verify_leaf(der, root, identity, time, &timestamp_times(material)?)?
        }
        (Signer::Key { key, .. }, _) => key.clone(),
        (Signer::Keyless { .. }, None) => return Err(VerifyError::Identity("no certificate".into())),
    };
    match &content {
        Content::Message { signature, .. } => key
            .verify(artifact, signature)
            .map_err(|_| VerifyError::BadSignature("the bundle's signature over the artifact"))?,
        Content::Dsse { pae, signature, .. } => key
            .verify(pae, signature)
            .map_err(|_| VerifyError::BadSignature("the DSSE envelope's signature"))?,
    }
    Ok(match logged {
        Some(l) => format!(
            "bundle v0.{version} signature holds, in the transparency log at index {} (integrated {})",
            l.log_index, l.integrated_time
        ),
        None => format!("bundle v0.{version} signature holds"),
    })
}

/// The leaf certificate (DER) of a keyless bundle; `None` for a keyed one.
fn leaf_certificate(material: &Material, version: u8) -> Result<Option<Vec<u8>>, VerifyError> {
    if let Some(cert) = &material.certificate {
        if version < 3 {
            return Err(VerifyError::malformed(
                "bundle",
                "a single certificate needs bundle v0.3",
            ));
        }
        return b64(&cert.raw_bytes, "bundle certificate").map(Some);
    }
    if let Some(chain) = &material.x509_certificate_chain {
        let certs = chain
            .certificates
            .iter()
            .map(|c| b64(&c.raw_bytes, "bundle certificate"))
            .collect::<Result<Vec<_>, _>>()?;
        // A root in the bundle would be trusted from the bundle; roots come from the trusted root only.
        for der in &certs {
            let c = cert::parse(der)?;
            if c.subject() == c.issuer() {
                return Err(VerifyError::Certificate(
                    "the bundle's chain holds a self-signed (root) certificate".into(),
                ));
            }
        }
        return certs
            .into_iter()
            .next()
            .map(Some)
            .ok_or_else(|| VerifyError::malformed("bundle", "empty certificate chain"));
    }
    if material.public_key.is_some() {
        return Ok(None);
    }
    Err(VerifyError::malformed("bundle", "no certificate and no public key"))
}

struct Logged {
    log_index: i64,
    integrated_time: i64,
    /// The integrated time, when a verified SET signs it.
    signed_time: Option<i64>,
}

fn verify_entry(
    material: &Material,
    version: u8,
    root: &TrustedRoot,
    content: &Content,
    signer_der: &[u8],
    now: i64,
) -> Result<Logged, VerifyError> {
    let [entry] = material.tlog_entries.as_slice() else {
        return Err(VerifyError::Tlog(format!(
            "expected one log entry, the bundle has {}",
            material.tlog_entries.len()
        )));
    };
    let v1_kind = matches!(
        (entry.kind_version.kind.as_str(), entry.kind_version.version.as_str()),
        ("hashedrekord" | "rekord" | "dsse", "0.0.1") | ("intoto", "0.0.2")
    );
    if !v1_kind {
        return Err(VerifyError::Unsupported(format!(
            "log entry {} {} (Rekor v2 entries and RFC 3161 timestamps are not verified yet)",
            entry.kind_version.kind, entry.kind_version.version
        )));
    }
    if entry.log_index < 0 || entry.integrated_time <= 0 {
        return Err(VerifyError::Tlog("negative log index or no integrated time".into()));
    }
    if entry.integrated_time > now.saturating_add(MAX_FUTURE_SECONDS) {
        return Err(VerifyError::Tlog(format!(
            "integrated time {} is in the future",
            entry.integrated_time
        )));
    }
    let log_id = b64(&entry.log_id.key_id, "log id")?;
    let log = root
        .tlog(&log_id)
        .ok_or_else(|| VerifyError::Tlog("the entry is in a log the trusted root does not hold".into()))?;
    if !log.validity.contains(entry.integrated_time) {
        return Err(VerifyError::Tlog(
            "the log's key was not valid at the entry's integrated time".into(),
        ));
    }
    let body = b64(&entry.canonicalized_body, "log entry body")?;
    let (kind, api_version) = match content {
        Content::Message { signature, sha256 } => rekor::check_body(
            &body,
            &Expected {
                signature,
                sha256: *sha256,
                signer_der,
            },
        )?,
        Content::Dsse {
            envelope,
            payload,
            signature,
            ..
        } => rekor::check_dsse_body(&body, envelope, payload, signature, signer_der)?,
    };
    if kind != entry.kind_version.kind || api_version != entry.kind_version.version {
        return Err(VerifyError::Tlog("the entry's kind does not match its body".into()));
    }
    let signed_time = match &entry.inclusion_promise {
        Some(promise) => {
            let set = b64(&promise.signed_entry_timestamp, "signed entry timestamp")?;
            rekor::verify_set(
                &log.key,
                &set,
                &entry.canonicalized_body,
                entry.integrated_time,
                &log_id,
                entry.log_index,
            )?;
            Some(entry.integrated_time)
        }
        None if version == 1 => {
            return Err(VerifyError::Tlog(
                "a v0.1 bundle needs an inclusion promise (SET)".into(),
            ));
        }
        None => None,
    };
    match &entry.inclusion_proof {
        Some(proof) => {
            let (Ok(index), Ok(size)) = (u64::try_from(proof.log_index), u64::try_from(proof.tree_size)) else {
                return Err(VerifyError::Tlog(
                    "negative index or tree size in the inclusion proof".into(),
                ));
            };
            let hashes = proof
                .hashes
                .iter()
                .map(|h| hash32(h, "inclusion proof hash"))
                .collect::<Result<Vec<_>, _>>()?;
            let root_hash = hash32(&proof.root_hash, "inclusion proof root hash")?;
            let computed = rekor::root_from_proof(index, size, rekor::leaf_hash(&body), &hashes);
            if computed != Some(root_hash) {
                return Err(VerifyError::Tlog(
                    "the inclusion proof does not lead to its root hash".into(),
                ));
            }
            match &proof.checkpoint {
                Some(cp) => rekor::verify_checkpoint(&cp.envelope, &log.key, &log_id, size, &root_hash)?,
                None if version >= 2 => {
                    return Err(VerifyError::Tlog("the inclusion proof has no signed checkpoint".into()));
                }
                None => {}
            }
        }
        None if version >= 2 => {
            return Err(VerifyError::Tlog(format!(
                "a v0.{version} bundle needs an inclusion proof"
            )));
        }
        None => {}
    }
    Ok(Logged {
        log_index: entry.log_index,
        integrated_time: entry.integrated_time,
        signed_time,
    })
}

/// The times of the bundle's RFC 3161 timestamps, read but not verified (see
/// [`cert::verify_leaf`]); one that cannot be read refuses the bundle.
fn timestamp_times(material: &Material) -> Result<Vec<i64>, VerifyError> {
    let Some(data) = &material.timestamp_verification_data else {
        return Ok(Vec::new());
    };
    let list = data
        .get("rfc3161Timestamps")
        .and_then(|l| l.as_array())
        .cloned()
        .unwrap_or_default();
    list.iter()
        .map(|t| {
            t.get("signedTimestamp")
                .and_then(|s| s.as_str())
                .and_then(|s| STANDARD.decode(s).ok())
                .and_then(|der| crate::der::rfc3161_gen_time(&der))
                .ok_or_else(|| VerifyError::Unsupported("an RFC 3161 timestamp that cannot be read".into()))
        })
        .collect()
}

/// What the bundle signs.
enum Content {
    /// A signature over the artifact's bytes.
    Message {
        /// The signature.
        signature: Vec<u8>,
        /// The artifact's SHA-256, which the log entry must name.
        sha256: [u8; 32],
    },
    /// A DSSE envelope whose in-toto statement names the artifact.
    Dsse {
        /// The envelope as the bundle holds it.
        envelope: Envelope,
        /// The decoded payload.
        payload: Vec<u8>,
        /// The pre-authentication encoding the signature covers.
        pae: Vec<u8>,
        /// The one signature.
        signature: Vec<u8>,
    },
}

fn message_content(message: &MessageSignature, sha256: [u8; 32]) -> Result<Content, VerifyError> {
    let signature = b64(&message.signature, "bundle signature")?;
    if let Some(digest) = &message.message_digest {
        let found = STANDARD.decode(&digest.digest).unwrap_or_default();
        if digest.algorithm != "SHA2_256" || found != sha256 {
            return Err(VerifyError::DigestMismatch {
                expected: format!("sha256:{}", rekor::hex(&sha256)),
                found: format!("{}:{}", digest.algorithm, rekor::hex(&found)),
            });
        }
    }
    Ok(Content::Message { signature, sha256 })
}

#[derive(Deserialize)]
struct Statement {
    #[serde(rename = "_type")]
    kind: String,
    subject: Vec<StatementSubject>,
}

#[derive(Deserialize)]
struct StatementSubject {
    digest: std::collections::BTreeMap<String, String>,
}

/// DSSE pre-authentication encoding (the bytes a DSSE signature covers).
fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!("DSSEv1 {} {payload_type} {} ", payload_type.len(), payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out
}

fn dsse_content(envelope: Envelope, sha256: [u8; 32]) -> Result<Content, VerifyError> {
    if envelope.payload_type != "application/vnd.in-toto+json" {
        return Err(VerifyError::Unsupported(format!(
            "DSSE payload type {:?} (in-toto statements are supported)",
            envelope.payload_type
        )));
    }
    let [one] = envelope.signatures.as_slice() else {
        return Err(VerifyError::malformed("DSSE envelope", "needs exactly one signature"));
    };
    let signature = b64(&one.sig, "DSSE signature")?;
    let payload = b64(&envelope.payload, "DSSE payload")?;
    let statement: Statement =
        serde_json::from_slice(&payload).map_err(|e| VerifyError::malformed("in-toto statement", e))?;
    if !statement.kind.starts_with("https://in-toto.io/Statement/") {
        return Err(VerifyError::WrongType(statement.kind));
    }
    let want = rekor::hex(&sha256);
    let names = statement
        .subject
        .iter()
        .any(|s| s.digest.get("sha256").is_some_and(|d| d.eq_ignore_ascii_case(&want)));
    if !names {
        return Err(VerifyError::DigestMismatch {
            expected: format!("sha256:{want}"),
            found: "no in-toto subject with that digest".into(),
        });
    }
    let pae = pae(&envelope.payload_type, &payload);
    Ok(Content::Dsse {
        envelope,
        payload,
        pae,
        signature,
    })
}
