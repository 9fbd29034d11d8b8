//! The policy document (POLICY.md section 1): its serde model, parsing, and validation.
//!
//! A document is parsed into [`PolicyDocument`] (JSON or YAML), then [`validate`]d into a
//! [`ValidPolicy`]: every rule's statement is checked against the rule catalogue of POLICY.md
//! section 3 and turned into a typed [`RuleCheck`]. Errors name the field path
//! (`default.rules[2].statement.properties[0].value: "maybe" is not one of true`).

mod document;
mod rules;
mod validate;

pub use document::*;
pub use rules::*;
pub use validate::*;
