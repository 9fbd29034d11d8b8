//! The serde model of a policy document, shaped after the Vision One Container Security API.

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

use crate::serde_util::nullable;

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A protection policy document.
///
/// Vision One's read-only fields (`id`, `createdDateTime`, `updatedDateTime`) are accepted
/// and ignored so that exported policies can be applied as they are; any other unknown field
/// is refused, since a misspelt key (say `namespace:` for `namespaces:`) would otherwise
/// silently change what a policy covers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "Portcullis protection policy")]
pub struct PolicyDocument {
    /// Unique per tenant, immutable: `^[A-Za-z0-9_.]+$`, 1-64 characters.
    pub name: String,
    /// At most 128 characters.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Whether decisions and detections are stored in telemetry.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub xdr_enabled: bool,
    /// The cluster-wide definition.
    pub default: DefaultDefinition,
    /// Definitions that replace the default's rules in some namespaces.
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "Vec::is_empty")]
    pub namespaced: Vec<NamespacedDefinition>,
    /// Runtime rulesets (cluster-wide).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeSection>,
    /// Vision One's policy id: accepted and ignored.
    #[serde(default, rename = "id", skip_serializing)]
    pub ignored_id: Option<serde_json::Value>,
    /// Vision One's creation time: accepted and ignored.
    #[serde(default, rename = "createdDateTime", skip_serializing)]
    pub ignored_created: Option<serde_json::Value>,
    /// Vision One's update time: accepted and ignored.
    #[serde(default, rename = "updatedDateTime", skip_serializing)]
    pub ignored_updated: Option<serde_json::Value>,
}

/// The cluster-wide definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DefaultDefinition {
    /// The rules.
    pub rules: Vec<Rule>,
    /// Images exempt from the rules.
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "Vec::is_empty")]
    pub exceptions: Vec<Exception>,
    /// Image Signature Verification rules (our extension).
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "Vec::is_empty")]
    pub image_verification: Vec<ImageVerificationRule>,
}

/// A definition that applies in some namespaces instead of the default one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespacedDefinition {
    /// Name: `^[A-Za-z0-9_.]+$`, 1-64 characters.
    pub name: String,
    /// The namespaces it covers (non-empty; each in at most one definition of a policy).
    pub namespaces: Vec<String>,
    /// Replaces the default's rules in these namespaces (may be empty).
    pub rules: Vec<Rule>,
    /// Absent or null: the default's exceptions are inherited; `[]` means none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exceptions: Option<Vec<Exception>>,
    /// Absent or null: the default's signature rules are inherited; `[]` means none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_verification: Option<Vec<ImageVerificationRule>>,
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    /// The rule type.
    #[serde(rename = "type")]
    pub rule_type: RuleType,
    /// A disabled rule takes part in nothing.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub enabled: bool,
    /// What admission does on a violation.
    #[serde(default, skip_serializing_if = "Action::is_none")]
    pub action: Action,
    /// What continuous scanning does to a running pod in violation.
    #[serde(default, skip_serializing_if = "Mitigation::is_none")]
    pub mitigation: Mitigation,
    /// The violating condition.
    pub statement: Statement,
}

/// A rule's or exception's statement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    /// Key/value properties; their number and keys depend on the rule type.
    pub properties: Vec<Property>,
}

/// A statement property.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Property {
    /// The key (`hostNetwork`, `max-severity`, `starts-with`, ...).
    pub key: String,
    /// The value; YAML's unquoted `true` or `0` are read as the strings "true" and "0".
    #[serde(deserialize_with = "scalar_string")]
    #[schemars(with = "ScalarValue")]
    pub value: String,
}

/// A property value as written: a string, or a bare boolean or number.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum ScalarValue {
    Text(String),
    Flag(bool),
    Number(i64),
}

fn scalar_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    struct ScalarVisitor;
    impl serde::de::Visitor<'_> for ScalarVisitor {
        type Value = String;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string, boolean or number")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
        fn visit_string<E: serde::de::Error>(self, v: String) -> Result<String, E> {
            Ok(v)
        }
        fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<String, E> {
            Ok(v.to_string())
        }
    }
    deserializer.deserialize_any(ScalarVisitor)
}

