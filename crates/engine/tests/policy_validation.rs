//! Validation of policy documents (POLICY.md section 1): every refusal names the field path,
//! several problems are reported at once, and JSON and YAML are read alike.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::{block, exception, rule, rule_with, statement};
use portcullis_engine::evaluate::CompiledPolicy;
use portcullis_engine::policy::{FieldError, PolicyDocument, PolicyError, validate};
use serde_json::{Value, json};

/// Parses (JSON or YAML) and validates.
fn check(text: &str) -> Result<(), PolicyError> {
    let doc = PolicyDocument::parse(text)?;
    validate(&doc).map(|_| ())
}

fn check_json(doc: &Value) -> Result<(), PolicyError> {
    check(&doc.to_string())
}

/// The errors of an invalid document; every one must name a field path.
#[track_caller]
fn errors(doc: &Value) -> Vec<FieldError> {
    let e = check_json(doc).expect_err("the document should be refused");
    let list = e.field_errors();
    assert!(!list.is_empty());
    for fe in &list {
        assert!(!fe.path.is_empty(), "an error without a path: {fe:?}");
        assert!(e.to_string().contains(&fe.path));
    }
    list
}

/// Asserts the document is refused with an error at `path`, and returns its message.
#[track_caller]
fn refused_at(doc: &Value, path: &str) -> String {
    let list = errors(doc);
    list.iter()
        .find(|e| e.path == path || e.path.starts_with(&format!("{path}.")) || e.path.starts_with(&format!("{path}[")))
        .unwrap_or_else(|| panic!("no error at {path}: {list:#?}"))
        .message
        .clone()
}

#[track_caller]
fn accepted(doc: &Value) {
    if let Err(e) = check_json(doc) {
        panic!("refused: {e}\n{doc:#}");
    }
}

fn with_rules(rules: Vec<Value>) -> Value {
    json!({"name": "p", "default": {"rules": rules}})
}

fn privileged_rule() -> Value {
    block("containerSecurityContext", "privileged", "true")
}

// ---------------------------------------------------------------------------------------
// Names and descriptions
// ---------------------------------------------------------------------------------------

#[test]
fn policy_names_follow_the_regex_and_length() {
    for name in ["p", "prod.strict", "A_b.9", &"x".repeat(64)] {
        accepted(&json!({"name": name, "default": {"rules": []}}));
    }
    for name in ["", "prod-strict", "prod strict", "prod/strict", "é", &"x".repeat(65)] {
        refused_at(&json!({"name": name, "default": {"rules": []}}), "name");
    }
}

#[test]
fn descriptions_are_at_most_128_characters() {
    accepted(&json!({"name": "p", "description": "d".repeat(128), "default": {"rules": []}}));
    accepted(&json!({"name": "p", "description": "é".repeat(128), "default": {"rules": []}}));
    refused_at(
        &json!({"name": "p", "description": "d".repeat(129), "default": {"rules": []}}),
        "description",
    );
}

#[test]
fn namespaced_definitions_need_valid_names_and_rfc1123_namespaces() {
    let def = |name: &str, namespaces: Value| json!({"name": "p", "default": {"rules": []}, "namespaced": [{"name": name, "namespaces": namespaces, "rules": []}]});
    accepted(&def("dev.relaxed", json!(["dev", "test-1", "a", "x".repeat(63)])));
    refused_at(&def("dev-relaxed", json!(["dev"])), "namespaced[0].name");
    refused_at(&def("", json!(["dev"])), "namespaced[0].name");
    for bad in ["Dev", "-dev", "dev-", "dev_x", "dev.x", "", &"x".repeat(64)] {
        refused_at(&def("d", json!(["ok", bad])), "namespaced[0].namespaces[1]");
    }
    refused_at(&def("d", json!([])), "namespaced[0].namespaces");
}

