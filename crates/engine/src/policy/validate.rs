//! Parsing and validation of policy documents, with errors that name the field path.

use std::collections::{HashMap, HashSet};
use std::fmt;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::pss::Level;
use crate::scan::{CvssMetric, ScanType, Severity};

use super::document::*;
use super::rules::*;

/// One problem with a document, at a field path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FieldError {
    /// Where: `default.rules[2].statement.properties[0].value`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl FieldError {
    /// A new error at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Why a policy document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Not JSON/YAML of the document's shape.
    #[error("{0}")]
    Syntax(FieldError),
    /// Well-formed but invalid; every problem found is listed.
    #[error("{}", ErrorList(.0))]
    Invalid(Vec<FieldError>),
}

impl PolicyError {
    /// Every field error (one for a syntax error).
    pub fn field_errors(&self) -> Vec<FieldError> {
        match self {
            PolicyError::Syntax(e) => vec![e.clone()],
            PolicyError::Invalid(v) => v.clone(),
        }
    }
}

struct ErrorList<'a>(&'a [FieldError]);

impl fmt::Display for ErrorList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl PolicyDocument {
    /// Parses a JSON document.
    pub fn from_json(bytes: &[u8]) -> Result<PolicyDocument, PolicyError> {
        crate::serde_util::parse_json(bytes).map_err(PolicyError::Syntax)
    }

    /// Parses a YAML document (one document; JSON is YAML too).
    pub fn from_yaml(text: &str) -> Result<PolicyDocument, PolicyError> {
        crate::serde_util::parse_yaml(text).map_err(PolicyError::Syntax)
    }

    /// Parses JSON when the text starts with `{`, else YAML; a document over
    /// [`crate::limits::MAX_DOCUMENT_BYTES`] is refused unread.
    pub fn parse(text: &str) -> Result<PolicyDocument, PolicyError> {
        crate::limits::check_document_size(text).map_err(PolicyError::Syntax)?;
        if text.trim_start().starts_with('{') {
            PolicyDocument::from_json(text.as_bytes())
        } else {
            PolicyDocument::from_yaml(text)
        }
    }

    /// Parses and validates.
    pub fn parse_valid(text: &str) -> Result<ValidPolicy, PolicyError> {
        validate(&PolicyDocument::parse(text)?)
    }
}

/// A rule after validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidRule {
    /// Its type.
    pub rule_type: RuleType,
    /// What it checks.
    pub check: RuleCheck,
    /// Admission action.
    pub action: Action,
    /// Continuous mitigation.
    pub mitigation: Mitigation,
    /// The statement's properties as written, for reports.
    pub properties: Vec<(String, String)>,
}

/// An exception after validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidException {
    /// The image field tested.
    pub field: ImageField,
    /// The operator.
    pub operator: StringOperator,
    /// The operand.
    pub value: String,
    /// The namespaces it holds in (`None`: all).
    pub namespaces: Option<Vec<String>>,
    /// From this instant on it holds no more (`None`: it never expires).
    pub expires_at: Option<OffsetDateTime>,
    /// Why it exists, as written.
    pub reason: Option<String>,
}

impl ValidException {
    /// Whether it holds at `now`: it has no expiry, or its expiry is after `now` (an
    /// exception expiring exactly at `now` holds no more, POLICY.md section 4 point 2).
    pub fn holds_at(&self, now: OffsetDateTime) -> bool {
        self.expires_at.is_none_or(|t| now < t)
    }
}

/// The longest `reason` an exception may give, in characters.
pub const MAX_EXCEPTION_REASON_CHARS: usize = 256;

/// A definition after validation (only enabled rules are kept).
#[derive(Debug, Clone, PartialEq)]
pub struct ValidDefinition {
    /// The namespaced definition's name (`None` for the default one).
    pub name: Option<String>,
    /// The namespaces it covers (empty for the default one).
    pub namespaces: Vec<String>,
    /// Enabled rules.
    pub rules: Vec<ValidRule>,
    /// Exceptions (`None`: inherited from the default).
    pub exceptions: Option<Vec<ValidException>>,
    /// Signature rules (`None`: inherited from the default).
    pub image_verification: Option<Vec<ImageVerificationRule>>,
}

