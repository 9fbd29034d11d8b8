//! Size limits on the documents the engine reads (policies, rulesets, attestors), so that no
//! document can cost its reader more than a bounded amount of memory and time. Each limit is
//! far above what a real Vision One policy holds; a document over one is refused with an
//! error naming the field and the limit. The list is in README.md ("Limits").

use crate::policy::FieldError;

/// The largest document accepted, in bytes of text (JSON or YAML): 1 MiB. The largest real
/// policies (every rule type, a few namespaced definitions, a few hundred exceptions) are tens
/// of KB; 1 MiB bounds the parse (and the stored row) well under the 16 MiB a request may be.
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// The most rules one definition (the default or a namespaced one) may list. A definition
/// holds one or two rules per rule type (19 types today), so real ones have a few dozen.
pub const MAX_RULES_PER_DEFINITION: usize = 256;

/// The most namespaced definitions one policy may have (real policies: a handful, one per
/// team or environment).
pub const MAX_NAMESPACED_DEFINITIONS: usize = 256;

/// The most rules one policy may list in all its definitions together: what admission
/// compiles for it. Real policies: under a hundred.
pub const MAX_RULES_PER_POLICY: usize = 4096;

/// The most namespaces one namespaced definition may list.
pub const MAX_NAMESPACES_PER_DEFINITION: usize = 1024;

/// The most exceptions one definition may list (images exempted by path, tag or registry;
/// large tenants list a few hundred).
pub const MAX_EXCEPTIONS_PER_DEFINITION: usize = 1024;

/// The most Image Signature Verification rules one definition may list.
pub const MAX_SIGNATURE_RULES_PER_DEFINITION: usize = 128;

/// The most conditions one Image Signature Verification rule may have (real ones: one to
/// three `match`/`exclude` conditions).
pub const MAX_CONDITIONS_PER_SIGNATURE_RULE: usize = 128;

/// The most properties one rule or exception statement may list (the valid ones take one or
/// two; past this the statement is refused without judging each property).
pub const MAX_PROPERTIES_PER_STATEMENT: usize = 16;

/// The most runtime rulesets one policy may name.
pub const MAX_RUNTIME_RULESETS: usize = 128;

/// Refuses a document of more than [`MAX_DOCUMENT_BYTES`], before anything parses it.
pub fn check_document_size(text: &str) -> Result<(), FieldError> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(FieldError::new(
            "(document)",
            format!(
                "is {} bytes; the limit is {MAX_DOCUMENT_BYTES} bytes (1 MiB) per document",
                text.len()
            ),
        ));
    }
    Ok(())
}

/// An error for a list at `path` of `len` entries over `limit`; `what` names the entries
/// and the scope of the limit ("rules per definition").
pub(crate) fn over_limit(path: impl Into<String>, len: usize, limit: usize, what: &str) -> Option<FieldError> {
    (len > limit).then(|| FieldError::new(path, format!("has {len} entries; the limit is {limit} {what}")))
}
