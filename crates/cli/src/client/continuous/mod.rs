//! The continuous scanning service's client commands: `inventory sync`, `findings list`,
//! `commands watch|restore|list`, and `policy apply --preview`. Shared here: where the
//! service is (`--continuous-server`, default `--server`: `portcullis up` serves every
//! service on one address), the lower-case names of its enums, and the JSON objects and
//! table rows of findings and commands.

pub mod commands;
pub mod findings;
pub mod inventory;
pub mod preview;

use portcullis_proto::common::v1::{Mitigation, PodKey};
use portcullis_proto::continuous::v1 as pc;
use portcullis_proto::continuous::v1::continuous_service_client::ContinuousServiceClient;
use serde_json::{Map, Value, json};

use super::output::{time_cell, time_json};
use super::{Conn, Ctx, KeyChoice, MAX_MESSAGE, Svc};
use crate::client::error::ClientError;

/// Where the continuous scanning service listens.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ContinuousServerArg {
    /// The continuous scanning service: `http://HOST:PORT`, `https://HOST:PORT` or
    /// `HOST:PORT` (default: --server, where `portcullis up` serves it).
    #[arg(long = "continuous-server", env = "PORTCULLIS_CONTINUOUS_SERVER", value_name = "URL")]
    pub url: Option<String>,
}

impl ContinuousServerArg {
    /// The URL to dial: this flag's, else `--server`'s.
    pub(in crate::client) fn url<'a>(&'a self, ctx: &'a Ctx<'_>) -> &'a str {
        self.url
            .as_deref()
            .filter(|u| !u.trim().is_empty())
            .unwrap_or(&ctx.global.server)
    }
}

/// A connection to the continuous service and its generated client. `deadline` false: calls
/// carry no `grpc-timeout` (a stream that lives as long as the command).
pub async fn connect(
    ctx: &Ctx<'_>,
    server: &ContinuousServerArg,
    deadline: bool,
) -> Result<(Conn, ContinuousServiceClient<Svc>), ClientError> {
    let conn = ctx.connect_to(server.url(ctx), KeyChoice::Tenant, deadline).await?;
    let client = ContinuousServiceClient::with_interceptor(conn.channel.clone(), conn.auth.clone())
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    Ok((conn, client))
}

/// `log`, `isolate`, `terminate`, `none`; empty when unspecified.
pub fn mitigation_name(value: i32) -> String {
    match Mitigation::try_from(value) {
        Ok(Mitigation::None) => "none".into(),
        Ok(Mitigation::Log) => "log".into(),
        Ok(Mitigation::Isolate) => "isolate".into(),
        Ok(Mitigation::Terminate) => "terminate".into(),
        Ok(Mitigation::Unspecified) => String::new(),
        Err(_) => format!("mitigation {value}"),
    }
}

/// `isolate`, `terminate`, `restore-isolation`, `not-isolatable`; empty when unspecified.
pub fn command_type_name(value: i32) -> String {
    match pc::CommandType::try_from(value) {
        Ok(pc::CommandType::Isolate) => "isolate".into(),
        Ok(pc::CommandType::Terminate) => "terminate".into(),
        Ok(pc::CommandType::Restore) => "restore-isolation".into(),
        Ok(pc::CommandType::NotIsolatable) => "not-isolatable".into(),
        Ok(pc::CommandType::Unspecified) => String::new(),
        Err(_) => format!("type {value}"),
    }
}

/// `continuous`, `runtime`, `manual`; empty when unspecified.
pub fn origin_name(value: i32) -> String {
    match pc::CommandOrigin::try_from(value) {
        Ok(pc::CommandOrigin::Continuous) => "continuous".into(),
        Ok(pc::CommandOrigin::Runtime) => "runtime".into(),
        Ok(pc::CommandOrigin::Manual) => "manual".into(),
        Ok(pc::CommandOrigin::Unspecified) => String::new(),
        Err(_) => format!("origin {value}"),
    }
}

