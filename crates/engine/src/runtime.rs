//! Runtime rulesets (POLICY.md section 5) and the catalogue of known runtime rule ids.
//!
//! A [`Ruleset`] lists runtime detection rules by id, each with a [`RuntimeMitigation`], and a
//! Kubernetes [`LabelSelector`] that picks the pods it covers. Rule ids are known when they are
//! in the [`catalogue`] (the Falco rule names of the stable, incubating and sandbox rules files)
//! or follow the product's own `TM-########` / custom `CR-########` pattern (8 digits).
//!
//! # The catalogue data file
//!
//! `data/runtime-rules.json` (in this crate) is GENERATED from the Falco rules files in
//! `../shared/conformance/falco-rules/` by [`catalogue_from_falco`] and [`catalogue_to_json`];
//! the engine embeds it with `include_str!` and parses it once, lazily. The test
//! `tests/runtime_catalogue.rs` regenerates it and fails unless the committed file is
//! byte-identical; to rewrite the file after the Falco files change, run
//!
//! ```text
//! PORTCULLIS_REGENERATE=1 cargo test -p portcullis-engine --test runtime_catalogue
//! ```
//!
//! # Choices where POLICY.md is silent
//!
//! - A ruleset `description` is at most 128 characters (Unicode scalar values), the same
//!   limit as a policy's; it defaults to `""`. `labels` defaults to the empty selector (all
//!   pods); `rules` is required (it may be empty).
//! - Disabled Falco rules (`enabled: false`) are still known ids: a ruleset may enable them.
//! - Label selectors are validated as Kubernetes' `ValidateLabelSelector` does, with label
//!   values in `matchExpressions` validated too; `null` lists and maps read as empty.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};
use yaml_serde::Value;

use crate::policy::FieldError;
use crate::serde_util::nullable as null_as_default;
pub(crate) use crate::serde_util::{parse_json, parse_yaml};

// ---------------------------------------------------------------------------------------------
// Names shared by rulesets and attestors.

/// Maximum length of a ruleset or attestor name, in characters.
pub const MAX_NAME_LEN: usize = 64;
/// Maximum length of a ruleset description, in characters.
pub const MAX_DESCRIPTION_LEN: usize = 128;
/// Maximum number of rules in one ruleset.
pub const MAX_RULES: usize = 100;

/// Checks a ruleset or attestor name: `^[A-Za-z0-9_.-]+$`, 1-64 characters.
pub(crate) fn name_error(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("must not be empty".to_owned());
    }
    let len = name.chars().count();
    if len > MAX_NAME_LEN {
        return Some(format!("must be at most {MAX_NAME_LEN} characters, got {len}"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Some(format!("{name:?} may contain only letters, digits, '_', '.' and '-'"));
    }
    None
}

// ---------------------------------------------------------------------------------------------
// The catalogue.

/// Which Falco rules file a catalogue entry comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FalcoSource {
    /// `falco_rules.yaml`.
    Stable,
    /// `falco-incubating_rules.yaml`.
    Incubating,
    /// `falco-sandbox_rules.yaml`.
    Sandbox,
}

impl FalcoSource {
    /// All sources, in the order Falco loads them.
    pub const ALL: [FalcoSource; 3] = [Self::Stable, Self::Incubating, Self::Sandbox];

    /// The rules file's name in falcosecurity/rules' `rules/` folder.
    pub fn file_name(self) -> &'static str {
        match self {
            Self::Stable => "falco_rules.yaml",
            Self::Incubating => "falco-incubating_rules.yaml",
            Self::Sandbox => "falco-sandbox_rules.yaml",
        }
    }

    /// The name used in the catalogue: `stable`, `incubating` or `sandbox`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stable => "stable",
            Self::Incubating => "incubating",
            Self::Sandbox => "sandbox",
        }
    }
}

