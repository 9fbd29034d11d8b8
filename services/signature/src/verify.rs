//! The verifier: digest resolution, attestor lookup, one registry round per (image, attestor
//! set), verdicts per attestor, and the caches in front of each.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use portcullis_kit::cache::{Cache, CacheConfig};
use portcullis_kit::upstream::ClusterSel;
use portcullis_oci::manifest::{
    COSIGN_BUNDLE_ANNOTATION, COSIGN_CERTIFICATE_ANNOTATION, COSIGN_SIGNATURE_ANNOTATION, SIGSTORE_BUNDLE_V03,
};
use portcullis_oci::{Client, Digest, Reference};
use portcullis_server::rate_limit::TenantRateLimiter;

use crate::store::{AttestorStore, StoredAttestor};
use crate::{MAX_RESOLVE_TTL, SignatureError, SignatureOptions};

/// Attestors one request may name, at most.
pub const MAX_ATTESTORS: usize = 64;
/// Sigstore bundles read for one image, at most (each costs two registry requests).
pub const MAX_BUNDLES: usize = 16;
/// Largest sigstore bundle read.
const MAX_BUNDLE_BYTES: usize = 1 << 20;
/// Longest reason kept in a verdict (the legacy verifier lists every layer's).
const MAX_REASON_BYTES: usize = 1024;

/// The outcome for one attestor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A signature by the attestor over the image digest verified.
    Verified,
    /// No valid signature by the attestor was found: a violation.
    NotVerified,
    /// The check could not be made: the caller's failure mode decides.
    Error,
}

/// Where a verified signature was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureFormat {
    /// The `sha256-<hex>.sig` tag.
    LegacyTag,
    /// A sigstore bundle found through the referrers API or its tag schema.
    SigstoreBundle,
}

/// The verdict for one attestor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestorVerdict {
    /// The attestor's name.
    pub attestor: String,
    /// The outcome.
    pub verdict: Verdict,
    /// Why, for people.
    pub reason: String,
    /// Where the verified signature was found.
    pub format: Option<SignatureFormat>,
    /// Whether a transparency log entry was verified too.
    pub tlog_verified: bool,
    /// The attestor's revision used (0 when it could not be read).
    pub attestor_revision: u64,
}

impl AttestorVerdict {
    fn error(attestor: &str, revision: u64, reason: impl Into<String>) -> AttestorVerdict {
        AttestorVerdict {
            attestor: attestor.to_owned(),
            verdict: Verdict::Error,
            reason: clip(reason.into()),
            format: None,
            tlog_verified: false,
            attestor_revision: revision,
        }
    }
}

/// What to verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyRequest {
    /// The tenant whose attestors are meant.
    pub tenant: String,
    /// The cluster whose registry credentials to use; `None`: anonymous.
    pub cluster: Option<ClusterSel>,
    /// The image reference.
    pub image: String,
    /// The attestors' names, in the order verdicts are wanted.
    pub attestors: Vec<String>,
    /// The digest when the caller has it.
    pub digest: Option<String>,
}

/// The answer of a verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// The image reference, as given.
    pub image: String,
    /// The digest checked; `None` when it could not be had.
    pub digest: Option<String>,
    /// One verdict per requested attestor, in request order.
    pub verdicts: Vec<AttestorVerdict>,
    /// Whether the signature checks came from the cache.
    pub cached: bool,
    /// When the signatures were checked.
    pub verified_at: SystemTime,
}

/// The answer of a resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// The image reference, as given.
    pub image: String,
    /// The digest.
    pub digest: String,
    /// The media type of what it names, when the registry was asked (empty for a reference
    /// that carried its digest).
    pub media_type: String,
    /// Whether it came from the cache.
    pub cached: bool,
    /// When the registry was asked.
    pub resolved_at: SystemTime,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ResolveKey {
    tenant: String,
    cluster: Option<ClusterSel>,
    reference: String,
}

#[derive(Debug, Clone)]
struct Resolved {
    digest: Digest,
    media_type: String,
    at: SystemTime,
}

