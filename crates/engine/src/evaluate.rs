//! Evaluation: a compiled policy judges a [`Subject`] (POLICY.md sections 2-4).
//!
//! [`CompiledPolicy::evaluate`] gives the admission decision, [`CompiledPolicy::evaluate_running`]
//! the continuous-scanning mitigation of a running pod. Everything the engine cannot know by
//! itself (the time, scan results, tag-to-digest resolution, signature verdicts, the cluster's
//! excluded namespaces and trusted images) comes in through [`EvalContext`].

use compact_str::CompactString;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use time::OffsetDateTime;

use crate::image_ref::{ImageRef, ImageRefError};
use crate::input::{InputError, KubeObject, Operation, Subject, parse_document_with};
use crate::k8s::{Container, Fields, ObjectMeta, PodSpec};
use crate::policy::{
    Action, AttestorRequirement, CapabilitiesPreset, ConditionOperator, ConditionType, HostNamespace,
    ImageVerificationRule, Mitigation, PolicyError, ResourceFilter, RuleCheck, RuleType, ValidException, ValidPolicy,
    ValidRule,
};
use crate::pss::{self, CheckId, Scope};
use crate::scan::{ScanResults, ScanSummary, ScanType, ScanUnavailable};

/// The container runtime's default capability set (POLICY.md section 3).
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "NET_RAW",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

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
    /// The reference cannot be resolved: it counts as unscanned.
    NotFound,
    /// The resolver failed (registry unreachable, deadline): the failure mode applies.
    Unavailable(String),
}

/// Resolves tag-only references to digests (a registry at admission; a map offline).
pub trait DigestResolver {
    /// The digest of `reference` (as written in the pod), parsed as `image`.
    fn resolve(&self, reference: &str, image: &ImageRef) -> DigestLookup;
}

/// No resolver: tag-only references stay unresolved.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoDigests;

impl DigestResolver for NoDigests {
    fn resolve(&self, _: &str, _: &ImageRef) -> DigestLookup {
        DigestLookup::NotFound
    }
}

/// A fixed map from image reference (as written, or normalised image path) to digest.
#[derive(Debug, Default, Clone)]
pub struct DigestMap(pub HashMap<String, String>);

impl DigestResolver for DigestMap {
    fn resolve(&self, reference: &str, image: &ImageRef) -> DigestLookup {
        self.0
            .get(reference)
            .or_else(|| self.0.get(&image.image_path()))
            .map_or(DigestLookup::NotFound, |d| DigestLookup::Found(d.clone()))
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

/// What a stage that cannot answer leads to: the one definition, in the domain crate.
pub use portcullis_domain::FailureMode;

/// Everything evaluation needs that the engine does not own.
pub struct EvalContext<'a> {
    /// The time of the decision (unscanned-age rules).
    pub now: OffsetDateTime,
    /// Scan results.
    pub scans: &'a dyn ScanResults,
    /// Tag-to-digest resolution.
    pub digests: &'a dyn DigestResolver,
    /// Signature verdicts; `None`: signature rules are reported as unverified.
    pub verdicts: Option<&'a dyn SignatureVerdicts>,
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
            verdicts: None,
            excluded_namespaces: &[],
            trusted_images: &[],
            failure_mode: FailureMode::FailOpen,
        }
    }
}

/// Allow or block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Admitted.
    Allow,
    /// Denied.
    Block,
}

impl Verdict {
    /// `allow` / `block`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Block => "block",
        }
    }
}

/// Why a subject was allowed without evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotEvaluated {
    /// The kind is not a workload.
    KindNotEvaluated,
    /// The namespace is excluded by the cluster's settings.
    NamespaceExcluded,
    /// DELETE is always allowed.
    Delete,
    /// UPDATE that leaves the pod spec as it was.
    PodSpecUnchanged,
    /// UPDATE of an object being deleted.
    BeingDeleted,
    /// A subresource that is not judged.
    Subresource,
    /// A CONNECT other than pods/exec, attach or portforward.
    OtherConnect,
}

impl NotEvaluated {
    /// A short reason.
    pub fn as_str(self) -> &'static str {
        match self {
            NotEvaluated::KindNotEvaluated => "kind not evaluated",
            NotEvaluated::NamespaceExcluded => "namespace excluded",
            NotEvaluated::Delete => "delete",
            NotEvaluated::PodSpecUnchanged => "pod spec unchanged",
            NotEvaluated::BeingDeleted => "being deleted",
            NotEvaluated::Subresource => "subresource not judged",
            NotEvaluated::OtherConnect => "connect not judged",
        }
    }
}

/// One violated rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The rule type (`imageVerification` for signature rules).
    pub rule_type: &'static str,
    /// The rule's properties as written (for signature rules: its name and attestors),
    /// shared with the compiled rule rather than copied into every violation.
    pub properties: Arc<[(String, String)]>,
    /// The admission action.
    pub action: Action,
    /// The continuous mitigation.
    pub mitigation: Mitigation,
    /// The offending containers.
    pub containers: Vec<String>,
    /// Whether the pod itself (a pod-level field or request) is at fault.
    pub pod_level: bool,
    /// PSA check ids, for `podSecurityStandard` and the rules mapped to PSA checks.
    pub checks: Vec<&'static str>,
    /// `containerSecurityContext violates rule with properties { privileged:true } in container(s) "app" (block).`
    pub message: String,
}

