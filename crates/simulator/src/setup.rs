//! Setup with the tenant's admin key: the simulation's runtime ruleset and policy (applied,
//! so a re-run changes nothing), and its clusters with their connector keys (registered, or
//! on a re-run rotated: the store shows a connector key once).

use portcullis_proto::common::v1::{ResourceRef, resource_ref};
use portcullis_proto::policystore::v1 as ps;
use portcullis_proto::policystore::v1::cluster_service_client::ClusterServiceClient;
use portcullis_proto::policystore::v1::policy_service_client::PolicyServiceClient;
use portcullis_proto::policystore::v1::ruleset_service_client::RulesetServiceClient;
use serde_json::{Value, json};
use tonic::Code;

use crate::net::{Authed, MAX_MESSAGE};
use crate::{SimulateError, SimulationConfig};

/// Runtime rules the ruleset mitigates, with the mitigation; events of other rules are only
/// stored.
pub const RUNTIME_RULES: [(&str, &str); 3] = [
    ("Terminal shell in container", "terminate"),
    ("Read sensitive file untrusted", "isolate"),
    ("Clear Log Activities", "log"),
];

/// A simulated cluster as registered.
#[derive(Debug, Clone)]
pub(crate) struct Registered {
    /// Its name.
    pub(crate) name: String,
    /// Its id.
    pub(crate) id: String,
    /// A connector key of it.
    pub(crate) key: String,
}

/// A reference by name.
pub(crate) fn by_name(name: &str) -> Option<ResourceRef> {
    Some(ResourceRef {
        r#ref: Some(resource_ref::Ref::Name(name.to_owned())),
    })
}

/// The simulation's policy name: the prefix with what a policy name cannot carry made `_`.
pub fn policy_name(prefix: &str) -> String {
    let clean: String = prefix
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '_' })
        .collect();
    format!("{clean}.simulator")
}

/// The simulation's runtime ruleset name.
pub fn ruleset_name(prefix: &str) -> String {
    format!("{prefix}-runtime")
}

/// Cluster `index`'s name.
pub fn cluster_name(prefix: &str, index: usize) -> String {
    format!("{prefix}-{index}")
}

/// The runtime ruleset: terminate, isolate and log one rule each, on every pod.
pub fn ruleset_document(prefix: &str) -> Value {
    let rules: Vec<Value> = RUNTIME_RULES
        .iter()
        .map(|(id, mitigation)| json!({"id": id, "mitigation": mitigation}))
        .collect();
    json!({
        "name": ruleset_name(prefix),
        "description": "The cluster simulator's runtime ruleset",
        "rules": rules,
    })
}

fn rule(rule_type: &str, key: &str, value: &str, action: &str, mitigation: Option<&str>) -> Value {
    let mut rule = serde_json::Map::new();
    rule.insert("type".into(), json!(rule_type));
    rule.insert("action".into(), json!(action));
    rule.insert(
        "statement".into(),
        json!({"properties": [{"key": key, "value": value}]}),
    );
    if let Some(m) = mitigation {
        rule.insert("mitigation".into(), json!(m));
    }
    Value::Object(rule)
}

/// The policy: blocks privileged containers, host PID, capabilities beyond the baseline and
/// exec/attach (allowed in namespace `dev`), logs host network; running pods that break it
/// are isolated (privileged) or terminated (host PID); stores everything in telemetry and
/// mitigates runtime detections with the ruleset `ruleset_id`.
pub fn policy_document(prefix: &str, ruleset_id: &str) -> Value {
    json!({
        "name": policy_name(prefix),
        "description": "The cluster simulator's policy",
        "xdrEnabled": true,
        "default": {"rules": [
            rule("containerSecurityContext", "privileged", "true", "block", Some("isolate")),
            rule("podSecurityContext", "hostPID", "true", "block", Some("terminate")),
            rule("podSecurityContext", "hostNetwork", "true", "log", Some("log")),
            rule("containerSecurityContext", "capabilities-rule", "baseline", "block", Some("log")),
            rule("podexec", "podExec", "true", "block", None),
        ]},
        "namespaced": [{
            "name": "dev.relaxed",
            "namespaces": ["dev"],
            "rules": [rule("containerSecurityContext", "privileged", "true", "log", Some("log"))],
        }],
        "runtime": {"rulesets": [{"id": ruleset_id}]},
    })
}

