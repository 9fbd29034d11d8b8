//! Documents given with `-f FILE` to `apply`: JSON or YAML, read whole, checked by the
//! engine before anything is sent, and sent as JSON text.

use std::io::Read;

use portcullis_engine::policy::FieldError;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::{ClientError, one_line};

/// A document read from a file, as the JSON text to send.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedDocument {
    /// The file name as given (`-` for standard input), for messages.
    pub source_name: String,
    /// The document (without the `id` and `revision` that `get -o json` adds).
    pub value: Value,
}

impl LoadedDocument {
    /// The document as compact JSON text.
    pub fn json(&self) -> String {
        self.value.to_string()
    }
}

/// Reads `path` (`-` for standard input).
pub fn read_source(path: &str) -> Result<Vec<u8>, ClientError> {
    let result = if path == "-" {
        let mut bytes = Vec::new();
        std::io::stdin().lock().read_to_end(&mut bytes).map(|_| bytes)
    } else {
        std::fs::read(path)
    };
    result.map_err(|e| ClientError::input(format!("{path}: {e}")))
}

/// Parses one JSON or YAML document (JSON when it starts with `{`), and drops the top-level
/// `id` and `revision` that `get -o json` prints, so that its output can be applied again.
pub fn parse_document(source_name: &str, bytes: &[u8]) -> Result<LoadedDocument, ClientError> {
    let text = std::str::from_utf8(bytes).map_err(|e| ClientError::input(format!("{source_name}: not UTF-8: {e}")))?;
    let value: Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| ClientError::input(format!("{source_name}: invalid JSON: {e}")))?
    } else {
        portcullis_engine::yaml::from_str(text)
            .map_err(|e| ClientError::input(format!("{source_name}: invalid YAML: {}", one_line(&e))))?
    };
    let Value::Object(mut map) = value else {
        return Err(ClientError::input(format!(
            "{source_name}: the document must be a mapping"
        )));
    };
    map.remove("id");
    map.remove("revision");
    Ok(LoadedDocument {
        source_name: source_name.to_owned(),
        value: Value::Object(map),
    })
}

/// Reads and parses the document of `-f`.
pub fn load(path: &str) -> Result<LoadedDocument, ClientError> {
    let bytes = read_source(path)?;
    parse_document(path, &bytes)
}

/// Deserializes the document into one of the engine's document types; the error names the
/// field path (there are no line numbers to give: the value is already parsed).
pub fn to_engine<T: DeserializeOwned>(doc: &LoadedDocument) -> Result<T, ClientError> {
    serde_path_to_error::deserialize(doc.value.clone()).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { "(document)".to_owned() } else { path };
        ClientError::Invalid {
            source_name: doc.source_name.clone(),
            errors: vec![FieldError::new(path, e.inner().to_string())],
        }
    })
}

/// The field errors of the engine's validation as a client error.
pub fn invalid(doc: &LoadedDocument, errors: Vec<FieldError>) -> ClientError {
    ClientError::Invalid {
        source_name: doc.source_name.clone(),
        errors,
    }
}

/// The object `get -o json` prints: the stored document with `id` and `revision` on top.
pub fn document_with_identity(document_json: &str, id: &str, revision: u64) -> Result<Value, ClientError> {
    let value: Value = if document_json.trim().is_empty() {
        Value::Object(serde_json::Map::new())
    } else {
        serde_json::from_str(document_json)
            .map_err(|e| ClientError::input(format!("the server sent a document that is not JSON: {e}")))?
    };
    let Value::Object(mut map) = value else {
        return Err(ClientError::input(
            "the server sent a document that is not a JSON object",
        ));
    };
    map.insert("id".to_owned(), Value::String(id.to_owned()));
    map.insert("revision".to_owned(), Value::from(revision));
    Ok(Value::Object(map))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
mod tests {
    use portcullis_engine::policy::{PolicyDocument, validate};
    use serde_json::json;

    use super::*;

    #[test]
    fn yaml_and_json_give_the_same_document() {
        let yaml = parse_document("p.yaml", b"name: a\ndefault:\n  rules: []\n").unwrap();
        let json = parse_document("p.json", br#"{"name": "a", "default": {"rules": []}}"#).unwrap();
        assert_eq!(yaml.value, json.value);
        let sent: Value = serde_json::from_str(&json.json()).unwrap();
        assert_eq!(sent, json!({"name": "a", "default": {"rules": []}}));
    }

    #[test]
    fn what_get_prints_can_be_applied_again() {
        let printed = document_with_identity(r#"{"name":"a","default":{"rules":[]}}"#, "pol-1", 4).unwrap();
        assert_eq!(
            printed,
            json!({"id": "pol-1", "revision": 4, "name": "a", "default": {"rules": []}})
        );
        let again = parse_document("-", printed.to_string().as_bytes()).unwrap();
        assert_eq!(again.value, json!({"name": "a", "default": {"rules": []}}));
        let doc: PolicyDocument = to_engine(&again).unwrap();
        assert!(validate(&doc).is_ok());
    }

    #[test]
    fn an_unknown_enum_value_names_the_field_path() {
        let doc = parse_document(
            "p.yaml",
            b"name: prod.strict\ndefault:\n  rules:\n    - type: podSecurityContext\n      action: blok\n      statement: {properties: [{key: hostNetwork, value: 'true'}]}\n",
        )
        .unwrap();
        let err = to_engine::<PolicyDocument>(&doc).unwrap_err();
        let lines = err.lines();
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].starts_with("p.yaml: default.rules[0].action: unknown variant `blok`"),
            "{lines:?}"
        );
    }

    #[test]
    fn syntax_errors_and_non_mappings_are_input_errors() {
        assert!(
            matches!(parse_document("p.json", b"{\"name\": "), Err(ClientError::Input(m)) if m.starts_with("p.json: invalid JSON"))
        );
        assert!(
            matches!(parse_document("p.yaml", b"a: [1, 2"), Err(ClientError::Input(m)) if m.starts_with("p.yaml: invalid YAML"))
        );
        assert!(matches!(parse_document("p.yaml", b"- 1\n- 2\n"), Err(ClientError::Input(m)) if m.contains("mapping")));
        assert!(matches!(parse_document("p.yaml", &[0xff, 0xfe]), Err(ClientError::Input(m)) if m.contains("UTF-8")));
    }

    #[test]
    fn a_missing_file_names_the_file() {
        let err = load("/nonexistent/dir/policy.yaml").unwrap_err();
        assert!(
            err.lines()[0].starts_with("/nonexistent/dir/policy.yaml: "),
            "{:?}",
            err.lines()
        );
    }

    #[test]
    fn a_document_that_is_not_an_object_is_refused() {
        assert!(document_with_identity("[1]", "x", 1).is_err());
        assert!(document_with_identity("{", "x", 1).is_err());
    }
}
