//! What evaluation needs that the engine does not own: the time, scan results, digest
//! resolution, signature verdicts, excluded namespaces and trusted images.

use std::collections::HashMap;

use time::OffsetDateTime;

use crate::image_ref::{ImageRef, ImageRefError};
use crate::scan::ScanResults;

/// An image the deployment trusts (the product's own components): exact `registry/image`,
/// optionally pinned to a digest; never a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedImage {
    repository: String,
    digest: Option<String>,
}

impl TrustedImage {
    /// Parses `registry/image[@digest]`; a tag is refused (trust is by repository or digest).
    pub fn parse(s: &str) -> Result<TrustedImage, ImageRefError> {
        let name = s.split('@').next().unwrap_or(s);
        if name.rsplit('/').next().is_some_and(|last| last.contains(':')) {
            return Err(ImageRefError {
                reason: format!("{s:?}: a trusted image is registry/image with an optional @digest, without a tag"),
            });
        }
        let r = ImageRef::parse(s)?;
        Ok(TrustedImage {
            repository: r.repository(),
            digest: r.digest().map(str::to_owned),
        })
    }

    /// Whether a reference is this trusted image.
    pub fn matches(&self, image: &ImageRef) -> bool {
        self.repository.len() == image.registry().len() + 1 + image.image().len()
            && self.repository == image.repository()
            && self.digest.as_deref().is_none_or(|d| image.digest() == Some(d))
    }
}

/// Result of resolving a tag to a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DigestLookup {
    /// The digest.
    Found(String),
    /// The registry said it has no such image (or the reference cannot be parsed): it
    /// counts as unscanned, and a signature rule it leaves without verdicts fails.
    NotFound,
    /// Nobody resolved it (no resolver, none asked, offline without a digest for it): the
    /// digest is unknown, which says nothing of the image. It counts as unscanned; a
    /// signature rule it leaves without verdicts is not judged, never a violation.
    Unknown,
    /// The resolver failed (registry unreachable, deadline): the failure mode applies.
    Unavailable(String),
}

/// Resolves tag-only references to digests (a registry at admission; a map offline).
pub trait DigestResolver {
    /// The digest of `reference` (as written in the pod), parsed as `image`.
    fn resolve(&self, reference: &str, image: &ImageRef) -> DigestLookup;
}

/// No resolver: tag-only references stay unresolved ([`DigestLookup::Unknown`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoDigests;

impl DigestResolver for NoDigests {
    fn resolve(&self, _: &str, _: &ImageRef) -> DigestLookup {
        DigestLookup::Unknown
    }
}

/// A fixed map from image reference (as written, or normalised image path) to digest; a
/// reference it lacks is [`DigestLookup::Unknown`] (offline, no registry said anything).
#[derive(Debug, Default, Clone)]
pub struct DigestMap(pub HashMap<String, String>);

impl DigestResolver for DigestMap {
    fn resolve(&self, reference: &str, image: &ImageRef) -> DigestLookup {
        self.0
            .get(reference)
            .or_else(|| self.0.get(&image.image_path()))
            .map_or(DigestLookup::Unknown, |d| DigestLookup::Found(d.clone()))
    }
}

/// Signature verdicts from the signature stage (or `--verdicts` offline).
pub trait SignatureVerdicts {
    /// Whether `attestor` has a valid signature over the image; `None` when not known.
    /// `image` is the reference as written; `digest` the digest it resolved to.
    fn verdict(&self, image: &str, digest: Option<&str>, attestor: &str) -> Option<bool>;
}

/// Verdicts keyed by image reference or digest: `{"<image or digest>": {"<attestor>": bool}}`.
#[derive(Debug, Default, Clone)]
pub struct VerdictMap(pub HashMap<String, HashMap<String, bool>>);

impl SignatureVerdicts for VerdictMap {
    fn verdict(&self, image: &str, digest: Option<&str>, attestor: &str) -> Option<bool> {
        digest
            .and_then(|d| self.0.get(d))
            .and_then(|m| m.get(attestor))
            .or_else(|| self.0.get(image).and_then(|m| m.get(attestor)))
            .copied()
    }
}

/// The signature verdicts an evaluation has, and what an image signature rule that applies
/// but that they do not decide counts as (POLICY.md section 4, point 6).
///
/// Offline such a rule is reported as unverified, without effect. At admission it is not
/// judged ([`Decision::not_judged`](super::Decision::not_judged)), never passed silently: a
/// `block` rule is a failed stage (`signature`), so the cluster's failure mode decides
/// (fail-closed blocks, fail-open allows with a warning); a `log` rule is reported and warned
/// about only, never blocking: a rule whose failed verification would only warn must not
/// block because it could not be checked.
#[derive(Clone, Copy)]
pub enum Signatures<'a> {
    /// Offline evaluation (`portcullis eval`), with the verdicts it was given, if any: a rule
    /// they do not decide is reported in [`Decision::unverified`](super::Decision::unverified).
    Offline(Option<&'a dyn SignatureVerdicts>),
    /// Admission, with the signature stage's verdicts: a rule they do not decide (no verdict
    /// for an attestor it needs) is not judged.
    Stage(&'a dyn SignatureVerdicts),
    /// Admission without verdicts: no signature verifier is configured, or it failed or
    /// missed its deadline, as the text says. Every rule that applies is not judged.
    Unavailable(&'a str),
}

impl Signatures<'_> {
    /// Whether this is offline evaluation, where an undecided rule has no effect.
    pub fn is_offline(&self) -> bool {
        matches!(self, Signatures::Offline(_))
    }
}

/// What a stage that cannot answer leads to: the one definition, in the domain crate.
pub use portcullis_domain::FailureMode;

/// Whether the cluster's settings exclude `namespace`: an exact name in `excluded`. The one
/// definition, read by admission (before asking any registry), evaluation, continuous
/// scanning and runtime ruleset matching alike.
pub fn is_excluded_namespace(excluded: &[String], namespace: &str) -> bool {
    excluded.iter().any(|n| n == namespace)
}

/// Everything evaluation needs that the engine does not own.
pub struct EvalContext<'a> {
    /// The time of the decision (unscanned-age rules).
    pub now: OffsetDateTime,
    /// Scan results.
    pub scans: &'a dyn ScanResults,
    /// Tag-to-digest resolution.
    pub digests: &'a dyn DigestResolver,
    /// Signature verdicts, and what a signature rule they do not decide counts as.
    pub signatures: Signatures<'a>,
    /// Namespaces allowed without evaluation.
    pub excluded_namespaces: &'a [String],
    /// Images always exempt.
    pub trusted_images: &'a [TrustedImage],
    /// What an unavailable stage leads to.
    pub failure_mode: FailureMode,
}

static NO_SCANS: crate::scan::MemoryScanStore = crate::scan::MemoryScanStore::EMPTY;

impl EvalContext<'static> {
    /// An offline context: no scans, no resolver, no verdicts, nothing excluded.
    pub fn offline(now: OffsetDateTime) -> EvalContext<'static> {
        EvalContext {
            now,
            scans: &NO_SCANS,
            digests: &NoDigests,
            signatures: Signatures::Offline(None),
            excluded_namespaces: &[],
            trusted_images: &[],
            failure_mode: FailureMode::FailOpen,
        }
    }
}