/// A signature rule that could not be decided (no verdict for an attestor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unverified {
    /// The signature rule's name.
    pub rule: String,
    /// The image as written.
    pub image: String,
    /// Its digest, when known.
    pub digest: Option<String>,
    /// The attestors whose verdict is missing.
    pub attestors: Vec<String>,
    /// The containers running the image.
    pub containers: Vec<String>,
}

/// An image and the digest the decision used for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageDigest {
    /// The image as written.
    pub image: String,
    /// The digest.
    pub digest: String,
}

/// A stage that could not answer; with `fail-closed` it blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageFailure {
    /// `scan-results` or `digest-resolution`.
    pub stage: &'static str,
    /// What failed.
    pub message: String,
}

/// An admission decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Allow or block.
    pub verdict: Verdict,
    /// `Some` when allowed without evaluation.
    pub not_evaluated: Option<NotEvaluated>,
    /// Every violation, log-only ones included, in rule order.
    pub violations: Vec<Violation>,
    /// Signature rules left undecided.
    pub unverified: Vec<Unverified>,
    /// The digests used.
    pub digests: Vec<ImageDigest>,
    /// Stages that could not answer.
    pub stage_failures: Vec<StageFailure>,
}

impl Decision {
    fn allowed_without_evaluation(why: NotEvaluated) -> Decision {
        Decision {
            verdict: Verdict::Allow,
            not_evaluated: Some(why),
            violations: Vec::new(),
            unverified: Vec::new(),
            digests: Vec::new(),
            stage_failures: Vec::new(),
        }
    }

    /// Log-only violations, as admission warnings.
    pub fn warnings(&self) -> impl Iterator<Item = &Violation> {
        self.violations.iter().filter(|v| v.action == Action::Log)
    }

    /// The status message: one `- <message>` line per violation.
    pub fn status_message(&self) -> String {
        let mut s = String::new();
        for (i, v) in self.violations.iter().enumerate() {
            if i > 0 {
                s.push('\n');
            }
            s.push_str("- ");
            s.push_str(&v.message);
        }
        for f in &self.stage_failures {
            if !s.is_empty() {
                s.push('\n');
            }
            let _ = write!(s, "- {} unavailable: {}", f.stage, f.message);
        }
        s
    }
}

/// The continuous-scanning judgement of a running pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningDecision {
    /// The strongest mitigation of the violations (`none` when compliant or excluded).
    pub mitigation: Mitigation,
    /// Every violation whose mitigation is not `none`.
    pub violations: Vec<Violation>,
    /// The digests used.
    pub digests: Vec<ImageDigest>,
    /// Stages that could not answer (the caller keeps the pod's previous state).
    pub stage_failures: Vec<StageFailure>,
}

#[derive(Debug)]
struct CompiledRule {
    rule: ValidRule,
    /// `{ privileged:true }`, precomputed for messages.
    properties_text: String,
    /// The rule's properties, shared by its violations.
    properties: Arc<[(String, String)]>,
}

#[derive(Debug)]
struct Definition {
    /// `default`, or the namespaced definition's name.
    name: String,
    rules: Vec<CompiledRule>,
    exceptions: Arc<[ValidException]>,
    image_verification: Arc<[ImageVerificationRule]>,
}

/// A validated policy, ready to evaluate; cheap to share between threads.
#[derive(Debug)]
pub struct CompiledPolicy {
    name: String,
    xdr_enabled: bool,
    default: Definition,
    namespaced: Vec<Definition>,
    /// Namespace → index into `namespaced`.
    by_namespace: HashMap<String, usize>,
    /// What its rules read of a pod.
    fields: Fields,
}

/// Which tab's settings apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Admission,
    Continuous,
}

impl CompiledRule {
    fn active(&self, phase: Phase) -> bool {
        match phase {
            Phase::Admission => self.rule.action != Action::None,
            Phase::Continuous => self.rule.mitigation != Mitigation::None && !self.rule.check.is_connect_only(),
        }
    }
}

/// A container with what evaluation derives from it once.
struct ContainerInfo<'a> {
    container: &'a Container,
    /// The parsed image reference, parsed on first use (rules on security contexts alone
    /// never need it).
    image: std::cell::OnceCell<Result<ImageRef, ImageRefError>>,
    exempt: bool,
    digest: Option<DigestLookup>,
}

impl ContainerInfo<'_> {
    /// The container's image reference, parsed.
    fn image(&self) -> &Result<ImageRef, ImageRefError> {
        self.image.get_or_init(|| ImageRef::parse(&self.container.image))
    }
}

