//! `portcullis ruleset ...`: runtime rulesets, by name.

use clap::Subcommand;
use portcullis_engine::runtime::Ruleset as EngineDocument;
use portcullis_proto::policystore::v1 as pb;
use serde_json::{Value, json};

use super::document::{self, document_with_identity};
use super::error::ClientError;
use super::output::{
    Format, OutputArg, Table, print_json, print_line, print_table, render_fields, time_cell, time_json,
};
use super::policy::print_applied;
use super::{Ctx, KeyChoice, all_pages, by_name, missing, next_token};

/// `ruleset` subcommands.
#[derive(Debug, Subcommand)]
pub enum RulesetCommand {
    /// Creates the runtime ruleset named in the document, or updates the one of that name
    /// (checked locally by the engine first).
    Apply {
        /// The runtime ruleset document, JSON or YAML (`-` for standard input).
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: String,
        /// Refuse the change unless the runtime ruleset is at this revision.
        #[arg(long, value_name = "REV")]
        expected_revision: Option<u64>,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Shows a runtime ruleset (`-o json`: the document with `id` and `revision`).
    Get {
        /// The runtime ruleset's name.
        name: String,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Lists the tenant's rulesets.
    List {
        /// Only rulesets whose name contains this text.
        #[arg(long, value_name = "TEXT")]
        filter: Option<String>,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Deletes a runtime ruleset (refused while a policy refers to it).
    Delete {
        /// The runtime ruleset's name.
        name: String,
        #[command(flatten)]
        out: OutputArg,
    },
}

impl RulesetCommand {
    /// The subcommand's name.
    pub fn verb(&self) -> &'static str {
        match self {
            RulesetCommand::Apply { .. } => "apply",
            RulesetCommand::Get { .. } => "get",
            RulesetCommand::List { .. } => "list",
            RulesetCommand::Delete { .. } => "delete",
        }
    }
}

/// Runs a `ruleset` subcommand.
pub async fn run(ctx: &Ctx<'_>, command: &RulesetCommand) -> Result<(), ClientError> {
    match command {
        RulesetCommand::Apply {
            file,
            expected_revision,
            out,
        } => {
            let doc = document::load(file)?;
            let parsed: EngineDocument = document::to_engine(&doc)?;
            parsed.validate().map_err(|errors| document::invalid(&doc, errors))?;
            let conn = ctx.connect(KeyChoice::Tenant).await?;
            let response = conn
                .rulesets()
                .apply_ruleset(pb::ApplyRulesetRequest {
                    document_json: doc.json(),
                    expected_revision: *expected_revision,
                })
                .await
                .map_err(|s| conn.error(s))?
                .into_inner();
            let r = response.ruleset.ok_or_else(missing("ruleset"))?;
            print_applied(
                "ruleset",
                &r.name,
                &r.id,
                r.revision,
                response.created,
                response.changed,
                out.output,
            )
        }
        RulesetCommand::Get { name, out } => {
            let conn = ctx.connect(KeyChoice::Tenant).await?;
            let response = conn
                .rulesets()
                .get_ruleset(pb::GetRulesetRequest { ruleset: by_name(name) })
                .await
                .map_err(|s| conn.error(s))?
                .into_inner();
            let r = response.ruleset.ok_or_else(missing("ruleset"))?;
            let document = document_with_identity(&r.document_json, &r.id, r.revision)?;
            match out.output {
                Format::Json => print_json(&document),
                Format::Table => {
                    let fields = render_fields(&[
                        ("Name", r.name.clone()),
                        ("Id", r.id.clone()),
                        ("Revision", r.revision.to_string()),
                        ("Description", r.description.clone()),
                        ("Author", r.author_key_id.clone()),
                        ("Created", time_cell(r.created_at.as_ref())),
                        ("Updated", time_cell(r.updated_at.as_ref())),
                    ]);
                    let body: Value = serde_json::from_str(&r.document_json).unwrap_or(Value::Null);
                    let body = serde_json::to_string_pretty(&body).unwrap_or_default();
                    print_line(&format!("{fields}Document:\n{body}"))
                }
            }
        }
        RulesetCommand::List { filter, out } => {
            let conn = ctx.connect(KeyChoice::Tenant).await?;
            let client = conn.rulesets();
            let name_filter = filter.clone().unwrap_or_default();
            let items = all_pages(None, |page| {
                let mut client = client.clone();
                let request = pb::ListRulesetsRequest {
                    page: Some(page),
                    name_filter: name_filter.clone(),
                };
                async move {
                    let r = client.list_rulesets(request).await?.into_inner();
                    Ok((r.rulesets, next_token(r.page)))
                }
            })
            .await
            .map_err(|s| conn.error(s))?;
            match out.output {
                Format::Json => print_json(&Value::Array(
                    items
                        .iter()
                        .map(|r| {
                            json!({
                                "id": r.id,
                                "name": r.name,
                                "revision": r.revision,
                                "description": r.description,
                                "rules": r.rule_count,
                                "author": r.author_key_id,
                                "created": time_json(r.created_at.as_ref()),
                                "updated": time_json(r.updated_at.as_ref()),
                            })
                        })
                        .collect(),
                )),
                Format::Table => {
                    let mut table =
                        Table::new(&["NAME", "REVISION", "RULES", "DESCRIPTION", "UPDATED", "ID"]).cut("DESCRIPTION");
                    for r in &items {
                        table.row(vec![
                            r.name.clone(),
                            r.revision.to_string(),
                            r.rule_count.to_string(),
                            r.description.clone(),
                            time_cell(r.updated_at.as_ref()),
                            r.id.clone(),
                        ]);
                    }
                    print_table(&table, "No rulesets.")
                }
            }
        }
        RulesetCommand::Delete { name, out } => {
            let conn = ctx.connect(KeyChoice::Tenant).await?;
            let response = conn
                .rulesets()
                .delete_ruleset(pb::DeleteRulesetRequest { ruleset: by_name(name) })
                .await
                .map_err(|s| conn.error(s))?
                .into_inner();
            match out.output {
                Format::Json => print_json(&json!({"id": response.id, "name": name})),
                Format::Table => print_line(&format!("ruleset {name} deleted")),
            }
        }
    }
}
