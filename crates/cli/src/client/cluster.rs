//! `portcullis cluster ...`: cluster registration, policy assignment, settings and connector
//! keys, by name.

use clap::Subcommand;
use portcullis_proto::common::v1::FailureMode;
use portcullis_proto::policystore::v1 as pb;
use serde_json::{Value, json};

use super::duration::{format_duration, parse_duration, to_proto};
use super::error::ClientError;
use super::named_document::list_all;
use super::output::{
    Format, OutputArg, Table, note, print_json, print_line, print_table, render_fields, time_cell, time_json,
};
use super::{Conn, Ctx, KeyChoice, by_name, missing, names};

/// A cluster's failure mode, as flags spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FailureModeArg {
    /// Admit the workload and record why.
    FailOpen,
    /// Reject the workload and record why.
    FailClosed,
}

impl From<FailureModeArg> for FailureMode {
    fn from(mode: FailureModeArg) -> FailureMode {
        match mode {
            FailureModeArg::FailOpen => FailureMode::FailOpen,
            FailureModeArg::FailClosed => FailureMode::FailClosed,
        }
    }
}

/// `cluster` subcommands.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Registers a cluster; prints its connector key alone (shown this once).
    Create {
        /// The cluster's name.
        name: String,
        /// The policy to assign.
        #[arg(long, value_name = "POLICY")]
        policy: Option<String>,
        /// Free text.
        #[arg(long, value_name = "TEXT")]
        description: Option<String>,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Assigns a policy to a cluster (or removes the assignment with --none).
    Assign {
        /// The cluster's name.
        name: String,
        /// The policy to assign.
        #[arg(
            long,
            value_name = "POLICY",
            required_unless_present = "none",
            conflicts_with = "none"
        )]
        policy: Option<String>,
        /// Remove the assignment.
        #[arg(long)]
        none: bool,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Shows a cluster's settings, or changes those given.
    Settings {
        /// The cluster's name.
        name: String,
        /// What happens when no decision can be had.
        #[arg(long, value_enum)]
        failure_mode: Option<FailureModeArg>,
        /// A namespace whose workloads are never evaluated; repeat for several (replaces the
        /// list).
        #[arg(
            long = "exclude-namespace",
            value_name = "NS",
            conflicts_with = "clear_excluded_namespaces"
        )]
        exclude_namespaces: Vec<String>,
        /// Empty the excluded namespaces.
        #[arg(long)]
        clear_excluded_namespaces: bool,
        /// An image always exempt (`registry/image[@digest]`, exact); repeat for several
        /// (replaces the list).
        #[arg(long = "trusted-image", value_name = "REF", conflicts_with = "clear_trusted_images")]
        trusted_images: Vec<String>,
        /// Empty the trusted images.
        #[arg(long)]
        clear_trusted_images: bool,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Shows a cluster.
    Get {
        /// The cluster's name.
        name: String,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Lists the tenant's clusters with their connectors' last-seen time.
    List {
        /// Only clusters whose name contains this text.
        #[arg(long, value_name = "TEXT")]
        filter: Option<String>,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Issues a new connector key (an admin key only); prints it alone. The previous keys
    /// work for the grace period.
    RotateKey {
        /// The cluster's name.
        name: String,
        /// How long the previous keys stay valid, e.g. `1h`; `0` ends them now (server
        /// default: 24h).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        grace: Option<std::time::Duration>,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Sets, lists and deletes a cluster's registry credentials, one registry at a time.
    #[command(subcommand)]
    Registry(super::registry::RegistryCommand),
    /// Deletes a cluster and revokes its connector keys.
    Delete {
        /// The cluster's name.
        name: String,
        #[command(flatten)]
        out: OutputArg,
    },
}

impl ClusterCommand {
    /// The subcommand's name.
    pub fn verb(&self) -> &'static str {
        match self {
            ClusterCommand::Create { .. } => "create",
            ClusterCommand::Assign { .. } => "assign",
            ClusterCommand::Settings { .. } => "settings",
            ClusterCommand::Get { .. } => "get",
            ClusterCommand::List { .. } => "list",
            ClusterCommand::RotateKey { .. } => "rotate-key",
            ClusterCommand::Registry(c) => c.verb(),
            ClusterCommand::Delete { .. } => "delete",
        }
    }
}

/// The settings change that `cluster settings` flags ask for: the new values and the mask
/// naming them; `None` when no flag was given (then the settings are shown).
pub fn settings_update(
    failure_mode: Option<FailureModeArg>,
    exclude_namespaces: &[String],
    clear_excluded_namespaces: bool,
    trusted_images: &[String],
    clear_trusted_images: bool,
) -> Option<(pb::ClusterSettings, prost_types::FieldMask)> {
    let mut settings = pb::ClusterSettings::default();
    let mut paths = Vec::new();
    if let Some(mode) = failure_mode {
        settings.failure_mode = FailureMode::from(mode) as i32;
        paths.push("failure_mode".to_owned());
    }
    if !exclude_namespaces.is_empty() || clear_excluded_namespaces {
        settings.excluded_namespaces = exclude_namespaces.to_vec();
        paths.push("excluded_namespaces".to_owned());
    }
    if !trusted_images.is_empty() || clear_trusted_images {
        settings.trusted_images = trusted_images.to_vec();
        paths.push("trusted_images".to_owned());
    }
    (!paths.is_empty()).then_some((settings, prost_types::FieldMask { paths }))
}

/// Runs a `cluster` subcommand.
pub async fn run(ctx: &Ctx<'_>, command: &ClusterCommand) -> Result<(), ClientError> {
    match command {
        ClusterCommand::Create {
            name,
            policy,
            description,
            out,
        } => {
            let conn = ctx.connect(KeyChoice::Tenant).await?;
            let response = conn
                .clusters()
                .register_cluster(pb::RegisterClusterRequest {
                    name: name.clone(),
                    description: description.clone().unwrap_or_default(),
                    policy: policy.as_deref().and_then(by_name),
                    settings: None,
                    connector_key_expires_at: None,
                })
                .await
                .map_err(|s| conn.error(s))?
                .into_inner();
            let cluster = response.cluster.ok_or_else(missing("cluster"))?;
            match out.output {
                Format::Json => print_json(&json!({
                    "cluster": cluster_json(&cluster),
                    "connectorKey": response.connector_key,
                    "connectorKeyId": response.connector_key_id,
                })),
                Format::Table => {
                    note(&format!(
                        "cluster {} registered; its connector key (id {}) is shown this once:",
                        cluster.name, response.connector_key_id
                    ));
                    print_line(&response.connector_key)
                }
            }
        }
        ClusterCommand::Assign {
            name,
            policy,
            none,
            out,
        } => {
            let conn = ctx.connect(KeyChoice::Tenant).await?;
            let policy = if *none {
                None
            } else {
                policy.as_deref().and_then(by_name)
            };
            let response = conn
                .clusters()
                .assign_policy(pb::AssignPolicyRequest {
                    cluster: by_name(name),
                    policy,
                })
                .await
                .map_err(|s| conn.error(s))?
                .into_inner();
            let cluster = response.cluster.ok_or_else(missing("cluster"))?;
            match out.output {
                Format::Json => print_json(&cluster_json(&cluster)),
                Format::Table if cluster.policy_name.is_empty() => {
                    print_line(&format!("cluster {} has no policy assigned", cluster.name))
                }
                Format::Table => print_line(&format!(
                    "cluster {} assigned to policy {}",
                    cluster.name, cluster.policy_name
                )),
            }
        }
        ClusterCommand::Settings {
            name,
            failure_mode,
            exclude_namespaces,
            clear_excluded_namespaces,
            trusted_images,
            clear_trusted_images,
            out,
        } => {
            let update = settings_update(
                *failure_mode,
                exclude_namespaces,
                *clear_excluded_namespaces,
                trusted_images,
                *clear_trusted_images,
            );
            let conn = ctx.connect(KeyChoice::Tenant).await?;
            let cluster = match update {
                None => {
                    conn.clusters()
                        .get_cluster(pb::GetClusterRequest { cluster: by_name(name) })
                        .await
                        .map_err(|s| conn.error(s))?
                        .into_inner()
                        .cluster
                }
                Some((settings, mask)) => {
                    conn.clusters()
                        .update_cluster_settings(pb::UpdateClusterSettingsRequest {
                            cluster: by_name(name),
                            settings: Some(settings),
                            update_mask: Some(mask),
                            expected_generation: None,
                        })
                        .await
                        .map_err(|s| conn.error(s))?
                        .into_inner()
                        .cluster
                }
            };
            let settings = cluster.ok_or_else(missing("cluster"))?.settings.unwrap_or_default();
            match out.output {
                Format::Json => print_json(&settings_json(&settings)),
                Format::Table => print(&render_fields(&[
                    ("Failure mode", names::failure_mode(settings.failure_mode)),
                    ("Excluded namespaces", settings.excluded_namespaces.join(", ")),
                    ("Trusted images", settings.trusted_images.join(", ")),
                ])),
            }
        }
        ClusterCommand::Get { name, out } => {
            let conn = ctx.connect(KeyChoice::Tenant).await?;
            let cluster = conn
                .clusters()
                .get_cluster(pb::GetClusterRequest { cluster: by_name(name) })
                .await
                .map_err(|s| conn.error(s))?
                .into_inner()
                .cluster
                .ok_or_else(missing("cluster"))?;
            match out.output {
                Format::Json => print_json(&cluster_json(&cluster)),
                Format::Table => {
                    let settings = cluster.settings.clone().unwrap_or_default();
                    print(&render_fields(&[
                        ("Name", cluster.name.clone()),
                        ("Id", cluster.id.clone()),
                        ("Description", cluster.description.clone()),
                        ("Policy", cluster.policy_name.clone()),
                        ("Failure mode", names::failure_mode(settings.failure_mode)),
                        ("Excluded namespaces", settings.excluded_namespaces.join(", ")),
                        ("Trusted images", settings.trusted_images.join(", ")),
                        ("Last seen", time_cell(cluster.last_seen_at.as_ref())),
                        ("Connector version", cluster.connector_version.clone()),
                        ("Generation", cluster.generation.to_string()),
                        ("Created", time_cell(cluster.created_at.as_ref())),
                        ("Updated", time_cell(cluster.updated_at.as_ref())),
                    ]))
                }
            }
        }
        ClusterCommand::List { filter, out } => {
            let name_filter = filter.clone().unwrap_or_default();
            let clusters = list_all(
                ctx,
                KeyChoice::Tenant,
                Conn::clusters,
                |mut client, page| {
                    let request = pb::ListClustersRequest {
                        page: Some(page),
                        name_filter: name_filter.clone(),
                        policy: None,
                    };
                    async move { client.list_clusters(request).await }
                },
                |r| (r.clusters, r.page),
            )
            .await?;
            match out.output {
                Format::Json => print_json(&Value::Array(clusters.iter().map(cluster_json).collect())),
                Format::Table => {
                    let mut table = Table::new(&["NAME", "POLICY", "FAILURE MODE", "LAST SEEN", "CONNECTOR", "ID"]);
                    for c in &clusters {
                        let mode = c
                            .settings
                            .as_ref()
                            .map(|s| names::failure_mode(s.failure_mode))
                            .unwrap_or_default();
                        table.row(vec![
                            c.name.clone(),
                            c.policy_name.clone(),
                            mode,
                            time_cell(c.last_seen_at.as_ref()),
                            c.connector_version.clone(),
                            c.id.clone(),
                        ]);
                    }
                    print_table(&table, "No clusters.")
                }
            }
        }
        ClusterCommand::RotateKey { name, grace, out } => {
            let grace_period = grace.map(to_proto).transpose().map_err(ClientError::Input)?;
            let conn = ctx.connect(KeyChoice::Tenant).await?;
            let response = conn
                .clusters()
                .rotate_connector_key(pb::RotateConnectorKeyRequest {
                    cluster: by_name(name),
                    grace_period,
                    expires_at: None,
                })
                .await
                .map_err(|s| conn.error(s))?
                .into_inner();
            match out.output {
                Format::Json => print_json(&json!({
                    "connectorKey": response.connector_key,
                    "connectorKeyId": response.connector_key_id,
                    "previousKeysExpireAt": time_json(response.previous_keys_expire_at.as_ref()),
                    "previousKeyIds": response.previous_key_ids,
                })),
                Format::Table => {
                    let until = time_cell(response.previous_keys_expire_at.as_ref());
                    let grace_text = grace
                        .map(format_duration)
                        .unwrap_or_else(|| "the default grace".to_owned());
                    note(&format!(
                        "new connector key for {name} (id {}), shown this once; previous keys work until {} ({grace_text}):",
                        response.connector_key_id,
                        if until.is_empty() { "-" } else { until.as_str() },
                    ));
                    print_line(&response.connector_key)
                }
            }
        }
        ClusterCommand::Registry(c) => super::registry::run(ctx, c).await,
        ClusterCommand::Delete { name, out } => {
            let conn = ctx.connect(KeyChoice::Tenant).await?;
            let response = conn
                .clusters()
                .delete_cluster(pb::DeleteClusterRequest { cluster: by_name(name) })
                .await
                .map_err(|s| conn.error(s))?
                .into_inner();
            match out.output {
                Format::Json => print_json(&json!({
                    "id": response.id,
                    "name": name,
                    "revokedKeyIds": response.revoked_key_ids,
                })),
                Format::Table => print_line(&format!(
                    "cluster {name} deleted; {} connector key(s) revoked",
                    response.revoked_key_ids.len()
                )),
            }
        }
    }
}

fn print(text: &str) -> Result<(), ClientError> {
    super::output::print(text)
}

/// A cluster's settings as JSON.
fn settings_json(s: &pb::ClusterSettings) -> Value {
    json!({
        "failureMode": names::failure_mode(s.failure_mode),
        "excludedNamespaces": s.excluded_namespaces,
        "trustedImages": s.trusted_images,
    })
}

/// A cluster as JSON.
fn cluster_json(c: &pb::Cluster) -> Value {
    json!({
        "id": c.id,
        "name": c.name,
        "description": c.description,
        "policy": if c.policy_name.is_empty() { Value::Null } else { Value::String(c.policy_name.clone()) },
        "policyId": if c.policy_id.is_empty() { Value::Null } else { Value::String(c.policy_id.clone()) },
        "settings": settings_json(&c.settings.clone().unwrap_or_default()),
        "lastSeen": time_json(c.last_seen_at.as_ref()),
        "connectorVersion": c.connector_version,
        "generation": c.generation,
        "credentialRegistries": c.credential_registries,
        "registryCredentials": c.registry_credentials.iter().map(|r| json!({
            "registry": r.registry,
            "username": r.username,
        })).collect::<Vec<_>>(),
        "created": time_json(c.created_at.as_ref()),
        "updated": time_json(c.updated_at.as_ref()),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn no_flag_means_show_the_settings() {
        assert_eq!(settings_update(None, &[], false, &[], false), None);
    }

    #[test]
    fn the_mask_names_only_the_flags_given() {
        let (settings, mask) = settings_update(
            Some(FailureModeArg::FailClosed),
            &["ops".into(), "kube-system".into()],
            false,
            &[],
            false,
        )
        .unwrap();
        assert_eq!(mask.paths, ["failure_mode", "excluded_namespaces"]);
        assert_eq!(settings.failure_mode, FailureMode::FailClosed as i32);
        assert_eq!(settings.excluded_namespaces, ["ops", "kube-system"]);
        assert!(settings.trusted_images.is_empty());
    }

    #[test]
    fn clearing_a_list_sends_it_empty_under_its_mask_path() {
        let (settings, mask) = settings_update(None, &[], false, &[], true).unwrap();
        assert_eq!(mask.paths, ["trusted_images"]);
        assert!(settings.trusted_images.is_empty());
        assert_eq!(settings.failure_mode, FailureMode::Unspecified as i32);
    }
}