impl CompiledPolicy {
    /// Compiles a validated policy.
    pub fn new(valid: ValidPolicy) -> CompiledPolicy {
        let compile_rules = |rules: Vec<ValidRule>| {
            rules
                .into_iter()
                .map(|rule| {
                    let mut properties_text = String::from("{ ");
                    for (i, (k, v)) in rule.properties.iter().enumerate() {
                        if i > 0 {
                            properties_text.push_str(", ");
                        }
                        let _ = write!(properties_text, "{k}:{v}");
                    }
                    properties_text.push_str(" }");
                    let properties = rule.properties.as_slice().into();
                    CompiledRule {
                        rule,
                        properties_text,
                        properties,
                    }
                })
                .collect::<Vec<_>>()
        };
        let default_exceptions: Arc<[ValidException]> = valid.default.exceptions.unwrap_or_default().into();
        let default_signatures: Arc<[ImageVerificationRule]> =
            valid.default.image_verification.unwrap_or_default().into();
        let default = Definition {
            name: "default".to_owned(),
            rules: compile_rules(valid.default.rules),
            exceptions: default_exceptions.clone(),
            image_verification: default_signatures.clone(),
        };
        let mut namespaced = Vec::with_capacity(valid.namespaced.len());
        let mut by_namespace = HashMap::new();
        for def in valid.namespaced {
            let index = namespaced.len();
            for ns in def.namespaces {
                by_namespace.insert(ns, index);
            }
            namespaced.push(Definition {
                name: def.name.unwrap_or_default(),
                rules: compile_rules(def.rules),
                exceptions: def.exceptions.map_or_else(|| default_exceptions.clone(), Into::into),
                image_verification: def
                    .image_verification
                    .map_or_else(|| default_signatures.clone(), Into::into),
            });
        }
        let fields = Fields {
            pod_details: std::iter::once(&default)
                .chain(&namespaced)
                .flat_map(|d| &d.rules)
                .any(|r| r.rule.check.reads_pod_details()),
        };
        CompiledPolicy {
            name: valid.document.name,
            xdr_enabled: valid.document.xdr_enabled,
            default,
            namespaced,
            by_namespace,
            fields,
        }
    }

    /// The parts of a pod this policy's rules read (in any definition and either phase).
    pub fn fields(&self) -> Fields {
        self.fields
    }

    /// Parses a document into subjects for this policy: [`parse_document_with`] reading only
    /// the [`CompiledPolicy::fields`] its rules need. Subjects parsed so are for this policy
    /// (or another whose fields they cover) only.
    pub fn parse_document(&self, json: &[u8]) -> Result<Vec<Subject>, InputError> {
        parse_document_with(json, self.fields)
    }

    /// Parses (JSON or YAML), validates and compiles.
    pub fn from_text(text: &str) -> Result<CompiledPolicy, PolicyError> {
        Ok(CompiledPolicy::new(crate::policy::PolicyDocument::parse_valid(text)?))
    }

    /// The policy's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether decisions and detections are stored in telemetry.
    pub fn xdr_enabled(&self) -> bool {
        self.xdr_enabled
    }

    fn definition(&self, namespace: &str) -> &Definition {
        self.by_namespace
            .get(namespace)
            .and_then(|&i| self.namespaced.get(i))
            .unwrap_or(&self.default)
    }

    /// The name of the definition that applies in `namespace`: a namespaced definition's
    /// name, or `default`.
    pub fn definition_name(&self, namespace: &str) -> &str {
        &self.definition(namespace).name
    }

    /// The admission decision for a subject.
    pub fn evaluate(&self, subject: &Subject, ctx: &EvalContext<'_>) -> Decision {
        // Subjects come from `parse_document` (everything) or from this policy's own.
        debug_assert!(
            subject.fields.covers(self.fields),
            "subject parsed without the fields this policy reads"
        );
        if subject.operation == Operation::Delete {
            return Decision::allowed_without_evaluation(NotEvaluated::Delete);
        }
        if ctx.excluded_namespaces.iter().any(|n| *n == subject.namespace) {
            return Decision::allowed_without_evaluation(NotEvaluated::NamespaceExcluded);
        }
        let def = self.definition(&subject.namespace);
        if subject.operation == Operation::Connect {
            return self.evaluate_connect(def, subject);
        }
        let Some(object) = &subject.object else {
            return Decision::allowed_without_evaluation(NotEvaluated::KindNotEvaluated);
        };
        let Some((meta, spec)) = object.pod(&subject.group, &subject.kind) else {
            return Decision::allowed_without_evaluation(NotEvaluated::KindNotEvaluated);
        };
        let mut only: Option<&[String]> = None;
        if subject.operation == Operation::Update {
            if object.metadata.deletion_timestamp.is_some() {
                return Decision::allowed_without_evaluation(NotEvaluated::BeingDeleted);
            }
            if subject.sub_resource == "ephemeralcontainers" && subject.group.is_empty() && subject.kind == "Pod" {
                only = Some(&subject.added_ephemeral_containers);
            } else if !subject.sub_resource.is_empty() {
                return Decision::allowed_without_evaluation(NotEvaluated::Subresource);
            } else if subject.pod_spec_unchanged {
                return Decision::allowed_without_evaluation(NotEvaluated::PodSpecUnchanged);
            }
        } else if !subject.sub_resource.is_empty() {
            return Decision::allowed_without_evaluation(NotEvaluated::Subresource);
        }
        let mut run = Run::new(def, Phase::Admission, subject, object, meta, spec, ctx, only);
        run.rules();
        run.signatures();
        run.finish(ctx.failure_mode)
    }

    /// The continuous-scanning judgement of a running pod (a Pod object); digests of
    /// tag-only images come from the pod's `status.containerStatuses[].imageID`.
    pub fn evaluate_running(&self, subject: &Subject, ctx: &EvalContext<'_>) -> RunningDecision {
        let nothing = RunningDecision {
            mitigation: Mitigation::None,
            violations: Vec::new(),
            digests: Vec::new(),
            stage_failures: Vec::new(),
        };
        if ctx.excluded_namespaces.iter().any(|n| *n == subject.namespace) {
            return nothing;
        }
        let Some(object) = &subject.object else { return nothing };
        let Some((meta, spec)) = object.pod(&subject.group, &subject.kind) else {
            return nothing;
        };
        let def = self.definition(&subject.namespace);
        let mut run = Run::new(def, Phase::Continuous, subject, object, meta, spec, ctx, None);
        run.rules();
        let mitigation = run
            .violations
            .iter()
            .map(|v| v.mitigation)
            .max()
            .unwrap_or(Mitigation::None);
        RunningDecision {
            mitigation,
            violations: run.violations,
            digests: run.digests,
            stage_failures: run.stage_failures,
        }
    }

