//! What evaluation gives: the admission decision, the continuous-scanning judgement, and
//! their violations.

use std::fmt::Write as _;
use std::sync::Arc;

use crate::policy::{Action, Mitigation};

use super::context::FailureMode;

/// The failure-mode rule, written once: what a stage that could not answer leads to under
/// `mode`. Fail-open allows (the answer says what failed), fail-closed blocks.
///
/// Every service applies it through the engine: admission for the stages inside evaluation
/// (scan results, digest resolution: [`CompiledPolicy::evaluate`](super::CompiledPolicy::evaluate)
/// applies it itself) and for those around it ([`Decision::failed_stage`] when the cluster's
/// policy cannot be had, [`Decision::stage_failed`] when a hook such as signature verification
/// does not answer); the signature service is to use it the same way for its own stages. A
/// continuous-scanning judgement ([`RunningDecision`]) has no verdict: there a failed stage
/// keeps the pod's previous state.
pub fn failed_stage(mode: FailureMode) -> Verdict {
    match mode {
        FailureMode::FailOpen => Verdict::Allow,
        FailureMode::FailClosed => Verdict::Block,
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

/// A signature rule that applies to an image but could not be decided: no verdict for an
/// attestor it needs, no verifier, or no digest (see [`Signatures`](super::Signatures) for
/// what it leads to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unverified {
    /// The signature rule's name.
    pub rule: String,
    /// The rule's action (`log` or `block`).
    pub action: Action,
    /// The image as written.
    pub image: String,
    /// Its digest, when known.
    pub digest: Option<String>,
    /// The attestors whose verdict is missing.
    pub attestors: Vec<String>,
    /// The containers running the image.
    pub containers: Vec<String>,
    /// Why it could not be decided, e.g. `no signature verifier configured`.
    pub reason: String,
    /// `imageVerification rule "signed" (all of release) not judged in container(s) "app" (block): <reason>.`
    pub message: String,
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
    /// `scan-results`, `digest-resolution` or `signature`.
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
    /// Offline: signature rules left undecided, without effect on the decision.
    pub unverified: Vec<Unverified>,
    /// At admission: signature rules that apply but could not be judged. A `block` one among
    /// them is also a stage failure (`signature`, unless its digest stage failed), so the
    /// failure mode decided; a `log` one only warns. Empty, unallocated, when every rule was
    /// judged.
    pub not_judged: Vec<Unverified>,
    /// The digests used.
    pub digests: Vec<ImageDigest>,
    /// Stages that could not answer.
    pub stage_failures: Vec<StageFailure>,
}

impl Decision {
    /// Allowed without evaluation, for `why`.
    pub fn allowed_without_evaluation(why: NotEvaluated) -> Decision {
        Decision {
            verdict: Verdict::Allow,
            not_evaluated: Some(why),
            violations: Vec::new(),
            unverified: Vec::new(),
            not_judged: Vec::new(),
            digests: Vec::new(),
            stage_failures: Vec::new(),
        }
    }

    /// The decision when a stage evaluation cannot do without (the cluster's policy) could
    /// not answer: nothing evaluated, the verdict [`failed_stage`] gives.
    pub fn failed_stage(mode: FailureMode) -> Decision {
        Decision {
            verdict: failed_stage(mode),
            not_evaluated: None,
            violations: Vec::new(),
            unverified: Vec::new(),
            not_judged: Vec::new(),
            digests: Vec::new(),
            stage_failures: Vec::new(),
        }
    }

    /// Applies [`failed_stage`] to this decision for a stage outside the evaluation that
    /// could not answer (a hook, such as signature verification): under fail-closed it
    /// blocks; under fail-open the verdict stands.
    pub fn stage_failed(&mut self, mode: FailureMode) {
        if failed_stage(mode) == Verdict::Block {
            self.verdict = Verdict::Block;
        }
    }

    /// The admission warnings: log-only violations, then every signature rule not judged.
    pub fn warnings(&self) -> impl Iterator<Item = &str> {
        self.violations
            .iter()
            .filter(|v| v.action == Action::Log)
            .map(|v| v.message.as_str())
            .chain(self.not_judged.iter().map(|u| u.message.as_str()))
    }

    /// The status message: one `- <message>` line per violation, per signature rule not
    /// judged and per failed stage.
    pub fn status_message(&self) -> String {
        let mut s = String::new();
        for (i, v) in self.violations.iter().enumerate() {
            if i > 0 {
                s.push('\n');
            }
            s.push_str("- ");
            s.push_str(&v.message);
        }
        for u in &self.not_judged {
            if !s.is_empty() {
                s.push('\n');
            }
            s.push_str("- ");
            s.push_str(&u.message);
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn a_failed_stage_allows_under_fail_open_and_blocks_under_fail_closed() {
        assert_eq!(failed_stage(FailureMode::FailOpen), Verdict::Allow);
        assert_eq!(failed_stage(FailureMode::FailClosed), Verdict::Block);

        let open = Decision::failed_stage(FailureMode::FailOpen);
        assert_eq!(open.verdict, Verdict::Allow);
        assert_eq!(open.not_evaluated, None);
        assert_eq!(Decision::failed_stage(FailureMode::FailClosed).verdict, Verdict::Block);

        // A hook failing after evaluation: fail-open keeps the verdict, either way round.
        let mut allowed = Decision::allowed_without_evaluation(NotEvaluated::Delete);
        allowed.stage_failed(FailureMode::FailOpen);
        assert_eq!(allowed.verdict, Verdict::Allow);
        allowed.stage_failed(FailureMode::FailClosed);
        assert_eq!(allowed.verdict, Verdict::Block);
        let mut blocked = Decision::failed_stage(FailureMode::FailClosed);
        blocked.stage_failed(FailureMode::FailOpen);
        assert_eq!(blocked.verdict, Verdict::Block);
    }
}
