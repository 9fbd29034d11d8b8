//! Rekor (v1) evidence, checked offline: the signed entry timestamp, the entry body, the
//! inclusion proof and its signed checkpoint.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::VerifyError;
use crate::key::PublicKey;
use crate::trust::b64;

/// What a log entry must name: the signature, the signed content's SHA-256, and the key
/// or certificate (DER) that signs.
pub(crate) struct Expected<'a> {
    pub signature: &'a [u8],
    pub sha256: [u8; 32],
    pub signer_der: &'a [u8],
}

/// The canonical JSON of a SET's payload (keys sorted, no whitespace), as Rekor signs it.
pub(crate) fn set_payload(body_b64: &str, integrated_time: i64, log_id_hex: &str, log_index: i64) -> Vec<u8> {
    // serde_json escapes strings as Go's encoding/json does for these (base64, hex) values;
    // anything else only makes the signature fail.
    let s = |v: &str| serde_json::Value::String(v.to_owned()).to_string();
    format!(
        "{{\"body\":{},\"integratedTime\":{integrated_time},\"logID\":{},\"logIndex\":{log_index}}}",
        s(body_b64),
        s(log_id_hex)
    )
    .into_bytes()
}

/// Verifies a signed entry timestamp with the log's key.
pub(crate) fn verify_set(
    key: &PublicKey,
    set: &[u8],
    body_b64: &str,
    integrated_time: i64,
    log_id: &[u8],
    log_index: i64,
) -> Result<(), VerifyError> {
    let payload = set_payload(body_b64, integrated_time, &hex(log_id), log_index);
    key.verify(&payload, set)
        .map_err(|_| VerifyError::Tlog("the signed entry timestamp does not verify with the log's key".into()))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Body {
    kind: String,
    api_version: String,
    spec: Spec,
}

#[derive(Deserialize)]
struct Spec {
    data: Data,
    signature: Sig,
}

#[derive(Deserialize)]
struct Data {
    hash: Option<HashValue>,
}

#[derive(Deserialize)]
struct HashValue {
    algorithm: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Sig {
    content: String,
    public_key: Content,
}

#[derive(Deserialize)]
struct Content {
    content: String,
}

/// Checks that a `hashedrekord` or `rekord` 0.0.1 body names exactly this signature, content
/// and signer; returns the body's (kind, apiVersion).
pub(crate) fn check_body(body: &[u8], expected: &Expected<'_>) -> Result<(String, String), VerifyError> {
    let body: Body = serde_json::from_slice(body).map_err(|e| VerifyError::Tlog(format!("entry body: {e}")))?;
    if !matches!(body.kind.as_str(), "hashedrekord" | "rekord") || body.api_version != "0.0.1" {
        return Err(VerifyError::Unsupported(format!(
            "log entry kind {} {} (hashedrekord and rekord 0.0.1 are supported)",
            body.kind, body.api_version
        )));
    }
    let hash = body
        .spec
        .data
        .hash
        .ok_or_else(|| VerifyError::Tlog("entry body names no hash".into()))?;
    if hash.algorithm != "sha256" || !hash.value.eq_ignore_ascii_case(&hex(&expected.sha256)) {
        return Err(VerifyError::Tlog(format!(
            "the entry is for content {}:{}, not sha256:{}",
            hash.algorithm,
            hash.value,
            hex(&expected.sha256)
        )));
    }
    let signature = STANDARD
        .decode(&body.spec.signature.content)
        .map_err(|_| VerifyError::Tlog("entry signature is not base64".into()))?;
    if signature != expected.signature {
        return Err(VerifyError::Tlog("the entry is for another signature".into()));
    }
    let pem = STANDARD
        .decode(&body.spec.signature.public_key.content)
        .map_err(|_| VerifyError::Tlog("entry public key is not base64".into()))?;
    if pem_der(&pem).as_deref() != Some(expected.signer_der) {
        return Err(VerifyError::Tlog("the entry names another key or certificate".into()));
    }
    Ok((body.kind, body.api_version))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DsseBody {
    kind: String,
    api_version: String,
    spec: serde_json::Value,
}

/// Checks that a `dsse` 0.0.1 or `intoto` 0.0.2 body names exactly this envelope's payload,
/// signature and signer; returns the body's (kind, apiVersion).
pub(crate) fn check_dsse_body(
    body: &[u8],
    envelope: &crate::bundle::Envelope,
    payload: &[u8],
    signature: &[u8],
    signer_der: &[u8],
) -> Result<(String, String), VerifyError> {
    let body: DsseBody = serde_json::from_slice(body).map_err(|e| VerifyError::Tlog(format!("entry body: {e}")))?;
    let str_at = |v: &serde_json::Value, path: &[&str]| -> Option<String> {
        path.iter()
            .try_fold(v, |v, k| v.get(k))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let payload_hash = hex(&Sha256::digest(payload));
    let (hash, signatures) = match (body.kind.as_str(), body.api_version.as_str()) {
        ("dsse", "0.0.1") => (
            str_at(&body.spec, &["payloadHash", "value"]),
            body.spec.get("signatures").and_then(|s| s.as_array()).map(|list| {
                list.iter()
                    .map(|s| (str_at(s, &["signature"]), str_at(s, &["verifier"])))
                    .collect::<Vec<_>>()
            }),
        ),
        ("intoto", "0.0.2") => {
            let env = body.spec.get("content").and_then(|c| c.get("envelope"));
            // intoto 0.0.2 stores the envelope's payload and signatures base64 once more.
            let stored_payload = env
                .and_then(|e| str_at(e, &["payload"]))
                .and_then(|p| STANDARD.decode(p).ok())
                .and_then(|p| String::from_utf8(p).ok());
            let stored_type = env.and_then(|e| str_at(e, &["payloadType"]));
            if stored_payload.as_deref() != Some(envelope.payload.as_str())
                || stored_type.as_deref() != Some(envelope.payload_type.as_str())
            {
                return Err(VerifyError::Tlog("the entry holds another DSSE envelope".into()));
            }
            (
                str_at(&body.spec, &["content", "payloadHash", "value"]),
                env.and_then(|e| e.get("signatures"))
                    .and_then(|s| s.as_array())
                    .map(|list| {
                        list.iter()
                            .map(|s| {
                                let sig = str_at(s, &["sig"])
                                    .and_then(|x| STANDARD.decode(x).ok())
                                    .and_then(|x| String::from_utf8(x).ok());
                                (sig, str_at(s, &["publicKey"]))
                            })
                            .collect::<Vec<_>>()
                    }),
            )
        }
        (kind, version) => {
            return Err(VerifyError::Tlog(format!(
                "a DSSE envelope in a {kind} {version} entry"
            )));
        }
    };
    if !hash.is_some_and(|h| h.eq_ignore_ascii_case(&payload_hash)) {
        return Err(VerifyError::Tlog("the entry is for another DSSE payload".into()));
    }
    let signatures = signatures.unwrap_or_default();
    let [(Some(sig), Some(verifier))] = signatures.as_slice() else {
        return Err(VerifyError::Tlog(
            "the entry does not hold exactly one DSSE signature".into(),
        ));
    };
    if STANDARD.decode(sig).ok().as_deref() != Some(signature) {
        return Err(VerifyError::Tlog("the entry is for another DSSE signature".into()));
    }
    let pem = STANDARD
        .decode(verifier)
        .map_err(|_| VerifyError::Tlog("entry verifier is not base64".into()))?;
    if pem_der(&pem).as_deref() != Some(signer_der) {
        return Err(VerifyError::Tlog("the entry names another key or certificate".into()));
    }
    Ok((body.kind, body.api_version))
}

/// The DER of the one PEM block (key or certificate) in `pem`.
fn pem_der(pem: &[u8]) -> Option<Vec<u8>> {
    x509_parser::pem::parse_x509_pem(pem).ok().map(|(_, p)| p.contents)
}

fn node(left: &[u8], right: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// RFC 6962 leaf hash.
pub(crate) fn leaf_hash(leaf: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(leaf);
    h.finalize().into()
}

/// The root an inclusion proof leads to (RFC 9162 section 2.1.3.2).
pub(crate) fn root_from_proof(index: u64, size: u64, leaf: [u8; 32], proof: &[[u8; 32]]) -> Option<[u8; 32]> {
    if index >= size {
        return None;
    }
    let (mut fnode, mut snode, mut r) = (index, size - 1, leaf);
    for p in proof {
        if snode == 0 {
            return None;
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node(p, &r);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            r = node(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    (snode == 0).then_some(r)
}

/// Verifies a signed checkpoint (a signed note) against the proof's tree size and root, with
/// the log's key; the signature line must carry the log's key hint.
pub(crate) fn verify_checkpoint(
    envelope: &str,
    key: &PublicKey,
    log_id: &[u8],
    size: u64,
    root: &[u8; 32],
) -> Result<(), VerifyError> {
    let bad = |m: &str| VerifyError::Tlog(format!("checkpoint: {m}"));
    let split = envelope.find("\n\n").ok_or_else(|| bad("no signature block"))?;
    let (text, signatures) = envelope.split_at(split + 1);
    let mut lines = text.lines();
    let origin = lines.next().filter(|o| !o.is_empty()).ok_or_else(|| bad("no origin"))?;
    let cp_size: u64 = lines
        .next()
        .and_then(|l| l.parse().ok())
        .ok_or_else(|| bad("no tree size"))?;
    let cp_root = lines
        .next()
        .and_then(|l| STANDARD.decode(l).ok())
        .ok_or_else(|| bad("no root hash"))?;
    if cp_size != size || cp_root != root {
        return Err(bad("it is for another tree than the inclusion proof"));
    }
    let hint = log_id.get(..4).ok_or_else(|| bad("log id too short"))?;
    let mut hinted = false;
    for line in signatures.lines().skip(1) {
        let Some(rest) = line.strip_prefix("\u{2014} ") else {
            continue;
        };
        let Some((_name, sig)) = rest.rsplit_once(' ') else {
            continue;
        };
        let Ok(sig) = STANDARD.decode(sig) else { continue };
        if sig.get(..4) != Some(hint) {
            continue;
        }
        hinted = true;
        if key.verify(text.as_bytes(), sig.get(4..).unwrap_or_default()).is_ok() {
            return Ok(());
        }
    }
    Err(bad(if hinted {
        "its signature does not verify with the log's key"
    } else {
        "no signature by the log's key"
    })
    .with_origin(origin))
}

trait WithOrigin {
    fn with_origin(self, origin: &str) -> Self;
}

impl WithOrigin for VerifyError {
    fn with_origin(self, origin: &str) -> Self {
        match self {
            VerifyError::Tlog(m) => VerifyError::Tlog(format!("{m} (origin {origin:?})")),
            other => other,
        }
    }
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Decodes a base64 32-byte hash.
pub(crate) fn hash32(text: &str, what: &'static str) -> Result<[u8; 32], VerifyError> {
    b64(text, what)?
        .try_into()
        .map_err(|_| VerifyError::malformed(what, "not 32 bytes"))
}

/// Rekor's legacy `dev.sigstore.cosign/bundle` annotation.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct AnnotationBundle {
    pub signed_entry_timestamp: String,
    pub payload: AnnotationPayload,
}

/// The payload of [`AnnotationBundle`].
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AnnotationPayload {
    pub body: String,
    pub integrated_time: i64,
    pub log_index: i64,
    #[serde(rename = "logID")]
    pub log_id: String,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    /// RFC 6962 MTH over leaf hashes.
    fn root(leaves: &[[u8; 32]]) -> [u8; 32] {
        if leaves.len() == 1 {
            return leaves[0];
        }
        let k = split(leaves.len());
        node(&root(&leaves[..k]), &root(&leaves[k..]))
    }

    /// The largest power of two below `n`.
    fn split(n: usize) -> usize {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }

    /// RFC 6962 PATH(m, D[n]).
    fn path(m: usize, leaves: &[[u8; 32]]) -> Vec<[u8; 32]> {
        if leaves.len() == 1 {
            return Vec::new();
        }
        let k = split(leaves.len());
        if m < k {
            let mut p = path(m, &leaves[..k]);
            p.push(root(&leaves[k..]));
            p
        } else {
            let mut p = path(m - k, &leaves[k..]);
            p.push(root(&leaves[..k]));
            p
        }
    }

    #[test]
    fn inclusion_proofs_of_every_leaf_of_small_trees() {
        for size in 1..=33usize {
            let leaves: Vec<[u8; 32]> = (0..size).map(|i| leaf_hash(&i.to_be_bytes())).collect();
            let want = root(&leaves);
            for index in 0..size {
                let proof = path(index, &leaves);
                let got = root_from_proof(index as u64, size as u64, leaves[index], &proof);
                assert_eq!(got, Some(want), "size {size} index {index}");
                // Another leaf, a shortened or lengthened proof, another index: never the root.
                let other = leaf_hash(b"other");
                assert_ne!(root_from_proof(index as u64, size as u64, other, &proof), Some(want));
                if !proof.is_empty() {
                    let short = &proof[..proof.len() - 1];
                    assert_ne!(
                        root_from_proof(index as u64, size as u64, leaves[index], short),
                        Some(want)
                    );
                }
                let mut long = proof.clone();
                long.push([7; 32]);
                assert_ne!(
                    root_from_proof(index as u64, size as u64, leaves[index], &long),
                    Some(want)
                );
            }
            assert_eq!(root_from_proof(size as u64, size as u64, leaves[0], &[]), None);
        }
    }

    #[test]
    fn set_payload_is_canonical() {
        let p = set_payload("Ym9keQ==", 1674251859, "c0d2", 11608800);
        assert_eq!(
            std::str::from_utf8(&p).unwrap(),
            r#"{"body":"Ym9keQ==","integratedTime":1674251859,"logID":"c0d2","logIndex":11608800}"#
        );
    }
}
