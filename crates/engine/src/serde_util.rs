//! Serde helpers shared by the engine's document types.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use crate::policy::FieldError;

/// Deserializes `null` or an absent field as the type's default (Kubernetes, Trivy and YAML
/// authors all write `null` for "empty").
pub(crate) fn nullable<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Parses a JSON document, naming the failing field's path on error.
pub(crate) fn parse_json<T: DeserializeOwned>(text: &[u8]) -> Result<T, FieldError> {
    let mut de = serde_json::Deserializer::from_slice(text);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(path_error)?;
    de.end().map_err(|e| FieldError::new("(document)", e.to_string()))?;
    Ok(value)
}

/// Parses a YAML document (one document), naming the failing field's path on error; a
/// document over the size limit, nested too deep or with anchors and aliases is refused first
/// (see [`crate::yaml`]).
pub(crate) fn parse_yaml<T: DeserializeOwned>(text: &str) -> Result<T, FieldError> {
    crate::limits::check_document_size(text)?;
    crate::yaml::check(text).map_err(|e| FieldError::new("(document)", e))?;
    serde_path_to_error::deserialize(yaml_serde::Deserializer::from_str(text)).map_err(path_error)
}

fn path_error<E: fmt::Display>(err: serde_path_to_error::Error<E>) -> FieldError {
    let path = err.path().to_string();
    // serde_path_to_error writes "." for the document root.
    let path = if path == "." { "(document)".to_owned() } else { path };
    let message = err.inner().to_string();
    // yaml_serde prefixes its message with the path of the enclosing map; say it once.
    let message = match message.split_once(": ") {
        Some((prefix, rest))
            if !prefix.is_empty()
                && (path == prefix
                    || path.starts_with(&format!("{prefix}."))
                    || path.starts_with(&format!("{prefix}["))) =>
        {
            rest.to_owned()
        }
        _ => message,
    };
    FieldError::new(path, message)
}