impl fmt::Display for FalcoSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One known Falco rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogueEntry {
    /// The Falco rule name, used as the runtime rule id.
    pub id: String,
    /// The rule's `desc`, whitespace runs collapsed to one space.
    pub description: String,
    /// The rule's `priority` as written, upper-cased (e.g. `WARNING`).
    pub priority: String,
    /// The rule's tags, in file order.
    pub tags: Vec<String>,
    /// The rules file that defines the rule.
    pub source: FalcoSource,
    /// Whether Falco loads the rule enabled.
    pub enabled: bool,
}

/// Why a catalogue could not be built or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogueError {
    /// A Falco rules file is not valid YAML.
    #[error("{file} rules: invalid YAML: {message}")]
    Yaml {
        /// The file.
        file: FalcoSource,
        /// The parser's message.
        message: String,
    },
    /// A Falco rules file's structure is not the one Falco loads.
    #[error("{file} rules: {message}")]
    Structure {
        /// The file.
        file: FalcoSource,
        /// What is wrong.
        message: String,
    },
    /// A rule item lacks a field, or a field has the wrong form.
    #[error("{file} rules: rule {rule:?}: {message}")]
    Rule {
        /// The file.
        file: FalcoSource,
        /// The rule name.
        rule: String,
        /// What is wrong.
        message: String,
    },
    /// The catalogue data file does not parse or is not sorted by unique id.
    #[error("runtime rule catalogue: {0}")]
    Data(String),
}

/// The catalogue of known Falco rule ids, sorted by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalogue {
    entries: Vec<CatalogueEntry>,
}

impl Catalogue {
    /// Reads the catalogue data file's JSON (an array of entries sorted by unique id).
    pub fn from_json(text: &str) -> Result<Self, CatalogueError> {
        let entries: Vec<CatalogueEntry> =
            serde_json::from_str(text).map_err(|e| CatalogueError::Data(e.to_string()))?;
        if let Some(pair) = entries.windows(2).find(|w| match w {
            [a, b] => a.id >= b.id,
            _ => false,
        }) {
            let ids: Vec<&str> = pair.iter().map(|e| e.id.as_str()).collect();
            return Err(CatalogueError::Data(format!(
                "entries are not sorted by unique id at {ids:?}"
            )));
        }
        Ok(Self { entries })
    }

    /// The entry for a Falco rule name, matched exactly.
    pub fn get(&self, id: &str) -> Option<&CatalogueEntry> {
        self.entries
            .binary_search_by(|e| e.id.as_str().cmp(id))
            .ok()
            .and_then(|i| self.entries.get(i))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the catalogue has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// All entries, sorted by id.
    pub fn entries(&self) -> &[CatalogueEntry] {
        &self.entries
    }
}

/// The catalogue data file, as committed.
pub const CATALOGUE_JSON: &str = include_str!("../data/runtime-rules.json");

static CATALOGUE: LazyLock<Catalogue> =
    // The data file is generated and checked by tests (tests/runtime_catalogue.rs asserts it
    // parses and is non-empty), so the empty fallback is never expected at run time.
    LazyLock::new(|| Catalogue::from_json(CATALOGUE_JSON).unwrap_or_default());

/// The embedded catalogue of known Falco rule ids, parsed on first use.
pub fn catalogue() -> &'static Catalogue {
    &CATALOGUE
}