/// A verdict set is cached per image repository too: the `.sig` tag and the referrers live
/// in the repository, so the same digest elsewhere may carry other signatures. The cluster
/// is part of it because its credentials decide what the registry lets us see.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct VerdictKey {
    tenant: String,
    cluster: Option<ClusterSel>,
    repository: String,
    digest: String,
    /// Sorted (name, revision) pairs.
    attestors: Vec<(String, u64)>,
}

#[derive(Debug, Clone)]
struct Checked {
    verdicts: BTreeMap<String, AttestorVerdict>,
    at: SystemTime,
}

/// A parsed attestor, or why it cannot be used.
#[derive(Debug, Clone)]
struct Usable {
    name: String,
    revision: u64,
    attestor: Result<Arc<portcullis_cosign::Attestor>, String>,
    requires_tlog: bool,
}

/// The signature verifier (cheap to clone).
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("options", &self.inner.options)
            .field("registry_rounds", &self.registry_rounds())
            .finish_non_exhaustive()
    }
}

struct Inner {
    options: SignatureOptions,
    store: Arc<dyn AttestorStore>,
    anonymous: Client,
    clients: Cache<(String, ClusterSel), Client, SignatureError>,
    /// Parsed once when read: a verdict from the cache costs no JSON or PEM parsing.
    attestors: Cache<(String, String), Option<Arc<Usable>>, SignatureError>,
    resolutions: Cache<ResolveKey, Resolved, SignatureError>,
    verdicts: Cache<VerdictKey, Arc<Checked>, SignatureError>,
    rounds: AtomicU64,
    /// One token per Verify or ResolveDigest of a tenant, whichever way it came.
    limiter: TenantRateLimiter,
}

fn tenant_of<K>(key: &(String, K)) -> &str {
    &key.0
}

impl Verifier {
    /// A verifier reading attestors and credentials from `store`.
    pub fn new(store: Arc<dyn AttestorStore>, options: SignatureOptions) -> Result<Verifier, SignatureError> {
        options
            .rate_limit
            .validate()
            .map_err(|e| SignatureError::InvalidArgument(format!("signature.rate_limit: {e}")))?;
        let anonymous = Client::new(options.registry.client_config())
            .map_err(|e| SignatureError::InvalidArgument(format!("registry client: {e}")))?;
        let max = options.max_entries;
        let mut verdicts = CacheConfig::with_ttl(options.verdict_ttl, max);
        // A registry failure is an answer for a while: 1,000 admissions of an image whose
        // registry is down make one attempt per `failure_ttl`, not 1,000.
        verdicts.gone = |_| true;
        verdicts.negative_ttl = options.failure_ttl;
        let mut resolutions = CacheConfig::with_ttl(options.resolve_ttl.min(MAX_RESOLVE_TTL), max);
        resolutions.gone = |_| true;
        resolutions.negative_ttl = options.failure_ttl.min(MAX_RESOLVE_TTL);
        let attestors = CacheConfig::with_ttl(options.verdict_ttl, max);
        let clients = CacheConfig::with_ttl(options.resolve_ttl.min(MAX_RESOLVE_TTL), 4096);
        Ok(Verifier {
            inner: Arc::new(Inner {
                clients: Cache::new(clients),
                attestors: Cache::with_shares(attestors, tenant_of, max / 16),
                resolutions: Cache::new(resolutions),
                verdicts: Cache::new(verdicts),
                anonymous,
                store,
                limiter: TenantRateLimiter::new(options.rate_limit.clone()),
                options,
                rounds: AtomicU64::new(0),
            }),
        })
    }

    /// How many registry rounds (signature lookups of one image) were made.
    pub fn registry_rounds(&self) -> u64 {
        self.inner.rounds.load(Ordering::Relaxed)
    }

    /// The settings.
    pub fn options(&self) -> &SignatureOptions {
        &self.inner.options
    }

