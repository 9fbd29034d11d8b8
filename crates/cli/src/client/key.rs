//! `portcullis key ...`: the tenant's API keys (an admin key's business).

use std::time::SystemTime;

use clap::Subcommand;
use portcullis_proto::common::v1::Role;
use portcullis_proto::policystore::v1 as pb;
use serde_json::{Value, json};

use super::duration::{expiry_from_now, parse_duration};
use super::error::ClientError;
use super::named_document::list_all;
use super::output::{Format, OutputArg, Table, note, print_json, print_line, print_table, time_cell, time_json};
use super::{Conn, Ctx, KeyChoice, by_name, missing, names};

/// A key's role, as flags spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RoleArg {
    /// Everything in the tenant, including keys and the audit log.
    Admin,
    /// Read and write policies, rulesets, attestors, clusters and scan results.
    Editor,
    /// Read only.
    Viewer,
    /// A cluster's connector (needs --cluster).
    Connector,
}

impl From<RoleArg> for Role {
    fn from(role: RoleArg) -> Role {
        match role {
            RoleArg::Admin => Role::Admin,
            RoleArg::Editor => Role::Editor,
            RoleArg::Viewer => Role::Viewer,
            RoleArg::Connector => Role::Connector,
        }
    }
}

/// `key` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Creates an API key; prints its secret alone (shown this once).
    Create {
        /// The key's role.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// For a connector key: its cluster.
        #[arg(long, value_name = "CLUSTER")]
        cluster: Option<String>,
        /// The key expires after this long, e.g. `90d` (default: never).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        expires_in: Option<std::time::Duration>,
        /// Free text, e.g. `ci pipeline`.
        #[arg(long, value_name = "TEXT")]
        description: Option<String>,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Lists the tenant's keys (never their secrets).
    List {
        /// Include revoked and expired keys.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Revokes a key at once.
    Revoke {
        /// The key's id (see `key list`).
        id: String,
        #[command(flatten)]
        out: OutputArg,
    },
}

impl KeyCommand {
    /// The subcommand's name.
    pub fn verb(&self) -> &'static str {
        match self {
            KeyCommand::Create { .. } => "create",
            KeyCommand::List { .. } => "list",
            KeyCommand::Revoke { .. } => "revoke",
        }
    }
}

/// The create request the flags ask for; a connector key needs a cluster, other roles
/// must not name one.
pub fn create_request(
    role: RoleArg,
    cluster: Option<&str>,
    expires_in: Option<std::time::Duration>,
    description: Option<&str>,
    now: SystemTime,
) -> Result<pb::CreateApiKeyRequest, ClientError> {
    match (role, cluster) {
        (RoleArg::Connector, None) => return Err(ClientError::input("--role connector needs --cluster")),
        (RoleArg::Admin | RoleArg::Editor | RoleArg::Viewer, Some(_)) => {
            return Err(ClientError::input("--cluster is only for --role connector"));
        }
        _ => {}
    }
    let expires_at = expires_in
        .map(|d| expiry_from_now(now, d))
        .transpose()
        .map_err(|e| ClientError::input(format!("--expires-in: {e}")))?;
    Ok(pb::CreateApiKeyRequest {
        role: Role::from(role) as i32,
        cluster: cluster.and_then(by_name),
        expires_at,
        description: description.unwrap_or_default().to_owned(),
    })
}