    fn evaluate_connect(&self, def: &Definition, subject: &Subject) -> Decision {
        let wanted = match (subject.resource.as_str(), subject.sub_resource.as_str()) {
            ("pods", "exec" | "attach") => RuleCheck::PodExec,
            ("pods", "portforward") => RuleCheck::PortForward,
            _ => return Decision::allowed_without_evaluation(NotEvaluated::OtherConnect),
        };
        let mut decision = Decision::allowed_without_evaluation(NotEvaluated::OtherConnect);
        decision.not_evaluated = None;
        for r in def
            .rules
            .iter()
            .filter(|r| r.rule.check == wanted && r.active(Phase::Admission))
        {
            decision.violations.push(violation(
                r,
                Phase::Admission,
                Vec::new(),
                true,
                &subject.name,
                Vec::new(),
                "",
            ));
        }
        if decision.violations.iter().any(|v| v.action == Action::Block) {
            decision.verdict = Verdict::Block;
        }
        decision
    }
}

/// Builds a violation and its message.
fn violation(
    r: &CompiledRule,
    phase: Phase,
    containers: Vec<String>,
    pod_level: bool,
    pod_name: &str,
    checks: Vec<&'static str>,
    detail: &str,
) -> Violation {
    let enforcement = match phase {
        Phase::Admission => r.rule.action.as_str(),
        Phase::Continuous => r.rule.mitigation.as_str(),
    };
    let mut message = String::with_capacity(96 + detail.len());
    message.push_str(r.rule.rule_type.as_str());
    message.push_str(" violates rule with properties ");
    message.push_str(&r.properties_text);
    message.push_str(" in ");
    write_location(&mut message, &containers, pod_level, pod_name);
    message.push_str(" (");
    message.push_str(enforcement);
    message.push(')');
    if !detail.is_empty() {
        message.push_str(": ");
        message.push_str(detail);
    }
    message.push('.');
    Violation {
        rule_type: r.rule.rule_type.as_str(),
        properties: Arc::clone(&r.properties),
        action: r.rule.action,
        mitigation: r.rule.mitigation,
        containers,
        pod_level,
        checks,
        message,
    }
}

fn write_location(out: &mut String, containers: &[String], pod_level: bool, pod_name: &str) {
    if pod_level || containers.is_empty() {
        out.push_str("pod ");
        push_debug_quoted(out, pod_name);
        if !containers.is_empty() {
            out.push_str(" and ");
        }
    }
    if !containers.is_empty() {
        out.push_str("container(s) ");
        for (i, c) in containers.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            push_debug_quoted(out, c);
        }
    }
}

/// Appends `s` quoted as `{s:?}` writes it. Kubernetes names are printable ASCII without
/// quotes or backslashes, which Debug leaves as they are, so they skip the formatter's
/// per-character escaping (a few percent of a violation-heavy evaluation); anything else
/// goes through it.
fn push_debug_quoted(out: &mut String, s: &str) {
    if s.bytes().all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        let _ = write!(out, "{s:?}");
    }
}

fn host_namespace_set(spec: &PodSpec, which: HostNamespace) -> bool {
    let flag = match which {
        HostNamespace::Network => spec.host_network,
        HostNamespace::Ipc => spec.host_ipc,
        HostNamespace::Pid => spec.host_pid,
    };
    flag == Some(true)
}

fn added_capabilities(c: &Container) -> &[CompactString] {
    c.security_context
        .as_ref()
        .and_then(|s| s.capabilities.as_ref())
        .map_or(&[], |caps| caps.add.as_slice())
}

fn drops_all(c: &Container) -> bool {
    c.security_context
        .as_ref()
        .and_then(|s| s.capabilities.as_ref())
        .is_some_and(|caps| caps.drop.iter().any(|d| d == "ALL"))
}

/// The digest part of a `status.containerStatuses[].imageID` (`repo@sha256:...`).
fn digest_of_image_id(image_id: &str) -> Option<&str> {
    let (_, digest) = image_id.rsplit_once('@')?;
    digest.contains(':').then_some(digest)
}

/// One evaluation of one pod against one definition.
struct Run<'a, 'c> {
    def: &'a Definition,
    phase: Phase,
    subject: &'a Subject,
    object: &'a KubeObject,
    meta: &'a ObjectMeta,
    spec: &'a PodSpec,
    ctx: &'a EvalContext<'c>,
    containers: Vec<ContainerInfo<'a>>,
    /// Every container of the pod is judged (none exempt, no `only`): PSA scope checks need
    /// not search `containers`.
    all_in_scope: bool,
    pod_level: bool,
    violations: Vec<Violation>,
    unverified: Vec<Unverified>,
    digests: Vec<ImageDigest>,
    stage_failures: Vec<StageFailure>,
}

