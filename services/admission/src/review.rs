//! One review, start to end, as a pipeline of stages, each a function:
//!
//! 1. the tenant's rate limit and the document's size ([`Admission::check_rate`], `check_size`);
//! 2. the cluster the caller may act for (`select_cluster`; its errors come after the
//!    document's own) and the parse (`parse`, reading only the fields a held policy reads);
//! 3. the cluster's policy and settings (`cluster_policy`): a connector key acts only for
//!    its own cluster; when the store cannot be asked, the default failure mode decides;
//! 4. the hooks of later stages (`run_hooks`: digest resolution, signatures), each under
//!    its deadline: tag-only references are resolved only when the definition that applies
//!    reads digests (scan-based or signature rules), all of a pod's at once, and each gets
//!    its own answer (found, not found, unavailable: one registry down leaves only its
//!    images to the failure mode); signatures only when the definition has signature rules,
//!    over the digests just resolved;
//! 5. evaluation (`evaluate_with_scans`): the engine applies the excluded namespaces and
//!    trusted images, reads scan summaries from the cache, and the missing ones are fetched
//!    once and the evaluation repeated;
//! 6. the failure mode: what a stage that could not answer leads to is the engine's rule
//!    ([`portcullis_engine::evaluate::failed_stage`]), never decided here. A signature rule
//!    that applies but cannot be judged (no verifier configured; the verifier failed
//!    or missed its deadline; no verdict for an attestor) is the engine's too
//!    ([`Signatures`]): a `block` rule is a failed stage, a `log` rule only warns, and the
//!    answer lists every such rule (`Decision.not_judged`, a warning each);
//! 7. the response AdmissionReview and the structured decision (`finish`: with the digests
//!    used and every signature verdict the signature stage gave), then the metrics and the
//!    decision event (`record`).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use std::time::{Duration, Instant};

use portcullis_engine::evaluate::{
    CompiledPolicy, Decision, DigestLookup, DigestResolver, EvalContext, FailureMode, NoDigests, NotEvaluated,
    Signatures, Unverified, Verdict, VerdictMap, is_excluded_namespace,
};
use portcullis_engine::image_ref::ImageRef;
use portcullis_engine::input::{Subject, parse_document_with};
use portcullis_engine::k8s::Fields;
use portcullis_engine::policy::{Action, Mitigation};
use portcullis_engine::projection::{ReviewedPod, subject_pod_labels};
use portcullis_proto::admission::v1 as pa;
use portcullis_proto::common::v1 as pc;
use portcullis_proto::signature::v1 as ps;
use serde::Serialize;
use time::OffsetDateTime;
use tracing::Instrument as _;

use crate::error::AdmissionError;
use crate::metrics::{CacheKind, Outcome, Transport};
use crate::policies::{ClusterPolicy, Lookup, PolicyFetchError};
use crate::replay::SeenAllows;
use crate::{Admission, BoxFuture};
use portcullis_policy_client::ClusterSel;

/// The largest AdmissionReview accepted (the API server's own request limit is 3 MiB).
pub const MAX_REVIEW_BYTES: usize = 3 * 1024 * 1024;

/// Resolves tag-only image references to digests (the signature service's resolver:
/// [`crate::BusDigestStage`]). Runs under the digest stage's deadline.
pub trait DigestStage: Send + Sync + 'static {
    /// What the registry says of each of `references` (tag-only, as written in the pod) in
    /// `tenant`'s `cluster`: [`DigestLookup::Found`], [`DigestLookup::NotFound`] only when the
    /// registry said it has no such image, [`DigestLookup::Unavailable`] when it could not be
    /// asked (then that image alone follows the failure mode). A reference left out of the
    /// answer is unavailable.
    fn resolve<'a>(
        &'a self,
        tenant: &'a str,
        cluster_id: &'a str,
        references: &'a [String],
    ) -> BoxFuture<'a, HashMap<String, DigestLookup>>;
}

/// One image the signature rules that apply selected (the engine decides which), and the
/// attestors those rules name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageToVerify {
    /// The reference as written in the pod.
    pub image: String,
    /// Its digest: the reference's own, or the one the digest stage resolved (so the
    /// signature service does not resolve it again).
    pub digest: Option<String>,
    /// The attestors whose verdicts the rules read.
    pub attestors: Vec<String>,
}

/// The outcome of one attestor's check of one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureOutcome {
    /// A signature by the attestor verified.
    Verified,
    /// No valid signature by the attestor.
    NotVerified,
    /// The check could not be made (the reason says why).
    Error,
}

/// One attestor's verdict on one image, as the signature stage gave it (for the record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureVerdict {
    /// The reference as written in the pod.
    pub image: String,
    /// The digest checked; empty when none could be had.
    pub digest: String,
    /// The attestor.
    pub attestor: String,
    /// The outcome.
    pub outcome: SignatureOutcome,
    /// Why, for people.
    pub reason: String,
}

/// What the signature stage answered.
#[derive(Debug, Clone, Default)]
pub struct SignatureAnswers {
    /// The verdicts the engine reads, keyed by reference or digest: an attestor left out
    /// is not judged.
    pub verdicts: VerdictMap,
    /// Every verdict given, errors included, for the decision.
    pub records: Vec<SignatureVerdict>,
}