/// A command state as `--state` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StateArg {
    /// Made, not yet acked by the connector.
    Pending,
    /// The connector carried it out.
    Done,
    /// The connector tried and failed.
    Failed,
    /// The connector refused it.
    Rejected,
    /// No longer needed before it was acked.
    Cancelled,
    /// A report never sent (not-isolatable).
    Reported,
}

impl StateArg {
    /// The proto's state.
    pub fn proto(self) -> pc::CommandState {
        match self {
            StateArg::Pending => pc::CommandState::Pending,
            StateArg::Done => pc::CommandState::Done,
            StateArg::Failed => pc::CommandState::Failed,
            StateArg::Rejected => pc::CommandState::Rejected,
            StateArg::Cancelled => pc::CommandState::Cancelled,
            StateArg::Reported => pc::CommandState::Reported,
        }
    }
}

/// `pending`, `done`, ...; empty when unspecified.
pub fn state_name(value: i32) -> String {
    match pc::CommandState::try_from(value) {
        Ok(pc::CommandState::Unspecified) => String::new(),
        Ok(s) => s
            .as_str_name()
            .trim_start_matches("COMMAND_STATE_")
            .to_ascii_lowercase(),
        Err(_) => format!("state {value}"),
    }
}

/// `new`, `resolved`, `changed`; empty when unspecified.
pub fn change_name(value: i32) -> String {
    match pc::PreviewChange::try_from(value) {
        Ok(pc::PreviewChange::New) => "new".into(),
        Ok(pc::PreviewChange::Resolved) => "resolved".into(),
        Ok(pc::PreviewChange::Changed) => "changed".into(),
        Ok(pc::PreviewChange::Unspecified) => String::new(),
        Err(_) => format!("change {value}"),
    }
}

/// The pod key's parts, empty when absent.
fn pod_parts(pod: Option<&PodKey>) -> (String, String, String) {
    pod.map(|p| (p.namespace.clone(), p.name.clone(), p.uid.clone()))
        .unwrap_or_default()
}