/// Whether `id` is a product (`TM-`) or custom (`CR-`) rule id: the prefix and 8 digits.
pub fn is_product_rule_id(id: &str) -> bool {
    let digits = id.strip_prefix("TM-").or_else(|| id.strip_prefix("CR-"));
    digits.is_some_and(|d| d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether `id` names a known runtime rule: a catalogue entry or a `TM-`/`CR-` id.
pub fn is_known_rule_id(id: &str) -> bool {
    is_product_rule_id(id) || catalogue().get(id).is_some()
}

/// Renders catalogue entries as the data file's text: pretty JSON with a trailing newline.
pub fn catalogue_to_json(entries: &[CatalogueEntry]) -> Result<String, CatalogueError> {
    let mut text = serde_json::to_string_pretty(entries).map_err(|e| CatalogueError::Data(e.to_string()))?;
    text.push('\n');
    Ok(text)
}

/// Falco's rule priorities; Falco reads them case-insensitively.
const FALCO_PRIORITIES: [&str; 9] = [
    "EMERGENCY",
    "ALERT",
    "CRITICAL",
    "ERROR",
    "WARNING",
    "NOTICE",
    "INFORMATIONAL",
    "INFO",
    "DEBUG",
];

/// Builds the catalogue from Falco rules files, loaded in the given order as Falco loads them.
///
/// Macros, lists and `required_*` items are ignored; key order does not matter; folded and
/// multi-line scalars are read as YAML reads them. A rule item defines a rule, or replaces an
/// earlier one of the same name (as Falco does); an item with `append: true`, an `override`
/// map, or only `enabled` updates an existing rule and never creates a second entry. Keys the
/// catalogue does not record (`condition`, `output`, `exceptions`, `source`, ...) are accepted
/// and ignored. The result is sorted by id.
pub fn catalogue_from_falco(files: &[(FalcoSource, &str)]) -> Result<Vec<CatalogueEntry>, CatalogueError> {
    let mut rules: BTreeMap<String, CatalogueEntry> = BTreeMap::new();
    for &(source, text) in files {
        let doc: Value = yaml_serde::from_str(text).map_err(|e| CatalogueError::Yaml {
            file: source,
            message: e.to_string(),
        })?;
        let items = match doc {
            // An empty file is a valid, empty rules file.
            Value::Null => continue,
            Value::Sequence(items) => items,
            _ => {
                return Err(CatalogueError::Structure {
                    file: source,
                    message: "the document is not a list of items".to_owned(),
                });
            }
        };
        for (index, item) in items.iter().enumerate() {
            let Value::Mapping(map) = item else {
                return Err(CatalogueError::Structure {
                    file: source,
                    message: format!("item {index} is not a map"),
                });
            };
            let Some(name) = map.get("rule") else {
                // macro, list, required_engine_version, required_plugin_versions, ...
                continue;
            };
            let Some(name) = name.as_str() else {
                return Err(CatalogueError::Structure {
                    file: source,
                    message: format!("item {index}: `rule` is not a string"),
                });
            };
            apply_rule_item(&mut rules, source, name, map)?;
        }
    }
    Ok(rules.into_values().collect())
}

fn apply_rule_item(
    rules: &mut BTreeMap<String, CatalogueEntry>,
    source: FalcoSource,
    name: &str,
    map: &yaml_serde::Mapping,
) -> Result<(), CatalogueError> {
    let err = |message: String| CatalogueError::Rule {
        file: source,
        rule: name.to_owned(),
        message,
    };
    let append = match map.get("append") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(err("`append` is not a boolean".to_owned())),
    };
    let overrides = match map.get("override") {
        None | Some(Value::Null) => None,
        Some(Value::Mapping(m)) => Some(m),
        Some(_) => return Err(err("`override` is not a map".to_owned())),
    };
    let enabled_only = map.len() == 2 && map.contains_key("enabled");

    if overrides.is_none() && !append && !enabled_only {
        // A definition; a later definition of the same name replaces the earlier one.
        let entry = CatalogueEntry {
            id: name.to_owned(),
            description: normalise(&required_text(map, "desc").map_err(&err)?),
            priority: priority(map).map_err(&err)?,
            tags: tags(map).map_err(&err)?.unwrap_or_default(),
            source,
            enabled: enabled(map).map_err(&err)?.unwrap_or(true),
        };
        rules.insert(name.to_owned(), entry);
        return Ok(());
    }

    let Some(entry) = rules.get_mut(name) else {
        return Err(err(
            "updates a rule (append, override or enabled) that no earlier item defines".to_owned(),
        ));
    };
    if let Some(overrides) = overrides {
        for (field, mode) in overrides {
            let (Some(field), Some(mode)) = (field.as_str(), mode.as_str()) else {
                return Err(err("`override` entries must be `field: append|replace`".to_owned()));
            };
            let append_mode = match mode {
                "append" => true,
                "replace" => false,
                other => {
                    return Err(err(format!(
                        "override mode {other:?} for {field:?} is neither append nor replace"
                    )));
                }
            };
            if !map.contains_key(field) {
                return Err(err(format!("overrides {field:?} but does not give it")));
            }
            match (field, append_mode) {
                ("desc", true) => {
                    let more = required_text(map, "desc").map_err(&err)?;
                    entry.description = normalise(&format!("{} {more}", entry.description));
                }
                ("desc", false) => {
                    entry.description = normalise(&required_text(map, "desc").map_err(&err)?);
                }
                ("tags", true) => append_tags(entry, tags(map).map_err(&err)?),
                ("tags", false) => entry.tags = tags(map).map_err(&err)?.unwrap_or_default(),
                ("priority", false) => entry.priority = priority(map).map_err(&err)?,
                ("enabled", false) => {
                    if let Some(on) = enabled(map).map_err(&err)? {
                        entry.enabled = on;
                    }
                }
                ("priority" | "enabled", true) => {
                    return Err(err(format!("{field:?} can only be replaced, not appended")));
                }
                // condition, output, exceptions, ...: not recorded in the catalogue.
                _ => {}
            }
        }
    } else if append {
        // Legacy append: desc and tags are extended; condition, output, exceptions are not ours.
        if map.contains_key("desc") {
            let more = required_text(map, "desc").map_err(&err)?;
            entry.description = normalise(&format!("{} {more}", entry.description));
        }
        append_tags(entry, tags(map).map_err(&err)?);
    } else if let Some(on) = enabled(map).map_err(&err)? {
        // Legacy `- rule: X` + `enabled: ...` only: switches an existing rule on or off.
        entry.enabled = on;
    }
    Ok(())
}

fn append_tags(entry: &mut CatalogueEntry, more: Option<Vec<String>>) {
    for tag in more.unwrap_or_default() {
        if !entry.tags.contains(&tag) {
            entry.tags.push(tag);
        }
    }
}

fn normalise(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A scalar's text: strings as written, numbers and booleans as YAML prints them.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn required_text(map: &yaml_serde::Mapping, key: &str) -> Result<String, String> {
    match map.get(key) {
        None | Some(Value::Null) => Err(format!("`{key}` is missing")),
        Some(v) => scalar_text(v).ok_or_else(|| format!("`{key}` is not a scalar")),
    }
}

fn priority(map: &yaml_serde::Mapping) -> Result<String, String> {
    let written = required_text(map, "priority")?;
    let upper = written.trim().to_ascii_uppercase();
    if FALCO_PRIORITIES.contains(&upper.as_str()) {
        Ok(upper)
    } else {
        Err(format!("unknown priority {written:?}"))
    }
}

fn tags(map: &yaml_serde::Mapping) -> Result<Option<Vec<String>>, String> {
    match map.get("tags") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Sequence(items)) => items
            .iter()
            .map(|t| scalar_text(t).ok_or_else(|| "`tags` holds a non-scalar".to_owned()))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err("`tags` is not a list".to_owned()),
    }
}