/// Verifies image signatures (the signature service: [`crate::BusSignatureStage`]). Runs
/// under the signature stage's deadline.
pub trait SignatureStage: Send + Sync + 'static {
    /// Verdicts for `images` in `tenant`'s `cluster_id`. An attestor left out of the
    /// verdicts is not judged; an error leaves every rule not judged.
    fn verify<'a>(
        &'a self,
        tenant: &'a str,
        cluster_id: &'a str,
        images: &'a [ImageToVerify],
    ) -> BoxFuture<'a, Result<SignatureAnswers, String>>;
}

/// Who a review is for: the tenant, and the cluster the caller may act for.
#[derive(Debug, Clone)]
pub struct ReviewCaller {
    /// The tenant.
    pub tenant: String,
    /// For a connector key, its cluster's id (the only cluster it may name); `None` for the
    /// service credential, which may name any cluster of the tenant.
    pub own_cluster: Option<String>,
}

/// A review's answer.
#[derive(Debug, Clone)]
pub struct ReviewOutput {
    /// The response AdmissionReview, JSON.
    pub response_json: Vec<u8>,
    /// The structured decision.
    pub decision: pa::Decision,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseReview<'a> {
    api_version: &'a str,
    kind: &'static str,
    response: ResponseBody<'a>,
}

#[derive(Serialize)]
struct ResponseStatus<'a> {
    code: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    message: &'a str,
}

#[derive(Serialize)]
struct ResponseBody<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<ResponseStatus<'a>>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    warnings: &'a [String],
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn timestamp(t: OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.unix_timestamp(),
        nanos: i32::try_from(t.nanosecond()).unwrap_or(0),
    }
}

/// A resolver over what the digest stage answered: each reference its own answer; when the
/// stage missed its deadline, every tag-only reference is unavailable (the failure mode
/// decides). Not asked (no stage, or no rule reads digests): unknown.
enum StageDigests {
    None,
    Answers(HashMap<String, DigestLookup>),
    Failed(String),
}

impl StageDigests {
    /// The digest the stage found for `reference`, if any.
    fn found(&self, reference: &str) -> Option<&str> {
        match self {
            StageDigests::Answers(map) => match map.get(reference) {
                Some(DigestLookup::Found(d)) => Some(d.as_str()),
                _ => None,
            },
            _ => None,
        }
    }
}

impl DigestResolver for StageDigests {
    fn resolve(&self, reference: &str, image: &ImageRef) -> DigestLookup {
        match self {
            StageDigests::None => NoDigests.resolve(reference, image),
            StageDigests::Answers(map) => map.get(reference).cloned().unwrap_or_else(|| {
                DigestLookup::Unavailable(format!("the digest stage gave no answer for {reference}"))
            }),
            StageDigests::Failed(why) => DigestLookup::Unavailable(why.clone()),
        }
    }
}

/// The image references of the subject's pod.
fn images_of(subject: &Subject) -> Vec<String> {
    subject
        .object
        .as_ref()
        .and_then(|o| o.pod(&subject.group, &subject.kind))
        .map(|(_, spec)| spec.all_containers().map(|(_, c)| c.image.clone()).collect())
        .unwrap_or_default()
}

/// The cluster's policy as the policy stage found it.
enum PolicyStage {
    /// Known (its policy may be absent: nothing to enforce).
    Known(Arc<ClusterPolicy>),
    /// The policy store could not be asked: the default failure mode decides.
    Unavailable {
        /// The cluster's id when the review named it by id.
        cluster_id: String,
        /// What failed.
        why: String,
    },
}

/// What the hooks of later stages (digest resolution, signatures) answered.
struct HookAnswers {
    digests: StageDigests,
    signatures: StageVerdicts,
}

/// Why a signature rule is not judged when no signature verifier is configured.
pub const NO_VERIFIER: &str = "no signature verifier configured";

/// What the signature stage answered.
enum StageVerdicts {
    /// The verifier's verdicts.
    Verdicts(SignatureAnswers),
    /// No verdicts, and why (no verifier, its error, its deadline).
    Unavailable(std::borrow::Cow<'static, str>),
}

impl StageVerdicts {
    /// As the engine takes them: a rule they cannot decide is not judged.
    fn as_engine(&self) -> Signatures<'_> {
        match self {
            StageVerdicts::Verdicts(answers) => Signatures::Stage(&answers.verdicts),
            StageVerdicts::Unavailable(why) => Signatures::Unavailable(why),
        }
    }

    /// Every verdict given, for the decision.
    fn records(&self) -> &[SignatureVerdict] {
        match self {
            StageVerdicts::Verdicts(answers) => &answers.records,
            StageVerdicts::Unavailable(_) => &[],
        }
    }
}

/// What evaluation reads besides the subject: the cluster, its policy, the hooks' answers.
struct EvalInput<'a> {
    tenant: &'a str,
    subject: &'a Subject,
    cluster: &'a ClusterPolicy,
    policy: &'a CompiledPolicy,
    hooks: &'a HookAnswers,
}

