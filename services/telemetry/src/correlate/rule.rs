//! Correlation rules: their YAML schema, validation, and matching events.
//!
//! ```yaml
//! name: isolated-pod-keeps-detecting   # required: lowercase letters, digits and `-`, at most 63
//! description: ...                     # required: one line for people, the alert's title
//! severity: high                       # required: the alerts' severity (info .. critical)
//! entity: [cluster, namespace, pod]    # required: the fields that group events, a non-empty
//!                                      #   set of cluster, namespace, workload, pod, image
//! window: 30m                          # required: a duration, 1s to 7 days
//! # then exactly one of:
//! sequence:                            # steps that must happen in this order (event time;
//!   - match: {source: [mitigation], action: [isolate]}   # ties by arrival), all within
//!   - match: {source: [runtime]}                          # `window` of the first one;
//!     count: 3                                            # `count` (default 1) events each
//! threshold:                           # `count` events matching any of `match` within
//!   count: 3                           #   `window`; with `distinct`, `count` different
//!   distinct: cluster                  #   values of that field (cluster, namespace,
//!   match:                             #   workload, pod, image, rule)
//!     - {source: [admission], action: [block]}
//! ```
//!
//! A matcher holds when every condition it has holds (at least one is required); a list
//! means any of: `source` (runtime, admission, finding, mitigation, signature), `action`
//! (see [`crate::event`]), `rule` (exact), `rule_contains` (ASCII case ignored),
//! `subresource` (admission: `exec`, `attach`, ...), `min_severity`.
//!
//! The entity fields are read from each event: `cluster` its cluster id, `namespace`,
//! `workload` (kind and name), `pod` (namespace and name), `image` its digest. An event
//! without a value for one of its rule's entity fields (no digest for `image`, no pod for
//! `pod`, ...) takes no part in that rule.

use std::time::Duration;

use compact_str::CompactString;
use serde::Deserialize;

use crate::event::{Action, SecurityEvent, Severity, Source};

/// Longest window a rule may have.
pub const MAX_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);
/// Most matchers (sequence steps, or threshold alternatives) in a rule.
pub const MAX_MATCHERS: usize = 16;
/// Largest `count` of a step or threshold.
pub const MAX_COUNT: u32 = 1000;

/// A field of an event that groups events (entity) or is counted distinctly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntityField {
    /// The cluster id.
    Cluster,
    /// The namespace.
    Namespace,
    /// The owning workload (kind and name).
    Workload,
    /// The pod (namespace and name).
    Pod,
    /// The image digest.
    Image,
    /// The rule (only for `distinct`).
    Rule,
}

impl EntityField {
    /// The name in rules.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Cluster => "cluster",
            Self::Namespace => "namespace",
            Self::Workload => "workload",
            Self::Pod => "pod",
            Self::Image => "image",
            Self::Rule => "rule",
        }
    }

    /// Appends this field's value of `e` to `out`; false when `e` has none.
    pub(crate) fn write_value(self, e: &SecurityEvent, out: &mut String) -> bool {
        match self {
            Self::Cluster if !e.cluster_id.is_empty() => out.push_str(&e.cluster_id),
            Self::Namespace if !e.namespace.is_empty() => out.push_str(&e.namespace),
            Self::Workload => match &e.workload {
                Some(w) => {
                    out.push_str(&w.kind);
                    out.push('/');
                    out.push_str(&w.name);
                }
                None => return false,
            },
            Self::Pod if !e.pod.is_empty() => {
                out.push_str(&e.namespace);
                out.push('/');
                out.push_str(&e.pod);
            }
            Self::Image if !e.digest.is_empty() => out.push_str(&e.digest),
            Self::Rule if !e.rule.is_empty() => out.push_str(&e.rule),
            _ => return false,
        }
        true
    }
}

/// Conditions on one event, as written in YAML.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Matcher {
    /// Any of these sources.
    #[serde(default)]
    pub source: Vec<Source>,
    /// Any of these actions.
    #[serde(default)]
    pub action: Vec<Action>,
    /// Any of these rules, exactly.
    #[serde(default)]
    pub rule: Vec<String>,
    /// The rule contains any of these, ASCII case ignored.
    #[serde(default)]
    pub rule_contains: Vec<String>,
    /// Any of these admission subresources.
    #[serde(default)]
    pub subresource: Vec<String>,
    /// At least this severe.
    #[serde(default)]
    pub min_severity: Option<Severity>,
}