#[test]
fn a_namespace_may_appear_in_only_one_namespaced_definition() {
    let doc = json!({"name": "p", "default": {"rules": []}, "namespaced": [
        {"name": "a", "namespaces": ["dev", "test"], "rules": []},
        {"name": "b", "namespaces": ["prod", "test"], "rules": []}
    ]});
    let msg = refused_at(&doc, "namespaced[1].namespaces[1]");
    assert!(msg.contains("test"), "{msg}");
    // Listed twice in one definition is refused too.
    let twice = json!({"name": "p", "default": {"rules": []}, "namespaced": [
        {"name": "a", "namespaces": ["dev", "dev"], "rules": []}
    ]});
    refused_at(&twice, "namespaced[0].namespaces[1]");
}

// ---------------------------------------------------------------------------------------
// Rules and statements
// ---------------------------------------------------------------------------------------

#[test]
fn an_unknown_rule_type_is_refused_with_its_path() {
    let e = check_json(&with_rules(vec![
        privileged_rule(),
        block("hostPorts", "hostPort", "true"),
    ]))
    .unwrap_err();
    let list = e.field_errors();
    assert!(
        list.iter().any(|fe| fe.path.starts_with("default.rules[1]")),
        "{list:#?}"
    );
}

#[test]
fn an_unknown_property_value_is_refused_in_the_documented_message_style() {
    let doc = with_rules(vec![
        block("podSecurityContext", "hostNetwork", "true"),
        block("containerSecurityContext", "readOnlyRootFilesystem", "false"),
        block("containerSecurityContext", "privileged", "maybe"),
    ]);
    let e = check_json(&doc).unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"default.rules[2].statement.properties[0].value: "maybe" is not one of true"#
    );
    assert_eq!(
        e.field_errors(),
        vec![FieldError {
            path: "default.rules[2].statement.properties[0].value".to_owned(),
            message: r#""maybe" is not one of true"#.to_owned()
        }]
    );
}

#[test]
fn every_property_value_outside_the_catalogue_is_refused() {
    let cases: &[(&str, &str, &str)] = &[
        ("podSecurityContext", "hostPID", "false"),
        ("containerSecurityContext", "runAsNonRoot", "true"),
        ("containerSecurityContext", "readOnlyRootFilesystem", "true"),
        ("containerSecurityContext", "allowPrivilegeEscalation", "false"),
        ("containerSecurityContext", "capabilities-rule", "strict"),
        ("containerSecurityContext", "capabilities-rule", "Baseline"),
        ("vulnerabilities", "max-severity", "severe"),
        ("vulnerabilities", "max-severity", "HIGH"),
        ("cvssAttackVector", "cvss-attack-vector", "remote"),
        ("cvssAttackComplexity", "cvss-attack-complexity", "medium"),
        ("cvssAvailability", "cvss-availability", "none"),
        ("malware", "count", "1"),
        ("secrets", "count", "false"),
        ("podexec", "podExec", "false"),
        ("portforward", "podPortForward", "no"),
        ("podSecurityStandard", "level", "privileged"),
    ];
    for (t, k, v) in cases {
        let msg = refused_at(
            &with_rules(vec![block(t, k, v)]),
            "default.rules[0].statement.properties[0].value",
        );
        assert!(msg.contains(&format!("{v:?}")), "{t} {k} {v}: {msg}");
    }
}

