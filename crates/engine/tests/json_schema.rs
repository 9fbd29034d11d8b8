//! The JSON Schema of the policy document, generated from the Rust types with schemars, is
//! published at `schema/policy.schema.json`; this test keeps the published file in step.
//!
//! After changing the policy types, regenerate it with
//! `PORTCULLIS_REGENERATE=1 cargo test -p portcullis-engine --test json_schema`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::path::PathBuf;

use portcullis_engine::policy::PolicyDocument;
use serde_json::Value;

fn published_path() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schema/policy.schema.json"))
}

/// The schema as published: pretty-printed JSON with a trailing newline.
fn generated() -> String {
    let schema = schemars::schema_for!(PolicyDocument);
    let mut text = serde_json::to_string_pretty(&schema).unwrap();
    text.push('\n');
    text
}

#[test]
fn published_schema_matches_the_rust_types() {
    let path = published_path();
    let text = generated();
    if std::env::var_os("PORTCULLIS_REGENERATE").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
        println!("wrote {}", path.display());
        return;
    }
    let published = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; generate it with PORTCULLIS_REGENERATE=1 cargo test -p portcullis-engine --test json_schema",
            path.display()
        )
    });
    assert!(
        published == text,
        "{} is out of date with the policy types; regenerate it with \
         PORTCULLIS_REGENERATE=1 cargo test -p portcullis-engine --test json_schema",
        path.display()
    );
}

/// Finds the definition named `name` in the schema's `$defs`.
fn definition<'a>(schema: &'a Value, name: &str) -> &'a Value {
    schema["$defs"]
        .get(name)
        .unwrap_or_else(|| panic!("no $defs.{name} in the schema"))
}

/// Every string a definition allows as an enumeration (`enum`, or `oneOf` of `const`/`enum`).
fn enumerated(def: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(values) = def["enum"].as_array() {
        out.extend(values.iter().filter_map(Value::as_str).map(str::to_owned));
    }
    for branch in def["oneOf"].as_array().into_iter().flatten() {
        out.extend(branch["const"].as_str().map(str::to_owned));
        out.extend(enumerated(branch));
    }
    out
}

#[test]
fn schema_describes_the_document_of_policy_md() {
    let schema: Value = serde_json::from_str(&generated()).unwrap();
    assert_eq!(schema["title"], "Portcullis protection policy");
    assert_eq!(schema["type"], "object");
    let required: Vec<&str> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        required.contains(&"name") && required.contains(&"default"),
        "{required:?}"
    );
    // Unknown fields are refused by the parser, so the schema says so too.
    assert_eq!(schema["additionalProperties"], false);
    for field in ["name", "description", "xdrEnabled", "default", "namespaced", "runtime"] {
        assert!(schema["properties"].get(field).is_some(), "property {field}");
    }
    // Vision One's read-only fields are accepted (and ignored) by the parser, so an exported
    // policy must validate against the schema too.
    for field in ["id", "createdDateTime", "updatedDateTime"] {
        assert!(schema["properties"].get(field).is_some(), "property {field}");
    }

    let mut rule_types = enumerated(definition(&schema, "RuleType"));
    rule_types.sort();
    let mut want = vec![
        "podSecurityContext",
        "containerSecurityContext",
        "registry",
        "image",
        "tag",
        "imagePath",
        "vulnerabilities",
        "cvssAttackVector",
        "cvssAttackComplexity",
        "cvssAvailability",
        "malware",
        "secrets",
        "unscannedImage",
        "unscannedImageMalware",
        "unscannedImageSecret",
        "podexec",
        "portforward",
        "podSecurityStandard",
    ];
    want.sort_unstable();
    assert_eq!(rule_types, want);
    let mut actions = enumerated(definition(&schema, "Action"));
    actions.sort();
    assert_eq!(actions, ["block", "log", "none"]);
    let mut mitigations = enumerated(definition(&schema, "Mitigation"));
    mitigations.sort();
    assert_eq!(mitigations, ["isolate", "log", "none", "terminate"]);
}
