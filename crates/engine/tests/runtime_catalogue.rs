//! The runtime rule catalogue (generated from the Falco rules files) and runtime rulesets.
//!
//! `PORTCULLIS_REGENERATE=1 cargo test -p portcullis-engine --test runtime_catalogue` rewrites
//! `data/runtime-rules.json` from `../shared/conformance/falco-rules/`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use portcullis_engine::policy::FieldError;
use portcullis_engine::runtime::{
    CATALOGUE_JSON, Catalogue, CatalogueEntry, CatalogueError, FalcoSource, LabelOperator, LabelSelector,
    LabelSelectorRequirement, Ruleset, RulesetRule, RuntimeMitigation, catalogue, catalogue_from_falco,
    catalogue_to_json, is_known_rule_id, is_product_rule_id,
};

const FALCO_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/conformance/falco-rules");
const DATA_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/runtime-rules.json");

fn falco_texts() -> Vec<(FalcoSource, String)> {
    FalcoSource::ALL
        .iter()
        .map(|&s| {
            let path = format!("{FALCO_DIR}/{}", s.file_name());
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            (s, text)
        })
        .collect()
}

fn generate() -> Vec<CatalogueEntry> {
    let texts = falco_texts();
    let files: Vec<(FalcoSource, &str)> = texts.iter().map(|(s, t)| (*s, t.as_str())).collect();
    catalogue_from_falco(&files).unwrap()
}

/// Counts rule items line by line, independently of the YAML loader: an item is a line
/// starting `- ` at column 0, and it is a rule when `rule:` is one of its top-level keys.
fn count_rule_items(text: &str) -> usize {
    let mut count = 0;
    let mut in_rule = false;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("- ") {
            if in_rule {
                count += 1;
            }
            in_rule = rest.starts_with("rule:");
        } else if line.starts_with("  rule:") {
            in_rule = true;
        } else if !line.starts_with(' ') && !line.starts_with('#') && !line.trim().is_empty() {
            if in_rule {
                count += 1;
            }
            in_rule = false;
        }
    }
    count + usize::from(in_rule)
}

#[test]
fn committed_catalogue_is_generated_from_the_falco_files() {
    let entries = generate();
    let text = catalogue_to_json(&entries).unwrap();
    if std::env::var("PORTCULLIS_REGENERATE").as_deref() == Ok("1") {
        std::fs::write(DATA_FILE, &text).unwrap();
    }
    let committed = std::fs::read_to_string(DATA_FILE).unwrap();
    assert!(
        committed == text,
        "data/runtime-rules.json is stale; regenerate with PORTCULLIS_REGENERATE=1"
    );
    // The embedded copy is the committed file (unless regenerated in this very run).
    if std::env::var("PORTCULLIS_REGENERATE").as_deref() != Ok("1") {
        assert_eq!(CATALOGUE_JSON, text);
    }
}

#[test]
fn every_falco_file_contributes_all_its_rules() {
    let entries = generate();
    let mut total = 0;
    for (source, text) in falco_texts() {
        let expected = count_rule_items(&text);
        let got = entries.iter().filter(|e| e.source == source).count();
        println!("{source}: {got} rules ({expected} `- rule:` items)");
        assert!(expected > 0, "{source}: no rule items counted");
        assert_eq!(got, expected, "{source}");
        total += expected;
    }
    assert_eq!(entries.len(), total);
    let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(ids, sorted, "entries must be sorted by unique id");
}

