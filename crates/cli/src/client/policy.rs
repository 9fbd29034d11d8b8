//! `portcullis policy ...`: protection policies, by name.

use clap::Subcommand;
use portcullis_engine::policy::{PolicyDocument, validate};
use portcullis_proto::policystore::v1 as pb;
use serde_json::{Value, json};

use super::continuous::ContinuousServerArg;
use super::document::{self, document_with_identity};
use super::duration::parse_duration;
use super::error::ClientError;
use super::named_document::list_all;
use super::output::{
    Format, OutputArg, Table, print_json, print_line, print_table, render_fields, time_cell, time_json,
};
use super::{Conn, Ctx, KeyChoice, by_name, missing};

/// `policy` subcommands.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Creates the policy named in the document, or updates the policy of that name
    /// (checked locally by the engine first).
    Apply {
        /// The policy document, JSON or YAML (`-` for standard input).
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: String,
        /// Refuse the change unless the policy is at this revision.
        #[arg(long, value_name = "REV", conflicts_with = "preview")]
        expected_revision: Option<u64>,
        /// Applies nothing: shows the findings the draft would open, change and resolve on
        /// the live inventory, and the mitigations it would order (continuous service).
        #[arg(long)]
        preview: bool,
        /// With --preview: a cluster to preview on, by name (repeat for several; default:
        /// the clusters assigned to the policy of the draft's name).
        #[arg(long = "cluster", value_name = "NAME", requires = "preview")]
        clusters: Vec<String>,
        #[command(flatten)]
        continuous: ContinuousServerArg,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Judges the recorded admissions (of `xdrEnabled` policies) again with a draft and
    /// shows, per workload, what it would have blocked or logged differently from what was
    /// decided, with counts (telemetry service). Applies nothing.
    Replay {
        /// The draft policy document, JSON or YAML (`-` for standard input).
        #[arg(short = 'f', long = "file", value_name = "DRAFT")]
        file: String,
        /// Only the admissions of this cluster, by name (default: every cluster's).
        #[arg(long, value_name = "NAME")]
        cluster: Option<String>,
        /// Only admissions decided within this time, e.g. `7d` (default: all recorded).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        since: Option<std::time::Duration>,
        #[command(flatten)]
        server: super::telemetry::TelemetryServerArg,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Shows a policy at its current revision (`-o json`: the document with `id` and
    /// `revision`).
    Get {
        /// The policy's name.
        name: String,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Lists the tenant's policies.
    List {
        /// Only policies whose name contains this text.
        #[arg(long, value_name = "TEXT")]
        filter: Option<String>,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Lists every exception of every policy, with its policy, definition, reason and
    /// expiry, soonest expiry first (those without expiry last).
    Exceptions {
        /// Only exceptions expiring within this time from now (already expired ones
        /// included, marked expired), e.g. `7d`.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        expiring: Option<std::time::Duration>,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Copies a policy under a new name (default: `<name>Policy`, `<name>Policy2`, ...).
    Duplicate {
        /// The policy to copy.
        #[arg(value_name = "NAME")]
        source: String,
        /// The copy's name.
        #[arg(long = "name", value_name = "NEW_NAME")]
        new_name: Option<String>,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Deletes a policy and its history (refused while a cluster is assigned to it).
    Delete {
        /// The policy's name.
        name: String,
        /// Refuse unless the policy is at this revision.
        #[arg(long, value_name = "REV")]
        expected_revision: Option<u64>,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Lists a policy's revisions, newest first.
    History {
        /// The policy's name.
        name: String,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Shows one revision of a policy.
    Revision {
        /// The policy's name.
        name: String,
        /// The revision number.
        revision: u64,
        #[command(flatten)]
        out: OutputArg,
    },
}

impl PolicyCommand {
    /// The subcommand's name.
    pub fn verb(&self) -> &'static str {
        match self {
            PolicyCommand::Apply { .. } => "apply",
            PolicyCommand::Replay { .. } => "replay",
            PolicyCommand::Get { .. } => "get",
            PolicyCommand::List { .. } => "list",
            PolicyCommand::Exceptions { .. } => "exceptions",
            PolicyCommand::Duplicate { .. } => "duplicate",
            PolicyCommand::Delete { .. } => "delete",
            PolicyCommand::History { .. } => "history",
            PolicyCommand::Revision { .. } => "revision",
        }
    }
}

/// Runs a `policy` subcommand.
pub async fn run(ctx: &Ctx<'_>, command: &PolicyCommand) -> Result<(), ClientError> {
    match command {
        PolicyCommand::Apply {
            file,
            expected_revision,
            preview,
            clusters,
            continuous,
            out,
        } => {
            let doc = document::load(file)?;
            // The engine's verdict first: a clear error without a round trip.
            let parsed: PolicyDocument = document::to_engine(&doc)?;
            validate(&parsed).map_err(|e| document::invalid(&doc, e.field_errors()))?;
            if *preview {
                return super::continuous::preview::run(ctx, &doc, clusters, continuous, out.output).await;
            }
            let conn = ctx.connect(KeyChoice::Tenant).await?;
            let response = conn
                .policies()
                .apply_policy(pb::ApplyPolicyRequest {
                    document_json: doc.json(),
                    expected_revision: *expected_revision,
                })
                .await
                .map_err(|s| conn.error(s))?
                .into_inner();
            let policy = response.policy.ok_or_else(missing("policy"))?;
            print_applied(
                "policy",
                &policy.name,
                &policy.id,
                policy.revision,
                response.created,
                response.changed,
                out.output,
            )
        }
        PolicyCommand::Replay {
            file,
            cluster,
            since,
            server,
            out,
        } => {
            let doc = document::load(file)?;
            // The engine's verdict first: a clear error without a round trip.
            let parsed: PolicyDocument = document::to_engine(&doc)?;
            validate(&parsed).map_err(|e| document::invalid(&doc, e.field_errors()))?;
            super::telemetry::run_replay(ctx, &doc.json(), cluster.as_deref(), *since, server, out.output).await
        }
        PolicyCommand::Get { name, out } => {
            let conn = ctx.connect(KeyChoice::Tenant).await?;
            let response = conn
                .policies()
                .get_policy(pb::GetPolicyRequest { policy: by_name(name) })
                .await
                .map_err(|s| conn.error(s))?
                .into_inner();
            print_policy(&response.policy.ok_or_else(missing("policy"))?, out.output)
        }
        PolicyCommand::List { filter, out } => {
            let name_filter = filter.clone().unwrap_or_default();
            let policies = list_all(
                ctx,
                KeyChoice::Tenant,
                Conn::policies,
                |mut client, page| {
                    let request = pb::ListPoliciesRequest {
                        page: Some(page),
                        name_filter: name_filter.clone(),
                        include_documents: false,
                    };
                    async move { client.list_policies(request).await }
                },
                |r| (r.policies, r.page),
            )
            .await?;
            match out.output {
                Format::Json => print_json(&Value::Array(policies.iter().map(summary_json).collect())),
                Format::Table => {
                    let mut table =
                        Table::new(&["NAME", "REVISION", "DESCRIPTION", "UPDATED", "ID"]).cut("DESCRIPTION");
                    for p in &policies {
                        table.row(vec![
                            p.name.clone(),
                            p.revision.to_string(),
                            p.description.clone(),
                            time_cell(p.updated_at.as_ref()),
                            p.id.clone(),
                        ]);
                    }
                    print_table(&table, "No policies.")
                }
            }
        }
        PolicyCommand::Exceptions { expiring, out } => super::exceptions::run(ctx, *expiring, out.output).await,
        PolicyCommand::Duplicate { source, new_name, out } => {
            let conn = ctx.connect(KeyChoice::Tenant).await?;
            let response = conn
                .policies()
                .duplicate_policy(pb::DuplicatePolicyRequest {
                    policy: by_name(source),
                    new_name: new_name.clone(),
                })
                .await
                .map_err(|s| conn.error(s))?
                .into_inner();
            let copy = response.policy.ok_or_else(missing("policy"))?;
            match out.output {
                Format::Json => print_json(&document_with_identity(&copy.document_json, &copy.id, copy.revision)?),
                Format::Table => print_line(&format!("policy {source} duplicated as {}", copy.name)),
            }
        }
        PolicyCommand::Delete {
            name,
            expected_revision,
            out,
        } => {
            let conn = ctx.connect(KeyChoice::Tenant).await?;
            let response = conn
                .policies()
                .delete_policy(pb::DeletePolicyRequest {
                    policy: by_name(name),
                    expected_revision: *expected_revision,
                })
                .await
                .map_err(|s| conn.error(s))?
                .into_inner();
            match out.output {
                Format::Json => print_json(&json!({"id": response.id, "name": name, "revision": response.revision})),
                Format::Table => print_line(&format!(
                    "policy {name} deleted (was at revision {})",
                    response.revision
                )),
            }
        }
        PolicyCommand::History { name, out } => {
            let revisions = list_all(
                ctx,
                KeyChoice::Tenant,
                Conn::policies,
                |mut client, page| {
                    let request = pb::ListPolicyHistoryRequest {
                        policy: by_name(name),
                        page: Some(page),
                    };
                    async move { client.list_policy_history(request).await }
                },
                |r| (r.revisions, r.page),
            )
            .await?;
            match out.output {
                Format::Json => print_json(&history_json(&revisions)),
                Format::Table => {
                    let mut table = Table::new(&["REVISION", "AUTHOR", "TIME", "SHA256"]);
                    for r in &revisions {
                        table.row(vec![
                            r.revision.to_string(),
                            r.author_key_id.clone(),
                            time_cell(r.created_at.as_ref()),
                            r.document_sha256.chars().take(12).collect(),
                        ]);
                    }
                    print_table(&table, "No revisions.")
                }
            }
        }
        PolicyCommand::Revision { name, revision, out } => {
            let conn = ctx.connect(KeyChoice::Tenant).await?;
            let response = conn
                .policies()
                .get_policy_revision(pb::GetPolicyRevisionRequest {
                    policy: by_name(name),
                    revision: *revision,
                })
                .await
                .map_err(|s| conn.error(s))?
                .into_inner();
            print_policy(&response.policy.ok_or_else(missing("policy"))?, out.output)
        }
    }
}

/// What `apply` prints: `policy NAME created|updated|unchanged (revision N)`, or a JSON
/// object with the outcome.
pub fn print_applied(
    kind: &str,
    name: &str,
    id: &str,
    revision: u64,
    created: bool,
    changed: bool,
    format: Format,
) -> Result<(), ClientError> {
    match format {
        Format::Json => print_json(&json!({
            "id": id,
            "name": name,
            "revision": revision,
            "created": created,
            "changed": changed,
        })),
        Format::Table => print_line(&applied_line(kind, name, revision, created, changed)),
    }
}

/// The one-line outcome of an `apply`.
pub fn applied_line(kind: &str, name: &str, revision: u64, created: bool, changed: bool) -> String {
    let outcome = match (created, changed) {
        (true, _) => "created",
        (false, true) => "updated",
        (false, false) => "unchanged",
    };
    format!("{kind} {name} {outcome} (revision {revision})")
}

/// A policy with its document: the JSON of `get -o json`, or its fields and document.
fn print_policy(policy: &pb::Policy, format: Format) -> Result<(), ClientError> {
    let document = document_with_identity(&policy.document_json, &policy.id, policy.revision)?;
    match format {
        Format::Json => print_json(&document),
        Format::Table => {
            let fields = render_fields(&[
                ("Name", policy.name.clone()),
                ("Id", policy.id.clone()),
                ("Revision", policy.revision.to_string()),
                ("Description", policy.description.clone()),
                ("Author", policy.author_key_id.clone()),
                ("Created", time_cell(policy.created_at.as_ref())),
                ("Updated", time_cell(policy.updated_at.as_ref())),
            ]);
            let body: Value = serde_json::from_str(&policy.document_json).unwrap_or(Value::Null);
            let body = serde_json::to_string_pretty(&body).unwrap_or_default();
            print_line(&format!("{fields}Document:\n{body}"))
        }
    }
}

/// A policy of a listing as JSON.
fn summary_json(p: &pb::Policy) -> Value {
    json!({
        "id": p.id,
        "name": p.name,
        "revision": p.revision,
        "description": p.description,
        "author": p.author_key_id,
        "created": time_json(p.created_at.as_ref()),
        "updated": time_json(p.updated_at.as_ref()),
    })
}

/// `policy history -o json`: one `{revision, author, time}` per revision.
pub fn history_json(revisions: &[pb::PolicyRevisionInfo]) -> Value {
    Value::Array(
        revisions
            .iter()
            .map(|r| {
                json!({
                    "revision": r.revision,
                    "author": r.author_key_id,
                    "time": time_json(r.created_at.as_ref()),
                })
            })
            .collect(),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn apply_says_what_happened() {
        assert_eq!(
            applied_line("policy", "prod", 1, true, true),
            "policy prod created (revision 1)"
        );
        assert_eq!(
            applied_line("policy", "prod", 4, false, true),
            "policy prod updated (revision 4)"
        );
        assert_eq!(
            applied_line("ruleset", "rs", 3, false, false),
            "ruleset rs unchanged (revision 3)"
        );
    }

    #[test]
    fn history_json_has_revision_author_and_time_only() {
        let revisions = vec![
            pb::PolicyRevisionInfo {
                revision: 2,
                author_key_id: "key-2".into(),
                created_at: Some(prost_types::Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 0,
                }),
                document_sha256: "ab".into(),
            },
            pb::PolicyRevisionInfo {
                revision: 1,
                author_key_id: "key-1".into(),
                created_at: None,
                document_sha256: "cd".into(),
            },
        ];
        assert_eq!(
            history_json(&revisions),
            json!([
                {"revision": 2, "author": "key-2", "time": "2023-11-14T22:13:20Z"},
                {"revision": 1, "author": "key-1", "time": null},
            ])
        );
    }
}