impl<'a, 'c> Run<'a, 'c> {
    #[allow(clippy::too_many_arguments)]
    fn new(
        def: &'a Definition,
        phase: Phase,
        subject: &'a Subject,
        object: &'a KubeObject,
        meta: &'a ObjectMeta,
        spec: &'a PodSpec,
        ctx: &'a EvalContext<'c>,
        only: Option<&[String]>,
    ) -> Self {
        let namespace = subject.namespace.as_str();
        let mut scratch = String::new();
        let may_exempt = !ctx.trusted_images.is_empty() || !def.exceptions.is_empty();
        let mut containers: Vec<ContainerInfo<'a>> =
            Vec::with_capacity(spec.init_containers.len() + spec.containers.len() + spec.ephemeral_containers.len());
        containers.extend(
            spec.all_containers()
                .filter(|(_, c)| only.is_none_or(|names| names.iter().any(|n| *n == c.name)))
                .map(|(_, container)| {
                    let mut info = ContainerInfo {
                        container,
                        image: std::cell::OnceCell::new(),
                        exempt: false,
                        digest: None,
                    };
                    info.exempt = may_exempt
                        && info.image().as_ref().is_ok_and(|image| {
                            ctx.trusted_images.iter().any(|t| t.matches(image))
                                || def.exceptions.iter().any(|e| {
                                    e.namespaces.as_ref().is_none_or(|n| n.iter().any(|x| x == namespace))
                                        && e.operator.holds(e.field.value_of(image, &mut scratch), &e.value)
                                })
                        });
                    info
                }),
        );
        // A pod-level rule is skipped only when the pod has containers and all are exempt.
        let pod_level = only.is_none() && (containers.is_empty() || containers.iter().any(|c| !c.exempt));
        let all_in_scope = only.is_none() && containers.iter().all(|c| !c.exempt);
        Run {
            def,
            phase,
            subject,
            object,
            meta,
            spec,
            ctx,
            containers,
            all_in_scope,
            pod_level,
            violations: Vec::new(),
            unverified: Vec::new(),
            digests: Vec::new(),
            stage_failures: Vec::new(),
        }
    }

    /// Whether a container of the pod spec is judged (PSA scope).
    fn in_scope(&self, c: &Container) -> bool {
        // PSA checks only ask about the spec's own containers, which are all in `containers`
        // when no `only` filter applies.
        self.all_in_scope
            || self
                .containers
                .iter()
                .any(|i| std::ptr::eq(i.container, c) && !i.exempt)
    }

    fn rules(&mut self) {
        let (def, phase) = (self.def, self.phase);
        for r in def.rules.iter().filter(|r| r.active(phase)) {
            match &r.rule.check {
                RuleCheck::HostNamespace(which) => {
                    if self.pod_level && host_namespace_set(self.spec, *which) {
                        self.push(r, Vec::new(), true, Vec::new(), "");
                    }
                }
                RuleCheck::Privileged => self.psa_rule(r, &[CheckId::Privileged]),
                RuleCheck::AllowPrivilegeEscalation => self.psa_rule(r, &[CheckId::AllowPrivilegeEscalation]),
                RuleCheck::RunAsRoot => self.psa_rule(r, &[CheckId::RunAsNonRoot, CheckId::RunAsUser]),
                RuleCheck::Capabilities(CapabilitiesPreset::Baseline) => {
                    self.psa_rule(r, &[CheckId::CapabilitiesBaseline])
                }
                RuleCheck::Capabilities(CapabilitiesPreset::Restricted) => {
                    if self.spec.is_windows() {
                        // PSA skips capabilities_restricted for Windows pods; its limit on
                        // added capabilities still applies here (POLICY.md, Windows pods).
                        let bad =
                            self.bad_containers(|c| added_capabilities(c).iter().any(|a| a != "NET_BIND_SERVICE"));
                        self.psa_rule_with(r, &[CheckId::CapabilitiesBaseline], bad, "capabilities_restricted");
                    } else {
                        self.psa_rule(r, &[CheckId::CapabilitiesRestricted, CheckId::CapabilitiesBaseline]);
                    }
                }
                RuleCheck::Capabilities(CapabilitiesPreset::RestrictNondefaults) => {
                    let bad = self.bad_containers(|c| {
                        added_capabilities(c)
                            .iter()
                            .any(|a| !DEFAULT_CAPABILITIES.contains(&a.as_str()))
                    });
                    self.push_containers(r, bad);
                }
                RuleCheck::Capabilities(CapabilitiesPreset::RestrictAll) => {
                    let windows = self.spec.is_windows();
                    let bad = self.bad_containers(|c| (!windows && !drops_all(c)) || !added_capabilities(c).is_empty());
                    self.push_containers(r, bad);
                }
                RuleCheck::WritableRootFilesystem => {
                    let bad = self.bad_containers(|c| {
                        c.security_context.as_ref().and_then(|s| s.read_only_root_filesystem) != Some(true)
                    });
                    self.push_containers(r, bad);
                }
                RuleCheck::ImageField { field, operator, value } => {
                    let mut bad = Vec::new();
                    let mut invalid = Vec::new();
                    let mut scratch = String::new();
                    for info in self.containers.iter().filter(|i| !i.exempt) {
                        match info.image() {
                            Ok(image) => {
                                if operator.holds(field.value_of(image, &mut scratch), value) {
                                    bad.push(info.container.name.as_str().to_owned());
                                }
                            }
                            Err(_) => {
                                bad.push(info.container.name.as_str().to_owned());
                                invalid.push(format!("{:?}", info.container.image));
                            }
                        }
                    }
                    if !bad.is_empty() {
                        let detail = if invalid.is_empty() {
                            String::new()
                        } else {
                            format!("invalid image reference {}", invalid.join(", "))
                        };
                        self.push(r, bad, false, Vec::new(), &detail);
                    }
                }
                RuleCheck::Vulnerabilities { .. }
                | RuleCheck::Cvss { .. }
                | RuleCheck::Malware
                | RuleCheck::Secrets
                | RuleCheck::Unscanned { .. } => self.scan_rule(r),
                // Judged on CONNECT requests only (see `evaluate_connect`).
                RuleCheck::PodExec | RuleCheck::PortForward => {}
                RuleCheck::PodSecurityStandard(level) => {
                    let scope_fn = |c: &Container| self.in_scope(c);
                    let scope = Scope {
                        container: &scope_fn,
                        pod_level: self.pod_level,
                    };
                    let failures = pss::evaluate_level(*level, self.meta, self.spec, &scope);
                    if !failures.is_empty() {
                        let containers = self.union_containers(failures.iter().map(|f| f.containers.as_slice()));
                        let pod_level = failures.iter().any(|f| f.pod_level);
                        let checks = failures.iter().map(|f| f.id.as_str()).collect();
                        let mut detail = String::new();
                        for (i, f) in failures.iter().enumerate() {
                            if i > 0 {
                                detail.push_str("; ");
                            }
                            for part in [f.id.as_str(), " (", f.reason, ": ", &f.detail, ")"] {
                                detail.push_str(part);
                            }
                        }
                        self.push(r, containers, pod_level, checks, &detail);
                    }
                }
            }
        }
    }

