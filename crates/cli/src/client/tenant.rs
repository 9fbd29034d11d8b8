//! `portcullis tenant ...`: tenants, with the operator key.

use std::time::SystemTime;

use clap::Subcommand;
use portcullis_proto::policystore::v1 as pb;
use serde_json::{Value, json};

use super::duration::{expiry_from_now, parse_duration};
use super::error::ClientError;
use super::named_document::list_all;
use super::output::{Format, OutputArg, Table, note, print_json, print_line, print_table, time_cell, time_json};
use super::{Conn, Ctx, KeyChoice, missing};

/// `tenant` subcommands.
#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Creates a tenant; prints its first admin key alone (shown this once).
    Create {
        /// The tenant id: 1-36 characters of `a-z`, `0-9` and `-`.
        name: String,
        /// Display name (default: the id).
        #[arg(long, value_name = "TEXT")]
        display_name: Option<String>,
        /// The admin key expires after this long, e.g. `90d` (default: never).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        admin_key_expires_in: Option<std::time::Duration>,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Shows a tenant.
    Get {
        /// The tenant id.
        name: String,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Lists tenants.
    List {
        #[command(flatten)]
        out: OutputArg,
    },
    /// Deletes a tenant and everything it owns.
    Delete {
        /// The tenant id.
        name: String,
        #[command(flatten)]
        out: OutputArg,
    },
}

impl TenantCommand {
    /// The subcommand's name.
    pub fn verb(&self) -> &'static str {
        match self {
            TenantCommand::Create { .. } => "create",
            TenantCommand::Get { .. } => "get",
            TenantCommand::List { .. } => "list",
            TenantCommand::Delete { .. } => "delete",
        }
    }
}

/// Whether `id` is a tenant id: `[a-z0-9-]{1,36}` (the rule is `TenantId::is_valid`).
pub fn is_tenant_id(id: &str) -> bool {
    portcullis_domain::TenantId::is_valid(id)
}

/// Runs a `tenant` subcommand.
pub async fn run(ctx: &Ctx<'_>, command: &TenantCommand) -> Result<(), ClientError> {
    match command {
        TenantCommand::Create {
            name,
            display_name,
            admin_key_expires_in,
            out,
        } => {
            if !is_tenant_id(name) {
                return Err(ClientError::input(format!(
                    "{name:?} is not a tenant id (1-36 characters of a-z, 0-9 and -)"
                )));
            }
            let admin_key_expires_at = admin_key_expires_in
                .map(|d| expiry_from_now(SystemTime::now(), d))
                .transpose()
                .map_err(|e| ClientError::input(format!("--admin-key-expires-in: {e}")))?;
            let conn = ctx.connect(KeyChoice::Operator).await?;
            let response = conn
                .tenants()
                .create_tenant(pb::CreateTenantRequest {
                    name: display_name.clone().unwrap_or_else(|| name.clone()),
                    id: name.clone(),
                    admin_key_expires_at,
                })
                .await
                .map_err(|s| conn.error(s))?
                .into_inner();
            let tenant = response.tenant.ok_or_else(missing("tenant"))?;
            match out.output {
                Format::Json => print_json(&json!({
                    "tenant": tenant_json(&tenant),
                    "adminKey": response.admin_key,
                    "adminKeyId": response.admin_key_id,
                })),
                Format::Table => {
                    note(&format!(
                        "tenant {} created; its admin key (id {}) is shown this once:",
                        tenant.id, response.admin_key_id
                    ));
                    print_line(&response.admin_key)
                }
            }
        }
        TenantCommand::Get { name, out } => {
            let conn = ctx.connect(KeyChoice::Operator).await?;
            let tenant = conn
                .tenants()
                .get_tenant(pb::GetTenantRequest { id: name.clone() })
                .await
                .map_err(|s| conn.error(s))?
                .into_inner()
                .tenant
                .ok_or_else(missing("tenant"))?;
            match out.output {
                Format::Json => print_json(&tenant_json(&tenant)),
                Format::Table => print_tenants(&[tenant]),
            }
        }
        TenantCommand::List { out } => {
            let tenants = list_all(
                ctx,
                KeyChoice::Operator,
                Conn::tenants,
                |mut client, page| {
                    let request = pb::ListTenantsRequest {
                        page: Some(page),
                        name_filter: String::new(),
                    };
                    async move { client.list_tenants(request).await }
                },
                |r| (r.tenants, r.page),
            )
            .await?;
            match out.output {
                Format::Json => print_json(&Value::Array(tenants.iter().map(tenant_json).collect())),
                Format::Table => print_tenants(&tenants),
            }
        }
        TenantCommand::Delete { name, out } => {
            let conn = ctx.connect(KeyChoice::Operator).await?;
            let response = conn
                .tenants()
                .delete_tenant(pb::DeleteTenantRequest { id: name.clone() })
                .await
                .map_err(|s| conn.error(s))?
                .into_inner();
            match out.output {
                Format::Json => print_json(&json!({"id": response.id})),
                Format::Table => print_line(&format!("tenant {} deleted", response.id)),
            }
        }
    }
}

fn print_tenants(tenants: &[pb::Tenant]) -> Result<(), ClientError> {
    let mut table = Table::new(&["ID", "NAME", "CREATED"]);
    for t in tenants {
        table.row(vec![t.id.clone(), t.name.clone(), time_cell(t.created_at.as_ref())]);
    }
    print_table(&table, "No tenants.")
}

fn tenant_json(t: &pb::Tenant) -> Value {
    json!({"id": t.id, "name": t.name, "created": time_json(t.created_at.as_ref())})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_follow_the_architecture() {
        for good in ["default", "acme-prod", "a", "0123456789abcdef0123456789abcdef0123"] {
            assert!(is_tenant_id(good), "{good:?}");
        }
        for bad in [
            "",
            "Acme",
            "acme_prod",
            "acme prod",
            "é",
            "0123456789abcdef0123456789abcdef01234",
        ] {
            assert!(!is_tenant_id(bad), "{bad:?}");
        }
    }
}