#[test]
fn every_catalogue_property_is_accepted() {
    let cases: &[(&str, &[(&str, &str)])] = &[
        ("podSecurityContext", &[("hostNetwork", "true")]),
        ("podSecurityContext", &[("hostIPC", "true")]),
        ("podSecurityContext", &[("hostPID", "true")]),
        ("containerSecurityContext", &[("privileged", "true")]),
        ("containerSecurityContext", &[("allowPrivilegeEscalation", "true")]),
        ("containerSecurityContext", &[("runAsNonRoot", "false")]),
        ("containerSecurityContext", &[("readOnlyRootFilesystem", "false")]),
        (
            "containerSecurityContext",
            &[("capabilities-rule", "restrict-nondefaults")],
        ),
        ("containerSecurityContext", &[("capabilities-rule", "baseline")]),
        ("containerSecurityContext", &[("capabilities-rule", "restricted")]),
        ("containerSecurityContext", &[("capabilities-rule", "restrict-all")]),
        ("registry", &[("equals", "docker.io")]),
        ("image", &[("not-equals", "library/nginx")]),
        ("tag", &[("contains", "rc")]),
        ("tag", &[("equals", "")]),
        ("imagePath", &[("not-contains", "/sandbox/")]),
        ("imagePath", &[("starts-with", "registry.example.com/")]),
        ("vulnerabilities", &[("max-severity", "high")]),
        ("vulnerabilities", &[("max-severity", "none")]),
        ("cvssAttackVector", &[("cvss-attack-vector", "physical")]),
        (
            "cvssAttackVector",
            &[("cvss-attack-vector", "adjacent"), ("max-severity", "medium")],
        ),
        (
            "cvssAttackComplexity",
            &[("max-severity", "low"), ("cvss-attack-complexity", "high")],
        ),
        ("cvssAvailability", &[("cvss-availability", "low")]),
        ("malware", &[("count", "0")]),
        ("secrets", &[("count", "0")]),
        ("unscannedImage", &[]),
        ("unscannedImage", &[("days", "1")]),
        ("unscannedImageMalware", &[("days", "30")]),
        ("unscannedImageSecret", &[]),
        ("podexec", &[("podExec", "true")]),
        ("portforward", &[("podPortForward", "true")]),
        ("podSecurityStandard", &[("level", "baseline")]),
        ("podSecurityStandard", &[("level", "restricted")]),
    ];
    for (t, props) in cases {
        accepted(&with_rules(vec![rule(t, props, "log")]));
    }
}

#[test]
fn an_unknown_property_key_is_refused() {
    for (t, k, v) in [
        ("containerSecurityContext", "privilege", "true"),
        ("podSecurityContext", "hostUsers", "true"),
        ("registry", "ends-with", "io"),
        ("vulnerabilities", "severity", "high"),
        ("unscannedImage", "hours", "3"),
        ("podSecurityStandard", "version", "v1.37"),
    ] {
        refused_at(
            &with_rules(vec![block(t, k, v)]),
            "default.rules[0].statement.properties",
        );
    }
}

#[test]
fn a_missing_property_is_refused() {
    for t in [
        "podSecurityContext",
        "containerSecurityContext",
        "registry",
        "vulnerabilities",
        "cvssAttackVector",
        "malware",
        "podexec",
        "podSecurityStandard",
    ] {
        refused_at(
            &with_rules(vec![rule(t, &[], "block")]),
            "default.rules[0].statement.properties",
        );
    }
    // A cvss rule with only the optional max-severity lacks its vector property.
    refused_at(
        &with_rules(vec![rule("cvssAvailability", &[("max-severity", "high")], "block")]),
        "default.rules[0].statement.properties",
    );
}

#[test]
fn an_extra_property_is_refused() {
    let cases: &[(&str, &[(&str, &str)])] = &[
        (
            "containerSecurityContext",
            &[("privileged", "true"), ("readOnlyRootFilesystem", "false")],
        ),
        ("podSecurityContext", &[("hostNetwork", "true"), ("hostPID", "true")]),
        (
            "podSecurityContext",
            &[("hostNetwork", "true"), ("hostNetwork", "true")],
        ),
        ("registry", &[("equals", "a"), ("contains", "b")]),
        ("vulnerabilities", &[("max-severity", "high"), ("days", "3")]),
        ("vulnerabilities", &[("max-severity", "high"), ("max-severity", "low")]),
        (
            "cvssAttackVector",
            &[
                ("cvss-attack-vector", "network"),
                ("max-severity", "high"),
                ("max-severity", "low"),
            ],
        ),
        ("malware", &[("count", "0"), ("max-severity", "high")]),
        ("unscannedImage", &[("days", "3"), ("days", "4")]),
        ("podexec", &[("podExec", "true"), ("podPortForward", "true")]),
        ("podSecurityStandard", &[("level", "baseline"), ("level", "restricted")]),
    ];
    for (t, props) in cases {
        refused_at(
            &with_rules(vec![rule(t, props, "block")]),
            "default.rules[0].statement.properties",
        );
    }
}

