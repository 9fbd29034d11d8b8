//! `portcullis attestor ...`: attestors, by name.

use clap::Subcommand;
use portcullis_engine::attestor::Attestor as EngineDocument;
use portcullis_proto::policystore::v1 as pb;
use serde_json::{Value, json};

use super::document::{self, document_with_identity};
use super::error::ClientError;
use super::output::{
    Format, OutputArg, Table, print_json, print_line, print_table, render_fields, time_cell, time_json,
};
use super::policy::print_applied;
use super::{Ctx, KeyChoice, all_pages, by_name, missing, next_token};

/// `attestor` subcommands.
#[derive(Debug, Subcommand)]
pub enum AttestorCommand {
    /// Creates the attestor named in the document, or updates the one of that name
    /// (checked locally by the engine first).
    Apply {
        /// The attestor document, JSON or YAML (`-` for standard input).
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: String,
        /// Refuse the change unless the attestor is at this revision.
        #[arg(long, value_name = "REV")]
        expected_revision: Option<u64>,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Shows a attestor (`-o json`: the document with `id` and `revision`).
    Get {
        /// The attestor's name.
        name: String,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Lists the tenant's attestors.
    List {
        /// Only attestors whose name contains this text.
        #[arg(long, value_name = "TEXT")]
        filter: Option<String>,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Deletes a attestor (refused while a policy refers to it).
    Delete {
        /// The attestor's name.
        name: String,
        #[command(flatten)]
        out: OutputArg,
    },
}

impl AttestorCommand {
    /// The subcommand's name.
    pub fn verb(&self) -> &'static str {
        match self {
            AttestorCommand::Apply { .. } => "apply",
            AttestorCommand::Get { .. } => "get",
            AttestorCommand::List { .. } => "list",
            AttestorCommand::Delete { .. } => "delete",
        }
    }
}

/// Runs a `attestor` subcommand.
pub async fn run(ctx: &Ctx<'_>, command: &AttestorCommand) -> Result<(), ClientError> {
    match command {
        AttestorCommand::Apply {
            file,
            expected_revision,
            out,
        } => {
            let doc = document::load(file)?;
            let parsed: EngineDocument = document::to_engine(&doc)?;
            parsed.validate().map_err(|errors| document::invalid(&doc, errors))?;
            let conn = ctx.connect(KeyChoice::Tenant).await?;
            let response = conn
                .attestors()
                .apply_attestor(pb::ApplyAttestorRequest {
                    document_json: doc.json(),
                    expected_revision: *expected_revision,
                })
                .await
                .map_err(|s| conn.error(s))?
                .into_inner();
            let r = response.attestor.ok_or_else(missing("attestor"))?;
            print_applied(
                "attestor",
                &r.name,
                &r.id,
                r.revision,
                response.created,
                response.changed,
                out.output,
            )
        }
        AttestorCommand::Get { name, out } => {
            let conn = ctx.connect(KeyChoice::Tenant).await?;
            let response = conn
                .attestors()
                .get_attestor(pb::GetAttestorRequest {
                    attestor: by_name(name),
                })
                .await
                .map_err(|s| conn.error(s))?
                .into_inner();
            let r = response.attestor.ok_or_else(missing("attestor"))?;
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
        AttestorCommand::List { filter, out } => {
            let conn = ctx.connect(KeyChoice::Tenant).await?;
            let client = conn.attestors();
            let name_filter = filter.clone().unwrap_or_default();
            let items = all_pages(None, |page| {
                let mut client = client.clone();
                let request = pb::ListAttestorsRequest {
                    page: Some(page),
                    name_filter: name_filter.clone(),
                };
                async move {
                    let r = client.list_attestors(request).await?.into_inner();
                    Ok((r.attestors, next_token(r.page)))
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
                                "type": r.attestor_type,
                                "author": r.author_key_id,
                                "created": time_json(r.created_at.as_ref()),
                                "updated": time_json(r.updated_at.as_ref()),
                            })
                        })
                        .collect(),
                )),
                Format::Table => {
                    let mut table =
                        Table::new(&["NAME", "REVISION", "TYPE", "DESCRIPTION", "UPDATED", "ID"]).cut("DESCRIPTION");
                    for r in &items {
                        table.row(vec![
                            r.name.clone(),
                            r.revision.to_string(),
                            r.attestor_type.clone(),
                            r.description.clone(),
                            time_cell(r.updated_at.as_ref()),
                            r.id.clone(),
                        ]);
                    }
                    print_table(&table, "No attestors.")
                }
            }
        }
        AttestorCommand::Delete { name, out } => {
            let conn = ctx.connect(KeyChoice::Tenant).await?;
            let response = conn
                .attestors()
                .delete_attestor(pb::DeleteAttestorRequest {
                    attestor: by_name(name),
                })
                .await
                .map_err(|s| conn.error(s))?
                .into_inner();
            match out.output {
                Format::Json => print_json(&json!({"id": response.id, "name": name})),
                Format::Table => print_line(&format!("attestor {name} deleted")),
            }
        }
    }
}
