//! One review, start to end: limits, parsing, the cluster's policy, scan summaries, the
//! hooks of later stages, evaluation, the response AdmissionReview, the decision event.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis_engine::evaluate::{
    Decision, DigestLookup, DigestMap, DigestResolver, EvalContext, FailureMode, NoDigests, NotEvaluated, Verdict,
    VerdictMap,
};
use portcullis_engine::image_ref::ImageRef;
use portcullis_engine::input::{Subject, parse_document_with};
use portcullis_engine::k8s::Fields;
use portcullis_engine::policy::{Action, Mitigation};
use portcullis_proto::admission::v1 as pa;
use portcullis_proto::common::v1 as pc;
use serde::Serialize;
use time::OffsetDateTime;
use tracing::Instrument as _;

use crate::error::AdmissionError;
use crate::metrics::{Outcome, Transport};
use crate::policies::{ClusterPolicy, PolicyFetchError};
use crate::upstream::ClusterSel;
use crate::{Admission, BoxFuture};

/// The largest AdmissionReview accepted (the API server's own request limit is 3 MiB).
pub const MAX_REVIEW_BYTES: usize = 3 * 1024 * 1024;

/// Resolves tag-only image references to digests (the signature service's resolver, wired
/// by the signature issue). Runs under the digest stage's deadline.
pub trait DigestStage: Send + Sync + 'static {
    /// Digests of `references` (as written in the pod) in `tenant`'s `cluster`; references
    /// left out of the answer are unresolvable.
    fn resolve<'a>(
        &'a self,
        tenant: &'a str,
        cluster_id: &'a str,
        references: &'a [String],
    ) -> BoxFuture<'a, Result<HashMap<String, String>, String>>;
}

/// Verifies image signatures (the signature service, wired by the signature issue). Runs
/// under the signature stage's deadline.
pub trait SignatureStage: Send + Sync + 'static {
    /// Verdicts for `images` (reference as written, digest when known) in `tenant`.
    fn verify<'a>(
        &'a self,
        tenant: &'a str,
        cluster_id: &'a str,
        images: &'a [(String, Option<String>)],
    ) -> BoxFuture<'a, Result<VerdictMap, String>>;
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

/// A resolver over what the digest stage answered; when it failed, every tag-only
/// reference is unavailable (the failure mode decides).
enum StageDigests {
    None,
    Map(DigestMap),
    Failed(String),
}