/// The stage before parsing: the document's size.
fn check_size(body: &[u8]) -> Result<(), AdmissionError> {
    if body.len() > MAX_REVIEW_BYTES {
        return Err(AdmissionError::InvalidArgument(format!(
            "admission_review_json: {} bytes is over the limit of {MAX_REVIEW_BYTES} bytes",
            body.len()
        )));
    }
    Ok(())
}

/// The cluster the caller may review for: a connector key's own, or the one named.
fn select_cluster(caller: &ReviewCaller, cluster: Option<ClusterSel>) -> Result<ClusterSel, AdmissionError> {
    match (&caller.own_cluster, cluster) {
        (Some(own), None) => Ok(ClusterSel::Id(own.clone())),
        (Some(own), Some(ClusterSel::Id(id))) if id != *own => Err(AdmissionError::PermissionDenied(
            "a connector key may act only for its own cluster".into(),
        )),
        (_, Some(sel)) => Ok(sel),
        (None, None) => Err(AdmissionError::InvalidArgument(
            "cluster: required: an id or a name".into(),
        )),
    }
}

/// Parses the AdmissionReview, reading `fields`; exactly one request with a uid.
fn parse(body: &[u8], fields: Fields) -> Result<Subject, AdmissionError> {
    let _s = tracing::debug_span!("parse").entered();
    // The engine refuses any document that is not UTF-8 (it checks once, on the fast path);
    // only then is the byte found, for a message that names it.
    let mut subjects = parse_document_with(body, fields).map_err(|e| {
        AdmissionError::InvalidArgument(match std::str::from_utf8(body) {
            Err(utf8) => format!("admission_review_json: not UTF-8 (at byte {})", utf8.valid_up_to()),
            Ok(_) => format!("admission_review_json: {e}"),
        })
    })?;
    if subjects.len() != 1 || subjects.first().is_none_or(|s| s.review_api_version.is_empty()) {
        return Err(AdmissionError::InvalidArgument(
            "admission_review_json: not an AdmissionReview (admission.k8s.io/v1 or v1beta1, with a request)".into(),
        ));
    }
    let subject = subjects.remove(0);
    if subject.uid.is_empty() {
        return Err(AdmissionError::InvalidArgument(
            "admission_review_json: request.uid: missing".into(),
        ));
    }
    Ok(subject)
}

/// The fields the parse must read: a policy held in memory is known before parsing, so the
/// parse reads only what its rules read (a policy without Pod Security Standards rules
/// skips the pod details); otherwise everything is read. An `xdrEnabled` policy's reviews
/// are read in full too: the replay projection of their decisions (every log and block
/// one) needs the pod details, and one full parse costs less than a partial one and a
/// second, full one for the projection.
fn fields_for(cached: Option<&Lookup>) -> Fields {
    cached
        .and_then(|l| l.policy.policy.as_ref())
        .map_or(Fields::ALL, |p| if p.xdr_enabled() { Fields::ALL } else { p.fields() })
}

impl Admission {
    /// Judges one AdmissionReview for `caller` in `cluster` (`None`: the connector's own).
    pub async fn review(
        &self,
        caller: &ReviewCaller,
        cluster: Option<ClusterSel>,
        body: &[u8],
        transport: Transport,
    ) -> Result<ReviewOutput, AdmissionError> {
        let started = Instant::now();
        let span = tracing::debug_span!("review", tenant = %caller.tenant, transport = ?transport);
        let result = self.review_inner(caller, cluster, body, started).instrument(span).await;
        let outcome = match &result {
            Ok(out) if out.decision.allowed => Outcome::Allowed,
            Ok(_) => Outcome::Blocked,
            Err(AdmissionError::RateLimited(_)) => Outcome::RateLimited,
            Err(_) => Outcome::Error,
        };
        self.inner.metrics.request(transport, outcome, started.elapsed());
        result
    }

    /// The stages in order: limit, parse, the cluster's policy, the hooks of later stages,
    /// evaluation with scan summaries, the failure mode, the answer and its event.
    async fn review_inner(
        &self,
        caller: &ReviewCaller,
        cluster: Option<ClusterSel>,
        body: &[u8],
        started: Instant,
    ) -> Result<ReviewOutput, AdmissionError> {
        self.check_rate(caller)?;
        check_size(body)?;
        // The cluster; its errors come after the document's own.
        let sel = select_cluster(caller, cluster);
        let cached = sel
            .as_ref()
            .ok()
            .and_then(|sel| self.inner.policies.cached(&caller.tenant, sel));
        let subject = parse(body, fields_for(cached.as_ref()))?;
        let parsed = Instant::now();
        let stage = self.cluster_policy(caller, sel?, cached).await?;
        let mut timings = Timings {
            parse: parsed - started,
            policy: parsed.elapsed(),
            ..Timings::default()
        };
        let cluster = match stage {
            PolicyStage::Known(cluster) => cluster,
            PolicyStage::Unavailable { cluster_id, why } => {
                return Ok(self.policy_unavailable(caller, &subject, cluster_id, &why, timings, started));
            }
        };
        let Some(policy) = cluster.policy.clone() else {
            // No policy assigned: nothing to enforce.
            let decision = Decision::allowed_without_evaluation(NotEvaluated::KindNotEvaluated);
            return Ok(self.finish(
                caller,
                &subject,
                &cluster,
                &decision,
                timings,
                started,
                &[],
                &[],
                Bytes::new(),
            ));
        };
        let hooks = self.run_hooks(caller, &cluster, &subject, &policy, &mut timings).await;
        let input = EvalInput {
            tenant: &caller.tenant,
            subject: &subject,
            cluster: &cluster,
            policy: &policy,
            hooks: &hooks,
        };
        // Failed stages (signature rules not judged included) are the engine's to apply.
        let decision = self.evaluate_with_scans(&input, &mut timings).await;
        let reviewed = self.reviewed_pod_json(&input, body, &decision, hooks.signatures.records());
        Ok(self.finish(
            caller,
            &subject,
            &cluster,
            &decision,
            timings,
            started,
            &[],
            hooks.signatures.records(),
            reviewed,
        ))
    }

