//! The telemetry service's client commands: `runtime ingest` (connector key), `events
//! search`, `alerts list|show|ack|close`, `risk` and `policy replay`. Where the service is:
//! `--telemetry-server`, default `--server` (`portcullis up` serves every service on one
//! address).

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use portcullis_proto::common::v1 as pcm;
use portcullis_proto::telemetry::v1 as pt;
use portcullis_proto::telemetry::v1::telemetry_service_client::TelemetryServiceClient;
use serde_json::{Value, json};

use super::duration::parse_duration;
use super::output::{Format, OutputArg, Table, print, print_json, print_table, render_fields, time_cell, time_json};
use super::{Conn, Ctx, KeyChoice, MAX_MESSAGE, Svc, all_pages, by_name, next_token};
use crate::client::error::ClientError;

/// Most events in one ingest message.
pub const MESSAGE_EVENTS: usize = 500;

/// Where the telemetry service listens.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TelemetryServerArg {
    /// The telemetry service: `http://HOST:PORT`, `https://HOST:PORT` or `HOST:PORT`
    /// (default: --server, where `portcullis up` serves it).
    #[arg(long = "telemetry-server", env = "PORTCULLIS_TELEMETRY_SERVER", value_name = "URL")]
    pub url: Option<String>,
}

async fn connect(
    ctx: &Ctx<'_>,
    server: &TelemetryServerArg,
) -> Result<(Conn, TelemetryServiceClient<Svc>), ClientError> {
    let url = server
        .url
        .as_deref()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or(&ctx.global.server);
    let conn = ctx.connect_to(url, KeyChoice::Tenant, true).await?;
    let client = TelemetryServiceClient::with_interceptor(conn.channel.clone(), conn.auth.clone())
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    Ok((conn, client))
}

/// `runtime` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum RuntimeCommand {
    /// Sends runtime detections (Falco JSON output, one event per line) as a cluster's
    /// sensor would (connector key).
    Ingest {
        /// Falco JSON events, one per line; `-` for standard input.
        #[arg(short = 'f', long = "file", value_name = "EVENTS.jsonl")]
        file: String,
        /// The cluster by name (default: the connector key's own cluster).
        #[arg(long, value_name = "NAME")]
        cluster: Option<String>,
        #[command(flatten)]
        server: TelemetryServerArg,
        #[command(flatten)]
        out: OutputArg,
    },
}

impl RuntimeCommand {
    /// The subcommand's name.
    pub fn verb(&self) -> &'static str {
        match self {
            RuntimeCommand::Ingest { .. } => "ingest",
        }
    }
}

/// The non-empty lines of a JSON Lines file, each as one event.
pub fn event_lines(text: &[u8]) -> Vec<Bytes> {
    text.split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| l.iter().any(|b| !b.is_ascii_whitespace()))
        .map(Bytes::copy_from_slice)
        .collect()
}

/// Runs a `runtime` subcommand.
pub async fn run_runtime(ctx: &Ctx<'_>, command: &RuntimeCommand) -> Result<(), ClientError> {
    let RuntimeCommand::Ingest {
        file,
        cluster,
        server,
        out,
    } = command;
    let text = super::document::read_source(file)?;
    let events = event_lines(&text);
    if events.is_empty() {
        return Err(ClientError::input(format!("{file}: no events")));
    }
    let messages: Vec<pt::IngestEventsRequest> = events
        .chunks(MESSAGE_EVENTS)
        .enumerate()
        .map(|(i, chunk)| pt::IngestEventsRequest {
            cluster: if i == 0 {
                cluster.as_deref().and_then(by_name)
            } else {
                None
            },
            events_json: chunk.to_vec(),
        })
        .collect();
    let (conn, mut client) = connect(ctx, server).await?;
    let answer = client
        .ingest_events(tokio_stream::iter(messages))
        .await
        .map_err(|s| conn.error(s))?
        .into_inner();
    let errors: Vec<Value> = answer
        .errors
        .iter()
        .map(|e| json!({"field": e.field, "message": e.message}))
        .collect();
    match out.output {
        Format::Json => print_json(&json!({
            "sent": events.len(),
            "accepted": answer.accepted,
            "rejected": answer.rejected,
            "refused": answer.refused,
            "notStored": answer.not_stored,
            "mitigations": answer.mitigations,
            "errors": errors,
        })),
        Format::Table => {
            let mut text = render_fields(&[
                ("Sent", events.len().to_string()),
                ("Accepted", answer.accepted.to_string()),
                ("Rejected", answer.rejected.to_string()),
                ("Refused (time)", answer.refused.to_string()),
                ("Not stored (xdrEnabled: false)", answer.not_stored.to_string()),
                ("Mitigations", answer.mitigations.to_string()),
            ]);
            for e in &answer.errors {
                text.push_str(&format!("{}: {}\n", e.field, e.message));
            }
            print(&text)
        }
    }
}

