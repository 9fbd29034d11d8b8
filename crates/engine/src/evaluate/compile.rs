//! A validated policy compiled for evaluation: its definitions, and each rule with its
//! message text precomputed.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use time::OffsetDateTime;

use crate::input::{InputError, Subject, parse_document_with};
use crate::k8s::Fields;
use crate::policy::{Action, ImageVerificationRule, Mitigation, PolicyError, ValidException, ValidPolicy, ValidRule};

#[derive(Debug)]
pub(super) struct CompiledRule {
    pub(super) rule: ValidRule,
    /// `{ privileged:true }`, precomputed for messages.
    pub(super) properties_text: String,
    /// The rule's properties, shared by its violations.
    pub(super) properties: Arc<[(String, String)]>,
}

#[derive(Debug)]
pub(super) struct Definition {
    /// `default`, or the namespaced definition's name.
    pub(super) name: String,
    pub(super) rules: Vec<CompiledRule>,
    pub(super) exceptions: Arc<[ValidException]>,
    /// Whether any of `exceptions` has an `expiresAt` (only then are expired ones looked for).
    pub(super) exceptions_expire: bool,
    pub(super) image_verification: Arc<[ImageVerificationRule]>,
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
    pub(super) fields: Fields,
}

/// Which tab's settings apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Admission,
    Continuous,
}

impl CompiledRule {
    pub(super) fn active(&self, phase: Phase) -> bool {
        match phase {
            Phase::Admission => self.rule.action != Action::None,
            Phase::Continuous => self.rule.mitigation != Mitigation::None && !self.rule.check.is_connect_only(),
        }
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
        let expire = |list: &[ValidException]| list.iter().any(|e| e.expires_at.is_some());
        let default = Definition {
            name: "default".to_owned(),
            rules: compile_rules(valid.default.rules),
            exceptions_expire: expire(&default_exceptions),
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
            let exceptions: Arc<[ValidException]> =
                def.exceptions.map_or_else(|| default_exceptions.clone(), Into::into);
            namespaced.push(Definition {
                name: def.name.unwrap_or_default(),
                rules: compile_rules(def.rules),
                exceptions_expire: expire(&exceptions),
                exceptions,
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
            // No rule reads labels (the replay projection parses with `Fields::ALL`).
            labels: false,
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

    pub(super) fn definition(&self, namespace: &str) -> &Definition {
        self.by_namespace
            .get(namespace)
            .and_then(|&i| self.namespaced.get(i))
            .unwrap_or(&self.default)
    }

    /// Whether the definition that applies in `namespace` has image signature rules (a
    /// review with none needs no signature verdicts).
    pub fn verifies_signatures(&self, namespace: &str) -> bool {
        !self.definition(namespace).image_verification.is_empty()
    }

    /// Whether the definition that applies in `namespace` reads image digests at admission:
    /// it has image signature rules, or active scan-based rules (vulnerabilities, CVSS,
    /// malware, secrets, unscanned images). A review under one that does not needs no
    /// tag-to-digest resolution.
    pub fn reads_digests(&self, namespace: &str) -> bool {
        let def = self.definition(namespace);
        !def.image_verification.is_empty()
            || def
                .rules
                .iter()
                .any(|r| r.active(Phase::Admission) && r.rule.check.needs_scan_results())
    }

    /// The `expiresAt` instants of the exceptions of every definition (inherited ones
    /// counted once), soonest first, each once. An exception stops applying at its instant,
    /// so a caller holding running pods re-evaluates them then (POLICY.md section 4 point 2);
    /// empty when no exception expires.
    pub fn exception_expiries(&self) -> Vec<OffsetDateTime> {
        let mut out: Vec<OffsetDateTime> = std::iter::once(&self.default)
            .chain(&self.namespaced)
            .flat_map(|d| d.exceptions.iter())
            .filter_map(|e| e.expires_at)
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The name of the definition that applies in `namespace`: a namespaced definition's
    /// name, or `default`.
    pub fn definition_name(&self, namespace: &str) -> &str {
        &self.definition(namespace).name
    }
}