    /// The tenant's rate limit.
    fn check_rate(&self, caller: &ReviewCaller) -> Result<(), AdmissionError> {
        self.inner.limiter.check(&caller.tenant).map_err(|limited| {
            self.inner.metrics.rate_limited();
            AdmissionError::RateLimited(limited.to_string())
        })
    }

    /// The cluster's policy: from memory when `cached`, else fetched under the policy
    /// deadline. A cluster the caller may not act for is refused.
    async fn cluster_policy(
        &self,
        caller: &ReviewCaller,
        sel: ClusterSel,
        cached: Option<Lookup>,
    ) -> Result<PolicyStage, AdmissionError> {
        let inner = &self.inner;
        let lookup = match cached {
            Some(hit) => Ok(hit),
            None => {
                inner
                    .policies
                    .get(&caller.tenant, &sel, inner.options.policy_deadline)
                    .instrument(tracing::debug_span!("policy"))
                    .await
            }
        };
        inner
            .metrics
            .cache_lookup(CacheKind::Policy, lookup.as_ref().is_ok_and(|l| l.hit));
        match lookup {
            Ok(lookup) => match &caller.own_cluster {
                Some(own) if lookup.policy.cluster_id != *own => Err(AdmissionError::PermissionDenied(
                    "a connector key may act only for its own cluster".into(),
                )),
                _ => Ok(PolicyStage::Known(lookup.policy)),
            },
            Err(PolicyFetchError::NotFound(_)) => Err(AdmissionError::PermissionDenied(
                "no such cluster in this tenant, or not the connector key's own".into(),
            )),
            // No policy can be had: the failure mode of a cluster we know nothing of.
            Err(PolicyFetchError::Unavailable(why)) => Ok(PolicyStage::Unavailable {
                cluster_id: match sel {
                    ClusterSel::Id(id) => id,
                    ClusterSel::Name(_) => String::new(),
                },
                why,
            }),
        }
    }

    /// The hooks of later stages, each under its deadline: digests only when the definition
    /// that applies reads them, the signature hook only when it has signature rules
    /// (nothing to verify otherwise), over the digests resolved first.
    async fn run_hooks(
        &self,
        caller: &ReviewCaller,
        cluster: &ClusterPolicy,
        subject: &Subject,
        policy: &CompiledPolicy,
        timings: &mut Timings,
    ) -> HookAnswers {
        // A namespace the cluster excludes is allowed without evaluation: nothing reads
        // digests or verdicts there, so the registries are not asked.
        if is_excluded_namespace(&cluster.excluded_namespaces, &subject.namespace) {
            return HookAnswers {
                digests: StageDigests::None,
                signatures: StageVerdicts::Unavailable(std::borrow::Cow::Borrowed("namespace excluded")),
            };
        }
        let started = Instant::now();
        let digests = if policy.reads_digests(&subject.namespace) {
            self.resolve_digests(caller, cluster, subject).await
        } else {
            StageDigests::None
        };
        timings.digests = started.elapsed();
        let signatures = if policy.verifies_signatures(&subject.namespace) {
            let started = Instant::now();
            let verdicts = self.verify_signatures(caller, cluster, subject, policy, &digests).await;
            timings.signature = started.elapsed();
            verdicts
        } else {
            // Read by no rule: the definition has none.
            StageVerdicts::Unavailable(std::borrow::Cow::Borrowed("no signature rule"))
        };
        HookAnswers { digests, signatures }
    }

    /// The pod's tag-only references (each once; trusted images left out: nothing reads
    /// their digests) resolved by the digest hook, when there is one, all under the digest
    /// deadline.
    async fn resolve_digests(&self, caller: &ReviewCaller, cluster: &ClusterPolicy, subject: &Subject) -> StageDigests {
        let Some(stage) = &self.inner.hooks.digests else {
            return StageDigests::None;
        };
        let mut tag_only: Vec<String> = Vec::new();
        for text in images_of(subject) {
            let wanted = ImageRef::parse(&text)
                .is_ok_and(|r| r.digest().is_none() && !cluster.trusted_images.iter().any(|t| t.matches(&r)));
            if wanted && !tag_only.contains(&text) {
                tag_only.push(text);
            }
        }
        if tag_only.is_empty() {
            return StageDigests::None;
        }
        let call = stage.resolve(&caller.tenant, &cluster.cluster_id, &tag_only);
        match tokio::time::timeout(self.inner.options.digest_deadline, call).await {
            Ok(answers) => StageDigests::Answers(answers),
            Err(_) => StageDigests::Failed("digest resolution missed its deadline".into()),
        }
    }

