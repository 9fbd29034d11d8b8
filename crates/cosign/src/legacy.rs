//! The legacy cosign layout: simple-signing payloads signed in a layer annotation.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::cert::{self, Identity};
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

/// The layer annotation holding a keyless signature's certificate (PEM).
pub const CERTIFICATE_ANNOTATION: &str = "dev.sigstore.cosign/certificate";

/// One signature layer of the `sha256-<hex>.sig` manifest.
#[derive(Debug, Clone, Copy, Default)]
pub struct SignatureLayer<'a> {
    /// The layer's content: the simple-signing JSON payload, byte for byte.
    pub payload: &'a [u8],
    /// The `dev.cosignproject.cosign/signature` annotation (base64).
    pub signature: &'a str,
    /// The `dev.sigstore.cosign/bundle` annotation, when present.
    pub bundle: Option<&'a str>,
    /// The `dev.sigstore.cosign/certificate` annotation (PEM), for keyless signatures. The
    /// `dev.sigstore.cosign/chain` annotation is not taken: CAs come from the trusted root.
    pub certificate: Option<&'a str>,
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
    let signature = decode_signature(layer)?;
    key.verify(layer.payload, &signature)
        .map_err(|_| VerifyError::BadSignature("the signature over the payload with the attestor's key"))?;
    check_payload(image_digest, layer.payload)?;
    let Some(root) = tlog else {
        return Ok(format!("signed by the attestor's key for {image_digest}"));
    };
    let (index, time) = verify_annotation_bundle(layer, &signature, key.spki_der(), root)?;
    Ok(format!(
        "signed by the attestor's key for {image_digest}, in the transparency log at index {index} (integrated {time})"
    ))
}

/// Verifies one keyless legacy signature layer of `image_digest`: the certificate annotation
/// chains to a Fulcio CA of `root` and names `identity`, judged at the integrated time of the
/// layer's Rekor bundle (required), whose SET verifies with a log of `root`.
pub fn verify_layer_keyless(
    image_digest: &str,
    layer: &SignatureLayer<'_>,
    identity: &Identity,
    root: &TrustedRoot,
) -> Result<String, VerifyError> {
    let signature = decode_signature(layer)?;
    let pem = layer
        .certificate
        .ok_or_else(|| VerifyError::Certificate(format!("no {CERTIFICATE_ANNOTATION} annotation")))?;
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.trim().as_bytes())
        .map_err(|e| VerifyError::Certificate(format!("the certificate annotation is not PEM: {e}")))?;
    if block.label != "CERTIFICATE" {
        return Err(VerifyError::Certificate(format!(
            "PEM label {:?}, expected CERTIFICATE",
            block.label
        )));
    }
    let (index, time) = verify_annotation_bundle(layer, &signature, &block.contents, root)?;
    let key = cert::verify_leaf(&block.contents, root, identity, time, &[])?;
    key.verify(layer.payload, &signature)
        .map_err(|_| VerifyError::BadSignature("the signature over the payload with the certificate's key"))?;
    check_payload(image_digest, layer.payload)?;
    Ok(format!(
        "signed by the attestor's identity for {image_digest}, in the transparency log at index {index} (integrated {time})"
    ))
}

fn decode_signature(layer: &SignatureLayer<'_>) -> Result<Vec<u8>, VerifyError> {
    // Line breaks are skipped, as Go's base64 decoder (and so cosign) skips them.
    let text: String = layer.signature.chars().filter(|c| !matches!(c, '\r' | '\n')).collect();
    STANDARD
        .decode(text.trim())
        .map_err(|e| VerifyError::malformed("signature annotation", format!("bad base64: {e}")))
}

/// The payload is a cosign signature of `image_digest`.
fn check_payload(image_digest: &str, payload: &[u8]) -> Result<(), VerifyError> {
    let payload: Payload =
        serde_json::from_slice(payload).map_err(|e| VerifyError::malformed("simple-signing payload", e))?;
    if payload.critical.kind != COSIGN_TYPE {
        return Err(VerifyError::WrongType(payload.critical.kind));
    }
    if payload.critical.image.digest != image_digest {
        return Err(VerifyError::DigestMismatch {
            expected: image_digest.to_owned(),
            found: payload.critical.image.digest,
        });
    }
    Ok(())
}

/// Verifies the layer's Rekor bundle annotation (SET with a log of `root`, body naming this
/// signature, payload and signer); returns its log index and integrated time.
fn verify_annotation_bundle(
    layer: &SignatureLayer<'_>,
    signature: &[u8],
    signer_der: &[u8],
    root: &TrustedRoot,
) -> Result<(i64, i64), VerifyError> {
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
            signature,
            sha256: Sha256::digest(layer.payload).into(),
            signer_der,
        },
    )?;
    Ok((p.log_index, p.integrated_time))
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
