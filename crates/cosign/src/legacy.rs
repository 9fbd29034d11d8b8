//! The legacy cosign layout: simple-signing payloads signed in a layer annotation.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::VerifyError;
use crate::key::PublicKey;
use crate::rekor::{self, AnnotationBundle, Expected};
use crate::trust::TrustedRoot;

/// The payload type cosign signs.
pub const COSIGN_TYPE: &str = "cosign container image signature";
/// The layer annotation holding the base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The layer annotation holding the Rekor bundle (signed entry timestamp).
pub const BUNDLE_ANNOTATION: &str = "dev.sigstore.cosign/bundle";

/// One signature layer of the `sha256-<hex>.sig` manifest.
#[derive(Debug, Clone, Copy)]
pub struct SignatureLayer<'a> {
    /// The layer's content: the simple-signing JSON payload, byte for byte.
    pub payload: &'a [u8],
    /// The `dev.cosignproject.cosign/signature` annotation (base64).
    pub signature: &'a str,
    /// The `dev.sigstore.cosign/bundle` annotation, when present.
    pub bundle: Option<&'a str>,
}

#[derive(Deserialize)]
struct Payload {
    critical: Critical,
}

#[derive(Deserialize)]
struct Critical {
    image: Image,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct Image {
    #[serde(rename = "docker-manifest-digest")]
    digest: String,
}

/// Verifies one legacy signature layer of `image_digest` (`sha256:<hex>`) with `key`; with
/// `tlog`, the layer's Rekor bundle must verify offline with a log of it. Returns what held.
pub fn verify_layer(
    image_digest: &str,
    layer: &SignatureLayer<'_>,
    key: &PublicKey,
    tlog: Option<&TrustedRoot>,
) -> Result<String, VerifyError> {
    let signature = STANDARD
        .decode(layer.signature.trim())
        .map_err(|e| VerifyError::malformed("signature annotation", format!("bad base64: {e}")))?;
    key.verify(layer.payload, &signature)
        .map_err(|_| VerifyError::BadSignature("the signature over the payload with the attestor's key"))?;
    let payload: Payload =
        serde_json::from_slice(layer.payload).map_err(|e| VerifyError::malformed("simple-signing payload", e))?;
    if payload.critical.kind != COSIGN_TYPE {
        return Err(VerifyError::WrongType(payload.critical.kind));
    }
    if payload.critical.image.digest != image_digest {
        return Err(VerifyError::DigestMismatch {
            expected: image_digest.to_owned(),
            found: payload.critical.image.digest,
        });
    }
    let Some(root) = tlog else {
        return Ok(format!("signed by the attestor's key for {image_digest}"));
    };
    let bundle = layer
        .bundle
        .ok_or_else(|| VerifyError::Tlog(format!("no {BUNDLE_ANNOTATION} annotation (signed entry timestamp)")))?;
    let bundle: AnnotationBundle =
        serde_json::from_str(bundle).map_err(|e| VerifyError::malformed("Rekor bundle annotation", e))?;
    let p = &bundle.payload;
    if p.log_index < 0 || p.integrated_time < 0 {
        return Err(VerifyError::Tlog("negative log index or integrated time".into()));
    }
    let log_id = hex_decode(&p.log_id).ok_or_else(|| VerifyError::malformed("Rekor bundle", "logID is not hex"))?;
    let log = root
        .tlog(&log_id)
        .ok_or_else(|| VerifyError::Tlog(format!("entry of an unknown log {}", p.log_id)))?;
    if !log.validity.contains(p.integrated_time) {
        return Err(VerifyError::Tlog(
            "the log's key was not valid at the entry's integrated time".into(),
        ));
    }
    let set = STANDARD
        .decode(&bundle.signed_entry_timestamp)
        .map_err(|_| VerifyError::malformed("Rekor bundle", "SignedEntryTimestamp is not base64"))?;
    rekor::verify_set(&log.key, &set, &p.body, p.integrated_time, &log_id, p.log_index)?;
    let body = STANDARD
        .decode(&p.body)
        .map_err(|_| VerifyError::malformed("Rekor bundle", "body is not base64"))?;
    rekor::check_body(
        &body,
        &Expected {
            signature: &signature,
            sha256: Sha256::digest(layer.payload).into(),
            signer_der: key.spki_der(),
        },
    )?;
    Ok(format!(
        "signed by the attestor's key for {image_digest}, in the transparency log at index {} (integrated {})",
        p.log_index, p.integrated_time
    ))
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| text.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect()
}