/// Rule types of POLICY.md section 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RuleType {
    /// Pod-level host namespaces.
    PodSecurityContext,
    /// Container security context fields and capability presets.
    ContainerSecurityContext,
    /// The image's registry.
    Registry,
    /// The image's repository path.
    Image,
    /// The image's tag.
    Tag,
    /// The whole normalised image path.
    ImagePath,
    /// Vulnerability severity.
    Vulnerabilities,
    /// CVSS v3 attack vector.
    CvssAttackVector,
    /// CVSS v3 attack complexity.
    CvssAttackComplexity,
    /// CVSS v3 availability impact.
    CvssAvailability,
    /// Malware findings.
    Malware,
    /// Secret findings.
    Secrets,
    /// No (recent) vulnerability scan.
    UnscannedImage,
    /// No (recent) malware scan.
    UnscannedImageMalware,
    /// No (recent) secret scan.
    UnscannedImageSecret,
    /// `kubectl exec` / `attach`.
    Podexec,
    /// `kubectl port-forward`.
    Portforward,
    /// A whole Pod Security Standards level.
    PodSecurityStandard,
}

impl RuleType {
    /// The name as written in documents.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleType::PodSecurityContext => "podSecurityContext",
            RuleType::ContainerSecurityContext => "containerSecurityContext",
            RuleType::Registry => "registry",
            RuleType::Image => "image",
            RuleType::Tag => "tag",
            RuleType::ImagePath => "imagePath",
            RuleType::Vulnerabilities => "vulnerabilities",
            RuleType::CvssAttackVector => "cvssAttackVector",
            RuleType::CvssAttackComplexity => "cvssAttackComplexity",
            RuleType::CvssAvailability => "cvssAvailability",
            RuleType::Malware => "malware",
            RuleType::Secrets => "secrets",
            RuleType::UnscannedImage => "unscannedImage",
            RuleType::UnscannedImageMalware => "unscannedImageMalware",
            RuleType::UnscannedImageSecret => "unscannedImageSecret",
            RuleType::Podexec => "podexec",
            RuleType::Portforward => "portforward",
            RuleType::PodSecurityStandard => "podSecurityStandard",
        }
    }
}

/// Admission action (the Deployment tab).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Not part of admission.
    #[default]
    None,
    /// Allowed, reported as a warning.
    Log,
    /// Denied.
    Block,
}

impl Action {
    /// Whether this is `none`.
    pub fn is_none(&self) -> bool {
        *self == Action::None
    }
    /// The name as written.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::None => "none",
            Action::Log => "log",
            Action::Block => "block",
        }
    }
}

/// Continuous-scanning mitigation (the Continuous tab); ordered weakest first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mitigation {
    /// Not part of continuous scanning.
    #[default]
    None,
    /// Report only.
    Log,
    /// Cut the pod off the network.
    Isolate,
    /// Delete the pod.
    Terminate,
}

impl Mitigation {
    /// Whether this is `none`.
    pub fn is_none(&self) -> bool {
        *self == Mitigation::None
    }
    /// The name as written.
    pub fn as_str(self) -> &'static str {
        match self {
            Mitigation::None => "none",
            Mitigation::Log => "log",
            Mitigation::Isolate => "isolate",
            Mitigation::Terminate => "terminate",
        }
    }
}

/// An exception: images exempt from the rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Exception {
    /// Which part of the image reference the statement tests.
    #[serde(rename = "type")]
    pub exception_type: ExceptionType,
    /// One property: operator → value, describing the exempted images.
    pub statement: Statement,
    /// When given, the exception holds only in these namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<Vec<String>>,
    /// When given (RFC 3339), the exception holds no more from this instant on. Kept as
    /// written so that a document round-trips unchanged; validation parses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub expires_at: Option<String>,
    /// Why the exception exists (at most 256 characters); shown and audited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub reason: Option<String>,
}