    /// Signature verdicts from the signature hook; unavailable, saying why, when there is
    /// none or it did not answer.
    async fn verify_signatures(
        &self,
        caller: &ReviewCaller,
        cluster: &ClusterPolicy,
        subject: &Subject,
        policy: &CompiledPolicy,
        digests: &StageDigests,
    ) -> StageVerdicts {
        let Some(stage) = &self.inner.hooks.signatures else {
            return StageVerdicts::Unavailable(std::borrow::Cow::Borrowed(NO_VERIFIER));
        };
        // The engine alone decides which rules select which images.
        let images: Vec<ImageToVerify> = policy
            .signature_selection(&subject.namespace, &images_of(subject), &cluster.trusted_images)
            .into_iter()
            .map(|(image, attestors)| {
                let digest = ImageRef::parse(&image)
                    .ok()
                    .and_then(|r| r.digest().map(str::to_owned))
                    .or_else(|| digests.found(&image).map(str::to_owned));
                ImageToVerify {
                    image,
                    digest,
                    attestors,
                }
            })
            .collect();
        if images.is_empty() {
            // No rule selects an image: nothing to ask.
            return StageVerdicts::Verdicts(SignatureAnswers::default());
        }
        let call = stage.verify(&caller.tenant, &cluster.cluster_id, &images);
        match tokio::time::timeout(self.inner.options.signature_deadline, call).await {
            Ok(Ok(v)) => StageVerdicts::Verdicts(v),
            Ok(Err(e)) => StageVerdicts::Unavailable(format!("signature verifier failed: {e}").into()),
            Err(_) => StageVerdicts::Unavailable("signature verifier missed its deadline".into()),
        }
    }

    /// Evaluates from cached scan summaries first; digests it lacked are fetched once under
    /// the scan deadline and the evaluation repeated (a failed fetch makes them unavailable).
    async fn evaluate_with_scans(&self, input: &EvalInput<'_>, timings: &mut Timings) -> Decision {
        let inner = &self.inner;
        let started = Instant::now();
        let (decision, missing) = self.evaluate_once(input, None);
        timings.evaluate = started.elapsed();
        inner.metrics.cache_lookup(CacheKind::Scan, missing.is_empty());
        if missing.is_empty() {
            return decision;
        }
        let started = Instant::now();
        let fetched = inner
            .scans
            .fetch(input.tenant, missing, inner.options.scan_deadline)
            .instrument(tracing::debug_span!("scan_lookup"))
            .await;
        timings.scans = started.elapsed();
        let again = Instant::now();
        let decision = self.evaluate_once(input, fetched.err().as_deref()).0;
        timings.evaluate += again.elapsed();
        decision
    }

    /// One evaluation over the scan cache, with the digests it lacked. `unavailable`: digests
    /// not held are unavailable, for that reason.
    fn evaluate_once(&self, input: &EvalInput<'_>, unavailable: Option<&str>) -> (Decision, Vec<String>) {
        let _s = tracing::debug_span!("evaluate").entered();
        let view = self.inner.scans.view(input.tenant, unavailable);
        let ctx = EvalContext {
            now: OffsetDateTime::now_utc(),
            scans: &view,
            digests: &input.hooks.digests,
            signatures: input.hooks.signatures.as_engine(),
            excluded_namespaces: &input.cluster.excluded_namespaces,
            trusted_images: &input.cluster.trusted_images,
            failure_mode: input.cluster.failure_mode,
        };
        let decision = input.policy.evaluate(input.subject, &ctx);
        (decision, view.missing())
    }

    /// The answer when no policy can be had: the default failure mode.
    fn policy_unavailable(
        &self,
        caller: &ReviewCaller,
        subject: &Subject,
        cluster_id: String,
        why: &str,
        timings: Timings,
        started: Instant,
    ) -> ReviewOutput {
        let failure_mode = self.inner.options.default_failure_mode;
        let cluster = ClusterPolicy {
            tenant: caller.tenant.clone(),
            cluster_id,
            cluster_name: String::new(),
            policy: None,
            policy_id: String::new(),
            revision: 0,
            failure_mode,
            excluded_namespaces: Vec::new(),
            trusted_images: Vec::new(),
            generation: 0,
        };
        let decision = Decision::failed_stage(failure_mode);
        self.finish(
            caller,
            subject,
            &cluster,
            &decision,
            timings,
            started,
            &[format!("policy: {why}")],
            &[],
            Bytes::new(),
        )
    }