/// A validated policy.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidPolicy {
    /// The document as given.
    pub document: PolicyDocument,
    /// The default definition.
    pub default: ValidDefinition,
    /// The namespaced definitions.
    pub namespaced: Vec<ValidDefinition>,
}

impl ValidPolicy {
    /// Attestor names used by signature rules (the store checks they exist).
    pub fn attestor_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = std::iter::once(&self.default)
            .chain(self.namespaced.iter())
            .filter_map(|d| d.image_verification.as_ref())
            .flatten()
            .flat_map(|r| r.attestors.names().iter().map(String::as_str))
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Runtime ruleset ids (the store checks they exist).
    pub fn ruleset_ids(&self) -> Vec<&str> {
        self.document
            .runtime
            .iter()
            .flat_map(|r| r.rulesets.iter().map(|s| s.id.as_str()))
            .collect()
    }
}

/// Whether `name` is a valid policy or namespaced-definition name.
pub fn is_valid_policy_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
}

/// Whether `name` is a valid attestor, ruleset or signature-rule name (`^[A-Za-z0-9_.-]+$`, 1-64).
pub fn is_valid_object_name(name: &str) -> bool {
    crate::runtime::name_error(name).is_none()
}

/// Whether `ns` is a valid namespace name (an RFC 1123 label).
pub fn is_valid_namespace(ns: &str) -> bool {
    let b = ns.as_bytes();
    let edge = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    (1..=63).contains(&b.len())
        && b.first().is_some_and(edge)
        && b.last().is_some_and(edge)
        && b.iter().all(|c| edge(c) || *c == b'-')
}

/// Validates a document: every problem is reported, each with its field path. A document
/// with a list over its limit ([`crate::limits`]) is refused with those errors alone, before
/// its entries are judged.
pub fn validate(doc: &PolicyDocument) -> Result<ValidPolicy, PolicyError> {
    let over = over_limits(doc);
    if !over.is_empty() {
        return Err(PolicyError::Invalid(over));
    }
    let mut errors = Vec::new();
    if !is_valid_policy_name(&doc.name) {
        errors.push(FieldError::new(
            "name",
            format!("{:?} must be 1-64 characters of A-Z, a-z, 0-9, '_' and '.'", doc.name),
        ));
    }
    if doc.description.chars().count() > 128 {
        errors.push(FieldError::new("description", "must be at most 128 characters"));
    }
    let default = definition(
        "default",
        None,
        Vec::new(),
        &doc.default.rules,
        Some(&doc.default.exceptions),
        Some(&doc.default.image_verification),
        &mut errors,
    );

    let mut namespaced = Vec::with_capacity(doc.namespaced.len());
    let mut owner: HashMap<&str, usize> = HashMap::new();
    let mut names: HashSet<&str> = HashSet::new();
    for (i, def) in doc.namespaced.iter().enumerate() {
        let path = format!("namespaced[{i}]");
        if !is_valid_policy_name(&def.name) {
            errors.push(FieldError::new(
                format!("{path}.name"),
                format!("{:?} must be 1-64 characters of A-Z, a-z, 0-9, '_' and '.'", def.name),
            ));
        } else if !names.insert(def.name.as_str()) {
            errors.push(FieldError::new(
                format!("{path}.name"),
                format!("{:?} is used by another namespaced definition", def.name),
            ));
        }
        if def.namespaces.is_empty() {
            errors.push(FieldError::new(
                format!("{path}.namespaces"),
                "must list at least one namespace",
            ));
        }
        for (j, ns) in def.namespaces.iter().enumerate() {
            let p = format!("{path}.namespaces[{j}]");
            if !is_valid_namespace(ns) {
                errors.push(FieldError::new(
                    p,
                    format!("{ns:?} is not a valid namespace name (RFC 1123 label)"),
                ));
            } else if let Some(other) = owner.insert(ns.as_str(), i) {
                let msg = if other == i {
                    format!("{ns:?} is listed twice")
                } else {
                    format!("{ns:?} is already covered by namespaced[{other}]")
                };
                errors.push(FieldError::new(p, msg));
            }
        }
        namespaced.push(definition(
            &path,
            Some(def.name.clone()),
            def.namespaces.clone(),
            &def.rules,
            def.exceptions.as_ref(),
            def.image_verification.as_ref(),
            &mut errors,
        ));
    }

    if let Some(runtime) = &doc.runtime {
        let mut seen = HashSet::new();
        for (i, r) in runtime.rulesets.iter().enumerate() {
            let p = format!("runtime.rulesets[{i}].id");
            if r.id.trim().is_empty() || r.id.len() > 64 {
                errors.push(FieldError::new(p, "must be a ruleset id of 1-64 characters"));
            } else if !seen.insert(r.id.as_str()) {
                errors.push(FieldError::new(p, format!("{:?} is listed twice", r.id)));
            }
        }
    }

    if errors.is_empty() {
        Ok(ValidPolicy {
            document: doc.clone(),
            default,
            namespaced,
        })
    } else {
        Err(PolicyError::Invalid(errors))
    }
}