/// Runs a `key` subcommand.
pub async fn run(ctx: &Ctx<'_>, command: &KeyCommand) -> Result<(), ClientError> {
    match command {
        KeyCommand::Create {
            role,
            cluster,
            expires_in,
            description,
            out,
        } => {
            let request = create_request(
                *role,
                cluster.as_deref(),
                *expires_in,
                description.as_deref(),
                SystemTime::now(),
            )?;
            let conn = ctx.connect(KeyChoice::Tenant).await?;
            let response = conn
                .auth()
                .create_api_key(request)
                .await
                .map_err(|s| conn.error(s))?
                .into_inner();
            let key = response.key.ok_or_else(missing("key"))?;
            match out.output {
                Format::Json => print_json(&json!({"key": key_json(&key), "secret": response.secret})),
                Format::Table => {
                    note(&format!(
                        "{} key {} created; its secret is shown this once:",
                        names::role(key.role),
                        key.id
                    ));
                    print_line(&response.secret)
                }
            }
        }
        KeyCommand::List { all, out } => {
            let keys = list_all(
                ctx,
                KeyChoice::Tenant,
                Conn::auth,
                |mut client, page| {
                    let request = pb::ListApiKeysRequest {
                        page: Some(page),
                        role: Role::Unspecified as i32,
                        cluster: None,
                        include_inactive: *all,
                    };
                    async move { client.list_api_keys(request).await }
                },
                |r| (r.keys, r.page),
            )
            .await?;
            match out.output {
                Format::Json => print_json(&Value::Array(keys.iter().map(key_json).collect())),
                Format::Table => print_keys(&keys, *all),
            }
        }
        KeyCommand::Revoke { id, out } => {
            let conn = ctx.connect(KeyChoice::Tenant).await?;
            let key = conn
                .auth()
                .revoke_api_key(pb::RevokeApiKeyRequest { key_id: id.clone() })
                .await
                .map_err(|s| conn.error(s))?
                .into_inner()
                .key
                .ok_or_else(missing("key"))?;
            match out.output {
                Format::Json => print_json(&key_json(&key)),
                Format::Table => print_line(&format!("key {} revoked", key.id)),
            }
        }
    }
}

fn print_keys(keys: &[pb::ApiKey], with_revoked: bool) -> Result<(), ClientError> {
    let mut headers = vec![
        "ID",
        "ROLE",
        "CLUSTER",
        "PREFIX",
        "DESCRIPTION",
        "CREATED",
        "EXPIRES",
        "LAST USED",
    ];
    if with_revoked {
        headers.push("REVOKED");
    }
    let mut table = Table::new(&headers).cut("DESCRIPTION");
    for k in keys {
        table.row(vec![
            k.id.clone(),
            names::role(k.role),
            k.cluster_id.clone(),
            k.secret_prefix.clone(),
            k.description.clone(),
            time_cell(k.created_at.as_ref()),
            time_cell(k.expires_at.as_ref()),
            time_cell(k.last_used_at.as_ref()),
            time_cell(k.revoked_at.as_ref()),
        ]);
    }
    print_table(&table, "No keys.")
}

fn key_json(k: &pb::ApiKey) -> Value {
    json!({
        "id": k.id,
        "role": names::role(k.role),
        "clusterId": if k.cluster_id.is_empty() { Value::Null } else { Value::String(k.cluster_id.clone()) },
        "description": k.description,
        "secretPrefix": k.secret_prefix,
        "created": time_json(k.created_at.as_ref()),
        "expires": time_json(k.expires_at.as_ref()),
        "lastUsed": time_json(k.last_used_at.as_ref()),
        "revoked": time_json(k.revoked_at.as_ref()),
        "createdBy": k.created_by_key_id,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_connector_key_names_its_cluster_and_others_do_not() {
        let now = SystemTime::UNIX_EPOCH;
        let r = create_request(RoleArg::Connector, Some("prod"), None, None, now).unwrap();
        assert_eq!(r.role, Role::Connector as i32);
        assert_eq!(r.cluster, by_name("prod"));
        assert!(create_request(RoleArg::Connector, None, None, None, now).is_err());
        assert!(create_request(RoleArg::Viewer, Some("prod"), None, None, now).is_err());
    }

    #[test]
    fn expires_in_becomes_an_absolute_expiry() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let r = create_request(RoleArg::Editor, None, Some(Duration::from_secs(3_600)), Some("ci"), now).unwrap();
        assert_eq!(r.expires_at.map(|t| t.seconds), Some(3_700));
        assert_eq!(r.description, "ci");
        let r = create_request(RoleArg::Admin, None, None, None, now).unwrap();
        assert_eq!(r.expires_at, None);
    }
}
