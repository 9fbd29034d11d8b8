//! Conversions between the domain's findings and commands and their protobuf messages (the
//! gRPC adapter and the events use the same ones).

use portcullis_engine::policy::Mitigation;
use portcullis_proto::common::v1 as pc;
use portcullis_proto::continuous::v1 as pv;
use time::OffsetDateTime;

use crate::findings::{Finding, ISOLATION_LABEL, Order, RuleKey};
use crate::store::{CommandOrigin, CommandState, StoredCommand, StoredFinding};

/// A protobuf timestamp of `at`.
pub fn timestamp(at: OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.unix_timestamp(),
        // Always within 0..1e9, so the conversion cannot fail.
        nanos: i32::try_from(at.nanosecond()).unwrap_or(0),
    }
}

/// The instant of a protobuf timestamp; `None` when out of range.
pub fn instant(t: &prost_types::Timestamp) -> Option<OffsetDateTime> {
    let at = OffsetDateTime::from_unix_timestamp(t.seconds).ok()?;
    Some(at + time::Duration::nanoseconds(i64::from(t.nanos)))
}

/// The protobuf mitigation.
pub fn mitigation_to_proto(m: Mitigation) -> pc::Mitigation {
    match m {
        Mitigation::None => pc::Mitigation::None,
        Mitigation::Log => pc::Mitigation::Log,
        Mitigation::Isolate => pc::Mitigation::Isolate,
        Mitigation::Terminate => pc::Mitigation::Terminate,
    }
}

/// The domain mitigation of a protobuf one; `None` when unset.
pub fn mitigation_from_proto(value: i32) -> Option<Mitigation> {
    match pc::Mitigation::try_from(value).ok()? {
        pc::Mitigation::Unspecified => None,
        pc::Mitigation::None => Some(Mitigation::None),
        pc::Mitigation::Log => Some(Mitigation::Log),
        pc::Mitigation::Isolate => Some(Mitigation::Isolate),
        pc::Mitigation::Terminate => Some(Mitigation::Terminate),
    }
}

