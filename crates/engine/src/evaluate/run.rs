//! One evaluation: which subjects are judged at all, and the state of one pod's run against
//! one definition (its containers, digests, and what it found).

use crate::image_ref::{ImageRef, ImageRefError};
use crate::input::{KubeObject, Operation, Subject};
use crate::k8s::{Container, ObjectMeta, PodSpec};
use crate::policy::{Action, Mitigation};

use super::compile::{CompiledPolicy, Definition, Phase};
use super::context::{DigestLookup, EvalContext, FailureMode, is_excluded_namespace};
use super::decision::{
    Decision, ImageDigest, NotEvaluated, RunningDecision, StageFailure, Unverified, Verdict, Violation,
};

/// A container with what evaluation derives from it once.
pub(super) struct ContainerInfo<'a> {
    pub(super) container: &'a Container,
    /// The parsed image reference, parsed on first use (rules on security contexts alone
    /// never need it).
    image: std::cell::OnceCell<Result<ImageRef, ImageRefError>>,
    pub(super) exempt: bool,
    pub(super) digest: Option<DigestLookup>,
}

impl ContainerInfo<'_> {
    /// The container's image reference, parsed.
    pub(super) fn image(&self) -> &Result<ImageRef, ImageRefError> {
        self.image.get_or_init(|| ImageRef::parse(&self.container.image))
    }
}

impl CompiledPolicy {
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
        if is_excluded_namespace(ctx.excluded_namespaces, &subject.namespace) {
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
        if is_excluded_namespace(ctx.excluded_namespaces, &subject.namespace) {
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
}

/// The digest part of a `status.containerStatuses[].imageID` (`repo@sha256:...`): the digest
/// continuous scanning uses for a tag-only image; `None` when the id carries none.
pub fn digest_of_image_id(image_id: &str) -> Option<&str> {
    let (_, digest) = image_id.rsplit_once('@')?;
    digest.contains(':').then_some(digest)
}

/// One evaluation of one pod against one definition.
pub(super) struct Run<'a, 'c> {
    pub(super) def: &'a Definition,
    pub(super) phase: Phase,
    pub(super) subject: &'a Subject,
    pub(super) object: &'a KubeObject,
    pub(super) meta: &'a ObjectMeta,
    pub(super) spec: &'a PodSpec,
    pub(super) ctx: &'a EvalContext<'c>,
    pub(super) containers: Vec<ContainerInfo<'a>>,
    /// Every container of the pod is judged (none exempt, no `only`): PSA scope checks need
    /// not search `containers`.
    pub(super) all_in_scope: bool,
    pub(super) pod_level: bool,
    pub(super) violations: Vec<Violation>,
    pub(super) unverified: Vec<Unverified>,
    pub(super) not_judged: Vec<Unverified>,
    pub(super) digests: Vec<ImageDigest>,
    pub(super) stage_failures: Vec<StageFailure>,
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
            not_judged: Vec::new(),
            digests: Vec::new(),
            stage_failures: Vec::new(),
        }
    }

    /// Whether a container of the pod spec is judged (PSA scope).
    pub(super) fn in_scope(&self, c: &Container) -> bool {
        // PSA checks only ask about the spec's own containers, which are all in `containers`
        // when no `only` filter applies.
        self.all_in_scope
            || self
                .containers
                .iter()
                .any(|i| std::ptr::eq(i.container, c) && !i.exempt)
    }

    /// The digest of container `index`, resolved once and remembered.
    pub(super) fn digest(&mut self, index: usize) -> DigestLookup {
        self.resolve_digest(index);
        self.containers
            .get(index)
            .and_then(|info| info.digest.clone())
            .unwrap_or(DigestLookup::Unknown)
    }

    /// Resolves the digest of container `index` into its [`ContainerInfo::digest`], once.
    pub(super) fn resolve_digest(&mut self, index: usize) {
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
                    .map_or(DigestLookup::Unknown, |d| DigestLookup::Found(d.to_owned())),
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
            DigestLookup::NotFound | DigestLookup::Unknown => {}
        }
        if let Some(info) = self.containers.get_mut(index) {
            info.digest = Some(lookup);
        }
    }

    pub(super) fn stage_failed(&mut self, stage: &'static str, message: &str) {
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

    fn finish(self, failure_mode: FailureMode) -> Decision {
        let blocked = self.violations.iter().any(|v| v.action == Action::Block);
        let mut decision = Decision {
            verdict: if blocked { Verdict::Block } else { Verdict::Allow },
            not_evaluated: None,
            violations: self.violations,
            unverified: self.unverified,
            not_judged: self.not_judged,
            digests: self.digests,
            stage_failures: self.stage_failures,
        };
        if !decision.stage_failures.is_empty() {
            decision.stage_failed(failure_mode);
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::digest_of_image_id;

    #[test]
    fn the_digest_of_an_image_id_is_what_follows_its_last_at_sign() {
        assert_eq!(
            digest_of_image_id("docker.io/library/nginx@sha256:abc"),
            Some("sha256:abc")
        );
        assert_eq!(
            digest_of_image_id("docker-pullable://nginx@sha256:abc"),
            Some("sha256:abc")
        );
        // A bare image id (locally built image) names no registry digest.
        assert_eq!(digest_of_image_id("sha256:abc"), None);
        assert_eq!(digest_of_image_id("nginx@latest"), None);
        assert_eq!(digest_of_image_id(""), None);
    }
}