/// The counts and priorities SOURCE.txt gives for the three files (falco_rules.yaml 25
/// rules, incubating 31, sandbox 37; priorities CRITICAL, ERROR, WARNING, NOTICE, INFO).
#[test]
fn all_three_falco_files_load_with_the_counts_source_txt_gives() {
    let entries = generate();
    let count = |s: FalcoSource| entries.iter().filter(|e| e.source == s).count();
    assert_eq!(
        FalcoSource::ALL.map(count),
        [25, 31, 37],
        "stable, incubating, sandbox (SOURCE.txt)"
    );
    for e in &entries {
        assert!(
            ["CRITICAL", "ERROR", "WARNING", "NOTICE", "INFO", "INFORMATIONAL"].contains(&e.priority.as_str()),
            "{}: {}",
            e.id,
            e.priority
        );
        assert!(!e.description.is_empty() && !e.description.contains('\n'), "{}", e.id);
    }
}

#[test]
fn embedded_catalogue_parses_and_matches_the_generated_one() {
    let parsed = Catalogue::from_json(CATALOGUE_JSON).unwrap();
    assert!(
        parsed.entries() == generate().as_slice(),
        "the embedded catalogue differs from the generated one; rebuild after regenerating"
    );
    assert_eq!(catalogue().len(), parsed.len());
    assert!(!catalogue().is_empty());
}

#[test]
fn catalogue_lookups_by_source() {
    let shell = catalogue().get("Terminal shell in container").unwrap();
    assert_eq!(shell.source, FalcoSource::Stable);
    assert_eq!(shell.priority, "NOTICE");
    assert!(shell.tags.iter().any(|t| t == "maturity_stable"));
    assert!(shell.tags.iter().any(|t| t == "T1059"));
    assert!(shell.enabled);
    assert!(!shell.description.contains('\n'));
    assert!(!shell.description.contains("  "));

    // Incubating, with a folded multi-line `priority` and `desc`.
    let shell_config = catalogue().get("Modify Shell Configuration File").unwrap();
    assert_eq!(shell_config.source, FalcoSource::Incubating);
    assert_eq!(shell_config.priority, "WARNING");
    assert!(
        shell_config
            .description
            .starts_with("Detect attempts to modify shell configuration files, primarily")
    );
    assert!(shell_config.description.ends_with("(where proc.tty != 0)."));

    let sandbox = catalogue().get("Unexpected inbound connection source").unwrap();
    assert_eq!(sandbox.source, FalcoSource::Sandbox);
    assert!(sandbox.tags.iter().any(|t| t == "maturity_sandbox"));
    assert!(is_known_rule_id("Unexpected inbound connection source"));
    assert!(is_known_rule_id("Modify Shell Configuration File"));
    assert!(is_known_rule_id("Terminal shell in container"));

    // Disabled rules are known too.
    assert!(catalogue().entries().iter().any(|e| !e.enabled));

    // Names match exactly.
    assert!(!is_known_rule_id("terminal shell in container"));
    assert!(!is_known_rule_id("Terminal shell in container "));
    assert!(catalogue().get("No such rule").is_none());
}

#[test]
fn product_and_custom_rule_ids() {
    assert!(is_known_rule_id("TM-00000001"));
    assert!(is_known_rule_id("CR-12345678"));
    assert!(is_product_rule_id("TM-99999999"));
    assert!(!is_known_rule_id("TM-1"));
    assert!(!is_known_rule_id("TM-000000001"));
    assert!(!is_known_rule_id("TM-0000000a"));
    assert!(!is_known_rule_id("tm-00000001"));
    assert!(!is_known_rule_id("XX-00000001"));
    assert!(!is_known_rule_id("TM-"));
    assert!(!is_known_rule_id(""));
}

#[test]
fn catalogue_data_must_be_sorted_and_unique() {
    let entry = |id: &str| CatalogueEntry {
        id: id.to_owned(),
        description: String::new(),
        priority: "INFO".to_owned(),
        tags: vec![],
        source: FalcoSource::Stable,
        enabled: true,
    };
    let unsorted = catalogue_to_json(&[entry("b"), entry("a")]).unwrap();
    assert!(matches!(Catalogue::from_json(&unsorted), Err(CatalogueError::Data(_))));
    let duplicate = catalogue_to_json(&[entry("a"), entry("a")]).unwrap();
    assert!(Catalogue::from_json(&duplicate).is_err());
    let ok = Catalogue::from_json(&catalogue_to_json(&[entry("a"), entry("b")]).unwrap()).unwrap();
    assert_eq!(ok.len(), 2);
    assert_eq!(ok.get("b").unwrap().id, "b");
    assert!(ok.get("c").is_none());
    assert!(catalogue_to_json(&[]).unwrap().ends_with("[]\n"));
}