/// The lists of `doc` longer than their limits.
fn over_limits(doc: &PolicyDocument) -> Vec<FieldError> {
    use crate::limits::*;
    let mut errors = Vec::new();
    let mut check = |path: String, len: usize, limit: usize, what: &str| {
        errors.extend(over_limit(path, len, limit, what));
    };
    check(
        "namespaced".to_owned(),
        doc.namespaced.len(),
        MAX_NAMESPACED_DEFINITIONS,
        "namespaced definitions per policy",
    );
    if let Some(runtime) = &doc.runtime {
        check(
            "runtime.rulesets".to_owned(),
            runtime.rulesets.len(),
            MAX_RUNTIME_RULESETS,
            "rulesets per policy",
        );
    }
    let definitions = std::iter::once((
        "default".to_owned(),
        &doc.default.rules,
        Some(&doc.default.exceptions),
        Some(&doc.default.image_verification),
        None,
    ))
    .chain(doc.namespaced.iter().enumerate().map(|(i, d)| {
        (
            format!("namespaced[{i}]"),
            &d.rules,
            d.exceptions.as_ref(),
            d.image_verification.as_ref(),
            Some(&d.namespaces),
        )
    }));
    let mut total_rules = 0usize;
    for (path, rules, exceptions, signature_rules, namespaces) in definitions {
        total_rules = total_rules.saturating_add(rules.len());
        check(
            format!("{path}.rules"),
            rules.len(),
            MAX_RULES_PER_DEFINITION,
            "rules per definition",
        );
        for (i, rule) in rules.iter().enumerate() {
            check(
                format!("{path}.rules[{i}].statement.properties"),
                rule.statement.properties.len(),
                MAX_PROPERTIES_PER_STATEMENT,
                "properties per statement",
            );
        }
        if let Some(namespaces) = namespaces {
            check(
                format!("{path}.namespaces"),
                namespaces.len(),
                MAX_NAMESPACES_PER_DEFINITION,
                "namespaces per definition",
            );
        }
        if let Some(exceptions) = exceptions {
            check(
                format!("{path}.exceptions"),
                exceptions.len(),
                MAX_EXCEPTIONS_PER_DEFINITION,
                "exceptions per definition",
            );
            for (i, e) in exceptions.iter().enumerate() {
                check(
                    format!("{path}.exceptions[{i}].statement.properties"),
                    e.statement.properties.len(),
                    MAX_PROPERTIES_PER_STATEMENT,
                    "properties per statement",
                );
            }
        }
        if let Some(signature_rules) = signature_rules {
            check(
                format!("{path}.imageVerification"),
                signature_rules.len(),
                MAX_SIGNATURE_RULES_PER_DEFINITION,
                "signature rules per definition",
            );
            for (i, r) in signature_rules.iter().enumerate() {
                check(
                    format!("{path}.imageVerification[{i}].conditions"),
                    r.conditions.len(),
                    MAX_CONDITIONS_PER_SIGNATURE_RULE,
                    "conditions per signature rule",
                );
            }
        }
    }
    check(
        "(document)".to_owned(),
        total_rules,
        MAX_RULES_PER_POLICY,
        "rules per policy (all definitions together)",
    );
    errors
}