impl Matcher {
    fn is_empty(&self) -> bool {
        self.source.is_empty()
            && self.action.is_empty()
            && self.rule.is_empty()
            && self.rule_contains.is_empty()
            && self.subresource.is_empty()
            && self.min_severity.is_none()
    }

    /// True when `e` meets every condition.
    pub fn matches(&self, e: &SecurityEvent) -> bool {
        (self.source.is_empty() || self.source.contains(&e.source))
            && (self.action.is_empty() || self.action.contains(&e.action))
            && self.min_severity.is_none_or(|s| e.severity >= s)
            && (self.rule.is_empty() || self.rule.iter().any(|r| e.rule == r.as_str()))
            && (self.rule_contains.is_empty()
                || self
                    .rule_contains
                    .iter()
                    .any(|r| crate::query::contains_ignore_ascii_case(&e.rule, r)))
            && (self.subresource.is_empty() || self.subresource.iter().any(|s| e.subresource == s.as_str()))
    }
}

/// One step of a sequence.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// What the step's events are.
    #[serde(rename = "match")]
    pub matcher: Matcher,
    /// How many such events the step needs (default 1).
    #[serde(default = "one")]
    pub count: u32,
}

fn one() -> u32 {
    1
}

/// A threshold.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    /// How many events (or distinct values) within the window.
    pub count: u32,
    /// When set, `count` counts distinct values of this field.
    #[serde(default)]
    pub distinct: Option<EntityField>,
    /// The events counted: those matching any of these.
    #[serde(rename = "match")]
    pub matchers: Vec<Matcher>,
}

/// The story a rule looks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Pattern {
    /// Steps in order.
    Sequence(Vec<Step>),
    /// A count within the window.
    Threshold(Threshold),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleYaml {
    name: String,
    description: String,
    severity: Severity,
    entity: Vec<EntityField>,
    #[serde(with = "humantime_serde")]
    window: Duration,
    #[serde(default)]
    sequence: Option<Vec<Step>>,
    #[serde(default)]
    threshold: Option<Threshold>,
}

/// A validated correlation rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Its name, unique among the rules.
    pub name: CompactString,
    /// One line for people; the title of its alerts.
    pub description: String,
    /// The severity of its alerts.
    pub severity: Severity,
    /// The fields that group events.
    pub entity: Vec<EntityField>,
    /// The time all events of a story must fall within.
    pub window: Duration,
    /// The story.
    pub pattern: Pattern,
}

/// A rule that cannot be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("correlation rule {origin}: {message}")]
pub struct RuleError {
    /// The file or rule name.
    pub origin: String,
    /// What is wrong.
    pub message: String,
}

impl Rule {
    /// Reads and validates one rule from YAML; `origin` names it in errors (e.g. a file).
    pub fn from_yaml(origin: &str, yaml: &str) -> Result<Self, RuleError> {
        let fail = |message: String| RuleError {
            origin: origin.to_owned(),
            message,
        };
        let r: RuleYaml = yaml_serde::from_str(yaml).map_err(|e| fail(e.to_string()))?;
        let name_ok = !r.name.is_empty()
            && r.name.len() <= 63
            && r.name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !name_ok {
            return Err(fail(format!(
                "name `{}` must be 1 to 63 lowercase letters, digits or `-`",
                r.name
            )));
        }
        if r.description.trim().is_empty() {
            return Err(fail("description is empty".into()));
        }
        if r.entity.is_empty() {
            return Err(fail("entity names no field".into()));
        }
        for (i, f) in r.entity.iter().enumerate() {
            if *f == EntityField::Rule {
                return Err(fail("entity cannot group by `rule`".into()));
            }
            if r.entity.get(..i).is_some_and(|before| before.contains(f)) {
                return Err(fail(format!("entity names `{}` twice", f.as_str())));
            }
        }
        if r.window.is_zero() || r.window > MAX_WINDOW {
            return Err(fail("window must be from 1s to 7 days".into()));
        }
        let count_ok = |c: u32| (1..=MAX_COUNT).contains(&c);
        let pattern = match (r.sequence, r.threshold) {
            (Some(steps), None) => {
                if steps.is_empty() || steps.len() > MAX_MATCHERS {
                    return Err(fail(format!("sequence must have 1 to {MAX_MATCHERS} steps")));
                }
                for (i, s) in steps.iter().enumerate() {
                    if s.matcher.is_empty() {
                        return Err(fail(format!(
                            "sequence step {} matches every event; give a condition",
                            i + 1
                        )));
                    }
                    if !count_ok(s.count) {
                        return Err(fail(format!("sequence step {}: count must be 1 to {MAX_COUNT}", i + 1)));
                    }
                }
                Pattern::Sequence(steps)
            }
            (None, Some(mut t)) => {
                if t.matchers.is_empty() || t.matchers.len() > MAX_MATCHERS {
                    return Err(fail(format!("threshold match must have 1 to {MAX_MATCHERS} matchers")));
                }
                if t.matchers.iter().any(Matcher::is_empty) {
                    return Err(fail("a threshold matcher matches every event; give a condition".into()));
                }
                if !count_ok(t.count) {
                    return Err(fail(format!("threshold count must be 1 to {MAX_COUNT}")));
                }
                if let Some(d) = t.distinct
                    && r.entity.contains(&d)
                {
                    return Err(fail(format!(
                        "distinct `{}` is one of the entity fields, so it never varies",
                        d.as_str()
                    )));
                }
                for m in &mut t.matchers {
                    lowercase_all(&mut m.rule_contains);
                }
                Pattern::Threshold(t)
            }
            _ => return Err(fail("exactly one of `sequence` and `threshold` is required".into())),
        };
        let mut pattern = pattern;
        if let Pattern::Sequence(steps) = &mut pattern {
            for s in steps {
                lowercase_all(&mut s.matcher.rule_contains);
            }
        }
        Ok(Self {
            name: r.name.as_str().into(),
            description: r.description.trim().to_owned(),
            severity: r.severity,
            entity: r.entity,
            window: r.window,
            pattern,
        })
    }

