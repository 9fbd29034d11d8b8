//! `portcullis findings list [--cluster C] [--open] [--namespace N] [-o json]`: the findings
//! of the continuous scanning service, every page, most recently seen first.

use clap::Subcommand;
use portcullis_proto::continuous::v1 as pc;
use serde_json::Value;

use super::super::output::{Format, OutputArg, Table, print_json, print_table, time_cell};
use super::super::{Ctx, all_pages, by_name, next_token};
use super::{ContinuousServerArg, FINDING_HEADERS, connect, finding_cells, finding_json};
use crate::client::error::ClientError;

/// `findings` subcommands.
#[derive(Debug, Subcommand)]
pub enum FindingsCommand {
    /// Lists findings, open and resolved (`--open`: open ones only).
    List {
        /// Only this cluster's findings, by name.
        #[arg(long, value_name = "NAME")]
        cluster: Option<String>,
        /// Only open findings.
        #[arg(long)]
        open: bool,
        /// Only findings in this namespace.
        #[arg(short = 'n', long, value_name = "NAMESPACE")]
        namespace: Option<String>,
        #[command(flatten)]
        server: ContinuousServerArg,
        #[command(flatten)]
        out: OutputArg,
    },
}

impl FindingsCommand {
    /// The subcommand's name.
    pub fn verb(&self) -> &'static str {
        match self {
            FindingsCommand::List { .. } => "list",
        }
    }
}

/// The request of `findings list` (paging filled in per page).
pub fn list_request(cluster: Option<&str>, open: bool, namespace: Option<&str>) -> pc::ListFindingsRequest {
    let states = if open {
        vec![pc::FindingState::Open as i32]
    } else {
        vec![pc::FindingState::Open as i32, pc::FindingState::Resolved as i32]
    };
    pc::ListFindingsRequest {
        page: None,
        cluster: cluster.and_then(by_name),
        namespace: namespace.unwrap_or_default().to_owned(),
        states,
        ..pc::ListFindingsRequest::default()
    }
}

/// The findings as a table: cluster, namespace, pod, rule, mitigation, first and last seen,
/// when resolved (`-` while open).
pub fn findings_table(findings: &[pc::Finding]) -> Table {
    let mut headers = FINDING_HEADERS.to_vec();
    headers.extend(["FIRST SEEN", "LAST SEEN", "RESOLVED"]);
    let mut table = Table::new(&headers).cut("RULE");
    for f in findings {
        let mut row = finding_cells(f);
        row.push(time_cell(f.first_seen_at.as_ref()));
        row.push(time_cell(f.last_seen_at.as_ref()));
        row.push(time_cell(f.resolved_at.as_ref()));
        table.row(row);
    }
    table
}

/// Runs a `findings` subcommand.
pub async fn run(ctx: &Ctx<'_>, command: &FindingsCommand) -> Result<(), ClientError> {
    let FindingsCommand::List {
        cluster,
        open,
        namespace,
        server,
        out,
    } = command;
    let (conn, client) = connect(ctx, server, true).await?;
    let template = list_request(cluster.as_deref(), *open, namespace.as_deref());
    let findings = all_pages(None, |page| {
        let mut client = client.clone();
        let mut request = template.clone();
        request.page = Some(page);
        async move {
            let response = client.list_findings(request).await?.into_inner();
            Ok((response.findings, next_token(response.page)))
        }
    })
    .await
    .map_err(|s| conn.error(s))?;
    match out.output {
        Format::Json => print_json(&Value::Array(
            findings.iter().map(|f| Value::Object(finding_json(f))).collect(),
        )),
        Format::Table => print_table(&findings_table(&findings), "No findings."),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
mod tests {
    use super::super::tests::finding;
    use super::*;

    #[test]
    fn without_open_both_states_are_asked_for() {
        let all = list_request(Some("prod"), false, None);
        assert_eq!(
            all.states,
            [pc::FindingState::Open as i32, pc::FindingState::Resolved as i32]
        );
        assert!(all.cluster.is_some());
        let open = list_request(None, true, Some("shop"));
        assert_eq!(open.states, [pc::FindingState::Open as i32]);
        assert_eq!(open.namespace, "shop");
        assert!(open.cluster.is_none());
    }

    #[test]
    fn the_table_shows_one_row_per_finding_with_a_dash_while_open() {
        let text = findings_table(&[finding(None), finding(Some(1_700_000_120))]).render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("CLUSTER  NAMESPACE  POD    RULE"), "{text}");
        assert!(lines[1].contains("isolate"), "{text}");
        assert!(lines[1].ends_with("2023-11-14T22:14:20Z  -"), "{text}");
        assert!(lines[2].ends_with("2023-11-14T22:15:20Z"), "{text}");
    }
}