// ---------------------------------------------------------------------------------------------
// The Falco loader's quirks and update items.

fn one(text: &str) -> Result<Vec<CatalogueEntry>, CatalogueError> {
    catalogue_from_falco(&[(FalcoSource::Stable, text)])
}

#[test]
fn loader_takes_key_order_folded_scalars_and_ignores_non_rules() {
    let text = r#"
- required_engine_version: 0.31.0
- required_plugin_versions:
    - name: k8saudit
      version: 0.7.0
      alternatives:
        - name: k8saudit-eks
          version: 0.4.0
- condition: (never_true)
  macro: odd_order
- list: things
  items: [a, b]
- priority:
    warning
  tags: [maturity_stable, T1059]
  desc: >
    Spread over
      several   lines.
  output: x
  condition: odd_order
  rule: Reordered rule
  source: syscall
  exceptions:
    - name: proc_names
      fields: [proc.name]
      values: [[bash]]
- rule: Second
  desc: |
    literal
    block
  condition: y
  output: y
  priority: Informational
  enabled: false
"#;
    let entries = one(text).unwrap();
    assert_eq!(entries.len(), 2);
    let first = entries.iter().find(|e| e.id == "Reordered rule").unwrap();
    assert_eq!(first.priority, "WARNING");
    assert_eq!(first.description, "Spread over several lines.");
    assert_eq!(first.tags, vec!["maturity_stable", "T1059"]);
    assert!(first.enabled);
    let second = entries.iter().find(|e| e.id == "Second").unwrap();
    assert_eq!(second.priority, "INFORMATIONAL");
    assert_eq!(second.description, "literal block");
    assert!(second.tags.is_empty());
    assert!(!second.enabled);
}

#[test]
fn append_and_override_update_without_duplicating() {
    let stable = r#"
- rule: Base
  desc: first part
  condition: a
  output: a
  priority: NOTICE
  tags: [one]
"#;
    let sandbox = r#"
- rule: Base
  append: true
  condition: and b
  desc: appended
  tags: [two, one]
- rule: Base
  override:
    priority: replace
    tags: append
    condition: append
  priority: critical
  tags: [three]
  condition: and c
- rule: Base
  enabled: false
"#;
    let entries = catalogue_from_falco(&[(FalcoSource::Stable, stable), (FalcoSource::Sandbox, sandbox)]).unwrap();
    assert_eq!(entries.len(), 1);
    let base = entries.first().unwrap();
    assert_eq!(base.description, "first part appended");
    assert_eq!(base.tags, vec!["one", "two", "three"]);
    assert_eq!(base.priority, "CRITICAL");
    assert!(!base.enabled);
    // Updates keep the defining file.
    assert_eq!(base.source, FalcoSource::Stable);

    let replaced = one(
        "- rule: R\n  desc: old\n  priority: INFO\n- rule: R\n  override: {desc: replace, enabled: replace}\n  desc: new\n  enabled: false\n",
    )
    .unwrap();
    assert_eq!(replaced.len(), 1);
    assert_eq!(replaced.first().unwrap().description, "new");
    assert!(!replaced.first().unwrap().enabled);
}