fn definition(
    path: &str,
    name: Option<String>,
    namespaces: Vec<String>,
    rules: &[Rule],
    exceptions: Option<&Vec<Exception>>,
    image_verification: Option<&Vec<ImageVerificationRule>>,
    errors: &mut Vec<FieldError>,
) -> ValidDefinition {
    let mut valid_rules = Vec::with_capacity(rules.len());
    for (i, rule) in rules.iter().enumerate() {
        let rp = format!("{path}.rules[{i}]");
        let check = rule_check(
            rule.rule_type,
            &rule.statement.properties,
            &format!("{rp}.statement.properties"),
            errors,
        );
        if rule.enabled {
            if rule.rule_type == RuleType::Podexec || rule.rule_type == RuleType::Portforward {
                if rule.action == Action::None {
                    errors.push(FieldError::new(
                        format!("{rp}.action"),
                        format!(
                            "{} is judged at admission only, so an enabled rule needs an action other than none",
                            rule.rule_type.as_str()
                        ),
                    ));
                }
            } else if rule.action == Action::None && rule.mitigation == Mitigation::None {
                errors.push(FieldError::new(
                    rp.clone(),
                    "an enabled rule needs an action or a mitigation other than none",
                ));
            }
        }
        if let (Some(check), true) = (check, rule.enabled) {
            valid_rules.push(ValidRule {
                rule_type: rule.rule_type,
                check,
                action: rule.action,
                mitigation: if rule.rule_type == RuleType::Podexec || rule.rule_type == RuleType::Portforward {
                    Mitigation::None
                } else {
                    rule.mitigation
                },
                properties: rule
                    .statement
                    .properties
                    .iter()
                    .map(|p| (p.key.clone(), p.value.clone()))
                    .collect(),
            });
        }
    }

    let exceptions = exceptions.map(|list| {
        list.iter()
            .enumerate()
            .filter_map(|(i, e)| exception(&format!("{path}.exceptions[{i}]"), e, errors))
            .collect()
    });

    if let Some(list) = image_verification {
        let mut seen = HashSet::new();
        for (i, r) in list.iter().enumerate() {
            signature_rule(&format!("{path}.imageVerification[{i}]"), r, &mut seen, errors);
        }
    }

    ValidDefinition {
        name,
        namespaces,
        rules: valid_rules,
        exceptions,
        image_verification: image_verification.cloned(),
    }
}

fn exception(path: &str, e: &Exception, errors: &mut Vec<FieldError>) -> Option<ValidException> {
    let before = errors.len();
    if let Some(namespaces) = &e.namespaces {
        if namespaces.is_empty() {
            errors.push(FieldError::new(
                format!("{path}.namespaces"),
                "omit it to cover every namespace, or list at least one",
            ));
        }
        for (j, ns) in namespaces.iter().enumerate() {
            if !is_valid_namespace(ns) {
                errors.push(FieldError::new(
                    format!("{path}.namespaces[{j}]"),
                    format!("{ns:?} is not a valid namespace name (RFC 1123 label)"),
                ));
            }
        }
    }
    let expires_at = e.expires_at.as_deref().and_then(|text| {
        OffsetDateTime::parse(text, &Rfc3339)
            .map_err(|err| {
                errors.push(FieldError::new(
                    format!("{path}.expiresAt"),
                    format!("{text:?} is not an RFC 3339 timestamp such as 2027-03-31T00:00:00Z ({err})"),
                ));
            })
            .ok()
    });
    if let Some(reason) = &e.reason {
        let chars = reason.chars().count();
        if chars > MAX_EXCEPTION_REASON_CHARS {
            errors.push(FieldError::new(
                format!("{path}.reason"),
                format!("must be at most {MAX_EXCEPTION_REASON_CHARS} characters, got {chars}"),
            ));
        }
    }
    let props = &e.statement.properties;
    let pp = format!("{path}.statement.properties");
    let [prop] = props.as_slice() else {
        errors.push(FieldError::new(
            pp,
            format!("an exception takes exactly one property, got {}", props.len()),
        ));
        return None;
    };
    let (operator, value) = string_operator(&format!("{pp}[0]"), prop, errors)?;
    if errors.len() > before {
        return None;
    }
    Some(ValidException {
        field: e.exception_type,
        operator,
        value,
        namespaces: e.namespaces.clone(),
        expires_at,
        reason: e.reason.clone(),
    })
}