#[test]
fn an_enabled_rule_with_neither_action_nor_mitigation_is_refused() {
    let none = rule_with("containerSecurityContext", &[("privileged", "true")], "none", "none");
    refused_at(&with_rules(vec![privileged_rule(), none.clone()]), "default.rules[1]");
    // Defaults are none too.
    let defaults = json!({"type": "containerSecurityContext", "statement": statement(&[("privileged", "true")])});
    refused_at(&with_rules(vec![defaults]), "default.rules[0]");
    // Disabled: it takes part in nothing, so it is allowed to say so.
    let mut disabled = none;
    disabled["enabled"] = json!(false);
    accepted(&with_rules(vec![disabled]));
    // Either one alone is enough.
    accepted(&with_rules(vec![rule_with(
        "containerSecurityContext",
        &[("privileged", "true")],
        "none",
        "log",
    )]));
    accepted(&with_rules(vec![rule_with(
        "containerSecurityContext",
        &[("privileged", "true")],
        "log",
        "none",
    )]));
}

#[test]
fn max_severity_critical_is_refused() {
    refused_at(
        &with_rules(vec![block("vulnerabilities", "max-severity", "critical")]),
        "default.rules[0].statement.properties[0].value",
    );
    refused_at(
        &with_rules(vec![rule(
            "cvssAttackVector",
            &[("cvss-attack-vector", "network"), ("max-severity", "critical")],
            "block",
        )]),
        "default.rules[0].statement.properties[1].value",
    );
}

#[test]
fn days_must_be_1_to_30() {
    for t in ["unscannedImage", "unscannedImageMalware", "unscannedImageSecret"] {
        for days in ["1", "15", "30"] {
            accepted(&with_rules(vec![block(t, "days", days)]));
        }
        for days in ["0", "31", "-1", "365", "", "seven", "1.5"] {
            refused_at(
                &with_rules(vec![block(t, "days", days)]),
                "default.rules[0].statement.properties[0].value",
            );
        }
    }
}

#[test]
fn exceptions_are_validated_with_their_path() {
    let doc = |exceptions: Vec<Value>| json!({"name": "p", "default": {"rules": [], "exceptions": exceptions}});
    accepted(&doc(vec![exception(
        "imagePath",
        "starts-with",
        "registry.example.com/",
    )]));
    refused_at(
        &doc(vec![exception("imagePath", "begins-with", "x")]),
        "default.exceptions[0].statement.properties",
    );
    refused_at(
        &doc(vec![
            json!({"type": "registry", "statement": statement(&[("equals", "a"), ("equals", "b")])}),
        ]),
        "default.exceptions[0].statement.properties",
    );
    refused_at(
        &doc(vec![
            json!({"type": "registry", "statement": statement(&[("equals", "a")]), "namespaces": ["Ops"]}),
        ]),
        "default.exceptions[0].namespaces[0]",
    );
    let e = check_json(&doc(vec![
        json!({"type": "digest", "statement": statement(&[("equals", "a")])}),
    ]))
    .unwrap_err();
    assert!(
        e.field_errors()
            .iter()
            .any(|fe| fe.path.starts_with("default.exceptions[0]")),
        "{e}"
    );
}

