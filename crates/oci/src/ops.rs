//! The operations: resolve, fetch, signatures, referrers, push.

use bytes::Bytes;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, Url};

use crate::client::{Request, Target, header_digest, read_body};
use crate::manifest::{
    Descriptor, ImageIndex, MANIFEST_ACCEPT, Manifest, OCI_INDEX, is_manifest_type, media_type_essence,
};
use crate::{Client, Digest, Error, Reference};

/// Cosign's legacy signatures of one image: the `sha256-<hex>.sig` manifest and its layers.
#[derive(Debug, Clone)]
pub struct CosignSignatures {
    /// The signed image's digest (what the payloads must name).
    pub image_digest: Digest,
    /// The signature manifest, as fetched (digest verified).
    pub manifest: Manifest,
    /// Each layer: its descriptor (media type, annotations: the signature, bundle, certificate)
    /// and its verified bytes (the simple-signing payload).
    pub layers: Vec<SignatureLayer>,
}

/// One layer of a signature manifest.
#[derive(Debug, Clone)]
pub struct SignatureLayer {
    /// The layer's descriptor, annotations included.
    pub descriptor: Descriptor,
    /// The layer's bytes, checked against the descriptor's digest.
    pub payload: Bytes,
}

/// Where a referrers list came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReferrersSource {
    /// The OCI 1.1 referrers API.
    Api,
    /// The referrers tag schema (`sha256-<hex>` tag holding an index), for registries without
    /// the API.
    TagSchema,
    /// Neither: the API answered 404 and no such tag exists.
    None,
}

/// The manifests that refer to an image.
#[derive(Debug, Clone)]
pub struct Referrers {
    /// The image's digest.
    pub subject: Digest,
    /// The referring manifests (filtered by artifact type when one was asked).
    pub descriptors: Vec<Descriptor>,
    /// Where the list came from.
    pub source: ReferrersSource,
}