    /// Drops what is cached of a tenant's attestor `name` and the verdicts made with it.
    pub fn attestor_changed(&self, tenant: &str, name: &str) {
        self.inner
            .attestors
            .invalidate_where(|(t, n), _| t == tenant && n == name);
        self.inner
            .verdicts
            .invalidate_where(|k, _| k.tenant == tenant && k.attestors.iter().any(|(n, _)| n == name));
    }

    /// Drops the cached registry client (credentials) of a tenant's cluster, and what was
    /// resolved or verified with it.
    pub fn cluster_changed(&self, tenant: &str, cluster_id: &str, name: &str) {
        let matches = |c: &ClusterSel| match c {
            ClusterSel::Id(id) => id == cluster_id,
            ClusterSel::Name(n) => n == name,
        };
        self.inner
            .clients
            .invalidate_where(|(t, c), _| t == tenant && matches(c));
        self.inner
            .resolutions
            .invalidate_where(|k, _| k.tenant == tenant && k.cluster.as_ref().is_some_and(matches));
        self.inner
            .verdicts
            .invalidate_where(|k, _| k.tenant == tenant && k.cluster.as_ref().is_some_and(matches));
    }

    /// Drops everything (after a gap in the events).
    pub fn clear(&self) {
        self.inner.attestors.invalidate_all();
        self.inner.verdicts.invalidate_all();
        self.inner.clients.invalidate_all();
        self.inner.resolutions.invalidate_all();
    }

    async fn client(&self, tenant: &str, cluster: Option<&ClusterSel>) -> Result<Client, SignatureError> {
        let Some(cluster) = cluster else {
            return Ok(self.inner.anonymous.clone());
        };
        let (store, anonymous, config) = (
            self.inner.store.clone(),
            self.inner.anonymous.clone(),
            self.inner.options.registry.client_config(),
        );
        let key = (tenant.to_owned(), cluster.clone());
        let (t, c) = key.clone();
        self.inner
            .clients
            .get(key, move || async move {
                let logins = store.registry_credentials(&t, &c).await?;
                if logins.is_empty() {
                    return Ok(anonymous);
                }
                let mut config = config;
                for login in logins {
                    let credential = login.credential();
                    config.credentials.insert(login.registry, credential);
                }
                Client::new(config).map_err(|e| SignatureError::Internal(format!("registry client: {e}")))
            })
            .get()
            .await
    }

    /// Takes one of `tenant`'s tokens: ResourceExhausted beyond its rate, before any work.
    fn admit(&self, tenant: &str) -> Result<(), SignatureError> {
        self.inner
            .limiter
            .check(tenant)
            .map_err(|limited| SignatureError::ResourceExhausted(limited.to_string()))
    }

    /// Resolves `image` to its digest (cached at most 60 s); one call of the tenant's rate.
    pub async fn resolve(
        &self,
        tenant: &str,
        cluster: Option<&ClusterSel>,
        image: &str,
    ) -> Result<Resolution, SignatureError> {
        self.admit(tenant)?;
        self.resolve_admitted(tenant, cluster, image).await
    }

    /// [`Verifier::resolve`] without taking a token (a Verify has taken one already).
    async fn resolve_admitted(
        &self,
        tenant: &str,
        cluster: Option<&ClusterSel>,
        image: &str,
    ) -> Result<Resolution, SignatureError> {
        let reference = parse_reference(image)?;
        if let Some(digest) = reference.digest() {
            return Ok(Resolution {
                image: image.to_owned(),
                digest: digest.to_string(),
                media_type: String::new(),
                cached: false,
                resolved_at: SystemTime::now(),
            });
        }
        let client = self.client(tenant, cluster).await?;
        let key = ResolveKey {
            tenant: tenant.to_owned(),
            cluster: cluster.cloned(),
            reference: reference.to_string(),
        };
        let answer = self.inner.resolutions.get(key, move || async move {
            // HEAD gives the digest; the media type needs the manifest, and a resolution is
            // rare next to verdicts (cached), so one GET does both.
            let manifest = client.fetch_manifest(&reference).await.map_err(registry_error)?;
            Ok(Resolved {
                digest: manifest.digest,
                media_type: manifest.media_type,
                at: SystemTime::now(),
            })
        });
        let cached = answer.is_hit();
        let resolved = answer.get().await?;
        Ok(Resolution {
            image: image.to_owned(),
            digest: resolved.digest.to_string(),
            media_type: resolved.media_type,
            cached,
            resolved_at: resolved.at,
        })
    }

