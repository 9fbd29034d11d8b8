//! `portcullis policy apply -f F --preview [--cluster C ...] [-o json]`: the impact of a
//! draft policy on the live inventory, from the continuous service's PreviewPolicy. Nothing
//! is applied, stored or ordered.
//!
//! Table: one row per finding that would open, change or resolve (change, cluster,
//! namespace, pod, rule, mitigation), then the mitigations it would order. `-o json`: an
//! array of objects with the findings' field names and a `change` (`new`, `resolved`,
//! `changed`). Clusters the service could not preview are warned about on stderr, one line
//! each, whatever the format: a preview never leaves a cluster out unsaid.

use std::io::Write as _;

use portcullis_proto::continuous::v1 as pc;
use serde_json::Value;

use super::super::output::{Format, Table, print, print_json, render_fields};
use super::super::{Ctx, by_name};
use super::{
    COMMAND_HEADERS, ContinuousServerArg, FINDING_HEADERS, change_name, command_cells, connect, finding_cells,
};
use crate::client::document::LoadedDocument;
use crate::client::error::ClientError;

/// Asks for the preview of `doc` on `clusters` (none: the clusters of the policy of the
/// draft's name) and prints it.
pub async fn run(
    ctx: &Ctx<'_>,
    doc: &LoadedDocument,
    clusters: &[String],
    server: &ContinuousServerArg,
    output: Format,
) -> Result<(), ClientError> {
    let (conn, mut client) = connect(ctx, server, true).await?;
    let response = client
        .preview_policy(pc::PreviewPolicyRequest {
            document: doc.json(),
            clusters: clusters.iter().filter_map(|c| by_name(c)).collect(),
        })
        .await
        .map_err(|s| conn.error(s))?
        .into_inner();
    let mut stderr = std::io::stderr().lock();
    for skipped in &response.skipped {
        let _ = writeln!(
            stderr,
            "portcullis: policy apply: warning: cluster {} not previewed: {}",
            skipped.cluster_id, skipped.reason
        );
    }
    if response.cluster_ids.is_empty() && response.skipped.is_empty() {
        let _ = writeln!(
            stderr,
            "portcullis: policy apply: warning: no cluster to preview on (no cluster is assigned to a policy of this name; name some with --cluster)"
        );
    }
    drop(stderr);
    match output {
        Format::Json => print_json(&preview_json(&response)),
        Format::Table => print(&preview_text(&response)),
    }
}

/// The preview as JSON: an array of findings, each with its `change`.
pub fn preview_json(response: &pc::PreviewPolicyResponse) -> Value {
    Value::Array(
        response
            .findings
            .iter()
            .map(|p| {
                let mut object = p.finding.as_ref().map(super::finding_json).unwrap_or_default();
                object.insert("change".into(), Value::String(change_name(p.change)));
                Value::Object(object)
            })
            .collect(),
    )
}

/// The preview for people: a summary, the findings table, the commands table.
pub fn preview_text(response: &pc::PreviewPolicyResponse) -> String {
    let count = |change: pc::PreviewChange| {
        response
            .findings
            .iter()
            .filter(|p| p.change == change as i32)
            .count()
            .to_string()
    };
    let mut text = render_fields(&[
        ("Clusters", response.cluster_ids.join(", ")),
        ("Pods evaluated", response.pods_evaluated.to_string()),
        ("New findings", count(pc::PreviewChange::New)),
        ("Changed", count(pc::PreviewChange::Changed)),
        ("Resolved", count(pc::PreviewChange::Resolved)),
        ("Mitigations", response.commands.len().to_string()),
    ]);
    if !response.findings.is_empty() {
        let mut headers = vec!["CHANGE"];
        headers.extend(FINDING_HEADERS);
        let mut table = Table::new(&headers).cut("RULE");
        for p in &response.findings {
            let mut row = vec![change_name(p.change)];
            row.extend(p.finding.as_ref().map(finding_cells).unwrap_or_default());
            table.row(row);
        }
        text.push('\n');
        text.push_str(&table.render());
    }
    if !response.commands.is_empty() {
        // No id and no state: these are never made. The columns that say so are dropped.
        let headers: Vec<&str> = COMMAND_HEADERS
            .iter()
            .copied()
            .filter(|h| !matches!(*h, "ID" | "STATE" | "ISSUED" | "ORIGIN"))
            .collect();
        let mut table = Table::new(&headers).cut("REASON");
        for c in &response.commands {
            let cells: Vec<String> = COMMAND_HEADERS
                .iter()
                .zip(command_cells(c))
                .filter(|(h, _)| !matches!(**h, "ID" | "STATE" | "ISSUED" | "ORIGIN"))
                .map(|(_, cell)| cell)
                .collect();
            table.row(cells);
        }
        text.push_str("\nMitigations it would order:\n");
        text.push_str(&table.render());
    }
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
mod tests {
    use super::super::tests::{finding, isolate_command};
    use super::*;

    fn response() -> pc::PreviewPolicyResponse {
        let mut command = isolate_command();
        command.command_id.clear();
        pc::PreviewPolicyResponse {
            findings: vec![
                pc::PreviewFinding {
                    change: pc::PreviewChange::New as i32,
                    finding: Some(finding(None)),
                },
                pc::PreviewFinding {
                    change: pc::PreviewChange::Resolved as i32,
                    finding: Some(finding(Some(1_700_000_120))),
                },
            ],
            commands: vec![command],
            cluster_ids: vec!["c-1".into()],
            pods_evaluated: 7,
            skipped: Vec::new(),
        }
    }

    #[test]
    fn json_objects_are_findings_with_a_change() {
        let value = preview_json(&response());
        let items = value.as_array().unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0]["change"], "new");
        assert_eq!(items[0]["pod"], "web-1");
        assert_eq!(items[0]["resolved"], Value::Null);
        assert_eq!(items[1]["change"], "resolved");
        assert_eq!(items[0].as_object().unwrap().len(), 10);
    }

    #[test]
    fn the_table_lists_changes_then_the_mitigations() {
        let text = preview_text(&response());
        assert!(text.contains("Pods evaluated:  7\n"), "{text}");
        assert!(text.contains("New findings:    1\n"), "{text}");
        assert!(text.contains("Resolved:        1\n"), "{text}");
        let rows: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("new ") || l.starts_with("resolved "))
            .collect();
        assert_eq!(rows.len(), 2, "{text}");
        assert!(rows[0].contains("web-1") && rows[0].contains("isolate"), "{text}");
        let after = text.split("Mitigations it would order:\n").nth(1).unwrap();
        assert!(
            after.starts_with("CLUSTER  NAMESPACE  POD    TYPE     REASON\n"),
            "{text}"
        );
        assert!(
            after.contains("c-1      shop       web-1  isolate  privileged"),
            "{text}"
        );
    }
}