    /// The rule's matchers: the sequence steps', or the threshold alternatives.
    pub fn matchers(&self) -> impl Iterator<Item = &Matcher> {
        let (steps, alts): (&[Step], &[Matcher]) = match &self.pattern {
            Pattern::Sequence(s) => (s, &[]),
            Pattern::Threshold(t) => (&[], &t.matchers),
        };
        steps.iter().map(|s| &s.matcher).chain(alts.iter())
    }

    /// Bit `i` set when `e` matches matcher `i` (see [`Rule::matchers`]).
    pub fn match_mask(&self, e: &SecurityEvent) -> u32 {
        let mut mask = 0u32;
        for (i, m) in self.matchers().enumerate() {
            if m.matches(e) {
                mask |= 1 << i;
            }
        }
        mask
    }

    /// The entity key of `e` under this rule (its entity fields' values, separated by
    /// U+001F); `None` when `e` lacks one of them.
    pub fn entity_key(&self, e: &SecurityEvent) -> Option<String> {
        let mut key = String::with_capacity(64);
        for (i, f) in self.entity.iter().enumerate() {
            if i > 0 {
                key.push('\u{1f}');
            }
            if !f.write_value(e, &mut key) {
                return None;
            }
        }
        Some(key)
    }
}

fn lowercase_all(v: &mut [String]) {
    for s in v {
        s.make_ascii_lowercase();
    }
}

/// The rules shipped with the service, as (file name, YAML).
pub const SHIPPED_RULES: [(&str, &str); 4] = [
    (
        "admitted-with-violations-then-runtime.yaml",
        include_str!("../../rules/admitted-with-violations-then-runtime.yaml"),
    ),
    (
        "image-refused-in-many-clusters.yaml",
        include_str!("../../rules/image-refused-in-many-clusters.yaml"),
    ),
    (
        "isolated-pod-keeps-detecting.yaml",
        include_str!("../../rules/isolated-pod-keeps-detecting.yaml"),
    ),
    (
        "exec-attach-burst.yaml",
        include_str!("../../rules/exec-attach-burst.yaml"),
    ),
];

/// Loads the shipped rules.
pub fn shipped_rules() -> Result<Vec<Rule>, RuleError> {
    load_rules(SHIPPED_RULES.iter().copied())
}

/// Loads rules from (origin, YAML) pairs; names must be unique.
pub fn load_rules<'a, I: IntoIterator<Item = (&'a str, &'a str)>>(sources: I) -> Result<Vec<Rule>, RuleError> {
    let mut rules: Vec<Rule> = Vec::new();
    for (origin, yaml) in sources {
        let rule = Rule::from_yaml(origin, yaml)?;
        if rules.iter().any(|r| r.name == rule.name) {
            return Err(RuleError {
                origin: origin.to_owned(),
                message: format!("a rule named `{}` is already loaded", rule.name),
            });
        }
        rules.push(rule);
    }
    Ok(rules)
}