/// The image field an exception tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ExceptionType {
    /// `registry`.
    Registry,
    /// `image`.
    Image,
    /// `tag`.
    Tag,
    /// `imagePath`.
    ImagePath,
}

/// An Image Signature Verification rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageVerificationRule {
    /// Rule name: `^[A-Za-z0-9_.-]+$`, 1-64 characters, unique within its list.
    pub name: String,
    /// What a failed verification does.
    pub action: SignatureAction,
    /// Whether a tag-only reference is itself a violation.
    #[serde(default, skip_serializing_if = "is_false")]
    pub require_digest: bool,
    /// The attestors (by name) whose signatures are required.
    pub attestors: AttestorRequirement,
    /// Which images the rule applies to.
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// The action of a signature rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SignatureAction {
    /// Allowed, reported as a warning.
    Log,
    /// Denied.
    Block,
}

impl SignatureAction {
    /// As an admission action.
    pub fn action(self) -> Action {
        match self {
            SignatureAction::Log => Action::Log,
            SignatureAction::Block => Action::Block,
        }
    }
}

/// `{all: [...]}` or `{any: [...]}`.
///
/// (De)serialised through [`AttestorsRepr`], a plain map, rather than as serde's externally
/// tagged enum: YAML (de)serialisers map such enums to tags (`!all [...]`), so the
/// `attestors: {all: [...]}` that POLICY.md shows would be refused in YAML.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
#[serde(try_from = "AttestorsRepr", into = "AttestorsRepr")]
pub enum AttestorRequirement {
    /// Every listed attestor must have signed.
    All(Vec<String>),
    /// At least one listed attestor must have signed.
    Any(Vec<String>),
}

/// `{all: [...]}` or `{any: [...]}`: exactly one of the two.
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
struct AttestorsRepr {
    /// Every listed attestor must have signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    all: Option<Vec<String>>,
    /// At least one listed attestor must have signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    any: Option<Vec<String>>,
}

impl TryFrom<AttestorsRepr> for AttestorRequirement {
    type Error = &'static str;
    fn try_from(r: AttestorsRepr) -> Result<Self, Self::Error> {
        match (r.all, r.any) {
            (Some(names), None) => Ok(AttestorRequirement::All(names)),
            (None, Some(names)) => Ok(AttestorRequirement::Any(names)),
            _ => Err("give exactly one of `all` and `any`"),
        }
    }
}

impl From<AttestorRequirement> for AttestorsRepr {
    fn from(r: AttestorRequirement) -> Self {
        match r {
            AttestorRequirement::All(names) => AttestorsRepr {
                all: Some(names),
                any: None,
            },
            AttestorRequirement::Any(names) => AttestorsRepr {
                all: None,
                any: Some(names),
            },
        }
    }
}

impl AttestorRequirement {
    /// The attestor names.
    pub fn names(&self) -> &[String] {
        match self {
            AttestorRequirement::All(n) | AttestorRequirement::Any(n) => n,
        }
    }
}

/// A condition of a signature rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    /// `match` (must hold) or `exclude` (must not hold).
    #[serde(rename = "type")]
    pub condition_type: ConditionType,
    /// What is tested.
    pub resource_filter: ResourceFilter,
    /// How.
    pub operator: ConditionOperator,
    /// Against what.
    pub value: String,
}

/// `match` or `exclude`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConditionType {
    /// The rule applies only to images for which every match condition holds.
    Match,
    /// The rule never applies to images for which an exclude condition holds.
    Exclude,
}

/// The image field a signature condition tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ResourceFilter {
    /// The normalised registry.
    Registry,
    /// `registry/image`.
    Repository,
}

/// Operators of signature conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ConditionOperator {
    /// Equal.
    Equals,
    /// Prefix.
    BeginsWith,
    /// Suffix.
    EndsWith,
    /// Substring.
    Contains,
}

/// The runtime section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSection {
    /// Runtime rulesets, by id.
    #[serde(default, deserialize_with = "nullable")]
    pub rulesets: Vec<RulesetRef>,
}

/// A reference to a runtime ruleset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RulesetRef {
    /// The ruleset id assigned by the store.
    pub id: String,
}