    /// A rule defined as exactly some PSA checks.
    fn psa_rule(&mut self, r: &CompiledRule, ids: &[CheckId]) {
        self.psa_rule_with(r, ids, Vec::new(), "");
    }

    /// PSA checks plus containers found bad by our own extra condition (named `extra_id`).
    fn psa_rule_with(&mut self, r: &CompiledRule, ids: &[CheckId], extra: Vec<String>, extra_id: &'static str) {
        let scope_fn = |c: &Container| self.in_scope(c);
        let scope = Scope {
            container: &scope_fn,
            pod_level: self.pod_level,
        };
        let failures: Vec<pss::CheckFailure> = ids
            .iter()
            .filter_map(|id| pss::check(*id, self.meta, self.spec, &scope))
            .collect();
        if failures.is_empty() && extra.is_empty() {
            return;
        }
        let containers = self.union_containers(
            failures
                .iter()
                .map(|f| f.containers.as_slice())
                .chain(std::iter::once(extra.as_slice())),
        );
        let pod_level = failures.iter().any(|f| f.pod_level);
        let mut checks: Vec<&'static str> = failures.iter().map(|f| f.id.as_str()).collect();
        if !extra.is_empty() {
            checks.push(extra_id);
        }
        self.push(r, containers, pod_level, checks, "");
    }