/// The rule type and properties a rule key names (`type { k:v, k:v }`); the key itself stays
/// the exact text (`Finding.rule`).
fn split_rule(rule: &RuleKey) -> (String, std::collections::HashMap<String, String>) {
    let text = rule.as_str();
    let Some((rule_type, rest)) = text.split_once(" {") else {
        return (text.to_owned(), Default::default());
    };
    let inner = rest.strip_suffix(" }").unwrap_or(rest).trim();
    let properties = inner
        .split(", ")
        .filter_map(|kv| kv.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .collect();
    (rule_type.to_owned(), properties)
}

/// A finding as protobuf (`id` empty for one not stored, as in a preview).
pub fn finding_to_proto(id: &str, finding: &Finding, policy_id: &str, policy_revision: u64) -> pv::Finding {
    let (rule_type, properties) = split_rule(&finding.rule);
    pv::Finding {
        id: id.to_owned(),
        cluster_id: finding.cluster.clone(),
        pod: Some(pc::PodKey {
            namespace: finding.namespace.to_string(),
            name: finding.pod.to_string(),
            uid: finding.uid.clone(),
        }),
        owner: None,
        violation: Some(pc::Violation {
            rule_type,
            properties,
            action: pc::Action::Unspecified as i32,
            mitigation: mitigation_to_proto(finding.mitigation) as i32,
            containers: finding.containers.clone(),
            pod: if finding.containers.is_empty() {
                finding.pod.to_string()
            } else {
                String::new()
            },
            message: finding.message.clone(),
            checks: Vec::new(),
        }),
        state: if finding.resolved.is_some() {
            pv::FindingState::Resolved
        } else {
            pv::FindingState::Open
        } as i32,
        policy_id: policy_id.to_owned(),
        policy_revision,
        first_seen_at: Some(timestamp(finding.first_seen)),
        last_seen_at: Some(timestamp(finding.last_seen)),
        resolved_at: finding.resolved.map(timestamp),
        digests: Vec::new(),
        rule: finding.rule.as_str().to_owned(),
    }
}

/// A stored finding as protobuf.
pub fn stored_finding_to_proto(f: &StoredFinding) -> pv::Finding {
    finding_to_proto(&f.id, &f.finding, &f.policy.id, f.policy.revision)
}

/// The protobuf command type of an order.
pub fn command_type(order: &Order) -> pv::CommandType {
    match order {
        Order::Isolate { .. } => pv::CommandType::Isolate,
        Order::Terminate => pv::CommandType::Terminate,
        Order::RestoreIsolation => pv::CommandType::Restore,
        Order::NotIsolatable => pv::CommandType::NotIsolatable,
    }
}

/// The protobuf command origin.
pub fn origin_to_proto(origin: CommandOrigin) -> pv::CommandOrigin {
    match origin {
        CommandOrigin::Continuous => pv::CommandOrigin::Continuous,
        CommandOrigin::Runtime => pv::CommandOrigin::Runtime,
        CommandOrigin::Manual => pv::CommandOrigin::Manual,
    }
}

/// The protobuf command state.
pub fn state_to_proto(state: CommandState) -> pv::CommandState {
    match state {
        CommandState::Pending => pv::CommandState::Pending,
        CommandState::Done => pv::CommandState::Done,
        CommandState::Failed => pv::CommandState::Failed,
        CommandState::Rejected => pv::CommandState::Rejected,
        CommandState::Cancelled => pv::CommandState::Cancelled,
        CommandState::Reported => pv::CommandState::Reported,
    }
}

/// The domain command state of a protobuf one; `None` when unset.
pub fn state_from_proto(value: i32) -> Option<CommandState> {
    match pv::CommandState::try_from(value).ok()? {
        pv::CommandState::Unspecified => None,
        pv::CommandState::Pending => Some(CommandState::Pending),
        pv::CommandState::Done => Some(CommandState::Done),
        pv::CommandState::Failed => Some(CommandState::Failed),
        pv::CommandState::Rejected => Some(CommandState::Rejected),
        pv::CommandState::Cancelled => Some(CommandState::Cancelled),
        pv::CommandState::Reported => Some(CommandState::Reported),
    }
}

/// The network policy and label fields of an order.
fn order_payload(order: &Order) -> (String, String) {
    match order {
        Order::Isolate { network_policy } => (network_policy.to_string(), ISOLATION_LABEL.to_owned()),
        Order::RestoreIsolation => (String::new(), ISOLATION_LABEL.to_owned()),
        Order::Terminate | Order::NotIsolatable => (String::new(), String::new()),
    }
}

/// A stored command as protobuf.
pub fn command_to_proto(c: &StoredCommand) -> pv::MitigationCommand {
    let (network_policy_json, isolation_label) = order_payload(&c.command.order);
    pv::MitigationCommand {
        command_id: c.id.clone(),
        cluster_id: c.cluster.clone(),
        pod: Some(pc::PodKey {
            namespace: c.command.pod.namespace.to_string(),
            name: c.command.pod.name.to_string(),
            uid: c.command.pod.uid.clone(),
        }),
        r#type: command_type(&c.command.order) as i32,
        origin: origin_to_proto(c.command.origin) as i32,
        reason: c.command.reason.clone(),
        finding_ids: Vec::new(),
        runtime_rule_ids: c.command.runtime_rule_ids.clone(),
        issued_at: Some(timestamp(c.issued_at)),
        state: state_to_proto(c.state) as i32,
        state_changed_at: Some(timestamp(c.state_changed_at)),
        ack_message: c.ack_message.clone(),
        network_policy_json,
        isolation_label,
        rules: c.command.rules.clone(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_key_splits_into_its_type_and_properties() {
        let (t, p) = split_rule(&RuleKey(
            "containerSecurityContext { privileged:true, runAsRoot:false }".into(),
        ));
        assert_eq!(t, "containerSecurityContext");
        assert_eq!(p.get("privileged").map(String::as_str), Some("true"));
        assert_eq!(p.get("runAsRoot").map(String::as_str), Some("false"));
        let (t, p) = split_rule(&RuleKey("mitigation-ineffective".into()));
        assert_eq!(t, "mitigation-ineffective");
        assert!(p.is_empty());
    }

    #[test]
    fn timestamps_round_trip() {
        let at = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap() + time::Duration::nanoseconds(123);
        assert_eq!(instant(&timestamp(at)), Some(at));
    }
}
