//! `portcullis ruleset ...`: runtime rulesets, by name (the shared named-document commands).

use portcullis_proto::policystore::v1 as pb;
use serde_json::json;

use super::named_document::named_document_cli;

named_document_cli! {
    Ruleset / ruleset / rulesets, what: "runtime ruleset", engine: portcullis_engine::runtime::Ruleset,
    extra: "RULES" / "rules", |r: &pb::Ruleset| (json!(r.rule_count), r.rule_count.to_string()),
}