/// `events` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum EventsCommand {
    /// Searches the tenant's security events, newest first (e.g. `pod:web-1 type:runtime`).
    Search {
        /// The filter: `field:value` terms (type, cluster, namespace, workload, pod, image,
        /// rule, action) and free text, all AND-ed; empty for every event. Free text matches
        /// whole words of the summary (runs of letters and digits, case ignored): `shell`,
        /// not "shellcode"; `web-42` and `"cat /etc/shadow"` as consecutive words; a
        /// trailing `*` makes the last word a prefix (`shell*`).
        #[arg(default_value = "")]
        query: String,
        /// How far back, e.g. `15m`, `1h`, `7d`.
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        since: Duration,
        /// Most events shown.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        server: TelemetryServerArg,
        #[command(flatten)]
        out: OutputArg,
    },
}

impl EventsCommand {
    /// The subcommand's name.
    pub fn verb(&self) -> &'static str {
        match self {
            EventsCommand::Search { .. } => "search",
        }
    }
}

fn source_name(v: i32) -> String {
    match pt::EventSource::try_from(v) {
        Ok(pt::EventSource::Unspecified) | Err(_) => String::new(),
        Ok(s) => s.as_str_name().trim_start_matches("EVENT_SOURCE_").to_ascii_lowercase(),
    }
}

fn severity_name(v: i32) -> String {
    match pt::EventSeverity::try_from(v) {
        Ok(pt::EventSeverity::Unspecified) | Err(_) => String::new(),
        Ok(s) => s
            .as_str_name()
            .trim_start_matches("EVENT_SEVERITY_")
            .to_ascii_lowercase(),
    }
}

fn status_name(v: i32) -> String {
    match pt::AlertStatus::try_from(v) {
        Ok(pt::AlertStatus::Unspecified) | Err(_) => String::new(),
        Ok(s) => s.as_str_name().trim_start_matches("ALERT_STATUS_").to_ascii_lowercase(),
    }
}

/// An event as JSON.
pub fn event_json(e: &pt::SecurityEvent) -> Value {
    let pod = e.pod.as_ref().map(|p| p.name.clone()).unwrap_or_default();
    json!({
        "id": e.id,
        "time": time_json(e.occurred_at.as_ref()),
        "type": source_name(e.source),
        "severity": severity_name(e.severity),
        "cluster": e.cluster_id,
        "namespace": e.namespace,
        "workload": e.workload.as_ref().map(|w| format!("{}/{}", w.kind, w.name)),
        "pod": pod,
        "image": e.image,
        "rule": e.rule,
        "action": e.action,
        "summary": e.summary,
    })
}

fn events_table(events: &[pt::SecurityEvent]) -> Table {
    let mut table = Table::new(&[
        "TIME",
        "TYPE",
        "SEVERITY",
        "CLUSTER",
        "NAMESPACE",
        "POD",
        "RULE",
        "ACTION",
    ])
    .cut("RULE");
    for e in events {
        table.row(vec![
            time_cell(e.occurred_at.as_ref()),
            source_name(e.source),
            severity_name(e.severity),
            e.cluster_id.clone(),
            e.namespace.clone(),
            e.pod.as_ref().map(|p| p.name.clone()).unwrap_or_default(),
            e.rule.clone(),
            e.action.clone(),
        ]);
    }
    table
}

