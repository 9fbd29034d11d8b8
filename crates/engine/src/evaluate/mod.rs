//! Evaluation: a compiled policy judges a [`Subject`](crate::input::Subject) (POLICY.md
//! sections 2-4).
//!
//! [`CompiledPolicy::evaluate`] gives the admission decision, [`CompiledPolicy::evaluate_running`]
//! the continuous-scanning mitigation of a running pod. Everything the engine cannot know by
//! itself (the time, scan results, tag-to-digest resolution, signature verdicts, the cluster's
//! excluded namespaces and trusted images) comes in through [`EvalContext`].
//!
//! Its files, by concern: what the caller supplies (`context.rs`), the decisions it gets
//! back (`decision.rs`), the compiled policy (`compile.rs`), one evaluation's flow and state
//! (`run.rs`), the rule evaluators (`rules.rs`, `signatures.rs`) and the violation messages
//! (`messages.rs`). Every public item is re-exported here.

mod compile;
mod context;
mod decision;
mod messages;
mod rules;
mod run;
mod signatures;

pub use compile::CompiledPolicy;
pub use context::{
    DigestLookup, DigestMap, DigestResolver, EvalContext, FailureMode, NoDigests, SignatureVerdicts, Signatures,
    TrustedImage, VerdictMap, is_excluded_namespace,
};
pub use decision::{
    Decision, ImageDigest, NotEvaluated, RunningDecision, StageFailure, Unverified, Verdict, Violation, failed_stage,
};
pub use rules::DEFAULT_CAPABILITIES;
pub use run::digest_of_image_id;