    /// The in-scope containers named in any of `lists`, in visiting order, each once.
    fn union_containers<'l>(&self, lists: impl Iterator<Item = &'l [String]> + Clone) -> Vec<String> {
        self.containers
            .iter()
            .map(|i| &i.container.name)
            .filter(|name| lists.clone().any(|l| l.iter().any(|n| n == *name)))
            .fold(Vec::new(), |mut acc, name| {
                if !acc.iter().any(|n| n == name) {
                    acc.push(name.as_str().to_owned());
                }
                acc
            })
    }

    fn bad_containers(&self, bad: impl Fn(&Container) -> bool) -> Vec<String> {
        self.containers
            .iter()
            .filter(|i| !i.exempt && bad(i.container))
            .map(|i| i.container.name.as_str().to_owned())
            .collect()
    }

    fn push_containers(&mut self, r: &CompiledRule, bad: Vec<String>) {
        if !bad.is_empty() {
            self.push(r, bad, false, Vec::new(), "");
        }
    }

    fn push(
        &mut self,
        r: &CompiledRule,
        containers: Vec<String>,
        pod_level: bool,
        checks: Vec<&'static str>,
        detail: &str,
    ) {
        self.violations.push(violation(
            r,
            self.phase,
            containers,
            pod_level,
            &self.subject.name,
            checks,
            detail,
        ));
    }

    /// The digest of container `index`, resolved once and remembered.
    fn digest(&mut self, index: usize) -> DigestLookup {
        self.resolve_digest(index);
        self.containers
            .get(index)
            .and_then(|info| info.digest.clone())
            .unwrap_or(DigestLookup::NotFound)
    }

    /// Resolves the digest of container `index` into its [`ContainerInfo::digest`], once.
    fn resolve_digest(&mut self, index: usize) {
        let Some(info) = self.containers.get(index) else {
            return;
        };
        if info.digest.is_some() {
            return;
        }
        let lookup = match info.image() {
            Err(_) => DigestLookup::NotFound,
            Ok(image) => match image.digest() {
                Some(d) => DigestLookup::Found(d.to_owned()),
                None if self.phase == Phase::Continuous => self
                    .object
                    .status
                    .iter()
                    .flat_map(|s| {
                        s.container_statuses
                            .iter()
                            .chain(&s.init_container_statuses)
                            .chain(&s.ephemeral_container_statuses)
                    })
                    .find(|s| s.name == info.container.name)
                    .and_then(|s| digest_of_image_id(&s.image_id))
                    .map_or(DigestLookup::NotFound, |d| DigestLookup::Found(d.to_owned())),
                None => self.ctx.digests.resolve(&info.container.image, image),
            },
        };
        match &lookup {
            DigestLookup::Found(d) => {
                if !self.digests.iter().any(|x| x.image == info.container.image) {
                    self.digests.push(ImageDigest {
                        image: info.container.image.clone(),
                        digest: d.clone(),
                    });
                }
            }
            DigestLookup::Unavailable(msg) => self.stage_failed("digest-resolution", msg),
            DigestLookup::NotFound => {}
        }
        if let Some(info) = self.containers.get_mut(index) {
            info.digest = Some(lookup);
        }
    }

    fn stage_failed(&mut self, stage: &'static str, message: &str) {
        if !self
            .stage_failures
            .iter()
            .any(|f| f.stage == stage && f.message == message)
        {
            self.stage_failures.push(StageFailure {
                stage,
                message: message.to_owned(),
            });
        }
    }

    fn scan_rule(&mut self, r: &CompiledRule) {
        let scan_type = match &r.rule.check {
            RuleCheck::Malware => ScanType::Malware,
            RuleCheck::Secrets => ScanType::Secret,
            RuleCheck::Unscanned { scan_type, .. } => *scan_type,
            _ => ScanType::Vulnerability,
        };
        let mut bad = Vec::new();
        for index in 0..self.containers.len() {
            if self.containers.get(index).is_none_or(|i| i.exempt) {
                continue;
            }
            // Borrowed, not cloned: this runs for every scan rule and container.
            self.resolve_digest(index);
            let scans = self.ctx.scans;
            let summary: Option<&ScanSummary> = match self.containers.get(index).and_then(|i| i.digest.as_ref()) {
                Some(DigestLookup::Found(digest)) => match scans.latest(digest, scan_type) {
                    Ok(s) => s,
                    Err(ScanUnavailable(msg)) => {
                        self.stage_failed("scan-results", &msg);
                        continue;
                    }
                },
                Some(DigestLookup::NotFound) | None => None,
                Some(DigestLookup::Unavailable(_)) => continue,
            };
            if self.scan_violates(&r.rule.check, summary)
                && let Some(info) = self.containers.get(index)
            {
                bad.push(info.container.name.as_str().to_owned());
            }
        }
        self.push_containers(r, bad);
    }

    fn scan_violates(&self, check: &RuleCheck, summary: Option<&ScanSummary>) -> bool {
        match (check, summary) {
            (RuleCheck::Unscanned { days, .. }, s) => match (s, days) {
                (None, _) => true,
                (Some(s), Some(days)) => self.ctx.now - s.scanned_at > time::Duration::days(i64::from(*days)),
                (Some(_), None) => false,
            },
            (_, None) => false,
            (RuleCheck::Vulnerabilities { max }, Some(s)) => s.max_severity.is_some_and(|worst| worst > *max),
            (RuleCheck::Cvss { metric, value, max }, Some(s)) => s
                .max_severity_with(*metric, value)
                .is_some_and(|worst| max.is_none_or(|m| worst > m)),
            (RuleCheck::Malware | RuleCheck::Secrets, Some(s)) => s.findings > 0,
            _ => false,
        }
    }

    /// Image signature verification (POLICY.md section 4, point 6).
    fn signatures(&mut self) {
        let def = self.def;
        for rule in def.image_verification.iter() {
            // Group containers by image: each image is judged once per rule.
            let mut images: Vec<(usize, Vec<String>)> = Vec::new();
            for (index, info) in self.containers.iter().enumerate() {
                let trusted = info
                    .image()
                    .as_ref()
                    .is_ok_and(|i| self.ctx.trusted_images.iter().any(|t| t.matches(i)));
                if trusted {
                    continue;
                }
                let first = images.iter_mut().find(|(j, _)| {
                    self.containers
                        .get(*j)
                        .is_some_and(|other| other.container.image == info.container.image)
                });
                match first {
                    Some((_, names)) => names.push(info.container.name.as_str().to_owned()),
                    None => images.push((index, vec![info.container.name.as_str().to_owned()])),
                }
            }
            for (index, names) in images {
                self.signature_rule(rule, index, names);
            }
        }
    }

    fn signature_rule(&mut self, rule: &ImageVerificationRule, index: usize, names: Vec<String>) {
        let Some(info) = self.containers.get(index) else { return };
        let applies = match info.image() {
            Ok(image) => signature_rule_applies(rule, image),
            // An unparseable reference matches no condition: a rule without match
            // conditions still applies to it, and it cannot be verified.
            Err(_) => !rule.conditions.iter().any(|c| c.condition_type == ConditionType::Match),
        };
        if !applies {
            return;
        }
        let image_text = info.container.image.clone();
        let failure = match info.image() {
            Err(_) => Some(format!("invalid image reference {image_text:?}")),
            Ok(image) if rule.require_digest && image.digest().is_none() => {
                Some("the image is given by tag alone and the rule requires a digest".to_owned())
            }
            Ok(_) => None,
        };
        if let Some(reason) = failure {
            self.violations.push(signature_violation(rule, names, &reason));
            return;
        }
        let digest = match self.digest(index) {
            DigestLookup::Found(d) => Some(d),
            DigestLookup::NotFound => None,
            DigestLookup::Unavailable(_) => return,
        };
        let Some(verdicts) = self.ctx.verdicts else {
            self.unverified.push(Unverified {
                rule: rule.name.clone(),
                image: image_text,
                digest,
                attestors: rule.attestors.names().to_vec(),
                containers: names,
            });
            return;
        };
        let results: Vec<(&String, Option<bool>)> = rule
            .attestors
            .names()
            .iter()
            .map(|a| (a, verdicts.verdict(&image_text, digest.as_deref(), a)))
            .collect();
        let unknown: Vec<String> = results
            .iter()
            .filter(|(_, v)| v.is_none())
            .map(|(a, _)| (*a).clone())
            .collect();
        let invalid: Vec<&str> = results
            .iter()
            .filter(|(_, v)| *v == Some(false))
            .map(|(a, _)| a.as_str())
            .collect();
        let passed = match &rule.attestors {
            AttestorRequirement::All(_) => invalid.is_empty() && unknown.is_empty(),
            AttestorRequirement::Any(_) => results.iter().any(|(_, v)| *v == Some(true)),
        };
        if passed {
            return;
        }
        let decided_failure = match &rule.attestors {
            AttestorRequirement::All(_) => !invalid.is_empty(),
            AttestorRequirement::Any(_) => unknown.is_empty(),
        };
        if decided_failure {
            let reason = format!("no valid signature by {}", invalid.join(", "));
            self.violations.push(signature_violation(rule, names, &reason));
        } else if digest.is_none() {
            self.violations.push(signature_violation(
                rule,
                names,
                "the image's digest could not be resolved",
            ));
        } else {
            self.unverified.push(Unverified {
                rule: rule.name.clone(),
                image: image_text,
                digest,
                attestors: unknown,
                containers: names,
            });
        }
    }

    fn finish(self, failure_mode: FailureMode) -> Decision {
        let blocked = self.violations.iter().any(|v| v.action == Action::Block)
            || (failure_mode == FailureMode::FailClosed && !self.stage_failures.is_empty());
        Decision {
            verdict: if blocked { Verdict::Block } else { Verdict::Allow },
            not_evaluated: None,
            violations: self.violations,
            unverified: self.unverified,
            digests: self.digests,
            stage_failures: self.stage_failures,
        }
    }
}

