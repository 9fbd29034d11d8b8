//! `portcullis cluster registry ...`: a cluster's registry credentials, one registry at a
//! time (SetRegistryCredentials with `merge`). The password is read from standard input only,
//! sent once, and never printed: listings show hosts and usernames.

use std::io::Read;

use clap::Subcommand;
use portcullis_proto::policystore::v1 as pb;
use serde_json::{Value, json};

use super::error::ClientError;
use super::output::{Format, OutputArg, Table, print_json, print_line, print_table, time_cell, time_json};
use super::{KeyChoice, by_name, missing};
use portcullis_signature::store::IDENTITY_TOKEN_USERNAME;

/// `cluster registry` subcommands.
#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Sets (creates or replaces) the credentials of one registry of a cluster; the other
    /// registries keep theirs. Admin keys only.
    Set {
        /// The cluster's name.
        cluster: String,
        /// The registry host as image references name it, `name[:port]` (e.g. `ghcr.io`,
        /// `registry.example.com:5000`), without scheme or path.
        registry: String,
        /// The username (with --password-stdin).
        #[arg(long, value_name = "USER", requires = "password_stdin")]
        username: Option<String>,
        /// Read the password (or access token) from standard input; one trailing newline is
        /// dropped. A password on the command line would land in shell history.
        #[arg(long, requires = "username", required_unless_present = "identity_token_stdin")]
        password_stdin: bool,
        /// Read an identity (refresh) token from standard input instead, as `docker login`
        /// stores for some registries: the signature service exchanges it for a bearer token.
        /// Stored with the username `<token>`, as Docker's credential helpers mark one.
        #[arg(long, conflicts_with_all = ["username", "password_stdin"])]
        identity_token_stdin: bool,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Lists the registries of a cluster that have credentials: hosts and usernames, never
    /// the secrets.
    List {
        /// The cluster's name.
        cluster: String,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Deletes the credentials of one registry of a cluster (the signature service then
    /// reaches it anonymously). Admin keys only.
    Delete {
        /// The cluster's name.
        cluster: String,
        /// The registry host.
        registry: String,
        #[command(flatten)]
        out: OutputArg,
    },
}

impl RegistryCommand {
    /// The subcommand's name, after `cluster`.
    pub fn verb(&self) -> &'static str {
        match self {
            RegistryCommand::Set { .. } => "registry set",
            RegistryCommand::List { .. } => "registry list",
            RegistryCommand::Delete { .. } => "registry delete",
        }
    }
}

/// `registry` when it is a registry host, else an input error saying what one looks like.
fn registry_host(registry: &str) -> Result<&str, ClientError> {
    if portcullis_storage::is_valid_registry(registry) {
        Ok(registry)
    } else {
        Err(ClientError::input(format!(
            "{registry:?} is not a registry host: give name[:port] as image references name it \
             (e.g. ghcr.io, registry.example.com:5000), without scheme or path"
        )))
    }
}

/// The password from `input`: one trailing newline (`\n` or `\r\n`) dropped, as `docker
/// login --password-stdin` does; empty is an error.
pub fn read_password(mut input: impl Read) -> Result<String, ClientError> {
    let mut text = String::new();
    input
        .read_to_string(&mut text)
        .map_err(|e| ClientError::input(format!("reading the password from standard input: {e}")))?;
    let password = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    if password.is_empty() {
        return Err(ClientError::input("empty password on standard input"));
    }
    Ok(password.to_owned())
}

/// Runs a `cluster registry` subcommand.
pub async fn run(ctx: &super::Ctx<'_>, command: &RegistryCommand) -> Result<(), ClientError> {
    match command {
        RegistryCommand::Set {
            cluster,
            registry,
            username,
            password_stdin: _,
            identity_token_stdin,
            out,
        } => {
            let registry = registry_host(registry)?;
            let username = match (username.as_deref(), identity_token_stdin) {
                (_, true) => IDENTITY_TOKEN_USERNAME,
                (Some(name), false) if !name.is_empty() && name != IDENTITY_TOKEN_USERNAME => name,
                (Some(name), false) if name == IDENTITY_TOKEN_USERNAME => {
                    return Err(ClientError::input("for an identity token give --identity-token-stdin"));
                }
                _ => return Err(ClientError::input("empty --username")),
            };
            // Read before connecting: bad input is said without a round trip.
            let password = read_password(std::io::stdin().lock())?;
            let answer = change(
                ctx,
                cluster,
                vec![pb::RegistryCredential {
                    registry: registry.to_owned(),
                    username: username.to_owned(),
                    password,
                }],
                Vec::new(),
            )
            .await?;
            match out.output {
                Format::Json => print_json(&registries_json(&answer)),
                Format::Table => print_line(&format!("credentials for {registry} set on cluster {cluster}")),
            }
        }
        RegistryCommand::List { cluster, out } => {
            let conn = ctx.connect(KeyChoice::Tenant).await?;
            let shown = conn
                .clusters()
                .get_cluster(pb::GetClusterRequest {
                    cluster: by_name(cluster),
                })
                .await
                .map_err(|s| conn.error(s))?
                .into_inner()
                .cluster
                .ok_or_else(missing("cluster"))?;
            match out.output {
                Format::Json => print_json(&registries_json(&shown)),
                Format::Table => {
                    let mut table = Table::new(&["REGISTRY", "USERNAME", "UPDATED"]);
                    for c in &shown.registry_credentials {
                        table.row(vec![
                            c.registry.clone(),
                            c.username.clone(),
                            time_cell(c.updated_at.as_ref()),
                        ]);
                    }
                    print_table(&table, &format!("No registry credentials on cluster {cluster}."))
                }
            }
        }
        RegistryCommand::Delete { cluster, registry, out } => {
            let registry = registry_host(registry)?;
            let answer = change(ctx, cluster, Vec::new(), vec![registry.to_owned()]).await?;
            match out.output {
                Format::Json => print_json(&registries_json(&answer)),
                Format::Table => print_line(&format!("credentials for {registry} deleted from cluster {cluster}")),
            }
        }
    }
}

/// One merge of a cluster's credentials; the cluster after it.
async fn change(
    ctx: &super::Ctx<'_>,
    cluster: &str,
    credentials: Vec<pb::RegistryCredential>,
    remove_registries: Vec<String>,
) -> Result<pb::Cluster, ClientError> {
    let conn = ctx.connect(KeyChoice::Tenant).await?;
    conn.clusters()
        .set_registry_credentials(pb::SetRegistryCredentialsRequest {
            cluster: by_name(cluster),
            credentials,
            merge: true,
            remove_registries,
        })
        .await
        .map_err(|s| conn.error(s))?
        .into_inner()
        .cluster
        .ok_or_else(missing("cluster"))
}

/// A cluster's registries as JSON: hosts, usernames, when set.
fn registries_json(cluster: &pb::Cluster) -> Value {
    Value::Array(
        cluster
            .registry_credentials
            .iter()
            .map(|c| {
                json!({
                    "registry": c.registry,
                    "username": c.username,
                    "updated": time_json(c.updated_at.as_ref()),
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
    fn the_password_loses_one_trailing_newline_only() {
        assert_eq!(read_password(&b"s3cret\n"[..]).unwrap(), "s3cret");
        assert_eq!(read_password(&b"s3cret\r\n"[..]).unwrap(), "s3cret");
        assert_eq!(read_password(&b"s3cret"[..]).unwrap(), "s3cret");
        assert_eq!(read_password(&b" pw \n\n"[..]).unwrap(), " pw \n");
    }

    #[test]
    fn an_empty_password_is_refused() {
        for input in [&b""[..], b"\n", b"\r\n"] {
            let error = read_password(input).unwrap_err();
            assert!(error.to_string().contains("empty password"), "{error}");
        }
    }

    #[test]
    fn a_url_is_not_a_registry_host() {
        assert!(registry_host("ghcr.io").is_ok());
        assert!(registry_host("127.0.0.1:5000").is_ok());
        for bad in ["https://ghcr.io", "ghcr.io/org", "", "host:port"] {
            let error = registry_host(bad).unwrap_err();
            assert!(error.to_string().contains("not a registry host"), "{bad}: {error}");
        }
    }
}
