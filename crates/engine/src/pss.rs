//! Pod Security Standards v1.37, exactly as Pod Security Admission decides.

use crate::k8s::{Container, ObjectMeta, PodSpec};

/// A Pod Security Standards level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    /// `baseline`.
    Baseline,
    /// `restricted` (includes the baseline checks PSA keeps at that level).
    Restricted,
}

/// One PSA check, by its PSA id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckId {
    /// `privileged`.
    Privileged,
}

impl CheckId {
    /// PSA's id of the check (`hostNamespaces`, `capabilities_baseline`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            CheckId::Privileged => "privileged",
        }
    }
}

/// What part of a pod a check may look at: exceptions take containers out of scope, and
/// pod-level fields out of scope only when every container is exempt.
pub struct Scope<'a> {
    /// Whether a container is in scope (false: its image matches an exception).
    pub container: &'a dyn Fn(&Container) -> bool,
    /// Whether pod-level fields are in scope.
    pub pod_level: bool,
}

/// A failed check, in PSA's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckFailure {
    /// The check.
    pub id: CheckId,
    /// PSA's forbidden reason (`privileged`).
    pub reason: String,
    /// PSA's forbidden detail (`container "app" must not set securityContext.privileged=true`).
    pub detail: String,
    /// Names of the offending containers, in visiting order, each once.
    pub containers: Vec<String>,
    /// Whether a pod-level field is at fault.
    pub pod_level: bool,
}

/// Runs one check against a pod.
pub fn check(id: CheckId, meta: &ObjectMeta, spec: &PodSpec, scope: &Scope<'_>) -> Option<CheckFailure> {
    let _ = (id, meta, spec, scope);
    None
}

/// Runs every check of a level, in PSA's order; empty when the pod passes.
pub fn evaluate_level(level: Level, meta: &ObjectMeta, spec: &PodSpec, scope: &Scope<'_>) -> Vec<CheckFailure> {
    let _ = (level, meta, spec, scope);
    Vec::new()
}
