//! `portcullis audit list`: the tenant's audit log, newest first (admin key).

use clap::Subcommand;
use portcullis_proto::policystore::v1 as pb;
use serde_json::{Value, json};

use super::error::ClientError;
use super::output::{Format, OutputArg, Table, print_json, print_table, time_cell, time_json};
use super::{Ctx, KeyChoice, all_pages, names, next_token};

/// `audit` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Lists audit entries, newest first.
    List {
        /// Most entries to show.
        #[arg(long, default_value_t = 100, value_name = "N")]
        limit: usize,
        /// Only this action, e.g. `policy.update`.
        #[arg(long, value_name = "ACTION")]
        action: Option<String>,
        /// Only this resource type, e.g. `policy`, `cluster`, `apikey`.
        #[arg(long, value_name = "TYPE")]
        resource_type: Option<String>,
        /// Only changes made by this key id.
        #[arg(long, value_name = "KEY_ID")]
        actor: Option<String>,
        #[command(flatten)]
        out: OutputArg,
    },
}

impl AuditCommand {
    /// The subcommand's name.
    pub fn verb(&self) -> &'static str {
        match self {
            AuditCommand::List { .. } => "list",
        }
    }
}

/// Runs an `audit` subcommand.
pub async fn run(ctx: &Ctx<'_>, command: &AuditCommand) -> Result<(), ClientError> {
    match command {
        AuditCommand::List {
            limit,
            action,
            resource_type,
            actor,
            out,
        } => {
            let conn = ctx.connect(KeyChoice::Tenant).await?;
            let client = conn.audit();
            let entries = all_pages(Some(*limit), |page| {
                let mut client = client.clone();
                let request = pb::ListAuditEntriesRequest {
                    page: Some(page),
                    time_range: None,
                    actor_key_id: actor.clone().unwrap_or_default(),
                    resource_type: resource_type.clone().unwrap_or_default(),
                    resource_id: String::new(),
                    action: action.clone().unwrap_or_default(),
                };
                async move {
                    let r = client.list_audit_entries(request).await?.into_inner();
                    Ok((r.entries, next_token(r.page)))
                }
            })
            .await
            .map_err(|s| conn.error(s))?;
            match out.output {
                Format::Json => print_json(&Value::Array(entries.iter().map(entry_json).collect())),
                Format::Table => {
                    let mut table =
                        Table::new(&["TIME", "ACTOR", "ROLE", "ACTION", "RESOURCE", "DETAILS"]).cut("DETAILS");
                    for e in &entries {
                        let resource = if e.resource_name.is_empty() {
                            &e.resource_id
                        } else {
                            &e.resource_name
                        };
                        let actor = if e.actor_key_id.is_empty() {
                            "operator"
                        } else {
                            e.actor_key_id.as_str()
                        };
                        table.row(vec![
                            time_cell(e.time.as_ref()),
                            actor.to_owned(),
                            names::role(e.actor_role),
                            e.action.clone(),
                            format!("{} {resource}", e.resource_type),
                            e.details_json.clone(),
                        ]);
                    }
                    print_table(&table, "No audit entries.")
                }
            }
        }
    }
}

fn entry_json(e: &pb::AuditEntry) -> Value {
    // Details are a JSON object by contract; kept as text if a server sends anything else.
    let details =
        serde_json::from_str::<Value>(&e.details_json).unwrap_or_else(|_| Value::String(e.details_json.clone()));
    json!({
        "id": e.id,
        "time": time_json(e.time.as_ref()),
        "actorKeyId": e.actor_key_id,
        "actorRole": names::role(e.actor_role),
        "action": e.action,
        "resourceType": e.resource_type,
        "resourceId": e.resource_id,
        "resourceName": e.resource_name,
        "details": details,
        "traceId": e.trace_id,
    })
}
