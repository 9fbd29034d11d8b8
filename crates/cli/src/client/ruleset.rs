//! `portcullis ruleset ...`: runtime rulesets, by name (the shared named-document commands).

use portcullis_proto::policystore::v1 as pb;
use serde_json::json;

use super::named_document::named_document_cli;

named_document_cli! {
    command: RulesetCommand, resource: Rulesets,
    kind: "ruleset", what: "runtime ruleset", plural: "rulesets",
    extra: "RULES" / "rules", |r: &pb::Ruleset| (json!(r.rule_count), r.rule_count.to_string()),
    engine: portcullis_engine::runtime::Ruleset, record: Ruleset,
    client: pb::ruleset_service_client::RulesetServiceClient<super::Svc>, conn: rulesets,
    field: ruleset / rulesets,
    apply: apply_ruleset(ApplyRulesetRequest),
    get: get_ruleset(GetRulesetRequest),
    list: list_rulesets(ListRulesetsRequest),
    delete: delete_ruleset(DeleteRulesetRequest),
}