fn enabled(map: &yaml_serde::Mapping) -> Result<Option<bool>, String> {
    match map.get("enabled") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err("`enabled` is not a boolean".to_owned()),
    }
}

// ---------------------------------------------------------------------------------------------
// Rulesets.

/// What a runtime rule's detection does to the pod; ordered weakest first, so `max` is the
/// strongest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeMitigation {
    /// Record the event only.
    Log,
    /// Isolate the pod (network policy) until an explicit restore.
    Isolate,
    /// Terminate the pod.
    Terminate,
}

/// A label selector requirement's operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum LabelOperator {
    /// The label is present with one of the values.
    In,
    /// The label is absent or has none of the values.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

impl fmt::Display for LabelOperator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::In => "In",
            Self::NotIn => "NotIn",
            Self::Exists => "Exists",
            Self::DoesNotExist => "DoesNotExist",
        })
    }
}

/// One `matchExpressions` entry of a [`LabelSelector`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    /// The label key.
    pub key: String,
    /// How the label is tested.
    pub operator: LabelOperator,
    /// The values for `In` / `NotIn`; none for `Exists` / `DoesNotExist`.
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// A Kubernetes label selector; the empty selector matches every pod.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    /// Labels that must be present with exactly these values.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub match_labels: BTreeMap<String, String>,
    /// Requirements that must all hold.
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