impl Client {
    /// The digest a reference names: its own digest, else what the registry answers for the tag
    /// (`Docker-Content-Digest`; for a multi-architecture image, the index's digest). When the
    /// registry sends no digest, the manifest is fetched and hashed.
    pub async fn resolve(&self, reference: &Reference) -> Result<Digest, Error> {
        if let Some(digest) = reference.digest() {
            return Ok(digest.clone());
        }
        self.within(async {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT, HeaderValue::from_static(MANIFEST_ACCEPT));
            let answer = self
                .send(Request {
                    method: Method::HEAD,
                    reference,
                    target: Target::Path(format!("manifests/{}", reference.manifest_reference())),
                    headers,
                    body: None,
                    actions: "pull",
                })
                .await?;
            match header_digest(answer.response.headers())? {
                Some(digest) => Ok(digest),
                None => {
                    drop(answer);
                    Ok(self.get_manifest(reference).await?.digest)
                }
            }
        })
        .await
    }

    /// Fetches the manifest a reference names (by digest when it has one), checking its sha256.
    pub async fn fetch_manifest(&self, reference: &Reference) -> Result<Manifest, Error> {
        self.within(self.get_manifest(reference)).await
    }

    /// Fetches blob `digest` of the reference's repository, at most `max_bytes`, checking its
    /// sha256.
    pub async fn fetch_blob(&self, reference: &Reference, digest: &Digest, max_bytes: usize) -> Result<Bytes, Error> {
        self.within(self.get_blob(reference, digest, max_bytes)).await
    }

    async fn get_blob(&self, reference: &Reference, digest: &Digest, max_bytes: usize) -> Result<Bytes, Error> {
        let answer = self
            .send(Request {
                method: Method::GET,
                reference,
                target: Target::Path(format!("blobs/{digest}")),
                headers: HeaderMap::new(),
                body: None,
                actions: "pull",
            })
            .await?;
        let bytes = read_body(answer, max_bytes, "blob").await?;
        digest.verify(&bytes)?;
        Ok(bytes)
    }

    /// Cosign's legacy signatures of the image: the manifest tagged `sha256-<hex>.sig` in the
    /// image's repository and each of its layers. `None` when the image has none.
    pub async fn cosign_signatures(&self, image: &Reference) -> Result<Option<CosignSignatures>, Error> {
        self.within(async {
            let image_digest = self.resolve_inner(image).await?;
            let sig_ref = image.with_tag(&format!("{}.sig", image_digest.tag_form()))?;
            let manifest = match self.get_manifest(&sig_ref).await {
                Ok(manifest) => manifest,
                Err(Error::NotFound(_)) => return Ok(None),
                Err(e) => return Err(e),
            };
            let parsed = manifest.image()?;
            let limit = self.config().max_signature_layers;
            if parsed.layers.len() > limit {
                return Err(Error::Invalid(format!(
                    "{sig_ref}: {} signature layers, more than the limit of {limit}",
                    parsed.layers.len()
                )));
            }
            let mut layers = Vec::with_capacity(parsed.layers.len());
            for descriptor in parsed.layers {
                let max = self.config().max_signature_layer_bytes;
                if descriptor.size > u64::try_from(max).unwrap_or(u64::MAX) {
                    return Err(Error::Invalid(format!(
                        "{sig_ref}: layer {} of {} bytes, over the {max}-byte limit",
                        descriptor.digest, descriptor.size
                    )));
                }
                let payload = self.get_blob(image, &descriptor.digest, max).await?;
                if u64::try_from(payload.len()).ok() != Some(descriptor.size) {
                    return Err(Error::Invalid(format!(
                        "{sig_ref}: layer {} is {} bytes, the manifest says {}",
                        descriptor.digest,
                        payload.len(),
                        descriptor.size
                    )));
                }
                layers.push(SignatureLayer { descriptor, payload });
            }
            Ok(Some(CosignSignatures {
                image_digest,
                manifest,
                layers,
            }))
        })
        .await
    }

    /// The manifests referring to the image (OCI 1.1 referrers API, filtered to `artifact_type`
    /// when given); when the API answers 404, the referrers tag schema (`sha256-<hex>` tag
    /// holding an index).
    pub async fn referrers(&self, image: &Reference, artifact_type: Option<&str>) -> Result<Referrers, Error> {
        self.within(async {
            let subject = self.resolve_inner(image).await?;
            let mut path = format!("referrers/{subject}");
            if let Some(wanted) = artifact_type {
                let mut query = Url::parse("http://query.invalid/").map_err(|e| Error::Invalid(e.to_string()))?;
                query.query_pairs_mut().append_pair("artifactType", wanted);
                if let Some(text) = query.query() {
                    path.push('?');
                    path.push_str(text);
                }
            }
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT, HeaderValue::from_static(OCI_INDEX));
            let api = self
                .send(Request {
                    method: Method::GET,
                    reference: image,
                    target: Target::Path(path),
                    headers,
                    body: None,
                    actions: "pull",
                })
                .await;
            let (index, source) = match api {
                Ok(answer) => {
                    let bytes = read_body(answer, self.config().max_manifest_bytes, "referrers list").await?;
                    let index: ImageIndex = serde_json::from_slice(&bytes)
                        .map_err(|e| Error::Invalid(format!("{image}: referrers list: {e}")))?;
                    (index, ReferrersSource::Api)
                }
                Err(Error::NotFound(_)) => {
                    tracing::debug!(
                        registry = image.registry(),
                        "no referrers API; trying the referrers tag schema"
                    );
                    let tag_ref = image.with_tag(&subject.tag_form())?;
                    match self.get_manifest(&tag_ref).await {
                        Ok(manifest) => (manifest.index()?, ReferrersSource::TagSchema),
                        Err(Error::NotFound(_)) => {
                            return Ok(Referrers {
                                subject,
                                descriptors: Vec::new(),
                                source: ReferrersSource::None,
                            });
                        }
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            };
            // Filtered here too: a registry may ignore artifactType, and the tag schema can't.
            let descriptors = index
                .manifests
                .into_iter()
                .filter(|d| artifact_type.is_none_or(|wanted| d.artifact_type.as_deref() == Some(wanted)))
                .collect();
            Ok(Referrers {
                subject,
                descriptors,
                source,
            })
        })
        .await
    }

    async fn resolve_inner(&self, reference: &Reference) -> Result<Digest, Error> {
        // Already under the caller's deadline; `resolve` adds its own, which is no shorter.
        self.resolve(reference).await
    }

    /// Uploads `bytes` as a blob of the reference's repository (POST, then one monolithic PUT),
    /// unless the registry already has it; returns its digest.
    pub async fn push_blob(&self, reference: &Reference, bytes: Bytes) -> Result<Digest, Error> {
        let digest = Digest::of(&bytes);
        self.within(async {
            let exists = self
                .send(Request {
                    method: Method::HEAD,
                    reference,
                    target: Target::Path(format!("blobs/{digest}")),
                    headers: HeaderMap::new(),
                    body: None,
                    actions: "pull,push",
                })
                .await;
            match exists {
                Ok(_) => return Ok(digest.clone()),
                Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
            let started = self
                .send(Request {
                    method: Method::POST,
                    reference,
                    target: Target::Path("blobs/uploads/".into()),
                    headers: HeaderMap::new(),
                    body: Some(Bytes::new()),
                    actions: "pull,push",
                })
                .await?;
            let location = started
                .response
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| Error::Invalid(format!("{reference}: upload started without Location")))?
                .to_owned();
            let base = started.response.url().clone();
            drop(started);
            // Location may be relative to the registry.
            let mut url = base
                .join(&location)
                .map_err(|e| Error::Invalid(format!("{reference}: upload Location: {e}")))?;
            url.query_pairs_mut().append_pair("digest", digest.as_str());
            let mut headers = HeaderMap::new();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            self.send(Request {
                method: Method::PUT,
                reference,
                target: Target::Url(url),
                headers,
                body: Some(bytes),
                actions: "pull,push",
            })
            .await?;
            Ok(digest.clone())
        })
        .await
    }

    /// PUTs a manifest (image, index, signature) at the reference's tag or digest; returns its
    /// digest.
    pub async fn push_manifest(&self, reference: &Reference, media_type: &str, bytes: Bytes) -> Result<Digest, Error> {
        if !is_manifest_type(media_type) {
            return Err(Error::Invalid(format!("{media_type:?} is not a manifest media type")));
        }
        let digest = Digest::of(&bytes);
        if let Some(expected) = reference.digest() {
            expected.verify(&bytes)?;
        }
        self.within(async {
            let mut headers = HeaderMap::new();
            let content_type = HeaderValue::from_str(media_type_essence(media_type))
                .map_err(|_| Error::Invalid(format!("media type {media_type:?}")))?;
            headers.insert(header::CONTENT_TYPE, content_type);
            let answer = self
                .send(Request {
                    method: Method::PUT,
                    reference,
                    target: Target::Path(format!("manifests/{}", reference.manifest_reference())),
                    headers,
                    body: Some(bytes),
                    actions: "pull,push",
                })
                .await?;
            if let Some(sent) = header_digest(answer.response.headers())?
                && sent != digest
            {
                return Err(Error::Invalid(format!(
                    "{reference}: registry stored {sent}, the manifest's sha256 is {digest}"
                )));
            }
            Ok(digest.clone())
        })
        .await
    }

    /// Tags the manifest `source` names (by digest or tag) as `tag` in the same repository.
    pub async fn tag(&self, source: &Reference, tag: &str) -> Result<Digest, Error> {
        let target = source.with_tag(tag)?;
        self.within(async {
            let manifest = self.get_manifest(source).await?;
            self.push_manifest(&target, &manifest.media_type, manifest.bytes).await
        })
        .await
    }
}