#[test]
fn a_redefinition_replaces_the_earlier_rule() {
    let entries = catalogue_from_falco(&[
        (FalcoSource::Stable, "- rule: R\n  desc: old\n  priority: INFO\n"),
        (
            FalcoSource::Incubating,
            "- rule: R\n  desc: new\n  priority: ERROR\n  append: false\n",
        ),
    ])
    .unwrap();
    assert_eq!(entries.len(), 1);
    let r = entries.first().unwrap();
    assert_eq!((r.description.as_str(), r.priority.as_str()), ("new", "ERROR"));
    assert_eq!(r.source, FalcoSource::Incubating);
}

#[test]
fn loader_refuses_what_falco_refuses() {
    // An update of a rule nobody defined.
    assert!(matches!(
        one("- rule: Ghost\n  append: true\n  condition: and x\n"),
        Err(CatalogueError::Rule { rule, .. }) if rule == "Ghost"
    ));
    assert!(one("- rule: Ghost\n  override: {desc: replace}\n  desc: x\n").is_err());
    assert!(one("- rule: Ghost\n  enabled: false\n").is_err());
    // Missing desc / priority, bad priority, bad override mode.
    assert!(one("- rule: R\n  priority: INFO\n").is_err());
    assert!(one("- rule: R\n  desc: d\n").is_err());
    assert!(one("- rule: R\n  desc: d\n  priority: LOUD\n").is_err());
    assert!(one("- rule: R\n  desc: d\n  priority: INFO\n- rule: R\n  override: {desc: merge}\n  desc: x\n").is_err());
    assert!(one("- rule: R\n  desc: d\n  priority: INFO\n- rule: R\n  override: {desc: append}\n").is_err());
    // Not a list of maps, not YAML.
    assert!(matches!(one("rule: R\n"), Err(CatalogueError::Structure { .. })));
    assert!(matches!(
        one("- just a string\n"),
        Err(CatalogueError::Structure { .. })
    ));
    assert!(matches!(one("- rule: [\n"), Err(CatalogueError::Yaml { .. })));
    // An empty file is an empty rules file.
    assert_eq!(one("").unwrap(), vec![]);
}

// ---------------------------------------------------------------------------------------------
// Rulesets.

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn req(key: &str, operator: LabelOperator, values: &[&str]) -> LabelSelectorRequirement {
    LabelSelectorRequirement {
        key: key.to_owned(),
        operator,
        values: values.iter().map(|v| (*v).to_owned()).collect(),
    }
}

fn rule(id: &str, mitigation: RuntimeMitigation) -> RulesetRule {
    RulesetRule {
        id: id.to_owned(),
        mitigation,
    }
}

fn valid_ruleset() -> Ruleset {
    Ruleset {
        name: "prod-runtime_v1.2".to_owned(),
        description: "Runtime rules for production".to_owned(),
        labels: LabelSelector {
            match_labels: labels(&[("app.kubernetes.io/name", "web")]),
            match_expressions: vec![req("tier", LabelOperator::In, &["frontend", "backend"])],
        },
        rules: vec![
            rule("Terminal shell in container", RuntimeMitigation::Isolate),
            rule("TM-00000001", RuntimeMitigation::Log),
            rule("CR-00000042", RuntimeMitigation::Terminate),
        ],
    }
}

fn errors_of(ruleset: &Ruleset) -> Vec<FieldError> {
    ruleset.validate().unwrap_err()
}

fn paths(errors: &[FieldError]) -> Vec<&str> {
    errors.iter().map(|e| e.path.as_str()).collect()
}

#[test]
fn a_valid_ruleset_passes() {
    assert_eq!(valid_ruleset().validate(), Ok(()));
    let mut minimal = valid_ruleset();
    minimal.labels = LabelSelector::default();
    minimal.rules.clear();
    minimal.description.clear();
    assert_eq!(minimal.validate(), Ok(()));
}

#[test]
fn ruleset_parses_from_json_and_yaml() {
    let json = r#"{
        "name": "prod",
        "description": "d",
        "labels": {"matchLabels": {"app": "web"},
                   "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]},
                                        {"key": "canary", "operator": "DoesNotExist"}]},
        "rules": [{"id": "Terminal shell in container", "mitigation": "terminate"}]
    }"#;
    let yaml = r#"