    async fn attestor(&self, tenant: &str, name: &str) -> Result<Option<Arc<Usable>>, SignatureError> {
        let store = self.inner.store.clone();
        let key = (tenant.to_owned(), name.to_owned());
        let (t, n) = key.clone();
        self.inner
            .attestors
            .get(key, move || async move {
                let stored = store.attestor(&t, &n).await?;
                Ok(stored.map(|s| Arc::new(parse_attestor(&s))))
            })
            .get()
            .await
    }

    /// Verifies `request`'s image against each of its attestors. Only a malformed request is
    /// an error (and a tenant over its rate limit); what fails for the image or an
    /// attestor is in its verdict.
    pub async fn verify(&self, request: &VerifyRequest) -> Result<Verification, SignatureError> {
        validate(request)?;
        self.admit(&request.tenant)?;
        let reference = parse_reference(&request.image)?;
        let now = SystemTime::now();
        let all_error = |digest: Option<String>, reason: &str| Verification {
            image: request.image.clone(),
            digest,
            verdicts: request
                .attestors
                .iter()
                .map(|a| AttestorVerdict::error(a, 0, reason))
                .collect(),
            cached: false,
            verified_at: now,
        };
        let given = match request.digest.as_deref().filter(|d| !d.is_empty()) {
            Some(text) => {
                Some(Digest::parse(text).map_err(|e| SignatureError::InvalidArgument(format!("digest: {e}")))?)
            }
            None => None,
        };
        if let (Some(given), Some(own)) = (&given, reference.digest())
            && given != own
        {
            return Err(SignatureError::InvalidArgument(format!(
                "digest: {given} differs from the reference's {own}"
            )));
        }
        let client = match self.client(&request.tenant, request.cluster.as_ref()).await {
            Ok(client) => client,
            Err(e) => return Ok(all_error(None, &format!("registry credentials: {e}"))),
        };
        // A reference with its digest needs no resolution (nor parsing it twice).
        let digest = match given.or_else(|| reference.digest().cloned()) {
            Some(digest) => digest,
            None => match self
                .resolve_admitted(&request.tenant, request.cluster.as_ref(), &request.image)
                .await
            {
                Ok(resolution) => match Digest::parse(&resolution.digest) {
                    Ok(digest) => digest,
                    Err(e) => return Ok(all_error(None, &format!("resolving the tag: {e}"))),
                },
                // POLICY.md 4.6: an image the registry says does not exist fails.
                Err(SignatureError::NotFound(reason)) => {
                    let mut answer = all_error(None, &format!("the registry has no such image: {reason}"));
                    for verdict in &mut answer.verdicts {
                        verdict.verdict = Verdict::NotVerified;
                    }
                    return Ok(answer);
                }
                Err(e) => return Ok(all_error(None, &format!("resolving the tag: {e}"))),
            },
        };

        // The attestors, each read once (cached), in request order.
        let mut usable: Vec<Arc<Usable>> = Vec::with_capacity(request.attestors.len());
        let mut verdicts: Vec<Option<AttestorVerdict>> = vec![None; request.attestors.len()];
        let lookups = futures::future::join_all(
            request
                .attestors
                .iter()
                .map(|name| self.attestor(&request.tenant, name)),
        )
        .await;
        for ((slot, name), found) in verdicts.iter_mut().zip(&request.attestors).zip(lookups) {
            match found {
                Ok(Some(parsed)) => {
                    if !usable.iter().any(|u| u.name == parsed.name) {
                        usable.push(parsed);
                    }
                }
                Ok(None) => *slot = Some(AttestorVerdict::error(name, 0, format!("unknown attestor {name:?}"))),
                Err(e) => *slot = Some(AttestorVerdict::error(name, 0, format!("reading the attestor: {e}"))),
            }
        }

        let mut cached = true;
        let mut verified_at = now;
        if !usable.is_empty() {
            let mut attestors: Vec<(String, u64)> = usable.iter().map(|u| (u.name.clone(), u.revision)).collect();
            attestors.sort();
            let revisions: BTreeMap<String, u64> = attestors.iter().cloned().collect();
            let key = VerdictKey {
                tenant: request.tenant.clone(),
                cluster: request.cluster.clone(),
                repository: format!("{}/{}", reference.registry(), reference.repository()),
                digest: digest.to_string(),
                attestors,
            };
            let image = reference.with_digest(digest.clone());
            let this = self.clone();
            let answer = self.inner.verdicts.get(key, move || async move {
                Ok(Arc::new(this.check(&client, &image, &usable).await?))
            });
            cached = answer.is_hit();
            match answer.get().await {
                Ok(checked) => {
                    verified_at = checked.at;
                    for (slot, name) in verdicts.iter_mut().zip(&request.attestors) {
                        if slot.is_none() {
                            *slot = checked.verdicts.get(name).cloned();
                        }
                    }
                }
                Err(e) => {
                    for (slot, name) in verdicts.iter_mut().zip(&request.attestors) {
                        if slot.is_none() {
                            let revision = revisions.get(name).copied().unwrap_or_default();
                            *slot = Some(AttestorVerdict::error(name, revision, e.to_string()));
                        }
                    }
                }
            }
        }
        Ok(Verification {
            image: request.image.clone(),
            digest: Some(digest.to_string()),
            verdicts: verdicts
                .into_iter()
                .zip(&request.attestors)
                .map(|(v, name)| v.unwrap_or_else(|| AttestorVerdict::error(name, 0, "no verdict was made")))
                .collect(),
            cached,
            verified_at,
        })
    }