fn string_operator(path: &str, prop: &Property, errors: &mut Vec<FieldError>) -> Option<(StringOperator, String)> {
    let Some(op) = StringOperator::parse(&prop.key) else {
        errors.push(FieldError::new(
            format!("{path}.key"),
            not_one_of(&prop.key, StringOperator::KEYS),
        ));
        return None;
    };
    // An empty operand would make these match every image (or none): surely a mistake.
    if prop.value.is_empty()
        && matches!(
            op,
            StringOperator::Contains | StringOperator::NotContains | StringOperator::StartsWith
        )
    {
        errors.push(FieldError::new(
            format!("{path}.value"),
            format!("must not be empty for {}", prop.key),
        ));
        return None;
    }
    Some((op, prop.value.clone()))
}

fn signature_rule(path: &str, r: &ImageVerificationRule, seen: &mut HashSet<String>, errors: &mut Vec<FieldError>) {
    if !is_valid_object_name(&r.name) {
        errors.push(FieldError::new(
            format!("{path}.name"),
            format!(
                "{:?} must be 1-64 characters of A-Z, a-z, 0-9, '_', '.' and '-'",
                r.name
            ),
        ));
    } else if !seen.insert(r.name.clone()) {
        errors.push(FieldError::new(
            format!("{path}.name"),
            format!("{:?} is used by another rule of this list", r.name),
        ));
    }
    let (key, names) = match &r.attestors {
        AttestorRequirement::All(n) => ("all", n),
        AttestorRequirement::Any(n) => ("any", n),
    };
    if names.is_empty() {
        errors.push(FieldError::new(
            format!("{path}.attestors.{key}"),
            "must name at least one attestor",
        ));
    }
    let mut seen_names = HashSet::new();
    for (j, n) in names.iter().enumerate() {
        let p = format!("{path}.attestors.{key}[{j}]");
        if !is_valid_object_name(n) {
            errors.push(FieldError::new(p, format!("{n:?} is not a valid attestor name")));
        } else if !seen_names.insert(n.as_str()) {
            errors.push(FieldError::new(p, format!("{n:?} is listed twice")));
        }
    }
    for (j, c) in r.conditions.iter().enumerate() {
        if c.value.is_empty() {
            errors.push(FieldError::new(
                format!("{path}.conditions[{j}].value"),
                "must not be empty",
            ));
        }
    }
}

/// What a property value may be.
#[derive(Clone, Copy)]
enum Values {
    OneOf(&'static [&'static str]),
    /// A severity below critical.
    MaxSeverity,
    /// 1..=30.
    Days,
}

struct KeySpec {
    key: &'static str,
    values: Values,
}

const fn key(key: &'static str, values: Values) -> KeySpec {
    KeySpec { key, values }
}

const TRUE: Values = Values::OneOf(&["true"]);
const FALSE: Values = Values::OneOf(&["false"]);
const ZERO: Values = Values::OneOf(&["0"]);
const SEVERITIES_BELOW_CRITICAL: &[&str] = &["high", "medium", "low", "negligible", "unknown", "none"];

/// The statement shape of each rule type: exactly one of `required` (when non-empty) and
/// at most one of each of `optional`.
fn statement_spec(rule_type: RuleType) -> (&'static [KeySpec], &'static [KeySpec]) {
    const HOST: &[KeySpec] = &[key("hostNetwork", TRUE), key("hostIPC", TRUE), key("hostPID", TRUE)];
    const CONTAINER: &[KeySpec] = &[
        key("privileged", TRUE),
        key("allowPrivilegeEscalation", TRUE),
        key("runAsNonRoot", FALSE),
        key("readOnlyRootFilesystem", FALSE),
        key(
            "capabilities-rule",
            Values::OneOf(&["restrict-nondefaults", "baseline", "restricted", "restrict-all"]),
        ),
    ];
    const VULN: &[KeySpec] = &[key("max-severity", Values::MaxSeverity)];
    const AV: &[KeySpec] = &[key(
        "cvss-attack-vector",
        Values::OneOf(&["network", "adjacent", "local", "physical"]),
    )];
    const AC: &[KeySpec] = &[key("cvss-attack-complexity", Values::OneOf(&["low", "high"]))];
    const AVAIL: &[KeySpec] = &[key("cvss-availability", Values::OneOf(&["low", "high"]))];
    const MALWARE: &[KeySpec] = &[key("count", ZERO)];
    const DAYS: &[KeySpec] = &[key("days", Values::Days)];
    const EXEC: &[KeySpec] = &[key("podExec", TRUE)];
    const FORWARD: &[KeySpec] = &[key("podPortForward", TRUE)];
    const PSS: &[KeySpec] = &[key("level", Values::OneOf(&["baseline", "restricted"]))];
    match rule_type {
        RuleType::PodSecurityContext => (HOST, &[]),
        RuleType::ContainerSecurityContext => (CONTAINER, &[]),
        RuleType::Registry | RuleType::Image | RuleType::Tag | RuleType::ImagePath => (&[], &[]),
        RuleType::Vulnerabilities => (VULN, &[]),
        RuleType::CvssAttackVector => (AV, VULN),
        RuleType::CvssAttackComplexity => (AC, VULN),
        RuleType::CvssAvailability => (AVAIL, VULN),
        RuleType::Malware | RuleType::Secrets => (MALWARE, &[]),
        RuleType::UnscannedImage | RuleType::UnscannedImageMalware | RuleType::UnscannedImageSecret => (&[], DAYS),
        RuleType::Podexec => (EXEC, &[]),
        RuleType::Portforward => (FORWARD, &[]),
        RuleType::PodSecurityStandard => (PSS, &[]),
    }
}

