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

// ---------------------------------------------------------------------------------------------
// Matching runtime events to rulesets.

/// One runtime detection, as far as ruleset matching reads it.
#[derive(Debug, Clone, Copy)]
pub struct RuntimeEvent<'a> {
    /// The detection rule's id (the Falco rule name, or a `TM-`/`CR-` id).
    pub rule: &'a str,
    /// The pod's namespace.
    pub namespace: &'a str,
    /// The pod's labels (the event's `k8s.pod.labels`, else the inventory's).
    pub pod_labels: &'a BTreeMap<String, String>,
    /// The container's image reference, when the event names it.
    pub image: Option<&'a str>,
}

/// One ruleset entry that matched an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchedEntry {
    /// The ruleset's id (as the policy references it).
    pub ruleset_id: String,
    /// The ruleset's name.
    pub ruleset_name: String,
    /// The rule id the entry lists.
    pub rule_id: String,
    /// The entry's mitigation.
    pub mitigation: RuntimeMitigation,
}

/// Why matched entries order nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeExemption {
    /// The cluster's settings exclude the pod's namespace.
    NamespaceExcluded,
    /// The container runs an image the deployment trusts.
    TrustedImage,
}

/// What the rulesets make of one runtime event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeMatch {
    /// The strongest mitigation of the matched entries; `None` when nothing matched or the
    /// pod is exempt.
    pub mitigation: Option<RuntimeMitigation>,
    /// Every matching entry, in the order of the policy's ruleset references (listed even
    /// when exempt, so that the record says what would have applied).
    pub matched: Vec<MatchedEntry>,
    /// Set when entries matched but the pod is exempt.
    pub exemption: Option<RuntimeExemption>,
}

/// One referenced ruleset, kept for matching.
#[derive(Debug, Clone)]
struct IndexedRuleset {
    id: String,
    name: String,
    selector: LabelSelector,
}

/// The rulesets a policy references, indexed by rule id for matching runtime events.
///
/// Built once per policy revision (and ruleset change); matching an event costs one hash
/// lookup by rule id, then one selector check per ruleset listing that rule.
#[derive(Debug, Clone, Default)]
pub struct CompiledRulesets {
    rulesets: Vec<IndexedRuleset>,
    /// Rule id → (index into `rulesets`, mitigation), in reference order.
    by_rule: std::collections::HashMap<String, Vec<(usize, RuntimeMitigation)>>,
    /// Referenced ids with no ruleset given.
    missing: Vec<String>,
}