/// Runs an `events` subcommand.
pub async fn run_events(ctx: &Ctx<'_>, command: &EventsCommand) -> Result<(), ClientError> {
    let EventsCommand::Search {
        query,
        since,
        limit,
        server,
        out,
    } = command;
    let now = SystemTime::now();
    let start = now
        .checked_sub(*since)
        .ok_or_else(|| ClientError::input("--since: too far back"))?;
    let (conn, mut client) = connect(ctx, server).await?;
    let answer = client
        .search_events(pt::SearchEventsRequest {
            query: query.clone(),
            time_range: Some(pcm::TimeRange {
                start: Some(prost_types::Timestamp::from(start)),
                end: None,
            }),
            page: Some(pcm::PageRequest {
                page_size: (*limit).max(1),
                page_token: String::new(),
            }),
        })
        .await
        .map_err(|s| conn.error(s))?
        .into_inner();
    let total = if answer.total_is_lower_bound {
        format!("{}+", answer.total)
    } else {
        answer.total.to_string()
    };
    match out.output {
        Format::Json => print_json(&json!({
            "total": answer.total,
            "totalIsLowerBound": answer.total_is_lower_bound,
            "events": answer.events.iter().map(event_json).collect::<Vec<_>>(),
        })),
        Format::Table => {
            print_table(&events_table(&answer.events), "No events.")?;
            print(&format!("{} shown of {total} matching.\n", answer.events.len()))
        }
    }
}