#[test]
fn an_empty_attestor_list_is_refused() {
    for mode in ["all", "any"] {
        let doc = json!({"name": "p", "default": {"rules": [], "imageVerification": [
            {"name": "signed", "action": "block", "attestors": {mode: []}}
        ]}});
        refused_at(&doc, &format!("default.imageVerification[0].attestors.{mode}"));
    }
    // And in a namespaced definition.
    let doc = json!({"name": "p", "default": {"rules": []}, "namespaced": [
        {"name": "d", "namespaces": ["dev"], "rules": [], "imageVerification": [{"name": "s", "action": "log", "attestors": {"any": []}}]}
    ]});
    refused_at(&doc, "namespaced[0].imageVerification[0].attestors.any");
}

#[test]
fn unknown_fields_are_refused_with_their_path() {
    let top = json!({"name": "p", "default": {"rules": []}, "owner": "me"});
    assert!(check_json(&top).is_err());
    let in_rule = json!({"name": "p", "default": {"rules": [{"type": "podexec", "actoin": "block", "statement": statement(&[("podExec", "true")])}]}});
    let e = check_json(&in_rule).unwrap_err();
    assert!(
        e.field_errors()
            .iter()
            .any(|fe| fe.path.starts_with("default.rules[0]")),
        "{e}"
    );
    assert!(e.to_string().contains("actoin"), "{e}");
    let in_namespaced = json!({"name": "p", "default": {"rules": []}, "namespaced": [{"name": "d", "namespace": ["dev"], "namespaces": ["dev"], "rules": []}]});
    let e = check_json(&in_namespaced).unwrap_err();
    assert!(
        e.field_errors().iter().any(|fe| fe.path.starts_with("namespaced[0]")),
        "{e}"
    );
    let in_property = json!({"name": "p", "default": {"rules": [{"type": "podexec", "action": "block", "statement": {"properties": [{"key": "podExec", "value": "true", "op": "x"}]}}]}});
    let e = check_json(&in_property).unwrap_err();
    assert!(
        e.field_errors()
            .iter()
            .any(|fe| fe.path.starts_with("default.rules[0].statement.properties[0]")),
        "{e}"
    );
}

#[test]
fn an_unknown_action_or_mitigation_is_refused() {
    let e = check_json(&with_rules(vec![rule("podexec", &[("podExec", "true")], "deny")])).unwrap_err();
    assert!(
        e.field_errors()
            .iter()
            .any(|fe| fe.path.starts_with("default.rules[0].action")),
        "{e}"
    );
    let e = check_json(&with_rules(vec![rule_with(
        "podexec",
        &[("podExec", "true")],
        "block",
        "kill",
    )]))
    .unwrap_err();
    assert!(
        e.field_errors()
            .iter()
            .any(|fe| fe.path.starts_with("default.rules[0].mitigation")),
        "{e}"
    );
}

#[test]
fn a_missing_default_definition_is_refused() {
    let e = check_json(&json!({"name": "p"})).unwrap_err();
    assert!(e.to_string().contains("default"), "{e}");
}

#[test]
fn vision_one_read_only_fields_are_accepted() {
    accepted(&json!({
        "id": "e0b5e5b5-3f27-4b0c-9bb8-2f1a5b7c1d2e",
        "name": "p",
        "createdDateTime": "2024-01-01T00:00:00Z",
        "updatedDateTime": "2024-02-01T00:00:00Z",
        "default": {"rules": [privileged_rule()]}
    }));
}

#[test]
fn several_errors_are_reported_at_once() {
    let doc = json!({
        "name": "bad name",
        "description": "d".repeat(200),
        "default": {"rules": [
            privileged_rule(),
            block("containerSecurityContext", "privileged", "maybe"),
            block("vulnerabilities", "max-severity", "critical"),
        ]},
        "namespaced": [{"name": "d", "namespaces": ["Dev"], "rules": [block("unscannedImage", "days", "0")]}]
    });
    let list = errors(&doc);
    let paths: Vec<&str> = list.iter().map(|e| e.path.as_str()).collect();
    for expected in [
        "name",
        "description",
        "default.rules[1].statement.properties[0].value",
        "default.rules[2].statement.properties[0].value",
        "namespaced[0].namespaces[0]",
        "namespaced[0].rules[0].statement.properties[0].value",
    ] {
        assert!(paths.contains(&expected), "{expected} missing from {paths:#?}");
    }
    // The Display form lists them one per line.
    let text = check_json(&doc).unwrap_err().to_string();
    assert_eq!(text.lines().count(), list.len(), "{text}");
}