fn not_one_of(got: &str, choices: &[&str]) -> String {
    format!("{got:?} is not one of {}", choices.join(", "))
}

fn parse_severity(s: &str) -> Option<Severity> {
    s.parse().ok()
}

/// Checks a rule's statement and builds what it checks (`None` after reporting errors).
fn rule_check(rule_type: RuleType, props: &[Property], path: &str, errors: &mut Vec<FieldError>) -> Option<RuleCheck> {
    if matches!(
        rule_type,
        RuleType::Registry | RuleType::Image | RuleType::Tag | RuleType::ImagePath
    ) {
        let [prop] = props else {
            errors.push(FieldError::new(
                path,
                format!("{} takes exactly one property, got {}", rule_type.as_str(), props.len()),
            ));
            return None;
        };
        let (operator, value) = string_operator(&format!("{path}[0]"), prop, errors)?;
        let field = match rule_type {
            RuleType::Registry => ImageField::Registry,
            RuleType::Image => ImageField::Image,
            RuleType::Tag => ImageField::Tag,
            _ => ImageField::ImagePath,
        };
        return Some(RuleCheck::ImageField { field, operator, value });
    }

    let (required, optional) = statement_spec(rule_type);
    let before = errors.len();
    let mut primary: Option<(&'static str, &str)> = None;
    let mut extra: Vec<(&'static str, &str)> = Vec::new();
    let mut seen_keys = HashSet::new();
    for (i, prop) in props.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let spec = required
            .iter()
            .map(|s| (s, true))
            .chain(optional.iter().map(|s| (s, false)))
            .find(|(s, _)| s.key == prop.key);
        let Some((spec, is_required)) = spec else {
            let keys: Vec<&str> = required.iter().chain(optional.iter()).map(|s| s.key).collect();
            let msg = if keys.is_empty() {
                format!("{} takes no property here, got {:?}", rule_type.as_str(), prop.key)
            } else {
                not_one_of(&prop.key, &keys)
            };
            errors.push(FieldError::new(format!("{p}.key"), msg));
            continue;
        };
        if !seen_keys.insert(prop.key.as_str()) {
            errors.push(FieldError::new(
                format!("{p}.key"),
                format!("{:?} is given twice", prop.key),
            ));
            continue;
        }
        if !value_ok(spec.values, &prop.value, &format!("{p}.value"), errors) {
            continue;
        }
        if is_required {
            if let Some((first, _)) = primary {
                errors.push(FieldError::new(
                    p.clone(),
                    format!("only one of {:?} and {:?} may be given", first, spec.key),
                ));
                continue;
            }
            primary = Some((spec.key, prop.value.as_str()));
        } else {
            extra.push((spec.key, prop.value.as_str()));
        }
    }
    if !required.is_empty() && primary.is_none() && errors.len() == before {
        let keys: Vec<&str> = required.iter().map(|s| s.key).collect();
        errors.push(FieldError::new(
            path,
            format!("{} needs a property with key {}", rule_type.as_str(), keys.join(" or ")),
        ));
    }
    if errors.len() > before {
        return None;
    }
    let max = extra
        .iter()
        .find(|(k, _)| *k == "max-severity")
        .and_then(|(_, v)| parse_severity(v));
    let days = extra
        .iter()
        .find(|(k, _)| *k == "days")
        .and_then(|(_, v)| v.parse::<u32>().ok());
    let (pkey, pval) = primary.unwrap_or(("", ""));
    Some(match rule_type {
        RuleType::PodSecurityContext => RuleCheck::HostNamespace(match pkey {
            "hostNetwork" => HostNamespace::Network,
            "hostIPC" => HostNamespace::Ipc,
            _ => HostNamespace::Pid,
        }),
        RuleType::ContainerSecurityContext => match pkey {
            "privileged" => RuleCheck::Privileged,
            "allowPrivilegeEscalation" => RuleCheck::AllowPrivilegeEscalation,
            "runAsNonRoot" => RuleCheck::RunAsRoot,
            "readOnlyRootFilesystem" => RuleCheck::WritableRootFilesystem,
            _ => RuleCheck::Capabilities(match pval {
                "restrict-nondefaults" => CapabilitiesPreset::RestrictNondefaults,
                "baseline" => CapabilitiesPreset::Baseline,
                "restricted" => CapabilitiesPreset::Restricted,
                _ => CapabilitiesPreset::RestrictAll,
            }),
        },
        RuleType::Vulnerabilities => RuleCheck::Vulnerabilities {
            max: parse_severity(pval)?,
        },
        RuleType::CvssAttackVector => RuleCheck::Cvss {
            metric: CvssMetric::AttackVector,
            value: static_value(required, pval)?,
            max,
        },
        RuleType::CvssAttackComplexity => RuleCheck::Cvss {
            metric: CvssMetric::AttackComplexity,
            value: static_value(required, pval)?,
            max,
        },
        RuleType::CvssAvailability => RuleCheck::Cvss {
            metric: CvssMetric::Availability,
            value: static_value(required, pval)?,
            max,
        },
        RuleType::Malware => RuleCheck::Malware,
        RuleType::Secrets => RuleCheck::Secrets,
        RuleType::UnscannedImage => RuleCheck::Unscanned {
            scan_type: ScanType::Vulnerability,
            days,
        },
        RuleType::UnscannedImageMalware => RuleCheck::Unscanned {
            scan_type: ScanType::Malware,
            days,
        },
        RuleType::UnscannedImageSecret => RuleCheck::Unscanned {
            scan_type: ScanType::Secret,
            days,
        },
        RuleType::Podexec => RuleCheck::PodExec,
        RuleType::Portforward => RuleCheck::PortForward,
        RuleType::PodSecurityStandard => RuleCheck::PodSecurityStandard(if pval == "restricted" {
            Level::Restricted
        } else {
            Level::Baseline
        }),
        RuleType::Registry | RuleType::Image | RuleType::Tag | RuleType::ImagePath => return None,
    })
}

/// The `'static` spelling of an allowed value (rules keep it without allocating).
fn static_value(specs: &'static [KeySpec], value: &str) -> Option<&'static str> {
    specs.iter().find_map(|s| match s.values {
        Values::OneOf(choices) => choices.iter().copied().find(|c| *c == value),
        _ => None,
    })
}

fn value_ok(values: Values, value: &str, path: &str, errors: &mut Vec<FieldError>) -> bool {
    match values {
        Values::OneOf(choices) => {
            if choices.contains(&value) {
                return true;
            }
            errors.push(FieldError::new(path, not_one_of(value, choices)));
        }
        Values::MaxSeverity => {
            if SEVERITIES_BELOW_CRITICAL.contains(&value) {
                return true;
            }
            let msg = if value == "critical" {
                "\"critical\" could never fire: no finding is more severe than critical; use high or lower".to_owned()
            } else {
                not_one_of(value, SEVERITIES_BELOW_CRITICAL)
            };
            errors.push(FieldError::new(path, msg));
        }
        Values::Days => {
            if value.parse::<u32>().is_ok_and(|d| (1..=30).contains(&d)) && !value.starts_with('+') {
                return true;
            }
            errors.push(FieldError::new(
                path,
                format!("{value:?} is not a whole number of days from 1 to 30"),
            ));
        }
    }
    false
}