impl CompiledRulesets {
    /// Indexes the rulesets `references` name (a policy's `runtime.rulesets`), looking each
    /// id up in `rulesets` (id → document). A reference to an id `rulesets` lacks is
    /// recorded in [`CompiledRulesets::missing`], never dropped silently; a repeated
    /// reference counts once.
    pub fn new<'r>(
        references: &[crate::policy::RulesetRef],
        rulesets: impl IntoIterator<Item = (&'r str, &'r Ruleset)>,
    ) -> CompiledRulesets {
        let given: std::collections::HashMap<&str, &Ruleset> = rulesets.into_iter().collect();
        let mut compiled = CompiledRulesets::default();
        for reference in references {
            if compiled.rulesets.iter().any(|r| r.id == reference.id) || compiled.missing.contains(&reference.id) {
                continue;
            }
            let Some(ruleset) = given.get(reference.id.as_str()) else {
                compiled.missing.push(reference.id.clone());
                continue;
            };
            let index = compiled.rulesets.len();
            compiled.rulesets.push(IndexedRuleset {
                id: reference.id.clone(),
                name: ruleset.name.clone(),
                selector: ruleset.labels.clone(),
            });
            for rule in &ruleset.rules {
                let entries = compiled.by_rule.entry(rule.id.clone()).or_default();
                // A ruleset listing a rule twice (refused by validation) keeps its strongest.
                match entries.iter_mut().find(|(i, _)| *i == index) {
                    Some((_, m)) => *m = (*m).max(rule.mitigation),
                    None => entries.push((index, rule.mitigation)),
                }
            }
        }
        compiled
    }

    /// [`CompiledRulesets::new`] over a policy document's `runtime.rulesets`.
    pub fn for_policy<'r>(
        policy: &crate::policy::PolicyDocument,
        rulesets: impl IntoIterator<Item = (&'r str, &'r Ruleset)>,
    ) -> CompiledRulesets {
        let references = policy.runtime.as_ref().map_or(&[][..], |r| r.rulesets.as_slice());
        CompiledRulesets::new(references, rulesets)
    }

    /// The referenced ruleset ids that were not given (the caller reports them).
    pub fn missing(&self) -> &[String] {
        &self.missing
    }

    /// Whether no ruleset lists any rule (no event can match).
    pub fn is_empty(&self) -> bool {
        self.by_rule.is_empty()
    }

    /// Matches one event: the entries listing its rule whose ruleset's selector selects the
    /// pod's labels, and their strongest mitigation. A pod in a namespace the cluster
    /// excludes ([`is_excluded_namespace`](crate::evaluate::is_excluded_namespace), as
    /// admission decides it) or running a trusted image ([`TrustedImage::matches`], as
    /// admission exempts it) is never mitigated. An unknown rule matches nothing.
    pub fn match_event(
        &self,
        event: &RuntimeEvent<'_>,
        excluded_namespaces: &[String],
        trusted_images: &[crate::evaluate::TrustedImage],
    ) -> RuntimeMatch {
        let mut result = RuntimeMatch {
            mitigation: None,
            matched: Vec::new(),
            exemption: None,
        };
        let Some(entries) = self.by_rule.get(event.rule) else {
            return result;
        };
        for &(index, mitigation) in entries {
            let Some(ruleset) = self.rulesets.get(index) else {
                continue;
            };
            if ruleset.selector.matches(event.pod_labels) {
                result.matched.push(MatchedEntry {
                    ruleset_id: ruleset.id.clone(),
                    ruleset_name: ruleset.name.clone(),
                    rule_id: event.rule.to_owned(),
                    mitigation,
                });
            }
        }
        if result.matched.is_empty() {
            return result;
        }
        if crate::evaluate::is_excluded_namespace(excluded_namespaces, event.namespace) {
            result.exemption = Some(RuntimeExemption::NamespaceExcluded);
        } else if !trusted_images.is_empty()
            && event
                .image
                .and_then(|i| crate::image_ref::ImageRef::parse(i).ok())
                .is_some_and(|image| trusted_images.iter().any(|t| t.matches(&image)))
        {
            result.exemption = Some(RuntimeExemption::TrustedImage);
        } else {
            result.mitigation = result.matched.iter().map(|m| m.mitigation).max();
        }
        result
    }
}