fn store_error(what: &str, status: &tonic::Status) -> SimulateError {
    SimulateError::Setup(format!("{what}: {}", crate::net::status_line(status)))
}

/// Applies the ruleset and the policy, then registers (or re-keys) the clusters.
pub(crate) async fn prepare(config: &SimulationConfig, channel: Authed) -> Result<Vec<Registered>, SimulateError> {
    let prefix = &config.cluster_prefix;
    let mut rulesets = RulesetServiceClient::new(channel.clone()).max_decoding_message_size(MAX_MESSAGE);
    let ruleset = rulesets
        .apply_ruleset(ps::ApplyRulesetRequest {
            document_json: ruleset_document(prefix).to_string(),
            expected_revision: None,
        })
        .await
        .map_err(|s| store_error("applying the runtime ruleset", &s))?
        .into_inner()
        .ruleset
        .ok_or_else(|| SimulateError::Setup("applying the runtime ruleset: no ruleset in the answer".into()))?;
    let mut policies = PolicyServiceClient::new(channel.clone()).max_decoding_message_size(MAX_MESSAGE);
    policies
        .apply_policy(ps::ApplyPolicyRequest {
            document_json: policy_document(prefix, &ruleset.id).to_string(),
            expected_revision: None,
        })
        .await
        .map_err(|s| store_error("applying the policy", &s))?;
    let policy = policy_name(prefix);
    let mut clusters = ClusterServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE);
    let mut registered = Vec::with_capacity(config.clusters);
    for index in 0..config.clusters {
        let name = cluster_name(prefix, index);
        let created = clusters
            .register_cluster(ps::RegisterClusterRequest {
                name: name.clone(),
                description: "simulated by portcullis simulate".to_owned(),
                policy: by_name(&policy),
                settings: None,
                connector_key_expires_at: None,
            })
            .await;
        let (id, key) = match created {
            Ok(answer) => {
                let answer = answer.into_inner();
                (answer.cluster.map(|c| c.id).unwrap_or_default(), answer.connector_key)
            }
            Err(status) if status.code() == Code::AlreadyExists => {
                // A re-run: the same cluster, assigned the policy again, with a new key (the
                // previous keys stay valid for the store's grace period).
                let cluster = clusters
                    .assign_policy(ps::AssignPolicyRequest {
                        cluster: by_name(&name),
                        policy: by_name(&policy),
                    })
                    .await
                    .map_err(|s| store_error(&format!("assigning the policy to {name}"), &s))?
                    .into_inner()
                    .cluster;
                let rotated = clusters
                    .rotate_connector_key(ps::RotateConnectorKeyRequest {
                        cluster: by_name(&name),
                        grace_period: None,
                        expires_at: None,
                    })
                    .await
                    .map_err(|s| store_error(&format!("rotating the connector key of {name}"), &s))?
                    .into_inner();
                (cluster.map(|c| c.id).unwrap_or_default(), rotated.connector_key)
            }
            Err(status) => return Err(store_error(&format!("registering cluster {name}"), &status)),
        };
        if key.is_empty() {
            return Err(SimulateError::Setup(format!(
                "cluster {name}: the store gave no connector key"
            )));
        }
        registered.push(Registered { name, id, key });
    }
    Ok(registered)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prefix_and_what_each_resource_allows() {
        assert_eq!(policy_name("sim-a"), "sim_a.simulator");
        assert_eq!(ruleset_name("sim-a"), "sim-a-runtime");
        assert_eq!(cluster_name("sim", 3), "sim-3");
        let policy = policy_document("sim", "r1");
        assert_eq!(policy["runtime"]["rulesets"][0]["id"], "r1");
        assert_eq!(policy["xdrEnabled"], true);
        let ruleset = ruleset_document("sim");
        assert_eq!(ruleset["rules"].as_array().map(Vec::len), Some(RUNTIME_RULES.len()));
    }
}