impl LabelSelector {
    /// Whether the selector has no requirement (it then matches every pod).
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// Whether a pod with these labels is selected: every `matchLabels` pair and every
    /// expression holds (Kubernetes semantics: `NotIn` holds when the label is absent). An
    /// `In` with no values (refused by validation) selects nothing.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|req| {
                let value = labels.get(&req.key);
                match req.operator {
                    LabelOperator::In => value.is_some_and(|v| req.values.contains(v)),
                    LabelOperator::NotIn => !value.is_some_and(|v| req.values.contains(v)),
                    LabelOperator::Exists => value.is_some(),
                    LabelOperator::DoesNotExist => value.is_none(),
                }
            })
    }

    /// All validation errors, paths prefixed with `path` (e.g. `labels`).
    pub fn validate_at(&self, path: &str) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let labels_path = format!("{path}.matchLabels");
        for (key, value) in &self.match_labels {
            for msg in label_key_errors(key) {
                errors.push(FieldError::new(&labels_path, format!("key {key:?}: {msg}")));
            }
            for msg in label_value_errors(value) {
                errors.push(FieldError::new(
                    &labels_path,
                    format!("value {value:?} of {key:?}: {msg}"),
                ));
            }
        }
        for (i, req) in self.match_expressions.iter().enumerate() {
            let at = format!("{path}.matchExpressions[{i}]");
            for msg in label_key_errors(&req.key) {
                errors.push(FieldError::new(format!("{at}.key"), format!("{:?}: {msg}", req.key)));
            }
            match req.operator {
                LabelOperator::In | LabelOperator::NotIn if req.values.is_empty() => {
                    errors.push(FieldError::new(
                        format!("{at}.values"),
                        format!("must be specified when `operator` is '{}'", req.operator),
                    ));
                }
                LabelOperator::Exists | LabelOperator::DoesNotExist if !req.values.is_empty() => {
                    errors.push(FieldError::new(
                        format!("{at}.values"),
                        format!("may not be specified when `operator` is '{}'", req.operator),
                    ));
                }
                _ => {}
            }
            for (j, value) in req.values.iter().enumerate() {
                for msg in label_value_errors(value) {
                    errors.push(FieldError::new(
                        format!("{at}.values[{j}]"),
                        format!("{value:?}: {msg}"),
                    ));
                }
            }
        }
        errors
    }
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, Kubernetes' qualified-name part.
fn is_qualified_name_part(s: &str) -> bool {
    let bytes = s.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// An RFC 1123 DNS subdomain: at most 253 characters, dot-separated lower-case labels.
fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            let bytes = label.as_bytes();
            match (bytes.first(), bytes.last()) {
                (Some(first), Some(last)) => {
                    (first.is_ascii_lowercase() || first.is_ascii_digit())
                        && (last.is_ascii_lowercase() || last.is_ascii_digit())
                        && bytes
                            .iter()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
                }
                _ => false,
            }
        })
}

const NAME_PART_CHARSET: &str = "must consist of alphanumeric characters, '-', '_' or '.', \
     and must start and end with an alphanumeric character";