    /// The last stages: the response, the structured decision, the metrics and the event.
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        caller: &ReviewCaller,
        subject: &Subject,
        cluster: &ClusterPolicy,
        decision: &Decision,
        timings: Timings,
        started: Instant,
        failed: &[String],
        signatures: &[SignatureVerdict],
        reviewed_pod_json: Bytes,
    ) -> ReviewOutput {
        let respond_started = Instant::now();
        let allowed = decision.verdict == Verdict::Allow;
        let mut degraded: Vec<String> = failed.to_vec();
        for f in &decision.stage_failures {
            degraded.push(format!("{}: {}", f.stage, f.message));
        }
        let basis = basis(cluster.failure_mode, decision, &degraded);
        let (response_json, warnings) = response(subject, decision, &degraded, cluster.failure_mode);
        let mut decision_pb = pa::Decision {
            uid: subject.uid.clone(),
            allowed,
            basis: basis as i32,
            cluster_id: cluster.cluster_id.clone(),
            policy_id: cluster.policy_id.clone(),
            policy_revision: cluster.revision,
            definition: match (&cluster.policy, decision.not_evaluated) {
                (Some(policy), None) => policy.definition_name(&subject.namespace).to_owned(),
                _ => String::new(),
            },
            digests: digests_pb(decision),
            violations: violations_pb(subject, decision),
            not_judged: decision.not_judged.iter().map(unjudged_pb).collect(),
            warnings,
            degraded,
            timings: None,
            decided_at: Some(timestamp(OffsetDateTime::now_utc())),
            operation: subject.operation.as_str().to_owned(),
            subresource: subject.sub_resource.as_str().to_owned(),
            object: Some(workload_of(subject)),
            owner: owner_of(subject),
            user: subject.user.as_str().to_owned(),
            signatures: signatures.iter().map(signature_verdict_pb).collect(),
        };
        decision_pb.timings = Some(timings.to_pb(respond_started.elapsed(), started.elapsed()));
        self.record(caller, &decision_pb, basis, reviewed_pod_json);
        ReviewOutput {
            response_json,
            decision: decision_pb,
        }
    }

    /// Counts the decision and queues its event: the full decision for anything worth an
    /// analyst's look, else the summary (trimmed in the publisher's task, off the answer's
    /// path).
    fn record(
        &self,
        caller: &ReviewCaller,
        decision: &pa::Decision,
        basis: pa::DecisionBasis,
        reviewed_pod_json: Bytes,
    ) {
        let action = if !decision.allowed {
            "block"
        } else if decision.violations.is_empty() && decision.not_judged.is_empty() {
            "allow"
        } else {
            "log"
        };
        self.inner.metrics.decision(action, basis_word(basis));
        self.inner
            .events
            .submit_decision_with_projection(&caller.tenant, decision.clone(), None, reviewed_pod_json);
    }

    /// The replay projection of what was reviewed, as JSON, when the decision event is to
    /// carry it (see [`crate::replay`]); empty otherwise. Built only then: an allow already
    /// recorded costs a fingerprint and a lookup.
    fn reviewed_pod_json(
        &self,
        input: &EvalInput<'_>,
        body: &[u8],
        decision: &Decision,
        signatures: &[SignatureVerdict],
    ) -> Bytes {
        if !input.policy.xdr_enabled() || decision.not_evaluated.is_some() {
            return Bytes::new();
        }
        let plain_allow = decision.verdict == Verdict::Allow
            && decision.violations.is_empty()
            && decision.not_judged.is_empty()
            && decision.stage_failures.is_empty();
        if plain_allow {
            let Some(workload) = ReviewedPod::seen_key(input.subject) else {
                return Bytes::new();
            };
            let key = SeenAllows::key(input.tenant, &input.cluster.cluster_id, workload);
            if !self.inner.seen.first_in_window(key, Instant::now()) {
                return Bytes::new();
            }
        }
        // A subject parsed for a policy without Pod Security Standards rules lacks the pod
        // details a draft may read (and the labels): the projection is made from a full parse.
        let full;
        let subject = if input.subject.fields.covers(Fields::ALL) {
            input.subject
        } else {
            match parse(body, Fields::ALL) {
                Ok(s) => {
                    full = s;
                    &full
                }
                Err(e) => {
                    tracing::warn!(error = %e, "no replay projection: the review does not parse in full");
                    return Bytes::new();
                }
            }
        };
        // Read with the parse (an `xdrEnabled` policy's reviews are parsed in full).
        let labels = subject_pod_labels(subject).cloned().unwrap_or_default();
        let Some(mut pod) = ReviewedPod::from_subject(subject, labels) else {
            return Bytes::new();
        };
        pod.digests = decision
            .digests
            .iter()
            .map(|d| (d.image.clone(), d.digest.clone()))
            .collect();
        for v in signatures {
            let verified = match v.outcome {
                SignatureOutcome::Verified => true,
                SignatureOutcome::NotVerified => false,
                // An error decided nothing: replay judges the rule as not judged.
                SignatureOutcome::Error => continue,
            };
            let at = if v.digest.is_empty() { &v.image } else { &v.digest };
            pod.verdicts
                .entry(at.clone())
                .or_default()
                .insert(v.attestor.clone(), verified);
        }
        match pod.to_json() {
            Ok(json) => Bytes::from(json),
            Err(e) => {
                tracing::warn!(error = %e, "no replay projection: it does not serialise");
                Bytes::new()
            }
        }
    }
}