impl DigestResolver for StageDigests {
    fn resolve(&self, reference: &str, image: &ImageRef) -> DigestLookup {
        match self {
            StageDigests::None => NoDigests.resolve(reference, image),
            StageDigests::Map(map) => map.resolve(reference, image),
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

    async fn review_inner(
        &self,
        caller: &ReviewCaller,
        cluster: Option<ClusterSel>,
        body: &[u8],
        started: Instant,
    ) -> Result<ReviewOutput, AdmissionError> {
        let inner = &self.inner;
        if let Err(limited) = inner.limiter.check(&caller.tenant) {
            inner.metrics.rate_limited();
            return Err(AdmissionError::RateLimited(limited.to_string()));
        }

        // Parse.
        if body.len() > MAX_REVIEW_BYTES {
            return Err(AdmissionError::InvalidArgument(format!(
                "admission_review_json: {} bytes is over the limit of {MAX_REVIEW_BYTES} bytes",
                body.len()
            )));
        }
        // The cluster; its errors come after the document's own.
        let sel = match (&caller.own_cluster, cluster) {
            (Some(own), None) => Ok(ClusterSel::Id(own.clone())),
            (Some(own), Some(ClusterSel::Id(id))) if id != *own => Err(AdmissionError::PermissionDenied(
                "a connector key may act only for its own cluster".into(),
            )),
            (_, Some(sel)) => Ok(sel),
            (None, None) => Err(AdmissionError::InvalidArgument(
                "cluster: required: an id or a name".into(),
            )),
        };
        // A policy held in memory is known before parsing, so the parse reads only what its
        // rules read (a policy without Pod Security Standards rules skips the pod details);
        // otherwise everything is read.
        let cached = sel
            .as_ref()
            .ok()
            .and_then(|sel| inner.policies.cached(&caller.tenant, sel));
        let fields = cached
            .as_ref()
            .and_then(|l| l.policy.policy.as_ref())
            .map_or(Fields::ALL, |p| p.fields());
        let subject = {
            let _s = tracing::debug_span!("parse").entered();
            // The engine refuses any document that is not UTF-8 (it checks once, on the fast
            // path); only then is the byte found, for a message that names it.
            let mut subjects = parse_document_with(body, fields).map_err(|e| {
                AdmissionError::InvalidArgument(match std::str::from_utf8(body) {
                    Err(utf8) => format!("admission_review_json: not UTF-8 (at byte {})", utf8.valid_up_to()),
                    Ok(_) => format!("admission_review_json: {e}"),
                })
            })?;
            if subjects.len() != 1 || subjects.first().is_none_or(|s| s.review_api_version.is_empty()) {
                return Err(AdmissionError::InvalidArgument(
                    "admission_review_json: not an AdmissionReview (admission.k8s.io/v1 or v1beta1, with a request)"
                        .into(),
                ));
            }
            subjects.remove(0)
        };
        if subject.uid.is_empty() {
            return Err(AdmissionError::InvalidArgument(
                "admission_review_json: request.uid: missing".into(),
            ));
        }
        let parsed = Instant::now();

        // The cluster's policy.
        let sel = sel?;
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
        let policy_done = Instant::now();
        let cluster_policy = match lookup {
            Ok(lookup) => {
                inner
                    .metrics
                    .cache_lookup(crate::metrics::CacheKind::Policy, lookup.hit);
                if let Some(own) = &caller.own_cluster
                    && lookup.policy.cluster_id != *own
                {
                    return Err(AdmissionError::PermissionDenied(
                        "a connector key may act only for its own cluster".into(),
                    ));
                }
                lookup.policy
            }
            Err(PolicyFetchError::NotFound(_)) => {
                inner.metrics.cache_lookup(crate::metrics::CacheKind::Policy, false);
                return Err(AdmissionError::PermissionDenied(
                    "no such cluster in this tenant, or not the connector key's own".into(),
                ));
            }
            Err(PolicyFetchError::Unavailable(why)) => {
                inner.metrics.cache_lookup(crate::metrics::CacheKind::Policy, false);
                // No policy can be had: the failure mode of a cluster we know nothing of.
                let cluster_id = match &sel {
                    ClusterSel::Id(id) => id.clone(),
                    ClusterSel::Name(_) => String::new(),
                };
                return Ok(self.degraded_decision(caller, &subject, cluster_id, &why, started, parsed, policy_done));
            }
        };

        let Some(policy) = cluster_policy.policy.clone() else {
            // No policy assigned: nothing to enforce.
            let decision = Decision {
                verdict: Verdict::Allow,
                not_evaluated: Some(NotEvaluated::KindNotEvaluated),
                violations: Vec::new(),
                unverified: Vec::new(),
                digests: Vec::new(),
                stage_failures: Vec::new(),
            };
            let timings = Timings {
                parse: parsed - started,
                policy: policy_done - parsed,
                ..Timings::default()
            };
            return Ok(self.finish(caller, &subject, &cluster_policy, &decision, timings, started, &[]));
        };

        // Later stages, through their hooks, each under its deadline.
        let mut degraded: Vec<String> = Vec::new();
        let digests_started = Instant::now();
        let digests = match &inner.hooks.digests {
            Some(stage) => {
                let tag_only: Vec<String> = images_of(&subject)
                    .into_iter()
                    .filter(|i| ImageRef::parse(i).is_ok_and(|r| r.digest().is_none()))
                    .collect();
                if tag_only.is_empty() {
                    StageDigests::None
                } else {
                    let call = stage.resolve(&caller.tenant, &cluster_policy.cluster_id, &tag_only);
                    match tokio::time::timeout(inner.options.digest_deadline, call).await {
                        Ok(Ok(map)) => StageDigests::Map(DigestMap(map)),
                        Ok(Err(e)) => StageDigests::Failed(e),
                        Err(_) => StageDigests::Failed("deadline exceeded".into()),
                    }
                }
            }
            None => StageDigests::None,
        };
        let digests_time = digests_started.elapsed();
        let signature_started = Instant::now();
        let verdicts = match &inner.hooks.signatures {
            Some(stage) => {
                let images: Vec<(String, Option<String>)> = images_of(&subject)
                    .into_iter()
                    .map(|i| {
                        let d = ImageRef::parse(&i).ok().and_then(|r| r.digest().map(str::to_owned));
                        (i, d)
                    })
                    .collect();
                let call = stage.verify(&caller.tenant, &cluster_policy.cluster_id, &images);
                match tokio::time::timeout(inner.options.signature_deadline, call).await {
                    Ok(Ok(v)) => Some(v),
                    Ok(Err(e)) => {
                        degraded.push(format!("signature: {e}"));
                        None
                    }
                    Err(_) => {
                        degraded.push("signature: deadline exceeded".into());
                        None
                    }
                }
            }
            None => None,
        };
        let signature_time = signature_started.elapsed();

        // Evaluate: from cached scan summaries first; digests it lacked are fetched once
        // under the scan deadline and the evaluation repeated.
        let evaluate = |unavailable: Option<&str>| {
            let _s = tracing::debug_span!("evaluate").entered();
            let view = inner.scans.view(&caller.tenant, unavailable);
            let ctx = EvalContext {
                now: OffsetDateTime::now_utc(),
                scans: &view,
                digests: &digests,
                verdicts: verdicts
                    .as_ref()
                    .map(|v| v as &dyn portcullis_engine::evaluate::SignatureVerdicts),
                excluded_namespaces: &cluster_policy.excluded_namespaces,
                trusted_images: &cluster_policy.trusted_images,
                failure_mode: cluster_policy.failure_mode,
            };
            let decision = policy.evaluate(&subject, &ctx);
            (decision, view.missing(), view.stale())
        };
        let eval_started = Instant::now();
        let (mut decision, missing, stale) = evaluate(None);
        let mut eval_time = eval_started.elapsed();
        let mut scan_time = Duration::ZERO;
        if !stale.is_empty() {
            inner.scans.refresh_in_background(&caller.tenant, stale);
        }
        if !missing.is_empty() {
            inner.metrics.cache_lookup(crate::metrics::CacheKind::Scan, false);
            let scan_started = Instant::now();
            let fetched = inner
                .scans
                .fetch(&caller.tenant, missing, inner.options.scan_deadline)
                .instrument(tracing::debug_span!("scan_lookup"))
                .await;
            scan_time = scan_started.elapsed();
            let again = Instant::now();
            decision = match fetched {
                Ok(()) => evaluate(None).0,
                Err(e) => evaluate(Some(&e)).0,
            };
            eval_time += again.elapsed();
        } else {
            inner.metrics.cache_lookup(crate::metrics::CacheKind::Scan, true);
        }
        if !degraded.is_empty() && cluster_policy.failure_mode == FailureMode::FailClosed {
            decision.verdict = Verdict::Block;
        }
        let timings = Timings {
            parse: parsed - started,
            policy: policy_done - parsed,
            digests: digests_time,
            scans: scan_time,
            signature: signature_time,
            evaluate: eval_time,
        };
        Ok(self.finish(
            caller,
            &subject,
            &cluster_policy,
            &decision,
            timings,
            started,
            &degraded,
        ))
    }

    /// The decision when no policy can be had: the default failure mode.
    #[allow(clippy::too_many_arguments)]
    fn degraded_decision(
        &self,
        caller: &ReviewCaller,
        subject: &Subject,
        cluster_id: String,
        why: &str,
        started: Instant,
        parsed: Instant,
        policy_done: Instant,
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
        let decision = Decision {
            verdict: match failure_mode {
                FailureMode::FailOpen => Verdict::Allow,
                FailureMode::FailClosed => Verdict::Block,
            },
            not_evaluated: None,
            violations: Vec::new(),
            unverified: Vec::new(),
            digests: Vec::new(),
            stage_failures: Vec::new(),
        };
        let timings = Timings {
            parse: parsed - started,
            policy: policy_done - parsed,
            ..Timings::default()
        };
        self.finish(
            caller,
            subject,
            &cluster,
            &decision,
            timings,
            started,
            &[format!("policy: {why}")],
        )
    }

    /// Builds the response and the structured decision, and queues the decision event.
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        caller: &ReviewCaller,
        subject: &Subject,
        cluster: &ClusterPolicy,
        decision: &Decision,
        timings: Timings,
        started: Instant,
        degraded: &[String],
    ) -> ReviewOutput {
        let respond_started = Instant::now();
        let allowed = decision.verdict == Verdict::Allow;
        let mut degraded: Vec<String> = degraded.to_vec();
        for f in &decision.stage_failures {
            degraded.push(format!("{}: {}", f.stage, f.message));
        }
        let fail_mode_word = cluster.failure_mode.as_str();
        let basis = if !degraded.is_empty() {
            match cluster.failure_mode {
                FailureMode::FailOpen => pa::DecisionBasis::FailOpen,
                FailureMode::FailClosed => pa::DecisionBasis::FailClosed,
            }
        } else {
            match decision.not_evaluated {
                None => pa::DecisionBasis::Evaluated,
                Some(NotEvaluated::NamespaceExcluded) => pa::DecisionBasis::ExcludedNamespace,
                Some(_) => pa::DecisionBasis::NotEvaluated,
            }
        };

        let mut warnings: Vec<String> = decision.warnings().map(|v| v.message.clone()).collect();
        for d in &degraded {
            warnings.push(format!("portcullis: {d} ({fail_mode_word})"));
        }
        let mut message = decision.status_message();
        for d in degraded
            .iter()
            .filter(|d| d.starts_with("policy: ") || d.starts_with("signature: "))
        {
            if !message.is_empty() {
                message.push('\n');
            }
            message.push_str(&format!("- {d} ({fail_mode_word})"));
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
        let response_json = serde_json::to_vec(&review).unwrap_or_default();

        let violations: Vec<pc::Violation> = decision
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
            .collect();
        let digests = decision
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
            .collect();
        let object = pc::WorkloadRef {
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
        };
        let owner = subject.object.as_ref().and_then(|o| {
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
        });
        let decided_at = timestamp(OffsetDateTime::now_utc());
        let respond = respond_started.elapsed();
        let decision_pb = pa::Decision {
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
            digests,
            violations,
            warnings,
            degraded,
            timings: Some(pa::StageTimings {
                parse_us: micros(timings.parse),
                policy_us: micros(timings.policy),
                digest_resolution_us: micros(timings.digests),
                scan_lookup_us: micros(timings.scans),
                signature_us: micros(timings.signature),
                evaluate_us: micros(timings.evaluate),
                respond_us: micros(respond),
                total_us: micros(started.elapsed()),
            }),
            decided_at: Some(decided_at),
            operation: subject.operation.as_str().to_owned(),
            subresource: subject.sub_resource.as_str().to_owned(),
            object: Some(object),
            owner,
            user: subject.user.as_str().to_owned(),
        };

        let action = if !allowed {
            "block"
        } else if decision_pb.violations.is_empty() {
            "allow"
        } else {
            "log"
        };
        let basis_word = match basis {
            pa::DecisionBasis::Evaluated => "evaluated",
            pa::DecisionBasis::NotEvaluated | pa::DecisionBasis::Unspecified => "not_evaluated",
            pa::DecisionBasis::ExcludedNamespace => "excluded_namespace",
            pa::DecisionBasis::FailOpen => "fail_open",
            pa::DecisionBasis::FailClosed => "fail_closed",
        };
        self.inner.metrics.decision(action, basis_word);

        // The event: the full decision for anything worth an analyst's look, else the
        // summary (trimmed in the publisher's task, off the answer's path).
        self.inner
            .events
            .submit_decision(&caller.tenant, decision_pb.clone(), None);

        ReviewOutput {
            response_json,
            decision: decision_pb,
        }
    }
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

/// Keeps `Arc` in scope for the hook trait objects' users.
pub type SharedDigestStage = Arc<dyn DigestStage>;
/// See [`SharedDigestStage`].
pub type SharedSignatureStage = Arc<dyn SignatureStage>;