// ---------------------------------------------------------------------------------------
// JSON and YAML
// ---------------------------------------------------------------------------------------

const YAML: &str = r#"
name: prod.strict
description: Production clusters
xdrEnabled: true
default:
  rules:
    - type: podSecurityContext
      enabled: true
      action: block
      mitigation: isolate
      statement:
        properties: [{key: hostNetwork, value: true}]
    - type: containerSecurityContext
      action: block
      mitigation: log
      statement:
        properties: [{key: capabilities-rule, value: baseline}]
    - type: malware
      action: block
      statement: {properties: [{key: count, value: 0}]}
    - type: vulnerabilities
      action: log
      statement: {properties: [{key: max-severity, value: medium}]}
    - type: unscannedImage
      action: log
      statement: {properties: [{key: days, value: 7}]}
  exceptions:
    - type: imagePath
      statement: {properties: [{key: starts-with, value: "registry.example.com/platform/"}]}
      namespaces: [ops]
  imageVerification:
    - name: prod-images-signed
      action: block
      requireDigest: false
      attestors: {all: [release-signer, qa-signer]}
      conditions:
        - {type: match,   resourceFilter: registry,   operator: equals,   value: registry.example.com}
        - {type: exclude, resourceFilter: repository, operator: contains, value: "/sandbox/"}
namespaced:
  - name: dev.relaxed
    namespaces: [dev, test]
    rules: []
    exceptions: []
runtime:
  rulesets: [{id: ruleset-id}]
"#;

#[test]
fn yaml_documents_are_accepted_with_unquoted_scalars() {
    check(YAML).unwrap();
    let doc = PolicyDocument::parse(YAML).unwrap();
    let props = &doc.default.rules[0].statement.properties[0];
    assert_eq!((props.key.as_str(), props.value.as_str()), ("hostNetwork", "true"));
    assert_eq!(doc.default.rules[2].statement.properties[0].value, "0");
    assert_eq!(doc.default.rules[4].statement.properties[0].value, "7");
    assert!(CompiledPolicy::from_text(YAML).is_ok());
}

#[test]
fn json_and_yaml_of_one_document_are_the_same_policy() {
    let from_yaml = PolicyDocument::parse(YAML).unwrap();
    let as_value: Value = yaml_serde::from_str(YAML).unwrap();
    let from_json = PolicyDocument::parse(&serde_json::to_string_pretty(&as_value).unwrap()).unwrap();
    assert_eq!(from_yaml, from_json);
    assert_eq!(validate(&from_yaml).unwrap(), validate(&from_json).unwrap());
}

#[test]
fn yaml_errors_name_the_field_path_too() {
    let bad = YAML.replace("value: baseline", "value: maybe");
    let e = check(&bad).unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"default.rules[1].statement.properties[0].value: "maybe" is not one of restrict-nondefaults, baseline, restricted, restrict-all"#
    );
    let unknown = YAML.replace("xdrEnabled: true", "xdrEnabled: true\nowner: me");
    let e = check(&unknown).unwrap_err();
    assert!(e.to_string().contains("owner"), "{e}");
    let bad_type = YAML.replace("type: malware", "type: virus");
    let e = check(&bad_type).unwrap_err();
    assert!(
        e.field_errors()
            .iter()
            .any(|fe| fe.path.starts_with("default.rules[2]")),
        "{e}"
    );
}