/// On what the decision rests: the failure mode when a stage failed, else the evaluation.
fn basis(mode: FailureMode, decision: &Decision, degraded: &[String]) -> pa::DecisionBasis {
    if !degraded.is_empty() {
        match mode {
            FailureMode::FailOpen => pa::DecisionBasis::FailOpen,
            FailureMode::FailClosed => pa::DecisionBasis::FailClosed,
        }
    } else {
        match decision.not_evaluated {
            None => pa::DecisionBasis::Evaluated,
            Some(NotEvaluated::NamespaceExcluded) => pa::DecisionBasis::ExcludedNamespace,
            Some(_) => pa::DecisionBasis::NotEvaluated,
        }
    }
}

/// The metric label of a basis.
fn basis_word(basis: pa::DecisionBasis) -> &'static str {
    match basis {
        pa::DecisionBasis::Evaluated => "evaluated",
        pa::DecisionBasis::NotEvaluated | pa::DecisionBasis::Unspecified => "not_evaluated",
        pa::DecisionBasis::ExcludedNamespace => "excluded_namespace",
        pa::DecisionBasis::FailOpen => "fail_open",
        pa::DecisionBasis::FailClosed => "fail_closed",
    }
}

/// The response AdmissionReview (JSON) and its warnings: log-only violations and signature
/// rules not judged, then every failed stage with the failure mode that decided.
fn response(subject: &Subject, decision: &Decision, degraded: &[String], mode: FailureMode) -> (Vec<u8>, Vec<String>) {
    let allowed = decision.verdict == Verdict::Allow;
    let mode_word = mode.as_str();
    let mut warnings: Vec<String> = decision.warnings().map(str::to_owned).collect();
    for d in degraded {
        warnings.push(format!("portcullis: {d} ({mode_word})"));
    }
    let mut message = decision.status_message();
    // The other failed stages are the decision's own, already in its status message.
    for d in degraded.iter().filter(|d| d.starts_with("policy: ")) {
        if !message.is_empty() {
            message.push('\n');
        }
        message.push_str(&format!("- {d} ({mode_word})"));
    }
    let status = if !allowed {
        Some(ResponseStatus {
            code: 403,
            reason: Some("Forbidden"),
            message: &message,
        })
    } else if !message.is_empty() {
        Some(ResponseStatus {
            code: 200,
            reason: None,
            message: &message,
        })
    } else {
        None
    };
    let review = ResponseReview {
        api_version: &subject.review_api_version,
        kind: "AdmissionReview",
        response: ResponseBody {
            uid: &subject.uid,
            allowed,
            status,
            warnings: &warnings,
        },
    };
    // Serialising plain structs of strings and bools cannot fail.
    let json = serde_json::to_vec(&review).unwrap_or_default();
    (json, warnings)
}

/// The decision's violations, as the protobuf has them.
fn violations_pb(subject: &Subject, decision: &Decision) -> Vec<pc::Violation> {
    decision
        .violations
        .iter()
        .map(|v| pc::Violation {
            rule_type: v.rule_type.to_owned(),
            properties: v.properties.iter().cloned().collect(),
            action: match v.action {
                Action::None => pc::Action::None,
                Action::Log => pc::Action::Log,
                Action::Block => pc::Action::Block,
            } as i32,
            mitigation: match v.mitigation {
                Mitigation::None => pc::Mitigation::None,
                Mitigation::Log => pc::Mitigation::Log,
                Mitigation::Isolate => pc::Mitigation::Isolate,
                Mitigation::Terminate => pc::Mitigation::Terminate,
            } as i32,
            containers: v.containers.clone(),
            pod: if v.pod_level {
                subject.name.as_str().to_owned()
            } else {
                String::new()
            },
            message: v.message.clone(),
            checks: v.checks.iter().map(|c| (*c).to_owned()).collect(),
        })
        .collect()
}

/// A signature rule not judged, as the protobuf has it.
fn unjudged_pb(u: &Unverified) -> pa::UnjudgedRule {
    pa::UnjudgedRule {
        rule: u.rule.clone(),
        action: match u.action {
            Action::None => pc::Action::None,
            Action::Log => pc::Action::Log,
            Action::Block => pc::Action::Block,
        } as i32,
        image: u.image.clone(),
        digest: u.digest.clone().unwrap_or_default(),
        containers: u.containers.clone(),
        attestors: u.attestors.clone(),
        reason: u.reason.clone(),
    }
}

/// A signature verdict, as the protobuf has it.
fn signature_verdict_pb(v: &SignatureVerdict) -> pa::SignatureVerdict {
    pa::SignatureVerdict {
        image: v.image.clone(),
        digest: v.digest.clone(),
        attestor: v.attestor.clone(),
        verdict: match v.outcome {
            SignatureOutcome::Verified => ps::Verdict::Verified,
            SignatureOutcome::NotVerified => ps::Verdict::NotVerified,
            SignatureOutcome::Error => ps::Verdict::Error,
        } as i32,
        reason: v.reason.clone(),
    }
}

/// The digests the decision used, with where each came from.
fn digests_pb(decision: &Decision) -> Vec<pc::ImageDigest> {
    decision
        .digests
        .iter()
        .map(|d| pc::ImageDigest {
            image: d.image.clone(),
            digest: d.digest.clone(),
            source: if d.digest.is_empty() {
                pc::DigestSource::Unresolved
            } else if d.image.contains('@') {
                pc::DigestSource::Reference
            } else {
                pc::DigestSource::Registry
            } as i32,
        })
        .collect()
}

