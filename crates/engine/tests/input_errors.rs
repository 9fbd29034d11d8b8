//! How `parse_document` reads odd but legal input, and what its errors say.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portcullis_engine::input::parse_document;

#[test]
fn a_list_with_null_items_is_an_empty_list() {
    let subjects = parse_document(br#"{"apiVersion":"v1","kind":"List","items":null}"#).unwrap();
    assert!(subjects.is_empty());
    let subjects = parse_document(br#"{"apiVersion":"v1","kind":"List"}"#).unwrap();
    assert!(subjects.is_empty());
}

#[test]
fn errors_do_not_name_internal_types() {
    let err = parse_document(b"null").unwrap_err();
    assert!(!err.message.contains("Envelope"), "{err}");
    assert!(err.message.contains("expected an object"), "{err}");
}

#[test]
fn truncated_input_names_the_document() {
    let err = parse_document(br#"{"apiVersion":"v1","kind":"Pod","spec":{"containers":["#).unwrap_err();
    assert_ne!(err.path, "?", "{err}");
    assert!(err.to_string().contains("EOF"), "{err}");
}

#[test]
fn deeply_nested_yaml_is_refused_before_parsing() {
    let text = format!("a: {}1{}", "[".repeat(10_000), "]".repeat(10_000));
    let err = portcullis_engine::yaml::from_str::<serde_json::Value>(&text).unwrap_err();
    assert!(err.contains("nested more than 128"), "{err}");
    let err =
        portcullis_engine::policy::PolicyDocument::from_yaml(&format!("name: {}", "[".repeat(10_000))).unwrap_err();
    assert!(err.to_string().contains("nested more than 128"), "{err}");
}