#[test]
fn invalid_json_is_a_syntax_error_not_a_panic() {
    for text in [
        "{",
        "{\"name\": 1, \"default\": {\"rules\": []}}",
        "[]",
        "{\"name\": \"p\", \"default\": {\"rules\": {}}}",
    ] {
        let e = check(text).unwrap_err();
        assert!(!e.field_errors().is_empty());
        assert!(matches!(e, PolicyError::Syntax(_)), "{text}: {e:?}");
    }
}

#[test]
fn attestors_take_exactly_one_of_all_and_any() {
    let with = |attestors: Value| {
        json!({"name": "p", "default": {"rules": [], "imageVerification": [
            {"name": "signed", "action": "block", "attestors": attestors}
        ]}})
    };
    accepted(&with(json!({"all": ["a"]})));
    accepted(&with(json!({"any": ["a", "b"]})));
    for bad in [
        json!({"all": ["a"], "any": ["b"]}),
        json!({}),
        json!({"one": ["a"]}),
        json!(["a"]),
    ] {
        let e = check_json(&with(bad.clone())).unwrap_err();
        assert!(
            e.field_errors()
                .iter()
                .any(|fe| fe.path.starts_with("default.imageVerification[0].attestors")),
            "{bad}: {e}"
        );
    }
}

#[test]
fn a_document_round_trips_through_yaml_and_json() {
    let doc = PolicyDocument::parse(YAML).unwrap();
    let yaml = yaml_serde::to_string(&doc).unwrap();
    assert_eq!(PolicyDocument::parse(&yaml).unwrap(), doc, "{yaml}");
    let json = serde_json::to_string(&doc).unwrap();
    assert_eq!(PolicyDocument::parse(&json).unwrap(), doc, "{json}");
}

#[test]
fn lists_over_their_limits_are_refused_naming_the_list_and_the_limit() {
    use portcullis_engine::limits::*;
    // At the limit: accepted.
    accepted(&with_rules(vec![privileged_rule(); MAX_RULES_PER_DEFINITION]));
    // One over: refused at the list, with the limit in the message.
    let msg = refused_at(
        &with_rules(vec![privileged_rule(); MAX_RULES_PER_DEFINITION + 1]),
        "default.rules",
    );
    assert!(msg.contains("the limit is 256 rules per definition"), "{msg}");

    let condition = json!({"type": "match", "resourceFilter": "registry", "operator": "equals", "value": "r.io"});
    let mut doc = with_rules(vec![]);
    doc["default"]["imageVerification"] = json!([{
        "name": "signed", "action": "block", "attestors": {"all": ["a"]},
        "conditions": vec![condition; MAX_CONDITIONS_PER_SIGNATURE_RULE + 1],
    }]);
    let msg = refused_at(&doc, "default.imageVerification[0].conditions");
    assert!(msg.contains("the limit is 128 conditions per signature rule"), "{msg}");

    // Namespaced definitions: every one within its limit, too many in all.
    let namespaced: Vec<Value> = (0..MAX_RULES_PER_POLICY / MAX_RULES_PER_DEFINITION + 1)
        .map(|i| {
            json!({"name": format!("d{i}"), "namespaces": [format!("ns{i}")],
                        "rules": vec![privileged_rule(); MAX_RULES_PER_DEFINITION]})
        })
        .collect();
    let mut doc = with_rules(vec![]);
    doc["namespaced"] = json!(namespaced);
    let list = errors(&doc);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].path, "(document)");
    assert!(
        list[0].message.contains("the limit is 4096 rules per policy"),
        "{list:?}"
    );
}

#[test]
fn documents_over_the_size_limit_are_refused_unread() {
    let big = json!({"name": "p", "description": "x".repeat(portcullis_engine::limits::MAX_DOCUMENT_BYTES), "default": {"rules": []}});
    match check_json(&big) {
        Err(PolicyError::Syntax(e)) => {
            assert_eq!(e.path, "(document)");
            assert!(e.message.contains("the limit is 1048576 bytes"), "{e}");
        }
        other => panic!("expected a size error, got {other:?}"),
    }
}