/// `alerts` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum AlertsCommand {
    /// Lists alerts, latest first.
    List {
        /// Only alerts with this status: open, acknowledged, closed.
        #[arg(long, value_name = "STATUS")]
        status: Option<String>,
        /// Only alerts counting in this cluster, by name.
        #[arg(long, value_name = "NAME")]
        cluster: Option<String>,
        #[command(flatten)]
        server: TelemetryServerArg,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Shows an alert with its events.
    Show {
        /// The alert's id.
        id: String,
        #[command(flatten)]
        server: TelemetryServerArg,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Acknowledges an alert (it still counts in the risk score).
    Ack {
        /// The alert's id.
        id: String,
        #[command(flatten)]
        server: TelemetryServerArg,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Closes an alert (its story may open a new one).
    Close {
        /// The alert's id.
        id: String,
        #[command(flatten)]
        server: TelemetryServerArg,
        #[command(flatten)]
        out: OutputArg,
    },
}

impl AlertsCommand {
    /// The subcommand's name.
    pub fn verb(&self) -> &'static str {
        match self {
            AlertsCommand::List { .. } => "list",
            AlertsCommand::Show { .. } => "show",
            AlertsCommand::Ack { .. } => "ack",
            AlertsCommand::Close { .. } => "close",
        }
    }
}

/// An alert as JSON.
pub fn alert_json(a: &pt::Alert) -> Value {
    json!({
        "id": a.id,
        "rule": a.rule,
        "title": a.title,
        "severity": severity_name(a.severity),
        "status": status_name(a.status),
        "clusters": a.cluster_ids,
        "namespace": a.namespace,
        "workload": a.workload.as_ref().map(|w| format!("{}/{}", w.kind, w.name)),
        "digest": a.digest,
        "events": a.event_count,
        "firstSeen": time_json(a.first_seen_at.as_ref()),
        "lastSeen": time_json(a.last_seen_at.as_ref()),
    })
}

fn alerts_table(alerts: &[pt::Alert]) -> Table {
    let mut table = Table::new(&["ID", "SEVERITY", "STATUS", "RULE", "CLUSTERS", "EVENTS", "LAST SEEN"]).cut("RULE");
    for a in alerts {
        table.row(vec![
            a.id.clone(),
            severity_name(a.severity),
            status_name(a.status),
            a.rule.clone(),
            a.cluster_ids.join(","),
            a.event_count.to_string(),
            time_cell(a.last_seen_at.as_ref()),
        ]);
    }
    table
}

fn status_arg(text: &str) -> Result<pt::AlertStatus, ClientError> {
    match text {
        "open" => Ok(pt::AlertStatus::Open),
        "acknowledged" | "ack" => Ok(pt::AlertStatus::Acknowledged),
        "closed" => Ok(pt::AlertStatus::Closed),
        other => Err(ClientError::input(format!(
            "--status: {other:?} is not open, acknowledged or closed"
        ))),
    }
}

/// Runs an `alerts` subcommand.
pub async fn run_alerts(ctx: &Ctx<'_>, command: &AlertsCommand) -> Result<(), ClientError> {
    match command {
        AlertsCommand::List {
            status,
            cluster,
            server,
            out,
        } => {
            let status = status.as_deref().map(status_arg).transpose()?;
            let (conn, client) = connect(ctx, server).await?;
            let template = pt::ListAlertsRequest {
                status: status.map_or(0, |s| s as i32),
                cluster: cluster.as_deref().and_then(by_name),
                ..pt::ListAlertsRequest::default()
            };
            let alerts = all_pages(None, |page| {
                let mut client = client.clone();
                let mut request = template.clone();
                request.page = Some(page);
                async move {
                    let response = client.list_alerts(request).await?.into_inner();
                    Ok((response.alerts, next_token(response.page)))
                }
            })
            .await
            .map_err(|s| conn.error(s))?;
            match out.output {
                Format::Json => print_json(&Value::Array(alerts.iter().map(alert_json).collect())),
                Format::Table => print_table(&alerts_table(&alerts), "No alerts."),
            }
        }
        AlertsCommand::Show { id, server, out } => {
            let (conn, mut client) = connect(ctx, server).await?;
            let answer = client
                .get_alert(pt::GetAlertRequest {
                    id: id.clone(),
                    events_page: None,
                })
                .await
                .map_err(|s| conn.error(s))?
                .into_inner();
            let alert = answer.alert.ok_or_else(super::missing("alert"))?;
            match out.output {
                Format::Json => {
                    let mut value = alert_json(&alert);
                    if let Value::Object(map) = &mut value {
                        map.insert(
                            "eventList".into(),
                            Value::Array(answer.events.iter().map(event_json).collect()),
                        );
                    }
                    print_json(&value)
                }
                Format::Table => {
                    print(&render_fields(&[
                        ("Id", alert.id.clone()),
                        ("Title", alert.title.clone()),
                        ("Rule", alert.rule.clone()),
                        ("Severity", severity_name(alert.severity)),
                        ("Status", status_name(alert.status)),
                        ("Clusters", alert.cluster_ids.join(", ")),
                        ("Events", alert.event_count.to_string()),
                        ("First seen", time_cell(alert.first_seen_at.as_ref())),
                        ("Last seen", time_cell(alert.last_seen_at.as_ref())),
                    ]))?;
                    print_table(&events_table(&answer.events), "No events stored.")
                }
            }
        }
        AlertsCommand::Ack { id, server, out } | AlertsCommand::Close { id, server, out } => {
            let status = if matches!(command, AlertsCommand::Ack { .. }) {
                pt::AlertStatus::Acknowledged
            } else {
                pt::AlertStatus::Closed
            };
            let (conn, mut client) = connect(ctx, server).await?;
            let answer = client
                .update_alert_status(pt::UpdateAlertStatusRequest {
                    id: id.clone(),
                    status: status as i32,
                    note: String::new(),
                })
                .await
                .map_err(|s| conn.error(s))?
                .into_inner();
            let alert = answer.alert.ok_or_else(super::missing("alert"))?;
            match out.output {
                Format::Json => print_json(&json!({"changed": answer.changed, "alert": alert_json(&alert)})),
                Format::Table => print(&format!(
                    "Alert {} is {}{}.\n",
                    alert.id,
                    status_name(alert.status),
                    if answer.changed { "" } else { " (unchanged)" }
                )),
            }
        }
    }
}

/// `risk`: the clusters' risk scores.
#[derive(Debug, clap::Args)]
pub struct RiskArgs {
    /// Only this cluster, by name.
    #[arg(long, value_name = "NAME")]
    cluster: Option<String>,
    #[command(flatten)]
    server: TelemetryServerArg,
    #[command(flatten)]
    out: OutputArg,
}

/// Runs `risk`.
pub async fn run_risk(ctx: &Ctx<'_>, args: &RiskArgs) -> Result<(), ClientError> {
    let (conn, mut client) = connect(ctx, &args.server).await?;
    let answer = client
        .list_risk_scores(pt::ListRiskScoresRequest {
            page: None,
            cluster: args.cluster.as_deref().and_then(by_name),
            min_score: 0,
        })
        .await
        .map_err(|s| conn.error(s))?
        .into_inner();
    match args.out.output {
        Format::Json => print_json(&Value::Array(
            answer
                .scores
                .iter()
                .map(|s| {
                    json!({
                        "cluster": s.cluster_id,
                        "name": s.cluster_name,
                        "score": s.score,
                        "critical": s.critical_alerts,
                        "high": s.high_alerts,
                        "medium": s.medium_alerts,
                        "low": s.low_alerts,
                    })
                })
                .collect(),
        )),
        Format::Table => {
            let mut table = Table::new(&["CLUSTER", "NAME", "SCORE", "CRITICAL", "HIGH", "MEDIUM", "LOW"]);
            for s in &answer.scores {
                table.row(vec![
                    s.cluster_id.clone(),
                    s.cluster_name.clone(),
                    s.score.to_string(),
                    s.critical_alerts.to_string(),
                    s.high_alerts.to_string(),
                    s.medium_alerts.to_string(),
                    s.low_alerts.to_string(),
                ]);
            }
            print_table(&table, "No cluster has open alerts.")
        }
    }
}

fn outcome_name(v: i32) -> String {
    match pt::ReplayOutcome::try_from(v) {
        Ok(pt::ReplayOutcome::Unspecified) | Err(_) => String::new(),
        Ok(o) => o
            .as_str_name()
            .trim_start_matches("REPLAY_OUTCOME_")
            .to_ascii_lowercase(),
    }
}

fn changes_text(c: &pt::ReplayCounts) -> String {
    c.changes
        .iter()
        .map(|x| format!("{} {}→{}", x.count, outcome_name(x.decided), outcome_name(x.would_be)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn counts_json(c: &pt::ReplayCounts) -> Value {
    json!({
        "admissions": c.admissions,
        "newlyBlocked": c.newly_blocked,
        "newlyLogged": c.newly_logged,
        "noLongerBlocked": c.no_longer_blocked,
        "noLongerLogged": c.no_longer_logged,
        "notJudged": c.not_judged,
        "changes": c.changes.iter().map(|x| json!({
            "decided": outcome_name(x.decided),
            "wouldBe": outcome_name(x.would_be),
            "count": x.count,
        })).collect::<Vec<_>>(),
    })
}

/// The replay answer as JSON.
pub fn replay_json(r: &pt::ReplayPolicyResponse) -> Value {
    let empty = pt::ReplayCounts::default();
    json!({
        "replayed": r.replayed,
        "unreadable": r.unreadable,
        "unchangedWorkloads": r.unchanged_workloads,
        "totals": counts_json(r.totals.as_ref().unwrap_or(&empty)),
        "workloads": r.workloads.iter().map(|w| json!({
            "cluster": w.cluster_id,
            "namespace": w.namespace,
            "workload": w.workload.as_ref().map(|x| format!("{}/{}", x.kind, x.name)),
            "counts": counts_json(w.counts.as_ref().unwrap_or(&empty)),
        })).collect::<Vec<_>>(),
    })
}

/// The replay answer for people: one row per workload with a change, then the totals.
pub fn replay_table(r: &pt::ReplayPolicyResponse) -> Table {
    let mut table = Table::new(&[
        "CLUSTER",
        "NAMESPACE",
        "WORKLOAD",
        "ADMISSIONS",
        "NEWLY BLOCKED",
        "NEWLY LOGGED",
        "NO LONGER BLOCKED",
        "NO LONGER LOGGED",
        "NOT JUDGED",
        "DECIDED→DRAFT",
    ])
    .cut("DECIDED→DRAFT");
    let empty = pt::ReplayCounts::default();
    for w in &r.workloads {
        let c = w.counts.as_ref().unwrap_or(&empty);
        table.row(vec![
            w.cluster_id.clone(),
            w.namespace.clone(),
            w.workload
                .as_ref()
                .map(|x| format!("{}/{}", x.kind, x.name))
                .unwrap_or_default(),
            c.admissions.to_string(),
            c.newly_blocked.to_string(),
            c.newly_logged.to_string(),
            c.no_longer_blocked.to_string(),
            c.no_longer_logged.to_string(),
            c.not_judged.to_string(),
            changes_text(c),
        ]);
    }
    table
}

/// `policy replay`: the draft `document_json` judged again over the recorded admissions (of
/// `cluster`, by name, when given; decided within `since`, when given).
pub async fn run_replay(
    ctx: &Ctx<'_>,
    document_json: &str,
    cluster: Option<&str>,
    since: Option<Duration>,
    server: &TelemetryServerArg,
    output: Format,
) -> Result<(), ClientError> {
    let since = match since {
        None => None,
        Some(d) => Some(prost_types::Timestamp::from(
            SystemTime::now()
                .checked_sub(d)
                .ok_or_else(|| ClientError::input("--since: too far back"))?,
        )),
    };
    let (conn, mut client) = connect(ctx, server).await?;
    let answer = client
        .replay_policy(pt::ReplayPolicyRequest {
            document: document_json.to_owned(),
            cluster: cluster.and_then(by_name),
            since,
        })
        .await
        .map_err(|s| conn.error(s))?
        .into_inner();
    match output {
        Format::Json => print_json(&replay_json(&answer)),
        Format::Table => {
            print_table(
                &replay_table(&answer),
                "No recorded admission would be decided differently.",
            )?;
            let t = answer.totals.clone().unwrap_or_default();
            let mut text = format!(
                "{} admissions replayed: {} newly blocked, {} newly logged, {} no longer blocked, {} no longer logged; {} workloads unchanged.\n",
                answer.replayed,
                t.newly_blocked,
                t.newly_logged,
                t.no_longer_blocked,
                t.no_longer_logged,
                answer.unchanged_workloads
            );
            if t.not_judged > 0 {
                text.push_str(&format!(
                    "warning: {} admissions had a draft rule that could not be judged from what was recorded\n",
                    t.not_judged
                ));
            }
            if answer.unreadable > 0 {
                text.push_str(&format!(
                    "warning: {} recorded admissions could not be read back or judged again\n",
                    answer.unreadable
                ));
            }
            print(&text)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

    use super::*;

    fn parse(args: &[&str]) -> Result<crate::Cli, clap::Error> {
        use clap::Parser as _;
        crate::Cli::try_parse_from(std::iter::once("portcullis").chain(args.iter().copied()))
    }

    #[test]
    fn policy_replay_parses_its_flags() {
        use crate::client::ClientCommand as C;
        use crate::client::policy::PolicyCommand as P;
        let cli = parse(&[
            "policy",
            "replay",
            "-f",
            "d.yaml",
            "--cluster",
            "prod",
            "--since",
            "7d",
            "-o",
            "json",
        ])
        .unwrap();
        let crate::Command::Client(C::Policy(P::Replay {
            file,
            cluster,
            since,
            out,
            ..
        })) = cli.command
        else {
            panic!("not policy replay")
        };
        assert_eq!(file, "d.yaml");
        assert_eq!(cluster.as_deref(), Some("prod"));
        assert_eq!(since, Some(Duration::from_secs(7 * 24 * 3600)));
        assert_eq!(out.output, Format::Json);
        assert!(parse(&["policy", "replay"]).is_err(), "-f is required");
        assert!(parse(&["policy", "replay", "-f", "d.yaml", "--since", "soon"]).is_err());
    }

    #[test]
    fn a_replay_shows_each_changed_workload_with_decided_and_draft_outcomes() {
        let counts = pt::ReplayCounts {
            admissions: 2,
            newly_blocked: 2,
            no_longer_logged: 2,
            changes: vec![pt::OutcomeChange {
                decided: pt::ReplayOutcome::Log as i32,
                would_be: pt::ReplayOutcome::Block as i32,
                count: 2,
            }],
            ..Default::default()
        };
        let answer = pt::ReplayPolicyResponse {
            workloads: vec![pt::WorkloadReplay {
                cluster_id: "c1".into(),
                namespace: "prod".into(),
                workload: Some(pt::Workload {
                    kind: "Deployment".into(),
                    name: "web".into(),
                }),
                counts: Some(counts.clone()),
            }],
            totals: Some(pt::ReplayCounts {
                admissions: 3,
                ..counts
            }),
            replayed: 3,
            unreadable: 0,
            unchanged_workloads: 1,
        };
        assert_eq!(
            changes_text(answer.workloads[0].counts.as_ref().unwrap()),
            "2 log→block"
        );
        let j = replay_json(&answer);
        assert_eq!(j["workloads"][0]["workload"], "Deployment/web");
        assert_eq!(j["workloads"][0]["counts"]["newlyBlocked"], 2);
        assert_eq!(j["workloads"][0]["counts"]["changes"][0]["decided"], "log");
        assert_eq!(j["workloads"][0]["counts"]["changes"][0]["wouldBe"], "block");
        assert_eq!(j["totals"]["admissions"], 3);
        assert_eq!(j["unchangedWorkloads"], 1);
    }
}