#[cfg(test)]
mod matching_tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

    use super::*;
    use crate::evaluate::TrustedImage;
    use crate::policy::RulesetRef;

    fn ruleset(name: &str, labels: &str, rules: &[(&str, &str)]) -> Ruleset {
        let rules: Vec<String> = rules
            .iter()
            .map(|(id, m)| format!(r#"{{"id":"{id}","mitigation":"{m}"}}"#))
            .collect();
        Ruleset::from_json(&format!(
            r#"{{"name":"{name}","labels":{labels},"rules":[{}]}}"#,
            rules.join(",")
        ))
        .unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn refs(ids: &[&str]) -> Vec<RulesetRef> {
        ids.iter().map(|id| RulesetRef { id: (*id).to_owned() }).collect()
    }

    fn event<'a>(rule: &'a str, labels: &'a BTreeMap<String, String>) -> RuntimeEvent<'a> {
        RuntimeEvent {
            rule,
            namespace: "apps",
            pod_labels: labels,
            image: Some("registry.example.com/shop/web:1.2"),
        }
    }

    fn selector(json: &str) -> LabelSelector {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn selectors_follow_kubernetes_semantics() {
        let pod = labels(&[("app", "web"), ("tier", "front")]);
        let none = labels(&[]);
        // Empty selector: every pod, even one without labels.
        assert!(selector("{}").matches(&pod));
        assert!(selector("{}").matches(&none));
        // matchLabels: every pair, exact value.
        assert!(selector(r#"{"matchLabels":{"app":"web"}}"#).matches(&pod));
        assert!(!selector(r#"{"matchLabels":{"app":"web","tier":"back"}}"#).matches(&pod));
        assert!(!selector(r#"{"matchLabels":{"app":"web"}}"#).matches(&none));
        // In: present with one of the values.
        let in_ = r#"{"matchExpressions":[{"key":"tier","operator":"In","values":["front","mid"]}]}"#;
        assert!(selector(in_).matches(&pod));
        assert!(!selector(in_).matches(&none));
        assert!(!selector(in_).matches(&labels(&[("tier", "back")])));
        // NotIn: absent, or none of the values.
        let not_in = r#"{"matchExpressions":[{"key":"tier","operator":"NotIn","values":["front"]}]}"#;
        assert!(!selector(not_in).matches(&pod));
        assert!(selector(not_in).matches(&none), "NotIn holds when the label is absent");
        assert!(selector(not_in).matches(&labels(&[("tier", "back")])));
        // Exists / DoesNotExist: by key, whatever the value (the empty value included).
        let exists = r#"{"matchExpressions":[{"key":"tier","operator":"Exists"}]}"#;
        let absent = r#"{"matchExpressions":[{"key":"tier","operator":"DoesNotExist"}]}"#;
        assert!(selector(exists).matches(&labels(&[("tier", "")])));
        assert!(!selector(exists).matches(&none));
        assert!(selector(absent).matches(&none));
        assert!(!selector(absent).matches(&pod));
        // matchLabels and expressions are AND-ed.
        let both = r#"{"matchLabels":{"app":"web"},"matchExpressions":[{"key":"tier","operator":"DoesNotExist"}]}"#;
        assert!(!selector(both).matches(&pod));
        assert!(selector(both).matches(&labels(&[("app", "web")])));
    }

    #[test]
    fn the_strongest_mitigation_of_the_matching_entries_wins() {
        let a = ruleset("audit", "{}", &[("TM-00000001", "log"), ("TM-00000002", "log")]);
        let b = ruleset(
            "web",
            r#"{"matchLabels":{"app":"web"}}"#,
            &[("TM-00000001", "terminate"), ("TM-00000003", "isolate")],
        );
        let c = ruleset("db", r#"{"matchLabels":{"app":"db"}}"#, &[("TM-00000001", "isolate")]);
        let rulesets = [("r-a", &a), ("r-b", &b), ("r-c", &c)];
        let compiled = CompiledRulesets::new(&refs(&["r-a", "r-b", "r-c"]), rulesets);
        assert!(compiled.missing().is_empty());

        let web = labels(&[("app", "web")]);
        let m = compiled.match_event(&event("TM-00000001", &web), &[], &[]);
        assert_eq!(m.mitigation, Some(RuntimeMitigation::Terminate));
        assert_eq!(m.exemption, None);
        let names: Vec<(&str, RuntimeMitigation)> = m
            .matched
            .iter()
            .map(|e| (e.ruleset_id.as_str(), e.mitigation))
            .collect();
        assert_eq!(
            names,
            [("r-a", RuntimeMitigation::Log), ("r-b", RuntimeMitigation::Terminate)],
            "the db ruleset's selector does not select a web pod"
        );

        let db = labels(&[("app", "db")]);
        let m = compiled.match_event(&event("TM-00000001", &db), &[], &[]);
        assert_eq!(m.mitigation, Some(RuntimeMitigation::Isolate));
        assert_eq!(m.matched.len(), 2);

        // A rule only a ruleset that does not select the pod lists: nothing.
        let m = compiled.match_event(&event("TM-00000003", &db), &[], &[]);
        assert_eq!((m.mitigation, m.matched.len()), (None, 0));
    }

    #[test]
    fn an_unknown_or_unlisted_rule_matches_nothing() {
        let a = ruleset("audit", "{}", &[("TM-00000001", "terminate")]);
        let compiled = CompiledRulesets::new(&refs(&["r-a"]), [("r-a", &a)]);
        let pod = labels(&[]);
        for rule in ["TM-00000009", "No such Falco rule", ""] {
            let m = compiled.match_event(&event(rule, &pod), &[], &[]);
            assert_eq!(
                m,
                RuntimeMatch {
                    mitigation: None,
                    matched: Vec::new(),
                    exemption: None
                },
                "{rule:?}"
            );
        }
    }

    #[test]
    fn only_referenced_rulesets_apply_and_missing_references_are_reported() {
        let a = ruleset("audit", "{}", &[("TM-00000001", "isolate")]);
        let b = ruleset("strict", "{}", &[("TM-00000001", "terminate")]);
        // The policy references r-a and a ruleset nobody gave; r-b is the tenant's but unused.
        let compiled = CompiledRulesets::new(&refs(&["r-a", "r-gone", "r-a"]), [("r-a", &a), ("r-b", &b)]);
        assert_eq!(compiled.missing(), ["r-gone".to_owned()]);
        let pod = labels(&[]);
        let m = compiled.match_event(&event("TM-00000001", &pod), &[], &[]);
        assert_eq!(m.mitigation, Some(RuntimeMitigation::Isolate));
        assert_eq!(m.matched.len(), 1, "a repeated reference counts once");

        // A policy without a runtime section references nothing.
        let policy = crate::policy::PolicyDocument::parse_valid("name: p\ndefault:\n  rules: []\n").unwrap();
        let none = CompiledRulesets::for_policy(&policy.document, [("r-a", &a)]);
        assert!(none.is_empty());
        assert_eq!(none.match_event(&event("TM-00000001", &pod), &[], &[]).mitigation, None);
    }

    #[test]
    fn excluded_namespaces_and_trusted_images_are_never_mitigated() {
        let a = ruleset("strict", "{}", &[("TM-00000001", "terminate")]);
        let compiled = CompiledRulesets::new(&refs(&["r-a"]), [("r-a", &a)]);
        let pod = labels(&[]);
        let excluded = vec!["kube-system".to_owned(), "apps".to_owned()];
        let m = compiled.match_event(&event("TM-00000001", &pod), &excluded, &[]);
        assert_eq!(m.mitigation, None);
        assert_eq!(m.exemption, Some(RuntimeExemption::NamespaceExcluded));
        assert_eq!(m.matched.len(), 1, "what would have applied is still said");
        // Exact names only, as admission reads them.
        let m = compiled.match_event(&event("TM-00000001", &pod), &["app".to_owned()], &[]);
        assert_eq!(m.mitigation, Some(RuntimeMitigation::Terminate));

        let trusted = [TrustedImage::parse("registry.example.com/shop/web").unwrap()];
        let m = compiled.match_event(&event("TM-00000001", &pod), &[], &trusted);
        assert_eq!(m.mitigation, None);
        assert_eq!(m.exemption, Some(RuntimeExemption::TrustedImage));
        // Trust is by exact repository, never a prefix; an event without an image is not exempt.
        let other = [TrustedImage::parse("registry.example.com/shop").unwrap()];
        let m = compiled.match_event(&event("TM-00000001", &pod), &[], &other);
        assert_eq!(m.mitigation, Some(RuntimeMitigation::Terminate));
        let mut no_image = event("TM-00000001", &pod);
        no_image.image = None;
        assert_eq!(
            compiled.match_event(&no_image, &[], &trusted).mitigation,
            Some(RuntimeMitigation::Terminate)
        );
    }
}
