//! The typed form of rule statements: what each rule checks, after validation.

use crate::image_ref::ImageRef;
use crate::pss::Level;
use crate::scan::{CvssMetric, ScanType, Severity};

use super::document::ExceptionType;

/// A host namespace of the `podSecurityContext` rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HostNamespace {
    /// `hostNetwork`.
    Network,
    /// `hostIPC`.
    Ipc,
    /// `hostPID`.
    Pid,
}

/// The presets of `capabilities-rule`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CapabilitiesPreset {
    /// Every added capability is in the container runtime's default set.
    RestrictNondefaults,
    /// PSA's `capabilities_baseline`.
    Baseline,
    /// PSA's `capabilities_restricted` plus `capabilities_baseline`.
    Restricted,
    /// `drop: [ALL]` and nothing added.
    RestrictAll,
}

/// The part of an image reference that a string rule or exception tests.
pub type ImageField = ExceptionType;

impl ExceptionType {
    /// The name as written in documents (`imagePath`).
    pub fn as_str(self) -> &'static str {
        match self {
            ExceptionType::Registry => "registry",
            ExceptionType::Image => "image",
            ExceptionType::Tag => "tag",
            ExceptionType::ImagePath => "imagePath",
        }
    }

    /// The value of this field for a parsed reference (`imagePath` is built on demand).
    pub fn value_of<'a>(self, image: &'a ImageRef, scratch: &'a mut String) -> &'a str {
        match self {
            ExceptionType::Registry => image.registry(),
            ExceptionType::Image => image.image(),
            ExceptionType::Tag => image.tag(),
            ExceptionType::ImagePath => {
                image.write_image_path(scratch);
                scratch.as_str()
            }
        }
    }
}

/// String operators of image rules and exceptions (case-sensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StringOperator {
    /// `equals`.
    Equals,
    /// `not-equals`.
    NotEquals,
    /// `contains`.
    Contains,
    /// `not-contains`.
    NotContains,
    /// `starts-with`.
    StartsWith,
}

impl StringOperator {
    /// Parses the key as written (`starts-with`).
    pub fn parse(key: &str) -> Option<StringOperator> {
        Some(match key {
            "equals" => StringOperator::Equals,
            "not-equals" => StringOperator::NotEquals,
            "contains" => StringOperator::Contains,
            "not-contains" => StringOperator::NotContains,
            "starts-with" => StringOperator::StartsWith,
            _ => return None,
        })
    }

    /// The key as written (`starts-with`).
    pub fn as_str(self) -> &'static str {
        match self {
            StringOperator::Equals => "equals",
            StringOperator::NotEquals => "not-equals",
            StringOperator::Contains => "contains",
            StringOperator::NotContains => "not-contains",
            StringOperator::StartsWith => "starts-with",
        }
    }

    /// Whether the operator holds for `subject` against `value`.
    pub fn holds(self, subject: &str, value: &str) -> bool {
        match self {
            StringOperator::Equals => subject == value,
            StringOperator::NotEquals => subject != value,
            StringOperator::Contains => subject.contains(value),
            StringOperator::NotContains => !subject.contains(value),
            StringOperator::StartsWith => subject.starts_with(value),
        }
    }

    /// The keys, for error messages (each [`StringOperator::as_str`] of one operator).
    pub const KEYS: &'static [&'static str] = &["equals", "not-equals", "contains", "not-contains", "starts-with"];
}

/// What one rule checks.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleCheck {
    /// The pod sets a host namespace field true (pod-level).
    HostNamespace(HostNamespace),
    /// Effective `privileged` is true.
    Privileged,
    /// Effective `allowPrivilegeEscalation` is not explicitly false.
    AllowPrivilegeEscalation,
    /// PSA's runAsNonRoot and runAsUser checks.
    RunAsRoot,
    /// Effective `readOnlyRootFilesystem` is not true.
    WritableRootFilesystem,
    /// A capabilities preset is broken.
    Capabilities(CapabilitiesPreset),
    /// A string operator holds for an image field.
    ImageField {
        /// The field.
        field: ImageField,
        /// The operator.
        operator: StringOperator,
        /// The operand.
        value: String,
    },
    /// A vulnerability finding more severe than `max`.
    Vulnerabilities {
        /// The most severe finding allowed.
        max: Severity,
    },
    /// A finding with a CVSS v3 metric value (and more severe than `max` when given).
    Cvss {
        /// The metric.
        metric: CvssMetric,
        /// The metric value, lower-case (`network`, `low`, `high`, ...).
        value: &'static str,
        /// The most severe such finding allowed.
        max: Option<Severity>,
    },
    /// Any malware finding.
    Malware,
    /// Any secret finding.
    Secrets,
    /// No scan of that type, or the newest is older than `days`.
    Unscanned {
        /// The scan type.
        scan_type: ScanType,
        /// The greatest allowed age in days.
        days: Option<u32>,
    },
    /// CONNECT to pods/exec or pods/attach.
    PodExec,
    /// CONNECT to pods/portforward.
    PortForward,
    /// A Pod Security Standards level.
    PodSecurityStandard(Level),
}

impl RuleCheck {
    /// Whether the rule is about the pod rather than its containers (POLICY.md section 4).
    pub fn is_pod_level(&self) -> bool {
        matches!(
            self,
            RuleCheck::HostNamespace(_) | RuleCheck::PodExec | RuleCheck::PortForward
        )
    }

    /// Whether the rule reads image scan results.
    pub fn needs_scan_results(&self) -> bool {
        matches!(
            self,
            RuleCheck::Vulnerabilities { .. }
                | RuleCheck::Cvss { .. }
                | RuleCheck::Malware
                | RuleCheck::Secrets
                | RuleCheck::Unscanned { .. }
        )
    }

    /// Whether the rule reads the pod details ([`crate::k8s::Fields`]): only the Pod
    /// Security Standards checks do (the other rules' PSA checks read host namespaces and
    /// security contexts, which every parse reads).
    pub fn reads_pod_details(&self) -> bool {
        matches!(self, RuleCheck::PodSecurityStandard(_))
    }

    /// Whether the rule judges CONNECT requests only (never running pods).
    pub fn is_connect_only(&self) -> bool {
        matches!(self, RuleCheck::PodExec | RuleCheck::PortForward)
    }
}