fn signature_rule_applies(rule: &ImageVerificationRule, image: &ImageRef) -> bool {
    let mut repository = None;
    let mut holds = |c: &crate::policy::Condition| {
        let subject: &str = match c.resource_filter {
            ResourceFilter::Registry => image.registry(),
            ResourceFilter::Repository => repository.get_or_insert_with(|| image.repository()).as_str(),
        };
        match c.operator {
            ConditionOperator::Equals => subject == c.value,
            ConditionOperator::BeginsWith => subject.starts_with(&c.value),
            ConditionOperator::EndsWith => subject.ends_with(&c.value),
            ConditionOperator::Contains => subject.contains(&c.value),
        }
    };
    let mut matched = true;
    for c in &rule.conditions {
        let h = holds(c);
        match c.condition_type {
            ConditionType::Exclude if h => return false,
            ConditionType::Match if !h => matched = false,
            _ => {}
        }
    }
    matched
}

fn signature_violation(rule: &ImageVerificationRule, containers: Vec<String>, reason: &str) -> Violation {
    let (mode, names) = match &rule.attestors {
        AttestorRequirement::All(n) => ("all", n),
        AttestorRequirement::Any(n) => ("any", n),
    };
    let attestors = names.join(", ");
    let action = rule.action.action();
    let mut message = format!(
        "imageVerification violates rule {:?} ({mode} of {attestors}) in ",
        rule.name
    );
    write_location(&mut message, &containers, false, "");
    let _ = write!(message, " ({}): {reason}.", action.as_str());
    Violation {
        rule_type: "imageVerification",
        properties: [("name".to_owned(), rule.name.clone()), (mode.to_owned(), attestors)].into(),
        action,
        mitigation: Mitigation::None,
        containers,
        pod_level: false,
        checks: Vec::new(),
        message,
    }
}

impl RuleType {
    /// Whether rules of this type are judged per container.
    pub fn is_container_level(self) -> bool {
        !matches!(
            self,
            RuleType::PodSecurityContext | RuleType::Podexec | RuleType::Portforward | RuleType::PodSecurityStandard
        )
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::push_debug_quoted;

    fn quoted(s: &str) -> String {
        let mut out = String::new();
        push_debug_quoted(&mut out, s);
        out
    }

    proptest! {
        /// Messages quote names exactly as `{:?}` does, whatever the name.
        #[test]
        fn quoting_is_what_debug_writes(s in any::<String>()) {
            prop_assert_eq!(quoted(&s), format!("{s:?}"));
        }

        /// The same over printable ASCII, where the fast path mostly applies.
        #[test]
        fn quoting_printable_ascii_is_what_debug_writes(s in "[ -~]{0,40}") {
            prop_assert_eq!(quoted(&s), format!("{s:?}"));
        }
    }

    #[test]
    fn quoting_of_names_that_need_escapes() {
        for s in ["app", "", "a\"b", "a\\b", "tab\there", "é", "\u{7f}", "line\n", "~ !"] {
            assert_eq!(quoted(s), format!("{s:?}"), "{s:?}");
        }
    }
}