/// The object under review.
fn workload_of(subject: &Subject) -> pc::WorkloadRef {
    pc::WorkloadRef {
        group: subject.group.as_str().to_owned(),
        version: subject.version.as_str().to_owned(),
        kind: subject.kind.as_str().to_owned(),
        namespace: subject.namespace.as_str().to_owned(),
        name: subject.name.as_str().to_owned(),
        uid: subject
            .object
            .as_ref()
            .map(|o| o.metadata.uid.clone())
            .unwrap_or_default(),
    }
}

/// The object's controller, when it has one.
fn owner_of(subject: &Subject) -> Option<pc::OwnerRef> {
    subject.object.as_ref().and_then(|o| {
        o.metadata
            .owner_references
            .iter()
            .find(|r| r.controller == Some(true))
            .map(|r| pc::OwnerRef {
                api_version: r.api_version.as_str().to_owned(),
                kind: r.kind.as_str().to_owned(),
                name: r.name.as_str().to_owned(),
                uid: r.uid.clone(),
            })
    })
}

/// Time spent per stage.
#[derive(Debug, Default, Clone, Copy)]
struct Timings {
    parse: Duration,
    policy: Duration,
    digests: Duration,
    scans: Duration,
    signature: Duration,
    evaluate: Duration,
}

impl Timings {
    /// As the protobuf has them, with the response's time and the total.
    fn to_pb(self, respond: Duration, total: Duration) -> pa::StageTimings {
        pa::StageTimings {
            parse_us: micros(self.parse),
            policy_us: micros(self.policy),
            digest_resolution_us: micros(self.digests),
            scan_lookup_us: micros(self.scans),
            signature_us: micros(self.signature),
            evaluate_us: micros(self.evaluate),
            respond_us: micros(respond),
            total_us: micros(total),
        }
    }
}

/// Keeps `Arc` in scope for the hook trait objects' users.
pub type SharedDigestStage = Arc<dyn DigestStage>;
/// See [`SharedDigestStage`].
pub type SharedSignatureStage = Arc<dyn SignatureStage>;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

    use portcullis_engine::evaluate::StageFailure;

    use super::*;

    fn subject() -> Subject {
        let body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{
            "uid":"u1","kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE",
            "namespace":"apps","object":{"metadata":{"name":"web"},
            "spec":{"containers":[{"name":"app","image":"registry.example.com/app:1"}]}}}}"#;
        parse(body, Fields::ALL).unwrap()
    }

    fn not_judged(action: Action) -> Unverified {
        Unverified {
            rule: "signed".into(),
            action,
            image: "registry.example.com/app:1".into(),
            digest: None,
            attestors: vec!["release".into()],
            containers: vec!["app".into()],
            reason: NO_VERIFIER.into(),
            message: "imageVerification rule \"signed\" (all of release) not judged in container(s) \"app\" \
                      (block): no signature verifier configured."
                .into(),
        }
    }

    #[test]
    fn a_rule_not_judged_is_in_the_warnings_the_status_and_the_structured_decision() {
        let subject = subject();
        let mut decision = Decision::allowed_without_evaluation(NotEvaluated::Delete);
        decision.not_evaluated = None;
        decision.verdict = Verdict::Block;
        decision.not_judged.push(not_judged(Action::Block));
        decision.stage_failures.push(StageFailure {
            stage: "signature",
            message: NO_VERIFIER.into(),
        });
        let degraded = vec![format!("signature: {NO_VERIFIER}")];
        let (json, warnings) = response(&subject, &decision, &degraded, FailureMode::FailClosed);
        let rule_message = decision.not_judged[0].message.clone();
        assert_eq!(
            warnings,
            [
                rule_message.clone(),
                "portcullis: signature: no signature verifier configured (fail-closed)".to_owned()
            ]
        );
        let json: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(json["response"]["allowed"], false);
        let status = json["response"]["status"]["message"].as_str().unwrap();
        assert!(status.contains(&rule_message), "{status}");
        assert_eq!(
            basis(FailureMode::FailClosed, &decision, &degraded),
            pa::DecisionBasis::FailClosed
        );

        let pb = unjudged_pb(&decision.not_judged[0]);
        assert_eq!(
            (pb.rule.as_str(), pb.action, pb.reason.as_str()),
            ("signed", pc::Action::Block as i32, NO_VERIFIER)
        );
        assert_eq!(
            (pb.containers, pb.attestors, pb.digest),
            (vec!["app".to_owned()], vec!["release".to_owned()], String::new())
        );
    }

    #[test]
    fn a_log_rule_not_judged_only_warns() {
        let subject = subject();
        let mut decision = Decision::allowed_without_evaluation(NotEvaluated::Delete);
        decision.not_evaluated = None;
        decision.not_judged.push(not_judged(Action::Log));
        let (json, warnings) = response(&subject, &decision, &[], FailureMode::FailClosed);
        assert_eq!(warnings, [decision.not_judged[0].message.clone()]);
        let json: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(json["response"]["allowed"], true);
        assert_eq!(
            basis(FailureMode::FailClosed, &decision, &[]),
            pa::DecisionBasis::Evaluated
        );
    }
}