    /// One registry round: the `.sig` manifest and its layers, the referrers' bundles (and the
    /// image manifest they sign), then every attestor against them. A registry failure fails
    /// the whole round (cached for `failure_ttl`).
    async fn check(
        &self,
        client: &Client,
        image: &Reference,
        attestors: &[Arc<Usable>],
    ) -> Result<Checked, SignatureError> {
        self.inner.rounds.fetch_add(1, Ordering::Relaxed);
        let digest = image
            .digest()
            .map(|d| d.to_string())
            .ok_or_else(|| SignatureError::Internal("the image reference has no digest".into()))?;
        let (legacy, referrers) = futures::future::join(
            client.cosign_signatures(image),
            client.referrers(image, Some(SIGSTORE_BUNDLE_V03)),
        )
        .await;
        let legacy = legacy.map_err(registry_error)?;
        let referrers = referrers.map_err(registry_error)?;
        let mut bundles: Vec<Bytes> = Vec::new();
        for descriptor in referrers.descriptors.iter().take(MAX_BUNDLES) {
            let manifest = client
                .fetch_manifest(&image.with_digest(descriptor.digest.clone()))
                .await
                .map_err(registry_error)?;
            let Ok(parsed) = manifest.image() else { continue };
            for layer in parsed.layers.iter().filter(|l| l.media_type == SIGSTORE_BUNDLE_V03) {
                bundles.push(
                    client
                        .fetch_blob(image, &layer.digest, MAX_BUNDLE_BYTES)
                        .await
                        .map_err(registry_error)?,
                );
            }
        }
        // A bundle signs the image manifest's bytes (their sha256 is the digest).
        let artifact = if bundles.is_empty() {
            Bytes::new()
        } else {
            client.fetch_manifest(image).await.map_err(registry_error)?.bytes
        };
        let layers: Vec<portcullis_cosign::SignatureLayer<'_>> = legacy
            .as_ref()
            .map(|sigs| {
                sigs.layers
                    .iter()
                    .map(|layer| {
                        let annotation = |name: &str| layer.descriptor.annotations.get(name).map(String::as_str);
                        portcullis_cosign::SignatureLayer {
                            payload: &layer.payload,
                            signature: annotation(COSIGN_SIGNATURE_ANNOTATION).unwrap_or_default(),
                            bundle: annotation(COSIGN_BUNDLE_ANNOTATION),
                            certificate: annotation(COSIGN_CERTIFICATE_ANNOTATION),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let now = unix_now();
        let mut verdicts = BTreeMap::new();
        for usable in attestors {
            let verdict = match &usable.attestor {
                Err(reason) => AttestorVerdict::error(&usable.name, usable.revision, reason.clone()),
                Ok(attestor) => judge(usable, attestor, &digest, &layers, &bundles, &artifact, now),
            };
            verdicts.insert(usable.name.clone(), verdict);
        }
        Ok(Checked {
            verdicts,
            at: SystemTime::now(),
        })
    }
}

fn judge(
    usable: &Usable,
    attestor: &portcullis_cosign::Attestor,
    digest: &str,
    layers: &[portcullis_cosign::SignatureLayer<'_>],
    bundles: &[Bytes],
    artifact: &[u8],
    now: i64,
) -> AttestorVerdict {
    let mut reasons = Vec::new();
    let held = |reason: &str, format| AttestorVerdict {
        attestor: usable.name.clone(),
        verdict: Verdict::Verified,
        reason: clip(reason.to_owned()),
        format: Some(format),
        tlog_verified: usable.requires_tlog,
        attestor_revision: usable.revision,
    };
    if !layers.is_empty() {
        let verdict = portcullis_cosign::verify_legacy(digest, layers, attestor);
        if verdict.verified() {
            return held(verdict.reason(), SignatureFormat::LegacyTag);
        }
        reasons.push(format!("legacy signatures: {}", verdict.reason()));
    }
    for (i, bundle) in bundles.iter().enumerate() {
        let verdict = portcullis_cosign::verify_bundle(bundle, artifact, attestor, now);
        if verdict.verified() {
            return held(verdict.reason(), SignatureFormat::SigstoreBundle);
        }
        reasons.push(format!("bundle {i}: {}", verdict.reason()));
    }
    AttestorVerdict {
        attestor: usable.name.clone(),
        verdict: Verdict::NotVerified,
        reason: clip(if reasons.is_empty() {
            "the image has no signatures".to_owned()
        } else {
            reasons.join("; ")
        }),
        format: None,
        tlog_verified: false,
        attestor_revision: usable.revision,
    }
}

/// The attestor as the engine reads it (the one model of an attestor document), made into
/// the verifier's attestor. A document that does not parse, or a type the verifier does not
/// know, is an unusable attestor: its verdicts are errors, never a pass.
fn parse_attestor(stored: &StoredAttestor) -> Usable {
    let mut requires_tlog = false;
    let attestor = (|| {
        let document = portcullis_engine::attestor::Attestor::from_json(&stored.document_json)
            .map_err(|e| format!("the attestor document does not parse: {e}"))?;
        match document.attestor_type.as_str() {
            "cosignPublicKey" => {
                let log_key = if document.transparency_log_enabled {
                    requires_tlog = true;
                    Some(
                        document
                            .transparency_log_options
                            .as_ref()
                            .map(|o| o.public_key.clone())
                            .ok_or_else(|| "transparencyLogOptions.publicKey is missing".to_owned())?,
                    )
                } else {
                    None
                };
                portcullis_cosign::Attestor::public_key(&document.public_key, log_key.as_deref())
                    .map(Arc::new)
                    .map_err(|e| format!("the attestor's key: {e}"))
            }
            "cosignKeyless" => {
                // Keyless signatures always carry their log entry (POLICY.md section 6).
                requires_tlog = true;
                document
                    .keyless
                    .as_ref()
                    .ok_or_else(|| "the keyless attestor has no keyless block".to_owned())?
                    .to_cosign()
                    .map(Arc::new)
                    .map_err(|e| format!("the keyless attestor: {e}"))
            }
            other => Err(format!("unsupported attestor type {other:?}")),
        }
    })();
    Usable {
        name: stored.name.clone(),
        revision: stored.revision,
        attestor,
        requires_tlog,
    }
}

/// The tenant a request names must be a tenant id (on the bus it comes from the message).
pub(crate) fn validate_tenant(tenant: &str) -> Result<(), SignatureError> {
    if portcullis_domain::TenantId::parse(tenant).is_err() {
        return Err(SignatureError::InvalidArgument("tenant_id: not a tenant id".into()));
    }
    Ok(())
}

fn validate(request: &VerifyRequest) -> Result<(), SignatureError> {
    validate_tenant(&request.tenant)?;
    if request.attestors.is_empty() {
        return Err(SignatureError::InvalidArgument(
            "attestors: at least one is required".into(),
        ));
    }
    if request.attestors.len() > MAX_ATTESTORS {
        return Err(SignatureError::InvalidArgument(format!(
            "attestors: {} given, at most {MAX_ATTESTORS}",
            request.attestors.len()
        )));
    }
    if let Some(bad) = request
        .attestors
        .iter()
        .find(|a| a.is_empty() || a.len() > 64 || !a.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)))
    {
        return Err(SignatureError::InvalidArgument(format!(
            "attestors: {:?} is not an attestor name",
            clip(bad.clone())
        )));
    }
    Ok(())
}

fn parse_reference(image: &str) -> Result<Reference, SignatureError> {
    if image.trim().is_empty() {
        return Err(SignatureError::InvalidArgument("image: required".into()));
    }
    Reference::parse(image).map_err(|e| SignatureError::InvalidArgument(format!("image: {e}")))
}

/// A registry failure, as the verdicts and ResolveDigest report it.
fn registry_error(e: portcullis_oci::Error) -> SignatureError {
    match e {
        portcullis_oci::Error::NotFound(_) => SignatureError::NotFound(format!("registry: {e}")),
        portcullis_oci::Error::Invalid(_) | portcullis_oci::Error::Config(_) => {
            SignatureError::Internal(format!("registry: {e}"))
        }
        _ => SignatureError::Unavailable(format!("registry: {e}")),
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
        .try_into()
        .unwrap_or(i64::MAX)
}

fn clip(mut text: String) -> String {
    if text.len() > MAX_REASON_BYTES {
        let mut end = MAX_REASON_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn stored(document_json: String) -> StoredAttestor {
        StoredAttestor {
            name: "a".into(),
            revision: 3,
            document_json,
        }
    }

    #[test]
    fn a_keyless_attestor_document_becomes_a_verifier_attestor_requiring_the_log() {
        let yaml = include_str!("../../../examples/attestor-keyless.yaml");
        let document = portcullis_engine::attestor::Attestor::from_yaml(yaml).unwrap();
        let usable = parse_attestor(&stored(serde_json::to_string(&document).unwrap()));
        assert!(usable.attestor.is_ok(), "{:?}", usable.attestor.err());
        assert!(usable.requires_tlog);
        assert_eq!((usable.name.as_str(), usable.revision), ("a", 3));
    }

    #[test]
    fn an_unusable_attestor_is_an_error_not_a_pass() {
        for (document, why) in [
            ("not json".to_owned(), "does not parse"),
            (
                serde_json::json!({"name": "a", "type": "somethingElse", "publicKey": "x"}).to_string(),
                "unsupported attestor type",
            ),
            (
                serde_json::json!({"name": "a", "type": "cosignKeyless"}).to_string(),
                "no keyless block",
            ),
        ] {
            let usable = parse_attestor(&stored(document));
            let error = usable.attestor.err().unwrap();
            assert!(error.contains(why), "{error}");
        }
    }
}