/// A finding as JSON, with exactly the fields `cluster, namespace, pod, uid, rule,
/// mitigation, firstSeen, lastSeen, resolved` (`resolved` null while open). `cluster` is
/// the cluster's id, as the service names it.
pub fn finding_json(f: &pc::Finding) -> Map<String, Value> {
    let (namespace, pod, uid) = pod_parts(f.pod.as_ref());
    let mitigation = f
        .violation
        .as_ref()
        .map_or(String::new(), |v| mitigation_name(v.mitigation));
    let value = json!({
        "cluster": f.cluster_id,
        "namespace": namespace,
        "pod": pod,
        "uid": uid,
        "rule": f.rule,
        "mitigation": mitigation,
        "firstSeen": time_json(f.first_seen_at.as_ref()),
        "lastSeen": time_json(f.last_seen_at.as_ref()),
        "resolved": time_json(f.resolved_at.as_ref()),
    });
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// A finding as a table row: cluster, namespace, pod, rule, mitigation (as in
/// [`FINDING_HEADERS`] after what a caller puts before).
pub fn finding_cells(f: &pc::Finding) -> Vec<String> {
    let (namespace, pod, _) = pod_parts(f.pod.as_ref());
    let mitigation = f
        .violation
        .as_ref()
        .map_or(String::new(), |v| mitigation_name(v.mitigation));
    vec![f.cluster_id.clone(), namespace, pod, f.rule.clone(), mitigation]
}

/// The headers of [`finding_cells`].
pub const FINDING_HEADERS: [&str; 5] = ["CLUSTER", "NAMESPACE", "POD", "RULE", "MITIGATION"];

/// A command as one JSON object: `id, cluster, namespace, pod, uid, type, origin, reason,
/// rules, networkPolicy, isolationLabel, issuedAt`. `networkPolicy` is the parsed
/// NetworkPolicy of an isolate command (null for other types); a payload that is not JSON
/// is kept as its text and reported in the second value, so it is never dropped unsaid.
pub fn command_json(c: &pc::MitigationCommand) -> (Map<String, Value>, Option<String>) {
    let (namespace, pod, uid) = pod_parts(c.pod.as_ref());
    let mut problem = None;
    let network_policy = if c.network_policy_json.trim().is_empty() {
        Value::Null
    } else {
        match serde_json::from_str::<Value>(&c.network_policy_json) {
            Ok(v) => v,
            Err(e) => {
                problem = Some(format!(
                    "command {}: its network policy is not JSON ({e}); shown as text",
                    c.command_id
                ));
                Value::String(c.network_policy_json.clone())
            }
        }
    };
    let value = json!({
        "id": c.command_id,
        "cluster": c.cluster_id,
        "namespace": namespace,
        "pod": pod,
        "uid": uid,
        "type": command_type_name(c.r#type),
        "origin": origin_name(c.origin),
        "reason": c.reason,
        "rules": c.rules,
        "networkPolicy": network_policy,
        "isolationLabel": c.isolation_label,
        "issuedAt": time_json(c.issued_at.as_ref()),
    });
    let map = match value {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    (map, problem)
}

/// [`command_json`] with the command's state: `state`, `stateChangedAt`, `ackMessage`.
pub fn command_json_with_state(c: &pc::MitigationCommand) -> (Map<String, Value>, Option<String>) {
    let (mut map, problem) = command_json(c);
    map.insert("state".into(), Value::String(state_name(c.state)));
    map.insert("stateChangedAt".into(), time_json(c.state_changed_at.as_ref()));
    map.insert("ackMessage".into(), Value::String(c.ack_message.clone()));
    (map, problem)
}

/// The headers of [`command_cells`].
pub const COMMAND_HEADERS: [&str; 9] = [
    "ID",
    "CLUSTER",
    "NAMESPACE",
    "POD",
    "TYPE",
    "ORIGIN",
    "STATE",
    "ISSUED",
    "REASON",
];

/// A command as a table row under [`COMMAND_HEADERS`].
pub fn command_cells(c: &pc::MitigationCommand) -> Vec<String> {
    let (namespace, pod, _) = pod_parts(c.pod.as_ref());
    vec![
        c.command_id.clone(),
        c.cluster_id.clone(),
        namespace,
        pod,
        command_type_name(c.r#type),
        origin_name(c.origin),
        state_name(c.state),
        time_cell(c.issued_at.as_ref()),
        c.reason.clone(),
    ]
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
pub(crate) mod tests {
    use portcullis_proto::common::v1::Violation;

    use super::*;

    pub fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos: 0 })
    }

    pub fn finding(resolved: Option<i64>) -> pc::Finding {
        pc::Finding {
            id: "f1".into(),
            cluster_id: "c-1".into(),
            pod: Some(PodKey {
                namespace: "shop".into(),
                name: "web-1".into(),
                uid: "u-1".into(),
            }),
            violation: Some(Violation {
                rule_type: "containerSecurityContext".into(),
                mitigation: Mitigation::Isolate as i32,
                ..Violation::default()
            }),
            state: if resolved.is_some() {
                pc::FindingState::Resolved as i32
            } else {
                pc::FindingState::Open as i32
            },
            first_seen_at: ts(1_700_000_000),
            last_seen_at: ts(1_700_000_060),
            resolved_at: resolved.and_then(ts),
            rule: "containerSecurityContext { privileged:true }".into(),
            ..pc::Finding::default()
        }
    }

    pub fn isolate_command() -> pc::MitigationCommand {
        pc::MitigationCommand {
            command_id: "cmd-1".into(),
            cluster_id: "c-1".into(),
            pod: Some(PodKey {
                namespace: "shop".into(),
                name: "web-1".into(),
                uid: "u-1".into(),
            }),
            r#type: pc::CommandType::Isolate as i32,
            origin: pc::CommandOrigin::Continuous as i32,
            reason: "privileged".into(),
            rules: vec!["containerSecurityContext { privileged:true }".into()],
            issued_at: ts(1_700_000_000),
            state: pc::CommandState::Pending as i32,
            network_policy_json: r#"{"kind":"NetworkPolicy","spec":{"podSelector":{}}}"#.into(),
            isolation_label: "portcullis.io/isolated".into(),
            ..pc::MitigationCommand::default()
        }
    }

    #[test]
    fn a_finding_has_exactly_the_documented_json_fields() {
        let open = finding_json(&finding(None));
        let keys: Vec<&str> = open.keys().map(String::as_str).collect();
        let mut expected = vec![
            "cluster",
            "namespace",
            "pod",
            "uid",
            "rule",
            "mitigation",
            "firstSeen",
            "lastSeen",
            "resolved",
        ];
        expected.sort_unstable();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(keys, expected);
        assert_eq!(open["mitigation"], "isolate");
        assert_eq!(open["firstSeen"], "2023-11-14T22:13:20Z");
        assert_eq!(open["lastSeen"], "2023-11-14T22:14:20Z");
        assert_eq!(open["resolved"], Value::Null);
        assert_eq!(open["pod"], "web-1");
        let resolved = finding_json(&finding(Some(1_700_000_120)));
        assert_eq!(resolved["resolved"], "2023-11-14T22:15:20Z");
    }

    #[test]
    fn an_isolate_command_carries_its_network_policy_as_an_object() {
        let (line, problem) = command_json(&isolate_command());
        assert_eq!(problem, None);
        assert_eq!(line["type"], "isolate");
        assert_eq!(line["origin"], "continuous");
        assert_eq!(line["networkPolicy"]["kind"], "NetworkPolicy");
        assert_eq!(line["isolationLabel"], "portcullis.io/isolated");
        assert_eq!(line["issuedAt"], "2023-11-14T22:13:20Z");
        assert_eq!(line["rules"], json!(["containerSecurityContext { privileged:true }"]));
        assert!(!line.contains_key("state"), "a watch line has no state");
        let mut restore = isolate_command();
        restore.r#type = pc::CommandType::Restore as i32;
        restore.network_policy_json.clear();
        let (line, _) = command_json(&restore);
        assert_eq!(line["type"], "restore-isolation");
        assert_eq!(line["networkPolicy"], Value::Null);
    }

    #[test]
    fn a_network_policy_that_is_not_json_is_kept_and_reported() {
        let mut bad = isolate_command();
        bad.network_policy_json = "{not json".into();
        let (line, problem) = command_json(&bad);
        assert_eq!(line["networkPolicy"], "{not json");
        assert!(problem.unwrap().contains("cmd-1"));
    }

    #[test]
    fn enum_names_are_the_documented_words() {
        assert_eq!(mitigation_name(Mitigation::Terminate as i32), "terminate");
        assert_eq!(mitigation_name(Mitigation::Log as i32), "log");
        assert_eq!(
            command_type_name(pc::CommandType::NotIsolatable as i32),
            "not-isolatable"
        );
        assert_eq!(state_name(pc::CommandState::Cancelled as i32), "cancelled");
        assert_eq!(state_name(0), "");
        assert_eq!(change_name(pc::PreviewChange::Changed as i32), "changed");
        assert_eq!(origin_name(pc::CommandOrigin::Manual as i32), "manual");
        assert_eq!(command_type_name(42), "type 42");
    }

    fn parse(args: &[&str]) -> Result<crate::Cli, clap::Error> {
        use clap::Parser as _;
        crate::Cli::try_parse_from(std::iter::once("portcullis").chain(args.iter().copied()))
    }

    fn client_command(args: &[&str]) -> crate::client::ClientCommand {
        match parse(args).unwrap().command {
            crate::Command::Client(c) => c,
            other => panic!("not a client command: {other:?}"),
        }
    }

    #[test]
    fn the_continuous_commands_parse_their_flags() {
        use crate::client::ClientCommand as C;
        let C::Inventory(inventory::InventoryCommand::Sync {
            file, cluster, server, ..
        }) = client_command(&[
            "inventory",
            "sync",
            "-f",
            "pods.yaml",
            "--cluster",
            "prod",
            "--continuous-server",
            "h:1",
        ])
        else {
            panic!("not inventory sync")
        };
        assert_eq!((file.as_str(), cluster.as_deref()), ("pods.yaml", Some("prod")));
        assert_eq!(server.url.as_deref(), Some("h:1"));
        assert!(parse(&["inventory", "sync"]).is_err(), "-f is required");

        let C::Findings(findings::FindingsCommand::List {
            open, namespace, out, ..
        }) = client_command(&["findings", "list", "--open", "-n", "shop", "-o", "json"])
        else {
            panic!("not findings list")
        };
        assert!(open);
        assert_eq!(namespace.as_deref(), Some("shop"));
        assert_eq!(out.output, super::super::output::Format::Json);

        let C::Commands(commands::CommandsCommand::Watch { count, .. }) =
            client_command(&["commands", "watch", "--count", "1"])
        else {
            panic!("not commands watch")
        };
        assert_eq!(count, Some(1));
        assert!(parse(&["commands", "watch", "--count", "x"]).is_err());

        let C::Commands(commands::CommandsCommand::Restore {
            pod,
            namespace,
            cluster,
            ..
        }) = client_command(&["commands", "restore", "web-1", "--cluster", "prod"])
        else {
            panic!("not commands restore")
        };
        assert_eq!(
            (pod.as_str(), namespace.as_str(), cluster.as_str()),
            ("web-1", "default", "prod")
        );
        assert!(
            parse(&["commands", "restore", "web-1"]).is_err(),
            "--cluster is required"
        );

        let C::Commands(commands::CommandsCommand::List { state, .. }) =
            client_command(&["commands", "list", "--state", "pending"])
        else {
            panic!("not commands list")
        };
        assert_eq!(state, Some(StateArg::Pending));
        assert!(parse(&["commands", "list", "--state", "lost"]).is_err());
        assert!(
            parse(&["commands", "list", "--pod", "p"]).is_err(),
            "--pod needs --namespace"
        );

        let C::Policy(crate::client::policy::PolicyCommand::Apply { preview, clusters, .. }) = client_command(&[
            "policy",
            "apply",
            "-f",
            "p.yaml",
            "--preview",
            "--cluster",
            "a",
            "--cluster",
            "b",
        ]) else {
            panic!("not policy apply")
        };
        assert!(preview);
        assert_eq!(clusters, ["a", "b"]);
        assert!(
            parse(&["policy", "apply", "-f", "p.yaml", "--cluster", "a"]).is_err(),
            "--cluster needs --preview"
        );
        assert!(
            parse(&[
                "policy",
                "apply",
                "-f",
                "p.yaml",
                "--preview",
                "--expected-revision",
                "3"
            ])
            .is_err()
        );
    }

    #[test]
    fn the_continuous_server_defaults_to_the_server() {
        let global = crate::client::GlobalArgs {
            server: "http://127.0.0.1:9".into(),
            api_key: None,
            operator_key: None,
            ca_cert: None,
            insecure: false,
            timeout: std::time::Duration::from_secs(1),
        };
        let ctx = Ctx { global: &global };
        assert_eq!(ContinuousServerArg::default().url(&ctx), "http://127.0.0.1:9");
        let own = ContinuousServerArg {
            url: Some("127.0.0.1:7".into()),
        };
        assert_eq!(own.url(&ctx), "127.0.0.1:7");
    }
}