name: prod
description: d
labels:
  matchLabels: {app: web}
  matchExpressions:
    - {key: tier, operator: NotIn, values: [db]}
    - {key: canary, operator: DoesNotExist, values: null}
rules:
  - id: Terminal shell in container
    mitigation: terminate
"#;
    let from_json = Ruleset::from_json(json).unwrap();
    let from_yaml = Ruleset::from_yaml(yaml).unwrap();
    assert_eq!(from_json, from_yaml);
    assert_eq!(from_json.validate(), Ok(()));
    assert_eq!(
        from_json.labels.match_expressions.get(1).unwrap().operator,
        LabelOperator::DoesNotExist
    );
    // Round trip through the serialised form.
    let again = Ruleset::from_json(&serde_json::to_string(&from_json).unwrap()).unwrap();
    assert_eq!(again, from_json);
    // Defaults: description "", labels empty; rules required.
    let bare = Ruleset::from_json(r#"{"name": "n", "rules": []}"#).unwrap();
    assert!(bare.description.is_empty() && bare.labels.is_empty());
    let err = Ruleset::from_json(r#"{"name": "n"}"#).unwrap_err();
    assert!(err.message.contains("rules"), "{err}");
}

#[test]
fn ruleset_parse_errors_name_the_field() {
    let err =
        Ruleset::from_json(r#"{"name": "n", "rules": [{"id": "TM-00000001", "mitigation": "kill"}]}"#).unwrap_err();
    assert_eq!(err.path, "rules[0].mitigation");
    let err = Ruleset::from_json(r#"{"name": "n", "rules": [], "id": "x"}"#).unwrap_err();
    assert!(err.message.contains("unknown field `id`"), "{err}");
    let err =
        Ruleset::from_yaml("name: n\nrules: []\nlabels:\n  matchExpressions:\n    - {key: a, operator: Equals}\n")
            .unwrap_err();
    assert_eq!(err.path, "labels.matchExpressions[0].operator");
    let err = Ruleset::from_yaml("name: n\nrules: []\nlabels: {matchLabel: {a: b}}\n").unwrap_err();
    assert_eq!(err.path, "labels.matchLabel");
    assert!(err.to_string().starts_with("labels.matchLabel: unknown field"), "{err}");
}

#[test]
fn ruleset_name_errors() {
    for bad in ["", "has space", "slash/name", "ünïcode", &"a".repeat(65)] {
        let mut r = valid_ruleset();
        r.name = bad.to_owned();
        assert_eq!(paths(&errors_of(&r)), vec!["name"], "{bad:?}");
    }
    let mut r = valid_ruleset();
    r.name = "a".repeat(64);
    assert_eq!(r.validate(), Ok(()));
}

#[test]
fn ruleset_description_limit() {
    let mut r = valid_ruleset();
    r.description = "é".repeat(128);
    assert_eq!(r.validate(), Ok(()));
    r.description.push('x');
    assert_eq!(paths(&errors_of(&r)), vec!["description"]);
}

#[test]
fn ruleset_rule_errors() {
    let mut r = valid_ruleset();
    r.rules = vec![
        rule("TM-00000001", RuntimeMitigation::Log),
        rule("Foo", RuntimeMitigation::Log),
        rule("TM-00000001", RuntimeMitigation::Terminate),
        rule("TM-1", RuntimeMitigation::Log),
    ];
    let errors = errors_of(&r);
    assert_eq!(paths(&errors), vec!["rules[1].id", "rules[2].id", "rules[3].id"]);
    assert_eq!(
        errors.get(1).unwrap().to_string(),
        "rules[2].id: \"TM-00000001\" duplicates rules[0].id"
    );
    assert_eq!(
        errors.first().unwrap().to_string(),
        "rules[1].id: \"Foo\" is not a known runtime rule"
    );

    // At most 100 rules.
    let mut r = valid_ruleset();
    r.rules = (0..101)
        .map(|i| rule(&format!("CR-{i:08}"), RuntimeMitigation::Log))
        .collect();
    assert_eq!(paths(&errors_of(&r)), vec!["rules"]);
    r.rules.pop();
    assert_eq!(r.validate(), Ok(()));
}

#[test]
fn ruleset_reports_all_errors_at_once() {
    let mut r = valid_ruleset();
    r.name = String::new();
    r.description = "x".repeat(200);
    r.labels.match_labels = labels(&[("-bad", "ok")]);
    r.rules = vec![rule("Foo", RuntimeMitigation::Log)];
    assert_eq!(
        paths(&errors_of(&r)),
        vec!["name", "description", "labels.matchLabels", "rules[0].id"]
    );
}

#[test]
fn label_selector_validation() {
    let check = |selector: LabelSelector| -> Vec<String> {
        selector.validate_at("labels").iter().map(|e| e.path.clone()).collect()
    };
    let ok = LabelSelector {
        match_labels: labels(&[
            ("app", "web"),
            ("example.com/My_Name.v-1", ""),
            ("a", &"v".repeat(63)),
            (&format!("{}/x", "p".repeat(253)), "Z"),
        ]),
        match_expressions: vec![
            req("k8s.io/tier", LabelOperator::In, &["a", "B-2"]),
            req("x", LabelOperator::NotIn, &[""]),
            req("y", LabelOperator::Exists, &[]),
            req("z", LabelOperator::DoesNotExist, &[]),
        ],
    };
    assert!(check(ok).is_empty());

    let bad_keys = [
        "",
        "-app",
        "app-",
        "a b",
        "/name",
        "Example.com/name",
        "example.com/",
        "a/b/c",
        "example..com/x",
    ];
    for key in bad_keys {
        let s = LabelSelector {
            match_labels: labels(&[(key, "v")]),
            ..LabelSelector::default()
        };
        assert_eq!(check(s), vec!["labels.matchLabels"], "key {key:?}");
    }
    let long_name = "n".repeat(64);
    let long_prefix = format!("{}/x", "p".repeat(254));
    for key in [long_name.as_str(), long_prefix.as_str()] {
        let s = LabelSelector {
            match_labels: labels(&[(key, "v")]),
            ..LabelSelector::default()
        };
        assert!(!check(s).is_empty(), "key {key:?}");
    }
    let long_value = "v".repeat(64);
    for value in ["-v", "v_", "a b", "é", long_value.as_str()] {
        let s = LabelSelector {
            match_labels: labels(&[("k", value)]),
            ..LabelSelector::default()
        };
        assert_eq!(check(s), vec!["labels.matchLabels"], "value {value:?}");
    }

    let s = LabelSelector {
        match_labels: BTreeMap::new(),
        match_expressions: vec![
            req("ok", LabelOperator::In, &[]),
            req("ok", LabelOperator::NotIn, &[]),
            req("ok", LabelOperator::Exists, &["x"]),
            req("ok", LabelOperator::DoesNotExist, &["x"]),
            req("bad key!", LabelOperator::Exists, &[]),
            req("ok", LabelOperator::In, &["fine", "not fine"]),
        ],
    };
    assert_eq!(
        check(s),
        vec![
            "labels.matchExpressions[0].values",
            "labels.matchExpressions[1].values",
            "labels.matchExpressions[2].values",
            "labels.matchExpressions[3].values",
            "labels.matchExpressions[4].key",
            "labels.matchExpressions[5].values[1]",
        ]
    );
}

#[test]
fn label_selector_matching() {
    let pod = labels(&[("app", "web"), ("tier", "frontend"), ("env", "")]);
    assert!(LabelSelector::default().matches(&pod));
    assert!(LabelSelector::default().matches(&BTreeMap::new()));

    let with = |match_labels: &[(&str, &str)], exprs: Vec<LabelSelectorRequirement>| LabelSelector {
        match_labels: labels(match_labels),
        match_expressions: exprs,
    };
    assert!(with(&[("app", "web")], vec![]).matches(&pod));
    assert!(with(&[("env", "")], vec![]).matches(&pod));
    assert!(!with(&[("app", "api")], vec![]).matches(&pod));
    assert!(!with(&[("app", "web"), ("missing", "x")], vec![]).matches(&pod));

    use LabelOperator::*;
    assert!(with(&[], vec![req("tier", In, &["backend", "frontend"])]).matches(&pod));
    assert!(!with(&[], vec![req("tier", In, &["backend"])]).matches(&pod));
    assert!(!with(&[], vec![req("absent", In, &["x"])]).matches(&pod));
    assert!(with(&[], vec![req("tier", NotIn, &["backend"])]).matches(&pod));
    assert!(!with(&[], vec![req("tier", NotIn, &["frontend"])]).matches(&pod));
    // Kubernetes: NotIn holds when the label is absent.
    assert!(with(&[], vec![req("absent", NotIn, &["x"])]).matches(&pod));
    assert!(with(&[], vec![req("env", Exists, &[])]).matches(&pod));
    assert!(!with(&[], vec![req("absent", Exists, &[])]).matches(&pod));
    assert!(with(&[], vec![req("absent", DoesNotExist, &[])]).matches(&pod));
    assert!(!with(&[], vec![req("app", DoesNotExist, &[])]).matches(&pod));
    // Everything is AND-ed.
    assert!(
        with(
            &[("app", "web")],
            vec![req("tier", In, &["frontend"]), req("absent", DoesNotExist, &[])]
        )
        .matches(&pod)
    );
    assert!(
        !with(
            &[("app", "web")],
            vec![req("tier", In, &["frontend"]), req("app", DoesNotExist, &[])]
        )
        .matches(&pod)
    );
}

#[test]
fn mitigations_are_ordered_log_isolate_terminate() {
    assert!(RuntimeMitigation::Log < RuntimeMitigation::Isolate);
    assert!(RuntimeMitigation::Isolate < RuntimeMitigation::Terminate);
    assert_eq!(
        serde_json::to_string(&RuntimeMitigation::Isolate).unwrap(),
        "\"isolate\""
    );
}

#[test]
fn strongest_for_picks_the_strongest_matching_entry() {
    let mut r = valid_ruleset();
    let pod = labels(&[("app.kubernetes.io/name", "web"), ("tier", "backend")]);
    assert_eq!(
        r.strongest_for("Terminal shell in container", &pod),
        Some(RuntimeMitigation::Isolate)
    );
    assert_eq!(r.strongest_for("TM-00000001", &pod), Some(RuntimeMitigation::Log));
    assert_eq!(r.strongest_for("CR-00000042", &pod), Some(RuntimeMitigation::Terminate));
    // A rule the ruleset does not list.
    assert_eq!(r.strongest_for("TM-00000002", &pod), None);
    // A pod the selector does not select.
    let other = labels(&[("app.kubernetes.io/name", "web"), ("tier", "db")]);
    assert_eq!(r.strongest_for("CR-00000042", &other), None);
    // Unvalidated duplicates: the strongest wins whatever the order.
    r.rules.push(rule("TM-00000001", RuntimeMitigation::Terminate));
    r.rules.push(rule("TM-00000001", RuntimeMitigation::Isolate));
    assert_eq!(r.strongest_for("TM-00000001", &pod), Some(RuntimeMitigation::Terminate));
    // The empty selector covers every pod.
    r.labels = LabelSelector::default();
    assert_eq!(
        r.strongest_for("CR-00000042", &BTreeMap::new()),
        Some(RuntimeMitigation::Terminate)
    );
}
