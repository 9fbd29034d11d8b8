//! The OCI and Docker v2 manifest documents the client reads and writes.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{Digest, Error};

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index (a multi-architecture image, or the referrers list).
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list (Docker's multi-architecture image).
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// An empty descriptor's media type (OCI 1.1 artifacts without config).
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// The layer type of cosign's legacy signatures: a simple-signing payload.
pub const COSIGN_SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation holding the base64 signature of the payload.
pub const COSIGN_SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The layer annotation holding a signature's transparency log bundle.
pub const COSIGN_BUNDLE_ANNOTATION: &str = "dev.sigstore.cosign/bundle";
/// The layer annotation holding a keyless signature's certificate.
pub const COSIGN_CERTIFICATE_ANNOTATION: &str = "dev.sigstore.cosign/certificate";
/// The layer annotation holding a keyless signature's certificate chain.
pub const COSIGN_CHAIN_ANNOTATION: &str = "dev.sigstore.cosign/chain";
/// The artifact type of a sigstore bundle attached as a referrer.
pub const SIGSTORE_BUNDLE_V03: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

/// The Accept header of manifest requests: every manifest and index type the client reads.
pub(crate) const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// Whether `media_type` (parameters ignored) is one the client reads as a manifest or index.
pub(crate) fn is_manifest_type(media_type: &str) -> bool {
    matches!(
        media_type_essence(media_type),
        OCI_MANIFEST | OCI_INDEX | DOCKER_MANIFEST | DOCKER_MANIFEST_LIST
    )
}

/// `type/subtype` without parameters or whitespace.
pub(crate) fn media_type_essence(media_type: &str) -> &str {
    media_type.split(';').next().unwrap_or_default().trim()
}

/// A content descriptor: what a manifest or index says about one blob or manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// The content's media type.
    pub media_type: String,
    /// The content's digest.
    pub digest: Digest,
    /// The content's size in bytes.
    pub size: u64,
    /// Annotations (cosign keeps its signature here).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The artifact type (referrers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The platform of an index entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

impl Descriptor {
    /// A descriptor of `bytes` with `media_type` (no annotations).
    pub fn of(media_type: &str, bytes: &[u8]) -> Self {
        Self {
            media_type: media_type.to_owned(),
            digest: Digest::of(bytes),
            size: u64::try_from(bytes.len()).unwrap_or(u64::MAX),
            annotations: BTreeMap::new(),
            artifact_type: None,
            platform: None,
        }
    }
}

/// The platform of an index entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// `amd64`, `arm64`, ...
    pub architecture: String,
    /// `linux`, ...
    pub os: String,
    /// `v8`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// An image manifest (OCI or Docker schema 2; the fields are the same).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    /// Always 2.
    pub schema_version: u32,
    /// The manifest's media type, when it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The artifact type (OCI 1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The config blob.
    pub config: Descriptor,
    /// The layers, in order.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// The manifest this one refers to (OCI 1.1 referrers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An image index or Docker manifest list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    /// Always 2.
    pub schema_version: u32,
    /// The index's media type, when it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The artifact type (OCI 1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The manifests it lists.
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    /// The manifest this one refers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A manifest as fetched: its verified digest, its media type and its exact bytes (signatures
/// are over these bytes, so they are kept as sent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The sha256 of `bytes`.
    pub digest: Digest,
    /// The media type: the `Content-Type` the registry sent, else the document's `mediaType`.
    pub media_type: String,
    /// The manifest exactly as the registry sent it.
    pub bytes: Bytes,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde::de::IgnoredAny>,
}

impl Manifest {
    /// Whether this is an index or manifest list (by media type, else by its `manifests` field).
    pub fn is_index(&self) -> bool {
        match media_type_essence(&self.media_type) {
            OCI_INDEX | DOCKER_MANIFEST_LIST => true,
            OCI_MANIFEST | DOCKER_MANIFEST => false,
            _ => serde_json::from_slice::<Probe>(&self.bytes).is_ok_and(|p| p.manifests.is_some()),
        }
    }

    /// The document as an image manifest; `Invalid` when it is not one.
    pub fn image(&self) -> Result<ImageManifest, Error> {
        if self.is_index() {
            return Err(Error::Invalid(format!(
                "{} is an index, not an image manifest",
                self.digest
            )));
        }
        let manifest: ImageManifest = serde_json::from_slice(&self.bytes)
            .map_err(|e| Error::Invalid(format!("manifest {}: {e}", self.digest)))?;
        if manifest.schema_version != 2 {
            return Err(Error::Invalid(format!(
                "manifest {}: schemaVersion {}",
                self.digest, manifest.schema_version
            )));
        }
        Ok(manifest)
    }

    /// The document as an image index; `Invalid` when it is not one.
    pub fn index(&self) -> Result<ImageIndex, Error> {
        if !self.is_index() {
            return Err(Error::Invalid(format!("{} is not an index", self.digest)));
        }
        let index: ImageIndex =
            serde_json::from_slice(&self.bytes).map_err(|e| Error::Invalid(format!("index {}: {e}", self.digest)))?;
        if index.schema_version != 2 {
            return Err(Error::Invalid(format!(
                "index {}: schemaVersion {}",
                self.digest, index.schema_version
            )));
        }
        Ok(index)
    }

    /// The media type the document itself declares, when it parses and says.
    pub(crate) fn declared_media_type(bytes: &[u8]) -> Option<String> {
        serde_json::from_slice::<Probe>(bytes).ok().and_then(|p| p.media_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn any_bytes_parse_or_are_invalid(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300), index in proptest::bool::ANY) {
            let media_type = if index { OCI_INDEX } else { "application/json" };
            let manifest = Manifest { digest: Digest::of(&bytes), media_type: media_type.into(), bytes: Bytes::from(bytes) };
            let _ = manifest.is_index();
            if let Err(error) = manifest.image() {
                proptest::prop_assert_eq!(error.kind(), crate::ErrorKind::Invalid);
            }
            if let Err(error) = manifest.index() {
                proptest::prop_assert_eq!(error.kind(), crate::ErrorKind::Invalid);
            }
        }
    }

    #[test]
    fn descriptors_round_trip() -> Result<(), serde_json::Error> {
        let mut descriptor = Descriptor::of(COSIGN_SIMPLE_SIGNING, b"payload");
        descriptor
            .annotations
            .insert(COSIGN_SIGNATURE_ANNOTATION.into(), "c2ln".into());
        let text = serde_json::to_string(&descriptor)?;
        assert!(text.contains(r#""mediaType":"application/vnd.dev.cosign.simplesigning.v1+json""#));
        assert_eq!(serde_json::from_str::<Descriptor>(&text)?, descriptor);
        // A descriptor with a bad digest does not parse.
        assert!(serde_json::from_str::<Descriptor>(r#"{"mediaType":"x","digest":"md5:0","size":1}"#).is_err());
        Ok(())
    }
}