/// Kubernetes' `IsQualifiedName`: an optional DNS-subdomain prefix and `/`, then a name part.
fn label_key_errors(key: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let mut parts = key.splitn(3, '/');
    let (prefix, name) = match (parts.next(), parts.next(), parts.next()) {
        (Some(name), None, _) => (None, name),
        (Some(prefix), Some(name), None) => (Some(prefix), name),
        _ => {
            return vec![format!(
                "a qualified name {NAME_PART_CHARSET}, with an optional DNS subdomain prefix \
                 and '/' (e.g. 'example.com/MyName')"
            )];
        }
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            errors.push("prefix part must be non-empty".to_owned());
        } else if !is_dns1123_subdomain(prefix) {
            errors.push("prefix part must be a lowercase RFC 1123 subdomain of at most 253 characters".to_owned());
        }
    }
    if name.is_empty() {
        errors.push("name part must be non-empty".to_owned());
    } else {
        if name.len() > 63 {
            errors.push("name part must be no more than 63 characters".to_owned());
        }
        if !is_qualified_name_part(name) {
            errors.push(format!("name part {NAME_PART_CHARSET}"));
        }
    }
    errors
}

/// Kubernetes' `IsValidLabelValue`: empty, or at most 63 characters of the name-part charset.
fn label_value_errors(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > 63 {
        errors.push("must be no more than 63 characters".to_owned());
    }
    if !value.is_empty() && !is_qualified_name_part(value) {
        errors.push(format!("a valid label must be an empty string or {NAME_PART_CHARSET}"));
    }
    errors
}

/// One rule of a ruleset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RulesetRule {
    /// A known runtime rule id (see [`is_known_rule_id`]).
    pub id: String,
    /// What a detection by this rule does.
    pub mitigation: RuntimeMitigation,
}

/// A runtime ruleset document (the store assigns its `id` separately).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ruleset {
    /// `^[A-Za-z0-9_.-]+$`, 1-64 characters; unique per tenant, immutable.
    pub name: String,
    /// At most 128 characters; default `""`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub description: String,
    /// The pods the ruleset covers; empty (the default) selects all pods.
    #[serde(default, deserialize_with = "null_as_default")]
    pub labels: LabelSelector,
    /// At most 100 rules with unique ids.
    pub rules: Vec<RulesetRule>,
}

impl Ruleset {
    /// Parses a JSON ruleset document; the error names the failing field.
    pub fn from_json(text: &str) -> Result<Self, FieldError> {
        parse_json(text.as_bytes())
    }

    /// Parses a YAML ruleset document; the error names the failing field.
    pub fn from_yaml(text: &str) -> Result<Self, FieldError> {
        parse_yaml(text)
    }

    /// Checks the ruleset against POLICY.md section 5, returning every error found.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        if let Some(msg) = name_error(&self.name) {
            errors.push(FieldError::new("name", msg));
        }
        let desc_len = self.description.chars().count();
        if desc_len > MAX_DESCRIPTION_LEN {
            errors.push(FieldError::new(
                "description",
                format!("must be at most {MAX_DESCRIPTION_LEN} characters, got {desc_len}"),
            ));
        }
        errors.extend(self.labels.validate_at("labels"));
        if self.rules.len() > MAX_RULES {
            errors.push(FieldError::new(
                "rules",
                format!("at most {MAX_RULES} rules, got {}", self.rules.len()),
            ));
        }
        let mut first_index: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let path = format!("rules[{i}].id");
            if let Some(first) = first_index.get(rule.id.as_str()) {
                errors.push(FieldError::new(
                    path,
                    format!("{:?} duplicates rules[{first}].id", rule.id),
                ));
                continue;
            }
            first_index.insert(&rule.id, i);
            if !is_known_rule_id(&rule.id) {
                errors.push(FieldError::new(
                    path,
                    format!("{:?} is not a known runtime rule", rule.id),
                ));
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }

    /// The strongest mitigation this ruleset orders for a detection of `rule_id` in a pod with
    /// `labels`; `None` when the selector does not select the pod or the rule is not listed.
    pub fn strongest_for(&self, rule_id: &str, labels: &BTreeMap<String, String>) -> Option<RuntimeMitigation> {
        if !self.labels.matches(labels) {
            return None;
        }
        self.rules
            .iter()
            .filter(|r| r.id == rule_id)
            .map(|r| r.mitigation)
            .max()
    }
}
